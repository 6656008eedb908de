//! `experiment new|list|show|status`, `council approve|reject`, `budget allocate|list` and `learnings add|search`.

use clap::Subcommand;
use governance::Governance;
use model::{
    Approval, Audience, Budget, Decision, Experiment, ExperimentStatus, Hypothesis, Learning,
    RegistryView, Setting, Variant,
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
    /// List experiments with their governance state and overlaps.
    List(ListArgs),
    /// Show one experiment: its stage, what approvals it needs and has, its overlaps, spend and ROI.
    Show {
        /// Experiment key.
        key: String,
    },
    /// Start an experiment of this pod: refused until it has the approvals it needs and its pod's quarter has the
    /// funds for its cost, which is spent now.
    Start {
        /// Experiment key.
        key: String,
    },
    /// Stop a running experiment of this pod.
    Stop {
        /// Experiment key.
        key: String,
    },
    /// Change the status of an experiment of this pod (`running` is `experiment start`, `stopped` is `experiment
    /// stop`; `concluded` is `experiment conclude`).
    Status {
        /// Experiment key.
        key: String,
        /// running or stopped.
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
    /// The funnel stage it tests.
    #[arg(long, value_enum, default_value_t = model::FunnelStage::Activation)]
    funnel_stage: model::FunnelStage,
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
    /// Assignment namespace range ID:START:END (e.g. checkout:0:0.5): experiments in disjoint ranges of one
    /// namespace never share users, so they do not overlap.
    #[arg(long)]
    namespace: Option<String>,
    /// GrowthBook hash version its users are assigned with: 1 (the SDKs' default) or 2 (unbiased; recommended).
    #[arg(long, default_value_t = model::DEFAULT_HASH_VERSION, value_parser = clap::value_parser!(u8).range(1..=2))]
    hash_version: u8,
    /// Share of users included, in (0, 1]; the others see the control and are not counted.
    #[arg(long, default_value_t = 1.0)]
    coverage: f64,
}

/// Filters of `experiment list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this stage: draft, awaiting_approval, approved, rejected, running, blocked, stopped, concluded.
    #[arg(long)]
    status: Option<String>,
    /// Only this pod's.
    #[arg(long)]
    pod: Option<String>,
    /// Only with this primary metric.
    #[arg(long)]
    metric: Option<String>,
    /// Only of this quarter (of the planned start), e.g. 2026Q4.
    #[arg(long)]
    quarter: Option<String>,
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
    /// Experiments waiting for approval, oldest first, with why they need it.
    Queue,
    /// Set how many council approvals a high-impact experiment needs (capped at the council members who may vote).
    Quorum {
        /// Approvals.
        n: u32,
    },
    /// Set the post-mortem deadline, the win bonus, the revenue metric, the scorecards' metrics or who may read the
    /// pods' scorecards (without flags: show the settings).
    Settings {
        /// Days after a conclusion without a learning until its post-mortem is overdue.
        #[arg(long)]
        postmortem_days: Option<u32>,
        /// Credited to a pod's quarter for each experiment concluded as a win (decision ship).
        #[arg(long)]
        win_bonus: Option<f64>,
        /// The metric whose lift over the exposed users is an experiment's incremental revenue (ROI).
        #[arg(long)]
        revenue_metric: Option<String>,
        /// The company scorecard's metrics, in order, comma-separated (at most 5): north_star, health_score,
        /// dependency_ratio, revenue_per_pod, compliance_incidents, cycle_time_days, unit_nps.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        tier1_metrics: Option<Vec<String>>,
        /// A pod scorecard's metrics, in order, comma-separated (at most 5): kr_progress, velocity_days,
        /// experiments, significant_share, budget_used, compliance_incidents, dependency_ratio, revenue, unit_nps.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        tier2_metrics: Option<Vec<String>>,
        /// Member keys (hex, comma-separated) that may read the pods' scorecards (tiers 2 and 3) besides the
        /// council and the pods, e.g. a partner's; an empty value lets none.
        #[arg(long, value_delimiter = ',', num_args = 0..)]
        scorecard_readers: Option<Vec<String>>,
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
    /// The budget bank per pod and quarter: allocated, rolled over, bonus, spent, remaining and ROI.
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
        /// The experiment's outcome.
        #[arg(long, value_enum)]
        outcome: Option<model::Outcome>,
        /// Tag; repeat.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Experiment key it is about.
        #[arg(long)]
        experiment: Option<String>,
    },
    /// Search learnings across the federation, ranked by relevance (BM25; all of them, newest first, when the
    /// query is empty).
    Search {
        /// Words to look for.
        #[arg(default_value = "")]
        query: String,
        /// Only learnings shared by this pod.
        #[arg(long)]
        pod: Option<String>,
        /// Only learnings about an experiment at this funnel stage.
        #[arg(long, value_enum)]
        funnel_stage: Option<model::FunnelStage>,
        /// Only with this outcome.
        #[arg(long, value_enum)]
        outcome: Option<model::Outcome>,
        /// Only with this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Concluded experiments whose learning is overdue, by pod.
    Overdue,
}

/// Runs an `experiment` subcommand.
pub fn experiment(
    context: &Context,
    node: &mut Node,
    command: ExperimentCommand,
) -> anyhow::Result<u8> {
    match command {
        ExperimentCommand::New(args) => {
            let mut experiment = build(*args, node.identity().public_key)?;
            input(experiment.validate())?;
            experiment.pod = own_pod(node)?;
            if node.view().experiments.contains_key(&experiment.key) {
                return Err(input_error(format!(
                    "--key: experiment `{}` already exists; pick another key",
                    experiment.key
                )));
            }
            let outcome = node
                .write(&Op::NewExperiment(experiment.clone()), now_ms())
                .map_err(map_write)?;
            let view = node.shared_view();
            let governance = node.governance();
            let mut value = state_json(&view, &governance, &experiment.key);
            value["change"] = outcome.change.clone().into();
            value["heads"] = serde_json::to_value(&outcome.heads)?;
            context.print(&value, |v| {
                outln!(
                    context,
                    "experiment {} registered: change {}",
                    experiment.key,
                    outcome.change
                );
                for need in v["needs_detail"].as_array().into_iter().flatten() {
                    outln!(
                        context,
                        "needs council approval: {}",
                        need.as_str().unwrap_or_default()
                    );
                }
            })?;
            Ok(exit::OK)
        }
        ExperimentCommand::List(filters) => {
            if let Some(quarter) = &filters.quarter {
                input(model::validate_quarter("--quarter", quarter))?;
            }
            if let Some(status) = &filters.status
                && !STAGES.contains(&status.as_str())
            {
                return Err(input_error(format!(
                    "--status: `{status}` is not one of {}",
                    STAGES.join(", ")
                )));
            }
            let view = node.shared_view();
            let governance = node.governance();
            let rows: Vec<serde_json::Value> = view
                .experiments
                .values()
                .filter(|e| filters.pod.as_ref().is_none_or(|p| *p == e.pod))
                .filter(|e| {
                    filters
                        .metric
                        .as_ref()
                        .is_none_or(|m| e.primary_metric.as_ref() == Some(m))
                })
                .filter(|e| {
                    let state = &governance.experiments[&e.key];
                    filters.quarter.as_ref().is_none_or(|q| *q == state.quarter)
                        && filters
                            .status
                            .as_ref()
                            .is_none_or(|s| s == state.stage.as_str())
                })
                .map(|e| state_json(&view, &governance, &e.key))
                .collect();
            context.print(&serde_json::json!({ "experiments": rows }), |_| {
                let table: Vec<[String; 6]> = rows
                    .iter()
                    .map(|r| {
                        let text = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
                        let overlaps: Vec<String> = r["overlaps"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|o| {
                                format!(
                                    "{} ({})",
                                    o["experiment"].as_str().unwrap_or_default(),
                                    o["pod"].as_str().unwrap_or_default()
                                )
                            })
                            .collect();
                        let needs: Vec<&str> = r["needs_approval"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|n| n.as_str())
                            .collect();
                        [
                            text("key"),
                            text("pod"),
                            text("status"),
                            r["experiment"]["primary_metric"]
                                .as_str()
                                .unwrap_or("-")
                                .to_owned(),
                            if needs.is_empty() {
                                "-".into()
                            } else {
                                needs.join(",")
                            },
                            if overlaps.is_empty() {
                                "-".into()
                            } else {
                                overlaps.join(", ")
                            },
                        ]
                    })
                    .collect();
                print_table(
                    context,
                    ["KEY", "POD", "STATUS", "METRIC", "NEEDS", "OVERLAPS"],
                    &table,
                );
            })?;
            Ok(exit::OK)
        }
        ExperimentCommand::Show { key } => {
            let view = node.shared_view();
            if !view.experiments.contains_key(&key) {
                return Err(input_error(format!("KEY: no experiment `{key}`")));
            }
            let governance = node.governance();
            let value = state_json(&view, &governance, &key);
            context.print(&value, |v| {
                outln!(
                    context,
                    "{}",
                    serde_json::to_string_pretty(v).unwrap_or_default()
                )
            })?;
            Ok(exit::OK)
        }
        ExperimentCommand::Start { key } => start(context, node, key),
        ExperimentCommand::Stop { key } => stop(context, node, key),
        ExperimentCommand::Status { key, status } => match status.as_str() {
            "running" => start(context, node, key),
            "stopped" => stop(context, node, key),
            "concluded" => Err(input_error(
                "STATUS: an experiment is concluded with `experiment conclude KEY`, which stores its signed result",
            )),
            other => Err(input_error(format!(
                "STATUS: `{other}` is not one of running, stopped (use `experiment start|stop|conclude`)"
            ))),
        },
        ExperimentCommand::Conclude(args) => super::events::conclude(context, node, args),
    }
}

/// Every stage `experiment list --status` takes.
const STAGES: [&str; 8] = [
    "draft",
    "awaiting_approval",
    "approved",
    "rejected",
    "running",
    "blocked",
    "stopped",
    "concluded",
];

/// The pod this node's key belongs to.
fn own_pod(node: &Node) -> anyhow::Result<String> {
    let key = node.identity().public_key;
    let view = node.view();
    match view.members.get(&key) {
        Some(model::Member {
            role: model::Role::Pod,
            scope: Some(pod),
            revoked: false,
            ..
        }) => Ok(pod.clone()),
        Some(member) => Err(input_error(format!(
            "only a pod's members run its experiments; this node's key is a {}{}",
            member.role,
            if member.revoked { " (revoked)" } else { "" }
        ))),
        None => Err(input_error(
            "this node's key is not a member of the federation yet (import the council's bundle or `join` with a ticket)",
        )),
    }
}

/// An experiment of this node's pod.
fn own_experiment(node: &Node, key: &str) -> anyhow::Result<Experiment> {
    let pod = own_pod(node)?;
    let view = node.view();
    let experiment = view
        .experiments
        .get(key)
        .ok_or_else(|| input_error(format!("KEY: no experiment `{key}`")))?;
    if experiment.pod != pod {
        return Err(input_error(format!(
            "KEY: `{key}` belongs to pod {}, not this node's pod {pod}",
            experiment.pod
        )));
    }
    Ok(experiment.clone())
}

/// One experiment as governance sees it: `status` is its lifecycle stage (`awaiting_approval`, `blocked`, ...),
/// `needs_approval` the reasons it still lacks approval for, `overlaps` the other pods' experiments it overlaps.
fn state_json(view: &RegistryView, governance: &Governance, key: &str) -> serde_json::Value {
    let experiment = &view.experiments[key];
    let state = &governance.experiments[key];
    let mut codes: Vec<&str> = state.needs_approval().iter().map(|n| n.code()).collect();
    codes.dedup();
    let needs_detail: Vec<String> = state
        .needs_approval()
        .iter()
        .map(|n| n.describe())
        .collect();
    let votes = |votes: &[governance::Vote]| -> Vec<serde_json::Value> {
        votes
            .iter()
            .map(|v| serde_json::json!({ "by": v.by, "name": v.name, "reason": v.reason, "at_ms": v.at_ms }))
            .collect()
    };
    serde_json::json!({
        "key": key,
        "pod": experiment.pod,
        "status": state.stage.as_str(),
        "recorded_status": experiment.status,
        "quarter": state.quarter,
        "needs_approval": codes,
        "needs_detail": needs_detail,
        "needs": state.needs,
        "approval": {
            "required": state.approval.required,
            "approved": votes(&state.approval.approvals),
            "rejected": votes(&state.approval.rejections),
            "missing": state.approval.missing(),
            "decision": state.approval.decision,
            "ignored": state.approval.ignored.iter().map(|(v, why)| serde_json::json!({ "by": v.by, "name": v.name, "why": why })).collect::<Vec<_>>(),
        },
        "overlaps": state.overlaps,
        "blocked": state.blocked,
        "spend": state.spend,
        "incremental_revenue": state.incremental_revenue,
        "roi": state.roi,
        "experiment": experiment,
    })
}

/// Prints rows as aligned columns under a header.
fn print_table<const N: usize>(context: &Context, header: [&str; N], rows: &[[String; N]]) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    context.table(&header, &rows);
}

