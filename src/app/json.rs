//! The one JSON vocabulary of every command's `--json` (docs/json.md, docs/schema/): each record is
//! one line with the same envelope (`schema`, `kind`, `command`, `tally_version`, `time`) and the
//! same names and types for the same things in every command: `path` the local file, `url`,
//! `bucket`, `key` the remote side, `size` a number of bytes, `checksum` an object
//! `{algorithm, type, value}`, comparisons `{local, remote, matches}` under `*_check`,
//! `file_hashes` an object, timestamps in RFC 3339 UTC.
//!
//! The reports of the commands below keep their own shapes; this is where they are rendered into
//! the vocabulary, so that text, JSON and the HTML report all read the same values.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::batch::report::{FileLine, TreeReport};

/// The `schema` field of every record: bumped when a field changes meaning or type.
pub(crate) const SCHEMA: &str = "tally/1";

/// What a command's records share: which command, on what, since when.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// `upload`, `download`, `verify`, `hash`, `md5`, `uploads`, `abort`, `shard plan`, ...
    pub(crate) command: &'static str,
    /// The local side as given (file or folder; a download's destination).
    pub(crate) path: Option<String>,
    /// The remote side as given (`s3://...`).
    pub(crate) url: Option<String>,
    /// When the command started.
    pub(crate) started: SystemTime,
}

impl Job {
    /// A job of `command` starting now.
    pub(crate) fn new(command: &'static str, path: Option<String>, url: Option<String>) -> Job {
        Job {
            command,
            path,
            url,
            started: SystemTime::now(),
        }
    }
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-12-06T05:40:00.123Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = crate::uploads::rfc3339(d.as_secs() as i64);
    format!("{}.{:03}Z", secs.trim_end_matches('Z'), d.subsec_millis())
}

/// The envelope every record starts with.
fn envelope(job: &Job, kind: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("schema".into(), SCHEMA.into());
    m.insert("kind".into(), kind.into());
    m.insert("command".into(), job.command.into());
    m.insert("tally_version".into(), env!("CARGO_PKG_VERSION").into());
    m.insert("time".into(), rfc3339(SystemTime::now()).into());
    m
}

/// Merges `fields` into the envelope of `kind` (the envelope's names win).
fn with_envelope(job: &Job, kind: &str, fields: Value) -> Value {
    let mut m = envelope(job, kind);
    if let Value::Object(fields) = fields {
        for (k, v) in fields {
            m.entry(k).or_insert(v);
        }
    }
    Value::Object(m)
}

/// The identity used (never a secret), where the command reached S3.
fn identity() -> Option<Value> {
    let stamped = crate::s3::identity::stamp(&json!({}));
    stamped.get("identity").cloned()
}

/// `"ALGORITHM [TYPE] value"` (as tree lines carry it) as the checksum object; the type, when not
/// said, from the value: S3 ends a composite checksum with `-N`.
pub(crate) fn checksum_object(text: &str, algorithm: Option<&str>) -> Value {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (alg, kind, value) = match words.as_slice() {
        [a, t, v] => (Some(*a), Some(*t), *v),
        [a, v] => (Some(*a), None, *v),
        [v] => (algorithm, None, *v),
        _ => (algorithm, None, text),
    };
    let kind = kind.map(str::to_owned).unwrap_or_else(|| {
        let composite = value
            .rsplit_once('-')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if composite {
            "COMPOSITE"
        } else {
            "FULL_OBJECT"
        }
        .to_owned()
    });
    json!({ "algorithm": alg, "type": kind, "value": value })
}

/// `s3://bucket/key`.
fn url(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

fn rename(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.into(), v);
    }
}

