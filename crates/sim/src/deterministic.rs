//! Deterministic mode: many nodes running the production registry and sync code (`registry::Replica`, the sync
//! policy state machine `registry::sync::SyncMachine` that running nodes drive, the real wire codecs), each keeping
//! a mesh of connected members it pushes to, over a virtual clock and an in-memory network with drop, delay,
//! duplicate, reorder and partition filters, all driven by one seeded generator. Same seed, same report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use identity::Keypair;
use model::{DocId, Role};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use registry::sync::{self, Absorbed, Answer, Output, Policy, SyncMachine};
use registry::{ChangeHash, DocumentCache, Envelope, Op, Replica, SignatureCache};

use crate::report::{Invariant, Phase, Report};
use crate::scenario::{Action, Expect, Scenario};
use crate::scheduled::Tried;
use crate::workload::{self, Write};

/// Fault injection for the simulator's self-test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InjectedBug {
    /// No bug.
    #[default]
    None,
    /// The first honest node accepts envelopes without checking signatures.
    SkipSignatureChecks,
}

enum Payload {
    Announcement(Vec<u8>),
    Request { bytes: Vec<u8>, id: u64 },
    Response { bytes: Vec<u8>, id: u64 },
    Push { bytes: Vec<u8>, id: u64 },
    PushAck { id: u64 },
}

impl Payload {
    fn len(&self) -> usize {
        match self {
            Payload::Announcement(b) => b.len(),
            Payload::Request { bytes, .. }
            | Payload::Response { bytes, .. }
            | Payload::Push { bytes, .. } => bytes.len(),
            Payload::PushAck { .. } => 1,
        }
    }

    fn copy(&self) -> Self {
        match self {
            Payload::Announcement(b) => Payload::Announcement(b.clone()),
            Payload::Request { bytes, id } => Payload::Request {
                bytes: bytes.clone(),
                id: *id,
            },
            Payload::Response { bytes, id } => Payload::Response {
                bytes: bytes.clone(),
                id: *id,
            },
            Payload::Push { bytes, id } => Payload::Push {
                bytes: bytes.clone(),
                id: *id,
            },
            Payload::PushAck { id } => Payload::PushAck { id: *id },
        }
    }
}

struct Message {
    from: usize,
    to: usize,
    payload: Payload,
}

struct SimNode {
    name: String,
    region: String,
    role: Role,
    observer: bool,
    key: Keypair,
    replica: Replica,
    /// What the node's store holds: accepted and pending envelopes (survives a crash).
    stored: BTreeMap<ChangeHash, Envelope>,
    machine: SyncMachine<usize>,
    alive: bool,
    attacks: Vec<String>,
    /// Per requesting node, the next attack to answer it with: every node that pulls from a hostile one meets
    /// every attack in turn, whatever the order of the pulls.
    attack_turns: BTreeMap<usize, usize>,
    revoked: bool,
    /// When a hostile node last gossiped its (fake) announcement.
    last_announce_ms: Option<u64>,
    /// The heads as of an accepted-change count, so that `observe` computes them only after a change.
    heads_memo: Option<(usize, Vec<ChangeHash>)>,
    writes: u64,
}

impl SimNode {
    fn writer(&self) -> bool {
        !self.observer && self.attacks.is_empty()
    }

    fn honest(&self) -> bool {
        self.attacks.is_empty() && !self.revoked
    }
}

struct Links {
    drop: f64,
    duplicate: f64,
    latency_ms: [u64; 2],
    sides: Option<Vec<BTreeSet<usize>>>,
    flap: Option<(u64, u64)>,
}

/// The engine.
struct Sim<'a> {
    scenario: &'a Scenario,
    seed: u64,
    rng: StdRng,
    now_ms: u64,
    nodes: Vec<SimNode>,
    queue: BTreeMap<(u64, u64), Message>,
    next_seq: u64,
    links: Links,
    /// Changes crafted to be refused (forged, unauthorized, post-revocation): none may be applied by an honest node.
    bad: BTreeSet<ChangeHash>,
    phases: Vec<Phase>,
    messages: u64,
    bytes: u64,
    rounds: u64,
    rejected: BTreeMap<String, u64>,
    largest_divergence: u64,
    converged_since: Option<u64>,
    last_disruption_ms: u64,
    counter: u64,
    policy: Policy,
    /// Signature results, documents and memberships shared by the simulated replicas.
    shared: Shared,
    /// Scheduled starts with an expectation, and what came of them.
    tried: Vec<Tried>,
    /// Expected starts not started yet: (index into `tried`, node, the write, tried until this ms).
    retrying: Vec<(usize, usize, Write, u64)>,
}

/// What the simulated replicas share: every node still checks every signature and decides every change itself, but
/// a signature this process verified already is not verified again ([`SignatureCache`]: same key, digest and
/// signature bytes), and a document another node brought to the same heads is not built again
/// ([`DocumentCache`]: the heads name the history).
#[derive(Clone, Default)]
struct Shared {
    signatures: Arc<SignatureCache>,
    documents: Arc<DocumentCache>,
}

/// The key of node `name` in a run with `seed` (real mode writes the same keys into its data dirs).
pub(crate) fn node_key(seed: u64, name: &str) -> Keypair {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(b"growthmesh/sim/key");
    hasher.update(seed.to_le_bytes());
    hasher.update(name.as_bytes());
    Keypair::from_seed(hasher.finalize().into())
}

