//! Registry records: what the council, stewards, pods and partners write, as serde types.
//!
//! Readers are tolerant (missing optional fields take defaults) because a record is whatever its authorized
//! author wrote; a record that does not parse is left out of the view, the same way on every replica.

use serde::{Deserialize, Serialize};

use crate::{Error, Role, validate_date, validate_quarter, validate_slug, validate_text};

/// Longest title accepted.
pub const MAX_TITLE_BYTES: usize = 200;
/// Longest free text (hypotheses, learning bodies) accepted.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// A member of the federation, as the council admitted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's public key (hex).
    pub public_key: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The pod (for `pod`) or organisation (for `partner`) the member writes for.
    #[serde(default)]
    pub scope: Option<String>,
    /// Public key of the council member who admitted it.
    #[serde(default)]
    pub admitted_by: String,
    /// When it was admitted (Unix ms, as the admitter's clock said).
    #[serde(default)]
    pub admitted_at_ms: i64,
    /// Whether the council revoked it.
    #[serde(default)]
    pub revoked: bool,
}

/// Proof that a member signed two different changes at one place of one document (same chain, same sequence
/// number): both branches from there are out, on every replica that holds the proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Equivocation {
    /// The document.
    pub doc: String,
    /// The chain's epoch (0 for a member's first chain in a document).
    pub epoch: u32,
    /// The sequence number both changes claim.
    pub seq: u64,
    /// The two change hashes (hex), smaller first.
    pub changes: Vec<String>,
}

/// An admission that does not count because its invite admitted another key first (by the smaller change hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidAdmission {
    /// The invite nonce both admissions spent.
    pub nonce: String,
    /// The void admission change.
    pub change: String,
    /// The admission that counts.
    pub winner: String,
}

/// A revocation of a member by the council.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    /// Public key of the council member who revoked.
    #[serde(default)]
    pub by: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// When (Unix ms).
    #[serde(default)]
    pub at_ms: i64,
}

/// A company objective for a quarter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// Stable id.
    pub id: String,
    /// What the company wants.
    pub title: String,
    /// Quarter, `2026Q4`.
    pub quarter: String,
    /// The North-Star metric it moves.
    #[serde(default)]
    pub north_star_metric: Option<String>,
    /// Target value of that metric.
    #[serde(default)]
    pub target: Option<f64>,
    /// Author's public key.
    #[serde(default)]
    pub created_by: String,
}

impl Objective {
    /// Validates user-supplied fields.
    pub fn validate(&self) -> Result<(), Error> {
        validate_text("--title", &self.title, MAX_TITLE_BYTES)?;
        validate_quarter("--quarter", &self.quarter)
    }
}

/// A pod's key result towards an objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyResult {
    /// Stable id.
    pub id: String,
    /// The objective it serves.
    pub objective: String,
    /// Owning pod.
    pub pod: String,
    /// Key of the approved metric definition it is measured by.
    pub metric: String,
    /// Starting value.
    #[serde(default)]
    pub baseline: f64,
    /// Target value.
    pub target: f64,
    /// Latest value.
    #[serde(default)]
    pub current: Option<f64>,
    /// When `current` was last set (Unix ms).
    #[serde(default)]
    pub updated_at_ms: i64,
    /// The pod's node measures the metric over the events of this many days up to the as-of instant (key results
    /// written before windows existed read as the default).
    #[serde(default = "default_key_result_window_days")]
    pub window_days: u32,
}

fn default_key_result_window_days() -> u32 {
    crate::okr::DEFAULT_KEY_RESULT_WINDOW_DAYS
}

impl KeyResult {
    /// Share of the way from baseline to target, clamped to [0, 1]; `None` before a current value exists.
    pub fn progress(&self) -> Option<f64> {
        let current = self.current?;
        let span = self.target - self.baseline;
        if span == 0.0 {
            return Some(if current >= self.target { 1.0 } else { 0.0 });
        }
        Some(((current - self.baseline) / span).clamp(0.0, 1.0))
    }
}

/// Type of an event property.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyType {
    /// JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A whole number.
    Integer,
    /// true / false.
    Boolean,
    /// An RFC 3339 timestamp string.
    Timestamp,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

