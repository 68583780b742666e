//! A listing of the objects under a prefix, as a stream that holds one page (1,000 objects) at a
//! time ([`read_ahead`]: two, the next one read beside its consumer), and a [`Cursor`] that
//! answers "is this key listed?" for keys asked in key order: the merge of a listing with a tree
//! walk, which yields its keys in the same order.

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
    pages_after(s3, bucket, prefix, start_after)
        .map_ok(|objects| futures::stream::iter(objects.into_iter().map(Ok)))
        .try_flatten()
}

/// The objects of each page of the listing of `prefix` from the first key after `start_after`,
/// a page fetched only when asked for: the one place that follows ListObjectsV2's tokens. Ends
/// after the first error.
fn pages_after<'a, C: ObjectRead>(
    s3: &'a C,
    bucket: &'a str,
    prefix: &'a str,
    start_after: Option<String>,
) -> impl Stream<Item = Result<Vec<ListedObject>, Error>> + Send + 'a {
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
                Ok(Some((page.objects, (next, pages + 1, done))))
            }
        },
    )
}

/// [`objects`], read one page ahead: the stream, and the future that reads the pages. The next
/// page is asked for as soon as the consumer takes one (at most two pages held: the one in use
/// and the next), so that on a real link, where each page costs a round trip and the server's
/// time, a consumer that reads the whole listing (a tree's merge with its walk, a prefix
/// download) does not wait for it page by page. The reader must run beside the consumer, polled
/// whenever the task is ([`beside`]), not only when the consumer asks for an object: a consumer
/// that waits minutes between objects (files of many GiB in progress) must not leave a request
/// unpolled past its timeout. Ends after the first error, as [`objects`].
pub(crate) fn read_ahead<'a, C: ObjectRead>(
    s3: &'a C,
    bucket: &'a str,
    prefix: &'a str,
) -> (
    impl std::future::Future<Output = ()> + Send + 'a,
    impl Stream<Item = Result<ListedObject, Error>> + Send + 'a,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<ListedObject>, Error>>(1);
    let reader = async move {
        let mut pages = std::pin::pin!(pages_after(s3, bucket, prefix, None));
        // A slot first: the page after the one waiting is asked for only once that one is
        // taken. The slot refused: the consumer is gone.
        while let Ok(slot) = tx.reserve().await {
            match pages.next().await {
                Some(page) => slot.send(page),
                None => return,
            }
        }
    };
    let pages = futures::stream::unfold(rx, |mut rx| async move {
        let page = rx.recv().await?;
        Some((page, rx))
    });
    let objects = pages
        .map_ok(|objects| futures::stream::iter(objects.into_iter().map(Ok)))
        // The pages end after an error: so does the listing.
        .try_flatten();
    (reader, objects)
}

/// Runs `work` with `reader` (a [`read_ahead`] listing's) polled beside it until `work` ends;
/// `work`'s output. The reader stops when it has read the last page or the listing is dropped.
/// Each is polled only when its own waker fired (a `FuturesUnordered`): the run's task wakes for
/// every file, and the reader, waiting for its slot, need not be asked each time.
pub(crate) async fn beside<'a, T: 'a>(
    reader: impl std::future::Future<Output = ()> + 'a,
    work: impl std::future::Future<Output = T> + 'a,
) -> T {
    type Branch<'b, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<T>> + 'b>>;
    let mut both = futures::stream::FuturesUnordered::<Branch<'a, T>>::new();
    both.push(Box::pin(async move {
        reader.await;
        None
    }));
    both.push(Box::pin(async move { Some(work.await) }));
    while let Some(out) = both.next().await {
        if let Some(out) = out {
            return out;
        }
    }
    unreachable!("the work's branch returns its output")
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

    /// A fake with pages of 3 and an object of `i` bytes at each `keys[i]` of bucket `bkt`.
    async fn fake_with(keys: &[&str]) -> FakeS3 {
        let s3 = FakeS3::default();
        s3.set_page_size(3);
        let alg = ChecksumAlgorithm::Sha256;
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
        s3
    }

    #[tokio::test]
    async fn the_next_page_is_read_beside_the_consumer_and_no_further() {
        let s3 = fake_with(&["p/0", "p/1", "p/2", "p/3", "p/4", "p/5", "p/6"]).await;
        let pages = || s3.list_pages();
        let before = pages();
        let (reader, listing) = read_ahead(&s3, "bkt", "p/");
        let consumer = async {
            let mut listing = std::pin::pin!(listing);
            assert_eq!(listing.next().await.unwrap().unwrap().key, "p/0");
            // The consumer asks for nothing more: the reader, polled beside it, reads page 2.
            let mut turns = 0;
            while pages() - before < 2 {
                turns += 1;
                assert!(turns < 100_000, "page 2 was never read beside the consumer");
                tokio::task::yield_now().await;
            }
            // Page 2 waits for the consumer: page 3 is not asked for (the reader waits for a slot).
            for _ in 0..1_000 {
                tokio::task::yield_now().await;
            }
            assert_eq!(pages() - before, 2, "at most one page read ahead");
            let mut keys = vec!["p/0".to_owned()];
            while let Some(o) = listing.next().await {
                keys.push(o.unwrap().key);
            }
            keys
        };
        let keys =
            tokio::time::timeout(std::time::Duration::from_secs(60), beside(reader, consumer))
                .await
                .expect("the listing was read within 60 s");
        assert_eq!(keys, (0..7).map(|i| format!("p/{i}")).collect::<Vec<_>>());
        assert_eq!(pages() - before, 3, "3 pages, each read once");
    }

    #[tokio::test]
    async fn a_paged_listing_merges_with_keys_asked_in_order() {
        let keys = ["p/a", "p/a-c", "p/a/b", "p/b", "p/c", "p/d/e", "p/f", "q/x"];
        let s3 = fake_with(&keys).await;
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
