//! Through the link emulator (`src/bin/tally-link.rs`, docs/link.md): tally against Garage over
//! paced connections. Nothing here is timed: the emulator counts what it forwarded (bytes, the
//! peak number of connections moving bytes at once, the peak rate over a window) and the tests
//! assert on those counts after it exited.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::support::{Server, file_sha256, garage, poll_until, random_file, stderr, unique};

/// A running `tally-link` in front of a server.
pub struct Link {
    pub url: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stats: PathBuf,
}

/// What the emulator counted, read from its stats file once it exited.
#[derive(Debug)]
pub struct Counts(pub serde_json::Value);

impl Counts {
    pub fn get(&self, name: &str) -> u64 {
        self.0[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {}", self.0))
    }
}

impl Link {
    /// Starts the emulator in front of `s` with `args` (rates, RTT, stragglers); its stats go to
    /// a file in `dir`.
    pub fn start(s: &Server, dir: &Path, args: &[&str]) -> Link {
        let stats = dir.join("link-stats.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally-link"))
            .args(["--upstream", &s.endpoint, "--until-stdin-closes", "--stats"])
            .arg(&stats)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tally-link starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .expect("tally-link prints its address");
        let url = first.trim().to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "address: {url:?}");
        let stdin = child.stdin.take();
        Link {
            url,
            child,
            stdin,
            stats,
        }
    }

    /// Stops the emulator (its stdin closed) and returns its counts.
    pub fn finish(mut self) -> Counts {
        drop(self.stdin.take());
        let mut status = None;
        poll_until(Duration::from_secs(60), "tally-link exits", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        assert!(status.unwrap().success(), "tally-link exit: {status:?}");
        let text = std::fs::read_to_string(&self.stats).expect("the stats file");
        Counts(serde_json::from_str(&text).expect("stats are JSON"))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `tally ARGS --endpoint-url LINK`, which must succeed; returns its JSON report.
fn tally_via(s: &Server, link: &Link, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint-url", &link.url, "--json"]);
    let out = s.tally_within(Duration::from_secs(600), &all);
    assert!(out.status.success(), "tally {args:?}: {}", stderr(&out));
    crate::support::json_report(&out)
}

const MIB: u64 = 1 << 20;

#[test]
fn the_emulator_forwards_every_byte_and_counts_what_it_paced() {
    let s = garage();
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "f", 6 * MIB, 24);
    let key = unique("link/plain");
    // Every second connection a straggler at a tenth of 4 MB/s; a first byte 20 ms late.
    let link = Link::start(
        s,
        dir.path(),
        &[
            "--rate",
            "4MB/s",
            "--rtt",
            "20ms",
            "--straggle-every",
            "2",
            "--straggle-rate",
            "400KB/s",
        ],
    );
    let f = file.to_str().unwrap();
    tally_via(
        s,
        &link,
        &["upload", f, &s.url(&key), "--part-size", "5MiB"],
    );
    let back = dir.path().join("back");
    tally_via(
        s,
        &link,
        &["download", &s.url(&key), back.to_str().unwrap()],
    );
    let c = link.finish();
    assert_eq!(
        file_sha256(&back),
        file_sha256(&file),
        "the bytes came back"
    );
    assert!(c.get("bytes_up") >= 6 * MIB, "every byte went up: {:?}", c);
    assert!(
        c.get("bytes_down") >= 6 * MIB,
        "every byte came down: {:?}",
        c
    );
    assert!(c.get("connections") >= 2, "{:?}", c);
    assert_eq!(
        c.get("stragglers"),
        c.get("connections") / 2,
        "every second connection straggled: {:?}",
        c
    );
    assert!(c.get("peak_moving_up") >= 1 && c.get("peak_moving_down") >= 1);
}

/// Parts of `part_mib` MiB at `--concurrency n`, each connection at 1 MB/s: every part takes
/// seconds on its connection, so the parts can only all be moving at once if tally sends them
/// all at once.
#[test]
fn an_upload_and_a_download_keep_concurrency_parts_moving() {
    let s = garage();
    let dir = s.temp_dir();
    let n = 8;
    let file = random_file(dir.path(), "f", 8 * 5 * MIB + 123, 25);
    let key = unique("link/parallel");
    let f = file.to_str().unwrap();
    let link = Link::start(s, dir.path(), &["--rate", "1MB/s", "--rtt", "20ms"]);
    let conc = n.to_string();
    tally_via(
        s,
        &link,
        &[
            "upload",
            f,
            &s.url(&key),
            "--part-size",
            "5MiB",
            "--concurrency",
            &conc,
        ],
    );
    let up = link.finish();
    assert!(
        up.get("peak_moving_up") >= n,
        "{n} parts moving at once on the way up: {:?}",
        up
    );
    let link = Link::start(s, dir.path(), &["--rate", "1MB/s", "--rtt", "20ms"]);
    let back = dir.path().join("back");
    tally_via(
        s,
        &link,
        &[
            "download",
            &s.url(&key),
            back.to_str().unwrap(),
            "--concurrency",
            &conc,
        ],
    );
    let down = link.finish();
    assert_eq!(file_sha256(&back), file_sha256(&file));
    assert!(
        down.get("peak_moving_down") >= n,
        "{n} parts moving at once on the way down: {:?}",
        down
    );
}

/// The peak rate the emulator saw over any full window must stay under `cap` + 5%.
fn assert_capped(c: &Counts, field: &str, cap: f64) {
    let peak = c.get(field) as f64;
    assert!(
        peak <= cap * 1.05,
        "{field}: {peak:.0} B/s over a {}s window, above {cap:.0} B/s + 5%: {:?}",
        c.0["window_s"],
        c
    );
    assert!(peak > 0.0, "{field}: some window was full: {:?}", c);
}

/// `--max-bandwidth` over every connection together, for an upload and a download. The emulator
/// lets each connection go far faster than the cap, and keeps its own buffers small (the counts
/// are what it forwarded, so bytes parked in its buffers would look like a burst).
#[test]
fn max_bandwidth_holds_every_connection_together_under_the_cap() {
    let s = garage();
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "f", 32 * MIB, 26);
    let f = file.to_str().unwrap();
    let key = unique("link/capped");
    let link_args = [
        "--rate", "50MB/s", "--window", "5s", "--rcvbuf", "65536", "--sndbuf", "65536",
    ];
    let cap = 4e6;
    let link = Link::start(s, dir.path(), &link_args);
    tally_via(
        s,
        &link,
        &[
            "upload",
            f,
            &s.url(&key),
            "--part-size",
            "8MiB",
            "--concurrency",
            "4",
            "--max-bandwidth",
            "4MB/s",
        ],
    );
    let up = link.finish();
    assert!(up.get("bytes_up") >= 32 * MIB);
    assert_capped(&up, "peak_rate_up", cap);

    // The same cap from the environment, for a download.
    let link = Link::start(s, dir.path(), &link_args);
    let back = dir.path().join("back");
    let mut cmd = s.command();
    cmd.env("TALLY_MAX_BANDWIDTH", "4MB/s").args([
        "download",
        &s.url(&key),
        back.to_str().unwrap(),
        "--concurrency",
        "4",
        "--endpoint-url",
        &link.url,
    ]);
    let started = std::time::Instant::now();
    let out = crate::support::run_bounded(&mut cmd, Duration::from_secs(600), "capped download");
    let took = started.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", stderr(&out));
    let down = link.finish();
    assert_eq!(file_sha256(&back), file_sha256(&file));
    // Downloads are capped where tally reads the bodies; what the kernel accepts into each
    // connection's receive buffer before that (a few MB each, at the start) is not, so a 5 s
    // window can see a start-up burst (measured: 5.9 MB/s over the first 5 s against 4 MB/s).
    // What holds is the rate over the whole download, which an uncapped run (well under 1 s
    // here) breaks by a factor of ten.
    let rate = down.get("bytes_down") as f64 / took;
    assert!(
        rate <= cap * 1.05,
        "the download moved {rate:.0} B/s over its {took:.1} s, above {cap:.0} B/s + 5%: {:?}",
        down
    );
}

