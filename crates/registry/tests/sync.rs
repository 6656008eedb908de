//! The sans-IO sync protocol between in-memory replicas: pulls converge, and only missing changes cross.

mod support;

use std::collections::HashMap;

use identity::Keypair;
use model::Role;
use registry::sync::{Announcement, Request, Response, Syncer};
use registry::{ChangeHash, Envelope, Op, Replica};
use support::member;

struct Peer {
    key: Keypair,
    replica: Replica,
    envelopes: HashMap<ChangeHash, Envelope>,
}

impl Peer {
    fn write(&mut self, op: &Op) {
        let envelope = self
            .replica
            .write(&self.key, op, 1_700_000_000_000)
            .expect("write allowed");
        self.envelopes.insert(envelope.hash(), envelope);
    }
}

/// A learning written as a change.
fn learning(id: &str) -> Op {
    Op::AddLearning(support::learning(id, "what we learnt"))
}

/// Runs one pull from `to` against `from` until it ends; returns (envelopes transferred, round trips).
fn pull(puller: &mut Peer, server: &Peer, syncer: &mut Syncer<u8>) -> (usize, usize) {
    let mut serving = Syncer::<u8>::new();
    pull_with(puller, server, syncer, &mut serving).0
}

/// Like [`pull`], with the server's syncer given; also returns the bytes of requests and responses.
fn pull_with(
    puller: &mut Peer,
    server: &Peer,
    syncer: &mut Syncer<u8>,
    serving: &mut Syncer<u8>,
) -> ((usize, usize), usize) {
    let announcement = Announcement::decode(
        &serving
            .announcement(&server.replica)
            .expect("federated")
            .encode(),
    )
    .expect("decodes");
    let mut request = syncer.on_announcement(1, &announcement, &puller.replica, 0);
    let (mut transferred, mut rounds, mut bytes) = (0, 0, 0);
    while let Some(r) = request {
        rounds += 1;
        let wire = r.encode();
        bytes += wire.len();
        let r = Request::decode(&wire).expect("request decodes");
        let answer = serving.respond(&r, &server.replica, &server.envelopes);
        bytes += answer.len();
        let registry::sync::Answer::Current(response) = syncer
            .decode_response(&1, &answer)
            .expect("response decodes")
        else {
            panic!("a late answer, not the answer to the request in flight");
        };
        transferred += response.envelopes.len();
        let receipt = puller
            .replica
            .receive(response.envelopes.clone())
            .expect("federated");
        for envelope in &receipt.accepted {
            puller.envelopes.insert(envelope.hash(), envelope.clone());
        }
        request = syncer.on_response(
            &1,
            &response,
            receipt.accepted.len(),
            receipt.rejected.len(),
            &puller.replica,
            0,
        );
    }
    ((transferred, rounds), bytes)
}

#[test]
fn pulls_converge_and_send_only_missing_changes() {
    let (council, mut pods) = federation(2);
    for pod in &mut pods {
        assert_eq!(
            pod.replica.heads(),
            council.replica.heads(),
            "the genesis and both admissions crossed"
        );
    }
    for (i, pod) in pods.iter_mut().enumerate() {
        for n in 0..50 {
            pod.write(&learning(&format!("l{i}-{n}")));
        }
    }
    let (second, first) = {
        let (a, b) = pods.split_at_mut(1);
        (&mut a[0], &b[0])
    };
    let (moved, rounds) = pull(second, first, &mut Syncer::new());
    assert_eq!(moved, 50, "exactly the 50 missing changes cross");
    assert!(rounds <= 2, "{rounds} round trips");
    let server = pods[0].replica_clone_peer();
    let (moved, _) = pull(&mut pods[1], &server, &mut Syncer::new());
    assert_eq!(moved, 50);
    assert_eq!(pods[0].replica.heads(), pods[1].replica.heads());
    let server = pods[0].replica_clone_peer();
    let (moved, _) = pull(&mut pods[1], &server, &mut Syncer::new());
    assert_eq!(moved, 0, "nothing crosses once converged");
}

