//! The local HTTP API of a running node (loopback only): `/health` and `/metrics` for operators, and, behind a bearer
//! token, `/v1/status`, `/v1/exec` (a CLI command run against the node's own store), `/v1/events` (ingestion) and
//! `/v1/block` (the operator's block set: cut this node off from chosen peers, as the partition simulator does).
//!
//! For apps, with an app source's keys instead of the token (see `sources`): Segment's tracking API
//! (`POST /v1/batch`, `/v1/import`, `/v1/track`, `/v1/page`, `/v1/screen`, `/v1/identify`, `/v1/group`, `/v1/alias`;
//! Basic auth with the write key as user name, or `writeKey` in the body) and GrowthBook's features endpoint
//! (`GET /api/features/<client key>`, with ETag) and its server-sent events stream (`GET /sub/<client key>`).

use std::io::Read;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use tokio::sync::{mpsc, oneshot, watch};

use crate::actor::{ExecRequest, Input};
use crate::features::Features;
use crate::remote::{BlockRequest, PublishRequest, StatusDocument};
use crate::segment::{self, BadRequest, Call, Endpoint};
use crate::sources::SourceIndex;

/// Largest body `POST /v1/events` takes.
pub const MAX_EVENTS_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Shared by the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The actor's inbox.
    pub inbox: mpsc::Sender<Input>,
    /// The bearer token.
    pub token: String,
    /// The active app sources (their write and client keys).
    pub sources: SourceIndex,
    /// The features payload as it stands (`None` until the node computed it).
    pub features: watch::Receiver<Option<Arc<Features>>>,
    /// Feature streams open now (at most [`MAX_STREAMS`]).
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// App requests answered, by outcome.
    pub app_requests: Arc<AppRequests>,
}

/// App requests answered, by outcome (`segment_accepted`, `segment_unauthorized`, `features_not_modified`...), for
/// `/metrics`: an operator sees an app sending with a revoked key or malformed batches.
#[derive(Debug, Default)]
pub struct AppRequests(std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>);

impl AppRequests {
    fn count(&self, outcome: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(outcome)
            .or_default() += 1;
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }
}

/// Feature streams a node keeps open at once; more are refused with 503 until some close.
pub const MAX_STREAMS: usize = 1024;

/// The API routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/exec", post(exec))
        .route("/v1/block", post(block))
        .route("/v1/publish", post(publish))
        .route(
            "/v1/events",
            post(events).layer(axum::extract::DefaultBodyLimit::max(MAX_EVENTS_BODY_BYTES)),
        )
        .merge(app_routes())
        .with_state(state)
}

/// The routes an app uses with its source's keys.
fn app_routes() -> Router<ApiState> {
    let mut router = Router::new();
    let mut add = |path: &'static str, endpoint: Endpoint| {
        // The handler reads the body under Segment's limit itself, so that an oversized body gets Segment's answer
        // (400 with a JSON reason), not the framework's 413.
        let route = post(
            move |state: State<ApiState>, headers: HeaderMap, body: axum::body::Body| {
                segment_call(state, headers, body, endpoint)
            },
        )
        .options(preflight)
        .layer(axum::extract::DefaultBodyLimit::disable());
        router = std::mem::take(&mut router).route(path, route);
    };
    add("/v1/batch", Endpoint::Batch);
    // Segment's import endpoint is the batch endpoint under another name.
    add("/v1/import", Endpoint::Batch);
    for call in Call::ALL {
        let path: &'static str = match call {
            Call::Track => "/v1/track",
            Call::Page => "/v1/page",
            Call::Screen => "/v1/screen",
            Call::Identify => "/v1/identify",
            Call::Group => "/v1/group",
            Call::Alias => "/v1/alias",
        };
        add(path, Endpoint::One(call));
    }
    router
        .route("/api/features/{key}", get(features).options(preflight))
        .route("/sub/{key}", get(subscribe))
}

fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", state.token);
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<T>) -> Input,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    state
        .inbox
        .send(make(reply))
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "node is shutting down").into_response())?;
    answer
        .await
        .map_err(|_| (StatusCode::SERVICE_UNAVAILABLE, "node is shutting down").into_response())
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let app = state.app_requests.snapshot();
    match ask(&state, |reply| Input::Metrics { app, reply }).await {
        Ok(text) => ([("content-type", crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(response) => response,
    }
}

async fn status(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    match ask(&state, |reply| Input::Status { reply }).await {
        Ok((network, heads)) => Json(StatusDocument { network, heads }).into_response(),
        Err(response) => response,
    }
}

async fn exec(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(request): Json<ExecRequest>,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    match ask(&state, |reply| Input::Exec { request, reply }).await {
        Ok(response) => Json(response).into_response(),
        Err(response) => response,
    }
}

/// `POST /v1/events`: a JSON array of track calls or JSON lines, ingested like `growthmesh ingest`.
async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    match ask(&state, |reply| Input::Events {
        body: body.to_vec(),
        reply,
    })
    .await
    {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(message)) => (StatusCode::BAD_REQUEST, message).into_response(),
        Err(response) => response,
    }
}

/// `POST /v1/block`: `{"peers": [PEER_ID, ...]}` replaces the operator's block set; `{"peers": []}` lifts it.
async fn block(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(request): Json<BlockRequest>,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    let mut peers = std::collections::BTreeSet::new();
    for text in &request.peers {
        match text.parse::<net::PeerId>() {
            Ok(peer) => {
                peers.insert(peer);
            }
            Err(error) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("`{text}` is not a peer id: {error}"),
                )
                    .into_response();
            }
        }
    }
    let count = peers.len();
    match ask(&state, |reply| Input::Block { peers, reply }).await {
        Ok(Ok(())) => Json(serde_json::json!({ "blocked": count })).into_response(),
        Ok(Err(message)) => (StatusCode::BAD_REQUEST, message).into_response(),
        Err(response) => response,
    }
}

/// `POST /v1/publish`: `{"topic": "scorecards", "payload_hex": "..."}` publishes the bytes as they are on the
/// federation's gossip topic, as any member's node can: how an operator checks that the federation refuses forged,
/// replayed or garbage messages (every receiving node checks them as it checks its peers' own).
async fn publish(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(request): Json<PublishRequest>,
) -> Response {
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
    }
    let Some(topic) = net::Topic::ALL
        .into_iter()
        .find(|t| t.as_str() == request.topic)
    else {
        let names: Vec<&str> = net::Topic::ALL.iter().map(|t| t.as_str()).collect();
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "topic `{}` is not one of {}",
                request.topic,
                names.join(", ")
            ),
        )
            .into_response();
    };
    let bytes = match hex::decode(&request.payload_hex) {
        Ok(bytes) if bytes.len() <= MAX_PUBLISH_BYTES => bytes,
        Ok(bytes) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "payload of {} bytes is over the {MAX_PUBLISH_BYTES}-byte limit",
                    bytes.len()
                ),
            )
                .into_response();
        }
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("payload_hex: {error}")).into_response();
        }
    };
    let len = bytes.len();
    match ask(&state, |reply| Input::Publish {
        topic,
        bytes,
        reply,
    })
    .await
    {
        Ok(()) => {
            Json(serde_json::json!({ "published": len, "topic": topic.as_str() })).into_response()
        }
        Err(response) => response,
    }
}

/// The largest message `/v1/publish` takes (gossip's own limit is larger; a scorecard is far smaller).
const MAX_PUBLISH_BYTES: usize = 64 * 1024;

/// A JSON error body as Segment's SDKs read it (`code`, `message`).
fn app_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    tracing::debug!(%status, code, %message, "app request refused");
    (
        status,
        cors(),
        Json(serde_json::json!({ "success": false, "code": code, "message": message })),
    )
        .into_response()
}

/// Browsers' SDKs call from any origin with the app's keys; those keys open nothing else.
fn cors() -> [(header::HeaderName, HeaderValue); 3] {
    [
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(
                "authorization, content-type, content-encoding, if-none-match",
            ),
        ),
        (
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("etag, x-sse-support"),
        ),
    ]
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        cors(),
        [(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        )],
    )
        .into_response()
}

/// The user name of Basic auth (Segment's write key; the password is empty). `Ok(None)` without the header.
fn basic_user(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let wrong =
        || "authorization: use Basic auth with the source's write key as user name".to_owned();
    let text = value.to_str().map_err(|_| wrong())?;
    let (scheme, encoded) = text.split_once(' ').ok_or_else(wrong)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(wrong());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| wrong())?;
    let decoded = String::from_utf8(decoded).map_err(|_| wrong())?;
    let user = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(user, _)| user);
    Ok(Some(user.to_owned()))
}

