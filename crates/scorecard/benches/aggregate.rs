//! A council aggregating pods that publish every second: each simulated second, every pod's new signed snapshot is
//! offered to the board (parse, signature, membership, newer-than-held) and tier 1 is recomputed from the board.
//! Reports the CPU share of one core the council spends (busy time over the simulated seconds), the p95 latency
//! from a second's first snapshot to the aggregated view that includes the second's last one, and, as the baseline
//! in the same run, the bare cost of verifying one snapshot's signature (the ratio says what the rules add).
//!
//! Gossip delivery is not in the latency: it is what the board and aggregation add on the council's side.
//!
//! `cargo bench -p scorecard --bench aggregate -- [--pods 200] [--seconds 20]`

#![allow(clippy::print_stdout)] // a benchmark harness prints its figures

use std::time::{Duration, Instant};

use identity::Keypair;
use model::okr::Quarter;
use model::{RegistryView, Role};
use scorecard::{Board, Dashboard, Metric, Snapshot, company, sign};

#[derive(clap::Parser)]
#[command(
    about = "a council aggregating pods that publish every second: CPU share and p95 latency"
)]
struct Args {
    /// Pods publishing.
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 20)]
    seconds: usize,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn snapshot(pod: usize, second: usize, start_ms: i64) -> Snapshot {
    let x = (pod * 7 + second) as f64;
    Snapshot {
        federation: "fed".into(),
        pod: format!("pod-{pod}"),
        quarter: "2026Q4".into(),
        as_of_ms: start_ms + second as i64 * 1_000,
        metrics: [
            "kr_progress",
            "velocity_days",
            "experiments",
            "significant_share",
            "budget_used",
        ]
        .iter()
        .map(|name| Metric {
            name: (*name).into(),
            value: Some(x % 10.0 / 10.0),
            target: None,
            interval: None,
            chance_to_win: None,
        })
        .collect(),
        dashboard: Dashboard {
            cycle_time_days: Some(12.0 + x % 5.0),
            dependency_ratio: Some(x % 3.0 / 3.0),
            revenue: Some(1_000.0 * (x % 4.0)),
            compliance_incidents: (x % 2.0) as u64,
            unit_nps: Some(20.0),
            pulse: scorecard::Pulse {
                promoters: 3,
                passives: 1,
                detractors: 1,
            },
            stage_progress: [("activation".to_owned(), x % 10.0 / 10.0)].into(),
        },
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn main() {
    let Args { pods, seconds, .. } = clap::Parser::parse();
    let keys: Vec<Keypair> = (0..pods)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            Keypair::from_seed(seed)
        })
        .collect();
    let mut view = RegistryView {
        federation: Some(model::Federation {
            id: "fed".into(),
            name: "bench".into(),
            founder: String::new(),
        }),
        ..RegistryView::default()
    };
    for (i, key) in keys.iter().enumerate() {
        let hex = key.public().to_hex();
        let member: model::Member = serde_json::from_value(serde_json::json!({
            "public_key": hex, "name": format!("pod-{i}"), "role": Role::Pod, "scope": format!("pod-{i}"),
            "admitted_by": "", "admitted_at_ms": 0, "revoked": false,
        }))
        .expect("a member");
        view.members.insert(hex, member);
    }
    let quarter: Quarter = "2026Q4".parse().expect("a quarter");
    let start_ms = quarter.start_ms() + 86_400_000;
    println!(
        "scorecard aggregation: {pods} pods publishing every second, {seconds} s (signing is the pods' cost, done beforehand)"
    );
    let published: Vec<Vec<Vec<u8>>> = (0..seconds)
        .map(|s| {
            keys.iter()
                .enumerate()
                .map(|(p, key)| sign(&snapshot(p, s, start_ms), key))
                .collect()
        })
        .collect();

    // Baseline: verifying every snapshot's signature and nothing else.
    let started = Instant::now();
    for second in &published {
        for bytes in second {
            scorecard::open(bytes).expect("valid");
        }
    }
    let verify_only = started.elapsed();

    let mut board = Board::new();
    let mut busy = Duration::ZERO;
    let mut latencies = Vec::with_capacity(seconds);
    let mut last_tier = Vec::new();
    for (s, second) in published.iter().enumerate() {
        let now = start_ms + s as i64 * 1_000;
        let started = Instant::now();
        for bytes in second {
            board
                .offer(bytes, &view, now)
                .expect("a valid, newer snapshot");
        }
        let cards = board.standing(&view);
        last_tier = company(cards.values().map(|c| &c.snapshot), &view, quarter, now);
        let took = started.elapsed();
        busy += took;
        latencies.push(took);
    }
    latencies.sort();
    let share = busy.as_secs_f64() / seconds as f64;
    let p95 = percentile(&latencies, 0.95);
    let per_snapshot = busy.as_secs_f64() / (pods * seconds) as f64;
    let verify_each = verify_only.as_secs_f64() / (pods * seconds) as f64;
    println!(
        "board + tier 1: {:.1} us per snapshot; signature check alone (baseline): {:.1} us; ratio {:.2}x",
        per_snapshot * 1e6,
        verify_each * 1e6,
        per_snapshot / verify_each
    );
    println!(
        "council CPU: {:.2}% of one core; p95 from a second's first snapshot to its aggregated view: {:.2} ms",
        100.0 * share,
        p95.as_secs_f64() * 1e3
    );
    assert_eq!(
        board.standing(&view).len(),
        pods,
        "every pod's newest snapshot is held"
    );
    assert!(last_tier.len() <= scorecard::MAX_METRICS_PER_TIER);
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "{} CPU share under 10% ({:.2}%); {} p95 latency under 2 s ({:.2} ms)",
        verdict(share < 0.10),
        100.0 * share,
        verdict(p95 < Duration::from_secs(2)),
        p95.as_secs_f64() * 1e3
    );
}
