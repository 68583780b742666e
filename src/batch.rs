//! Many files in one command: a folder uploaded or verified, a prefix downloaded. The one loop
//! every such command drives ([`run`]: at most `--concurrency` files in progress, each outcome
//! reported as it finishes), what it reports ([`report`]), the three runs on top of the one-file
//! commands ([`upload`], [`download`], [`verify`]), and the ASC MHL chain of custody they keep
//! ([`custody`]: the history checked before files are sent, a generation written after;
//! [`custody_scope`]: the root's history and every nested one, each with its own generation;
//! [`custody_seal`]: a finished generation put in place under the history's lock;
//! [`custody_finish`]: missing files, the generations sealed and uploaded;
//! [`custody_check`]: a folder against its own history).
//!
//! This module sits above `upload`, `download`, `verify` and `mhl` (the format) and imports them;
//! none of them imports it.

pub(crate) mod custody;
pub(crate) mod custody_check;
pub(crate) mod custody_finish;
pub(crate) mod custody_scope;
pub(crate) mod custody_seal;
pub(crate) mod download;
pub(crate) mod dryrun;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod upload;
pub(crate) mod verify;
