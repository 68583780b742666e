//! An in-memory S3 for unit and property tests: verifies checksums and MD5s like S3, validates
//! CompleteMultipartUpload like S3, counts requests, and can "crash" (stop answering) after a
//! given number of part uploads so a test can drop the upload mid-flight like a kill -9.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use md5::{Digest as _, Md5};

use super::{CompletedPart, HeldPart, S3Api, WriteReply};
use crate::config::ObjectUrl;
use crate::error::S3Error;
use crate::hash::{self, ChecksumAlgorithm, ChecksumType, PartHash};

#[derive(Debug, Clone)]
struct Stored {
    data: Bytes,
    checksum: String,
    etag: String,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    uploads: HashMap<String, (ChecksumAlgorithm, BTreeMap<u32, Stored>)>,
    objects: HashMap<String, (Vec<u8>, WriteReply)>,
    part_uploads: u32,
    completes: u32,
    crash_after: Option<(u32, bool)>,
}

/// The fake. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct FakeS3 {
    state: Mutex<State>,
    crashed: AtomicBool,
    crash: tokio::sync::Notify,
}

fn err(code: &str, status: u16) -> S3Error {
    S3Error::from_response(Some(code), Some(status), format!("fake: {code}"))
}

impl FakeS3 {
    /// After `n` more UploadPart requests, the next one (stored first if `store`) never answers
    /// and [`FakeS3::crashed`] resolves.
    pub(crate) fn crash_after(&self, n: u32, store: bool) {
        let mut s = self.state.lock().unwrap();
        s.crash_after = Some((s.part_uploads + n, store));
        self.crashed.store(false, Ordering::SeqCst);
    }

    /// Answers normally again.
    pub(crate) fn disarm(&self) {
        self.state.lock().unwrap().crash_after = None;
        self.crashed.store(false, Ordering::SeqCst);
    }

    /// Resolves once a crash was triggered.
    pub(crate) async fn crashed(&self) {
        loop {
            let notified = self.crash.notified();
            if self.crashed.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// UploadPart requests that reached the server so far.
    pub(crate) fn part_uploads(&self) -> u32 {
        self.state.lock().unwrap().part_uploads
    }

    /// Successful CompleteMultipartUpload calls.
    pub(crate) fn completes(&self) -> u32 {
        self.state.lock().unwrap().completes
    }

    /// Uploads in progress.
    pub(crate) fn uploads_in_progress(&self) -> usize {
        self.state.lock().unwrap().uploads.len()
    }

    /// The stored object.
    pub(crate) fn object(&self, key: &str) -> Option<Vec<u8>> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(key)
            .map(|(d, _)| d.clone())
    }

    /// Another writer's PutObject of `data` at `key` (SHA-256 checksum, MD5 ETag).
    pub(crate) fn replace_object(&self, key: &str, data: Vec<u8>) {
        use base64::Engine as _;
        use sha2::Digest as _;
        let reply = WriteReply {
            etag: Some(format!("\"{}\"", hash::hex(&md5::Md5::digest(&data)))),
            checksum: Some(
                base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data)),
            ),
            ..WriteReply::default()
        };
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(key.to_owned(), (data, reply));
    }

    fn verify(alg: ChecksumAlgorithm, body: &[u8], hash: &PartHash) -> Result<(), S3Error> {
        if hash::checksum(alg, body) != hash.checksum {
            return Err(err("BadDigest", 400));
        }
        if hash
            .md5
            .is_some_and(|m| <[u8; 16]>::from(Md5::digest(body)) != m)
        {
            return Err(err("BadDigest", 400));
        }
        Ok(())
    }
}

impl S3Api for FakeS3 {
    async fn put_object(
        &self,
        obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        body: Bytes,
        hash: &PartHash,
    ) -> Result<WriteReply, S3Error> {
        Self::verify(alg, &body, hash)?;
        let reply = WriteReply {
            etag: Some(format!("\"{}\"", hash::hex(&hash::md5(&body)))),
            checksum: Some(hash.checksum.base64()),
            ..WriteReply::default()
        };
        self.state
            .lock()
            .unwrap()
            .objects
            .insert(obj.key.clone(), (body.to_vec(), reply.clone()));
        Ok(reply)
    }

