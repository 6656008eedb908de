//! The responder: what a node answers to a peer's pull (the envelopes it lacks, each after its dependencies, within
//! the response limits), and the head sets it remembers having sent, so a request can name one by its digest.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use automerge::ChangeHash;

use super::wire::{
    Announcement, MAX_ANNOUNCED_HEADS, MAX_LISTED_HASHES, MAX_RESPONSE_BYTES,
    MAX_RESPONSE_ENVELOPES, Request, Response, heads_digest, marked,
};
use crate::Replica;
use crate::bloom::Bloom;
use crate::envelope::Envelope;

/// Head sets a node remembers having sent (in announcements and responses), so a request can name one by digest.
pub const RECENT_HEAD_SETS: usize = 1024;

/// Heads sorted and deduplicated.
pub(super) fn sorted(heads: &[ChangeHash]) -> Vec<ChangeHash> {
    let mut heads = heads.to_vec();
    heads.sort();
    heads.dedup();
    heads
}

/// The head sets this node sent, by digest, so requests can name them; the oldest is forgotten first.
#[derive(Clone, Debug, Default)]
pub struct Responder {
    sent_sets: HashMap<[u8; 32], Vec<ChangeHash>>,
    sent_order: VecDeque<[u8; 32]>,
}

impl Responder {
    /// Remembers a head set (sorted) as sent.
    pub fn remember(&mut self, heads: Vec<ChangeHash>) {
        let digest = heads_digest(&heads);
        if self.sent_sets.contains_key(&digest) {
            return;
        }
        if self.sent_order.len() >= RECENT_HEAD_SETS
            && let Some(oldest) = self.sent_order.pop_front()
        {
            self.sent_sets.remove(&oldest);
        }
        self.sent_order.push_back(digest);
        self.sent_sets.insert(digest, heads);
    }

    /// Whether `digest` names a head set this node sent (an earlier state of its own, or its current one).
    pub fn sent(&self, digest: &[u8; 32]) -> bool {
        self.sent_sets.contains_key(digest)
    }

    /// A peer's request with its `have_ref` resolved, or `None` when the reference is not a head set this node
    /// remembers sending (or the bitmaps do not fit it).
    pub fn resolve(&self, request: &Request) -> Option<Pull> {
        let lookup = |digest: &Option<[u8; 32]>| -> Option<&[ChangeHash]> {
            match digest {
                None => Some(&[][..]),
                Some(digest) => self.sent_sets.get(digest).map(Vec::as_slice),
            }
        };
        request.resolve(lookup(&request.have_ref)?, lookup(&request.common_ref)?)
    }

    /// Answers a peer's request: the response and the context to encode it with (see [`Response::encode_for`]).
    /// The response's heads are remembered, so the peer's next request can name them.
    pub fn prepare(
        &mut self,
        request: &Request,
        replica: &Replica,
        source: &impl EnvelopeSource,
    ) -> (Response, Vec<ChangeHash>) {
        let Some(pull) = self.resolve(request) else {
            let response = Response {
                heads: Vec::new(),
                envelopes: Vec::new(),
                more: false,
                unknown_ref: true,
            };
            return (response, Vec::new());
        };
        let response = replica.sync_response(request, &pull, source);
        if response.heads.len() <= MAX_LISTED_HASHES {
            self.remember(sorted(&response.heads));
        }
        (response, pull.context)
    }

    /// Answers a peer's request, in wire form.
    pub fn respond(
        &mut self,
        request: &Request,
        replica: &Replica,
        source: &impl EnvelopeSource,
    ) -> Vec<u8> {
        let (response, context) = self.prepare(request, replica, source);
        response.encode_for(&context)
    }
}

/// Where a responder finds the envelopes of accepted changes (the store on a node, a map in the simulator).
pub trait EnvelopeSource {
    /// The envelope of an accepted change.
    fn envelope(&self, hash: &ChangeHash) -> Option<Envelope>;

    /// The auth heads of an accepted change's envelope: all a responder reads of a change its peer may hold
    /// already. A source that holds envelopes in memory answers without copying the envelope.
    fn auth_heads(&self, hash: &ChangeHash) -> Option<Vec<ChangeHash>> {
        self.envelope(hash).map(|envelope| envelope.auth_heads)
    }
}

impl EnvelopeSource for std::collections::HashMap<ChangeHash, Envelope> {
    fn envelope(&self, hash: &ChangeHash) -> Option<Envelope> {
        self.get(hash).cloned()
    }

    fn auth_heads(&self, hash: &ChangeHash) -> Option<Vec<ChangeHash>> {
        self.get(hash).map(|envelope| envelope.auth_heads.clone())
    }
}

impl EnvelopeSource for BTreeMap<ChangeHash, Envelope> {
    fn envelope(&self, hash: &ChangeHash) -> Option<Envelope> {
        self.get(hash).cloned()
    }

    fn auth_heads(&self, hash: &ChangeHash) -> Option<Vec<ChangeHash>> {
        self.get(hash).map(|envelope| envelope.auth_heads.clone())
    }
}

