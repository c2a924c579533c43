//! Reading a module file, from wherever its path came (the CLI, the config, the file watch or
//! `POST /rules/reload`), without trusting the path.
//!
//! The path must name a regular file (symlinks resolved) of at most
//! [`RuleLimits::max_module_bytes`](super::RuleLimits::max_module_bytes), and the read must
//! finish within [`MODULE_READ_TIMEOUT`]. `/dev/zero` would otherwise be read until memory ran
//! out, a FIFO would block the open forever, and a file on a hung network mount would hold up
//! every reload queued behind it.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

/// Longest a module file read may take.
pub const MODULE_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a module file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("{0}")]
    Io(std::io::Error),
    #[error(
        "it is not a regular file (a directory, device, FIFO or socket); give the path of a .wasm file"
    )]
    NotRegular,
    #[error(
        "it is {size} bytes, over the limit of {max} bytes (rules.max_module_mib); a rules module is normally a few MiB"
    )]
    TooLarge { size: u64, max: u64 },
    #[error("reading it took longer than {0:?}")]
    TimedOut(Duration),
}

/// The bytes of the module file at `path`, read on a thread of its own so that a read that
/// hangs costs the caller [`MODULE_READ_TIMEOUT`] at most.
pub(crate) fn read(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileProblem> {
    let (tx, rx) = mpsc::sync_channel(1);
    let owned = path.to_owned();
    std::thread::Builder::new()
        .name("sluice-module-read".into())
        .spawn(move || {
            let _ = tx.send(read_now(&owned, max_bytes));
        })
        .map_err(FileProblem::Io)?;
    rx.recv_timeout(MODULE_READ_TIMEOUT)
        .unwrap_or(Err(FileProblem::TimedOut(MODULE_READ_TIMEOUT)))
}

fn read_now(path: &Path, max_bytes: u64) -> Result<Vec<u8>, FileProblem> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. The type is
    // checked on the opened file, so a path swapped after a check cannot slip through.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(FileProblem::Io)?;
    let meta = file.metadata().map_err(FileProblem::Io)?;
    if !meta.is_file() {
        return Err(FileProblem::NotRegular);
    }
    if meta.len() > max_bytes {
        return Err(FileProblem::TooLarge {
            size: meta.len(),
            max: max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow while it is read: never take more than the limit.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(FileProblem::Io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(FileProblem::TooLarge {
            size: bytes.len() as u64,
            max: max_bytes,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_directories_and_fifos_are_not_read() {
        assert!(matches!(
            read(Path::new("/dev/zero"), 1 << 20),
            Err(FileProblem::NotRegular)
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read(dir.path(), 1 << 20),
            Err(FileProblem::NotRegular)
        ));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(read(&fifo, 1 << 20), Err(FileProblem::NotRegular)));
    }

    #[test]
    fn files_over_the_limit_are_refused_and_symlinks_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.wasm");
        std::fs::write(&file, vec![7u8; 2048]).unwrap();
        let problem = read(&file, 1024).unwrap_err();
        assert_eq!(
            problem.to_string(),
            "it is 2048 bytes, over the limit of 1024 bytes (rules.max_module_mib); a rules module is normally a few MiB"
        );
        let link = dir.path().join("link.wasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read(&link, 4096).unwrap(), vec![7u8; 2048]);
    }
}
