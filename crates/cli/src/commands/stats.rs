//! `growthmesh stats ...`: a calculator over sufficient statistics; parses flags, calls the `stats` crate, prints.
//!
//! Needs no data dir, node or federation. Arguments that cannot describe any data exit 2 naming
//! the flag; data gbstats declines to test (zero variance, zero control mean) exit 0 with `error`.

use crate::exit;
use serde_json::{Value, json};
use stats::{
    Difference, ProportionStatistic, SampleMeanStatistic, Statistic, bayesian, correction,
    frequentist, meta, power, srm,
};

/// Statistics calculator subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum StatsCommand {
    /// Compare a treatment arm with control (Welch, sequential or Bayesian, as gbstats).
    Compare(CompareArgs),
    /// Sample-ratio mismatch p-value of observed users per variation.
    Srm(SrmArgs),
    /// Pool one lift measured in several pods (fixed and DerSimonian-Laird random effects).
    Meta(MetaArgs),
    /// Users per variation to detect a relative lift (or, with --users, the detectable lift).
    Power(PowerArgs),
    /// Minimum detectable relative lift with a given number of users per variation.
    Mde(MdeArgs),
    /// Adjust p-values for multiple comparisons.
    Correct(CorrectArgs),
}

/// Which test `compare` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Frequentist,
    Bayesian,
    Sequential,
}

#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// Control arm: N,SUM,SUM_SQUARES (N,SUM with --binomial).
    #[arg(long, value_name = "N,SUM[,SUM_SQUARES]", allow_hyphen_values = true)]
    control: String,
    /// Treatment arm, same format as --control.
    #[arg(long, value_name = "N,SUM[,SUM_SQUARES]", allow_hyphen_values = true)]
    treatment: String,
    /// Arms are conversions: SUM successes among N units.
    #[arg(long)]
    binomial: bool,
    /// CUPED: the control's pre-exposure covariate, as a stored result's `pre_sum`, `pre_sum_squares` and
    /// `post_pre_sum` (needs --treatment-pre).
    #[arg(
        long,
        value_name = "PRE_SUM,PRE_SUM_SQUARES,POST_PRE_SUM",
        allow_hyphen_values = true,
        requires = "treatment_pre"
    )]
    control_pre: Option<String>,
    /// CUPED: the treatment's covariate, same format as --control-pre.
    #[arg(
        long,
        value_name = "PRE_SUM,PRE_SUM_SQUARES,POST_PRE_SUM",
        allow_hyphen_values = true,
        requires = "control_pre"
    )]
    treatment_pre: Option<String>,
    /// Ratio metric: the control's denominator, as a stored result's `denominator_sum`,
    /// `denominator_sum_squares` and `numerator_denominator_sum` (--control is then the numerator; needs
    /// --treatment-denominator).
    #[arg(
        long,
        value_name = "DEN_SUM,DEN_SUM_SQUARES,NUM_DEN_SUM",
        allow_hyphen_values = true,
        requires = "treatment_denominator",
        conflicts_with_all = ["binomial", "control_pre"]
    )]
    control_denominator: Option<String>,
    /// Ratio metric: the treatment's denominator, same format as --control-denominator.
    #[arg(
        long,
        value_name = "DEN_SUM,DEN_SUM_SQUARES,NUM_DEN_SUM",
        allow_hyphen_values = true,
        requires = "control_denominator"
    )]
    treatment_denominator: Option<String>,
    /// Lift relative to the control mean (the default, as in gbstats).
    #[arg(long, conflicts_with = "absolute")]
    relative: bool,
    /// Lift as the difference of means.
    #[arg(long)]
    absolute: bool,
    #[arg(long, value_enum, default_value_t = Method::Frequentist)]
    method: Method,
    /// One minus the confidence (or credible) level.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Sequential tuning parameter (gbstats' default 5000).
    #[arg(long, default_value_t = frequentist::DEFAULT_SEQUENTIAL_TUNING)]
    tuning: f64,
}

