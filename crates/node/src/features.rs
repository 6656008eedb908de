//! What GrowthBook SDKs load from a pod's node (`GET /api/features/<client_key>`): every running experiment of this
//! pod as a feature named after the experiment key, holding one experiment rule, so that an SDK assigns each user
//! exactly as `growthmesh assign` does.
//!
//! The rule carries everything the SDKs hash with: the variations (the variant keys), their weights, the coverage,
//! `hashAttribute: "id"`, the hash version, the seed (the experiment key, as `assign` uses) and the namespace range.
//! `meta` names each variation by its variant key, so the SDK's `result.key` (what its tracking callback sends as
//! `variationId`) is the variant key that `analyze` reads back. A user the rule leaves out (coverage, namespace)
//! gets the feature's default value, the control's key, as the SDK's fallthrough does.
//!
//! Only experiments whose governance stage is `running` are served: a start the council blocked, a stopped or a
//! concluded experiment is not. A definition that fails [`model::Experiment::validate`] (a member bypassing the
//! CLI) is not served either, and is logged: an SDK would silently repair it and assign differently.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{Error, Node};

/// The attribute the SDKs hash: the app sets it to the same user id it sends to Segment.
pub const HASH_ATTRIBUTE: &str = "id";

/// The features payload as served, with its validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// Strong validator of the feature definitions (quoted, as HTTP sends it).
    pub etag: String,
    /// The JSON body: `{"status", "features", "dateUpdated"}`.
    pub body: String,
    /// When the feature definitions last changed on this node (Unix ms).
    pub date_updated_ms: i64,
    /// The experiment keys served, sorted.
    pub served: Vec<String>,
}

/// The assignment definition of a registered experiment: its key as the seed, its hash version, coverage, its
/// variants' weights and its namespace. `growthmesh assign` and the features payload both use it.
pub fn assignment(experiment: &model::Experiment) -> assign::Experiment {
    assign::Experiment {
        weights: Some(experiment.variants.iter().map(|v| v.weight).collect()),
        coverage: experiment.coverage,
        hash_version: experiment.hash_version,
        namespace: experiment.namespace.as_ref().map(|n| assign::Namespace {
            id: n.id.clone(),
            start: n.start,
            end: n.end,
        }),
        ..assign::Experiment::new(experiment.key.clone(), experiment.variants.len() as u32)
    }
}

/// The GrowthBook feature of one experiment.
fn feature(experiment: &model::Experiment) -> Value {
    let definition = assignment(experiment);
    let variations: Vec<&str> = experiment.variants.iter().map(|v| v.key.as_str()).collect();
    let meta: Vec<Value> = variations
        .iter()
        .map(|key| json!({ "key": key, "name": key }))
        .collect();
    let mut rule = json!({
        "id": format!("gm_{}", experiment.key),
        "key": experiment.key,
        "name": experiment.key,
        "seed": experiment.key,
        "hashAttribute": HASH_ATTRIBUTE,
        "hashVersion": definition.hash_version,
        "coverage": definition.coverage,
        "weights": definition.weights,
        "variations": variations,
        "meta": meta,
        "phase": "0",
    });
    if let Some(namespace) = &definition.namespace {
        rule["namespace"] = json!([namespace.id, namespace.start, namespace.end]);
    }
    json!({
        "defaultValue": variations.first().copied().unwrap_or_default(),
        "rules": [rule],
    })
}

#[derive(Serialize)]
struct Payload<'a> {
    status: u16,
    features: &'a BTreeMap<String, Value>,
    #[serde(rename = "dateUpdated")]
    date_updated: String,
}

impl Node {
    /// The features payload of this node's pod as the registry stands: its running experiments, each a feature.
    /// `dateUpdated` is when the definitions last changed on this node (kept in the store, so it never goes back:
    /// SDKs keep the newer of two payloads by it); `now_ms` is that time when they changed now.
    pub fn features(&mut self, now_ms: i64) -> Result<Features, Error> {
        let pod = self.own_pod();
        let view = self.shared_view();
        let governance = self.governance();
        let mut features = BTreeMap::new();
        for experiment in view.experiments.values() {
            if pod.as_deref() != Some(experiment.pod.as_str()) {
                continue;
            }
            let running = governance
                .experiments
                .get(&experiment.key)
                .is_some_and(|s| s.stage == governance::Stage::Running);
            if !running {
                continue;
            }
            if let Err(error) = experiment.validate() {
                tracing::warn!(experiment = %experiment.key, %error, "a running experiment with an invalid definition is not served to SDKs");
                continue;
            }
            features.insert(experiment.key.clone(), feature(experiment));
        }
        let definitions = serde_json::to_vec(&features).unwrap_or_default();
        let digest = Sha256::digest(&definitions);
        let digest = &digest[..16];
        let date_updated_ms = match self.store.features_state()? {
            Some((held, at_ms)) if held == digest => at_ms,
            _ => {
                self.store.set_features_state(digest, now_ms)?;
                now_ms
            }
        };
        let body = serde_json::to_string(&Payload {
            status: 200,
            features: &features,
            date_updated: model::time::format_rfc3339(date_updated_ms),
        })
        .unwrap_or_default();
        Ok(Features {
            etag: format!("\"{}\"", hex::encode(digest)),
            body,
            date_updated_ms,
            served: features.into_keys().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{NamespaceRange, Variant};

    fn experiment() -> model::Experiment {
        model::Experiment {
            key: "checkout-copy".into(),
            pod: "emea".into(),
            hypothesis: Default::default(),
            funnel_stage: Default::default(),
            audience: Default::default(),
            variants: vec![
                Variant {
                    key: "control".into(),
                    weight: 0.3,
                },
                Variant {
                    key: "short".into(),
                    weight: 0.7,
                },
            ],
            primary_metric: None,
            guardrail_metrics: Vec::new(),
            start_date: None,
            end_date: None,
            cost: 0.0,
            status: model::ExperimentStatus::Running,
            namespace: Some(NamespaceRange {
                id: "checkout".into(),
                start: 0.25,
                end: 0.75,
            }),
            started_at_ms: Some(1),
            hash_version: 2,
            coverage: 0.9,
            created_by: String::new(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn the_rule_holds_what_the_sdks_hash_with() {
        let value = feature(&experiment());
        assert_eq!(value["defaultValue"], "control");
        let rule = &value["rules"][0];
        assert_eq!(rule["key"], "checkout-copy");
        assert_eq!(rule["seed"], "checkout-copy");
        assert_eq!(rule["hashAttribute"], "id");
        assert_eq!(rule["hashVersion"], 2);
        assert_eq!(rule["coverage"], 0.9);
        assert_eq!(rule["weights"], json!([0.3, 0.7]));
        assert_eq!(rule["variations"], json!(["control", "short"]));
        assert_eq!(rule["meta"][1]["key"], "short");
        assert_eq!(rule["namespace"], json!(["checkout", 0.25, 0.75]));
    }

    #[test]
    fn the_assignment_definition_is_the_registered_one() {
        let definition = assignment(&experiment());
        assert_eq!(definition.seed, None, "the key is the seed");
        assert_eq!(
            (
                definition.hash_version,
                definition.coverage,
                definition.variations
            ),
            (2, 0.9, 2)
        );
        assert!(definition.validate().is_ok());
    }
}
