//! Scenario files (`simulations/*.toml`): the nodes and their roles by region, the network's behaviour, a seeded
//! workload, a schedule of faults, and the bound within which honest nodes must converge. See
//! `docs/simulation.md` for the format.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::workload::Write;

/// A whole scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it exercises.
    #[serde(default)]
    pub description: String,
    /// Seed used when `--seed` is not given.
    #[serde(default)]
    pub seed: u64,
    /// Simulated run length.
    pub duration_ms: u64,
    /// After the last disruption, honest nodes must agree within this.
    pub converge_within_ms: u64,
    /// Simulation step.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Network behaviour.
    #[serde(default)]
    pub network: Network,
    /// Nodes by region.
    #[serde(rename = "region")]
    pub regions: Vec<Region>,
    /// What the nodes write.
    #[serde(default)]
    pub workload: Workload,
    /// Faults and events in time order.
    #[serde(default)]
    pub schedule: Vec<Event>,
}

fn default_tick_ms() -> u64 {
    50
}

/// Network behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    /// One-way latency, uniform in [min, max].
    pub latency_ms: [u64; 2],
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Peers each announcement is gossiped to.
    pub fanout: usize,
    /// Heads are announced at least this often.
    pub announce_interval_ms: u64,
    /// Largest message a node reads (larger ones are refused unread, as the transport does).
    pub max_message_bytes: usize,
    /// Members each node keeps connections to (its mesh): pushes go to these; a node whose mesh peer is gone
    /// connects to another.
    pub mesh_target: usize,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            latency_ms: [5, 40],
            drop: 0.0,
            duplicate: 0.0,
            fanout: 6,
            announce_interval_ms: 2_000,
            max_message_bytes: 4 * 1024 * 1024,
            mesh_target: 8,
        }
    }
}

/// Nodes of one region.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Region name (also the pod name its pod nodes share).
    pub name: String,
    /// Council nodes.
    #[serde(default)]
    pub council: usize,
    /// Pod nodes (all members of the pod named after the region).
    #[serde(default)]
    pub pods: usize,
    /// Steward nodes.
    #[serde(default)]
    pub stewards: usize,
    /// Partner nodes.
    #[serde(default)]
    pub partners: usize,
    /// Read-only replicas (not members; they only sync).
    #[serde(default)]
    pub observers: usize,
}

/// The seeded workload.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    /// Probability that a writing node writes in a tick.
    pub write_probability: f64,
    /// No writes after this time (so convergence can be measured).
    pub stop_at_ms: u64,
    /// Pod nodes of a region update the same key result concurrently.
    pub conflicts: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            write_probability: 0.02,
            stop_at_ms: u64::MAX,
            conflicts: true,
        }
    }
}

/// One scheduled event (unknown fields are refused by [`Action`]).
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    /// When.
    pub at_ms: u64,
    /// What.
    #[serde(flatten)]
    pub action: Action,
}