/// `experiment start`: refused (exit 1, with the reason and what is missing) unless governance admits it.
fn start(context: &Context, node: &mut Node, key: String) -> anyhow::Result<u8> {
    let experiment = own_experiment(node, &key)?;
    let view = node.shared_view();
    let now = now_ms();
    match governance::try_start_with(&view, &node.governance(), &key, now) {
        Ok(governance::Started { state, budget }) => {
            let outcome = node
                .write(
                    &Op::SetExperimentStatus {
                        key: key.clone(),
                        status: ExperimentStatus::Running,
                        at_ms: now,
                    },
                    now,
                )
                .map_err(map_write)?;
            let value = serde_json::json!({
                "change": outcome.change, "heads": outcome.heads, "status": "running",
                "spend": state.spend, "budget": budget,
            });
            context.print(&value, |_| {
                outln!(
                    context,
                    "experiment {key} started: change {}",
                    outcome.change
                );
                if let (Some(spend), Some(budget)) = (&state.spend, &budget) {
                    outln!(
                        context,
                        "spent {} from pod {}'s {} budget; {} remaining",
                        spend.amount,
                        experiment.pod,
                        spend.quarter,
                        budget.remaining
                    );
                }
            })?;
            Ok(exit::OK)
        }
        Err(refusal) => {
            let state = refusal.state.as_ref();
            let value = serde_json::json!({
                "error": format!("experiment start {key} refused: {}", refusal.detail),
                "reason": refusal.reason,
                "experiment": key,
                "needs_approval": state.map(|s| s.needs_approval().iter().map(|n| n.code()).collect::<Vec<_>>()),
                "missing_approvals": state.map(|s| s.approval.missing()),
                "cost": experiment.cost,
                "budget": refusal.budget,
            });
            context.refuse(&value)
        }
    }
}

