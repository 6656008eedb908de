//! Event ingestion, the quarantine, analysis and conclusion through the real `growthmesh` binary: a council and a
//! pod on temp data dirs, exchanging bundles.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::{Node, binary, federation_with_schemas as federation, path_str as path};

fn write_lines(node: &Node, name: &str, lines: &[&str]) -> PathBuf {
    let file = node.file(name);
    std::fs::write(&file, lines.join("\n") + "\n").expect("temp file");
    file
}

const ORDER: &str = r#"{"messageId":"m1","userId":"u1","event":"Order Completed","timestamp":"2025-03-01T10:00:00Z","properties":{"revenue":12.5,"currency":"EUR"}}"#;
const EXPOSURE: &str = r#"{"userId":"u1","event":"Experiment Viewed","timestamp":"2025-03-01T09:00:00Z","properties":{"experimentId":"checkout","variationId":"treatment"}}"#;
const PAGE: &str = r#"{"userId":"u1","event":"Page Viewed","timestamp":"2025-03-01T09:30:00Z","properties":{"path":"/cart"}}"#;

#[test]
fn bad_lines_are_quarantined_and_released_after_their_schema_is_approved() {
    let (council, pod) = federation(&["Order Completed"]);
    let file = write_lines(
        &pod,
        "events.jsonl",
        &[
            ORDER,
            "{not json",
            r#"{"userId":"u2","event":"Order Completed","timestamp":"2025-03-01T10:00:00Z","properties":{"revenue":"12","currency":"EUR"}}"#,
            PAGE,
            r#"{"userId":"u3","event":"Order Completed","timestamp":"2999-01-01T00:00:00Z","properties":{"revenue":1,"currency":"EUR"}}"#,
            r#"{"userId":"u3","event":"Order Completed","timestamp":"01/03/2025","properties":{"revenue":1,"currency":"EUR"}}"#,
            "",
            EXPOSURE,
        ],
    );
    let (report, _) = pod.json_status(&["ingest", path(&file)], 3);
    assert_eq!(
        (
            &report["accepted"],
            &report["duplicates"],
            &report["quarantined"]
        ),
        (&Value::from(2), &Value::from(0), &Value::from(5)),
        "{report}"
    );
    let rejected = report["rejected"].as_array().expect("a list");
    let lines: Vec<u64> = rejected
        .iter()
        .map(|r| r["line"].as_u64().expect("n"))
        .collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    let reason = |line: u64| {
        rejected
            .iter()
            .find(|r| r["line"] == line)
            .and_then(|r| r["reason"].as_str())
            .expect("a reason")
            .to_owned()
    };
    assert!(reason(2).contains("malformed JSON"), "{}", reason(2));
    assert!(
        reason(3).contains("property `revenue` must be a number"),
        "{}",
        reason(3)
    );
    assert!(
        reason(4).contains("unknown event `Page Viewed`"),
        "{}",
        reason(4)
    );
    assert!(reason(5).contains("in the future"), "{}", reason(5));
    assert!(reason(6).contains("is not RFC 3339"), "{}", reason(6));

    // The same file again: nothing new, nothing counted twice, the quarantine holds each line once.
    let (again, _) = pod.json_status(&["ingest", path(&file)], 3);
    assert_eq!(
        (&again["accepted"], &again["duplicates"]),
        (&Value::from(0), &Value::from(2))
    );
    let listed = pod.json(&["quarantine", "list"]);
    let listed = listed["quarantined"].as_array().expect("a list");
    assert_eq!(listed.len(), 5);
    assert_eq!(listed[2]["line"], 4);
    assert_eq!(listed[2]["raw"], PAGE, "the line is kept unchanged");

    // Approving the missing schema releases its line, and only it.
    pod.json(&[
        "schema",
        "propose",
        "--event",
        "Page Viewed",
        "--property",
        "path:string",
    ]);
    council.import_all(&pod.export("proposal.gmb"));
    council.json(&["schema", "approve", "Page Viewed"]);
    pod.import_all(&council.export("approval.gmb"));
    let (retried, _) = pod.json_status(&["quarantine", "retry"], 3);
    assert_eq!(
        (&retried["accepted"], &retried["quarantined"]),
        (&Value::from(1), &Value::from(4))
    );
    let listed = pod.json(&["quarantine", "list"]);
    assert_eq!(listed["quarantined"].as_array().expect("a list").len(), 4);
}

