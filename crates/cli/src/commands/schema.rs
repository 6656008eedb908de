//! `schema propose|approve|list` and `metric propose|approve|list`: the shared event schema and metric definitions.

use clap::Subcommand;
use model::{Direction, EventSchema, MetricDefinition, MetricKind, PropertyDef, StandardStatus};
use registry::Op;

use super::federation::map_write;
use node::Node;

use crate::context::{Context, input, now_ms};
use crate::exit::{self, input_error};

/// `schema` subcommands.
#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Propose an event schema (pods).
    Propose {
        /// Event name.
        #[arg(long)]
        event: String,
        /// Version.
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// Property as name:type[:required][:pii]; repeat.
        #[arg(long = "property")]
        properties: Vec<String>,
        /// Legal basis for processing (consent, contract, legitimate_interest, ...).
        #[arg(long, default_value = "")]
        legal_basis: String,
        /// Days raw events are kept.
        #[arg(long, default_value_t = 0)]
        retention_days: u32,
    },
    /// Approve a proposed schema (stewards and council).
    Approve {
        /// Event name.
        event: String,
        /// Version (default: the highest proposed).
        #[arg(long)]
        version: Option<u32>,
        /// Proposing pod (default: the only pod that proposed it).
        #[arg(long)]
        pod: Option<String>,
    },
    /// List approved schemas and proposals.
    List,
}

/// `metric` subcommands.
#[derive(Debug, Subcommand)]
pub enum MetricCommand {
    /// Propose a metric definition (pods).
    Propose {
        /// Metric key.
        #[arg(long)]
        key: String,
        /// binomial, mean or ratio.
        #[arg(long = "type")]
        kind: String,
        /// Event (numerator event for ratio).
        #[arg(long)]
        event: String,
        /// Property summed (mean, ratio numerator); events are counted when absent.
        #[arg(long)]
        property: Option<String>,
        /// Denominator event (ratio).
        #[arg(long)]
        denominator_event: Option<String>,
        /// Denominator property (ratio).
        #[arg(long)]
        denominator_property: Option<String>,
        /// Window after first exposure, days.
        #[arg(long, default_value_t = 14)]
        window_days: u32,
        /// higher or lower is better.
        #[arg(long, default_value = "higher")]
        direction: String,
        /// Winsorize per-user values at this percentile (0 < p < 1).
        #[arg(long)]
        capping: Option<f64>,
    },
    /// Approve a proposed metric (stewards and council).
    Approve {
        /// Metric key.
        key: String,
        /// Proposing pod (default: the only one).
        #[arg(long)]
        pod: Option<String>,
    },
    /// List approved metrics and proposals.
    List,
}

/// Runs a `schema` subcommand.
pub fn schema(context: &Context, node: &mut Node, command: SchemaCommand) -> anyhow::Result<u8> {
    match command {
        SchemaCommand::Propose {
            event,
            version,
            properties,
            legal_basis,
            retention_days,
        } => {
            let properties: Vec<PropertyDef> = properties
                .iter()
                .map(|p| input(p.parse()))
                .collect::<anyhow::Result<_>>()?;
            let schema = EventSchema {
                event,
                version,
                properties,
                legal_basis,
                retention_days,
                status: StandardStatus::Proposed,
                proposed_by: String::new(),
                approved_by: None,
            };
            input(schema.validate())?;
            let outcome = node
                .write(&Op::ProposeSchema(schema), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "schema proposed")
        }
        SchemaCommand::Approve {
            event,
            version,
            pod,
        } => {
            let view = node.view();
            let mut candidates: Vec<&EventSchema> = view
                .schema_proposals
                .values()
                .filter(|s| s.event == event)
                .filter(|s| version.is_none_or(|v| s.version == v))
                .filter(|s| pod.as_ref().is_none_or(|p| &s.proposed_by == p))
                .collect();
            let top = candidates.iter().map(|s| s.version).max();
            candidates.retain(|s| Some(s.version) == top);
            let schema = match candidates.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(input_error(format!(
                        "EVENT: no proposal for `{event}` matches"
                    )));
                }
                _ => {
                    return Err(input_error(format!(
                        "--pod: several pods proposed `{event}`; name one"
                    )));
                }
            };
            let approved = EventSchema {
                status: StandardStatus::Approved,
                approved_by: Some(node.identity().public_key),
                ..schema
            };
            let outcome = node
                .write(&Op::ApproveSchema(approved), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "schema approved")
        }
        SchemaCommand::List => {
            let view = node.view();
            let value =
                serde_json::json!({ "schemas": view.schemas, "proposals": view.schema_proposals });
            context.print(&value, |_| {
                // Proposals already approved are shown once, as approved.
                let pending = view.schema_proposals.values().filter(|p| {
                    !view
                        .schemas
                        .values()
                        .any(|s| s.event == p.event && s.version == p.version)
                });
                let rows: Vec<Vec<String>> = view
                    .schemas
                    .values()
                    .chain(pending)
                    .map(|s| {
                        let props: Vec<&str> =
                            s.properties.iter().map(|p| p.name.as_str()).collect();
                        vec![
                            s.event.clone(),
                            s.version.to_string(),
                            lowercase(&s.status),
                            if s.retention_days == 0 {
                                "-".into()
                            } else {
                                format!("{} days", s.retention_days)
                            },
                            props.join(", "),
                        ]
                    })
                    .collect();
                context.table(
                    &["EVENT", "VERSION", "STATUS", "RETENTION", "PROPERTIES"],
                    &rows,
                );
            })?;
            Ok(exit::OK)
        }
    }
}

