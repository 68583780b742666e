//! `--include` / `--exclude`: which entries of a tree a command takes, rsync-like.
//!
//! The rules, as `--help` and the README state them:
//!
//! - Rules are tried in command-line order; the **first** rule that matches decides; an entry no
//!   rule matches is included. Hidden files are ordinary entries (included unless a rule says no).
//! - A pattern without `/` matches the entry's **name** at any depth (`*.tmp`, `.DS_Store`).
//! - A pattern with a `/` is **anchored** at the root of the tree and matches the whole relative
//!   path (`reel1/*.dpx` matches `reel1/a.dpx`, not `reel1/x/a.dpx`, not `x/reel1/a.dpx`); a
//!   leading `/` is allowed and changes nothing.
//! - `*` and `?` never match `/`; `**` matches across directories (`**/cache`, `reel1/**`); `[abc]`,
//!   `{a,b}` as in common globs; `\` escapes the next character.
//! - A trailing `/` matches directories only (`cache/`).
//! - A directory that is excluded is **pruned**: nothing under it is read, whatever later rules say.
//!   So `--include '*.dpx' --exclude '*'` keeps only the top level's `.dpx` files (the directories
//!   are excluded by `*`); to take `.dpx` files at every depth write
//!   `--include '*/' --include '*.dpx' --exclude '*'`, as with rsync.

use globset::{GlobBuilder, GlobMatcher};

use crate::error::Error;

/// One `--include` or `--exclude` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Take what matches (and stop looking at later rules).
    Include(String),
    /// Leave out what matches (a directory: nothing under it is read).
    Exclude(String),
}

#[derive(Debug, Clone)]
struct Compiled {
    matcher: GlobMatcher,
    /// Matched against the whole relative path; else against the last segment.
    anchored: bool,
    /// The pattern ended with `/`.
    dirs_only: bool,
    include: bool,
}

/// The rules of one command, compiled; see the module docs for their meaning.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    rules: Vec<Compiled>,
}