impl std::str::FromStr for PropertyType {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
            Error::invalid(
                "property type",
                format!("`{text}` is not one of string, number, integer, boolean, timestamp, object, array"),
            )
        })
    }
}

/// One property of an event schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertyDef {
    /// Property name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: PropertyType,
    /// Whether every event must carry it.
    #[serde(default)]
    pub required: bool,
    /// Whether it holds personal data.
    #[serde(default)]
    pub pii: bool,
}

impl std::str::FromStr for PropertyDef {
    type Err = Error;

    /// Parses `name:type[:required][:pii]`, e.g. `plan:string:required`.
    fn from_str(text: &str) -> Result<Self, Error> {
        let mut parts = text.split(':');
        let name = parts.next().unwrap_or_default().to_owned();
        if name.is_empty() {
            return Err(Error::invalid(
                "--property",
                format!("`{text}` has no name; write name:type[:required][:pii]"),
            ));
        }
        let kind = parts
            .next()
            .ok_or_else(|| {
                Error::invalid(
                    "--property",
                    format!("`{text}` has no type; write name:type[:required][:pii]"),
                )
            })?
            .parse()?;
        let mut def = PropertyDef {
            name,
            kind,
            required: false,
            pii: false,
        };
        for flag in parts {
            match flag {
                "required" => def.required = true,
                "pii" => def.pii = true,
                other => {
                    return Err(Error::invalid(
                        "--property",
                        format!("`{other}` in `{text}` is neither `required` nor `pii`"),
                    ));
                }
            }
        }
        Ok(def)
    }
}

/// Lifecycle of a schema or metric definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StandardStatus {
    /// Proposed by a pod, not yet approved.
    #[default]
    Proposed,
    /// Approved by a steward or the council.
    Approved,
    /// No longer to be used.
    Deprecated,
}

/// A versioned event schema with its privacy checklist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventSchema {
    /// Event name, as in the `event` field of a track call.
    pub event: String,
    /// Version, from 1.
    pub version: u32,
    /// Properties.
    #[serde(default)]
    pub properties: Vec<PropertyDef>,
    /// Legal basis for processing (GDPR art. 6), e.g. `consent`, `contract`, `legitimate_interest`.
    #[serde(default)]
    pub legal_basis: String,
    /// How long raw events are kept.
    #[serde(default)]
    pub retention_days: u32,
    /// Proposed, approved or deprecated.
    #[serde(default)]
    pub status: StandardStatus,
    /// Pod that proposed it.
    #[serde(default)]
    pub proposed_by: String,
    /// Public key of the approver, once approved.
    #[serde(default)]
    pub approved_by: Option<String>,
}

impl EventSchema {
    /// Version 1 of `event`, approved, with `properties` written as `name:type[:required][:pii]` (the CLI's
    /// `--property` form), no legal basis and no retention limit: what fixtures and benchmarks start from.
    pub fn approved(event: &str, properties: &[&str]) -> Result<Self, Error> {
        Ok(Self {
            event: event.into(),
            version: 1,
            properties: properties
                .iter()
                .map(|p| p.parse())
                .collect::<Result<_, _>>()?,
            legal_basis: String::new(),
            retention_days: 0,
            status: StandardStatus::Approved,
            proposed_by: String::new(),
            approved_by: None,
        })
    }

    /// The key of this schema version in the registry: `event@version`.
    pub fn key(&self) -> String {
        format!("{}@{}", self.event, self.version)
    }

    /// Validates user-supplied fields.
    pub fn validate(&self) -> Result<(), Error> {
        validate_text("--event", &self.event, MAX_TITLE_BYTES)?;
        if self.version == 0 {
            return Err(Error::invalid("--version", "must be at least 1"));
        }
        let mut names = std::collections::BTreeSet::new();
        for property in &self.properties {
            if !names.insert(property.name.as_str()) {
                return Err(Error::invalid(
                    "--property",
                    format!("`{}` is listed twice", property.name),
                ));
            }
        }
        let has_pii = self.properties.iter().any(|p| p.pii);
        if has_pii && self.legal_basis.trim().is_empty() {
            return Err(Error::invalid(
                "--legal-basis",
                "required when a property is marked pii",
            ));
        }
        if has_pii && self.retention_days == 0 {
            return Err(Error::invalid(
                "--retention-days",
                "must be set (> 0) when a property is marked pii",
            ));
        }
        Ok(())
    }
}

