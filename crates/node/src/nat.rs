//! The node's view of NAT traversal for `status`: what `net` reports (`net::NatStatus`, kept by the actor from
//! `net::Event::NatChanged`) as plain serde fields, with each connection marked relayed or direct.

use serde::{Deserialize, Serialize};

/// Reachability and connections, as `status --json` prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatView {
    /// `public`, `private` or `unknown` (AutoNAT's verdict: whether members could dial this node back).
    pub reachability: net::Reachability,
    /// Addresses confirmed reachable from outside (AutoNAT dial-backs, relay addresses whose reservation holds).
    pub external_addrs: Vec<String>,
    /// Peer ids of the members holding a relay reservation for this node.
    pub relays: Vec<String>,
    /// Every open connection.
    pub connections: Vec<ConnectionView>,
}

/// One open connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    /// The peer at the other end.
    pub peer_id: String,
    /// Its address on this connection (a relayed one dialed from here contains `/p2p-circuit`).
    pub addr: String,
    /// `relayed` (through a member's relay) or `direct` (dialed, or hole punched by DCUtR).
    pub kind: ConnectionKind,
}

/// How a connection runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    /// Through a relay.
    Relayed,
    /// Peer to peer.
    Direct,
}

impl From<&net::NatStatus> for NatView {
    fn from(status: &net::NatStatus) -> Self {
        Self {
            reachability: status.reachability,
            external_addrs: status
                .external_addrs
                .iter()
                .map(ToString::to_string)
                .collect(),
            relays: status.relays.iter().map(ToString::to_string).collect(),
            connections: status
                .connections
                .iter()
                .map(|c| ConnectionView {
                    peer_id: c.peer_id.to_string(),
                    addr: c.remote_addr.to_string(),
                    kind: if c.relayed {
                        ConnectionKind::Relayed
                    } else {
                        ConnectionKind::Direct
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_and_direct_connections_are_told_apart() {
        let peer = net::Keypair::from_secret_seed([7; 32]).peer_id();
        let relay = net::Keypair::from_secret_seed([8; 32]).peer_id();
        let direct: net::Multiaddr = "/ip4/10.99.0.3/udp/4001/quic-v1".parse().expect("valid");
        let relayed: net::Multiaddr =
            format!("/ip4/10.99.0.1/udp/4001/quic-v1/p2p/{relay}/p2p-circuit")
                .parse()
                .expect("valid");
        let status = net::NatStatus {
            reachability: net::Reachability::Private,
            external_addrs: vec![relayed.clone()],
            relays: vec![relay],
            connections: vec![
                net::ConnectionInfo {
                    peer_id: peer,
                    remote_addr: direct.clone(),
                    relayed: net::is_relayed(&direct),
                },
                net::ConnectionInfo {
                    peer_id: peer,
                    remote_addr: relayed.clone(),
                    relayed: net::is_relayed(&relayed),
                },
            ],
        };
        let json = serde_json::to_value(NatView::from(&status)).expect("serializes");
        assert_eq!(json["reachability"], "private");
        assert_eq!(json["relays"][0], relay.to_string());
        assert_eq!(json["connections"][0]["kind"], "direct");
        assert_eq!(json["connections"][1]["kind"], "relayed");
        assert_eq!(json["connections"][1]["addr"], relayed.to_string());
    }
}
