//! `ingest`, `quarantine list|retry`, `analyze`, `experiment conclude` and `generate-events`: raw events into the
//! node's store and experiments out of it as result summaries. The work is in `node::events` and `analysis`; this
//! module opens files, shows progress and prints.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use node::Node;
use node::events::{Error as EventsError, IngestReport};
use registry::Op;

use super::federation::map_write;
use crate::context::{Context, Sink, now_ms};
use crate::exit::{self, input_error};

/// Arguments of `ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Segment `track` JSON-lines files (`.gz` accepted; `-` reads stdin).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// `quarantine` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Rejected lines with their source, line number and reason.
    List {
        /// Only lines whose reason contains this (e.g. a kind `ingest` summarised: "unknown event `Signup`").
        #[arg(long)]
        reason: Option<String>,
    },
    /// Check every quarantined line again (after approving a schema); accepted lines leave the quarantine.
    Retry,
}

/// `events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// What this node holds: events and exposures stored, lines quarantined, events deleted by retention.
    Stats,
    /// Delete the raw events past their schema's `retention_days` now (a running node does it hourly).
    Purge {
        /// Purge as of this day (`YYYY-MM-DD`, 00:00 UTC) instead of now.
        #[arg(long)]
        as_of: Option<String>,
    },
}

/// Runs an `events` subcommand.
pub fn events(context: &Context, node: &mut Node, command: EventsCommand) -> anyhow::Result<u8> {
    if let EventsCommand::Purge { as_of } = command {
        let now = match as_of {
            Some(date) => crate::context::input(model::calendar::date_start_ms("--as-of", &date))?,
            None => crate::context::now_ms(),
        };
        let purge = node.purge_expired(now).map_err(events_error)?;
        context.print(&purge, |p| {
            outln!(
                context,
                "deleted {} raw events past their retention",
                p.total
            );
            for (event, count) in &p.by_event {
                outln!(context, "  {event:<28} {count:>10}");
            }
        })?;
        return Ok(exit::OK);
    }
    let stats = node.event_stats().map_err(events_error)?;
    context.print(&stats, |s| {
        outln!(
            context,
            "stored        {:>10}  ({} events, {} exposures)",
            s.stored,
            s.events,
            s.exposures
        );
        outln!(
            context,
            "quarantined   {:>10}  (`quarantine list`)",
            s.quarantined
        );
        outln!(
            context,
            "purged        {:>10}  (past retention; last run {})",
            s.purged,
            s.last_purge.as_deref().unwrap_or("never")
        );
        if !s.calls.is_empty() {
            let calls: Vec<String> = s.calls.iter().map(|(k, n)| format!("{n} {k}")).collect();
            outln!(
                context,
                "counted       {:>10}  (Segment calls not stored: {})",
                s.calls.values().sum::<u64>(),
                calls.join(", ")
            );
        }
    })?;
    Ok(exit::OK)
}

/// Arguments of `analyze` (and of `experiment conclude`).
#[derive(Debug, Clone, clap::Args)]
pub struct AnalyzeArgs {
    /// Experiment key.
    pub experiment: String,
    /// Also analyse this metric (besides the primary and guardrails); repeat.
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// Significance level.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Do not adjust with the pre-exposure covariate (CUPED).
    #[arg(long)]
    pub no_cuped: bool,
}

/// Arguments of `experiment conclude`.
#[derive(Debug, clap::Args)]
pub struct ConcludeArgs {
    #[command(flatten)]
    pub analysis: AnalyzeArgs,
    /// The pod's decision (default: what the analysis suggests).
    #[arg(long, value_enum)]
    pub decision: Option<model::ResultDecision>,
    /// What the pod learnt, shared as the experiment's learning; without it a post-mortem opens, due in the
    /// council's `postmortem_days` (`learnings overdue` lists late ones).
    #[arg(long)]
    pub learning: Option<String>,
}

