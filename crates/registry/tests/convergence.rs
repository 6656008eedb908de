//! Any delivery order converges: replicas with different roles write concurrently (including conflicting edits of
//! one record by two members of the same pod), swap partial, shuffled and duplicated bundles between writes, and
//! after a full exchange hold identical heads and print identical registry views. Replicas that share a
//! [`DocumentCache`] (as the simulator's do) end exactly as replicas on their own.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use identity::Keypair;
use model::{Approval, Budget, Decision, DocId, ExperimentStatus, Revocation, Role};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use registry::{ChangeHash, DocumentCache, Envelope, Error, FederationId, Op, Reason, Replica};

use support::{
    experiment, key_result, keypair, learning, member, objective, schema, through_bundle,
};

/// What a replica's key was admitted as.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Seat {
    Council,
    Pod(&'static str),
    Steward,
    Partner(&'static str),
}

/// One step of a run.
#[derive(Clone, Debug)]
enum Step {
    /// The replica writes one op its seat allows, picked by `choice`; `slot` picks the record, so that writers
    /// collide on records often.
    Write {
        replica: usize,
        choice: u8,
        slot: u8,
    },
    /// `from` sends `to` a bundle: the envelopes at `picks` (in that order, repeats allowed) or everything it holds
    /// in reverse, optionally the same bundle twice. Indices are taken modulo the number of replicas or envelopes.
    Send {
        from: usize,
        to: usize,
        picks: Vec<usize>,
        everything: bool,
        twice: bool,
    },
}

fn seat_strategy() -> impl Strategy<Value = Seat> {
    prop_oneof![
        Just(Seat::Pod("beta")),
        Just(Seat::Steward),
        Just(Seat::Partner("acme")),
        Just(Seat::Council),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..5usize, any::<u8>(), any::<u8>())
            .prop_map(|(replica, choice, slot)| Step::Write { replica, choice, slot }),
        2 => (
            0..5usize,
            0..5usize,
            prop::collection::vec(any::<usize>(), 0..8),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(from, to, picks, everything, twice)| Step::Send { from, to, picks, everything, twice }),
    ]
}

/// One participant: its key, its replica, and every envelope it holds (written or accepted), in the order it got
/// them, which is what it can forward.
struct Participant {
    seat: Seat,
    keypair: Keypair,
    replica: Replica,
    held: Vec<Envelope>,
}

struct Run {
    federation: FederationId,
    participants: Vec<Participant>,
    written: BTreeSet<ChangeHash>,
    clock_ms: i64,
}

impl Run {
    /// Participant 0 founds the federation and admits the others; `informed[i]` says whether participant `i` gets
    /// the founding bundle before anything else happens. With `documents`, every replica shares that cache.
    fn found(seats: &[Seat], informed: &[bool], documents: Option<&Arc<DocumentCache>>) -> Self {
        let keys: Vec<Keypair> = (0..seats.len()).map(|i| keypair(i as u8)).collect();
        let fresh = || {
            let mut replica = Replica::new();
            if let Some(cache) = documents {
                replica.share_document_cache(Arc::clone(cache));
            }
            replica
        };
        let mut founder = fresh();
        let mut founding = vec![
            founder
                .write(
                    &keys[0],
                    &Op::Genesis {
                        name: "convergence".into(),
                        founder: support::founder(&keys[0]),
                    },
                    0,
                )
                .expect("genesis on an empty replica"),
        ];
        for (key, seat) in keys.iter().zip(seats).skip(1) {
            let (role, scope) = match *seat {
                Seat::Council => (Role::Council, None),
                Seat::Pod(pod) => (Role::Pod, Some(pod)),
                Seat::Steward => (Role::Steward, None),
                Seat::Partner(name) => (Role::Partner, Some(name)),
            };
            let op = Op::AddMember(member(key, role, scope, &keys[0]));
            founding.push(founder.write(&keys[0], &op, 0).expect("the founder admits"));
        }
        let federation = founder.federation().expect("founded");
        let written = founding.iter().map(Envelope::hash).collect();
        let mut participants = Vec::new();
        for (index, (keypair, seat)) in keys.into_iter().zip(seats).enumerate() {
            let participant = if index == 0 {
                Participant {
                    seat: *seat,
                    keypair,
                    replica: std::mem::take(&mut founder),
                    held: founding.clone(),
                }
            } else {
                let mut replica = fresh();
                replica.adopt(federation).expect("a new replica adopts");
                Participant {
                    seat: *seat,
                    keypair,
                    replica,
                    held: Vec::new(),
                }
            };
            participants.push(participant);
        }
        let mut run = Self {
            federation,
            participants,
            written,
            clock_ms: 1_000,
        };
        for (to, informed) in informed.iter().enumerate().take(seats.len()).skip(1) {
            if *informed {
                run.deliver(to, founding.clone());
            }
        }
        run
    }

