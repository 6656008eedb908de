//! Typed writes: each [`Op`] names the document it belongs to and how it is laid out there.
//!
//! Records live at root keys `<collection>/<id>` of their document, one automerge map per record, so concurrent
//! writes to different records never touch the same object and concurrent edits of one record merge per field.

use automerge::transaction::Transactable;
use automerge::{ROOT, ReadDoc};
use model::{
    Approval, Budget, DocId, EventSchema, Experiment, ExperimentStatus, KeyResult, Learning,
    Member, MetricDefinition, Objective, ResultSummary, Revocation, Role, Setting,
};
use serde::Serialize;
use serde_json::Value;

use crate::acceptance::Standing;
use crate::{Error, value};

/// One write to the registry; one op makes one change. Serializable, so that a node can keep its own writes and
/// write them again when a removal takes out the change they were first written as.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Founds a federation (the first council change).
    Genesis {
        /// Federation name.
        name: String,
        /// Founding key (hex); becomes the first council member.
        founder: Member,
    },
    /// Admits a member.
    AddMember(Member),
    /// Admits a member who redeemed an invite, spending the invite's nonce.
    AdmitInvited {
        /// The new member.
        member: Member,
        /// The ticket nonce.
        nonce: String,
    },
    /// Revokes a member for good.
    RevokeMember {
        /// Public key (hex).
        public_key: String,
        /// The revocation.
        revocation: Revocation,
    },
    /// Adds a company objective.
    AddObjective(Objective),
    /// Adds a key result of the author's pod.
    AddKeyResult(KeyResult),
    /// Sets the current value of a key result.
    UpdateKeyResult {
        /// Key result id.
        id: String,
        /// New current value.
        current: f64,
        /// When (Unix ms).
        updated_at_ms: i64,
    },
    /// A pod proposes an event schema.
    ProposeSchema(EventSchema),
    /// A steward approves an event schema (copied into `standards`).
    ApproveSchema(EventSchema),
    /// A pod proposes a metric definition.
    ProposeMetric(MetricDefinition),
    /// A steward approves a metric definition.
    ApproveMetric(MetricDefinition),
    /// A pod registers an experiment.
    NewExperiment(Experiment),
    /// A pod changes the status of its experiment.
    SetExperimentStatus {
        /// Experiment key.
        key: String,
        /// New status.
        status: ExperimentStatus,
        /// When (Unix ms); a start records it as `started_at_ms`, the time its cost is spent.
        #[serde(default)]
        at_ms: i64,
    },
    /// A council member votes on an experiment (`votes/<experiment>/<voter>`, a scalar so that the view can check
    /// the voter signed it).
    Decide(Approval),
    /// The council changes a governance setting.
    SetSetting(Setting),
    /// The council allocates a budget.
    AllocateBudget(Budget),
    /// The council sets the high-impact cost threshold of a quarter.
    SetThreshold {
        /// Quarter.
        quarter: String,
        /// Cost above which an experiment is high-impact.
        cost: f64,
    },
    /// A pod or partner shares a learning.
    AddLearning(Learning),
    /// A pod concludes its experiment: the result summary is stored and the experiment's status set to concluded,
    /// in one change (so the experiment must be in the author's pod document).
    ConcludeExperiment(ResultSummary),
}

/// Where a record lives: its document and root key.
pub(crate) struct Target {
    pub doc: DocId,
    pub key: String,
}

impl Op {
    /// The document this op writes, given the author's standing (pods write their own document).
    pub(crate) fn target(&self, standing: Option<&Standing>) -> Result<Target, Error> {
        let own = |what: &str| -> Result<DocId, Error> {
            match standing {
                Some(Standing {
                    role: Role::Pod,
                    scope: Some(pod),
                    ..
                }) => Ok(DocId::Pod(pod.clone())),
                Some(Standing {
                    role: Role::Partner,
                    scope: Some(name),
                    ..
                }) if what == "learnings" => Ok(DocId::Partner(name.clone())),
                Some(s) => Err(Error::NotAllowed {
                    author: String::new(),
                    doc: format!("{what} of a pod"),
                    reason: format!(
                        "only pod members write {what}; this key's role is {}",
                        s.role
                    ),
                }),
                None => Err(Error::NotAllowed {
                    author: String::new(),
                    doc: format!("{what} of a pod"),
                    reason: "this key is not a member of the federation".into(),
                }),
            }
        };
        let (doc, key) = match self {
            Op::Genesis { .. } => (DocId::Council, "federation".to_owned()),
            Op::AddMember(m) | Op::AdmitInvited { member: m, .. } => {
                (DocId::Council, format!("members/{}", m.public_key))
            }
            Op::RevokeMember { public_key, .. } => {
                (DocId::Council, format!("revocations/{public_key}"))
            }
            Op::AddObjective(o) => (DocId::Council, format!("objectives/{}", o.id)),
            Op::Decide(a) => (DocId::Council, format!("votes/{}/{}", a.experiment, a.by)),
            Op::SetSetting(setting) => (DocId::Council, format!("settings/{}", setting.name())),
            Op::AllocateBudget(b) => (DocId::Council, format!("budgets/{}:{}", b.pod, b.quarter)),
            Op::SetThreshold { quarter, .. } => (DocId::Council, format!("thresholds/{quarter}")),
            Op::ApproveSchema(s) => (DocId::Standards, format!("schemas/{}", s.key())),
            Op::ApproveMetric(m) => (DocId::Standards, format!("metrics/{}", m.key)),
            Op::AddKeyResult(k) => (own("key results")?, format!("key_results/{}", k.id)),
            Op::UpdateKeyResult { id, .. } => (own("key results")?, format!("key_results/{id}")),
            Op::ProposeSchema(s) => (
                own("schema proposals")?,
                format!("schema_proposals/{}", s.key()),
            ),
            Op::ProposeMetric(m) => (
                own("metric proposals")?,
                format!("metric_proposals/{}", m.key),
            ),
            Op::NewExperiment(e) => (own("experiments")?, format!("experiments/{}", e.key)),
            Op::SetExperimentStatus { key, .. } => {
                (own("experiments")?, format!("experiments/{key}"))
            }
            Op::AddLearning(l) => (own("learnings")?, format!("learnings/{}", l.id)),
            Op::ConcludeExperiment(r) => (own("results")?, format!("results/{}", r.experiment)),
        };
        Ok(Target { doc, key })
    }

