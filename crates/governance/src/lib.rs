//! Governance decided from the registry alone.
//!
//! [`Governance::derive`] reads a [`RegistryView`] and decides, for every experiment, whether it needs council
//! approval and why (high impact, overlaps with other pods' experiments), whether its votes reach the quorum,
//! whether its start is valid and funded, and for every pod and quarter what the budget bank holds. It is a pure
//! function of the registry: every node holding the same changes shows the same decisions, whatever order the
//! changes arrived in and whichever side of a partition wrote them. Concurrent acts resolve by fixed rules:
//!
//! - **Votes.** Each active council member has one vote per experiment. One rejection rejects (a veto wins over
//!   concurrent approvals); a high-impact experiment needs `quorum` approvals (capped at the council members who
//!   may vote on it), an experiment that only overlaps needs one. Votes of revoked members, of members who are
//!   not on the council, and of council members of the experiment's own pod do not count.
//! - **Starts.** A start (status `running` with its `started_at_ms`) is valid only while the experiment has the
//!   approvals it needs; otherwise it is shown `blocked`, spends nothing and its results count for nothing.
//! - **Spends.** A pod's valid starts are admitted in the order (`started_at_ms`, key), quarter by quarter, while
//!   the quarter's funds (allocation + the previous quarter's unspent funds + win bonuses) cover their cost; a start
//!   that would overspend is `blocked` as over budget. So two concurrent spends from one budget that together
//!   overspend leave the earlier one running and the later one blocked, on every node.
//! - **Overlaps.** Computed over every active experiment (see [`overlap`]); an experiment that was already
//!   running when the other was registered does not need approval for that overlap, the newer one does.

pub mod overlap;
pub mod search;

use std::collections::{BTreeMap, BTreeSet};

use model::time::{DAY_MS, quarter_of_date, quarter_of_ms};
use model::{Decision, Experiment, ExperimentStatus, RegistryView, ResultDecision, Role};
use serde::Serialize;

pub use overlap::{Overlap, OverlapIndex, OverlapKind};

/// Where an experiment is in its lifecycle, as governance sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Being designed; needs no approval.
    Draft,
    /// Needs approvals it does not have yet.
    AwaitingApproval,
    /// Has the approvals it needs; not started.
    Approved,
    /// A council member rejected it.
    Rejected,
    /// Started, approved where needed, and funded.
    Running,
    /// Started, but the start does not stand (see [`Blocked`]).
    Blocked,
    /// Stopped after a valid start.
    Stopped,
    /// Concluded after a valid start.
    Concluded,
}

impl Stage {
    /// The stage as the CLI prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Draft => "draft",
            Stage::AwaitingApproval => "awaiting_approval",
            Stage::Approved => "approved",
            Stage::Rejected => "rejected",
            Stage::Running => "running",
            Stage::Blocked => "blocked",
            Stage::Stopped => "stopped",
            Stage::Concluded => "concluded",
        }
    }
}

/// Why an experiment needs council approval.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Need {
    /// Its cost is over its quarter's high-impact threshold.
    HighImpact {
        /// The experiment's cost.
        cost: f64,
        /// The quarter's threshold.
        threshold: f64,
        /// The quarter.
        quarter: String,
    },
    /// It overlaps another pod's active experiment.
    Overlap {
        /// The other experiment.
        experiment: String,
        /// Its pod.
        pod: String,
    },
}

impl Need {
    /// The short code (`high_impact`, `overlap`).
    pub fn code(&self) -> &'static str {
        match self {
            Need::HighImpact { .. } => "high_impact",
            Need::Overlap { .. } => "overlap",
        }
    }

    /// A sentence saying why.
    pub fn describe(&self) -> String {
        match self {
            Need::HighImpact {
                cost,
                threshold,
                quarter,
            } => format!("high impact: costs {cost} over {quarter}'s threshold {threshold}"),
            Need::Overlap { experiment, pod } => {
                format!("overlaps {experiment} of pod {pod}")
            }
        }
    }
}

/// A counted or ignored vote.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Vote {
    /// Voter key.
    pub by: String,
    /// Voter name.
    pub name: String,
    /// The reason given.
    pub reason: String,
    /// When (Unix ms).
    pub at_ms: i64,
}

/// The votes on one experiment and what they decide.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ApprovalState {
    /// Approvals it needs (0: none).
    pub required: u32,
    /// Counted approvals.
    pub approvals: Vec<Vote>,
    /// Counted rejections.
    pub rejections: Vec<Vote>,
    /// Votes that do not count, with why.
    pub ignored: Vec<(Vote, String)>,
    /// `approved` once the approvals reach `required` (and it needs some), `rejected` on any rejection.
    pub decision: Option<Decision>,
}

impl ApprovalState {
    /// Approvals still missing.
    pub fn missing(&self) -> u32 {
        self.required
            .saturating_sub(self.approvals.len().try_into().unwrap_or(u32::MAX))
    }
}

/// Why a started experiment's start does not stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockReason {
    /// It lacks approvals it needs.
    NeedsApproval,
    /// A council member rejected it.
    Rejected,
    /// Its pod's funds did not cover its cost when it started.
    OverBudget,
    /// It was concluded or stopped without ever being started.
    NeverStarted,
}

