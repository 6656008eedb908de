//! Replication between two replicas, sans-IO: heads announcements, pull requests that say what the requester has
//! (its heads plus a Bloom filter of its changes), and responses carrying only the signed envelopes the requester
//! lacks, each after its dependencies. The network and the simulator move the bytes; [`Syncer`] decides when to
//! ask whom, from messages and a clock.
//!
//! One pull: `A -> B: Request { have_ref, held, wanted, have, bloom, need }`, `B -> A: Response { heads, envelopes,
//! more }`. A feeds the envelopes to [`Replica::receive`] (the same acceptance path as a bundle import) and asks again
//! while the response was truncated, dependencies are still missing, or B has heads A still lacks.
//!
//! What keeps the bytes down (see docs/registry.md, "Sync"):
//! - a request names the responder's latest head set it knows by the digest of that set (`have_ref`) and says with
//!   two bitmaps which of those heads it holds and which it wants, instead of listing them; the responder remembers
//!   the last [`RECENT_HEAD_SETS`] sets it sent;
//! - a response carries only the wanted heads and what they need that the requester lacks, not everything the
//!   responder has, so two pulls in flight to two peers do not bring the same changes;
//! - a response codes every hash it must name (its heads, the auth heads of its envelopes) as an index into the
//!   request's heads or into its own envelopes where it can, so a hash crosses the wire in full only when the
//!   requester cannot know it;
//! - [`Syncer`] does not pull heads that a pull in flight to another peer is already fetching, and tells the second
//!   responder it will have them, so concurrent pulls do not bring the same change twice;
//! - a node pushes the changes it just wrote to its connected peers ([`Push::encode_envelopes`]): one message per
//!   peer per batch of writes and no request. Relays never push, so a change reaches each connected peer once;
//!   peers it did not reach pull it after an announcement.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use crate::bloom::Bloom;
use crate::codec::{Reader, write_varint};
use crate::envelope::{DecodeError, Envelope};
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
/// Head sets a node remembers having sent (in announcements and responses), so a request can name one by digest.
pub const RECENT_HEAD_SETS: usize = 1024;

const REQUEST_HAS_REF: u8 = 1;
/// Contexts of earlier requests to one peer whose late answers are recognised (and ignored) rather than refused.
const EARLIER_CONTEXTS: usize = 4;
const REQUEST_HAS_COMMON: u8 = 2;
const RESPONSE_MORE: u8 = 1;
const RESPONSE_UNKNOWN_REF: u8 = 2;

const ANNOUNCEMENT_TAG: u8 = 1;
/// A periodic announcement: the digest and the change count, no heads.
const SUMMARY_TAG: u8 = 8;
/// A push that leaves dependencies missing waits this long for them (they are usually in another push in flight)
/// before the receiver pulls them.
pub const PUSH_GRACE_MS: u64 = 1_000;
const REQUEST_TAG: u8 = 2;
const RESPONSE_TAG: u8 = 3;
/// First byte of a push (changes its author just wrote, sent to connected peers unasked).
pub const PUSH_TAG: u8 = 5;

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
    /// A periodic summary (digest and count only, no heads): a receiver that differs pulls only once the same
    /// summary came twice in a row, that is once the sender is quiet, so anti-entropy costs a few dozen bytes per
    /// node and interval instead of the heads, and no pull races the changes still being pushed.
    pub summary: bool,
}

/// A pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Federation of the requester.
    pub federation: FederationId,
    /// Digest of a head set the responder sent (in an announcement or a response): its heads, sorted, stand at the
    /// front of [`Request::context`], and `held` and `wanted` say what the requester makes of each.
    pub have_ref: Option<[u8; 32]>,
    /// Per head of the referenced set: the requester holds it and everything under it (or a pull in flight to
    /// another peer is bringing it).
    pub held: Vec<bool>,
    /// Per head of the referenced set: the requester lacks it and asks for it.
    pub wanted: Vec<bool>,
    /// Digest of an earlier head set the responder sent, all of which the requester holds: its heads count as
    /// held too (what the two share in the documents where the responder moved on since).
    pub common_ref: Option<[u8; 32]>,
    /// Further heads whose changes the requester holds (or is fetching from another peer).
    pub have: Vec<ChangeHash>,
    /// The requester's changes that the responder may not know it has.
    pub bloom: Bloom,
    /// Changes explicitly asked for (missing dependencies, heads the requester lacks). When nothing is wanted or
    /// needed, the responder sends everything the requester lacks; otherwise only the wanted and needed changes and
    /// what they depend on.
    pub need: Vec<ChangeHash>,
}

/// The heads whose bit is set.
fn marked(heads: &[ChangeHash], bits: &[bool]) -> Vec<ChangeHash> {
    heads
        .iter()
        .zip(bits)
        .filter(|(_, bit)| **bit)
        .map(|(h, _)| *h)
        .collect()
}

