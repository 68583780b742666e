//! `--report FILE.html`: one self-contained page a DIT hands to production (docs/report.md). It is
//! rendered from the same records `--json` prints (src/app/json.rs), so its totals are the JSON's;
//! no script, no external asset, the records embedded as JSON; every name HTML-escaped.
//!
//! Memory stays bounded on a tree of any size: each file's row is written to a scratch file beside
//! the report as it finishes; failures (shown first) are kept up to [`MAX_FAILURES`]; the page is
//! assembled at the end and renamed into place.

use std::fmt::Write as _;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::json::Job;
use crate::error::Error;

/// Failures listed at the top at most (all of them are in the table of every file).
const MAX_FAILURES: usize = 1000;

/// Files listed in name order at most (an index entry of ~100 bytes each); beyond, the table
/// keeps the order the files finished in, and says so.
const MAX_SORTED: usize = 100_000;

/// A report being written.
pub(crate) struct HtmlReport {
    path: PathBuf,
    rows_path: PathBuf,
    rows: Option<BufWriter<std::fs::File>>,
    failures: Vec<String>,
    failures_more: u64,
    endpoint: String,
    /// Each row's name, offset and length in the scratch file, to list them in name order.
    index: Vec<(String, u64, usize)>,
    /// Bytes written to the scratch file.
    written: u64,
    /// The first error writing a row (the page is not written then).
    write_error: Option<std::io::Error>,
}

/// `s` with `& < > " '` escaped, and control characters shown as `\u{..}`: a hostile name
/// renders as text, never as markup, and never splits a line.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// The text of `v[k]`, escaped (empty for null).
fn field(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => esc(s),
        Some(other) => esc(&other.to_string()),
    }
}

