//! Scorecards between real nodes on loopback: a pod's node publishes its signed snapshot on its own, the council
//! keeps it and aggregates tier 1 from it, a partner sees tier 1 only, and a pod that went offline is shown with the
//! age of its last snapshot until its node returns with new numbers.

mod support;

use std::time::Instant;

use serde_json::Value;
use support::{Node, WAIT, found, invite_and_join};

/// Polls `scorecard --tier 1 --json` on `node` until `pod` reports, or fails with what it saw last.
fn wait_for_pod(node: &Node, pod: &str) -> Value {
    let started = Instant::now();
    loop {
        let tier = node.json(&["scorecard", "--tier", "1"]);
        let pods = tier["pods"].as_array().cloned().unwrap_or_default();
        if pods.iter().any(|p| p["pod"] == pod) {
            return tier;
        }
        assert!(
            started.elapsed() < WAIT,
            "no scorecard from {pod} within {WAIT:?}; last tier 1:\n{tier:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[test]
fn a_pods_snapshot_reaches_the_council_and_a_partner_sees_tier_one_only() {
    let (council, _council_node) = found("Council");
    let (emea, emea_node) = invite_and_join(&council, "pod", "emea");
    let (partner, _partner_node) = invite_and_join(&council, "partner", "Agency");
    let pod = emea.json(&["status"])["pod"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| "emea".to_owned());

    // The pod published a snapshot without being asked (it has no experiment yet: zeros and nulls).
    let tier = wait_for_pod(&council, &pod);
    assert_eq!(tier["tier"], 1);
    let metrics = tier["metrics"].as_array().expect("metrics");
    assert!(!metrics.is_empty() && metrics.len() <= 5, "{tier:#}");
    for metric in metrics {
        assert!(
            metric["name"].is_string() && metric.get("value").is_some(),
            "{metric}"
        );
    }
    let row = tier["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["pod"] == pod.as_str())
        .expect("the pod reports");
    assert!(
        row["as_of"].is_string() && row["age_s"].is_number(),
        "{row}"
    );

    let pod_tier = council.json(&["scorecard", "--tier", "2", "--pod", &pod]);
    assert_eq!(pod_tier["tier"], 2);
    assert_eq!(pod_tier["pod"], pod.as_str());
    let names: Vec<&str> = pod_tier["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"experiments") && names.len() <= 5,
        "{pod_tier:#}"
    );
    assert!(pod_tier["dashboard"]["compliance_incidents"].is_number());

    // A partner reads the company's numbers, not a pod's.
    let partner_tier = wait_for_pod(&partner, &pod);
    assert_eq!(partner_tier["tier"], 1);
    let (refused, _) = partner.json_status(&["scorecard", "--tier", "2", "--pod", &pod], 1);
    assert_eq!(refused["reason"], "partner_tier_1_only", "{refused:#}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("partner"))
    );

    // The pod's node stops: the council still shows its last snapshot, with its age.
    let before = council.json(&["scorecard", "--tier", "2", "--pod", &pod]);
    emea_node.stop();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let stale = council.json(&["scorecard", "--tier", "2", "--pod", &pod]);
    assert_eq!(stale["as_of"], before["as_of"], "{stale:#}");
    assert!(stale["age_s"].as_i64().expect("age") >= 2, "{stale:#}");
    // Offline, the pod registers an experiment; back online, its node publishes the new numbers.
    register_experiment(&emea);
    let _emea_node = emea.start(&[]);
    let started = Instant::now();
    loop {
        let (fresh, experiments) = pod_card(&council, &pod);
        if experiments == Some(1.0) && fresh["as_of"] != before["as_of"] {
            assert!(fresh["age_s"].as_i64().expect("age") < 30, "{fresh:#}");
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the pod's new scorecard did not reach the council within {WAIT:?}; last:\n{fresh:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// Registers an experiment on the pod `node` (its scorecard's `experiments` goes up by one).
fn register_experiment(node: &Node) {
    node.json(&[
        "experiment",
        "new",
        "--key",
        "shorter-signup",
        "--hypothesis",
        "if the signup form is shorter then more people sign up because it takes less time",
    ]);
}

/// `scorecard --tier 2 --pod POD --json` on `node`, with the pod's `experiments` value.
fn pod_card(node: &Node, pod: &str) -> (Value, Option<f64>) {
    let card = node.json(&["scorecard", "--tier", "2", "--pod", pod]);
    let experiments = card["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "experiments")
        .and_then(|m| m["value"].as_f64());
    (card, experiments)
}

/// A snapshot of pod `emea` in `federation`, dated `as_of_ms`, claiming `experiments`.
fn claim(federation: &str, as_of_ms: i64, experiments: f64) -> scorecard::Snapshot {
    serde_json::from_value(serde_json::json!({
        "federation": federation,
        "pod": "emea",
        "quarter": model::time::quarter_of_ms(as_of_ms),
        "as_of_ms": as_of_ms,
        "metrics": [{"name": "experiments", "value": experiments}],
        "dashboard": {"cycle_time_days": null, "dependency_ratio": null, "revenue": null, "compliance_incidents": 0},
    }))
    .expect("a snapshot")
}

/// The council's count of scorecards refused for `reason`, from its `/metrics`.
fn refused(node: &Node, reason: &str) -> u64 {
    let (code, text) = node.get("/metrics");
    assert_eq!(code, 200, "{text}");
    let prefix = format!("growthmesh_scorecards_refused_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A pod cut off by a partition (its node running on) is shown with its last snapshot's growing age and catches up
/// after the heal; then a member injects, over gossip, a snapshot it forged for the pod, one with the pod's key
/// named but its own signature, and an older one genuinely signed by the pod (a replay of the past): the council
/// refuses each with its reason in `/metrics` and never shows their numbers.
#[test]
fn a_partitioned_pod_catches_up_and_forged_or_replayed_snapshots_are_refused_over_gossip() {
    let (council, _council_node) = found("Council");
    let (emea, _emea_node) = invite_and_join(&council, "pod", "emea");
    let (partner, _partner_node) = invite_and_join(&council, "partner", "Agency");
    wait_for_pod(&council, "emea");
    let (before, experiments) = pod_card(&council, "emea");
    assert_eq!(experiments, Some(0.0), "{before:#}");

    // The pod's node cuts itself off from everyone and runs on.
    let peers = format!(
        r#"{{"peers": ["{}", "{}"]}}"#,
        council.peer_id(),
        partner.peer_id()
    );
    let (code, body) = emea.post("/v1/block", &peers, true);
    assert_eq!(code, 200, "{body}");
    emea.wait_for_status("the pod to be cut off", |s| support::peer_ids(s).is_empty());
    register_experiment(&emea);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let (during, experiments) = pod_card(&council, "emea");
    assert_eq!(
        experiments,
        Some(0.0),
        "the split kept the new numbers away: {during:#}"
    );
    assert_eq!(during["as_of"], before["as_of"], "{during:#}");
    assert!(
        during["age_s"].as_i64().expect("age") >= before["age_s"].as_i64().expect("age") + 3,
        "the age grows while the pod is cut off: {before:#} then {during:#}"
    );

    // The heal: the pod's next snapshot arrives with its new numbers.
    let (code, body) = emea.post("/v1/block", r#"{"peers": []}"#, true);
    assert_eq!(code, 200, "{body}");
    let started = Instant::now();
    let held = loop {
        let (card, experiments) = pod_card(&council, "emea");
        if experiments == Some(1.0) {
            break card;
        }
        assert!(
            started.elapsed() < WAIT * 2,
            "the pod's scorecard did not catch up after the heal; last:\n{card:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };

    // A member's node publishes, over gossip, snapshots that claim to be the pod's.
    let federation = council.json(&["registry", "show"])["federation"]["id"]
        .as_str()
        .expect("a federation id")
        .to_owned();
    let key =
        |node: &Node| identity::Keypair::load(&node.dir.join("node.key")).expect("a node key");
    let (partner_key, emea_key) = (key(&partner), key(&emea));
    let now = held["as_of_ms"].as_i64().expect("as_of_ms");
    let forged = scorecard::sign(&claim(&federation, now + 1_000, 99.0), &partner_key);
    let mut tampered: Value = serde_json::from_slice(&forged).expect("JSON");
    tampered["key"] = emea_key.public().to_hex().into();
    let tampered = serde_json::to_vec(&tampered).expect("JSON");
    let older = scorecard::sign(&claim(&federation, now - 60_000, 42.0), &emea_key);
    let counts = |node: &Node| {
        ["not_the_pods", "bad_signature", "stale"].map(|reason| refused(node, reason))
    };
    let before_counts = counts(&council);
    for bytes in [&forged, &tampered, &older] {
        let body = format!(
            r#"{{"topic": "scorecards", "payload_hex": "{}"}}"#,
            hex::encode(bytes)
        );
        let (code, answer) = partner.post("/v1/publish", &body, true);
        assert_eq!(code, 200, "{answer}");
    }
    let started = Instant::now();
    loop {
        let after = counts(&council);
        if after.iter().zip(&before_counts).all(|(a, b)| a > b) {
            break;
        }
        assert!(
            started.elapsed() < WAIT,
            "the council did not refuse all three (not_the_pods, bad_signature, stale): {before_counts:?} -> {after:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let (card, experiments) = pod_card(&council, "emea");
    assert_eq!(
        experiments,
        Some(1.0),
        "none of the injected numbers is shown: {card:#}"
    );
    assert_eq!(
        card["publishers"],
        serde_json::json!([emea_key.public().to_hex()])
    );
    // Garbage on the topic is refused too, and the API refuses an unknown topic.
    let (code, _) = partner.post(
        "/v1/publish",
        r#"{"topic": "scorecards", "payload_hex": "6e6f7420612073636f726563617264"}"#,
        true,
    );
    assert_eq!(code, 200);
    let (code, answer) = partner.post("/v1/publish", r#"{"topic": "x", "payload_hex": ""}"#, true);
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("`x`"), "{answer}");
}

/// The pulse, the council's choice of metrics and its scorecard readers, through the binary on bundles: answers stay
/// on the pod's node and come out as counts and NPS, one answer per respondent; a sixth metric is refused; the
/// pod's scorecard shows the council's metrics in its order; a partner reads tier 2 only once the council lets it.
#[test]
fn the_pulse_and_the_councils_choices_shape_the_scorecards() {
    let (council, nodes) =
        support::federation(&[("emea", "pod", "emea"), ("Agency", "partner", "agency")]);
    let (emea, partner) = (&nodes[0], &nodes[1]);

    emea.json(&["pulse", "answer", "--score", "3"]);
    emea.json(&[
        "pulse",
        "answer",
        "--score",
        "10",
        "--respondent",
        "analyst",
    ]);
    // This node's member changes their mind: their answer is replaced, not added.
    let pulse = emea.json(&["pulse", "answer", "--score", "9"]);
    assert_eq!(pulse["responses"], 2, "{pulse:#}");
    assert_eq!(pulse["promoters"], 2, "{pulse:#}");
    assert_eq!(pulse["unit_nps"], 100.0, "{pulse:#}");
    emea.json(&[
        "pulse",
        "answer",
        "--score",
        "0",
        "--respondent",
        "marketer",
    ]);
    let shown = emea.json(&["pulse", "show"]);
    assert_eq!(shown["detractors"], 1, "{shown:#}");
    assert!((shown["unit_nps"].as_f64().expect("nps") - 100.0 / 3.0).abs() < 1e-9);
    assert!(
        shown.get("respondents").is_none() && !shown.to_string().contains("analyst"),
        "only counts: {shown:#}"
    );
    for (node, args) in [
        (emea, vec!["pulse", "answer", "--score", "11"]),
        (&council, vec!["pulse", "answer", "--score", "5"]),
    ] {
        let output = node.run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }

    let six = "kr_progress,velocity_days,experiments,significant_share,budget_used,unit_nps";
    let output = council.run(&["council", "settings", "--tier2-metrics", six]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("at most 5"));
    let settings = council.json(&[
        "council",
        "settings",
        "--tier2-metrics",
        "unit_nps,experiments",
    ]);
    assert_eq!(
        settings["tier2_metrics"],
        serde_json::json!(["unit_nps", "experiments"])
    );
    emea.import_all(&council.export("settings.gmb"));
    let card = emea.json(&["scorecard", "--tier", "2"]);
    let names: Vec<&str> = card["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["unit_nps", "experiments"], "{card:#}");
    assert!((card["metrics"][0]["value"].as_f64().expect("nps") - 100.0 / 3.0).abs() < 1e-9);
    assert_eq!(card["dashboard"]["pulse"]["promoters"], 2, "{card:#}");

    let (refused, _) = partner.json_status(&["scorecard", "--tier", "2", "--pod", "emea"], 1);
    assert_eq!(refused["reason"], "partner_tier_1_only", "{refused:#}");
    council.json(&[
        "council",
        "settings",
        "--scorecard-readers",
        &partner.public_key,
    ]);
    partner.import_all(&council.export("readers.gmb"));
    // Let in: no refusal (it holds no snapshot of the pod, as none was gossiped to it here).
    let output = partner.run(&["scorecard", "--tier", "2", "--pod", "emea"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no scorecard from pod"), "{stderr}");
}