fn write_bits(out: &mut Vec<u8>, bits: &[bool]) {
    let mut bytes = vec![0u8; bits.len().div_ceil(8)];
    for (i, bit) in bits.iter().enumerate() {
        if *bit {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    out.extend_from_slice(&bytes);
}

fn read_bits(
    reader: &mut Reader<'_>,
    count: usize,
    what: &'static str,
) -> Result<Vec<bool>, DecodeError> {
    let bytes = reader.take(count.div_ceil(8), what)?;
    Ok((0..count)
        .map(|i| bytes[i / 8] & (1 << (i % 8)) != 0)
        .collect())
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
    /// The request's `have_ref` is not a head set the responder remembers; nothing was sent, ask again listing
    /// the heads.
    pub unknown_ref: bool,
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
        let mut out = vec![if self.summary {
            SUMMARY_TAG
        } else {
            ANNOUNCEMENT_TAG
        }];
        out.extend_from_slice(&self.federation.0);
        out.extend_from_slice(&self.digest);
        write_varint(&mut out, self.changes);
        if !self.summary {
            write_hashes(&mut out, &self.heads);
        }
        out
    }

    /// Reads the wire form.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let summary = bytes.first() == Some(&SUMMARY_TAG);
        if summary {
            reader.take(1, "message tag")?;
        } else {
            expect_tag(&mut reader, ANNOUNCEMENT_TAG, "heads announcement")?;
        }
        let federation = FederationId(reader.array("federation")?);
        let digest = reader.array("digest")?;
        let changes = reader.varint("change count")?;
        let heads = if summary {
            Vec::new()
        } else {
            read_hashes(&mut reader, MAX_ANNOUNCED_HEADS, "heads")?
        };
        finish(&reader)?;
        Ok(Self {
            federation,
            digest,
            heads,
            changes,
            summary,
        })
    }
}

impl Request {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![REQUEST_TAG];
        out.extend_from_slice(&self.federation.0);
        let mut flags = 0;
        if self.have_ref.is_some() {
            flags |= REQUEST_HAS_REF;
        }
        if self.common_ref.is_some() {
            flags |= REQUEST_HAS_COMMON;
        }
        out.push(flags);
        if let Some(digest) = &self.have_ref {
            out.extend_from_slice(digest);
            write_varint(&mut out, self.held.len() as u64);
            write_bits(&mut out, &self.held);
            write_bits(&mut out, &self.wanted);
        }
        if let Some(digest) = &self.common_ref {
            out.extend_from_slice(digest);
        }
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
        let flags = reader.take(1, "request flags")?[0];
        if flags & !(REQUEST_HAS_REF | REQUEST_HAS_COMMON) != 0 {
            return Err(DecodeError::Malformed(format!(
                "unknown request flags {flags:#04x}"
            )));
        }
        let (have_ref, held, wanted) = if flags & REQUEST_HAS_REF != 0 {
            let digest = reader.array("have ref")?;
            let count = reader.varint_at_most(MAX_LISTED_HASHES, "referenced heads")?;
            let held = read_bits(&mut reader, count, "held bitmap")?;
            let wanted = read_bits(&mut reader, count, "wanted bitmap")?;
            (Some(digest), held, wanted)
        } else {
            (None, Vec::new(), Vec::new())
        };
        let common_ref = if flags & REQUEST_HAS_COMMON != 0 {
            Some(reader.array("common ref")?)
        } else {
            None
        };
        let have = read_hashes(&mut reader, MAX_LISTED_HASHES, "have")?;
        let bloom = Bloom::decode(&mut reader)?;
        let need = read_hashes(&mut reader, MAX_LISTED_HASHES, "need")?;
        finish(&reader)?;
        Ok(Self {
            federation,
            have_ref,
            held,
            wanted,
            common_ref,
            have,
            bloom,
            need,
        })
    }
}

/// How a response names a hash: in full, or as an index into what the requester already has in hand.
///
/// Code `0` is followed by the 32 bytes; an odd code `2i + 1` is the hash of envelope `i` of this response; an even
/// code `2i + 2` is entry `i` of the request's context ([`Request::context`]).
struct HashCoder<'a> {
    envelopes: HashMap<ChangeHash, usize>,
    context: HashMap<&'a ChangeHash, usize>,
}

impl<'a> HashCoder<'a> {
    fn new(envelopes: &[Envelope], context: &'a [ChangeHash]) -> Self {
        let mut context_index = HashMap::with_capacity(context.len());
        for (i, hash) in context.iter().enumerate() {
            context_index.entry(hash).or_insert(i);
        }
        Self {
            envelopes: envelopes
                .iter()
                .enumerate()
                .map(|(i, e)| (e.hash(), i))
                .collect(),
            context: context_index,
        }
    }

    fn write(&self, out: &mut Vec<u8>, hash: &ChangeHash) {
        if let Some(i) = self.envelopes.get(hash) {
            write_varint(out, 2 * *i as u64 + 1);
        } else if let Some(i) = self.context.get(hash) {
            write_varint(out, 2 * *i as u64 + 2);
        } else {
            write_varint(out, 0);
            out.extend_from_slice(&hash.0);
        }
    }

    fn write_all(&self, out: &mut Vec<u8>, hashes: &[ChangeHash]) {
        write_varint(out, hashes.len() as u64);
        for hash in hashes {
            self.write(out, hash);
        }
    }
}

