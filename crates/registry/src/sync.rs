//! Replication between two replicas, sans-IO: heads announcements, pull requests that say what the requester has
//! (its heads plus a Bloom filter of its changes), and responses carrying only the signed envelopes the requester
//! lacks, each after its dependencies. The network and the simulator move the bytes; [`Syncer`] decides when to
//! ask whom, from messages and a clock.
//!
//! One pull: `A -> B: Request { have, bloom, need }`, `B -> A: Response { heads, envelopes, more }`. A feeds the
//! envelopes to [`Replica::receive`] (the same acceptance path as a bundle import) and asks again while the
//! response was truncated, dependencies are still missing (Bloom false positives), or B's heads are not all known.

use std::collections::{BTreeMap, HashSet};

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use crate::bloom::Bloom;
use crate::codec::{Reader, write_varint};
use crate::envelope::{DecodeError, Envelope, MAX_AUTH_HEADS, MAX_CHANGE_BYTES, MAX_DOC_ID_BYTES};
use crate::{FederationId, Replica};

/// Most envelopes in one response.
pub const MAX_RESPONSE_ENVELOPES: usize = 4096;
/// Most bytes of envelopes in one response (the transport allows more; this keeps one response cheap to verify).
pub const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
/// Most hashes a request may list in `have` or `need`.
pub const MAX_LISTED_HASHES: usize = 1024;
/// Most heads an announcement lists (more are summarized by the digest alone).
pub const MAX_ANNOUNCED_HEADS: usize = 64;
/// Pull rounds with one peer before giving up until the next announcement.
pub const MAX_ROUNDS: u32 = 64;
/// A request unanswered for this long is forgotten.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;

const ANNOUNCEMENT_TAG: u8 = 1;
const REQUEST_TAG: u8 = 2;
const RESPONSE_TAG: u8 = 3;

/// Where a responder finds the envelopes of accepted changes (the store on a node, a map in the simulator).
pub trait EnvelopeSource {
    /// The envelope of an accepted change.
    fn envelope(&self, hash: &ChangeHash) -> Option<Envelope>;
}

impl EnvelopeSource for std::collections::HashMap<ChangeHash, Envelope> {
    fn envelope(&self, hash: &ChangeHash) -> Option<Envelope> {
        self.get(hash).cloned()
    }
}

impl EnvelopeSource for BTreeMap<ChangeHash, Envelope> {
    fn envelope(&self, hash: &ChangeHash) -> Option<Envelope> {
        self.get(hash).cloned()
    }
}

/// A node's heads, gossiped when they change and periodically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Federation the sender belongs to.
    pub federation: FederationId,
    /// SHA-256 of the sorted heads: equal digests mean equal registries.
    pub digest: [u8; 32],
    /// The heads, when there are at most [`MAX_ANNOUNCED_HEADS`].
    pub heads: Vec<ChangeHash>,
    /// Number of accepted changes.
    pub changes: u64,
}

/// A pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Federation of the requester.
    pub federation: FederationId,
    /// Heads the requester has (its own, and the responder's it knows).
    pub have: Vec<ChangeHash>,
    /// The requester's changes that the responder may not know it has.
    pub bloom: Bloom,
    /// Changes explicitly asked for (missing dependencies).
    pub need: Vec<ChangeHash>,
}

/// A pull response.
#[derive(Clone, Debug)]
pub struct Response {
    /// The responder's heads.
    pub heads: Vec<ChangeHash>,
    /// Envelopes the requester lacks, each after its dependencies.
    pub envelopes: Vec<Envelope>,
    /// Whether the response was cut by a limit and more is to be had.
    pub more: bool,
}

/// Digest of a set of heads.
pub fn heads_digest(heads: &[ChangeHash]) -> [u8; 32] {
    let mut sorted = heads.to_vec();
    sorted.sort();
    let mut hasher = Sha256::new();
    for head in &sorted {
        hasher.update(head.0);
    }
    hasher.finalize().into()
}

fn write_hashes(out: &mut Vec<u8>, hashes: &[ChangeHash]) {
    write_varint(out, hashes.len() as u64);
    for hash in hashes {
        out.extend_from_slice(&hash.0);
    }
}

fn read_hashes(
    reader: &mut Reader<'_>,
    max: usize,
    what: &'static str,
) -> Result<Vec<ChangeHash>, DecodeError> {
    let count = reader.varint_at_most(max, what)?;
    (0..count)
        .map(|_| reader.array(what).map(ChangeHash))
        .collect()
}