/// The body as sent, inflated when `Content-Encoding: gzip`, never past Segment's size limit.
fn inflate(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, BadRequest> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(body.to_vec()),
        Some("gzip" | "x-gzip") => {
            let limit = segment::MAX_BATCH_BYTES as u64 + 1;
            let mut inflated = Vec::with_capacity(body.len() * 4);
            flate2::read::MultiGzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut inflated)
                .map_err(|e| BadRequest::Malformed(format!("body: gzip does not inflate: {e}")))?;
            if inflated.len() as u64 >= limit {
                return Err(BadRequest::TooLarge(format!(
                    "body: inflates to more than Segment's limit of {} KB per request",
                    segment::MAX_BATCH_BYTES / 1024
                )));
            }
            Ok(inflated)
        }
        Some(other) => Err(BadRequest::Malformed(format!(
            "content-encoding: `{other}` is not supported (gzip, or none)"
        ))),
    }
}

fn bad_request(error: &BadRequest) -> Response {
    app_error(StatusCode::BAD_REQUEST, error.code(), error.to_string())
}

/// Why a key opens nothing here, saying so when it is the other kind of key.
fn wrong_key(sources: &SourceIndex, key: &str, wanted: &str) -> Response {
    let message = match wanted {
        "write" if sources.by_client_key(key).is_some() => {
            "this is a client key: it loads features (GET /api/features/<client key>); events need the source's write key".to_owned()
        }
        "client" if sources.by_write_key(key).is_some() => {
            "this is a write key: it sends events (POST /v1/batch); features need the source's client key".to_owned()
        }
        _ => format!("no active source has this {wanted} key (`growthmesh source list`; revoked keys open nothing)"),
    };
    app_error(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Bytes of an oversized body read and dropped before answering, so that a client that writes its whole body before
/// reading (most HTTP clients) reads the 400 rather than a reset connection.
const MAX_DRAINED_BYTES: usize = 16 * 1024 * 1024;

/// The request body, at most Segment's limit.
async fn read_limited(body: axum::body::Body) -> Result<axum::body::Bytes, BadRequest> {
    use futures::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut held = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| BadRequest::Malformed(format!("body: not read to its end: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total <= segment::MAX_BATCH_BYTES {
            held.extend_from_slice(&chunk);
        } else if total > MAX_DRAINED_BYTES {
            break;
        }
    }
    if total > segment::MAX_BATCH_BYTES {
        return Err(BadRequest::TooLarge(format!(
            "body: {}{total} bytes, over Segment's limit of {} KB per request",
            if total > MAX_DRAINED_BYTES {
                "over "
            } else {
                ""
            },
            segment::MAX_BATCH_BYTES / 1024
        )));
    }
    Ok(held.into())
}

/// The outcome an app request is counted under, from its kind and answer.
fn outcome(kind: &'static str, status: StatusCode) -> &'static str {
    match (kind, status.as_u16()) {
        ("segment", 200) => "segment_accepted",
        ("segment", 400) => "segment_refused",
        ("segment", 401) => "segment_unauthorized",
        ("features", 200) => "features_served",
        ("features", 304) => "features_not_modified",
        ("features", 401) => "features_unauthorized",
        ("stream", 200) => "stream_opened",
        ("stream", 401) => "stream_unauthorized",
        (_, 503) => "unavailable",
        _ => "failed",
    }
}

/// Segment's tracking API: one request, authenticated by a write key, ingested by the node.
async fn segment_call(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: axum::body::Body,
    endpoint: Endpoint,
) -> Response {
    let counter = state.app_requests.clone();
    let response = match read_limited(body).await {
        Ok(body) => segment_answer(state, headers, body, endpoint).await,
        Err(error) => bad_request(&error),
    };
    counter.count(outcome("segment", response.status()));
    response
}

async fn segment_answer(
    state: ApiState,
    headers: HeaderMap,
    body: axum::body::Bytes,
    endpoint: Endpoint,
) -> Response {
    let received_ms = crate::actor::now_ms() as i64;
    let header_key = match basic_user(&headers) {
        Ok(key) => key,
        Err(message) => return app_error(StatusCode::UNAUTHORIZED, "unauthorized", message),
    };
    // A key in the header is checked before any work on the body.
    if let Some(key) = &header_key
        && state.sources.by_write_key(key).is_none()
    {
        return wrong_key(&state.sources, key, "write");
    }
    let parsed =
        inflate(&headers, &body).and_then(|body| segment::parse(endpoint, &body, received_ms));
    let request = match (parsed, &header_key) {
        (Ok(request), _) => request,
        (Err(error), Some(_)) => return bad_request(&error),
        // Without a key in the header, one in a body that does not parse is not found.
        (Err(_), None) => {
            return app_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "no write key: use Basic auth with the source's write key as user name",
            );
        }
    };
    let Some(key) = header_key.or_else(|| request.write_key.clone()) else {
        return app_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no write key: use Basic auth with the source's write key as user name",
        );
    };
    let Some(source) = state.sources.by_write_key(&key) else {
        return wrong_key(&state.sources, &key, "write");
    };
    match ask(&state, |reply| Input::Segment {
        source,
        request,
        reply,
    })
    .await
    {
        Ok(Ok(report)) => (
            StatusCode::OK,
            cors(),
            Json(serde_json::json!({
                "success": true,
                "accepted": report.accepted,
                "duplicates": report.duplicates,
                "quarantined": report.quarantined,
            })),
        )
            .into_response(),
        Ok(Err(message)) => app_error(StatusCode::INTERNAL_SERVER_ERROR, "store", message),
        Err(response) => response,
    }
}

/// GrowthBook's features endpoint: this pod's running experiments, for an active client key.
async fn features(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let response = features_answer(&state, &key, &headers);
    state
        .app_requests
        .count(outcome("features", response.status()));
    response
}

fn features_answer(state: &ApiState, key: &str, headers: &HeaderMap) -> Response {
    if state.sources.by_client_key(key).is_none() {
        return wrong_key(&state.sources, key, "client");
    }
    let Some(features) = state.features.borrow().clone() else {
        return app_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "the node is starting; try again",
        );
    };
    let etag = HeaderValue::from_str(&features.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',').any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == features.etag
            })
        });
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::HeaderName::from_static("x-sse-support"),
            HeaderValue::from_static("enabled"),
        ),
    ];
    if matches {
        return (StatusCode::NOT_MODIFIED, cors(), common).into_response();
    }
    (
        StatusCode::OK,
        cors(),
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        features.body.clone(),
    )
        .into_response()
}

