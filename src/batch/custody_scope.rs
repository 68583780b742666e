//! The histories one tree run keeps: the root's and every nested one (a card with its own
//! `ascmhl/` inside a day folder), each a [`Scope`] with its history, its ignore patterns and,
//! with `--mhl`, its own new generation. As the reference tool does: each file is checked against
//! the innermost history around it and recorded in that history's generation; the generations
//! are sealed bottom-up, each parent's referencing its nested histories' new generations
//! (`<references><hashlistreference>`: path and C4). See docs/mhl.md.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::batch::custody_seal::{Placed, place, write_error};
use crate::error::Error;
use crate::mhl::MhlError;
use crate::mhl::generation::{self, GenerationWriter, Header};
use crate::mhl::hashes::HashFormat;
use crate::mhl::history::{History, Known};
use crate::mhl::ignore::{Ignore, default_patterns};
use crate::mhl::nested;

/// Formats recorded for new files when there is no history to follow.
pub(crate) const DEFAULT_FORMATS: [HashFormat; 1] = [HashFormat::Xxh64];

/// One history of the tree (the root's, or a nested one).
pub(crate) struct Scope {
    /// Its folder relative to the tree's root (`/`-separated; `""` for the root).
    pub dir: String,
    /// Its folder.
    pub abs: PathBuf,
    /// Its history (`None`: the root without one).
    pub history: Option<History>,
    /// Its ignore patterns (the newest sealed generation's), matched relative to its folder.
    pub ignore: Ignore,
    /// The patterns `ascmhl verify` applies: the newest generation file's, listed in the chain
    /// or not (what excuses a missing file, and what the new generation carries on).
    pub carried: Ignore,
    /// The formats its new files get.
    pub new_formats: Vec<HashFormat>,
    /// Its new generation (`--mhl`).
    pub writer: Option<Mutex<Option<GenerationWriter>>>,
    /// Its folder's name (the generation's file name).
    pub name: String,
    /// Where its generation is written first, and its history when the source is read-only.
    pub work: PathBuf,
}

/// What every scope of one run shares.
pub(crate) struct Opening<'a> {
    /// The tree's root (absolute).
    pub root: &'a Path,
    /// The `location` of a scope's generation, given its folder relative to the root.
    pub location: &'a dyn Fn(&str) -> String,
    /// Whether generations are written (`--mhl`).
    pub write: bool,
    /// The run's folder in the state directory.
    pub work: &'a Path,
    /// The run's start (the generations' names and dates).
    pub created: SystemTime,
}

/// Loads the root's history and every nested one below it (each chain checked). `None` when
/// there is nothing to do: no history anywhere and no generation to write. Blocking.
pub(crate) fn open_all(o: &Opening<'_>) -> Result<Option<Vec<Scope>>, Error> {
    let history = History::load(o.root)?;
    let found = nested::find(o.root);
    if history.is_none() && found.is_empty() && !o.write {
        return Ok(None);
    }
    let mut scopes = vec![Scope::open(o, String::new(), history)?];
    for dir in found {
        let history = History::load(&o.root.join(&dir))?;
        scopes.push(Scope::open(o, dir, history)?);
    }
    Ok(Some(scopes))
}