impl HtmlReport {
    /// Opens the scratch file beside `path`, so that a report that cannot be written fails before
    /// anything is transferred.
    pub(crate) fn create(path: &Path, endpoint: String) -> Result<HtmlReport, Error> {
        let cannot = |e: std::io::Error| {
            Error::Usage(format!(
                "--report {}: cannot write there ({e}): choose a file in a folder you can write",
                path.display()
            ))
        };
        if path.is_dir() {
            return Err(cannot(std::io::Error::other("it is a folder")));
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let rows_path = path.with_file_name(format!(
            ".{}.rows.tally-partial",
            name.unwrap_or_else(|| "report".into())
        ));
        let file = std::fs::File::create(&rows_path).map_err(cannot)?;
        Ok(HtmlReport {
            path: path.to_path_buf(),
            rows_path,
            rows: Some(BufWriter::new(file)),
            failures: Vec::new(),
            failures_more: 0,
            endpoint,
            index: Vec::new(),
            written: 0,
            write_error: None,
        })
    }

    /// One file's record (a tree's `file`, or a single-file command's record).
    pub(crate) fn add(&mut self, rec: &Value) {
        let row = file_row(rec);
        if matches!(action_of(rec).as_str(), "failed" | "differs") {
            if self.failures.len() < MAX_FAILURES {
                self.failures.push(failure_row(rec));
            } else {
                self.failures_more += 1;
            }
        }
        if let Some(rows) = self.rows.as_mut()
            && let Err(e) = rows.write_all(row.as_bytes())
        {
            self.write_error.get_or_insert(e);
        }
        if self.index.len() <= MAX_SORTED {
            let name = ["rel", "path", "key"]
                .iter()
                .find_map(|k| rec.get(*k)?.as_str().filter(|s| !s.is_empty()))
                .unwrap_or("");
            self.index.push((name.to_owned(), self.written, row.len()));
        }
        self.written += row.len() as u64;
    }

    /// Writes the page: the job, its totals (`last`: the summary, or the one record of a single
    /// file), the failures, every file.
    pub(crate) fn finish(mut self, job: &Job, last: &Value) -> Result<(), Error> {
        let path = self.path.clone();
        let failed = |e: std::io::Error| {
            Error::Stopped(format!(
                "the report {} could not be written: {e}",
                path.display()
            ))
        };
        if let Some(e) = self.write_error.take() {
            return Err(failed(e));
        }
        let rows = self.rows.take().expect("a report is finished once");
        rows.into_inner()
            .map_err(|e| failed(e.into_error()))?
            .sync_all()
            .map_err(failed)?;
        let partial = path.with_file_name(format!(
            ".{}.tally-partial",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let result = self.assemble(&partial, job, last);
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result.map_err(failed)
    }

    /// Writes the page to `partial`, then renames it into place.
    fn assemble(&self, partial: &Path, job: &Job, last: &Value) -> std::io::Result<()> {
        let mut out = BufWriter::new(std::fs::File::create(partial)?);
        out.write_all(head(job, last, &self.endpoint).as_bytes())?;
        out.write_all(failures_section(&self.failures, self.failures_more).as_bytes())?;
        out.write_all(FILES_HEAD.as_bytes())?;
        self.copy_rows(&mut out)?;
        out.write_all(foot(last).as_bytes())?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(partial, &self.path)
    }
}

impl HtmlReport {
    /// The rows, in name order (byte order of the name, as S3 lists keys) when there are at most
    /// [`MAX_SORTED`], else as they finished.
    fn copy_rows(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        let mut rows = std::fs::File::open(&self.rows_path)?;
        if self.index.len() > MAX_SORTED {
            out.write_all(b"<tr><td colspan=\"9\">More files than are listed in name order: in the order they finished.</td></tr>\n")?;
            std::io::copy(&mut rows, out)?;
            return Ok(());
        }
        let mut order: Vec<&(String, u64, usize)> = self.index.iter().collect();
        order.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut buf = Vec::new();
        for (_, offset, len) in order {
            buf.resize(*len, 0);
            rows.read_exact_at(&mut buf, *offset)?;
            out.write_all(&buf)?;
        }
        Ok(())
    }
}

impl Drop for HtmlReport {
    fn drop(&mut self) {
        // Finished or not, the scratch file goes.
        let _ = std::fs::remove_file(&self.rows_path);
    }
}

/// The checksum object as `ALGORITHM TYPE value`.
fn checksum_text(c: &Value) -> String {
    if c.is_null() {
        return String::new();
    }
    esc(&format!(
        "{} {} {}",
        c["algorithm"].as_str().unwrap_or(""),
        c["type"].as_str().unwrap_or(""),
        c["value"].as_str().unwrap_or("")
    ))
}

fn hashes_text(h: Option<&Value>) -> String {
    h.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{} {}", esc(k), esc(v.as_str().unwrap_or(""))))
                .collect::<Vec<_>>()
                .join("<br>")
        })
        .unwrap_or_default()
}

/// The action of a record: a tree line's, or a single file's from its kind.
fn action_of(rec: &Value) -> String {
    if let Some(a) = rec.get("action").and_then(Value::as_str) {
        return a.to_owned();
    }
    match rec["kind"].as_str().unwrap_or("") {
        "upload" if rec["skipped"] == true => "skipped".into(),
        "upload" => "uploaded".into(),
        "download" if rec["already_present"] == true => "skipped".into(),
        "download" => "downloaded".into(),
        "verify" => rec["verdict"].as_str().unwrap_or("").into(),
        "error" => "failed".into(),
        other => other.into(),
    }
}

/// A tree entry by its name below the folder (the folder is in the job); a single file by path.
fn name_of(rec: &Value) -> String {
    ["rel", "path"]
        .iter()
        .find_map(|k| rec.get(*k)?.as_str().filter(|s| !s.is_empty()))
        .unwrap_or("")
        .to_owned()
}

fn file_row(rec: &Value) -> String {
    let action = action_of(rec);
    let size = rec.get("size").and_then(Value::as_u64);
    let proof = match rec.get("proof").and_then(Value::as_str) {
        Some(p) if !p.is_empty() => esc(p),
        _ if action == "failed" => {
            format!("FAILED: {}{}", field(rec, "reason"), field(rec, "error"))
        }
        _ => "not verified".into(),
    };
    let class = match action.as_str() {
        "failed" | "differs" => " class=\"bad\"",
        "ignored" => " class=\"warn\"",
        _ => "",
    };
    format!(
        "<tr{class}><td class=\"name\">{}</td><td class=\"name\">{}</td><td class=\"num\" data-bytes=\"{}\">{}</td><td>{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>\n",
        esc(&name_of(rec)),
        field(rec, "key"),
        size.map(|s| s.to_string()).unwrap_or_default(),
        size.map(super::output::human_bytes).unwrap_or_default(),
        esc(&action),
        checksum_text(rec.get("checksum").unwrap_or(&Value::Null)),
        field(rec, "etag"),
        hashes_text(rec.get("file_hashes")),
        proof,
        field(rec, "mhl"),
    )
}

fn failure_row(rec: &Value) -> String {
    format!(
        "<tr class=\"bad\"><td class=\"name\">{}</td><td class=\"name\">{}</td><td>{}</td><td>{}</td></tr>\n",
        esc(&name_of(rec)),
        field(rec, "key"),
        esc(&action_of(rec)),
        field(rec, "reason") + &field(rec, "error"),
    )
}

fn failures_section(rows: &[String], more: u64) -> String {
    if rows.is_empty() {
        return "<h2 id=\"failures\">Failures</h2>\n<p class=\"good\">None: no file failed or differs.</p>\n".into();
    }
    let mut s = format!(
        "<h2 id=\"failures\">Failures ({})</h2>\n<table><thead><tr><th>file</th><th>key</th><th>what</th><th>why</th></tr></thead><tbody>\n",
        rows.len() as u64 + more
    );
    rows.iter().for_each(|r| s.push_str(r));
    s.push_str("</tbody></table>\n");
    if more > 0 {
        let _ = writeln!(s, "<p>and {more} more (each is in the table below).</p>");
    }
    s
}

const FILES_HEAD: &str = "<h2 id=\"files\">Every file</h2>\n<table id=\"file-table\"><thead><tr><th>file</th><th>key</th><th>size</th><th>what</th><th>checksum (S3)</th><th>ETag</th><th>whole-file hashes</th><th>what proved it</th><th>ASC MHL</th></tr></thead><tbody>\n";

/// The record embedded for machines: `</` cannot end the script element early.
fn embedded(rec: &Value) -> String {
    rec.to_string()
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
}

fn foot(last: &Value) -> String {
    format!(
        "</tbody></table>\n<script type=\"application/json\" id=\"tally-summary\">{}</script>\n</main></body></html>\n",
        embedded(last)
    )
}

/// The page up to the failures: title, job, totals.
fn head(job: &Job, last: &Value, endpoint: &str) -> String {
    let title = format!(
        "tally {} report: {}",
        job.command,
        last.get("url")
            .and_then(Value::as_str)
            .or(job.url.as_deref())
            .unwrap_or("")
    );
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}</style></head>\n<body><main>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    s += &super::report_job::job_section(job, last, endpoint);
    s += &super::report_job::totals_section(last);
    s
}

