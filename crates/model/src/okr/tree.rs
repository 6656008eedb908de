//! The OKR tree `okr tree` shows: company objectives with their North Star, then each pod's key results under
//! their objective with progress and confidence as of an instant. A function of the registry view alone.

use serde::Serialize;

use super::{Confidence, Quarter};
use crate::{KeyResult, Objective, RegistryView};

/// Objectives (and key results whose objective is unknown here).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tree {
    /// By quarter, then title, then id.
    pub objectives: Vec<ObjectiveNode>,
    /// Key results naming an objective this registry does not hold (not yet synced, or never written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unlinked_key_results: Vec<KeyResultNode>,
}

/// One objective.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectiveNode {
    /// Objective id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Quarter, `2026Q4`.
    pub quarter: String,
    /// Elapsed share of the quarter at the as-of instant: the progress expected by now (`None` when the quarter
    /// does not parse).
    pub expected: Option<f64>,
    /// The North Star, when the objective names one.
    pub north_star: Option<NorthStar>,
    /// Key results of every pod, by pod, then metric, then id.
    pub key_results: Vec<KeyResultNode>,
}

/// An objective's North Star metric.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NorthStar {
    /// Metric key.
    pub metric: String,
    /// Target.
    pub target: Option<f64>,
    /// The current value of the most recently updated key result (of any pod) measuring the same metric, if any.
    pub current: Option<f64>,
    /// That key result, `pod/id`.
    pub measured_by: Option<String>,
}

/// One key result with its pace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyResultNode {
    /// Key result id.
    pub id: String,
    /// Owning pod.
    pub pod: String,
    /// Metric key.
    pub metric: String,
    /// Window measured, days.
    pub window_days: u32,
    /// Starting value.
    pub baseline: f64,
    /// Target value.
    pub target: f64,
    /// Latest published value.
    pub current: Option<f64>,
    /// Share of the way from baseline to target, in [0, 1].
    pub progress: Option<f64>,
    /// The flag against the objective's quarter.
    pub confidence: Confidence,
    /// When `current` was published (Unix ms).
    pub updated_at_ms: i64,
}

/// The tree of `view` as of `as_of_ms`, for one quarter or all.
pub fn tree(view: &RegistryView, quarter: Option<Quarter>, as_of_ms: i64) -> Tree {
    let wanted = |o: &Objective| quarter.is_none_or(|q| o.quarter == q.to_string());
    let mut objectives: Vec<&Objective> = view.objectives.values().filter(|o| wanted(o)).collect();
    objectives.sort_by(|a, b| (&a.quarter, &a.title, &a.id).cmp(&(&b.quarter, &b.title, &b.id)));
    let mut key_results: Vec<&KeyResult> = view.key_results.values().collect();
    key_results.sort_by(|a, b| (&a.pod, &a.metric, &a.id).cmp(&(&b.pod, &b.metric, &b.id)));
    let objectives = objectives
        .into_iter()
        .map(|objective| {
            let pace_quarter = objective.quarter.parse::<Quarter>().ok();
            ObjectiveNode {
                id: objective.id.clone(),
                title: objective.title.clone(),
                quarter: objective.quarter.clone(),
                expected: pace_quarter.map(|q| q.elapsed_share(as_of_ms)),
                north_star: north_star(view, objective),
                key_results: key_results
                    .iter()
                    .filter(|kr| kr.objective == objective.id)
                    .map(|kr| node(kr, pace_quarter, as_of_ms))
                    .collect(),
            }
        })
        .collect();
    let unlinked_key_results = if quarter.is_some() {
        Vec::new()
    } else {
        key_results
            .iter()
            .filter(|kr| !view.objectives.contains_key(&kr.objective))
            .map(|kr| node(kr, None, as_of_ms))
            .collect()
    };
    Tree {
        objectives,
        unlinked_key_results,
    }
}

fn node(kr: &KeyResult, quarter: Option<Quarter>, as_of_ms: i64) -> KeyResultNode {
    let progress = kr.progress();
    let confidence = match quarter {
        Some(quarter) => kr.pace(quarter, as_of_ms).confidence,
        // Without a quarter there is no pace to compare with.
        None => Confidence::NoData,
    };
    KeyResultNode {
        id: kr.id.clone(),
        pod: kr.pod.clone(),
        metric: kr.metric.clone(),
        window_days: kr.window_days,
        baseline: kr.baseline,
        target: kr.target,
        current: kr.current,
        progress,
        confidence,
        updated_at_ms: kr.updated_at_ms,
    }
}

