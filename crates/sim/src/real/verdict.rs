//! Real mode's invariants, judged from what the run left behind: each honest node's store read after every daemon
//! stopped, the changes the nodes' write paths acknowledged, the changes hostile nodes crafted, and what went wrong
//! while the nodes ran. The same four invariants, by the same names, as deterministic mode.

use std::collections::{BTreeMap, BTreeSet};

use registry::ChangeHash;

use super::cluster::Stored;
use crate::report::Invariant;

/// Everything the invariants are judged on.
pub(super) struct Evidence<'a> {
    /// Node names, by index.
    pub(super) names: Vec<&'a str>,
    /// Nodes honest at the end (neither hostile nor revoked).
    pub(super) honest: Vec<usize>,
    /// Nodes running at the end.
    pub(super) alive: Vec<bool>,
    /// The stores of honest nodes, read after the run.
    pub(super) stored: &'a BTreeMap<usize, Stored>,
    /// Changes honest nodes' write paths acknowledged (durable before the node answered).
    pub(super) acknowledged: BTreeSet<ChangeHash>,
    /// Changes crafted to be refused (forged, unauthorized).
    pub(super) bad: &'a BTreeSet<ChangeHash>,
    /// Wall ms from the last disruption or the last write until the honest nodes agreed for good.
    pub(super) convergence_ms: Option<u64>,
    /// The scenario's bound, scaled, and how it was scaled (for the detail).
    pub(super) bound_ms: u64,
    pub(super) bound_text: String,
    /// Panics, unanswered APIs, daemons that failed to stop, writes that did not arrive.
    pub(super) problems: Vec<String>,
}

impl Evidence<'_> {
    fn live(&self) -> Vec<usize> {
        self.honest
            .iter()
            .copied()
            .filter(|i| self.alive[*i])
            .collect()
    }

    /// Whether every honest running node's store holds the same heads.
    pub(super) fn stores_agree(&self) -> bool {
        self.live()
            .windows(2)
            .all(|w| match (self.stored.get(&w[0]), self.stored.get(&w[1])) {
                (Some(a), Some(b)) => a.heads == b.heads,
                _ => false,
            })
    }
}

/// The invariants, in deterministic mode's order.
pub(super) fn invariants(evidence: &Evidence<'_>) -> Vec<Invariant> {
    vec![
        converge(evidence),
        nothing_lost(evidence),
        nothing_crafted_applied(evidence),
        no_panic(evidence),
    ]
}

fn converge(e: &Evidence<'_>) -> Invariant {
    let live = e.live().len();
    let agree = e.stores_agree();
    let within = e.convergence_ms.is_some_and(|ms| ms <= e.bound_ms);
    let mut detail = match e.convergence_ms {
        Some(ms) => format!(
            "{live} honest nodes identical {ms} ms after the last disruption (bound {} ms: {})",
            e.bound_ms, e.bound_text
        ),
        None => format!(
            "{live} honest nodes never all showed identical heads after the last disruption"
        ),
    };
    if !agree {
        detail.push_str("; their stores hold different heads after shutdown");
    }
    Invariant {
        name: "honest nodes converge".into(),
        ok: within && agree,
        detail,
    }
}

fn nothing_lost(e: &Evidence<'_>) -> Invariant {
    // Every change in an honest store, and every change an honest write path acknowledged, even one a crash
    // might have lost from its writer's own store.
    let all: BTreeSet<ChangeHash> = e
        .stored
        .values()
        .flat_map(|s| s.accepted.iter().copied())
        .chain(e.acknowledged.iter().copied())
        .collect();
    let lost: Vec<String> = e
        .live()
        .into_iter()
        .filter_map(|i| {
            let missing = e
                .stored
                .get(&i)
                .map_or(all.len(), |s| all.difference(&s.accepted).count());
            (missing > 0).then(|| format!("{} lacks {missing}", e.names[i]))
        })
        .collect();
    Invariant {
        name: "no accepted change is lost".into(),
        ok: lost.is_empty(),
        detail: if lost.is_empty() {
            format!(
                "all {} accepted changes are in every honest node's store",
                all.len()
            )
        } else {
            lost.join("; ")
        },
    }
}