/// Runs a scenario deterministically.
pub fn run(scenario: &Scenario, seed: u64, bug: InjectedBug, replay: String) -> Report {
    let mut sim = Sim::new(scenario, seed);
    if bug == InjectedBug::SkipSignatureChecks
        && let Some(node) = sim.nodes.iter_mut().find(|n| n.attacks.is_empty())
    {
        node.replica.insecure_skip_signature_checks();
    }
    sim.run();
    sim.report(replay)
}

impl<'a> Sim<'a> {
    fn new(scenario: &'a Scenario, seed: u64) -> Self {
        let shared = Shared::default();
        let mut nodes: Vec<SimNode> = scenario
            .node_names()
            .into_iter()
            .map(|(name, region, role, observer)| SimNode {
                key: node_key(seed, &name),
                name,
                region,
                role,
                observer,
                replica: replica_sharing(&shared),
                stored: BTreeMap::new(),
                machine: SyncMachine::new(policy(scenario)),
                alive: true,
                attacks: Vec::new(),
                attack_turns: BTreeMap::new(),
                revoked: false,
                last_announce_ms: None,
                heads_memo: None,
                writes: 0,
            })
            .collect();
        let setup = found(&mut nodes);
        // The nodes that took no part in the founding all start from the same state: one replica receives (checks
        // and applies) the founding envelopes, and each of them starts from a copy of it.
        let mut founded = replica_sharing(&shared);
        founded.adopt(setup.0).expect("a fresh replica adopts");
        let founded_stored = start_from(&mut founded, &setup.1);
        for node in &mut nodes {
            if node.replica.federation().is_none() {
                node.replica = founded.clone();
                node.stored = founded_stored.clone();
            } else {
                node.stored.extend(start_from(&mut node.replica, &setup.1));
            }
        }
        let network = &scenario.network;
        let links = Links {
            drop: network.drop,
            duplicate: network.duplicate,
            latency_ms: network.latency_ms,
            sides: None,
            flap: None,
        };
        let phases = vec![Phase {
            name: "start".into(),
            ..Phase::default()
        }];
        Self {
            scenario,
            seed,
            rng: StdRng::seed_from_u64(seed),
            now_ms: 0,
            nodes,
            queue: BTreeMap::new(),
            next_seq: 0,
            links,
            bad: BTreeSet::new(),
            phases,
            messages: 0,
            bytes: 0,
            rounds: 0,
            rejected: BTreeMap::new(),
            largest_divergence: 0,
            converged_since: None,
            last_disruption_ms: 0,
            counter: 0,
            policy: policy(scenario),
            shared,
            tried: Vec::new(),
            retrying: Vec::new(),
        }
    }

    /// Every node connects to `mesh_target` others at random (quietly: they start from the same state), and knows
    /// every other node as a member it may push to.
    fn form_mesh(&mut self) {
        let n = self.nodes.len();
        let everyone = Arc::new((0..n).collect::<BTreeSet<usize>>());
        for i in 0..n {
            self.nodes[i].machine.share_members(everyone.clone(), i);
        }
        for i in 0..n {
            self.fill_mesh(i, false);
        }
    }

    /// Connects node `i` to random live nodes until it has `mesh_target` connections (`pull`: both sides pull on
    /// connect, as running nodes do; the initial mesh is formed quietly).
    fn fill_mesh(&mut self, i: usize, pull: bool) {
        let n = self.nodes.len();
        let target = self.scenario.network.mesh_target.min(n.saturating_sub(1));
        let mut attempts = 0;
        while self.nodes[i].machine.connections().len() < target && attempts < target * 8 {
            attempts += 1;
            let j = self.rng.random_range(0..n);
            if j == i
                || !self.nodes[j].alive
                || self.nodes[i].machine.connections().contains(&j)
                || self.nodes[j].machine.connections().len() >= 2 * target
            {
                continue;
            }
            if pull {
                let now = self.now_ms;
                let (a, b) = (&mut self.nodes[i], j);
                a.machine.connected(b, &a.replica, now);
                let (c, d) = (&mut self.nodes[j], i);
                c.machine.connected(d, &c.replica, now);
                self.carry_out(i);
                self.carry_out(j);
            } else {
                self.nodes[i].machine.connected_quietly(j);
                self.nodes[j].machine.connected_quietly(i);
            }
        }
    }

