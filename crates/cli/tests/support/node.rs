//! Running `growthmesh node` as a child process on loopback: spawn it with a kill-on-drop guard, stop it with
//! SIGTERM, and poll `status --json` until a predicate holds or a deadline passes.

use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Node, assert_success, one_json_document, path_str};

/// Every wait in these tests; a failing wait panics after this with the last status it saw.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a wait polls.
const POLL: Duration = Duration::from_millis(150);
/// A node must exit this soon after SIGTERM.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);

/// Fast timings for tests: frequent announcements and heartbeats (strangers get the default 1 s grace period, which
/// a redeeming joiner must outlast through its temporary allowance).
pub const FAST_CONFIG: &str = "\
announce_interval_ms = 1000
tick_ms = 50

[limits]
heartbeat_ms = 200
";

/// A running `growthmesh node`; killed (SIGKILL) if dropped without [`Daemon::stop`].
pub struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Node {
    /// `POST PATH` to a running node's local API, with its bearer token when `authorized`; returns the status code and
    /// body.
    pub fn post(&self, path: &str, body: &str, authorized: bool) -> (u16, String) {
        self.request("POST", path, body, authorized)
    }

    /// `GET PATH` from a running node's local API (no token); the status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "", false)
    }

    fn request(&self, method: &str, path: &str, body: &str, authorized: bool) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let api: Value = serde_json::from_slice(
            &std::fs::read(self.dir.join("api.json")).expect("a running node writes api.json"),
        )
        .expect("api.json parses");
        let token = std::fs::read_to_string(self.dir.join("api.token")).expect("api.token");
        let auth = if authorized {
            format!("Authorization: Bearer {}\r\n", token.trim())
        } else {
            String::new()
        };
        let mut stream = std::net::TcpStream::connect(api["addr"].as_str().expect("addr"))
            .expect("the API accepts connections");
        write!(
            stream,
            "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request sent");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response read");
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text}"));
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (code, body)
    }

    /// The running node's API as a URL, `http://127.0.0.1:PORT`.
    pub fn api_url(&self) -> String {
        let api: Value = serde_json::from_slice(
            &std::fs::read(self.dir.join("api.json")).expect("a running node writes api.json"),
        )
        .expect("api.json parses");
        format!("http://{}", api["addr"].as_str().expect("addr"))
    }

    /// Writes [`FAST_CONFIG`] next to the data dir and returns its path.
    pub fn fast_config(&self) -> PathBuf {
        let path = self.file("node.toml");
        std::fs::write(&path, FAST_CONFIG).expect("writing the test config");
        path
    }

    /// Starts `node` on loopback ports chosen by the OS, with mDNS off, the fast test config and `extra` flags;
    /// returns once its API answers and it listens.
    pub fn start(&self, extra: &[&str]) -> Daemon {
        let config = self.fast_config();
        let mut args = vec!["--config", path_str(&config)];
        args.extend_from_slice(extra);
        self.start_with(&args)
    }

    /// Starts `node` with only the loopback flags and `args` (no test config).
    pub fn start_with(&self, args: &[&str]) -> Daemon {
        let mut daemon = self.spawn_daemon(args);
        daemon.wait_for_api();
        self.wait_for_status("the node to listen", |s| {
            s["running"] == true && !addrs(s).is_empty()
        });
        daemon
    }

    /// Spawns `node` on loopback ports chosen by the OS, with mDNS off and `args`; returns at once.
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        let mut all = vec![
            "node",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--no-mdns",
        ];
        all.extend_from_slice(args);
        self.spawn_bare_daemon(&all)
    }

    /// Spawns `growthmesh --data-dir DIR ARGS` (ARGS starting with `node`) with its log kept; returns at once.
    pub fn spawn_bare_daemon(&self, args: &[&str]) -> Daemon {
        let log = self.file(&format!("node-{}.log", unique()));
        let stderr = std::fs::File::create(&log).expect("creating the node log");
        let child = self
            .command()
            .env(
                "RUST_LOG",
                std::env::var("TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the node starts");
        Daemon {
            child: Some(child),
            dir: self.dir.clone(),
            log,
        }
    }

    /// `status --json`.
    pub fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// Polls `status --json` until `done` holds; panics after [`WAIT`] with the last status.
    pub fn wait_for_status(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let output = self.run(&["status", "--json"]);
            let status = if output.status.success() {
                one_json_document(&output.stdout)
            } else {
                Value::String(String::from_utf8_lossy(&output.stderr).into_owned())
            };
            if output.status.success() && done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what} on {}; last status:\n{status:#}",
                self.dir.display()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Sorted heads, as `registry heads --json` prints them.
    pub fn heads(&self) -> Vec<String> {
        strings(&self.json(&["registry", "heads"])["heads"])
    }

    /// The peer id.
    pub fn peer_id(&self) -> String {
        self.status()["peer_id"]
            .as_str()
            .expect("status has peer_id")
            .to_owned()
    }
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not stopped").id()
    }

    /// The node's log so far (stderr, `RUST_LOG=info`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not stopped");
        child.try_wait().expect("waiting on the node").is_none()
    }

    /// Waits until `api.json` appears (the node holds its store and serves its API), failing if the process exits.
    pub fn wait_for_api(&mut self) {
        let deadline = Instant::now() + WAIT;
        while !self.dir.join("api.json").exists() {
            assert!(
                self.is_running(),
                "the node in {} exited before serving its API; log:\n{}",
                self.dir.display(),
                self.log()
            );
            assert!(
                Instant::now() < deadline,
                "the node in {} wrote no api.json within {WAIT:?}; log:\n{}",
                self.dir.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit; panics unless it exits 0 within [`STOP_WITHIN`].
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not stopped");
        let started = Instant::now();
        signal(child.id(), "TERM");
        loop {
            if let Some(status) = child.try_wait().expect("waiting on the node") {
                assert!(
                    status.success(),
                    "the node exited with {status} after SIGTERM; log:\n{}",
                    self.log()
                );
                return status;
            }
            if started.elapsed() > STOP_WITHIN {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the node did not exit within {STOP_WITHIN:?} of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `SIG<name>` to `pid` with kill(1) (the workspace forbids the `unsafe` a libc call needs).
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A JSON array of strings.
pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// `listen_addrs` of a status.
pub fn addrs(status: &Value) -> Vec<String> {
    status["listen_addrs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Peer ids in `peers` of a status.
pub fn peer_ids(status: &Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["peer_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `heads` on every node until all are equal and satisfy `done`; returns them.
pub fn wait_converged(
    nodes: &[&Node],
    what: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all: Vec<Vec<String>> = nodes.iter().map(|n| n.heads()).collect();
        if all.windows(2).all(|w| w[0] == w[1]) && done(&all[0]) {
            return all[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; heads per node:\n{all:#?}\nstatuses:\n{:#?}",
            nodes.iter().map(|n| n.status()).collect::<Vec<_>>()
        );
        std::thread::sleep(POLL);
    }
}

/// A council node running, with its listen address.
pub fn found(name: &str) -> (Node, Daemon) {
    let council = Node::init(name);
    council.json(&["federation", "create", "--name", "Acme Growth"]);
    let daemon = council.start(&[]);
    (council, daemon)
}

/// `invite` on `issuer` (its node running, so the ticket names its addresses); a new node `join`s it and starts,
/// and this returns once the issuer admitted it and both hold the same heads.
pub fn invite_and_join(issuer: &Node, role: &str, name: &str) -> (Node, Daemon) {
    let output = issuer.run(&["invite", "--role", role, "--name", name]);
    assert_success(&["invite"], &output);
    let ticket = String::from_utf8(output.stdout).expect("ticket is text");
    let ticket = ticket.trim();
    let joiner = Node::init(name);
    joiner.json(&["join", ticket]);
    let daemon = joiner.start(&[]);
    joiner.wait_for_status("the invite to be redeemed", |s| {
        s["invite"]
            .as_str()
            .is_some_and(|i| i.starts_with("admitted"))
    });
    wait_converged(&[issuer, &joiner], "the joiner to sync", |_| true);
    (joiner, daemon)
}

/// A counter to keep log names apart.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
