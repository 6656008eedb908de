//! The composed libp2p behaviour: which protocols a connection speaks, configured from `net::Config`.

use std::time::Duration;

use libp2p::{
    PeerId, StreamProtocol, allow_block_list, autonat, connection_limits, dcutr, gossipsub,
    identify, kad, mdns, ping, relay, request_response,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
};

use crate::{
    Config, Error, Keypair, admission,
    codec::SyncCodec,
    gate::Gate,
    members_only::MembersOnly,
    nat::{self, DialBackFilter, MemberSet},
};

/// Identify protocol version: peers of other applications show up with a different one.
const IDENTIFY_PROTOCOL_VERSION: &str = "/growthmesh/1.0.0";
/// Our own DHT, so growthmesh nodes do not join (or get crawled as part of) the public IPFS DHT.
const KADEMLIA_PROTOCOL: StreamProtocol = StreamProtocol::new("/growthmesh/kad/1.0.0");
/// Room for gossipsub's protobuf framing, signature, key and topic around a payload of the configured size.
const GOSSIP_ENVELOPE_OVERHEAD_BYTES: usize = 1024;
/// Concurrent sync streams per connection, inbound and outbound together.
const MAX_CONCURRENT_SYNC_STREAMS: usize = 16;
/// Connections per peer. Two to four is normal (simultaneous dials, TCP and QUIC, a bootstrap address dialed at start
/// and again by the node); NAT traversal adds a relayed connection, its hole-punched replacement, and AutoNAT's
/// dial-back, which a full quota would refuse (and so report a reachable node as private).
const MAX_CONNECTIONS_PER_PEER: u32 = 8;

/// Every protocol of a growthmesh connection.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) admission: admission::Behaviour,
    /// Refuses AutoNAT dial-backs to non-members. Like every behaviour that may deny a connection, it comes before
    /// those that record connections (the derive asks them in field order): a connection denied after
    /// request-response recorded it would leave it a connection the swarm never established.
    pub(crate) dial_back_filter: DialBackFilter,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// Served to members only (see `members_only`): its answers list members.
    pub(crate) kademlia: MembersOnly<kad::Behaviour<kad::store::MemoryStore>>,
    /// NAT traversal: AutoNAT finds whether we are reachable; a private node reserves slots on members' relays
    /// (`relay_client`, always on); `relay_server` only where the config turns it on, members only; DCUtR upgrades a
    /// relayed connection to a direct one by hole punching.
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: Toggle<relay::Behaviour>,
    pub(crate) dcutr: dcutr::Behaviour,
}

/// The parts of the behaviour whose setup can fail, built before the swarm builder hands over the relay client.
pub(crate) struct Prepared {
    gossipsub: gossipsub::Behaviour,
    mdns: Option<mdns::tokio::Behaviour>,
}

impl Behaviour {
    pub(crate) fn prepare(keypair: &Keypair, config: &Config) -> Result<Prepared, Error> {
        let mdns = if config.mdns {
            let mdns = mdns::tokio::Behaviour::new(mdns::Config::default(), keypair.peer_id())
                .map_err(|source| Error::Mdns { source })?;
            Some(mdns)
        } else {
            None
        };
        Ok(Prepared {
            gossipsub: gossipsub(keypair, config)?,
            mdns,
        })
    }

    pub(crate) fn new(
        keypair: &Keypair,
        config: &Config,
        prepared: Prepared,
        relay_client: relay::client::Behaviour,
        members: &MemberSet,
    ) -> Self {
        let peer_id = keypair.peer_id();
        let limits = &config.limits;
        let connection_limits = connection_limits::ConnectionLimits::default()
            .with_max_established(Some(limits.max_connections))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER));
        let identify = identify::Config::new(
            IDENTIFY_PROTOCOL_VERSION.to_owned(),
            keypair.libp2p().public(),
        )
        .with_agent_version(format!("growthmesh/{}", env!("CARGO_PKG_VERSION")))
        // A private node's relayed address appears once a relay accepted its reservation: push it to the members
        // at once, so they (and, through Kademlia, the others) can dial it.
        .with_push_listen_addr_updates(true);
        let sync = request_response::Behaviour::with_codec(
            SyncCodec::new(limits.max_sync_message_bytes),
            [(
                crate::codec::PROTOCOL,
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_millis(limits.request_timeout_ms))
                .with_max_concurrent_streams(MAX_CONCURRENT_SYNC_STREAMS),
        );
        let relay_server = config
            .relay_server
            .then(|| relay::Behaviour::new(peer_id, nat::relay_server_config(members)));
        Self {
            blocked: allow_block_list::Behaviour::default(),
            limits: connection_limits::Behaviour::new(connection_limits),
            admission: admission::Behaviour::new(
                Gate::new(limits.max_requests_per_peer_per_second),
                limits.max_non_member_connections,
            ),
            identify: identify::Behaviour::new(identify),
            ping: ping::Behaviour::default(),
            gossipsub: prepared.gossipsub,
            sync,
            mdns: Toggle::from(prepared.mdns),
            kademlia: MembersOnly::new(kademlia(peer_id)),
            autonat: autonat::Behaviour::new(peer_id, nat::autonat_config()),
            relay_client,
            relay_server: Toggle::from(relay_server),
            dcutr: dcutr::Behaviour::new(peer_id),
            dial_back_filter: DialBackFilter::new(members.clone()),
        }
    }
}

fn gossipsub(keypair: &Keypair, config: &Config) -> Result<gossipsub::Behaviour, Error> {
    let limits = &config.limits;
    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(limits.heartbeat_ms))
        // Strict: every message is signed by its origin and unsigned ones are dropped.
        .validation_mode(gossipsub::ValidationMode::Strict)
        // The event loop accepts or rejects each message (gate, size) before gossipsub forwards it.
        .validate_messages()
        .max_transmit_size(limits.max_gossip_message_bytes + GOSSIP_ENVELOPE_OVERHEAD_BYTES)
        .build()
        .map_err(|source| Error::GossipsubConfig { source })?;
    let authenticity = gossipsub::MessageAuthenticity::Signed(keypair.libp2p().clone());
    let mut behaviour =
        gossipsub::Behaviour::new(authenticity, gossip_config).map_err(|reason| {
            Error::GossipsubSetup {
                reason: reason.to_owned(),
            }
        })?;
    // Scoring carries the application's penalties. Members are few and may share a NAT address, so the
    // IP-colocation penalty is off; no per-topic parameters, because heads gossip is sparse and the mesh-delivery
    // penalties would punish honest quiet peers.
    let params = gossipsub::PeerScoreParams {
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    behaviour
        .with_peer_score(params, gossipsub::PeerScoreThresholds::default())
        .map_err(|reason| Error::GossipsubSetup { reason })?;
    Ok(behaviour)
}

fn kademlia_config() -> kad::Config {
    let mut config = kad::Config::new(KADEMLIA_PROTOCOL);
    // Only members enter the routing table (the event loop adds them once the member set says so): Kademlia answers
    // FIND_NODE from it, and a peer added automatically on connecting could be a stranger.
    config.set_kbucket_inserts(kad::BucketInserts::Manual);
    config
}

fn kademlia(peer_id: PeerId) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut kademlia = kad::Behaviour::with_config(
        peer_id,
        kad::store::MemoryStore::new(peer_id),
        kademlia_config(),
    );
    // Server mode from the start: members are reachable peers, and a fresh node must answer DHT queries of the
    // ones that bootstrap from it without waiting for an external address to be confirmed.
    kademlia.set_mode(Some(kad::Mode::Server));
    kademlia
}
