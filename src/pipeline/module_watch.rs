//! Watches whichever rules module file is active and nudges the validator when it changes.
//!
//! Two kinds of change must be seen:
//! - the file itself written or replaced (editors and deploy tools often write a new file and
//!   rename it over the old one, so the directory is watched rather than the file);
//! - a symlink on the way to it swapped: a Kubernetes ConfigMap mounts `rules.wasm ->
//!   ..data/rules.wasm` with `..data -> ..<timestamp>`, and an update renames a new `..data` over
//!   the old one. No event then names `rules.wasm`, so every event in a watched directory makes
//!   the watcher look again at what the path resolves to (device, inode, size, modification
//!   time): a different file is a change.
//!
//! The validator hashes what it loads, so a nudge for a file that did not really change costs a
//! read and is reported as unchanged. After a reload from another path (`sluice reload --module
//! other.wasm`), the validator sends the new path and the watch moves to it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::pipeline::reload::{ReloadHandle, Trigger};

/// A running watch; dropping it stops it.
pub struct ModuleWatch {
    task: tokio::task::AbortHandle,
}

impl Drop for ModuleWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a path resolves to: a different value means a different file or new content.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fingerprint {
    resolved: Option<PathBuf>,
    identity: Option<(u64, u64, u64, Option<SystemTime>)>,
}

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    Fingerprint {
        resolved: std::fs::canonicalize(path).ok(),
        identity: std::fs::metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok())),
    }
}

/// The directories to watch for `path`: its own, and that of the file it resolves to when
/// symlinks lead elsewhere.
fn directories(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    };
    let mut dirs = vec![parent(path)];
    if let Ok(resolved) = std::fs::canonicalize(path) {
        let dir = parent(&resolved);
        if std::fs::canonicalize(&dirs[0]).ok().as_ref() != Some(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Starts watching `active`'s current path, following it when it changes. After a change,
/// the validator is nudged once the events have stopped for `debounce`.
pub fn watch_module(
    mut active: watch::Receiver<PathBuf>,
    debounce: Duration,
    handle: ReloadHandle,
) -> Result<ModuleWatch, notify::Error> {
    let (tx, mut events) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = tx.send(event.paths);
        }
    })?;
    let mut path = active.borrow_and_update().clone();
    let mut watched = directories(&path);
    for dir in &watched {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    let mut seen = fingerprint(&path);
    let task = tokio::spawn(async move {
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let wake = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(paths) = events.recv() => {
                    let named = paths.iter().any(|p| p.file_name() == path.file_name());
                    let now = fingerprint(&path);
                    if named || now != seen {
                        seen = now;
                        due = Some(tokio::time::Instant::now() + debounce);
                    }
                }
                changed = active.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    path = active.borrow_and_update().clone();
                    seen = fingerprint(&path);
                    debug!(module = %path.display(), "watching the active module file");
                }
                _ = wake => {
                    due = None;
                    handle.nudge(Trigger::File);
                }
            }
            // A swapped symlink may now lead to another directory (the old one is usually
            // deleted): watch where the path resolves to now.
            let wanted = directories(&path);
            if wanted != watched {
                for dir in watched.iter().filter(|d| !wanted.contains(d)) {
                    let _ = watcher.unwatch(dir);
                }
                for dir in wanted.iter().filter(|d| !watched.contains(d)) {
                    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                        warn!(error = %e, dir = %dir.display(), "cannot watch the module's directory");
                    }
                }
                watched = wanted;
            }
        }
    });
    Ok(ModuleWatch {
        task: task.abort_handle(),
    })
}
