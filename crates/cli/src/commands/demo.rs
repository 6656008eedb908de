//! `growthmesh demo`: a local federation in a temp dir (a council, three regional pods and a partner, each with its
//! own data dir) doing a realistic quarter of work, with a forged and an unauthorized change thrown in, replicated
//! by offline bundles delivered in shuffled order until every replica shows identical heads.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use model::{
    Audience, EventSchema, Experiment, ExperimentStatus, Hypothesis, KeyResult, Learning, Member,
    Objective, Outcome, Role, StandardStatus, Variant,
};
use node::Node;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use registry::bundle::{self, Entry};
use registry::{Envelope, Op};

use crate::context::now_ms;
use crate::exit;

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Exit when the demo is done (the offline demo always does; accepted for scripts).
    #[arg(long)]
    pub exit: bool,
    /// With `--offline`: seed of the bundle delivery shuffle (default: random, printed). The network demo's order
    /// is the network's.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the data dirs here instead of a temp dir.
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Replicate by offline bundles in shuffled order instead of running nodes on loopback.
    #[arg(long)]
    pub offline: bool,
}

struct Replica {
    name: &'static str,
    node: Node,
}

/// Runs the demo.
pub fn run(args: DemoArgs, json: bool) -> anyhow::Result<u8> {
    let temp = tempfile::tempdir().context("creating a temp dir")?;
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let seed = args.seed.unwrap_or_else(rand::random);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let say = |line: String| {
        if !json {
            say!("{line}");
        }
    };
    if !args.offline {
        if args.seed.is_some() {
            tracing::warn!(
                "--seed replays the offline demo's shuffle; the network demo's order is the network's (add --offline)"
            );
        }
        say(format!(
            "growthmesh demo: five nodes on loopback, data dirs under {}",
            root.display()
        ));
        let converged = super::demo_network::run(&root, !args.exit, &say)?;
        return Ok(if converged { exit::OK } else { exit::FAILURE });
    }
    say(format!(
        "growthmesh demo: data dirs under {} (shuffle seed {seed})",
        root.display()
    ));
    let mut replicas = open_replicas(&root)?;
    found(&mut replicas, &say)?;
    sync(&mut replicas, &mut rng, Vec::new(), &say)?;
    quarter_of_work(&mut replicas, &say)?;
    let hostile = hostile_changes(&mut replicas)?;
    say(
        "-- replicating by bundles, shuffled, with a forged and an unauthorized change injected"
            .into(),
    );
    let rejections = sync(&mut replicas, &mut rng, hostile, &say)?;
    council_approves(&mut replicas, &say)?;
    sync(&mut replicas, &mut rng, Vec::new(), &say)?;
    report(&replicas, &rejections, seed, json)
}

fn open_replicas(root: &Path) -> anyhow::Result<Vec<Replica>> {
    ["council", "emea", "apac", "amer", "acme-partner"]
        .into_iter()
        .map(|name| {
            Ok(Replica {
                name,
                node: Node::open(&root.join(name))?,
            })
        })
        .collect()
}

fn key(replicas: &[Replica], index: usize) -> String {
    replicas[index].node.identity().public_key
}

fn found(replicas: &mut [Replica], say: &impl Fn(String)) -> anyhow::Result<()> {
    let now = now_ms();
    let council_key = key(replicas, 0);
    replicas[0].node.create_federation("Acme Growth", now)?;
    say(format!(
        "council founded federation {}",
        replicas[0].node.identity().federation.unwrap_or_default()
    ));
    let members = [
        (1, Role::Pod, "EMEA pod", "emea"),
        (2, Role::Pod, "APAC pod", "apac"),
        (3, Role::Pod, "AMER pod", "amer"),
        (4, Role::Partner, "Acme Partner", "acme"),
    ];
    for (index, role, name, scope) in members {
        let member = Member {
            public_key: key(replicas, index),
            name: name.into(),
            role,
            scope: Some(scope.into()),
            admitted_by: council_key.clone(),
            admitted_at_ms: now,
            revoked: false,
        };
        replicas[0].node.write(&Op::AddMember(member), now)?;
        say(format!(
            "council admitted {name} as {role} ({})",
            &key(replicas, index)[..16]
        ));
    }
    Ok(())
}

