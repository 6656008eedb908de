//! Ingestion benchmark: a seeded JSONL file of `--events` track calls (default 1,000,000; `--quick` 100,000)
//! ingested through `Node::ingestor` (parse, schema check, idempotency ids, quarantine, sled batches, flush), against
//! a baseline in the same run: raw sled batch inserts of the same keys and values into a fresh database, then a
//! flush. Prints events per second of both, their ratio (target >= 0.5) and the peak resident memory (VmHWM) after
//! ingestion.
//!
//! Run: `cargo bench -p node --bench ingest -- [--quick] [--events N]`.
#![allow(clippy::print_stdout)]

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::time::Instant;

use analysis::generate;
use analysis::track::{Schemas, check_line};
use common::{approve_schemas, now_ms};
use node::Node;

const BATCH: usize = 8192;

/// Peak resident set size of this process, from /proc (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[derive(clap::Parser)]
#[command(about = "ingest throughput against plain sled writes of the same keys")]
struct Args {
    /// Lines to generate and ingest (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    events: Option<u64>,
    /// A smaller run.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args: Args = clap::Parser::parse();
    let events = args
        .events
        .unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("events.jsonl");

    let started = Instant::now();
    let config = generate::Config {
        lift: 0.1,
        ..generate::Config::new("checkout", (events / 10).max(1), events, 7)
    };
    let written = generate::generate(
        &config,
        &mut BufWriter::new(File::create(&file).expect("temp file")),
    )
    .expect("generated");
    println!(
        "ingest bench: {} lines, {:.0} MiB of JSONL (generated in {:.1} s)",
        written.lines,
        written.bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );

    let mut node = Node::open(&dir.path().join("node")).expect("a node");
    approve_schemas(&mut node);
    let now = now_ms();
    let started = Instant::now();
    let mut ingestor = node.ingestor(now).expect("an ingestor");
    let mut reader = BufReader::with_capacity(1 << 16, File::open(&file).expect("the file"));
    ingestor.read("events.jsonl", &mut reader).expect("read");
    let report = ingestor.finish().expect("stored");
    let ours = started.elapsed().as_secs_f64();
    let peak = peak_rss_mib();
    assert_eq!(report.accepted, written.lines, "{report:?}");

    let started = Instant::now();
    let mut ingestor = node.ingestor(now).expect("an ingestor");
    let mut reader = BufReader::with_capacity(1 << 16, File::open(&file).expect("the file"));
    ingestor.read("events.jsonl", &mut reader).expect("read");
    let again = ingestor.finish().expect("stored");
    let reingest = started.elapsed().as_secs_f64();
    assert_eq!(again.duplicates, written.lines);

    // The baseline's keys and values, computed outside its timing.
    let schemas = Schemas::from_view(&node.view());
    let reader = BufReader::new(File::open(&file).expect("the file"));
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = reader
        .split(b'\n')
        .map(|line| {
            let accepted = check_line(&line.expect("read"), &schemas, now).expect("valid");
            let key = store::events::event_key(
                &accepted.name,
                &accepted.user,
                accepted.timestamp_ms,
                &accepted.id,
            );
            (key, accepted.value)
        })
        .collect();
    let raw = sled::Config::new()
        .path(dir.path().join("raw"))
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("a raw sled database");
    let tree = raw.open_tree("events").expect("a tree");
    let started = Instant::now();
    for chunk in pairs.chunks(BATCH) {
        let mut batch = sled::Batch::default();
        for (key, value) in chunk {
            batch.insert(&key[..], &value[..]);
        }
        tree.apply_batch(batch).expect("raw insert");
    }
    raw.flush().expect("raw flush");
    let baseline = started.elapsed().as_secs_f64();

    let rate = |seconds: f64| written.lines as f64 / seconds;
    println!(
        "  ingest (parse, check, dedup, store, flush): {:>9.0} events/s  ({ours:.2} s)",
        rate(ours)
    );
    println!(
        "  re-ingest of the same file (all duplicates): {:>8.0} events/s  ({reingest:.2} s)",
        rate(reingest)
    );
    println!(
        "  baseline: raw sled batch inserts + flush:   {:>9.0} events/s  ({baseline:.2} s)",
        rate(baseline)
    );
    let ratio = baseline / ours;
    println!(
        "  ratio ingest/raw: {ratio:.2} (target >= 0.5: {})",
        if ratio >= 0.5 { "met" } else { "missed" }
    );
    match peak {
        Some(mib) => println!("  peak memory after ingestion (VmHWM): {mib:.0} MiB"),
        None => println!("  peak memory: /proc/self/status not readable"),
    }
}