impl Peer {
    /// A second peer holding the same accepted envelopes (to pull from while `self` is borrowed mutably).
    fn replica_clone_peer(&self) -> Peer {
        let mut replica = Replica::new();
        replica
            .adopt(self.replica.federation().expect("federated"))
            .expect("adopt");
        let mut envelopes: Vec<Envelope> = self.envelopes.values().cloned().collect();
        envelopes.sort_by_key(Envelope::hash);
        let receipt = replica.receive(envelopes).expect("federated");
        assert!(receipt.rejected.is_empty(), "{:?}", receipt.rejected);
        Peer {
            key: Keypair::from_seed([99; 32]),
            replica,
            envelopes: self.envelopes.clone(),
        }
    }
}

/// A council and `n` pods holding the genesis and the admissions.
fn federation(n: u8) -> (Peer, Vec<Peer>) {
    let mut council = Peer {
        key: Keypair::from_seed([1; 32]),
        replica: Replica::new(),
        envelopes: HashMap::new(),
    };
    let founder = member(&council.key, Role::Council, Some("council"), &council.key);
    council.write(&Op::Genesis {
        name: "test".into(),
        founder,
    });
    let mut pods: Vec<Peer> = (0..n)
        .map(|i| Peer {
            key: Keypair::from_seed([10 + i; 32]),
            replica: Replica::new(),
            envelopes: HashMap::new(),
        })
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        let op = Op::AddMember(member(
            &pod.key,
            Role::Pod,
            Some(&format!("pod{i}")),
            &council.key,
        ));
        council.write(&op);
    }
    let federation = council.replica.federation().expect("founded");
    for pod in &mut pods {
        pod.replica.adopt(federation).expect("adopt");
        let (moved, _) = pull(pod, &council, &mut Syncer::new());
        assert_eq!(moved, 1 + n as usize, "the genesis and the admissions");
    }
    (council, pods)
}

fn announce(serving: &mut Syncer<u8>, server: &Peer) -> Announcement {
    serving.announcement(&server.replica).expect("federated")
}

fn serve(serving: &mut Syncer<u8>, server: &Peer, request: &Request) -> Vec<u8> {
    let request = Request::decode(&request.encode()).expect("request decodes");
    serving.respond(&request, &server.replica, &server.envelopes)
}

/// Feeds a response to the puller; returns (envelopes in it, duplicates among them, next request).
fn absorb(
    puller: &mut Peer,
    syncer: &mut Syncer<u8>,
    from: u8,
    answer: &[u8],
) -> (usize, usize, Option<Request>) {
    let registry::sync::Answer::Current(response) =
        syncer.decode_response(&from, answer).expect("decodes")
    else {
        panic!("a late answer, not the answer to the request in flight");
    };
    let receipt = puller
        .replica
        .receive(response.envelopes.clone())
        .expect("federated");
    for envelope in &receipt.accepted {
        puller.envelopes.insert(envelope.hash(), envelope.clone());
    }
    let next = syncer.on_response(
        &from,
        &response,
        receipt.accepted.len(),
        receipt.rejected.len(),
        &puller.replica,
        0,
    );
    (response.envelopes.len(), receipt.duplicates, next)
}

