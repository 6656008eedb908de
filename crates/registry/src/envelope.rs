//! The signed envelope: one automerge change, the document it belongs to, the council heads its author had seen,
//! and the author's signature. Envelopes are what is stored, exported in bundles and sent over the network.
//!
//! Wire format (all integers unsigned LEB128):
//! `doc_len doc_utf8 | auth_count auth_heads(32 each) | signature(64) | change_len change_bytes`.
//! The author is the change's actor id and the change hash is computed from its bytes, so neither travels twice.
//! A council change carries no auth heads: its own dependencies are its auth heads.

use automerge::{Change, ChangeHash};
use identity::{Keypair, PublicKey};
use model::DocId;
use sha2::{Digest, Sha256};

use crate::FederationId;
use crate::codec::{Reader, write_varint};

/// Most auth heads an envelope may carry.
pub const MAX_AUTH_HEADS: usize = 64;
/// Largest change an envelope may carry.
pub const MAX_CHANGE_BYTES: usize = 1024 * 1024;
/// Longest document id.
pub const MAX_DOC_ID_BYTES: usize = 64;

const SIGNING_DOMAIN: &[u8] = b"growthmesh/envelope/v1";

/// A signed change.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The document the change belongs to.
    pub doc: DocId,
    /// The automerge change.
    pub change: Change,
    /// Council heads the author had when writing; empty for a council change (its deps are used).
    pub auth_heads: Vec<ChangeHash>,
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
    /// Signs `change` for `doc` as `keypair`.
    pub fn sign(
        federation: &FederationId,
        doc: DocId,
        change: Change,
        auth_heads: Vec<ChangeHash>,
        keypair: &Keypair,
    ) -> Self {
        let auth_heads = if doc == DocId::Council {
            Vec::new()
        } else {
            auth_heads
        };
        let digest = signing_digest(federation, &doc, &change.hash(), &auth_heads);
        let signature = keypair.sign(&digest);
        Self {
            doc,
            change,
            auth_heads,
            signature,
        }
    }

    /// The change hash: the envelope's identity.
    pub fn hash(&self) -> ChangeHash {
        self.change.hash()
    }

    /// The author: the change's actor id read as a public key.
    pub fn author(&self) -> Option<PublicKey> {
        let bytes: [u8; 32] = self.change.actor_id().to_bytes().try_into().ok()?;
        PublicKey::from_bytes(bytes).ok()
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
        signing_digest(federation, &self.doc, &self.hash(), &self.auth_heads)
    }

    /// Appends the wire form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let doc = self.doc.to_string();
        write_varint(out, doc.len() as u64);
        out.extend_from_slice(doc.as_bytes());
        write_varint(out, self.auth_heads.len() as u64);
        for head in &self.auth_heads {
            out.extend_from_slice(&head.0);
        }
        out.extend_from_slice(&self.signature);
        let bytes = self.change.raw_bytes();
        write_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.change.raw_bytes().len() + 128);
        self.encode(&mut out);
        out
    }

    /// Decodes one envelope from the start of `reader`.
    pub fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let doc_len = reader.varint_at_most(MAX_DOC_ID_BYTES, "document id length")?;
        let doc_text = std::str::from_utf8(reader.take(doc_len, "document id")?)
            .map_err(|_| DecodeError::Malformed("document id is not UTF-8".into()))?;
        let doc: DocId = doc_text
            .parse()
            .map_err(|e: model::Error| DecodeError::Malformed(e.to_string()))?;
        let auth_count = reader.varint_at_most(MAX_AUTH_HEADS, "auth head count")?;
        let mut auth_heads = Vec::with_capacity(auth_count);
        for _ in 0..auth_count {
            let bytes: [u8; 32] = reader.array("auth head")?;
            auth_heads.push(ChangeHash(bytes));
        }
        if doc == DocId::Council && !auth_heads.is_empty() {
            return Err(DecodeError::Malformed(
                "a council change carries no auth heads".into(),
            ));
        }
        let signature: [u8; 64] = reader.array("signature")?;
        let change_len = reader.varint_at_most(MAX_CHANGE_BYTES, "change length")?;
        let change_bytes = reader.take(change_len, "change")?.to_vec();
        let change = Change::from_bytes(change_bytes)
            .map_err(|e| DecodeError::Malformed(format!("change does not parse: {e}")))?;
        // The change hash (which the signature covers) does not cover the checksum in the change header, and
        // automerge's parser does not check it: without this, four bytes of a signed change could be altered unseen.
        if change.raw_bytes().get(4..8) != Some(&change.hash().0[..4]) {
            return Err(DecodeError::Malformed(
                "change checksum does not match its hash".into(),
            ));
        }
        Ok(Self {
            doc,
            change,
            auth_heads,
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

    /// Bytes the envelope adds on top of the raw change.
    pub fn overhead_bytes(&self) -> usize {
        self.to_bytes().len() - self.change.raw_bytes().len()
    }
}

/// What an author signs: a SHA-256 over a domain tag, the federation, the document, the change hash and the auth
/// heads. A flipped byte in any of them (or in the change, through its hash) breaks the signature, and an envelope
/// cannot be replayed into another federation.
pub fn signing_digest(
    federation: &FederationId,
    doc: &DocId,
    change: &ChangeHash,
    auth_heads: &[ChangeHash],
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(SIGNING_DOMAIN);
    hasher.update(federation.0);
    let doc = doc.to_string();
    hasher.update((doc.len() as u32).to_le_bytes());
    hasher.update(doc.as_bytes());
    hasher.update(change.0);
    hasher.update((auth_heads.len() as u32).to_le_bytes());
    for head in auth_heads {
        hasher.update(head.0);
    }
    hasher.finalize().into()
}
