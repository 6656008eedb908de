//! Deterministic mode at scale: the same federation shape (two regions, a council node and eight pods writing,
//! every other node a read-only replica) with 100, 1,000 and 5,000 nodes. One region is cut off for 20 s while the
//! pods write, then the split heals and the writes stop. Reports the wall time per simulated minute, the pull round
//! trips and the time honest nodes took to agree after the heal, traffic per node, and each figure's ratio to the
//! smallest run, with the growth exponent it implies (ratio = (N / N0)^k).
//!
//! `cargo bench -p sim --bench scale -- [--nodes 100,1000,5000] [--seed 1]`

#![allow(clippy::print_stdout)] // a benchmark harness prints its figures

use std::time::Instant;

/// Simulated run length and schedule (virtual ms).
const DURATION_MS: u64 = 60_000;
const SPLIT_AT_MS: u64 = 5_000;
const HEAL_AT_MS: u64 = 25_000;
const ANNOUNCE_INTERVAL_MS: u64 = 3_000;
/// The invariants column says whether honest nodes agreed before the run ended.
const CONVERGE_WITHIN_MS: u64 = DURATION_MS - HEAL_AT_MS;

fn scenario(nodes: usize) -> sim::Scenario {
    let writers = 1 + 4 + 4;
    let observers = nodes.saturating_sub(writers);
    let (emea, apac) = (observers / 2, observers - observers / 2);
    let text = format!(
        r#"
name = "scale-{nodes}"
duration_ms = {DURATION_MS}
converge_within_ms = {CONVERGE_WITHIN_MS}
tick_ms = 100

[network]
latency_ms = [5, 80]
drop = 0.01
fanout = 6
announce_interval_ms = {ANNOUNCE_INTERVAL_MS}

[[region]]
name = "emea"
council = 1
pods = 4
observers = {emea}

[[region]]
name = "apac"
pods = 4
observers = {apac}

[workload]
write_probability = 0.02
stop_at_ms = {HEAL_AT_MS}

[[schedule]]
at_ms = {SPLIT_AT_MS}
action = "partition"
sides = [["emea"], ["apac"]]

[[schedule]]
at_ms = {HEAL_AT_MS}
action = "heal"
"#
    );
    sim::Scenario::parse(&text, "bench").expect("the bench scenario is valid")
}

struct Run {
    nodes: usize,
    wall_s: f64,
    heal_rounds: u64,
    heal_ms: Option<u64>,
    messages: u64,
    bytes: u64,
    changes: u64,
    ok: bool,
}

fn run(nodes: usize, seed: u64) -> Run {
    let scenario = scenario(nodes);
    let started = Instant::now();
    let report = sim::run_deterministic(&scenario, "bench", Some(seed), sim::InjectedBug::None);
    let wall_s = started.elapsed().as_secs_f64();
    let heal = report
        .phases
        .iter()
        .find(|p| p.name == "heal")
        .expect("the scenario heals");
    Run {
        nodes: report.nodes,
        wall_s,
        heal_rounds: heal.rounds,
        heal_ms: heal.converged_at_ms.map(|t| t - heal.start_ms),
        messages: report.messages,
        bytes: report.bytes,
        changes: report.changes,
        ok: report.ok(),
    }
}

/// The exponent k with `ratio = (n / n0)^k`.
fn exponent(ratio: f64, n: usize, n0: usize) -> f64 {
    ratio.ln() / (n as f64 / n0 as f64).ln()
}

#[derive(clap::Parser)]
#[command(about = "the deterministic simulator at scale: seconds of work per simulated minute")]
struct Args {
    /// Node counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    nodes: Vec<usize>,
    /// Scenario seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let Args {
        nodes: counts,
        seed,
        ..
    } = clap::Parser::parse();
    let minutes = DURATION_MS as f64 / 60_000.0;
    println!(
        "deterministic mode at scale (seed {seed}): {} simulated s, split {}-{} s, writes stop at the heal",
        DURATION_MS / 1000,
        SPLIT_AT_MS / 1000,
        HEAL_AT_MS / 1000
    );
    println!(
        "{:>6} {:>12} {:>13} {:>12} {:>13} {:>13} {:>14} {:>8} {:>10}",
        "nodes",
        "wall s/min",
        "heal rounds",
        "rounds/node",
        "heal→agree",
        "msgs/node",
        "bytes/node",
        "changes",
        "invariants"
    );
    let mut runs = Vec::new();
    for nodes in counts {
        let r = run(nodes, seed);
        println!(
            "{:>6} {:>12.2} {:>13} {:>12.1} {:>13} {:>13.0} {:>14.0} {:>8} {:>10}",
            r.nodes,
            r.wall_s / minutes,
            r.heal_rounds,
            r.heal_rounds as f64 / r.nodes as f64,
            r.heal_ms
                .map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms")),
            r.messages as f64 / r.nodes as f64,
            r.bytes as f64 / r.nodes as f64,
            r.changes,
            if r.ok { "hold" } else { "FAIL" }
        );
        runs.push(r);
    }
    let Some(base) = runs.first() else {
        return;
    };
    println!(
        "growth against {} nodes (ratio, and k in ratio = (N/{})^k):",
        base.nodes, base.nodes
    );
    for r in runs.iter().skip(1) {
        let wall = r.wall_s / base.wall_s;
        let rounds = r.heal_rounds as f64 / base.heal_rounds.max(1) as f64;
        let time = match (r.heal_ms, base.heal_ms) {
            (Some(a), Some(b)) if b > 0 => {
                let ratio = a as f64 / b as f64;
                format!(
                    "{ratio:.2}x (k = {:.2})",
                    exponent(ratio, r.nodes, base.nodes)
                )
            }
            _ => "n/a".into(),
        };
        println!(
            "  {:>5} nodes ({:.0}x): wall time {:.2}x (k = {:.2}); heal round trips {:.2}x (k = {:.2}); time to agree after the heal {time}",
            r.nodes,
            r.nodes as f64 / base.nodes as f64,
            wall,
            exponent(wall, r.nodes, base.nodes),
            rounds,
            exponent(rounds, r.nodes, base.nodes),
        );
    }
}
