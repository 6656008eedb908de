//! Replication between two replicas, sans-IO: heads announcements, pull requests that say what the requester has
//! (its heads plus a Bloom filter of its changes), and responses carrying only the signed envelopes the requester
//! lacks, each after its dependencies. The network and the simulator move the bytes; [`SyncMachine`] decides what
//! to send to whom and when, from messages and a clock.
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
//!   peers it did not reach pull it after an announcement; a push whose acknowledgement does not come is sent again.
//!
//! Parts: [`wire`] (the message tags and codecs of `/growthmesh/sync/2`), [`responder`] (what a node answers to a
//! pull), [`pulls`] (per-peer pull bookkeeping) and [`machine`] (the policy: when to push, announce, summarize, pull,
//! retry and penalize), which the node's actor and the simulator both drive.

pub mod machine;
pub mod pulls;
pub mod responder;
pub mod wire;

pub use machine::{
    Absorbed, MachineStats, Outbound, Output, PUSH_WINDOW, Policy, SyncMachine, error_answer,
    push_ack, read_error,
};
pub use pulls::{
    Answer, INITIAL_RTO_MS, MAX_BACK_OFF, MAX_ROUNDS, MIN_RTO_MS, PUSH_GRACE_MS, PeerSync,
    REQUEST_TIMEOUT_MS, RoundTrip, Syncer,
};
pub use responder::{EnvelopeSource, Pull, RECENT_HEAD_SETS, Responder};
pub use wire::{
    Announcement, MAX_ANNOUNCED_HEADS, MAX_LISTED_HASHES, MAX_RESPONSE_BYTES,
    MAX_RESPONSE_ENVELOPES, PUSH_TAG, Push, Request, Response, Tag, heads_digest,
};