impl BlockReason {
    /// The short code.
    pub fn code(self) -> &'static str {
        match self {
            BlockReason::NeedsApproval => "needs_approval",
            BlockReason::Rejected => "rejected",
            BlockReason::OverBudget => "over_budget",
            BlockReason::NeverStarted => "never_started",
        }
    }
}

/// A blocked start, with the rule and the numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Blocked {
    /// The rule.
    pub reason: BlockReason,
    /// What exactly.
    pub detail: String,
}

/// What one experiment spent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spend {
    /// The quarter its cost was booked in.
    pub quarter: String,
    /// Its cost.
    pub amount: f64,
}

/// Governance's view of one experiment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExperimentState {
    /// Key.
    pub key: String,
    /// Owning pod.
    pub pod: String,
    /// The stage.
    pub stage: Stage,
    /// The quarter it belongs to (its planned start, else its start, else its registration).
    pub quarter: String,
    /// Every reason it needs approval (whether or not given).
    pub needs: Vec<Need>,
    /// Votes and the decision.
    pub approval: ApprovalState,
    /// Other pods' active experiments it overlaps.
    pub overlaps: Vec<Overlap>,
    /// Why its start does not stand.
    pub blocked: Option<Blocked>,
    /// What it spent (valid starts only).
    pub spend: Option<Spend>,
    /// Incremental revenue of a concluded experiment: the revenue metric's absolute lift times the treatment's
    /// exposed users, summed over treatments.
    pub incremental_revenue: Option<f64>,
    /// (incremental revenue - cost) / cost.
    pub roi: Option<f64>,
    /// Since when it has waited for approval (Unix ms).
    pub waiting_since_ms: Option<i64>,
}

impl ExperimentState {
    /// The reasons it still lacks approval for: empty once approved (or when it needs none).
    pub fn needs_approval(&self) -> Vec<&Need> {
        if self.approval.decision == Some(Decision::Approved) {
            Vec::new()
        } else {
            self.needs.iter().collect()
        }
    }
}

/// A pod's budget bank for one quarter.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetRow {
    /// Pod.
    pub pod: String,
    /// Quarter.
    pub quarter: String,
    /// The council's allocation.
    pub allocated: f64,
    /// Unspent funds of the pod's previous quarter.
    pub rolled_over: f64,
    /// Win bonuses credited this quarter.
    pub bonus: f64,
    /// Costs of the experiments started this quarter.
    pub spent: f64,
    /// allocated + rolled over + bonus - spent; never negative.
    pub remaining: f64,
    /// Incremental revenue of this quarter's concluded experiments that measured the revenue metric.
    pub incremental_revenue: Option<f64>,
    /// (incremental revenue - their cost) / their cost.
    pub roi: Option<f64>,
    /// Experiments whose cost this quarter paid.
    pub experiments: Vec<String>,
    /// Starts refused as over budget.
    pub refused: Vec<String>,
}

/// A concluded experiment with no learning yet.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PostMortem {
    /// Experiment.
    pub experiment: String,
    /// Pod.
    pub pod: String,
    /// When it concluded (Unix ms).
    pub concluded_at_ms: i64,
    /// When its learning is due (Unix ms).
    pub due_ms: i64,
}

/// Every governance decision of a registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Governance {
    /// By experiment key.
    pub experiments: BTreeMap<String, ExperimentState>,
    /// Sorted by pod, then quarter.
    pub budgets: Vec<BudgetRow>,
    /// Open post-mortems, oldest due first.
    pub postmortems: Vec<PostMortem>,
}

/// A pod's bank events by quarter, each with its time and its order among events of one time (wins first).
type Ledger = BTreeMap<String, Vec<(i64, u8, BankEvent)>>;

/// One event of a pod's budget bank.
#[derive(Clone, Debug)]
enum BankEvent {
    Start { key: String, cost: f64 },
    Win { key: String },
}

