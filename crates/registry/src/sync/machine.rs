//! The sync policy as a state machine: which messages a node sends, to whom and when (pushes of what it wrote,
//! announcements and summaries of its heads, pulls, retries of what was lost), and whom it penalizes. It takes
//! inputs (messages and answers, connections, writes, clock ticks) and queues outputs ([`Output`]) for the driver to
//! carry out; it does no I/O and reads no clock. The node's actor drives it over libp2p, the simulator over a virtual
//! network, so the simulator shows what running nodes do.
//!
//! Rules (see docs/registry.md, "Sync policy"):
//! - a node pushes what it writes to every connected member, in one message per peer per batch; a push whose
//!   acknowledgement does not come within the peer's retransmission timeout (RTO) is sent again, up to
//!   [`Policy::push_attempts`] times; when the push did not reach every member, the node announces its heads after
//!   [`Policy::announce_debounce_ms`];
//! - changes taken from peers are announced after [`Policy::relay_announce_debounce_ms`] (their author's push and
//!   announcement reached most peers already);
//! - every [`Policy::announce_interval_ms`] a node gossips a summary (digest and count); a receiver whose digest
//!   differs, and to whom the digest is not an earlier state of its own, pulls once the difference outlives one
//!   RTO of the sender during which its own state did not change (changes still on their way arrive within that;
//!   while changes keep arriving, pushes are doing the work and a pull would fetch them twice), instead of waiting
//!   for a second summary;
//! - a pull whose answer does not come within the peer's RTO counts as lost: the RTO backs off and the pull is sent
//!   again while the peer still has heads this node lacks; a late answer is still read. Over a transport that
//!   reports lost requests itself ([`Policy::transport_reports_loss`]), pushes and pulls are sent again on its
//!   failure reports only, not on the RTO timer; a pull an RTO late only releases the heads it was to bring, so
//!   that another peer that has them is pulled from;
//! - a peer that sends malformed messages, changes refused for what they are (bad signature, malformed, wrong
//!   federation: [`Policy::rejections_per_penalty`] of them), or that announces heads its answers do not bring
//!   ([`UNSERVED_STRIKES`] times in a row) is penalized; the last is not pulled from again for
//!   [`DISTRUST_MS`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::pulls::{Answer, Syncer};
use super::responder::EnvelopeSource;
use super::wire::{Announcement, Push, Request, Tag, heads_digest};
use crate::Replica;
use crate::envelope::Envelope;

/// Answers in a row that left announced heads unserved before a peer is penalized and no longer pulled from.
pub const UNSERVED_STRIKES: u32 = 3;
/// How long a peer that claimed changes it did not serve is not pulled from on its announcements.
pub const DISTRUST_MS: u64 = 60_000;
/// Push flights remembered at once; past this the oldest is given up (anti-entropy brings what it carried).
const MAX_PUSH_FLIGHTS: usize = 4096;
/// Pushes in flight to one peer at once. Changes written while the window is full wait in the peer's backlog and
/// go in one push when an acknowledgement frees the window: the slower a peer answers, the larger the batches,
/// so a loaded peer gets fewer, bigger messages instead of a stream per write.
pub const PUSH_WINDOW: usize = 2;
/// Changes one peer's backlog holds; past this the oldest are dropped and the heads announced (the peer pulls).
const MAX_BACKLOG: usize = 20_000;
/// A push message carries about this many bytes of changes at most; a larger batch goes in several.
const MAX_PUSH_BYTES: usize = 1 << 20;

/// Timing and thresholds of the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// A summary of the heads is gossiped at least this often.
    pub announce_interval_ms: u64,
    /// A change written here that a push did not bring to every member is announced after this quiet period.
    pub announce_debounce_ms: u64,
    /// A change taken from a peer is announced after this quiet period.
    pub relay_announce_debounce_ms: u64,
    /// Changes refused for what they are, in one message, that get their sender penalized (0: never).
    pub rejections_per_penalty: u64,
    /// Times a push is sent before it is given up (anti-entropy still brings its changes).
    pub push_attempts: u32,
    /// Whether the transport itself reports every request that got no answer (libp2p's request-response does:
    /// its streams retransmit what the network lost and fail a request on a closed connection or its own
    /// timeout). Then pushes and pulls are sent again only when the transport reports a failure, never because
    /// an answer is merely slower than the round trips so far: a loaded peer is not sent the same batch again
    /// while it is still reading the first copy. A lossy datagram network (the simulator's) keeps timer retries.
    pub transport_reports_loss: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            announce_interval_ms: 5_000,
            announce_debounce_ms: 50,
            relay_announce_debounce_ms: 500,
            rejections_per_penalty: 1,
            push_attempts: 8,
            transport_reports_loss: false,
        }
    }
}

