//! How a download ends: the proven partial file put in place as DEST ([`put_in_place`]), or a
//! DEST already there proven identical to the object, nothing fetched ([`already_there`]).

use std::path::Path;
use std::time::Instant;

use crate::error::Error;
use crate::remote::facts::Method;
use crate::s3::S3Api;
use crate::verify::{self, Verdict, VerifyOptions};
use crate::vocab::ObjectUrl;

use super::proof::Proof;
use super::{DownloadReport, dest, finish};

/// Puts the proven partial file (open as `file`) in place as `dest`: fsync, rename, fsync the
/// folder, remove the journal. Only the very file written is renamed (its name is checked to still
/// be it), and DEST is checked to be it afterwards. A folder that appeared at DEST meanwhile
/// (another key of the prefix made it) ends the download with the partial file and journal
/// removed. Blocking.
pub(super) fn put_in_place(
    file: &std::fs::File,
    p: &Path,
    j: &Path,
    d: &Path,
) -> Result<(), Error> {
    file.sync_all().map_err(|e| dest::io_error(p, &e))?;
    let replaced = |what: &Path| {
        Error::Destination {
        path: what.to_owned(),
        why: "was replaced by another program during the download: nothing was put in place; run the same command again".into(),
    }
    };
    if !crate::fsx::is_same_file(p, file) {
        return Err(replaced(p));
    }
    if let Err(e) = dest::check_target(d) {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(j);
        return Err(e);
    }
    if let Err(e) = crate::fsx::rename_into_place(p, d) {
        if std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()) {
            let _ = std::fs::remove_file(p);
            let _ = std::fs::remove_file(j);
            return Err(Error::Destination {
                path: d.to_owned(),
                why: "became a directory during the download (another key names a folder here): not downloaded".into(),
            });
        }
        return Err(dest::io_error(d, &e));
    }
    if !crate::fsx::is_same_file(d, file) {
        return Err(replaced(d));
    }
    let _ = std::fs::remove_file(j);
    let _ = crate::fsx::sync_dir(crate::fsx::parent_dir(d));
    Ok(())
}

/// DEST exists and `--force` was not given: proven identical (nothing fetched), or refused.
pub(super) async fn already_there<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    dest: &Path,
    mut report: DownloadReport,
    started: Instant,
) -> Result<DownloadReport, Error> {
    let v = verify::verify(s3, dest, obj, &VerifyOptions::default()).await?;
    if v.verdict != Verdict::Identical {
        return Err(Error::Destination {
            path: dest.to_owned(),
            why: format!(
                "already exists and is not the object ({}): pass --force to replace it, or choose another destination",
                if v.size.matches {
                    "its content differs".to_owned()
                } else {
                    format!("{} bytes, the object {}", v.size.local, v.size.remote)
                }
            ),
        });
    }
    report.already_present = true;
    report.method = v.method;
    report.why = v.why;
    report.checksum = v.checksum.clone();
    report.etag = v.etag.clone();
    report.parts_checked_alone = v.parts_compared;
    let mut checked = Vec::new();
    if v.parts_compared > 0 {
        checked.push(Proof {
            kind: if v.method == Method::Download {
                "bytes"
            } else {
                "part_checksums"
            },
            algorithm: v.checksum_algorithm.clone(),
            text: format!(
                "{} parts of the existing file compared one by one with the object",
                v.parts_compared
            ),
        });
    }
    if v.checksum.as_ref().is_some_and(|c| c.matches) {
        checked.push(Proof {
            kind: "object_checksum",
            algorithm: v.checksum_algorithm.clone(),
            text: format!(
                "the existing file against the object's {} checksum",
                v.checksum_algorithm.as_deref().unwrap_or("")
            ),
        });
    }
    if v.etag.as_ref().is_some_and(|e| e.matches) {
        checked.push(Proof {
            kind: "etag",
            algorithm: None,
            text: "the existing file against the object's ETag".into(),
        });
    }
    report.verified = !checked.is_empty();
    report.checked = checked;
    Ok(finish(report, started))
}
