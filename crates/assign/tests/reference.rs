//! Checks the crate against reference values computed by the GrowthBook JavaScript SDK
//! (`fixtures/growthbook-reference.json`, written by `fixtures/generate.mjs`).

use serde_json::Value;

/// Ranges and weights are sums of floats; a wrong implementation is off by at least 1e-4 (one bucket).
const TOLERANCE: f64 = 1e-12;

fn reference() -> Value {
    let text = include_str!("../fixtures/growthbook-reference.json");
    serde_json::from_str(text).expect("the fixture is valid JSON")
}

fn section(name: &str) -> Vec<Value> {
    reference()[name]
        .as_array()
        .unwrap_or_else(|| panic!("section {name} is an array"))
        .clone()
}

fn text(value: &Value) -> &str {
    value.as_str().expect("a string")
}

fn number(value: &Value) -> f64 {
    value.as_f64().expect("a number")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOLERANCE
}

fn ranges_of(value: &Value) -> Vec<assign::BucketRange> {
    let pairs = value.as_array().expect("ranges are an array");
    pairs
        .iter()
        .map(|pair| assign::BucketRange {
            start: number(&pair[0]),
            end: number(&pair[1]),
        })
        .collect()
}

fn namespace_of(value: &Value) -> assign::Namespace {
    assign::Namespace {
        id: text(&value[0]).to_owned(),
        start: number(&value[1]),
        end: number(&value[2]),
    }
}

#[test]
fn hash_matches_the_sdk() {
    let cases = section("hash");
    assert!(cases.len() > 300);
    for case in &cases {
        let (seed, value) = (text(&case[0]), text(&case[1]));
        let version = u8::try_from(case[2].as_u64().expect("a version")).expect("a small version");
        let got = assign::hash(seed, value, version);
        let want = case[3].as_f64();
        let same = match (got, want) {
            (Some(g), Some(w)) => close(g, w),
            (None, None) => true,
            _ => false,
        };
        assert!(
            same,
            "hash({seed:?}, {value:?}, {version}) = {got:?}, the SDK says {want:?}"
        );
    }
}

#[test]
fn bucket_ranges_match_the_sdk() {
    for case in section("getBucketRange") {
        let args = &case[0];
        let variations = u32::try_from(args[0].as_u64().expect("a count")).expect("a small count");
        let weights: Option<Vec<f64>> = args[2].as_array().map(|w| w.iter().map(number).collect());
        let got = assign::bucket_ranges(variations, number(&args[1]), weights.as_deref());
        let want = ranges_of(&case[1]);
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| close(g.start, w.start) && close(g.end, w.end));
        assert!(
            same,
            "bucket_ranges({args}) = {got:?}, the SDK says {want:?}"
        );
    }
}

#[test]
fn choose_variation_matches_the_sdk() {
    for case in section("chooseVariation") {
        let got = assign::choose_variation(number(&case[0]), &ranges_of(&case[1]));
        let want = case[2].as_i64().expect("an index");
        let got_index = got.map_or(-1, i64::from);
        assert_eq!(
            got_index, want,
            "choose_variation({}, {})",
            case[0], case[1]
        );
    }
}

#[test]
fn in_namespace_matches_the_sdk() {
    for case in section("inNamespace") {
        let got = assign::in_namespace(text(&case[0]), &namespace_of(&case[1]));
        assert_eq!(
            Some(got),
            case[2].as_bool(),
            "in_namespace({}, {})",
            case[0],
            case[1]
        );
    }
}

#[test]
fn equal_weights_match_the_sdk() {
    for case in section("getEqualWeights") {
        // The SDK accepts negative counts and returns no weights; counts here are unsigned.
        let count =
            u32::try_from(case[0].as_i64().expect("a count").max(0)).expect("a small count");
        let want: Vec<f64> = case[1]
            .as_array()
            .expect("weights")
            .iter()
            .map(number)
            .collect();
        assert_eq!(assign::equal_weights(count), want, "equal_weights({count})");
    }
}

fn experiment_of(definition: &Value) -> assign::Experiment {
    let variations =
        u32::try_from(definition["variations"].as_u64().expect("a count")).expect("a small count");
    let mut experiment = assign::Experiment::new(text(&definition["key"]), variations);
    experiment.weights = definition["weights"]
        .as_array()
        .map(|w| w.iter().map(number).collect());
    experiment.coverage = definition["coverage"]
        .as_f64()
        .unwrap_or(experiment.coverage);
    experiment.seed = definition["seed"].as_str().map(str::to_owned);
    if let Some(version) = definition["hashVersion"].as_u64() {
        experiment.hash_version = u8::try_from(version).expect("a small version");
    }
    if definition["namespace"].is_array() {
        experiment.namespace = Some(namespace_of(&definition["namespace"]));
    }
    experiment
}

#[test]
fn assignments_match_the_sdk_end_to_end() {
    let cases = section("run");
    assert!(
        cases.iter().any(|c| c["in_experiment"] == true)
            && cases.iter().any(|c| c["in_experiment"] == false)
    );
    for case in &cases {
        let experiment = experiment_of(&case["experiment"]);
        let user = text(&case["user"]);
        let got = assign::assign(&experiment, user);
        let want_variation = case["variation"]
            .as_u64()
            .map(|v| u32::try_from(v).expect("a small index"));
        let want_hash = case["hash"].as_f64();
        let same_hash = match (got.hash, want_hash) {
            (Some(g), Some(w)) => close(g, w),
            (None, None) => true,
            _ => false,
        };
        assert!(
            got.in_experiment == case["in_experiment"]
                && got.variation == want_variation
                && same_hash,
            "assign({}, {user:?}) = {got:?}, the SDK says {case}",
            case["experiment"]
        );
    }
}
