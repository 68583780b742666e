//! `tally upload`: one file, or every file of a folder; and how its report reads.

use super::job::{Refused, Run};
use super::output::{human_bytes, print_file_hashes};
use crate::batch::upload::TreeConfig;
use crate::cli::UploadArgs;
use crate::config::UploadConfig;
use crate::error::{EXIT_ERROR, EXIT_OK, Error};
use crate::upload::{self, Check, Method, UploadReport};

/// A validated `tally upload`.
pub(crate) enum Job {
    /// One file (`force`: sent even when the object is already proven to be it).
    File { cfg: UploadConfig, force: bool },
    /// Every file of a folder.
    Tree(TreeConfig),
    /// `--dryrun` of one file: what the upload would do, reported as a tree of one.
    PlanFile(UploadConfig),
    /// `--dryrun` of a folder.
    PlanTree(TreeConfig),
}

/// `tally upload FILE|DIR s3://...`'s flags checked.
pub(crate) fn job(args: &UploadArgs) -> Result<Job, Refused> {
    if args.file.is_dir() {
        if args.dryrun && args.mhl {
            return Err(Refused::tree(Error::Usage(
                "--dryrun writes nothing, so no ASC MHL generation either: leave --mhl out".into(),
            )));
        }
        let cfg = tree_config(args).map_err(Refused::tree)?;
        return Ok(if args.dryrun {
            Job::PlanTree(cfg)
        } else {
            Job::Tree(cfg)
        });
    }
    if args.dryrun {
        return args.to_config().map(Job::PlanFile).map_err(Refused::tree);
    }
    if args.mhl {
        return Err(Error::Usage(format!(
            "--mhl writes an ASC MHL generation for a directory; {} is not one: upload its folder",
            args.file.display()
        ))
        .into());
    }
    if args.tree.any() {
        return Err(Error::Usage(format!(
            "--include, --exclude and --no-follow-symlinks need a directory; {} is not one",
            args.file.display()
        ))
        .into());
    }
    Ok(Job::File {
        cfg: args.to_config()?,
        force: args.force,
    })
}

/// Runs a `tally upload`.
pub(crate) fn run(job: Job, run: &Run) -> i32 {
    match job {
        Job::File { cfg, force } => upload_file(&cfg, force, run),
        Job::Tree(cfg) => run.runtime.block_on(upload_tree(&cfg, run)),
        Job::PlanFile(cfg) => run.runtime.block_on(super::dryrun::upload_file(&cfg, run)),
        Job::PlanTree(cfg) => run.runtime.block_on(super::dryrun::upload(&cfg, run)),
    }
}

/// `tally upload FILE s3://...`.
fn upload_file(cfg: &UploadConfig, force: bool, run: &Run) -> i32 {
    let out = run.out;
    let progress = out.progress();
    let one = upload::one::upload_one(run.s3, cfg, force, progress.as_ref(), run.cancel);
    let result = match run.runtime.block_on(one) {
        Ok(upload::one::One::Skipped(s)) => return out.finish(Ok((s.text(), s))),
        Ok(upload::one::One::Uploaded(r)) => Ok(*r),
        Err(e) => Err(e),
    };
    let code = match &result {
        Ok(r) if r.md5_tag_error.is_some() || r.file_hash_tag_error.is_some() => EXIT_ERROR,
        _ => EXIT_OK,
    };
    if let Ok(r) = &result {
        for e in [&r.md5_tag_error, &r.file_hash_tag_error]
            .into_iter()
            .flatten()
        {
            eprintln!("tally: error: the upload succeeded, but {e}");
        }
    }
    out.finish(result.map(|r| (print_upload(&r), Proven::of(r))))
        .max(code)
}

/// The report with what proved it (`proof` in `--json` and `--report`).
#[derive(serde::Serialize)]
struct Proven {
    #[serde(flatten)]
    report: UploadReport,
    proof: String,
}

impl Proven {
    fn of(report: UploadReport) -> Proven {
        let proof = crate::upload::proof::proof_text(&report);
        Proven { report, proof }
    }
}

