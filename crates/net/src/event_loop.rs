//! `net::EventLoop`: the one task that owns the libp2p `Swarm`; commands come in from `Client`, events go out on
//! a bounded channel.
//!
//! Actor map:
//! ```text
//! Client --Command (bounded mpsc, oneshot reply)--> EventLoop --Event (bounded mpsc, try_send)--> node
//!                                                      |  owns Swarm<Behaviour>, Gate, pending maps
//!                                                      +-- gate tick: closes non-member connections after grace
//!                                                      +-- mesh tick: dials members, reserves relays (traversal)
//! ```
//! Events are sent with `try_send`, never awaited: a node that waits on a `Client` call while the loop waits on
//! the event channel would deadlock. A full channel drops the event (counted) and refuses an inbound request.

mod traversal;

use std::{
    collections::{BTreeSet, HashMap},
    io,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::{
    Multiaddr, PeerId, Swarm,
    core::ConnectedPoint,
    gossipsub, identify, kad, mdns,
    multiaddr::Protocol,
    ping,
    request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel},
    swarm::{ConnectionId, SwarmEvent, dial_opts::DialOpts, dial_opts::PeerCondition},
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::{
    Config, Counters, Error, Event, Limits, PeerInfo, Refusal, RequestId, Topic,
    behaviour::{Behaviour, BehaviourEvent},
    client::Command,
    codec::{Request, Response},
    gate::{self, BlockList, Gate},
    nat::{MemberSet, NatStatus, Reachability, Relays},
};

/// Events queued for the node before new ones are dropped.
pub const EVENT_CHANNEL_CAPACITY: usize = 256;
/// Dials waiting for their outcome.
pub const MAX_PENDING_DIALS: usize = 64;
/// Outbound requests waiting for a response.
pub const MAX_PENDING_REQUESTS: usize = 256;
/// Inbound requests surfaced and waiting for `Client::respond`.
pub const MAX_PENDING_RESPONSES: usize = 256;
/// Member addresses remembered (learned from identify and Kademlia queries), and addresses kept per member.
const MAX_MEMBER_ADDRESS_ENTRIES: usize = 4096;
const MAX_ADDRESSES_PER_MEMBER: usize = 8;
/// Mesh ticks between two Kademlia random walks (which find members the routing table does not hold yet).
const MESH_TICKS_PER_WALK: u64 = 5;
/// Bounds on how often the gate looks for non-member connections to close.
const GATE_CHECK_MIN_INTERVAL: Duration = Duration::from_millis(10);
const GATE_CHECK_MAX_INTERVAL: Duration = Duration::from_secs(1);

struct PendingDial {
    addr: Multiaddr,
    reply: oneshot::Sender<Result<PeerId, Error>>,
}

struct PendingRequest {
    peer: PeerId,
    reply: oneshot::Sender<Result<Vec<u8>, Error>>,
}

struct PendingResponse {
    peer: PeerId,
    inbound_id: InboundRequestId,
    channel: ResponseChannel<Response>,
}

struct ConnectedPeer {
    connections: HashMap<ConnectionId, Connection>,
    connected_at: Instant,
    connected_since_ms: Option<u64>,
    /// The listen addresses the peer announced (identify), kept so that a peer admitted while connected can be
    /// added to the routing table and the member address book then.
    listen_addrs: Vec<Multiaddr>,
    /// Whether the peer runs a relay server (identify listed the hop protocol).
    relay_hop: bool,
}

struct Connection {
    /// The peer's address on this connection (`/p2p-circuit` when relayed).
    remote: Multiaddr,
    /// Whether we dialed it: then `remote` is an address the peer listens on and we can reach.
    dialed: bool,
    /// Whether it runs through a relay. Judged by libp2p from the local address too: an inbound relayed
    /// connection's remote address need not contain `/p2p-circuit`.
    relayed: bool,
}

/// Owns the swarm and every piece of state the network keeps; see the module docs.
pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    federation_id: String,
    limits: Limits,
    /// The member set as the relay server and the AutoNAT dial-back filter see it; replaced with the gate's.
    members: MemberSet,
    /// AutoNAT's last verdict.
    reachability: Reachability,
    /// Relay reservations this node asked for or holds.
    relays: Relays,
    /// The last `NatStatus` the node received, so a change dropped on a full channel is sent again later.
    nat_reported: Option<NatStatus>,
    blocks: BlockList,
    peers: HashMap<PeerId, ConnectedPeer>,
    /// Addresses of members, as they announced them (identify) or as Kademlia queries returned them: what the mesh
    /// dials, so that no node depends on the one that invited it.
    member_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// Mesh ticks so far (rotates which unconnected members are dialed first, and paces random walks).
    mesh_ticks: u64,
    pending_dials: HashMap<ConnectionId, PendingDial>,
    pending_requests: HashMap<OutboundRequestId, PendingRequest>,
    pending_responses: HashMap<RequestId, PendingResponse>,
    next_request_id: u64,
    counters: Counters,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: &Config,
        members: MemberSet,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
    ) -> Self {
        Self {
            swarm,
            commands,
            events,
            federation_id: config.federation_id.clone(),
            limits: config.limits.clone(),
            members,
            reachability: Reachability::Unknown,
            relays: Relays::default(),
            nat_reported: None,
            blocks: BlockList::default(),
            peers: HashMap::new(),
            member_addrs: HashMap::new(),
            mesh_ticks: 0,
            pending_dials: HashMap::new(),
            pending_requests: HashMap::new(),
            pending_responses: HashMap::new(),
            next_request_id: 0,
            counters: Counters::default(),
        }
    }

    /// The member gate; it lives in the swarm's `admission` behaviour, which applies it when connections open.
    fn gate(&self) -> &Gate {
        &self.swarm.behaviour().admission.gate
    }

    fn gate_mut(&mut self) -> &mut Gate {
        &mut self.swarm.behaviour_mut().admission.gate
    }

    /// Runs until `Client::shutdown` or until every `Client` is dropped.
    pub(crate) async fn run(mut self) {
        info!("network event loop started");
        let grace = Duration::from_millis(self.limits.gate_grace_period_ms);
        let period = (grace / 4).clamp(GATE_CHECK_MIN_INTERVAL, GATE_CHECK_MAX_INTERVAL);
        let mut gate_tick = tokio::time::interval(period);
        gate_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut mesh_tick =
            tokio::time::interval(Duration::from_millis(self.limits.mesh_interval_ms.max(100)));
        mesh_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(Command::Shutdown { reply }) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => break,
                },
                _ = gate_tick.tick() => self.on_gate_tick(Instant::now()),
                _ = mesh_tick.tick() => {
                    self.on_mesh_tick();
                    self.on_traversal_tick(Instant::now());
                }
            }
        }
        info!("network event loop stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::MemberAddresses { reply } => {
                let members = self.gate().members();
                let book = self
                    .member_addrs
                    .iter()
                    .filter(|(peer, _)| members.is_some_and(|m| m.contains(peer)))
                    .map(|(peer, addrs)| (*peer, addrs.clone()))
                    .collect();
                let _ = reply.send(book);
            }
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::Publish {
                topic,
                bytes,
                reply,
            } => {
                let _ = reply.send(self.publish(topic, bytes));
            }
            Command::Request { peer, bytes, reply } => self.request(peer, bytes, reply),
            Command::Respond { id, bytes, reply } => {
                let _ = reply.send(self.respond(id, bytes));
            }
            Command::SetMembers { members, reply } => {
                info!(
                    members = members.len(),
                    "member set updated; gate closed to others"
                );
                // Kademlia's routing table holds members only (it answers FIND_NODE from it): drop revoked ones.
                let revoked: Vec<PeerId> = self
                    .gate()
                    .members()
                    .map(|old| old.difference(&members).copied().collect())
                    .unwrap_or_default();
                for peer in revoked {
                    self.swarm.behaviour_mut().kademlia.remove_peer(&peer);
                }
                self.swarm
                    .behaviour_mut()
                    .kademlia
                    .set_members(members.clone());
                self.members.replace(members.clone());
                self.gate_mut().set_members(members);
                // Peers admitted while connected identified before they were members: route them now.
                let admitted: Vec<(PeerId, Vec<Multiaddr>)> = self
                    .peers
                    .iter()
                    .filter(|(peer, _)| self.gate().members().is_some_and(|m| m.contains(peer)))
                    .map(|(peer, state)| (*peer, state.listen_addrs.clone()))
                    .collect();
                for (peer, addrs) in admitted {
                    self.remember_addresses(peer, &addrs);
                    for addr in addrs {
                        self.swarm.behaviour_mut().kademlia.add_address(&peer, addr);
                    }
                }
                let _ = reply.send(());
            }
            Command::AllowTemporarily {
                peer,
                duration,
                reply,
            } => {
                let now = Instant::now();
                let result = self
                    .gate_mut()
                    .allow_temporarily(peer, now + duration, now)
                    .map_err(|_| Error::TooManyTemporaryAllowances {
                        limit: gate::MAX_TEMPORARY_ALLOWANCES,
                    });
                info!(peer = %peer, duration_ms = duration.as_millis(), ok = result.is_ok(), "temporary allowance");
                let _ = reply.send(result);
            }
            Command::EndAllowance { peer, reply } => {
                info!(peer = %peer, "admission refused; temporary allowance ends");
                let until = Instant::now() + gate::REFUSAL_LINGER;
                self.gate_mut().end_allowance(&peer, until);
                let _ = reply.send(());
            }
            Command::Block { peer, reply } => {
                self.block(peer);
                let _ = reply.send(());
            }
            Command::Unblock { peer, reply } => {
                self.gate_mut().clear_penalties(&peer);
                self.swarm.behaviour_mut().admission.forgive(&peer);
                if self.blocks.unblock(&peer) {
                    self.lift_block(peer);
                } else {
                    info!(peer = %peer, "peer stays blocked by the operator");
                }
                let _ = reply.send(());
            }
            Command::SetBlockedPeers { peers, reply } => {
                let _ = reply.send(self.set_blocked_peers(peers));
            }
            Command::Penalize { peer, reply } => {
                self.penalize(peer, "reported by node");
                let _ = reply.send(());
            }
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.connected_peers());
            }
            Command::Counters { reply } => {
                let _ = reply.send(self.counters);
            }
            Command::NatStatus { reply } => {
                let _ = reply.send(self.nat_status());
            }
            Command::Shutdown { reply } => {
                // Handled in `run`, which must leave the loop.
                let _ = reply.send(());
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<PeerId, Error>>) {
        if self.pending_dials.len() >= MAX_PENDING_DIALS {
            let _ = reply.send(Err(Error::TooManyPendingDials {
                limit: MAX_PENDING_DIALS,
            }));
            return;
        }
        let opts = DialOpts::from(addr.clone());
        let connection_id = opts.connection_id();
        debug!(addr = %addr, "dialing");
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials
                    .insert(connection_id, PendingDial { addr, reply });
            }
            Err(source) => {
                let _ = reply.send(Err(Error::Dial {
                    addr,
                    source: Box::new(source),
                }));
            }
        }
    }

    fn publish(&mut self, topic: Topic, bytes: Vec<u8>) -> Result<(), Error> {
        let limit = self.limits.max_gossip_message_bytes;
        if bytes.len() > limit {
            return Err(Error::MessageTooLarge {
                bytes: bytes.len(),
                limit,
            });
        }
        let size = bytes.len();
        let hash = self.topic_hash(topic);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .publish(hash, bytes)
            .map_err(|source| Error::Publish { topic, source })?;
        debug!(topic = %topic, bytes = size, "gossip published");
        Ok(())
    }

    fn request(
        &mut self,
        peer: PeerId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    ) {
        let limit = self.limits.max_sync_message_bytes;
        if bytes.len() > limit {
            let _ = reply.send(Err(Error::MessageTooLarge {
                bytes: bytes.len(),
                limit,
            }));
            return;
        }
        if self.pending_requests.len() >= MAX_PENDING_REQUESTS {
            let _ = reply.send(Err(Error::TooManyPendingRequests {
                limit: MAX_PENDING_REQUESTS,
            }));
            return;
        }
        debug!(peer = %peer, bytes = bytes.len(), "sync request sent");
        let request_id = self
            .swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, Request::Frame(bytes));
        self.pending_requests
            .insert(request_id, PendingRequest { peer, reply });
    }

    fn respond(&mut self, id: RequestId, bytes: Vec<u8>) -> Result<(), Error> {
        let limit = self.limits.max_sync_message_bytes;
        if bytes.len() > limit {
            return Err(Error::MessageTooLarge {
                bytes: bytes.len(),
                limit,
            });
        }
        let pending = self
            .pending_responses
            .remove(&id)
            .ok_or(Error::UnknownRequest { id })?;
        debug!(peer = %pending.peer, id = %id, bytes = bytes.len(), "sync response sent");
        self.swarm
            .behaviour_mut()
            .sync
            .send_response(pending.channel, Response::Accepted(bytes))
            .map_err(|_| Error::ResponseChannelClosed { id })
    }

    fn block(&mut self, peer: PeerId) {
        if self.blocks.block(peer) {
            self.impose_block(peer);
        }
    }

    /// Replaces the operator's block set: newly blocked peers are disconnected, peers no longer blocked by anything
    /// may connect again (the caller redials them).
    fn set_blocked_peers(&mut self, peers: BTreeSet<PeerId>) -> Result<(), Error> {
        let change = self
            .blocks
            .set_operator(peers)
            .map_err(|_| Error::TooManyBlockedPeers {
                limit: gate::MAX_BLOCKED_PEERS,
            })?;
        for peer in change.blocked {
            self.impose_block(peer);
        }
        for peer in change.unblocked {
            self.lift_block(peer);
        }
        info!(
            blocked = self.blocks.operator().len(),
            "operator block set replaced"
        );
        Ok(())
    }

    fn impose_block(&mut self, peer: PeerId) {
        info!(peer = %peer, "peer blocked");
        // The block list closes existing connections and refuses new ones, both ways; gossipsub drops its messages,
        // including those it originated and others relay.
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().gossipsub.blacklist_peer(&peer);
    }

    fn lift_block(&mut self, peer: PeerId) {
        info!(peer = %peer, "peer unblocked");
        self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .remove_blacklisted_peer(&peer);
    }

    fn penalize(&mut self, peer: PeerId, reason: &'static str) {
        self.counters.penalties += 1;
        let count = self.gate_mut().penalize(peer);
        // Each penalty is worth -1 application score, times gossipsub's `app_specific_weight`.
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, -f64::from(count));
        info!(peer = %peer, reason, penalties = count, "peer penalized");
        if count >= self.limits.penalties_before_block {
            self.block(peer);
        }
    }

    fn connected_peers(&self) -> Vec<PeerInfo> {
        let mut peers: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(peer_id, state)| PeerInfo {
                peer_id: *peer_id,
                addrs: state
                    .connections
                    .values()
                    .map(|c| c.remote.clone())
                    .collect(),
                connected_since_ms: state.connected_since_ms,
            })
            .collect();
        peers.sort_by_key(|info| info.peer_id);
        peers
    }

    /// Closes connections of peers the gate no longer permits once their grace period is over.
    fn on_gate_tick(&mut self, now: Instant) {
        self.gate_mut().prune(now);
        let grace = Duration::from_millis(self.limits.gate_grace_period_ms);
        let expired: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(peer, state)| {
                !self.gate().permits(peer, now)
                    && gate::grace_expired(state.connected_at, grace, now)
            })
            .map(|(peer, _)| *peer)
            .collect();
        for peer in expired {
            info!(peer = %peer, "closing connection of non-member after grace period");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(addr = %address, "listening");
                self.emit(Event::NewListenAddr { addr: address });
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.on_connection_established(
                    peer_id,
                    connection_id,
                    &endpoint,
                    num_established.get(),
                );
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                debug!(peer = %peer_id, cause = ?cause, "connection closed");
                self.on_connection_closed(peer_id, connection_id, num_established);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
                if let Some(dial) = self.pending_dials.remove(&connection_id) {
                    let _ = dial.reply.send(Err(Error::Dial {
                        addr: dial.addr,
                        source: Box::new(error),
                    }));
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                    self.counters.connections_refused += 1;
                }
                debug!(addr = %send_back_addr, error = %error, "incoming connection failed");
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                info!(addr = %address, "listen address expired")
            }
            SwarmEvent::ListenerError { error, .. } => warn!(error = %error, "listener error"),
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => self.on_listener_closed(listener_id, reason),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(addr = %address, "external address confirmed");
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                info!(addr = %address, "external address expired");
            }
            _ => {}
        }
    }

    fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        endpoint: &ConnectedPoint,
        num_established: u32,
    ) {
        if let Some(dial) = self.pending_dials.remove(&connection_id) {
            let _ = dial.reply.send(Ok(peer));
        }
        let state = self.peers.entry(peer).or_insert_with(|| ConnectedPeer {
            connections: HashMap::new(),
            connected_at: Instant::now(),
            connected_since_ms: unix_time_ms(),
            listen_addrs: Vec::new(),
            relay_hop: false,
        });
        let remote = endpoint.get_remote_address().clone();
        let relayed = endpoint.is_relayed();
        state.connections.insert(
            connection_id,
            Connection {
                remote,
                dialed: endpoint.is_dialer(),
                relayed,
            },
        );
        debug!(peer = %peer, addr = %endpoint.get_remote_address(), relayed, "connection established");
        if num_established == 1 {
            info!(peer = %peer, addr = %endpoint.get_remote_address(), relayed, "peer connected");
            self.emit(Event::PeerConnected { peer });
        }
    }

    fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        num_established: u32,
    ) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.connections.remove(&connection_id);
        }
        if num_established == 0 {
            self.peers.remove(&peer);
            self.gate_mut().forget_connection_state(&peer);
            info!(peer = %peer, "peer disconnected");
            self.emit(Event::PeerDisconnected { peer });
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Gossipsub(event) => self.on_gossipsub_event(event),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                debug!(peer = %peer_id, agent = %info.agent_version, "peer identified");
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.relay_hop = info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME);
                    state.listen_addrs = info
                        .listen_addrs
                        .iter()
                        .take(MAX_ADDRESSES_PER_MEMBER)
                        .cloned()
                        .collect();
                }
                // Only members enter the routing table: Kademlia answers FIND_NODE from it, and a stranger must not
                // learn members' addresses from us.
                if self.is_member_or_open(&peer_id) {
                    self.remember_addresses(peer_id, &info.listen_addrs);
                    for addr in info.listen_addrs {
                        self.swarm
                            .behaviour_mut()
                            .kademlia
                            .add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Kademlia(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(result),
                ..
            }) => {
                let peers = match result {
                    Ok(found) => found.peers,
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                };
                debug!(found = peers.len(), "kademlia random walk done");
                for peer in peers {
                    self.remember_addresses(peer.peer_id, &peer.addrs);
                }
                self.fill_mesh();
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => self.on_mdns_discovered(found),
            BehaviourEvent::Kademlia(kad::Event::RoutingUpdated { peer, .. }) => {
                debug!(peer = %peer, "kademlia routing updated");
            }
            BehaviourEvent::Autonat(event) => self.on_autonat_event(event),
            BehaviourEvent::RelayClient(event) => self.on_relay_client_event(event),
            BehaviourEvent::RelayServer(event) => traversal::on_relay_server_event(event),
            BehaviourEvent::Dcutr(event) => self.on_dcutr_event(event),
            BehaviourEvent::Ping(ping::Event {
                peer,
                result: Err(error),
                ..
            }) => {
                debug!(peer = %peer, error = %error, "ping failed");
            }
            _ => {}
        }
    }

    /// Whether `peer` is a member, or the member set is not known yet (a fresh node routes everyone it meets).
    fn is_member_or_open(&self, peer: &PeerId) -> bool {
        self.gate().members().is_none_or(|m| m.contains(peer))
    }

    /// Remembers addresses of a member (others are not kept: the mesh dials members only).
    fn remember_addresses(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        let is_member = self.gate().members().is_some_and(|m| m.contains(&peer));
        if !is_member || addrs.is_empty() || peer == *self.swarm.local_peer_id() {
            return;
        }
        if !self.member_addrs.contains_key(&peer)
            && self.member_addrs.len() >= MAX_MEMBER_ADDRESS_ENTRIES
        {
            return;
        }
        let known = self.member_addrs.entry(peer).or_default();
        for addr in addrs {
            if !known.contains(addr) {
                known.push(addr.clone());
            }
        }
        if known.len() > MAX_ADDRESSES_PER_MEMBER {
            let excess = known.len() - MAX_ADDRESSES_PER_MEMBER;
            known.drain(..excess);
        }
    }

    /// Keeps connections to `mesh_target` members (all of them in a smaller federation): dials unconnected members
    /// at the addresses they announced, and now and then walks Kademlia to learn of members it has no address for.
    fn on_mesh_tick(&mut self) {
        self.mesh_ticks += 1;
        self.fill_mesh();
        if self.mesh_ticks % MESH_TICKS_PER_WALK == 1 && !self.peers.is_empty() {
            self.swarm
                .behaviour_mut()
                .kademlia
                .get_closest_peers(PeerId::random());
        }
    }

    fn fill_mesh(&mut self) {
        let Some(members) = self.gate().members() else {
            return;
        };
        let local = *self.swarm.local_peer_id();
        // A node that is not a member (a stranger holding a copy of the registry, a revoked member) has nobody to
        // mesh with: members close its connections, and redialing them would only be a nuisance.
        if !members.contains(&local) {
            return;
        }
        let others: Vec<PeerId> = members.iter().filter(|p| **p != local).copied().collect();
        let connected = others.iter().filter(|p| self.peers.contains_key(p)).count();
        let target = self.limits.mesh_target.min(others.len());
        if connected >= target {
            return;
        }
        let candidates: Vec<PeerId> = others
            .into_iter()
            .filter(|p| {
                !self.peers.contains_key(p)
                    && !self.blocks.is_blocked(p)
                    && self.member_addrs.contains_key(p)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let start = (self.mesh_ticks as usize) % candidates.len();
        let wanted = (target - connected).min(candidates.len());
        for peer in candidates.iter().cycle().skip(start).take(wanted) {
            let addrs = self.member_addrs.get(peer).cloned().unwrap_or_default();
            let opts = DialOpts::peer_id(*peer)
                .addresses(addrs)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) => debug!(peer = %peer, "dialing a member for the mesh"),
                Err(error) => debug!(peer = %peer, error = %error, "mesh dial not started"),
            }
        }
    }

    fn on_mdns_discovered(&mut self, found: Vec<(PeerId, Multiaddr)>) {
        let now = Instant::now();
        for (peer, addr) in found {
            if !self.gate().permits(&peer, now) {
                continue;
            }
            debug!(peer = %peer, addr = %addr, "mDNS discovered peer");
            if !self.is_member_or_open(&peer) {
                continue;
            }
            self.swarm
                .behaviour_mut()
                .kademlia
                .add_address(&peer, addr.clone());
            if !self.peers.contains_key(&peer) {
                let opts = DialOpts::peer_id(peer)
                    .addresses(vec![addr])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(error) = self.swarm.dial(opts) {
                    debug!(peer = %peer, error = %error, "dialing mDNS peer failed");
                }
            }
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request: Request::Frame(bytes),
                    channel,
                } => {
                    self.on_inbound_request(peer, request_id, bytes, channel);
                }
                request_response::Message::Request {
                    request: Request::TooLarge { length },
                    channel,
                    ..
                } => self.refuse_oversized_request(peer, length, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.on_response(peer, request_id, response);
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(peer = %peer, error = %error, "sync request failed");
                if is_peer_fault(&error) {
                    self.counters.frames_invalid += 1;
                    self.penalize(peer, "malformed sync response");
                }
                if let Some(pending) = self.pending_requests.remove(&request_id) {
                    let _ = pending.reply.send(Err(Error::Request {
                        peer,
                        source: error,
                    }));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(peer = %peer, error = %error, "inbound sync request failed");
                self.pending_responses.retain(|_, pending| {
                    !(pending.peer == peer && pending.inbound_id == request_id)
                });
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_request(
        &mut self,
        peer: PeerId,
        inbound_id: InboundRequestId,
        bytes: Vec<u8>,
        channel: ResponseChannel<Response>,
    ) {
        let now = Instant::now();
        let member = self.gate().permits(&peer, now);
        let admission = !member && bytes.len() <= self.limits.max_admission_request_bytes;
        let refusal = if !member && !admission {
            self.counters.requests_refused_not_member += 1;
            Some(Refusal::NotMember)
        } else if !self.gate_mut().admit_request(peer, now) {
            self.counters.requests_refused_rate_limited += 1;
            Some(Refusal::RateLimited)
        } else if self.pending_responses.len() >= MAX_PENDING_RESPONSES {
            self.counters.requests_refused_busy += 1;
            Some(Refusal::Busy)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            debug!(peer = %peer, refusal = %refusal, "sync request refused");
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, Response::Refused(refusal));
            return;
        }
        let id = RequestId(self.next_request_id);
        self.next_request_id += 1;
        debug!(peer = %peer, id = %id, bytes = bytes.len(), "sync request received");
        match self.events.try_send(Event::InboundRequest {
            peer,
            id,
            bytes,
            member,
        }) {
            Ok(()) => {
                self.pending_responses.insert(
                    id,
                    PendingResponse {
                        peer,
                        inbound_id,
                        channel,
                    },
                );
            }
            Err(_) => {
                warn!(peer = %peer, "event channel full or closed; sync request refused");
                self.counters.requests_refused_busy += 1;
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, Response::Refused(Refusal::Busy));
            }
        }
    }

    fn refuse_oversized_request(
        &mut self,
        peer: PeerId,
        length: usize,
        channel: ResponseChannel<Response>,
    ) {
        debug!(peer = %peer, bytes = length, "oversized sync request refused");
        self.counters.frames_invalid += 1;
        self.penalize(peer, "oversized sync request");
        let refusal = Response::Refused(Refusal::TooLarge);
        let _ = self
            .swarm
            .behaviour_mut()
            .sync
            .send_response(channel, refusal);
    }

    fn on_response(&mut self, peer: PeerId, request_id: OutboundRequestId, response: Response) {
        let Some(pending) = self.pending_requests.remove(&request_id) else {
            return;
        };
        let result = match response {
            Response::Accepted(bytes) => {
                debug!(peer = %peer, bytes = bytes.len(), "sync response received");
                Ok(bytes)
            }
            Response::Refused(refusal) => {
                debug!(peer = %peer, refusal = %refusal, "sync request refused by peer");
                Err(Error::RequestRefused {
                    peer: pending.peer,
                    refusal,
                })
            }
        };
        let _ = pending.reply.send(result);
    }

    fn on_gossipsub_event(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let verdict = self.judge_gossip(propagation_source, &message);
                let acceptance = match &verdict {
                    Ok(_) => gossipsub::MessageAcceptance::Accept,
                    Err(GossipRejection::NotMember) => gossipsub::MessageAcceptance::Ignore,
                    Err(_) => gossipsub::MessageAcceptance::Reject,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                match verdict {
                    Ok((topic, origin)) => {
                        debug!(peer = %propagation_source, origin = %origin, topic = %topic, bytes = message.data.len(), "gossip received");
                        self.emit(Event::Gossip {
                            peer: propagation_source,
                            origin,
                            topic,
                            bytes: message.data,
                        });
                    }
                    Err(rejection) => {
                        debug!(peer = %propagation_source, rejection = ?rejection, "gossip rejected");
                        self.counters.gossip_rejected += 1;
                        if rejection == GossipRejection::Oversized {
                            self.penalize(propagation_source, "oversized gossip");
                        }
                    }
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                if let Some(topic) = self.topic_of(&topic) {
                    debug!(peer = %peer_id, topic = %topic, "peer subscribed");
                    self.emit(Event::PeerSubscribed {
                        peer: peer_id,
                        topic,
                    });
                }
            }
            _ => {}
        }
    }

    fn judge_gossip(
        &self,
        peer: PeerId,
        message: &gossipsub::Message,
    ) -> Result<(Topic, PeerId), GossipRejection> {
        let now = Instant::now();
        let topic = self
            .topic_of(&message.topic)
            .ok_or(GossipRejection::UnknownTopic)?;
        let origin = message.source.ok_or(GossipRejection::Unsigned)?;
        if message.data.len() > self.limits.max_gossip_message_bytes {
            return Err(GossipRejection::Oversized);
        }
        if !self.gate().permits(&peer, now) || !self.gate().permits(&origin, now) {
            return Err(GossipRejection::NotMember);
        }
        Ok((topic, origin))
    }

    fn topic_hash(&self, topic: Topic) -> gossipsub::TopicHash {
        gossipsub::IdentTopic::new(topic.wire_name(&self.federation_id)).hash()
    }

    fn topic_of(&self, hash: &gossipsub::TopicHash) -> Option<Topic> {
        Topic::ALL
            .into_iter()
            .find(|topic| self.topic_hash(*topic) == *hash)
    }

    /// Hands an event to the node without waiting; see the module docs for why.
    fn emit(&mut self, event: Event) {
        if let Err(error) = self.events.try_send(event) {
            match error {
                mpsc::error::TrySendError::Full(event) => {
                    self.counters.events_dropped += 1;
                    warn!(event = ?event, "event channel full; event dropped");
                }
                mpsc::error::TrySendError::Closed(_) => {}
            }
        }
    }
}

