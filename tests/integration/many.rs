//! Many small files (issue 30): what a tree costs in requests per file, counted by the fault
//! proxy in front of the real server (no fault injected), and that the result is right (read
//! back with the AWS CLI). No timing is asserted: speed is in `scripts/bench-many`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use crate::proxy::{Op, Plan, Proxy};
use crate::support::*;

/// `n` files of a few hundred bytes in folders of 100 (a frame-sequence layout): rel -> SHA-256.
fn small_tree(root: &Path, n: u64) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in 0..n {
        let dir = root.join(format!("reel{}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("shot.{i:06}.dpx");
        let p = random_file(&dir, &name, 200 + i % 300, i + 1);
        out.insert(format!("reel{}/{name}", i / 100), file_sha256(&p));
    }
    out
}

/// Requests through `proxy`: (HEADs, PUTs with a body, listing pages).
fn counted(proxy: &Proxy) -> (usize, usize, usize) {
    let events = proxy.stats.events();
    let n = |f: &dyn Fn(&crate::proxy::Event) -> bool| events.iter().filter(|e| f(e)).count();
    (
        n(&|e| e.op == Op::Head),
        n(&|e| e.op == Op::Part),
        n(&|e| e.op == Op::Other && e.target.contains("list-type=2")),
    )
}

/// The JSON file lines of a tree run, and its summary.
fn json_lines(out: &Output) -> (Vec<serde_json::Value>, serde_json::Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut all: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", stderr(out))))
        .collect();
    // The last line is the summary (`kind: summary`, docs/json.md).
    let summary = all.pop().expect("a summary line");
    assert_eq!(summary["kind"], "summary", "the last line: {summary}");
    (all, summary)
}

fn upload_via(s: &Server, proxy: &Proxy, root: &Path, prefix: &str, extra: &[&str]) -> Output {
    let url = s.url(prefix);
    let mut args = vec![
        "upload",
        root.to_str().unwrap(),
        &url,
        "--json",
        "--endpoint-url",
        &proxy.url,
    ];
    args.extend(extra);
    s.tally(args)
}

/// Reads the prefix back with `aws s3 sync` and compares every file.
fn assert_round_trip(s: &Server, prefix: &str, want: &BTreeMap<String, String>) {
    let dir = s.temp_dir();
    let down = dir.path().join("down");
    s.aws([
        "s3",
        "sync",
        "--quiet",
        &s.url(prefix),
        down.to_str().unwrap(),
    ]);
    assert_tree(&down, want, prefix);
}

/// `down` (a tree of [`small_tree`]'s shape) holds exactly the files of `want`, byte for byte.
fn assert_tree(down: &Path, want: &BTreeMap<String, String>, what: &str) {
    for (rel, sha) in want {
        assert_eq!(
            &file_sha256(&down.join(rel)),
            sha,
            "{what}: {rel} byte-exact"
        );
    }
    let mut n = 0;
    for d in std::fs::read_dir(down).unwrap() {
        n += std::fs::read_dir(d.unwrap().path()).unwrap().count();
    }
    assert_eq!(n, want.len(), "{what}: nothing else");
}

#[test]
fn small_files_cost_one_put_each_and_an_unchanged_tree_a_listing_per_thousand() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let root = dir.path().join("card");
        let want = small_tree(&root, 1_100);
        let prefix = unique(&format!("many/{name}")) + "/";
        let proxy = Proxy::start(&s.endpoint, Plan::default());
        // At 64 requests in flight, as before small files went by places (128 at defaults): this
        // test counts requests, and with 128 through this proxy (a fresh upstream connection per
        // request) 3 of 1,100 PutObjects to LocalStack were sent again once, in one run. Straight
        // to LocalStack at defaults, four runs of 1,100 files had no retry (SDK retry log).
        let out = upload_via(s, &proxy, &root, &prefix, &["--concurrency", "64"]);
        let (lines, summary) = json_lines(&out);
        assert_eq!(summary["exit_code"], 0, "{name}: {}", stderr(&out));
        assert_eq!(summary["uploaded"], 1_100, "{name}");
        for l in &lines {
            let reason = l["reason"].as_str().unwrap();
            assert!(
                reason.contains("S3 verified the SHA256 checksum on receipt and echoed it")
                    && reason
                        .contains("read back by listing: size and ETag (the file's MD5) match"),
                "{name}: {l}"
            );
        }
        let (heads, puts, pages) = counted(&proxy);
        assert_eq!((heads, puts), (0, 1_100), "{name}: no HEAD per file");
        // One page of the (empty) destination, then a listing per 1,000 files read back.
        assert!((2..=6).contains(&pages), "{name}: {pages} listing pages");
        assert_round_trip(s, &prefix, &want);

        // The same tree again: proven by the listing (size and ETag = the file's MD5, each file
        // re-hashed), nothing sent, no HEAD.
        let proxy = Proxy::start(&s.endpoint, Plan::default());
        let out = upload_via(s, &proxy, &root, &prefix, &[]);
        let (lines, summary) = json_lines(&out);
        assert_eq!(summary["exit_code"], 0, "{name}: {}", stderr(&out));
        assert_eq!(summary["skipped"], 1_100, "{name}");
        let (heads, puts, pages) = counted(&proxy);
        assert_eq!(
            (heads, puts),
            (0, 0),
            "{name}: re-run without a HEAD per file"
        );
        assert!(pages <= 2, "{name}: {pages} listing pages for 1,100 files");
        assert!(
            lines
                .iter()
                .all(|l| l["reason"].as_str().unwrap().contains("from the listing")),
            "{name}: {}",
            lines[0]
        );
    }
}