/// What kind of request an output sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outbound {
    /// A pull: its answer goes to [`SyncMachine::read_answer`].
    Pull,
    /// A push: its answer goes to [`SyncMachine::on_push_answer`].
    Push,
}

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<P> {
    /// Gossip these bytes on the heads topic.
    Publish {
        /// The announcement or summary.
        bytes: Vec<u8>,
        /// Whether it is a summary (digest and count only).
        summary: bool,
    },
    /// Send a request to a peer; its answer (or failure) comes back with `id`.
    Send {
        /// The peer.
        to: P,
        /// Pull or push.
        kind: Outbound,
        /// Identifies the request in the answer.
        id: u64,
        /// The request, in wire form (a push's bytes are shared between its peers).
        bytes: Arc<Vec<u8>>,
    },
    /// Tell the transport the peer misbehaved.
    Penalize {
        /// The peer.
        peer: P,
        /// Why.
        why: &'static str,
    },
}

/// What the driver's replica made of the envelopes of one message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Absorbed {
    /// Accepted (or held) now.
    pub accepted: usize,
    /// Refused.
    pub rejected: usize,
    /// Refused for what they are, so the sender could have known (see `Reason::penalizes`).
    pub penalizing: usize,
}

impl From<&crate::Receipt> for Absorbed {
    /// Only what the sender could have checked itself counts against it: a change refused because of what this
    /// replica holds (a revocation, an equivocation proof) is evidence an honest peer relays. A change that now
    /// waits for its dependencies (or is held excluded) is new here too: a sender whose answer brought only such
    /// changes made progress (the next pull names the missing dependencies), it did not claim heads it does not
    /// serve.
    fn from(receipt: &crate::Receipt) -> Self {
        Self {
            accepted: receipt.accepted.len() + receipt.pending_added.len() + receipt.held.len(),
            rejected: receipt.rejected.len(),
            penalizing: receipt
                .rejected
                .iter()
                .filter(|r| r.reason.penalizes())
                .count(),
        }
    }
}

/// Counters of what the machine did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineStats {
    /// Pushes sent again after their acknowledgement did not come.
    pub push_retries: u64,
    /// Pushes given up after every attempt.
    pub pushes_given_up: u64,
    /// Pulls that timed out.
    pub pull_timeouts: u64,
    /// Pulls started by a summary that differed.
    pub summary_pulls: u64,
    /// Late answers that were still read.
    pub late_answers: u64,
    /// Penalties handed out.
    pub penalties: u64,
}

#[derive(Clone, Debug)]
struct PushFlight<P> {
    to: P,
    bytes: Arc<Vec<u8>>,
    attempts: u32,
    sent_at_ms: u64,
}

/// A peer whose summary differed from this node's state, and since when.
#[derive(Clone, Copy, Debug)]
struct Suspect {
    digest: [u8; 32],
    since_ms: u64,
    /// This node's digest when the wait began: while it keeps changing, changes are still arriving (pushes, other
    /// pulls), and the wait starts again rather than pulling what is on its way.
    ours: [u8; 32],
}

