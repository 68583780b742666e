//! Reads: HEAD, GetObjectAttributes, GETs, the listing, and tags.

use bytes::Bytes;

use super::{FakeS3, err};
use crate::s3::{
    ETag, HeadInfo, ListPage, ListedObject, ObjectAttributes, ObjectRead, RangeBody,
    RemoteChecksum, RemotePart, S3Error, Tagging,
};
use crate::vocab::ObjectUrl;

impl ObjectRead for FakeS3 {
    async fn object_attributes(
        &self,
        obj: &ObjectUrl,
    ) -> Result<Option<ObjectAttributes>, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        if !s.attributes {
            return Ok(None);
        }
        let (data, alg, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NoSuchKey", 404))?;
        let layout = s.layouts.get(&obj.key);
        Ok(Some(ObjectAttributes {
            size: Some(data.len() as u64),
            etag: reply.etag.clone(),
            checksum: reply.checksum.as_ref().map(|v| RemoteChecksum {
                algorithm: *alg,
                kind: None,
                // GetObjectAttributes gives a composite without its `-N`.
                value: v.split('-').next().unwrap_or(v).to_owned(),
            }),
            parts_count: layout.map(|l| l.len() as u32),
            parts: layout
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, (size, checksum))| RemotePart {
                    number: i as u32 + 1,
                    size: *size,
                    checksum: Some(checksum.clone()),
                })
                .collect(),
        }))
    }

    async fn head_object(
        &self,
        obj: &ObjectUrl,
        part_number: Option<u32>,
    ) -> Result<HeadInfo, S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        s.heads += 1;
        let s = s;
        let (data, alg, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NotFound", 404))?;
        let settings = s.settings.get(&obj.key);
        let layout = s.layouts.get(&obj.key);
        let size = match (part_number, layout) {
            (None, _) => data.len() as u64,
            (Some(n), Some(l)) => l
                .get(n as usize - 1)
                .map(|(size, _)| *size)
                .ok_or_else(|| err("InvalidPartNumber", 416))?,
            (Some(1), None) => data.len() as u64,
            (Some(_), None) => return Err(err("InvalidPartNumber", 416)),
        };
        Ok(HeadInfo {
            size,
            parts_count: part_number.and(layout.map(|l| l.len() as u32)),
            etag: reply.etag.clone(),
            checksum: reply.checksum.clone().map(|value| RemoteChecksum {
                algorithm: *alg,
                kind: None,
                value,
            }),
            sse: reply.sse.clone(),
            storage_class: settings
                .and_then(|x| x.storage_class)
                .map(|c| c.as_str().to_owned()),
            content_type: settings.and_then(|x| x.content_type.clone()),
            metadata_count: settings.map_or(0, |x| x.metadata.len()),
            tag_count: s.tags.get(&obj.key).map(|t| t.len() as u32),
            ..HeadInfo::default()
        })
    }

    async fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        if_match: Option<&ETag>,
    ) -> Result<Bytes, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        let (data, _, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NoSuchKey", 404))?;
        if if_match.is_some_and(|want| reply.etag.as_ref() != Some(want)) {
            return Err(err("PreconditionFailed", 412));
        }
        Ok(Bytes::copy_from_slice(
            &data[range.start as usize..range.end as usize],
        ))
    }

    async fn list_page(
        &self,
        _bucket: &str,
        prefix: &str,
        token: Option<&str>,
        start_after: Option<&str>,
    ) -> Result<ListPage, S3Error> {
        let _in_flight = self.listing_request().await;
        let mut s = self.state.lock().unwrap();
        s.list_pages += 1;
        let page = s.page_size.unwrap_or(1000).max(1);
        // The token is the last key of the page before (the fake's own format); it goes on from
        // there, as S3's does, whatever StartAfter says.
        let after = token.or(start_after);
        let mut keys: Vec<(&String, u64, Option<ETag>)> = s
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && after.is_none_or(|t| k.as_str() > t))
            .map(|(k, (d, _, r))| (k, d.len() as u64, r.etag.clone()))
            .collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let more = keys.len() > page;
        keys.truncate(page);
        let objects: Vec<ListedObject> = keys
            .into_iter()
            .map(|(k, size, etag)| ListedObject {
                key: k.clone(),
                size,
                etag,
            })
            .collect();
        let next = more
            .then(|| objects.last().map(|o| o.key.clone()))
            .flatten();
        Ok(ListPage { objects, next })
    }

    /// The range in pieces of [`FakeS3::STREAM_PIECE`] bytes. As S3: the object's checksum comes
    /// with a read of its one part by `?partNumber` that covers it whole, none with a `Range`.
    async fn get_stream(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        part: Option<u32>,
        if_match: Option<&ETag>,
        _version_id: Option<&str>,
    ) -> Result<RangeBody, S3Error> {
        self.stream(obj, Some(range), part.is_some(), if_match)
            .await
    }

    /// The whole object, whatever `size` says, with its checksum, as S3 sends it.
    async fn get_whole(
        &self,
        obj: &ObjectUrl,
        _size: u64,
        if_match: Option<&ETag>,
    ) -> Result<RangeBody, S3Error> {
        self.stream(obj, None, true, if_match).await
    }
}

impl FakeS3 {
    /// A GET of `range` (`None`: the whole object) in pieces of [`FakeS3::STREAM_PIECE`] bytes,
    /// with the object's checksum when `checksum` and the read covers the whole object.
    async fn stream(
        &self,
        obj: &ObjectUrl,
        range: Option<std::ops::Range<u64>>,
        checksum: bool,
        if_match: Option<&ETag>,
    ) -> Result<RangeBody, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        let (data, alg, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NoSuchKey", 404))?;
        if if_match.is_some_and(|want| reply.etag.as_ref() != Some(want)) {
            return Err(err("PreconditionFailed", 412));
        }
        let range = range.unwrap_or(0..data.len() as u64);
        let whole = range.start == 0 && range.end == data.len() as u64;
        let checksum = reply
            .checksum
            .clone()
            .filter(|_| checksum && whole)
            .map(|value| RemoteChecksum {
                algorithm: *alg,
                kind: None,
                value,
            });
        let bytes = Bytes::copy_from_slice(&data[range.start as usize..range.end as usize]);
        let pieces: Vec<Result<Bytes, S3Error>> = (0..bytes.len())
            .step_by(Self::STREAM_PIECE)
            .map(|at| Ok(bytes.slice(at..(at + Self::STREAM_PIECE).min(bytes.len()))))
            .collect();
        Ok(RangeBody {
            checksum,
            etag: reply.etag.clone(),
            body: Box::pin(futures::stream::iter(pieces)),
        })
    }
}

impl Tagging for FakeS3 {
    async fn get_tags(
        &self,
        obj: &ObjectUrl,
        _version: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        if !s.objects.contains_key(&obj.key) {
            return Err(err("NoSuchKey", 404));
        }
        Ok(s.tags.get(&obj.key).cloned().unwrap_or_default())
    }

    async fn put_tags(
        &self,
        obj: &ObjectUrl,
        _version: Option<&str>,
        tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        if !s.objects.contains_key(&obj.key) {
            return Err(err("NoSuchKey", 404));
        }
        s.tags.insert(obj.key.clone(), tags.to_vec());
        Ok(())
    }
}
