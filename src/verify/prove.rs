//! Is an object already the local file? The question a tree upload asks of every file, answered
//! from one HEAD in the common case.
//!
//! The HEAD gives the size, the ETag and the object checksum with its `-N`. When the object has
//! parts, the layout is predicted from the part size the upload would use (an object tally uploaded
//! with the same settings has exactly that layout); the local file is hashed with that layout and
//! the object's own algorithm, and compared as `verify` compares. Only when the prediction does not
//! fit (another part count: another tool's upload) is the real layout learned, with the requests
//! `verify` makes; a difference under the predicted layout sends the file again. A file is called the same only when a checksum or an
//! MD5 ETag was compared and matched: with nothing to compare, it is not proven.

use std::sync::Arc;

use serde::Serialize;

use crate::error::Error;
use crate::plan::Plan;
use crate::remote::facts::{RemoteFacts, remote_facts};
use crate::s3::S3Api;
use crate::s3::S3ErrorKind;
use crate::source::Source;
use crate::vocab::ObjectUrl;

use super::compare::{compare, local_needs};
use super::{VerifyOptions, hash_local};

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "proof", rename_all = "snake_case")]
pub enum Proof {
    /// No object at the key.
    Missing,
    /// The object is the file: `how` says what was compared.
    Same {
        /// What S3 says about it (ETag, version, checksum).
        #[serde(skip)]
        facts: RemoteFacts,
        /// What matched, for the report.
        how: String,
    },
    /// The object is not (or cannot be proven to be) the file.
    Differs {
        /// Why, for the report.
        why: String,
    },
}

/// Whether `obj` holds the bytes of `src`, as an upload with parts of `part_size` would cut them.
pub async fn prove<C: S3Api>(
    s3: &C,
    src: &Arc<Source>,
    obj: &ObjectUrl,
    part_size: u64,
) -> Result<Proof, Error> {
    let head = match s3.head_object(obj, None).await {
        Ok(h) => h,
        Err(e) if e.kind == S3ErrorKind::NotFound => return Ok(Proof::Missing),
        Err(e) => return Err(Error::s3("HeadObject", None, None)(e)),
    };
    let mut facts = RemoteFacts::from_head(&head);
    if facts.size != src.len() {
        return Ok(Proof::Differs {
            why: format!(
                "the object has {} bytes, the file {}",
                facts.size,
                src.len()
            ),
        });
    }
    let predicted: Option<Vec<u64>> = if facts.multipart {
        let plan = Plan::new(src.len(), part_size)?;
        let layout: Vec<u64> = plan.parts().map(|p| p.len).collect();
        (facts.parts_named() == Some(layout.len() as u32)).then_some(layout)
    } else {
        Some(vec![facts.size])
    };
    if let Some(layout) = predicted {
        // The layout this upload would make. A difference under it is taken as a difference: at
        // worst (another tool, other part sizes, the same count) the file is sent again.
        facts.layout = layout;
        return Ok(match same(src, &facts).await {
            Decided::Same(how) => Proof::Same { facts, how },
            Decided::Differs(why) | Decided::Undecidable(why) => Proof::Differs { why },
        });
    }
    // Parts of another count than this upload's: learn their sizes, as verify does.
    let learned = match remote_facts(s3, obj, None).await {
        Ok(l) => l.facts,
        Err(e) => {
            return Ok(Proof::Differs {
                why: format!("the object's part layout could not be learned ({e})"),
            });
        }
    };
    Ok(match same(src, &learned).await {
        Decided::Same(how) => Proof::Same {
            facts: learned,
            how,
        },
        Decided::Differs(why) | Decided::Undecidable(why) => Proof::Differs { why },
    })
}

/// Whether `src` is the single-part object a listing gave with `etag` (and the file's size): the
/// ETag of an object written in one request is the MD5 of its bytes (unless SSE-KMS or SSE-C
/// encrypts it, which the listing does not say: then it differs, and the caller asks the object
/// with a HEAD as before). The file is hashed once (MD5, on the pool), unless `hashed` (its hash
/// as one part, taken already) gives its MD5. `None` when the ETag is a multipart one or does not
/// match: not proven here.
pub(crate) async fn by_listed_etag(
    src: &Arc<Source>,
    etag: &crate::vocab::ETag,
    hashed: Option<&crate::vocab::PartHash>,
) -> Option<Proof> {
    if etag.parts().is_some() || etag.as_str().len() != 32 {
        return None;
    }
    let md5 = match hashed.and_then(|h| h.md5) {
        Some(md5) => md5,
        None => {
            let ranges = std::iter::once(0..src.len()).collect();
            hash_local(src.clone(), ranges, None, true, None)
                .await
                .first()?
                .md5?
        }
    };
    let hex: String = md5.iter().map(|b| format!("{b:02x}")).collect();
    (hex == etag.as_str()).then(|| Proof::Same {
        facts: RemoteFacts {
            size: src.len(),
            etag: Some(etag.clone()),
            layout: vec![src.len()],
            ..RemoteFacts::default()
        },
        how: format!(
            "ETag {hex} from the listing = the file's MD5 (a single-part object's MD5; no HEAD)"
        ),
    })
}

enum Decided {
    Same(String),
    Differs(String),
    Undecidable(String),
}

/// Hashes `src` with `facts.layout` and the object's algorithm and compares.
async fn same(src: &Arc<Source>, facts: &RemoteFacts) -> Decided {
    let (alg, md5) = local_needs(facts, &VerifyOptions::default());
    if alg.is_none() && !md5 {
        return Decided::Undecidable(
            "the object has no checksum and its ETag is not an MD5: nothing proves it is the file"
                .into(),
        );
    }
    let local = hash_local(src.clone(), facts.ranges(), alg, md5, None).await;
    let c = compare(src.len(), &local, facts);
    if c.differs() {
        return Decided::Differs(match (&c.checksum, &c.etag) {
            (Some(x), _) if !x.matches => format!(
                "the object's checksum {} differs from the file's {}",
                x.remote, x.local
            ),
            (_, Some(x)) if !x.matches => format!(
                "the object's ETag {} differs from the file's {}",
                x.remote, x.local
            ),
            _ => format!("{} part(s) differ", c.differing_parts.len()),
        });
    }
    let mut how = Vec::new();
    if let (Some(x), Some(rc)) = (&c.checksum, &facts.checksum)
        && x.matches
    {
        how.push(format!("{} {}", rc.algorithm, x.remote));
    }
    if c.parts_compared > 0 {
        how.push(format!("{} part checksums", c.parts_compared));
    }
    if let Some(x) = c.etag.as_ref().filter(|x| x.matches) {
        how.push(format!("ETag {}", x.remote));
    }
    if how.is_empty() {
        return Decided::Undecidable("nothing could be compared".into());
    }
    Decided::Same(how.join(", "))
}
