//! Writes: PutObject and the multipart operations, checked as S3 checks them.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;

use super::digest::{digest, hex, md5, md5_etag};
use super::{FakeS3, Stored, Upload, err};
use crate::s3::paging::paginate;
use crate::s3::{CompletedPart, ETag, HeldPart, InProgress, MultipartWrite, S3Error, WriteReply};
use crate::vocab::{ChecksumAlgorithm, ChecksumType, PartHash};
use crate::vocab::{ObjectSettings, ObjectUrl};

impl MultipartWrite for FakeS3 {
    async fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: crate::s3::PutBody,
        hash: &PartHash,
        settings: &ObjectSettings,
    ) -> Result<WriteReply, S3Error> {
        let _in_flight = self.request().await;
        // As an HTTP client would: a body that fails to read fails the request.
        let body = body
            .read_all()
            .await
            .map_err(|e| S3Error::transport(format!("the request body failed: {e}")))?;
        if settings.if_absent && self.state.lock().unwrap().objects.contains_key(&obj.key) {
            return Err(err("PreconditionFailed", 412));
        }
        let ignored = alg.is_recent() && self.state.lock().unwrap().recent_unsupported;
        let checksum = if ignored {
            // As Garage and LocalStack: the header is not looked at; Content-MD5 still is.
            if hash.md5.is_some_and(|m| md5(&body) != m) {
                return Err(err("BadDigest", 400));
            }
            None
        } else {
            Some(Self::verify(alg, &body, hash)?)
        };
        let reply = WriteReply {
            etag: Some(Self::etag_under(settings, md5_etag(&body))),
            checksum,
            sse: Self::sse(settings),
            ..WriteReply::default()
        };
        let mut s = self.state.lock().unwrap();
        s.layouts.remove(&obj.key);
        s.objects
            .insert(obj.key.clone(), (body.to_vec(), alg, reply.clone()));
        Self::store_settings(&mut s, &obj.key, settings);
        Ok(reply)
    }

    async fn create_multipart(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        kind: ChecksumType,
        settings: &ObjectSettings,
    ) -> Result<String, S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        if alg.is_recent() && s.recent_unsupported {
            return Err(S3Error::from_response(
                Some("InvalidRequest"),
                Some(400),
                format!("fake: unsupported checksum algorithm {alg}"),
            ));
        }
        s.creates += 1;
        s.next_id += 1;
        let id = format!("upload-{}", s.next_id);
        let initiated = s.next_id as i64;
        s.uploads.insert(
            id.clone(),
            Upload {
                key: obj.key.clone(),
                alg,
                kind,
                initiated,
                parts: BTreeMap::new(),
                settings: settings.clone(),
            },
        );
        if s.lose_create_replies > 0 {
            s.lose_create_replies -= 1;
            return Err(S3Error::transport(
                "fake: connection reset before the reply".into(),
            ));
        }
        Ok(id)
    }

    async fn upload_part(
        &self,
        _obj: &ObjectUrl,
        upload_id: &str,
        number: u32,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
    ) -> Result<WriteReply, S3Error> {
        let _in_flight = self.request().await;
        let _ = self.parts_held.subscribe().wait_for(|held| !held).await;
        let checksum = Self::verify(alg, &body, hash)?;
        let (crash, etag, sse) = {
            let mut s = self.state.lock().unwrap();
            s.part_uploads += 1;
            let crash = s.crash_after.filter(|(at, _)| s.part_uploads > *at);
            let store = crash.is_none_or(|(_, store)| store);
            let Some(up) = s.uploads.get_mut(upload_id) else {
                return Err(err("NoSuchUpload", 404));
            };
            if up.alg != alg {
                return Err(err("InvalidRequest", 400));
            }
            let etag = Self::etag_under(&up.settings, md5_etag(&body));
            let sse = Self::sse(&up.settings);
            if store {
                up.parts.insert(
                    number,
                    Stored {
                        // A copy, as a server has: the body is a view of the caller's memory map.
                        data: Bytes::copy_from_slice(&body),
                        checksum: checksum.clone(),
                        etag: etag.clone(),
                    },
                );
                let shadow = (upload_id.to_string(), number);
                if s.drop_copy_of.take_if(|n| *n == number).is_some() {
                    crate::s3::throttle::handed_over(2 * body.len() as u64);
                    s.shadowed.insert(shadow);
                } else {
                    s.shadowed.remove(&shadow);
                }
            }
            (crash.is_some(), etag, sse)
        };
        if crash {
            self.crashed.store(true, Ordering::SeqCst);
            self.crash.notify_waiters();
            std::future::pending::<()>().await;
        }
        Ok(WriteReply {
            etag: Some(etag),
            checksum: Some(checksum),
            sse,
            ..WriteReply::default()
        })
    }

    async fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        _alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let _in_flight = self.request().await;
        let mut s = self.state.lock().unwrap();
        let Some(up) = s.uploads.get(upload_id).cloned() else {
            return Err(err("NoSuchUpload", 404));
        };
        let mut data = Vec::new();
        let mut raw = Vec::new();
        let mut md5s = Vec::new();
        let mut layout = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let held = up
                .parts
                .get(&p.number)
                .ok_or_else(|| err("InvalidPart", 400))?;
            if p.number as usize != i + 1 || held.etag != p.etag || held.checksum != p.checksum {
                return Err(err("InvalidPart", 400));
            }
            if s.shadowed.contains(&(upload_id.to_string(), p.number)) {
                return Err(err("InvalidPart", 400));
            }
            data.extend_from_slice(&held.data);
            layout.push((held.data.len() as u64, held.checksum.clone()));
            raw.extend_from_slice(&digest(up.alg, &held.data));
            md5s.extend_from_slice(&md5(&held.data));
        }
        let checksum = match up.kind {
            ChecksumType::FullObject => {
                let whole = B64.encode(digest(up.alg, &data));
                if full_object.is_some_and(|f| f != whole) {
                    return Err(err("BadDigest", 400));
                }
                whole
            }
            ChecksumType::Composite => {
                format!("{}-{}", B64.encode(digest(up.alg, &raw)), parts.len())
            }
        };
        let etag = ETag::new(&format!("{}-{}", hex(&md5(&md5s)), parts.len()));
        let reply = WriteReply {
            checksum: Some(checksum),
            etag: Some(Self::etag_under(&up.settings, etag)),
            sse: Self::sse(&up.settings),
            ..WriteReply::default()
        };
        s.uploads.remove(upload_id);
        s.layouts.insert(obj.key.clone(), layout);
        s.objects
            .insert(obj.key.clone(), (data, up.alg, reply.clone()));
        Self::store_settings(&mut s, &obj.key, &up.settings);
        s.completes += 1;
        Ok(reply)
    }

    async fn complete_multipart_if_absent(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        if self.state.lock().unwrap().objects.contains_key(&obj.key) {
            let _in_flight = self.request().await;
            return Err(err("PreconditionFailed", 412));
        }
        self.complete_multipart(obj, upload_id, alg, parts, full_object)
            .await
    }

    async fn abort_multipart(&self, _obj: &ObjectUrl, upload_id: &str) -> Result<(), S3Error> {
        let _in_flight = self.request().await;
        let mut st = self.state.lock().unwrap();
        if st.refuse_aborts {
            return Err(err("InternalError", 500));
        }
        match st.uploads.remove(upload_id) {
            Some(_) => Ok(()),
            None => Err(err("NoSuchUpload", 404)),
        }
    }

    async fn list_parts(
        &self,
        _obj: &ObjectUrl,
        upload_id: &str,
        _alg: ChecksumAlgorithm,
    ) -> Result<Vec<HeldPart>, S3Error> {
        let _in_flight = self.request().await;
        let pages = paginate(|marker| async move { self.parts_page(upload_id, marker) }).await?;
        Ok(pages.into_iter().flatten().collect())
    }

    async fn list_uploads(&self, _bucket: &str, prefix: &str) -> Result<Vec<InProgress>, S3Error> {
        let _in_flight = self.request().await;
        let s = self.state.lock().unwrap();
        if s.no_upload_listing {
            return Err(S3Error::from_response(
                Some("NotImplemented"),
                Some(501),
                "ListMultipartUploads is not implemented".into(),
            ));
        }
        let mut out: Vec<InProgress> = s
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| InProgress {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: Some(u.initiated),
            })
            .collect();
        out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
        Ok(out)
    }

    fn endpoint_label(&self) -> String {
        "fake".into()
    }
}
