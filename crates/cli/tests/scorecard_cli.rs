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
    emea.json(&[
        "experiment",
        "new",
        "--key",
        "shorter-signup",
        "--hypothesis",
        "if the signup form is shorter then more people sign up because it takes less time",
    ]);
    let _emea_node = emea.start(&[]);
    let started = Instant::now();
    loop {
        let fresh = council.json(&["scorecard", "--tier", "2", "--pod", &pod]);
        let experiments = fresh["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == "experiments")
            .and_then(|m| m["value"].as_f64());
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
