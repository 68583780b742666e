//! A prefix download's small objects: one GET each, no HEAD, no journal, one write, one rename;
//! the data made durable by group ([`super::commit`]: one `syncfs` for every file waiting) before
//! the renames, the folders' entries once per folder at the end of the run.
//!
//! An object the listing gives with a single-part ETag and at most [`SMALL_MAX`] bytes is fetched
//! whole in one GET pinned to that ETag (`If-Match`: the object listed, or PreconditionFailed),
//! with checksum mode on. Its bytes are hashed once (MD5, and the reply's full-object checksum
//! algorithm when the reply carries one) and must match: the checksum the GET's reply carries,
//! and the ETag (the MD5 of the bytes the server stored). Only then is the file written, under a
//! temporary name no key can produce (the destination's lock file `DEST\tally-lock` itself when
//! this run creates it, with `O_EXCL|O_NOFOLLOW`; else `DEST\tally-partial`, created so, under
//! the lock), its data synced with its group, and renamed to DEST (checked again to be nothing
//! else). So after a crash no file is half-written under its final name; after the
//! run's last folder is synced (before exit 0), every file is durable.
//!
//! Anything this path cannot decide (DEST already there, an ETag the bytes do not give and no
//! checksum that proves them — an SSE-KMS object —, a checksum that does not match, an object
//! changed since the listing, any error) is handed to the one-object download, which asks the
//! object with a HEAD, fetches it again and reports as it always does.

use std::path::Path;

use bytes::BytesMut;
use futures::StreamExt as _;

use super::commit::{Commits, Staged};
use crate::download::dest;
use crate::engine::Engine;
use crate::error::Error;
use crate::exec::blocking;
use crate::s3::{ObjectRead as _, RemoteChecksum, S3Api};
use crate::vocab::{ChecksumType, ETag, ObjectUrl};

/// Objects up to this size take the small path (the bytes are held in memory, under the engine's
/// byte budget, until proven).
pub(crate) const SMALL_MAX: u64 = crate::engine::BY_PLACES_MAX;

/// What the small path proved of an object it wrote.
pub(crate) struct Written {
    /// What the bytes were checked against, in words.
    pub(crate) checked: Vec<String>,
    /// The reply's checksum (`ALGORITHM value`), when it carried one that was compared.
    pub(crate) checksum: Option<String>,
    /// The ETag.
    pub(crate) etag: String,
}

/// Whether an object the listing gives as (`size`, `etag`) takes the small path.
pub(crate) fn fits(size: u64, etag: Option<&ETag>) -> bool {
    size <= SMALL_MAX && etag.is_some_and(|e| e.parts().is_none() && e.as_str().len() == 32)
}

/// Fetches `obj` (listed with `size` and `etag`) to `target` (its folders made, nothing there
/// when the caller looked), proven as the module says; `None` when this path cannot decide (the
/// caller downloads it the usual way).
pub(crate) async fn fetch<C: S3Api>(
    engine: &Engine,
    (s3, by_places): (&C, bool),
    obj: &ObjectUrl,
    target: &Path,
    (size, etag): (u64, &ETag),
    (commits, place): (&Commits, tokio::sync::SemaphorePermit<'_>),
) -> Option<Written> {
    let held = engine.reserve(size).await;
    let (body, reply) = get_whole((engine, by_places), s3, obj, size, etag).await?;
    let alg = reply
        .as_ref()
        .filter(|c| !c.value.contains('-') && c.kind != Some(ChecksumType::Composite))
        .map(|c| c.algorithm);
    let (t, e) = (target.to_owned(), etag.clone());
    let compared = reply.clone().filter(|_| alg.is_some());
    // Hashed on the blocking thread that writes it (a small body: one handoff, not two).
    let staged = blocking(move || {
        let hash = crate::hash::hash_range(alg, true, &body);
        let Some(checked) = judge(&hash, compared.as_ref(), &e) else {
            return Ok(None);
        };
        Ok::<_, Error>(stage(&t, &body)?.map(|s| (checked, s)))
    });
    let written = async {
        let staged = staged.await?;
        // Written: its bytes leave the budget, and it gives its place up to the next object,
        // while it waits for its group's sync.
        drop((held, place));
        match staged {
            Some((checked, s)) => Ok(commits.put(s).await?.then_some(checked)),
            None => Ok(None),
        }
    };
    match written.await {
        Ok(Some(checked)) => Some(Written {
            checksum: alg
                .and(reply)
                .map(|c| format!("{} {}", c.algorithm, c.value)),
            checked,
            etag: etag.as_str().to_owned(),
        }),
        Ok(None) => None,
        Err::<_, Error>(e) => {
            tracing::info!("{obj}: {e}: downloading it the usual way");
            None
        }
    }
}

/// One GET of the whole object, pinned to `etag`, collected (`size` bytes exactly): the body
/// and the checksum its reply carried. `None` on any error or another length. The GET holds one
/// of the engine's request slots, unless `by_places` (the caller's place among the objects
/// downloading is then its only bound: see `DownloadOptions::small_by_places`).
async fn get_whole<C: S3Api>(
    (engine, by_places): (&Engine, bool),
    s3: &C,
    obj: &ObjectUrl,
    size: u64,
    etag: &ETag,
) -> Option<(BytesMut, Option<RemoteChecksum>)> {
    // The whole object, not a range: the reply then carries the object's checksum.
    let get = if by_places {
        s3.get_whole(obj, size, Some(etag)).await
    } else {
        let s3l = engine.limit(s3);
        s3l.get_whole(obj, size, Some(etag)).await
    };
    let reply = match get {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("{obj}: GET: {e}: downloading it the usual way");
            return None;
        }
    };
    if reply.etag.as_ref().is_some_and(|e| e != etag) {
        return None;
    }
    let mut body = BytesMut::with_capacity(size as usize);
    let mut pieces = reply.body;
    while let Some(piece) = pieces.next().await {
        body.extend_from_slice(&piece.ok()?);
        if body.len() as u64 > size {
            return None;
        }
    }
    (body.len() as u64 == size).then_some((body, reply.checksum))
}

