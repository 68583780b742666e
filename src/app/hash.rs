//! `tally hash`: offline, the checksums and ETag an upload would produce, for a file or a folder.

use std::path::PathBuf;

use super::output::{Output, human_bytes, print_file_hashes, say};
use crate::cli::{HashArgs, TreeArgs};
use crate::error::{EXIT_ERROR, EXIT_OK, Error};
use crate::hash::FileHashFormat;
use crate::hashfile::{self, HashReport, TreeLine, TreeSummary};
use crate::tree::{self, Grouper, Item, Sequence, WalkOptions};
use crate::vocab::ChecksumAlgorithm;

/// A validated `tally hash`: what to hash, and how an upload with these settings would.
pub(crate) struct Job {
    path: PathBuf,
    /// A directory's walk; `None`: one file.
    walk: Option<WalkOptions>,
    part_size: u64,
    checksum: ChecksumAlgorithm,
    formats: Vec<FileHashFormat>,
}

/// `tally hash FILE|DIR`'s flags checked.
pub(crate) fn job(args: &HashArgs) -> Result<Job, Error> {
    crate::config::check_part_size(args.part_size)?;
    let walk = if args.path.is_dir() {
        Some(args.tree.walk_options()?)
    } else if args.tree != TreeArgs::default() {
        return Err(Error::Usage(format!(
            "--include, --exclude and --no-follow-symlinks apply to directories, and {} is not one",
            args.path.display()
        )));
    } else {
        None
    };
    Ok(Job {
        path: args.path.clone(),
        walk,
        part_size: args.part_size,
        checksum: args.checksum,
        formats: args.file_hash.clone().unwrap_or_default(),
    })
}

/// `tally hash FILE|DIR`.
pub(crate) fn run(job: Job, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    if let Some(walk) = job.walk.clone() {
        return hash_dir(&job, walk, out, runtime);
    }
    let result = hashfile::hash_file_shown(
        &job.path,
        job.part_size,
        job.checksum,
        &job.formats,
        out.progress().as_ref(),
    );
    out.finish(result.map(|r| (print_hash(&r), r)))
}

fn print_hash(r: &HashReport) -> String {
    let mut s = format!(
        "{}  {}\n  md5       {}\n  parts     {} x {} ({})\n",
        crate::printable::one_line(&r.file),
        human_bytes(r.size),
        r.md5,
        r.parts.len(),
        human_bytes(r.part_size),
        r.method
    );
    for p in &r.parts {
        s += &format!(
            "  part {:>5}  {}..{}  {}  md5 {}\n",
            p.number,
            p.offset,
            p.offset + p.len,
            p.checksum,
            p.md5
        );
    }
    s += &format!(
        "  checksum  {} {} ({})\n  etag      {}\n",
        r.checksum.algorithm, r.checksum.value, r.checksum.kind, r.etag
    );
    s += &print_file_hashes(&r.file_hashes);
    s
}

/// Sequences listed in a summary at most (each is one line; the rest are counted).
const MAX_SEQUENCE_LINES: usize = 1000;

/// The sequences of a summary: numbered frames grouped as they stream past.
struct Sequences {
    grouper: Grouper<&'static str>,
    kept: Vec<Sequence<&'static str>>,
    more: u64,
}

impl Sequences {
    fn push(&mut self, rel: &str, size: u64, label: &'static str) {
        let closed = self.grouper.push(rel, size, label);
        self.add(closed);
    }

    fn add(&mut self, items: Vec<Item<&'static str>>) {
        for item in items {
            if let Item::Sequence(s) = item {
                if self.kept.len() < MAX_SEQUENCE_LINES {
                    self.kept.push(s);
                } else {
                    self.more += 1;
                }
            }
        }
    }
}

