//! One node's registry state and the acceptance rule.
//!
//! [`Replica::receive`] takes a batch of envelopes from anywhere (bundle, network, simulator) and decides each one
//! with the same pure rule: the signature verifies (batch-verified), the dependencies and auth heads are known
//! (otherwise the envelope waits, bounded), none of them was rejected, and as of its auth heads the author is an
//! unrevoked member whose role may write the envelope's document. Accepted changes are applied per document in one
//! `apply_changes` call. The caller persists what the returned [`Receipt`] lists.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use automerge::transaction::CommitOptions;
use automerge::{ActorId, Automerge, ChangeHash, ROOT, ReadDoc};
use identity::{Keypair, PublicKey};
use model::{DocId, RegistryView};

use crate::acceptance::{Membership, Reason};
use crate::codec::{Reader, write_varint};
use crate::envelope::Envelope;
use crate::ops::Op;
use crate::{Error, FederationId, view};

/// Most envelopes that may wait for their dependencies at once.
pub const MAX_PENDING: usize = 100_000;
/// Distinct auth-head sets whose membership is kept computed.
const MEMBERSHIP_CACHE_ENTRIES: usize = 4096;
/// Distinct author keys kept checked (decompressing a key costs about as much as a tenth of a signature check).
const AUTHOR_CACHE_ENTRIES: usize = 4096;
/// Signatures verified per batch; a failing batch is re-verified one by one, so keep it modest.
const SIGNATURE_BATCH: usize = 512;
const COUNCIL: u32 = 0;

/// A change that was not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The change hash (or, for undecodable bytes, nothing: see the bundle reader).
    pub change: ChangeHash,
    /// The reason code.
    pub reason: Reason,
    /// A sentence for humans.
    pub detail: String,
    /// Whether this is a decision about the change itself, which the replica remembers by hash (and the store
    /// persists). `false` when only this copy was refused (a bad signature, missing auth heads, a full pending
    /// queue): anyone can send a broken copy of a genuine change, so the genuine copy must still be accepted later.
    pub recorded: bool,
}

/// What a [`Replica::receive`] call did; the caller persists `accepted`, `rejected` and the pending changes.
#[derive(Debug, Default)]
pub struct Receipt {
    /// Newly accepted envelopes, each after its dependencies.
    pub accepted: Vec<Envelope>,
    /// Newly rejected changes.
    pub rejected: Vec<Rejection>,
    /// Envelopes already held (accepted or waiting).
    pub duplicates: usize,
    /// Envelopes that now wait for dependencies and were not waiting before.
    pub pending_added: Vec<Envelope>,
    /// Previously waiting changes that were decided by this call.
    pub pending_resolved: Vec<ChangeHash>,
    /// Envelopes waiting after this call.
    pub pending: usize,
}

/// The registry documents of one node, with what it accepted, rejected and holds pending.
pub struct Replica {
    federation: Option<FederationId>,
    doc_ids: Vec<DocId>,
    doc_numbers: HashMap<DocId, u32>,
    docs: Vec<Automerge>,
    /// Accepted changes and the number of their document.
    known: HashMap<ChangeHash, u32>,
    /// Last accepted sequence number per (document, author).
    last_seq: HashMap<(u32, [u8; 32]), u64>,
    rejected: HashMap<ChangeHash, Reason>,
    pending: HashMap<ChangeHash, Envelope>,
    membership_cache: HashMap<Vec<ChangeHash>, Arc<Membership>>,
    /// Actor ids already found to be valid ed25519 keys, so that each is checked once rather than per envelope.
    author_cache: HashMap<[u8; 32], PublicKey>,
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
            last_seq: HashMap::new(),
            rejected: HashMap::new(),
            pending: HashMap::new(),
            membership_cache: HashMap::new(),
            author_cache: HashMap::new(),
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

    /// Whether nothing was accepted yet.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Whether the change was accepted.
    pub fn contains(&self, hash: &ChangeHash) -> bool {
        self.known.contains_key(hash)
    }

    /// The reason a change was rejected, if it was.
    pub fn rejection(&self, hash: &ChangeHash) -> Option<Reason> {
        self.rejected.get(hash).copied()
    }

