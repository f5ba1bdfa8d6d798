//! Rootless isolation for build steps (and later `berth run`).
//!
//! * [`helper_main_if_requested`]: first call in `main()`; runs the
//!   re-executed sandbox helper when `argv[1]` is `__berth-sandbox`.
//! * [`enter_build_namespace`]: next call, before any thread exists. As root
//!   a private mount namespace; as a user a user+mount namespace with ids
//!   mapped through `newuidmap`/`newgidmap` (or just the user's own id).
//! * [`run`]: one step in new mount/pid/ipc/uts(/net) namespaces over an
//!   overlay root, with `/proc`, `/dev`, `/sys`, `/etc/hosts`,
//!   `/etc/resolv.conf` and the step's mounts, after `pivot_root`; confined
//!   like a Docker container ([`Security`]: capabilities, seccomp,
//!   no_new_privs, masked paths; devices by `nodev` and a device cgroup);
//!   its network is the host's, none, or isolated with outbound access
//!   through slirp4netns ([`isolated_network`] says whether it can be had).
//! * [`mount_overlay`]: an overlay in the builder's own mount namespace
//!   (COPY/ADD), any number of layers.

mod devices;
mod error;
mod exec;
mod helper;
mod network;
mod overlay;
mod run;
mod seccomp;
mod spec;
mod stubs;
mod sys;
mod userns;

pub use error::SandboxError;
pub use exec::{enter_namespace_of, exec_in, join_user_namespace};
pub use helper::{helper_main_if_requested, HELPER_ARG};
pub use network::isolated_network;
pub use overlay::{mount_overlay, MountGuard};
pub use run::{run, run_observed};
pub use seccomp::compile_seccomp;
pub use spec::{
    Join, Mount, MountKind, Network, OutputStream, Rootfs, RunSpec, Security, DEFAULT_CAPABILITIES,
    DEFAULT_PATH, SLIRP_DNS,
};
pub use stubs::resolve_in_root;
pub use userns::{
    enter_build_namespace, enter_build_namespace_with, IdMapping, NamespaceInfo, NamespaceOptions,
    FULL_RANGE_COUNT,
};

/// Hooks for this crate's own tests; not part of the API.
#[doc(hidden)]
pub mod testing {
    use std::path::{Path, PathBuf};

    /// Mount with the pre-6.8 option-string form regardless of the kernel.
    pub fn mount_overlay_legacy(
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), crate::SandboxError> {
        let layers = crate::overlay::OverlayLayers {
            lowers,
            upper,
            work,
        };
        crate::overlay::mount_overlay_at(&layers, target, Path::new("/proc"), true)
    }
}