/// Whether higher or lower values of a metric are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// More is better (conversion, revenue).
    #[default]
    Higher,
    /// Less is better (churn, latency).
    Lower,
}

/// How a metric is computed from a user's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MetricKind {
    /// Did the user do `event` within `window_days` of first exposure.
    Binomial {
        /// Event name.
        event: String,
        /// Window after first exposure.
        window_days: u32,
    },
    /// Sum of `property` of `event` per user (count of events when `property` is absent).
    Mean {
        /// Event name.
        event: String,
        /// Property summed; `None` counts events.
        #[serde(default)]
        property: Option<String>,
        /// Window after first exposure.
        #[serde(default = "default_window_days")]
        window_days: u32,
    },
    /// Sum of the numerator over sum of the denominator, per user.
    Ratio {
        /// Numerator event.
        numerator_event: String,
        /// Numerator property (`None` counts events).
        #[serde(default)]
        numerator_property: Option<String>,
        /// Denominator event.
        denominator_event: String,
        /// Denominator property (`None` counts events).
        #[serde(default)]
        denominator_property: Option<String>,
        /// Window after first exposure.
        #[serde(default = "default_window_days")]
        window_days: u32,
    },
}

fn default_window_days() -> u32 {
    14
}

/// A shared metric definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricDefinition {
    /// Metric key, referenced by experiments.
    pub key: String,
    /// How it is computed.
    pub kind: MetricKind,
    /// Which direction is good.
    #[serde(default)]
    pub direction: Direction,
    /// Winsorize per-user values at this percentile (e.g. 0.99).
    #[serde(default)]
    pub capping_percentile: Option<f64>,
    /// Proposed, approved or deprecated.
    #[serde(default)]
    pub status: StandardStatus,
    /// Pod that proposed it.
    #[serde(default)]
    pub proposed_by: String,
    /// Approver's key once approved.
    #[serde(default)]
    pub approved_by: Option<String>,
}

/// If / then / because.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Hypothesis {
    /// The change we make.
    #[serde(rename = "if", default)]
    pub change: String,
    /// The effect we expect.
    #[serde(default)]
    pub then: String,
    /// Why we believe it.
    #[serde(default)]
    pub because: String,
}

impl Hypothesis {
    /// Parses `if X then Y because Z` (each part optional) or takes the text as the `then` part.
    pub fn parse(text: &str) -> Self {
        let lower = text.to_lowercase();
        let find = |word: &str| lower.find(word);
        match (lower.starts_with("if "), find(" then "), find(" because ")) {
            (true, Some(then_at), because_at) => {
                let then_end = because_at.filter(|b| *b > then_at).unwrap_or(text.len());
                Hypothesis {
                    change: text[3..then_at].trim().to_owned(),
                    then: text[then_at + 6..then_end].trim().to_owned(),
                    because: because_at
                        .filter(|b| *b > then_at)
                        .map(|b| text[b + 9..].trim().to_owned())
                        .unwrap_or_default(),
                }
            }
            _ => Hypothesis {
                change: String::new(),
                then: text.trim().to_owned(),
                because: String::new(),
            },
        }
    }
}

/// Pirate-funnel stage an experiment targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum FunnelStage {
    /// Getting users in.
    Acquisition,
    /// First value.
    #[default]
    Activation,
    /// Coming back.
    Retention,
    /// Paying.
    Revenue,
    /// Bringing others.
    Referral,
}

impl std::str::FromStr for FunnelStage {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
            Error::invalid(
                "--funnel-stage",
                format!(
                    "`{text}` is not one of acquisition, activation, retention, revenue, referral"
                ),
            )
        })
    }
}

/// Who an experiment targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Audience {
    /// Region, e.g. `emea`.
    #[serde(default)]
    pub region: Option<String>,
    /// Segment, e.g. `new-users`.
    #[serde(default)]
    pub segment: Option<String>,
}

/// One arm of an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Variant {
    /// Variant key (`control`, `treatment`).
    pub key: String,
    /// Traffic weight; weights of an experiment sum to 1.
    pub weight: f64,
}

/// Status of an experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExperimentStatus {
    /// Being designed.
    #[default]
    Draft,
    /// Collecting data.
    Running,
    /// Stopped early.
    Stopped,
    /// Analysed and decided.
    Concluded,
}