const CSS: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#111}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.5em}\
table{border-collapse:collapse;width:100%;margin:.5em 0}table#totals{width:auto}\
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#eee}td.num{text-align:right;white-space:nowrap}\
td.mono{font-family:ui-monospace,monospace;font-size:12px;word-break:break-all}\
td.name{word-break:break-all}tr.bad td{background:#fde8e8}tr.warn td{background:#fff6dc}\
.verdict{font-weight:bold;padding:.4em .6em;display:inline-block;border:2px solid}\
.good{color:#0a5d1e}.badtext{color:#a40000}dl.job{display:grid;grid-template-columns:max-content auto;gap:2px 1em}\
dl.job dt{font-weight:bold}dl.job dd{margin:0;word-break:break-all}\
@media print{body{margin:0;font-size:10px}td.mono{font-size:9px}thead{display:table-header-group}\
tr{page-break-inside:avoid}h2{page-break-after:avoid}}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_text_never_markup() {
        assert_eq!(
            esc("<img src=x onerror='a'> & \"b\"\n\u{1b}"),
            "&lt;img src=x onerror=&#39;a&#39;&gt; &amp; &quot;b&quot;\\u{a}\\u{1b}"
        );
    }

    #[test]
    fn files_are_listed_in_name_order_and_failures_first() {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("r.html");
        let mut r = HtmlReport::create(&page, "http://127.0.0.1:1".into()).unwrap();
        for (rel, action) in [
            ("b/2.dpx", "uploaded"),
            ("a.mov", "uploaded"),
            ("b/1.dpx", "failed"),
        ] {
            r.add(&serde_json::json!({"kind": "file", "rel": rel, "action": action, "size": 1}));
        }
        let job = Job::new("upload", Some("card".into()), Some("s3://b/p/".into()));
        let summary =
            serde_json::json!({"kind": "summary", "files": 3, "failed": 1, "exit_code": 2});
        r.finish(&job, &summary).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        let at = |s: &str| html.rfind(s).unwrap();
        assert!(at("a.mov") < at("b/1.dpx") && at("b/1.dpx") < at("b/2.dpx"));
        let failures = html.find("id=\"failures\"").unwrap();
        assert!(failures < html.find("b/1.dpx").unwrap());
        assert!(html.find("b/1.dpx").unwrap() < html.find("id=\"file-table\"").unwrap());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the page is left: {left:?}");
    }

    #[test]
    fn the_embedded_record_cannot_close_its_script() {
        let rec = serde_json::json!({"path": "</script><script>alert(1)</script><!--"});
        let e = embedded(&rec);
        assert!(!e.contains("</"), "{e}");
        assert!(!e.contains("<!--"), "{e}");
        let back: Value =
            serde_json::from_str(&e.replace("<\\/", "</").replace("<\\!--", "<!--")).unwrap();
        assert_eq!(back, rec);
    }
}
