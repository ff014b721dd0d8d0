//! The one way this project writes a file: under a temporary name beside the target, renamed
//! into place only when complete, so a reader (a pipeline stage, `--resume`, another tool)
//! never sees half a file and a failure never destroys the previous good one.
//!
//! The temporary is `.NAME.alexnet-PID-N.tmp` beside `NAME`: hidden, never ending in
//! `.parquet` or `.safetensors` (readers of a folder skip it), and carrying the writer's
//! process id, so [`remove_stale`] can tell a temporary whose writer died (removed) from one a
//! live process is still writing (kept). A temporary is removed when its writer fails or is
//! dropped, and, through [`remove_on_signal`], when SIGINT or SIGTERM ends the process: a
//! process-wide list holds every live temporary, and a thread waiting for those signals removes
//! them before the process ends as the signal would have ended it. Only `kill -9` or a power
//! cut leaves one behind; the next command over that folder removes it.
//!
//! Finished files get mode 0644 whatever the umask, like any shared output (docs/outputs.md).
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// What a temporary's name ends with.
pub const TEMP_SUFFIX: &str = ".tmp";

/// The marker between a temporary's target name and its writer's process id.
const MARK: &str = ".alexnet-";

/// The mode of every finished file (readable by all, like any shared output).
pub const FILE_MODE: u32 = 0o644;

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtomicError {
    /// An operation on the temporary or the target failed.
    #[error("{}: cannot {what}: {source}", path.display())]
    Io {
        /// The file the operation was on.
        path: PathBuf,
        /// What was being done (`create`, `write`, `rename into place`).
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

impl AtomicError {
    fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> AtomicError {
        let path = path.to_path_buf();
        move |source| AtomicError::Io { path, what, source }
    }
}

/// The operating system's error alone, for callers whose own error already names the target.
impl From<AtomicError> for std::io::Error {
    fn from(e: AtomicError) -> std::io::Error {
        match e {
            AtomicError::Io { source, .. } => source,
        }
    }
}

/// Temporaries of this process that exist now: `(path, is a folder)`.
static LIVE: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());

/// Tells temporaries of one process for one target apart (two threads, or a retry).
static NEXT: AtomicU64 = AtomicU64::new(0);

fn live() -> std::sync::MutexGuard<'static, Vec<(PathBuf, bool)>> {
    // A thread that panicked while holding the list left it consistent (every change is one
    // push or one retain), so a poisoned lock is still usable.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The temporary a new write of `target` would use (`.NAME.alexnet-PID-N.tmp` beside it).
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    target.with_file_name(format!(".{name}{MARK}{pid}-{n}{TEMP_SUFFIX}"))
}

/// The writer's process id when `name` is a temporary of this naming.
pub fn temp_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(TEMP_SUFFIX)?;
    let (_, tail) = rest.rsplit_once(MARK)?;
    let (pid, n) = tail.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// True when process `pid` may be alive (when in doubt, it is).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only asks whether the process exists; nothing is sent.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Removes the temporaries of this naming directly inside `dir` whose writer is no longer
/// running (a command killed with `kill -9`, or before this version cleaned up on Ctrl-C).
/// Every command calls it over the folders it writes. Returns what it removed; a folder that
/// does not exist or cannot be listed holds nothing to remove.
pub fn remove_stale(dir: &Path) -> Vec<PathBuf> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        if pid == std::process::id() || alive(pid) {
            continue;
        }
        let p = e.path();
        let gone = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        if gone.is_ok() {
            removed.push(p);
        }
    }
    removed.sort();
    removed
}

/// [`remove_stale`] over `dir`, with a note on stderr per temporary removed.
pub fn remove_stale_in(dir: &Path) {
    for p in remove_stale(dir) {
        eprintln!(
            "note: removed {}, left by an alexnet that was killed",
            p.display()
        );
    }
}

/// [`remove_stale_in`] over the folder holding `out`.
pub fn remove_stale_beside(out: &Path) {
    remove_stale_in(out.parent().unwrap_or(Path::new(".")));
}

/// Installs, once per process, the thread that removes every live temporary when SIGINT or
/// SIGTERM arrives, then ends the process as the signal would have (exit status 130 or 143).
/// A command that handles a signal itself (training stops at a checkpoint) installs its own
/// handler over this one for as long as it runs.
pub fn remove_on_signal() {
    #[cfg(unix)]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            use signal_hook::consts::{SIGINT, SIGTERM};
            let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
                // Without the handler a signal ends the process as it always did; the next
                // command over the folder removes what it left.
                return;
            };
            let spawned = std::thread::Builder::new()
                .name("temporaries".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        // Held until the process ends, so no temporary is created or renamed
                        // after this sweep.
                        let list = live();
                        for (p, dir) in list.iter() {
                            let _ = if *dir {
                                std::fs::remove_dir_all(p)
                            } else {
                                std::fs::remove_file(p)
                            };
                        }
                        let _ = signal_hook::low_level::emulate_default_handler(sig);
                        std::process::exit(128 + sig);
                    }
                });
            drop(spawned);
        });
    }
}

/// A temporary file or folder for a target, removed unless [`Temp::commit`] renames it into
/// place.
#[derive(Debug)]
pub struct Temp {
    target: PathBuf,
    tmp: PathBuf,
    dir: bool,
    done: bool,
}

