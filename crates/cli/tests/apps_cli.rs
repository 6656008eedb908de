//! Apps on a running pod node, as their SDKs talk to it: Segment's tracking API with an app source's write key,
//! GrowthBook's features endpoint and stream with its client key. Real `growthmesh node` processes on loopback; HTTP
//! from this test as an SDK sends it (Basic auth, gzip, ETag, server-sent events).

mod support;

use std::io::{BufRead as _, Write as _};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Node, federation_with_schemas, start_pricing_experiments};

/// An HTTP answer: status, the headers asked for, body.
struct Answer {
    status: u16,
    etag: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn basic(write_key: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// `POST PATH` with the write key as Basic auth (none when `None`), gzipped when `gzipped`.
fn segment(node: &Node, path: &str, write_key: Option<&str>, body: &[u8], gzipped: bool) -> Answer {
    let mut request = agent()
        .post(format!("{}{path}", node.api_url()))
        .header("Content-Type", "application/json");
    if let Some(key) = write_key {
        request = request.header("Authorization", basic(key));
    }
    let body = if gzipped {
        request = request.header("Content-Encoding", "gzip");
        gzip(body)
    } else {
        body.to_vec()
    };
    answer(request.send(&body[..]).expect("the node answers"))
}

fn features(node: &Node, client_key: &str, etag: Option<&str>) -> Answer {
    let mut request = agent().get(format!("{}/api/features/{client_key}", node.api_url()));
    if let Some(etag) = etag {
        request = request.header("If-None-Match", etag);
    }
    answer(request.call().expect("the node answers"))
}

fn answer(mut response: ureq::http::Response<ureq::Body>) -> Answer {
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.body_mut().read_to_string().unwrap_or_default();
    Answer { status, etag, body }
}

fn stats(node: &Node) -> Value {
    node.json(&["events", "stats"])
}

fn track(message_id: &str, event: &str, properties: Value, timestamp: &str) -> Value {
    json!({
        "type": "track", "messageId": message_id, "userId": "u1", "event": event,
        "timestamp": timestamp, "properties": properties,
        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}}
    })
}

fn now_rfc3339(offset_ms: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    model::time::format_rfc3339(now + offset_ms)
}