/// `tally hash DIR`: a line per file in S3 key order as soon as it and those before it are hashed
/// (text on stdout; skipped entries on stderr), then a summary with the sequences; exit 2 if any
/// entry could not be hashed.
fn hash_dir(job: &Job, walk: WalkOptions, out: &Output, runtime: &tokio::runtime::Runtime) -> i32 {
    let walk = match tree::walk(&job.path, walk) {
        Ok(w) => w,
        Err(e) => return out.finish::<()>(Err(e)),
    };
    let mut seq = Sequences {
        grouper: Grouper::new(),
        kept: Vec::new(),
        more: 0,
    };
    let mut ignored = 0;
    let summary = runtime.block_on(hashfile::hash_tree(
        &job.path,
        walk,
        job.part_size,
        job.checksum,
        &job.formats,
        |line| {
            print_tree_line(out, line);
            if let TreeLine::Skipped { failure: false, .. } = line {
                ignored += 1;
            }
            if out.json {
                return;
            }
            match line {
                TreeLine::Hashed { path, report } => {
                    seq.push(path, report.size, "hashed");
                }
                TreeLine::Failed { path, .. } => seq.push(path, 0, "failed"),
                TreeLine::Skipped { .. } | TreeLine::Summary(_) => {}
            }
        },
    ));
    let rest = seq.grouper.finish();
    seq.add(rest);
    let dir = crate::printable::path(&job.path);
    if out.json {
        out.emit(&super::json::hash_summary(&out.job, &summary, ignored));
    } else if !out.quiet {
        print!(
            "{}",
            crate::redact::redact(&print_summary(&summary, seq, &dir))
        );
    }
    if summary.failed > 0 {
        let n = summary.failed;
        let entries = if n == 1 { "entry" } else { "entries" };
        eprintln!("tally: error: {n} {entries} of {dir} could not be hashed (each is named above)");
        EXIT_ERROR
    } else {
        EXIT_OK
    }
}

/// The text summary of `tally hash DIR`: how many files, what was skipped or failed, and the
/// sequences.
fn print_summary(summary: &TreeSummary, seq: Sequences, dir: &str) -> String {
    let mut s = if summary.files == 0 && summary.skipped == 0 {
        format!("nothing to hash: {dir} holds no files\n")
    } else {
        format!(
            "hashed {} files, {} in {:.2} s",
            tree::sequence::thousands(summary.files),
            tree::sequence::size_text(summary.bytes),
            summary.seconds
        )
    };
    if summary.skipped > 0 || summary.failed > 0 {
        s += &format!(
            "; {} skipped, {} failed (named above)",
            summary.skipped, summary.failed
        );
    }
    if !s.ends_with('\n') {
        s.push('\n');
    }
    if !seq.kept.is_empty() {
        s += "sequences:\n";
        for q in seq.kept {
            s += &format!(
                "  {}\n",
                crate::printable::one_line(&Item::Sequence(q).to_string())
            );
        }
        if seq.more > 0 {
            s += &format!("  and {} more sequences\n", seq.more);
        }
    }
    s
}

fn print_tree_line(out: &Output, line: &TreeLine) {
    use crate::redact::redact;
    if out.json {
        out.emit(&super::json::hash_line(&out.job, line));
    }
    match line {
        TreeLine::Hashed { path, report } if !out.json && !out.quiet => {
            let c = &report.checksum;
            say(&redact(&format!(
                "{}  {}  {} {} ({})  etag {}{}",
                crate::printable::one_line(path),
                tree::sequence::size_text(report.size),
                c.algorithm,
                c.value,
                c.kind,
                report.etag,
                report
                    .file_hashes
                    .iter()
                    .map(|(f, v)| format!("  {f} {v}"))
                    .collect::<String>()
            )));
        }
        TreeLine::Skipped {
            path,
            reason,
            failure,
            ..
        } => {
            if *failure {
                eprintln!("tally: error: {}", redact(&format!("{path}: {reason}")));
            } else if !out.json && !out.quiet {
                eprintln!("tally: warning: {}", redact(&format!("{path}: {reason}")));
            }
        }
        TreeLine::Failed { reason, .. } => eprintln!("tally: error: {}", redact(reason)),
        _ => {}
    }
}
