//! The seeded workload both modes share: which record a writing node writes next, decided by the scenario's
//! generator. A [`Write`] is the plan; [`Write::op`] turns it into the `registry::Op` the node writes (a steward's
//! approval needs the node's own view, so the plan is completed where the registry is: in the replica in
//! deterministic mode, inside the running node in real mode).

use model::{RegistryView, Role};
use rand::RngExt;
use rand::rngs::StdRng;
use registry::Op;
use serde::{Deserialize, Serialize};

/// The quarter every simulated objective, threshold and key result belongs to.
const QUARTER: &str = "2026Q4";
/// Experiments whose key starts with this are the schedule's: the random workload neither votes on nor starts them,
/// so a scripted approval, rejection or start is the only one they get.
pub const SCRIPTED_PREFIX: &str = "scripted-";

/// One planned write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Write {
    /// A council objective.
    Objective {
        /// Record id.
        id: String,
    },
    /// The council's high-impact threshold (the council nodes conflict on it).
    Threshold {
        /// New cost.
        cost: f64,
    },
    /// A pod's key result update (the pods of a region conflict on it).
    KeyResult {
        /// Key result id.
        id: String,
        /// New current value.
        current: f64,
        /// When.
        at_ms: i64,
    },
    /// A pod proposes an event schema.
    Schema {
        /// Event name.
        event: String,
    },
    /// A pod or partner shares a learning.
    Learning {
        /// Record id.
        id: String,
        /// When.
        at_ms: i64,
    },
    /// A steward approves the first proposed schema not yet approved (nothing when there is none).
    ApproveSchema,
    /// A pod registers an experiment: metrics come from a small pool and audiences name no region, so pods of
    /// different regions overlap often; some cost more than any threshold the council sets (high impact).
    Experiment {
        /// Experiment key.
        key: String,
        /// Its cost.
        cost: f64,
        /// Its primary metric.
        metric: String,
        /// When.
        at_ms: i64,
    },
    /// A pod starts the first of its experiments that governance lets start now (nothing when none may).
    Start {
        /// The pod.
        pod: String,
        /// When.
        at_ms: i64,
    },
    /// A council member votes on the experiment that has waited longest for approval (nothing when none waits).
    Vote {
        /// The voter's public key (hex).
        by: String,
        /// Reject rather than approve.
        reject: bool,
        /// When.
        at_ms: i64,
    },
    /// A council member allocates a pod's budget for the simulated quarter (a scheduled write).
    Allocate {
        /// The pod.
        pod: String,
        /// The amount.
        amount: f64,
        /// The council member's public key (hex).
        by: String,
    },
    /// A council member decides on one experiment (a scheduled write; nothing when the experiment is not known
    /// here yet).
    Decide {
        /// The experiment.
        key: String,
        /// The voter's public key (hex).
        by: String,
        /// Reject rather than approve.
        reject: bool,
        /// When.
        at_ms: i64,
    },
    /// A pod starts one experiment if governance lets it start now (a scheduled write; nothing otherwise).
    StartExperiment {
        /// The experiment.
        key: String,
        /// When.
        at_ms: i64,
    },
    /// A council node revokes a member.
    Revoke {
        /// The member's public key (hex).
        public_key: String,
        /// The revoking council member's public key (hex).
        by: String,
        /// When.
        at_ms: i64,
    },
}

/// Who writes: a node's name, key, region and role.
#[derive(Clone, Copy, Debug)]
pub struct Writer<'a> {
    /// Node name (record ids start with it).
    pub name: &'a str,
    /// Public key (hex).
    pub key: &'a str,
    /// Region (the pod its pod nodes share).
    pub region: &'a str,
    /// Role.
    pub role: Role,
}

