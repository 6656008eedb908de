//! One Segment `track` line in, an accepted event or a rejection reason out: the check every ingested event passes,
//! whether it arrives in a file, on stdin or over `POST /v1/events`.
//!
//! A line is accepted when it is a JSON object with an `event`, a `userId` or `anonymousId`, an RFC 3339
//! `timestamp` not in the future (beyond [`MAX_FUTURE_SKEW_MS`]), and `properties` that match the latest approved
//! schema of its event: required properties present, every property declared, every value of its declared type.
//! `Experiment Viewed` exposures are built in: they need `experimentId` and `variationId` (or, as GrowthBook's
//! Segment integration and Segment's warehouses name them, `experiment_id` and `variation_id`).

use std::borrow::Cow;
use std::collections::HashMap;

use model::{EventSchema, PropertyType, RegistryView};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::time::parse_rfc3339;

/// The exposure event (GrowthBook's Segment integration).
pub const EXPOSURE_EVENT: &str = "Experiment Viewed";
/// How far ahead of this node's clock a timestamp may be (clock skew between devices and the node).
pub const MAX_FUTURE_SKEW_MS: i64 = 5 * 60 * 1000;
/// Longest line accepted.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longest event name, user id or experiment id accepted.
pub const MAX_NAME_BYTES: usize = 256;

/// An event that passed every check, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// Event name; for an exposure, the experiment id.
    pub name: String,
    /// `userId`, else `anonymousId`.
    pub user: String,
    /// Unix milliseconds.
    pub timestamp_ms: i64,
    /// Idempotency id: a hash of `messageId` when present, else of the event's content.
    pub id: [u8; 16],
    /// Properties as JSON (events) or the variation id (exposures).
    pub value: Vec<u8>,
    /// Whether this is an exposure.
    pub exposure: bool,
    /// Whether [`Accepted::id`] hashes a `messageId` (rather than the content).
    pub has_message_id: bool,
}

/// The approved schemas, indexed by event name (the latest approved version of each).
#[derive(Debug, Default)]
pub struct Schemas {
    by_event: HashMap<String, EventSchema>,
}

impl Schemas {
    /// The latest approved schema of every event in the registry.
    pub fn from_view(view: &RegistryView) -> Self {
        let mut by_event = HashMap::new();
        for schema in view.schemas.values() {
            if let Some(latest) = view.approved_schema(&schema.event) {
                by_event
                    .entry(latest.event.clone())
                    .or_insert_with(|| latest.clone());
            }
        }
        Self { by_event }
    }

    /// The schema of `event`.
    pub fn get(&self, event: &str) -> Option<&EventSchema> {
        self.by_event.get(event)
    }
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "userId", default, borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", default, borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(rename = "messageId", default, borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
    #[serde(default, borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(default, borrow)]
    properties: Option<&'a RawValue>,
}

/// A JSON string or number as text; `None` for null; an error naming `field` for anything else.
fn text_of<'a>(field: &str, raw: Option<&'a RawValue>) -> Result<Option<Cow<'a, str>>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<'a, str>>(text)
            .map(Some)
            .map_err(|e| format!("`{field}`: {e}")),
        Some(b'-' | b'0'..=b'9') => Ok(Some(Cow::Borrowed(text))),
        Some(b'n') => Ok(None),
        _ => Err(format!(
            "`{field}` must be a string, got {}",
            kind_of_text(text)
        )),
    }
}

