//! The registry through the `growthmesh` binary on temp data dirs: identities, a federation, members and the writes
//! of each role, bundle import and export with their exit statuses and reports, tampered, truncated and foreign
//! bundles, and byte-equal registries on converged replicas.

mod support;

use serde_json::{Value, json};

use support::{Node, binary, federation, one_json_document, path_str};

/// The one key of a JSON object.
fn only_key(map: &Value) -> String {
    let object = map.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{map}");
    object.keys().next().expect("one key").clone()
}

fn assert_write_output(value: &Value) {
    let change = value["change"].as_str().expect("change is text");
    assert_eq!(change.len(), 64, "{value}");
    let heads = value["heads"].as_array().expect("heads is a list");
    assert!(heads.iter().any(|h| h == change), "{value}");
}

#[test]
fn init_prints_the_public_key_and_peer_id() {
    let node = Node::init("EMEA pod");
    let identity = node.identity.clone();
    let key = identity["public_key"].as_str().expect("public_key");
    assert_eq!(key.len(), 64);
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        identity["peer_id"]
            .as_str()
            .expect("peer_id")
            .starts_with("12D3KooW")
    );
    assert_eq!(identity["federation"], Value::Null);
    assert_eq!(identity["created"], true);
    let again = node.json(&["init", "--name", "EMEA pod"]);
    assert_eq!(again["public_key"], identity["public_key"]);
    assert_eq!(again["created"], false);
}

#[test]
fn a_federation_works_end_to_end() {
    let council = Node::init("Council");
    let created = council.json(&["federation", "create", "--name", "Acme Growth"]);
    assert_write_output(&created);
    let federation = created["federation"]
        .as_str()
        .expect("federation id")
        .to_owned();
    assert_eq!(
        federation, created["change"],
        "the federation id is the genesis hash"
    );
    let pod = Node::init("EMEA pod");
    let steward = Node::init("Data steward");
    let partner = Node::init("Acme partner");
    for (node, role, extra) in [
        (&pod, "pod", vec!["--pod", "emea"]),
        (&steward, "steward", vec![]),
        (&partner, "partner", vec!["--pod", "acme"]),
    ] {
        let mut args = vec!["member", "add", node.public_key.as_str(), "--role", role];
        args.extend(["--name", role]);
        args.extend(extra);
        assert_write_output(&council.json(&args));
    }
    let objective = council.json(&[
        "okr",
        "objective",
        "add",
        "--title",
        "Grow activation",
        "--quarter",
        "2026Q4",
    ]);
    assert_write_output(&objective);
    let members = council.json(&["member", "list"]);
    assert_eq!(members["members"].as_array().expect("list").len(), 4);

    // Every member imports the council's bundle and adopts its federation.
    let founding = council.export("founding.gmb");
    for node in [&pod, &steward, &partner] {
        let report = node.import_all(&founding);
        assert_eq!(
            report["accepted"], 5,
            "genesis, three members, the objective"
        );
        assert_eq!(report["adopted_federation"], federation.as_str());
    }

    // The pod's writes.
    assert_write_output(&pod.json(&[
        "schema",
        "propose",
        "--event",
        "Signed Up",
        "--property",
        "plan:string:required",
        "--property",
        "email:string:pii",
        "--legal-basis",
        "consent",
        "--retention-days",
        "30",
    ]));
    assert_write_output(&pod.json(&[
        "metric",
        "propose",
        "--key",
        "signup_rate",
        "--type",
        "binomial",
        "--event",
        "Signed Up",
    ]));
    assert_write_output(&pod.json(&[
        "experiment",
        "new",
        "--key",
        "short-form",
        "--hypothesis",
        "if the form is shorter then signups rise because there are fewer steps",
    ]));
    assert_write_output(&pod.json(&[
        "learnings",
        "add",
        "--title",
        "Short forms win",
        "--body",
        "Fewer fields, more signups",
    ]));
    assert_write_output(&partner.json(&[
        "learnings",
        "add",
        "--title",
        "Partner view",
        "--body",
        "Onboarding emails help",
    ]));

    // The steward approves the pod's schema and metric once it has the pod's changes.
    steward.import_all(&pod.export("pod.gmb"));
    assert_write_output(&steward.json(&["schema", "approve", "Signed Up"]));
    assert_write_output(&steward.json(&["metric", "approve", "signup_rate"]));

    // A key result names an approved metric.
    pod.import_all(&steward.export("standards.gmb"));
    let objective_id = only_key(&pod.show()["objectives"]);
    assert_write_output(&pod.json(&[
        "okr",
        "kr",
        "add",
        "--objective",
        &objective_id,
        "--metric",
        "signup_rate",
        "--target",
        "0.3",
    ]));
    let kr_key = only_key(&pod.show()["key_results"]);
    let kr_id = kr_key
        .strip_prefix("emea/")
        .expect("key results are keyed by pod");
    assert_write_output(&pod.json(&["okr", "kr", "update", kr_id, "--current", "0.2"]));

    // Everything reaches the council.
    for node in [&pod, &steward, &partner] {
        council.import_all(&node.export("to-council.gmb"));
    }
    let view = council.show();
    assert_eq!(view["key_results"][&kr_key]["current"], 0.2);
    assert_eq!(view["experiments"]["short-form"]["pod"], "emea");
    assert_eq!(view["schemas"]["Signed Up@1"]["status"], "approved");
    assert_eq!(view["learnings"].as_object().expect("map").len(), 2);
    let hits = council.json(&["learnings", "search", "signups"]);
    let hits = hits["learnings"].as_array().expect("list");
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["title"], "Short forms win");

    // A revoked member is marked so.
    assert_write_output(&council.json(&["member", "revoke", &partner.public_key]));
    let members = council.json(&["member", "list"]);
    let revoked: Vec<&Value> = members["members"]
        .as_array()
        .expect("list")
        .iter()
        .filter(|m| m["revoked"] == true)
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["public_key"], partner.public_key.as_str());
}

