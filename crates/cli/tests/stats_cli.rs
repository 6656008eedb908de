//! `growthmesh stats ...` end to end: JSON shape, agreement with gbstats 0.8.0, and exit statuses.

use serde_json::Value;
use std::process::{Command, Output};

/// Runs the binary from an empty directory with no data dir, as a stats-only user would.
fn growthmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_growthmesh"))
        .args(args)
        .current_dir(std::env::temp_dir())
        .env(
            "GROWTHMESH_DATA_DIR",
            std::env::temp_dir().join("growthmesh-stats-cli-none"),
        )
        .output()
        .expect("the binary runs")
}

fn json_of(args: &[&str]) -> Value {
    let output = growthmesh(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[track_caller]
fn assert_close(actual: &Value, expected: f64) {
    let actual = actual.as_f64().expect("a number");
    assert!(
        (actual - expected).abs() <= 1e-9 * expected.abs().max(1e-4),
        "got {actual}, want {expected}"
    );
}

#[test]
fn frequentist_compare_matches_gbstats() {
    let r = json_of(&[
        "stats",
        "compare",
        "--control",
        "1000,10000,109000",
        "--treatment",
        "1000,10500,120000",
        "--json",
    ]);
    // gbstats 0.8.0 TwoSidedTTest on the same statistics.
    assert_close(&r["expected"], 0.05);
    assert_close(&r["ci"][0], 0.02247934839050383);
    assert_close(&r["ci"][1], 0.07752065160949617);
    assert_close(&r["uplift"]["stddev"], 0.01403288715560422);
    assert_close(&r["p_value"], 0.0003751662228934638);
    assert!(r.get("error").is_none());
}

/// CUPED and ratio inputs, in the shape a stored result carries them, give gbstats 0.8.0's numbers (cases from
/// `crates/stats/fixtures/reference.json`).
#[test]
fn cuped_and_ratio_compares_match_gbstats() {
    // RegressionAdjustedStatistic in both arms, two-sided t-test, relative.
    let r = json_of(&[
        "stats",
        "compare",
        "--control",
        "30740,1088489.3214861287,43840956.12212531",
        "--control-pre",
        "1088489.3214861287,41768389.21270708,38521346.50135393",
        "--treatment",
        "116,3861.3092464764622,148352.9025454143",
        "--treatment-pre",
        "4107.506873532561,195928.2666563395,136562.19842277587",
        "--json",
    ]);
    assert_close(&r["expected"], -0.0599384577156806);
    assert_close(&r["ci"][0], -0.12823436141404115);
    assert_close(&r["ci"][1], 0.008357445982679942);
    assert_close(&r["uplift"]["stddev"], 0.03448156951532934);
    assert_close(&r["p_value"], 0.08481879835906181);
    // RatioStatistic in both arms, absolute.
    let r = json_of(&[
        "stats",
        "compare",
        "--absolute",
        "--control",
        "9568,171417.446702292,3862575.7416301877",
        "--control-denominator",
        "43146.36173808697,277137.1298349852,914443.9301254054",
        "--treatment",
        "181545,3249654.58441383,74145188.92886527",
        "--treatment-denominator",
        "509416.37485176895,1818816.8625407815,8455152.154092602",
        "--json",
    ]);
    assert_close(&r["expected"], 2.406242477042717);
    assert_close(&r["ci"][0], 2.355247828285901);
    assert_close(&r["ci"][1], 2.457237125799533);
    assert_close(&r["uplift"]["stddev"], 0.026016192041299135);
    // A covariate for one arm only is refused, naming the flag it needs.
    let output = growthmesh(&[
        "stats",
        "compare",
        "--control",
        "10,5,30",
        "--control-pre",
        "5,30,20",
        "--treatment",
        "10,6,40",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--treatment-pre"),
        "{output:?}"
    );
}

#[test]
fn bayesian_compare_matches_gbstats() {
    let r = json_of(&[
        "stats",
        "compare",
        "--control",
        "1000,100",
        "--treatment",
        "1000,120",
        "--binomial",
        "--method",
        "bayesian",
        "--json",
    ]);
    assert_close(&r["expected"], 0.1999999999999999);
    assert_close(&r["ci"][0], -0.1005846161444825);
    assert_close(&r["ci"][1], 0.5005846161444822);
    assert_close(&r["chance_to_win"], 0.9039004818067533);
    assert_close(&r["risk"][0], 0.20692160791267783);
    assert_close(&r["risk"][1], 0.006921607912677944);
}

#[test]
fn sequential_absolute_compare_matches_gbstats() {
    let r = json_of(&[
        "stats",
        "compare",
        "--control",
        "1000,100",
        "--treatment",
        "1000,120",
        "--binomial",
        "--absolute",
        "--method",
        "sequential",
        "--json",
    ]);
    assert_close(&r["expected"], 0.01999999999999999);
    assert_close(&r["ci"][0], -0.023688259076519294);
    assert_close(&r["ci"][1], 0.06368825907651927);
    assert_close(&r["p_value"], 0.9388856039651486);
}

#[test]
fn declined_tests_exit_zero_with_gbstats_defaults() {
    let r = json_of(&[
        "stats",
        "compare",
        "--control",
        "1,5,25",
        "--treatment",
        "10,50,300",
        "--json",
    ]);
    assert_eq!(r["error"], "ZERO_NEGATIVE_VARIANCE");
    assert_eq!(r["ci"], serde_json::json!([0.0, 0.0]));
    assert_eq!(r["p_value"], 1.0);
    let r = json_of(&[
        "stats",
        "compare",
        "--control",
        "100,0,50",
        "--treatment",
        "10,50,300",
        "--absolute",
        "--json",
    ]);
    assert_eq!(r["error"], "ZERO_NEGATIVE_BASELINE_VARIATION");
    let r = json_of(&[
        "stats",
        "compare",
        "--control",
        "100,0",
        "--treatment",
        "100,5",
        "--binomial",
        "--method",
        "bayesian",
        "--json",
    ]);
    assert_eq!(r["error"], "ZERO_NEGATIVE_BASELINE_VARIATION");
    assert_eq!(r["chance_to_win"], 0.5);
    assert_eq!(r["risk"], serde_json::json!([0.0, 0.0]));
}

#[test]
fn impossible_arms_exit_two_naming_the_flag() {
    let cases: [(&[&str], &str); 6] = [
        (
            &["--control", "0,0,0", "--treatment", "10,50,300"],
            "--control",
        ),
        (
            &["--control", "10,50,300", "--treatment", "10,50,200"],
            "--treatment",
        ),
        (
            &["--control", "10,50", "--treatment", "10,50,300"],
            "--control",
        ),
        (
            &["--control", "10,abc,300", "--treatment", "10,50,300"],
            "--control",
        ),
        (
            &["--control", "10,5", "--treatment", "10,11", "--binomial"],
            "--treatment",
        ),
        (
            &[
                "--control",
                "10,5",
                "--treatment",
                "10,1",
                "--binomial",
                "--alpha",
                "1.5",
            ],
            "--alpha",
        ),
    ];
    for (args, flag) in cases {
        let output = growthmesh(&[&["stats", "compare"], args, &["--json"]].concat());
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn srm_meta_power_and_corrections_print_their_fields() {
    let r = json_of(&["stats", "srm", "--counts", "1000,1100", "--json"]);
    assert_close(&r["p_value"], 0.029096331741252267);
    let r = json_of(&[
        "stats",
        "meta",
        "--effect",
        "0.1,0.1",
        "--effect=-0.2,0.1",
        "--effect",
        "0.3,0.2",
        "--json",
    ]);
    for key in ["effect", "se"] {
        assert!(r["fixed"][key].is_f64() && r["random"][key].is_f64());
    }
    assert!(r["random"]["tau2"].as_f64().expect("tau2") > 0.0);
    assert!((0.0..=1.0).contains(&r["i2"].as_f64().expect("i2")));
    assert!(r["q"].is_f64() && r["q_p_value"].is_f64());
    // statsmodels NormalIndPower with the same variance, rounded up (fixtures/generate.py).
    let r = json_of(&[
        "stats", "power", "--mean", "10", "--stddev", "3", "--mde", "0.05", "--json",
    ]);
    assert_eq!(r["users_per_variation"], 595);
    let r = json_of(&[
        "stats", "mde", "--mean", "10", "--stddev", "3", "--users", "10000", "--json",
    ]);
    assert_close(&r["mde"], 0.011957379378978646);
    let r = json_of(&[
        "stats",
        "correct",
        "--p-values",
        "0.01,0.04,0.03,0.2",
        "--method",
        "holm",
        "--json",
    ]);
    assert_eq!(r["adjusted"], serde_json::json!([0.04, 0.09, 0.09, 0.2]));
}
