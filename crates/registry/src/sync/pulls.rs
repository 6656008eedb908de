//! Pull bookkeeping, per peer: what each peer has (the heads it announced or answered with), the pull in flight to
//! it and its round-trip estimate, which heads a pull in flight is fetching (so two peers are not asked for the same
//! change), and which peers wait for a pull to end. [`super::SyncMachine`] drives it; tests drive it directly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::ChangeHash;

use super::responder::{EnvelopeSource, Responder, sorted};
use super::wire::{
    Announcement, MAX_LISTED_HASHES, Push, Request, Response, context_fingerprint, heads_digest,
    response_fingerprint,
};
use crate::Replica;
use crate::envelope::DecodeError;

/// Pull rounds with one peer before giving up until the next announcement.
pub const MAX_ROUNDS: u32 = 64;
/// The longest a request waits for its answer before it counts as lost (the ceiling of the retransmission timeout).
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// The retransmission timeout of a peer with no round trip measured yet.
pub const INITIAL_RTO_MS: u64 = 1_000;
/// The shortest retransmission timeout.
pub const MIN_RTO_MS: u64 = 200;
/// A push that leaves dependencies missing waits this long for them (they are usually in another push in flight)
/// before the receiver pulls them.
pub const PUSH_GRACE_MS: u64 = 1_000;
/// How far timeouts back the retransmission timeout off, as a multiple of what the round trips give.
pub const MAX_BACK_OFF: u64 = 4;
/// Contexts of earlier requests to one peer whose late answers are still read.
const EARLIER_CONTEXTS: usize = 4;
/// Fingerprints of contexts of requests sent to one peer that are remembered past their contexts: an answer that
/// names one of them arrived too late to be read, through no fault of the peer's (it is dropped, not penalized).
const REMEMBERED_FINGERPRINTS: usize = 64;

/// A round-trip estimate and the retransmission timeout it gives (RFC 6298: SRTT, RTTVAR, RTO = SRTT + 4 RTTVAR,
/// doubled on each timeout up to [`REQUEST_TIMEOUT_MS`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RoundTrip {
    srtt_ms: Option<f64>,
    rttvar_ms: f64,
    rto_ms: u64,
    /// The timeout the samples give, before any back-off.
    base_rto_ms: u64,
}

impl Default for RoundTrip {
    fn default() -> Self {
        Self {
            srtt_ms: None,
            rttvar_ms: 0.0,
            rto_ms: INITIAL_RTO_MS,
            base_rto_ms: INITIAL_RTO_MS,
        }
    }
}

impl RoundTrip {
    /// Takes one measured round trip.
    pub fn sample(&mut self, rtt_ms: u64) {
        let rtt = rtt_ms as f64;
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(rtt);
                self.rttvar_ms = rtt / 2.0;
            }
            Some(srtt) => {
                self.rttvar_ms = 0.75 * self.rttvar_ms + 0.25 * (srtt - rtt).abs();
                self.srtt_ms = Some(0.875 * srtt + 0.125 * rtt);
            }
        }
        let rto = self.srtt_ms.unwrap_or(rtt) + (4.0 * self.rttvar_ms).max(10.0);
        self.base_rto_ms = (rto.ceil() as u64).clamp(MIN_RTO_MS, REQUEST_TIMEOUT_MS);
        self.rto_ms = self.base_rto_ms;
    }

    /// A request timed out: wait twice as long next time, up to [`MAX_BACK_OFF`] times what the samples give (a
    /// lossy link loses messages at random; a peer that is gone is dropped by its connection, not by this), and
    /// never past [`REQUEST_TIMEOUT_MS`].
    pub fn back_off(&mut self) {
        self.rto_ms = (self.rto_ms * 2)
            .min(self.base_rto_ms * MAX_BACK_OFF)
            .min(REQUEST_TIMEOUT_MS);
    }

    /// How long a request waits for its answer before it counts as lost.
    pub fn rto_ms(&self) -> u64 {
        self.rto_ms
    }

    /// The smoothed round trip, once measured.
    pub fn srtt_ms(&self) -> Option<u64> {
        self.srtt_ms.map(|s| s.round() as u64)
    }
}

