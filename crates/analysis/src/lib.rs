//! `analysis`: where raw events become decisions. Lines are checked against the registry's schemas
//! ([`track`]), exposures and metric events are joined per user inside the metric window ([`aggregate`]), users
//! are reduced to per-variant sufficient statistics and tested with the `stats` engine ([`report`]).
//!
//! # Layout
//! - [`time`]: RFC 3339 timestamps to Unix milliseconds and back.
//! - [`track`]: one Segment `track` line -> an accepted event or the reason it is rejected.
//! - [`plan`]: an experiment and its metric definitions from the registry, checked against the schemas.
//! - [`aggregate`]: exposures (first exposure per user), per-user metric values, capping, sufficient statistics.
//! - [`join`]: [`Analysis`], the driver: exposures in, metric events in (once per event name), report out.
//! - [`report`]: tests per metric and variant, sample-ratio mismatch, verdicts, the result summary.
//! - [`period`]: a metric's value over a window of the pod's own events (live key results), through the same join.
//! - [`generate`]: a seeded generator of synthetic but realistic events, for tests and benchmarks.
//!
//! # Invariants
//! No I/O (the generator writes to a caller's `Write`), no clock (`now_ms` is a parameter), no storage: the store
//! feeds [`aggregate`] in key order and keeps what [`track`] accepts.
#![deny(missing_docs)]

pub mod aggregate;
pub mod generate;
pub mod join;
pub mod period;
pub mod plan;
pub mod report;
pub use model::time;
pub mod track;
pub mod verify;

pub use join::Analysis;
pub use plan::{MetricPlan, Plan};
pub use report::{Options, Report, Verdict};

/// Why an analysis cannot be planned or run. Each variant names the record and field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The experiment is not in the registry.
    #[error("no experiment `{key}` in the registry")]
    UnknownExperiment {
        /// Experiment key.
        key: String,
    },
    /// The experiment names no metric and none was given.
    #[error("experiment `{key}` has no primary or guardrail metric; register one or pass --metric")]
    NoMetrics {
        /// Experiment key.
        key: String,
    },
    /// A metric the experiment names is not an approved definition.
    #[error(
        "metric `{metric}` ({role} of experiment `{experiment}`) is not an approved metric definition"
    )]
    UnknownMetric {
        /// Metric key.
        metric: String,
        /// `primary metric`, `guardrail` or `--metric`.
        role: String,
        /// Experiment key.
        experiment: String,
    },
    /// A key result names a metric that is not an approved metric definition.
    #[error(
        "metric `{metric}` is not an approved metric definition; propose it with `growthmesh metric propose` and have a steward or the council approve it with `growthmesh metric approve`"
    )]
    UnapprovedMetric {
        /// Metric key.
        metric: String,
    },
    /// A metric definition names an event without an approved schema.
    #[error("metric `{metric}`: {field} `{event}` has no approved event schema")]
    MissingEvent {
        /// Metric key.
        metric: String,
        /// The definition's field (`event`, `numerator_event`, `denominator_event`).
        field: &'static str,
        /// Event name.
        event: String,
    },
    /// A metric definition sums a property its event's schema lacks or does not type as a number.
    #[error("metric `{metric}`: {field} `{property}` {problem} in schema `{schema}`")]
    BadProperty {
        /// Metric key.
        metric: String,
        /// The definition's field (`property`, `numerator_property`, `denominator_property`).
        field: &'static str,
        /// Property name.
        property: String,
        /// `is not defined`, `is not a number`.
        problem: &'static str,
        /// `event@version`.
        schema: String,
    },
    /// A metric definition has a setting outside its range.
    #[error("metric `{metric}`: {field} {problem}")]
    BadSetting {
        /// Metric key.
        metric: String,
        /// Field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The experiment's variants cannot be analysed.
    #[error("experiment `{key}`: {problem}")]
    BadExperiment {
        /// Experiment key.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The statistics engine refused its input.
    #[error("metric `{metric}`: {source}")]
    Stats {
        /// Metric key.
        metric: String,
        /// The engine's error.
        source: stats::Error,
    },
}
