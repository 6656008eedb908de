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
        let pod = held.snapshot.pod.clone();
        self.store
            .put_scorecard(&pod, bytes)
            .map_err(|e| OfferError::Store(Box::new(Error::Store(e))))?;
        Ok(pod)
    }

    /// This pod's tier-2 snapshot as of `now_ms` (its quarter, its key results, experiments, budget and its own
    /// quarantine count); `None` unless this node's key is a live pod member's.
    pub fn own_scorecard(&mut self, now_ms: i64) -> Option<scorecard::Snapshot> {
        let pod = self.own_pod()?;
        let quarter: Quarter = model::time::quarter_of_ms(now_ms).parse().ok()?;
        let incidents = self.quarantined().map_or(0, |q| q.len() as u64);
        let view = self.shared_view();
        let governance = self.governance();
        Some(scorecard::pod_snapshot(
            &view,
            &governance,
            &pod,
            quarter,
            now_ms,
            incidents,
        ))
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
