//! The `growthmesh` command line: clap definitions and glue from each subcommand to the library crates.
//!
//! # Layout
//! - `commands/<noun>.rs`: one module per noun, each arm calls library functions and prints.
//! - `exit.rs`: exit statuses and the input-error type that maps to status 2.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
pub mod out;
#[macro_use]
pub mod context;
pub mod commands;
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

/// Top-level subcommands: the two groups below, flattened into one list. Each group is matched exhaustively in one
/// place, so a new command cannot be missed by the dispatch.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Commands that read or write this node's store: run inside the running node when there is one.
    #[command(flatten)]
    Store(StoreCommand),
    /// Commands that run on their own: no store, or (`node`, `demo`, `sim`) processes that open their own.
    #[command(flatten)]
    Standalone(StandaloneCommand),
}

/// Commands that run on their own, never inside a running node.
#[derive(Debug, Subcommand)]
pub enum StandaloneCommand {
    /// A local federation: council, three pods and a partner, converging.
    Demo(commands::demo::DemoArgs),
    /// Run this node: replicate with peers over libp2p and serve the local API until SIGINT/SIGTERM.
    Node(commands::network::NodeArgs),
    /// Write seeded synthetic events for an experiment (no data dir needed).
    GenerateEvents(commands::events::GenerateArgs),
    /// Simulate a scenario of partitions, crashes and hostile peers, and check the invariants.
    Sim(commands::sim::SimArgs),
    /// Print a shell completion script: `growthmesh completions bash > /etc/bash_completion.d/growthmesh`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `growthmesh man > growthmesh.1 && man ./growthmesh.1`.
    Man,
}

/// Commands on this node's store, by noun (`stats` without registry flags and `assign` without a data dir need no
/// store and run on their own).
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
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
    /// Scorecards in three tiers: the company (from the pods' signed snapshots), a pod, an experiment.
    Scorecard(commands::scorecard::ScorecardArgs),
    /// The autonomy pulse a pod's members answer (its NPS is on the pod's scorecard).
    #[command(subcommand)]
    Pulse(commands::scorecard::PulseCommand),
    /// Signed experiment results: recompute and check them.
    #[command(subcommand)]
    Result(commands::result::ResultCommand),
    /// Offline bundles, the typed registry and its heads.
    #[command(subcommand)]
    Registry(commands::registry::RegistryCommand),
    /// This node: identity, heads, peers, sync state.
    Status,
    /// Connected members.
    Peers,
    /// Issue an invite ticket (council).
    Invite(commands::network::InviteArgs),
    /// Record an invite ticket; the next `node` run redeems it.
    Join(commands::network::JoinArgs),
    /// Ingest Segment `track` JSON lines into this node's store, checked against the approved schemas.
    Ingest(commands::events::IngestArgs),
    /// Lines that ingestion rejected.
    #[command(subcommand)]
    Quarantine(commands::events::QuarantineCommand),
    /// Raw events held on this node: counts, and retention.
    #[command(subcommand)]
    Events(commands::events::EventsCommand),
    /// App sources: the write and client keys an app uses instead of the admin token (this node's only).
    #[command(subcommand)]
    Source(commands::source::SourceCommand),
    /// Analyse an experiment over the stored events: lifts, p-values, chance to win, SRM, verdict.
    Analyze(commands::events::AnalyzeArgs),
}

/// Entry point of the binary: parses arguments, runs the command, maps errors to exit statuses.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let json = cli.json;
    let data_dir = cli.data_dir.clone().unwrap_or_else(node::default_data_dir);
    let result = match cli.command {
        Command::Standalone(command) => standalone(command, json, data_dir),
        Command::Store(StoreCommand::Stats(command)) if !command.needs_registry() => {
            commands::stats::run(command, json)
        }
        // Without a data dir, from the flags alone; with one, as registered there (inside its running node if any).
        Command::Store(StoreCommand::Assign(args))
            if !data_dir.join(node::DB_DIR_NAME).is_dir() =>
        {
            commands::assign::run(args, json)
        }
        Command::Store(StoreCommand::Scorecard(args)) if args.watch => {
            watch_scorecard(data_dir, json, &args)
        }
        Command::Store(command) => with_node(context::Context::terminal(data_dir, json), command),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit::status_of(&error))
        }
    }
}

/// Runs a command that needs no store (or opens its own).
fn standalone(
    command: StandaloneCommand,
    json: bool,
    data_dir: std::path::PathBuf,
) -> anyhow::Result<u8> {
    match command {
        StandaloneCommand::GenerateEvents(args) => commands::events::generate(args, json),
        StandaloneCommand::Demo(args) => commands::demo::run(args, json),
        StandaloneCommand::Node(args) => commands::network::run_node(data_dir, args),
        StandaloneCommand::Sim(args) => commands::sim::run(args, json),
        StandaloneCommand::Completions { shell } => completions(shell),
        StandaloneCommand::Man => man_page(),
    }
}

/// Runs a command that needs the node's store: in the running node when there is one, else on the store directly.
fn with_node(context: context::Context, command: StoreCommand) -> anyhow::Result<u8> {
    if let Some(remote) = node::remote::find(&context.data_dir) {
        return forward(&remote);
    }
    match node::Node::open(&context.data_dir) {
        Ok(mut node) => dispatch(&context, &mut node, command),
        Err(node::Error::Store(store::Error::Sled { .. })) => {
            match node::remote::wait_for(&context.data_dir) {
                Some(remote) => forward(&remote),
                None => anyhow::bail!(
                    "the store in {} is held by another process (a node starting or another command); try again",
                    context.data_dir.display()
                ),
            }
        }
        Err(error) => Err(anyhow::Error::new(error)
            .context(format!("opening data dir {}", context.data_dir.display()))),
    }
}

