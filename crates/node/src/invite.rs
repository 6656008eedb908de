//! Invites: a council member signs a ticket (federation, role, name, bootstrap addresses, expiry, a one-time nonce);
//! the new node records it with `join`, and its next `node` run sends it to the first member it reaches. A council
//! node admits the key with a signed membership change carrying the nonce, so every replica knows the ticket is
//! spent; any other member checks the ticket and forwards the redemption to a council member it is connected to
//! (tag [`FORWARDED_REDEEM_TAG`]), relaying the answer.
//!
//! A node checks a redemption cheaply before any signature is verified or anything written: the global
//! [`RedeemLimiter`] (all peers together), then [`Ticket::precheck`] (federation, expiry, issuer on the council,
//! nonce unspent) against what the node already knows.

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
pub const REDEEM_TAG: u8 = registry::sync::Tag::Redeem as u8;
/// First byte of a redemption response.
pub const REDEEMED_TAG: u8 = registry::sync::Tag::Redeemed as u8;
/// First byte of a redemption a member forwards to a council member (the body is a [`Redeem`]); the forwarding
/// member checked that its connection is the joining key, so the council node skips that check and takes it from
/// members only. One entry of the protocol's one tag table (`registry::sync::Tag`).
pub const FORWARDED_REDEEM_TAG: u8 = registry::sync::Tag::ForwardedRedeem as u8;
/// Redemptions a node serves per second, from all peers together (the refill rate of [`RedeemLimiter`]).
pub const REDEEMS_PER_SECOND: u32 = 5;
/// Redemptions a node serves in a burst.
pub const REDEEM_BURST: u32 = 10;

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
    #[error(
        "the ticket expired at {}; ask the council for a new one (`growthmesh invite --expires 7d ...`)",
        model::time::format_rfc3339(*expires_at_ms)
    )]
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
    /// The node serves few redemptions per second, from all peers together.
    #[error("too many invite redemptions right now; try again later")]
    RateLimited,
    /// A member that is not on the council found no council member to forward the redemption to.
    #[error("no council member reachable to admit you; try again later")]
    NoCouncilReachable,
    /// The node that received the redemption is no member, so it can neither admit nor introduce.
    #[error("this node is not a member of the federation and cannot admit you")]
    NotAMember,
    /// A forwarded redemption came from a peer that is not a member.
    #[error("only members may forward a redemption")]
    ForwarderNotMember,
}

impl TicketError {
    /// Whether the joiner should try again later (perhaps with another member) rather than give the ticket up.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TicketError::RateLimited | TicketError::NoCouncilReachable | TicketError::NotAMember
        )
    }
}

/// What a node knows of its federation that a redemption is checked against before any signature is verified.
#[derive(Clone, Debug, Default)]
pub struct AdmissionFacts {
    /// Federation id (hex).
    pub federation: String,
    /// Public keys (hex) of unrevoked council members.
    pub council: std::collections::BTreeSet<String>,
    /// Public keys (hex) of every member, revoked or not.
    pub members: std::collections::BTreeSet<String>,
    /// Spent nonces and the key each admitted.
    pub spent: std::collections::BTreeMap<String, String>,
}

/// A token bucket of redemptions per second across all peers: [`REDEEMS_PER_SECOND`], burst [`REDEEM_BURST`].
/// Time is a parameter (Unix ms), so it is tested without a clock.
#[derive(Clone, Debug)]
pub struct RedeemLimiter {
    tokens_milli: u64,
    refilled_at_ms: u64,
}

impl Default for RedeemLimiter {
    fn default() -> Self {
        Self {
            tokens_milli: u64::from(REDEEM_BURST) * 1000,
            refilled_at_ms: 0,
        }
    }
}

impl RedeemLimiter {
    /// Takes one redemption's token; [`TicketError::RateLimited`] when the bucket is empty.
    pub fn take(&mut self, now_ms: u64) -> Result<(), TicketError> {
        let elapsed_ms = now_ms.saturating_sub(self.refilled_at_ms);
        let capacity = u64::from(REDEEM_BURST) * 1000;
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(elapsed_ms.saturating_mul(u64::from(REDEEMS_PER_SECOND)))
            .min(capacity);
        self.refilled_at_ms = self.refilled_at_ms.max(now_ms);
        if self.tokens_milli < 1000 {
            return Err(TicketError::RateLimited);
        }
        self.tokens_milli -= 1000;
        Ok(())
    }
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

