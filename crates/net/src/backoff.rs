//! Back-off for strangers: after a non-member's connection ends without it having been let in (it did not redeem an
//! invite within the grace period, or its redemption was refused), new connections from that peer, and from its IP
//! address once several peers failed there, are refused for a while.
//!
//! Pure bookkeeping: every method takes `now`, so the rules are tested without a network or a clock. Only
//! non-members are ever refused (the caller asks only about them), so members sharing an address with strangers (all
//! test nodes share 127.0.0.1; offices share a NAT address) are never locked out.
//!
//! The rules:
//! - a peer's n-th failure (failures older than [`STRIKE_MEMORY`] are forgotten) refuses it for
//!   `PEER_BACKOFF_BASE * 2^(n-1)`, at most [`PEER_BACKOFF_MAX`];
//! - an IP address is refused once [`IP_FAILING_PEERS_BEFORE_BAN`] distinct peers failed from it within
//!   [`IP_FAILURE_WINDOW`]; its n-th such ban lasts `IP_BACKOFF_BASE * 2^(n-1)`, at most [`IP_BACKOFF_MAX`]. One
//!   failing peer never bans its address: an honest joiner that dialed every address of its ticket and redeemed with
//!   one of them fails at the others, and its neighbours on the same address must still get in.
//! - at most [`MAX_BACKOFF_ENTRIES`] peers and as many addresses are remembered; past that the entry whose refusal
//!   ends first is forgotten.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// Peers, and addresses, whose failures are remembered.
pub(crate) const MAX_BACKOFF_ENTRIES: usize = 4096;
/// A peer's first failure refuses it this long; each further one doubles it.
pub(crate) const PEER_BACKOFF_BASE: Duration = Duration::from_secs(2);
/// The longest a peer is refused.
pub(crate) const PEER_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A peer with no failure for this long starts again from [`PEER_BACKOFF_BASE`].
pub(crate) const STRIKE_MEMORY: Duration = Duration::from_secs(600);
/// Distinct peers failing from one address within [`IP_FAILURE_WINDOW`] before the address is refused.
pub(crate) const IP_FAILING_PEERS_BEFORE_BAN: usize = 8;
/// The window in which failing peers of one address are counted.
pub(crate) const IP_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// An address's first ban lasts this long; each further one doubles it.
pub(crate) const IP_BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest an address is refused.
pub(crate) const IP_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Why a stranger's connection is refused now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The peer failed recently.
    Peer { remaining: Duration },
    /// Too many peers failed from its address recently.
    Address { remaining: Duration },
}

#[derive(Debug, Clone, Copy)]
struct PeerStrikes {
    strikes: u32,
    last_failure: Instant,
    until: Instant,
}

#[derive(Debug, Clone, Default)]
struct AddressFailures {
    /// Distinct peers that failed from this address, with when (at most [`IP_FAILING_PEERS_BEFORE_BAN`]).
    recent: Vec<(PeerId, Instant)>,
    bans: u32,
    last_ban: Option<Instant>,
    until: Option<Instant>,
}

/// Remembered failures of strangers, by peer and by address.
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    peers: HashMap<PeerId, PeerStrikes>,
    addresses: HashMap<IpAddr, AddressFailures>,
}

impl Backoff {
    /// Records that `peer` (connected from `ip`, when known) left without being let in.
    pub(crate) fn record_failure(&mut self, peer: PeerId, ip: Option<IpAddr>, now: Instant) {
        self.record_peer(peer, now);
        if let Some(ip) = ip {
            self.record_address(ip, peer, now);
        }
    }

    /// Whether a stranger's new connection is refused, and why.
    pub(crate) fn refused(
        &self,
        peer: &PeerId,
        ip: Option<IpAddr>,
        now: Instant,
    ) -> Option<Refused> {
        if let Some(entry) = self.peers.get(peer)
            && entry.until > now
        {
            return Some(Refused::Peer {
                remaining: entry.until - now,
            });
        }
        let until = ip.and_then(|ip| self.addresses.get(&ip)?.until)?;
        (until > now).then(|| Refused::Address {
            remaining: until - now,
        })
    }

