//! `scorecard`: the three tiers, from the pods' signed snapshots this node holds (and, on a pod's node, its own
//! snapshot computed now), and from experiments' signed results.

use model::Role;
use model::okr::Quarter;
use node::Node;
use serde_json::{Value, json};

use crate::context::{Context, input, now_ms};
use crate::exit::{self, input_error};

#[derive(Debug, Clone, clap::Args)]
pub struct ScorecardArgs {
    /// 1: the company (North Star, KR progress, dependency ratio, revenue per pod, compliance incidents), from the
    /// pods' snapshots; 2: one pod's scorecard and dashboard; 3: one experiment's metrics from its signed result.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    tier: u8,
    /// Tier 2: the pod (default: this node's pod).
    #[arg(long)]
    pod: Option<String>,
    /// Tier 3: the experiment.
    #[arg(long)]
    experiment: Option<String>,
    /// The quarter (`2026Q4`; default: the current one).
    #[arg(long)]
    quarter: Option<String>,
    /// Redraw every two seconds as snapshots arrive, until interrupted.
    #[arg(long)]
    pub watch: bool,
}

/// How often `--watch` redraws.
pub const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

pub fn run(context: &Context, node: &mut Node, args: ScorecardArgs) -> anyhow::Result<u8> {
    let now = now_ms();
    let standing = node.standing();
    let me = node.keypair().public().to_hex();
    if args.tier > 1
        && matches!(standing, Some((Role::Partner, _, _)))
        && !node.shared_view().settings.scorecard_readers.contains(&me)
    {
        let value = json!({
            "error": format!(
                "a partner sees tier 1 and the learnings only; tier {} is for members and the readers the council \
                 lets in (`council settings --scorecard-readers {me}`)",
                args.tier
            ),
            "reason": "partner_tier_1_only",
            "tier": args.tier,
        });
        return context.refuse(&value);
    }
    let quarter: Quarter = match &args.quarter {
        Some(text) => text
            .parse()
            .map_err(|e| input_error(format!("--quarter: {e}")))?,
        None => model::time::quarter_of_ms(now)
            .parse()
            .map_err(|e| input_error(format!("the current quarter: {e}")))?,
    };
    let own = node.own_scorecard(now);
    let view = node.shared_view();
    // A pod's node shows its own numbers as of now, merged with its pod's other nodes as a subscriber merges them.
    let own = own.map(|snapshot| ::scorecard::Held {
        snapshot,
        publisher: me.clone(),
        bytes: Vec::new(),
    });
    let cards = node.scorecards(now).standing_with(&view, own.as_ref());
    let snapshots: Vec<(::scorecard::Snapshot, Vec<String>)> = cards
        .into_values()
        .map(|c| (c.snapshot, c.publishers))
        .collect();
    let age = |s: &::scorecard::Snapshot| (now - s.as_of_ms).max(0) / 1000;
    let value = match args.tier {
        1 => {
            let label = quarter.to_string();
            let metrics =
                ::scorecard::company(snapshots.iter().map(|(s, _)| s), &view, quarter, now);
            let pods: Vec<Value> = snapshots
                .iter()
                .filter(|(s, _)| s.quarter == label)
                .map(|(s, publishers)| {
                    json!({
                        "pod": s.pod,
                        "as_of": model::time::format_rfc3339(s.as_of_ms),
                        "as_of_ms": s.as_of_ms,
                        "age_s": age(s),
                        "publisher": publishers.first(),
                        "publishers": publishers,
                    })
                })
                .collect();
            json!({ "tier": 1, "quarter": label, "metrics": metrics, "pods": pods })
        }
        2 => {
            let pod = args
                .pod
                .clone()
                .or_else(|| standing.and_then(|(_, scope, _)| scope))
                .ok_or_else(|| input_error("--pod: which pod (this node belongs to none)"))?;
            let Some((s, publishers)) = snapshots.iter().find(|(s, _)| s.pod == pod) else {
                return Err(input_error(format!(
                    "--pod: no scorecard from pod `{pod}` has arrived yet (pods publish theirs every few seconds while their node runs)"
                )));
            };
            json!({
                "tier": 2,
                "pod": s.pod,
                "quarter": s.quarter,
                "as_of": model::time::format_rfc3339(s.as_of_ms),
                "as_of_ms": s.as_of_ms,
                "age_s": age(s),
                "publishers": publishers,
                "metrics": s.metrics,
                "dashboard": s.dashboard,
            })
        }
        _ => {
            let key = args
                .experiment
                .clone()
                .ok_or_else(|| input_error("--experiment: tier 3 is per experiment"))?;
            if !view.experiments.contains_key(&key) {
                return Err(input_error(format!("--experiment: no experiment `{key}`")));
            }
            let Some(metrics) = ::scorecard::experiment(&view, &key) else {
                return Err(input_error(format!(
                    "--experiment: `{key}` has no signed result yet (its pod stores one with `experiment conclude`)"
                )));
            };
            json!({ "tier": 3, "experiment": key, "metrics": metrics })
        }
    };
    context.print(&value, |v| print_table(context, v))?;
    Ok(exit::OK)
}

