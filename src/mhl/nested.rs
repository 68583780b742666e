//! Nested histories: a folder below the root with its own `ascmhl/` (a card inside a day folder).
//! Found as the reference tool finds them (`MHLHistory._find_and_load_child_histories`): every
//! folder below the root that holds an `ascmhl/` folder, whatever the ignore patterns say,
//! without following symbolic links; each file belongs to the innermost history around it, and a
//! history's parent is the nearest history above it. See docs/mhl.md.

use std::path::Path;

use super::history::FOLDER;

/// The folders below `root` that hold a history, relative to `root` and `/`-separated, sorted
/// (a parent before its children). The root's own `ascmhl/` is not listed, and no `ascmhl/`
/// folder is searched. Blocking: reads every folder of the tree (not its files' contents).
pub(crate) fn find(root: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name == FOLDER {
                if !rel.is_empty() {
                    found.push(rel.clone());
                }
                continue;
            }
            let sub = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            stack.push((e.path(), sub));
        }
    }
    found.sort();
    found
}

/// Whether the folder `dir` (relative to the root; `""` is the root) holds `rel`.
pub(crate) fn contains(dir: &str, rel: &str) -> bool {
    dir.is_empty() || rel.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// `rel` (relative to the root) relative to the folder `dir`, which holds it.
pub(crate) fn within<'a>(dir: &str, rel: &'a str) -> &'a str {
    if dir.is_empty() {
        rel
    } else {
        &rel[dir.len() + 1..]
    }
}

/// The index in `dirs` (history folders as [`find`] lists them, with `""` for the root) of the
/// innermost one holding `rel`, and the ones above it, innermost first.
pub(crate) fn owners(dirs: &[String], rel: &str) -> Vec<usize> {
    let mut v: Vec<usize> = (0..dirs.len())
        .filter(|&i| contains(&dirs[i], rel))
        .collect();
    v.sort_by_key(|&i| std::cmp::Reverse(dirs[i].len()));
    v
}

/// The nearest history folder above `dirs[i]` (its parent history), if any.
pub(crate) fn parent(dirs: &[String], i: usize) -> Option<usize> {
    owners(dirs, &dirs[i]).into_iter().find(|&j| j != i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_history_below_the_root_is_found_and_each_file_has_its_innermost() {
        let dir = tempfile::tempdir().unwrap();
        for d in [
            "ascmhl",
            "Day1/ascmhl",
            "Day1/B/ascmhl",
            "Day1/A/x",
            "Day1/B/C/ascmhl",
            "ascmhl/ascmhl",
            "Other/file.d",
        ] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let found = find(dir.path());
        assert_eq!(found, ["Day1", "Day1/B", "Day1/B/C"]);
        let mut dirs = vec![String::new()];
        dirs.extend(found);
        assert_eq!(owners(&dirs, "Day1/B/C/clip.mov"), [3, 2, 1, 0]);
        assert_eq!(owners(&dirs, "Day1/Bx/clip.mov"), [1, 0]);
        assert_eq!(owners(&dirs, "top.mov"), [0]);
        assert_eq!(within(&dirs[2], "Day1/B/x/y.mov"), "x/y.mov");
        assert_eq!(within(&dirs[0], "Day1/B/x/y.mov"), "Day1/B/x/y.mov");
        assert_eq!(parent(&dirs, 3), Some(2));
        assert_eq!(parent(&dirs, 1), Some(0));
        assert_eq!(parent(&dirs, 0), None);
    }
}
