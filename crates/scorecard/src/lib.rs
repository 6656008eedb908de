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

pub use model::{MAX_METRICS_PER_TIER, TIER1_METRICS, TIER2_METRICS};
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
    /// The pod's autonomy pulse as NPS (-100 to 100), when its members answered one this quarter.
    #[serde(default)]
    pub unit_nps: Option<f64>,
    /// The pulse answers behind `unit_nps`, as counts (never who answered what).
    #[serde(default)]
    pub pulse: Pulse,
    /// Mean progress of the pod's key results per funnel stage (`activation`, `retention`, `revenue`), a key
    /// result counting towards the stage of the experiments that test its metric: what the company's growth health
    /// score combines.
    #[serde(default)]
    pub stage_progress: BTreeMap<String, f64>,
}

/// A pod's autonomy pulse for a quarter, aggregated: how many of its members answered 9 or 10 (promoters), 7 or 8
/// (passives), 0 to 6 (detractors) to "how free is this pod to run its own growth experiments?".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pulse {
    /// Answers of 9 or 10.
    pub promoters: u32,
    /// Answers of 7 or 8.
    pub passives: u32,
    /// Answers of 0 to 6.
    pub detractors: u32,
}

impl Pulse {
    /// The counts of `scores` (each 0 to 10; anything above counts as 10).
    pub fn of(scores: impl IntoIterator<Item = u8>) -> Self {
        let mut pulse = Self::default();
        for score in scores {
            match score {
                9.. => pulse.promoters += 1,
                7 | 8 => pulse.passives += 1,
                _ => pulse.detractors += 1,
            }
        }
        pulse
    }

    /// Answers counted.
    pub fn responses(&self) -> u64 {
        u64::from(self.promoters) + u64::from(self.passives) + u64::from(self.detractors)
    }

    /// The net promoter score, `100 × (promoters − detractors) / responses`; `None` without answers.
    pub fn nps(&self) -> Option<f64> {
        let n = self.responses();
        (n > 0).then(|| 100.0 * (f64::from(self.promoters) - f64::from(self.detractors)) / n as f64)
    }

