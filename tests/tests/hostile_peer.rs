//! A hostile member and a stranger against honest nodes: two `node::daemon::run` instances (a council and a pod) on
//! a tokio runtime with temp data dirs, and raw libp2p clients built with `net::spawn` that send malformed,
//! truncated and oversized sync messages, fake announcements, and sync responses carrying forged, unauthorized or
//! badly signed envelopes. The honest nodes must keep serving (a later honest write converges), never apply a bad
//! change, and count what they rejected in `status`.

use std::collections::VecDeque;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use model::{DocId, Learning, Member, Role};
use net::{Event, PeerId, Topic};
use node::actor::ExecRequest;
use node::remote::{Remote, StatusDocument};
use registry::sync::{Announcement, Response};
use registry::{Envelope, FederationId, Op, Replica};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// Every wait; a failing wait panics after this with what it saw last.
const WAIT: Duration = Duration::from_secs(30);
/// First byte of a node's error answer to a request.
const ERROR_TAG: u8 = 6;
/// The honest nodes' sync message limit; the hostile client allows itself far more.
const HONEST_MAX_SYNC_BYTES: usize = 1024 * 1024;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

/// Polls `probe` until it returns `Some`, panicking after [`WAIT`] with `what` and the last `describe()`.
fn wait_for<T>(
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}; last seen:\n{}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An honest node running in this process.
struct Honest {
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), node::daemon::DaemonError>>>,
}

impl Honest {
    fn start(runtime: &Runtime, dir: &Path, bootstrap: Vec<String>) -> Self {
        let mut config = node::config::Config {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
            bootstrap_addrs: bootstrap,
            mdns: false,
            api_addr: "127.0.0.1:0".parse().expect("socket address"),
            announce_interval_ms: 1_000,
            tick_ms: 50,
            ..node::config::Config::default()
        };
        config.limits.heartbeat_ms = 200;
        config.limits.gate_grace_period_ms = 3_000;
        config.limits.max_sync_message_bytes = HONEST_MAX_SYNC_BYTES;
        // Blocking is the net crate's business (tested there); here the hostile peer must stay connected so that
        // every kind of bad message reaches the node.
        config.limits.penalties_before_block = 1_000;
        let exec: node::actor::Exec = Arc::new(cli::exec_in_node);
        let (stop, stopped) = oneshot::channel::<()>();
        let owned = dir.to_path_buf();
        let task = runtime.spawn(async move {
            node::daemon::run(&owned, config, exec, async {
                let _ = stopped.await;
            })
            .await
        });
        let honest = Self {
            dir: dir.to_path_buf(),
            stop: Some(stop),
            task: Some(task),
        };
        wait_for(
            "the node to serve its API and listen",
            || {
                node::remote::find(&honest.dir)
                    .and_then(|r| r.status().ok())
                    .filter(|s| !s.network.listen_addrs.is_empty())
            },
            || format!("{}", honest.dir.display()),
        );
        honest
    }

    fn remote(&self) -> Remote {
        node::remote::find(&self.dir).expect("the node's API answers")
    }

    fn status(&self) -> StatusDocument {
        self.remote().status().expect("status answers")
    }

    fn peer_id(&self) -> PeerId {
        self.status().network.peer_id.parse().expect("peer id")
    }

    fn address(&self) -> String {
        self.status().network.listen_addrs[0].clone()
    }

    /// Runs a CLI command in the node; expects success and returns its JSON output.
    fn exec(&self, args: &[&str]) -> serde_json::Value {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.push("--json".into());
        let response = self
            .remote()
            .exec(&ExecRequest {
                args: args.clone(),
                cwd: self.dir.display().to_string(),
            })
            .expect("exec answers");
        assert_eq!(response.status, 0, "{args:?}: {}", response.stderr);
        serde_json::from_str(&response.stdout).expect("one JSON document")
    }

    /// The `/metrics` text (no token needed).
    fn metrics(&self) -> String {
        let info: node::remote::ApiInfo = serde_json::from_slice(
            &std::fs::read(self.dir.join(node::remote::API_FILE_NAME)).expect("api.json"),
        )
        .expect("api.json parses");
        let mut stream = std::net::TcpStream::connect(info.addr).expect("API connects");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request sent");
        let mut text = String::new();
        stream.read_to_string(&mut text).expect("response read");
        text
    }