/// `tally upload DIR s3://BUCKET/PREFIX/`: one line per file as it finishes (`--json`), failures
/// and warnings on standard error as they happen, the grouped summary at the end.
async fn upload_tree(cfg: &TreeConfig, run: &Run<'_>) -> i32 {
    let progress = run.out.progress();
    let on_line = run.out.tree_lines();
    let result =
        crate::batch::upload::upload_tree(run.s3, cfg, progress.as_ref(), run.cancel, &on_line)
            .await;
    run.out.finish_tree(
        result,
        "every file is in S3 and proven",
        "nothing to upload: no files under the directory",
    )
}

/// The tree upload's settings from the command line.
fn tree_config(args: &UploadArgs) -> Result<TreeConfig, Error> {
    if args.manifest.is_some() {
        return Err(Error::Usage(
            "--manifest names one file's manifest; a directory's manifests go to the state directory (TALLY_STATE_DIR): leave --manifest out"
                .into(),
        ));
    }
    if args.force {
        return Err(Error::Usage(
            "--force sends one file again; a directory's files proven identical are always skipped: upload the file itself with --force".into(),
        ));
    }
    let prefix = super::prefix_url(&args.target)?;
    let mut base = args.to_config()?;
    base.target = prefix.clone();
    Ok(TreeConfig {
        root: args.file.clone(),
        walk: crate::tree::WalkOptions {
            key_prefix_len: prefix.key.len(),
            ..args.tree.walk_options()?
        },
        prefix,
        base,
        mhl: args.mhl,
        small_by_places: args.concurrency.is_none(),
    })
}

fn print_upload(r: &UploadReport) -> String {
    let mut s = format!(
        "uploaded {} to {} in {:.2} s ({:.1} MiB/s)\n",
        human_bytes(r.size),
        crate::printable::url(&r.bucket, &r.key),
        r.seconds,
        r.mib_per_s
    );
    s += &print_method(r);
    s += &format!(
        "  checksum  {} {} ({}): {}\n",
        r.checksum.algorithm,
        r.checksum.value,
        r.checksum.kind,
        check(r.checks.object_checksum)
    );
    s += &print_object_settings(&r.object);
    match &r.etag {
        Some(e) => s += &format!("  etag      {e}: {}\n", check(r.checks.etag)),
        None => {
            s += "  etag      not computed (no MD5 asked for; --content-md5 adds it): the checksums are the proof\n"
        }
    }
    s += &print_read_back(r);
    if let (Some(md5), Some((name, outcome))) = (&r.md5, &r.md5_tag) {
        s += &format!("  md5 tag   {name}={md5}: {outcome:?}\n");
    }
    s += &print_file_hashes(&r.file_hashes);
    for (name, outcome) in &r.file_hash_tags {
        s += &format!("  tag       {name}: {outcome:?}\n");
    }
    s
}

/// One check's outcome in words.
fn check(c: Check) -> &'static str {
    match c {
        Check::Matched => "matches S3",
        Check::NotReported => "not verified by the server (its reply did not carry it)",
        Check::NotComparableKms => "not compared: under SSE-KMS the ETag is not an MD5",
        Check::NotComparableSseC => "not compared: under SSE-C the ETag is not an MD5",
        Check::NotPredicted => "not computed (no MD5 asked for; --content-md5 adds it)",
        Check::Mismatch => "DIFFERS from S3",
    }
}

/// How the bytes went: the parts (and resume, manifest) of a multipart upload, or the one PUT
/// and whether S3 echoed its checksum.
fn print_method(r: &UploadReport) -> String {
    if r.method != Method::Multipart {
        return if r.checks.object_checksum == Check::Matched {
            format!(
                "  single PUT with Content-MD5 and {} (S3 echoed the checksum: verified on receipt)\n",
                r.checksum.algorithm
            )
        } else {
            format!(
                "  single PUT with Content-MD5 and {}: the {} checksum was not verified by the server (its reply did not carry it)\n",
                r.checksum.algorithm, r.checksum.algorithm
            )
        };
    }
    let mut s = format!(
        "  parts     {} x {}, {} per part, {} echoed back equal by S3{}\n",
        r.parts,
        human_bytes(r.part_size),
        r.checksum.algorithm,
        r.checks.part_checksums_matched,
        match r.parts - r.checks.part_checksums_matched.min(r.parts) {
            0 => String::new(),
            n => format!(" ({n} not verified by the server: not echoed)"),
        }
    );
    if let Some(u) = &r.upload_id {
        s += &format!("  upload id {u}\n");
    }
    if r.resumed {
        s += &format!(
            "  resumed   {} parts were already in S3, {} sent now\n",
            r.parts_skipped, r.parts_sent
        );
    }
    if let Some(m) = &r.manifest {
        s += &format!("  manifest  {} (kept)\n", crate::printable::path(m));
    }
    s
}

