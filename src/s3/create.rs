//! CreateMultipartUpload without orphans: a lost reply must not leave a billed upload nobody drives.
//!
//! Create is sent with no SDK retries. When its outcome is unknown (a reset, a timeout, a 5xx: the
//! server may have created the upload), this key's uploads are listed again: one that appeared
//! since the listing taken before the first attempt is adopted, and any further one aborted.
//!
//! The one assumption: no other writer starts a multipart upload of the same key between the
//! listing before the first attempt and the listing after the last. Two writers of one key race
//! anyway (the last Complete wins); this keeps the window to the seconds Create takes.

use std::collections::HashSet;

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
    let before: HashSet<String> = uploads_of(s3, obj)
        .await?
        .into_iter()
        .map(|u| u.upload_id)
        .collect();
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
}
