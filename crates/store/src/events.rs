//! Raw events of the pod: accepted track events and exposures, laid out for analysis scans and keyed so that
//! ingesting an event twice stores it once, and the quarantine of rejected lines.
//!
//! # Layout (sled trees)
//! - `events`: `event \0 user \0 timestamp (8, order-preserving) id (8)` -> properties (JSON object bytes).
//!   One prefix scan per metric event yields users in byte order and each user's events in time order.
//! - `exposures`: `experiment \0 user \0 timestamp id` -> variation id. One prefix scan per experiment.
//! - `quarantine`: hash of the raw line (16 bytes) -> [`QuarantineEntry`].
//! - `message_ids`: the first 8 bytes of an event id -> the event's key, for events that arrived through the Segment
//!   API ([`NewEvent::unique_message`]): there a retry may carry another clock-skew-corrected timestamp, so the key
//!   alone would not find it.
//!
//! Event and user names never contain NUL (ingestion rejects them), so the separators are unambiguous.
//!
//! Idempotency lives in the key: its last 8 bytes are the event id (a hash of `messageId`, else of the content), so
//! the same event ingested again finds its key and is skipped, and a crash mid-batch can only leave events that a
//! retry skips. A `messageId` therefore deduplicates within one (event, user, timestamp), which is what a file
//! ingested again holds; a separate id index costs a second sled write per event (see docs/analysis.md), so only
//! events that need it (Segment API events, whose timestamps are corrected for clock skew) are indexed.

use sled::IVec;

use crate::{Error, Store};

/// Bytes of the id suffix of an event key.
const KEY_ID_BYTES: usize = 8;
/// Bytes of the timestamp in an event key.
const KEY_TIME_BYTES: usize = 8;

/// An accepted event, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// Event name (for an exposure, the experiment id).
    pub event: String,
    /// `userId`, else `anonymousId`.
    pub user: String,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// Idempotency id.
    pub id: [u8; 16],
    /// What is stored: properties JSON for an event, the variation id for an exposure.
    pub value: Vec<u8>,
    /// Whether this is an exposure (`Experiment Viewed`).
    pub exposure: bool,
    /// Whether its id alone identifies it (a Segment `messageId` whose event time may differ between retries):
    /// then an event with the same id is a duplicate whatever its key.
    pub unique_message: bool,
}

/// How many events of a batch were new and how many were already stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Newly stored.
    pub accepted: u64,
    /// Already stored (same id), skipped.
    pub duplicates: u64,
}

/// A stored event or exposure as a scan yields it.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    key: IVec,
    value: IVec,
    prefix_len: usize,
}

impl StoredEvent {
    /// The user id bytes.
    pub fn user(&self) -> &[u8] {
        &self.key[self.prefix_len..self.key.len() - KEY_TIME_BYTES - KEY_ID_BYTES - 1]
    }

    /// Unix milliseconds.
    pub fn timestamp_ms(&self) -> i64 {
        let end = self.key.len() - KEY_ID_BYTES;
        let bytes: [u8; 8] = self.key[end - KEY_TIME_BYTES..end]
            .try_into()
            .expect("keys are built with an 8-byte timestamp");
        decode_time(bytes)
    }

    /// Properties JSON (events) or variation id (exposures).
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

/// A rejected line kept for the user to inspect and retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// Key in the quarantine tree (hash of the raw line).
    pub key: [u8; 16],
    /// File (or `POST /v1/events`, or `-`) it came from.
    pub source: String,
    /// Line number in that source, from 1.
    pub line: u64,
    /// Why it was rejected.
    pub reason: String,
    /// When it was quarantined (Unix ms).
    pub at_ms: i64,
    /// The line, unchanged.
    pub raw: Vec<u8>,
}

