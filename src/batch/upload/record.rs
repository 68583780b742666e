//! The record of what a tree upload proved: for each file, the local facts it had (size, mtime,
//! device, inode) and the object it was proven identical to (ETag, version id, checksum).
//!
//! Written by every tree upload, read only with `--trust-manifest`: then a file whose size, mtime,
//! device and inode equal the record's, and whose object still has the recorded ETag (in the
//! destination's listing, or one HEAD), is skipped without reading it. That is the trade-off `--trust-manifest` documents: a file changed
//! in place with its size and mtime restored goes unnoticed. By default every file is proven again.
//!
//! On disk: `<state dir>/trees/<digest of root, endpoint, bucket, prefix>.record`, JSON lines. A run
//! appends what it proves to `….record.next`; a run that walked the whole tree replaces the record
//! with it (files gone from the tree, or not proven this time, drop out); an interrupted run's
//! `.next` is folded into the record by the next run before it starts its own. The record is only a
//! shortcut: losing it costs a re-read, never a wrong skip.
//!
//! Neither side is held whole in memory. The record's lines are in key order (the walk's order);
//! a `--trust-manifest` run reads it as a cursor, one line at a time, as the walk asks about each
//! file in the same order ([`Record::lookup`]). A run writes what it proves in key order: the walk
//! says which files it handed on ([`Record::started`], in its order) and each file says when it is
//! done ([`Record::finished`]); an entry waits only while a file before it is still in progress
//! (so about as many entries as files in progress wait), and at most [`PENDING`] wait: past that,
//! the first is written even though a file before it (a big one among many small) is not done.
//! Its line then comes out of order and is passed over by the next run's cursor (that file is
//! proven again, never wrongly skipped). Only folding an
//! interrupted run's entries into the record holds both in memory, once, at the next run's start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::Error;

/// One file proven identical to its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proven {
    /// Path relative to the tree's root, `/`-separated.
    pub rel: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
    /// The object's ETag (unquoted).
    pub etag: Option<String>,
    /// The object's version id, on versioned buckets.
    pub version_id: Option<String>,
    /// The object's checksum, as S3 reports it (for the report).
    pub checksum: Option<String>,
}

impl Proven {
    /// Whether the local facts equal `other`'s (the object facts are checked against S3 apart).
    pub(crate) fn same_file(&self, other: &Proven) -> bool {
        (self.size, self.mtime_ns, self.dev, self.ino)
            == (other.size, other.mtime_ns, other.dev, other.ino)
    }
}

/// This run's entries that wait to be written in key order, at most (when a file before them is
/// still in progress).
pub(crate) const PENDING: usize = 4096;

/// An open record: the earlier run's entries (when loaded), read as they are asked for, and this
/// run's, being written.
#[derive(Debug)]
pub(crate) struct Record {
    path: PathBuf,
    earlier: Mutex<Option<Earlier>>,
    out: Mutex<Option<Out>>,
}

/// The earlier run's record, read one line at a time.
#[derive(Debug)]
struct Earlier {
    lines: std::io::Lines<BufReader<File>>,
    head: Option<Proven>,
}

/// This run's record file and the entries waiting to be written in key order.
#[derive(Debug)]
struct Out {
    w: BufWriter<File>,
    pending: BTreeMap<String, Proven>,
    /// The files handed on by the walk and not yet done (at most the files in progress, and the
    /// ones a stop left unstarted).
    in_progress: BTreeSet<String>,
}

impl Out {
    fn write(&mut self, p: &Proven) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.w, p).map_err(std::io::Error::other)?;
        self.w.write_all(b"\n")
    }

    /// Writes the entries no file in progress comes before, and the first ones past
    /// [`PENDING`].
    fn write_ready(&mut self) -> std::io::Result<()> {
        while let Some(first) = self.pending.first_key_value().map(|(k, _)| k) {
            let ready = self.in_progress.first().is_none_or(|f| first < f);
            if !ready && self.pending.len() <= PENDING {
                return Ok(());
            }
            let (_, p) = self.pending.pop_first().expect("a first entry");
            self.write(&p)?;
        }
        Ok(())
    }
}

impl Earlier {
    /// The entry of `rel`, for `rel`s asked in ascending order.
    fn find(&mut self, rel: &str) -> Option<Proven> {
        loop {
            if let Some(h) = &self.head {
                match h.rel.as_str().cmp(rel) {
                    std::cmp::Ordering::Less => self.head = None,
                    std::cmp::Ordering::Equal => return self.head.take(),
                    std::cmp::Ordering::Greater => return None,
                }
            }
            // A line that cannot be read or parsed (a torn last line) is passed over.
            match self.lines.next()? {
                Ok(line) => self.head = serde_json::from_str::<Proven>(&line).ok(),
                Err(_) => return None,
            }
        }
    }
}

