//! The member gate at connection time: a `NetworkBehaviour` that owns the [`Gate`] and refuses a stranger's
//! inbound connection before any protocol runs on it, when the stranger (or its address) is backed off or when
//! strangers already fill the connections they may hold.
//!
//! Rules, for an inbound connection once the node gave its member set (before that everyone is let in, so a fresh
//! node can bootstrap):
//! - a member, or a peer holding a temporary allowance (an invite redemption in flight), is always let in here
//!   (the general `max_connections` limit of `connection_limits` still applies);
//! - a stranger is refused while [`Backoff`] refuses it or its IP address;
//! - a stranger is refused when connections of non-members already number `max_non_member_connections`, so
//!   strangers cannot take the connection slots members need.
//!
//! A stranger whose last connection closes while the gate does not let it in (it did not redeem within the grace
//! period, its redemption was refused, it was blocked) is recorded as a failure in [`Backoff`].

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
    time::Instant,
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    multiaddr::Protocol,
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, behaviour::ConnectionEstablished, dummy,
    },
};
use tracing::debug;

use crate::{
    backoff::{Backoff, Refused},
    gate::Gate,
};

/// Why a stranger's inbound connection was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The peer failed to get in recently.
    #[error("peer {peer} is backed off for another {remaining_ms} ms")]
    PeerBackedOff { peer: PeerId, remaining_ms: u128 },
    /// Too many peers failed from this address recently.
    #[error("address {ip} is backed off for another {remaining_ms} ms")]
    AddressBackedOff { ip: IpAddr, remaining_ms: u128 },
    /// Non-members already hold every connection they may hold.
    #[error("non-members already hold {limit} connections")]
    NonMemberSlotsFull { limit: usize },
}

/// The connection-time gate; see the module docs.
pub(crate) struct Behaviour {
    /// Members, allowances, rate limits and penalties: the event loop reads and updates it through the swarm.
    pub(crate) gate: Gate,
    backoff: Backoff,
    /// Every established connection, with its peer and the remote IP address.
    connections: HashMap<ConnectionId, (PeerId, Option<IpAddr>)>,
    max_non_member_connections: usize,
}

impl Behaviour {
    pub(crate) fn new(gate: Gate, max_non_member_connections: usize) -> Self {
        Self {
            gate,
            backoff: Backoff::default(),
            connections: HashMap::new(),
            max_non_member_connections,
        }
    }

    /// Whether an inbound connection from `peer` at `ip` is let in; see the module docs.
    fn check_inbound(&self, peer: PeerId, ip: Option<IpAddr>, now: Instant) -> Result<(), Denied> {
        let Some(members) = self.gate.members() else {
            return Ok(());
        };
        if self.gate.permits(&peer, now) {
            return Ok(());
        }
        match self.backoff.refused(&peer, ip, now) {
            Some(Refused::Peer { remaining }) => {
                return Err(Denied::PeerBackedOff {
                    peer,
                    remaining_ms: remaining.as_millis(),
                });
            }
            Some(Refused::Address { remaining }) => {
                return Err(Denied::AddressBackedOff {
                    ip: ip.expect("an address is refused only when known"),
                    remaining_ms: remaining.as_millis(),
                });
            }
            None => {}
        }
        let strangers = self
            .connections
            .values()
            .filter(|(other, _)| !members.contains(other))
            .count();
        if strangers >= self.max_non_member_connections {
            return Err(Denied::NonMemberSlotsFull {
                limit: self.max_non_member_connections,
            });
        }
        Ok(())
    }

    /// Forgets `peer`'s failures (the operator unblocked it).
    pub(crate) fn forgive(&mut self, peer: &PeerId) {
        self.backoff.forgive(peer);
    }

    fn on_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        remaining: usize,
        now: Instant,
    ) {
        let ip = self.connections.remove(&connection).and_then(|(_, ip)| ip);
        if remaining > 0 || self.gate.members().is_none() || self.gate.permits(&peer, now) {
            return;
        }
        debug!(peer = %peer, ip = ?ip, "stranger left without getting in; backing it off");
        self.backoff.record_failure(peer, ip, now);
    }
}