/// Arguments of `generate-events`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Exposed users.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Lines in total (one exposure per user, the rest page views and orders).
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Experiment key.
    #[arg(long)]
    pub experiment: String,
    /// Variant keys, control first.
    #[arg(long, default_value = "control,treatment", value_delimiter = ',')]
    pub variants: Vec<String>,
    /// Weights (default: equal).
    #[arg(long, value_delimiter = ',')]
    pub weights: Vec<f64>,
    /// Relative lift of every treatment's order rate (0 for an A/A test).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub lift: f64,
    /// First day of exposures, `YYYY-MM-DD` (match the experiment's `--start`: `analyze` reads only the events
    /// inside the experiment's dates).
    #[arg(long, default_value = "2025-01-01")]
    pub start: String,
    /// Exposures are spread over this many days from `--start`.
    #[arg(long, default_value_t = 14, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
    /// Output file (`.gz` compresses); `-` for stdout.
    #[arg(long)]
    pub out: PathBuf,
}

/// Whether a progress bar may draw: a terminal, not JSON, not inside a running node.
fn progress_target(context: &Context) -> ProgressDrawTarget {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if terminal && !context.json && matches!(context.sink, Sink::Stdout) {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

/// An input ready to read, opened before anything is ingested so a missing file fails the command up front.
struct Input {
    name: String,
    reader: Box<dyn BufRead>,
}

fn open_input(context: &Context, path: &Path, progress: &ProgressBar) -> anyhow::Result<Input> {
    if path.as_os_str() == "-" {
        if !matches!(context.sink, Sink::Stdout) {
            return Err(input_error(
                "FILE: `-` cannot be read by a running node; POST the events to /v1/events or pass a file",
            ));
        }
        return Ok(Input {
            name: "-".into(),
            reader: Box::new(BufReader::new(progress.wrap_read(std::io::stdin()))),
        });
    }
    let resolved = context.resolve(path);
    let name = path.display().to_string();
    let mut file =
        File::open(&resolved).map_err(|e| input_error(format!("{name}: cannot open: {e}")))?;
    let mut magic = [0u8; 2];
    let gzip = file
        .read(&mut magic)
        .map(|n| n == 2 && magic == [0x1f, 0x8b])
        .map_err(|e| input_error(format!("{name}: cannot read: {e}")))?;
    let file =
        File::open(&resolved).map_err(|e| input_error(format!("{name}: cannot open: {e}")))?;
    let counted = progress.wrap_read(file);
    let reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(counted)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, counted))
    };
    Ok(Input { name, reader })
}

/// Runs `ingest`.
pub fn ingest(context: &Context, node: &mut Node, args: IngestArgs) -> anyhow::Result<u8> {
    let total: u64 = args
        .files
        .iter()
        .filter(|p| p.as_os_str() != "-")
        .filter_map(|p| std::fs::metadata(context.resolve(p)).ok())
        .map(|m| m.len())
        .sum();
    let progress = ProgressBar::with_draw_target(Some(total), progress_target(context));
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("the template is valid"),
    );
    let inputs = args
        .files
        .iter()
        .map(|path| open_input(context, path, &progress))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut ingestor = node.ingestor(now_ms()).map_err(events_error)?;
    for mut input in inputs {
        ingestor
            .read(&input.name, &mut input.reader)
            .map_err(events_error)?;
    }
    let report = ingestor.finish().map_err(events_error)?;
    progress.finish_and_clear();
    print_report(context, &report, "ingested")
}

