//! `exec_in()`: run one more process inside a running step's namespaces
//! (`berth exec`). The caller joins the step's user namespace first when it
//! is not its own (rootless: the user owns it, so that is allowed), then
//! its ipc, uts, net, pid and mount namespaces; a forked child (the only
//! way into a pid namespace) is confined like the step itself (capability
//! bounding set, no_new_privs, seccomp, user switch) and execs.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::error::{Result, SandboxError};
use crate::helper::Exec;
use crate::spec::RunSpec;

/// The namespaces joined, in order: user first (it grants the rights for
/// the others), mount last (after it the host's `/proc` is gone).
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("user", libc::CLONE_NEWUSER),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
];

/// Join the user namespace of process `pid` as its root, when it is not
/// this process's own (rootless containers; the user owns it). Must be
/// called while single-threaded. `berth cp` uses it to reach a running
/// container's files through `/proc/PID/root` with the container's ids.
pub fn join_user_namespace(pid: u32) -> Result<()> {
    let target = format!("/proc/{pid}/ns/user");
    let theirs = fs::metadata(&target)
        .map_err(|e| SandboxError::sys(format!("the container's user namespace ({target})"), e))?;
    let ours = fs::metadata("/proc/self/ns/user")
        .map_err(|e| SandboxError::sys("this process's user namespace", e))?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Ok(());
    }
    let file =
        fs::File::open(&target).map_err(|e| SandboxError::sys(format!("opening {target}"), e))?;
    // SAFETY: setns on a namespace descriptor we opened.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWUSER) } != 0 {
        return Err(SandboxError::last_os(
            "joining the container's user namespace",
        ));
    }
    become_root()
}

/// Join the user namespace of process `pid` (when not ours) and make a
/// private mount namespace in it: what [`crate::enter_build_namespace`]
/// does, but in an existing container's user namespace, so that a new
/// container can share that one's namespaces (`container:NAME`). Call it
/// while single-threaded, instead of `enter_build_namespace`.
pub fn enter_namespace_of(pid: u32) -> Result<crate::NamespaceInfo> {
    join_user_namespace(pid)?;
    // SAFETY: unshare with a constant flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(SandboxError::last_os("creating a mount namespace"));
    }
    crate::sys::mount(
        None,
        std::path::Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    crate::NamespaceInfo::current()
}

fn become_root() -> Result<()> {
    // SAFETY: plain id syscalls.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            return Err(SandboxError::last_os(
                "becoming root in the container's user namespace",
            ));
        }
    }
    Ok(())
}

/// Run `spec.args` in the namespaces of the process `pid` (a step started
/// by [`crate::run_observed`]) and wait for it. Only `args`, `env`, `cwd`,
/// `uid`, `gid`, `additional_gids` and `security` of `spec` are used; the
/// process inherits this one's stdin, stdout and stderr.
///
/// Must be called **while the process is single-threaded** (joining a user
/// namespace requires it), and not after [`crate::enter_build_namespace`]
/// (the step's user namespace is a sibling of that one). It changes this
/// process's namespaces for good: call it last. The result is the exit
/// status of the command (127 not found, 126 cannot be executed, as in
/// the step).
pub fn exec_in(pid: u32, spec: &RunSpec) -> Result<ExitStatus> {
    if spec.args.is_empty() {
        return Err(SandboxError::InvalidSpec("no command to run".into()));
    }
    let mut joins: Vec<(&str, libc::c_int, OwnedFd)> = Vec::new();
    for &(name, flag) in NAMESPACES {
        let target = format!("/proc/{pid}/ns/{name}");
        let theirs = fs::metadata(&target).map_err(|e| {
            SandboxError::sys(format!("the container's {name} namespace ({target})"), e)
        })?;
        let ours = fs::metadata(format!("/proc/self/ns/{name}"))
            .map_err(|e| SandboxError::sys(format!("this process's {name} namespace"), e))?;
        if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
            continue;
        }
        let file = fs::File::open(&target)
            .map_err(|e| SandboxError::sys(format!("opening {target}"), e))?;
        joins.push((name, flag, file.into()));
    }
    for (name, flag, fd) in &joins {
        // SAFETY: setns on a namespace descriptor we opened.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
            return Err(SandboxError::last_os(format!(
                "joining the container's {name} namespace"
            )));
        }
        if *flag == libc::CLONE_NEWUSER {
            // Root in the container's user namespace, as its processes.
            become_root()?;
        }
    }
    drop(joins);
    // The cwd after joining a mount namespace is its root.
    // SAFETY: the caller is single-threaded (required above).
    match unsafe { nix::unistd::fork() }
        .map_err(|e| SandboxError::sys("fork", io::Error::from(e)))?
    {
        nix::unistd::ForkResult::Child => {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            let code = match Exec::prepare(spec) {
                Ok(mut exec) => {
                    exec.errors_to_stderr = true;
                    exec.exec()
                }
                Err(e) => {
                    eprintln!("berth: error: {e}");
                    126
                }
            };
            // SAFETY: leaving the forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => loop {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            let rc = unsafe { libc::waitpid(child.as_raw(), &mut status, 0) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(SandboxError::sys("waiting for the exec'd process", e));
            }
            return Ok(ExitStatus::from_raw(status));
        },
    }
}
