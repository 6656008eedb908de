//! Segment's HTTP tracking API as a pod's node speaks it: a request body (already inflated) decoded and checked
//! into the calls it carries, each `track` call as the JSON line `ingest` checks, with its time corrected for the
//! sending device's clock.
//!
//! What is refused as a whole (HTTP 400, nothing stored), as Segment refuses it: a body over 500 KB or a call over
//! 32 KB, a body that is not JSON, a batch that is not an array, a call with no `type` (in a batch) or an unknown
//! one, a call with neither `userId` nor `anonymousId`, a `track` with no `event` name, an `alias` with no
//! `previousId`, a time that is not RFC 3339. Every error names the field (`batch[3].event`). What passes goes
//! through `ingest`'s checks: a `track` whose event has no approved schema, or whose properties do not match it, is
//! quarantined with its reason like any ingested line.
//!
//! # Time
//! Segment corrects a call's time for the device's clock: `timestamp = receivedAt - (sentAt - originalTimestamp)`,
//! where `originalTimestamp` is the call's `timestamp` (or `originalTimestamp`) and `sentAt` the call's or the
//! batch's. A difference between `receivedAt` and `sentAt` of at most [`SKEW_TOLERANCE_MS`] is network latency,
//! not a wrong clock, and is left alone, so the same call sent twice keeps its time (and its key in the store). A
//! call with no time at all takes the time it was received.

use std::borrow::Cow;

use analysis::track::kind_of_text;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Largest request body, inflated (Segment's limit).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Largest call (Segment's limit).
pub const MAX_CALL_BYTES: usize = 32 * 1024;
/// `receivedAt - sentAt` up to this much (either way) is latency, not clock skew: the time is not corrected.
pub const SKEW_TOLERANCE_MS: i64 = 2_000;

/// A Segment call type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// An event: ingested.
    Track,
    /// A page view: counted.
    Page,
    /// A mobile screen view: counted.
    Screen,
    /// A user's traits: counted (traits are personal data no schema reviewed; nothing reads them).
    Identify,
    /// A user's account: counted.
    Group,
    /// Two ids of one user: counted.
    Alias,
}

impl Call {
    /// Every call type.
    pub const ALL: [Call; 6] = [
        Call::Track,
        Call::Page,
        Call::Screen,
        Call::Identify,
        Call::Group,
        Call::Alias,
    ];

    /// Its name in Segment's `type` field and URL path.
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Identify => "identify",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// Where a request arrived: `/v1/batch` (or `/v1/import`), or one call's own path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `{"batch": [...]}`.
    Batch,
    /// One call of this type.
    One(Call),
}

/// Why a request is refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// Over Segment's size limits.
    #[error("{0}")]
    TooLarge(String),
    /// Not what Segment's API defines; names the field.
    #[error("{0}")]
    Malformed(String),
}

impl BadRequest {
    /// The `code` of the JSON error body (Segment's SDKs log `code` and `message`).
    pub fn code(&self) -> &'static str {
        match self {
            BadRequest::TooLarge(_) => "payload_too_large",
            BadRequest::Malformed(_) => "invalid_request",
        }
    }
}

/// One call of a request, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Its type.
    pub call: Call,
    /// Its position in the batch, from 1 (1 for a single call).
    pub number: u64,
    /// For `track`: the JSON line to ingest (the call itself, its `timestamp` corrected where needed).
    pub line: Option<Vec<u8>>,
}

/// A request decoded and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The write key the body names (`writeKey`), which Segment accepts in place of Basic auth.
    pub write_key: Option<String>,
    /// Its calls, in order.
    pub messages: Vec<Message>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(default, borrow)]
    batch: Option<&'a RawValue>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
    #[serde(rename = "sentAt", default, borrow)]
    sent_at: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "userId", default, borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", default, borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(rename = "previousId", default, borrow)]
    previous_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default, borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "originalTimestamp", default, borrow)]
    original_timestamp: Option<&'a RawValue>,
    #[serde(rename = "sentAt", default, borrow)]
    sent_at: Option<&'a RawValue>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
}

