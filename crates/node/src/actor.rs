//! The node actor: one thread owns the [`Node`] (replica and store) while the daemon runs.
//!
//! Actor map:
//! ```text
//!  net::EventLoop ──Event──┐
//!  ticker ─────────Tick────┤
//!  API handlers ──Exec/Events/Status/Metrics──► inbox ──► Actor (this thread, owns Node + Syncer)
//!  outbound request tasks ─Response─┘                 │
//!                                                     └──► net::Client (publish, request, respond, set_members)
//! ```
//! Every arm calls a short synchronous function; network calls are spawned as tasks on the runtime so the actor
//! never waits on a peer. sled is only touched from this thread, never from the network loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use net::{Event, PeerId, Topic};
use registry::sync::{self, Announcement, Syncer};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::Node;
use crate::config::Config;
use crate::invite::{self, Redeem, Redeemed, Ticket, TicketError};

/// Capacity of the actor's inbox.
pub const INBOX_CAPACITY: usize = 1024;
/// First byte of an error answer to a request.
const ERROR_TAG: u8 = 6;
/// The answer to a push that was read.
const PUSH_ACK_TAG: u8 = 7;
/// A bootstrap peer that is not connected is dialed again this often, so a node finds a restarted peer (or a peer
/// finds it after its own restart) without an operator.
pub const REDIAL_INTERVAL_MS: u64 = 5_000;

/// A CLI command handed to the running node.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ExecRequest {
    /// The command line, without the program name.
    pub args: Vec<String>,
    /// The caller's working directory (relative paths are resolved against it).
    pub cwd: String,
}

/// What the command printed and its exit status.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ExecResponse {
    /// Exit status.
    pub status: u8,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs a CLI command against the daemon's node (provided by the CLI crate).
pub type Exec = Arc<dyn Fn(&mut Node, &ExecRequest, &NetworkStatus) -> ExecResponse + Send + Sync>;

/// A peer as `status` shows it.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct PeerStatus {
    /// libp2p peer id.
    pub peer_id: String,
    /// Member name.
    pub name: String,
    /// Member role.
    pub role: String,
    /// Connected now.
    pub connected: bool,
    /// When a pull from it last completed (Unix ms).
    pub last_sync_ms: Option<u64>,
    /// Changes accepted from it.
    pub accepted: u64,
    /// Changes from it that were rejected.
    pub rejected: u64,
}

/// The network side of `status`.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct NetworkStatus {
    /// This node's peer id.
    pub peer_id: String,
    /// Listen addresses with `/p2p/PEER_ID`.
    pub listen_addrs: Vec<String>,
    /// Connected members.
    pub peers: Vec<PeerStatus>,
    /// Rejected changes received from peers, by reason.
    pub rejections: BTreeMap<String, u64>,
    /// Bytes of sync messages received and sent.
    pub sync_bytes_in: u64,
    /// Bytes sent.
    pub sync_bytes_out: u64,
    /// Pull round trips completed.
    pub round_trips: u64,
    /// Bytes sent, by message kind: heads announcements, pull requests, pull responses.
    pub sync_bytes_out_by_kind: SyncBytes,
    /// Envelopes received from peers that this node already held (wasted transfer).
    pub duplicate_envelopes: u64,
    /// Bytes of heads announcements delivered to this node by gossip (an announcement is published once and
    /// delivered to every subscriber, so this is what announcements cost the network).
    pub announcement_bytes_received: u64,
    /// Outcome of the last invite redemption, if any.
    pub invite: Option<String>,
    /// Reachability, relays, and relayed or direct connections.
    #[serde(default)]
    pub nat: crate::nat::NatView,
}

/// Bytes sent, by message kind.
#[derive(Clone, Copy, Debug, Default, Serialize, serde::Deserialize)]
pub struct SyncBytes {
    /// Heads announcements published (counted once per publish, not per gossip hop).
    pub announcements: u64,
    /// Pull requests sent.
    pub requests: u64,
    /// Pull responses sent (and acknowledgements of pushes).
    pub responses: u64,
    /// Pushes of changes written here, to connected peers.
    pub pushes: u64,
}