#[test]
fn gzip_files_and_stdin_are_ingested() {
    let (_council, pod) = federation(&["Order Completed", "Page Viewed"]);
    let gz = pod.file("events.jsonl.gz");
    let generated = binary()
        .args([
            "generate-events",
            "--users",
            "50",
            "--events",
            "300",
            "--experiment",
            "checkout",
            "--out",
            path(&gz),
            "--json",
        ])
        .output()
        .expect("the binary runs");
    assert!(generated.status.success(), "{generated:?}");
    let report = pod.json(&["ingest", path(&gz)]);
    assert_eq!(
        (&report["accepted"], &report["quarantined"]),
        (&Value::from(300), &Value::from(0))
    );

    let input = format!("{ORDER}\n{PAGE}\n");
    let report = pod.json_stdin(&["ingest", "-"], input.as_bytes());
    assert_eq!(report["accepted"], 2, "{report}");
    let again = pod.json_stdin(&["ingest", "-"], input.as_bytes());
    assert_eq!(
        (&again["accepted"], &again["duplicates"]),
        (&Value::from(0), &Value::from(2))
    );

    let missing = pod.run(&["ingest", path(&pod.file("nope.jsonl"))]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.jsonl: cannot open"));
}

fn generate(pod: &Node, name: &str, lift: &str, seed: &str) -> PathBuf {
    generate_for(pod, "checkout", name, lift, seed)
}

fn generate_for(pod: &Node, experiment: &str, name: &str, lift: &str, seed: &str) -> PathBuf {
    let out = pod.file(name);
    let output = binary()
        .args([
            "generate-events",
            "--users",
            "4000",
            "--events",
            "40000",
            "--seed",
            seed,
            "--experiment",
            experiment,
            "--weights",
            "0.4,0.6",
            "--lift",
            lift,
            "--out",
            path(&out),
        ])
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    out
}

#[test]
fn analysis_detects_a_lift_and_the_conclusion_replicates() {
    let (council, pod) = federation(&["Order Completed", "Page Viewed"]);
    let file = generate(&pod, "lift.jsonl", "0.5", "11");
    pod.json(&["ingest", path(&file)]);
    let report = pod.json(&["analyze", "checkout"]);
    assert_eq!(report["verdict"], "ship", "{report:#}");
    assert_eq!(report["srm"], false);
    let conversion = &report["metrics"][0];
    assert_eq!(conversion["metric"], "conversion");
    let lift = &conversion["lifts"][0];
    assert!(
        lift["relative_lift"].as_f64().expect("a number") > 0.2,
        "{lift}"
    );
    assert!(
        lift["p_value"].as_f64().expect("a number") < 0.001,
        "{lift}"
    );
    assert!(
        lift["chance_to_win"].as_f64().expect("a number") > 0.99,
        "{lift}"
    );
    let users: u64 = report["users"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|u| u.as_u64().expect("n"))
        .sum();
    assert_eq!(users, 4000);

    let text = pod.run(&["analyze", "checkout"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("verdict: ship") && text.contains("conversion (binomial"),
        "{text}"
    );

    // Only an experiment that ran concludes.
    let (_, stderr) = pod.json_status(&["experiment", "conclude", "checkout"], 2);
    assert!(stderr.contains("experiment start checkout"), "{stderr}");
    pod.json(&["experiment", "start", "checkout"]);
    let concluded = pod.json(&["experiment", "conclude", "checkout"]);
    assert_eq!(concluded["decision"], "ship");
    assert!(concluded["postmortem_due"].is_string(), "{concluded}");
    council.import_all(&pod.export("result.gmb"));
    let view = council.json(&["registry", "show"]);
    let summary = &view["results"]["checkout"];
    assert_eq!(summary["decision"], "ship", "{view:#}");
    assert_eq!(view["experiments"]["checkout"]["status"], "concluded");
    let control = &summary["metrics"][0]["variants"][0];
    assert_eq!(control["variant"], "control");
    assert!(control["n"].as_u64().expect("n") > 1000, "{control}");
    assert!(control["sum_squares"].is_number() && control["pre_sum"].is_number());

    // The council, which never held a raw event, recomputes the CUPED-adjusted result from the signed statistics.
    let verified = council.json(&["result", "verify", "checkout"]);
    assert_eq!(verified["experiment"], "checkout");
    assert_eq!(verified["matches"], true, "{verified:#}");
    assert_eq!(verified["stored"], verified["recomputed"], "{verified:#}");
    assert_eq!(verified["recomputed"]["metrics"][0]["cuped"], true);
    assert_eq!(verified["recomputed"]["verdict"], "ship");
    let text = council.run(&["result", "verify", "checkout"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("matches its recomputation"), "{text}");
    let (_, stderr) = council.json_status(&["result", "verify", "nope"], 2);
    assert!(stderr.contains("no experiment `nope`"), "{stderr}");
}

#[test]
fn an_aa_test_is_not_called() {
    let (_council, pod) = federation(&["Order Completed", "Page Viewed"]);
    let file = generate(&pod, "aa.jsonl", "0", "5");
    pod.json(&["ingest", path(&file)]);
    let report = pod.json(&["analyze", "checkout"]);
    assert_eq!(report["verdict"], "keep_running", "{report:#}");
    assert_eq!(report["metrics"][0]["lifts"][0]["significant"], false);
}

#[test]
fn a_metric_on_an_unapproved_event_is_named() {
    let (_council, pod) = federation(&["Order Completed", "Page Viewed"]);
    let (_, stderr) = pod.json_status(&["analyze", "checkout", "--metric", "signups"], 2);
    assert!(
        stderr.contains("metric `signups`: event `Signed Up` has no approved event schema"),
        "{stderr}"
    );
    let (_, stderr) = pod.json_status(&["analyze", "nope"], 2);
    assert!(stderr.contains("no experiment `nope`"), "{stderr}");
    let (_, stderr) = pod.json_status(&["analyze", "checkout", "--metric", "ghost"], 2);
    assert!(
        stderr.contains("metric `ghost` (--metric of experiment `checkout`)"),
        "{stderr}"
    );
}

#[test]
fn assign_uses_the_registered_weights() {
    let (_council, pod) = federation(&[]);
    let registered = pod.json(&["assign", "--experiment", "checkout", "--user", "user-7"]);
    let flags = binary()
        .args([
            "assign",
            "--experiment",
            "checkout",
            "--user",
            "user-7",
            "--weights",
            "0.4,0.6",
            "--json",
        ])
        .output()
        .expect("the binary runs");
    let flags: Value = serde_json::from_slice(&flags.stdout).expect("JSON");
    assert_eq!(registered, flags);
    // Over many users the registered 40/60 split shows.
    let treated = (0..100)
        .filter(|i| {
            let user = format!("u{i}");
            pod.json(&["assign", "--experiment", "checkout", "--user", &user])["variation"] == 1
        })
        .count();
    assert!((45..=75).contains(&treated), "{treated}");
}

/// Two pods ran the same hypothesis: the council pools their signed results (fixed and random effects, I², the
/// prediction interval) and flags that it works in one pod and not in the other.
#[test]
fn the_council_pools_the_pods_results_on_one_hypothesis_and_flags_heterogeneity() {
    let (council, emea) = federation(&["Order Completed", "Page Viewed"]);
    emea.json(&["ingest", path(&generate(&emea, "emea.jsonl", "0.5", "21"))]);
    emea.json(&["experiment", "start", "checkout"]);
    emea.json(&["experiment", "conclude", "checkout"]);
    council.import_all(&emea.export("emea-result.gmb"));

    let apac = Node::init("Apac");
    council.json(&[
        "member",
        "add",
        &apac.public_key,
        "--role",
        "pod",
        "--name",
        "Apac",
        "--pod",
        "apac",
    ]);
    apac.import_all(&council.export("apac-founding.gmb"));
    apac.json(&[
        "experiment",
        "new",
        "--key",
        "checkout-apac",
        "--hypothesis",
        "if the checkout is shorter then more people order because there is less friction",
        "--primary-metric",
        "conversion",
        "--weights",
        "0.4,0.6",
    ]);
    let file = generate_for(&apac, "checkout-apac", "apac.jsonl", "0", "22");
    apac.json(&["ingest", path(&file)]);
    apac.json(&["experiment", "start", "checkout-apac"]);
    apac.json(&["experiment", "conclude", "checkout-apac"]);
    council.import_all(&apac.export("apac-result.gmb"));

    let pooled = council.json(&["stats", "meta", "--from-registry", "checkout"]);
    assert_eq!(pooled["metric"], "conversion", "{pooled:#}");
    let rows = pooled["experiments"].as_array().expect("experiments");
    let keys: Vec<&str> = rows
        .iter()
        .filter_map(|r| r["experiment"].as_str())
        .collect();
    assert_eq!(keys, ["checkout", "checkout-apac"], "{pooled:#}");
    for field in ["fixed", "random"] {
        assert!(pooled[field]["effect"].is_number(), "{pooled:#}");
    }
    assert!(pooled["random"]["tau2"].as_f64().expect("tau2") > 0.0);
    assert!(pooled["i2"].as_f64().expect("i2") > 0.5, "{pooled:#}");
    assert_eq!(pooled["heterogeneous"], true);
    assert_eq!(
        pooled["summary"], "heterogeneous: works in emea, not in apac",
        "{pooled:#}"
    );
    let interval = &pooled["prediction_interval"];
    assert!(interval[0].as_f64() < pooled["random"]["ci"][0].as_f64());
    // The pooled numbers are those of `stats meta` on the same effects.
    let effects: Vec<String> = rows
        .iter()
        .map(|r| format!("{},{}", r["estimate"], r["se"]))
        .collect();
    let mut args = vec!["stats", "meta"];
    for effect in &effects {
        args.extend(["--effect", effect]);
    }
    let by_hand = council.json(&args);
    assert_eq!(by_hand["random"], pooled["random"]);
    assert_eq!(by_hand["i2"], pooled["i2"]);
    // The hypothesis in words finds the same experiments.
    let by_words = council.json(&[
        "stats",
        "meta",
        "--from-registry",
        "a shorter checkout makes more people order: less friction",
    ]);
    assert_eq!(by_words["experiments"].as_array().map(Vec::len), Some(2));
    let (_, stderr) = council.json_status(
        &[
            "stats",
            "meta",
            "--from-registry",
            "dark mode raises retention",
        ],
        2,
    );
    assert!(
        stderr.contains("no concluded experiment tested"),
        "{stderr}"
    );
}

/// `analyze` reads only the events inside the experiment's dates and says how many it left out: events generated
/// for another period do not count, events generated inside the window do.
#[test]
fn analyze_counts_only_the_events_inside_the_experiments_dates() {
    let (_council, pod) = federation(&["Order Completed", "Page Viewed"]);
    pod.json(&[
        "experiment",
        "new",
        "--key",
        "october",
        "--hypothesis",
        "if checkout is shorter then more people order because there is less friction",
        "--primary-metric",
        "conversion",
        "--start",
        "2026-10-01",
        "--end",
        "2026-10-31",
    ]);
    // Generated in January 2025 (the default): all outside.
    pod.json(&[
        "ingest",
        path(&generate_for(&pod, "october", "2025.jsonl", "0.2", "5")),
    ]);
    let report = pod.json(&["analyze", "october"]);
    let users: u64 = report["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(users, 0, "{report:#}");
    let outside = report["outside_window"].as_u64().expect("a count");
    assert!(outside > 4_000, "{report:#}");
    let text = pod.run(&["analyze", "october"]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("outside the experiment's dates"),
        "{text:?}"
    );

    // Generated from its first day: counted (the 2025 lines still left out).
    let out = pod.file("october.jsonl");
    let output = binary()
        .args([
            "generate-events",
            "--experiment",
            "october",
            "--users",
            "2000",
            "--events",
            "20000",
            "--start",
            "2026-10-01",
            "--days",
            "10",
            "--out",
            path(&out),
        ])
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    pod.json(&["ingest", path(&out)]);
    let report = pod.json(&["analyze", "october"]);
    let users: u64 = report["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert!(users > 1_500, "{report:#}");
    assert!(report["outside_window"].as_u64().expect("a count") >= outside);
}

/// A schema's `retention_days` is enforced: `events purge` deletes the raw events older than it (as of a date),
/// keeps the younger ones and those of schemas without a limit, and `events stats` shows what is held and purged.
#[test]
fn raw_events_past_their_retention_are_purged_and_counted() {
    let (council, pod) = federation(&["Order Completed", "Page Viewed"]);
    // Page views are kept 30 days from version 2 on.
    pod.json(&[
        "schema",
        "propose",
        "--event",
        "Page Viewed",
        "--version",
        "2",
        "--property",
        "path:string",
        "--retention-days",
        "30",
    ]);
    council.import_all(&pod.export("v2.gmb"));
    council.json(&["schema", "approve", "Page Viewed", "--version", "2"]);
    pod.import_all(&council.export("v2-approved.gmb"));
    let page = |day: u32, id: u32| {
        format!(
            r#"{{"messageId":"p{id}","userId":"u{id}","event":"Page Viewed","timestamp":"2026-10-{day:02}T10:00:00Z","properties":{{"path":"/"}}}}"#
        )
    };
    let order = r#"{"messageId":"o1","userId":"u1","event":"Order Completed","timestamp":"2026-09-01T10:00:00Z","properties":{"revenue":5,"currency":"EUR"}}"#;
    let lines = [page(1, 1), page(2, 2), page(25, 3), order.to_owned()];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    pod.json(&["ingest", path(&write_lines(&pod, "mixed.jsonl", &lines))]);
    let before = pod.json(&["events", "stats"]);
    assert_eq!(before["stored"], 4, "{before:#}");
    assert_eq!(before["quarantined"], 0, "{before:#}");
    assert_eq!(before["purged"], 0, "{before:#}");

    // As of 2026-11-10, the views of 1 and 2 October are over 30 days old; the one of the 25th is not, and orders
    // have no limit.
    let purge = pod.json(&["events", "purge", "--as-of", "2026-11-10"]);
    assert_eq!(purge["total"], 2, "{purge:#}");
    assert_eq!(purge["by_event"]["Page Viewed"], 2, "{purge:#}");
    let after = pod.json(&["events", "stats"]);
    assert_eq!(after["stored"], 2, "{after:#}");
    assert_eq!(after["purged"], 2, "{after:#}");
    assert!(after["last_purge"].is_string(), "{after:#}");
    // Purging again deletes nothing more.
    assert_eq!(
        pod.json(&["events", "purge", "--as-of", "2026-11-10"])["total"],
        0
    );
    let (_, stderr) = pod.json_status(&["events", "purge", "--as-of", "tomorrow"], 2);
    assert!(stderr.contains("--as-of"), "{stderr}");
}

/// A file with thousands of bad lines gives a summary by kind, not a flood, and names the command that lists one
/// kind; `quarantine list --reason` lists exactly that kind.
#[test]
fn ingest_summarises_rejections_by_kind() {
    let (_council, pod) = federation(&["Order Completed"]);
    let mut lines: Vec<String> = (0..2_500)
        .map(|i| {
            format!(
                r#"{{"messageId":"s{i}","userId":"u{i}","event":"Signed Up","timestamp":"2026-10-02T10:00:00Z"}}"#
            )
        })
        .collect();
    lines.extend((0..40).map(|i| format!("{{broken {i}")));
    lines.push(ORDER.to_owned());
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let file = write_lines(&pod, "bad.jsonl", &lines);
    let output = pod.run(&["ingest", path(&file)]);
    assert_eq!(output.status.code(), Some(3), "some lines quarantined");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.lines().count() <= 6, "a summary, not a flood:\n{text}");
    assert!(text.contains("2500  unknown event `Signed Up`"), "{text}");
    assert!(text.contains("40  malformed JSON"), "{text}");
    assert!(
        text.contains("quarantine list --reason 'unknown event `Signed Up`'"),
        "{text}"
    );
    let (report, _) = pod.json_status(&["ingest", path(&file)], 3);
    assert_eq!(report["by_reason"]["malformed JSON"], 40, "{report:#}");
    let listed = pod.json(&["quarantine", "list", "--reason", "malformed JSON"]);
    assert_eq!(listed["quarantined"].as_array().map(Vec::len), Some(40));
}
