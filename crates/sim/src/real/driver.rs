//! Real mode's driver: walks the scenario's schedule on the scaled wall clock, plans the workload, turns faults into
//! block sets, stopped daemons, council writes and hostile clients, and watches the nodes' heads and counters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use registry::ChangeHash;

use super::cluster::{self, Cluster, Daemon, Probe, Writes};
use super::hostile::{self, Hostile};
use super::{RealError, scaled, unix_ms, verdict};
use crate::report::{Phase, Report};
use crate::scenario::{Action, Expect, Scenario};
use crate::scheduled::Tried;
use crate::workload::{self, Write};

/// How often the driver reads every node's heads and counters.
const OBSERVE_INTERVAL: Duration = Duration::from_millis(100);
/// Mixed into the seed for a hostile node's own generator ("hostile" in ASCII), so its fake heads and garbage do
/// not repeat the workload's draws.
const HOSTILE_SEED_SALT: u64 = 0x0068_6f73_7469_6c65;

/// How a node runs now.
enum Running {
    Daemon(Daemon),
    Hostile(Hostile),
    Stopped,
}

/// Counters of one node: what earlier runs of it (before a crash) reported, and what the current run reports.
#[derive(Clone, Debug, Default)]
struct Counters {
    messages: u64,
    bytes: u64,
    rounds: u64,
    penalties: u64,
    rejected: BTreeMap<String, u64>,
}

impl Counters {
    fn of(probe: &Probe) -> Self {
        Self {
            messages: probe.requests_served + probe.network.round_trips,
            bytes: probe.network.sync_bytes_out,
            rounds: probe.network.round_trips,
            penalties: probe.penalties,
            rejected: probe.network.rejections.clone(),
        }
    }

    fn add(&mut self, other: &Counters) {
        self.messages += other.messages;
        self.bytes += other.bytes;
        self.rounds += other.rounds;
        self.penalties += other.penalties;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
    }

    fn minus(&self, earlier: &Counters) -> Counters {
        let mut rejected = BTreeMap::new();
        for (reason, n) in &self.rejected {
            let d = n.saturating_sub(earlier.rejected.get(reason).copied().unwrap_or(0));
            if d > 0 {
                rejected.insert(reason.clone(), d);
            }
        }
        Counters {
            messages: self.messages.saturating_sub(earlier.messages),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            rounds: self.rounds.saturating_sub(earlier.rounds),
            penalties: self.penalties.saturating_sub(earlier.penalties),
            rejected,
        }
    }
}

struct NodeState {
    running: Running,
    revoked: bool,
    hostile: bool,
    banked: Counters,
    current: Counters,
    /// What the node's writers did (in every run of it).
    writes: Writes,
}

impl NodeState {
    fn honest(&self) -> bool {
        !self.hostile && !self.revoked
    }

    fn daemon(&self) -> Option<&Daemon> {
        match &self.running {
            Running::Daemon(daemon) => Some(daemon),
            _ => None,
        }
    }
}

pub(super) struct Driver<'a> {
    scenario: &'a Scenario,
    seed: u64,
    scale: f64,
    rng: StdRng,
    cluster: Cluster,
    nodes: Vec<NodeState>,
    started: Instant,
    sides: Option<Vec<BTreeSet<usize>>>,
    flap: Option<(u64, u64)>,
    flap_down: bool,
    /// The block set last sent to each node.
    blocked: Vec<Option<BTreeSet<usize>>>,
    phases: Vec<Phase>,
    phase_start: Counters,
    converged_since_ms: Option<u64>,
    last_disruption_ms: u64,
    quiet_from_ms: Option<u64>,
    largest_divergence: u64,
    /// The run's running write number (record ids), as in deterministic mode.
    counter: u64,
    bad: BTreeSet<ChangeHash>,
    notes: Vec<String>,
    problems: Vec<String>,
    lag_ms: u64,
    /// Scheduled starts with an expectation, and what came of them.
    tried: Vec<Tried>,
}

