//! `tally shard`: one object uploaded by many machines, under the scheduler a studio already runs.
//!
//! S3 lets any client holding a multipart upload's id send parts of it, so N workers can each send
//! a contiguous slice of the parts and one job completes it. The stages:
//!
//! - [`plan`]: `tally shard plan` creates the upload (part size and checksum as `tally upload`
//!   chooses them) and writes the PLAN document ([`ShardPlan`]) to a shared path or to S3;
//! - [`slice`]: which worker a process is (`--index`, or the scheduler's variables), and which
//!   parts that worker sends;
//! - [`run`]: `tally shard run` sends one slice through the upload's own engine, checks and
//!   resume (the parts S3 already holds with this file's checksums are not sent again);
//! - [`finish`]: `tally shard finish` asks S3 for every part, completes with every part's
//!   checksum (only if the key is free, unless the plan says `--replace`) and verifies the
//!   object as `tally upload` does.
//!
//! No worker keeps a journal: S3's ListParts is the one record every worker and the finisher
//! read, so a worker restarted on another machine knows what an earlier one sent.

pub(crate) mod finish;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod slice;

pub(crate) use finish::finish;
pub(crate) use plan::{PlanAt, ShardPlan};
pub(crate) use run::run;
pub(crate) use slice::{Assigned, assigned};

use std::path::PathBuf;

impl crate::error::DomainError for ShardError {
    /// The exit code: a slice stopped by an integrity failure is one (1); everything else 2.
    fn exit_code(&self) -> i32 {
        match self {
            ShardError::SliceStopped { source, .. } => source.exit_code(),
            _ => crate::error::EXIT_ERROR,
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// Why a `tally shard` command refused or stopped; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShardError {
    /// Neither `--index` nor a scheduler's variable says which slice this worker sends.
    #[error(
        "no shard index: pass --index I (0 to {last}), or run under an AWS Batch array job (AWS_BATCH_JOB_ARRAY_INDEX), a Kubernetes Indexed Job (JOB_COMPLETION_INDEX) or a Slurm array (SLURM_ARRAY_TASK_ID)"
    )]
    NoIndex {
        /// The plan's last index.
        last: u32,
    },
    /// A scheduler variable that is not a number.
    #[error("{var}={value} is not a whole number: is this a task of an array job?")]
    BadVariable {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The scheduler runs another number of workers than the plan has slices.
    #[error(
        "{from} says the array has {count} tasks, but the plan has {shards} shards: nothing was sent: run the array with {shards} tasks, or plan again with --shards {count}"
    )]
    CountMismatch {
        /// Which variable said so.
        from: &'static str,
        /// The scheduler's count.
        count: u64,
        /// The plan's.
        shards: u32,
    },
    /// An index outside the plan's slices.
    #[error(
        "shard index {index} (from {from}) is outside the plan's 0 to {last}: nothing was sent: index the array from 0 (e.g. sbatch --array=0-{last})"
    )]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// Where it came from.
        from: &'static str,
        /// The plan's last index.
        last: u32,
    },
    /// The local file is not the one the plan was made from.
    #[error(
        "{}: {why}: it is not the file planned: nothing was sent: give every worker the planned file (--file PATH), or plan again",
        path.display()
    )]
    FileDiffers {
        /// The file given to this worker.
        path: PathBuf,
        /// What differs.
        why: String,
    },
    /// The plan was made against another endpoint.
    #[error(
        "the plan is for endpoint {planned}, but this command connects to {here}: pass the plan's --endpoint-url (or AWS_ENDPOINT_URL)"
    )]
    OtherEndpoint {
        /// The plan's endpoint label.
        planned: String,
        /// This command's.
        here: String,
    },
    /// PLAN cannot be read, written or understood.
    #[error("plan {plan}: {why}")]
    Plan {
        /// Where the plan is.
        plan: String,
        /// Why, and what to do.
        why: String,
    },
    /// PLAN exists already: writing over it would orphan the upload it names.
    #[error(
        "plan {plan} already exists (upload {upload_id} of s3://{bucket}/{key}): nothing was created: finish that upload (tally shard finish {plan}) or abort it (tally abort s3://{bucket}/{key} --upload-id {upload_id}) and remove the plan, or choose another --plan"
    )]
    PlanExists {
        /// Where the plan is.
        plan: String,
        /// The upload it names.
        upload_id: String,
        /// Its bucket.
        bucket: String,
        /// Its key.
        key: String,
    },
    /// The plan was written to S3 but never read back as written.
    #[error(
        "plan {plan}: written, but reading it back did not return what was written within {seconds} s"
    )]
    PlanNotReadBack {
        /// Where the plan is.
        plan: String,
        /// How long tally tried.
        seconds: u64,
    },
    /// The plan's upload no longer exists.
    #[error(
        "upload {upload_id} of s3://{bucket}/{key} no longer exists (completed by an earlier finish, aborted, or expired by a lifecycle rule): if the object is there, `tally verify FILE s3://{bucket}/{key}` proves it; else plan again"
    )]
    UploadGone {
        /// The upload.
        upload_id: String,
        /// Its bucket.
        bucket: String,
        /// Its key.
        key: String,
    },
    /// `finish` found parts that are not in S3 (or not as a worker sends them).
    #[error(
        "{missing} of {parts} parts are not in S3 as planned ({detail}): nothing was completed, upload {upload_id} is kept: run slice{} {slices} again (tally shard run PLAN --index I), then finish again",
        if slices.contains(',') { "s" } else { "" }
    )]
    Incomplete {
        /// Parts missing or unusable.
        missing: usize,
        /// The plan's parts.
        parts: u32,
        /// The first few, with why.
        detail: String,
        /// The slices to run again, e.g. "1, 3".
        slices: String,
        /// The upload, kept.
        upload_id: String,
    },
    /// A worker stopped before its slice was in S3; the upload is kept.
    #[error(
        "{source}; slice {index} stopped, upload {upload_id} is kept: run the same command again (the parts S3 already holds are checked, not sent again)"
    )]
    SliceStopped {
        /// The slice.
        index: u32,
        /// The upload.
        upload_id: String,
        /// What stopped it.
        source: Box<crate::error::Error>,
    },
    /// An object exists at the key and the plan does not allow replacing it.
    #[error(
        "s3://{bucket}/{key} already exists, and the plan does not replace objects: {consequence}: remove the object first, or plan with --replace"
    )]
    ObjectExists {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// What was (not) done.
        consequence: String,
    },
}