/// A range `[start, end)` of an assignment namespace (GrowthBook's namespaces: a user is in the range when the
/// namespace hash of its id falls in it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceRange {
    /// Namespace id.
    pub id: String,
    /// Start of the range, in [0, 1].
    pub start: f64,
    /// End of the range, in [start, 1].
    pub end: f64,
}

impl NamespaceRange {
    /// Whether two ranges can hold the same user: another namespace, or intersecting ranges of this one.
    pub fn intersects(&self, other: &NamespaceRange) -> bool {
        self.id != other.id || (self.start < other.end && other.start < self.end)
    }
}

impl std::str::FromStr for NamespaceRange {
    type Err = Error;

    /// Parses `ID:START:END`, e.g. `checkout:0:0.5`.
    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = |problem: String| Error::invalid("--namespace", problem);
        let parts: Vec<&str> = text.split(':').collect();
        let [id, start, end] = parts.as_slice() else {
            return Err(bad(format!(
                "`{text}` is not ID:START:END, e.g. checkout:0:0.5"
            )));
        };
        validate_slug("--namespace", id)?;
        let number = |t: &str| t.parse::<f64>().ok().filter(|x| x.is_finite());
        match (number(start), number(end)) {
            (Some(start), Some(end)) if 0.0 <= start && start <= end && end <= 1.0 => Ok(Self {
                id: (*id).to_owned(),
                start,
                end,
            }),
            _ => Err(bad(format!(
                "range `{start}:{end}` is not two numbers with 0 <= START <= END <= 1"
            ))),
        }
    }
}

/// A registered experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Experiment {
    /// Experiment key (also the default assignment seed).
    pub key: String,
    /// Owning pod.
    pub pod: String,
    /// If / then / because.
    #[serde(default)]
    pub hypothesis: Hypothesis,
    /// Funnel stage.
    #[serde(default)]
    pub funnel_stage: FunnelStage,
    /// Audience.
    #[serde(default)]
    pub audience: Audience,
    /// Variants and weights.
    #[serde(default)]
    pub variants: Vec<Variant>,
    /// Primary metric key.
    #[serde(default)]
    pub primary_metric: Option<String>,
    /// Guardrail metric keys.
    #[serde(default)]
    pub guardrail_metrics: Vec<String>,
    /// Planned start, `YYYY-MM-DD`.
    #[serde(default)]
    pub start_date: Option<String>,
    /// Planned end, `YYYY-MM-DD`.
    #[serde(default)]
    pub end_date: Option<String>,
    /// Planned cost.
    #[serde(default)]
    pub cost: f64,
    /// Status.
    #[serde(default)]
    pub status: ExperimentStatus,
    /// The assignment namespace range it draws users from: experiments of one namespace with disjoint ranges
    /// never share a user, so they never overlap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespaceRange>,
    /// GrowthBook hash version its users are assigned with: 1 (the SDKs' default, slightly biased) or 2.
    #[serde(
        default = "default_hash_version",
        skip_serializing_if = "is_default_hash_version"
    )]
    pub hash_version: u8,
    /// Share of eligible users included, in (0, 1]; the rest see the control and are not counted.
    #[serde(default = "full_coverage", skip_serializing_if = "is_full_coverage")]
    pub coverage: f64,
    /// When it was started (Unix ms), written with the `running` status; its cost is spent then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    /// Author's public key.
    #[serde(default)]
    pub created_by: String,
    /// When registered (Unix ms).
    #[serde(default)]
    pub created_at_ms: i64,
}

/// The hash version an experiment uses when it names none (GrowthBook's default).
pub const DEFAULT_HASH_VERSION: u8 = 1;

fn default_hash_version() -> u8 {
    DEFAULT_HASH_VERSION
}

fn is_default_hash_version(version: &u8) -> bool {
    *version == DEFAULT_HASH_VERSION
}

fn full_coverage() -> f64 {
    1.0
}

fn is_full_coverage(coverage: &f64) -> bool {
    *coverage == 1.0
}

