//! Reading an `ascmhl/` history: the chain (`ascmhl_chain.xml`), each generation it lists checked
//! against the C4 it records, then those generations' file hashes, oldest first. Only generations
//! the chain lists (and so seals) count: a generation file the chain does not list vouches for
//! nothing; only what the reference tool's verify would do with it is kept ([`super::unchained`]).
//! For each path every value not marked `failed` is kept (the
//! original and every later one): a file must equal all of them. A `<previousPath>` carries the
//! old path's values over to the new one. Text (names, values) is taken byte for byte, untrimmed,
//! as the reference tool reads it. See docs/mhl.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::MhlError;
use super::hashes::{HashFormat, file_hashes};
use super::unchained::{Unchained, Value};
use super::xml::{self, Ev};

/// The history folder's name.
pub(crate) const FOLDER: &str = "ascmhl";
/// The chain file's name.
pub(crate) const CHAIN: &str = "ascmhl_chain.xml";

/// One `<hashlist>` of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainEntry {
    /// `sequencenr`.
    pub sequence: u32,
    /// The generation file's name, relative to `ascmhl/`.
    pub path: String,
    /// The format of the hash recorded (c4 per the specification).
    pub format: HashFormat,
    /// The hash of the generation file.
    pub value: String,
}

/// A generation file found in `ascmhl/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GenerationFile {
    /// The number its name starts with.
    pub number: u32,
    /// Its name.
    pub name: String,
}

/// What the history knows about one file.
#[derive(Debug, Default)]
pub(crate) struct Known {
    /// The size the newest generation listing it recorded.
    pub size: Option<u64>,
    /// Every value not marked failed, oldest first: (format, value, index in
    /// [`History::generations`] of the generation that recorded it). The first is the original.
    pub values: Vec<(HashFormat, String, usize)>,
    /// Listed later under a new name (`<previousPath>`): not expected under this one.
    renamed: bool,
    /// Whether the folder has it (set while a tree is walked).
    seen: AtomicBool,
}

impl Known {
    /// Marks the file as found in the folder.
    pub(crate) fn mark_seen(&self) {
        self.seen.store(true, Ordering::Relaxed);
    }

    /// The formats recorded, in MHL's order.
    pub(crate) fn formats(&self) -> Vec<HashFormat> {
        let mut f: Vec<HashFormat> = self.values.iter().map(|v| v.0).collect();
        f.sort();
        f.dedup();
        f
    }
}

/// A loaded, chain-checked history.
#[derive(Debug)]
pub(crate) struct History {
    /// The `ascmhl/` folder.
    pub dir: PathBuf,
    /// The generation files, by number.
    pub generations: Vec<GenerationFile>,
    /// The newest sealed generation's ignore patterns.
    pub ignore: Vec<String>,
    /// The ignore patterns a new generation carries on: those of the newest generation file,
    /// listed in the chain or not, as the reference tool's `create` carries them (and its
    /// `verify` applies them). Patterns never hide a listed file from tally's check.
    pub carried_ignore: Vec<String>,
    /// The formats the newest generation with file hashes used (what new files get).
    pub formats: Vec<HashFormat>,
    files: HashMap<String, Known>,
    next: u32,
    /// Generation files in `ascmhl/` the chain does not list (not a reference).
    pub unsealed: Vec<String>,
    /// What those files say, as far as the reference tool's verify reads them.
    unchained: Unchained,
}

/// One `<hash>` being read.
#[derive(Default)]
struct Entry {
    path: String,
    previous: Option<String>,
    size: Option<u64>,
    hashes: Vec<(HashFormat, String, bool)>,
}

/// A generation file being read into the history.
#[derive(Default)]
struct GenerationReader {
    entry: Option<Entry>,
    pending_failed: bool,
    ignore: Option<Vec<String>>,
    formats: Vec<HashFormat>,
    is_hashlist: bool,
}