impl<'a> Driver<'a> {
    pub(super) fn new(scenario: &'a Scenario, seed: u64, scale: f64, cluster: Cluster) -> Self {
        let n = cluster.members.len();
        let mut notes = vec![format!(
            "real mode: {n} daemons on 127.0.0.1 in one process; scenario times x {scale} on the wall clock \
             (phase and convergence times are wall ms); announce interval {} ms",
            cluster.settings.announce_interval_ms
        )];
        let network = &scenario.network;
        if network.drop > 0.0 || network.duplicate > 0.0 || network.latency_ms != [0, 0] {
            notes.push(format!(
                "[network] latency {:?} ms, drop {}, duplicate {} not applied: loopback TCP delivers in order, \
                 without loss or delay",
                network.latency_ms, network.drop, network.duplicate
            ));
        }
        Self {
            scenario,
            seed,
            scale,
            // The same generator as deterministic mode; only the workload draws from it here.
            rng: StdRng::seed_from_u64(seed),
            cluster,
            nodes: (0..n)
                .map(|_| NodeState {
                    running: Running::Stopped,
                    revoked: false,
                    hostile: false,
                    banked: Counters::default(),
                    current: Counters::default(),
                    writes: Writes::default(),
                })
                .collect(),
            started: Instant::now(),
            sides: None,
            flap: None,
            flap_down: false,
            blocked: vec![None; n],
            phases: vec![Phase {
                name: "start".into(),
                ..Phase::default()
            }],
            phase_start: Counters::default(),
            converged_since_ms: None,
            last_disruption_ms: 0,
            quiet_from_ms: None,
            largest_divergence: 0,
            counter: 0,
            bad: BTreeSet::new(),
            notes,
            problems: Vec::new(),
            lag_ms: 0,
            tried: Vec::new(),
        }
    }