    /// Writes the op into a transaction on its document.
    pub(crate) fn apply(
        &self,
        tx: &mut automerge::transaction::Transaction<'_>,
        key: &str,
    ) -> Result<(), Error> {
        match self {
            Op::Genesis { name, founder } => {
                let federation = serde_json::json!({ "name": name, "founder": founder.public_key });
                value::put(tx, &ROOT, key, &federation)?;
                value::put(
                    tx,
                    &ROOT,
                    &format!("members/{}", founder.public_key),
                    &json(founder),
                )?;
            }
            Op::AddMember(m) => value::put(tx, &ROOT, key, &json(m))?,
            Op::AdmitInvited { member, nonce } => {
                value::put(tx, &ROOT, key, &json(member))?;
                value::put(
                    tx,
                    &ROOT,
                    &format!("invites/{nonce}"),
                    &Value::from(member.public_key.clone()),
                )?;
            }
            Op::RevokeMember { revocation, .. } => value::put(tx, &ROOT, key, &json(revocation))?,
            Op::AddObjective(o) => value::put(tx, &ROOT, key, &json(o))?,
            Op::Decide(a) => tx.put(ROOT, key, json(a).to_string())?,
            Op::SetSetting(setting) => value::put(tx, &ROOT, key, &setting.value())?,
            Op::AllocateBudget(b) => value::put(tx, &ROOT, key, &json(b))?,
            Op::SetThreshold { cost, .. } => value::put(tx, &ROOT, key, &Value::from(*cost))?,
            Op::ApproveSchema(s) | Op::ProposeSchema(s) => value::put(tx, &ROOT, key, &json(s))?,
            Op::ApproveMetric(m) | Op::ProposeMetric(m) => value::put(tx, &ROOT, key, &json(m))?,
            Op::AddKeyResult(k) => value::put(tx, &ROOT, key, &json(k))?,
            Op::NewExperiment(e) => value::put(tx, &ROOT, key, &json(e))?,
            Op::AddLearning(l) => value::put(tx, &ROOT, key, &json(l))?,
            Op::UpdateKeyResult {
                current,
                updated_at_ms,
                ..
            } => {
                let record = record_object(tx, key)?;
                tx.put(&record, "current", *current)?;
                tx.put(&record, "updated_at_ms", *updated_at_ms)?;
            }
            Op::SetExperimentStatus { status, at_ms, .. } => {
                let record = record_object(tx, key)?;
                let text = json(status);
                tx.put(&record, "status", text.as_str().unwrap_or("draft"))?;
                // The first start is when the cost was spent; a restart after a stop keeps it.
                if *status == ExperimentStatus::Running
                    && tx.get(&record, "started_at_ms")?.is_none()
                {
                    tx.put(&record, "started_at_ms", *at_ms)?;
                }
            }
            Op::ConcludeExperiment(r) => {
                let experiment = record_object(tx, &format!("experiments/{}", r.experiment))?;
                tx.put(&experiment, "status", "concluded")?;
                value::put(tx, &ROOT, key, &json(r))?;
            }
        }
        Ok(())
    }
}

fn record_object(
    tx: &automerge::transaction::Transaction<'_>,
    key: &str,
) -> Result<automerge::ObjId, Error> {
    match tx.get(&ROOT, key)? {
        Some((automerge::Value::Object(_), id)) => Ok(id),
        _ => Err(Error::Conflict(format!("{key} does not exist"))),
    }
}

fn json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("model records serialize to JSON")
}