impl Experiment {
    /// The experiment's window in Unix ms, `[start, end)`: from 00:00 UTC of its start date to 00:00 UTC of the
    /// day after its end date; an open side where it has no date (or one that does not parse).
    pub fn window_ms(&self) -> (Option<i64>, Option<i64>) {
        const DAY_MS: i64 = 86_400_000;
        let start = self.start_date.as_deref().and_then(crate::time::date_ms);
        let end = self
            .end_date
            .as_deref()
            .and_then(crate::time::date_ms)
            .map(|ms| ms + DAY_MS);
        (start, end)
    }

    /// Whether `timestamp_ms` falls inside [`Experiment::window_ms`].
    pub fn in_window(&self, timestamp_ms: i64) -> bool {
        let (start, end) = self.window_ms();
        start.is_none_or(|s| timestamp_ms >= s) && end.is_none_or(|e| timestamp_ms < e)
    }

    /// Validates user-supplied fields.
    pub fn validate(&self) -> Result<(), Error> {
        validate_slug("--key", &self.key)?;
        let hypothesis = format!(
            "{} {} {}",
            self.hypothesis.change, self.hypothesis.then, self.hypothesis.because
        );
        validate_text("--hypothesis", &hypothesis, MAX_TEXT_BYTES)?;
        if self.variants.len() < 2 {
            return Err(Error::invalid(
                "--variants",
                "an experiment needs at least two variants",
            ));
        }
        let mut keys = std::collections::BTreeSet::new();
        for variant in &self.variants {
            validate_slug("--variants", &variant.key)?;
            if !keys.insert(&variant.key) {
                return Err(Error::invalid(
                    "--variants",
                    format!("`{}` is listed twice", variant.key),
                ));
            }
            if !(variant.weight.is_finite() && variant.weight >= 0.0) {
                return Err(Error::invalid(
                    "--weights",
                    format!("weight of `{}` must be a number >= 0", variant.key),
                ));
            }
        }
        let total: f64 = self.variants.iter().map(|v| v.weight).sum();
        if (total - 1.0).abs() > 1e-6 {
            return Err(Error::invalid(
                "--weights",
                format!("weights sum to {total}, not 1"),
            ));
        }
        for (field, date) in [("--start", &self.start_date), ("--end", &self.end_date)] {
            if let Some(date) = date {
                validate_date(field, date)?;
            }
        }
        if let (Some(start), Some(end)) = (&self.start_date, &self.end_date)
            && end < start
        {
            return Err(Error::invalid(
                "--end",
                format!("{end} is before the start {start}"),
            ));
        }
        if !(self.cost.is_finite() && self.cost >= 0.0) {
            return Err(Error::invalid("--cost", "must be a number >= 0"));
        }
        if !matches!(self.hash_version, 1 | 2) {
            return Err(Error::invalid(
                "--hash-version",
                format!(
                    "{} is not a GrowthBook hash version (1 or 2)",
                    self.hash_version
                ),
            ));
        }
        if !(self.coverage > 0.0 && self.coverage <= 1.0) {
            return Err(Error::invalid(
                "--coverage",
                format!("{} is not a share in (0, 1]", self.coverage),
            ));
        }
        Ok(())
    }
}

/// One council member's vote on a high-impact or overlapping experiment. Each member has one vote per experiment
/// (a later vote replaces its earlier one); the registry counts a vote only when the change that wrote it was
/// signed by the key in `by`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// Experiment key.
    pub experiment: String,
    /// `approved` or `rejected`.
    pub decision: Decision,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// Council member's key.
    #[serde(default)]
    pub by: String,
    /// When (Unix ms).
    #[serde(default)]
    pub at_ms: i64,
}

/// A council decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Go ahead.
    Approved,
    /// Do not run it.
    Rejected,
}

/// The seeds' rule: at most five metrics a scorecard tier.
pub const MAX_METRICS_PER_TIER: usize = 5;

/// What the council may put on the company's scorecard (tier 1), each aggregated from the pods' signed snapshots
/// (see the `scorecard` crate): `north_star`, `health_score`, `dependency_ratio`, `revenue_per_pod`,
/// `compliance_incidents`, `cycle_time_days`, `unit_nps`.
pub const TIER1_METRICS: [&str; 7] = [
    "north_star",
    "health_score",
    "dependency_ratio",
    "revenue_per_pod",
    "compliance_incidents",
    "cycle_time_days",
    "unit_nps",
];

