//! A download's partial file and journal: resumed when the journal still describes the object
//! and the bytes it recorded are still there, else started over (and why). What an earlier run
//! left becomes [`Parts`]: each part's hash and what it was checked against alone.

use std::path::Path;

use crate::error::Error;
use crate::exec::blocking;
use crate::hash::RangeHash;
use crate::progress::Progress;
use crate::remote::facts::RemoteFacts;
use crate::vocab::ObjectUrl;

use super::dest;
use super::fetch::Fetched;
use super::journal::{self, Header, Journal, PartLine};
use super::partial::{self, PartialFile};
use super::proof::{Against, Plan};

/// Each part's hash and what it was checked against on its own, as far as known.
pub(super) struct Parts {
    pub(super) hashes: Vec<Option<RangeHash>>,
    pub(super) alone: Vec<Option<Against>>,
}

impl Parts {
    /// The parts an earlier run recorded in the journal (`done`), of `n` in all.
    fn from_journal(done: &[PartLine], plan: &Plan, n: usize) -> Parts {
        let mut p = Parts {
            hashes: vec![None; n],
            alone: vec![None; n],
        };
        for line in done {
            let i = line.number as usize - 1;
            p.hashes[i] = line.hash();
            if line.checked_alone {
                // Checked against a part checksum known up front, else against the one its GET
                // carried (recorded as the part's own checksum, which matched it).
                p.alone[i] = plan.against(i, None).or_else(|| {
                    plan.alg
                        .zip(line.checksum.clone())
                        .map(|(a, v)| Against::ReplyChecksum(a, v))
                });
            }
        }
        p
    }

    /// Records the parts just fetched.
    pub(super) fn set(&mut self, got: Vec<(usize, Fetched)>) {
        for (i, f) in got {
            self.hashes[i] = Some(f.hash);
            self.alone[i] = f.against;
        }
    }

    /// The parts still to fetch.
    pub(super) fn todo(&self) -> Vec<usize> {
        (0..self.hashes.len())
            .filter(|i| self.hashes[*i].is_none())
            .collect()
    }

    /// Parts held already.
    pub(super) fn held(&self) -> u32 {
        self.hashes.iter().filter(|h| h.is_some()).count() as u32
    }
}

