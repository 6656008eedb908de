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
    let held = |board: &Board| board.held()["emea"][&f.pod.public().to_hex()].clone();
    assert_eq!(held(&board).snapshot.as_of_ms, NOW);
    // The older one again (replayed, or arriving late) does not replace it, whichever order they came in.
    let refusal = board.offer(&first, &f.view, NOW).expect_err("stale");
    assert_eq!(refusal.code(), "stale");
    assert_eq!(held(&board).snapshot.as_of_ms, NOW);
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
                    metrics: vec![Metric::new("user_42_revenue", Some(9.0))],
                    ..snapshot(NOW + 11)
                },
                &f.pod,
            ),
            "malformed",
        ),
        (
            sign(
                &Snapshot {
                    metrics: vec![
                        Metric::new("experiments", Some(1.0)),
                        Metric::new("experiments", Some(2.0)),
                    ],
                    ..snapshot(NOW + 12)
                },
                &f.pod,
            ),
            "malformed",
        ),
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
            board.held()["emea"][&f.pod.public().to_hex()].bytes,
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
    assert_eq!(board.standing(&f.view).len(), 1);
    let key = f.pod.public().to_hex();
    f.view.members.get_mut(&key).expect("member").revoked = true;
    assert_eq!(
        board.standing(&f.view).len(),
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
    let s = pod_snapshot(
        &f.view,
        &governance,
        "emea",
        quarter,
        NOW,
        4,
        Pulse::default(),
    );
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

/// The fixture with a second live member of the pod `emea`, on its own node.
fn fixture_with_second_node() -> (Fixture, Keypair) {
    let mut f = fixture();
    let second = Keypair::from_seed([5; 32]);
    let (key, value) = member(&second, Role::Pod, Some("emea"), false);
    f.view.members.insert(key, value);
    (f, second)
}

#[test]
fn a_pods_nodes_are_merged_newest_numbers_with_their_own_counts_summed() {
    let (mut f, second) = fixture_with_second_node();
    let with = |as_of_ms: i64, experiments: f64, incidents: u64, scores: &[u8]| Snapshot {
        metrics: vec![
            Metric::new("experiments", Some(experiments)),
            Metric::new("compliance_incidents", Some(incidents as f64)),
            Metric::new("unit_nps", Pulse::of(scores.iter().copied()).nps()),
        ],
        dashboard: Dashboard {
            compliance_incidents: incidents,
            pulse: Pulse::of(scores.iter().copied()),
            unit_nps: Pulse::of(scores.iter().copied()).nps(),
            ..Dashboard::default()
        },
        ..snapshot(as_of_ms)
    };
    let mut board = Board::new();
    board
        .offer(&sign(&with(NOW - 5, 1.0, 3, &[10]), &f.pod), &f.view, NOW)
        .expect("first node");
    board
        .offer(&sign(&with(NOW, 2.0, 4, &[6]), &second), &f.view, NOW)
        .expect("second node");
    // One node's replay does not touch the other's: each publisher has its own newest.
    let replay = board
        .offer(&sign(&with(NOW - 5, 1.0, 3, &[10]), &f.pod), &f.view, NOW)
        .expect_err("replayed");
    assert_eq!(replay.code(), "stale");
    let cards = board.standing(&f.view);
    let card = &cards["emea"];
    assert_eq!(card.publishers[0], second.public().to_hex(), "newest first");
    let value = |name: &str| {
        card.snapshot
            .metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.value)
    };
    assert_eq!(
        value("experiments"),
        Some(2.0),
        "the newest registry numbers"
    );
    assert_eq!(
        value("compliance_incidents"),
        Some(7.0),
        "each node's own count, summed"
    );
    // One promoter, one detractor: NPS 0.
    assert_eq!(value("unit_nps"), Some(0.0));
    assert_eq!(card.snapshot.dashboard.pulse.responses(), 2);

    // The newer node's member is revoked: only the first node's numbers stand.
    f.view
        .members
        .get_mut(&second.public().to_hex())
        .expect("member")
        .revoked = true;
    let cards = board.standing(&f.view);
    assert_eq!(cards["emea"].snapshot.dashboard.compliance_incidents, 3);
    assert_eq!(cards["emea"].snapshot.dashboard.unit_nps, Some(100.0));
}

