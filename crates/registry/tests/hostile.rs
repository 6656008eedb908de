//! Acceptance is a function of the set of envelopes held, against members who deviate in every way their keys
//! allow: a hostile mix (a forked chain from a copied data dir, a change re-signed with stale auth heads, writes
//! concurrent with the author's revocation and an honest member building on them, a data dir copied before a
//! revocation writing after it, two council members revoking each other, one ticket redeemed at two council nodes,
//! junk whose dependencies do not exist) is delivered to replicas in random orders, random batches, with restarts
//! (snapshot, then the pending set restored) at random points, and every replica ends with identical heads and
//! identical `registry show` bytes.

mod support;

use std::sync::OnceLock;

use identity::Keypair;
use model::{DocId, Revocation, Role};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use registry::{ChangeHash, Craft, Envelope, FederationId, Op, Reason, Replica, ReplicaState};

use support::{founder, keypair, learning, member};

struct Mix {
    federation: FederationId,
    envelopes: Vec<Envelope>,
    /// Changes no replica may accept, whatever the order.
    never: Vec<ChangeHash>,
    /// Changes every replica must accept, whatever the order.
    always: Vec<ChangeHash>,
    alpha: Keypair,
}

fn write(replica: &mut Replica, keypair: &Keypair, op: &Op) -> Envelope {
    replica
        .write(keypair, op, 5_000)
        .expect("the write is allowed")
}

fn revoke(target: &Keypair, by: &Keypair) -> Op {
    Op::RevokeMember {
        public_key: target.public().to_hex(),
        revocation: Revocation {
            by: by.public().to_hex(),
            reason: "test".into(),
            at_ms: 6_000,
        },
    }
}

fn replica_with(federation: FederationId, envelopes: &[Envelope]) -> Replica {
    let mut replica = Replica::new();
    replica.adopt(federation).expect("adopts");
    replica.receive(envelopes.to_vec()).expect("receives");
    replica
}

fn mix() -> &'static Mix {
    static MIX: OnceLock<Mix> = OnceLock::new();
    MIX.get_or_init(build_mix)
}

