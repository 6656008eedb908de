//! Offline bundles: a header naming the federation, then length-prefixed envelopes, each verifiable on its own.
//!
//! Format: `GMBNDL01 | federation_id(32) | (varint len | envelope)*`. A damaged envelope is reported by its index and
//! the others are still read; damage to a length prefix ends the readable part (the rest is reported as one
//! malformed entry), because nothing after it can be framed.

use crate::FederationId;
use crate::codec::{Reader, write_varint};
use crate::envelope::{DecodeError, Envelope, MAX_CHANGE_BYTES};

/// First bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"GMBNDL01";
/// Largest envelope a bundle may frame.
pub const MAX_ENVELOPE_BYTES: usize = MAX_CHANGE_BYTES + 8 * 1024;

/// Why a file is not a bundle at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// Wrong magic or too short for the header.
    #[error("not a growthmesh bundle: {0}")]
    NotABundle(String),
}

/// One entry of a bundle as read: an envelope, or the reason its bytes are unusable.
#[derive(Debug)]
pub enum Entry {
    /// A decoded envelope.
    Envelope(Box<Envelope>),
    /// Bytes that do not decode.
    Malformed {
        /// Index of the entry in the bundle.
        index: usize,
        /// Byte offset of the entry.
        offset: usize,
        /// What was wrong.
        problem: DecodeError,
    },
}

/// A read bundle.
#[derive(Debug)]
pub struct Bundle {
    /// The federation the writer belongs to.
    pub federation: FederationId,
    /// The entries, in file order.
    pub entries: Vec<Entry>,
}

/// Writes a bundle of `envelopes` (already encoded) for `federation`.
pub fn write<'a>(
    federation: &FederationId,
    envelopes: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&federation.0);
    for envelope in envelopes {
        write_varint(&mut out, envelope.len() as u64);
        out.extend_from_slice(envelope);
    }
    out
}

/// Reads a bundle; fails only when the header is unusable.
pub fn read(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() < MAGIC.len() + 32 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BundleError::NotABundle(format!(
            "expected the {} header, found {} bytes that do not start with it",
            String::from_utf8_lossy(MAGIC),
            bytes.len()
        )));
    }
    let mut reader = Reader::new(&bytes[MAGIC.len()..]);
    let federation = FederationId(
        reader
            .array("federation id")
            .map_err(|e| BundleError::NotABundle(e.to_string()))?,
    );
    let mut entries = Vec::new();
    while !reader.is_empty() {
        let index = entries.len();
        let offset = MAGIC.len() + reader.position();
        let framed = reader
            .varint_at_most(MAX_ENVELOPE_BYTES, "envelope length")
            .and_then(|len| reader.take(len, "envelope"));
        match framed {
            Ok(slice) => entries.push(match Envelope::from_bytes(slice) {
                Ok(envelope) => Entry::Envelope(Box::new(envelope)),
                Err(problem) => Entry::Malformed {
                    index,
                    offset,
                    problem,
                },
            }),
            Err(problem) => {
                entries.push(Entry::Malformed {
                    index,
                    offset,
                    problem,
                });
                break;
            }
        }
    }
    Ok(Bundle {
        federation,
        entries,
    })
}
