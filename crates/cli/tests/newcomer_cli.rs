//! What a newcomer runs first, through the binary: list commands piped into `head` end quietly, `assign` answers the
//! same with or without a running node on the data dir, and completions and the manual page come from the command
//! definitions.

mod support;

use std::process::Command;

use support::{Node, federation, path_str};

/// Runs `growthmesh --data-dir DIR ARGS | head -n 1` in bash and returns the binary's exit status (`PIPESTATUS`).
fn piped_into_head(node: &Node, args: &[&str]) -> (Option<i32>, String) {
    let line = format!(
        "'{}' --data-dir '{}' {} | head -n 1 >/dev/null; exit ${{PIPESTATUS[0]}}",
        env!("CARGO_BIN_EXE_growthmesh"),
        path_str(&node.dir),
        args.join(" ")
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(&line)
        .env_remove("GROWTHMESH_DATA_DIR")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("bash runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn list_commands_piped_into_head_end_quietly() {
    let (council, nodes) = federation(&[("emea", "pod", "emea")]);
    let pod = &nodes[0];
    // Thousands of quarantined lines: far more output than a pipe holds, so the reader leaves while it is written.
    let lines: String = (0..4_000)
        .map(|i| {
            format!(
                "{{\"userId\":\"u{i}\",\"event\":\"Never Approved\",\"timestamp\":\"2026-10-02T10:00:00Z\",\"messageId\":\"m{i}\"}}\n"
            )
        })
        .collect();
    let file = pod.file("unknown.jsonl");
    std::fs::write(&file, lines).expect("temp file");
    let output = pod.run(&["ingest", path_str(&file)]);
    assert!(
        output.status.code().is_some_and(|c| c == 0 || c == 3),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lists: &[(&Node, &[&str])] = &[
        (pod, &["quarantine", "list"]),
        (pod, &["quarantine", "list", "--json"]),
        (&council, &["member", "list"]),
        (&council, &["experiment", "list"]),
        (&council, &["budget", "list"]),
        (&council, &["okr", "kr", "list"]),
        (&council, &["okr", "tree"]),
        (&council, &["learnings", "search", "checkout"]),
        (&council, &["learnings", "overdue"]),
        (&council, &["metric", "list"]),
        (&council, &["council", "queue"]),
        (&council, &["registry", "heads"]),
        (&council, &["schema", "list"]),
        (&council, &["registry", "show", "--json"]),
    ];
    for (node, args) in lists {
        let (status, stderr) = piped_into_head(node, args);
        assert!(
            matches!(status, Some(0 | 141)),
            "{args:?} | head -n 1 exited {status:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn assign_answers_the_same_with_or_without_a_running_node() {
    let (_council, nodes) = federation(&[("emea", "pod", "emea")]);
    let pod = &nodes[0];
    pod.json(&[
        "experiment",
        "new",
        "--key",
        "checkout",
        "--hypothesis",
        "if checkout is shorter then more people order because there is less friction",
        "--weights",
        "0.2,0.8",
        "--namespace",
        "pricing:0:0.5",
    ]);
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let offline: Vec<serde_json::Value> = users
        .iter()
        .map(|u| pod.json(&["assign", "--experiment", "checkout", "--user", u]))
        .collect();
    // The registered weights and namespace, not the flags' defaults: some users fall outside the namespace.
    assert!(offline.iter().any(|a| a["in_experiment"] == false));
    let _running = pod.start(&[]);
    let online: Vec<serde_json::Value> = users
        .iter()
        .map(|u| pod.json(&["assign", "--experiment", "checkout", "--user", u]))
        .collect();
    assert_eq!(offline, online);
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_definitions() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef growthmesh"),
        ("fish", "complete -c growthmesh"),
    ] {
        let output = support::binary()
            .args(["completions", shell])
            .output()
            .expect("runs");
        assert!(output.status.success());
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(script.contains(marker), "{shell}: {script:.200}");
        assert!(
            script.contains("scorecard"),
            "{shell} completes every command"
        );
    }
    let output = support::binary().arg("man").output().expect("runs");
    assert!(output.status.success());
    let page = String::from_utf8_lossy(&output.stdout);
    assert!(page.contains(".TH growthmesh 1"), "{page:.200}");
    let output = support::binary()
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert_eq!(
        output.status.code(),
        Some(2),
        "an unknown shell is bad input"
    );
}

/// `peers` shows when a peer's changes last arrived by push, not "never" because no pull was needed; an expired
/// ticket's error gives its date.
#[test]
fn peers_show_pushes_and_an_expired_ticket_gives_its_date() {
    let (council, _council_node) = support::found("Council");
    let (emea, _emea_node) = support::invite_and_join(&council, "pod", "emea");
    emea.json(&[
        "learnings",
        "add",
        "--title",
        "Pushed",
        "--body",
        "it arrives by push",
    ]);
    let started = std::time::Instant::now();
    loop {
        let peers = council.json(&["peers"]);
        let pushed = peers["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["last_push_ms"].is_u64() && p["accepted"].as_u64() > Some(0));
        if pushed {
            break;
        }
        assert!(
            started.elapsed() < support::WAIT,
            "no push recorded: {peers:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let text = String::from_utf8_lossy(&council.run(&["peers"]).stdout).into_owned();
    assert!(
        text.contains("LAST PUSH") && text.contains(" s ago"),
        "{text}"
    );
    // Levels are gauges, totals counters, and the network layer's own counters are there.
    let (code, metrics) = council.get("/metrics");
    assert_eq!(code, 200);
    for expected in [
        "# TYPE growthmesh_peers_connected gauge",
        "# TYPE growthmesh_changes gauge",
        "growthmesh_remote_changes_accepted_total ",
        "growthmesh_net_penalties_total ",
        "growthmesh_net_requests_refused_total{reason=\"not_member\"} ",
    ] {
        assert!(metrics.contains(expected), "{expected} missing:\n{metrics}");
    }

    let ticket = council.run(&[
        "invite",
        "--role",
        "pod",
        "--name",
        "apac",
        "--expires",
        "1s",
    ]);
    let ticket = String::from_utf8_lossy(&ticket.stdout).trim().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let late = Node::init("Apac");
    let output = late.run(&["join", &ticket]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("expired at 20"),
        "a date, not Unix ms: {stderr}"
    );
    assert!(!stderr.contains("Unix ms"), "{stderr}");
}

/// The offline demo does what the README says: it converges, flags AMER's all-region experiment as overlapping
/// EMEA's, and `--seed` replays the same run.
#[test]
fn the_offline_demo_converges_flags_its_overlap_and_replays_a_seed() {
    let run = || {
        let output = support::binary()
            .args(["demo", "--offline", "--seed", "11", "--json"])
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        support::one_json_document(&output.stdout)
    };
    let first = run();
    assert_eq!(first["converged"], true, "{first:#}");
    assert_eq!(first["seed"], 11);
    assert!(
        first["overlapping"].as_u64() >= Some(2),
        "both of the pair: {first:#}"
    );
    // Keys and times are new each run, so change hashes differ; what the shuffle decides does not.
    let second = run();
    let shape = |v: &serde_json::Value| {
        let changes: Vec<serde_json::Value> = v["replicas"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["changes"].clone())
            .collect();
        // Listed by change hash, which differs between runs: compared as a sorted list.
        let mut reasons: Vec<String> = v["rejected"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["reason"].as_str().map(str::to_owned))
            .collect();
        reasons.sort();
        (changes, reasons, v["overlapping"].clone())
    };
    assert_eq!(shape(&first), shape(&second), "the same seed, the same run");
}

/// Enum arguments are parsed by clap: a wrong value is refused before anything runs, naming the values it takes.
#[test]
fn a_wrong_enum_value_names_the_values_it_takes() {
    let node = Node::init("Council");
    node.json(&["federation", "create", "--name", "Acme"]);
    for (args, expected) in [
        (
            vec![
                "member",
                "add",
                &node.public_key,
                "--role",
                "king",
                "--name",
                "x",
            ],
            "pod",
        ),
        (
            vec!["invite", "--role", "emperor", "--name", "x"],
            "partner",
        ),
        (
            vec!["learnings", "search", "--outcome", "maybe"],
            "inconclusive",
        ),
        (
            vec!["sim", "scenario.toml", "--mode", "fast"],
            "deterministic",
        ),
    ] {
        let output = node.run(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("possible values") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

/// `source add NAME --json` prints a write key and a client key, whether the node runs (the command runs inside it)
/// or not; a second active source of one name is refused; a revoked source is listed as revoked.
#[test]
fn app_sources_get_their_own_keys_with_or_without_a_running_node() {
    let (council, _nodes) = federation(&[("emea", "pod", "emea")]);
    let web = council.json(&["source", "add", "web"]);
    let write = web["write_key"].as_str().expect("a write key");
    let client = web["client_key"].as_str().expect("a client key");
    assert_eq!(web["name"], "web");
    assert!(
        write.starts_with("wk_") && client.starts_with("sdk-") && write != client,
        "{web:#}"
    );
    let (_, stderr) = council.json_status(&["source", "add", "web"], 2);
    assert!(stderr.contains("exists"), "{stderr}");

    let _running = council.start(&[]);
    let ios = council.json(&["source", "add", "ios"]);
    assert!(
        ios["write_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("wk_")),
        "{ios:#}"
    );
    council.json(&["source", "revoke", "web"]);
    let listed = council.json(&["source", "list"]);
    let sources = listed["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2, "{listed:#}");
    let web = sources.iter().find(|s| s["name"] == "web").expect("web");
    assert!(web["revoked_at_ms"].is_number(), "{web:#}");
    let ios_row = sources.iter().find(|s| s["name"] == "ios").expect("ios");
    assert!(ios_row["revoked_at_ms"].is_null(), "{ios_row:#}");
    // Sources are this node's only: nothing about them is in the replicated registry.
    let registry = council.json(&["registry", "show"]).to_string();
    assert!(
        !registry.contains(write) && !registry.contains("sdk-"),
        "never replicated"
    );
}
