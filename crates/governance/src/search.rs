//! Learnings search across the federation: Okapi BM25 over each learning's title, body and tags (the terms of
//! [`crate::overlap::terms`]: stemmed, stop words dropped), with filters on pod, funnel stage (of the experiment the
//! learning is about), outcome and tag.

use std::collections::HashMap;

use model::{FunnelStage, Learning, Outcome, RegistryView};

use crate::overlap::terms;

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;
/// BM25's length normalisation.
const B: f64 = 0.75;

/// Which learnings to consider.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    /// Only learnings shared from this pod's document.
    pub pod: Option<String>,
    /// Only learnings about an experiment at this funnel stage.
    pub funnel_stage: Option<FunnelStage>,
    /// Only with this outcome.
    pub outcome: Option<Outcome>,
    /// Only with this tag.
    pub tag: Option<String>,
}

impl Filters {
    fn admit(&self, view: &RegistryView, learning: &Learning) -> bool {
        let pod = self
            .pod
            .as_ref()
            .is_none_or(|pod| learning.source == format!("pod/{pod}"));
        let stage = self.funnel_stage.is_none_or(|stage| {
            learning
                .experiment
                .as_ref()
                .and_then(|key| view.experiments.get(key))
                .is_some_and(|e| e.funnel_stage == stage)
        });
        let outcome = self.outcome.is_none_or(|o| learning.outcome == Some(o));
        let tag = self.tag.as_ref().is_none_or(|t| learning.tags.contains(t));
        pod && stage && outcome && tag
    }
}

/// The learnings that pass `filters`, ranked by BM25 relevance to `query` (best first, ties by id); every learning
/// that passes, newest first, when the query has no terms. Each with its score.
pub fn search<'a>(
    view: &'a RegistryView,
    query: &str,
    filters: &Filters,
) -> Vec<(&'a Learning, f64)> {
    let candidates: Vec<&Learning> = view
        .learnings
        .values()
        .filter(|l| filters.admit(view, l))
        .collect();
    let query = terms(query);
    if query.is_empty() {
        let mut all: Vec<(&Learning, f64)> = candidates.into_iter().map(|l| (l, 0.0)).collect();
        all.sort_by(|a, b| {
            b.0.created_at_ms
                .cmp(&a.0.created_at_ms)
                .then_with(|| a.0.id.cmp(&b.0.id))
        });
        return all;
    }
    // Statistics over every learning of the federation, so a score does not depend on the filters.
    let documents: Vec<HashMapTerms> = view.learnings.values().map(document).collect();
    let n = documents.len() as f64;
    let average = documents.iter().map(|d| d.length).sum::<f64>() / n.max(1.0);
    let mut df: HashMap<&str, f64> = HashMap::new();
    for term in query.keys() {
        let count = documents
            .iter()
            .filter(|d| d.counts.contains_key(term))
            .count();
        df.insert(term, count as f64);
    }
    let mut hits: Vec<(&Learning, f64)> = candidates
        .into_iter()
        .filter_map(|learning| {
            let doc = document(learning);
            let score: f64 = query
                .keys()
                .map(|term| {
                    let tf = doc.counts.get(term).copied().unwrap_or(0.0);
                    if tf == 0.0 {
                        return 0.0;
                    }
                    let df = df[term.as_str()];
                    let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                    idf * tf * (K1 + 1.0)
                        / (tf + K1 * (1.0 - B + B * doc.length / average.max(1.0)))
                })
                .sum();
            (score > 0.0).then_some((learning, score))
        })
        .collect();
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.id.cmp(&b.0.id)));
    hits
}

struct HashMapTerms {
    counts: HashMap<String, f64>,
    length: f64,
}

fn document(learning: &Learning) -> HashMapTerms {
    let text = format!(
        "{} {} {}",
        learning.title,
        learning.body,
        learning.tags.join(" ")
    );
    let counts: HashMap<String, f64> = terms(&text)
        .into_iter()
        .map(|(term, count)| (term, f64::from(count)))
        .collect();
    let length = counts.values().sum();
    HashMapTerms { counts, length }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learning(
        id: &str,
        source: &str,
        title: &str,
        body: &str,
        outcome: Option<Outcome>,
    ) -> Learning {
        Learning {
            id: id.into(),
            title: title.into(),
            body: body.into(),
            outcome,
            tags: vec!["pricing".into()],
            experiment: None,
            source: source.into(),
            author: String::new(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn ranks_by_relevance_and_filters() {
        let mut view = RegistryView::default();
        for l in [
            learning(
                "a",
                "pod/emea",
                "Short signup forms",
                "Two fields beat five on signup",
                Some(Outcome::Win),
            ),
            learning(
                "b",
                "pod/apac",
                "Pricing page logos",
                "Customer logos lifted trials; signup unchanged",
                None,
            ),
            learning(
                "c",
                "partner/acme",
                "Onboarding emails",
                "A welcome series did nothing",
                Some(Outcome::Loss),
            ),
        ] {
            view.learnings.insert(format!("{}/{}", l.source, l.id), l);
        }
        let ids = |hits: Vec<(&Learning, f64)>| {
            hits.into_iter()
                .map(|(l, _)| l.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(search(&view, "signup forms", &Filters::default())),
            ["a", "b"]
        );
        let apac = Filters {
            pod: Some("apac".into()),
            ..Filters::default()
        };
        assert_eq!(ids(search(&view, "signup", &apac)), ["b"]);
        let losses = Filters {
            outcome: Some(Outcome::Loss),
            ..Filters::default()
        };
        assert_eq!(ids(search(&view, "", &losses)), ["c"]);
        assert!(search(&view, "zebra quantum", &Filters::default()).is_empty());
    }
}