/// What reading the object back after the upload confirmed, or that it was not done.
fn print_read_back(r: &UploadReport) -> String {
    let mut s = match &r.verified {
        Some(v) => {
            let said = |m: Option<bool>| match m {
                Some(true) => "matches",
                Some(false) => "DIFFERS",
                None => "not compared (the server reports none to compare)",
            };
            let parts = if v.parts_compared == 0 {
                "no per-part checksums listed by the server".to_owned()
            } else {
                format!("{} parts compared one by one", v.parts_compared)
            };
            let mut s = format!(
                "  read back with {}: checksum {}, ETag {}, {parts}\n",
                v.method,
                said(v.checksum_matches),
                check(v.etag),
            );
            if let Some(note) = &v.checksum_note {
                s += &format!("            {note}\n");
            }
            s
        }
        None => "  read back not done (--no-verify)\n".to_owned(),
    };
    if let Some(n) = r.read_back_reads {
        s += &format!("  read back the object's MD5 equals the file's (after {n} read(s))\n");
    }
    s
}

/// The object settings sent, each with what S3 reported back (HEAD after the upload, or the
/// write's reply for the encryption), never claimed when S3 said nothing.
fn print_object_settings(o: &crate::upload::report::ObjectReport) -> String {
    let said = |requested: Option<String>, reported: Option<String>, unset: &str| match (
        requested, reported,
    ) {
        (Some(r), Some(x)) if r == x => format!("{r} (S3 reports it)"),
        (Some(r), Some(x)) => format!("{r} requested, but S3 reports {x}"),
        (Some(r), None) => format!("{r} requested, not reported back by the server"),
        (None, Some(x)) => format!("{x} (S3 reports it; none requested)"),
        (None, None) => unset.to_owned(),
    };
    let class = said(
        o.storage_class_requested.map(|c| c.to_string()),
        o.storage_class_reported.clone(),
        "the bucket's default",
    );
    let ctype = said(
        o.content_type_requested.clone(),
        o.content_type_reported.clone(),
        "none",
    );
    let count = |requested: usize, reported: Option<usize>| match reported {
        Some(n) if n == requested => format!("{n} (S3 reports {n})"),
        Some(n) => format!("{requested} requested, but S3 reports {n}"),
        None => format!("{requested} requested, not reported back by the server"),
    };
    let mut s = format!("  storage   {class}\n  type      {ctype}\n");
    if o.metadata_requested > 0 || o.metadata_reported.is_some_and(|n| n > 0) {
        s += &format!(
            "  metadata  {}\n",
            count(o.metadata_requested, o.metadata_reported)
        );
    }
    if o.tags_requested > 0 {
        s += &format!(
            "  tags      {}\n",
            count(o.tags_requested, o.tags_reported.map(|n| n as usize))
        );
    }
    if o.sse_requested.is_some() || o.sse_reported.is_some() {
        let sse = said(o.sse_requested.clone(), o.sse_reported.clone(), "none");
        s += &format!("  sse       {sse}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(extra: &[&str]) -> TreeConfig {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().display().to_string();
        let mut argv = vec!["tally", "upload", &src, "s3://bkt/p/"];
        argv.extend_from_slice(extra);
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
        let crate::cli::Command::Upload(args) = cli.command else {
            panic!("not an upload")
        };
        tree_config(&args).unwrap()
    }

    #[test]
    fn small_files_go_by_places_only_when_concurrency_is_left_out() {
        let default = tree(&[]);
        assert_eq!(default.base.concurrency, crate::config::DEFAULT_CONCURRENCY);
        assert!(default.small_by_places);
        let given = tree(&["--concurrency", "64"]);
        assert_eq!(given.base.concurrency, 64);
        assert!(!given.small_by_places, "a number given caps every request");
    }
}
