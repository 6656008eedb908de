//! The README's CLI tour runs as written: every `growthmesh` line of its first shell block, in order, in an empty
//! directory, with each `<PLACEHOLDER>` replaced by what an earlier command printed, exits as its comment says
//! (`# exit N`, else 0).

mod support;

use std::collections::BTreeMap;
use std::path::Path;

/// The tour: the first fenced `sh` block after the heading, continuation lines joined.
fn tour_lines(readme: &str) -> Vec<String> {
    let section = &readme[readme
        .find("## A tour of the CLI")
        .expect("the README has a tour")..];
    let start = section.find("```sh\n").expect("the tour has a shell block") + "```sh\n".len();
    let block = &section[start..start + section[start..].find("```").expect("the block ends")];
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let trimmed = line.trim();
        // A continuation line's trailing comment belongs to the command it ends.
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    lines.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    lines
}

/// Splits a command line into its words (double quotes group) and its comment.
fn split(line: &str) -> (Vec<String>, String) {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for (at, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted && word.is_empty() => return (words, line[at..].to_owned()),
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    (words, String::new())
}

/// The exit status a comment promises: the first `exit N`, else 0.
fn expected_status(comment: &str) -> i32 {
    comment
        .split("exit ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn run(dir: &Path, words: &[String]) -> std::process::Output {
    support::binary()
        .current_dir(dir)
        .args(&words[1..])
        .output()
        .expect("the binary runs")
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .expect("README.md");
    let lines = tour_lines(&readme);
    assert!(lines.len() > 30, "the tour has {} commands", lines.len());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    let mut ran = Vec::new();
    for line in lines {
        let (mut words, comment) = split(&line);
        if words.is_empty() {
            continue;
        }
        assert_eq!(
            words[0], "growthmesh",
            "the tour runs only growthmesh: {line}"
        );
        for word in &mut words {
            for (name, value) in &found {
                *word = word.replace(&format!("<{name}>"), value);
            }
            assert!(
                !(word.starts_with('<') && word.ends_with('>')),
                "{word} in `{line}` was never printed by an earlier command"
            );
        }
        let output = run(dir.path(), &words);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(
            output.status.code(),
            Some(expected_status(&comment)),
            "`{line}`\nstdout: {stdout}\nstderr: {stderr}\nafter: {ran:#?}"
        );
        // What later lines name.
        let joined = words.join(" ");
        if joined.contains(" init ") {
            let key = stdout
                .split(|c: char| !c.is_ascii_hexdigit())
                .find(|w| w.len() == 64)
                .unwrap_or_else(|| panic!("init printed no public key: {stdout}"));
            let data_dir = &words[2];
            found.insert(
                format!("{}_PUBLIC_KEY", data_dir.to_uppercase()),
                key.to_owned(),
            );
        }
        if joined.contains("okr objective add") {
            let id = stdout
                .split("id ")
                .nth(1)
                .and_then(|rest| rest.split([',', ' ', '\n']).next())
                .unwrap_or_else(|| panic!("objective add printed no id: {stdout}"));
            found.insert("OBJECTIVE_ID".into(), id.to_owned());
        }
        ran.push(line);
    }
    // The tour ends with the council holding the pod's concluded experiment and its signed result.
    let shown = support::binary()
        .current_dir(dir.path())
        .args([
            "--data-dir",
            "council",
            "experiment",
            "show",
            "short-checkout",
            "--json",
        ])
        .output()
        .expect("the binary runs");
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
    assert_eq!(shown["status"], "concluded", "{shown}");
    assert_eq!(shown["spend"]["amount"], 8000.0, "{shown}");
}
