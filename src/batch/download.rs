//! `tally download s3://BUCKET/PREFIX/ DIR/`: every object under the prefix (ListObjectsV2) to
//! DIR + the rest of its key, each as `tally download` fetches one, many at a time under one
//! engine, through the tree loop every tree command shares ([`crate::batch::run`]).
//!
//! A key that would map outside DIR (a `..` or `.` segment, an absolute path, an empty segment, a
//! backslash, a `C:`-style drive prefix) is not downloaded: it is reported on its own line and the
//! run ends with exit 2. Folders are created one level at a time, never through a symbolic link,
//! so nothing is written outside DIR. Local files already proven identical are skipped.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::TryStreamExt as _;
use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action, FileLine, TreeReport, stops_everything};
use crate::engine::Engine;
use crate::error::{EXIT_ERROR, Error};
use crate::exec::blocking;
use crate::progress::{InTree, Progress};
use crate::s3::S3Api;
use crate::tree::{FileEntry, Found};
use crate::vocab::ObjectUrl;

use crate::download::{DownloadOptions, download_to};

mod commit;
pub(crate) mod small;

/// Objects downloaded at once at least (their parts share the engine's request slots); see
/// [`active_objects`] and [`in_flight`].
pub(crate) const OBJECTS_IN_FLIGHT: usize = 16;

/// Small objects waiting for their group's sync beyond the active ones, at most (each holds a
/// file descriptor).
const WAITING_MAX: usize = 256;

/// Why `rel` (a key below the prefix) cannot name a file inside the destination folder.
pub(crate) fn unsafe_because(rel: &str) -> Option<&'static str> {
    if rel.is_empty() {
        return Some("nothing is left of the key below the prefix");
    }
    if rel.starts_with('/') {
        return Some("it is an absolute path");
    }
    if rel.contains('\\') {
        return Some("it contains a backslash (a Windows path separator)");
    }
    if rel.contains('\0') {
        return Some("it contains a NUL byte");
    }
    let first = rel.split('/').next().unwrap_or("");
    if first.len() >= 2 && first.as_bytes()[1] == b':' && first.as_bytes()[0].is_ascii_alphabetic()
    {
        return Some("it starts with a Windows drive prefix");
    }
    for seg in rel.split('/') {
        match seg {
            "" => return Some("it has an empty path segment (//)"),
            "." | ".." => return Some("it has a '.' or '..' segment"),
            _ => {}
        }
    }
    None
}

/// Creates the folders of `rel`'s parent under `root`, one level at a time, refusing anything in
/// the way that is not a real folder (a file, a symbolic link): the file's path, and whether
/// something is there already. Blocking.
fn make_folders(root: &Path, rel: &str) -> Result<(PathBuf, bool), String> {
    let mut at = root.to_owned();
    let segments: Vec<&str> = rel.split('/').collect();
    for seg in &segments[..segments.len() - 1] {
        at.push(seg);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "{} is in the way: not a folder (a file or a symbolic link)",
                    at.display()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&at) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                        return Err(format!("{} is in the way: not a folder", at.display()));
                    }
                }
                Err(e) => return Err(format!("cannot create {}: {e}", at.display())),
            },
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    let target = at.join(segments[segments.len() - 1]);
    let there = std::fs::symlink_metadata(&target);
    if there.as_ref().is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "{} is a symbolic link: tally does not write through it",
            target.display()
        ));
    }
    Ok((target, there.is_ok()))
}

/// Downloads every object under `prefix` (a key that is empty or ends in `/`) into `dir`,
/// handing each outcome to `on_line` as it finishes.
pub(crate) async fn download_tree<C: S3Api>(
    s3: &C,
    prefix: &ObjectUrl,
    dir: &Path,
    opts: &DownloadOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    crate::download::check_options(opts)?;
    let d = dir.to_owned();
    let root = blocking(move || make_root(d)).await?;
    let engine = crate::download::engine(opts.concurrency);
    let limited = engine.limit(s3);
    // What the listing said of each object's ETag, until the object's turn (at most the objects
    // in progress wait here).
    let etags = std::sync::Mutex::new(std::collections::HashMap::new());
    let (reader, listing) =
        crate::remote::listing::read_ahead(&limited, &prefix.bucket, &prefix.key);
    let entries = Box::pin(listed(listing, prefix, &root, opts, &etags));
    let stop = cancel.child_token();
    let mut report = TreeReport::new(prefix);
    let commits = commit::Commits::new(&root);
    let active = tokio::sync::Semaphore::new(active_objects(opts.concurrency));
    let job = Job {
        engine: &engine,
        prefix,
        root: &root,
        opts,
        stop: &stop,
        progress,
        commits: &commits,
        active: &active,
    };
    let job = &job;
    let run = crate::batch::run::run(
        entries,
        in_flight(opts.concurrency),
        &stop,
        progress,
        &mut report,
        on_line,
        |entry| {
            let etag = etags
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&entry.rel);
            one_object(job, s3, entry, etag)
        },
    );
    // The listing's pages are read beside the objects, one ahead.
    let fatal = crate::remote::listing::beside(reader, run).await;
    // The small objects' renames (and the folders made for them) survive a crash from here on:
    // exit 0 comes after this.
    let r = root.clone();
    let commits = std::sync::Arc::new(commits);
    blocking(move || commits.sync_folders().map_err(|e| dest_error(&r, &e))).await?;
    let bytes = report.downloaded_bytes;
    report.end(started, bytes, fatal, cancel)
}