/// A fault or event.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Split the network into sides (region or node names); no message crosses sides.
    Partition {
        /// The sides.
        sides: Vec<Vec<String>>,
    },
    /// Remove every partition and restore link quality.
    Heal,
    /// Change link quality.
    Links {
        /// New drop probability.
        #[serde(default)]
        drop: Option<f64>,
        /// New latency range.
        #[serde(default)]
        latency_ms: Option<[u64; 2]>,
        /// New duplicate probability.
        #[serde(default)]
        duplicate: Option<f64>,
    },
    /// Links between two halves of the nodes go down and up every `period_ms` until `until_ms`.
    Flap {
        /// Half-period.
        period_ms: u64,
        /// End of flapping (links up after it).
        until_ms: u64,
    },
    /// Stop a node (it keeps what it had persisted).
    Crash {
        /// Node name.
        node: String,
    },
    /// Restart a crashed node from what it persisted.
    Restart {
        /// Node name.
        node: String,
    },
    /// The first live council node revokes a member; the revoked node keeps writing (and serving those writes).
    Revoke {
        /// Node name.
        node: String,
    },
    /// A member node turns hostile and answers pulls with bad messages.
    Hostile {
        /// Node name.
        node: String,
        /// Any of [`crate::attack::ATTACKS`].
        attacks: Vec<String>,
    },
    /// A council node sets the simulated quarter's high-impact threshold.
    Threshold {
        /// Council node name.
        node: String,
        /// Experiments costing more need the council's approval.
        cost: f64,
    },
    /// A council node allocates a pod's budget for the simulated quarter.
    Allocate {
        /// Council node name.
        node: String,
        /// The pod (a region's pods share its name).
        pod: String,
        /// The amount.
        amount: f64,
    },
    /// A pod node registers an experiment. Its key starts with [`crate::workload::SCRIPTED_PREFIX`]: the random
    /// workload leaves it to the schedule.
    Register {
        /// Pod node name.
        node: String,
        /// Experiment key.
        experiment: String,
        /// Its cost.
        cost: f64,
    },
    /// A council node approves (or rejects) an experiment.
    Decide {
        /// Council node name.
        node: String,
        /// Experiment key.
        experiment: String,
        /// Reject rather than approve.
        #[serde(default)]
        reject: bool,
    },
    /// A pod node tries to start an experiment; `expect` is checked by the invariant "scheduled starts go as
    /// expected".
    Start {
        /// Pod node name.
        node: String,
        /// Experiment key.
        experiment: String,
        /// What must happen (nothing is checked when absent).
        #[serde(default)]
        expect: Option<Expect>,
    },
}

/// What a scheduled start must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expect {
    /// Governance refuses it when it is tried (the approvals it needs have not reached the pod).
    Refused,
    /// It starts within the scenario's `converge_within_ms` of being tried (what it waited for arrived).
    Started,
}

impl Action {
    /// A scheduled governance write: the node that writes it and what it writes, its key being `by` (hex).
    /// `None` for faults and other events.
    pub fn scheduled_write(&self, by: &str, at_ms: i64) -> Option<(&str, Write)> {
        let by = by.to_owned();
        Some(match self {
            Action::Threshold { node, cost } => (node, Write::Threshold { cost: *cost }),
            Action::Allocate { node, pod, amount } => (
                node,
                Write::Allocate {
                    pod: pod.clone(),
                    amount: *amount,
                    by,
                },
            ),
            Action::Register {
                node,
                experiment,
                cost,
            } => (
                node,
                Write::Experiment {
                    key: experiment.clone(),
                    cost: *cost,
                    metric: format!("{experiment}-metric"),
                    at_ms,
                },
            ),
            Action::Decide {
                node,
                experiment,
                reject,
            } => (
                node,
                Write::Decide {
                    key: experiment.clone(),
                    by,
                    reject: *reject,
                    at_ms,
                },
            ),
            Action::Start {
                node, experiment, ..
            } => (
                node,
                Write::StartExperiment {
                    key: experiment.clone(),
                    at_ms,
                },
            ),
            _ => return None,
        })
        .map(|(node, write)| (node.as_str(), write))
    }

    /// What a scheduled start must do, if anything.
    pub fn expectation(&self) -> Option<Expect> {
        match self {
            Action::Start { expect, .. } => *expect,
            _ => None,
        }
    }
}

impl Expect {
    /// As written in a scenario.
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Refused => "refused",
            Expect::Started => "started",
        }
    }
}

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The TOML does not describe a scenario (the message names line and column).
    #[error("{path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong, where.
        detail: String,
    },
    /// The scenario is inconsistent.
    #[error("{path}: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

