//! Numbered frames grouped into sequences for summaries: `reel1/shot_010.000001.dpx` ...
//! `shot_010.002400.dpx` become one line,
//! `reel1/shot_010.[000001-002400].dpx  2,400 files  48.2 GiB  uploaded`.
//!
//! Files are members of one sequence when they are in the same directory, their names differ only
//! in the **last** run of digits of the name, those runs have the same width (`f1`..`f9` and
//! `f10`..`f99` are two sequences), and they carry the same outcome label (a failed frame splits
//! its sequence). Numbers increase; gaps are allowed and counted ("3 missing").
//!
//! [`Grouper`] is streaming: fed in key order (the walk's order), it keeps O(1) state per open
//! sequence and at most [`MAX_OPEN`] sequences open at once (frames interleaved with sidecars,
//! `a.0001.dpx`, `a.0001.xml`, `a.0002.dpx`, ..., keep two open); a sequence closes, and comes
//! out, as soon as a key arrives that no later member could precede.

use std::fmt;

/// Sequences open at once at most; opening one more closes the oldest.
pub(crate) const MAX_OPEN: usize = 64;

/// Longest run of digits read as a frame number (longer runs are not numbers of frames).
const MAX_DIGITS: usize = 18;

/// A run of numbered files, or the only file of its run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item<L> {
    /// One file.
    File {
        /// Its relative path.
        rel: String,
        /// Its size.
        size: u64,
        /// Its outcome.
        label: L,
    },
    /// Two or more numbered files.
    Sequence(Sequence<L>),
}

/// Numbered files with the same text around their numbers (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sequence<L> {
    /// Everything before the number (directory included).
    pub prefix: String,
    /// Everything after the number.
    pub suffix: String,
    /// Digits of every number (zero-padded to it).
    pub width: usize,
    /// The first number.
    pub first: u64,
    /// The last number.
    pub last: u64,
    /// Files in the sequence.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their common outcome.
    pub label: L,
}

impl<L> Sequence<L> {
    /// Numbers between the first and the last that no file has.
    pub(crate) fn missing(&self) -> u64 {
        (self.last - self.first + 1) - self.files
    }

    /// `reel1/shot_010.[000001-002400].dpx`.
    pub(crate) fn pattern(&self) -> String {
        let w = self.width;
        format!(
            "{}[{:0w$}-{:0w$}]{}",
            self.prefix, self.first, self.last, self.suffix
        )
    }

    fn into_item(self) -> Item<L> {
        if self.files == 1 {
            let w = self.width;
            Item::File {
                rel: format!("{}{:0w$}{}", self.prefix, self.first, self.suffix),
                size: self.bytes,
                label: self.label,
            }
        } else {
            Item::Sequence(self)
        }
    }
}

impl<L: fmt::Display> fmt::Display for Item<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::File { rel, size, label } => write!(f, "{rel}  {}  {label}", size_text(*size)),
            Item::Sequence(s) => {
                write!(f, "{}  {} files", s.pattern(), thousands(s.files))?;
                if s.missing() > 0 {
                    write!(f, " ({} missing)", thousands(s.missing()))?;
                }
                write!(f, "  {}  {}", size_text(s.bytes), s.label)
            }
        }
    }
}

/// Groups files fed in key order into [`Item`]s (see the module docs).
#[derive(Debug)]
pub(crate) struct Grouper<L> {
    open: Vec<Sequence<L>>,
}

impl<L> Default for Grouper<L> {
    fn default() -> Self {
        Grouper { open: Vec::new() }
    }
}

impl<L: PartialEq> Grouper<L> {
    /// A grouper with nothing open.
    pub(crate) fn new() -> Grouper<L> {
        Grouper::default()
    }

    /// Feeds the next file in key order; returns what this closed (usually nothing or one item).
    pub(crate) fn push(&mut self, rel: &str, size: u64, label: L) -> Vec<Item<L>> {
        let mut out = Vec::new();
        // No later key can belong to a sequence whose prefix this key does not start with.
        let mut i = 0;
        while i < self.open.len() {
            if rel.starts_with(self.open[i].prefix.as_str()) {
                i += 1;
            } else {
                out.push(self.open.remove(i).into_item());
            }
        }
        let Some((start, end, number)) = number_run(rel) else {
            out.push(Item::File {
                rel: rel.to_owned(),
                size,
                label,
            });
            return out;
        };
        let (prefix, suffix, width) = (&rel[..start], &rel[end..], end - start);
        let same = self
            .open
            .iter()
            .position(|s| s.width == width && s.prefix == prefix && s.suffix == suffix);
        if let Some(i) = same {
            let s = &mut self.open[i];
            if s.label == label && number > s.last {
                s.last = number;
                s.files += 1;
                s.bytes += size;
                return out;
            }
            out.push(self.open.remove(i).into_item());
        }
        if self.open.len() >= MAX_OPEN {
            out.push(self.open.remove(0).into_item());
        }
        self.open.push(Sequence {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            width,
            first: number,
            last: number,
            files: 1,
            bytes: size,
            label,
        });
        out
    }

    /// Closes everything still open (at the end of the input).
    pub(crate) fn finish(&mut self) -> Vec<Item<L>> {
        self.open.drain(..).map(Sequence::into_item).collect()
    }
}

/// The last run of ASCII digits in the file name (after the last `/`): (start, end, value).
fn number_run(rel: &str) -> Option<(usize, usize, u64)> {
    let name_start = rel.rfind('/').map_or(0, |i| i + 1);
    let b = rel.as_bytes();
    let end = (name_start..b.len())
        .rev()
        .find(|&i| b[i].is_ascii_digit())?
        + 1;
    let start = (name_start..end)
        .rev()
        .find(|&i| !b[i].is_ascii_digit())
        .map_or(name_start, |i| i + 1);
    if end - start > MAX_DIGITS {
        return None;
    }
    Some((start, end, rel[start..end].parse().ok()?))
}