/// An answer to a pull, as read.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The answer to the request in flight.
    Current(Response),
    /// A late answer to an earlier request (sent again after a timeout): its envelopes are taken, and the pull in
    /// flight goes on.
    Late(Response),
}

/// What one peer looks like to [`Syncer`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerSync {
    /// Heads the peer announced or answered with, sorted.
    pub heads: Vec<ChangeHash>,
    /// Digest the peer announced.
    pub digest: Option<[u8; 32]>,
    /// When the request in flight was sent.
    pub in_flight_since_ms: Option<u64>,
    /// Rounds in the current pull.
    pub rounds: u32,
    /// When a pull last completed.
    pub last_sync_ms: Option<u64>,
    /// When a push from this peer last arrived.
    pub last_push_ms: Option<u64>,
    /// Changes accepted from this peer.
    pub accepted: u64,
    /// Changes from this peer that were rejected.
    pub rejected: u64,
    /// Total bytes of requests sent and responses received.
    pub bytes: u64,
    /// Whether `heads` came from the peer itself (so it remembers them and a request can name them by digest).
    by_ref: bool,
    /// The latest head set the peer sent that is held here entirely.
    common: Option<Vec<ChangeHash>>,
    /// The context of the request in flight (what its response may name by index).
    context: Vec<ChangeHash>,
    /// Contexts of the last few requests before it, so their late answers are still read.
    earlier_contexts: VecDeque<Vec<ChangeHash>>,
    /// Fingerprints of the contexts of the last [`REMEMBERED_FINGERPRINTS`] requests, kept after their contexts.
    sent_fingerprints: VecDeque<[u8; 4]>,
    /// Round-trip estimate and retransmission timeout.
    pub round_trip: RoundTrip,
    /// When the peer announced or sent heads this node lacks that its pull answers did not bring (a peer claiming
    /// changes it does not serve), and how often.
    pub unserved: u32,
    /// Heads of the peer's that the pull in flight is expected to bring.
    fetching: Vec<ChangeHash>,
}

/// Decides when to pull from which peer, and answers peers' pulls. Generic over the peer id so the simulator uses
/// plain numbers.
#[derive(Clone, Debug)]
pub struct Syncer<P: Ord + Clone> {
    peers: BTreeMap<P, PeerSync>,
    /// Heads some pull in flight is fetching, and from whom: not pulled again from another peer meanwhile.
    fetching: BTreeMap<ChangeHash, P>,
    /// Peers with heads this node lacks that were not pulled because a pull was in flight.
    deferred: BTreeSet<P>,
    /// Pushers whose push left dependencies missing, and since when.
    push_waits: BTreeMap<P, u64>,
    /// Head sets this node sent, so requests can name them.
    responder: Responder,
    /// No pull in flight started before this (a lower bound), so a tick need not look at every peer.
    earliest_in_flight_ms: Option<u64>,
    /// Where the next request's window over the missing dependencies starts (see `start_pull`).
    need_offset: usize,
}

impl<P: Ord + Clone> Default for Syncer<P> {
    fn default() -> Self {
        Self {
            peers: BTreeMap::new(),
            fetching: BTreeMap::new(),
            deferred: BTreeSet::new(),
            push_waits: BTreeMap::new(),
            responder: Responder::default(),
            earliest_in_flight_ms: None,
            need_offset: 0,
        }
    }
}

impl<P: Ord + Clone> Syncer<P> {
    /// A syncer with no peers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Per-peer state.
    pub fn peers(&self) -> &BTreeMap<P, PeerSync> {
        &self.peers
    }

