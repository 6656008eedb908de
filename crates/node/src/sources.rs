//! App sources: what an app holds instead of the node's admin token. Each source has a write key (events in,
//! Segment-style) and a client key (features out, GrowthBook-style), each good for exactly that. Sources are this
//! node's own (kept in its store, never replicated), listed and revoked by its operator.

use serde::{Deserialize, Serialize};

use crate::api::constant_time_eq;
use crate::{Error, Node};

/// Prefix of a write key.
pub const WRITE_KEY_PREFIX: &str = "wk_";
/// Prefix of a client key (GrowthBook's SDK keys look alike).
pub const CLIENT_KEY_PREFIX: &str = "sdk-";

/// An app source and its keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Its name (a slug).
    pub name: String,
    /// Sends events (`POST /v1/batch` and its kin): nothing else.
    pub write_key: String,
    /// Loads the features (`GET /api/features/<client_key>`): nothing else.
    pub client_key: String,
    /// When it was added (Unix ms).
    pub created_at_ms: i64,
    /// When it was revoked (Unix ms); a revoked source's keys open nothing.
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
}

impl Source {
    /// Whether its keys still open anything.
    pub fn active(&self) -> bool {
        self.revoked_at_ms.is_none()
    }
}

/// Why a source was not added or revoked.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Not a slug.
    #[error(transparent)]
    Name(#[from] model::Error),
    /// An active source has that name.
    #[error("NAME: a source named `{0}` exists; revoke it first or pick another name")]
    Exists(String),
    /// No active source has that name.
    #[error("NAME: no active source named `{0}` (`growthmesh source list`)")]
    Unknown(String),
    /// The store failed.
    #[error(transparent)]
    Store(Box<Error>),
}

impl From<store::Error> for SourceError {
    fn from(error: store::Error) -> Self {
        Self::Store(Box::new(Error::Store(error)))
    }
}

/// The active sources, shared by the node and its HTTP API: the API authenticates each app request here, without a
/// trip through the node's actor, and a revocation takes effect on the next request.
#[derive(Clone, Debug, Default)]
pub struct SourceIndex(std::sync::Arc<std::sync::RwLock<Vec<Source>>>);

impl SourceIndex {
    fn replace(&self, sources: Vec<Source>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            sources.into_iter().filter(Source::active).collect();
    }

    fn find(&self, matches: impl Fn(&Source) -> bool) -> Option<Source> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|s| matches(s))
            .cloned()
    }

    /// The active source whose write key is `key` (compared in constant time), if any.
    pub fn by_write_key(&self, key: &str) -> Option<Source> {
        self.find(|s| constant_time_eq(s.write_key.as_bytes(), key.as_bytes()))
    }

    /// The active source whose client key is `key` (compared in constant time), if any.
    pub fn by_client_key(&self, key: &str) -> Option<Source> {
        self.find(|s| constant_time_eq(s.client_key.as_bytes(), key.as_bytes()))
    }
}

/// A random key: `prefix` then 48 hex digits (192 bits).
fn key(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 24]>()))
}

impl Node {
    /// The app sources this node holds, by name.
    pub fn sources(&self) -> Result<Vec<Source>, Error> {
        let mut sources = Vec::new();
        for bytes in self.store.sources()? {
            match serde_json::from_slice::<Source>(&bytes) {
                Ok(source) => sources.push(source),
                Err(error) => tracing::warn!(%error, "an unreadable source record is skipped"),
            }
        }
        Ok(sources)
    }

    /// Adds app source `name` with fresh keys (a revoked source's name may be reused).
    pub fn add_source(&mut self, name: &str, now_ms: i64) -> Result<Source, SourceError> {
        model::validate_slug("NAME", name)?;
        let sources = self
            .sources()
            .map_err(|e| SourceError::Store(Box::new(e)))?;
        if sources.iter().any(|s| s.name == name && s.active()) {
            return Err(SourceError::Exists(name.to_owned()));
        }
        let source = Source {
            name: name.to_owned(),
            write_key: key(WRITE_KEY_PREFIX),
            client_key: key(CLIENT_KEY_PREFIX),
            created_at_ms: now_ms,
            revoked_at_ms: None,
        };
        self.store
            .put_source(name, &serde_json::to_vec(&source).unwrap_or_default())?;
        self.refresh_sources();
        tracing::info!(source = name, "app source added");
        Ok(source)
    }

    /// Revokes app source `name`: its keys open nothing from now on.
    pub fn revoke_source(&mut self, name: &str, now_ms: i64) -> Result<Source, SourceError> {
        let sources = self
            .sources()
            .map_err(|e| SourceError::Store(Box::new(e)))?;
        let Some(mut source) = sources.into_iter().find(|s| s.name == name && s.active()) else {
            return Err(SourceError::Unknown(name.to_owned()));
        };
        source.revoked_at_ms = Some(now_ms);
        self.store
            .put_source(name, &serde_json::to_vec(&source).unwrap_or_default())?;
        self.refresh_sources();
        tracing::info!(source = name, "app source revoked");
        Ok(source)
    }

    /// The active sources as an index shared with the HTTP API, kept up to date by [`Node::add_source`] and
    /// [`Node::revoke_source`].
    pub fn source_index(&self) -> SourceIndex {
        self.sources.clone()
    }

    /// Loads the index from the store (an unreadable store leaves it empty: no app key opens anything).
    pub(crate) fn refresh_sources(&self) {
        match self.sources() {
            Ok(sources) => self.sources.replace(sources),
            Err(error) => {
                tracing::error!(%error, "reading the app sources failed; no app key is accepted");
                self.sources.replace(Vec::new());
            }
        }
    }

    /// The active source whose write key is `key` (compared in constant time), if any.
    pub fn source_by_write_key(&self, key: &str) -> Option<Source> {
        self.sources.by_write_key(key)
    }

    /// The active source whose client key is `key` (compared in constant time), if any.
    pub fn source_by_client_key(&self, key: &str) -> Option<Source> {
        self.sources.by_client_key(key)
    }
}

#[cfg(test)]
mod tests {
    use crate::Node;

    #[test]
    fn a_source_has_two_keys_each_for_one_thing_and_revocation_closes_both() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut node = Node::open(dir.path()).expect("opens");
        let web = node.add_source("web", 1).expect("added");
        assert!(web.write_key.starts_with("wk_") && web.client_key.starts_with("sdk-"));
        assert_ne!(web.write_key, web.client_key);
        assert!(
            node.add_source("web", 2).is_err(),
            "one active source per name"
        );
        assert!(node.add_source("Not A Slug", 2).is_err());
        // A write key is not a client key, nor the reverse.
        assert!(node.source_by_client_key(&web.write_key).is_none());
        assert!(node.source_by_write_key(&web.client_key).is_none());
        assert_eq!(node.source_by_write_key(&web.write_key), Some(web.clone()));
        node.revoke_source("web", 3).expect("revoked");
        assert!(node.source_by_write_key(&web.write_key).is_none());
        assert!(node.source_by_client_key(&web.client_key).is_none());
        assert!(node.revoke_source("web", 4).is_err(), "already revoked");
        // The name is free again, with new keys.
        let again = node.add_source("web", 5).expect("re-added");
        assert_ne!(again.write_key, web.write_key);
    }
}
