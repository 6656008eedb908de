//! The admission policy the event loop applies to peers: member set, temporary allowances, rate limits, penalties,
//! and which peers are blocked (by penalties and by the operator).
//!
//! Pure bookkeeping: every method that depends on time takes `now`, so it is tested without a network or a clock.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// Temporary allowances held at once (invite redemptions in flight).
pub(crate) const MAX_TEMPORARY_ALLOWANCES: usize = 64;
/// Peers whose penalty count is remembered; past this the oldest-keyed entry is forgotten.
pub(crate) const MAX_PENALIZED_PEERS: usize = 4096;
/// Peers the operator may block at once (`Client::set_blocked_peers`).
pub const MAX_BLOCKED_PEERS: usize = 4096;

/// How long a peer whose admission was refused keeps its allowance, so that the answer saying why reaches it.
pub(crate) const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Who may talk to this node, and how much.
#[derive(Debug)]
pub(crate) struct Gate {
    /// `None` until the node calls `set_members`: the gate is open so a fresh node can bootstrap.
    members: Option<BTreeSet<PeerId>>,
    /// Peers allowed until the given instant even though they are not members.
    temporary: HashMap<PeerId, Instant>,
    /// Request token buckets of connected peers; dropped when the peer disconnects.
    buckets: HashMap<PeerId, Bucket>,
    penalties: BTreeMap<PeerId, u32>,
    max_requests_per_second: u32,
}

/// A token bucket holding at most `max_requests_per_second` tokens, refilled at that rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// The member set could not take another temporary allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AllowancesFull;

impl Gate {
    pub(crate) fn new(max_requests_per_second: u32) -> Self {
        Self {
            members: None,
            temporary: HashMap::new(),
            buckets: HashMap::new(),
            penalties: BTreeMap::new(),
            max_requests_per_second,
        }
    }

    pub(crate) fn set_members(&mut self, members: BTreeSet<PeerId>) {
        self.members = Some(members);
    }

    /// The member set, once the node gave one.
    pub(crate) fn members(&self) -> Option<&BTreeSet<PeerId>> {
        self.members.as_ref()
    }

    pub(crate) fn allow_temporarily(
        &mut self,
        peer: PeerId,
        until: Instant,
        now: Instant,
    ) -> Result<(), AllowancesFull> {
        if !self.temporary.contains_key(&peer) && self.temporary.len() >= MAX_TEMPORARY_ALLOWANCES {
            self.temporary.retain(|_, deadline| *deadline > now);
            if self.temporary.len() >= MAX_TEMPORARY_ALLOWANCES {
                return Err(AllowancesFull);
            }
        }
        self.temporary.insert(peer, until);
        Ok(())
    }

    /// Ends `peer`'s temporary allowance at `until` at the latest (its redemption was refused: the answer still
    /// reaches it, then the gate closes the connection).
    pub(crate) fn end_allowance(&mut self, peer: &PeerId, until: Instant) {
        if let Some(deadline) = self.temporary.get_mut(peer) {
            *deadline = (*deadline).min(until);
        }
    }

    /// Whether `peer` may hold a connection, send requests and have its gossip surfaced.
    pub(crate) fn permits(&self, peer: &PeerId, now: Instant) -> bool {
        match &self.members {
            None => true,
            Some(members) => {
                members.contains(peer)
                    || self
                        .temporary
                        .get(peer)
                        .is_some_and(|deadline| *deadline > now)
            }
        }
    }

    /// Takes one request token from `peer`'s bucket; `false` means the peer is over its rate.
    pub(crate) fn admit_request(&mut self, peer: PeerId, now: Instant) -> bool {
        let capacity = f64::from(self.max_requests_per_second);
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            tokens: capacity,
            refilled_at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled_at);
        bucket.tokens = (bucket.tokens + elapsed.as_secs_f64() * capacity).min(capacity);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets per-connection state of a peer that has no connection left.
    pub(crate) fn forget_connection_state(&mut self, peer: &PeerId) {
        self.buckets.remove(peer);
    }

