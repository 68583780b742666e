//! What proved an upload, in one sentence (the `proof` of `--json` and `--report`): only what S3's
//! replies and the read back really confirmed, and "not verified" for what they did not.

use super::report::{Check, Method, UploadReport};

/// The sentence for `r`.
pub(crate) fn proof_text(r: &UploadReport) -> String {
    let alg = &r.checksum.algorithm;
    let mut said = Vec::new();
    if r.method == Method::Multipart {
        said.push(format!(
            "{} of {} part {alg} checksums echoed equal by S3",
            r.checks.part_checksums_matched, r.parts
        ));
    }
    said.push(match r.checks.object_checksum {
        Check::Matched => format!("S3 reported the object's {alg} checksum equal to the file's"),
        Check::Mismatch => format!("S3 reported a DIFFERENT {alg} checksum"),
        _ => format!(
            "the object's {alg} checksum was not verified by the server (not reported back)"
        ),
    });
    if r.checks.etag == Check::Matched {
        said.push("its ETag equals the file's MD5".into());
    }
    said.push(match &r.verified {
        Some(v) => match v.checksum_matches {
            Some(true) => format!("read back ({}): checksum matches", v.method),
            Some(false) => format!("read back ({}): checksum DIFFERS", v.method),
            None => format!(
                "read back ({}): not verified (the server reports no checksum to compare)",
                v.method
            ),
        },
        None => "not read back (--no-verify)".into(),
    });
    if let Some(n) = r.read_back_reads {
        said.push(format!("its bytes read back equal after {n} read(s)"));
    }
    said.join("; ")
}
