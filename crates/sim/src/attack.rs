//! What a hostile member answers a pull with, one attack per answer: shared by the deterministic simulator and
//! real mode, so both throw exactly the same envelopes at honest nodes.
//!
//! Attacks a member's key allows (all signed by the hostile key unless said otherwise):
//! - `forged`: a change of its pod with a flipped signature byte;
//! - `unauthorized`: a council write (an objective) it may not make;
//! - `replay`: envelopes it already holds, again;
//! - `garbage`, `oversized`: bytes that are no message, or too many of them;
//! - `equivocate`: two different changes at one place of its chain (a fresh epoch each time);
//! - `stale-auth`: a change naming the genesis as its auth heads, from before it was a member;
//! - `resign`: one write signed twice, with the current and with stale auth heads (two changes, one place): only the
//!   current one may be accepted, and the stale one must not count as an equivocation;
//! - `pending-flood`: [`FLOOD_ENVELOPES`] changes by throwaway keys naming auth heads nobody has.

use identity::Keypair;
use model::DocId;
use rand::RngExt;
use rand::rngs::StdRng;
use registry::{ChangeHash, Craft, Envelope, Op, Replica, sync};

use crate::workload;

/// Attacks a scenario may name.
pub const ATTACKS: [&str; 9] = [
    "forged",
    "unauthorized",
    "replay",
    "garbage",
    "oversized",
    "equivocate",
    "stale-auth",
    "resign",
    "pending-flood",
];
/// Junk envelopes per `pending-flood` answer.
pub const FLOOD_ENVELOPES: usize = 200;
/// Envelopes per `replay` answer.
pub const REPLAYED_ENVELOPES: usize = 64;

/// The hostile node as an attack needs it.
pub struct Attacker<'a> {
    /// Its replica (what it holds).
    pub replica: &'a Replica,
    /// Its key (a member's).
    pub key: &'a Keypair,
    /// Its pod.
    pub region: &'a str,
    /// Envelopes it holds, for replays.
    pub held: &'a [Envelope],
    /// A number unique to this answer (names records, picks epochs and throwaway keys).
    pub turn: u64,
    /// Now, in Unix ms.
    pub now_ms: i64,
    /// The largest message a peer accepts.
    pub max_message_bytes: usize,
}

/// An answer: the wire bytes, and the crafted changes no honest node may apply.
pub struct Answer {
    /// The bytes to send.
    pub bytes: Vec<u8>,
    /// Hashes of the changes that must be refused (or excluded) everywhere.
    pub bad: Vec<ChangeHash>,
}

impl Attacker<'_> {
    /// The answer of `attack`.
    pub fn answer(&self, attack: &str, rng: &mut StdRng) -> Answer {
        let id = format!(
            "{}-attack-{}",
            self.key.public().to_hex().get(..8).unwrap_or("x"),
            self.turn
        );
        let pod = DocId::Pod(self.region.to_owned());
        // A fresh epoch per answer, so one attack's changes never collide with another's (or with honest writes).
        let epoch = u32::try_from(self.turn % u64::from(u32::MAX - 1)).unwrap_or(0) + 1_000;
        let learning = |suffix: &str| {
            Op::AddLearning(workload::learning(&format!("{id}{suffix}"), self.now_ms))
        };
        let craft = |op: &Op, options: Craft| {
            self.replica
                .craft_with(self.key, &pod, op, self.now_ms, &options)
                .ok()
        };
        let fresh = || Craft {
            epoch,
            ..Craft::default()
        };
        let genesis = self.replica.federation().map(|f| ChangeHash(f.0));
        let (envelopes, bad): (Vec<Envelope>, Vec<ChangeHash>) = match attack {
            "forged" => match craft(&learning(""), fresh()) {
                Some(mut envelope) => {
                    envelope.signature[7] ^= 0x40;
                    let hash = envelope.hash();
                    (vec![envelope], vec![hash])
                }
                None => (Vec::new(), Vec::new()),
            },
            "unauthorized" => {
                let objective = model::Objective {
                    id: id.clone(),
                    title: "hostile goal".into(),
                    ..workload::main_objective()
                };
                match self.replica.craft(
                    self.key,
                    &DocId::Council,
                    &Op::AddObjective(objective),
                    self.now_ms,
                ) {
                    Ok(envelope) => {
                        let hash = envelope.hash();
                        (vec![envelope], vec![hash])
                    }
                    Err(_) => (Vec::new(), Vec::new()),
                }
            }
            "replay" => (
                self.held.iter().take(REPLAYED_ENVELOPES).cloned().collect(),
                Vec::new(),
            ),
            "equivocate" => {
                let pair: Vec<Envelope> = [learning("-left"), learning("-right")]
                    .iter()
                    .filter_map(|op| craft(op, fresh()))
                    .collect();
                let bad = pair.iter().map(Envelope::hash).collect();
                (pair, bad)
            }
            "stale-auth" => match genesis.and_then(|g| {
                craft(
                    &learning(""),
                    Craft {
                        auth_heads: Some(vec![g]),
                        ..fresh()
                    },
                )
            }) {
                Some(envelope) => {
                    let hash = envelope.hash();
                    (vec![envelope], vec![hash])
                }
                None => (Vec::new(), Vec::new()),
            },
            "resign" => {
                let op = learning("");
                let current = craft(&op, fresh());
                let stale = genesis.and_then(|g| {
                    craft(
                        &op,
                        Craft {
                            auth_heads: Some(vec![g]),
                            ..fresh()
                        },
                    )
                });
                let bad = stale.iter().map(Envelope::hash).collect();
                (stale.into_iter().chain(current).collect(), bad)
            }
            "pending-flood" => {
                let envelopes: Vec<Envelope> = (0..FLOOD_ENVELOPES)
                    .filter_map(|_| {
                        let throwaway = Keypair::from_seed(rng.random());
                        let nowhere = ChangeHash(rng.random());
                        self.replica
                            .craft_with(
                                &throwaway,
                                &pod,
                                &learning(""),
                                self.now_ms,
                                &Craft {
                                    auth_heads: Some(vec![nowhere]),
                                    ..Craft::default()
                                },
                            )
                            .ok()
                    })
                    .collect();
                let bad = envelopes.iter().map(Envelope::hash).collect();
                (envelopes, bad)
            }
            "garbage" => {
                return Answer {
                    bytes: garbage(rng, 512),
                    bad: Vec::new(),
                };
            }
            _ => {
                return Answer {
                    bytes: vec![0xAB; self.max_message_bytes + 1],
                    bad: Vec::new(),
                };
            }
        };
        Answer {
            bytes: sync::Response::with_envelopes(envelopes).encode(),
            bad,
        }
    }
}

/// Between 1 and `max` random bytes: a message that is no message.
pub fn garbage(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.random_range(1..=max);
    (0..len).map(|_| rng.random()).collect()
}
