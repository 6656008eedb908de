//! The signed envelope: one automerge change and its author's signature. The change itself carries its
//! authorization context (the document it belongs to, the council heads its author had seen, and, for the two
//! council writes the acceptance rule reads, the fact it states) in its commit message, which its hash covers.
//! So the signature, over the change hash, binds the context too, and no second valid envelope of a change can
//! exist: two copies of a change can differ only in their signature bytes, never in what they mean.
//!
//! Wire format (integers unsigned LEB128): `signature(64) | change_len | change_bytes`. The author is the change's
//! actor id and the hash is computed from the change bytes, so neither travels twice.
//!
//! [`Envelope::from_parts`] is the one decoder, used by bundles, pulls, pushes and the store alike: it bounds the
//! size, refuses compressed changes before inflating them, parses, checks the header checksum that automerge's
//! parser skips, bounds the op count and reads the context.

use automerge::{Change, ChangeHash};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use identity::{Keypair, PublicKey};
use model::DocId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::FederationId;
use crate::codec::{Reader, write_varint};

/// Most auth heads an envelope may carry.
pub const MAX_AUTH_HEADS: usize = 64;
/// Largest change an envelope may carry (uncompressed: compressed changes are refused).
pub const MAX_CHANGE_BYTES: usize = 1024 * 1024;
/// Most operations one change may hold.
pub const MAX_CHANGE_OPS: usize = 100_000;
/// Longest document id.
pub const MAX_DOC_ID_BYTES: usize = 64;
/// Longest context (commit message) a change may carry.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;

const SIGNING_DOMAIN: &[u8] = b"growthmesh/envelope/v2";
/// First bytes of every automerge chunk.
const AUTOMERGE_MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
/// Automerge chunk type of an uncompressed change (2 is a DEFLATE-compressed change, 0 a document).
const CHUNK_CHANGE: u8 = 1;
/// Prefix of the context in a change's commit message.
const CONTEXT_TAG: &str = "gm2";

/// A fact a council change states that the acceptance rule itself must know (rather than read from the document),
/// because it decides what else is accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    /// Revokes `member`; the changes of it the revocation covers, per document: every change with a sequence
    /// number up to the one given (the revoker's view when it revoked). Council changes of the member that the
    /// revocation depends on are covered as well, whatever the number says.
    Revoke {
        /// Public key (hex).
        member: String,
        /// Covered sequence number per document id and actor epoch (see [`crate::Actor`]).
        covers: std::collections::BTreeMap<String, std::collections::BTreeMap<u32, u64>>,
    },
    /// Admits `member` by redeeming the invite with `nonce`.
    Admit {
        /// The ticket nonce.
        nonce: String,
        /// Public key (hex).
        member: String,
    },
}

/// What a change says about where it belongs: read from, and written into, its commit message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The document the change belongs to.
    pub doc: DocId,
    /// Council heads the author had when writing; empty for a council change (its deps are used).
    pub auth_heads: Vec<ChangeHash>,
    /// The fact a council change states, if any.
    pub fact: Option<Fact>,
}

impl Context {
    /// The commit message that carries this context: `gm2|doc|auth heads|fact as JSON (or nothing)`, the auth
    /// heads concatenated and in unpadded URL-safe base64 (43 characters a head).
    pub fn to_message(&self) -> String {
        let raw: Vec<u8> = self.auth_heads.iter().flat_map(|h| h.0).collect();
        let heads = URL_SAFE_NO_PAD.encode(raw);
        let fact = self
            .fact
            .as_ref()
            .map(|f| serde_json::to_string(f).expect("facts serialize"))
            .unwrap_or_default();
        format!("{CONTEXT_TAG}|{}|{heads}|{fact}", self.doc)
    }

