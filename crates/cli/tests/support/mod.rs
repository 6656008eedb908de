//! Driving the real `growthmesh` binary on temp data dirs: run a command, read its one JSON document, set up a
//! federation of a council and members (`Node`), and `growthmesh node` running as a child process (`node.rs`:
//! [`Daemon`], status polling, invites).

// Test files use different parts of this module.
#![allow(dead_code)]

pub mod node;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[allow(unused_imports)]
pub use node::*;

/// The binary under test, with logs quiet and no fallback to the user's data dir.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_growthmesh"));
    command
        .env_remove("GROWTHMESH_DATA_DIR")
        .env("RUST_LOG", "warn");
    command
}

/// The binary under test run inside the network namespace `netns` (`ip netns exec`, which execs the binary, so the
/// child's pid is the node's).
pub fn binary_in(netns: &str) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns, env!("CARGO_BIN_EXE_growthmesh")])
        .env_remove("GROWTHMESH_DATA_DIR")
        .env("RUST_LOG", "warn");
    command
}

/// One node's data dir, removed when dropped.
pub struct Node {
    _temp: tempfile::TempDir,
    /// The data dir.
    pub dir: PathBuf,
    /// The public key `init` printed.
    pub public_key: String,
    /// What `init` printed.
    pub identity: Value,
    /// The network namespace every command and the daemon of this node run in (`None`: the test's own).
    pub netns: Option<String>,
}

impl Node {
    /// A fresh data dir on which `init --name NAME` ran.
    pub fn init(name: &str) -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut node = Self {
            dir: temp.path().join("data"),
            _temp: temp,
            public_key: String::new(),
            identity: Value::Null,
            netns: None,
        };
        let identity = node.json(&["init", "--name", name]);
        node.public_key = identity["public_key"]
            .as_str()
            .expect("init prints public_key")
            .to_owned();
        node.identity = identity;
        node
    }

    /// From now on, runs every command and the daemon inside the network namespace `netns`: its API listens on that
    /// namespace's loopback, so the CLI must be there too.
    pub fn in_netns(mut self, netns: &str) -> Self {
        self.netns = Some(netns.to_owned());
        self
    }

    /// The binary, inside this node's namespace if it has one.
    pub fn command(&self) -> Command {
        match &self.netns {
            Some(netns) => binary_in(netns),
            None => binary(),
        }
    }

    /// A file path next to the data dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.parent().expect("data dir has a parent").join(name)
    }

    /// Runs `growthmesh --data-dir DIR ARGS`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("the binary runs")
    }

    /// Runs with `--json`, expects success and returns the one JSON document printed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut argv = args.to_vec();
        argv.push("--json");
        let output = self.run(&argv);
        assert_success(&argv, &output);
        one_json_document(&output.stdout)
    }

    /// Runs with `--json` and expects exit status `code`; returns stdout parsed (or Null when empty) and stderr.
    pub fn json_status(&self, args: &[&str], code: i32) -> (Value, String) {
        let mut argv = args.to_vec();
        argv.push("--json");
        let output = self.run(&argv);
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(code),
            "{argv:?}\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&output.stdout)
        );
        let value = if output.stdout.is_empty() {
            Value::Null
        } else {
            one_json_document(&output.stdout)
        };
        (value, stderr)
    }

    /// Runs with `--json` and `input` on stdin, expecting success; returns the JSON printed.
    pub fn json_stdin(&self, args: &[&str], input: &[u8]) -> Value {
        use std::io::Write as _;
        let mut child = self
            .command()
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .arg("--json")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input)
            .expect("stdin takes the input");
        let output = child.wait_with_output().expect("the binary ends");
        assert_success(args, &output);
        one_json_document(&output.stdout)
    }

    /// Exports everything to a bundle file named `name` and returns its path.
    pub fn export(&self, name: &str) -> PathBuf {
        let out = self.file(name);
        self.json(&["registry", "export", "--out", path_str(&out)]);
        out
    }

    /// Imports `bundle`, expecting no rejection; returns the report.
    pub fn import_all(&self, bundle: &Path) -> Value {
        let report = self.json(&["registry", "import", path_str(bundle)]);
        assert_eq!(report["rejected"], Value::Array(Vec::new()), "{report}");
        report
    }

    /// The registry view.
    pub fn show(&self) -> Value {
        self.json(&["registry", "show"])
    }
}

