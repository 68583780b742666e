//! A listing of the objects under a prefix, as a stream that holds one page (1,000 objects) at a
//! time, and a [`Cursor`] that answers "is this key listed?" for keys asked in key order: the merge
//! of a listing with a tree walk, which yields its keys in the same order.

use futures::{Stream, StreamExt as _, TryStreamExt as _};

use crate::error::Error;
use crate::s3::{ListedObject, ObjectRead};

/// Pages a listing may have before tally calls the server's tokens a loop.
const MAX_PAGES: usize = 10_000_000;

/// Every object under `prefix` in `bucket`, in key order, one page fetched when the one before is
/// used up. Ends after the first error.
pub(crate) fn objects<'a, C: ObjectRead>(
    s3: &'a C,
    bucket: &'a str,
    prefix: &'a str,
) -> impl Stream<Item = Result<ListedObject, Error>> + Send + 'a {
    objects_after(s3, bucket, prefix, None)
}

/// [`objects`], from the first key after `start_after` (S3's StartAfter, on the first page; the
/// pages after it go on by their token).
pub(crate) fn objects_after<'a, C: ObjectRead>(
    s3: &'a C,
    bucket: &'a str,
    prefix: &'a str,
    start_after: Option<String>,
) -> impl Stream<Item = Result<ListedObject, Error>> + Send + 'a {
    // State: the token of the next page (None before the first), pages read, and whether done.
    futures::stream::try_unfold(
        (None::<String>, 0usize, false),
        move |(token, pages, done)| {
            let start_after = start_after.clone();
            async move {
                if done {
                    return Ok(None);
                }
                if pages >= MAX_PAGES {
                    return Err(Error::s3("ListObjectsV2", None, None)(
                        crate::s3::S3Error::transport(format!(
                            "the listing did not end after {MAX_PAGES} pages"
                        )),
                    ));
                }
                let page = s3
                    .list_page(
                        bucket,
                        prefix,
                        token.as_deref(),
                        token.is_none().then_some(start_after.as_deref()).flatten(),
                    )
                    .await
                    .map_err(Error::s3("ListObjectsV2", None, None))?;
                // A server that hands back the token it was given ends the listing, not a loop.
                let next = page.next.filter(|n| token.as_ref() != Some(n));
                let done = next.is_none();
                let items = futures::stream::iter(page.objects.into_iter().map(Ok));
                Ok(Some((items, (next, pages + 1, done))))
            }
        },
    )
    .try_flatten()
}

/// Answers, for keys asked in ascending order, whether the listing holds them (and their size).
pub(crate) struct Cursor<S> {
    listing: S,
    head: Option<ListedObject>,
    ended: bool,
}

impl<S: Stream<Item = Result<ListedObject, Error>> + Unpin> Cursor<S> {
    /// A cursor at the start of `listing`.
    pub(crate) fn new(listing: S) -> Cursor<S> {
        Cursor {
            listing,
            head: None,
            ended: false,
        }
    }

    /// The listed object with exactly `key`, if any. `key` must not be below a key asked before.
    pub(crate) async fn find(&mut self, key: &str) -> Result<Option<ListedObject>, Error> {
        loop {
            if let Some(h) = &self.head {
                match h.key.as_str().cmp(key) {
                    std::cmp::Ordering::Less => self.head = None,
                    std::cmp::Ordering::Equal => return Ok(self.head.take()),
                    std::cmp::Ordering::Greater => return Ok(None),
                }
            }
            if self.ended {
                return Ok(None);
            }
            match self.listing.next().await {
                Some(item) => self.head = Some(item?),
                None => self.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::hash;
    use crate::s3::MultipartWrite as _;
    use crate::s3::fake::FakeS3;
    use crate::vocab::ChecksumAlgorithm;
    use crate::vocab::{ObjectSettings, ObjectUrl};

    #[tokio::test]
    async fn a_paged_listing_merges_with_keys_asked_in_order() {
        let s3 = FakeS3::default();
        s3.set_page_size(3);
        let alg = ChecksumAlgorithm::Sha256;
        let keys = ["p/a", "p/a-c", "p/a/b", "p/b", "p/c", "p/d/e", "p/f", "q/x"];
        for (i, k) in keys.iter().enumerate() {
            let body = vec![7u8; i];
            s3.put_object(
                &ObjectUrl::parse(&format!("s3://bkt/{k}")).unwrap(),
                alg,
                Bytes::from(body.clone()).into(),
                &hash::hash_part(alg, true, &body),
                &ObjectSettings::default(),
            )
            .await
            .unwrap();
        }
        let all: Vec<String> = objects(&s3, "bkt", "p/")
            .map_ok(|o| o.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all, keys[..7], "every page, in key order, only the prefix");
        let before = s3.requests();
        let mut c = Cursor::new(Box::pin(objects(&s3, "bkt", "p/")));
        let mut found = Vec::new();
        for k in [
            "p/0", "p/a-c", "p/a/a", "p/a/b", "p/c", "p/cc", "p/f", "p/g", "p/z",
        ] {
            if let Some(o) = c.find(k).await.unwrap() {
                found.push((o.key, o.size));
            }
        }
        assert_eq!(
            found,
            [
                ("p/a-c".to_owned(), 1),
                ("p/a/b".to_owned(), 2),
                ("p/c".to_owned(), 4),
                ("p/f".to_owned(), 6)
            ]
        );
        assert_eq!(
            s3.requests() - before,
            3,
            "7 objects, 3 a page: 3 pages read once"
        );
    }
}
