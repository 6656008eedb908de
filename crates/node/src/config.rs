//! `node::Config`: every setting of a running node, each with a default, read from TOML (`config/node.example.toml`
//! documents them all); command-line flags override the file.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

/// Settings of `growthmesh node`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// libp2p listen addresses.
    pub listen_addrs: Vec<String>,
    /// Peers to dial at start (multiaddrs, with or without `/p2p/PEER_ID`).
    pub bootstrap_addrs: Vec<String>,
    /// Discover peers on the LAN with mDNS.
    pub mdns: bool,
    /// Serve as a relay for members behind NAT (members only); for nodes others can dial.
    pub relay_server: bool,
    /// Address of the local control API (always loopback).
    pub api_addr: SocketAddr,
    /// A summary (digest and count) is announced this often (anti-entropy; see `Announcement::summary`).
    pub announce_interval_ms: u64,
    /// A change written on this node is announced after this quiet period (debounce).
    pub announce_debounce_ms: u64,
    /// Heads that changed only by changes pulled from peers are announced after this quiet period.
    pub relay_announce_debounce_ms: u64,
    /// Period of the node's housekeeping tick (timeouts, announcements).
    pub tick_ms: u64,
    /// Rejected changes from one peer before it is penalized once more.
    pub rejections_per_penalty: u64,
    /// A pod's node measures its key results from its own events and publishes changed values this often, the
    /// first time at start; 0 turns it off (`okr kr refresh` still works).
    pub kr_refresh_interval_ms: u64,
    /// A pod's node computes its scorecard this often and publishes it when its numbers changed (and at least
    /// every [`SCORECARD_HEARTBEAT_MS`], so subscribers see how fresh it is); 0 turns publishing off.
    pub scorecard_interval_ms: u64,
    /// The node deletes raw events past their schema's `retention_days` this often, the first time at start; 0
    /// turns it off (`events purge` still works).
    pub retention_interval_ms: u64,
    /// Transport limits.
    pub limits: net::Limits,
}

/// A pod republishes an unchanged scorecard this often.
pub const SCORECARD_HEARTBEAT_MS: u64 = 60_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen_addrs: vec![
                "/ip4/0.0.0.0/tcp/0".into(),
                "/ip4/0.0.0.0/udp/0/quic-v1".into(),
            ],
            bootstrap_addrs: Vec::new(),
            mdns: true,
            relay_server: false,
            api_addr: SocketAddr::from(([127, 0, 0, 1], 7420)),
            announce_interval_ms: 5_000,
            announce_debounce_ms: 50,
            relay_announce_debounce_ms: 500,
            tick_ms: 100,
            rejections_per_penalty: 1,
            kr_refresh_interval_ms: 60 * 60 * 1000,
            scorecard_interval_ms: 10_000,
            retention_interval_ms: 60 * 60 * 1000,
            limits: net::Limits::default(),
        }
    }
}

/// Why a config file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`Config`].
    #[error("config {path}: {detail}")]
    Parse {
        /// The file.
        path: String,
        /// What toml said (with line and column).
        detail: String,
    },
}

impl Config {
    /// Reads a TOML file; absent settings keep their defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_empty_is_default() {
        let example = include_str!("../../../config/node.example.toml");
        let parsed: Config = toml::from_str(example).expect("example parses");
        assert_eq!(parsed.api_addr.port(), 7420);
        let empty: Config = toml::from_str("").expect("empty parses");
        assert_eq!(empty, Config::default());
        let error = toml::from_str::<Config>("listen = 3").expect_err("unknown field");
        assert!(error.to_string().contains("listen"), "{error}");
    }
}