impl Governance {
    /// Decides everything from `view`.
    pub fn derive(view: &RegistryView) -> Self {
        let council: BTreeMap<&str, &model::Member> = view
            .members
            .iter()
            .filter(|(_, m)| m.role == Role::Council && !m.revoked)
            .map(|(k, m)| (k.as_str(), m))
            .collect();
        let mut states: BTreeMap<String, ExperimentState> = BTreeMap::new();
        for e in view.experiments.values() {
            let approval = votes(view, &council, e);
            states.insert(
                e.key.clone(),
                ExperimentState {
                    key: e.key.clone(),
                    pod: e.pod.clone(),
                    stage: Stage::Draft,
                    quarter: quarter(e),
                    needs: Vec::new(),
                    approval,
                    overlaps: Vec::new(),
                    blocked: None,
                    spend: None,
                    incremental_revenue: None,
                    roi: None,
                    waiting_since_ms: None,
                },
            );
        }

        // Overlaps among active experiments (not concluded, stopped or rejected).
        let active: Vec<&Experiment> = view
            .experiments
            .values()
            .filter(|e| {
                matches!(
                    e.status,
                    ExperimentStatus::Draft | ExperimentStatus::Running
                ) && states[&e.key].approval.decision != Some(Decision::Rejected)
            })
            .collect();
        let index = OverlapIndex::new(active.iter().copied());
        for (e, overlaps) in active.iter().zip(index.all()) {
            let state = states
                .get_mut(&e.key)
                .expect("every experiment has a state");
            state.overlaps = overlaps;
        }

        // Needs and the approvals they require.
        for e in view.experiments.values() {
            let state = states
                .get_mut(&e.key)
                .expect("every experiment has a state");
            let threshold = view.high_impact_thresholds.get(&state.quarter).copied();
            let mut waiting_since = None;
            if let Some(threshold) = threshold.filter(|t| e.cost > *t) {
                state.needs.push(Need::HighImpact {
                    cost: e.cost,
                    threshold,
                    quarter: state.quarter.clone(),
                });
                waiting_since = Some(e.created_at_ms);
            }
            for overlap in &state.overlaps {
                let other = &view.experiments[&overlap.experiment];
                // Already running before the other was registered: the newer one asks, not this one.
                if e.started_at_ms.is_some_and(|s| s < other.created_at_ms) {
                    continue;
                }
                let since = e.created_at_ms.max(other.created_at_ms);
                waiting_since = Some(waiting_since.map_or(since, |w: i64| w.min(since)));
                state.needs.push(Need::Overlap {
                    experiment: overlap.experiment.clone(),
                    pod: overlap.pod.clone(),
                });
            }
            let eligible = council
                .values()
                .filter(|m| m.scope.as_deref() != Some(e.pod.as_str()))
                .count() as u32;
            let high_impact = state
                .needs
                .iter()
                .any(|n| matches!(n, Need::HighImpact { .. }));
            state.approval.required = if high_impact {
                view.settings.quorum.min(eligible).max(1)
            } else if state.needs.is_empty() {
                0
            } else {
                1
            };
            if state.approval.decision.is_none()
                && state.approval.required > 0
                && state.approval.missing() == 0
            {
                state.approval.decision = Some(Decision::Approved);
            }
            state.waiting_since_ms = waiting_since;
        }

        // Stages before money: drafts, and whether each start stands on approvals.
        let mut candidates: Vec<&Experiment> = Vec::new();
        for e in view.experiments.values() {
            let state = states
                .get_mut(&e.key)
                .expect("every experiment has a state");
            let rejected = state.approval.decision == Some(Decision::Rejected);
            let approved =
                state.approval.required == 0 || state.approval.decision == Some(Decision::Approved);
            state.stage = match (e.status, e.started_at_ms) {
                (ExperimentStatus::Draft, _) if rejected => Stage::Rejected,
                (ExperimentStatus::Draft, _) if state.approval.required == 0 => Stage::Draft,
                (ExperimentStatus::Draft, _) if approved => Stage::Approved,
                (ExperimentStatus::Draft, _) => Stage::AwaitingApproval,
                (_, None) => {
                    state.blocked = Some(Blocked {
                        reason: BlockReason::NeverStarted,
                        detail: format!("{} was {:?} without a start", e.key, e.status)
                            .to_lowercase(),
                    });
                    Stage::Blocked
                }
                (_, Some(_)) if rejected => {
                    state.blocked = Some(Blocked {
                        reason: BlockReason::Rejected,
                        detail: rejection_detail(&state.approval),
                    });
                    Stage::Blocked
                }
                (_, Some(_)) if !approved => {
                    state.blocked = Some(Blocked {
                        reason: BlockReason::NeedsApproval,
                        detail: approval_detail(state),
                    });
                    Stage::Blocked
                }
                (status, Some(_)) => {
                    candidates.push(e);
                    match status {
                        ExperimentStatus::Stopped => Stage::Stopped,
                        ExperimentStatus::Concluded => Stage::Concluded,
                        _ => Stage::Running,
                    }
                }
            };
        }

        let budgets = bank(view, &candidates, &mut states);

        let mut postmortems: Vec<PostMortem> = states
            .values()
            .filter(|s| s.stage == Stage::Concluded)
            .filter(|s| {
                !view
                    .learnings
                    .values()
                    .any(|l| l.experiment.as_deref() == Some(s.key.as_str()))
            })
            .map(|s| {
                let concluded_at_ms = view
                    .results
                    .get(&s.key)
                    .map(|r| r.concluded_at_ms)
                    .or(view.experiments[&s.key].started_at_ms)
                    .unwrap_or_default();
                PostMortem {
                    experiment: s.key.clone(),
                    pod: s.pod.clone(),
                    concluded_at_ms,
                    due_ms: concluded_at_ms
                        .saturating_add(i64::from(view.settings.postmortem_days) * DAY_MS),
                }
            })
            .collect();
        postmortems.sort_by(|a, b| (a.due_ms, &a.experiment).cmp(&(b.due_ms, &b.experiment)));

        Self {
            experiments: states,
            budgets,
            postmortems,
        }
    }

    /// Experiments awaiting approval, oldest first.
    pub fn queue(&self) -> Vec<&ExperimentState> {
        let mut queue: Vec<&ExperimentState> = self
            .experiments
            .values()
            .filter(|s| s.stage == Stage::AwaitingApproval)
            .collect();
        queue.sort_by_key(|s| (s.waiting_since_ms.unwrap_or_default(), s.key.clone()));
        queue
    }

    /// Post-mortems overdue at `now_ms`.
    pub fn overdue(&self, now_ms: i64) -> impl Iterator<Item = &PostMortem> {
        self.postmortems.iter().filter(move |p| p.due_ms < now_ms)
    }

