//! The typed registry: every document merged into one read-only view, with sorted keys so equal registries
//! print equal bytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Approval, Budget, EventSchema, Experiment, KeyResult, Learning, Member, MetricDefinition,
    Objective, ResultSummary, Revocation,
};

/// The federation, as its genesis declared it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Federation {
    /// Hash of the genesis change (hex).
    pub id: String,
    /// Name given at creation.
    pub name: String,
    /// Founding council key.
    pub founder: String,
}

/// Everything the registry holds, merged from all documents.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RegistryView {
    /// The federation, once a genesis is known.
    pub federation: Option<Federation>,
    /// Members by public key.
    pub members: BTreeMap<String, Member>,
    /// Revocations by public key.
    pub revocations: BTreeMap<String, Revocation>,
    /// Objectives by id.
    pub objectives: BTreeMap<String, Objective>,
    /// Key results by id.
    pub key_results: BTreeMap<String, KeyResult>,
    /// Approved (or deprecated) schemas by `event@version`.
    pub schemas: BTreeMap<String, EventSchema>,
    /// Schema proposals by `pod/event@version`.
    pub schema_proposals: BTreeMap<String, EventSchema>,
    /// Approved metric definitions by key.
    pub metrics: BTreeMap<String, MetricDefinition>,
    /// Metric proposals by `pod/key`.
    pub metric_proposals: BTreeMap<String, MetricDefinition>,
    /// Experiments by key.
    pub experiments: BTreeMap<String, Experiment>,
    /// Council votes by experiment key, then by voter key (only votes the voter signed).
    pub votes: BTreeMap<String, BTreeMap<String, Approval>>,
    /// The council's governance settings.
    pub settings: crate::GovernanceSettings,
    /// Budgets by `pod/quarter`.
    pub budgets: BTreeMap<String, Budget>,
    /// Learnings by id.
    pub learnings: BTreeMap<String, Learning>,
    /// Result summaries of concluded experiments, by experiment key.
    pub results: BTreeMap<String, ResultSummary>,
    /// Spent invite nonces and the key that redeemed each.
    pub invites: BTreeMap<String, String>,
    /// Cost above which an experiment is high-impact, per quarter.
    pub high_impact_thresholds: BTreeMap<String, f64>,
    /// Equivocation proofs held, by the equivocating member's public key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub equivocations: BTreeMap<String, Vec<crate::Equivocation>>,
    /// Admissions made void by an invite spent twice, by the void key.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub void_admissions: BTreeMap<String, crate::VoidAdmission>,
}

impl RegistryView {
    /// The latest approved schema of `event`.
    pub fn approved_schema(&self, event: &str) -> Option<&EventSchema> {
        self.schemas
            .values()
            .filter(|s| s.event == event && s.status == crate::StandardStatus::Approved)
            .max_by_key(|s| s.version)
    }
}
