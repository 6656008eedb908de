//! NAT traversal policy: who may use this node as a relay (members only), which members a node found private by
//! AutoNAT reserves a relay slot on, and what the node reports about its reachability. The libp2p parts (AutoNAT v1,
//! relay v2 client and server, DCUtR) are composed in `behaviour`; the event loop (`event_loop::traversal`) feeds
//! this module what they report and acts on its answers.
//!
//! Pure bookkeeping apart from [`DialBackFilter`], a connection-level behaviour: every method that depends on time
//! takes `now`, so it is tested without a network or a clock.

use std::{
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    fmt,
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use libp2p::{
    Multiaddr, PeerId, autonat,
    core::{
        Endpoint,
        multiaddr::Protocol,
        transport::{ListenerId, PortUse},
    },
    relay,
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm, dummy,
    },
};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::Error;

/// Relays a private node holds reservations on at once: two, so losing one relay does not make it unreachable.
pub const MAX_RELAYS: usize = 2;
/// After a reservation was refused or lost, the same relay is asked again no sooner than this.
const RELAY_RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// Relays remembered in the back-off list; past this the list is pruned of expired entries or not extended.
const MAX_RELAY_BACKOFF_ENTRIES: usize = 256;
/// A relayed circuit between two members lasts at most this long (the mesh then redials it). libp2p's default of two
/// minutes suits a public relay serving strangers; ours serves members only and carries their sync traffic while
/// hole punching fails (symmetric NATs).
const RELAY_MAX_CIRCUIT_DURATION: Duration = Duration::from_secs(30 * 60);
/// Bytes one circuit carries at most, both ways together; libp2p's default (128 KiB) is less than one sync response.
const RELAY_MAX_CIRCUIT_BYTES: u64 = 256 * 1024 * 1024;
/// AutoNAT: first probe this soon after start (libp2p's default is 15 s; members connect within a second or two).
const AUTONAT_BOOT_DELAY: Duration = Duration::from_secs(2);
/// AutoNAT: probe again this often while the status is unknown or not yet confident.
const AUTONAT_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// AutoNAT: once confident, probe again this often (a NAT or a firewall may change).
const AUTONAT_REFRESH_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// AutoNAT: the same member is asked to dial back no more often than this.
const AUTONAT_THROTTLE_SERVER_PERIOD: Duration = Duration::from_secs(15);

/// Whether this node can be dialed from outside, as AutoNAT last found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// No probe answered yet (no member connected, or every probe failed without a verdict).
    #[default]
    Unknown,
    /// A member dialed this node back at one of its addresses.
    Public,
    /// Members tried and could not dial back: the node is behind a NAT or a firewall and listens through relays.
    Private,
}

impl Reachability {
    /// The name `status` prints, the same as the serde form.
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        }
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&autonat::NatStatus> for Reachability {
    fn from(status: &autonat::NatStatus) -> Self {
        match status {
            autonat::NatStatus::Public(_) => Reachability::Public,
            autonat::NatStatus::Private => Reachability::Private,
            autonat::NatStatus::Unknown => Reachability::Unknown,
        }
    }
}

/// What the node knows about its own reachability and how its peers are connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStatus {
    /// AutoNAT's verdict.
    pub reachability: Reachability,
    /// Addresses confirmed reachable from outside: by an AutoNAT dial-back, or a relay's `/p2p-circuit` address once
    /// the relay accepted the reservation.
    pub external_addrs: Vec<Multiaddr>,
    /// Members holding a relay reservation for this node.
    pub relays: Vec<PeerId>,
    /// Every open connection, sorted by peer.
    pub connections: Vec<ConnectionInfo>,
}

/// One open connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectionInfo {
    /// The peer at the other end.
    pub peer_id: PeerId,
    /// The peer's address on this connection (a relayed one we dialed contains `/p2p-circuit`).
    pub remote_addr: Multiaddr,
    /// Whether the connection runs through a relay (a circuit) rather than directly (hole punched or dialed).
    pub relayed: bool,
}

/// Whether `addr` is a relayed (`/p2p-circuit`) address.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|protocol| protocol == Protocol::P2pCircuit)
}

/// The member set as the relay server's limiters and the dial-back filter see it.
///
/// Shared (the one `Arc<RwLock<_>>` of the crate) because libp2p keeps those inside the swarm, as boxed limiters and
/// a behaviour, where the event loop cannot hand them a new set by value. The event loop is the only writer
/// (`Client::set_members`); reads happen once per reservation, circuit or dial-back. A poisoned lock still holds a
/// whole set (writes replace it in one assignment), so it is read through.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberSet(Arc<RwLock<Option<BTreeSet<PeerId>>>>);