    /// The budget row of `pod` and `quarter`.
    pub fn budget(&self, pod: &str, quarter: &str) -> Option<&BudgetRow> {
        self.budgets
            .iter()
            .find(|b| b.pod == pod && b.quarter == quarter)
    }
}

/// Decides whether `key` may start at `at_ms`: the governance of `view` with that start added. `Ok` holds the
/// experiment's state as running and its pod's budget row after the spend; `Err` what refuses it (the rule and the
/// numbers, and the budget row the start would draw on).
pub fn try_start(view: &RegistryView, key: &str, at_ms: i64) -> Result<Started, StartRefusal> {
    try_start_with(view, &Governance::derive(view), key, at_ms)
}

/// [`try_start`] with the governance of `view` already derived (a node keeps it per registry state).
pub fn try_start_with(
    view: &RegistryView,
    current: &Governance,
    key: &str,
    at_ms: i64,
) -> Result<Started, StartRefusal> {
    if !view.experiments.contains_key(key) {
        return Err(StartRefusal {
            reason: "unknown_experiment",
            detail: format!("no experiment `{key}`"),
            state: None,
            budget: None,
        });
    }
    let state = &current.experiments[key];
    let refuse = |reason: &'static str, detail: String| StartRefusal {
        reason,
        detail,
        state: Some(Box::new(state.clone())),
        budget: current
            .budget(&state.pod, &state.quarter)
            .cloned()
            .map(Box::new),
    };
    match state.stage {
        Stage::Draft | Stage::Approved => {}
        Stage::AwaitingApproval => return Err(refuse("needs_approval", approval_detail(state))),
        Stage::Rejected => return Err(refuse("rejected", rejection_detail(&state.approval))),
        stage => {
            return Err(refuse(
                "not_startable",
                format!(
                    "{key} is {}; only a draft or approved experiment starts",
                    stage.as_str()
                ),
            ));
        }
    }
    let mut trial = view.clone();
    let started = trial
        .experiments
        .get_mut(key)
        .expect("the experiment was found above");
    started.status = ExperimentStatus::Running;
    started.started_at_ms = Some(at_ms);
    let after = Governance::derive(&trial);
    let state = after.experiments[key].clone();
    let budget = after.budget(&state.pod, &state.quarter).cloned();
    match &state.blocked {
        None => Ok(Started { state, budget }),
        Some(blocked) => Err(StartRefusal {
            reason: blocked.reason.code(),
            detail: blocked.detail.clone(),
            state: Some(Box::new(state.clone())),
            budget: budget.map(Box::new),
        }),
    }
}

/// A start governance admits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Started {
    /// The experiment's state once started.
    pub state: ExperimentState,
    /// Its pod's budget row for the quarter, after the spend.
    pub budget: Option<BudgetRow>,
}

/// Why a start is refused.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StartRefusal {
    /// `needs_approval`, `over_budget`, `rejected`, `not_startable` or `unknown_experiment`.
    pub reason: &'static str,
    /// The rule and the numbers.
    pub detail: String,
    /// The experiment's state.
    pub state: Option<Box<ExperimentState>>,
    /// The budget row of its pod and quarter.
    pub budget: Option<Box<BudgetRow>>,
}

fn quarter(e: &Experiment) -> String {
    e.start_date
        .as_deref()
        .and_then(quarter_of_date)
        .unwrap_or_else(|| quarter_of_ms(e.started_at_ms.unwrap_or(e.created_at_ms)))
}

fn votes(
    view: &RegistryView,
    council: &BTreeMap<&str, &model::Member>,
    e: &Experiment,
) -> ApprovalState {
    let mut state = ApprovalState::default();
    for (voter, approval) in view.votes.get(&e.key).into_iter().flatten() {
        let member = view.members.get(voter);
        let vote = Vote {
            by: voter.clone(),
            name: member.map(|m| m.name.clone()).unwrap_or_default(),
            reason: approval.reason.clone(),
            at_ms: approval.at_ms,
        };
        let ignored = match (member, council.get(voter.as_str())) {
            (_, Some(m)) if m.scope.as_deref() == Some(e.pod.as_str()) => Some(format!(
                "{} is on the council for pod {}, whose experiment this is",
                m.name, e.pod
            )),
            (_, Some(_)) => None,
            (Some(m), None) if m.revoked => Some(format!("{} was revoked", m.name)),
            (Some(m), None) => Some(format!("{} is a {}, not on the council", m.name, m.role)),
            (None, None) => Some("not a member".to_owned()),
        };
        match (ignored, approval.decision) {
            (Some(why), _) => state.ignored.push((vote, why)),
            (None, Decision::Approved) => state.approvals.push(vote),
            (None, Decision::Rejected) => state.rejections.push(vote),
        }
    }
    if !state.rejections.is_empty() {
        state.decision = Some(Decision::Rejected);
    }
    state
}

fn approval_detail(state: &ExperimentState) -> String {
    let reasons: Vec<String> = state.needs.iter().map(Need::describe).collect();
    format!(
        "{} needs {} council approval(s), has {} ({} missing): {}",
        state.key,
        state.approval.required,
        state.approval.approvals.len(),
        state.approval.missing(),
        reasons.join("; ")
    )
}

fn rejection_detail(approval: &ApprovalState) -> String {
    let by: Vec<String> = approval
        .rejections
        .iter()
        .map(|v| {
            if v.reason.is_empty() {
                v.name.clone()
            } else {
                format!("{} ({})", v.name, v.reason)
            }
        })
        .collect();
    format!("rejected by {}", by.join(", "))
}