/// The record of a single-file command's report (`upload`, `download`, `verify`, `hash`, `md5`,
/// `uploads`, `abort`, `shard ...`).
pub(crate) fn record(job: &Job, report: Value) -> Value {
    let mut m = match report {
        Value::Object(m) => m,
        // `uploads` and `abort` report lists.
        list => {
            let name = if job.command == "abort" {
                "aborted"
            } else {
                "uploads"
            };
            let mut m = Map::new();
            m.insert(name.into(), list);
            m
        }
    };
    match job.command {
        "upload" => upload(&mut m),
        "download" => download(&mut m),
        "verify" => verify(&mut m),
        "hash" => hash(&mut m),
        "md5" => rename(&mut m, "finished", "complete"),
        "uploads" | "abort" => listing(job, &mut m),
        "shard plan" => shard_plan(&mut m),
        "shard run" => rename(&mut m, "bytes", "size"),
        _ => rename(&mut m, "verified", "after_upload"),
    }
    if let (Some(b), Some(k)) = (m.get("bucket"), m.get("key")) {
        let u = url(b.as_str().unwrap_or(""), k.as_str().unwrap_or(""));
        m.entry("url").or_insert(u.into());
    }
    if let Some(p) = &job.path {
        m.entry("path").or_insert(p.clone().into());
    }
    m.insert("started".into(), rfc3339(job.started).into());
    m.insert("finished".into(), rfc3339(SystemTime::now()).into());
    if let Some(id) = identity() {
        m.insert("identity".into(), id);
    }
    with_envelope(
        job,
        job.command
            .split(' ')
            .collect::<Vec<_>>()
            .join("_")
            .as_str(),
        Value::Object(m),
    )
}

fn upload(m: &mut Map<String, Value>) {
    rename(m, "verified", "after_upload");
    let skipped = m.get("skipped").and_then(Value::as_bool).unwrap_or(false);
    m.insert("skipped".into(), skipped.into());
    if let Some(Value::String(c)) = m.get("checksum") {
        let c = checksum_object(c, None);
        m.insert("checksum".into(), c);
    }
    m.entry("proof").or_insert(Value::Null);
    m.entry("file_hashes").or_insert(json!({}));
}

/// A comparison (`{local, remote, matches}`) moves to `NAME_check`; `NAME` keeps S3's value.
fn split_comparison(m: &mut Map<String, Value>, name: &str) -> Option<String> {
    let compared = m.remove(name).unwrap_or(Value::Null);
    let remote = compared
        .get("remote")
        .and_then(Value::as_str)
        .map(str::to_owned);
    m.insert(format!("{name}_check"), compared);
    remote
}

fn download(m: &mut Map<String, Value>) {
    rename(m, "dest", "path");
    let alg = m
        .get("checked")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find_map(|p| p.get("algorithm")?.as_str()))
        .map(str::to_owned);
    let checksum = split_comparison(m, "checksum");
    let c = checksum.map_or(Value::Null, |v| checksum_object(&v, alg.as_deref()));
    m.insert("checksum".into(), c);
    let etag = split_comparison(m, "etag");
    m.insert("etag".into(), etag.into());
    let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let proof = if m.get("verified") == Some(&Value::Bool(true)) {
        let checked: Vec<&str> = m["checked"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text")?.as_str())
            .collect();
        format!("checked: {}", checked.join("; "))
    } else {
        format!("NOT verified: {}", text("not_verified"))
    };
    m.insert("proof".into(), proof.into());
}

fn verify(m: &mut Map<String, Value>) {
    let size = m.remove("size").unwrap_or(Value::Null);
    let number = |k: &str| size.get(k).and_then(Value::as_str)?.parse::<u64>().ok();
    m.insert("size".into(), number("local").into());
    m.insert("remote_size".into(), number("remote").into());
    m.insert(
        "size_matches".into(),
        size.get("matches").cloned().unwrap_or(Value::Null),
    );
    let alg = m.remove("checksum_algorithm");
    let alg = alg.as_ref().and_then(Value::as_str).unwrap_or("");
    let checksum = split_comparison(m, "checksum");
    let c = checksum.map_or(Value::Null, |v| {
        checksum_object(&format!("{alg} {v}"), None)
    });
    m.insert("checksum".into(), c);
    let etag = split_comparison(m, "etag");
    m.insert("etag".into(), etag.into());
    if let Some(g) = m.remove("gib_per_s").and_then(|g| g.as_f64()) {
        m.insert("mib_per_s".into(), (g * 1024.0).into());
    }
    let text = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let proof = match text("verdict").as_str() {
        "identical" => format!("{}: {}", text("why"), text("compared")),
        _ => format!("DIFFERS: {}", text("compared")),
    };
    m.insert("proof".into(), proof.into());
}

/// `tally hash`'s report (also a line of `tally hash DIR`): `file` is the `path`; a part's
/// `len` its `size`, its base64 value `checksum_value`.
fn hash(m: &mut Map<String, Value>) {
    rename(m, "file", "path");
    if let Some(Value::Array(parts)) = m.get_mut("parts") {
        for p in parts.iter_mut().filter_map(Value::as_object_mut) {
            rename(p, "len", "size");
            rename(p, "checksum", "checksum_value");
        }
    }
    m.entry("file_hashes").or_insert(json!({}));
}