fn show(value: &Value) -> String {
    match value.as_f64() {
        Some(x) if x.fract() == 0.0 && x.abs() < 1e12 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}"),
        None => "-".into(),
    }
}

fn print_table(context: &Context, v: &Value) {
    let title = match v["tier"].as_u64() {
        Some(1) => format!(
            "company scorecard, {}",
            v["quarter"].as_str().unwrap_or_default()
        ),
        Some(2) => format!(
            "pod {} scorecard, {} (as of {}, {} s ago)",
            v["pod"].as_str().unwrap_or_default(),
            v["quarter"].as_str().unwrap_or_default(),
            v["as_of"].as_str().unwrap_or_default(),
            v["age_s"]
        ),
        _ => format!(
            "experiment {}",
            v["experiment"].as_str().unwrap_or_default()
        ),
    };
    outln!(context, "{title}");
    outln!(
        context,
        "  {:<22} {:>14} {:>14}",
        "metric",
        "value",
        "target"
    );
    for m in v["metrics"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  {:<22} {:>14} {:>14}",
            m["name"].as_str().unwrap_or_default(),
            show(&m["value"]),
            show(&m["target"])
        );
        if let Some(ci) = m["interval"].as_array() {
            line.push_str(&format!("  CI [{}, {}]", show(&ci[0]), show(&ci[1])));
        }
        if m["chance_to_win"].is_number() {
            line.push_str(&format!("  chance to win {}", show(&m["chance_to_win"])));
        }
        outln!(context, "{line}");
    }
    if let Some(d) = v["dashboard"].as_object() {
        outln!(context, "  dashboard:");
        for (name, value) in d {
            outln!(context, "    {:<20} {:>14}", name, show(value));
        }
    }
    if let Some(pods) = v["pods"].as_array() {
        outln!(context, "  pods reporting: {}", pods.len());
        for p in pods {
            outln!(
                context,
                "    {:<16} as of {} ({} s ago)",
                p["pod"].as_str().unwrap_or_default(),
                p["as_of"].as_str().unwrap_or_default(),
                p["age_s"]
            );
        }
    }
}

/// `pulse` subcommands: the autonomy pulse a pod's members answer from the pod's node.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PulseCommand {
    /// Answer this quarter's pulse: "how free is this pod to run its own growth experiments?", 0 (not at all) to 10
    /// (entirely). One answer per respondent and quarter (answering again replaces it); it stays on this node and
    /// only the pod's counts and NPS are published.
    Answer {
        /// 0 to 10.
        #[arg(long)]
        score: u8,
        /// Who answers, when several people share this node (default: this node's member key).
        #[arg(long)]
        respondent: Option<String>,
    },
    /// This node's pulse for a quarter: counts and NPS (never who answered what).
    Show {
        /// The quarter (`2026Q4`; default: the current one).
        #[arg(long)]
        quarter: Option<String>,
    },
}

/// Runs a `pulse` subcommand.
pub fn pulse(context: &Context, node: &mut Node, command: PulseCommand) -> anyhow::Result<u8> {
    let (quarter, pulse) = match command {
        PulseCommand::Answer { score, respondent } => {
            let respondent = respondent.unwrap_or_else(|| node.keypair().public().to_hex());
            if respondent.is_empty() || respondent.len() > 128 {
                return Err(input_error("--respondent: 1 to 128 characters"));
            }
            node.answer_pulse(&respondent, score, now_ms())
                .map_err(|e| match e {
                    node::scorecards::PulseError::Store(e) => anyhow::Error::new(*e),
                    refused => input_error(refused.to_string()),
                })?
        }
        PulseCommand::Show { quarter } => {
            let quarter = match quarter {
                Some(q) => {
                    input(model::validate_quarter("--quarter", &q))?;
                    q
                }
                None => model::time::quarter_of_ms(now_ms()),
            };
            let pulse = node.pulse(&quarter)?;
            (quarter, pulse)
        }
    };
    let value = json!({
        "pod": node.own_pod(),
        "quarter": quarter,
        "responses": pulse.responses(),
        "promoters": pulse.promoters,
        "passives": pulse.passives,
        "detractors": pulse.detractors,
        "unit_nps": pulse.nps(),
    });
    context.print(&value, |v| {
        outln!(
            context,
            "pulse of pod {}, {}: {} answers ({} promoters, {} passives, {} detractors), unit NPS {}",
            v["pod"].as_str().unwrap_or("-"),
            quarter,
            pulse.responses(),
            pulse.promoters,
            pulse.passives,
            pulse.detractors,
            show(&v["unit_nps"])
        );
    })?;
    Ok(exit::OK)
}
