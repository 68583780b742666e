//! One vocabulary for "a value tally computed locally vs what S3 reported", and the rules every
//! such comparison follows, written once:
//!
//! - a composite checksum reported without its `-N` suffix (GetObjectAttributes, some HEADs) is
//!   compared on the value alone ([`in_reported_form`]);
//! - an ETag is an MD5 of the content (or, for a multipart object, of the parts' MD5s) only when
//!   the object is not encrypted with SSE-KMS or SSE-C ([`EtagKind`]);
//! - a value S3 did not report, or that could not be predicted, is said to be so ([`Check`]):
//!   never counted as a match.

use serde::Serialize;

use crate::error::Error;
use crate::vocab::EtagKind;

/// The outcome of one comparison between a local value and what S3 reported.
///
/// Serialized in reports as snake_case (`matched`, `not_reported`, `not_comparable_kms`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// S3 reported the value tally computed.
    Matched,
    /// S3 reported another value.
    Mismatch,
    /// S3 did not report the value, so it could not be compared.
    NotReported,
    /// The ETag is not an MD5 under SSE-KMS, so it was not compared.
    NotComparableKms,
    /// The ETag is not an MD5 under SSE-C (a customer-provided key), so it was not compared.
    NotComparableSseC,
    /// No local value was computed (no MD5: `--content-md5` computes it), so nothing was compared.
    NotPredicted,
}

impl Check {
    /// Whether the values were compared and are equal.
    pub fn matched(self) -> bool {
        self == Check::Matched
    }

    /// `Ok(self)`, or the mismatch as an [`Error::Mismatch`] naming `what` and both values.
    pub fn require(
        self,
        what: &str,
        local: &str,
        reported: Option<&str>,
        upload_id: Option<&str>,
    ) -> Result<Check, Error> {
        match self {
            Check::Mismatch => Err(mismatch(
                what,
                local,
                reported.unwrap_or("nothing"),
                upload_id,
            )),
            c => Ok(c),
        }
    }
}

/// The outcome for an ETag of `kind` that cannot be compared, or `None` when it can.
fn not_comparable(kind: EtagKind) -> Option<Check> {
    match kind {
        EtagKind::Md5 => None,
        EtagKind::Kms => Some(Check::NotComparableKms),
        EtagKind::SseC => Some(Check::NotComparableSseC),
        EtagKind::Unpredictable => Some(Check::NotPredicted),
    }
}

/// `local` (base64, `-N` for a composite) in the form S3 reported `reported`: without its `-N`
/// when S3 left it off (GetObjectAttributes reports composites so), else unchanged. The one place
/// the `-N` rule lives.
pub(crate) fn in_reported_form<'a>(local: &'a str, reported: &str) -> &'a str {
    if reported.contains('-') {
        local
    } else {
        local.split_once('-').map_or(local, |(value, _)| value)
    }
}

/// Compares a checksum S3 reported (a part's, or the object's) with the local one.
pub(crate) fn checksum(local: &str, reported: Option<&str>) -> Check {
    match reported {
        None => Check::NotReported,
        Some(r) if in_reported_form(local, r) == r => Check::Matched,
        Some(_) => Check::Mismatch,
    }
}

/// Compares an ETag S3 reported (quoted or not) with the local one (unquoted hex, `-N` for a
/// multipart object; `None` when no MD5 was computed), unless encryption makes it no MD5.
pub(crate) fn etag(local: Option<&str>, reported: Option<&str>, kind: EtagKind) -> Check {
    if let Some(c) = not_comparable(kind) {
        return c;
    }
    let Some(local) = local else {
        return Check::NotPredicted;
    };
    match reported.map(|e| e.trim_matches('"')) {
        None => Check::NotReported,
        Some(e) if e == local => Check::Matched,
        Some(_) => Check::Mismatch,
    }
}

/// One value compared: what the local file gives and what S3 reports (as in verify's report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Compared {
    /// From the local file.
    pub local: String,
    /// From S3.
    pub remote: String,
    /// Whether they are equal.
    pub matches: bool,
}

