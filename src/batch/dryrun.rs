//! `--dryrun` of a tree upload or download: what the run would send, what it would compare first
//! (and send only if it differs), and what it would refuse, each with why; from the walk and one
//! listing of the destination (ListObjectsV2), in key order. Nothing is written and no file is
//! read: the comparison a real run makes (a HEAD, then the file hashed) is named, not made.

use std::path::Path;
use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::batch::report::{Action, FileLine, TreeReport, skipped_entry};
use crate::error::{EXIT_ERROR, Error};
use crate::exec::blocking;
use crate::s3::S3Api;
use crate::tree::Found;
use crate::vocab::ObjectUrl;

/// An empty report of a dry run (its counts of files it would send and compare start at 0).
fn planned(prefix: &ObjectUrl) -> TreeReport {
    TreeReport {
        would_send: Some(0),
        would_send_bytes: Some(0),
        would_compare: Some(0),
        would_compare_bytes: Some(0),
        ..TreeReport::new(prefix)
    }
}

/// The line of a file of `size` bytes whose object is `listed` (its size, if any).
fn upload_line(mut line: FileLine, size: u64, listed: Option<u64>) -> FileLine {
    let (action, reason) = match listed {
        None => (Action::WouldSend, "would upload: no object at the key".to_owned()),
        Some(n) if n != size => (
            Action::WouldSend,
            format!("would upload: the object at the key has {n} bytes, the file {size}"),
        ),
        Some(_) => (
            Action::WouldCompare,
            "an object of the same size is there: the run compares it (a HEAD, then the file hashed unless it was proven before and is unchanged) and uploads it only if it is not proven identical".to_owned(),
        ),
    };
    line.action = action;
    line.reason = Some(reason);
    line
}

/// `tally upload DIR s3://BUCKET/PREFIX/ --dryrun`.
pub(crate) async fn upload_plan<C: S3Api>(
    s3: &C,
    root: &Path,
    walk: crate::tree::WalkOptions,
    prefix: &ObjectUrl,
    cancel: &CancellationToken,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    let walk = {
        let root = root.to_owned();
        blocking(move || crate::tree::walk(&root, walk)).await?
    };
    let mut walk = std::pin::pin!(walk);
    let listing = crate::remote::listing::objects(s3, &prefix.bucket, &prefix.key);
    let mut cursor = crate::remote::listing::Cursor::new(Box::pin(listing));
    let mut report = planned(prefix);
    while let Some(found) = walk.next().await {
        if cancel.is_cancelled() {
            report.complete = false;
            break;
        }
        let line = match found {
            Found::Skipped(skip) => skipped_entry(&skip),
            Found::File(entry) => {
                let key = format!("{}{}", prefix.key, entry.rel);
                let listed = cursor.find(&key).await?.map(|o| o.size);
                upload_line(FileLine::for_entry(&entry, &key), entry.size, listed)
            }
        };
        on_line(&line);
        report.add(&line);
    }
    report.complete = !cancel.is_cancelled();
    report.end(started, 0, None, cancel)
}

/// The line of object `obj` of `size` bytes to go to `target` (`None`: its key maps to no safe
/// local path, `why`).
fn download_line(
    mut line: FileLine,
    size: u64,
    target: Result<std::path::PathBuf, &str>,
    force: bool,
) -> FileLine {
    let target = match target {
        Ok(t) => t,
        Err(why) => {
            line.reason = Some(format!(
                "would not download: the key maps to an unsafe local path: {why}"
            ));
            line.exit_code = EXIT_ERROR;
            return line;
        }
    };
    let (action, reason) = match std::fs::symlink_metadata(&target) {
        Err(_) => (Action::WouldSend, "would download: no file there".to_owned()),
        Ok(m) if !m.is_file() => (
            Action::Failed,
            "would not download: something that is not a file is in the way".to_owned(),
        ),
        Ok(m) if m.len() == size => (
            Action::WouldCompare,
            "a file of the same size is there: the run compares it with the object and keeps it if proven identical".to_owned(),
        ),
        Ok(m) if force => (
            Action::WouldSend,
            format!("would download and replace the file there ({} bytes; --force)", m.len()),
        ),
        Ok(m) => (
            Action::Failed,
            format!("would not download: a file of {} bytes is there and is not this object (--force replaces it)", m.len()),
        ),
    };
    if action == Action::Failed {
        line.exit_code = EXIT_ERROR;
    }
    line.action = action;
    line.reason = Some(reason);
    line
}