    /// Reads the context from a change's commit message.
    pub fn from_message(message: Option<&str>) -> Result<Self, DecodeError> {
        let bad = |what: String| DecodeError::Malformed(format!("change context: {what}"));
        let message = message.ok_or_else(|| bad("the change carries no context".into()))?;
        if message.len() > MAX_CONTEXT_BYTES {
            return Err(bad(format!(
                "{} bytes exceed the limit {MAX_CONTEXT_BYTES}",
                message.len()
            )));
        }
        let mut parts = message.splitn(4, '|');
        if parts.next() != Some(CONTEXT_TAG) {
            return Err(bad(format!("does not start with `{CONTEXT_TAG}|`")));
        }
        let doc_text = parts.next().ok_or_else(|| bad("no document".into()))?;
        if doc_text.len() > MAX_DOC_ID_BYTES {
            return Err(bad("document id too long".into()));
        }
        let doc: DocId = doc_text
            .parse()
            .map_err(|e: model::Error| bad(e.to_string()))?;
        let heads_text = parts.next().ok_or_else(|| bad("no auth heads".into()))?;
        if heads_text.len() > MAX_AUTH_HEADS * 43 {
            return Err(bad(format!("more than {MAX_AUTH_HEADS} auth heads")));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(heads_text)
            .map_err(|_| bad("auth heads are not base64".into()))?;
        if raw.len() % 32 != 0 || URL_SAFE_NO_PAD.encode(&raw) != heads_text {
            return Err(bad(
                "auth heads are not whole 32-byte hashes in canonical base64".into(),
            ));
        }
        let auth_heads: Vec<ChangeHash> = raw
            .chunks(32)
            .map(|chunk| ChangeHash(chunk.try_into().expect("chunks of 32")))
            .collect();
        let mut sorted = auth_heads.clone();
        sorted.sort();
        sorted.dedup();
        if sorted != auth_heads {
            return Err(bad("auth heads are not sorted and distinct".into()));
        }
        let fact_text = parts.next().ok_or_else(|| bad("no fact field".into()))?;
        let fact = if fact_text.is_empty() {
            None
        } else {
            Some(
                serde_json::from_str::<Fact>(fact_text)
                    .map_err(|e| bad(format!("fact does not parse: {e}")))?,
            )
        };
        match (&doc, auth_heads.is_empty()) {
            (DocId::Council, false) => {
                return Err(bad("a council change carries no auth heads".into()));
            }
            (DocId::Council, true) => {}
            (_, true) => {
                return Err(bad(format!(
                    "a change to {doc} must carry the council heads its author had"
                )));
            }
            (_, false) if fact.is_some() => {
                return Err(bad("only council changes state facts".into()));
            }
            _ => {}
        }
        Ok(Self {
            doc,
            auth_heads,
            fact,
        })
    }
}

/// A signed change.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The document the change belongs to (read from the change).
    pub doc: DocId,
    /// The automerge change.
    pub change: Change,
    /// Council heads the author had when writing (read from the change); empty for a council change.
    pub auth_heads: Vec<ChangeHash>,
    /// The fact the change states (read from the change).
    pub fact: Option<Fact>,
    /// Ed25519 signature over [`signing_digest`].
    pub signature: [u8; 64],
}