/// Why a gossip message was not surfaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GossipRejection {
    UnknownTopic,
    Unsigned,
    Oversized,
    NotMember,
}

/// Whether an outbound failure was caused by what the peer sent (a frame our codec refused).
fn is_peer_fault(error: &request_response::OutboundFailure) -> bool {
    matches!(error, request_response::OutboundFailure::Io(error) if error.kind() == io::ErrorKind::InvalidData)
}

fn unix_time_ms() -> Option<u64> {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since_epoch.as_millis()).ok()
}

/// Subscribes to the federation's topics, listens, and dials the bootstrap peers.
pub(crate) fn start(swarm: &mut Swarm<Behaviour>, config: &Config) -> Result<(), Error> {
    for topic in Topic::ALL {
        let ident = gossipsub::IdentTopic::new(topic.wire_name(&config.federation_id));
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&ident)
            .map_err(|source| Error::Subscribe { topic, source })?;
    }
    for addr in &config.listen_addrs {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| Error::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    let mut routable = false;
    for addr in &config.bootstrap_addrs {
        if let Some(Protocol::P2p(peer)) = addr.iter().last() {
            let mut base = addr.clone();
            base.pop();
            swarm.behaviour_mut().kademlia.add_address(&peer, base);
            routable = true;
        }
        // A bootstrap peer that is down must not stop the node; it is retried through Kademlia.
        if let Err(error) = swarm.dial(addr.clone()) {
            warn!(addr = %addr, error = %error, "dialing bootstrap peer failed");
        }
    }
    if routable && let Err(error) = swarm.behaviour_mut().kademlia.bootstrap() {
        debug!(error = %error, "kademlia bootstrap not started");
    }
    Ok(())
}
