//! `growthmesh assign` through the binary: output shapes, exit statuses, and agreement with the GrowthBook
//! JavaScript SDK on the reference fixture of the `assign` crate.

use std::process::{Command, Output};

use serde_json::{Value, json};

fn growthmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_growthmesh"))
        .args(args)
        // `assign` needs no data dir: point at one that does not exist and check it stays that way.
        .env("GROWTHMESH_DATA_DIR", missing_data_dir())
        .output()
        .expect("the binary runs")
}

fn missing_data_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("growthmesh-assign-cli-test-no-such-dir")
}

fn assign_json(args: &[&str]) -> Value {
    let mut argv = vec!["assign", "--json"];
    argv.extend_from_slice(args);
    let output = growthmesh(&argv);
    assert!(
        output.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON object")
}

fn bad_input(args: &[&str]) -> String {
    let mut argv = vec!["assign"];
    argv.extend_from_slice(args);
    let output = growthmesh(&argv);
    assert_eq!(output.status.code(), Some(2), "{argv:?} should exit 2");
    assert!(output.stdout.is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn json_has_exactly_the_three_fields() {
    let got = assign_json(&[
        "--experiment",
        "feature",
        "--user",
        "123",
        "--variations",
        "3",
    ]);
    // GrowthBook's published case "empty experiment rule - c".
    assert_eq!(
        got,
        json!({"in_experiment": true, "variation": 2, "hash": 0.863})
    );
}

#[test]
fn defaults_are_growthbook_defaults() {
    let explicit = assign_json(&[
        "--experiment",
        "checkout-button",
        "--user",
        "123",
        "--seed",
        "checkout-button",
        "--hash-version",
        "1",
        "--weights",
        "0.5,0.5",
        "--coverage",
        "1",
    ]);
    let implicit = assign_json(&["--experiment", "checkout-button", "--user", "123"]);
    assert_eq!(implicit, explicit);
    assert_eq!(
        implicit,
        json!({"in_experiment": true, "variation": 1, "hash": 0.878})
    );
}

#[test]
fn non_ascii_ids_land_where_a_browser_puts_them() {
    let cases = [
        (
            "josé",
            json!({"in_experiment": true, "variation": 1, "hash": 0.4485}),
        ),
        (
            "用户42",
            json!({"in_experiment": true, "variation": 0, "hash": 0.0942}),
        ),
        (
            "user-😀",
            json!({"in_experiment": true, "variation": 0, "hash": 0.1418}),
        ),
    ];
    for (user, want) in cases {
        let args = [
            "--experiment",
            "checkout-button",
            "--variations",
            "3",
            "--hash-version",
            "2",
            "--user",
            user,
        ];
        assert_eq!(assign_json(&args), want, "user {user}");
    }
}

#[test]
fn namespace_exclusion_happens_before_hashing() {
    let args = [
        "--experiment",
        "ns",
        "--hash-version",
        "2",
        "--namespace",
        "pricing,0.5,1",
    ];
    let outside = assign_json(&[&args[..], &["--user", "123"]].concat());
    assert_eq!(
        outside,
        json!({"in_experiment": false, "variation": null, "hash": null})
    );
    let inside = assign_json(&[&args[..], &["--user", "user-😀"]].concat());
    assert_eq!(
        inside,
        json!({"in_experiment": true, "variation": 1, "hash": 0.9485})
    );
}

#[test]
fn coverage_exclusion_still_reports_the_hash() {
    let got = assign_json(&[
        "--experiment",
        "pricing",
        "--user",
        "123",
        "--weights",
        "0.4,0.3,0.2,0.1",
        "--hash-version",
        "2",
        "--coverage",
        "0.6",
    ]);
    assert_eq!(
        got,
        json!({"in_experiment": false, "variation": null, "hash": 0.2808})
    );
}

#[test]
fn text_output_is_one_readable_line() {
    let output = growthmesh(&[
        "assign",
        "--experiment",
        "feature",
        "--user",
        "123",
        "--variations",
        "3",
    ]);
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(text.lines().count(), 1);
    assert!(
        text.contains("variation 2") && text.contains("0.863"),
        "{text}"
    );
    assert!(
        !missing_data_dir().exists(),
        "assign must not create a data dir"
    );
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    let base = ["--experiment", "e", "--user", "u"];
    for (extra, flag) in [
        (&["--weights", "0.3,0.3"][..], "--weights"),
        (&["--weights", "a,b"][..], "--weights"),
        (
            &["--weights", "0.5,0.5", "--variations", "3"][..],
            "--weights",
        ),
        (&["--coverage", "1.5"][..], "--coverage"),
        (&["--coverage", "-0.5"][..], "--coverage"),
        (&["--variations", "1"][..], "--variations"),
        (&["--namespace", "pricing,0.5"][..], "--namespace"),
        (&["--hash-version", "3"][..], "--hash-version"),
    ] {
        let stderr = bad_input(&[&base[..], extra].concat());
        assert!(stderr.contains(flag), "{extra:?}: {stderr}");
    }
}

/// The flags describing one fixture experiment definition.
fn experiment_flags(definition: &Value) -> Vec<String> {
    let mut flags = vec![
        "--experiment".to_owned(),
        definition["key"].as_str().expect("a key").to_owned(),
    ];
    let variations = definition["variations"].as_u64().expect("a count");
    flags.extend(["--variations".to_owned(), variations.to_string()]);
    if let Some(weights) = definition["weights"].as_array() {
        let list: Vec<String> = weights.iter().map(Value::to_string).collect();
        flags.extend(["--weights".to_owned(), list.join(",")]);
    }
    if let Some(coverage) = definition["coverage"].as_f64() {
        flags.extend(["--coverage".to_owned(), coverage.to_string()]);
    }
    if let Some(seed) = definition["seed"].as_str() {
        flags.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    if let Some(version) = definition["hashVersion"].as_u64() {
        flags.extend(["--hash-version".to_owned(), version.to_string()]);
    }
    if let Some(namespace) = definition["namespace"].as_array() {
        let parts: Vec<String> = namespace
            .iter()
            .map(|part| {
                part.as_str()
                    .map_or_else(|| part.to_string(), str::to_owned)
            })
            .collect();
        flags.extend(["--namespace".to_owned(), parts.join(",")]);
    }
    flags
}

#[test]
fn agrees_with_the_javascript_sdk_on_every_valid_reference_case() {
    let fixture: Value = serde_json::from_str(include_str!(
        "../../assign/fixtures/growthbook-reference.json"
    ))
    .expect("the fixture is valid JSON");
    // Definitions the SDK repairs are refused by the CLI (tested above), so they are not compared here.
    let refused = ["bad-weights", "bad-version", "one", "clamped"];
    let mut checked = 0;
    for case in fixture["run"].as_array().expect("a run section") {
        let user = case["user"].as_str().expect("a user");
        let key = case["experiment"]["key"].as_str().expect("a key");
        // A NUL cannot travel in argv.
        if user.contains('\0') || refused.contains(&key) {
            continue;
        }
        let flags = experiment_flags(&case["experiment"]);
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        args.extend(["--user", user]);
        let want = json!({"in_experiment": case["in_experiment"], "variation": case["variation"], "hash": case["hash"]});
        assert_eq!(assign_json(&args), want, "{args:?}");
        checked += 1;
    }
    assert!(checked > 150, "only {checked} cases checked");
}