/// The sync policy state machine (see the module docs).
#[derive(Debug)]
pub struct SyncMachine<P: Ord + Clone> {
    policy: Policy,
    pulls: Syncer<P>,
    members: Option<Arc<BTreeSet<P>>>,
    /// This node, when `members` (shared between many machines) holds it too.
    me: Option<P>,
    connected: BTreeSet<P>,
    push_queue: Vec<Envelope>,
    flights: BTreeMap<u64, PushFlight<P>>,
    /// Pushes in flight per peer (the flights to it).
    in_flight: BTreeMap<P, usize>,
    /// Per peer whose push window is full: changes written since, to push when the window frees.
    backlog: BTreeMap<P, Vec<Envelope>>,
    next_id: u64,
    dirty_since_ms: Option<u64>,
    dirty_own: bool,
    announced_digest: Option<[u8; 32]>,
    last_announce_ms: Option<u64>,
    suspects: BTreeMap<P, Suspect>,
    distrusted: BTreeMap<P, u64>,
    /// The digest of the replica's heads, as of its (accepted, held) counts.
    digest_memo: Option<((usize, usize), [u8; 32])>,
    stats: MachineStats,
    out: VecDeque<Output<P>>,
}

impl<P: Ord + Clone> SyncMachine<P> {
    /// A machine with no peers.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            pulls: Syncer::new(),
            members: None,
            me: None,
            connected: BTreeSet::new(),
            push_queue: Vec::new(),
            flights: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            backlog: BTreeMap::new(),
            next_id: 0,
            dirty_since_ms: None,
            dirty_own: false,
            announced_digest: None,
            last_announce_ms: None,
            suspects: BTreeMap::new(),
            distrusted: BTreeMap::new(),
            digest_memo: None,
            stats: MachineStats::default(),
            out: VecDeque::new(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Pull bookkeeping, per peer.
    pub fn pulls(&self) -> &Syncer<P> {
        &self.pulls
    }

    /// What the machine did.
    pub fn stats(&self) -> MachineStats {
        self.stats
    }

    /// Takes the outputs queued so far.
    pub fn drain(&mut self) -> impl Iterator<Item = Output<P>> + '_ {
        self.out.drain(..)
    }

    /// Whether outputs wait to be drained.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Names this node, so that a member set that lists it (as a federation's does) counts the others right: a
    /// push that reached every other member needs no announcement.
    pub fn set_local(&mut self, me: P) {
        self.me = Some(me);
    }

    /// Sets the members (`None`: not known yet); the set may hold this node (see [`SyncMachine::set_local`]).
    /// Pushes go to connected members only.
    pub fn set_members(&mut self, members: Option<BTreeSet<P>>) {
        self.members = members.map(Arc::new);
    }

    /// Sets the members from a set shared by many machines (a simulator's), which holds this node `me` too.
    pub fn share_members(&mut self, members: Arc<BTreeSet<P>>, me: P) {
        self.members = Some(members);
        self.me = Some(me);
    }

    /// Whether this node is connected to every other member (a small federation's full mesh).
    fn meshed_with_every_member(&self) -> bool {
        self.members.as_ref().is_some_and(|members| {
            members
                .iter()
                .all(|m| self.me.as_ref() == Some(m) || self.connected.contains(m))
        })
    }

    fn is_member(&self, peer: &P) -> bool {
        self.members.as_ref().is_some_and(|m| m.contains(peer)) && self.me.as_ref() != Some(peer)
    }

    /// A connection to `peer` opened: pull from it (what it has that this node lacks).
    pub fn connected(&mut self, peer: P, replica: &Replica, now_ms: u64) {
        self.connected.insert(peer.clone());
        self.pull(peer, replica, now_ms);
    }

    /// Marks `peer` connected without pulling (peers that start from the same state).
    pub fn connected_quietly(&mut self, peer: P) {
        self.connected.insert(peer);
    }

    /// The connection to `peer` closed: its pulls and pushes in flight are given up.
    pub fn disconnected(&mut self, peer: &P) {
        self.connected.remove(peer);
        self.pulls.remove(peer);
        self.suspects.remove(peer);
        self.flights.retain(|_, f| &f.to != peer);
        self.in_flight.remove(peer);
        self.backlog.remove(peer);
    }

    /// Connected peers.
    pub fn connections(&self) -> &BTreeSet<P> {
        &self.connected
    }

    /// Starts a pull from `peer` now, unless one is in flight.
    pub fn pull(&mut self, peer: P, replica: &Replica, now_ms: u64) {
        let request = self.pulls.pull(peer.clone(), replica, now_ms);
        self.send_pull(peer, request);
    }

