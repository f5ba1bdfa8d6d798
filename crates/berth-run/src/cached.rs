//! Per-root caches for the start path, each keyed so that a stale entry is
//! never used: the seccomp program by the berth binary that compiled it
//! (size, mtime, inode of `/proc/self/exe`), the overlay probe by the
//! kernel release. A missing or unreadable entry is recomputed.

use std::fs;
use std::os::unix::fs::MetadataExt;

use berth_build::snapshots::{Snapshots, Snapshotter};

use crate::Paths;

fn exe_key() -> Option<String> {
    let m = fs::metadata("/proc/self/exe").ok()?;
    Some(format!(
        "{:x}-{:x}-{:x}",
        m.size(),
        m.mtime_nsec() ^ m.mtime(),
        m.ino()
    ))
}

fn kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn store(paths: &Paths, name: &str, bytes: &[u8]) {
    let dir = paths.cache();
    if fs::create_dir_all(&dir).is_ok() {
        let _ = crate::container::write_atomic(&dir.join(name), bytes);
    }
}

/// Docker's default seccomp profile for the default capabilities,
/// compiled once per berth binary; `None` lets the helper compile it.
pub fn seccomp_bpf(paths: &Paths) -> Option<Vec<u8>> {
    let name = format!("seccomp-{}.bpf", exe_key()?);
    if let Ok(b) = fs::read(paths.cache().join(&name)) {
        if !b.is_empty() && b.len() % 8 == 0 {
            return Some(b);
        }
    }
    let bpf = berth_sandbox::compile_seccomp(berth_sandbox::DEFAULT_CAPABILITIES).ok()?;
    // Old binaries' programs go.
    if let Ok(d) = fs::read_dir(paths.cache()) {
        for e in d.flatten() {
            if e.file_name().to_string_lossy().starts_with("seccomp-") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    store(paths, &name, &bpf);
    Some(bpf)
}

/// The builder's snapshotter choice (overlay or the copy fallback),
/// probed (a test mount) once per kernel instead of at every create.
/// `BERTH_SNAPSHOTTER` still decides when set.
pub fn snapshotter(paths: &Paths, snapshots: &Snapshots) -> Snapshotter {
    if std::env::var_os("BERTH_SNAPSHOTTER").is_some() {
        return snapshots.snapshotter();
    }
    let name = "snapshotter";
    let kernel = kernel();
    if let Ok(text) = fs::read_to_string(paths.cache().join(name)) {
        match text.split_once(' ') {
            Some((k, "overlay")) if k == kernel => return Snapshotter::Overlay,
            Some((k, "native")) if k == kernel => return Snapshotter::Native,
            _ => {}
        }
    }
    let s = snapshots.snapshotter();
    store(paths, name, format!("{kernel} {}", s.as_str()).as_bytes());
    s
}
