use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while isolating or running a step.
///
/// Messages name the failing object and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A system call failed; `what` says which operation on which object.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },

    /// The sandbox could not be set up inside the helper (mounts, cwd, user).
    /// The step did not run.
    #[error("{0}")]
    Setup(String),

    /// The helper process could not be started.
    #[error("starting the sandbox helper {exe}: {source} (is it a berth binary that calls berth_sandbox::helper_main_if_requested() first in main()?)")]
    HelperSpawn {
        exe: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The helper ended without reporting how the step ended.
    #[error("the sandbox helper {exe} ended without reporting a result ({status}); was it started by berth_sandbox::run()?")]
    HelperDied { exe: PathBuf, status: String },

    /// A uid/gid the step or a layer needs is outside the user namespace's map.
    #[error("{what} {id} is not mapped in berth's user namespace (only {mapped}); install uidmap and add a range for your user to /etc/subuid and /etc/subgid (e.g. `{user}:100000:65536`)")]
    UnmappedId {
        what: &'static str,
        id: u32,
        mapped: String,
        user: String,
    },

    /// Not enough privilege to create the namespaces.
    #[error("{0}")]
    Unsupported(String),

    /// The spec is invalid (empty args, relative paths that do not exist, ...).
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
}

impl SandboxError {
    pub(crate) fn sys(what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        SandboxError::Sys {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn last_os(what: impl Into<String>) -> Self {
        Self::sys(what, io::Error::last_os_error())
    }
}

pub(crate) type Result<T, E = SandboxError> = std::result::Result<T, E>;

impl From<nix::Error> for SandboxError {
    fn from(e: nix::Error) -> Self {
        SandboxError::sys("system call", io::Error::from(e))
    }
}
