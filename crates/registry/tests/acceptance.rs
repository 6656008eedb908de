//! The acceptance rule, one rejection case per test: each checks the reason code and that the registry afterwards is
//! exactly the one built from the accepted changes alone. Then the codec: tampered, truncated and random bytes never
//! panic and are never accepted, and envelopes and bundles round-trip.

mod support;

use identity::Keypair;
use model::{DocId, Revocation, Role};
use proptest::prelude::*;
use registry::bundle::{self, Entry};
use registry::{Craft, Envelope, Error, FederationId, Op, Reason, Receipt, Rejection, Replica};

use support::{founder, keypair, learning, member, objective};

/// A federation founded by a council key, with pods `alpha` and `beta` and partner `acme` admitted (beta's key,
/// `keypair(2)`, writes nothing: its document is the one alpha must not write).
struct Fixture {
    federation: FederationId,
    council: Keypair,
    alpha: Keypair,
    partner: Keypair,
    /// The council's replica.
    founder: Replica,
    /// Genesis and admissions, in order.
    founding: Vec<Envelope>,
}

impl Fixture {
    fn new() -> Self {
        let council = keypair(0);
        let alpha = keypair(1);
        let beta = keypair(2);
        let partner = keypair(3);
        let mut founder_replica = Replica::new();
        let genesis = Op::Genesis {
            name: "acceptance".into(),
            founder: founder(&council),
        };
        let mut founding = vec![write(&mut founder_replica, &council, &genesis)];
        for (key, role, scope) in [
            (&alpha, Role::Pod, "alpha"),
            (&beta, Role::Pod, "beta"),
            (&partner, Role::Partner, "acme"),
        ] {
            let op = Op::AddMember(member(key, role, Some(scope), &council));
            founding.push(write(&mut founder_replica, &council, &op));
        }
        Self {
            federation: founder_replica.federation().expect("founded"),
            council,
            alpha,
            partner,
            founder: founder_replica,
            founding,
        }
    }

    /// A replica of the federation that accepted `envelopes`, every one of them.
    fn replica_with(&self, envelopes: &[Envelope]) -> Replica {
        let mut replica = Replica::new();
        replica
            .adopt(self.federation)
            .expect("a new replica adopts");
        let receipt = receive(&mut replica, envelopes);
        assert_eq!(
            receipt.accepted.len(),
            envelopes.len(),
            "{:?}",
            receipt.rejected
        );
        replica
    }

    /// A member's own replica, after it imported the founding bundle.
    fn member_replica(&self) -> Replica {
        self.replica_with(&self.founding)
    }

    /// The founding followed by `more`.
    fn founding_and(&self, more: &[&Envelope]) -> Vec<Envelope> {
        let mut all = self.founding.clone();
        all.extend(more.iter().map(|e| (*e).clone()));
        all
    }
}

fn write(replica: &mut Replica, keypair: &Keypair, op: &Op) -> Envelope {
    replica
        .write(keypair, op, 5_000)
        .expect("the write is allowed")
}

fn share(replica: &mut Replica, keypair: &Keypair, id: &str) -> Envelope {
    write(
        replica,
        keypair,
        &Op::AddLearning(learning(id, "shorter forms convert")),
    )
}

fn receive(replica: &mut Replica, envelopes: &[Envelope]) -> Receipt {
    replica
        .receive(envelopes.to_vec())
        .expect("a federated replica receives")
}

/// The single rejection of `receipt`, after checking nothing was accepted or left waiting.
fn only_rejection(receipt: &Receipt) -> &Rejection {
    assert!(
        receipt.accepted.is_empty(),
        "accepted {:?}",
        receipt.accepted
    );
    assert!(receipt.pending_added.is_empty(), "left waiting");
    assert_eq!(receipt.rejected.len(), 1, "{:?}", receipt.rejected);
    &receipt.rejected[0]
}

/// `replica` holds exactly what a replica that only ever saw `accepted` holds: same heads, same view bytes.
fn assert_built_from(replica: &Replica, fixture: &Fixture, accepted: &[Envelope]) {
    let reference = fixture.replica_with(accepted);
    assert_eq!(replica.heads(), reference.heads(), "heads");
    assert_eq!(replica.len(), accepted.len());
    assert_eq!(
        serde_json::to_string(&replica.view()).expect("serializes"),
        serde_json::to_string(&reference.view()).expect("serializes"),
        "view"
    );
}

