//! Every shipped scenario runs in deterministic mode with its fixed seed and holds its invariants; a seed replays
//! byte for byte; a node that skips signature checks is caught by the hostile-peer scenario.

use std::path::PathBuf;

fn scenario(name: &str) -> (sim::Scenario, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../simulations")
        .join(format!("{name}.toml"));
    let scenario = sim::Scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    (scenario, path.display().to_string())
}

fn assert_holds(name: &str) {
    let (scenario, path) = scenario(name);
    let report = sim::run_deterministic(&scenario, &path, None, sim::InjectedBug::None);
    assert!(report.ok(), "{name} failed:\n{}", report.to_text());
    assert!(
        report.converged && report.convergence_ms.is_some(),
        "{}",
        report.to_text()
    );
    assert!(report.messages > 0 && report.bytes > 0);
}

#[test]
fn regional_split_holds() {
    assert_holds("regional-split");
}

/// The approval given in EMEA during the split does not let the APAC pod start until the heal brings it; given
/// before the split, it does (and the schedule's expectations then fail, as they must).
#[test]
fn an_approval_from_across_the_partition_binds_only_once_it_arrives() {
    let (scenario, path) = scenario("regional-split");
    let report = sim::run_deterministic(&scenario, &path, None, sim::InjectedBug::None);
    let scheduled = report
        .invariants
        .iter()
        .find(|i| i.name == "scheduled starts go as expected")
        .expect("regional-split schedules starts");
    assert!(scheduled.ok, "{}", scheduled.detail);
    assert!(
        scheduled.detail.contains("needs_approval"),
        "refused for the missing approval: {}",
        scheduled.detail
    );
    let text = std::fs::read_to_string(&path).expect("readable");
    let early = text.replace(
        "at_ms = 30000\naction = \"decide\"",
        "at_ms = 15000\naction = \"decide\"",
    );
    assert_ne!(early, text, "the decision is scheduled at 30 s");
    let scenario = sim::Scenario::parse(&early, "early.toml").expect("valid");
    let report = sim::run_deterministic(&scenario, "early.toml", None, sim::InjectedBug::None);
    let scheduled = report
        .invariants
        .iter()
        .find(|i| i.name == "scheduled starts go as expected")
        .expect("scheduled");
    assert!(!scheduled.ok, "{}", scheduled.detail);
    assert!(
        scheduled.detail.contains("started (expected refused)"),
        "{}",
        scheduled.detail
    );
    assert!(!report.ok());
}

#[test]
fn flapping_links_hold() {
    assert_holds("flapping-links");
}

#[test]
fn crash_restart_holds() {
    assert_holds("crash-restart");
}

#[test]
fn revocation_during_partition_holds_and_rejects_post_revocation_writes() {
    let (scenario, path) = scenario("revocation-during-partition");
    let report = sim::run_deterministic(&scenario, &path, None, sim::InjectedBug::None);
    assert!(report.ok(), "{}", report.to_text());
    assert!(
        report.rejected.get("revoked").copied().unwrap_or(0) > 0,
        "{}",
        report.to_text()
    );
}

#[test]
fn a_hostile_member_cannot_split_honest_nodes() {
    let (scenario, path) = scenario("hostile-member");
    let report = sim::run_deterministic(&scenario, &path, None, sim::InjectedBug::None);
    assert!(report.ok(), "{}", report.to_text());
    for reason in ["equivocation", "unknown_author", "revoked"] {
        assert!(
            report.rejected.get(reason).copied().unwrap_or(0) > 0,
            "no {reason} rejection:\n{}",
            report.to_text()
        );
    }
}

#[test]
fn a_hostile_member_cannot_split_honest_nodes_whatever_the_seed() {
    let (scenario, path) = scenario("hostile-member");
    for seed in [1, 2, 3] {
        let report = sim::run_deterministic(&scenario, &path, Some(seed), sim::InjectedBug::None);
        assert!(report.ok(), "seed {seed}:\n{}", report.to_text());
    }
}

#[test]
fn hostile_peer_holds_and_its_attacks_are_refused() {
    let (scenario, path) = scenario("hostile-peer");
    let report = sim::run_deterministic(&scenario, &path, None, sim::InjectedBug::None);
    assert!(report.ok(), "{}", report.to_text());
    for reason in [
        "bad_signature",
        "not_allowed",
        "malformed_message",
        "oversized_message",
    ] {
        assert!(
            report.rejected.get(reason).copied().unwrap_or(0) > 0,
            "no {reason}:\n{}",
            report.to_text()
        );
    }
}

#[test]
fn scale_1000_holds() {
    assert_holds("scale-1000");
}