/// `uploads` / `abort`: each entry gets its `url`; `bytes` is the `size`.
fn listing(job: &Job, m: &mut Map<String, Value>) {
    let bucket = job
        .url
        .as_deref()
        .and_then(|u| crate::vocab::ObjectUrl::parse(u).ok())
        .map(|u| u.bucket)
        .unwrap_or_default();
    for list in m.values_mut().filter_map(Value::as_array_mut) {
        for e in list.iter_mut().filter_map(Value::as_object_mut) {
            rename(e, "bytes", "size");
            let key = e.get("key").and_then(Value::as_str).unwrap_or("");
            let u = url(&bucket, key);
            e.insert("url".into(), u.into());
        }
    }
}

fn shard_plan(m: &mut Map<String, Value>) {
    if let Some(Value::Object(plan)) = m.get_mut("plan") {
        rename(plan, "checksum", "checksum_algorithm");
        let u = url(
            plan.get("bucket").and_then(Value::as_str).unwrap_or(""),
            plan.get("key").and_then(Value::as_str).unwrap_or(""),
        );
        let path = plan.get("source").cloned().unwrap_or(Value::Null);
        let size = plan.get("size").cloned().unwrap_or(Value::Null);
        m.insert("url".into(), u.into());
        m.insert("path".into(), path);
        m.insert("size".into(), size);
    }
}

/// The record of a command that ended in an error before any file was done.
pub(crate) fn error(job: &Job, message: &str, exit_code: i32) -> Value {
    with_envelope(
        job,
        "error",
        json!({ "error": message, "exit_code": exit_code, "path": job.path, "url": job.url,
                "started": rfc3339(job.started) }),
    )
}

/// One entry of a tree (`upload`, `download`, `verify` of a folder or prefix).
pub(crate) fn file_line(job: &Job, line: &FileLine) -> Value {
    let mut v = serde_json::to_value(line).expect("lines serialize");
    if let Some(m) = v.as_object_mut() {
        let key = m.get("key").and_then(Value::as_str).map(str::to_owned);
        let bucket = job
            .url
            .as_deref()
            .and_then(|u| crate::vocab::ObjectUrl::parse(u).ok())
            .map(|u| u.bucket);
        let u = match (bucket, key) {
            (Some(b), Some(k)) => Value::String(url(&b, &k)),
            _ => Value::Null,
        };
        m.insert("url".into(), u);
        if let Some(Value::String(c)) = m.get("checksum") {
            let c = checksum_object(c, None);
            m.insert("checksum".into(), c);
        }
        m.entry("mhl").or_insert(Value::Null);
        if !m.contains_key("proof") {
            // What proved it is the reason, where the reason is a comparison.
            let action = m.get("action").and_then(Value::as_str).unwrap_or("");
            let reason = m["reason"].as_str().unwrap_or("");
            let proof = match action {
                // Without --download, verify compares what the server reports, not its bytes.
                "identical" if !reason.starts_with("download") => Value::String(format!(
                    "{reason} (the values the server reports, not its bytes: --download compares them)"
                )),
                "downloaded" | "identical" | "differs" | "skipped" => m["reason"].clone(),
                _ => Value::Null,
            };
            m.insert("proof".into(), proof);
        }
    }
    with_envelope(job, "file", v)
}

/// The last line of a tree: its totals, also when the run stopped on an error (`error`, with
/// the totals of the entries done before it).
pub(crate) fn summary(job: &Job, report: &TreeReport, error: Option<&str>) -> Value {
    let mut v = serde_json::to_value(report).expect("reports serialize");
    if let Some(m) = v.as_object_mut() {
        if error.is_some() {
            // Counted from the lines printed: what was not reached is not known.
            m.insert("not_started".into(), Value::Null);
            m.insert("complete".into(), false.into());
            let remote = job
                .url
                .as_deref()
                .and_then(|u| crate::vocab::ObjectUrl::parse(u).ok());
            if let Some(u) = remote {
                m.insert("bucket".into(), u.bucket.into());
                m.insert("prefix".into(), u.key.into());
            }
        }
        let u = url(
            m.get("bucket").and_then(Value::as_str).unwrap_or(""),
            m.get("prefix").and_then(Value::as_str).unwrap_or(""),
        );
        m.insert("url".into(), u.into());
        m.insert("path".into(), job.path.clone().into());
        m.insert("error".into(), error.into());
        m.entry("mhl").or_insert(Value::Null);
        m.insert("started".into(), rfc3339(job.started).into());
        m.insert("finished".into(), rfc3339(SystemTime::now()).into());
        if let Some(id) = identity() {
            m.insert("identity".into(), id);
        }
    }
    with_envelope(job, "summary", v)
}

