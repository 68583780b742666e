//! The history's ignore patterns (`<processinfo><ignore><pattern>`), with the semantics the
//! reference tool `ascmhl` gives them: Python `pathspec`'s `gitwildmatch` patterns (git's
//! `.gitignore` rules), ported here pattern for pattern (`pathspec` 1.1, `GitIgnoreSpecPattern`):
//!
//! - `*` and `?` never cross `/`; `**` as a whole segment matches any number of segments;
//!   `[...]` is a bracket expression (`[!...]` negated); `\` escapes;
//! - a pattern without `/` (other than a trailing one) matches a name at any depth; one with a
//!   `/` inside or at the start is anchored at the root;
//! - a trailing `/` matches directories only (and so everything under them);
//! - `!pattern` re-includes what an earlier pattern ignored; the last pattern that matches
//!   decides; `#` starts a comment; trailing spaces are dropped (unless escaped).
//!
//! A path is ignored when the path itself or one of its directories is: the reference tool's
//! walk does not enter an ignored directory, so a negation cannot re-include a file under one.
//! Paths are matched relative to the history's root.
//!
//! Whether an ignored path is checked anyway is the caller's choice ([`super::session`]: a path
//! the history lists is always checked).

use regex::Regex;

#[derive(Debug)]
struct Pattern {
    regex: Regex,
    include: bool,
}

/// A set of ignore patterns.
#[derive(Debug, Default)]
pub(crate) struct Ignore(Vec<Pattern>);

/// The reference tool's patterns when a history has none.
pub(crate) fn default_patterns() -> Vec<String> {
    vec![".DS_Store".into(), "ascmhl".into(), "ascmhl/".into()]
}