#[test]
fn segment_calls_are_ingested_once_and_bad_ones_refused_with_the_field() {
    let (_council, pod) = federation_with_schemas(&["Order Completed"]);
    let web = pod.json(&["source", "add", "web"]);
    let write_key = web["write_key"].as_str().expect("write key").to_owned();
    let client_key = web["client_key"].as_str().expect("client key").to_owned();
    let daemon = pod.start(&[]);

    let at = now_rfc3339(-60_000);
    let batch = json!({
        "sentAt": now_rfc3339(0),
        "batch": [
            track("m-order", "Order Completed", json!({"revenue": 12.5, "currency": "EUR"}), &at),
            track("m-seen", "Experiment Viewed", json!({"experiment_id": "checkout", "variation_id": "treatment"}), &at),
            track("m-mystery", "Mystery Clicked", json!({}), &at),
            {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "messageId": "m-id"},
            {"type": "page", "anonymousId": "a1", "name": "Home", "messageId": "m-page"},
        ]
    });
    let body = serde_json::to_vec(&batch).expect("json");
    let first = segment(&pod, "/v1/batch", Some(&write_key), &body, true);
    assert_eq!(first.status, 200, "{}", first.body);
    let report = first.json();
    assert_eq!(report["success"], true);
    assert_eq!(
        (report["accepted"].as_u64(), report["quarantined"].as_u64()),
        (Some(2), Some(1))
    );
    let held = stats(&pod);
    assert_eq!(
        (held["stored"].as_u64(), held["quarantined"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        held["exposures"], 1,
        "`Experiment Viewed` with snake-case ids is the exposure"
    );
    assert_eq!(
        (
            held["calls"]["identify"].as_u64(),
            held["calls"]["page"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let quarantined = pod.json(&["quarantine", "list"]);
    assert!(
        quarantined.to_string().contains("segment:web"),
        "{quarantined}"
    );

    // The SDK retries: same messageIds, sent again later. Then again from a device whose clock is an hour slow, so
    // the corrected times differ from the first ones: still the same calls.
    let again = segment(&pod, "/v1/batch", Some(&write_key), &body, false);
    assert_eq!(again.json()["duplicates"], 2, "{}", again.body);
    let slow = |ms: i64| now_rfc3339(ms - 3_600_000);
    let skewed = json!({
        "sentAt": slow(0),
        "batch": [
            track("m-order", "Order Completed", json!({"revenue": 12.5, "currency": "EUR"}), &slow(-60_000)),
            track("m-seen", "Experiment Viewed", json!({"experiment_id": "checkout", "variation_id": "treatment"}), &slow(-60_000)),
        ]
    });
    let skewed = segment(
        &pod,
        "/v1/batch",
        Some(&write_key),
        &serde_json::to_vec(&skewed).expect("json"),
        true,
    );
    assert_eq!(skewed.json()["duplicates"], 2, "{}", skewed.body);
    assert_eq!(stats(&pod)["stored"], 2);

    // One call on its own path; the write key in the body instead of the header, as analytics.js sends it.
    let single = json!({"writeKey": write_key, "userId": "u2", "event": "Order Completed", "messageId": "m-single",
        "properties": {"revenue": 3, "currency": "EUR"}});
    let one = segment(
        &pod,
        "/v1/track",
        None,
        &serde_json::to_vec(&single).expect("json"),
        false,
    );
    assert_eq!(
        (one.status, one.json()["accepted"].as_u64()),
        (200, Some(1)),
        "{}",
        one.body
    );

    // Refused, nothing stored: a wrong key, the client key, no key, an event with no name, an oversized batch, gzip
    // that does not inflate, a batch that is not an array.
    let before = stats(&pod);
    let fresh = serde_json::to_vec(&json!({"batch": [track("m-new", "Order Completed", json!({"revenue": 1, "currency": "EUR"}), &at)]}))
        .expect("json");
    for (key, what) in [
        (
            Some("wk_000000000000000000000000000000000000000000000000"),
            "no active source has this write key",
        ),
        (Some(client_key.as_str()), "this is a client key"),
        (None, "no write key"),
    ] {
        let refused = segment(&pod, "/v1/batch", key, &fresh, false);
        assert_eq!(refused.status, 401, "{}", refused.body);
        assert!(
            refused.json()["message"]
                .as_str()
                .is_some_and(|m| m.contains(what)),
            "{}",
            refused.body
        );
    }
    let nameless = json!({"batch": [{"type": "track", "userId": "u1", "messageId": "m-x"}]});
    let refused = segment(
        &pod,
        "/v1/batch",
        Some(&write_key),
        &serde_json::to_vec(&nameless).expect("json"),
        true,
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("batch[0].event: is missing")),
        "{}",
        refused.body
    );
    let filler = "x".repeat(30 * 1024);
    let oversized: Vec<Value> = (0..20)
        .map(|i| {
            track(
                &format!("m-big-{i}"),
                "Order Completed",
                json!({"revenue": 1, "currency": filler}),
                &at,
            )
        })
        .collect();
    let refused = segment(
        &pod,
        "/v1/batch",
        Some(&write_key),
        &serde_json::to_vec(&json!({"batch": oversized})).expect("json"),
        true,
    );
    assert_eq!(
        (refused.status, refused.json()["code"].as_str()),
        (400, Some("payload_too_large")),
        "{}",
        refused.body
    );
    // Over the limit before any inflating: Segment's 400, not a bare 413.
    let plain: Vec<Value> = oversized.iter().take(17).cloned().collect();
    let refused = segment(
        &pod,
        "/v1/batch",
        Some(&write_key),
        &serde_json::to_vec(&json!({"batch": plain})).expect("json"),
        false,
    );
    assert_eq!(
        (refused.status, refused.json()["code"].as_str()),
        (400, Some("payload_too_large")),
        "{}",
        refused.body
    );
    let mut not_gzip = agent()
        .post(format!("{}/v1/batch", pod.api_url()))
        .header("Authorization", basic(&write_key))
        .header("Content-Encoding", "gzip");
    not_gzip = not_gzip.header("Content-Type", "application/json");
    let refused = answer(not_gzip.send(&fresh[..]).expect("answers"));
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["message"]
            .as_str()
            .is_some_and(|m| m.contains("gzip does not inflate")),
        "{}",
        refused.body
    );
    let refused = segment(
        &pod,
        "/v1/batch",
        Some(&write_key),
        br#"{"batch": {"type": "track"}}"#,
        false,
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.json()["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("batch: must be an array")),
        "{}",
        refused.body
    );
    let after = stats(&pod);
    assert_eq!(
        (after["stored"].clone(), after["quarantined"].clone()),
        (before["stored"].clone(), before["quarantined"].clone())
    );

    // A revoked source's key opens nothing, through the running node.
    pod.json(&["source", "revoke", "web"]);
    let refused = segment(&pod, "/v1/batch", Some(&write_key), &fresh, false);
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(features(&pod, &client_key, None).status, 401);
    assert_eq!(stats(&pod)["stored"], after["stored"]);

    // An operator sees it all in /metrics.
    let (code, metrics) = pod.get("/metrics");
    assert_eq!(code, 200);
    for (outcome, count) in [
        ("segment_accepted", 4),
        ("segment_unauthorized", 4),
        ("segment_refused", 5),
        ("features_unauthorized", 1),
    ] {
        let line = format!("growthmesh_app_requests_total{{outcome=\"{outcome}\"}} {count}\n");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    daemon.stop();
}

#[test]
fn features_are_the_running_experiments_with_an_etag_and_a_stream() {
    let (_council, pod) = federation_with_schemas(&["Order Completed", "Page Viewed"]);
    // `checkout` (0.4/0.6, hash version 1) stays a draft until started below.
    start_pricing_experiments(&pod);
    let app = pod.json(&["source", "add", "app"]);
    let client_key = app["client_key"].as_str().expect("client key").to_owned();
    let write_key = app["write_key"].as_str().expect("write key").to_owned();
    let daemon = pod.start(&[]);

    let first = features(&pod, &client_key, None);
    assert_eq!(first.status, 200, "{}", first.body);
    let payload = first.json();
    let served: Vec<&String> = payload["features"]
        .as_object()
        .expect("features")
        .keys()
        .collect();
    assert_eq!(
        served,
        ["pricing-high", "pricing-low"],
        "a draft is not served"
    );
    let rule = &payload["features"]["pricing-high"]["rules"][0];
    assert_eq!(rule["variations"], json!(["control", "plus", "premium"]));
    assert_eq!(
        (rule["hashVersion"].as_u64(), rule["coverage"].as_f64()),
        (Some(2), Some(0.8))
    );
    assert_eq!(rule["namespace"], json!(["pricing", 0.5, 1.0]));
    assert!(
        payload["dateUpdated"]
            .as_str()
            .is_some_and(|d| d.ends_with('Z'))
    );
    let etag = first.etag.clone().expect("an ETag");
    let unchanged = features(&pod, &client_key, Some(&etag));
    assert_eq!((unchanged.status, unchanged.body.as_str()), (304, ""));
    assert_eq!(
        features(&pod, &write_key, None).status,
        401,
        "a write key loads no features"
    );
    assert_eq!(features(&pod, "sdk-nope", None).status, 401);

    // The stream sends the payload now, and again when the registry changes what is served.
    let mut stream = sse(&pod, &client_key);
    let now = next_features_event(&mut stream);
    assert_eq!(now["features"].as_object().map(|f| f.len()), Some(2));
    pod.json(&["experiment", "start", "checkout"]);
    let updated = next_features_event(&mut stream);
    assert!(updated["features"]["checkout"].is_object(), "{updated}");
    assert_eq!(
        updated["features"]["checkout"]["rules"][0]["weights"],
        json!([0.4, 0.6])
    );
    let changed = features(&pod, &client_key, Some(&etag));
    assert_eq!(changed.status, 200, "the ETag changed with the payload");
    assert!(changed.json()["dateUpdated"].as_str() >= payload["dateUpdated"].as_str());
    pod.json(&["experiment", "stop", "pricing-low"]);
    let stopped = next_features_event(&mut stream);
    assert!(
        stopped["features"].get("pricing-low").is_none(),
        "a stopped experiment is not served: {stopped}"
    );

    // Every served experiment assigns as `growthmesh assign` does: evaluated here as the SDKs do, from the rule.
    let payload = features(&pod, &client_key, None).json();
    for (key, feature) in payload["features"].as_object().expect("features") {
        for n in 0..40 {
            let user = format!("user-{n}");
            let expected = pod.json(&["assign", "--experiment", key, "--user", &user]);
            let rule = &feature["rules"][0];
            let got = evaluate(rule, &user);
            let variation = expected["variation"].as_u64().map(|v| v as usize);
            assert_eq!(got, variation, "{key} for {user}: {rule}");
        }
    }
    daemon.stop();
}

/// GrowthBook's experiment rule evaluated as its SDKs do (hash, namespace, coverage, weights), written from the
/// SDK documentation rather than through `assign`, so that a payload field the SDK reads differently fails here.
fn evaluate(rule: &Value, user: &str) -> Option<usize> {
    let fnv = |text: &str| -> u32 {
        text.encode_utf16().fold(0x811c_9dc5u32, |h, unit| {
            (h ^ u32::from(unit)).wrapping_mul(0x0100_0193)
        })
    };
    let hash = |seed: &str, value: &str, version: u64| -> f64 {
        if version == 2 {
            f64::from(fnv(&fnv(&format!("{seed}{value}")).to_string()) % 10_000) / 10_000.0
        } else {
            f64::from(fnv(&format!("{value}{seed}")) % 1_000) / 1_000.0
        }
    };
    if let Some(namespace) = rule["namespace"].as_array() {
        let n = hash(&format!("__{}", namespace[0].as_str()?), user, 1);
        if !(namespace[1].as_f64()? <= n && n < namespace[2].as_f64()?) {
            return None;
        }
    }
    let n = hash(
        rule["seed"].as_str()?,
        user,
        rule["hashVersion"].as_u64().unwrap_or(1),
    );
    let coverage = rule["coverage"].as_f64().unwrap_or(1.0);
    let mut start = 0.0;
    for (i, weight) in rule["weights"].as_array()?.iter().enumerate() {
        let end = start + coverage * weight.as_f64()?;
        if start <= n && n < end {
            return Some(i);
        }
        start += weight.as_f64()?;
    }
    None
}

/// An open `GET /sub/<client key>`.
struct Stream {
    reader: std::io::BufReader<std::net::TcpStream>,
}

fn sse(node: &Node, client_key: &str) -> Stream {
    let address = node.api_url().trim_start_matches("http://").to_owned();
    let mut tcp = std::net::TcpStream::connect(&address).expect("connects");
    tcp.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        tcp,
        "GET /sub/{client_key} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("request");
    let mut reader = std::io::BufReader::new(tcp);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains(" 200 "), "{status}");
    Stream { reader }
}

/// The data of the next `features` event (chunked framing lines and comments skipped).
fn next_features_event(stream: &mut Stream) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut event = String::new();
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        stream
            .reader
            .read_line(&mut line)
            .expect("the stream stays open");
        let text = line.trim_end();
        if let Some(name) = text.strip_prefix("event:") {
            event = name.trim().to_owned();
        } else if let Some(data) = text.strip_prefix("data:")
            && event == "features"
        {
            return serde_json::from_str(data.trim()).expect("the event's data is the payload");
        }
    }
    panic!("no features event within 30 s");
}
