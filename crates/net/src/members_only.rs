//! Serves a protocol to members only: wraps a behaviour (Kademlia) so that inbound streams of a non-member's
//! connection are dropped unread, and no answer (a `FIND_NODE` listing members) ever reaches a stranger.
//!
//! Whether a connection is served follows the member set: a connection opened before its peer was admitted is
//! served from the moment the event loop passes the new set, and one of a revoked member stops being served. Before
//! the node knows its member set every connection is served, so a fresh node can bootstrap. Outbound streams are
//! untouched: we only ask members, because the routing table holds members only.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use libp2p::{
    Multiaddr, PeerId,
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent,
        ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, SubstreamProtocol, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm, behaviour::ConnectionEstablished,
        handler::ConnectionEvent,
    },
};
use tracing::debug;

/// The wrapped behaviour and which connections it serves; derefs to the inner behaviour.
pub(crate) struct MembersOnly<B> {
    inner: B,
    members: Option<BTreeSet<PeerId>>,
    connections: HashMap<ConnectionId, PeerId>,
    /// Serve or stop serving, per connection, waiting to be told to its handler.
    notices: VecDeque<(PeerId, ConnectionId, bool)>,
}

impl<B> MembersOnly<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self {
            inner,
            members: None,
            connections: HashMap::new(),
            notices: VecDeque::new(),
        }
    }

    /// Serves members' connections only, from now on.
    pub(crate) fn set_members(&mut self, members: BTreeSet<PeerId>) {
        for (connection, peer) in &self.connections {
            self.notices
                .push_back((*peer, *connection, members.contains(peer)));
        }
        self.members = Some(members);
    }

    fn serves(&self, peer: &PeerId) -> bool {
        self.members.as_ref().is_none_or(|m| m.contains(peer))
    }
}

impl<B> Deref for MembersOnly<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> DerefMut for MembersOnly<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

/// What the behaviour tells a connection's handler.
#[derive(Debug)]
pub(crate) enum HandlerIn<E> {
    /// For the inner handler.
    Inner(E),
    /// Whether to serve inbound streams from now on.
    Serve(bool),
}

/// The inner handler, with inbound streams dropped while the peer is not served.
pub(crate) struct Handler<H> {
    inner: H,
    serving: bool,
}

impl<H: ConnectionHandler> ConnectionHandler for Handler<H> {
    type FromBehaviour = HandlerIn<H::FromBehaviour>;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.inner.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        match event {
            HandlerIn::Inner(event) => self.inner.on_behaviour_event(event),
            HandlerIn::Serve(serving) => self.serving = serving,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            '_,
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        if !self.serving && matches!(event, ConnectionEvent::FullyNegotiatedInbound(_)) {
            // Dropping the negotiated stream closes it: the non-member gets no answer.
            debug!("inbound stream of a non-member dropped");
            return;
        }
        self.inner.on_connection_event(event);
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for MembersOnly<B> {
    type ConnectionHandler = Handler<THandler<B>>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let inner = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        Ok(Handler {
            inner,
            serving: self.serves(&peer),
        })
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let inner = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        Ok(Handler {
            inner,
            serving: self.serves(&peer),
        })
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            }) => {
                self.connections.insert(connection_id, peer_id);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.connections.remove(&connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer, connection, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some((peer_id, connection, serve)) = self.notices.pop_front() {
            return Poll::Ready(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::Serve(serve),
            });
        }
        self.inner
            .poll(cx)
            .map(|event| event.map_in(HandlerIn::Inner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        crate::Keypair::from_secret_seed([seed; 32]).peer_id()
    }

    #[test]
    fn serves_everyone_until_the_member_set_is_known_then_members_only() {
        let mut wrapped = MembersOnly::new(());
        assert!(wrapped.serves(&peer(1)));
        wrapped
            .connections
            .insert(ConnectionId::new_unchecked(1), peer(1));
        wrapped
            .connections
            .insert(ConnectionId::new_unchecked(2), peer(2));
        wrapped.set_members(BTreeSet::from([peer(1)]));
        assert!(wrapped.serves(&peer(1)));
        assert!(!wrapped.serves(&peer(2)));
        // Every open connection is told whether it is served now.
        let mut notices: Vec<_> = wrapped.notices.drain(..).collect();
        notices.sort_by_key(|(peer, _, _)| *peer);
        let mut expected = vec![
            (peer(1), ConnectionId::new_unchecked(1), true),
            (peer(2), ConnectionId::new_unchecked(2), false),
        ];
        expected.sort_by_key(|(peer, _, _)| *peer);
        assert_eq!(notices, expected);
    }
}