/// The budget bank: admits each pod's valid starts in order while funds last, credits win bonuses, rolls unspent
/// funds over, and computes ROI.
fn bank(
    view: &RegistryView,
    candidates: &[&Experiment],
    states: &mut BTreeMap<String, ExperimentState>,
) -> Vec<BudgetRow> {
    let mut pods: BTreeMap<&str, Ledger> = BTreeMap::new();
    for budget in view.budgets.values() {
        pods.entry(budget.pod.as_str())
            .or_default()
            .entry(budget.quarter.clone())
            .or_default();
    }
    for e in candidates {
        let quarters = pods.entry(e.pod.as_str()).or_default();
        let started = e.started_at_ms.unwrap_or_default();
        quarters
            .entry(states[&e.key].quarter.clone())
            .or_default()
            .push((
                started,
                1,
                BankEvent::Start {
                    key: e.key.clone(),
                    cost: e.cost,
                },
            ));
        if let Some(result) = view.results.get(&e.key)
            && e.status == ExperimentStatus::Concluded
            && result.decision == ResultDecision::Ship
        {
            quarters
                .entry(quarter_of_ms(result.concluded_at_ms))
                .or_default()
                .push((
                    result.concluded_at_ms,
                    0,
                    BankEvent::Win { key: e.key.clone() },
                ));
        }
    }
    let mut rows = Vec::new();
    for (pod, quarters) in pods {
        let mut carried = 0.0;
        let mut admitted: BTreeSet<String> = BTreeSet::new();
        for (quarter, mut events) in quarters {
            events.sort_by(|a, b| {
                (a.0, a.1)
                    .cmp(&(b.0, b.1))
                    .then_with(|| event_key(&a.2).cmp(event_key(&b.2)))
            });
            let allocated = view
                .budgets
                .values()
                .find(|b| b.pod == pod && b.quarter == quarter)
                .map_or(0.0, |b| b.allocated);
            let mut row = BudgetRow {
                pod: pod.to_owned(),
                quarter: quarter.clone(),
                allocated,
                rolled_over: carried,
                bonus: 0.0,
                spent: 0.0,
                remaining: 0.0,
                incremental_revenue: None,
                roi: None,
                experiments: Vec::new(),
                refused: Vec::new(),
            };
            for (_, _, event) in events {
                let funds = row.allocated + row.rolled_over + row.bonus;
                match event {
                    BankEvent::Start { key, cost } => {
                        let state = states.get_mut(&key).expect("candidates have states");
                        // A tolerance for sums of decimal costs.
                        if row.spent + cost <= funds + 1e-9 {
                            row.spent += cost;
                            row.experiments.push(key.clone());
                            admitted.insert(key);
                            state.spend = Some(Spend {
                                quarter: quarter.clone(),
                                amount: cost,
                            });
                        } else {
                            state.blocked = Some(Blocked {
                                reason: BlockReason::OverBudget,
                                detail: format!(
                                    "{key} costs {cost}; pod {pod} had {} left in {quarter} (allocated {}, rolled over {}, bonus {}, spent {})",
                                    round(funds - row.spent),
                                    row.allocated,
                                    round(row.rolled_over),
                                    row.bonus,
                                    round(row.spent)
                                ),
                            });
                            state.stage = Stage::Blocked;
                            row.refused.push(key);
                        }
                    }
                    BankEvent::Win { key } if admitted.contains(&key) => {
                        row.bonus += view.settings.win_bonus;
                    }
                    BankEvent::Win { .. } => {}
                }
            }
            row.remaining = (row.allocated + row.rolled_over + row.bonus - row.spent).max(0.0);
            carried = row.remaining;
            rows.push(row);
        }
    }
    roi(view, &mut rows, states);
    rows
}

