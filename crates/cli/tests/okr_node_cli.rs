//! Live OKRs on a running pod node: `growthmesh node` measures its pod's key results from its own events when it
//! starts (and every `kr_refresh_interval_ms`) and publishes them, with nobody running `okr kr refresh`.

mod support;

use std::time::Instant;

use serde_json::Value;

use support::{Node, WAIT, path_str};

/// The daemon refreshes key results this often.
const CONFIG: &str = "\
tick_ms = 50
kr_refresh_interval_ms = 200
";

#[test]
fn a_running_pod_node_publishes_its_key_results() {
    let council = Node::init("Council");
    council.json(&["federation", "create", "--name", "Acme"]);
    let pod = Node::init("Pod");
    let key = pod.public_key.clone();
    council.json(&[
        "member", "add", &key, "--role", "pod", "--name", "Pod", "--pod", "emea",
    ]);
    pod.import_all(&council.export("founding.gmb"));
    pod.json(&["schema", "propose", "--event", "Signed Up"]);
    pod.json(&[
        "metric",
        "propose",
        "--key",
        "signups",
        "--type",
        "binomial",
        "--event",
        "Signed Up",
    ]);
    council.import_all(&pod.export("proposals.gmb"));
    council.json(&["schema", "approve", "Signed Up"]);
    council.json(&["metric", "approve", "signups"]);
    council.json(&[
        "okr",
        "objective",
        "add",
        "--title",
        "Grow",
        "--quarter",
        "2026Q4",
    ]);
    pod.import_all(&council.export("standards.gmb"));
    let objectives = pod.json(&["okr", "objective", "list"]);
    let objective = objectives["objectives"][0]["id"]
        .as_str()
        .expect("an objective id")
        .to_owned();
    pod.json(&[
        "okr",
        "kr",
        "add",
        "--objective",
        &objective,
        "--metric",
        "signups",
        "--target",
        "1",
    ]);

    // In the last 28 days u1 signed up and u2 only viewed a page: half the active users signed up.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let at = |hours_ago: i64| analysis::time::format_rfc3339(now_ms - hours_ago * 3_600_000);
    let lines = [
        format!(
            r#"{{"userId":"u1","event":"Signed Up","timestamp":"{}","properties":{{}}}}"#,
            at(48)
        ),
        format!(
            r#"{{"userId":"u2","event":"Experiment Viewed","timestamp":"{}","properties":{{"experimentId":"x","variationId":"0"}}}}"#,
            at(24)
        ),
        format!(
            r#"{{"userId":"u3","event":"Signed Up","timestamp":"{}","properties":{{}}}}"#,
            at(24 * 40)
        ),
    ];
    let events = pod.file("events.jsonl");
    std::fs::write(&events, lines.join("\n") + "\n").expect("temp file");
    let ingested = pod.json(&["ingest", path_str(&events)]);
    assert_eq!(ingested["accepted"], 3, "{ingested}");

    let config = pod.file("okr.toml");
    std::fs::write(&config, CONFIG).expect("temp file");
    let daemon = pod.start_with(&["--config", path_str(&config)]);
    let deadline = Instant::now() + WAIT;
    let current = loop {
        // Forwarded to the running node.
        let listed = pod.json(&["okr", "kr", "list"]);
        let current = listed["key_results"][0]["current"].clone();
        if current != Value::Null {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "no value published after {WAIT:?}: {listed}\n{}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(current, 0.5);
    let tree = pod.json(&["okr", "tree"]);
    let row = &tree["objectives"][0]["key_results"][0];
    assert_eq!(
        (&row["current"], &row["pod"]),
        (&Value::from(0.5), &Value::from("emea"))
    );
    assert!(daemon.stop().success());
}
