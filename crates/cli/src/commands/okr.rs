//! `okr objective add|list` (council), `okr kr add|refresh|update|list` (pods) and `okr tree` (anyone).

use clap::Subcommand;
use model::okr::{self, Quarter};
use model::{KeyResult, Objective, StandardStatus};
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
    /// Company objectives with their North Star, then each pod's key results with progress and confidence.
    ///
    /// Progress is (current - baseline) / (target - baseline), clamped to [0, 1]. The pace expected by the as-of
    /// date is the elapsed share of the objective's quarter; a key result is `on track` when its progress is at
    /// most 0.1 behind it (or the target is reached), `at risk` when at most 0.3 behind, else `off track`; `no
    /// data` before a value is published.
    Tree {
        /// Only objectives of this quarter, e.g. 2026Q4.
        #[arg(long)]
        quarter: Option<String>,
        /// Pace as of the end of this day (YYYY-MM-DD) instead of now.
        #[arg(long)]
        as_of: Option<String>,
    },
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
        /// Approved metric definition it is measured by (`growthmesh metric list`).
        #[arg(long)]
        metric: String,
        /// Target value.
        #[arg(long)]
        target: f64,
        /// Starting value.
        #[arg(long, default_value_t = 0.0)]
        baseline: f64,
        /// The metric is measured over the events of this many days up to the refresh.
        #[arg(long, default_value_t = okr::DEFAULT_KEY_RESULT_WINDOW_DAYS)]
        window_days: u32,
    },
    /// Measure this pod's key results from its own events and publish the values (signed).
    ///
    /// Each key result's metric is measured over the pod's stored events of its last `window_days` days, among
    /// the users with any event (or exposure) in that window: binomial = the share of those users who did the
    /// event; mean = the mean per user of the property summed (or of the events counted), users without the
    /// event counting 0; ratio = the sum of the numerator over the sum of the denominator. Capping applies as in
    /// an experiment. A value equal to the published one is not written again; a window without events has none.
    Refresh {
        /// Key result id (default: every key result of this pod).
        id: Option<String>,
        /// Measure the window ending with this day (YYYY-MM-DD, UTC) instead of now, to reproduce a value.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Set the current value of a key result of this pod by hand (overrides until the next refresh).
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
            let id = objective.id.clone();
            let outcome = node
                .write(&Op::AddObjective(objective), now_ms())
                .map_err(map_write)?;
            context.print_created(&outcome, "objective added", &id)
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
            window_days,
        }) => {
            if !node.view().objectives.contains_key(&objective) {
                return Err(input_error(format!(
                    "--objective: no objective `{objective}`"
                )));
            }
            if !target.is_finite() || !baseline.is_finite() {
                return Err(input_error("--target/--baseline: must be finite numbers"));
            }
            input(okr::validate_window_days("--window-days", window_days))?;
            require_approved_metric(node, &metric)?;
            let kr = KeyResult {
                id: node.new_id("kr", &metric, now_ms()),
                objective,
                pod: String::new(),
                metric,
                baseline,
                target,
                current: None,
                updated_at_ms: now_ms(),
                window_days,
            };
            let id = kr.id.clone();
            let outcome = node
                .write(&Op::AddKeyResult(kr), now_ms())
                .map_err(map_write)?;
            context.print_created(&outcome, "key result added", &id)
        }
        OkrCommand::Kr(KrCommand::Refresh { id, as_of }) => refresh(context, node, id, as_of),
        OkrCommand::Tree { quarter, as_of } => tree(context, node, quarter, as_of),
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
                let number = |x: f64| format!("{x}");
                let rows: Vec<Vec<String>> = krs
                    .iter()
                    .map(|k| {
                        vec![
                            k.id.clone(),
                            k.pod.clone(),
                            k.metric.clone(),
                            number(k.baseline),
                            k.current.map_or_else(|| "-".into(), number),
                            number(k.target),
                            k.progress()
                                .map_or_else(|| "-".into(), |p| format!("{:.0}%", p * 100.0)),
                            if k.current.is_some() && k.updated_at_ms > 0 {
                                model::calendar::format_date(k.updated_at_ms)
                            } else {
                                "never".into()
                            },
                        ]
                    })
                    .collect();
                context.table(
                    &[
                        "ID", "POD", "METRIC", "BASELINE", "CURRENT", "TARGET", "PROGRESS",
                        "MEASURED",
                    ],
                    &rows,
                );
            })?;
            Ok(exit::OK)
        }
    }
}

/// Refuses a key result's `--metric` unless it is an approved metric definition, saying how to get one.
fn require_approved_metric(node: &Node, metric: &str) -> anyhow::Result<()> {
    let approved = node
        .view()
        .metrics
        .get(metric)
        .is_some_and(|m| m.status == StandardStatus::Approved);
    if approved {
        return Ok(());
    }
    Err(input_error(format!(
        "--metric: `{metric}` is not an approved metric definition; propose it with `growthmesh metric propose \
         --key {metric} ...` and have a steward or the council approve it with `growthmesh metric approve {metric}`"
    )))
}

