//! From a hash to a variation: equal weights, bucket ranges from weights and coverage, and namespaces.
//!
//! Every function repeats the SDKs' floating-point arithmetic step by step (same operations, same order), so the
//! range ends match the JavaScript SDK bit for bit and a hash on a boundary falls on the same side.

use serde::{Deserialize, Serialize};

use crate::experiment::Namespace;
use crate::hash;

/// Weights whose sum falls outside this range are replaced by equal weights, as in the SDKs.
const WEIGHT_SUM_MIN: f64 = 0.99;
/// See [`WEIGHT_SUM_MIN`].
const WEIGHT_SUM_MAX: f64 = 1.01;
/// Namespaces are hashed with version 1 under the seed `__` + namespace id.
const NAMESPACE_SEED_PREFIX: &str = "__";

/// The half-open share `[start, end)` of the hash space that one variation receives.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BucketRange {
    /// First hash value inside the range.
    pub start: f64,
    /// First hash value past the range.
    pub end: f64,
}

impl BucketRange {
    /// Whether `n` falls in `[start, end)`.
    pub fn contains(&self, n: f64) -> bool {
        n >= self.start && n < self.end
    }
}

/// `variations` equal weights of `1 / variations` each (none for zero variations).
pub fn equal_weights(variations: u32) -> Vec<f64> {
    equal_weight_iter(variations).collect()
}

/// The weights actually used: the given ones or equal ones, without boxing (assignment stays allocation-free).
enum WeightIter<'a> {
    Given(std::slice::Iter<'a, f64>),
    Equal(std::iter::RepeatN<f64>),
}

impl Iterator for WeightIter<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        match self {
            WeightIter::Given(weights) => weights.next().copied(),
            WeightIter::Equal(weights) => weights.next(),
        }
    }
}

fn equal_weight_iter(variations: u32) -> std::iter::RepeatN<f64> {
    let weight = 1.0 / f64::from(variations);
    std::iter::repeat_n(weight, variations as usize)
}

/// The bucket range of each variation, as GrowthBook's `getBucketRanges`.
///
/// Coverage is clamped to [0, 1]. Weights are replaced by equal weights when absent, of the wrong length, or
/// summing outside [0.99, 1.01]. Each variation starts where the previous one's full weight ended and keeps
/// `coverage * weight` of it, so lowering coverage removes users without moving anyone between variations.
pub fn bucket_ranges(variations: u32, coverage: f64, weights: Option<&[f64]>) -> Vec<BucketRange> {
    range_iter(variations, coverage, weights).collect()
}

/// The same ranges as [`bucket_ranges`], computed lazily so that assigning one user allocates nothing.
pub(crate) fn range_iter(
    variations: u32,
    coverage: f64,
    weights: Option<&[f64]>,
) -> impl Iterator<Item = BucketRange> {
    let coverage = clamp_coverage(coverage);
    let weight_iter = match weights.filter(|w| usable_weights(w, variations)) {
        Some(given) => WeightIter::Given(given.iter()),
        None => WeightIter::Equal(equal_weight_iter(variations)),
    };
    weight_iter.scan(0.0_f64, move |cumulative, weight| {
        let start = *cumulative;
        *cumulative += weight;
        Some(BucketRange {
            start,
            end: start + coverage * weight,
        })
    })
}

/// Clamps coverage to [0, 1]; like the SDK's comparisons, NaN passes through (and then matches no range).
fn clamp_coverage(coverage: f64) -> f64 {
    coverage.clamp(0.0, 1.0)
}

/// The SDK's test: one weight per variation and a sum within [0.99, 1.01] (summed left to right).
fn usable_weights(weights: &[f64], variations: u32) -> bool {
    if weights.len() != variations as usize {
        return false;
    }
    let sum: f64 = weights.iter().fold(0.0, |sum, w| sum + w);
    // Written as the SDK writes it, which keeps a NaN sum; `RangeInclusive::contains` would reject it.
    #[expect(
        clippy::manual_range_contains,
        reason = "NaN must behave as in the SDK"
    )]
    let rejected = sum < WEIGHT_SUM_MIN || sum > WEIGHT_SUM_MAX;
    !rejected
}

