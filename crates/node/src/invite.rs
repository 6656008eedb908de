//! Invites: a council member signs a ticket (federation, role, name, bootstrap addresses, expiry, a one-time nonce);
//! the new node records it with `join`, and its next `node` run sends it to a council node, which admits the key
//! with a signed membership change carrying the nonce, so every replica knows the ticket is spent.

use base64::Engine as _;
use identity::{Keypair, PublicKey};
use model::Role;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File in the data dir holding a ticket waiting to be redeemed.
pub const TICKET_FILE_NAME: &str = "ticket";
/// Ticket text prefix.
const PREFIX: &str = "gmticket1";
/// First byte of a redemption request on the sync protocol.
pub const REDEEM_TAG: u8 = 4;
/// First byte of a redemption response.
pub const REDEEMED_TAG: u8 = 5;

/// What a ticket grants.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TicketBody {
    /// Federation id (hex).
    pub federation: String,
    /// Role granted.
    pub role: Role,
    /// Display name of the new member.
    pub name: String,
    /// Pod or partner name.
    pub scope: Option<String>,
    /// Where to find the issuer.
    pub bootstrap: Vec<String>,
    /// Expiry (Unix ms).
    pub expires_at_ms: i64,
    /// One-time nonce (hex).
    pub nonce: String,
    /// Issuer's public key (hex).
    pub issuer: String,
}

/// A signed ticket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    /// What it grants.
    pub body: TicketBody,
    /// Issuer's signature over the body (hex).
    pub signature: String,
}

/// Why a ticket is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket.
    #[error("not a growthmesh ticket: {0}")]
    Malformed(String),
    /// The signature does not verify.
    #[error("the ticket's signature does not verify")]
    BadSignature,
    /// Past its expiry.
    #[error("the ticket expired at {expires_at_ms} (Unix ms)")]
    Expired {
        /// When it expired.
        expires_at_ms: i64,
    },
    /// Already used.
    #[error("the ticket was already redeemed by {by}")]
    Replayed {
        /// The key that redeemed it.
        by: String,
    },
    /// The issuer is not a council member here.
    #[error("the ticket's issuer {issuer} is not a council member")]
    IssuerNotCouncil {
        /// The issuer.
        issuer: String,
    },
    /// Another federation's ticket.
    #[error("the ticket is for federation {ticket}, this node belongs to {ours}")]
    WrongFederation {
        /// The ticket's federation.
        ticket: String,
        /// Ours.
        ours: String,
    },
}

fn body_digest(body: &TicketBody) -> [u8; 32] {
    let json = serde_json::to_vec(body).expect("ticket bodies serialize");
    let mut hasher = Sha256::new();
    hasher.update(b"growthmesh/ticket/v1");
    hasher.update(json);
    hasher.finalize().into()
}

impl Ticket {
    /// Signs a ticket.
    pub fn issue(body: TicketBody, issuer: &Keypair) -> Self {
        let signature = hex::encode(issuer.sign(&body_digest(&body)));
        Self { body, signature }
    }

    /// The ticket as copyable text.
    pub fn to_text(&self) -> String {
        let json = serde_json::to_vec(self).expect("tickets serialize");
        format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// Parses ticket text and checks its signature and expiry.
    pub fn parse(text: &str, now_ms: i64) -> Result<Self, TicketError> {
        let encoded = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| TicketError::Malformed(format!("it does not start with {PREFIX}")))?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|e| TicketError::Malformed(e.to_string()))?;
        let ticket: Ticket =
            serde_json::from_slice(&json).map_err(|e| TicketError::Malformed(e.to_string()))?;
        ticket.verify(now_ms)?;
        Ok(ticket)
    }

    /// Checks the signature and the expiry.
    pub fn verify(&self, now_ms: i64) -> Result<(), TicketError> {
        let issuer: PublicKey = self
            .body
            .issuer
            .parse()
            .map_err(|_| TicketError::BadSignature)?;
        let mut signature = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut signature)
            .map_err(|_| TicketError::BadSignature)?;
        issuer
            .verify(&body_digest(&self.body), &signature)
            .map_err(|_| TicketError::BadSignature)?;
        if now_ms > self.body.expires_at_ms {
            return Err(TicketError::Expired {
                expires_at_ms: self.body.expires_at_ms,
            });
        }
        Ok(())
    }
}

