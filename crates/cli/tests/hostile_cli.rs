//! A careless operator and a deviating member, through the binary and bundles only: two copies of one data dir
//! writing, and a copy taken before a revocation writing after it. Replicas made with `init` that import the same
//! bundles in different orders print the same `registry heads --json` and `registry show --json` bytes, and the
//! forked or revoked writes are in neither.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Node, binary, federation, path_str};

/// Copies a data dir as `cp -a` would.
fn copy_dir(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(status.success());
}

/// Runs the binary on a bare data dir (a copy), expecting success; returns the JSON printed.
fn json_at(dir: &Path, args: &[&str]) -> Value {
    let output = binary()
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .arg("--json")
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

fn export_at(dir: &Path, out: &Path) -> PathBuf {
    json_at(dir, &["registry", "export", "--out", path_str(out)]);
    out.to_owned()
}

/// A fresh replica (`init`) that imports `bundles` in order; returns (heads bytes, show bytes, replica).
fn replica_of(bundles: &[&Path]) -> (Vec<u8>, Vec<u8>, Node) {
    let replica = Node::init("Reader");
    for bundle in bundles {
        let output = replica.run(&["registry", "import", path_str(bundle), "--json"]);
        assert!(
            matches!(output.status.code(), Some(0 | 3)),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let heads = replica.run(&["registry", "heads", "--json"]).stdout;
    let show = replica.run(&["registry", "show", "--json"]).stdout;
    (heads, show, replica)
}

#[test]
fn two_copies_of_one_data_dir_are_an_equivocation_in_every_order() {
    let (council, nodes) = federation(&[("EMEA pod", "pod", "emea")]);
    let emea = &nodes[0];
    emea.json(&[
        "learnings",
        "add",
        "--title",
        "Before the copy",
        "--body",
        "a",
    ]);
    let copy = emea.file("emea-copy");
    copy_dir(&emea.dir, &copy);
    emea.json(&["learnings", "add", "--title", "Left branch", "--body", "b"]);
    json_at(
        &copy,
        &["learnings", "add", "--title", "Right branch", "--body", "c"],
    );

    let founding = council.export("founding.gmb");
    let left = emea.export("left.gmb");
    let right = export_at(&copy, &emea.file("right.gmb"));
    let (heads, show, reader) = replica_of(&[&founding, &left, &right]);
    for order in [
        [&founding, &right, &left],
        [&right, &founding, &left],
        [&left, &right, &founding],
    ] {
        let order: Vec<&Path> = order.iter().map(|p| p.as_path()).collect();
        let (other_heads, other_show, _) = replica_of(&order);
        assert_eq!(other_heads, heads, "heads differ for {order:?}");
        assert_eq!(other_show, show, "show differs for {order:?}");
    }
    let show = String::from_utf8(show).expect("UTF-8");
    assert!(show.contains("Before the copy"));
    assert!(
        !show.contains("Left branch") && !show.contains("Right branch"),
        "{show}"
    );
    let members = reader.json(&["member", "list"]);
    let emea_entry = members["members"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["public_key"] == emea.public_key.as_str())
        .expect("emea listed")
        .clone();
    assert_eq!(emea_entry["equivocating"], true, "{emea_entry}");
    assert_eq!(
        emea_entry["equivocations"][0]["changes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let text = String::from_utf8(reader.run(&["member", "list"]).stdout).expect("UTF-8");
    assert!(text.contains("equivocated in pod/emea"), "{text}");
    assert!(
        text.contains("equivocating"),
        "the state column says so: {text}"
    );
}

#[test]
fn a_copy_taken_before_a_revocation_cannot_write_after_it() {
    let (council, nodes) = federation(&[("EMEA pod", "pod", "emea")]);
    let emea = &nodes[0];
    emea.json(&["learnings", "add", "--title", "Covered", "--body", "a"]);
    council.import_all(&emea.export("emea.gmb"));
    let copy = emea.file("emea-before-revocation");
    copy_dir(&emea.dir, &copy);
    council.json(&["member", "revoke", &emea.public_key, "--reason", "left"]);
    // The copy never heard of the revocation: it writes as if still a member, naming pre-revocation heads.
    json_at(
        &copy,
        &[
            "learnings",
            "add",
            "--title",
            "Written after",
            "--body",
            "b",
        ],
    );

    let council_bundle = council.export("council.gmb");
    let late = export_at(&copy, &emea.file("late.gmb"));
    let (heads, show, _) = replica_of(&[&council_bundle, &late]);
    let (other_heads, other_show, _) = replica_of(&[&late, &council_bundle]);
    assert_eq!(other_heads, heads);
    assert_eq!(other_show, show);
    let show = String::from_utf8(show).expect("UTF-8");
    assert!(show.contains("Covered"));
    assert!(!show.contains("Written after"), "{show}");
    // The copy learns of its revocation: it says so, and refuses its own writes with the reason.
    let output = binary()
        .arg("--data-dir")
        .arg(&copy)
        .args(["registry", "import", path_str(&council_bundle), "--json"])
        .output()
        .expect("runs");
    assert!(matches!(output.status.code(), Some(0 | 3)));
    assert_eq!(json_at(&copy, &["status"])["standing"], "revoked");
    let refused = binary()
        .arg("--data-dir")
        .arg(&copy)
        .args(["learnings", "add", "--title", "Again", "--body", "c"])
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("revoked"));
    // The council's own replica agrees once it sees the late write.
    let report = council
        .json_status(&["registry", "import", path_str(&late)], 3)
        .0;
    assert_eq!(report["rejected"][0]["reason"], "revoked", "{report}");
    assert!(!council.show().to_string().contains("Written after"));
}

#[test]
fn honest_work_built_on_a_removed_change_is_written_again() {
    let (council, nodes) = federation(&[("EMEA one", "pod", "emea"), ("EMEA two", "pod", "emea")]);
    let (one, two) = (&nodes[0], &nodes[1]);
    one.json(&["learnings", "add", "--title", "From one", "--body", "a"]);
    two.import_all(&one.export("one.gmb"));
    // two builds on one's change (the pod document's history includes it).
    two.json(&["learnings", "add", "--title", "From two", "--body", "b"]);
    // The council, which never saw one's learning, revokes one: the learning is not covered.
    council.json(&["member", "revoke", &one.public_key, "--reason", "left"]);
    let output = two.run(&[
        "registry",
        "import",
        path_str(&council.export("council.gmb")),
        "--json",
    ]);
    assert!(matches!(output.status.code(), Some(0 | 3)));
    let show = two.show().to_string();
    assert!(
        !show.contains("From one"),
        "one's uncovered learning is out"
    );
    assert!(
        show.contains("From two"),
        "two's learning was written again: {show}"
    );
    // Everyone who gets the bundles agrees, in any order.
    let bundles = [
        council.export("council2.gmb"),
        one.export("one2.gmb"),
        two.export("two2.gmb"),
    ];
    let (heads, show, _) = replica_of(&[&bundles[0], &bundles[1], &bundles[2]]);
    let (other_heads, other_show, _) = replica_of(&[&bundles[2], &bundles[1], &bundles[0]]);
    assert_eq!(heads, other_heads);
    assert_eq!(show, other_show);
    let show = String::from_utf8(show).expect("UTF-8");
    assert!(show.contains("From two") && !show.contains("From one"));
}

#[test]
fn a_writer_killed_at_any_moment_never_signs_two_changes_at_one_place() {
    use std::os::unix::process::CommandExt;
    let (council, nodes) = federation(&[("EMEA pod", "pod", "emea")]);
    let emea = &nodes[0];
    let binary_path = env!("CARGO_BIN_EXE_growthmesh");
    let mut bundles = vec![council.export("founding.gmb")];
    for round in 0..4u64 {
        // A loop of writes in its own process group, killed with SIGKILL mid-write.
        let script = format!(
            "i=0; while [ $i -lt 400 ]; do '{binary_path}' --data-dir '{}' learnings add --title r{round}-$i --body x >/dev/null 2>&1; i=$((i+1)); done",
            emea.dir.display()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("RUST_LOG", "off")
            .process_group(0)
            .spawn()
            .expect("the loop starts");
        std::thread::sleep(std::time::Duration::from_millis(200 + 137 * round));
        let status = Command::new("kill")
            .args(["-9", "--", &format!("-{}", child.id())])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let mut child = child;
        let _ = child.wait();
        // The store opens after the kill (once the killed writer is gone), and what it holds goes out in a bundle.
        let out = emea.file(&format!("after-kill-{round}.gmb"));
        let exported = (0..50).any(|_| {
            let ok = emea
                .run(&["registry", "export", "--out", path_str(&out)])
                .status
                .success();
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            ok
        });
        assert!(exported, "the store opens after a kill");
        bundles.push(out);
    }
    let paths: Vec<&Path> = bundles.iter().map(PathBuf::as_path).collect();
    let (_, show, reader) = replica_of(&paths);
    let show: Value = serde_json::from_slice(&show).expect("JSON");
    assert!(
        show.get("equivocations").is_none(),
        "a crash made the key sign two changes at one place: {}",
        show["equivocations"]
    );
    let learnings = show["learnings"].as_object().map_or(0, |l| l.len());
    assert!(learnings > 0, "some writes landed before the kills");
    assert_eq!(
        json_at(&emea.dir, &["status"])["equivocations"],
        Value::Array(Vec::new())
    );
    drop(reader);
}
