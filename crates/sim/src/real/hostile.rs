//! Real mode's hostile node: the node's daemon is stopped and a raw libp2p client (`net::spawn`) with the same
//! member key takes its place on the same port. It announces heads nobody has, so that honest nodes pull from it,
//! answers each pull with the next of its attacks (forged and unauthorized envelopes, replayed ones, garbage,
//! oversized frames), and gossips garbage when `garbage` is among them. Honest nodes penalize and eventually block
//! it, as they would a real one.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use identity::Keypair;
use net::{Event, Topic};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use registry::sync;
use registry::{ChangeHash, Envelope, FederationId, Replica};
use tokio::sync::oneshot;

/// Room a hostile client leaves itself above the honest limit, so that it can send oversized frames.
const OVERSIZED_HEADROOM_BYTES: usize = 64 * 1024;

/// What the hostile node did, handed back when it stops.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Changes crafted to be refused (forged, unauthorized): none may be applied by an honest node.
    pub(crate) bad: BTreeSet<ChangeHash>,
    /// Pulls answered, by attack.
    pub(crate) answered: BTreeMap<String, u64>,
    /// Garbage gossip messages published.
    pub(crate) garbage_gossip: u64,
    /// Fake announcements published.
    pub(crate) announcements: u64,
}

/// A running hostile client.
pub(crate) struct Hostile {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Tally>,
    pub(crate) client: net::Client,
}

/// Who the hostile node is and what it knows.
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) key: Keypair,
    pub(crate) port: u16,
    pub(crate) federation: FederationId,
    pub(crate) envelopes: Vec<Envelope>,
}

/// How it behaves.
pub(crate) struct Behaviour {
    pub(crate) attacks: Vec<String>,
    pub(crate) announce_interval: Duration,
    /// The honest nodes' sync message limit; `oversized` sends one byte more.
    pub(crate) max_message_bytes: usize,
    pub(crate) seed: u64,
}

/// Starts the hostile client on `runtime` and dials `peers` (multiaddrs with `/p2p/`).
pub(crate) fn start(
    runtime: &tokio::runtime::Runtime,
    who: Identity,
    how: Behaviour,
    peers: Vec<String>,
) -> Result<Hostile, String> {
    let mut replica = Replica::new();
    replica.adopt(who.federation).map_err(|e| e.to_string())?;
    replica
        .receive(who.envelopes.clone())
        .map_err(|e| e.to_string())?;
    let mut config = net::Config {
        listen_addrs: vec![
            format!("/ip4/127.0.0.1/tcp/{}", who.port)
                .parse()
                .map_err(|e| format!("listen address: {e}"))?,
        ],
        mdns: false,
        federation_id: who.federation.to_hex(),
        ..net::Config::default()
    };
    config.limits.max_sync_message_bytes = how.max_message_bytes + OVERSIZED_HEADROOM_BYTES;
    config.limits.heartbeat_ms = 200;
    config.limits.penalties_before_block = u32::MAX;
    let keypair = net::Keypair::from_secret_seed(who.key.secret_bytes());
    let (client, events) = {
        let _guard = runtime.enter();
        net::spawn(keypair, config).map_err(|e| e.to_string())?
    };
    for peer in peers {
        let Ok(addr) = peer.parse::<net::Multiaddr>() else {
            continue;
        };
        let client = client.clone();
        runtime.spawn(async move {
            if let Err(error) = client.dial(addr).await {
                tracing::debug!(%error, "hostile dial failed");
            }
        });
    }
    let (stop, stopped) = oneshot::channel();
    let attacker = Attacker {
        rng: StdRng::seed_from_u64(how.seed),
        replica,
        who,
        attacks: how.attacks,
        turn: 0,
        max_message_bytes: how.max_message_bytes,
        tally: Tally::default(),
    };
    let task = runtime.spawn(attacker.run(client.clone(), events, stopped, how.announce_interval));
    Ok(Hostile { stop, task, client })
}

impl Hostile {
    /// Stops the client and returns what it did.
    pub(crate) fn stop(self, runtime: &tokio::runtime::Runtime) -> Tally {
        let _ = self.stop.send(());
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), self.task).await })
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }
}

struct Attacker {
    rng: StdRng,
    replica: Replica,
    who: Identity,
    attacks: Vec<String>,
    turn: usize,
    max_message_bytes: usize,
    tally: Tally,
}

impl Attacker {
    async fn run(
        mut self,
        client: net::Client,
        mut events: tokio::sync::mpsc::Receiver<Event>,
        mut stopped: oneshot::Receiver<()>,
        announce_interval: Duration,
    ) -> Tally {
        let mut interval = tokio::time::interval(announce_interval);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = interval.tick() => {
                    let bytes = self.announcement();
                    // Before any peer subscribed, publishing fails; the next tick tries again.
                    let _ = client.publish(Topic::Heads, bytes).await;
                }
                event = events.recv() => match event {
                    Some(Event::InboundRequest { id, .. }) => {
                        let answer = self.answer();
                        if let Err(error) = client.respond(id, answer).await {
                            tracing::debug!(%error, "hostile answer not sent");
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
            }
        }
        let _ = client.shutdown().await;
        tracing::info!(node = %self.who.name, answered = ?self.tally.answered, "hostile node stopped");
        self.tally
    }

    /// Garbage half the time when `garbage` is an attack, else heads nobody has.
    fn announcement(&mut self) -> Vec<u8> {
        if self.attacks.iter().any(|a| a == "garbage") && self.rng.random_bool(0.5) {
            self.tally.garbage_gossip += 1;
            return crate::attack::garbage(&mut self.rng, 64);
        }
        self.tally.announcements += 1;
        let Some(mut announcement) = self.replica.announcement() else {
            return crate::attack::garbage(&mut self.rng, 64);
        };
        let fake = ChangeHash(self.rng.random());
        announcement.heads = vec![fake];
        announcement.digest = sync::heads_digest(&announcement.heads);
        announcement.encode()
    }

    /// The next attack in turn, as the answer to a pull.
    fn answer(&mut self) -> Vec<u8> {
        if self.attacks.is_empty() {
            return Vec::new();
        }
        let attack = self.attacks[self.turn % self.attacks.len()].clone();
        self.turn += 1;
        *self.tally.answered.entry(attack.clone()).or_default() += 1;
        let attacker = crate::attack::Attacker {
            replica: &self.replica,
            key: &self.who.key,
            region: &self.who.region,
            held: &self.who.envelopes,
            turn: self.turn as u64,
            now_ms: super::unix_ms(),
            max_message_bytes: self.max_message_bytes,
        };
        let answer = attacker.answer(&attack, &mut self.rng);
        self.tally.bad.extend(answer.bad);
        answer.bytes
    }
}
