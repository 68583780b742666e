//! `tally uploads` and `tally abort`: multipart uploads in progress, so none is paid for unseen.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::Error;
use crate::manifest;
use crate::s3::MultipartWrite;
use crate::s3::S3ErrorKind;
use crate::state::StateDir;
use crate::vocab::ChecksumAlgorithm;
use crate::vocab::ObjectUrl;

/// One upload in progress, with what tally knows of it locally.
#[derive(Debug, Clone, Serialize)]
pub struct UploadInfo {
    /// Key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// Start time, UTC, RFC 3339.
    pub initiated: Option<String>,
    /// Parts S3 holds; `None` when the server's ListParts reply could not be read (moto's, for
    /// an upload without parts).
    pub parts: Option<usize>,
    /// Bytes S3 holds (`None` as for `parts`).
    pub bytes: Option<u64>,
    /// The local manifest that belongs to it, if any.
    pub manifest: Option<String>,
}

/// Lists uploads in progress under `target` (bucket and optional prefix).
pub async fn list<C: MultipartWrite>(
    s3: &C,
    target: &ObjectUrl,
    state: &StateDir,
) -> Result<Vec<UploadInfo>, Error> {
    let found = s3
        .list_uploads(&target.bucket, &target.key)
        .await
        .map_err(Error::s3("ListMultipartUploads", None, None))?;
    let (_, manifests) = local_manifests(state).await;
    let mut out = Vec::new();
    for u in found {
        let obj = ObjectUrl {
            bucket: target.bucket.clone(),
            key: u.key.clone(),
        };
        // The algorithm only selects which checksum field is read; counts and sizes do not depend on it.
        let held = match s3
            .list_parts(&obj, &u.upload_id, ChecksumAlgorithm::Sha256)
            .await
        {
            Ok(h) => Some(h),
            Err(e) if e.kind == S3ErrorKind::NotFound => continue,
            // The upload exists (it was just listed): what is wrong is the parts' listing, and
            // the upload is still worth showing (to abort it), with its parts unknown.
            Err(e) if matches!(e.kind, S3ErrorKind::Other | S3ErrorKind::Unsupported) => {
                tracing::warn!(
                    "upload {} of {}: the server's ListParts reply could not be used ({e}): its parts are shown as unknown",
                    u.upload_id,
                    u.key
                );
                None
            }
            Err(source) => return Err(Error::s3("ListParts", None, Some(&u.upload_id))(source)),
        };
        let manifest = manifests
            .iter()
            .find(|(_, h)| {
                h.upload_id == u.upload_id && h.bucket == target.bucket && h.key == u.key
            })
            .map(|(p, _)| p.display().to_string());
        out.push(UploadInfo {
            key: u.key,
            upload_id: u.upload_id,
            initiated: u.initiated.map(rfc3339),
            parts: held.as_ref().map(Vec::len),
            bytes: held.as_ref().map(|h| h.iter().map(|p| p.size).sum()),
            manifest,
        });
    }
    Ok(out)
}

/// What `tally abort` did.
#[derive(Debug, Clone, Serialize)]
pub struct Aborted {
    /// Key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// The local manifest removed with it, if any.
    pub manifest_removed: Option<String>,
}

/// Aborts one upload (`upload_id`) or every upload under the prefix older than `older_than`, and
/// removes their local manifests.
pub async fn abort<C: MultipartWrite>(
    s3: &C,
    target: &ObjectUrl,
    upload_id: Option<&str>,
    older_than: Option<Duration>,
    state: &StateDir,
) -> Result<Vec<Aborted>, Error> {
    let victims: Vec<(String, String)> = match (upload_id, older_than) {
        (Some(id), _) => {
            if target.key.is_empty() {
                return Err(Error::Usage(
                    "--upload-id needs the object's key: tally abort s3://BUCKET/KEY --upload-id ID"
                        .into(),
                ));
            }
            vec![(target.key.clone(), id.to_owned())]
        }
        (None, Some(age)) => uploads_older_than(s3, target, age, state).await?,
        (None, None) => {
            return Err(Error::Usage(
                "say which uploads to abort: --upload-id ID or --all-older-than DURATION".into(),
            ));
        }
    };
    let (state_dir, manifests) = local_manifests(state).await;
    let mut out = Vec::new();
    for (key, id) in victims {
        let obj = ObjectUrl {
            bucket: target.bucket.clone(),
            key: key.clone(),
        };
        s3.abort_multipart(&obj, &id).await.map_err(Error::s3(
            "AbortMultipartUpload",
            None,
            Some(&id),
        ))?;
        let manifest_removed =
            remove_local_state(state_dir.as_deref(), &manifests, &obj, &id).await;
        out.push(Aborted {
            key,
            upload_id: id,
            manifest_removed,
        });
    }
    Ok(out)
}

