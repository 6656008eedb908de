//! The driver of one analysis: the caller streams exposures, then each metric event once (in store order); the
//! join credits every event to each metric that reads it, and [`Analysis::finish`] reduces and tests.

use crate::aggregate::{Cursor, ExposureBuilder, Exposures, MetricValues, Sums, sums};
use crate::period::Measurement;
use crate::plan::Plan;
use crate::report::{self, Options, Report};

/// An analysis in progress.
#[derive(Debug)]
pub struct Analysis<'p> {
    plan: &'p Plan,
    exposures: Exposures,
    values: Vec<MetricValues>,
}

impl<'p> Analysis<'p> {
    /// Starts an analysis of `plan` over these exposures (see [`ExposureBuilder`]).
    pub fn new(plan: &'p Plan, exposures: ExposureBuilder) -> Self {
        Self::from_exposures(plan, exposures.finish())
    }

    /// Starts an analysis of `plan` over exposures already built (a key result's population, built once for every
    /// key result measured over the same window).
    pub fn from_exposures(plan: &'p Plan, exposures: Exposures) -> Self {
        let values = plan
            .metrics
            .iter()
            .map(|m| MetricValues::new(m, exposures.len()))
            .collect();
        Self {
            plan,
            exposures,
            values,
        }
    }

    /// The exposures.
    pub fn exposures(&self) -> &Exposures {
        &self.exposures
    }

    /// A sink for the events named `event`; feed it every such event, ideally in store order.
    pub fn events(&mut self, event: &str) -> EventSink<'_> {
        let uses = self.plan.event_uses().remove(event).unwrap_or_default();
        EventSink {
            plan: self.plan,
            cursor: self.exposures.cursor(),
            exposures: &self.exposures,
            values: &mut self.values,
            uses,
        }
    }

    /// Caps, reduces to sufficient statistics and tests every metric.
    pub fn finish(mut self, options: &Options) -> Result<Report, crate::Error> {
        let sums = self.reduce();
        report::build(self.plan, &self.exposures, &sums, options)
    }

    /// Caps, reduces and takes each metric's value over every user, whatever their variant: what a key result
    /// reports (see [`crate::period`]).
    pub fn measure(mut self) -> Vec<Measurement> {
        let sums = self.reduce();
        self.plan
            .metrics
            .iter()
            .zip(&sums)
            .map(|(metric, (sums, events))| Measurement::pooled(metric, sums, *events))
            .collect()
    }

    /// Per metric: per-variant sufficient statistics after capping, and the events credited.
    fn reduce(&mut self) -> Vec<(Vec<Sums>, u64)> {
        let variants = self.plan.variants.len();
        self.plan
            .metrics
            .iter()
            .zip(&mut self.values)
            .map(|(metric, values)| {
                values.cap(metric);
                (sums(&self.exposures, values, variants), values.events_used)
            })
            .collect()
    }
}

/// Takes the events of one name and credits them to the metrics that read it.
#[derive(Debug)]
pub struct EventSink<'a> {
    plan: &'a Plan,
    cursor: Cursor<'a>,
    exposures: &'a Exposures,
    values: &'a mut [MetricValues],
    uses: Vec<(usize, bool)>,
}

impl EventSink<'_> {
    /// Credits one event.
    pub fn push(&mut self, user: &[u8], timestamp_ms: i64, properties: &[u8]) {
        if self.uses.is_empty() {
            return;
        }
        let Some(index) = self.cursor.find(user) else {
            return;
        };
        let first_ms = self.exposures.first_ms(index);
        for &(metric, denominator) in &self.uses {
            self.values[metric].add(
                &self.plan.metrics[metric],
                denominator,
                index,
                first_ms,
                timestamp_ms,
                properties,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use model::{
        EventSchema, Experiment, MetricDefinition, MetricKind, RegistryView, StandardStatus,
        Variant,
    };

    use super::*;
    use crate::generate::{self, DEFAULT_START_MS, ORDER_COMPLETED, SCHEMAS};
    use crate::time::DAY_MS;
    use crate::track::{Schemas, check_line};
    use crate::{Plan, Verdict};

    fn view() -> RegistryView {
        let mut view = RegistryView::default();
        for (event, properties) in SCHEMAS {
            let schema = EventSchema::approved(event, properties).expect("valid");
            view.schemas.insert(schema.key(), schema);
        }
        let metric = MetricDefinition {
            key: "conversion".into(),
            kind: MetricKind::Binomial {
                event: ORDER_COMPLETED.into(),
                window_days: 14,
            },
            direction: model::Direction::Higher,
            capping_percentile: None,
            status: StandardStatus::Approved,
            proposed_by: String::new(),
            approved_by: None,
        };
        view.metrics.insert(metric.key.clone(), metric);
        let experiment: Experiment = serde_json::from_value(serde_json::json!({
            "key": "exp", "pod": "emea", "primary_metric": "conversion",
        }))
        .expect("a minimal experiment");
        let variants = ["control", "treatment"].map(|key| Variant {
            key: key.into(),
            weight: 0.5,
        });
        view.experiments.insert(
            "exp".into(),
            Experiment {
                variants: variants.to_vec(),
                ..experiment
            },
        );
        view
    }

    /// Generates, checks, sorts like the store and analyses in memory.
    fn verdict(view: &RegistryView, lift: f64, seed: u64) -> Verdict {
        let config = generate::Config {
            lift,
            ..generate::Config::new("exp", 1_000, 5_000, seed)
        };
        let mut bytes = Vec::new();
        generate::generate(&config, &mut bytes).expect("memory write");
        let schemas = Schemas::from_view(view);
        let mut accepted: Vec<_> = bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| check_line(l, &schemas, DEFAULT_START_MS + 100 * DAY_MS).expect("valid"))
            .collect();
        accepted.sort_by(|a, b| {
            (&a.name, &a.user, a.timestamp_ms).cmp(&(&b.name, &b.user, b.timestamp_ms))
        });
        let plan = Plan::new(view, "exp", &[]).expect("a plan");
        let mut exposures = ExposureBuilder::new(&plan.variants);
        for e in accepted.iter().filter(|e| e.exposure) {
            exposures.push(e.user.as_bytes(), e.timestamp_ms, &e.value);
        }
        let mut analysis = Analysis::new(&plan, exposures);
        let mut sink = analysis.events(ORDER_COMPLETED);
        for e in accepted.iter().filter(|e| e.name == ORDER_COMPLETED) {
            sink.push(e.user.as_bytes(), e.timestamp_ms, &e.value);
        }
        let report = analysis.finish(&Options::default()).expect("a report");
        assert_eq!(report.users.iter().sum::<u64>(), 1_000);
        report.verdict
    }

    #[test]
    fn a_real_lift_is_detected_and_aa_tests_are_rarely_called() {
        let view = view();
        assert_eq!(verdict(&view, 0.6, 1), Verdict::Ship);
        let called = (0..20)
            .filter(|&seed| verdict(&view, 0.0, 100 + seed) != Verdict::KeepRunning)
            .count();
        // 5% expected at alpha 0.05; 4 or more of 20 has probability under 2%.
        assert!(called <= 3, "{called} of 20 A/A tests were called");
    }
}