impl Compared {
    /// Two plain values (sizes, ETags): equal or not.
    pub fn new(local: String, remote: String) -> Compared {
        let matches = local == remote;
        Compared {
            local,
            remote,
            matches,
        }
    }

    /// A checksum, compared under the `-N` rule; `local` is shown in the form S3 reported.
    pub fn checksum(local: &str, remote: String) -> Compared {
        Compared::new(in_reported_form(local, &remote).to_owned(), remote)
    }

    /// The outcome in the shared vocabulary.
    pub fn check(&self) -> Check {
        if self.matches {
            Check::Matched
        } else {
            Check::Mismatch
        }
    }
}

/// The error for a value S3 reports that differs from the local one.
pub(crate) fn mismatch(what: &str, expected: &str, actual: &str, upload_id: Option<&str>) -> Error {
    Error::Mismatch {
        what: what.to_owned(),
        expected: expected.to_owned(),
        actual: actual.to_owned(),
        upload_id: upload_id.map(str::to_owned),
        then: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_composite_without_its_part_count_compares_on_the_value() {
        assert_eq!(checksum("abc=-3", Some("abc=-3")), Check::Matched);
        assert_eq!(checksum("abc=-3", Some("abc=")), Check::Matched);
        assert_eq!(checksum("abc=-3", Some("abc=-4")), Check::Mismatch);
        assert_eq!(checksum("abc=-3", Some("abd=")), Check::Mismatch);
        assert_eq!(checksum("abc=", Some("abc=")), Check::Matched);
        assert_eq!(checksum("abc=", None), Check::NotReported);
        // A full-object value never gains a part count from the server's form.
        assert_eq!(checksum("abc=", Some("abc=-1")), Check::Mismatch);
        assert_eq!(Compared::checksum("abc=-3", "abc=".into()).local, "abc=");
        assert!(Compared::checksum("abc=-3", "abc=-3".into()).matches);
    }

    #[test]
    fn an_etag_under_kms_or_sse_c_is_never_compared() {
        let md5 = "0123456789abcdef0123456789abcdef";
        let quoted = format!("\"{md5}\"");
        let kms = EtagKind::of(Some("aws:kms"), false);
        assert_eq!(kms, EtagKind::Kms);
        assert_eq!(EtagKind::of(Some("aws:kms:dsse"), false), EtagKind::Kms);
        assert_eq!(EtagKind::of(Some("AES256"), true), EtagKind::SseC);
        assert_eq!(EtagKind::of(Some("AES256"), false), EtagKind::Md5);
        assert_eq!(
            etag(Some(md5), Some(&quoted), kms),
            Check::NotComparableKms,
            "even when equal"
        );
        assert_eq!(
            etag(Some(md5), Some("x"), EtagKind::SseC),
            Check::NotComparableSseC
        );
        assert_eq!(
            etag(Some(md5), Some(&quoted), EtagKind::Md5),
            Check::Matched
        );
        assert_eq!(etag(Some(md5), Some("x"), EtagKind::Md5), Check::Mismatch);
        assert_eq!(etag(None, Some(md5), EtagKind::Md5), Check::NotPredicted);
        assert_eq!(etag(Some(md5), None, EtagKind::Md5), Check::NotReported);
    }

    #[test]
    fn the_report_names_stay_as_published() {
        let names: Vec<String> = [
            Check::Matched,
            Check::NotReported,
            Check::NotComparableKms,
            Check::NotPredicted,
        ]
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "\"matched\"",
                "\"not_reported\"",
                "\"not_comparable_kms\"",
                "\"not_predicted\""
            ]
        );
        let e = Check::Mismatch
            .require("part 2 checksum", "a", Some("b"), Some("u"))
            .unwrap_err();
        assert!(matches!(e, Error::Mismatch { .. }), "{e}");
        assert_eq!(
            Check::NotReported.require("x", "a", None, None).ok(),
            Some(Check::NotReported)
        );
    }
}
