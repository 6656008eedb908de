//! `net`: moves opaque bytes between growthmesh members over libp2p and reports what happened; it decides nothing
//! about what the bytes mean.
//!
//! The registry and sync logic are sans-IO and live elsewhere; the node feeds them the `Event`s this crate emits
//! and sends their output with a `Client`. Only this crate imports libp2p.
//!
//! # Layout
//! - [`spawn`] (here): builds the swarm (TCP + QUIC, noise, yamux) and starts the event loop on tokio.
//! - `config`: [`Config`] and [`Limits`], serde with defaults for every field.
//! - `keys`: [`Keypair`] from the node's 32-byte ed25519 seed; [`peer_id_from_public_key`].
//! - `behaviour`: the composed libp2p behaviour: block list, connection limits, identify, ping, gossipsub (signed,
//!   scored), request-response `/growthmesh/sync/2`, mDNS (switchable), Kademlia (server mode), AutoNAT, relay
//!   client, relay server (switchable), DCUtR.
//! - `codec`: the sync wire format; length-prefixed frames refused before reading when oversized.
//! - `gate`: admission policy: member set, temporary allowances, per-peer rate limits, penalty counts.
//! - `admission`: the behaviour that owns the gate and applies it when a connection opens (back-offs, slots).
//! - `members_only`: serves Kademlia to members only (a stranger's inbound Kademlia streams are dropped unread).
//! - `backoff`: strangers that failed to get in, by peer and by IP address (pure, `now` a parameter).
//! - `nat`: NAT traversal policy: [`Reachability`], [`NatStatus`], the members-only relay limiter and AutoNAT
//!   dial-back filter, which members a private node reserves relay slots on.
//! - `event_loop`: `EventLoop`, the one task that owns the `Swarm`; `event_loop::traversal` handles what AutoNAT,
//!   the relay and DCUtR report.
//! - `client`: [`Client`], the cloneable handle sending commands with `oneshot` replies.
//! - `types`: [`Event`], [`Topic`], [`RequestId`], [`PeerInfo`], [`Counters`]; `codec` exports [`Refusal`].
//! - `error`: [`Error`].
//!
//! # The gate
//! Until the node calls [`Client::set_members`] the gate is open, so a fresh node can bootstrap and redeem an
//! invite. From then on, peers outside the set are disconnected after `gate_grace_period_ms` (default 1 s), their
//! requests are refused unseen (small ones are surfaced with `member: false`, so the node can serve an invite
//! redemption) and their gossip ignored, unless [`Client::allow_temporarily`] lets them in for a while (the node
//! grants it to a joiner whose redemption passed its cheap checks; [`Client::end_allowance`] ends it when the
//! redemption is refused). At connection time (`admission`):
//! - a stranger whose connection closed without it having been let in is refused for 2 s, doubling with each
//!   further failure up to 5 min; its IP address is refused (10 s, doubling up to 10 min) only once 8 distinct
//!   peers failed from it within a minute, so one failing joiner never locks out its neighbours on a shared address
//!   (127.0.0.1 in tests, an office NAT); at most 4096 peers and 4096 addresses are remembered;
//! - strangers hold at most `max_non_member_connections` (default 8) connections; the rest of `max_connections` is
//!   reserved for members;
//! - members and peers holding an allowance are never refused by these two rules.
//!
//! Kademlia inserts members only into its routing table (`BucketInserts::Manual`; the event loop adds a peer once
//! the member set names it and removes it when revoked), so the peers it hands out in `FIND_NODE` answers are
//! members, never strangers, and `members_only` serves Kademlia to members only: a stranger's `FIND_NODE` (even
//! within its grace period) is dropped unanswered. Identify announces only our own listen addresses.
//!
//! # NAT traversal
//! Every node asks connected peers to dial it back (AutoNAT) and reports the verdict in [`NatStatus`]
//! ([`Client::nat_status`], [`Event::NatChanged`]). A node found private reserves a slot on up to [`MAX_RELAYS`]
//! members that run a relay server (`Config::relay_server`) and that it reached directly, and listens on
//! `/p2p-circuit` through them; members dial it there, and DCUtR then tries to replace the relayed connection by
//! a direct, hole-punched one. Relay servers and AutoNAT dial-backs serve members only. The gate judges a
//! connection by its peer, relayed or not: a non-member's relayed connection closes after the grace period too.
//!
//! # Blocking
//! A peer is blocked (connections closed and refused both ways, its gossip dropped) while a penalty block
//! ([`Client::block`], or `penalties_before_block` penalties; lifted by [`Client::unblock`]) or the operator's set
//! ([`Client::set_blocked_peers`], replaced as a whole: how the simulator partitions real nodes) holds it.
//!
//! # Limits
//! Channels and pending maps are bounded by the named constants [`EVENT_CHANNEL_CAPACITY`],
//! [`COMMAND_CHANNEL_CAPACITY`], [`MAX_PENDING_REQUESTS`], [`MAX_PENDING_RESPONSES`], [`MAX_PENDING_DIALS`],
//! [`MAX_BLOCKED_PEERS`];
//! message sizes, request rates and timeouts by [`Limits`]. Nothing a peer sends panics the loop: bad frames are
//! errors, counted in [`Counters`], and penalize the peer.

