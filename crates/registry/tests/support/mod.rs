//! Shared fixtures of the registry's integration tests: deterministic keys, records with fixed fields, and the
//! trip through a bundle that every delivery in these tests takes.

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use identity::Keypair;
use model::{
    EventSchema, Experiment, KeyResult, Learning, Member, Objective, PropertyDef, Role,
    StandardStatus, Variant,
};
use registry::bundle::{self, Entry};
use registry::{Envelope, FederationId};

/// The key of test participant `index`: the same on every run.
pub fn keypair(index: u8) -> Keypair {
    let mut seed = [0x5a; 32];
    seed[0] = index;
    Keypair::from_seed(seed)
}

/// A member record for `key`, admitted by `admitted_by`.
pub fn member(key: &Keypair, role: Role, scope: Option<&str>, admitted_by: &Keypair) -> Member {
    Member {
        public_key: key.public().to_hex(),
        name: format!("member {}", &key.public().to_hex()[..8]),
        role,
        scope: scope.map(str::to_owned),
        admitted_by: admitted_by.public().to_hex(),
        admitted_at_ms: 1_000,
        revoked: false,
    }
}

/// The founding council member's record.
pub fn founder(key: &Keypair) -> Member {
    member(key, Role::Council, None, key)
}

/// A company objective.
pub fn objective(id: &str) -> Objective {
    Objective {
        id: id.to_owned(),
        title: format!("objective {id}"),
        quarter: "2026Q4".to_owned(),
        north_star_metric: Some("activation".to_owned()),
        target: Some(0.4),
        created_by: String::new(),
    }
}

/// A key result towards `objective`.
pub fn key_result(id: &str, objective: &str) -> KeyResult {
    KeyResult {
        id: id.to_owned(),
        objective: objective.to_owned(),
        pod: String::new(),
        metric: "signup_rate".to_owned(),
        baseline: 0.1,
        target: 0.3,
        current: None,
        updated_at_ms: 0,
        window_days: model::okr::DEFAULT_KEY_RESULT_WINDOW_DAYS,
    }
}

/// A learning.
pub fn learning(id: &str, body: &str) -> Learning {
    Learning {
        id: id.to_owned(),
        title: format!("learning {id}"),
        body: body.to_owned(),
        outcome: None,
        tags: vec!["signup".to_owned()],
        experiment: None,
        source: String::new(),
        author: String::new(),
        created_at_ms: 0,
    }
}

/// An event schema proposal.
pub fn schema(event: &str) -> EventSchema {
    EventSchema {
        event: event.to_owned(),
        version: 1,
        properties: vec![
            "plan:string:required"
                .parse::<PropertyDef>()
                .expect("valid property"),
            "email:string:pii"
                .parse::<PropertyDef>()
                .expect("valid property"),
        ],
        legal_basis: "consent".to_owned(),
        retention_days: 30,
        status: StandardStatus::Proposed,
        proposed_by: String::new(),
        approved_by: None,
    }
}

/// A draft experiment.
pub fn experiment(key: &str) -> Experiment {
    Experiment {
        key: key.to_owned(),
        pod: String::new(),
        hypothesis: model::Hypothesis::parse("if shorter then better because fewer steps"),
        funnel_stage: model::FunnelStage::Activation,
        audience: model::Audience::default(),
        variants: vec![
            Variant {
                key: "control".to_owned(),
                weight: 0.5,
            },
            Variant {
                key: "treatment".to_owned(),
                weight: 0.5,
            },
        ],
        primary_metric: Some("signup_rate".to_owned()),
        guardrail_metrics: Vec::new(),
        start_date: Some("2026-10-01".to_owned()),
        end_date: Some("2026-10-31".to_owned()),
        cost: 1_000.0,
        status: model::ExperimentStatus::Draft,
        namespace: None,
        started_at_ms: None,
        hash_version: 1,
        coverage: 1.0,
        created_by: String::new(),
        created_at_ms: 0,
    }
}

/// Encodes `envelopes` into a bundle and reads them back, as an offline delivery does.
pub fn through_bundle(federation: &FederationId, envelopes: &[Envelope]) -> Vec<Envelope> {
    let encoded: Vec<Vec<u8>> = envelopes.iter().map(Envelope::to_bytes).collect();
    let read = bundle::read(&bundle::write(
        federation,
        encoded.iter().map(Vec::as_slice),
    ))
    .expect("a written bundle reads");
    assert_eq!(read.federation, *federation);
    read.entries
        .into_iter()
        .map(|entry| match entry {
            Entry::Envelope(envelope) => *envelope,
            Entry::Malformed { index, problem, .. } => {
                panic!("entry {index} of a written bundle does not decode: {problem}")
            }
        })
        .collect()
}
