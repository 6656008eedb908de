//! Scorecards: what a pod publishes about itself, and the rules by which a subscriber (a council node) keeps it.
//!
//! A pod's node computes its tier-2 scorecard from the registry and its own counts ([`pod_snapshot`]), signs it
//! ([`sign`]) and publishes it on the federation's `scorecards` gossip topic. A snapshot carries aggregates only:
//! its JSON schema refuses any field it does not name, so user ids or raw events cannot ride along. A subscriber
//! offers every snapshot it hears to its [`Board`], which keeps the newest per pod and refuses, with a reason, a
//! snapshot that is oversized or malformed, signed wrongly, from another federation, from a key that is not a live
//! member of that pod, with more than [`MAX_METRICS_PER_TIER`] metrics, with a value that is not a finite number,
//! dated in the future, or not newer than the one held (an older or replayed snapshot never replaces a newer one).
//! The company's tier 1 is aggregated from the pods' tier 2 ([`company`]); tier 3 is read from an experiment's
//! signed result ([`experiment`]).

use std::collections::BTreeMap;

use identity::{Keypair, PublicKey};
use model::okr::Quarter;
use model::{RegistryView, Role};
use serde::{Deserialize, Serialize};

/// The seeds' rule: at most five metrics a tier.
pub const MAX_METRICS_PER_TIER: usize = 5;
/// How far in the future a snapshot's `as_of_ms` may be (clock skew between nodes).
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60_000;
/// A snapshot's wire size limit (it holds a handful of numbers).
pub const MAX_SNAPSHOT_BYTES: usize = 16 * 1024;
/// Domain separation of the signature: a snapshot signature cannot be taken for a registry change's, or back.
const DOMAIN: &[u8] = b"growthmesh/scorecard/v1\0";

/// One number of a scorecard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// What it measures (see the functions that compute each tier).
    pub name: String,
    /// Its value; `null` when there is nothing to measure yet.
    pub value: Option<f64>,
    /// The value aimed at, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    /// Tier 3: the confidence interval of the relative lift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// Tier 3: the Bayesian chance that the treatment is better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance_to_win: Option<f64>,
}

impl Metric {
    fn new(name: &str, value: Option<f64>) -> Self {
        Self {
            name: name.into(),
            value,
            target: None,
            interval: None,
            chance_to_win: None,
        }
    }

    fn numbers(&self) -> impl Iterator<Item = f64> + '_ {
        self.value
            .into_iter()
            .chain(self.target)
            .chain(self.interval.into_iter().flatten())
            .chain(self.chance_to_win)
    }
}

/// The seeds' decentralization dashboard, per pod and quarter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dashboard {
    /// Mean days from an experiment's registration to its concluded result, this quarter.
    pub cycle_time_days: Option<f64>,
    /// Share of the pod's experiments this quarter that needed an approval from outside the pod.
    pub dependency_ratio: Option<f64>,
    /// Incremental revenue of the pod's concluded experiments this quarter.
    pub revenue: Option<f64>,
    /// Events quarantined for schema or privacy violations (the pod's own count).
    pub compliance_incidents: u64,
    /// The pod's autonomy pulse as NPS (-100 to 100), when its members answered one.
    #[serde(default)]
    pub unit_nps: Option<f64>,
    /// Mean progress of the pod's key results per funnel stage (`activation`, `retention`, `revenue`), a key
    /// result counting towards the stage of the experiments that test its metric: what the company's growth health
    /// score combines.
    #[serde(default)]
    pub stage_progress: BTreeMap<String, f64>,
}

/// The funnel stages the growth health score combines, with their weights (see [`health_score`]).
pub const HEALTH_WEIGHTS: [(&str, f64); 3] =
    [("activation", 0.4), ("retention", 0.3), ("revenue", 0.3)];

/// A pod's signed tier-2 scorecard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The federation id (hex): a snapshot of another federation is refused.
    pub federation: String,
    /// The pod.
    pub pod: String,
    /// The quarter it describes (`2026Q4`).
    pub quarter: String,
    /// When it was computed (Unix ms): a newer snapshot replaces an older one.
    pub as_of_ms: i64,
    /// Tier 2, at most [`MAX_METRICS_PER_TIER`].
    pub metrics: Vec<Metric>,
    /// The decentralization dashboard.
    pub dashboard: Dashboard,
}

impl Snapshot {
    fn numbers(&self) -> impl Iterator<Item = f64> + '_ {
        let d = &self.dashboard;
        self.metrics.iter().flat_map(Metric::numbers).chain(
            [d.cycle_time_days, d.dependency_ratio, d.revenue, d.unit_nps]
                .into_iter()
                .flatten()
                .chain(d.stage_progress.values().copied()),
        )
    }
}