/// Plans the next write of `writer`: `counter` is the run's running write number (already advanced for this
/// write), `conflicts` the scenario's `workload.conflicts`. Draws exactly one number from `rng`.
pub fn plan(
    rng: &mut StdRng,
    counter: u64,
    writer: Writer<'_>,
    conflicts: bool,
    now_ms: i64,
) -> Write {
    let id = format!("{}-{counter}", writer.name);
    let roll: f64 = rng.random();
    match writer.role {
        Role::Council if roll < 0.4 => Write::Objective { id },
        Role::Council if roll < 0.6 => Write::Threshold {
            cost: 4_000.0 + (counter % 40) as f64 * 100.0,
        },
        Role::Council => Write::Vote {
            by: writer.key.to_owned(),
            reject: counter.is_multiple_of(5),
            at_ms: now_ms,
        },
        Role::Pod if roll < 0.3 && conflicts => Write::KeyResult {
            id: format!("kr-{}", writer.region),
            current: (counter % 1000) as f64 / 1000.0,
            at_ms: now_ms,
        },
        Role::Pod if roll < 0.4 => Write::Schema {
            event: format!("Event {id}"),
        },
        Role::Pod if roll < 0.55 => Write::Experiment {
            key: id,
            cost: (counter % 10) as f64 * 1_000.0,
            metric: format!("metric-{}", counter % 4),
            at_ms: now_ms,
        },
        Role::Pod if roll < 0.75 => Write::Start {
            pod: writer.region.to_owned(),
            at_ms: now_ms,
        },
        Role::Pod | Role::Partner => Write::Learning { id, at_ms: now_ms },
        Role::Steward => Write::ApproveSchema,
    }
}

impl Write {
    /// The operation to write; `view` is asked for only by an approval. `None` when there is nothing to approve.
    pub fn op(&self, view: impl FnOnce() -> RegistryView) -> Option<Op> {
        Some(match self {
            Write::Objective { id } => Op::AddObjective(model::Objective {
                id: id.clone(),
                title: "Grow weekly active teams".into(),
                quarter: QUARTER.into(),
                north_star_metric: None,
                target: None,
                created_by: String::new(),
            }),
            Write::Threshold { cost } => Op::SetThreshold {
                quarter: QUARTER.into(),
                cost: *cost,
            },
            Write::KeyResult { id, current, at_ms } => Op::UpdateKeyResult {
                id: id.clone(),
                current: *current,
                updated_at_ms: *at_ms,
            },
            Write::Schema { event } => Op::ProposeSchema(model::EventSchema {
                event: event.clone(),
                version: 1,
                properties: Vec::new(),
                legal_basis: String::new(),
                retention_days: 30,
                status: model::StandardStatus::Proposed,
                proposed_by: String::new(),
                approved_by: None,
            }),
            Write::Learning { id, at_ms } => Op::AddLearning(learning(id, *at_ms)),
            Write::ApproveSchema => {
                let view = view();
                let proposal = view
                    .schema_proposals
                    .values()
                    .find(|p| !view.schemas.contains_key(&p.key()))?
                    .clone();
                Op::ApproveSchema(model::EventSchema {
                    status: model::StandardStatus::Approved,
                    ..proposal
                })
            }
            Write::Experiment {
                key,
                cost,
                metric,
                at_ms,
            } => Op::NewExperiment(experiment(key, *cost, metric, *at_ms)),
            Write::Start { pod, at_ms } => {
                let view = view();
                let key = view
                    .experiments
                    .values()
                    .filter(|e| {
                        e.pod == *pod
                            && e.status == model::ExperimentStatus::Draft
                            && !e.key.starts_with(SCRIPTED_PREFIX)
                    })
                    .find(|e| governance::try_start(&view, &e.key, *at_ms).is_ok())?
                    .key
                    .clone();
                Op::SetExperimentStatus {
                    key,
                    status: model::ExperimentStatus::Running,
                    at_ms: *at_ms,
                }
            }
            Write::Vote { by, reject, at_ms } => {
                let view = view();
                let governance = governance::Governance::derive(&view);
                let waiting = governance.queue().into_iter().find(|s| {
                    !s.key.starts_with(SCRIPTED_PREFIX)
                        && !s.approval.approvals.iter().any(|v| v.by == *by)
                        && !s.approval.ignored.iter().any(|(v, _)| v.by == *by)
                })?;
                Op::Decide(model::Approval {
                    experiment: waiting.key.clone(),
                    decision: if *reject {
                        model::Decision::Rejected
                    } else {
                        model::Decision::Approved
                    },
                    reason: "simulated council".into(),
                    by: by.clone(),
                    at_ms: *at_ms,
                })
            }
            Write::Allocate { pod, amount, by } => Op::AllocateBudget(model::Budget {
                pod: pod.clone(),
                quarter: QUARTER.into(),
                allocated: *amount,
                by: by.clone(),
            }),
            Write::Decide {
                key,
                by,
                reject,
                at_ms,
            } => {
                if !view().experiments.contains_key(key) {
                    return None;
                }
                Op::Decide(model::Approval {
                    experiment: key.clone(),
                    decision: if *reject {
                        model::Decision::Rejected
                    } else {
                        model::Decision::Approved
                    },
                    reason: "scheduled".into(),
                    by: by.clone(),
                    at_ms: *at_ms,
                })
            }
            Write::StartExperiment { key, at_ms } => {
                governance::try_start(&view(), key, *at_ms).ok()?;
                Op::SetExperimentStatus {
                    key: key.clone(),
                    status: model::ExperimentStatus::Running,
                    at_ms: *at_ms,
                }
            }
            Write::Revoke {
                public_key,
                by,
                at_ms,
            } => Op::RevokeMember {
                public_key: public_key.clone(),
                revocation: model::Revocation {
                    by: by.clone(),
                    reason: "scheduled".into(),
                    at_ms: *at_ms,
                },
            },
        })
    }
}

