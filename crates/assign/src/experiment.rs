//! The experiment definition and [`assign`], which takes a user id through the SDK's checks to a variation.

use serde::{Deserialize, Serialize};

use crate::buckets;
use crate::error::Error;
use crate::hash;

/// Most variations an experiment may have: with hash version 1 there are only 1000 buckets, and beyond a few
/// dozen variations an experiment has no statistical power anyway.
pub const MAX_VARIATIONS: u32 = 1_000;
/// The hash version the SDKs use when none is given.
const DEFAULT_HASH_VERSION: u8 = 1;
/// Coverage when none is given: everyone.
const FULL_COVERAGE: f64 = 1.0;

/// What decides a user's variation in one experiment (GrowthBook's `Experiment`, less targeting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// The experiment key; also the seed when [`Experiment::seed`] is absent or empty.
    pub key: String,
    /// Number of variations, the control (0) included.
    pub variations: u32,
    /// Share of traffic per variation, summing to 1; equal shares when absent.
    #[serde(default)]
    pub weights: Option<Vec<f64>>,
    /// Share of users included, in [0, 1].
    #[serde(default = "full_coverage")]
    pub coverage: f64,
    /// Hash seed; the key when absent or empty.
    #[serde(default)]
    pub seed: Option<String>,
    /// 1 (GrowthBook's original, biased) or 2. 0 means 1, as in the SDKs (`hashVersion || 1`).
    #[serde(default = "default_hash_version")]
    pub hash_version: u8,
    /// Restricts the experiment to a slice of users shared with other experiments of the same namespace.
    #[serde(default)]
    pub namespace: Option<Namespace>,
}

/// A namespace slice: users whose namespace hash falls in `[start, end)` are eligible.
///
/// Experiments in the same namespace with disjoint ranges never share a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    /// The namespace id, hashed under the seed `__` + id.
    pub id: String,
    /// Start of the slice, in [0, 1].
    pub start: f64,
    /// End of the slice (exclusive), in [start, 1].
    pub end: f64,
}

/// The outcome of assigning one user to one experiment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    /// Whether the user takes part (and is counted) in the experiment.
    pub in_experiment: bool,
    /// The variation index; `None` whenever `in_experiment` is false.
    pub variation: Option<u32>,
    /// The user's hash in [0, 1); `None` when a check excluded the user before hashing.
    pub hash: Option<f64>,
    /// Why the user is not in the experiment; `None` when they are.
    pub exclusion: Option<Exclusion>,
}

/// Why a user is not in an experiment, one per SDK check, in the order they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclusion {
    /// The experiment has fewer than two variations.
    TooFewVariations,
    /// The user id is empty (the SDKs' missing hash attribute).
    EmptyUserId,
    /// The user is outside the experiment's namespace slice.
    OutsideNamespace,
    /// The hash version is neither 1 nor 2.
    UnknownHashVersion,
    /// The user's hash falls outside every variation's range (coverage below 1).
    OutsideCoverage,
}

impl Exclusion {
    /// A short human-readable reason.
    pub fn describe(self) -> &'static str {
        match self {
            Exclusion::TooFewVariations => "fewer than 2 variations",
            Exclusion::EmptyUserId => "empty user id",
            Exclusion::OutsideNamespace => "outside the namespace",
            Exclusion::UnknownHashVersion => "unknown hash version",
            Exclusion::OutsideCoverage => "outside coverage",
        }
    }
}

fn full_coverage() -> f64 {
    FULL_COVERAGE
}

fn default_hash_version() -> u8 {
    DEFAULT_HASH_VERSION
}

impl Experiment {
    /// An experiment with GrowthBook's defaults: equal weights, full coverage, the key as seed, hash version 1.
    pub fn new(key: impl Into<String>, variations: u32) -> Self {
        Experiment {
            key: key.into(),
            variations,
            weights: None,
            coverage: FULL_COVERAGE,
            seed: None,
            hash_version: DEFAULT_HASH_VERSION,
            namespace: None,
        }
    }

    /// The seed actually hashed: the seed, or the key when the seed is absent or empty (the SDKs' `seed || key`).
    pub fn effective_seed(&self) -> &str {
        match self.seed.as_deref() {
            Some(seed) if !seed.is_empty() => seed,
            _ => &self.key,
        }
    }

    /// The hash version actually used: 0 means 1 (the SDKs' `hashVersion || 1`).
    pub fn effective_hash_version(&self) -> u8 {
        if self.hash_version == 0 {
            DEFAULT_HASH_VERSION
        } else {
            self.hash_version
        }
    }

