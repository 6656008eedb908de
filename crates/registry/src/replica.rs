//! One node's registry state and the acceptance rule.
//!
//! A replica *holds* envelopes (signature verified, context well formed) and *accepts* a subset of them: the
//! accepted set is a function of the set held, whatever order and batches they came in. [`Replica::receive`] takes
//! envelopes from anywhere (bundle, network, simulator) and decides each one once its prerequisites (dependencies,
//! auth heads, and the author's previous change in that chain) are decided:
//! - permanently **rejected** (by hash, because of the change itself and its history): not a member or not allowed
//!   as of its auth heads, malformed history, an equivocating chain past its fork point, or a rejected prerequisite;
//! - **excluded** but held: a change a fact of the held set takes out (a revocation that does not cover it, a
//!   prerequisite that is excluded). Facts can change as more is held (a revocation can be voided by a concurrent
//!   one), so these are kept, exported and synced, and decided again when the facts change;
//! - **accepted**: applied to its document.
//!
//! Envelopes whose prerequisites are unknown wait in a pending set bounded per author and in bytes; one whose author
//! is not a member as of its (known) auth heads never waits. The facts ([`crate::removal`]) change only when a
//! council change stating one (a revocation, an admission by invite) is held or a new equivocation is seen; then
//! the replica recomputes, and rebuilds its documents if an accepted change is taken out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use automerge::transaction::CommitOptions;
use automerge::{Automerge, Change, ChangeHash, ROOT, ReadDoc};
use identity::{Keypair, PublicKey};
use model::{DocId, RegistryView};

use crate::acceptance::{Membership, Reason};
use crate::document_cache::DocumentCache;
use crate::envelope::{Context, Envelope, Fact};
use crate::ops::Op;
use crate::removal::{self, Facts};
use crate::{Actor, Error, FederationId, view};

/// Most envelopes that may wait for their dependencies at once.
pub const MAX_PENDING: usize = 100_000;
/// Most envelopes of one author that may wait at once.
pub const MAX_PENDING_PER_AUTHOR: usize = 20_000;
/// Most bytes of changes that may wait at once.
pub const MAX_PENDING_BYTES: usize = 256 * 1024 * 1024;
/// Permanent rejections remembered by hash (a forgotten one is decided again, identically, if it comes back).
pub const MAX_REMEMBERED_REJECTIONS: usize = 200_000;
/// Excluded changes held per author; beyond it, further changes of that author are refused without being held.
pub const MAX_EXCLUDED_PER_AUTHOR: usize = 10_000;
/// Distinct auth-head sets whose membership is kept computed.
const MEMBERSHIP_CACHE_ENTRIES: usize = 4096;
/// Distinct author keys kept checked (decompressing a key costs about as much as a tenth of a signature check).
const AUTHOR_CACHE_ENTRIES: usize = 4096;
/// Signatures verified per batch; a failing batch is re-verified one by one, so keep it modest.
const SIGNATURE_BATCH: usize = 512;
const COUNCIL: u32 = 0;

/// Most results a [`SignatureCache`] keeps; when full it starts over.
const SIGNATURE_CACHE_ENTRIES: usize = 1 << 20;

/// Results of signature checks, shared by replicas that run in one process and receive the same envelopes (the
/// simulator's nodes): whether the signature S by key K over the digest D verified, for the exact (K, D, S). Only
/// results of a real verification are stored, valid or not, so a forged copy of a change (another signature) is
/// checked on its own. A node does not install one.
#[derive(Debug, Default)]
pub struct SignatureCache {
    checked: Mutex<SignatureResults>,
}

/// Whether a signature verified, by (key, digest, signature).
type SignatureResults = HashMap<([u8; 32], [u8; 32], [u8; 64]), bool>;

impl SignatureCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Results stored.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no result is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SignatureResults> {
        // A panic while the lock was held cannot leave a wrong result behind (each insert is one result).
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A change that was not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The change hash.
    pub change: ChangeHash,
    /// The reason code.
    pub reason: Reason,
    /// A sentence for humans.
    pub detail: String,
    /// Whether this is a permanent decision about the change itself, which the replica remembers by hash (and the
    /// store persists). `false` when only this copy was refused (a bad signature, a full pending set) or when the
    /// change is held excluded and may be decided again.
    pub recorded: bool,
}

/// What a [`Replica::receive`] call did; the caller persists `accepted` and `held` (see [`Receipt::to_keep`]), the
/// recorded rejections and the pending changes.
#[derive(Debug, Default)]
pub struct Receipt {
    /// Envelopes newly held but not accepted (excluded), as received: the store keeps them with the accepted ones.
    pub held: Vec<Envelope>,
    /// Newly accepted changes, each after its dependencies.
    pub accepted: Vec<Envelope>,
    /// Changes accepted before that are now excluded (a revocation or an equivocation took them out).
    pub withdrawn: Vec<Rejection>,
    /// Newly rejected or excluded changes.
    pub rejected: Vec<Rejection>,
    /// Envelopes already held (accepted, excluded or waiting).
    pub duplicates: usize,
    /// Envelopes that now wait for dependencies and were not waiting before.
    pub pending_added: Vec<Envelope>,
    /// Previously waiting changes that were decided or dropped by this call.
    pub pending_resolved: Vec<ChangeHash>,
    /// Envelopes waiting after this call.
    pub pending: usize,
}

impl Receipt {
    /// Every envelope the store must keep from this call: the newly accepted and the newly held.
    pub fn to_keep(&self) -> impl Iterator<Item = &Envelope> {
        self.accepted.iter().chain(&self.held)
    }
}

/// Two different changes by one actor at one place of one document: the proof of an equivocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    /// The document.
    pub doc: DocId,
    /// The actor (author and epoch).
    pub actor: Actor,
    /// The sequence number both changes claim (the lowest known fork of that chain).
    pub seq: u64,
    /// The two changes, smaller hash first.
    pub changes: [ChangeHash; 2],
}

/// Last accepted change of one chain (document, actor).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Link {
    seq: u64,
    max_op: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Prereq {
    Hash(ChangeHash),
    Slot(u32, Actor, u64),
}

#[derive(Clone, Debug)]
struct Waiting {
    envelope: Envelope,
    bytes: usize,
    since_ms: u64,
}

#[derive(Clone, Debug)]
struct Held {
    envelope: Envelope,
    reason: Reason,
}

enum Readiness {
    Ready,
    Rejected(String),
    Excluded(String),
    Missing(Vec<Prereq>),
}

enum Verdict {
    Accept(u32),
    /// Locally valid, at a chain place another locally valid change holds: an equivocation.
    Fork(ChangeHash),
    Reject(Reason, String),
    Exclude(Reason, String),
}

/// The registry documents of one node, with what it holds, accepted, rejected and keeps pending.
///
/// A clone is a deep copy (documents included) that decides on its own from then on; it shares the signature
/// cache, if one is installed.
#[derive(Clone)]
pub struct Replica {
    federation: Option<FederationId>,
    doc_ids: Vec<DocId>,
    doc_numbers: HashMap<DocId, u32>,
    /// Shared with other replicas (and the [`DocumentCache`], if one is installed) until one of them changes it.
    docs: Vec<Arc<Automerge>>,
    /// Accepted changes: their document and highest op counter.
    known: HashMap<ChangeHash, (u32, u64)>,
    /// Last accepted change per (document, actor): accepted chains are contiguous from 1.
    chains: HashMap<(u32, Actor), Link>,
    rejected: HashMap<ChangeHash, Reason>,
    rejected_order: VecDeque<ChangeHash>,
    /// Held but not accepted (equivocation proofs included).
    excluded: BTreeMap<ChangeHash, Held>,
    excluded_per_author: HashMap<[u8; 32], usize>,
    equivocations: BTreeMap<(u32, Actor), Equivocation>,
    /// Chain places taken by held changes that are not accepted (pending or excluded).
    slots: HashMap<(u32, Actor, u64), ChangeHash>,
    pending: HashMap<ChangeHash, Waiting>,
    waiters: HashMap<Prereq, Vec<ChangeHash>>,
    /// Entries in `waiters`, stale ones included (an envelope dropped from pending leaves its entries behind until
    /// the next compaction).
    waiter_entries: usize,
    /// Per author: how many of its envelopes wait, and their hashes oldest first. Entries are removed lazily (a
    /// hash no longer pending is skipped when met), so taking one envelope out costs O(1), not O(queue).
    pending_by_author: HashMap<[u8; 32], (usize, VecDeque<ChangeHash>)>,
    /// (count, author) of authors with pending changes, to find the largest quickly.
    pending_sizes: BTreeSet<(usize, [u8; 32])>,
    pending_bytes: usize,
    facts: Facts,
    /// Accepted non-council changes not yet applied to their documents (applied at the end of a call).
    deferred: BTreeMap<u32, Vec<Change>>,
    /// The facts may have changed: recompute at the end of the call.
    dirty: bool,
    now_ms: u64,
    membership_cache: HashMap<Vec<ChangeHash>, Arc<Membership>>,
    author_cache: HashMap<[u8; 32], PublicKey>,
    /// Signature results shared with other replicas in this process (the simulator's), if installed.
    signature_cache: Option<Arc<SignatureCache>>,
    /// Documents and memberships shared with other replicas in this process (the simulator's), if installed.
    document_cache: Option<Arc<DocumentCache>>,
    /// [`Replica::heads`] as computed since the documents or the excluded set last changed (every change to
    /// either clears it): the sync machine asks for the heads every tick and for every message.
    heads_memo: OnceLock<Vec<ChangeHash>>,
    /// Test-only fault injection: accept envelopes without checking signatures (see
    /// [`Replica::insecure_skip_signature_checks`]).
    skip_signature_checks: bool,
}

