//! This node's scorecards: the snapshot it publishes when its key is a pod member's, and the board of the pods'
//! snapshots it has accepted (persisted in the store, restored under the same rules when the node opens).

use model::okr::Quarter;

use crate::{Error, Node};

impl Node {
    /// The board of accepted snapshots, restored from the store on first use (a snapshot whose publisher has been
    /// revoked since is not restored).
    pub fn scorecards(&mut self, now_ms: i64) -> &scorecard::Board {
        self.board(now_ms)
    }

    fn board(&mut self, now_ms: i64) -> &mut scorecard::Board {
        if self.board.is_none() {
            let view = self.shared_view();
            let mut board = scorecard::Board::new();
            match self.store.scorecards() {
                Ok(kept) => {
                    for bytes in kept {
                        board.restore(&bytes, &view, now_ms);
                    }
                }
                Err(error) => tracing::warn!(%error, "reading the kept scorecards failed"),
            }
            self.board = Some(board);
        }
        self.board.get_or_insert_with(scorecard::Board::new)
    }

    /// Offers a published snapshot: kept (and persisted) when valid and newer than the pod's held one; the pod it
    /// describes.
    pub fn offer_scorecard(&mut self, bytes: &[u8], now_ms: i64) -> Result<String, OfferError> {
        let view = self.shared_view();
        let held = self.board(now_ms).offer(bytes, &view, now_ms)?;
        let (pod, publisher) = (held.snapshot.pod.clone(), held.publisher.clone());
        self.store
            .put_scorecard(&pod, &publisher, bytes)
            .map_err(|e| OfferError::Store(Box::new(Error::Store(e))))?;
        Ok(pod)
    }

    /// This pod's tier-2 snapshot as of `now_ms` (its quarter, its key results, experiments, budget and its own
    /// quarantine count); `None` unless this node's key is a live pod member's.
    pub fn own_scorecard(&mut self, now_ms: i64) -> Option<scorecard::Snapshot> {
        let pod = self.own_pod()?;
        let quarter: Quarter = model::time::quarter_of_ms(now_ms).parse().ok()?;
        let incidents = self.quarantined_count().map_or(0, |n| n as u64);
        let pulse = self.pulse(&quarter.to_string()).unwrap_or_else(|error| {
            tracing::warn!(%error, "reading the pulse answers failed");
            scorecard::Pulse::default()
        });
        let view = self.shared_view();
        let governance = self.governance();
        Some(scorecard::pod_snapshot(
            &view,
            &governance,
            &pod,
            quarter,
            now_ms,
            incidents,
            pulse,
        ))
    }

    /// Records a pod member's answer (0 to 10) to this quarter's autonomy pulse ("how free is this pod to run its own
    /// growth experiments?") on this node, replacing an earlier answer of the same `respondent` this quarter; the
    /// pod's counts as they now stand. Answers never leave the node: its scorecard publishes the counts.
    pub fn answer_pulse(
        &mut self,
        respondent: &str,
        score: u8,
        now_ms: i64,
    ) -> Result<(String, scorecard::Pulse), PulseError> {
        if score > 10 {
            return Err(PulseError::Score(score));
        }
        let Some(pod) = self.own_pod() else {
            return Err(PulseError::NotAPod);
        };
        let quarter = model::time::quarter_of_ms(now_ms);
        self.store.put_pulse(&quarter, respondent, score)?;
        tracing::info!(%pod, %quarter, "pulse answer recorded");
        Ok((quarter.clone(), self.pulse(&quarter)?))
    }

    /// This node's pulse answers of `quarter`, counted.
    pub fn pulse(&self, quarter: &str) -> Result<scorecard::Pulse, Error> {
        Ok(scorecard::Pulse::of(self.store.pulse(quarter)?))
    }

    /// Signs this pod's snapshot and keeps it on its own board: the bytes to publish.
    pub fn sign_scorecard(
        &mut self,
        snapshot: &scorecard::Snapshot,
        now_ms: i64,
    ) -> Result<Vec<u8>, OfferError> {
        let bytes = scorecard::sign(snapshot, &self.keypair);
        self.offer_scorecard(&bytes, now_ms)?;
        Ok(bytes)
    }
}