impl Request {
    /// The hashes a response to this request may name by index: the heads `have_ref` stands for (sorted), then
    /// `have`, then `need`. The requester knows `ref_heads` because it chose the reference; the responder looks it
    /// up.
    pub fn context(&self, ref_heads: &[ChangeHash]) -> Vec<ChangeHash> {
        let mut context = Vec::with_capacity(ref_heads.len() + self.have.len() + self.need.len());
        context.extend_from_slice(ref_heads);
        context.extend_from_slice(&self.have);
        context.extend_from_slice(&self.need);
        context
    }

    /// What the request asks for, given the heads its `have_ref` and `common_ref` stand for: `None` when the
    /// bitmaps do not fit them.
    pub fn resolve(&self, ref_heads: &[ChangeHash], common_heads: &[ChangeHash]) -> Option<Pull> {
        if self.have_ref.is_some()
            && (self.held.len() != ref_heads.len() || self.wanted.len() != ref_heads.len())
        {
            return None;
        }
        let mut have = marked(ref_heads, &self.held);
        have.extend_from_slice(&self.have);
        have.extend_from_slice(common_heads);
        let mut want = marked(ref_heads, &self.wanted);
        want.extend_from_slice(&self.need);
        Some(Pull {
            context: self.context(ref_heads),
            have,
            want,
        })
    }
}

/// A request with its reference resolved: what the requester holds and what it asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pull {
    /// What the response may name by index ([`Request::context`]).
    pub context: Vec<ChangeHash>,
    /// Heads the requester holds everything under.
    pub have: Vec<ChangeHash>,
    /// Changes it asks for; empty: everything it lacks.
    pub want: Vec<ChangeHash>,
}

impl Pull {
    /// A pull of a request without a reference.
    pub fn unreferenced(request: &Request) -> Self {
        request.resolve(&[], &[]).unwrap_or_default()
    }
}

impl Replica {
    /// The announcement of this replica's heads.
    pub fn announcement(&self) -> Option<Announcement> {
        let federation = self.federation()?;
        let heads = self.heads();
        Some(Announcement {
            federation,
            digest: heads_digest(&heads),
            heads: if heads.len() <= MAX_ANNOUNCED_HEADS {
                heads
            } else {
                Vec::new()
            },
            changes: self.held_len() as u64,
            summary: false,
        })
    }

    /// A pull request to a peer whose heads were announced as `peer_heads`, listing the heads in full: the shared
    /// ones in `have`, the lacking ones in `need`.
    pub fn sync_request(&self, peer_heads: &[ChangeHash]) -> Option<Request> {
        self.pull_request(
            &sorted(peer_heads),
            false,
            &[],
            None,
            self.missing_dependencies(),
        )
    }

    /// A pull request given the peer's latest head set `known` (sorted): the heads of it this replica holds, or
    /// that a pull elsewhere is fetching (`fetching`), count as held; those it lacks otherwise are wanted. With
    /// `by_ref` the set is named by its digest and two bitmaps, else listed. `common` is an earlier head set of the
    /// peer's that this replica holds entirely: named by its digest (or listed), it stands for what the two share in
    /// the documents where the peer moved on. The Bloom filter holds this replica's changes under none of those.
    pub(super) fn pull_request(
        &self,
        known: &[ChangeHash],
        by_ref: bool,
        fetching: &[ChangeHash],
        common: Option<&[ChangeHash]>,
        mut need: Vec<ChangeHash>,
    ) -> Option<Request> {
        let federation = self.federation()?;
        let fetching: HashSet<&ChangeHash> = fetching.iter().collect();
        let contained: Vec<bool> = known.iter().map(|h| self.holds(h)).collect();
        let held: Vec<bool> = known
            .iter()
            .zip(&contained)
            .map(|(h, c)| *c || fetching.contains(h))
            .collect();
        let wanted: Vec<bool> = known
            .iter()
            .zip(&held)
            .map(|(h, held)| !held && !self.is_pending(h) && self.rejection(h).is_none())
            .collect();
        let mut under: Vec<ChangeHash> = known
            .iter()
            .zip(&contained)
            .filter(|(_, c)| **c)
            .map(|(h, _)| *h)
            .collect();
        let common = common.filter(|c| !c.is_empty() && c.iter().all(|h| self.holds(h)));
        if let Some(common) = common {
            under.extend_from_slice(common);
        }
        let by_ref = by_ref && !known.is_empty() && known.len() <= MAX_LISTED_HASHES;
        let (have_ref, common_ref, mut have) = if by_ref {
            (
                Some(heads_digest(known)),
                common.map(heads_digest),
                Vec::new(),
            )
        } else {
            let mut have = marked(known, &held);
            have.extend(common.into_iter().flatten());
            // The heads asked for come first: they must survive the cut below.
            let mut first = marked(known, &wanted);
            first.append(&mut need);
            need = first;
            (None, None, have)
        };
        let (held, wanted) = if by_ref {
            (held, wanted)
        } else {
            (Vec::new(), Vec::new())
        };
        have.sort();
        have.dedup();
        have.truncate(MAX_LISTED_HASHES);
        // Only the changes the peer cannot know we have go in the filter (and the excluded ones we hold, which no
        // document's heads stand for).
        let mut unshared = self.changes_since(&under);
        let under_set: HashSet<&ChangeHash> = under.iter().collect();
        unshared.extend(
            self.excluded()
                .map(|(h, _)| *h)
                .filter(|h| !under_set.contains(h)),
        );
        let bloom = Bloom::from_hashes(unshared.iter());
        // Cut in the caller's order of priority (its window over the missing dependencies), then sort.
        let mut seen = HashSet::new();
        need.retain(|h| seen.insert(*h));
        need.truncate(MAX_LISTED_HASHES);
        need.sort();
        Some(Request {
            federation,
            have_ref,
            held,
            wanted,
            common_ref,
            have,
            bloom,
            need,
        })
    }

