//! The compiled-artifact cache: a module compiled once is loaded in milliseconds the next time
//! (`run`, `check`, `eval` and every reload), instead of being compiled again (0.1 s for a Rust
//! module, 6–20 s for a Python or JavaScript one).
//!
//! # Threat model
//!
//! Loading a compiled artifact runs its machine code: wasmtime's `Component::deserialize` is
//! `unsafe` because whoever can write the artifact can run any code in sluice's process. So an
//! artifact is used only if nobody but sluice's own user could have written it:
//!
//! - the cache directory is owned by the current user and not writable by group or others
//!   (it is created 0700), and so is every ancestor up to `/`, except that an ancestor may be
//!   owned by root, and one writable by others must be sticky (`/tmp`): otherwise another user
//!   could rename the directory away and put their own in its place. A directory that fails
//!   this is not used at all (a warning says why) and modules are compiled as without a cache;
//! - an artifact file is opened without following symlinks and used only if it is a regular
//!   file owned by the current user with no group or other permissions (written 0600);
//! - it is written to a temporary file and renamed into place, so a reader never sees half a
//!   file, and it starts with a header holding the digest of its key (the module's sha256, the
//!   engine's compatibility hash, the sluice version) and the sha256 of the artifact: a
//!   truncated or corrupted file, or the artifact of another module or engine renamed into its
//!   place, is detected, removed and recompiled, never executed.
//!
//! A keyed MAC would add nothing: its key would live with the same user's files, under the same
//! protection as the artifacts. Someone who can write files as sluice's user can already replace
//! sluice itself. `rules.cache_dir = "off"` disables the cache.

use std::fs::{self, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Start of every artifact file: the format version of this header.
const MAGIC: &[u8; 8] = b"SLUICEC1";
const HEADER: usize = MAGIC.len() + 32 + 32;

/// Why the cache directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create or read the module cache directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "module cache directory {path} is unsafe: {problem}; a compiled module there could be replaced by another user, and loading one runs its code. Fix its ownership or permissions, set rules.cache_dir to a private directory, or \"off\""
    )]
    Unsafe { path: PathBuf, problem: String },
}

/// A private directory of compiled components, keyed by module and engine.
#[derive(Clone, Debug)]
pub struct ModuleCache {
    dir: PathBuf,
}

/// Where a module's compiled code came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSource {
    /// Loaded from the cache.
    Cached,
    /// Compiled and stored in the cache for next time.
    Compiled,
    /// Compiled; there is no cache (off or unusable) or storing failed (a warning says why).
    CompiledUncached,
}

impl CodeSource {
    /// `cached`, `compiled` or `compiled, not cached`, for `sluice check` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeSource::Cached => "cached",
            CodeSource::Compiled => "compiled",
            CodeSource::CompiledUncached => "compiled, not cached",
        }
    }
}

impl ModuleCache {
    /// Opens `dir`, creating it (0700) and its missing parents, and checks that only the current
    /// user can write it (see the module docs).
    pub fn open(dir: &Path) -> Result<ModuleCache, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let dir = dir.canonicalize().map_err(io)?;
        check_private_dir(&dir)?;
        Ok(ModuleCache { dir })
    }

    /// The default directory: `$XDG_CACHE_HOME/sluice/modules`, else
    /// `$HOME/.cache/sluice/modules`; `None` when neither variable is set.
    pub fn default_dir(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
        let base = env("XDG_CACHE_HOME")
            .filter(|v| Path::new(v).is_absolute())
            .map(PathBuf::from)
            .or_else(|| {
                env("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| Path::new(&home).join(".cache"))
            })?;
        Some(base.join("sluice").join("modules"))
    }

    /// The directory in use.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The component of the module whose sha256 is `version`: from the cache when a sound
    /// artifact is there, else compiled by `compile` and stored.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        version: &str,
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<(Component, CodeSource)> {
        let name = file_name(engine, version);
        let path = self.dir.join(&name);
        let key = Sha256::digest(name.as_bytes());
        match read_artifact(&path, &key) {
            Ok(Some(artifact)) => {
                // SAFETY: the artifact is one sluice wrote for this module and engine: the file is
                // private to this user in a directory only this user can change (checked at open
                // and on the opened file), and its sha256 and key match the header (module docs).
                match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(component) => return Ok((component, CodeSource::Cached)),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), "cannot load a cached compiled module ({err:#}); compiling it again");
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            Ok(None) => {}
            Err(problem) => {
                tracing::warn!(path = %path.display(), "ignoring a cached compiled module: {problem}; compiling it again");
                let _ = fs::remove_file(&path);
            }
        }
        let component = compile()?;
        let stored = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|artifact| write_artifact(&self.dir, &path, &key, &artifact));
        match stored {
            Ok(()) => Ok((component, CodeSource::Compiled)),
            Err(problem) => {
                tracing::warn!(path = %path.display(), "cannot store the compiled module in the cache: {problem}");
                Ok((component, CodeSource::CompiledUncached))
            }
        }
    }
}

/// `<module sha256>-<engine hash>.cwasm`: the engine hash covers wasmtime's version, target,
/// compiler settings and enabled features; sluice's version is added for anything else.
fn file_name(engine: &Engine, version: &str) -> String {
    // SipHash with fixed keys: the same in every process of one sluice binary, which is all a
    // cache key has to be (another build gets other entries).
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    env!("CARGO_PKG_VERSION").hash(&mut hasher);
    format!("{version}-{:016x}.cwasm", hasher.finish())
}

