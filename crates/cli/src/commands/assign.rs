//! `growthmesh assign ...`: GrowthBook-compatible deterministic assignment of one user, from flags to
//! `assign::assign` to one line (or one JSON object) on stdout. With a data dir, the experiment as registered there
//! (read inside the running node when there is one); records nothing.

use crate::exit::{self, input_error};

/// Variations when neither `--variations` nor `--weights` says otherwise (GrowthBook's A/B default).
const DEFAULT_VARIATIONS: u32 = 2;

/// Arguments of `growthmesh assign`.
#[derive(Debug, Clone, clap::Args)]
pub struct AssignArgs {
    /// Experiment key (also the hash seed unless --seed is given).
    #[arg(long)]
    pub experiment: String,
    /// User id to assign (hashed over UTF-16 code units, as the GrowthBook JavaScript SDK does).
    #[arg(long, allow_hyphen_values = true)]
    pub user: String,
    /// Hash seed (default: the experiment key).
    #[arg(long, allow_hyphen_values = true)]
    pub seed: Option<String>,
    /// Hash version: 1 (GrowthBook's original) or 2.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub hash_version: Option<u8>,
    /// Comma-separated variation weights summing to 1, e.g. 0.5,0.5 (implies the number of variations).
    #[arg(long)]
    pub weights: Option<String>,
    /// Share of users included, in [0, 1] (default 1).
    #[arg(long, allow_negative_numbers = true)]
    pub coverage: Option<f64>,
    /// Number of variations (default 2, or the number of --weights).
    #[arg(long)]
    pub variations: Option<u32>,
    /// Namespace slice as ID,START,END, e.g. pricing,0,0.5 (the id may itself contain commas).
    #[arg(long, allow_hyphen_values = true)]
    pub namespace: Option<String>,
}

/// Runs `assign` from its flags alone (no data dir) and returns the exit status.
pub fn run(args: AssignArgs, json: bool) -> anyhow::Result<u8> {
    say!("{}", render(&args, None, json)?);
    Ok(exit::OK)
}

/// Runs `assign` on a node: the experiment as registered (its variants' weights and its namespace), overridden by
/// the flags given. The same answer whether the node is running (the command then runs inside it) or not.
pub fn in_node(
    context: &crate::context::Context,
    node: &node::Node,
    args: AssignArgs,
) -> anyhow::Result<u8> {
    let base = node
        .view()
        .experiments
        .get(&args.experiment)
        .map(registered);
    outln!(context, "{}", render(&args, base, context.json)?);
    Ok(exit::OK)
}

/// The assignment definition of a registered experiment (seed = key, its hash version and coverage, its variants'
/// weights and its namespace): the one the node serves to GrowthBook SDKs.
pub fn registered(experiment: &model::Experiment) -> assign::Experiment {
    node::features::assignment(experiment)
}

/// The line `assign` prints: `base` (e.g. a registered experiment's definition) overridden by the flags.
fn render(
    args: &AssignArgs,
    base: Option<assign::Experiment>,
    json: bool,
) -> anyhow::Result<String> {
    let experiment = experiment_from_args(args, base)?;
    let assignment = assign::assign(&experiment, &args.user);
    Ok(if json {
        json_line(&assignment)
    } else {
        text_line(&experiment, &args.user, &assignment)
    })
}

/// The experiment the flags describe: `base` (or GrowthBook's defaults) with each given flag replacing its field.
///
/// The result is validated strictly: definitions the SDKs would silently repair (weights not summing to 1,
/// coverage outside [0, 1]) are input errors here, so nobody runs an experiment other than the one they typed.
pub fn experiment_from_args(
    args: &AssignArgs,
    base: Option<assign::Experiment>,
) -> anyhow::Result<assign::Experiment> {
    let mut experiment = base
        .unwrap_or_else(|| assign::Experiment::new(args.experiment.clone(), DEFAULT_VARIATIONS));
    experiment.key.clone_from(&args.experiment);
    if let Some(seed) = &args.seed {
        experiment.seed = Some(seed.clone());
    }
    if let Some(version) = args.hash_version {
        experiment.hash_version = version;
    }
    if let Some(coverage) = args.coverage {
        experiment.coverage = coverage;
    }
    if let Some(namespace) = &args.namespace {
        experiment.namespace = Some(parse_namespace(namespace)?);
    }
    apply_variations(&mut experiment, args)?;
    experiment
        .validate()
        .map_err(|error| input_error(format!("{}: {error}", flag_of(&error))))?;
    Ok(experiment)
}

/// Applies `--weights` and `--variations`: weights imply the count; a count alone keeps base weights only
/// if they still fit, and otherwise means equal weights.
fn apply_variations(experiment: &mut assign::Experiment, args: &AssignArgs) -> anyhow::Result<()> {
    match (&args.weights, args.variations) {
        (Some(text), variations) => {
            let weights = parse_weights(text)?;
            let count = u32::try_from(weights.len())
                .map_err(|_| input_error("--weights: too many weights"))?;
            if let Some(variations) = variations.filter(|&v| v != count) {
                return Err(input_error(format!(
                    "--weights: {count} weights given but --variations {variations}"
                )));
            }
            experiment.variations = count;
            experiment.weights = Some(weights);
        }
        (None, Some(variations)) => {
            experiment.variations = variations;
            if experiment
                .weights
                .as_ref()
                .is_some_and(|w| w.len() != variations as usize)
            {
                experiment.weights = None;
            }
        }
        (None, None) => {}
    }
    Ok(())
}

fn parse_weights(text: &str) -> anyhow::Result<Vec<f64>> {
    text.split(',')
        .map(|part| {
            part.trim().parse::<f64>().map_err(|_| {
                input_error(format!(
                    "--weights: {part:?} is not a number (expected e.g. 0.5,0.5)"
                ))
            })
        })
        .collect()
}