/// Panics with the command's output unless it exited 0.
pub fn assert_success(argv: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "{argv:?} exited {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Parses `stdout` as exactly one JSON document.
pub fn one_json_document(stdout: &[u8]) -> Value {
    serde_json::from_slice(stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}",
            String::from_utf8_lossy(stdout)
        )
    })
}

/// A path as UTF-8 (temp paths are).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A council that founded a federation, and members it admitted with `(name, role, pod)`, each of which imported
/// the council's bundle.
pub fn federation(members: &[(&str, &str, &str)]) -> (Node, Vec<Node>) {
    let council = Node::init("Council");
    council.json(&["federation", "create", "--name", "Acme Growth"]);
    let mut nodes = Vec::new();
    for (name, role, pod) in members {
        let node = Node::init(name);
        let key = node.public_key.as_str();
        council.json(&[
            "member", "add", key, "--role", role, "--name", name, "--pod", pod,
        ]);
        nodes.push(node);
    }
    let bundle = council.export("founding.gmb");
    for node in &nodes {
        node.import_all(&bundle);
    }
    (council, nodes)
}

/// A council and the `emea` pod; the pod proposed the schemas and metrics named, the council approved them, and
/// the pod registered the experiment `checkout` (primary `conversion`, guardrail `pages`).
pub fn federation_with_schemas(schemas: &[&str]) -> (Node, Node) {
    let council = Node::init("Council");
    council.json(&["federation", "create", "--name", "Acme"]);
    let pod = Node::init("Pod");
    council.json(&[
        "member",
        "add",
        &pod.public_key,
        "--role",
        "pod",
        "--name",
        "Pod",
        "--pod",
        "emea",
    ]);
    pod.import_all(&council.export("founding.gmb"));
    for schema in schemas {
        let mut args = vec!["schema", "propose", "--event", schema];
        for (event, properties) in analysis::generate::SCHEMAS {
            if event == *schema {
                for property in properties {
                    args.extend(["--property", property]);
                }
            }
        }
        pod.json(&args);
    }
    for metric in [
        &[
            "--key",
            "conversion",
            "--type",
            "binomial",
            "--event",
            "Order Completed",
        ][..],
        &["--key", "pages", "--type", "mean", "--event", "Page Viewed"],
        &[
            "--key",
            "signups",
            "--type",
            "binomial",
            "--event",
            "Signed Up",
        ],
    ] {
        let mut args = vec!["metric", "propose"];
        args.extend_from_slice(metric);
        pod.json(&args);
    }
    pod.json(&[
        "experiment",
        "new",
        "--key",
        "checkout",
        "--hypothesis",
        "if checkout is shorter then more people order because there is less friction",
        "--primary-metric",
        "conversion",
        "--guardrail",
        "pages",
        "--weights",
        "0.4,0.6",
    ]);
    council.import_all(&pod.export("pod.gmb"));
    for schema in schemas {
        council.json(&["schema", "approve", schema]);
    }
    for metric in ["conversion", "pages", "signups"] {
        council.json(&["metric", "approve", metric]);
    }
    pod.import_all(&council.export("standards.gmb"));
    (council, pod)
}

/// Registers and starts experiment `key` on `pod` with `extra` flags.
pub fn start_experiment(pod: &Node, key: &str, extra: &[&str]) {
    let mut args = vec![
        "experiment",
        "new",
        "--key",
        key,
        "--hypothesis",
        "if the page changes then more people order because it is clearer",
        "--primary-metric",
        "conversion",
    ];
    args.extend_from_slice(extra);
    pod.json(&args);
    pod.json(&["experiment", "start", key]);
}

/// Starts `pricing-low` and `pricing-high` on `pod`: disjoint halves of the namespace `pricing`, hash version 2, the
/// second with 80% coverage and three variants weighted 0.5/0.25/0.25.
pub fn start_pricing_experiments(pod: &Node) {
    start_experiment(
        pod,
        "pricing-low",
        &[
            "--namespace",
            "pricing:0:0.5",
            "--hash-version",
            "2",
            "--funnel-stage",
            "revenue",
        ],
    );
    start_experiment(
        pod,
        "pricing-high",
        &[
            "--namespace",
            "pricing:0.5:1",
            "--hash-version",
            "2",
            "--coverage",
            "0.8",
            "--variants",
            "control,plus,premium",
            "--weights",
            "0.5,0.25,0.25",
            "--funnel-stage",
            "revenue",
        ],
    );
}