#[test]
fn a_node_skipping_signature_checks_is_caught() {
    let (scenario, path) = scenario("hostile-peer");
    let report = sim::run_deterministic(
        &scenario,
        &path,
        None,
        sim::InjectedBug::SkipSignatureChecks,
    );
    let invariant = report
        .invariants
        .iter()
        .find(|i| i.name == "no forged or unauthorized change is applied")
        .expect("invariant reported");
    assert!(
        !invariant.ok,
        "the injected bug went unnoticed:\n{}",
        report.to_text()
    );
    assert!(!report.ok());
    assert!(report.replay.contains("--seed 5"), "{}", report.replay);
}

#[test]
fn same_seed_same_report() {
    let (scenario, path) = scenario("crash-restart");
    let first = serde_json::to_string(&sim::run_deterministic(
        &scenario,
        &path,
        Some(99),
        sim::InjectedBug::None,
    ))
    .expect("json");
    let second = serde_json::to_string(&sim::run_deterministic(
        &scenario,
        &path,
        Some(99),
        sim::InjectedBug::None,
    ))
    .expect("json");
    assert_eq!(first, second);
    let other = serde_json::to_string(&sim::run_deterministic(
        &scenario,
        &path,
        Some(100),
        sim::InjectedBug::None,
    ))
    .expect("json");
    assert_ne!(first, other, "a different seed should give a different run");
}

#[test]
fn invalid_scenarios_name_the_problem() {
    let error = sim::Scenario::parse("name = \"x\"\nduration_ms = \"soon\"\n", "bad.toml")
        .expect_err("wrong type");
    assert!(error.to_string().contains("line 2"), "{error}");
    let text = "name = \"x\"\nduration_ms = 1000\nconverge_within_ms = 100\n[[region]]\nname = \"emea\"\npods = 1\n";
    let error = sim::Scenario::parse(text, "bad.toml").expect_err("no council");
    assert!(error.to_string().contains("council"), "{error}");
    let text = "name = \"x\"\nduration_ms = 1000\nconverge_within_ms = 100\n[[region]]\nname = \"emea\"\ncouncil = 1\n[[schedule]]\nat_ms = 10\naction = \"crash\"\nnode = \"nobody\"\n";
    let error = sim::Scenario::parse(text, "bad.toml").expect_err("unknown node");
    assert!(error.to_string().contains("nobody"), "{error}");
    let base = "name = \"x\"\nduration_ms = 1000\nconverge_within_ms = 100\n[[region]]\nname = \"emea\"\ncouncil = 1\npods = 1\n[[schedule]]\nat_ms = 10\n";
    let text = format!(
        "{base}action = \"register\"\nnode = \"emea-pod-1\"\nexperiment = \"big-bet\"\ncost = 1.0\n"
    );
    let error = sim::Scenario::parse(&text, "bad.toml").expect_err("unscripted key");
    assert!(error.to_string().contains("scripted-"), "{error}");
    let text =
        format!("{base}action = \"decide\"\nnode = \"emea-pod-1\"\nexperiment = \"scripted-x\"\n");
    let error = sim::Scenario::parse(&text, "bad.toml").expect_err("a pod decides");
    assert!(
        error.to_string().contains("needs a council node"),
        "{error}"
    );
    let text = format!(
        "{base}action = \"start\"\nnode = \"emea-pod-1\"\nexperiment = \"scripted-x\"\nexpect = \"maybe\"\n"
    );
    let error = sim::Scenario::parse(&text, "bad.toml").expect_err("unknown expectation");
    assert!(error.to_string().contains("maybe"), "{error}");
}

/// The acceptance bound: every shipped scenario converges, within three announce intervals of the scenario plus one
/// second after its last write or disruption, in deterministic mode with its own seed.
#[test]
fn every_shipped_scenario_converges_within_three_intervals_and_a_second() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../simulations");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("simulations/ exists")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            (path.extension()? == "toml").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    assert!(names.len() >= 10, "shipped scenarios: {names:?}");
    for name in names {
        let (scenario, path) = scenario(&name);
        let bound = 3 * scenario.network.announce_interval_ms + 1_000;
        let report = sim::run_deterministic(&scenario, &path, None, sim::InjectedBug::None);
        assert!(report.ok(), "{name} failed:\n{}", report.to_text());
        let took = report
            .convergence_ms
            .unwrap_or_else(|| panic!("{name} never converged:\n{}", report.to_text()));
        assert!(
            report.converged && took <= bound,
            "{name}: converged {took} ms after the last write or disruption, bound {bound} ms"
        );
    }
}
