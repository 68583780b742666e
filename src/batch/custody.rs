//! ASC MHL in a tree upload.
//!
//! **In** (whenever the tree has `ascmhl/`): each file is hashed in every format its history holds
//! and compared with the newest value per format, in the upload's own read: the formats ride
//! with the part checksums (`upload::DigestCheck`) and the comparison comes before
//! CompleteMultipartUpload, or before a single PutObject is sent. A file that does not match is
//! not completed (its multipart upload is aborted, its manifest removed; exit 1, the line names
//! both values); a file the history does not list is reported as new; a file the history lists
//! that the tree lacks is reported as missing (exit 1: the folder is not what its history says;
//! files left out by `--include`/`--exclude` are not missing). A file the upload does not read
//! (skipped: its object is proven identical, or trusted from the record) is read for the check
//! alone.
//!
//! **Out** (`--mhl`): a new generation, process `transfer`, location the `s3://` prefix, one
//! `<hash>` per file that is in S3 (uploaded or proven identical) or that failed its check, with
//! the S3 facts in `<metadata>`; streamed to the state directory while files finish, then put in
//! `ascmhl/` with the chain updated. Where the source folder cannot be written (a read-only card),
//! the history goes to the state directory only. Either way `ascmhl/` (generation and chain) is
//! uploaded under the prefix. Nothing is written when the run stopped before the end. The
//! end of the run (missing files, the generations sealed and uploaded) is `custody_finish`.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::batch::custody_scope::{self, Opening, Scope};
use crate::batch::report::{Action as LineAction, FileLine};
use crate::error::{EXIT_ERROR, EXIT_MISMATCH, Error};
use crate::exec::blocking;
use crate::mhl::Expected;
use crate::mhl::generation::{Action, HashEntry, S3Facts};
use crate::mhl::hashes::{FileHashes, HashFormat, file_hashes};
use crate::mhl::history::FOLDER;
use crate::mhl::nested;
use crate::tree::FileEntry;
use crate::vocab::ObjectUrl;

/// What the ASC MHL side of a tree upload did: the summary's `mhl` part.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Summary {
    /// Whether the tree had a history.
    pub history: bool,
    /// Files whose hashes equal the history's.
    pub verified: u64,
    /// Files the history does not list.
    pub new: u64,
    /// Files whose hashes differ from the history's (not uploaded).
    pub mismatched: u64,
    /// Files the history lists that the tree lacks.
    pub missing: u64,
    /// The generation written (`--mhl`), its file name.
    pub generation: Option<String>,
    /// The nested histories' generations written (`--mhl`), relative to the root.
    pub nested_generations: Vec<String>,
    /// Where it was written locally (the source's `ascmhl/`, or the state directory).
    pub written_to: Option<String>,
    /// Why the generation went to the state directory instead of the source, when it did.
    pub source_read_only: Option<String>,
    /// The keys the generation and the chain were uploaded to.
    pub uploaded: Vec<String>,
    /// What the history holds that tally did not act on, and why (a generation the chain does
    /// not list, its values, renames and patterns), at most [`MAX_WARNINGS`] and a count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Warnings kept in the summary (the rest are counted in a last one).
const MAX_WARNINGS: usize = 100;

/// What the check of one file found.
#[derive(Debug)]
pub(crate) enum Checked {
    /// Not subject to the history (`ascmhl/` itself, or an ignore pattern).
    Outside,
    /// Not in the history; hashed when a generation is written.
    New(Option<(FileHashes, SystemTime)>),
    /// Every format the history holds matches.
    Verified(FileHashes, SystemTime),
    /// At least one format differs: (format, recorded, actual, generation file).
    Mismatch(FileHashes, SystemTime, Vec<crate::mhl::Difference>),
    /// The file could not be read for the check.
    Unreadable(String),
    /// Not judged: the upload that was to read it failed first (its line says why).
    Unchecked,
}

/// The ASC MHL side of one tree upload.
pub(crate) struct Session {
    pub(super) root: PathBuf,
    /// The root's history first, then every nested one (custody_scope).
    pub(super) scopes: Vec<Scope>,
    /// Each scope's folder relative to the root, by index.
    pub(super) dirs: Vec<String>,
    pub(super) created: SystemTime,
    bucket: String,
    pub(super) summary: Mutex<Summary>,
    /// Warnings beyond [`MAX_WARNINGS`].
    more_warnings: std::sync::atomic::AtomicU64,
}

