//! `net::Error`: every way setting up the network or a client command can fail, with the ids involved.

use std::io;

use libp2p::{
    Multiaddr, PeerId, TransportError, gossipsub, identity::DecodingError, noise, request_response,
    swarm::DialError,
};

use crate::{Refusal, RequestId, Topic};

/// Errors of the `net` crate.
// Variant fields are named by what they hold (`peer`, `addr`, `limit`); the variant docs say the rest.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `Config::federation_id` is empty or not hex.
    #[error("federation id {federation_id:?} is not a non-empty hex string")]
    FederationIdInvalid { federation_id: String },
    /// 32 bytes that are not an ed25519 public key.
    #[error("public key is not a valid ed25519 point")]
    PublicKeyInvalid {
        #[source]
        source: DecodingError,
    },
    /// The TCP or the relay transport could not be built (noise setup).
    #[error("building the TCP or relay transport failed")]
    Transport {
        #[source]
        source: noise::Error,
    },
    /// The gossipsub configuration derived from `Config::limits` is invalid.
    #[error("gossipsub configuration is invalid")]
    GossipsubConfig {
        #[source]
        source: gossipsub::ConfigBuilderError,
    },
    /// Gossipsub refused its signing or peer-scoring setup; libp2p only gives a reason text.
    #[error("gossipsub setup failed: {reason}")]
    GossipsubSetup { reason: String },
    /// mDNS could not bind its socket.
    #[error("starting mDNS failed")]
    Mdns {
        #[source]
        source: io::Error,
    },
    /// Listening on a configured address failed.
    #[error("listening on {addr} failed")]
    Listen {
        addr: Multiaddr,
        #[source]
        source: TransportError<io::Error>,
    },
    /// Subscribing to one of the federation's topics failed.
    #[error("subscribing to the {topic} topic failed")]
    Subscribe {
        topic: Topic,
        #[source]
        source: gossipsub::SubscriptionError,
    },
    /// A dial failed: refused at once, or the connection could not be established.
    #[error("dialing {addr} failed")]
    Dial {
        addr: Multiaddr,
        #[source]
        source: Box<DialError>,
    },
    /// Too many dials are waiting for their outcome.
    #[error("{limit} dials are already pending")]
    TooManyPendingDials { limit: usize },
    /// Gossipsub did not publish (for example: no peer subscribed yet).
    #[error("publishing on the {topic} topic failed")]
    Publish {
        topic: Topic,
        #[source]
        source: gossipsub::PublishError,
    },
    /// A message is larger than the configured limit for its kind; nothing was sent.
    #[error("message of {bytes} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { bytes: usize, limit: usize },
    /// The request failed on the way: dial, timeout, closed connection, or a frame the codec refused.
    #[error("request to {peer} failed")]
    Request {
        peer: PeerId,
        #[source]
        source: request_response::OutboundFailure,
    },
    /// The peer answered and refused to serve the request.
    #[error("{peer} refused the request: {refusal}")]
    RequestRefused { peer: PeerId, refusal: Refusal },
    /// Too many outbound requests are waiting for responses.
    #[error("{limit} requests are already pending")]
    TooManyPendingRequests { limit: usize },
    /// `respond` named an inbound request that is not pending (already answered, timed out, or never existed).
    #[error("no inbound request {id} is pending")]
    UnknownRequest { id: RequestId },
    /// The requester went away (timeout or disconnect) before the response could be sent.
    #[error("the requester of {id} is gone")]
    ResponseChannelClosed { id: RequestId },
    /// The operator's block set is larger than the limit.
    #[error("{limit} blocked peers at most")]
    TooManyBlockedPeers { limit: usize },
    /// Too many temporary allowances are live.
    #[error("{limit} temporary allowances are already live")]
    TooManyTemporaryAllowances { limit: usize },
    /// An AutoNAT dial-back to a peer outside the member set was refused (the AutoNAT server serves members only).
    #[error("AutoNAT dial-back to {peer} refused: not a member")]
    DialBackRefused { peer: PeerId },
    /// The event loop has stopped (shutdown, or every client was dropped).
    #[error("the network event loop has stopped")]
    EventLoopStopped,
}