fn event_key(event: &BankEvent) -> &str {
    match event {
        BankEvent::Start { key, .. } | BankEvent::Win { key } => key,
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// ROI of each concluded, funded experiment that measured the revenue metric, and of each budget row.
fn roi(
    view: &RegistryView,
    rows: &mut [BudgetRow],
    states: &mut BTreeMap<String, ExperimentState>,
) {
    for row in rows {
        let (mut revenue, mut cost, mut any) = (0.0, 0.0, false);
        for key in &row.experiments {
            let state = states.get_mut(key).expect("funded experiments have states");
            let experiment = &view.experiments[key];
            let Some(incremental) = (state.stage == Stage::Concluded)
                .then(|| view.results.get(key))
                .flatten()
                .and_then(|r| incremental_revenue(r, &view.settings.revenue_metric))
            else {
                continue;
            };
            state.incremental_revenue = Some(incremental);
            state.roi =
                (experiment.cost > 0.0).then(|| (incremental - experiment.cost) / experiment.cost);
            revenue += incremental;
            cost += experiment.cost;
            any = true;
        }
        if any {
            row.incremental_revenue = Some(revenue);
            row.roi = (cost > 0.0).then(|| (revenue - cost) / cost);
        }
    }
}

/// The revenue metric's absolute lift per exposed user times the treatment's users, summed over treatments.
pub fn incremental_revenue(result: &model::ResultSummary, revenue_metric: &str) -> Option<f64> {
    let metric = result.metrics.iter().find(|m| m.metric == revenue_metric)?;
    let total = metric
        .lifts
        .iter()
        .map(|lift| {
            let users = metric
                .variants
                .iter()
                .find(|v| v.variant == lift.variant)
                .map_or(0, |v| v.n);
            lift.absolute_lift * users as f64
        })
        .sum();
    Some(total)
}

#[cfg(test)]
pub(crate) mod tests {
    use model::{Audience, Hypothesis, Variant};

    use super::*;

    pub(crate) fn experiment(
        key: &str,
        pod: &str,
        metric: &str,
        hypothesis: &str,
        region: &str,
    ) -> Experiment {
        Experiment {
            key: key.into(),
            pod: pod.into(),
            hypothesis: Hypothesis::parse(hypothesis),
            funnel_stage: Default::default(),
            audience: Audience {
                region: Some(region.into()),
                segment: None,
            },
            variants: vec![
                Variant {
                    key: "a".into(),
                    weight: 0.5,
                },
                Variant {
                    key: "b".into(),
                    weight: 0.5,
                },
            ],
            primary_metric: Some(metric.into()),
            guardrail_metrics: vec![],
            start_date: Some("2026-11-01".into()),
            end_date: Some("2026-11-30".into()),
            cost: 0.0,
            status: ExperimentStatus::Draft,
            namespace: None,
            started_at_ms: None,
            hash_version: 1,
            coverage: 1.0,
            created_by: String::new(),
            created_at_ms: 0,
        }
    }

    fn member(name: &str, role: Role, scope: Option<&str>) -> (String, model::Member) {
        let key = format!("{name:0>64}");
        let member = model::Member {
            public_key: key.clone(),
            name: name.into(),
            role,
            scope: scope.map(str::to_owned),
            admitted_by: String::new(),
            admitted_at_ms: 0,
            revoked: false,
        };
        (key, member)
    }

    /// Council members c1, c2, c3 (c3 sits for pod emea), pod members, a threshold of 5,000 in 2026Q4 and
    /// allocations of 10,000 for emea and apac in 2026Q4.
    fn registry() -> RegistryView {
        let mut view = RegistryView::default();
        for (name, role, scope) in [
            ("c1", Role::Council, None),
            ("c2", Role::Council, None),
            ("c3", Role::Council, Some("emea")),
            ("p1", Role::Pod, Some("emea")),
        ] {
            let (key, member) = member(name, role, scope);
            view.members.insert(key, member);
        }
        view.high_impact_thresholds.insert("2026Q4".into(), 5_000.0);
        for pod in ["emea", "apac"] {
            view.budgets.insert(
                format!("{pod}:2026Q4"),
                model::Budget {
                    pod: pod.into(),
                    quarter: "2026Q4".into(),
                    allocated: 10_000.0,
                    by: String::new(),
                },
            );
        }
        view
    }

    fn add(view: &mut RegistryView, e: Experiment) {
        view.experiments.insert(e.key.clone(), e);
    }

    fn vote(view: &mut RegistryView, experiment: &str, voter: &str, decision: Decision) {
        let by = format!("{voter:0>64}");
        view.votes.entry(experiment.into()).or_default().insert(
            by.clone(),
            model::Approval {
                experiment: experiment.into(),
                decision,
                reason: format!("{voter} says so"),
                by,
                at_ms: 0,
            },
        );
    }

    fn start(view: &mut RegistryView, key: &str, at_ms: i64) {
        let e = view.experiments.get_mut(key).unwrap();
        e.status = ExperimentStatus::Running;
        e.started_at_ms = Some(at_ms);
    }

    fn stage(view: &RegistryView, key: &str) -> Stage {
        Governance::derive(view).experiments[key].stage
    }

    #[test]
    fn a_high_impact_experiment_waits_for_its_quorum_and_own_pod_votes_do_not_count() {
        let mut view = registry();
        view.settings.quorum = 2;
        let mut big = experiment("big", "emea", "m", "bet big on onboarding", "eu");
        big.cost = 8_000.0;
        add(&mut view, big);
        let g = Governance::derive(&view);
        let state = &g.experiments["big"];
        assert_eq!(state.stage, Stage::AwaitingApproval);
        assert_eq!(state.approval.required, 2);
        assert_eq!(state.needs_approval()[0].code(), "high_impact");
        assert_eq!(g.queue().len(), 1);

        vote(&mut view, "big", "c1", Decision::Approved);
        vote(&mut view, "big", "c3", Decision::Approved); // sits for emea: ignored
        vote(&mut view, "big", "p1", Decision::Approved); // not on the council: ignored
        let g = Governance::derive(&view);
        let state = &g.experiments["big"];
        assert_eq!(state.stage, Stage::AwaitingApproval);
        assert_eq!(state.approval.missing(), 1);
        assert_eq!(state.approval.ignored.len(), 2);
        let refusal = try_start(&view, "big", 10).expect_err("one approval of two");
        assert_eq!(refusal.reason, "needs_approval");
        assert!(refusal.detail.contains("1 missing"), "{}", refusal.detail);

        vote(&mut view, "big", "c2", Decision::Approved);
        assert_eq!(stage(&view, "big"), Stage::Approved);
        assert!(
            Governance::derive(&view).experiments["big"]
                .needs_approval()
                .is_empty()
        );
        let running = try_start(&view, "big", 10).expect("approved and funded");
        assert_eq!(running.state.stage, Stage::Running);
        assert_eq!(
            running.state.spend.as_ref().map(|s| s.amount),
            Some(8_000.0)
        );
        assert_eq!(running.budget.map(|b| b.remaining), Some(2_000.0));
    }

    #[test]
    fn the_quorum_is_capped_at_the_members_who_may_vote_and_a_revoked_vote_does_not_count() {
        let mut view = registry();
        view.settings.quorum = 5;
        let mut big = experiment("big", "apac", "m", "bet big", "asia");
        big.cost = 8_000.0;
        add(&mut view, big);
        vote(&mut view, "big", "c1", Decision::Approved);
        vote(&mut view, "big", "c2", Decision::Approved);
        assert_eq!(
            Governance::derive(&view).experiments["big"]
                .approval
                .required,
            3
        );
        vote(&mut view, "big", "c3", Decision::Approved);
        assert_eq!(stage(&view, "big"), Stage::Approved);
        view.members
            .get_mut(&format!("{:0>64}", "c2"))
            .unwrap()
            .revoked = true;
        // c2 no longer counts, and the quorum falls to the two who may still vote.
        assert_eq!(stage(&view, "big"), Stage::Approved);
        view.members
            .get_mut(&format!("{:0>64}", "c3"))
            .unwrap()
            .revoked = true;
        let g = Governance::derive(&view);
        assert_eq!(g.experiments["big"].approval.required, 1);
        assert_eq!(g.experiments["big"].approval.approvals.len(), 1);
    }

    #[test]
    fn a_rejection_wins_over_a_concurrent_approval_and_blocks_a_start() {
        let mut view = registry();
        let mut big = experiment("big", "apac", "m", "bet big", "asia");
        big.cost = 8_000.0;
        add(&mut view, big);
        vote(&mut view, "big", "c1", Decision::Approved);
        vote(&mut view, "big", "c2", Decision::Rejected);
        assert_eq!(stage(&view, "big"), Stage::Rejected);
        assert_eq!(try_start(&view, "big", 1).unwrap_err().reason, "rejected");
        // A pod that starts it anyway (a modified binary) is blocked everywhere and spends nothing.
        start(&mut view, "big", 1);
        let g = Governance::derive(&view);
        assert_eq!(g.experiments["big"].stage, Stage::Blocked);
        assert_eq!(
            g.experiments["big"].blocked.as_ref().unwrap().reason,
            BlockReason::Rejected
        );
        assert_eq!(g.budget("apac", "2026Q4").unwrap().spent, 0.0);
    }

    #[test]
    fn a_start_before_its_approval_is_blocked_until_the_approval_arrives() {
        let mut view = registry();
        let mut big = experiment("big", "apac", "m", "bet big", "asia");
        big.cost = 6_000.0;
        add(&mut view, big);
        start(&mut view, "big", 5);
        let g = Governance::derive(&view);
        assert_eq!(g.experiments["big"].stage, Stage::Blocked);
        assert_eq!(
            g.experiments["big"].blocked.as_ref().unwrap().reason,
            BlockReason::NeedsApproval
        );
        vote(&mut view, "big", "c1", Decision::Approved);
        let g = Governance::derive(&view);
        assert_eq!(g.experiments["big"].stage, Stage::Running);
        assert_eq!(g.budget("apac", "2026Q4").unwrap().spent, 6_000.0);
    }

    #[test]
    fn concurrent_spends_admit_the_earlier_start_and_block_the_one_that_overspends() {
        let mut view = registry();
        for (key, cost) in [("a", 4_000.0), ("b", 4_000.0), ("c", 3_000.0)] {
            let mut e = experiment(key, "apac", key, &format!("idea {key}"), "asia");
            e.cost = cost;
            add(&mut view, e);
        }
        start(&mut view, "b", 20);
        start(&mut view, "a", 10);
        start(&mut view, "c", 30);
        let refusal = try_start(&view, "a", 10).unwrap_err();
        assert_eq!(refusal.reason, "not_startable");
        let g = Governance::derive(&view);
        assert_eq!(g.experiments["a"].stage, Stage::Running);
        assert_eq!(g.experiments["b"].stage, Stage::Running);
        let c = &g.experiments["c"];
        assert_eq!(c.stage, Stage::Blocked);
        assert_eq!(c.blocked.as_ref().unwrap().reason, BlockReason::OverBudget);
        assert!(
            c.blocked.as_ref().unwrap().detail.contains("had 2000 left"),
            "{:?}",
            c.blocked
        );
        let row = g.budget("apac", "2026Q4").unwrap();
        assert_eq!((row.spent, row.remaining), (8_000.0, 2_000.0));
        assert_eq!(row.refused, ["c"]);
        // The refusal `experiment start` shows names the numbers before anything is written.
        let mut fresh = registry();
        let mut d = experiment("d", "apac", "d", "idea d", "asia");
        d.cost = 12_000.0;
        add(&mut fresh, d);
        assert_eq!(
            try_start(&fresh, "d", 1).unwrap_err().reason,
            "needs_approval"
        );
        vote(&mut fresh, "d", "c1", Decision::Approved);
        let refusal = try_start(&fresh, "d", 1).unwrap_err();
        assert_eq!(refusal.reason, "over_budget");
        assert!(refusal.detail.contains("costs 12000"), "{}", refusal.detail);
    }

    #[test]
    fn unspent_funds_roll_over_and_wins_earn_the_bonus() {
        let mut view = registry();
        view.settings.win_bonus = 1_000.0;
        view.budgets.insert(
            "apac:2027Q1".into(),
            model::Budget {
                pod: "apac".into(),
                quarter: "2027Q1".into(),
                allocated: 1_000.0,
                by: String::new(),
            },
        );
        let mut a = experiment("a", "apac", "revenue", "idea a", "asia");
        a.cost = 4_000.0;
        add(&mut view, a);
        start(&mut view, "a", 10);
        view.experiments.get_mut("a").unwrap().status = ExperimentStatus::Concluded;
        let concluded_at = model::time::date_ms("2026-12-01").unwrap();
        view.results.insert(
            "a".into(),
            model::ResultSummary {
                experiment: "a".into(),
                decision: ResultDecision::Ship,
                verdict: "ship".into(),
                users: vec![1000, 1000],
                srm_p_value: 0.5,
                alpha: model::DEFAULT_ALPHA,
                metrics: vec![model::MetricSummary {
                    metric: "revenue".into(),
                    kind: "mean".into(),
                    direction: Default::default(),
                    guardrail: false,
                    variants: vec![
                        model::VariantStatistics {
                            variant: "control".into(),
                            n: 1000,
                            ..Default::default()
                        },
                        model::VariantStatistics {
                            variant: "treatment".into(),
                            n: 1000,
                            ..Default::default()
                        },
                    ],
                    lifts: vec![model::LiftSummary {
                        variant: "treatment".into(),
                        absolute_lift: 6.0,
                        ..Default::default()
                    }],
                }],
                concluded_by: String::new(),
                concluded_at_ms: concluded_at,
            },
        );
        let g = Governance::derive(&view);
        let q4 = g.budget("apac", "2026Q4").unwrap();
        assert_eq!(
            (q4.spent, q4.bonus, q4.remaining),
            (4_000.0, 1_000.0, 7_000.0)
        );
        let q1 = g.budget("apac", "2027Q1").unwrap();
        assert_eq!((q1.rolled_over, q1.remaining), (7_000.0, 8_000.0));
        // 6 per treatment user over 1000 users against a cost of 4000.
        assert_eq!(g.experiments["a"].incremental_revenue, Some(6_000.0));
        assert_eq!(g.experiments["a"].roi, Some(0.5));
        assert_eq!(q4.roi, Some(0.5));
        // No learning: a post-mortem is due 14 days after the conclusion.
        assert_eq!(g.postmortems.len(), 1);
        assert_eq!(g.postmortems[0].due_ms, concluded_at + 14 * DAY_MS);
        assert_eq!(g.overdue(concluded_at + 15 * DAY_MS).count(), 1);
        assert_eq!(g.overdue(concluded_at + 13 * DAY_MS).count(), 0);
        view.learnings.insert(
            "pod/apac/l".into(),
            model::Learning {
                id: "l".into(),
                title: "t".into(),
                body: "b".into(),
                outcome: None,
                tags: vec![],
                experiment: Some("a".into()),
                source: String::new(),
                author: String::new(),
                created_at_ms: 0,
            },
        );
        assert!(Governance::derive(&view).postmortems.is_empty());
    }

    #[test]
    fn concurrent_registrations_both_see_the_overlap_and_an_earlier_running_one_keeps_running() {
        let mut view = registry();
        let mut a = experiment("a", "emea", "signup", "shorter form", "eu");
        a.created_at_ms = 100;
        let mut b = experiment("b", "apac", "signup", "pricing page", "eu");
        b.created_at_ms = 100;
        add(&mut view, a);
        add(&mut view, b);
        let g = Governance::derive(&view);
        for (key, other) in [("a", "b"), ("b", "a")] {
            let state = &g.experiments[key];
            assert_eq!(state.stage, Stage::AwaitingApproval);
            assert_eq!(state.overlaps[0].experiment, other);
            assert_eq!(state.approval.required, 1);
        }
        // `a` ran before `b` was registered: only `b` asks.
        view.experiments.get_mut("b").unwrap().created_at_ms = 500;
        vote(&mut view, "a", "c1", Decision::Approved);
        start(&mut view, "a", 200);
        let g = Governance::derive(&view);
        assert_eq!(g.experiments["a"].stage, Stage::Running);
        assert_eq!(g.experiments["b"].stage, Stage::AwaitingApproval);
        // A pod's own experiments do not overlap.
        let c = experiment("c", "emea", "signup", "shorter form", "eu");
        add(&mut view, c);
        let g = Governance::derive(&view);
        assert!(g.experiments["c"].overlaps.iter().all(|o| o.pod != "emea"));
    }

    #[test]
    fn a_conclusion_without_a_start_is_blocked() {
        let mut view = registry();
        let mut e = experiment("e", "apac", "m", "idea", "asia");
        e.status = ExperimentStatus::Concluded;
        add(&mut view, e);
        let g = Governance::derive(&view);
        assert_eq!(g.experiments["e"].stage, Stage::Blocked);
        assert_eq!(
            g.experiments["e"].blocked.as_ref().unwrap().reason,
            BlockReason::NeverStarted
        );
        assert!(g.postmortems.is_empty());
    }
}