    /// Checks that the definition needs none of the repairs [`assign`] would make, and is within limits.
    pub fn validate(&self) -> Result<(), Error> {
        let key = || self.key.clone();
        if self.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if self.variations < 2 {
            return Err(Error::TooFewVariations {
                key: key(),
                variations: self.variations,
            });
        }
        if self.variations > MAX_VARIATIONS {
            return Err(Error::TooManyVariations {
                key: key(),
                variations: self.variations,
                max: MAX_VARIATIONS,
            });
        }
        if let Some(weights) = &self.weights {
            validate_weights(&self.key, weights, self.variations)?;
        }
        if !(0.0..=1.0).contains(&self.coverage) {
            return Err(Error::CoverageOutOfRange {
                key: key(),
                coverage: self.coverage,
            });
        }
        if !matches!(self.hash_version, 1 | 2) {
            return Err(Error::UnknownHashVersion {
                key: key(),
                version: self.hash_version,
            });
        }
        if let Some(namespace) = &self.namespace {
            let ordered =
                0.0 <= namespace.start && namespace.start <= namespace.end && namespace.end <= 1.0;
            if !ordered {
                return Err(Error::NamespaceRange {
                    key: key(),
                    namespace: namespace.id.clone(),
                    start: namespace.start,
                    end: namespace.end,
                });
            }
        }
        Ok(())
    }
}

fn validate_weights(key: &str, weights: &[f64], variations: u32) -> Result<(), Error> {
    if weights.len() != variations as usize {
        return Err(Error::WeightsLength {
            key: key.to_owned(),
            weights: weights.len(),
            variations,
        });
    }
    if let Some((index, &weight)) = weights
        .iter()
        .enumerate()
        .find(|(_, w)| !w.is_finite() || **w < 0.0)
    {
        return Err(Error::WeightInvalid {
            key: key.to_owned(),
            index,
            weight,
        });
    }
    let sum: f64 = weights.iter().sum();
    if !(0.99..=1.01).contains(&sum) {
        return Err(Error::WeightsSum {
            key: key.to_owned(),
            sum,
        });
    }
    Ok(())
}

/// Assigns `user_id` to a variation of `experiment` exactly as a GrowthBook SDK would.
///
/// The checks run in the SDK's order: at least two variations, a non-empty user id, the namespace (hashed
/// separately), a known hash version, then the bucket ranges from coverage and weights. A definition that
/// [`Experiment::validate`] would reject is repaired as the SDK repairs it rather than refused.
pub fn assign(experiment: &Experiment, user_id: &str) -> Assignment {
    if experiment.variations < 2 {
        return excluded(Exclusion::TooFewVariations, None);
    }
    if user_id.is_empty() {
        return excluded(Exclusion::EmptyUserId, None);
    }
    if let Some(namespace) = &experiment.namespace
        && !buckets::in_namespace(user_id, namespace)
    {
        return excluded(Exclusion::OutsideNamespace, None);
    }
    let Some(n) = hash::hash(
        experiment.effective_seed(),
        user_id,
        experiment.effective_hash_version(),
    ) else {
        return excluded(Exclusion::UnknownHashVersion, None);
    };
    let ranges = buckets::range_iter(
        experiment.variations,
        experiment.coverage,
        experiment.weights.as_deref(),
    );
    match buckets::first_containing(n, ranges) {
        Some(variation) => Assignment {
            in_experiment: true,
            variation: Some(variation),
            hash: Some(n),
            exclusion: None,
        },
        None => excluded(Exclusion::OutsideCoverage, Some(n)),
    }
}

