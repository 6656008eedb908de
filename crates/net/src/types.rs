//! Values that cross the boundary between the network and its user: topics, request ids, events, peer info, counters.

use std::fmt;

use libp2p::{Multiaddr, PeerId};

/// A gossip topic of the federation; its wire name is `growthmesh/<federation-id>/<topic>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Small announcements of a node's document heads.
    Heads,
    /// Signed scorecard snapshots published by pods.
    Scorecards,
}

impl Topic {
    /// Every topic a node subscribes to.
    pub const ALL: [Topic; 2] = [Topic::Heads, Topic::Scorecards];

    /// The last segment of the topic's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Heads => "heads",
            Topic::Scorecards => "scorecards",
        }
    }

    /// The topic's full wire name for `federation_id`.
    pub fn wire_name(self, federation_id: &str) -> String {
        format!("growthmesh/{federation_id}/{}", self.as_str())
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Opaque id of an inbound request awaiting `Client::respond`; unique within one event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the network tells its user.
// Fields are named by what they hold; the variant docs say the rest.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A permitted peer sent a sync request; answer it with `Client::respond(id, ..)` within `request_timeout_ms`.
    InboundRequest {
        peer: PeerId,
        id: RequestId,
        bytes: Vec<u8>,
        /// Whether the gate permits the peer; a non-member's request is at most `max_admission_request_bytes`.
        member: bool,
    },
    /// A gossip message arrived from a permitted peer. `peer` forwarded it; `origin` signed and published it.
    Gossip {
        peer: PeerId,
        origin: PeerId,
        topic: Topic,
        bytes: Vec<u8>,
    },
    /// A peer subscribed to one of our topics: from now on publishing reaches it.
    PeerSubscribed { peer: PeerId, topic: Topic },
    /// The first connection to a peer was established.
    PeerConnected { peer: PeerId },
    /// The last connection to a peer closed.
    PeerDisconnected { peer: PeerId },
    /// The node listens on a new address.
    NewListenAddr { addr: Multiaddr },
    /// Reachability, external addresses, relay reservations or connections changed; the whole new status.
    NatChanged(crate::NatStatus),
}

/// A connected peer as seen by `Client::connected_peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: PeerId,
    /// Remote addresses of the open connections.
    pub addrs: Vec<Multiaddr>,
    /// Unix time of the first open connection; `None` if the system clock is before 1970.
    pub connected_since_ms: Option<u64>,
}

/// Counts of what the event loop refused or dropped since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Inbound requests from peers the gate does not permit.
    pub requests_refused_not_member: u64,
    /// Inbound requests above a peer's rate.
    pub requests_refused_rate_limited: u64,
    /// Inbound requests refused because too many were pending or the event channel was full.
    pub requests_refused_busy: u64,
    /// Oversized or malformed sync frames received.
    pub frames_invalid: u64,
    /// Gossip messages rejected (non-member source, oversized, unsigned, unknown topic).
    pub gossip_rejected: u64,
    /// Penalties given, by the user or by the event loop.
    pub penalties: u64,
    /// Events other than inbound requests dropped because the event channel was full.
    pub events_dropped: u64,
    /// Inbound connections refused when they opened (a backed-off stranger or address, non-member slots full,
    /// blocked peers, connection limits).
    pub connections_refused: u64,
}