#[test]
fn every_tampered_byte_is_rejected_or_undecodable() {
    let fixture = Fixture::new();
    let mut alpha = fixture.member_replica();
    let genuine = share(&mut alpha, &fixture.alpha, "learning-1");
    let mut receiver = fixture.member_replica();
    let bytes = genuine.to_bytes();
    let (mut undecodable, mut bad_signature, mut malformed) = (0, 0, 0);
    for position in 0..bytes.len() {
        // One flipped bit per byte, a different bit from byte to byte (bit 7 is a varint's continuation bit).
        let mask = 1u8 << (position % 8);
        let mut tampered = bytes.clone();
        tampered[position] ^= mask;
        let Ok(envelope) = Envelope::from_bytes(&tampered) else {
            undecodable += 1;
            continue;
        };
        let receipt = receive(&mut receiver, &[envelope]);
        let rejection = only_rejection(&receipt);
        assert!(
            !rejection.recorded,
            "a broken copy must not block the change"
        );
        match rejection.reason {
            Reason::BadSignature => bad_signature += 1,
            Reason::Malformed => malformed += 1,
            other => panic!("byte {position} ^ {mask:#x}: rejected as {other}, not for tampering"),
        }
    }
    // Every region was hit: the length prefixes and doc id, the auth heads and signature, the change.
    assert!(
        undecodable > 0 && bad_signature > 0,
        "{undecodable} {bad_signature} {malformed}"
    );
    assert_eq!(receiver.pending_len(), 0);
    assert_built_from(&receiver, &fixture, &fixture.founding);
    // The tampered copies, some with the genuine change hash, did not poison the genuine envelope.
    let receipt = receive(&mut receiver, std::slice::from_ref(&genuine));
    assert_eq!(receipt.accepted.len(), 1, "{:?}", receipt.rejected);
    assert_built_from(&receiver, &fixture, &fixture.founding_and(&[&genuine]));
}

#[test]
fn change_signed_by_a_non_member_is_unknown_author() {
    let fixture = Fixture::new();
    let stranger = keypair(9);
    let pod_change = fixture
        .founder
        .craft(
            &stranger,
            &DocId::Pod("alpha".into()),
            &Op::AddLearning(learning("intruder", "let me in")),
            5_000,
        )
        .expect("crafts");
    let council_change = fixture
        .founder
        .craft(
            &stranger,
            &DocId::Council,
            &Op::AddObjective(objective("takeover")),
            5_000,
        )
        .expect("crafts");
    let mut receiver = fixture.member_replica();
    for change in [pod_change, council_change] {
        let receipt = receive(&mut receiver, std::slice::from_ref(&change));
        let rejection = only_rejection(&receipt);
        assert_eq!(rejection.reason, Reason::UnknownAuthor);
        assert_eq!(rejection.change, change.hash());
        assert!(rejection.recorded, "a decision about the change itself");
        assert_eq!(
            receiver.rejection(&change.hash()),
            Some(Reason::UnknownAuthor)
        );
    }
    assert_built_from(&receiver, &fixture, &fixture.founding);
}

#[test]
fn partner_writing_an_objective_is_not_allowed() {
    let fixture = Fixture::new();
    let mut partner = fixture.member_replica();
    let refused = partner.write(&fixture.partner, &Op::AddObjective(objective("o")), 5_000);
    assert!(
        matches!(refused, Err(Error::NotAllowed { .. })),
        "{refused:?}"
    );
    let forged = partner
        .craft(
            &fixture.partner,
            &DocId::Council,
            &Op::AddObjective(objective("o")),
            5_000,
        )
        .expect("crafts");
    let mut receiver = fixture.member_replica();
    let receipt = receive(&mut receiver, &[forged]);
    assert_eq!(only_rejection(&receipt).reason, Reason::NotAllowed);
    assert_built_from(&receiver, &fixture, &fixture.founding);
}

#[test]
fn pod_writing_another_pods_document_is_not_allowed() {
    let fixture = Fixture::new();
    let mut alpha = fixture.member_replica();
    let own = share(&mut alpha, &fixture.alpha, "mine");
    let forged = alpha
        .craft(
            &fixture.alpha,
            &DocId::Pod("beta".into()),
            &Op::AddLearning(learning("theirs", "written into beta")),
            5_000,
        )
        .expect("crafts");
    let mut receiver = fixture.member_replica();
    let receipt = receive(&mut receiver, &[forged, own.clone()]);
    assert_eq!(receipt.accepted.len(), 1);
    assert_eq!(receipt.rejected.len(), 1);
    assert_eq!(receipt.rejected[0].reason, Reason::NotAllowed);
    assert_built_from(&receiver, &fixture, &fixture.founding_and(&[&own]));
    assert!(!receiver.view().learnings.contains_key("pod/beta/theirs"));
}