#[test]
fn a_pull_names_the_responders_head_set_by_digest_and_costs_little_beyond_the_change() {
    let (_council, mut pods) = federation(2);
    let (mut puller_sync, mut serving) = (Syncer::<u8>::new(), Syncer::<u8>::new());
    pods[0].write(&learning("first"));
    let (first, second) = pods.split_at_mut(1);
    let ((moved, _), _) = pull_with(&mut second[0], &first[0], &mut puller_sync, &mut serving);
    assert_eq!(moved, 1);
    first[0].write(&learning("second"));
    let raw: usize = first[0]
        .envelopes
        .values()
        .filter(|e| !second[0].replica.contains(&e.hash()))
        .map(|e| e.change.raw_bytes().len())
        .sum();
    let announcement = announce(&mut serving, &first[0]);
    let request = puller_sync
        .on_announcement(1, &announcement, &second[0].replica, 0)
        .expect("a pull");
    assert!(
        request.have_ref.is_some(),
        "the heads it holds are named by the digest the responder sent"
    );
    // What the two share in the document the peer moved on in is named by the earlier set the peer sent.
    assert!(request.common_ref.is_some());
    assert!(request.have.is_empty(), "{:?}", request.have);
    let request_bytes = request.encode().len();
    let answer = serve(&mut serving, &first[0], &request);
    let (sent, duplicates, next) = absorb(&mut second[0], &mut puller_sync, 1, &answer);
    assert_eq!((sent, duplicates), (1, 0));
    assert!(next.is_none(), "one round trip");
    assert_eq!(first[0].replica.heads(), second[0].replica.heads());
    let overhead = request_bytes + answer.len() - raw;
    // 64 bytes of signature, the document id and a few indexes and flags; the request is its federation id and
    // the two references.
    assert!(
        overhead <= 64 + 90 + 40 + 32,
        "{overhead} bytes beyond the {raw}-byte change (request {request_bytes}, response {})",
        answer.len()
    );
}

#[test]
fn a_forgotten_head_set_is_answered_with_unknown_ref_and_the_pull_still_completes() {
    let (_council, mut pods) = federation(2);
    let mut puller_sync = Syncer::<u8>::new();
    pods[0].write(&learning("first"));
    let (first, second) = pods.split_at_mut(1);
    pull_with(
        &mut second[0],
        &first[0],
        &mut puller_sync,
        &mut Syncer::new(),
    );
    first[0].write(&learning("second"));
    // The responder restarted: it remembers no head set it sent, and the puller pulls before hearing from it.
    let mut restarted = Syncer::<u8>::new();
    let request = puller_sync.pull(1, &second[0].replica, 0).expect("a pull");
    assert!(
        request.have_ref.is_some(),
        "names the set the peer last sent"
    );
    let answer = serve(&mut restarted, &first[0], &request);
    let (sent, _, next) = absorb(&mut second[0], &mut puller_sync, 1, &answer);
    assert_eq!(sent, 0);
    let retry = next.expect("asks again");
    assert!(retry.have_ref.is_none(), "the retry lists the heads");
    let answer = serve(&mut restarted, &first[0], &retry);
    let (sent, duplicates, next) = absorb(&mut second[0], &mut puller_sync, 1, &answer);
    assert_eq!(
        (sent, duplicates),
        (1, 0),
        "only the missing change crosses"
    );
    assert!(next.is_none());
    assert_eq!(first[0].replica.heads(), second[0].replica.heads());
}

/// Three pods: pod0 wrote `count` learnings and pod1 pulled them; pod2 has neither.
fn relayed(count: usize) -> Vec<Peer> {
    let (_council, mut pods) = federation(3);
    for n in 0..count {
        pods[0].write(&learning(&format!("a{n}")));
    }
    let server = pods[0].replica_clone_peer();
    pull(&mut pods[1], &server, &mut Syncer::new());
    pods
}