#[test]
fn a_write_the_role_does_not_allow_exits_non_zero_with_the_reason() {
    let (_council, nodes) = federation(&[("EMEA pod", "pod", "emea"), ("Acme", "partner", "acme")]);
    let (pod, partner) = (&nodes[0], &nodes[1]);
    let before = pod.json(&["registry", "heads"]);
    let (stdout, stderr) = pod.json_status(
        &[
            "okr",
            "objective",
            "add",
            "--title",
            "Mine",
            "--quarter",
            "2026Q4",
        ],
        1,
    );
    assert_eq!(stdout, Value::Null, "nothing on stdout");
    assert!(stderr.contains("may not write council"), "{stderr}");
    assert!(stderr.contains("role pod of emea"), "{stderr}");
    let (_, stderr) = partner.json_status(
        &[
            "schema",
            "propose",
            "--event",
            "X",
            "--property",
            "a:string",
        ],
        1,
    );
    assert!(
        stderr.contains("only pod members write schema proposals"),
        "{stderr}"
    );
    assert_eq!(
        pod.json(&["registry", "heads"]),
        before,
        "nothing was written"
    );
}

#[test]
fn import_reports_and_exit_statuses() {
    let (council, nodes) = federation(&[("EMEA pod", "pod", "emea")]);
    let pod = &nodes[0];
    for n in 0..3 {
        let title = format!("Learning {n}");
        pod.json(&["learnings", "add", "--title", &title, "--body", "text"]);
    }
    let bundle = pod.export("pod.gmb");

    // Exit 0: everything new is accepted; the report has exactly the documented fields.
    let report = council.json(&["registry", "import", path_str(&bundle)]);
    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(report["rejected"], json!([]));
    assert_eq!(report["duplicates"], 2, "the founding changes came back");
    assert_eq!(report["pending"], 0);
    for field in ["accepted", "rejected", "duplicates", "pending"] {
        assert!(report.get(field).is_some(), "{field} missing from {report}");
    }

    // Importing again: duplicates only, still exit 0.
    let report = council.json(&["registry", "import", path_str(&bundle)]);
    assert_eq!(
        (report["accepted"].clone(), report["duplicates"].clone()),
        (json!(0), json!(5))
    );
}

