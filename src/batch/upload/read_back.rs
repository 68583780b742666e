//! A tree upload's read-back by listing. A file sent in one PutObject whose reply already proves
//! it (the server verified the checksum sent and echoed it, and returned the file's MD5 as the
//! ETag) is not asked about with a HEAD of its own: its line waits ([`crate::batch::run::Settle`])
//! until up to 1,000 such files are done, then one listing from just before the first of their
//! keys (ListObjectsV2, 1,000 keys a page) reads back each object's size and ETag, which must be
//! the file's size and MD5. An MD5 ETag of a single-part object is the MD5 of the bytes the server
//! stored, so a match proves the content, as the per-file HEAD's ETag did; the stored checksum
//! value itself is not read back (a listing does not carry it): the reply's echo is its proof.

use futures::future::BoxFuture;

use crate::batch::report::{Action, FileLine};
use crate::error::{EXIT_ERROR, EXIT_MISMATCH};
use crate::remote::listing::{Cursor, objects_after};
use crate::s3::{ListedObject, ObjectRead};

/// The read-back of many uploaded files by one listing of the tree's prefix.
pub(crate) struct ByListing<'a, C> {
    /// The client, not through the engine's slots (see `upload_tree`): one check at a time, one
    /// listing request or [`HEADS_AT_ONCE`] HEADs.
    pub(crate) s3: &'a C,
    pub(crate) bucket: &'a str,
    /// The tree's prefix: the listing never leaves it.
    pub(crate) prefix: &'a str,
}

impl<C: ObjectRead + Sync> crate::batch::run::Settle for ByListing<'_, C> {
    fn settle<'a>(&'a self, lines: &'a mut [FileLine]) -> BoxFuture<'a, ()> {
        Box::pin(self.check(lines))
    }
}

/// Where a listing that must reach `key` starts: after `key` without its last character, so
/// that only keys sharing that stem come before `key` (None: from the prefix's first key).
fn just_before(key: &str) -> Option<String> {
    let last = key.chars().next_back()?;
    let stem = &key[..key.len() - last.len_utf8()];
    (!stem.is_empty()).then(|| stem.to_owned())
}

impl<C: ObjectRead + Sync> ByListing<'_, C> {
    /// Reads back every line's object (in key order, one listing) and rewrites each line.
    async fn check(&self, lines: &mut [FileLine]) {
        let mut order: Vec<usize> = (0..lines.len()).collect();
        order.sort_by(|a, b| lines[*a].key.cmp(&lines[*b].key));
        let Some(first) = order.first().and_then(|i| lines[*i].key.clone()) else {
            return;
        };
        let listing = objects_after(self.s3, self.bucket, self.prefix, just_before(&first));
        let mut cursor = Cursor::new(Box::pin(listing));
        let mut failed: Option<String> = None;
        let mut no_etag = Vec::new();
        for i in order {
            let line = &mut lines[i];
            let key = line.key.clone().unwrap_or_default();
            if let Some(why) = &failed {
                listing_failed(line, why);
                continue;
            }
            match cursor.find(&key).await {
                // A listing without ETags (s3s-fs) proves the size only: such a file is read
                // back by a HEAD of its own, as before.
                Ok(Some(o)) if o.etag.is_none() && o.size == line.size.unwrap_or(0) => {
                    no_etag.push(i);
                }
                Ok(listed) => judge(line, listed.as_ref()),
                Err(e) => {
                    let why = crate::redact::redact(&e.to_string());
                    listing_failed(line, &why);
                    failed = Some(why);
                }
            }
        }
        drop(cursor);
        self.head_each(lines, &no_etag).await;
    }

    /// Reads back the objects of `lines[which]` one HEAD each, for servers whose listing gives no
    /// ETag; the HEAD's size and ETag are judged as a listing's would be.
    async fn head_each(&self, lines: &mut [FileLine], which: &[usize]) {
        use futures::StreamExt as _;
        let objects: Vec<(usize, crate::vocab::ObjectUrl)> = which
            .iter()
            .map(|&i| {
                let key = lines[i].key.clone().unwrap_or_default();
                let bucket = self.bucket.to_owned();
                (i, crate::vocab::ObjectUrl { bucket, key })
            })
            .collect();
        let s3 = self.s3;
        let heads: Vec<_> = futures::stream::iter(objects)
            .map(|(i, obj)| async move { (i, s3.head_object(&obj, None).await) })
            .buffer_unordered(HEADS_AT_ONCE)
            .collect()
            .await;
        for (i, head) in heads {
            let line = &mut lines[i];
            match head {
                Ok(h) => {
                    let listed = ListedObject {
                        key: line.key.clone().unwrap_or_default(),
                        size: h.size,
                        etag: h.etag,
                    };
                    judge(line, Some(&listed));
                    line.reason = line.reason.take().map(|r| {
                        r.replace(
                            "read back by listing:",
                            "read back by HEAD (the server's listing gives no ETag):",
                        )
                    });
                }
                Err(e) if e.kind == crate::s3::S3ErrorKind::NotFound => judge(line, None),
                Err(e) => listing_failed(line, &crate::redact::redact(&e.to_string())),
            }
        }
    }
}

/// HEADs in flight at once for a server whose listing gives no ETag (the engine's slots bound
/// them too).
const HEADS_AT_ONCE: usize = 16;

/// What the listing says of one uploaded file's object, against the file's size and MD5.
pub(crate) fn judge(line: &mut FileLine, listed: Option<&ListedObject>) {
    let md5 = line.read_back.take().unwrap_or_default();
    let size = line.size.unwrap_or(0);
    let reason = line.reason.take().unwrap_or_default();
    let Some(o) = listed else {
        return differs(
            line,
            &reason,
            "the listing read back after the upload does not show the object".into(),
        );
    };
    if o.size != size {
        return differs(
            line,
            &reason,
            format!(
                "the listing read back after the upload shows {} bytes, not the file's {size}",
                o.size
            ),
        );
    }
    line.reason = Some(match o.etag.as_ref().map(|e| e.as_str()) {
        Some(etag) if etag == md5 => {
            format!("{reason}; read back by listing: size and ETag (the file's MD5) match")
        }
        Some(etag) => {
            return differs(
                line,
                &reason,
                format!(
                    "the listing read back after the upload shows ETag {etag}, not the file's MD5 {md5}"
                ),
            );
        }
        None => format!("{reason}; read back: size matches (the server gives no ETag)"),
    });
}

/// The object read back is not what was sent (replaced since, or lost): exit 1.
fn differs(line: &mut FileLine, reason: &str, what: String) {
    line.action = Action::Failed;
    line.exit_code = EXIT_MISMATCH;
    line.reason = Some(format!(
        "{reason}; but {what}: the object now at the key may not be the file; upload again"
    ));
}

/// The listing (or a HEAD) could not be read: the file was sent and its reply proved it, but the
/// read-back asked for was not made: exit 2.
fn listing_failed(line: &mut FileLine, why: &str) {
    line.read_back = None;
    line.action = Action::Failed;
    line.exit_code = EXIT_ERROR;
    let reason = line.reason.take().unwrap_or_default();
    line.reason = Some(format!(
        "{reason}; but the read-back failed ({why}): not read back (--no-verify skips it)"
    ));
}