/// The council revokes `alpha`; returns the revocation.
fn revoke_alpha(fixture: &mut Fixture) -> Envelope {
    let op = Op::RevokeMember {
        public_key: fixture.alpha.public().to_hex(),
        revocation: Revocation {
            by: fixture.council.public().to_hex(),
            reason: "left the company".into(),
            at_ms: 6_000,
        },
    };
    write(&mut fixture.founder, &fixture.council, &op)
}

#[test]
fn change_written_after_seeing_the_revocation_is_revoked() {
    let mut fixture = Fixture::new();
    let revocation = revoke_alpha(&mut fixture);
    let mut alpha = fixture.replica_with(&fixture.founding_and(&[&revocation]));
    let refused = alpha.write(
        &fixture.alpha,
        &Op::AddLearning(learning("late", "after")),
        7_000,
    );
    assert!(
        matches!(refused, Err(Error::NotAllowed { .. })),
        "{refused:?}"
    );
    let late = alpha
        .craft(
            &fixture.alpha,
            &DocId::Pod("alpha".into()),
            &Op::AddLearning(learning("late", "after")),
            7_000,
        )
        .expect("crafts");
    assert!(late.auth_heads.contains(&revocation.hash()));
    // Arriving before the revocation it was authorized against, it waits for it, then is refused.
    let mut receiver = fixture.member_replica();
    let receipt = receive(&mut receiver, std::slice::from_ref(&late));
    assert_eq!(receipt.pending_added.len(), 1);
    let receipt = receive(&mut receiver, std::slice::from_ref(&revocation));
    assert_eq!(receipt.accepted.len(), 1);
    assert_eq!(receipt.rejected.len(), 1);
    assert_eq!(receipt.rejected[0].reason, Reason::Revoked);
    assert_eq!(receipt.pending_resolved, vec![late.hash()]);
    assert_built_from(&receiver, &fixture, &fixture.founding_and(&[&revocation]));
    assert!(receiver.view().members[&fixture.alpha.public().to_hex()].revoked);
}

#[test]
fn change_written_concurrently_with_the_revocation_is_out_in_any_order() {
    let mut fixture = Fixture::new();
    let mut alpha = fixture.member_replica();
    let before = share(&mut alpha, &fixture.alpha, "before");
    receive(&mut fixture.founder, std::slice::from_ref(&before));
    let revocation = revoke_alpha(&mut fixture);
    // alpha has not seen its revocation: its next change is not covered by it.
    let concurrent = share(&mut alpha, &fixture.alpha, "in-time");
    let mut outcomes = Vec::new();
    for order in [
        vec![&before, &revocation, &concurrent],
        vec![&before, &concurrent, &revocation],
        vec![&concurrent, &before, &revocation],
    ] {
        let mut receiver = fixture.member_replica();
        for envelope in order {
            receive(&mut receiver, std::slice::from_ref(envelope));
        }
        assert!(
            receiver.contains(&before.hash()),
            "covered by the revocation"
        );
        assert_eq!(
            receiver.rejection(&concurrent.hash()),
            Some(Reason::Revoked)
        );
        let view = receiver.view();
        assert!(view.learnings.contains_key("pod/alpha/before"));
        assert!(!view.learnings.contains_key("pod/alpha/in-time"));
        outcomes.push((
            receiver.heads(),
            serde_json::to_string(&view).expect("serializes"),
        ));
    }
    assert!(outcomes.windows(2).all(|w| w[0] == w[1]));
    // Once alpha sees the revocation it knows it is out and cannot write any more.
    receive(&mut alpha, std::slice::from_ref(&revocation));
    assert!(alpha.is_revoked(fixture.alpha.public().as_bytes()));
    let refused = alpha.write(&fixture.alpha, &Op::AddLearning(learning("x", "y")), 8_000);
    assert!(
        matches!(refused, Err(Error::NotAllowed { .. })),
        "{refused:?}"
    );
}

