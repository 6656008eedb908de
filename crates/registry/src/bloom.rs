//! A Bloom filter over change hashes: how a sync request says "I have these" in about 10 bits per change.
//!
//! Change hashes are uniformly random, so the probe positions are taken from the hash bytes themselves (double
//! hashing over three 32-bit words), as automerge's sync protocol does.

use automerge::ChangeHash;

use crate::codec::{Reader, write_varint};
use crate::envelope::DecodeError;

/// Bits per entry (about 1% false positives with 7 probes).
const BITS_PER_ENTRY: usize = 10;
/// Probes per entry.
const PROBES: u32 = 7;
/// Largest filter accepted from a peer.
pub const MAX_BLOOM_BYTES: usize = 2 * 1024 * 1024;

/// A Bloom filter of change hashes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bloom {
    bits: Vec<u8>,
}

impl Bloom {
    /// A filter sized for `entries` hashes.
    pub fn with_capacity(entries: usize) -> Self {
        let bytes = (entries * BITS_PER_ENTRY).div_ceil(8).min(MAX_BLOOM_BYTES);
        Self {
            bits: vec![0; bytes],
        }
    }

    /// A filter holding `hashes`.
    pub fn from_hashes<'a>(hashes: impl ExactSizeIterator<Item = &'a ChangeHash>) -> Self {
        let mut bloom = Self::with_capacity(hashes.len());
        for hash in hashes {
            bloom.insert(hash);
        }
        bloom
    }

    fn probes(&self, hash: &ChangeHash) -> impl Iterator<Item = usize> {
        let modulo = (self.bits.len() * 8) as u64;
        let word = |i: usize| {
            u64::from(u32::from_le_bytes([
                hash.0[i],
                hash.0[i + 1],
                hash.0[i + 2],
                hash.0[i + 3],
            ]))
        };
        let (mut x, mut y, z) = (word(0), word(4), word(8));
        (0..PROBES).map(move |_| {
            let probe = x % modulo;
            x = (x + y) % modulo;
            y = (y + z) % modulo;
            probe as usize
        })
    }

    /// Adds a hash.
    pub fn insert(&mut self, hash: &ChangeHash) {
        if self.bits.is_empty() {
            return;
        }
        let probes: Vec<usize> = self.probes(hash).collect();
        for probe in probes {
            self.bits[probe / 8] |= 1 << (probe % 8);
        }
    }

    /// Whether the hash may be in the filter (false positives happen; false negatives do not).
    pub fn contains(&self, hash: &ChangeHash) -> bool {
        !self.bits.is_empty()
            && self
                .probes(hash)
                .all(|probe| self.bits[probe / 8] & (1 << (probe % 8)) != 0)
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_varint(out, self.bits.len() as u64);
        out.extend_from_slice(&self.bits);
    }

    /// Reads the wire form.
    pub fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = reader.varint_at_most(MAX_BLOOM_BYTES, "bloom length")?;
        Ok(Self {
            bits: reader.take(len, "bloom")?.to_vec(),
        })
    }

    /// Size in bytes.
    pub fn len_bytes(&self) -> usize {
        self.bits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u32) -> ChangeHash {
        use sha2::Digest;
        ChangeHash(sha2::Sha256::digest(i.to_le_bytes()).into())
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let inside: Vec<ChangeHash> = (0..10_000).map(hash).collect();
        let bloom = Bloom::from_hashes(inside.iter());
        assert!(inside.iter().all(|h| bloom.contains(h)));
        let false_positives = (10_000..20_000)
            .map(hash)
            .filter(|h| bloom.contains(h))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives in 10000"
        );
    }

    #[test]
    fn empty_filter_contains_nothing() {
        let bloom = Bloom::from_hashes([].iter());
        assert!(!bloom.contains(&hash(1)));
    }
}
