//! Moving images between registries, OCI layouts and the local store
//! (`berth copy`, `pull`, `push`).
//!
//! - [`location`]: `docker://REF`, `oci:PATH[:TAG]`, `local:REPO[:TAG]`,
//!   `oci-archive:PATH[:TAG]`, `docker-archive:PATH[:REF]`.
//! - [`archive`]: reading and writing those tar archives.
//! - [`endpoint`]: the [`Endpoint`] trait and its three implementations.
//! - [`copy`]: the copy itself: platform selection, parallel streaming
//!   blob transfers, mounts, manifests byte-exact (children before indexes).
//! - [`staging`]: private scratch directories under `<root>/ingest/` for
//!   archives being read, and the cancellation a signal sets.
//!
//! This is its own crate rather than part of berth-client because it joins
//! the client with berth-store and berth-layout; berth-client stays a pure
//! registry client.

pub mod archive;
pub mod copy;
pub mod endpoint;
pub mod location;
pub mod staging;

pub use archive::{ArchiveImage, ArchiveKind, ArchiveReader, ArchiveWriter};
pub use archive::{ArchiveLimits, DEFAULT_MAX_ARCHIVE_BYTES, MAX_ARCHIVE_BYTES_ENV};
pub use copy::{
    copy, copy_endpoints, open, resolve_location, Event, Options, Platform, MAX_INDEX_DEPTH,
    MAX_LAYERS,
};
pub use endpoint::{Endpoint, Fetched, Target};
pub use location::{Location, LocationError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(Box<berth_client::Error>),
    #[error(transparent)]
    Store(Box<berth_store::StoreError>),
    #[error(transparent)]
    Layout(Box<berth_layout::LayoutError>),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("{0}")]
    NotFound(String),
    /// Content whose size is not what its descriptor declares (exit code 5,
    /// like a digest mismatch).
    #[error("{0}")]
    SizeMismatch(String),
    /// Input past one of berth's limits (layers per image, index nesting,
    /// archive expansion): refused, with the limit and how to raise it when
    /// it can be.
    #[error("{0}")]
    Limit(String),
    /// Stopped by SIGINT/SIGTERM ([`staging::cancel`]).
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<berth_client::Error> for Error {
    fn from(e: berth_client::Error) -> Self {
        Error::Client(Box::new(e))
    }
}

impl From<berth_store::StoreError> for Error {
    fn from(e: berth_store::StoreError) -> Self {
        Error::Store(Box::new(e))
    }
}

impl From<berth_layout::LayoutError> for Error {
    fn from(e: berth_layout::LayoutError) -> Self {
        Error::Layout(Box::new(e))
    }
}