fn parse_namespace(text: &str) -> anyhow::Result<assign::Namespace> {
    let usage = || {
        input_error(format!(
            "--namespace: {text:?} is not ID,START,END (e.g. pricing,0,0.5)"
        ))
    };
    // Split from the right so that an id containing commas still parses.
    let mut parts = text.rsplitn(3, ',');
    let end = parts.next().ok_or_else(usage)?;
    let start = parts.next().ok_or_else(usage)?;
    let id = parts.next().ok_or_else(usage)?;
    let number = |part: &str| part.trim().parse::<f64>().map_err(|_| usage());
    Ok(assign::Namespace {
        id: id.to_owned(),
        start: number(start)?,
        end: number(end)?,
    })
}

/// The flag a validation error is most likely about, to prefix the message with.
fn flag_of(error: &assign::Error) -> &'static str {
    match error {
        assign::Error::EmptyKey => "--experiment",
        assign::Error::TooFewVariations { .. } | assign::Error::TooManyVariations { .. } => {
            "--variations"
        }
        assign::Error::WeightsLength { .. }
        | assign::Error::WeightInvalid { .. }
        | assign::Error::WeightsSum { .. } => "--weights",
        assign::Error::CoverageOutOfRange { .. } => "--coverage",
        assign::Error::UnknownHashVersion { .. } => "--hash-version",
        assign::Error::NamespaceRange { .. } => "--namespace",
    }
}

/// The JSON shape of `assign --json`: exactly these fields, in this order.
#[derive(serde::Serialize)]
struct JsonAssignment {
    in_experiment: bool,
    variation: Option<u32>,
    hash: Option<f64>,
}

fn json_line(assignment: &assign::Assignment) -> String {
    let shape = JsonAssignment {
        in_experiment: assignment.in_experiment,
        variation: assignment.variation,
        hash: assignment.hash,
    };
    serde_json::to_string(&shape).expect("three plain fields always serialize")
}

fn text_line(
    experiment: &assign::Experiment,
    user: &str,
    assignment: &assign::Assignment,
) -> String {
    let hash = assignment
        .hash
        .map_or_else(|| "not computed".to_owned(), |n| n.to_string());
    match (assignment.variation, assignment.exclusion) {
        (Some(variation), _) => format!(
            "experiment {} user {user:?}: variation {variation} of {} (hash {hash})",
            experiment.key, experiment.variations
        ),
        (None, exclusion) => {
            let reason = exclusion.map_or("excluded", assign::Exclusion::describe);
            format!(
                "experiment {} user {user:?}: not in experiment, {reason} (hash {hash})",
                experiment.key
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> AssignArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            args: AssignArgs,
        }
        let mut argv = vec!["assign", "--experiment", "exp", "--user", "u"];
        argv.extend_from_slice(extra);
        <Wrapper as clap::Parser>::try_parse_from(argv)
            .expect("valid flags")
            .args
    }

    #[test]
    fn defaults_are_growthbook_defaults() {
        let experiment = experiment_from_args(&args(&[]), None).expect("valid");
        assert_eq!(experiment, assign::Experiment::new("exp", 2));
    }

    #[test]
    fn weights_imply_the_count() {
        let experiment =
            experiment_from_args(&args(&["--weights", "0.2, 0.3,0.5"]), None).expect("valid");
        assert_eq!(
            (experiment.variations, experiment.weights),
            (3, Some(vec![0.2, 0.3, 0.5]))
        );
        let clash =
            experiment_from_args(&args(&["--weights", "0.5,0.5", "--variations", "3"]), None);
        assert!(
            clash
                .expect_err("count clash")
                .to_string()
                .starts_with("--weights:")
        );
    }

    #[test]
    fn flags_override_a_base_definition() {
        let base = assign::Experiment {
            weights: Some(vec![0.1, 0.9]),
            hash_version: 2,
            ..assign::Experiment::new("exp", 2)
        };
        let kept =
            experiment_from_args(&args(&["--coverage", "0.5"]), Some(base.clone())).expect("valid");
        assert_eq!(
            (kept.weights.clone(), kept.hash_version, kept.coverage),
            (base.weights.clone(), 2, 0.5)
        );
        let resized =
            experiment_from_args(&args(&["--variations", "4"]), Some(base)).expect("valid");
        assert_eq!((resized.variations, resized.weights), (4, None));
    }

    #[test]
    fn namespace_ids_may_contain_commas() {
        let experiment =
            experiment_from_args(&args(&["--namespace", "a,b,0.25,0.75"]), None).expect("valid");
        let namespace = experiment.namespace.expect("a namespace");
        assert_eq!(
            (namespace.id.as_str(), namespace.start, namespace.end),
            ("a,b", 0.25, 0.75)
        );
    }

    #[test]
    fn bad_definitions_name_their_flag() {
        for (flags, prefix) in [
            (&["--weights", "0.3,0.3"][..], "--weights:"),
            (&["--weights", "half,half"][..], "--weights:"),
            (&["--coverage", "1.5"][..], "--coverage:"),
            (&["--coverage", "-0.1"][..], "--coverage:"),
            (&["--variations", "1"][..], "--variations:"),
            (&["--namespace", "pricing,0.5"][..], "--namespace:"),
            (&["--namespace", "pricing,0.8,0.2"][..], "--namespace:"),
        ] {
            let error = experiment_from_args(&args(flags), None).expect_err("invalid");
            assert!(error.to_string().starts_with(prefix), "{flags:?}: {error}");
            assert_eq!(exit::status_of(&error), exit::BAD_INPUT);
        }
    }
}
