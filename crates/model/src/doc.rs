//! Write authorities: which registry document a change belongs to, and the roles that may write each.

use std::fmt;
use std::str::FromStr;

use crate::{Error, validate_slug};

/// A member's role in the federation.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Role {
    /// Governs: members, objectives, approvals, budgets.
    Council,
    /// Owns the experiments, key results and learnings of one pod.
    Pod,
    /// Approves event schemas and metric definitions.
    Steward,
    /// An outside organisation that shares learnings.
    Partner,
}

impl Role {
    /// The role as the CLI spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Council => "council",
            Role::Pod => "pod",
            Role::Steward => "steward",
            Role::Partner => "partner",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text {
            "council" => Ok(Role::Council),
            "pod" => Ok(Role::Pod),
            "steward" => Ok(Role::Steward),
            "partner" => Ok(Role::Partner),
            other => Err(Error::invalid(
                "--role",
                format!("`{other}` is not one of pod, council, steward, partner"),
            )),
        }
    }
}

/// One registry document: the unit of write authority.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocId {
    /// Genesis, members, objectives, approvals, budgets: council members write it.
    Council,
    /// Approved event schemas and metric definitions: stewards and council write it.
    Standards,
    /// One pod's experiments, key results, proposals and learnings: that pod's members write it.
    Pod(String),
    /// One partner's learnings: that partner writes it.
    Partner(String),
}

impl DocId {
    /// Whether a member with `role` and `scope` (its pod or partner name) may write this document.
    pub fn writable_by(&self, role: Role, scope: Option<&str>) -> bool {
        match self {
            DocId::Council => role == Role::Council,
            DocId::Standards => matches!(role, Role::Council | Role::Steward),
            DocId::Pod(pod) => role == Role::Pod && scope == Some(pod.as_str()),
            DocId::Partner(name) => role == Role::Partner && scope == Some(name.as_str()),
        }
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocId::Council => f.write_str("council"),
            DocId::Standards => f.write_str("standards"),
            DocId::Pod(pod) => write!(f, "pod/{pod}"),
            DocId::Partner(name) => write!(f, "partner/{name}"),
        }
    }
}

impl FromStr for DocId {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        match text.split_once('/') {
            None if text == "council" => Ok(DocId::Council),
            None if text == "standards" => Ok(DocId::Standards),
            Some(("pod", pod)) => validate_slug("doc", pod).map(|()| DocId::Pod(pod.to_owned())),
            Some(("partner", name)) => {
                validate_slug("doc", name).map(|()| DocId::Partner(name.to_owned()))
            }
            _ => Err(Error::invalid(
                "doc",
                format!("`{text}` is not a registry document"),
            )),
        }
    }
}

impl serde::Serialize for DocId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_ids_round_trip() {
        for text in ["council", "standards", "pod/emea", "partner/acme"] {
            let doc: DocId = text.parse().expect("valid");
            assert_eq!(doc.to_string(), text);
        }
        assert!("pod/".parse::<DocId>().is_err());
        assert!("pods/x".parse::<DocId>().is_err());
        assert!("pod/a/b".parse::<DocId>().is_err());
    }

    #[test]
    fn authority_table() {
        let emea = DocId::Pod("emea".into());
        assert!(emea.writable_by(Role::Pod, Some("emea")));
        assert!(!emea.writable_by(Role::Pod, Some("apac")));
        assert!(!emea.writable_by(Role::Council, None));
        assert!(DocId::Standards.writable_by(Role::Steward, None));
        assert!(!DocId::Standards.writable_by(Role::Pod, Some("emea")));
        assert!(!DocId::Council.writable_by(Role::Partner, Some("acme")));
        assert!(DocId::Partner("acme".into()).writable_by(Role::Partner, Some("acme")));
    }
}
