//! The re-executed helper (`<berth> __berth-sandbox`). It is single-threaded
//! by construction: it runs before anything else in `main()`.
//!
//! Layout of one step:
//!
//! ```text
//! run()  --spec on stdin, status on fd 3-->  helper (new pid/ipc/uts[/net] ns)
//!                                              └─ fork: step = pid 1
//!                                                   new mount ns, staging tmpfs,
//!                                                   rootfs + mounts, pivot_root,
//!                                                   user switch, exec
//! ```
//!
//! The helper's parent half stays outside the step's mount namespace so that
//! it can remove the mount stubs from the upper directory after the step.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SandboxError};
use crate::overlay::{mount_overlay_at, OverlayLayers};
use crate::spec::{MountKind, Network, Rootfs, RunSpec, DEFAULT_PATH};
use crate::stubs::{self, Cleanup, StubKind, StubMaker};
use crate::sys::{self, cstr};

/// `argv[1]` that selects the helper.
pub const HELPER_ARG: &str = "__berth-sandbox";
/// The helper reports on this descriptor (set up by `run()`).
pub(crate) const STATUS_FD: libc::c_int = 3;

/// One line on the status pipe.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Status {
    /// Setup failed; the step did not run.
    Error(String),
    /// The step's process (its host pid) is about to exec its command (or
    /// failed to set up, which an `Error` line before this one says).
    Started(i32),
    Exit(i32),
    Signal(i32),
}

/// Run the helper if this process was started as one; otherwise return.
/// Call it first in `main()`.
pub fn helper_main_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() != Some(OsStr::new(HELPER_ARG)) {
        return;
    }
    // SAFETY: F_GETFD only queries the descriptor.
    if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } < 0 {
        eprintln!("{HELPER_ARG} is internal to berth and is started by berth itself");
        std::process::exit(2);
    }
    // Only the helper's halves keep the status pipe; the step never sees it.
    // SAFETY: setting a flag on a descriptor we were given.
    unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let status = match helper_main() {
        Ok(s) => s,
        Err(e) => Status::Error(e.to_string()),
    };
    report(&status);
    std::process::exit(0);
}

fn report(status: &Status) {
    let mut line = serde_json::to_vec(status).unwrap_or_default();
    line.push(b'\n');
    let _ = sys::write_all_fd(STATUS_FD, &line);
}

fn helper_main() -> Result<Status> {
    let mut input = Vec::new();
    io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| SandboxError::sys("reading the sandbox spec", e))?;
    let spec: RunSpec = serde_json::from_slice(&input).map_err(|e| {
        SandboxError::InvalidSpec(format!("decoding the spec sent to the helper: {e}"))
    })?;
    // The step's stdin is /dev/null.
    let null =
        fs::File::open("/dev/null").map_err(|e| SandboxError::sys("opening /dev/null", e))?;
    // SAFETY: dup2 onto stdin.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(SandboxError::last_os("redirecting stdin"));
    }
    drop(null);

    let mut flags = libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS;
    // An isolated network's namespace was made before exec (run.rs).
    if spec.network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    if let Some(join) = &spec.join {
        // Another container's namespaces: joined here, so that the fork
        // below lands in its pid namespace.
        for (on, name, flag) in [
            (join.net, "net", libc::CLONE_NEWNET),
            (join.pid_ns, "pid", libc::CLONE_NEWPID),
        ] {
            if !on {
                continue;
            }
            let path = format!("/proc/{}/ns/{name}", join.pid);
            let ns = fs::File::open(&path).map_err(|e| {
                SandboxError::sys(format!("the {name} namespace to join ({path})"), e)
            })?;
            // SAFETY: setns on a namespace descriptor we opened.
            if unsafe { libc::setns(ns.as_raw_fd(), flag) } != 0 {
                return Err(SandboxError::last_os(format!(
                    "joining the {name} namespace of process {}",
                    join.pid
                )));
            }
            flags &= !flag;
        }
    }
    // SAFETY: unshare with constant flags.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(SandboxError::last_os(
            "creating pid/ipc/uts namespaces (berth build must run as root or after enter_build_namespace())",
        ));
    }
    let (clean_r, clean_w) = sys::pipe_cloexec()?;
    // SAFETY: the helper is single-threaded.
    match unsafe { nix::unistd::fork() }
        .map_err(|e| SandboxError::sys("fork", io::Error::from(e)))?
    {
        nix::unistd::ForkResult::Child => {
            drop(clean_r);
            step_main(&spec, clean_w)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(clean_w);
            let mut data = Vec::new();
            // EOF comes when the step execs (close-on-exec) or dies.
            let _ = fs::File::from(clean_r).read_to_end(&mut data);
            match data.strip_suffix(EXEC_FAILED) {
                Some(rest) => data.truncate(rest.len()),
                None => report(&Status::Started(child.as_raw())),
            }
            let status = wait_for(child.as_raw());
            let cleanup: Cleanup = serde_json::from_slice(&data).unwrap_or_default();
            let base = match &spec.rootfs {
                Rootfs::Overlay { upper, .. } => upper,
                Rootfs::Dir(dir) => dir,
            };
            for problem in stubs::undo(base, &cleanup) {
                // Not fatal for the step; visible in the step's log.
                let _ = writeln!(io::stderr(), "berth: warning: {problem}");
            }
            Ok(status)
        }
    }
}

