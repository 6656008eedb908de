//! Persistence of a node's registry in sled: accepted envelopes in acceptance order, rejections, envelopes waiting
//! for dependencies, and a compacted snapshot so that opening a replica with many changes loads documents instead
//! of replaying every change.
//!
//! # Layout (sled trees)
//! - `envelopes`: change hash -> envelope bytes, as received (every held change: accepted or excluded)
//! - `log`: sequence number (u64 big-endian) -> change hash, in the order they were first held
//! - `own_ops`: change hash -> the typed operation (JSON) this node's key wrote as that change, so the node can
//!   write it again if a removal takes the change out (local only, never replicated)
//! - `quarantine`: key -> bytes of an entry that did not decode when the store was opened (kept for an operator,
//!   never applied)
//! - `rejected`: change hash -> reason code
//! - `pending`: change hash -> envelope bytes (waiting for dependencies)
//! - `meta`: `snapshot` -> [`registry::ReplicaState`] bytes; `snapshot_seq` -> last log entry it covers;
//!   `purged_events`/`purged_at_ms` (retention); `calls/<type>` (Segment calls counted, not stored);
//!   `features_state` (when the features served to app SDKs last changed, and their digest)
//! - `sources`, `pulse`, `scorecards`: this node's app sources, pulse answers, and the scorecard snapshots accepted
//!
//! Durability: [`Store::commit`] writes a receipt and flushes before it returns, so whatever a command reports as
//! accepted survives a kill -9. [`Store::commit_deferred`] leaves the flush to the caller (a running node flushes
//! changes received from peers once per tick: a crash loses at most that tick's received changes, which the peers
//! still hold and send again). Only this crate imports sled.

pub mod events;

use std::path::Path;

use registry::{ChangeHash, Envelope, Reason, Receipt, Replica, ReplicaState};

/// Take a new snapshot once this many changes were accepted since the last one.
pub const SNAPSHOT_EVERY_CHANGES: u64 = 10_000;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed (I/O, corruption, or the database is locked by another process).
    #[error("database {path}: {source}")]
    Sled {
        /// Database directory.
        path: String,
        /// The sled error.
        source: sled::Error,
    },
    /// A stored value does not decode.
    #[error("stored {what} is corrupt: {detail}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// The registry refused to load the stored state.
    #[error(transparent)]
    Registry(#[from] registry::Error),
}

impl Error {
    /// Whether another holder (a process, or a just-dropped handle in this one) has the database's file lock.
    /// sled reports it only as an I/O error whose message says so.
    pub fn is_locked(&self) -> bool {
        matches!(self, Error::Sled { source: sled::Error::Io(io), .. }
            if io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock"))
    }
}

/// How long [`Store::open`] waits for sled's file lock before reporting it held.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// The node's database.
pub struct Store {
    db: sled::Db,
    path: String,
    envelopes: sled::Tree,
    log: sled::Tree,
    rejected: sled::Tree,
    pending: sled::Tree,
    meta: sled::Tree,
    quarantine: sled::Tree,
    own_ops: sled::Tree,
    /// `pod/publisher` -> the newest valid scorecard snapshot of that pod's node, as published (see the `scorecard`
    /// crate).
    scorecards: sled::Tree,
    /// `quarter \0 respondent` -> this pod's autonomy pulse answer (0 to 10); never replicated, published only as
    /// counts.
    pulse: sled::Tree,
    /// App source name -> its keys (JSON, see `node::sources`); this node's only, never replicated.
    sources: sled::Tree,
    /// Entries in `rejected` (an upper bound: overwrites count twice), kept to bound the tree.
    rejected_count: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database in `dir`.
    ///
    /// sled releases its file lock when the last of its background threads lets go of the database, which can be
    /// shortly after the `Db` is dropped; a reopen in the same process therefore waits up to [`LOCK_WAIT`] for the
    /// lock before reporting it held ([`Error::is_locked`]).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.display().to_string();
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .open()
            {
                Ok(db) => break db,
                Err(source) => {
                    let error = Error::Sled {
                        path: path.clone(),
                        source,
                    };
                    if !error.is_locked() || std::time::Instant::now() >= deadline {
                        return Err(error);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        };
        Self::from_db(db, path)
    }

    /// An in-memory database (tests and the simulator).
    pub fn in_memory() -> Result<Self, Error> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|source| Error::Sled {
                path: "memory".into(),
                source,
            })?;
        Self::from_db(db, "memory".into())
    }

