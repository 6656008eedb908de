//! Deterministic, GrowthBook-compatible assignment of a user to an experiment variation: the point where a user id
//! becomes a variation, with no I/O and no clock.
//!
//! A user lands in the same variation a GrowthBook SDK would put them in, given the same experiment definition:
//! the same FNV-1a hash (versions 1 and 2), seed, namespace, coverage and weights, checked in the SDK's order.
//!
//! # Layout
//! - [`hash`](mod@hash): FNV-1a 32 over UTF-16 code units and GrowthBook's two hash versions.
//! - [`buckets`]: equal weights, bucket ranges from weights and coverage, choosing a variation, namespaces.
//! - [`experiment`]: the experiment definition, its validation and [`assign()`], which runs the checks in order.
//! - [`error`]: why a definition is invalid.
//!
//! # Compatibility
//! Strings are hashed as the JavaScript SDK hashes them: one FNV-1a step per UTF-16 code unit (JS `charCodeAt`),
//! so an emoji (a surrogate pair) counts as two units. A browser and this crate agree for every id. The Python SDK
//! agrees too from version 4.0.0 on; earlier Python SDKs (e.g. 1.1.0) XOR whole code points, which is the same for
//! every character in the Basic Multilingual Plane (accents, CJK, Cyrillic...) but differs for characters beyond it:
//! with seed `exp`, hash version 1, the id `user-😀` hashes to 0.999 in JS and here, 0.446 in Python 1.1.0.
//!
//! [`assign()`] mirrors the SDK's repairs of a bad definition (weights of the wrong length or not summing to 1 fall
//! back to equal weights, coverage is clamped to [0, 1]); [`Experiment::validate`] is the strict check to run
//! where a definition is written, so that such repairs never happen silently.
#![deny(missing_docs)]

pub mod buckets;
pub mod error;
pub mod experiment;
pub mod hash;

pub use buckets::{BucketRange, bucket_ranges, choose_variation, equal_weights, in_namespace};
pub use error::Error;
pub use experiment::{Assignment, Exclusion, Experiment, MAX_VARIATIONS, Namespace, assign};
pub use hash::{fnv1a32, hash};
