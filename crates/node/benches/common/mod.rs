//! What the event benchmarks share: the clock and a founded node with the generator's schemas approved.

use analysis::generate::SCHEMAS;
use model::EventSchema;
use node::Node;
use registry::Op;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Founds a federation on `node` and approves the schemas of the events `analysis::generate` writes.
pub fn approve_schemas(node: &mut Node) {
    node.create_federation("bench", now_ms())
        .expect("a federation");
    for (event, properties) in SCHEMAS {
        let schema = EventSchema {
            proposed_by: "bench".into(),
            ..EventSchema::approved(event, properties).expect("valid")
        };
        node.write(&Op::ApproveSchema(schema), now_ms())
            .expect("the founder approves");
    }
}