fn print_report(context: &Context, report: &IngestReport, verb: &str) -> anyhow::Result<u8> {
    context.print(report, |r| {
        outln!(
            context,
            "{verb} {} events ({} duplicates skipped), {} lines quarantined",
            r.accepted,
            r.duplicates,
            r.quarantined
        );
        // A summary by kind, the largest first, not a line per rejection.
        let mut kinds: Vec<(&String, &u64)> = r.by_reason.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (kind, count) in kinds.iter().take(SUMMARY_KINDS) {
            let example = r
                .rejected
                .iter()
                .find(|x| node::events::reason_kind(&x.reason) == kind.as_str());
            match example {
                Some(x) => outln!(context, "  {count:>8}  {kind}  (e.g. {}:{})", x.file, x.line),
                None => outln!(context, "  {count:>8}  {kind}"),
            }
        }
        if kinds.len() > SUMMARY_KINDS {
            outln!(context, "  and {} more kinds", kinds.len() - SUMMARY_KINDS);
        }
        if let Some((kind, _)) = kinds.first() {
            outln!(
                context,
                "see them with: growthmesh quarantine list --reason '{}'   (all: growthmesh quarantine list)",
                kind.replace('\'', "'\\''")
            );
        }
    })?;
    Ok(if report.quarantined == 0 {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// Kinds of rejection `ingest` lists (the rest are counted).
const SUMMARY_KINDS: usize = 10;

/// Maps ingestion and analysis errors: bad input (a definition, a body, a truncated file) exits 2.
fn events_error(error: EventsError) -> anyhow::Error {
    match error {
        EventsError::Store(error) => anyhow::Error::new(error),
        other => input_error(other.to_string()),
    }
}

/// Runs a `quarantine` subcommand.
pub fn quarantine(
    context: &Context,
    node: &mut Node,
    command: QuarantineCommand,
) -> anyhow::Result<u8> {
    match command {
        QuarantineCommand::List { reason } => {
            let mut entries = node.quarantined().map_err(events_error)?;
            if let Some(reason) = reason {
                entries.retain(|e| e.reason.contains(&reason));
            }
            let rows: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "file": e.source, "line": e.line, "reason": e.reason, "at_ms": e.at_ms,
                        "raw": String::from_utf8_lossy(&e.raw),
                    })
                })
                .collect();
            context.print(&serde_json::json!({ "quarantined": rows }), |_| {
                if entries.is_empty() {
                    outln!(context, "the quarantine is empty");
                }
                for e in &entries {
                    outln!(context, "{}:{}: {}", e.source, e.line, e.reason);
                    outln!(context, "    {}", String::from_utf8_lossy(&e.raw));
                }
            })?;
            Ok(exit::OK)
        }
        QuarantineCommand::Retry => {
            let report = node.retry_quarantine(now_ms()).map_err(events_error)?;
            print_report(context, &report, "released")
        }
    }
}

fn options(args: &AnalyzeArgs) -> anyhow::Result<analysis::Options> {
    if !(args.alpha > 0.0 && args.alpha < 0.5) {
        return Err(input_error(format!(
            "--alpha: {} is not between 0 and 0.5",
            args.alpha
        )));
    }
    Ok(analysis::Options {
        alpha: args.alpha,
        cuped: !args.no_cuped,
        ..analysis::Options::default()
    })
}

/// Runs `analyze`.
pub fn analyze(context: &Context, node: &mut Node, args: AnalyzeArgs) -> anyhow::Result<u8> {
    let report = node
        .analyze(&args.experiment, &args.metrics, &options(&args)?)
        .map_err(events_error)?;
    context.print(&report, |r| print_analysis(context, r))?;
    Ok(exit::OK)
}