impl MemberSet {
    pub(crate) fn replace(&self, members: BTreeSet<PeerId>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(members);
    }

    /// Whether `peer` is a known member; `false` while the set is unknown.
    pub(crate) fn contains(&self, peer: &PeerId) -> bool {
        let members = self.0.read().unwrap_or_else(PoisonError::into_inner);
        members.as_ref().is_some_and(|m| m.contains(peer))
    }

    /// Like the gate: everyone until the set is known, then members only.
    pub(crate) fn permits(&self, peer: &PeerId) -> bool {
        let members = self.0.read().unwrap_or_else(PoisonError::into_inner);
        members.as_ref().is_none_or(|m| m.contains(peer))
    }
}

/// A relay "rate limiter" that admits members only: libp2p asks every limiter before it accepts a reservation or a
/// circuit, so this is where the relay server refuses strangers. Until the member set is known it refuses everyone.
struct MembersOnly {
    members: MemberSet,
    what: &'static str,
}

impl relay::RateLimiter for MembersOnly {
    fn try_next(&mut self, peer: PeerId, addr: &Multiaddr, _now: Instant) -> bool {
        let member = self.members.contains(&peer);
        if !member {
            debug!(peer = %peer, addr = %addr, what = self.what, "relay refused to a non-member");
        }
        member
    }
}

/// The relay server's configuration: libp2p's defaults (reservation and circuit rates per peer and per IP), members
/// only, and circuits long and large enough to carry sync traffic.
pub(crate) fn relay_server_config(members: &MemberSet) -> relay::Config {
    let mut config = relay::Config {
        max_circuit_duration: RELAY_MAX_CIRCUIT_DURATION,
        max_circuit_bytes: RELAY_MAX_CIRCUIT_BYTES,
        ..relay::Config::default()
    };
    // First, so a stranger's request is refused before it uses up a token of the per-IP limiters.
    config.reservation_rate_limiters.insert(
        0,
        Box::new(MembersOnly {
            members: members.clone(),
            what: "reservation",
        }),
    );
    config.circuit_src_rate_limiters.insert(
        0,
        Box::new(MembersOnly {
            members: members.clone(),
            what: "circuit",
        }),
    );
    config
}

/// AutoNAT v1: every node is a client and a server. Private addresses count: a federation may live on a VPN or a
/// LAN, where "public" means "members can dial it".
pub(crate) fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: AUTONAT_BOOT_DELAY,
        retry_interval: AUTONAT_RETRY_INTERVAL,
        refresh_interval: AUTONAT_REFRESH_INTERVAL,
        throttle_server_period: AUTONAT_THROTTLE_SERVER_PERIOD,
        only_global_ips: false,
        ..autonat::Config::default()
    }
}

/// Refuses AutoNAT dial-backs to non-members, so the AutoNAT server serves members only.
///
/// A dial-back opens a new connection to the peer that asked; were it allowed for a stranger, each new connection
/// would start a new grace period at the gate, and a stranger could keep itself connected by asking again and again.
/// AutoNAT is the only part of the swarm that dials with a fresh port (`PortUse::New`, so the probe does not slip
/// through the NAT mapping of the connection it was asked on), which is how such a dial is recognised here.
pub(crate) struct DialBackFilter {
    members: MemberSet,
}

impl DialBackFilter {
    pub(crate) fn new(members: MemberSet) -> Self {
        Self { members }
    }
}

/// Whether an outbound connection to `peer` dialed with `port_use` may stand.
fn dial_back_permitted(members: &MemberSet, peer: &PeerId, port_use: PortUse) -> bool {
    port_use == PortUse::Reuse || members.permits(peer)
}

impl NetworkBehaviour for DialBackFilter {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if dial_back_permitted(&self.members, &peer, port_use) {
            return Ok(dummy::ConnectionHandler);
        }
        debug!(peer = %peer, addr = %addr, "AutoNAT dial-back to a non-member refused");
        Err(ConnectionDenied::new(Error::DialBackRefused { peer }))
    }

    fn on_swarm_event(&mut self, _event: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// A member this node could reserve a relay slot on: it runs a relay server (identify lists the hop protocol) and
/// this node reached it directly at `addr`, an address it dialed itself, so the address works from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelayCandidate {
    pub(crate) peer: PeerId,
    pub(crate) addr: Multiaddr,
}