impl Default for Replica {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("federation", &self.federation)
            .field("changes", &self.known.len())
            .field("excluded", &self.excluded.len())
            .field("pending", &self.pending.len())
            .field("rejected", &self.rejected.len())
            .finish()
    }
}

impl Replica {
    /// An empty replica with no federation.
    pub fn new() -> Self {
        let mut replica = Self {
            federation: None,
            doc_ids: Vec::new(),
            doc_numbers: HashMap::new(),
            docs: Vec::new(),
            known: HashMap::new(),
            chains: HashMap::new(),
            rejected: HashMap::new(),
            rejected_order: VecDeque::new(),
            excluded: BTreeMap::new(),
            excluded_per_author: HashMap::new(),
            equivocations: BTreeMap::new(),
            slots: HashMap::new(),
            pending: HashMap::new(),
            waiters: HashMap::new(),
            waiter_entries: 0,
            pending_by_author: HashMap::new(),
            pending_sizes: BTreeSet::new(),
            pending_bytes: 0,
            facts: Facts::default(),
            deferred: BTreeMap::new(),
            dirty: false,
            now_ms: 0,
            membership_cache: HashMap::new(),
            author_cache: HashMap::new(),
            signature_cache: None,
            document_cache: None,
            heads_memo: OnceLock::new(),
            skip_signature_checks: false,
        };
        replica.doc_number(&DocId::Council);
        replica.doc_number(&DocId::Standards);
        replica
    }

    /// The federation, once founded or adopted.
    pub fn federation(&self) -> Option<FederationId> {
        self.federation
    }

    /// Adopts `federation` (a replica made by `init` does this when it first imports a bundle with a genesis).
    pub fn adopt(&mut self, federation: FederationId) -> Result<(), Error> {
        match self.federation {
            Some(current) if current != federation => Err(Error::AlreadyFederated(current)),
            _ => {
                self.federation = Some(federation);
                Ok(())
            }
        }
    }

    /// Number of accepted changes.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Number of held changes: accepted and excluded. It grows with every change held, so it tells whether the
    /// heads may have changed.
    pub fn held_len(&self) -> usize {
        self.known.len() + self.excluded.len()
    }

    /// Whether nothing was accepted yet.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Whether the change was accepted.
    pub fn contains(&self, hash: &ChangeHash) -> bool {
        self.known.contains_key(hash)
    }

    /// Whether the change is held: accepted or excluded (not merely pending).
    pub fn holds(&self, hash: &ChangeHash) -> bool {
        self.known.contains_key(hash) || self.excluded.contains_key(hash)
    }

    /// The reason a change was rejected or is excluded, if it is.
    pub fn rejection(&self, hash: &ChangeHash) -> Option<Reason> {
        self.rejected
            .get(hash)
            .or_else(|| self.excluded.get(hash).map(|h| &h.reason))
            .copied()
    }

    /// Envelopes waiting for dependencies.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Hashes of held changes that are excluded (equivocation proofs included), sorted.
    pub fn excluded(&self) -> impl Iterator<Item = (&ChangeHash, Reason)> {
        self.excluded.iter().map(|(h, held)| (h, held.reason))
    }

    /// The held envelope of an excluded change (its signature is the one it was received with, or zeros when the
    /// replica was restored from a snapshot: the store keeps the received bytes).
    pub fn excluded_envelope(&self, hash: &ChangeHash) -> Option<&Envelope> {
        self.excluded.get(hash).map(|h| &h.envelope)
    }

    /// The equivocations this replica holds proofs of.
    pub fn equivocations(&self) -> impl Iterator<Item = &Equivocation> {
        self.equivocations.values()
    }

