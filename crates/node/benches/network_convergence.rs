//! Network convergence benchmark: N real nodes (libp2p on loopback, sled in temp dirs) in one process, 10,000 signed
//! changes written across them through their local APIs; reports the time from the last write until every node shows
//! identical heads, the bytes the sync protocol sent against the raw size of the changes, and round trips.
//!
//! `cargo bench -p node --bench network_convergence -- [--nodes 8,32] [--changes 10000]` (`RUST_LOG=net=debug`
//! logs what the nodes do, on stderr).

#![allow(clippy::print_stdout)] // a benchmark harness prints its figures

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node::Node;
use node::actor::{ExecRequest, ExecResponse, NetworkStatus};
use node::remote::Remote;
use registry::Op;

fn exec(node: &mut Node, request: &ExecRequest, _: &NetworkStatus) -> ExecResponse {
    let now = 1_795_000_000_000;
    let op = match request.args.as_slice() {
        [kind, id] if kind == "learning" => Op::AddLearning(model::Learning {
            id: id.clone(),
            title: format!("Learning {id}"),
            body: "Shorter signup forms lifted activation by four percent in the second week."
                .into(),
            outcome: Some(model::Outcome::Win),
            tags: vec!["signup".into()],
            experiment: None,
            source: String::new(),
            author: String::new(),
            created_at_ms: now,
        }),
        [kind, id] if kind == "objective" => Op::AddObjective(model::Objective {
            id: id.clone(),
            title: format!("Objective {id}"),
            quarter: "2026Q4".into(),
            north_star_metric: Some("weekly-active-teams".into()),
            target: Some(1000.0),
            created_by: String::new(),
        }),
        _ => {
            return ExecResponse {
                status: 2,
                stderr: "unknown".into(),
                ..Default::default()
            };
        }
    };
    match node.write(&op, now) {
        Ok(outcome) => ExecResponse {
            status: 0,
            stdout: outcome.change,
            ..Default::default()
        },
        Err(error) => ExecResponse {
            status: 1,
            stderr: error.to_string(),
            ..Default::default()
        },
    }
}

struct Run {
    nodes: usize,
    changes: usize,
    write_s: f64,
    converge_ms: f64,
    bytes_sent: u64,
    raw_change_bytes: u64,
    envelope_bytes: u64,
    round_trips: u64,
    by_kind: node::actor::SyncBytes,
    duplicates: u64,
    announcements_delivered: u64,
    connections: f64,
}

fn setup(root: &Path, nodes: usize) -> Vec<std::path::PathBuf> {
    let dirs: Vec<_> = (0..nodes).map(|i| root.join(format!("n{i}"))).collect();
    let mut council = Node::open(&dirs[0]).expect("open");
    council.create_federation("bench", 0).expect("genesis");
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let key = Node::open(dir).expect("open").identity().public_key;
        let member = model::Member {
            public_key: key,
            name: format!("pod{i}"),
            role: model::Role::Pod,
            scope: Some(format!("pod{i}")),
            admitted_by: String::new(),
            admitted_at_ms: 0,
            revoked: false,
        };
        council.write(&Op::AddMember(member), 0).expect("admit");
    }
    let bundle = council.export(None).expect("export");
    drop(council);
    for dir in &dirs[1..] {
        Node::open(dir)
            .expect("open")
            .import("setup", &bundle, |_, _| {})
            .expect("import");
    }
    dirs
}