/// An experiment registered by the simulated workload (dates in the simulated quarter).
pub fn experiment(key: &str, cost: f64, metric: &str, now_ms: i64) -> model::Experiment {
    model::Experiment {
        key: key.to_owned(),
        pod: String::new(),
        hypothesis: model::Hypothesis::parse(&format!(
            "if we change {key} then {metric} rises because users notice"
        )),
        funnel_stage: model::FunnelStage::Activation,
        audience: model::Audience::default(),
        variants: vec![
            model::Variant {
                key: "control".into(),
                weight: 0.5,
            },
            model::Variant {
                key: "treatment".into(),
                weight: 0.5,
            },
        ],
        primary_metric: Some(metric.to_owned()),
        guardrail_metrics: Vec::new(),
        start_date: Some("2026-11-02".into()),
        end_date: Some("2026-11-30".into()),
        cost,
        status: model::ExperimentStatus::Draft,
        namespace: None,
        started_at_ms: None,
        hash_version: 1,
        coverage: 1.0,
        created_by: String::new(),
        created_at_ms: now_ms,
    }
}

/// The budget every region's pod gets for the simulated quarter.
pub fn budget(pod: &str) -> model::Budget {
    model::Budget {
        pod: pod.to_owned(),
        quarter: QUARTER.into(),
        allocated: 20_000.0,
        by: String::new(),
    }
}

/// A learning record (also what a hostile node forges).
pub fn learning(id: &str, now_ms: i64) -> model::Learning {
    model::Learning {
        id: id.to_owned(),
        title: format!("Learning {id}"),
        body: "Shorter forms lifted activation in the second week.".into(),
        outcome: Some(model::Outcome::Win),
        tags: vec!["signup".into()],
        experiment: None,
        source: String::new(),
        author: String::new(),
        created_at_ms: now_ms,
    }
}

/// The key result every region with pods starts with (written by its first pod).
pub fn key_result(region: &str) -> model::KeyResult {
    model::KeyResult {
        id: format!("kr-{region}"),
        objective: "obj-main".into(),
        pod: String::new(),
        metric: "activation".into(),
        baseline: 0.3,
        target: 0.4,
        current: None,
        updated_at_ms: 0,
        window_days: model::okr::DEFAULT_KEY_RESULT_WINDOW_DAYS,
    }
}

/// The objective every federation starts with.
pub fn main_objective() -> model::Objective {
    model::Objective {
        id: "obj-main".into(),
        title: "Grow".into(),
        quarter: QUARTER.into(),
        north_star_metric: None,
        target: None,
        created_by: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_plan_round_trips_through_json_and_draws_once() {
        let mut rng = StdRng::seed_from_u64(3);
        let writer = Writer {
            name: "emea-pod-1",
            key: "00",
            region: "emea",
            role: Role::Pod,
        };
        let first = plan(&mut rng, 1, writer, true, 10);
        let json = serde_json::to_string(&first).expect("serializes");
        let back: Write = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, first);
        let mut other = StdRng::seed_from_u64(3);
        let _: f64 = other.random();
        assert_eq!(rng.random::<u64>(), other.random::<u64>());
    }

    #[test]
    fn an_approval_needs_a_proposal() {
        assert_eq!(Write::ApproveSchema.op(RegistryView::default), None);
    }
}