/// One line of `tally hash DIR`, as the `file` records of the other trees: `path` the local
/// file, `rel` its name below the folder.
pub(crate) fn hash_line(job: &Job, line: &crate::hashfile::TreeLine) -> Value {
    use crate::hashfile::TreeLine;
    let root = std::path::Path::new(job.path.as_deref().unwrap_or(""));
    let local = |rel: &str| root.join(rel).display().to_string();
    let v = match line {
        TreeLine::Hashed { path, report } => {
            let mut m = match serde_json::to_value(report).expect("reports serialize") {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            hash(&mut m);
            m.insert("rel".into(), path.clone().into());
            m.insert("action".into(), "hashed".into());
            m.insert("reason".into(), Value::Null);
            // Hashing compares nothing with S3.
            m.insert("proof".into(), Value::Null);
            Value::Object(m)
        }
        TreeLine::Skipped {
            path,
            code,
            reason,
            failure,
        } => json!({
            "path": local(path), "rel": path, "size": null, "code": code, "reason": reason,
            "proof": null,
            "action": if *failure { "failed" } else { "ignored" },
        }),
        TreeLine::Failed { path, reason } => json!({
            "path": local(path), "rel": path, "size": null, "action": "failed", "reason": reason,
            "proof": null,
        }),
        TreeLine::Summary(_) => Value::Null,
    };
    with_envelope(job, "file", v)
}

/// The last line of `tally hash DIR`; `ignored` counts the entries skipped with a warning.
pub(crate) fn hash_summary(job: &Job, s: &crate::hashfile::TreeSummary, ignored: u64) -> Value {
    let mib_per_s = s.bytes as f64 / (1024.0 * 1024.0) / s.seconds.max(1e-9);
    let exit_code = if s.failed > 0 {
        crate::error::EXIT_ERROR
    } else {
        crate::error::EXIT_OK
    };
    with_envelope(
        job,
        "summary",
        json!({
            "path": job.path, "files": s.files, "bytes": s.bytes, "hashed": s.files,
            "failed": s.failed, "ignored": ignored, "complete": true, "exit_code": exit_code,
            "error": null, "seconds": s.seconds, "mib_per_s": mib_per_s,
            "started": rfc3339(job.started), "finished": rfc3339(SystemTime::now()),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checksum_text_becomes_one_shape() {
        let full = json!({"algorithm": "SHA256", "type": "FULL_OBJECT", "value": "abc="});
        assert_eq!(checksum_object("SHA256 abc=", None), full);
        assert_eq!(checksum_object("SHA256 FULL_OBJECT abc=", None), full);
        assert_eq!(checksum_object("abc=", Some("SHA256")), full);
        let composite = checksum_object("CRC32 xyz=-12", None);
        assert_eq!(composite["type"], "COMPOSITE");
        // A base64 value may hold a '-' of its own only at the end of a part count.
        assert_eq!(checksum_object("CRC32 a-b=", None)["type"], "FULL_OBJECT");
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_500_000_042);
        assert_eq!(rfc3339(t), "2026-11-24T06:00:00.042Z");
    }

    #[test]
    fn a_verify_report_gets_numbers_and_the_checksum_object() {
        let mut m = json!({
            "size": {"local": "5", "remote": "6", "matches": false},
            "checksum_algorithm": "CRC64NVME FULL_OBJECT",
            "checksum": {"local": "a=", "remote": "b=", "matches": false},
            "etag": null,
            "gib_per_s": 1.0,
        });
        verify(m.as_object_mut().unwrap());
        assert_eq!(m["size"], 5);
        assert_eq!(m["remote_size"], 6);
        assert_eq!(m["size_matches"], false);
        assert_eq!(m["checksum"]["value"], "b=");
        assert_eq!(m["checksum"]["algorithm"], "CRC64NVME");
        assert_eq!(m["checksum_check"]["local"], "a=");
        assert_eq!(m["mib_per_s"], 1024.0);
    }
}
