//! Raw events on a pod's node: ingestion (files, stdin, `POST /v1/events`) through the registry's schemas into the
//! store, the quarantine of rejected lines and its retry, and the analysis of an experiment over what was stored.
//!
//! Every path into the store goes through [`Ingestor`]: lines are checked by `analysis::track`, accepted events are
//! written in batches and flushed before a report is returned, rejected lines go to the quarantine unchanged with
//! their source, line number and reason.

use std::io::BufRead;

use analysis::aggregate::ExposureBuilder;
use analysis::track::{self, Schemas};
use analysis::{Analysis, Options, Plan, Report};
use serde::Serialize;
use store::events::{Events, NewEvent, QuarantineEntry};

use crate::Node;

/// What a retention purge deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Purge {
    /// Events deleted.
    pub total: u64,
    /// By event name (exposures under `Experiment Viewed`).
    pub by_event: std::collections::BTreeMap<String, u64>,
}

/// What a node holds (`events stats`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventStats {
    /// Events and exposures stored.
    pub stored: u64,
    /// Of which events.
    pub events: u64,
    /// Of which exposures.
    pub exposures: u64,
    /// Lines quarantined.
    pub quarantined: u64,
    /// Raw events deleted past their schema's retention, in all.
    pub purged: u64,
    /// When retention last ran (RFC 3339), if ever.
    pub last_purge: Option<String>,
    /// Segment calls received that are counted, not stored (`identify`, `page`, `screen`, `group`, `alias`).
    pub calls: std::collections::BTreeMap<String, u64>,
}

/// Events written to the store in one batch.
pub const BATCH_EVENTS: usize = 8192;
/// Rejections listed in a report (all are quarantined).
pub const MAX_REPORTED_REJECTIONS: usize = 100;
/// Source name of events posted to the API.
pub const API_SOURCE: &str = "POST /v1/events";

/// Errors of ingestion and analysis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Reading the input failed (a truncated gzip stream, a vanished file).
    #[error("{source_name}: reading after line {line}: {error}")]
    Read {
        /// File name, `-` or the API.
        source_name: String,
        /// Last line read completely.
        line: u64,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A posted body is neither a JSON array nor JSON lines.
    #[error("{API_SOURCE}: {0}")]
    Body(String),
    /// The analysis cannot be planned or run.
    #[error(transparent)]
    Analysis(#[from] analysis::Error),
}

/// One rejected line, as reports list them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RejectedLine {
    /// Source (file, `-`, or the API).
    pub file: String,
    /// Line number, from 1 (array index + 1 for a posted array).
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// What an ingestion did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IngestReport {
    /// Events newly stored.
    pub accepted: u64,
    /// Events already stored (same `messageId` or content), skipped.
    pub duplicates: u64,
    /// Lines rejected and quarantined.
    pub quarantined: u64,
    /// The first [`MAX_REPORTED_REJECTIONS`] rejections.
    pub rejected: Vec<RejectedLine>,
    /// Every rejection counted by the kind of its reason ([`reason_kind`]).
    #[serde(default)]
    pub by_reason: std::collections::BTreeMap<String, u64>,
}

/// The kind of a rejection reason: the reason up to its first colon outside backquotes ("unknown event `Signup`",
/// "malformed JSON", "`timestamp`"), what `ingest` summarises by and `quarantine list --reason` matches.
pub fn reason_kind(reason: &str) -> &str {
    let mut quoted = false;
    for (at, c) in reason.char_indices() {
        match c {
            '`' => quoted = !quoted,
            ':' if !quoted => return reason[..at].trim(),
            _ => {}
        }
    }
    reason.trim()
}

/// Kinds a report counts separately; the rest count under [`OTHER_REASONS`].
pub const MAX_REASON_KINDS: usize = 64;
/// Where rejections beyond [`MAX_REASON_KINDS`] kinds are counted.
pub const OTHER_REASONS: &str = "other reasons";