#![deny(missing_docs)]

mod admission;
mod backoff;
mod behaviour;
mod client;
mod codec;
mod config;
mod error;
mod event_loop;
mod gate;
mod keys;
mod members_only;
mod nat;
mod types;

use std::time::Duration;

pub use libp2p::{Multiaddr, PeerId};
use libp2p::{noise, tcp, yamux};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{behaviour::Behaviour, event_loop::EventLoop};
pub use crate::{
    client::{COMMAND_CHANNEL_CAPACITY, Client},
    codec::Refusal,
    config::{Config, Limits},
    error::Error,
    event_loop::{
        EVENT_CHANNEL_CAPACITY, MAX_PENDING_DIALS, MAX_PENDING_REQUESTS, MAX_PENDING_RESPONSES,
    },
    gate::MAX_BLOCKED_PEERS,
    keys::{Keypair, peer_id_from_public_key},
    nat::{ConnectionInfo, MAX_RELAYS, NatStatus, Reachability, is_relayed},
    types::{Counters, Event, PeerInfo, RequestId, Topic},
};

/// Builds the swarm, listens on `config.listen_addrs`, dials the bootstrap peers and spawns the event loop.
///
/// Must be called from within a tokio runtime. Returns the handle and the receiving end of the event channel;
/// the channel closes when the event loop stops.
pub fn spawn(keypair: Keypair, config: Config) -> Result<(Client, mpsc::Receiver<Event>), Error> {
    validate_federation_id(&config.federation_id)?;
    let prepared = Behaviour::prepare(&keypair, &config)?;
    let members = nat::MemberSet::default();
    let idle_timeout = Duration::from_millis(config.limits.idle_connection_timeout_ms);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.libp2p().clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|source| Error::Transport { source })?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|source| Error::Transport { source })?
        .with_behaviour(|_, relay_client| {
            Behaviour::new(&keypair, &config, prepared, relay_client, &members)
        })
        .unwrap_or_else(|never| match never {})
        .with_swarm_config(|swarm_config| swarm_config.with_idle_connection_timeout(idle_timeout))
        .build();
    event_loop::start(&mut swarm, &config)?;

    let local_peer_id = keypair.peer_id();
    let (command_sender, command_receiver) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
    let (event_sender, event_receiver) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let event_loop = EventLoop::new(swarm, &config, members, command_receiver, event_sender);
    let span = tracing::info_span!("net", local_peer = %local_peer_id);
    tokio::spawn(event_loop.run().instrument(span));
    Ok((Client::new(command_sender, local_peer_id), event_receiver))
}

fn validate_federation_id(federation_id: &str) -> Result<(), Error> {
    if federation_id.is_empty() || hex::decode(federation_id).is_err() {
        return Err(Error::FederationIdInvalid {
            federation_id: federation_id.to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_id_must_be_hex() {
        assert!(validate_federation_id("ab12").is_ok());
        assert!(validate_federation_id("").is_err());
        assert!(validate_federation_id("xyz").is_err());
        assert!(validate_federation_id("abc").is_err());
    }
}