/// Runs `experiment conclude`: analyses, then stores the signed result summary and marks the experiment concluded.
pub fn conclude(context: &Context, node: &mut Node, args: ConcludeArgs) -> anyhow::Result<u8> {
    // Only an experiment whose start stands concludes: a draft never ran, a blocked start spent nothing.
    let key = &args.analysis.experiment;
    let governance = node.governance();
    if let Some(state) = governance.experiments.get(key)
        && !matches!(
            state.stage,
            governance::Stage::Running | governance::Stage::Stopped
        )
    {
        return Err(crate::exit::input_error(format!(
            "EXPERIMENT: `{key}` is {}; only a running or stopped experiment concludes (start it with `experiment start {key}`)",
            state.stage.as_str()
        )));
    }
    let decision = args.decision;
    let report = node
        .analyze(
            &args.analysis.experiment,
            &args.analysis.metrics,
            &options(&args.analysis)?,
        )
        .map_err(events_error)?;
    let decision = decision.unwrap_or_else(|| report.verdict.decision());
    let summary = report.summary(decision, &node.identity().public_key, now_ms());
    let outcome = node
        .write(&Op::ConcludeExperiment(summary.clone()), now_ms())
        .map_err(map_write)?;
    let learning = match &args.learning {
        Some(body) => {
            let now = now_ms();
            let learning = model::Learning {
                id: node.new_id("learning", &summary.experiment, now),
                title: format!("What {} taught us", summary.experiment),
                body: body.clone(),
                outcome: Some(match decision {
                    model::ResultDecision::Ship => model::Outcome::Win,
                    model::ResultDecision::DontShip => model::Outcome::Loss,
                    model::ResultDecision::Inconclusive => model::Outcome::Inconclusive,
                }),
                tags: Vec::new(),
                experiment: Some(summary.experiment.clone()),
                source: String::new(),
                author: node.identity().public_key,
                created_at_ms: now,
            };
            crate::context::input(learning.validate())?;
            Some(
                node.write(&Op::AddLearning(learning), now)
                    .map_err(map_write)?,
            )
        }
        None => None,
    };
    let due = learning.is_none().then(|| {
        let days = node.view().settings.postmortem_days;
        model::time::format_date(summary.concluded_at_ms + i64::from(days) * model::time::DAY_MS)
    });
    let value = serde_json::json!({
        "change": outcome.change, "heads": outcome.heads, "decision": decision,
        "verdict": report.verdict, "summary": summary,
        "learning": learning.as_ref().map(|l| &l.change), "postmortem_due": due,
    });
    context.print(&value, |_| {
        outln!(
            context,
            "experiment {} concluded: {} (analysis: {}); change {}",
            summary.experiment,
            decision.as_str(),
            report.verdict.describe(),
            outcome.change
        );
        match &due {
            Some(due) => outln!(
                context,
                "post-mortem due {due}: share what you learnt with `learnings add --experiment {} ...`",
                summary.experiment
            ),
            None => outln!(context, "learning shared"),
        }
    })?;
    Ok(exit::OK)
}

fn percent(x: f64) -> String {
    format!("{:+.2}%", x * 100.0)
}

fn print_analysis(context: &Context, r: &analysis::Report) {
    let split: Vec<String> = r
        .variants
        .iter()
        .zip(&r.users)
        .map(|(v, n)| format!("{v} {n}"))
        .collect();
    outln!(
        context,
        "experiment {}: {} users ({}); sample ratio p = {:.4} {}",
        r.experiment,
        r.users.iter().sum::<u64>(),
        split.join(", "),
        r.srm_p_value,
        if r.srm { "MISMATCH" } else { "ok" }
    );
    if r.excluded_multiple_variations + r.excluded_unknown_variation > 0 {
        outln!(
            context,
            "left out: {} users exposed to several variations, {} with an unknown variation",
            r.excluded_multiple_variations,
            r.excluded_unknown_variation
        );
    }
    if r.outside_window > 0 {
        outln!(
            context,
            "left out: {} events outside the experiment's dates (see `experiment show {}`; `generate-events --start DATE` writes events inside them)",
            r.outside_window,
            r.experiment
        );
    }
    outln!(context, "verdict: {}", r.verdict.describe());
    for v in &r.verdicts {
        outln!(
            context,
            "  {}: {} ({})",
            v.variant,
            v.verdict.describe(),
            v.reason
        );
    }
    for m in &r.metrics {
        let direction = match m.direction {
            model::Direction::Higher => "higher is better",
            model::Direction::Lower => "lower is better",
        };
        outln!(
            context,
            "\n{} ({}{}, {direction}{})",
            m.metric,
            m.kind,
            if m.guardrail { " guardrail" } else { "" },
            if m.cuped { ", CUPED" } else { "" }
        );
        outln!(
            context,
            "  {:<14} {:>9} {:>11}  {:>30}  {:>30}  {:>8} {:>8} {:>9}",
            "variant",
            "users",
            "mean",
            "absolute lift [CI]",
            "relative lift [CI]",
            "p-value",
            "P(win)",
            "exp.loss"
        );
        for (index, v) in m.variants.iter().enumerate() {
            let Some(lift) = index.checked_sub(1).map(|i| &m.lifts[i]) else {
                outln!(
                    context,
                    "  {:<14} {:>9} {:>11.4}",
                    v.variant,
                    v.users,
                    v.mean
                );
                continue;
            };
            let absolute = format!(
                "{:+.4} [{:+.4}, {:+.4}]",
                lift.absolute_lift, lift.absolute_ci[0], lift.absolute_ci[1]
            );
            let relative = format!(
                "{} [{}, {}]",
                percent(lift.relative_lift),
                percent(lift.relative_ci[0]),
                percent(lift.relative_ci[1])
            );
            let flag = match (lift.declined, lift.significant) {
                (Some(code), _) => format!("  ({code})"),
                (None, true) if lift.better => "  *better*".to_owned(),
                (None, true) => "  *worse*".to_owned(),
                _ => String::new(),
            };
            outln!(
                context,
                "  {:<14} {:>9} {:>11.4}  {:>30}  {:>30}  {:>8.4} {:>7.1}% {:>8.3}%{flag}",
                v.variant,
                v.users,
                v.mean,
                absolute,
                relative,
                lift.p_value,
                lift.chance_to_win * 100.0,
                lift.expected_loss * 100.0
            );
        }
    }
}

