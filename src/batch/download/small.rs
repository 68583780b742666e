//! A prefix download's small objects: one GET each, no HEAD, no journal, one write, one
//! `fdatasync`, one rename; the folders' entries made durable once per folder at the end of the
//! run ([`Folders`]).
//!
//! An object the listing gives with a single-part ETag and at most [`SMALL_MAX`] bytes is fetched
//! whole in one GET pinned to that ETag (`If-Match`: the object listed, or PreconditionFailed),
//! with checksum mode on. Its bytes are hashed once (MD5, and the reply's full-object checksum
//! algorithm when the reply carries one) and must match: the checksum the GET's reply carries,
//! and the ETag (the MD5 of the bytes the server stored). Only then is the file written, under a
//! temporary name no key can produce (`DEST\tally-partial`, created with `O_EXCL|O_NOFOLLOW`,
//! under the destination's lock), its data synced, and renamed to DEST (checked again to be no
//! folder and no link). So after a crash no file is half-written under its final name; after the
//! run's last folder is synced (before exit 0), every file is durable.
//!
//! Anything this path cannot decide (DEST already there, an ETag the bytes do not give and no
//! checksum that proves them — an SSE-KMS object —, a checksum that does not match, an object
//! changed since the listing, any error) is handed to the one-object download, which asks the
//! object with a HEAD, fetches it again and reports as it always does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::BytesMut;
use futures::StreamExt as _;

use crate::download::dest;
use crate::engine::Engine;
use crate::error::Error;
use crate::exec::{blocking, on_pool};
use crate::s3::{ObjectRead as _, RemoteChecksum, S3Api};
use crate::vocab::{ChecksumType, ETag, ObjectUrl};

/// Objects up to this size take the small path (the bytes are held in memory, under the engine's
/// byte budget, until proven).
pub(crate) const SMALL_MAX: u64 = 8 * 1024 * 1024;

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

/// Fetches `obj` (listed with `size` and `etag`) to `target` (its folders made), proven as the
/// module says; `None` when this path cannot decide (the caller downloads it the usual way).
pub(crate) async fn fetch<C: S3Api>(
    engine: &Engine,
    s3: &C,
    obj: &ObjectUrl,
    target: &Path,
    (size, etag): (u64, &ETag),
    (root, folders): (&Path, &std::sync::Arc<Folders>),
) -> Option<Written> {
    let t = target.to_owned();
    if blocking(move || std::fs::symlink_metadata(&t).is_ok()).await {
        return None;
    }
    let _held = engine.reserve(size).await;
    let (body, reply) = get_whole(engine, s3, obj, size, etag).await?;
    let alg = reply
        .as_ref()
        .filter(|c| !c.value.contains('-') && c.kind != Some(ChecksumType::Composite))
        .map(|c| c.algorithm);
    let body = body.freeze();
    let b = body.clone();
    let hash = on_pool(move || crate::hash::hash_range(alg, true, &b)).await;
    let checked = judge(&hash, reply.as_ref().filter(|_| alg.is_some()), etag)?;
    let (t, r, folders) = (target.to_owned(), root.to_owned(), folders.clone());
    let written = blocking(move || {
        let placed = put_in_place(&t, &body)?;
        if placed {
            folders.note(&r, &t).map_err(|e| dest::io_error(&t, &e))?;
        }
        Ok::<_, Error>(placed)
    });
    match written.await {
        Ok(true) => Some(Written {
            checksum: alg
                .and(reply)
                .map(|c| format!("{} {}", c.algorithm, c.value)),
            checked,
            etag: etag.as_str().to_owned(),
        }),
        Ok(false) => None,
        Err(e) => {
            tracing::info!("{obj}: {e}: downloading it the usual way");
            None
        }
    }
}

/// One GET of the whole object, pinned to `etag`, collected (`size` bytes exactly): the body
/// and the checksum its reply carried. `None` on any error or another length.
async fn get_whole<C: S3Api>(
    engine: &Engine,
    s3: &C,
    obj: &ObjectUrl,
    size: u64,
    etag: &ETag,
) -> Option<(BytesMut, Option<RemoteChecksum>)> {
    let s3l = engine.limit(s3);
    let reply = match s3l.get_stream(obj, 0..size, None, Some(etag), None).await {
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

/// Writes `body` as `DEST\tally-partial` (created exclusively, never through a link), syncs its
/// data and renames it to `target`, unless something appeared at `target` meanwhile (then the
/// partial file is removed and `false` returned). Blocking.
fn put_in_place(target: &Path, body: &[u8]) -> Result<bool, Error> {
    use std::io::Write as _;
    let partial = dest::partial_path(target);
    let _lock = dest::DestLock::acquire(target)?;
    dest::check_target(target)?;
    if std::fs::symlink_metadata(target).is_ok() {
        return Ok(false);
    }
    // Whatever is at the temporary name was not left by a run that can resume it (no journal
    // is written for a small object): removed, never followed.
    let _ = std::fs::remove_file(&partial);
    let mut file =
        crate::fsx::create_new(&partial, 0o666).map_err(|e| dest::io_error(&partial, &e))?;
    let written = file.write_all(body).and_then(|()| file.sync_data());
    let gone = |e: std::io::Error| {
        let _ = std::fs::remove_file(&partial);
        dest::io_error(target, &e)
    };
    written.map_err(gone)?;
    if !crate::fsx::is_same_file(&partial, &file) {
        return Err(Error::Destination {
            path: partial,
            why: "was replaced by another program during the download: nothing was put in place"
                .into(),
        });
    }
    if std::fs::symlink_metadata(target).is_ok() {
        let _ = std::fs::remove_file(&partial);
        return Ok(false);
    }
    std::fs::rename(&partial, target).map_err(gone)?;
    let _ = std::fs::remove_file(dest::journal_path(target));
    Ok(true)
}
