//! A pod's node: its key, its store and its replica of the registry, and the operations the CLI (and later the
//! local API) ask of it.
//!
//! # Layout
//! - `lib.rs`: [`Node`]: open a data dir, write typed operations, read the view.
//! - `exchange.rs`: bundle import and export through the same acceptance path the network uses.
//! - `daemon.rs`: `growthmesh node`: opens the node, starts the network and the local API, runs the actor.
//! - `actor.rs`: the one thread that owns the [`Node`] while the daemon runs: network events, sync, invites,
//!   CLI commands arriving over the API, announcements.
//! - `api.rs`: the local HTTP API (axum): `/health`, `/metrics`, `/v1/status`, `/v1/exec`, `/v1/events`,
//!   `/v1/block`, `/v1/publish` behind the admin token; for apps, Segment's tracking API (`/v1/batch` and its
//!   kin, write key) and GrowthBook's `/api/features/<client key>` and `/sub/<client key>` (client key).
//! - `segment.rs`: Segment requests decoded and checked (limits, fields, clock skew) before ingestion.
//! - `features.rs`: the GrowthBook features payload: this pod's running experiments as SDK experiment rules.
//! - `metrics.rs`: `/metrics` in the OpenMetrics text format (prometheus-client): gauges, counters, families.
//! - `remote.rs`: the CLI side: find a running daemon for a data dir and hand it a command.
//! - `events.rs`: event ingestion into the store, the quarantine, and experiment analysis over stored events.
//! - `okr.rs`: live key results: this pod's key results measured over its own events and published signed.
//! - `invite.rs`: invite tickets and their redemption messages.
//! - `config.rs`: [`config::Config`], every setting with a default.
//! - `sources.rs`: app sources: the write and client keys an app uses instead of the admin token (this node's only).
//! - `nat.rs`: [`nat::NatView`], reachability and relayed/direct connections as `status` shows them.
//!
//! A data dir holds `node.key` (mode 0600), `name` (the node's display name) and `db/` (sled); while a node runs, `api.json` and `api.token`; after
//! `join`, `ticket` (until redeemed) and `bootstrap` (the ticket's addresses, dialed at every start). It holds no
//! absolute paths, so a copied data dir works.

pub mod actor;
pub mod api;
pub mod config;
pub mod daemon;
pub mod events;
mod exchange;
pub mod features;
pub mod invite;
pub mod metrics;
pub mod nat;
pub mod okr;
pub mod remote;
pub mod scorecards;
pub mod segment;
pub mod sources;

use std::path::{Path, PathBuf};

use identity::Keypair;
use model::{DocId, RegistryView};
use registry::{ChangeHash, Op, Replica};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use exchange::{ImportReport, ImportedRejection};

/// Name of the file holding a node's display name (written by `init --name`) inside a data dir.
pub const NAME_FILE: &str = "name";

/// Name of the database directory inside a data dir.
pub const DB_DIR_NAME: &str = "db";

/// Errors of node operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating or reading the data dir failed.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file is unusable.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The registry refused the operation.
    #[error(transparent)]
    Registry(#[from] registry::Error),
    /// The file is not a bundle at all.
    #[error("{path}: {source}")]
    Bundle {
        /// The file.
        path: String,
        /// Why.
        source: registry::bundle::BundleError,
    },
    /// The bundle belongs to no federation this replica can adopt.
    #[error("{0}")]
    NoGenesis(String),
}

/// The public identity of a node, as `init` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct IdentityInfo {
    /// Hex public key: what `member add` takes.
    pub public_key: String,
    /// libp2p peer id.
    pub peer_id: String,
    /// Federation id, once the replica belongs to one.
    pub federation: Option<String>,
    /// Whether the key was created by this call.
    pub created: bool,
}

/// The result of a write: the change made and the heads after it.
#[derive(Clone, Debug, Serialize)]
pub struct WriteOutcome {
    /// Hash of the change.
    pub change: String,
    /// Sorted heads of every document.
    pub heads: Vec<String>,
}

/// How long an envelope may wait for its dependencies before a running node drops it.
pub const PENDING_TTL_MS: u64 = 6 * 60 * 60 * 1000;

/// An open node: key, store and replica.
pub struct Node {
    dir: PathBuf,
    keypair: Keypair,
    key_created: bool,
    store: store::Store,
    replica: Replica,
    /// Received changes were committed without a flush since the last one.
    unflushed: bool,
    /// Own changes written again after a removal took out the originals, not yet shared.
    reissued: Vec<registry::Envelope>,
    /// The typed registry and its governance as of one set of heads (see [`Node::governance`]).
    derived: std::sync::Mutex<Derived>,
    /// The pods' scorecard snapshots accepted, loaded from the store on first use.
    board: Option<scorecard::Board>,
    /// The active app sources, shared with the HTTP API.
    sources: sources::SourceIndex,
}