    fn from_db(db: sled::Db, path: String) -> Result<Self, Error> {
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| Error::Sled {
                path: path.clone(),
                source,
            })
        };
        let rejected = tree("rejected")?;
        Ok(Self {
            rejected_count: std::sync::atomic::AtomicUsize::new(rejected.len()),
            rejected,
            envelopes: tree("envelopes")?,
            log: tree("log")?,
            pending: tree("pending")?,
            meta: tree("meta")?,
            quarantine: tree("quarantine")?,
            own_ops: tree("own_ops")?,
            scorecards: tree("scorecards")?,
            pulse: tree("pulse")?,
            sources: tree("sources")?,
            db,
            path,
        })
    }

    fn sled<T>(&self, result: Result<T, sled::Error>) -> Result<T, Error> {
        result.map_err(|source| Error::Sled {
            path: self.path.clone(),
            source,
        })
    }

    /// Loads the replica: the latest snapshot, then the accepted changes logged after it, then rejections and
    /// pending envelopes.
    pub fn load(&self) -> Result<Replica, Error> {
        let snapshot = self.sled(self.meta.get("snapshot"))?;
        let mut covered = self.snapshot_seq()?;
        let mut replica = match snapshot.map(|bytes| ReplicaState::decode(&bytes)) {
            Some(Ok(replica)) => replica,
            Some(Err(error)) => {
                // An unreadable snapshot costs a full replay of the log, not the store.
                tracing::warn!(%error, "snapshot does not load; replaying every held change");
                covered = None;
                Replica::new()
            }
            None => Replica::new(),
        };
        if let Some(federation) = self.sled(self.meta.get("federation"))? {
            let bytes: [u8; 32] = federation.as_ref().try_into().map_err(|_| Error::Corrupt {
                what: "federation id",
                detail: "not 32 bytes".into(),
            })?;
            replica.adopt(registry::FederationId(bytes))?;
        }
        let mut tail = Vec::new();
        for entry in self.log.range(covered.map_or(0, |s| s + 1).to_be_bytes()..) {
            let (key, hash) = self.sled(entry)?;
            match self.envelope(&hash) {
                Ok(envelope) => tail.push(envelope),
                Err(error) => self.quarantine_entry("log", &key, &hash, &error)?,
            }
        }
        replica.restore(tail)?;
        let mut rejected = Vec::new();
        for entry in self.rejected.iter() {
            let (hash, code) = self.sled(entry)?;
            let (Ok(hash), Some(reason)) = (
                hash_of(&hash),
                Reason::from_code(&String::from_utf8_lossy(&code)),
            ) else {
                self.quarantine_entry("rejected", &hash, &code, &"not a hash and a reason code")?;
                continue;
            };
            rejected.push((hash, reason));
        }
        replica.restore_rejected(rejected);
        let mut pending = Vec::new();
        for entry in self.pending.iter() {
            let (key, bytes) = self.sled(entry)?;
            match decode(&bytes, "pending envelope") {
                Ok(envelope) => pending.push(envelope),
                Err(error) => self.quarantine_entry("pending", &key, &bytes, &error)?,
            }
        }
        let receipt = replica.restore_pending(pending)?;
        if !receipt.accepted.is_empty()
            || !receipt.held.is_empty()
            || !receipt.rejected.is_empty()
            || !receipt.pending_resolved.is_empty()
        {
            self.commit(&receipt)?;
        }
        Ok(replica)
    }

    /// Moves an entry that does not decode out of the way (into `quarantine`), so the store still opens.
    fn quarantine_entry(
        &self,
        tree: &str,
        key: &[u8],
        value: &[u8],
        error: &dyn std::fmt::Display,
    ) -> Result<(), Error> {
        tracing::error!(tree, key = %hex(key), %error, "stored entry does not decode; quarantined, not applied");
        let mut quarantine_key = tree.as_bytes().to_vec();
        quarantine_key.push(b'/');
        quarantine_key.extend_from_slice(key);
        self.sled(self.quarantine.insert(quarantine_key, value))?;
        match tree {
            "pending" => {
                self.sled(self.pending.remove(key))?;
            }
            "rejected" => {
                self.sled(self.rejected.remove(key))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Remembers the operation (as JSON) this node's key wrote as `change`.
    pub fn remember_own_op(&self, change: &ChangeHash, op_json: &[u8]) -> Result<(), Error> {
        self.sled(self.own_ops.insert(change.0, op_json))?;
        Ok(())
    }

    /// The operation this node's key wrote as `change`, if it remembers it; forgets it with `take`.
    pub fn own_op(&self, change: &ChangeHash, take: bool) -> Result<Option<Vec<u8>>, Error> {
        let value = if take {
            self.sled(self.own_ops.remove(change.0))?
        } else {
            self.sled(self.own_ops.get(change.0))?
        };
        Ok(value.map(|v| v.to_vec()))
    }

    /// Keeps `bytes`, the newest valid scorecard snapshot of `pod` published by `publisher` (replacing the one
    /// held).
    pub fn put_scorecard(&self, pod: &str, publisher: &str, bytes: &[u8]) -> Result<(), Error> {
        self.sled(
            self.scorecards
                .insert(format!("{pod}/{publisher}").as_bytes(), bytes),
        )?;
        Ok(())
    }

    /// Adds `count` raw events deleted past their schema's retention at `at_ms` to the running total, durably.
    pub fn record_purge(&self, count: u64, at_ms: i64) -> Result<(), Error> {
        let (total, _) = self.purged()?;
        self.sled(
            self.meta
                .insert("purged_events", &total.saturating_add(count).to_be_bytes()),
        )?;
        self.sled(self.meta.insert("purged_at_ms", &at_ms.to_be_bytes()))?;
        self.flush()
    }

    /// Adds to the running count of Segment calls received by type (`identify`, `page`, `screen`, `group`, `alias`:
    /// the calls no analysis reads, counted so an operator sees they arrive). Durable once flushed.
    pub fn count_calls(
        &self,
        counts: &std::collections::BTreeMap<String, u64>,
    ) -> Result<(), Error> {
        for (kind, count) in counts {
            let key = format!("calls/{kind}");
            self.sled(self.meta.update_and_fetch(key.as_bytes(), |old| {
                let before = old
                    .and_then(|v| <[u8; 8]>::try_from(v).ok())
                    .map_or(0, u64::from_be_bytes);
                Some(before.saturating_add(*count).to_be_bytes().to_vec())
            }))?;
        }
        Ok(())
    }

    /// The Segment calls counted by [`Store::count_calls`], by type.
    pub fn calls(&self) -> Result<std::collections::BTreeMap<String, u64>, Error> {
        let mut counts = std::collections::BTreeMap::new();
        for item in self.meta.scan_prefix(b"calls/") {
            let (key, value) = self.sled(item)?;
            let kind = String::from_utf8_lossy(&key[b"calls/".len()..]).into_owned();
            let count = <[u8; 8]>::try_from(&value[..]).map_or(0, u64::from_be_bytes);
            counts.insert(kind, count);
        }
        Ok(counts)
    }

    /// What [`Store::features_state`] returns, replaced.
    pub fn set_features_state(&self, digest: &[u8], updated_ms: i64) -> Result<(), Error> {
        let value = [&updated_ms.to_be_bytes()[..], digest].concat();
        self.sled(self.meta.insert("features_state", value))?;
        self.flush()
    }

    /// The digest of the feature definitions this node last served and when they last changed (Unix ms).
    pub fn features_state(&self) -> Result<Option<(Vec<u8>, i64)>, Error> {
        Ok(self.sled(self.meta.get("features_state"))?.and_then(|v| {
            let (time, digest) = v.split_first_chunk::<8>()?;
            Some((digest.to_vec(), i64::from_be_bytes(*time)))
        }))
    }

    /// Keeps app source `name` as `record` (replacing it), durably.
    pub fn put_source(&self, name: &str, record: &[u8]) -> Result<(), Error> {
        self.sled(self.sources.insert(name.as_bytes(), record))?;
        self.flush()
    }

    /// The app sources kept, by name.
    pub fn sources(&self) -> Result<Vec<Vec<u8>>, Error> {
        self.sources
            .iter()
            .values()
            .map(|v| self.sled(v).map(|v| v.to_vec()))
            .collect()
    }

    /// Raw events deleted past their retention so far, and when the last purge ran.
    pub fn purged(&self) -> Result<(u64, Option<i64>), Error> {
        let number = |key: &str| -> Result<Option<[u8; 8]>, Error> {
            Ok(self
                .sled(self.meta.get(key))?
                .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok()))
        };
        let total = number("purged_events")?.map_or(0, u64::from_be_bytes);
        let at = number("purged_at_ms")?.map(i64::from_be_bytes);
        Ok((total, at))
    }

    /// Records `respondent`'s pulse answer for `quarter`, replacing an earlier one of theirs (one answer each).
    pub fn put_pulse(&self, quarter: &str, respondent: &str, score: u8) -> Result<(), Error> {
        let key = [quarter.as_bytes(), b"\0", respondent.as_bytes()].concat();
        self.sled(self.pulse.insert(key, &[score]))?;
        self.flush()
    }

    /// The pulse answers of `quarter` (the scores only).
    pub fn pulse(&self, quarter: &str) -> Result<Vec<u8>, Error> {
        let prefix = [quarter.as_bytes(), b"\0"].concat();
        self.pulse
            .scan_prefix(prefix)
            .values()
            .map(|v| self.sled(v).map(|v| v.first().copied().unwrap_or(0)))
            .collect()
    }

    /// The scorecard snapshots kept, as published.
    pub fn scorecards(&self) -> Result<Vec<Vec<u8>>, Error> {
        self.scorecards
            .iter()
            .values()
            .map(|v| self.sled(v).map(|v| v.to_vec()))
            .collect()
    }

    /// Entries quarantined when the store was opened.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    fn envelope(&self, hash: &[u8]) -> Result<Envelope, Error> {
        let bytes = self
            .sled(self.envelopes.get(hash))?
            .ok_or_else(|| Error::Corrupt {
                what: "log",
                detail: format!("logged change {} has no envelope", hex(hash)),
            })?;
        decode(&bytes, "envelope")
    }

    /// Stores the federation id the replica belongs to.
    pub fn set_federation(&self, federation: registry::FederationId) -> Result<(), Error> {
        self.sled(self.meta.insert("federation", &federation.0[..]))?;
        Ok(())
    }

    /// Persists a locally written envelope, durably.
    pub fn commit_written(&self, envelope: &Envelope) -> Result<(), Error> {
        self.append(std::iter::once(envelope))?;
        self.flush()
    }

    /// Persists a receipt (accepted, rejected, pending), durably.
    pub fn commit(&self, receipt: &Receipt) -> Result<(), Error> {
        self.commit_deferred(receipt)?;
        self.flush()
    }

    /// Persists a receipt without waiting for the disk: durable at the next [`Store::flush`] (sled writes in order,
    /// so a crash before it loses a suffix of what was committed, never a middle part).
    pub fn commit_deferred(&self, receipt: &Receipt) -> Result<(), Error> {
        self.append(receipt.to_keep())?;
        let mut rejected = sled::Batch::default();
        // Only decisions about a change are remembered; a refused copy (say, a forged signature) must not block
        // the genuine change when it arrives after a restart. Bounded: a rejection that is not persisted is decided
        // again, identically, if the change comes back.
        let room = registry::MAX_REMEMBERED_REJECTIONS.saturating_sub(
            self.rejected_count
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let recorded: Vec<_> = receipt
            .rejected
            .iter()
            .filter(|r| r.recorded)
            .take(room)
            .collect();
        self.rejected_count
            .fetch_add(recorded.len(), std::sync::atomic::Ordering::Relaxed);
        for rejection in recorded {
            rejected.insert(&rejection.change.0[..], rejection.reason.code().as_bytes());
        }
        self.sled(self.rejected.apply_batch(rejected))?;
        let mut pending = sled::Batch::default();
        for hash in &receipt.pending_resolved {
            pending.remove(&hash.0[..]);
        }
        for rejection in receipt.rejected.iter().filter(|r| r.recorded) {
            pending.remove(&rejection.change.0[..]);
        }
        for envelope in &receipt.pending_added {
            pending.insert(&envelope.hash().0[..], envelope.to_bytes());
        }
        self.sled(self.pending.apply_batch(pending))?;
        Ok(())
    }

    fn append<'a>(&self, held: impl IntoIterator<Item = &'a Envelope>) -> Result<(), Error> {
        let mut envelopes = sled::Batch::default();
        let mut fresh = Vec::new();
        for envelope in held {
            if self.sled(self.envelopes.contains_key(envelope.hash().0))? {
                continue;
            }
            envelopes.insert(&envelope.hash().0[..], envelope.to_bytes());
            fresh.push(envelope);
        }
        if fresh.is_empty() {
            return Ok(());
        }
        self.sled(self.envelopes.apply_batch(envelopes))?;
        let mut log = sled::Batch::default();
        for (seq, envelope) in (self.next_seq()?..).zip(fresh) {
            log.insert(&seq.to_be_bytes()[..], &envelope.hash().0[..]);
        }
        self.sled(self.log.apply_batch(log))?;
        Ok(())
    }

    fn next_seq(&self) -> Result<u64, Error> {
        Ok(match self.sled(self.log.last())? {
            Some((key, _)) => seq_of(&key)? + 1,
            None => 0,
        })
    }

    fn snapshot_seq(&self) -> Result<Option<u64>, Error> {
        self.sled(self.meta.get("snapshot_seq"))?
            .map(|v| seq_of(&v))
            .transpose()
    }

    /// Flushes to disk.
    pub fn flush(&self) -> Result<(), Error> {
        self.sled(self.db.flush())?;
        Ok(())
    }

    /// Number of accepted changes stored.
    pub fn len(&self) -> usize {
        self.log.len()
    }

    /// Whether no change is stored.
    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }

    /// Writes a snapshot of `replica` if enough changes were accepted since the last one (or `force`).
    pub fn maybe_snapshot(&self, replica: &Replica, force: bool) -> Result<bool, Error> {
        let last = match self.sled(self.log.last())? {
            Some((key, _)) => seq_of(&key)?,
            None => return Ok(false),
        };
        let covered = self.snapshot_seq()?;
        let behind = covered.map_or(last + 1, |c| last.saturating_sub(c));
        if behind == 0 || (!force && behind < SNAPSHOT_EVERY_CHANGES) {
            return Ok(false);
        }
        let state = ReplicaState::encode(replica);
        let mut batch = sled::Batch::default();
        batch.insert("snapshot", state);
        batch.insert("snapshot_seq", &last.to_be_bytes()[..]);
        self.sled(self.meta.apply_batch(batch))?;
        self.flush()?;
        tracing::debug!(covered = last + 1, "snapshot written");
        Ok(true)
    }

    /// Every envelope the store keeps, with its hash, in the order first held (each after its dependencies). The
    /// caller filters by what its replica holds now: a change held once may have been refused for good since (an
    /// equivocating chain past its fork).
    pub fn held_envelopes(
        &self,
    ) -> impl Iterator<Item = Result<(ChangeHash, Vec<u8>), Error>> + '_ {
        self.log.iter().map(move |entry| {
            let (_, hash) = self.sled(entry)?;
            let bytes = self
                .sled(self.envelopes.get(&hash))?
                .map(|bytes| bytes.to_vec())
                .ok_or_else(|| Error::Corrupt {
                    what: "log",
                    detail: format!("no envelope for {}", hex(&hash)),
                })?;
            Ok((hash_of(&hash)?, bytes))
        })
    }

    /// The stored envelope of a held change.
    pub fn envelope_bytes(&self, hash: &ChangeHash) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.sled(self.envelopes.get(hash.0))?.map(|b| b.to_vec()))
    }

    /// Disk size of the database, in bytes.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        self.sled(self.db.size_on_disk())
    }
}

