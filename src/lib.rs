//! tally: an S3 transfer manager that proves every byte arrived.
//!
//! Modules in data-flow order:
//!
//! - [`cli`] / [`config`]: the command line, and the validated settings built from it;
//! - [`plan`]: file length -> part ranges within S3's limits;
//! - [`source`]: the memory-mapped file and zero-copy part bodies;
//! - [`hash`]: per-part checksum + MD5 in one pass; composite, full-object CRC and ETag;
//! - [`s3`]: the small S3 boundary (a trait) and its aws-sdk-s3 implementation;
//! - [`manifest`]: the durable journal of completed parts that makes resume possible;
//! - [`pipeline`]: wires plan -> source -> hash -> upload -> manifest -> complete -> check;
//! - [`remote`]: what S3 holds, read without the local file: facts, the ranged reader, remote MD5;
//! - [`compare`]: one vocabulary for "local value vs what S3 reported";
//! - [`verify`]: what S3 says about an object, compared part by part with the local file;
//! - [`progress`]: progress events and the terminal bar;
//! - [`error`]: the error type and exit codes; [`app`]: runs a parsed command.

pub mod app;
pub mod cli;
pub mod compare;
pub mod config;
pub mod error;
pub mod exec;
pub mod hash;
pub mod hashfile;
pub mod manifest;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod redact;
pub mod remote;
/// The old path of [`remote::md5`] and [`remote::tags`], kept until the upload imports the new ones.
pub mod remote_md5 {
    pub use crate::remote::md5::{Md5Options, Md5Report, read_back, remote_md5};
    pub use crate::remote::tags::{TagOutcome, tag_md5};
}
pub mod retry;
pub mod s3;
mod seam;
pub mod source;
pub mod uploads;
pub mod verify;