/// The uploads under the target's prefix older than `age`: dated by their initiation, or by their
/// local manifest's last write when one is here.
async fn uploads_older_than<C: MultipartWrite>(
    s3: &C,
    target: &ObjectUrl,
    age: Duration,
    state: &StateDir,
) -> Result<Vec<(String, String)>, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let (_, manifests) = local_manifests(state).await;
    let listed = s3
        .list_uploads(&target.bucket, &target.key)
        .await
        .map_err(Error::s3("ListMultipartUploads", None, None))?;
    let mut picked = Vec::new();
    for u in listed {
        let local = manifests
            .iter()
            .find(|(_, h)| {
                h.upload_id == u.upload_id && h.bucket == target.bucket && h.key == u.key
            })
            .map(|(p, _)| p.clone());
        let touched = match local {
            Some(p) => crate::exec::blocking(move || manifest_time(&p)).await,
            None => None,
        };
        if let Some(start) = upload_age_start(&u, touched, now)
            && now - start > age.as_secs() as i64
        {
            picked.push((u.key, u.upload_id));
        }
    }
    Ok(picked)
}

/// Removes the aborted upload's local state, if any: the manifest, its lock and its link. What
/// was removed, for the report.
async fn remove_local_state(
    state_dir: Option<&Path>,
    manifests: &[(PathBuf, manifest::Header)],
    obj: &ObjectUrl,
    id: &str,
) -> Option<String> {
    let found = manifests
        .iter()
        .find(|(_, h)| h.upload_id == id && h.bucket == obj.bucket && h.key == obj.key)
        .map(|(p, _)| p.clone());
    // All of the upload's local state goes: the manifest, its lock and its link.
    let dir = state_dir.map(Path::to_path_buf);
    match found {
        Some(p) => {
            crate::exec::blocking(move || {
                let existed = p.exists();
                manifest::remove(dir.as_deref(), &p);
                (existed && !p.exists()).then(|| p.display().to_string())
            })
            .await
        }
        // A manifest whose header is damaged but still names this upload goes too.
        None => {
            let (dir, id) = (state_dir.map(Path::to_path_buf), id.to_owned());
            crate::exec::blocking(move || {
                let dir = dir?;
                let gone: Vec<String> = manifest::unreadable_naming(&dir, &id)
                    .into_iter()
                    .map(|p| {
                        manifest::remove(Some(&dir), &p);
                        p.display().to_string()
                    })
                    .collect();
                (!gone.is_empty()).then(|| gone.join(", "))
            })
            .await
        }
    }
}