    /// Records one penalty and returns the peer's total.
    pub(crate) fn penalize(&mut self, peer: PeerId) -> u32 {
        if !self.penalties.contains_key(&peer) && self.penalties.len() >= MAX_PENALIZED_PEERS {
            self.penalties.pop_first();
        }
        let count = self.penalties.entry(peer).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }

    pub(crate) fn clear_penalties(&mut self, peer: &PeerId) {
        self.penalties.remove(peer);
    }

    /// Drops expired temporary allowances so the map holds only live ones.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.temporary.retain(|_, deadline| *deadline > now);
    }
}

/// Why peers are blocked. Two sources that must not undo each other: single peers blocked for misbehaviour
/// (penalties, `Client::block`, lifted by `Client::unblock`) and the operator's set, replaced as a whole
/// (`Client::set_blocked_peers`, e.g. the sides of a simulated partition). A peer is blocked while either holds it.
#[derive(Debug, Default)]
pub(crate) struct BlockList {
    single: HashSet<PeerId>,
    operator: BTreeSet<PeerId>,
}

/// What a change to the block list means for the swarm's own block list.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockChange {
    /// Peers blocked now that were not before.
    pub(crate) blocked: Vec<PeerId>,
    /// Peers no longer blocked by anything.
    pub(crate) unblocked: Vec<PeerId>,
}

/// The operator's set was larger than [`MAX_BLOCKED_PEERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyBlocked;

impl BlockList {
    pub(crate) fn is_blocked(&self, peer: &PeerId) -> bool {
        self.single.contains(peer) || self.operator.contains(peer)
    }

    /// Blocks one peer; returns whether it was not blocked before.
    pub(crate) fn block(&mut self, peer: PeerId) -> bool {
        let was = self.is_blocked(&peer);
        self.single.insert(peer);
        !was
    }

    /// Lifts the single block of `peer`; returns whether nothing blocks it any more.
    pub(crate) fn unblock(&mut self, peer: &PeerId) -> bool {
        self.single.remove(peer);
        !self.is_blocked(peer)
    }

    /// Replaces the operator's set.
    pub(crate) fn set_operator(
        &mut self,
        peers: BTreeSet<PeerId>,
    ) -> Result<BlockChange, TooManyBlocked> {
        if peers.len() > MAX_BLOCKED_PEERS {
            return Err(TooManyBlocked);
        }
        let old = std::mem::replace(&mut self.operator, peers);
        let blocked = self
            .operator
            .iter()
            .filter(|p| !old.contains(*p) && !self.single.contains(*p))
            .copied()
            .collect();
        let unblocked = old
            .iter()
            .filter(|p| !self.is_blocked(p))
            .copied()
            .collect();
        Ok(BlockChange { blocked, unblocked })
    }

    /// The operator's set.
    pub(crate) fn operator(&self) -> &BTreeSet<PeerId> {
        &self.operator
    }
}