fn nothing_crafted_applied(e: &Evidence<'_>) -> Invariant {
    let applied: Vec<String> = e
        .stored
        .iter()
        .flat_map(|(i, s)| {
            e.bad
                .iter()
                .filter(|h| s.accepted.contains(h))
                .map(move |h| format!("{} applied {}", e.names[*i], &h.to_string()[..12]))
        })
        .collect();
    Invariant {
        name: "no forged or unauthorized change is applied".into(),
        ok: applied.is_empty(),
        detail: if applied.is_empty() {
            format!("{} crafted changes in no honest store", e.bad.len())
        } else {
            applied.join("; ")
        },
    }
}

fn no_panic(e: &Evidence<'_>) -> Invariant {
    Invariant {
        name: "no node panics".into(),
        ok: e.problems.is_empty(),
        detail: if e.problems.is_empty() {
            "every daemon ran, answered and stopped cleanly".into()
        } else {
            e.problems.join("; ")
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u8) -> ChangeHash {
        ChangeHash([n; 32])
    }

    fn store(hashes: &[u8]) -> Stored {
        Stored {
            heads: hashes.last().map(|h| vec![hash(*h)]).unwrap_or_default(),
            accepted: hashes.iter().map(|h| hash(*h)).collect(),
        }
    }

    fn evidence<'a>(
        stored: &'a BTreeMap<usize, Stored>,
        bad: &'a BTreeSet<ChangeHash>,
    ) -> Evidence<'a> {
        Evidence {
            names: vec!["a", "b", "c"],
            honest: vec![0, 1, 2],
            alive: vec![true, true, false],
            stored,
            acknowledged: BTreeSet::new(),
            bad,
            convergence_ms: Some(100),
            bound_ms: 1_000,
            bound_text: "10000 ms x 0.1".into(),
            problems: Vec::new(),
        }
    }

    fn ok(invariants: &[Invariant]) -> Vec<bool> {
        invariants.iter().map(|i| i.ok).collect()
    }

    #[test]
    fn agreeing_stores_hold() {
        let stored = BTreeMap::from([(0, store(&[1, 2])), (1, store(&[1, 2])), (2, store(&[1]))]);
        let bad = BTreeSet::from([hash(9)]);
        // The crashed node c lags, which is allowed; what it had is everywhere.
        assert_eq!(
            ok(&invariants(&evidence(&stored, &bad))),
            [true, true, true, true]
        );
    }

    #[test]
    fn a_change_missing_from_a_live_node_or_lost_by_its_writer_fails() {
        let stored = BTreeMap::from([(0, store(&[1, 2])), (1, store(&[1]))]);
        let bad = BTreeSet::new();
        let found = invariants(&evidence(&stored, &bad));
        assert!(!found[0].ok, "stores disagree: {}", found[0].detail);
        assert!(!found[1].ok);
        assert!(found[1].detail.contains("b lacks 1"), "{}", found[1].detail);

        // Both stores agree, but a write acknowledged to its writer is in neither.
        let stored = BTreeMap::from([(0, store(&[1])), (1, store(&[1]))]);
        let mut e = evidence(&stored, &bad);
        e.acknowledged.insert(hash(5));
        let found = invariants(&e);
        assert!(found[0].ok);
        assert!(!found[1].ok, "{}", found[1].detail);
    }

    #[test]
    fn a_crafted_change_in_an_honest_store_fails_and_slow_convergence_fails() {
        let stored = BTreeMap::from([(0, store(&[1, 9])), (1, store(&[1, 9]))]);
        let bad = BTreeSet::from([hash(9)]);
        let mut e = evidence(&stored, &bad);
        e.convergence_ms = Some(5_000);
        e.problems.push("1 panics in the process".into());
        assert_eq!(ok(&invariants(&e)), [false, true, false, false]);
    }
}