/// Why envelope bytes could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the envelope does.
    #[error("truncated envelope: {0}")]
    Truncated(&'static str),
    /// A field is out of its bounds or unreadable.
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

impl Envelope {
    /// Signs `change` (which carries its context) as `keypair`.
    pub fn sign(
        federation: &FederationId,
        change: Change,
        keypair: &Keypair,
    ) -> Result<Self, DecodeError> {
        let context = Context::from_message(change.message())?;
        if crate::Actor::of(&change).is_none() {
            return Err(DecodeError::Malformed(
                "the change's actor id is not a key".into(),
            ));
        }
        let signature = keypair.sign(&signing_digest(federation, &change.hash()));
        Ok(Self {
            doc: context.doc,
            auth_heads: context.auth_heads,
            fact: context.fact,
            change,
            signature,
        })
    }

    /// The change hash: the envelope's identity.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash()
    }

    /// The author: the change's actor id read as a public key.
    pub fn author(&self) -> Option<PublicKey> {
        PublicKey::from_bytes(crate::Actor::of(&self.change)?.key).ok()
    }

    /// The author's key bytes and epoch (checked by the decoder).
    pub fn actor(&self) -> crate::Actor {
        crate::Actor::of(&self.change).expect("checked when the envelope was decoded or signed")
    }

    /// The council heads this change is authorized against.
    pub fn effective_auth_heads(&self) -> &[ChangeHash] {
        if self.doc == DocId::Council {
            self.change.deps()
        } else {
            &self.auth_heads
        }
    }

    /// The digest the author signed.
    pub fn digest(&self, federation: &FederationId) -> [u8; 32] {
        signing_digest(federation, &self.hash())
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.signature);
        let bytes = self.change.raw_bytes();
        write_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.change.raw_bytes().len() + 72);
        self.encode(&mut out);
        out
    }

    /// Decodes one envelope from the start of `reader`.
    pub fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let signature: [u8; 64] = reader.array("signature")?;
        let len = reader.varint_at_most(MAX_CHANGE_BYTES, "change length")?;
        Self::from_parts(signature, reader.take(len, "change")?)
    }

    /// The one decoder of a signature and change bytes, whatever path they came by.
    pub fn from_parts(signature: [u8; 64], bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_CHANGE_BYTES {
            return Err(DecodeError::Malformed(format!(
                "change of {} bytes exceeds the limit {MAX_CHANGE_BYTES}",
                bytes.len()
            )));
        }
        if bytes.len() < 9 || bytes[..4] != AUTOMERGE_MAGIC {
            return Err(DecodeError::Malformed(
                "change bytes are not an automerge chunk".into(),
            ));
        }
        // Refused before parsing: a compressed change could inflate far beyond the limit before any check.
        if bytes[8] != CHUNK_CHANGE {
            return Err(DecodeError::Malformed(format!(
                "automerge chunk type {} is not an uncompressed change",
                bytes[8]
            )));
        }
        let change = Change::from_bytes(bytes.to_vec())
            .map_err(|e| DecodeError::Malformed(format!("change does not parse: {e}")))?;
        // The change hash (which the signature covers) does not cover the checksum in the change header, and
        // automerge's parser does not check it: without this, four bytes of a signed change could be altered unseen.
        if change.raw_bytes().get(4..8) != Some(&change.hash().0[..4]) {
            return Err(DecodeError::Malformed(
                "change checksum does not match its hash".into(),
            ));
        }
        if change.len() > MAX_CHANGE_OPS {
            return Err(DecodeError::Malformed(format!(
                "change holds {} operations, more than {MAX_CHANGE_OPS}",
                change.len()
            )));
        }
        if crate::Actor::of(&change).is_none() {
            return Err(DecodeError::Malformed(
                "the change's actor id is not a 32-byte public key (with an optional 4-byte epoch above 0)".into(),
            ));
        }
        let context = Context::from_message(change.message())?;
        Ok(Self {
            doc: context.doc,
            auth_heads: context.auth_heads,
            fact: context.fact,
            change,
            signature,
        })
    }

    /// Decodes exactly one envelope from `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let envelope = Self::decode(&mut reader)?;
        if !reader.is_empty() {
            return Err(DecodeError::Malformed(format!(
                "{} trailing bytes after the envelope",
                reader.remaining()
            )));
        }
        Ok(envelope)
    }

    /// Bytes the envelope adds on top of a change with no context: the signature, the length prefix and the context.
    pub fn overhead_bytes(&self) -> usize {
        let context = self.change.message().map_or(0, str::len);
        self.to_bytes().len() - self.change.raw_bytes().len() + context
    }
}

/// What an author signs: a SHA-256 over a domain tag, the federation and the change hash (which covers the
/// change's context). A flipped byte anywhere breaks the signature, and an envelope cannot be replayed into another
/// federation.
pub fn signing_digest(federation: &FederationId, change: &ChangeHash) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(SIGNING_DOMAIN);
    hasher.update(federation.0);
    hasher.update(change.0);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(doc: DocId, heads: usize, fact: Option<Fact>) -> Context {
        Context {
            doc,
            auth_heads: (0..heads).map(|i| ChangeHash([i as u8; 32])).collect(),
            fact,
        }
    }

    #[test]
    fn contexts_round_trip_through_messages() {
        let cases = [
            context(DocId::Council, 0, None),
            context(
                DocId::Council,
                0,
                Some(Fact::Revoke {
                    member: "ab".repeat(32),
                    covers: [("pod/emea".to_owned(), [(0, 4)].into_iter().collect())]
                        .into_iter()
                        .collect(),
                }),
            ),
            context(DocId::Pod("emea".into()), 2, None),
        ];
        for case in cases {
            let message = case.to_message();
            assert_eq!(Context::from_message(Some(&message)).expect("parses"), case);
        }
    }

    #[test]
    fn bad_contexts_are_refused_with_the_reason() {
        let mut raw = vec![1u8; 32];
        raw.extend([0u8; 32]);
        let unsorted = URL_SAFE_NO_PAD.encode(raw);
        for (message, needle) in [
            ("hello", "does not start"),
            ("gm2|pod/emea||", "must carry the council heads"),
            ("gm2|nowhere||", "not a registry document"),
            (&format!("gm2|council|{}|", "A".repeat(43)), "no auth heads"),
            (&format!("gm2|pod/emea|{}|", "*".repeat(43)), "not base64"),
            (
                &format!("gm2|pod/emea|{}|", "A".repeat(40)),
                "whole 32-byte",
            ),
            (&format!("gm2|pod/emea|{}|", unsorted), "sorted"),
        ] {
            let error = Context::from_message(Some(message)).expect_err(message);
            assert!(error.to_string().contains(needle), "{message}: {error}");
        }
        assert!(Context::from_message(None).is_err());
    }
}