impl RelayCandidate {
    /// The address to listen on: `<relay addr>/p2p/<relay>/p2p-circuit`.
    pub(crate) fn circuit_addr(&self) -> Multiaddr {
        let mut addr = self.addr.clone();
        if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
            addr.push(Protocol::P2p(self.peer));
        }
        addr.push(Protocol::P2pCircuit);
        addr
    }
}

/// Reservations asked for or held, by relay, with the listener each one runs on.
#[derive(Debug, Default)]
pub(crate) struct Relays {
    reservations: BTreeMap<PeerId, Reservation>,
    /// Relays not to ask again before the given instant (a reservation refused or lost).
    backoff: BTreeMap<PeerId, Instant>,
}

#[derive(Debug)]
struct Reservation {
    listener: ListenerId,
    accepted: bool,
}

impl Relays {
    /// The candidates to ask for a reservation now: none unless the node is private, else candidates neither in use
    /// nor backing off, up to [`MAX_RELAYS`] reservations in all.
    pub(crate) fn choose(
        &self,
        reachability: Reachability,
        candidates: Vec<RelayCandidate>,
        now: Instant,
    ) -> Vec<RelayCandidate> {
        if reachability != Reachability::Private {
            return Vec::new();
        }
        let room = MAX_RELAYS.saturating_sub(self.reservations.len());
        candidates
            .into_iter()
            .filter(|c| {
                !self.reservations.contains_key(&c.peer)
                    && self.backoff.get(&c.peer).is_none_or(|until| *until <= now)
            })
            .take(room)
            .collect()
    }

    pub(crate) fn requested(&mut self, relay: PeerId, listener: ListenerId) {
        self.reservations.insert(
            relay,
            Reservation {
                listener,
                accepted: false,
            },
        );
    }

    pub(crate) fn accepted(&mut self, relay: &PeerId) {
        if let Some(reservation) = self.reservations.get_mut(relay) {
            reservation.accepted = true;
        }
    }

    /// A listener closed; if it was a relay's, that relay is forgotten and backs off. Returns the relay.
    pub(crate) fn closed(&mut self, listener: ListenerId, now: Instant) -> Option<PeerId> {
        let relay = self
            .reservations
            .iter()
            .find(|(_, r)| r.listener == listener)
            .map(|(peer, _)| *peer)?;
        self.reservations.remove(&relay);
        self.backoff.retain(|_, until| *until > now);
        if self.backoff.len() < MAX_RELAY_BACKOFF_ENTRIES {
            self.backoff.insert(relay, now + RELAY_RETRY_BACKOFF);
        }
        Some(relay)
    }

    /// Gives up every reservation (the node became public): the listeners to remove.
    pub(crate) fn release_all(&mut self) -> Vec<ListenerId> {
        std::mem::take(&mut self.reservations)
            .into_values()
            .map(|r| r.listener)
            .collect()
    }

    /// Relays that accepted a reservation.
    pub(crate) fn held(&self) -> Vec<PeerId> {
        self.reservations
            .iter()
            .filter(|(_, r)| r.accepted)
            .map(|(peer, _)| *peer)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        crate::Keypair::from_secret_seed([seed; 32]).peer_id()
    }

    fn candidate(seed: u8) -> RelayCandidate {
        RelayCandidate {
            peer: peer(seed),
            addr: format!("/ip4/10.0.0.{seed}/udp/4001/quic-v1")
                .parse()
                .expect("valid multiaddr"),
        }
    }

    #[test]
    fn relay_admits_members_only_and_nobody_before_the_set_is_known() {
        let members = MemberSet::default();
        let mut limiter = MembersOnly {
            members: members.clone(),
            what: "reservation",
        };
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().expect("valid");
        let now = Instant::now();
        assert!(!relay::RateLimiter::try_next(
            &mut limiter,
            peer(1),
            &addr,
            now
        ));
        members.replace(BTreeSet::from([peer(1)]));
        assert!(relay::RateLimiter::try_next(
            &mut limiter,
            peer(1),
            &addr,
            now
        ));
        assert!(!relay::RateLimiter::try_next(
            &mut limiter,
            peer(2),
            &addr,
            now
        ));
        // A revoked member is refused from the next request on.
        members.replace(BTreeSet::new());
        assert!(!relay::RateLimiter::try_next(
            &mut limiter,
            peer(1),
            &addr,
            now
        ));
    }

