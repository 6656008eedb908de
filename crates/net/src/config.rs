//! `net::Config`: what the node's config file says about listening, discovery and limits; read once at `net::spawn`.

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// Network settings. Every field has a default, so a config file names only what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Addresses to listen on; by default every interface, an OS-chosen TCP port and an OS-chosen QUIC port.
    pub listen_addrs: Vec<Multiaddr>,
    /// Peers dialed at start and added to Kademlia. An address ending in `/p2p/<peer-id>` is also added to the
    /// routing table, so the node can bootstrap the DHT from it.
    pub bootstrap_addrs: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Serve as a relay (circuit relay v2) for members behind NAT. Reservations and circuits of non-members are
    /// refused. Turn it on for members others can dial (a public address, or a forwarded port).
    pub relay_server: bool,
    /// Hex id of the federation (the hash of its genesis change); it names the gossip topics
    /// `growthmesh/<federation-id>/heads` and `growthmesh/<federation-id>/scorecards`. `net::spawn` refuses an
    /// empty or non-hex id, so the default (empty) must be replaced.
    pub federation_id: String,
    /// Bounds on what peers may send and how long things may take.
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addrs: vec![
                "/ip4/0.0.0.0/tcp/0"
                    .parse()
                    .expect("literal multiaddr is valid"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("literal multiaddr is valid"),
            ],
            bootstrap_addrs: Vec::new(),
            mdns: true,
            relay_server: false,
            federation_id: String::new(),
            limits: Limits::default(),
        }
    }
}

/// Limits on peers and timings. Every one is enforced by the event loop or by the codecs it configures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest sync request or response body; a larger inbound frame is refused before it is read.
    pub max_sync_message_bytes: usize,
    /// Largest gossip payload we publish or accept.
    pub max_gossip_message_bytes: usize,
    /// Sustained inbound sync requests allowed per peer; the same number is the burst.
    pub max_requests_per_peer_per_second: u32,
    /// A connection with no open streams for this long is closed.
    pub idle_connection_timeout_ms: u64,
    /// An outbound request without a response, or an inbound one not answered, fails after this long.
    pub request_timeout_ms: u64,
    /// Gossipsub heartbeat (mesh maintenance, gossip emission).
    pub heartbeat_ms: u64,
    /// How long a connection from a peer outside the member set may stay open before it is closed, unless the node
    /// gave the peer a temporary allowance (it sent an invite redemption). A stranger closed this way is backed off
    /// (see `net::Client::set_members`).
    pub gate_grace_period_ms: u64,
    /// Connections non-members (strangers, and joiners redeeming an invite) may hold at once; the rest of
    /// `max_connections` is reserved for members. A stranger's inbound connection past this is refused.
    pub max_non_member_connections: usize,
    /// After this many penalties a peer is blocked.
    pub penalties_before_block: u32,
    /// Established connections in total, inbound and outbound.
    pub max_connections: u32,
    /// A peer outside the member set may still send requests up to this size (to redeem an invite); they are
    /// surfaced with `member: false` so the node can refuse anything else. 0 refuses them all unseen.
    pub max_admission_request_bytes: usize,
    /// Members this node keeps connections to (all of them when the federation is smaller): the mesh degree D.
    pub mesh_target: usize,
    /// How often the node looks for members to connect to, and redials those it lost.
    pub mesh_interval_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sync_message_bytes: 4 * 1024 * 1024,
            max_gossip_message_bytes: 64 * 1024,
            max_requests_per_peer_per_second: 20,
            idle_connection_timeout_ms: 60_000,
            request_timeout_ms: 30_000,
            heartbeat_ms: 1_000,
            gate_grace_period_ms: 1_000,
            max_non_member_connections: 8,
            penalties_before_block: 5,
            max_connections: 256,
            max_admission_request_bytes: 4096,
            mesh_target: 8,
            mesh_interval_ms: 1_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_gives_defaults() {
        let config: Config = toml::from_str("").expect("empty config parses");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn partial_toml_overrides_only_what_it_names() {
        let text = r#"
            mdns = false
            federation_id = "ab12"
            listen_addrs = ["/ip4/127.0.0.1/tcp/4001"]
            [limits]
            heartbeat_ms = 500
        "#;
        let config: Config = toml::from_str(text).expect("config parses");
        assert!(!config.mdns);
        assert_eq!(config.listen_addrs.len(), 1);
        assert_eq!(config.limits.heartbeat_ms, 500);
        assert_eq!(
            config.limits.max_sync_message_bytes,
            Limits::default().max_sync_message_bytes
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(toml::from_str::<Config>("mdsn = false").is_err());
        assert!(toml::from_str::<Config>("[limits]\nheartbeat = 1").is_err());
    }
}
