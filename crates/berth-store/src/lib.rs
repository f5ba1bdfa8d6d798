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
//! ```

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

pub use blobs::{BlobStore, BlobWriter};
pub use fsck::FsckReport;
pub use gc::{GcOptions, GcReport};
pub use meta::Meta;
pub use repo::{ManifestEntry, PutManifest, PutManifestOutcome};
pub use uploads::{UploadRecord, Uploads};

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
    #[error("repository {0} is not known")]
    NameUnknown(String),
    #[error("upload {0} is not known: it was finished, cancelled or never started")]
    UploadUnknown(String),
    #[error("the root {0} is in use by another berth process ({1}); stop it first")]
    Locked(PathBuf, &'static str),
}

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
    _lock: Flock<File>,
}

impl Store {
    pub fn open(root: &Path, access: Access) -> Result<Store, StoreError> {
        fs::create_dir_all(root)?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("berth.lock"))?;
        let arg = match access {
            Access::Shared => FlockArg::LockSharedNonblock,
            Access::Exclusive => FlockArg::LockExclusiveNonblock,
        };
        let lock = Flock::lock(lock_file, arg).map_err(|(_, _)| {
            StoreError::Locked(
                root.to_path_buf(),
                match access {
                    Access::Shared => "berth gc is running",
                    Access::Exclusive => "a server or another command has it open",
                },
            )
        })?;
        let blobs = BlobStore::open(root)?;
        // Monolithic writes in flight when a previous process died.
        for entry in fs::read_dir(blobs.tmp_dir())? {
            let _ = fs::remove_file(entry?.path());
        }
        let meta = Meta::open(&root.join("meta.redb")).map_err(|e| match e {
            StoreError::Locked(_, why) => StoreError::Locked(root.to_path_buf(), why),
            other => other,
        })?;
        let uploads = Uploads::new(blobs.clone());
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