fn expect_tag(reader: &mut Reader<'_>, tag: u8, what: &str) -> Result<(), DecodeError> {
    let found = reader.take(1, "message tag")?[0];
    if found == tag {
        Ok(())
    } else {
        Err(DecodeError::Malformed(format!(
            "expected a {what} (tag {tag}), found tag {found}"
        )))
    }
}

fn finish(reader: &Reader<'_>) -> Result<(), DecodeError> {
    if reader.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            reader.remaining()
        )))
    }
}

impl Announcement {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![ANNOUNCEMENT_TAG];
        out.extend_from_slice(&self.federation.0);
        out.extend_from_slice(&self.digest);
        write_varint(&mut out, self.changes);
        write_hashes(&mut out, &self.heads);
        out
    }

    /// Reads the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        expect_tag(&mut reader, ANNOUNCEMENT_TAG, "heads announcement")?;
        let federation = FederationId(reader.array("federation")?);
        let digest = reader.array("digest")?;
        let changes = reader.varint("change count")?;
        let heads = read_hashes(&mut reader, MAX_ANNOUNCED_HEADS, "heads")?;
        finish(&reader)?;
        Ok(Self {
            federation,
            digest,
            heads,
            changes,
        })
    }
}

impl Request {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![REQUEST_TAG];
        out.extend_from_slice(&self.federation.0);
        write_hashes(&mut out, &self.have);
        self.bloom.encode(&mut out);
        write_hashes(&mut out, &self.need);
        out
    }

    /// Reads the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        expect_tag(&mut reader, REQUEST_TAG, "sync request")?;
        let federation = FederationId(reader.array("federation")?);
        let have = read_hashes(&mut reader, MAX_LISTED_HASHES, "have")?;
        let bloom = Bloom::decode(&mut reader)?;
        let need = read_hashes(&mut reader, MAX_LISTED_HASHES, "need")?;
        finish(&reader)?;
        Ok(Self {
            federation,
            have,
            bloom,
            need,
        })
    }
}

