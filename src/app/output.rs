//! The one printer every command renders through: where reports go (text, or JSON with
//! `--json`), progress on standard error, errors as one line, and the runtime plumbing the
//! commands share (logging, running on the workers).

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};

use crate::batch::report::{Action, FileLine, TreeReport};
use crate::cli::OutputArgs;
use crate::error::{EXIT_ERROR, EXIT_OK, Error};
use crate::progress::{Bar, Notes, Progress, Silent};

use super::json::{self, Job};
use super::report_html::HtmlReport;

pub(crate) struct Output {
    pub(crate) json: bool,
    pub(crate) quiet: bool,
    /// What the records are about (`--json`: docs/json.md).
    pub(crate) job: Job,
    /// A tree's entries counted as their lines go out: the totals of a run that ends in an error.
    done: Arc<Mutex<TreeReport>>,
    /// The HTML report being written (`--report`).
    report: Arc<Mutex<Option<HtmlReport>>>,
}

impl Output {
    pub(crate) fn new(args: &OutputArgs, job: Job) -> Output {
        Output {
            json: args.json,
            quiet: args.quiet,
            job,
            done: Arc::default(),
            report: Arc::default(),
        }
    }

    /// Writes an HTML report to `path` too (`--report`); fails at once when it cannot be written.
    pub(crate) fn with_report(
        &self,
        path: &std::path::Path,
        endpoint: String,
    ) -> Result<(), Error> {
        *self.report.lock().expect("report") = Some(HtmlReport::create(path, endpoint)?);
        Ok(())
    }

    /// The run's last record: printed with `--json`, and the end of the HTML report (`single`:
    /// the record is also the report's one file). Returns an exit code for a report that could
    /// not be written.
    fn last_record(&self, rec: &serde_json::Value, single: bool) -> i32 {
        if self.json {
            self.emit(rec);
        }
        let Some(mut report) = self.report.lock().expect("report").take() else {
            return EXIT_OK;
        };
        if single {
            report.add(rec);
        }
        match report.finish(&self.job, rec) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!(
                    "tally: error: {}",
                    crate::printable::one_line(&e.to_string())
                );
                EXIT_ERROR
            }
        }
    }

    fn reporting(&self) -> bool {
        self.json || self.report.lock().expect("report").is_some()
    }

    /// Prints one record (a JSON line), secrets redacted.
    pub(crate) fn emit(&self, record: &serde_json::Value) {
        let text = serde_json::to_string(record).expect("records serialize");
        say(&crate::redact::redact(&text));
    }

    pub(crate) fn progress(&self) -> Box<dyn Progress> {
        if self.quiet {
            Box::new(Silent)
        } else if self.json || !std::io::stderr().is_terminal() {
            Box::new(Notes)
        } else {
            Box::new(Bar::new())
        }
    }

    pub(crate) fn finish<T: serde::Serialize>(&self, result: Result<(String, T), Error>) -> i32 {
        match result {
            Ok((text, report)) => {
                if !self.json && !self.quiet {
                    print!("{}", crate::redact::redact(&text));
                }
                if self.reporting() {
                    let report = serde_json::to_value(&report).expect("reports serialize");
                    return self.last_record(&json::record(&self.job, report), true);
                }
                EXIT_OK
            }
            Err(e) => {
                let code = e.exit_code();
                let msg = crate::redact::redact(&e.to_string());
                eprintln!("tally: error: {}", crate::printable::one_line(&msg));
                if self.reporting() {
                    let rec = json::error(&self.job, &msg, code);
                    return self.last_record(&rec, true).max(code);
                }
                code
            }
        }
    }
}

impl Output {
    /// What a tree command does with each entry's line as it finishes: a JSON line with `--json`;
    /// failures, differences and warnings on standard error as they happen.
    pub(crate) fn tree_lines(&self) -> impl Fn(&FileLine) + Send + Sync + use<> {
        let (json, quiet) = (self.json, self.quiet);
        let (job, done, report) = (self.job.clone(), self.done.clone(), self.report.clone());
        move |line: &FileLine| {
            done.lock().expect("counts").add(line);
            let mut report = report.lock().expect("report");
            if json || report.is_some() {
                let rec = json::file_line(&job, line);
                if json {
                    let text = serde_json::to_string(&rec).expect("lines serialize");
                    say(&crate::redact::redact(&text));
                }
                if let Some(r) = report.as_mut() {
                    r.add(&rec);
                }
            }
            drop(report);
            // Keys and names escaped: a newline or ESC in one never splits or colours a line.
            let one_line = crate::printable::one_line;
            let reason = one_line(line.reason.as_deref().unwrap_or(""));
            let path = one_line(&line.path);
            match line.action {
                Action::Failed => eprintln!("tally: FAILED {path}: {reason}"),
                Action::Differs => eprintln!("tally: DIFFERS {path}: {reason}"),
                Action::Ignored if !quiet => eprintln!("tally: warning: {path}: {reason}"),
                _ if !quiet && line.mhl.as_deref() == Some("new") => {
                    eprintln!("tally: new (not in the ASC MHL history): {path}");
                }
                _ => {}
            }
        }
    }

    /// A run refused before it started (its flags, its connection): the one error line, and the
    /// last record as the command's report would end (`tree`: a tree's summary).
    pub(crate) fn refuse(&self, e: Error, tree: bool) -> i32 {
        if tree {
            // The summary's words for a run that did something are not used on an error.
            self.finish_tree(Err(e), "", "")
        } else {
            self.finish::<()>(Err(e))
        }
    }