/// A redemption: the ticket and the new key, with the new key's signature over the nonce (proof of possession).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Redeem {
    /// The ticket.
    pub ticket: Ticket,
    /// The joining key (hex).
    pub public_key: String,
    /// Signature by the joining key over the ticket nonce (hex).
    pub proof: String,
}

/// The council node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Redeemed {
    /// Admitted, or why not.
    pub result: Result<String, String>,
}

impl Redeem {
    /// Builds the redemption of `ticket` by `keypair`.
    pub fn new(ticket: Ticket, keypair: &Keypair) -> Self {
        let proof = hex::encode(keypair.sign(ticket.body.nonce.as_bytes()));
        Self {
            ticket,
            public_key: keypair.public().to_hex(),
            proof,
        }
    }

    /// Checks the proof of possession; returns the joining key.
    pub fn joining_key(&self) -> Result<PublicKey, TicketError> {
        let key: PublicKey = self
            .public_key
            .parse()
            .map_err(|e: identity::Error| TicketError::Malformed(e.to_string()))?;
        let mut proof = [0u8; 64];
        hex::decode_to_slice(&self.proof, &mut proof).map_err(|_| TicketError::BadSignature)?;
        key.verify(self.ticket.body.nonce.as_bytes(), &proof)
            .map_err(|_| TicketError::BadSignature)?;
        Ok(key)
    }

    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![REDEEM_TAG];
        out.extend(serde_json::to_vec(self).expect("redemptions serialize"));
        out
    }
}

impl Redeemed {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![REDEEMED_TAG];
        out.extend(serde_json::to_vec(self).expect("answers serialize"));
        out
    }

    /// Reads the wire form.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&REDEEMED_TAG, json)) => serde_json::from_slice(json).ok(),
            _ => None,
        }
    }
}

/// Parses `24h`, `30m`, `7d`, `90s` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let number: i64 = number.parse().ok()?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    number.checked_mul(unit_ms).filter(|ms| *ms > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(expires_at_ms: i64) -> TicketBody {
        TicketBody {
            federation: "ab".repeat(32),
            role: Role::Pod,
            name: "emea".into(),
            scope: Some("emea".into()),
            bootstrap: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            expires_at_ms,
            nonce: "00".repeat(16),
            issuer: Keypair::from_seed([1; 32]).public().to_hex(),
        }
    }

    #[test]
    fn tickets_round_trip_and_expire() {
        let ticket = Ticket::issue(body(1_000), &Keypair::from_seed([1; 32]));
        let parsed = Ticket::parse(&ticket.to_text(), 500).expect("valid");
        assert_eq!(parsed, ticket);
        assert_eq!(
            Ticket::parse(&ticket.to_text(), 2_000),
            Err(TicketError::Expired {
                expires_at_ms: 1_000
            })
        );
    }

    #[test]
    fn tampered_tickets_are_refused() {
        let mut ticket = Ticket::issue(body(1_000), &Keypair::from_seed([1; 32]));
        ticket.body.role = Role::Council;
        assert_eq!(
            Ticket::parse(&ticket.to_text(), 0),
            Err(TicketError::BadSignature)
        );
        assert!(matches!(
            Ticket::parse("hello", 0),
            Err(TicketError::Malformed(_))
        ));
    }

    #[test]
    fn redemption_proves_key_possession() {
        let ticket = Ticket::issue(body(1_000), &Keypair::from_seed([1; 32]));
        let joiner = Keypair::from_seed([2; 32]);
        let mut redeem = Redeem::new(ticket, &joiner);
        assert_eq!(redeem.joining_key().expect("valid"), joiner.public());
        redeem.public_key = Keypair::from_seed([3; 32]).public().to_hex();
        assert_eq!(redeem.joining_key(), Err(TicketError::BadSignature));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms("h"), None);
        assert_eq!(parse_duration_ms("5y"), None);
    }
}