    /// Envelopes waiting for dependencies.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Heads of every document, sorted: equal on replicas that hold the same changes.
    pub fn heads(&self) -> Vec<ChangeHash> {
        let mut heads: Vec<ChangeHash> = self.docs.iter().flat_map(|d| d.get_heads()).collect();
        heads.sort();
        heads
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
            .zip(self.docs.iter().cloned())
            .filter(|(_, d)| !d.get_heads().is_empty())
            .collect();
        view::build(self.federation, &docs)
    }

    /// The typed view of the council document alone (members, roles, objectives, approvals, budgets): what a
    /// node needs to gate connections, at the cost of one document rather than the whole registry.
    pub fn council_view(&self) -> RegistryView {
        let docs: BTreeMap<DocId, Automerge> =
            std::iter::once((DocId::Council, self.docs[COUNCIL as usize].clone()))
                .filter(|(_, d)| !d.get_heads().is_empty())
                .collect();
        view::build(self.federation, &docs)
    }

    /// Membership as of the current council heads.
    pub fn membership(&mut self) -> Arc<Membership> {
        let heads = self.docs[COUNCIL as usize].get_heads();
        self.membership_at(&heads)
    }

    /// Hashes of accepted changes that are not ancestors of `heads` (heads of any document; unknown ones ignored),
    /// each after its dependencies.
    pub fn changes_since(&self, heads: &[ChangeHash]) -> Vec<ChangeHash> {
        let mut out = Vec::new();
        for (number, doc) in self.docs.iter().enumerate() {
            let have: Vec<ChangeHash> = heads
                .iter()
                .filter(|h| self.known.get(h) == Some(&(number as u32)))
                .copied()
                .collect();
            out.extend(doc.get_changes_meta(&have).into_iter().map(|m| m.hash));
        }
        out
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
                .filter(|h| self.known.get(h) == Some(&(number as u32)))
                .copied()
                .collect();
            out.extend(
                doc.get_changes_meta(&have)
                    .into_iter()
                    .map(|m| (m.hash, m.deps)),
            );
        }
        out
    }

    /// Envelopes waiting for dependencies.
    pub fn pending_envelopes(&self) -> impl Iterator<Item = &Envelope> {
        self.pending.values()
    }

    /// Whether a change waits for dependencies.
    pub fn is_pending(&self, hash: &ChangeHash) -> bool {
        self.pending.contains_key(hash)
    }

    fn doc_number(&mut self, doc: &DocId) -> u32 {
        if let Some(number) = self.doc_numbers.get(doc) {
            return *number;
        }
        let number = self.docs.len() as u32;
        self.doc_ids.push(doc.clone());
        self.doc_numbers.insert(doc.clone(), number);
        self.docs.push(Automerge::new());
        number
    }

    /// [`Envelope::author`], remembered per actor id.
    fn author_of(&mut self, envelope: &Envelope) -> Option<PublicKey> {
        let bytes: [u8; 32] = envelope.change.actor_id().to_bytes().try_into().ok()?;
        if let Some(author) = self.author_cache.get(&bytes) {
            return Some(*author);
        }
        let author = envelope.author()?;
        if self.author_cache.len() >= AUTHOR_CACHE_ENTRIES {
            self.author_cache.clear();
        }
        self.author_cache.insert(bytes, author);
        Some(author)
    }

    fn membership_at(&mut self, heads: &[ChangeHash]) -> Arc<Membership> {
        let mut key = heads.to_vec();
        key.sort();
        key.dedup();
        if let Some(cached) = self.membership_cache.get(&key) {
            return Arc::clone(cached);
        }
        let council = &self.docs[COUNCIL as usize];
        let membership = if key.is_empty() {
            Arc::new(Membership::default())
        } else {
            Arc::new(view::membership(&view::root(council, Some(&key))))
        };
        if self.membership_cache.len() >= MEMBERSHIP_CACHE_ENTRIES {
            self.membership_cache.clear();
        }
        self.membership_cache.insert(key, Arc::clone(&membership));
        membership
    }

    /// Writes `op` as the key's author, signs it and returns the envelope to persist and share.
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
        let membership = self.membership_at(&council_heads);
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
        let doc = &mut self.docs[number as usize];
        doc.set_actor(ActorId::from(author.as_bytes().as_slice()));
        let mut tx = doc.transaction();
        op.apply(&mut tx, &target.key)?;
        let (committed, _) =
            tx.commit_with(CommitOptions::default().with_time(now_ms.div_euclid(1000)));
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
        if genesis {
            self.federation = Some(FederationId(hash.0));
        }
        let federation = self.federation.expect("set above or checked at entry");
        self.known.insert(hash, number);
        self.last_seq
            .insert((number, *author.as_bytes()), change.seq());
        Ok(Envelope::sign(
            &federation,
            target.doc,
            change,
            council_heads,
            keypair,
        ))
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
        let mut copy = self
            .doc_numbers
            .get(doc)
            .map(|n| self.docs[*n as usize].clone())
            .unwrap_or_default();
        copy.set_actor(ActorId::from(keypair.public().as_bytes().as_slice()));
        let mut tx = copy.transaction();
        op.apply(&mut tx, &target.key)?;
        tx.commit_with(CommitOptions::default().with_time(now_ms.div_euclid(1000)));
        let change = copy
            .get_last_local_change()
            .expect("a change was just committed by this actor");
        let council_heads = self.docs[COUNCIL as usize].get_heads();
        Ok(Envelope::sign(
            &federation,
            doc.clone(),
            change,
            council_heads,
            keypair,
        ))
    }

    /// Fault injection for the simulator's self-test: this replica stops checking signatures, so a scenario with a
    /// hostile peer must catch it through its invariants. Never called by the node.
    #[doc(hidden)]
    pub fn insecure_skip_signature_checks(&mut self) {
        self.skip_signature_checks = true;
    }

    /// Decides a batch of received envelopes by the acceptance rule and applies the accepted ones.
    pub fn receive(&mut self, envelopes: Vec<Envelope>) -> Result<Receipt, Error> {
        let federation = self.federation.ok_or(Error::NoFederation)?;
        let mut receipt = Receipt::default();
        let fresh = self.screen(envelopes, &mut receipt);
        let verified = if self.skip_signature_checks {
            fresh
        } else {
            verify_signatures(&federation, fresh, &mut receipt)
        };
        let mut added = HashSet::new();
        for envelope in verified {
            if self.pending.len() >= MAX_PENDING {
                receipt.rejected.push(Rejection {
                    change: envelope.hash(),
                    reason: Reason::PendingFull,
                    detail: format!("{MAX_PENDING} changes already wait for their dependencies"),
                    recorded: false,
                });
                continue;
            }
            added.insert(envelope.hash());
            self.pending.insert(envelope.hash(), envelope);
        }
        let decided = self.resolve(&mut receipt)?;
        for hash in decided {
            if !added.contains(&hash) {
                receipt.pending_resolved.push(hash);
            }
        }
        receipt.pending_added = added
            .iter()
            .filter_map(|hash| self.pending.get(hash).cloned())
            .collect();
        receipt.pending = self.pending.len();
        Ok(receipt)
    }

    /// Drops duplicates, earlier rejections and structurally invalid envelopes.
    fn screen(&mut self, envelopes: Vec<Envelope>, receipt: &mut Receipt) -> Vec<Envelope> {
        let mut seen = HashSet::new();
        let mut fresh = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            let hash = envelope.hash();
            if self.known.contains_key(&hash)
                || self.pending.contains_key(&hash)
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
            } else {
                let author = self.author_of(&envelope);
                match structure(&envelope, author) {
                    Ok(()) => fresh.push(envelope),
                    Err(detail) => receipt.rejected.push(Rejection {
                        change: hash,
                        reason: Reason::Malformed,
                        detail,
                        recorded: false,
                    }),
                }
            }
        }
        fresh
    }

    /// Decides every pending envelope whose dependencies are now known, in dependency order; returns the hashes
    /// it decided.
    fn resolve(&mut self, receipt: &mut Receipt) -> Result<Vec<ChangeHash>, Error> {
        let mut waiting: HashMap<ChangeHash, Vec<ChangeHash>> = HashMap::new();
        let mut missing: HashMap<ChangeHash, usize> = HashMap::new();
        let mut ready = VecDeque::new();
        let mut doomed = Vec::new();
        // Sorted, so the order of acceptance (and so of everything downstream) is the same in every run.
        let mut order: Vec<(&ChangeHash, &Envelope)> = self.pending.iter().collect();
        order.sort_by_key(|(hash, _)| **hash);
        for (hash, envelope) in order {
            let mut count = 0;
            for dep in prerequisites(envelope) {
                if self.known.contains_key(&dep) {
                    continue;
                }
                if self.rejected.contains_key(&dep) {
                    doomed.push((*hash, dep));
                }
                count += 1;
                waiting.entry(dep).or_default().push(*hash);
            }
            missing.insert(*hash, count);
            if count == 0 {
                ready.push_back(*hash);
            }
        }
        let mut decided = Vec::new();
        let mut deferred: BTreeMap<u32, Vec<automerge::Change>> = BTreeMap::new();
        for (hash, dep) in doomed {
            self.reject_cascade(hash, dep, &waiting, receipt, &mut decided);
        }
        while let Some(hash) = ready.pop_front() {
            let Some(envelope) = self.pending.remove(&hash) else {
                continue;
            };
            decided.push(hash);
            match self.decide(&envelope) {
                Ok(number) => {
                    self.accept(number, &envelope, &mut deferred)?;
                    for dependent in waiting.get(&hash).into_iter().flatten() {
                        if let Some(count) = missing.get_mut(dependent) {
                            *count -= 1;
                            if *count == 0 && self.pending.contains_key(dependent) {
                                ready.push_back(*dependent);
                            }
                        }
                    }
                    receipt.accepted.push(envelope);
                }
                Err((reason, detail)) => {
                    tracing::debug!(change = %hash, reason = reason.code(), %detail, "change rejected");
                    self.rejected.insert(hash, reason);
                    receipt.rejected.push(Rejection {
                        change: hash,
                        reason,
                        detail,
                        recorded: true,
                    });
                    for dependent in waiting.get(&hash).cloned().unwrap_or_default() {
                        self.reject_cascade(dependent, hash, &waiting, receipt, &mut decided);
                    }
                }
            }
        }
        for (number, changes) in deferred {
            self.docs[number as usize].apply_changes(changes)?;
        }
        Ok(decided)
    }

    /// Rejects `hash` (which depends on rejected `cause`) and everything pending that depends on it.
    fn reject_cascade(
        &mut self,
        hash: ChangeHash,
        cause: ChangeHash,
        waiting: &HashMap<ChangeHash, Vec<ChangeHash>>,
        receipt: &mut Receipt,
        decided: &mut Vec<ChangeHash>,
    ) {
        let mut stack = vec![(hash, cause)];
        while let Some((hash, cause)) = stack.pop() {
            if self.pending.remove(&hash).is_none() {
                continue;
            }
            decided.push(hash);
            self.rejected.insert(hash, Reason::DependsOnRejected);
            receipt.rejected.push(Rejection {
                change: hash,
                reason: Reason::DependsOnRejected,
                detail: format!("depends on rejected change {cause}"),
                recorded: true,
            });
            for dependent in waiting.get(&hash).into_iter().flatten() {
                stack.push((*dependent, hash));
            }
        }
    }

    /// The acceptance rule for one envelope whose dependencies and auth heads are all accepted.
    fn decide(&mut self, envelope: &Envelope) -> Result<u32, (Reason, String)> {
        let hash = envelope.hash();
        let author = self
            .author_of(envelope)
            .ok_or((Reason::Malformed, "actor is not an ed25519 key".to_owned()))?;
        let number = self.doc_number(&envelope.doc);
        if envelope.doc == DocId::Council && envelope.change.deps().is_empty() {
            return if self.federation.map(|f| f.0) == Some(hash.0) {
                Ok(number)
            } else {
                Err((
                    Reason::UnknownAuthor,
                    "a council change without history that is not this federation's genesis".into(),
                ))
            };
        }
        for dep in envelope.change.deps() {
            if self.known.get(dep) != Some(&number) {
                return Err((
                    Reason::Malformed,
                    format!("dependency {dep} belongs to another document"),
                ));
            }
        }
        for head in &envelope.auth_heads {
            if self.known.get(head) != Some(&COUNCIL) {
                return Err((
                    Reason::Malformed,
                    format!("auth head {head} is not a council change"),
                ));
            }
        }
        self.membership_at(envelope.effective_auth_heads())
            .authorize(author.as_bytes(), &envelope.doc)?;
        let last = self
            .last_seq
            .get(&(number, *author.as_bytes()))
            .copied()
            .unwrap_or(0);
        if envelope.change.seq() != last + 1 {
            return Err((
                Reason::Malformed,
                format!(
                    "sequence number {} of {author} in {} does not follow {last}: a fork or a gap",
                    envelope.change.seq(),
                    envelope.doc
                ),
            ));
        }
        Ok(number)
    }

    fn accept(
        &mut self,
        number: u32,
        envelope: &Envelope,
        deferred: &mut BTreeMap<u32, Vec<automerge::Change>>,
    ) -> Result<(), Error> {
        let author = self.author_of(envelope).expect("checked by decide");
        self.known.insert(envelope.hash(), number);
        self.last_seq
            .insert((number, *author.as_bytes()), envelope.change.seq());
        if number == COUNCIL {
            // Later council changes are authorized against council states that include this one: apply now.
            self.docs[COUNCIL as usize].apply_changes([envelope.change.clone()])?;
        } else {
            deferred
                .entry(number)
                .or_default()
                .push(envelope.change.clone());
        }
        Ok(())
    }

    /// Re-applies envelopes that were accepted before (from the store), without deciding them again.
    pub fn restore(&mut self, envelopes: Vec<Envelope>) -> Result<(), Error> {
        let mut by_doc: BTreeMap<u32, Vec<automerge::Change>> = BTreeMap::new();
        for envelope in envelopes {
            let number = self.doc_number(&envelope.doc);
            if let Some(author) = self.author_of(&envelope) {
                self.last_seq
                    .insert((number, *author.as_bytes()), envelope.change.seq());
            }
            self.known.insert(envelope.hash(), number);
            by_doc.entry(number).or_default().push(envelope.change);
        }
        for (number, changes) in by_doc {
            self.docs[number as usize].apply_changes(changes)?;
        }
        self.membership_cache.clear();
        Ok(())
    }

    /// Restores rejections recorded earlier.
    pub fn restore_rejected(&mut self, rejected: impl IntoIterator<Item = (ChangeHash, Reason)>) {
        self.rejected.extend(rejected);
    }

    /// Restores envelopes that were waiting for dependencies, then decides any that became ready.
    pub fn restore_pending(&mut self, pending: Vec<Envelope>) -> Result<Receipt, Error> {
        for envelope in pending {
            self.pending.insert(envelope.hash(), envelope);
        }
        let mut receipt = Receipt::default();
        if self.federation.is_some() {
            receipt.pending_resolved = self.resolve(&mut receipt)?;
        }
        receipt.pending = self.pending.len();
        Ok(receipt)
    }
}