#[test]
fn the_pulse_is_scored_as_nps() {
    assert_eq!(Pulse::default().nps(), None);
    let pulse = Pulse::of([10, 9, 8, 7, 6, 0, 10, 3]);
    assert_eq!(
        (pulse.promoters, pulse.passives, pulse.detractors),
        (3, 2, 3)
    );
    assert_eq!(pulse.nps(), Some(0.0));
    assert_eq!(Pulse::of([9, 9, 9, 5]).nps(), Some(50.0));
    assert_eq!(Pulse::of([0]).nps(), Some(-100.0));
}

#[test]
fn the_councils_choice_of_metrics_is_what_each_tier_shows_in_its_order() {
    let mut f = fixture();
    f.view.settings.tier2_metrics = vec!["unit_nps".into(), "experiments".into()];
    f.view.settings.tier1_metrics = vec!["unit_nps".into(), "cycle_time_days".into()];
    let governance = governance::Governance::derive(&f.view);
    let quarter: Quarter = "2026Q4".parse().expect("a quarter");
    let s = pod_snapshot(
        &f.view,
        &governance,
        "emea",
        quarter,
        NOW,
        0,
        Pulse::of([10, 10, 3]),
    );
    let names: Vec<&str> = s.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["unit_nps", "experiments"]);
    assert!((s.metrics[0].value.expect("answered") - 100.0 / 3.0).abs() < 1e-12);
    let apac = Snapshot {
        pod: "apac".into(),
        dashboard: Dashboard {
            pulse: Pulse::of([0]),
            cycle_time_days: Some(4.0),
            ..Dashboard::default()
        },
        ..snapshot(NOW)
    };
    let tier = company([&s, &apac], &f.view, quarter, NOW);
    let names: Vec<&str> = tier.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["unit_nps", "cycle_time_days"]);
    // Pooled answers: two promoters, two detractors.
    assert_eq!(tier[0].value, Some(0.0));
    assert_eq!(tier[1].value, Some(4.0), "emea has no cycle time yet");
}

#[test]
fn a_pod_nodes_own_numbers_stand_in_for_what_it_last_published() {
    let (f, second) = fixture_with_second_node();
    let mut board = Board::new();
    board
        .offer(&sign(&snapshot(NOW - 10), &f.pod), &f.view, NOW)
        .expect("published earlier");
    board
        .offer(&sign(&snapshot(NOW - 20), &second), &f.view, NOW)
        .expect("the pod's other node");
    let own = Held {
        snapshot: Snapshot {
            dashboard: Dashboard {
                compliance_incidents: 10,
                ..Dashboard::default()
            },
            ..snapshot(NOW)
        },
        publisher: f.pod.public().to_hex(),
        bytes: Vec::new(),
    };
    let cards = board.standing_with(&f.view, Some(&own));
    assert_eq!(cards.len(), 1);
    assert_eq!(cards["emea"].snapshot.as_of_ms, NOW);
    // Its own 10 (not the 2 it published), and the other node's 2.
    assert_eq!(cards["emea"].snapshot.dashboard.compliance_incidents, 12);
    assert_eq!(cards["emea"].publishers.len(), 2);
    // A pod no snapshot was heard from yet.
    let lone = Held {
        snapshot: Snapshot {
            pod: "apac".into(),
            ..snapshot(NOW)
        },
        publisher: f.other_pod.public().to_hex(),
        bytes: Vec::new(),
    };
    let cards = board.standing_with(&f.view, Some(&lone));
    assert_eq!(cards.keys().collect::<Vec<_>>(), ["apac", "emea"]);
}
