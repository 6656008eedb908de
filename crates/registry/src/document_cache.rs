//! Documents and memberships by heads, shared by replicas that run in one process and receive the same changes
//! (the simulator's nodes): a replica whose document reaches heads another replica's document reached already takes
//! that document instead of applying the changes again, membership as of council heads another replica computed is
//! not hydrated again, and the changes of a document that are not under given heads are listed once. A node does
//! not install one.
//!
//! All are sound because the heads of a document name its whole history (every change names its dependencies by
//! hash), and a document, like the membership read from it at some heads, is a function of its history alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use automerge::{Automerge, ChangeHash};

use crate::acceptance::Membership;

/// Documents a [`DocumentCache`] keeps; when full it starts over.
const DOCUMENT_ENTRIES: usize = 1 << 16;
/// Memberships a [`DocumentCache`] keeps; when full it starts over.
const MEMBERSHIP_ENTRIES: usize = 1 << 14;
/// Change lists a [`DocumentCache`] keeps; when full it starts over.
const CHANGE_LIST_ENTRIES: usize = 1 << 16;

/// Changes of a document with their dependencies, each after its dependencies.
pub(crate) type ChangeList = Arc<Vec<(ChangeHash, Vec<ChangeHash>)>>;

/// Documents by their heads and memberships by the council heads they are read at (see the module docs).
#[derive(Debug, Default)]
pub struct DocumentCache {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// By sorted heads (never empty: every empty document is alike but is no one's history).
    documents: HashMap<Vec<ChangeHash>, Arc<Automerge>>,
    /// By sorted council heads; `void` is left empty (it depends on the facts a replica holds, not on the heads).
    memberships: HashMap<Vec<ChangeHash>, Arc<Membership>>,
    /// By the document's sorted heads and the sorted heads given: its changes not under those.
    changes_since: HashMap<(Vec<ChangeHash>, Vec<ChangeHash>), ChangeList>,
}

impl DocumentCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Documents kept.
    pub fn documents(&self) -> usize {
        self.lock().documents.len()
    }

    /// The document at `heads` (sorted), if a replica kept it.
    pub(crate) fn document(&self, heads: &[ChangeHash]) -> Option<Arc<Automerge>> {
        self.lock().documents.get(heads).cloned()
    }

    /// Keeps `document`, whose heads are `heads` (sorted).
    pub(crate) fn keep_document(&self, heads: Vec<ChangeHash>, document: &Arc<Automerge>) {
        if heads.is_empty() {
            return;
        }
        let mut kept = self.lock();
        if kept.documents.len() >= DOCUMENT_ENTRIES {
            kept.documents.clear();
        }
        kept.documents.insert(heads, Arc::clone(document));
    }

    /// Membership as of `heads` (sorted council heads) with no void admissions, if a replica kept it.
    pub(crate) fn membership(&self, heads: &[ChangeHash]) -> Option<Arc<Membership>> {
        self.lock().memberships.get(heads).cloned()
    }

    /// Keeps `membership` (read at `heads`, sorted; `void` empty).
    pub(crate) fn keep_membership(&self, heads: Vec<ChangeHash>, membership: &Arc<Membership>) {
        debug_assert!(membership.void.is_empty(), "void depends on the facts");
        let mut kept = self.lock();
        if kept.memberships.len() >= MEMBERSHIP_ENTRIES {
            kept.memberships.clear();
        }
        kept.memberships.insert(heads, Arc::clone(membership));
    }

    /// The changes of the document at `heads` not under `given` (both sorted), if a replica kept them.
    pub(crate) fn changes_since(
        &self,
        heads: &[ChangeHash],
        given: &[ChangeHash],
    ) -> Option<ChangeList> {
        let key = (heads.to_vec(), given.to_vec());
        self.lock().changes_since.get(&key).cloned()
    }

    /// Keeps the changes of the document at `heads` not under `given` (both sorted).
    pub(crate) fn keep_changes_since(
        &self,
        heads: Vec<ChangeHash>,
        given: Vec<ChangeHash>,
        changes: &ChangeList,
    ) {
        let mut kept = self.lock();
        if kept.changes_since.len() >= CHANGE_LIST_ENTRIES {
            kept.changes_since.clear();
        }
        kept.changes_since
            .insert((heads, given), Arc::clone(changes));
    }

    fn lock(&self) -> MutexGuard<'_, Kept> {
        // A panic while the lock was held cannot leave a wrong entry behind (each insert is one entry).
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
