//! tally: an S3 transfer manager that proves every byte arrived.
//!
//! Modules in data-flow order:
//!
//! - [`cli`] / [`config`]: the command line, and the validated settings built from it;
//! - [`plan`]: file length -> part ranges within S3's limits;
//! - [`tree`]: a directory as a stream of files in S3 key order (filters, odd entries, sequences);
//! - [`source`]: the memory-mapped file and zero-copy part bodies;
//! - [`hash`]: per-part checksum + MD5 in one pass; composite, full-object CRC and ETag;
//!   [`hashfile`]: `tally hash`, the offline prediction of what an upload would produce;
//! - [`exec`]: where work runs (the rayon pool for hashing, blocking threads for files);
//! - [`engine`]: the one budget every transfer of a command shares (requests in flight, bytes
//!   ahead) and the part pipeline: reserve -> hash -> send;
//! - [`s3`]: the small S3 boundary (a trait) and its aws-sdk-s3 implementation;
//!   [`retry`]: the one backoff policy for the loops tally runs itself;
//! - [`download`]: `tally download`: part-aligned streaming GETs, each part checked before it
//!   counts, a journal for resume, the file renamed into place only once proven;
//!   [`fsx`]: the one atomic write-and-rename policy;
//! - [`manifest`]: the durable journal of completed parts that makes resume possible;
//! - [`mhl`]: ASC MHL histories: checked before a tree is sent, a generation written for it;
//! - [`upload`]: `tally upload`: single PUT or multipart (create/resume, send, complete), report;
//!   [`uploads`]: `tally uploads` / `tally abort`, the uploads in progress;
//!   [`shard`]: `tally shard plan/run/finish`, one upload shared by the workers of a scheduler;
//! - [`remote`]: what S3 holds, read without the local file: facts, the ranged reader, remote MD5;
//!   `relay` (feature `relay`): the remote MD5 as steps of a Step Functions + Lambda relay;
//! - [`compare`]: one vocabulary for "local value vs what S3 reported";
//! - [`verify`]: what S3 says about an object, compared part by part with the local file;
//! - [`progress`]: progress events and the terminal bar; [`redact`]: credentials out of all output;
//! - [`error`]: the error type and exit codes; [`app`]: runs a parsed command.
//!
//! Test-only pauses (`seam`) exist in debug builds only.

pub mod app;
pub(crate) mod batch;
pub mod cli;
pub(crate) mod compare;
pub mod config;
pub(crate) mod download;
pub(crate) mod engine;
pub mod error;
pub(crate) mod exec;
pub(crate) mod fsx;
pub mod hash;
pub mod hashfile;
pub(crate) mod manifest;
pub(crate) mod mhl;
pub(crate) mod plan;
pub(crate) mod printable;
pub mod progress;
pub(crate) mod redact;
#[cfg(feature = "relay")]
pub mod relay;
pub(crate) mod remote;
pub(crate) mod retry;
pub mod s3;
mod seam;
pub(crate) mod shard;
pub(crate) mod source;
pub mod state;
pub(crate) mod tree;
pub mod upload;
pub mod uploads;
pub mod verify;
pub mod vocab;

pub use exec::limit_malloc_arenas;
