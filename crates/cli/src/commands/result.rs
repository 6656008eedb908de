//! `result verify`: a concluded experiment's signed result, recomputed from its sufficient statistics.

use clap::Subcommand;
use node::Node;

use crate::context::Context;
use crate::exit::{self, input_error};

#[derive(Debug, Subcommand)]
pub enum ResultCommand {
    /// Recompute a concluded experiment's lifts, intervals, p-values, chances to win, SRM and verdict from the
    /// signed sufficient statistics in the registry (CUPED and ratio metrics included) and say whether they match
    /// what its pod stored. Exit 0 when they match, 1 when they do not.
    Verify {
        /// Experiment key.
        key: String,
    },
}

pub fn run(context: &Context, node: &Node, command: ResultCommand) -> anyhow::Result<u8> {
    match command {
        ResultCommand::Verify { key } => verify(context, node, &key),
    }
}

fn verify(context: &Context, node: &Node, key: &str) -> anyhow::Result<u8> {
    let view = node.shared_view();
    let Some(experiment) = view.experiments.get(key) else {
        return Err(input_error(format!("KEY: no experiment `{key}`")));
    };
    let Some(summary) = view.results.get(key) else {
        return Err(input_error(format!(
            "KEY: `{key}` has no stored result (its status is {}); a pod stores one with `experiment conclude`",
            serde_json::to_value(experiment.status)?
        )));
    };
    let weights: Vec<f64> = experiment.variants.iter().map(|v| v.weight).collect();
    let verification = analysis::verify::verify(summary, &weights)
        .map_err(|e| input_error(format!("result of {key} cannot be recomputed: {e}")))?;
    let value = serde_json::to_value(&verification)?;
    context.print(&value, |_| {
        let v = &verification;
        outln!(
            context,
            "{key}: {} (alpha {}; pod decided {}, {})",
            if v.matches {
                "the stored result matches its recomputation"
            } else {
                "the stored result does NOT match its recomputation"
            },
            v.alpha,
            v.decision.as_str(),
            if v.decision_follows_verdict {
                "as the verdict suggests"
            } else {
                "not what the verdict suggests"
            }
        );
        outln!(
            context,
            "verdict: stored {}, recomputed {}; SRM p-value stored {:.6}, recomputed {:.6}",
            v.stored.verdict,
            v.recomputed.verdict,
            v.stored.srm_p_value,
            v.recomputed.srm_p_value
        );
        for (stored, recomputed) in v.stored.metrics.iter().zip(&v.recomputed.metrics) {
            for (s, r) in stored.lifts.iter().zip(&recomputed.lifts) {
                outln!(
                    context,
                    "  {:<24} {:<12} {:>5} lift stored {:+.4}% recomputed {:+.4}%  p stored {:.6} recomputed {:.6}",
                    stored.metric,
                    s.variant,
                    if stored.cuped { "cuped" } else { &stored.kind },
                    s.relative_lift * 100.0,
                    r.relative_lift * 100.0,
                    s.p_value,
                    r.p_value
                );
            }
        }
        for difference in &v.differences {
            outln!(context, "  differs: {difference}");
        }
    })?;
    Ok(if verification.matches {
        exit::OK
    } else {
        exit::FAILURE
    })
}
