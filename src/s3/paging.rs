//! One way to follow S3's marker-paged listings, for every listing tally reads.

use std::future::Future;

use crate::s3::S3Error;

/// Pages a listing may have before tally calls the server's markers a loop: far more than 10,000
/// parts or any prefix's uploads need.
const MAX_PAGES: usize = 100_000;

/// Follows a marker-paged listing (ListParts, ListMultipartUploads, GetObjectAttributes' parts):
/// `page(marker)` returns one page and the marker of the next, `None` when it was the last. A
/// server that hands back the marker it was given ends the listing rather than looping.
pub(super) async fn paginate<M, P, F, Fut>(mut page: F) -> Result<Vec<P>, S3Error>
where
    M: Clone + PartialEq,
    F: FnMut(Option<M>) -> Fut,
    Fut: Future<Output = Result<(P, Option<M>), S3Error>>,
{
    let mut pages = Vec::new();
    let mut marker: Option<M> = None;
    for _ in 0..MAX_PAGES {
        let (p, next) = page(marker.clone()).await?;
        pages.push(p);
        match next {
            Some(n) if marker.as_ref() != Some(&n) => marker = Some(n),
            _ => return Ok(pages),
        }
    }
    Err(S3Error::transport(format!(
        "the listing did not end after {MAX_PAGES} pages"
    )))
}