/// A compact, self-contained image of a replica's accepted state (documents, accepted hashes, sequence numbers),
/// so that opening a replica with many changes loads documents instead of replaying changes.
pub struct ReplicaState;

impl ReplicaState {
    const MAGIC: &'static [u8; 8] = b"GMSNAP01";

    /// Encodes the accepted state of `replica`.
    pub fn encode(replica: &Replica) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(Self::MAGIC);
        out.push(u8::from(replica.federation.is_some()));
        out.extend_from_slice(&replica.federation.map(|f| f.0).unwrap_or([0; 32]));
        write_varint(&mut out, replica.docs.len() as u64);
        for (id, doc) in replica.doc_ids.iter().zip(&replica.docs) {
            let name = id.to_string();
            write_varint(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            let saved = doc.save();
            write_varint(&mut out, saved.len() as u64);
            out.extend_from_slice(&saved);
        }
        write_varint(&mut out, replica.known.len() as u64);
        let mut known: Vec<_> = replica.known.iter().collect();
        known.sort();
        for (hash, number) in known {
            out.extend_from_slice(&hash.0);
            write_varint(&mut out, u64::from(*number));
        }
        write_varint(&mut out, replica.last_seq.len() as u64);
        let mut seqs: Vec<_> = replica.last_seq.iter().collect();
        seqs.sort();
        for ((number, author), seq) in seqs {
            write_varint(&mut out, u64::from(*number));
            out.extend_from_slice(author);
            write_varint(&mut out, *seq);
        }
        out
    }