/// What kind of JSON value a raw JSON text is ("an object", "a string"...), for error messages.
pub fn kind_of_text(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn check_name(field: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if text.len() > MAX_NAME_BYTES {
        return Err(format!(
            "`{field}` is {} bytes, at most {MAX_NAME_BYTES} allowed",
            text.len()
        ));
    }
    if text.contains('\0') {
        return Err(format!("`{field}` contains a NUL character"));
    }
    Ok(())
}

/// Checks one line against the schemas; `now_ms` bounds timestamps.
pub fn check_line(line: &[u8], schemas: &Schemas, now_ms: i64) -> Result<Accepted, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!(
            "line is {} bytes, at most {MAX_LINE_BYTES} allowed",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| format!("not UTF-8: {e}"))?;
    let parsed: Line<'_> = serde_json::from_str(text).map_err(|e| {
        if e.classify() == serde_json::error::Category::Data {
            format!("not a JSON object: {e}")
        } else {
            format!("malformed JSON: {e}")
        }
    })?;
    if let Some(kind) = parsed.kind.as_deref().filter(|k| *k != "track") {
        return Err(format!("`type` is `{kind}`; only track calls are ingested"));
    }
    let event = text_of("event", parsed.event)?.ok_or("`event` is missing")?;
    check_name("event", &event)?;
    let user = match text_of("userId", parsed.user_id)? {
        Some(user) if !user.is_empty() => user,
        _ => text_of("anonymousId", parsed.anonymous_id)?
            .filter(|a| !a.is_empty())
            .ok_or("neither `userId` nor `anonymousId` is set")?,
    };
    check_name("userId", &user)?;
    let timestamp_ms = timestamp(parsed.timestamp, now_ms)?;
    let properties_text = parsed.properties.map_or("{}", RawValue::get);
    let properties: Map<String, Value> = match parsed.properties {
        None => Map::new(),
        Some(raw) => serde_json::from_str(raw.get()).map_err(|_| {
            format!(
                "`properties` must be an object, got {}",
                kind_of_text(raw.get())
            )
        })?,
    };
    let message_id = text_of("messageId", parsed.message_id)?.filter(|m| !m.is_empty());
    let id = event_id(
        message_id.as_deref(),
        &event,
        &user,
        timestamp_ms,
        properties_text,
    );
    if event == EXPOSURE_EVENT {
        let (experiment, variation) = exposure(&properties)?;
        return Ok(Accepted {
            name: experiment,
            user: user.into_owned(),
            timestamp_ms,
            id,
            value: variation.into_bytes(),
            exposure: true,
            has_message_id: message_id.is_some(),
        });
    }
    let schema = schemas.get(&event).ok_or_else(|| {
        format!("unknown event `{event}`: no approved schema (propose and approve one, then `quarantine retry`)")
    })?;
    check_properties(schema, &properties)?;
    Ok(Accepted {
        name: event.into_owned(),
        user: user.into_owned(),
        timestamp_ms,
        id,
        value: properties_text.as_bytes().to_vec(),
        exposure: false,
        has_message_id: message_id.is_some(),
    })
}

fn timestamp(raw: Option<&RawValue>, now_ms: i64) -> Result<i64, String> {
    let raw = raw.ok_or("`timestamp` is missing")?;
    let text: Cow<'_, str> = match raw.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str(raw.get()).map_err(|e| format!("`timestamp`: {e}"))?,
        _ => {
            return Err(format!(
                "`timestamp` must be an RFC 3339 string, got {}",
                kind_of_text(raw.get())
            ));
        }
    };
    let ms = parse_rfc3339(&text)?;
    if ms > now_ms + MAX_FUTURE_SKEW_MS {
        return Err(format!(
            "timestamp `{text}` is {} s in the future (at most {} s of clock skew allowed)",
            (ms - now_ms) / 1000,
            MAX_FUTURE_SKEW_MS / 1000
        ));
    }
    Ok(ms)
}

/// The idempotency id: `messageId` when the sender set one (Segment retries resend it), else the content.
fn event_id(
    message_id: Option<&str>,
    event: &str,
    user: &str,
    timestamp_ms: i64,
    properties: &str,
) -> [u8; 16] {
    let mut hasher = Sha256::new();
    match message_id {
        Some(message_id) => {
            hasher.update(b"message\0");
            hasher.update(message_id.as_bytes());
        }
        None => {
            hasher.update(b"content\0");
            for part in [event, user] {
                hasher.update(part.as_bytes());
                hasher.update([0]);
            }
            hasher.update(timestamp_ms.to_be_bytes());
            hasher.update(properties.as_bytes());
        }
    }
    let digest = hasher.finalize();
    digest[..16]
        .try_into()
        .expect("a SHA-256 digest has 32 bytes")
}

/// A hash of a raw line: the quarantine key, so the same bad line is kept once.
pub fn line_hash(line: &[u8]) -> [u8; 16] {
    let digest = Sha256::digest(line);
    digest[..16]
        .try_into()
        .expect("a SHA-256 digest has 32 bytes")
}