/// Objects downloading at once (started, not yet written): twice `--concurrency`, so that the
/// next objects' GETs are ready when a slot frees.
fn active_objects(concurrency: usize) -> usize {
    (2 * concurrency).max(OBJECTS_IN_FLIGHT)
}

/// Objects in flight: the [`active_objects`], and as many again (at most [`WAITING_MAX`]) for
/// small objects written and waiting for their group's sync, which hold no request slot, no byte
/// budget and no active place, only their lock's descriptor. Without that room a group's sync
/// (a few ms, once 1.5 s on a busy disk) filled the places and the GETs stalled behind it.
fn in_flight(concurrency: usize) -> usize {
    let active = active_objects(concurrency);
    active + active.min(WAITING_MAX)
}

/// The `listing` of `prefix` (at most two pages held: a prefix of millions of objects is never
/// held whole), filtered, as the entries of the run; each small object's ETag noted in `etags`
/// for its turn.
fn listed<'a>(
    listing: impl futures::Stream<Item = Result<crate::s3::ListedObject, Error>> + 'a,
    prefix: &'a ObjectUrl,
    root: &'a Path,
    opts: &'a DownloadOptions,
    etags: &'a std::sync::Mutex<std::collections::HashMap<String, crate::vocab::ETag>>,
) -> impl futures::Stream<Item = Result<Found, Error>> + 'a {
    listing
        .try_filter(|o| {
            let rel = &o.key[prefix.key.len().min(o.key.len())..];
            std::future::ready(opts.filters.allows_file(rel))
        })
        .map_ok(|o| {
            let rel = o.key[prefix.key.len().min(o.key.len())..].to_owned();
            if let Some(e) = o.etag.filter(|e| small::fits(o.size, Some(e))) {
                etags
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(rel.clone(), e);
            }
            Found::File(FileEntry {
                path: root.join(&rel),
                rel,
                size: o.size,
                mtime_ns: 0,
                dev: 0,
                ino: 0,
            })
        })
}

/// The destination folder `d`, made if it does not exist yet (as `aws s3 cp --recursive` does).
/// Blocking.
fn make_root(d: PathBuf) -> Result<PathBuf, Error> {
    if !d.exists() {
        std::fs::create_dir_all(&d).map_err(|e| Error::Destination {
            why: format!("cannot be created: {e}"),
            path: d.clone(),
        })?;
    }
    if d.is_dir() {
        Ok(d)
    } else {
        Err(Error::Destination {
            why: if d.exists() {
                "is not a folder: a prefix is downloaded into a folder (DIR/)".into()
            } else {
                "the destination folder does not exist: create it first".into()
            },
            path: d,
        })
    }
}

fn dest_error(folder: &Path, e: &std::io::Error) -> Error {
    Error::Destination {
        path: folder.to_owned(),
        why: format!("the downloaded files' folder entries could not be made durable (fsync): {e}"),
    }
}

/// What every object of a tree download shares.
struct Job<'a> {
    engine: &'a Engine,
    prefix: &'a ObjectUrl,
    root: &'a Path,
    opts: &'a DownloadOptions,
    stop: &'a CancellationToken,
    progress: &'a dyn Progress,
    /// The small objects' group commits, and the folders their renames changed.
    commits: &'a commit::Commits,
    /// The places of the objects downloading ([`active_objects`]); a small object gives its place
    /// up once written, while it waits for its group's sync.
    active: &'a tokio::sync::Semaphore,
}