    /// Heads of every document and every excluded change, sorted: equal on replicas that hold the same changes.
    /// Excluded changes are listed because they are held (and synced) like accepted ones.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.heads_memo
            .get_or_init(|| {
                let mut heads: Vec<ChangeHash> = self
                    .docs
                    .iter()
                    .flat_map(|d| d.get_heads())
                    .chain(self.excluded.keys().copied())
                    .collect();
                heads.sort();
                heads
            })
            .clone()
    }

    /// The documents or the excluded set changed: the heads are computed again when next asked for.
    fn heads_changed(&mut self) {
        self.heads_memo.take();
    }

    /// Heads of one document.
    pub fn doc_heads(&self, doc: &DocId) -> Vec<ChangeHash> {
        self.doc_numbers
            .get(doc)
            .map(|n| self.docs[*n as usize].get_heads())
            .unwrap_or_default()
    }

    /// Document ids that hold changes.
    pub fn doc_ids(&self) -> impl Iterator<Item = &DocId> {
        self.doc_ids
            .iter()
            .zip(&self.docs)
            .filter(|(_, d)| !d.get_heads().is_empty())
            .map(|(id, _)| id)
    }

    /// The typed view of the registry.
    pub fn view(&self) -> RegistryView {
        let docs: BTreeMap<DocId, Automerge> = self
            .doc_ids
            .iter()
            .cloned()
            .zip(self.docs.iter().map(|d| Automerge::clone(d)))
            .filter(|(_, d)| !d.get_heads().is_empty())
            .collect();
        let mut view = view::build(self.federation, &docs);
        self.overlay(&mut view);
        view
    }

    /// The typed view of the council document alone (members, roles, objectives, approvals, budgets): what a
    /// node needs to gate connections, at the cost of one document rather than the whole registry.
    pub fn council_view(&self) -> RegistryView {
        let docs: BTreeMap<DocId, Automerge> = std::iter::once((
            DocId::Council,
            Automerge::clone(&self.docs[COUNCIL as usize]),
        ))
        .filter(|(_, d)| !d.get_heads().is_empty())
        .collect();
        let mut view = view::build(self.federation, &docs);
        self.overlay(&mut view);
        view
    }

    /// What the facts add to the documents: effective revocations, void admissions, equivocations.
    fn overlay(&self, view: &mut RegistryView) {
        for (key, revocations) in &self.facts.revocations {
            let key = hex::encode(key);
            if let Some(member) = view.members.get_mut(&key) {
                member.revoked = true;
            }
            if !view.revocations.contains_key(&key)
                && let Some(first) = revocations.first()
            {
                view.revocations.insert(
                    key,
                    model::Revocation {
                        by: hex::encode(first.by),
                        reason: format!("revocation {} (its change is excluded)", first.change),
                        at_ms: 0,
                    },
                );
            }
        }
        for void in &self.facts.void_admissions {
            view.void_admissions.insert(
                hex::encode(void.key),
                model::VoidAdmission {
                    nonce: void.nonce.clone(),
                    change: void.change.to_string(),
                    winner: void.winner.to_string(),
                },
            );
        }
        for equivocation in self.equivocations.values() {
            view.equivocations
                .entry(hex::encode(equivocation.actor.key))
                .or_default()
                .push(model::Equivocation {
                    doc: equivocation.doc.to_string(),
                    epoch: equivocation.actor.epoch,
                    seq: equivocation.seq,
                    changes: equivocation.changes.iter().map(|h| h.to_string()).collect(),
                });
        }
    }

    /// Membership as of the current council heads, with the facts applied (void admissions, effective
    /// revocations).
    pub fn membership(&mut self) -> Arc<Membership> {
        let heads = self.docs[COUNCIL as usize].get_heads();
        let mut membership = (*self.membership_at(&heads)).clone();
        for key in self.facts.revocations.keys() {
            if let Some(standing) = membership.members.get_mut(key) {
                standing.revoked = true;
            }
        }
        Arc::new(membership)
    }

    /// Hashes of accepted changes that are not ancestors of `heads` (heads of any document; unknown ones ignored),
    /// each after its dependencies.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        self.changes_since_with_deps(heads)
            .into_iter()
            .map(|(h, _)| h)
            .collect()
    }

    /// Like [`Replica::changes_since`], with each change's dependencies (same document).
    pub fn changes_since_with_deps(
        &self,
        heads: &[ChangeHash],
    ) -> Vec<(ChangeHash, Vec<ChangeHash>)> {
        let mut out = Vec::new();
        for (number, doc) in self.docs.iter().enumerate() {
            let have: Vec<ChangeHash> = heads
                .iter()
                .filter(|h| self.known.get(h).map(|k| k.0) == Some(number as u32))
                .copied()
                .collect();
            // Every head of the document given: nothing of it is new (and the common case when two replicas are
            // in step), without walking its change graph.
            if !have.is_empty() && doc.get_heads().iter().all(|h| have.contains(h)) {
                continue;
            }
            let Some(cache) = self.document_cache.as_deref() else {
                out.extend(changes_not_under(doc, &have));
                continue;
            };
            // Another replica listed them already if its document had the same heads and was given the same.
            let (heads, mut given) = (sorted_heads(doc), have);
            given.sort();
            match cache.changes_since(&heads, &given) {
                Some(changes) => out.extend(changes.iter().cloned()),
                None => {
                    let changes = Arc::new(changes_not_under(doc, &given));
                    out.extend(changes.iter().cloned());
                    cache.keep_changes_since(heads, given, &changes);
                }
            }
        }
        out
    }

    /// Envelopes waiting for dependencies.
    pub fn pending_envelopes(&self) -> impl Iterator<Item = &Envelope> {
        self.pending.values().map(|w| &w.envelope)
    }

    /// What a waiting change waits for, for diagnostics: `change <hash>` (a dependency or auth head) or `seq N of
    /// <author> in document #D` (the author's previous change in its chain).
    pub fn waits_for(&self, hash: &ChangeHash) -> Vec<String> {
        let mut waits: Vec<String> = self
            .waiters
            .iter()
            .filter(|(_, list)| list.contains(hash))
            .map(|(prereq, _)| match prereq {
                Prereq::Hash(h) => format!("change {h}"),
                Prereq::Slot(doc, actor, seq) => format!(
                    "seq {seq} of {} (epoch {}) in document #{doc}",
                    hex::encode(actor.key),
                    actor.epoch
                ),
            })
            .collect();
        waits.sort();
        waits
    }

    /// Whether a change waits for dependencies.
    pub fn is_pending(&self, hash: &ChangeHash) -> bool {
        self.pending.contains_key(hash)
    }

    /// Whether `key` is out: revoked (by an effective revocation or a revocation record), or void.
    pub fn is_revoked(&mut self, key: &[u8; 32]) -> bool {
        self.facts.revocations.contains_key(key)
            || self.facts.void.contains(key)
            || self
                .membership()
                .members
                .get(key)
                .is_some_and(|s| s.revoked)
    }

    fn doc_number(&mut self, doc: &DocId) -> u32 {
        if let Some(number) = self.doc_numbers.get(doc) {
            return *number;
        }
        let number = self.docs.len() as u32;
        self.doc_ids.push(doc.clone());
        self.doc_numbers.insert(doc.clone(), number);
        self.docs.push(Arc::new(Automerge::new()));
        self.heads_changed();
        number
    }

    /// The author's key, remembered per actor key.
    fn author_of(&mut self, envelope: &Envelope) -> Option<PublicKey> {
        let key = envelope.actor().key;
        if let Some(author) = self.author_cache.get(&key) {
            return Some(*author);
        }
        let author = envelope.author()?;
        if self.author_cache.len() >= AUTHOR_CACHE_ENTRIES {
            self.author_cache.clear();
        }
        self.author_cache.insert(key, author);
        Some(author)
    }

    fn membership_at(&mut self, heads: &[ChangeHash]) -> Arc<Membership> {
        let mut key = heads.to_vec();
        key.sort();
        key.dedup();
        if let Some(cached) = self.membership_cache.get(&key) {
            return Arc::clone(cached);
        }
        let base = self.membership_read_at(&key);
        let membership = if self.facts.void.is_empty() {
            base
        } else {
            let mut membership = Membership::clone(&base);
            membership.void = self.facts.void.clone();
            Arc::new(membership)
        };
        if self.membership_cache.len() >= MEMBERSHIP_CACHE_ENTRIES {
            self.membership_cache.clear();
        }
        self.membership_cache.insert(key, Arc::clone(&membership));
        membership
    }

    /// Membership as read from the council document at `heads` (sorted), without the facts: from the shared cache
    /// when another replica read it already.
    fn membership_read_at(&self, heads: &[ChangeHash]) -> Arc<Membership> {
        if heads.is_empty() {
            return Arc::new(Membership::default());
        }
        let cache = self.document_cache.as_deref();
        if let Some(membership) = cache.and_then(|c| c.membership(heads)) {
            return membership;
        }
        let council = &self.docs[COUNCIL as usize];
        let membership = Arc::new(view::membership(&view::root(council, Some(heads))));
        if let Some(cache) = cache {
            cache.keep_membership(heads.to_vec(), &membership);
        }
        membership
    }

    /// Applies accepted `changes` (each after its dependencies, which are in the document or among them) to
    /// document `number`. With a [`DocumentCache`], a document another replica brought to the same heads is taken
    /// instead (the heads name the same history, so the same document).
    fn apply_accepted(&mut self, number: u32, changes: Vec<Change>) -> Result<(), Error> {
        self.heads_changed();
        let doc = &mut self.docs[number as usize];
        let Some(cache) = self.document_cache.as_deref() else {
            Arc::make_mut(doc).apply_changes(changes)?;
            return Ok(());
        };
        let heads = heads_after(doc, &changes);
        if let Some(shared) = cache.document(&heads) {
            *doc = shared;
            return Ok(());
        }
        Arc::make_mut(doc).apply_changes(changes)?;
        debug_assert_eq!(
            sorted_heads(doc),
            heads,
            "heads_after agrees with automerge"
        );
        cache.keep_document(heads, doc);
        Ok(())
    }

    /// The actor this replica's key writes `doc` as: the current epoch, or a new one when a change of the current
    /// chain is held but not accepted (so the next sequence number is already taken, or the chain is forked).
    fn writing_actor(&self, number: u32, key: [u8; 32]) -> Actor {
        let mut epoch = self
            .chains
            .keys()
            .filter(|(n, a)| *n == number && a.key == key)
            .map(|(_, a)| a.epoch)
            .max()
            .unwrap_or(0);
        loop {
            let actor = Actor { key, epoch };
            let next = self.chains.get(&(number, actor)).map_or(0, |l| l.seq) + 1;
            let taken = self.slots.contains_key(&(number, actor, next))
                || self.equivocations.contains_key(&(number, actor))
                || self.excluded.values().any(|h| {
                    h.envelope.actor() == actor
                        && self.doc_numbers.get(&h.envelope.doc) == Some(&number)
                });
            if !taken {
                return actor;
            }
            epoch += 1;
        }
    }

    /// Writes `op` as the key's author, signs it and returns the envelope to persist and share. The caller must
    /// persist the envelope before it shares it (the node's write path flushes it first), so a crash can lose an
    /// unshared change but never make the key sign a second change at the same place.
    pub fn write(&mut self, keypair: &Keypair, op: &Op, now_ms: i64) -> Result<Envelope, Error> {
        let author = keypair.public();
        let genesis = matches!(op, Op::Genesis { .. });
        if genesis {
            if let Some(federation) = self.federation {
                return Err(Error::AlreadyFederated(federation));
            }
        } else if self.federation.is_none() {
            return Err(Error::NoFederation);
        }
        let council_heads = self.docs[COUNCIL as usize].get_heads();
        let membership = self.membership();
        let standing = membership.members.get(author.as_bytes());
        let target = op.target(standing).map_err(|e| with_author(e, &author))?;
        if !genesis {
            membership
                .authorize(author.as_bytes(), &target.doc)
                .map_err(|(_, reason)| Error::NotAllowed {
                    author: author.to_hex(),
                    doc: target.doc.to_string(),
                    reason,
                })?;
        }
        let number = self.doc_number(&target.doc);
        check_existence(&self.docs[number as usize], op, &target.key)?;
        let fact = self.fact_of(op);
        let context = Context {
            doc: target.doc.clone(),
            auth_heads: if target.doc == DocId::Council {
                Vec::new()
            } else {
                let mut heads = council_heads;
                heads.sort();
                heads
            },
            fact,
        };
        let actor = self.writing_actor(number, *author.as_bytes());
        self.heads_changed();
        let doc = Arc::make_mut(&mut self.docs[number as usize]);
        doc.set_actor(actor.to_actor_id());
        let mut tx = doc.transaction();
        op.apply(&mut tx, &target.key)?;
        let (committed, _) = tx.commit_with(
            CommitOptions::default()
                .with_message(context.to_message())
                .with_time(now_ms.div_euclid(1000)),
        );
        if committed.is_none() {
            return Err(Error::Conflict(format!(
                "{} already holds that value: nothing to write",
                target.key
            )));
        }
        let change = doc
            .get_last_local_change()
            .expect("a change was just committed by this actor");
        let hash = change.hash();
        if let Some(cache) = &self.document_cache {
            // The replicas that receive this change reach these heads next.
            let doc = &self.docs[number as usize];
            cache.keep_document(sorted_heads(doc), doc);
        }
        if genesis {
            self.federation = Some(FederationId(hash.0));
        }
        let federation = self.federation.expect("set above or checked at entry");
        self.known.insert(hash, (number, change.max_op()));
        self.chains.insert(
            (number, actor),
            Link {
                seq: change.seq(),
                max_op: change.max_op(),
            },
        );
        if number == COUNCIL {
            self.membership_cache.clear();
        }
        let envelope = Envelope::sign(&federation, change, keypair).map_err(|e| {
            Error::Conflict(format!(
                "the written change does not carry its context: {e}"
            ))
        })?;
        if envelope.fact.is_some() {
            self.recompute(&mut Receipt::default())?;
        }
        Ok(envelope)
    }

    /// The fact a write states, for the two council writes the acceptance rule reads.
    fn fact_of(&self, op: &Op) -> Option<Fact> {
        match op {
            Op::RevokeMember { public_key, .. } => {
                let mut key = [0u8; 32];
                hex::decode_to_slice(public_key, &mut key).ok()?;
                let mut covers: BTreeMap<String, BTreeMap<u32, u64>> = BTreeMap::new();
                for ((number, actor), link) in &self.chains {
                    if actor.key == key {
                        covers
                            .entry(self.doc_ids[*number as usize].to_string())
                            .or_default()
                            .insert(actor.epoch, link.seq);
                    }
                }
                Some(Fact::Revoke {
                    member: public_key.clone(),
                    covers,
                })
            }
            Op::AdmitInvited { member, nonce } => Some(Fact::Admit {
                nonce: nonce.clone(),
                member: member.public_key.clone(),
            }),
            _ => None,
        }
    }

    /// Builds a signed change of `op` in `doc` as `keypair` without checking authorization and without applying
    /// it: what a hostile or misconfigured member could send. For tests, the simulator and the demo.
    pub fn craft(
        &self,
        keypair: &Keypair,
        doc: &DocId,
        op: &Op,
        now_ms: i64,
    ) -> Result<Envelope, Error> {
        self.craft_with(keypair, doc, op, now_ms, &Craft::default())
    }

    /// Like [`Replica::craft`], with the deviations [`Craft`] allows: any auth heads (even stale ones), another
    /// state of the document to build on, another epoch: how a member forks its chain, names a council head from
    /// before it was a member, or writes with a data dir copied before its revocation.
    pub fn craft_with(
        &self,
        keypair: &Keypair,
        doc: &DocId,
        op: &Op,
        now_ms: i64,
        options: &Craft,
    ) -> Result<Envelope, Error> {
        let current_heads = self.docs[COUNCIL as usize].get_heads();
        let auth_heads = options.auth_heads.as_deref().unwrap_or(&current_heads);
        let doc_heads = options.doc_heads.as_deref();
        let federation = self.federation.ok_or(Error::NoFederation)?;
        let target = op.target(None).or_else(|_| {
            op.target(Some(&crate::acceptance::Standing {
                role: model::Role::Pod,
                scope: match doc {
                    DocId::Pod(p) | DocId::Partner(p) => Some(p.clone()),
                    _ => None,
                },
                revoked: false,
            }))
        })?;
        let current = self
            .doc_numbers
            .get(doc)
            .map(|n| Automerge::clone(&self.docs[*n as usize]))
            .unwrap_or_default();
        let mut copy = match doc_heads {
            Some(heads) => current.fork_at(heads)?,
            None => current,
        };
        copy.set_actor(
            Actor {
                key: *keypair.public().as_bytes(),
                epoch: options.epoch,
            }
            .to_actor_id(),
        );
        let mut heads = auth_heads.to_vec();
        heads.sort();
        heads.dedup();
        let context = Context {
            doc: doc.clone(),
            auth_heads: if *doc == DocId::Council {
                Vec::new()
            } else {
                heads
            },
            fact: self.fact_of(op),
        };
        let mut tx = copy.transaction();
        op.apply(&mut tx, &target.key)?;
        tx.commit_with(
            CommitOptions::default()
                .with_message(context.to_message())
                .with_time(now_ms.div_euclid(1000)),
        );
        let change = copy
            .get_last_local_change()
            .expect("a change was just committed by this actor");
        Envelope::sign(&federation, change, keypair)
            .map_err(|e| Error::Conflict(format!("crafted change: {e}")))
    }

    /// Shares signature results with the other replicas holding `cache`: a signature this process verified
    /// already (same key, digest and signature bytes) is not verified again. For the simulator, whose nodes all
    /// receive the same envelopes; a node does not call it.
    pub fn share_signature_cache(&mut self, cache: Arc<SignatureCache>) {
        self.signature_cache = Some(cache);
    }

    /// Shares documents and memberships with the other replicas holding `cache` (see [`DocumentCache`]). For the
    /// simulator, whose nodes all apply the same changes; a node does not call it.
    pub fn share_document_cache(&mut self, cache: Arc<DocumentCache>) {
        self.document_cache = Some(cache);
    }

    /// Fault injection for the simulator's self-test: this replica stops checking signatures, so a scenario with a
    /// hostile peer must catch it through its invariants. Never called by the node.
    #[doc(hidden)]
    pub fn insecure_skip_signature_checks(&mut self) {
        self.skip_signature_checks = true;
    }

    /// Fault injection for tests: applies `envelope` to its document without deciding it, as a replica with a
    /// corrupted store would hold it. Never called by the node.
    #[doc(hidden)]
    pub fn insecure_apply_unchecked(&mut self, envelope: &Envelope) -> Result<(), Error> {
        let number = self.doc_number(&envelope.doc);
        self.known
            .insert(envelope.hash(), (number, envelope.change.max_op()));
        self.chains.insert(
            (number, envelope.actor()),
            Link {
                seq: envelope.change.seq(),
                max_op: envelope.change.max_op(),
            },
        );
        self.heads_changed();
        Arc::make_mut(&mut self.docs[number as usize]).apply_changes([envelope.change.clone()])?;
        Ok(())
    }

    /// Decides a batch of received envelopes by the acceptance rule and applies the accepted ones.
    pub fn receive(&mut self, envelopes: Vec<Envelope>) -> Result<Receipt, Error> {
        let now = self.now_ms;
        self.receive_at(envelopes, now)
    }

    /// [`Replica::receive`] at `now_ms` (what pending envelopes are timed with, see [`Replica::expire_pending`]).
    pub fn receive_at(&mut self, envelopes: Vec<Envelope>, now_ms: u64) -> Result<Receipt, Error> {
        let federation = self.federation.ok_or(Error::NoFederation)?;
        self.now_ms = self.now_ms.max(now_ms);
        let mut receipt = Receipt::default();
        let fresh = self.screen(envelopes, &mut receipt);
        let verified = if self.skip_signature_checks {
            fresh
        } else {
            verify_signatures(
                &federation,
                fresh,
                self.signature_cache.as_deref(),
                &self.author_cache,
                &mut receipt,
            )
        };
        self.run(verified, true, &mut receipt)?;
        Ok(receipt)
    }

    /// Takes envelopes that are already verified (from the store, or a rebuild) and decides them.
    fn run(
        &mut self,
        envelopes: Vec<Envelope>,
        report_held: bool,
        receipt: &mut Receipt,
    ) -> Result<(), Error> {
        let mut touched: HashMap<ChangeHash, bool> = HashMap::new();
        let mut queue: VecDeque<Envelope> = VecDeque::new();
        for envelope in envelopes {
            if let Some(envelope) = self.admit(envelope, report_held, receipt) {
                queue.push_back(envelope);
            }
        }
        self.settle(queue, report_held, &mut touched, receipt)?;
        self.flush_deferred()?;
        if self.dirty {
            self.recompute(receipt)?;
        }
        for (hash, was_pending) in touched {
            match (was_pending, self.pending.get(&hash)) {
                (true, None) => receipt.pending_resolved.push(hash),
                (false, Some(waiting)) => receipt.pending_added.push(waiting.envelope.clone()),
                _ => {}
            }
        }
        receipt.pending_added.sort_by_key(Envelope::hash);
        receipt.pending_resolved.sort();
        receipt.pending = self.pending.len();
        Ok(())
    }

    /// Drops duplicates, remembered rejections and structurally invalid envelopes.
    fn screen(&mut self, envelopes: Vec<Envelope>, receipt: &mut Receipt) -> Vec<Envelope> {
        let mut seen = HashSet::new();
        let mut fresh = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let hash = envelope.hash();
            if self.known.contains_key(&hash)
                || self.pending.contains_key(&hash)
                || self.excluded.contains_key(&hash)
                || !seen.insert(hash)
            {
                receipt.duplicates += 1;
            } else if let Some(reason) = self.rejected.get(&hash) {
                receipt.rejected.push(Rejection {
                    change: hash,
                    reason: *reason,
                    detail: "rejected earlier".into(),
                    recorded: true,
                });
            } else if self.author_of(&envelope).is_none() {
                receipt.rejected.push(Rejection {
                    change: hash,
                    reason: Reason::Malformed,
                    detail: "the change's actor id is not an ed25519 public key".into(),
                    recorded: true,
                });
            } else {
                fresh.push(envelope);
            }
        }
        fresh
    }

    /// Takes a verified envelope in: refuses it at once when its chain is known to fork before its place, keeps it
    /// when it is one of the two changes proving that fork. Returns it when it is to be decided.
    fn admit(
        &mut self,
        envelope: Envelope,
        report_held: bool,
        receipt: &mut Receipt,
    ) -> Option<Envelope> {
        let hash = envelope.hash();
        let actor = envelope.actor();
        let number = self.doc_number(&envelope.doc);
        let seq = envelope.change.seq();
        if let Some(fork) = self.equivocations.get(&(number, actor)) {
            if fork.changes.contains(&hash) {
                self.hold_excluded(
                    envelope,
                    Reason::Equivocation,
                    "one of the two changes proving an equivocation".into(),
                    report_held,
                    receipt,
                );
                return None;
            }
            if seq >= fork.seq {
                let detail = format!(
                    "{} equivocated in {} at sequence number {}: its changes from there are out",
                    hex::encode(actor.key),
                    envelope.doc,
                    fork.seq
                );
                self.reject(hash, Reason::Equivocation, detail, receipt);
                return None;
            }
        }
        Some(envelope)
    }

    /// Records the equivocation `envelope` and `other` prove (both locally valid, one chain place) and holds both
    /// as proofs; the recomputation at the end of the call takes out what the fork excludes.
    fn record_fork(
        &mut self,
        envelope: Envelope,
        other: ChangeHash,
        report_held: bool,
        receipt: &mut Receipt,
    ) {
        let actor = envelope.actor();
        let number = self.doc_number(&envelope.doc);
        let seq = envelope.change.seq();
        let mut changes = [envelope.hash(), other];
        changes.sort();
        tracing::warn!(author = %hex::encode(actor.key), doc = %envelope.doc, seq, "equivocation: two changes at one place");
        let lower = self
            .equivocations
            .get(&(number, actor))
            .is_none_or(|fork| seq < fork.seq);
        if lower {
            self.equivocations.insert(
                (number, actor),
                Equivocation {
                    doc: envelope.doc.clone(),
                    actor,
                    seq,
                    changes,
                },
            );
        }
        if let Some(held) = self.excluded.get_mut(&other) {
            held.reason = Reason::Equivocation;
        }
        let detail = format!(
            "{} signed two changes at number {seq} in {}: {} and {}",
            hex::encode(actor.key),
            envelope.doc,
            changes[0],
            changes[1]
        );
        self.hold_excluded(envelope, Reason::Equivocation, detail, report_held, receipt);
        self.dirty = true;
    }

    /// The accepted change of `actor` at `seq` in document `number` (a scan: only needed to name an equivocation).
    fn accepted_at(&self, number: u32, actor: Actor, seq: u64) -> Option<ChangeHash> {
        let actor_id = actor.to_actor_id();
        let matches = |c: &Change| *c.actor_id() == actor_id && c.seq() == seq;
        self.deferred
            .get(&number)
            .and_then(|changes| changes.iter().find(|c| matches(c)).map(Change::hash))
            .or_else(|| {
                self.docs[number as usize]
                    .get_changes(&[])
                    .into_iter()
                    .find(|c| matches(c))
                    .map(|c| c.hash())
            })
    }

    /// Decides queued envelopes, and what waited on them, until nothing is ready.
    fn settle(
        &mut self,
        mut queue: VecDeque<Envelope>,
        report_held: bool,
        touched: &mut HashMap<ChangeHash, bool>,
        receipt: &mut Receipt,
    ) -> Result<(), Error> {
        while let Some(envelope) = queue.pop_front() {
            let hash = envelope.hash();
            if self.known.contains_key(&hash) || self.excluded.contains_key(&hash) {
                continue;
            }
            let wake: Vec<Prereq> = match self.readiness(&envelope) {
                Readiness::Ready => match self.decide(&envelope) {
                    Verdict::Accept(number) => {
                        let actor = envelope.actor();
                        let seq = envelope.change.seq();
                        self.accept(number, &envelope)?;
                        receipt.accepted.push(envelope);
                        vec![Prereq::Hash(hash), Prereq::Slot(number, actor, seq)]
                    }
                    Verdict::Reject(reason, detail) => {
                        self.reject(hash, reason, detail, receipt);
                        vec![Prereq::Hash(hash)]
                    }
                    Verdict::Fork(other) => {
                        // Both branches are out now: what waited on this place of the author's chain is decided
                        // (excluded) rather than left waiting for a change that will never be accepted.
                        let number = self.doc_number(&envelope.doc);
                        let slot = Prereq::Slot(number, envelope.actor(), envelope.change.seq());
                        self.record_fork(envelope, other, report_held, receipt);
                        vec![Prereq::Hash(hash), slot]
                    }
                    Verdict::Exclude(reason, detail) => {
                        let number = self.doc_number(&envelope.doc);
                        let slot = Prereq::Slot(number, envelope.actor(), envelope.change.seq());
                        self.hold_excluded(envelope, reason, detail, report_held, receipt);
                        vec![Prereq::Hash(hash), slot]
                    }
                },
                Readiness::Rejected(detail) => {
                    self.reject(hash, Reason::DependsOnRejected, detail, receipt);
                    vec![Prereq::Hash(hash)]
                }
                Readiness::Excluded(detail) => {
                    let number = self.doc_number(&envelope.doc);
                    let slot = Prereq::Slot(number, envelope.actor(), envelope.change.seq());
                    self.hold_excluded(
                        envelope,
                        Reason::DependsOnRejected,
                        detail,
                        report_held,
                        receipt,
                    );
                    vec![Prereq::Hash(hash), slot]
                }
                Readiness::Missing(missing) => {
                    if let Some((reason, detail)) = self.early_verdict(&envelope) {
                        self.reject(hash, reason, detail, receipt);
                        vec![Prereq::Hash(hash)]
                    } else {
                        touched.entry(hash).or_insert(false);
                        self.park(envelope, missing, receipt, touched);
                        Vec::new()
                    }
                }
            };
            for prereq in wake {
                for waiter in self.waiters.remove(&prereq).unwrap_or_default() {
                    let was = self.pending.contains_key(&waiter);
                    if let Some(waiting) = self.take_pending(&waiter) {
                        touched.entry(waiter).or_insert(was);
                        queue.push_back(waiting.envelope);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the prerequisites of `envelope` are decided, and how.
    fn readiness(&mut self, envelope: &Envelope) -> Readiness {
        let number = self.doc_number(&envelope.doc);
        let actor = envelope.actor();
        let seq = envelope.change.seq();
        let mut missing = Vec::new();
        let mut excluded = None;
        for dep in envelope.change.deps().iter().chain(&envelope.auth_heads) {
            if self.known.contains_key(dep) {
                continue;
            }
            if self.rejected.contains_key(dep) {
                return Readiness::Rejected(format!("depends on rejected change {dep}"));
            }
            if self.excluded.contains_key(dep) {
                excluded.get_or_insert_with(|| format!("depends on excluded change {dep}"));
                continue;
            }
            missing.push(Prereq::Hash(*dep));
        }
        if seq > 1
            && self
                .chains
                .get(&(number, actor))
                .is_none_or(|l| l.seq < seq - 1)
        {
            match self.slots.get(&(number, actor, seq - 1)) {
                Some(previous) if self.excluded.contains_key(previous) => {
                    excluded.get_or_insert_with(|| {
                        format!("the author's previous change {previous} in this chain is excluded")
                    });
                }
                _ => missing.push(Prereq::Slot(number, actor, seq - 1)),
            }
        }
        if let Some(detail) = excluded {
            return Readiness::Excluded(detail);
        }
        if missing.is_empty() {
            Readiness::Ready
        } else {
            Readiness::Missing(missing)
        }
    }

    /// A decision that needs no missing dependency: an author who is not a member (or may not write the document)
    /// as of its auth heads, when those are known, never waits.
    fn early_verdict(&mut self, envelope: &Envelope) -> Option<(Reason, String)> {
        let auth = envelope.effective_auth_heads();
        if auth.is_empty()
            || !auth
                .iter()
                .all(|h| self.known.get(h).is_some_and(|k| k.0 == COUNCIL))
        {
            return None;
        }
        let key = envelope.actor().key;
        self.membership_at(auth)
            .authorize(&key, &envelope.doc)
            .err()
    }

    /// The acceptance rule for one envelope whose prerequisites are all accepted.
    fn decide(&mut self, envelope: &Envelope) -> Verdict {
        let hash = envelope.hash();
        let Some(author) = self.author_of(envelope) else {
            return Verdict::Reject(Reason::Malformed, "actor is not an ed25519 key".into());
        };
        let actor = envelope.actor();
        let number = self.doc_number(&envelope.doc);
        if envelope.doc == DocId::Council && envelope.change.deps().is_empty() {
            return if self.federation.map(|f| f.0) == Some(hash.0) {
                Verdict::Accept(number)
            } else {
                Verdict::Reject(
                    Reason::UnknownAuthor,
                    "a council change without history that is not this federation's genesis".into(),
                )
            };
        }
        let mut deps_max_op = 0;
        for dep in envelope.change.deps() {
            match self.known.get(dep) {
                Some((n, max_op)) if *n == number => deps_max_op = deps_max_op.max(*max_op),
                _ => {
                    return Verdict::Reject(
                        Reason::Malformed,
                        format!("dependency {dep} belongs to another document"),
                    );
                }
            }
        }
        for head in &envelope.auth_heads {
            if self.known.get(head).map(|k| k.0) != Some(COUNCIL) {
                return Verdict::Reject(
                    Reason::Malformed,
                    format!("auth head {head} is not a council change"),
                );
            }
        }
        if let Err((reason, detail)) = self
            .membership_at(envelope.effective_auth_heads())
            .authorize(author.as_bytes(), &envelope.doc)
        {
            return Verdict::Reject(reason, detail);
        }
        let link = self
            .chains
            .get(&(number, actor))
            .copied()
            .unwrap_or_default();
        let seq = envelope.change.seq();
        let start = envelope.change.start_op().get();
        if seq <= link.seq
            && let Some(other) = self.accepted_at(number, actor, seq)
        {
            return Verdict::Fork(other);
        }
        if let Some(other) = self.slots.get(&(number, actor, seq))
            && *other != hash
            && self.excluded.contains_key(other)
        {
            return Verdict::Fork(*other);
        }
        if seq != link.seq + 1 {
            return Verdict::Reject(
                Reason::Malformed,
                format!(
                    "sequence number {seq} of {author} in {} does not follow {}",
                    envelope.doc, link.seq
                ),
            );
        }
        if start <= link.max_op || start <= deps_max_op {
            return Verdict::Reject(
                Reason::Malformed,
                format!(
                    "operation counter {start} does not exceed those of the change's history ({})",
                    link.max_op.max(deps_max_op)
                ),
            );
        }
        if !self.facts.effective.contains(&hash)
            && let Some(revocations) = self.facts.revocations.get(&actor.key)
            && let Some(revocation) = revocations
                .iter()
                .find(|r| !r.covers(&envelope.doc, actor.epoch, seq, &hash))
        {
            return Verdict::Exclude(
                Reason::Revoked,
                format!(
                    "{author} was revoked by {} which covers its changes in {} up to {}; this is number {seq}",
                    revocation.change,
                    envelope.doc,
                    revocation.number(&envelope.doc, actor.epoch)
                ),
            );
        }
        Verdict::Accept(number)
    }

    fn accept(&mut self, number: u32, envelope: &Envelope) -> Result<(), Error> {
        let actor = envelope.actor();
        let hash = envelope.hash();
        let seq = envelope.change.seq();
        self.known.insert(hash, (number, envelope.change.max_op()));
        self.chains.insert(
            (number, actor),
            Link {
                seq,
                max_op: envelope.change.max_op(),
            },
        );
        self.slots.remove(&(number, actor, seq));
        if envelope.fact.is_some() {
            self.dirty = true;
        }
        if number == COUNCIL {
            // Later council changes are authorized against council states that include this one: apply now.
            self.apply_accepted(COUNCIL, vec![envelope.change.clone()])?;
        } else {
            self.deferred
                .entry(number)
                .or_default()
                .push(envelope.change.clone());
        }
        Ok(())
    }

    fn flush_deferred(&mut self) -> Result<(), Error> {
        for (number, changes) in std::mem::take(&mut self.deferred) {
            self.apply_accepted(number, changes)?;
        }
        Ok(())
    }

    fn reject(&mut self, hash: ChangeHash, reason: Reason, detail: String, receipt: &mut Receipt) {
        tracing::debug!(change = %hash, reason = reason.code(), %detail, "change rejected");
        if self.rejected.insert(hash, reason).is_none() {
            self.rejected_order.push_back(hash);
            if self.rejected_order.len() > MAX_REMEMBERED_REJECTIONS
                && let Some(oldest) = self.rejected_order.pop_front()
            {
                self.rejected.remove(&oldest);
            }
        }
        receipt.rejected.push(Rejection {
            change: hash,
            reason,
            detail,
            recorded: true,
        });
    }

    fn hold_excluded(
        &mut self,
        envelope: Envelope,
        reason: Reason,
        detail: String,
        report_held: bool,
        receipt: &mut Receipt,
    ) {
        let hash = envelope.hash();
        let key = envelope.actor().key;
        let count = self.excluded_per_author.entry(key).or_insert(0);
        if *count >= MAX_EXCLUDED_PER_AUTHOR && reason != Reason::Equivocation {
            receipt.rejected.push(Rejection {
                change: hash,
                reason,
                detail: format!("{detail}; {MAX_EXCLUDED_PER_AUTHOR} excluded changes of this author are held already"),
                recorded: false,
            });
            return;
        }
        *count += 1;
        if envelope.fact.is_some() {
            self.dirty = true;
        }
        let number = self.doc_number(&envelope.doc);
        self.slots
            .insert((number, envelope.actor(), envelope.change.seq()), hash);
        receipt.rejected.push(Rejection {
            change: hash,
            reason,
            detail,
            recorded: false,
        });
        if report_held {
            receipt.held.push(envelope.clone());
        }
        self.excluded.insert(hash, Held { envelope, reason });
        self.heads_changed();
    }

    /// Parks an envelope until its prerequisites arrive, within the bounds: when they are exceeded, the oldest
    /// envelope of the author with the most waiting is dropped, authors who are not members first.
    fn park(
        &mut self,
        envelope: Envelope,
        missing: Vec<Prereq>,
        receipt: &mut Receipt,
        touched: &mut HashMap<ChangeHash, bool>,
    ) {
        let hash = envelope.hash();
        let key = envelope.actor().key;
        let bytes = envelope.change.raw_bytes().len();
        let number = self.doc_number(&envelope.doc);
        self.slots
            .insert((number, envelope.actor(), envelope.change.seq()), hash);
        for prereq in missing {
            self.waiters.entry(prereq).or_default().push(hash);
            self.waiter_entries += 1;
        }
        if self.waiter_entries > 4 * self.pending.len() + 4096 {
            // Envelopes dropped from pending (bounds, expiry) leave entries for prerequisites that may never come:
            // compact, so junk cannot grow this map without bound (amortized over the entries added).
            let pending = &self.pending;
            self.waiters.retain(|_, list| {
                list.retain(|h| pending.contains_key(h));
                !list.is_empty()
            });
            self.waiter_entries = self.waiters.values().map(Vec::len).sum();
        }
        let (count, queue) = self.pending_by_author.entry(key).or_default();
        let before = *count;
        *count += 1;
        queue.push_back(hash);
        if queue.len() > 2 * *count + 64 {
            let pending = &self.pending;
            queue.retain(|h| pending.contains_key(h));
        }
        self.pending_sizes.remove(&(before, key));
        self.pending_sizes.insert((before + 1, key));
        self.pending_bytes += bytes;
        self.pending.insert(
            hash,
            Waiting {
                envelope,
                bytes,
                since_ms: self.now_ms,
            },
        );
        let waiting_of = |replica: &Self, key: &[u8; 32]| {
            replica
                .pending_by_author
                .get(key)
                .map_or(0, |(count, _)| *count)
        };
        while self.pending.len() > MAX_PENDING
            || self.pending_bytes > MAX_PENDING_BYTES
            || waiting_of(self, &key) > MAX_PENDING_PER_AUTHOR
        {
            let victim_author = if waiting_of(self, &key) > MAX_PENDING_PER_AUTHOR {
                key
            } else {
                self.eviction_candidate()
            };
            let Some(victim) = self.oldest_pending_of(&victim_author) else {
                break;
            };
            let was = touched.get(&victim).copied().unwrap_or(true);
            if self.take_pending(&victim).is_some() {
                touched.entry(victim).or_insert(was);
                receipt.rejected.push(Rejection {
                    change: victim,
                    reason: Reason::PendingFull,
                    detail: "dropped from the pending set to stay within its bounds".into(),
                    recorded: false,
                });
            }
        }
    }

    /// The author whose oldest pending envelope goes first: the one with the most waiting among non-members, else
    /// among members.
    fn eviction_candidate(&mut self) -> [u8; 32] {
        let membership = self.membership();
        self.pending_sizes
            .iter()
            .rev()
            .find(|(_, author)| !membership.members.contains_key(author))
            .or_else(|| self.pending_sizes.iter().next_back())
            .map(|(_, author)| *author)
            .unwrap_or([0; 32])
    }

    /// The oldest envelope of `author` that still waits (stale queue entries are dropped on the way).
    fn oldest_pending_of(&mut self, author: &[u8; 32]) -> Option<ChangeHash> {
        let (_, queue) = self.pending_by_author.get_mut(author)?;
        while let Some(front) = queue.front().copied() {
            if self
                .pending
                .get(&front)
                .is_some_and(|w| w.envelope.actor().key == *author)
            {
                return Some(front);
            }
            queue.pop_front();
        }
        None
    }

    fn take_pending(&mut self, hash: &ChangeHash) -> Option<Waiting> {
        let waiting = self.pending.remove(hash)?;
        let key = waiting.envelope.actor().key;
        self.pending_bytes -= waiting.bytes;
        if let Some((count, _)) = self.pending_by_author.get_mut(&key) {
            let before = *count;
            *count -= 1;
            self.pending_sizes.remove(&(before, key));
            if *count == 0 {
                self.pending_by_author.remove(&key);
            } else {
                self.pending_sizes.insert((before - 1, key));
            }
        }
        let number = self.doc_numbers.get(&waiting.envelope.doc).copied();
        if let Some(number) = number {
            let slot = (
                number,
                waiting.envelope.actor(),
                waiting.envelope.change.seq(),
            );
            if self.slots.get(&slot) == Some(hash) {
                self.slots.remove(&slot);
            }
        }
        Some(waiting)
    }

    /// Drops envelopes that waited longer than `max_age_ms`; returns their hashes (for the store to forget).
    pub fn expire_pending(&mut self, now_ms: u64, max_age_ms: u64) -> Vec<ChangeHash> {
        self.now_ms = self.now_ms.max(now_ms);
        let old: Vec<ChangeHash> = self
            .pending
            .iter()
            .filter(|(_, w)| now_ms.saturating_sub(w.since_ms) > max_age_ms)
            .map(|(h, _)| *h)
            .collect();
        for hash in &old {
            self.take_pending(hash);
        }
        old
    }

    /// Recomputes the facts from the council changes held; when they take out an accepted change, rebuilds every
    /// document from the held set, else decides the excluded changes again (the new facts may let them in).
    fn recompute(&mut self, receipt: &mut Receipt) -> Result<(), Error> {
        self.recompute_round(receipt, 0)
    }

    fn recompute_round(&mut self, receipt: &mut Receipt, round: usize) -> Result<(), Error> {
        self.dirty = false;
        self.flush_deferred()?;
        let facts = self.compute_facts()?;
        let mut affected = self.violated_docs(&facts);
        if affected.is_empty() && facts == self.facts {
            return Ok(());
        }
        // Only documents holding a change the facts take out are rebuilt; the council document is everyone's
        // authority, so when it is touched every document is.
        if affected.contains(&COUNCIL) {
            affected = (0..self.docs.len() as u32).collect();
        }
        self.facts = facts;
        self.membership_cache.clear();
        let before: HashSet<ChangeHash> = self
            .known
            .iter()
            .filter(|(_, (number, _))| affected.contains(number))
            .map(|(hash, _)| *hash)
            .collect();
        let mut held: Vec<Envelope> = self.accepted_envelopes_of(&affected);
        for number in &affected {
            self.docs[*number as usize] = Arc::new(Automerge::new());
        }
        self.heads_changed();
        self.known
            .retain(|_, (number, _)| !affected.contains(number));
        self.chains
            .retain(|(number, _), _| !affected.contains(number));
        let excluded = std::mem::take(&mut self.excluded);
        self.heads_changed();
        self.excluded_per_author.clear();
        self.slots.retain(|_, h| self.pending.contains_key(h));
        held.extend(excluded.into_values().map(|h| h.envelope));
        let pending: Vec<ChangeHash> = self.pending.keys().copied().collect();
        for hash in pending {
            if let Some(waiting) = self.take_pending(&hash) {
                held.push(waiting.envelope);
            }
        }
        self.waiters.clear();
        self.waiter_entries = 0;
        held.sort_by_key(Envelope::hash);
        let mut inner = Receipt::default();
        let mut touched = HashMap::new();
        let mut queue = VecDeque::new();
        for envelope in held {
            if let Some(envelope) = self.admit(envelope, false, &mut inner) {
                queue.push_back(envelope);
            }
        }
        self.settle(queue, false, &mut touched, &mut inner)?;
        self.sweep_pending(&mut touched, &mut inner)?;
        self.flush_deferred()?;
        for envelope in inner.accepted {
            if !before.contains(&envelope.hash()) {
                receipt.accepted.push(envelope);
            }
        }
        // Only what changed is reported: a change accepted before and now out. What was excluded before and still
        // is was reported when it was first decided.
        for rejection in inner.rejected {
            if before.contains(&rejection.change) && !self.known.contains_key(&rejection.change) {
                receipt.withdrawn.push(rejection.clone());
                receipt.rejected.push(rejection);
            }
        }
        if self.dirty {
            // Deciding again can find an equivocation the first pass did not see (its proof was excluded then);
            // equivocations only grow, so this ends, and the bound is a guard.
            self.dirty = false;
            let facts = self.compute_facts()?;
            if (facts != self.facts || !self.violated_docs(&facts).is_empty()) && round < 8 {
                return self.recompute_round(receipt, round + 1);
            }
        }
        Ok(())
    }

    /// Decides again every waiting envelope whose prerequisites are all decided now. After a rebuild a waiting
    /// envelope can be parked on a prerequisite that the rebuild decided before the envelope was parked again
    /// (the held set is replayed in hash order, not causal order), and nothing would wake it.
    fn sweep_pending(
        &mut self,
        touched: &mut HashMap<ChangeHash, bool>,
        receipt: &mut Receipt,
    ) -> Result<(), Error> {
        loop {
            let waiting: Vec<Envelope> =
                self.pending.values().map(|w| w.envelope.clone()).collect();
            let ready: Vec<ChangeHash> = waiting
                .iter()
                .filter(|e| !matches!(self.readiness(e), Readiness::Missing(_)))
                .map(Envelope::hash)
                .collect();
            if ready.is_empty() {
                return Ok(());
            }
            let mut queue = VecDeque::new();
            for hash in ready {
                if let Some(waiting) = self.take_pending(&hash) {
                    touched.entry(hash).or_insert(true);
                    queue.push_back(waiting.envelope);
                }
            }
            self.settle(queue, false, touched, receipt)?;
        }
    }

    /// The documents where `facts` may take out a change that is accepted now (an over-approximation: council
    /// changes a revocation covers by depending on them count, so the answer only costs a rebuild that was not
    /// needed).
    fn violated_docs(&self, facts: &Facts) -> BTreeSet<u32> {
        let mut council_changes: Option<Vec<Change>> = None;
        let mut out = BTreeSet::new();
        for ((number, actor), link) in &self.chains {
            let doc = &self.doc_ids[*number as usize];
            let forked = self
                .equivocations
                .get(&(*number, *actor))
                .is_some_and(|fork| link.seq >= fork.seq);
            let revoked = facts
                .revocations
                .get(&actor.key)
                .is_some_and(|revocations| {
                    revocations.iter().any(|r| {
                        let number_covered = r.number(doc, actor.epoch);
                        if link.seq <= number_covered {
                            return false;
                        }
                        if *number != COUNCIL {
                            return true;
                        }
                        // In the council a revocation also covers what it depends on, and effective revocations stand.
                        let id = actor.to_actor_id();
                        council_changes
                            .get_or_insert_with(|| self.docs[COUNCIL as usize].get_changes(&[]))
                            .iter()
                            .filter(|c| *c.actor_id() == id && c.seq() > number_covered)
                            .any(|c| {
                                let hash = c.hash();
                                !r.ancestors.contains(&hash) && !facts.effective.contains(&hash)
                            })
                    })
                });
            if facts.void.contains(&actor.key) || forked || revoked {
                out.insert(*number);
            }
        }
        out
    }

    /// Accepted changes of the documents numbered in `numbers`, as envelopes without their signatures.
    fn accepted_envelopes_of(&self, numbers: &BTreeSet<u32>) -> Vec<Envelope> {
        let mut out = Vec::new();
        for number in numbers {
            out.extend(unsigned_envelopes(&self.docs[*number as usize]));
        }
        out
    }

    /// The facts of the council changes held (accepted or excluded): decided again, without facts, on a scratch
    /// replica, so that what the facts themselves take out still counts as stated.
    fn compute_facts(&self) -> Result<Facts, Error> {
        let mut council: Vec<Envelope> = unsigned_envelopes(&self.docs[COUNCIL as usize]).collect();
        council.extend(
            self.excluded
                .values()
                .filter(|h| h.envelope.doc == DocId::Council)
                .map(|h| h.envelope.clone()),
        );
        if !council.iter().any(|e| e.fact.is_some()) {
            return Ok(Facts::default());
        }
        let mut scratch = Replica::new();
        scratch.federation = self.federation;
        scratch.equivocations = self
            .equivocations
            .iter()
            .filter(|((n, _), _)| *n == COUNCIL)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        council.sort_by_key(Envelope::hash);
        let mut receipt = Receipt::default();
        let mut touched = HashMap::new();
        let queue: VecDeque<Envelope> = council
            .into_iter()
            .filter_map(|e| scratch.admit(e, false, &mut receipt))
            .collect();
        scratch.settle(queue, false, &mut touched, &mut receipt)?;
        let valid = removal::by_hash(receipt.accepted);
        Ok(removal::facts(&valid))
    }

    /// Re-applies envelopes that were held before (from the store), deciding them without checking signatures again.
    pub fn restore(&mut self, envelopes: Vec<Envelope>) -> Result<(), Error> {
        let mut receipt = Receipt::default();
        let fresh = self.screen(envelopes, &mut receipt);
        self.run(fresh, false, &mut receipt)
    }

    /// Restores rejections recorded earlier.
    pub fn restore_rejected(&mut self, rejected: impl IntoIterator<Item = (ChangeHash, Reason)>) {
        for (hash, reason) in rejected {
            if self.rejected.insert(hash, reason).is_none() {
                self.rejected_order.push_back(hash);
            }
        }
    }

    /// Restores envelopes that were waiting for dependencies, then decides any that became ready.
    pub fn restore_pending(&mut self, pending: Vec<Envelope>) -> Result<Receipt, Error> {
        let mut receipt = Receipt::default();
        if self.federation.is_some() {
            let fresh = self.screen(pending, &mut receipt);
            self.run(fresh, true, &mut receipt)?;
        }
        receipt.pending = self.pending.len();
        Ok(receipt)
    }

    pub(crate) fn state_parts(&self) -> StateParts<'_> {
        StateParts {
            federation: self.federation,
            doc_ids: &self.doc_ids,
            docs: &self.docs,
            known: &self.known,
            chains: self
                .chains
                .iter()
                .map(|((n, a), l)| ((*n, *a), (l.seq, l.max_op)))
                .collect(),
            excluded: self.excluded.values().map(|h| &h.envelope).collect(),
            equivocations: self.equivocations.values().collect(),
        }
    }

    pub(crate) fn from_state(state: OwnedState) -> Result<Self, Error> {
        let mut replica = Replica::new();
        replica.federation = state.federation;
        for (doc_id, doc) in state.docs {
            let number = replica.doc_number(&doc_id);
            replica.docs[number as usize] = Arc::new(doc);
        }
        replica.heads_changed();
        replica.known = state.known;
        replica.chains = state
            .chains
            .into_iter()
            .map(|(k, (seq, max_op))| (k, Link { seq, max_op }))
            .collect();
        for equivocation in state.equivocations {
            let number = replica.doc_number(&equivocation.doc);
            replica
                .equivocations
                .insert((number, equivocation.actor), equivocation);
        }
        replica.facts = replica.compute_facts()?;
        let mut receipt = Receipt::default();
        replica.run(state.excluded, false, &mut receipt)?;
        Ok(replica)
    }
}

/// How [`Replica::craft_with`] deviates from an honest write.
#[derive(Clone, Debug, Default)]
pub struct Craft {
    /// Auth heads to name (default: the current council heads).
    pub auth_heads: Option<Vec<ChangeHash>>,
    /// The state of the document to build on (default: the current one; `Some(vec![])` is the empty document).
    pub doc_heads: Option<Vec<ChangeHash>>,
    /// The actor epoch (default 0).
    pub epoch: u32,
}

/// Borrowed parts of a replica for the snapshot encoder.
pub(crate) struct StateParts<'a> {
    pub federation: Option<FederationId>,
    pub doc_ids: &'a [DocId],
    pub docs: &'a [Arc<Automerge>],
    pub known: &'a HashMap<ChangeHash, (u32, u64)>,
    pub chains: BTreeMap<(u32, Actor), (u64, u64)>,
    pub excluded: Vec<&'a Envelope>,
    pub equivocations: Vec<&'a Equivocation>,
}

/// Decoded parts of a snapshot.
pub(crate) struct OwnedState {
    pub federation: Option<FederationId>,
    pub docs: Vec<(DocId, Automerge)>,
    pub known: HashMap<ChangeHash, (u32, u64)>,
    pub chains: Vec<((u32, Actor), (u64, u64))>,
    pub excluded: Vec<Envelope>,
    pub equivocations: Vec<Equivocation>,
}

pub use crate::state::ReplicaState;

/// The accepted changes of `doc` as envelopes without signatures (only the store keeps those): what a recomputation
/// decides again. Every accepted change carries its context, so none is lost here but by a bug, which is logged.
fn unsigned_envelopes(doc: &Automerge) -> impl Iterator<Item = Envelope> {
    doc.get_changes(&[])
        .into_iter()
        .filter_map(|change| match Envelope::from_parts([0; 64], change.raw_bytes()) {
            Ok(envelope) => Some(envelope),
            Err(error) => {
                tracing::error!(change = %change.hash(), %error, "an accepted change lost its context");
                None
            }
        })
}

/// Verifies signatures in batches (in parallel across cores); bad ones become rejections. With a `cache`, results
/// it holds for the exact (key, digest, signature) are used and the others are verified and stored.
/// The heads of `doc` once `changes` are applied (each of their dependencies is in `doc` or among them): the
/// document's heads and the changes, less every change one of them depends on; sorted.
fn heads_after(doc: &Automerge, changes: &[Change]) -> Vec<ChangeHash> {
    let deps: HashSet<&ChangeHash> = changes.iter().flat_map(Change::deps).collect();
    let mut heads: Vec<ChangeHash> = doc
        .get_heads()
        .into_iter()
        .chain(changes.iter().map(Change::hash))
        .filter(|h| !deps.contains(h))
        .collect();
    heads.sort();
    heads.dedup();
    heads
}

/// The changes of `doc` that are not ancestors of `have` (its own changes among the heads given), with their
/// dependencies, each after its dependencies.
fn changes_not_under(doc: &Automerge, have: &[ChangeHash]) -> Vec<(ChangeHash, Vec<ChangeHash>)> {
    doc.get_changes_meta(have)
        .into_iter()
        .map(|m| (m.hash, m.deps))
        .collect()
}

/// The heads of `doc`, sorted.
fn sorted_heads(doc: &Automerge) -> Vec<ChangeHash> {
    let mut heads = doc.get_heads();
    heads.sort();
    heads
}

fn verify_signatures(
    federation: &FederationId,
    envelopes: Vec<Envelope>,
    cache: Option<&SignatureCache>,
    known_authors: &HashMap<[u8; 32], PublicKey>,
    receipt: &mut Receipt,
) -> Vec<Envelope> {
    let digests: Vec<[u8; 32]> = envelopes.iter().map(|e| e.digest(federation)).collect();
    // Few authors sign many envelopes: read (decompress) each author's key once per call, unless the replica
    // remembers it (screening just looked every author up).
    let mut keys: HashMap<[u8; 32], PublicKey> = HashMap::new();
    let authors: Vec<PublicKey> = envelopes
        .iter()
        .map(|e| {
            let key = e.actor().key;
            match known_authors.get(&key) {
                Some(author) => *author,
                None => *keys
                    .entry(key)
                    .or_insert_with(|| e.author().expect("screened by Replica::screen")),
            }
        })
        .collect();
    let cache_key = |i: usize| (*authors[i].as_bytes(), digests[i], envelopes[i].signature);
    let mut validity: Vec<Option<bool>> = match cache {
        Some(cache) => {
            let checked = cache.lock();
            (0..envelopes.len())
                .map(|i| checked.get(&cache_key(i)).copied())
                .collect()
        }
        None => vec![None; envelopes.len()],
    };
    let unchecked: Vec<usize> = (0..envelopes.len())
        .filter(|i| validity[*i].is_none())
        .collect();
    let items: Vec<(PublicKey, &[u8], [u8; 64])> = unchecked
        .iter()
        .map(|i| (authors[*i], digests[*i].as_slice(), envelopes[*i].signature))
        .collect();
    // Most sync responses carry a batch or less: verify those on this thread, since spawning one (and asking the OS
    // how many cores there are) costs more than the batch itself.
    let verified: Vec<bool> = if items.len() <= SIGNATURE_BATCH {
        verify_chunk(&items)
    } else {
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .max(1);
        let per_thread = items.len().div_ceil(threads).max(SIGNATURE_BATCH);
        std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .chunks(per_thread)
                .map(|chunk| scope.spawn(move || verify_chunk(chunk)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("signature verification does not panic"))
                .collect()
        })
    };
    if let Some(cache) = cache
        && !unchecked.is_empty()
    {
        let mut checked = cache.lock();
        if checked.len() + unchecked.len() > SIGNATURE_CACHE_ENTRIES {
            checked.clear();
        }
        for (i, valid) in unchecked.iter().zip(&verified) {
            checked.insert(cache_key(*i), *valid);
        }
    }
    for (i, valid) in unchecked.into_iter().zip(verified) {
        validity[i] = Some(valid);
    }
    let mut good = Vec::with_capacity(envelopes.len());
    for ((envelope, author), valid) in envelopes.into_iter().zip(authors).zip(validity) {
        if valid == Some(true) {
            good.push(envelope);
        } else {
            let author = author.to_hex();
            receipt.rejected.push(Rejection {
                change: envelope.hash(),
                reason: Reason::BadSignature,
                detail: format!(
                    "signature by {author} over {} does not verify",
                    envelope.doc
                ),
                recorded: false,
            });
        }
    }
    good
}

fn verify_chunk(items: &[(PublicKey, &[u8], [u8; 64])]) -> Vec<bool> {
    items
        .chunks(SIGNATURE_BATCH)
        .flat_map(|batch| {
            if identity::verify_batch(batch) {
                vec![true; batch.len()]
            } else {
                identity::verify_each(batch)
            }
        })
        .collect()
}

fn check_existence(doc: &Automerge, op: &Op, key: &str) -> Result<(), Error> {
    let exists = doc.get(ROOT, key)?.is_some();
    let must_exist = matches!(
        op,
        Op::UpdateKeyResult { .. } | Op::SetExperimentStatus { .. }
    );
    let must_be_new = matches!(
        op,
        Op::AddMember(_)
            | Op::RevokeMember { .. }
            | Op::AddObjective(_)
            | Op::AddKeyResult(_)
            | Op::NewExperiment(_)
            | Op::AddLearning(_)
    );
    if must_exist && !exists {
        return Err(Error::Conflict(format!(
            "{key} does not exist in this pod's document"
        )));
    }
    if must_be_new && exists {
        return Err(Error::Conflict(format!("{key} already exists")));
    }
    Ok(())
}

fn with_author(error: Error, author: &PublicKey) -> Error {
    match error {
        Error::NotAllowed { doc, reason, .. } => Error::NotAllowed {
            author: author.to_hex(),
            doc,
            reason,
        },
        other => other,
    }
}
