//! Node identity: the ed25519 key a node signs with, its public key as text, and the libp2p peer id derived from it.
//!
//! One key, one node: the same key is the automerge actor id of every change the node writes, the signer of its
//! envelopes and, through [`PublicKey::peer_id`], its libp2p identity. This crate does no I/O besides the explicit
//! [`Keypair::load_or_create`] helper and reads no clock.

mod keyfile;

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, Verifier};
pub use keyfile::KEY_FILE_NAME;

/// Errors of key handling and signature checks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A public key given as text was not 64 hex characters.
    #[error("public key `{text}` is not 64 hexadecimal characters")]
    PublicKeyText {
        /// The text that failed to parse.
        text: String,
    },
    /// 32 bytes that are not a valid ed25519 point.
    #[error("public key {key} is not a valid ed25519 key")]
    PublicKeyInvalid {
        /// The key bytes, hex.
        key: String,
    },
    /// A signature did not verify.
    #[error("signature by {author} does not verify")]
    SignatureInvalid {
        /// The claimed author.
        author: PublicKey,
    },
    /// The key file exists but is not a 32-byte secret key.
    #[error("key file {path} is malformed: {problem}")]
    KeyFileMalformed {
        /// Path of the key file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    KeyFileIo {
        /// Path of the key file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// An ed25519 public key: the identity of a member.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Wraps 32 bytes, checking that they are a valid ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, Error> {
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| Error::PublicKeyInvalid {
            key: hex::encode(bytes),
        })?;
        Ok(Self(bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key as lowercase hex: the text members copy to each other.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The libp2p peer id of this key (`12D3KooW...`): an identity multihash of the protobuf-encoded key.
    pub fn peer_id(&self) -> String {
        // protobuf PublicKey { Type = Ed25519 (1), Data = 32 bytes }
        let mut encoded = Vec::with_capacity(38);
        encoded.extend_from_slice(&[0x00, 36, 0x08, 0x01, 0x12, 32]);
        encoded.extend_from_slice(&self.0);
        bs58::encode(encoded).into_string()
    }

    /// Verifies one signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> Result<(), Error> {
        let key = self.verifying_key()?;
        key.verify(message, &ed25519_dalek::Signature::from_bytes(signature))
            .map_err(|_| Error::SignatureInvalid { author: *self })
    }

    fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, Error> {
        ed25519_dalek::VerifyingKey::from_bytes(&self.0)
            .map_err(|_| Error::PublicKeyInvalid { key: self.to_hex() })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", &self.to_hex()[..12])
    }
}

impl FromStr for PublicKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let trimmed = text.trim();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(trimmed, &mut bytes).map_err(|_| Error::PublicKeyText {
            text: text.to_owned(),
        })?;
        Self::from_bytes(bytes)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A node's signing key.
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl Keypair {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        Self::from_seed(seed)
    }

    /// The key for a 32-byte secret seed (deterministic; tests and the simulator use it).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte secret seed (to persist it, or to build the libp2p keypair).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

/// Verifies many signatures at once; `Ok` when every one is valid.
///
/// Batch verification is about twice as fast as one by one. When it fails the caller verifies
/// individually to find the culprits (see [`verify_each`]).
pub fn verify_batch(items: &[(PublicKey, &[u8], [u8; 64])]) -> bool {
    if items.is_empty() {
        return true;
    }
    // A batch usually holds many signatures of few authors: decompress each distinct key once.
    let mut decompressed: std::collections::HashMap<[u8; 32], ed25519_dalek::VerifyingKey> =
        std::collections::HashMap::new();
    let mut keys = Vec::with_capacity(items.len());
    for (key, _, _) in items {
        let verifying = match decompressed.get(&key.0) {
            Some(verifying) => *verifying,
            None => match key.verifying_key() {
                Ok(verifying) => *decompressed.entry(key.0).or_insert(verifying),
                Err(_) => return false,
            },
        };
        keys.push(verifying);
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, message, _)| *message).collect();
    let signatures: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, _, signature)| ed25519_dalek::Signature::from_bytes(signature))
        .collect();
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
}

/// Verifies each signature, returning for each item whether it is valid.
pub fn verify_each(items: &[(PublicKey, &[u8], [u8; 64])]) -> Vec<bool> {
    items
        .iter()
        .map(|(key, message, signature)| key.verify(message, signature).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_text_round_trips() {
        let keypair = Keypair::from_seed([7; 32]);
        let text = keypair.public().to_hex();
        let parsed: PublicKey = text.parse().expect("valid hex key");
        assert_eq!(parsed, keypair.public());
    }

    #[test]
    fn malformed_key_text_is_named() {
        let error = "zz".parse::<PublicKey>().expect_err("not hex");
        assert!(error.to_string().contains("`zz`"), "{error}");
    }

    #[test]
    fn peer_id_matches_libp2p() {
        for seed in [[1u8; 32], [42; 32], [255; 32]] {
            let keypair = Keypair::from_seed(seed);
            let reference = libp2p_identity::Keypair::ed25519_from_bytes(seed)
                .expect("valid seed")
                .public()
                .to_peer_id()
                .to_base58();
            assert_eq!(keypair.public().peer_id(), reference);
            assert!(reference.starts_with("12D3KooW"));
        }
    }

    #[test]
    fn signatures_verify_and_tampering_is_caught() {
        let keypair = Keypair::from_seed([3; 32]);
        let signature = keypair.sign(b"hello");
        keypair
            .public()
            .verify(b"hello", &signature)
            .expect("valid");
        assert!(keypair.public().verify(b"hellp", &signature).is_err());
        let items = [(keypair.public(), &b"hello"[..], signature)];
        assert!(verify_batch(&items));
        let bad = [(keypair.public(), &b"hellp"[..], signature)];
        assert!(!verify_batch(&bad));
        assert_eq!(verify_each(&bad), vec![false]);
    }
}