#[test]
fn concurrent_pulls_from_two_peers_do_not_bring_the_same_change_twice() {
    // pod1 has pod0's changes and five of its own; pod2 hears both announcements before either pull ends.
    let mut pods = relayed(20);
    for n in 0..5 {
        pods[1].write(&learning(&format!("b{n}")));
    }
    let (mut from0, mut from1) = (Syncer::<u8>::new(), Syncer::<u8>::new());
    let mut syncer = Syncer::<u8>::new();
    let a0 = announce(&mut from0, &pods[0]);
    let a1 = announce(&mut from1, &pods[1]);
    let r0 = syncer
        .on_announcement(0, &a0, &pods[2].replica, 0)
        .expect("pulls from pod0");
    let r1 = syncer
        .on_announcement(1, &a1, &pods[2].replica, 0)
        .expect("pulls pod1's own changes from pod1");
    let answer1 = serve(&mut from1, &pods[1], &r1);
    let answer0 = serve(&mut from0, &pods[0], &r0);
    let (puller, rest) = pods.split_last_mut().expect("three pods");
    let (sent1, dup1, _) = absorb(puller, &mut syncer, 1, &answer1);
    let (sent0, dup0, next) = absorb(puller, &mut syncer, 0, &answer0);
    assert_eq!(sent1, 5, "pod1 sends only its own changes");
    assert_eq!(sent0, 20);
    assert_eq!(dup0 + dup1, 0);
    let mut next = next;
    while let Some(request) = next {
        let answer = serve(&mut from0, &rest[0], &request);
        next = absorb(puller, &mut syncer, 0, &answer).2;
    }
    let mut follow = syncer.followups(&puller.replica, 0);
    while let Some((peer, request)) = follow.pop() {
        let server = if peer == 0 { &rest[0] } else { &rest[1] };
        let serving = if peer == 0 { &mut from0 } else { &mut from1 };
        let answer = serve(serving, server, &request);
        let (_, duplicates, next) = absorb(puller, &mut syncer, peer, &answer);
        assert_eq!(duplicates, 0);
        follow.extend(next.map(|r| (peer, r)));
    }
    assert_eq!(puller.replica.heads(), rest[1].replica.heads());
}

#[test]
fn a_second_announcement_of_heads_being_fetched_waits_for_the_first_pull() {
    let mut pods = relayed(10);
    let (mut from0, mut from1) = (Syncer::<u8>::new(), Syncer::<u8>::new());
    let mut syncer = Syncer::<u8>::new();
    let a0 = announce(&mut from0, &pods[0]);
    let a1 = announce(&mut from1, &pods[1]);
    let r0 = syncer
        .on_announcement(0, &a0, &pods[2].replica, 0)
        .expect("pulls from pod0");
    assert!(
        syncer
            .on_announcement(1, &a1, &pods[2].replica, 0)
            .is_none(),
        "pod1 has nothing that the pull from pod0 is not already bringing"
    );
    assert!(syncer.has_deferred());
    let answer0 = serve(&mut from0, &pods[0], &r0);
    let (puller, rest) = pods.split_last_mut().expect("three pods");
    let (sent, _, next) = absorb(puller, &mut syncer, 0, &answer0);
    assert_eq!(sent, 10);
    assert!(next.is_none());
    assert!(
        syncer.followups(&puller.replica, 0).is_empty(),
        "nothing is left to fetch from pod1"
    );
    assert_eq!(puller.replica.heads(), rest[1].replica.heads());
}

#[test]
fn responses_naming_hashes_by_index_round_trip_and_reject_bad_indexes() {
    let (_council, mut pods) = federation(2);
    for n in 0..3 {
        pods[0].write(&learning(&format!("a{n}")));
    }
    let envelopes: Vec<Envelope> = {
        let mut all: Vec<Envelope> = pods[0]
            .envelopes
            .values()
            .filter(|e| e.doc != model::DocId::Council)
            .cloned()
            .collect();
        all.sort_by_key(|e| e.change.seq());
        all
    };
    let context: Vec<ChangeHash> = pods[1].replica.heads();
    let response = Response {
        heads: pods[0].replica.heads(),
        envelopes: envelopes.clone(),
        more: true,
        unknown_ref: false,
    };
    let compact = response.encode_for(&context);
    let full = response.encode();
    assert!(compact.len() <= full.len());
    let back = Response::decode_for(&compact, &context).expect("decodes");
    assert_eq!(back.heads, response.heads);
    assert!(back.more && !back.unknown_ref);
    let hashes = |r: &Response| r.envelopes.iter().map(Envelope::hash).collect::<Vec<_>>();
    assert_eq!(hashes(&back), hashes(&response));
    for (a, b) in back.envelopes.iter().zip(&response.envelopes) {
        assert_eq!(a.auth_heads, b.auth_heads);
        assert_eq!(a.signature, b.signature);
    }
    // The council head (an auth head of every learning) is named by its place in the context: read without the
    // context it was written for, that index is out of range, an error and no panic.
    assert!(compact.len() + 32 <= full.len());
    assert!(Response::decode_for(&compact, &[]).is_err());
    // Every truncation and every single-byte corruption is an error or a different, well-formed response.
    for cut in 0..compact.len() {
        assert!(Response::decode_for(&compact[..cut], &context).is_err());
    }
    for i in 0..compact.len().min(400) {
        let mut bad = compact.clone();
        bad[i] ^= 0x5a;
        let _ = Response::decode_for(&bad, &context);
    }
}