async fn one_object<C: S3Api>(
    job: &Job<'_>,
    s3: &C,
    entry: FileEntry,
    etag: Option<crate::vocab::ETag>,
) -> Result<FileLine, (FileLine, Error)> {
    let Job {
        engine,
        prefix,
        root,
        opts,
        progress,
        ..
    } = *job;
    let obj = ObjectUrl {
        bucket: prefix.bucket.clone(),
        key: format!("{}{}", prefix.key, entry.rel),
    };
    let mut line = FileLine::for_entry(&entry, &obj.key);
    if entry.size == 0 && (entry.rel.is_empty() || entry.rel.ends_with('/')) {
        line.action = Action::Ignored;
        line.reason = Some("a folder marker (an empty object whose key ends in /)".into());
        return Ok(line);
    }
    if let Some(why) = unsafe_because(&entry.rel) {
        line.path = obj.key.clone();
        line.reason = Some(format!(
            "not downloaded: the key maps to an unsafe local path: {why}"
        ));
        line.exit_code = EXIT_ERROR;
        return Ok(line);
    }
    let place = job
        .active
        .acquire()
        .await
        .expect("the active places are never closed");
    let (r, rel) = (root.to_owned(), entry.rel.clone());
    let made = blocking(move || make_folders(&r, &rel));
    let (target, there) = match made.await {
        Ok(t) => t,
        Err(why) => {
            line.reason = Some(format!("not downloaded: {why}"));
            line.exit_code = EXIT_ERROR;
            return Ok(line);
        }
    };
    if let Some(etag) = etag.filter(|_| !opts.force && !there)
        && let Some(w) = small::fetch(
            engine,
            (s3, opts.small_by_places),
            &obj,
            &target,
            (entry.size, &etag),
            (job.commits, place),
        )
        .await
    {
        progress.part_done(entry.size);
        line.action = Action::Downloaded;
        line.reason = Some(format!("checked: {}", w.checked.join("; ")));
        line.checksum = w.checksum;
        line.etag = Some(w.etag);
        return Ok(line);
    }
    the_usual_way(job, s3, &obj, &target, line).await
}

/// Downloads `obj` to `target` as `tally download` fetches one object (HEAD, parts, journal),
/// into `line`.
async fn the_usual_way<C: S3Api>(
    job: &Job<'_>,
    s3: &C,
    obj: &ObjectUrl,
    target: &Path,
    mut line: FileLine,
) -> Result<FileLine, (FileLine, Error)> {
    let in_tree = InTree(job.progress);
    let result = tokio::select! {
        r = download_to(job.engine, s3, obj, target, job.opts, &in_tree) => r,
        () = job.stop.cancelled() => Err(Error::Interrupted),
    };
    match result {
        Ok(r) => said(&mut line, r),
        Err(e) => {
            line.reason = Some(crate::redact::redact(&e.to_string()));
            line.exit_code = e.exit_code();
            if stops_everything(&e) {
                return Err((line, e));
            }
        }
    }
    Ok(line)
}

