//! The compatibility set: the same cases on every S3 server the project's scripts start (Garage,
//! LocalStack, moto, s3s-fs), each asserting either the right result or a clear one-line refusal,
//! never an exit 0 with wrong bytes (every byte tally claims is checked with the AWS CLI).
//!
//! With `TALLY_COMPAT_RESULTS=DIR`, each server's outcomes are written to `DIR/SERVER.jsonl`;
//! `scripts/compat-table DIR` renders them into the table of docs/servers.md.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::proxy::{Fault, Force, Op, Plan, Proxy};
use crate::support::*;

/// Every checksum `--checksum` takes.
const ALGORITHMS: [&str; 10] = [
    "crc32",
    "crc32c",
    "crc64nvme",
    "sha1",
    "sha256",
    "sha512",
    "md5",
    "xxhash64",
    "xxhash3",
    "xxhash128",
];

/// A single PUT's size, and a multipart upload's: three parts of 5, 5 and 1 MiB (5 MiB is the
/// smallest part the servers that enforce it accept).
const SMALL: u64 = 100 * 1024;
const LARGE: u64 = 11 * MIB;

/// What one case came to on one server.
#[derive(Debug)]
enum Outcome {
    /// The right result, with what it rests on.
    Works(String),
    /// A refusal: tally exited non-zero with this line, and nothing it claimed was wrong.
    Refused(String),
}

/// One server's run of the set: its outcomes, and every wrong claim met (the test fails on any).
struct Run<'a> {
    name: &'static str,
    s: &'a Server,
    dir: tempfile::TempDir,
    rows: Vec<(String, Outcome)>,
    wrong: Vec<String>,
}

/// The last non-empty line of stderr: tally's one-line error.
fn last_line(out: &Output) -> String {
    stderr(out)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn md5_hex(path: &Path) -> String {
    use md5::Digest as _;
    hex(&md5::Md5::digest(std::fs::read(path).unwrap()))
}

impl<'a> Run<'a> {
    fn new(name: &'static str, s: &'a Server) -> Run<'a> {
        Run {
            name,
            s,
            dir: s.temp_dir(),
            rows: Vec::new(),
            wrong: Vec::new(),
        }
    }

    fn key(&self, case: &str) -> String {
        unique(&format!("compat/{}/{case}", self.name))
    }

    fn file(&self, name: &str, len: u64, seed: u64) -> PathBuf {
        random_file(self.dir.path(), name, len, seed)
    }

    /// Records `out` of case `case`: exit 0 must come with `right()` holding (else a wrong
    /// claim); any other exit must be one clear line (no panic, no empty message).
    fn record(
        &mut self,
        case: &str,
        out: &Output,
        right: impl FnOnce(&Output) -> Result<String, String>,
    ) -> bool {
        let outcome = if out.status.success() {
            match right(out) {
                Ok(note) => Outcome::Works(note),
                Err(why) => {
                    self.wrong.push(format!("{case}: exit 0 but {why}"));
                    return false;
                }
            }
        } else {
            let line = last_line(out);
            let all = stderr(out);
            if line.is_empty() || all.contains("panicked") || out.status.code().is_none() {
                self.wrong.push(format!(
                    "{case}: no clear refusal ({:?}): {all}",
                    out.status
                ));
                return false;
            }
            Outcome::Refused(line)
        };
        let ok = matches!(outcome, Outcome::Works(_));
        self.rows.push((case.to_owned(), outcome));
        ok
    }

    /// `tally upload` of `path` to `key` with `extra`; the outcome checked with the AWS CLI.
    fn upload(&mut self, case: &str, path: &Path, key: &str, extra: &[&str]) -> bool {
        let url = self.s.url(key);
        let mut args = vec![
            "upload",
            path.to_str().unwrap(),
            &url,
            "--part-size",
            "5MiB",
            "--json",
        ];
        args.extend_from_slice(extra);
        let s = self.s;
        let out = s.tally(&args);
        self.record(case, &out, |out| {
            r_same(s, key, path)?;
            let r: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("no JSON report ({e})"))?;
            Ok(format!(
                "{}: object checksum {}, ETag {}",
                r["method"].as_str().unwrap_or("?"),
                r["checks"]["object_checksum"].as_str().unwrap_or("?"),
                r["checks"]["etag"].as_str().unwrap_or("?")
            ))
        })
    }

    fn write(&self) {
        let Ok(dir) = std::env::var("TALLY_COMPAT_RESULTS") else {
            return;
        };
        std::fs::create_dir_all(&dir).unwrap();
        let mut f =
            std::fs::File::create(Path::new(&dir).join(format!("{}.jsonl", self.name))).unwrap();
        for (case, o) in &self.rows {
            let (outcome, detail) = match o {
                Outcome::Works(n) => ("works", n),
                Outcome::Refused(l) => ("refused", l),
            };
            let line = serde_json::json!({
                "server": self.name, "case": case, "outcome": outcome, "detail": detail,
            });
            writeln!(f, "{line}").unwrap();
        }
    }

    fn finish(self) {
        self.write();
        for (case, o) in &self.rows {
            println!("{} {case}: {o:?}", self.name);
        }
        assert!(
            self.wrong.is_empty(),
            "{}: wrong claims:\n{}",
            self.name,
            self.wrong.join("\n")
        );
    }
}