/// Whether a connection open since `connected_at` has outlived the grace period given to non-members.
pub(crate) fn grace_expired(connected_at: Instant, grace: Duration, now: Instant) -> bool {
    now.saturating_duration_since(connected_at) >= grace
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        crate::Keypair::from_secret_seed([seed; 32]).peer_id()
    }

    #[test]
    fn open_until_members_are_set() {
        let mut gate = Gate::new(10);
        let now = Instant::now();
        assert!(gate.permits(&peer(1), now));
        gate.set_members(BTreeSet::from([peer(2)]));
        assert!(!gate.permits(&peer(1), now));
        assert!(gate.permits(&peer(2), now));
    }

    #[test]
    fn temporary_allowance_expires() {
        let mut gate = Gate::new(10);
        let now = Instant::now();
        gate.set_members(BTreeSet::new());
        gate.allow_temporarily(peer(1), now + Duration::from_secs(5), now)
            .expect("room");
        assert!(gate.permits(&peer(1), now + Duration::from_secs(4)));
        assert!(!gate.permits(&peer(1), now + Duration::from_secs(5)));
    }

    #[test]
    fn an_allowance_can_be_ended_early_but_not_extended() {
        let mut gate = Gate::new(10);
        let now = Instant::now();
        gate.set_members(BTreeSet::new());
        gate.allow_temporarily(peer(1), now + Duration::from_secs(30), now)
            .expect("room");
        gate.end_allowance(&peer(1), now + Duration::from_millis(500));
        assert!(gate.permits(&peer(1), now + Duration::from_millis(499)));
        assert!(!gate.permits(&peer(1), now + Duration::from_millis(500)));
        // Ending the allowance of a peer that holds none grants nothing.
        gate.end_allowance(&peer(2), now + Duration::from_secs(60));
        assert!(!gate.permits(&peer(2), now));
    }

    #[test]
    fn temporary_allowances_are_bounded() {
        let mut gate = Gate::new(10);
        let now = Instant::now();
        let short = now + Duration::from_secs(1);
        for seed in 0..u8::try_from(MAX_TEMPORARY_ALLOWANCES).expect("fits") {
            gate.allow_temporarily(peer(seed), short, now)
                .expect("room");
        }
        assert_eq!(
            gate.allow_temporarily(peer(200), short, now),
            Err(AllowancesFull)
        );
        // Once the earlier ones expired there is room again.
        let later = now + Duration::from_secs(2);
        gate.allow_temporarily(peer(200), later + Duration::from_secs(1), later)
            .expect("room after expiry");
    }

    #[test]
    fn rate_limit_allows_a_burst_then_refills() {
        let mut gate = Gate::new(2);
        let now = Instant::now();
        assert!(gate.admit_request(peer(1), now));
        assert!(gate.admit_request(peer(1), now));
        assert!(!gate.admit_request(peer(1), now));
        // Other peers have their own bucket.
        assert!(gate.admit_request(peer(2), now));
        // Half a second refills one token at two per second.
        assert!(gate.admit_request(peer(1), now + Duration::from_millis(500)));
        assert!(!gate.admit_request(peer(1), now + Duration::from_millis(500)));
    }

    #[test]
    fn penalties_count_and_clear() {
        let mut gate = Gate::new(1);
        assert_eq!(gate.penalize(peer(1)), 1);
        assert_eq!(gate.penalize(peer(1)), 2);
        gate.clear_penalties(&peer(1));
        assert_eq!(gate.penalize(peer(1)), 1);
    }

    #[test]
    fn operator_blocks_and_penalty_blocks_do_not_undo_each_other() {
        let mut list = BlockList::default();
        assert!(list.block(peer(1)));
        let change = list
            .set_operator(BTreeSet::from([peer(1), peer(2)]))
            .expect("small set");
        // peer 1 was already blocked by a penalty: only peer 2 is new.
        assert_eq!(change.blocked, vec![peer(2)]);
        assert!(change.unblocked.is_empty());
        // Lifting the penalty leaves the operator's block in place.
        assert!(!list.unblock(&peer(1)));
        assert!(list.is_blocked(&peer(1)));
        assert!(list.block(peer(3)));
        // Healing the operator's set frees 1 and 2 but not the penalized 3.
        let change = list.set_operator(BTreeSet::new()).expect("empty set");
        let mut unblocked = change.unblocked;
        unblocked.sort();
        let mut expected = vec![peer(1), peer(2)];
        expected.sort();
        assert_eq!(unblocked, expected);
        assert!(list.is_blocked(&peer(3)));
        assert!(!list.is_blocked(&peer(2)));
    }

    #[test]
    fn operator_set_is_bounded() {
        let mut list = BlockList::default();
        let many: BTreeSet<PeerId> = (0..=MAX_BLOCKED_PEERS).map(|_| PeerId::random()).collect();
        assert_eq!(list.set_operator(many), Err(TooManyBlocked));
        assert!(list.operator().is_empty());
    }

    #[test]
    fn grace_period() {
        let now = Instant::now();
        let grace = Duration::from_millis(100);
        assert!(!grace_expired(now, grace, now + Duration::from_millis(99)));
        assert!(grace_expired(now, grace, now + Duration::from_millis(100)));
    }
}