/// `experiment stop`: a running experiment of this pod.
fn stop(context: &Context, node: &mut Node, key: String) -> anyhow::Result<u8> {
    let experiment = own_experiment(node, &key)?;
    if experiment.status != ExperimentStatus::Running {
        return Err(input_error(
            format!(
                "KEY: `{key}` is not running (it is {:?})",
                experiment.status
            )
            .to_lowercase(),
        ));
    }
    let now = now_ms();
    let outcome = node
        .write(
            &Op::SetExperimentStatus {
                key,
                status: ExperimentStatus::Stopped,
                at_ms: now,
            },
            now,
        )
        .map_err(map_write)?;
    context.print_write(&outcome, "experiment stopped")
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
        funnel_stage: args.funnel_stage,
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
        namespace: args
            .namespace
            .as_deref()
            .map(|n| input(n.parse::<model::NamespaceRange>()))
            .transpose()?,
        started_at_ms: None,
        hash_version: args.hash_version,
        coverage: args.coverage,
        created_by: author,
        created_at_ms: now_ms(),
    })
}

/// Runs a `council` subcommand.
pub fn council(context: &Context, node: &mut Node, command: CouncilCommand) -> anyhow::Result<u8> {
    let (op, what) = match command {
        CouncilCommand::Approve { experiment, reason } => (
            decision(node, experiment, Decision::Approved, reason)?,
            "approval recorded",
        ),
        CouncilCommand::Reject { experiment, reason } => (
            decision(node, experiment, Decision::Rejected, reason)?,
            "rejection recorded",
        ),
        CouncilCommand::Queue => return queue(context, node),
        CouncilCommand::Quorum { n } => {
            let setting = Setting::Quorum(n);
            input(setting.validate())?;
            (Op::SetSetting(setting), "quorum set")
        }
        CouncilCommand::Settings {
            postmortem_days,
            win_bonus,
            revenue_metric,
            tier1_metrics,
            tier2_metrics,
            scorecard_readers,
        } => {
            let settings = [
                postmortem_days.map(Setting::PostmortemDays),
                win_bonus.map(Setting::WinBonus),
                revenue_metric.map(Setting::RevenueMetric),
                tier1_metrics.map(Setting::Tier1Metrics),
                tier2_metrics.map(Setting::Tier2Metrics),
                scorecard_readers.map(|keys| {
                    Setting::ScorecardReaders(keys.into_iter().filter(|k| !k.is_empty()).collect())
                }),
            ];
            return self::settings(context, node, settings.into_iter().flatten().collect());
        }
        CouncilCommand::Threshold { quarter, cost } => {
            input(model::validate_quarter("--quarter", &quarter))?;
            if !(cost.is_finite() && cost >= 0.0) {
                return Err(input_error("--cost: must be a number >= 0"));
            }
            (Op::SetThreshold { quarter, cost }, "threshold set")
        }
    };
    let outcome = node.write(&op, now_ms()).map_err(map_write)?;
    context.print_write(&outcome, what)
}