/// Four bytes that tell which context a response was coded against, so a late answer to an earlier request is not
/// read against the context of the current one.
fn context_fingerprint(context: &[ChangeHash]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    for hash in context {
        hasher.update(hash.0);
    }
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The context fingerprint a response carries (`None`: the bytes are not a well-formed response start).
fn response_fingerprint(bytes: &[u8]) -> Option<[u8; 4]> {
    let known_flags = RESPONSE_MORE | RESPONSE_UNKNOWN_REF;
    (bytes.len() >= 6 && bytes[0] == RESPONSE_TAG && bytes[1] & !known_flags == 0)
        .then(|| [bytes[2], bytes[3], bytes[4], bytes[5]])
}

/// A hash as read, before the envelopes it may point into are decoded.
enum HashCode {
    Full(ChangeHash),
    Envelope(usize),
}

fn read_codes(
    reader: &mut Reader<'_>,
    context: &[ChangeHash],
    max: usize,
    what: &'static str,
) -> Result<Vec<HashCode>, DecodeError> {
    let count = reader.varint_at_most(max, what)?;
    let mut codes = Vec::with_capacity(count);
    for _ in 0..count {
        let code = reader.varint(what)?;
        codes.push(match code {
            0 => HashCode::Full(ChangeHash(reader.array(what)?)),
            odd if odd % 2 == 1 => HashCode::Envelope(((odd - 1) / 2) as usize),
            even => {
                let index = ((even - 2) / 2) as usize;
                let hash = context.get(index).ok_or_else(|| {
                    DecodeError::Malformed(format!(
                        "{what}: context index {index} out of range ({} entries)",
                        context.len()
                    ))
                })?;
                HashCode::Full(*hash)
            }
        });
    }
    Ok(codes)
}

fn resolve_codes(
    codes: Vec<HashCode>,
    hashes: &[ChangeHash],
    what: &str,
) -> Result<Vec<ChangeHash>, DecodeError> {
    codes
        .into_iter()
        .map(|code| match code {
            HashCode::Full(hash) => Ok(hash),
            HashCode::Envelope(i) => hashes.get(i).copied().ok_or_else(|| {
                DecodeError::Malformed(format!(
                    "{what}: envelope index {i} out of range ({} envelopes)",
                    hashes.len()
                ))
            }),
        })
        .collect()
}

impl Response {
    /// A response carrying `envelopes` and naming no heads (what a push carries).
    pub fn with_envelopes(envelopes: Vec<Envelope>) -> Self {
        Self {
            heads: Vec::new(),
            envelopes,
            more: false,
            unknown_ref: false,
        }
    }

    /// Wire form for a request whose context is empty (a request that listed no heads).
    pub fn encode(&self) -> Vec<u8> {
        self.encode_for(&[])
    }

    /// Reads a response to a request whose context is empty.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_for(bytes, &[])
    }

    /// Wire form, naming hashes by their place in `context` (the request's [`Request::context`]) or in this
    /// response's envelopes where possible. Envelopes share tables of document ids and auth-head sets, so a batch of
    /// changes by the same authors pays for those once rather than per change.
    pub fn encode_for(&self, context: &[ChangeHash]) -> Vec<u8> {
        let coder = HashCoder::new(&self.envelopes, context);
        let mut out = vec![RESPONSE_TAG];
        let mut flags = 0;
        if self.more {
            flags |= RESPONSE_MORE;
        }
        if self.unknown_ref {
            flags |= RESPONSE_UNKNOWN_REF;
        }
        out.push(flags);
        out.extend_from_slice(&context_fingerprint(context));
        coder.write_all(&mut out, &self.heads);
        write_varint(&mut out, self.envelopes.len() as u64);
        for envelope in &self.envelopes {
            envelope.encode(&mut out);
        }
        out
    }

    /// Reads the wire form of a response to a request with `context`; every limit is checked before anything is
    /// allocated for it, and every index is checked against what it points into.
    pub fn decode_for(bytes: &[u8], context: &[ChangeHash]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        expect_tag(&mut reader, RESPONSE_TAG, "sync response")?;
        let flags = reader.take(1, "response flags")?[0];
        if flags & !(RESPONSE_MORE | RESPONSE_UNKNOWN_REF) != 0 {
            return Err(DecodeError::Malformed(format!(
                "unknown response flags {flags:#04x}"
            )));
        }
        let fingerprint: [u8; 4] = reader.array("context fingerprint")?;
        if fingerprint != context_fingerprint(context) {
            return Err(DecodeError::Malformed(
                "the response names hashes of another request's context".into(),
            ));
        }
        let heads = read_codes(&mut reader, context, MAX_LISTED_HASHES, "heads")?;
        let count = reader.varint_at_most(MAX_RESPONSE_ENVELOPES, "envelope count")?;
        let mut envelopes = Vec::with_capacity(count);
        for _ in 0..count {
            envelopes.push(Envelope::decode(&mut reader)?);
        }
        finish(&reader)?;
        let hashes: Vec<ChangeHash> = envelopes.iter().map(Envelope::hash).collect();
        let heads = resolve_codes(heads, &hashes, "heads")?;
        Ok(Self {
            heads,
            envelopes,
            more: flags & RESPONSE_MORE != 0,
            unknown_ref: flags & RESPONSE_UNKNOWN_REF != 0,
        })
    }
}

