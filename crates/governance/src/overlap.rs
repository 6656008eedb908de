//! Overlap detection over the whole registry: two experiments of different pods overlap when they test the same
//! primary metric on an audience that can hold the same users (region, segment and assignment namespace range)
//! over overlapping dates, or when their hypotheses say the same thing (TF-IDF cosine similarity).
//!
//! [`OverlapIndex`] buckets experiments by primary metric and keeps an inverted index of hypothesis terms, so
//! finding the overlaps of one experiment looks at its metric's bucket and at experiments sharing a rare term, not
//! at the whole registry.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use model::Experiment;
use serde::Serialize;

/// TF-IDF cosine similarity of two hypotheses at or above which they count as the same idea.
pub const SIMILAR_HYPOTHESIS: f64 = 0.5;

/// Terms in more experiments than this (and more than [`COMMON_TERM_SHARE`] of all) do not propose candidates for
/// the similarity test: a pair sharing only such terms has a low cosine. They still count in the cosine itself.
const COMMON_TERM_MIN: usize = 32;
/// See [`COMMON_TERM_MIN`].
const COMMON_TERM_SHARE: f64 = 0.01;

/// Why two experiments overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverlapKind {
    /// Same primary metric, audience, namespace range and dates.
    SameTest,
    /// Their hypotheses say the same thing.
    SimilarHypothesis,
}

/// One experiment another overlaps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overlap {
    /// The other experiment's key.
    pub experiment: String,
    /// Its pod.
    pub pod: String,
    /// Why they overlap (the same test wins when both hold).
    pub why: OverlapKind,
    /// Cosine similarity of the hypotheses.
    pub similarity: f64,
}

/// Words that say nothing about what an experiment tests.
const STOP_WORDS: &[&str] = &[
    "about", "after", "all", "also", "and", "any", "are", "because", "been", "but", "can", "fewer",
    "for", "from", "has", "have", "into", "its", "less", "more", "most", "not", "our", "should",
    "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "those",
    "was", "way", "were", "what", "when", "which", "while", "who", "will", "with", "would", "you",
    "your",
];

/// The terms of a text: lowercase words of three letters or more, stop words dropped, light suffix stemming
/// (`signups` -> `signup`, `shortening` -> `shorten`), each with its count.
pub fn terms(text: &str) -> BTreeMap<String, u32> {
    let mut terms = BTreeMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() > 2 && !STOP_WORDS.contains(&w.as_str()))
    {
        *terms.entry(stem(&word)).or_insert(0) += 1;
    }
    terms
}

fn stem(word: &str) -> String {
    let cut = |suffix: &str, keep: usize| {
        word.strip_suffix(suffix)
            .filter(|stem| stem.len() >= keep)
            .map(str::to_owned)
    };
    cut("ing", 4)
        .or_else(|| cut("ies", 3).map(|s| s + "y"))
        .or_else(|| cut("ed", 4))
        .or_else(|| {
            cut("es", 4).filter(|s| s.ends_with("ss") || s.ends_with('x') || s.ends_with("ch"))
        })
        .or_else(|| cut("s", 3).filter(|s| !s.ends_with('s')))
        .unwrap_or_else(|| word.to_owned())
}

/// The words of an experiment's hypothesis that the similarity measure reads: the change, what follows and why.
pub fn hypothesis_text(e: &Experiment) -> String {
    format!(
        "{} {} {}",
        e.hypothesis.change, e.hypothesis.then, e.hypothesis.because
    )
}

/// A unit-length TF-IDF vector, terms sorted by id.
type Vector = Vec<(u32, f64)>;

fn cosine(a: &Vector, b: &Vector) -> f64 {
    let (mut i, mut j, mut dot) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                dot += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    dot
}

/// Whether two experiments can hold the same users at the same time: regions and segments equal where both name
/// one, namespace ranges that intersect, and date ranges that intersect (an open end overlaps everything).
pub fn same_audience_and_dates(a: &Experiment, b: &Experiment) -> bool {
    let field = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    let namespaces = match (&a.namespace, &b.namespace) {
        (Some(x), Some(y)) => x.intersects(y),
        _ => true,
    };
    let starts_before_end = |start: &Option<String>, end: &Option<String>| match (start, end) {
        (Some(s), Some(e)) => s <= e,
        _ => true,
    };
    field(&a.audience.region, &b.audience.region)
        && field(&a.audience.segment, &b.audience.segment)
        && namespaces
        && starts_before_end(&a.start_date, &b.end_date)
        && starts_before_end(&b.start_date, &a.end_date)
}