/// Where the record of uploading the tree at `root` (absolute) to `endpoint`/`bucket`/`prefix` lives.
pub(crate) fn path_for(
    state_dir: &Path,
    root: &Path,
    endpoint: &str,
    bucket: &str,
    prefix: &str,
) -> PathBuf {
    let mut h = Sha256::new();
    for part in [
        root.as_os_str().as_encoded_bytes(),
        endpoint.as_bytes(),
        bucket.as_bytes(),
        prefix.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let name = crate::vocab::hex(&h.finalize()[..16]);
    state_dir.join("trees").join(format!("{name}.record"))
}

fn next_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".next");
    PathBuf::from(p)
}

fn record_error(path: &Path, e: &std::io::Error) -> Error {
    Error::Manifest {
        path: path.to_owned(),
        why: e.to_string(),
    }
}

/// Reads the entries of a record file into `into` (later lines win); a torn last line is ignored.
fn read_into(path: &Path, into: &mut HashMap<String, Proven>) -> Result<(), Error> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(record_error(path, &e)),
    };
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| record_error(path, &e))?;
        if let Ok(p) = serde_json::from_str::<Proven>(&line) {
            into.insert(p.rel.clone(), p);
        }
    }
    Ok(())
}

/// Writes `entries` as the record at `path`, atomically (temporary file, fsync, rename).
fn write_all<'a>(path: &Path, entries: impl Iterator<Item = &'a Proven>) -> Result<(), Error> {
    let tmp = crate::fsx::temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut w = BufWriter::new(crate::fsx::create_new(&tmp, 0o600)?);
        for p in entries {
            serde_json::to_writer(&mut w, p)?;
            w.write_all(b"\n")?;
        }
        w.into_inner().map_err(std::io::Error::other)?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        record_error(path, &e)
    })
}