    pub(super) fn start_all(&mut self) -> Result<(), RealError> {
        for i in 0..self.nodes.len() {
            let daemon = self.cluster.start(i)?;
            self.nodes[i].running = Running::Daemon(daemon);
        }
        self.started = Instant::now();
        Ok(())
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub(super) fn run(&mut self) {
        let mut schedule: Vec<_> = self.scenario.schedule.iter().collect();
        schedule.sort_by_key(|e| e.at_ms);
        let mut next_event = 0;
        let tick = self.scenario.tick_ms;
        let quiet_at = self
            .scenario
            .workload
            .stop_at_ms
            .min(self.scenario.duration_ms);
        let mut next_observe = Instant::now();
        let mut t = 0;
        while t <= self.scenario.duration_ms {
            self.wait_for(t);
            while next_event < schedule.len() && schedule[next_event].at_ms <= t {
                self.apply(&schedule[next_event].action, schedule[next_event].at_ms);
                next_event += 1;
            }
            self.flap(t);
            if t < self.scenario.workload.stop_at_ms {
                self.workload();
            }
            if t >= quiet_at && self.quiet_from_ms.is_none() {
                self.flush_writes();
                self.quiet_from_ms = Some(self.elapsed_ms());
            }
            if Instant::now() >= next_observe {
                self.observe();
                next_observe = Instant::now() + OBSERVE_INTERVAL;
            }
            t += tick;
        }
        self.observe();
        self.settle();
        let end = self.elapsed_ms();
        if let Some(phase) = self.phases.last_mut() {
            phase.end_ms = end;
        }
    }

    /// Waits until every write queued so far is done (the workload's end is when the nodes stop writing, not when
    /// the driver stops planning).
    fn flush_writes(&mut self) {
        let answers: Vec<_> = self
            .nodes
            .iter()
            .filter_map(|n| n.daemon().map(Daemon::flush))
            .collect();
        for answer in answers {
            let _ = answer.recv();
        }
    }

    /// When the driver fell behind, the scenario's duration may be over before the nodes had the convergence bound
    /// to agree in: keep watching until they agree or the bound has passed since the last disruption and the last
    /// write.
    fn settle(&mut self) {
        let from = self
            .last_disruption_ms
            .max(self.quiet_from_ms.unwrap_or_default());
        let until = from + scaled(self.scenario.converge_within_ms, self.scale);
        let mut extended = false;
        while self.converged_since_ms.is_none() && self.elapsed_ms() < until {
            extended = true;
            std::thread::sleep(OBSERVE_INTERVAL);
            self.observe();
        }
        if extended {
            self.notes.push(format!(
                "the run was extended to {} ms so that the nodes had the convergence bound after the last write",
                self.elapsed_ms()
            ));
        }
    }

    /// Sleeps until scenario time `t` on the scaled wall clock; notes how far behind the driver ran.
    fn wait_for(&mut self, t: u64) {
        let due = self.started + Duration::from_millis(scaled(t, self.scale));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            self.lag_ms = self.lag_ms.max((now - due).as_millis() as u64);
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.cluster.members.iter().position(|m| m.name == name)
    }

    fn disrupted(&mut self, name: String) {
        self.observe();
        let now = self.elapsed_ms();
        self.last_disruption_ms = now;
        self.converged_since_ms = None;
        let totals = self.totals();
        let delta = totals.minus(&self.phase_start);
        if let Some(phase) = self.phases.last_mut() {
            phase.end_ms = now;
            phase.messages = delta.messages;
            phase.bytes = delta.bytes;
            phase.rounds = delta.rounds;
            phase.rejected = delta.rejected;
        }
        self.phase_start = totals;
        self.phases.push(Phase {
            name,
            start_ms: now,
            ..Phase::default()
        });
    }

    fn apply(&mut self, action: &Action, at_ms: u64) {
        match action {
            Action::Threshold { node, .. }
            | Action::Allocate { node, .. }
            | Action::Register { node, .. }
            | Action::Decide { node, .. }
            | Action::Start { node, .. } => {
                if let Some(i) = self.index(node) {
                    self.scheduled_write(i, action, at_ms);
                }
            }
            Action::Partition { sides } => {
                let groups: Vec<BTreeSet<usize>> = sides
                    .iter()
                    .map(|side| {
                        (0..self.nodes.len())
                            .filter(|i| {
                                let member = &self.cluster.members[*i];
                                side.iter()
                                    .any(|s| *s == member.name || *s == member.region)
                            })
                            .collect()
                    })
                    .collect();
                self.disrupted("partition".into());
                self.sides = Some(groups);
                self.push_blocks();
            }
            Action::Heal => {
                self.disrupted("heal".into());
                self.sides = None;
                self.flap = None;
                self.flap_down = false;
                self.push_blocks();
            }
            Action::Links { .. } => {
                self.disrupted("links".into());
                self.notes.push(format!(
                    "links at {} ms: not applied (loopback TCP has no loss, delay or duplication to change)",
                    self.phases.last().map_or(0, |p| p.start_ms)
                ));
            }
            Action::Flap {
                period_ms,
                until_ms,
            } => {
                self.disrupted("flapping".into());
                self.flap = Some((*period_ms, *until_ms));
            }
            Action::Crash { node } => {
                if let Some(i) = self.index(node) {
                    self.disrupted(format!("crash {node}"));
                    self.crash(i);
                }
            }
            Action::Restart { node } => {
                if let Some(i) = self.index(node) {
                    self.disrupted(format!("restart {node}"));
                    self.restart(i);
                }
            }
            Action::Revoke { node } => {
                if let Some(i) = self.index(node) {
                    self.disrupted(format!("revoke {node}"));
                    self.revoke(i);
                }
            }
            Action::Hostile { node, attacks } => {
                if let Some(i) = self.index(node) {
                    self.disrupted(format!("hostile {node}"));
                    self.turn_hostile(i, attacks);
                }
            }
        }
    }

    /// Flapping: links between the two halves (even and odd node numbers, as in deterministic mode) go down every
    /// other period until `until_ms`.
    fn flap(&mut self, t: u64) {
        let Some((period, until)) = self.flap else {
            return;
        };
        if t >= until {
            self.disrupted("flapping ends".into());
            self.flap = None;
            self.flap_down = false;
            self.sides = None;
            self.push_blocks();
            return;
        }
        let down = (t / period.max(1)) % 2 == 1;
        if down != self.flap_down {
            self.flap_down = down;
            self.push_blocks();
        }
    }

    /// Whether `a` and `b` may talk under the current partition and flapping.
    fn reachable(&self, a: usize, b: usize) -> bool {
        if self.flap_down && (a % 2) != (b % 2) {
            return false;
        }
        match &self.sides {
            Some(sides) => {
                sides
                    .iter()
                    .any(|side| side.contains(&a) && side.contains(&b))
                    || !sides.iter().any(|s| s.contains(&a) || s.contains(&b))
            }
            None => true,
        }
    }

    /// Sends each running node the set of peers it must not talk to, where it changed. A node redials its bootstrap
    /// peers when it gets a set; one whose set shrank gets it twice, because its first redial may reach a peer that
    /// has not lifted its own block yet.
    fn push_blocks(&mut self) {
        let shrank: Vec<usize> = (0..self.nodes.len())
            .filter(|i| {
                self.blocked[*i]
                    .as_ref()
                    .is_some_and(|old| old.iter().any(|j| self.reachable(*i, *j)))
            })
            .collect();
        self.push_blocks_once();
        if shrank.is_empty() {
            return;
        }
        for i in shrank {
            self.blocked[i] = None;
        }
        self.push_blocks_once();
    }

    fn push_blocks_once(&mut self) {
        for i in 0..self.nodes.len() {
            let wanted: BTreeSet<usize> = (0..self.nodes.len())
                .filter(|j| *j != i && !self.reachable(i, *j))
                .collect();
            if self.blocked[i].as_ref() == Some(&wanted) {
                continue;
            }
            let peers = self.cluster.peers(wanted.iter().copied());
            let sent = match &self.nodes[i].running {
                Running::Daemon(daemon) => daemon.remote.block(&peers).map_err(|e| e.to_string()),
                Running::Hostile(hostile) => {
                    let set = wanted
                        .iter()
                        .map(|j| self.cluster.members[*j].peer)
                        .collect();
                    self.cluster
                        .runtime
                        .block_on(hostile.client.set_blocked_peers(set))
                        .map_err(|e| e.to_string())
                }
                Running::Stopped => continue,
            };
            match sent {
                Ok(()) => self.blocked[i] = Some(wanted),
                Err(error) => self.problems.push(format!(
                    "{}: the block set was refused: {error}",
                    self.cluster.members[i].name
                )),
            }
        }
    }

    fn workload(&mut self) {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.hostile || node.daemon().is_none() {
                continue;
            }
            if !self
                .rng
                .random_bool(self.scenario.workload.write_probability)
            {
                continue;
            }
            self.counter += 1;
            let member = &self.cluster.members[i];
            let key = member.key.public().to_hex();
            let writer = workload::Writer {
                name: &member.name,
                key: &key,
                region: &member.region,
                role: member.role,
            };
            let planned = workload::plan(
                &mut self.rng,
                self.counter,
                writer,
                self.scenario.workload.conflicts,
                unix_ms(),
            );
            self.write(i, planned);
        }
    }

