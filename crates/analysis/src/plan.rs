//! What an analysis computes: the experiment's variants and weights and its metric definitions, resolved from the
//! registry and checked against the approved schemas before a single event is read, so a definition naming a
//! missing event fails with the metric and field, not with an empty result.

use std::collections::BTreeMap;

use model::{Direction, MetricKind, PropertyType, RegistryView};

use crate::Error;
use crate::time::DAY_MS;
use crate::track::Schemas;

/// Where a per-user value comes from: count events, or sum one numeric property of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Event name.
    pub event: String,
    /// Property summed; `None` counts events.
    pub property: Option<String>,
}

/// One metric, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricPlan {
    /// Metric key.
    pub key: String,
    /// `binomial`, `mean` or `ratio`.
    pub kind: &'static str,
    /// Which direction is good.
    pub direction: Direction,
    /// Winsorize per-user values at this percentile.
    pub capping: Option<f64>,
    /// Window after first exposure (and before it, for the CUPED covariate), ms.
    pub window_ms: i64,
    /// Whether it is a guardrail.
    pub guardrail: bool,
    /// The value (ratio: numerator).
    pub numerator: Source,
    /// The ratio's denominator.
    pub denominator: Option<Source>,
}

impl MetricPlan {
    /// Whether per-user values are 0/1 (did the user do it).
    pub fn is_binomial(&self) -> bool {
        self.kind == "binomial"
    }
}

/// An experiment ready to analyse.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Experiment key (the `experimentId` of its exposures); empty in a key result's plan (see [`crate::period`]).
    pub experiment: String,
    /// Variant keys, control first.
    pub variants: Vec<String>,
    /// Intended traffic weights.
    pub weights: Vec<f64>,
    /// Metrics: primary first, then guardrails, then extra ones asked for.
    pub metrics: Vec<MetricPlan>,
}

impl Plan {
    /// Resolves `experiment` and its metrics (plus `extra` metric keys) from the registry.
    pub fn new(view: &RegistryView, experiment: &str, extra: &[String]) -> Result<Self, Error> {
        let record = view
            .experiments
            .get(experiment)
            .ok_or_else(|| Error::UnknownExperiment {
                key: experiment.to_owned(),
            })?;
        if record.variants.len() < 2 {
            return Err(Error::BadExperiment {
                key: experiment.to_owned(),
                problem: "needs at least two variants".into(),
            });
        }
        if record.variants.len() > usize::from(u8::MAX) {
            return Err(Error::BadExperiment {
                key: experiment.to_owned(),
                problem: format!("{} variants, at most 255", record.variants.len()),
            });
        }
        let schemas = Schemas::from_view(view);
        let mut wanted: Vec<(String, &str, bool)> = Vec::new();
        if let Some(primary) = &record.primary_metric {
            wanted.push((primary.clone(), "primary metric", false));
        }
        for guardrail in &record.guardrail_metrics {
            wanted.push((guardrail.clone(), "guardrail", true));
        }
        for key in extra {
            wanted.push((key.clone(), "--metric", false));
        }
        let mut seen = BTreeMap::new();
        wanted.retain(|(key, _, _)| seen.insert(key.clone(), ()).is_none());
        if wanted.is_empty() {
            return Err(Error::NoMetrics {
                key: experiment.to_owned(),
            });
        }
        let metrics = wanted
            .into_iter()
            .map(|(key, role, guardrail)| {
                let definition = view.metrics.get(&key).ok_or_else(|| Error::UnknownMetric {
                    metric: key.clone(),
                    role: role.to_owned(),
                    experiment: experiment.to_owned(),
                })?;
                resolve(definition, guardrail, &schemas)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            experiment: experiment.to_owned(),
            variants: record.variants.iter().map(|v| v.key.clone()).collect(),
            weights: record.variants.iter().map(|v| v.weight).collect(),
            metrics,
        })
    }

    /// Each event name the metrics read, with the (metric index, is denominator) pairs that use it.
    pub fn event_uses(&self) -> BTreeMap<&str, Vec<(usize, bool)>> {
        let mut uses: BTreeMap<&str, Vec<(usize, bool)>> = BTreeMap::new();
        for (index, metric) in self.metrics.iter().enumerate() {
            uses.entry(&metric.numerator.event)
                .or_default()
                .push((index, false));
            if let Some(denominator) = &metric.denominator {
                uses.entry(&denominator.event)
                    .or_default()
                    .push((index, true));
            }
        }
        uses
    }
}

pub(crate) fn resolve(
    definition: &model::MetricDefinition,
    guardrail: bool,
    schemas: &Schemas,
) -> Result<MetricPlan, Error> {
    let key = &definition.key;
    let source = |field: &'static str,
                  property_field: &'static str,
                  event: &str,
                  property: &Option<String>|
     -> Result<Source, Error> {
        let schema = schemas.get(event).ok_or_else(|| Error::MissingEvent {
            metric: key.clone(),
            field,
            event: event.to_owned(),
        })?;
        if let Some(property) = property {
            let def = schema.properties.iter().find(|p| &p.name == property);
            let problem = match def.map(|d| d.kind) {
                None => Some("is not defined"),
                Some(PropertyType::Number | PropertyType::Integer) => None,
                Some(_) => Some("is not a number"),
            };
            if let Some(problem) = problem {
                return Err(Error::BadProperty {
                    metric: key.clone(),
                    field: property_field,
                    property: property.clone(),
                    problem,
                    schema: schema.key(),
                });
            }
        }
        Ok(Source {
            event: event.to_owned(),
            property: property.clone(),
        })
    };
    let (kind, window_days, numerator, denominator) = match &definition.kind {
        MetricKind::Binomial { event, window_days } => (
            "binomial",
            *window_days,
            source("event", "property", event, &None)?,
            None,
        ),
        MetricKind::Mean {
            event,
            property,
            window_days,
        } => (
            "mean",
            *window_days,
            source("event", "property", event, property)?,
            None,
        ),
        MetricKind::Ratio {
            numerator_event,
            numerator_property,
            denominator_event,
            denominator_property,
            window_days,
        } => (
            "ratio",
            *window_days,
            source(
                "numerator_event",
                "numerator_property",
                numerator_event,
                numerator_property,
            )?,
            Some(source(
                "denominator_event",
                "denominator_property",
                denominator_event,
                denominator_property,
            )?),
        ),
    };
    if window_days == 0 {
        return Err(Error::BadSetting {
            metric: key.clone(),
            field: "window_days",
            problem: "must be at least 1".into(),
        });
    }
    if let Some(p) = definition.capping_percentile
        && !(p > 0.0 && p < 1.0)
    {
        return Err(Error::BadSetting {
            metric: key.clone(),
            field: "capping_percentile",
            problem: format!("{p} is not strictly between 0 and 1"),
        });
    }
    Ok(MetricPlan {
        key: key.clone(),
        kind,
        direction: definition.direction,
        capping: definition.capping_percentile,
        window_ms: i64::from(window_days) * DAY_MS,
        guardrail,
        numerator,
        denominator,
    })
}
