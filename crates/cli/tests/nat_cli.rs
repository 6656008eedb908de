//! NAT traversal with real `growthmesh node` processes in Linux network namespaces: a council on a "public" network
//! (relay server on) and two pods, each behind its own router namespace that masquerades (nftables) and drops
//! unsolicited traffic from outside. The pods must find themselves private (AutoNAT), reserve a slot on the council's
//! relay, reach each other through it, upgrade to a direct connection by hole punching, and replicate.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables; `.ci/run` installs it). Where any is missing the test says
//! "skipped: <why>" on stderr and returns. It uses only addresses inside its own namespaces, which it removes when it
//! ends, panics included (`Lab`'s Drop).
//!
//! ```text
//!  pod1 10.1.0.2 ── 10.1.0.1 router1 10.99.0.2 ─┐
//!                                                br0 10.99.0.1 council (public namespace)
//!  pod2 10.2.0.2 ── 10.2.0.1 router2 10.99.0.3 ─┘
//! ```

// A skipped run must say so, and a passing one says what it saw (relayed, direct), on stderr.
#![allow(clippy::print_stderr)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Daemon, Node, assert_success, path_str, wait_converged};

/// The whole test must end within this (the brief's bound); every wait below takes from it.
const TEST_BUDGET: Duration = Duration::from_secs(90);
/// How often statuses are polled.
const POLL: Duration = Duration::from_millis(150);

/// Fast timings, as the other network tests use, with a shorter mesh interval so pods find each other soon.
const NAT_CONFIG: &str = "\
announce_interval_ms = 1000
tick_ms = 50

[limits]
heartbeat_ms = 200
gate_grace_period_ms = 3000
mesh_interval_ms = 500
";

/// The namespaces of one run, deleted when dropped (`ip netns del` also removes their veths and nftables rules).
struct Lab {
    public: String,
    routers: [String; 2],
    pods: [String; 2],
}

impl Lab {
    /// Builds the topology, or says why this machine cannot.
    fn create() -> Result<Lab, String> {
        if !run_ok("id", &["-u"]).is_ok_and(|uid| uid.trim() == "0") {
            return Err("not running as root (network namespaces need it)".into());
        }
        if run_ok("ip", &["-V"]).is_err() {
            return Err("`ip` (iproute2) not found".into());
        }
        if run_ok("nft", &["--version"]).is_err() {
            return Err(
                "`nft` (nftables) not found; `apt-get install -y nftables` (.ci/run does)".into(),
            );
        }
        let id = std::process::id();
        let lab = Lab {
            public: format!("gm{id}pub"),
            routers: [format!("gm{id}r1"), format!("gm{id}r2")],
            pods: [format!("gm{id}p1"), format!("gm{id}p2")],
        };
        // Created one by one: the guard deletes the ones that exist if a later step fails.
        for ns in lab.all() {
            if let Err(error) = run_ok("ip", &["netns", "add", ns]) {
                return Err(format!("`ip netns add {ns}` failed: {error}"));
            }
        }
        lab.wire()
            .map_err(|error| format!("setting up the namespaces failed: {error}"))?;
        Ok(lab)
    }

    fn all(&self) -> Vec<&str> {
        let mut all = vec![self.public.as_str()];
        all.extend(self.routers.iter().map(String::as_str));
        all.extend(self.pods.iter().map(String::as_str));
        all
    }

