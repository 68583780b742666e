//! Group commit of a prefix download's small objects: each is written under its temporary name
//! (`DEST\tally-lock` or `DEST\tally-partial`, not synced), then waits here; one `syncfs` of the file system makes the
//! data of every file waiting durable at once, and only then is each renamed to its final name.
//! The folders whose entries changed are synced once each at the end of the run ([`Folders`]).
//!
//! Order and guarantee: data durable (syncfs) -> rename -> folder fsync (end of run, before exit
//! 0). After a crash no file is half-written under its final name (a rename is only made after its
//! data is on disk); after exit 0 every file is durable. A crash before a file's rename leaves at
//! most its temporary file, which the next run removes and fetches again; a crash after the
//! rename and before the folder's sync may lose the rename (the file is then missing, never torn).
//!
//! Groups form by themselves (no timer): while one group's `syncfs` runs, the files that finish
//! writing meanwhile wait for the next; a group holds at most the files in flight. `syncfs`
//! reports a write error of any file of the file system since the last call (Linux 5.8 and
//! later); where there is no `syncfs`, each file of the group is `fdatasync`ed instead.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::download::dest::{self, DestLock};
use crate::error::Error;
use crate::exec::blocking;

/// Folders kept for the sync at the end before they are synced early (memory stays bounded).
const FOLDERS_HELD: usize = 4096;

/// The folders whose entries changed (a file renamed in, a folder made): synced once each.
#[derive(Default)]
pub(crate) struct Folders(Mutex<BTreeSet<PathBuf>>);

impl Folders {
    /// Notes `file`'s folder and every folder above it up to `root`. Blocking (syncs them all
    /// early when too many are held).
    fn note(&self, root: &Path, file: &Path) -> std::io::Result<()> {
        let full = {
            let mut held = self.0.lock().unwrap_or_else(|p| p.into_inner());
            let mut at = file.parent();
            while let Some(d) = at {
                if !held.insert(d.to_owned()) || d == root {
                    break;
                }
                at = d.parent();
            }
            held.len() > FOLDERS_HELD
        };
        if full { self.sync() } else { Ok(()) }
    }

    /// Syncs every folder noted (their renames and new entries survive a crash). Blocking.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let held = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        // Deepest first: a folder's entry in its parent is synced after the folder itself.
        for d in held.iter().rev() {
            crate::fsx::sync_dir(d)?;
        }
        Ok(())
    }
}

/// A small object written under its temporary name (closed), its bytes proven, not yet synced or
/// renamed; the destination's lock held until it is (one descriptor per file waiting).
pub(crate) struct Staged {
    /// The device and inode of the file written (its name is checked to still be it).
    pub(crate) id: (u64, u64),
    /// Its temporary name: the destination's lock file (`DEST\tally-lock`, made by this run and
    /// holding the bytes), or `DEST\tally-partial`.
    pub(crate) partial: PathBuf,
    pub(crate) target: PathBuf,
    pub(crate) lock: DestLock,
}

type Waiting = (Staged, oneshot::Sender<Result<bool, Error>>);

/// The files waiting for the next group's sync, and the turn to run it.
pub(crate) struct Commits {
    root: PathBuf,
    folders: std::sync::Arc<Folders>,
    waiting: Mutex<Vec<Waiting>>,
    turn: tokio::sync::Mutex<()>,
}