    /// Decodes a state written by [`ReplicaState::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Replica, Error> {
        let bad = |detail: String| Error::Snapshot {
            doc: "snapshot".into(),
            detail,
        };
        let mut reader = Reader::new(bytes);
        let magic: [u8; 8] = reader.array("magic").map_err(|e| bad(e.to_string()))?;
        if &magic != Self::MAGIC {
            return Err(bad("wrong magic".into()));
        }
        let mut replica = Replica::new();
        let has_federation = reader.take(1, "flag").map_err(|e| bad(e.to_string()))?[0] == 1;
        let federation: [u8; 32] = reader.array("federation").map_err(|e| bad(e.to_string()))?;
        replica.federation = has_federation.then_some(FederationId(federation));
        let doc_count = reader
            .varint_at_most(1 << 20, "doc count")
            .map_err(|e| bad(e.to_string()))?;
        for _ in 0..doc_count {
            let len = reader
                .varint_at_most(256, "doc id")
                .map_err(|e| bad(e.to_string()))?;
            let name =
                std::str::from_utf8(reader.take(len, "doc id").map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            let doc_id: DocId = name.parse()?;
            let len = reader
                .varint_at_most(usize::MAX, "doc")
                .map_err(|e| bad(e.to_string()))?;
            let saved = reader.take(len, "doc").map_err(|e| bad(e.to_string()))?;
            let number = replica.doc_number(&doc_id);
            replica.docs[number as usize] =
                Automerge::load(saved).map_err(|e| Error::Snapshot {
                    doc: doc_id.to_string(),
                    detail: e.to_string(),
                })?;
        }
        let known = reader
            .varint_at_most(usize::MAX, "known")
            .map_err(|e| bad(e.to_string()))?;
        replica.known.reserve(known);
        for _ in 0..known {
            let hash: [u8; 32] = reader.array("hash").map_err(|e| bad(e.to_string()))?;
            let number = reader
                .varint_at_most(u32::MAX as usize, "doc number")
                .map_err(|e| bad(e.to_string()))?;
            replica.known.insert(ChangeHash(hash), number as u32);
        }
        let seqs = reader
            .varint_at_most(usize::MAX, "seqs")
            .map_err(|e| bad(e.to_string()))?;
        for _ in 0..seqs {
            let number = reader
                .varint_at_most(u32::MAX as usize, "doc number")
                .map_err(|e| bad(e.to_string()))?;
            let author: [u8; 32] = reader.array("author").map_err(|e| bad(e.to_string()))?;
            let seq = reader.varint("seq").map_err(|e| bad(e.to_string()))?;
            replica.last_seq.insert((number as u32, author), seq);
        }
        Ok(replica)
    }
}