    fn wire(&self) -> Result<(), String> {
        let public = self.public.as_str();
        for ns in self.all() {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", public, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", public, "addr", "add", "10.99.0.1/24", "dev", "br0"])?;
        ip(&["-n", public, "link", "set", "br0", "up"])?;
        for (index, (router, pod)) in self.routers.iter().zip(&self.pods).enumerate() {
            let n = index + 1;
            let uplink = format!("up{n}");
            // The router's WAN side on the public bridge.
            ip(&[
                "link", "add", "wan", "netns", router, "type", "veth", "peer", "name", &uplink,
                "netns", public,
            ])?;
            ip(&["-n", public, "link", "set", &uplink, "master", "br0"])?;
            ip(&["-n", public, "link", "set", &uplink, "up"])?;
            ip(&[
                "-n",
                router,
                "addr",
                "add",
                &format!("10.99.0.{}/24", n + 1),
                "dev",
                "wan",
            ])?;
            ip(&["-n", router, "link", "set", "wan", "up"])?;
            // The pod's LAN behind the router; the pod's only way out is its default route.
            ip(&[
                "link", "add", "lan", "netns", router, "type", "veth", "peer", "name", "eth0",
                "netns", pod,
            ])?;
            ip(&[
                "-n",
                router,
                "addr",
                "add",
                &format!("10.{n}.0.1/24"),
                "dev",
                "lan",
            ])?;
            ip(&["-n", router, "link", "set", "lan", "up"])?;
            ip(&[
                "-n",
                pod,
                "addr",
                "add",
                &format!("10.{n}.0.2/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", pod, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                pod,
                "route",
                "add",
                "default",
                "via",
                &format!("10.{n}.0.1"),
            ])?;
            run_ok(
                "ip",
                &[
                    "netns",
                    "exec",
                    router,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )?;
            nft(router, ROUTER_RULES)?;
        }
        Ok(())
    }
}

/// A home router: masquerade the LAN behind the WAN address; let in only replies to what went out (unsolicited TCP
/// is reset, other traffic dropped). Dropping in the filter hook keeps such a packet's conntrack entry unconfirmed,
/// so a hole-punch packet that arrives before our own outgoing one does not claim the NAT mapping it needs.
const ROUTER_RULES: &str = r#"
table inet nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
}
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new meta l4proto tcp reject with tcp reset
        iifname "wan" ct state new drop
    }
}
"#;

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.all() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn run_ok(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run_ok("ip", args).map(|_| ())
}

