//! The partition simulator: scenario files, a deterministic engine over the production registry and sync code, and
//! the report with its invariants.
//!
//! # Layout
//! - `scenario.rs`: the TOML scenario format and its validation.
//! - `deterministic.rs`: many nodes, one seeded generator, a virtual clock, an in-memory network with faults.
//! - `report.rs`: per-phase figures, invariants, text and JSON.

pub mod deterministic;
pub mod report;
pub mod scenario;

pub use deterministic::InjectedBug;
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
    match outcome {
        Ok(report) => report,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".into());
            Report {
                scenario: scenario.name.clone(),
                mode: "deterministic".into(),
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
            }
        }
    }
}
