//! Scenario files (`simulations/*.toml`): the nodes and their roles by region, the network's behaviour, a seeded
//! workload, a schedule of faults, and the bound within which honest nodes must converge. See
//! `docs/simulation.md` for the format.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

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
        for (index, event) in self.schedule.iter().enumerate() {
            let known = |name: &String| names.contains(name) || regions.contains(name.as_str());
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