/// Every case, on one server.
fn run_all(name: &'static str, s: &Server) {
    let mut r = Run::new(name, s);
    let small = r.file("small", SMALL, 1);
    let large = r.file("large", LARGE, 2);

    // Single PUT and multipart, for each checksum.
    let mut uploaded: Vec<(&str, String, PathBuf)> = Vec::new();
    for alg in ALGORITHMS {
        for (shape, path) in [("put", &small), ("multipart", &large)] {
            let key = r.key(&format!("{shape}-{alg}"));
            if r.upload(&format!("{shape} {alg}"), path, &key, &["--checksum", alg]) {
                uploaded.push((alg, key, path.clone()));
            }
        }
    }
    // The defaults must work wherever `aws s3 cp` works: it does on all four.
    for shape in [
        "put sha256",
        "multipart sha256",
        "put crc32",
        "multipart crc32",
    ] {
        assert!(
            r.rows
                .iter()
                .any(|(c, o)| c == shape && matches!(o, Outcome::Works(_))),
            "{name}: {shape} must upload (aws s3 cp does): {:?} {:?}",
            r.rows.iter().find(|(c, _)| c == shape),
            r.wrong
        );
    }

    // verify, verify with a changed byte, download, md5: on the multipart SHA-256 object and
    // the single-PUT CRC32 one (each uploaded above, asserted).
    for (alg, shape) in [("sha256", "multipart"), ("crc32", "put")] {
        let (_, key, path) = uploaded
            .iter()
            .find(|(a, k, _)| *a == alg && k.contains(&format!("/{shape}-")))
            .cloned()
            .unwrap();
        let url = s.url(&key);
        let p = path.to_str().unwrap();
        let out = s.tally(["verify", p, &url, "--json"]);
        r.record(&format!("verify ({shape} {alg})"), &out, |out| {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            Ok(format!(
                "{} ({})",
                v["method"].as_str().unwrap_or("?"),
                v["why"].as_str().unwrap_or("")
            ))
        });
        let mut changed = std::fs::read(&path).unwrap();
        let at = changed.len() / 2;
        changed[at] ^= 1;
        let other = r.dir.path().join(format!("changed-{shape}"));
        std::fs::write(&other, &changed).unwrap();
        for flag in [None, Some("--download")] {
            let mut args = vec!["verify", other.to_str().unwrap(), &url];
            args.extend(flag);
            let out = s.tally(&args);
            let case = format!(
                "verify{} a changed byte ({shape} {alg})",
                flag.map(|f| format!(" {f}")).unwrap_or_default()
            );
            if out.status.code() == Some(1) {
                r.rows
                    .push((case, Outcome::Works("DIFFERS (exit 1)".into())));
            } else {
                r.record(&case, &out, |_| {
                    Err("a changed file verified as the object".into())
                });
            }
        }
        let dest = r.dir.path().join(format!("down-{shape}"));
        let out = s.tally(["download", &url, dest.to_str().unwrap(), "--json"]);
        r.record(&format!("download ({shape} {alg})"), &out, |out| {
            if file_sha256(&dest) != file_sha256(&path) {
                return Err("the downloaded file is not the object".into());
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            Ok(if v["verified"].as_bool() == Some(true) {
                format!("verified: {}", v["checked"])
            } else {
                format!(
                    "not verified: {}",
                    v["not_verified"].as_str().unwrap_or("?")
                )
            })
        });
        let out = s.tally(["md5", &url, "--json"]);
        r.record(&format!("md5 ({shape} {alg})"), &out, |out| {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["md5"].as_str() == Some(md5_hex(&path).as_str()) {
                Ok("the file's MD5".into())
            } else {
                Err(format!("md5 printed {} for another MD5", v["md5"]))
            }
        });
    }

    // A tree, uploaded twice: the second run proves or sends again, never skips wrongly.
    let tree = r.dir.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let t_small = random_file(&tree, "a.bin", SMALL, 3);
    let t_large = random_file(&tree, "b.bin", LARGE, 4);
    let prefix = r.key("tree") + "/";
    let url = s.url(&prefix);
    for run in ["tree, first run", "tree, second run"] {
        let out = s.tally([
            "upload",
            tree.to_str().unwrap(),
            &url,
            "--part-size",
            "5MiB",
            "--json",
        ]);
        r.record(run, &out, |out| {
            r_same(s, &format!("{prefix}a.bin"), &t_small)?;
            r_same(s, &format!("{prefix}b.bin"), &t_large)?;
            let text = String::from_utf8_lossy(&out.stdout);
            let summary = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["kind"] == "summary")
                .unwrap_or_default();
            Ok(format!(
                "{} sent, {} skipped",
                summary["uploaded"], summary["skipped"]
            ))
        });
    }

    // Uploads in progress: listed, and aborted by id; a fresh one is not "older than 7d".
    let key = r.key("in-progress");
    let created = s.aws([
        "s3api",
        "create-multipart-upload",
        "--bucket",
        &s.bucket,
        "--key",
        &key,
    ]);
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["UploadId"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = s.url(&key);
    let out = s.tally(["uploads", &url]);
    r.record("uploads", &out, |out| {
        if String::from_utf8_lossy(&out.stdout).contains(&id) {
            Ok("lists it".into())
        } else {
            Err(format!("the upload {id} is not listed"))
        }
    });
    let out = s.tally(["abort", &url, "--all-older-than", "7d"]);
    r.record("abort --all-older-than 7d (a fresh upload)", &out, |out| {
        if String::from_utf8_lossy(&out.stdout).contains(&id) {
            Err("aborted an upload made seconds earlier".into())
        } else {
            Ok("left alone".into())
        }
    });
    let out = s.tally(["abort", &url, "--upload-id", &id]);
    r.record("abort --upload-id", &out, |_| Ok("aborted".into()));

    // A flipped bit in an upload body, single PUT and multipart: refused (exit 1), or, exit 0,
    // the object is the file.
    for (shape, path, alg) in [("put", &small, "crc32"), ("multipart", &large, "sha256")] {
        let key = r.key(&format!("flip-up-{shape}"));
        let url = s.url(&key);
        let proxy = Proxy::start(
            &s.endpoint,
            Plan {
                forced: vec![Force {
                    op: Op::Part,
                    nth: 1,
                    fault: Fault::FlipBit,
                }],
                ..Plan::default()
            },
        );
        let out = s.tally([
            "upload",
            path.to_str().unwrap(),
            &url,
            "--endpoint-url",
            &proxy.url,
            "--part-size",
            "5MiB",
            "--checksum",
            alg,
            "--concurrency",
            "1",
            "--json",
        ]);
        let case = format!("a flipped bit in an upload body ({shape} {alg})");
        if out.status.code() == Some(1) {
            let line = last_line(&out);
            let note = if line.contains("nothing wrong was stored") {
                r.wrong
                    .push(format!("{case}: claims what the server kept: {line}"));
                line
            } else {
                format!("refused on receipt (exit 1): {line}")
            };
            r.rows.push((case, Outcome::Works(note)));
        } else {
            r.record(&case, &out, |_| {
                r_same(s, &key, path)?;
                Ok("the damaged body was sent again; the object is the file".into())
            });
        }
        s.abort_uploads_if_listed(&key);
    }

    // A flipped bit in every GET of a download's body: never exit 0 with wrong bytes.
    for (alg, shape) in [("sha256", "multipart"), ("crc32", "put")] {
        let (_, key, _) = uploaded
            .iter()
            .find(|(a, k, _)| *a == alg && k.contains(&format!("/{shape}-")))
            .cloned()
            .unwrap();
        let proxy = Proxy::start_flipping(&s.endpoint, Plan::default(), Some(key.clone()));
        let dest = r.dir.path().join(format!("flip-down-{shape}"));
        let out = s.tally([
            "download",
            &s.url(&key),
            dest.to_str().unwrap(),
            "--endpoint-url",
            &proxy.url,
            "--json",
        ]);
        let case = format!("a flipped bit in a download body ({shape} {alg})");
        if out.status.code() == Some(1) {
            let note = if dest.exists() {
                r.wrong.push(format!(
                    "{case}: exit 1 but the damaged file is under its name"
                ));
                String::new()
            } else {
                format!("caught (exit 1): {}", last_line(&out))
            };
            r.rows.push((case, Outcome::Works(note)));
        } else if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if v["verified"].as_bool() == Some(false) {
                // Said honestly, but wrong bytes under the name with exit 0: on each of these
                // servers something proves the bytes (s3s-fs, which hides the part layout of a
                // multipart object: its ETag, with the part size searched).
                r.wrong.push(format!(
                    "{case}: exit 0 with wrong bytes, said not verified: {}",
                    v["not_verified"].as_str().unwrap_or("?")
                ));
            } else {
                r.wrong.push(format!(
                    "{case}: exit 0, claimed verified, with wrong bytes"
                ));
            }
        } else {
            r.record(&case, &out, |_| unreachable!());
        }
    }
    r.finish();
}

fn r_same(s: &Server, key: &str, path: &Path) -> Result<(), String> {
    let got = s.download_sha256(key);
    if got == file_sha256(path) {
        Ok(())
    } else {
        Err(format!(
            "{key}: the object's bytes (aws s3 cp) are not the file's"
        ))
    }
}

impl Server {
    /// Aborts `key`'s uploads in progress where the server can list them.
    fn abort_uploads_if_listed(&self, key: &str) {
        let out = self.aws_output([
            "s3api",
            "list-multipart-uploads",
            "--bucket",
            &self.bucket,
            "--prefix",
            key,
        ]);
        if out.status.success() {
            self.abort_uploads(key);
        }
    }
}

#[test]
fn on_garage() {
    run_all("garage", garage());
}

#[test]
fn on_localstack() {
    run_all("localstack", localstack());
}

#[test]
fn on_moto() {
    run_all("moto", moto());
}

#[test]
fn on_s3s_fs() {
    run_all("s3s-fs", s3s_fs());
}
