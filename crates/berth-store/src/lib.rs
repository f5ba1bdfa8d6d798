//! berth's local root: the content store (`blobs/`, `ingest/`) and the
//! metadata database (`meta.redb`), plus the repository operations built on
//! them that the registry, and later the builder and `berth pull`, share.
//!
//! Layout of a root:
//! ```text
//! <root>/berth.lock          advisory lock: shared by servers, exclusive for gc
//! <root>/meta.redb           metadata database
//! <root>/blobs/sha256/<hex>  committed blobs (complete, verified, durable)
//! <root>/ingest/uploads/<id> data of open upload sessions
//! <root>/ingest/tmp/         scratch for monolithic writes, emptied on open
//! <root>/meta.owner          pid and command of the process holding meta.redb
//! <root>/serve.sock          `berth serve`'s private local endpoint
//! ```
//!
//! Only one process can open `meta.redb`. The blob store works without it
//! ([`BlobStore::open`]): blobs are plain files committed by rename, so any
//! number of processes may write blobs at once, and a process that does not
//! hold the database sends only metadata to the one that does (`berth serve`
//! over [`SOCKET_NAME`]).

pub mod blobs;
pub mod fsck;
pub mod gc;
pub mod meta;
pub mod repo;
pub mod uploads;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use berth_oci::Digest;
use nix::fcntl::{Flock, FlockArg};

pub use blobs::{BlobStore, BlobWriter, StagedBlob};
pub use fsck::{FsckOptions, FsckReport};
pub use gc::{GcOptions, GcReport};
pub use meta::Meta;
pub use repo::Page;
pub use repo::{ManifestEntry, PutManifest, PutManifestOutcome};
pub use uploads::{
    ExpiredUpload, Session, SessionCaps, SessionWriter, SweepReport, UploadRecord, Uploads,
    DEFAULT_MAX_OPEN_FILES,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("metadata database error: {0}")]
    Db(String),
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content size {actual} does not match the expected size {expected}")]
    SizeInvalid { expected: u64, actual: u64 },
    #[error("blob {0} is not known to this repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not known to this repository")]
    ManifestUnknown(String),
    #[error("manifest references {0}, which is not in this repository: push it first")]
    ManifestBlobUnknown(Digest),
    #[error("manifest is invalid: {0}")]
    ManifestInvalid(String),
    #[error(
        "manifest {digest} is referenced by index {index} in this repository: \
         delete the index first (deleting the child would break it)"
    )]
    ManifestReferenced { digest: Digest, index: Digest },
    #[error("repository {0} is not known")]
    NameUnknown(String),
    #[error("upload {0} is not known: it was finished, cancelled, expired or never started")]
    UploadUnknown(String),
    #[error("{}", too_many_uploads(*.limit, *.per_client))]
    TooManyUploads { limit: usize, per_client: bool },
    #[error("the root {0} is in use by another berth process ({1})")]
    Locked(PathBuf, LockReason),
}

fn too_many_uploads(limit: usize, per_client: bool) -> String {
    if per_client {
        format!(
            "this client has {limit} open upload sessions, the most the registry allows: \
             finish or cancel some (DELETE their Location) or wait until they expire"
        )
    } else {
        format!("the registry has {limit} open upload sessions, the most it allows: retry later")
    }
}

/// Why a root could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockReason {
    /// `berth gc` holds the root exclusively.
    Gc,
    /// Exclusive access was asked for, but others have the root open.
    InUse,
    /// Another process holds the metadata database (a server or a command).
    Database,
}

impl std::fmt::Display for LockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockReason::Gc => "berth gc is running; wait for it to finish",
            LockReason::InUse => "a server or another command has it open; stop it first",
            LockReason::Database => "another process holds its metadata database",
        })
    }
}

/// File name of `berth serve`'s private local endpoint inside a root.
pub const SOCKET_NAME: &str = "serve.sock";

/// Path prefix of the local endpoint's admin route that links a blob
/// already in `blobs/` into a repository: `POST {LINK_ROUTE}<repo>/<digest>`.
pub const LINK_ROUTE: &str = "/_berth/v1/link/";

const OWNER_FILE: &str = "meta.owner";

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(redb::Error::from(e).to_string())
            }
        }
    )*};
}
from_redb!(
    redb::TableError,
    redb::StorageError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError
);

/// How a process shares a root with others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Servers and clients: many may use the root at once.
    Shared,
    /// Offline maintenance (gc): nobody else may have it open.
    Exclusive,
}

/// An opened local root.
pub struct Store {
    root: PathBuf,
    pub blobs: BlobStore,
    pub meta: Meta,
    pub uploads: Uploads,
    _lock: RootLock,
}

/// The advisory lock on `<root>/berth.lock`: shared by everything that uses
/// a root (servers, commands, processes writing blobs beside a server),
/// exclusive for gc, which deletes blobs nobody references *yet*.
pub struct RootLock {
    _file: Flock<File>,
}

impl RootLock {
    pub fn acquire(root: &Path, access: Access) -> Result<RootLock, StoreError> {
        make_private(root)?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("berth.lock"))?;
        let arg = match access {
            Access::Shared => FlockArg::LockSharedNonblock,
            Access::Exclusive => FlockArg::LockExclusiveNonblock,
        };
        let file = Flock::lock(lock_file, arg).map_err(|(_, _)| {
            StoreError::Locked(
                root.to_path_buf(),
                match access {
                    Access::Shared => LockReason::Gc,
                    Access::Exclusive => LockReason::InUse,
                },
            )
        })?;
        Ok(RootLock { _file: file })
    }
}

