//! Generation files in `ascmhl/` that the chain does not list, read as the reference tool's
//! `ascmhl verify` reads them (it reads every generation file, listed or not). Such a file
//! vouches for nothing in tally; what it changes is only what `ascmhl verify` would do with it:
//!
//! - the value `ascmhl verify` compares a file with (the first `original` entry over every
//!   generation file, the path mapped through `<previousPath>`): a file must match it too, so
//!   tally never passes a file the reference tool calls different;
//! - the other values such a file holds: compared for a warning only, never a refusal;
//! - the renames it records: a listed file renamed there is not missing when the file is
//!   present under its new name (which is checked against the old name's value, as above).
//!
//! Read only when some generation file is not listed. See docs/mhl.md.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::MhlError;
use super::hashes::HashFormat;
use super::history::{GenerationFile, LowerHex as _};
use super::xml::{self, Ev};

/// A value and the generation file that holds it: (format, value, generation file name).
pub(crate) type Value = (HashFormat, String, String);

/// What the generation files the chain does not list say (empty when every one is listed).
#[derive(Debug, Default)]
pub(crate) struct Unchained {
    /// Per path, the value `ascmhl verify` compares the file with (possibly from a listed
    /// generation: it reads them all).
    originals: HashMap<String, Value>,
    /// Per path, every value (not `failed`) unlisted generations hold for it, by path.
    values: HashMap<String, Vec<Value>>,
    /// Old path -> (new path, the unlisted generation recording the rename).
    renames: HashMap<String, (String, String)>,
    /// The paths renames lead to, and whether the folder has them (set while a tree is walked).
    targets: HashMap<String, AtomicBool>,
}

/// One `<hash>` of a generation file.
struct Media {
    path: String,
    previous: Option<String>,
    /// The first `action="original"` value.
    original: Option<(HashFormat, String)>,
    /// Every value not marked failed.
    values: Vec<(HashFormat, String)>,
}

impl Unchained {
    /// Reads every generation file in `dir` (`generations`, in number order); `unlisted`: the
    /// names of those the chain does not list. Blocking.
    pub(crate) fn read(
        dir: &Path,
        generations: &[GenerationFile],
        unlisted: &[String],
    ) -> Result<Unchained, MhlError> {
        let mut lists = Vec::new();
        for g in generations {
            lists.push(read_media(&dir.join(&g.name))?);
        }
        let mut out = Unchained {
            originals: reference_originals(&lists, generations),
            ..Unchained::default()
        };
        for (list, g) in lists.iter().zip(generations) {
            if !unlisted.contains(&g.name) {
                continue;
            }
            for m in list {
                let values = out.values.entry(m.path.clone()).or_default();
                for (f, v) in &m.values {
                    values.push((*f, v.clone(), g.name.clone()));
                }
                if let Some(p) = &m.previous
                    && *p != m.path
                {
                    out.renames
                        .insert(p.clone(), (m.path.clone(), g.name.clone()));
                }
            }
        }
        for (to, _) in out.renames.values() {
            out.targets.insert(to.clone(), AtomicBool::new(false));
        }
        Ok(out)
    }

    /// The value `ascmhl verify` compares `rel` with, when some generation file is unlisted.
    pub(crate) fn original(&self, rel: &str) -> Option<&Value> {
        self.originals.get(rel)
    }

    /// The values unlisted generations hold for `rel` (by its path there).
    pub(crate) fn values(&self, rel: &str) -> &[Value] {
        self.values.get(rel).map_or(&[], Vec::as_slice)
    }

    /// Marks `rel` as found in the folder (a rename an unlisted generation records may lead
    /// there).
    pub(crate) fn mark_seen(&self, rel: &str) {
        if let Some(seen) = self.targets.get(rel) {
            seen.store(true, Ordering::Relaxed);
        }
    }

    /// When an unlisted generation records `rel` as renamed and the file the renames lead to
    /// (followed through every unlisted rename) is in the folder: (that path, the generation
    /// recording the first rename).
    pub(crate) fn renamed_away(&self, rel: &str) -> Option<(&str, &str)> {
        let (first, generation) = self.renames.get(rel)?;
        let mut to = first.as_str();
        // A chain of renames, each step recorded by an unlisted generation (bounded: no loop).
        for _ in 0..self.renames.len() {
            match self.renames.get(to) {
                Some((next, _)) if next != rel => to = next,
                _ => break,
            }
        }
        let seen = self.targets.get(to)?.load(Ordering::Relaxed);
        seen.then_some((to, generation.as_str()))
    }
}

/// The `<hash>` entries of the generation file at `path`.
fn read_media(path: &Path) -> Result<Vec<Media>, MhlError> {
    let mut list = Vec::new();
    let mut cur: Option<Media> = None;
    let mut action: Option<String> = None;
    xml::walk(path, |stack, ev| {
        if stack.len() == 3 && stack[1] == "hashes" && stack[2] == "hash" {
            match ev {
                Ev::Start(_) => {
                    cur = Some(Media {
                        path: String::new(),
                        previous: None,
                        original: None,
                        values: Vec::new(),
                    })
                }
                Ev::End(_) => list.extend(cur.take()),
            }
        } else if stack.len() == 4
            && stack[2] == "hash"
            && let Some(m) = cur.as_mut()
        {
            match ev {
                Ev::Start(attrs) => action = xml::attr(attrs, "action").map(str::to_owned),
                Ev::End(text) => {
                    if stack[3] == "path" {
                        m.path = text.to_owned();
                    } else if stack[3] == "previousPath" {
                        m.previous = Some(text.to_owned());
                    } else if let Ok(f) = stack[3].parse::<HashFormat>()
                        && f.in_mhl()
                    {
                        let v = text.to_ascii_lowercase_if_hex(f);
                        if action.as_deref() == Some("original") && m.original.is_none() {
                            m.original = Some((f, v.clone()));
                        }
                        if action.as_deref() != Some("failed") {
                            m.values.push((f, v));
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    Ok(list)
}

/// Per listed path, the value `ascmhl verify` compares the file with, and its generation's name,
/// over every generation file (listed in the chain or not, in number order) as it reads them:
/// the path is mapped through each generation's `<previousPath>` (one hop per generation), then
/// the first generation whose entry for it (by path, else by previous path) holds an `original`
/// value gives it.
fn reference_originals(
    lists: &[Vec<Media>],
    generations: &[GenerationFile],
) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let paths: BTreeSet<&str> = lists
        .iter()
        .flat_map(|l| l.iter().map(|m| m.path.as_str()))
        .collect();
    for p in paths {
        let mut looked_up = p;
        for list in lists {
            if let Some(m) = list.iter().find(|m| m.path == looked_up) {
                looked_up = m.previous.as_deref().unwrap_or(looked_up);
            }
        }
        for (list, g) in lists.iter().zip(generations) {
            let media = list.iter().find(|m| m.path == looked_up).or_else(|| {
                list.iter()
                    .rev()
                    .find(|m| m.previous.as_deref() == Some(looked_up))
            });
            if let Some(Media {
                original: Some((f, v)),
                ..
            }) = media
            {
                out.insert(p.to_owned(), (*f, v.clone(), g.name.clone()));
                break;
            }
        }
    }
    out
}