/// The index of the first range containing `n`, or `None` when `n` falls in no range (outside coverage).
pub fn choose_variation(n: f64, ranges: &[BucketRange]) -> Option<u32> {
    first_containing(n, ranges.iter().copied())
}

pub(crate) fn first_containing(n: f64, ranges: impl Iterator<Item = BucketRange>) -> Option<u32> {
    ranges
        .zip(0_u32..)
        .find_map(|(range, index)| range.contains(n).then_some(index))
}

/// Whether `user_id` falls in the namespace's range, hashed with version 1 under the seed `__` + namespace id.
pub fn in_namespace(user_id: &str, namespace: &Namespace) -> bool {
    let n = hash::hash_v1(user_id, &[NAMESPACE_SEED_PREFIX, &namespace.id]);
    n >= namespace.start && n < namespace.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ranges(pairs: &[(f64, f64)]) -> Vec<BucketRange> {
        pairs
            .iter()
            .map(|&(start, end)| BucketRange { start, end })
            .collect()
    }

    #[test]
    fn equal_weights_of_zero_variations_is_empty() {
        assert!(equal_weights(0).is_empty());
        assert_eq!(equal_weights(4), vec![0.25; 4]);
    }

    #[test]
    fn reduced_coverage_keeps_each_variation_start() {
        let got = bucket_ranges(3, 0.2, Some(&[0.2, 0.3, 0.5]));
        let want = [(0.0, 0.04), (0.2, 0.26), (0.5, 0.6)];
        for (range, (start, end)) in got.iter().zip(want) {
            assert!((range.start - start).abs() < 1e-12 && (range.end - end).abs() < 1e-12);
        }
    }

    #[test]
    fn unusable_weights_fall_back_to_equal_weights() {
        let equal = bucket_ranges(2, 1.0, None);
        assert_eq!(bucket_ranges(2, 1.0, Some(&[0.4, 0.1])), equal);
        assert_eq!(bucket_ranges(2, 1.0, Some(&[0.7, 0.6])), equal);
        assert_eq!(bucket_ranges(2, 1.0, Some(&[1.0])), equal);
        assert_eq!(
            bucket_ranges(2, 1.0, Some(&[0.4, 0.5999]))[1].end,
            0.4 + 0.5999
        );
    }

    #[test]
    fn coverage_is_clamped() {
        assert_eq!(
            bucket_ranges(2, -0.2, None),
            ranges(&[(0.0, 0.0), (0.5, 0.5)])
        );
        assert_eq!(
            bucket_ranges(2, 1.5, None),
            ranges(&[(0.0, 0.5), (0.5, 1.0)])
        );
    }

    #[test]
    fn empty_ranges_are_skipped() {
        let three = ranges(&[(0.0, 0.5), (0.5, 0.5), (0.5, 1.0)]);
        assert_eq!(choose_variation(0.5, &three), Some(2));
        assert_eq!(
            choose_variation(0.3, &ranges(&[(0.0, 0.25), (0.5, 0.75)])),
            None
        );
    }

    proptest! {
        #[test]
        fn ranges_are_ordered_and_within_the_unit_interval(variations in 1_u32..50, coverage in 0.0..=1.0_f64) {
            let got = bucket_ranges(variations, coverage, None);
            prop_assert_eq!(got.len(), variations as usize);
            for pair in got.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start);
            }
            for range in &got {
                prop_assert!(0.0 <= range.start && range.start <= range.end && range.end <= 1.0 + 1e-12);
            }
        }

        #[test]
        fn full_coverage_places_every_hash(variations in 1_u32..50, n in 0.0..0.999_f64) {
            let got = bucket_ranges(variations, 1.0, None);
            prop_assert!(choose_variation(n, &got).is_some());
        }
    }
}