/// Flips a byte of the signature of the envelope whose change hash is `hash` in the bundle at `bytes`.
fn tamper_signature(bytes: &mut [u8], hash: &str) {
    let read = registry::bundle::read(bytes).expect("a bundle");
    let signature = read
        .entries
        .iter()
        .find_map(|entry| match entry {
            registry::bundle::Entry::Envelope(e) if e.hash().to_string() == hash => {
                Some(e.signature)
            }
            _ => None,
        })
        .expect("the change is in the bundle");
    let at = bytes
        .windows(64)
        .position(|w| w == signature)
        .expect("the signature is in the bytes");
    bytes[at + 10] ^= 0x01;
}

#[test]
fn a_tampered_envelope_is_rejected_and_the_others_accepted() {
    let (_council, nodes) = federation(&[("EMEA pod", "pod", "emea")]);
    let pod = &nodes[0];
    let mut changes = Vec::new();
    for n in 0..3 {
        let title = format!("Learning {n}");
        let written = pod.json(&["learnings", "add", "--title", &title, "--body", "text"]);
        changes.push(written["change"].as_str().expect("change").to_owned());
    }
    let genuine = pod.export("pod.gmb");
    let mut bytes = std::fs::read(&genuine).expect("reads");
    // The first learning: the other two depend on it but are still accepted (their own signatures are good and
    // the first is only rejected as an envelope, not as a change).
    tamper_signature(&mut bytes, &changes[0]);
    let tampered = pod.file("tampered.gmb");
    std::fs::write(&tampered, &bytes).expect("writes");

    let receiver = Node::init("receiver");
    let (report, _) = receiver.json_status(&["registry", "import", path_str(&tampered)], 3);
    let rejected = report["rejected"].as_array().expect("list");
    assert_eq!(rejected.len(), 1, "{report}");
    assert_eq!(rejected[0]["change"], changes[0].as_str());
    assert_eq!(rejected[0]["reason"], "bad_signature");
    assert!(
        rejected[0]["detail"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    // The founding changes are accepted; the other two learnings wait for the rejected envelope's change.
    assert_eq!(report["accepted"], 2, "{report}");
    assert_eq!(report["pending"], 2, "{report}");

    // The genuine bundle then delivers the change, and what waited on it.
    let report = receiver.json(&["registry", "import", path_str(&genuine)]);
    assert_eq!(report["rejected"], json!([]), "{report}");
    assert_eq!(report["accepted"], 3, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
    assert_eq!(receiver.show(), pod.show());
}

#[test]
fn truncated_garbage_and_missing_files() {
    let (council, nodes) = federation(&[("EMEA pod", "pod", "emea")]);
    let pod = &nodes[0];
    pod.json(&["learnings", "add", "--title", "One", "--body", "text"]);
    let bytes = std::fs::read(pod.export("pod.gmb")).expect("reads");

    // Cut inside the last envelope: the whole envelopes are read, the cut one is reported malformed (exit 3).
    let truncated = pod.file("truncated.gmb");
    std::fs::write(&truncated, &bytes[..bytes.len() - 20]).expect("writes");
    let (report, _) = council.json_status(&["registry", "import", path_str(&truncated)], 3);
    let rejected = report["rejected"].as_array().expect("list");
    assert_eq!(rejected.len(), 1, "{report}");
    assert_eq!(rejected[0]["reason"], "malformed");
    assert!(
        rejected[0]["change"]
            .as_str()
            .expect("text")
            .starts_with('#')
    );

    // Cut inside the header, garbage, an empty file, a missing file: unreadable, exit 2, nothing on stdout.
    let short = pod.file("short.gmb");
    std::fs::write(&short, &bytes[..12]).expect("writes");
    let garbage = pod.file("garbage.gmb");
    std::fs::write(&garbage, b"PK\x03\x04 this is a zip file, not a bundle").expect("writes");
    let empty = pod.file("empty.gmb");
    std::fs::write(&empty, b"").expect("writes");
    let missing = pod.file("missing.gmb");
    for file in [&short, &garbage, &empty, &missing] {
        let (stdout, stderr) = council.json_status(&["registry", "import", path_str(file)], 2);
        assert_eq!(stdout, Value::Null);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn a_new_replica_adopts_a_federation_and_then_refuses_another() {
    let (council, _) = federation(&[]);
    let (other_council, _) = federation(&[]);
    let node = Node::init("newcomer");

    // A bundle without the genesis cannot found anything here.
    let heads = council.json(&["registry", "heads"])["heads"].clone();
    council.json(&[
        "okr",
        "objective",
        "add",
        "--title",
        "T",
        "--quarter",
        "2026Q4",
    ]);
    let partial = council.file("partial.gmb");
    let since = heads[0].as_str().expect("one head");
    council.json(&[
        "registry",
        "export",
        "--out",
        path_str(&partial),
        "--since",
        since,
    ]);
    let output = node.run(&["registry", "import", path_str(&partial), "--json"]);
    assert_ne!(output.status.code(), Some(0));
    assert_ne!(output.status.code(), Some(101), "no panic");

    let report = node.import_all(&council.export("council.gmb"));
    let federation = council.json(&["registry", "heads"]);
    assert!(report["adopted_federation"].is_string(), "{report}");
    assert_eq!(node.json(&["registry", "heads"]), federation);
    assert_eq!(
        node.json(&["init", "--name", "newcomer"])["federation"],
        report["adopted_federation"]
    );

    let foreign = other_council.export("other.gmb");
    let (report, _) = node.json_status(&["registry", "import", path_str(&foreign)], 3);
    let rejected = report["rejected"].as_array().expect("list");
    assert_eq!(rejected.len(), 1, "{report}");
    assert!(
        rejected.iter().all(|r| r["reason"] == "wrong_federation"),
        "{report}"
    );
    assert_eq!(report["accepted"], 0);
    assert_eq!(
        node.json(&["registry", "heads"]),
        federation,
        "nothing changed"
    );
}

#[test]
fn converged_replicas_show_equal_bytes_and_export_since_heads() {
    let (council, nodes) = federation(&[("EMEA pod", "pod", "emea"), ("APAC pod", "pod", "apac")]);
    let (council, emea, apac) = (&council, &nodes[0], &nodes[1]);
    council.json(&[
        "okr",
        "objective",
        "add",
        "--title",
        "Grow",
        "--quarter",
        "2026Q4",
    ]);
    emea.json(&["learnings", "add", "--title", "EMEA", "--body", "a"]);
    apac.json(&["learnings", "add", "--title", "APAC", "--body", "b"]);

    // Only what apac lacks travels when exporting since apac's heads.
    let apac_heads = apac.json(&["registry", "heads"])["heads"].clone();
    let since: Vec<&str> = apac_heads
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let since = since.join(",");
    let delta = emea.file("delta.gmb");
    let exported = emea.json(&[
        "registry",
        "export",
        "--out",
        path_str(&delta),
        "--since",
        &since,
    ]);
    assert_eq!(exported["changes"], 1, "only emea's learning: {exported}");

    for (from, to) in [
        (emea, council),
        (apac, council),
        (council, emea),
        (council, apac),
    ] {
        to.import_all(&from.export("sync.gmb"));
    }
    let show = |node: &Node| node.run(&["registry", "show", "--json"]).stdout;
    let bytes = show(council);
    assert!(!bytes.is_empty());
    assert_eq!(show(emea), bytes);
    assert_eq!(show(apac), bytes);
    let heads = council.json(&["registry", "heads"]);
    assert_eq!(emea.json(&["registry", "heads"]), heads);
    assert_eq!(apac.json(&["registry", "heads"]), heads);
}

#[test]
fn global_flags_work_before_or_after_the_subcommand() {
    let node = Node::init("flags");
    node.json(&["federation", "create", "--name", "Flags"]);
    let dir = path_str(&node.dir);
    let orders: [&[&str]; 4] = [
        &["--json", "--data-dir", dir, "registry", "heads"],
        &["--data-dir", dir, "registry", "--json", "heads"],
        &["registry", "heads", "--data-dir", dir, "--json"],
        &["registry", "--data-dir", dir, "heads", "--json"],
    ];
    let outputs: Vec<Value> = orders
        .iter()
        .map(|args| {
            let output = binary().args(*args).output().expect("runs");
            support::assert_success(args, &output);
            one_json_document(&output.stdout)
        })
        .collect();
    assert!(outputs[0]["heads"].as_array().is_some_and(|h| h.len() == 1));
    assert!(outputs.iter().all(|o| *o == outputs[0]), "{outputs:?}");
}
