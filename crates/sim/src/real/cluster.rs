//! Real mode's nodes: data dirs founded offline, then each node run as a `node::daemon::run` instance on one tokio
//! runtime (real libp2p on 127.0.0.1, real sled), reached through its local API (`node::remote::Remote`): writes
//! through `/v1/exec`, partitions through `/v1/block`, figures through `/v1/status` and `/metrics`. A crash stops a
//! daemon; a restart runs it again on the same data dir and port.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity::Keypair;
use model::Role;
use node::Node;
use node::actor::{ExecRequest, ExecResponse, NetworkStatus};
use node::remote::Remote;
use registry::{ChangeHash, Op};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

use super::RealError;
use crate::scenario::Scenario;
use crate::workload::{self, Write};

/// The exec command through which the driver writes a planned [`Write`] (as JSON) in a node.
const WRITE_COMMAND: &str = "sim-write";
/// How long a daemon may take to bring up its API and listen, or to stop.
const START_STOP_WAIT: Duration = Duration::from_secs(20);
/// Worker threads of the runtime every node shares (the machine may have two cores).
const WORKER_THREADS: usize = 2;
/// Planned writes queued for one node before the driver waits. Small on purpose: when the nodes cannot keep up,
/// the whole scenario slows down (and the report says by how much) rather than writes planned during a partition
/// landing after the heal.
const WRITE_QUEUE_CAPACITY: usize = 2;

/// One scenario node and where it lives.
pub(crate) struct Member {
    pub(crate) name: String,
    pub(crate) region: String,
    pub(crate) role: Role,
    pub(crate) key: Keypair,
    pub(crate) peer: net::PeerId,
    pub(crate) dir: PathBuf,
    /// TCP port, fixed after the first start so that a restarted node is found where it was.
    pub(crate) port: Option<u16>,
}

impl Member {
    /// `/ip4/127.0.0.1/tcp/PORT/p2p/PEER` once the node has started once.
    pub(crate) fn address(&self) -> Option<String> {
        self.port
            .map(|port| format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", self.peer))
    }
}

/// A running daemon, and the thread that hands it the driver's writes one after the other (a write is durable
/// before the node answers, so writing to several nodes in turn from the driver would serialize their disks).
pub(crate) struct Daemon {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), node::daemon::DaemonError>>,
    pub(crate) remote: Remote,
    writes: std::sync::mpsc::SyncSender<Job>,
    writer: std::thread::JoinHandle<Writes>,
}

/// What a node's writer thread is asked to do.
enum Job {
    Write(Write),
    /// Answer once every write queued before this one is done.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// What a node's writer did.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    /// Changes the node wrote (durable when it answered).
    pub(crate) written: Vec<ChangeHash>,
    /// Writes the node refused (for example: its key was revoked).
    pub(crate) refused: u64,
    /// Planned writes with nothing to write (a steward with no proposal to approve).
    pub(crate) nothing: u64,
    /// Writes that did not reach the node.
    pub(crate) failures: Vec<String>,
    /// Time spent waiting for the node's answers.
    pub(crate) busy: Duration,
}

impl Writes {
    pub(crate) fn add(&mut self, other: Writes) {
        self.written.extend(other.written);
        self.refused += other.refused;
        self.nothing += other.nothing;
        self.failures.extend(other.failures);
        self.busy += other.busy;
    }
}

impl Daemon {
    /// Queues a planned write; waits while the queue is full.
    pub(crate) fn write(&self, planned: Write) -> Result<(), String> {
        self.writes
            .send(Job::Write(planned))
            .map_err(|_| "the node's writer has stopped".to_owned())
    }

    /// Writes `planned` now, after the writes queued before it: the change written, `None` when there was nothing
    /// to write or the node refused.
    pub(crate) fn write_now(&self, planned: &Write) -> Result<Option<ChangeHash>, String> {
        let _ = self.flush().recv();
        Ok(match write(&self.remote, planned)? {
            Written::Change(hash) => Some(hash),
            Written::Nothing => None,
            Written::Refused(reason) => {
                tracing::debug!(%reason, "scheduled write refused");
                None
            }
        })
    }