/// Decodes and checks a request body that arrived at `endpoint` at `received_ms`.
pub fn parse(endpoint: Endpoint, body: &[u8], received_ms: i64) -> Result<Request, BadRequest> {
    let limit = match endpoint {
        Endpoint::Batch => MAX_BATCH_BYTES,
        Endpoint::One(_) => MAX_CALL_BYTES,
    };
    if body.len() > limit {
        return Err(BadRequest::TooLarge(format!(
            "body: {} bytes, over Segment's limit of {} KB per {}",
            body.len(),
            limit / 1024,
            if endpoint == Endpoint::Batch {
                "request"
            } else {
                "call"
            }
        )));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| BadRequest::Malformed(format!("body: not UTF-8: {e}")))?;
    match endpoint {
        Endpoint::One(call) => {
            let raw: &RawValue = serde_json::from_str(text)
                .map_err(|e| BadRequest::Malformed(format!("body: not JSON: {e}")))?;
            let (message, write_key) = check(raw, Some(call), "", 1, None, received_ms)?;
            Ok(Request {
                write_key,
                messages: vec![message],
            })
        }
        Endpoint::Batch => {
            let parsed: BatchBody<'_> = serde_json::from_str(text).map_err(|e| {
                BadRequest::Malformed(format!("body: not a JSON object with a `batch`: {e}"))
            })?;
            let batch = parsed
                .batch
                .ok_or_else(|| BadRequest::Malformed("batch: is missing".into()))?;
            let items: Vec<&RawValue> = serde_json::from_str(batch.get()).map_err(|_| {
                BadRequest::Malformed(format!(
                    "batch: must be an array of calls, got {}",
                    kind_of_text(batch.get())
                ))
            })?;
            let sent_at = parsed
                .sent_at
                .map(|raw| time_of("sentAt", raw))
                .transpose()?
                .flatten();
            let mut messages = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                let path = format!("batch[{index}].");
                if item.get().len() > MAX_CALL_BYTES {
                    return Err(BadRequest::TooLarge(format!(
                        "batch[{index}]: {} bytes, over Segment's limit of {} KB per call",
                        item.get().len(),
                        MAX_CALL_BYTES / 1024
                    )));
                }
                let (message, _) =
                    check(item, None, &path, index as u64 + 1, sent_at, received_ms)?;
                messages.push(message);
            }
            Ok(Request {
                write_key: parsed.write_key,
                messages,
            })
        }
    }
}

/// Checks one call; `implied` is the type its path gives, `path` prefixes field names in errors.
fn check(
    raw: &RawValue,
    implied: Option<Call>,
    path: &str,
    number: u64,
    batch_sent_at: Option<i64>,
    received_ms: i64,
) -> Result<(Message, Option<String>), BadRequest> {
    let bad = |field: &str, problem: String| {
        let place = match (path.strip_suffix('.'), field) {
            (Some(item), "") => item.to_owned(),
            (None, "") => "body".to_owned(),
            (_, field) => format!("{path}{field}"),
        };
        BadRequest::Malformed(format!("{place}: {problem}"))
    };
    if !raw.get().starts_with('{') {
        return Err(bad(
            "",
            format!("must be a JSON object, got {}", kind_of_text(raw.get())),
        ));
    }
    let head: Head<'_> = serde_json::from_str(raw.get()).map_err(|e| bad("", e.to_string()))?;
    let call = match (implied, head.kind) {
        (Some(call), _) => call,
        (None, None) => {
            return Err(bad(
                "type",
                "is missing (track, page, screen, identify, group or alias)".into(),
            ));
        }
        (None, Some(kind)) => {
            let text: Cow<'_, str> = serde_json::from_str(kind.get()).map_err(|_| {
                bad(
                    "type",
                    format!("must be a string, got {}", kind_of_text(kind.get())),
                )
            })?;
            Call::parse(&text).ok_or_else(|| {
                bad(
                    "type",
                    format!("`{text}` is not a Segment call (track, page, screen, identify, group or alias)"),
                )
            })?
        }
    };
    let user = id_of(head.user_id).map_err(|p| bad("userId", p))?;
    let anonymous = id_of(head.anonymous_id).map_err(|p| bad("anonymousId", p))?;
    if !user && !anonymous {
        return Err(bad(
            "userId",
            "neither `userId` nor `anonymousId` is set".into(),
        ));
    }
    if call == Call::Alias && !id_of(head.previous_id).map_err(|p| bad("previousId", p))? {
        return Err(bad(
            "previousId",
            "is missing (an alias links `previousId` to `userId`)".into(),
        ));
    }
    if call == Call::Track {
        match head.event {
            None => {
                return Err(bad(
                    "event",
                    "is missing (a track call names its event)".into(),
                ));
            }
            Some(event) => match serde_json::from_str::<Cow<'_, str>>(event.get()) {
                Ok(name) if !name.trim().is_empty() => {}
                Ok(_) => return Err(bad("event", "is empty".into())),
                Err(_) => {
                    return Err(bad(
                        "event",
                        format!("must be a string, got {}", kind_of_text(event.get())),
                    ));
                }
            },
        }
    }
    let timestamp = head
        .timestamp
        .map(|raw| time_of("timestamp", raw))
        .transpose()
        .map_err(|e| prefix(path, e))?
        .flatten();
    let original = head
        .original_timestamp
        .map(|raw| time_of("originalTimestamp", raw))
        .transpose()
        .map_err(|e| prefix(path, e))?
        .flatten();
    let sent_at = head
        .sent_at
        .map(|raw| time_of("sentAt", raw))
        .transpose()
        .map_err(|e| prefix(path, e))?
        .flatten()
        .or(batch_sent_at);
    let line = (call == Call::Track).then(|| {
        let time = corrected(timestamp.or(original), sent_at, received_ms);
        if timestamp.is_some() && time == timestamp {
            raw.get().as_bytes().to_vec()
        } else {
            with_timestamp(raw, time.unwrap_or(received_ms))
        }
    });
    Ok((Message { call, number, line }, head.write_key))
}

