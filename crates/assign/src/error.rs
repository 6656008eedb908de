//! Why an experiment definition is invalid: the one error type of the `assign` crate.

/// An experiment definition that [`crate::Experiment::validate`] rejects.
///
/// [`crate::assign()`] never fails: it repairs these cases as the GrowthBook SDKs do. Validation is for the
/// place where a definition is written, so that nobody relies on a silent repair.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The experiment key is empty, so there is no default seed.
    #[error("experiment key is empty")]
    EmptyKey,
    /// Fewer than two variations: the SDKs put nobody in such an experiment.
    #[error("experiment {key}: {variations} variation(s), at least 2 are needed")]
    TooFewVariations {
        /// The experiment key.
        key: String,
        /// The number of variations given.
        variations: u32,
    },
    /// More variations than [`crate::MAX_VARIATIONS`].
    #[error("experiment {key}: {variations} variations, at most {max} are allowed")]
    TooManyVariations {
        /// The experiment key.
        key: String,
        /// The number of variations given.
        variations: u32,
        /// The limit.
        max: u32,
    },
    /// The weights do not give one weight per variation (the SDKs would use equal weights).
    #[error(
        "experiment {key}: {weights} weights for {variations} variations (GrowthBook SDKs would use equal weights)"
    )]
    WeightsLength {
        /// The experiment key.
        key: String,
        /// The number of weights given.
        weights: usize,
        /// The number of variations.
        variations: u32,
    },
    /// A weight is negative or not a finite number.
    #[error(
        "experiment {key}: weight {index} is {weight}, weights must be finite and not negative"
    )]
    WeightInvalid {
        /// The experiment key.
        key: String,
        /// Position of the weight, from 0.
        index: usize,
        /// The weight given.
        weight: f64,
    },
    /// The weights sum outside [0.99, 1.01] (the SDKs would use equal weights).
    #[error(
        "experiment {key}: weights sum to {sum}, not 1 within 0.99..=1.01 (GrowthBook SDKs would use equal weights)"
    )]
    WeightsSum {
        /// The experiment key.
        key: String,
        /// The sum of the weights.
        sum: f64,
    },
    /// Coverage outside [0, 1] or not a number (the SDKs would clamp it).
    #[error(
        "experiment {key}: coverage {coverage} is outside [0, 1] (GrowthBook SDKs would clamp it)"
    )]
    CoverageOutOfRange {
        /// The experiment key.
        key: String,
        /// The coverage given.
        coverage: f64,
    },
    /// A hash version other than 1 or 2 (the SDKs put nobody in the experiment).
    #[error("experiment {key}: hash version {version} is unknown, use 1 or 2")]
    UnknownHashVersion {
        /// The experiment key.
        key: String,
        /// The version given.
        version: u8,
    },
    /// A namespace range that is not `0 <= start <= end <= 1`.
    #[error(
        "experiment {key}: namespace {namespace} range [{start}, {end}) is not within [0, 1] in order"
    )]
    NamespaceRange {
        /// The experiment key.
        key: String,
        /// The namespace id.
        namespace: String,
        /// Start of the range.
        start: f64,
        /// End of the range (exclusive).
        end: f64,
    },
}