/// Part numbers recorded in a kept manifest, in order of the lines.
fn recorded_parts(manifest: &Path) -> Vec<u64> {
    std::fs::read_to_string(manifest)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(_, json)| serde_json::from_str::<serde_json::Value>(json).ok())
        .filter(|v| v["type"] == "part")
        .map(|v| v["number"].as_u64().unwrap())
        .collect()
}

/// Every fourth connection a straggler at a fortieth of the rate: the parts that land on one are
/// sent again on another connection, and the object is still the file, each part recorded once
/// and the upload completed once. On Garage a dropped straggler that had delivered its first
/// block leaves a copy that makes CompleteMultipartUpload answer InvalidPart: the hedged parts
/// are then sent once more (`upload/reconcile.rs`), which this run shows when it happens.
#[test]
fn a_straggling_part_is_sent_again_and_recorded_once() {
    let s = garage();
    let dir = s.temp_dir();
    let parts = 8;
    let file = random_file(dir.path(), "f", parts * 16 * MIB, 27);
    let f = file.to_str().unwrap();
    let key = unique("link/hedged");
    let manifest = dir.path().join("hedged.manifest");
    let link = Link::start(
        s,
        dir.path(),
        &[
            "--rate",
            "4MB/s",
            "--straggle-every",
            "4",
            "--straggle-rate",
            "100KB/s",
        ],
    );
    let all = vec![
        "upload",
        f,
        &s.url(&key),
        "--part-size",
        "16MiB",
        "--concurrency",
        "8",
        "--manifest",
        manifest.to_str().unwrap(),
        "--keep-manifest",
        "--json",
        "--endpoint-url",
        &link.url,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    let out = s.tally_within(Duration::from_secs(600), &all);
    let c = link.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(c.get("stragglers") >= 1, "{:?}", c);
    assert!(
        err.contains("sending it again on another connection"),
        "a straggling part was sent again: {err}\n{:?}",
        c
    );
    let mut recorded = recorded_parts(&manifest);
    recorded.sort_unstable();
    assert_eq!(
        recorded,
        (1..=parts).collect::<Vec<_>>(),
        "each part recorded once"
    );
    let completed = std::fs::read_to_string(&manifest)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"type\":\"completed\""))
        .count();
    assert_eq!(completed, 1, "completed once");
    let back = dir.path().join("back");
    let out = s.tally(["download", &s.url(&key), back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        file_sha256(&back),
        file_sha256(&file),
        "the object is the file"
    );
    let head = s.head(&key).expect("the object");
    assert!(
        head["ETag"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{parts}\"")),
        "{parts} parts: {head}"
    );
}

