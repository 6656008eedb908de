//! `growthmesh stats ...`: a calculator over sufficient statistics (owned by the stats work).

/// Statistics calculator subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StatsCommand {}

/// Runs a `stats` subcommand and returns the exit status.
pub fn run(command: StatsCommand, _json: bool) -> anyhow::Result<u8> {
    match command {}
}
