//! Which device nodes a step may open.
//!
//! Two layers, as the issue of device access has two halves:
//! * every filesystem the step sees is mounted `nodev` except the nodes
//!   bound into its `/dev` (see `helper.rs`), so a node made by `mknod` (as
//!   root, with `CAP_MKNOD`) or brought by a layer cannot be opened. This
//!   works rootless and on any cgroup setup.
//! * as real root where the cgroup v1 `devices` controller is mounted, the
//!   step also runs in a device cgroup with Docker's default allowlist, as
//!   runc does (cgroup v2 would need an eBPF program; `nodev` covers it).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Docker's (runc's) default device rules: mknod of anything, read/write of
/// the standard nodes and ptys only.
const ALLOWED: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:1 rwm",   // console
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts
];

const HIERARCHY: &str = "/sys/fs/cgroup/devices";

/// A device cgroup for one step, removed when dropped.
pub(crate) struct DeviceCgroup {
    dir: PathBuf,
}

impl DeviceCgroup {
    /// A new device cgroup with the default rules, or `None` where none can
    /// be made (not real root, no v1 `devices` controller, read-only
    /// cgroupfs): the `nodev` mounts still apply.
    pub(crate) fn create() -> Option<DeviceCgroup> {
        if !nix::unistd::geteuid().is_root() || !real_root() {
            return None;
        }
        let parent = Path::new(HIERARCHY).join(own_cgroup()?.trim_start_matches('/'));
        if !parent.join("devices.deny").exists() {
            return None;
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "berth-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        fs::create_dir(&dir).ok()?;
        let cg = DeviceCgroup { dir };
        let ok = write(&cg.dir.join("devices.deny"), "a")
            && ALLOWED
                .iter()
                .all(|rule| write(&cg.dir.join("devices.allow"), rule));
        ok.then_some(cg)
    }

    /// Put `pid` (the helper, before it starts the step) into the cgroup.
    pub(crate) fn add(&self, pid: u32) -> bool {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }
}

impl Drop for DeviceCgroup {
    fn drop(&mut self) {
        // The step's processes are gone (the helper was reaped); their exit
        // may still be settling in the cgroup for a moment.
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

fn write(path: &Path, value: &str) -> bool {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .is_ok()
}

/// The process's path in the v1 `devices` hierarchy.
fn own_cgroup() -> Option<String> {
    let text = fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "devices")
            .then(|| path.to_string())
    })
}

/// Root of the initial user namespace (a device cgroup is not delegated to
/// a user namespace).
fn real_root() -> bool {
    fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            let f: Vec<&str> = m.split_whitespace().collect();
            f == ["0", "0", "4294967295"]
        })
        .unwrap_or(false)
}

/// Leftovers of berth processes that died without cleaning up (`kill -9`):
/// empty `berth-<pid>-N` cgroups of processes that no longer exist.
pub(crate) fn remove_stale() {
    let Some(own) = own_cgroup() else { return };
    let parent = Path::new(HIERARCHY).join(own.trim_start_matches('/'));
    let Ok(entries) = fs::read_dir(&parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("berth-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_well_formed() {
        for r in ALLOWED {
            let f: Vec<&str> = r.split(' ').collect();
            assert_eq!(f.len(), 3, "{r}");
            assert!(matches!(f[0], "a" | "b" | "c"), "{r}");
            assert!(f[1].contains(':'), "{r}");
        }
    }
}