/// Why a pulse answer was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum PulseError {
    /// Outside 0 to 10.
    #[error("--score: {0} is not an answer; answer 0 (not at all free) to 10 (entirely free)")]
    Score(u8),
    /// This node's key is not a live pod member's.
    #[error(
        "the pulse is answered by a pod's members from the pod's node; this node's key is not a live pod member's"
    )]
    NotAPod,
    /// The store failed.
    #[error(transparent)]
    Store(Box<Error>),
}

impl From<Error> for PulseError {
    fn from(error: Error) -> Self {
        Self::Store(Box::new(error))
    }
}

impl From<store::Error> for PulseError {
    fn from(error: store::Error) -> Self {
        Self::from(Error::Store(error))
    }
}

/// Why an offered snapshot was not kept.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The snapshot broke a rule.
    #[error(transparent)]
    Refused(#[from] scorecard::Refusal),
    /// It was valid but could not be persisted.
    #[error(transparent)]
    Store(Box<Error>),
}

#[cfg(test)]
mod tests {
    use identity::Keypair;
    use model::Role;
    use registry::Op;

    use crate::Node;

    const NOW: i64 = 1_790_000_000_000;

    /// A council node (this one) that admitted the pod `emea`, whose key is returned.
    fn council_with_pod(dir: &std::path::Path) -> (Node, Keypair) {
        let mut node = Node::open(dir).expect("opens");
        node.create_federation("Acme", NOW).expect("founded");
        let pod = Keypair::from_seed([7; 32]);
        let member: model::Member = serde_json::from_value(serde_json::json!({
            "public_key": pod.public().to_hex(), "name": "emea", "role": Role::Pod, "scope": "emea",
            "admitted_by": node.keypair().public().to_hex(), "admitted_at_ms": NOW, "revoked": false,
        }))
        .expect("a member");
        node.write(&Op::AddMember(member), NOW)
            .expect("the council admits");
        (node, pod)
    }

    fn snapshot(node: &Node, as_of_ms: i64, experiments: f64) -> scorecard::Snapshot {
        scorecard::Snapshot {
            federation: node.view().federation.expect("founded").id,
            pod: "emea".into(),
            quarter: "2026Q4".into(),
            as_of_ms,
            metrics: vec![scorecard::Metric {
                name: "experiments".into(),
                value: Some(experiments),
                target: None,
                interval: None,
                chance_to_win: None,
            }],
            dashboard: scorecard::Dashboard::default(),
        }
    }

    #[test]
    fn kept_snapshots_survive_a_restart_and_refused_ones_are_never_stored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut node, pod) = council_with_pod(dir.path());
        let old = scorecard::sign(&snapshot(&node, NOW - 1_000, 1.0), &pod);
        let new = scorecard::sign(&snapshot(&node, NOW, 2.0), &pod);
        assert_eq!(node.offer_scorecard(&new, NOW).expect("kept"), "emea");
        // Replayed, and an older one arriving late: refused, the newer one stays.
        for bytes in [&new, &old] {
            let error = node.offer_scorecard(bytes, NOW).expect_err("stale");
            assert!(matches!(
                error,
                super::OfferError::Refused(scorecard::Refusal::Stale { .. })
            ));
        }
        // Forged: the council's key signing the pod's numbers.
        let forged = scorecard::sign(&snapshot(&node, NOW + 1, 9.0), node.keypair());
        assert!(node.offer_scorecard(&forged, NOW).is_err());
        drop(node);

        let mut reopened = Node::open(dir.path()).expect("reopens");
        let board = reopened.scorecards(NOW);
        let held = &board.held()["emea"][&pod.public().to_hex()];
        assert_eq!(
            held.bytes, new,
            "the newest valid snapshot, and only it, was kept"
        );
        assert_eq!(held.snapshot.metrics[0].value, Some(2.0));
    }
}