#[test]
fn change_depending_on_a_rejected_change_is_rejected() {
    let fixture = Fixture::new();
    let stranger = keypair(9);
    let intruder = fixture
        .founder
        .craft(
            &stranger,
            &DocId::Pod("alpha".into()),
            &Op::AddLearning(learning("intruder", "let me in")),
            5_000,
        )
        .expect("crafts");
    // alpha's replica somehow holds the intruder's change (restored without a decision) and writes on top of it.
    let mut alpha = fixture.member_replica();
    alpha.insecure_apply_unchecked(&intruder).expect("applies");
    let child = share(&mut alpha, &fixture.alpha, "child");
    let grandchild = share(&mut alpha, &fixture.alpha, "grandchild");
    assert!(child.change.deps().contains(&intruder.hash()));
    let orders: [&[&[&Envelope]]; 3] = [
        // All in one batch.
        &[&[&grandchild, &child, &intruder]],
        // The dependents wait, then their rejected ancestor arrives.
        &[&[&grandchild], &[&child], &[&intruder]],
        // The ancestor is rejected first; the dependents arrive later.
        &[&[&intruder], &[&child, &grandchild]],
    ];
    for (number, batches) in orders.iter().enumerate() {
        let mut receiver = fixture.member_replica();
        let mut rejected = Vec::new();
        for batch in *batches {
            let batch: Vec<Envelope> = batch.iter().map(|e| (*e).clone()).collect();
            let receipt = receive(&mut receiver, &batch);
            assert!(receipt.accepted.is_empty(), "order {number}");
            rejected.extend(receipt.rejected.into_iter().map(|r| (r.change, r.reason)));
        }
        rejected.sort();
        let mut expected = vec![
            (intruder.hash(), Reason::UnknownAuthor),
            (child.hash(), Reason::DependsOnRejected),
            (grandchild.hash(), Reason::DependsOnRejected),
        ];
        expected.sort();
        assert_eq!(rejected, expected, "order {number}");
        assert_eq!(receiver.pending_len(), 0, "order {number}");
        assert_built_from(&receiver, &fixture, &fixture.founding);
    }
}

#[test]
fn changes_wait_for_their_dependencies_and_apply_when_they_arrive() {
    let fixture = Fixture::new();
    let mut alpha = fixture.member_replica();
    let first = share(&mut alpha, &fixture.alpha, "first");
    let second = share(&mut alpha, &fixture.alpha, "second");
    assert_eq!(second.change.deps(), [first.hash()]);

    // A missing dependency in the same document.
    let mut receiver = fixture.member_replica();
    let receipt = receive(&mut receiver, std::slice::from_ref(&second));
    assert!(receipt.accepted.is_empty() && receipt.rejected.is_empty());
    assert_eq!(receipt.pending_added.len(), 1);
    assert_eq!(receipt.pending, 1);
    assert_built_from(&receiver, &fixture, &fixture.founding);
    let receipt = receive(&mut receiver, std::slice::from_ref(&first));
    let order: Vec<_> = receipt.accepted.iter().map(Envelope::hash).collect();
    assert_eq!(order, vec![first.hash(), second.hash()]);
    assert_eq!(receipt.pending_resolved, vec![second.hash()]);
    assert_eq!(receipt.pending, 0);
    assert_built_from(
        &receiver,
        &fixture,
        &fixture.founding_and(&[&first, &second]),
    );

    // Missing auth heads: a replica that has not seen the admission of alpha (nor anything else) yet.
    let mut fresh = Replica::new();
    fresh.adopt(fixture.federation).expect("adopts");
    let receipt = receive(&mut fresh, &[second.clone(), first.clone()]);
    assert_eq!(receipt.pending, 2);
    assert!(fresh.is_empty());
    let receipt = receive(&mut fresh, &fixture.founding);
    assert_eq!(receipt.accepted.len(), fixture.founding.len() + 2);
    assert_eq!(receipt.pending, 0);
    assert_built_from(&fresh, &fixture, &fixture.founding_and(&[&first, &second]));
}

