//! The shared registry: automerge documents by write authority, signed envelopes, and the one acceptance rule that
//! every replica applies to every change it receives, whether from a bundle, the network or the simulator.
//!
//! # Layout
//! - `envelope.rs`: the signed envelope, the context a change carries, the one decoder; `codec.rs`: varints and a
//!   bounds-checked reader.
//! - `bundle.rs`: offline bundles of envelopes.
//! - `acceptance.rs`: reason codes and membership as of given council heads.
//! - `replica.rs`: [`Replica`], the documents of one node: the held set, what it accepts and excludes, pending
//!   envelopes; receive batches of envelopes, write typed operations.
//! - `removal.rs`: the facts that decide what else is accepted: effective revocations (strong removal) and void
//!   admissions (one ticket, one key).
//! - `state.rs`: [`ReplicaState`], snapshots of a replica.
//! - `document_cache.rs`: [`DocumentCache`], documents and memberships by heads, shared by the simulator's replicas.
//! - `ops.rs`: [`Op`], the typed writes, and where each one lands.
//! - `view.rs`: the typed [`model::RegistryView`] read from the documents.
//! - `sync.rs`: sans-IO replication: announcements, pull requests with a Bloom filter, responses; [`sync::Syncer`].
//! - `bloom.rs`: the Bloom filter of change hashes.
//! - `value.rs`: JSON in and out of automerge; nothing else touches automerge paths.
//!
//! This crate is sans-IO: no files, no sockets, no clock (`now_ms` is a parameter). The store persists what
//! [`Replica::receive`] and [`Replica::write`] return; the network and the simulator feed it envelopes.

mod acceptance;
pub mod bloom;
pub mod bundle;
pub mod codec;
mod document_cache;
pub mod envelope;
mod ops;
mod removal;
mod replica;
mod state;
pub mod sync;
mod value;
mod view;

use std::fmt;
use std::str::FromStr;

pub use acceptance::{Membership, Reason};
pub use automerge::ChangeHash;
pub use document_cache::DocumentCache;
pub use envelope::{Context, DecodeError, Envelope, Fact};
pub use ops::Op;
pub use replica::{
    Craft, Equivocation, MAX_PENDING, MAX_PENDING_BYTES, MAX_PENDING_PER_AUTHOR,
    MAX_REMEMBERED_REJECTIONS, Receipt, Rejection, Replica, ReplicaState, SignatureCache,
};

/// Who wrote a change: the author's key and an epoch. An author writes a document as one linear chain of
/// sequence numbers per epoch; its node starts a new epoch in a document when a change of its current chain there
/// was excluded (say, because it built on a revoked member's change), so honest writes never reuse a sequence
/// number. The automerge actor id is the key (epoch 0) or the key followed by the epoch as 4 big-endian bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor {
    /// The author's public key bytes.
    pub key: [u8; 32],
    /// The epoch (0 for the first chain).
    pub epoch: u32,
}

impl Actor {
    /// The actor of a change, if its actor id has one of the two canonical forms.
    pub fn of(change: &automerge::Change) -> Option<Self> {
        Self::from_bytes(change.actor_id().to_bytes())
    }

    /// Reads an actor id.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
        match bytes.len() {
            32 => Some(Self { key, epoch: 0 }),
            36 => {
                let epoch = u32::from_be_bytes(bytes[32..].try_into().ok()?);
                (epoch > 0).then_some(Self { key, epoch })
            }
            _ => None,
        }
    }

    /// The automerge actor id.
    pub fn to_actor_id(&self) -> automerge::ActorId {
        let mut bytes = self.key.to_vec();
        if self.epoch > 0 {
            bytes.extend_from_slice(&self.epoch.to_be_bytes());
        }
        automerge::ActorId::from(bytes)
    }
}

/// A federation's id: the hash of its genesis change.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FederationId(pub [u8; 32]);

impl FederationId {
    /// Hex text.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for FederationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FederationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FederationId({})", &self.to_hex()[..12])
    }
}

impl FromStr for FederationId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| Error::HashText {
            text: text.to_owned(),
        })?;
        Ok(Self(bytes))
    }
}

/// Parses a change hash written as 64 hex characters.
pub fn parse_hash(text: &str) -> Result<ChangeHash, Error> {
    text.trim().parse().map_err(|_| Error::HashText {
        text: text.to_owned(),
    })
}

/// Errors of registry operations (not rejections of received changes: those are [`Rejection`]s).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A hash or id was not 64 hex characters.
    #[error("`{text}` is not a 64-character hex hash")]
    HashText {
        /// The text.
        text: String,
    },
    /// The replica has no federation yet.
    #[error(
        "this replica belongs to no federation yet: create one or import a bundle holding a genesis"
    )]
    NoFederation,
    /// The replica already has a federation.
    #[error("this replica already belongs to federation {0}")]
    AlreadyFederated(FederationId),
    /// The local key may not make this write.
    #[error("{author} may not write {doc}: {reason}")]
    NotAllowed {
        /// The local key.
        author: String,
        /// The document the write would go to.
        doc: String,
        /// Why.
        reason: String,
    },
    /// The write refers to something that does not exist or already exists.
    #[error("{0}")]
    Conflict(String),
    /// A field is invalid.
    #[error(transparent)]
    Invalid(#[from] model::Error),
    /// Automerge refused an operation (a bug or a corrupt document).
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    /// A stored snapshot does not load.
    #[error("snapshot of {doc} does not load: {detail}")]
    Snapshot {
        /// Document.
        doc: String,
        /// Why.
        detail: String,
    },
}
