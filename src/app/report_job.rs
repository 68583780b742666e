//! The top of an HTML report (`--report`): the job (what, from where to where, which account,
//! when, which tool) and its totals, read from the run's last record.

use std::fmt::Write as _;

use serde_json::Value;

use super::json::Job;
use super::report_html::esc;

fn text(v: &Value, k: &str) -> Option<String> {
    match v.get(k)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The identity in words, never a secret (there is none in the record).
fn identity(v: &Value) -> String {
    let Some(id) = v.get("identity").filter(|i| i.is_object()) else {
        return "not recorded (no connection was made)".into();
    };
    let mut s = text(id, "source").unwrap_or_default();
    if let Some(p) = text(id, "profile") {
        let _ = write!(s, ": profile {p}");
    }
    if let Some(by) = text(id, "chosen_by") {
        let _ = write!(s, " (chosen by {by})");
    }
    s
}

/// The verdict line, from the exit code, whether the run completed, and its error.
fn verdict(last: &Value) -> (bool, String) {
    let code = last.get("exit_code").and_then(Value::as_i64).unwrap_or(0);
    if let Some(e) = text(last, "error") {
        return (false, format!("STOPPED: {e}"));
    }
    if last.get("would_send").is_some_and(|v| !v.is_null()) {
        return (
            code == 0,
            "DRY RUN: nothing was sent or written; this is what the run would do".into(),
        );
    }
    if last["complete"] == false {
        return (
            false,
            "STOPPED before the end: not every file was done".into(),
        );
    }
    match (last["kind"].as_str().unwrap_or(""), code) {
        ("verify", _) if last["verdict"] == "differs" => (false, "DIFFERS".into()),
        (_, 0) => (true, "Complete: every file done as its line says".into()),
        (_, 1) => (false, "NOT complete: a file differs (see Failures)".into()),
        _ => (false, "NOT complete: see Failures".into()),
    }
}

/// The job: command, source, destination, endpoint, account, host, tool, times, verdict.
pub(crate) fn job_section(job: &Job, last: &Value, endpoint: &str) -> String {
    let (good, said) = verdict(last);
    let class = if good { "good" } else { "badtext" };
    let mut s = format!(
        "<p id=\"verdict\" class=\"verdict {class}\">{}</p>\n<h2>Job</h2>\n<dl class=\"job\">\n",
        esc(&said)
    );
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let rows = [
        ("command", format!("tally {}", job.command)),
        ("local", job.path.clone().unwrap_or_default()),
        (
            "S3",
            text(last, "url")
                .or_else(|| job.url.clone())
                .unwrap_or_default(),
        ),
        ("endpoint", endpoint.to_owned()),
        ("account", identity(last)),
        ("host", host),
        ("tool", format!("tally {}", env!("CARGO_PKG_VERSION"))),
        (
            "started",
            text(last, "started").unwrap_or_else(|| super::json::rfc3339(job.started)),
        ),
        ("finished", text(last, "finished").unwrap_or_default()),
        ("seconds", text(last, "seconds").unwrap_or_default()),
        (
            "exit code",
            text(last, "exit_code").unwrap_or_else(|| "0".into()),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    }
    s += "</dl>\n";
    s
}

/// The totals: a tree's counts from its summary, or the one file of a single-file command.
pub(crate) fn totals_section(last: &Value) -> String {
    let mut s = "<h2>Totals</h2>\n<table id=\"totals\"><tbody>\n".to_owned();
    let mut row = |name: &str, label: &str, v: Option<u64>, bytes: Option<u64>| {
        let Some(v) = v else { return };
        let human = bytes.map_or(String::new(), |b| {
            format!(" ({})", super::output::human_bytes(b))
        });
        let _ = writeln!(
            s,
            "<tr><th>{label}</th><td class=\"num\" data-total=\"{name}\">{v}</td><td>{human}</td></tr>"
        );
    };
    let n = |k: &str| last.get(k).and_then(Value::as_u64);
    if last["kind"] == "summary" {
        row("files", "files", n("files"), None);
        row("bytes", "bytes", n("bytes"), n("bytes"));
        for (k, label) in [
            ("uploaded", "uploaded"),
            ("downloaded", "downloaded"),
            ("skipped", "skipped, proven identical"),
            ("identical", "identical"),
            ("hashed", "hashed"),
            ("differs", "DIFFER"),
            ("failed", "FAILED"),
            ("ignored", "ignored"),
            ("not_started", "not started"),
            ("would_send", "would be sent (dry run)"),
            ("would_compare", "would be compared first (dry run)"),
        ] {
            row(k, label, n(k), n(&format!("{k}_bytes")));
        }
    } else {
        let failed = u64::from(last["kind"] == "error");
        row("files", "files", Some(1), None);
        row("bytes", "bytes", n("size").or(Some(0)), n("size"));
        row("failed", "FAILED", Some(failed), None);
    }
    s += "</tbody></table>\n";
    if let Some(m) = last.get("mhl").filter(|m| m.is_object()) {
        let _ = writeln!(
            s,
            "<p>ASC MHL: {} verified, {} new, {} mismatched, {} missing; generation {} written to {}</p>",
            m["verified"],
            m["new"],
            m["mismatched"],
            m["missing"],
            esc(&text(m, "generation").unwrap_or_else(|| "none".into())),
            esc(&text(m, "written_to").unwrap_or_else(|| "-".into()))
        );
    }
    s
}