    async fn create_multipart(
        &self,
        _obj: &ObjectUrl,
        alg: ChecksumAlgorithm,
        _kind: ChecksumType,
    ) -> Result<String, S3Error> {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = format!("upload-{}", s.next_id);
        s.uploads.insert(id.clone(), (alg, BTreeMap::new()));
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
        Self::verify(alg, &body, hash)?;
        let crash = {
            let mut s = self.state.lock().unwrap();
            s.part_uploads += 1;
            let crash = s.crash_after.filter(|(at, _)| s.part_uploads > *at);
            let store = crash.is_none_or(|(_, store)| store);
            let Some((_, parts)) = s.uploads.get_mut(upload_id) else {
                return Err(err("NoSuchUpload", 404));
            };
            if store {
                parts.insert(
                    number,
                    Stored {
                        // A copy, as a server has: the body is a view of the caller's memory map.
                        data: Bytes::copy_from_slice(&body),
                        checksum: hash.checksum.base64(),
                        etag: format!("\"{}\"", hash::hex(&hash::md5(&body))),
                    },
                );
            }
            crash.is_some()
        };
        if crash {
            self.crashed.store(true, Ordering::SeqCst);
            self.crash.notify_waiters();
            std::future::pending::<()>().await;
        }
        Ok(WriteReply {
            etag: Some(format!("\"{}\"", hash::hex(&hash::md5(&body)))),
            checksum: Some(hash.checksum.base64()),
            ..WriteReply::default()
        })
    }

    async fn complete_multipart(
        &self,
        obj: &ObjectUrl,
        upload_id: &str,
        _alg: ChecksumAlgorithm,
        parts: &[CompletedPart],
        _full_object: Option<&str>,
    ) -> Result<WriteReply, S3Error> {
        let mut s = self.state.lock().unwrap();
        let Some((alg, stored)) = s.uploads.get(upload_id).cloned() else {
            return Err(err("NoSuchUpload", 404));
        };
        let mut data = Vec::new();
        let mut raw = Vec::new();
        let mut md5s = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let held = stored
                .get(&p.number)
                .ok_or_else(|| err("InvalidPart", 400))?;
            if p.number as usize != i + 1 || held.etag != p.etag || held.checksum != p.checksum {
                return Err(err("InvalidPart", 400));
            }
            data.extend_from_slice(&held.data);
            raw.extend_from_slice(hash::checksum(alg, &held.data).as_bytes());
            md5s.push(hash::md5(&held.data));
        }
        let reply = WriteReply {
            checksum: Some(format!(
                "{}-{}",
                hash::checksum(alg, &raw).base64(),
                parts.len()
            )),
            etag: Some(format!("\"{}\"", hash::etag_of_md5s(&md5s))),
            ..WriteReply::default()
        };
        s.uploads.remove(upload_id);
        s.objects.insert(obj.key.clone(), (data, reply.clone()));
        s.completes += 1;
        Ok(reply)
    }

    async fn abort_multipart(&self, _obj: &ObjectUrl, upload_id: &str) -> Result<(), S3Error> {
        match self.state.lock().unwrap().uploads.remove(upload_id) {
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
        let s = self.state.lock().unwrap();
        let (_, parts) = s
            .uploads
            .get(upload_id)
            .ok_or_else(|| err("NoSuchUpload", 404))?;
        Ok(parts
            .iter()
            .map(|(n, p)| HeldPart {
                number: *n,
                size: p.data.len() as u64,
                etag: p.etag.clone(),
                checksum: Some(p.checksum.clone()),
            })
            .collect())
    }

    fn endpoint_label(&self) -> String {
        "fake".into()
    }

    async fn object_attributes(
        &self,
        _obj: &ObjectUrl,
    ) -> Result<Option<super::ObjectAttributes>, S3Error> {
        Ok(None)
    }

    async fn head_object(
        &self,
        obj: &ObjectUrl,
        part_number: Option<u32>,
    ) -> Result<super::HeadInfo, S3Error> {
        let s = self.state.lock().unwrap();
        let (data, reply) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NotFound", 404))?;
        if part_number.is_some() {
            return Err(err("NotImplemented", 501));
        }
        let alg = ChecksumAlgorithm::Sha256;
        Ok(super::HeadInfo {
            size: data.len() as u64,
            etag: reply
                .etag
                .as_deref()
                .map(|e| e.trim_matches('"').to_owned()),
            checksum: reply.checksum.clone().map(|value| super::RemoteChecksum {
                algorithm: alg,
                kind: None,
                value,
            }),
            ..super::HeadInfo::default()
        })
    }

    async fn get_tags(
        &self,
        _obj: &ObjectUrl,
        _version: Option<&str>,
    ) -> Result<Vec<(String, String)>, S3Error> {
        Err(err("NotImplemented", 501))
    }

    async fn put_tags(
        &self,
        _obj: &ObjectUrl,
        _version: Option<&str>,
        _tags: &[(String, String)],
    ) -> Result<(), S3Error> {
        Err(err("NotImplemented", 501))
    }

    async fn get_range(
        &self,
        obj: &ObjectUrl,
        range: std::ops::Range<u64>,
        _if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        let s = self.state.lock().unwrap();
        let (data, _) = s
            .objects
            .get(&obj.key)
            .ok_or_else(|| err("NoSuchKey", 404))?;
        Ok(Bytes::copy_from_slice(
            &data[range.start as usize..range.end as usize],
        ))
    }
}