/// The wire form: the snapshot, the publisher's key and the signature over the snapshot's canonical JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    snapshot: Snapshot,
    key: String,
    signature: String,
}

fn signed_bytes(snapshot: &Snapshot) -> Vec<u8> {
    let mut bytes = DOMAIN.to_vec();
    // Serializing a struct writes its fields in declaration order and every f64 in its shortest exact form, so
    // the signer and every verifier produce the same bytes.
    bytes.extend(serde_json::to_vec(snapshot).unwrap_or_default());
    bytes
}

/// Signs `snapshot` as `key`: the bytes to publish.
pub fn sign(snapshot: &Snapshot, key: &Keypair) -> Vec<u8> {
    let wire = Wire {
        snapshot: snapshot.clone(),
        key: key.public().to_hex(),
        signature: hex::encode(key.sign(&signed_bytes(snapshot))),
    };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// Larger than [`MAX_SNAPSHOT_BYTES`].
    #[error("snapshot of {len} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit")]
    Oversized {
        /// Its size.
        len: usize,
    },
    /// Not a snapshot, or one with fields a snapshot does not have (only aggregates may be published).
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// The signature does not verify under the key it names.
    #[error("the snapshot's signature does not verify under key {key}")]
    BadSignature {
        /// The key named.
        key: String,
    },
    /// Of another federation.
    #[error("snapshot of federation {got}, not {expected}")]
    WrongFederation {
        /// Named in the snapshot.
        got: String,
        /// This node's.
        expected: String,
    },
    /// The signer is not a member of this federation.
    #[error("snapshot signed by {key}, who is not a member")]
    UnknownPublisher {
        /// Signer.
        key: String,
    },
    /// The signer's membership was revoked.
    #[error("snapshot signed by {key}, whose membership is revoked")]
    Revoked {
        /// Signer.
        key: String,
    },
    /// The signer is not a pod member of the pod the snapshot describes.
    #[error("snapshot of pod {pod} signed by {key}, who is not a member of that pod")]
    NotThePods {
        /// Signer.
        key: String,
        /// Pod named.
        pod: String,
    },
    /// More metrics than a tier may have.
    #[error("snapshot with {count} metrics; a tier has at most {MAX_METRICS_PER_TIER}")]
    TooManyMetrics {
        /// How many.
        count: usize,
    },
    /// A value that is not a finite number.
    #[error("snapshot holds a value that is not a finite number")]
    NotFinite,
    /// Dated further in the future than clock skew explains.
    #[error(
        "snapshot dated {as_of_ms}, more than {MAX_CLOCK_SKEW_MS} ms ahead of this node's clock"
    )]
    FromTheFuture {
        /// Its date.
        as_of_ms: i64,
    },
    /// Not newer than the snapshot held for its pod (older, or a replay).
    #[error("snapshot of pod {pod} dated {as_of_ms} is not newer than the one held ({held_ms})")]
    Stale {
        /// The pod.
        pod: String,
        /// Its date.
        as_of_ms: i64,
        /// The held one's.
        held_ms: i64,
    },
}

impl Refusal {
    /// A stable code for counters (`/metrics`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Oversized { .. } => "oversized",
            Refusal::Malformed(_) => "malformed",
            Refusal::BadSignature { .. } => "bad_signature",
            Refusal::WrongFederation { .. } => "wrong_federation",
            Refusal::UnknownPublisher { .. } => "unknown_publisher",
            Refusal::Revoked { .. } => "revoked",
            Refusal::NotThePods { .. } => "not_the_pods",
            Refusal::TooManyMetrics { .. } => "too_many_metrics",
            Refusal::NotFinite => "not_finite",
            Refusal::FromTheFuture { .. } => "from_the_future",
            Refusal::Stale { .. } => "stale",
        }
    }
}