    /// The checks that need no signature verification and no view rebuild: federation, expiry, issuer on the
    /// council, nonce unspent.
    pub fn precheck(&self, facts: &AdmissionFacts, now_ms: i64) -> Result<(), TicketError> {
        if self.body.federation != facts.federation {
            return Err(TicketError::WrongFederation {
                ticket: self.body.federation.clone(),
                ours: facts.federation.clone(),
            });
        }
        if now_ms > self.body.expires_at_ms {
            return Err(TicketError::Expired {
                expires_at_ms: self.body.expires_at_ms,
            });
        }
        if !facts.council.contains(&self.body.issuer) {
            return Err(TicketError::IssuerNotCouncil {
                issuer: self.body.issuer.clone(),
            });
        }
        if let Some(by) = facts.spent.get(&self.body.nonce) {
            return Err(TicketError::Replayed { by: by.clone() });
        }
        Ok(())
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

/// The council node's answer (relayed unchanged by a member that forwarded the redemption).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Redeemed {
    /// Admitted (the admission change's hash), or why not.
    pub result: Result<String, String>,
    /// The refusal is temporary (rate limit, no council member reachable): keep the ticket and try again later.
    /// Absent in answers of older nodes, which meant a final refusal.
    #[serde(default)]
    pub retry: bool,
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
        self.encode_with(REDEEM_TAG)
    }

    /// Wire form of the redemption forwarded by a member to a council member.
    pub fn encode_forwarded(&self) -> Vec<u8> {
        self.encode_with(FORWARDED_REDEEM_TAG)
    }

    fn encode_with(&self, tag: u8) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend(serde_json::to_vec(self).expect("redemptions serialize"));
        out
    }

    /// Checks the ticket's signature and expiry and the proof of possession; returns the joining key.
    pub fn verify(&self, now_ms: i64) -> Result<PublicKey, TicketError> {
        self.ticket.verify(now_ms)?;
        self.joining_key()
    }
}

impl Redeemed {
    /// An admission by the change `change`.
    pub fn admitted(change: String) -> Self {
        Self {
            result: Ok(change),
            retry: false,
        }
    }

    /// A refusal naming its reason.
    pub fn refused(error: &TicketError) -> Self {
        Self {
            result: Err(error.to_string()),
            retry: error.is_retryable(),
        }
    }

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

    fn facts() -> AdmissionFacts {
        AdmissionFacts {
            federation: "ab".repeat(32),
            council: [Keypair::from_seed([1; 32]).public().to_hex()].into(),
            members: [Keypair::from_seed([1; 32]).public().to_hex()].into(),
            spent: Default::default(),
        }
    }

    #[test]
    fn precheck_refuses_without_verifying_signatures() {
        // The signature is garbage: the precheck does not look at it.
        let mut ticket = Ticket::issue(body(1_000), &Keypair::from_seed([1; 32]));
        ticket.signature = "00".into();
        assert_eq!(ticket.precheck(&facts(), 500), Ok(()));
        assert_eq!(
            ticket.precheck(&facts(), 2_000),
            Err(TicketError::Expired {
                expires_at_ms: 1_000
            })
        );
        let mut spent = facts();
        spent.spent.insert(ticket.body.nonce.clone(), "k".into());
        assert_eq!(
            ticket.precheck(&spent, 500),
            Err(TicketError::Replayed { by: "k".into() })
        );
        let mut no_council = facts();
        no_council.council.clear();
        assert!(matches!(
            ticket.precheck(&no_council, 500),
            Err(TicketError::IssuerNotCouncil { .. })
        ));
        let mut other = facts();
        other.federation = "cd".repeat(32);
        assert!(matches!(
            ticket.precheck(&other, 500),
            Err(TicketError::WrongFederation { .. })
        ));
    }

    #[test]
    fn redemptions_are_rate_limited_across_all_peers() {
        let mut limiter = RedeemLimiter::default();
        let start = 1_000_000;
        for _ in 0..REDEEM_BURST {
            assert_eq!(limiter.take(start), Ok(()));
        }
        assert_eq!(limiter.take(start), Err(TicketError::RateLimited));
        // One token comes back every 1000 / REDEEMS_PER_SECOND ms.
        let step = 1000 / u64::from(REDEEMS_PER_SECOND);
        assert_eq!(
            limiter.take(start + step - 1),
            Err(TicketError::RateLimited)
        );
        assert_eq!(limiter.take(start + step), Ok(()));
        assert_eq!(limiter.take(start + step), Err(TicketError::RateLimited));
        // A clock going backwards refills nothing.
        assert_eq!(limiter.take(start), Err(TicketError::RateLimited));
    }

    #[test]
    fn answers_say_whether_to_retry_and_old_answers_decode() {
        let answer = Redeemed::refused(&TicketError::NoCouncilReachable);
        let decoded = Redeemed::decode(&answer.encode()).expect("decodes");
        assert!(decoded.retry);
        assert_eq!(
            decoded.result,
            Err("no council member reachable to admit you; try again later".into())
        );
        assert!(!Redeemed::refused(&TicketError::BadSignature).retry);
        let old = [&[REDEEMED_TAG][..], br#"{"result":{"Err":"nope"}}"#].concat();
        let decoded = Redeemed::decode(&old).expect("an old answer decodes");
        assert!(!decoded.retry);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
        assert_eq!(parse_duration_ms("90s"), Some(90_000));
        assert_eq!(parse_duration_ms("h"), None);
        assert_eq!(parse_duration_ms("5y"), None);
    }
}
