//! Daemonless containers for `berth run` and friends (and, later, the Docker
//! Engine API): the CLI parses flags and calls this crate.
//!
//! * [`create()`](create::create): resolves an image of the local store, makes
//!   sure its layers are unpacked as snapshots (the builder's, shared), and
//!   writes the container's config under `<root>/containers/<id>/` with a
//!   fresh upper directory (overlay) or a copied root (the fallback).
//! * [`start()`](supervisor::start): re-executes berth as the container's
//!   supervisor (`berth __berth-supervise`, single-threaded, one per
//!   container, like podman's conmon). It runs the container's process in
//!   berth-sandbox ([`berth_sandbox::run_observed`]), writes its output to a
//!   Docker json-file log, records the state (pids, times, exit code) in the
//!   runtime directory and honours `--rm`.
//! * [`ops`]: `ps`, `stop`, `kill`, `rm`, `wait`, `inspect` read that state;
//!   a supervisor that died (kill -9) shows as exited.
//! * [`exec()`](exec::exec): joins the running container's namespaces
//!   ([`berth_sandbox::exec_in`]); [`cp`]: copies in and out, confined to the
//!   container's root.
//!
//! Namespaces: as an ordinary user, `create`, `start`, `rm` and `cp` run in
//! berth's build namespace (a user namespace with the subordinate ids
//! mapped), which the CLI enters before any thread exists; the supervisor
//! is started from there and stays in it. `exec`, `stop`, `kill` run outside
//! it (they join or signal the container's namespace, which the user owns).

mod cached;
pub mod container;
pub mod cp;
pub mod create;
pub mod exec;
mod forward;
pub mod logs;
mod names;
pub mod ops;
pub mod signals;
pub mod supervisor;
mod time;

use std::path::{Path, PathBuf};

pub use container::{Container, State, Status};
pub use supervisor::{supervisor_main_if_requested, SUPERVISOR_ARG};

/// Enters the namespace a command that creates, starts or removes
/// containers works in: berth's build namespace (rootless: a user
/// namespace with the subordinate ids), or, when the container shares
/// another one's namespaces (`join`, a name or id), that container's user
/// namespace. Call it before any thread exists.
pub fn enter_namespace(paths: &Paths, join: Option<&str>) -> Result<()> {
    let Some(name) = join else {
        return berth_sandbox::enter_build_namespace()
            .map(|_| ())
            .map_err(|e| Error::Failed(format!("setting up berth's namespace: {e}")));
    };
    let c = container::find(paths, name)?;
    let st = c.state(paths);
    if st.status != Status::Running || st.pid == 0 {
        return Err(Error::Conflict(format!(
            "cannot join container {name}: it is not running"
        )));
    }
    berth_sandbox::enter_namespace_of(st.pid)
        .map(|_| ())
        .map_err(|e| Error::Failed(format!("joining container {name}'s namespaces: {e}")))
}

/// What went wrong; the message names the object and, where there is one,
/// the fix. The CLI maps every error to Docker's exit code 125 for `run`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such container (the name or id given is in the message).
    #[error("{0}")]
    NotFound(String),
    /// A name in use, a container in the wrong state.
    #[error("{0}")]
    Conflict(String),
    /// Bad flags or values.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Failed(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where containers live: their configs, upper directories and logs in the
/// local root; their live state (pids) in the runtime directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    /// The runtime directory is `$BERTH_RUNTIME_DIR`, else `/run/berth` as
    /// root, else `$XDG_RUNTIME_DIR/berth`, else `/tmp/berth-run-<uid>`.
    pub fn new(root: PathBuf) -> Paths {
        let run = match std::env::var_os("BERTH_RUNTIME_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ if nix::unistd::geteuid().is_root() => PathBuf::from("/run/berth"),
            _ => match std::env::var_os("XDG_RUNTIME_DIR") {
                Some(d) if !d.is_empty() => Path::new(&d).join("berth"),
                _ => PathBuf::from(format!("/tmp/berth-run-{}", nix::unistd::geteuid())),
            },
        };
        Paths { root, run }
    }

    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.containers().join(id)
    }

    /// `<root>/container-names/<name>`: a symlink to the id, made with
    /// `symlink(2)` so two creates cannot take one name.
    pub fn name_link(&self, name: &str) -> PathBuf {
        self.root.join("container-names").join(name)
    }

    pub fn state_file(&self, id: &str) -> PathBuf {
        self.run.join(format!("{id}.json"))
    }

    /// `<root>/run-cache/`: what every container start would otherwise
    /// recompute (the seccomp program, whether overlayfs mounts here).
    pub fn cache(&self) -> PathBuf {
        self.root.join("run-cache")
    }

    pub fn log_file(&self, id: &str) -> PathBuf {
        self.dir(id).join(format!("{id}-json.log"))
    }
}