    /// Prints a tree command's summary (a last JSON line with `--json`) and returns its exit code.
    pub(crate) fn finish_tree(
        &self,
        result: Result<TreeReport, Error>,
        all_good: &str,
        nothing: &str,
    ) -> i32 {
        match result {
            Ok(report) => {
                if !self.json && !self.quiet {
                    print!(
                        "{}",
                        crate::redact::redact(&print_tree(&report, all_good, nothing))
                    );
                }
                let code = self.last_record(&json::summary(&self.job, &report, None), false);
                report.exit_code.max(code)
            }
            Err(e) => {
                // The last record is the summary even when the run ended in an error.
                let msg = crate::redact::redact(&e.to_string());
                eprintln!("tally: error: {}", crate::printable::one_line(&msg));
                let mut done = self.done.lock().expect("counts").clone();
                done.exit_code = e.exit_code();
                let rec = json::summary(&self.job, &done, Some(&msg));
                self.last_record(&rec, false).max(e.exit_code())
            }
        }
    }
}

pub(crate) fn init_logging(out: &OutputArgs) {
    let default = match out.verbose {
        0 => "error,tally=warn",
        1 => "error,tally=info",
        _ => "warn,tally=debug",
    };
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let plain = from_env.is_none() && out.verbose == 0;
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::redact::RedactingStderr);
    // Without -v or RUST_LOG only warnings show: print them as plain lines.
    let _ = if plain {
        builder
            .without_time()
            .with_target(false)
            .with_ansi(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Runs `f` as a task on the runtime's worker threads, not on this one: the tasks of its
/// connections wake it at every piece of a body, and a task woken from its own worker thread
/// runs there next, where waking this thread costs a thread switch each time.
pub(crate) fn on_workers<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    runtime
        .block_on(runtime.spawn(f))
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// `1.5 GiB`, `100 MiB`, `1000 B`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// Prints one line of a streamed report; when standard output is gone (`| head`), stops quietly.
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(EXIT_ERROR);
    }
}

pub(crate) fn print_tree(r: &TreeReport, all_good: &str, nothing: &str) -> String {
    let mut s = String::new();
    for g in &r.groups {
        s += &format!("  {g}\n");
    }
    if r.groups_omitted > 0 {
        s += &format!(
            "  ... and {} more lines (--json lists every file)\n",
            r.groups_omitted
        );
    }
    let verdict = if r.exit_code == EXIT_OK {
        all_good.to_owned()
    } else if !r.complete {
        "STOPPED before the end: run the same command again to finish".to_owned()
    } else {
        format!("NOT {all_good}: see the FAILED / DIFFERS lines above")
    };
    let mut counts = Vec::new();
    let mut count = |n: u64, what: String| {
        if n > 0 {
            counts.push(format!("{n} {what}"));
        }
    };
    count(
        r.uploaded,
        format!("uploaded ({})", human_bytes(r.uploaded_bytes)),
    );
    count(
        r.downloaded,
        format!("downloaded ({})", human_bytes(r.downloaded_bytes)),
    );
    count(
        r.skipped,
        format!(
            "skipped as proven identical ({})",
            human_bytes(r.skipped_bytes)
        ),
    );
    count(r.identical, "identical".into());
    count(r.differs, "DIFFER".into());
    count(r.failed, "FAILED".into());
    count(r.ignored, "ignored".into());
    count(r.not_started, "not started".into());
    count(
        r.would_send.unwrap_or(0),
        format!(
            "would be sent ({})",
            human_bytes(r.would_send_bytes.unwrap_or(0))
        ),
    );
    count(
        r.would_compare.unwrap_or(0),
        format!(
            "would be compared first ({})",
            human_bytes(r.would_compare_bytes.unwrap_or(0))
        ),
    );
    if counts.is_empty() {
        counts.push(nothing.to_owned());
    }
    if let Some(m) = &r.mhl {
        s += &mhl_summary(m);
    }
    s += &format!(
        "{}: {} files, {}: {}, in {:.2} s ({:.1} MiB/s)\n  {verdict}\n",
        crate::printable::url(&r.bucket, &r.prefix),
        r.files,
        human_bytes(r.bytes),
        counts.join(", "),
        r.seconds,
        r.mib_per_s
    );
    s
}

/// The ASC MHL lines of a tree upload's summary.
pub(crate) fn mhl_summary(m: &crate::batch::custody::Summary) -> String {
    let mut s = String::new();
    if m.history {
        s += &format!(
            "ASC MHL history: {} verified, {} new, {} MISMATCHED, {} MISSING\n",
            m.verified, m.new, m.mismatched, m.missing
        );
    }
    for w in &m.warnings {
        s += &format!("ASC MHL warning: {}\n", crate::printable::one_line(w));
    }
    if let Some(g) = &m.generation {
        s += &format!(
            "ASC MHL generation {g} written to {}",
            crate::printable::one_line(m.written_to.as_deref().unwrap_or("?"))
        );
        if !m.nested_generations.is_empty() {
            s += &format!(
                " and, in the nested histories, {}",
                m.nested_generations.join(", ")
            );
        }
        if let Some(why) = &m.source_read_only {
            s += &format!(" (the source cannot be written: {why})");
        }
        if m.uploaded.is_empty() {
            s += "\n";
        } else {
            s += &format!(
                "; uploaded: {}\n",
                crate::printable::one_line(&m.uploaded.join(", "))
            );
        }
    }
    s
}

/// The whole-file hashes, one line each (`  xxh64     45ab6734b21e6968`).
pub(crate) fn print_file_hashes(h: &crate::hash::FileHashes) -> String {
    h.iter()
        .map(|(f, v)| format!("  {:<9} {v} (whole file)\n", f.name()))
        .collect()
}