/// Checks and stores lines; [`Ingestor::finish`] flushes and reports.
pub struct Ingestor {
    events: Events,
    schemas: Schemas,
    now_ms: i64,
    batch: Vec<NewEvent>,
    quarantine: Vec<QuarantineEntry>,
    released: Vec<[u8; 16]>,
    report: IngestReport,
    /// Events with a `messageId` are deduplicated by it alone (Segment API calls, whose times are corrected).
    unique_messages: bool,
}

impl std::fmt::Debug for Ingestor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingestor")
            .field("report", &self.report)
            .finish()
    }
}

impl Node {
    /// Starts an ingestion against the schemas approved now; `now_ms` bounds event timestamps.
    pub fn ingestor(&self, now_ms: i64) -> Result<Ingestor, Error> {
        Ok(Ingestor {
            events: self.store.events()?,
            schemas: Schemas::from_view(&self.view()),
            now_ms,
            batch: Vec::with_capacity(BATCH_EVENTS),
            quarantine: Vec::new(),
            released: Vec::new(),
            report: IngestReport::default(),
            unique_messages: false,
        })
    }

    /// Ingests the calls of a Segment request sent with `source`'s write key: `track` calls through the same checks,
    /// quarantine and idempotency as `ingest` (a `messageId` alone identifies a call, since a retry's time may be
    /// corrected differently); the other calls are counted by type. Durable once [`Node::flush_events`] returns.
    pub fn ingest_segment(
        &self,
        source: &crate::sources::Source,
        request: &crate::segment::Request,
        now_ms: i64,
    ) -> Result<IngestReport, Error> {
        let mut ingestor = self.ingestor(now_ms)?;
        ingestor.unique_messages = true;
        let origin = format!("segment:{}", source.name);
        let mut calls = std::collections::BTreeMap::new();
        for message in &request.messages {
            match &message.line {
                Some(line) => ingestor.line(&origin, message.number, line)?,
                None => {
                    *calls
                        .entry(message.call.as_str().to_owned())
                        .or_insert(0u64) += 1
                }
            }
        }
        if !calls.is_empty() {
            self.store.count_calls(&calls)?;
        }
        ingestor.finish_unflushed()
    }

    /// Makes every event, quarantined line and count written so far durable.
    pub fn flush_events(&self) -> Result<(), Error> {
        Ok(self.store.events()?.flush()?)
    }

    /// Ingests a request body: a JSON array of track calls, or JSON lines.
    pub fn ingest_body(&self, body: &[u8], now_ms: i64) -> Result<IngestReport, Error> {
        let mut ingestor = self.ingestor(now_ms)?;
        if body.trim_ascii_start().starts_with(b"[") {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(body)
                .map_err(|e| Error::Body(format!("not a JSON array of events: {e}")))?;
            for (index, item) in items.iter().enumerate() {
                ingestor.line(API_SOURCE, index as u64 + 1, item.get().as_bytes())?;
            }
        } else {
            ingestor.read(API_SOURCE, &mut &body[..])?;
        }
        ingestor.finish()
    }

    /// Quarantined lines, by source and line.
    pub fn quarantined(&self) -> Result<Vec<QuarantineEntry>, Error> {
        Ok(self.store.events()?.quarantined()?)
    }

    /// How many lines are quarantined (what a scorecard reports as compliance incidents).
    pub fn quarantined_count(&self) -> Result<usize, Error> {
        Ok(self.store.events()?.quarantined_count())
    }