/// Reads and checks a published snapshot on its own (size, shape, signature, values): the publisher's key and the
/// snapshot. Who may publish it is checked against the registry by [`Board::offer`].
pub fn open(bytes: &[u8]) -> Result<(Snapshot, PublicKey), Refusal> {
    if bytes.len() > MAX_SNAPSHOT_BYTES {
        return Err(Refusal::Oversized { len: bytes.len() });
    }
    let wire: Wire =
        serde_json::from_slice(bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
    let bad_signature = || Refusal::BadSignature {
        key: wire.key.clone(),
    };
    let key_bytes: [u8; 32] = hex::decode(&wire.key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Refusal::Malformed(format!("key `{}` is not 32 hex bytes", wire.key)))?;
    let key = PublicKey::from_bytes(key_bytes).map_err(|_| bad_signature())?;
    let signature: [u8; 64] = hex::decode(&wire.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad_signature)?;
    key.verify(&signed_bytes(&wire.snapshot), &signature)
        .map_err(|_| bad_signature())?;
    let snapshot = wire.snapshot;
    if snapshot.metrics.len() > MAX_METRICS_PER_TIER {
        return Err(Refusal::TooManyMetrics {
            count: snapshot.metrics.len(),
        });
    }
    if snapshot.numbers().any(|x| !x.is_finite()) {
        return Err(Refusal::NotFinite);
    }
    if let Some(stage) = snapshot
        .dashboard
        .stage_progress
        .keys()
        .find(|k| !HEALTH_WEIGHTS.iter().any(|(s, _)| s == k))
    {
        return Err(Refusal::Malformed(format!(
            "stage_progress names `{stage}`; only activation, retention and revenue are published"
        )));
    }
    Ok((snapshot, key))
}

/// A snapshot a board holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Its publisher's key (hex).
    pub publisher: String,
    /// The bytes as published (kept to persist and to relay).
    pub bytes: Vec<u8>,
}

/// The newest valid snapshot per pod, and counts of what was refused.
#[derive(Clone, Debug, Default)]
pub struct Board {
    pods: BTreeMap<String, Held>,
    refused: BTreeMap<&'static str, u64>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers published `bytes`, checked against `view` (members, roles, revocations) at `now_ms`: kept when it
    /// is valid and newer than the pod's snapshot held, else refused (and counted) with the reason.
    pub fn offer(
        &mut self,
        bytes: &[u8],
        view: &RegistryView,
        now_ms: i64,
    ) -> Result<&Held, Refusal> {
        match self.check(bytes, view, now_ms) {
            Ok((snapshot, publisher)) => {
                let pod = snapshot.pod.clone();
                self.pods.insert(
                    pod.clone(),
                    Held {
                        snapshot,
                        publisher,
                        bytes: bytes.to_vec(),
                    },
                );
                Ok(&self.pods[&pod])
            }
            Err(refusal) => {
                *self.refused.entry(refusal.code()).or_default() += 1;
                Err(refusal)
            }
        }
    }

    fn check(
        &self,
        bytes: &[u8],
        view: &RegistryView,
        now_ms: i64,
    ) -> Result<(Snapshot, String), Refusal> {
        let (snapshot, key) = open(bytes)?;
        let expected = view
            .federation
            .as_ref()
            .map(|f| f.id.clone())
            .unwrap_or_default();
        if snapshot.federation != expected {
            return Err(Refusal::WrongFederation {
                got: snapshot.federation,
                expected,
            });
        }
        let key = key.to_hex();
        let Some(member) = view.members.get(&key) else {
            return Err(Refusal::UnknownPublisher { key });
        };
        if member.revoked || view.revocations.contains_key(&key) {
            return Err(Refusal::Revoked { key });
        }
        if member.role != Role::Pod || member.scope.as_deref() != Some(snapshot.pod.as_str()) {
            return Err(Refusal::NotThePods {
                key,
                pod: snapshot.pod,
            });
        }
        if snapshot.as_of_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(Refusal::FromTheFuture {
                as_of_ms: snapshot.as_of_ms,
            });
        }
        if let Some(held) = self.pods.get(&snapshot.pod)
            && snapshot.as_of_ms <= held.snapshot.as_of_ms
        {
            return Err(Refusal::Stale {
                pod: snapshot.pod,
                as_of_ms: snapshot.as_of_ms,
                held_ms: held.snapshot.as_of_ms,
            });
        }
        Ok((snapshot, key))
    }

    /// Takes back a snapshot persisted earlier, under the same rules (a revoked publisher's is not restored).
    pub fn restore(&mut self, bytes: &[u8], view: &RegistryView, now_ms: i64) -> bool {
        self.offer(bytes, view, now_ms).is_ok()
    }

    /// The snapshots held, by pod.
    pub fn pods(&self) -> &BTreeMap<String, Held> {
        &self.pods
    }

    /// The snapshots held whose publisher is still a live member of the pod in `view`: a revocation that arrives
    /// after a snapshot takes it out of every view built from the board.
    pub fn standing<'a>(&'a self, view: &'a RegistryView) -> impl Iterator<Item = &'a Held> + 'a {
        self.pods.values().filter(move |held| {
            view.members.get(&held.publisher).is_some_and(|m| {
                !m.revoked
                    && !view.revocations.contains_key(&held.publisher)
                    && m.role == Role::Pod
                    && m.scope.as_deref() == Some(held.snapshot.pod.as_str())
            })
        })
    }

    /// Snapshots refused, by reason code.
    pub fn refused(&self) -> &BTreeMap<&'static str, u64> {
        &self.refused
    }
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