/// Segment's correction: the call's time moved by the device's clock error, when that error is beyond latency.
fn corrected(original: Option<i64>, sent_at: Option<i64>, received_ms: i64) -> Option<i64> {
    let original = original?;
    Some(match sent_at {
        Some(sent) if (received_ms - sent).abs() > SKEW_TOLERANCE_MS => {
            original.saturating_add(received_ms - sent)
        }
        _ => original,
    })
}

/// The call with its `timestamp` replaced by `ms`.
fn with_timestamp(raw: &RawValue, ms: i64) -> Vec<u8> {
    let mut object: Map<String, Value> = serde_json::from_str(raw.get()).unwrap_or_default();
    object.insert(
        "timestamp".into(),
        Value::String(model::time::format_rfc3339(ms)),
    );
    serde_json::to_vec(&object).unwrap_or_default()
}

fn prefix(path: &str, error: BadRequest) -> BadRequest {
    match error {
        BadRequest::Malformed(message) => BadRequest::Malformed(format!("{path}{message}")),
        other => other,
    }
}

/// Whether an id field is set (a non-empty string or a number); an error for any other JSON.
fn id_of(raw: Option<&RawValue>) -> Result<bool, String> {
    let Some(raw) = raw else { return Ok(false) };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => Ok(serde_json::from_str::<Cow<'_, str>>(text).is_ok_and(|s| !s.is_empty())),
        Some(b'-' | b'0'..=b'9') => Ok(true),
        Some(b'n') => Ok(false),
        _ => Err(format!("must be a string, got {}", kind_of_text(text))),
    }
}

