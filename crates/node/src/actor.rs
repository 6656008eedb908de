//! The node actor: one thread owns the [`Node`] (replica and store) while the daemon runs.
//!
//! Actor map:
//! ```text
//!  net::EventLoop ──Event──┐
//!  ticker ─────────Tick────┤
//!  API handlers ──Exec/Events/Status/Metrics──► inbox ──► Actor (this thread, owns Node + SyncMachine)
//!  outbound request tasks ─Response─┘                 │
//!                                                     └──► net::Client (publish, request, respond, set_members)
//! ```
//! Every arm calls a short synchronous function; network calls are spawned as tasks on the runtime so the actor
//! never waits on a peer. sled is only touched from this thread, never from the network loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use net::{Event, PeerId, Topic};
use registry::sync::{self, Absorbed, Answer, Output, Policy, SyncMachine};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::Node;
use crate::config::Config;
use crate::invite::{self, AdmissionFacts, Redeem, RedeemLimiter, Redeemed, Ticket, TicketError};

/// Capacity of the actor's inbox.
pub const INBOX_CAPACITY: usize = 1024;
/// A bootstrap peer that is not connected is dialed again this often, so a node finds a restarted peer (or a peer
/// finds it after its own restart) without an operator.
pub const REDIAL_INTERVAL_MS: u64 = 5_000;
/// How long a joiner whose redemption passed the cheap checks may stay connected while it is served (a member
/// forwarding it to a council member waits for the answer within this).
const REDEEM_ALLOWANCE: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a member waits for a council member's answer to a forwarded redemption, all attempts together.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// Connected members (besides this node) whose addresses `invite` puts in a ticket.
pub const MAX_TICKET_MEMBERS: usize = 4;

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
    /// When a push of its changes last arrived (Unix ms).
    #[serde(default)]
    pub last_push_ms: Option<u64>,
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
    /// Addresses (`ADDR/p2p/PEER_ID`) of connected members, as they announced them: `invite` names up to
    /// [`MAX_TICKET_MEMBERS`] of them in a ticket beside this node's own.
    #[serde(default)]
    pub member_addrs: Vec<String>,
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
        /// The sync machine's id of the request (0 for redemptions).
        id: u64,
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
    /// Segment calls sent with an app source's write key (`POST /v1/batch` and its kin), checked.
    Segment {
        /// The source whose write key was used.
        source: crate::sources::Source,
        /// The calls.
        request: crate::segment::Request,
        /// The ingestion report, or why the store failed.
        reply: oneshot::Sender<Result<crate::events::IngestReport, String>>,
    },
    /// A status query.
    Status {
        /// Where to answer.
        reply: oneshot::Sender<(NetworkStatus, Vec<String>)>,
    },
    /// A metrics scrape.
    Metrics {
        /// App requests the HTTP API answered, by outcome (`growthmesh_app_requests_total`).
        app: Vec<(String, u64)>,
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
    /// Publish bytes as they are on a gossip topic (`POST /v1/publish`).
    Publish {
        /// The topic.
        topic: Topic,
        /// The message.
        bytes: Vec<u8>,
        /// Sent when handed to the network.
        reply: oneshot::Sender<()>,
    },
    /// The network's member address book, fetched now and then (what `status` offers `invite`).
    MemberBook(Vec<(PeerId, Vec<net::Multiaddr>)>),
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
    /// Scorecard snapshots kept from peers, and refused by reason.
    scorecards_accepted: u64,
    events_purged: u64,
    scorecards_refused: BTreeMap<&'static str, u64>,
}

/// The actor's state.
pub struct Actor {
    node: Node,
    client: net::Client,
    runtime: tokio::runtime::Handle,
    inbox: mpsc::Sender<Input>,
    config: Config,
    exec: Exec,
    /// The sync policy (pushes, announcements, pulls, retries, penalties).
    machine: SyncMachine<PeerId>,
    local_peer: PeerId,
    connected: BTreeSet<PeerId>,
    listen_addrs: Vec<String>,
    members: Option<BTreeSet<PeerId>>,
    /// Name and role of each unrevoked member, by peer id.
    member_names: BTreeMap<PeerId, (String, String)>,
    /// Council heads the member set was computed at.
    council_heads: Vec<registry::ChangeHash>,
    last_redial_ms: u64,
    ticket: Option<Ticket>,
    redeem_in_flight: bool,
    /// Peers that answered our redemption with "try again later"; the next attempt goes to another one.
    redeem_tried: BTreeSet<PeerId>,
    invite_outcome: Option<String>,
    /// What redemptions are checked against before any signature is verified (refreshed with the member set).
    admission: AdmissionFacts,
    /// Council members by peer id (whom a redemption is forwarded to).
    council_peers: BTreeSet<PeerId>,
    redeem_limiter: RedeemLimiter,
    member_book: Vec<(PeerId, Vec<net::Multiaddr>)>,
    metrics: Metrics,
    nat: net::NatStatus,
    /// When this pod's key results were last measured and published (0: not yet, so the first tick does it).
    last_kr_refresh_ms: u64,
    /// When this pod's scorecard was last computed.
    last_scorecard_check_ms: u64,
    last_retention_ms: u64,
    /// This pod's last published scorecard (without its date, to tell a change), its bytes and when.
    last_scorecard: Option<(scorecard::Snapshot, Vec<u8>, u64)>,
    /// The features payload served to GrowthBook SDKs, replaced when it changes.
    features: watch::Sender<Option<Arc<crate::features::Features>>>,
    /// The registry heads the features payload was computed at.
    features_heads: Option<Vec<registry::ChangeHash>>,
    /// Segment requests ingested but not yet flushed, answered together after one flush (group commit).
    unacked: Vec<(
        oneshot::Sender<Result<crate::events::IngestReport, String>>,
        crate::events::IngestReport,
    )>,
}

