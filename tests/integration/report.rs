//! `--report FILE.html` in a real browser: headless Chromium (Debian's, installed by scripts/tools)
//! opens the report of a tree with no console message, its totals equal the `--json` summary of the
//! same run, the failure is listed before the files, and hostile names render as text.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("chromium"))
                .find(|f| f.is_file())
        })
        .expect(
            "chromium is not on PATH: run scripts/tools (as root it installs Debian's chromium)",
        )
}

/// Opens `page` in headless Chromium: (the DOM it rendered, its console messages).
fn open(page: &Path, scratch: &Path) -> (String, Vec<String>) {
    let profile = scratch.join(format!(
        "chromium-{}",
        page.file_name().unwrap().to_string_lossy()
    ));
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg("--dump-dom")
    .arg(format!("file://{}", page.display()));
    let out = run_bounded(&mut cmd, Duration::from_secs(180), "chromium --dump-dom");
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    let console = stderr(&out)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The totals the page shows: `data-total="NAME">N<`.
fn totals(dom: &str) -> Vec<(String, u64)> {
    dom.split("data-total=\"")
        .skip(1)
        .map(|rest| {
            let (name, rest) = rest.split_once('"').unwrap();
            let value = rest[1..].split('<').next().unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

const HOSTILE: &str = "<img src=x onerror=alert(1)> & \"quoted\".txt";

#[test]
fn the_report_of_a_tree_renders_in_chromium_with_the_jsons_totals_and_failures_first() {
    let s = garage();
    let dir = s.temp_dir();
    let d = dir.path();
    // The control: the harness does see a console message, so its absence below means something.
    let control = d.join("control.html");
    std::fs::write(
        &control,
        "<p><script>console.error('tally-control')</script></p>",
    )
    .unwrap();
    let (_, console) = open(&control, d);
    assert!(
        console.iter().any(|l| l.contains("tally-control")),
        "the console is not captured: {console:?}"
    );

    let root = d.join("card");
    std::fs::create_dir_all(root.join("CLIPS")).unwrap();
    random_file(&root.join("CLIPS"), "A001C001.mov", 6 * MIB, 11);
    for i in 0..5 {
        random_file(
            &root.join("CLIPS"),
            &format!("frame.{i:04}.dpx"),
            1000 + i,
            12 + i,
        );
    }
    random_file(&root, HOSTILE, 10, 20);
    // A link to nothing: a failure, which the report lists first.
    std::os::unix::fs::symlink(d.join("gone"), root.join("dangling.mov")).unwrap();
    let page = d.join("report.html");
    let prefix = s.url(&unique("report/card/"));
    let out = s.tally([
        "upload",
        root.to_str().unwrap(),
        &prefix,
        "--json",
        "--file-hash",
        "xxh64",
        "--report",
        page.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the dangling link fails: {}",
        stderr(&out)
    );
    let summary: serde_json::Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap();
    assert_eq!(summary["kind"], "summary", "{summary}");

    let html = std::fs::read_to_string(&page).unwrap();
    for external in ["<link", " src=\"", "url(", "@import"] {
        assert!(
            !html.contains(external),
            "the page refers to {external}: not self-contained"
        );
    }
    let (dom, console) = open(&page, d);
    assert!(console.is_empty(), "console messages: {console:?}");
    assert!(!dom.contains("<img"), "a file name became markup");
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt; &amp; \"quoted\".txt"),
        "{dom}"
    );

    let shown = totals(&dom);
    assert!(shown.len() >= 8, "{shown:?}");
    for (name, value) in &shown {
        assert_eq!(
            summary[name].as_u64(),
            Some(*value),
            "total {name}: {summary}"
        );
    }
    assert_eq!(summary["files"], 7);
    assert_eq!(summary["failed"], 1);

    let failures = dom.find("id=\"failures\"").expect("a failures section");
    let files = dom.find("id=\"file-table\"").expect("the table of files");
    let dangling = dom.find("dangling.mov").expect("the failure is named");
    assert!(
        failures < dangling && dangling < files,
        "the failure comes first"
    );
    assert!(
        dom.contains("STOPPED") || dom.contains("NOT complete"),
        "the verdict says it"
    );
}

/// A single download: the page says what proved it, and "not verified" never appears where the
/// bytes were checked.
#[test]
fn the_report_of_a_single_download_says_what_proved_it() {
    let s = garage();
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "one.bin", 6 * MIB, 30);
    let key = unique("report/one.bin");
    s.put(&file, &key, "5MiB");
    let page = dir.path().join("download.html");
    let back = dir.path().join("back.bin");
    let out = s.tally([
        "download",
        &s.url(&key),
        back.to_str().unwrap(),
        "--report",
        page.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (dom, console) = open(&page, dir.path());
    assert!(console.is_empty(), "{console:?}");
    assert!(dom.contains("checked: "), "{dom}");
    assert!(!dom.contains("not verified"), "{dom}");
    assert_eq!(
        totals(&dom)[..2],
        [("files".into(), 1), ("bytes".into(), 6 * MIB)]
    );
}