impl Ignore {
    /// Compiles `patterns`; a pattern git would discard (an invalid range) is left out, one that
    /// cannot be compiled is left out and logged.
    pub(crate) fn new(patterns: &[String]) -> Ignore {
        let mut out = Vec::new();
        for p in patterns {
            match to_regex(p) {
                Ok(Some((re, include))) => match Regex::new(&re) {
                    Ok(regex) => out.push(Pattern { regex, include }),
                    Err(e) => {
                        tracing::warn!("ASC MHL ignore pattern '{p}' is not usable ({e}); left out")
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("ASC MHL ignore pattern '{p}' is not usable ({e}); left out")
                }
            }
        }
        Ignore(out)
    }

    /// Whether `path` (relative, `/`-separated; a directory ends with `/`) matches: the last
    /// pattern that matches decides.
    fn matches(&self, path: &str) -> bool {
        let mut hit = false;
        for p in &self.0 {
            if p.include != hit && p.regex.is_match(path) {
                hit = p.include;
            }
        }
        hit
    }

    /// Whether the file at `rel` (`/`-separated) is ignored: itself, or one of its directories.
    pub(crate) fn ignores(&self, rel: &str) -> bool {
        let mut at = 0;
        while let Some(i) = rel[at..].find('/') {
            let dir = &rel[..at + i + 1];
            if self.matches(dir) {
                return true;
            }
            at += i + 1;
        }
        self.matches(rel)
    }
}

/// A pattern's regular expression and whether it ignores (`true`) or re-includes (`false`);
/// `None` for a pattern that does nothing (blank, comment, `/`, invalid range).
fn to_regex(pattern: &str) -> Result<Option<(String, bool)>, String> {
    let mut p = pattern;
    if !p.ends_with("\\ ") {
        p = p.trim_end();
    }
    if p.is_empty() || p.starts_with('#') || p == "/" {
        return Ok(None);
    }
    let include = !p.starts_with('!');
    if !include {
        p = &p[1..];
    }
    let (segs, is_dir) = segments(p)?;
    const DIR_MARK: &str = "(?:/)";
    let n = segs.len();
    let special =
        |s: &[String], v: &[&str]| s.len() == v.len() && s.iter().zip(v).all(|(a, b)| a == b);
    if special(&segs, &["**"]) {
        return Ok(Some((if is_dir { DIR_MARK } else { "." }.into(), include)));
    }
    if special(&segs, &["**", "*"]) {
        return Ok(Some((".".into(), include)));
    }
    if special(&segs, &["**", "*", "**"]) {
        return Ok(Some(("/".into(), include)));
    }
    let mut out = String::new();
    let mut need_slash = false;
    for (i, seg) in segs.iter().enumerate() {
        if seg == "**" {
            if i == 0 {
                out.push_str("^(?:.+/)?");
            } else if i < n - 1 {
                out.push_str("(?:/.+)?");
                need_slash = true;
            } else {
                out.push('/');
            }
        } else {
            if i == 0 {
                out.push('^');
            }
            if need_slash {
                out.push('/');
            }
            if seg == "*" {
                out.push_str("[^/]+");
            } else {
                match segment_glob(seg)? {
                    Some(r) => out.push_str(&r),
                    None => return Ok(None),
                }
            }
            if i == n - 1 {
                out.push_str("(?:/|$)");
            }
            need_slash = true;
        }
    }
    Ok(Some((out, include)))
}

/// The pattern's `/`-separated segments, normalized: anchored with a leading `**` unless it has
/// a slash before its end, a trailing `/` as `**`, runs of `**` as one. And whether it names
/// directories only (a trailing `/`).
fn segments(p: &str) -> Result<(Vec<String>, bool), String> {
    let mut segs: Vec<String> = p.split('/').map(str::to_owned).collect();
    let is_dir = segs.last().is_some_and(|s| s.is_empty());
    if segs[0].is_empty() {
        segs.remove(0);
    } else if (segs.len() == 1 || (segs.len() == 2 && segs[1].is_empty())) && segs[0] != "**" {
        segs.insert(0, "**".into());
    }
    if segs.is_empty() {
        return Err("the pattern is empty".into());
    }
    if let Some(last) = segs.last_mut()
        && last.is_empty()
    {
        *last = "**".into();
    }
    let mut i = segs.len() - 1;
    while i > 0 {
        if segs[i - 1] == "**" && segs[i] == "**" {
            segs.remove(i);
        }
        i -= 1;
    }
    Ok((segs, is_dir))
}

/// One segment's glob as a regular expression (`None`: an invalid range, which git discards).
fn segment_glob(pattern: &str) -> Result<Option<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let (mut i, end) = (0, chars.len());
    let mut escape = false;
    let mut re = String::new();
    while i < end {
        let c = chars[i];
        i += 1;
        if escape {
            escape = false;
            re.push_str(&regex::escape(&c.to_string()));
        } else if c == '\\' {
            escape = true;
        } else if c == '*' {
            re.push_str("[^/]*");
        } else if c == '?' {
            re.push_str("[^/]");
        } else if c == '[' {
            let mut j = i;
            if j < end && (chars[j] == '!' || chars[j] == '^') {
                j += 1;
            }
            if j < end && chars[j] == ']' {
                j += 1;
            }
            while j < end && chars[j] != ']' {
                j += 1;
            }
            if j >= end {
                return Ok(None);
            }
            j += 1;
            let mut expr = String::from("[");
            if chars[i] == '!' || chars[i] == '^' {
                expr.push('^');
                i += 1;
            }
            // The body as a regex class: backslashes doubled (as pathspec does), and the
            // characters Rust's class syntax treats specially (`[`, `&&`, `--`, `~~`) escaped.
            for &b in &chars[i..j - 1] {
                match b {
                    '\\' => expr.push_str("\\\\"),
                    '[' | '&' | '~' => {
                        expr.push('\\');
                        expr.push(b);
                    }
                    _ => expr.push(b),
                }
            }
            expr.push(']');
            re.push_str(&expr);
            i = j;
        } else {
            re.push_str(&regex::escape(&c.to_string()));
        }
    }
    if escape {
        return Err("a pattern ends with an escape character".into());
    }
    Ok(Some(re))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(p: &[&str]) -> Ignore {
        Ignore::new(&p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn the_reference_tools_default_patterns_and_anchored_ones() {
        let ig = ig(&[".DS_Store", "ascmhl", "ascmhl/", "Proxy/*.mov", "tmp/"]);
        assert!(ig.ignores(".DS_Store"));
        assert!(ig.ignores("Clips/.DS_Store"));
        assert!(ig.ignores("ascmhl/ascmhl_chain.xml"));
        assert!(ig.ignores("Reel/ascmhl/0001_x.mhl"));
        assert!(ig.ignores("Proxy/a.mov"));
        assert!(!ig.ignores("Other/Proxy/a.mov"), "anchored at the root");
        assert!(ig.ignores("x/tmp/a"));
        assert!(!ig.ignores("x/tmp"), "tmp/ names directories only");
        assert!(!ig.ignores("Clips/c1.mov"));
    }

    #[test]
    fn a_star_does_not_cross_a_slash_and_two_stars_do() {
        let i = ig(&["Proxy/*.mov"]);
        assert!(i.ignores("Proxy/b.mov"));
        assert!(
            !i.ignores("Proxy/sub/b.mov"),
            "issue 25: * must not cross /"
        );
        let i = ig(&["Proxy/**/*.mov"]);
        assert!(i.ignores("Proxy/b.mov"));
        assert!(i.ignores("Proxy/sub/deep/b.mov"));
        let i = ig(&["{a,b}.mov"]);
        assert!(
            i.ignores("{a,b}.mov"),
            "no brace alternation in gitwildmatch"
        );
        assert!(!i.ignores("a.mov"));
        let i = ig(&["c?.mov", "[xy]1.wav", "[!z]2.wav"]);
        assert!(i.ignores("d/c1.mov") && !i.ignores("c12.mov"));
        assert!(i.ignores("x1.wav") && !i.ignores("z1.wav"));
        assert!(i.ignores("a2.wav") && !i.ignores("z2.wav"));
    }

    #[test]
    fn a_negation_re_includes_unless_a_directory_is_ignored() {
        let i = ig(&["*.mov", "!A001.mov"]);
        assert!(i.ignores("B002.mov"));
        assert!(!i.ignores("A001.mov"), "issue 25: ! is honoured");
        assert!(!i.ignores("Clips/A001.mov"));
        let i = ig(&["!A001.mov", "*.mov"]);
        assert!(i.ignores("A001.mov"), "the last matching pattern decides");
        let i = ig(&["Proxy/", "!Proxy/a.mov"]);
        assert!(i.ignores("Proxy/a.mov"), "the walk never enters Proxy/");
        let i = ig(&["# comment", "", "  ", "/", "a.mov   ", "[bad"]);
        assert!(i.ignores("a.mov"), "trailing spaces dropped");
        assert!(!i.ignores("# comment") && !i.ignores("x") && !i.ignores("[bad"));
        let i = ig(&[" lead.mov"]);
        assert!(
            i.ignores(" lead.mov") && !i.ignores("lead.mov"),
            "leading spaces kept"
        );
        let i = ig(&["*"]);
        assert!(i.ignores("a") && i.ignores("a/b"));
        let i = ig(&["*/"]);
        assert!(i.ignores("a/b") && !i.ignores("a"));
        let i = ig(&["/top.mov"]);
        assert!(i.ignores("top.mov") && !i.ignores("d/top.mov"));
    }

    /// The port against `pathspec` 1.1 itself: a table of pattern lists and the paths each
    /// matches, written by pathspec (tests/mhl-differential/gitwildmatch_table.py).
    #[test]
    fn the_port_matches_what_pathspec_matches() {
        let table: Vec<(Vec<String>, Vec<String>)> =
            serde_json::from_str(include_str!("../../tests/fixtures/mhl/gitwildmatch.json"))
                .unwrap();
        let paths = [
            "A001.mov",
            "B002.mov",
            "Clips/A001.mov",
            "Proxy/a.mov",
            "Proxy/sub/b.mov",
            "Proxy/b.mov",
            "sub/",
            "x/sub/",
            "x/sub/f",
            "top.mov",
            "d/top.mov",
            "c1.mov",
            "c12.mov",
            "a.wav",
            "b.wav",
            "a/",
            "a/f",
            "a/b",
            "a/x/b",
            "x",
            "y/x",
            "deep/",
            "deep/er/z.mov",
            "de/e",
            "dx/e",
            "x*y",
            "xay",
            " lead.mov",
            "lead.mov",
            "trail.mov",
            "ünïcode/",
        ];
        assert_eq!(table.len(), 48);
        for (patterns, expected) in table {
            let i = Ignore::new(&patterns);
            let got: Vec<&str> = paths.iter().copied().filter(|p| i.matches(p)).collect();
            assert_eq!(got, expected, "patterns {patterns:?}");
        }
    }
}
