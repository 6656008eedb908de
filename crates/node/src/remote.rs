//! The CLI's side of a running node: while `growthmesh node` runs it owns the store, so commands for its data dir are
//! handed to it over the local API. The daemon records where it listens (`api.json`) and a bearer token
//! (`api.token`, mode 0600) in the data dir.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::actor::{ExecRequest, ExecResponse, NetworkStatus};

/// File recording the API address of a running node.
pub const API_FILE_NAME: &str = "api.json";
/// File holding the API bearer token.
pub const TOKEN_FILE_NAME: &str = "api.token";
/// How long a CLI command waits for a starting node's API.
pub const STARTUP_WAIT_MS: u64 = 10_000;

/// Where a running node's API is.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiInfo {
    /// Address.
    pub addr: SocketAddr,
    /// Process id.
    pub pid: u32,
}

/// Errors talking to a running node.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The HTTP call failed.
    #[error("the node's API at {addr} did not answer: {detail}")]
    Http {
        /// Address.
        addr: SocketAddr,
        /// What failed.
        detail: String,
    },
}

/// A running node reachable over its API.
#[derive(Clone, Debug)]
pub struct Remote {
    info: ApiInfo,
    token: String,
    agent: ureq::Agent,
}

/// The status document of a running node: its network view and heads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusDocument {
    /// Network status.
    #[serde(flatten)]
    pub network: NetworkStatus,
    /// Sorted heads.
    pub heads: Vec<String>,
}

/// The body of `POST /v1/block`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BlockRequest {
    /// libp2p peer ids to block; the set replaces the previous one, empty lifts every operator block.
    pub peers: Vec<String>,
}

/// The body of `POST /v1/publish`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The gossip topic: `scorecards` or `heads`.
    pub topic: String,
    /// The message, hex-encoded, published as is.
    pub payload_hex: String,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The running node of `dir`, if one answers.
pub fn find(dir: &Path) -> Option<Remote> {
    let info: ApiInfo =
        serde_json::from_slice(&std::fs::read(dir.join(API_FILE_NAME)).ok()?).ok()?;
    let token = std::fs::read_to_string(dir.join(TOKEN_FILE_NAME))
        .ok()?
        .trim()
        .to_owned();
    let remote = Remote {
        info,
        token,
        agent: agent(Duration::from_secs(120)),
    };
    remote.healthy().then_some(remote)
}

/// Waits (up to [`STARTUP_WAIT_MS`]) for a node that holds the store of `dir` to bring up its API.
pub fn wait_for(dir: &Path) -> Option<Remote> {
    let deadline = std::time::Instant::now() + Duration::from_millis(STARTUP_WAIT_MS);
    while std::time::Instant::now() < deadline {
        if let Some(remote) = find(dir) {
            return Some(remote);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

impl Remote {
    /// The node's API address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.info.addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.info.addr)
    }

    fn http_error(&self, detail: impl ToString) -> RemoteError {
        RemoteError::Http {
            addr: self.info.addr,
            detail: detail.to_string(),
        }
    }

    /// Whether `/health` answers.
    pub fn healthy(&self) -> bool {
        agent(Duration::from_millis(1_000))
            .get(&self.url("/health"))
            .call()
            .is_ok_and(|r| r.status().is_success())
    }

    /// Runs a CLI command in the node.
    pub fn exec(&self, request: &ExecRequest) -> Result<ExecResponse, RemoteError> {
        let mut response = self
            .agent
            .post(&self.url("/v1/exec"))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(request)
            .map_err(|e| self.http_error(e))?;
        if !response.status().is_success() {
            return Err(self.http_error(format!("status {}", response.status())));
        }
        response
            .body_mut()
            .read_json()
            .map_err(|e| self.http_error(e))
    }

    /// Replaces the node's operator block set with `peers` (peer ids); empty lifts it and redials.
    pub fn block(&self, peers: &[String]) -> Result<(), RemoteError> {
        let request = BlockRequest {
            peers: peers.to_vec(),
        };
        let mut response = self
            .agent
            .post(&self.url("/v1/block"))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(&request)
            .map_err(|e| self.http_error(e))?;
        if !response.status().is_success() {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(self.http_error(format!("status {}: {body}", response.status())));
        }
        Ok(())
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> Result<String, RemoteError> {
        let mut response = self
            .agent
            .get(&self.url("/metrics"))
            .call()
            .map_err(|e| self.http_error(e))?;
        response
            .body_mut()
            .read_to_string()
            .map_err(|e| self.http_error(e))
    }

    /// The node's status.
    pub fn status(&self) -> Result<StatusDocument, RemoteError> {
        let mut response = self
            .agent
            .get(&self.url("/v1/status"))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .map_err(|e| self.http_error(e))?;
        response
            .body_mut()
            .read_json()
            .map_err(|e| self.http_error(e))
    }
}
