//! Analysis benchmark: one experiment, 1,000,000 exposed users (`--users` to change, `--quick` for 100,000),
//! 3 variants, 10 metrics over 5 event names, events fed in store order. Prints the wall time of the analysis
//! (join, capping, sufficient statistics, tests) against a baseline in the same run: the same per-user
//! aggregation done with a hash map from user id to user, which is what a join without store order costs.
//!
//! Run: `cargo bench -p analysis --bench analysis -- [--quick] [--users N]`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::time::Instant;

use analysis::aggregate::{ExposureBuilder, MetricValues};
use analysis::time::DAY_MS;
use analysis::{Analysis, Options, Plan};
use model::{
    Direction, EventSchema, Experiment, MetricDefinition, MetricKind, RegistryView, StandardStatus,
    Variant,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const START_MS: i64 = 1_735_689_600_000;

/// Events of one name, in store order.
struct Stream {
    name: &'static str,
    rows: Vec<(u32, i64, Vec<u8>)>,
}

fn schema(event: &str, properties: &[&str]) -> EventSchema {
    EventSchema::approved(event, properties).expect("valid")
}

fn metric(key: &str, kind: MetricKind, capping: Option<f64>) -> MetricDefinition {
    MetricDefinition {
        key: key.into(),
        kind,
        direction: Direction::Higher,
        capping_percentile: capping,
        status: StandardStatus::Approved,
        proposed_by: String::new(),
        approved_by: None,
    }
}

fn mean(event: &str, property: Option<&str>) -> MetricKind {
    MetricKind::Mean {
        event: event.into(),
        property: property.map(str::to_owned),
        window_days: 14,
    }
}

fn binomial(event: &str) -> MetricKind {
    MetricKind::Binomial {
        event: event.into(),
        window_days: 14,
    }
}

fn ratio(numerator: (&str, Option<&str>), denominator: (&str, Option<&str>)) -> MetricKind {
    MetricKind::Ratio {
        numerator_event: numerator.0.into(),
        numerator_property: numerator.1.map(str::to_owned),
        denominator_event: denominator.0.into(),
        denominator_property: denominator.1.map(str::to_owned),
        window_days: 14,
    }
}

fn view() -> RegistryView {
    let mut view = RegistryView::default();
    for s in [
        schema("Page Viewed", &["path:string"]),
        schema("Order Completed", &["revenue:number:required"]),
        schema("Product Added", &["price:number:required"]),
        schema("Signed In", &[]),
        schema("Support Ticket", &["minutes:number"]),
    ] {
        view.schemas.insert(s.key(), s);
    }
    let metrics = [
        metric("conversion", binomial("Order Completed"), None),
        metric(
            "revenue",
            mean("Order Completed", Some("revenue")),
            Some(0.99),
        ),
        metric("pages", mean("Page Viewed", None), None),
        metric(
            "aov",
            ratio(
                ("Order Completed", Some("revenue")),
                ("Order Completed", None),
            ),
            None,
        ),
        metric("signed_in", binomial("Signed In"), None),
        metric("sign_ins", mean("Signed In", None), None),
        metric(
            "basket_value",
            mean("Product Added", Some("price")),
            Some(0.99),
        ),
        metric(
            "adds_per_page",
            ratio(("Product Added", None), ("Page Viewed", None)),
            None,
        ),
        metric("tickets", mean("Support Ticket", None), None),
        metric(
            "ticket_minutes",
            mean("Support Ticket", Some("minutes")),
            None,
        ),
    ];
    for m in metrics {
        view.metrics.insert(m.key.clone(), m);
    }
    let experiment: Experiment =
        serde_json::from_value(serde_json::json!({"key": "exp", "pod": "emea"}))
            .expect("a minimal experiment");
    view.experiments.insert(
        "exp".into(),
        Experiment {
            variants: ["control", "b", "c"]
                .map(|key| Variant {
                    key: key.into(),
                    weight: 1.0 / 3.0,
                })
                .to_vec(),
            primary_metric: Some("conversion".into()),
            guardrail_metrics: vec!["tickets".into()],
            ..experiment
        },
    );
    view
}

/// Users (sorted ids), their exposures, and the metric events per name in store order.
fn data(users: u32, seed: u64) -> (Vec<String>, Vec<(i64, u8)>, Vec<Stream>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ids: Vec<String> = (0..users).map(|i| format!("user-{i:08}")).collect();
    let exposures: Vec<(i64, u8)> = (0..users)
        .map(|_| {
            (
                START_MS + rng.random_range(0..14 * DAY_MS),
                rng.random_range(0..3u8),
            )
        })
        .collect();
    let spec: [(&'static str, f64, &str); 5] = [
        ("Order Completed", 0.6, "revenue"),
        ("Page Viewed", 3.0, ""),
        ("Product Added", 1.0, "price"),
        ("Signed In", 1.0, ""),
        ("Support Ticket", 0.2, "minutes"),
    ];
    let streams = spec
        .iter()
        .map(|&(name, per_user, property)| {
            let mut rows = Vec::new();
            for (user, &(exposed, _)) in exposures.iter().enumerate() {
                let count = (per_user + rng.random::<f64>() * per_user).floor() as u32;
                let mut times: Vec<i64> = (0..count)
                    .map(|_| exposed + rng.random_range(-7 * DAY_MS..14 * DAY_MS))
                    .collect();
                times.sort_unstable();
                for ts in times {
                    let properties = if property.is_empty() {
                        b"{\"path\":\"/p\"}".to_vec()
                    } else {
                        format!("{{\"{property}\":{:.2}}}", rng.random::<f64>() * 100.0)
                            .into_bytes()
                    };
                    rows.push((user as u32, ts, properties));
                }
            }
            Stream { name, rows }
        })
        .collect();
    (ids, exposures, streams)
}

fn variant_key(v: u8) -> &'static [u8] {
    [&b"control"[..], b"b", b"c"][usize::from(v)]
}

fn run(
    plan: &Plan,
    ids: &[String],
    exposures: &[(i64, u8)],
    streams: &[Stream],
) -> analysis::Report {
    let mut builder = ExposureBuilder::new(&plan.variants);
    for (id, &(ts, v)) in ids.iter().zip(exposures) {
        builder.push(id.as_bytes(), ts, variant_key(v));
    }
    let mut analysis = Analysis::new(plan, builder);
    for stream in streams {
        let mut sink = analysis.events(stream.name);
        for (user, ts, properties) in &stream.rows {
            sink.push(ids[*user as usize].as_bytes(), *ts, properties);
        }
    }
    analysis.finish(&Options::default()).expect("a report")
}

/// The same aggregation joined through a hash map (no store order), reduced to per-variant sums.
fn baseline(plan: &Plan, ids: &[String], exposures: &[(i64, u8)], streams: &[Stream]) -> f64 {
    let index: HashMap<&[u8], usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_bytes(), i))
        .collect();
    let mut values: Vec<MetricValues> = plan
        .metrics
        .iter()
        .map(|m| MetricValues::new(m, ids.len()))
        .collect();
    let uses = plan.event_uses();
    for stream in streams {
        let Some(uses) = uses.get(stream.name) else {
            continue;
        };
        for (user, ts, properties) in &stream.rows {
            let Some(&u) = index.get(ids[*user as usize].as_bytes()) else {
                continue;
            };
            for &(m, denominator) in uses {
                values[m].add(
                    &plan.metrics[m],
                    denominator,
                    u,
                    exposures[u].0,
                    *ts,
                    properties,
                );
            }
        }
    }
    let mut total = 0.0;
    for (metric, v) in plan.metrics.iter().zip(&mut values) {
        v.cap(metric);
        let mut sums = [0.0f64; 3];
        for (u, post) in v.post.iter().enumerate() {
            sums[usize::from(exposures[u].1)] += post;
        }
        total += sums.iter().sum::<f64>();
    }
    total
}