#[test]
fn duplicates_are_counted_not_rejected() {
    let fixture = Fixture::new();
    let mut alpha = fixture.member_replica();
    let first = share(&mut alpha, &fixture.alpha, "first");
    let second = share(&mut alpha, &fixture.alpha, "second");
    let mut receiver = fixture.member_replica();
    let receipt = receive(&mut receiver, &[first.clone(), first.clone()]);
    assert_eq!((receipt.accepted.len(), receipt.duplicates), (1, 1));
    assert!(receipt.rejected.is_empty());
    let receipt = receive(&mut receiver, &fixture.founding_and(&[&first]));
    assert_eq!(receipt.duplicates, fixture.founding.len() + 1);
    assert!(receipt.accepted.is_empty() && receipt.rejected.is_empty());
    // A waiting change received again is a duplicate too.
    let mut waiting = fixture.member_replica();
    receive(&mut waiting, std::slice::from_ref(&second));
    let receipt = receive(&mut waiting, std::slice::from_ref(&second));
    assert_eq!((receipt.duplicates, receipt.pending), (1, 1));
    assert!(receipt.pending_added.is_empty() && receipt.rejected.is_empty());
    assert_built_from(&receiver, &fixture, &fixture.founding_and(&[&first]));
}

#[test]
fn envelope_of_another_federation_has_a_bad_signature() {
    let fixture = Fixture::new();
    // The same council key founds a second federation and writes the same kind of change there.
    let mut other = Replica::new();
    let genesis = write(
        &mut other,
        &fixture.council,
        &Op::Genesis {
            name: "other".into(),
            founder: founder(&fixture.council),
        },
    );
    let objective_there = write(
        &mut other,
        &fixture.council,
        &Op::AddObjective(objective("o")),
    );
    assert_ne!(other.federation(), Some(fixture.federation));
    let mut receiver = fixture.member_replica();
    for envelope in [genesis, objective_there] {
        let receipt = receive(&mut receiver, &[envelope]);
        assert_eq!(only_rejection(&receipt).reason, Reason::BadSignature);
    }
    assert_built_from(&receiver, &fixture, &fixture.founding);
}

#[test]
fn a_change_has_one_meaning_whoever_signs_or_relays_it() {
    let fixture = Fixture::new();
    let mut alpha = fixture.member_replica();
    let honest = share(&mut alpha, &fixture.alpha, "first");
    // Signing the same change again yields the same change: the context is inside it, so a copy is a duplicate.
    let again =
        Envelope::sign(&fixture.federation, honest.change.clone(), &fixture.alpha).expect("signs");
    assert_eq!(again.hash(), honest.hash());
    assert_eq!(again.auth_heads, honest.auth_heads);
    // Naming other auth heads (a council head from before the author was a member) makes another change.
    let stale = alpha
        .craft_with(
            &fixture.alpha,
            &DocId::Pod("alpha".into()),
            &Op::AddLearning(learning("first", "shorter forms convert")),
            5_000,
            &Craft {
                auth_heads: Some(vec![fixture.founding[0].hash()]),
                doc_heads: Some(Vec::new()),
                epoch: 0,
            },
        )
        .expect("crafts");
    assert_ne!(stale.hash(), honest.hash());
    for order in [[&honest, &stale], [&stale, &honest]] {
        let mut receiver = fixture.member_replica();
        for envelope in order {
            receive(&mut receiver, std::slice::from_ref(envelope));
        }
        receive(&mut receiver, std::slice::from_ref(&again));
        // The stale change names auth heads where alpha is no member: refused for itself, whichever came first,
        // and (not being valid) it proves nothing against the honest change at the same place.
        assert_eq!(
            receiver.rejection(&stale.hash()),
            Some(Reason::UnknownAuthor)
        );
        assert!(receiver.contains(&honest.hash()));
        assert_eq!(receiver.equivocations().count(), 0);
    }
}

#[test]
fn forked_history_of_one_author_is_an_equivocation_in_any_order() {
    let fixture = Fixture::new();
    // The same key writes its first change of `alpha` on two copies of one data dir: two changes at number 1.
    let mut one = fixture.member_replica();
    let mut two = fixture.member_replica();
    let first = share(&mut one, &fixture.alpha, "one");
    let then = share(&mut one, &fixture.alpha, "one-more");
    let fork = share(&mut two, &fixture.alpha, "two");
    assert_eq!(first.change.seq(), fork.change.seq());
    let mut views = Vec::new();
    for order in [
        vec![&first, &then, &fork],
        vec![&fork, &first, &then],
        vec![&then, &fork, &first],
    ] {
        let mut receiver = fixture.member_replica();
        for envelope in order {
            receive(&mut receiver, std::slice::from_ref(envelope));
        }
        assert_eq!(
            receiver.len(),
            fixture.founding.len(),
            "both branches are out"
        );
        assert_eq!(
            receiver.rejection(&first.hash()),
            Some(Reason::Equivocation)
        );
        assert_eq!(receiver.rejection(&fork.hash()), Some(Reason::Equivocation));
        assert_eq!(receiver.rejection(&then.hash()), Some(Reason::Equivocation));
        let view = receiver.view();
        let proofs = &view.equivocations[&fixture.alpha.public().to_hex()];
        assert_eq!(proofs[0].changes.len(), 2);
        views.push((
            receiver.heads(),
            serde_json::to_string(&view).expect("serializes"),
        ));
    }
    assert!(
        views.windows(2).all(|w| w[0] == w[1]),
        "same heads and view bytes in every order"
    );
    // An honest writer whose own chain is forked moves on to a new epoch instead of reusing a number.
    let mut receiver = fixture.member_replica();
    receive(&mut receiver, &[first.clone(), fork.clone()]);
    let next = share(&mut receiver, &fixture.alpha, "after");
    assert_eq!(next.actor().epoch, 1);
}

