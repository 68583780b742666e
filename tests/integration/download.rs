//! `tally download` against Garage and LocalStack: byte-exact files for objects uploaded by tally
//! and by the AWS CLI, the report saying what each was checked against; bytes flipped on the way
//! (through the proxy) fetched again or named; kill -9 and resume; an object replaced mid-way;
//! bad destinations.

use std::path::{Path, PathBuf};

use crate::proxy::{Fault, Force, Op, Plan, Proxy};
use crate::support::*;

fn download_args<'a>(url: &'a str, dest: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["download", url, dest.to_str().unwrap(), "--json"];
    v.extend_from_slice(extra);
    v
}

/// The kinds of proof in a `--json` report.
fn kinds(r: &serde_json::Value) -> Vec<String> {
    r["checked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Files in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Downloads `key` into a fresh folder; asserts the file is `src` byte for byte and nothing else
/// is left beside it; returns the report.
fn fetch_exact(s: &Server, key: &str, src: &Path) -> serde_json::Value {
    let dir = s.temp_dir();
    let dest = dir.path().join("got");
    let url = s.url(key);
    let r = json_report(&s.tally(download_args(&url, &dest, &[])));
    assert_eq!(
        file_sha256(&dest),
        file_sha256(src),
        "{key}: the download is the file"
    );
    assert_eq!(listing(dir.path()), vec!["got"], "{key}: nothing else left");
    r
}

#[test]
fn objects_from_tally_and_the_aws_cli_download_byte_exact_saying_what_was_checked() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let big = random_file(dir.path(), "big.bin", 2 * 8 * MIB + 12345, 301);
        let small = random_file(dir.path(), "small.bin", 100_000, 302);
        let empty = random_file(dir.path(), "empty.bin", 0, 303);
        let base = unique(&format!("dl/{name}"));

        // tally, SHA-256 per part.
        let key = format!("{base}/tally");
        s.put(&big, &key, "5MiB");
        let r = fetch_exact(s, &key, &big);
        let want: &[&str] = if name == "localstack" {
            &["part_checksums", "composite_checksum"]
        } else {
            // Garage has no GetObjectAttributes and sends no part checksum with a GET.
            &["composite_checksum"]
        };
        assert_eq!(kinds(&r), want, "{name} tally");
        assert_eq!(r["parts"], 4, "{name}");
        assert_eq!(r["verified"], true);
        let text = r["checked"][0]["text"].as_str().unwrap();
        if name == "localstack" {
            assert_eq!(text, "each of 4 parts against S3's SHA256 part checksums");
        }

        // The AWS CLI, default settings (8 MiB parts).
        let key = format!("{base}/cli");
        s.aws(["s3", "cp", "--quiet", big.to_str().unwrap(), &s.url(&key)]);
        let r = fetch_exact(s, &key, &big);
        assert_eq!(
            r["parts"], 3,
            "{name}: the CLI's 8 MiB parts are the ranges"
        );
        // This CLI (1.45) sends CRC32 part checksums by default; CRC32 is weak alone, so the
        // multipart ETag from the parts' MD5s is compared too.
        let want: &[&str] = if name == "localstack" {
            &["part_checksums", "composite_checksum", "multipart_etag"]
        } else {
            &["composite_checksum", "multipart_etag"]
        };
        assert_eq!(kinds(&r), want, "{name} cli");
        assert_eq!(r["checked"][0]["algorithm"], "CRC32");

        // The AWS CLI without any checksum (as older CLIs upload): only the ETag can prove it.
        let key = format!("{base}/cli-none");
        let out = s.aws_output_env(
            &[("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")],
            ["s3", "cp", "--quiet", big.to_str().unwrap(), &s.url(&key)],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let r = fetch_exact(s, &key, &big);
        if name == "localstack" {
            // As AWS does, LocalStack gives such an object a CRC64NVME full-object checksum.
            assert_eq!(kinds(&r), ["full_object_crc"], "{name} cli, no checksum");
            assert_eq!(r["checked"][0]["algorithm"], "CRC64NVME");
        } else {
            assert_eq!(kinds(&r), ["multipart_etag"], "{name} cli, no checksum");
            assert_eq!(
                r["checked"][0]["text"],
                "the multipart ETag, from the 3 parts' MD5s"
            );
        }

        // The AWS CLI with SHA-256.
        let key = format!("{base}/cli-sha256");
        s.aws([
            "s3",
            "cp",
            "--quiet",
            "--checksum-algorithm",
            "SHA256",
            big.to_str().unwrap(),
            &s.url(&key),
        ]);
        let r = fetch_exact(s, &key, &big);
        let want: &[&str] = if name == "localstack" {
            &["part_checksums", "composite_checksum"]
        } else {
            &["composite_checksum"]
        };
        assert_eq!(kinds(&r), want, "{name} cli sha256");
        assert_eq!(r["checked"][0]["algorithm"], "SHA256");

        // A single PUT, and an empty object.
        let key = format!("{base}/single");
        s.put(&small, &key, "5MiB");
        let r = fetch_exact(s, &key, &small);
        assert_eq!(kinds(&r), ["object_checksum"], "{name} single");
        let key = format!("{base}/empty");
        s.put(&empty, &key, "5MiB");
        let r = fetch_exact(s, &key, &empty);
        assert_eq!(kinds(&r), ["object_checksum"], "{name} empty");
        assert_eq!(r["size"], 0);
    }
}

/// A 4-part object (parts of 5 MiB) uploaded by tally to `s`; returns (file, key).
fn four_parts(s: &Server, dir: &Path, name: &str, seed: u64) -> (PathBuf, String) {
    let src = random_file(dir, "src.bin", 3 * 5 * MIB + 777_777, seed);
    let key = unique(&format!("dl/{name}"));
    s.put(&src, &key, "5MiB");
    (src, key)
}

/// The GETs of the object the proxy saw: each one's target and Range header.
fn gets(proxy: &Proxy) -> Vec<String> {
    proxy
        .stats
        .events()
        .into_iter()
        .filter(|e| e.op == Op::Get)
        .map(|e| format!("{} {}", e.target, e.header("range").unwrap_or("")))
        .collect()
}

#[test]
fn without_get_object_attributes_each_part_is_checked_against_the_checksum_its_get_carries() {
    // LocalStack sends a part's checksum with a GET of exactly that part; GetObjectAttributes is
    // answered 501 by the proxy, so only those replies can check the parts one by one.
    let s = localstack();
    let dir = s.temp_dir();
    let (src, key) = four_parts(s, dir.path(), "reply", 351);
    let proxy = Proxy::start(
        &s.endpoint,
        Plan {
            forced: vec![
                Force {
                    op: Op::Other,
                    nth: 1,
                    fault: Fault::NotImplemented,
                },
                Force {
                    op: Op::Get,
                    nth: 3,
                    fault: Fault::FlipGetBody,
                },
            ],
            ..Plan::default()
        },
    );
    let dest = dir.path().join("out");
    let url = s.url(&key);
    let r = json_report(&s.tally(download_args(&url, &dest, &["--endpoint-url", &proxy.url])));
    let events = proxy.stats.events();
    assert!(
        events[..2]
            .iter()
            .any(|e| e.target.contains("attributes") && e.forced),
        "GetObjectAttributes was refused: {:?}",
        events.iter().map(|e| &e.target).collect::<Vec<_>>()
    );
    assert_eq!(file_sha256(&dest), file_sha256(&src), "byte-exact");
    assert_eq!(kinds(&r), ["reply_checksums", "composite_checksum"], "{r}");
    assert_eq!(
        r["checked"][0]["text"],
        "each of 4 parts against the SHA256 checksum S3 sent with it"
    );
    assert_eq!(r["parts_refetched"].as_array().unwrap().len(), 1, "{r}");
    for e in events.iter().filter(|e| e.op == Op::Get) {
        assert_eq!(
            e.header("x-amz-checksum-mode"),
            Some("ENABLED"),
            "{}",
            e.target
        );
        assert!(
            e.header("if-match").is_some(),
            "every GET pinned: {}",
            e.target
        );
    }
}

#[test]
fn on_garage_a_flipped_bit_fails_the_composite_and_every_part_is_fetched_once_more() {
    // Garage knows no part's checksum: only the whole object's composite can catch the flip.
    let s = garage();
    let dir = s.temp_dir();
    let (src, key) = four_parts(s, dir.path(), "flip-garage", 381);
    let url = s.url(&key);
    let proxy = Proxy::start(
        &s.endpoint,
        Plan {
            forced: vec![Force {
                op: Op::Get,
                nth: 2,
                fault: Fault::FlipGetBody,
            }],
            ..Plan::default()
        },
    );
    let dest = dir.path().join("out");
    let out = s.tally([
        "download",
        &url,
        dest.to_str().unwrap(),
        "--endpoint-url",
        &proxy.url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_sha256(&dest), file_sha256(&src), "byte-exact");
    assert_eq!(gets(&proxy).len(), 8, "4 parts, then all 4 again");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "  checked   the object's SHA256 composite checksum, from the 4 parts' checksums"
        ) && text.contains("refetched every part once"),
        "{text}"
    );
    assert!(!text.contains("NOT verified"), "{text}");
    // Every GET of part 3 flipped: exit 1 for the object, which cannot name a part; no DEST.
    let proxy = Proxy::start_flipping(&s.endpoint, Plan::default(), Some("partNumber=3".into()));
    let dest = dir.path().join("never");
    let out = s.tally([
        "download",
        &url,
        dest.to_str().unwrap(),
        "--endpoint-url",
        &proxy.url,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "the object arrived different from S3's SHA256 object checksum on each of 2 fetches"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!dest.exists());
}

#[test]
fn a_bit_flipped_in_a_get_body_is_fetched_again_or_the_part_is_named() {
    let s = localstack();
    let dir = s.temp_dir();
    let (src, key) = four_parts(s, dir.path(), "flip", 311);
    let url = s.url(&key);
    // The 2nd GET's body has one bit flipped: that part is fetched again, the file is exact.
    let proxy = Proxy::start(
        &s.endpoint,
        Plan {
            forced: vec![Force {
                op: Op::Get,
                nth: 2,
                fault: Fault::FlipGetBody,
            }],
            ..Plan::default()
        },
    );
    let dest = dir.path().join("once");
    let r = json_report(&s.tally(download_args(&url, &dest, &["--endpoint-url", &proxy.url])));
    assert_eq!(proxy.stats.get(&proxy.stats.forced), 1, "one body flipped");
    assert_eq!(file_sha256(&dest), file_sha256(&src), "byte-exact");
    let refetched = r["parts_refetched"].as_array().unwrap();
    assert_eq!(refetched.len(), 1, "{r}");
    assert_eq!(r["parts_fetched"], 5, "4 parts, one of them twice");
    assert_eq!(gets(&proxy).len(), 5);
    assert_eq!(kinds(&r), ["part_checksums", "composite_checksum"]);

    // Every GET of part 2 flipped: exit 1 naming part 2, no DEST; the good parts kept to resume.
    // Parts of a multipart object are fetched as GET ?partNumber=N.
    let part2 = "partNumber=2".to_owned(); // 4 parts: no partNumber=2x
    let proxy = Proxy::start_flipping(&s.endpoint, Plan::default(), Some(part2.clone()));
    let dest = dir.path().join("never");
    let out = s.tally(download_args(&url, &dest, &["--endpoint-url", &proxy.url]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{} {:?}",
        stderr(&out),
        gets(&proxy)
    );
    let err = stderr(&out);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("tally: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("fetching it again"))
            .count(),
        1,
        "the fetch again is noted: {err}"
    );
    // The proxy flips the same bit every time, so the second fetch hashes to the same wrong value
    // as the first: the same bytes twice are no passing network fault, and fetching more would
    // only repeat them (issue 26): tally stops there and says so.
    assert!(err.contains("the same bytes arrived every time"), "{err}");
    let err = errors[0];
    assert!(
        err.contains(&format!("part 2 (bytes {}..{})", 5 * MIB, 10 * MIB))
            && err.contains("S3's SHA256 part checksum"),
        "{err}"
    );
    assert!(!dest.exists(), "nothing renamed");
    let part2_gets = gets(&proxy).iter().filter(|r| r.contains(&part2)).count();
    assert_eq!(
        part2_gets, 2,
        "part 2 fetched twice (the same wrong bytes twice), then given up"
    );
    assert!(dir.path().join("never\\tally-partial").exists());
}

/// Intact part lines in a download journal.
fn journal_parts(journal: &Path) -> usize {
    std::fs::read(journal)
        .map(|b| b.iter().filter(|c| **c == b'\n').count().saturating_sub(1))
        .unwrap_or(0)
}

#[test]
fn kill_9_mid_download_then_the_same_command_fetches_only_the_unverified_parts() {
    let s = garage();
    let dir = s.temp_dir();
    let src = random_file(dir.path(), "src.bin", 6 * 5 * MIB - 4321, 321);
    let key = unique("dl/kill");
    s.put(&src, &key, "5MiB");
    let url = s.url(&key);
    let dest = dir.path().join("out.bin");
    let journal = dir.path().join("out.bin\\tally-journal");
    let seams = Seams::new(&dir.path().join("seams"));
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let args = download_args(
        &url,
        &dest,
        &["--endpoint-url", &proxy.url, "--concurrency", "2"],
    );
    let mut cmd = s.command();
    cmd.args(&args);
    seams.hold(&mut cmd, "dlpart", &[2]);
    let mut child = Running::spawn(&mut cmd, "tally download (held after 2 parts)");
    seams.reached(&mut child, "dlpart", 2);
    child.kill9();
    let recorded = journal_parts(&journal);
    assert!((2..6).contains(&recorded), "{recorded} parts recorded");
    assert!(!dest.exists(), "no DEST before the end");
    // The same command (the same endpoint: the journal pins it), counting its GETs.
    let before = gets(&proxy).len();
    let r = json_report(&s.tally(&args));
    assert_eq!(file_sha256(&dest), file_sha256(&src), "byte-exact");
    assert_eq!(
        gets(&proxy).len() - before,
        6 - recorded,
        "only the parts not recorded were fetched"
    );
    assert_eq!(r["parts_resumed"], recorded as u64);
    assert_eq!(kinds(&r), ["composite_checksum"]);
    assert_eq!(
        listing(dir.path()),
        ["out.bin", "seams", "src.bin"],
        "partial and journal gone"
    );
}

#[test]
fn an_object_replaced_mid_download_stops_it_with_nothing_renamed() {
    let s = garage();
    let dir = s.temp_dir();
    let (_, key) = four_parts(s, dir.path(), "replaced", 331);
    let other = random_file(dir.path(), "other.bin", 3 * MIB, 332);
    let url = s.url(&key);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("x");
    let seams = Seams::new(&dir.path().join("seams"));
    let mut cmd = s.command();
    cmd.args(download_args(&url, &dest, &["--concurrency", "1"]));
    seams.hold(&mut cmd, "dlpart", &[1]);
    let mut child = Running::spawn(&mut cmd, "tally download (held after part 1)");
    seams.reached(&mut child, "dlpart", 1);
    s.aws(["s3", "cp", "--quiet", other.to_str().unwrap(), &url]);
    seams.go("dlpart", 1);
    let out = child.finish(TALLY_BOUND);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("was replaced while it was being read"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        listing(&out_dir).is_empty(),
        "no DEST, no partial, no journal"
    );
}

/// Mounts a tmpfs of `size` (with `ro` for a read-only one) at `dir`; false where this machine
/// does not allow it (not root): the caller says so.
fn mount_tmpfs(dir: &Path, opts: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs", dir.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success())
}

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn bad_destinations_and_missing_objects_are_one_line_exit_2() {
    let s = garage();
    let dir = s.temp_dir();
    let (_, key) = four_parts(s, dir.path(), "bad", 341);
    let url = s.url(&key);
    let one_line_2 = |out: &std::process::Output, says: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(says), "{says}: {err}");
        assert!(!err.contains("Error {"), "no Debug dump: {err}");
    };
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let run = |u: &str, d: &Path| s.tally(["download", u, d.to_str().unwrap()]);
    one_line_2(&run(&s.url(&unique("dl/missing")), &work.join("a")), "404");
    one_line_2(
        &run(
            &format!("s3://no-such-bucket-{}/k", std::process::id()),
            &work.join("a"),
        ),
        "HeadObject failed",
    );
    // A folder that does not exist yet is made (as `aws s3 cp` does) once the object is found;
    // a missing object made none (above).
    let made = run(&url, &work.join("nope").join("a"));
    assert!(made.status.success(), "{}", stderr(&made));
    assert!(work.join("nope").join("a").is_file());
    std::fs::remove_dir_all(work.join("nope")).unwrap();
    let name = key.rsplit('/').next().unwrap();
    std::fs::create_dir(work.join(name)).unwrap();
    one_line_2(&run(&url, &work), "is a directory");
    std::fs::remove_dir(work.join(name)).unwrap();
    assert!(
        listing(&work).is_empty(),
        "nothing written: {:?}",
        listing(&work)
    );

    // A full disk: an 8 MiB tmpfs for a 15.7 MiB object.
    let small = dir.path().join("small");
    if !mount_tmpfs(&small, "size=8m") {
        eprintln!(
            "SKIPPED the full-disk and read-only cases: cannot mount a tmpfs here (not root)"
        );
        return;
    }
    let _m = Mounted(small.clone());
    let out = run(&url, &small.join("x"));
    one_line_2(&out, "the disk is full");
    assert!(!small.join("x").exists(), "nothing renamed");
    // The partial file is given its size up front (fallocate), so the full disk is found before
    // any byte is fetched, and nothing is left behind.
    assert!(
        listing(&small).is_empty(),
        "nothing left: {:?}",
        listing(&small)
    );
    let ro = dir.path().join("ro");
    assert!(mount_tmpfs(&ro, "ro,size=1m"));
    let _r = Mounted(ro.clone());
    one_line_2(&run(&url, &ro.join("x")), "read-only");

    // A file already downloaded, its folder made read-only since (a card locked after offload):
    // proving it needs no lock file, so the re-run says "already there"; replacing it cannot be
    // done and says why.
    let done = dir.path().join("done");
    assert!(mount_tmpfs(&done, "size=32m"));
    let _d = Mounted(done.clone());
    let first = run(&url, &done.join("x"));
    assert!(first.status.success(), "{}", stderr(&first));
    let remount = std::process::Command::new("mount")
        .args(["-o", "remount,ro", done.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(remount.success(), "remount read-only");
    let again = s.tally(["download", &url, done.join("x").to_str().unwrap(), "--json"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let j: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(j["already_present"], true, "{j}");
    one_line_2(
        &s.tally([
            "download",
            &url,
            done.join("x").to_str().unwrap(),
            "--force",
        ]),
        "read-only",
    );
    assert_eq!(listing(&done), vec!["x".to_owned()], "nothing added");
}

#[test]
fn memory_stays_bounded_whatever_the_part_size() {
    // One 96 MiB part (a single PUT): collecting it whole would take at least 96 MiB.
    let s = garage();
    let dir = s.temp_dir();
    let src = random_file(dir.path(), "src.bin", 96 * MIB, 361);
    let key = unique("dl/memory");
    s.put(&src, &key, "100MiB");
    let dest = dir.path().join("out");
    // The child's peak RSS from the kernel (getrusage of the children of a Python 3 wrapper:
    // Python is on every machine the README names; GNU time may not be).
    let mut cmd = std::process::Command::new("python3");
    cmd.args([
        "-c",
        "import resource, subprocess, sys\n\
         r = subprocess.run(sys.argv[1:])\n\
         print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n\
         sys.exit(r.returncode)",
        env!("CARGO_BIN_EXE_tally"),
    ]);
    s.apply_env(&mut cmd);
    cmd.args(download_args(&s.url(&key), &dest, &[]));
    let out = run_bounded(&mut cmd, TALLY_BOUND, "tally download (peak RSS measured)");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(file_sha256(&dest), file_sha256(&src));
    let err = stderr(&out);
    let kib: u64 = err
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {err}"));
    assert!(
        kib < 64 * 1024,
        "peak RSS {} MiB for a 96 MiB part: a part is never held whole",
        kib / 1024
    );
    eprintln!(
        "peak RSS {} MiB for a 96 MiB single-part download",
        kib / 1024
    );
}

/// The JSON lines of a tree command: one per object, then the summary (`"kind": "summary"`).
fn tree_lines(out: &std::process::Output) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let summary = lines.pop().expect("a summary");
    assert_eq!(summary["kind"], "summary", "{summary}");
    (lines, summary)
}

#[test]
fn a_prefix_downloads_into_a_folder_refusing_keys_that_would_leave_it() {
    let s = garage();
    let dir = s.temp_dir();
    let pfx = unique("dl/tree");
    let a = random_file(dir.path(), "a.bin", 2 * 5 * MIB + 99, 371);
    let b = random_file(dir.path(), "b.bin", 70_000, 372);
    let c = random_file(dir.path(), "c.bin", 9 * MIB, 373);
    s.put(&a, &format!("{pfx}/a.bin"), "5MiB");
    s.put(&b, &format!("{pfx}/sub/b.bin"), "5MiB");
    s.aws([
        "s3",
        "cp",
        "--quiet",
        c.to_str().unwrap(),
        &s.url(&format!("{pfx}/sub/deeper/c.bin")),
    ]);
    // A folder marker, and keys that would leave the folder.
    let put = |key: &str| {
        s.put(&b, key, "5MiB");
    };
    s.aws([
        "s3api",
        "put-object",
        "--bucket",
        &s.bucket,
        "--key",
        &format!("{pfx}/empty-folder/"),
    ]);
    for bad in ["../escape.bin", "x//double.bin", "C:/drive.bin"] {
        put(&format!("{pfx}/{bad}"));
    }
    let listed = s.aws([
        "s3api",
        "list-objects-v2",
        "--bucket",
        &s.bucket,
        "--prefix",
        &format!("{pfx}/"),
    ]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(
        listed["Contents"].as_array().unwrap().len(),
        7,
        "the server keeps every key as given: {listed}"
    );
    let outer = dir.path().join("outer");
    let into = outer.join("into");
    std::fs::create_dir_all(&into).unwrap();
    let url = s.url(&format!("{pfx}/"));
    let out = s.tally(["download", &url, into.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let (lines, summary) = tree_lines(&out);
    assert_eq!(lines.len(), 7, "one line per object");
    assert_eq!(summary["downloaded"], 3);
    assert_eq!(summary["failed"], 3);
    assert_eq!(summary["ignored"], 1, "the folder marker");
    for bad in ["../escape.bin", "x//double.bin", "C:/drive.bin"] {
        let l = lines
            .iter()
            .find(|l| l["rel"] == bad)
            .unwrap_or_else(|| panic!("a line for {bad}"));
        assert_eq!(l["action"], "failed");
        assert!(
            l["reason"].as_str().unwrap().contains("unsafe local path"),
            "{l}"
        );
    }
    let err = stderr(&out);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("tally: FAILED"))
            .count(),
        3,
        "{err}"
    );
    for (rel, src) in [("a.bin", &a), ("sub/b.bin", &b), ("sub/deeper/c.bin", &c)] {
        assert_eq!(file_sha256(&into.join(rel)), file_sha256(src), "{rel}");
        let l = lines.iter().find(|l| l["rel"] == rel).unwrap();
        assert!(
            l["reason"].as_str().unwrap().starts_with("checked: "),
            "{l}"
        );
    }
    assert_eq!(
        listing(&outer),
        ["into"],
        "nothing written beside the folder"
    );
    assert_eq!(listing(&into), ["a.bin", "sub"]);
    assert_eq!(listing(&into.join("sub")), ["b.bin", "deeper"]);
    // Again: every file already there is proven identical and skipped.
    let out = s.tally(["download", &url, into.to_str().unwrap(), "--json"]);
    let (_, summary) = tree_lines(&out);
    assert_eq!(summary["skipped"], 3, "{summary}");
    assert_eq!(summary["downloaded"], 0);
}