    /// Asks the writer to report when the writes queued so far are done; wait on the answer with
    /// [`std::sync::mpsc::Receiver::recv`].
    pub(crate) fn flush(&self) -> std::sync::mpsc::Receiver<()> {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        let _ = self.writes.send(Job::Flush(done));
        answer
    }
}

/// Hands planned writes to the node until the queue closes.
fn writer(remote: Remote, queue: std::sync::mpsc::Receiver<Job>) -> Writes {
    let mut writes = Writes::default();
    for job in queue {
        let planned = match job {
            Job::Write(planned) => planned,
            Job::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let started = Instant::now();
        let outcome = write(&remote, &planned);
        writes.busy += started.elapsed();
        match outcome {
            Ok(Written::Change(hash)) => writes.written.push(hash),
            Ok(Written::Nothing) => writes.nothing += 1,
            Ok(Written::Refused(reason)) => {
                writes.refused += 1;
                tracing::debug!(%reason, "write refused");
            }
            Err(error) => writes.failures.push(error),
        }
    }
    writes
}

/// What a node's status and metrics say.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    pub(crate) heads: Vec<String>,
    pub(crate) changes: u64,
    pub(crate) network: NetworkStatus,
    pub(crate) requests_served: u64,
    pub(crate) penalties: u64,
}

/// What a node's store holds after the run.
pub(crate) struct Stored {
    pub(crate) heads: Vec<ChangeHash>,
    pub(crate) accepted: BTreeSet<ChangeHash>,
}

/// The nodes' settings, derived from the scenario and the time scale.
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) announce_interval_ms: u64,
    pub(crate) max_message_bytes: usize,
}

impl Settings {
    pub(crate) fn new(scenario: &Scenario, scale: f64) -> Self {
        Self {
            announce_interval_ms: super::scaled(scenario.network.announce_interval_ms, scale)
                .max(super::MIN_ANNOUNCE_INTERVAL_MS),
            max_message_bytes: scenario.network.max_message_bytes,
        }
    }

    fn config(&self, listen_port: Option<u16>, bootstrap: Vec<String>) -> node::config::Config {
        let mut config = node::config::Config {
            listen_addrs: vec![format!("/ip4/127.0.0.1/tcp/{}", listen_port.unwrap_or(0))],
            bootstrap_addrs: bootstrap,
            mdns: false,
            api_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            announce_interval_ms: self.announce_interval_ms,
            tick_ms: 50,
            ..node::config::Config::default()
        };
        config.limits.heartbeat_ms = 200;
        config.limits.gate_grace_period_ms = 2_000;
        config.limits.max_sync_message_bytes = self.max_message_bytes;
        // Scenario time runs faster than the wall clock, so honest pulls come faster than a real deployment's.
        config.limits.max_requests_per_peer_per_second = 1_000;
        config
    }
}

/// The nodes of one run and the runtime they share.
pub(crate) struct Cluster {
    pub(crate) runtime: Runtime,
    _root: tempfile::TempDir,
    pub(crate) members: Vec<Member>,
    pub(crate) settings: Settings,
}

fn setup_error(node: &str, detail: impl ToString) -> RealError {
    RealError::Setup {
        node: node.to_owned(),
        detail: detail.to_string(),
    }
}