/// What proves the bytes hashed to `hash`: the reply's checksum (when given) and the MD5 ETag;
/// `None` when a value compared differs, or nothing proves them.
fn judge(
    hash: &crate::hash::RangeHash,
    reply: Option<&RemoteChecksum>,
    etag: &ETag,
) -> Option<Vec<String>> {
    let mut checked = Vec::new();
    if let Some(c) = reply {
        let local = hash.checksum.as_ref()?.base64();
        if crate::compare::checksum(&local, Some(&c.value)) != crate::compare::Check::Matched {
            return None;
        }
        checked.push(format!(
            "the object's {} checksum (sent with the GET)",
            c.algorithm
        ));
    }
    let md5 = crate::vocab::hex(&hash.md5?);
    if md5 == etag.as_str() {
        checked.push("the ETag, the MD5 of the object".into());
    } else if checked.is_empty() {
        // Not an MD5 (SSE-KMS) and no checksum: the usual path asks the object what it is.
        return None;
    }
    Some(checked)
}

/// Writes `body` under a temporary name beside `target`, not synced: [`Commits::put`] makes it
/// durable and renames it. The temporary is the destination's lock file itself when this run
/// creates it (one new file per object, nothing removed: a lock file made and removed beside each
/// file cost ext4 an inode allocated and freed per object), else `DEST\tally-partial` (created
/// exclusively, never through a link) under the lock taken the usual way. `None` when something
/// is at `target` already (nothing written). Blocking.
fn stage(target: &Path, body: &[u8]) -> Result<Option<Staged>, Error> {
    let fresh = dest::DestLock::create_fresh(target, 0o666)
        .map_err(|e| dest::io_error(&dest::lock_path(target), &e))?;
    let (lock, temp) = match fresh {
        Some(lock) => {
            let temp = lock.path().to_owned();
            (lock, temp)
        }
        None => (dest::DestLock::acquire(target)?, dest::partial_path(target)),
    };
    dest::check_target(target)?;
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(None);
    }
    let partial = dest::partial_path(target);
    // Whatever is at the partial name was not left by a run that can resume it (no journal is
    // written for a small object): removed, never followed.
    let _ = std::fs::remove_file(&partial);
    let written = if temp == partial {
        let file =
            crate::fsx::create_new(&partial, 0o666).map_err(|e| dest::io_error(&partial, &e))?;
        write_id(&file, body)
    } else {
        write_id(lock.file(), body)
    };
    let id = match written {
        Ok(id) => id,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(dest::io_error(target, &e));
        }
    };
    Ok(Some(Staged {
        id,
        partial: temp,
        target: target.to_owned(),
        lock,
    }))
}

/// Writes `body` into `file` (new and empty); its device and inode.
fn write_id(mut file: &std::fs::File, body: &[u8]) -> std::io::Result<(u64, u64)> {
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt as _;
    file.write_all(body)?;
    let m = file.metadata()?;
    Ok((m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temporaries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(crate::fsx::MARK))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_fresh_lock_holds_the_bytes_excludes_others_and_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("frame.dpx");
        let s = stage(&target, b"the bytes").unwrap().unwrap();
        assert_eq!(
            s.partial,
            dest::lock_path(&target),
            "the lock holds the bytes"
        );
        assert_eq!(
            std::fs::read(dest::lock_path(&target)).unwrap(),
            b"the bytes"
        );
        assert!(
            !target.exists(),
            "nothing under the final name before the commit"
        );
        // Held while it waits: another download of the same file is refused.
        let other = dest::DestLock::acquire(&target).unwrap_err().to_string();
        assert!(other.contains("another tally"), "{other}");
        let commits = Commits::new(dir.path());
        assert!(commits.put(s).await.unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"the bytes");
        assert!(
            temporaries(dir.path()).is_empty(),
            "{:?}",
            temporaries(dir.path())
        );
        // Renamed away, the lock is released: the next run takes a new one.
        drop(dest::DestLock::acquire(&target).unwrap());
    }

    #[tokio::test]
    async fn a_lock_already_there_sends_the_bytes_to_the_partial_name_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("frame.dpx");
        // A crashed run's lock, holding some bytes.
        std::fs::write(dest::lock_path(&target), b"half").unwrap();
        let s = stage(&target, b"the bytes").unwrap().unwrap();
        assert_eq!(s.partial, dest::partial_path(&target));
        let commits = Commits::new(dir.path());
        assert!(commits.put(s).await.unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"the bytes");
        assert!(
            temporaries(dir.path()).is_empty(),
            "{:?}",
            temporaries(dir.path())
        );
    }

    #[test]
    fn nothing_is_written_when_the_target_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("frame.dpx");
        std::fs::write(&target, b"someone's").unwrap();
        assert!(stage(&target, b"the bytes").unwrap().is_none());
        assert_eq!(std::fs::read(&target).unwrap(), b"someone's");
        assert!(
            temporaries(dir.path()).is_empty(),
            "{:?}",
            temporaries(dir.path())
        );
    }
}
