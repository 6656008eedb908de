//! What every command needs: where the data dir is, whether to print JSON, the clock, and how to print.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

/// Global options resolved once.
#[derive(Clone, Debug)]
pub struct Context {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Print JSON.
    pub json: bool,
}

impl Context {
    /// Opens the node of this data dir.
    pub fn open(&self) -> anyhow::Result<node::Node> {
        node::Node::open(&self.data_dir)
            .with_context(|| format!("opening data dir {}", self.data_dir.display()))
    }

    /// Prints `value` as JSON with sorted keys (JSON mode) or runs `text` to print it for humans.
    pub fn print<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
        if self.json {
            print_json(value)?;
        } else {
            text(value);
        }
        Ok(())
    }

    /// Prints the outcome of a write.
    pub fn print_write(&self, outcome: &node::WriteOutcome, what: &str) -> anyhow::Result<u8> {
        self.print(outcome, |o| println!("{what}: change {}", o.change))?;
        Ok(crate::exit::OK)
    }
}

/// Prints `value` as one JSON document with sorted keys.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let value = serde_json::to_value(value).context("serializing output")?;
    println!(
        "{}",
        serde_json::to_string_pretty(&value).context("serializing output")?
    );
    Ok(())
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// Maps a library error to a CLI error, turning invalid input into exit status 2.
pub fn input<T, E: std::fmt::Display>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| crate::exit::input_error(e.to_string()))
}

/// Turns a display name into a pod or partner name: lowercase, spaces to dashes.
pub fn slug(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("-")
}