/// When the local manifest was last written (a part recorded), seconds since the epoch.
fn manifest_time(path: &std::path::Path) -> Option<i64> {
    let t = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// 2010-11-11T00:00:00Z: S3 introduced multipart uploads on 2010-11-10. An earlier start date is
/// a placeholder (moto reports 2010-11-10T20:48:33Z for every upload), not an age.
const MULTIPART_LAUNCH: i64 = 1_289_433_600;

/// The time an upload's age is counted from for `abort --all-older-than`: the server's start
/// date, unless this machine's manifest of it was written later (moto reports 2010 for every
/// upload: an upload made seconds ago must not count as years old), said once per upload. A
/// start date in the future (beyond a day of clock skew) is no age at all: such an upload is
/// left alone, said once. `None`: leave it alone.
fn upload_age_start(
    u: &crate::s3::InProgress,
    manifest_written: Option<i64>,
    now: i64,
) -> Option<i64> {
    let Some(server) = u.initiated else {
        return manifest_written;
    };
    if server < MULTIPART_LAUNCH && manifest_written.is_none() {
        tracing::warn!(
            "upload {} of {}: the server reports a start date of {}, before S3 had multipart \
             uploads (a placeholder, as moto sends): its age is unknown, so it is left alone \
             (abort it with --upload-id)",
            u.upload_id,
            u.key,
            rfc3339(server)
        );
        return None;
    }
    if server > now + 86_400 {
        tracing::warn!(
            "upload {} of {}: the server reports a start date in the future ({}); left alone",
            u.upload_id,
            u.key,
            rfc3339(server)
        );
        return None;
    }
    match manifest_written {
        Some(local) if local > server + 86_400 => {
            tracing::warn!(
                "upload {} of {}: the server reports it started {}, but this machine's manifest of \
                 it was written {}: its age counts from the manifest",
                u.upload_id,
                u.key,
                rfc3339(server),
                rfc3339(local)
            );
            Some(local)
        }
        Some(local) => Some(local.max(server)),
        None => Some(server),
    }
}

/// The state directory, and the manifests in it (and linked from it), read off the async threads.
async fn local_manifests(
    state: &StateDir,
) -> (
    Option<std::path::PathBuf>,
    Vec<(std::path::PathBuf, manifest::Header)>,
) {
    let state = state.clone();
    crate::exec::blocking(move || match state.manifests() {
        Ok(d) => {
            let all = manifest::all_in(&d);
            (Some(d), all)
        }
        Err(_) => (None, Vec::new()),
    })
    .await
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_and_aborts_uploads_of_a_fake() {
        use crate::hash::hash_part;
        use crate::s3::fake::FakeS3;
        use crate::vocab::ChecksumType;
        let fake = FakeS3::default();
        let obj = ObjectUrl {
            bucket: "bkt".into(),
            key: "dir/a".into(),
        };
        let alg = ChecksumAlgorithm::Sha256;
        let id = fake
            .create_multipart(
                &obj,
                alg,
                ChecksumType::Composite,
                &crate::vocab::ObjectSettings::default(),
            )
            .await
            .unwrap();
        let body = bytes::Bytes::from(vec![1u8; 1000]);
        let h = hash_part(alg, true, &body);
        fake.upload_part(&obj, &id, 1, alg, body, &h).await.unwrap();
        let dir = ObjectUrl {
            bucket: "bkt".into(),
            key: "dir/".into(),
        };
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::at(tmp.path().join("manifests"));
        let found = list(&fake, &dir, &state).await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].parts, found[0].bytes), (Some(1), Some(1000)));
        let gone = abort(&fake, &obj, Some(&id), None, &state).await.unwrap();
        assert_eq!(gone[0].upload_id, id);
        assert_eq!(fake.uploads_in_progress(), 0);
    }

    #[test]
    fn an_upload_s_age_counts_from_what_can_be_believed() {
        let now = 1_796_000_000;
        let up = |initiated| crate::s3::InProgress {
            key: "k".into(),
            upload_id: "u".into(),
            initiated,
        };
        // moto's 2010 date, with this machine's manifest written a minute ago: the manifest wins.
        assert_eq!(
            upload_age_start(&up(Some(1_289_421_713)), Some(now - 60), now),
            Some(now - 60)
        );
        // No manifest: a date before S3 had multipart uploads is no age at all.
        assert_eq!(upload_age_start(&up(Some(1_289_421_713)), None, now), None);
        // A real date with no manifest is all there is.
        assert_eq!(
            upload_age_start(&up(Some(1_700_000_000)), None, now),
            Some(1_700_000_000)
        );
        // A start in the future is no age: left alone.
        assert_eq!(
            upload_age_start(&up(Some(now + 10 * 86_400)), None, now),
            None
        );
        // A few seconds of skew either way change nothing.
        assert_eq!(
            upload_age_start(&up(Some(now - 5)), Some(now - 3), now),
            Some(now - 3)
        );
        assert_eq!(upload_age_start(&up(None), None, now), None);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_500_000), "2026-11-24T06:00:00Z");
    }
}
