//! tally's integration tests: the binary and the library against a real S3 server (Garage) on
//! loopback, cross-checked with the AWS CLI.

#![allow(unreachable_pub, missing_docs)]

mod claims;
mod cli;
mod compat;
mod download;
mod faults;
mod habits;
mod hostile;
mod identity;
mod inputs;
mod json_schema;
mod link;
mod many;
mod md5;
mod mhl;
mod mhl_diff;
mod network;
mod overwrite;
mod proxy;
// Built only with the relay's binary: `cargo test --features relay` (scripts/test).
#[cfg(feature = "relay")]
mod relay;
mod report;
mod resume;
mod settings;
mod shard;
mod stops;
mod sums;
mod support;
mod tree;
mod tree_upload;
mod upload;
mod verify;