impl Scope {
    fn open(o: &Opening<'_>, dir: String, history: Option<History>) -> Result<Scope, Error> {
        let abs = if dir.is_empty() {
            o.root.to_owned()
        } else {
            o.root.join(&dir)
        };
        let or_default = |p: Option<&Vec<String>>| match p {
            Some(p) if !p.is_empty() => p.clone(),
            _ => default_patterns(),
        };
        let patterns = or_default(history.as_ref().map(|h| &h.ignore));
        // What the new generation carries on: the newest generation file's patterns, as the
        // reference tool's `create` does (docs/mhl.md).
        let carried = or_default(history.as_ref().map(|h| &h.carried_ignore));
        let new_formats = match &history {
            Some(h) if !h.formats.is_empty() => h.formats.clone(),
            _ => DEFAULT_FORMATS.to_vec(),
        };
        let name = folder_name(&abs);
        let work = if dir.is_empty() {
            o.work.to_owned()
        } else {
            o.work.join("nested").join(&dir)
        };
        let writer = if o.write {
            let number = history.as_ref().map_or(1, History::next_number);
            let header = Header {
                created: o.created,
                hostname: gethostname::gethostname().to_string_lossy().into_owned(),
                tool_version: env!("CARGO_PKG_VERSION").to_owned(),
                location: (o.location)(&dir),
                ignore: carried.clone(),
            };
            Some(Mutex::new(Some(start_writer(
                &work, number, &name, &header,
            )?)))
        } else {
            None
        };
        Ok(Scope {
            dir,
            abs,
            history,
            ignore: Ignore::new(&patterns),
            carried: Ignore::new(&carried),
            new_formats,
            writer,
            name,
            work,
        })
    }

    /// `rel` (relative to this history's folder) relative to the tree's root.
    pub(crate) fn rel(&self, rel: &str) -> String {
        if self.dir.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.dir)
        }
    }

    /// The generation file `name` of this history, relative to the tree's root.
    pub(crate) fn generation_path(&self, name: &str) -> String {
        self.rel(&format!("{}/{name}", crate::mhl::history::FOLDER))
    }

    /// What this scope's history knows of `rel` (relative to its folder).
    pub(crate) fn known(&self, rel: &str) -> Option<&Known> {
        self.history.as_ref().and_then(|h| h.known(rel))
    }
}

/// Creates the generation file in `work` under a name unique to this run: two runs of one tree
/// never share it (the final name is chosen under the history's lock, see `seal_into`).
fn start_writer(
    work: &Path,
    number: u32,
    name: &str,
    header: &Header,
) -> Result<GenerationWriter, MhlError> {
    std::fs::create_dir_all(work).map_err(|e| write_error(work, &e))?;
    let nanos = header
        .created
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = work.join(format!(
        "{}.{}-{nanos}.part",
        generation::file_name(number, name, header.created),
        std::process::id()
    ));
    GenerationWriter::create(&path, header).map_err(|e| write_error(&path, &e))
}

/// The name a folder's generations carry. `..` (or a path ending in it) names the folder it
/// resolves to, as the reference tool's `basename(normpath(root))` does.
fn folder_name(abs: &Path) -> String {
    let named = match abs.file_name() {
        Some(_) => abs.to_owned(),
        None => std::fs::canonicalize(abs).unwrap_or_else(|_| abs.to_owned()),
    };
    named
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("root")
        .to_owned()
}

/// One scope's sealed generation.
pub(crate) struct Sealed {
    /// The scope's index.
    pub scope: usize,
    /// Where it went.
    pub placed: Placed,
}

/// A scope's generation to close and put in place.
pub(crate) struct Job {
    scope: usize,
    abs: PathBuf,
    work: PathBuf,
    name: String,
    writer: GenerationWriter,
}

/// Takes every scope's open generation (none is left open).
pub(crate) fn take_jobs(scopes: &[Scope]) -> Vec<Job> {
    scopes
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let writer = s.writer.as_ref()?.lock().expect("lock").take()?;
            Some(Job {
                scope: i,
                abs: s.abs.clone(),
                work: s.work.clone(),
                name: s.name.clone(),
                writer,
            })
        })
        .collect()
}