#[derive(Debug, clap::Args)]
pub struct SrmArgs {
    /// Users observed per variation: N1,N2,...
    #[arg(long, value_name = "N1,N2,...")]
    counts: String,
    /// Intended traffic weights (default: equal).
    #[arg(long, value_name = "W1,W2,...")]
    weights: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct MetaArgs {
    /// One pod's lift and standard error: EST,SE (repeat per pod).
    #[arg(
        long = "effect",
        value_name = "EST,SE",
        required_unless_present = "from_registry",
        allow_hyphen_values = true
    )]
    effects: Vec<String>,
    /// Pool the signed results in this node's registry of the concluded experiments that tested this hypothesis:
    /// an experiment key (that experiment and those whose hypotheses say the same), or the hypothesis in words.
    /// Each result's relative lift of its first treatment on the primary metric, recomputed from its statistics.
    #[arg(long, value_name = "HYPOTHESIS_OR_KEY", conflicts_with = "effects")]
    from_registry: Option<String>,
    /// With --from-registry: the metric to pool (default: the key's primary metric, or the one the matching
    /// experiments share).
    #[arg(long, requires = "from_registry")]
    metric: Option<String>,
    /// One minus the confidence level of the normal intervals.
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
}

impl StatsCommand {
    /// Whether the command reads a node's registry (and so runs where the store is, or inside the running node).
    pub fn needs_registry(&self) -> bool {
        matches!(self, StatsCommand::Meta(args) if args.from_registry.is_some())
    }
}

/// What is known before an experiment runs.
#[derive(Debug, clap::Args)]
pub struct DesignArgs {
    /// Control mean of the metric.
    #[arg(long, allow_hyphen_values = true)]
    mean: f64,
    /// Per-user standard deviation of the metric.
    #[arg(long)]
    stddev: f64,
    #[arg(long, default_value_t = 0.05)]
    alpha: f64,
    /// Target power.
    #[arg(long, default_value_t = 0.8)]
    power: f64,
    /// Number of variations including control (alpha is split over the comparisons).
    #[arg(long, default_value_t = 2)]
    variations: u32,
}

#[derive(Debug, clap::Args)]
pub struct PowerArgs {
    #[command(flatten)]
    design: DesignArgs,
    /// Relative lift to detect, e.g. 0.05 for +5%.
    #[arg(
        long,
        allow_hyphen_values = true,
        required_unless_present = "users",
        conflicts_with = "users"
    )]
    mde: Option<f64>,
    /// Users per variation: print the minimum detectable effect instead.
    #[arg(long)]
    users: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct MdeArgs {
    #[command(flatten)]
    design: DesignArgs,
    /// Users per variation.
    #[arg(long)]
    users: f64,
}

#[derive(Debug, clap::Args)]
pub struct CorrectArgs {
    /// P-values: P1,P2,...
    #[arg(long, value_name = "P1,P2,...")]
    p_values: String,
    #[arg(long, value_enum)]
    method: CorrectionMethod,
}

/// Which multiple-comparison correction `correct` applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CorrectionMethod {
    Holm,
    Bh,
}

/// Runs a `stats` subcommand and returns the exit status.
pub fn run(command: StatsCommand, json: bool) -> anyhow::Result<u8> {
    let (output, text) = match command {
        StatsCommand::Compare(args) => compare(&args)?,
        StatsCommand::Srm(args) => srm_check(&args)?,
        StatsCommand::Meta(args) => meta_analysis(&args)?,
        StatsCommand::Power(args) => match (args.mde, args.users) {
            (Some(mde), _) => users_needed(&args.design, mde)?,
            (None, Some(users)) => detectable_effect(&args.design, users)?,
            (None, None) => return Err(exit::input_error("--mde or --users is required")),
        },
        StatsCommand::Mde(args) => detectable_effect(&args.design, args.users)?,
        StatsCommand::Correct(args) => correct(&args)?,
    };
    if json {
        say!("{output}");
    } else {
        say!("{text}");
    }
    Ok(exit::OK)
}

/// A JSON number, or `null` for an infinite or undefined value.
fn number(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

/// Splits `FLAG VALUE` into numbers, naming the flag and field on failure.
fn numbers(flag: &str, value: &str, names: &[&str]) -> anyhow::Result<Vec<f64>> {
    let fields: Vec<&str> = value.split(',').map(str::trim).collect();
    if fields.len() != names.len() {
        let expected = names.join(",");
        return Err(exit::input_error(format!(
            "{flag}: expected {expected} ({} comma-separated numbers), got {value:?}",
            names.len()
        )));
    }
    fields
        .iter()
        .zip(names)
        .map(|(field, name)| {
            field
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    exit::input_error(format!(
                        "{flag}: {name} must be a finite number, got {field:?}"
                    ))
                })
        })
        .collect()
}