    /// Forgets a peer (disconnected).
    pub fn remove(&mut self, peer: &P) {
        self.peers.remove(peer);
        self.fetching.retain(|_, p| p != peer);
        self.deferred.remove(peer);
        self.push_waits.remove(peer);
    }

    /// The announcement of the replica's heads; the head set is remembered so pulls can name it.
    pub fn announcement(&mut self, replica: &Replica) -> Option<Announcement> {
        let announcement = replica.announcement()?;
        if !announcement.heads.is_empty() {
            let heads = sorted(&announcement.heads);
            self.remember(heads);
        }
        Some(announcement)
    }

    /// The periodic summary of the replica's state (see [`Announcement::summary`]).
    pub fn summary(&self, replica: &Replica) -> Option<Announcement> {
        let mut announcement = replica.announcement()?;
        announcement.heads.clear();
        announcement.summary = true;
        Some(announcement)
    }

    /// The head sets this node sent (the responder's memory).
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    fn remember(&mut self, heads: Vec<ChangeHash>) {
        self.responder.remember(heads);
    }

    /// A peer's request with its `have_ref` resolved (see [`Responder::resolve`]).
    pub fn resolve(&self, request: &Request) -> Option<super::Pull> {
        self.responder.resolve(request)
    }

    /// Answers a peer's request: the response and the context to encode it with (see [`Responder::prepare`]).
    pub fn prepare(
        &mut self,
        request: &Request,
        replica: &Replica,
        source: &impl EnvelopeSource,
    ) -> (Response, Vec<ChangeHash>) {
        self.responder.prepare(request, replica, source)
    }

    /// Answers a peer's request, in wire form.
    pub fn respond(
        &mut self,
        request: &Request,
        replica: &Replica,
        source: &impl EnvelopeSource,
    ) -> Vec<u8> {
        self.responder.respond(request, replica, source)
    }

    /// After the caller fed a push's envelopes to the replica: notes the pusher's heads it names, and when something
    /// is still missing (dependencies the push did not carry, heads of the pusher's), schedules a pull from the
    /// pusher for the end of the grace period ([`Syncer::followups`] sends it if it is still needed).
    pub fn after_push(
        &mut self,
        peer: P,
        push: &Push,
        (accepted, rejected): (usize, usize),
        replica: &Replica,
        now_ms: u64,
    ) {
        let state = self.peers.entry(peer.clone()).or_default();
        state.last_push_ms = Some(now_ms);
        state.accepted += accepted as u64;
        state.rejected += rejected as u64;
        if !push.response.heads.is_empty() {
            Self::learn_heads(state, &push.response.heads, replica);
        }
        if state.in_flight_since_ms.is_some() {
            return;
        }
        // The pusher holds changes this push did not carry (other authors', which their own pushes are most likely
        // bringing), or the pushed changes wait for dependencies (the same): pull only what is still missing after
        // the grace period. Pulling at once fetches the changes a second time while their pushes are on the way.
        if !self.lacking(&self.peers[&peer].heads, replica).is_empty()
            || !replica.missing_dependencies().is_empty()
        {
            self.push_waits.entry(peer).or_insert(now_ms);
        }
    }

    /// Whether `bytes`, which [`Syncer::decode_response`] could not read, answer a request sent to `peer` so long
    /// ago that its context is gone: an honest peer's late answer, to drop without penalty.
    pub fn answered_too_late(&self, peer: &P, bytes: &[u8]) -> bool {
        let Some(fingerprint) = response_fingerprint(bytes) else {
            return false;
        };
        self.peers.get(peer).is_some_and(|state| {
            // An answer coded against the empty context is read whatever was asked: one that fails is malformed.
            fingerprint != context_fingerprint(&state.context)
                && fingerprint != context_fingerprint(&[])
                && state.sent_fingerprints.contains(&fingerprint)
        })
    }

