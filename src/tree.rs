//! Trees: the streaming walk of a directory in S3 key order ([`walk`]), `--include`/`--exclude`
//! ([`filter`]), and numbered frames grouped into sequences for summaries ([`sequence`]).

pub(crate) mod filter;
pub(crate) mod sequence;
pub(crate) mod walk;

pub(crate) use filter::{Filters, Rule};
pub(crate) use sequence::{Grouper, Item, Sequence};
pub(crate) use walk::{FileEntry, Found, Skip, Walk, WalkOptions, walk};