impl Temp {
    /// Creates the temporary file for `target` (created new: never follows an existing name).
    pub fn file(target: &Path) -> Result<(Temp, File), AtomicError> {
        let tmp = temp_path(target);
        let mut list = live();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        // Named by the target: the user never typed the temporary's name.
        let file = opts
            .open(&tmp)
            .map_err(AtomicError::io(target, "create a temporary beside it"))?;
        list.push((tmp.clone(), false));
        Ok((Self::new(target, tmp, false), file))
    }

    /// Creates the temporary folder for `target` (a folder written as a whole, as `import`'s).
    pub fn folder(target: &Path) -> Result<Temp, AtomicError> {
        let tmp = temp_path(target);
        let mut list = live();
        std::fs::create_dir(&tmp)
            .map_err(AtomicError::io(target, "create a temporary beside it"))?;
        list.push((tmp.clone(), true));
        Ok(Self::new(target, tmp, true))
    }

    fn new(target: &Path, tmp: PathBuf, dir: bool) -> Temp {
        Temp {
            target: target.to_path_buf(),
            tmp,
            dir,
            done: false,
        }
    }

    /// The temporary's path (for errors, and for libraries that write to a path).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The path it becomes.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Makes the temporary the target: for a file (`file` is its open handle, when there is
    /// one) sets [`FILE_MODE`] and syncs the data first, so a crash cannot leave an empty
    /// target in place of the previous good one; then renames. On error the temporary is gone.
    pub fn commit(mut self, file: Option<File>) -> Result<PathBuf, AtomicError> {
        if !self.dir {
            let file = match file {
                Some(f) => f,
                None => File::open(&self.tmp).map_err(AtomicError::io(&self.tmp, "reopen"))?,
            };
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
                    .map_err(AtomicError::io(&self.tmp, "set the mode of"))?;
            }
            file.sync_all()
                .map_err(AtomicError::io(&self.tmp, "write"))?;
        }
        let mut list = live();
        std::fs::rename(&self.tmp, &self.target)
            .map_err(AtomicError::io(&self.target, "rename into place"))?;
        list.retain(|(p, _)| p != &self.tmp);
        self.done = true;
        Ok(self.target.clone())
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut list = live();
        let _ = if self.dir {
            std::fs::remove_dir_all(&self.tmp)
        } else {
            std::fs::remove_file(&self.tmp)
        };
        list.retain(|(p, _)| p != &self.tmp);
    }
}

/// Writes `target` through `write` (given the open temporary), then commits it. `write`'s
/// error is returned as it is; either way a failure leaves no temporary.
pub fn write_with<E: From<AtomicError>>(
    target: &Path,
    write: impl FnOnce(&mut File) -> Result<(), E>,
) -> Result<(), E> {
    let (tmp, mut file) = Temp::file(target)?;
    write(&mut file)?;
    tmp.commit(Some(file))?;
    Ok(())
}

/// Writes `target` through a library that wants a path (`write` is given the temporary's,
/// which exists and is empty), then commits it.
pub fn write_at_path<E: From<AtomicError>>(
    target: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let (tmp, file) = Temp::file(target)?;
    drop(file);
    write(tmp.path())?;
    tmp.commit(None)?;
    Ok(())
}

/// Writes `bytes` as `target`.
pub fn write_bytes(target: &Path, bytes: &[u8]) -> Result<(), AtomicError> {
    write_with(target, |f: &mut File| {
        f.write_all(bytes).map_err(AtomicError::io(target, "write"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_lands_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.json");
        write_bytes(&out, b"one").unwrap();
        // A failed rewrite keeps the previous file and leaves no temporary.
        let r: Result<(), AtomicError> = write_with(&out, |f| {
            f.write_all(b"half").unwrap();
            Err(AtomicError::io(&out, "write")(std::io::Error::other(
                "disk full",
            )))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&out).unwrap(), b"one");
        assert_eq!(names(dir.path()), ["a.json"]);
        assert!(live().iter().all(|(p, _)| !p.starts_with(dir.path())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, FILE_MODE, "{mode:o}");
        }
        // A temporary dropped before its commit is removed, folders included.
        let t = Temp::folder(&dir.path().join("import")).unwrap();
        std::fs::write(t.path().join("x.png"), b"x").unwrap();
        drop(t);
        assert_eq!(names(dir.path()), ["a.json"]);
    }

    #[test]
    fn only_temporaries_of_dead_writers_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mine = temp_path(&dir.path().join("x.parquet"));
        assert_eq!(
            temp_owner(&mine.file_name().unwrap().to_string_lossy()),
            Some(std::process::id())
        );
        std::fs::write(&mine, b"").unwrap();
        // pid_max is at most 2^22, so this writer cannot be running.
        let dead = dir.path().join(".x.parquet.alexnet-4194304-0.tmp");
        std::fs::write(&dead, b"").unwrap();
        let dead_dir = dir.path().join(".import.alexnet-4194304-1.tmp");
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("0.png"), b"").unwrap();
        // Not ours: other tools' temporaries and names that only look alike.
        for other in [".x.tmp", "y.alexnet-4194304-0.tmp", ".z.alexnet-abc-0.tmp"] {
            std::fs::write(dir.path().join(other), b"").unwrap();
        }
        assert_eq!(remove_stale(dir.path()), vec![dead_dir, dead]);
        assert!(mine.exists());
        assert_eq!(names(dir.path()).len(), 4);
    }
}
