//! `enter_build_namespace`: give `berth build` root powers over its own
//! mounts, as real root or rootless.
//!
//! Rootless follows podman/rootlesskit: a child unshares a user and mount
//! namespace, the parent (still outside) writes the id maps, with the setuid
//! `newuidmap`/`newgidmap` when `/etc/subuid` and `/etc/subgid` give the user
//! a range, else a single `0 -> own uid` mapping written directly. The child
//! continues as root in the namespace; the parent only waits and forwards
//! signals.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SandboxError};
use crate::sys;

/// The ids the builder can use: `0..=65536` when a subordinate range is
/// mapped (or as real root), else only `0`.
pub const FULL_RANGE_COUNT: u32 = 65537;

/// What [`enter_build_namespace`] set up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    /// Running in a user namespace, not as the host's root.
    pub rootless: bool,
    /// Ids `0..=65536` are all mapped, for both uids and gids.
    pub full_id_range: bool,
    /// `(first id inside, count)` ranges of the uid map.
    pub uid_ranges: Vec<(u32, u32)>,
    /// `(first id inside, count)` ranges of the gid map.
    pub gid_ranges: Vec<(u32, u32)>,
    /// The user the namespace belongs to, for error messages.
    pub user: String,
}

impl NamespaceInfo {
    /// Describe the current process's user namespace from `/proc/self/*_map`.
    pub fn current() -> Result<NamespaceInfo> {
        let uid_ranges = read_id_map(Path::new("/proc/self/uid_map"))?;
        let gid_ranges = read_id_map(Path::new("/proc/self/gid_map"))?;
        let full = |r: &[(u32, u32)]| covers(r, 0, FULL_RANGE_COUNT);
        let identity = |r: &[(u32, u32)]| covers(r, 0, u32::MAX);
        Ok(NamespaceInfo {
            rootless: !identity(&uid_ranges),
            full_id_range: full(&uid_ranges) && full(&gid_ranges),
            uid_ranges,
            gid_ranges,
            user: owner_name()?,
        })
    }

    pub fn uid_mapped(&self, uid: u32) -> bool {
        covers(&self.uid_ranges, uid, 1)
    }

    pub fn gid_mapped(&self, gid: u32) -> bool {
        covers(&self.gid_ranges, gid, 1)
    }

    /// A clear error when a step or a layer needs an id outside the map.
    pub fn check_ids(&self, uid: u32, gid: u32) -> Result<()> {
        if !self.uid_mapped(uid) {
            return Err(self.unmapped("uid", uid, &self.uid_ranges));
        }
        if !self.gid_mapped(gid) {
            return Err(self.unmapped("gid", gid, &self.gid_ranges));
        }
        Ok(())
    }

    fn unmapped(&self, what: &'static str, id: u32, ranges: &[(u32, u32)]) -> SandboxError {
        SandboxError::UnmappedId {
            what,
            id,
            mapped: describe_ranges(ranges),
            user: self.user.clone(),
        }
    }
}

pub(crate) fn describe_ranges(ranges: &[(u32, u32)]) -> String {
    let parts: Vec<String> = ranges
        .iter()
        .map(|&(start, count)| match count {
            1 => format!("{start}"),
            _ => format!("{start}..={}", start as u64 + count as u64 - 1),
        })
        .collect();
    if parts.is_empty() {
        "nothing is mapped".into()
    } else {
        format!("{} mapped", parts.join(", "))
    }
}

/// Whether `first..first+count` is mapped, across adjacent ranges (a
/// rootless map is `0` plus `1..=65536` from two different host ranges).
fn covers(ranges: &[(u32, u32)], first: u32, count: u32) -> bool {
    let mut sorted: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(s, c)| (s as u64, s as u64 + c as u64))
        .collect();
    sorted.sort_unstable();
    let (mut pos, end) = (first as u64, first as u64 + count as u64);
    for (s, e) in sorted {
        if s <= pos && pos < e {
            pos = e;
        }
        if pos >= end {
            return true;
        }
    }
    pos >= end
}

/// Parse `/proc/*/uid_map` into `(inside, count)` ranges.
pub(crate) fn parse_id_map(text: &str) -> Vec<(u32, u32)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u32>());
            match (f.next(), f.next(), f.next()) {
                (Some(Ok(inside)), Some(Ok(_)), Some(Ok(count))) => Some((inside, count)),
                _ => None,
            }
        })
        .collect()
}

/// The name of the host user that root of this namespace maps to (the
/// user who must get a subordinate range).
fn owner_name() -> Result<String> {
    let text = std::fs::read_to_string("/proc/self/uid_map")
        .map_err(|e| SandboxError::sys("reading /proc/self/uid_map", e))?;
    let outside = text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&"0"))
            .then(|| f.get(1)?.parse::<u32>().ok())
            .flatten()
    });
    Ok(user_name(
        outside.unwrap_or_else(|| nix::unistd::getuid().as_raw()),
    ))
}

fn read_id_map(path: &Path) -> Result<Vec<(u32, u32)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SandboxError::sys(format!("reading {}", path.display()), e))?;
    Ok(parse_id_map(&text))
}