/// What the council may put on a pod's scorecard (tier 2): `kr_progress`, `velocity_days`, `experiments`,
/// `significant_share`, `budget_used`, `compliance_incidents`, `dependency_ratio`, `revenue`, `unit_nps`.
pub const TIER2_METRICS: [&str; 9] = [
    "kr_progress",
    "velocity_days",
    "experiments",
    "significant_share",
    "budget_used",
    "compliance_incidents",
    "dependency_ratio",
    "revenue",
    "unit_nps",
];

/// Most keys the council may let read the pods' scorecards beyond its own members and the pods.
pub const MAX_SCORECARD_READERS: usize = 64;

/// The council's governance settings. Each is its own registry record, so council members setting different ones
/// concurrently both take effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GovernanceSettings {
    /// Approvals a high-impact experiment needs (capped at the council members who may vote on it).
    pub quorum: u32,
    /// Days after a conclusion without a learning until its post-mortem is overdue.
    pub postmortem_days: u32,
    /// Credited to a pod's quarter for each of its experiments concluded as a win (decision `ship`).
    pub win_bonus: f64,
    /// The metric whose lift, over the exposed users, is an experiment's incremental revenue (for ROI).
    pub revenue_metric: String,
    /// The company scorecard's metrics, in order (at most [`MAX_METRICS_PER_TIER`], from [`TIER1_METRICS`]).
    pub tier1_metrics: Vec<String>,
    /// A pod scorecard's metrics, in order (at most [`MAX_METRICS_PER_TIER`], from [`TIER2_METRICS`]).
    pub tier2_metrics: Vec<String>,
    /// Keys (hex) the council lets read the pods' scorecards (tiers 2 and 3) beyond council and pod members:
    /// partners are not among them unless listed here.
    pub scorecard_readers: Vec<String>,
}

impl Default for GovernanceSettings {
    fn default() -> Self {
        Self {
            quorum: 1,
            postmortem_days: 14,
            win_bonus: 0.0,
            revenue_metric: "revenue".to_owned(),
            tier1_metrics: [
                "north_star",
                "health_score",
                "dependency_ratio",
                "revenue_per_pod",
                "compliance_incidents",
            ]
            .map(String::from)
            .to_vec(),
            tier2_metrics: [
                "kr_progress",
                "velocity_days",
                "experiments",
                "significant_share",
                "budget_used",
            ]
            .map(String::from)
            .to_vec(),
            scorecard_readers: Vec::new(),
        }
    }
}

/// One governance setting, as the council writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Setting {
    /// See [`GovernanceSettings::quorum`].
    Quorum(u32),
    /// See [`GovernanceSettings::postmortem_days`].
    PostmortemDays(u32),
    /// See [`GovernanceSettings::win_bonus`].
    WinBonus(f64),
    /// See [`GovernanceSettings::revenue_metric`].
    RevenueMetric(String),
    /// See [`GovernanceSettings::tier1_metrics`].
    Tier1Metrics(Vec<String>),
    /// See [`GovernanceSettings::tier2_metrics`].
    Tier2Metrics(Vec<String>),
    /// See [`GovernanceSettings::scorecard_readers`].
    ScorecardReaders(Vec<String>),
}

/// A tier's metric list: one to [`MAX_METRICS_PER_TIER`] distinct names from `catalogue`.
fn validate_tier(field: &str, metrics: &[String], catalogue: &[&str]) -> Result<(), Error> {
    if metrics.is_empty() {
        return Err(Error::invalid(field, "name at least one metric"));
    }
    if metrics.len() > MAX_METRICS_PER_TIER {
        return Err(Error::invalid(
            field,
            format!(
                "{} metrics named; a tier has at most {MAX_METRICS_PER_TIER} (drop {})",
                metrics.len(),
                metrics.len() - MAX_METRICS_PER_TIER
            ),
        ));
    }
    for (i, metric) in metrics.iter().enumerate() {
        if !catalogue.contains(&metric.as_str()) {
            return Err(Error::invalid(
                field,
                format!("unknown metric `{metric}`; one of {}", catalogue.join(", ")),
            ));
        }
        if metrics[..i].contains(metric) {
            return Err(Error::invalid(field, format!("`{metric}` named twice")));
        }
    }
    Ok(())
}