impl Filters {
    /// Compiles `rules` (in command-line order). A pattern that is not a valid glob is a usage
    /// error naming the pattern.
    pub fn new(rules: Vec<Rule>) -> Result<Filters, Error> {
        let rules = rules
            .into_iter()
            .map(|rule| {
                let (pattern, include, flag) = match rule {
                    Rule::Include(p) => (p, true, "--include"),
                    Rule::Exclude(p) => (p, false, "--exclude"),
                };
                compile(&pattern, include).map_err(|why| {
                    Error::Usage(format!(
                        "{flag} '{pattern}' is not a valid pattern: {why} (see tally hash --help for the rules)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Filters { rules })
    }

    /// No rules: everything is included.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the entry at `rel` (`/`-separated, relative to the root, no leading or trailing
    /// `/`) is taken; for a directory, whether it is descended into.
    pub fn allows(&self, rel: &str, is_dir: bool) -> bool {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        for r in &self.rules {
            if r.dirs_only && !is_dir {
                continue;
            }
            let subject = if r.anchored { rel } else { name };
            if r.matcher.is_match(subject) {
                return r.include;
            }
        }
        true
    }
}

impl Filters {
    /// Whether the file at `rel` is taken, as a walk of the same tree would take it: every folder
    /// on its path descended into, and the file itself taken (for listings, which have no
    /// folders to skip).
    pub fn allows_file(&self, rel: &str) -> bool {
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            let dir = &rel[..end + i];
            if !dir.is_empty() && !self.allows(dir, true) {
                return false;
            }
            end += i + 1;
        }
        self.allows(rel, false)
    }
}

fn compile(pattern: &str, include: bool) -> Result<Compiled, String> {
    let mut p = pattern;
    let dirs_only = p.len() > 1 && p.ends_with('/');
    if dirs_only {
        p = &p[..p.len() - 1];
    }
    let anchored = p.contains('/');
    let p = p.strip_prefix('/').unwrap_or(p);
    if p.is_empty() {
        return Err("it matches nothing: give a name or a path".into());
    }
    let glob = GlobBuilder::new(p)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())?;
    Ok(Compiled {
        matcher: glob.compile_matcher(),
        anchored,
        dirs_only,
        include,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(rules: &[(&str, bool)]) -> Filters {
        Filters::new(
            rules
                .iter()
                .map(|(p, inc)| {
                    if *inc {
                        Rule::Include(p.to_string())
                    } else {
                        Rule::Exclude(p.to_string())
                    }
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_listed_key_is_taken_as_a_walk_would_take_it() {
        // An excluded folder is not descended into: nothing under it, whatever the file's name.
        let no_cache = f(&[("cache/", false)]);
        assert!(!no_cache.allows_file("reel1/cache/a.mov"));
        assert!(no_cache.allows_file("reel1/a.mov"));
        assert!(no_cache.allows_file("cache.mov"));
        // The walk's way to keep only .dpx files at every depth.
        let dpx = f(&[("*.dpx", true), ("*/", true), ("*", false)]);
        assert!(dpx.allows_file("r/s/f.000001.dpx"));
        assert!(!dpx.allows_file("r/s/f.wav"));
        // An anchored folder.
        let reel = f(&[("reel1/**", false)]);
        assert!(!reel.allows_file("reel1/x/y.mov"));
        assert!(reel.allows_file("reel2/x/y.mov"));
    }

    #[test]
    fn no_rules_take_everything_hidden_files_included() {
        let none = f(&[]);
        for rel in [".DS_Store", "a/.hidden/x", "a b/ü.txt"] {
            assert!(none.allows(rel, false), "{rel}");
        }
        assert!(none.allows(".git", true));
    }

    #[test]
    fn first_matching_rule_wins_in_command_line_order() {
        // Include before exclude: the include decides for *.dpx.
        let inc_first = f(&[("*.dpx", true), ("*", false)]);
        assert!(inc_first.allows("a.dpx", false));
        assert!(!inc_first.allows("a.txt", false));
        // Same rules the other way round: `*` matches first and excludes everything.
        let exc_first = f(&[("*", false), ("*.dpx", true)]);
        assert!(!exc_first.allows("a.dpx", false));
        // No match: included.
        let only = f(&[("*.tmp", false)]);
        assert!(only.allows("a.dpx", false));
        assert!(!only.allows("deep/er/x.tmp", false));
    }

    #[test]
    fn a_pattern_without_slash_matches_the_name_at_any_depth() {
        let r = f(&[(".DS_Store", false)]);
        assert!(!r.allows(".DS_Store", false));
        assert!(!r.allows("reel1/sub/.DS_Store", false));
        assert!(r.allows("reel1/.DS_Store.keep", false));
        // `*` does not cross `/`, but a name pattern is only ever compared with the last segment.
        let star = f(&[("shot_*", false)]);
        assert!(!star.allows("reel/shot_010", true));
        assert!(star.allows("shot_dir/frame.dpx", false));
    }

    #[test]
    fn a_pattern_with_slash_is_anchored_at_the_root() {
        let r = f(&[("reel1/*.dpx", false)]);
        assert!(!r.allows("reel1/a.dpx", false));
        assert!(r.allows("reel1/x/a.dpx", false), "* does not cross /");
        assert!(r.allows("x/reel1/a.dpx", false), "anchored at the root");
        let lead = f(&[("/top.txt", false)]);
        assert!(!lead.allows("top.txt", false));
        assert!(lead.allows("sub/top.txt", false));
    }

    #[test]
    fn double_star_crosses_directories() {
        let r = f(&[("**/cache", false)]);
        assert!(!r.allows("cache", true));
        assert!(!r.allows("a/b/cache", true));
        let under = f(&[("reel1/**", false)]);
        assert!(!under.allows("reel1/a/b/c.dpx", false));
        assert!(under.allows("reel2/a.dpx", false));
        let mid = f(&[("a/**/x.tmp", false)]);
        assert!(!mid.allows("a/x.tmp", false));
        assert!(!mid.allows("a/b/c/x.tmp", false));
        assert!(mid.allows("b/x.tmp", false));
    }

    #[test]
    fn a_trailing_slash_matches_directories_only() {
        let r = f(&[("cache/", false)]);
        assert!(!r.allows("cache", true));
        assert!(!r.allows("a/cache", true));
        assert!(r.allows("cache", false), "a file named cache is kept");
        // The rsync idiom: every directory, then *.dpx, then nothing else.
        let idiom = f(&[("*/", true), ("*.dpx", true), ("*", false)]);
        assert!(idiom.allows("reel1", true));
        assert!(idiom.allows("reel1/a.dpx", false));
        assert!(!idiom.allows("reel1/a.txt", false));
    }

    #[test]
    fn an_invalid_pattern_is_a_usage_error_naming_it() {
        let e = Filters::new(vec![Rule::Exclude("a[".into())]).unwrap_err();
        assert!(matches!(e, Error::Usage(_)));
        let msg = e.to_string();
        assert!(msg.contains("--exclude 'a['"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let empty = Filters::new(vec![Rule::Include("/".into())]).unwrap_err();
        assert!(empty.to_string().contains("--include '/'"), "{empty}");
    }
}
