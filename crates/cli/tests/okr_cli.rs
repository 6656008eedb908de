//! Live OKRs through the real `growthmesh` binary: the council approves metrics, a pod ingests events, adds key
//! results on those metrics, measures them from its own events as of a date, and `okr tree` shows progress and
//! confidence on the pod and, after a bundle exchange, on the council.

mod support;

use serde_json::Value;

use support::{Node, federation, path_str};

/// Events of the pod. As of 2026-11-15 (the window ends at 2026-11-16T00:00Z):
/// - the 28-day window starts 2026-10-19: u1, u2, u3, u5 and u7 had events inside it; u1 and u3 ordered;
/// - the 7-day window starts 2026-11-09: u2, u3 and u5 had events inside it; u3 ordered twice (12 + 6);
/// - u4's events come before both windows, u6's order at their end (outside) and its page view after.
const EVENTS: [&str; 12] = [
    r#"{"userId":"u1","event":"Page Viewed","timestamp":"2026-11-01T10:00:00Z","properties":{}}"#,
    r#"{"userId":"u1","event":"Order Completed","timestamp":"2026-11-02T10:00:00Z","properties":{"revenue":30}}"#,
    r#"{"userId":"u2","event":"Page Viewed","timestamp":"2026-11-10T09:00:00Z","properties":{}}"#,
    r#"{"userId":"u3","event":"Page Viewed","timestamp":"2026-11-12T12:00:00Z","properties":{}}"#,
    r#"{"userId":"u3","event":"Order Completed","timestamp":"2026-11-12T12:30:00Z","properties":{"revenue":12}}"#,
    r#"{"userId":"u3","event":"Order Completed","timestamp":"2026-11-14T08:00:00+01:00","properties":{"revenue":6}}"#,
    r#"{"userId":"u4","event":"Page Viewed","timestamp":"2026-10-10T10:00:00Z","properties":{}}"#,
    r#"{"userId":"u4","event":"Order Completed","timestamp":"2026-10-11T10:00:00Z","properties":{"revenue":99}}"#,
    r#"{"userId":"u5","event":"Page Viewed","timestamp":"2026-11-15T23:59:59Z","properties":{}}"#,
    r#"{"userId":"u6","event":"Order Completed","timestamp":"2026-11-16T00:00:00Z","properties":{"revenue":50}}"#,
    r#"{"userId":"u6","event":"Page Viewed","timestamp":"2026-11-20T10:00:00Z","properties":{}}"#,
    r#"{"userId":"u7","event":"Page Viewed","timestamp":"2026-10-19T00:00:00Z","properties":{}}"#,
];

/// A council and the `emea` pod; the pod proposed the schemas and the metrics `conversion` (binomial) and
/// `revenue` (mean), the council approved them and wrote an objective for 2026Q4 with `conversion` as its North
/// Star, and the pod holds all of it. Returns the objective id too.
fn approved_metrics() -> (Node, Node, String) {
    let (council, mut pods) = federation(&[("EMEA pod", "pod", "emea")]);
    let pod = pods.remove(0);
    pod.json(&["schema", "propose", "--event", "Page Viewed"]);
    pod.json(&[
        "schema",
        "propose",
        "--event",
        "Order Completed",
        "--property",
        "revenue:number:required",
    ]);
    pod.json(&[
        "metric",
        "propose",
        "--key",
        "conversion",
        "--type",
        "binomial",
        "--event",
        "Order Completed",
    ]);
    pod.json(&[
        "metric",
        "propose",
        "--key",
        "revenue",
        "--type",
        "mean",
        "--event",
        "Order Completed",
        "--property",
        "revenue",
    ]);
    council.import_all(&pod.export("proposals.gmb"));
    council.json(&["schema", "approve", "Page Viewed"]);
    council.json(&["schema", "approve", "Order Completed"]);
    council.json(&["metric", "approve", "conversion"]);
    council.json(&["metric", "approve", "revenue"]);
    council.json(&[
        "okr",
        "objective",
        "add",
        "--title",
        "More teams order",
        "--quarter",
        "2026Q4",
        "--north-star",
        "conversion",
        "--target",
        "0.5",
    ]);
    pod.import_all(&council.export("standards.gmb"));
    let objectives = pod.json(&["okr", "objective", "list"]);
    let objective = objectives["objectives"][0]["id"]
        .as_str()
        .expect("an objective id")
        .to_owned();
    (council, pod, objective)
}

/// The id of the pod's key result measured by `metric`.
fn key_result_id(pod: &Node, metric: &str) -> String {
    let listed = pod.json(&["okr", "kr", "list"]);
    listed["key_results"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|k| k["metric"] == metric)
        .and_then(|k| k["id"].as_str())
        .expect("the key result is listed")
        .to_owned()
}

fn number(value: &Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is a number"))
}

