//! The walk over real temporary trees.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use super::*;
use crate::tree::filter::Rule;

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn all(root: &Path, opts: WalkOptions) -> Vec<Found> {
    all_with(root, opts, Hooks::default())
}

fn all_with(root: &Path, opts: WalkOptions, hooks: Hooks) -> Vec<Found> {
    let mut w = walk_with(root, opts, hooks).expect("the root is a readable directory");
    let mut out = Vec::new();
    while let Some(f) = w.blocking_next() {
        out.push(f);
    }
    out
}

fn files(found: &[Found]) -> Vec<&str> {
    found
        .iter()
        .filter_map(|f| match f {
            Found::File(e) => Some(e.rel.as_str()),
            Found::Skipped(_) => None,
        })
        .collect()
}

fn skips(found: &[Found]) -> Vec<(String, SkipReason)> {
    found
        .iter()
        .filter_map(|f| match f {
            Found::Skipped(s) => Some((
                s.path.file_name().unwrap().to_string_lossy().into_owned(),
                s.reason.clone(),
            )),
            Found::File(_) => None,
        })
        .collect()
}

#[test]
fn files_come_in_s3_key_order() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    for rel in [
        "a-c", "a/b", "a0", "a.txt", "B", "é", "a b", "a/b-c/d", "a/b.d", "a/bb", "z/y/x",
    ] {
        write(r, rel, rel.as_bytes());
    }
    // A link followed to a directory sorts as that directory would.
    symlink("a", r.join("a.link")).unwrap();
    let found = all(r, WalkOptions::default());
    let got = files(&found);
    // S3 lists keys in the byte order of the whole key: sort the expected keys that way.
    let mut expected = vec![
        "a-c",
        "a/b",
        "a0",
        "a.txt",
        "B",
        "é",
        "a b",
        "a/b-c/d",
        "a/b.d",
        "a/bb",
        "z/y/x",
        "a.link/b",
        "a.link/b-c/d",
        "a.link/b.d",
        "a.link/bb",
    ];
    expected.sort_by(|x, y| x.as_bytes().cmp(y.as_bytes()));
    assert_eq!(got, expected);
    let pos = |k: &str| got.iter().position(|g| *g == k).unwrap();
    assert!(pos("a-c") < pos("a/b") && pos("a/b") < pos("a0"), "{got:?}");
    assert!(skips(&found).is_empty(), "{:?}", skips(&found));
}

#[test]
fn entries_carry_what_stat_says_nested_spaces_non_ascii_empty() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "reel 1/Überblick – ü.mov", b"twelve bytes");
    write(r, "reel 1/deep/er/still/empty.xml", b"");
    write(r, ".hidden", b"h");
    let found = all(r, WalkOptions::default());
    assert_eq!(
        files(&found),
        [
            ".hidden",
            "reel 1/deep/er/still/empty.xml",
            "reel 1/Überblick – ü.mov"
        ]
    );
    for f in &found {
        let Found::File(e) = f else { panic!("{f:?}") };
        let m = fs::metadata(r.join(&e.rel)).unwrap();
        assert_eq!(e.path, r.join(&e.rel));
        assert_eq!(
            (e.size, e.dev, e.ino),
            (m.len(), m.dev(), m.ino()),
            "{}",
            e.rel
        );
        assert_eq!(e.mtime_ns, m.mtime() * 1_000_000_000 + m.mtime_nsec());
    }
    assert_eq!(
        found
            .iter()
            .map(|f| match f {
                Found::File(e) => e.size,
                _ => 0,
            })
            .collect::<Vec<_>>(),
        [1, 0, 12]
    );
}