    /// Deletes the raw events older than their schema's `retention_days` as of `now_ms` (the newest approved
    /// version of each event's schema decides; 0 keeps them). Exposures follow the `Experiment Viewed` schema when
    /// the council approved one, else they are kept. How many were deleted, by event name (exposures under
    /// `Experiment Viewed`).
    pub fn purge_expired(&self, now_ms: i64) -> Result<Purge, Error> {
        const DAY_MS: i64 = 86_400_000;
        let view = self.view();
        let retention = |event: &str| -> Option<u32> {
            view.schemas
                .values()
                .filter(|s| s.event == event && s.status == model::StandardStatus::Approved)
                .max_by_key(|s| s.version)
                .map(|s| s.retention_days)
                .filter(|days| *days > 0)
        };
        let events = self.store.events()?;
        let mut purge = Purge::default();
        let mut sweep =
            |name: &str, label: &str, days: u32, exposures: bool| -> Result<(), Error> {
                let cutoff = now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
                let count = events.purge(name, cutoff, exposures)?;
                if count > 0 {
                    *purge.by_event.entry(label.to_owned()).or_default() += count;
                    purge.total += count;
                }
                Ok(())
            };
        for name in events.names(false)? {
            if let Some(days) = retention(&name) {
                sweep(&name, &name, days, false)?;
            }
        }
        if let Some(days) = retention(track::EXPOSURE_EVENT) {
            for experiment in events.names(true)? {
                sweep(&experiment, track::EXPOSURE_EVENT, days, true)?;
            }
        }
        events.flush()?;
        self.store.record_purge(purge.total, now_ms)?;
        if purge.total > 0 {
            tracing::info!(
                purged = purge.total,
                "raw events past their retention deleted"
            );
        }
        Ok(purge)
    }

    /// What this node holds: events and exposures stored, lines quarantined, and what retention has deleted.
    pub fn event_stats(&self) -> Result<EventStats, Error> {
        let events = self.store.events()?;
        let (purged, purged_at_ms) = self.store.purged()?;
        let (stored_events, exposures) = events.counts();
        Ok(EventStats {
            stored: (stored_events + exposures) as u64,
            events: stored_events as u64,
            exposures: exposures as u64,
            quarantined: events.quarantined_count() as u64,
            purged,
            last_purge: purged_at_ms.map(model::time::format_rfc3339),
            calls: self.store.calls()?,
        })
    }

    /// Checks every quarantined line again (after a schema was approved): accepted ones are stored and leave the
    /// quarantine; the others stay, with their reason brought up to date.
    pub fn retry_quarantine(&self, now_ms: i64) -> Result<IngestReport, Error> {
        let mut ingestor = self.ingestor(now_ms)?;
        for entry in ingestor.events.quarantined()? {
            ingestor.retry(entry)?;
        }
        ingestor.finish()
    }

    /// Analyses `experiment` over the stored exposures and events that fall inside its dates (those outside are
    /// counted in the report's `outside_window`).
    pub fn analyze(
        &self,
        experiment: &str,
        extra_metrics: &[String],
        options: &Options,
    ) -> Result<Report, Error> {
        let view = self.view();
        let plan = Plan::new(&view, experiment, extra_metrics)?;
        let registered = view.experiments.get(experiment);
        let inside = |ms: i64| registered.is_none_or(|e| e.in_window(ms));
        let mut outside = 0u64;
        let events = self.store.events()?;
        let mut exposures = ExposureBuilder::new(&plan.variants);
        for exposure in events.scan_exposures(experiment) {
            let exposure = exposure?;
            if !inside(exposure.timestamp_ms()) {
                outside += 1;
                continue;
            }
            exposures.push(exposure.user(), exposure.timestamp_ms(), exposure.value());
        }
        let mut analysis = Analysis::new(&plan, exposures);
        for name in plan.event_uses().keys() {
            let mut sink = analysis.events(name);
            for event in events.scan_event(name) {
                let event = event?;
                if !inside(event.timestamp_ms()) {
                    outside += 1;
                    continue;
                }
                sink.push(event.user(), event.timestamp_ms(), event.value());
            }
        }
        let mut report = analysis.finish(options)?;
        report.outside_window = outside;
        Ok(report)
    }
}