/// Hashes an envelope needs accepted before it can be decided: its dependencies and auth heads.
fn prerequisites(envelope: &Envelope) -> Vec<ChangeHash> {
    let mut all: Vec<ChangeHash> = envelope
        .change
        .deps()
        .iter()
        .chain(&envelope.auth_heads)
        .copied()
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Structural checks that need no state.
fn structure(envelope: &Envelope, author: Option<PublicKey>) -> Result<(), String> {
    if author.is_none() {
        return Err("the change's actor id is not an ed25519 public key".into());
    }
    if envelope.doc != DocId::Council && envelope.auth_heads.is_empty() {
        return Err(format!(
            "a change to {} must carry the council heads its author had",
            envelope.doc
        ));
    }
    Ok(())
}

/// Verifies signatures in batches (in parallel across cores); bad ones become rejections.
fn verify_signatures(
    federation: &FederationId,
    envelopes: Vec<Envelope>,
    receipt: &mut Receipt,
) -> Vec<Envelope> {
    let digests: Vec<[u8; 32]> = envelopes.iter().map(|e| e.digest(federation)).collect();
    // Few authors sign many envelopes: read (decompress) each author's key once per call.
    let mut keys: HashMap<&[u8], PublicKey> = HashMap::new();
    let authors: Vec<PublicKey> = envelopes
        .iter()
        .map(|e| {
            *keys
                .entry(e.change.actor_id().to_bytes())
                .or_insert_with(|| e.author().expect("screened by structure()"))
        })
        .collect();
    let items: Vec<(PublicKey, &[u8], [u8; 64])> = envelopes
        .iter()
        .zip(&digests)
        .zip(&authors)
        .map(|((e, d), author)| (*author, d.as_slice(), e.signature))
        .collect();
    // Most sync responses carry a batch or less: verify those on this thread, since spawning one (and asking the OS
    // how many cores there are) costs more than the batch itself.
    let validity: Vec<bool> = if items.len() <= SIGNATURE_BATCH {
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
    let mut good = Vec::with_capacity(envelopes.len());
    for ((envelope, author), valid) in envelopes.into_iter().zip(authors).zip(validity) {
        if valid {
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