    /// Forgets a peer's failures (it became a member, or the operator let it in).
    pub(crate) fn forgive(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    fn record_peer(&mut self, peer: PeerId, now: Instant) {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_BACKOFF_ENTRIES {
            evict(&mut self.peers, |entry| entry.until);
        }
        let entry = self.peers.entry(peer).or_insert(PeerStrikes {
            strikes: 0,
            last_failure: now,
            until: now,
        });
        if now.saturating_duration_since(entry.last_failure) >= STRIKE_MEMORY {
            entry.strikes = 0;
        }
        entry.strikes = entry.strikes.saturating_add(1);
        entry.last_failure = now;
        entry.until = now + doubled(PEER_BACKOFF_BASE, entry.strikes, PEER_BACKOFF_MAX);
    }

    fn record_address(&mut self, ip: IpAddr, peer: PeerId, now: Instant) {
        if !self.addresses.contains_key(&ip) && self.addresses.len() >= MAX_BACKOFF_ENTRIES {
            evict(&mut self.addresses, |entry| entry.until.unwrap_or(now));
        }
        let entry = self.addresses.entry(ip).or_default();
        entry.recent.retain(|(other, at)| {
            *other != peer && now.saturating_duration_since(*at) < IP_FAILURE_WINDOW
        });
        entry.recent.push((peer, now));
        if entry.recent.len() < IP_FAILING_PEERS_BEFORE_BAN {
            return;
        }
        if entry
            .last_ban
            .is_some_and(|at| now.saturating_duration_since(at) >= STRIKE_MEMORY)
        {
            entry.bans = 0;
        }
        entry.bans = entry.bans.saturating_add(1);
        entry.last_ban = Some(now);
        entry.until = Some(now + doubled(IP_BACKOFF_BASE, entry.bans, IP_BACKOFF_MAX));
        // The ban is the answer to these failures; the next ban needs a fresh set of failing peers.
        entry.recent.clear();
    }
}

/// `base * 2^(n-1)`, at most `max`.
fn doubled(base: Duration, n: u32, max: Duration) -> Duration {
    let factor = 1u32 << n.saturating_sub(1).min(16);
    base.saturating_mul(factor).min(max)
}

/// Forgets the entry whose refusal ends first.
fn evict<K: Copy + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    until: impl Fn(&V) -> Instant,
) {
    if let Some(key) = map.iter().min_by_key(|(_, v)| until(v)).map(|(k, _)| *k) {
        map.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(seed: u8) -> PeerId {
        crate::Keypair::from_secret_seed([seed; 32]).peer_id()
    }

    const HOME: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn a_failed_peer_is_refused_for_a_doubling_while() {
        let mut backoff = Backoff::default();
        let now = Instant::now();
        assert_eq!(backoff.refused(&peer(1), HOME, now), None);
        backoff.record_failure(peer(1), HOME, now);
        assert_eq!(
            backoff.refused(&peer(1), HOME, now),
            Some(Refused::Peer {
                remaining: PEER_BACKOFF_BASE
            })
        );
        let later = now + PEER_BACKOFF_BASE;
        assert_eq!(backoff.refused(&peer(1), HOME, later), None);
        backoff.record_failure(peer(1), HOME, later);
        assert_eq!(
            backoff.refused(&peer(1), HOME, later),
            Some(Refused::Peer {
                remaining: PEER_BACKOFF_BASE * 2
            })
        );
        // Another peer on the same address is not refused for one peer's failures.
        assert_eq!(backoff.refused(&peer(2), HOME, later), None);
    }

    #[test]
    fn peer_backoff_is_capped_and_forgotten_after_a_quiet_while() {
        let mut backoff = Backoff::default();
        let mut now = Instant::now();
        for _ in 0..30 {
            backoff.record_failure(peer(1), None, now);
            now += Duration::from_secs(1);
        }
        let Some(Refused::Peer { remaining }) = backoff.refused(&peer(1), None, now) else {
            panic!("the peer is refused");
        };
        assert!(remaining <= PEER_BACKOFF_MAX);
        // After a long quiet spell one failure counts as the first again.
        let much_later = now + STRIKE_MEMORY;
        backoff.record_failure(peer(1), None, much_later);
        assert_eq!(
            backoff.refused(&peer(1), None, much_later),
            Some(Refused::Peer {
                remaining: PEER_BACKOFF_BASE
            })
        );
        backoff.forgive(&peer(1));
        assert_eq!(backoff.refused(&peer(1), None, much_later), None);
    }

    #[test]
    fn an_address_is_refused_only_after_many_distinct_peers_failed_there() {
        let mut backoff = Backoff::default();
        let now = Instant::now();
        // One peer failing over and over does not ban its address.
        for _ in 0..20 {
            backoff.record_failure(peer(1), HOME, now);
        }
        assert_eq!(backoff.refused(&peer(99), HOME, now), None);
        for seed in 2..u8::try_from(IP_FAILING_PEERS_BEFORE_BAN).expect("small") {
            backoff.record_failure(peer(seed), HOME, now);
        }
        assert_eq!(backoff.refused(&peer(99), HOME, now), None);
        backoff.record_failure(peer(50), HOME, now);
        assert_eq!(
            backoff.refused(&peer(99), HOME, now),
            Some(Refused::Address {
                remaining: IP_BACKOFF_BASE
            })
        );
        // Another address is unaffected, and the ban ends.
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(backoff.refused(&peer(99), other, now), None);
        assert_eq!(
            backoff.refused(&peer(99), HOME, now + IP_BACKOFF_BASE),
            None
        );
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_ban_an_address() {
        let mut backoff = Backoff::default();
        let mut now = Instant::now();
        for seed in 0..40 {
            backoff.record_failure(peer(seed), HOME, now);
            now += IP_FAILURE_WINDOW / 4;
        }
        assert_eq!(backoff.refused(&peer(99), HOME, now), None);
    }

    #[test]
    fn memory_is_bounded() {
        let mut backoff = Backoff::default();
        let now = Instant::now();
        for index in 0..(MAX_BACKOFF_ENTRIES + 10) {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(index as u128));
            backoff.record_failure(PeerId::random(), Some(ip), now);
        }
        assert_eq!(backoff.peers.len(), MAX_BACKOFF_ENTRIES);
        assert_eq!(backoff.addresses.len(), MAX_BACKOFF_ENTRIES);
    }
}