impl Commits {
    /// Commits for a download into `root`.
    pub(crate) fn new(root: &Path) -> Commits {
        Commits {
            root: root.to_owned(),
            folders: Default::default(),
            waiting: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// Puts `staged` in place once its data is durable: `Ok(true)` renamed to its target,
    /// `Ok(false)` something appeared at the target meanwhile (the temporary file is removed).
    /// Whoever gets the turn first commits every file waiting, this one included.
    pub(crate) async fn put(&self, staged: Staged) -> Result<bool, Error> {
        let (tx, mut rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((staged, tx));
        let turn = self.turn.lock().await;
        if let Ok(done) = rx.try_recv() {
            return done;
        }
        let group = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        let (root, folders) = (self.root.clone(), self.folders.clone());
        blocking(move || commit(group, &root, &folders)).await;
        drop(turn);
        rx.await.unwrap_or_else(|_| {
            Err(Error::Destination {
                path: self.root.clone(),
                why: "a file's commit was lost (internal error): run the same command again".into(),
            })
        })
    }

    /// Syncs the folders whose entries changed (exit 0 comes after this). Blocking.
    pub(crate) fn sync_folders(&self) -> std::io::Result<()> {
        self.folders.sync()
    }
}

/// One group: the data of every file made durable, then each renamed into place and its folders
/// noted; every waiter gets its outcome. Blocking.
fn commit(group: Vec<Waiting>, root: &Path, folders: &Folders) {
    let synced = sync_data(group.iter().map(|(s, _)| s));
    for (s, tx) in group {
        let done = match &synced {
            Ok(()) => rename(s, root, folders),
            Err(e) => {
                let _ = std::fs::remove_file(&s.partial);
                Err(dest::io_error(&s.target, e))
            }
        };
        let _ = tx.send(done);
    }
}

/// Makes the data of the files `staged` durable: one `syncfs` per file system among them
/// (Linux), else an `fdatasync` each. Blocking.
fn sync_data<'a>(staged: impl Iterator<Item = &'a Staged>) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let mut devices = std::collections::BTreeMap::new();
        for s in staged {
            devices.entry(s.id.0).or_insert(&s.partial);
        }
        for partial in devices.values() {
            rustix::fs::syncfs(File::open(crate::fsx::parent_dir(partial))?)?;
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        for s in staged {
            crate::fsx::open_regular(&s.partial, false, false)?.sync_data()?;
        }
        Ok(())
    }
}

/// Renames `s`'s temporary file to its target, unless its name no longer holds the very file
/// written (an error) or something appeared at the target meanwhile (`false`, the temporary file
/// removed). Blocking.
fn rename(s: Staged, root: &Path, folders: &Folders) -> Result<bool, Error> {
    use std::os::unix::fs::MetadataExt as _;
    let Staged {
        id,
        partial,
        target,
        lock,
    } = s;
    let same = std::fs::symlink_metadata(&partial).is_ok_and(|m| (m.dev(), m.ino()) == id);
    if !same {
        return Err(Error::Destination {
            path: partial,
            why: "was replaced by another program during the download: nothing was put in place"
                .into(),
        });
    }
    if std::fs::symlink_metadata(&target).is_ok() {
        let _ = std::fs::remove_file(&partial);
        return Ok(false);
    }
    if let Err(e) = std::fs::rename(&partial, &target) {
        let _ = std::fs::remove_file(&partial);
        return Err(dest::io_error(&target, &e));
    }
    let _ = std::fs::remove_file(dest::journal_path(&target));
    drop(lock);
    folders
        .note(root, &target)
        .map_err(|e| dest::io_error(&target, &e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path, name: &str, body: &[u8]) -> Staged {
        use std::io::Write as _;
        let target = dir.join(name);
        let partial = dest::partial_path(&target);
        let lock = DestLock::acquire(&target).unwrap();
        let mut file = crate::fsx::create_new(&partial, 0o666).unwrap();
        file.write_all(body).unwrap();
        let m = file.metadata().unwrap();
        use std::os::unix::fs::MetadataExt as _;
        Staged {
            id: (m.dev(), m.ino()),
            partial,
            target,
            lock,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_is_renamed_only_through_the_commit_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let commits = Commits::new(dir.path());
        let files: Vec<Staged> = (0..40)
            .map(|i| {
                staged(
                    dir.path(),
                    &format!("f{i:02}"),
                    format!("body {i}").as_bytes(),
                )
            })
            .collect();
        // Written, not committed: nothing is under a final name yet.
        assert!(
            names(dir.path())
                .iter()
                .all(|n| n.contains(crate::fsx::MARK))
        );
        let done = futures::future::join_all(files.into_iter().map(|s| commits.put(s))).await;
        assert!(done.into_iter().all(|d| d.unwrap()));
        commits.sync_folders().unwrap();
        let want: Vec<String> = (0..40).map(|i| format!("f{i:02}")).collect();
        assert_eq!(
            names(dir.path()),
            want,
            "every file renamed, nothing else left"
        );
        for i in 0..40 {
            let got = std::fs::read(dir.path().join(format!("f{i:02}"))).unwrap();
            assert_eq!(got, format!("body {i}").as_bytes());
        }
    }

    #[tokio::test]
    async fn a_file_that_appears_at_the_target_meanwhile_is_kept_and_the_temporary_removed() {
        let dir = tempfile::tempdir().unwrap();
        let commits = Commits::new(dir.path());
        let s = staged(dir.path(), "x", b"downloaded");
        std::fs::write(dir.path().join("x"), b"someone else's").unwrap();
        assert!(!commits.put(s).await.unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("x")).unwrap(),
            b"someone else's"
        );
        assert_eq!(names(dir.path()), vec!["x".to_owned()]);
    }
}
