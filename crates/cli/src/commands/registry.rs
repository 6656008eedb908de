//! `registry export|import|show|heads`: offline bundles and the typed registry.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use node::Node;

use crate::context::Context;
use crate::exit::{self, input_error};

/// `registry` subcommands.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Write a bundle of signed changes.
    Export {
        /// Bundle file to write.
        #[arg(long)]
        out: PathBuf,
        /// Only changes not covered by these heads (the other replica's `registry heads`); comma separated or repeated.
        #[arg(long)]
        since: Vec<String>,
    },
    /// Verify and apply a bundle; exit 0 when all were accepted, 3 when some were rejected, 2 when unreadable.
    Import {
        /// Bundle file.
        file: PathBuf,
    },
    /// The whole registry as the typed model sees it.
    Show,
    /// Heads of every registry document, sorted.
    Heads,
}

/// Runs a `registry` subcommand.
pub fn run(context: &Context, node: &mut Node, command: RegistryCommand) -> anyhow::Result<u8> {
    match command {
        RegistryCommand::Export { out, since } => {
            let since = if since.is_empty() {
                None
            } else {
                Some(
                    node::Node::parse_heads(&since)
                        .map_err(|e| input_error(format!("--since: {e}")))?,
                )
            };
            let bytes = node.export(since.as_deref())?;
            let out = context.resolve(&out);
            write_durably(&out, &bytes)?;
            let count = registry::bundle::read(&bytes)
                .map(|b| b.entries.len())
                .unwrap_or_default();
            let value = serde_json::json!({ "out": out.display().to_string(), "changes": count, "bytes": bytes.len() });
            context.print(&value, |_| {
                outln!(
                    context,
                    "exported {count} changes ({} bytes) to {}",
                    bytes.len(),
                    out.display()
                )
            })?;
            Ok(exit::OK)
        }
        RegistryCommand::Import { file } => import(context, node, &context.resolve(&file)),
        RegistryCommand::Show => {
            context.print_json(&node.view())?;
            Ok(exit::OK)
        }
        RegistryCommand::Heads => {
            let heads = node.heads();
            context.print(&serde_json::json!({ "heads": heads }), |_| {
                for head in &heads {
                    outln!(context, "{head}");
                }
            })?;
            Ok(exit::OK)
        }
    }
}

fn import(context: &Context, node: &mut Node, file: &PathBuf) -> anyhow::Result<u8> {
    let bytes = std::fs::read(file)
        .map_err(|e| input_error(format!("{}: cannot read: {e}", file.display())))?;
    let json = context.json;
    let path = file.display().to_string();
    let progress = if matches!(context.sink, crate::context::Sink::Stdout) {
        crate::context::spinner(json, format!("importing {path}"))
    } else {
        indicatif::ProgressBar::hidden()
    };
    let result = node.import(&path, &bytes, |accepted, rejected| {
        progress.inc(accepted.len() as u64);
        if json {
            return;
        }
        for hash in accepted {
            outln!(context, "accepted {hash}");
        }
        for r in rejected {
            outln!(context, "rejected {} {}: {}", r.change, r.reason, r.detail);
        }
        context.flush();
    });
    progress.finish_and_clear();
    let report = match result {
        Ok(report) => report,
        Err(error @ node::Error::Bundle { .. }) => return Err(input_error(error.to_string())),
        Err(error) => return Err(error.into()),
    };
    if json {
        context.print_json(&report)?;
    } else {
        if let Some(federation) = &report.adopted_federation {
            outln!(context, "adopted federation {federation}");
        }
        outln!(
            context,
            "{} accepted, {} rejected, {} duplicates, {} pending",
            report.accepted,
            report.rejected.len(),
            report.duplicates,
            report.pending
        );
    }
    Ok(if report.rejected.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL
    })
}

/// Writes a file via a temp file, fsync and rename, so a crash leaves the old file or the new one.
pub fn write_durably(path: &PathBuf, bytes: &[u8]) -> anyhow::Result<()> {
    let temp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", temp.display()))?;
    file.sync_all()
        .with_context(|| format!("syncing {}", temp.display()))?;
    std::fs::rename(&temp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
