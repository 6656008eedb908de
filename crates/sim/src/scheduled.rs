//! Scheduled starts and what they must do: both modes record each start a scenario's schedule tries (with an
//! `expect`), and judge them by the same invariant, "scheduled starts go as expected".

use crate::report::Invariant;
use crate::scenario::Expect;

/// A start the schedule tried, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tried {
    /// The pod node that tried.
    pub node: String,
    /// The experiment.
    pub experiment: String,
    /// When it was first tried (scenario ms).
    pub at_ms: u64,
    /// What had to happen.
    pub expect: Expect,
    /// When it started (scenario ms), if it did.
    pub started_at_ms: Option<u64>,
    /// Why governance refused it (the last time it was tried), where the driver can tell.
    pub refusal: Option<String>,
}

impl Tried {
    /// Whether it did what the schedule expected: a refused start did not start when tried; an expected start
    /// started within the bound (the driver stops trying at the bound).
    pub fn as_expected(&self) -> bool {
        match self.expect {
            Expect::Refused => self.started_at_ms.is_none(),
            Expect::Started => self.started_at_ms.is_some(),
        }
    }

    fn describe(&self) -> String {
        let outcome = match self.started_at_ms {
            Some(at) if at == self.at_ms => "started".to_owned(),
            Some(at) => format!("started at {at} ms"),
            None => match &self.refusal {
                Some(why) => format!("refused: {why}"),
                None => "refused".to_owned(),
            },
        };
        format!(
            "{} starting {} at {} ms: {outcome} (expected {})",
            self.node,
            self.experiment,
            self.at_ms,
            self.expect.as_str()
        )
    }
}

/// The invariant over every scheduled start with an expectation; `None` when the schedule has none.
pub fn invariant(tried: &[Tried]) -> Option<Invariant> {
    if tried.is_empty() {
        return None;
    }
    let wrong: Vec<String> = tried
        .iter()
        .filter(|t| !t.as_expected())
        .map(Tried::describe)
        .collect();
    Some(Invariant {
        name: "scheduled starts go as expected".into(),
        ok: wrong.is_empty(),
        detail: if wrong.is_empty() {
            tried
                .iter()
                .map(Tried::describe)
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            wrong.join("; ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tried(expect: Expect, started_at_ms: Option<u64>) -> Tried {
        Tried {
            node: "apac-pod-1".into(),
            experiment: "scripted-x".into(),
            at_ms: 40_000,
            expect,
            started_at_ms,
            refusal: None,
        }
    }

    #[test]
    fn a_start_that_went_otherwise_fails_the_invariant() {
        assert!(invariant(&[]).is_none());
        let ok = invariant(&[
            tried(Expect::Refused, None),
            tried(Expect::Started, Some(41_000)),
        ])
        .expect("some");
        assert!(ok.ok, "{}", ok.detail);
        let started_early = invariant(&[tried(Expect::Refused, Some(40_000))]).expect("some");
        assert!(!started_early.ok);
        assert!(started_early.detail.contains("expected refused"));
        let never = invariant(&[tried(Expect::Started, None)]).expect("some");
        assert!(!never.ok);
    }
}