impl Cluster {
    /// Data dirs with the seed's keys, founded offline as deterministic mode founds its replicas: genesis by the
    /// first council node, every node a member, one objective, and one key result per region with pods.
    pub(crate) fn found(
        scenario: &Scenario,
        seed: u64,
        settings: Settings,
    ) -> Result<Self, RealError> {
        let root = tempfile::tempdir().map_err(RealError::TempDir)?;
        let mut members = Vec::new();
        for (name, region, role, _observer) in scenario.node_names() {
            let key = crate::deterministic::node_key(seed, &name);
            let dir = root.path().join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| setup_error(&name, e))?;
            key.save(&dir.join(identity::KEY_FILE_NAME))
                .map_err(|e| setup_error(&name, e))?;
            let peer = net::Keypair::from_secret_seed(key.secret_bytes()).peer_id();
            members.push(Member {
                name,
                region,
                role,
                key,
                peer,
                dir,
                port: None,
            });
        }
        found_federation(&members)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .enable_all()
            .build()
            .map_err(RealError::Runtime)?;
        Ok(Self {
            runtime,
            _root: root,
            members,
            settings,
        })
    }

    /// Starts node `i`'s daemon and waits for its API and its listen address. The first start dials the nodes
    /// started before it; a restart dials every other node.
    pub(crate) fn start(&mut self, i: usize) -> Result<Daemon, RealError> {
        let restart = self.members[i].port.is_some();
        let bootstrap: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && (restart || *j < i))
            .filter_map(|(_, m)| m.address())
            .collect();
        let member = &self.members[i];
        let config = self.settings.config(member.port, bootstrap);
        let exec: node::actor::Exec = Arc::new(exec);
        let (stop, stopped) = oneshot::channel::<()>();
        let dir = member.dir.clone();
        let task = self.runtime.spawn(async move {
            node::daemon::run(&dir, config, exec, async {
                let _ = stopped.await;
            })
            .await
        });
        let name = member.name.clone();
        let remote = wait_listening(&member.dir, &name)?;
        let status = remote.status().map_err(|e| setup_error(&name, e))?;
        let port = status
            .network
            .listen_addrs
            .iter()
            .find_map(|a| port_of(a))
            .ok_or_else(|| setup_error(&name, "no TCP listen address"))?;
        self.members[i].port = Some(port);
        let (writes, queue) = std::sync::mpsc::sync_channel(WRITE_QUEUE_CAPACITY);
        let writer_remote = remote.clone();
        let writer = std::thread::Builder::new()
            .name(format!("sim-writer-{name}"))
            .spawn(move || writer(writer_remote, queue))
            .map_err(|e| setup_error(&name, e))?;
        Ok(Daemon {
            stop,
            task,
            remote,
            writes,
            writer,
        })
    }

    /// Lets a daemon finish the writes queued for it, stops it and waits for it to release its store; returns its
    /// writes and what went wrong, if anything.
    pub(crate) fn stop(&self, daemon: Daemon) -> (Writes, Option<String>) {
        drop(daemon.writes);
        let writes = daemon.writer.join().unwrap_or_else(|_| Writes {
            failures: vec!["the writer thread panicked".into()],
            ..Writes::default()
        });
        let _ = daemon.stop.send(());
        let joined = self
            .runtime
            .block_on(async { tokio::time::timeout(START_STOP_WAIT, daemon.task).await });
        let problem = match joined {
            Err(_) => Some(format!("did not stop within {START_STOP_WAIT:?}")),
            Ok(Err(error)) if error.is_panic() => Some(format!("daemon task panicked: {error}")),
            Ok(Err(error)) => Some(format!("daemon task failed: {error}")),
            Ok(Ok(Err(error))) => Some(format!("daemon stopped with an error: {error}")),
            Ok(Ok(Ok(()))) => None,
        };
        (writes, problem)
    }

    /// Peer ids of `nodes`.
    pub(crate) fn peers(&self, nodes: impl IntoIterator<Item = usize>) -> Vec<String> {
        nodes
            .into_iter()
            .map(|j| self.members[j].peer.to_string())
            .collect()
    }

    /// Reads a stopped node's store.
    pub(crate) fn stored(&self, i: usize) -> Result<Stored, String> {
        let node = open_waiting(&self.members[i].dir)?;
        let replica = node.replica();
        Ok(Stored {
            heads: replica.heads(),
            accepted: replica.changes_since(&[]).into_iter().collect(),
        })
    }

    /// What a stopped node's store holds, as the hostile node needs it: the federation and every envelope.
    pub(crate) fn envelopes(
        &self,
        i: usize,
    ) -> Result<(registry::FederationId, Vec<registry::Envelope>), String> {
        let node = open_waiting(&self.members[i].dir)?;
        let bundle = node.export(None).map_err(|e| e.to_string())?;
        let read = registry::bundle::read(&bundle).map_err(|e| e.to_string())?;
        let envelopes = read
            .entries
            .into_iter()
            .filter_map(|entry| match entry {
                registry::bundle::Entry::Envelope(envelope) => Some(*envelope),
                registry::bundle::Entry::Malformed { .. } => None,
            })
            .collect();
        Ok((read.federation, envelopes))
    }
}