fn run(nodes: usize, changes: usize) -> Run {
    let root = tempfile::tempdir().expect("temp dir");
    let dirs = setup(root.path(), nodes);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    let mut first_addr = None::<String>;
    let mut remotes: Vec<Remote> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = node::config::Config {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
            api_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            mdns: false,
            ..Default::default()
        };
        config.limits.max_requests_per_peer_per_second = 1_000;
        // A ring plus the first node: every node has a few peers and the mesh is connected.
        if let Some(addr) = &first_addr {
            config.bootstrap_addrs.push(addr.clone());
        }
        if i >= 2 {
            let previous = remotes[i - 1]
                .status()
                .expect("status")
                .network
                .listen_addrs[0]
                .clone();
            config.bootstrap_addrs.push(previous);
        }
        let dir = dir.clone();
        let mut stopped = stopped.clone();
        handles.push(runtime.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            node::daemon::run(&dir, config, Arc::new(exec), shutdown)
                .await
                .expect("node runs");
        }));
        let remote = node::remote::wait_for(&dirs[i]).expect("api up");
        let deadline = Instant::now() + Duration::from_secs(10);
        while remote
            .status()
            .expect("status")
            .network
            .listen_addrs
            .is_empty()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        if first_addr.is_none() {
            first_addr = Some(remote.status().expect("status").network.listen_addrs[0].clone());
        }
        remotes.push(remote);
    }
    wait_connected(&remotes);
    let baseline_bytes: u64 = remotes
        .iter()
        .map(|r| r.status().expect("status").network.sync_bytes_out)
        .sum();
    let baseline: Vec<NetworkStatus> = remotes
        .iter()
        .map(|r| r.status().expect("status").network)
        .collect();
    let baseline_rounds: u64 = baseline.iter().map(|s| s.round_trips).sum();
    let before = remotes[0].status().expect("status").heads;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for (i, remote) in remotes.iter().enumerate() {
            let count = changes / nodes + usize::from(i < changes % nodes);
            scope.spawn(move || {
                for n in 0..count {
                    let kind = if i == 0 { "objective" } else { "learning" };
                    let request = ExecRequest {
                        args: vec![kind.into(), format!("n{i}-{n}")],
                        cwd: String::new(),
                    };
                    let response = remote.exec(&request).expect("exec");
                    assert_eq!(response.status, 0, "{}", response.stderr);
                }
            });
        }
    });
    let write_s = started.elapsed().as_secs_f64();
    let last_write = Instant::now();
    let deadline = last_write + Duration::from_secs(120);
    loop {
        let heads: Vec<Vec<String>> = remotes
            .iter()
            .map(|r| r.status().expect("status").heads)
            .collect();
        if heads.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        if Instant::now() >= deadline {
            report_divergence(&remotes, &heads);
            panic!("no convergence within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let converge_ms = last_write.elapsed().as_secs_f64() * 1000.0;
    let statuses: Vec<NetworkStatus> = remotes
        .iter()
        .map(|r| r.status().expect("status").network)
        .collect();
    let _ = baseline_bytes;
    let round_trips = statuses.iter().map(|s| s.round_trips).sum::<u64>() - baseline_rounds;
    let kind_total = |f: fn(&NetworkStatus) -> u64| {
        statuses.iter().map(f).sum::<u64>() - baseline.iter().map(f).sum::<u64>()
    };
    let by_kind = node::actor::SyncBytes {
        announcements: kind_total(|s| s.sync_bytes_out_by_kind.announcements),
        requests: kind_total(|s| s.sync_bytes_out_by_kind.requests),
        responses: kind_total(|s| s.sync_bytes_out_by_kind.responses),
        pushes: kind_total(|s| s.sync_bytes_out_by_kind.pushes),
    };
    let duplicates = kind_total(|s| s.duplicate_envelopes);
    let announcements_delivered = kind_total(|s| s.announcement_bytes_received);
    // What crossed the network: every request, response and push, and every delivery of an announcement (it is
    // published once and gossiped to every subscriber).
    let bytes_sent =
        by_kind.requests + by_kind.responses + by_kind.pushes + announcements_delivered;
    let connections =
        statuses.iter().map(|s| s.peers.len()).sum::<usize>() as f64 / statuses.len() as f64;
    let _ = stop.send(true);
    for handle in handles {
        let _ = runtime.block_on(handle);
    }
    let node = Node::open(&dirs[0]).expect("reopen");
    let since = registry::parse_hash(&before[0])
        .map(|h| vec![h])
        .unwrap_or_default();
    let _ = since;
    let bundle = node.export(None).expect("export");
    let parsed = registry::bundle::read(&bundle).expect("bundle");
    let (mut raw, mut envelope_bytes) = (0u64, 0u64);
    for entry in parsed.entries.iter().skip(nodes) {
        if let registry::bundle::Entry::Envelope(envelope) = entry {
            raw += envelope.change.raw_bytes().len() as u64;
            envelope_bytes += envelope.to_bytes().len() as u64;
        }
    }
    Run {
        nodes,
        changes,
        write_s,
        converge_ms,
        bytes_sent,
        raw_change_bytes: raw,
        envelope_bytes,
        round_trips,
        by_kind,
        duplicates,
        announcements_delivered,
        connections,
    }
}

/// Which nodes hold which head sets, and what each is connected to, when the nodes did not agree.
fn report_divergence(remotes: &[Remote], heads: &[Vec<String>]) {
    let mut groups: std::collections::BTreeMap<&Vec<String>, Vec<usize>> = Default::default();
    for (i, h) in heads.iter().enumerate() {
        groups.entry(h).or_default().push(i);
    }
    println!("no agreement: {} distinct head sets", groups.len());
    for (h, members) in &groups {
        println!("  {} heads held by nodes {members:?}", h.len());
    }
    for (i, remote) in remotes.iter().enumerate() {
        if let Ok(status) = remote.status() {
            let network = status.network;
            println!(
                "  node {i}: {} peers, rejections {:?}, duplicates {}, round trips {}",
                network.peers.len(),
                network.rejections,
                network.duplicate_envelopes,
                network.round_trips
            );
        }
    }
}

fn wait_connected(remotes: &[Remote]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if remotes
            .iter()
            .all(|r| !r.status().expect("status").network.peers.is_empty())
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nodes did not connect within 30 s");
}

#[derive(clap::Parser)]
#[command(
    about = "signed changes written across N nodes on loopback: bytes, round trips, convergence"
)]
struct Args {
    /// Node counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,32")]
    nodes: Vec<usize>,
    /// Signed changes written in all.
    #[arg(long, default_value_t = 10_000)]
    changes: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let Args {
        nodes: node_counts,
        changes,
        ..
    } = clap::Parser::parse();
    println!(
        "network convergence: {changes} signed changes written across N nodes on loopback (one process)"
    );
    println!(
        "{:>5} {:>9} {:>10} {:>14} {:>12} {:>11} {:>12} {:>11}",
        "nodes",
        "write s",
        "converge",
        "bytes sent",
        "raw x(N-1)",
        "wire/raw",
        "round trips",
        "env/raw"
    );
    let mut results = Vec::new();
    for nodes in node_counts {
        let r = run(nodes, changes);
        let needed = r.raw_change_bytes * (r.nodes as u64 - 1);
        println!(
            "{:>5} {:>9.1} {:>8.0}ms {:>14} {:>12} {:>10.2}x {:>12} {:>10.2}x",
            r.nodes,
            r.write_s,
            r.converge_ms,
            r.bytes_sent,
            needed,
            r.bytes_sent as f64 / needed as f64,
            r.round_trips,
            r.envelope_bytes as f64 / r.raw_change_bytes as f64
        );
        println!(
            "      bytes by kind: announcements {} published, {} delivered ({:.2}x raw), pushes {} ({:.2}x), requests {} ({:.2}x), responses {} ({:.2}x); duplicate envelopes received {}; {:.1} connected peers per node",
            r.by_kind.announcements,
            r.announcements_delivered,
            r.announcements_delivered as f64 / needed as f64,
            r.by_kind.pushes,
            r.by_kind.pushes as f64 / needed as f64,
            r.by_kind.requests,
            r.by_kind.requests as f64 / needed as f64,
            r.by_kind.responses,
            r.by_kind.responses as f64 / needed as f64,
            r.duplicates,
            r.connections
        );
        results.push(r);
    }
    for r in &results {
        let needed = r.raw_change_bytes * (r.nodes as u64 - 1);
        let ratio = r.bytes_sent as f64 / needed as f64;
        println!(
            "target {} nodes: bytes on the wire {:.2}x the raw change bytes each node needed (target <= 1.5x): {}; convergence {:.0} ms after the last write (target < 1000 ms): {}",
            r.nodes,
            ratio,
            if ratio <= 1.5 { "PASS" } else { "MISS" },
            r.converge_ms,
            if r.converge_ms < 1000.0 {
                "PASS"
            } else {
                "MISS"
            }
        );
        let _ = r.changes;
    }
    if let [first, .., last] = results.as_slice() {
        let ratio =
            |r: &Run| r.bytes_sent as f64 / (r.raw_change_bytes * (r.nodes as u64 - 1)) as f64;
        println!(
            "growth {} -> {} nodes ({:.1}x the nodes): bytes on the wire {:.2}x ({:.2}x per receiving node), wire/raw {:.2}x -> {:.2}x, convergence {:.0} ms -> {:.0} ms ({:.2}x), round trips {} -> {}",
            first.nodes,
            last.nodes,
            last.nodes as f64 / first.nodes as f64,
            last.bytes_sent as f64 / first.bytes_sent as f64,
            (last.bytes_sent as f64 / (last.nodes - 1) as f64)
                / (first.bytes_sent as f64 / (first.nodes - 1) as f64),
            ratio(first),
            ratio(last),
            first.converge_ms,
            last.converge_ms,
            last.converge_ms / first.converge_ms.max(1.0),
            first.round_trips,
            last.round_trips
        );
    }
}
