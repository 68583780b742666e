//! The paged listings: ListObjectsV2, ListParts, ListMultipartUploads.

use super::SdkS3;
use crate::s3::errors::s3_error;
use crate::s3::paging::paginate;
use crate::s3::{ETag, HeldPart, InProgress, ListPage, ListedObject, S3Error};
use crate::vocab::{ChecksumAlgorithm, ObjectUrl};

impl SdkS3 {
    /// ListParts, every page, sorted by part number.
    pub(super) async fn list_parts_paged(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
    ) -> Result<Vec<HeldPart>, S3Error> {
        let client = &self.lists;
        let pages = paginate(|marker: Option<String>| async move {
            let page = client
                .list_parts()
                .bucket(&obj.bucket)
                .key(&obj.key)
                .upload_id(upload_id)
                .set_part_number_marker(marker)
                .send()
                .await
                .map_err(|e| s3_error(e, &self.display))?;
            let held: Vec<HeldPart> = page
                .parts()
                .iter()
                .map(|p| HeldPart {
                    number: p.part_number().unwrap_or_default() as u32,
                    size: p.size().unwrap_or_default() as u64,
                    etag: ETag::new(p.e_tag().unwrap_or_default()),
                    checksum: checksum_of!(p, alg),
                })
                .collect();
            let next = (page.is_truncated() == Some(true))
                .then(|| page.next_part_number_marker().map(str::to_owned))
                .flatten();
            Ok((held, next))
        })
        .await?;
        let mut out: Vec<HeldPart> = pages.into_iter().flatten().collect();
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    /// ListMultipartUploads under `prefix`, every page.
    pub(super) async fn list_uploads_paged(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<InProgress>, S3Error> {
        let client = &self.lists;
        let pages = paginate(
            |marker: Option<(Option<String>, Option<String>)>| async move {
                let (key_marker, id_marker) = marker.unwrap_or_default();
                let page = client
                    .list_multipart_uploads()
                    .bucket(bucket)
                    .prefix(prefix)
                    .set_key_marker(key_marker)
                    .set_upload_id_marker(id_marker)
                    .send()
                    .await
                    .map_err(|e| s3_error(e, &self.display))?;
                let uploads: Vec<InProgress> = page
                    .uploads()
                    .iter()
                    .map(|u| InProgress {
                        key: u.key().unwrap_or_default().to_owned(),
                        upload_id: u.upload_id().unwrap_or_default().to_owned(),
                        initiated: u.initiated().map(|t| t.secs()),
                    })
                    .collect();
                let next = (
                    page.next_key_marker().map(str::to_owned),
                    page.next_upload_id_marker().map(str::to_owned),
                );
                let more = page.is_truncated() == Some(true) && next != (None, None);
                Ok((uploads, more.then_some(next)))
            },
        )
        .await?;
        Ok(pages.into_iter().flatten().collect())
    }

    /// One page of ListObjectsV2, its keys decoded.
    pub(super) async fn list_objects_page(
        &self,
        bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        let page = self
            .lists
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.map(str::to_owned))
            .set_start_after(start_after.map(str::to_owned))
            // Keys come back URL-encoded: a key with a control character (which XML 1.0 cannot
            // carry) no longer breaks the whole listing.
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .send()
            .await
            .map_err(|e| s3_error(e, &self.display))?;
        let url_encoded = page.encoding_type() == Some(&aws_sdk_s3::types::EncodingType::Url);
        Ok(ListPage {
            objects: page
                .contents()
                .iter()
                .map(|o| ListedObject {
                    key: {
                        let k = o.key().unwrap_or_default();
                        if url_encoded {
                            url_decode(k)
                        } else {
                            k.to_owned()
                        }
                    },
                    size: o.size().unwrap_or_default().max(0) as u64,
                    etag: o.e_tag().map(crate::vocab::ETag::new),
                })
                .collect(),
            next: (page.is_truncated() == Some(true))
                .then(|| page.next_continuation_token().map(str::to_owned))
                .flatten(),
        })
    }
}

/// A key of a listing asked for with `encoding-type=url`: `%XX` escapes, and `+` for a space (as
/// AWS writes it; a literal `+` comes as `%2B`). Bytes that do not form UTF-8 are kept escaped.
fn url_decode(k: &str) -> String {
    let b = k.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| k.to_owned())
}

#[cfg(test)]
mod url_decode_tests {
    #[test]
    fn listed_keys_are_decoded() {
        assert_eq!(super::url_decode("a%01b"), "a\u{1}b");
        assert_eq!(super::url_decode("sp+ace%20x%2B"), "sp ace x+");
        assert_eq!(super::url_decode("%C3%BC%1B"), "ü\u{1b}");
        assert_eq!(super::url_decode("50%"), "50%");
        assert_eq!(super::url_decode("a%zz"), "a%zz");
    }
}