impl Setting {
    /// The record name (`settings/<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Setting::Quorum(_) => "quorum",
            Setting::PostmortemDays(_) => "postmortem_days",
            Setting::WinBonus(_) => "win_bonus",
            Setting::RevenueMetric(_) => "revenue_metric",
            Setting::Tier1Metrics(_) => "tier1_metrics",
            Setting::Tier2Metrics(_) => "tier2_metrics",
            Setting::ScorecardReaders(_) => "scorecard_readers",
        }
    }

    /// Validates the value.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Setting::Quorum(0) => Err(Error::invalid("N", "a quorum is at least 1")),
            Setting::PostmortemDays(days) if *days > 365 => {
                Err(Error::invalid("--postmortem-days", "at most 365"))
            }
            Setting::WinBonus(bonus) if !(bonus.is_finite() && *bonus >= 0.0) => {
                Err(Error::invalid("--win-bonus", "must be a number >= 0"))
            }
            Setting::RevenueMetric(metric) => validate_slug("--revenue-metric", metric),
            Setting::Tier1Metrics(metrics) => {
                validate_tier("--tier1-metrics", metrics, &TIER1_METRICS)
            }
            Setting::Tier2Metrics(metrics) => {
                validate_tier("--tier2-metrics", metrics, &TIER2_METRICS)
            }
            Setting::ScorecardReaders(keys) => {
                if keys.len() > MAX_SCORECARD_READERS {
                    return Err(Error::invalid(
                        "--scorecard-readers",
                        format!("at most {MAX_SCORECARD_READERS} keys"),
                    ));
                }
                match keys
                    .iter()
                    .find(|k| k.len() != 64 || !k.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    Some(bad) => Err(Error::invalid(
                        "--scorecard-readers",
                        format!("`{bad}` is not a member's public key (64 hex digits)"),
                    )),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Applies a stored record `settings/<name>` with JSON `value` to `settings`; unknown names and values of the
    /// wrong type are ignored (identically on every replica).
    pub fn read(settings: &mut GovernanceSettings, name: &str, value: &serde_json::Value) {
        let setting = match name {
            "quorum" => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Setting::Quorum),
            "postmortem_days" => value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Setting::PostmortemDays),
            "win_bonus" => value.as_f64().map(Setting::WinBonus),
            "revenue_metric" => value.as_str().map(|m| Setting::RevenueMetric(m.to_owned())),
            "tier1_metrics" => strings(value).map(Setting::Tier1Metrics),
            "tier2_metrics" => strings(value).map(Setting::Tier2Metrics),
            "scorecard_readers" => strings(value).map(Setting::ScorecardReaders),
            _ => None,
        };
        match setting.filter(|s| s.validate().is_ok()) {
            Some(Setting::Quorum(n)) => settings.quorum = n,
            Some(Setting::PostmortemDays(n)) => settings.postmortem_days = n,
            Some(Setting::WinBonus(x)) => settings.win_bonus = x,
            Some(Setting::RevenueMetric(m)) => settings.revenue_metric = m,
            Some(Setting::Tier1Metrics(m)) => settings.tier1_metrics = m,
            Some(Setting::Tier2Metrics(m)) => settings.tier2_metrics = m,
            Some(Setting::ScorecardReaders(k)) => settings.scorecard_readers = k,
            None => {}
        }
    }

    /// The stored value.
    pub fn value(&self) -> serde_json::Value {
        match self {
            Setting::Quorum(n) | Setting::PostmortemDays(n) => (*n).into(),
            Setting::WinBonus(x) => (*x).into(),
            Setting::RevenueMetric(m) => m.clone().into(),
            Setting::Tier1Metrics(names)
            | Setting::Tier2Metrics(names)
            | Setting::ScorecardReaders(names) => names.clone().into(),
        }
    }
}

/// A JSON list of strings; `None` when it is anything else (a hostile council member's write of another shape is
/// ignored like any invalid setting).
fn strings(value: &serde_json::Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// A pod's budget for a quarter, allocated by the council.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Pod.
    pub pod: String,
    /// Quarter.
    pub quarter: String,
    /// Amount allocated. Rollover, bonus and spend are derived from the registry (see the `governance` crate).
    pub allocated: f64,
    /// Council member's key.
    #[serde(default)]
    pub by: String,
}

