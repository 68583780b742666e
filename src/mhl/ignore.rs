//! The history's ignore patterns (`<processinfo><ignore><pattern>`), matched the way the reference
//! tool's gitignore-style rules match the common ones: a pattern without `/` matches a name at any
//! depth (`.DS_Store`, `*.tmp`, `ascmhl`), a trailing `/` matches directories only, a pattern with
//! `/` inside matches the path from the root. Negations (`!pattern`) are not supported: such a
//! pattern is ignored (the file is then checked, which errs on the side of checking).

use globset::{Glob, GlobMatcher};

#[derive(Debug)]
struct Pattern {
    glob: GlobMatcher,
    dirs_only: bool,
    anchored: bool,
}

/// A set of ignore patterns.
#[derive(Debug, Default)]
pub struct Ignore(Vec<Pattern>);

impl Ignore {
    /// Compiles `patterns`; patterns that do not compile are left out (logged).
    pub fn new(patterns: &[String]) -> Ignore {
        let mut out = Vec::new();
        for p in patterns {
            if p.starts_with('!') || p.trim().is_empty() {
                continue;
            }
            let dirs_only = p.ends_with('/');
            let body = p.trim_end_matches('/');
            let anchored = body.contains('/');
            let body = body.trim_start_matches('/');
            match Glob::new(body) {
                Ok(g) => out.push(Pattern {
                    glob: g.compile_matcher(),
                    dirs_only,
                    anchored,
                }),
                Err(e) => {
                    tracing::warn!("ASC MHL ignore pattern '{p}' is not usable ({e}); left out")
                }
            }
        }
        Ignore(out)
    }

    /// Whether the file at `rel` (`/`-separated) or one of its directories is ignored.
    pub fn ignores(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        for p in &self.0 {
            for (i, name) in parts.iter().enumerate() {
                let is_dir = i + 1 < parts.len();
                if p.dirs_only && !is_dir {
                    continue;
                }
                let hit = if p.anchored {
                    p.glob.is_match(parts[..=i].join("/"))
                } else {
                    p.glob.is_match(name)
                };
                if hit {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_tools_default_patterns_and_anchored_ones() {
        let ig = Ignore::new(&[
            ".DS_Store".into(),
            "ascmhl".into(),
            "ascmhl/".into(),
            "Proxy/*.mov".into(),
            "tmp/".into(),
        ]);
        assert!(ig.ignores(".DS_Store"));
        assert!(ig.ignores("Clips/.DS_Store"));
        assert!(ig.ignores("ascmhl/ascmhl_chain.xml"));
        assert!(ig.ignores("Reel/ascmhl/0001_x.mhl"));
        assert!(ig.ignores("Proxy/a.mov"));
        assert!(!ig.ignores("Other/Proxy/a.mov"));
        assert!(ig.ignores("x/tmp/a"));
        assert!(!ig.ignores("x/tmp"), "tmp/ names directories only");
        assert!(!ig.ignores("Clips/c1.mov"));
    }
}
