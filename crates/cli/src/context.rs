//! What every command needs: where the data dir is, whether to print JSON, where output goes (the terminal, or a
//! buffer when the command runs inside a running node), the clock, and the network view of a running node.

use std::cell::RefCell;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

/// A spinner with the elapsed time on stderr for work that may take more than a second, drawn only when stderr is
/// a terminal and the output is not JSON; `finish_and_clear` it when done.
pub fn spinner(json: bool, message: String) -> indicatif::ProgressBar {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if json || !terminal {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner().with_message(message);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Writes a line of command output to the context's sink.
#[macro_export]
macro_rules! outln {
    ($context:expr, $($arg:tt)*) => {
        $context.write_line(&format!($($arg)*))
    };
}

/// Where command output goes.
#[derive(Debug)]
pub enum Sink {
    /// Straight to stdout, flushed when asked.
    Stdout,
    /// Collected, to be sent back to a CLI that handed the command to a running node.
    Buffer(RefCell<String>),
}

/// Global options resolved once, and the output sink.
#[derive(Debug)]
pub struct Context {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Print JSON.
    pub json: bool,
    /// Directory relative paths are resolved against.
    pub cwd: PathBuf,
    /// Output.
    pub sink: Sink,
    /// The network view, when the command runs inside a running node.
    pub network: Option<node::actor::NetworkStatus>,
}

impl Context {
    /// A context printing to stdout.
    pub fn terminal(data_dir: PathBuf, json: bool) -> Self {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        Self {
            data_dir,
            json,
            cwd,
            sink: Sink::Stdout,
            network: None,
        }
    }

    /// Writes one line of output.
    pub fn write_line(&self, line: &str) {
        match &self.sink {
            Sink::Stdout => say!("{line}"),
            Sink::Buffer(buffer) => {
                let mut buffer = buffer.borrow_mut();
                buffer.push_str(line);
                buffer.push('\n');
            }
        }
    }

    /// Prints rows as a table: a header, then each row, columns padded to their widest cell and two spaces apart
    /// (trailing spaces trimmed).
    pub fn table(&self, header: &[&str], rows: &[Vec<String>]) {
        let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let padded: Vec<String> = cells
                .zip(&widths)
                .map(|(cell, width)| {
                    let pad = width.saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            padded.join("  ").trim_end().to_owned()
        };
        self.write_line(&line(&mut header.iter().copied()));
        for row in rows {
            self.write_line(&line(&mut row.iter().map(String::as_str)));
        }
    }

    /// Flushes stdout (progress that must be visible before the command ends).
    pub fn flush(&self) {
        if let Sink::Stdout = self.sink {
            let _ = std::io::stdout().flush();
        }
    }

    /// Resolves a path given by the user against their working directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.cwd.join(path)
        }
    }

    /// Prints `value` as JSON with sorted keys (JSON mode) or runs `text` to print it for humans.
    pub fn print<T: Serialize>(&self, value: &T, text: impl FnOnce(&T)) -> anyhow::Result<()> {
        if self.json {
            self.print_json(value)?;
        } else {
            text(value);
        }
        Ok(())
    }

    /// A refusal: `value` (a JSON object with an `error` and a `reason`) as JSON, or `error: ...` for people, and
    /// the status that says the command was refused.
    pub fn refuse(&self, value: &serde_json::Value) -> anyhow::Result<u8> {
        self.print(value, |v| {
            self.write_line(&format!(
                "error: {}",
                v["error"].as_str().unwrap_or_default()
            ));
        })?;
        Ok(crate::exit::FAILURE)
    }

    /// Prints `value` as one JSON document with sorted keys.
    pub fn print_json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        let value = serde_json::to_value(value).context("serializing output")?;
        self.write_line(&serde_json::to_string_pretty(&value).context("serializing output")?);
        Ok(())
    }

    /// Prints the outcome of a write that created a record with `id` (`id` in the JSON, and in the text, so that
    /// the next command can name it).
    pub fn print_created(
        &self,
        outcome: &node::WriteOutcome,
        what: &str,
        id: &str,
    ) -> anyhow::Result<u8> {
        let mut value = serde_json::to_value(outcome).context("serializing output")?;
        value["id"] = id.into();
        self.print(&value, |_| {
            self.write_line(&format!("{what}: id {id}, change {}", outcome.change))
        })?;
        Ok(crate::exit::OK)
    }

    /// Prints the outcome of a write.
    pub fn print_write(&self, outcome: &node::WriteOutcome, what: &str) -> anyhow::Result<u8> {
        self.print(outcome, |o| {
            self.write_line(&format!("{what}: change {}", o.change))
        })?;
        Ok(crate::exit::OK)
    }
}

/// Prints `value` to stdout as one JSON document with sorted keys.
pub fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let value = serde_json::to_value(value).context("serializing output")?;
    say!(
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