/// Segment requests answered after one flush at most.
const MAX_UNACKED: usize = 64;

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
        let policy = Policy {
            announce_interval_ms: config.announce_interval_ms,
            announce_debounce_ms: config.announce_debounce_ms,
            relay_announce_debounce_ms: config.relay_announce_debounce_ms,
            rejections_per_penalty: config.rejections_per_penalty,
            // libp2p's request-response fails a request on a closed connection or its own timeout.
            transport_reports_loss: true,
            ..Policy::default()
        };
        Self {
            node,
            client,
            runtime,
            inbox,
            config,
            exec,
            machine: {
                let mut machine = SyncMachine::new(policy);
                machine.set_local(local_peer);
                machine
            },
            local_peer,
            connected: BTreeSet::new(),
            listen_addrs: Vec::new(),
            members: None,
            member_names: BTreeMap::new(),
            council_heads: Vec::new(),
            last_redial_ms: now_ms(),
            ticket,
            redeem_in_flight: false,
            redeem_tried: BTreeSet::new(),
            invite_outcome: None,
            admission: AdmissionFacts::default(),
            council_peers: BTreeSet::new(),
            redeem_limiter: RedeemLimiter::default(),
            member_book: Vec::new(),
            metrics: Metrics::default(),
            nat: net::NatStatus::default(),
            last_kr_refresh_ms: 0,
            last_scorecard_check_ms: 0,
            last_retention_ms: 0,
            last_scorecard: None,
            features: watch::Sender::new(None),
            features_heads: None,
            unacked: Vec::new(),
        }
    }

    /// Flushes what the unanswered Segment requests wrote and answers them: success only once durable.
    fn ack_ingested(&mut self) {
        let flushed = self.node.flush_events().map_err(|e| e.to_string());
        for (reply, report) in self.unacked.drain(..) {
            let _ = reply.send(flushed.clone().map(|()| report));
        }
    }

    /// The features payload as it stands, for the HTTP API (updated whenever the registry changes it).
    pub fn features(&self) -> watch::Receiver<Option<Arc<crate::features::Features>>> {
        self.features.subscribe()
    }

    /// The app sources, for the HTTP API.
    pub fn sources(&self) -> crate::sources::SourceIndex {
        self.node.source_index()
    }

    /// Computes the features payload again when the registry moved, and hands it to the API when it changed.
    fn refresh_features(&mut self) {
        let heads = self.node.replica().heads();
        if self.features_heads.as_ref() == Some(&heads) {
            return;
        }
        match self.node.features(now_ms() as i64) {
            Ok(features) => {
                self.features_heads = Some(heads);
                self.features.send_if_modified(|held| {
                    if held.as_ref().is_some_and(|h| h.etag == features.etag) {
                        return false;
                    }
                    tracing::info!(served = ?features.served, "features for app SDKs changed");
                    *held = Some(Arc::new(features));
                    true
                });
            }
            Err(error) => tracing::error!(%error, "computing the features payload failed"),
        }
    }

    /// Runs until [`Input::Shutdown`] or until every sender is gone.
    pub fn run(mut self, mut inbox: mpsc::Receiver<Input>) -> Node {
        self.update_members();
        self.refresh_features();
        while let Some(input) = inbox.blocking_recv() {
            match input {
                Input::Net(event) => self.on_event(event),
                Input::Response {
                    peer,
                    result,
                    kind,
                    id,
                } => self.on_response(peer, result, kind, id),
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
                Input::Segment {
                    source,
                    request,
                    reply,
                } => {
                    let report = self.node.ingest_segment(&source, &request, now_ms() as i64);
                    let _ = reply.send(report.map_err(|e| e.to_string()));
                }
                Input::Status { reply } => {
                    let _ = reply.send((self.status(), self.node.heads()));
                }
                Input::Metrics { app, reply } => self.on_metrics(app, reply),
                Input::Block { peers, reply } => self.on_block(peers, reply),
                Input::Publish {
                    topic,
                    bytes,
                    reply,
                } => {
                    tracing::info!(%topic, len = bytes.len(), "operator publish");
                    self.publish_on(topic, bytes);
                    let _ = reply.send(());
                }
                Input::MemberBook(book) => self.member_book = book,
                Input::Tick => self.on_tick(),
                Input::Shutdown => break,
            }
            // Segment requests that came in together are made durable by one flush, then answered.
            if !self.unacked.is_empty() && (inbox.is_empty() || self.unacked.len() >= MAX_UNACKED) {
                self.ack_ingested();
            }
            // Writes that came in while the actor was busy go out in one push per peer.
            if inbox.is_empty() {
                self.machine.flush(now_ms());
                self.refresh_features();
            }
            self.carry_out();
        }
        if !self.unacked.is_empty() {
            self.ack_ingested();
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
            } if matches!(
                bytes.first(),
                Some(&invite::REDEEM_TAG | &invite::FORWARDED_REDEEM_TAG)
            ) =>
            {
                self.metrics.bytes_in += bytes.len() as u64;
                self.on_redeem(peer, id, &bytes, member);
            }
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
            Event::Gossip {
                topic: Topic::Scorecards,
                bytes,
                ..
            } => self.on_scorecard(&bytes),
            Event::PeerSubscribed {
                topic: Topic::Scorecards,
                ..
            } => {
                // A new subscriber (a council node that just connected) gets this pod's scorecard now.
                if let Some((_, bytes, _)) = &self.last_scorecard {
                    self.publish_on(Topic::Scorecards, bytes.clone());
                }
            }
            Event::PeerSubscribed { .. } => {}
            Event::PeerConnected { peer } => {
                tracing::info!(%peer, "peer connected");
                self.connected.insert(peer);
                self.maybe_redeem(peer);
                self.machine.connected_quietly(peer);
                if self.is_member(&peer) {
                    self.machine.pull(peer, self.node.replica(), now_ms());
                }
            }
            Event::PeerDisconnected { peer } => {
                tracing::info!(%peer, "peer disconnected");
                self.connected.remove(&peer);
                self.machine.disconnected(&peer);
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
        match sync::Tag::of(bytes) {
            _ if bytes.is_empty() => {
                self.penalize(peer, "empty request");
                sync::error_answer("empty request")
            }
            _ if !member => sync::error_answer("not a member of this federation"),
            Some(sync::Tag::Push) => self.on_push(peer, bytes),
            _ => {
                self.metrics.requests_served += 1;
                self.node.sync_answer(&mut self.machine, peer, bytes)
            }
        }
    }

    fn on_announcement(&mut self, origin: PeerId, bytes: &[u8]) {
        if !self.is_member(&origin) || origin == self.local_peer {
            return;
        }
        self.metrics.announcement_bytes_in += bytes.len() as u64;
        self.machine
            .on_announcement(origin, bytes, self.node.replica(), now_ms());
    }

    /// Carries out what the sync machine decided: gossip, requests, penalties.
    fn carry_out(&mut self) {
        let outputs: Vec<Output<PeerId>> = self.machine.drain().collect();
        for output in outputs {
            match output {
                Output::Publish { bytes, .. } => self.publish(bytes),
                Output::Send {
                    to,
                    kind,
                    id,
                    bytes,
                } => {
                    let kind = match kind {
                        sync::Outbound::Pull => Outbound::Sync,
                        sync::Outbound::Push => Outbound::Push,
                    };
                    if kind == Outbound::Push {
                        self.metrics.bytes_out_by_kind.pushes += bytes.len() as u64;
                    }
                    self.send(to, bytes.to_vec(), kind, id);
                }
                Output::Penalize { peer, why } => self.penalize(peer, why),
            }
        }
    }

    fn send(&mut self, peer: PeerId, bytes: Vec<u8>, kind: Outbound, id: u64) {
        self.metrics.bytes_out += bytes.len() as u64;
        if kind != Outbound::Push {
            self.metrics.bytes_out_by_kind.requests += bytes.len() as u64;
        }
        let client = self.client.clone();
        let inbox = self.inbox.clone();
        self.runtime.spawn(async move {
            let result = client.request(peer, bytes).await;
            let _ = inbox
                .send(Input::Response {
                    peer,
                    result,
                    kind,
                    id,
                })
                .await;
        });
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        result: Result<Vec<u8>, net::Error>,
        kind: Outbound,
        id: u64,
    ) {
        let now = now_ms();
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::debug!(%peer, %error, "request failed");
                match kind {
                    Outbound::Redeem => {
                        self.redeem_in_flight = false;
                        self.redeem_tried.insert(peer);
                    }
                    Outbound::Sync => self.machine.on_failure(
                        peer,
                        sync::Outbound::Pull,
                        id,
                        self.node.replica(),
                        now,
                    ),
                    Outbound::Push => self.machine.on_failure(
                        peer,
                        sync::Outbound::Push,
                        id,
                        self.node.replica(),
                        now,
                    ),
                }
                return;
            }
        };
        self.metrics.bytes_in += bytes.len() as u64;
        match kind {
            Outbound::Redeem => self.on_redeemed(peer, &bytes),
            Outbound::Sync => self.on_sync_response(peer, &bytes),
            Outbound::Push => {
                if let Some(error) = sync::read_error(&bytes) {
                    tracing::debug!(%peer, %error, "push not taken");
                }
                self.machine.on_push_answer(peer, id, now);
            }
        }
    }

    fn on_sync_response(&mut self, peer: PeerId, bytes: &[u8]) {
        self.metrics.round_trips += 1;
        let now = now_ms();
        let Some(answer) = self
            .machine
            .read_answer(peer, bytes, self.node.replica(), now)
        else {
            return;
        };
        let response = match &answer {
            Answer::Current(response) => response,
            Answer::Late(response) => {
                tracing::debug!(%peer, "late answer to an earlier pull read");
                response
            }
        };
        let absorbed = self.absorb(peer, response.envelopes.clone());
        self.machine
            .after_answer(peer, &answer, absorbed, self.node.replica(), now);
        if absorbed.accepted > 0 {
            self.update_members();
        }
    }

    /// Feeds envelopes from `peer` to the node (the one acceptance path); counts and logs rejections (the sync
    /// machine decides penalties).
    fn absorb(&mut self, peer: PeerId, envelopes: Vec<registry::Envelope>) -> Absorbed {
        match self.node.receive_deferred(envelopes) {
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
                    self.machine.written(reissued);
                    self.machine.changed(true, now_ms());
                }
                self.metrics.accepted_remote += receipt.accepted.len() as u64;
                Absorbed::from(&receipt)
            }
            Err(error) => {
                tracing::error!(%peer, %error, "storing received changes failed");
                Absorbed::default()
            }
        }
    }

    /// Changes a peer just wrote, pushed unasked: the same acceptance path as a pull's response.
    fn on_push(&mut self, peer: PeerId, bytes: &[u8]) -> Vec<u8> {
        let push = match self.machine.read_push(peer, bytes) {
            Ok(push) => push,
            Err(answer) => return answer,
        };
        let absorbed = self.absorb(peer, push.response.envelopes.clone());
        self.machine
            .after_push(peer, &push, absorbed, self.node.replica(), now_ms());
        if absorbed.accepted > 0 {
            self.update_members();
        }
        sync::push_ack()
    }

    /// Queues the changes written here since `before` for the next push.
    fn queue_written(&mut self, before: &[registry::ChangeHash]) {
        let written = self.node.replica().changes_since(before);
        let envelopes: Vec<registry::Envelope> = written
            .iter()
            .filter_map(|hash| self.node.stored_envelope(hash))
            .collect();
        self.machine.written(envelopes);
    }

    fn penalize(&mut self, peer: PeerId, why: &str) {
        self.metrics.penalties += 1;
        tracing::warn!(%peer, why, "peer penalized");
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let _ = client.penalize(peer).await;
        });
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
        self.admission = AdmissionFacts {
            federation: self
                .node
                .replica()
                .federation()
                .map(|f| f.to_hex())
                .unwrap_or_default(),
            council: view
                .members
                .values()
                .filter(|m| m.role == model::Role::Council && !m.revoked)
                .map(|m| m.public_key.clone())
                .collect(),
            members: view.members.keys().cloned().collect(),
            spent: view.invites.clone(),
        };
        self.council_peers = view
            .members
            .values()
            .filter(|m| m.role == model::Role::Council && !m.revoked)
            .filter_map(|m| {
                let key: identity::PublicKey = m.public_key.parse().ok()?;
                net::peer_id_from_public_key(key.as_bytes()).ok()
            })
            .collect();
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
        self.machine.set_members(Some(members.clone()));
        let client = self.client.clone();
        self.runtime.spawn(async move {
            if let Err(error) = client.set_members(members).await {
                tracing::warn!(%error, "setting the member gate failed");
            }
        });
    }

    fn on_tick(&mut self) {
        // Changes taken from peers become durable once per tick (group commit), not once per message.
        if let Err(error) = self.node.flush() {
            tracing::error!(%error, "flushing received changes failed");
        }
        let now = now_ms();
        self.machine.tick(self.node.replica(), now);
        if now.saturating_sub(self.last_redial_ms) >= REDIAL_INTERVAL_MS {
            self.last_redial_ms = now;
            self.redial();
            self.retry_redeem();
            // Envelopes that waited for dependencies that never came are dropped (their senders still hold them).
            if let Err(error) = self.node.expire_pending(now) {
                tracing::error!(%error, "expiring pending changes failed");
            }
        }
        let interval = self.config.kr_refresh_interval_ms;
        if interval > 0 && now.saturating_sub(self.last_kr_refresh_ms) >= interval {
            self.last_kr_refresh_ms = now;
            self.refresh_key_results(now);
        }
        let interval = self.config.scorecard_interval_ms;
        if interval > 0 && now.saturating_sub(self.last_scorecard_check_ms) >= interval {
            self.last_scorecard_check_ms = now;
            self.publish_scorecard(now);
        }
        let interval = self.config.retention_interval_ms;
        if interval > 0 && now.saturating_sub(self.last_retention_ms) >= interval {
            self.last_retention_ms = now;
            match self.node.purge_expired(now as i64) {
                Ok(purge) => self.metrics.events_purged += purge.total,
                Err(error) => {
                    tracing::error!(%error, "deleting raw events past their retention failed")
                }
            }
        }
    }

    /// Computes this pod's scorecard and publishes it when its numbers changed since the last one, or when the
    /// last one is a heartbeat old (a node that is not a pod's publishes nothing).
    fn publish_scorecard(&mut self, now: u64) {
        let Some(snapshot) = self.node.own_scorecard(now as i64) else {
            return;
        };
        let undated = scorecard::Snapshot {
            as_of_ms: 0,
            ..snapshot.clone()
        };
        if let Some((last, _, at)) = &self.last_scorecard
            && *last == undated
            && now.saturating_sub(*at) < crate::config::SCORECARD_HEARTBEAT_MS
        {
            return;
        }
        match self.node.sign_scorecard(&snapshot, now as i64) {
            Ok(bytes) => {
                self.publish_on(Topic::Scorecards, bytes.clone());
                self.last_scorecard = Some((undated, bytes, now));
            }
            Err(error) => tracing::warn!(%error, "this pod's scorecard was not kept"),
        }
    }

    /// A scorecard snapshot gossiped by a member: kept when valid and newer, else counted by reason.
    fn on_scorecard(&mut self, bytes: &[u8]) {
        match self.node.offer_scorecard(bytes, now_ms() as i64) {
            Ok(pod) => {
                tracing::debug!(%pod, "scorecard kept");
                self.metrics.scorecards_accepted += 1;
            }
            Err(crate::scorecards::OfferError::Refused(refusal)) => {
                tracing::debug!(%refusal, "scorecard refused");
                *self
                    .metrics
                    .scorecards_refused
                    .entry(refusal.code())
                    .or_default() += 1;
            }
            Err(error) => tracing::warn!(%error, "a valid scorecard was not persisted"),
        }
    }

    /// Measures this pod's key results and queues the values that changed for the next push, as a CLI write is.
    fn refresh_key_results(&mut self, now: u64) {
        if self.node.own_pod().is_none() {
            return;
        }
        let before = self.node.replica().heads();
        match self.node.refresh_key_results(None, now as i64, now as i64) {
            Ok(refreshes) => {
                let published = refreshes.iter().filter(|r| r.change.is_some()).count();
                tracing::info!(
                    key_results = refreshes.len(),
                    published,
                    "key results refreshed"
                );
                self.queue_written(&before);
            }
            Err(error) => tracing::warn!(%error, "refreshing key results failed"),
        }
    }

    /// Dials the bootstrap addresses whose peer is not connected (an address without `/p2p/ID` only while no peer
    /// is connected at all).
    fn redial(&self) {
        // Keep the mesh's address book on disk, so a restart finds members without the node that invited it.
        let client = self.client.clone();
        let inbox = self.inbox.clone();
        let dir = self.node.dir().to_path_buf();
        self.runtime.spawn(async move {
            let Ok(book) = client.member_addresses().await else {
                return;
            };
            let _ = inbox.send(Input::MemberBook(book.clone())).await;
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

    fn publish(&mut self, bytes: Vec<u8>) {
        self.metrics.bytes_out += bytes.len() as u64;
        self.metrics.bytes_out_by_kind.announcements += bytes.len() as u64;
        self.publish_on(Topic::Heads, bytes);
    }

    fn publish_on(&self, topic: Topic, bytes: Vec<u8>) {
        let client = self.client.clone();
        self.runtime.spawn(async move {
            if let Err(error) = client.publish(topic, bytes).await {
                tracing::debug!(%error, %topic, "not published");
            }
        });
    }

    /// Sends our pending ticket to `peer`, unless a redemption is in flight or `peer` asked us to try elsewhere.
    fn maybe_redeem(&mut self, peer: PeerId) {
        let Some(ticket) = self.ticket.clone() else {
            return;
        };
        if self.redeem_in_flight || self.redeem_tried.contains(&peer) {
            return;
        }
        self.redeem_in_flight = true;
        tracing::info!(%peer, "redeeming invite");
        let redeem = Redeem::new(ticket, self.node.keypair());
        self.send(peer, redeem.encode(), Outbound::Redeem, 0);
    }

    /// Tries the pending ticket again with a connected peer (after "try again later" or a failed request); once every
    /// connected peer was tried, starts over.
    fn retry_redeem(&mut self) {
        if self.ticket.is_none() || self.redeem_in_flight {
            return;
        }
        if self.connected.iter().all(|p| self.redeem_tried.contains(p)) {
            self.redeem_tried.clear();
        }
        if let Some(peer) = self
            .connected
            .iter()
            .find(|p| !self.redeem_tried.contains(p))
            .copied()
        {
            self.maybe_redeem(peer);
        }
    }

    fn on_redeemed(&mut self, peer: PeerId, bytes: &[u8]) {
        self.redeem_in_flight = false;
        let Some(answer) = Redeemed::decode(bytes) else {
            tracing::debug!(%peer, "peer did not take the invite; trying another");
            self.redeem_tried.insert(peer);
            return;
        };
        match answer.result {
            Ok(change) => {
                tracing::info!(%peer, %change, "invite redeemed: admitted");
                self.invite_outcome = Some(format!("admitted by change {change} through {peer}"));
                self.ticket = None;
                let _ = std::fs::remove_file(self.node_dir_ticket());
                self.machine.pull(peer, self.node.replica(), now_ms());
            }
            Err(reason) if answer.retry => {
                tracing::warn!(%peer, %reason, "invite not redeemed yet; trying again later");
                self.invite_outcome = Some(format!("waiting: {reason}"));
                self.redeem_tried.insert(peer);
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

    /// A redemption from a joiner (`REDEEM_TAG`), or forwarded by a member (`FORWARDED_REDEEM_TAG`). Cheap checks
    /// come first (global rate, then the ticket against what this node knows), signatures after; then a council
    /// node admits, another member forwards to a council member and answers when it has the answer.
    fn on_redeem(&mut self, peer: PeerId, id: net::RequestId, bytes: &[u8], member: bool) {
        let forwarded = bytes.first() == Some(&invite::FORWARDED_REDEEM_TAG);
        let checked = serde_json::from_slice::<Redeem>(&bytes[1..])
            .map_err(|e| TicketError::Malformed(format!("malformed redemption: {e}")))
            .and_then(|redeem| {
                let key = self.check_redeem(peer, &redeem, forwarded, member)?;
                Ok((redeem, key))
            });
        let (redeem, key) = match checked {
            Ok(checked) => checked,
            Err(error) => return self.refuse_redeem(peer, id, &error, forwarded),
        };
        if !forwarded {
            // The joiner stays connected while it is served, past the gate's grace period for strangers.
            let client = self.client.clone();
            self.runtime.spawn(async move {
                if let Err(error) = client.allow_temporarily(peer, REDEEM_ALLOWANCE).await {
                    tracing::warn!(%peer, %error, "no temporary allowance for a redeeming joiner");
                }
            });
        }
        if self.council_peers.contains(&self.local_peer) {
            let answer = match self.admit(&redeem, &key) {
                Ok(change) => Redeemed::admitted(change),
                Err(error) => return self.refuse_redeem(peer, id, &error, forwarded),
            };
            tracing::info!(%peer, joiner = %key, forwarded, "invite redeemed");
            self.respond(id, answer.encode());
        } else {
            self.forward_redeem(peer, id, &redeem);
        }
    }

    /// Every check of a redemption before anything is written; returns the joining key.
    fn check_redeem(
        &mut self,
        peer: PeerId,
        redeem: &Redeem,
        forwarded: bool,
        member: bool,
    ) -> Result<identity::PublicKey, TicketError> {
        if forwarded && !member {
            return Err(TicketError::ForwarderNotMember);
        }
        if !self.is_member(&self.local_peer) || self.members.is_none() {
            return Err(TicketError::NotAMember);
        }
        self.redeem_limiter.take(now_ms())?;
        redeem.ticket.precheck(&self.admission, now_ms() as i64)?;
        let key = redeem.verify(now_ms() as i64)?;
        // A forwarding member checked this on its own connection to the joiner.
        if !forwarded && net::peer_id_from_public_key(key.as_bytes()).ok() != Some(peer) {
            return Err(TicketError::Malformed(
                "the redeeming connection is not the key being admitted".into(),
            ));
        }
        if self.admission.members.contains(&key.to_hex()) {
            return Err(TicketError::Malformed(format!("{key} is already a member")));
        }
        Ok(key)
    }

    /// Answers a redemption with a refusal; a joiner's connection then loses its allowance (the gate closes it and
    /// backs it off).
    fn refuse_redeem(
        &mut self,
        peer: PeerId,
        id: net::RequestId,
        error: &TicketError,
        forwarded: bool,
    ) {
        tracing::warn!(%peer, reason = %error, forwarded, "invite redemption refused");
        let answer = Redeemed::refused(error).encode();
        self.metrics.bytes_out += answer.len() as u64;
        let client = self.client.clone();
        self.runtime.spawn(async move {
            if let Err(error) = client.respond(id, answer).await {
                tracing::debug!(%error, "refusal not sent");
            }
            if !forwarded {
                let _ = client.end_allowance(peer).await;
            }
        });
    }

    /// Hands a joiner's redemption to a connected council member and relays its answer (or "no council member
    /// reachable") to the joiner.
    fn forward_redeem(&mut self, joiner: PeerId, id: net::RequestId, redeem: &Redeem) {
        let council: Vec<PeerId> = self
            .council_peers
            .iter()
            .filter(|p| self.connected.contains(p))
            .copied()
            .collect();
        tracing::info!(%joiner, council = council.len(), "forwarding an invite redemption to the council");
        let bytes = redeem.encode_forwarded();
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let relayed = tokio::time::timeout(FORWARD_TIMEOUT, async {
                for council_peer in council {
                    match client.request(council_peer, bytes.clone()).await {
                        Ok(answer) if Redeemed::decode(&answer).is_some() => return Some(answer),
                        Ok(_) => tracing::debug!(peer = %council_peer, "council member did not take the forwarded redemption"),
                        Err(error) => tracing::debug!(peer = %council_peer, %error, "forwarding a redemption failed"),
                    }
                }
                None
            })
            .await
            .ok()
            .flatten();
            let admitted = relayed
                .as_deref()
                .and_then(Redeemed::decode)
                .is_some_and(|answer| answer.result.is_ok());
            let answer = relayed
                .unwrap_or_else(|| Redeemed::refused(&TicketError::NoCouncilReachable).encode());
            if let Err(error) = client.respond(id, answer).await {
                tracing::debug!(%error, "relayed redemption answer not sent");
            }
            if !admitted {
                let _ = client.end_allowance(joiner).await;
            }
        });
    }

    fn respond(&mut self, id: net::RequestId, answer: Vec<u8>) {
        self.metrics.bytes_out += answer.len() as u64;
        let client = self.client.clone();
        self.runtime.spawn(async move {
            if let Err(error) = client.respond(id, answer).await {
                tracing::debug!(%error, "response not sent");
            }
        });
    }

    /// Writes the admission of `key` (the redemption passed every check in `check_redeem`).
    fn admit(&mut self, redeem: &Redeem, key: &identity::PublicKey) -> Result<String, TicketError> {
        let ticket = &redeem.ticket;
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
        let before = self.node.replica().heads();
        let outcome = self
            .node
            .write(&op, now_ms() as i64)
            .map_err(|e| TicketError::Malformed(format!("admission failed: {e}")))?;
        self.queue_written(&before);
        self.update_members();
        Ok(outcome.change)
    }

    fn status(&self) -> NetworkStatus {
        let peers = self
            .connected
            .iter()
            .filter_map(|peer| {
                let (name, role) = self.member_names.get(peer)?;
                let sync = self.machine.pulls().peers().get(peer);
                Some(PeerStatus {
                    peer_id: peer.to_string(),
                    name: name.clone(),
                    role: role.clone(),
                    connected: true,
                    last_sync_ms: sync.and_then(|s| s.last_sync_ms),
                    last_push_ms: sync.and_then(|s| s.last_push_ms),
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
            member_addrs: self.ticket_member_addrs(),
            nat: crate::nat::NatView::from(&self.nat),
        }
    }

    /// Addresses of up to [`MAX_TICKET_MEMBERS`] connected members (a ticket names them so the joiner can reach a
    /// member other than the issuer).
    fn ticket_member_addrs(&self) -> Vec<String> {
        self.member_book
            .iter()
            .filter(|(peer, _)| *peer != self.local_peer && self.connected.contains(peer))
            .take(MAX_TICKET_MEMBERS)
            .flat_map(|(peer, addrs)| {
                addrs.iter().map(move |addr| {
                    let text = addr.to_string();
                    if text.contains("/p2p/") {
                        text
                    } else {
                        format!("{text}/p2p/{peer}")
                    }
                })
            })
            .collect()
    }

    /// The actor's part of a `/metrics` scrape (the network layer's counters are added by [`Actor::on_metrics`]).
    fn scrape(&self) -> crate::metrics::Scrape {
        let mut scrape = crate::metrics::Scrape::default();
        let m = &self.metrics;
        scrape
            .gauge(
                "growthmesh_changes",
                "Accepted registry changes held.",
                self.node.replica().len() as u64,
            )
            .gauge(
                "growthmesh_pending_changes",
                "Changes waiting for dependencies.",
                self.node.replica().pending_len() as u64,
            )
            .gauge(
                "growthmesh_peers_connected",
                "Connected peers.",
                self.connected.len() as u64,
            )
            .counter(
                "growthmesh_remote_changes_accepted",
                "Changes accepted from peers.",
                m.accepted_remote,
            )
            .counter(
                "growthmesh_sync_bytes_received",
                "Sync bytes received.",
                m.bytes_in,
            )
            .counter(
                "growthmesh_sync_bytes_sent",
                "Sync bytes sent.",
                m.bytes_out,
            )
            .counter(
                "growthmesh_sync_round_trips",
                "Pull round trips.",
                m.round_trips,
            )
            .counter(
                "growthmesh_sync_requests_served",
                "Pull requests answered.",
                m.requests_served,
            )
            .counter(
                "growthmesh_duplicate_envelopes",
                "Envelopes received that were already held.",
                m.duplicates,
            )
            .counter(
                "growthmesh_peer_penalties",
                "Penalties the sync layer gave peers.",
                m.penalties,
            )
            .counter(
                "growthmesh_scorecards_accepted",
                "Scorecard snapshots kept from peers.",
                m.scorecards_accepted,
            )
            .counter(
                "growthmesh_events_purged",
                "Raw events deleted past their schema's retention.",
                m.events_purged,
            )
            .family(
                "growthmesh_scorecards_refused",
                "Scorecard snapshots refused, by reason.",
                "reason",
                m.scorecards_refused
                    .iter()
                    .map(|(reason, n)| ((*reason).to_owned(), *n)),
            )
            .family(
                "growthmesh_rejected_changes",
                "Changes from peers rejected, by reason.",
                "reason",
                m.rejections.iter().map(|(reason, n)| (reason.clone(), *n)),
            );
        scrape
    }

    /// Answers a scrape: the actor's numbers now, then the network layer's counters (asked of its event loop).
    fn on_metrics(&self, app: Vec<(String, u64)>, reply: oneshot::Sender<String>) {
        let mut scrape = self.scrape();
        scrape.family(
            "growthmesh_app_requests",
            "Requests of apps (Segment calls, GrowthBook features and streams), by outcome.",
            "outcome",
            app,
        );
        let client = self.client.clone();
        self.runtime.spawn(async move {
            match client.counters().await {
                Ok(c) => {
                    scrape
                        .counter(
                            "growthmesh_net_penalties",
                            "Penalties given to peers by the network layer (the sync layer's included).",
                            c.penalties,
                        )
                        .counter(
                            "growthmesh_net_frames_invalid",
                            "Oversized or malformed sync frames received.",
                            c.frames_invalid,
                        )
                        .counter(
                            "growthmesh_net_gossip_rejected",
                            "Gossip messages rejected (non-member source, oversized, unsigned, unknown topic).",
                            c.gossip_rejected,
                        )
                        .counter(
                            "growthmesh_net_events_dropped",
                            "Network events dropped because the node was busy.",
                            c.events_dropped,
                        )
                        .counter(
                            "growthmesh_net_connections_refused",
                            "Inbound connections refused when they opened.",
                            c.connections_refused,
                        )
                        .family(
                            "growthmesh_net_requests_refused",
                            "Inbound requests refused, by reason.",
                            "reason",
                            [
                                ("not_member".to_owned(), c.requests_refused_not_member),
                                ("rate_limited".to_owned(), c.requests_refused_rate_limited),
                                ("busy".to_owned(), c.requests_refused_busy),
                            ],
                        );
                }
                Err(error) => tracing::debug!(%error, "network counters unavailable"),
            }
            let _ = reply.send(scrape.encode());
        });
    }
}

/// Parses a ticket waiting in the data dir, if any.
pub fn pending_ticket(node: &Node) -> Option<Result<Ticket, TicketError>> {
    let text = std::fs::read_to_string(node.dir().join(invite::TICKET_FILE_NAME)).ok()?;
    Some(Ticket::parse(&text, now_ms() as i64))
}