fn wait_for(pid: libc::pid_t) -> Status {
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Status::Error(format!(
                "waiting for the step: {}",
                io::Error::last_os_error()
            ));
        }
        if libc::WIFEXITED(status) {
            return Status::Exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Status::Signal(libc::WTERMSIG(status));
        }
    }
}

/// The step's half: pid 1 of the new pid namespace. Never returns.
fn step_main(spec: &RunSpec, clean_w: OwnedFd) -> ! {
    // SAFETY: prctl with integer arguments; the step dies with the helper.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let mut cleanup = Cleanup::default();
    let prepared = setup(spec, &mut cleanup);
    let mut clean = fs::File::from(clean_w);
    let _ = clean.write_all(&serde_json::to_vec(&cleanup).unwrap_or_default());
    match prepared {
        Ok(exec) => {
            // Keep the cleanup pipe open until exec so the parent reads the
            // records before it waits.
            let code = exec.exec();
            // exec failed: say so before the pipe closes, so the parent
            // does not report the step as started.
            let _ = clean.write_all(EXEC_FAILED);
            drop(clean);
            std::process::exit(code)
        }
        Err(e) => {
            report(&Status::Error(e.to_string()));
            let _ = clean.write_all(EXEC_FAILED);
            std::process::exit(125)
        }
    }
}

/// Appended to the cleanup records when the step's exec failed.
const EXEC_FAILED: &[u8] = b"\0exec-failed";

/// Where the host's filesystem is visible while the new root is built.
const OLD: &str = "/oldroot";
const NEW: &str = "/newroot";

/// A host path as the helper sees it under the old root.
fn host(p: &Path) -> PathBuf {
    Path::new(OLD).join(p.strip_prefix("/").unwrap_or(p))
}

fn setup(spec: &RunSpec, cleanup: &mut Cleanup) -> Result<Exec> {
    // SAFETY: unshare with a constant flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(SandboxError::last_os("creating the step's mount namespace"));
    }
    sys::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    enter_staging()?;

    let new = Path::new(NEW);
    let base = match &spec.rootfs {
        Rootfs::Overlay {
            lowers,
            upper,
            work,
        } => {
            let lowers: Vec<PathBuf> = lowers.iter().map(|l| host(l)).collect();
            let (upper, work) = (host(upper), host(work));
            let layers = OverlayLayers {
                lowers: &lowers,
                upper: &upper,
                work: &work,
            };
            mount_overlay_at(&layers, new, &host(Path::new("/proc")), false)?;
            upper
        }
        Rootfs::Dir(dir) => {
            sys::bind(&host(dir), new, true)?;
            host(dir)
        }
    };
    // Device nodes in the image or made by the step cannot be opened.
    sys::remount_nodev(new)?;
    let mut stubs = StubMaker::new(new, &base);
    let result = build_root(spec, &mut stubs);
    *cleanup = std::mem::take(&mut stubs.cleanup);
    result?;

    sys::umount(Path::new(OLD), libc::MNT_DETACH)?;
    sys::chdir(new)?;
    sys::pivot_root(Path::new("."), Path::new("."))?;
    // The staging tmpfs is now stacked on the new root; detach it.
    sys::umount(Path::new("."), libc::MNT_DETACH)?;
    sys::chdir(Path::new("/"))?;
    Exec::prepare(spec)
}

