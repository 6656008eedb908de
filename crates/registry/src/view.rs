//! Reading the documents into the typed [`RegistryView`], and membership as of given council heads.
//!
//! Only what a document's authority may hold is read from it (members only from `council`, experiments only from
//! pod documents, with the pod taken from the document id), so an authorized writer cannot smuggle records into
//! another authority's collection by writing them into its own document.

use std::collections::BTreeMap;

use automerge::{Automerge, ChangeHash};
use model::{DocId, Federation, Member, RegistryView, StandardStatus};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::FederationId;
use crate::acceptance::{Membership, Standing};
use crate::value::to_json;

/// The root map of `doc` (at `heads`, or now) as JSON.
pub(crate) fn root(doc: &Automerge, heads: Option<&[ChangeHash]>) -> Map<String, Value> {
    match to_json(&doc.hydrate(heads)) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Records of `collection` in a root map, parsed as `T`; records that do not parse are skipped (identically on
/// every replica).
fn records<T: DeserializeOwned>(root: &Map<String, Value>, collection: &str) -> Vec<(String, T)> {
    let prefix = format!("{collection}/");
    root.iter()
        .filter_map(|(key, value)| {
            let id = key.strip_prefix(&prefix)?;
            match serde_json::from_value(value.clone()) {
                Ok(record) => Some((id.to_owned(), record)),
                Err(error) => {
                    tracing::debug!(key = %key, %error, "record does not parse; left out of the view");
                    None
                }
            }
        })
        .collect()
}

/// Membership from a council root map.
pub(crate) fn membership(council: &Map<String, Value>) -> Membership {
    let revoked: std::collections::HashSet<String> = council
        .keys()
        .filter_map(|k| k.strip_prefix("revocations/").map(str::to_owned))
        .collect();
    let members = records::<Member>(council, "members")
        .into_iter()
        .filter_map(|(key, member)| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&key, &mut bytes).ok()?;
            let standing = Standing {
                role: member.role,
                scope: member.scope,
                revoked: revoked.contains(&key),
            };
            Some((bytes, standing))
        })
        .collect();
    Membership {
        members,
        void: Default::default(),
    }
}

/// The typed view of all documents.
pub(crate) fn build(
    federation: Option<FederationId>,
    docs: &BTreeMap<DocId, Automerge>,
) -> RegistryView {
    let mut view = RegistryView::default();
    for (doc_id, doc) in docs {
        let root = root(doc, None);
        match doc_id {
            DocId::Council => {
                read_council(&mut view, federation, &root);
                view.votes = votes(doc, &root);
            }
            DocId::Standards => read_standards(&mut view, &root),
            DocId::Pod(pod) => read_pod(&mut view, pod, &root),
            DocId::Partner(name) => read_partner(&mut view, name, &root),
        }
    }
    view
}