    fn step(&mut self, step: &Step) {
        self.clock_ms += 1_000;
        match step {
            Step::Write {
                replica,
                choice,
                slot,
            } => {
                let index = replica % self.participants.len();
                self.write(index, *choice, *slot);
            }
            Step::Send {
                from,
                to,
                picks,
                everything,
                twice,
            } => {
                let from = from % self.participants.len();
                let to = to % self.participants.len();
                let held = &self.participants[from].held;
                if from == to || held.is_empty() {
                    return;
                }
                let mut batch: Vec<Envelope> = if *everything {
                    held.iter().rev().cloned().collect()
                } else {
                    picks.iter().map(|p| held[p % held.len()].clone()).collect()
                };
                if *twice {
                    batch.extend(batch.clone());
                }
                self.deliver(to, batch);
            }
        }
    }

    fn write(&mut self, index: usize, choice: u8, slot: u8) {
        let count = self.participants.len();
        let now_ms = self.clock_ms;
        let participant = &mut self.participants[index];
        let Some(op) = pick_op(participant, choice, slot, count) else {
            return;
        };
        match participant.replica.write(&participant.keypair, &op, now_ms) {
            Ok(envelope) => {
                self.written.insert(envelope.hash());
                participant.held.push(envelope);
            }
            // Honest refusals: not yet admitted as far as this replica knows, revoked, or a record that does not
            // exist yet or already exists here.
            Err(Error::NotAllowed { .. } | Error::Conflict(_)) => {}
            Err(other) => panic!("participant {index} writing {op:?}: {other}"),
        }
    }

    fn deliver(&mut self, to: usize, batch: Vec<Envelope>) {
        let batch = through_bundle(&self.federation, &batch);
        let participant = &mut self.participants[to];
        let receipt = participant
            .replica
            .receive(batch)
            .expect("a federated replica receives");
        // Honest changes are never refused for themselves; a revocation may take out (hold excluded) the revoked
        // member's concurrent changes and what builds on them, identically everywhere.
        let refused: Vec<_> = receipt
            .rejected
            .iter()
            .filter(|r| {
                r.recorded || !matches!(r.reason, Reason::Revoked | Reason::DependsOnRejected)
            })
            .collect();
        assert!(
            refused.is_empty(),
            "honest changes were rejected by participant {to}: {refused:?}"
        );
        participant.held.extend(receipt.to_keep().cloned());
    }

    /// Everyone sends everything it holds to everyone else until nothing new is accepted.
    fn full_exchange(&mut self) {
        for _round in 0..self.participants.len() {
            let before: usize = self.participants.iter().map(|p| p.held.len()).sum();
            for to in 0..self.participants.len() {
                for from in 0..self.participants.len() {
                    if from != to {
                        let batch = self.participants[from].held.clone();
                        self.deliver(to, batch);
                    }
                }
            }
            let after: usize = self.participants.iter().map(|p| p.held.len()).sum();
            if after == before {
                return;
            }
        }
    }
}