fn excluded(exclusion: Exclusion, hash: Option<f64>) -> Assignment {
    Assignment {
        in_experiment: false,
        variation: None,
        hash,
        exclusion: Some(exclusion),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn defaults_follow_the_sdk() {
        let experiment = Experiment::new("checkout-button", 2);
        assert_eq!(experiment.effective_seed(), "checkout-button");
        assert_eq!(experiment.effective_hash_version(), 1);
        assert_eq!(experiment.validate(), Ok(()));
        let empty_seed = Experiment {
            seed: Some(String::new()),
            hash_version: 0,
            ..experiment
        };
        assert_eq!(empty_seed.effective_seed(), "checkout-button");
        assert_eq!(empty_seed.effective_hash_version(), 1);
    }

    #[test]
    fn the_published_three_way_cases_hold() {
        // GrowthBook's "empty experiment rule" cases: key "feature", three variations, hash version 1.
        let experiment = Experiment::new("feature", 3);
        for (user, variation, hash) in [("123", 2, 0.863), ("456", 0, 0.178), ("fds", 1, 0.514)] {
            let got = assign(&experiment, user);
            assert_eq!(
                (got.variation, got.hash),
                (Some(variation), Some(hash)),
                "user {user}"
            );
        }
    }

    #[test]
    fn exclusions_come_in_the_sdk_order() {
        let one = Experiment::new("one", 1);
        assert_eq!(
            assign(&one, "u").exclusion,
            Some(Exclusion::TooFewVariations)
        );
        let two = Experiment::new("two", 2);
        assert_eq!(assign(&two, "").exclusion, Some(Exclusion::EmptyUserId));
        let nowhere = Namespace {
            id: "pricing".into(),
            start: 0.0,
            end: 0.0,
        };
        let with_namespace = Experiment {
            namespace: Some(nowhere),
            hash_version: 9,
            ..two.clone()
        };
        assert_eq!(
            assign(&with_namespace, "u"),
            excluded(Exclusion::OutsideNamespace, None)
        );
        let bad_version = Experiment {
            hash_version: 9,
            ..two.clone()
        };
        assert_eq!(
            assign(&bad_version, "u"),
            excluded(Exclusion::UnknownHashVersion, None)
        );
        let uncovered = Experiment {
            coverage: 0.0,
            ..two
        };
        let got = assign(&uncovered, "u");
        assert_eq!(
            (got.exclusion, got.hash.is_some()),
            (Some(Exclusion::OutsideCoverage), true)
        );
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let base = Experiment::new("e", 2);
        let cases = [
            (
                Experiment {
                    key: String::new(),
                    ..base.clone()
                },
                "empty",
            ),
            (
                Experiment {
                    variations: 1,
                    ..base.clone()
                },
                "at least 2",
            ),
            (
                Experiment {
                    variations: MAX_VARIATIONS + 1,
                    ..base.clone()
                },
                "at most",
            ),
            (
                Experiment {
                    weights: Some(vec![1.0]),
                    ..base.clone()
                },
                "1 weights for 2",
            ),
            (
                Experiment {
                    weights: Some(vec![1.2, -0.2]),
                    ..base.clone()
                },
                "weight 1 is -0.2",
            ),
            (
                Experiment {
                    weights: Some(vec![0.3, 0.3]),
                    ..base.clone()
                },
                "sum to 0.6",
            ),
            (
                Experiment {
                    coverage: 1.5,
                    ..base.clone()
                },
                "coverage 1.5",
            ),
            (
                Experiment {
                    coverage: f64::NAN,
                    ..base.clone()
                },
                "coverage NaN",
            ),
            (
                Experiment {
                    hash_version: 3,
                    ..base.clone()
                },
                "hash version 3",
            ),
            (
                Experiment {
                    namespace: Some(Namespace {
                        id: "n".into(),
                        start: 0.6,
                        end: 0.4,
                    }),
                    ..base
                },
                "namespace n",
            ),
        ];
        for (experiment, needle) in cases {
            let message = experiment.validate().expect_err(needle).to_string();
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
        }
    }

    #[test]
    fn shares_follow_the_weights_on_many_users() {
        let weights = vec![0.2, 0.3, 0.5];
        let experiment = Experiment {
            weights: Some(weights.clone()),
            hash_version: 2,
            ..Experiment::new("dist", 3)
        };
        let users = 20_000;
        let mut counts = [0_u32; 3];
        for i in 0..users {
            let variation = assign(&experiment, &format!("user-{i}"))
                .variation
                .expect("full coverage");
            counts[variation as usize] += 1;
        }
        for (count, weight) in counts.iter().zip(weights) {
            let share = f64::from(*count) / f64::from(users);
            assert!(
                (share - weight).abs() < 0.015,
                "share {share} for weight {weight}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn variation_is_below_the_variation_count(
            user in "\\PC{1,20}", key in "[a-z-]{1,12}", variations in 2_u32..20, coverage in 0.0..=1.0_f64,
            version in 1_u8..=2,
        ) {
            let experiment = Experiment { coverage, hash_version: version, ..Experiment::new(key, variations) };
            let got = assign(&experiment, &user);
            prop_assert_eq!(got.in_experiment, got.variation.is_some());
            prop_assert!(got.variation.is_none_or(|v| v < variations));
            prop_assert!(got.hash.is_some_and(|n| (0.0..1.0).contains(&n)));
        }

        #[test]
        fn assignment_is_deterministic(user in "\\PC{1,20}", key in "\\PC{1,12}", variations in 2_u32..20) {
            let experiment = Experiment::new(key, variations);
            prop_assert_eq!(assign(&experiment, &user), assign(&experiment.clone(), &user.clone()));
        }

        #[test]
        fn lowering_coverage_never_moves_a_user(user in "\\PC{1,20}", low in 0.0..=1.0_f64, high in 0.0..=1.0_f64) {
            let (low, high) = if low <= high { (low, high) } else { (high, low) };
            let base = Experiment { weights: Some(vec![0.25, 0.25, 0.5]), ..Experiment::new("cov", 3) };
            let narrow = assign(&Experiment { coverage: low, ..base.clone() }, &user);
            let wide = assign(&Experiment { coverage: high, ..base }, &user);
            if narrow.in_experiment {
                prop_assert_eq!(narrow.variation, wide.variation);
            }
        }

        #[test]
        fn shares_roughly_match_random_weights(raw in proptest::collection::vec(0.05..1.0_f64, 2..5)) {
            let total: f64 = raw.iter().sum();
            let weights: Vec<f64> = raw.iter().map(|w| w / total).collect();
            let variations = u32::try_from(weights.len()).expect("at most 4 weights");
            let experiment = Experiment {
                weights: Some(weights.clone()),
                hash_version: 2,
                ..Experiment::new("weighted", variations)
            };
            let users = 5_000;
            let mut counts = vec![0_u32; weights.len()];
            for i in 0..users {
                if let Some(v) = assign(&experiment, &format!("u{i}")).variation {
                    counts[v as usize] += 1;
                }
            }
            for (count, weight) in counts.iter().zip(&weights) {
                prop_assert!((f64::from(*count) / f64::from(users) - weight).abs() < 0.035);
            }
        }
    }
}
