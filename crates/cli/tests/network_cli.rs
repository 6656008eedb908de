//! `growthmesh node` as real processes on loopback: a council founds, invites and admits nodes, writes reach every
//! node, conflicting edits converge, a stopped node catches up, other federations, strangers, replayed and expired
//! tickets and revoked pods are kept out. Every wait polls `status --json` (or `registry heads`) with a deadline and
//! fails with what it saw last.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::{
    Node, WAIT, addrs, assert_success, found, invite_and_join, one_json_document, path_str,
    peer_ids, strings, wait_converged,
};

/// The `change` a write printed with `--json`.
fn change_of(output: &Value) -> String {
    output["change"]
        .as_str()
        .unwrap_or_else(|| panic!("no change in {output}"))
        .to_owned()
}

/// The first listen address of a running node, with `/p2p/PEER_ID`.
fn address(node: &Node) -> String {
    addrs(&node.status())
        .into_iter()
        .next()
        .expect("a running node listens")
}

/// `ADDR/p2p/ID` without its `/p2p/ID` part.
fn without_peer_id(address: &str) -> String {
    address
        .split("/p2p/")
        .next()
        .expect("split yields one part")
        .to_owned()
}

fn learning(node: &Node, title: &str) -> String {
    change_of(&node.json(&[
        "learnings",
        "add",
        "--title",
        title,
        "--body",
        "what we learnt",
    ]))
}

fn threshold(node: &Node, quarter: &str, cost: &str) -> String {
    change_of(&node.json(&["council", "threshold", "--quarter", quarter, "--cost", cost]))
}

#[test]
fn a_write_reaches_every_node_and_conflicting_edits_converge() {
    let (council, _council_node) = found("Council");
    let (board, board_node) = invite_and_join(&council, "council", "Board");
    let (emea, _emea_node) = invite_and_join(&council, "pod", "emea");
    let (apac, _apac_node) = invite_and_join(&board, "pod", "apac");
    let all = [&council, &board, &emea, &apac];

    let change = learning(&emea, "Shorter onboarding");
    let heads = wait_converged(&all, "the learning to reach every node", |h| {
        h.contains(&change)
    });
    for node in all {
        let status = node.status();
        assert_eq!(strings(&status["heads"]), heads, "{status:#}");
        for addr in addrs(&status) {
            assert!(
                addr.starts_with("/ip4/127.0.0.1/tcp/")
                    && addr.ends_with(&format!("/p2p/{}", status["peer_id"].as_str().unwrap())),
                "{addr}"
            );
        }
        for peer in status["peers"].as_array().expect("peers") {
            assert_eq!(peer["connected"], true, "{peer}");
            assert!(
                ["council", "pod"].contains(&peer["role"].as_str().unwrap_or_default()),
                "{peer}"
            );
        }
    }
    let council_status = council.status();
    let names: Vec<&str> = council_status["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"Board") && names.contains(&"emea"),
        "{council_status:#}"
    );

    // Two council members set the same quarter's threshold at the same moment.
    let spawn = |node: &Node, cost: &str| {
        support::binary()
            .arg("--data-dir")
            .arg(&node.dir)
            .args([
                "council",
                "threshold",
                "--quarter",
                "2026Q3",
                "--cost",
                cost,
                "--json",
            ])
            .output()
            .expect("the binary runs")
    };
    let (first, second) = std::thread::scope(|scope| {
        let first = scope.spawn(|| spawn(&council, "1000"));
        let second = scope.spawn(|| spawn(&board, "2000"));
        (
            first.join().expect("first writer"),
            second.join().expect("second writer"),
        )
    });
    assert_success(&["council", "threshold"], &first);
    assert_success(&["council", "threshold"], &second);
    // Both writes are done, each on its own node: equal heads everywhere mean both reached every node.
    let live = [
        change_of(&one_json_document(&first.stdout)),
        change_of(&one_json_document(&second.stdout)),
    ];
    let heads = wait_converged(&all, "both live threshold writes to converge", |_| true);
    assert!(live.iter().any(|c| heads.contains(c)), "{heads:?}");

    // The same edit made on both sides of a partition: one council node is stopped and writes offline.
    board_node.stop();
    let online = threshold(&council, "2026Q4", "1500");
    let offline = threshold(&board, "2026Q4", "2500");
    let _board_node = board.start(&["--bootstrap", &address(&council)]);
    let heads = wait_converged(&all, "the partitioned edits to converge", |h| {
        h.contains(&online) && h.contains(&offline)
    });
    assert!(
        heads.len() >= 2,
        "concurrent edits leave two heads: {heads:?}"
    );
    let show = council.show();
    let thresholds = &show["high_impact_thresholds"];
    assert!(
        thresholds["2026Q4"] == 1500.0 || thresholds["2026Q4"] == 2500.0,
        "{thresholds}"
    );
    assert!(
        thresholds["2026Q3"] == 1000.0 || thresholds["2026Q3"] == 2000.0,
        "{thresholds}"
    );
    for node in [&board, &emea, &apac] {
        assert_eq!(
            node.show(),
            show,
            "registry show differs on {}",
            node.dir.display()
        );
    }
}

