//! The end of a tree run's ASC MHL side: the files the history lists that the tree lacks
//! (missing), then (with `--mhl`) the generations sealed into each history's `ascmhl/` and
//! uploaded under the prefix. See `batch::custody` and docs/mhl.md.

use crate::batch::custody::{Session, Summary};
use crate::batch::custody_scope;
use crate::batch::custody_seal::Placed;
use crate::batch::report::FileLine;
use crate::config::UploadConfig;
use crate::engine::Engine;
use crate::error::{EXIT_ERROR, EXIT_MISMATCH};
use crate::exec::blocking;
use crate::mhl::history::{CHAIN, FOLDER};
use crate::progress::Progress;
use crate::s3::S3Api;
use crate::vocab::ObjectUrl;
use tokio_util::sync::CancellationToken;

impl Session {
    /// The lines of the files the history lists that the folder lacks (left out: files
    /// `filters` exclude and ignored ones; keys under `key_prefix`), and the summary so far with
    /// them counted. Call after every file was checked.
    pub(crate) fn missing(
        &self,
        filters: &crate::tree::Filters,
        key_prefix: &str,
    ) -> (Vec<FileLine>, Summary) {
        let mut lines = Vec::new();
        let mut missing = 0;
        for scope in &self.scopes {
            let Some(h) = &scope.history else { continue };
            for (from, to, g) in h.unsealed_renames_followed() {
                self.warn(format!(
                    "generation {} is not in the chain; its rename of '{}' to '{}' is followed, as ascmhl does (the file there was checked against the old name's value)",
                    scope.generation_path(g),
                    scope.rel(from),
                    scope.rel(to)
                ));
            }
            for (within, size) in h.unseen() {
                let rel = if scope.dir.is_empty() {
                    within.to_owned()
                } else {
                    format!("{}/{within}", scope.dir)
                };
                if !included(filters, &rel) || self.excused(&rel) {
                    continue;
                }
                missing += 1;
                lines.push(FileLine {
                    path: self.root.join(&rel).display().to_string(),
                    key: Some(format!("{key_prefix}{rel}")),
                    size: None,
                    reason: Some(format!(
                        "missing: listed in the ASC MHL history ({size}) but not in the folder",
                        size = size.map_or("size unknown".into(), |s| format!("{s} bytes"))
                    )),
                    exit_code: EXIT_MISMATCH,
                    mhl: Some("missing".into()),
                    rel,
                    ..FileLine::default()
                });
            }
        }
        let mut summary = self.summary();
        summary.missing += missing;
        (lines, summary)
    }

    /// Whether a listed file that is gone is not missing: as `ascmhl verify`, only the root's
    /// patterns excuse it (a card's own patterns added later do not), and those of the newest
    /// generation file, listed in the chain or not (what `ascmhl verify` applies).
    fn excused(&self, rel: &str) -> bool {
        let root = &self.scopes[0];
        if !root.carried.ignores(rel) {
            return false;
        }
        if !root.ignore.ignores(rel)
            && let Some(g) = root.history.as_ref().and_then(|h| h.unsealed.last())
        {
            self.warn(format!(
                "generation {} is not in the chain; its ignore patterns excuse the missing '{rel}', as ascmhl does",
                root.generation_path(g)
            ));
        }
        true
    }

    /// Closes the generations (after every file was recorded) and puts each with its updated
    /// chain into its `ascmhl/` (the source's, or the state directory's when the source is
    /// read-only): nested histories first, the root's last, referencing them. A failure becomes
    /// a line. Returns each sealed generation with its history's folder relative to the root
    /// (`""`: the root's); empty without `--mhl`.
    pub(crate) async fn write_generation(
        &self,
        lines: &mut Vec<FileLine>,
        summary: &mut Summary,
    ) -> Vec<(String, Placed)> {
        let jobs = custody_scope::take_jobs(&self.scopes);
        let (dirs, created) = (self.dirs.clone(), self.created);
        let (sealed, failed) =
            blocking(move || custody_scope::seal_all(&dirs, jobs, created)).await;
        for (i, e) in failed {
            lines.push(FileLine {
                path: self.scopes[i].abs.join(FOLDER).display().to_string(),
                reason: Some(e.to_string()),
                exit_code: EXIT_ERROR,
                ..FileLine::default()
            });
        }
        let mut out = Vec::new();
        for s in sealed {
            let dir = self.dirs[s.scope].clone();
            if dir.is_empty() {
                summary.generation = Some(s.placed.name.clone());
                summary.written_to = Some(s.placed.dir.display().to_string());
            } else {
                summary
                    .nested_generations
                    .push(format!("{dir}/{FOLDER}/{}", s.placed.name));
            }
            if summary.source_read_only.is_none() {
                summary.source_read_only = s.placed.read_only.clone();
            }
            out.push((dir, s.placed));
        }
        out
    }

    /// Ends the session: the lines of missing files, then (with `--mhl`, after a complete run)
    /// the generations and chains written and uploaded under the prefix (a nested history's
    /// under its folder's keys). Lines for what failed there are returned with the missing ones.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn finish<C: S3Api>(
        self,
        engine: &Engine,
        s3: &C,
        base: &UploadConfig,
        prefix: &ObjectUrl,
        filters: &crate::tree::Filters,
        complete: bool,
        progress: &dyn Progress,
        cancel: &CancellationToken,
    ) -> (Vec<FileLine>, Summary) {
        if !complete {
            let summary = self.summary();
            // Interrupted: what was not reached is not missing, and no generation is written.
            for scope in &self.scopes {
                if let Some(w) = scope
                    .writer
                    .as_ref()
                    .and_then(|w| w.lock().expect("lock").take())
                {
                    let _ = std::fs::remove_file(w.path());
                }
            }
            return (Vec::new(), summary);
        }
        let (mut lines, mut summary) = self.missing(filters, &prefix.key);
        let placed = self.write_generation(&mut lines, &mut summary).await;
        for (dir, placed) in placed {
            let folder = if dir.is_empty() {
                FOLDER.to_owned()
            } else {
                format!("{dir}/{FOLDER}")
            };
            for name in [placed.name.as_str(), CHAIN] {
                let key = format!("{}{folder}/{name}", prefix.key);
                let mut cfg = base.clone();
                cfg.source = placed.dir.join(name);
                cfg.target = ObjectUrl {
                    bucket: prefix.bucket.clone(),
                    key: key.clone(),
                };
                match crate::upload::upload_file(engine, s3, &cfg, progress, cancel).await {
                    Ok(_) => summary.uploaded.push(key),
                    Err(e) => lines.push(FileLine {
                        path: cfg.source.display().to_string(),
                        rel: format!("{folder}/{name}"),
                        key: Some(key),
                        reason: Some(crate::redact::redact(&e.to_string())),
                        exit_code: e.exit_code(),
                        ..FileLine::default()
                    }),
                }
            }
        }
        (lines, summary)
    }
}

/// Whether `rel` passes `--include`/`--exclude` (its directories included).
fn included(filters: &crate::tree::Filters, rel: &str) -> bool {
    let mut dir = String::new();
    let parts: Vec<&str> = rel.split('/').collect();
    for p in &parts[..parts.len() - 1] {
        if !dir.is_empty() {
            dir.push('/');
        }
        dir.push_str(p);
        if !filters.allows(&dir, true) {
            return false;
        }
    }
    filters.allows(rel, false)
}