fn read_council(
    view: &mut RegistryView,
    federation: Option<FederationId>,
    root: &Map<String, Value>,
) {
    if let (Some(id), Some(Value::Object(genesis))) = (federation, root.get("federation")) {
        let text = |k: &str| {
            genesis
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        view.federation = Some(Federation {
            id: id.to_hex(),
            name: text("name"),
            founder: text("founder"),
        });
    }
    view.revocations = records(root, "revocations").into_iter().collect();
    for (key, mut member) in records::<Member>(root, "members") {
        member.public_key.clone_from(&key);
        member.revoked = view.revocations.contains_key(&key);
        view.members.insert(key, member);
    }
    view.objectives = records(root, "objectives").into_iter().collect();
    for (name, value) in root
        .iter()
        .filter_map(|(key, value)| Some((key.strip_prefix("settings/")?, value)))
    {
        model::Setting::read(&mut view.settings, name, value);
    }
    view.budgets = records(root, "budgets").into_iter().collect();
    view.high_impact_thresholds = records(root, "thresholds").into_iter().collect();
    view.invites = records(root, "invites").into_iter().collect();
}

/// Votes (`votes/<experiment>/<voter>`, each a JSON text), counting only a vote whose winning value was written by
/// the voter's own key: a council member may write anywhere in the council document, but not vote for another.
fn votes(
    doc: &Automerge,
    root: &Map<String, Value>,
) -> BTreeMap<String, BTreeMap<String, model::Approval>> {
    let mut votes: BTreeMap<String, BTreeMap<String, model::Approval>> = BTreeMap::new();
    for (key, value) in root.iter().filter(|(k, _)| k.starts_with("votes/")) {
        let Some((experiment, voter)) = key["votes/".len()..].split_once('/') else {
            continue;
        };
        let writer = match automerge::ReadDoc::get(doc, automerge::ROOT, key.as_str()) {
            Ok(Some((_, automerge::ObjId::Id(_, actor, _)))) => {
                crate::Actor::from_bytes(actor.to_bytes()).map(|a| hex::encode(a.key))
            }
            _ => None,
        };
        let vote = value
            .as_str()
            .and_then(|text| serde_json::from_str::<model::Approval>(text).ok());
        match (writer, vote) {
            (Some(writer), Some(mut vote)) if writer == voter && vote.by == voter => {
                vote.experiment = experiment.to_owned();
                votes
                    .entry(experiment.to_owned())
                    .or_default()
                    .insert(voter.to_owned(), vote);
            }
            (writer, _) => {
                tracing::debug!(key = %key, ?writer, "vote not signed by its voter or unreadable; not counted")
            }
        }
    }
    votes
}

fn read_standards(view: &mut RegistryView, root: &Map<String, Value>) {
    for (key, mut schema) in records::<model::EventSchema>(root, "schemas") {
        if schema.status == StandardStatus::Proposed {
            schema.status = StandardStatus::Approved;
        }
        view.schemas.insert(key, schema);
    }
    view.metrics = records(root, "metrics").into_iter().collect();
}

fn read_pod(view: &mut RegistryView, pod: &str, root: &Map<String, Value>) {
    for (key, mut experiment) in records::<model::Experiment>(root, "experiments") {
        experiment.pod = pod.to_owned();
        experiment.key.clone_from(&key);
        // Two pods may register the same key concurrently; the lower pod name wins, on every replica.
        view.experiments.entry(key).or_insert(experiment);
    }
    for (key, mut result) in records::<model::ResultSummary>(root, "results") {
        result.experiment.clone_from(&key);
        // Only the pod that owns the experiment may conclude it; the same lower-pod-wins rule as experiments.
        if view.experiments.get(&key).is_some_and(|e| e.pod == pod) {
            view.results.entry(key).or_insert(result);
        }
    }
    for (id, mut kr) in records::<model::KeyResult>(root, "key_results") {
        kr.pod = pod.to_owned();
        view.key_results.insert(format!("{pod}/{id}"), kr);
    }
    for (key, mut schema) in records::<model::EventSchema>(root, "schema_proposals") {
        schema.proposed_by = pod.to_owned();
        schema.status = StandardStatus::Proposed;
        view.schema_proposals.insert(format!("{pod}/{key}"), schema);
    }
    for (key, mut metric) in records::<model::MetricDefinition>(root, "metric_proposals") {
        metric.proposed_by = pod.to_owned();
        metric.status = StandardStatus::Proposed;
        view.metric_proposals.insert(format!("{pod}/{key}"), metric);
    }
    read_learnings(view, &format!("pod/{pod}"), root);
}

fn read_partner(view: &mut RegistryView, name: &str, root: &Map<String, Value>) {
    read_learnings(view, &format!("partner/{name}"), root);
}

fn read_learnings(view: &mut RegistryView, source: &str, root: &Map<String, Value>) {
    for (id, mut learning) in records::<model::Learning>(root, "learnings") {
        learning.source = source.to_owned();
        view.learnings.insert(format!("{source}/{id}"), learning);
    }
}