/// Attacks a hostile node knows.
pub use crate::attack::ATTACKS;

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        scenario
            .validate()
            .map_err(|detail| ScenarioError::Invalid {
                path: path.to_owned(),
                detail,
            })?;
        Ok(scenario)
    }

    /// Node names in creation order: for each region, council, pods, stewards, partners, observers.
    pub fn node_names(&self) -> Vec<(String, String, model::Role, bool)> {
        let mut names = Vec::new();
        for region in &self.regions {
            let groups = [
                ("council", region.council, model::Role::Council, false),
                ("pod", region.pods, model::Role::Pod, false),
                ("steward", region.stewards, model::Role::Steward, false),
                ("partner", region.partners, model::Role::Partner, false),
                ("observer", region.observers, model::Role::Pod, true),
            ];
            for (kind, count, role, observer) in groups {
                for i in 1..=count {
                    names.push((
                        format!("{}-{kind}-{i}", region.name),
                        region.name.clone(),
                        role,
                        observer,
                    ));
                }
            }
        }
        names
    }

    fn validate(&self) -> Result<(), String> {
        let names: BTreeSet<String> = self.node_names().into_iter().map(|n| n.0).collect();
        let regions: BTreeSet<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        if self.regions.iter().map(|r| r.council).sum::<usize>() == 0 {
            return Err(
                "region: at least one council node is needed to found the federation".into(),
            );
        }
        for region in &self.regions {
            model::validate_slug("region.name", &region.name).map_err(|e| e.to_string())?;
        }
        let [low, high] = self.network.latency_ms;
        if low > high {
            return Err(format!(
                "network.latency_ms: [{low}, {high}] is not a range"
            ));
        }
        for p in [
            self.network.drop,
            self.network.duplicate,
            self.workload.write_probability,
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("probability {p} is outside [0, 1]"));
            }
        }
        if self.tick_ms == 0 || self.duration_ms == 0 {
            return Err("tick_ms and duration_ms must be positive".into());
        }
        let roles: BTreeMap<String, model::Role> = self
            .node_names()
            .into_iter()
            .map(|(name, _, role, _)| (name, role))
            .collect();
        for (index, event) in self.schedule.iter().enumerate() {
            let known = |name: &String| names.contains(name) || regions.contains(name.as_str());
            // A scheduled governance write needs a node of the role that may write it.
            let role_of = |node: &String, role: model::Role| match roles.get(node) {
                None => Ok(Some(node.clone())),
                Some(r) if *r == role => Ok(None),
                Some(r) => Err(format!(
                    "schedule[{index}]: `{node}` is a {} node; this action needs a {} node",
                    r.as_str(),
                    role.as_str()
                )),
            };
            let bad = match &event.action {
                Action::Partition { sides } => sides.iter().flatten().find(|n| !known(n)).cloned(),
                Action::Crash { node } | Action::Restart { node } | Action::Revoke { node } => {
                    (!names.contains(node)).then(|| node.clone())
                }
                Action::Hostile { node, attacks } => {
                    if let Some(attack) = attacks.iter().find(|a| !ATTACKS.contains(&a.as_str())) {
                        return Err(format!(
                            "schedule[{index}]: unknown attack `{attack}` (known: {})",
                            ATTACKS.join(", ")
                        ));
                    }
                    (!names.contains(node)).then(|| node.clone())
                }
                Action::Heal | Action::Links { .. } | Action::Flap { .. } => None,
                Action::Threshold { node, .. }
                | Action::Allocate { node, .. }
                | Action::Decide { node, .. } => role_of(node, model::Role::Council)?,
                Action::Register {
                    node, experiment, ..
                } => {
                    if !experiment.starts_with(crate::workload::SCRIPTED_PREFIX) {
                        return Err(format!(
                            "schedule[{index}]: experiment `{experiment}` must start with `{}` (the random workload leaves those to the schedule)",
                            crate::workload::SCRIPTED_PREFIX
                        ));
                    }
                    role_of(node, model::Role::Pod)?
                }
                Action::Start { node, .. } => role_of(node, model::Role::Pod)?,
            };
            if let Some(name) = bad {
                return Err(format!(
                    "schedule[{index}]: no node or region named `{name}`"
                ));
            }
            if event.at_ms > self.duration_ms {
                return Err(format!(
                    "schedule[{index}]: at_ms {} is after duration_ms {}",
                    event.at_ms, self.duration_ms
                ));
            }
        }
        Ok(())
    }
}
