//! Exit statuses of the `growthmesh` binary and the error type that selects them.

use std::fmt;

/// Everything went as asked.
pub const OK: u8 = 0;
/// The command failed (I/O, refused write, ...).
pub const FAILURE: u8 = 1;
/// The input cannot describe anything: bad arguments, unreadable file.
pub const BAD_INPUT: u8 = 2;
/// Some of the items were rejected, the rest were applied (e.g. `registry import`).
pub const PARTIAL: u8 = 3;

/// An argument or input that is wrong in itself; maps to exit status [`BAD_INPUT`].
///
/// The message names the argument (or file and line) and the problem.
#[derive(Debug)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Shorthand to build an [`InputError`] wrapped in `anyhow`.
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(InputError(message.into()))
}

/// The exit status an error maps to.
pub fn status_of(error: &anyhow::Error) -> u8 {
    if error.chain().any(|cause| cause.is::<InputError>()) {
        BAD_INPUT
    } else {
        FAILURE
    }
}