/// Move onto a private tmpfs with the host's tree under /oldroot, so that
/// the new root can be assembled at /newroot without hiding anything.
fn enter_staging() -> Result<()> {
    let dir = ["/tmp", "/dev", "/mnt"]
        .iter()
        .map(Path::new)
        .find(|p| fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false))
        .ok_or_else(|| {
            SandboxError::Setup("no /tmp, /dev or /mnt directory to stage the sandbox on".into())
        })?;
    sys::mount(
        Some(Path::new("berth-sandbox")),
        dir,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0700"),
    )?;
    sys::chdir(dir)?;
    for d in ["oldroot", "newroot", "files"] {
        fs::create_dir(d)
            .map_err(|e| SandboxError::sys(format!("creating {d} on the staging tmpfs"), e))?;
    }
    sys::pivot_root(Path::new("."), Path::new("oldroot"))?;
    sys::chdir(Path::new("/"))
}

fn build_root(spec: &RunSpec, stubs: &mut StubMaker<'_>) -> Result<()> {
    // /proc of the new pid namespace.
    let proc = stubs.ensure(Path::new("/proc"), StubKind::Dir)?;
    sys::mount(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(|e| {
        SandboxError::Setup(format!(
            "{e}; a fresh /proc cannot be mounted when the host's /proc has paths masked by over-mounts (as inside an unprivileged container)"
        ))
    })?;
    let dev = stubs.ensure(Path::new("/dev"), StubKind::Dir)?;
    setup_dev(&dev)?;
    let sys_dir = stubs.ensure(Path::new("/sys"), StubKind::Dir)?;
    setup_sys(&sys_dir)?;
    if spec.security.mask_paths {
        mask_paths(stubs.root)?;
    }

    for (name, contents) in [("hosts", &spec.hosts), ("resolv.conf", &spec.resolv_conf)] {
        if let Some(contents) = contents {
            let staged = Path::new("/files").join(name);
            write_file(&staged, contents, 0o644)?;
            let target = stubs.ensure(&Path::new("/etc").join(name), StubKind::File)?;
            sys::bind(&staged, &target, false)?;
        }
    }

    // Parents before children, so a mount inside another one lands in it.
    let mut mounts: Vec<_> = spec.mounts.iter().enumerate().collect();
    mounts.sort_by_key(|(_, m)| stubs::clean_rel(&m.target).components().count());
    for (i, m) in mounts {
        mount_one(i, &m.target, &m.kind, stubs).map_err(|e| match e {
            SandboxError::Setup(msg) => SandboxError::Setup(msg),
            other => SandboxError::Setup(format!("mount at {}: {other}", m.target.display())),
        })?;
    }

    nix::unistd::sethostname(&spec.hostname).map_err(|e| {
        SandboxError::sys(
            format!("setting hostname {:?}", spec.hostname),
            io::Error::from(e),
        )
    })?;
    if spec.network != Network::Host {
        loopback_up()?;
    }
    if spec.readonly_root {
        sys::remount_readonly(stubs.root)?;
    }
    Ok(())
}

fn mount_one(i: usize, target: &Path, kind: &MountKind, stubs: &mut StubMaker<'_>) -> Result<()> {
    match kind {
        MountKind::Bind { source, readonly } => {
            let src = host(source);
            let meta = fs::metadata(&src)
                .map_err(|e| SandboxError::sys(format!("bind source {}", source.display()), e))?;
            let stub = if meta.is_dir() {
                StubKind::Dir
            } else {
                StubKind::File
            };
            let t = stubs.ensure(target, stub)?;
            sys::bind(&src, &t, true)?;
            sys::remount_nodev(&t)?;
            if *readonly {
                sys::remount_readonly(&t)?;
            }
        }
        MountKind::BindOverlay { source } => {
            let src = host(source);
            if !src.is_dir() {
                return Err(SandboxError::Setup(format!(
                    "the source of a discarded-writes mount must be a directory: {}",
                    source.display()
                )));
            }
            let scratch = PathBuf::from(format!("/scratch-{i}"));
            fs::create_dir(&scratch).map_err(|e| SandboxError::sys("creating scratch dir", e))?;
            sys::mount(
                Some(Path::new("tmpfs")),
                &scratch,
                Some("tmpfs"),
                0,
                Some("mode=0700"),
            )?;
            let (upper, work) = (scratch.join("upper"), scratch.join("work"));
            fs::create_dir(&upper).map_err(|e| SandboxError::sys("creating scratch upper", e))?;
            fs::create_dir(&work).map_err(|e| SandboxError::sys("creating scratch work", e))?;
            // The view starts with the source's root directory metadata.
            copy_dir_meta(&src, &upper)?;
            let t = stubs.ensure(target, StubKind::Dir)?;
            let lowers = [src];
            let layers = OverlayLayers {
                lowers: &lowers,
                upper: &upper,
                work: &work,
            };
            mount_overlay_at(&layers, &t, &host(Path::new("/proc")), false)?;
            sys::remount_nodev(&t)?;
        }
        MountKind::Tmpfs { size } => {
            let t = stubs.ensure(target, StubKind::Dir)?;
            let opts = match size {
                Some(s) => format!("mode=0755,size={s}"),
                None => "mode=0755".into(),
            };
            sys::mount(
                Some(Path::new("tmpfs")),
                &t,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&opts),
            )?;
        }
        MountKind::File {
            contents,
            mode,
            uid,
            gid,
        } => {
            // A tmpfs of its own per secret: the contents exist in memory
            // only and vanish with the step's mount namespace.
            let dir = PathBuf::from(format!("/secret-{i}"));
            fs::create_dir(&dir).map_err(|e| SandboxError::sys("creating secret dir", e))?;
            let size = contents.len() as u64 + 4096;
            sys::mount(
                Some(Path::new("tmpfs")),
                &dir,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(&format!("mode=0700,size={size}")),
            )?;
            let file = dir.join("file");
            write_file(&file, contents, *mode)?;
            nix::unistd::chown(
                &file,
                Some(nix::unistd::Uid::from_raw(*uid)),
                Some(nix::unistd::Gid::from_raw(*gid)),
            )
            .map_err(|e| {
                SandboxError::sys(
                    format!(
                        "giving the file mounted at {} to {uid}:{gid}",
                        target.display()
                    ),
                    io::Error::from(e),
                )
            })?;
            let t = stubs.ensure(target, StubKind::File)?;
            sys::bind(&file, &t, false)?;
            sys::remount_readonly(&t)?;
        }
        MountKind::Socket { source } => {
            let src = host(source);
            let t = stubs.ensure(target, StubKind::File)?;
            sys::bind(&src, &t, false)?;
        }
    }
    Ok(())
}