impl History {
    /// Loads the history of the folder `root` (`root/ascmhl/`); `None` when there is none.
    /// Blocking: reads the chain, hashes every generation file once to check the chain, and
    /// reads every generation.
    pub(crate) fn load(root: &Path) -> Result<Option<History>, MhlError> {
        let dir = root.join(FOLDER);
        let Some(generations) = generation_files(&dir)? else {
            return Ok(None);
        };
        let chain_path = dir.join(CHAIN);
        if !chain_path.exists() {
            // As the reference tool: an `ascmhl/` folder without its chain is a broken history
            // (even an empty one: a wiped history is not a fresh start).
            return Err(MhlError::NoChain { dir });
        }
        let chain = read_chain(&chain_path)?;
        check_chain(&dir, &chain_path, &chain)?;
        // Only what the chain seals counts; a number an unlisted file took is not reused.
        let next = generations
            .iter()
            .map(|g| g.number)
            .chain(chain.iter().map(|c| c.sequence))
            .max()
            .unwrap_or(0)
            + 1;
        let unsealed: Vec<String> = generations
            .iter()
            .filter(|g| !chain.iter().any(|c| c.path == g.name))
            .map(|g| g.name.clone())
            .collect();
        for g in &unsealed {
            tracing::warn!(
                "ASC MHL generation {} is not listed in {CHAIN}: it vouches for nothing; only the value ascmhl verify takes from it is checked",
                dir.join(g).display()
            );
        }
        // What the reference tool reads from the unlisted files (needed only when there are
        // some: otherwise its values are among the sealed ones).
        let unchained = if unsealed.is_empty() {
            Unchained::default()
        } else {
            Unchained::read(&dir, &generations, &unsealed)?
        };
        let newest = generations.last().map(|g| g.name.clone());
        let mut h = History {
            dir,
            generations: sealed_generations(generations, &chain),
            ignore: Vec::new(),
            carried_ignore: Vec::new(),
            formats: Vec::new(),
            files: HashMap::new(),
            next,
            unsealed,
            unchained,
        };
        for index in 0..h.generations.len() {
            let path = h.dir.join(&h.generations[index].name);
            h.read_generation(index, &path)?;
        }
        h.carried_ignore = match newest {
            Some(n) if h.unsealed.contains(&n) => ignore_patterns(&h.dir.join(n))?,
            _ => h.ignore.clone(),
        };
        Ok(Some(h))
    }

    fn read_generation(&mut self, index: usize, path: &Path) -> Result<(), MhlError> {
        let mut r = GenerationReader::default();
        xml::walk(path, |stack, ev| r.event(stack, ev, &mut self.files, index))?;
        if !r.is_hashlist {
            return Err(MhlError::Malformed {
                path: path.to_owned(),
                why: "not an ASC MHL generation (no <hashlist> root)".into(),
            });
        }
        // The newest generation's patterns (none there: the reference tool's defaults apply).
        self.ignore = r.ignore.unwrap_or_default();
        if !r.formats.is_empty() {
            r.formats.sort();
            self.formats = r.formats;
        }
        Ok(())
    }

    /// When some generation file is not listed in the chain, the value `ascmhl verify` compares
    /// `rel` with (possibly from such a generation): the file is refused unless it matches it
    /// too, so tally never passes a file the reference tool calls different; an unlisted
    /// generation never vouches for a file, though.
    pub(crate) fn unsealed_original(&self, rel: &str) -> Option<&Value> {
        self.unchained.original(rel)
    }

    /// The values generation files the chain does not list hold for `rel` (compared for a
    /// warning only: `ascmhl verify` does not compare with them, and they vouch for nothing).
    pub(crate) fn unsealed_values(&self, rel: &str) -> &[Value] {
        self.unchained.values(rel)
    }

    /// What the history knows about the file at `rel` (relative to the root, `/`-separated).
    pub(crate) fn known(&self, rel: &str) -> Option<&Known> {
        self.files.get(rel)
    }

    /// Marks the file at `rel` as found in the folder.
    pub(crate) fn mark_seen(&self, rel: &str) {
        if let Some(k) = self.files.get(rel) {
            k.mark_seen();
        }
        self.unchained.mark_seen(rel);
    }