impl QuarantineEntry {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + self.reason.len() + 64);
        put_bytes(&mut out, self.source.as_bytes());
        out.extend_from_slice(&self.line.to_be_bytes());
        put_bytes(&mut out, self.reason.as_bytes());
        out.extend_from_slice(&self.at_ms.to_be_bytes());
        out.extend_from_slice(&self.raw);
        out
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<Self, Error> {
        let corrupt = || Error::Corrupt {
            what: "quarantine entry",
            detail: format!("{} bytes do not decode", bytes.len()),
        };
        let mut rest = bytes;
        let source = take_bytes(&mut rest).ok_or_else(corrupt)?;
        let line = take_u64(&mut rest).ok_or_else(corrupt)?;
        let reason = take_bytes(&mut rest).ok_or_else(corrupt)?;
        let at_ms = take_u64(&mut rest).ok_or_else(corrupt)? as i64;
        Ok(Self {
            key: key.try_into().map_err(|_| corrupt())?,
            source: String::from_utf8_lossy(source).into_owned(),
            line,
            reason: String::from_utf8_lossy(reason).into_owned(),
            at_ms,
            raw: rest.to_vec(),
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_u64(rest: &mut &[u8]) -> Option<u64> {
    let (head, tail) = rest.split_first_chunk::<8>()?;
    *rest = tail;
    Some(u64::from_be_bytes(*head))
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (head, tail) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*head) as usize;
    if tail.len() < len {
        return None;
    }
    let (bytes, tail) = tail.split_at(len);
    *rest = tail;
    Some(bytes)
}

/// Maps a signed time to bytes that sort like the numbers.
fn encode_time(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_time(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}

/// The key of an event: `name \0 user \0 time id`.
pub fn event_key(name: &str, user: &str, timestamp_ms: i64, id: &[u8; 16]) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + user.len() + 2 + KEY_TIME_BYTES + KEY_ID_BYTES);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(user.as_bytes());
    key.push(0);
    key.extend_from_slice(&encode_time(timestamp_ms));
    key.extend_from_slice(&id[..KEY_ID_BYTES]);
    key
}

/// The raw-event trees of a store.
pub struct Events {
    db: sled::Db,
    path: String,
    events: sled::Tree,
    exposures: sled::Tree,
    quarantine: sled::Tree,
    message_ids: sled::Tree,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("path", &self.path).finish()
    }
}

impl Store {
    /// The raw-event trees of this database.
    pub fn events(&self) -> Result<Events, Error> {
        let tree = |name: &str| self.sled(self.db.open_tree(name));
        Ok(Events {
            events: tree("events")?,
            exposures: tree("exposures")?,
            quarantine: tree("quarantine")?,
            message_ids: tree("message_ids")?,
            db: self.db.clone(),
            path: self.path.clone(),
        })
    }
}

impl Events {
    fn sled<T>(&self, result: Result<T, sled::Error>) -> Result<T, Error> {
        result.map_err(|source| Error::Sled {
            path: self.path.clone(),
            source,
        })
    }

    /// Stores a batch of accepted events, skipping those already stored (same key, hence same id) or repeated in
    /// the batch. Not durable until [`Events::flush`].
    pub fn write(&self, batch: &[NewEvent]) -> Result<WriteCounts, Error> {
        let mut counts = WriteCounts::default();
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        let mut seen_ids = std::collections::HashSet::new();
        let mut events = sled::Batch::default();
        let mut exposures = sled::Batch::default();
        let mut message_ids = sled::Batch::default();
        for event in batch {
            let key = event_key(&event.event, &event.user, event.timestamp_ms, &event.id);
            let tree = if event.exposure {
                &self.exposures
            } else {
                &self.events
            };
            if seen.contains(&key) || self.sled(tree.contains_key(&key))? {
                counts.duplicates += 1;
                continue;
            }
            if event.unique_message {
                let id = &event.id[..KEY_ID_BYTES];
                if !seen_ids.insert(id) || self.sled(self.message_ids.contains_key(id))? {
                    counts.duplicates += 1;
                    continue;
                }
                message_ids.insert(id, &key[..]);
            }
            if event.exposure {
                exposures.insert(&key[..], &event.value[..]);
            } else {
                events.insert(&key[..], &event.value[..]);
            }
            seen.insert(key);
            counts.accepted += 1;
        }
        // The index last: a crash before it leaves the event stored and findable by its key (a retry with the same
        // timestamp is still a duplicate), never an index entry without its event.
        self.sled(self.events.apply_batch(events))?;
        self.sled(self.exposures.apply_batch(exposures))?;
        self.sled(self.message_ids.apply_batch(message_ids))?;
        Ok(counts)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), Error> {
        self.sled(self.db.flush())?;
        Ok(())
    }