    fn run(&mut self) {
        let mut schedule: Vec<_> = self.scenario.schedule.iter().collect();
        schedule.sort_by_key(|e| e.at_ms);
        let mut next_event = 0;
        let tick = self.scenario.tick_ms;
        let mut t = 0;
        self.form_mesh();
        while t <= self.scenario.duration_ms {
            self.now_ms = t;
            while next_event < schedule.len() && schedule[next_event].at_ms <= t {
                self.apply(&schedule[next_event].action);
                next_event += 1;
            }
            self.flap();
            if !self.retrying.is_empty() {
                self.retry_starts();
            }
            if t < self.scenario.workload.stop_at_ms {
                self.workload();
            }
            if t % MESH_INTERVAL_MS < tick {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].alive {
                        self.fill_mesh(i, true);
                    }
                }
            }
            for i in 0..self.nodes.len() {
                if !self.nodes[i].alive {
                    continue;
                }
                if self.nodes[i].attacks.is_empty() {
                    let node = &mut self.nodes[i];
                    node.machine.tick(&node.replica, t);
                    self.carry_out(i);
                } else {
                    self.hostile_announce(i);
                }
            }
            self.deliver();
            self.observe();
            t += tick;
        }
        if let Some(phase) = self.phases.last_mut() {
            phase.end_ms = self.scenario.duration_ms;
        }
    }

    /// Carries out what node `i`'s sync machine decided.
    fn carry_out(&mut self, i: usize) {
        if !self.nodes[i].machine.has_output() {
            return;
        }
        let outputs: Vec<Output<usize>> = self.nodes[i].machine.drain().collect();
        for output in outputs {
            match output {
                Output::Publish { bytes, .. } => {
                    for to in self.gossip_targets(i) {
                        self.send(i, to, Payload::Announcement(bytes.clone()));
                    }
                }
                Output::Send {
                    to,
                    kind: sync::Outbound::Pull,
                    id,
                    bytes,
                } => self.send(
                    i,
                    to,
                    Payload::Request {
                        bytes: bytes.to_vec(),
                        id,
                    },
                ),
                Output::Send {
                    to,
                    kind: sync::Outbound::Push,
                    id,
                    bytes,
                } => self.send(
                    i,
                    to,
                    Payload::Push {
                        bytes: bytes.to_vec(),
                        id,
                    },
                ),
                // The simulated transport has no gate; the honest node stops pulling from a peer that claims
                // changes it does not serve (the machine's own rule), which is what the scenarios check.
                Output::Penalize { .. } => {}
            }
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    fn disrupted(&mut self, name: String) {
        self.last_disruption_ms = self.now_ms;
        self.converged_since = None;
        if let Some(phase) = self.phases.last_mut() {
            phase.end_ms = self.now_ms;
        }
        self.phases.push(Phase {
            name,
            start_ms: self.now_ms,
            ..Phase::default()
        });
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::Threshold { node, .. }
            | Action::Allocate { node, .. }
            | Action::Register { node, .. }
            | Action::Decide { node, .. }
            | Action::Start { node, .. } => {
                if let Some(i) = self.index(node) {
                    self.scheduled_write(i, action);
                }
            }
            Action::Partition { sides } => {
                let sides: Vec<BTreeSet<usize>> = sides
                    .iter()
                    .map(|side| {
                        (0..self.nodes.len())
                            .filter(|i| {
                                side.iter().any(|s| {
                                    *s == self.nodes[*i].name || *s == self.nodes[*i].region
                                })
                            })
                            .collect()
                    })
                    .collect();
                self.links.sides = Some(sides);
                self.disrupted("partition".into());
            }
            Action::Heal => {
                let network = &self.scenario.network;
                self.links = Links {
                    drop: network.drop,
                    duplicate: network.duplicate,
                    latency_ms: network.latency_ms,
                    sides: None,
                    flap: None,
                };
                self.disrupted("heal".into());
            }
            Action::Links {
                drop,
                latency_ms,
                duplicate,
            } => {
                self.links.drop = drop.unwrap_or(self.links.drop);
                self.links.duplicate = duplicate.unwrap_or(self.links.duplicate);
                self.links.latency_ms = latency_ms.unwrap_or(self.links.latency_ms);
                self.disrupted("links".into());
            }
            Action::Flap {
                period_ms,
                until_ms,
            } => {
                self.links.flap = Some((*period_ms, *until_ms));
                self.disrupted("flapping".into());
            }
            Action::Crash { node } => {
                if let Some(i) = self.index(node) {
                    self.nodes[i].alive = false;
                    // Its connections close: every peer forgets it (and finds another at its next mesh round).
                    let peers: Vec<usize> = self.nodes[i]
                        .machine
                        .connections()
                        .iter()
                        .copied()
                        .collect();
                    for peer in peers {
                        self.nodes[peer].machine.disconnected(&i);
                    }
                    self.disrupted(format!("crash {node}"));
                }
            }
            Action::Restart { node } => {
                if let Some(i) = self.index(node) {
                    let n = self.nodes.len();
                    let replica = replica_sharing(&self.shared);
                    restart(&mut self.nodes[i], replica, self.policy.clone(), n, i);
                    self.fill_mesh(i, true);
                    self.disrupted(format!("restart {node}"));
                }
            }
            Action::Revoke { node } => {
                if let Some(i) = self.index(node) {
                    self.revoke(i);
                    self.disrupted(format!("revoke {node}"));
                }
            }
            Action::Hostile { node, attacks } => {
                if let Some(i) = self.index(node) {
                    self.nodes[i].attacks.clone_from(attacks);
                    self.disrupted(format!("hostile {node}"));
                }
            }
        }
    }

    /// A scheduled governance write on node `i`; a start with an expectation is recorded (and an expected start
    /// tried again every tick until it starts or the scenario's bound passes).
    fn scheduled_write(&mut self, i: usize, action: &Action) {
        let by = self.nodes[i].key.public().to_hex();
        let Some((_, write)) = action.scheduled_write(&by, self.now_ms as i64) else {
            return;
        };
        let wrote = self.write_planned(i, &write);
        let (Some(expect), Action::Start { experiment, .. }) = (action.expectation(), action)
        else {
            return;
        };
        self.tried.push(Tried {
            node: self.nodes[i].name.clone(),
            experiment: experiment.clone(),
            at_ms: self.now_ms,
            expect,
            started_at_ms: wrote.then_some(self.now_ms),
            refusal: (!wrote).then(|| self.refusal(i, experiment)),
        });
        if !wrote && expect == Expect::Started {
            let until = self.now_ms + self.scenario.converge_within_ms;
            self.retrying.push((self.tried.len() - 1, i, write, until));
        }
    }

    /// Tries the expected starts again (the approval they wait for may have arrived).
    fn retry_starts(&mut self) {
        let now = self.now_ms;
        for (tried, i, write, until) in std::mem::take(&mut self.retrying) {
            if !self.nodes[i].alive || now > until {
                continue;
            }
            let write = match write {
                Write::StartExperiment { key, .. } => Write::StartExperiment {
                    key,
                    at_ms: now as i64,
                },
                other => other,
            };
            if self.write_planned(i, &write) {
                self.tried[tried].started_at_ms = Some(now);
                self.tried[tried].refusal = None;
            } else {
                if let Write::StartExperiment { key, .. } = &write {
                    self.tried[tried].refusal = Some(self.refusal(i, key));
                }
                self.retrying.push((tried, i, write, until));
            }
        }
    }

    /// Why node `i`'s governance refuses to start `key` now.
    fn refusal(&self, i: usize, key: &str) -> String {
        match governance::try_start(&self.nodes[i].replica.view(), key, self.now_ms as i64) {
            Ok(_) => "the write was refused".into(),
            Err(refusal) => format!("{}: {}", refusal.reason, refusal.detail),
        }
    }

    /// Writes a planned write on node `i` from its own view; whether a change was written.
    fn write_planned(&mut self, i: usize, write: &Write) -> bool {
        let node = &self.nodes[i];
        match write.op(|| node.replica.view()) {
            Some(op) => self.write(i, &op),
            None => false,
        }
    }

    fn revoke(&mut self, target: usize) {
        let Some(council) = self
            .nodes
            .iter()
            .position(|n| n.alive && n.role == Role::Council && !n.observer)
        else {
            return;
        };
        let revocation = Write::Revoke {
            public_key: self.nodes[target].key.public().to_hex(),
            by: self.nodes[council].key.public().to_hex(),
            at_ms: self.now_ms as i64,
        };
        let op = revocation
            .op(|| self.nodes[council].replica.view())
            .expect("a revocation needs no view");
        self.write(council, &op);
        self.nodes[target].revoked = true;
    }

    fn flap(&mut self) {
        if let Some((period, until)) = self.links.flap
            && self.now_ms >= until
        {
            self.links.flap = None;
            self.links.sides = None;
            self.disrupted("flapping ends".into());
            let _ = period;
        }
    }

    /// Whether a message from `a` can reach `b` now.
    fn reachable(&self, a: usize, b: usize) -> bool {
        if !self.nodes[b].alive {
            return false;
        }
        if let Some((period, _)) = self.links.flap {
            let down = (self.now_ms / period.max(1)) % 2 == 1;
            if down && (a % 2) != (b % 2) {
                return false;
            }
        }
        match &self.links.sides {
            Some(sides) => {
                sides
                    .iter()
                    .any(|side| side.contains(&a) == side.contains(&b) && side.contains(&a))
                    || !sides.iter().any(|s| s.contains(&a) || s.contains(&b))
            }
            None => true,
        }
    }

    fn send(&mut self, from: usize, to: usize, payload: Payload) {
        let len = payload.len() as u64;
        self.messages += 1;
        self.bytes += len;
        if let Some(phase) = self.phases.last_mut() {
            phase.messages += 1;
            phase.bytes += len;
        }
        if self.rng.random_bool(self.links.drop) {
            return;
        }
        let [low, high] = self.links.latency_ms;
        let duplicate = self.rng.random_bool(self.links.duplicate);
        let copy = duplicate.then(|| payload.copy());
        for payload in std::iter::once(payload).chain(copy) {
            let at = self.now_ms + self.rng.random_range(low..=high);
            self.queue
                .insert((at, self.next_seq), Message { from, to, payload });
            self.next_seq += 1;
        }
    }

    fn workload(&mut self) {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if !node.alive || !node.writer() {
                continue;
            }
            if !self
                .rng
                .random_bool(self.scenario.workload.write_probability)
            {
                continue;
            }
            let op = self.next_op(i);
            if let Some(op) = op {
                self.write(i, &op);
            }
        }
    }

    fn next_op(&mut self, i: usize) -> Option<Op> {
        self.counter += 1;
        let node = &self.nodes[i];
        let key = node.key.public().to_hex();
        let writer = workload::Writer {
            name: &node.name,
            key: &key,
            region: &node.region,
            role: node.role,
        };
        let planned = workload::plan(
            &mut self.rng,
            self.counter,
            writer,
            self.scenario.workload.conflicts,
            self.now_ms as i64,
        );
        planned.op(|| node.replica.view())
    }

    /// Writes `op` as node `i`; whether it wrote a change it holds.
    fn write(&mut self, i: usize, op: &Op) -> bool {
        let now = self.now_ms as i64;
        let node = &mut self.nodes[i];
        match node.replica.write(&node.key, op, now) {
            Ok(envelope) => {
                node.stored.insert(envelope.hash(), envelope.clone());
                node.machine.written([envelope]);
                node.writes += 1;
                return true;
            }
            Err(registry::Error::NotAllowed { .. }) if node.revoked => {
                // It saw its revocation and writes anyway (a misbehaving node): craft the change and serve it.
                let doc = DocId::Pod(node.region.clone());
                if let Ok(envelope) = node.replica.craft(&node.key, &doc, op, now) {
                    self.bad.insert(envelope.hash());
                    node.machine.written([envelope]);
                }
            }
            Err(error) => tracing::debug!(node = %node.name, %error, "write refused"),
        }
        false
    }

    /// A hostile node gossips every announce interval: garbage, or a head nobody has, so honest nodes pull from it
    /// and meet its attacks.
    fn hostile_announce(&mut self, i: usize) {
        let interval = self.scenario.network.announce_interval_ms;
        let node = &self.nodes[i];
        if node
            .last_announce_ms
            .is_some_and(|last| self.now_ms.saturating_sub(last) < interval)
        {
            return;
        }
        let Some(mut announcement) = node.replica.announcement() else {
            return;
        };
        let bytes = if node.attacks.iter().any(|a| a == "garbage") && self.rng.random_bool(0.5) {
            crate::attack::garbage(&mut self.rng, 64)
        } else {
            let fake = ChangeHash(self.rng.random());
            announcement.heads = vec![fake];
            announcement.digest = sync::heads_digest(&announcement.heads);
            announcement.encode()
        };
        self.nodes[i].last_announce_ms = Some(self.now_ms);
        for to in self.gossip_targets(i) {
            self.send(i, to, Payload::Announcement(bytes.clone()));
        }
    }

    fn gossip_targets(&mut self, from: usize) -> Vec<usize> {
        let n = self.nodes.len();
        let fanout = self.scenario.network.fanout.min(n.saturating_sub(1));
        let mut targets = BTreeSet::new();
        let mut attempts = 0;
        while targets.len() < fanout && attempts < fanout * 8 {
            attempts += 1;
            let to = self.rng.random_range(0..n);
            if to != from {
                targets.insert(to);
            }
        }
        targets.into_iter().collect()
    }

    fn deliver(&mut self) {
        while let Some((&key, _)) = self.queue.first_key_value() {
            if key.0 > self.now_ms {
                break;
            }
            let message = self.queue.remove(&key).expect("just seen");
            if !self.reachable(message.from, message.to) {
                continue;
            }
            let (from, to) = (message.from, message.to);
            match message.payload {
                Payload::Announcement(bytes) => self.on_announcement(from, to, &bytes),
                Payload::Request { bytes, id } => self.on_request(from, to, &bytes, id),
                Payload::Response { bytes, id } => self.on_response(from, to, &bytes, id),
                Payload::Push { bytes, id } => self.on_push(from, to, &bytes, id),
                Payload::PushAck { id } => {
                    let now = self.now_ms;
                    self.nodes[to].machine.on_push_answer(from, id, now);
                }
            }
            self.carry_out(to);
        }
    }

    fn reject(&mut self, reason: &str, count: u64) {
        *self.rejected.entry(reason.to_owned()).or_default() += count;
        if let Some(phase) = self.phases.last_mut() {
            *phase.rejected.entry(reason.to_owned()).or_default() += count;
        }
    }

    fn on_announcement(&mut self, from: usize, to: usize, bytes: &[u8]) {
        if !self.nodes[to].attacks.is_empty() {
            return;
        }
        if sync::Announcement::decode(bytes).is_err() {
            self.reject("malformed_message", 1);
        }
        let now = self.now_ms;
        let node = &mut self.nodes[to];
        node.machine
            .on_announcement(from, bytes, &node.replica, now);
    }

    fn on_request(&mut self, from: usize, to: usize, bytes: &[u8], id: u64) {
        if !self.nodes[to].attacks.is_empty() {
            let answer = self.attack(to, from, bytes);
            return self.send(to, from, Payload::Response { bytes: answer, id });
        }
        if sync::Request::decode(bytes).is_err() {
            self.reject("malformed_message", 1);
        }
        let node = &mut self.nodes[to];
        let answer = node
            .machine
            .on_request(from, bytes, &node.replica, &node.stored);
        self.send(to, from, Payload::Response { bytes: answer, id });
    }

    /// Feeds envelopes from a peer to node `i`'s replica and store; counts rejections.
    fn absorb(&mut self, i: usize, envelopes: Vec<Envelope>) -> Absorbed {
        let node = &mut self.nodes[i];
        let receipt = match node.replica.receive(envelopes) {
            Ok(receipt) => receipt,
            Err(_) => return Absorbed::default(),
        };
        for envelope in receipt.to_keep().chain(&receipt.pending_added) {
            node.stored.insert(envelope.hash(), envelope.clone());
        }
        let absorbed = Absorbed::from(&receipt);
        for rejection in &receipt.rejected {
            self.reject(rejection.reason.code(), 1);
        }
        absorbed
    }

    fn on_response(&mut self, from: usize, to: usize, bytes: &[u8], id: u64) {
        let now = self.now_ms;
        if bytes.len() > self.scenario.network.max_message_bytes {
            let node = &mut self.nodes[to];
            node.machine
                .on_failure(from, sync::Outbound::Pull, id, &node.replica, now);
            return self.reject("oversized_message", 1);
        }
        let node = &mut self.nodes[to];
        let Some(answer) = node.machine.read_answer(from, bytes, &node.replica, now) else {
            if sync::read_error(bytes).is_none() {
                self.reject("malformed_message", 1);
            }
            return;
        };
        self.rounds += 1;
        if let Some(phase) = self.phases.last_mut() {
            phase.rounds += 1;
        }
        let envelopes = match &answer {
            Answer::Current(response) | Answer::Late(response) => response.envelopes.clone(),
        };
        let absorbed = self.absorb(to, envelopes);
        let node = &mut self.nodes[to];
        node.machine
            .after_answer(from, &answer, absorbed, &node.replica, now);
    }

    fn on_push(&mut self, from: usize, to: usize, bytes: &[u8], id: u64) {
        if !self.nodes[to].attacks.is_empty() {
            return;
        }
        let now = self.now_ms;
        let push = match self.nodes[to].machine.read_push(from, bytes) {
            Ok(push) => push,
            Err(_) => {
                self.reject("malformed_message", 1);
                return self.send(to, from, Payload::PushAck { id });
            }
        };
        let absorbed = self.absorb(to, push.response.envelopes.clone());
        let node = &mut self.nodes[to];
        node.machine
            .after_push(from, &push, absorbed, &node.replica, now);
        self.send(to, from, Payload::PushAck { id });
    }

    /// A hostile node's answer to a pull: the next attack in its list.
    fn attack(&mut self, i: usize, from: usize, request: &[u8]) -> Vec<u8> {
        let node = &mut self.nodes[i];
        let turn = node.attack_turns.entry(from).or_default();
        let attack = node.attacks[*turn % node.attacks.len()].clone();
        *turn += 1;
        let _ = request;
        self.counter += 1;
        let held: Vec<Envelope> = node.stored.values().cloned().collect();
        let attacker = crate::attack::Attacker {
            replica: &node.replica,
            key: &node.key,
            region: &node.region,
            held: &held,
            turn: self.counter,
            now_ms: self.now_ms as i64,
            max_message_bytes: self.scenario.network.max_message_bytes,
        };
        let answer = attacker.answer(&attack, &mut self.rng);
        self.bad.extend(answer.bad);
        answer.bytes
    }

    /// Tracks divergence and convergence of the honest live nodes.
    fn observe(&mut self) {
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive && self.nodes[*i].honest())
            .collect();
        let counts: Vec<u64> = honest
            .iter()
            .map(|i| self.nodes[*i].replica.len() as u64)
            .collect();
        let spread =
            counts.iter().max().copied().unwrap_or(0) - counts.iter().min().copied().unwrap_or(0);
        self.largest_divergence = self.largest_divergence.max(spread);
        if let Some(phase) = self.phases.last_mut() {
            phase.max_divergence = phase.max_divergence.max(spread);
        }
        let equal = spread == 0 && {
            let first = honest
                .first()
                .map(|i| memo_heads(&mut self.nodes[*i]).to_vec());
            honest
                .iter()
                .skip(1)
                .all(|i| Some(memo_heads(&mut self.nodes[*i])) == first.as_deref())
        };
        let quiet = self.now_ms
            >= self
                .scenario
                .workload
                .stop_at_ms
                .min(self.scenario.duration_ms);
        if equal {
            if let Some(phase) = self.phases.last_mut()
                && phase.converged_at_ms.is_none()
            {
                phase.converged_at_ms = Some(self.now_ms);
            }
            if self.converged_since.is_none()
                && (quiet || self.scenario.workload.write_probability == 0.0)
            {
                self.converged_since = Some(self.now_ms);
            }
        } else {
            self.converged_since = None;
        }
    }

    fn report(&self, replay: String) -> Report {
        let honest: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|n| n.alive && n.honest())
            .collect();
        let quiet_from = self.last_disruption_ms.max(
            self.scenario
                .workload
                .stop_at_ms
                .min(self.scenario.duration_ms),
        );
        let converged = self.converged_since.is_some();
        let convergence_ms = self
            .converged_since
            .map(|since| since.saturating_sub(quiet_from));
        let mut invariants = Vec::new();
        let within = convergence_ms.is_some_and(|ms| ms <= self.scenario.converge_within_ms);
        invariants.push(Invariant {
            name: "honest nodes converge".into(),
            ok: converged && within,
            detail: match convergence_ms {
                Some(ms) => format!(
                    "{} honest nodes identical {ms} ms after the last disruption (bound {} ms)",
                    honest.len(),
                    self.scenario.converge_within_ms
                ),
                None => format!(
                    "{} honest nodes never all showed identical heads after the last disruption",
                    honest.len()
                ),
            },
        });
        let all: BTreeSet<ChangeHash> = self
            .nodes
            .iter()
            .filter(|n| n.honest())
            .flat_map(|n| n.stored.keys().filter(|h| n.replica.contains(h)).copied())
            .collect();
        let lost: Vec<String> = honest
            .iter()
            .filter_map(|n| {
                let missing: Vec<&ChangeHash> =
                    all.iter().filter(|h| !n.replica.contains(h)).collect();
                let first = missing.first()?;
                // Why the first one is missing: held waiting, refused (and why), or never received.
                let why = if n.replica.is_pending(first) {
                    // Follow waiting changes down to the dependencies this node neither holds nor waits on.
                    let mut roots: BTreeSet<ChangeHash> = BTreeSet::new();
                    let mut queue = vec![**first];
                    let mut seen: BTreeSet<ChangeHash> = BTreeSet::new();
                    while let Some(h) = queue.pop() {
                        if !seen.insert(h) {
                            continue;
                        }
                        match n.replica.pending_envelopes().find(|e| e.hash() == h) {
                            Some(e) => queue.extend(
                                e.change
                                    .deps()
                                    .iter()
                                    .chain(&e.auth_heads)
                                    .filter(|d| !n.replica.holds(d)),
                            ),
                            None => {
                                roots.insert(h);
                            }
                        }
                    }
                    let lacking: Vec<String> = roots
                        .into_iter()
                        .map(|d| {
                            let elsewhere: Vec<&str> = honest
                                .iter()
                                .filter(|o| o.replica.holds(&d))
                                .map(|o| o.name.as_str())
                                .collect();
                            let stored: Vec<&str> = honest
                                .iter()
                                .filter(|o| o.stored.contains_key(&d))
                                .map(|o| o.name.as_str())
                                .collect();
                            format!(
                                "{} (here: pending {}, refused {:?}) held by [{}] stored by [{}]",
                                &d.to_string()[..12],
                                n.replica.is_pending(&d),
                                n.replica.rejection(&d),
                                elsewhere.join(","),
                                stored.join(",")
                            )
                        })
                        .collect();
                    let stuck = n
                        .replica
                        .pending_envelopes()
                        .find(|e| e.hash() == **first)
                        .map(|e| {
                            format!(
                                "{} seq {} by {} with {} deps, {} auth heads",
                                e.doc,
                                e.change.seq(),
                                &hex::encode(e.actor().key)[..8],
                                e.change.deps().len(),
                                e.auth_heads.len()
                            )
                        })
                        .unwrap_or_default();
                    format!(
                        "{stuck}, parked on {:?}, lacking [{}]",
                        n.replica.waits_for(first),
                        lacking.join("; ")
                    )
                } else if let Some(reason) = n.replica.rejection(first) {
                    format!("refused: {reason}")
                } else {
                    "never received".to_owned()
                };
                Some(format!(
                    "{} lacks {} (e.g. {}: {why})",
                    n.name,
                    missing.len(),
                    &first.to_string()[..12]
                ))
            })
            .collect();
        invariants.push(Invariant {
            name: "no accepted change is lost".into(),
            ok: lost.is_empty(),
            detail: if lost.is_empty() {
                format!(
                    "all {} accepted changes are on every honest node",
                    all.len()
                )
            } else {
                lost.join("; ")
            },
        });
        let applied: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.honest())
            .flat_map(|n| {
                self.bad
                    .iter()
                    .filter(|h| n.replica.contains(h))
                    .map(move |h| format!("{} applied {}", n.name, &h.to_string()[..12]))
            })
            .collect();
        invariants.push(Invariant {
            name: "no forged or unauthorized change is applied".into(),
            ok: applied.is_empty(),
            detail: if applied.is_empty() {
                format!("{} crafted changes refused everywhere", self.bad.len())
            } else {
                applied.join("; ")
            },
        });
        invariants.extend(governance_invariants(&honest));
        invariants.extend(crate::scheduled::invariant(&self.tried));
        invariants.push(Invariant {
            name: "no node panics".into(),
            ok: true,
            detail: "the run completed".into(),
        });
        Report {
            scenario: self.scenario.name.clone(),
            mode: "deterministic".into(),
            seed: self.seed,
            nodes: self.nodes.len(),
            converged,
            convergence_ms,
            simulated_ms: self.scenario.duration_ms,
            messages: self.messages,
            bytes: self.bytes,
            rounds: self.rounds,
            changes: honest.first().map_or(0, |n| n.replica.len() as u64),
            rejected: self.rejected.clone(),
            largest_divergence: self.largest_divergence,
            phases: self.phases.clone(),
            invariants,
            replay,
            notes: Vec::new(),
        }
    }
}