fn build_mix() -> Mix {
    let first = keypair(0);
    let second = keypair(1);
    let alpha = keypair(2);
    let alpha_two = keypair(3);
    let beta = keypair(4);
    let puppet = keypair(5);
    let joiner_one = keypair(6);
    let joiner_two = keypair(7);
    let third = keypair(10);
    let fourth = keypair(11);
    let mut council = Replica::new();
    let mut founding = vec![write(
        &mut council,
        &first,
        &Op::Genesis {
            name: "hostile".into(),
            founder: founder(&first),
        },
    )];
    for (key, role, scope) in [
        (&second, Role::Council, None),
        (&third, Role::Council, None),
        (&fourth, Role::Council, None),
        (&alpha, Role::Pod, Some("alpha")),
        (&alpha_two, Role::Pod, Some("alpha")),
        (&beta, Role::Pod, Some("beta")),
    ] {
        founding.push(write(
            &mut council,
            &first,
            &Op::AddMember(member(key, role, scope, &first)),
        ));
    }
    let federation = council.federation().expect("founded");
    let genesis = founding[0].hash();
    let mut envelopes = founding.clone();
    let mut never = Vec::new();
    let mut always: Vec<ChangeHash> = founding.iter().map(Envelope::hash).collect();

    // alpha writes once, then its data dir is copied: both copies write the next change (a fork at number 2).
    let mut alpha_dir = replica_with(federation, &founding);
    let shared = write(
        &mut alpha_dir,
        &alpha,
        &Op::AddLearning(learning("a1", "first")),
    );
    let mut copy = replica_with(federation, &founding);
    copy.receive(vec![shared.clone()]).expect("receives");
    let left = write(
        &mut alpha_dir,
        &alpha,
        &Op::AddLearning(learning("a2", "left")),
    );
    let right = write(
        &mut copy,
        &alpha,
        &Op::AddLearning(learning("a2b", "right")),
    );
    let after_fork = write(&mut copy, &alpha, &Op::AddLearning(learning("a3", "more")));
    always.push(shared.hash());
    never.extend([left.hash(), right.hash(), after_fork.hash()]);
    envelopes.extend([shared.clone(), left, right, after_fork]);

    // A gap: alpha_two writes three learnings, and only the first and the third are ever delivered (the third
    // waits for the second, on every replica, forever).
    let mut two_dir = replica_with(federation, &founding);
    let g1 = write(
        &mut two_dir,
        &alpha_two,
        &Op::AddLearning(learning("t1", "one")),
    );
    let _g2 = write(
        &mut two_dir,
        &alpha_two,
        &Op::AddLearning(learning("t2", "two")),
    );
    let g3 = write(
        &mut two_dir,
        &alpha_two,
        &Op::AddLearning(learning("t3", "three")),
    );
    always.push(g1.hash());
    never.push(g3.hash());
    envelopes.extend([g1, g3]);

    // alpha re-signs its first learning naming the genesis only (before it was a member): another change, refused.
    let stale = alpha_dir
        .craft_with(
            &alpha,
            &DocId::Pod("alpha".into()),
            &Op::AddLearning(learning("a1", "first")),
            5_000,
            &Craft {
                auth_heads: Some(vec![genesis]),
                doc_heads: Some(Vec::new()),
                epoch: 0,
            },
        )
        .expect("crafts");
    never.push(stale.hash());
    envelopes.push(stale);

    // beta writes, the council revokes beta, beta writes concurrently (not covered) and alpha_two builds on
    // nothing of beta's (other document) but beta's copy from before the revocation writes after it too.
    let mut beta_dir = replica_with(federation, &founding);
    let covered = write(
        &mut beta_dir,
        &beta,
        &Op::AddLearning(learning("b1", "covered")),
    );
    council.receive(vec![covered.clone()]).expect("receives");
    let revocation = write(&mut council, &first, &revoke(&beta, &first));
    // beta's data dir, as of before the revocation, writes after it.
    let concurrent = write(
        &mut beta_dir,
        &beta,
        &Op::AddLearning(learning("b2", "late")),
    );
    always.extend([covered.hash(), revocation.hash()]);
    never.push(concurrent.hash());
    envelopes.extend([covered, revocation.clone(), concurrent]);

    // The two council members revoke each other concurrently: both are out (everyone in a cycle of revocations).
    let base: Vec<Envelope> = envelopes
        .iter()
        .filter(|e| council.contains(&e.hash()))
        .cloned()
        .collect();
    let mut second_dir = replica_with(federation, &base);
    let first_revokes_second = write(&mut council, &first, &revoke(&second, &first));
    let second_revokes_first = write(&mut second_dir, &second, &revoke(&first, &second));
    // The revoked second member then adds a puppet "before" its revocation (naming stale heads).
    let puppet_add = write(
        &mut second_dir,
        &second,
        &Op::AddMember(member(&puppet, Role::Pod, Some("alpha"), &second)),
    );
    always.extend([first_revokes_second.hash(), second_revokes_first.hash()]);
    never.push(puppet_add.hash());
    envelopes.extend([first_revokes_second, second_revokes_first, puppet_add]);

    // One ticket redeemed at two council nodes (two other council members, on two sides of a partition) for two
    // keys.
    let mut side_one = replica_with(federation, &founding);
    let mut side_two = replica_with(federation, &founding);
    let nonce = "ticket-1".to_owned();
    let admit_one = write(
        &mut side_one,
        &third,
        &Op::AdmitInvited {
            member: member(&joiner_one, Role::Pod, Some("gamma"), &third),
            nonce: nonce.clone(),
        },
    );
    let admit_two = write(
        &mut side_two,
        &fourth,
        &Op::AdmitInvited {
            member: member(&joiner_two, Role::Pod, Some("gamma"), &fourth),
            nonce,
        },
    );
    let one_writes = write(
        &mut side_one,
        &joiner_one,
        &Op::AddLearning(learning("g1", "one")),
    );
    let two_writes = write(
        &mut side_two,
        &joiner_two,
        &Op::AddLearning(learning("g2", "two")),
    );
    let (winner, loser) = if admit_one.hash() < admit_two.hash() {
        (one_writes.hash(), two_writes.hash())
    } else {
        (two_writes.hash(), one_writes.hash())
    };
    always.push(winner);
    never.push(loser);
    envelopes.extend([admit_one, admit_two, one_writes, two_writes]);

    // Junk: a stranger's changes naming auth heads nobody has.
    let stranger = keypair(9);
    for i in 0..3 {
        let junk = council
            .craft_with(
                &stranger,
                &DocId::Pod("alpha".into()),
                &Op::AddLearning(learning(&format!("junk-{i}"), "x")),
                5_000,
                &Craft {
                    auth_heads: Some(vec![ChangeHash([i as u8 + 1; 32])]),
                    doc_heads: Some(Vec::new()),
                    epoch: 0,
                },
            )
            .expect("crafts");
        never.push(junk.hash());
        envelopes.push(junk);
    }
    Mix {
        federation,
        envelopes,
        never,
        always,
        alpha,
    }
}