/// A count `N`: a whole number >= 1.
fn count(flag: &str, value: f64) -> anyhow::Result<u64> {
    if value < 1.0 || value.fract() != 0.0 || value > 2f64.powi(53) {
        return Err(exit::input_error(format!(
            "{flag}: n must be >= 1 (a whole number), got {value}"
        )));
    }
    Ok(value as u64)
}

/// Parses one arm of `compare`.
fn arm(flag: &str, value: &str, binomial: bool) -> anyhow::Result<Statistic> {
    let invalid = |error: stats::Error| exit::input_error(format!("{flag}: {error}"));
    if binomial {
        let fields = numbers(flag, value, &["N", "SUM"])?;
        let n = count(flag, fields[0])?;
        return Ok(Statistic::Proportion(
            ProportionStatistic::new(n, fields[1]).map_err(invalid)?,
        ));
    }
    let fields = numbers(flag, value, &["N", "SUM", "SUM_SQUARES"])?;
    let n = count(flag, fields[0])?;
    Ok(Statistic::Mean(
        SampleMeanStatistic::new(n, fields[1], fields[2]).map_err(invalid)?,
    ))
}

/// An optional flag's value with the flag's name, for errors.
fn flagged<'a>(flag: &'a str, value: &'a Option<String>) -> Option<(&'a str, &'a str)> {
    value.as_deref().map(|v| (flag, v))
}

/// One arm with its optional CUPED covariate (`pre`) or ratio denominator, as the sufficient statistics a stored
/// result carries (`analysis::verify::statistic` reads them the same way).
fn full_arm(
    (flag, value): (&str, &str),
    pre: Option<(&str, &str)>,
    denominator: Option<(&str, &str)>,
    binomial: bool,
) -> anyhow::Result<Statistic> {
    let base = arm(flag, value, binomial)?;
    let (n, post) = match base {
        Statistic::Proportion(p) => (p.n, stats::statistic::Moments::Proportion(p)),
        Statistic::Mean(m) => (m.n, stats::statistic::Moments::Mean(m)),
        other => return Ok(other),
    };
    let triple = |(flag, value): (&str, &str), names: &[&str]| numbers(flag, value, names);
    if let Some(denominator) = denominator {
        let d = triple(denominator, &["DEN_SUM", "DEN_SUM_SQUARES", "NUM_DEN_SUM"])?;
        return Ok(Statistic::Ratio(stats::statistic::RatioStatistic {
            n,
            numerator: post,
            denominator: stats::statistic::Moments::Mean(SampleMeanStatistic {
                n,
                sum: d[0],
                sum_squares: d[1],
            }),
            sum_of_products: d[2],
        }));
    }
    if let Some(pre) = pre {
        let p = triple(pre, &["PRE_SUM", "PRE_SUM_SQUARES", "POST_PRE_SUM"])?;
        let covariate = if binomial {
            stats::statistic::Moments::Proportion(ProportionStatistic { n, sum: p[0] })
        } else {
            stats::statistic::Moments::Mean(SampleMeanStatistic {
                n,
                sum: p[0],
                sum_squares: p[1],
            })
        };
        return Ok(Statistic::RegressionAdjusted(
            stats::statistic::RegressionAdjustedStatistic {
                n,
                post,
                pre: covariate,
                sum_of_products: p[2],
                theta: 0.0,
            },
        ));
    }
    Ok(base)
}

/// Checks a probability flag such as `--alpha`.
fn probability(flag: &str, value: f64) -> anyhow::Result<f64> {
    if value > 0.0 && value < 1.0 {
        Ok(value)
    } else {
        Err(exit::input_error(format!(
            "{flag}: must be strictly between 0 and 1, got {value}"
        )))
    }
}

