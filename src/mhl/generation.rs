//! Writing ASC MHL v2.0: a generation file, streamed one `<hash>` at a time as files finish (memory
//! does not grow with the tree), and the chain file. Every element goes through quick-xml's
//! writer, which escapes text and attributes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::hashes::HashFormat;
use super::history::ChainEntry;

/// The namespace of generation files.
pub(crate) const MHL_NS: &str = "urn:ASC:MHL:v2.0";
/// The namespace of the chain file.
pub(crate) const CHAIN_NS: &str = "urn:ASC:MHL:DIRECTORY:v2.0";
/// The namespace of tally's S3 facts inside `<metadata>`.
pub(crate) const TALLY_NS: &str = "urn:tally:s3:v1";

/// What a recorded hash says about the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// First recorded in this format.
    Original,
    /// Equal to the value the history holds.
    Verified,
    /// Not equal to the value the history holds.
    Failed,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Original => "original",
            Action::Verified => "verified",
            Action::Failed => "failed",
        }
    }
}

/// The generation's `<creatorinfo>` and `<processinfo>`.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// `creationdate`.
    pub created: SystemTime,
    /// `hostname`.
    pub hostname: String,
    /// `tool@version`.
    pub tool_version: String,
    /// `location`: where the files went (`s3://bucket/prefix/`).
    pub location: String,
    /// `ignore/pattern`s, carried over from the history.
    pub ignore: Vec<String>,
}

/// Where a file's object is: the S3 facts recorded in the `<hash>`'s `<metadata>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct S3Facts {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Version id, on versioned buckets.
    pub version_id: Option<String>,
    /// ETag (unquoted).
    pub etag: Option<String>,
    /// The object's checksum as S3 reports it (`ALGORITHM value`).
    pub checksum: Option<String>,
}

/// One file's `<hash>`.
#[derive(Debug, Clone)]
pub(crate) struct HashEntry {
    /// Path relative to the root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub modified: Option<SystemTime>,
    /// When the hashes were computed.
    pub hashdate: SystemTime,
    /// Format, value, action; written in the XSD's format order.
    pub hashes: Vec<(HashFormat, String, Action)>,
    /// The object, when the file is in S3.
    pub s3: Option<S3Facts>,
}

/// A generation file being written.
pub(crate) struct GenerationWriter {
    w: quick_xml::Writer<BufWriter<File>>,
    path: PathBuf,
    hashes_open: bool,
}

/// Writes `<name>value</name>` (with `attrs`).
fn element<W: Write>(
    w: &mut quick_xml::Writer<W>,
    name: &str,
    attrs: &[(&str, &str)],
    value: &str,
) -> std::io::Result<()> {
    let mut el = w.create_element(name);
    for a in attrs {
        el = el.with_attribute(*a);
    }
    el.write_text_content(BytesText::new(value))?;
    Ok(())
}

