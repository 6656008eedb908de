//! A mesh, not a star: with mDNS off, pods that joined through the council find and connect to each other, and
//! keep replicating when the council node is gone; a pod introduces a joiner to the council.

mod support;

use std::time::{Duration, Instant};

use support::{Node, assert_success, found, invite_and_join, peer_ids, wait_converged};

#[test]
fn pods_meet_each_other_and_replicate_without_the_council() {
    let (council, council_node) = found("Council");
    let pods: Vec<_> = ["emea", "apac", "amer"]
        .iter()
        .map(|name| invite_and_join(&council, "pod", name))
        .collect();
    // Every pod is connected to the two other pods, found without mDNS: a mesh, not a star around the council.
    let pod_ids: Vec<String> = pods.iter().map(|(pod, _)| pod.peer_id()).collect();
    for (index, (pod, daemon)) in pods.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let connected = peer_ids(&pod.status());
            let others = pod_ids
                .iter()
                .enumerate()
                .filter(|(i, id)| *i != index && connected.contains(id))
                .count();
            if others == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a pod did not connect to the other pods within 30 s: {}\nlog:\n{}",
                pod.status(),
                daemon
                    .log()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(council_node);
    let (writer, _) = &pods[0];
    writer.json(&[
        "learnings",
        "add",
        "--title",
        "Meshes survive",
        "--body",
        "written while the council is down",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    for (reader, _) in &pods[1..] {
        loop {
            let hits = reader.json(&["learnings", "search", "meshes"]);
            if hits["learnings"].as_array().is_some_and(|l| !l.is_empty()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the learning did not reach a pod within 10 s of the council stopping: {}\nwriter log:\n{}",
                reader.status(),
                pods[0]
                    .1
                    .log()
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // A pod restarted while the council is still down rejoins the mesh from the member addresses it remembered.
    let mut pods = pods;
    let (restarted, daemon) = pods.pop().expect("three pods");
    let remembered = restarted.dir.join("members");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&remembered).is_ok_and(|t| t.lines().count() >= 2) {
        assert!(
            Instant::now() < deadline,
            "the pod never remembered member addresses"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.stop();
    let _daemon = restarted.start(&[]);
    restarted.wait_for_status("the restarted pod to rejoin the mesh", |s| {
        peer_ids(s).len() >= 2
    });
    let (writer, _) = &pods[0];
    writer.json(&[
        "learnings",
        "add",
        "--title",
        "Still meshed",
        "--body",
        "after a restart",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hits = restarted.json(&["learnings", "search", "still"]);
        if hits["learnings"].as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted pod did not get the learning: {}",
            restarted.status()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_pod_introduces_a_joiner_when_the_ticket_leads_to_no_council_member() {
    let (council, council_daemon) = found("Council");
    let (pod, _pod_daemon) = invite_and_join(&council, "pod", "emea");
    let pod_id = pod.peer_id();
    // The council names the connected pod in its tickets once it knows the pod's addresses, and remembers them.
    council.wait_for_status("the council to know the pod's addresses", |s| {
        s["member_addrs"].as_array().is_some_and(|a| {
            a.iter()
                .any(|v| v.as_str().is_some_and(|t| t.ends_with(&pod_id)))
        })
    });
    let output = council.run(&["invite", "--role", "pod", "--name", "apac"]);
    assert_success(&["invite"], &output);
    let ticket = String::from_utf8(output.stdout).expect("ticket is text");
    let joiner = Node::init("apac");
    let joined = joiner.json(&["join", ticket.trim()]);
    let bootstrap = joined["bootstrap"].to_string();
    assert!(
        bootstrap.contains(&pod_id),
        "the ticket names the pod: {bootstrap}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(council.dir.join("members")).is_ok_and(|t| t.contains(&pod_id)) {
        assert!(
            Instant::now() < deadline,
            "the council never remembered the pod"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The council goes away: the ticket's council addresses lead nowhere, the pod is the joiner's only way in.
    council_daemon.stop();
    let _joiner_daemon = joiner.start(&[]);
    joiner.wait_for_status("the pod to say no council member is reachable", |s| {
        s["invite"]
            .as_str()
            .is_some_and(|i| i.contains("no council member reachable"))
    });
    // The council comes back on another port and dials the pod it remembers; the pod introduces the joiner.
    let _council_daemon = council.start(&[]);
    let status = joiner.wait_for_status("the joiner to be admitted through the pod", |s| {
        s["invite"]
            .as_str()
            .is_some_and(|i| i.starts_with("admitted"))
    });
    let outcome = status["invite"].as_str().expect("outcome");
    assert!(outcome.ends_with(&pod_id), "{outcome}");
    wait_converged(&[&council, &pod, &joiner], "the three to sync", |_| true);
    let members = council.json(&["member", "list"]).to_string();
    assert!(members.contains(&joiner.public_key), "{members}");
}
