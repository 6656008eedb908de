//! The facts that decide what else is accepted, computed from the council changes a replica holds: which
//! admissions are void (one invite, one key) and which revocations take effect (strong removal).
//!
//! Both are functions of the *set* of council changes held, never of their arrival order:
//! - **Invites.** Among the locally valid admissions that spend one invite nonce, the one with the smallest change
//!   hash wins; every other key admitted with that nonce is void on every replica that holds both.
//! - **Revocations.** A revocation `r` of member M covers M's changes up to the sequence numbers it records per
//!   document and epoch, and M's council changes it depends on. Any change of M it does not cover is excluded,
//!   whatever auth heads it names and whenever it arrived. A revocation is itself a change of its author, so
//!   revocations can exclude each other: `r` *threatens* `s` when `r` does not cover `s` or one of the council
//!   changes `s` depends on, by the member `r` revokes. Revocations that threaten each other in a cycle (mutual
//!   revocation, or A revokes B revokes C revokes A, all concurrent) all take effect: everyone in the cycle is out
//!   (p2panda's rule for concurrent removals). Outside cycles, `s` takes effect unless an effective revocation
//!   threatens it; the strongly connected components are taken in dependency order, so this is well defined.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use automerge::ChangeHash;
use model::DocId;

use crate::envelope::{Envelope, Fact};

/// A revocation that takes effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Effective {
    /// The revocation change.
    pub change: ChangeHash,
    /// The revoking member.
    pub by: [u8; 32],
    /// Covered sequence number per document and epoch.
    pub covers: BTreeMap<DocId, BTreeMap<u32, u64>>,
    /// Council changes the revocation depends on (covered whatever their numbers).
    pub ancestors: HashSet<ChangeHash>,
}

impl Effective {
    /// Whether the change at (`doc`, `epoch`, `seq`) with `hash` is covered.
    pub fn covers(&self, doc: &DocId, epoch: u32, seq: u64, hash: &ChangeHash) -> bool {
        let number = self
            .covers
            .get(doc)
            .and_then(|m| m.get(&epoch))
            .copied()
            .unwrap_or(0);
        seq <= number || (*doc == DocId::Council && self.ancestors.contains(hash))
    }

    /// The covered sequence number in `doc` for `epoch`.
    pub fn number(&self, doc: &DocId, epoch: u32) -> u64 {
        self.covers
            .get(doc)
            .and_then(|m| m.get(&epoch))
            .copied()
            .unwrap_or(0)
    }
}

/// An admission made void because its invite admitted another key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VoidAdmission {
    pub nonce: String,
    pub key: [u8; 32],
    pub change: ChangeHash,
    pub winner: ChangeHash,
}

/// What the acceptance rule needs beyond a change and its history.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Effective revocations by revoked key.
    pub revocations: BTreeMap<[u8; 32], Vec<Effective>>,
    /// Hashes of effective revocations (never excluded by another revocation).
    pub effective: BTreeSet<ChangeHash>,
    /// Keys whose admission is void.
    pub void: BTreeSet<[u8; 32]>,
    /// The void admissions, for the view.
    pub void_admissions: Vec<VoidAdmission>,
}

/// A revocation as stated: its change, its author, the revoked key, what it covers.
type StatedRevocation = (
    ChangeHash,
    [u8; 32],
    [u8; 32],
    BTreeMap<DocId, BTreeMap<u32, u64>>,
);