#[test]
fn a_stopped_node_exits_cleanly_and_catches_up_when_restarted() {
    let (council, _council_node) = found("Council");
    let (emea, emea_node) = invite_and_join(&council, "pod", "emea");

    let started = Instant::now();
    emea_node.stop();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !emea.dir.join("api.json").exists(),
        "api.json outlives the node"
    );
    // The store is released: the CLI opens it directly.
    assert_eq!(emea.status()["running"], false);

    let missed = [
        threshold(&council, "2026Q4", "5000"),
        change_of(&council.json(&[
            "okr",
            "objective",
            "add",
            "--title",
            "Grow activation",
            "--quarter",
            "2026Q4",
            "--north-star",
            "activation_rate",
            "--target",
            "0.4",
        ])),
    ];
    // Restarted exactly as it was first started: it must find the council again by itself.
    let _emea_node = emea.start(&[]);
    // The council's changes form a chain: holding the last one means holding both.
    let heads = wait_converged(&[&council, &emea], "the restarted node to catch up", |h| {
        h.contains(&missed[1])
    });
    assert!(!heads.contains(&missed[0]));
    assert_eq!(emea.show(), council.show());
}

#[test]
fn a_node_of_another_federation_is_never_synced() {
    let (council, council_node) = found("Council");
    let (emea, _emea_node) = invite_and_join(&council, "pod", "emea");
    let (other, other_node) = {
        let other = Node::init("Other council");
        other.json(&["federation", "create", "--name", "Other Corp"]);
        let daemon = other.start(&["--bootstrap", &address(&council)]);
        (other, daemon)
    };
    let other_peer = other.peer_id();
    let other_write = threshold(&other, "2026Q4", "1");
    // It did reach the council's node (the test is not vacuous) ...
    let deadline = Instant::now() + WAIT;
    while !council_node.log().contains(&other_peer) {
        assert!(
            Instant::now() < deadline,
            "the other federation's node never connected:\n{}",
            other_node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ... yet a later write converges between members without any of its heads.
    let ours = threshold(&council, "2026Q4", "2");
    let heads = wait_converged(&[&council, &emea], "the members to converge", |h| {
        h.contains(&ours)
    });
    assert!(!heads.contains(&other_write));
    let other_heads = other.heads();
    assert!(other_heads.contains(&other_write));
    assert!(heads.iter().all(|h| !other_heads.contains(h)));
    for node in [&council, &emea] {
        let status = node.status();
        assert!(!peer_ids(&status).contains(&other_peer), "{status:#}");
    }
    assert!(peer_ids(&other.status()).is_empty());
}

#[test]
fn a_non_member_is_refused_and_keeps_running() {
    let (council, council_node) = found("Council");
    let (emea, _emea_node) = invite_and_join(&council, "pod", "emea");
    // A stranger that holds the federation's registry (an exported bundle) but was never admitted.
    let stranger = Node::init("Mallory");
    let bundle = council.export("acme.gmb");
    stranger.import_all(&bundle);
    let before = stranger.heads();
    let mut stranger_node = stranger.start(&["--bootstrap", &without_peer_id(&address(&council))]);
    let stranger_peer = stranger.peer_id();
    let deadline = Instant::now() + WAIT;
    while !council_node.log().contains(&stranger_peer) {
        assert!(
            Instant::now() < deadline,
            "the stranger never connected:\n{}",
            stranger_node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ours = learning(&emea, "Members only");
    wait_converged(&[&council, &emea], "the members to converge", |h| {
        h.contains(&ours)
    });
    // The council closes the stranger's connection after the grace period; the stranger's node runs on.
    stranger.wait_for_status("the council to close the stranger's connection", |s| {
        s["running"] == true && s["peers"].as_array().is_some_and(Vec::is_empty)
    });
    assert!(stranger_node.is_running());
    assert_eq!(stranger.heads(), before);
    for node in [&council, &emea] {
        let status = node.status();
        assert!(!peer_ids(&status).contains(&stranger_peer), "{status:#}");
    }
    stranger_node.stop();
}

#[test]
fn an_invite_is_redeemed_once_and_expired_tickets_are_refused() {
    let (council, _council_node) = found("Council");
    let output = council.run(&["invite", "--role", "pod", "--name", "emea", "--json"]);
    assert_success(&["invite", "--json"], &output);
    let ticket = one_json_document(&output.stdout)["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();

    let first = Node::init("emea");
    first.json(&["join", &ticket]);
    let _first_node = first.start(&[]);
    first.wait_for_status("the first redemption", |s| {
        s["invite"]
            .as_str()
            .is_some_and(|i| i.starts_with("admitted"))
    });

    // The same ticket, replayed by another key.
    let second = Node::init("emea again");
    second.json(&["join", &ticket]);
    let mut second_node = second.start(&[]);
    let status = second.wait_for_status("the replay to be refused", |s| s["invite"].is_string());
    let outcome = status["invite"].as_str().expect("invite outcome");
    assert!(
        outcome.starts_with("refused") && outcome.contains("already redeemed"),
        "{outcome}"
    );
    assert!(outcome.contains(&first.public_key), "{outcome}");
    assert!(second_node.is_running());
    let members = council.json(&["member", "list"]).to_string();
    assert!(members.contains(&first.public_key));
    assert!(!members.contains(&second.public_key), "{members}");
    let second_peer = second.peer_id();
    assert!(!peer_ids(&council.status()).contains(&second_peer));

    // An expired ticket: refused by `join`, and by `node` when it expired after `join`.
    let issued = Instant::now();
    let short = |expires: &str| {
        let output = council.run(&[
            "invite",
            "--role",
            "pod",
            "--name",
            "late",
            "--expires",
            expires,
        ]);
        assert_success(&["invite"], &output);
        String::from_utf8(output.stdout)
            .expect("text")
            .trim()
            .to_owned()
    };
    let expired = short("1s");
    let recorded = short("2s");
    let late = Node::init("late");
    late.json(&["join", &recorded]);
    // Time itself is what the test waits for.
    std::thread::sleep(
        Duration::from_secs(2).saturating_sub(issued.elapsed()) + Duration::from_millis(300),
    );
    let fresh = Node::init("fresh");
    let (_, stderr) = fresh.json_status(&["join", &expired], 1);
    assert!(stderr.contains("expired"), "{stderr}");
    let output = late.run(&[
        "node",
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--api",
        "127.0.0.1:0",
        "--no-mdns",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
}

#[test]
fn a_revoked_pods_new_changes_are_rejected_everywhere() {
    let (council, council_node) = found("Council");
    let (emea, emea_node) = invite_and_join(&council, "pod", "emea");
    let (apac, apac_node) = invite_and_join(&council, "pod", "apac");
    wait_converged(&[&council, &emea, &apac], "three nodes", |_| true);
    // apac is away while the council revokes emea.
    apac_node.stop();
    let emea_peer = emea.peer_id();
    let revocation = change_of(&council.json(&[
        "member",
        "revoke",
        &emea.public_key,
        "--reason",
        "left the company",
    ]));
    // A revoked pod is no longer listed, even before its connection is closed.
    assert!(!peer_ids(&council.status()).contains(&emea_peer));
    // emea learns of its revocation (from a bundle) and can no longer write.
    let bundle = council.export("after-revocation.gmb");
    emea.json(&["registry", "import", path_str(&bundle)]);
    assert!(emea.heads().contains(&revocation));
    let (_, stderr) = emea.json_status(
        &["learnings", "add", "--title", "Still here", "--body", "?"],
        1,
    );
    assert!(stderr.contains("revoked"), "{stderr}");

    // A change signed by emea's key after it saw the revocation (as a modified node would make it) is written
    // straight into emea's store: the store is decided again when it opens, so emea neither holds nor serves it.
    emea_node.stop();
    let forged = forge_learning(&emea);
    let emea_node = emea.start(&[]);
    assert!(!emea.heads().contains(&forged));

    // The council goes offline and apac returns knowing only emea: it pulls the revocation from emea.
    council_node.stop();
    let _apac_node = apac.start(&["--bootstrap", &address(&emea)]);
    let status = apac.wait_for_status("apac to learn of the revocation", |s| {
        strings(&s["heads"]).contains(&revocation)
    });
    assert!(strings(&status["heads"]).contains(&revocation));
    assert!(!strings(&status["heads"]).contains(&forged));
    apac.wait_for_status("apac to close the revoked pod's connection", |s| {
        !peer_ids(s).contains(&emea_peer)
    });
    // The council returns and converges with apac, without the forged change.
    let _council_node = council.start(&["--bootstrap", &address(&apac)]);
    let heads = wait_converged(&[&council, &apac], "council and apac to converge", |h| {
        h.contains(&revocation)
    });
    assert!(!heads.contains(&forged));
    for node in [&council, &apac] {
        let show = node.show().to_string();
        assert!(!show.contains("Forged after revocation"), "{show}");
    }
    drop(emea_node);
}

/// Writes, straight into the stopped node's store, a learning signed by its key against the council heads it holds
/// (which include its revocation); returns the change hash.
fn forge_learning(node: &Node) -> String {
    let store = store::Store::open(&node.dir.join(node::DB_DIR_NAME)).expect("store opens");
    let replica = store.load().expect("replica loads");
    let (keypair, _) = identity::Keypair::load_or_create(&node.dir).expect("key loads");
    let learning = model::Learning {
        id: "forged".into(),
        title: "Forged after revocation".into(),
        body: "should never be accepted".into(),
        outcome: None,
        tags: Vec::new(),
        experiment: None,
        source: "pod/emea".into(),
        author: keypair.public().to_hex(),
        created_at_ms: 0,
    };
    let envelope = replica
        .craft(
            &keypair,
            &model::DocId::Pod("emea".into()),
            &registry::Op::AddLearning(learning),
            0,
        )
        .expect("crafting needs no authorization");
    store.commit_written(&envelope).expect("stored");
    envelope.hash().to_string()
}

#[test]
fn cli_commands_while_the_node_starts_neither_fail_nor_stop_it() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    /// Stops the poller however the starting thread leaves the scope (a panic included), so a failure cannot hang.
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let council = Node::init("Council");
    council.json(&["federation", "create", "--name", "Acme Growth"]);
    let stop = AtomicBool::new(false);
    let answered = AtomicUsize::new(0);
    let (daemon, answers) = std::thread::scope(|scope| {
        // `status` in a loop: each run either opens the store itself (no node yet) or is forwarded to the node.
        let poller = scope.spawn(|| {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                answers.push(council.json(&["status"])["running"].clone());
                answered.fetch_add(1, Ordering::SeqCst);
            }
            answers
        });
        let _stop = Stop(&stop);
        while answered.load(Ordering::SeqCst) == 0 && !poller.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut daemon = council.spawn_daemon(&[]);
        daemon.wait_for_api();
        council.wait_for_status("the node to answer", |s| s["running"] == true);
        stop.store(true, Ordering::SeqCst);
        (daemon, poller.join().expect("the poller does not panic"))
    });
    assert!(answers.contains(&Value::Bool(true)), "{answers:?}");
    daemon.stop();
}

#[test]
fn node_takes_every_setting_from_its_config_file() {
    let council = Node::init("Council");
    council.json(&["federation", "create", "--name", "Acme Growth"]);
    let config = council.file("node.toml");
    std::fs::write(
        &config,
        "listen_addrs = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\napi_addr = \"127.0.0.1:0\"\n",
    )
    .expect("config written");
    let mut daemon = council.spawn_bare_daemon(&["node", "--config", path_str(&config)]);
    daemon.wait_for_api();
    let status = council.wait_for_status("the node to listen", |s| !addrs(s).is_empty());
    assert!(
        addrs(&status)
            .iter()
            .all(|a| a.starts_with("/ip4/127.0.0.1/tcp/")),
        "{status:#}"
    );
    daemon.stop();

    std::fs::write(&config, "listen = 3\n").expect("config written");
    let output = council.run(&["node", "--config", path_str(&config)]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("listen"), "{stderr}");
}

#[test]
fn the_operator_block_set_cuts_a_peer_off_until_it_is_lifted() {
    let (council, _council_node) = found("Council");
    let (emea, _emea_node) = invite_and_join(&council, "pod", "emea");
    let emea_peer = emea.peer_id();

    assert_eq!(council.post("/v1/block", r#"{"peers": []}"#, false).0, 401);
    let (code, body) = council.post("/v1/block", r#"{"peers": ["not-a-peer"]}"#, true);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not-a-peer"), "{body}");

    let (code, body) = council.post(
        "/v1/block",
        &format!(r#"{{"peers": ["{emea_peer}"]}}"#),
        true,
    );
    assert_eq!(code, 200, "{body}");
    council.wait_for_status("the blocked pod to be disconnected", |s| {
        !peer_ids(s).contains(&emea_peer)
    });
    let change = learning(&emea, "Written while cut off");
    // An absence cannot be awaited: give the nodes a few announcement intervals to prove they stay apart.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            !council.heads().contains(&change),
            "the block let sync through"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Lifting the set lets the pod's redial of its bootstrap peer (the council) through; the change arrives.
    let (code, body) = council.post("/v1/block", r#"{"peers": []}"#, true);
    assert_eq!(code, 200, "{body}");
    wait_converged(
        &[&council, &emea],
        "the change written while cut off",
        |h| h.contains(&change),
    );
}

/// Governance through a partition on running nodes: the council approves a high-impact experiment while the pod is
/// cut off; the pod's start is refused until the approval arrives with the heal, then goes through, and both nodes
/// show it running.
#[test]
fn an_approval_given_during_a_partition_lets_the_start_through_after_the_heal() {
    let (council, _council_node) = found("Council");
    let (emea, _emea_node) = invite_and_join(&council, "pod", "emea");
    let emea_peer = emea.peer_id();
    council.json(&[
        "council",
        "threshold",
        "--quarter",
        "2026Q4",
        "--cost",
        "5000",
    ]);
    council.json(&[
        "budget",
        "allocate",
        "--pod",
        "emea",
        "--quarter",
        "2026Q4",
        "--amount",
        "20000",
    ]);
    wait_converged(&[&council, &emea], "the threshold and budget", |_| true);
    emea.json(&[
        "experiment",
        "new",
        "--key",
        "big-bet",
        "--hypothesis",
        "if onboarding is rebuilt then activation doubles because teams see value on day one",
        "--primary-metric",
        "activation",
        "--cost",
        "8000",
        "--start",
        "2026-11-02",
        "--end",
        "2026-11-30",
    ]);
    wait_converged(&[&council, &emea], "the experiment", |_| true);

    let (code, body) = council.post(
        "/v1/block",
        &format!(r#"{{"peers": ["{emea_peer}"]}}"#),
        true,
    );
    assert_eq!(code, 200, "{body}");
    council.wait_for_status("the pod to be cut off", |s| {
        !peer_ids(s).contains(&emea_peer)
    });
    council.json(&["council", "approve", "big-bet", "--reason", "worth it"]);
    let (refused, _) = emea.json_status(&["experiment", "start", "big-bet"], 1);
    assert_eq!(refused["reason"], "needs_approval", "{refused}");

    let (code, body) = council.post("/v1/block", r#"{"peers": []}"#, true);
    assert_eq!(code, 200, "{body}");
    wait_converged(
        &[&council, &emea],
        "the approval to cross the healed partition",
        |_| true,
    );
    let started = emea.json(&["experiment", "start", "big-bet"]);
    assert_eq!(started["status"], "running", "{started}");
    wait_converged(&[&council, &emea], "the start", |_| true);
    for node in [&council, &emea] {
        let shown = node.json(&["experiment", "show", "big-bet"]);
        assert_eq!(shown["status"], "running", "{shown}");
        assert_eq!(shown["spend"]["amount"], 8000.0, "{shown}");
    }
}