/// An op the participant's seat allows, built from what its replica sees; `None` when it has nothing to act on.
fn pick_op(participant: &Participant, choice: u8, slot: u8, count: usize) -> Option<Op> {
    let now_ms = i64::from(slot) * 1_000;
    let pod_of = |seat| match seat {
        Seat::Pod(pod) => pod,
        _ => "alpha",
    };
    match participant.seat {
        Seat::Council => match choice % 8 {
            0 => Some(Op::AddObjective(objective(&format!("obj-{}", slot % 3)))),
            1 => approve_schema(participant, slot),
            2 => {
                // Revoke anyone but the founder; two council members may revoke the same member concurrently.
                let target = 1 + usize::from(slot) % (count - 1);
                Some(Op::RevokeMember {
                    public_key: keypair(target as u8).public().to_hex(),
                    revocation: Revocation {
                        by: participant.keypair.public().to_hex(),
                        reason: format!("step {slot}"),
                        at_ms: now_ms,
                    },
                })
            }
            3 => Some(Op::Decide(Approval {
                experiment: format!("exp-{}", slot % 3),
                decision: if slot.is_multiple_of(2) {
                    Decision::Approved
                } else {
                    Decision::Rejected
                },
                reason: String::new(),
                by: participant.keypair.public().to_hex(),
                at_ms: now_ms,
            })),
            4 => Some(Op::AllocateBudget(Budget {
                pod: "alpha".into(),
                quarter: "2026Q4".into(),
                allocated: f64::from(slot) * 100.0,
                by: participant.keypair.public().to_hex(),
            })),
            5 => Some(Op::SetSetting(model::Setting::Quorum(
                u32::from(slot % 3) + 1,
            ))),
            6 => Some(Op::SetSetting(model::Setting::WinBonus(f64::from(slot)))),
            _ => Some(Op::SetThreshold {
                quarter: "2026Q4".into(),
                cost: f64::from(slot),
            }),
        },
        Seat::Pod(_) => {
            let kr = format!("kr-{}", slot % 3);
            let exp = format!("exp-{}", slot % 3);
            // Key result updates are listed twice so that the two members of `alpha` often edit one record.
            match choice % 8 {
                0 => Some(Op::AddKeyResult(key_result(
                    &kr,
                    &format!("obj-{}", slot % 3),
                ))),
                1 | 2 => Some(Op::UpdateKeyResult {
                    id: kr,
                    current: f64::from(slot) / 4.0,
                    updated_at_ms: now_ms,
                }),
                3 => Some(Op::NewExperiment(experiment(&exp))),
                4 => Some(Op::SetExperimentStatus {
                    key: exp,
                    status: if slot.is_multiple_of(2) {
                        ExperimentStatus::Running
                    } else {
                        ExperimentStatus::Stopped
                    },
                    at_ms: now_ms,
                }),
                5 => Some(Op::ProposeSchema(schema(&format!(
                    "event-{}-{}",
                    pod_of(participant.seat),
                    slot % 2
                )))),
                _ => Some(Op::AddLearning(learning(
                    &format!("learning-{}", slot % 4),
                    &format!("body {slot}"),
                ))),
            }
        }
        Seat::Steward => approve_schema(participant, slot),
        Seat::Partner(_) => Some(Op::AddLearning(learning(
            &format!("learning-{}", slot % 4),
            &format!("partner body {slot}"),
        ))),
    }
}

/// Approves one of the schema proposals the participant's replica holds.
fn approve_schema(participant: &Participant, slot: u8) -> Option<Op> {
    let view = participant.replica.view();
    let proposals: Vec<_> = view.schema_proposals.values().collect();
    if proposals.is_empty() {
        return None;
    }
    let mut approved = proposals[usize::from(slot) % proposals.len()].clone();
    approved.status = model::StandardStatus::Approved;
    approved.approved_by = Some(participant.keypair.public().to_hex());
    Some(Op::ApproveSchema(approved))
}

fn assert_converged(run: &Run) {
    let first = &run.participants[0].replica;
    let heads = first.heads();
    let view = serde_json::to_string(&first.view()).expect("views serialize");
    let governance = governance::Governance::derive(&first.view());
    for (index, participant) in run.participants.iter().enumerate() {
        let replica = &participant.replica;
        assert_eq!(replica.pending_len(), 0, "participant {index} still waits");
        for hash in &run.written {
            assert!(replica.holds(hash), "participant {index} lacks {hash}");
        }
        assert_eq!(
            replica.len() + replica.excluded().count(),
            run.written.len(),
            "participant {index}"
        );
        assert_eq!(replica.heads(), heads, "heads of participant {index}");
        let other = serde_json::to_string(&replica.view()).expect("views serialize");
        assert_eq!(other, view, "view of participant {index}");
        // Governance is a function of the view: the same decisions (stages, votes, spends, overlaps) everywhere.
        assert_eq!(
            governance::Governance::derive(&replica.view()),
            governance,
            "governance of participant {index}"
        );
    }
    let members = first.view().members;
    assert_eq!(members.len(), run.participants.len());
    assert!(first.doc_ids().any(|doc| *doc == DocId::Council));
}