/// The node's heads, computed again only when it has accepted changes since the last call.
fn memo_heads(node: &mut SimNode) -> &[ChangeHash] {
    let len = node.replica.held_len();
    if node.heads_memo.as_ref().is_none_or(|(at, _)| *at != len) {
        node.heads_memo = Some((len, node.replica.heads()));
    }
    &node.heads_memo.as_ref().expect("just set").1
}

/// Feeds the founding envelopes to a federated replica; returns what its store keeps of them.
fn start_from(replica: &mut Replica, setup: &[Envelope]) -> BTreeMap<ChangeHash, Envelope> {
    let receipt = replica.receive(setup.to_vec()).expect("federated");
    let mut stored: BTreeMap<ChangeHash, Envelope> = receipt
        .to_keep()
        .map(|envelope| (envelope.hash(), envelope.clone()))
        .collect();
    for envelope in setup {
        if replica.contains(&envelope.hash()) {
            stored.insert(envelope.hash(), envelope.clone());
        }
    }
    stored
}

/// A fresh replica that shares the run's signature results and documents.
fn replica_sharing(shared: &Shared) -> Replica {
    let mut replica = Replica::new();
    replica.share_signature_cache(Arc::clone(&shared.signatures));
    replica.share_document_cache(Arc::clone(&shared.documents));
    replica
}

