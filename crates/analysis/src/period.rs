//! A metric's value over a window of the pod's own events: what a live key result reports. It runs through the
//! same join as an experiment ([`crate::Analysis`]), with one population in place of variants:
//!
//! - the population is every user with any stored event or exposure inside the window, each "exposed" at the
//!   window's start, so the metric window becomes the key result's window (the definition's own `window_days`,
//!   which counts from a first exposure, does not apply);
//! - binomial: the share of those users who did the event inside the window;
//! - mean: the mean per user of the property summed (or of the events counted) inside the window, over all those
//!   users (a user without the event counts as 0);
//! - ratio: the sum of the numerator over the sum of the denominator, over all those users;
//! - capping winsorizes per-user values as in an experiment.
//!
//! No value exists while the population is empty (or a ratio's denominator sums to 0).

use model::okr::Window;
use model::{RegistryView, StandardStatus};
use serde::Serialize;

use crate::aggregate::{ExposureBuilder, Exposures, Sums};
use crate::join::EventSink;
use crate::plan::{MetricPlan, Plan, resolve};
use crate::track::Schemas;
use crate::{Analysis, Error};

/// The one variant of a key result's plan.
pub const POPULATION: &str = "population";

/// A plan measuring the approved metric `metric` over `window`.
pub fn plan(view: &RegistryView, metric: &str, window: Window) -> Result<Plan, Error> {
    let definition = view
        .metrics
        .get(metric)
        .filter(|d| d.status == StandardStatus::Approved)
        .ok_or_else(|| Error::UnapprovedMetric {
            metric: metric.to_owned(),
        })?;
    let mut resolved = resolve(definition, false, &Schemas::from_view(view))?;
    resolved.window_ms = window.end_ms - window.start_ms;
    Ok(Plan {
        experiment: String::new(),
        variants: vec![POPULATION.to_owned()],
        weights: vec![1.0],
        metrics: vec![resolved],
    })
}

/// Builds the population of a window from every stored event and exposure (in any order).
#[derive(Debug)]
pub struct Population {
    window: Window,
    builder: ExposureBuilder,
}

impl Population {
    /// An empty population of `window`.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            builder: ExposureBuilder::new(&[POPULATION.to_owned()]),
        }
    }

    /// Counts `user` in when the event at `timestamp_ms` falls inside the window.
    pub fn push(&mut self, user: &[u8], timestamp_ms: i64) {
        if self.window.contains(timestamp_ms) {
            self.builder
                .push(user, self.window.start_ms, POPULATION.as_bytes());
        }
    }

    /// The users, each starting the window.
    pub fn finish(self) -> Exposures {
        self.builder.finish()
    }
}

/// A measurement in progress: [`Population`]'s users in, the metric's events in (once per event name), the value
/// out. Events outside the window are dropped here, so none counts as a pre-window covariate.
#[derive(Debug)]
pub struct Measure<'p> {
    analysis: Analysis<'p>,
    window: Window,
}

impl<'p> Measure<'p> {
    /// Starts measuring `plan` (from [`plan`]) over `users` (from [`Population::finish`]) in `window`.
    pub fn new(plan: &'p Plan, users: Exposures, window: Window) -> Self {
        Self {
            analysis: Analysis::from_exposures(plan, users),
            window,
        }
    }

    /// A sink for the events named `event`; feed it every such event, ideally in store order.
    pub fn events(&mut self, event: &str) -> WindowSink<'_> {
        WindowSink {
            sink: self.analysis.events(event),
            window: self.window,
        }
    }

    /// The value of the plan's one metric.
    pub fn finish(self) -> Measurement {
        self.analysis
            .measure()
            .pop()
            .expect("a key result's plan has one metric")
    }
}

/// Takes the events of one name and credits those inside the window.
#[derive(Debug)]
pub struct WindowSink<'a> {
    sink: EventSink<'a>,
    window: Window,
}

impl WindowSink<'_> {
    /// Credits one event when it falls inside the window.
    pub fn push(&mut self, user: &[u8], timestamp_ms: i64, properties: &[u8]) {
        if self.window.contains(timestamp_ms) {
            self.sink.push(user, timestamp_ms, properties);
        }
    }
}

/// A metric's value over a window, and what it came from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Measurement {
    /// The value; `None` when no user had an event in the window (or a ratio's denominator is 0).
    pub value: Option<f64>,
    /// Users with any event in the window.
    pub users: u64,
    /// Events of the metric credited inside the window (numerator and denominator events for a ratio).
    pub events: u64,
}

impl Measurement {
    /// The value of `metric` over every variant's users together.
    pub fn pooled(metric: &MetricPlan, sums: &[Sums], events: u64) -> Self {
        let users: u64 = sums.iter().map(|s| s.n).sum();
        let total: f64 = sums.iter().map(|s| s.sum).sum();
        let denominator = if metric.denominator.is_some() {
            sums.iter().map(|s| s.denominator_sum).sum()
        } else {
            users as f64
        };
        Self {
            value: (users > 0 && denominator != 0.0).then(|| total / denominator),
            users,
            events,
        }
    }
}