/// How to map ids when rootless.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdMapping {
    /// Subordinate ranges through newuidmap/newgidmap when available, else
    /// a single mapping.
    #[default]
    Auto,
    /// Only `0 -> own uid/gid` (no setuid helpers involved).
    Single,
}

#[derive(Clone, Debug, Default)]
pub struct NamespaceOptions {
    pub id_mapping: IdMapping,
}

/// Enter berth's build namespace. Call at the very start of `main()`, after
/// [`crate::helper_main_if_requested`] and **before any thread exists**.
///
/// As root: a private mount namespace. Rootless: see the module docs; this
/// process becomes a waiting parent that exits with the child's status, and
/// only the child returns.
pub fn enter_build_namespace() -> Result<NamespaceInfo> {
    enter_build_namespace_with(&NamespaceOptions::default())
}

pub fn enter_build_namespace_with(opts: &NamespaceOptions) -> Result<NamespaceInfo> {
    ensure_single_threaded()?;
    if nix::unistd::geteuid().is_root() {
        enter_as_root()
    } else {
        enter_rootless(opts)
    }
}

fn ensure_single_threaded() -> Result<()> {
    let n = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    if n > 1 {
        return Err(SandboxError::Unsupported(format!(
            "enter_build_namespace() must run before any thread is started (this process has {n} threads); call it first in main(), before the async runtime"
        )));
    }
    Ok(())
}

fn make_mounts_private() -> Result<()> {
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
}

fn enter_as_root() -> Result<NamespaceInfo> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| {
        SandboxError::Unsupported(format!(
            "creating a mount namespace failed ({e}); berth needs CAP_SYS_ADMIN when run as root (in a container: run it privileged or as a non-root user)"
        ))
    })?;
    make_mounts_private()?;
    NamespaceInfo::current()
}

/// A subordinate id range from /etc/subuid or /etc/subgid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// The first range for the user (by name or numeric id), as shadow-utils does.
pub(crate) fn find_subrange(text: &str, name: &str, id: u32) -> Option<SubRange> {
    let id = id.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != name && who != id {
            return None;
        }
        let (start, count) = (start.parse().ok()?, count.parse::<u32>().ok()?);
        (count > 0).then_some(SubRange { start, count })
    })
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn enter_rootless(opts: &NamespaceOptions) -> Result<NamespaceInfo> {
    let (ready_r, ready_w) = sys::pipe_cloexec()?;
    let (go_r, go_w) = sys::pipe_cloexec()?;
    let parent = nix::unistd::getpid();
    // SAFETY: the process is single-threaded (checked above), so the child
    // may run arbitrary code.
    match unsafe { nix::unistd::fork() }
        .map_err(|e| SandboxError::sys("fork", io::Error::from(e)))?
    {
        nix::unistd::ForkResult::Child => {
            drop((ready_r, go_w));
            rootless_child(parent, ready_w, go_r)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop((ready_w, go_r));
            rootless_parent(opts, child, ready_r, go_w)
        }
    }
}

fn rootless_child(parent: nix::unistd::Pid, ready: OwnedFd, go: OwnedFd) -> Result<NamespaceInfo> {
    // Die with the parent: nothing else would reap or stop us.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if nix::unistd::getppid() != parent {
        std::process::exit(1);
    }
    let mut ready = std::fs::File::from(ready);
    let flags = nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS;
    if let Err(e) = nix::sched::unshare(flags) {
        let _ = ready.write_all(format!("E{e}").as_bytes());
        std::process::exit(1);
    }
    let _ = ready.write_all(b"R");
    drop(ready);
    let mut answer = Vec::new();
    let _ = std::fs::File::from(go).read_to_end(&mut answer);
    if answer != b"G" {
        // The parent could not map ids and reports the error itself.
        std::process::exit(1);
    }
    // SAFETY: plain id syscalls; 0 is mapped now.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(SandboxError::last_os("becoming root in the user namespace"));
        }
        // Supplementary groups show up as nobody; drop them where allowed
        // (not with a single mapping, where setgroups is denied).
        libc::setgroups(0, std::ptr::null());
    }
    make_mounts_private()?;
    NamespaceInfo::current()
}

fn rootless_parent(
    opts: &NamespaceOptions,
    child: nix::unistd::Pid,
    ready: OwnedFd,
    go: OwnedFd,
) -> Result<NamespaceInfo> {
    let mut msg = Vec::new();
    let _ = std::fs::File::from(ready).read_to_end(&mut msg);
    let mut go = std::fs::File::from(go);
    let result = match msg.first() {
        Some(b'R') => map_ids(opts, child),
        Some(b'E') => Err(SandboxError::Unsupported(format!(
            "creating a user namespace failed ({}); enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu kernel.apparmor_restrict_unprivileged_userns=0) or run berth as root",
            String::from_utf8_lossy(&msg[1..])
        ))),
        _ => Err(SandboxError::Unsupported(
            "the namespace child exited before creating its namespaces".into(),
        )),
    };
    if let Err(e) = result {
        let _ = go.write_all(b"E");
        drop(go);
        let _ = nix::sys::wait::waitpid(child, None);
        return Err(e);
    }
    let _ = go.write_all(b"G");
    drop(go);

    CHILD.store(child.as_raw(), Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installing a handler that only calls kill().
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let code = loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(child.as_raw(), &mut status, 0) };
        if rc < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break 1;
        }
        if libc::WIFEXITED(status) {
            break libc::WEXITSTATUS(status);
        }
        if libc::WIFSIGNALED(status) {
            break 128 + libc::WTERMSIG(status);
        }
    };
    std::process::exit(code)
}