/// Reopens a node from what it persisted: `replica` (fresh) fed its stored envelopes, as a restarted node loads its
/// store, and a fresh sync machine with no connections.
fn restart(node: &mut SimNode, mut replica: Replica, policy: Policy, nodes: usize, me: usize) {
    let federation = node.replica.federation();
    if let Some(federation) = federation {
        let _ = replica.adopt(federation);
        let _ = replica.receive(node.stored.values().cloned().collect());
    }
    node.replica = replica;
    node.machine = SyncMachine::new(policy);
    node.machine
        .share_members(Arc::new((0..nodes).collect()), me);
    node.alive = true;
    node.last_announce_ms = None;
    node.heads_memo = None;
}

/// The sync policy of a scenario's nodes: its announce interval, the node's defaults otherwise.
fn policy(scenario: &Scenario) -> Policy {
    Policy {
        announce_interval_ms: scenario.network.announce_interval_ms,
        ..Policy::default()
    }
}

/// How often a node whose mesh lost peers connects to others.
const MESH_INTERVAL_MS: u64 = 1_000;

/// Governance on the honest nodes, derived once per distinct set of heads (governance is a function of the
/// registry, so equal heads show equal decisions): no experiment runs without the approvals it needs, no pod's
/// spend exceeds its funds, and every honest node shows the same governance.
fn governance_invariants(honest: &[&SimNode]) -> Vec<Invariant> {
    let mut by_heads: BTreeMap<Vec<ChangeHash>, (&str, governance::Governance)> = BTreeMap::new();
    for node in honest {
        by_heads.entry(node.replica.heads()).or_insert_with(|| {
            (
                &node.name,
                governance::Governance::derive(&node.replica.view()),
            )
        });
    }
    let mut unapproved = Vec::new();
    let mut overspent = Vec::new();
    let (mut running, mut waiting, mut blocked) = (0, 0, 0);
    for (name, g) in by_heads.values() {
        for state in g.experiments.values() {
            let started = matches!(
                state.stage,
                governance::Stage::Running
                    | governance::Stage::Stopped
                    | governance::Stage::Concluded
            );
            if started
                && state.approval.required > 0
                && state.approval.decision != Some(model::Decision::Approved)
            {
                unapproved.push(format!("{name}: {} runs without its approvals", state.key));
            }
            running += usize::from(state.stage == governance::Stage::Running);
            waiting += usize::from(state.stage == governance::Stage::AwaitingApproval);
            blocked += usize::from(state.stage == governance::Stage::Blocked);
        }
        for row in &g.budgets {
            if row.spent > row.allocated + row.rolled_over + row.bonus + 1e-6 || row.remaining < 0.0
            {
                overspent.push(format!(
                    "{name}: pod {} spent {} of {} in {}",
                    row.pod,
                    row.spent,
                    row.allocated + row.rolled_over + row.bonus,
                    row.quarter
                ));
            }
        }
    }
    let distinct: BTreeSet<String> = by_heads
        .values()
        .map(|(_, g)| serde_json::to_string(g).unwrap_or_default())
        .collect();
    vec![
        Invariant {
            name: "no experiment runs without its approvals".into(),
            ok: unapproved.is_empty(),
            detail: if unapproved.is_empty() {
                format!("{running} running, {waiting} awaiting approval, {blocked} blocked starts")
            } else {
                unapproved.join("; ")
            },
        },
        Invariant {
            name: "no pod spends more than its funds".into(),
            ok: overspent.is_empty(),
            detail: if overspent.is_empty() {
                let spent: f64 = by_heads
                    .values()
                    .next()
                    .map_or(0.0, |(_, g)| g.budgets.iter().map(|b| b.spent).sum());
                format!("{spent} spent within the pods' funds")
            } else {
                overspent.join("; ")
            },
        },
        Invariant {
            name: "every honest node shows the same governance".into(),
            ok: distinct.len() <= 1,
            detail: format!(
                "{} distinct governance states over {} distinct head sets",
                distinct.len(),
                by_heads.len()
            ),
        },
    ]
}