const DAY_MS: f64 = 86_400_000.0;

/// Tier 2 of `pod` for `quarter`, computed from the registry at `now_ms` (`incidents`: events the pod's node
/// quarantined). Metrics: `kr_progress` (mean progress of the pod's key results this quarter, target 1),
/// `velocity_days` (mean days from registering an experiment to its concluded result), `experiments` (registered
/// this quarter), `significant_share` (share of its concluded results whose primary metric's lift was significant
/// at the result's alpha), `budget_used` (spent over the funds of the quarter).
pub fn pod_snapshot(
    view: &RegistryView,
    governance: &governance::Governance,
    pod: &str,
    quarter: Quarter,
    now_ms: i64,
    incidents: u64,
) -> Snapshot {
    let label = quarter.to_string();
    let tree = model::okr::tree::tree(view, Some(quarter), now_ms);
    let key_results: Vec<&model::okr::tree::KeyResultNode> = tree
        .objectives
        .iter()
        .flat_map(|o| &o.key_results)
        .chain(&tree.unlinked_key_results)
        .filter(|kr| kr.pod == pod)
        .collect();
    let progress = mean(key_results.iter().filter_map(|kr| kr.progress));
    let mut by_stage: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for kr in &key_results {
        if let (Some(progress), Some(stage)) = (kr.progress, stage_of(view, &kr.metric)) {
            by_stage
                .entry(stage)
                .or_default()
                .push(progress.clamp(0.0, 1.0));
        }
    }
    let stage_progress = by_stage
        .into_iter()
        .filter_map(|(stage, values)| Some((stage, mean(values)?)))
        .collect();
    let mine: Vec<&model::Experiment> = view
        .experiments
        .values()
        .filter(|e| {
            e.pod == pod
                && governance
                    .experiments
                    .get(&e.key)
                    .is_some_and(|s| s.quarter == label)
        })
        .collect();
    let results: Vec<(&model::Experiment, &model::ResultSummary)> = mine
        .iter()
        .filter_map(|e| Some((*e, view.results.get(&e.key)?)))
        .collect();
    let cycle = mean(
        results
            .iter()
            .map(|(e, r)| (r.concluded_at_ms - e.created_at_ms).max(0) as f64 / DAY_MS),
    );
    let significant = mean(results.iter().map(|(_, r)| {
        let primary = r.metrics.iter().find(|m| !m.guardrail);
        f64::from(u8::from(primary.is_some_and(|m| {
            m.lifts.first().is_some_and(|l| l.p_value < r.alpha)
        })))
    }));
    let budget = governance.budget(pod, &label).and_then(|b| {
        let funds = b.allocated + b.rolled_over + b.bonus;
        (funds > 0.0).then(|| b.spent / funds)
    });
    let dependency = mean(mine.iter().map(|e| {
        f64::from(u8::from(
            !governance.experiments[&e.key].needs_approval().is_empty(),
        ))
    }));
    let revenue: Vec<f64> = mine
        .iter()
        .filter_map(|e| governance.experiments[&e.key].incremental_revenue)
        .collect();
    let federation = view
        .federation
        .as_ref()
        .map(|f| f.id.clone())
        .unwrap_or_default();
    Snapshot {
        federation,
        pod: pod.to_owned(),
        quarter: label,
        as_of_ms: now_ms,
        metrics: vec![
            Metric {
                target: Some(1.0),
                ..Metric::new("kr_progress", progress)
            },
            Metric::new("velocity_days", cycle),
            Metric::new("experiments", Some(mine.len() as f64)),
            Metric::new("significant_share", significant),
            Metric::new("budget_used", budget),
        ],
        dashboard: Dashboard {
            cycle_time_days: cycle,
            dependency_ratio: dependency,
            revenue: (!revenue.is_empty()).then(|| revenue.iter().fold(0.0, |a, b| a + b)),
            compliance_incidents: incidents,
            unit_nps: None,
            stage_progress,
        },
    }
}

