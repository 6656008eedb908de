//! Every list prints a readable table: aligned columns, statuses as the commands take them, the fields users look
//! for. Each table is compared with a golden file under `tests/golden/` after keys and today's date are masked;
//! `UPDATE_GOLDEN=1 cargo test -p cli --test tables_cli` rewrites them after a deliberate change.

mod support;

use std::path::PathBuf;

use support::{Node, federation, path_str};

/// Masks what differs between runs: public keys (64 hex digits) and dates (`YYYY-MM-DD`).
fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if hex >= 64 {
            out.push_str("<KEY>");
            i += hex;
            continue;
        }
        let date = bytes.get(i..i + 10).is_some_and(|d| {
            d.iter().enumerate().all(|(j, b)| match j {
                4 | 7 => *b == b'-',
                _ => b.is_ascii_digit(),
            })
        });
        if date {
            out.push_str("<DATE>    ");
            i += 10;
            continue;
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

fn golden(name: &str, node: &Node, args: &[&str]) {
    let output = node.run(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actual = mask(&String::from_utf8_lossy(&output.stdout));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("writing the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{args:?} differs from {}", path.display());
}

#[test]
fn every_list_prints_an_aligned_table() {
    let (council, nodes) = federation(&[("EMEA pod", "pod", "emea")]);
    let pod = &nodes[0];
    pod.json(&[
        "schema",
        "propose",
        "--event",
        "Order Completed",
        "--property",
        "revenue:number:required",
        "--property",
        "email:string:pii",
        "--legal-basis",
        "contract",
        "--retention-days",
        "90",
    ]);
    pod.json(&[
        "metric",
        "propose",
        "--key",
        "conversion",
        "--type",
        "binomial",
        "--event",
        "Order Completed",
    ]);
    pod.json(&[
        "metric",
        "propose",
        "--key",
        "revenue",
        "--type",
        "mean",
        "--event",
        "Order Completed",
        "--property",
        "revenue",
    ]);
    pod.json(&[
        "experiment",
        "new",
        "--key",
        "short-checkout",
        "--hypothesis",
        "if checkout takes one page then more teams pay because fewer steps lose fewer buyers",
        "--primary-metric",
        "conversion",
        "--cost",
        "8000",
    ]);
    council.import_all(&pod.export("pod.gmb"));
    council.json(&["schema", "approve", "Order Completed"]);
    council.json(&["metric", "approve", "conversion"]);
    council.json(&[
        "budget",
        "allocate",
        "--pod",
        "emea",
        "--quarter",
        "2026Q4",
        "--amount",
        "20000",
    ]);
    council.json(&[
        "council",
        "threshold",
        "--quarter",
        "2026Q4",
        "--cost",
        "5000",
    ]);
    pod.import_all(&council.export("council.gmb"));
    let file = pod.file("bad.jsonl");
    std::fs::write(
        &file,
        "{\"userId\":\"u1\",\"event\":\"Signed Up\",\"timestamp\":\"2026-10-02T10:00:00Z\"}\n{oops\n",
    )
    .expect("temp file");
    pod.run(&["ingest", path_str(&file)]);

    golden("member-list", &council, &["member", "list"]);
    golden("budget-list", &council, &["budget", "list"]);
    golden("schema-list", &council, &["schema", "list"]);
    golden("metric-list", &council, &["metric", "list"]);
    golden("experiment-list", &council, &["experiment", "list"]);
    golden("kr-list", &council, &["okr", "kr", "list"]);
    golden("events-stats", pod, &["events", "stats"]);
}