fn nft(netns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("nft: {error}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(rules.as_bytes())
        .map_err(|error| format!("nft stdin: {error}"))?;
    let output = child
        .wait_with_output()
        .map_err(|error| format!("nft: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Starts `node` on `listen_ip` (TCP and QUIC, OS-chosen ports) inside the node's namespace; returns once it listens.
fn start(node: &Node, listen_ip: &str, extra: &[&str]) -> Daemon {
    let config = node.file("nat.toml");
    std::fs::write(&config, NAT_CONFIG).expect("writing the test config");
    let tcp = format!("/ip4/{listen_ip}/tcp/0");
    let quic = format!("/ip4/{listen_ip}/udp/0/quic-v1");
    let mut args = vec![
        "node",
        "--listen",
        &tcp,
        "--listen",
        &quic,
        "--api",
        "127.0.0.1:0",
        "--no-mdns",
        "--config",
        path_str(&config),
    ];
    args.extend_from_slice(extra);
    let mut daemon = node.spawn_bare_daemon(&args);
    daemon.wait_for_api();
    node.wait_for_status("the node to listen", |s| {
        s["running"] == true && s["listen_addrs"].as_array().is_some_and(|a| !a.is_empty())
    });
    daemon
}

/// Polls `status --json` until `done` holds; panics at `deadline` with the status and the log's tail.
fn wait_until(
    node: &Node,
    daemon: &Daemon,
    deadline: Instant,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    loop {
        let output = node.run(&["status", "--json"]);
        if output.status.success() {
            let status: Value = serde_json::from_slice(&output.stdout).expect("status is JSON");
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status:\n{status:#}\nlog tail:\n{}",
                tail(&daemon.log())
            );
        } else {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status failed"
            );
        }
        std::thread::sleep(POLL);
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The kinds (`relayed`, `direct`) of the status's connections to `peer`.
fn connection_kinds(status: &Value, peer: &str) -> Vec<String> {
    status["connections"]
        .as_array()
        .map(|connections| {
            connections
                .iter()
                .filter(|c| c["peer_id"] == peer)
                .filter_map(|c| c["kind"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn invite(council: &Node, name: &str) -> String {
    let output = council.run(&["invite", "--role", "pod", "--name", name]);
    assert_success(&["invite"], &output);
    String::from_utf8(output.stdout)
        .expect("ticket is text")
        .trim()
        .to_owned()
}

#[test]
fn pods_behind_nat_meet_through_the_relay_then_hole_punch() {
    let started = Instant::now();
    let deadline = started + TEST_BUDGET;
    // Declared first, dropped last: the daemons below are killed before their namespaces go.
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };

    let council = Node::init("Council").in_netns(&lab.public);
    council.json(&["federation", "create", "--name", "Acme Growth"]);
    let council_daemon = start(&council, "10.99.0.1", &["--relay-server"]);
    let council_id = council.peer_id();

    let mut pods = Vec::new();
    for (index, name) in ["emea", "apac"].into_iter().enumerate() {
        let ticket = invite(&council, name);
        let pod = Node::init(name).in_netns(&lab.pods[index]);
        pod.json(&["join", &ticket]);
        let daemon = start(&pod, &format!("10.{}.0.2", index + 1), &[]);
        wait_until(&pod, &daemon, deadline, "the invite to be redeemed", |s| {
            s["invite"]
                .as_str()
                .is_some_and(|i| i.starts_with("admitted"))
        });
        pods.push((pod, daemon));
    }
    wait_converged(
        &[&council, &pods[0].0, &pods[1].0],
        "the pods to sync with the council",
        |_| true,
    );

    // The council is reachable: a pod dialed it back (AutoNAT), which also switches its relay on.
    wait_until(
        &council,
        &council_daemon,
        deadline,
        "the council to be public",
        |s| s["reachability"] == "public",
    );
    let ids: Vec<String> = pods.iter().map(|(pod, _)| pod.peer_id()).collect();
    // Each pod finds itself private and holds a reservation on the council's relay.
    for (pod, daemon) in &pods {
        let status = wait_until(pod, daemon, deadline, "a private pod with a relay", |s| {
            s["reachability"] == "private"
                && s["relays"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|id| *id == council_id.as_str()))
        });
        assert!(
            status["external_addrs"].as_array().is_some_and(|a| a
                .iter()
                .any(|addr| addr.as_str().is_some_and(|a| a.contains("/p2p-circuit")))),
            "a pod's relayed address is confirmed external: {status:#}"
        );
    }

    // The pods connect to each other. Nothing can dial a pod but through the relay, so their first connection is
    // relayed; DCUtR then punches a direct one (QUIC through masquerade, which keeps the source port).
    let (reader, reader_daemon) = &pods[1];
    let (writer, writer_daemon) = &pods[0];
    let mut saw_relayed = false;
    let direct = wait_until(
        writer,
        writer_daemon,
        deadline,
        "a direct connection between the pods",
        |s| {
            let kinds = connection_kinds(s, &ids[1]);
            if kinds.iter().any(|k| k == "relayed") {
                saw_relayed = true;
            }
            kinds.iter().any(|k| k == "direct")
        },
    );
    // A relayed connection may be gone before a poll sees it; DCUtR runs only over a relayed connection, so its
    // log line proves there was one.
    let punched = |log: &str| log.contains("hole punch succeeded");
    assert!(
        saw_relayed || punched(&writer_daemon.log()) || punched(&reader_daemon.log()),
        "the pods never had a relayed connection:\n{direct:#}"
    );
    let direct_addr = direct["connections"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["peer_id"] == ids[1].as_str() && c["kind"] == "direct")
        })
        .and_then(|c| c["addr"].as_str())
        .expect("a direct connection")
        .to_owned();
    // The direct connection runs to the other pod's router (its public face), not to its private address.
    assert!(
        direct_addr.starts_with("/ip4/10.99.0.3/"),
        "direct connection to {direct_addr}"
    );

    // Replication between the pods.
    writer.json(&[
        "learnings",
        "add",
        "--title",
        "NAT is no wall",
        "--body",
        "written behind one NAT, read behind another",
    ]);
    loop {
        let hits = reader.json(&["learnings", "search", "wall"]);
        if hits["learnings"].as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the learning did not reach the other pod: {}\nlog tail:\n{}",
            reader.status(),
            tail(&reader_daemon.log())
        );
        std::thread::sleep(POLL);
    }
    eprintln!(
        "nat test: relayed seen by polling: {saw_relayed}; direct via {direct_addr}; {:?} in all",
        started.elapsed()
    );
    drop(pods);
    drop(council_daemon);
    drop(lab);
}