    fn send_pull(&mut self, to: P, request: Option<Request>) {
        if let Some(request) = request {
            let id = self.id();
            self.out.push_back(Output::Send {
                to,
                kind: Outbound::Pull,
                id,
                bytes: Arc::new(request.encode()),
            });
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn penalize(&mut self, peer: P, why: &'static str) {
        self.stats.penalties += 1;
        self.out.push_back(Output::Penalize { peer, why });
    }

    fn digest(&mut self, replica: &Replica) -> [u8; 32] {
        let key = (replica.len(), replica.held_len());
        match self.digest_memo {
            Some((at, digest)) if at == key => digest,
            _ => {
                let digest = heads_digest(&replica.heads());
                self.digest_memo = Some((key, digest));
                digest
            }
        }
    }

    // ---- local writes and changes ----

    /// Changes written here, to push at the next [`SyncMachine::flush`].
    pub fn written(&mut self, envelopes: impl IntoIterator<Item = Envelope>) {
        self.push_queue.extend(envelopes);
    }

    /// Whether written changes wait to be pushed.
    pub fn has_unpushed(&self) -> bool {
        !self.push_queue.is_empty()
    }

    /// Pushes the written changes to every connected member, one message per peer (a peer whose push window is
    /// full gets them in its backlog, pushed when the window frees). When that is not every other member, the heads
    /// are announced after the own-write debounce.
    pub fn flush(&mut self, now_ms: u64) {
        if self.push_queue.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.push_queue);
        let peers: Vec<P> = self
            .connected
            .iter()
            .filter(|p| self.is_member(p))
            .cloned()
            .collect();
        let (free, busy): (Vec<P>, Vec<P>) = peers.iter().cloned().partition(|p| {
            self.in_flight.get(p).copied().unwrap_or(0) < PUSH_WINDOW
                && !self.backlog.contains_key(p)
        });
        for to in busy {
            self.add_to_backlog(to, &queue, now_ms);
        }
        if !free.is_empty() {
            for group in push_groups(queue) {
                let bytes = Arc::new(Push::encode_envelopes(group));
                for to in &free {
                    self.send_push(to.clone(), bytes.clone(), now_ms);
                }
            }
        }
        let others = self.members.as_ref().map_or(usize::MAX, |m| {
            let me = self.me.as_ref().is_some_and(|me| m.contains(me));
            m.len() - usize::from(me) - peers.len()
        });
        if peers.is_empty() || others > 0 {
            self.changed(true, now_ms);
        }
    }

    fn add_to_backlog(&mut self, to: P, envelopes: &[Envelope], now_ms: u64) {
        let backlog = self.backlog.entry(to).or_default();
        backlog.extend(envelopes.iter().cloned());
        if backlog.len() > MAX_BACKLOG {
            let excess = backlog.len() - MAX_BACKLOG;
            backlog.drain(..excess);
            // What was dropped reaches the peer by a pull on the announcement.
            self.changed(true, now_ms);
        }
    }

    /// Sends `bytes` to `to` as a new push flight.
    fn send_push(&mut self, to: P, bytes: Arc<Vec<u8>>, now_ms: u64) {
        if self.flights.len() >= MAX_PUSH_FLIGHTS
            && let Some((&oldest, _)) = self.flights.first_key_value()
        {
            self.remove_flight(oldest);
            self.stats.pushes_given_up += 1;
        }
        let id = self.id();
        *self.in_flight.entry(to.clone()).or_default() += 1;
        self.flights.insert(
            id,
            PushFlight {
                to: to.clone(),
                bytes: bytes.clone(),
                attempts: 1,
                sent_at_ms: now_ms,
            },
        );
        self.out.push_back(Output::Send {
            to,
            kind: Outbound::Push,
            id,
            bytes,
        });
    }

    fn remove_flight(&mut self, id: u64) -> Option<PushFlight<P>> {
        let flight = self.flights.remove(&id)?;
        if let Some(count) = self.in_flight.get_mut(&flight.to) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(&flight.to);
            }
        }
        Some(flight)
    }

    /// A flight to `to` ended: its backlog goes out while the window has room.
    fn drain_backlog(&mut self, to: &P, now_ms: u64) {
        if !self.connected.contains(to) {
            self.backlog.remove(to);
            return;
        }
        while self.in_flight.get(to).copied().unwrap_or(0) < PUSH_WINDOW {
            let Some(backlog) = self.backlog.remove(to) else {
                return;
            };
            let mut groups = push_groups(backlog).into_iter();
            let Some(first) = groups.next() else {
                return;
            };
            self.send_push(to.clone(), Arc::new(Push::encode_envelopes(first)), now_ms);
            let rest: Vec<Envelope> = groups.flatten().collect();
            if !rest.is_empty() {
                self.backlog.insert(to.clone(), rest);
            }
        }
    }

    /// The replica changed (`own`: written here; else taken from a peer): announce after the matching debounce.
    pub fn changed(&mut self, own: bool, now_ms: u64) {
        if self.dirty_since_ms.is_none() {
            self.dirty_since_ms = Some(now_ms);
        }
        self.dirty_own |= own;
    }

    // ---- messages from peers ----

    /// A heads announcement or summary gossiped by `from`.
    pub fn on_announcement(&mut self, from: P, bytes: &[u8], replica: &Replica, now_ms: u64) {
        let announcement = match Announcement::decode(bytes) {
            Ok(announcement) => announcement,
            Err(error) => {
                tracing::debug!(%error, "malformed heads announcement");
                return self.penalize(from, "malformed announcement");
            }
        };
        if Some(announcement.federation) != replica.federation() {
            return;
        }
        if self
            .distrusted
            .get(&from)
            .is_some_and(|until| *until > now_ms)
        {
            return;
        }
        let ours = self.digest(replica);
        if announcement.digest == ours {
            self.suspects.remove(&from);
            return;
        }
        if announcement.summary {
            if self.pulls.responder().sent(&announcement.digest) {
                // An earlier state of ours: it is behind (and pulls from us on our word), not ahead.
                self.suspects.remove(&from);
                return;
            }
            let (since_ms, waited_on) = self
                .suspects
                .get(&from)
                .map_or((now_ms, ours), |suspect| (suspect.since_ms, suspect.ours));
            self.suspects.insert(
                from,
                Suspect {
                    digest: announcement.digest,
                    since_ms,
                    ours: waited_on,
                },
            );
            return;
        }
        self.suspects.remove(&from);
        let request = self
            .pulls
            .on_announcement(from.clone(), &announcement, replica, now_ms);
        self.send_pull(from, request);
    }

    /// A pull request from `from`: the answer to send back.
    pub fn on_request(
        &mut self,
        from: P,
        bytes: &[u8],
        replica: &Replica,
        source: &impl EnvelopeSource,
    ) -> Vec<u8> {
        match Request::decode(bytes) {
            Ok(request) if Some(request.federation) == replica.federation() => {
                self.pulls.respond(&request, replica, source)
            }
            Ok(_) => error_answer("wrong federation"),
            Err(error) => {
                self.penalize(from, "malformed sync request");
                error_answer(&format!("malformed request: {error}"))
            }
        }
    }

    /// Reads a push from `from`; `Err` carries the answer to send back (the sender is penalized). Feed the envelopes
    /// to the replica, then call [`SyncMachine::after_push`] and answer with [`push_ack`].
    pub fn read_push(&mut self, from: P, bytes: &[u8]) -> Result<Push, Vec<u8>> {
        Push::decode(bytes).map_err(|error| {
            self.penalize(from, "malformed push");
            error_answer(&format!("malformed push: {error}"))
        })
    }

    /// After a push's envelopes were fed to the replica: pulls what is still missing after a grace period (the
    /// pusher's heads it did not carry are usually in their authors' pushes, on the way).
    pub fn after_push(
        &mut self,
        from: P,
        push: &Push,
        absorbed: Absorbed,
        replica: &Replica,
        now_ms: u64,
    ) {
        self.judge(&from, absorbed);
        self.pulls.after_push(
            from,
            push,
            (absorbed.accepted, absorbed.rejected),
            replica,
            now_ms,
        );
    }

    fn judge(&mut self, from: &P, absorbed: Absorbed) {
        let limit = self.policy.rejections_per_penalty;
        if limit > 0 && absorbed.penalizing as u64 >= limit {
            self.penalize(from.clone(), "sent rejected changes");
        }
    }

    /// Reads `from`'s answer to a pull. `None`: not an answer to read (an error answer, or malformed: the pull ends,
    /// the sender of a malformed one is penalized, and pulls waiting for it go out). Feed the envelopes to the
    /// replica, then call [`SyncMachine::after_answer`].
    pub fn read_answer(
        &mut self,
        from: P,
        bytes: &[u8],
        replica: &Replica,
        now_ms: u64,
    ) -> Option<Answer> {
        match self.pulls.decode_response(&from, bytes) {
            Ok(answer) => Some(answer),
            Err(_) if self.pulls.answered_too_late(&from, bytes) => {
                // The answer to a request given up long ago (its context is gone): the pull in flight goes on.
                self.stats.late_answers += 1;
                None
            }
            Err(error) => {
                if Tag::of(bytes) != Some(Tag::Error) {
                    tracing::debug!(%error, "malformed sync response");
                    self.penalize(from.clone(), "malformed sync response");
                }
                self.pulls.on_failure(&from);
                self.followups(replica, now_ms);
                None
            }
        }
    }

    /// After an answer's envelopes were fed to the replica: the next round of the pull, if it goes on, and the
    /// pulls that waited for it.
    pub fn after_answer(
        &mut self,
        from: P,
        answer: &Answer,
        absorbed: Absorbed,
        replica: &Replica,
        now_ms: u64,
    ) {
        self.judge(&from, absorbed);
        if absorbed.accepted > 0 && !self.meshed_with_every_member() {
            // Relayed so that members out of the author's reach hear of it. Connected to every member, this node
            // relays nothing: the authors push to everyone, and summaries repair the rest.
            self.changed(false, now_ms);
        }
        match answer {
            Answer::Late(_) => {
                self.stats.late_answers += 1;
            }
            Answer::Current(response) => {
                let next = self.pulls.on_response(
                    &from,
                    response,
                    absorbed.accepted,
                    absorbed.rejected,
                    replica,
                    now_ms,
                );
                if self.pulls.unserved(&from) >= UNSERVED_STRIKES {
                    self.distrusted.insert(from.clone(), now_ms + DISTRUST_MS);
                    self.pulls.forgive(&from);
                    self.penalize(from.clone(), "announced changes it does not serve");
                } else {
                    self.send_pull(from, next);
                }
            }
        }
        self.followups(replica, now_ms);
    }

    /// The request `id` to `peer` failed (connection closed, transport timeout, refused).
    pub fn on_failure(&mut self, peer: P, kind: Outbound, id: u64, replica: &Replica, now_ms: u64) {
        match kind {
            Outbound::Pull if self.policy.transport_reports_loss => {
                // What a timer would have noticed: pulled again (backed off) while the peer has heads this node
                // lacks.
                self.stats.pull_timeouts += 1;
                self.pulls.timed_out(&peer);
                self.followups(replica, now_ms);
            }
            Outbound::Pull => {
                self.pulls.on_failure(&peer);
                self.followups(replica, now_ms);
            }
            Outbound::Push => self.retry_push(id, now_ms),
        }
    }

    /// `peer` answered push `id` (an acknowledgement, or an error answer: either way it read it).
    pub fn on_push_answer(&mut self, peer: P, id: u64, now_ms: u64) {
        if let Some(flight) = self.remove_flight(id)
            && flight.attempts == 1
        {
            self.pulls
                .sample_round_trip(&peer, now_ms.saturating_sub(flight.sent_at_ms));
        }
        self.drain_backlog(&peer, now_ms);
    }

    /// How long a push flight waits for its acknowledgement: the peer's RTO (backed off by earlier losses). Over a
    /// transport that reports loss the timer is not used at all: a slow peer is not sent a batch it is still
    /// reading (an attempt-doubling wait served that, and held lossy links back: at 30% loss it took the slowest
    /// seeds past three intervals).
    fn push_timeout_ms(&self, flight: &PushFlight<P>) -> u64 {
        self.pulls.rto_ms(&flight.to)
    }

    fn retry_push(&mut self, id: u64, now_ms: u64) {
        let Some(mut flight) = self.remove_flight(id) else {
            return;
        };
        if flight.attempts >= self.policy.push_attempts || !self.connected.contains(&flight.to) {
            // Announce instead: the peer (or whoever relays) pulls what the push did not bring.
            self.stats.pushes_given_up += 1;
            self.changed(true, now_ms);
            self.drain_backlog(&flight.to, now_ms);
            return;
        }
        self.pulls.back_off(&flight.to);
        flight.attempts += 1;
        flight.sent_at_ms = now_ms;
        self.stats.push_retries += 1;
        let id = self.id();
        self.out.push_back(Output::Send {
            to: flight.to.clone(),
            kind: Outbound::Push,
            id,
            bytes: flight.bytes.clone(),
        });
        *self.in_flight.entry(flight.to.clone()).or_default() += 1;
        self.flights.insert(id, flight);
    }

    fn followups(&mut self, replica: &Replica, now_ms: u64) {
        if !self.pulls.has_deferred() {
            return;
        }
        for (peer, request) in self.pulls.followups(replica, now_ms) {
            self.send_pull(peer, Some(request));
        }
    }

    // ---- time ----

    /// Advances the clock: pushes what was written, retries what was lost, pulls from peers whose summaries still
    /// differ, announces.
    pub fn tick(&mut self, replica: &Replica, now_ms: u64) {
        self.flush(now_ms);
        if self.policy.transport_reports_loss {
            if self.pulls.release_slow(now_ms) > 0 {
                self.followups(replica, now_ms);
            }
        } else {
            let timed_out = self.pulls.on_tick(now_ms);
            self.stats.pull_timeouts += timed_out.len() as u64;
            self.followups(replica, now_ms);
            let lost: Vec<u64> = self
                .flights
                .iter()
                .filter(|(_, f)| now_ms.saturating_sub(f.sent_at_ms) > self.push_timeout_ms(f))
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                self.retry_push(id, now_ms);
            }
        }
        self.distrusted.retain(|_, until| *until > now_ms);
        self.settle_suspects(replica, now_ms);
        self.announce(replica, now_ms);
    }

    /// Pulls from peers whose summary differed for longer than their RTO.
    fn settle_suspects(&mut self, replica: &Replica, now_ms: u64) {
        if self.suspects.is_empty() {
            return;
        }
        let ours = self.digest(replica);
        // This node's state moved since a wait began: what differed may have arrived, or be arriving. Wait again.
        for suspect in self.suspects.values_mut() {
            if suspect.ours != ours {
                suspect.ours = ours;
                suspect.since_ms = now_ms;
            }
        }
        let due: Vec<P> = self
            .suspects
            .iter()
            .filter(|(peer, suspect)| {
                now_ms.saturating_sub(suspect.since_ms) >= self.pulls.rto_ms(peer)
                    && self.pulls.in_flight_since(peer).is_none()
            })
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in due {
            let Some(suspect) = self.suspects.remove(&peer) else {
                continue;
            };
            if suspect.digest == ours || self.pulls.responder().sent(&suspect.digest) {
                continue;
            }
            self.stats.summary_pulls += 1;
            self.pull(peer, replica, now_ms);
        }
    }

    fn announce(&mut self, replica: &Replica, now_ms: u64) {
        let debounce = if self.dirty_own {
            self.policy.announce_debounce_ms
        } else {
            self.policy.relay_announce_debounce_ms
        };
        let debounced = self
            .dirty_since_ms
            .is_some_and(|since| now_ms.saturating_sub(since) >= debounce);
        let periodic = self
            .last_announce_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= self.policy.announce_interval_ms);
        if debounced {
            self.dirty_since_ms = None;
            self.dirty_own = false;
            let digest = self.digest(replica);
            if self.announced_digest == Some(digest) && !periodic {
                return;
            }
            self.last_announce_ms = Some(now_ms);
            if let Some(announcement) = self.pulls.announcement(replica) {
                self.announced_digest = Some(announcement.digest);
                self.out.push_back(Output::Publish {
                    bytes: announcement.encode(),
                    summary: false,
                });
            }
        } else if periodic {
            self.last_announce_ms = Some(now_ms);
            if let Some(summary) = self.pulls.summary(replica) {
                self.out.push_back(Output::Publish {
                    bytes: summary.encode(),
                    summary: true,
                });
            }
        }
    }

    /// Whether the machine has work for the next tick before the periodic summary (pushes, pulls waiting,
    /// retries, a debounced announcement).
    pub fn busy(&self) -> bool {
        !self.push_queue.is_empty()
            || !self.flights.is_empty()
            || !self.backlog.is_empty()
            || self.pulls.has_deferred()
            || !self.suspects.is_empty()
            || self.dirty_since_ms.is_some()
    }
}

