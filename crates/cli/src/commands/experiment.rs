//! `experiment new|list|show|status`, `council approve|reject`, `budget allocate|list` and `learnings add|search`.

use clap::Subcommand;
use model::{
    Approval, Audience, Budget, Decision, Experiment, ExperimentStatus, Hypothesis, Learning,
    Variant,
};
use registry::Op;

use super::federation::map_write;
use node::Node;

use crate::context::{Context, input, now_ms};
use crate::exit::{self, input_error};

/// `experiment` subcommands.
#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Register an experiment of this pod.
    New(Box<NewExperiment>),
    /// List experiments.
    List,
    /// Show one experiment.
    Show {
        /// Experiment key.
        key: String,
    },
    /// Change the status of an experiment of this pod.
    Status {
        /// Experiment key.
        key: String,
        /// draft, running, stopped or concluded.
        status: String,
    },
    /// Analyse an experiment of this pod and store its signed result summary (marks it concluded).
    Conclude(super::events::ConcludeArgs),
}

/// Arguments of `experiment new`.
#[derive(Debug, clap::Args)]
pub struct NewExperiment {
    /// Experiment key (lowercase slug; also the assignment seed).
    #[arg(long)]
    key: String,
    /// "if X then Y because Z".
    #[arg(long)]
    hypothesis: String,
    /// acquisition, activation, retention, revenue or referral.
    #[arg(long, default_value = "activation")]
    funnel_stage: String,
    /// Audience region.
    #[arg(long)]
    region: Option<String>,
    /// Audience segment.
    #[arg(long)]
    segment: Option<String>,
    /// Variant keys, comma separated.
    #[arg(long, default_value = "control,treatment", value_delimiter = ',')]
    variants: Vec<String>,
    /// Weights, comma separated (default: equal).
    #[arg(long, value_delimiter = ',')]
    weights: Vec<f64>,
    /// Primary metric key.
    #[arg(long)]
    primary_metric: Option<String>,
    /// Guardrail metric key; repeat.
    #[arg(long = "guardrail")]
    guardrails: Vec<String>,
    /// Planned start, YYYY-MM-DD.
    #[arg(long)]
    start: Option<String>,
    /// Planned end, YYYY-MM-DD.
    #[arg(long)]
    end: Option<String>,
    /// Planned cost.
    #[arg(long, default_value_t = 0.0)]
    cost: f64,
}