/// An RFC 3339 time field: `None` for null, an error naming `field` otherwise.
fn time_of(field: &str, raw: &RawValue) -> Result<Option<i64>, BadRequest> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let value: Cow<'_, str> = serde_json::from_str(text).map_err(|_| {
        BadRequest::Malformed(format!(
            "{field}: must be an RFC 3339 time string, got {}",
            kind_of_text(text)
        ))
    })?;
    model::time::parse_rfc3339(&value).map(Some).map_err(|e| {
        BadRequest::Malformed(format!("{field}: `{value}` is not an RFC 3339 time ({e})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn batch(body: &str) -> Result<Request, BadRequest> {
        parse(Endpoint::Batch, body.as_bytes(), NOW)
    }

    fn malformed(body: &str) -> String {
        match batch(body) {
            Err(BadRequest::Malformed(message)) => message,
            other => panic!("expected a malformed request, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_of_every_call_type_is_read_in_order() {
        let request = batch(
            r#"{"writeKey":"wk_1","sentAt":"2026-01-01T00:00:00Z","batch":[
                {"type":"track","userId":"u1","event":"Signup","timestamp":"2025-12-31T23:00:00Z","messageId":"m1"},
                {"type":"page","anonymousId":"a1","name":"Home"},
                {"type":"screen","userId":"u1","name":"Home"},
                {"type":"identify","userId":"u1","traits":{"email":"a@b.c"}},
                {"type":"group","userId":"u1","groupId":"g1"},
                {"type":"alias","userId":"u1","previousId":"a1"}]}"#,
        )
        .expect("valid");
        assert_eq!(request.write_key.as_deref(), Some("wk_1"));
        let calls: Vec<Call> = request.messages.iter().map(|m| m.call).collect();
        assert_eq!(calls, Call::ALL);
        assert_eq!(request.messages[5].number, 6);
        // In sync with the node's clock: the track call is ingested as sent.
        let line = request.messages[0].line.as_deref().expect("a track line");
        assert!(
            std::str::from_utf8(line)
                .expect("utf-8")
                .contains(r#""timestamp":"2025-12-31T23:00:00Z""#)
        );
        assert!(request.messages[1].line.is_none());
    }

    #[test]
    fn a_wrong_device_clock_is_corrected_and_latency_is_not() {
        // The device's clock is an hour fast: it stamped the event 23:30 and sent it at 01:00 its time; received at
        // 00:00 node time, the event happened at 22:30.
        let request = batch(
            r#"{"sentAt":"2026-01-01T01:00:00Z","batch":[{"type":"track","userId":"u","event":"E","timestamp":"2025-12-31T23:30:00Z"},
               {"type":"track","userId":"u","event":"E","timestamp":"2025-12-31T23:30:00Z","sentAt":"2025-12-31T23:59:59.000Z"}]}"#,
        )
        .expect("valid");
        let line = |i: usize| -> Value {
            serde_json::from_slice(request.messages[i].line.as_deref().expect("line"))
                .expect("json")
        };
        assert_eq!(line(0)["timestamp"], "2025-12-31T22:30:00.000Z");
        // One second of difference is latency: the call's own `sentAt` wins over the batch's, and is within it.
        assert_eq!(line(1)["timestamp"], "2025-12-31T23:30:00Z");
        // No time at all: the time it was received.
        let none =
            batch(r#"{"batch":[{"type":"track","userId":"u","event":"E"}]}"#).expect("valid");
        let value: Value =
            serde_json::from_slice(none.messages[0].line.as_deref().expect("line")).expect("json");
        assert_eq!(value["timestamp"], "2026-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_malformed_batch_names_the_field() {
        assert!(malformed("[1,2]").starts_with("body: "));
        assert_eq!(malformed("{}"), "batch: is missing");
        assert!(malformed(r#"{"batch":{}}"#).starts_with("batch: must be an array"));
        assert!(malformed(r#"{"batch":[7]}"#).starts_with("batch[0]: must be a JSON object"));
        assert!(
            malformed(r#"{"batch":[{"type":"track","userId":"u","event":"E"},{"userId":"u","event":"E"}]}"#)
                .starts_with("batch[1].type: is missing")
        );
        assert!(
            malformed(r#"{"batch":[{"type":"purchase","userId":"u"}]}"#)
                .contains("`purchase` is not a Segment call")
        );
        assert!(
            malformed(r#"{"batch":[{"type":"track","userId":"u"}]}"#)
                .starts_with("batch[0].event: is missing")
        );
        assert!(
            malformed(r#"{"batch":[{"type":"track","userId":"u","event":"  "}]}"#)
                .starts_with("batch[0].event: is empty")
        );
        assert!(
            malformed(r#"{"batch":[{"type":"track","userId":"u","event":3}]}"#)
                .starts_with("batch[0].event: must be a string")
        );
        assert!(
            malformed(r#"{"batch":[{"type":"track","event":"E","userId":""}]}"#)
                .starts_with("batch[0].userId: neither")
        );
        assert!(
            malformed(r#"{"batch":[{"type":"alias","userId":"u"}]}"#)
                .starts_with("batch[0].previousId: is missing")
        );
        assert!(
            malformed(
                r#"{"batch":[{"type":"track","userId":"u","event":"E","timestamp":"yesterday"}]}"#
            )
            .starts_with("batch[0].timestamp: `yesterday` is not an RFC 3339 time")
        );
        assert!(malformed(r#"{"sentAt":5,"batch":[]}"#).starts_with("sentAt: must be an RFC 3339"));
    }

    #[test]
    fn segment_size_limits_hold() {
        let big = "x".repeat(MAX_CALL_BYTES);
        let body = format!(
            r#"{{"batch":[{{"type":"track","userId":"u","event":"E"}},{{"type":"track","userId":"u","event":"E","properties":{{"p":"{big}"}}}}]}}"#
        );
        assert!(
            matches!(batch(&body), Err(BadRequest::TooLarge(m)) if m.starts_with("batch[1]: "))
        );
        let huge = vec![b' '; MAX_BATCH_BYTES + 1];
        assert!(
            matches!(parse(Endpoint::Batch, &huge, NOW), Err(BadRequest::TooLarge(m)) if m.starts_with("body: "))
        );
        let one = format!(r#"{{"userId":"u","event":"E","properties":{{"p":"{big}"}}}}"#);
        assert!(matches!(
            parse(Endpoint::One(Call::Track), one.as_bytes(), NOW),
            Err(BadRequest::TooLarge(_))
        ));
    }

    #[test]
    fn a_single_call_takes_its_type_from_the_path() {
        let request = parse(
            Endpoint::One(Call::Track),
            br#"{"userId":"u","event":"E","timestamp":"2025-12-31T23:00:00Z","writeKey":"wk_2"}"#,
            NOW,
        )
        .expect("valid");
        assert_eq!(request.write_key.as_deref(), Some("wk_2"));
        assert_eq!(request.messages[0].call, Call::Track);
        let page = parse(Endpoint::One(Call::Page), br#"{"anonymousId":"a"}"#, NOW).expect("valid");
        assert_eq!(page.messages[0].call, Call::Page);
        assert!(matches!(
            parse(Endpoint::One(Call::Track), br#"{"userId":"u"}"#, NOW),
            Err(BadRequest::Malformed(m)) if m == "event: is missing (a track call names its event)"
        ));
    }
}
