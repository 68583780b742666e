//! The multipart session: the one API through which `tally upload` and `tally shard` drive a
//! multipart upload. Upload's stages behind it (`resume`, `send`, `complete`, `reconcile`) are
//! private to `upload`.
//!
//! - create ([`create`]) or begin/resume ([`Session::begin`], with its manifest) an upload id, or
//!   join one another process created ([`Session::join`]: the parts S3 already holds are checked
//!   against the file, not sent again);
//! - send the parts not yet done ([`Session::send`]): each hashed once, sent with its checksum for
//!   S3 to verify, the reply checked and journalled (when the session keeps a journal);
//! - complete ([`Session::complete`]): CompleteMultipartUpload until its outcome is known, and when
//!   it answers `InvalidPart` after this process sent a part twice, those parts sent once more and
//!   Complete retried (`reconcile.rs`); then the composite checked against the local one
//!   ([`check_object`]).
//!
//! Completing parts this process did not send (`tally shard finish`, which holds no bytes):
//! [`complete_listed`], the same Complete step without the reconcile, which needs the bytes of the
//! parts and the knowledge that they were sent twice (only the worker that sent them has both).

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::error::{Error, Outcome};
use crate::hash::{FileHasher, ObjectChecksum, WholeFile};
use crate::manifest::Journal;
use crate::plan::{Part, Plan};
use crate::s3::{CompletedPart, HeldPart, S3Api, WriteReply};
use crate::vocab::{ChecksumAlgorithm, ObjectSettings, ObjectUrl, PartHash};

use super::Run;
use super::resume::{self, Begun};
use super::{complete, reconcile, send};

use crate::compare::Check;

/// A part known to be in S3 and equal to the local bytes: what Complete and the report need.
#[derive(Debug, Clone)]
pub(crate) struct DonePart {
    /// Where it is in the file.
    pub part: Part,
    /// Its checksum (and MD5, when computed).
    pub hash: PartHash,
    /// The ETag S3 gave it.
    pub etag: crate::vocab::ETag,
    /// Whether S3 echoed its checksum back.
    pub checksum_echoed: bool,
    /// Whether this run sent it more than once (hedged, or retried by the SDK after a timeout):
    /// the server may hold a dropped copy too.
    pub sent_twice: bool,
}

/// One multipart upload as this process drives it: its id, its parts, the parts S3 already holds
/// equal to the local bytes, and where acknowledged parts are journalled. Begun by `tally upload`
/// ([`Session::begin`]: a fresh upload, or one found in a manifest and confirmed by ListParts) or
/// joined by a `tally shard run` worker ([`Session::join`]).
pub(crate) struct Session {
    /// The upload id.
    pub upload_id: String,
    /// The manifest's journal, appended to as parts are acknowledged; `None` when S3's ListParts
    /// is the only record (`tally shard run`: every worker of a shared upload asks S3).
    pub journal: Option<Arc<Journal>>,
    /// The checksum algorithm of the upload (the manifest's, when resuming).
    pub alg: crate::vocab::ChecksumAlgorithm,
    /// The parts (the manifest's part size, when resuming).
    pub plan: Plan,
    /// Parts S3 already holds, equal to the local bytes.
    pub done: Vec<DonePart>,
    /// Whether this resumes an interrupted upload.
    pub resumed: bool,
    /// The manifest's path.
    pub manifest: PathBuf,
    /// The part numbers this run sends: all of the plan's for `tally upload`, one slice of them
    /// for `tally shard run` (other workers send the rest).
    pub slice: RangeInclusive<u32>,
}

impl Session {
    /// The plan's parts within [`Session::slice`], in order.
    pub(crate) fn parts(&self) -> impl Iterator<Item = Part> + use<> {
        let slice = self.slice.clone();
        self.plan.parts().filter(move |p| slice.contains(&p.number))
    }
}

impl Session {
    /// Begins `tally upload`'s session whose manifest is (or will be) `manifest_path`: resumes
    /// the upload the manifest names (after checking the file and asking S3 what it holds), or
    /// creates a new one and its manifest; or says the file goes in one PutObject, or that an
    /// earlier run completed it.
    pub(crate) async fn begin<C: S3Api>(
        run: &Run<'_, C>,
        manifest_path: &Path,
    ) -> Result<Begun, Error> {
        resume::begin(run, manifest_path).await
    }