impl Session {
    /// Opens the session for the tree at `root` uploaded to `prefix`: loads and checks the
    /// history (the root's and every nested one); with `write` (`--mhl`) starts the new
    /// generations in the state directory. `None` when there is nothing to do (no history, no
    /// `--mhl`). Blocking.
    pub(crate) fn open(
        root: &Path,
        prefix: &ObjectUrl,
        write: bool,
        state_dir: &Path,
    ) -> Result<Option<Session>, Error> {
        let base = format!("s3://{}/{}", prefix.bucket, prefix.key);
        let location = move |dir: &str| {
            if dir.is_empty() {
                base.clone()
            } else {
                format!("{base}{dir}/")
            }
        };
        Session::start(
            root,
            prefix,
            &location,
            prefix.bucket.clone(),
            write,
            state_dir,
        )
    }

    /// The session of a download of `source` into the folder `root` with `--mhl`: every file
    /// checked against the history that came with it, and a generation (location: the folder)
    /// written into `root/ascmhl/` (and into each nested history's). Blocking.
    pub(crate) fn open_download(
        root: &Path,
        source: &ObjectUrl,
        state_dir: &Path,
    ) -> Result<Option<Session>, Error> {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        let location = move |dir: &str| {
            let folder = if dir.is_empty() {
                abs.clone()
            } else {
                abs.join(dir)
            };
            folder.display().to_string()
        };
        Session::start(root, source, &location, String::new(), true, state_dir)
    }

    fn start(
        root: &Path,
        prefix: &ObjectUrl,
        location: &dyn Fn(&str) -> String,
        bucket: String,
        write: bool,
        state_dir: &Path,
    ) -> Result<Option<Session>, Error> {
        let abs = std::path::absolute(root).map_err(|e| Error::Source {
            path: root.to_owned(),
            why: e.to_string(),
        })?;
        let created = SystemTime::now();
        let work = work_dir(state_dir, &abs, prefix);
        let opening = Opening {
            root: &abs,
            location,
            write,
            work: &work,
            created,
        };
        let Some(scopes) = custody_scope::open_all(&opening)? else {
            return Ok(None);
        };
        Ok(Some(Session::with_scopes(abs, scopes, created, bucket)))
    }

    fn with_scopes(
        root: PathBuf,
        scopes: Vec<Scope>,
        created: SystemTime,
        bucket: String,
    ) -> Session {
        let summary = Summary {
            history: scopes.iter().any(|s| s.history.is_some()),
            ..Summary::default()
        };
        let session = Session {
            root,
            dirs: scopes.iter().map(|s| s.dir.clone()).collect(),
            scopes,
            created,
            bucket,
            summary: Mutex::new(summary),
            more_warnings: Default::default(),
        };
        for scope in &session.scopes {
            for g in scope.history.iter().flat_map(|h| &h.unsealed) {
                session.warn(format!(
                    "generation {} is not in the chain: it vouches for nothing; a file is checked against the value ascmhl verify takes from it, its other values are ignored, as ascmhl does",
                    scope.generation_path(g)
                ));
            }
        }
        session
    }