    fn add(self, other: Self) -> Self {
        Self {
            promoters: self.promoters.saturating_add(other.promoters),
            passives: self.passives.saturating_add(other.passives),
            detractors: self.detractors.saturating_add(other.detractors),
        }
    }
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
    for (i, metric) in snapshot.metrics.iter().enumerate() {
        if !TIER2_METRICS.contains(&metric.name.as_str()) {
            return Err(Refusal::Malformed(format!(
                "metric `{}` is not a pod scorecard's; one of {}",
                metric.name,
                TIER2_METRICS.join(", ")
            )));
        }
        if snapshot.metrics[..i].iter().any(|m| m.name == metric.name) {
            return Err(Refusal::Malformed(format!(
                "metric `{}` appears twice",
                metric.name
            )));
        }
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

/// The newest valid snapshot per pod member's node, and counts of what was refused.
///
/// A pod may run several nodes (one per member); each publishes the pod's numbers from the shared registry and its
/// own node-local counts (quarantined events, pulse answers). The board keeps each publisher's newest snapshot, and
/// [`Board::standing`] merges a pod's: the registry-derived numbers of the newest, the node-local counts summed.
#[derive(Clone, Debug, Default)]
pub struct Board {
    /// pod -> publisher key (hex) -> its newest snapshot.
    pods: BTreeMap<String, BTreeMap<String, Held>>,
    refused: BTreeMap<&'static str, u64>,
}

/// A pod's scorecard as a board shows it: its publishers' snapshots merged.
#[derive(Clone, Debug, PartialEq)]
pub struct PodCard {
    /// The merged snapshot: the newest one's numbers, with `compliance_incidents` and the pulse summed over the
    /// pod's live publishers (the pulse over those of the newest's quarter), and `unit_nps` scored from that sum.
    pub snapshot: Snapshot,
    /// The keys (hex) whose snapshots were merged, the newest's first.
    pub publishers: Vec<String>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers published `bytes`, checked against `view` (members, roles, revocations) at `now_ms`: kept when it
    /// is valid and newer than its publisher's snapshot held, else refused (and counted) with the reason.
    pub fn offer(
        &mut self,
        bytes: &[u8],
        view: &RegistryView,
        now_ms: i64,
    ) -> Result<&Held, Refusal> {
        match self.check(bytes, view, now_ms) {
            Ok(checked) => Ok(self.keep(checked, bytes)),
            Err(refusal) => {
                *self.refused.entry(refusal.code()).or_default() += 1;
                Err(refusal)
            }
        }
    }

    fn keep(&mut self, (snapshot, publisher): (Snapshot, String), bytes: &[u8]) -> &Held {
        let by_publisher = self.pods.entry(snapshot.pod.clone()).or_default();
        let held = Held {
            snapshot,
            publisher: publisher.clone(),
            bytes: bytes.to_vec(),
        };
        by_publisher.insert(publisher.clone(), held);
        &by_publisher[&publisher]
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
        if let Some(held) = self.pods.get(&snapshot.pod).and_then(|p| p.get(&key))
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

    /// Takes back a snapshot persisted earlier, under the same rules (a revoked publisher's is not restored, and
    /// an older copy does not replace a newer one); a refusal here is not counted, as nothing was offered.
    pub fn restore(&mut self, bytes: &[u8], view: &RegistryView, now_ms: i64) -> bool {
        match self.check(bytes, view, now_ms) {
            Ok(checked) => {
                self.keep(checked, bytes);
                true
            }
            Err(_) => false,
        }
    }

    /// Every snapshot held, by pod and publisher key.
    pub fn held(&self) -> &BTreeMap<String, BTreeMap<String, Held>> {
        &self.pods
    }

    /// The pods' scorecards from the snapshots whose publisher is still a live member of the pod in `view` (a
    /// revocation that arrives after a snapshot takes it out of every view built from the board), by pod.
    pub fn standing(&self, view: &RegistryView) -> BTreeMap<String, PodCard> {
        self.standing_with(view, None)
    }

    /// As [`Board::standing`], with `own` (a pod node's numbers as of now) in place of what its publisher last
    /// published.
    pub fn standing_with(
        &self,
        view: &RegistryView,
        own: Option<&Held>,
    ) -> BTreeMap<String, PodCard> {
        let live = |held: &&Held| {
            view.members.get(&held.publisher).is_some_and(|m| {
                !m.revoked
                    && !view.revocations.contains_key(&held.publisher)
                    && m.role == Role::Pod
                    && m.scope.as_deref() == Some(held.snapshot.pod.as_str())
            })
        };
        let empty = BTreeMap::new();
        // A pod nothing was heard from yet but this node's own.
        let own_pod = own
            .filter(|o| !self.pods.contains_key(&o.snapshot.pod))
            .map(|o| (o.snapshot.pod.clone(), &empty));
        self.pods
            .iter()
            .chain(own_pod.iter().map(|(pod, e)| (pod, *e)))
            .filter_map(|(pod, by_publisher)| {
                let mine = own.filter(|o| o.snapshot.pod == *pod);
                let held: Vec<&Held> = by_publisher
                    .values()
                    .filter(|h| mine.is_none_or(|o| o.publisher != h.publisher))
                    .chain(mine)
                    .filter(live)
                    .collect();
                Some((pod.clone(), merge(held)?))
            })
            .collect()
    }

    /// Snapshots refused, by reason code.
    pub fn refused(&self) -> &BTreeMap<&'static str, u64> {
        &self.refused
    }
}

/// Merges one pod's snapshots (see [`PodCard::snapshot`]); `None` when there are none.
pub fn merge(mut held: Vec<&Held>) -> Option<PodCard> {
    // Newest first; equal dates in key order, so that every replica picks the same one.
    held.sort_by(|a, b| {
        b.snapshot
            .as_of_ms
            .cmp(&a.snapshot.as_of_ms)
            .then_with(|| a.publisher.cmp(&b.publisher))
    });
    let newest = held.first()?;
    let mut snapshot = newest.snapshot.clone();
    let incidents = held.iter().fold(0u64, |n, h| {
        n.saturating_add(h.snapshot.dashboard.compliance_incidents)
    });
    let pulse = held
        .iter()
        .filter(|h| h.snapshot.quarter == snapshot.quarter)
        .fold(Pulse::default(), |p, h| p.add(h.snapshot.dashboard.pulse));
    snapshot.dashboard.compliance_incidents = incidents;
    snapshot.dashboard.pulse = pulse;
    snapshot.dashboard.unit_nps = pulse.nps();
    for metric in &mut snapshot.metrics {
        match metric.name.as_str() {
            "compliance_incidents" => metric.value = Some(incidents as f64),
            "unit_nps" => metric.value = pulse.nps(),
            _ => {}
        }
    }
    Some(PodCard {
        publishers: held.iter().map(|h| h.publisher.clone()).collect(),
        snapshot,
    })
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0u32), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

const DAY_MS: f64 = 86_400_000.0;

/// Tier 2 of `pod` for `quarter`, computed from the registry at `now_ms` and the pod node's own counts
/// (`incidents`: events it quarantined; `pulse`: its members' answers this quarter). Its metrics are those the
/// council chose ([`model::GovernanceSettings::tier2_metrics`]), in that order, from: `kr_progress` (mean progress
/// of the pod's key results this quarter, target 1), `velocity_days` (mean days from registering an experiment to
/// its concluded result), `experiments` (registered this quarter), `significant_share` (share of its concluded
/// results whose primary metric's lift was significant at the result's alpha), `budget_used` (spent over the funds
/// of the quarter), `compliance_incidents`, `dependency_ratio`, `revenue` and `unit_nps` (as on the dashboard).
pub fn pod_snapshot(
    view: &RegistryView,
    governance: &governance::Governance,
    pod: &str,
    quarter: Quarter,
    now_ms: i64,
    incidents: u64,
    pulse: Pulse,
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
    let dashboard = Dashboard {
        cycle_time_days: cycle,
        dependency_ratio: dependency,
        revenue: (!revenue.is_empty()).then(|| revenue.iter().fold(0.0, |a, b| a + b)),
        compliance_incidents: incidents,
        unit_nps: pulse.nps(),
        pulse,
        stage_progress,
    };
    let metrics = choose(&view.settings.tier2_metrics, |name| match name {
        "kr_progress" => Some(Metric {
            target: Some(1.0),
            ..Metric::new(name, progress)
        }),
        "velocity_days" => Some(Metric::new(name, cycle)),
        "experiments" => Some(Metric::new(name, Some(mine.len() as f64))),
        "significant_share" => Some(Metric::new(name, significant)),
        "budget_used" => Some(Metric::new(name, budget)),
        "compliance_incidents" => Some(Metric::new(name, Some(incidents as f64))),
        "dependency_ratio" => Some(Metric::new(name, dashboard.dependency_ratio)),
        "revenue" => Some(Metric::new(name, dashboard.revenue)),
        "unit_nps" => Some(Metric::new(name, dashboard.unit_nps)),
        _ => None,
    });
    Snapshot {
        federation,
        pod: pod.to_owned(),
        quarter: label,
        as_of_ms: now_ms,
        metrics,
        dashboard,
    }
}

/// The metrics `chosen` (a tier's list, from the settings), in order, each computed by `compute`; names it does not
/// know are left out, and never more than [`MAX_METRICS_PER_TIER`].
fn choose(chosen: &[String], compute: impl Fn(&str) -> Option<Metric>) -> Vec<Metric> {
    chosen
        .iter()
        .filter_map(|name| compute(name))
        .take(MAX_METRICS_PER_TIER)
        .collect()
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

/// Tier 1 of the company for `quarter`, from the pods' scorecards of that quarter and the registry: the metrics the
/// council chose ([`model::GovernanceSettings::tier1_metrics`]), in that order, from `north_star` (the first
/// objective's North Star, its current value and target), `health_score` ([`health_score`]), `dependency_ratio`
/// (mean over the pods), `revenue_per_pod` (total incremental revenue over the pods reporting), `compliance_incidents`
/// (total), `cycle_time_days` (mean over the pods) and `unit_nps` (the NPS of every pod's pulse answers pooled).
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
    let revenue: Vec<f64> = snapshots
        .iter()
        .filter_map(|s| s.dashboard.revenue)
        .collect();
    choose(&view.settings.tier1_metrics, |name| {
        Some(match name {
            "north_star" => {
                let tree = model::okr::tree::tree(view, Some(quarter), now_ms);
                let north_star = tree.objectives.iter().find_map(|o| o.north_star.as_ref());
                Metric {
                    target: north_star.and_then(|n| n.target),
                    ..Metric::new(name, north_star.and_then(|n| n.current))
                }
            }
            "health_score" => Metric {
                target: Some(100.0),
                ..Metric::new(name, health_score(snapshots.iter().copied()))
            },
            "dependency_ratio" => Metric::new(
                name,
                mean(
                    snapshots
                        .iter()
                        .filter_map(|s| s.dashboard.dependency_ratio),
                ),
            ),
            // Over every pod reporting; null until some pod has concluded revenue.
            "revenue_per_pod" => Metric::new(
                name,
                (!revenue.is_empty())
                    .then(|| revenue.iter().fold(0.0, |a, b| a + b) / snapshots.len() as f64),
            ),
            "compliance_incidents" => Metric::new(
                name,
                Some(
                    snapshots
                        .iter()
                        .map(|s| s.dashboard.compliance_incidents as f64)
                        .fold(0.0, |a, b| a + b),
                ),
            ),
            "cycle_time_days" => Metric::new(
                name,
                mean(snapshots.iter().filter_map(|s| s.dashboard.cycle_time_days)),
            ),
            "unit_nps" => Metric::new(
                name,
                snapshots
                    .iter()
                    .fold(Pulse::default(), |p, s| p.add(s.dashboard.pulse))
                    .nps(),
            ),
            _ => return None,
        })
    })
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