fn decode(bytes: &[u8], what: &'static str) -> Result<Envelope, Error> {
    Envelope::from_bytes(bytes).map_err(|e| Error::Corrupt {
        what,
        detail: e.to_string(),
    })
}

fn seq_of(bytes: &[u8]) -> Result<u64, Error> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt {
        what: "sequence number",
        detail: "not 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn hash_of(bytes: &[u8]) -> Result<ChangeHash, Error> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| Error::Corrupt {
        what: "change hash",
        detail: "not 32 bytes".into(),
    })?;
    Ok(ChangeHash(array))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry::Op;

    #[test]
    fn a_held_database_is_reported_locked_and_a_dropped_one_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        for _ in 0..5 {
            let store = Store::open(&db).expect("reopen right after a drop");
            store.meta.insert("k", "v").unwrap();
            drop(store);
        }
        let held = Store::open(&db).unwrap();
        let start = std::time::Instant::now();
        let error = Store::open(&db).expect_err("a second handle cannot take the lock");
        assert!(error.is_locked(), "{error}");
        assert!(start.elapsed() >= LOCK_WAIT);
        drop(held);
    }

    fn founded() -> (Replica, Envelope, identity::Keypair) {
        let key = identity::Keypair::from_seed([7; 32]);
        let mut replica = Replica::new();
        let founder = model::Member {
            public_key: key.public().to_hex(),
            name: "council".into(),
            role: model::Role::Council,
            scope: None,
            admitted_by: key.public().to_hex(),
            admitted_at_ms: 0,
            revoked: false,
        };
        let genesis = replica
            .write(
                &key,
                &Op::Genesis {
                    name: "store test".into(),
                    founder,
                },
                0,
            )
            .expect("founds");
        (replica, genesis, key)
    }

    #[test]
    fn a_store_holding_entries_it_cannot_decode_opens_and_quarantines_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (replica, genesis, _) = founded();
        {
            let store = Store::open(dir.path()).expect("opens");
            store.commit_written(&genesis).expect("commits");
            store
                .set_federation(replica.federation().expect("founded"))
                .expect("stores");
            // What a damaged disk (or a store written by a buggy version) could hold: a logged change whose bytes
            // do not decode, a pending envelope and a rejection that are garbage.
            let bad_hash = [0xEE; 32];
            store
                .envelopes
                .insert(bad_hash, &[1, 2, 3][..])
                .expect("inserts");
            store
                .log
                .insert(1u64.to_be_bytes(), &bad_hash[..])
                .expect("inserts");
            store
                .pending
                .insert([0xDD; 32], &[9; 80][..])
                .expect("inserts");
            store
                .rejected
                .insert([0xCC; 3], &b"nonsense"[..])
                .expect("inserts");
            store.flush().expect("flushes");
        }
        let store = Store::open(dir.path()).expect("reopens");
        let loaded = store
            .load()
            .expect("a damaged entry does not stop the store from opening");
        assert!(
            loaded.contains(&genesis.hash()),
            "what was accepted is kept"
        );
        assert_eq!(store.quarantined(), 3);
        // Opening again finds the damaged pending and rejection entries gone, the log entry still quarantined.
        drop(store);
        let store = Store::open(dir.path()).expect("reopens");
        let loaded = store.load().expect("opens again");
        assert!(loaded.contains(&genesis.hash()));
        assert_eq!(store.pending.len(), 0);
    }

    #[test]
    fn a_pushed_envelope_with_a_damaged_checksum_is_refused_before_it_is_stored() {
        let (_, genesis, _) = founded();
        let mut bytes = genesis.to_bytes();
        // signature(64) | varint length | change: the change's checksum is bytes 4..8 of the change.
        let header = 64 + 2;
        bytes[header + 5] ^= 0x01;
        let error = Envelope::from_bytes(&bytes).expect_err("a damaged checksum is refused");
        assert!(error.to_string().contains("checksum"), "{error}");
        let push = registry::sync::Push::encode_envelopes(vec![genesis.clone()]);
        let position = push
            .windows(8)
            .position(|w| w == &genesis.change.raw_bytes()[..8])
            .expect("the change is in the push");
        let mut damaged = push.clone();
        damaged[position + 5] ^= 0x01;
        assert!(registry::sync::Push::decode(&damaged).is_err());
        assert!(registry::sync::Push::decode(&push).is_ok());
    }
}
