//! Habits that carry over from other tools: `download --include/--exclude`, a destination folder
//! that does not exist yet, a prefix given without its trailing `/`.

use crate::support::*;

#[test]
fn download_takes_include_and_exclude_and_makes_its_folder() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("CARD");
    for rel in [
        "A/clip.mov",
        "A/clip.wav",
        "A/cache/x.mov",
        "B/shot.mov",
        "cache.mov",
    ] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        random_file(
            p.parent().unwrap(),
            p.file_name().unwrap().to_str().unwrap(),
            1500,
            7,
        );
    }
    let prefix = format!("{}/", unique("habits/card"));
    let out = s.tally(["upload", root.to_str().unwrap(), &s.url(&prefix), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A folder that does not exist yet, two levels deep.
    let dest = dir.path().join("new").join("card");
    let out = s.tally([
        "download",
        &s.url(&prefix),
        dest.to_str().unwrap(),
        "--exclude",
        "*.wav",
        "--exclude",
        "cache/",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got: Vec<String> = walkdir(&dest);
    got.sort();
    assert_eq!(got, ["A/clip.mov", "B/shot.mov", "cache.mov"]);
    // --include with a catch-all exclude keeps only what is named.
    let only = dir.path().join("only");
    let out = s.tally([
        "download",
        &s.url(&prefix),
        only.to_str().unwrap(),
        "--include",
        "*.wav",
        "--include",
        "*/",
        "--exclude",
        "*",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(walkdir(&only), ["A/clip.wav"]);
}

#[test]
fn a_prefix_without_its_slash_says_to_add_it() {
    let s = garage();
    let dir = s.temp_dir();
    let f = random_file(dir.path(), "x.mov", 1500, 8);
    let base = unique("habits/noslash");
    s.put(&f, &format!("{base}/x.mov"), "5MiB");
    let out = s.tally([
        "download",
        &s.url(&base),
        dir.path().join("out").to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("add the trailing / (s3://{}/{base}/)", s.bucket)),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing made");
}

fn walkdir(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                if !rel.contains("ascmhl") {
                    out.push(rel);
                }
            }
        }
    }
    out.sort();
    out
}

/// `--dryrun` of a folder and of a prefix: each file's line says what the run would do and why,
/// exit 0, and nothing is written: no object, no folder, no file.
#[test]
fn dryrun_lists_what_would_be_sent_and_writes_nothing() {
    let s = garage();
    let dir = s.temp_dir();
    let root = dir.path().join("card");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    random_file(&root, "same.mov", 100_000, 41);
    random_file(&root.join("sub"), "grown.txt", 10, 42);
    let prefix = format!("{}/", unique("habits/dryrun"));
    let out = s.tally(["upload", root.to_str().unwrap(), &s.url(&prefix), "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    random_file(&root.join("sub"), "grown.txt", 20, 43);
    random_file(&root, "new.txt", 5, 44);
    let before = listed(s, &prefix);

    let out = s.tally([
        "upload",
        root.to_str().unwrap(),
        &s.url(&prefix),
        "--dryrun",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}: {text}"))
            .to_owned()
    };
    assert!(line("new.txt").starts_with("SEND") && line("new.txt").contains("no object"));
    assert!(line("grown.txt").starts_with("SEND") && line("grown.txt").contains("10 bytes"));
    assert!(line("same.mov").starts_with("COMPARE"), "{text}");
    assert!(text.contains("2 would be sent") && text.contains("1 would be compared first"));
    assert_eq!(listed(s, &prefix), before, "a dry run uploaded something");

    let dest = dir.path().join("not-yet");
    let out = s.tally([
        "download",
        &s.url(&prefix),
        dest.to_str().unwrap(),
        "--dryrun",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["would_send"], 2, "{summary}");
    assert!(!dest.exists(), "a dry run made the destination folder");

    // One file: one HEAD, the same words.
    let one = root.join("same.mov");
    let key = format!("{prefix}same.mov");
    let out = s.tally(["upload", one.to_str().unwrap(), &s.url(&key), "--dryrun"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("COMPARE"), "{text}");
    let back = dir.path().join("back.mov");
    let out = s.tally(["download", &s.url(&key), back.to_str().unwrap(), "--dryrun"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("SEND"), "{text}");
    assert!(!back.exists(), "a dry run wrote the file");
    assert_eq!(listed(s, &prefix), before, "a dry run uploaded something");
}

/// The objects under `prefix` (key, size, ETag), by the AWS CLI.
fn listed(s: &Server, prefix: &str) -> String {
    s.aws([
        "s3api",
        "list-objects-v2",
        "--bucket",
        &s.bucket,
        "--prefix",
        prefix,
        "--query",
        "Contents[].[Key,Size,ETag,LastModified]",
        "--output",
        "text",
    ])
}