#[test]
fn symlinks_are_followed_by_default_and_skipped_on_request() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "target.bin", b"0123456789");
    write(r, "dir/inner", b"x");
    symlink("target.bin", r.join("link.bin")).unwrap();
    symlink("dir", r.join("linkdir")).unwrap();
    let found = all(r, WalkOptions::default());
    assert_eq!(
        files(&found),
        ["dir/inner", "link.bin", "linkdir/inner", "target.bin"]
    );
    let Some(Found::File(link)) = found
        .iter()
        .find(|f| matches!(f, Found::File(e) if e.rel == "link.bin"))
    else {
        panic!()
    };
    let target = fs::metadata(r.join("target.bin")).unwrap();
    assert_eq!((link.size, link.ino), (10, target.ino()));
    assert_eq!(link.path, r.join("link.bin"));

    let no = all(
        r,
        WalkOptions {
            follow_symlinks: false,
            ..WalkOptions::default()
        },
    );
    assert_eq!(files(&no), ["dir/inner", "target.bin"]);
    assert_eq!(
        skips(&no),
        [
            ("link.bin".into(), SkipReason::SymlinkNotFollowed),
            ("linkdir".into(), SkipReason::SymlinkNotFollowed),
        ]
    );
    assert!(!SkipReason::SymlinkNotFollowed.is_failure());
}

#[test]
fn a_symlink_loop_is_reported_once_and_the_rest_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "a/b/file", b"1");
    write(r, "z", b"2");
    symlink("..", r.join("a/b/up")).unwrap(); // to a/, an ancestor
    symlink(r, r.join("a/root")).unwrap(); // to the root itself
    symlink("self2", r.join("self1")).unwrap(); // a chain that never ends
    symlink("self1", r.join("self2")).unwrap();
    let found = all(r, WalkOptions::default());
    assert_eq!(files(&found), ["a/b/file", "z"]);
    assert_eq!(
        skips(&found),
        [
            ("up".into(), SkipReason::SymlinkLoop),
            ("root".into(), SkipReason::SymlinkLoop),
            ("self1".into(), SkipReason::SymlinkLoop),
            ("self2".into(), SkipReason::SymlinkLoop),
        ]
    );
    assert!(!SkipReason::SymlinkLoop.is_failure());
}

#[test]
fn a_dangling_symlink_is_a_failure_and_the_rest_goes_on() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "a", b"1");
    write(r, "c", b"1");
    symlink("nowhere", r.join("b")).unwrap();
    let found = all(r, WalkOptions::default());
    assert_eq!(files(&found), ["a", "c"]);
    assert_eq!(skips(&found), [("b".into(), SkipReason::BrokenSymlink)]);
    assert!(SkipReason::BrokenSymlink.is_failure());
}

#[test]
fn fifos_and_sockets_are_warnings() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "a", b"1");
    let status = std::process::Command::new("mkfifo")
        .arg(r.join("fifo"))
        .status()
        .expect("mkfifo runs");
    assert!(status.success());
    let _sock = std::os::unix::net::UnixListener::bind(r.join("sock")).unwrap();
    let found = all(r, WalkOptions::default());
    assert_eq!(files(&found), ["a"]);
    assert_eq!(
        skips(&found),
        [
            ("fifo".into(), SkipReason::Special("FIFO")),
            ("sock".into(), SkipReason::Special("socket")),
        ]
    );
    assert!(!SkipReason::Special("FIFO").is_failure());
}

/// With mode 000, as a normal user the walk must report both; as root (who reads through mode
/// bits) this cannot show anything, and says so: the seam test below covers root.
#[test]
fn unreadable_file_and_directory_by_permission_bits() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "locked.bin", b"1");
    write(r, "lockeddir/inner", b"1");
    write(r, "ok", b"1");
    fs::set_permissions(r.join("locked.bin"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(r.join("lockeddir"), fs::Permissions::from_mode(0o000)).unwrap();
    let as_root = fs::File::open(r.join("locked.bin")).is_ok();
    let found = all(r, WalkOptions::default());
    fs::set_permissions(r.join("lockeddir"), fs::Permissions::from_mode(0o755)).unwrap();
    if as_root {
        eprintln!(
            "running as root: mode 000 does not stop root's reads, so this test cannot show \
             Unreadable from permission bits (unreadable_entries_through_the_seam does)"
        );
        assert_eq!(files(&found), ["locked.bin", "lockeddir/inner", "ok"]);
        return;
    }
    assert_eq!(files(&found), ["ok"]);
    let denied = SkipReason::Unreadable("permission denied".into());
    assert_eq!(
        skips(&found),
        [
            ("locked.bin".into(), denied.clone()),
            ("lockeddir".into(), denied)
        ]
    );
}

#[test]
fn unreadable_entries_through_the_seam() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "locked.bin", b"1");
    write(r, "lockeddir/inner", b"1");
    write(r, "ok", b"1");
    let hooks = Hooks {
        deny: vec![r.join("locked.bin"), r.join("lockeddir")],
        ..Hooks::default()
    };
    let found = all_with(r, WalkOptions::default(), hooks);
    assert_eq!(files(&found), ["ok"]);
    let denied = SkipReason::Unreadable("permission denied".into());
    assert_eq!(
        skips(&found),
        [
            ("locked.bin".into(), denied.clone()),
            ("lockeddir".into(), denied.clone())
        ]
    );
    assert!(denied.is_failure());
    assert_eq!(
        denied.to_string(),
        "cannot be read (permission denied): check its permissions"
    );
}

