//! Release benchmark of the registry's import and open paths against plain automerge, in the same run.
//!
//! Builds a deterministic federation (a council key, 18 pod members across 6 pods, a steward and a partner), lets
//! every author write small realistic changes into its own replica while exchanging envelopes with the other
//! authors of its document (and the council's) every few hundred writes, then measures:
//!
//! 1. import of the whole bundle into a fresh replica: sans-IO [`Replica::receive`] and durable [`Node::import`],
//!    each as a ratio of plain automerge `apply_changes` of the same changes without any checks;
//! 2. opening a node that holds every change ([`Node::open`]: sled open, snapshot load, log tail replay) and its
//!    disk size, against replaying every change with plain automerge;
//! 3. envelope overhead: bytes per envelope beyond the raw change.
//!
//! Run: `cargo bench -p node --bench registry_import` (add `-- --changes 20000` for a smoke run).
//! Flags: `--changes N` (default 100000), `--seed S`, `--exchange-every W` (writes between exchanges, default 250),
//! `--tail T` (changes left in the log after the last snapshot for the open measurement, default 5000; 0 skips it),
//! `--reps R` (repetitions of the in-memory measurements, best is reported, default 1; the plain baseline always
//! runs before and after the registry and its best run is used), `--breakdown` (also time the steps of
//! `Node::import` one by one: bundle decode, receive, sled commit, snapshot).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a `harness = false` bench reports on the terminal

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use automerge::{Automerge, Change, ChangeHash};
use identity::Keypair;
use model::{
    Approval, Audience, Budget, Decision, DocId, EventSchema, Experiment, ExperimentStatus,
    FunnelStage, Hypothesis, KeyResult, Learning, Member, MetricDefinition, MetricKind, Objective,
    Outcome, Role, StandardStatus, Variant,
};
use node::Node;
use registry::{Envelope, FederationId, Op, Replica, bundle};

/// Envelopes per `receive` call in `Node::import` (mirrors `node::exchange::IMPORT_BATCH`).
const IMPORT_BATCH: usize = 4096;
/// Import rate the registry must reach, as a share of plain automerge's.
const IMPORT_TARGET: f64 = 0.5;
/// Design bound of the envelope overhead, in bytes.
const OVERHEAD_TARGET: f64 = 100.0;
const PODS: [&str; 6] = ["emea", "apac", "amer", "latam", "nordics", "anz"];
const MEMBERS_PER_POD: usize = 3;
const PARTNER: &str = "acme";
const QUARTER: &str = "2026Q4";
const START_MS: i64 = 1_790_000_000_000;