fn exposure(properties: &Map<String, Value>) -> Result<(String, String), String> {
    // GrowthBook's tracking callback names them in camel case; Segment's warehouses (and GrowthBook's SQL over
    // them) in snake case. Either is the exposure; the camel-case name decides when both are set.
    let field = |name: &str, alias: &str| -> Result<String, String> {
        match properties
            .get(name)
            .filter(|v| !v.is_null())
            .or_else(|| properties.get(alias))
        {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            None | Some(Value::Null) => Err(format!(
                "property `{name}` is required by the built-in `{EXPOSURE_EVENT}` schema"
            )),
            Some(other) => Err(format!(
                "property `{name}` must be a string, got {}",
                kind_of_value(other)
            )),
        }
    };
    let experiment = field("experimentId", "experiment_id")?;
    check_name("experimentId", &experiment)?;
    let variation = field("variationId", "variation_id")?;
    check_name("variationId", &variation)?;
    Ok((experiment, variation))
}

fn kind_of_value(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_properties(schema: &EventSchema, properties: &Map<String, Value>) -> Result<(), String> {
    for def in &schema.properties {
        match properties.get(&def.name) {
            None | Some(Value::Null) if def.required => {
                return Err(format!(
                    "property `{}` is required by schema `{}`",
                    def.name,
                    schema.key()
                ));
            }
            None | Some(Value::Null) => {}
            Some(value) if !has_type(value, def.kind) => {
                return Err(format!(
                    "property `{}` must be {} (schema `{}`), got {}",
                    def.name,
                    type_name(def.kind),
                    schema.key(),
                    kind_of_value(value)
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = properties
        .keys()
        .find(|name| !schema.properties.iter().any(|d| &d.name == *name))
    {
        return Err(format!(
            "property `{extra}` is not in schema `{}` (undeclared properties are refused: they have no privacy review)",
            schema.key()
        ));
    }
    Ok(())
}

fn has_type(value: &Value, kind: PropertyType) -> bool {
    match kind {
        PropertyType::String => value.is_string(),
        PropertyType::Number => value.is_number(),
        PropertyType::Integer => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        PropertyType::Boolean => value.is_boolean(),
        PropertyType::Timestamp => value.as_str().is_some_and(|t| parse_rfc3339(t).is_ok()),
        PropertyType::Object => value.is_object(),
        PropertyType::Array => value.is_array(),
    }
}

fn type_name(kind: PropertyType) -> &'static str {
    match kind {
        PropertyType::String => "a string",
        PropertyType::Number => "a number",
        PropertyType::Integer => "an integer",
        PropertyType::Boolean => "a boolean",
        PropertyType::Timestamp => "an RFC 3339 timestamp",
        PropertyType::Object => "an object",
        PropertyType::Array => "an array",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::StandardStatus;

    const NOW: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn schemas() -> Schemas {
        let mut view = RegistryView::default();
        let schema = EventSchema {
            event: "Order Completed".into(),
            version: 2,
            properties: vec![
                "revenue:number:required".parse().expect("valid"),
                "items:integer".parse().expect("valid"),
            ],
            legal_basis: String::new(),
            retention_days: 0,
            status: StandardStatus::Approved,
            proposed_by: "emea".into(),
            approved_by: None,
        };
        view.schemas.insert(schema.key(), schema);
        Schemas::from_view(&view)
    }

    fn check(line: &str) -> Result<Accepted, String> {
        check_line(line.as_bytes(), &schemas(), NOW)
    }

    #[test]
    fn accepts_a_valid_track_call() {
        let accepted = check(
            r#"{"type":"track","userId":"u1","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z","properties":{"revenue":9.5,"items":2}}"#,
        )
        .expect("valid");
        assert_eq!(accepted.name, "Order Completed");
        assert_eq!(accepted.user, "u1");
        assert_eq!(accepted.value, br#"{"revenue":9.5,"items":2}"#);
        assert!(!accepted.exposure);
    }

    #[test]
    fn exposures_are_built_in_and_keyed_by_experiment() {
        let accepted = check(
            r#"{"anonymousId":"a1","event":"Experiment Viewed","timestamp":"2025-12-31T10:00:00Z","properties":{"experimentId":"checkout","variationId":1}}"#,
        )
        .expect("valid");
        assert_eq!(
            (
                accepted.name.as_str(),
                accepted.user.as_str(),
                accepted.value.as_slice()
            ),
            ("checkout", "a1", &b"1"[..])
        );
        assert!(accepted.exposure);
    }

    #[test]
    fn snake_case_exposure_properties_are_the_same_exposure() {
        let snake = check(
            r#"{"userId":"u1","event":"Experiment Viewed","timestamp":"2025-12-31T10:00:00Z","properties":{"experiment_id":"checkout","variation_id":"treatment"}}"#,
        )
        .expect("valid");
        assert_eq!(
            (snake.name.as_str(), snake.value.as_slice()),
            ("checkout", &b"treatment"[..])
        );
        // The camel-case name wins when both are set; a null one falls back to the other.
        let both = check(
            r#"{"userId":"u1","event":"Experiment Viewed","timestamp":"2025-12-31T10:00:00Z","properties":{"experimentId":"a","experiment_id":"b","variationId":null,"variation_id":"0"}}"#,
        )
        .expect("valid");
        assert_eq!(
            (both.name.as_str(), both.value.as_slice()),
            ("a", &b"0"[..])
        );
        assert!(
            check(r#"{"userId":"u1","event":"Experiment Viewed","timestamp":"2025-12-31T10:00:00Z","properties":{"experiment_id":"a"}}"#)
                .unwrap_err()
                .contains("variationId")
        );
    }

    #[test]
    fn message_ids_make_the_id() {
        let a = check(r#"{"messageId":"m1","userId":"u1","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z","properties":{"revenue":1}}"#).expect("valid");
        let b = check(r#"{"messageId":"m1","userId":"u1","event":"Order Completed","timestamp":"2025-12-31T10:00:01Z","properties":{"revenue":1}}"#).expect("valid");
        let c = check(r#"{"userId":"u1","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z","properties":{"revenue":1}}"#).expect("valid");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn rejections_name_the_field() {
        let cases = [
            ("{not json", "malformed JSON"),
            ("[1,2]", "not a JSON object"),
            (
                r#"{"userId":"u","timestamp":"2025-12-31T10:00:00Z"}"#,
                "`event` is missing",
            ),
            (
                r#"{"event":"Order Completed","timestamp":"2025-12-31T10:00:00Z"}"#,
                "neither `userId` nor `anonymousId`",
            ),
            (
                r#"{"userId":"u","event":"Nope","timestamp":"2025-12-31T10:00:00Z"}"#,
                "unknown event `Nope`",
            ),
            (
                r#"{"userId":"u","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z","properties":{}}"#,
                "property `revenue` is required by schema `Order Completed@2`",
            ),
            (
                r#"{"userId":"u","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z","properties":{"revenue":"9"}}"#,
                "property `revenue` must be a number (schema `Order Completed@2`), got a string",
            ),
            (
                r#"{"userId":"u","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z","properties":{"revenue":1,"items":1.5}}"#,
                "property `items` must be an integer",
            ),
            (
                r#"{"userId":"u","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z","properties":{"revenue":1,"email":"x"}}"#,
                "property `email` is not in schema",
            ),
            (
                r#"{"userId":"u","event":"Order Completed","timestamp":"2026-01-02T00:00:00Z","properties":{"revenue":1}}"#,
                "in the future",
            ),
            (
                r#"{"userId":"u","event":"Order Completed","timestamp":"last tuesday","properties":{"revenue":1}}"#,
                "is not RFC 3339",
            ),
            (
                r#"{"userId":"u","event":"Order Completed","timestamp":1767225600,"properties":{"revenue":1}}"#,
                "`timestamp` must be an RFC 3339 string, got a number",
            ),
            (
                r#"{"userId":{"id":1},"event":"Order Completed","timestamp":"2025-12-31T10:00:00Z"}"#,
                "`userId` must be a string, got an object",
            ),
            (
                r#"{"userId":"u","event":"Experiment Viewed","timestamp":"2025-12-31T10:00:00Z","properties":{"experimentId":"x"}}"#,
                "property `variationId` is required",
            ),
            (
                r#"{"type":"identify","userId":"u","event":"Order Completed","timestamp":"2025-12-31T10:00:00Z"}"#,
                "only track calls",
            ),
        ];
        for (line, expected) in cases {
            let reason = check(line).expect_err(line);
            assert!(reason.contains(expected), "{line}\n  -> {reason}");
        }
    }
}