    #[test]
    fn relay_server_config_puts_the_member_check_first() {
        let members = MemberSet::default();
        members.replace(BTreeSet::from([peer(1)]));
        let mut config = relay_server_config(&members);
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/1".parse().expect("valid");
        let now = Instant::now();
        assert!(!config.reservation_rate_limiters[0].try_next(peer(2), &addr, now));
        assert!(config.reservation_rate_limiters[0].try_next(peer(1), &addr, now));
        assert!(!config.circuit_src_rate_limiters[0].try_next(peer(2), &addr, now));
        assert!(config.max_circuit_bytes >= RELAY_MAX_CIRCUIT_BYTES);
    }

    #[test]
    fn dial_backs_go_to_members_only_once_the_set_is_known() {
        let members = MemberSet::default();
        // The gate is open before the set is known, and so is the filter.
        assert!(dial_back_permitted(&members, &peer(2), PortUse::New));
        members.replace(BTreeSet::from([peer(1)]));
        assert!(dial_back_permitted(&members, &peer(1), PortUse::New));
        assert!(!dial_back_permitted(&members, &peer(2), PortUse::New));
        // Ordinary dials (the mesh, Client::dial, hole punches) reuse the listening port and are not filtered here.
        assert!(dial_back_permitted(&members, &peer(2), PortUse::Reuse));
    }

    #[test]
    fn circuit_address_names_the_relay_once() {
        let plain = candidate(1);
        assert_eq!(
            plain.circuit_addr().to_string(),
            format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{}/p2p-circuit", peer(1))
        );
        let mut with_peer = candidate(1);
        with_peer.addr.push(Protocol::P2p(peer(1)));
        assert_eq!(with_peer.circuit_addr(), plain.circuit_addr());
        assert!(is_relayed(&plain.circuit_addr()));
        assert!(!is_relayed(&plain.addr));
    }

    #[test]
    fn relays_are_chosen_only_when_private_and_up_to_the_limit() {
        let mut relays = Relays::default();
        let now = Instant::now();
        let all = vec![candidate(1), candidate(2), candidate(3)];
        assert!(
            relays
                .choose(Reachability::Unknown, all.clone(), now)
                .is_empty()
        );
        assert!(
            relays
                .choose(Reachability::Public, all.clone(), now)
                .is_empty()
        );
        let chosen = relays.choose(Reachability::Private, all.clone(), now);
        assert_eq!(chosen, vec![candidate(1), candidate(2)]);
        relays.requested(peer(1), ListenerId::next());
        // One slot left, and relay 1 is in use already.
        assert_eq!(
            relays.choose(Reachability::Private, all, now),
            vec![candidate(2)]
        );
    }

    #[test]
    fn a_lost_relay_backs_off_then_is_asked_again() {
        let mut relays = Relays::default();
        let now = Instant::now();
        let listener = ListenerId::next();
        relays.requested(peer(1), listener);
        assert!(relays.held().is_empty());
        relays.accepted(&peer(1));
        assert_eq!(relays.held(), vec![peer(1)]);
        assert_eq!(relays.closed(ListenerId::next(), now), None);
        assert_eq!(relays.closed(listener, now), Some(peer(1)));
        assert!(relays.held().is_empty());
        assert!(
            relays
                .choose(Reachability::Private, vec![candidate(1)], now)
                .is_empty()
        );
        let later = now + RELAY_RETRY_BACKOFF;
        assert_eq!(
            relays.choose(Reachability::Private, vec![candidate(1)], later),
            vec![candidate(1)]
        );
    }

    #[test]
    fn becoming_public_releases_every_reservation() {
        let mut relays = Relays::default();
        let (first, second) = (ListenerId::next(), ListenerId::next());
        relays.requested(peer(1), first);
        relays.requested(peer(2), second);
        let released = relays.release_all();
        assert_eq!(released.len(), 2);
        assert!(released.contains(&first) && released.contains(&second));
        assert!(relays.held().is_empty());
    }

    #[test]
    fn reachability_serializes_as_it_prints() {
        #[derive(Serialize)]
        struct Wrapper {
            value: Reachability,
        }
        for reachability in [
            Reachability::Unknown,
            Reachability::Public,
            Reachability::Private,
        ] {
            let text = toml::to_string(&Wrapper {
                value: reachability,
            })
            .expect("serializes");
            assert_eq!(text.trim(), format!("value = \"{reachability}\""));
        }
    }
}
