//! Offline exchange: `registry export` writes a bundle of signed envelopes, `registry import` reads one and feeds it
//! to [`registry::Replica::receive`], the same acceptance path the network uses, in batches that are durable before
//! they are reported.

use registry::bundle::{self, Entry};
use registry::{ChangeHash, Envelope, Reason};
use serde::Serialize;

use crate::{Error, Node};

/// Envelopes decided and persisted per batch during an import.
pub const IMPORT_BATCH: usize = 4096;

/// One rejected entry of an import.
#[derive(Clone, Debug, Serialize)]
pub struct ImportedRejection {
    /// Change hash, or `#INDEX` for bytes that did not decode.
    pub change: String,
    /// Reason code.
    pub reason: String,
    /// Explanation.
    pub detail: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ImportReport {
    /// Changes newly accepted.
    pub accepted: usize,
    /// Changes rejected, with reasons.
    pub rejected: Vec<ImportedRejection>,
    /// Changes this replica already held.
    pub duplicates: usize,
    /// Changes waiting for dependencies after the import.
    pub pending: usize,
    /// Federation adopted by this import, if the replica had none.
    pub adopted_federation: Option<String>,
    /// Sorted heads after the import.
    pub heads: Vec<String>,
}

impl Node {
    /// Imports a bundle; `on_batch` is called after each durable batch with the hashes it accepted and the
    /// rejections, so the caller can report them as they become true.
    pub fn import(
        &mut self,
        path: &str,
        bytes: &[u8],
        mut on_batch: impl FnMut(&[ChangeHash], &[ImportedRejection]),
    ) -> Result<ImportReport, Error> {
        let bundle = bundle::read(bytes).map_err(|source| Error::Bundle {
            path: path.to_owned(),
            source,
        })?;
        let mut report = ImportReport::default();
        let mut envelopes = Vec::new();
        for entry in bundle.entries {
            match entry {
                Entry::Envelope(envelope) => envelopes.push(*envelope),
                Entry::Malformed {
                    index,
                    offset,
                    problem,
                } => report.rejected.push(ImportedRejection {
                    change: format!("#{index}"),
                    reason: Reason::Malformed.code().into(),
                    detail: format!("entry {index} at byte {offset}: {problem}"),
                }),
            }
        }
        on_batch(&[], &report.rejected);
        if !self.admit_federation(&bundle.federation, &envelopes, &mut report)? {
            let rejections: Vec<ImportedRejection> = envelopes
                .iter()
                .map(|e| ImportedRejection {
                    change: e.hash().to_string(),
                    reason: Reason::WrongFederation.code().into(),
                    detail: format!(
                        "bundle is of federation {}, this replica belongs to {}",
                        bundle.federation,
                        self.replica
                            .federation()
                            .map(|f| f.to_hex())
                            .unwrap_or_default()
                    ),
                })
                .collect();
            on_batch(&[], &rejections);
            report.rejected.extend(rejections);
        } else {
            self.import_envelopes(envelopes, &mut report, &mut on_batch)?;
        }
        self.store.maybe_snapshot(&self.replica, false)?;
        report.pending = self.replica.pending_len();
        report.heads = self.heads();
        Ok(report)
    }

    /// Returns whether the bundle's federation is (now) this replica's; adopts it when the replica has none and the
    /// bundle holds its genesis.
    fn admit_federation(
        &mut self,
        federation: &registry::FederationId,
        envelopes: &[Envelope],
        report: &mut ImportReport,
    ) -> Result<bool, Error> {
        match self.replica.federation() {
            Some(current) => Ok(current == *federation),
            None => {
                if !envelopes.iter().any(|e| e.hash().0 == federation.0) {
                    return Err(Error::NoGenesis(format!(
                        "this replica belongs to no federation and the bundle does not hold the genesis of {federation}"
                    )));
                }
                self.replica.adopt(*federation)?;
                self.store.set_federation(*federation)?;
                report.adopted_federation = Some(federation.to_hex());
                tracing::info!(%federation, "adopted federation from bundle");
                Ok(true)
            }
        }
    }

    fn import_envelopes(
        &mut self,
        envelopes: Vec<Envelope>,
        report: &mut ImportReport,
        on_batch: &mut impl FnMut(&[ChangeHash], &[ImportedRejection]),
    ) -> Result<(), Error> {
        let mut iter = envelopes.into_iter().peekable();
        while iter.peek().is_some() {
            let batch: Vec<Envelope> = iter.by_ref().take(IMPORT_BATCH).collect();
            let receipt = self.replica.receive(batch)?;
            self.store.commit(&receipt)?;
            self.reissue_withdrawn(&receipt)?;
            let accepted: Vec<ChangeHash> = receipt.accepted.iter().map(Envelope::hash).collect();
            let rejected: Vec<ImportedRejection> = receipt
                .rejected
                .iter()
                .map(|r| ImportedRejection {
                    change: r.change.to_string(),
                    reason: r.reason.code().into(),
                    detail: r.detail.clone(),
                })
                .collect();
            on_batch(&accepted, &rejected);
            report.accepted += accepted.len();
            report.duplicates += receipt.duplicates;
            report.rejected.extend(rejected);
        }
        Ok(())
    }

    /// A bundle of every held envelope (accepted, and excluded: equivocation proofs and changes a revocation took
    /// out travel too, so every replica decides the same), or of those not covered by `since` heads.
    pub fn export(&self, since: Option<&[ChangeHash]>) -> Result<Vec<u8>, Error> {
        let federation = self
            .replica
            .federation()
            .ok_or(registry::Error::NoFederation)?;
        let envelopes: Vec<Vec<u8>> = match since {
            None => {
                let mut out = Vec::new();
                for entry in self.store.held_envelopes() {
                    let (hash, bytes) = entry?;
                    if self.replica.holds(&hash) {
                        out.push(bytes);
                    }
                }
                out
            }
            Some(heads) => {
                let mut out = Vec::new();
                let excluded: Vec<ChangeHash> = self
                    .replica
                    .excluded()
                    .map(|(hash, _)| *hash)
                    .filter(|hash| !heads.contains(hash))
                    .collect();
                for hash in self
                    .replica
                    .changes_since(heads)
                    .into_iter()
                    .chain(excluded)
                {
                    if let Some(bytes) = self.store.envelope_bytes(&hash)? {
                        out.push(bytes);
                    }
                }
                out
            }
        };
        Ok(bundle::write(
            &federation,
            envelopes.iter().map(Vec::as_slice),
        ))
    }
}