impl Record {
    /// Opens the record at `path`: folds an interrupted run's entries into it, loads it when
    /// `load` (for `--trust-manifest`), and starts this run's list.
    pub(crate) fn open(path: &Path, load: bool) -> Result<Record, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| record_error(dir, &e))?;
        }
        let next = next_of(path);
        if next.exists() {
            let mut known = HashMap::new();
            read_into(path, &mut known)?;
            read_into(&next, &mut known)?;
            let mut all: Vec<&Proven> = known.values().collect();
            all.sort_by(|a, b| a.rel.cmp(&b.rel));
            write_all(path, all.into_iter())?;
            let _ = std::fs::remove_file(&next);
        }
        let earlier = match File::open(path) {
            Ok(f) if load => Some(Earlier {
                lines: BufReader::new(f).lines(),
                head: None,
            }),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(record_error(path, &e)),
        };
        // Created exclusively: never written through a link placed at its name.
        let _ = std::fs::remove_file(&next);
        let out = crate::fsx::create_new(&next, 0o600).map_err(|e| record_error(&next, &e))?;
        Ok(Record {
            path: path.to_owned(),
            earlier: Mutex::new(earlier),
            out: Mutex::new(Some(Out {
                w: BufWriter::new(out),
                pending: BTreeMap::new(),
                in_progress: BTreeSet::new(),
            })),
        })
    }

    /// What an earlier run proved about `rel` (only when loaded). Asked in key order (the
    /// walk's): an entry before `rel` is passed over for good. Blocking (reads the record).
    pub(crate) fn lookup(&self, rel: &str) -> Option<Proven> {
        self.earlier
            .lock()
            .expect("record lock")
            .as_mut()?
            .find(rel)
    }

    /// The walk handed on the file at `rel` (called in the walk's order, before the file is
    /// done): entries after it wait until it is [`Record::finished`].
    pub(crate) fn started(&self, rel: &str) {
        self.update(|o| {
            o.in_progress.insert(rel.to_owned());
        });
    }

    /// The file at `rel` is done, proven ([`Record::add`]ed before) or not.
    pub(crate) fn finished(&self, rel: &str) {
        self.update(|o| {
            o.in_progress.remove(rel);
        });
    }

    /// Adds a file this run proved.
    pub(crate) fn add(&self, p: &Proven) {
        self.update(|o| {
            o.pending.insert(p.rel.clone(), p.clone());
        });
    }

    /// Applies `change` and writes what became ready. A failure to write only loses the
    /// shortcut: it is logged.
    fn update(&self, change: impl FnOnce(&mut Out)) {
        let mut out = self.out.lock().expect("record lock");
        let Some(o) = out.as_mut() else { return };
        change(o);
        if let Err(e) = o.write_ready() {
            tracing::warn!(
                "the tree record {} cannot be written ({e}); the next run will prove every file again",
                self.path.display()
            );
            *out = None;
        }
    }

    /// Ends this run's list: after a complete walk it becomes the record; otherwise it is kept to
    /// be folded in by the next run.
    pub(crate) fn close(self, complete: bool) -> Result<(), Error> {
        let next = next_of(&self.path);
        let out = self.out.lock().expect("record lock").take();
        let Some(mut o) = out else {
            let _ = std::fs::remove_file(&next);
            return Ok(());
        };
        for p in std::mem::take(&mut o.pending).into_values() {
            o.write(&p).map_err(|e| record_error(&next, &e))?;
        }
        o.w.into_inner()
            .map_err(std::io::Error::other)
            .and_then(|f| f.sync_all())
            .map_err(|e| record_error(&next, &e))?;
        if complete {
            std::fs::rename(&next, &self.path).map_err(|e| record_error(&self.path, &e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proven(rel: &str, size: u64, etag: &str) -> Proven {
        Proven {
            rel: rel.into(),
            size,
            mtime_ns: 7,
            dev: 1,
            ino: 2,
            etag: Some(etag.into()),
            version_id: None,
            checksum: None,
        }
    }

    #[test]
    fn a_complete_run_replaces_the_record_and_an_interrupted_one_is_folded_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "/r".as_ref(), "e", "b", "p/");
        // First run proves a and b, completes.
        let r = Record::open(&path, true).unwrap();
        assert!(r.lookup("a").is_none());
        r.add(&proven("a", 1, "e1"));
        r.add(&proven("b", 2, "e2"));
        r.close(true).unwrap();
        // Second run proves only a (b is gone from the tree): after it, b is no longer recorded.
        let r = Record::open(&path, true).unwrap();
        assert_eq!(r.lookup("b").unwrap().etag.as_deref(), Some("e2"));
        r.add(&proven("a", 1, "e1"));
        r.close(true).unwrap();
        let r = Record::open(&path, true).unwrap();
        assert!(r.lookup("a").is_some());
        assert!(r.lookup("b").is_none());
        // Interrupted run: proves c with a new a, does not complete.
        r.add(&proven("a", 3, "e3"));
        r.add(&proven("c", 4, "e4"));
        r.close(false).unwrap();
        // The next run sees all three, the interrupted run's a winning.
        let r = Record::open(&path, true).unwrap();
        assert_eq!(r.lookup("a").unwrap().etag.as_deref(), Some("e3"));
        assert_eq!(r.lookup("c").unwrap().size, 4);
        // Without loading, nothing is known (default runs prove every file).
        r.close(false).unwrap();
        let r = Record::open(&path, false).unwrap();
        assert!(r.lookup("a").is_none());
        r.close(false).unwrap();
    }

    #[test]
    fn the_record_is_written_in_key_order_and_read_as_a_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "/r".as_ref(), "e", "b", "p/");
        let r = Record::open(&path, true).unwrap();
        // Handed on in the walk's order, all in progress at once, and finished in reverse.
        let n = PENDING as u64 + 500;
        for i in 0..n {
            r.started(&format!("f{i:06}"));
        }
        for i in (0..n).rev() {
            r.add(&proven(&format!("f{i:06}"), i, "e"));
            r.finished(&format!("f{i:06}"));
        }
        r.close(true).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let rels: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<Proven>(l).unwrap().rel)
            .collect();
        assert_eq!(rels.len() as u64, n);
        // The first 500 written went out before the ones behind them came (past the buffer):
        // the rest is in order.
        assert!(rels[500..].windows(2).all(|w| w[0] < w[1]));
        let r = Record::open(&path, true).unwrap();
        let found = (0..n)
            .filter(|i| r.lookup(&format!("f{i:06}")).is_some())
            .count() as u64;
        assert!(found >= n - 500, "{found} of {n} found by the cursor");
        assert!(r.lookup("a-before-everything").is_none());
        r.close(false).unwrap();
    }

    #[test]
    fn an_entry_waits_only_for_the_files_in_progress_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "/r".as_ref(), "e", "b", "p/");
        let r = Record::open(&path, false).unwrap();
        let pending = |r: &Record| r.out.lock().unwrap().as_ref().unwrap().pending.len();
        // Four files handed on in the walk's order; "b" (a big one) is slow.
        for rel in ["a", "b", "c", "d"] {
            r.started(rel);
        }
        r.add(&proven("a", 1, "e"));
        r.finished("a");
        assert_eq!(pending(&r), 0, "nothing before a: written at once");
        r.add(&proven("d", 4, "e"));
        r.finished("d");
        r.finished("c"); // c failed: done, not proven
        assert_eq!(pending(&r), 1, "d waits for b");
        // Many more files come and go while b is still in progress: they wait, up to PENDING.
        for i in 0..PENDING + 10 {
            let rel = format!("e{i:06}");
            r.started(&rel);
            r.add(&proven(&rel, 5, "e"));
            r.finished(&rel);
            assert!(pending(&r) <= PENDING, "at most PENDING wait");
        }
        r.add(&proven("b", 2, "e"));
        r.finished("b");
        assert_eq!(pending(&r), 0, "b done: the rest written");
        r.close(true).unwrap();
        let rels: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Proven>(l).unwrap().rel)
            .collect();
        assert_eq!(rels.len(), PENDING + 10 + 3);
        assert_eq!(
            &rels[..2],
            ["a", "d"],
            "a at once, then d forced out past PENDING"
        );
    }
}
