//! The acceptance rule's vocabulary: rejection reasons, and membership as of a set of council heads.

use std::collections::HashMap;
use std::fmt;

use model::{DocId, Role};

/// Why a change was rejected. The codes are stable: they appear in CLI output, metrics and simulation reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The signature does not verify.
    BadSignature,
    /// The author is not a member as of the change's auth heads.
    UnknownAuthor,
    /// The author's role may not write that document.
    NotAllowed,
    /// The author's revocation is an ancestor of its auth heads.
    Revoked,
    /// The change belongs to another federation.
    WrongFederation,
    /// The bytes do not form a valid envelope or change.
    Malformed,
    /// A dependency (or auth head) was rejected.
    DependsOnRejected,
    /// Too many changes are already waiting for dependencies.
    PendingFull,
    /// The author signed two different changes at the same place of one document (sequence number and actor):
    /// both branches from the fork point are out, on every replica that holds both.
    Equivocation,
}

impl Reason {
    /// The short code.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::UnknownAuthor => "unknown_author",
            Reason::NotAllowed => "not_allowed",
            Reason::Revoked => "revoked",
            Reason::WrongFederation => "wrong_federation",
            Reason::Malformed => "malformed",
            Reason::DependsOnRejected => "depends_on_rejected",
            Reason::PendingFull => "pending_full",
            Reason::Equivocation => "equivocation",
        }
    }

    /// Parses a code written by [`Reason::code`].
    pub fn from_code(code: &str) -> Option<Self> {
        [
            Reason::BadSignature,
            Reason::UnknownAuthor,
            Reason::NotAllowed,
            Reason::Revoked,
            Reason::WrongFederation,
            Reason::Malformed,
            Reason::DependsOnRejected,
            Reason::PendingFull,
            Reason::Equivocation,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

impl Reason {
    /// Whether a peer that sent a change refused for this reason could have seen the problem itself, and so
    /// earns a penalty. A change refused for what this replica holds (a revocation, an equivocation proof, a
    /// dependency it refused) is not the relayer's fault: honest peers relay such changes as evidence.
    pub fn penalizes(&self) -> bool {
        matches!(
            self,
            Reason::BadSignature | Reason::Malformed | Reason::WrongFederation
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One member's standing as of some council heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Its role.
    pub role: Role,
    /// Its pod or partner name.
    pub scope: Option<String>,
    /// Whether a revocation is in the history.
    pub revoked: bool,
}

/// Members and revocations as of some council heads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// Standing by public key bytes.
    pub members: HashMap<[u8; 32], Standing>,
    /// Keys whose admission is void (their invite was redeemed by another key), member records notwithstanding.
    pub void: std::collections::BTreeSet<[u8; 32]>,
}

impl Membership {
    /// Decides whether `author` may write `doc` under this membership.
    pub fn authorize(&self, author: &[u8; 32], doc: &DocId) -> Result<(), (Reason, String)> {
        if self.void.contains(author) {
            return Err((
                Reason::UnknownAuthor,
                format!(
                    "{}'s admission is void: its invite admitted another key",
                    hex::encode(author)
                ),
            ));
        }
        let Some(standing) = self.members.get(author) else {
            return Err((
                Reason::UnknownAuthor,
                format!(
                    "{} is not a member as of the change's auth heads",
                    hex::encode(author)
                ),
            ));
        };
        if standing.revoked {
            return Err((
                Reason::Revoked,
                format!(
                    "{} was revoked before it wrote this change",
                    hex::encode(author)
                ),
            ));
        }
        if !doc.writable_by(standing.role, standing.scope.as_deref()) {
            let scope = standing
                .scope
                .as_deref()
                .map(|s| format!(" of {s}"))
                .unwrap_or_default();
            return Err((
                Reason::NotAllowed,
                format!("role {}{scope} may not write {doc}", standing.role),
            ));
        }
        Ok(())
    }
}
