//! `growthmesh assign ...`: GrowthBook-compatible deterministic assignment (owned by the assign work).

/// Arguments of `growthmesh assign`.
#[derive(Debug, clap::Args)]
pub struct AssignArgs {}

/// Runs `assign` and returns the exit status.
pub fn run(_args: AssignArgs, _json: bool) -> anyhow::Result<u8> {
    anyhow::bail!("assign is not built yet")
}