#[cfg(test)]
mod tests {
    use model::calendar::{DAY_MS, date_start_ms};
    use model::{Direction, EventSchema, MetricDefinition, MetricKind};

    use super::*;

    fn view() -> RegistryView {
        let mut view = RegistryView::default();
        for (event, properties) in [
            ("Page Viewed", vec![]),
            ("Order Completed", vec!["revenue:number"]),
        ] {
            let schema = EventSchema::approved(event, &properties).expect("valid");
            view.schemas.insert(schema.key(), schema);
        }
        let metrics = [
            (
                "conversion",
                MetricKind::Binomial {
                    event: "Order Completed".into(),
                    window_days: 1,
                },
            ),
            (
                "revenue",
                MetricKind::Mean {
                    event: "Order Completed".into(),
                    property: Some("revenue".into()),
                    window_days: 1,
                },
            ),
            (
                "orders-per-page",
                MetricKind::Ratio {
                    numerator_event: "Order Completed".into(),
                    numerator_property: None,
                    denominator_event: "Page Viewed".into(),
                    denominator_property: None,
                    window_days: 1,
                },
            ),
        ];
        for (key, kind) in metrics {
            view.metrics.insert(
                key.into(),
                MetricDefinition {
                    key: key.into(),
                    kind,
                    direction: Direction::Higher,
                    capping_percentile: None,
                    status: StandardStatus::Approved,
                    proposed_by: String::new(),
                    approved_by: None,
                },
            );
        }
        view
    }

    /// Events as the store yields them: by name, then user, then time.
    fn events(window: Window) -> Vec<Event> {
        let day = |n: i64| window.start_ms + n * DAY_MS;
        vec![
            ("Order Completed", "u1", day(1), r#"{"revenue":10}"#),
            ("Order Completed", "u1", day(2), r#"{"revenue":2}"#),
            ("Order Completed", "u2", window.end_ms, r#"{"revenue":50}"#),
            ("Order Completed", "u3", day(-2), r#"{"revenue":40}"#),
            ("Order Completed", "u3", day(3), r#"{"revenue":6}"#),
            ("Order Completed", "u4", day(-1), r#"{"revenue":100}"#),
            ("Order Completed", "u5", window.end_ms, r#"{"revenue":100}"#),
            ("Page Viewed", "u1", day(0), "{}"),
            ("Page Viewed", "u2", day(4), "{}"),
            ("Page Viewed", "u2", day(5), "{}"),
            ("Page Viewed", "u3", day(3), "{}"),
        ]
    }

    type Event = (&'static str, &'static str, i64, &'static str);

    fn measure(metric: &str, window: Window, events: &[Event]) -> Measurement {
        let plan = plan(&view(), metric, window).expect("a plan");
        let mut population = Population::new(window);
        for (_, user, at_ms, _) in events {
            population.push(user.as_bytes(), *at_ms);
        }
        let mut measure = Measure::new(&plan, population.finish(), window);
        for name in plan.event_uses().keys() {
            let mut sink = measure.events(name);
            for (_, user, at_ms, properties) in events.iter().filter(|e| e.0 == *name) {
                sink.push(user.as_bytes(), *at_ms, properties.as_bytes());
            }
        }
        measure.finish()
    }

    #[test]
    fn metrics_are_measured_over_the_users_of_the_window() {
        let end = date_start_ms("end", "2026-11-16").expect("a date");
        let window = Window::ending(end, 28);
        let events = events(window);
        // u1, u2 and u3 had events inside; u4's and u5's fall before and at the end, as do u2's and u3's other orders.
        let conversion = measure("conversion", window, &events);
        assert_eq!(
            conversion,
            Measurement {
                value: Some(2.0 / 3.0),
                users: 3,
                events: 3
            }
        );
        assert_eq!(measure("revenue", window, &events).value, Some(18.0 / 3.0));
        // Three orders over four page views.
        let ratio = measure("orders-per-page", window, &events);
        assert_eq!((ratio.value, ratio.events), (Some(0.75), 7));
    }

    #[test]
    fn an_empty_window_has_no_value() {
        let window = Window::ending(0, 28);
        let elsewhere = events(Window::ending(100 * DAY_MS, 28));
        assert_eq!(
            measure("conversion", window, &elsewhere),
            Measurement {
                value: None,
                users: 0,
                events: 0
            }
        );
    }

    #[test]
    fn only_approved_metrics_are_measured() {
        let mut view = view();
        let window = Window::ending(0, 28);
        assert!(matches!(
            plan(&view, "nope", window),
            Err(Error::UnapprovedMetric { .. })
        ));
        view.metrics.get_mut("conversion").expect("defined").status = StandardStatus::Deprecated;
        assert!(plan(&view, "conversion", window).is_err());
    }
}
