//! One writer per output folder: `train --out RUN` and `ingest RAW OUT` hold a lock file
//! (`.alexnet.lock` in the folder) for as long as they write there, so a second process
//! pointed at the same folder stops at once with the first one's process id instead of
//! interleaving its files.
//!
//! The lock is the operating system's (`flock`), not the file's existence: it is released
//! when the holder exits however it ends (Ctrl-C, `kill -9`, a crash), so a lock file left
//! behind is never stale; the next run takes it over and rewrites the process id in it. The
//! file itself is never deleted, since deleting a lock file that another process has just
//! opened would let two processes believe they hold it. `ingest --shard I/N` parts take the
//! folder's lock shared and their own part's lock (`.alexnet-I-of-N.lock`) exclusive, so
//! the parts of one folder can run side by side while a whole-folder ingest cannot.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a folder.
pub const LOCK_FILE: &str = ".alexnet.lock";

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is in use by another alexnet ({holder}); wait for it to finish or stop it, or choose another output (lock file {})", dir.display(), path.display())]
    Held {
        /// The folder or output asked for.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as its lock file says (`process 1234: alexnet train`).
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("{}: cannot create or lock the lock file: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The only writer.
    Exclusive,
    /// One of several cooperating writers (the `--shard` parts of one ingest).
    Shared,
}

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
    // Kept open: closing the file releases the lock.
    _file: File,
}

impl FolderLock {
    /// Locks `path` (a lock file, created if missing) for `what` (e.g. `alexnet train`);
    /// `dir` names the output in the error when another process holds it.
    pub fn acquire(path: &Path, dir: &Path, what: &str, mode: Mode) -> Result<Self, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match os::try_lock(&file, mode) {
            Ok(true) => {}
            Ok(false) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let text = text.trim();
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    path: path.to_path_buf(),
                    holder: if text.is_empty() {
                        "a process that has not written its id yet".into()
                    } else {
                        text.to_string()
                    },
                });
            }
            Err(e) if os::unsupported(&e) => {
                eprintln!(
                    "warning: {}: this filesystem does not support file locks; nothing stops a second process from writing here at the same time",
                    path.display()
                );
            }
            Err(e) => return Err(io(e)),
        }
        if mode == Mode::Exclusive {
            // Only the sole holder may rewrite the note; shared holders would overwrite each
            // other's, and the first one's stays as good a name as any.
            let note = format!("process {}: {what}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.write_all(note.as_bytes()))
                .and_then(|()| file.flush())
                .map_err(io)?;
        } else {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            if len == 0 {
                let note = format!("process {}: {what}\n", std::process::id());
                let _ = file.write_all(note.as_bytes());
            }
        }
        Ok(FolderLock {
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// Locks folder `dir` (which must exist) through its [`LOCK_FILE`].
    pub fn folder(dir: &Path, what: &str) -> Result<Self, LockError> {
        Self::acquire(&dir.join(LOCK_FILE), dir, what, Mode::Exclusive)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
mod os {
    use super::Mode;
    use std::fs::File;
    use std::os::unix::io::AsRawFd;

    /// Ok(false) when another open file holds a conflicting lock.
    pub fn try_lock(file: &File, mode: Mode) -> std::io::Result<bool> {
        let op = match mode {
            Mode::Exclusive => libc::LOCK_EX,
            Mode::Shared => libc::LOCK_SH,
        } | libc::LOCK_NB;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            let r = unsafe { libc::flock(file.as_raw_fd(), op) };
            if r == 0 {
                return Ok(true);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => return Ok(false),
                Some(libc::EINTR) => continue,
                _ => return Err(e),
            }
        }
    }

    pub fn unsupported(e: &std::io::Error) -> bool {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOLCK) | Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS)
        )
    }
}

#[cfg(not(unix))]
mod os {
    use super::Mode;
    use std::fs::File;

    /// Without flock, [`File::try_lock`]'s platform lock would do; until then no lock.
    pub fn try_lock(_: &File, _: Mode) -> std::io::Result<bool> {
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }

    pub fn unsupported(e: &std::io::Error) -> bool {
        e.kind() == std::io::ErrorKind::Unsupported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = FolderLock::folder(dir.path(), "alexnet train").unwrap();
        let err = FolderLock::folder(dir.path(), "alexnet train").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("process {}", std::process::id())) && msg.contains("in use"),
            "{msg}"
        );
        drop(first);
        let again = FolderLock::folder(dir.path(), "alexnet ingest").unwrap();
        let note = std::fs::read_to_string(again.path()).unwrap();
        assert!(note.contains("alexnet ingest"), "{note}");
        // Shared holders coexist, and keep an exclusive one out.
        drop(again);
        let p = dir.path().join(LOCK_FILE);
        let a = FolderLock::acquire(&p, dir.path(), "part 0", Mode::Shared).unwrap();
        let b = FolderLock::acquire(&p, dir.path(), "part 1", Mode::Shared).unwrap();
        assert!(FolderLock::acquire(&p, dir.path(), "whole", Mode::Exclusive).is_err());
        drop((a, b));
        assert!(FolderLock::acquire(&p, dir.path(), "whole", Mode::Exclusive).is_ok());
    }
}
