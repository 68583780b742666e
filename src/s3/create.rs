//! CreateMultipartUpload without orphans: a lost reply must not leave a billed upload nobody drives.
//!
//! Create is sent with no SDK retries. When its outcome is unknown (a reset, a timeout, a 5xx: the
//! server may have created the upload), this key's uploads are listed again: one that appeared
//! since the listing taken before the first attempt is adopted, and any further one aborted.
//!
//! A server without ListMultipartUploads (s3s-fs answers 501 NotImplemented) cannot be asked
//! which uploads exist: there Create is sent as the AWS CLI sends it, without the check, and tally
//! says once per run that an upload a lost reply created cannot be found or aborted there.
//!
//! The one assumption: no other writer starts a multipart upload of the same key between the
//! listing before the first attempt and the listing after the last. Two writers of one key race
//! anyway (the last Complete wins); this keeps the window to the seconds Create takes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{InProgress, MultipartWrite};
use crate::retry;
use crate::s3::{S3Error, S3ErrorKind};
use crate::vocab::{ChecksumAlgorithm, ChecksumType};
use crate::vocab::{ObjectSettings, ObjectUrl};

/// The uploads in progress of exactly `obj.key` (ListMultipartUploads lists a prefix), oldest first.
async fn uploads_of<C: MultipartWrite>(
    s3: &C,
    obj: &ObjectUrl,
) -> Result<Vec<InProgress>, S3Error> {
    let mut found: Vec<InProgress> = s3
        .list_uploads(&obj.bucket, &obj.key)
        .await?
        .into_iter()
        .filter(|u| u.key == obj.key)
        .collect();
    found.sort_by(|a, b| (a.initiated, &a.upload_id).cmp(&(b.initiated, &b.upload_id)));
    Ok(found)
}

/// Says once per run that the server cannot list uploads, so that the orphan check is skipped.
fn warn_no_listing(e: &S3Error) {
    static SAID: AtomicBool = AtomicBool::new(false);
    if !SAID.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "this server does not implement ListMultipartUploads ({}): uploading without the check \
             for an upload a lost reply created (one could be left behind, unlisted)",
            e.code.as_deref().unwrap_or("NotImplemented")
        );
    }
}