/// Delivers the mix in `order`, in batches cut at `cuts`, restarting at `restarts`; returns heads and view bytes.
fn deliver(
    order: &[usize],
    cuts: &[usize],
    restarts: &[usize],
) -> (Vec<ChangeHash>, String, Replica) {
    let mix = mix();
    let mut replica = Replica::new();
    replica.adopt(mix.federation).expect("adopts");
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (order.len() + 1)).collect();
    points.push(order.len());
    points.sort();
    for (index, end) in points.into_iter().enumerate() {
        if end <= start {
            continue;
        }
        let batch: Vec<Envelope> = order[start..end]
            .iter()
            .map(|i| mix.envelopes[*i].clone())
            .collect();
        replica.receive(batch).expect("receives");
        start = end;
        if restarts.contains(&index) {
            let pending: Vec<Envelope> = replica.pending_envelopes().cloned().collect();
            let mut reopened =
                ReplicaState::decode(&ReplicaState::encode(&replica)).expect("decodes");
            reopened.adopt(mix.federation).expect("same federation");
            reopened.restore_pending(pending).expect("restores");
            replica = reopened;
        }
    }
    let view = serde_json::to_string(&replica.view()).expect("serializes");
    (replica.heads(), view, replica)
}

fn reference() -> &'static (Vec<ChangeHash>, String) {
    static REFERENCE: OnceLock<(Vec<ChangeHash>, String)> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let order: Vec<usize> = (0..mix().envelopes.len()).collect();
        let (heads, view, replica) = deliver(&order, &[], &[]);
        let mix = mix();
        for hash in &mix.never {
            assert!(!replica.contains(hash), "{hash} must be out");
        }
        for hash in &mix.always {
            assert!(
                replica.contains(hash),
                "{hash} must be in: {:?}",
                replica.rejection(hash)
            );
        }
        let view_value = replica.view();
        assert!(
            view_value
                .equivocations
                .contains_key(&mix.alpha.public().to_hex())
        );
        assert_eq!(view_value.void_admissions.len(), 1);
        let revoked = view_value.members.values().filter(|m| m.revoked).count();
        assert_eq!(revoked, 3, "beta and both council members are out");
        (heads, view)
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_mixes_converge_in_any_order_batching_and_restart(
        order in Just((0..mix().envelopes.len()).collect::<Vec<usize>>()).prop_shuffle(),
        cuts in prop::collection::vec(0usize..64, 0..6),
        restarts in prop::collection::vec(0usize..7, 0..3),
    ) {
        let (heads, view, _) = deliver(&order, &cuts, &restarts);
        let (reference_heads, reference_view) = reference();
        prop_assert_eq!(&heads, reference_heads);
        prop_assert_eq!(&view, reference_view);
    }
}

#[test]
fn the_equivocation_reason_is_reported() {
    let (_, _, replica) = deliver(&(0..mix().envelopes.len()).collect::<Vec<_>>(), &[], &[]);
    let reasons: Vec<Reason> = mix()
        .never
        .iter()
        .filter_map(|h| replica.rejection(h))
        .collect();
    assert!(reasons.contains(&Reason::Equivocation));
    assert!(reasons.contains(&Reason::Revoked));
}