impl Response {
    /// Wire form. Envelopes share tables of document ids and auth-head sets, so a batch of changes by the same
    /// authors pays for those once rather than per change.
    pub fn encode(&self) -> Vec<u8> {
        let mut docs: Vec<String> = Vec::new();
        let mut auth_sets: Vec<&[ChangeHash]> = Vec::new();
        let mut rows = Vec::with_capacity(self.envelopes.len());
        for envelope in &self.envelopes {
            let doc = envelope.doc.to_string();
            let doc_index = docs.iter().position(|d| *d == doc).unwrap_or_else(|| {
                docs.push(doc);
                docs.len() - 1
            });
            let auth = envelope.auth_heads.as_slice();
            let auth_index = auth_sets
                .iter()
                .position(|a| *a == auth)
                .unwrap_or_else(|| {
                    auth_sets.push(auth);
                    auth_sets.len() - 1
                });
            rows.push((doc_index, auth_index, envelope));
        }
        let mut out = vec![RESPONSE_TAG];
        write_hashes(&mut out, &self.heads);
        out.push(u8::from(self.more));
        write_varint(&mut out, docs.len() as u64);
        for doc in &docs {
            write_varint(&mut out, doc.len() as u64);
            out.extend_from_slice(doc.as_bytes());
        }
        write_varint(&mut out, auth_sets.len() as u64);
        for set in &auth_sets {
            write_hashes(&mut out, set);
        }
        write_varint(&mut out, rows.len() as u64);
        for (doc_index, auth_index, envelope) in rows {
            write_varint(&mut out, doc_index as u64);
            write_varint(&mut out, auth_index as u64);
            out.extend_from_slice(&envelope.signature);
            let bytes = envelope.change.raw_bytes();
            write_varint(&mut out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Reads the wire form; every limit is checked before anything is allocated for it.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        expect_tag(&mut reader, RESPONSE_TAG, "sync response")?;
        let heads = read_hashes(&mut reader, MAX_LISTED_HASHES, "heads")?;
        let more = reader.take(1, "more flag")?[0] != 0;
        let doc_count = reader.varint_at_most(MAX_RESPONSE_ENVELOPES, "document count")?;
        let mut docs = Vec::with_capacity(doc_count);
        for _ in 0..doc_count {
            let len = reader.varint_at_most(MAX_DOC_ID_BYTES, "document id length")?;
            let text = std::str::from_utf8(reader.take(len, "document id")?)
                .map_err(|_| DecodeError::Malformed("document id is not UTF-8".into()))?;
            docs.push(
                text.parse::<model::DocId>()
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?,
            );
        }
        let set_count = reader.varint_at_most(MAX_RESPONSE_ENVELOPES, "auth set count")?;
        let mut sets = Vec::with_capacity(set_count);
        for _ in 0..set_count {
            sets.push(read_hashes(&mut reader, MAX_AUTH_HEADS, "auth heads")?);
        }
        let count = reader.varint_at_most(MAX_RESPONSE_ENVELOPES, "envelope count")?;
        let mut envelopes = Vec::with_capacity(count);
        for _ in 0..count {
            let doc_index =
                reader.varint_at_most(docs.len().saturating_sub(1), "document index")?;
            let auth_index =
                reader.varint_at_most(sets.len().saturating_sub(1), "auth set index")?;
            let (Some(doc), Some(auth_heads)) = (docs.get(doc_index), sets.get(auth_index)) else {
                return Err(DecodeError::Malformed("table index out of range".into()));
            };
            let signature = reader.array("signature")?;
            let len = reader.varint_at_most(MAX_CHANGE_BYTES, "change length")?;
            let change = automerge::Change::from_bytes(reader.take(len, "change")?.to_vec())
                .map_err(|e| DecodeError::Malformed(format!("change does not parse: {e}")))?;
            if *doc == model::DocId::Council && !auth_heads.is_empty() {
                return Err(DecodeError::Malformed(
                    "a council change carries no auth heads".into(),
                ));
            }
            envelopes.push(Envelope {
                doc: doc.clone(),
                change,
                auth_heads: auth_heads.clone(),
                signature,
            });
        }
        finish(&reader)?;
        Ok(Self {
            heads,
            envelopes,
            more,
        })
    }
}

impl Replica {
    /// The announcement of this replica's heads.
    pub fn announcement(&self) -> Option<Announcement> {
        let federation = self.federation()?;
        let heads = self.heads();
        Some(Announcement {
            federation,
            digest: heads_digest(&heads),
            heads: if heads.len() <= MAX_ANNOUNCED_HEADS {
                heads
            } else {
                Vec::new()
            },
            changes: self.len() as u64,
        })
    }

    /// A pull request to a peer whose heads were announced as `peer_heads`.
    pub fn sync_request(&self, peer_heads: &[ChangeHash]) -> Option<Request> {
        let federation = self.federation()?;
        let shared: Vec<ChangeHash> = peer_heads
            .iter()
            .filter(|h| self.contains(h))
            .copied()
            .collect();
        let mut have = self.heads();
        have.extend(&shared);
        have.sort();
        have.dedup();
        have.truncate(MAX_LISTED_HASHES);
        // Only the changes the peer cannot know we have go in the filter: those not under its heads we hold.
        let unshared = self.changes_since(&shared);
        let bloom = Bloom::from_hashes(unshared.iter());
        let mut need = self.missing_dependencies();
        need.truncate(MAX_LISTED_HASHES);
        Some(Request {
            federation,
            have,
            bloom,
            need,
        })
    }

    /// Dependencies and auth heads that waiting envelopes need and nobody has sent yet.
    pub fn missing_dependencies(&self) -> Vec<ChangeHash> {
        let mut missing: Vec<ChangeHash> = self
            .pending_envelopes()
            .flat_map(|e| {
                e.change
                    .deps()
                    .iter()
                    .chain(&e.auth_heads)
                    .copied()
                    .collect::<Vec<_>>()
            })
            .filter(|h| !self.contains(h) && !self.is_pending(h) && self.rejection(h).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// What a peer's request lacks, from `source`, each after its dependencies, within the response limits.
    pub fn sync_response(&self, request: &Request, source: &impl EnvelopeSource) -> Response {
        let heads = self.heads();
        let have: Vec<ChangeHash> = request
            .have
            .iter()
            .filter(|h| self.contains(h))
            .copied()
            .collect();
        let mut sending: HashSet<ChangeHash> = HashSet::new();
        let mut envelopes = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        let needed: HashSet<&ChangeHash> = request.need.iter().collect();
        let mut sending_council = false;
        for (hash, deps) in self.changes_since_with_deps(&have) {
            let forced = needed.contains(&hash) || deps.iter().any(|d| sending.contains(d));
            let maybe_held = !forced && request.bloom.contains(&hash);
            if maybe_held && !sending_council {
                continue;
            }
            let Some(envelope) = source.envelope(&hash) else {
                tracing::warn!(change = %hash, "accepted change has no stored envelope");
                continue;
            };
            // A peer cannot hold a change whose auth heads it lacks, whatever its filter says.
            if maybe_held && !envelope.auth_heads.iter().any(|a| sending.contains(a)) {
                continue;
            }
            let size = envelope.change.raw_bytes().len() + 80;
            if envelopes.len() >= MAX_RESPONSE_ENVELOPES || bytes + size > MAX_RESPONSE_BYTES {
                more = true;
                break;
            }
            bytes += size;
            sending.insert(hash);
            sending_council |= envelope.doc == model::DocId::Council;
            envelopes.push(envelope);
        }
        Response {
            heads,
            envelopes,
            more,
        }
    }
}

/// What one peer looks like to [`Syncer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSync {
    /// Heads the peer announced or answered with.
    pub heads: Vec<ChangeHash>,
    /// Digest the peer announced.
    pub digest: Option<[u8; 32]>,
    /// When the request in flight was sent.
    pub in_flight_since_ms: Option<u64>,
    /// Rounds in the current pull.
    pub rounds: u32,
    /// When a pull last completed.
    pub last_sync_ms: Option<u64>,
    /// Changes accepted from this peer.
    pub accepted: u64,
    /// Changes from this peer that were rejected.
    pub rejected: u64,
    /// Total bytes of requests sent and responses received.
    pub bytes: u64,
}

/// Decides when to pull from which peer. Generic over the peer id so the simulator uses plain numbers.
#[derive(Clone, Debug)]
pub struct Syncer<P: Ord + Clone> {
    peers: BTreeMap<P, PeerSync>,
}

impl<P: Ord + Clone> Default for Syncer<P> {
    fn default() -> Self {
        Self {
            peers: BTreeMap::new(),
        }
    }
}

impl<P: Ord + Clone> Syncer<P> {
    /// A syncer with no peers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Per-peer state.
    pub fn peers(&self) -> &BTreeMap<P, PeerSync> {
        &self.peers
    }

    /// Forgets a peer (disconnected).
    pub fn remove(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// Records an announcement; returns a request when the peer's registry differs and no pull is in flight.
    pub fn on_announcement(
        &mut self,
        peer: P,
        announcement: &Announcement,
        replica: &Replica,
        now_ms: u64,
    ) -> Option<Request> {
        if Some(announcement.federation) != replica.federation() {
            return None;
        }
        let state = self.peers.entry(peer).or_default();
        state.digest = Some(announcement.digest);
        if !announcement.heads.is_empty() {
            state.heads.clone_from(&announcement.heads);
        }
        let ours = heads_digest(&replica.heads());
        let lacking = announcement.heads.is_empty()
            || announcement.heads.iter().any(|h| !replica.contains(h));
        if ours != announcement.digest && lacking && state.in_flight_since_ms.is_none() {
            state.in_flight_since_ms = Some(now_ms);
            state.rounds = 1;
            return replica.sync_request(&state.heads);
        }
        None
    }

    /// Starts a pull from `peer` now (on connect, on demand), unless one is in flight.
    pub fn pull(&mut self, peer: P, replica: &Replica, now_ms: u64) -> Option<Request> {
        let state = self.peers.entry(peer).or_default();
        if state.in_flight_since_ms.is_some() {
            return None;
        }
        state.in_flight_since_ms = Some(now_ms);
        state.rounds = 1;
        replica.sync_request(&state.heads)
    }

    /// After the caller fed a response's envelopes to the replica: the next request, if the pull goes on.
    pub fn on_response(
        &mut self,
        peer: &P,
        response: &Response,
        accepted: usize,
        rejected: usize,
        replica: &Replica,
        now_ms: u64,
    ) -> Option<Request> {
        let state = self.peers.get_mut(peer)?;
        state.heads.clone_from(&response.heads);
        state.accepted += accepted as u64;
        state.rejected += rejected as u64;
        let missing = !replica.missing_dependencies().is_empty();
        let unknown_heads = response
            .heads
            .iter()
            .any(|h| !replica.contains(h) && replica.rejection(h).is_none());
        let progress = accepted > 0 || response.more;
        if (response.more || missing || unknown_heads) && progress && state.rounds < MAX_ROUNDS {
            state.rounds += 1;
            state.in_flight_since_ms = Some(now_ms);
            return replica.sync_request(&state.heads);
        }
        state.in_flight_since_ms = None;
        state.last_sync_ms = Some(now_ms);
        None
    }

    /// The request to `peer` failed or timed out.
    pub fn on_failure(&mut self, peer: &P) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.in_flight_since_ms = None;
        }
    }

    /// Counts bytes exchanged with a peer.
    pub fn count_bytes(&mut self, peer: &P, bytes: usize) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.bytes += bytes as u64;
        }
    }

    /// Forgets requests that timed out.
    pub fn on_tick(&mut self, now_ms: u64) {
        for state in self.peers.values_mut() {
            if state
                .in_flight_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) > REQUEST_TIMEOUT_MS)
            {
                state.in_flight_since_ms = None;
            }
        }
    }
}