/// A vote of this node's council key; refused for an unknown experiment and for a council member of the
/// experiment's own pod.
fn decision(
    node: &Node,
    experiment: String,
    decision: Decision,
    reason: String,
) -> anyhow::Result<Op> {
    let view = node.view();
    let Some(record) = view.experiments.get(&experiment) else {
        return Err(input_error(format!(
            "EXPERIMENT: no experiment `{experiment}`"
        )));
    };
    let key = node.identity().public_key;
    if let Some(member) = view.members.get(&key)
        && member.scope.as_deref() == Some(record.pod.as_str())
    {
        return Err(input_error(format!(
            "EXPERIMENT: `{experiment}` is pod {}'s own experiment; a pod cannot approve its own experiment",
            record.pod
        )));
    }
    Ok(Op::Decide(Approval {
        experiment,
        decision,
        reason,
        by: key,
        at_ms: now_ms(),
    }))
}

/// `council queue`: a JSON list of `{experiment, pod, reasons, waiting_since}`, oldest first.
fn queue(context: &Context, node: &Node) -> anyhow::Result<u8> {
    let view = node.shared_view();
    let governance = node.governance();
    let rows: Vec<serde_json::Value> = governance
        .queue()
        .into_iter()
        .map(|state| {
            let mut reasons: Vec<&str> = state.needs.iter().map(|n| n.code()).collect();
            reasons.dedup();
            let since = state.waiting_since_ms.unwrap_or_default();
            serde_json::json!({
                "experiment": state.key,
                "pod": state.pod,
                "reasons": reasons,
                "detail": state.needs.iter().map(|n| n.describe()).collect::<Vec<_>>(),
                "waiting_since": model::time::format_rfc3339(since),
                "waiting_since_ms": since,
                "approvals": state.approval.approvals.len(),
                "required": state.approval.required,
                "cost": view.experiments[&state.key].cost,
            })
        })
        .collect();
    context.print(&rows, |rows| {
        let table: Vec<[String; 5]> = rows
            .iter()
            .map(|r| {
                [
                    r["experiment"].as_str().unwrap_or_default().to_owned(),
                    r["pod"].as_str().unwrap_or_default().to_owned(),
                    model::time::format_date(r["waiting_since_ms"].as_i64().unwrap_or_default()),
                    format!("{}/{}", r["approvals"], r["required"]),
                    r["detail"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|d| d.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                ]
            })
            .collect();
        if table.is_empty() {
            outln!(context, "nothing waits for approval");
        } else {
            print_table(
                context,
                ["EXPERIMENT", "POD", "SINCE", "VOTES", "WHY"],
                &table,
            );
        }
    })?;
    Ok(exit::OK)
}

/// `council settings`: writes the given settings (one change each), then shows them all.
fn settings(context: &Context, node: &mut Node, settings: Vec<Setting>) -> anyhow::Result<u8> {
    for setting in &settings {
        input(setting.validate())?;
    }
    for setting in settings {
        node.write(&Op::SetSetting(setting), now_ms())
            .map_err(map_write)?;
    }
    let view = node.view();
    context.print(&view.settings, |s| {
        outln!(context, "quorum           {}", s.quorum);
        outln!(context, "postmortem days  {}", s.postmortem_days);
        outln!(context, "win bonus        {}", s.win_bonus);
        outln!(context, "revenue metric   {}", s.revenue_metric);
        outln!(context, "tier 1 metrics   {}", s.tier1_metrics.join(", "));
        outln!(context, "tier 2 metrics   {}", s.tier2_metrics.join(", "));
        outln!(
            context,
            "scorecard readers {}",
            if s.scorecard_readers.is_empty() {
                "council and pods only".to_owned()
            } else {
                s.scorecard_readers.join(", ")
            }
        );
    })?;
    Ok(exit::OK)
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
                by: node.identity().public_key,
            };
            // An allocation may not take back funds already spent: every start that stands now must still stand.
            let view = node.view();
            let before = node.governance();
            let mut trial = view.clone();
            trial
                .budgets
                .insert(format!("{}:{}", budget.pod, budget.quarter), budget.clone());
            let after = Governance::derive(&trial);
            if let Some(unfunded) = before
                .experiments
                .values()
                .find(|s| s.spend.is_some() && after.experiments[&s.key].spend.is_none())
            {
                let row = before.budget(&budget.pod, &budget.quarter);
                return Err(input_error(format!(
                    "--amount: {amount} would leave pod {}'s {} negative: {} is already spent there (experiment {} would lose its funding)",
                    budget.pod,
                    budget.quarter,
                    row.map_or(0.0, |r| r.spent),
                    unfunded.key
                )));
            }
            let outcome = node
                .write(&Op::AllocateBudget(budget), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "budget allocated")
        }
        BudgetCommand::List => {
            let governance = node.governance();
            let rows = &governance.budgets;
            context.print(&serde_json::json!({ "budgets": rows }), |_| {
                let money = |x: f64| format!("{x:.2}");
                let table: Vec<[String; 8]> = rows
                    .iter()
                    .map(|r| {
                        [
                            r.pod.clone(),
                            r.quarter.clone(),
                            money(r.allocated),
                            money(r.rolled_over),
                            money(r.bonus),
                            money(r.spent),
                            money(r.remaining),
                            r.roi
                                .map_or("-".into(), |roi| format!("{:+.1}%", roi * 100.0)),
                        ]
                    })
                    .collect();
                print_table(
                    context,
                    [
                        "POD",
                        "QUARTER",
                        "ALLOCATED",
                        "ROLLED OVER",
                        "BONUS",
                        "SPENT",
                        "REMAINING",
                        "ROI",
                    ],
                    &table,
                );
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
                outcome,
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
        LearningsCommand::Overdue => {
            let governance = node.governance();
            let now = now_ms();
            let rows: Vec<serde_json::Value> = governance
                .overdue(now)
                .map(|p| {
                    serde_json::json!({
                        "experiment": p.experiment, "pod": p.pod,
                        "concluded_at": model::time::format_date(p.concluded_at_ms),
                        "due": model::time::format_date(p.due_ms),
                        "days_late": (now - p.due_ms) / model::time::DAY_MS,
                    })
                })
                .collect();
            let mut by_pod: std::collections::BTreeMap<String, u64> = Default::default();
            for row in &rows {
                *by_pod
                    .entry(row["pod"].as_str().unwrap_or_default().to_owned())
                    .or_default() += 1;
            }
            let value = serde_json::json!({ "overdue": rows, "by_pod": by_pod });
            context.print(&value, |_| {
                if rows.is_empty() {
                    outln!(context, "no post-mortem is overdue");
                    return;
                }
                let table: Vec<[String; 5]> = rows
                    .iter()
                    .map(|r| {
                        let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                        [
                            text("pod"),
                            text("experiment"),
                            text("concluded_at"),
                            text("due"),
                            r["days_late"].to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    context,
                    ["POD", "EXPERIMENT", "CONCLUDED", "DUE", "DAYS LATE"],
                    &table,
                );
                outln!(
                    context,
                    "share one with `learnings add --experiment KEY --title ... --body ...`"
                );
            })?;
            Ok(exit::OK)
        }
        LearningsCommand::Search {
            query,
            pod,
            funnel_stage,
            outcome,
            tag,
        } => {
            let view = node.view();
            let filters = governance::search::Filters {
                pod,
                funnel_stage,
                outcome,
                tag,
            };
            let scored = governance::search::search(&view, &query, &filters);
            let hits: Vec<serde_json::Value> = scored
                .iter()
                .map(|(l, score)| {
                    let mut value = serde_json::to_value(l).unwrap_or_default();
                    value["score"] = ((score * 1e4).round() / 1e4).into();
                    value
                })
                .collect();
            context.print(&serde_json::json!({ "learnings": hits }), |_| {
                if scored.is_empty() {
                    outln!(context, "no learning matches");
                }
                for (l, score) in &scored {
                    let outcome = l.outcome.map_or("-".to_owned(), |o| {
                        serde_json::to_value(o)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    });
                    outln!(
                        context,
                        "{score:>6.2}  {}  {}  [{outcome}]  {}\n        {}",
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