#[test]
fn a_summary_pulls_only_once_its_sender_is_quiet() {
    let (_council, mut pods) = federation(2);
    pods[0].write(&learning("s1"));
    let mut serving = Syncer::<u8>::new();
    let mut syncer = Syncer::<u8>::new();
    let summary = serving.summary(&pods[0].replica).expect("federated");
    let summary = Announcement::decode(&summary.encode()).expect("decodes");
    assert!(summary.summary && summary.heads.is_empty());
    assert!(
        syncer
            .on_announcement(0, &summary, &pods[1].replica, 0)
            .is_none(),
        "the first summary of a new state waits: its changes may still be on their way"
    );
    let request = syncer
        .on_announcement(0, &summary, &pods[1].replica, 5_000)
        .expect("the same summary again: the sender is quiet and differs, so pull");
    let answer = serve(&mut serving, &pods[0], &request);
    let (puller, rest) = pods.split_last_mut().expect("two pods");
    let (sent, duplicates, _) = absorb(puller, &mut syncer, 0, &answer);
    assert_eq!((sent, duplicates), (1, 0));
    assert_eq!(puller.replica.heads(), rest[0].replica.heads());
    let again = serving.summary(&rest[0].replica).expect("federated");
    assert!(
        syncer
            .on_announcement(0, &again, &puller.replica, 10_000)
            .is_none(),
        "equal digests: nothing to do"
    );
}

#[test]
fn a_push_that_arrives_before_its_dependency_waits_then_pulls_it() {
    let (_council, mut pods) = federation(2);
    pods[0].write(&learning("p1"));
    pods[0].write(&learning("p2"));
    let mut by_seq: Vec<Envelope> = pods[0]
        .envelopes
        .values()
        .filter(|e| e.doc != model::DocId::Council)
        .cloned()
        .collect();
    by_seq.sort_by_key(|e| e.change.seq());
    let mut syncer = Syncer::<u8>::new();
    let (puller, rest) = pods.split_last_mut().expect("two pods");
    // The second change's push overtakes the first's.
    let bytes = registry::sync::Push::encode_envelopes(vec![by_seq[1].clone()]);
    let push = registry::sync::Push::decode(&bytes).expect("decodes");
    let receipt = puller
        .replica
        .receive(push.response.envelopes.clone())
        .expect("federated");
    assert_eq!(receipt.pending, 1);
    syncer.after_push(0, &push, (0, 0), &puller.replica, 0);
    assert!(syncer.has_deferred());
    assert!(
        syncer.followups(&puller.replica, 100).is_empty(),
        "within the grace period nothing is pulled"
    );
    let due = syncer.followups(&puller.replica, registry::sync::PUSH_GRACE_MS);
    let [(peer, request)] = due.as_slice() else {
        panic!("one pull once the grace period is over: {due:?}");
    };
    assert_eq!(*peer, 0);
    let answer = serve(&mut Syncer::new(), &rest[0], request);
    let (_, duplicates, _) = absorb(puller, &mut syncer, 0, &answer);
    assert_eq!(duplicates, 0);
    assert_eq!(puller.replica.heads(), rest[0].replica.heads());
}
