//! Governance through the real binary: a high-impact experiment waits for its quorum and cannot start until the
//! approval arrives (here by bundle, as after a partition heals), spends its cost when it starts, a start that would
//! overspend is refused with the numbers, experiments two pods registered concurrently both show the overlap once
//! merged, and every refused act (a pod voting, an allocation below what was spent, a conclusion of an experiment
//! that never ran) is refused naming the rule with nothing written.

mod support;

use serde_json::Value;

use support::{Node, federation};

/// Sends everything `from` holds to each of `to`.
fn sync(from: &Node, to: &[&Node], name: &str) {
    let bundle = from.export(name);
    for node in to {
        node.import_all(&bundle);
    }
}

fn new_experiment(
    node: &Node,
    key: &str,
    cost: &str,
    metric: &str,
    region: &str,
    hypothesis: &str,
) -> Value {
    node.json(&[
        "experiment",
        "new",
        "--key",
        key,
        "--hypothesis",
        hypothesis,
        "--primary-metric",
        metric,
        "--region",
        region,
        "--cost",
        cost,
        "--start",
        "2026-11-02",
        "--end",
        "2026-11-30",
    ])
}

fn codes(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn approvals_quorum_budgets_and_overlaps_bind_on_every_node() {
    let (council, pods) = federation(&[
        ("Council two", "council", ""),
        ("emea", "pod", "emea"),
        ("apac", "pod", "apac"),
    ]);
    let (council2, emea, apac) = (&pods[0], &pods[1], &pods[2]);
    council.json(&[
        "council",
        "threshold",
        "--quarter",
        "2026Q4",
        "--cost",
        "5000",
    ]);
    council.json(&["council", "quorum", "2"]);
    for pod in ["emea", "apac"] {
        council.json(&[
            "budget",
            "allocate",
            "--pod",
            pod,
            "--quarter",
            "2026Q4",
            "--amount",
            "10000",
        ]);
    }
    sync(&council, &[council2, emea, apac], "council.gmb");

    // A high-impact experiment waits for two approvals and cannot start before.
    let created = new_experiment(
        emea,
        "big-bet",
        "8000",
        "activation-rate",
        "eu",
        "if we rebuild onboarding then activation doubles because teams see value on day one",
    );
    assert_eq!(created["status"], "awaiting_approval", "{created}");
    assert_eq!(codes(&created["needs_approval"]), ["high_impact"]);
    let (refused, _) = emea.json_status(&["experiment", "start", "big-bet"], 1);
    assert_eq!(refused["reason"], "needs_approval", "{refused}");
    assert_eq!(refused["missing_approvals"], 2);
    assert!(refused["error"].as_str().unwrap().contains("big-bet"));

    // The council sees it queued, with why; a pod may not vote.
    sync(emea, &[&council, council2, apac], "emea.gmb");
    let queue = council.json(&["council", "queue"]);
    let entries = queue.as_array().expect("council queue --json is a list");
    assert_eq!(entries.len(), 1, "{queue}");
    assert_eq!(entries[0]["experiment"], "big-bet");
    assert_eq!(entries[0]["pod"], "emea");
    assert_eq!(codes(&entries[0]["reasons"]), ["high_impact"]);
    assert!(
        entries[0]["waiting_since"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    let (_, stderr) = apac.json_status(&["council", "approve", "big-bet", "--reason", "sure"], 1);
    assert!(stderr.contains("council"), "{stderr}");

    // One approval is not a quorum of two.
    council.json(&["council", "approve", "big-bet", "--reason", "worth it"]);
    sync(&council, &[emea], "approval-1.gmb");
    let (refused, _) = emea.json_status(&["experiment", "start", "big-bet"], 1);
    assert_eq!(refused["missing_approvals"], 1, "{refused}");

    // The second approval arrives from the other council member (as after a partition heals): the start goes.
    council2.json(&["council", "approve", "big-bet", "--reason", "agreed"]);
    sync(council2, &[emea, &council], "approval-2.gmb");
    let shown = emea.json(&["experiment", "show", "big-bet"]);
    assert_eq!(shown["status"], "approved", "{shown}");
    assert_eq!(codes(&shown["needs_approval"]), Vec::<&str>::new());
    let started = emea.json(&["experiment", "start", "big-bet"]);
    assert_eq!(started["spend"]["amount"], 8000.0, "{started}");
    let shown = emea.json(&["experiment", "show", "big-bet"]);
    assert_eq!(shown["status"], "running");

    // Within budget: 2,000 left; a 3,000 start is refused with the numbers.
    new_experiment(
        emea,
        "small-bet",
        "3000",
        "retention-d7",
        "eu",
        "if we send a weekly digest then week one retention rises because users come back",
    );
    let (refused, _) = emea.json_status(&["experiment", "start", "small-bet"], 1);
    assert_eq!(refused["reason"], "over_budget", "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("2000"),
        "{refused}"
    );
    let budgets = emea.json(&["budget", "list"]);
    let row = budgets["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["pod"] == "emea")
        .expect("emea's row")
        .clone();
    assert_eq!(
        (row["allocated"].as_f64(), row["spent"].as_f64()),
        (Some(10000.0), Some(8000.0))
    );
    assert_eq!(
        (row["remaining"].as_f64(), row["rolled_over"].as_f64()),
        (Some(2000.0), Some(0.0))
    );
    assert!(
        row.get("bonus").is_some() && row.get("roi").is_some(),
        "{row}"
    );

    // The council may not take back spent funds.
    sync(emea, &[&council], "emea-started.gmb");
    let (_, stderr) = council.json_status(
        &[
            "budget",
            "allocate",
            "--pod",
            "emea",
            "--quarter",
            "2026Q4",
            "--amount",
            "5000",
        ],
        2,
    );
    assert!(
        stderr.contains("--amount") && stderr.contains("8000"),
        "{stderr}"
    );

    // A conclusion of an experiment that never ran is refused before any analysis.
    let (_, stderr) = emea.json_status(&["experiment", "conclude", "small-bet"], 2);
    assert!(
        stderr.contains("small-bet") && stderr.contains("experiment start"),
        "{stderr}"
    );

    // Two pods register the same test concurrently: once merged, both show the overlap, naming the other pod.
    new_experiment(
        emea,
        "emea-pricing",
        "100",
        "trial-starts",
        "global",
        "annual plan discount on the pricing page",
    );
    new_experiment(
        apac,
        "apac-pricing",
        "100",
        "trial-starts",
        "global",
        "customer logos above the fold",
    );
    sync(emea, &[apac], "emea-2.gmb");
    sync(apac, &[emea], "apac-2.gmb");
    for (node, key, other, pod) in [
        (emea, "emea-pricing", "apac-pricing", "apac"),
        (apac, "apac-pricing", "emea-pricing", "emea"),
    ] {
        let shown = node.json(&["experiment", "show", key]);
        assert_eq!(shown["overlaps"][0]["experiment"], other, "{shown}");
        assert_eq!(shown["overlaps"][0]["pod"], pod);
        assert_eq!(codes(&shown["needs_approval"]), ["overlap"]);
        let listed = node.json(&["experiment", "list", "--status", "awaiting_approval"]);
        assert!(
            listed["experiments"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["key"] == key),
            "{listed}"
        );
    }
    // Same views, same decisions.
    let emea_view = emea.json(&["experiment", "list"]);
    let apac_view = apac.json(&["experiment", "list"]);
    let statuses = |v: &Value| -> Vec<(String, String)> {
        v["experiments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["key"].to_string(), e["status"].to_string()))
            .collect()
    };
    assert_eq!(statuses(&emea_view), statuses(&apac_view));
    assert_eq!(
        emea.json(&["learnings", "overdue"])["overdue"],
        Value::Array(vec![])
    );
}