    /// Events named `event`, by user (byte order) then time.
    pub fn scan_event(&self, event: &str) -> impl Iterator<Item = Result<StoredEvent, Error>> + '_ {
        scan(self, &self.events, event)
    }

    /// Exposures to `experiment`, by user (byte order) then time.
    pub fn scan_exposures(
        &self,
        experiment: &str,
    ) -> impl Iterator<Item = Result<StoredEvent, Error>> + '_ {
        scan(self, &self.exposures, experiment)
    }

    /// Every stored event, then every exposure, each tree in key order (by name, user, time): who was active in
    /// a period, for key results.
    pub fn scan_all(&self) -> impl Iterator<Item = Result<StoredEvent, Error>> + '_ {
        [&self.events, &self.exposures]
            .into_iter()
            .flat_map(move |tree| tree.iter().map(move |item| stored(self, item, None)))
    }

    /// The names under which events are stored (exposures: the experiments), each once, in byte order: one seek
    /// per name, not a scan of every event.
    pub fn names(&self, exposures: bool) -> Result<Vec<String>, Error> {
        let tree = if exposures {
            &self.exposures
        } else {
            &self.events
        };
        let mut names = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        while let Some(item) = tree.range(from.clone()..).next() {
            let (key, _) = self.sled(item)?;
            let Some(end) = key.iter().position(|b| *b == 0) else {
                break;
            };
            names.push(String::from_utf8_lossy(&key[..end]).into_owned());
            // The first key after every `name \0 ...`: `name \1`.
            from = key[..end].to_vec();
            from.push(1);
        }
        Ok(names)
    }

    /// Deletes the events stored under `name` (an experiment's exposures when `exposures`) dated before
    /// `before_ms`; how many. Durable once flushed.
    pub fn purge(&self, name: &str, before_ms: i64, exposures: bool) -> Result<u64, Error> {
        let tree = if exposures {
            &self.exposures
        } else {
            &self.events
        };
        let mut batch = sled::Batch::default();
        let mut ids = sled::Batch::default();
        let mut count = 0u64;
        for item in scan(self, tree, name) {
            let event = item?;
            if event.timestamp_ms() < before_ms {
                let id = &event.key[event.key.len() - KEY_ID_BYTES..];
                if self
                    .sled(self.message_ids.get(id))?
                    .is_some_and(|k| k == event.key)
                {
                    ids.remove(id);
                }
                batch.remove(event.key.clone());
                count += 1;
            }
        }
        self.sled(tree.apply_batch(batch))?;
        self.sled(self.message_ids.apply_batch(ids))?;
        Ok(count)
    }

    /// Number of stored events, and of stored exposures.
    pub fn counts(&self) -> (usize, usize) {
        (self.events.len(), self.exposures.len())
    }

    /// Number of stored events and exposures.
    pub fn len(&self) -> usize {
        self.events.len() + self.exposures.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds lines to the quarantine (a line already there is replaced, so re-ingesting a file adds nothing).
    pub fn quarantine(&self, entries: &[QuarantineEntry]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&entry.key[..], entry.encode());
        }
        self.sled(self.quarantine.apply_batch(batch))
    }

    /// Every quarantined line, by source then line number.
    pub fn quarantined(&self) -> Result<Vec<QuarantineEntry>, Error> {
        let mut entries = Vec::new();
        for item in self.quarantine.iter() {
            let (key, value) = self.sled(item)?;
            entries.push(QuarantineEntry::decode(&key, &value)?);
        }
        entries.sort_by(|a, b| (&a.source, a.line, a.at_ms).cmp(&(&b.source, b.line, b.at_ms)));
        Ok(entries)
    }

    /// How many lines are quarantined (nothing decoded).
    pub fn quarantined_count(&self) -> usize {
        self.quarantine.len()
    }

    /// Removes lines from the quarantine.
    pub fn release(&self, keys: &[[u8; 16]]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(&key[..]);
        }
        self.sled(self.quarantine.apply_batch(batch))
    }
}

fn scan<'a>(
    events: &'a Events,
    tree: &'a sled::Tree,
    name: &str,
) -> impl Iterator<Item = Result<StoredEvent, Error>> + 'a {
    let mut prefix = name.as_bytes().to_vec();
    prefix.push(0);
    let prefix_len = prefix.len();
    tree.scan_prefix(prefix)
        .map(move |item| stored(events, item, Some(prefix_len)))
}