#[derive(clap::Parser)]
#[command(
    about = "registry import: durable Node::import against automerge's own load, and envelope overhead"
)]
struct Args {
    /// Changes in the generated history (at least 200).
    #[arg(long, default_value_t = 100_000)]
    changes: usize,
    /// Seed of the generated history.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Authors exchange their changes every this many writes.
    #[arg(long, default_value_t = 250)]
    exchange_every: usize,
    /// Changes in the incremental-import tail.
    #[arg(long, default_value_t = 5_000)]
    tail: usize,
    /// Repetitions of each measurement (the best is reported).
    #[arg(long, default_value_t = 1)]
    reps: usize,
    /// Break the import down by phase.
    #[arg(long)]
    breakdown: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn parse_args() -> Args {
    let mut args: Args = clap::Parser::parse();
    assert!(args.changes >= 200, "--changes must be at least 200");
    args.exchange_every = args.exchange_every.max(1);
    args.reps = args.reps.max(1);
    args
}

/// The history's randomness: ChaCha8, seeded, the same on every platform.
struct Rng(rand_chacha::ChaCha8Rng);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(rand::SeedableRng::seed_from_u64(seed))
    }

    fn next(&mut self) -> u64 {
        rand::Rng::next_u64(&mut self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn seed(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Workload

enum Kind {
    Pod(usize),
    Steward,
    Partner,
}

struct Author {
    name: String,
    kind: Kind,
    keypair: Keypair,
    replica: Replica,
    /// Envelopes this author wrote, in order.
    outbox: Vec<Envelope>,
    /// Authors whose envelopes it receives (same document).
    peers: Vec<usize>,
    /// How many envelopes of each author (by index) and of the council it has received.
    seen: Vec<usize>,
    seen_council: usize,
    quota: usize,
    written: usize,
}

/// A record created in a pod document, visible to the pod's other members from the next round on.
struct Record {
    key: String,
    author: usize,
    round: usize,
}

struct Federation {
    id: FederationId,
    /// Every envelope, in a causal order (what an export of a replica holding all of them would list).
    envelopes: Vec<Envelope>,
    authors: usize,
    rounds: usize,
    council_changes: usize,
}

struct Clock(i64);

impl Clock {
    fn tick(&mut self) -> i64 {
        self.0 += 1_000;
        self.0
    }
}

fn generate(args: &Args) -> Federation {
    let mut rng = Rng::new(args.seed);
    let mut clock = Clock(START_MS);
    let council_key = Keypair::from_seed(rng.seed());
    let council_hex = council_key.public().to_hex();
    let mut council = Replica::new();
    let mut council_out: Vec<Envelope> = Vec::new();
    let mut envelopes: Vec<Envelope> = Vec::with_capacity(args.changes);

    let mut authors: Vec<Author> = Vec::new();
    for (pod, _) in PODS.iter().enumerate() {
        for member in 0..MEMBERS_PER_POD {
            authors.push(new_author(
                format!("{}-{member}", PODS[pod]),
                Kind::Pod(pod),
                &mut rng,
            ));
        }
    }
    authors.push(new_author("steward".into(), Kind::Steward, &mut rng));
    authors.push(new_author("partner".into(), Kind::Partner, &mut rng));
    let count = authors.len();
    for index in 0..count {
        authors[index].seen = vec![0; count];
        if let Kind::Pod(pod) = authors[index].kind {
            authors[index].peers = (0..count)
                .filter(|&other| {
                    other != index && matches!(authors[other].kind, Kind::Pod(p) if p == pod)
                })
                .collect();
        }
    }

    // Founding: genesis, members, objectives, threshold, budgets.
    let council_write = |council: &mut Replica,
                         out: &mut Vec<Envelope>,
                         all: &mut Vec<Envelope>,
                         op: Op,
                         now: i64| {
        let envelope = council
            .write(&council_key, &op, now)
            .expect("council write");
        assert!(
            out.last().map(Envelope::hash) != Some(envelope.hash()),
            "council op {op:?} changed nothing"
        );
        out.push(envelope.clone());
        all.push(envelope);
    };
    let now = clock.tick();
    let founder = Member {
        public_key: council_hex.clone(),
        name: "Acme Growth Council".into(),
        role: Role::Council,
        scope: None,
        admitted_by: council_hex.clone(),
        admitted_at_ms: now,
        revoked: false,
    };
    council_write(
        &mut council,
        &mut council_out,
        &mut envelopes,
        Op::Genesis {
            name: "Acme Growth".into(),
            founder,
        },
        now,
    );
    let id = council.federation().expect("genesis founds the federation");
    for author in &authors {
        let (role, scope) = match author.kind {
            Kind::Pod(pod) => (Role::Pod, Some(PODS[pod].to_owned())),
            Kind::Steward => (Role::Steward, None),
            Kind::Partner => (Role::Partner, Some(PARTNER.to_owned())),
        };
        let now = clock.tick();
        let member = Member {
            public_key: author.keypair.public().to_hex(),
            name: author.name.clone(),
            role,
            scope,
            admitted_by: council_hex.clone(),
            admitted_at_ms: now,
            revoked: false,
        };
        council_write(
            &mut council,
            &mut council_out,
            &mut envelopes,
            Op::AddMember(member),
            now,
        );
    }
    for (n, (title, metric)) in [
        ("Double weekly activated teams", "weekly-activated-teams"),
        (
            "Grow net revenue retention to 120%",
            "net-revenue-retention",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let objective = Objective {
            id: format!("obj-{n}"),
            title: title.into(),
            quarter: QUARTER.into(),
            north_star_metric: Some(metric.into()),
            target: Some(20_000.0),
            created_by: council_hex.clone(),
        };
        council_write(
            &mut council,
            &mut council_out,
            &mut envelopes,
            Op::AddObjective(objective),
            clock.tick(),
        );
    }
    council_write(
        &mut council,
        &mut council_out,
        &mut envelopes,
        Op::SetThreshold {
            quarter: QUARTER.into(),
            cost: 10_000.0,
        },
        clock.tick(),
    );
    for pod in PODS {
        let budget = Budget {
            pod: pod.into(),
            quarter: QUARTER.into(),
            allocated: 50_000.0,
            by: council_hex.clone(),
        };
        council_write(
            &mut council,
            &mut council_out,
            &mut envelopes,
            Op::AllocateBudget(budget),
            clock.tick(),
        );
    }

    // Quotas: the council writes 2 changes per round, the authors share the rest evenly.
    let per_author = args.changes / count;
    let rounds = per_author.div_ceil(args.exchange_every).max(1);
    let council_changes = council_out.len() + 2 * rounds;
    let author_changes = args.changes - council_changes;
    for (index, author) in authors.iter_mut().enumerate() {
        author.quota = author_changes / count + usize::from(index < author_changes % count);
    }
    let per_round = authors[0].quota.div_ceil(rounds);

    let mut krs: Vec<Vec<Record>> = (0..PODS.len()).map(|_| Vec::new()).collect();
    let mut experiments: Vec<Vec<Record>> = (0..PODS.len()).map(|_| Vec::new()).collect();
    let mut all_experiments: Vec<String> = Vec::new();
    let mut schemas: Vec<(String, u32)> = Vec::new();
    for round in 0..rounds {
        // The council decides and re-budgets.
        if let Some(key) = (!all_experiments.is_empty()).then(|| rng.pick(&all_experiments).clone())
        {
            let approval = Approval {
                experiment: key,
                decision: if rng.unit() < 0.8 {
                    Decision::Approved
                } else {
                    Decision::Rejected
                },
                reason: "fits the quarter's budget and does not overlap another pod's audience"
                    .into(),
                by: council_hex.clone(),
                at_ms: clock.0,
            };
            council_write(
                &mut council,
                &mut council_out,
                &mut envelopes,
                Op::Decide(approval),
                clock.tick(),
            );
        } else {
            council_write(
                &mut council,
                &mut council_out,
                &mut envelopes,
                Op::SetThreshold {
                    quarter: QUARTER.into(),
                    cost: 10_001.0 + round as f64,
                },
                clock.tick(),
            );
        }
        let budget = Budget {
            pod: rng.pick(&PODS).to_string(),
            quarter: QUARTER.into(),
            allocated: 40_000.0 + round as f64 * 100.0 + rng.below(100) as f64,
            by: council_hex.clone(),
        };
        council_write(
            &mut council,
            &mut council_out,
            &mut envelopes,
            Op::AllocateBudget(budget),
            clock.tick(),
        );

        // Exchange: everyone catches up with the council and with the other authors of its document.
        for index in 0..count {
            let mut incoming: Vec<Envelope> = council_out[authors[index].seen_council..].to_vec();
            authors[index].seen_council = council_out.len();
            for peer in authors[index].peers.clone() {
                let from = authors[index].seen[peer];
                incoming.extend_from_slice(&authors[peer].outbox[from..]);
                authors[index].seen[peer] = authors[peer].outbox.len();
            }
            let author = &mut authors[index];
            if author.replica.federation().is_none() {
                author.replica.adopt(id).expect("fresh replica");
            }
            // Generation is not measured: restore (apply without deciding) what the measured import checks later.
            author.replica.restore(incoming).expect("restore");
        }

        // Work.
        for (index, author) in authors.iter_mut().enumerate() {
            let writes = per_round.min(author.quota - author.written);
            for _ in 0..writes {
                // A write that changes nothing (a status or value set to what it already is) is refused as a
                // conflict: draw another op.
                let envelope = loop {
                    let now = clock.tick();
                    let op = match author.kind {
                        Kind::Pod(pod) => pod_op(
                            &mut rng,
                            index,
                            author,
                            round,
                            now,
                            &mut krs[pod],
                            &mut experiments[pod],
                            &mut all_experiments,
                        ),
                        Kind::Steward => steward_op(&mut rng, author, &mut schemas),
                        Kind::Partner => learning_op(&mut rng, author, PARTNER, now),
                    };
                    match author.replica.write(&author.keypair, &op, now) {
                        Ok(envelope) => break envelope,
                        Err(registry::Error::Conflict(_)) => continue,
                        Err(e) => panic!("{} cannot write {op:?}: {e}", author.name),
                    }
                };
                author.outbox.push(envelope.clone());
                author.written += 1;
                envelopes.push(envelope);
            }
        }
    }
    assert_eq!(envelopes.len(), args.changes);
    Federation {
        id,
        envelopes,
        authors: count,
        rounds,
        council_changes,
    }
}

fn new_author(name: String, kind: Kind, rng: &mut Rng) -> Author {
    Author {
        name,
        kind,
        keypair: Keypair::from_seed(rng.seed()),
        replica: Replica::new(),
        outbox: Vec::new(),
        peers: Vec::new(),
        seen: Vec::new(),
        seen_council: 0,
        quota: 0,
        written: 0,
    }
}

const METRICS: [&str; 6] = [
    "activation-rate",
    "trial-starts",
    "weekly-activated-teams",
    "checkout-conversion",
    "support-tickets",
    "seat-expansion",
];
const TAGS: [&str; 8] = [
    "pricing",
    "onboarding",
    "social-proof",
    "email",
    "checkout",
    "mobile",
    "copy",
    "referral",
];

#[allow(clippy::too_many_arguments)]
fn pod_op(
    rng: &mut Rng,
    index: usize,
    author: &Author,
    round: usize,
    now: i64,
    krs: &mut Vec<Record>,
    experiments: &mut Vec<Record>,
    all_experiments: &mut Vec<String>,
) -> Op {
    let Kind::Pod(pod) = author.kind else {
        unreachable!("pod_op is for pod members")
    };
    let pod = PODS[pod];
    let visible = |records: &[Record]| -> Vec<usize> {
        (0..records.len())
            .filter(|&i| records[i].author == index || records[i].round < round)
            .collect()
    };
    let roll = rng.unit();
    let visible_krs = visible(krs);
    if visible_krs.is_empty() || roll < 0.03 {
        let key = format!("kr-{}-{}", author.name, author.written);
        krs.push(Record {
            key: key.clone(),
            author: index,
            round,
        });
        return Op::AddKeyResult(KeyResult {
            id: key,
            objective: format!("obj-{}", rng.below(2)),
            pod: pod.into(),
            metric: rng.pick(&METRICS).to_string(),
            baseline: 0.31,
            target: 0.40,
            current: None,
            updated_at_ms: now,
            window_days: model::okr::DEFAULT_KEY_RESULT_WINDOW_DAYS,
        });
    }
    if roll < 0.60 {
        let kr = &krs[*rng.pick(&visible_krs)];
        return Op::UpdateKeyResult {
            id: kr.key.clone(),
            current: 0.31 + rng.below(1_000) as f64 / 10_000.0,
            updated_at_ms: now,
        };
    }
    if roll < 0.72 {
        return learning_op(rng, author, pod, now);
    }
    let visible_experiments = visible(experiments);
    if roll < 0.80 || visible_experiments.is_empty() {
        let key = format!("exp-{}-{}", author.name, author.written);
        experiments.push(Record {
            key: key.clone(),
            author: index,
            round,
        });
        all_experiments.push(key.clone());
        let cost = 1_000.0 + rng.below(15_000) as f64;
        return Op::NewExperiment(Experiment {
            key,
            pod: pod.into(),
            hypothesis: Hypothesis::parse(
                "if we cut the signup form to two fields then activation rises because fewer steps lose fewer users",
            ),
            funnel_stage: FunnelStage::Activation,
            audience: Audience {
                region: Some(pod.into()),
                segment: Some("new-teams".into()),
            },
            variants: vec![
                Variant {
                    key: "control".into(),
                    weight: 0.5,
                },
                Variant {
                    key: "treatment".into(),
                    weight: 0.5,
                },
            ],
            primary_metric: Some(rng.pick(&METRICS).to_string()),
            guardrail_metrics: vec!["support-tickets".into()],
            start_date: Some("2026-11-02".into()),
            end_date: Some("2026-11-30".into()),
            cost,
            status: ExperimentStatus::Draft,
            namespace: None,
            started_at_ms: None,
            hash_version: 1,
            coverage: 1.0,
            created_by: author.keypair.public().to_hex(),
            created_at_ms: now,
        });
    }
    if roll < 0.90 {
        let experiment = &experiments[*rng.pick(&visible_experiments)];
        return Op::SetExperimentStatus {
            key: experiment.key.clone(),
            status: *rng.pick(&[
                ExperimentStatus::Running,
                ExperimentStatus::Stopped,
                ExperimentStatus::Concluded,
            ]),
            at_ms: 0,
        };
    }
    if roll < 0.95 {
        return Op::ProposeMetric(metric(rng, pod, StandardStatus::Proposed));
    }
    Op::ProposeSchema(schema(
        &format!("{pod} Signup Completed"),
        1 + rng.below(20) as u32,
        StandardStatus::Proposed,
        pod,
    ))
}

fn steward_op(rng: &mut Rng, author: &Author, schemas: &mut Vec<(String, u32)>) -> Op {
    let approver = author.keypair.public().to_hex();
    if rng.unit() < 0.5 {
        let mut definition = metric(rng, "standards", StandardStatus::Approved);
        definition.approved_by = Some(approver);
        return Op::ApproveMetric(definition);
    }
    let (event, version) = if schemas.is_empty() || rng.unit() < 0.3 {
        let event = format!("{} Event {}", rng.pick(&TAGS), schemas.len());
        schemas.push((event.clone(), 1));
        (event, 1)
    } else {
        let at = rng.below(schemas.len());
        schemas[at].1 += 1;
        schemas[at].clone()
    };
    let mut approved = schema(&event, version, StandardStatus::Approved, "emea");
    approved.approved_by = Some(approver);
    Op::ApproveSchema(approved)
}

fn learning_op(rng: &mut Rng, author: &Author, source: &str, now: i64) -> Op {
    let tag = rng.pick(&TAGS);
    let lift = rng.below(90) as f64 / 10.0;
    Op::AddLearning(Learning {
        id: format!("learning-{}-{}", author.name, author.written),
        title: format!("{tag}: what moved trial starts"),
        body: format!(
            "Variant B of the {tag} test lifted trial starts {lift}% over four weeks; the effect held on mobile \
             and faded for returning teams."
        ),
        outcome: Some(*rng.pick(&[Outcome::Win, Outcome::Loss, Outcome::Inconclusive])),
        tags: vec![(*tag).into(), "activation".into()],
        experiment: None,
        source: source.into(),
        author: author.keypair.public().to_hex(),
        created_at_ms: now,
    })
}

fn metric(rng: &mut Rng, proposer: &str, status: StandardStatus) -> MetricDefinition {
    let key = rng.pick(&METRICS);
    MetricDefinition {
        key: (*key).into(),
        kind: MetricKind::Binomial {
            event: format!("{key} reached"),
            window_days: 7 + rng.below(3) as u32 * 7,
        },
        direction: Default::default(),
        capping_percentile: None,
        status,
        proposed_by: proposer.into(),
        approved_by: None,
    }
}

fn schema(event: &str, version: u32, status: StandardStatus, proposer: &str) -> EventSchema {
    EventSchema {
        event: event.into(),
        version,
        properties: vec![
            "plan:string:required".parse().expect("valid property"),
            "seats:integer".parse().expect("valid property"),
            "email:string:pii".parse().expect("valid property"),
        ],
        legal_basis: "contract".into(),
        retention_days: 90,
        status,
        proposed_by: proposer.into(),
        approved_by: None,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Measurements

/// Changes grouped by document, in bundle order.
fn changes_by_doc(envelopes: &[Envelope]) -> BTreeMap<DocId, Vec<Change>> {
    let mut out: BTreeMap<DocId, Vec<Change>> = BTreeMap::new();
    for envelope in envelopes {
        out.entry(envelope.doc.clone())
            .or_default()
            .push(envelope.change.clone());
    }
    out
}

fn bytes_by_doc(envelopes: &[Envelope]) -> BTreeMap<DocId, Vec<Vec<u8>>> {
    let mut out: BTreeMap<DocId, Vec<Vec<u8>>> = BTreeMap::new();
    for envelope in envelopes {
        out.entry(envelope.doc.clone())
            .or_default()
            .push(envelope.change.raw_bytes().to_vec());
    }
    out
}

fn sorted_heads(docs: &[Automerge]) -> Vec<ChangeHash> {
    let mut heads: Vec<ChangeHash> = docs.iter().flat_map(|d| d.get_heads()).collect();
    heads.sort();
    heads
}

/// Plain automerge: one `apply_changes` per document of already decoded changes, no checks at all.
fn plain_apply(groups: BTreeMap<DocId, Vec<Change>>) -> (Duration, Vec<Automerge>) {
    let start = Instant::now();
    let docs: Vec<Automerge> = groups
        .into_values()
        .map(|changes| {
            let mut doc = Automerge::new();
            doc.apply_changes(changes).expect("plain apply");
            doc
        })
        .collect();
    (start.elapsed(), docs)
}

/// Plain automerge in import-sized batches: per batch, one `apply_changes` per document it touches.
fn plain_apply_batched(envelopes: &[Envelope], batch: usize) -> (Duration, Vec<Automerge>) {
    let batches: Vec<BTreeMap<DocId, Vec<Change>>> =
        envelopes.chunks(batch).map(changes_by_doc).collect();
    let mut docs: BTreeMap<DocId, Automerge> = BTreeMap::new();
    let start = Instant::now();
    for batch in batches {
        for (doc, changes) in batch {
            docs.entry(doc)
                .or_default()
                .apply_changes(changes)
                .expect("plain apply");
        }
    }
    (start.elapsed(), docs.into_values().collect())
}

/// Plain automerge from stored bytes: decode every change, then one `apply_changes` per document.
fn plain_replay(groups: &BTreeMap<DocId, Vec<Vec<u8>>>) -> (Duration, Vec<Automerge>) {
    let start = Instant::now();
    let docs: Vec<Automerge> = groups
        .values()
        .map(|raw| {
            let changes: Vec<Change> = raw
                .iter()
                .map(|b| Change::from_bytes(b.clone()).expect("change decodes"))
                .collect();
            let mut doc = Automerge::new();
            doc.apply_changes(changes).expect("plain apply");
            doc
        })
        .collect();
    (start.elapsed(), docs)
}

/// Sans-IO receive into a fresh replica, in batches (`None`: one call with everything).
fn receive(federation: &Federation, batch: Option<usize>) -> (Duration, Replica) {
    let batches: Vec<Vec<Envelope>> = match batch {
        Some(size) => federation
            .envelopes
            .chunks(size)
            .map(<[Envelope]>::to_vec)
            .collect(),
        None => vec![federation.envelopes.clone()],
    };
    let mut replica = Replica::new();
    replica.adopt(federation.id).expect("fresh replica");
    let mut accepted = 0;
    let start = Instant::now();
    for batch in batches {
        let receipt = replica.receive(batch).expect("receive");
        assert!(
            receipt.rejected.is_empty(),
            "{:?}",
            receipt.rejected.first()
        );
        accepted += receipt.accepted.len();
    }
    let elapsed = start.elapsed();
    assert_eq!(accepted, federation.envelopes.len());
    (elapsed, replica)
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.metadata() {
                    Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
                    Ok(meta) => meta.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn best(times: &[Duration]) -> Duration {
    times
        .iter()
        .copied()
        .min()
        .expect("at least one repetition")
}

fn rate(changes: usize, time: Duration) -> f64 {
    changes as f64 / time.as_secs_f64()
}

fn ms(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1e3)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn main() {
    let args = parse_args();
    let n = args.changes;
    let started = Instant::now();
    eprintln!("generating {n} signed changes (seed {}) ...", args.seed);
    let federation = generate(&args);
    let generated = started.elapsed();
    let encoded: Vec<Vec<u8>> = federation
        .envelopes
        .iter()
        .map(Envelope::to_bytes)
        .collect();
    let bundle_bytes = bundle::write(&federation.id, encoded.iter().map(Vec::as_slice));
    let raw_total: usize = federation
        .envelopes
        .iter()
        .map(|e| e.change.raw_bytes().len())
        .sum();
    let docs = changes_by_doc(&federation.envelopes);
    eprintln!(
        "generated in {:.1} s: {} authors + council ({} council changes), {} exchange rounds, {} documents, bundle {}",
        generated.as_secs_f64(),
        federation.authors,
        federation.council_changes,
        federation.rounds,
        docs.len(),
        mib(bundle_bytes.len() as u64)
    );

    // Envelope overhead.
    let overhead_total: usize = federation
        .envelopes
        .iter()
        .map(Envelope::overhead_bytes)
        .sum();
    let overhead = overhead_total as f64 / n as f64;
    let auth_heads: usize = federation
        .envelopes
        .iter()
        .map(|e| e.auth_heads.len())
        .sum();
    let doc_bytes: usize = federation
        .envelopes
        .iter()
        .map(|e| e.doc.to_string().len())
        .sum();
    // The context (document, auth heads in base64, fact) travels inside the change's commit message: count it as
    // overhead, since a change without it would be that much smaller.
    let context_bytes: usize = federation
        .envelopes
        .iter()
        .map(|e| e.change.message().map_or(0, str::len))
        .sum();
    let framing = overhead - 64.0 - context_bytes as f64 / n as f64;

    // In-memory import: plain automerge vs sans-IO receive, interleaved, best of `reps`.
    eprintln!("measuring in-memory import ({} reps) ...", args.reps);
    let mut plain_times = Vec::new();
    let mut plain_batched_times = Vec::new();
    let mut batched_times = Vec::new();
    let mut single_times = Vec::new();
    let mut plain_heads = Vec::new();
    for _ in 0..args.reps {
        let (time, plain_docs) = plain_apply(docs.clone());
        plain_heads = sorted_heads(&plain_docs);
        plain_times.push(time);
        drop(plain_docs);
        let (time, plain_docs) = plain_apply_batched(&federation.envelopes, IMPORT_BATCH);
        assert_eq!(sorted_heads(&plain_docs), plain_heads);
        plain_batched_times.push(time);
        drop(plain_docs);
        let (time, replica) = receive(&federation, Some(IMPORT_BATCH));
        assert_eq!(
            replica.heads(),
            plain_heads,
            "receive and plain apply disagree"
        );
        batched_times.push(time);
        drop(replica);
        let (time, replica) = receive(&federation, None);
        assert_eq!(
            replica.heads(),
            plain_heads,
            "receive and plain apply disagree"
        );
        single_times.push(time);
        drop(replica);
        let (time, plain_docs) = plain_apply(docs.clone());
        plain_times.push(time);
        drop(plain_docs);
    }
    let plain = best(&plain_times);
    let plain_batched = best(&plain_batched_times);
    let batched = best(&batched_times);
    let single = best(&single_times);

    // Durable import through the node, then open.
    eprintln!("measuring Node::import and Node::open ...");
    let temp = tempfile::tempdir().expect("temp dir");
    let full_dir = temp.path().join("full");
    let mut node = Node::open(&full_dir).expect("open fresh node");
    let start = Instant::now();
    let report = node
        .import("bench.bundle", &bundle_bytes, |_, _| {})
        .expect("import");
    let import = start.elapsed();
    assert_eq!(report.accepted, n, "{:?}", report.rejected.first());
    assert!(report.rejected.is_empty());
    drop(node);
    let (open_full, size_full, du_full) = open_node(&full_dir, n, &plain_heads);
    let breakdown = args
        .breakdown
        .then(|| import_breakdown(&federation, &bundle_bytes, &temp.path().join("steps")));

    // A node whose last `tail` changes are in the log after its snapshot (two imports), as after a later sync.
    let tail =
        (args.tail < store::SNAPSHOT_EVERY_CHANGES as usize && args.tail < n).then_some(args.tail);
    let tail_open = tail.map(|tail| {
        let dir = temp.path().join("tail");
        let mut node = Node::open(&dir).expect("open fresh node");
        let split = n - tail;
        for part in [&encoded[..split], &encoded[split..]] {
            let bytes = bundle::write(&federation.id, part.iter().map(Vec::as_slice));
            let report = node
                .import("part.bundle", &bytes, |_, _| {})
                .expect("import");
            assert!(report.rejected.is_empty());
        }
        drop(node);
        open_node(&dir, n, &plain_heads)
    });

    // Baselines of the open: replay every change from its bytes; load automerge's own saved documents.
    let bytes = bytes_by_doc(&federation.envelopes);
    let mut replay_times = Vec::new();
    let mut saved = Vec::new();
    for _ in 0..args.reps {
        let (time, plain_docs) = plain_replay(&bytes);
        assert_eq!(sorted_heads(&plain_docs), plain_heads);
        replay_times.push(time);
        saved = plain_docs.iter().map(Automerge::save).collect();
    }
    let replay = best(&replay_times);
    let start = Instant::now();
    let loaded: Vec<Automerge> = saved
        .iter()
        .map(|s| Automerge::load(s).expect("load"))
        .collect();
    let load = start.elapsed();
    drop(loaded);
    let saved_bytes: usize = saved.iter().map(Vec::len).sum();

    // Report.
    let plain_rate = rate(n, plain);
    let receive_ratio = rate(n, batched) / plain_rate;
    let import_ratio = rate(n, import) / plain_rate;
    println!();
    println!(
        "registry import benchmark: {n} changes, {} authors + council, {} documents, seed {}, {} exchange rounds",
        federation.authors,
        docs.len(),
        args.seed,
        federation.rounds
    );
    println!(
        "bundle {} ({} of raw changes); best of {} reps for in-memory figures",
        mib(bundle_bytes.len() as u64),
        mib(raw_total as u64),
        args.reps
    );
    println!();
    println!(
        "{:<58} {:>12} {:>14} {:>8}",
        "import (fresh replica)", "time", "changes/s", "ratio"
    );
    let row = |name: &str, time: Duration| {
        println!(
            "{:<58} {:>12} {:>14.0} {:>8.3}",
            name,
            ms(time),
            rate(n, time),
            rate(n, time) / plain_rate
        );
    };
    row("plain automerge apply_changes, no checks (baseline)", plain);
    row(
        "plain automerge, same batches of 4096 as the import",
        plain_batched,
    );
    row("Replica::receive, batches of 4096 (sans-IO)", batched);
    row("Replica::receive, one call", single);
    row(
        "Node::import (bundle decode, receive, sled durable)",
        import,
    );
    if let Some(steps) = &breakdown {
        println!("  Node::import step by step (same calls, timed one by one):");
        let total: Duration = steps.iter().map(|(_, t)| *t).sum();
        for (name, time) in steps {
            println!(
                "    {:<54} {:>12} {:>13.1}%",
                name,
                ms(*time),
                100.0 * time.as_secs_f64() / total.as_secs_f64()
            );
        }
    }
    println!();
    println!(
        "{:<58} {:>12} {:>14} {:>8}",
        "open (replica holding all changes)", "time", "", "ratio"
    );
    let open_row = |name: &str, time: Duration| {
        println!(
            "{:<58} {:>12} {:>14} {:>8.3}",
            name,
            ms(time),
            "",
            time.as_secs_f64() / replay.as_secs_f64()
        );
    };
    open_row(
        "plain automerge: decode + apply every change (baseline)",
        replay,
    );
    open_row("plain automerge: Automerge::load of saved docs", load);
    open_row("Node::open, snapshot covers every change", open_full);
    if let (Some(tail), Some((time, _, _))) = (tail, &tail_open) {
        open_row(&format!("Node::open, snapshot + log tail of {tail}"), *time);
    }
    println!("(open ratio = time / baseline time: lower is better)");
    println!();
    println!("disk");
    println!(
        "  node db, snapshot covers all: sled size_on_disk {} ({} in files)",
        mib(size_full),
        mib(du_full)
    );
    if let Some((_, size, du)) = &tail_open {
        println!(
            "  node db, snapshot + tail:     sled size_on_disk {} ({} in files)",
            mib(*size),
            mib(*du)
        );
    }
    println!(
        "  raw change bytes {}, automerge saved docs {}, bundle {}",
        mib(raw_total as u64),
        mib(saved_bytes as u64),
        mib(bundle_bytes.len() as u64)
    );
    println!();
    println!(
        "envelope overhead: {overhead:.1} bytes/envelope beyond the raw change without its context (mean change \
         {:.1} bytes): signature 64, context {:.1} in the change ({:.2} auth heads x 43 in base64, doc id {:.1}), \
         length prefix {framing:.1}",
        raw_total as f64 / n as f64,
        context_bytes as f64 / n as f64,
        auth_heads as f64 / n as f64,
        doc_bytes as f64 / n as f64,
    );
    println!();
    println!(
        "{} import, Replica::receive: {receive_ratio:.3} of plain automerge (target >= {IMPORT_TARGET})",
        verdict(receive_ratio >= IMPORT_TARGET)
    );
    println!(
        "{} import, Node::import (durable): {import_ratio:.3} of plain automerge (target >= {IMPORT_TARGET})",
        verdict(import_ratio >= IMPORT_TARGET)
    );
    println!(
        "{} envelope overhead: {overhead:.1} bytes (target <= {OVERHEAD_TARGET})",
        verdict(overhead <= OVERHEAD_TARGET)
    );
    println!(
        "INFO open: Node::open {} = {:.3}x the plain automerge replay ({}); no target set",
        ms(open_full),
        open_full.as_secs_f64() / replay.as_secs_f64(),
        ms(replay)
    );
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
}

/// The steps of `Node::import`, timed one by one: bundle decode, `Replica::receive` per batch, `Store::commit`
/// per batch (sled writes and flush), and the closing `maybe_snapshot`.
fn import_breakdown(
    federation: &Federation,
    bytes: &[u8],
    dir: &Path,
) -> Vec<(&'static str, Duration)> {
    let start = Instant::now();
    let read = bundle::read(bytes).expect("bundle");
    let envelopes: Vec<Envelope> = read
        .entries
        .into_iter()
        .map(|entry| match entry {
            bundle::Entry::Envelope(envelope) => *envelope,
            bundle::Entry::Malformed { problem, .. } => panic!("malformed entry: {problem}"),
        })
        .collect();
    let decode = start.elapsed();
    let store = store::Store::open(dir).expect("store");
    store.set_federation(federation.id).expect("federation");
    let mut replica = Replica::new();
    replica.adopt(federation.id).expect("fresh replica");
    let (mut receive, mut commit) = (Duration::ZERO, Duration::ZERO);
    for batch in envelopes.chunks(IMPORT_BATCH) {
        let batch = batch.to_vec();
        let start = Instant::now();
        let receipt = replica.receive(batch).expect("receive");
        receive += start.elapsed();
        let start = Instant::now();
        store.commit(&receipt).expect("commit");
        commit += start.elapsed();
    }
    let start = Instant::now();
    store.maybe_snapshot(&replica, false).expect("snapshot");
    let snapshot = start.elapsed();
    vec![
        ("bundle::read (decode envelopes and changes)", decode),
        ("Replica::receive, batches of 4096", receive),
        ("Store::commit per batch (sled batches + flush)", commit),
        (
            "Store::maybe_snapshot (ReplicaState::encode + write)",
            snapshot,
        ),
    ]
}

/// Opens the node in `dir`, checks it holds every change, and returns the open time and disk sizes.
fn open_node(dir: &Path, n: usize, heads: &[ChangeHash]) -> (Duration, u64, u64) {
    let start = Instant::now();
    let node = Node::open(dir).expect("reopen");
    let time = start.elapsed();
    assert_eq!(node.replica().len(), n);
    assert_eq!(node.replica().heads(), heads);
    let size = node.size_on_disk().expect("size");
    drop(node);
    (time, size, dir_size(&dir.join(node::DB_DIR_NAME)))
}