/// Fills `line` with what the one-object download `r` did and proved.
fn said(line: &mut FileLine, r: crate::download::DownloadReport) {
    line.action = if r.already_present {
        Action::Skipped
    } else {
        Action::Downloaded
    };
    line.reason = Some(if r.verified {
        let checked: Vec<&str> = r.checked.iter().map(|p| p.text.as_str()).collect();
        format!("checked: {}", checked.join("; "))
    } else {
        format!(
            "NOT verified: {}",
            r.not_verified
                .as_deref()
                .unwrap_or("nothing could be compared")
        )
    });
    // `ALGORITHM value`, as the other trees' lines say it.
    let alg = r.checked.iter().find_map(|p| p.algorithm.clone());
    line.checksum = r
        .checksum
        .map(|c| format!("{} {}", alg.unwrap_or_default(), c.remote));
    line.etag = r.etag.map(|e| e.remote);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Downloads every object of `s3` under `p/` into `dir`; the lines, by key.
    async fn run_tree(
        s3: &crate::s3::fake::FakeS3,
        dir: &Path,
    ) -> std::collections::BTreeMap<String, FileLine> {
        let opts = DownloadOptions {
            force: false,
            concurrency: 2,
            small_by_places: false,
            filters: Default::default(),
            hedge: false,
        };
        run_tree_with(s3, dir, &opts).await
    }

    /// [`run_tree`] with `opts`.
    async fn run_tree_with(
        s3: &crate::s3::fake::FakeS3,
        dir: &Path,
        opts: &DownloadOptions,
    ) -> std::collections::BTreeMap<String, FileLine> {
        let lines = std::sync::Mutex::new(std::collections::BTreeMap::new());
        let on_line = |l: &FileLine| {
            lines
                .lock()
                .unwrap()
                .insert(l.key.clone().unwrap_or_default(), l.clone());
        };
        let _ = download_tree(
            s3,
            &ObjectUrl::parse("s3://bkt/p/").unwrap(),
            dir,
            opts,
            &crate::progress::Silent,
            &CancellationToken::new(),
            &on_line,
        )
        .await;
        lines.into_inner().unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_objects_go_twice_concurrency_at_once_by_default_and_never_past_a_given_one() {
        // Forty small objects, one GET each, at a concurrency of 8. The fake holds requests until
        // the number asked for are in flight together (at most the time given).
        let opts = |small_by_places| DownloadOptions {
            force: false,
            concurrency: 8,
            small_by_places,
            filters: Default::default(),
            hedge: false,
        };
        for (by_places, gather, within, peak) in [
            // --concurrency left out: sixteen GETs in flight together (the places: twice 8).
            (true, 16, 60, 16),
            // --concurrency 8 given: the fake waits 2 s for a ninth, which never comes.
            (false, 9, 2, 8),
        ] {
            let fake = crate::s3::fake::FakeS3::default();
            for i in 0..40u8 {
                fake.replace_object(&format!("p/f{i:02}"), vec![i; 1000 + usize::from(i)]);
            }
            fake.gather(gather, std::time::Duration::from_secs(within));
            let dir = tempfile::tempdir().unwrap();
            let lines = run_tree_with(&fake, dir.path(), &opts(by_places)).await;
            for i in 0..40u8 {
                let key = format!("p/f{i:02}");
                assert_eq!(lines[&key].action, Action::Downloaded, "{key}");
                // One GET of the whole object, not a range: its checksum came with it.
                let reason = lines[&key].reason.as_deref().unwrap_or_default();
                assert!(
                    reason.contains("checksum (sent with the GET)"),
                    "{key}: {reason}"
                );
                assert_eq!(
                    std::fs::read(dir.path().join(&key[2..])).unwrap(),
                    vec![i; 1000 + usize::from(i)]
                );
            }
            assert_eq!(fake.peak_in_flight(), peak, "small_by_places {by_places}");
        }
    }

    #[tokio::test]
    async fn colliding_and_nesting_keys_land_exact_or_are_reported_never_nested() {
        let s3 = crate::s3::fake::FakeS3::default();
        let objects: Vec<(&str, Vec<u8>)> = vec![
            ("p/x", vec![1; 70_000]),
            ("p/x.tally-partial", vec![2; 22]),
            ("p/x.tally-partial.journal", vec![3; 33]),
            ("p/x.journal.tmp", vec![4; 44]),
            ("p/d", vec![5; 1000]),
            ("p/d/inner", vec![6; 2000]),
        ];
        for (k, b) in &objects {
            s3.replace_object(k, b.clone());
        }
        for pre_made in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            if pre_made {
                std::fs::create_dir(dir.path().join("d")).unwrap();
            }
            let lines = run_tree(&s3, dir.path()).await;
            for (k, b) in &objects[..4] {
                let p = dir.path().join(&k[2..]);
                assert_eq!(&std::fs::read(&p).unwrap(), b, "{k}");
                assert_eq!(lines[*k].action, Action::Downloaded, "{k}");
            }
            assert!(!dir.path().join("d/d").exists(), "never nested");
            let (d, inner) = (&lines["p/d"], &lines["p/d/inner"]);
            match std::fs::symlink_metadata(dir.path().join("d"))
                .unwrap()
                .is_file()
            {
                true => {
                    assert_eq!(std::fs::read(dir.path().join("d")).unwrap(), objects[4].1);
                    assert_eq!(inner.exit_code, EXIT_ERROR, "{inner:?}");
                }
                false => {
                    assert_eq!(
                        std::fs::read(dir.path().join("d/inner")).unwrap(),
                        objects[5].1
                    );
                    assert_eq!(d.exit_code, EXIT_ERROR, "{d:?}");
                }
            }
            if pre_made {
                assert_eq!(d.exit_code, EXIT_ERROR, "{d:?}");
            }
            // Nothing of tally's is left.
            let mut left = Vec::new();
            for e in walkdir(dir.path()) {
                if e.to_string_lossy().contains(crate::fsx::MARK) {
                    left.push(e);
                }
            }
            assert!(left.is_empty(), "{left:?}");
        }
    }

    fn walkdir(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn keys_that_would_leave_the_folder_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "C:/Windows/x",
            "c:x",
            "a:b",
            "a\\..\\b",
            "",
        ] {
            assert!(unsafe_because(bad).is_some(), "{bad:?} must be refused");
        }
        for good in [
            "a",
            "a/b/c.mov",
            "..a",
            "a..",
            ".hidden",
            "C/x",
            "ab:c",
            "reel 1/A001.mov",
        ] {
            assert_eq!(unsafe_because(good), None, "{good:?} is fine");
        }
    }

    #[test]
    fn folders_are_made_inside_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        assert_eq!(
            make_folders(&root, "a/b/c.mov").unwrap(),
            (root.join("a/b/c.mov"), false)
        );
        assert!(root.join("a/b").is_dir());
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let e = make_folders(&root, "link/x/y").unwrap_err();
        assert!(e.contains("in the way"), "{e}");
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "nothing outside"
        );
        std::fs::write(root.join("file"), b"").unwrap();
        assert!(make_folders(&root, "file/x").is_err());
        std::os::unix::fs::symlink(outside.join("t"), root.join("t")).unwrap();
        assert!(
            make_folders(&root, "t")
                .unwrap_err()
                .contains("symbolic link")
        );
    }
}