fn copy_dir_meta(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m =
        fs::metadata(from).map_err(|e| SandboxError::sys(format!("stat {}", from.display()), e))?;
    fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(|e| SandboxError::sys("chmod scratch upper", e))?;
    // Owner may be unmapped in a single-id namespace; the view still works.
    let _ = nix::unistd::chown(
        to,
        Some(nix::unistd::Uid::from_raw(m.uid())),
        Some(nix::unistd::Gid::from_raw(m.gid())),
    );
    Ok(())
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    fs::write(path, contents)
        .map_err(|e| SandboxError::sys(format!("writing {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| SandboxError::sys(format!("chmod {}", path.display()), e))
}

/// A minimal /dev like runc's: a tmpfs with the safe host nodes bind-mounted
/// (mknod is not allowed in a user namespace), a private devpts and shm.
/// The tmpfs is `nodev`: a bind mount keeps the flags of its source (the
/// host's devtmpfs), so only the nodes bound here can be opened.
fn setup_dev(dev: &Path) -> Result<()> {
    sys::mount(
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        fs::File::create(&target)
            .map_err(|e| SandboxError::sys(format!("creating /dev/{node}"), e))?;
        sys::bind(&host(&Path::new("/dev").join(node)), &target, false)?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(|e| SandboxError::sys("creating /dev/pts", e))?;
    let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    // gid 5 (tty) may be unmapped with a single id mapping.
    sys::mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        flags,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .or_else(|_| {
        sys::mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
    })?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(|e| SandboxError::sys("creating /dev/shm", e))?;
    sys::mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        symlink(to, dev.join(link))
            .map_err(|e| SandboxError::sys(format!("creating /dev/{link}"), e))?;
    }
    Ok(())
}

/// sysfs can be mounted only by the owner of the network namespace, so a
/// rootless step on the host network gets a read-only bind of the host's.
fn setup_sys(dir: &Path) -> Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
    if sys::mount(Some(Path::new("sysfs")), dir, Some("sysfs"), flags, None).is_ok() {
        return Ok(());
    }
    sys::bind(&host(Path::new("/sys")), dir, true)?;
    sys::remount_readonly(dir)
}

/// Docker's masked paths: hidden behind `/dev/null` (files) or an empty
/// read-only tmpfs (directories).
const MASKED_PATHS: &[&str] = &[
    "proc/asound",
    "proc/acpi",
    "proc/interrupts",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

fn mask_paths(root: &Path) -> Result<()> {
    let null = host(Path::new("/dev/null"));
    for rel in MASKED_PATHS {
        let p = root.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => sys::mount(
                Some(Path::new("tmpfs")),
                &p,
                Some("tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("size=0"),
            )?,
            Ok(_) => sys::bind(&null, &p, false)?,
            Err(_) => {}
        }
    }
    for rel in READONLY_PATHS {
        let p = root.join(rel);
        if fs::symlink_metadata(&p).is_ok() {
            sys::bind(&p, &p, true)?;
            sys::remount_readonly(&p)?;
        }
    }
    Ok(())
}

fn loopback_up() -> Result<()> {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(SandboxError::last_os("opening a socket to configure lo"));
        }
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(SandboxError::last_os("reading the flags of lo"));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(SandboxError::last_os("bringing lo up"));
        }
    }
    Ok(())
}