fn map_ids(opts: &NamespaceOptions, child: nix::unistd::Pid) -> Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let name = user_name(uid);
    if opts.id_mapping == IdMapping::Auto {
        let sub = |file: &str, id| {
            std::fs::read_to_string(file)
                .ok()
                .and_then(|t| find_subrange(&t, &name, id))
        };
        let tools = find_in_path("newuidmap").zip(find_in_path("newgidmap"));
        if let (Some((newuidmap, newgidmap)), Some(su), Some(sg)) =
            (tools, sub("/etc/subuid", uid), sub("/etc/subgid", uid))
        {
            run_idmap_tool(&newuidmap, child, uid, su)?;
            run_idmap_tool(&newgidmap, child, gid, sg)?;
            return Ok(());
        }
    }
    let proc = Path::new("/proc").join(child.as_raw().to_string());
    let write = |file: &str, text: String| {
        std::fs::write(proc.join(file), text)
            .map_err(|e| SandboxError::sys(format!("writing {}", proc.join(file).display()), e))
    };
    write("uid_map", format!("0 {uid} 1\n"))?;
    // An unprivileged process may map its gid only after giving up setgroups.
    write("setgroups", "deny\n".into())?;
    write("gid_map", format!("0 {gid} 1\n"))
}

fn run_idmap_tool(tool: &Path, child: nix::unistd::Pid, own: u32, sub: SubRange) -> Result<()> {
    // Like podman: 0 -> own id, 1..=65536 -> the subordinate range.
    let count = sub.count.min(FULL_RANGE_COUNT - 1);
    let out = Command::new(tool)
        .arg(child.as_raw().to_string())
        .args(["0", &own.to_string(), "1"])
        .args(["1", &sub.start.to_string(), &count.to_string()])
        .output()
        .map_err(|e| SandboxError::sys(format!("running {}", tool.display()), e))?;
    if !out.status.success() {
        return Err(SandboxError::Unsupported(format!(
            "{} failed ({}): {}; check that it is setuid root (or has cap_setuid/cap_setgid file capabilities) and that /etc/subuid and /etc/subgid give your user a range",
            tool.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_id_maps() {
        let m =
            parse_id_map("         0       1001          1\n         1     100000      65536\n");
        assert_eq!(m, vec![(0, 1), (1, 65536)]);
        assert!(covers(&m, 0, FULL_RANGE_COUNT));
        assert!(covers(&m, 65536, 1));
        assert!(!covers(&m, 65537, 1));
        let single = parse_id_map("0 1001 1\n");
        assert!(!covers(&single, 0, FULL_RANGE_COUNT));
        assert!(covers(&parse_id_map("0 0 4294967295\n"), 0, u32::MAX));
        // Adjacent ranges in any order add up; a gap does not.
        assert!(covers(&[(1, 65536), (0, 1)], 0, FULL_RANGE_COUNT));
        assert!(!covers(&[(0, 1), (2, 65535)], 0, FULL_RANGE_COUNT));
        assert!(covers(&[(0, 1), (2, 65535)], 3, 10));
    }

    #[test]
    fn finds_subordinate_range_by_name_or_id() {
        let text = "alice:100000:65536\n# comment\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(
            find_subrange(text, "alice", 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            find_subrange(text, "carol", 1001),
            Some(SubRange {
                start: 200000,
                count: 1000
            })
        );
        assert_eq!(
            find_subrange(text, "bob", 5),
            None,
            "empty ranges are ignored"
        );
        assert_eq!(find_subrange(text, "dave", 7), None);
    }

    #[test]
    fn unmapped_id_error_names_the_fix() {
        let info = NamespaceInfo {
            rootless: true,
            full_id_range: false,
            uid_ranges: vec![(0, 1)],
            gid_ranges: vec![(0, 1)],
            user: "berth".into(),
        };
        assert!(info.check_ids(0, 0).is_ok());
        let msg = info.check_ids(1000, 0).unwrap_err().to_string();
        assert!(msg.contains("uid 1000"), "{msg}");
        assert!(msg.contains("install uidmap"), "{msg}");
        assert!(msg.contains("/etc/subuid and /etc/subgid"), "{msg}");
        assert!(msg.contains("berth:100000:65536"), "{msg}");
        let msg = info.check_ids(0, 5).unwrap_err().to_string();
        assert!(msg.contains("gid 5"), "{msg}");
    }
}
