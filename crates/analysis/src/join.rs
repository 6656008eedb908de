//! The driver of one analysis: the caller streams exposures, then each metric event once (in store order); the
//! join credits every event to each metric that reads it, and [`Analysis::finish`] reduces and tests.

use crate::aggregate::{Cursor, ExposureBuilder, Exposures, MetricValues, sums};
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
        let exposures = exposures.finish();
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
        let variants = self.plan.variants.len();
        let sums: Vec<_> = self
            .plan
            .metrics
            .iter()
            .zip(&mut self.values)
            .map(|(metric, values)| {
                values.cap(metric);
                (sums(&self.exposures, values, variants), values.events_used)
            })
            .collect();
        report::build(self.plan, &self.exposures, &sums, options)
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
