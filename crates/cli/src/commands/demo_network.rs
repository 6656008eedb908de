//! `growthmesh demo` over the network: a council, three regional pods and a partner run as real nodes (libp2p on
//! loopback, each with its own data dir and local API) and are driven through their APIs the way a user's CLI
//! drives them: invites redeemed over the network, a quarter of work, a forged and an unauthorized change, until
//! every node shows identical heads.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use node::remote::Remote;
use registry::{Envelope, Op, Replica};

/// How long the demo waits for the nodes to converge.
const CONVERGENCE_DEADLINE: Duration = Duration::from_secs(60);

struct DemoNode {
    name: &'static str,
    dir: PathBuf,
    remote: Remote,
}

impl DemoNode {
    /// Runs a CLI command in this node; fails with its stderr when the status is not `expect`.
    fn run(&self, args: &[&str], expect: u8) -> anyhow::Result<String> {
        let request = node::actor::ExecRequest {
            args: args.iter().map(|a| a.to_string()).collect(),
            cwd: self.dir.display().to_string(),
        };
        let response = self.remote.exec(&request)?;
        if response.status != expect {
            bail!(
                "{}: `{}` exited {}: {}",
                self.name,
                args.join(" "),
                response.status,
                response.stderr.trim()
            );
        }
        Ok(response.stdout)
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        Ok(serde_json::from_str(
            &self.run(&with_json, crate::exit::OK)?,
        )?)
    }

    fn heads(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self.json(&["registry", "heads"])?["heads"].clone())
    }
}

/// Runs the network demo in `root`.
pub fn run(root: &Path, keep_running: bool, say: &dyn Fn(String)) -> anyhow::Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let names = ["council", "emea", "apac", "amer", "acme-partner"];
    let mut handles = Vec::new();
    let council_dir = root.join("council");
    node::Node::open(&council_dir)?.create_federation("Acme Growth", crate::context::now_ms())?;
    handles.push(start(&runtime, &council_dir, stopped.clone()));
    let council = attach("council", &council_dir)?;
    say(format!(
        "council founded federation {} and runs at {}",
        council.json(&["status"])?["federation"]
            .as_str()
            .unwrap_or_default(),
        first_addr(&council)?
    ));
    let mut nodes = vec![council];
    for (name, role, scope) in [
        ("emea", "pod", "emea"),
        ("apac", "pod", "apac"),
        ("amer", "pod", "amer"),
        ("acme-partner", "partner", "acme"),
    ] {
        let ticket = nodes[0].run(
            &[
                "invite",
                "--role",
                role,
                "--name",
                name,
                "--pod",
                scope,
                "--expires",
                "1h",
            ],
            0,
        )?;
        let dir = root.join(name);
        let mut fresh = node::Node::open(&dir)?;
        let parsed = node::invite::Ticket::parse(ticket.trim(), crate::context::now_ms())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        fresh.adopt(parsed.body.federation.parse()?)?;
        std::fs::write(dir.join(node::invite::TICKET_FILE_NAME), ticket.trim())?;
        drop(fresh);
        handles.push(start(&runtime, &dir, stopped.clone()));
        let joined = attach(name, &dir)?;
        wait_until(
            || {
                Ok(joined.json(&["status"])?["invite"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("admitted")))
            },
            "the invite to be redeemed",
        )?;
        say(format!(
            "{name} redeemed its invite over the network and joined as {role}"
        ));
        nodes.push(joined);
    }
    debug_assert_eq!(nodes.len(), names.len());
    quarter_of_work(&nodes, say)?;
    wait_converged(&nodes)?;
    hostile(root, &nodes, say)?;
    council_decides(&nodes, say)?;
    let converged = wait_converged(&nodes).is_ok();
    report(&nodes, say)?;
    scorecards(&nodes, say)?;
    if keep_running && converged {
        say("nodes keep running; press Ctrl-C to stop".into());
        runtime.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    }
    let _ = stop.send(true);
    for handle in handles {
        let _ = runtime.block_on(handle);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(converged)
}

fn start(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let config = node::config::Config {
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
        api_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        mdns: false,
        announce_interval_ms: 1_000,
        ..Default::default()
    };
    let dir = dir.to_path_buf();
    let exec: node::actor::Exec = std::sync::Arc::new(crate::exec_in_node);
    runtime.spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        };
        if let Err(error) = node::daemon::run(&dir, config, exec, shutdown).await {
            tracing::error!(dir = %dir.display(), %error, "demo node stopped");
        }
    })
}