/// The partial file and journal of a download of `obj` (described by `facts`) to `dest`, opened
/// or started over, with the parts an earlier run left; the notes say why it starts over or
/// which parts are fetched again.
pub(super) async fn open(
    endpoint: String,
    obj: &ObjectUrl,
    facts: &RemoteFacts,
    plan: &Plan,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<(PartialFile, Journal, Parts, Option<String>), Error> {
    let header = Header {
        format: journal::FORMAT,
        endpoint,
        bucket: obj.bucket.clone(),
        key: obj.key.clone(),
        etag: facts.etag.as_ref().map(|e| e.as_str().to_owned()),
        version_id: facts.version_id.clone(),
        size: facts.size,
        layout: facts.layout.clone(),
        checksum: plan.alg,
        md5: plan.md5,
    };
    let partial = dest::partial_path(dest);
    let jpath = dest::journal_path(dest);
    let (p, j) = (partial.clone(), jpath.clone());
    let o = blocking(move || open_or_start(&p, &j, &header)).await?;
    if let Some(why) = &o.restarted {
        progress.note(&format!("starting over: {why}"));
    }
    if !o.damaged.is_empty() {
        progress.note(&format!(
            "part(s) {} of {} no longer hold the bytes the journal recorded: fetching them again",
            o.damaged
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            partial.display()
        ));
    }
    let parts = Parts::from_journal(&o.done, plan, facts.layout.len());
    Ok((o.file, o.journal, parts, o.restarted))
}

/// The partial file and its journal, opened.
struct Opened {
    file: PartialFile,
    journal: Journal,
    /// Parts recorded by an earlier run (valid for this layout).
    done: Vec<PartLine>,
    /// Why an earlier partial download was discarded.
    restarted: Option<String>,
    /// Parts the journal recorded whose bytes no longer match (fetched again).
    damaged: Vec<u32>,
}

/// Opens the partial file and its journal: resumed when the journal's header matches `header`
/// and the partial file has the object's size, else started over (and why). Blocking.
fn open_or_start(partial: &Path, jpath: &Path, header: &Header) -> Result<Opened, Error> {
    let loaded = journal::load(jpath)?;
    // Never through a link: anything but a regular file at the partial's name is started over.
    let existing = match crate::fsx::open_regular(partial, true, false) {
        Ok(f) => {
            let len = f.metadata().map_err(|e| dest::io_error(partial, &e))?.len();
            Some(Ok((f, len)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Some(Err(e.to_string())),
        Err(e) => return Err(dest::io_error(partial, &e)),
    };
    let why = match (&loaded, existing) {
        (None, None) => None,
        (_, Some(Err(not_regular))) => Some(not_regular),
        (None, Some(Ok(_))) => Some(format!("{} has no journal beside it", partial.display())),
        (Some((h, _)), _) if h != header => Some(format!(
            "the object is not the one {} was a copy of ({})",
            partial.display(),
            what_changed(h, header)
        )),
        (Some(_), None) => Some(format!("{} is missing", partial.display())),
        (Some(_), Some(Ok((_, len)))) if len != header.size => Some(format!(
            "{} is {len} bytes, not {}",
            partial.display(),
            header.size
        )),
        (Some(_), Some(Ok((file, _)))) => {
            let parts = loaded.map(|(_, p)| p).unwrap_or_default();
            let layout = &header.layout;
            let starts: Vec<u64> = layout
                .iter()
                .scan(0, |at, len| {
                    let s = *at;
                    *at += len;
                    Some(s)
                })
                .collect();
            let parts = parts
                .into_iter()
                .filter(|p| {
                    let i = p.number as usize;
                    i >= 1
                        && i <= layout.len()
                        && p.offset == starts[i - 1]
                        && p.len == layout[i - 1]
                        && p.hash().is_some()
                })
                .collect();
            let (done, damaged) = recheck(&file, parts, header);
            return Ok(Opened {
                file: PartialFile::new(file, partial),
                journal: Journal::open(jpath)?,
                done,
                restarted: None,
                damaged,
            });
        }
    };
    // Whatever is at these names is not a resumable download of this object: removed (a link
    // is removed, never followed), then the partial file is created exclusively.
    let _ = std::fs::remove_file(partial);
    let _ = std::fs::remove_file(jpath);
    let file = crate::fsx::create_new(partial, 0o666).map_err(|e| dest::io_error(partial, &e))?;
    if let Err(e) = partial::preallocate(&file, header.size) {
        // Nothing of this run is in it yet: a full disk leaves nothing behind.
        drop(file);
        let _ = std::fs::remove_file(partial);
        return Err(dest::io_error(partial, &e));
    }
    let journal = Journal::create(jpath, header)?;
    Ok(Opened {
        file: PartialFile::new(file, partial),
        journal,
        done: Vec::new(),
        restarted: why,
        damaged: Vec::new(),
    })
}

/// Hashes each part the journal recorded again, from the partial file, and keeps only those whose
/// bytes still give the recorded hashes: a part changed since (a disk error, another program)
/// is fetched again, never counted. Returns the parts kept and the numbers of those dropped.
/// Blocking (reads every kept byte once).
fn recheck(
    file: &std::fs::File,
    parts: Vec<PartLine>,
    header: &Header,
) -> (Vec<PartLine>, Vec<u32>) {
    let mut buf = vec![0u8; partial::BLOCK];
    let mut kept = Vec::with_capacity(parts.len());
    let mut damaged = Vec::new();
    for p in parts {
        let range = p.offset..p.offset + p.len;
        let hash = partial::hash_range(file, range, (header.checksum, header.md5), &mut buf);
        // Kept only when both are known and equal (a line that does not decode is dropped).
        if hash.is_ok_and(|h| Some(h) == p.hash()) {
            kept.push(p);
        } else {
            damaged.push(p.number);
        }
    }
    (kept, damaged)
}

fn what_changed(old: &Header, new: &Header) -> String {
    if old.etag != new.etag {
        format!(
            "ETag {} then, {} now",
            old.etag.as_deref().unwrap_or("none"),
            new.etag.as_deref().unwrap_or("none")
        )
    } else if old.size != new.size {
        format!("{} bytes then, {} now", old.size, new.size)
    } else if old.version_id != new.version_id {
        "another version".into()
    } else if old.endpoint != new.endpoint {
        format!("endpoint {} then, {} now", old.endpoint, new.endpoint)
    } else {
        "another object or another tally version".into()
    }
}