impl Request {
    /// The hashes a response to this request may name by index: the heads `have_ref` stands for (sorted), then
    /// `have`, then `need`. The requester knows `ref_heads` because it chose the reference; the responder looks it
    /// up.
    pub fn context(&self, ref_heads: &[ChangeHash]) -> Vec<ChangeHash> {
        let mut context = Vec::with_capacity(ref_heads.len() + self.have.len() + self.need.len());
        context.extend_from_slice(ref_heads);
        context.extend_from_slice(&self.have);
        context.extend_from_slice(&self.need);
        context
    }

    /// What the request asks for, given the heads its `have_ref` and `common_ref` stand for: `None` when the
    /// bitmaps do not fit them.
    pub fn resolve(&self, ref_heads: &[ChangeHash], common_heads: &[ChangeHash]) -> Option<Pull> {
        if self.have_ref.is_some()
            && (self.held.len() != ref_heads.len() || self.wanted.len() != ref_heads.len())
        {
            return None;
        }
        let mut have = marked(ref_heads, &self.held);
        have.extend_from_slice(&self.have);
        have.extend_from_slice(common_heads);
        let mut want = marked(ref_heads, &self.wanted);
        want.extend_from_slice(&self.need);
        Some(Pull {
            context: self.context(ref_heads),
            have,
            want,
        })
    }
}

/// A request with its reference resolved: what the requester holds and what it asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pull {
    /// What the response may name by index ([`Request::context`]).
    pub context: Vec<ChangeHash>,
    /// Heads the requester holds everything under.
    pub have: Vec<ChangeHash>,
    /// Changes it asks for; empty: everything it lacks.
    pub want: Vec<ChangeHash>,
}