    fn write(&mut self, i: usize, planned: Write) {
        let Some(daemon) = self.nodes[i].daemon() else {
            return;
        };
        if let Err(error) = daemon.write(planned) {
            let name = &self.cluster.members[i].name;
            self.problems.push(format!("{name}: {error}"));
        }
    }

    /// Stops a daemon (after its queued writes) and keeps what it wrote.
    fn stop_daemon(&mut self, i: usize, daemon: Daemon) {
        let (writes, problem) = self.cluster.stop(daemon);
        let name = self.cluster.members[i].name.clone();
        if let Some(problem) = problem {
            self.problems.push(format!("{name}: {problem}"));
        }
        for failure in &writes.failures {
            self.problems
                .push(format!("{name}: a write did not reach the node: {failure}"));
        }
        self.nodes[i].writes.add(writes);
    }

    fn crash(&mut self, i: usize) {
        self.observe();
        let state = std::mem::replace(&mut self.nodes[i].running, Running::Stopped);
        match state {
            Running::Daemon(daemon) => self.stop_daemon(i, daemon),
            Running::Hostile(hostile) => self.bank_tally(i, hostile),
            Running::Stopped => {}
        }
        let current = std::mem::take(&mut self.nodes[i].current);
        self.nodes[i].banked.add(&current);
        self.blocked[i] = None;
    }

    fn restart(&mut self, i: usize) {
        if !matches!(self.nodes[i].running, Running::Stopped) {
            self.crash(i);
        }
        if self.nodes[i].hostile {
            self.notes.push(format!(
                "restart {}: the node turned hostile and stays down",
                self.cluster.members[i].name
            ));
            return;
        }
        match self.cluster.start(i) {
            Ok(daemon) => {
                self.nodes[i].running = Running::Daemon(daemon);
                self.push_blocks();
            }
            Err(error) => self.problems.push(error.to_string()),
        }
    }