fn compare(args: &CompareArgs) -> anyhow::Result<(Value, String)> {
    let control = full_arm(
        ("--control", &args.control),
        flagged("--control-pre", &args.control_pre),
        flagged("--control-denominator", &args.control_denominator),
        args.binomial,
    )?;
    let treatment = full_arm(
        ("--treatment", &args.treatment),
        flagged("--treatment-pre", &args.treatment_pre),
        flagged("--treatment-denominator", &args.treatment_denominator),
        args.binomial,
    )?;
    let alpha = probability("--alpha", args.alpha)?;
    let difference = if args.absolute {
        Difference::Absolute
    } else {
        Difference::Relative
    };
    let invalid = |error: stats::Error| exit::input_error(format!("stats compare: {error}"));
    if args.method == Method::Bayesian {
        let config = bayesian::Config {
            alpha,
            difference,
            ..bayesian::Config::default()
        };
        let result = bayesian::effect_test(&control, &treatment, &config).map_err(invalid)?;
        return Ok(bayesian_output(&result, difference));
    }
    let config = frequentist::Config {
        alpha,
        difference,
        test_value: 0.0,
    };
    let result = if args.method == Method::Sequential {
        if !(args.tuning > 0.0 && args.tuning.is_finite()) {
            return Err(exit::input_error(format!(
                "--tuning: must be > 0, got {}",
                args.tuning
            )));
        }
        frequentist::sequential_ttest(&control, &treatment, &config, args.tuning)
    } else {
        frequentist::two_sided_ttest(&control, &treatment, &config)
    }
    .map_err(invalid)?;
    Ok(frequentist_output(&result, args.method, difference))
}

/// The fields both kinds of result share, as gbstats names them.
fn shared_fields(
    expected: f64,
    ci: [f64; 2],
    uplift: stats::Uplift,
) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("expected".into(), number(expected));
    map.insert("ci".into(), json!([number(ci[0]), number(ci[1])]));
    map.insert(
        "uplift".into(),
        json!({ "mean": number(uplift.mean), "stddev": number(uplift.stddev) }),
    );
    map
}

fn frequentist_output(
    r: &frequentist::TestResult,
    method: Method,
    difference: Difference,
) -> (Value, String) {
    let mut map = shared_fields(r.expected, r.ci, r.uplift);
    map.insert("p_value".into(), number(r.p_value));
    if let Some(error) = r.error {
        map.insert("error".into(), json!(error.code()));
    }
    let name = if method == Method::Sequential {
        "sequential t-test"
    } else {
        "Welch t-test"
    };
    let text = match r.error {
        Some(error) => format!("{name}: not computed ({})", error.code()),
        None => format!(
            "{name}, {} lift: {}  CI [{}, {}]  p = {:.6}",
            difference.as_str(),
            show(r.expected, difference),
            show(r.ci[0], difference),
            show(r.ci[1], difference),
            r.p_value
        ),
    };
    (Value::Object(map), text)
}

fn bayesian_output(r: &bayesian::TestResult, difference: Difference) -> (Value, String) {
    let mut map = shared_fields(r.expected, r.ci, r.uplift);
    map.insert("chance_to_win".into(), number(r.chance_to_win));
    map.insert("risk".into(), json!([number(r.risk[0]), number(r.risk[1])]));
    map.insert("risk_type".into(), json!(difference.as_str()));
    if let Some(error) = r.error {
        map.insert("error".into(), json!(error.code()));
    }
    let text = match r.error {
        Some(error) => format!("Bayesian test: not computed ({})", error.code()),
        None => format!(
            "Bayesian test, {} lift: {}  credible interval [{}, {}]\nchance to win {:.2}%  risk: control {}, treatment {}",
            difference.as_str(),
            show(r.expected, difference),
            show(r.ci[0], difference),
            show(r.ci[1], difference),
            100.0 * r.chance_to_win,
            show(r.risk[0], difference),
            show(r.risk[1], difference)
        ),
    };
    (Value::Object(map), text)
}

/// A lift for humans: a percentage when relative.
fn show(value: f64, difference: Difference) -> String {
    match difference {
        Difference::Relative => format!("{:+.4}%", 100.0 * value),
        Difference::Absolute => format!("{value:+.6}"),
    }
}

