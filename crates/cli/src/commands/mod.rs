//! One module per noun of the CLI; each arm calls library functions and prints.

pub mod assign;
pub mod stats;