    /// A scheduled governance write on node `i`, written at once (after its queued writes) so that its outcome is
    /// known: an expected start is tried again until it starts or the scenario's bound (scaled) has passed.
    fn scheduled_write(&mut self, i: usize, action: &Action, at_ms: u64) {
        let by = self.cluster.members[i].key.public().to_hex();
        let name = self.cluster.members[i].name.clone();
        let Some((_, mut write)) = action.scheduled_write(&by, unix_ms()) else {
            return;
        };
        let first = Instant::now();
        let until =
            first + Duration::from_millis(scaled(self.scenario.converge_within_ms, self.scale));
        let expect = action.expectation();
        let started = loop {
            let Some(daemon) = self.nodes[i].daemon() else {
                self.notes.push(format!(
                    "{name}: a scheduled write at {at_ms} ms found the node down"
                ));
                break false;
            };
            match daemon.write_now(&write) {
                Ok(Some(hash)) => {
                    self.nodes[i].writes.written.push(hash);
                    break true;
                }
                Ok(None) if expect == Some(Expect::Started) && Instant::now() < until => {
                    std::thread::sleep(OBSERVE_INTERVAL.min(Duration::from_millis(50)));
                    if let Write::StartExperiment { at_ms, .. } = &mut write {
                        *at_ms = unix_ms();
                    }
                }
                Ok(None) => break false,
                Err(error) => {
                    self.problems.push(format!(
                        "{name}: a scheduled write did not reach the node: {error}"
                    ));
                    break false;
                }
            }
        };
        let (Some(expect), Action::Start { experiment, .. }) = (expect, action) else {
            return;
        };
        let waited = first.elapsed().as_millis() as f64 / self.scale;
        self.tried.push(Tried {
            node: name,
            experiment: experiment.clone(),
            at_ms,
            expect,
            started_at_ms: started.then_some(at_ms + waited as u64),
            refusal: None,
        });
    }

    fn revoke(&mut self, target: usize) {
        let council = (0..self.nodes.len()).find(|i| {
            self.cluster.members[*i].role == model::Role::Council
                && self.nodes[*i].honest()
                && self.nodes[*i].daemon().is_some()
        });
        let Some(council) = council else {
            self.notes.push(format!(
                "revoke {}: skipped, no council node was running",
                self.cluster.members[target].name
            ));
            return;
        };
        let planned = Write::Revoke {
            public_key: self.cluster.members[target].key.public().to_hex(),
            by: self.cluster.members[council].key.public().to_hex(),
            at_ms: unix_ms(),
        };
        self.write(council, planned);
        self.nodes[target].revoked = true;
    }

    fn turn_hostile(&mut self, i: usize, attacks: &[String]) {
        let Running::Daemon(daemon) =
            std::mem::replace(&mut self.nodes[i].running, Running::Stopped)
        else {
            self.notes.push(format!(
                "hostile {}: skipped, the node was not running",
                self.cluster.members[i].name
            ));
            return;
        };
        self.observe();
        let name = self.cluster.members[i].name.clone();
        self.stop_daemon(i, daemon);
        let current = std::mem::take(&mut self.nodes[i].current);
        self.nodes[i].banked.add(&current);
        self.nodes[i].hostile = true;
        let (federation, envelopes) = match self.cluster.envelopes(i) {
            Ok(found) => found,
            Err(error) => {
                self.problems
                    .push(format!("{name}: reading its store failed: {error}"));
                return;
            }
        };
        let member = &self.cluster.members[i];
        let who = hostile::Identity {
            name: name.clone(),
            region: member.region.clone(),
            key: identity::Keypair::from_seed(member.key.secret_bytes()),
            port: member.port.expect("a node that ran has a port"),
            federation,
            envelopes,
        };
        let how = hostile::Behaviour {
            attacks: attacks.to_vec(),
            announce_interval: Duration::from_millis(self.cluster.settings.announce_interval_ms),
            max_message_bytes: self.cluster.settings.max_message_bytes,
            seed: self.seed ^ HOSTILE_SEED_SALT,
        };
        let peers: Vec<String> = (0..self.nodes.len())
            .filter(|j| *j != i && self.reachable(i, *j))
            .filter_map(|j| self.cluster.members[j].address())
            .collect();
        match hostile::start(&self.cluster.runtime, who, how, peers) {
            Ok(hostile) => {
                self.nodes[i].running = Running::Hostile(hostile);
                self.blocked[i] = None;
                self.push_blocks();
            }
            Err(error) => self
                .problems
                .push(format!("{name}: the hostile client did not start: {error}")),
        }
    }

