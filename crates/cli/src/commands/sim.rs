//! `growthmesh sim SCENARIO.toml [--seed N] [--mode deterministic|real] [--time-scale F] [--json]`: run a partition
//! scenario and check its invariants. Exit 0 when every invariant holds, 1 when one fails (or real nodes could not be
//! started), 2 for an unusable scenario file or one real mode cannot run.

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
    /// How to run the scenario.
    #[arg(long, value_enum, default_value_t = Mode::Deterministic)]
    pub mode: Mode,
    /// Real mode: scenario times are multiplied by this on the wall clock (default 0.1: a 120 s scenario runs in
    /// 12 s).
    #[arg(long)]
    pub time_scale: Option<f64>,
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
    let progress = crate::context::spinner(
        json,
        format!(
            "simulating {} ({} mode)",
            args.scenario.display(),
            args.mode.as_str()
        ),
    );
    let report = match args.mode {
        Mode::Deterministic if args.time_scale.is_some() => {
            return Err(input_error("--time-scale: applies to --mode real only"));
        }
        Mode::Deterministic => sim::run_deterministic(&scenario, &path, args.seed, bug),
        Mode::Real if bug != sim::InjectedBug::None => {
            return Err(input_error("--inject-bug: deterministic mode only"));
        }
        Mode::Real => {
            let options = sim::RealOptions {
                time_scale: args.time_scale.unwrap_or(sim::real::DEFAULT_TIME_SCALE),
            };
            match sim::run_real(&scenario, &path, args.seed, &options) {
                Ok(report) => report,
                Err(error @ (sim::RealError::Unsupported(_) | sim::RealError::TimeScale(_))) => {
                    return Err(input_error(format!("{path}: {error}")));
                }
                Err(error) => {
                    return Err(anyhow::Error::new(error).context("--mode real"));
                }
            }
        }
    };
    progress.finish_and_clear();
    if json {
        crate::context::print_json(&report)?;
    } else {
        crate::out::write(&report.to_text());
    }
    if !report.ok() {
        eprintln!("an invariant failed; replay with: {}", report.replay);
    }
    Ok(if report.ok() { exit::OK } else { exit::FAILURE })
}

/// How `sim` runs a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A virtual clock and an in-memory network: seconds for minutes of scenario, replayable by seed.
    Deterministic,
    /// Node daemons with libp2p and sled on 127.0.0.1, scenario time scaled by `--time-scale`.
    Real,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Deterministic => "deterministic",
            Mode::Real => "real",
        }
    }
}