fn north_star(view: &RegistryView, objective: &Objective) -> Option<NorthStar> {
    let metric = objective.north_star_metric.clone()?;
    // The freshest measurement of the metric; equal times go to the first key in registry order.
    let measured = view
        .key_results
        .iter()
        .filter(|(_, kr)| kr.metric == metric && kr.current.is_some())
        .fold(
            None::<(&String, &KeyResult)>,
            |best, (key, kr)| match best {
                Some((_, b)) if b.updated_at_ms >= kr.updated_at_ms => best,
                _ => Some((key, kr)),
            },
        );
    Some(NorthStar {
        metric,
        target: objective.target,
        current: measured.and_then(|(_, kr)| kr.current),
        measured_by: measured.map(|(key, _)| key.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::okr::as_of_ms;

    fn view() -> RegistryView {
        let mut view = RegistryView::default();
        let objective = |id: &str, quarter: &str, north_star: Option<&str>| Objective {
            id: id.into(),
            title: format!("objective {id}"),
            quarter: quarter.into(),
            north_star_metric: north_star.map(str::to_owned),
            target: north_star.map(|_| 0.7),
            created_by: String::new(),
        };
        for o in [
            objective("obj-a", "2026Q4", Some("conversion")),
            objective("obj-b", "2027Q1", None),
        ] {
            view.objectives.insert(o.id.clone(), o);
        }
        let kr = |pod: &str, id: &str, objective: &str, current: Option<f64>, at: i64| KeyResult {
            id: id.into(),
            objective: objective.into(),
            pod: pod.into(),
            metric: "conversion".into(),
            baseline: 0.3,
            target: 0.7,
            current,
            updated_at_ms: at,
            window_days: 28,
        };
        for k in [
            kr("emea", "kr-1", "obj-a", Some(0.5), 10),
            kr("apac", "kr-2", "obj-a", Some(0.36), 20),
            kr("amer", "kr-3", "obj-a", None, 30),
            kr("emea", "kr-4", "obj-gone", Some(0.4), 5),
        ] {
            view.key_results.insert(format!("{}/{}", k.pod, k.id), k);
        }
        view
    }

    #[test]
    fn objectives_carry_their_key_results_and_north_star() {
        let as_of = as_of_ms("--as-of", "2026-11-15").expect("a date");
        let tree = tree(&view(), None, as_of);
        let ids: Vec<&str> = tree.objectives.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["obj-a", "obj-b"]);
        let a = &tree.objectives[0];
        assert_eq!(a.expected, Some(0.5));
        let rows: Vec<(&str, Confidence)> = a
            .key_results
            .iter()
            .map(|k| (k.id.as_str(), k.confidence))
            .collect();
        assert_eq!(
            rows,
            [
                ("kr-3", Confidence::NoData),
                ("kr-2", Confidence::OffTrack),
                ("kr-1", Confidence::OnTrack)
            ]
        );
        let north_star = a.north_star.as_ref().expect("named");
        assert_eq!(
            (north_star.current, north_star.measured_by.as_deref()),
            (Some(0.36), Some("apac/kr-2")),
            "the freshest value"
        );
        assert_eq!(tree.objectives[1].north_star, None);
        assert_eq!(tree.unlinked_key_results.len(), 1);
        let json = serde_json::to_value(&tree).expect("serializes");
        assert_eq!(
            json["objectives"][0]["key_results"][2]["confidence"],
            "on_track"
        );
        assert_eq!(json["objectives"][0]["north_star"]["target"], 0.7);
        assert_eq!(json["objectives"][1]["north_star"], serde_json::Value::Null);
    }

    #[test]
    fn a_quarter_filters_objectives() {
        let tree = tree(&view(), Some("2027Q1".parse().expect("a quarter")), 0);
        assert_eq!(tree.objectives.len(), 1);
        assert_eq!(tree.objectives[0].expected, Some(0.0));
        assert!(tree.unlinked_key_results.is_empty());
        let json = serde_json::to_value(&tree).expect("serializes");
        assert_eq!(json.as_object().expect("an object").len(), 1);
    }
}