/// The same for a download, at its defaults: a part arriving on a straggling connection is
/// stopped (its last write landed first) and fetched again as 4 ranges on other connections
/// (16 MiB parts), hashed from the file once they are in; the file is the object.
#[test]
fn a_straggling_download_part_is_fetched_again_and_the_file_is_right() {
    let s = garage();
    let dir = s.temp_dir();
    let file = random_file(dir.path(), "f", 8 * 16 * MIB, 28);
    let key = unique("link/hedged-down");
    s.put(&file, &key, "16MiB");
    let link = Link::start(
        s,
        dir.path(),
        &[
            "--rate",
            "4MB/s",
            "--straggle-every",
            "4",
            "--straggle-rate",
            "100KB/s",
        ],
    );
    let back = dir.path().join("back");
    let mut cmd = s.command();
    cmd.args([
        "download",
        &s.url(&key),
        back.to_str().unwrap(),
        "--concurrency",
        "8",
        "--json",
        "--endpoint-url",
        &link.url,
    ]);
    let out = crate::support::run_bounded(&mut cmd, Duration::from_secs(600), "download");
    let c = link.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(c.get("stragglers") >= 1, "{:?}", c);
    let err = stderr(&out);
    assert!(
        err.contains("fetching it again as 4 ranges on other connections"),
        "a straggling part was fetched again in ranges: {err}\n{:?}",
        c
    );
    assert_eq!(
        file_sha256(&back),
        file_sha256(&file),
        "the file is the object"
    );
    let r = crate::support::json_report(&out);
    assert!(
        r["parts_fetched"].as_u64().unwrap() >= 8 + 4,
        "8 parts, and a straggler's 4 ranges: {r}"
    );
}