    /// Dependencies and auth heads that waiting envelopes need and nobody has sent yet.
    pub fn missing_dependencies(&self) -> Vec<ChangeHash> {
        let mut missing: Vec<ChangeHash> = self
            .pending_envelopes()
            .flat_map(|e| {
                e.change
                    .deps()
                    .iter()
                    .chain(&e.auth_heads)
                    .copied()
                    .collect::<Vec<_>>()
            })
            .filter(|h| !self.holds(h) && !self.is_pending(h) && self.rejection(h).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }

    /// What a peer's pull lacks, from `source`, each after its dependencies, within the response limits: the
    /// wanted changes and what they depend on (their dependencies and auth heads) that is not under `pull.have`, or,
    /// when nothing is wanted, everything not under `pull.have`; changes in the request's Bloom filter are left out
    /// unless wanted or depending on one being sent.
    pub fn sync_response(
        &self,
        request: &Request,
        pull: &Pull,
        source: &impl EnvelopeSource,
    ) -> Response {
        let heads = self.heads();
        let have: Vec<ChangeHash> = pull
            .have
            .iter()
            .filter(|h| self.contains(h))
            .copied()
            .collect();
        let mut candidates = self.changes_since_with_deps(&have);
        // Excluded changes are held and travel like accepted ones (an equivocation proof must reach every replica),
        // after the accepted ones they may depend on.
        let listed: HashSet<&ChangeHash> = pull.have.iter().collect();
        candidates.extend(
            self.excluded()
                .filter(|(h, _)| !listed.contains(h))
                .filter_map(|(h, _)| {
                    self.excluded_envelope(h)
                        .map(|e| (*h, e.change.deps().to_vec()))
                }),
        );
        let selected: Option<HashSet<ChangeHash>> = if pull.want.is_empty() {
            None
        } else {
            let deps: HashMap<ChangeHash, &[ChangeHash]> =
                candidates.iter().map(|(h, d)| (*h, d.as_slice())).collect();
            let mut selected = HashSet::new();
            let mut stack: Vec<ChangeHash> = pull
                .want
                .iter()
                .filter(|h| deps.contains_key(h))
                .copied()
                .collect();
            while let Some(hash) = stack.pop() {
                if !selected.insert(hash) {
                    continue;
                }
                stack.extend(deps[&hash].iter().filter(|d| deps.contains_key(d)));
                if let Some(auth_heads) = source.auth_heads(&hash) {
                    stack.extend(auth_heads.into_iter().filter(|a| deps.contains_key(a)));
                }
            }
            Some(selected)
        };
        let mut sending: HashSet<ChangeHash> = HashSet::new();
        let mut envelopes = Vec::new();
        let mut bytes = 0;
        let mut more = false;
        let needed: HashSet<&ChangeHash> = pull.want.iter().collect();
        let mut sending_council = false;
        for (hash, deps) in candidates {
            if selected.as_ref().is_some_and(|s| !s.contains(&hash)) {
                continue;
            }
            let forced = needed.contains(&hash) || deps.iter().any(|d| sending.contains(d));
            let maybe_held = !forced && request.bloom.contains(&hash);
            if maybe_held && !sending_council {
                continue;
            }
            // A peer cannot hold a change whose auth heads it lacks, whatever its filter says (read before the
            // envelope is loaded: most changes the filter names stay behind).
            if maybe_held
                && source
                    .auth_heads(&hash)
                    .is_some_and(|heads| !heads.iter().any(|a| sending.contains(a)))
            {
                continue;
            }
            let Some(envelope) = source.envelope(&hash) else {
                tracing::warn!(change = %hash, "accepted change has no stored envelope");
                continue;
            };
            let size = envelope.change.raw_bytes().len() + 80;
            if envelopes.len() >= MAX_RESPONSE_ENVELOPES || bytes + size > MAX_RESPONSE_BYTES {
                more = true;
                break;
            }
            bytes += size;
            sending.insert(hash);
            sending_council |= envelope.doc == model::DocId::Council;
            envelopes.push(envelope);
        }
        Response {
            heads,
            envelopes,
            more,
            unknown_ref: false,
        }
    }
}