#[test]
fn a_server_that_does_not_echo_the_checksum_is_read_back_per_file_and_says_so() {
    let s = moto();
    let dir = s.temp_dir();
    let root = dir.path().join("card");
    let want = small_tree(&root, 5);
    let prefix = unique("many/moto") + "/";
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let out = upload_via(s, &proxy, &root, &prefix, &[]);
    let (lines, summary) = json_lines(&out);
    assert_eq!(summary["exit_code"], 0, "{}", stderr(&out));
    for l in &lines {
        let reason = l["reason"].as_str().unwrap();
        assert!(
            reason.contains("did not echo the SHA256 checksum (not verified by the server)")
                && reason.contains("read back per file"),
            "{l}"
        );
    }
    let (heads, puts, _) = counted(&proxy);
    assert_eq!(puts, 5);
    assert!(
        heads >= 5,
        "a read-back per file where the reply proves nothing: {heads}"
    );
    assert_round_trip(s, &prefix, &want);
}

#[test]
fn a_server_whose_listing_gives_no_etag_is_read_back_by_a_head_of_each_file() {
    let s = s3s_fs();
    let dir = s.temp_dir();
    let root = dir.path().join("card");
    let want = small_tree(&root, 5);
    let prefix = unique("many/s3s") + "/";
    let proxy = Proxy::start(&s.endpoint, Plan::default());
    let out = upload_via(s, &proxy, &root, &prefix, &[]);
    let (lines, summary) = json_lines(&out);
    assert_eq!(summary["exit_code"], 0, "{}", stderr(&out));
    for l in &lines {
        let reason = l["reason"].as_str().unwrap();
        assert!(
            reason.contains("S3 verified the SHA256 checksum on receipt and echoed it")
                && reason.contains(
                    "read back by HEAD (the server's listing gives no ETag): size and ETag (the file's MD5) match"
                ),
            "{l}"
        );
    }
    let (heads, puts, _) = counted(&proxy);
    assert_eq!((heads, puts), (5, 5));
    assert_round_trip(s, &prefix, &want);
}

#[test]
fn a_prefix_of_small_objects_downloads_with_one_get_each_and_no_head() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let root = dir.path().join("card");
        let want = small_tree(&root, 1_100);
        let prefix = unique(&format!("many-down/{name}")) + "/";
        s.aws([
            "s3",
            "sync",
            "--quiet",
            root.to_str().unwrap(),
            &s.url(&prefix),
        ]);
        let down = dir.path().join("down");
        let proxy = Proxy::start(&s.endpoint, Plan::default());
        let url = s.url(&prefix);
        let out = s.tally([
            "download",
            &url,
            down.to_str().unwrap(),
            "--json",
            "--endpoint-url",
            &proxy.url,
        ]);
        let (lines, summary) = json_lines(&out);
        assert_eq!(summary["exit_code"], 0, "{name}: {}", stderr(&out));
        assert_eq!(summary["downloaded"], 1_100, "{name}");
        for l in &lines {
            let reason = l["reason"].as_str().unwrap();
            assert!(
                reason.starts_with("checked: ")
                    && reason.contains("the ETag, the MD5 of the object"),
                "{name}: {l}"
            );
        }
        let events = proxy.stats.events();
        let heads = events.iter().filter(|e| e.op == Op::Head).count();
        let gets = events.iter().filter(|e| e.op == Op::Get).count();
        assert_eq!(
            (heads, gets),
            (0, 1_100),
            "{name}: one GET per object, no HEAD"
        );
        assert_tree(&down, &want, name);
        // Nothing but the files: no temporary, journal or lock left beside them.
        for d in std::fs::read_dir(&down).unwrap() {
            for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
                let f = f.unwrap().file_name();
                assert!(
                    !f.to_string_lossy().contains("\\tally-"),
                    "{name}: {f:?} left"
                );
            }
        }
    }
}

/// A small object's GET asks for the whole object, not a `Range` of it, so the reply carries
/// the object's own checksum (with a `Range`, even of every byte, these servers send none), and
/// the bytes are checked against it as well as against the ETag.
#[test]
fn a_small_object_is_checked_against_the_checksum_its_whole_get_carries() {
    for (name, s) in servers() {
        let dir = s.temp_dir();
        let root = dir.path().join("card");
        let want = small_tree(&root, 3);
        let prefix = unique(&format!("many-sum/{name}")) + "/";
        let up = s.tally(["upload", root.to_str().unwrap(), &s.url(&prefix)]);
        assert!(up.status.success(), "{name}: {}", stderr(&up));
        let down = dir.path().join("down");
        let out = s.tally([
            "download",
            &s.url(&prefix),
            down.to_str().unwrap(),
            "--json",
        ]);
        let (lines, summary) = json_lines(&out);
        assert_eq!(summary["exit_code"], 0, "{name}: {}", stderr(&out));
        assert_eq!(lines.len(), want.len(), "{name}: {}", stderr(&out));
        for l in &lines {
            let reason = l["reason"].as_str().unwrap();
            assert!(
                reason.contains("the object's SHA256 checksum (sent with the GET)")
                    && reason.contains("the ETag, the MD5 of the object"),
                "{name}: {l}"
            );
            assert_eq!(l["checksum"]["algorithm"], "SHA256", "{name}: {l}");
        }
        assert_tree(&down, &want, name);
    }
}
