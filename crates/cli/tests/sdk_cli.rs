//! The official SDKs against a running pod node: Segment's SDK sends events to its Segment tracking API, and
//! GrowthBook's SDK loads its features and assigns users, tracking each exposure back through Segment. For every
//! running experiment (hash versions 1 and 2, a namespace, partial coverage, three variants) the SDK's variation is
//! `growthmesh assign`'s. Python (`segment-analytics-python`, `growthbook`) and JavaScript
//! (`@segment/analytics-node`, `@growthbook/growthbook`, with user ids beyond ASCII: the JS SDK hashes UTF-16).
//!
//! The SDKs are pinned in `tests/sdk/requirements.txt` (PyPI) and `tests/sdk/package.json` (npm): `.ci/run` installs
//! them and names them in `GROWTHMESH_SDK_PYTHON` and `GROWTHMESH_SDK_NODE_MODULES`. Without those variables a test
//! installs them itself under the target dir; where the registry cannot be reached it says so and skips.

// The test says so on stderr when it skips.
#![allow(clippy::print_stderr)]

mod support;

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Node, federation_with_schemas, start_pricing_experiments};

const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/requirements.txt");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/sdk_check.py");
const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/package.json");
const JS_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/sdk_check.cjs");
/// The experiments running in [`pod_with_experiments`], sorted.
const RUNNING: [&str; 3] = ["checkout", "pricing-high", "pricing-low"];
/// Users each SDK run assigns.
const USERS: usize = 200;
/// Of which `growthmesh assign` is also run as a process for this many (all are checked in process).
const CLI_USERS: usize = 15;

/// The Python with the SDKs installed, or `None` (with the reason printed) where it cannot be had.
fn sdk_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("GROWTHMESH_SDK_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let python = venv.join("bin").join("python");
    let ready = venv.join("installed");
    if ready.exists() {
        return Some(python);
    }
    let ok = |command: &mut Command| command.status().is_ok_and(|s| s.success());
    if !ok(Command::new("python3").args(["-m", "venv"]).arg(&venv))
        || !ok(Command::new(&python).args(["-m", "pip", "install", "--quiet", "-r", REQUIREMENTS]))
    {
        eprintln!(
            "SKIPPED: the SDKs in {REQUIREMENTS} could not be installed (no python3 or no PyPI); \
             .ci/run installs them and sets GROWTHMESH_SDK_PYTHON"
        );
        return None;
    }
    std::fs::write(&ready, "").expect("marking the environment ready");
    Some(python)
}

/// A pod running `checkout` (0.4/0.6, hash version 1), `pricing-low` and `pricing-high` (disjoint halves of one
/// namespace, hash version 2; the second with 80% coverage and three variants), with `onboarding` registered but
/// not running; its node started with app source `web`.
fn pod_with_experiments() -> (Node, Node, support::Daemon, Value) {
    let (council, pod) = federation_with_schemas(&["Order Completed", "Page Viewed"]);
    // `checkout` is registered by the fixture (0.4/0.6, hash version 1).
    pod.json(&["experiment", "start", "checkout"]);
    start_pricing_experiments(&pod);
    // Registered, not running: not a feature.
    pod.json(&[
        "experiment",
        "new",
        "--key",
        "onboarding",
        "--hypothesis",
        "if onboarding is shorter then more people activate because it is easier",
    ]);
    let source = pod.json(&["source", "add", "web"]);
    let daemon = pod.start(&[]);
    (council, pod, daemon, source)
}