    /// Adds a warning to the summary (past [`MAX_WARNINGS`], only counted).
    pub(super) fn warn(&self, text: String) {
        let mut summary = self.summary.lock().expect("lock");
        if summary.warnings.len() < MAX_WARNINGS {
            summary.warnings.push(text);
        } else {
            self.more_warnings
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The summary so far (with the count of warnings beyond [`MAX_WARNINGS`]).
    pub(super) fn summary(&self) -> Summary {
        let mut summary = self.summary.lock().expect("lock").clone();
        let more = self
            .more_warnings
            .load(std::sync::atomic::Ordering::Relaxed);
        if more > 0 {
            summary.warnings.push(format!("and {more} more warnings"));
        }
        summary
    }

    /// A session that only checks the folder `root` against its history (the root's and every
    /// nested one; no generation): `None` when it has none. Blocking.
    pub(crate) fn for_check(root: &Path) -> Result<Option<Session>, Error> {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        let opening = Opening {
            root: &abs,
            location: &|_| String::new(),
            write: false,
            work: Path::new(""),
            created: UNIX_EPOCH,
        };
        let Some(scopes) = custody_scope::open_all(&opening)? else {
            return Ok(None);
        };
        Ok(Some(Session::with_scopes(
            abs,
            scopes,
            UNIX_EPOCH,
            String::new(),
        )))
    }

    /// The scope that owns `rel` (the innermost history around it) and `rel` relative to its
    /// folder.
    fn owner<'a>(&self, rel: &'a str) -> (&Scope, &'a str) {
        let i = nested::owners(&self.dirs, rel)
            .first()
            .copied()
            .unwrap_or(0);
        (&self.scopes[i], nested::within(&self.dirs[i], rel))
    }

    /// Whether an ignore pattern of a history around `rel` (matched relative to its folder), or
    /// its being inside a history folder, puts `rel` outside the histories.
    fn outside(&self, rel: &str) -> bool {
        nested::owners(&self.dirs, rel).into_iter().any(|i| {
            let within = nested::within(&self.dirs[i], rel);
            within.starts_with(&format!("{FOLDER}/")) || self.scopes[i].ignore.ignores(within)
        })
    }

    /// What the check of `entry` needs, without reading it: `None` when there is nothing to
    /// compute (outside the history, or new with no generation to write), else the formats to
    /// hash it in and the values its history recorded (`Expected`). Marks the file as seen.
    ///
    /// A file the history lists is checked whatever the ignore patterns say. In a tree with
    /// nested histories the innermost history around the file is its history.
    pub(crate) fn plan(&self, entry: &FileEntry) -> Result<Expected, Checked> {
        let (scope, rel) = self.owner(&entry.rel);
        if rel.starts_with(&format!("{FOLDER}/")) {
            return Err(Checked::Outside);
        }
        let history = scope.history.as_ref();
        let known = scope.known(rel);
        let unsealed = history.and_then(|h| h.unsealed_original(rel));
        // Values only an unlisted generation holds: compared for a warning alone.
        let ignored: Vec<(HashFormat, String, String)> = history
            .map(|h| h.unsealed_values(rel))
            .unwrap_or_default()
            .iter()
            .filter(|(f, v, _)| {
                !known.is_some_and(|k| k.values.iter().any(|(g, w, _)| g == f && w == v))
                    && unsealed.is_none_or(|(g, w, _)| !(g == f && w == v))
            })
            .cloned()
            .collect();
        if known.is_none() && unsealed.is_none() && self.outside(&entry.rel) {
            return Err(Checked::Outside);
        }
        self.mark_seen(&entry.rel);
        let with_unsealed = |mut e: Expected| {
            if let Some((f, v, g)) = unsealed
                && !e.recorded.iter().any(|r| r.0 == *f && r.1 == *v)
            {
                e.recorded.push((*f, v.clone(), g.clone()));
            }
            e.unsealed = ignored
                .iter()
                .map(|(f, v, g)| (*f, v.clone(), scope.generation_path(g)))
                .collect();
            for (f, _, _) in e.recorded.iter().chain(&e.unsealed) {
                if !e.formats.contains(f) {
                    e.formats.push(*f);
                }
            }
            e.formats.sort();
            e
        };
        let writing = scope.writer.is_some();
        match known {
            Some(k) if !k.values.is_empty() => Ok(with_unsealed(Expected {
                formats: k.formats(),
                recorded: k
                    .values
                    .iter()
                    .map(|(f, recorded, g)| {
                        let g = history.map(|h| h.generation_name(*g).to_owned());
                        (*f, recorded.clone(), g.unwrap_or_default())
                    })
                    .collect(),
                unsealed: Vec::new(),
                rel: entry.rel.clone(),
            })),
            _ if unsealed.is_some() || !ignored.is_empty() => Ok(with_unsealed(Expected {
                formats: if writing {
                    scope.new_formats.clone()
                } else {
                    Vec::new()
                },
                recorded: Vec::new(),
                unsealed: Vec::new(),
                rel: entry.rel.clone(),
            })),
            _ if writing => Ok(Expected {
                formats: scope.new_formats.clone(),
                recorded: Vec::new(),
                unsealed: Vec::new(),
                rel: entry.rel.clone(),
            }),
            _ => Err(Checked::New(None)),
        }
    }

    /// Marks `rel` as found in every history around it that lists it (a day folder's history
    /// may list a card's file from before the card had its own).
    fn mark_seen(&self, rel: &str) {
        for i in nested::owners(&self.dirs, rel) {
            if let Some(h) = &self.scopes[i].history {
                h.mark_seen(nested::within(&self.dirs[i], rel));
            }
        }
    }

    /// The verdict on a file whose whole-file `hashes` (at least `expected.formats`) were
    /// computed at `at`: by the upload's own read, or by [`Session::check`].
    pub(crate) fn judge(&self, expected: &Expected, hashes: FileHashes, at: SystemTime) -> Checked {
        for (f, recorded, now, g) in expected.unsealed_differences(&hashes) {
            self.warn(format!(
                "generation {g} is not in the chain; its {f} for '{rel}' ({recorded}, the file has {now}) is ignored, as ascmhl does",
                rel = expected.rel
            ));
        }
        let mut hashes = hashes;
        // Only the formats the history or the generation asks for (not every `--file-hash`).
        let extra: Vec<HashFormat> = hashes
            .iter()
            .map(|(f, _)| f)
            .filter(|f| !expected.formats.contains(f))
            .collect();
        if !extra.is_empty() {
            let mut kept = FileHashes::default();
            for (f, v) in hashes.iter().filter(|(f, _)| !extra.contains(f)) {
                kept.insert(f, v.to_owned());
            }
            hashes = kept;
        }
        if expected.recorded.is_empty() {
            return Checked::New(Some((hashes, at)));
        }
        let differ = expected.differences(&hashes);
        if differ.is_empty() {
            Checked::Verified(hashes, at)
        } else {
            Checked::Mismatch(hashes, at, differ)
        }
    }

    /// Checks `entry` against the history, reading it for that alone (when there is something
    /// to compare or a generation to write): for a folder after a download or verify, and for a
    /// tree file the upload did not read (skipped as proven identical). A file uploaded is
    /// checked on its upload's own read instead (`upload::DigestCheck`).
    pub(crate) async fn check(&self, entry: &FileEntry) -> Checked {
        match self.plan(entry) {
            Ok(expected) => self.check_reading(entry, &expected).await,
            Err(checked) => checked,
        }
    }

    /// [`Session::check`] for a file already planned: reads and hashes it, then judges.
    pub(crate) async fn check_reading(&self, entry: &FileEntry, expected: &Expected) -> Checked {
        let formats = expected.formats.clone();
        let (path, walked) = (entry.path.clone(), (entry.size, entry.mtime_ns));
        let hashed = blocking(move || {
            let unreadable = |e: &dyn std::fmt::Display| {
                format!("cannot be read for the ASC MHL check: {e} (not uploaded)")
            };
            let h = file_hashes(&path, &formats).map_err(|e| unreadable(&e))?;
            // A file still being written (or replaced) since the walk saw it: its hash says
            // nothing about what will be sent.
            let now = std::fs::metadata(&path).map_err(|e| unreadable(&e))?;
            let mtime_ns = now
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(now.mtime_nsec());
            if (now.len(), mtime_ns) != walked {
                return Err("changed while it was being checked against its ASC MHL history: run again once it is complete (not uploaded)".into());
            }
            Ok::<_, String>((h, SystemTime::now()))
        })
        .await;
        match hashed {
            Ok((hashes, at)) => self.judge(expected, hashes, at),
            Err(e) => Checked::Unreadable(e),
        }
    }

    /// The line of a file the check stops (a mismatch, an unreadable file): it is not uploaded.
    pub(crate) fn refusal(
        &self,
        checked: &Checked,
        entry: &FileEntry,
        key: &str,
    ) -> Option<FileLine> {
        let (reason, code, tag) = match checked {
            Checked::Mismatch(_, _, differ) => (
                format!(
                    "does not match its ASC MHL history: {}: not uploaded",
                    crate::mhl::describe(differ)
                ),
                EXIT_MISMATCH,
                "mismatch",
            ),
            Checked::Unreadable(why) => (why.clone(), EXIT_ERROR, "unreadable"),
            _ => return None,
        };
        let mut line = FileLine::for_entry(entry, key);
        line.reason = Some(reason);
        line.exit_code = code;
        line.mhl = Some(tag.into());
        Some(line)
    }

    /// Records what happened to `entry` (its `line`, after the upload or the refusal): counts it,
    /// tags the line, and adds its `<hash>` to the generation when it is in S3 or failed its check.
    pub(crate) fn record(&self, entry: &FileEntry, checked: Checked, line: &mut FileLine) {
        // In S3 (uploaded or proven there), or here after a download.
        let in_s3 = matches!(
            line.action,
            LineAction::Uploaded | LineAction::Skipped | LineAction::Downloaded
        );
        let (scope, rel) = self.owner(&entry.rel);
        let (hashes, at, action_of): (FileHashes, SystemTime, Box<dyn Fn(HashFormat) -> Action>) =
            match checked {
                Checked::Outside | Checked::Unreadable(_) | Checked::Unchecked => return,
                Checked::New(h) => {
                    self.summary.lock().expect("lock").new += 1;
                    line.mhl = Some("new".into());
                    match h {
                        Some((h, at)) if in_s3 => (h, at, Box::new(|_| Action::Original)),
                        _ => return,
                    }
                }
                Checked::Verified(h, at) => {
                    self.summary.lock().expect("lock").verified += 1;
                    line.mhl = Some("verified".into());
                    if !in_s3 {
                        return;
                    }
                    let known: Vec<HashFormat> =
                        scope.known(rel).map(|k| k.formats()).unwrap_or_default();
                    (
                        h,
                        at,
                        Box::new(move |f| {
                            if known.contains(&f) {
                                Action::Verified
                            } else {
                                Action::Original
                            }
                        }),
                    )
                }
                Checked::Mismatch(h, at, _) => {
                    self.summary.lock().expect("lock").mismatched += 1;
                    // Every value of a file that differs is recorded failed: nothing about it is
                    // vouched for.
                    (h, at, Box::new(|_| Action::Failed))
                }
            };
        let Some(writer) = &scope.writer else { return };
        let s3 = (in_s3 && !self.bucket.is_empty()).then(|| S3Facts {
            bucket: self.bucket.clone(),
            key: line.key.clone().unwrap_or_default(),
            version_id: line.version_id.clone(),
            etag: line.etag.clone(),
            checksum: line.checksum.clone(),
        });
        let e = HashEntry {
            path: rel.to_owned(),
            size: entry.size,
            modified: Some(mtime(entry.mtime_ns)),
            hashdate: at,
            hashes: hashes
                .iter()
                .map(|(f, v)| (f, v.to_owned(), action_of(f)))
                .collect(),
            s3,
        };
        let mut w = writer.lock().expect("lock");
        if let Some(gw) = w.as_mut()
            && let Err(err) = gw.add(&e)
        {
            tracing::warn!(
                "the ASC MHL generation {} cannot be written ({err}); none will be written",
                gw.path().display()
            );
            *w = None;
        }
    }
}

/// `<state dir>/mhl/<digest of root, bucket, prefix>`: this tree's generations in progress, and its
/// history when the source is read-only.
fn work_dir(state_dir: &Path, root: &Path, prefix: &ObjectUrl) -> PathBuf {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [
        root.as_os_str().as_encoded_bytes(),
        prefix.bucket.as_bytes(),
        prefix.key.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    state_dir
        .join("mhl")
        .join(crate::vocab::hex(&h.finalize()[..16]))
}

fn mtime(ns: i64) -> SystemTime {
    if ns <= 0 {
        return UNIX_EPOCH;
    }
    UNIX_EPOCH + Duration::from_nanos(ns as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::custody_seal::seal_into;
    use crate::mhl::generation::{self, GenerationWriter, Header};
    use crate::mhl::hashes::data_hashes;
    use crate::mhl::history::{CHAIN, ChainEntry};

    /// A folder with `a` = "hello world" and a history (written with tally's own writer) holding
    /// its xxh64 from the reference tool's test vector.
    fn card() -> (tempfile::TempDir, FileEntry) {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"hello world").unwrap();
        let hist = dir.path().join(FOLDER);
        std::fs::create_dir_all(&hist).unwrap();
        let name = "0001_x_2020-01-16_091500Z.mhl";
        let header = Header {
            created: UNIX_EPOCH,
            hostname: "h".into(),
            tool_version: "1".into(),
            location: "s3://b/p/".into(),
            ignore: vec![],
        };
        let mut w = GenerationWriter::create(&hist.join(name), &header).unwrap();
        w.add(&HashEntry {
            path: "a".into(),
            size: 11,
            modified: None,
            hashdate: UNIX_EPOCH,
            hashes: vec![(
                HashFormat::Xxh64,
                "45ab6734b21e6968".into(),
                Action::Original,
            )],
            s3: None,
        })
        .unwrap();
        w.finish_with(&[]).unwrap();
        let bytes = std::fs::read(hist.join(name)).unwrap();
        let c4 = data_hashes(&bytes, &[HashFormat::C4]);
        let chain = [ChainEntry {
            sequence: 1,
            path: name.into(),
            format: HashFormat::C4,
            value: c4.get(HashFormat::C4).unwrap().into(),
        }];
        std::fs::write(hist.join(CHAIN), generation::chain_bytes(&chain).unwrap()).unwrap();
        let meta = std::fs::metadata(&a).unwrap();
        let entry = FileEntry {
            path: a,
            rel: "a".into(),
            size: 11,
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        (dir, entry)
    }

    #[tokio::test]
    async fn a_file_that_is_not_what_the_walk_saw_is_not_checked_as_if_it_were() {
        let (dir, entry) = card();
        let s = Session::for_check(dir.path()).unwrap().unwrap();
        assert!(matches!(s.check(&entry).await, Checked::Verified(..)));
        let mut stale = entry.clone();
        stale.mtime_ns -= 1;
        match s.check(&stale).await {
            Checked::Unreadable(why) => assert!(why.contains("changed while"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A changed byte is a mismatch naming the recorded value and the generation.
        std::fs::write(&entry.path, b"hello worle").unwrap();
        let meta = std::fs::metadata(&entry.path).unwrap();
        let now = FileEntry {
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ..entry
        };
        let checked = s.check(&now).await;
        let line = s.refusal(&checked, &now, "p/a").expect("refused");
        assert_eq!(line.exit_code, EXIT_MISMATCH);
        let why = line.reason.unwrap();
        assert!(
            why.contains("45ab6734b21e6968") && why.contains("0001_x_2020-01-16_091500Z.mhl"),
            "{why}"
        );
    }

    /// Issue 25 case 6: two runs of one folder finishing in the same second get different
    /// generation numbers (so names), and the chain keeps both.
    #[test]
    fn two_generations_sealed_in_the_same_second_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let hist = dir.path().join(FOLDER);
        let created = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        let mut names = Vec::new();
        for run in 0..2 {
            let temp = dir.path().join(format!("run{run}.part"));
            std::fs::write(&temp, format!("generation of run {run}")).unwrap();
            let c4 = data_hashes(
                format!("generation of run {run}").as_bytes(),
                &[HashFormat::C4],
            );
            let name = match seal_into(
                &hist,
                &temp,
                c4.get(HashFormat::C4).unwrap(),
                "card",
                created,
                None,
            ) {
                Ok(n) => n,
                Err(_) => panic!("sealing failed"),
            };
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "0001_card_2020-09-13_122640Z.mhl",
                "0002_card_2020-09-13_122640Z.mhl"
            ]
        );
        let chain = crate::mhl::history::read_chain(&hist.join(CHAIN)).unwrap();
        let listed: Vec<(u32, &str)> = chain
            .iter()
            .map(|c| (c.sequence, c.path.as_str()))
            .collect();
        assert_eq!(listed, [(1, names[0].as_str()), (2, names[1].as_str())]);
        assert_eq!(
            std::fs::read_to_string(hist.join(&names[1])).unwrap(),
            "generation of run 1"
        );
    }
}