impl Pull {
    /// A pull of a request without a reference.
    pub fn unreferenced(request: &Request) -> Self {
        request.resolve(&[], &[]).unwrap_or_default()
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
            changes: self.held_len() as u64,
            summary: false,
        })
    }

    /// A pull request to a peer whose heads were announced as `peer_heads`, listing the heads in full: the shared
    /// ones in `have`, the lacking ones in `need`.
    pub fn sync_request(&self, peer_heads: &[ChangeHash]) -> Option<Request> {
        self.pull_request(
            &sorted(peer_heads),
            false,
            &[],
            None,
            self.missing_dependencies(),
        )
    }

    /// A pull request given the peer's latest head set `known` (sorted): the heads of it this replica holds, or
    /// that a pull elsewhere is fetching (`fetching`), count as held; those it lacks otherwise are wanted. With
    /// `by_ref` the set is named by its digest and two bitmaps, else listed. `common` is an earlier head set of the
    /// peer's that this replica holds entirely: named by its digest (or listed), it stands for what the two share in
    /// the documents where the peer moved on. The Bloom filter holds this replica's changes under none of those.
    fn pull_request(
        &self,
        known: &[ChangeHash],
        by_ref: bool,
        fetching: &[ChangeHash],
        common: Option<&[ChangeHash]>,
        mut need: Vec<ChangeHash>,
    ) -> Option<Request> {
        let federation = self.federation()?;
        let fetching: HashSet<&ChangeHash> = fetching.iter().collect();
        let contained: Vec<bool> = known.iter().map(|h| self.holds(h)).collect();
        let held: Vec<bool> = known
            .iter()
            .zip(&contained)
            .map(|(h, c)| *c || fetching.contains(h))
            .collect();
        let wanted: Vec<bool> = known
            .iter()
            .zip(&held)
            .map(|(h, held)| !held && !self.is_pending(h) && self.rejection(h).is_none())
            .collect();
        let mut under: Vec<ChangeHash> = known
            .iter()
            .zip(&contained)
            .filter(|(_, c)| **c)
            .map(|(h, _)| *h)
            .collect();
        let common = common.filter(|c| !c.is_empty() && c.iter().all(|h| self.holds(h)));
        if let Some(common) = common {
            under.extend_from_slice(common);
        }
        let by_ref = by_ref && !known.is_empty() && known.len() <= MAX_LISTED_HASHES;
        let (have_ref, common_ref, mut have) = if by_ref {
            (
                Some(heads_digest(known)),
                common.map(heads_digest),
                Vec::new(),
            )
        } else {
            let mut have = marked(known, &held);
            have.extend(common.into_iter().flatten());
            need.extend(marked(known, &wanted));
            (None, None, have)
        };
        let (held, wanted) = if by_ref {
            (held, wanted)
        } else {
            (Vec::new(), Vec::new())
        };
        have.sort();
        have.dedup();
        have.truncate(MAX_LISTED_HASHES);
        // Only the changes the peer cannot know we have go in the filter (and the excluded ones we hold, which no
        // document's heads stand for).
        let mut unshared = self.changes_since(&under);
        let under_set: HashSet<&ChangeHash> = under.iter().collect();
        unshared.extend(
            self.excluded()
                .map(|(h, _)| *h)
                .filter(|h| !under_set.contains(h)),
        );
        let bloom = Bloom::from_hashes(unshared.iter());
        need.sort();
        need.dedup();
        need.truncate(MAX_LISTED_HASHES);
        Some(Request {
            federation,
            have_ref,
            held,
            wanted,
            common_ref,
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
            .filter(|h| !self.holds(h) && !self.is_pending(h) && self.rejection(h).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// What a peer's pull lacks, from `source`, each after its dependencies, within the response limits: the
    /// wanted changes and what they depend on (their dependencies and auth heads) that is not under `pull.have`, or,
    /// when nothing is wanted, everything not under `pull.have`; changes in the request's Bloom filter are left out
    /// unless wanted or depending on one being sent.
    pub fn sync_response(
        &self,
        request: &Request,
        pull: &Pull,
        source: &impl EnvelopeSource,
    ) -> Response {
        let heads = self.heads();
        let have: Vec<ChangeHash> = pull
            .have
            .iter()
            .filter(|h| self.contains(h))
            .copied()
            .collect();
        let mut candidates = self.changes_since_with_deps(&have);
        // Excluded changes are held and travel like accepted ones (an equivocation proof must reach every replica),
        // after the accepted ones they may depend on.
        let listed: HashSet<&ChangeHash> = pull.have.iter().collect();
        candidates.extend(
            self.excluded()
                .filter(|(h, _)| !listed.contains(h))
                .filter_map(|(h, _)| {
                    self.excluded_envelope(h)
                        .map(|e| (*h, e.change.deps().to_vec()))
                }),
        );
        let mut loaded: HashMap<ChangeHash, Envelope> = HashMap::new();
        let selected: Option<HashSet<ChangeHash>> = if pull.want.is_empty() {
            None
        } else {
            let deps: HashMap<ChangeHash, &[ChangeHash]> =
                candidates.iter().map(|(h, d)| (*h, d.as_slice())).collect();
            let mut selected = HashSet::new();
            let mut stack: Vec<ChangeHash> = pull
                .want
                .iter()
                .filter(|h| deps.contains_key(h))
                .copied()
                .collect();
            while let Some(hash) = stack.pop() {
                if !selected.insert(hash) {
                    continue;
                }
                stack.extend(deps[&hash].iter().filter(|d| deps.contains_key(d)));
                if let Some(envelope) = source.envelope(&hash) {
                    stack.extend(envelope.auth_heads.iter().filter(|a| deps.contains_key(a)));
                    loaded.insert(hash, envelope);
                }
            }
            Some(selected)
        };
        let mut sending: HashSet<ChangeHash> = HashSet::new();
        let mut envelopes = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        let needed: HashSet<&ChangeHash> = pull.want.iter().collect();
        let mut sending_council = false;
        for (hash, deps) in candidates {
            if selected.as_ref().is_some_and(|s| !s.contains(&hash)) {
                continue;
            }
            let forced = needed.contains(&hash) || deps.iter().any(|d| sending.contains(d));
            let maybe_held = !forced && request.bloom.contains(&hash);
            if maybe_held && !sending_council {
                continue;
            }
            let Some(envelope) = loaded.remove(&hash).or_else(|| source.envelope(&hash)) else {
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
            unknown_ref: false,
        }
    }
}

/// Envelopes pushed by their author just after writing them. Wire form: the push tag, a flags byte (reserved, 0),
/// then the envelopes in the response form, naming no heads and coded against no context: the receiver learns what
/// it needs from the envelopes, and pulls if their dependencies are missing.
#[derive(Clone, Debug)]
pub struct Push {
    /// The new envelopes (`heads`, `more` and `unknown_ref` unused).
    pub response: Response,
}

impl Push {
    /// A push of `envelopes` (just written here), in wire form.
    pub fn encode_envelopes(envelopes: Vec<Envelope>) -> Vec<u8> {
        let mut out = vec![PUSH_TAG, 0];
        out.extend_from_slice(&Response::with_envelopes(envelopes).encode());
        out
    }

    /// Reads a push: its envelopes are fed to the replica like a response's, then [`Syncer::after_push`].
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        expect_tag(&mut reader, PUSH_TAG, "push")?;
        match reader.take(1, "push flags")?[0] {
            0 => {}
            other => {
                return Err(DecodeError::Malformed(format!(
                    "unknown push flags {other:#04x}"
                )));
            }
        }
        let response = Response::decode(&bytes[reader.position()..])?;
        Ok(Self { response })
    }
}

/// What one peer looks like to [`Syncer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerSync {
    /// Heads the peer announced or answered with, sorted.
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
    /// Whether `heads` came from the peer itself (so it remembers them and a request can name them by digest).
    by_ref: bool,
    /// The latest head set the peer sent that is held here entirely.
    common: Option<Vec<ChangeHash>>,
    /// The context of the request in flight (what its response may name by index).
    context: Vec<ChangeHash>,
    /// Fingerprints of the contexts of the last few requests before it, to tell a late answer from garbage.
    earlier_contexts: VecDeque<[u8; 4]>,
    /// Heads of the peer's that the pull in flight is expected to bring.
    fetching: Vec<ChangeHash>,
}

/// Decides when to pull from which peer, and answers peers' pulls. Generic over the peer id so the simulator uses
/// plain numbers.
#[derive(Clone, Debug)]
pub struct Syncer<P: Ord + Clone> {
    peers: BTreeMap<P, PeerSync>,
    /// Heads some pull in flight is fetching, and from whom: not pulled again from another peer meanwhile.
    fetching: BTreeMap<ChangeHash, P>,
    /// Peers with heads this node lacks that were not pulled because a pull was in flight.
    deferred: BTreeSet<P>,
    /// Pushers whose push left dependencies missing, and since when.
    push_waits: BTreeMap<P, u64>,
    /// Head sets this node sent, by digest, so requests can name them.
    sent_sets: HashMap<[u8; 32], Vec<ChangeHash>>,
    /// Their digests, oldest first (the oldest is forgotten first).
    sent_order: VecDeque<[u8; 32]>,
    /// No pull in flight started before this (a lower bound), so a tick need not look at every peer.
    earliest_in_flight_ms: Option<u64>,
}

impl<P: Ord + Clone> Default for Syncer<P> {
    fn default() -> Self {
        Self {
            peers: BTreeMap::new(),
            fetching: BTreeMap::new(),
            deferred: BTreeSet::new(),
            push_waits: BTreeMap::new(),
            sent_sets: HashMap::new(),
            sent_order: VecDeque::new(),
            earliest_in_flight_ms: None,
        }
    }
}

fn sorted(heads: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut heads = heads.to_vec();
    heads.sort();
    heads.dedup();
    heads
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
        self.fetching.retain(|_, p| p != peer);
        self.deferred.remove(peer);
        self.push_waits.remove(peer);
    }

    /// The announcement of the replica's heads; the head set is remembered so pulls can name it.
    pub fn announcement(&mut self, replica: &Replica) -> Option<Announcement> {
        let announcement = replica.announcement()?;
        if !announcement.heads.is_empty() {
            let heads = sorted(&announcement.heads);
            self.remember(heads);
        }
        Some(announcement)
    }

    /// The periodic summary of the replica's state (see [`Announcement::summary`]).
    pub fn summary(&self, replica: &Replica) -> Option<Announcement> {
        let mut announcement = replica.announcement()?;
        announcement.heads.clear();
        announcement.summary = true;
        Some(announcement)
    }

    fn remember(&mut self, heads: Vec<ChangeHash>) {
        let digest = heads_digest(&heads);
        if self.sent_sets.contains_key(&digest) {
            return;
        }
        if self.sent_order.len() >= RECENT_HEAD_SETS
            && let Some(oldest) = self.sent_order.pop_front()
        {
            self.sent_sets.remove(&oldest);
        }
        self.sent_order.push_back(digest);
        self.sent_sets.insert(digest, heads);
    }

    /// A peer's request with its `have_ref` resolved, or `None` when the reference is not a head set this node
    /// remembers sending (or the bitmaps do not fit it).
    pub fn resolve(&self, request: &Request) -> Option<Pull> {
        let lookup = |digest: &Option<[u8; 32]>| -> Option<&[ChangeHash]> {
            match digest {
                None => Some(&[][..]),
                Some(digest) => self.sent_sets.get(digest).map(Vec::as_slice),
            }
        };
        request.resolve(lookup(&request.have_ref)?, lookup(&request.common_ref)?)
    }

    /// Answers a peer's request: the response and the context to encode it with (see [`Response::encode_for`]).
    /// The response's heads are remembered, so the peer's next request can name them.
    pub fn prepare(
        &mut self,
        request: &Request,
        replica: &Replica,
        source: &impl EnvelopeSource,
    ) -> (Response, Vec<ChangeHash>) {
        let Some(pull) = self.resolve(request) else {
            let response = Response {
                heads: Vec::new(),
                envelopes: Vec::new(),
                more: false,
                unknown_ref: true,
            };
            return (response, Vec::new());
        };
        let response = replica.sync_response(request, &pull, source);
        if response.heads.len() <= MAX_LISTED_HASHES {
            self.remember(sorted(&response.heads));
        }
        (response, pull.context)
    }

    /// Answers a peer's request, in wire form.
    pub fn respond(
        &mut self,
        request: &Request,
        replica: &Replica,
        source: &impl EnvelopeSource,
    ) -> Vec<u8> {
        let (response, context) = self.prepare(request, replica, source);
        response.encode_for(&context)
    }

    /// After the caller fed a push's envelopes to the replica: notes the pusher's heads it names, and returns a
    /// pull when something is still missing (dependencies the push did not carry) and no pull to it is in flight.
    pub fn after_push(
        &mut self,
        peer: P,
        push: &Push,
        replica: &Replica,
        now_ms: u64,
    ) -> Option<Request> {
        let state = self.peers.entry(peer.clone()).or_default();
        if !push.response.heads.is_empty() {
            Self::learn_heads(state, &push.response.heads, replica);
        }
        if state.in_flight_since_ms.is_some() {
            return None;
        }
        let lacking = !self.lacking(&self.peers[&peer].heads, replica).is_empty();
        if lacking {
            if let Some(state) = self.peers.get_mut(&peer) {
                state.rounds = 1;
            }
            return self.start_pull(&peer, replica, now_ms, Vec::new());
        }
        if !replica.missing_dependencies().is_empty() {
            // Most likely in another push still on its way: pull only if still missing after the grace period.
            self.push_waits.entry(peer).or_insert(now_ms);
        }
        None
    }

    /// Reads `peer`'s answer to the request in flight to it. `Ok(None)`: the answer was coded against the context
    /// of one of the last few earlier requests (it came late, after a timeout), so it is not read; a response that
    /// names nothing by index (coded against an empty context) is read whatever was asked; one coded against no
    /// request sent to this peer is malformed.
    pub fn decode_response(&self, peer: &P, bytes: &[u8]) -> Result<Option<Response>, DecodeError> {
        let state = self.peers.get(peer);
        let context = state.map_or(&[][..], |state| state.context.as_slice());
        match response_fingerprint(bytes) {
            Some(fingerprint) if fingerprint == context_fingerprint(context) => {
                Response::decode_for(bytes, context).map(Some)
            }
            Some(fingerprint) if fingerprint == context_fingerprint(&[]) => {
                Response::decode_for(bytes, &[]).map(Some)
            }
            Some(fingerprint)
                if state.is_some_and(|s| s.earlier_contexts.contains(&fingerprint)) =>
            {
                Ok(None)
            }
            _ => Response::decode_for(bytes, context).map(Some),
        }
    }

    /// Pulls from pushers whose pushes left dependencies missing for [`PUSH_GRACE_MS`].
    fn due_after_push(&mut self, replica: &Replica, now_ms: u64) -> Vec<(P, Request)> {
        let due: Vec<P> = self
            .push_waits
            .iter()
            .filter(|(_, since)| now_ms.saturating_sub(**since) >= PUSH_GRACE_MS)
            .map(|(peer, _)| peer.clone())
            .collect();
        let mut requests = Vec::new();
        for peer in due {
            self.push_waits.remove(&peer);
            if replica.missing_dependencies().is_empty() {
                continue;
            }
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            if state.in_flight_since_ms.is_some() {
                continue;
            }
            state.rounds = 1;
            if let Some(request) = self.start_pull(&peer, replica, now_ms, Vec::new()) {
                requests.push((peer, request));
            }
        }
        requests
    }

    /// Heads of `heads` this replica lacks (or holds waiting for their dependencies), has not refused, and no
    /// pull in flight is fetching.
    fn lacking(&self, heads: &[ChangeHash], replica: &Replica) -> Vec<ChangeHash> {
        heads
            .iter()
            .filter(|h| {
                !replica.holds(h)
                    && replica.rejection(h).is_none()
                    && !self.fetching.contains_key(h)
            })
            .copied()
            .collect()
    }

    /// Sends a pull to `peer` (the caller checked none is in flight).
    fn start_pull(
        &mut self,
        peer: &P,
        replica: &Replica,
        now_ms: u64,
        need: Vec<ChangeHash>,
    ) -> Option<Request> {
        let fetching: Vec<ChangeHash> = self
            .fetching
            .iter()
            .filter(|(_, p)| *p != peer)
            .map(|(h, _)| *h)
            .filter(|h| !replica.holds(h))
            .collect();
        let lacking = self.lacking(&self.peers.get(peer)?.heads, replica);
        let state = self.peers.get_mut(peer)?;
        let mut need = need;
        need.extend(replica.missing_dependencies());
        let request = replica.pull_request(
            &state.heads,
            state.by_ref,
            &fetching,
            state.common.as_deref(),
            need,
        )?;
        let context = if request.have_ref.is_some() {
            request.context(&state.heads)
        } else {
            request.context(&[])
        };
        let earlier = std::mem::replace(&mut state.context, context);
        if state.earlier_contexts.len() >= EARLIER_CONTEXTS {
            state.earlier_contexts.pop_front();
        }
        state
            .earlier_contexts
            .push_back(context_fingerprint(&earlier));
        state.in_flight_since_ms = Some(now_ms);
        self.earliest_in_flight_ms =
            Some(self.earliest_in_flight_ms.map_or(now_ms, |e| e.min(now_ms)));
        for head in &lacking {
            self.fetching.insert(*head, peer.clone());
        }
        state.fetching = lacking;
        self.deferred.remove(peer);
        Some(request)
    }

    fn end_pull(&mut self, peer: &P) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.in_flight_since_ms = None;
            for head in std::mem::take(&mut state.fetching) {
                if self.fetching.get(&head) == Some(peer) {
                    self.fetching.remove(&head);
                }
            }
        }
    }

    /// Notes the heads the peer sent; the next request names them by digest. Once all are held here, they are the
    /// common set.
    fn learn_heads(state: &mut PeerSync, heads: &[ChangeHash], replica: &Replica) {
        state.heads = sorted(heads);
        state.by_ref = true;
        if !state.heads.is_empty() && state.heads.iter().all(|h| replica.holds(h)) {
            state.common = Some(state.heads.clone());
        }
    }

    /// Records an announcement; returns a request when the peer's registry differs, it has heads this node lacks
    /// that no pull in flight is fetching, and no pull to it is in flight.
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
        let state = self.peers.entry(peer.clone()).or_default();
        let previous = state.digest.replace(announcement.digest);
        if !announcement.heads.is_empty() {
            Self::learn_heads(state, &announcement.heads, replica);
        }
        let in_flight = state.in_flight_since_ms.is_some();
        let ours = heads_digest(&replica.heads());
        if ours == announcement.digest {
            return None;
        }
        if announcement.summary && previous != Some(announcement.digest) {
            // The sender's state moved since its last word: its changes are still on their way (pushes, pulls).
            return None;
        }
        let unlisted = announcement.heads.is_empty();
        let lacking = self.lacking(&self.peers[&peer].heads, replica);
        if !unlisted && lacking.is_empty() {
            // Whatever it has that we lack is being fetched (or refused): look again when those pulls end.
            if announcement.heads.iter().any(|h| !replica.holds(h)) {
                self.deferred.insert(peer);
            }
            return None;
        }
        if in_flight {
            self.deferred.insert(peer);
            return None;
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.rounds = 1;
        }
        self.start_pull(&peer, replica, now_ms, Vec::new())
    }

    /// Starts a pull from `peer` now (on connect, on demand), unless one is in flight.
    pub fn pull(&mut self, peer: P, replica: &Replica, now_ms: u64) -> Option<Request> {
        let state = self.peers.entry(peer.clone()).or_default();
        if state.in_flight_since_ms.is_some() {
            return None;
        }
        state.rounds = 1;
        self.start_pull(&peer, replica, now_ms, Vec::new())
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
        self.end_pull(peer);
        let state = self.peers.get_mut(peer)?;
        if response.unknown_ref {
            // The peer forgot a head set we named: ask again, listing the heads.
            state.by_ref = false;
            state.common = None;
            if state.rounds < MAX_ROUNDS {
                state.rounds += 1;
                return self.start_pull(peer, replica, now_ms, Vec::new());
            }
            return None;
        }
        Self::learn_heads(state, &response.heads, replica);
        state.accepted += accepted as u64;
        state.rejected += rejected as u64;
        let missing = !replica.missing_dependencies().is_empty();
        // Heads it has that we still lack (the response was cut, or it had more than we asked for) and no other
        // pull is fetching.
        let heads = state.heads.clone();
        let lacking = !self.lacking(&heads, replica).is_empty();
        let progress = accepted > 0 || response.more;
        let state = self.peers.get_mut(peer)?;
        if (response.more || missing || lacking) && progress && state.rounds < MAX_ROUNDS {
            state.rounds += 1;
            return self.start_pull(peer, replica, now_ms, Vec::new());
        }
        state.last_sync_ms = Some(now_ms);
        None
    }

    /// Pulls that waited for another to end: from each deferred peer that still has heads this node lacks and no
    /// pull in flight is fetching. Call after a pull ends (response, failure, timeout).
    pub fn followups(&mut self, replica: &Replica, now_ms: u64) -> Vec<(P, Request)> {
        let mut requests = self.due_after_push(replica, now_ms);
        for peer in std::mem::take(&mut self.deferred) {
            let Some(state) = self.peers.get(&peer) else {
                continue;
            };
            if state.in_flight_since_ms.is_some() {
                self.deferred.insert(peer);
                continue;
            }
            let heads = state.heads.clone();
            if heads.iter().all(|h| replica.holds(h)) {
                continue;
            }
            if self.lacking(&heads, replica).is_empty() {
                // Still being fetched elsewhere (or refused or waiting): keep it in mind.
                if heads
                    .iter()
                    .any(|h| !replica.holds(h) && self.fetching.contains_key(h))
                {
                    self.deferred.insert(peer);
                }
                continue;
            }
            if let Some(state) = self.peers.get_mut(&peer) {
                state.rounds = 1;
            }
            if let Some(request) = self.start_pull(&peer, replica, now_ms, Vec::new()) {
                requests.push((peer, request));
            }
        }
        requests
    }

    /// The request to `peer` failed or timed out.
    pub fn on_failure(&mut self, peer: &P) {
        self.end_pull(peer);
    }

    /// Counts bytes exchanged with a peer.
    pub fn count_bytes(&mut self, peer: &P, bytes: usize) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.bytes += bytes as u64;
        }
    }

    /// Forgets requests that timed out.
    pub fn on_tick(&mut self, now_ms: u64) {
        match self.earliest_in_flight_ms {
            Some(earliest) if now_ms.saturating_sub(earliest) > REQUEST_TIMEOUT_MS => {}
            _ => return,
        }
        self.earliest_in_flight_ms = self
            .peers
            .values()
            .filter_map(|state| state.in_flight_since_ms)
            .filter(|since| now_ms.saturating_sub(*since) <= REQUEST_TIMEOUT_MS)
            .min();
        let timed_out: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, state)| {
                state
                    .in_flight_since_ms
                    .is_some_and(|since| now_ms.saturating_sub(since) > REQUEST_TIMEOUT_MS)
            })
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in timed_out {
            self.end_pull(&peer);
        }
    }

    /// Whether any pull waits for another to end (see [`Syncer::followups`]).
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty() || !self.push_waits.is_empty()
    }
}