/// Resolves `--as-of DATE` (the end of that day) or now.
fn as_of(date: Option<&str>) -> anyhow::Result<i64> {
    match date {
        Some(date) => input(okr::as_of_ms("--as-of", date)),
        None => Ok(now_ms()),
    }
}

/// `okr kr refresh [ID] [--as-of DATE]`.
fn refresh(
    context: &Context,
    node: &mut Node,
    id: Option<String>,
    date: Option<String>,
) -> anyhow::Result<u8> {
    let as_of_ms = as_of(date.as_deref())?;
    let refreshes = node
        .refresh_key_results(id.as_deref(), as_of_ms, now_ms())
        .map_err(|error| match error {
            node::okr::Error::UnknownKeyResult { .. } => input_error(error.to_string()),
            node::okr::Error::Write(error) => map_write(*error),
            other => anyhow::Error::new(other),
        })?;
    if let (Some(_), [only]) = (&id, refreshes.as_slice())
        && let Some(problem) = &only.problem
    {
        anyhow::bail!("key result `{}`: {problem}", only.id);
    }
    let output = serde_json::json!({ "as_of_ms": as_of_ms, "key_results": refreshes });
    context.print(&output, |_| print_refreshes(context, &refreshes))?;
    if refreshes.iter().any(|r| r.problem.is_some()) {
        return Ok(exit::PARTIAL);
    }
    Ok(exit::OK)
}

fn print_refreshes(context: &Context, refreshes: &[node::okr::Refresh]) {
    if refreshes.is_empty() {
        outln!(context, "this pod has no key results");
    }
    let width = refreshes.iter().map(|r| r.id.len()).max().unwrap_or(0);
    let metric_width = refreshes.iter().map(|r| r.metric.len()).max().unwrap_or(0);
    for r in refreshes {
        let value = r
            .value
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.6}"));
        let outcome = match (&r.change, &r.problem, r.value) {
            (_, Some(problem), _) => format!("not measured: {problem}"),
            (Some(change), _, _) => format!("published (change {})", &change[..12]),
            (None, _, None) => "no events in the window; nothing published".to_owned(),
            (None, _, Some(_)) => "unchanged".to_owned(),
        };
        outln!(
            context,
            "{:<width$}  {:<metric_width$}  {value:>10}  {} users, {} events, {} days to {}  {outcome}",
            r.id,
            r.metric,
            r.users,
            r.events,
            r.window_days,
            model::calendar::format_date(r.window_end_ms - 1),
        );
    }
}

/// `okr tree [--quarter Q] [--as-of DATE]`.
fn tree(
    context: &Context,
    node: &mut Node,
    quarter: Option<String>,
    date: Option<String>,
) -> anyhow::Result<u8> {
    let quarter: Option<Quarter> = match quarter {
        Some(text) => {
            input(model::validate_quarter("--quarter", &text))?;
            Some(text.parse().expect("a validated quarter parses"))
        }
        None => None,
    };
    let as_of_ms = as_of(date.as_deref())?;
    let tree = okr::tree::tree(&node.view(), quarter, as_of_ms);
    context.print(&tree, |tree| print_tree(context, tree))?;
    Ok(exit::OK)
}

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

fn print_tree(context: &Context, tree: &okr::tree::Tree) {
    if tree.objectives.is_empty() {
        outln!(context, "no objectives");
    }
    for objective in &tree.objectives {
        outln!(
            context,
            "{} {}  {}  (expected by now: {})",
            objective.quarter,
            objective.id,
            objective.title,
            percent(objective.expected)
        );
        if let Some(star) = &objective.north_star {
            outln!(
                context,
                "  north star  {}  target {}  current {}",
                star.metric,
                number(star.target),
                number(star.current)
            );
        }
        print_key_results(context, &objective.key_results);
    }
    if !tree.unlinked_key_results.is_empty() {
        outln!(context, "key results of objectives not in this registry");
        print_key_results(context, &tree.unlinked_key_results);
    }
}

fn print_key_results(context: &Context, key_results: &[okr::tree::KeyResultNode]) {
    let rows: Vec<[String; 7]> = key_results
        .iter()
        .map(|k| {
            [
                k.pod.clone(),
                k.id.clone(),
                k.metric.clone(),
                format!("{} -> {}", k.baseline, k.target),
                format!("current {}", number(k.current)),
                format!("progress {}", percent(k.progress)),
                k.confidence.to_string(),
            ]
        })
        .collect();
    let mut widths = [0; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        outln!(context, "    {}", cells.join("  ").trim_end());
    }
}