/// `envelopes` in groups of about [`MAX_PUSH_BYTES`] of changes each, one push message per group (one group
/// unless the batch is larger; a single change larger than that goes alone).
fn push_groups(envelopes: Vec<Envelope>) -> Vec<Vec<Envelope>> {
    /// Signature, length prefixes and the rest of the envelope, about.
    const ENVELOPE_OVERHEAD: usize = 128;
    let mut groups = Vec::new();
    let mut group = Vec::new();
    let mut size = 0;
    for envelope in envelopes {
        let len = envelope.change.raw_bytes().len() + ENVELOPE_OVERHEAD;
        if !group.is_empty() && size + len > MAX_PUSH_BYTES {
            groups.push(std::mem::take(&mut group));
            size = 0;
        }
        size += len;
        group.push(envelope);
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

/// The answer to a push that was read.
pub fn push_ack() -> Vec<u8> {
    vec![Tag::PushAck as u8]
}

/// An error answer to any request: the error tag, then the message.
pub fn error_answer(message: &str) -> Vec<u8> {
    let mut out = vec![Tag::Error as u8];
    out.extend_from_slice(message.as_bytes());
    out
}

/// The message of an error answer, if `bytes` is one.
pub fn read_error(bytes: &[u8]) -> Option<String> {
    match bytes.split_first() {
        Some((&tag, message)) if tag == Tag::Error as u8 => {
            Some(String::from_utf8_lossy(message).into_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_is_used_once() {
        let mut seen = BTreeSet::new();
        for tag in Tag::ALL {
            assert!(seen.insert(tag as u8), "tag {tag:?} used twice");
            assert_eq!(Tag::of(&[tag as u8]), Some(tag));
        }
        assert_eq!(Tag::of(&[0]), None);
        assert_eq!(Tag::of(&[]), None);
    }

    #[test]
    fn error_answers_round_trip() {
        let answer = error_answer("no such thing");
        assert_eq!(Tag::of(&answer), Some(Tag::Error));
        assert_eq!(read_error(&answer).as_deref(), Some("no such thing"));
        assert_eq!(read_error(&push_ack()), None);
    }

    #[test]
    fn round_trip_estimate_follows_samples_and_backs_off() {
        let mut rtt = super::super::pulls::RoundTrip::default();
        assert_eq!(rtt.rto_ms(), super::super::pulls::INITIAL_RTO_MS);
        for _ in 0..20 {
            rtt.sample(40);
        }
        assert!(rtt.rto_ms() >= super::super::pulls::MIN_RTO_MS);
        assert!(rtt.rto_ms() < 400, "{}", rtt.rto_ms());
        let before = rtt.rto_ms();
        rtt.back_off();
        assert_eq!(rtt.rto_ms(), before * 2);
        for _ in 0..20 {
            rtt.back_off();
        }
        assert_eq!(rtt.rto_ms(), before * super::super::pulls::MAX_BACK_OFF);
        let mut fresh = super::super::pulls::RoundTrip::default();
        for _ in 0..20 {
            fresh.back_off();
        }
        assert_eq!(
            fresh.rto_ms(),
            (super::super::pulls::INITIAL_RTO_MS * super::super::pulls::MAX_BACK_OFF)
                .min(super::super::pulls::REQUEST_TIMEOUT_MS)
        );
    }
}
