//! What a subscriber keeps and what it refuses: each rule by a snapshot that breaks it, and the newest-wins rule
//! against replays and reordering.

use super::*;

const NOW: i64 = 1_790_000_000_000;

struct Fixture {
    view: RegistryView,
    pod: Keypair,
    other_pod: Keypair,
    revoked: Keypair,
    council: Keypair,
}

fn member(
    key: &Keypair,
    role: Role,
    scope: Option<&str>,
    revoked: bool,
) -> (String, model::Member) {
    let hex = key.public().to_hex();
    (
        hex.clone(),
        serde_json::from_value(serde_json::json!({
            "public_key": hex,
            "name": "m",
            "role": role,
            "scope": scope,
            "admitted_by": "",
            "admitted_at_ms": 0,
            "revoked": revoked,
        }))
        .expect("a member"),
    )
}

fn fixture() -> Fixture {
    let (pod, other_pod, revoked, council) = (
        Keypair::from_seed([1; 32]),
        Keypair::from_seed([2; 32]),
        Keypair::from_seed([3; 32]),
        Keypair::from_seed([4; 32]),
    );
    let mut view = RegistryView {
        federation: Some(model::Federation {
            id: "fed".into(),
            name: "Acme".into(),
            founder: council.public().to_hex(),
        }),
        ..RegistryView::default()
    };
    for (key, value) in [
        member(&pod, Role::Pod, Some("emea"), false),
        member(&other_pod, Role::Pod, Some("apac"), false),
        member(&revoked, Role::Pod, Some("emea"), true),
        member(&council, Role::Council, None, false),
    ] {
        view.members.insert(key, value);
    }
    Fixture {
        view,
        pod,
        other_pod,
        revoked,
        council,
    }
}

fn snapshot(as_of_ms: i64) -> Snapshot {
    Snapshot {
        federation: "fed".into(),
        pod: "emea".into(),
        quarter: "2026Q4".into(),
        as_of_ms,
        metrics: vec![Metric::new("experiments", Some(3.0))],
        dashboard: Dashboard {
            compliance_incidents: 2,
            ..Dashboard::default()
        },
    }
}

#[test]
fn a_pods_snapshot_is_kept_and_a_newer_one_replaces_it() {
    let f = fixture();
    let mut board = Board::new();
    let first = sign(&snapshot(NOW - 10), &f.pod);
    let held = board.offer(&first, &f.view, NOW).expect("valid");
    assert_eq!(held.publisher, f.pod.public().to_hex());
    assert_eq!(held.bytes, first);
    board
        .offer(&sign(&snapshot(NOW), &f.pod), &f.view, NOW)
        .expect("newer");
    assert_eq!(board.pods()["emea"].snapshot.as_of_ms, NOW);
    // The older one again (replayed, or arriving late) does not replace it, whichever order they came in.
    let refusal = board.offer(&first, &f.view, NOW).expect_err("stale");
    assert_eq!(refusal.code(), "stale");
    assert_eq!(board.pods()["emea"].snapshot.as_of_ms, NOW);
    assert_eq!(board.refused().get("stale"), Some(&1));
}

#[test]
fn every_rule_refuses_with_its_reason_and_keeps_what_was_held() {
    let f = fixture();
    let mut board = Board::new();
    let good = sign(&snapshot(NOW), &f.pod);
    board.offer(&good, &f.view, NOW).expect("valid");
    let mut tampered: serde_json::Value = serde_json::from_slice(&good).expect("JSON");
    tampered["snapshot"]["as_of_ms"] = serde_json::json!(NOW + 1);
    let tampered = serde_json::to_vec(&tampered).expect("JSON");
    let mut extra: serde_json::Value =
        serde_json::from_slice(&sign(&snapshot(NOW + 2), &f.pod)).expect("JSON");
    extra["snapshot"]["user_ids"] = serde_json::json!(["u1", "u2"]);
    let extra = serde_json::to_vec(&extra).expect("JSON");
    let six = Snapshot {
        metrics: (0..6)
            .map(|i| Metric::new(&format!("m{i}"), Some(1.0)))
            .collect(),
        ..snapshot(NOW + 3)
    };
    // JSON has no infinity: a number out of range is malformed, before any signature is checked.
    let infinite = String::from_utf8(sign(&snapshot(NOW + 4), &f.pod))
        .expect("UTF-8")
        .replace("\"value\":3.0", "\"value\":1e400")
        .into_bytes();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![b'x'; MAX_SNAPSHOT_BYTES + 1], "oversized"),
        (b"{not json".to_vec(), "malformed"),
        (extra, "malformed"),
        (tampered, "bad_signature"),
        (
            sign(
                &Snapshot {
                    federation: "other".into(),
                    ..snapshot(NOW + 5)
                },
                &f.pod,
            ),
            "wrong_federation",
        ),
        (
            sign(&snapshot(NOW + 6), &Keypair::from_seed([9; 32])),
            "unknown_publisher",
        ),
        (sign(&snapshot(NOW + 7), &f.revoked), "revoked"),
        (sign(&snapshot(NOW + 8), &f.other_pod), "not_the_pods"),
        (sign(&snapshot(NOW + 9), &f.council), "not_the_pods"),
        (sign(&six, &f.pod), "too_many_metrics"),
        (infinite, "malformed"),
        (
            sign(
                &Snapshot {
                    dashboard: Dashboard {
                        stage_progress: [("user-u1".to_owned(), 1.0)].into(),
                        ..Dashboard::default()
                    },
                    ..snapshot(NOW + 10)
                },
                &f.pod,
            ),
            "malformed",
        ),
        (
            sign(&snapshot(NOW + MAX_CLOCK_SKEW_MS + 1), &f.pod),
            "from_the_future",
        ),
        (good.clone(), "stale"),
    ];
    for (bytes, code) in &cases {
        let refusal = board.offer(bytes, &f.view, NOW).expect_err(code);
        assert_eq!(refusal.code(), *code, "{refusal}");
        assert_eq!(
            board.pods()["emea"].bytes,
            good,
            "{code}: what was held is kept"
        );
    }
    assert_eq!(
        board.refused().values().sum::<u64>(),
        cases.len() as u64,
        "every refusal is counted"
    );
}

