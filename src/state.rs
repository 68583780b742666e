//! Where tally keeps what must outlive a run (multipart manifests, tree records, ASC MHL work
//! folders): one directory, resolved here and nowhere else.
//!
//! The environment is read once, by [`StateDir::from_env`], where a command's settings are built
//! (`cli`/`app`); everything below takes the resolved [`StateDir`] (`ResumeOptions::state_dir`),
//! so a test or a caller that names another directory is honoured everywhere. An environment that
//! names no directory is not an error until a run needs one ([`StateDir::manifests`]): a file that
//! goes in one PutObject, or one with `--manifest PATH`, needs none.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use crate::error::Error;

/// The folder the manifests live in, resolved once: `$TALLY_STATE_DIR/manifests`, else
/// `$XDG_STATE_HOME/tally/manifests`, else `~/.local/state/tally/manifests`; or a folder a caller
/// names ([`StateDir::at`]). The default names none (every use of it is the one-line error).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateDir(Where);

/// What [`StateDir`] resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Where {
    /// The environment names no state directory.
    #[default]
    Unnamed,
    /// A state directory (made 0700 when its `manifests/` folder is created).
    Root(PathBuf),
    /// A manifests folder named directly.
    Manifests(PathBuf),
}

impl StateDir {
    /// The state directory the environment names (not created yet): the one read of the
    /// environment for it.
    pub fn from_env() -> StateDir {
        let root = if let Some(d) = std::env::var_os("TALLY_STATE_DIR") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            PathBuf::from(d).join("tally")
        } else if let Some(h) = std::env::var_os("HOME") {
            PathBuf::from(h).join(".local/state/tally")
        } else {
            return StateDir(Where::Unnamed);
        };
        StateDir(Where::Root(root))
    }

    /// Manifests in `dir` itself (created when first needed).
    pub fn at(dir: PathBuf) -> StateDir {
        StateDir(Where::Manifests(dir))
    }

    /// The manifests folder, created (a state directory 0700) if missing; one clear line when
    /// the environment names no state directory.
    pub(crate) fn manifests(&self) -> Result<PathBuf, Error> {
        let dir = self.manifests_named()?;
        let root = match &self.0 {
            Where::Root(root) => Some(root),
            Where::Unnamed | Where::Manifests(_) => None,
        };
        std::fs::create_dir_all(&dir).map_err(|e| Error::Manifest {
            path: dir.clone(),
            why: e.to_string(),
        })?;
        if let Some(root) = root {
            let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
        }
        Ok(dir)
    }

    /// The manifests folder named, not created (for looking a manifest up, where a folder that
    /// is not there means there is none); the same one line as [`StateDir::manifests`] when the
    /// environment names no state directory.
    pub(crate) fn manifests_named(&self) -> Result<PathBuf, Error> {
        match &self.0 {
            Where::Unnamed => Err(Error::Usage(
                "no state directory for manifests: set TALLY_STATE_DIR or HOME, or pass --manifest PATH"
                    .into(),
            )),
            Where::Root(root) => Ok(root.join("manifests")),
            Where::Manifests(dir) => Ok(dir.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_state_directory_is_one_line_when_a_manifest_folder_is_needed() {
        let e = StateDir::default().manifests().unwrap_err();
        assert_eq!(
            e.to_string(),
            "no state directory for manifests: set TALLY_STATE_DIR or HOME, or pass --manifest PATH"
        );
    }

    #[test]
    fn a_state_directory_holds_its_manifests_folder_and_a_named_folder_is_itself() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        let made = StateDir(Where::Root(root.clone())).manifests().unwrap();
        assert_eq!(made, root.join("manifests"));
        assert!(made.is_dir());
        let mode = std::fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let named = dir.path().join("m");
        assert_eq!(StateDir::at(named.clone()).manifests().unwrap(), named);
        assert!(named.is_dir());
    }
}