#[test]
fn key_results_are_measured_from_the_pods_events_and_paced_against_the_quarter() {
    let (council, pod, objective) = approved_metrics();

    let (_, stderr) = pod.json_status(
        &[
            "okr",
            "kr",
            "add",
            "--objective",
            &objective,
            "--metric",
            "activation-rate",
            "--target",
            "0.4",
        ],
        2,
    );
    assert!(stderr.contains("--metric"), "{stderr}");
    assert!(stderr.contains("metric propose"), "{stderr}");
    assert!(stderr.contains("metric approve"), "{stderr}");

    let events = pod.file("events.jsonl");
    std::fs::write(&events, EVENTS.join("\n") + "\n").expect("temp file");
    let ingested = pod.json(&["ingest", path_str(&events)]);
    assert_eq!(ingested["accepted"], EVENTS.len(), "{ingested}");

    for args in [
        &[
            "--metric",
            "conversion",
            "--baseline",
            "0.3",
            "--target",
            "0.5",
        ][..],
        &[
            "--metric",
            "revenue",
            "--target",
            "20",
            "--window-days",
            "7",
        ],
    ] {
        let mut argv = vec!["okr", "kr", "add", "--objective", &objective];
        argv.extend_from_slice(args);
        pod.json(&argv);
    }
    let conversion_id = key_result_id(&pod, "conversion");
    let revenue_id = key_result_id(&pod, "revenue");

    let before = pod.json(&["okr", "tree", "--as-of", "2026-11-15"]);
    let rows = &before["objectives"][0]["key_results"];
    assert_eq!(rows[0]["confidence"], "no_data", "{before}");
    assert_eq!(rows[0]["current"], Value::Null);

    // By hand: 2 of the 5 users active in the 28 days ordered; the 3 users active in the 7 days spent 12 + 6.
    let conversion = 2.0 / 5.0;
    let revenue = (12.0 + 6.0) / 3.0;
    let refreshed = pod.json(&["okr", "kr", "refresh", "--as-of", "2026-11-15"]);
    let find = |id: &str| -> Value {
        refreshed["key_results"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {refreshed}"))
    };
    let measured = find(&conversion_id);
    assert_eq!(number(&measured["value"]), conversion, "{measured}");
    assert_eq!(
        (&measured["users"], &measured["events"]),
        (&Value::from(5), &Value::from(3))
    );
    assert!(measured["change"].is_string(), "{measured}");
    let measured = find(&revenue_id);
    assert_eq!(number(&measured["value"]), revenue, "{measured}");
    assert_eq!(
        (&measured["users"], &measured["events"]),
        (&Value::from(3), &Value::from(2))
    );

    // The same value again is not written again.
    let again = pod.json(&[
        "okr",
        "kr",
        "refresh",
        &conversion_id,
        "--as-of",
        "2026-11-15",
    ]);
    assert_eq!(again["key_results"][0]["change"], Value::Null, "{again}");
    assert_eq!(number(&again["key_results"][0]["previous"]), conversion);

    // As of 2026-11-15, 46 of 2026Q4's 92 days are gone: 0.5 expected.
    let check = |tree: &Value| {
        let objective = &tree["objectives"][0];
        assert_eq!(objective["expected"], 0.5, "{tree}");
        let north_star = &objective["north_star"];
        assert_eq!(north_star["metric"], "conversion");
        assert_eq!(number(&north_star["target"]), 0.5);
        assert_eq!(number(&north_star["current"]), conversion);
        let rows = objective["key_results"].as_array().expect("a list");
        let row = |id: &str| rows.iter().find(|r| r["id"] == id).expect("a row");
        let on_track = row(&conversion_id);
        assert_eq!(on_track["pod"], "emea");
        assert_eq!(number(&on_track["current"]), conversion);
        let progress = (conversion - 0.3) / (0.5 - 0.3);
        assert!(
            (number(&on_track["progress"]) - progress).abs() < 1e-12,
            "{on_track}"
        );
        assert_eq!(on_track["confidence"], "on_track");
        assert_eq!(on_track["window_days"], 28);
        assert!(number(&on_track["updated_at_ms"]) > 0.0);
        // 6 of 20 is 0.3 of the way, 0.2 behind the pace.
        let at_risk = row(&revenue_id);
        assert!(
            (number(&at_risk["progress"]) - revenue / 20.0).abs() < 1e-12,
            "{at_risk}"
        );
        assert_eq!(at_risk["confidence"], "at_risk");
        assert_eq!(at_risk["window_days"], 7);
    };
    let tree = pod.json(&["okr", "tree", "--as-of", "2026-11-15"]);
    check(&tree);
    // Published signed in the pod's document: the council sees the same tree once it holds the pod's changes.
    council.import_all(&pod.export("values.gmb"));
    assert_eq!(
        council.json(&[
            "okr",
            "tree",
            "--as-of",
            "2026-11-15",
            "--quarter",
            "2026Q4"
        ]),
        tree
    );
    // At the end of the quarter the same values are behind.
    let late = pod.json(&["okr", "tree", "--as-of", "2026-12-31"]);
    let rows = &late["objectives"][0]["key_results"];
    let confidences: Vec<&Value> = rows
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| &r["confidence"])
        .collect();
    assert_eq!(
        confidences,
        [&Value::from("off_track"), &Value::from("off_track")],
        "{late}"
    );

    let text = pod.run(&["okr", "tree", "--as-of", "2026-11-15"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("on track") && text.contains("at risk"),
        "{text}"
    );
}

#[test]
fn only_the_owning_pod_refreshes_and_bad_dates_are_refused() {
    let (council, pod, _) = approved_metrics();
    let (_, stderr) = council.json_status(&["okr", "kr", "refresh"], 1);
    assert!(stderr.contains("not an active pod member"), "{stderr}");
    let (_, stderr) = pod.json_status(&["okr", "kr", "refresh", "kr-nope"], 2);
    assert!(stderr.contains("no key result `kr-nope`"), "{stderr}");
    let (_, stderr) = pod.json_status(&["okr", "kr", "refresh", "--as-of", "2026-02-30"], 2);
    assert!(stderr.contains("--as-of"), "{stderr}");
    let (_, stderr) = pod.json_status(&["okr", "tree", "--quarter", "Q4"], 2);
    assert!(stderr.contains("--quarter"), "{stderr}");
    let empty = pod.json(&["okr", "kr", "refresh"]);
    assert_eq!(empty["key_results"], Value::Array(Vec::new()));
}
