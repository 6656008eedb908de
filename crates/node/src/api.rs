//! The local HTTP API of a running node (loopback only): `/health` and `/metrics` for operators, and, behind a bearer
//! token, `/v1/status`, `/v1/exec` (a CLI command run against the node's own store), `/v1/events` (ingestion) and
//! `/v1/block` (the operator's block set: cut this node off from chosen peers, as the partition simulator does).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::{mpsc, oneshot};

use crate::actor::{ExecRequest, Input};
use crate::remote::{BlockRequest, PublishRequest, StatusDocument};

/// Largest body `POST /v1/events` takes.
pub const MAX_EVENTS_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Shared by the handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The actor's inbox.
    pub inbox: mpsc::Sender<Input>,
    /// The bearer token.
    pub token: String,
}

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
        .with_state(state)
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
    match ask(&state, |reply| Input::Metrics { reply }).await {
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