/// Outcome of a concluded experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Outcome {
    /// The treatment won.
    Win,
    /// The treatment lost.
    Loss,
    /// No conclusion.
    Inconclusive,
}

impl std::str::FromStr for Outcome {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
            Error::invalid(
                "--outcome",
                format!("`{text}` is not one of win, loss, inconclusive"),
            )
        })
    }
}

/// A post-mortem shared with every member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    /// Stable id.
    pub id: String,
    /// Title.
    pub title: String,
    /// What was learnt.
    pub body: String,
    /// Outcome of the experiment it is about.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    /// Tags for search.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Experiment key it is about.
    #[serde(default)]
    pub experiment: Option<String>,
    /// Document it was written in (`pod/emea`, `partner/acme`).
    #[serde(default)]
    pub source: String,
    /// Author's key.
    #[serde(default)]
    pub author: String,
    /// When (Unix ms).
    #[serde(default)]
    pub created_at_ms: i64,
}

impl Learning {
    /// Validates user-supplied fields.
    pub fn validate(&self) -> Result<(), Error> {
        validate_text("--title", &self.title, MAX_TITLE_BYTES)?;
        validate_text("--body", &self.body, MAX_TEXT_BYTES)?;
        for tag in &self.tags {
            validate_slug("--tag", tag)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tier_of_six_metrics_is_refused_when_written_and_ignored_when_read() {
        let six: Vec<String> = TIER2_METRICS[..6].iter().map(|m| m.to_string()).collect();
        let error = Setting::Tier2Metrics(six.clone())
            .validate()
            .expect_err("a sixth metric");
        assert!(error.to_string().contains("at most 5"), "{error}");
        // A council member who signs six anyway (not through the CLI): every replica ignores it the same way.
        let mut settings = GovernanceSettings::default();
        let before = settings.clone();
        Setting::read(&mut settings, "tier2_metrics", &serde_json::json!(six));
        Setting::read(
            &mut settings,
            "tier1_metrics",
            &serde_json::json!(["north_star", 3]),
        );
        Setting::read(
            &mut settings,
            "scorecard_readers",
            &serde_json::json!(["not-a-key"]),
        );
        assert_eq!(settings, before);
        Setting::read(
            &mut settings,
            "tier1_metrics",
            &serde_json::json!(["unit_nps"]),
        );
        assert_eq!(settings.tier1_metrics, ["unit_nps"]);
        for bad in [
            vec![],
            vec!["experiments".to_owned(), "experiments".to_owned()],
        ] {
            assert!(Setting::Tier2Metrics(bad).validate().is_err());
        }
    }

    #[test]
    fn hypothesis_parses_if_then_because() {
        let h = Hypothesis::parse("If we shorten signup then activation rises because fewer steps");
        assert_eq!(h.change, "we shorten signup");
        assert_eq!(h.then, "activation rises");
        assert_eq!(h.because, "fewer steps");
        let plain = Hypothesis::parse("shorter signup helps");
        assert_eq!(plain.then, "shorter signup helps");
    }

    #[test]
    fn property_defs_parse() {
        let p: PropertyDef = "email:string:required:pii".parse().expect("valid");
        assert!(p.required && p.pii);
        assert_eq!(p.kind, PropertyType::String);
        assert!("email".parse::<PropertyDef>().is_err());
        let error = "email:text".parse::<PropertyDef>().expect_err("bad type");
        assert!(error.to_string().contains("`text`"));
    }

    #[test]
    fn pii_needs_legal_basis() {
        let schema = EventSchema {
            event: "Signed Up".into(),
            version: 1,
            properties: vec!["email:string:pii".parse().expect("valid")],
            legal_basis: String::new(),
            retention_days: 30,
            status: StandardStatus::Proposed,
            proposed_by: "emea".into(),
            approved_by: None,
        };
        assert_eq!(
            schema.validate().expect_err("no basis").to_string(),
            "--legal-basis: required when a property is marked pii"
        );
    }

    #[test]
    fn key_result_progress() {
        let kr = KeyResult {
            id: "kr".into(),
            objective: "o".into(),
            pod: "emea".into(),
            metric: "m".into(),
            baseline: 10.0,
            target: 20.0,
            current: Some(15.0),
            updated_at_ms: 0,
            window_days: 28,
        };
        assert_eq!(kr.progress(), Some(0.5));
    }
}