/// The view and governance computed for one set of heads. Equal heads mean equal accepted and excluded changes, so
/// equal documents and facts: the view, and governance (a function of the view), are the same.
#[derive(Default)]
struct Derived {
    heads: Vec<ChangeHash>,
    view: Option<std::sync::Arc<RegistryView>>,
    governance: Option<std::sync::Arc<governance::Governance>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("key", &self.keypair.public())
            .field("replica", &self.replica)
            .finish()
    }
}

/// Envelopes of accepted changes, read from the store for sync responses.
struct StoreSource<'a>(&'a store::Store);

impl registry::sync::EnvelopeSource for StoreSource<'_> {
    fn envelope(&self, hash: &ChangeHash) -> Option<registry::Envelope> {
        let bytes = self.0.envelope_bytes(hash).ok()??;
        registry::Envelope::from_bytes(&bytes).ok()
    }
}

/// The default data dir: the user's data directory, `growthmesh` inside it.
pub fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("growthmesh")
}

impl Node {
    /// Opens the node in `dir`, creating the dir and the key when missing.
    pub fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::DataDir {
            path: dir.display().to_string(),
            source,
        })?;
        let (keypair, key_created) = Keypair::load_or_create(dir)?;
        let store = store::Store::open(&dir.join(DB_DIR_NAME))?;
        let replica = store.load()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            keypair,
            key_created,
            store,
            replica,
            unflushed: false,
            reissued: Vec::new(),
            derived: std::sync::Mutex::default(),
            board: None,
            sources: sources::SourceIndex::default(),
        }
        .with_sources())
    }

    fn with_sources(self) -> Self {
        self.refresh_sources();
        self
    }

    /// This node's identity.
    pub fn identity(&self) -> IdentityInfo {
        let public = self.keypair.public();
        IdentityInfo {
            public_key: public.to_hex(),
            peer_id: public.peer_id(),
            federation: self.replica.federation().map(|f| f.to_hex()),
            created: self.key_created,
        }
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This node's key.
    pub fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The replica (read-only).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The typed registry.
    pub fn view(&self) -> RegistryView {
        (*self.shared_view()).clone()
    }

    /// The typed registry, built once per set of heads and shared.
    pub fn shared_view(&self) -> std::sync::Arc<RegistryView> {
        let mut derived = self.derived();
        if let Some(view) = &derived.view {
            return view.clone();
        }
        let view = std::sync::Arc::new(self.replica.view());
        derived.view = Some(view.clone());
        view
    }

    /// Governance as the registry decides it (`governance::Governance::derive`), computed once per set of heads:
    /// listing, showing and starting experiments on an unchanged registry do not derive it again.
    pub fn governance(&self) -> std::sync::Arc<governance::Governance> {
        if let Some(governance) = &self.derived().governance {
            return governance.clone();
        }
        let view = self.shared_view();
        let governance = std::sync::Arc::new(governance::Governance::derive(&view));
        let mut derived = self.derived();
        if derived
            .view
            .as_ref()
            .is_some_and(|v| std::sync::Arc::ptr_eq(v, &view))
        {
            derived.governance = Some(governance.clone());
        }
        governance
    }

    /// The memo, emptied when the heads moved since it was filled.
    fn derived(&self) -> std::sync::MutexGuard<'_, Derived> {
        let mut derived = self
            .derived
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let heads = self.replica.heads();
        if derived.heads != heads {
            *derived = Derived {
                heads,
                ..Derived::default()
            };
        }
        derived
    }

    /// The typed view of the council document alone (members and roles live there).
    pub fn council_view(&self) -> RegistryView {
        self.replica.council_view()
    }

    /// Sorted heads as hex.
    pub fn heads(&self) -> Vec<String> {
        self.replica
            .heads()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The documents this node's key may write, as of the current council heads.
    pub fn writable_docs(&mut self) -> Vec<DocId> {
        let membership = self.replica.membership();
        let Some(standing) = membership.members.get(self.keypair.public().as_bytes()) else {
            return Vec::new();
        };
        if standing.revoked {
            return Vec::new();
        }
        let mut docs = vec![DocId::Council, DocId::Standards];
        if let Some(scope) = &standing.scope {
            docs.push(DocId::Pod(scope.clone()));
            docs.push(DocId::Partner(scope.clone()));
        }
        docs.retain(|d| d.writable_by(standing.role, standing.scope.as_deref()));
        docs
    }

    /// Founds a federation with this node's key as the founding council member.
    pub fn create_federation(&mut self, name: &str, now_ms: i64) -> Result<WriteOutcome, Error> {
        model::validate_text("--name", name, model::MAX_TITLE_BYTES)
            .map_err(registry::Error::from)?;
        // The founder is named as its node was at `init` (the federation's name when the node has none).
        let founder_name = std::fs::read_to_string(self.dir.join(NAME_FILE))
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| {
                !n.is_empty() && model::validate_text("name", n, model::MAX_TITLE_BYTES).is_ok()
            })
            .unwrap_or_else(|| name.to_owned());
        let founder = model::Member {
            public_key: self.keypair.public().to_hex(),
            name: founder_name,
            role: model::Role::Council,
            scope: None,
            admitted_by: self.keypair.public().to_hex(),
            admitted_at_ms: now_ms,
            revoked: false,
        };
        let outcome = self.write(
            &Op::Genesis {
                name: name.to_owned(),
                founder,
            },
            now_ms,
        )?;
        if let Some(federation) = self.replica.federation() {
            self.store.set_federation(federation)?;
        }
        Ok(outcome)
    }

    /// Writes one typed operation as this node's key; durable before it returns.
    pub fn write(&mut self, op: &Op, now_ms: i64) -> Result<WriteOutcome, Error> {
        let envelope = self.replica.write(&self.keypair, op, now_ms)?;
        // Durable before anything else sees it: a crash after this point cannot make the key sign a second change
        // at the same place, because the first is on disk.
        self.store.commit_written(&envelope)?;
        let op_json = serde_json::to_vec(op).expect("ops serialize");
        self.store.remember_own_op(&envelope.hash(), &op_json)?;
        self.store.maybe_snapshot(&self.replica, false)?;
        tracing::info!(change = %envelope.hash(), doc = %envelope.doc, "change written");
        Ok(WriteOutcome {
            change: envelope.hash().to_string(),
            heads: self.heads(),
        })
    }

    /// A short stable id for a new record: a hash of the author, the time and the distinguishing text.
    pub fn new_id(&self, prefix: &str, text: &str, now_ms: i64) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.keypair.public().as_bytes());
        hasher.update(now_ms.to_le_bytes());
        hasher.update(text.as_bytes());
        hasher.update(self.replica.len().to_le_bytes());
        let digest = hasher.finalize();
        format!("{prefix}-{}", hex::encode(&digest[..5]))
    }

    /// Feeds received envelopes to the acceptance rule and persists the outcome, durably.
    pub fn receive(
        &mut self,
        envelopes: Vec<registry::Envelope>,
    ) -> Result<registry::Receipt, Error> {
        let receipt = self.receive_deferred(envelopes)?;
        self.flush()?;
        Ok(receipt)
    }

    /// Like [`Node::receive`], leaving the flush to a later [`Node::flush`]: how a running node takes changes from
    /// peers (they still hold them, so a crash before the flush loses nothing the federation lacks).
    pub fn receive_deferred(
        &mut self,
        envelopes: Vec<registry::Envelope>,
    ) -> Result<registry::Receipt, Error> {
        let receipt = self.replica.receive_at(envelopes, actor::now_ms())?;
        self.store.commit_deferred(&receipt)?;
        self.unflushed = true;
        self.reissue_withdrawn(&receipt)?;
        self.store.maybe_snapshot(&self.replica, false)?;
        Ok(receipt)
    }

    /// Writes again, as new changes, this key's operations whose changes a removal took out only because they
    /// built on someone else's excluded change (writes are typed operations, so nothing honest is lost). Changes
    /// taken out for this key's own revocation or equivocation are not written again. Returns the new changes.
    pub fn reissue_withdrawn(
        &mut self,
        receipt: &registry::Receipt,
    ) -> Result<Vec<registry::Envelope>, Error> {
        let own = *self.keypair.public().as_bytes();
        let mut written = Vec::new();
        for withdrawn in &receipt.withdrawn {
            if withdrawn.reason != registry::Reason::DependsOnRejected {
                continue;
            }
            let Some(json) = self.store.own_op(&withdrawn.change, false)? else {
                continue;
            };
            let Ok(op) = serde_json::from_slice::<Op>(&json) else {
                tracing::warn!(change = %withdrawn.change, "remembered operation does not parse; not written again");
                continue;
            };
            if self.replica.is_revoked(&own) {
                break;
            }
            match self
                .replica
                .write(&self.keypair, &op, actor::now_ms() as i64)
            {
                Ok(envelope) => {
                    self.store.commit_written(&envelope)?;
                    self.store.own_op(&withdrawn.change, true)?;
                    self.store.remember_own_op(&envelope.hash(), &json)?;
                    tracing::info!(old = %withdrawn.change, new = %envelope.hash(), "own change taken out by a removal; written again");
                    written.push(envelope);
                }
                Err(error) => {
                    tracing::warn!(change = %withdrawn.change, %error, "own change taken out by a removal could not be written again");
                }
            }
        }
        if !written.is_empty() {
            self.reissued.extend(written.iter().cloned());
        }
        Ok(written)
    }

    /// Changes written again by [`Node::reissue_withdrawn`] since the last call, for the caller to share.
    pub fn take_reissued(&mut self) -> Vec<registry::Envelope> {
        std::mem::take(&mut self.reissued)
    }

    /// Drops envelopes that waited for their dependencies longer than [`PENDING_TTL_MS`].
    pub fn expire_pending(&mut self, now_ms: u64) -> Result<usize, Error> {
        let expired = self.replica.expire_pending(now_ms, PENDING_TTL_MS);
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "pending changes expired");
            let receipt = registry::Receipt {
                pending_resolved: expired.clone(),
                ..registry::Receipt::default()
            };
            self.store.commit_deferred(&receipt)?;
            self.unflushed = true;
        }
        Ok(expired.len())
    }

    /// Makes every deferred commit durable (nothing to do when there is none).
    pub fn flush(&mut self) -> Result<(), Error> {
        if self.unflushed {
            self.store.flush()?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// The stored envelope of an accepted change.
    pub fn stored_envelope(&self, hash: &ChangeHash) -> Option<registry::Envelope> {
        registry::sync::EnvelopeSource::envelope(&StoreSource(&self.store), hash)
    }

    /// Answers a peer's pull request from the stored envelopes, in wire form (`machine` resolves the head set the
    /// request names, remembers the heads sent, and penalizes a malformed request).
    pub fn sync_answer<P: Ord + Clone>(
        &self,
        machine: &mut registry::sync::SyncMachine<P>,
        peer: P,
        bytes: &[u8],
    ) -> Vec<u8> {
        machine.on_request(peer, bytes, &self.replica, &StoreSource(&self.store))
    }

    /// Adopts a federation (a joining node, from its ticket).
    pub fn adopt(&mut self, federation: registry::FederationId) -> Result<(), Error> {
        self.replica.adopt(federation)?;
        self.store.set_federation(federation)?;
        Ok(())
    }

    /// The data dir's path is not kept: a copied data dir works. This is the public key's standing now.
    pub fn standing(&mut self) -> Option<(model::Role, Option<String>, bool)> {
        let membership = self.replica.membership();
        membership
            .members
            .get(self.keypair.public().as_bytes())
            .map(|s| (s.role, s.scope.clone(), s.revoked))
    }

    /// Writes a snapshot now if any change is not covered by one.
    pub fn compact(&self) -> Result<bool, Error> {
        Ok(self.store.maybe_snapshot(&self.replica, true)?)
    }

    /// Disk size of the database.
    pub fn size_on_disk(&self) -> Result<u64, Error> {
        Ok(self.store.size_on_disk()?)
    }

    /// Parses hex heads.
    pub fn parse_heads(texts: &[String]) -> Result<Vec<ChangeHash>, Error> {
        texts
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.trim().is_empty())
            .map(|t| registry::parse_hash(t).map_err(Error::from))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn governance_is_derived_once_per_set_of_heads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut node = Node::open(dir.path()).expect("opens");
        node.create_federation("acme", 1_700_000_000_000)
            .expect("founded");
        let first = node.governance();
        assert!(
            Arc::ptr_eq(&first, &node.governance()),
            "an unchanged registry is not derived again"
        );
        assert!(Arc::ptr_eq(&node.shared_view(), &node.shared_view()));
        node.write(
            &Op::SetThreshold {
                quarter: "2026Q4".into(),
                cost: 5_000.0,
            },
            1_700_000_000_001,
        )
        .expect("the founder is on the council");
        let after = node.governance();
        assert!(!Arc::ptr_eq(&first, &after), "a write moves the heads");
        assert_eq!(
            node.shared_view().high_impact_thresholds.get("2026Q4"),
            Some(&5_000.0)
        );
        assert_eq!(*after, governance::Governance::derive(&node.view()));
    }
}