    /// Joins upload `upload_id`, created by another process, to send the `slice` of `plan`'s
    /// parts: those S3 already `held` (its ListParts) with this file's checksums are done (re-hashed
    /// from the file, kept only when S3's checksum is the local one), the others are to send. No
    /// journal: S3's ListParts is the one record.
    pub(crate) async fn join<C: S3Api>(
        run: &Run<'_, C>,
        upload_id: &str,
        plan: Plan,
        alg: ChecksumAlgorithm,
        slice: RangeInclusive<u32>,
        held: &[HeldPart],
    ) -> Result<Session, Error> {
        let parts: Vec<Part> = plan.parts().filter(|p| slice.contains(&p.number)).collect();
        let done = resume::reconcile(run, parts, alg, &[], held, None).await?;
        Ok(Session {
            upload_id: upload_id.to_owned(),
            journal: None,
            alg,
            plan,
            resumed: !done.is_empty(),
            done,
            manifest: PathBuf::new(),
            slice,
        })
    }

    /// Sends the parts of [`Session::parts`] not yet done through the engine's pipeline (see
    /// `send.rs`), each checked and journalled before it counts; `whole`, if any, hashes the whole
    /// file in the same read. The parts sent, and the whole file's digests.
    pub(crate) async fn send<C: S3Api>(
        &self,
        run: &Run<'_, C>,
        first_send: &OnceLock<Instant>,
        whole: Option<FileHasher>,
    ) -> Result<(Vec<DonePart>, Option<WholeFile>), Error> {
        send::parts(run, self, first_send, whole).await
    }

    /// Completes the session with `done` (every part, in order): CompleteMultipartUpload until its
    /// outcome is known, reconciled when the server kept a dropped copy of a part sent twice (the
    /// parts sent twice go once more, `done` is updated with any ETag that changed, and Complete is
    /// sent again). The object checksum `done` makes, and Complete's reply.
    pub(crate) async fn complete<C: S3Api>(
        &self,
        run: &Run<'_, C>,
        done: &mut [DonePart],
    ) -> Result<(ObjectChecksum, WriteReply), Error> {
        let local = complete::local_checksum(self.alg, done);
        let reply = reconcile::complete(run, self, done, &local).await?;
        Ok((local, reply))
    }

    /// Sends each part of `done` that went out twice once more, side by side, so that the newest
    /// copy the server holds of it is a whole one: for a process that sends parts but does not
    /// complete (a shard worker), whose finisher cannot know which parts went twice nor read
    /// their bytes (see `reconcile.rs`). On AWS S3 this only costs the bytes: a dropped request
    /// stores nothing there. How many parts were sent again.
    pub(crate) async fn settle<C: S3Api>(
        &self,
        run: &Run<'_, C>,
        done: &mut [DonePart],
    ) -> Result<usize, Error> {
        reconcile::send_twice_sent_again(run, self, done).await
    }
}

/// Creates a multipart upload of `target` with `alg`'s checksums (composite or full-object, as
/// `alg` goes) and `settings`: its id. A server refusing one of the recent algorithms says so in
/// one line ([`Error::ChecksumRefused`]).
pub(crate) async fn create<C: S3Api>(
    s3: &C,
    target: &ObjectUrl,
    alg: ChecksumAlgorithm,
    settings: &ObjectSettings,
) -> Result<String, Error> {
    let upload_id = crate::s3::create_upload(s3, target, alg, alg.multipart_type(), settings)
        .await
        .map_err(|e| resume::create_refused(alg, e))?;
    tracing::info!(upload_id = %upload_id, "created multipart upload");
    Ok(upload_id)
}

/// CompleteMultipartUpload of parts this process did not send (their ETags and checksums as
/// ListParts gave them), sent until its outcome is known; with `if_absent`, only if no object is
/// at the key. No reconcile: see the module's doc.
pub(crate) async fn complete_listed<C: S3Api>(
    s3: &C,
    target: &ObjectUrl,
    upload_id: &str,
    alg: ChecksumAlgorithm,
    parts: &[CompletedPart],
    local: &ObjectChecksum,
    if_absent: bool,
) -> Result<WriteReply, Error> {
    complete::confirmed(s3, target, upload_id, alg, parts, local, if_absent).await
}

/// The composite check: S3's object checksum (Complete's reply) against the `local` one computed
/// from the parts' checksums. A mismatch is an error; a server that reports none is said so.
pub(crate) fn check_object(
    local: &ObjectChecksum,
    reply: &WriteReply,
    upload_id: &str,
) -> Result<Check, Error> {
    super::report::compare_checksum(
        "object checksum",
        &local.value,
        reply.checksum.as_deref(),
        Some(upload_id),
    )
}