impl Store {
    pub fn open(root: &Path, access: Access) -> Result<Store, StoreError> {
        let lock = RootLock::acquire(root, access)?;
        let blobs = BlobStore::open(root)?;
        let meta = Meta::open(&root.join("meta.redb")).map_err(|e| match e {
            StoreError::Locked(_, why) => StoreError::Locked(root.to_path_buf(), why),
            other => other,
        })?;
        // Monolithic writes in flight when a previous process died. Writers
        // of other live processes (beside a server) hold a lock on their
        // file and are skipped.
        blobs.clean_tmp()?;
        write_owner(root);
        let records = uploads::read_records(&meta.read()?.open_table(meta::UPLOADS)?)?;
        let uploads = Uploads::new(blobs.clone(), records.into_iter().map(|(_, r)| r).collect());
        Ok(Store {
            root: root.to_path_buf(),
            blobs,
            meta,
            uploads,
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// Creates `root` (0700) or takes group and other access away from it.
///
/// A root holds unpacked layers with their setuid binaries and device nodes
/// intact, and build snapshots: any local user who could traverse it could
/// run them. Like `/var/lib/docker` (0710) and containerd's root (0700),
/// only the owner gets in; a root made 0710 on purpose is kept so.
pub fn make_private(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match fs::metadata(root) {
        Ok(m) => {
            let mode = m.mode() & 0o7777;
            // 0710 (a group that may traverse, as Docker with userns-remap)
            // is a deliberate choice; anything more open becomes 0700.
            let private = 0o700;
            if mode & 0o067 != 0 && m.uid() == nix::unistd::geteuid().as_raw() {
                fs::set_permissions(root, fs::Permissions::from_mode(private))?;
                tracing::info!(
                    root = %root.display(),
                    "made the root private (mode {mode:o} -> {private:o})"
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)?;
            }
            match fs::DirBuilder::new().mode(0o700).create(root) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

/// Records who holds the database, so a process that finds it locked can
/// name the holder. Best effort: the message is the only user. Only the
/// command name is kept (never its arguments, which may carry build-arg
/// values), in a file only the owner can read.
fn write_owner(root: &Path) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(OWNER_FILE);
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path);
    if let Ok(mut f) = file {
        // Files from older versions were created world-readable.
        let _ = f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
        let _ = write!(f, "{}\n{}\n", std::process::id(), command_name());
    }
}

/// `berth SUBCOMMAND`: the program's name and the first argument that looks
/// like a subcommand (lowercase letters and dashes), nothing after it.
fn command_name() -> String {
    let mut args = std::env::args();
    let prog = args
        .next()
        .map(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(a)
        })
        .unwrap_or_else(|| "berth".into());
    let sub = args.find(|a| {
        !a.is_empty()
            && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            && !a.starts_with('-')
    });
    match sub {
        Some(s) => format!("{prog} {s}"),
        None => prog,
    }
}

/// "pid N: COMMAND" of the live process that last opened `root`'s
/// database, if it is still running.
pub fn database_holder(root: &Path) -> Option<String> {
    let text = fs::read_to_string(root.join(OWNER_FILE)).ok()?;
    let (pid, cmd) = text.split_once('\n')?;
    let pid: u32 = pid.trim().parse().ok()?;
    if pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    Some(format!("pid {pid}: {}", cmd.trim()))
}

/// `$XDG_DATA_HOME/berth`, `~/.local/share/berth`, or `/var/lib/berth` for root.
pub fn default_root() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/berth");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("berth");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/berth"),
        None => PathBuf::from("/var/lib/berth"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_store_on_the_root_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path(), Access::Shared).unwrap();
        // redb refuses a second handle, even within one process.
        match Store::open(dir.path(), Access::Shared) {
            Err(StoreError::Locked(_, LockReason::Database)) => {}
            Err(e) => panic!("unexpected error: {e}"),
            Ok(_) => panic!("opened twice"),
        }
        // The holder is this process, which is not reported as "another".
        assert_eq!(database_holder(dir.path()), None);
        let owner = fs::read_to_string(dir.path().join(OWNER_FILE)).unwrap();
        assert!(owner.starts_with(&format!("{}\n", std::process::id())));
        // A blob store beside it works.
        let blobs = BlobStore::open(dir.path()).unwrap();
        let mut w = blobs.writer().unwrap();
        w.write(b"x").unwrap();
        w.commit(&Digest::sha256_of(b"x"), None).unwrap();
    }

    #[test]
    fn gc_excludes_shared_users() {
        let dir = tempfile::tempdir().unwrap();
        let shared = RootLock::acquire(dir.path(), Access::Shared).unwrap();
        assert!(matches!(
            Store::open(dir.path(), Access::Exclusive),
            Err(StoreError::Locked(_, LockReason::InUse))
        ));
        drop(shared);
        let _gc = Store::open(dir.path(), Access::Exclusive).unwrap();
        assert!(matches!(
            RootLock::acquire(dir.path(), Access::Shared),
            Err(StoreError::Locked(_, LockReason::Gc))
        ));
    }
}
