//! Where tally keeps what must outlive a run (multipart manifests, tree records, ASC MHL work
//! folders): one directory, resolved here and nowhere else.
//!
//! The environment is read once, by [`StateDir::from_env`] at the top of a command; everything
//! below takes the resolved directory (`ResumeOptions::state_dir`), so a test or a caller that
//! names another directory is honoured everywhere.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use crate::error::Error;

/// The state directory: `$TALLY_STATE_DIR`, else `$XDG_STATE_HOME/tally`, else
/// `~/.local/state/tally`. Manifests live in its `manifests/` folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StateDir(PathBuf);

impl StateDir {
    /// The directory the environment names (not created yet).
    pub(crate) fn from_env() -> Result<StateDir, Error> {
        let dir = if let Some(d) = std::env::var_os("TALLY_STATE_DIR") {
            PathBuf::from(d)
        } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
            PathBuf::from(d).join("tally")
        } else if let Some(h) = std::env::var_os("HOME") {
            PathBuf::from(h).join(".local/state/tally")
        } else {
            return Err(Error::Usage(
                "no state directory for manifests: set TALLY_STATE_DIR or HOME, or pass --manifest PATH"
                    .into(),
            ));
        };
        Ok(StateDir(dir))
    }

    /// The state directory's `manifests/` folder, created (the state directory 0700) if missing.
    pub(crate) fn manifests(&self) -> Result<PathBuf, Error> {
        let manifests = self.0.join("manifests");
        std::fs::create_dir_all(&manifests).map_err(|e| Error::Manifest {
            path: manifests.clone(),
            why: e.to_string(),
        })?;
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
        Ok(manifests)
    }
}

/// The manifests folder of the state directory the environment names, created if missing: for
/// the commands that take no override (`tally uploads`, `tally abort`).
pub(crate) fn manifests_from_env() -> Result<PathBuf, Error> {
    StateDir::from_env()?.manifests()
}