/// Runs a `metric` subcommand.
pub fn metric(context: &Context, node: &mut Node, command: MetricCommand) -> anyhow::Result<u8> {
    match command {
        MetricCommand::Propose {
            key,
            kind,
            event,
            property,
            denominator_event,
            denominator_property,
            window_days,
            direction,
            capping,
        } => {
            input(model::validate_slug("--key", &key))?;
            let kind = match kind.as_str() {
                "binomial" => MetricKind::Binomial { event, window_days },
                "mean" => MetricKind::Mean {
                    event,
                    property,
                    window_days,
                },
                "ratio" => MetricKind::Ratio {
                    numerator_event: event,
                    numerator_property: property,
                    denominator_event: denominator_event.ok_or_else(|| {
                        input_error("--denominator-event: required for a ratio metric")
                    })?,
                    denominator_property,
                    window_days,
                },
                other => {
                    return Err(input_error(format!(
                        "--type: `{other}` is not one of binomial, mean, ratio"
                    )));
                }
            };
            let direction = match direction.as_str() {
                "higher" => Direction::Higher,
                "lower" => Direction::Lower,
                other => {
                    return Err(input_error(format!(
                        "--direction: `{other}` is not higher or lower"
                    )));
                }
            };
            if let Some(p) = capping
                && !(p > 0.0 && p < 1.0)
            {
                return Err(input_error(format!(
                    "--capping: {p} is not a percentile between 0 and 1"
                )));
            }
            let metric = MetricDefinition {
                key,
                kind,
                direction,
                capping_percentile: capping,
                status: StandardStatus::Proposed,
                proposed_by: String::new(),
                approved_by: None,
            };
            let outcome = node
                .write(&Op::ProposeMetric(metric), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "metric proposed")
        }
        MetricCommand::Approve { key, pod } => {
            let view = node.view();
            let candidates: Vec<&MetricDefinition> = view
                .metric_proposals
                .values()
                .filter(|m| m.key == key && pod.as_ref().is_none_or(|p| &m.proposed_by == p))
                .collect();
            let metric = match candidates.as_slice() {
                [one] => (*one).clone(),
                [] => return Err(input_error(format!("KEY: no proposal for metric `{key}`"))),
                _ => {
                    return Err(input_error(format!(
                        "--pod: several pods proposed `{key}`; name one"
                    )));
                }
            };
            let approved = MetricDefinition {
                status: StandardStatus::Approved,
                approved_by: Some(node.identity().public_key),
                ..metric
            };
            let outcome = node
                .write(&Op::ApproveMetric(approved), now_ms())
                .map_err(map_write)?;
            context.print_write(&outcome, "metric approved")
        }
        MetricCommand::List => {
            let view = node.view();
            let value =
                serde_json::json!({ "metrics": view.metrics, "proposals": view.metric_proposals });
            context.print(&value, |_| {
                let pending = view
                    .metric_proposals
                    .values()
                    .filter(|p| !view.metrics.contains_key(&p.key));
                let rows: Vec<Vec<String>> = view
                    .metrics
                    .values()
                    .chain(pending)
                    .map(|m| {
                        let (kind, measures, window) = describe(&m.kind);
                        vec![
                            m.key.clone(),
                            lowercase(&m.status),
                            kind.to_owned(),
                            measures,
                            format!("{window} days"),
                        ]
                    })
                    .collect();
                context.table(&["KEY", "STATUS", "TYPE", "MEASURES", "WINDOW"], &rows);
            })?;
            Ok(exit::OK)
        }
    }
}

/// A unit enum as the CLI takes it (its serde name: `approved`, `binomial`).
fn lowercase(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".into())
}

/// A metric's type, what it measures, and its window in days.
fn describe(kind: &model::MetricKind) -> (&'static str, String, u32) {
    let of = |event: &str, property: &Option<String>| match property {
        Some(property) => format!("{event}.{property}"),
        None => format!("{event} (count)"),
    };
    match kind {
        model::MetricKind::Binomial { event, window_days } => {
            ("binomial", event.clone(), *window_days)
        }
        model::MetricKind::Mean {
            event,
            property,
            window_days,
        } => ("mean", of(event, property), *window_days),
        model::MetricKind::Ratio {
            numerator_event,
            numerator_property,
            denominator_event,
            denominator_property,
            window_days,
        } => (
            "ratio",
            format!(
                "{} / {}",
                of(numerator_event, numerator_property),
                of(denominator_event, denominator_property)
            ),
            *window_days,
        ),
    }
}