/// `2,400`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `48.2 GiB`, `512 B`.
pub(crate) fn size_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(files: &[(&str, u64, &'static str)]) -> Vec<String> {
        let mut sorted = files.to_vec();
        sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut g = Grouper::new();
        let mut out = Vec::new();
        for (rel, size, label) in sorted {
            out.extend(g.push(rel, size, label));
        }
        out.extend(g.finish());
        out.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_full_run_is_one_line_with_its_count_and_bytes() {
        let names: Vec<String> = (1..=2400)
            .map(|i| format!("reel1/shot_010.{i:06}.dpx"))
            .collect();
        let size = 21_571_645; // 2,400 x this = 51,771,948,000 bytes = 48.2 GiB
        let files: Vec<_> = names
            .iter()
            .map(|n| (n.as_str(), size, "uploaded"))
            .collect();
        assert_eq!(
            group(&files),
            ["reel1/shot_010.[000001-002400].dpx  2,400 files  48.2 GiB  uploaded"]
        );
    }

    #[test]
    fn gaps_are_counted() {
        let files = [
            ("s.0001.exr", 10, "uploaded"),
            ("s.0002.exr", 10, "uploaded"),
            ("s.0004.exr", 10, "uploaded"),
            ("s.0007.exr", 10, "uploaded"),
        ];
        assert_eq!(
            group(&files),
            ["s.[0001-0007].exr  4 files (3 missing)  40 B  uploaded"]
        );
    }

    #[test]
    fn two_sequences_in_one_directory_even_interleaved_with_sidecars() {
        let files = [
            ("r/a.0001.dpx", 1, "ok"),
            ("r/a.0002.dpx", 1, "ok"),
            ("r/a.0001.xml", 2, "ok"),
            ("r/a.0002.xml", 2, "ok"),
            ("r/b.0001.dpx", 1, "ok"),
            ("r/b.0002.dpx", 1, "ok"),
            ("r/b.0003.dpx", 1, "ok"),
        ];
        assert_eq!(
            group(&files),
            [
                "r/a.[0001-0002].dpx  2 files  2 B  ok",
                "r/a.[0001-0002].xml  2 files  4 B  ok",
                "r/b.[0001-0003].dpx  3 files  3 B  ok",
            ]
        );
    }

    #[test]
    fn a_lone_numbered_file_stays_a_file_and_plain_files_pass_through() {
        let files = [
            ("notes.txt", 5, "ok"),
            ("shot_010.000001.dpx", 2048, "ok"),
            ("x/shot_010.000002.dpx", 2048, "ok"),
        ];
        assert_eq!(
            group(&files),
            [
                "notes.txt  5 B  ok",
                "shot_010.000001.dpx  2.0 KiB  ok",
                "x/shot_010.000002.dpx  2.0 KiB  ok",
            ],
            "frames in different directories are not one sequence"
        );
    }

    #[test]
    fn different_widths_are_different_sequences() {
        // Key order: f1, f10, f11, f2, f3: the two widths interleave.
        let files = [
            ("f1.png", 1, "ok"),
            ("f2.png", 1, "ok"),
            ("f3.png", 1, "ok"),
            ("f10.png", 1, "ok"),
            ("f11.png", 1, "ok"),
        ];
        assert_eq!(
            group(&files),
            [
                "f[1-3].png  3 files  3 B  ok",
                "f[10-11].png  2 files  2 B  ok",
            ]
        );
    }

    #[test]
    fn a_different_label_splits_the_sequence() {
        let files = [
            ("s.01.dpx", 1, "uploaded"),
            ("s.02.dpx", 1, "uploaded"),
            ("s.03.dpx", 1, "failed"),
            ("s.04.dpx", 1, "uploaded"),
            ("s.05.dpx", 1, "uploaded"),
        ];
        assert_eq!(
            group(&files),
            [
                "s.[01-02].dpx  2 files  2 B  uploaded",
                "s.03.dpx  1 B  failed",
                "s.[04-05].dpx  2 files  2 B  uploaded",
            ]
        );
    }

    #[test]
    fn only_the_last_run_of_digits_in_the_name_counts() {
        assert_eq!(number_run("reel1/shot_010.000042.dpx"), Some((15, 21, 42)));
        assert_eq!(number_run("reel1/notes.txt"), None);
        assert_eq!(
            number_run("2024/notes.txt"),
            None,
            "not the directory's digits"
        );
        assert_eq!(
            number_run("x/0000000000000000001"),
            None,
            "19 digits: not a frame"
        );
    }

    #[test]
    fn open_sequences_are_bounded() {
        let mut g = Grouper::new();
        let mut closed = 0;
        // Names share the prefix "d/" and each has its own suffix: every one opens a sequence.
        for i in 0..(MAX_OPEN + 10) {
            let tag: String = i
                .to_string()
                .bytes()
                .map(|d| char::from(b'a' + (d - b'0')))
                .collect();
            closed += g.push(&format!("d/7{tag}"), 1, ()).len();
            assert!(g.open.len() <= MAX_OPEN);
        }
        assert_eq!(closed + g.finish().len(), MAX_OPEN + 10);
    }

    #[test]
    fn numbers_and_sizes_read_as_people_write_them() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(size_text(1023), "1023 B");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(3 << 30), "3.0 GiB");
    }
}
