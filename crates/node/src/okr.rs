//! Live key results on a pod's node: each key result of this pod is measured over the pod's own stored events
//! (`analysis::period`: the metric over every user active in the key result's window) and the value is published
//! signed as `Op::UpdateKeyResult`. `okr kr refresh` and the running node's periodic refresh both come here.
//!
//! A value equal to the one already published is not written again, so an idle pod's periodic refresh adds no
//! changes to the registry; a window without any event has no value and publishes nothing.

use std::collections::BTreeMap;

use analysis::aggregate::Exposures;
use analysis::period::{self, Measure, Measurement, Population};
use model::okr::Window;
use model::{KeyResult, RegistryView, Role};
use registry::Op;
use serde::Serialize;

use crate::{Node, events};

/// Why key results cannot be refreshed at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only a pod's own node measures its key results.
    #[error(
        "this node's key is not an active pod member; only a pod's node measures its key results"
    )]
    NotAPod,
    /// The key result asked for is not one of this pod's.
    #[error("no key result `{id}` of pod `{pod}`; `growthmesh okr kr list` shows them")]
    UnknownKeyResult {
        /// The id asked for.
        id: String,
        /// This node's pod.
        pod: String,
    },
    /// Reading the stored events failed.
    #[error(transparent)]
    Events(#[from] events::Error),
    /// Publishing a value failed (boxed: a node error is large and this one is rare).
    #[error(transparent)]
    Write(Box<crate::Error>),
}

impl From<crate::Error> for Error {
    fn from(error: crate::Error) -> Self {
        Self::Write(Box::new(error))
    }
}

/// What one refresh of one key result measured and published.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Refresh {
    /// Key result id.
    pub id: String,
    /// Metric key.
    pub metric: String,
    /// Days measured.
    pub window_days: u32,
    /// First instant measured (Unix ms).
    pub window_start_ms: i64,
    /// First instant after the window (Unix ms): the as-of instant.
    pub window_end_ms: i64,
    /// The measured value; `None` when no user had an event in the window or the metric cannot be measured.
    pub value: Option<f64>,
    /// Users with any event in the window.
    pub users: u64,
    /// Events of the metric inside the window.
    pub events: u64,
    /// The value published before this refresh.
    pub previous: Option<f64>,
    /// The change that published `value`; `None` when nothing was written (no value, or the same value).
    pub change: Option<String>,
    /// Why the metric cannot be measured (a definition deprecated, an event schema missing).
    pub problem: Option<String>,
}

impl Node {
    /// The pod this node's key writes for, when it is an unrevoked pod member.
    pub fn own_pod(&mut self) -> Option<String> {
        match self.standing()? {
            (Role::Pod, Some(pod), false) => Some(pod),
            _ => None,
        }
    }

    /// Measures this pod's key results (only the one with id `only`, when given) over the windows that end at
    /// `as_of_ms`, and publishes each value that differs from the published one, stamped `now_ms`.
    pub fn refresh_key_results(
        &mut self,
        only: Option<&str>,
        as_of_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Refresh>, Error> {
        let pod = self.own_pod().ok_or(Error::NotAPod)?;
        let view = self.view();
        let mine: Vec<&KeyResult> = view
            .key_results
            .values()
            .filter(|kr| kr.pod == pod && only.is_none_or(|id| kr.id == id))
            .collect();
        if let (Some(id), true) = (only, mine.is_empty()) {
            return Err(Error::UnknownKeyResult {
                id: id.to_owned(),
                pod,
            });
        }
        let mut populations = BTreeMap::new();
        mine.into_iter()
            .map(|kr| self.refresh_one(&view, kr, as_of_ms, now_ms, &mut populations))
            .collect()
    }

    /// Measures one key result and publishes its value when it changed.
    fn refresh_one(
        &mut self,
        view: &RegistryView,
        kr: &KeyResult,
        as_of_ms: i64,
        now_ms: i64,
        populations: &mut BTreeMap<Window, Exposures>,
    ) -> Result<Refresh, Error> {
        let window = kr.window(as_of_ms);
        let mut refresh = Refresh {
            id: kr.id.clone(),
            metric: kr.metric.clone(),
            window_days: kr.window_days,
            window_start_ms: window.start_ms,
            window_end_ms: window.end_ms,
            value: None,
            users: 0,
            events: 0,
            previous: kr.current,
            change: None,
            problem: None,
        };
        match self.measure(view, &kr.metric, window, populations) {
            Ok(measurement) => {
                refresh.value = measurement.value;
                refresh.users = measurement.users;
                refresh.events = measurement.events;
            }
            // A definition that cannot be measured any more is this key result's problem, not the others'.
            Err(events::Error::Analysis(problem)) => {
                tracing::warn!(key_result = %kr.id, %problem, "key result cannot be measured");
                refresh.problem = Some(problem.to_string());
            }
            Err(other) => return Err(other.into()),
        }
        if let Some(value) = refresh.value.filter(|v| Some(*v) != kr.current) {
            let op = Op::UpdateKeyResult {
                id: kr.id.clone(),
                current: value,
                updated_at_ms: now_ms,
            };
            refresh.change = Some(self.write(&op, now_ms)?.change);
        }
        Ok(refresh)
    }

    /// The value of `metric` over `window`, from the stored events; the window's population is read once per
    /// refresh and kept in `populations`.
    fn measure(
        &self,
        view: &RegistryView,
        metric: &str,
        window: Window,
        populations: &mut BTreeMap<Window, Exposures>,
    ) -> Result<Measurement, events::Error> {
        let plan = period::plan(view, metric, window)?;
        let events = self.store.events()?;
        let users = match populations.get(&window) {
            Some(users) => users.clone(),
            None => {
                let mut population = Population::new(window);
                for event in events.scan_all() {
                    let event = event?;
                    population.push(event.user(), event.timestamp_ms());
                }
                let users = population.finish();
                populations.insert(window, users.clone());
                users
            }
        };
        let mut measure = Measure::new(&plan, users, window);
        for name in plan.event_uses().keys() {
            let mut sink = measure.events(name);
            for event in events.scan_event(name) {
                let event = event?;
                sink.push(event.user(), event.timestamp_ms(), event.value());
            }
        }
        Ok(measure.finish())
    }
}
