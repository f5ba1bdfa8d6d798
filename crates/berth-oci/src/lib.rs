//! The OCI content model shared by every berth crate: digests and hashing,
//! media types, the repository/tag grammar, and the references a manifest makes.
//!
//! Nothing here does I/O; everything is pure parsing and validation, which is
//! why the fuzz targets live against this crate.

pub mod digest;
pub mod image;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod reference;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use image::{ContainerConfig, Healthcheck, History, ImageConfig, RootFs};
pub use manifest::{Descriptor, ManifestError, ManifestKind, ParsedManifest};
pub use name::{validate_repository, validate_tag, NameError, Reference};
pub use reference::{ImageRef, ReferenceError};