fn run_case(seats: Vec<Seat>, informed: Vec<bool>, steps: Vec<Step>) {
    let alone = run_steps(&seats, &informed, &steps, None);
    let cache = Arc::new(DocumentCache::new());
    let sharing = run_steps(&seats, &informed, &steps, Some(&cache));
    // Taking a document another replica built at the same heads changes nothing: same heads, same view, everywhere.
    for (index, (a, b)) in alone
        .participants
        .iter()
        .zip(&sharing.participants)
        .enumerate()
    {
        assert_eq!(a.replica.heads(), b.replica.heads(), "participant {index}");
        assert_eq!(
            serde_json::to_string(&a.replica.view()).expect("views serialize"),
            serde_json::to_string(&b.replica.view()).expect("views serialize"),
            "participant {index}"
        );
        // Listed from the shared cache or not, the changes not under given heads are the same.
        let heads = a.replica.heads();
        for given in [&[][..], &heads[..heads.len().min(1)]] {
            let listed = |replica: &Replica| {
                let mut changes = replica.changes_since(given);
                changes.sort();
                changes
            };
            assert_eq!(
                listed(&a.replica),
                listed(&b.replica),
                "participant {index}"
            );
        }
    }
}

fn run_steps(
    seats: &[Seat],
    informed: &[bool],
    steps: &[Step],
    documents: Option<&Arc<DocumentCache>>,
) -> Run {
    let mut run = Run::found(seats, informed, documents);
    for step in steps {
        run.step(step);
    }
    run.full_exchange();
    assert_converged(&run);
    run
}

/// Participant 0 founds, 1 and 2 share pod `alpha`; the others take any seat.
fn seats_strategy() -> impl Strategy<Value = Vec<Seat>> {
    prop::collection::vec(seat_strategy(), 0..=2).prop_map(|extra| {
        let mut seats = vec![Seat::Council, Seat::Pod("alpha"), Seat::Pod("alpha")];
        seats.extend(extra);
        seats
    })
}

proptest! {
    // Failing cases are kept in `convergence.proptest-regressions` beside this file and replayed first.
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_delivery_order_converges(
        seats in seats_strategy(),
        informed in prop::collection::vec(prop::bool::weighted(0.7), 5),
        steps in prop::collection::vec(step_strategy(), 8..48),
    ) {
        run_case(seats, informed, steps);
    }
}

/// Every seat once, a revocation racing the revoked pod's own writes, and both `alpha` members updating one key
/// result before either has seen the other's update.
#[test]
fn concurrent_edits_of_one_key_result_and_a_racing_revocation_converge() {
    let seats = vec![
        Seat::Council,
        Seat::Pod("alpha"),
        Seat::Pod("alpha"),
        Seat::Steward,
        Seat::Partner("acme"),
    ];
    let mut run = Run::found(&seats, &[true; 5], None);
    let write = |replica: usize, choice: u8, slot: u8| Step::Write {
        replica,
        choice,
        slot,
    };
    let send_all = |from: usize, to: usize| Step::Send {
        from,
        to,
        picks: Vec::new(),
        everything: true,
        twice: false,
    };
    let steps = [
        write(0, 0, 0), // objective obj-0
        write(1, 0, 0), // alpha/1 adds kr-0
        send_all(1, 2), // alpha/2 sees kr-0
        write(1, 1, 3), // alpha/1 sets kr-0 to 0.75
        write(2, 1, 6), // alpha/2 concurrently sets kr-0 to 1.5
        write(1, 5, 0), // alpha/1 proposes a schema
        send_all(1, 3), // the steward sees the proposal
        send_all(1, 0), // so does the council
        write(3, 0, 0), // the steward approves it
        write(0, 1, 0), // the council concurrently approves it too
        write(0, 2, 0), // the council revokes alpha/1 ...
        write(1, 6, 1), // ... while alpha/1, not knowing, shares a learning (out once the revocation is known)
        write(4, 0, 1), // the partner shares a learning with the same id in its own document
        send_all(0, 1), // alpha/1 learns of its revocation
        write(1, 6, 2), // and is refused locally from now on
    ];
    for step in &steps {
        run.step(step);
    }
    run.full_exchange();
    assert_converged(&run);
    let view = run.participants[0].replica.view();
    let kr = &view.key_results["alpha/kr-0"];
    assert!(
        [Some(0.75), Some(1.5)].contains(&kr.current),
        "one of the concurrent updates wins: {kr:?}"
    );
    assert_eq!(view.schemas.len(), 1);
    assert!(view.members[&keypair(1).public().to_hex()].revoked);
    // Strong removal: the learning alpha/1 shared concurrently with its revocation is not covered by it.
    assert!(!view.learnings.contains_key("pod/alpha/learning-1"));
    assert!(!view.learnings.contains_key("pod/alpha/learning-2"));
    assert!(view.learnings.contains_key("partner/acme/learning-1"));
}
