//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`),
//! as data, compiled with libseccomp for this machine's architecture and
//! its 32-bit companions (x86 and x32 on x86_64, arm on aarch64).
//!
//! Like Docker, the profile depends on the capabilities the process keeps:
//! `mount`, `unshare`, namespace flags of `clone` and the like are allowed
//! only with `CAP_SYS_ADMIN`, `ptrace`-class calls are allowed everywhere
//! (kernels >= 4.8 check them properly), and so on. Everything else fails
//! with `EPERM`; `clone3` fails with `ENOSYS` so that libc falls back to
//! `clone`, whose flags the filter can see.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};

use crate::error::{Result, SandboxError};

/// Allowed for every process.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Docker: allowed on kernels >= 4.8, where ptrace is checked properly.
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
];

/// Allowed only on these architectures (Docker's names, as `GOARCH`).
const BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["ppc64le"], &["sync_file_range2", "swapcontext"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "x86"], &["modify_ldt"]),
    (
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache"]),
];

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_PACCT: u32 = 20;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_TIME: u32 = 25;
const CAP_SYS_TTY_CONFIG: u32 = 26;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Allowed when the process keeps this capability.
const BY_CAPABILITY: &[(u32, &[&str])] = &[
    (CAP_DAC_READ_SEARCH, &["open_by_handle_at"]),
    (
        CAP_SYS_ADMIN,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (CAP_SYS_BOOT, &["reboot"]),
    (CAP_SYS_CHROOT, &["chroot"]),
    (
        CAP_SYS_MODULE,
        &["delete_module", "init_module", "finit_module"],
    ),
    (CAP_SYS_PACCT, &["acct"]),
    (
        CAP_SYS_PTRACE,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (CAP_SYS_RAWIO, &["iopl", "ioperm"]),
    (
        CAP_SYS_TIME,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (CAP_SYS_TTY_CONFIG, &["vhangup"]),
    (
        CAP_SYS_NICE,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (CAP_SYSLOG, &["syslog"]),
    (CAP_BPF, &["bpf"]),
    (CAP_PERFMON, &["perf_event_open"]),
];

/// `personality(2)` values Docker allows: PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26|PER_LINUX32, and the query 0xffffffff.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
/// | CLONE_NEWNET | CLONE_NEWCGROUP: without CAP_SYS_ADMIN, `clone` may use
/// none of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

const AF_VSOCK: u64 = 40;

/// Docker's architecture name for the one berth was built for.
fn docker_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The 32-bit (or x32) ABIs a process of this architecture can also use:
/// the filter must cover them, or a 32-bit binary would escape it.
fn companion_arches() -> &'static [ScmpArch] {
    match std::env::consts::ARCH {
        "x86_64" => &[ScmpArch::X86, ScmpArch::X32],
        "aarch64" => &[ScmpArch::Arm],
        "s390x" => &[ScmpArch::S390],
        _ => &[],
    }
}

fn seccomp_error(what: &str, e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Setup(format!("seccomp: {what}: {e}"))
}

/// Add `action` for `name` if this libseccomp knows the call (names of newer
/// kernels are skipped, as runc does).
fn add(
    ctx: &mut ScmpFilterContext,
    action: ScmpAction,
    name: &str,
    cmp: &[ScmpArgCompare],
) -> Result<()> {
    let Ok(call) = ScmpSyscall::from_name(name) else {
        return Ok(());
    };
    let r = if cmp.is_empty() {
        ctx.add_rule(action, call)
    } else {
        ctx.add_rule_conditional(action, call, cmp)
    };
    r.map(|_| ())
        .map_err(|e| seccomp_error(&format!("rule for {name}"), e))
}

/// Docker's default profile for a process with `caps`. Compiled before the
/// step starts; [`ScmpFilterContext::load`] installs it right before exec.
/// Docker's default profile for `caps` as a BPF program (what the helper
/// loads), to be passed as [`crate::RunSpec::seccomp_bpf`].
pub fn compile_seccomp(caps: &[u32]) -> Result<Vec<u8>> {
    use std::io::{Read, Seek};
    use std::os::fd::FromRawFd;
    let ctx = default_profile(caps)?;
    // SAFETY: memfd_create with a static name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"berth-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(crate::error::SandboxError::last_os(
            "creating a memfd for the seccomp program",
        ));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    ctx.export_bpf(&file)
        .map_err(|e| seccomp_error("exporting the filter", e))?;
    let mut bpf = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bpf))
        .map_err(|e| crate::error::SandboxError::sys("reading the seccomp program", e))?;
    if bpf.is_empty() || bpf.len() % 8 != 0 {
        return Err(crate::error::SandboxError::Setup(format!(
            "the exported seccomp program has {} bytes",
            bpf.len()
        )));
    }
    Ok(bpf)
}

