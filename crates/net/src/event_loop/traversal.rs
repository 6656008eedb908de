//! The event loop's NAT traversal glue: what AutoNAT, the relay (client and server) and DCUtR report, the relay
//! reservations a private node keeps, and the `NatStatus` handed to the node. The policy lives in `crate::nat`.

use std::{io, time::Instant};

use libp2p::{autonat, core::transport::ListenerId, dcutr, relay};
use tracing::{debug, info, warn};

use super::EventLoop;
use crate::{
    Event,
    nat::{ConnectionInfo, NatStatus, Reachability, RelayCandidate},
};

impl EventLoop {
    /// Runs with the mesh tick: keeps relay reservations as the reachability asks, and sends the node a changed
    /// status (again, if the last one was dropped on a full channel).
    pub(super) fn on_traversal_tick(&mut self, now: Instant) {
        self.maintain_relays(now);
        self.report_nat();
    }

    pub(super) fn nat_status(&self) -> NatStatus {
        let mut connections: Vec<ConnectionInfo> = self
            .peers
            .iter()
            .flat_map(|(peer, state)| {
                state.connections.values().map(|c| ConnectionInfo {
                    peer_id: *peer,
                    remote_addr: c.remote.clone(),
                    relayed: c.relayed,
                })
            })
            .collect();
        connections.sort();
        NatStatus {
            reachability: self.reachability,
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            relays: self.relays.held(),
            connections,
        }
    }

    fn report_nat(&mut self) {
        let status = self.nat_status();
        if self.nat_reported.as_ref() == Some(&status) {
            return;
        }
        match self.events.try_send(Event::NatChanged(status.clone())) {
            Ok(()) => self.nat_reported = Some(status),
            // Not counted as a dropped event: the next tick sends the status again.
            Err(error) => debug!(error = %error, "NAT status not delivered; retried next tick"),
        }
    }

    /// Private: reserve on members that relay and that we reached directly. Public: give the reservations up.
    fn maintain_relays(&mut self, now: Instant) {
        if self.reachability == Reachability::Public {
            for listener in self.relays.release_all() {
                info!("reachable directly; relay reservation released");
                self.swarm.remove_listener(listener);
            }
            return;
        }
        let chosen = self
            .relays
            .choose(self.reachability, self.relay_candidates(), now);
        for candidate in chosen {
            let addr = candidate.circuit_addr();
            match self.swarm.listen_on(addr.clone()) {
                Ok(listener) => {
                    info!(relay = %candidate.peer, addr = %addr, "asking a member for a relay reservation");
                    self.relays.requested(candidate.peer, listener);
                }
                Err(error) => {
                    warn!(relay = %candidate.peer, addr = %addr, error = %error, "relay listen refused")
                }
            }
        }
    }

    /// Connected members (never blocked ones) that run a relay server, each with an address we dialed directly.
    fn relay_candidates(&self) -> Vec<RelayCandidate> {
        let mut candidates: Vec<RelayCandidate> = self
            .peers
            .iter()
            .filter(|(peer, state)| {
                state.relay_hop && self.members.contains(peer) && !self.blocks.is_blocked(peer)
            })
            .filter_map(|(peer, state)| {
                let direct = state
                    .connections
                    .values()
                    .find(|c| c.dialed && !c.relayed)?;
                Some(RelayCandidate {
                    peer: *peer,
                    addr: direct.remote.clone(),
                })
            })
            .collect();
        // Deterministic order: the same relays are chosen on every tick until one goes away.
        candidates.sort_by_key(|c| c.peer);
        candidates
    }

    pub(super) fn on_listener_closed(
        &mut self,
        listener: ListenerId,
        reason: Result<(), io::Error>,
    ) {
        if let Some(relay) = self.relays.closed(listener, Instant::now()) {
            match reason {
                Ok(()) => info!(relay = %relay, "relay reservation closed"),
                Err(error) => {
                    info!(relay = %relay, error = %error, "relay reservation lost or refused")
                }
            }
        }
    }

    pub(super) fn on_autonat_event(&mut self, event: autonat::Event) {
        match event {
            autonat::Event::StatusChanged { old, new } => {
                info!(old = ?old, new = ?new, "reachability changed");
                self.reachability = Reachability::from(&new);
            }
            autonat::Event::InboundProbe(probe) => debug!(probe = ?probe, "AutoNAT inbound probe"),
            autonat::Event::OutboundProbe(probe) => {
                debug!(probe = ?probe, "AutoNAT outbound probe")
            }
        }
    }

    pub(super) fn on_relay_client_event(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal {
                    info!(relay = %relay_peer_id, "relay reservation accepted");
                }
                self.relays.accepted(&relay_peer_id);
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                debug!(relay = %relay_peer_id, "relayed connection out established");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                debug!(peer = %src_peer_id, "relayed connection in established");
            }
        }
    }

    pub(super) fn on_dcutr_event(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(connection) => {
                info!(peer = %event.remote_peer_id, connection = ?connection, "hole punch succeeded: direct connection")
            }
            Err(error) => {
                info!(peer = %event.remote_peer_id, error = %error, "hole punch failed; the connection stays relayed")
            }
        }
    }
}

/// The relay server decides by itself (members only, `nat::relay_server_config`); we only log what it did.
pub(super) fn on_relay_server_event(event: relay::Event) {
    match event {
        relay::Event::ReservationReqAccepted { src_peer_id, .. } => {
            debug!(peer = %src_peer_id, "relay reservation granted")
        }
        relay::Event::ReservationReqDenied { src_peer_id, .. } => {
            debug!(peer = %src_peer_id, "relay reservation denied")
        }
        relay::Event::CircuitReqAccepted {
            src_peer_id,
            dst_peer_id,
        } => debug!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit opened"),
        relay::Event::CircuitReqDenied {
            src_peer_id,
            dst_peer_id,
            ..
        } => debug!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit denied"),
        relay::Event::CircuitClosed {
            src_peer_id,
            dst_peer_id,
            ..
        } => debug!(src = %src_peer_id, dst = %dst_peer_id, "relay circuit closed"),
        other => debug!(event = ?other, "relay server event"),
    }
}