#[test]
fn a_revocation_takes_a_publishers_snapshot_out_and_keeps_it_from_being_restored() {
    let mut f = fixture();
    let bytes = sign(&snapshot(NOW), &f.pod);
    let mut board = Board::new();
    board.offer(&bytes, &f.view, NOW).expect("valid");
    assert_eq!(board.standing(&f.view).count(), 1);
    let key = f.pod.public().to_hex();
    f.view.members.get_mut(&key).expect("member").revoked = true;
    assert_eq!(
        board.standing(&f.view).count(),
        0,
        "revoked after it was held"
    );
    assert!(!Board::new().restore(&bytes, &f.view, NOW));
}

#[test]
fn tier_one_aggregates_the_pods_of_the_quarter_in_at_most_five_metrics() {
    let f = fixture();
    let mut emea = snapshot(NOW);
    emea.dashboard.revenue = Some(1_000.0);
    emea.dashboard.dependency_ratio = Some(0.5);
    emea.dashboard.stage_progress =
        [("activation".to_owned(), 0.5), ("revenue".to_owned(), 1.0)].into();
    let apac = Snapshot {
        pod: "apac".into(),
        dashboard: Dashboard {
            revenue: Some(3_000.0),
            dependency_ratio: Some(0.0),
            compliance_incidents: 1,
            stage_progress: [("activation".to_owned(), 1.5)].into(),
            ..Dashboard::default()
        },
        ..snapshot(NOW)
    };
    let old_quarter = Snapshot {
        quarter: "2026Q3".into(),
        pod: "amer".into(),
        ..snapshot(NOW)
    };
    let quarter: Quarter = "2026Q4".parse().expect("a quarter");
    let tier = company([&emea, &apac, &old_quarter], &f.view, quarter, NOW);
    assert!(tier.len() <= MAX_METRICS_PER_TIER);
    let value = |name: &str| tier.iter().find(|m| m.name == name).and_then(|m| m.value);
    assert_eq!(value("revenue_per_pod"), Some(2_000.0));
    assert_eq!(value("dependency_ratio"), Some(0.25));
    assert_eq!(value("compliance_incidents"), Some(3.0));
    assert_eq!(value("north_star"), None, "no objective names one");
    // Activation: mean of 0.5 and 1.5 capped to 1, so 0.75, weight 0.4; retention: nobody reports; revenue: 1.0,
    // weight 0.3. 100 x (0.4 x 0.75 + 0.3 x 1.0) / 0.7.
    let health = value("health_score").expect("two stages reported");
    assert!(
        (health - 100.0 * (0.4 * 0.75 + 0.3) / 0.7).abs() < 1e-9,
        "{health}"
    );
}

#[test]
fn a_pod_with_nothing_yet_publishes_zeros_and_nulls_within_the_limits() {
    let f = fixture();
    let governance = governance::Governance::derive(&f.view);
    let quarter: Quarter = "2026Q4".parse().expect("a quarter");
    let s = pod_snapshot(&f.view, &governance, "emea", quarter, NOW, 4);
    assert!(s.metrics.len() <= MAX_METRICS_PER_TIER);
    assert_eq!(s.dashboard.compliance_incidents, 4);
    assert_eq!(
        s.metrics
            .iter()
            .find(|m| m.name == "experiments")
            .and_then(|m| m.value),
        Some(0.0)
    );
    let mut board = Board::new();
    board
        .offer(&sign(&s, &f.pod), &f.view, NOW)
        .expect("a pod's own computed snapshot is valid");
}