fn quarter_of_work(replicas: &mut [Replica], say: &impl Fn(String)) -> anyhow::Result<()> {
    let now = now_ms();
    let council = &mut replicas[0].node;
    let activation = Objective {
        id: "obj-activation".into(),
        title: "Double weekly activated teams".into(),
        quarter: "2026Q4".into(),
        north_star_metric: Some("weekly-activated-teams".into()),
        target: Some(20_000.0),
        created_by: council.identity().public_key,
    };
    council.write(&Op::AddObjective(activation), now)?;
    council.write(
        &Op::SetThreshold {
            quarter: "2026Q4".into(),
            cost: 10_000.0,
        },
        now,
    )?;
    say(
        "council set objective obj-activation for 2026Q4 and a high-impact threshold of 10000"
            .into(),
    );
    let plans = [
        (
            1,
            "signup-short-form",
            "if we cut the signup form to two fields then activation rises because fewer steps lose fewer users",
            "eu",
            4_000.0,
        ),
        (
            2,
            "onboarding-checklist",
            "if we show an onboarding checklist then activation rises because users see the next step",
            "apac",
            12_000.0,
        ),
        (
            3,
            "signup-short-form-us",
            "if we cut the signup form to two fields then activation rises because fewer steps lose fewer users everywhere",
            // Every region: it can hold the EMEA experiment's users, so governance flags the two as overlapping.
            "",
            3_000.0,
        ),
    ];
    for (index, key, hypothesis, region, cost) in plans {
        let node = &mut replicas[index].node;
        let pod = replicas[index].name;
        let schema = EventSchema {
            event: format!("{pod} Signup Completed"),
            version: 1,
            properties: vec!["plan:string:required".parse()?, "email:string:pii".parse()?],
            legal_basis: "contract".into(),
            retention_days: 90,
            status: StandardStatus::Proposed,
            proposed_by: String::new(),
            approved_by: None,
        };
        node.write(&Op::ProposeSchema(schema), now)?;
        let kr = KeyResult {
            id: format!("kr-{pod}-activation"),
            objective: "obj-activation".into(),
            pod: String::new(),
            metric: "activation-rate".into(),
            baseline: 0.31,
            target: 0.40,
            current: None,
            updated_at_ms: now,
            window_days: model::okr::DEFAULT_KEY_RESULT_WINDOW_DAYS,
        };
        node.write(&Op::AddKeyResult(kr), now)?;
        node.write(
            &Op::UpdateKeyResult {
                id: format!("kr-{pod}-activation"),
                current: 0.33,
                updated_at_ms: now,
            },
            now,
        )?;
        let experiment = Experiment {
            key: key.into(),
            pod: String::new(),
            hypothesis: Hypothesis::parse(hypothesis),
            funnel_stage: model::FunnelStage::Activation,
            audience: Audience {
                region: (!region.is_empty()).then(|| region.into()),
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
            primary_metric: Some("activation-rate".into()),
            guardrail_metrics: vec!["support-tickets".into()],
            start_date: Some("2026-11-02".into()),
            end_date: Some("2026-11-30".into()),
            cost,
            status: ExperimentStatus::Draft,
            namespace: None,
            started_at_ms: None,
            hash_version: 1,
            coverage: 1.0,
            created_by: node.identity().public_key,
            created_at_ms: now,
        };
        node.write(&Op::NewExperiment(experiment), now)?;
        say(format!(
            "{pod}: proposed a schema, set a key result, registered experiment {key} (cost {cost})"
        ));
    }
    let learning = Learning {
        id: "learning-social-proof".into(),
        title: "Social proof on pricing pages".into(),
        body: "Customer logos above the fold lifted trial starts 4% in our B2B funnel; testimonials did nothing.".into(),
        outcome: Some(Outcome::Win),
        tags: vec!["pricing".into(), "social-proof".into()],
        experiment: None,
        source: String::new(),
        author: key(replicas, 4),
        created_at_ms: now,
    };
    replicas[4].node.write(&Op::AddLearning(learning), now)?;
    say("acme-partner: shared a learning".into());
    Ok(())
}

/// A forged change (an EMEA change with one flipped signature byte) and an unauthorized one (the partner writing
/// a company objective into the council document).
fn hostile_changes(replicas: &mut [Replica]) -> anyhow::Result<Vec<Envelope>> {
    let now = now_ms();
    let emea = &replicas[1].node;
    let forged_learning = Learning {
        id: "learning-forged".into(),
        title: "Forged: discounts always win".into(),
        body: "Written by nobody; the signature is broken.".into(),
        outcome: None,
        tags: vec![],
        experiment: None,
        source: String::new(),
        author: String::new(),
        created_at_ms: now,
    };
    let mut forged = emea.replica().craft(
        emea.keypair(),
        &model::DocId::Pod("emea".into()),
        &Op::AddLearning(forged_learning),
        now,
    )?;
    forged.signature[0] ^= 0x01;
    let partner = &replicas[4].node;
    let objective = Objective {
        id: "obj-partner-grab".into(),
        title: "Partner sets company goals".into(),
        quarter: "2026Q4".into(),
        north_star_metric: None,
        target: None,
        created_by: partner.identity().public_key,
    };
    let unauthorized = partner.replica().craft(
        partner.keypair(),
        &model::DocId::Council,
        &Op::AddObjective(objective),
        now,
    )?;
    Ok(vec![forged, unauthorized])
}

fn council_approves(replicas: &mut [Replica], say: &impl Fn(String)) -> anyhow::Result<()> {
    let now = now_ms();
    let council = &mut replicas[0].node;
    let view = council.view();
    for proposal in view.schema_proposals.values() {
        let approved = EventSchema {
            status: StandardStatus::Approved,
            approved_by: Some(council.identity().public_key),
            ..proposal.clone()
        };
        council.write(&Op::ApproveSchema(approved), now)?;
        say(format!("council approved schema {}", proposal.key()));
    }
    let governance = governance::Governance::derive(&view);
    for waiting in governance.queue() {
        let reasons: Vec<String> = waiting
            .needs
            .iter()
            .map(governance::Need::describe)
            .collect();
        let approval = model::Approval {
            experiment: waiting.key.clone(),
            decision: model::Decision::Approved,
            reason: "worth the spend; report at mid-quarter".into(),
            by: council.identity().public_key,
            at_ms: now,
        };
        council.write(&Op::Decide(approval), now)?;
        say(format!(
            "council approved experiment {} ({})",
            waiting.key,
            reasons.join("; ")
        ));
    }
    Ok(())
}

/// Every replica sends every other replica a bundle of everything it holds, entries shuffled, bundles delivered in
/// shuffled order; `extra` envelopes are slipped into every bundle. Returns rejections seen, by change.
fn sync(
    replicas: &mut [Replica],
    rng: &mut rand::rngs::StdRng,
    extra: Vec<Envelope>,
    say: &impl Fn(String),
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let mut rejections = BTreeMap::new();
    let mut deliveries = Vec::new();
    for (from, replica) in replicas.iter().enumerate() {
        if replica.node.replica().federation().is_none() {
            continue;
        }
        let bytes = replica.node.export(None)?;
        let parsed = bundle::read(&bytes)?;
        let mut envelopes: Vec<Vec<u8>> = parsed
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Envelope(env) => Some(env.to_bytes()),
                Entry::Malformed { .. } => None,
            })
            .chain(extra.iter().map(Envelope::to_bytes))
            .collect();
        for to in 0..replicas.len() {
            if to != from {
                envelopes.shuffle(rng);
                deliveries.push((
                    from,
                    to,
                    bundle::write(&parsed.federation, envelopes.iter().map(Vec::as_slice)),
                ));
            }
        }
    }
    deliveries.shuffle(rng);
    let mut accepted_total = 0;
    for (from, to, bytes) in deliveries {
        let report = replicas[to]
            .node
            .import(replicas[from].name, &bytes, |_, _| {})?;
        accepted_total += report.accepted;
        for r in report.rejected {
            rejections.entry(r.change).or_insert((r.reason, r.detail));
        }
    }
    say(format!(
        "   {accepted_total} changes accepted across replicas this round"
    ));
    Ok(rejections)
}

