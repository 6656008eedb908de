//! The partition simulator: scenario files, a deterministic engine over the production registry and sync code, and
//! the report with its invariants.
//!
//! # Layout
//! - `scenario.rs`: the TOML scenario format and its validation.
//! - `workload.rs`: the seeded workload both modes write (which record, by whom).
//! - `deterministic.rs`: many nodes, one seeded generator, a virtual clock, an in-memory network with faults. No I/O,
//!   no wall clock.
//! - `real/`: the same scenario against real `node::daemon` instances on 127.0.0.1 (libp2p, sled in temp dirs), on
//!   the wall clock: `cluster.rs` founds the data dirs and starts, stops and talks to the daemons, `driver.rs` walks
//!   the schedule and watches the nodes, `hostile.rs` is the raw libp2p client a hostile node becomes, `verdict.rs`
//!   judges the invariants from the stores the run left.
//! - `report.rs`: per-phase figures, invariants, text and JSON.

pub mod attack;
pub mod deterministic;
pub mod real;
pub mod report;
pub mod scenario;
pub mod scheduled;
pub mod workload;

pub use deterministic::InjectedBug;
pub use real::{Options as RealOptions, RealError};
pub use report::{Invariant, Phase, Report};
pub use scenario::{Scenario, ScenarioError};

/// Runs `scenario` in deterministic mode with `seed` (the scenario's own seed when `None`).
pub fn run_deterministic(
    scenario: &Scenario,
    path: &str,
    seed: Option<u64>,
    bug: InjectedBug,
) -> Report {
    let seed = seed.unwrap_or(scenario.seed);
    let replay = format!("growthmesh sim {path} --seed {seed} --mode deterministic");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        deterministic::run(scenario, seed, bug, replay.clone())
    }));
    outcome.unwrap_or_else(|panic| panicked(scenario, "deterministic", seed, &*panic, replay))
}

/// Runs `scenario` with real nodes on loopback (see [`real`]) with `seed` (the scenario's own seed when `None`).
/// Fails only when the run cannot be made (an unsupported scenario, a node that does not start); a failed
/// invariant is in the report.
pub fn run_real(
    scenario: &Scenario,
    path: &str,
    seed: Option<u64>,
    options: &RealOptions,
) -> Result<Report, RealError> {
    let seed = seed.unwrap_or(scenario.seed);
    let replay = format!(
        "growthmesh sim {path} --seed {seed} --mode real --time-scale {}",
        options.time_scale
    );
    real::check(scenario, options)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        real::run(scenario, seed, options, replay.clone())
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => Ok(panicked(scenario, "real", seed, &*panic, replay)),
    }
}

/// The report of a run the simulator itself panicked in.
fn panicked(
    scenario: &Scenario,
    mode: &str,
    seed: u64,
    panic: &(dyn std::any::Any + Send),
    replay: String,
) -> Report {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into());
    Report {
        scenario: scenario.name.clone(),
        mode: mode.into(),
        seed,
        nodes: scenario.node_names().len(),
        converged: false,
        convergence_ms: None,
        simulated_ms: 0,
        messages: 0,
        bytes: 0,
        rounds: 0,
        changes: 0,
        rejected: Default::default(),
        largest_divergence: 0,
        phases: Vec::new(),
        invariants: vec![Invariant {
            name: "no node panics".into(),
            ok: false,
            detail,
        }],
        replay,
        notes: Vec::new(),
    }
}