/// Runs `generate-events` (no data dir needed).
pub fn generate(args: GenerateArgs, json: bool) -> anyhow::Result<u8> {
    if args.users == 0 {
        return Err(input_error("--users: must be at least 1"));
    }
    if args.events < args.users {
        return Err(input_error(format!(
            "--events: {} is fewer than one exposure per user ({})",
            args.events, args.users
        )));
    }
    model::validate_slug("--experiment", &args.experiment)
        .map_err(|e| input_error(e.to_string()))?;
    let weights = if args.weights.is_empty() {
        vec![1.0 / args.variants.len().max(1) as f64; args.variants.len()]
    } else {
        args.weights.clone()
    };
    let check = assign::Experiment {
        weights: Some(weights.clone()),
        ..assign::Experiment::new(args.experiment.clone(), args.variants.len() as u32)
    };
    check
        .validate()
        .map_err(|e| input_error(format!("--variants/--weights: {e}")))?;
    let start_ms = model::calendar::date_start_ms("--start", &args.start)
        .map_err(|e| input_error(e.to_string()))?;
    let config = analysis::generate::Config {
        variants: args.variants.clone(),
        weights,
        lift: args.lift,
        start_ms,
        days: args.days,
        ..analysis::generate::Config::new(&args.experiment, args.users, args.events, args.seed)
    };
    let written = if args.out.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        analysis::generate::generate(&config, &mut out).context("writing to stdout")?
    } else {
        let file = File::create(&args.out)
            .map_err(|e| input_error(format!("--out {}: {e}", args.out.display())))?;
        let gz = args.out.extension().is_some_and(|e| e == "gz");
        // Bytes written so far, on stderr when it is a terminal and the output is not JSON.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let progress = ProgressBar::with_draw_target(
            None,
            if terminal && !json {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        progress.set_style(
            ProgressStyle::with_template("{spinner} {bytes} written ({bytes_per_sec})")
                .expect("the template is valid"),
        );
        let mut out = std::io::BufWriter::with_capacity(1 << 16, progress.wrap_write(file));
        let written = if gz {
            let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            let written = analysis::generate::generate(&config, &mut encoder)?;
            encoder.finish().context("finishing the gzip stream")?;
            written
        } else {
            analysis::generate::generate(&config, &mut out)?
        };
        progress.finish_and_clear();
        std::io::Write::flush(&mut out)
            .with_context(|| format!("writing {}", args.out.display()))?;
        written
    };
    if args.out.as_os_str() != "-" {
        let value = serde_json::json!({ "out": args.out.display().to_string(), "lines": written.lines, "bytes": written.bytes });
        if json {
            crate::context::print_json(&value)?;
        } else {
            say!(
                "wrote {} lines ({} bytes) to {}",
                written.lines,
                written.bytes,
                args.out.display()
            );
        }
    }
    Ok(exit::OK)
}
