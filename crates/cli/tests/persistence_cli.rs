//! Durability through the `growthmesh` binary: what a command reported survives a reopen, and a `registry import`
//! killed with SIGKILL halfway loses nothing it had reported accepted and leaves no stale lock behind.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use identity::Keypair;
use model::{Audience, Experiment, ExperimentStatus, FunnelStage, Hypothesis, Member, Role};
use registry::bundle::{self, Entry};
use registry::{Envelope, Op, Replica};
use serde_json::Value;

use support::{Node, binary, path_str};

/// Distinct changes of the kill test's bundle, half in each of its two import batches.
const BULK_CHANGES: usize = 1_200;
/// Envelopes `registry import` decides and makes durable per batch (`node::IMPORT_BATCH`).
const IMPORT_BATCH: usize = 4096;

#[test]
fn writes_survive_a_reopen() {
    let council = Node::init("Council");
    council.json(&["federation", "create", "--name", "Durable"]);
    let pod = Node::init("EMEA pod");
    council.json(&[
        "member",
        "add",
        &pod.public_key,
        "--role",
        "pod",
        "--name",
        "EMEA",
        "--pod",
        "emea",
    ]);
    council.json(&[
        "okr",
        "objective",
        "add",
        "--title",
        "Grow",
        "--quarter",
        "2026Q4",
    ]);
    pod.import_all(&council.export("founding.gmb"));
    // A key result names an approved metric.
    pod.json(&[
        "metric", "propose", "--key", "m", "--type", "mean", "--event", "E",
    ]);
    council.import_all(&pod.export("proposal.gmb"));
    council.json(&["metric", "approve", "m"]);
    pod.import_all(&council.export("standards.gmb"));
    let objective = only_key(&pod.show()["objectives"]);
    pod.json(&[
        "okr",
        "kr",
        "add",
        "--objective",
        &objective,
        "--metric",
        "m",
        "--target",
        "10",
    ]);
    let kr = only_key(&pod.show()["key_results"]);
    let kr_id = kr.strip_prefix("emea/").expect("keyed by pod");
    let last = pod.json(&["okr", "kr", "update", kr_id, "--current", "7.5"]);

    // Every command is a new process: these read what earlier processes wrote.
    let view = pod.show();
    assert_eq!(view["key_results"][&kr]["current"], 7.5);
    assert_eq!(view["objectives"][&objective]["title"], "Grow");
    assert_eq!(pod.json(&["registry", "heads"])["heads"], last["heads"]);
    let identity = pod.json(&["init", "--name", "EMEA pod"]);
    assert_eq!(identity["public_key"], pod.public_key.as_str());
    assert_eq!(
        identity["created"], false,
        "the key is reused, not recreated"
    );
    assert!(identity["federation"].is_string());
}

#[test]
fn an_import_killed_halfway_keeps_everything_it_reported() {
    let node = Node::init("importer");
    let bundle_path = node.file("bulk.gmb");
    let all = write_bulk_bundle(&bundle_path);
    let mut child = binary()
        .arg("--data-dir")
        .arg(&node.dir)
        .args(["registry", "import", path_str(&bundle_path)])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut reported = BTreeSet::new();
    // Wait for the first durable batch to be reported, then kill at once.
    for line in lines.by_ref() {
        if let Some(hash) = line.expect("utf-8 output").strip_prefix("accepted ") {
            reported.insert(hash.to_owned());
            break;
        }
    }
    assert!(!reported.is_empty(), "the import reported nothing");
    let still_running = child.try_wait().expect("status").is_none();
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    // Lines already written before the kill were reported too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(hash) = line.strip_prefix("accepted ") {
            reported.insert(hash.to_owned());
        }
    }
    if still_running {
        assert_eq!(status.code(), None, "ended by the signal");
    }

    // No stale lock: the next commands open the database, and every reported change is there.
    let heads = node.json(&["registry", "heads"]);
    assert!(heads["heads"].as_array().is_some_and(|h| !h.is_empty()));
    let stored = exported_hashes(&node);
    let lost: Vec<&String> = reported.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} reported changes lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert!(stored.len() >= reported.len());
    assert!(stored.is_subset(&all));

    // Importing again completes the job.
    let report = node.json(&["registry", "import", path_str(&bundle_path)]);
    assert_eq!(report["rejected"], Value::Array(Vec::new()), "{report}");
    assert_eq!(report["pending"], 0);
    assert_eq!(report["accepted"], all.len() - stored.len(), "{report}");
    assert_eq!(exported_hashes(&node), all);
}