    /// The paths the history lists that were not marked seen, sorted, with their recorded sizes:
    /// not those a later generation renamed, nor those an unlisted generation renamed to a path
    /// the folder has (as `ascmhl verify`; see [`History::unsealed_renames_followed`]).
    pub(crate) fn unseen(&self) -> Vec<(&str, Option<u64>)> {
        let mut v: Vec<_> = self
            .files
            .iter()
            .filter(|(p, k)| {
                !k.renamed
                    && !k.seen.load(Ordering::Relaxed)
                    && self.unchained.renamed_away(p).is_none()
            })
            .map(|(p, k)| (p.as_str(), k.size))
            .collect();
        v.sort();
        v
    }

    /// The listed paths not in the folder that only a generation the chain does not list
    /// renames (to a path the folder has): (old path, new path, that generation), sorted.
    pub(crate) fn unsealed_renames_followed(&self) -> Vec<(&str, &str, &str)> {
        let mut v: Vec<_> = self
            .files
            .iter()
            .filter(|(_, k)| !k.renamed && !k.seen.load(Ordering::Relaxed))
            .filter_map(|(p, _)| {
                let (to, g) = self.unchained.renamed_away(p)?;
                Some((p.as_str(), to, g))
            })
            .collect();
        v.sort();
        v
    }

    /// The number the next generation gets (above every generation file and chain entry).
    pub(crate) fn next_number(&self) -> u32 {
        self.next
    }

    /// The name of the generation at `index` of [`History::generations`].
    pub(crate) fn generation_name(&self, index: usize) -> &str {
        self.generations.get(index).map_or("?", |g| g.name.as_str())
    }
}

impl GenerationReader {
    /// One XML event of a generation file (generation `index`), into `files`.
    fn event(
        &mut self,
        stack: &[String],
        ev: Ev<'_>,
        files: &mut HashMap<String, Known>,
        index: usize,
    ) -> Result<(), String> {
        if stack.len() == 1 {
            if let Ev::Start(_) = ev {
                self.is_hashlist = stack[0] == "hashlist";
            }
            return Ok(());
        }
        match ev {
            Ev::Start(attrs) => self.start(stack, attrs),
            Ev::End(text) => {
                if stack.len() == 4 && stack[2] == "hash" {
                    self.value(stack, text);
                } else if stack.len() == 3 && stack[2] == "hash" {
                    if let Some(e) = self.entry.take() {
                        self.add(e, files, index)?;
                    }
                } else if xml::ends_with(stack, &["processinfo", "ignore", "pattern"]) {
                    self.ignore
                        .get_or_insert_with(Vec::new)
                        .push(text.to_owned());
                }
                Ok(())
            }
        }
    }

    /// An element starts: a `<hash>`, its `<path size>`, a value's `action`, `<ignore>`.
    fn start(&mut self, stack: &[String], attrs: &[(String, String)]) -> Result<(), String> {
        if xml::ends_with(stack, &["hashes", "hash"]) && stack.len() == 3 {
            self.entry = Some(Entry::default());
        } else if stack.len() == 4 && stack[2] == "hash" {
            if stack[3] == "path" {
                if let (Some(e), Some(s)) = (self.entry.as_mut(), xml::attr(attrs, "size")) {
                    e.size = Some(
                        s.trim()
                            .parse()
                            .map_err(|_| format!("size '{s}' is not a number"))?,
                    );
                }
            } else {
                self.pending_failed = xml::attr(attrs, "action") == Some("failed");
            }
        } else if xml::ends_with(stack, &["processinfo", "ignore"]) {
            self.ignore.get_or_insert_with(Vec::new);
        }
        Ok(())
    }

    /// A child of `<hash>` ends: its path, previous path, or a value.
    fn value(&mut self, stack: &[String], text: &str) {
        let Some(e) = self.entry.as_mut() else {
            return;
        };
        if stack[3] == "path" {
            e.path = text.to_owned();
        } else if stack[3] == "previousPath" {
            e.previous = Some(text.to_owned());
        } else if let Ok(f) = stack[3].parse::<HashFormat>()
            && f.in_mhl()
        {
            // (An element MHL does not define, like `<sha256>`, is not a format of the
            // history: tally never writes it back.)
            e.hashes
                .push((f, text.to_ascii_lowercase_if_hex(f), self.pending_failed));
        }
    }