    fn penalties(&self) -> u64 {
        metric(&self.metrics(), "growthmesh_peer_penalties_total")
    }

    fn shutdown(&mut self, runtime: &Runtime) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
                .expect("the node stops within 10 s")
                .expect("the node task does not panic");
            result.expect("the node ran without error");
        }
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A council and a pod running honestly, and what a hostile member ("mallory", a pod) knows: its key and a copy of
/// the registry.
struct Setup {
    runtime: Runtime,
    _temp: tempfile::TempDir,
    council: Honest,
    pod: Honest,
    federation: FederationId,
    hostile: identity::Keypair,
    replica: Replica,
}

impl Setup {
    fn new() -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let council_dir = temp.path().join("council");
        let pod_dir = temp.path().join("emea");
        let hostile = identity::Keypair::from_seed([66; 32]);
        let now = now_ms();
        let bundle = {
            let mut council = node::Node::open(&council_dir).expect("council opens");
            council
                .create_federation("Acme Growth", now)
                .expect("federation founded");
            let mut pod = node::Node::open(&pod_dir).expect("pod opens");
            let admitted_by = council.identity().public_key;
            for (key, name) in [
                (pod.identity().public_key, "emea"),
                (hostile.public().to_hex(), "mallory"),
            ] {
                let member = Member {
                    public_key: key,
                    name: name.into(),
                    role: Role::Pod,
                    scope: Some(name.into()),
                    admitted_by: admitted_by.clone(),
                    admitted_at_ms: now,
                    revoked: false,
                };
                council
                    .write(&Op::AddMember(member), now)
                    .expect("member admitted");
            }
            let bundle = council.export(None).expect("export");
            pod.import("founding", &bundle, |_, _| {})
                .expect("pod imports");
            bundle
        };
        let read = registry::bundle::read(&bundle).expect("bundle reads");
        let envelopes: Vec<Envelope> = read
            .entries
            .into_iter()
            .map(|entry| match entry {
                registry::bundle::Entry::Envelope(envelope) => *envelope,
                registry::bundle::Entry::Malformed { problem, .. } => panic!("{problem}"),
            })
            .collect();
        let mut replica = Replica::new();
        replica.adopt(read.federation).expect("adopts");
        let receipt = replica.receive(envelopes).expect("receives");
        assert!(receipt.rejected.is_empty());

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let council = Honest::start(&runtime, &council_dir, Vec::new());
        let pod = Honest::start(&runtime, &pod_dir, vec![council.address()]);
        let setup = Self {
            runtime,
            _temp: temp,
            council,
            pod,
            federation: read.federation,
            hostile,
            replica,
        };
        setup.wait_converged("the pod to connect and sync", |_| true);
        setup
    }

    /// Waits until council and pod hold the same heads and `done` holds for them.
    fn wait_converged(&self, what: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        wait_for(
            what,
            || {
                let (council, pod) = (self.council.status(), self.pod.status());
                let connected = !council.network.peers.is_empty();
                (connected && council.heads == pod.heads && done(&council.heads))
                    .then_some(council.heads)
            },
            || {
                format!(
                    "council: {:?}\npod: {:?}",
                    self.council.status(),
                    self.pod.status()
                )
            },
        )
    }

    /// A raw libp2p client with `seed`'s key, speaking this federation's protocol with generous limits, dialed
    /// to the council.
    fn client(&self, seed: [u8; 32]) -> Hostile {
        let mut config = net::Config {
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
            mdns: false,
            federation_id: self.federation.to_hex(),
            ..net::Config::default()
        };
        config.limits.max_sync_message_bytes = 16 * HONEST_MAX_SYNC_BYTES;
        config.limits.max_gossip_message_bytes = 1024 * 1024;
        config.limits.heartbeat_ms = 200;
        let council = self.council.peer_id();
        let (client, events) = {
            let _guard = self.runtime.enter();
            net::spawn(net::Keypair::from_secret_seed(seed), config).expect("client spawns")
        };
        let script = Arc::new(Mutex::new(VecDeque::<Vec<u8>>::new()));
        let served = Arc::new(AtomicUsize::new(0));
        self.runtime.spawn(serve(
            client.clone(),
            events,
            council,
            Arc::clone(&script),
            Arc::clone(&served),
        ));
        let addr = self.council.address().parse().expect("multiaddr");
        let dialed = self
            .runtime
            .block_on(client.dial(addr))
            .expect("the council accepts the connection");
        assert_eq!(dialed, council);
        Hostile {
            client,
            council,
            script,
            served,
        }
    }

    fn request(&self, hostile: &Hostile, bytes: Vec<u8>) -> Result<Vec<u8>, net::Error> {
        self.runtime
            .block_on(hostile.client.request(hostile.council, bytes))
    }

    /// A fake heads announcement naming `heads`, unique each call so gossipsub never drops it as a duplicate.
    fn announcement(&self, heads: Vec<registry::ChangeHash>) -> Vec<u8> {
        static NEXT: AtomicUsize = AtomicUsize::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Announcement {
            federation: self.federation,
            digest: [n as u8; 32],
            heads,
            changes: n as u64,
            summary: false,
        }
        .encode()
    }

    /// Feeds `replies` to the council's pulls from `hostile`, announcing fake heads until each was served.
    fn serve_to_council(&self, hostile: &Hostile, replies: Vec<Vec<u8>>) {
        let target = hostile.served.load(Ordering::SeqCst) + replies.len();
        hostile.script.lock().expect("script lock").extend(replies);
        let bogus = registry::ChangeHash([0xee; 32]);
        wait_for(
            "the council to pull every scripted reply",
            || {
                let done = hostile.served.load(Ordering::SeqCst) >= target;
                if !done {
                    // Not yet subscribed, or a pull is in flight: either way, announce again.
                    let _ = self.runtime.block_on(
                        hostile
                            .client
                            .publish(Topic::Heads, self.announcement(vec![bogus])),
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                done.then_some(())
            },
            || format!("{:?}", self.council.status().network),
        );
    }

    /// A later honest write on the pod reaches the council; returns the converged heads.
    fn honest_write_converges(&self, title: &str) -> Vec<String> {
        let output = self
            .pod
            .exec(&["learnings", "add", "--title", title, "--body", "fine"]);
        let change = output["change"].as_str().expect("change").to_owned();
        self.wait_converged("a later honest write to converge", |heads| {
            heads.contains(&change)
        })
    }

    fn shutdown(mut self) {
        self.pod.shutdown(&self.runtime);
        self.council.shutdown(&self.runtime);
    }
}

/// A raw client and the replies it will give the council's pulls.
struct Hostile {
    client: net::Client,
    council: PeerId,
    script: Arc<Mutex<VecDeque<Vec<u8>>>>,
    served: Arc<AtomicUsize>,
}

/// Answers the council's requests with the next scripted reply, and everything else with an error answer (which
/// honest nodes neither apply nor penalize).
async fn serve(
    client: net::Client,
    mut events: tokio::sync::mpsc::Receiver<Event>,
    council: PeerId,
    script: Arc<Mutex<VecDeque<Vec<u8>>>>,
    served: Arc<AtomicUsize>,
) {
    while let Some(event) = events.recv().await {
        let Event::InboundRequest { peer, id, .. } = event else {
            continue;
        };
        let scripted = if peer == council {
            script.lock().expect("script lock").pop_front()
        } else {
            None
        };
        let reply = match scripted {
            Some(reply) => {
                served.fetch_add(1, Ordering::SeqCst);
                reply
            }
            None => vec![ERROR_TAG],
        };
        let _ = client.respond(id, reply).await;
    }
}

fn learning(id: &str, title: &str, source: &str, author: &identity::Keypair) -> Op {
    Op::AddLearning(Learning {
        id: id.into(),
        title: title.into(),
        body: "hostile".into(),
        outcome: None,
        tags: Vec::new(),
        experiment: None,
        source: source.into(),
        author: author.public().to_hex(),
        created_at_ms: now_ms(),
    })
}

/// Mallory's own legitimate change (`id`) and a copy of it with a broken signature.
fn own_and_broken(setup: &Setup, replica: &mut Replica, id: &str) -> (Envelope, Envelope) {
    let own = replica
        .write(
            &setup.hostile,
            &learning(id, "Mallory's real note", "pod/mallory", &setup.hostile),
            now_ms(),
        )
        .expect("mallory may write its own pod");
    let mut broken = own.clone();
    broken.signature[0] ^= 0xff;
    (own, broken)
}

fn response(replica: &Replica, envelopes: Vec<Envelope>) -> Vec<u8> {
    Response {
        heads: replica.heads(),
        envelopes,
        more: false,
        unknown_ref: false,
    }
    .encode()
}

#[test]
fn malformed_oversized_and_foreign_requests_leave_the_node_serving() {
    let setup = Setup::new();
    let mallory = setup.client(setup.hostile.secret_bytes());
    let penalties_before = setup.council.penalties();

    let valid = setup
        .replica
        .sync_request(&[])
        .expect("the replica has a federation")
        .encode();
    let mut wrong_tag = valid.clone();
    wrong_tag[0] = 3;
    for (what, bytes) in [
        ("garbage", vec![0x02, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ("truncated request", valid[..valid.len() / 2].to_vec()),
        ("response sent as a request", wrong_tag),
        ("empty request", Vec::new()),
    ] {
        let answer = setup
            .request(&mallory, bytes)
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!(answer.first(), Some(&ERROR_TAG), "{what}: {answer:?}");
    }
    let oversized = vec![0x02; HONEST_MAX_SYNC_BYTES + 1];
    assert!(
        setup.request(&mallory, oversized).is_err(),
        "an oversized request is refused unread"
    );
    // Garbage and oversized gossip on the heads topic.
    let publish = |bytes: Vec<u8>| {
        wait_for(
            "a peer to take our gossip",
            || {
                setup
                    .runtime
                    .block_on(mallory.client.publish(Topic::Heads, bytes.clone()))
                    .ok()
            },
            String::new,
        )
    };
    publish(vec![0xde, 0xad, 0xbe, 0xef]);
    publish(vec![0x01; 200 * 1024]);

    wait_for(
        "the council to penalize the malformed messages",
        || (setup.council.penalties() >= penalties_before + 4).then_some(()),
        || setup.council.metrics(),
    );
    // The member is still served: a valid request gets the council's registry.
    let answer = setup
        .request(&mallory, valid)
        .expect("a valid request is answered");
    let response = Response::decode(&answer).expect("a sync response");
    let council_heads = setup.council.status().heads;
    let answered: Vec<String> = response.heads.iter().map(ToString::to_string).collect();
    assert_eq!(answered, council_heads);

    // A stranger's key: small requests get a refusal, large ones are refused unread, and it is never a peer.
    let stranger = setup.client([99; 32]);
    let small = setup.replica.sync_request(&[]).expect("request").encode();
    let answer = setup
        .request(&stranger, small)
        .expect("a small request from a non-member is answered");
    assert_eq!(answer.first(), Some(&ERROR_TAG));
    assert!(String::from_utf8_lossy(&answer).contains("not a member"));
    assert!(setup.request(&stranger, vec![0x02; 8 * 1024]).is_err());
    let stranger_peer = stranger.client.local_peer_id().to_string();
    assert!(
        setup
            .council
            .status()
            .network
            .peers
            .iter()
            .all(|p| p.peer_id != stranger_peer)
    );
    // The honest nodes close its connections after the grace period (the other raw client's gate stays open).
    let honest = [setup.council.peer_id(), setup.pod.peer_id()];
    wait_for(
        "the honest nodes to close the stranger's connections",
        || {
            let peers = setup
                .runtime
                .block_on(stranger.client.connected_peers())
                .expect("client runs");
            peers
                .iter()
                .all(|p| !honest.contains(&p.peer_id))
                .then_some(())
        },
        || {
            format!(
                "{:?}",
                setup.runtime.block_on(stranger.client.connected_peers())
            )
        },
    );
    let heads = setup.honest_write_converges("After the noise");
    assert_eq!(heads, setup.pod.status().heads);
    assert!(setup.council.status().network.rejections.is_empty());
    setup.shutdown();
}

#[test]
fn malformed_and_oversized_sync_responses_are_dropped() {
    let setup = Setup::new();
    let mallory = setup.client(setup.hostile.secret_bytes());
    let penalties_before = setup.council.penalties();
    let round_trips_before = setup.council.status().network.round_trips;

    let mut replica = setup.replica.clone_for_test();
    let own = replica
        .write(
            &setup.hostile,
            &learning("l-own", "Mallory's note", "pod/mallory", &setup.hostile),
            now_ms(),
        )
        .expect("mallory may write its own pod");
    let whole = response(&replica, vec![own.clone()]);
    setup.serve_to_council(
        &mallory,
        vec![
            vec![0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            whole[..whole.len() - 10].to_vec(),
            vec![0x03; HONEST_MAX_SYNC_BYTES + 1024],
        ],
    );
    wait_for(
        "the council to drop the malformed responses",
        || {
            let status = setup.council.status();
            (status.network.round_trips >= round_trips_before + 2
                && setup.council.penalties() >= penalties_before + 2)
                .then_some(())
        },
        || setup.council.metrics(),
    );
    let heads = setup.honest_write_converges("Still serving");
    assert!(!heads.contains(&own.hash().to_string()));
    assert!(setup.council.status().network.rejections.is_empty());
    setup.shutdown();
}

#[test]
fn forged_unauthorized_and_badly_signed_changes_are_rejected_and_counted() {
    let setup = Setup::new();
    let mallory = setup.client(setup.hostile.secret_bytes());
    let stranger = identity::Keypair::from_seed([99; 32]);
    let mut replica = setup.replica.clone_for_test();
    let now = now_ms();

    // Signed by mallory but not allowed: another pod's document, and the council's.
    let other_pod = replica
        .craft(
            &setup.hostile,
            &DocId::Pod("emea".into()),
            &learning("l-emea", "Forged in emea", "pod/emea", &setup.hostile),
            now,
        )
        .expect("crafted");
    let promotion = replica
        .craft(
            &setup.hostile,
            &DocId::Council,
            &Op::AddMember(Member {
                public_key: setup.hostile.public().to_hex(),
                name: "mallory".into(),
                role: Role::Council,
                scope: None,
                admitted_by: setup.hostile.public().to_hex(),
                admitted_at_ms: now,
                revoked: false,
            }),
            now,
        )
        .expect("crafted");
    // Signed by a key that is no member.
    let strangers = replica
        .craft(
            &stranger,
            &DocId::Pod("stranger".into()),
            &learning("l-stranger", "Stranger's note", "pod/stranger", &stranger),
            now,
        )
        .expect("crafted");
    // Mallory's own legitimate change, first with a broken signature, then intact.
    let (own, broken) = own_and_broken(&setup, &mut replica, "l-own");

    setup.serve_to_council(
        &mallory,
        vec![
            response(&replica, vec![broken]),
            response(&replica, vec![other_pod.clone()]),
            response(&replica, vec![promotion.clone()]),
            response(&replica, vec![strangers.clone()]),
        ],
    );
    let status = wait_for(
        "the council to count every rejection",
        || {
            let status = setup.council.status();
            let count = |reason: &str| status.network.rejections.get(reason).copied().unwrap_or(0);
            (count("bad_signature") >= 1
                && count("not_allowed") >= 2
                && count("unknown_author") >= 1)
                .then_some(status)
        },
        || format!("{:?}", setup.council.status().network),
    );
    let bad: Vec<String> = [&other_pod, &promotion, &strangers]
        .iter()
        .map(|e| e.hash().to_string())
        .collect();
    assert!(bad.iter().all(|h| !status.heads.contains(h)), "{status:?}");
    let mallory_peer = setup.hostile_peer_id();
    let as_seen = status
        .network
        .peers
        .iter()
        .find(|p| p.peer_id == mallory_peer)
        .expect("mallory is still a connected member");
    assert!(as_seen.rejected >= 4, "{as_seen:?}");

    // A broken signature does not poison the change: the intact copy is accepted.
    setup.serve_to_council(&mallory, vec![response(&replica, vec![own.clone()])]);
    let own_hash = own.hash().to_string();
    let heads = setup.wait_converged("mallory's intact change to reach both nodes", |heads| {
        heads.contains(&own_hash)
    });
    assert!(bad.iter().all(|h| !heads.contains(h)));

    let heads = setup.honest_write_converges("Honest after forgeries");
    assert!(bad.iter().all(|h| !heads.contains(h)));
    for node in [&setup.council, &setup.pod] {
        let show = node.exec(&["registry", "show"]).to_string();
        for forged in ["Forged in emea", "Stranger's note"] {
            assert!(!show.contains(forged), "{forged} applied: {show}");
        }
        let members = node.exec(&["member", "list"]);
        let mallory = members
            .as_array()
            .or_else(|| members["members"].as_array())
            .expect("members list")
            .iter()
            .find(|m| m["name"] == "mallory")
            .expect("mallory is listed")
            .clone();
        assert_eq!(mallory["role"], "pod", "{mallory}");
    }
    setup.shutdown();
}

impl Setup {
    fn hostile_peer_id(&self) -> String {
        net::Keypair::from_secret_seed(self.hostile.secret_bytes())
            .peer_id()
            .to_string()
    }
}

/// Cloning a replica for a test: the replica is not `Clone`, so rebuild it from its encoded state.
trait CloneForTest {
    fn clone_for_test(&self) -> Replica;
}

impl CloneForTest for Replica {
    fn clone_for_test(&self) -> Replica {
        registry::ReplicaState::decode(&registry::ReplicaState::encode(self))
            .expect("a replica's own state decodes")
    }
}

#[test]
fn pushed_forgeries_and_garbage_are_refused_like_pulled_ones() {
    let setup = Setup::new();
    let mallory = setup.client(setup.hostile.secret_bytes());
    let mut replica = setup.replica.clone_for_test();
    let now = now_ms();
    let penalties_before = setup.council.penalties();
    let other_pod = replica
        .craft(
            &setup.hostile,
            &DocId::Pod("emea".into()),
            &learning(
                "l-push-emea",
                "Pushed into emea",
                "pod/emea",
                &setup.hostile,
            ),
            now,
        )
        .expect("crafted");
    let (own, broken) = own_and_broken(&setup, &mut replica, "l-push-own");
    let push = |envelopes: Vec<Envelope>| registry::sync::Push::encode_envelopes(envelopes);
    for (what, bytes) in [
        ("a badly signed push", push(vec![broken])),
        ("an unauthorized push", push(vec![other_pod.clone()])),
    ] {
        let answer = setup
            .request(&mallory, bytes)
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_ne!(answer.first(), Some(&ERROR_TAG), "{what}: it is read");
    }
    let truncated = push(vec![own.clone()]);
    for (what, bytes) in [
        ("garbage after the push tag", vec![5, 0xff, 0xff, 0xff]),
        (
            "a truncated push",
            truncated[..truncated.len() / 2].to_vec(),
        ),
    ] {
        let answer = setup
            .request(&mallory, bytes)
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        assert_eq!(answer.first(), Some(&ERROR_TAG), "{what}: {answer:?}");
    }
    let status = wait_for(
        "the council to count the pushed rejections and penalize the garbage",
        || {
            let status = setup.council.status();
            let count = |reason: &str| status.network.rejections.get(reason).copied().unwrap_or(0);
            (count("bad_signature") >= 1
                && count("not_allowed") >= 1
                && setup.council.penalties() >= penalties_before + 2)
                .then_some(status)
        },
        || format!("{:?}", setup.council.status().network),
    );
    assert!(!status.heads.contains(&other_pod.hash().to_string()));
    // The intact change, pushed, is accepted and reaches the other honest node too.
    let answer = setup
        .request(&mallory, push(vec![own.clone()]))
        .expect("an intact push is answered");
    assert_ne!(answer.first(), Some(&ERROR_TAG));
    let own_hash = own.hash().to_string();
    setup.wait_converged("mallory's pushed change to reach both nodes", |heads| {
        heads.contains(&own_hash)
    });
}