#[test]
fn an_entry_gone_between_listing_and_visit_is_vanished() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().to_path_buf();
    write(&r, "d/a", b"1");
    write(&r, "d/gone", b"1");
    write(&r, "d/z", b"1");
    let victim = r.join("d/gone");
    let hooks = Hooks {
        after_list: Some(Box::new(move |dir: &Path| {
            if dir.ends_with("d") {
                fs::remove_file(&victim).unwrap();
            }
        })),
        ..Hooks::default()
    };
    let found = all_with(&r, WalkOptions::default(), hooks);
    assert_eq!(files(&found), ["d/a", "d/z"]);
    assert_eq!(skips(&found), [("gone".into(), SkipReason::Vanished)]);
    assert!(SkipReason::Vanished.is_failure());
}

#[test]
fn a_name_that_is_not_utf8_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "a", b"1");
    let bad = r.join(OsStr::from_bytes(b"bad\xff.txt"));
    fs::write(&bad, b"x").unwrap();
    fs::create_dir(r.join(OsStr::from_bytes(b"dir\xfe"))).unwrap();
    fs::write(r.join(OsStr::from_bytes(b"dir\xfe/inner")), b"x").unwrap();
    let found = all(r, WalkOptions::default());
    assert_eq!(files(&found), ["a"]);
    let got: Vec<_> = found
        .iter()
        .filter_map(|f| match f {
            Found::Skipped(s) => Some((s.path.clone(), s.reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        got,
        [
            (bad, SkipReason::NotUtf8),
            (r.join(OsStr::from_bytes(b"dir\xfe")), SkipReason::NotUtf8),
        ]
    );
    assert!(SkipReason::NotUtf8.is_failure());
}

#[test]
fn a_key_over_1024_bytes_is_reported() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let fits = "f".repeat(24); // 1000 + 24 = 1024: allowed
    let over = "g".repeat(25); // 1025
    write(r, &fits, b"1");
    write(r, &over, b"1");
    let found = all(
        r,
        WalkOptions {
            key_prefix_len: 1000,
            ..WalkOptions::default()
        },
    );
    assert_eq!(files(&found), [fits.as_str()]);
    assert_eq!(
        skips(&found),
        [(over, SkipReason::KeyTooLong { bytes: 1025 })]
    );
    assert!(SkipReason::KeyTooLong { bytes: 1025 }.is_failure());
}

#[test]
fn an_excluded_directory_is_not_read_and_excluded_odd_entries_are_not_reported() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path().to_path_buf();
    write(&r, "cache/x", b"1");
    write(&r, "keep/cache/y", b"1");
    write(&r, "keep/a.dpx", b"1");
    write(&r, "keep/a.tmp", b"1");
    symlink("nowhere", r.join("keep/dangling.tmp")).unwrap();
    let listed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l2 = listed.clone();
    let root = r.clone();
    let hooks = Hooks {
        after_list: Some(Box::new(move |dir: &Path| {
            let rel = dir
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            l2.lock().unwrap().push(rel);
        })),
        ..Hooks::default()
    };
    let opts = WalkOptions {
        filters: Filters::new(vec![
            Rule::Exclude("cache/".into()),
            Rule::Exclude("*.tmp".into()),
        ])
        .unwrap(),
        ..WalkOptions::default()
    };
    let found = all_with(&r, opts, hooks);
    assert_eq!(files(&found), ["keep/a.dpx"]);
    assert!(skips(&found).is_empty(), "{:?}", skips(&found));
    assert_eq!(*listed.lock().unwrap(), ["", "keep"], "cache/ dirs pruned");
}