impl Ingestor {
    /// Reads JSON lines from `reader` (blank lines are skipped; over-long lines are rejected without being held).
    pub fn read(&mut self, source: &str, reader: &mut dyn BufRead) -> Result<(), Error> {
        let mut buffer = Vec::with_capacity(1024);
        let mut number = 0u64;
        loop {
            buffer.clear();
            let read = read_line(reader, &mut buffer).map_err(|error| Error::Read {
                source_name: source.to_owned(),
                line: number,
                error,
            })?;
            let Some(too_long) = read else { break };
            number += 1;
            if too_long {
                let reason = format!(
                    "line is longer than {} bytes; kept truncated",
                    track::MAX_LINE_BYTES
                );
                self.reject(source, number, &buffer, reason)?;
                continue;
            }
            let line = buffer.trim_ascii();
            if !line.is_empty() {
                self.line(source, number, line)?;
            }
        }
        Ok(())
    }

    /// Checks one line and stores or quarantines it.
    pub fn line(&mut self, source: &str, number: u64, line: &[u8]) -> Result<(), Error> {
        match track::check_line(line, &self.schemas, self.now_ms) {
            Ok(accepted) => self.accept(accepted),
            Err(reason) => self.reject(source, number, line, reason),
        }
    }

    fn retry(&mut self, entry: QuarantineEntry) -> Result<(), Error> {
        match track::check_line(&entry.raw, &self.schemas, self.now_ms) {
            Ok(accepted) => {
                self.released.push(entry.key);
                self.accept(accepted)
            }
            Err(reason) => self.reject(&entry.source, entry.line, &entry.raw, reason),
        }
    }

    fn accept(&mut self, accepted: track::Accepted) -> Result<(), Error> {
        self.batch.push(NewEvent {
            event: accepted.name,
            user: accepted.user,
            timestamp_ms: accepted.timestamp_ms,
            id: accepted.id,
            value: accepted.value,
            exposure: accepted.exposure,
            unique_message: self.unique_messages && accepted.has_message_id,
        });
        if self.batch.len() >= BATCH_EVENTS {
            self.write_batch()?;
        }
        Ok(())
    }

    fn reject(
        &mut self,
        source: &str,
        number: u64,
        line: &[u8],
        reason: String,
    ) -> Result<(), Error> {
        self.report.quarantined += 1;
        let kind = reason_kind(&reason);
        let kind = if self.report.by_reason.contains_key(kind)
            || self.report.by_reason.len() < MAX_REASON_KINDS
        {
            kind
        } else {
            OTHER_REASONS
        };
        *self.report.by_reason.entry(kind.to_owned()).or_default() += 1;
        if self.report.rejected.len() < MAX_REPORTED_REJECTIONS {
            self.report.rejected.push(RejectedLine {
                file: source.to_owned(),
                line: number,
                reason: reason.clone(),
            });
        }
        self.quarantine.push(QuarantineEntry {
            key: track::line_hash(line),
            source: source.to_owned(),
            line: number,
            reason,
            at_ms: self.now_ms,
            raw: line.to_vec(),
        });
        if self.quarantine.len() >= BATCH_EVENTS {
            self.events.quarantine(&self.quarantine)?;
            self.quarantine.clear();
        }
        Ok(())
    }

    fn write_batch(&mut self) -> Result<(), Error> {
        let counts = self.events.write(&self.batch)?;
        self.report.accepted += counts.accepted;
        self.report.duplicates += counts.duplicates;
        self.batch.clear();
        Ok(())
    }

    /// Writes what is pending and flushes: everything the report counts is durable when this returns.
    pub fn finish(mut self) -> Result<IngestReport, Error> {
        self.write_batch()?;
        self.events.quarantine(&self.quarantine)?;
        // Released only once the events are stored, so a crash in between leaves the line quarantined, and a
        // retry finds the event a duplicate.
        self.events.release(&self.released)?;
        self.events.flush()?;
        Ok(self.report)
    }