#[derive(clap::Parser)]
#[command(
    about = "analysis of an experiment over stored events against a baseline pass over the same data"
)]
struct Args {
    /// Exposed users (default 1,000,000; 100,000 with --quick).
    #[arg(long)]
    users: Option<u32>,
    /// A smaller run.
    #[arg(long)]
    quick: bool,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() {
    let args: Args = clap::Parser::parse();
    let users = args
        .users
        .unwrap_or(if args.quick { 100_000 } else { 1_000_000 });
    let view = view();
    let plan = Plan::new(
        &view,
        "exp",
        &[
            "revenue".into(),
            "pages".into(),
            "aov".into(),
            "signed_in".into(),
            "sign_ins".into(),
            "basket_value".into(),
            "adds_per_page".into(),
            "ticket_minutes".into(),
        ],
    )
    .expect("a plan");
    assert_eq!(plan.metrics.len(), 10);
    let setup = Instant::now();
    let (ids, exposures, streams) = data(users, 42);
    let events: usize = streams.iter().map(|s| s.rows.len()).sum();
    println!(
        "analysis bench: {users} exposed users, 3 variants, {} metrics, {events} metric events (setup {:.1} s)",
        plan.metrics.len(),
        setup.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let report = run(&plan, &ids, &exposures, &streams);
    let ours = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let check = baseline(&plan, &ids, &exposures, &streams);
    let base = started.elapsed().as_secs_f64();
    assert!(check.is_finite());
    assert_eq!(report.users.iter().sum::<u64>(), u64::from(users));
    println!(
        "  analysis (merge join, sums, tests, verdict): {ours:.3} s  ({:.1} M events/s)",
        events as f64 / ours / 1e6
    );
    println!(
        "  baseline (hash-map join, sums only):          {base:.3} s  ({:.1} M events/s)",
        events as f64 / base / 1e6
    );
    println!(
        "  ratio baseline/analysis: {:.2}x; target: analysis under 1 s for 1M users: {}",
        base / ours,
        if users >= 1_000_000 {
            if ours < 1.0 { "met" } else { "missed" }
        } else {
            "n/a (not 1M users)"
        }
    );
}
