//! Node identity on the wire: the ed25519 key of the registry member becomes the libp2p `PeerId`.

use std::fmt;

use libp2p::{PeerId, identity};

use crate::Error;

/// The node's ed25519 keypair, built from the same 32-byte secret seed as its registry key, so the peer on the
/// wire is the member in the registry.
#[derive(Clone)]
pub struct Keypair(identity::Keypair);

impl Keypair {
    /// Builds the keypair from a 32-byte ed25519 secret seed.
    pub fn from_secret_seed(seed: [u8; 32]) -> Self {
        // libp2p zeroizes the buffer it is given; `seed` is our own copy.
        let mut seed = seed;
        let keypair = identity::Keypair::ed25519_from_bytes(&mut seed)
            .expect("every 32-byte string is a valid ed25519 secret key");
        Self(keypair)
    }

    /// The libp2p peer id of this key.
    pub fn peer_id(&self) -> PeerId {
        self.0.public().to_peer_id()
    }

    /// The 32-byte ed25519 public key, as the registry stores it.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        let public = self
            .0
            .public()
            .try_into_ed25519()
            .expect("built from an ed25519 seed");
        public.to_bytes()
    }

    pub(crate) fn libp2p(&self) -> &identity::Keypair {
        &self.0
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret half.
        f.debug_struct("Keypair")
            .field("peer_id", &self.peer_id())
            .finish()
    }
}

/// The peer id of a member given its 32-byte ed25519 public key (as stored in the registry).
///
/// Fails when the bytes are not a point on the curve, which a well-formed registry never holds.
pub fn peer_id_from_public_key(public_key: &[u8; 32]) -> Result<PeerId, Error> {
    let public = identity::ed25519::PublicKey::try_from_bytes(public_key)
        .map_err(|source| Error::PublicKeyInvalid { source })?;
    Ok(identity::PublicKey::from(public).to_peer_id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_from_public_key_matches_keypair() {
        let keypair = Keypair::from_secret_seed([7; 32]);
        let from_public =
            peer_id_from_public_key(&keypair.public_key_bytes()).expect("valid public key");
        assert_eq!(from_public, keypair.peer_id());
    }

    #[test]
    fn same_seed_same_peer_id() {
        assert_eq!(
            Keypair::from_secret_seed([1; 32]).peer_id(),
            Keypair::from_secret_seed([1; 32]).peer_id()
        );
        assert_ne!(
            Keypair::from_secret_seed([1; 32]).peer_id(),
            Keypair::from_secret_seed([2; 32]).peer_id()
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", Keypair::from_secret_seed([9; 32]));
        assert!(text.contains("peer_id"));
        assert!(!text.contains("09"));
    }
}
