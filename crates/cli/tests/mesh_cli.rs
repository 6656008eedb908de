//! A mesh, not a star: with mDNS off, pods that joined through the council find and connect to each other, and
//! keep replicating when the council node is gone.

mod netsupport;

use std::time::{Duration, Instant};

use netsupport::{found, invite_and_join, peer_ids};

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