#[test]
fn every_truncation_of_a_bundle_reads_without_panicking() {
    let fixture = Fixture::new();
    let encoded: Vec<Vec<u8>> = fixture.founding.iter().map(Envelope::to_bytes).collect();
    let bytes = bundle::write(&fixture.federation, encoded.iter().map(Vec::as_slice));
    let header = bundle::MAGIC.len() + 32;
    for cut in 0..bytes.len() {
        match bundle::read(&bytes[..cut]) {
            Err(_) => assert!(cut < header, "cut at {cut} of {}", bytes.len()),
            Ok(read) => {
                assert!(cut >= header);
                // Entries wholly before the cut decode; at most the last one is reported malformed.
                let malformed = read
                    .entries
                    .iter()
                    .position(|e| matches!(e, Entry::Malformed { .. }));
                if let Some(position) = malformed {
                    assert_eq!(position, read.entries.len() - 1, "cut at {cut}");
                }
                for (entry, original) in read.entries.iter().zip(&fixture.founding) {
                    if let Entry::Envelope(envelope) = entry {
                        assert_eq!(envelope.hash(), original.hash());
                    }
                }
            }
        }
    }
    let whole = bundle::read(&bytes).expect("reads");
    assert_eq!(whole.entries.len(), fixture.founding.len());
}

/// Writes a learning with the given text through a real replica: the envelope the codec round trip starts from.
fn envelope_with(title: &str, body: &str) -> (FederationId, Envelope) {
    let fixture = Fixture::new();
    // Restored rather than received: this test is about bytes, and skipping signature checks keeps it fast.
    let mut alpha = Replica::new();
    alpha.adopt(fixture.federation).expect("adopts");
    alpha.restore(fixture.founding.clone()).expect("restores");
    let mut record = learning("codec", body);
    record.title = title.to_owned();
    let envelope = write(&mut alpha, &fixture.alpha, &Op::AddLearning(record));
    (fixture.federation, envelope)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic_the_readers(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Envelope::from_bytes(&bytes);
        let _ = bundle::read(&bytes);
        let mut framed = bundle::MAGIC.to_vec();
        framed.extend_from_slice(&[7; 32]);
        framed.extend_from_slice(&bytes);
        let read = bundle::read(&framed).expect("a bundle header reads");
        prop_assert_eq!(read.federation, FederationId([7; 32]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn envelopes_and_bundles_round_trip(
        title in "[a-zA-Z0-9 ]{1,40}",
        body in "\\PC{1,300}",
        copies in 1usize..4,
    ) {
        let (federation, envelope) = envelope_with(&title, &body);
        let bytes = envelope.to_bytes();
        let decoded = Envelope::from_bytes(&bytes).expect("decodes");
        prop_assert_eq!(decoded.hash(), envelope.hash());
        prop_assert_eq!(&decoded.doc, &envelope.doc);
        prop_assert_eq!(&decoded.auth_heads, &envelope.auth_heads);
        prop_assert_eq!(decoded.signature, envelope.signature);
        prop_assert_eq!(decoded.to_bytes(), bytes.clone());
        let framed = bundle::write(&federation, std::iter::repeat_n(bytes.as_slice(), copies));
        let read = bundle::read(&framed).expect("reads");
        prop_assert_eq!(read.federation, federation);
        prop_assert_eq!(read.entries.len(), copies);
        for entry in read.entries {
            match entry {
                Entry::Envelope(e) => prop_assert_eq!(e.to_bytes(), bytes.clone()),
                Entry::Malformed { problem, .. } => prop_assert!(false, "{}", problem),
            }
        }
    }
}