fn srm_check(args: &SrmArgs) -> anyhow::Result<(Value, String)> {
    let counts = list(&args.counts)
        .map(|field| {
            field.parse::<u64>().map_err(|_| {
                exit::input_error(format!(
                    "--counts: {field:?} is not a whole number of users"
                ))
            })
        })
        .collect::<anyhow::Result<Vec<u64>>>()?;
    let weights = match &args.weights {
        Some(weights) => list(weights)
            .map(|field| finite_number("--weights", field))
            .collect::<anyhow::Result<Vec<f64>>>()?,
        None => vec![1.0; counts.len()],
    };
    let p_value = srm::check_srm(&counts, &weights).map_err(|error| {
        let flag = match error {
            stats::Error::TooFew { .. } => "--counts",
            _ => "--weights",
        };
        exit::input_error(format!("{flag}: {error}"))
    })?;
    Ok((
        json!({ "p_value": number(p_value) }),
        format!("SRM p-value: {p_value:.6}"),
    ))
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

fn finite_number(flag: &str, field: &str) -> anyhow::Result<f64> {
    field
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite())
        .ok_or_else(|| exit::input_error(format!("{flag}: {field:?} is not a finite number")))
}

fn meta_analysis(args: &MetaArgs) -> anyhow::Result<(Value, String)> {
    let alpha = probability("--alpha", args.alpha)?;
    if args.from_registry.is_some() {
        return Err(exit::input_error(
            "--from-registry reads a node's registry; run it with a data dir",
        ));
    }
    let effects = args
        .effects
        .iter()
        .map(|effect| {
            let fields = numbers("--effect", effect, &["EST", "SE"])?;
            if fields[1] <= 0.0 {
                return Err(exit::input_error(format!(
                    "--effect: SE must be > 0, got {}",
                    fields[1]
                )));
            }
            Ok(meta::Effect {
                estimate: fields[0],
                standard_error: fields[1],
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let r = meta::combine(&effects, alpha)
        .map_err(|error| exit::input_error(format!("--effect: {error}")))?;
    Ok(meta_output(&r, alpha))
}

/// `stats meta`'s fields for a pooled analysis, and its text. The prediction interval is where a new pod's effect
/// is expected to fall (`random ± z·sqrt(τ² + se²)`, as metafor's `predict` with normal intervals).
fn meta_output(r: &meta::MetaAnalysis, alpha: f64) -> (Value, String) {
    let z = stats::distribution::normal::ppf(1.0 - alpha / 2.0);
    let spread = (r.tau2 + r.random.se.powi(2)).sqrt();
    let prediction = [r.random.effect - z * spread, r.random.effect + z * spread];
    let pooled = |p: &meta::Pooled| json!({ "effect": number(p.effect), "se": number(p.se), "ci": [number(p.ci[0]), number(p.ci[1])] });
    let mut random = pooled(&r.random);
    random["tau2"] = number(r.tau2);
    let output = json!({
        "fixed": pooled(&r.fixed),
        "random": random,
        "q": number(r.q),
        "q_p_value": number(r.q_p_value),
        "i2": number(r.i2),
        "prediction_interval": [number(prediction[0]), number(prediction[1])],
    });
    let text = format!(
        "fixed effect:  {:.6} (se {:.6}, CI [{:.6}, {:.6}])\nrandom effect: {:.6} (se {:.6}, CI [{:.6}, {:.6}], tau² {:.6})\nQ = {:.4} (p = {:.4}), I² = {:.1}%; a new pod's effect: [{:.6}, {:.6}]",
        r.fixed.effect,
        r.fixed.se,
        r.fixed.ci[0],
        r.fixed.ci[1],
        r.random.effect,
        r.random.se,
        r.random.ci[0],
        r.random.ci[1],
        r.tau2,
        r.q,
        r.q_p_value,
        100.0 * r.i2,
        prediction[0],
        prediction[1]
    );
    (output, text)
}

/// Heterogeneity worth a council's attention: Cochran's Q significant at 10% (the usual threshold for its low
/// power) or over half the variation between pods (I² > 50%).
const HETEROGENEITY_Q_P: f64 = 0.1;
const HETEROGENEITY_I2: f64 = 0.5;

/// A stats command that reads the registry (see [`StatsCommand::needs_registry`]), against an open node.
pub fn in_registry(
    context: &crate::context::Context,
    node: &node::Node,
    command: StatsCommand,
) -> anyhow::Result<u8> {
    match command {
        StatsCommand::Meta(args) if args.from_registry.is_some() => {
            meta_from_registry(context, node, &args)
        }
        _ => Err(exit::input_error(
            "this stats command reads no registry; it runs without a data dir",
        )),
    }
}

/// `stats meta --from-registry`: pools the signed results of the concluded experiments that tested one hypothesis.
fn meta_from_registry(
    context: &crate::context::Context,
    node: &node::Node,
    args: &MetaArgs,
) -> anyhow::Result<u8> {
    let alpha = probability("--alpha", args.alpha)?;
    let wanted = args.from_registry.as_deref().unwrap_or_default();
    let view = node.shared_view();
    let concluded: Vec<&model::Experiment> = view
        .experiments
        .values()
        .filter(|e| view.results.contains_key(&e.key))
        .collect();
    let index = governance::overlap::OverlapIndex::new(concluded.iter().copied());
    let anchor = view.experiments.get(wanted);
    let text = anchor.map_or_else(|| wanted.to_owned(), governance::overlap::hypothesis_text);
    let mut matched: Vec<(&model::Experiment, f64)> = index.similar_to(&text);
    if let Some(anchor) = anchor
        && view.results.contains_key(&anchor.key)
        && !matched.iter().any(|(e, _)| e.key == anchor.key)
    {
        matched.insert(0, (anchor, 1.0));
    }
    let metric = match (&args.metric, anchor.and_then(|a| a.primary_metric.clone())) {
        (Some(metric), _) => metric.clone(),
        (None, Some(metric)) => metric,
        (None, None) => {
            let metrics: std::collections::BTreeSet<&str> = matched
                .iter()
                .filter_map(|(e, _)| e.primary_metric.as_deref())
                .collect();
            match metrics.len() {
                1 => metrics.into_iter().next().unwrap_or_default().to_owned(),
                0 => {
                    return Err(exit::input_error(format!(
                        "--from-registry: no concluded experiment tested `{wanted}` (no stored result's hypothesis is similar enough, cosine >= {})",
                        governance::overlap::SIMILAR_HYPOTHESIS
                    )));
                }
                _ => {
                    return Err(exit::input_error(format!(
                        "--from-registry: the matching experiments measure different primary metrics ({}); choose one with --metric",
                        metrics.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
    };
    let mut pooled = Vec::new();
    let mut left_out = Vec::new();
    for (experiment, similarity) in &matched {
        let summary = &view.results[&experiment.key];
        match analysis::verify::effect(summary, &metric) {
            Ok(Some((estimate, se))) => pooled.push((experiment, *similarity, estimate, se)),
            Ok(None) => left_out.push(json!({
                "experiment": experiment.key,
                "pod": experiment.pod,
                "why": format!("its result has no testable `{metric}`"),
            })),
            Err(error) => left_out.push(json!({
                "experiment": experiment.key,
                "pod": experiment.pod,
                "why": error.to_string(),
            })),
        }
    }
    if pooled.is_empty() {
        return Err(exit::input_error(format!(
            "--from-registry: no concluded experiment that tested `{wanted}` has a testable result on `{metric}`"
        )));
    }
    let effects: Vec<meta::Effect> = pooled
        .iter()
        .map(|(_, _, estimate, se)| meta::Effect {
            estimate: *estimate,
            standard_error: *se,
        })
        .collect();
    let r = meta::combine(&effects, alpha)
        .map_err(|error| exit::input_error(format!("--from-registry: {error}")))?;
    let (mut output, mut text) = meta_output(&r, alpha);
    let z = stats::distribution::normal::ppf(1.0 - alpha / 2.0);
    let rows: Vec<Value> = pooled
        .iter()
        .map(|(e, similarity, estimate, se)| {
            let ci = [estimate - z * se, estimate + z * se];
            json!({
                "experiment": e.key,
                "pod": e.pod,
                "region": e.audience.region,
                "similarity": number(*similarity),
                "estimate": number(*estimate),
                "se": number(*se),
                "ci": [number(ci[0]), number(ci[1])],
                "significant": ci[0] > 0.0 || ci[1] < 0.0,
            })
        })
        .collect();
    let heterogeneous =
        pooled.len() > 1 && (r.q_p_value < HETEROGENEITY_Q_P || r.i2 > HETEROGENEITY_I2);
    let (works, not): (Vec<&Value>, Vec<&Value>) = rows
        .iter()
        .partition(|r| r["significant"] == true && r["estimate"].as_f64().unwrap_or(0.0) > 0.0);
    let (works, not): (Vec<String>, Vec<String>) = (
        works.into_iter().map(place).collect(),
        not.into_iter().map(place).collect(),
    );
    let summary = if !heterogeneous {
        format!(
            "consistent across {} experiment(s): pooled relative lift {:+.2}%",
            pooled.len(),
            100.0 * r.random.effect
        )
    } else if !works.is_empty() && !not.is_empty() {
        format!(
            "heterogeneous: works in {}, not in {}",
            works.join(", "),
            not.join(", ")
        )
    } else {
        "heterogeneous: the pods' lifts differ more than chance explains".to_owned()
    };
    if let Value::Object(map) = &mut output {
        map.insert("metric".into(), json!(metric));
        map.insert("experiments".into(), json!(rows));
        map.insert("left_out".into(), json!(left_out));
        map.insert("heterogeneous".into(), json!(heterogeneous));
        map.insert("summary".into(), json!(summary));
    }
    text = format!(
        "{} experiment(s) on `{metric}`: {}\n{text}\n{summary}",
        pooled.len(),
        pooled
            .iter()
            .map(|(e, _, estimate, _)| format!("{} ({}) {:+.2}%", e.key, e.pod, 100.0 * estimate))
            .collect::<Vec<_>>()
            .join(", ")
    );
    context.print(&output, |_| {
        outln!(context, "{text}");
    })?;
    Ok(exit::OK)
}

/// Where an experiment ran, for people: its audience's region, else its pod.
fn place(row: &Value) -> String {
    row["region"]
        .as_str()
        .filter(|r| !r.is_empty())
        .or_else(|| row["pod"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn design(args: &DesignArgs) -> anyhow::Result<power::Design> {
    let design = power::Design {
        mean: args.mean,
        stddev: args.stddev,
        alpha: args.alpha,
        power: args.power,
        variations: args.variations,
    };
    design
        .validate()
        .map_err(|error| exit::input_error(format!("stats power: {error}")))?;
    Ok(design)
}

fn users_needed(args: &DesignArgs, mde: f64) -> anyhow::Result<(Value, String)> {
    let design = design(args)?;
    let users = power::users_per_variation(&design, mde)
        .map_err(|error| exit::input_error(format!("--mde: {error}")))?;
    let text = format!(
        "{users} users per variation ({} in total) to detect a {:+.2}% lift with {:.0}% power at alpha {}",
        users.saturating_mul(u64::from(design.variations)),
        100.0 * mde,
        100.0 * design.power,
        design.alpha
    );
    Ok((json!({ "users_per_variation": users }), text))
}

fn detectable_effect(args: &DesignArgs, users: f64) -> anyhow::Result<(Value, String)> {
    let design = design(args)?;
    let mde = power::minimum_detectable_effect(&design, users)
        .map_err(|error| exit::input_error(format!("--users: {error}")))?;
    let text = format!(
        "minimum detectable relative lift with {users} users per variation: {:.4}% ({:.0}% power, alpha {})",
        100.0 * mde,
        100.0 * design.power,
        design.alpha
    );
    Ok((json!({ "mde": number(mde) }), text))
}

fn correct(args: &CorrectArgs) -> anyhow::Result<(Value, String)> {
    let p_values = list(&args.p_values)
        .map(|field| finite_number("--p-values", field))
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let method = match args.method {
        CorrectionMethod::Holm => correction::Method::Holm,
        CorrectionMethod::Bh => correction::Method::BenjaminiHochberg,
    };
    let adjusted = correction::adjust(&p_values, method)
        .map_err(|error| exit::input_error(format!("--p-values: {error}")))?;
    let text = adjusted
        .iter()
        .map(|p| format!("{p:.6}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok((
        json!({ "adjusted": adjusted.iter().copied().map(number).collect::<Vec<_>>() }),
        format!("adjusted: {text}"),
    ))
}