    /// A `<hash>` ends: its values join the file's record (a renamed file's record goes on
    /// under its new name).
    fn add(
        &mut self,
        e: Entry,
        files: &mut HashMap<String, Known>,
        index: usize,
    ) -> Result<(), String> {
        if e.path.is_empty() {
            return Err("a <hash> without a <path>".into());
        }
        let inherited = match &e.previous {
            Some(p) if *p != e.path => files.get_mut(p).map(|old| {
                old.renamed = true;
                old.values.clone()
            }),
            _ => None,
        };
        let k = files.entry(e.path).or_default();
        k.renamed = false;
        for x in inherited.into_iter().flatten() {
            if !k.values.contains(&x) {
                k.values.push(x);
            }
        }
        if e.size.is_some() {
            k.size = e.size;
        }
        for (f, v, failed) in e.hashes {
            if !self.formats.contains(&f) {
                self.formats.push(f);
            }
            if !failed && !k.values.iter().any(|(g, w, _)| *g == f && *w == v) {
                k.values.push((f, v, index));
            }
        }
        Ok(())
    }
}

/// The generation files in `dir` (by number), `None` when there is no such folder.
fn generation_files(dir: &Path) -> Result<Option<Vec<GenerationFile>>, MhlError> {
    let unreadable = |e: std::io::Error| MhlError::Unreadable {
        path: dir.to_owned(),
        why: e.to_string(),
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(unreadable(e)),
    };
    let mut generations = Vec::new();
    for e in rd {
        let e = e.map_err(unreadable)?;
        if let Some(g) = e.file_name().to_str().and_then(generation_number) {
            generations.push(g);
        }
    }
    generations.sort_by(|a, b| a.number.cmp(&b.number).then(a.name.cmp(&b.name)));
    Ok(Some(generations))
}

/// Every generation the chain lists is a file name in `dir`, exists, and hashes to its C4.
fn check_chain(dir: &Path, chain_path: &Path, chain: &[ChainEntry]) -> Result<(), MhlError> {
    for c in chain {
        if c.path.is_empty() || c.path.contains(['/', '\\']) || c.path == ".." {
            return Err(MhlError::Malformed {
                path: chain_path.to_owned(),
                why: format!("generation path '{}' is not a file name in ascmhl/", c.path),
            });
        }
        let file = dir.join(&c.path);
        if !file.exists() {
            return Err(MhlError::MissingGeneration {
                path: file,
                chain: chain_path.to_owned(),
            });
        }
        let actual = file_hashes(&file, &[c.format])
            .map_err(|e| MhlError::Unreadable {
                path: file.clone(),
                why: e.to_string(),
            })?
            .get(c.format)
            .unwrap_or_default()
            .to_owned();
        if actual != c.value {
            return Err(MhlError::ModifiedGeneration {
                path: file,
                format: c.format,
                recorded: c.value.clone(),
                actual,
            });
        }
    }
    Ok(())
}

/// The generations the chain seals, by number: the files it lists (a chain entry whose name
/// does not follow the naming rule is still a sealed generation).
fn sealed_generations(files: Vec<GenerationFile>, chain: &[ChainEntry]) -> Vec<GenerationFile> {
    let mut sealed: Vec<GenerationFile> = files
        .into_iter()
        .filter(|g| chain.iter().any(|c| c.path == g.name))
        .collect();
    for c in chain {
        if !sealed.iter().any(|g| g.name == c.path) {
            sealed.push(GenerationFile {
                number: c.sequence,
                name: c.path.clone(),
            });
        }
    }
    sealed.sort_by(|a, b| a.number.cmp(&b.number).then(a.name.cmp(&b.name)));
    sealed
}

/// The `<ignore><pattern>`s of the generation file at `path` (empty when it has none).
fn ignore_patterns(path: &Path) -> Result<Vec<String>, MhlError> {
    let mut out = Vec::new();
    xml::walk(path, |stack, ev| {
        if let Ev::End(text) = ev
            && xml::ends_with(stack, &["processinfo", "ignore", "pattern"])
        {
            out.push(text.to_owned());
        }
        Ok(())
    })?;
    Ok(out)
}

