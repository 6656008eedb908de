//! One module per noun of the CLI; each arm calls library functions and prints.

pub mod assign;
pub mod demo;
pub mod demo_network;
pub mod events;
pub mod experiment;
pub mod federation;
pub mod network;
pub mod okr;
pub mod registry;
pub mod result;
pub mod schema;
pub mod scorecard;
pub mod sim;
pub mod source;
pub mod stats;
