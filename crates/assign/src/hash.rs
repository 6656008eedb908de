//! FNV-1a 32 over UTF-16 code units and GrowthBook's hash versions: the first step from a user id to a variation.

/// FNV-1a 32-bit offset basis.
const OFFSET_BASIS: u32 = 0x811c_9dc5;
/// FNV-1a 32-bit prime.
const PRIME: u32 = 0x0100_0193;
/// Version 1 maps a hash onto this many buckets (3 decimal places).
const BUCKETS_V1: u32 = 1_000;
/// Version 2 maps a hash onto this many buckets (4 decimal places).
const BUCKETS_V2: u32 = 10_000;
/// Decimal digits of the largest `u32`.
const U32_DIGITS_MAX: usize = 10;

/// FNV-1a 32 of `text`, one step per UTF-16 code unit, as the GrowthBook JavaScript SDK computes it.
pub fn fnv1a32(text: &str) -> u32 {
    fnv1a32_concat(&[text])
}

/// FNV-1a 32 of the concatenation of `parts`, without building the concatenated string.
pub(crate) fn fnv1a32_concat(parts: &[&str]) -> u32 {
    parts
        .iter()
        .fold(OFFSET_BASIS, |state, part| step_str(state, part))
}

fn step_str(state: u32, text: &str) -> u32 {
    // ASCII bytes are their own UTF-16 code units; skipping the decoder makes the common case faster.
    if text.is_ascii() {
        text.bytes().fold(state, |s, byte| step(s, u32::from(byte)))
    } else {
        text.encode_utf16()
            .fold(state, |s, unit| step(s, u32::from(unit)))
    }
}

fn step(state: u32, unit: u32) -> u32 {
    (state ^ unit).wrapping_mul(PRIME)
}

/// GrowthBook's hash of `value` under `seed`: a number in [0, 1), or `None` for an unknown version.
///
/// - Version 1: `fnv1a32(value + seed) % 1000 / 1000`. Biased: kept because existing experiments use it.
/// - Version 2: `fnv1a32(decimal(fnv1a32(seed + value))) % 10000 / 10000`.
///
/// The SDKs treat a missing version as 1 before calling this; here 0 is unknown, like any other.
pub fn hash(seed: &str, value: &str, version: u8) -> Option<f64> {
    match version {
        1 => Some(hash_v1(value, &[seed])),
        2 => Some(hash_v2(seed, value)),
        _ => None,
    }
}

/// Version 1 hash of `value` followed by the concatenation of `seed_parts`.
pub(crate) fn hash_v1(value: &str, seed_parts: &[&str]) -> f64 {
    let state = step_str(OFFSET_BASIS, value);
    let state = seed_parts.iter().fold(state, |s, part| step_str(s, part));
    f64::from(state % BUCKETS_V1) / f64::from(BUCKETS_V1)
}

fn hash_v2(seed: &str, value: &str) -> f64 {
    let inner = fnv1a32_concat(&[seed, value]);
    let mut digits = [0_u8; U32_DIGITS_MAX];
    let start = write_decimal(inner, &mut digits);
    let outer = digits[start..]
        .iter()
        .fold(OFFSET_BASIS, |s, digit| step(s, u32::from(*digit)));
    f64::from(outer % BUCKETS_V2) / f64::from(BUCKETS_V2)
}

/// Writes `n` in decimal ASCII at the end of `buffer` and returns where the digits start.
fn write_decimal(mut n: u32, buffer: &mut [u8; U32_DIGITS_MAX]) -> usize {
    let mut start = U32_DIGITS_MAX;
    loop {
        start -= 1;
        buffer[start] = b'0' + u8::try_from(n % 10).expect("a decimal digit fits in u8");
        n /= 10;
        if n == 0 {
            return start;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fnv1a32_matches_the_published_test_vectors() {
        // Vectors from the FNV reference (Fowler, Noll, Vo) for the empty string and "a".
        assert_eq!(fnv1a32(""), 0x811c_9dc5);
        assert_eq!(fnv1a32("a"), 0xe40c_292c);
        assert_eq!(fnv1a32("foobar"), 0xbf9c_f968);
    }

    #[test]
    fn surrogate_pairs_are_two_code_units() {
        // U+1F600 is the pair D83D DE00 in UTF-16.
        let by_hand = [0xd83d_u32, 0xde00]
            .iter()
            .fold(OFFSET_BASIS, |s, unit| step(s, *unit));
        assert_eq!(fnv1a32("😀"), by_hand);
    }

    #[test]
    fn unknown_versions_give_no_hash() {
        assert_eq!(hash("abc", "def", 0), None);
        assert_eq!(hash("abc", "def", 3), None);
        assert_eq!(hash("abc", "def", 99), None);
    }

    #[test]
    fn decimal_writing_covers_the_extremes() {
        let mut buffer = [0_u8; U32_DIGITS_MAX];
        for n in [0, 7, 10, 4_294_967_295] {
            let start = write_decimal(n, &mut buffer);
            assert_eq!(&buffer[start..], n.to_string().as_bytes());
        }
    }

    proptest! {
        #[test]
        fn concatenation_is_hashed_as_one_string(a in ".{0,12}", b in ".{0,12}") {
            prop_assert_eq!(fnv1a32_concat(&[&a, &b]), fnv1a32(&format!("{a}{b}")));
        }

        #[test]
        fn version_2_hashes_the_decimal_string(seed in ".{0,12}", value in ".{0,12}") {
            let inner = fnv1a32(&format!("{seed}{value}"));
            let expected = f64::from(fnv1a32(&inner.to_string()) % 10_000) / 10_000.0;
            prop_assert_eq!(hash(&seed, &value, 2), Some(expected));
        }

        #[test]
        fn hashes_are_in_the_unit_interval(seed in ".{0,12}", value in ".{0,12}", version in 1_u8..=2) {
            let n = hash(&seed, &value, version).expect("versions 1 and 2 are known");
            prop_assert!((0.0..1.0).contains(&n));
        }
    }
}