/// The artifact in `path` when it is there and sound; `Ok(None)` when there is none.
fn read_artifact(path: &Path, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(format!("cannot open it: {err}")),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("it is not a regular file".into());
    }
    check_private_file(&meta)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let (header, artifact) = bytes
        .split_at_checked(HEADER)
        .ok_or("it is shorter than its header (truncated)")?;
    if &header[..MAGIC.len()] != MAGIC {
        return Err("it does not start with sluice's artifact header".into());
    }
    if &header[MAGIC.len()..MAGIC.len() + 32] != key {
        return Err("it was written for another module or engine".into());
    }
    if header[MAGIC.len() + 32..] != Sha256::digest(artifact)[..] {
        return Err(
            "its content does not match the sha256 recorded in its header (corrupted or altered)"
                .into(),
        );
    }
    Ok(Some(artifact.to_vec()))
}

/// Writes header and artifact to a private temporary file in `dir`, then renames it to `path`.
fn write_artifact(dir: &Path, path: &Path, key: &[u8], artifact: &[u8]) -> Result<(), String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
    // create_new: never write through a file (or symlink) someone else put at that name.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let written = file
        .write_all(MAGIC)
        .and_then(|()| file.write_all(key))
        .and_then(|()| file.write_all(&Sha256::digest(artifact)))
        .and_then(|()| file.write_all(artifact))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err.to_string());
    }
    Ok(())
}

fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail and has no preconditions.
    unsafe { libc::getuid() }
}

/// `dir` and each of its ancestors: owned by this user (or, for ancestors, root), not writable
/// by group or others unless sticky (ancestors only).
fn check_private_dir(dir: &Path) -> Result<(), CacheError> {
    let uid = current_uid();
    let unsafe_dir = |path: &Path, problem: String| CacheError::Unsafe {
        path: path.to_owned(),
        problem,
    };
    let meta = fs::symlink_metadata(dir).map_err(|source| CacheError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if meta.uid() != uid {
        return Err(unsafe_dir(
            dir,
            format!(
                "it is owned by uid {}, not by this user (uid {uid})",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(
            dir,
            format!(
                "group or others may write it (mode {:o})",
                meta.mode() & 0o7777
            ),
        ));
    }
    for ancestor in dir.ancestors().skip(1) {
        let meta = fs::metadata(ancestor).map_err(|source| CacheError::Io {
            path: ancestor.to_owned(),
            source,
        })?;
        if meta.uid() != uid && meta.uid() != 0 {
            return Err(unsafe_dir(
                dir,
                format!(
                    "its parent {} is owned by uid {}, neither this user nor root",
                    ancestor.display(),
                    meta.uid()
                ),
            ));
        }
        let sticky = meta.mode() & 0o1000 != 0;
        if meta.mode() & 0o022 != 0 && !sticky {
            return Err(unsafe_dir(
                dir,
                format!(
                    "its parent {} may be written by group or others and is not sticky (mode {:o})",
                    ancestor.display(),
                    meta.mode() & 0o7777
                ),
            ));
        }
    }
    Ok(())
}

fn check_private_file(meta: &fs::Metadata) -> Result<(), String> {
    let uid = current_uid();
    if meta.uid() != uid {
        return Err(format!(
            "it is owned by uid {}, not by this user (uid {uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "group or others have permissions on it (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

impl ModuleCache {
    /// The cache a `rules.cache_dir` setting asks for: `off` disables it, a path names the
    /// directory, unset means [`ModuleCache::default_dir`]. A directory that cannot be used is
    /// reported as a warning and modules are compiled without a cache: the cache only saves
    /// time, and a pipeline should not stop for it.
    pub fn from_setting(
        setting: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<ModuleCache> {
        let dir = match setting.map(str::trim) {
            Some("off") => return None,
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => Self::default_dir(env)?,
        };
        match ModuleCache::open(&dir) {
            Ok(cache) => Some(cache),
            Err(err) => {
                tracing::warn!("{err}; compiling rules modules without a cache");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_default_directory_follows_xdg_then_home() {
        assert_eq!(
            ModuleCache::default_dir(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x/sluice/modules"))
        );
        // A relative XDG_CACHE_HOME is invalid by the spec and ignored.
        assert_eq!(
            ModuleCache::default_dir(env(&[("XDG_CACHE_HOME", "x"), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/sluice/modules"))
        );
        assert_eq!(ModuleCache::default_dir(env(&[])), None);
    }

    #[test]
    fn off_disables_and_a_path_is_created_private() {
        assert!(ModuleCache::from_setting(Some("off"), env(&[])).is_none());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b");
        let cache = ModuleCache::from_setting(path.to_str(), env(&[])).unwrap();
        let mode = std::fs::metadata(cache.dir()).unwrap().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o770)).unwrap();
        let err = ModuleCache::open(&open).unwrap_err().to_string();
        assert!(
            err.contains("is unsafe: group or others may write it (mode 770)"),
            "{err}"
        );
        // Its children are refused too: the parent could be swapped.
        let child = open.join("cache");
        let err = ModuleCache::open(&child).unwrap_err().to_string();
        assert!(
            err.contains("may be written by group or others and is not sticky (mode 770)"),
            "{err}"
        );
    }
}