/// Computes the facts from `valid`: the council changes that are locally valid (signature, history, authorized as
/// of their auth heads, no equivocation), by hash.
pub(crate) fn facts(valid: &BTreeMap<ChangeHash, Envelope>) -> Facts {
    let mut facts = Facts::default();
    // Invites: the smallest admission hash per nonce wins.
    let mut by_nonce: BTreeMap<&str, Vec<(ChangeHash, [u8; 32])>> = BTreeMap::new();
    for (hash, envelope) in valid {
        if let Some(Fact::Admit { nonce, member }) = &envelope.fact
            && let Some(key) = key_bytes(member)
        {
            by_nonce.entry(nonce).or_default().push((*hash, key));
        }
    }
    for (nonce, mut admissions) in by_nonce {
        admissions.sort();
        let (winner, winner_key) = admissions[0];
        for (change, key) in admissions.into_iter().skip(1) {
            if key != winner_key {
                facts.void.insert(key);
                facts.void_admissions.push(VoidAdmission {
                    nonce: nonce.to_owned(),
                    key,
                    change,
                    winner,
                });
            }
        }
    }
    // Revocations.
    let revocations: Vec<StatedRevocation> = valid
        .iter()
        .filter_map(|(hash, envelope)| match &envelope.fact {
            Some(Fact::Revoke { member, covers }) => {
                let target = key_bytes(member)?;
                let covers = covers
                    .iter()
                    .filter_map(|(doc, numbers)| {
                        Some((doc.parse::<DocId>().ok()?, numbers.clone()))
                    })
                    .collect();
                Some((*hash, envelope.actor().key, target, covers))
            }
            _ => None,
        })
        .collect();
    if revocations.is_empty() {
        return facts;
    }
    let ancestors: Vec<HashSet<ChangeHash>> = revocations
        .iter()
        .map(|(hash, ..)| ancestors_of(hash, valid))
        .collect();
    let candidates: Vec<Effective> = revocations
        .iter()
        .zip(&ancestors)
        .map(|((change, by, _, covers), ancestors)| Effective {
            change: *change,
            by: *by,
            covers: covers.clone(),
            ancestors: ancestors.clone(),
        })
        .collect();
    let count = candidates.len();
    // threatens[i] lists j: revocation i excludes revocation j or one of its council ancestors.
    let mut threatens: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (i, (_, _, target, _)) in revocations.iter().enumerate() {
        for (j, (hash_j, ..)) in revocations.iter().enumerate() {
            if i == j {
                continue;
            }
            let excluded = std::iter::once(hash_j)
                .chain(ancestors[j].iter())
                .filter_map(|h| valid.get(h).map(|e| (h, e)))
                .any(|(h, e)| {
                    let actor = e.actor();
                    actor.key == *target
                        && !candidates[i].covers(&DocId::Council, actor.epoch, e.change.seq(), h)
                });
            if excluded {
                threatens[i].push(j);
            }
        }
    }
    let reach = reachability(&threatens);
    let same_component = |a: usize, b: usize| reach[a].contains(&b) && reach[b].contains(&a);
    let mut memo: Vec<Option<bool>> = vec![None; count];
    for j in 0..count {
        effective(j, &threatens, &same_component, &mut memo);
    }
    for (j, candidate) in candidates.into_iter().enumerate() {
        if memo[j] == Some(true) {
            facts.effective.insert(candidate.change);
            facts
                .revocations
                .entry(revocations[j].2)
                .or_default()
                .push(candidate);
        }
    }
    facts
}

/// Whether revocation `j` takes effect: no effective revocation outside its component threatens it. Recursion
/// follows threats between components only, which form a DAG, so it ends.
fn effective(
    j: usize,
    threatens: &[Vec<usize>],
    same_component: &impl Fn(usize, usize) -> bool,
    memo: &mut Vec<Option<bool>>,
) -> bool {
    if let Some(known) = memo[j] {
        return known;
    }
    let threats: Vec<usize> = (0..threatens.len())
        .filter(|i| threatens[*i].contains(&j) && !same_component(*i, j))
        .collect();
    let result = threats
        .into_iter()
        .all(|i| !effective(i, threatens, same_component, memo));
    memo[j] = Some(result);
    result
}

/// For each node, the nodes reachable from it (itself included).
fn reachability(edges: &[Vec<usize>]) -> Vec<HashSet<usize>> {
    (0..edges.len())
        .map(|start| {
            let mut seen = HashSet::from([start]);
            let mut stack = vec![start];
            while let Some(node) = stack.pop() {
                for next in &edges[node] {
                    if seen.insert(*next) {
                        stack.push(*next);
                    }
                }
            }
            seen
        })
        .collect()
}

/// Council changes `hash` depends on, transitively.
fn ancestors_of(hash: &ChangeHash, valid: &BTreeMap<ChangeHash, Envelope>) -> HashSet<ChangeHash> {
    let mut seen = HashSet::new();
    let mut stack: Vec<ChangeHash> = valid
        .get(hash)
        .map(|e| e.change.deps().to_vec())
        .unwrap_or_default();
    while let Some(next) = stack.pop() {
        if seen.insert(next)
            && let Some(envelope) = valid.get(&next)
        {
            stack.extend_from_slice(envelope.change.deps());
        }
    }
    seen
}

fn key_bytes(hex_text: &str) -> Option<[u8; 32]> {
    let mut key = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut key).ok()?;
    Some(key)
}

/// Memoizes which council changes each envelope list holds, for callers that need a map from a list.
pub(crate) fn by_hash(
    envelopes: impl IntoIterator<Item = Envelope>,
) -> BTreeMap<ChangeHash, Envelope> {
    envelopes.into_iter().map(|e| (e.hash(), e)).collect()
}