/// The funnel stage a metric measures: the most common stage of the experiments whose primary metric it is (ties
/// to the earlier stage), if that is one the health score combines.
fn stage_of(view: &RegistryView, metric: &str) -> Option<String> {
    // By the stage's place in the funnel, so that ties go to the earlier stage.
    let mut counts: BTreeMap<usize, (model::FunnelStage, usize)> = BTreeMap::new();
    for e in view.experiments.values() {
        if e.primary_metric.as_deref() == Some(metric) {
            counts
                .entry(e.funnel_stage as usize)
                .or_insert((e.funnel_stage, 0))
                .1 += 1;
        }
    }
    let most = counts.values().map(|(_, n)| *n).max()?;
    let (stage, _) = counts.into_values().find(|(_, n)| *n == most)?;
    let name = serde_json::to_value(stage).ok()?.as_str()?.to_owned();
    HEALTH_WEIGHTS
        .iter()
        .any(|(s, _)| *s == name)
        .then_some(name)
}

/// The growth health score, 0 to 100: `100 × Σ w·p / Σ w` over the stages of [`HEALTH_WEIGHTS`] that some pod
/// reports, `p` being the mean over pods of their key results' progress in that stage (each pod's capped to [0, 1]) and
/// `w` its weight (activation 0.4, retention 0.3, revenue 0.3). `None` when no pod reports any stage.
pub fn health_score<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Option<f64> {
    let snapshots: Vec<&Snapshot> = snapshots.into_iter().collect();
    let (weighted, weights) = HEALTH_WEIGHTS
        .iter()
        .filter_map(|(stage, weight)| {
            // Each pod's value capped first: no pod can pull the score past what full progress gives.
            let p = mean(snapshots.iter().filter_map(|s| {
                s.dashboard
                    .stage_progress
                    .get(*stage)
                    .map(|p| p.clamp(0.0, 1.0))
            }))?;
            Some((weight * p, *weight))
        })
        .fold((0.0, 0.0), |(a, b), (x, w)| (a + x, b + w));
    (weights > 0.0).then(|| 100.0 * weighted / weights)
}

/// Tier 1 of the company for `quarter`, from the pods' snapshots of that quarter and the registry: `north_star`
/// (the first objective's North Star, its current value and target), `health_score` ([`health_score`]),
/// `dependency_ratio` (mean over the pods), `revenue_per_pod` (total incremental revenue over the pods reporting),
/// `compliance_incidents` (total).
pub fn company<'a>(
    snapshots: impl IntoIterator<Item = &'a Snapshot>,
    view: &RegistryView,
    quarter: Quarter,
    now_ms: i64,
) -> Vec<Metric> {
    let label = quarter.to_string();
    let snapshots: Vec<&Snapshot> = snapshots
        .into_iter()
        .filter(|s| s.quarter == label)
        .collect();
    let tree = model::okr::tree::tree(view, Some(quarter), now_ms);
    let north_star = tree.objectives.iter().find_map(|o| o.north_star.as_ref());
    let revenue: Vec<f64> = snapshots
        .iter()
        .filter_map(|s| s.dashboard.revenue)
        .collect();
    vec![
        Metric {
            target: north_star.and_then(|n| n.target),
            ..Metric::new("north_star", north_star.and_then(|n| n.current))
        },
        Metric {
            target: Some(100.0),
            ..Metric::new("health_score", health_score(snapshots.iter().copied()))
        },
        Metric::new(
            "dependency_ratio",
            mean(
                snapshots
                    .iter()
                    .filter_map(|s| s.dashboard.dependency_ratio),
            ),
        ),
        // Over every pod reporting; null until some pod has concluded revenue.
        Metric::new(
            "revenue_per_pod",
            (!revenue.is_empty())
                .then(|| revenue.iter().fold(0.0, |a, b| a + b) / snapshots.len() as f64),
        ),
        Metric::new(
            "compliance_incidents",
            Some(
                snapshots
                    .iter()
                    .map(|s| s.dashboard.compliance_incidents as f64)
                    .fold(0.0, |a, b| a + b),
            ),
        ),
    ]
}

/// Tier 3 of an experiment, from its signed result: the primary and guardrail metrics (at most
/// [`MAX_METRICS_PER_TIER`] - 1) with the first treatment's relative lift, its interval and chance to win, then
/// `srm_p_value`. `None` when no result is stored.
pub fn experiment(view: &RegistryView, key: &str) -> Option<Vec<Metric>> {
    let result = view.results.get(key)?;
    let mut metrics: Vec<Metric> = result
        .metrics
        .iter()
        .filter_map(|m| {
            let lift = m.lifts.first()?;
            Some(Metric {
                interval: Some(lift.relative_ci),
                chance_to_win: Some(lift.chance_to_win),
                ..Metric::new(&m.metric, Some(lift.relative_lift))
            })
        })
        .take(MAX_METRICS_PER_TIER - 1)
        .collect();
    metrics.push(Metric::new("srm_p_value", Some(result.srm_p_value)));
    Some(metrics)
}

#[cfg(test)]
mod tests;
