//! Putting a finished generation in place: its C4 computed, then into the source's `ascmhl/` (or,
//! when the source refuses writes, the state directory's) under the next number, with the chain
//! updated, holding the folder's lock.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::mhl::MhlError;
use crate::mhl::generation::{self, GenerationWriter};
use crate::mhl::hashes::{HashFormat, file_hashes};
use crate::mhl::history::{CHAIN, ChainEntry, FOLDER};

/// Where the finished generation went.
pub(crate) struct Placed {
    /// The generation's file name.
    pub name: String,
    /// The `ascmhl/` folder it is in.
    pub dir: PathBuf,
    /// Why the source's own `ascmhl/` could not be written, when it could not.
    pub read_only: Option<String>,
    /// The generation's C4 (what the chain, and a parent history's reference, records).
    pub c4: String,
}

/// Closes the generation, computes its C4, and puts it with the updated chain into the source's
/// `ascmhl/`, or, when the source refuses writes, into `<work dir>/ascmhl/`. Blocking.
///
/// Under an exclusive lock on the `ascmhl/` folder (flock), the chain is read again and the
/// generation takes the next number after every generation file and chain entry there: two runs
/// finishing at once (even in the same second) get different numbers, so different names, and
/// each chain keeps both.
///
/// `references`: the nested histories' new generations (path relative to `root`, C4), written
/// in the generation's `<references>`. `not_source`: why the source's `ascmhl/` must not get
/// this generation even if it could (a nested history it references could not be written
/// there, so the source would reference a generation it lacks).
pub(crate) fn place(
    writer: GenerationWriter,
    references: &[(String, String)],
    not_source: Option<String>,
    root: &Path,
    work: &Path,
    (root_name, created): &(String, SystemTime),
) -> Result<Placed, MhlError> {
    let temp = &writer.path().to_owned();
    writer
        .finish_with(references)
        .map_err(|e| write_error(temp, &e))?;
    let c4 = file_hashes(temp, &[HashFormat::C4])
        .map_err(|e| MhlError::Write {
            path: temp.to_owned(),
            why: e.to_string(),
        })?
        .get(HashFormat::C4)
        .unwrap_or_default()
        .to_owned();
    let source_dir = root.join(FOLDER);
    let local = work.join(FOLDER);
    let sealed = match not_source {
        Some(why) => Err(Sealing::Kept(why)),
        None => seal_into(&source_dir, temp, &c4, root_name, *created, None),
    };
    let read_only = match sealed {
        Ok(name) => {
            let _ = std::fs::remove_file(temp);
            return Ok(Placed {
                name,
                dir: source_dir,
                read_only: None,
                c4,
            });
        }
        Err(Sealing::Io(e)) if refuses_writes(&e) => e.to_string(),
        Err(Sealing::Kept(why)) => why,
        Err(Sealing::Io(e)) => return Err(write_error(&source_dir, &e)),
        Err(Sealing::History(e)) => return Err(e),
    };
    // The source's own generations and chain come with it, so the folder uploaded is whole.
    let name = match seal_into(&local, temp, &c4, root_name, *created, Some(&source_dir)) {
        Ok(name) => name,
        Err(Sealing::Io(e)) => return Err(write_error(&local, &e)),
        Err(Sealing::History(e)) => return Err(e),
        Err(Sealing::Kept(why)) => {
            return Err(MhlError::Write {
                path: local.clone(),
                why,
            });
        }
    };
    let _ = std::fs::remove_file(temp);
    Ok(Placed {
        name,
        dir: local,
        read_only: Some(read_only),
        c4,
    })
}

pub(crate) enum Sealing {
    Io(std::io::Error),
    History(MhlError),
    /// Not tried in the source: why.
    Kept(String),
}

impl From<std::io::Error> for Sealing {
    fn from(e: std::io::Error) -> Sealing {
        Sealing::Io(e)
    }
}

/// Puts the generation `temp` (C4 `c4`) into the `ascmhl/` folder `dir` under the next number,
/// and the chain with it, holding the folder's lock. `copy_from`: a read-only source's
/// `ascmhl/`, whose chain this folder's starts from. Returns the name. Blocking.
pub(crate) fn seal_into(
    dir: &Path,
    temp: &Path,
    c4: &str,
    root_name: &str,
    created: SystemTime,
    copy_from: Option<&Path>,
) -> Result<String, Sealing> {
    std::fs::create_dir_all(dir)?;
    let lock = std::fs::File::open(dir)?;
    lock.lock()?;
    // A read-only source: its chain starts this folder's (once; later runs continue it).
    if let Some(from) = copy_from
        && !dir.join(CHAIN).exists()
        && from.join(CHAIN).is_file()
    {
        let bytes = std::fs::read(from.join(CHAIN))?;
        crate::fsx::write_atomic(&dir.join(CHAIN), &bytes, 0o644)?;
    }
    let chain_path = dir.join(CHAIN);
    let mut chain = if chain_path.exists() {
        crate::mhl::history::read_chain(&chain_path).map_err(Sealing::History)?
    } else {
        Vec::new()
    };
    let mut last = chain.iter().map(|c| c.sequence).max().unwrap_or(0);
    for e in std::fs::read_dir(dir)?.flatten() {
        if let Some(n) = e.file_name().to_str()
            && let Some(g) = crate::mhl::history::generation_number(n)
        {
            last = last.max(g.number);
        }
    }
    let number = last + 1;
    let name = generation::file_name(number, root_name, created);
    let to = dir.join(&name);
    // Copied into a temporary created exclusively (never through a link placed there).
    let part = crate::fsx::temp_path(&to);
    let mut out = crate::fsx::create_new(&part, 0o644)?;
    let copied = std::io::copy(&mut std::fs::File::open(temp)?, &mut out)
        .and_then(|_| out.sync_all())
        .and_then(|()| crate::fsx::rename_into_place(&part, &to));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&part);
        return Err(e.into());
    }
    chain.push(ChainEntry {
        sequence: number,
        path: name.clone(),
        format: HashFormat::C4,
        value: c4.to_owned(),
    });
    let bytes = generation::chain_bytes(&chain)?;
    crate::fsx::write_atomic(&chain_path, &bytes, 0o644)?;
    drop(lock);
    Ok(name)
}

/// Errors that mean "this folder cannot be written" (a read-only card or mount).
fn refuses_writes(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

pub(crate) fn write_error(path: &Path, e: &std::io::Error) -> MhlError {
    MhlError::Write {
        path: path.to_owned(),
        why: e.to_string(),
    }
}
