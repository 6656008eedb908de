//! The `growthmesh` command line: clap definitions and glue from each subcommand to the library crates.
//!
//! # Layout
//! - `commands/<noun>.rs`: one module per noun, each arm calls library functions and prints.
//! - `exit.rs`: exit statuses and the input-error type that maps to status 2.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod commands;
pub mod context;
pub mod exit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// growthmesh: a peer-to-peer network for federated growth pods.
#[derive(Debug, Parser)]
#[command(name = "growthmesh", version, about)]
pub struct Cli {
    /// Data directory of this node (default: the user's data directory).
    #[arg(long, global = true, env = "GROWTHMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print machine-readable JSON on stdout (logs go to stderr).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level subcommands, by noun.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Calculator over sufficient statistics (no data dir needed).
    #[command(subcommand)]
    Stats(commands::stats::StatsCommand),
    /// GrowthBook-compatible deterministic assignment of a user to a variation.
    Assign(commands::assign::AssignArgs),
    /// Create this node's key and data dir.
    Init(commands::federation::InitArgs),
    /// Found a federation.
    #[command(subcommand)]
    Federation(commands::federation::FederationCommand),
    /// Members and roles.
    #[command(subcommand)]
    Member(commands::federation::MemberCommand),
    /// Objectives and key results.
    #[command(subcommand)]
    Okr(commands::okr::OkrCommand),
    /// The shared event schema.
    #[command(subcommand)]
    Schema(commands::schema::SchemaCommand),
    /// Shared metric definitions.
    #[command(subcommand)]
    Metric(commands::schema::MetricCommand),
    /// The experiment registry.
    #[command(subcommand)]
    Experiment(commands::experiment::ExperimentCommand),
    /// Council decisions.
    #[command(subcommand)]
    Council(commands::experiment::CouncilCommand),
    /// Pod budgets.
    #[command(subcommand)]
    Budget(commands::experiment::BudgetCommand),
    /// Shared learnings.
    #[command(subcommand)]
    Learnings(commands::experiment::LearningsCommand),
    /// Offline bundles, the typed registry and its heads.
    #[command(subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// A local federation: council, three pods and a partner, converging.
    Demo(commands::demo::DemoArgs),
}

/// Entry point of the binary: parses arguments, runs the command, maps errors to exit statuses.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let json = cli.json;
    let context = context::Context {
        data_dir: cli.data_dir.unwrap_or_else(node::default_data_dir),
        json,
    };
    let result = match cli.command {
        Command::Stats(command) => commands::stats::run(command, json),
        Command::Assign(args) => commands::assign::run(args, json),
        Command::Init(args) => commands::federation::init(&context, args),
        Command::Federation(command) => commands::federation::federation(&context, command),
        Command::Member(command) => commands::federation::member(&context, command),
        Command::Okr(command) => commands::okr::run(&context, command),
        Command::Schema(command) => commands::schema::schema(&context, command),
        Command::Metric(command) => commands::schema::metric(&context, command),
        Command::Experiment(command) => commands::experiment::experiment(&context, command),
        Command::Council(command) => commands::experiment::council(&context, command),
        Command::Budget(command) => commands::experiment::budget(&context, command),
        Command::Learnings(command) => commands::experiment::learnings(&context, command),
        Command::Registry(command) => commands::registry::run(&context, command),
        Command::Demo(args) => commands::demo::run(args, json),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::status_of(&error))
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
