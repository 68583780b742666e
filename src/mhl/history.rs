//! Reading an `ascmhl/` history: the chain (`ascmhl_chain.xml`), each generation it lists checked
//! against the C4 it records, then those generations' file hashes, oldest first. Only generations
//! the chain lists (and so seals) count: a generation file the chain does not list is left out
//! (logged), whatever it says. For each path every value not marked `failed` is kept (the
//! original and every later one): a file must equal all of them. A `<previousPath>` carries the
//! old path's values over to the new one. Text (names, values) is taken byte for byte, untrimmed,
//! as the reference tool reads it. See docs/mhl.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::MhlError;
use super::hashes::{HashFormat, file_hashes};
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
    /// When some generation file is not listed in the chain: per path, the value the reference
    /// tool would compare the file with, reading every generation (format, value, generation).
    unsealed_originals: HashMap<String, (HashFormat, String, String)>,
}

/// One `<hash>` being read.
#[derive(Default)]
struct Entry {
    path: String,
    previous: Option<String>,
    size: Option<u64>,
    hashes: Vec<(HashFormat, String, bool)>,
}

impl History {
    /// Loads the history of the folder `root` (`root/ascmhl/`); `None` when there is none.
    /// Blocking: reads the chain, hashes every generation file once to check the chain, and
    /// reads every generation.
    pub(crate) fn load(root: &Path) -> Result<Option<History>, MhlError> {
        let dir = root.join(FOLDER);
        let names = match std::fs::read_dir(&dir) {
            Ok(rd) => {
                let mut names = Vec::new();
                for e in rd {
                    let e = e.map_err(|e| MhlError::Unreadable {
                        path: dir.clone(),
                        why: e.to_string(),
                    })?;
                    if let Some(n) = e.file_name().to_str() {
                        names.push(n.to_owned());
                    }
                }
                names
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(None),
            Err(e) => {
                return Err(MhlError::Unreadable {
                    path: dir,
                    why: e.to_string(),
                });
            }
        };
        let mut generations: Vec<GenerationFile> =
            names.iter().filter_map(|n| generation_number(n)).collect();
        generations.sort_by(|a, b| a.number.cmp(&b.number).then(a.name.cmp(&b.name)));
        let chain_path = dir.join(CHAIN);
        if !chain_path.exists() {
            // As the reference tool: an `ascmhl/` folder without its chain is a broken history
            // (even an empty one: a wiped history is not a fresh start).
            return Err(MhlError::NoChain { dir });
        }
        let chain = read_chain(&chain_path)?;
        for c in &chain {
            if c.path.is_empty() || c.path.contains(['/', '\\']) || c.path == ".." {
                return Err(MhlError::Malformed {
                    path: chain_path,
                    why: format!("generation path '{}' is not a file name in ascmhl/", c.path),
                });
            }
            let file = dir.join(&c.path);
            if !file.exists() {
                return Err(MhlError::MissingGeneration {
                    path: file,
                    chain: chain_path.clone(),
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
        // Only what the chain seals counts; a number an unlisted file took is not reused.
        let next = generations
            .iter()
            .map(|g| g.number)
            .chain(chain.iter().map(|c| c.sequence))
            .max()
            .unwrap_or(0)
            + 1;
        // Where the reference tool takes each file's original value from: the first
        // `action="original"` entry over every generation file, listed in the chain or not.
        // Needed only when some file is not listed: otherwise it is among the sealed values.
        let any_unsealed = generations
            .iter()
            .any(|g| !chain.iter().any(|c| c.path == g.name));
        let originals = if any_unsealed {
            reference_originals(&dir, &generations)?
        } else {
            HashMap::new()
        };
        let newest = generations.last().map(|g| g.name.clone());
        let (sealed, unsealed): (Vec<GenerationFile>, Vec<GenerationFile>) = generations
            .into_iter()
            .partition(|g| chain.iter().any(|c| c.path == g.name));
        for g in &unsealed {
            tracing::warn!(
                "ASC MHL generation {} is not listed in {CHAIN}: not a reference (only generations the chain seals vouch for a file), but a file must still match an original value it holds",
                dir.join(&g.name).display()
            );
        }
        let unsealed_originals = originals;
        let mut sealed = sealed;
        // A chain entry whose name does not follow the naming rule is still a sealed generation.
        for c in &chain {
            if !sealed.iter().any(|g| g.name == c.path) {
                sealed.push(GenerationFile {
                    number: c.sequence,
                    name: c.path.clone(),
                });
            }
        }
        sealed.sort_by(|a, b| a.number.cmp(&b.number).then(a.name.cmp(&b.name)));
        let mut h = History {
            dir,
            generations: Vec::new(),
            ignore: Vec::new(),
            carried_ignore: Vec::new(),
            formats: Vec::new(),
            files: HashMap::new(),
            next,
            unsealed: unsealed.into_iter().map(|g| g.name).collect(),
            unsealed_originals,
        };
        for (index, g) in sealed.iter().enumerate() {
            h.read_generation(index, &h.dir.join(&g.name))?;
        }
        h.generations = sealed;
        h.carried_ignore = match newest {
            Some(n) if h.unsealed.contains(&n) => ignore_patterns(&h.dir.join(n))?,
            _ => h.ignore.clone(),
        };
        Ok(Some(h))
    }

    fn read_generation(&mut self, index: usize, path: &Path) -> Result<(), MhlError> {
        let mut entry: Option<Entry> = None;
        let mut pending_failed = false;
        let mut ignore: Option<Vec<String>> = None;
        let mut formats: Vec<HashFormat> = Vec::new();
        let mut is_hashlist = false;
        let files = &mut self.files;
        xml::walk(path, |stack, ev| {
            if stack.len() == 1 {
                if let Ev::Start(_) = ev {
                    is_hashlist = stack[0] == "hashlist";
                }
                return Ok(());
            }
            match ev {
                Ev::Start(attrs) => {
                    if xml::ends_with(stack, &["hashes", "hash"]) && stack.len() == 3 {
                        entry = Some(Entry::default());
                    } else if stack.len() == 4 && stack[2] == "hash" {
                        if stack[3] == "path" {
                            if let (Some(e), Some(s)) = (entry.as_mut(), xml::attr(attrs, "size")) {
                                e.size = Some(
                                    s.trim()
                                        .parse()
                                        .map_err(|_| format!("size '{s}' is not a number"))?,
                                );
                            }
                        } else {
                            pending_failed = xml::attr(attrs, "action") == Some("failed");
                        }
                    } else if xml::ends_with(stack, &["processinfo", "ignore"]) {
                        ignore.get_or_insert_with(Vec::new);
                    }
                }
                Ev::End(text) => {
                    if stack.len() == 4 && stack[2] == "hash" {
                        let Some(e) = entry.as_mut() else {
                            return Ok(());
                        };
                        if stack[3] == "path" {
                            e.path = text.to_owned();
                        } else if stack[3] == "previousPath" {
                            e.previous = Some(text.to_owned());
                        } else if let Ok(f) = stack[3].parse::<HashFormat>()
                            && f.in_mhl()
                        {
                            // (An element MHL does not define, like `<sha256>`, is not a format
                            // of the history: tally never writes it back.)
                            e.hashes
                                .push((f, text.to_ascii_lowercase_if_hex(f), pending_failed));
                        }
                    } else if stack.len() == 3 && stack[2] == "hash" {
                        if let Some(e) = entry.take() {
                            if e.path.is_empty() {
                                return Err("a <hash> without a <path>".into());
                            }
                            // Renamed: the old name's record goes on under the new one.
                            let inherited = match &e.previous {
                                Some(p) if *p != e.path => files.get_mut(p).map(|old| {
                                    old.renamed = true;
                                    old.values.clone()
                                }),
                                _ => None,
                            };
                            let k = files.entry(e.path).or_default();
                            k.renamed = false;
                            if let Some(v) = inherited {
                                for x in v {
                                    if !k.values.contains(&x) {
                                        k.values.push(x);
                                    }
                                }
                            }
                            if e.size.is_some() {
                                k.size = e.size;
                            }
                            for (f, v, failed) in e.hashes {
                                if !formats.contains(&f) {
                                    formats.push(f);
                                }
                                if !failed && !k.values.iter().any(|(g, w, _)| *g == f && *w == v) {
                                    k.values.push((f, v, index));
                                }
                            }
                        }
                    } else if xml::ends_with(stack, &["processinfo", "ignore", "pattern"]) {
                        ignore.get_or_insert_with(Vec::new).push(text.to_owned());
                    }
                }
            }
            Ok(())
        })?;
        if !is_hashlist {
            return Err(MhlError::Malformed {
                path: path.to_owned(),
                why: "not an ASC MHL generation (no <hashlist> root)".into(),
            });
        }
        // The newest generation's patterns (none there: the reference tool's defaults apply).
        self.ignore = ignore.unwrap_or_default();
        if !formats.is_empty() {
            formats.sort();
            self.formats = formats;
        }
        Ok(())
    }

    /// When some generation file is not listed in the chain, the value `ascmhl verify` compares
    /// `rel` with (possibly from such a generation): the file is refused unless it matches it
    /// too, so tally never passes a file the reference tool calls different; an unlisted
    /// generation never vouches for a file, though.
    pub(crate) fn unsealed_original(&self, rel: &str) -> Option<&(HashFormat, String, String)> {
        self.unsealed_originals.get(rel)
    }

    /// What the history knows about the file at `rel` (relative to the root, `/`-separated).
    pub(crate) fn known(&self, rel: &str) -> Option<&Known> {
        self.files.get(rel)
    }

    /// The paths the history lists that were not marked seen, sorted, with their recorded sizes.
    pub(crate) fn unseen(&self) -> Vec<(&str, Option<u64>)> {
        let mut v: Vec<_> = self
            .files
            .iter()
            .filter(|(_, k)| !k.renamed && !k.seen.load(Ordering::Relaxed))
            .map(|(p, k)| (p.as_str(), k.size))
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

/// One `<hash>` of a generation, as the reference tool's verify uses it.
struct Media {
    path: String,
    previous: Option<String>,
    /// The first `action="original"` value.
    original: Option<(HashFormat, String)>,
}

/// Per listed path, the value `ascmhl verify` compares the file with, and its generation's name,
/// reading every generation file (listed in the chain or not, in number order) as it does: the
/// path is mapped through each generation's `<previousPath>` (one hop per generation), then the
/// first generation whose entry for it (by path, else by previous path) holds an `original`
/// value gives it. Blocking; holds every generation's entries (only done when some generation
/// file is not listed in the chain: otherwise the value is among the sealed ones).
fn reference_originals(
    dir: &Path,
    generations: &[GenerationFile],
) -> Result<HashMap<String, (HashFormat, String, String)>, MhlError> {
    let mut lists: Vec<Vec<Media>> = Vec::new();
    for g in generations {
        let mut list = Vec::new();
        let mut cur: Option<Media> = None;
        let mut pending = false;
        xml::walk(&dir.join(&g.name), |stack, ev| {
            if stack.len() == 3 && stack[1] == "hashes" && stack[2] == "hash" {
                match ev {
                    Ev::Start(_) => {
                        cur = Some(Media {
                            path: String::new(),
                            previous: None,
                            original: None,
                        })
                    }
                    Ev::End(_) => list.extend(cur.take()),
                }
            } else if stack.len() == 4
                && stack[2] == "hash"
                && let Some(m) = cur.as_mut()
            {
                match ev {
                    Ev::Start(attrs) => pending = xml::attr(attrs, "action") == Some("original"),
                    Ev::End(text) => {
                        if stack[3] == "path" {
                            m.path = text.to_owned();
                        } else if stack[3] == "previousPath" {
                            m.previous = Some(text.to_owned());
                        } else if let Ok(f) = stack[3].parse::<HashFormat>()
                            && f.in_mhl()
                            && pending
                            && m.original.is_none()
                        {
                            m.original = Some((f, text.to_ascii_lowercase_if_hex(f)));
                        }
                    }
                }
            }
            Ok(())
        })?;
        lists.push(list);
    }
    let mut out = HashMap::new();
    let paths: std::collections::BTreeSet<&str> = lists
        .iter()
        .flat_map(|l| l.iter().map(|m| m.path.as_str()))
        .collect();
    for p in paths {
        let mut looked_up = p;
        for list in &lists {
            if let Some(m) = list.iter().find(|m| m.path == looked_up) {
                looked_up = m.previous.as_deref().unwrap_or(looked_up);
            }
        }
        'lists: for (list, g) in lists.iter().zip(generations) {
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
                break 'lists;
            }
        }
    }
    Ok(out)
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
trait LowerHex {
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
