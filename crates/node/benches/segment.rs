//! Segment tracking API throughput: a seeded set of `--events` track calls (default 200,000; `--quick` 20,000)
//! posted to a running node's `POST /v1/batch` in batches of 100, gzipped, with a source's write key (HTTP over
//! loopback, Basic auth, inflate, request checks, the node's actor, schema checks, idempotency, sled, flush per
//! request), against a baseline in the same run: `ingest` of the same lines from a file into another node.
//! Prints events per second of both and their ratio.
//!
//! The batches are compressed before the clock starts (compression is the sender's cost). One sender posts them
//! one after another, as one SDK's consumer thread does; `--senders N` runs N such senders at once.
//!
//! Run: `cargo bench -p node --bench segment -- [--quick] [--events N] [--senders N]`.
#![allow(clippy::print_stdout)]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use analysis::generate;
use common::{approve_schemas, now_ms};
use node::Node;
use node::actor::{ExecRequest, ExecResponse, NetworkStatus};

/// Calls per request, as Segment's SDKs batch them by default.
const BATCH_CALLS: usize = 100;

fn exec(_: &mut Node, _: &ExecRequest, _: &NetworkStatus) -> ExecResponse {
    ExecResponse {
        status: 2,
        stdout: String::new(),
        stderr: "the bench runs no commands".into(),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

#[derive(clap::Parser)]
#[command(about = "POST /v1/batch throughput against ingest of the same lines from a file")]
struct Args {
    /// Calls to generate and send (default 200,000; 20,000 with --quick).
    #[arg(long)]
    events: Option<u64>,
    /// A smaller run.
    #[arg(long)]
    quick: bool,
    /// Senders posting at once.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args: Args = clap::Parser::parse();
    let events = args
        .events
        .unwrap_or(if args.quick { 20_000 } else { 200_000 });
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.jsonl");
    let config = generate::Config {
        lift: 0.1,
        ..generate::Config::new("checkout", (events / 10).max(1), events, 11)
    };
    let written = generate::generate(
        &config,
        &mut BufWriter::new(File::create(&file).expect("temp file")),
    )
    .expect("generated");
    let lines: Vec<Vec<u8>> = BufReader::new(File::open(&file).expect("the file"))
        .split(b'\n')
        .map(|line| line.expect("read"))
        .filter(|line| !line.is_empty())
        .collect();
    let bodies: Vec<Vec<u8>> = lines
        .chunks(BATCH_CALLS)
        .map(|chunk| {
            let mut body = b"{\"batch\":[".to_vec();
            for (i, line) in chunk.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(line);
            }
            body.extend_from_slice(b"]}");
            gzip(&body)
        })
        .collect();
    let gzipped: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "segment bench: {} calls, {:.1} MiB of JSONL, {} gzipped batches of {BATCH_CALLS} ({:.1} MiB), {} sender(s)",
        written.lines,
        written.bytes as f64 / (1 << 20) as f64,
        bodies.len(),
        gzipped as f64 / (1 << 20) as f64,
        args.senders
    );

    // Baseline: the same lines ingested from the file.
    let mut baseline_node = Node::open(&dir.path().join("baseline")).expect("a node");
    approve_schemas(&mut baseline_node);
    let started = Instant::now();
    let mut ingestor = baseline_node.ingestor(now_ms()).expect("an ingestor");
    let mut reader = BufReader::with_capacity(1 << 16, File::open(&file).expect("the file"));
    ingestor.read("events.jsonl", &mut reader).expect("read");
    let report = ingestor.finish().expect("stored");
    let baseline = started.elapsed().as_secs_f64();
    assert_eq!(report.accepted, written.lines, "{report:?}");
    drop(baseline_node);

    // The node under test, running, with an app source.
    let node_dir = dir.path().join("node");
    let write_key = {
        let mut node = Node::open(&node_dir).expect("a node");
        approve_schemas(&mut node);
        node.add_source("bench", now_ms())
            .expect("a source")
            .write_key
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = node::config::Config {
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        mdns: false,
        ..Default::default()
    };
    let daemon_dir = node_dir.clone();
    let daemon = runtime.spawn(async move {
        node::daemon::run(&daemon_dir, config, Arc::new(exec), async {
            let _ = stopped.await;
        })
        .await
        .expect("the node runs");
    });
    let remote = node::remote::wait_for(&node_dir).expect("the API is up");
    let url = format!("http://{}/v1/batch", remote.addr());
    let auth = {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
        )
    };

    let started = Instant::now();
    let per_sender = bodies.len().div_ceil(args.senders.max(1));
    let accepted: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .chunks(per_sender.max(1))
            .map(|share| {
                let (url, auth) = (&url, &auth);
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(Duration::from_secs(60)))
                        .build()
                        .into();
                    let mut accepted = 0;
                    for body in share {
                        let mut response = agent
                            .post(url)
                            .header("Authorization", auth)
                            .header("Content-Type", "application/json")
                            .header("Content-Encoding", "gzip")
                            .send(&body[..])
                            .expect("the node takes the batch");
                        let report: serde_json::Value =
                            response.body_mut().read_json().expect("a JSON answer");
                        accepted += report["accepted"].as_u64().unwrap_or_default();
                    }
                    accepted
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("sender")).sum()
    });
    let ours = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    runtime.block_on(daemon).expect("the node stops");
    assert_eq!(accepted, written.lines, "every call stored once");

    let rate = |seconds: f64| written.lines as f64 / seconds;
    println!(
        "  POST /v1/batch (gzip, {BATCH_CALLS} per request): {:>9.0} events/s  ({ours:.2} s, {:.0} requests/s)",
        rate(ours),
        bodies.len() as f64 / ours
    );
    println!(
        "  baseline: ingest of the same lines from a file: {:>9.0} events/s  ({baseline:.2} s)",
        rate(baseline)
    );
    println!("  ratio batch/ingest: {:.2}", baseline / ours);
}
