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