/// How often an open stream checks that its client key is still active.
const STREAM_KEY_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// GrowthBook's streaming endpoint: a `features` event with the whole payload now and whenever it changes; the
/// stream ends when the client key is revoked.
async fn subscribe(State(state): State<ApiState>, Path(key): Path<String>) -> Response {
    let counter = state.app_requests.clone();
    let response = subscribe_answer(state, key);
    counter.count(outcome("stream", response.status()));
    response
}

fn subscribe_answer(state: ApiState, key: String) -> Response {
    if state.sources.by_client_key(&key).is_none() {
        return wrong_key(&state.sources, &key, "client");
    }
    let Some(slot) = StreamSlot::take(&state.streams) else {
        return app_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{MAX_STREAMS} feature streams are open; poll /api/features/<client key> instead"
            ),
        );
    };
    let sources = state.sources.clone();
    let mut receiver = state.features.clone();
    receiver.mark_changed();
    let stream = futures::stream::unfold((receiver, slot), move |(mut receiver, slot)| {
        let sources = sources.clone();
        let key = key.clone();
        async move {
            loop {
                let changed = match tokio::time::timeout(STREAM_KEY_CHECK, receiver.changed()).await
                {
                    Ok(Err(_)) => return None,
                    Ok(Ok(())) => true,
                    Err(_) => false,
                };
                sources.by_client_key(&key)?;
                if !changed {
                    continue;
                }
                let current = receiver.borrow_and_update().clone();
                if let Some(features) = current {
                    let event = Event::default()
                        .event("features")
                        .data(features.body.clone());
                    return Some((Ok::<_, std::convert::Infallible>(event), (receiver, slot)));
                }
            }
        }
    });
    (cors(), Sse::new(stream).keep_alive(KeepAlive::default())).into_response()
}

/// One open feature stream, counted while it lives.
struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl StreamSlot {
    fn take(open: &Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        use std::sync::atomic::Ordering;
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_STREAMS).then_some(n + 1)
        })
        .ok()
        .map(|_| Self(open.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