/// `tally download s3://BUCKET/PREFIX/ DIR --dryrun`: no folder is made, nothing written.
pub(crate) async fn download_plan<C: S3Api>(
    s3: &C,
    prefix: &ObjectUrl,
    dir: &Path,
    opts: &crate::download::DownloadOptions,
    cancel: &CancellationToken,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    let mut objects = std::pin::pin!(
        crate::remote::listing::objects(s3, &prefix.bucket, &prefix.key).try_filter(|o| {
            let rel = &o.key[prefix.key.len().min(o.key.len())..];
            std::future::ready(opts.filters.allows_file(rel))
        })
    );
    let mut report = planned(prefix);
    while let Some(o) = objects.try_next().await? {
        if cancel.is_cancelled() {
            break;
        }
        let rel = o.key[prefix.key.len().min(o.key.len())..].to_owned();
        if o.size == 0 && (rel.is_empty() || rel.ends_with('/')) {
            continue;
        }
        let path = dir.join(&rel);
        let entry = crate::tree::FileEntry {
            path: path.clone(),
            rel: rel.clone(),
            size: o.size,
            mtime_ns: 0,
            dev: 0,
            ino: 0,
        };
        let line = FileLine::for_entry(&entry, &o.key);
        let unsafe_why = super::download::unsafe_because(&rel);
        let target = match unsafe_why {
            Some(why) => Err(why),
            None => Ok(path),
        };
        let (size, force) = (o.size, opts.force);
        let line = blocking(move || download_line(line, size, target, force)).await;
        on_line(&line);
        report.add(&line);
    }
    report.complete = !cancel.is_cancelled();
    report.end(started, 0, None, cancel)
}

/// The report of one file's dry run: `line` counted.
fn one(prefix: &ObjectUrl, line: &FileLine, started: Instant) -> Result<TreeReport, Error> {
    let mut report = planned(prefix);
    report.add(line);
    report.complete = true;
    report.end(started, 0, None, &CancellationToken::new())
}

/// What S3 holds at `obj`: its size, or `None` when there is no object (one HEAD).
async fn object_size<C: S3Api>(s3: &C, obj: &ObjectUrl) -> Result<Option<u64>, Error> {
    match s3.head_object(obj, None).await {
        Ok(h) => Ok(Some(h.size)),
        Err(e) if e.kind == crate::s3::S3ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::s3("HeadObject", None, None)(e)),
    }
}

/// `tally upload FILE s3://... --dryrun`: one HEAD, nothing read or sent.
pub(crate) async fn upload_one<C: S3Api>(
    s3: &C,
    file: &Path,
    obj: &ObjectUrl,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    let f = file.to_owned();
    let size = blocking(move || std::fs::metadata(&f))
        .await
        .map_err(|e| Error::Source {
            path: file.to_owned(),
            why: e.to_string(),
        })?
        .len();
    let entry = crate::tree::FileEntry {
        path: file.to_owned(),
        rel: String::new(),
        size,
        mtime_ns: 0,
        dev: 0,
        ino: 0,
    };
    let listed = object_size(s3, obj).await?;
    let line = upload_line(FileLine::for_entry(&entry, &obj.key), size, listed);
    on_line(&line);
    one(obj, &line, started)
}

/// `tally download s3://BUCKET/KEY DEST --dryrun`: one HEAD, nothing written.
pub(crate) async fn download_one<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    dest: &Path,
    force: bool,
    on_line: &(dyn Fn(&FileLine) + Send + Sync),
) -> Result<TreeReport, Error> {
    let started = Instant::now();
    let Some(size) = object_size(s3, obj).await? else {
        return Err(Error::Usage(format!(
            "s3://{}/{}: no such object: nothing would be downloaded",
            obj.bucket, obj.key
        )));
    };
    let target = crate::download::dest::resolve(dest, &obj.key)?;
    let entry = crate::tree::FileEntry {
        path: target.clone(),
        rel: String::new(),
        size,
        mtime_ns: 0,
        dev: 0,
        ino: 0,
    };
    let line = FileLine::for_entry(&entry, &obj.key);
    let line = blocking(move || download_line(line, size, Ok(target), force)).await;
    on_line(&line);
    one(obj, &line, started)
}