/// What the actor receives.
pub enum Input {
    /// A network event.
    Net(Event),
    /// The answer to a request we sent.
    Response {
        /// The peer asked.
        peer: PeerId,
        /// Its answer.
        result: Result<Vec<u8>, net::Error>,
        /// What we asked.
        kind: Outbound,
    },
    /// A CLI command.
    Exec {
        /// The command.
        request: ExecRequest,
        /// Where to answer.
        reply: oneshot::Sender<ExecResponse>,
    },
    /// A batch of events to ingest (`POST /v1/events`).
    Events {
        /// JSON array or JSON lines.
        body: Vec<u8>,
        /// The ingestion report, or why the body was refused.
        reply: oneshot::Sender<Result<crate::events::IngestReport, String>>,
    },
    /// A status query.
    Status {
        /// Where to answer.
        reply: oneshot::Sender<(NetworkStatus, Vec<String>)>,
    },
    /// A metrics scrape.
    Metrics {
        /// Where to answer.
        reply: oneshot::Sender<String>,
    },
    /// Replace the operator's block set (`POST /v1/block`): connections to these peers close and are refused both
    /// ways; bootstrap peers no longer blocked are redialed at once.
    Block {
        /// The peers to block; empty lifts every operator block.
        peers: BTreeSet<PeerId>,
        /// Done, or why the network refused.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Housekeeping.
    Tick,
    /// Stop.
    Shutdown,
}

/// Kinds of outbound request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// A pull.
    Sync,
    /// An invite redemption.
    Redeem,
    /// A push of changes written here.
    Push,
}

#[derive(Default)]
struct Metrics {
    rejections: BTreeMap<String, u64>,
    accepted_remote: u64,
    bytes_in: u64,
    bytes_out: u64,
    bytes_out_by_kind: SyncBytes,
    duplicates: u64,
    announcement_bytes_in: u64,
    round_trips: u64,
    requests_served: u64,
    penalties: u64,
}

/// The actor's state.
pub struct Actor {
    node: Node,
    client: net::Client,
    runtime: tokio::runtime::Handle,
    inbox: mpsc::Sender<Input>,
    config: Config,
    exec: Exec,
    syncer: Syncer<PeerId>,
    local_peer: PeerId,
    connected: BTreeSet<PeerId>,
    listen_addrs: Vec<String>,
    members: Option<BTreeSet<PeerId>>,
    /// Changes written here, not pushed yet.
    push_queue: Vec<registry::Envelope>,
    /// Name and role of each unrevoked member, by peer id.
    member_names: BTreeMap<PeerId, (String, String)>,
    /// Council heads the member set was computed at.
    council_heads: Vec<registry::ChangeHash>,
    announced_heads: Vec<registry::ChangeHash>,
    dirty_since_ms: Option<u64>,
    dirty_own: bool,
    last_announce_ms: u64,
    last_redial_ms: u64,
    ticket: Option<Ticket>,
    redeem_in_flight: bool,
    invite_outcome: Option<String>,
    metrics: Metrics,
    nat: net::NatStatus,
}

/// Now, in Unix milliseconds: the node's one clock.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