#[test]
fn the_official_python_sdks_send_events_and_assign_as_growthmesh_does() {
    let Some(python) = sdk_python() else { return };
    let (_council, pod, daemon, source) = pod_with_experiments();
    let run =
        run_script(script(&python, SCRIPT, &pod, &source).args(["--users", &USERS.to_string()]));
    assert_eq!(
        run["refused"][0]["status"], 401,
        "a wrong write key is refused: {}",
        run["refused"]
    );
    assert_eq!(
        run["features"],
        serde_json::json!(RUNNING),
        "the running experiments, and only they, are features"
    );

    let users: Vec<String> = (0..USERS).map(|n| format!("user-{n}")).collect();
    let exposed = check_assignments(&pod, &run, &users);

    // Events sent twice are stored once; each exposure the SDK tracked through Segment is stored as an exposure.
    let stats = pod.json(&["events", "stats"]);
    assert_eq!(stats["events"], USERS as u64, "{stats}");
    assert_eq!(stats["exposures"], exposed, "{stats}");
    assert_eq!(stats["quarantined"], 0, "{stats}");
    assert_eq!(
        (
            stats["calls"]["identify"].as_u64(),
            stats["calls"]["page"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let report = pod.json(&["analyze", "checkout"]);
    let users: u64 = report["users"]
        .as_array()
        .map(|v| v.iter().filter_map(Value::as_u64).sum())
        .unwrap_or_default();
    assert_eq!(
        users, USERS as u64,
        "analyze reads the SDK's exposures: {report}"
    );
    assert_eq!(
        report["excluded_unknown_variation"], 0,
        "the SDK's variation ids are the variant keys"
    );

    // Streaming: an SDK holding `/sub/<client key>` open sees an experiment the moment it starts.
    let mut watcher = script(&python, SCRIPT, &pod, &source)
        .args(["--watch", "onboarding"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    let mut lines = std::io::BufReader::new(watcher.stdout.take().expect("stdout")).lines();
    let mut next = || -> Value {
        serde_json::from_str(&lines.next().expect("a line").expect("read")).expect("JSON")
    };
    let ready = next();
    assert_eq!(
        ready["features"].as_array().map(Vec::len),
        Some(3),
        "{ready}"
    );
    pod.json(&["experiment", "start", "onboarding"]);
    let seen = next();
    assert!(watcher.wait().expect("python ends").success());
    assert_eq!(
        seen["seen"], true,
        "the stream brought the started experiment: {seen}"
    );
    let expected = pod.json(&["assign", "--experiment", "onboarding", "--user", "user-1"]);
    assert_eq!(seen["variation"], expected["variation"], "{seen}");
    daemon.stop();
}

/// Checks every user's variation in every running experiment against `growthmesh assign` (in process for all, as a
/// process for the first [`CLI_USERS`]) and the feature's value against the variant's key; returns how many
/// (user, experiment) pairs were in an experiment.
fn check_assignments(pod: &Node, run: &Value, users: &[String]) -> u64 {
    let view = pod.show();
    let mut exposed = 0u64;
    for key in RUNNING {
        let experiment: model::Experiment =
            serde_json::from_value(view["experiments"][key].clone())
                .expect("a registered experiment");
        let definition = node::features::assignment(&experiment);
        let mut in_experiment = 0;
        for (n, user) in users.iter().enumerate() {
            let sdk = run["assignments"][key][user].as_u64();
            let ours = assign::assign(&definition, user).variation.map(u64::from);
            assert_eq!(sdk, ours, "{key} for {user}");
            if n < CLI_USERS {
                let cli = pod.json(&["assign", "--experiment", key, "--user", user]);
                assert_eq!(
                    sdk,
                    cli["variation"].as_u64(),
                    "`growthmesh assign` for {key}, {user}"
                );
            }
            // The feature's value is the variant's key; outside the experiment, the control's.
            let value = run["values"][key][user].as_str().expect("a variant key");
            let variant = ours.map_or(0, |v| v as usize);
            assert_eq!(value, experiment.variants[variant].key, "{key} for {user}");
            in_experiment += u64::from(sdk.is_some());
        }
        assert!(
            in_experiment > 0 && (key == "checkout") == (in_experiment == users.len() as u64),
            "{key}: {in_experiment}"
        );
        exposed += in_experiment;
    }
    exposed
}

/// The `node_modules` with the JavaScript SDKs, or `None` (with the reason printed) where they cannot be had.
fn sdk_node_modules() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GROWTHMESH_SDK_NODE_MODULES") {
        return Some(PathBuf::from(path));
    }
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-js");
    let ready = prefix.join("installed");
    if !ready.exists() {
        std::fs::create_dir_all(&prefix).expect("creating the npm prefix");
        std::fs::copy(PACKAGE, prefix.join("package.json")).expect("copying package.json");
        let installed = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            eprintln!(
                "SKIPPED: the SDKs in {PACKAGE} could not be installed (no npm or no registry); \
                 .ci/run installs them and sets GROWTHMESH_SDK_NODE_MODULES"
            );
            return None;
        }
        std::fs::write(&ready, "").expect("marking the install ready");
    }
    Some(prefix.join("node_modules"))
}

#[test]
fn the_official_javascript_sdks_send_events_and_assign_as_growthmesh_does() {
    let Some(modules) = sdk_node_modules() else {
        return;
    };
    let (_council, pod, daemon, source) = pod_with_experiments();
    // Ids beyond ASCII: accents, CJK and emoji (a surrogate pair in UTF-16, which the JS SDK hashes unit by unit).
    let users: Vec<String> = (0..USERS)
        .map(|n| match n % 4 {
            0 => format!("user-{n}"),
            1 => format!("josé-{n}"),
            2 => format!("用户-{n}"),
            _ => format!("user-😀-{n}"),
        })
        .collect();
    let run = run_script(
        script(Path::new("node"), JS_SCRIPT, &pod, &source)
            .env("NODE_PATH", &modules)
            .args(["--users", &serde_json::to_string(&users).expect("JSON")]),
    );
    assert_eq!(run["features"], serde_json::json!(RUNNING));
    let exposed = check_assignments(&pod, &run, &users);
    let stats = pod.json(&["events", "stats"]);
    assert_eq!(stats["events"], USERS as u64, "each order once: {stats}");
    assert_eq!(stats["exposures"], exposed, "{stats}");
    assert_eq!(stats["quarantined"], 0, "{stats}");
    daemon.stop();
}

/// `program SCRIPT --api URL --write-key KEY --client-key KEY`, for `pod` and its app source.
fn script(program: &Path, script: &str, pod: &Node, source: &Value) -> Command {
    let mut command = Command::new(program);
    command
        .arg(script)
        .args(["--api", &pod.api_url()])
        .args([
            "--write-key",
            source["write_key"].as_str().expect("write key"),
        ])
        .args([
            "--client-key",
            source["client_key"].as_str().expect("client key"),
        ]);
    command
}

/// Runs an SDK script to its end: its JSON report, once it succeeded and its Segment SDK reported no error.
fn run_script(command: &mut Command) -> Value {
    let output = command.output().expect("the SDK script runs");
    assert!(
        output.status.success(),
        "the SDK script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    assert_eq!(
        run["errors"],
        Value::Array(Vec::new()),
        "the Segment SDK reported errors"
    );
    run
}
