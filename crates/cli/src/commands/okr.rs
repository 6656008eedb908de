//! `okr objective add|list` (council) and `okr kr add|update|list` (pods).

use clap::Subcommand;
use model::{KeyResult, Objective};
use registry::Op;

use super::federation::map_write;
use node::Node;

use crate::context::{Context, input, now_ms};
use crate::exit::{self, input_error};

/// `okr` subcommands.
#[derive(Debug, Subcommand)]
pub enum OkrCommand {
    /// Company objectives (council).
    #[command(subcommand)]
    Objective(ObjectiveCommand),
    /// Key results (the owning pod).
    #[command(subcommand)]
    Kr(KrCommand),
}

/// `okr objective` subcommands.
#[derive(Debug, Subcommand)]
pub enum ObjectiveCommand {
    /// Add an objective.
    Add {
        /// What the company wants.
        #[arg(long)]
        title: String,
        /// Quarter, e.g. 2026Q4.
        #[arg(long)]
        quarter: String,
        /// North-Star metric it moves.
        #[arg(long)]
        north_star: Option<String>,
        /// Target of that metric.
        #[arg(long)]
        target: Option<f64>,
    },
    /// List objectives.
    List,
}

/// `okr kr` subcommands.
#[derive(Debug, Subcommand)]
pub enum KrCommand {
    /// Add a key result of this pod.
    Add {
        /// Objective id it serves.
        #[arg(long)]
        objective: String,
        /// Metric it is measured by.
        #[arg(long)]
        metric: String,
        /// Target value.
        #[arg(long)]
        target: f64,
        /// Starting value.
        #[arg(long, default_value_t = 0.0)]
        baseline: f64,
    },
    /// Set the current value of a key result of this pod.
    Update {
        /// Key result id.
        id: String,
        /// Current value.
        #[arg(long)]
        current: f64,
    },
    /// List key results.
    List,
}

/// Runs an `okr` subcommand.
pub fn run(context: &Context, node: &mut Node, command: OkrCommand) -> anyhow::Result<u8> {
    match command {
        OkrCommand::Objective(ObjectiveCommand::Add {
            title,
            quarter,
            north_star,
            target,
        }) => {
            let objective = Objective {
                id: node.new_id("obj", &title, now_ms()),
                title,
                quarter,
                north_star_metric: north_star,
                target,
                created_by: node.identity().public_key,
            };
            input(objective.validate())?;
            let outcome = node
                .write(&Op::AddObjective(objective), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "objective added")
        }
        OkrCommand::Objective(ObjectiveCommand::List) => {
            let view = node.view();
            let objectives: Vec<&Objective> = view.objectives.values().collect();
            context.print(&serde_json::json!({ "objectives": objectives }), |_| {
                for o in &objectives {
                    outln!(context, "{}  {}  {}", o.id, o.quarter, o.title);
                }
            })?;
            Ok(exit::OK)
        }
        OkrCommand::Kr(KrCommand::Add {
            objective,
            metric,
            target,
            baseline,
        }) => {
            if !node.view().objectives.contains_key(&objective) {
                return Err(input_error(format!(
                    "--objective: no objective `{objective}`"
                )));
            }
            if !target.is_finite() || !baseline.is_finite() {
                return Err(input_error("--target/--baseline: must be finite numbers"));
            }
            let kr = KeyResult {
                id: node.new_id("kr", &metric, now_ms()),
                objective,
                pod: String::new(),
                metric,
                baseline,
                target,
                current: None,
                updated_at_ms: now_ms(),
                window_days: model::okr::DEFAULT_KEY_RESULT_WINDOW_DAYS,
            };
            let outcome = node
                .write(&Op::AddKeyResult(kr), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "key result added")
        }
        OkrCommand::Kr(KrCommand::Update { id, current }) => {
            if !current.is_finite() {
                return Err(input_error("--current: must be a finite number"));
            }
            let op = Op::UpdateKeyResult {
                id,
                current,
                updated_at_ms: now_ms(),
            };
            let outcome = node.write(&op, now_ms()).map_err(map_write)?;
            context.print_write(&outcome, "key result updated")
        }
        OkrCommand::Kr(KrCommand::List) => {
            let view = node.view();
            let krs: Vec<&KeyResult> = view.key_results.values().collect();
            context.print(&serde_json::json!({ "key_results": krs }), |_| {
                for k in &krs {
                    let progress = k
                        .progress()
                        .map(|p| format!("{:.0}%", p * 100.0))
                        .unwrap_or_else(|| "-".into());
                    outln!(
                        context,
                        "{}  {:<10} {:<20} {} -> {}  {progress}",
                        k.id,
                        k.pod,
                        k.metric,
                        k.baseline,
                        k.target
                    );
                }
            })?;
            Ok(exit::OK)
        }
    }
}