/// Pods writing the bulk bundle, each in its own document.
const BULK_PODS: usize = 8;

/// Writes to `path` a bundle of [`BULK_CHANGES`] changes: a federation whose pods each register an experiment and
/// then flip its status back and forth (one small operation per change, which keeps writing the bundle fast in a
/// debug build). Made with the registry library, as a CLI process per write would take minutes. Returns the hashes
/// of the changes.
fn write_bulk_bundle(path: &Path) -> BTreeSet<String> {
    let council = Keypair::from_seed([1; 32]);
    let pods: Vec<Keypair> = (0..BULK_PODS)
        .map(|n| Keypair::from_seed([n as u8 + 2; 32]))
        .collect();
    let member = |key: &Keypair, role: Role, scope: Option<String>| Member {
        public_key: key.public().to_hex(),
        name: role.to_string(),
        role,
        scope,
        admitted_by: council.public().to_hex(),
        admitted_at_ms: 0,
        revoked: false,
    };
    let mut replica = Replica::new();
    let mut write = |key: &Keypair, op: Op| replica.write(key, &op, 1_000).expect("allowed");
    let mut envelopes = vec![write(
        &council,
        Op::Genesis {
            name: "bulk".into(),
            founder: member(&council, Role::Council, None),
        },
    )];
    for (n, pod) in pods.iter().enumerate() {
        let admission = member(pod, Role::Pod, Some(format!("pod-{n}")));
        envelopes.push(write(&council, Op::AddMember(admission)));
    }
    for pod in &pods {
        envelopes.push(write(pod, Op::NewExperiment(experiment())));
    }
    for n in 0..BULK_CHANGES - envelopes.len() {
        let status = if n % (2 * BULK_PODS) < BULK_PODS {
            ExperimentStatus::Running
        } else {
            ExperimentStatus::Stopped
        };
        let op = Op::SetExperimentStatus {
            key: "bulk".into(),
            status,
            at_ms: 0,
        };
        envelopes.push(write(&pods[n % BULK_PODS], op));
    }
    // Two import batches, each half new changes and half repeats of the genesis. Repeats are dropped before any
    // signature check, so the bundle is thousands of entries long while a debug build spends its time on only
    // [`BULK_CHANGES`] real ones; the second batch takes long enough for the kill to land while it is decided.
    let encoded: Vec<Vec<u8>> = envelopes.iter().map(Envelope::to_bytes).collect();
    let (first, second) = encoded.split_at(BULK_CHANGES / 2);
    let padding = |batch: &[Vec<u8>]| std::iter::repeat_n(&encoded[0], IMPORT_BATCH - batch.len());
    let entries = first
        .iter()
        .chain(padding(first))
        .chain(second)
        .chain(padding(second));
    let federation = replica.federation().expect("founded");
    std::fs::write(path, bundle::write(&federation, entries.map(Vec::as_slice)))
        .expect("writes the bundle");
    envelopes.iter().map(|e| e.hash().to_string()).collect()
}

fn experiment() -> Experiment {
    Experiment {
        key: "bulk".into(),
        pod: String::new(),
        hypothesis: Hypothesis::parse("flipping helps"),
        funnel_stage: FunnelStage::Activation,
        audience: Audience::default(),
        variants: Vec::new(),
        primary_metric: None,
        guardrail_metrics: Vec::new(),
        start_date: None,
        end_date: None,
        cost: 0.0,
        status: ExperimentStatus::Draft,
        namespace: None,
        started_at_ms: None,
        hash_version: 1,
        coverage: 1.0,
        created_by: String::new(),
        created_at_ms: 0,
    }
}

/// Hashes of every change the node holds, read from a full export.
fn exported_hashes(node: &Node) -> BTreeSet<String> {
    let out = node.export("export.gmb");
    hashes_in(&out)
}

fn hashes_in(path: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(path).expect("reads the export");
    bundle::read(&bytes)
        .expect("an export is a bundle")
        .entries
        .into_iter()
        .map(|entry| match entry {
            Entry::Envelope(envelope) => envelope.hash().to_string(),
            Entry::Malformed { problem, .. } => {
                panic!("an export holds a malformed entry: {problem}")
            }
        })
        .collect()
}

fn only_key(map: &Value) -> String {
    let object = map.as_object().expect("an object");
    assert_eq!(object.len(), 1, "{map}");
    object.keys().next().expect("one key").clone()
}