fn report(
    replicas: &[Replica],
    rejections: &BTreeMap<String, (String, String)>,
    seed: u64,
    json: bool,
) -> anyhow::Result<u8> {
    let heads: Vec<Vec<String>> = replicas.iter().map(|r| r.node.heads()).collect();
    let converged = heads.windows(2).all(|w| w[0] == w[1]);
    let view = replicas[0].node.view();
    let overlapping = governance::Governance::derive(&view)
        .experiments
        .values()
        .filter(|e| !e.overlaps.is_empty())
        .count();
    if json {
        let value = serde_json::json!({
            "overlapping": overlapping,
            "converged": converged,
            "seed": seed,
            "replicas": replicas.iter().map(|r| serde_json::json!({"name": r.name, "changes": r.node.replica().len(), "heads": r.node.heads()})).collect::<Vec<_>>(),
            "rejected": rejections.iter().map(|(c, (reason, detail))| serde_json::json!({"change": c, "reason": reason, "detail": detail})).collect::<Vec<_>>(),
            "members": view.members.len(), "experiments": view.experiments.len(), "learnings": view.learnings.len(),
        });
        crate::context::print_json(&value)?;
    } else {
        say!("-- rejected everywhere, never applied:");
        for (change, (reason, detail)) in rejections {
            say!("   {}  {reason}: {detail}", &change[..16.min(change.len())]);
        }
        say!(
            "-- registry: {} members, {} experiments ({} flagged as overlapping), {} approved schemas, {} learnings",
            view.members.len(),
            view.experiments.len(),
            overlapping,
            view.schemas.len(),
            view.learnings.len()
        );
        for replica in replicas {
            let digest = replica
                .node
                .heads()
                .iter()
                .map(|h| &h[..8])
                .collect::<Vec<_>>()
                .join(",");
            say!(
                "   {:<13} {:>3} changes  heads {digest}",
                replica.name,
                replica.node.replica().len()
            );
        }
        if converged {
            say!(
                "all {} replicas converged to identical heads ({} changes)",
                replicas.len(),
                replicas[0].node.replica().len()
            );
        } else {
            say!("replicas did NOT converge (replay with --seed {seed})");
        }
    }
    Ok(if converged { exit::OK } else { exit::FAILURE })
}