#[test]
fn a_hundred_thousand_junk_envelopes_do_not_stop_honest_changes() {
    let mix = mix();
    let founding: Vec<Envelope> = mix.envelopes[..7].to_vec();
    let mut receiver = replica_with(mix.federation, &founding);
    assert_eq!(receiver.len(), 7, "the founding is accepted");
    // Junk from 700 throwaway keys and one that sends 30,000 alone, naming auth heads nobody has: it can only wait.
    let pod = DocId::Pod("alpha".into());
    let mut junk = Vec::with_capacity(100_000);
    for key in 0..701u32 {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&key.to_be_bytes());
        seed[31] = 0xAA;
        let throwaway = Keypair::from_seed(seed);
        let count = if key == 700 { 30_000 } else { 100 };
        for n in 0..count {
            let envelope = receiver
                .craft_with(
                    &throwaway,
                    &pod,
                    &Op::AddLearning(learning(&format!("junk-{n}"), "x")),
                    5_000,
                    &Craft {
                        auth_heads: Some(vec![ChangeHash([0xFE; 32])]),
                        epoch: n + 1,
                        ..Craft::default()
                    },
                )
                .expect("crafts");
            junk.push(envelope);
        }
    }
    for batch in junk.chunks(10_000) {
        receiver.receive(batch.to_vec()).expect("receives");
        assert!(receiver.pending_len() <= registry::MAX_PENDING);
    }
    assert!(
        receiver.pending_len() <= 700 * 100 + registry::MAX_PENDING_PER_AUTHOR,
        "one author holds at most its share"
    );
    // A ready honest change is decided at once; a waiting one still gets a place, and is accepted when its
    // dependency comes.
    let alpha = keypair(2);
    let mut alpha_dir = replica_with(mix.federation, &founding);
    let first = write(
        &mut alpha_dir,
        &alpha,
        &Op::AddLearning(learning("honest-1", "a")),
    );
    let second = write(
        &mut alpha_dir,
        &alpha,
        &Op::AddLearning(learning("honest-2", "b")),
    );
    let receipt = receiver.receive(vec![second.clone()]).expect("receives");
    assert_eq!(receipt.pending_added.len(), 1, "{:?}", receipt.rejected);
    let receipt = receiver.receive(vec![first.clone()]).expect("receives");
    assert_eq!(receipt.accepted.len(), 2, "{:?}", receipt.rejected);
    assert!(receiver.contains(&first.hash()) && receiver.contains(&second.hash()));
}

/// A council member may write anywhere in the council document, but a vote counts only when the voter signed it:
/// a vote written under another member's key, or written over another member's vote, is not counted.
#[test]
fn a_council_member_cannot_vote_for_another() {
    let (c1, c2, pod) = (keypair(1), keypair(2), keypair(3));
    let mut council = Replica::new();
    let mut held = vec![write(
        &mut council,
        &c1,
        &Op::Genesis {
            name: "votes".into(),
            founder: founder(&c1),
        },
    )];
    held.push(write(
        &mut council,
        &c1,
        &Op::AddMember(member(&c2, Role::Council, None, &c1)),
    ));
    held.push(write(
        &mut council,
        &c1,
        &Op::AddMember(member(&pod, Role::Pod, Some("emea"), &c1)),
    ));
    let federation = council.federation().expect("founded");
    held.push(write(
        &mut council,
        &pod,
        &Op::NewExperiment(support::experiment("big")),
    ));
    let vote = |by: &Keypair, reason: &str| {
        Op::Decide(model::Approval {
            experiment: "big".into(),
            decision: model::Decision::Approved,
            reason: reason.into(),
            by: by.public().to_hex(),
            at_ms: 0,
        })
    };
    // c1 casts c2's vote.
    let forged = write(&mut council, &c1, &vote(&c2, "forged"));
    let votes = council.view().votes;
    assert!(votes.get("big").is_none_or(|v| v.is_empty()), "{votes:?}");
    // c2's own vote counts; c1 writing over it voids it rather than taking it over.
    let mut other = replica_with(federation, &held);
    let genuine = write(&mut other, &c2, &vote(&c2, "genuine"));
    assert_eq!(other.view().votes["big"].len(), 1);
    council.receive(vec![genuine]).expect("receives");
    let overwrite = write(&mut council, &c1, &vote(&c2, "overwritten"));
    other.receive(vec![overwrite, forged]).expect("receives");
    for (name, replica) in [("council", &council), ("other", &other)] {
        let votes = replica.view().votes;
        assert!(
            votes.get("big").is_none_or(|v| v.is_empty()),
            "{name}: {votes:?}"
        );
    }
}