/// The experiments that can overlap, indexed.
pub struct OverlapIndex<'a> {
    experiments: Vec<&'a Experiment>,
    positions: HashMap<&'a str, usize>,
    vectors: Vec<Vector>,
    by_metric: HashMap<&'a str, Vec<usize>>,
    postings: HashMap<u32, Vec<usize>>,
    term_ids: HashMap<String, u32>,
    document_frequency: Vec<usize>,
}

impl<'a> OverlapIndex<'a> {
    /// Indexes `experiments` (the ones that are active; the caller decides which).
    pub fn new(experiments: impl IntoIterator<Item = &'a Experiment>) -> Self {
        let experiments: Vec<&Experiment> = experiments.into_iter().collect();
        let mut term_ids: HashMap<String, u32> = HashMap::new();
        let mut document_frequency: Vec<usize> = Vec::new();
        let mut counted: Vec<Vec<(u32, u32)>> = Vec::with_capacity(experiments.len());
        for e in &experiments {
            let mut ids = Vec::new();
            for (term, count) in terms(&hypothesis_text(e)) {
                let next = term_ids.len() as u32;
                let id = *term_ids.entry(term).or_insert(next);
                if id as usize == document_frequency.len() {
                    document_frequency.push(0);
                }
                document_frequency[id as usize] += 1;
                ids.push((id, count));
            }
            counted.push(ids);
        }
        let mut index = Self {
            positions: experiments
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key.as_str(), i))
                .collect(),
            vectors: Vec::with_capacity(experiments.len()),
            by_metric: HashMap::new(),
            postings: HashMap::new(),
            term_ids,
            document_frequency,
            experiments,
        };
        let common = index.common_threshold();
        for (i, ids) in counted.into_iter().enumerate() {
            let vector = index.vector(ids);
            for (term, _) in &vector {
                if index.document_frequency[*term as usize] <= common {
                    index.postings.entry(*term).or_default().push(i);
                }
            }
            index.vectors.push(vector);
            if let Some(metric) = index.experiments[i].primary_metric.as_deref() {
                index.by_metric.entry(metric).or_default().push(i);
            }
        }
        index
    }

    fn common_threshold(&self) -> usize {
        COMMON_TERM_MIN.max((self.experiments.len() as f64 * COMMON_TERM_SHARE) as usize)
    }

    /// Smoothed inverse document frequency (as scikit-learn's `smooth_idf`): never zero, so two hypotheses that
    /// share every word are similar even in a registry of two.
    fn idf(&self, term: u32) -> f64 {
        let n = self.experiments.len() as f64;
        let df = self
            .document_frequency
            .get(term as usize)
            .copied()
            .unwrap_or(0) as f64;
        ((1.0 + n) / (1.0 + df)).ln() + 1.0
    }

    fn vector(&self, mut ids: Vec<(u32, u32)>) -> Vector {
        ids.sort_unstable();
        let mut vector: Vector = ids
            .into_iter()
            .map(|(id, count)| (id, (1.0 + f64::from(count).ln()) * self.idf(id)))
            .collect();
        let norm = vector.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (_, w) in &mut vector {
                *w /= norm;
            }
        }
        vector
    }

    /// The indexed experiments whose hypothesis says what `text` says (TF-IDF cosine at or above
    /// [`SIMILAR_HYPOTHESIS`]), most similar first (then by key), with the similarity.
    pub fn similar_to(&self, text: &str) -> Vec<(&'a Experiment, f64)> {
        let ids = terms(text)
            .into_iter()
            .filter_map(|(term, count)| Some((*self.term_ids.get(&term)?, count)))
            .collect();
        let vector = self.vector(ids);
        let mut similar: Vec<(&'a Experiment, f64)> = self
            .vectors
            .iter()
            .zip(&self.experiments)
            .map(|(v, e)| (*e, cosine(&vector, v)))
            .filter(|(_, similarity)| *similarity >= SIMILAR_HYPOTHESIS)
            .collect();
        similar.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.key.cmp(&b.0.key)));
        similar
    }

    /// The indexed experiments of other pods that `candidate` overlaps, sorted by key. `candidate` need not be
    /// indexed (a new experiment is checked before it is registered); when it is, it is skipped.
    pub fn overlaps_of(&self, candidate: &Experiment) -> Vec<Overlap> {
        let (own, vector) = self.vector_of(candidate);
        let mut proposed: BTreeSet<usize> = BTreeSet::new();
        if let Some(bucket) = candidate
            .primary_metric
            .as_deref()
            .and_then(|m| self.by_metric.get(m))
        {
            proposed.extend(bucket);
        }
        for (term, _) in &vector {
            if let Some(posting) = self.postings.get(term) {
                proposed.extend(posting);
            }
        }
        self.check(candidate, own, &vector, proposed.into_iter())
    }

    /// The same answer as [`OverlapIndex::overlaps_of`] without the index: `candidate` against every indexed
    /// experiment (the benchmark's baseline, and the test that the index misses nothing it should find).
    pub fn scan(&self, candidate: &Experiment) -> Vec<Overlap> {
        let (own, vector) = self.vector_of(candidate);
        self.check(candidate, own, &vector, 0..self.experiments.len())
    }

    /// The candidate's position in the index (when indexed) and its vector.
    fn vector_of(&self, candidate: &Experiment) -> (Option<usize>, Vector) {
        match self.positions.get(candidate.key.as_str()) {
            Some(&i) if std::ptr::eq(self.experiments[i], candidate) => {
                (Some(i), self.vectors[i].clone())
            }
            _ => {
                let ids = terms(&hypothesis_text(candidate))
                    .into_iter()
                    .filter_map(|(term, count)| Some((*self.term_ids.get(&term)?, count)))
                    .collect();
                (None, self.vector(ids))
            }
        }
    }

    /// The overlaps of every indexed experiment, in index order: each pair is tested once, candidates proposed as
    /// in [`OverlapIndex::overlaps_of`].
    pub fn all(&self) -> Vec<Vec<Overlap>> {
        let n = self.experiments.len();
        let mut found: Vec<Vec<Overlap>> = vec![Vec::new(); n];
        // `seen[j] == i + 1`: j was already proposed for i.
        let mut seen: Vec<usize> = vec![0; n];
        let mut proposed: Vec<usize> = Vec::new();
        for i in 0..n {
            let e = self.experiments[i];
            proposed.clear();
            let bucket = e
                .primary_metric
                .as_deref()
                .and_then(|m| self.by_metric.get(m));
            let postings = self.vectors[i]
                .iter()
                .filter_map(|(term, _)| self.postings.get(term));
            for &j in bucket.into_iter().chain(postings).flatten() {
                if j > i && seen[j] != i + 1 {
                    seen[j] = i + 1;
                    proposed.push(j);
                }
            }
            for &j in &proposed {
                let other = self.experiments[j];
                if let Some((why, similarity)) = self.pair(e, &self.vectors[i], j) {
                    found[i].push(Overlap {
                        experiment: other.key.clone(),
                        pod: other.pod.clone(),
                        why,
                        similarity,
                    });
                    found[j].push(Overlap {
                        experiment: e.key.clone(),
                        pod: e.pod.clone(),
                        why,
                        similarity,
                    });
                }
            }
        }
        for list in &mut found {
            list.sort_by(|a, b| a.experiment.cmp(&b.experiment));
        }
        found
    }

    /// Whether `candidate` (with `vector`) overlaps indexed experiment `j`, why, and the hypotheses' similarity.
    fn pair(
        &self,
        candidate: &Experiment,
        vector: &Vector,
        j: usize,
    ) -> Option<(OverlapKind, f64)> {
        let other = self.experiments[j];
        if other.pod == candidate.pod || other.key == candidate.key {
            return None;
        }
        let similarity = cosine(vector, &self.vectors[j]);
        let same_test = candidate.primary_metric.is_some()
            && candidate.primary_metric == other.primary_metric
            && same_audience_and_dates(candidate, other);
        let why = if same_test {
            OverlapKind::SameTest
        } else if similarity >= SIMILAR_HYPOTHESIS {
            OverlapKind::SimilarHypothesis
        } else {
            return None;
        };
        Some((why, (similarity * 1e6).round() / 1e6))
    }

    fn check(
        &self,
        candidate: &Experiment,
        own: Option<usize>,
        vector: &Vector,
        proposed: impl Iterator<Item = usize>,
    ) -> Vec<Overlap> {
        let mut found: Vec<Overlap> = proposed
            .filter(|i| Some(*i) != own)
            .filter_map(|j| {
                let (why, similarity) = self.pair(candidate, vector, j)?;
                let other = self.experiments[j];
                Some(Overlap {
                    experiment: other.key.clone(),
                    pod: other.pod.clone(),
                    why,
                    similarity,
                })
            })
            .collect();
        found.sort_by(|a, b| a.experiment.cmp(&b.experiment));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::experiment;

    #[test]
    fn all_pairs_find_what_each_candidate_finds() {
        let experiments: Vec<Experiment> = (0..60)
            .map(|i| {
                experiment(
                    &format!("e{i}"),
                    &format!("pod{}", i % 4),
                    &format!("m{}", i % 5),
                    &format!("word{} word{} word{} shared", i % 7, i % 11, i % 3),
                    &format!("r{}", i % 2),
                )
            })
            .collect();
        let index = OverlapIndex::new(experiments.iter());
        let all = index.all();
        for (i, e) in experiments.iter().enumerate() {
            assert_eq!(all[i], index.overlaps_of(e), "{}", e.key);
            assert_eq!(all[i], index.scan(e), "{}", e.key);
        }
        assert!(all.iter().any(|o| !o.is_empty()));
    }

    #[test]
    fn stems_and_stop_words() {
        let t = terms("If we shorten the signup forms then signups rise because fewer steps");
        let words: Vec<&str> = t.keys().map(String::as_str).collect();
        assert_eq!(words, ["form", "rise", "shorten", "signup", "step"]);
        assert_eq!(t["signup"], 2);
    }

    #[test]
    fn same_metric_and_audience_in_another_pod_overlaps() {
        let a = experiment("a", "emea", "signup", "shorter form", "eu");
        let b = experiment("b", "apac", "signup", "new pricing page", "eu");
        let c = experiment("c", "apac", "signup", "new pricing page", "asia");
        let d = experiment("d", "emea", "signup", "new pricing page", "eu");
        let index = OverlapIndex::new([&a, &b, &c, &d]);
        let found = index.overlaps_of(&a);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].experiment.as_str(), found[0].why),
            ("b", OverlapKind::SameTest)
        );
    }

    #[test]
    fn disjoint_namespace_ranges_do_not_overlap() {
        let mut a = experiment("a", "emea", "signup", "shorter form", "eu");
        let mut b = experiment("b", "apac", "signup", "new pricing page", "eu");
        a.namespace = Some("checkout:0:0.5".parse().unwrap());
        b.namespace = Some("checkout:0.5:1".parse().unwrap());
        assert!(OverlapIndex::new([&a, &b]).overlaps_of(&a).is_empty());
        b.namespace = Some("checkout:0.4:1".parse().unwrap());
        assert_eq!(OverlapIndex::new([&a, &b]).overlaps_of(&a).len(), 1);
        b.namespace = Some("other:0.5:1".parse().unwrap());
        assert_eq!(OverlapIndex::new([&a, &b]).overlaps_of(&a).len(), 1);
    }

    #[test]
    fn similar_hypotheses_overlap_whatever_the_metric_and_different_ones_do_not() {
        let a = experiment(
            "a",
            "emea",
            "m1",
            "if we shorten the signup form then activation rises because there are fewer steps",
            "eu",
        );
        let b = experiment(
            "b",
            "apac",
            "m2",
            "a shorter signup form raises activation: fewer steps",
            "asia",
        );
        let c = experiment(
            "c",
            "latam",
            "m3",
            "free shipping on the first order lifts repeat purchases",
            "br",
        );
        let index = OverlapIndex::new([&a, &b, &c]);
        let found = index.overlaps_of(&a);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].why, OverlapKind::SimilarHypothesis);
        assert!(found[0].similarity >= SIMILAR_HYPOTHESIS);
        assert!(index.overlaps_of(&c).is_empty());
        // A candidate not yet indexed is checked the same way.
        let mut d = b.clone();
        d.key = "d".into();
        d.pod = "nordics".into();
        assert_eq!(index.overlaps_of(&d).len(), 2);
    }
}