/// The outcome of a planned write in a node.
enum Written {
    /// The change made.
    Change(ChangeHash),
    /// Nothing to write (a steward with no proposal to approve).
    Nothing,
    /// The node refused (for example: its key was revoked).
    Refused(String),
}

/// Hands `write` to the node behind `remote`.
fn write(remote: &Remote, write: &Write) -> Result<Written, String> {
    let request = ExecRequest {
        args: vec![
            WRITE_COMMAND.to_owned(),
            serde_json::to_string(write).expect("a plan serializes"),
        ],
        cwd: String::new(),
    };
    let response = remote.exec(&request).map_err(|e| e.to_string())?;
    match (response.status, response.stdout.trim()) {
        (0, "") => Ok(Written::Nothing),
        (0, hash) => registry::parse_hash(hash)
            .map(Written::Change)
            .map_err(|e| e.to_string()),
        _ => Ok(Written::Refused(response.stderr)),
    }
}

/// Reads a running node's status and metrics.
pub(crate) fn probe(remote: &Remote) -> Result<Probe, String> {
    let status = remote.status().map_err(|e| e.to_string())?;
    let metrics = remote.metrics().map_err(|e| e.to_string())?;
    Ok(Probe {
        heads: status.heads,
        changes: metric(&metrics, "growthmesh_changes"),
        network: status.network,
        requests_served: metric(&metrics, "growthmesh_sync_requests_served_total"),
        penalties: metric(&metrics, "growthmesh_peer_penalties_total"),
    })
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The node's side of a planned write: `sim-write JSON` completes the plan against the node's own view and writes
/// it through `Node::write`, the path every CLI write takes in a running node.
fn exec(node: &mut Node, request: &ExecRequest, _: &NetworkStatus) -> ExecResponse {
    let fail = |status: u8, stderr: String| ExecResponse {
        status,
        stdout: String::new(),
        stderr,
    };
    let [command, json] = request.args.as_slice() else {
        return fail(2, format!("expected `{WRITE_COMMAND} JSON`"));
    };
    if command != WRITE_COMMAND {
        return fail(2, format!("unknown command `{command}`"));
    }
    let planned: Write = match serde_json::from_str(json) {
        Ok(planned) => planned,
        Err(error) => return fail(2, format!("not a planned write: {error}")),
    };
    let Some(op) = planned.op(|| node.view()) else {
        return ExecResponse::default();
    };
    match node.write(&op, super::unix_ms()) {
        Ok(outcome) => ExecResponse {
            status: 0,
            stdout: outcome.change,
            stderr: String::new(),
        },
        Err(error) => fail(1, error.to_string()),
    }
}

fn found_federation(members: &[Member]) -> Result<(), RealError> {
    let founder = members
        .iter()
        .position(|m| m.role == Role::Council)
        .expect("validated: a council node exists");
    let name = &members[founder].name;
    let mut council = Node::open(&members[founder].dir).map_err(|e| setup_error(name, e))?;
    council
        .create_federation("simulated federation", 0)
        .map_err(|e| setup_error(name, e))?;
    for (_, member) in members.iter().enumerate().filter(|(i, _)| *i != founder) {
        let record = model::Member {
            public_key: member.key.public().to_hex(),
            name: member.name.clone(),
            role: member.role,
            scope: matches!(member.role, Role::Pod | Role::Partner).then(|| member.region.clone()),
            admitted_by: String::new(),
            admitted_at_ms: 0,
            revoked: false,
        };
        council
            .write(&Op::AddMember(record), 0)
            .map_err(|e| setup_error(name, e))?;
    }
    council
        .write(&Op::AddObjective(workload::main_objective()), 0)
        .map_err(|e| setup_error(name, e))?;
    let bundle = council.export(None).map_err(|e| setup_error(name, e))?;
    drop(council);
    import_everywhere(members, &bundle, Some(founder))?;
    let mut regions = BTreeSet::new();
    for (i, member) in members.iter().enumerate() {
        if member.role != Role::Pod || !regions.insert(member.region.clone()) {
            continue;
        }
        let mut pod = Node::open(&member.dir).map_err(|e| setup_error(&member.name, e))?;
        pod.write(&Op::AddKeyResult(workload::key_result(&member.region)), 0)
            .map_err(|e| setup_error(&member.name, e))?;
        let bundle = pod.export(None).map_err(|e| setup_error(&member.name, e))?;
        drop(pod);
        import_everywhere(members, &bundle, Some(i))?;
    }
    Ok(())
}

/// Imports `bundle` into every node but `except`, refusing any rejection (setup must be clean).
fn import_everywhere(
    members: &[Member],
    bundle: &[u8],
    except: Option<usize>,
) -> Result<(), RealError> {
    for (i, member) in members.iter().enumerate() {
        if Some(i) == except {
            continue;
        }
        let mut node = Node::open(&member.dir).map_err(|e| setup_error(&member.name, e))?;
        let report = node
            .import("setup", bundle, |_, _| {})
            .map_err(|e| setup_error(&member.name, e))?;
        if !report.rejected.is_empty() {
            return Err(setup_error(
                &member.name,
                format!("setup changes rejected: {:?}", report.rejected),
            ));
        }
    }
    Ok(())
}

/// Opens a node's data dir, waiting while a daemon that just stopped still holds the store.
fn open_waiting(dir: &Path) -> Result<Node, String> {
    let deadline = Instant::now() + START_STOP_WAIT;
    loop {
        match Node::open(dir) {
            Ok(node) => return Ok(node),
            Err(error) if Instant::now() >= deadline => return Err(error.to_string()),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn wait_listening(dir: &Path, name: &str) -> Result<Remote, RealError> {
    let deadline = Instant::now() + START_STOP_WAIT;
    loop {
        if let Some(remote) = node::remote::find(dir)
            && remote
                .status()
                .is_ok_and(|s| s.network.listen_addrs.iter().any(|a| port_of(a).is_some()))
        {
            return Ok(remote);
        }
        if Instant::now() >= deadline {
            return Err(setup_error(
                name,
                format!("the node did not serve its API and listen within {START_STOP_WAIT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The TCP port of `/ip4/127.0.0.1/tcp/PORT/...`.
fn port_of(addr: &str) -> Option<u16> {
    let mut parts = addr.split('/');
    while let Some(part) = parts.next() {
        if part == "tcp" {
            return parts.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_metrics_parse() {
        assert_eq!(port_of("/ip4/127.0.0.1/tcp/4101/p2p/12D3"), Some(4101));
        assert_eq!(port_of("/ip4/127.0.0.1/udp/4101/quic-v1"), None);
        let text =
            "# HELP growthmesh_changes x\ngrowthmesh_changes 12\ngrowthmesh_changes_other 3\n";
        assert_eq!(metric(text, "growthmesh_changes"), 12);
        assert_eq!(metric(text, "growthmesh_missing"), 0);
    }
}
