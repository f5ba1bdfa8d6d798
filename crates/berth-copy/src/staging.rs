//! Scratch space that must not outlive the command: archives being read
//! are extracted into `<root>/ingest/archives/<random>/` (0700, on the
//! root's filesystem, never `$TMPDIR`), archives being written are staged
//! beside their destination. Every such path is registered here while it
//! exists, so that a signal handler can remove them all
//! ([`remove_registered`]) if the command does not unwind in time after
//! [`cancel`].
//!
//! A staging directory is `flock`ed while in use; a later staging removes
//! directories nobody holds a lock on (left by a `kill -9`).

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::{Error, Result};

static CANCELLED: AtomicBool = AtomicBool::new(false);
static REGISTERED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Asks every running copy, extraction and hash loop to stop
/// ([`Error::Interrupted`]) at its next chunk.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

pub fn is_cancelled() -> bool {
    CANCELLED.load(Ordering::Relaxed)
}

/// `Err(Error::Interrupted)` once [`cancel`] was called.
pub fn check() -> Result<()> {
    if is_cancelled() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// The same for I/O loops: an `Interrupted`-kind error whose message says
/// so (mapped back to [`Error::Interrupted`] by callers).
pub fn check_io() -> io::Result<()> {
    if is_cancelled() {
        Err(io::Error::other(INTERRUPTED))
    } else {
        Ok(())
    }
}

const INTERRUPTED: &str = "interrupted by a signal";

/// Whether an I/O error came from [`check_io`].
pub fn is_interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Other && e.to_string() == INTERRUPTED
}

/// Removes every registered path (directories recursively). For the last
/// resort of a signal handler; racing writers may recreate nothing inside,
/// since [`cancel`] stopped them first.
pub fn remove_registered() {
    let paths = match REGISTERED.lock() {
        Ok(p) => p.clone(),
        Err(p) => p.into_inner().clone(),
    };
    for p in paths {
        let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
    }
}

/// A path registered for removal on interrupt while this lives.
#[derive(Debug)]
pub struct Registered(PathBuf);

impl Registered {
    pub fn new(path: &Path) -> Registered {
        if let Ok(mut r) = REGISTERED.lock() {
            r.push(path.to_path_buf());
        }
        Registered(path.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut r) = REGISTERED.lock() {
            if let Some(i) = r.iter().position(|p| *p == self.0) {
                r.swap_remove(i);
            }
        }
    }
}

/// A private directory under `<root>/ingest/archives/`, removed on drop.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    /// The directory itself, `flock`ed while it is in use.
    _lock: File,
    _registered: Registered,
}

/// Staging directories in use are named `stage-*`; `new-*` while being
/// set up (not yet locked).
const PREFIX: &str = "stage-";
const NEW_PREFIX: &str = "new-";

impl StagingDir {
    pub fn create(root: &Path) -> io::Result<StagingDir> {
        let base = root.join("ingest").join("archives");
        fs::create_dir_all(&base)?;
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700))?;
        clean_stale(&base);
        // Made (0700, by tempfile) and locked under a name the cleanup of
        // other processes leaves alone, then renamed: a `stage-*` directory
        // nobody holds a lock on is always stale.
        let new = tempfile::Builder::new()
            .prefix(NEW_PREFIX)
            .tempdir_in(&base)?;
        let lock = File::open(new.path())?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let suffix = new
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix(NEW_PREFIX))
            .unwrap_or("x")
            .to_owned();
        let path = base.join(format!("{PREFIX}{suffix}"));
        // Registered first: from the rename on, a signal removes it.
        let registered = Registered::new(&path);
        fs::rename(new.path(), &path)?;
        let _ = new.keep();
        Ok(StagingDir {
            path,
            _lock: lock,
            _registered: registered,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(
                    "cannot remove the staging directory {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

/// Removes staging directories of processes that died (nobody holds their
/// lock; `kill -9`, or a signal's grace period that ran out mid-removal).
/// One still being set up is kept unless it is an hour old.
fn clean_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let stale = if name.starts_with(PREFIX) {
            match File::open(&path) {
                // SAFETY: plain syscall on a descriptor we own; the lock
                // goes with the descriptor at the end of this block.
                Ok(f) => unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 },
                Err(_) => false,
            }
        } else {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600)
        };
        if stale {
            tracing::debug!("removing stale staging directory {}", path.display());
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}