/// Closes each job's generation and puts it in place, nested ones first so that each parent's
/// generation references its nested histories' new ones (`dirs`: every scope's folder by
/// index). Returns what was sealed and, per scope that failed, the error (a failed nested
/// generation is not referenced). Blocking.
pub(crate) fn seal_all(
    dirs: &[String],
    mut jobs: Vec<Job>,
    created: SystemTime,
) -> (Vec<Sealed>, Vec<(usize, MhlError)>) {
    // A nested folder's path is longer than its parent's: deepest first.
    jobs.sort_by_key(|j| std::cmp::Reverse(dirs[j.scope].len()));
    let mut sealed: Vec<Sealed> = Vec::new();
    let mut failed = Vec::new();
    for job in jobs {
        let i = job.scope;
        let references: Vec<(String, String)> = sealed
            .iter()
            .filter(|c| nested::parent(dirs, c.scope) == Some(i))
            .map(|c| {
                let rel = nested::within(&dirs[i], &dirs[c.scope]);
                let path = format!("{rel}/{}/{}", crate::mhl::history::FOLDER, c.placed.name);
                (path, c.placed.c4.clone())
            })
            .collect();
        // A nested history none of whose files this run recorded (all left out by
        // --include/--exclude) gets no generation: there is nothing it would vouch for.
        if !dirs[i].is_empty() && references.is_empty() && !job.writer.has_hashes() {
            let _ = std::fs::remove_file(job.writer.path());
            continue;
        }
        // A nested history written to the state directory (its folder refused writes): the
        // parent goes there too, so that the source never references a generation it lacks.
        let not_source = sealed
            .iter()
            .filter(|c| nested::parent(dirs, c.scope) == Some(i))
            .find_map(|c| c.placed.read_only.as_ref())
            .map(|why| format!("the nested history it references could not be written ({why})"));
        let name = (job.name, created);
        match place(
            job.writer,
            &references,
            not_source,
            &job.abs,
            &job.work,
            &name,
        ) {
            Ok(placed) => sealed.push(Sealed { scope: i, placed }),
            Err(e) => failed.push((i, e)),
        }
    }
    (sealed, failed)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;
    use crate::batch::custody::{Checked, Session};
    use crate::batch::report::{Action as LineAction, FileLine};
    use crate::mhl::generation::{Action, HashEntry};
    use crate::mhl::hashes::data_hashes;
    use crate::mhl::history::{CHAIN, ChainEntry, FOLDER, read_chain};
    use crate::tree::FileEntry;
    use crate::vocab::ObjectUrl;

    const HELLO: &str = "45ab6734b21e6968"; // xxh64 of "hello world" (the reference's vector)

    fn c4(path: &Path) -> String {
        let bytes = std::fs::read(path).unwrap();
        data_hashes(&bytes, &[HashFormat::C4])
            .get(HashFormat::C4)
            .unwrap()
            .to_owned()
    }

    /// A history at `folder` whose one generation lists `files` (path, xxh64) with the ignore
    /// `patterns`, sealed.
    fn history(folder: &Path, files: &[(&str, &str)], patterns: &[&str]) {
        let hist = folder.join(FOLDER);
        std::fs::create_dir_all(&hist).unwrap();
        let name = "0001_x_2020-01-16_091500Z.mhl";
        let header = Header {
            created: UNIX_EPOCH,
            hostname: "h".into(),
            tool_version: "1".into(),
            location: "here".into(),
            ignore: patterns.iter().map(|p| (*p).to_owned()).collect(),
        };
        let mut w = GenerationWriter::create(&hist.join(name), &header).unwrap();
        for (path, v) in files {
            let hashes = vec![(HashFormat::Xxh64, (*v).to_owned(), Action::Original)];
            w.add(&HashEntry {
                path: (*path).into(),
                size: 11,
                modified: None,
                hashdate: UNIX_EPOCH,
                hashes,
                s3: None,
            })
            .unwrap();
        }
        w.finish_with(&[]).unwrap();
        let chain = [ChainEntry {
            sequence: 1,
            path: name.into(),
            format: HashFormat::C4,
            value: c4(&hist.join(name)),
        }];
        std::fs::write(hist.join(CHAIN), generation::chain_bytes(&chain).unwrap()).unwrap();
    }

    fn entry(root: &Path, rel: &str) -> FileEntry {
        let path = root.join(rel);
        let meta = std::fs::metadata(&path).unwrap();
        FileEntry {
            path,
            rel: rel.into(),
            size: meta.len(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }

    /// A day folder with its history and a card inside with its own: each file is checked
    /// against the innermost history (by its path there), a missing card file is named by its
    /// path from the root, and the card's generation is sealed first and referenced by the
    /// day's with the C4 of the file as written.
    #[tokio::test]
    async fn a_card_inside_a_day_folder_is_checked_against_its_own_history_and_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("Day1");
        std::fs::create_dir_all(root.join("Card1/Clips")).unwrap();
        for f in ["day.txt", "Card1/Clips/a.mov", "Card1/Clips/b.mov"] {
            std::fs::write(root.join(f), b"hello world").unwrap();
        }
        history(
            &root,
            &[("day.txt", HELLO), ("Card1/Clips/a.mov", HELLO)],
            &[],
        );
        let wrong = "0000000000000000";
        history(
            &root.join("Card1"),
            &[
                ("Clips/a.mov", HELLO),
                ("Clips/b.mov", wrong),
                ("Clips/gone.mov", HELLO),
                ("Clips/gone.tmp", HELLO),
            ],
            &["*.tmp"],
        );
        let source = ObjectUrl {
            bucket: "b".into(),
            key: "p/".into(),
        };
        let s = Session::open_download(&root, &source, &dir.path().join("state"))
            .unwrap()
            .unwrap();
        for rel in ["day.txt", "Card1/Clips/a.mov", "Card1/Clips/b.mov"] {
            let e = entry(&root, rel);
            let checked = s.check(&e).await;
            match (rel, &checked) {
                ("Card1/Clips/b.mov", Checked::Mismatch(_, _, differ)) => {
                    assert_eq!(differ[0].1, wrong, "compared with the card's value");
                }
                (_, Checked::Verified(..)) => {}
                _ => panic!("{rel}: {checked:?}"),
            }
            let mut line = FileLine {
                action: LineAction::Downloaded,
                ..FileLine::default()
            };
            s.record(&e, checked, &mut line);
        }
        let (mut lines, mut summary) = s.missing(&crate::tree::Filters::default(), "");
        let missing: Vec<&str> = lines.iter().map(|l| l.rel.as_str()).collect();
        assert_eq!(
            missing,
            ["Card1/Clips/gone.mov", "Card1/Clips/gone.tmp"],
            "the day's listing of a.mov was seen; a card's own pattern excuses nothing gone"
        );
        let placed = s.write_generation(&mut lines, &mut summary).await;
        assert!(
            lines.len() == 2,
            "{:?}",
            lines.iter().map(|l| &l.reason).collect::<Vec<_>>()
        );
        let dirs: Vec<&str> = placed.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(dirs, ["Card1", ""], "the card's first");
        let card = &placed[0].1;
        assert!(card.name.starts_with("0002_Card1_"), "{}", card.name);
        let card_gen = root.join("Card1").join(FOLDER).join(&card.name);
        assert_eq!(card.c4, c4(&card_gen));
        let card_xml = std::fs::read_to_string(&card_gen).unwrap();
        assert!(card_xml.contains(">Clips/a.mov</path>"), "{card_xml}");
        assert!(
            !card_xml.contains("day.txt") && !card_xml.contains("Card1/"),
            "{card_xml}"
        );
        let day_gen = root.join(FOLDER).join(&placed[1].1.name);
        let day_xml = std::fs::read_to_string(&day_gen).unwrap();
        let reference = format!(
            "<hashlistreference>\n      <path>Card1/ascmhl/{}</path>\n      <c4>{}</c4>",
            card.name, card.c4
        );
        assert!(day_xml.contains(&reference), "{day_xml}");
        assert!(day_xml.contains(">day.txt</path>") && !day_xml.contains("Clips/a.mov</path>"));
        let card_chain = read_chain(&root.join("Card1").join(FOLDER).join(CHAIN)).unwrap();
        assert_eq!(card_chain.last().unwrap().value, card.c4);
        assert_eq!(
            summary.nested_generations,
            [format!("Card1/ascmhl/{}", card.name)]
        );
    }
}