#[test]
fn the_first_file_arrives_before_the_walk_ends() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    write(r, "a/1", b"1");
    write(r, "b/2", b"2");
    let (go_tx, go_rx) = std_mpsc::channel::<()>();
    let (waited_tx, waited_rx) = std_mpsc::channel::<bool>();
    let hooks = Hooks {
        // The walk may not list b/ until the consumer holds a/1: a walk that collected the tree
        // before handing out anything would wait here in vain.
        after_list: Some(Box::new(move |dir: &Path| {
            if dir.ends_with("b") {
                let got = go_rx.recv_timeout(Duration::from_secs(60)).is_ok();
                waited_tx.send(got).unwrap();
            }
        })),
        ..Hooks::default()
    };
    let mut w = walk_with(r, WalkOptions::default(), hooks).unwrap();
    let Some(Found::File(first)) = w.blocking_next() else {
        panic!("no first file")
    };
    assert_eq!(first.rel, "a/1");
    go_tx.send(()).unwrap();
    let Some(Found::File(second)) = w.blocking_next() else {
        panic!("no second file")
    };
    assert_eq!(second.rel, "b/2");
    assert!(
        waited_rx.recv_timeout(Duration::from_secs(60)).unwrap(),
        "b/ was listed before the consumer had a/1"
    );
    assert!(w.blocking_next().is_none());
}

#[tokio::test]
async fn the_walk_is_a_stream() {
    use futures::StreamExt as _;
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "x/y", b"1");
    write(t.path(), "z", b"1");
    let w = walk(t.path(), WalkOptions::default()).unwrap();
    let rels: Vec<String> = w
        .filter_map(|f| async move {
            match f {
                Found::File(e) => Some(e.rel),
                Found::Skipped(_) => None,
            }
        })
        .collect()
        .await;
    assert_eq!(rels, ["x/y", "z"]);
}

#[test]
fn a_root_that_is_not_a_readable_directory_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "file", b"1");
    let missing = walk(&t.path().join("missing"), WalkOptions::default()).unwrap_err();
    assert!(matches!(missing, Error::Source { .. }));
    assert!(
        missing
            .to_string()
            .ends_with("no such directory: check the path"),
        "{missing}"
    );
    let file = walk(&t.path().join("file"), WalkOptions::default()).unwrap_err();
    assert!(file.to_string().ends_with("not a directory"), "{file}");
}

#[test]
fn an_empty_directory_yields_nothing() {
    let t = tempfile::tempdir().unwrap();
    assert!(all(t.path(), WalkOptions::default()).is_empty());
}

#[test]
fn dropping_the_walk_stops_it() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    let dirs = CHANNEL_ENTRIES + 100;
    for i in 0..dirs {
        write(r, &format!("d{i:05}/f"), b"");
    }
    let (listed_tx, listed_rx) = std_mpsc::channel::<()>();
    let hooks = Hooks {
        after_list: Some(Box::new(move |_: &Path| listed_tx.send(()).unwrap())),
        ..Hooks::default()
    };
    let mut w = walk_with(r, WalkOptions::default(), hooks).unwrap();
    assert!(matches!(w.blocking_next(), Some(Found::File(_))));
    drop(w);
    // The hook (and its sender) goes when the walk's thread ends: count what it listed until then.
    let mut listed = 0;
    loop {
        match listed_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => listed += 1,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std_mpsc::RecvTimeoutError::Timeout) => panic!("the walk did not stop"),
        }
    }
    // The root, then one directory per queued file: the queue's bound, not the tree.
    assert!(
        listed <= CHANNEL_ENTRIES + 3,
        "listed {listed} of {} dirs",
        dirs + 1
    );
}