/// `scorecard --watch`: redraws in place (the screen cleared first) every [`commands::scorecard::WATCH_INTERVAL`],
/// each time from the node's current board (a running node's, through its API), until interrupted.
fn watch_scorecard(
    data_dir: std::path::PathBuf,
    json: bool,
    args: &commands::scorecard::ScorecardArgs,
) -> anyhow::Result<u8> {
    loop {
        if !json {
            // Clear the screen and go home, as `watch` does.
            crate::out::write("\x1b[2J\x1b[H");
        }
        let status = with_node(
            context::Context::terminal(data_dir.clone(), json),
            StoreCommand::Scorecard(args.clone()),
        )?;
        if status != exit::OK {
            return Ok(status);
        }
        std::thread::sleep(commands::scorecard::WATCH_INTERVAL);
    }
}

/// Hands this process's command line to the running node and relays what it printed.
fn forward(remote: &node::remote::Remote) -> anyhow::Result<u8> {
    use std::io::Write as _;
    let request = node::actor::ExecRequest {
        args: std::env::args().skip(1).collect(),
        cwd: std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
    };
    let response = remote.exec(&request)?;
    crate::out::write(&response.stdout);
    eprint!("{}", response.stderr);
    let _ = std::io::stdout().flush();
    Ok(response.status)
}

/// Runs a command line inside a running node (the daemon's `/v1/exec`), capturing its output.
pub fn exec_in_node(
    node: &mut node::Node,
    request: &node::actor::ExecRequest,
    network: &node::actor::NetworkStatus,
) -> node::actor::ExecResponse {
    let args = std::iter::once("growthmesh".to_owned()).chain(request.args.iter().cloned());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            return node::actor::ExecResponse {
                status: exit::BAD_INPUT,
                stdout: String::new(),
                stderr: error.to_string(),
            };
        }
    };
    let context = context::Context {
        data_dir: node.dir().to_path_buf(),
        json: cli.json,
        cwd: std::path::PathBuf::from(&request.cwd),
        sink: context::Sink::Buffer(Default::default()),
        network: Some(network.clone()),
    };
    let result = match cli.command {
        Command::Store(StoreCommand::Stats(command)) if !command.needs_registry() => {
            Err(exit::input_error("this command does not run inside a node"))
        }
        Command::Store(command) => dispatch(&context, node, command),
        Command::Standalone(_) => Err(exit::input_error("this command does not run inside a node")),
    };
    let (status, stderr) = match result {
        Ok(status) => (status, String::new()),
        Err(error) => (exit::status_of(&error), format!("error: {error:#}\n")),
    };
    let stdout = match context.sink {
        context::Sink::Buffer(buffer) => buffer.into_inner(),
        context::Sink::Stdout => String::new(),
    };
    node::actor::ExecResponse {
        status,
        stdout,
        stderr,
    }
}

/// Runs a command against an open node.
fn dispatch(
    context: &context::Context,
    node: &mut node::Node,
    command: StoreCommand,
) -> anyhow::Result<u8> {
    use commands::*;
    match command {
        StoreCommand::Init(args) => federation::init(context, node, args),
        StoreCommand::Federation(command) => federation::federation(context, node, command),
        StoreCommand::Member(command) => federation::member(context, node, command),
        StoreCommand::Okr(command) => okr::run(context, node, command),
        StoreCommand::Schema(command) => schema::schema(context, node, command),
        StoreCommand::Metric(command) => schema::metric(context, node, command),
        StoreCommand::Experiment(command) => experiment::experiment(context, node, command),
        StoreCommand::Council(command) => experiment::council(context, node, command),
        StoreCommand::Budget(command) => experiment::budget(context, node, command),
        StoreCommand::Learnings(command) => experiment::learnings(context, node, command),
        StoreCommand::Registry(command) => registry::run(context, node, command),
        StoreCommand::Result(command) => result::run(context, node, command),
        StoreCommand::Scorecard(args) => scorecard::run(context, node, args),
        StoreCommand::Pulse(command) => scorecard::pulse(context, node, command),
        StoreCommand::Status => network::status(context, node),
        StoreCommand::Peers => network::peers(context),
        StoreCommand::Invite(args) => network::invite(context, node, args),
        StoreCommand::Join(args) => network::join(context, node, args),
        StoreCommand::Ingest(args) => events::ingest(context, node, args),
        StoreCommand::Quarantine(command) => events::quarantine(context, node, command),
        StoreCommand::Events(command) => events::events(context, node, command),
        StoreCommand::Source(command) => source::run(context, node, command),
        StoreCommand::Analyze(args) => events::analyze(context, node, args),
        StoreCommand::Stats(command) => stats::in_registry(context, node, command),
        StoreCommand::Assign(args) => assign::in_node(context, node, args),
    }
}

/// `completions SHELL`: the completion script clap generates from the command definitions.
fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "growthmesh", &mut script);
    out::write(&String::from_utf8_lossy(&script));
    Ok(exit::OK)
}

/// `man`: the manual page clap_mangen renders from the command definitions.
fn man_page() -> anyhow::Result<u8> {
    use clap::CommandFactory as _;
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    out::write(&String::from_utf8_lossy(&page));
    Ok(exit::OK)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,libp2p_kad=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