impl Actor {
    /// Builds the actor.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node: Node,
        client: net::Client,
        runtime: tokio::runtime::Handle,
        inbox: mpsc::Sender<Input>,
        config: Config,
        exec: Exec,
        ticket: Option<Ticket>,
    ) -> Self {
        let local_peer = client.local_peer_id();
        Self {
            node,
            client,
            runtime,
            inbox,
            config,
            exec,
            syncer: Syncer::new(),
            local_peer,
            connected: BTreeSet::new(),
            listen_addrs: Vec::new(),
            members: None,
            push_queue: Vec::new(),
            member_names: BTreeMap::new(),
            council_heads: Vec::new(),
            announced_heads: Vec::new(),
            dirty_since_ms: Some(0),
            dirty_own: true,
            last_announce_ms: 0,
            last_redial_ms: now_ms(),
            ticket,
            redeem_in_flight: false,
            invite_outcome: None,
            metrics: Metrics::default(),
            nat: net::NatStatus::default(),
        }
    }

    /// Runs until [`Input::Shutdown`] or until every sender is gone.
    pub fn run(mut self, mut inbox: mpsc::Receiver<Input>) -> Node {
        self.update_members();
        while let Some(input) = inbox.blocking_recv() {
            match input {
                Input::Net(event) => self.on_event(event),
                Input::Response { peer, result, kind } => self.on_response(peer, result, kind),
                Input::Exec { request, reply } => {
                    let status = self.status();
                    let before = self.node.replica().heads();
                    let response = (self.exec)(&mut self.node, &request, &status);
                    let _ = reply.send(response);
                    self.queue_written(&before);
                    self.update_members();
                }
                Input::Events { body, reply } => {
                    let report = self.node.ingest_body(&body, now_ms() as i64);
                    let _ = reply.send(report.map_err(|e| e.to_string()));
                }
                Input::Status { reply } => {
                    let _ = reply.send((self.status(), self.node.heads()));
                }
                Input::Metrics { reply } => {
                    let _ = reply.send(self.metrics_text());
                }
                Input::Block { peers, reply } => self.on_block(peers, reply),
                Input::Tick => self.on_tick(),
                Input::Shutdown => break,
            }
            // Writes that came in while the actor was busy go out in one push per peer.
            if inbox.is_empty() {
                self.flush_pushes();
            }
        }
        if let Err(error) = self.node.flush() {
            tracing::error!(%error, "flushing received changes at shutdown failed");
        }
        if let Err(error) = self.node.compact() {
            tracing::warn!(%error, "snapshot at shutdown failed");
        }
        self.node
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::InboundRequest {
                peer,
                id,
                bytes,
                member,
            } => {
                let answer = self.answer(peer, &bytes, member);
                self.metrics.bytes_in += bytes.len() as u64;
                self.metrics.bytes_out += answer.len() as u64;
                self.metrics.bytes_out_by_kind.responses += answer.len() as u64;
                let client = self.client.clone();
                self.runtime.spawn(async move {
                    if let Err(error) = client.respond(id, answer).await {
                        tracing::debug!(%error, "response not sent");
                    }
                });
            }
            Event::Gossip {
                origin,
                topic: Topic::Heads,
                bytes,
                ..
            } => self.on_announcement(origin, &bytes),
            Event::Gossip { .. } | Event::PeerSubscribed { .. } => {}
            Event::PeerConnected { peer } => {
                tracing::info!(%peer, "peer connected");
                self.connected.insert(peer);
                self.maybe_redeem(peer);
                if self.is_member(&peer) {
                    let request = self.syncer.pull(peer, self.node.replica(), now_ms());
                    self.send_pull(peer, request);
                }
            }
            Event::PeerDisconnected { peer } => {
                tracing::info!(%peer, "peer disconnected");
                self.connected.remove(&peer);
                self.syncer.remove(&peer);
            }
            Event::NewListenAddr { addr } => {
                tracing::info!(%addr, "listening");
                self.listen_addrs
                    .push(format!("{addr}/p2p/{}", self.local_peer));
            }
            Event::NatChanged(status) => self.nat = status,
        }
    }

    /// Whether `peer` is a member (before the membership is known, every peer counts, so a joiner can sync).
    fn is_member(&self, peer: &PeerId) -> bool {
        self.members.as_ref().is_none_or(|m| m.contains(peer))
    }

    fn answer(&mut self, peer: PeerId, bytes: &[u8], member: bool) -> Vec<u8> {
        match bytes.first() {
            Some(&invite::REDEEM_TAG) => self.on_redeem(peer, &bytes[1..]).encode(),
            Some(_) if !member => error_answer("not a member of this federation"),
            Some(&sync::PUSH_TAG) => self.on_push(peer, bytes),
            Some(_) => match sync::Request::decode(bytes) {
                Ok(request) if Some(request.federation) == self.node.replica().federation() => {
                    self.metrics.requests_served += 1;
                    self.node.sync_respond(&mut self.syncer, &request)
                }
                Ok(_) => error_answer("wrong federation"),
                Err(error) => {
                    tracing::warn!(%peer, %error, "malformed sync request");
                    self.penalize(peer, "malformed sync request");
                    error_answer(&format!("malformed request: {error}"))
                }
            },
            None => {
                self.penalize(peer, "empty request");
                error_answer("empty request")
            }
        }
    }

    fn on_announcement(&mut self, origin: PeerId, bytes: &[u8]) {
        if !self.is_member(&origin) || origin == self.local_peer {
            return;
        }
        self.metrics.announcement_bytes_in += bytes.len() as u64;
        match Announcement::decode(bytes) {
            Ok(announcement) => {
                let request = self.syncer.on_announcement(
                    origin,
                    &announcement,
                    self.node.replica(),
                    now_ms(),
                );
                self.send_pull(origin, request);
            }
            Err(error) => {
                tracing::warn!(peer = %origin, %error, "malformed heads announcement");
                self.penalize(origin, "malformed announcement");
            }
        }
    }

    fn send_pull(&mut self, peer: PeerId, request: Option<sync::Request>) {
        if let Some(request) = request {
            self.send(peer, request.encode(), Outbound::Sync);
        }
    }

    fn send(&mut self, peer: PeerId, bytes: Vec<u8>, kind: Outbound) {
        self.metrics.bytes_out += bytes.len() as u64;
        if kind != Outbound::Push {
            self.metrics.bytes_out_by_kind.requests += bytes.len() as u64;
        }
        let client = self.client.clone();
        let inbox = self.inbox.clone();
        self.runtime.spawn(async move {
            let result = client.request(peer, bytes).await;
            let _ = inbox.send(Input::Response { peer, result, kind }).await;
        });
    }

    fn on_response(&mut self, peer: PeerId, result: Result<Vec<u8>, net::Error>, kind: Outbound) {
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::debug!(%peer, %error, "request failed");
                self.syncer.on_failure(&peer);
                self.send_followups();
                if kind == Outbound::Redeem {
                    self.redeem_in_flight = false;
                }
                return;
            }
        };
        self.metrics.bytes_in += bytes.len() as u64;
        match kind {
            Outbound::Redeem => self.on_redeemed(peer, &bytes),
            Outbound::Sync => self.on_sync_response(peer, &bytes),
            Outbound::Push => {
                if bytes.first() != Some(&PUSH_ACK_TAG) {
                    tracing::debug!(%peer, "push not taken");
                }
            }
        }
    }

    fn on_sync_response(&mut self, peer: PeerId, bytes: &[u8]) {
        self.metrics.round_trips += 1;
        let response = match self.syncer.decode_response(&peer, bytes) {
            Ok(Some(response)) => response,
            Ok(None) => {
                tracing::debug!(%peer, "late answer to an earlier pull ignored");
                return;
            }
            Err(error) => {
                if bytes.first() != Some(&ERROR_TAG) {
                    tracing::warn!(%peer, %error, "malformed sync response");
                    self.penalize(peer, "malformed sync response");
                }
                self.syncer.on_failure(&peer);
                self.send_followups();
                return;
            }
        };
        self.syncer.count_bytes(&peer, bytes.len());
        let (accepted, rejected) = self.absorb(peer, response.envelopes.clone());
        let next = self.syncer.on_response(
            &peer,
            &response,
            accepted,
            rejected,
            self.node.replica(),
            now_ms(),
        );
        if accepted > 0 {
            self.after_change(false);
        }
        self.send_pull(peer, next);
        self.send_followups();
    }

    /// Feeds envelopes from `peer` to the node (the one acceptance path); counts, logs and penalizes rejections.
    /// Returns (accepted, rejected).
    fn absorb(&mut self, peer: PeerId, envelopes: Vec<registry::Envelope>) -> (usize, usize) {
        let (accepted, rejected, penalized) = match self.node.receive_deferred(envelopes) {
            Ok(receipt) => {
                self.metrics.duplicates += receipt.duplicates as u64;
                for rejection in &receipt.rejected {
                    tracing::warn!(%peer, change = %rejection.change, reason = rejection.reason.code(), detail = %rejection.detail, "change from peer rejected");
                    *self
                        .metrics
                        .rejections
                        .entry(rejection.reason.code().to_owned())
                        .or_default() += 1;
                }
                // Own changes a removal took out (they built on an excluded change) were written again: share them.
                let reissued = self.node.take_reissued();
                if !reissued.is_empty() {
                    self.push_queue.extend(reissued);
                    self.after_change(true);
                }
                // Only what the peer could have checked itself counts against it: a change refused because of what
                // this replica holds (a revocation, an equivocation proof) is evidence an honest peer relays.
                let penalized = receipt
                    .rejected
                    .iter()
                    .filter(|r| r.reason.penalizes())
                    .count();
                (receipt.accepted.len(), receipt.rejected.len(), penalized)
            }
            Err(error) => {
                tracing::error!(%peer, %error, "storing received changes failed");
                (0, 0, 0)
            }
        };
        self.metrics.accepted_remote += accepted as u64;
        if penalized > 0 && (penalized as u64) >= self.config.rejections_per_penalty {
            self.penalize(peer, "sent rejected changes");
        }
        (accepted, rejected)
    }

    /// Changes a peer just wrote, pushed unasked: the same acceptance path as a pull's response.
    fn on_push(&mut self, peer: PeerId, bytes: &[u8]) -> Vec<u8> {
        let push = match sync::Push::decode(bytes) {
            Ok(push) => push,
            Err(error) => {
                tracing::warn!(%peer, %error, "malformed push");
                self.penalize(peer, "malformed push");
                return error_answer(&format!("malformed push: {error}"));
            }
        };
        let (accepted, _) = self.absorb(peer, push.response.envelopes.clone());
        let next = self
            .syncer
            .after_push(peer, &push, self.node.replica(), now_ms());
        // No relay announcement: the author pushed to every member it is connected to and announces itself to
        // those it is not.
        if accepted > 0 {
            self.update_members();
        }
        self.send_pull(peer, next);
        vec![PUSH_ACK_TAG]
    }

    /// Queues the changes written here since `before` for the next push.
    fn queue_written(&mut self, before: &[registry::ChangeHash]) {
        let written = self.node.replica().changes_since(before);
        self.push_queue.extend(
            written
                .iter()
                .filter_map(|hash| self.node.stored_envelope(hash)),
        );
    }

    /// Pushes the queued changes written here to every connected member, in one message per peer. Pushed peers have
    /// them; an announcement follows only when the push did not reach every other member (the periodic summary
    /// still goes out).
    fn flush_pushes(&mut self) {
        if self.push_queue.is_empty() {
            return;
        }
        let envelopes = std::mem::take(&mut self.push_queue);
        let peers: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|p| self.members.as_ref().is_some_and(|m| m.contains(p)))
            .copied()
            .collect();
        let bytes = sync::Push::encode_envelopes(envelopes);
        for peer in &peers {
            let bytes = bytes.clone();
            self.metrics.bytes_out_by_kind.pushes += bytes.len() as u64;
            self.send(*peer, bytes, Outbound::Push);
        }
        let others = self.members.as_ref().map_or(usize::MAX, |m| {
            m.iter().filter(|p| **p != self.local_peer).count()
        });
        if peers.is_empty() || peers.len() < others {
            self.after_change(true);
        }
    }

    /// Pulls that waited for another pull to end.
    fn send_followups(&mut self) {
        for (peer, request) in self.syncer.followups(self.node.replica(), now_ms()) {
            self.send_pull(peer, Some(request));
        }
    }

    fn penalize(&mut self, peer: PeerId, why: &str) {
        self.metrics.penalties += 1;
        tracing::warn!(%peer, why, "peer penalized");
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let _ = client.penalize(peer).await;
        });
    }

    /// After the registry changed: announce soon (a change written here after `announce_debounce_ms`, one only
    /// relayed from a peer after `relay_announce_debounce_ms`: every peer heard its author's announcement, so the
    /// relay matters only to those that could not pull from the author), and refresh the member gate.
    fn after_change(&mut self, own: bool) {
        if self.node.replica().heads() != self.announced_heads {
            if self.dirty_since_ms.is_none() {
                self.dirty_since_ms = Some(now_ms());
            }
            self.dirty_own |= own;
        }
        self.update_members();
    }

    /// Refreshes the member gate and the names `status` shows, when the council document changed (members live
    /// there only, so most changes cost one heads comparison, not a rebuild of the view).
    fn update_members(&mut self) {
        let council_heads = self.node.replica().doc_heads(&model::DocId::Council);
        if council_heads == self.council_heads {
            return;
        }
        let view = self.node.council_view();
        if view.members.is_empty() {
            return;
        }
        self.council_heads = council_heads;
        // A revoked member is no member: it is not listed even while its connection waits out the grace period.
        self.member_names = view
            .members
            .values()
            .filter(|m| !m.revoked)
            .filter_map(|m| {
                let key: identity::PublicKey = m.public_key.parse().ok()?;
                let peer = net::peer_id_from_public_key(key.as_bytes()).ok()?;
                Some((peer, (m.name.clone(), m.role.to_string())))
            })
            .collect();
        let members: BTreeSet<PeerId> = self.member_names.keys().copied().collect();
        if self.members.as_ref() == Some(&members) {
            return;
        }
        for revoked in self
            .members
            .iter()
            .flatten()
            .filter(|p| !members.contains(p))
        {
            tracing::info!(peer = %revoked, "member revoked; disconnecting");
        }
        self.members = Some(members.clone());
        let client = self.client.clone();
        self.runtime.spawn(async move {
            if let Err(error) = client.set_members(members).await {
                tracing::warn!(%error, "setting the member gate failed");
            }
        });
    }

    fn on_tick(&mut self) {
        self.flush_pushes();
        // Changes taken from peers become durable once per tick (group commit), not once per message.
        if let Err(error) = self.node.flush() {
            tracing::error!(%error, "flushing received changes failed");
        }
        let now = now_ms();
        self.syncer.on_tick(now);
        if self.syncer.has_deferred() {
            self.send_followups();
        }
        let debounce = if self.dirty_own {
            self.config.announce_debounce_ms
        } else {
            self.config.relay_announce_debounce_ms
        };
        let debounced = self
            .dirty_since_ms
            .is_some_and(|since| now.saturating_sub(since) >= debounce);
        let periodic =
            now.saturating_sub(self.last_announce_ms) >= self.config.announce_interval_ms;
        if debounced {
            self.announce(now);
        } else if periodic {
            self.announce_summary(now);
        }
        if now.saturating_sub(self.last_redial_ms) >= REDIAL_INTERVAL_MS {
            self.last_redial_ms = now;
            self.redial();
            // Envelopes that waited for dependencies that never came are dropped (their senders still hold them).
            if let Err(error) = self.node.expire_pending(now) {
                tracing::error!(%error, "expiring pending changes failed");
            }
        }
    }

    /// Dials the bootstrap addresses whose peer is not connected (an address without `/p2p/ID` only while no peer
    /// is connected at all).
    fn redial(&self) {
        // Keep the mesh's address book on disk, so a restart finds members without the node that invited it.
        let client = self.client.clone();
        let dir = self.node.dir().to_path_buf();
        self.runtime.spawn(async move {
            let Ok(book) = client.member_addresses().await else {
                return;
            };
            if book.is_empty() {
                return;
            }
            // File I/O stays off the async workers.
            let written =
                tokio::task::spawn_blocking(move || crate::daemon::remember_members(&dir, &book))
                    .await;
            if let Ok(Err(error)) = written {
                tracing::warn!(%error, "remembering member addresses failed");
            }
        });
        for addr in self.unconnected_bootstrap() {
            let client = self.client.clone();
            self.runtime.spawn(async move {
                if let Err(error) = client.dial(addr.clone()).await {
                    tracing::debug!(%addr, %error, "redial failed");
                }
            });
        }
    }

    /// Sets the operator's block set, then redials (in that order, so no dial races the unblocking).
    fn on_block(&self, peers: BTreeSet<PeerId>, reply: oneshot::Sender<Result<(), String>>) {
        tracing::info!(peers = peers.len(), "operator block set");
        let redial = self.unconnected_bootstrap();
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let result = client
                .set_blocked_peers(peers)
                .await
                .map_err(|e| e.to_string());
            let ok = result.is_ok();
            let _ = reply.send(result);
            if !ok {
                return;
            }
            // Dials of peers still blocked fail at once, locally.
            for addr in redial {
                let client = client.clone();
                tokio::spawn(async move {
                    if let Err(error) = client.dial(addr.clone()).await {
                        tracing::debug!(%addr, %error, "redial failed");
                    }
                });
            }
        });
    }

    fn unconnected_bootstrap(&self) -> Vec<net::Multiaddr> {
        let mut out = Vec::new();
        for text in &self.config.bootstrap_addrs {
            let peer = text
                .rsplit_once("/p2p/")
                .and_then(|(_, id)| id.parse::<PeerId>().ok());
            let connected = match peer {
                Some(peer) => self.connected.contains(&peer),
                None => !self.connected.is_empty(),
            };
            let Ok(addr) = text.parse::<net::Multiaddr>() else {
                continue;
            };
            if !connected {
                out.push(addr);
            }
        }
        out
    }

    fn announce(&mut self, now: u64) {
        self.dirty_since_ms = None;
        self.dirty_own = false;
        self.last_announce_ms = now;
        let Some(announcement) = self.syncer.announcement(self.node.replica()) else {
            return;
        };
        self.announced_heads = self.node.replica().heads();
        self.publish(announcement.encode());
    }

    /// The periodic anti-entropy announcement: digest and count only (see `Announcement::summary`).
    fn announce_summary(&mut self, now: u64) {
        self.last_announce_ms = now;
        let Some(summary) = self.syncer.summary(self.node.replica()) else {
            return;
        };
        self.publish(summary.encode());
    }

    fn publish(&mut self, bytes: Vec<u8>) {
        self.metrics.bytes_out += bytes.len() as u64;
        self.metrics.bytes_out_by_kind.announcements += bytes.len() as u64;
        let client = self.client.clone();
        self.runtime.spawn(async move {
            if let Err(error) = client.publish(Topic::Heads, bytes).await {
                tracing::debug!(%error, "announcement not published");
            }
        });
    }

    fn maybe_redeem(&mut self, peer: PeerId) {
        let Some(ticket) = self.ticket.clone() else {
            return;
        };
        if self.redeem_in_flight {
            return;
        }
        self.redeem_in_flight = true;
        tracing::info!(%peer, "redeeming invite");
        let redeem = Redeem::new(ticket, self.node.keypair());
        self.send(peer, redeem.encode(), Outbound::Redeem);
    }

    fn on_redeemed(&mut self, peer: PeerId, bytes: &[u8]) {
        self.redeem_in_flight = false;
        let Some(answer) = Redeemed::decode(bytes) else {
            tracing::debug!(%peer, "peer did not take the invite; trying another");
            return;
        };
        match answer.result {
            Ok(change) => {
                tracing::info!(%peer, %change, "invite redeemed: admitted");
                self.invite_outcome = Some(format!("admitted by change {change}"));
                self.ticket = None;
                let _ = std::fs::remove_file(self.node_dir_ticket());
                let request = self.syncer.pull(peer, self.node.replica(), now_ms());
                self.send_pull(peer, request);
            }
            Err(reason) => {
                tracing::error!(%peer, %reason, "invite refused");
                self.invite_outcome = Some(format!("refused: {reason}"));
                self.ticket = None;
            }
        }
    }

    fn node_dir_ticket(&self) -> std::path::PathBuf {
        self.node.dir().join(invite::TICKET_FILE_NAME)
    }

    fn on_redeem(&mut self, peer: PeerId, json: &[u8]) -> Redeemed {
        let result = serde_json::from_slice::<Redeem>(json)
            .map_err(|e| format!("malformed redemption: {e}"))
            .and_then(|redeem| self.admit(peer, &redeem).map_err(|e| e.to_string()));
        if let Err(reason) = &result {
            tracing::warn!(%peer, %reason, "invite redemption refused");
        }
        Redeemed { result }
    }

    fn admit(&mut self, peer: PeerId, redeem: &Redeem) -> Result<String, TicketError> {
        let ticket = &redeem.ticket;
        ticket.verify(now_ms() as i64)?;
        let ours = self
            .node
            .replica()
            .federation()
            .map(|f| f.to_hex())
            .unwrap_or_default();
        if ticket.body.federation != ours {
            return Err(TicketError::WrongFederation {
                ticket: ticket.body.federation.clone(),
                ours,
            });
        }
        let key = redeem.joining_key()?;
        if net::peer_id_from_public_key(key.as_bytes()).ok() != Some(peer) {
            return Err(TicketError::Malformed(
                "the redeeming connection is not the key being admitted".into(),
            ));
        }
        let view = self.node.view();
        if let Some(by) = view.invites.get(&ticket.body.nonce) {
            return Err(TicketError::Replayed { by: by.clone() });
        }
        let issuer_is_council = view
            .members
            .get(&ticket.body.issuer)
            .is_some_and(|m| m.role == model::Role::Council && !m.revoked);
        if !issuer_is_council {
            return Err(TicketError::IssuerNotCouncil {
                issuer: ticket.body.issuer.clone(),
            });
        }
        if view.members.contains_key(&key.to_hex()) {
            return Err(TicketError::Malformed(format!("{key} is already a member")));
        }
        let member = model::Member {
            public_key: key.to_hex(),
            name: ticket.body.name.clone(),
            role: ticket.body.role,
            scope: ticket.body.scope.clone(),
            admitted_by: self.node.identity().public_key,
            admitted_at_ms: now_ms() as i64,
            revoked: false,
        };
        let op = registry::Op::AdmitInvited {
            member,
            nonce: ticket.body.nonce.clone(),
        };
        let outcome = self
            .node
            .write(&op, now_ms() as i64)
            .map_err(|e| TicketError::Malformed(format!("admission failed: {e}")))?;
        self.after_change(true);
        Ok(outcome.change)
    }

    fn status(&self) -> NetworkStatus {
        let peers = self
            .connected
            .iter()
            .filter_map(|peer| {
                let (name, role) = self.member_names.get(peer)?;
                let sync = self.syncer.peers().get(peer);
                Some(PeerStatus {
                    peer_id: peer.to_string(),
                    name: name.clone(),
                    role: role.clone(),
                    connected: true,
                    last_sync_ms: sync.and_then(|s| s.last_sync_ms),
                    accepted: sync.map_or(0, |s| s.accepted),
                    rejected: sync.map_or(0, |s| s.rejected),
                })
            })
            .collect();
        NetworkStatus {
            peer_id: self.local_peer.to_string(),
            listen_addrs: self.listen_addrs.clone(),
            peers,
            rejections: self.metrics.rejections.clone(),
            sync_bytes_in: self.metrics.bytes_in,
            sync_bytes_out: self.metrics.bytes_out,
            round_trips: self.metrics.round_trips,
            sync_bytes_out_by_kind: self.metrics.bytes_out_by_kind,
            duplicate_envelopes: self.metrics.duplicates,
            announcement_bytes_received: self.metrics.announcement_bytes_in,
            invite: self.invite_outcome.clone(),
            nat: crate::nat::NatView::from(&self.nat),
        }
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, help: &str, value: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        };
        line(
            "growthmesh_changes",
            "Accepted registry changes held.",
            self.node.replica().len() as u64,
        );
        line(
            "growthmesh_pending_changes",
            "Changes waiting for dependencies.",
            self.node.replica().pending_len() as u64,
        );
        line(
            "growthmesh_peers_connected",
            "Connected peers.",
            self.connected.len() as u64,
        );
        line(
            "growthmesh_remote_changes_accepted_total",
            "Changes accepted from peers.",
            self.metrics.accepted_remote,
        );
        line(
            "growthmesh_sync_bytes_received_total",
            "Sync bytes received.",
            self.metrics.bytes_in,
        );
        line(
            "growthmesh_sync_bytes_sent_total",
            "Sync bytes sent.",
            self.metrics.bytes_out,
        );
        line(
            "growthmesh_sync_round_trips_total",
            "Pull round trips.",
            self.metrics.round_trips,
        );
        line(
            "growthmesh_sync_requests_served_total",
            "Pull requests answered.",
            self.metrics.requests_served,
        );
        line(
            "growthmesh_peer_penalties_total",
            "Penalties given to peers.",
            self.metrics.penalties,
        );
        out.push_str("# HELP growthmesh_rejected_changes_total Changes from peers rejected, by reason.\n# TYPE growthmesh_rejected_changes_total counter\n");
        for (reason, count) in &self.metrics.rejections {
            out.push_str(&format!(
                "growthmesh_rejected_changes_total{{reason=\"{reason}\"}} {count}\n"
            ));
        }
        out
    }
}

fn error_answer(message: &str) -> Vec<u8> {
    let mut out = vec![ERROR_TAG];
    out.extend_from_slice(message.as_bytes());
    out
}

/// Parses a ticket waiting in the data dir, if any.
pub fn pending_ticket(node: &Node) -> Option<Result<Ticket, TicketError>> {
    let text = std::fs::read_to_string(node.dir().join(invite::TICKET_FILE_NAME)).ok()?;
    Some(Ticket::parse(&text, now_ms() as i64))
}