/// Genesis by the first council node, membership for every member node, an objective and one key result per region
/// with pods. Returns the federation and the envelopes every node starts with.
fn found(nodes: &mut [SimNode]) -> (registry::FederationId, Vec<Envelope>) {
    let founder = nodes
        .iter()
        .position(|n| n.role == Role::Council && !n.observer)
        .expect("validated: a council node exists");
    let pods: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.role == Role::Pod && !n.observer)
        .map(|n| n.region.clone())
        .collect();
    let member = |n: &SimNode| model::Member {
        public_key: n.key.public().to_hex(),
        name: n.name.clone(),
        role: n.role,
        scope: matches!(n.role, Role::Pod | Role::Partner).then(|| n.region.clone()),
        admitted_by: String::new(),
        admitted_at_ms: 0,
        revoked: false,
    };
    let mut envelopes = Vec::new();
    let genesis = Op::Genesis {
        name: "simulated federation".into(),
        founder: member(&nodes[founder]),
    };
    let founder_node = &mut nodes[founder];
    envelopes.push(
        founder_node
            .replica
            .write(&founder_node.key, &genesis, 0)
            .expect("genesis"),
    );
    let members: Vec<model::Member> = nodes
        .iter()
        .enumerate()
        .filter(|(i, n)| *i != founder && !n.observer)
        .map(|(_, n)| member(n))
        .collect();
    let founder_node = &mut nodes[founder];
    for m in members {
        envelopes.push(
            founder_node
                .replica
                .write(&founder_node.key, &Op::AddMember(m), 0)
                .expect("admit"),
        );
    }
    envelopes.push(
        founder_node
            .replica
            .write(
                &founder_node.key,
                &Op::AddObjective(workload::main_objective()),
                0,
            )
            .expect("objective"),
    );
    for pod in pods {
        envelopes.push(
            founder_node
                .replica
                .write(
                    &founder_node.key,
                    &Op::AllocateBudget(workload::budget(&pod)),
                    0,
                )
                .expect("budget"),
        );
    }
    let federation = founder_node.replica.federation().expect("founded");
    let mut regions_done = BTreeSet::new();
    for node in nodes.iter_mut() {
        if node.role != Role::Pod || node.observer || !regions_done.insert(node.region.clone()) {
            continue;
        }
        node.replica.adopt(federation).expect("adopt");
        node.replica.receive(envelopes.clone()).expect("federated");
        envelopes.push(
            node.replica
                .write(
                    &node.key,
                    &Op::AddKeyResult(workload::key_result(&node.region)),
                    0,
                )
                .expect("key result"),
        );
    }
    (federation, envelopes)
}