    /// [`Ingestor::finish`] without the flush: what the report counts is durable once the caller flushed
    /// ([`Node::flush_events`]), which a running node does once for every request that arrived together.
    pub fn finish_unflushed(mut self) -> Result<IngestReport, Error> {
        self.write_batch()?;
        self.events.quarantine(&self.quarantine)?;
        self.events.release(&self.released)?;
        Ok(self.report)
    }
}

/// Reads one line into `buffer` (without its newline), holding at most [`track::MAX_LINE_BYTES`] + 1 bytes of it.
/// `None` at the end of input, else whether the line was longer than that.
fn read_line(reader: &mut dyn BufRead, buffer: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    let limit = track::MAX_LINE_BYTES + 1;
    let mut any = false;
    let mut too_long = false;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (chunk, done) = match memchr(available) {
            Some(end) => (&available[..end], Some(end + 1)),
            None => (available, None),
        };
        let room = limit.saturating_sub(buffer.len());
        too_long |= chunk.len() > room;
        buffer.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let consumed = done.unwrap_or(available.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Some(too_long));
        }
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod reason_tests {
    use super::reason_kind;

    #[test]
    fn reasons_of_one_kind_count_together() {
        assert_eq!(
            reason_kind("unknown event `Signup`: no approved schema (propose and approve one)"),
            "unknown event `Signup`"
        );
        assert_eq!(
            reason_kind("unknown event `Lo:gin`: no approved schema"),
            "unknown event `Lo:gin`"
        );
        assert_eq!(
            reason_kind("malformed JSON: expected value at line 1 column 2"),
            "malformed JSON"
        );
        assert_eq!(reason_kind("`timestamp`: premature end"), "`timestamp`");
        assert_eq!(reason_kind("no colon here"), "no colon here");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSURE: &str = r#"{"userId":"u1","event":"Experiment Viewed","timestamp":"2025-03-01T09:00:00Z","properties":{"experimentId":"x","variationId":"0"}}"#;
    const UNKNOWN: &str = r#"{"userId":"u1","event":"Nope","timestamp":"2025-03-01T09:00:00Z"}"#;

    #[test]
    fn posted_bodies_are_arrays_or_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = Node::open(dir.path()).expect("a node");
        let array = format!("[{EXPOSURE}, {UNKNOWN}]");
        let report = node
            .ingest_body(array.as_bytes(), 1_800_000_000_000)
            .expect("ingested");
        assert_eq!((report.accepted, report.quarantined), (1, 1));
        assert_eq!(report.rejected[0].line, 2);
        assert_eq!(report.rejected[0].file, API_SOURCE);
        let lines = format!("{EXPOSURE}\n{UNKNOWN}\n");
        let report = node
            .ingest_body(lines.as_bytes(), 1_800_000_000_000)
            .expect("ingested");
        assert_eq!((report.accepted, report.duplicates), (0, 1));
        assert_eq!(node.quarantined().expect("listed").len(), 1);
        let error = node.ingest_body(b"[{", 0).expect_err("not an array");
        assert!(
            error
                .to_string()
                .starts_with("POST /v1/events: not a JSON array"),
            "{error}"
        );
    }

    #[test]
    fn lines_are_read_bounded() {
        let long = "x".repeat(track::MAX_LINE_BYTES + 10);
        let input = format!("a\r\n\n{long}\nlast");
        let mut reader = std::io::BufReader::with_capacity(16, input.as_bytes());
        let mut buffer = Vec::new();
        let mut lines = Vec::new();
        while let Some(too_long) = read_line(&mut reader, &mut buffer).expect("memory") {
            lines.push((buffer.len(), too_long));
            buffer.clear();
        }
        assert_eq!(
            lines,
            vec![
                (2, false),
                (0, false),
                (track::MAX_LINE_BYTES + 1, true),
                (4, false)
            ]
        );
    }
}
