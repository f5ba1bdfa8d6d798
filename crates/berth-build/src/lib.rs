//! `berth build`: Dockerfile -> stage graph -> cached, parallel, sandboxed
//! steps -> an OCI image in the local store.
//!
//! - [`plan`]: parse, pick the stages the target reaches, global ARGs.
//! - [`solver`]: runs those stages concurrently (each waits for the stages
//!   it reads from), under a limit of parallel steps.
//! - [`stage`]: applies one stage's instructions in order: cache lookup by
//!   content-based key, else run (RUN in the sandbox, COPY/ADD/WORKDIR with
//!   confined file operations on an overlay), then diff the upper directory
//!   into a layer.
//! - [`cache`]: keys and the persistent cache index; [`snapshots`]: unpacked
//!   layers and per-step upper directories; [`image`]: base image resolution
//!   and the built image as a copy source for every output.
//!
//! Invariant: a failed build tags nothing; everything it wrote before
//! failing is complete content (blobs, snapshots, cache records) that a
//! later build may reuse or `berth gc` may remove.

pub mod cache;
pub mod copy;
pub mod fsops;
pub mod heredoc;
pub mod image;
pub mod lower;
pub mod mounts;
pub mod ops;
pub mod plan;
pub mod progress;
pub mod prune;
pub mod remote_cache;
pub mod remote_source;
pub mod snapshots;
pub mod solver;
pub mod stage;
pub mod time;
pub mod users;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use berth_dockerfile::LintWarning;
pub use image::{BuiltImage, LocalRepos, MediaTypes};
pub use progress::{Event, Progress};
pub use solver::{build, BuildResult};

/// `os/arch[/variant]` of the image being built (berth-copy's, so base
/// image pulls and outputs share it).
pub use berth_copy::Platform;

/// The machine berth runs on, in OCI's names.
pub fn host_platform() -> Platform {
    let architecture = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    Platform {
        os: "linux".into(),
        architecture: architecture.into(),
        variant: (architecture == "arm").then(|| "v7".to_string()),
    }
}

/// Network for RUN steps (`--network`, `RUN --network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// An isolated network namespace with outbound access through
    /// slirp4netns (BuildKit's rootless default); the host's loopback is
    /// out of reach. Where slirp4netns cannot run, loopback only, with a
    /// warning naming the fix.
    #[default]
    Default,
    None,
    Host,
}

impl NetworkMode {
    pub fn parse(s: &str) -> std::result::Result<NetworkMode, String> {
        match s {
            "default" | "" => Ok(NetworkMode::Default),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(format!(
                "network mode {other:?} is not one of default, none, host"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Default => "default",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        }
    }
}

/// Layer compression of the build's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    Gzip,
    Zstd,
    Uncompressed,
}

/// Everything a build needs.
#[derive(Clone)]
pub struct BuildOptions {
    /// The local root (content store, snapshots, cache).
    pub root: PathBuf,
    /// The build context directory (`None` for a Dockerfile from stdin
    /// without context).
    pub context: Option<PathBuf>,
    /// Dockerfile contents and the name errors refer to it by.
    pub dockerfile: String,
    pub dockerfile_name: String,
    /// Where the Dockerfile lives (for `<Dockerfile>.dockerignore`).
    pub dockerfile_path: Option<PathBuf>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub no_cache: bool,
    pub pull: bool,
    pub network: NetworkMode,
    /// `--allow network.host`: the entitlement BuildKit requires before a
    /// step may share the host's network namespace.
    pub allow_network_host: bool,
    pub platform: Platform,
    /// Steps run at once.
    pub jobs: usize,
    pub source_date_epoch: Option<i64>,
    pub compression: LayerCompression,
    pub media_types: MediaTypes,
    /// Plain HTTP for registries named in FROM.
    pub insecure: bool,
    /// The berth binary re-executed as the sandbox helper.
    pub helper_exe: PathBuf,
    /// Whether the full 0..65536 id range is mapped (rootless with uidmap).
    pub full_id_range: bool,
    pub progress: Progress,
    pub local: LocalRepos,
    pub blobs: berth_store::BlobStore,
    /// `--secret`: where each secret's value comes from (read only when a
    /// RUN mounts it; never stored in the options).
    pub secrets: Vec<mounts::SecretSource>,
    /// `--ssh`: agent sockets or key files to forward.
    pub ssh: Vec<mounts::SshSource>,
    /// `--cache-from` / `--cache-to` (and `BUILDKIT_INLINE_CACHE`).
    pub remote_cache: Option<Arc<remote_cache::RemoteCache>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A Dockerfile problem, rendered with file:line:column.
    #[error("{0}")]
    Dockerfile(String),
    #[error("{0}")]
    Base(String),
    #[error("{0}")]
    Context(String),
    /// A step failed (RUN exit code, COPY of a missing file...).
    #[error("{0}")]
    Step(String),
    #[error("layer: {0}")]
    Layer(String),
    #[error("store: {0}")]
    Store(String),
    #[error("sandbox: {0}")]
    Sandbox(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

impl From<Arc<BuildError>> for BuildError {
    fn from(e: Arc<BuildError>) -> Self {
        match Arc::try_unwrap(e) {
            Ok(e) => e,
            Err(shared) => BuildError::Other(shared.to_string()),
        }
    }
}