    /// Reads `peer`'s answer to the request in flight to it, or a late answer to one of the last few requests
    /// before it (coded against that request's context). A response that names nothing by index (coded against an
    /// empty context) is read whatever was asked; one coded against no request sent to this peer is malformed.
    pub fn decode_response(&self, peer: &P, bytes: &[u8]) -> Result<Answer, DecodeError> {
        let state = self.peers.get(peer);
        let context = state.map_or(&[][..], |state| state.context.as_slice());
        let fingerprint = response_fingerprint(bytes);
        if fingerprint == Some(context_fingerprint(context)) {
            return Response::decode_for(bytes, context).map(Answer::Current);
        }
        if fingerprint == Some(context_fingerprint(&[])) {
            return Response::decode_for(bytes, &[]).map(Answer::Current);
        }
        if let Some(earlier) = state.and_then(|s| {
            s.earlier_contexts
                .iter()
                .find(|c| Some(context_fingerprint(c)) == fingerprint)
        }) {
            return Response::decode_for(bytes, earlier).map(Answer::Late);
        }
        Response::decode_for(bytes, context).map(Answer::Current)
    }

    /// Pulls from pushers whose pushes left dependencies (or heads of theirs) missing for [`PUSH_GRACE_MS`].
    fn due_after_push(&mut self, replica: &Replica, now_ms: u64) -> Vec<(P, Request)> {
        let due: Vec<P> = self
            .push_waits
            .iter()
            .filter(|(_, since)| now_ms.saturating_sub(**since) >= PUSH_GRACE_MS)
            .map(|(peer, _)| peer.clone())
            .collect();
        let mut requests = Vec::new();
        for peer in due {
            self.push_waits.remove(&peer);
            let Some(state) = self.peers.get(&peer) else {
                continue;
            };
            if replica.missing_dependencies().is_empty()
                && self.lacking(&state.heads, replica).is_empty()
            {
                continue;
            }
            let Some(state) = self.peers.get_mut(&peer) else {
                continue;
            };
            if state.in_flight_since_ms.is_some() {
                continue;
            }
            state.rounds = 1;
            if let Some(request) = self.start_pull(&peer, replica, now_ms, Vec::new()) {
                requests.push((peer, request));
            }
        }
        requests
    }

    /// Heads of `heads` this replica lacks (or holds waiting for their dependencies), has not refused, and no
    /// pull in flight is fetching.
    fn lacking(&self, heads: &[ChangeHash], replica: &Replica) -> Vec<ChangeHash> {
        heads
            .iter()
            .filter(|h| {
                !replica.holds(h)
                    && replica.rejection(h).is_none()
                    && !self.fetching.contains_key(h)
            })
            .copied()
            .collect()
    }

    /// Sends a pull to `peer` (the caller checked none is in flight).
    fn start_pull(
        &mut self,
        peer: &P,
        replica: &Replica,
        now_ms: u64,
        need: Vec<ChangeHash>,
    ) -> Option<Request> {
        let fetching: Vec<ChangeHash> = self
            .fetching
            .iter()
            .filter(|(_, p)| *p != peer)
            .map(|(h, _)| *h)
            .filter(|h| !replica.holds(h))
            .collect();
        let lacking = self.lacking(&self.peers.get(peer)?.heads, replica);
        let state = self.peers.get_mut(peer)?;
        let mut need = need;
        // More missing dependencies than a request lists (a hostile member's junk can fill the pending set): ask for
        // the next window of them each time, so every one is asked for within a few requests, not the same first
        // ones (by hash) forever while an honest change waits behind them.
        let mut missing = replica.missing_dependencies();
        if missing.len() > MAX_LISTED_HASHES {
            let offset = self.need_offset % missing.len();
            missing.rotate_left(offset);
            self.need_offset = self.need_offset.wrapping_add(MAX_LISTED_HASHES);
        }
        need.extend(missing);
        let request = replica.pull_request(
            &state.heads,
            state.by_ref,
            &fetching,
            state.common.as_deref(),
            need,
        )?;
        let context = if request.have_ref.is_some() {
            request.context(&state.heads)
        } else {
            request.context(&[])
        };
        if !context.is_empty() {
            if state.sent_fingerprints.len() >= REMEMBERED_FINGERPRINTS {
                state.sent_fingerprints.pop_front();
            }
            state
                .sent_fingerprints
                .push_back(context_fingerprint(&context));
        }
        let earlier = std::mem::replace(&mut state.context, context);
        if state.earlier_contexts.len() >= EARLIER_CONTEXTS {
            state.earlier_contexts.pop_front();
        }
        if !earlier.is_empty() {
            state.earlier_contexts.push_back(earlier);
        }
        state.in_flight_since_ms = Some(now_ms);
        self.earliest_in_flight_ms =
            Some(self.earliest_in_flight_ms.map_or(now_ms, |e| e.min(now_ms)));
        for head in &lacking {
            self.fetching.insert(*head, peer.clone());
        }
        state.fetching = lacking;
        self.deferred.remove(peer);
        Some(request)
    }