/// The IP address a multiaddr starts with, if any.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|protocol| match protocol {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let ip = ip_of(remote_addr);
        self.check_inbound(peer, ip, Instant::now())
            .map_err(|denied| {
                debug!(peer = %peer, reason = %denied, "inbound connection refused");
                ConnectionDenied::new(denied)
            })?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                let ip = ip_of(endpoint.get_remote_address());
                self.connections.insert(connection_id, (peer_id, ip));
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                ..
            }) => self.on_closed(
                peer_id,
                connection_id,
                remaining_established,
                Instant::now(),
            ),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

    use super::*;

    fn peer(seed: u8) -> PeerId {
        crate::Keypair::from_secret_seed([seed; 32]).peer_id()
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    fn gated(members: &[PeerId], max_non_member_connections: usize) -> Behaviour {
        let mut gate = Gate::new(10);
        gate.set_members(members.iter().copied().collect::<BTreeSet<_>>());
        Behaviour::new(gate, max_non_member_connections)
    }

    fn connect(behaviour: &mut Behaviour, peer: PeerId, index: usize) -> ConnectionId {
        let id = ConnectionId::new_unchecked(index);
        behaviour.connections.insert(id, (peer, HOME));
        id
    }

    #[test]
    fn everyone_gets_in_before_the_member_set_is_known() {
        let mut behaviour = Behaviour::new(Gate::new(10), 0);
        let now = Instant::now();
        behaviour.backoff.record_failure(peer(1), HOME, now);
        assert_eq!(behaviour.check_inbound(peer(1), HOME, now), Ok(()));
    }

    #[test]
    fn a_stranger_that_left_without_getting_in_is_backed_off_but_members_are_not() {
        let mut behaviour = gated(&[peer(1)], 8);
        let now = Instant::now();
        let stranger = connect(&mut behaviour, peer(2), 1);
        behaviour.on_closed(peer(2), stranger, 0, now);
        assert!(matches!(
            behaviour.check_inbound(peer(2), HOME, now),
            Err(Denied::PeerBackedOff { .. })
        ));
        // A member whose connection closed is not backed off.
        let member = connect(&mut behaviour, peer(1), 2);
        behaviour.on_closed(peer(1), member, 0, now);
        assert_eq!(behaviour.check_inbound(peer(1), HOME, now), Ok(()));
        // Once admitted (a member now), the stranger's back-off no longer applies.
        behaviour
            .gate
            .set_members(BTreeSet::from([peer(1), peer(2)]));
        assert_eq!(behaviour.check_inbound(peer(2), HOME, now), Ok(()));
    }

    #[test]
    fn a_stranger_closed_while_redeeming_is_not_backed_off_and_an_allowance_passes_a_back_off() {
        let mut behaviour = gated(&[peer(1)], 8);
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        behaviour
            .gate
            .allow_temporarily(peer(2), later, now)
            .expect("room");
        let redeeming = connect(&mut behaviour, peer(2), 1);
        behaviour.on_closed(peer(2), redeeming, 0, now);
        assert_eq!(behaviour.check_inbound(peer(2), HOME, now), Ok(()));
        behaviour.backoff.record_failure(peer(3), HOME, now);
        behaviour
            .gate
            .allow_temporarily(peer(3), later, now)
            .expect("room");
        assert_eq!(behaviour.check_inbound(peer(3), HOME, now), Ok(()));
    }

    #[test]
    fn only_the_last_connection_closing_counts() {
        let mut behaviour = gated(&[peer(1)], 8);
        let now = Instant::now();
        let first = connect(&mut behaviour, peer(2), 1);
        connect(&mut behaviour, peer(2), 2);
        behaviour.on_closed(peer(2), first, 1, now);
        assert_eq!(behaviour.check_inbound(peer(2), HOME, now), Ok(()));
    }

    #[test]
    fn strangers_cannot_take_the_slots_reserved_for_members() {
        let mut behaviour = gated(&[peer(1), peer(2)], 2);
        let now = Instant::now();
        connect(&mut behaviour, peer(1), 1);
        connect(&mut behaviour, peer(10), 2);
        assert_eq!(behaviour.check_inbound(peer(11), HOME, now), Ok(()));
        connect(&mut behaviour, peer(11), 3);
        assert_eq!(
            behaviour.check_inbound(peer(12), HOME, now),
            Err(Denied::NonMemberSlotsFull { limit: 2 })
        );
        // Members still get in.
        assert_eq!(behaviour.check_inbound(peer(2), HOME, now), Ok(()));
    }

    #[test]
    fn the_address_of_a_connection_is_read_from_its_multiaddr() {
        let addr: Multiaddr = "/ip4/10.1.2.3/tcp/4001".parse().expect("valid");
        assert_eq!(ip_of(&addr), Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
        let dns: Multiaddr = "/dns4/example.org/tcp/4001".parse().expect("valid");
        assert_eq!(ip_of(&dns), None);
    }
}