fn last_cap() -> u32 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

pub(crate) enum Seccomp {
    Filter(libseccomp::ScmpFilterContext),
    /// A program from [`crate::compile_seccomp`].
    Bpf(Vec<u8>),
}

/// Everything resolved and allocated before the point of no return.
pub(crate) struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    last_cap: u32,
    capabilities: Vec<u32>,
    no_new_privs: bool,
    /// Compiled before the point of no return (or given precompiled in
    /// the spec), loaded right before exec.
    seccomp: Option<Seccomp>,
    /// The name to report when `path` cannot be executed.
    shown: String,
    /// Set when the lookup found nothing: report 127 without trying.
    not_found: bool,
    /// Report setup errors on stderr, not the status pipe (`exec_in`).
    pub(crate) errors_to_stderr: bool,
}

impl Exec {
    pub(crate) fn prepare(spec: &RunSpec) -> Result<Exec> {
        let cwd = &spec.cwd;
        match fs::metadata(cwd) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SandboxError::Setup(format!(
                    "working directory {} is not a directory in the image",
                    cwd.display()
                )))
            }
            Err(_) => {
                return Err(SandboxError::Setup(format!(
                    "working directory {} does not exist in the image; create it first (WORKDIR creates it)",
                    cwd.display()
                )))
            }
        }
        sys::chdir(cwd)?;
        let arg0 = spec
            .args
            .first()
            .ok_or_else(|| SandboxError::InvalidSpec("no command to run".into()))?;
        let path_var = spec
            .env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH);
        let (path, not_found) = match lookup(arg0, path_var) {
            Some(p) => (p, false),
            None => (PathBuf::from(arg0), true),
        };
        let all = |v: &[String]| v.iter().map(cstr).collect::<Result<Vec<_>>>();
        let sec = &spec.security;
        let seccomp = match (&spec.seccomp_bpf, sec.seccomp) {
            (_, false) => None,
            (Some(bpf), true) => Some(Seccomp::Bpf(bpf.clone())),
            (None, true) => Some(Seccomp::Filter(crate::seccomp::default_profile(
                &sec.capabilities,
            )?)),
        };
        Ok(Exec {
            path: cstr(&path)?,
            argv: all(&spec.args)?,
            envp: all(&spec.env)?,
            uid: spec.uid,
            gid: spec.gid,
            groups: spec.additional_gids.clone(),
            last_cap: last_cap(),
            capabilities: sec.capabilities.clone(),
            no_new_privs: sec.no_new_privs,
            seccomp,
            shown: arg0.clone(),
            not_found,
            errors_to_stderr: false,
        })
    }

    /// Switch user and exec; returns the exit code to use when exec fails.
    pub(crate) fn exec(self) -> i32 {
        if self.not_found {
            let _ = writeln!(
                io::stderr(),
                "exec: {}: not found (looked in the step's PATH)",
                self.shown
            );
            return 127;
        }
        // Without no_new_privs only a process with CAP_SYS_ADMIN may load a
        // filter: then before giving up root, else as late as possible.
        if !self.no_new_privs && !self.load_seccomp() {
            return 125;
        }
        if let Err(msg) = self.switch_user() {
            self.fail(msg);
            return 125;
        }
        if self.no_new_privs && !self.load_seccomp() {
            return 125;
        }
        let mut argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = self.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
        unsafe { libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let err = io::Error::last_os_error();
        let (code, why) = match err.raw_os_error() {
            Some(libc::ENOENT) if Path::new(OsStr::from_bytes(self.path.as_bytes())).exists() => (
                127,
                "not found (its interpreter or dynamic loader is missing from the image)"
                    .to_string(),
            ),
            Some(libc::ENOENT) => (127, "not found".to_string()),
            Some(libc::EACCES) => (126, "permission denied".to_string()),
            Some(libc::ENOEXEC) => (
                126,
                "exec format error (wrong architecture or not an executable)".to_string(),
            ),
            _ => (126, err.to_string()),
        };
        let _ = writeln!(io::stderr(), "exec: {}: {why}", self.shown);
        code
    }

    fn load_seccomp(&self) -> bool {
        let result = match &self.seccomp {
            None => return true,
            Some(Seccomp::Filter(filter)) => filter.load().map_err(|e| e.to_string()),
            Some(Seccomp::Bpf(bpf)) => crate::seccomp::load_bpf(bpf),
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                self.fail(format!("loading the seccomp profile: {e}"));
                false
            }
        }
    }

    fn fail(&self, msg: String) {
        if self.errors_to_stderr {
            let _ = writeln!(io::stderr(), "berth: error: {msg}");
        } else {
            report(&Status::Error(msg));
        }
    }

    fn switch_user(&self) -> Result<(), String> {
        // SAFETY: prctl/setgroups/setgid/setuid with plain values.
        unsafe {
            for cap in 0..=self.last_cap {
                if !self.capabilities.contains(&cap) {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                }
            }
            if self.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(format!(
                    "setting no_new_privs: {}",
                    io::Error::last_os_error()
                ));
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            );
            let setgroups_denied = fs::read_to_string("/proc/self/setgroups")
                .map(|s| s.trim() == "deny")
                .unwrap_or(false);
            if !(setgroups_denied && self.groups.is_empty())
                && libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0
            {
                return Err(self.id_error("supplementary groups", &format!("{:?}", self.groups)));
            }
            if libc::setgid(self.gid) != 0 {
                return Err(self.id_error("gid", &self.gid.to_string()));
            }
            if libc::setuid(self.uid) != 0 {
                return Err(self.id_error("uid", &self.uid.to_string()));
            }
        }
        Ok(())
    }

    fn id_error(&self, what: &str, id: &str) -> String {
        let err = io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::EPERM)) {
            let maps = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
            let ranges = crate::userns::parse_id_map(&maps);
            format!(
                "switching to {what} {id} failed ({err}): it is not mapped in berth's user namespace ({}); install uidmap and add a range for your user to /etc/subuid and /etc/subgid",
                crate::userns::describe_ranges(&ranges)
            )
        } else {
            format!("switching to {what} {id}: {err}")
        }
    }
}

/// Find `name` like execvp: as given when it contains a `/`, else the first
/// executable regular file in `path_var`.
fn lookup(name: &str, path_var: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    if name.is_empty() {
        return None;
    }
    path_var.split(':').find_map(|dir| {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(name);
        match fs::metadata(&p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Some(p),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_path_order_and_skips_non_executables() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("tool"), b"").unwrap(); // not executable
        fs::write(b.join("tool"), b"").unwrap();
        fs::set_permissions(b.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", a.display(), b.display());
        assert_eq!(lookup("tool", &path), Some(b.join("tool")));
        assert_eq!(lookup("missing", &path), None);
        assert_eq!(lookup("./rel/x", &path), Some(PathBuf::from("./rel/x")));
        assert_eq!(lookup("", &path), None);
    }

    #[test]
    fn status_lines_round_trip() {
        for s in [
            Status::Error("boom".into()),
            Status::Exit(3),
            Status::Signal(9),
        ] {
            let line = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Status>(&line).unwrap(), s);
        }
    }
}