    fn end_pull(&mut self, peer: &P) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.in_flight_since_ms = None;
            for head in std::mem::take(&mut state.fetching) {
                if self.fetching.get(&head) == Some(peer) {
                    self.fetching.remove(&head);
                }
            }
        }
    }

    /// Notes the heads the peer sent; the next request names them by digest. Once all are held here, they are the
    /// common set.
    fn learn_heads(state: &mut PeerSync, heads: &[ChangeHash], replica: &Replica) {
        state.heads = sorted(heads);
        state.by_ref = true;
        if !state.heads.is_empty() && state.heads.iter().all(|h| replica.holds(h)) {
            state.common = Some(state.heads.clone());
        }
    }

    /// Records an announcement; returns a request when the peer's registry differs, it has heads this node lacks
    /// that no pull in flight is fetching, and no pull to it is in flight.
    pub fn on_announcement(
        &mut self,
        peer: P,
        announcement: &Announcement,
        replica: &Replica,
        now_ms: u64,
    ) -> Option<Request> {
        if Some(announcement.federation) != replica.federation() {
            return None;
        }
        let state = self.peers.entry(peer.clone()).or_default();
        let previous = state.digest.replace(announcement.digest);
        if !announcement.heads.is_empty() {
            Self::learn_heads(state, &announcement.heads, replica);
        }
        let in_flight = state.in_flight_since_ms.is_some();
        let ours = heads_digest(&replica.heads());
        if ours == announcement.digest {
            return None;
        }
        if announcement.summary && previous != Some(announcement.digest) {
            // The sender's state moved since its last word: its changes are still on their way (pushes, pulls).
            return None;
        }
        let unlisted = announcement.heads.is_empty();
        let lacking = self.lacking(&self.peers[&peer].heads, replica);
        if !unlisted && lacking.is_empty() {
            // Whatever it has that we lack is being fetched (or refused): look again when those pulls end.
            if announcement.heads.iter().any(|h| !replica.holds(h)) {
                self.deferred.insert(peer);
            }
            return None;
        }
        if in_flight {
            self.deferred.insert(peer);
            return None;
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.rounds = 1;
        }
        self.start_pull(&peer, replica, now_ms, Vec::new())
    }

    /// Starts a pull from `peer` now (on connect, on demand), unless one is in flight.
    pub fn pull(&mut self, peer: P, replica: &Replica, now_ms: u64) -> Option<Request> {
        let state = self.peers.entry(peer.clone()).or_default();
        if state.in_flight_since_ms.is_some() {
            return None;
        }
        state.rounds = 1;
        self.start_pull(&peer, replica, now_ms, Vec::new())
    }

    /// After the caller fed a response's envelopes to the replica: the next request, if the pull goes on.
    pub fn on_response(
        &mut self,
        peer: &P,
        response: &Response,
        accepted: usize,
        rejected: usize,
        replica: &Replica,
        now_ms: u64,
    ) -> Option<Request> {
        let asked = self
            .peers
            .get(peer)
            .map(|state| state.fetching.clone())
            .unwrap_or_default();
        let sent_at = self.peers.get(peer).and_then(|s| s.in_flight_since_ms);
        self.end_pull(peer);
        let state = self.peers.get_mut(peer)?;
        if let Some(sent_at) = sent_at {
            state.round_trip.sample(now_ms.saturating_sub(sent_at));
        }
        // Heads it named that it did not bring, in a complete answer that brought nothing new and nothing refused
        // (refused changes are penalized by what they are): it claims changes it does not serve.
        if !response.more
            && !response.unknown_ref
            && accepted == 0
            && rejected == 0
            && asked
                .iter()
                .any(|h| !replica.holds(h) && replica.rejection(h).is_none())
        {
            state.unserved += 1;
        } else if accepted > 0 {
            state.unserved = 0;
        }
        if response.unknown_ref {
            // The peer forgot a head set we named: ask again, listing the heads.
            state.by_ref = false;
            state.common = None;
            if state.rounds < MAX_ROUNDS {
                state.rounds += 1;
                return self.start_pull(peer, replica, now_ms, Vec::new());
            }
            return None;
        }
        Self::learn_heads(state, &response.heads, replica);
        state.accepted += accepted as u64;
        state.rejected += rejected as u64;
        let missing = !replica.missing_dependencies().is_empty();
        // Heads it has that we still lack (the response was cut, or it had more than we asked for) and no other
        // pull is fetching.
        let heads = state.heads.clone();
        let lacking = !self.lacking(&heads, replica).is_empty();
        let progress = accepted > 0 || response.more;
        let state = self.peers.get_mut(peer)?;
        if (response.more || missing || lacking) && progress && state.rounds < MAX_ROUNDS {
            state.rounds += 1;
            return self.start_pull(peer, replica, now_ms, Vec::new());
        }
        state.last_sync_ms = Some(now_ms);
        None
    }

    /// Pulls that waited for another to end: from each deferred peer that still has heads this node lacks and no
    /// pull in flight is fetching. Call after a pull ends (response, failure, timeout).
    pub fn followups(&mut self, replica: &Replica, now_ms: u64) -> Vec<(P, Request)> {
        let mut requests = self.due_after_push(replica, now_ms);
        for peer in std::mem::take(&mut self.deferred) {
            let Some(state) = self.peers.get(&peer) else {
                continue;
            };
            if state.in_flight_since_ms.is_some() {
                self.deferred.insert(peer);
                continue;
            }
            let heads = state.heads.clone();
            if heads.iter().all(|h| replica.holds(h)) {
                continue;
            }
            if self.lacking(&heads, replica).is_empty() {
                // Still being fetched elsewhere (or refused or waiting): keep it in mind.
                if heads
                    .iter()
                    .any(|h| !replica.holds(h) && self.fetching.contains_key(h))
                {
                    self.deferred.insert(peer);
                }
                continue;
            }
            if let Some(state) = self.peers.get_mut(&peer) {
                state.rounds = 1;
            }
            if let Some(request) = self.start_pull(&peer, replica, now_ms, Vec::new()) {
                requests.push((peer, request));
            }
        }
        requests
    }

    /// The request to `peer` failed or timed out.
    pub fn on_failure(&mut self, peer: &P) {
        self.end_pull(peer);
    }

    /// The pull from `peer` got no answer (its RTO passed, or the transport gave it up): the RTO backs off and the
    /// peer is pulled again by [`Syncer::followups`] while it has heads this node lacks.
    pub fn timed_out(&mut self, peer: &P) {
        self.end_pull(peer);
        if let Some(state) = self.peers.get_mut(peer) {
            state.round_trip.back_off();
        }
        self.deferred.insert(peer.clone());
    }

    /// Counts bytes exchanged with a peer.
    pub fn count_bytes(&mut self, peer: &P, bytes: usize) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.bytes += bytes as u64;
        }
    }

    /// Ends the pulls whose answer did not come within their peer's retransmission timeout (the request or its
    /// answer was lost, or the peer is gone), backs the timeout off, and returns those peers: they are pulled again
    /// by [`Syncer::followups`] while they have heads this node lacks.
    pub fn on_tick(&mut self, now_ms: u64) -> Vec<P> {
        match self.earliest_in_flight_ms {
            Some(earliest) if now_ms.saturating_sub(earliest) > super::pulls::MIN_RTO_MS => {}
            _ => return Vec::new(),
        }
        let timed_out: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, state)| {
                state
                    .in_flight_since_ms
                    .is_some_and(|since| now_ms.saturating_sub(since) > state.round_trip.rto_ms())
            })
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in &timed_out {
            self.timed_out(peer);
        }
        self.earliest_in_flight_ms = self
            .peers
            .values()
            .filter_map(|state| state.in_flight_since_ms)
            .min();
        timed_out
    }

    /// Over a transport that reports loss itself, a pull is not sent again because it is slow, but the heads it was
    /// to bring are released once its answer is an RTO late, so that another peer that has them is pulled from: a
    /// member that takes requests and never answers cannot hold a change back for the transport's whole timeout.
    /// The pull stays in flight (its answer is still read). Returns how many pulls were released.
    pub fn release_slow(&mut self, now_ms: u64) -> usize {
        match self.earliest_in_flight_ms {
            Some(earliest) if now_ms.saturating_sub(earliest) > super::pulls::MIN_RTO_MS => {}
            _ => return 0,
        }
        let mut released = 0;
        for (peer, state) in &mut self.peers {
            let late = state
                .in_flight_since_ms
                .is_some_and(|since| now_ms.saturating_sub(since) > state.round_trip.rto_ms());
            if !late || state.fetching.is_empty() {
                continue;
            }
            for head in std::mem::take(&mut state.fetching) {
                if self.fetching.get(&head) == Some(peer) {
                    self.fetching.remove(&head);
                }
            }
            released += 1;
        }
        released
    }

    /// Peers whose answers left heads they named unserved this many times in a row.
    pub fn unserved(&self, peer: &P) -> u32 {
        self.peers.get(peer).map_or(0, |s| s.unserved)
    }

    /// Forgets that `peer` left heads unserved (it was penalized for it).
    pub fn forgive(&mut self, peer: &P) {
        if let Some(state) = self.peers.get_mut(peer) {
            state.unserved = 0;
        }
    }

    /// The pull in flight to `peer`, if any, was sent at this time.
    pub fn in_flight_since(&self, peer: &P) -> Option<u64> {
        self.peers.get(peer).and_then(|s| s.in_flight_since_ms)
    }

    /// The retransmission timeout of `peer`.
    pub fn rto_ms(&self, peer: &P) -> u64 {
        self.peers
            .get(peer)
            .map_or(INITIAL_RTO_MS, |s| s.round_trip.rto_ms())
    }

    /// Backs `peer`'s retransmission timeout off (a push to it went unacknowledged).
    pub fn back_off(&mut self, peer: &P) {
        self.peers
            .entry(peer.clone())
            .or_default()
            .round_trip
            .back_off();
    }

    /// Feeds a round-trip sample for `peer` (a push acknowledged on its first attempt).
    pub fn sample_round_trip(&mut self, peer: &P, rtt_ms: u64) {
        self.peers
            .entry(peer.clone())
            .or_default()
            .round_trip
            .sample(rtt_ms);
    }

    /// Whether any pull waits for another to end (see [`Syncer::followups`]).
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty() || !self.push_waits.is_empty()
    }
}