/// Hex values compare in lowercase (the reference tool writes lowercase); C4 ids are case-sensitive.
pub(crate) trait LowerHex {
    fn to_ascii_lowercase_if_hex(&self, f: HashFormat) -> String;
}

impl LowerHex for str {
    fn to_ascii_lowercase_if_hex(&self, f: HashFormat) -> String {
        if f == HashFormat::C4 {
            self.to_owned()
        } else {
            self.to_ascii_lowercase()
        }
    }
}

/// `0001_A001_2020-01-16_091500Z.mhl` -> generation 1 (the reference tool's rule: a name
/// `^\d{4,}(_.+)?\.mhl$`, not starting with `._`).
pub(crate) fn generation_number(name: &str) -> Option<GenerationFile> {
    let stem = name.strip_suffix(".mhl")?;
    if name.starts_with("._") {
        return None;
    }
    let digits = stem.split('_').next()?;
    if digits.len() < 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if stem.len() > digits.len() && stem.len() == digits.len() + 1 {
        return None; // "0001_" with nothing after the underscore
    }
    Some(GenerationFile {
        number: digits.parse().ok()?,
        name: name.to_owned(),
    })
}

/// Reads `ascmhl_chain.xml`.
pub(crate) fn read_chain(path: &Path) -> Result<Vec<ChainEntry>, MhlError> {
    let mut out = Vec::new();
    let mut seq: Option<u32> = None;
    let mut file: Option<String> = None;
    let mut hash: Option<(HashFormat, String)> = None;
    xml::walk(path, |stack, ev| {
        if stack.len() < 2 || stack[1] != "hashlist" {
            return Ok(());
        }
        match ev {
            Ev::Start(attrs) if stack.len() == 2 => {
                let s = xml::attr(attrs, "sequencenr").unwrap_or("0");
                seq = Some(
                    s.parse()
                        .map_err(|_| format!("sequencenr '{s}' is not a number"))?,
                );
                file = None;
                hash = None;
            }
            Ev::End(text) if stack.len() == 3 => {
                if stack[2] == "path" {
                    file = Some(text.to_owned());
                } else if let Ok(f) = stack[2].parse::<HashFormat>() {
                    hash = Some((f, text.to_ascii_lowercase_if_hex(f)));
                }
            }
            Ev::End(_) if stack.len() == 2 => {
                let (Some(path), Some((format, value))) = (file.take(), hash.take()) else {
                    return Err("a <hashlist> without its <path> and <c4>".into());
                };
                out.push(ChainEntry {
                    sequence: seq.take().unwrap_or(0),
                    path,
                    format,
                    value,
                });
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mhl::hashes::data_hashes;

    /// (format, action, value).
    type Recorded<'a> = &'a [(&'a str, &'a str, &'a str)];

    fn generation(files: &[(&str, u64, Recorded<'_>)], ignore: &[&str]) -> String {
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<hashlist version=\"2.0\" xmlns=\"urn:ASC:MHL:v2.0\">\n<creatorinfo><creationdate>2020-01-16T09:15:00+00:00</creationdate><hostname>h</hostname><tool version=\"1\">t</tool></creatorinfo>\n<processinfo><process>in-place</process><roothash><content><xxh64>ffffffffffffffff</xxh64></content><structure><xxh64>eeeeeeeeeeeeeeee</xxh64></structure></roothash>",
        );
        if !ignore.is_empty() {
            s += "<ignore>";
            for p in ignore {
                s += &format!("<pattern>{p}</pattern>");
            }
            s += "</ignore>";
        }
        s += "</processinfo>\n<hashes>\n";
        for (path, size, hashes) in files {
            s += &format!("<hash><path size=\"{size}\">{path}</path>");
            for (f, action, v) in *hashes {
                s += &format!(
                    "<{f} action=\"{action}\" hashdate=\"2020-01-16T09:15:00+00:00\">{v}</{f}>"
                );
            }
            s += "</hash>\n";
        }
        s += "<directoryhash><path>Clips</path><content><xxh64>1111111111111111</xxh64></content><structure><xxh64>2222222222222222</xxh64></structure></directoryhash>\n";
        s += "</hashes>\n</hashlist>\n";
        s
    }

    /// Writes generation files and a chain holding each one's C4.
    fn history(dir: &Path, gens: &[(&str, String)]) {
        let a = dir.join(FOLDER);
        std::fs::create_dir_all(&a).unwrap();
        let mut chain = Vec::new();
        for (i, (name, text)) in gens.iter().enumerate() {
            std::fs::write(a.join(name), text).unwrap();
            chain.push(ChainEntry {
                sequence: i as u32 + 1,
                path: (*name).to_owned(),
                format: HashFormat::C4,
                value: data_hashes(text.as_bytes(), &[HashFormat::C4])
                    .get(HashFormat::C4)
                    .unwrap()
                    .to_owned(),
            });
        }
        let bytes = crate::mhl::generation::chain_bytes(&chain).unwrap();
        std::fs::write(a.join(CHAIN), bytes).unwrap();
    }

    #[test]
    fn every_value_counts_and_a_failed_one_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let g1 = generation(
            &[
                (
                    "Clips/a & b.mov",
                    3,
                    &[("xxh64", "original", "AAAAAAAAAAAAAAAA")],
                ),
                (
                    "Clips/c.mov",
                    4,
                    &[("xxh64", "original", "cccccccccccccccc")],
                ),
            ],
            &[".DS_Store", "ascmhl", "ascmhl/"],
        )
        .replace("a & b", "a &amp; b");
        let g2 = generation(
            &[(
                "Clips/a &amp; b.mov",
                5,
                &[
                    ("md5", "original", "5eb63bbbe01eeed093cb22bb8f5acdc3"),
                    ("xxh64", "verified", "bbbbbbbbbbbbbbbb"),
                ],
            )],
            &[],
        );
        let g3 = generation(
            &[(
                "Clips/a &amp; b.mov",
                6,
                &[("xxh64", "failed", "dddddddddddddddd")],
            )],
            &["*.tmp"],
        );
        history(
            dir.path(),
            &[
                ("0001_A_2020-01-16_091500Z.mhl", g1),
                ("0002_A_2020-01-17_091500Z.mhl", g2),
                ("0003_A_2020-01-18_091500Z.mhl", g3),
            ],
        );
        let h = History::load(dir.path()).unwrap().unwrap();
        let k = h
            .known("Clips/a & b.mov")
            .expect("the escaped name is read unescaped");
        let names: Vec<(HashFormat, &str, &str)> = k
            .values
            .iter()
            .map(|(f, v, g)| (*f, v.as_str(), h.generation_name(*g)))
            .collect();
        assert_eq!(
            names,
            [
                (
                    HashFormat::Xxh64,
                    "aaaaaaaaaaaaaaaa",
                    "0001_A_2020-01-16_091500Z.mhl"
                ),
                (
                    HashFormat::Md5,
                    "5eb63bbbe01eeed093cb22bb8f5acdc3",
                    "0002_A_2020-01-17_091500Z.mhl"
                ),
                (
                    HashFormat::Xxh64,
                    "bbbbbbbbbbbbbbbb",
                    "0002_A_2020-01-17_091500Z.mhl"
                ),
            ],
            "the original, then every later value; generation 3's failed one never"
        );
        assert_eq!(k.formats(), [HashFormat::Md5, HashFormat::Xxh64]);
        assert_eq!(k.size, Some(6), "the newest size");
        assert_eq!(
            h.known("Clips/c.mov").unwrap().values[0].1,
            "cccccccccccccccc"
        );
        assert!(h.known("Clips").is_none(), "directory hashes are not files");
        assert_eq!(h.ignore, ["*.tmp"], "the newest generation's patterns");
        assert_eq!(h.next_number(), 4);
        assert_eq!(h.unseen().len(), 2);
        h.known("Clips/c.mov").unwrap().mark_seen();
        assert_eq!(h.unseen(), [("Clips/a & b.mov", Some(6))]);
    }

    #[test]
    fn a_generation_changed_after_the_chain_recorded_it_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let g1 = generation(
            &[("a", 1, &[("xxh64", "original", "0123456789abcdef")])],
            &[],
        );
        history(dir.path(), &[("0001_A_2020-01-16_091500Z.mhl", g1.clone())]);
        assert!(History::load(dir.path()).is_ok());
        // One value changed: the C4 the chain holds no longer matches.
        let p = dir
            .path()
            .join(FOLDER)
            .join("0001_A_2020-01-16_091500Z.mhl");
        std::fs::write(&p, g1.replace("0123456789abcdef", "0123456789abcdee")).unwrap();
        let e = History::load(dir.path()).unwrap_err();
        assert!(matches!(e, MhlError::ModifiedGeneration { .. }), "{e}");
        assert!(e.is_integrity());
        assert!(
            e.to_string().contains("0001_A_2020-01-16_091500Z.mhl"),
            "{e}"
        );
        // Removed: missing; and generations without any chain.
        std::fs::remove_file(&p).unwrap();
        let e = History::load(dir.path()).unwrap_err();
        assert!(matches!(e, MhlError::MissingGeneration { .. }), "{e}");
        std::fs::write(&p, &g1).unwrap();
        std::fs::remove_file(dir.path().join(FOLDER).join(CHAIN)).unwrap();
        let e = History::load(dir.path()).unwrap_err();
        assert!(matches!(e, MhlError::NoChain { .. }), "{e}");
        // No ascmhl/ at all: no history.
        assert!(
            History::load(&dir.path().join("nowhere"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_chain_path_outside_ascmhl_is_refused_before_anything_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        let a = dir.path().join("card").join(FOLDER);
        std::fs::create_dir_all(&a).unwrap();
        let chain = [ChainEntry {
            sequence: 1,
            path: "../../secret".into(),
            format: HashFormat::C4,
            value: "c4x".into(),
        }];
        std::fs::write(
            a.join(CHAIN),
            crate::mhl::generation::chain_bytes(&chain).unwrap(),
        )
        .unwrap();
        let e = History::load(&dir.path().join("card")).unwrap_err();
        assert!(matches!(e, MhlError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("../../secret"), "{e}");
    }

    #[test]
    fn generation_names_follow_the_reference_tools_rule() {
        assert_eq!(
            generation_number("0001_A_2020-01-16_091500Z.mhl")
                .unwrap()
                .number,
            1
        );
        assert_eq!(generation_number("12345_x.mhl").unwrap().number, 12345);
        assert_eq!(generation_number("0002.mhl").unwrap().number, 2);
        assert!(generation_number("001_x.mhl").is_none());
        assert!(generation_number("._0001_x.mhl").is_none());
        assert!(generation_number("ascmhl_chain.xml").is_none());
        assert!(generation_number("packinglist_x.mhl").is_none());
    }

    /// Issue 25, case 1: a generation file the chain does not list is never the reference.
    #[test]
    fn a_generation_the_chain_does_not_list_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let g1 = generation(
            &[("a.mov", 1, &[("xxh64", "original", "1111111111111111")])],
            &[],
        );
        history(dir.path(), &[("0001_A_2020-01-16_091500Z.mhl", g1.clone())]);
        let forged = g1.replace("1111111111111111", "2222222222222222");
        for name in [
            "0002_A_2020-01-17_091500Z.mhl",
            "0000_A_2019-01-01_000000Z.mhl",
        ] {
            std::fs::write(dir.path().join(FOLDER).join(name), &forged).unwrap();
        }
        let h = History::load(dir.path()).unwrap().unwrap();
        let k = h.known("a.mov").unwrap();
        assert_eq!(k.values.len(), 1, "{:?}", k.values);
        assert_eq!(k.values[0].1, "1111111111111111");
        assert_eq!(h.generations.len(), 1);
        assert_eq!(h.unsealed.len(), 2);
        assert_eq!(
            h.next_number(),
            3,
            "the unlisted 0002's number is not reused"
        );
    }

    /// A generation the chain does not list: its rename excuses the old name only once the new
    /// one is found; the renamed file is compared with the old name's sealed value (what
    /// `ascmhl verify` compares), and the unlisted generation's own value is only kept for a
    /// warning.
    #[test]
    fn an_unlisted_generations_rename_is_followed_only_to_a_file_that_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let g1 = generation(
            &[("old.mov", 1, &[("xxh64", "original", "1111111111111111")])],
            &[],
        );
        history(dir.path(), &[("0001_A_2020-01-16_091500Z.mhl", g1)]);
        let g2 = generation(
            &[("new.mov", 1, &[("xxh64", "verified", "2222222222222222")])],
            &[],
        )
        .replace(
            "<path size=\"1\">new.mov</path>",
            "<path size=\"1\">new.mov</path><previousPath>old.mov</previousPath>",
        );
        let unlisted = "0002_A_2020-01-17_091500Z.mhl";
        std::fs::write(dir.path().join(FOLDER).join(unlisted), g2).unwrap();
        let h = History::load(dir.path()).unwrap().unwrap();
        assert_eq!(h.unsealed, [unlisted]);
        assert!(
            h.known("new.mov").is_none(),
            "an unlisted listing is no record"
        );
        let (f, v, g) = h.unsealed_original("new.mov").unwrap();
        assert_eq!(
            (*f, v.as_str(), g.as_str()),
            (
                HashFormat::Xxh64,
                "1111111111111111",
                "0001_A_2020-01-16_091500Z.mhl"
            ),
            "compared with the old name's original, as ascmhl verify does"
        );
        assert_eq!(h.unsealed_values("new.mov")[0].1, "2222222222222222");
        assert_eq!(h.unseen(), [("old.mov", Some(1))], "new.mov not found yet");
        assert!(h.unsealed_renames_followed().is_empty());
        h.mark_seen("new.mov");
        assert!(h.unseen().is_empty(), "renamed, and the new name is there");
        assert_eq!(
            h.unsealed_renames_followed(),
            [("old.mov", "new.mov", unlisted)]
        );
    }

    /// Issue 25, cases 4 and 5, and the `<sha256>` of case 7.
    #[test]
    fn names_are_byte_exact_renames_carry_values_and_sha256_is_not_a_format() {
        let dir = tempfile::tempdir().unwrap();
        let g1 = generation(
            &[
                (
                    " lead.mov ",
                    1,
                    &[("xxh64", "original", "1111111111111111")],
                ),
                (
                    "old.mov",
                    2,
                    &[
                        ("xxh64", "original", "3333333333333333"),
                        ("sha256", "original", "ab"),
                    ],
                ),
            ],
            &[],
        );
        let g2 = generation(&[("new.mov", 2, &[("md5", "original", "44")])], &[]).replace(
            "<path size=\"2\">new.mov</path>",
            "<path size=\"2\">new.mov</path><previousPath>old.mov</previousPath>",
        );
        history(
            dir.path(),
            &[
                ("0001_A_2020-01-16_091500Z.mhl", g1),
                ("0002_A_2020-01-17_091500Z.mhl", g2),
            ],
        );
        let h = History::load(dir.path()).unwrap().unwrap();
        assert!(h.known(" lead.mov ").is_some(), "spaces kept");
        assert!(h.known("lead.mov").is_none());
        let k = h.known("new.mov").unwrap();
        assert_eq!(k.formats(), [HashFormat::Md5, HashFormat::Xxh64]);
        assert!(k.values.iter().any(|v| v.1 == "3333333333333333"));
        assert!(!h.formats.contains(&HashFormat::Sha256));
        assert!(
            !h.known("old.mov")
                .unwrap()
                .formats()
                .contains(&HashFormat::Sha256),
            "sha256 is no MHL format"
        );
        let unseen: Vec<&str> = h.unseen().into_iter().map(|u| u.0).collect();
        assert_eq!(
            unseen,
            [" lead.mov ", "new.mov"],
            "old.mov is no longer expected"
        );
    }
}
