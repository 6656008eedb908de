//! The simulation report: per phase, convergence, messages, bytes, rejections and invariants; as text or JSON. In
//! deterministic mode every number is virtual, so a seed always gives byte-identical output.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// One checked invariant.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Invariant {
    /// Name.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// Evidence.
    pub detail: String,
}

/// A stretch of the run between two scheduled events.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Phase {
    /// What started it.
    pub name: String,
    /// Start (virtual ms).
    pub start_ms: u64,
    /// End (virtual ms).
    pub end_ms: u64,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Pull round trips completed.
    pub rounds: u64,
    /// First time in the phase at which every honest node had identical heads.
    pub converged_at_ms: Option<u64>,
    /// Largest spread of accepted-change counts between honest nodes in the phase.
    pub max_divergence: u64,
    /// Rejected changes and refused messages, by reason.
    pub rejected: BTreeMap<String, u64>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// deterministic or real.
    pub mode: String,
    /// Seed.
    pub seed: u64,
    /// Nodes simulated.
    pub nodes: usize,
    /// Whether every honest node ended with identical heads.
    pub converged: bool,
    /// Time from the last disruption until convergence (virtual ms in deterministic mode).
    pub convergence_ms: Option<u64>,
    /// Simulated time.
    pub simulated_ms: u64,
    /// Messages sent.
    pub messages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Pull round trips completed.
    pub rounds: u64,
    /// Changes every honest node holds at the end.
    pub changes: u64,
    /// Rejected changes and refused messages, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Largest spread of accepted-change counts between honest nodes.
    pub largest_divergence: u64,
    /// Phases.
    pub phases: Vec<Phase>,
    /// Invariants.
    pub invariants: Vec<Invariant>,
    /// The command that replays this run.
    pub replay: String,
    /// What the run could not do as the scenario says, and other context (real mode; empty in deterministic mode,
    /// and then left out of the JSON).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.invariants.iter().all(|i| i.ok)
    }

    /// Human-readable rendering.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let clock = if self.mode == "real" {
            "wall"
        } else {
            "simulated"
        };
        let _ = writeln!(
            out,
            "scenario {} ({} mode, seed {}, {} nodes, {} ms {clock})",
            self.scenario, self.mode, self.seed, self.nodes, self.simulated_ms
        );
        let _ = writeln!(
            out,
            "{:<28} {:>9} {:>9} {:>10} {:>12} {:>7} {:>12} {:>10}",
            "phase", "start ms", "end ms", "messages", "bytes", "rounds", "converged", "diverged"
        );
        for phase in &self.phases {
            let converged = phase
                .converged_at_ms
                .map_or_else(|| "-".to_owned(), |t| format!("{t} ms"));
            let _ = writeln!(
                out,
                "{:<28} {:>9} {:>9} {:>10} {:>12} {:>7} {:>12} {:>10}",
                phase.name,
                phase.start_ms,
                phase.end_ms,
                phase.messages,
                phase.bytes,
                phase.rounds,
                converged,
                phase.max_divergence
            );
        }
        let convergence = self.convergence_ms.map_or_else(
            || "never".to_owned(),
            |ms| format!("{ms} ms after the last disruption"),
        );
        let _ = writeln!(
            out,
            "converged: {} ({convergence}); {} changes on every honest node",
            self.converged, self.changes
        );
        let _ = writeln!(
            out,
            "traffic: {} messages, {} bytes, {} pull round trips; largest divergence {} changes",
            self.messages, self.bytes, self.rounds, self.largest_divergence
        );
        if !self.rejected.is_empty() {
            let reasons: Vec<String> = self
                .rejected
                .iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            let _ = writeln!(out, "rejected: {}", reasons.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for invariant in &self.invariants {
            let _ = writeln!(
                out,
                "[{}] {}: {}",
                if invariant.ok { "ok" } else { "FAIL" },
                invariant.name,
                invariant.detail
            );
        }
        if !self.ok() {
            let _ = writeln!(out, "replay with: {}", self.replay);
        }
        out
    }
}
