//! berth's registry client: Docker credentials (config file and
//! `docker-credential-*` helpers), the Basic/Bearer authentication flows,
//! and the distribution API of one registry ([`RegistryClient`]).
//!
//! - [`credentials`]: reading, storing and erasing credentials like Docker.
//! - [`challenge`]: `WWW-Authenticate` parsing.
//! - `auth`: the token flow and cache (internal; [`RegistryClient`] uses it).
//! - [`client`]: the requests, with retries, digest and size verification.
//! - [`settings`]: timeouts (and the parsing of sizes and durations) from
//!   the environment.

mod auth;
pub mod challenge;
pub mod client;
pub mod credentials;
mod error;
pub mod fetch;
pub mod settings;

pub use client::{
    referrers_tag, Blob, BlobStream, ClientConfig, Manifest, ManifestInfo, PushedManifest,
    RegistryClient, DEFAULT_MANIFEST_ACCEPT, MAX_MANIFEST_BYTES,
};
pub use credentials::{Credential, CredentialError, DockerConfig};
pub use error::{Error, Result};
pub use settings::Timeouts;
