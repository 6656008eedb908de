//! `net::Client`: the cloneable handle the node uses to command the event loop; each call is a `Command` with a
//! `oneshot` reply.

use std::{collections::BTreeSet, time::Duration};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::{Counters, Error, NatStatus, PeerInfo, RequestId, Topic};

/// Commands queued for the event loop before `Client` calls wait for room.
pub const COMMAND_CHANNEL_CAPACITY: usize = 64;

/// A request to the event loop; the loop answers on `reply`.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs {
        reply: oneshot::Sender<Vec<Multiaddr>>,
    },
    MemberAddresses {
        reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    Dial {
        addr: Multiaddr,
        reply: oneshot::Sender<Result<PeerId, Error>>,
    },
    Publish {
        topic: Topic,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Request {
        peer: PeerId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    },
    Respond {
        id: RequestId,
        bytes: Vec<u8>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    SetMembers {
        members: BTreeSet<PeerId>,
        reply: oneshot::Sender<()>,
    },
    AllowTemporarily {
        peer: PeerId,
        duration: Duration,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    EndAllowance {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    Block {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    Unblock {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    SetBlockedPeers {
        peers: BTreeSet<PeerId>,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Penalize {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    ConnectedPeers {
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    Counters {
        reply: oneshot::Sender<Counters>,
    },
    NatStatus {
        reply: oneshot::Sender<NatStatus>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to a running network. Clone it freely; the event loop ends when the last clone is dropped or on
/// `shutdown`. Every method fails with `Error::EventLoopStopped` once the loop has ended.
#[derive(Debug, Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
}

impl Client {
    pub(crate) fn new(commands: mpsc::Sender<Command>, local_peer_id: PeerId) -> Self {
        Self {
            commands,
            local_peer_id,
        }
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// Addresses the node currently listens on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// The addresses members announced (identify) or Kademlia returned for them: the mesh's address book, which a
    /// node keeps so that it can rejoin the mesh after a restart without the node that invited it.
    pub async fn member_addresses(&self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, Error> {
        self.call(|reply| Command::MemberAddresses { reply }).await
    }

    /// Dials `addr` and resolves once the connection is established, with the peer's id. An address ending in
    /// `/p2p/<peer-id>` is checked against the id the remote proves.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        self.call(|reply| Command::Dial { addr, reply }).await?
    }

    /// Publishes `bytes` on `topic`. Fails with `Error::Publish` when no peer has subscribed yet.
    pub async fn publish(&self, topic: Topic, bytes: Vec<u8>) -> Result<(), Error> {
        self.call(|reply| Command::Publish {
            topic,
            bytes,
            reply,
        })
        .await?
    }

    /// Sends a sync request to `peer` (dialing it if needed and its address is known) and awaits the response.
    pub async fn request(&self, peer: PeerId, bytes: Vec<u8>) -> Result<Vec<u8>, Error> {
        self.call(|reply| Command::Request { peer, bytes, reply })
            .await?
    }

    /// Answers the inbound request `id` from an `Event::InboundRequest`.
    pub async fn respond(&self, id: RequestId, bytes: Vec<u8>) -> Result<(), Error> {
        self.call(|reply| Command::Respond { id, bytes, reply })
            .await?
    }

    /// Closes the gate to everyone outside `members`.
    ///
    /// Until the first call the gate is open: any peer may connect, request and gossip, so a fresh node can
    /// bootstrap and redeem an invite. Afterwards a connection from a peer outside the set (and without a
    /// temporary allowance) is closed once `gate_grace_period_ms` (default 1 s) has passed, its requests are
    /// refused with `Refusal::NotMember` (requests up to `max_admission_request_bytes` are surfaced with
    /// `member: false`, so the node can serve an invite redemption and grant an allowance), and its gossip is
    /// ignored. A stranger whose connection closed without it having been let in is backed off (its peer id, and
    /// its IP address once several peers failed from there), strangers hold at most `max_non_member_connections`
    /// connections, and Kademlia routes members only. Call again whenever membership changes.
    pub async fn set_members(&self, members: BTreeSet<PeerId>) -> Result<(), Error> {
        self.call(|reply| Command::SetMembers { members, reply })
            .await
    }

    /// Lets `peer` through the gate for `duration` although it is not a member: for a council node serving an
    /// invite redemption from a key not yet in the registry.
    pub async fn allow_temporarily(&self, peer: PeerId, duration: Duration) -> Result<(), Error> {
        self.call(|reply| Command::AllowTemporarily {
            peer,
            duration,
            reply,
        })
        .await?
    }

    /// Refuses `peer`'s admission: its temporary allowance (if any) ends within half a second, enough for the answer
    /// saying why to reach it; then the gate closes its connection and backs it off like any stranger.
    pub async fn end_allowance(&self, peer: PeerId) -> Result<(), Error> {
        self.call(|reply| Command::EndAllowance { peer, reply })
            .await
    }

    /// Closes every connection to `peer` and refuses new ones until `unblock`.
    pub async fn block(&self, peer: PeerId) -> Result<(), Error> {
        self.call(|reply| Command::Block { peer, reply }).await
    }

    /// Accepts connections from `peer` again and forgets its penalties (unless the operator's set blocks it).
    pub async fn unblock(&self, peer: PeerId) -> Result<(), Error> {
        self.call(|reply| Command::Unblock { peer, reply }).await
    }

    /// Replaces the operator's set of blocked peers (at most [`crate::MAX_BLOCKED_PEERS`]), for example the other
    /// sides of a simulated partition: connections to newly blocked peers close at once, new connections with them
    /// are refused both ways (dials included), and gossip they originate is dropped even when others relay it.
    /// Peers left out of the new set may connect again, unless `block` or penalties block them; nothing is redialed
    /// here, the caller dials whom it wants back. An empty set lifts every operator block.
    pub async fn set_blocked_peers(&self, peers: BTreeSet<PeerId>) -> Result<(), Error> {
        self.call(|reply| Command::SetBlockedPeers { peers, reply })
            .await?
    }

    /// Lowers `peer`'s gossipsub score for misbehaviour found by the caller (for example a rejected change);
    /// after `penalties_before_block` penalties the peer is blocked.
    pub async fn penalize(&self, peer: PeerId) -> Result<(), Error> {
        self.call(|reply| Command::Penalize { peer, reply }).await
    }

    /// Peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.call(|reply| Command::ConnectedPeers { reply }).await
    }

    /// What the event loop refused or dropped so far.
    pub async fn counters(&self) -> Result<Counters, Error> {
        self.call(|reply| Command::Counters { reply }).await
    }

    /// Reachability (AutoNAT), external addresses, relay reservations, and every connection, relayed or direct.
    pub async fn nat_status(&self) -> Result<NatStatus, Error> {
        self.call(|reply| Command::NatStatus { reply }).await
    }

    /// Stops the event loop and closes every connection. Succeeds if the loop has already stopped.
    pub async fn shutdown(&self) -> Result<(), Error> {
        match self.call(|reply| Command::Shutdown { reply }).await {
            Ok(()) | Err(Error::EventLoopStopped) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn call<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, response) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| Error::EventLoopStopped)?;
        response.await.map_err(|_| Error::EventLoopStopped)
    }
}