/// The ids of this key's uploads in progress; `None` when the server does not implement the
/// listing (said once, see the module docs).
async fn upload_ids<C: MultipartWrite>(
    s3: &C,
    obj: &ObjectUrl,
) -> Result<Option<HashSet<String>>, S3Error> {
    match uploads_of(s3, obj).await {
        Ok(found) => Ok(Some(found.into_iter().map(|u| u.upload_id).collect())),
        Err(e) if e.kind == S3ErrorKind::Unsupported => {
            warn_no_listing(&e);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Creates a multipart upload of `obj` and returns its id, adopting the upload a lost reply
/// created instead of leaving it behind (see the module docs). Retries with
/// [`retry::Policy::CONFIRMED`]. `settings` go with every attempt.
pub async fn create_upload<C: MultipartWrite>(
    s3: &C,
    obj: &ObjectUrl,
    alg: ChecksumAlgorithm,
    kind: ChecksumType,
    settings: &ObjectSettings,
) -> Result<String, S3Error> {
    let Some(before) = upload_ids(s3, obj).await? else {
        return create_unchecked(s3, obj, alg, kind, settings).await;
    };
    let new_since = |now: Vec<InProgress>| -> Vec<String> {
        now.into_iter()
            .map(|u| u.upload_id)
            .filter(|id| !before.contains(id))
            .collect()
    };
    let mut backoff = retry::Policy::CONFIRMED.start();
    // Whether an attempt may have created an upload we never heard of.
    let mut unknown = false;
    loop {
        match s3.create_multipart(obj, alg, kind, settings).await {
            Ok(id) => {
                if unknown {
                    // An earlier attempt's upload may exist besides this one: abort it.
                    if let Ok(now) = uploads_of(s3, obj).await {
                        let extras = new_since(now).into_iter().filter(|x| *x != id);
                        abort_extras(s3, obj, extras).await;
                    }
                }
                return Ok(id);
            }
            Err(e) if e.kind == S3ErrorKind::Transient => {
                unknown = true;
                match uploads_of(s3, obj).await.map(new_since) {
                    Ok(new) if !new.is_empty() => {
                        let mut new = new.into_iter();
                        let adopted = new.next().unwrap_or_default();
                        tracing::info!(
                            upload_id = %adopted,
                            error = %e,
                            "CreateMultipartUpload's reply was lost; adopting the upload it created"
                        );
                        abort_extras(s3, obj, new).await;
                        return Ok(adopted);
                    }
                    // Nothing was created (or the listing failed too): send Create again.
                    Ok(_) | Err(_) => {}
                }
                if !backoff.wait().await {
                    return Err(e);
                }
            }
            Err(e) if e.kind == S3ErrorKind::Throttled => {
                if !backoff.wait().await {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Create on a server that cannot list uploads: retried like any confirmed request, as the AWS CLI
/// does; an upload a lost reply created stays unknown (said once by [`warn_no_listing`]).
async fn create_unchecked<C: MultipartWrite>(
    s3: &C,
    obj: &ObjectUrl,
    alg: ChecksumAlgorithm,
    kind: ChecksumType,
    settings: &ObjectSettings,
) -> Result<String, S3Error> {
    let mut backoff = retry::Policy::CONFIRMED.start();
    loop {
        match s3.create_multipart(obj, alg, kind, settings).await {
            Ok(id) => return Ok(id),
            Err(e) if matches!(e.kind, S3ErrorKind::Transient | S3ErrorKind::Throttled) => {
                if !backoff.wait().await {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Aborts uploads a lost reply created besides the one adopted; a failure is logged (`tally
/// uploads` lists what is left), not fatal.
async fn abort_extras<C: MultipartWrite>(
    s3: &C,
    obj: &ObjectUrl,
    extras: impl Iterator<Item = String>,
) {
    for id in extras {
        match s3.abort_multipart(obj, &id).await {
            Ok(()) => {
                tracing::info!(upload_id = %id, "aborted an extra upload a lost reply created")
            }
            Err(e) if e.kind == S3ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                upload_id = %id,
                error = %e,
                "could not abort an extra upload of this key: see `tally uploads`"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::fake::FakeS3;

    fn obj(key: &str) -> ObjectUrl {
        ObjectUrl {
            bucket: "b".into(),
            key: key.into(),
        }
    }

    #[tokio::test]
    async fn a_lost_reply_adopts_the_upload_it_created() {
        let fake = FakeS3::default();
        let (alg, kind) = (ChecksumAlgorithm::Sha256, ChecksumType::Composite);
        // Uploads that were there before, of this key and of a longer key with it as a prefix,
        // are never adopted.
        let none = ObjectSettings::default();
        let old = fake
            .create_multipart(&obj("k"), alg, kind, &none)
            .await
            .unwrap();
        fake.create_multipart(&obj("k2"), alg, kind, &none)
            .await
            .unwrap();
        fake.lose_create_replies(1);
        let id = create_upload(&fake, &obj("k"), alg, kind, &none)
            .await
            .unwrap();
        assert_eq!(fake.creates(), 3, "one Create for this upload");
        let open: Vec<String> = fake
            .list_uploads("b", "k")
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.key == "k")
            .map(|u| u.upload_id)
            .collect();
        assert_eq!(
            open.len(),
            2,
            "the old upload and the adopted one: {open:?}"
        );
        assert!(
            open.contains(&id) && id != old,
            "{id} adopted, {old} left alone"
        );
    }

    #[tokio::test]
    async fn a_server_without_the_upload_listing_still_gets_its_upload() {
        let fake = FakeS3::default();
        fake.without_upload_listing();
        let (alg, kind) = (ChecksumAlgorithm::Crc32, ChecksumType::Composite);
        let none = ObjectSettings::default();
        let id = create_upload(&fake, &obj("k"), alg, kind, &none)
            .await
            .expect("Create is sent without the orphan check");
        assert_eq!(fake.creates(), 1);
        assert!(!id.is_empty());
    }
}
