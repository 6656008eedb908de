//! Overlap detection when an experiment is registered: another pod's experiment on the same primary metric, with an
//! overlapping audience and overlapping dates, or with a very similar hypothesis, is flagged for council approval.

use std::collections::BTreeSet;

use crate::{Experiment, ExperimentStatus};

/// Word-set (Jaccard) similarity of two hypotheses above which they count as the same idea.
pub const SIMILAR_HYPOTHESIS: f64 = 0.6;

/// Keys of experiments in `others` (of other pods, not concluded or stopped) that `candidate` overlaps.
pub fn overlapping<'a>(
    candidate: &Experiment,
    others: impl IntoIterator<Item = &'a Experiment>,
) -> Vec<String> {
    others
        .into_iter()
        .filter(|o| o.pod != candidate.pod && o.key != candidate.key)
        .filter(|o| {
            matches!(
                o.status,
                ExperimentStatus::Draft | ExperimentStatus::Running
            )
        })
        .filter(|o| {
            let same_metric =
                o.primary_metric.is_some() && o.primary_metric == candidate.primary_metric;
            let same_test =
                same_metric && audiences_overlap(candidate, o) && dates_overlap(candidate, o);
            same_test || hypothesis_similarity(candidate, o) >= SIMILAR_HYPOTHESIS
        })
        .map(|o| o.key.clone())
        .collect()
}

fn audiences_overlap(a: &Experiment, b: &Experiment) -> bool {
    let field = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    field(&a.audience.region, &b.audience.region) && field(&a.audience.segment, &b.audience.segment)
}

fn dates_overlap(a: &Experiment, b: &Experiment) -> bool {
    let starts_before_end = |start: &Option<String>, end: &Option<String>| match (start, end) {
        (Some(s), Some(e)) => s <= e,
        _ => true,
    };
    starts_before_end(&a.start_date, &b.end_date) && starts_before_end(&b.start_date, &a.end_date)
}

fn words(e: &Experiment) -> BTreeSet<String> {
    format!(
        "{} {} {}",
        e.hypothesis.change, e.hypothesis.then, e.hypothesis.because
    )
    .to_lowercase()
    .split(|c: char| !c.is_alphanumeric())
    .filter(|w| w.len() > 2)
    .map(str::to_owned)
    .collect()
}

/// Jaccard similarity of the hypotheses' words.
pub fn hypothesis_similarity(a: &Experiment, b: &Experiment) -> f64 {
    let (x, y) = (words(a), words(b));
    let union = x.union(&y).count();
    if union == 0 {
        return 0.0;
    }
    x.intersection(&y).count() as f64 / union as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Audience, Hypothesis, Variant};

    fn experiment(
        key: &str,
        pod: &str,
        metric: &str,
        hypothesis: &str,
        region: &str,
    ) -> Experiment {
        Experiment {
            key: key.into(),
            pod: pod.into(),
            hypothesis: Hypothesis::parse(hypothesis),
            funnel_stage: Default::default(),
            audience: Audience {
                region: Some(region.into()),
                segment: None,
            },
            variants: vec![
                Variant {
                    key: "a".into(),
                    weight: 0.5,
                },
                Variant {
                    key: "b".into(),
                    weight: 0.5,
                },
            ],
            primary_metric: Some(metric.into()),
            guardrail_metrics: vec![],
            start_date: Some("2026-11-01".into()),
            end_date: Some("2026-11-30".into()),
            cost: 0.0,
            status: ExperimentStatus::Running,
            high_impact: false,
            overlaps_with: vec![],
            created_by: String::new(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn same_metric_and_audience_in_another_pod_overlaps() {
        let a = experiment("a", "emea", "signup", "shorter form", "eu");
        let b = experiment("b", "apac", "signup", "new pricing page", "eu");
        let c = experiment("c", "apac", "signup", "new pricing page", "asia");
        let d = experiment("d", "emea", "signup", "new pricing page", "eu");
        assert_eq!(overlapping(&a, [&b, &c, &d]), vec!["b".to_owned()]);
    }

    #[test]
    fn similar_hypothesis_overlaps_whatever_the_metric() {
        let a = experiment(
            "a",
            "emea",
            "m1",
            "if we shorten the signup form then activation rises",
            "eu",
        );
        let b = experiment(
            "b",
            "apac",
            "m2",
            "if we shorten the signup form then activation rises a lot",
            "asia",
        );
        assert_eq!(overlapping(&a, [&b]), vec!["b".to_owned()]);
    }
}