/// Loads a program from [`compile_seccomp`] into this thread (flags 0, as
/// libseccomp's load without TSYNC).
pub(crate) fn load_bpf(bpf: &[u8]) -> std::result::Result<(), String> {
    if bpf.is_empty() || bpf.len() % 8 != 0 || bpf.len() / 8 > u16::MAX as usize {
        return Err(format!("invalid seccomp program of {} bytes", bpf.len()));
    }
    // sock_filter is 8 bytes; copy into aligned storage.
    let filters: Vec<libc::sock_filter> = bpf
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let prog = libc::sock_fprog {
        len: filters.len() as u16,
        filter: filters.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: a valid sock_fprog that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            1 as libc::c_ulong, // SECCOMP_SET_MODE_FILTER
            0 as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

pub(crate) fn default_profile(caps: &[u32]) -> Result<ScmpFilterContext> {
    let has = |c: u32| caps.contains(&c);
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(libc::EPERM))
        .map_err(|e| seccomp_error("creating the filter", e))?;
    for &arch in companion_arches() {
        ctx.add_arch(arch)
            .map_err(|e| seccomp_error(&format!("adding architecture {arch:?}"), e))?;
    }
    // no_new_privs is the caller's decision (Security::no_new_privs).
    ctx.set_ctl_nnp(false)
        .map_err(|e| seccomp_error("clearing the no_new_privs attribute", e))?;
    let allow = ScmpAction::Allow;
    for name in ALLOWED {
        add(&mut ctx, allow, name, &[])?;
    }
    let arch = docker_arch();
    for (arches, names) in BY_ARCH {
        if arches.contains(&arch) {
            for name in *names {
                add(&mut ctx, allow, name, &[])?;
            }
        }
    }
    for (cap, names) in BY_CAPABILITY {
        if has(*cap) {
            for name in *names {
                add(&mut ctx, allow, name, &[])?;
            }
        }
    }
    add(
        &mut ctx,
        allow,
        "socket",
        &[ScmpArgCompare::new(0, ScmpCompareOp::NotEqual, AF_VSOCK)],
    )?;
    for &p in PERSONALITIES {
        add(
            &mut ctx,
            allow,
            "personality",
            &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, p)],
        )?;
    }
    if !has(CAP_SYS_ADMIN) {
        // s390 passes the flags second.
        let flags_arg = if arch.starts_with("s390") { 1 } else { 0 };
        add(
            &mut ctx,
            allow,
            "clone",
            &[ScmpArgCompare::new(
                flags_arg,
                ScmpCompareOp::MaskedEqual(CLONE_NAMESPACE_FLAGS),
                0,
            )],
        )?;
        add(&mut ctx, ScmpAction::Errno(libc::ENOSYS), "clone3", &[])?;
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {

    #[test]
    fn precompiled_program_is_the_profile() {
        let bpf = compile_seccomp(crate::DEFAULT_CAPABILITIES).unwrap();
        assert!(bpf.len() > 800, "{} bytes", bpf.len());
        // In a child: keyctl is refused (EPERM), getpid allowed.
        // SAFETY: the child only makes raw syscalls and exits.
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if load_bpf(&bpf).is_err() {
                    libc::_exit(10);
                }
                let rc = libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0);
                let errno = *libc::__errno_location();
                let ok = rc == -1 && errno == libc::EPERM && libc::getpid() > 0;
                libc::_exit(if ok { 0 } else { 11 });
            },
            pid => {
                let mut status = 0;
                // SAFETY: waiting for our child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status), "{status}");
                assert_eq!(libc::WEXITSTATUS(status), 0);
            }
        }
        assert!(load_bpf(&bpf[..7]).is_err());
    }

    use super::*;

    fn program(ctx: &ScmpFilterContext) -> Vec<u8> {
        use std::io::{Read, Seek};
        let mut f = tempfile::tempfile().unwrap();
        ctx.export_bpf(&f).unwrap();
        f.rewind().unwrap();
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn profiles_compile_with_and_without_sys_admin() {
        let default = default_profile(crate::spec::DEFAULT_CAPABILITIES).unwrap();
        let bpf = program(&default);
        assert!(!bpf.is_empty());
        let mut admin_caps = crate::spec::DEFAULT_CAPABILITIES.to_vec();
        admin_caps.push(CAP_SYS_ADMIN);
        let admin = default_profile(&admin_caps).unwrap();
        let bpf2 = program(&admin);
        assert_ne!(bpf, bpf2, "CAP_SYS_ADMIN changes the profile");
    }

    #[test]
    fn companion_arches_cover_32_bit_abis() {
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(docker_arch(), "amd64");
            assert!(companion_arches().contains(&ScmpArch::X86));
        }
    }
}