/// `council` subcommands.
#[derive(Debug, Subcommand)]
pub enum CouncilCommand {
    /// Approve a high-impact or overlapping experiment.
    Approve {
        /// Experiment key.
        experiment: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject an experiment.
    Reject {
        /// Experiment key.
        experiment: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Set the cost above which an experiment of a quarter is high-impact.
    Threshold {
        /// Quarter, e.g. 2026Q4.
        #[arg(long)]
        quarter: String,
        /// Cost threshold.
        #[arg(long)]
        cost: f64,
    },
}

/// `budget` subcommands.
#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// Allocate a pod's budget for a quarter (council).
    Allocate {
        /// Pod.
        #[arg(long)]
        pod: String,
        /// Quarter.
        #[arg(long)]
        quarter: String,
        /// Amount.
        #[arg(long)]
        amount: f64,
    },
    /// Budgets with spend (sum of experiment costs starting in the quarter).
    List,
}

/// `learnings` subcommands.
#[derive(Debug, Subcommand)]
pub enum LearningsCommand {
    /// Share a learning (pods and partners).
    Add {
        /// Title.
        #[arg(long)]
        title: String,
        /// What was learnt.
        #[arg(long)]
        body: String,
        /// win, loss or inconclusive.
        #[arg(long)]
        outcome: Option<String>,
        /// Tag; repeat.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Experiment key it is about.
        #[arg(long)]
        experiment: Option<String>,
    },
    /// Search learnings (all of them when the query is empty).
    Search {
        /// Words to look for.
        #[arg(default_value = "")]
        query: String,
    },
}

/// Runs an `experiment` subcommand.
pub fn experiment(
    context: &Context,
    node: &mut Node,
    command: ExperimentCommand,
) -> anyhow::Result<u8> {
    match command {
        ExperimentCommand::New(args) => {
            let view = node.view();
            let mut experiment = build(*args, node.identity().public_key)?;
            input(experiment.validate())?;
            let quarter = experiment.start_date.as_deref().and_then(quarter_of);
            let threshold = quarter.and_then(|q| view.high_impact_thresholds.get(&q).copied());
            experiment.high_impact = threshold.is_some_and(|t| experiment.cost > t);
            experiment.overlaps_with =
                model::overlap::overlapping(&experiment, view.experiments.values());
            let outcome = node
                .write(&Op::NewExperiment(experiment.clone()), now_ms())
                .map_err(map_write)?;
            let value = serde_json::json!({
                "change": outcome.change, "heads": outcome.heads,
                "high_impact": experiment.high_impact, "overlaps_with": experiment.overlaps_with,
                "needs_approval": experiment.high_impact || !experiment.overlaps_with.is_empty(),
            });
            context.print(&value, |v| {
                outln!(
                    context,
                    "experiment registered: change {}",
                    v["change"].as_str().unwrap_or_default()
                );
                if v["needs_approval"] == true {
                    outln!(
                        context,
                        "needs council approval (high impact: {}, overlaps: {})",
                        v["high_impact"],
                        v["overlaps_with"]
                    );
                }
            })?;
            Ok(exit::OK)
        }
        ExperimentCommand::List => {
            let view = node.view();
            let experiments: Vec<&Experiment> = view.experiments.values().collect();
            context.print(&serde_json::json!({ "experiments": experiments }), |_| {
                for e in &experiments {
                    let metric = e.primary_metric.as_deref().unwrap_or("-");
                    outln!(
                        context,
                        "{:<24} {:<10} {:<10?} {:<12} {}",
                        e.key,
                        e.pod,
                        e.status,
                        metric,
                        e.hypothesis.then
                    );
                }
            })?;
            Ok(exit::OK)
        }
        ExperimentCommand::Show { key } => {
            let view = node.view();
            let experiment = view
                .experiments
                .get(&key)
                .ok_or_else(|| input_error(format!("KEY: no experiment `{key}`")))?;
            let value = serde_json::json!({ "experiment": experiment, "approval": view.approvals.get(&key) });
            context.print(&value, |v| {
                outln!(
                    context,
                    "{}",
                    serde_json::to_string_pretty(v).unwrap_or_default()
                )
            })?;
            Ok(exit::OK)
        }
        ExperimentCommand::Status { key, status } => {
            let status: ExperimentStatus =
                serde_json::from_value(status.clone().into()).map_err(|_| {
                    input_error(format!(
                        "STATUS: `{status}` is not one of draft, running, stopped, concluded"
                    ))
                })?;
            let outcome = node
                .write(&Op::SetExperimentStatus { key, status }, now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "status set")
        }
        ExperimentCommand::Conclude(args) => super::events::conclude(context, node, args),
    }
}

fn build(args: NewExperiment, author: String) -> anyhow::Result<Experiment> {
    let weights = if args.weights.is_empty() {
        vec![1.0 / args.variants.len().max(1) as f64; args.variants.len()]
    } else if args.weights.len() == args.variants.len() {
        args.weights
    } else {
        return Err(input_error(format!(
            "--weights: {} weights for {} variants",
            args.weights.len(),
            args.variants.len()
        )));
    };
    Ok(Experiment {
        key: args.key,
        pod: String::new(),
        hypothesis: Hypothesis::parse(&args.hypothesis),
        funnel_stage: input(args.funnel_stage.parse())?,
        audience: Audience {
            region: args.region,
            segment: args.segment,
        },
        variants: args
            .variants
            .into_iter()
            .zip(weights)
            .map(|(key, weight)| Variant { key, weight })
            .collect(),
        primary_metric: args.primary_metric,
        guardrail_metrics: args.guardrails,
        start_date: args.start,
        end_date: args.end,
        cost: args.cost,
        status: ExperimentStatus::Draft,
        high_impact: false,
        overlaps_with: Vec::new(),
        created_by: author,
        created_at_ms: now_ms(),
    })
}

/// `2026-11-25` -> `2026Q4`.
fn quarter_of(date: &str) -> Option<String> {
    let month: u32 = date.get(5..7)?.parse().ok()?;
    Some(format!(
        "{}Q{}",
        date.get(..4)?,
        (month.clamp(1, 12) - 1) / 3 + 1
    ))
}

/// Runs a `council` subcommand.
pub fn council(context: &Context, node: &mut Node, command: CouncilCommand) -> anyhow::Result<u8> {
    let (op, what) = match command {
        CouncilCommand::Approve { experiment, reason }
        | CouncilCommand::Reject { experiment, reason }
            if !node.view().experiments.contains_key(&experiment) =>
        {
            let _ = reason;
            return Err(input_error(format!(
                "EXPERIMENT: no experiment `{experiment}`"
            )));
        }
        CouncilCommand::Approve { experiment, reason } => (
            decision(node, experiment, Decision::Approved, reason),
            "experiment approved",
        ),
        CouncilCommand::Reject { experiment, reason } => (
            decision(node, experiment, Decision::Rejected, reason),
            "experiment rejected",
        ),
        CouncilCommand::Threshold { quarter, cost } => {
            input(model::validate_quarter("--quarter", &quarter))?;
            (Op::SetThreshold { quarter, cost }, "threshold set")
        }
    };
    let outcome = node.write(&op, now_ms()).map_err(map_write)?;
    context.print_write(&outcome, what)
}

fn decision(node: &node::Node, experiment: String, decision: Decision, reason: String) -> Op {
    Op::Decide(Approval {
        experiment,
        decision,
        reason,
        by: node.identity().public_key,
        at_ms: now_ms(),
    })
}

/// Runs a `budget` subcommand.
pub fn budget(context: &Context, node: &mut Node, command: BudgetCommand) -> anyhow::Result<u8> {
    match command {
        BudgetCommand::Allocate {
            pod,
            quarter,
            amount,
        } => {
            input(model::validate_slug("--pod", &pod))?;
            input(model::validate_quarter("--quarter", &quarter))?;
            if !(amount.is_finite() && amount >= 0.0) {
                return Err(input_error("--amount: must be a number >= 0"));
            }
            let budget = Budget {
                pod,
                quarter,
                allocated: amount,
                bonus: 0.0,
                rollover: 0.0,
                by: node.identity().public_key,
            };
            let outcome = node
                .write(&Op::AllocateBudget(budget), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "budget allocated")
        }
        BudgetCommand::List => {
            let view = node.view();
            let rows: Vec<serde_json::Value> = view
                .budgets
                .values()
                .map(|b| {
                    let spent: f64 = view
                        .experiments
                        .values()
                        .filter(|e| e.pod == b.pod && e.start_date.as_deref().and_then(quarter_of).as_ref() == Some(&b.quarter))
                        .map(|e| e.cost)
                        .sum();
                    serde_json::json!({ "pod": b.pod, "quarter": b.quarter, "allocated": b.allocated, "spent": spent,
                        "remaining": b.allocated + b.bonus + b.rollover - spent })
                })
                .collect();
            context.print(&serde_json::json!({ "budgets": rows }), |_| {
                for r in &rows {
                    outln!(
                        context,
                        "{} {} allocated {} spent {} remaining {}",
                        r["pod"],
                        r["quarter"],
                        r["allocated"],
                        r["spent"],
                        r["remaining"]
                    );
                }
            })?;
            Ok(exit::OK)
        }
    }
}

/// Runs a `learnings` subcommand.
pub fn learnings(
    context: &Context,
    node: &mut Node,
    command: LearningsCommand,
) -> anyhow::Result<u8> {
    match command {
        LearningsCommand::Add {
            title,
            body,
            outcome,
            tags,
            experiment,
        } => {
            let learning = Learning {
                id: node.new_id("learning", &title, now_ms()),
                title,
                body,
                outcome: outcome.map(|o| input(o.parse())).transpose()?,
                tags,
                experiment,
                source: String::new(),
                author: node.identity().public_key,
                created_at_ms: now_ms(),
            };
            input(learning.validate())?;
            let outcome = node
                .write(&Op::AddLearning(learning), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "learning shared")
        }
        LearningsCommand::Search { query } => {
            let view = node.view();
            let hits: Vec<&Learning> = if query.trim().is_empty() {
                view.learnings.values().collect()
            } else {
                view.search_learnings(&query)
            };
            context.print(&serde_json::json!({ "learnings": hits }), |_| {
                for l in &hits {
                    outln!(
                        context,
                        "{:<16} {:<18} {}\n    {}",
                        l.source,
                        l.id,
                        l.title,
                        l.body
                    );
                }
            })?;
            Ok(exit::OK)
        }
    }
}
