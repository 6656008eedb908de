//! `growthmesh sim SCENARIO.toml [--seed N] [--mode deterministic|real] [--json]`: run a partition scenario and check
//! its invariants. Exit 0 when every invariant holds, 1 when one fails, 2 for an unusable scenario file.

use std::path::PathBuf;

use clap::Args;

use crate::exit::{self, input_error};

/// Arguments of `sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Scenario file (see simulations/ and docs/simulation.md).
    pub scenario: PathBuf,
    /// Seed (any u64; default: the scenario's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// deterministic (virtual clock, in-memory network); real (libp2p nodes on loopback) is not available yet.
    #[arg(long, default_value = "deterministic")]
    pub mode: String,
    /// Fault injection for testing the simulator itself: `skip-signatures` makes one honest node skip signature checks.
    #[arg(long, hide = true)]
    pub inject_bug: Option<String>,
}

/// Runs `sim`.
pub fn run(args: SimArgs, json: bool) -> anyhow::Result<u8> {
    let scenario = sim::Scenario::load(&args.scenario).map_err(|e| input_error(e.to_string()))?;
    let bug = match args.inject_bug.as_deref() {
        None => sim::InjectedBug::None,
        Some("skip-signatures") => sim::InjectedBug::SkipSignatureChecks,
        Some(other) => {
            return Err(input_error(format!(
                "--inject-bug: `{other}` is not skip-signatures"
            )));
        }
    };
    let path = args.scenario.display().to_string();
    let report = match args.mode.as_str() {
        "deterministic" => sim::run_deterministic(&scenario, &path, args.seed, bug),
        "real" => {
            return Err(input_error(
                "--mode real: not available yet (see docs/simulation.md); the network integration tests cover real nodes",
            ));
        }
        other => {
            return Err(input_error(format!(
                "--mode: `{other}` is not deterministic or real"
            )));
        }
    };
    if json {
        crate::context::print_json(&report)?;
    } else {
        print!("{}", report.to_text());
    }
    if !report.ok() {
        eprintln!("an invariant failed; replay with: {}", report.replay);
    }
    Ok(if report.ok() { exit::OK } else { exit::FAILURE })
}
