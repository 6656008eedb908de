//! The wire format of `/growthmesh/sync/2`: one table of message tags ([`Tag`]) and the codecs of announcements,
//! summaries, pull requests, responses and pushes. Every decoder checks each limit before allocating for it.

use std::collections::HashMap;

use automerge::ChangeHash;
use sha2::{Digest, Sha256};

use crate::FederationId;
use crate::bloom::Bloom;
use crate::codec::{Reader, write_varint};
use crate::envelope::{DecodeError, Envelope};

/// The first byte of every message on the sync protocol and the heads topic: one table, no tag used twice, so a
/// message read on the wrong path is refused by its tag, never misread. Invite messages (redeem, redeemed), push
/// acknowledgements and error answers are here too, though the node crate writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Tag {
    /// Heads announcement (gossip).
    Announcement = 1,
    /// Pull request.
    Request = 2,
    /// Pull response.
    Response = 3,
    /// Invite redemption (a joiner's request).
    Redeem = 4,
    /// Push of changes just written (a request).
    Push = 5,
    /// Error answer to any request.
    Error = 6,
    /// Answer to a push.
    PushAck = 7,
    /// Periodic summary: digest and count (gossip).
    Summary = 8,
    /// Answer to a redemption.
    Redeemed = 9,
    /// A redemption a member forwards to a council member for a joiner it introduces.
    ForwardedRedeem = 10,
}

impl Tag {
    /// Every tag, in wire order.
    pub const ALL: [Tag; 10] = [
        Tag::Announcement,
        Tag::Request,
        Tag::Response,
        Tag::Redeem,
        Tag::Push,
        Tag::Error,
        Tag::PushAck,
        Tag::Summary,
        Tag::Redeemed,
        Tag::ForwardedRedeem,
    ];

    /// The tag a message starts with, if it is one.
    pub fn of(bytes: &[u8]) -> Option<Tag> {
        let first = *bytes.first()?;
        Tag::ALL.into_iter().find(|t| *t as u8 == first)
    }
}

/// Most envelopes in one response.
pub const MAX_RESPONSE_ENVELOPES: usize = 4096;
/// Most bytes of envelopes in one response (the transport allows more; this keeps one response cheap to verify).
pub const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;
/// Most hashes a request may list in `have` or `need`.
pub const MAX_LISTED_HASHES: usize = 1024;
/// Most heads an announcement lists (more are summarized by the digest alone).
pub const MAX_ANNOUNCED_HEADS: usize = 64;

const REQUEST_HAS_REF: u8 = 1;
const REQUEST_HAS_COMMON: u8 = 2;
const RESPONSE_MORE: u8 = 1;
const RESPONSE_UNKNOWN_REF: u8 = 2;

const ANNOUNCEMENT_TAG: u8 = Tag::Announcement as u8;
const SUMMARY_TAG: u8 = Tag::Summary as u8;
const REQUEST_TAG: u8 = Tag::Request as u8;
const RESPONSE_TAG: u8 = Tag::Response as u8;
/// First byte of a push (changes its author just wrote, sent to connected peers unasked).
pub const PUSH_TAG: u8 = Tag::Push as u8;

/// A node's heads, gossiped when they change, or (a summary) only their digest, periodically.
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
pub(super) fn marked(heads: &[ChangeHash], bits: &[bool]) -> Vec<ChangeHash> {
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
pub(super) fn context_fingerprint(context: &[ChangeHash]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    for hash in context {
        hasher.update(hash.0);
    }
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The context fingerprint a response carries (`None`: the bytes are not a well-formed response start).
pub(super) fn response_fingerprint(bytes: &[u8]) -> Option<[u8; 4]> {
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
