//! Storing an MD5 as an object tag, merged with the tags the object already has.

use serde::Serialize;

use crate::error::Error;
use crate::s3::S3Api;
use crate::s3::{S3Error, S3ErrorKind};
use crate::vocab::ObjectUrl;

/// The tag-set limit S3 enforces (LocalStack does not: tally checks).
pub(crate) use crate::vocab::MAX_TAGS;

/// What happened to the tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagOutcome {
    /// The tag was added, the other tags kept.
    Added,
    /// The object already carried the same tag: nothing was written.
    AlreadyPresent,
    /// A tag of that name held another value; it now holds this MD5.
    Replaced {
        /// The value it held.
        old: String,
    },
}

/// Stores `md5_hex` as tag `name`, merged with the object's existing tags (never dropping them).
/// Does nothing if the same tag is already there; refuses clearly past S3's 10-tag limit.
pub(crate) async fn tag_md5<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    version: Option<&str>,
    name: &str,
    md5_hex: &str,
) -> Result<TagOutcome, Error> {
    let mut out = tag_values(
        s3,
        obj,
        version,
        &[(name, md5_hex)],
        "the MD5 was not stored as a tag",
    )
    .await?;
    Ok(out.pop().expect("one tag asked for"))
}

/// Stores each `(name, value)` as a tag, merged with the object's existing tags (never dropping
/// them), in one read and at most one write of the tag set; says per tag what happened. Refuses
/// clearly, writing nothing, past S3's 10-tag limit. `consequence` says what was not done if the
/// server has no tagging.
pub(crate) async fn tag_values<C: S3Api>(
    s3: &C,
    obj: &ObjectUrl,
    version: Option<&str>,
    wanted: &[(&str, &str)],
    consequence: &'static str,
) -> Result<Vec<TagOutcome>, Error> {
    let failed = |op: &'static str, source: S3Error| {
        if source.kind == S3ErrorKind::Unsupported {
            Error::Unsupported {
                what: "object tagging",
                consequence,
                source,
            }
        } else {
            Error::s3(op, None, None)(source)
        }
    };
    let mut tags = s3
        .get_tags(obj, version)
        .await
        .map_err(|e| failed("GetObjectTagging", e))?;
    let mut outcomes = Vec::with_capacity(wanted.len());
    for (name, value) in wanted {
        let count = tags.len();
        outcomes.push(match tags.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) if v == value => TagOutcome::AlreadyPresent,
            Some((_, v)) => {
                let old = std::mem::replace(v, (*value).to_owned());
                TagOutcome::Replaced { old }
            }
            None if count >= MAX_TAGS => {
                return Err(Error::TooManyTags {
                    url: format!("s3://{}/{}", obj.bucket, obj.key),
                    count,
                    name: (*name).to_owned(),
                });
            }
            None => {
                tags.push(((*name).to_owned(), (*value).to_owned()));
                TagOutcome::Added
            }
        });
    }
    if outcomes.iter().any(|o| *o != TagOutcome::AlreadyPresent) {
        s3.put_tags(obj, version, &tags)
            .await
            .map_err(|e| failed("PutObjectTagging", e))?;
    }
    Ok(outcomes)
}