/// Aborts `upload_id` after `cause` stopped it, and says in the error whether that worked.
pub(crate) async fn abort<C: S3Api>(
    s3: &C,
    target: &ObjectUrl,
    upload_id: String,
    cause: Error,
) -> Error {
    let outcome = match s3.abort_multipart(target, &upload_id).await {
        Ok(()) => Outcome::Aborted,
        Err(e) => Outcome::AbortFailed(e),
    };
    stopped(target, &upload_id, outcome, cause)
}

/// The error for upload `upload_id` of `target` stopped by `cause`, saying what became of it.
pub(crate) fn stopped(
    target: &ObjectUrl,
    upload_id: &str,
    outcome: Outcome,
    cause: Error,
) -> Error {
    Error::UploadFailed {
        source: Box::new(cause),
        bucket: target.bucket.clone(),
        key: target.key.clone(),
        upload_id: upload_id.to_owned(),
        outcome: Box::new(outcome),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UploadConfig;
    use crate::engine::{Engine, Limits};
    use crate::progress::Silent;
    use crate::s3::MultipartWrite as _;
    use crate::s3::fake::FakeS3;
    use crate::vocab::MIB;
    use tokio_util::sync::CancellationToken;

    /// Sends a three-part file through a new session; then the server holds a later copy of part
    /// 2 with other bytes (what a dropped request's bytes landing late leave on Garage), so
    /// CompleteMultipartUpload answers InvalidPart. Part 2 marked sent twice or not, `Session::complete`'s outcome.
    async fn complete_after_a_late_copy(
        part_2_sent_twice: bool,
    ) -> (FakeS3, Vec<u8>, Result<(), Error>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("src.bin");
        let bytes: Vec<u8> = (0..3 * 5 * MIB - 7).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &bytes).unwrap();
        let alg = ChecksumAlgorithm::Sha256;
        let cfg = UploadConfig::new(file, "s3://bkt/obj", 5 * MIB, 2, alg).unwrap();
        let fake = FakeS3::default();
        let engine = Engine::new(Limits::for_parts(2, 5 * MIB));
        let cancel = CancellationToken::new();
        let run = Run::open(&fake, &engine, &cfg, &Silent, &cancel, None)
            .await
            .unwrap();
        let upload_id = create(&fake, &cfg.target, alg, &ObjectSettings::default())
            .await
            .unwrap();
        let plan = Plan::new(run.src.len(), 5 * MIB).unwrap();
        let session = Session {
            upload_id: upload_id.clone(),
            journal: None,
            alg,
            slice: 1..=plan.count(),
            plan,
            done: Vec::new(),
            resumed: false,
            manifest: PathBuf::new(),
        };
        let (mut done, _) = session.send(&run, &OnceLock::new(), None).await.unwrap();
        done.sort_by_key(|d| d.part.number);
        assert_eq!(done.len(), 3);
        let late = bytes::Bytes::from(vec![0u8; 5 * MIB as usize]);
        let late_hash = crate::hash::hash_part(alg, true, &late);
        fake.upload_part(&cfg.target, &upload_id, 2, alg, late, &late_hash)
            .await
            .unwrap();
        done[1].sent_twice = part_2_sent_twice;
        let completed = session.complete(&run, &mut done).await;
        let outcome = completed.map(|(local, reply)| {
            assert_eq!(reply.checksum.as_deref(), Some(local.value.as_str()));
        });
        (fake, bytes, outcome)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn complete_sends_a_part_sent_twice_once_more_when_the_server_kept_another_copy() {
        let (fake, bytes, outcome) = complete_after_a_late_copy(true).await;
        outcome.unwrap();
        assert_eq!(
            fake.part_uploads(),
            3 + 1 + 1,
            "three parts, the late copy, part 2 again"
        );
        assert_eq!(fake.completes(), 1);
        assert_eq!(
            fake.object("obj").as_deref(),
            Some(&bytes[..]),
            "the file, not the late copy"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn complete_sends_nothing_again_when_no_part_was_sent_twice() {
        let (fake, _, outcome) = complete_after_a_late_copy(false).await;
        let e = outcome.expect_err("InvalidPart stands");
        assert!(e.to_string().contains("InvalidPart"), "{e}");
        assert_eq!(fake.part_uploads(), 3 + 1, "nothing sent again");
        assert_eq!(fake.completes(), 0);
        assert_eq!(fake.object("obj"), None);
    }
}