    fn bank_tally(&mut self, i: usize, hostile: Hostile) {
        let tally = hostile.stop(&self.cluster.runtime);
        let answered: Vec<String> = tally
            .answered
            .iter()
            .map(|(attack, n)| format!("{attack} {n}"))
            .collect();
        self.notes.push(format!(
            "hostile {}: answered pulls with {}; published {} fake heads announcements and {} garbage gossip \
             messages; {} crafted changes (forged or unauthorized)",
            self.cluster.members[i].name,
            if answered.is_empty() {
                "nothing (no honest node pulled)".to_owned()
            } else {
                answered.join(", ")
            },
            tally.announcements,
            tally.garbage_gossip,
            tally.bad.len()
        ));
        self.bad.extend(tally.bad);
    }

    /// Reads every running daemon's heads and counters; tracks divergence and convergence of the honest ones.
    fn observe(&mut self) {
        let mut honest: Vec<Probe> = Vec::new();
        let mut unanswered = false;
        // Every node at once: a busy node must not hold up the others' reading, nor the schedule.
        let probes: Vec<(usize, Result<Probe, String>)> = std::thread::scope(|scope| {
            let asks: Vec<_> = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.daemon().map(|d| (i, &d.remote)))
                .map(|(i, remote)| (i, scope.spawn(move || cluster::probe(remote))))
                .collect();
            asks.into_iter()
                .map(|(i, ask)| {
                    let probe = ask
                        .join()
                        .unwrap_or_else(|_| Err("the probe panicked".into()));
                    (i, probe)
                })
                .collect()
        });
        for (i, probe) in probes {
            match probe {
                Ok(probe) => {
                    self.nodes[i].current = Counters::of(&probe);
                    if self.nodes[i].honest() {
                        honest.push(probe);
                    }
                }
                Err(error) => {
                    unanswered = true;
                    let problem = format!(
                        "{}: the node's API did not answer: {error}",
                        self.cluster.members[i].name
                    );
                    if !self.problems.contains(&problem) {
                        self.problems.push(problem);
                    }
                }
            }
        }
        let now = self.elapsed_ms();
        let counts: Vec<u64> = honest.iter().map(|p| p.changes).collect();
        let spread =
            counts.iter().max().copied().unwrap_or(0) - counts.iter().min().copied().unwrap_or(0);
        self.largest_divergence = self.largest_divergence.max(spread);
        if let Some(phase) = self.phases.last_mut() {
            phase.max_divergence = phase.max_divergence.max(spread);
        }
        let equal =
            !unanswered && spread == 0 && honest.windows(2).all(|w| w[0].heads == w[1].heads);
        let quiet = self.quiet_from_ms.is_some();
        if equal {
            if let Some(phase) = self.phases.last_mut()
                && phase.converged_at_ms.is_none()
            {
                phase.converged_at_ms = Some(now);
            }
            if self.converged_since_ms.is_none()
                && (quiet || self.scenario.workload.write_probability == 0.0)
            {
                self.converged_since_ms = Some(now);
            }
        } else {
            self.converged_since_ms = None;
        }
    }

    fn totals(&self) -> Counters {
        let mut totals = Counters::default();
        for node in &self.nodes {
            totals.add(&node.banked);
            totals.add(&node.current);
        }
        totals
    }

    /// Stops every node, reads every store and checks the invariants.
    pub(super) fn finish(mut self, replay: String, panics_before: u64) -> Report {
        let end = self.elapsed_ms();
        let totals = self.totals();
        let delta = totals.minus(&self.phase_start);
        if let Some(phase) = self.phases.last_mut() {
            phase.messages = delta.messages;
            phase.bytes = delta.bytes;
            phase.rounds = delta.rounds;
            phase.rejected = delta.rejected;
        }
        let quiet_from = self
            .last_disruption_ms
            .max(self.quiet_from_ms.unwrap_or(end));
        let alive: Vec<bool> = self
            .nodes
            .iter()
            .map(|n| !matches!(n.running, Running::Stopped))
            .collect();
        for i in 0..self.nodes.len() {
            let state = std::mem::replace(&mut self.nodes[i].running, Running::Stopped);
            match state {
                Running::Daemon(daemon) => self.stop_daemon(i, daemon),
                Running::Hostile(hostile) => self.bank_tally(i, hostile),
                Running::Stopped => {}
            }
        }
        self.note_workload(totals.penalties);
        let honest: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].honest())
            .collect();
        let mut stored = BTreeMap::new();
        for &i in &honest {
            match self.cluster.stored(i) {
                Ok(s) => {
                    stored.insert(i, s);
                }
                Err(error) => {
                    let name = &self.cluster.members[i].name;
                    self.problems
                        .push(format!("{name}: its store did not open: {error}"));
                }
            }
        }
        let panics = super::panics() - panics_before;
        if panics > 0 {
            self.problems
                .insert(0, format!("{panics} panics in the process"));
        }
        let evidence = verdict::Evidence {
            names: self
                .cluster
                .members
                .iter()
                .map(|m| m.name.as_str())
                .collect(),
            acknowledged: honest
                .iter()
                .flat_map(|i| self.nodes[*i].writes.written.iter().copied())
                .collect(),
            honest,
            alive,
            stored: &stored,
            bad: &self.bad,
            convergence_ms: self
                .converged_since_ms
                .map(|since| since.saturating_sub(quiet_from)),
            bound_ms: scaled(self.scenario.converge_within_ms, self.scale),
            bound_text: format!("{} ms x {}", self.scenario.converge_within_ms, self.scale),
            problems: self.problems.clone(),
        };
        let mut invariants = verdict::invariants(&evidence);
        invariants.extend(crate::scheduled::invariant(&self.tried));
        let converged = evidence.convergence_ms.is_some() && evidence.stores_agree();
        let changes = (0..self.nodes.len())
            .find(|i| evidence.alive[*i] && self.nodes[*i].honest())
            .and_then(|i| stored.get(&i))
            .map_or(0, |s| s.accepted.len() as u64);
        Report {
            scenario: self.scenario.name.clone(),
            mode: "real".into(),
            seed: self.seed,
            nodes: self.nodes.len(),
            converged,
            convergence_ms: evidence.convergence_ms.filter(|_| converged),
            simulated_ms: end,
            messages: totals.messages,
            bytes: totals.bytes,
            rounds: totals.rounds,
            changes,
            rejected: totals.rejected,
            largest_divergence: self.largest_divergence,
            phases: self.phases.clone(),
            invariants,
            replay,
            notes: self.notes.clone(),
        }
    }

    /// Notes on the writes: how many, how long each took, how far the run fell behind, what revoked nodes did.
    fn note_workload(&mut self, penalties: u64) {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.revoked {
                self.notes.push(format!(
                    "revoked {}: wrote {} changes in the run; its own write path refused {} once it had seen its \
                     revocation (a real node signs nothing its key may no longer write, so unlike deterministic \
                     mode no honest node meets post-revocation changes to reject; a member key that does so is \
                     what the hostile step sends)",
                    self.cluster.members[i].name,
                    node.writes.written.len(),
                    node.writes.refused
                ));
            }
        }
        let written: usize = self.nodes.iter().map(|n| n.writes.written.len()).sum();
        let calls = written as u64
            + self
                .nodes
                .iter()
                .map(|n| n.writes.refused + n.writes.nothing)
                .sum::<u64>();
        let busy: Duration = self.nodes.iter().map(|n| n.writes.busy).sum();
        self.notes.push(format!(
            "workload: {written} changes written through the nodes' write path, mean {} ms a write",
            busy.as_millis() as u64 / calls.max(1)
        ));
        if self.lag_ms > 0 {
            self.notes.push(format!(
                "the run fell up to {} ms behind the scaled schedule (the nodes could not take the writes faster); \
                 events and writes kept their order, phase times are as they happened",
                self.lag_ms
            ));
        }
        self.notes
            .push(format!("honest nodes penalized peers {penalties} times"));
    }
}