fn attach(name: &'static str, dir: &Path) -> anyhow::Result<DemoNode> {
    let remote =
        node::remote::wait_for(dir).with_context(|| format!("{name} did not start its API"))?;
    Ok(DemoNode {
        name,
        dir: dir.to_path_buf(),
        remote,
    })
}

fn first_addr(node: &DemoNode) -> anyhow::Result<String> {
    wait_until(
        || {
            Ok(!node.json(&["status"])?["listen_addrs"]
                .as_array()
                .is_none_or(Vec::is_empty))
        },
        "a listen address",
    )?;
    Ok(node.json(&["status"])?["listen_addrs"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn wait_until(
    mut condition: impl FnMut() -> anyhow::Result<bool>,
    what: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONVERGENCE_DEADLINE;
    while Instant::now() < deadline {
        if condition()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("timed out waiting for {what}")
}

fn wait_converged(nodes: &[DemoNode]) -> anyhow::Result<()> {
    wait_until(
        || {
            let heads: Vec<serde_json::Value> = nodes
                .iter()
                .map(DemoNode::heads)
                .collect::<anyhow::Result<_>>()?;
            Ok(heads.windows(2).all(|w| w[0] == w[1]))
        },
        "the nodes to converge",
    )
}

fn quarter_of_work(nodes: &[DemoNode], say: &dyn Fn(String)) -> anyhow::Result<()> {
    let council = &nodes[0];
    let objective = council.json(&[
        "okr",
        "objective",
        "add",
        "--title",
        "Double weekly activated teams",
        "--quarter",
        "2026Q4",
        "--north-star",
        "weekly-activated-teams",
        "--target",
        "20000",
    ])?;
    let _ = objective;
    council.run(
        &[
            "council",
            "threshold",
            "--quarter",
            "2026Q4",
            "--cost",
            "10000",
        ],
        0,
    )?;
    let objective_id = wait_for_objective(nodes)?;
    say(format!(
        "council set objective {objective_id} for 2026Q4 and a high-impact threshold of 10000"
    ));
    // A key result names an approved metric: the first pod proposes it, the council approves it.
    nodes[1].run(
        &[
            "metric",
            "propose",
            "--key",
            "activation-rate",
            "--type",
            "binomial",
            "--event",
            "Signup Completed",
        ],
        0,
    )?;
    wait_converged(&nodes[..=1])?;
    council.run(&["metric", "approve", "activation-rate"], 0)?;
    wait_converged(nodes)?;
    say(format!(
        "{}: proposed the metric activation-rate; the council approved it",
        nodes[1].name
    ));
    let plans = [
        (
            1,
            "signup-short-form",
            "if we cut the signup form to two fields then activation rises because fewer steps lose fewer users",
            "eu",
            "4000",
        ),
        (
            2,
            "onboarding-checklist",
            "if we show an onboarding checklist then activation rises because users see the next step",
            "apac",
            "12000",
        ),
        (
            3,
            "signup-short-form-us",
            "if we cut the signup form to two fields then activation rises because fewer steps lose fewer users in the us",
            "us",
            "3000",
        ),
    ];
    for (index, key, hypothesis, region, cost) in plans {
        let pod = &nodes[index];
        let event = format!("{} Signup Completed", pod.name);
        pod.run(
            &[
                "schema",
                "propose",
                "--event",
                &event,
                "--property",
                "plan:string:required",
                "--property",
                "email:string:pii",
                "--legal-basis",
                "contract",
                "--retention-days",
                "90",
            ],
            0,
        )?;
        let kr = pod.json(&[
            "okr",
            "kr",
            "add",
            "--objective",
            &objective_id,
            "--metric",
            "activation-rate",
            "--baseline",
            "0.31",
            "--target",
            "0.40",
        ])?;
        let _ = kr;
        pod.run(
            &[
                "experiment",
                "new",
                "--key",
                key,
                "--hypothesis",
                hypothesis,
                "--region",
                region,
                "--segment",
                "new-teams",
                "--primary-metric",
                "activation-rate",
                "--guardrail",
                "support-tickets",
                "--start",
                "2026-11-02",
                "--end",
                "2026-11-30",
                "--cost",
                cost,
            ],
            0,
        )?;
        say(format!(
            "{}: proposed a schema, set a key result, registered experiment {key} (cost {cost})",
            pod.name
        ));
        wait_converged(&nodes[..=index])?;
    }
    nodes[4].run(&["learnings", "add", "--title", "Social proof on pricing pages", "--body", "Customer logos above the fold lifted trial starts 4% in our B2B funnel; testimonials did nothing.", "--outcome", "win", "--tag", "pricing"], 0)?;
    say("acme-partner: shared a learning".into());
    Ok(())
}

fn wait_for_objective(nodes: &[DemoNode]) -> anyhow::Result<String> {
    let mut id = String::new();
    wait_until(
        || {
            let objectives = nodes[1].json(&["okr", "objective", "list"])?;
            id = objectives["objectives"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            Ok(!id.is_empty())
        },
        "the objective to reach the pods",
    )?;
    Ok(id)
}

/// A forged change (an EMEA change with one flipped signature byte) and an unauthorized one (the partner writing a
/// company objective), built offline from the council's export and handed to the council and a pod as a bundle.
fn hostile(root: &Path, nodes: &[DemoNode], say: &dyn Fn(String)) -> anyhow::Result<()> {
    let export = root.join("council.bundle");
    nodes[0].run(
        &["registry", "export", "--out", &export.display().to_string()],
        0,
    )?;
    let bundle = registry::bundle::read(&std::fs::read(&export)?)?;
    let mut replica = Replica::new();
    replica.adopt(bundle.federation)?;
    let envelopes: Vec<Envelope> = bundle
        .entries
        .into_iter()
        .filter_map(|e| match e {
            registry::bundle::Entry::Envelope(envelope) => Some(*envelope),
            registry::bundle::Entry::Malformed { .. } => None,
        })
        .collect();
    replica.receive(envelopes)?;
    let now = crate::context::now_ms();
    let emea_key = identity::Keypair::load(&root.join("emea").join(identity::KEY_FILE_NAME))?;
    let partner_key =
        identity::Keypair::load(&root.join("acme-partner").join(identity::KEY_FILE_NAME))?;
    let learning = model::Learning {
        id: "learning-forged".into(),
        title: "Forged: discounts always win".into(),
        body: "The signature of this change is broken.".into(),
        outcome: None,
        tags: vec![],
        experiment: None,
        source: String::new(),
        author: String::new(),
        created_at_ms: now,
    };
    let mut forged = replica.craft(
        &emea_key,
        &model::DocId::Pod("emea".into()),
        &Op::AddLearning(learning),
        now,
    )?;
    forged.signature[0] ^= 1;
    let objective = model::Objective {
        id: "obj-partner-grab".into(),
        title: "Partner sets company goals".into(),
        quarter: "2026Q4".into(),
        north_star_metric: None,
        target: None,
        created_by: partner_key.public().to_hex(),
    };
    let unauthorized = replica.craft(
        &partner_key,
        &model::DocId::Council,
        &Op::AddObjective(objective),
        now,
    )?;
    let hostile = root.join("hostile.bundle");
    let bytes = registry::bundle::write(
        &bundle.federation,
        [forged.to_bytes(), unauthorized.to_bytes()]
            .iter()
            .map(Vec::as_slice),
    );
    std::fs::write(&hostile, bytes)?;
    for target in [&nodes[0], &nodes[2]] {
        let report = target.run(
            &[
                "registry",
                "import",
                &hostile.display().to_string(),
                "--json",
            ],
            crate::exit::PARTIAL,
        )?;
        let report: serde_json::Value = serde_json::from_str(&report)?;
        for rejection in report["rejected"].as_array().into_iter().flatten() {
            say(format!(
                "{} rejected {}…: {} ({})",
                target.name,
                &rejection["change"].as_str().unwrap_or_default()[..12],
                rejection["reason"].as_str().unwrap_or_default(),
                rejection["detail"].as_str().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn council_decides(nodes: &[DemoNode], say: &dyn Fn(String)) -> anyhow::Result<()> {
    let council = &nodes[0];
    wait_until(
        || {
            Ok(council.json(&["schema", "list"])?["proposals"]
                .as_object()
                .is_some_and(|p| p.len() == 3))
        },
        "the proposals to reach the council",
    )?;
    for pod in ["emea", "apac", "amer"] {
        let event = format!("{pod} Signup Completed");
        council.run(&["schema", "approve", &event], 0)?;
        say(format!("council approved schema {event}@1"));
    }
    wait_until(
        || {
            Ok(council.json(&["experiment", "list"])?["experiments"]
                .as_array()
                .is_some_and(|e| e.len() == 3))
        },
        "the experiments to reach the council",
    )?;
    let experiments = council.json(&["experiment", "list"])?;
    for experiment in experiments["experiments"].as_array().into_iter().flatten() {
        let key = experiment["key"].as_str().unwrap_or_default();
        let needs_approval = experiment["needs_approval"]
            .as_array()
            .is_some_and(|n| !n.is_empty());
        if needs_approval {
            council.run(
                &[
                    "council",
                    "approve",
                    key,
                    "--reason",
                    "worth the spend; report at mid-quarter",
                ],
                0,
            )?;
            let why: Vec<&str> = experiment["needs_detail"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect();
            say(format!(
                "council approved experiment {key} ({})",
                why.join("; ")
            ));
        }
    }
    Ok(())
}

/// The council's live tier-1 scorecard, built from the snapshots the pods' nodes signed and published on their own,
/// and what the partner may see of it.
fn scorecards(nodes: &[DemoNode], say: &dyn Fn(String)) -> anyhow::Result<()> {
    let pods = ["emea", "apac", "amer"];
    let council = &nodes[0];
    let mut tier = serde_json::Value::Null;
    wait_until(
        || {
            tier = council.json(&["scorecard", "--tier", "1"])?;
            let reporting: Vec<&str> = tier["pods"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["pod"].as_str())
                .collect();
            Ok(pods.iter().all(|p| reporting.contains(p)))
        },
        "every pod's scorecard to reach the council",
    )?;
    let show = |v: &serde_json::Value| {
        v.as_f64()
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
    };
    let metrics: Vec<String> = tier["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "{} {}",
                m["name"].as_str().unwrap_or_default(),
                show(&m["value"])
            )
        })
        .collect();
    say(format!(
        "council's live tier-1 scorecard ({}), from the pods' signed snapshots: {}",
        tier["quarter"].as_str().unwrap_or_default(),
        metrics.join(", ")
    ));
    for pod in tier["pods"].as_array().into_iter().flatten() {
        say(format!(
            "   {:<6} snapshot as of {} ({} s old)",
            pod["pod"].as_str().unwrap_or_default(),
            pod["as_of"].as_str().unwrap_or_default(),
            pod["age_s"]
        ));
    }
    let partner = &nodes[4];
    let partner_tier = partner.json(&["scorecard", "--tier", "1"])?;
    let refused = partner.run(&["scorecard", "--tier", "2", "--pod", "emea", "--json"], 1)?;
    let refused: serde_json::Value = serde_json::from_str(&refused)?;
    say(format!(
        "partner sees tier 1 ({} metrics); tier 2 of a pod is refused: {}",
        partner_tier["metrics"].as_array().map_or(0, Vec::len),
        refused["error"].as_str().unwrap_or_default()
    ));
    Ok(())
}

fn report(nodes: &[DemoNode], say: &dyn Fn(String)) -> anyhow::Result<()> {
    let heads: Vec<serde_json::Value> = nodes
        .iter()
        .map(DemoNode::heads)
        .collect::<anyhow::Result<_>>()?;
    let view: serde_json::Value =
        serde_json::from_str(&nodes[0].run(&["registry", "show", "--json"], 0)?)?;
    let count = |key: &str| view[key].as_object().map_or(0, serde_json::Map::len);
    say(format!(
        "registry: {} members, {} objectives, {} experiments, {} approved schemas, {} approvals, {} learnings",
        count("members"),
        count("objectives"),
        count("experiments"),
        count("schemas"),
        count("approvals"),
        count("learnings")
    ));
    for (node, heads) in nodes.iter().zip(&heads) {
        let status = node.json(&["status"])?;
        let digest: Vec<String> = heads
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(|h| h[..8].to_owned()))
            .collect();
        say(format!(
            "   {:<13} {:>3} changes  {} peers  heads {}",
            node.name,
            status["changes"],
            status["peers"].as_array().map_or(0, Vec::len),
            digest.join(",")
        ));
    }
    if heads.windows(2).all(|w| w[0] == w[1]) {
        say(format!(
            "all {} nodes converged to identical heads over the network",
            nodes.len()
        ));
    } else {
        say("nodes did NOT converge".into());
    }
    Ok(())
}
