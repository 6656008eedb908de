//! `source`: the app sources of this node, each with a write key (events in) and a client key (features out) that
//! an app holds instead of the admin token.

use clap::Subcommand;
use node::Node;
use node::sources::SourceError;

use crate::context::{Context, now_ms};
use crate::exit::{self, input_error};

/// `source` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum SourceCommand {
    /// Add an app source: prints its write key (for Segment SDKs) and client key (for GrowthBook SDKs).
    Add {
        /// A name for the app (lowercase letters, digits, `-`, `_`, `.`).
        name: String,
    },
    /// The app sources of this node (keys shortened; `--json` prints them whole).
    List,
    /// Revoke an app source: its keys open nothing from now on.
    Revoke {
        /// The source's name.
        name: String,
    },
}

fn source_error(error: SourceError) -> anyhow::Error {
    match error {
        SourceError::Store(error) => anyhow::Error::new(*error),
        refused => input_error(refused.to_string()),
    }
}

/// Runs a `source` subcommand.
pub fn run(context: &Context, node: &mut Node, command: SourceCommand) -> anyhow::Result<u8> {
    match command {
        SourceCommand::Add { name } => {
            let source = node.add_source(&name, now_ms()).map_err(source_error)?;
            let value = serde_json::json!({
                "name": source.name,
                "write_key": source.write_key,
                "client_key": source.client_key,
            });
            context.print(&value, |_| {
                outln!(context, "source {} added", source.name);
                outln!(
                    context,
                    "  write key   {}  (Segment SDKs: the write key)",
                    source.write_key
                );
                outln!(
                    context,
                    "  client key  {}  (GrowthBook SDKs: the client key)",
                    source.client_key
                );
            })?;
        }
        SourceCommand::List => {
            let sources = node.sources()?;
            context.print(&serde_json::json!({ "sources": sources }), |_| {
                let short = |key: &str| format!("{}…", key.chars().take(12).collect::<String>());
                let rows: Vec<Vec<String>> = sources
                    .iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            short(&s.write_key),
                            short(&s.client_key),
                            model::calendar::format_date(s.created_at_ms),
                            s.revoked_at_ms.map_or_else(
                                || "active".into(),
                                |ms| format!("revoked {}", model::calendar::format_date(ms)),
                            ),
                        ]
                    })
                    .collect();
                context.table(
                    &["NAME", "WRITE KEY", "CLIENT KEY", "ADDED", "STATE"],
                    &rows,
                );
            })?;
        }
        SourceCommand::Revoke { name } => {
            let source = node.revoke_source(&name, now_ms()).map_err(source_error)?;
            context.print(&source, |s| {
                outln!(
                    context,
                    "source {} revoked: its keys open nothing now",
                    s.name
                );
            })?;
        }
    }
    Ok(exit::OK)
}