impl GenerationWriter {
    /// Creates the file at `path` (it must not exist) and writes everything before the hashes.
    pub(crate) fn create(path: &Path, h: &Header) -> std::io::Result<GenerationWriter> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut w = quick_xml::Writer::new_with_indent(BufWriter::new(f), b' ', 2);
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        w.write_event(Event::Start(
            BytesStart::new("hashlist").with_attributes([("version", "2.0"), ("xmlns", MHL_NS)]),
        ))?;
        w.create_element("creatorinfo").write_inner_content(|w| {
            element(w, "creationdate", &[], &date_time(h.created))?;
            element(w, "hostname", &[], &h.hostname)?;
            element(w, "tool", &[("version", &h.tool_version)], "tally")?;
            element(w, "location", &[], &h.location)?;
            Ok(())
        })?;
        w.create_element("processinfo").write_inner_content(|w| {
            element(w, "process", &[], "transfer")?;
            if !h.ignore.is_empty() {
                w.create_element("ignore").write_inner_content(|w| {
                    for p in &h.ignore {
                        element(w, "pattern", &[], p)?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        Ok(GenerationWriter {
            w,
            path: path.to_owned(),
            hashes_open: false,
        })
    }

    /// The file being written.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether any `<hash>` was added.
    pub(crate) fn has_hashes(&self) -> bool {
        self.hashes_open
    }

    /// Appends one file's `<hash>`.
    pub(crate) fn add(&mut self, e: &HashEntry) -> std::io::Result<()> {
        if !self.hashes_open {
            self.w
                .write_event(Event::Start(BytesStart::new("hashes")))?;
            self.hashes_open = true;
        }
        let mut hashes = e.hashes.clone();
        hashes.sort_by_key(|(f, _, _)| *f);
        let hashdate = date_time(e.hashdate);
        let size = e.size.to_string();
        let modified = e.modified.map(date_time);
        self.w.create_element("hash").write_inner_content(|w| {
            let mut path = w
                .create_element("path")
                .with_attribute(("size", size.as_str()));
            if let Some(m) = &modified {
                path = path.with_attribute(("lastmodificationdate", m.as_str()));
            }
            path.write_text_content(BytesText::new(&e.path))?;
            for (f, v, a) in &hashes {
                element(
                    w,
                    f.name(),
                    &[("action", a.as_str()), ("hashdate", &hashdate)],
                    v,
                )?;
            }
            if let Some(s3) = &e.s3 {
                w.create_element("metadata").write_inner_content(|w| {
                    w.create_element("s3")
                        .with_attribute(("xmlns", TALLY_NS))
                        .write_inner_content(|w| {
                            element(w, "bucket", &[], &s3.bucket)?;
                            element(w, "key", &[], &s3.key)?;
                            if let Some(v) = &s3.version_id {
                                element(w, "versionid", &[], v)?;
                            }
                            if let Some(v) = &s3.etag {
                                element(w, "etag", &[], v)?;
                            }
                            if let Some(c) = &s3.checksum {
                                let (alg, value) = c.split_once(' ').unwrap_or(("", c));
                                element(w, "checksum", &[("algorithm", alg)], value)?;
                            }
                            Ok(())
                        })?;
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Closes the document with `references` (the nested histories' new generations: path
    /// relative to this history's folder, and C4) and makes it durable.
    pub(crate) fn finish_with(mut self, references: &[(String, String)]) -> std::io::Result<()> {
        if self.hashes_open {
            self.w.write_event(Event::End(BytesEnd::new("hashes")))?;
        }
        if !references.is_empty() {
            self.w
                .create_element("references")
                .write_inner_content(|w| {
                    for (path, c4) in references {
                        w.create_element("hashlistreference")
                            .write_inner_content(|w| {
                                element(w, "path", &[], path)?;
                                element(w, "c4", &[], c4)
                            })?;
                    }
                    Ok(())
                })?;
        }
        self.w.write_event(Event::End(BytesEnd::new("hashlist")))?;
        self.w.get_mut().write_all(b"\n")?;
        let f = self
            .w
            .into_inner()
            .into_inner()
            .map_err(std::io::Error::other)?;
        f.sync_all()
    }
}

/// The chain file's bytes: `entries` in order.
pub(crate) fn chain_bytes(entries: &[ChainEntry]) -> std::io::Result<Vec<u8>> {
    let mut w = quick_xml::Writer::new_with_indent(Vec::new(), b' ', 2);
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    w.create_element("ascmhldirectory")
        .with_attribute(("xmlns", CHAIN_NS))
        .write_inner_content(|w| {
            for c in entries {
                let seq = c.sequence.to_string();
                w.create_element("hashlist")
                    .with_attribute(("sequencenr", seq.as_str()))
                    .write_inner_content(|w| {
                        element(w, "path", &[], &c.path)?;
                        element(w, c.format.name(), &[], &c.value)?;
                        Ok(())
                    })?;
            }
            Ok(())
        })?;
    let mut bytes = w.into_inner();
    bytes.push(b'\n');
    Ok(bytes)
}

/// A generation's file name: `NNNN_<root>_<YYYY-MM-DD_HHMMSS>Z.mhl`.
pub(crate) fn file_name(number: u32, root_name: &str, created: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(created);
    format!("{number:04}_{root_name}_{y:04}-{mo:02}-{d:02}_{h:02}{mi:02}{s:02}Z.mhl")
}

/// `YYYY-MM-DDTHH:MM:SS+00:00` (XSD dateTime, UTC).
pub(crate) fn date_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+00:00")
}

/// UTC calendar date and time of `t` (times before 1970 are taken as 1970-01-01).
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, rem / 3600, rem / 60 % 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_and_names_are_utc_calendar_values() {
        // 2020-01-16 09:15:00 UTC = 1579166100 (date -u -d '2020-01-16 09:15:00' +%s).
        let t = UNIX_EPOCH + Duration::from_secs(1_579_166_100);
        assert_eq!(date_time(t), "2020-01-16T09:15:00+00:00");
        assert_eq!(
            file_name(1, "A002R2EC", t),
            "0001_A002R2EC_2020-01-16_091500Z.mhl"
        );
        // A leap day and the end of a year (date -u -d '2024-02-29 23:59:59' +%s = 1709251199).
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(date_time(t), "2024-02-29T23:59:59+00:00");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31 23:59:59
        assert_eq!(date_time(t), "2024-12-31T23:59:59+00:00");
        assert_eq!(date_time(UNIX_EPOCH), "1970-01-01T00:00:00+00:00");
    }
}
