//! What to run and how to isolate it. The spec travels to the helper as JSON
//! over a pipe, so it derives serde; nothing in it is ever put in argv, the
//! environment or a file (it carries secret contents).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The default `PATH` when the step's environment has none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One process to run in a fresh sandbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunSpec {
    /// The berth binary to re-execute as the helper (`/proc/self/exe` by
    /// default). It must call [`crate::helper_main_if_requested`] first.
    pub helper_exe: PathBuf,
    pub rootfs: Rootfs,
    /// `args[0]` without a `/` is looked up in the step's `PATH` inside the root.
    pub args: Vec<String>,
    /// Exactly the environment of the step (`KEY=value`).
    pub env: Vec<String>,
    /// Absolute path inside the root; it must exist.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    /// Contents bind-mounted at `/etc/hosts` (left as in the image when `None`).
    pub hosts: Option<Vec<u8>>,
    /// Contents bind-mounted at `/etc/resolv.conf` (left as in the image when `None`).
    pub resolv_conf: Option<Vec<u8>>,
    pub network: Network,
    /// Mounted in order of target depth (parents before children).
    pub mounts: Vec<Mount>,
    /// What the step may do to the kernel: capabilities, seccomp,
    /// no_new_privs, masked paths. Docker's defaults unless changed.
    #[serde(default)]
    pub security: Security,
    /// Mount the root filesystem read-only (`docker run --read-only`);
    /// `/proc`, `/dev`, `/sys` and the step's mounts keep their own flags.
    #[serde(default)]
    pub readonly_root: bool,
    /// The seccomp program for `security`, compiled ahead by
    /// [`crate::compile_seccomp`] (a caller that runs many processes caches
    /// it; compiling takes ~15 ms). `None`: [`crate::run`] compiles it, once
    /// per process and capability set.
    #[serde(default)]
    pub seccomp_bpf: Option<Vec<u8>>,
    /// Share namespaces of a running process (another container's main
    /// process: `--network container:NAME`, `--pid container:NAME`)
    /// instead of creating them. The caller must be in that process's user
    /// namespace ([`crate::enter_namespace_of`]). A joined network needs
    /// [`Network::Host`] here (nothing is set up on it).
    #[serde(default)]
    pub join: Option<Join>,
}

/// Namespaces of process `pid` that a step joins.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Join {
    pub pid: u32,
    pub net: bool,
    pub pid_ns: bool,
}

impl RunSpec {
    /// A spec with BuildKit's defaults: root user, `/` as cwd, host network,
    /// hostname `buildkitsandbox`, `PATH` only.
    pub fn new(rootfs: Rootfs, args: Vec<String>) -> Self {
        RunSpec {
            helper_exe: PathBuf::from("/proc/self/exe"),
            rootfs,
            args,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: PathBuf::from("/"),
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            hostname: "buildkitsandbox".to_string(),
            hosts: None,
            resolv_conf: None,
            network: Network::Host,
            mounts: Vec::new(),
            security: Security::default(),
            readonly_root: false,
            seccomp_bpf: None,
            join: None,
        }
    }
}

/// The root filesystem of the step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Rootfs {
    /// Overlay of unpacked layers; the step's writes land in `upper`.
    /// Always mounted with `userxattr` (opaque dirs are `user.overlay.opaque`,
    /// whiteouts char 0/0).
    Overlay {
        /// Topmost first.
        lowers: Vec<PathBuf>,
        upper: PathBuf,
        work: PathBuf,
    },
    /// A plain directory, bind-mounted read-write (copy-based fallback).
    Dir(PathBuf),
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum Network {
    /// The host's (or the builder's) network namespace.
    #[default]
    Host,
    /// A new network namespace with only `lo`, up.
    None,
    /// A new network namespace with outbound access through `slirp4netns`
    /// (BuildKit's rootless default): `tap0` = 10.0.2.100/24, gateway
    /// 10.0.2.2, DNS [`SLIRP_DNS`]. The host's loopback is not reachable.
    /// Check [`crate::isolated_network`] before asking for it.
    Isolated,
}

/// The DNS forwarder slirp4netns offers an [`Network::Isolated`] step.
pub const SLIRP_DNS: &str = "10.0.2.3";

/// Docker's default capability set for containers (and BuildKit's for RUN),
/// as capability numbers.
pub const DEFAULT_CAPABILITIES: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// The confinement of a step. `Default` is what Docker gives a container
/// (and BuildKit a RUN step), plus `no_new_privs`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Security {
    /// Capabilities kept in the bounding set (numbers, see `capabilities(7)`).
    pub capabilities: Vec<u32>,
    /// Docker's default seccomp profile (adjusted to `capabilities`, as
    /// Docker does); `false` = unconfined.
    pub seccomp: bool,
    /// `PR_SET_NO_NEW_PRIVS`: setuid binaries and file capabilities grant
    /// nothing.
    pub no_new_privs: bool,
    /// Docker's masked (`/proc/kcore`, `/sys/firmware`, ...) and read-only
    /// (`/proc/sys`, `/proc/sysrq-trigger`, ...) paths.
    pub mask_paths: bool,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            capabilities: DEFAULT_CAPABILITIES.to_vec(),
            seccomp: true,
            no_new_privs: true,
            mask_paths: true,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path inside the root. Missing targets are created as stubs
    /// and removed after the step.
    pub target: PathBuf,
    pub kind: MountKind,
}

/// `Debug` never shows a `File`'s contents (secrets).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum MountKind {
    /// A directory or file of the builder's filesystem.
    Bind {
        source: PathBuf,
        readonly: bool,
    },
    /// A read-write view of `source` whose writes are thrown away.
    BindOverlay {
        source: PathBuf,
    },
    Tmpfs {
        size: Option<u64>,
    },
    /// One read-only file held in memory only (secrets).
    File {
        contents: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A unix socket (ssh agent).
    Socket {
        source: PathBuf,
    },
}

impl std::fmt::Debug for MountKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountKind::Bind { source, readonly } => f
                .debug_struct("Bind")
                .field("source", source)
                .field("readonly", readonly)
                .finish(),
            MountKind::BindOverlay { source } => f
                .debug_struct("BindOverlay")
                .field("source", source)
                .finish(),
            MountKind::Tmpfs { size } => f.debug_struct("Tmpfs").field("size", size).finish(),
            MountKind::File {
                contents,
                mode,
                uid,
                gid,
            } => f
                .debug_struct("File")
                .field("contents", &format_args!("<{} bytes>", contents.len()))
                .field("mode", &format_args!("{mode:o}"))
                .field("uid", uid)
                .field("gid", gid)
                .finish(),
            MountKind::Socket { source } => {
                f.debug_struct("Socket").field("source", source).finish()
            }
        }
    }
}

/// Which stream a chunk of step output came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_file_contents() {
        let mut spec = RunSpec::new(Rootfs::Dir("/r".into()), vec!["true".into()]);
        spec.mounts.push(Mount {
            target: "/run/secrets/x".into(),
            kind: MountKind::File {
                contents: b"s3cr3t-value".to_vec(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        });
        let shown = format!("{spec:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<12 bytes>"), "{shown}");
    }
}