/// A scanned entry; `prefix_len` is the length of `name \0`, found in the key when not known.
fn stored(
    events: &Events,
    item: Result<(IVec, IVec), sled::Error>,
    prefix_len: Option<usize>,
) -> Result<StoredEvent, Error> {
    let (key, value) = events.sled(item)?;
    let corrupt = |detail: String| Error::Corrupt {
        what: "event key",
        detail,
    };
    let prefix_len = match prefix_len {
        Some(len) => len,
        None => {
            key.iter()
                .position(|&b| b == 0)
                .ok_or_else(|| corrupt("no NUL after the name".into()))?
                + 1
        }
    };
    if key.len() < prefix_len + 1 + KEY_TIME_BYTES + KEY_ID_BYTES {
        return Err(corrupt(format!("{} bytes is too short", key.len())));
    }
    Ok(StoredEvent {
        key,
        value,
        prefix_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, user: &str, ts: i64, id: u8) -> NewEvent {
        NewEvent {
            event: name.into(),
            user: user.into(),
            timestamp_ms: ts,
            id: [id; 16],
            value: b"{}".to_vec(),
            exposure: false,
            unique_message: false,
        }
    }

    #[test]
    fn scans_are_by_user_then_time_and_ids_deduplicate() {
        let store = Store::in_memory().expect("memory store");
        let events = store.events().expect("trees");
        let batch = [
            event("Order", "u2", 5, 1),
            event("Order", "u1", 9, 2),
            event("Order", "u1", -3, 3),
            event("Order", "u1", -3, 3),
            event("Orders", "u0", 1, 4),
        ];
        let counts = events.write(&batch).expect("write");
        assert_eq!(
            counts,
            WriteCounts {
                accepted: 4,
                duplicates: 1
            }
        );
        let again = events.write(&batch[..2]).expect("write");
        assert_eq!(again.duplicates, 2);
        let scanned: Vec<(Vec<u8>, i64)> = events
            .scan_event("Order")
            .map(|e| e.map(|e| (e.user().to_vec(), e.timestamp_ms())))
            .collect::<Result<_, _>>()
            .expect("scan");
        assert_eq!(
            scanned,
            vec![
                (b"u1".to_vec(), -3),
                (b"u1".to_vec(), 9),
                (b"u2".to_vec(), 5)
            ]
        );
    }

    #[test]
    fn a_unique_message_is_a_duplicate_at_any_timestamp_until_it_is_purged() {
        let store = Store::in_memory().expect("memory store");
        let events = store.events().expect("trees");
        let unique = |ts: i64| NewEvent {
            unique_message: true,
            ..event("Order", "u1", ts, 9)
        };
        assert_eq!(events.write(&[unique(1_000)]).expect("write").accepted, 1);
        // A retry whose clock-skew correction moved it by a few milliseconds, alone and within one batch.
        assert_eq!(events.write(&[unique(1_004)]).expect("write").duplicates, 1);
        let both = events.write(&[unique(990), unique(991)]).expect("write");
        assert_eq!((both.accepted, both.duplicates), (0, 2));
        // Another id is another event; a plain event is not looked up in the index.
        assert_eq!(
            events
                .write(&[NewEvent {
                    unique_message: true,
                    ..event("Order", "u1", 1_004, 8)
                }])
                .expect("write")
                .accepted,
            1
        );
        assert_eq!(events.len(), 2);
        // Purged with its event: the id no longer hides a new event.
        assert_eq!(events.purge("Order", 2_000, false).expect("purge"), 2);
        assert_eq!(events.write(&[unique(3_000)]).expect("write").accepted, 1);
    }

    #[test]
    fn scan_all_reads_every_event_then_every_exposure() {
        let store = Store::in_memory().expect("memory store");
        let events = store.events().expect("trees");
        let exposure = NewEvent {
            exposure: true,
            ..event("checkout", "u9", 7, 5)
        };
        let batch = [event("Order", "u2", 5, 1), event("A", "u1", 9, 2), exposure];
        events.write(&batch).expect("write");
        let scanned: Vec<(Vec<u8>, i64)> = events
            .scan_all()
            .map(|e| e.map(|e| (e.user().to_vec(), e.timestamp_ms())))
            .collect::<Result<_, _>>()
            .expect("scan");
        assert_eq!(
            scanned,
            vec![
                (b"u1".to_vec(), 9),
                (b"u2".to_vec(), 5),
                (b"u9".to_vec(), 7)
            ]
        );
    }

    #[test]
    fn quarantine_round_trips() {
        let store = Store::in_memory().expect("memory store");
        let events = store.events().expect("trees");
        let entry = QuarantineEntry {
            key: [7; 16],
            source: "a.jsonl".into(),
            line: 3,
            reason: "unknown event `X`".into(),
            at_ms: 42,
            raw: b"{\"event\":\"X\"}".to_vec(),
        };
        events
            .quarantine(&[entry.clone(), entry.clone()])
            .expect("quarantine");
        assert_eq!(events.quarantined().expect("list"), vec![entry.clone()]);
        events.release(&[entry.key]).expect("release");
        assert!(events.quarantined().expect("list").is_empty());
    }
}
