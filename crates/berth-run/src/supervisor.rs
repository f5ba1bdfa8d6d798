//! The per-container supervisor: berth re-executed as
//! `berth __berth-supervise ROOT RUNDIR ID`, in its own session,
//! single-threaded. It runs the container's process in berth-sandbox, logs
//! its output (json-file), keeps the state file current and, with `--rm`,
//! removes the container when it ends. `start()` is the other side: it
//! spawns the supervisor and follows its report lines on fd 3:
//!
//! ```text
//! S <pid>     the container's process is running (host pid)
//! E <text>    the container could not be started
//! X <code>    the container ended with this code (after --rm cleanup)
//! ```
//!
//! With `attach`, the supervisor's stdout and stderr are the caller's, and
//! it copies the container's output there too; detached they are
//! /dev/null (a stray write cannot block the container).

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use berth_sandbox::{Mount, MountKind, Network, OutputStream, Rootfs, RunSpec};

use crate::container::{Container, NetworkMode, State, Status};
use crate::logs::LogWriter;
use crate::{time, Error, Paths, Result};

/// `argv[1]` that selects the supervisor.
pub const SUPERVISOR_ARG: &str = "__berth-supervise";
const REPORT_FD: libc::c_int = 3;

/// How a started container is followed by the command that started it.
pub struct Started {
    /// Host pid of the container's process; `None` when its command could
    /// not be run at all (not found: 127, not executable: 126), which
    /// `wait()` then returns at once.
    pub pid: Option<u32>,
    early_exit: Option<i32>,
    reports: BufReader<fs::File>,
    child: std::process::Child,
}

static PROXY_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
/// A signal that came before the container's pid was known.
static PENDING: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn proxy_signal(sig: libc::c_int) {
    let pid = PROXY_PID.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    } else {
        PENDING.store(sig, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Docker's `--sig-proxy` for an attached container: from now on SIGINT,
/// SIGTERM, SIGHUP and SIGQUIT sent to this process go to the container's
/// process (one that arrives before it runs is delivered when it does).
/// Installed before the supervisor is spawned, so none is lost.
fn install_signal_proxy() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: installing a handler that only calls kill() or stores.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = proxy_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

impl Started {
    /// Points the signal proxy at the container's process (attached).
    pub fn proxy_signals(&self) {
        let Some(pid) = self.pid else { return };
        PROXY_PID.store(pid as i32, std::sync::atomic::Ordering::SeqCst);
        let pending = PENDING.swap(0, std::sync::atomic::Ordering::SeqCst);
        if pending != 0 {
            // SAFETY: kill with a pid and a signal number.
            unsafe { libc::kill(pid as i32, pending) };
        }
    }

    /// Waits for the container to end (and, with `--rm`, to be removed);
    /// its exit code.
    pub fn wait(mut self) -> Result<i32> {
        if let Some(code) = self.early_exit {
            let _ = self.child.wait();
            return Ok(code);
        }
        let mut line = String::new();
        let code = loop {
            line.clear();
            match self.reports.read_line(&mut line) {
                Ok(0) | Err(_) => break None,
                Ok(_) => {
                    if let Some(c) = line.trim_end().strip_prefix("X ") {
                        break c.parse().ok();
                    }
                }
            }
        };
        let _ = self.child.wait();
        code.ok_or_else(|| {
            Error::Failed("the container's supervisor ended without reporting an exit code".into())
        })
    }

    /// Leaves the container running (`-d`).
    pub fn detach(self) {
        drop(self.reports);
        // The supervisor is in its own session; it is reparented when this
        // process exits.
        std::mem::forget(self.child);
    }
}

/// Starts the container's supervisor and waits until the container's
/// process runs. The caller is in berth's build namespace (rootless), which
/// the supervisor inherits.
pub fn start(paths: &Paths, c: &Container, attach: bool) -> Result<Started> {
    let st = c.state(paths);
    if st.status == Status::Running {
        return Err(Error::Conflict(format!(
            "container {} is already running",
            c.name
        )));
    }
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("creating a pipe", io::Error::from(e)))?;
    let w_raw = w.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(SUPERVISOR_ARG)
        .arg(&paths.root)
        .arg(&paths.run)
        .arg(&c.id)
        .env_clear()
        .stdin(Stdio::null());
    if let Some(p) = std::env::var_os("PATH") {
        cmd.env("PATH", p);
    }
    if attach {
        install_signal_proxy();
    } else {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if w_raw == REPORT_FD {
                if libc::fcntl(REPORT_FD, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(w_raw, REPORT_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Its own session: the terminal's ^C is not the container's.
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io("starting the container's supervisor", e))?;
    drop(w);
    let mut reports = BufReader::new(fs::File::from(r));
    let mut line = String::new();
    loop {
        line.clear();
        match reports.read_line(&mut line) {
            Ok(0) | Err(_) => {
                return Err(Error::Failed(
                    "the container's supervisor ended before the container started".into(),
                ))
            }
            Ok(_) => {}
        }
        let l = line.trim_end();
        if let Some(pid) = l.strip_prefix("S ") {
            return Ok(Started {
                pid: pid.parse().ok(),
                early_exit: None,
                reports,
                child,
            });
        }
        if let Some(code) = l.strip_prefix("X ") {
            return Ok(Started {
                pid: None,
                early_exit: Some(code.parse().unwrap_or(125)),
                reports,
                child,
            });
        }
        if let Some(msg) = l.strip_prefix("E ") {
            let mut child = child;
            // It finishes its bookkeeping (and --rm) first.
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut reports, &mut rest);
            let _ = child.wait();
            return Err(Error::Failed(msg.replace("\\n", "\n")));
        }
    }
}

/// Run the supervisor if this process was started as one; otherwise return.
/// Call it first in `main()` (after berth-sandbox's helper check).
pub fn supervisor_main_if_requested() {
    let args: Vec<_> = std::env::args_os().collect();
    if args.get(1).map(|a| a.as_os_str()) != Some(OsStr::new(SUPERVISOR_ARG)) {
        return;
    }
    // SAFETY: F_GETFD only queries the descriptor.
    if args.len() != 5 || unsafe { libc::fcntl(REPORT_FD, libc::F_GETFD) } < 0 {
        eprintln!("{SUPERVISOR_ARG} is internal to berth and is started by berth itself");
        std::process::exit(2);
    }
    // SAFETY: the report pipe is ours; the container never sees it.
    unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let paths = Paths {
        root: PathBuf::from(&args[2]),
        run: PathBuf::from(&args[3]),
    };
    let id = args[4].to_string_lossy().into_owned();
    let code = supervise(&paths, &id);
    report(&format!("X {code}"));
    std::process::exit(0);
}

fn report(line: &str) {
    let mut l = line.replace('\n', "\\n");
    l.push('\n');
    // SAFETY: writing a buffer to our report descriptor.
    let _ = unsafe { libc::write(REPORT_FD, l.as_ptr().cast(), l.len()) };
}

fn hosts_file(c: &Container) -> Vec<u8> {
    if matches!(c.network, NetworkMode::Host) {
        if let Ok(h) = fs::read("/etc/hosts") {
            return h;
        }
    }
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    match c.network {
        NetworkMode::Bridge => s.push_str(&format!("10.0.2.100\t{}\n", c.hostname)),
        _ => s.push_str(&format!("127.0.1.1\t{}\n", c.hostname)),
    }
    s.into_bytes()
}

fn resolv_conf(c: &Container) -> Vec<u8> {
    match c.network {
        NetworkMode::Bridge => format!("nameserver {}\n", berth_sandbox::SLIRP_DNS).into_bytes(),
        _ => fs::read("/etc/resolv.conf").unwrap_or_default(),
    }
}

/// The host pid of running container `id` (a namespace to join).
fn running_pid(paths: &Paths, id: &str, what: &str) -> Result<u32> {
    let other = Container::load(paths, id)
        .map_err(|_| Error::NotFound(format!("{what}: the container {id} is gone")))?;
    let st = other.state(paths);
    if st.status != Status::Running || st.pid == 0 {
        return Err(Error::Conflict(format!(
            "cannot join the namespaces of container {}: it is not running",
            other.name
        )));
    }
    Ok(st.pid)
}

/// The sandbox spec of the container's main process.
pub fn run_spec(paths: &Paths, c: &Container) -> Result<RunSpec> {
    let rootfs = if c.overlay {
        Rootfs::Overlay {
            lowers: c.lowers.clone(),
            upper: c.upper(paths),
            work: c.work(paths),
        }
    } else {
        Rootfs::Dir(c.rootfs_dir(paths))
    };
    let mut spec = RunSpec::new(rootfs, c.args.clone());
    spec.env = c.env.clone();
    spec.cwd = PathBuf::from(&c.working_dir);
    spec.uid = c.uid;
    spec.gid = c.gid;
    spec.additional_gids = c.groups.clone();
    spec.hostname = c.hostname.clone();
    spec.hosts = Some(hosts_file(c));
    spec.resolv_conf = Some(resolv_conf(c));
    spec.network = match c.network {
        NetworkMode::Host | NetworkMode::Container => Network::Host,
        NetworkMode::None => Network::None,
        NetworkMode::Bridge => Network::Isolated,
    };
    spec.readonly_root = c.readonly_rootfs;
    spec.seccomp_bpf = crate::cached::seccomp_bpf(paths);
    spec.mounts.push(Mount {
        target: "/etc/hostname".into(),
        kind: MountKind::File {
            contents: format!("{}\n", c.hostname).into_bytes(),
            mode: 0o644,
            uid: 0,
            gid: 0,
        },
    });
    for b in &c.binds {
        spec.mounts.push(Mount {
            target: b.target.clone(),
            kind: MountKind::Bind {
                source: b.source.clone(),
                readonly: b.readonly,
            },
        });
    }
    if let Some(target) = c.join_target() {
        spec.join = Some(berth_sandbox::Join {
            pid: running_pid(paths, target, "container:")?,
            net: c.join_net.is_some(),
            pid_ns: c.join_pid.is_some(),
        });
    }
    Ok(spec)
}

fn supervise(paths: &Paths, id: &str) -> i32 {
    let c = match Container::load(paths, id) {
        Ok(c) => c,
        Err(e) => {
            report(&format!("E {e}"));
            return 125;
        }
    };
    let me = std::process::id();
    let mut state = State {
        status: Status::Running,
        pid: 0,
        supervisor_pid: me,
        supervisor_start: crate::container::proc_start_time(me).unwrap_or(0),
        started_ns: time::now_ns(),
        finished_ns: 0,
        exit_code: 0,
        error: String::new(),
        ports: Vec::new(),
    };
    let listeners = match crate::forward::bind(&c.ports) {
        Ok(l) => l,
        Err(e) => {
            if c.auto_remove {
                let _ = crate::ops::remove_files(paths, &c);
            }
            report(&format!("E {e}"));
            return 125;
        }
    };
    state.ports = listeners.iter().map(|(_, p)| p.clone()).collect();
    if let Err(e) = state.save(paths, id) {
        report(&format!("E {e}"));
        return 125;
    }
    let mut forwarder = None;
    let mut log = LogWriter::open(&paths.log_file(id)).ok();
    let spec = match run_spec(paths, &c) {
        Ok(s) => s,
        Err(e) => {
            state.status = Status::Exited;
            state.exit_code = 125;
            state.error = e.to_string();
            state.finished_ns = time::now_ns();
            if c.auto_remove {
                let _ = crate::ops::remove_files(paths, &c);
            } else {
                let _ = state.save(paths, id);
            }
            report(&format!("E {e}"));
            return 125;
        }
    };
    let mut on_started = |pid: u32| {
        if !listeners.is_empty() {
            forwarder = crate::forward::spawn(pid, &listeners);
        }
        state.pid = pid;
        let _ = state.save(paths, id);
        report(&format!("S {pid}"));
    };
    let mut on_output = |stream: OutputStream, data: &[u8]| {
        let (i, fd) = match stream {
            OutputStream::Stdout => (0, 1),
            OutputStream::Stderr => (1, 2),
        };
        if let Some(l) = log.as_mut() {
            l.write(i, data);
        }
        // Attached: the caller's terminal or pipe; detached: /dev/null.
        let _ = write_fd(fd, data);
    };
    let result = berth_sandbox::run_observed(&spec, &mut on_started, &mut on_output);
    let started = state.pid != 0;
    if let Some(f) = forwarder {
        // SAFETY: ending and reaping our own child.
        unsafe {
            libc::kill(f, libc::SIGKILL);
            libc::waitpid(f, std::ptr::null_mut(), 0);
        }
    }
    drop(listeners);
    state.ports.clear();
    let code = match result {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(sig)) => 128 + sig,
            _ => 125,
        },
        Err(e) => {
            let msg = e.to_string();
            if let Some(l) = log.as_mut() {
                l.write(1, format!("berth: error: {msg}\n").as_bytes());
            }
            state.error = msg.clone();
            if !started {
                report(&format!("E {msg}"));
            }
            125
        }
    };
    if let Some(l) = log.as_mut() {
        l.finish();
    }
    state.status = Status::Exited;
    state.pid = 0;
    state.exit_code = code;
    state.finished_ns = time::now_ns();
    if c.auto_remove {
        let _ = crate::ops::remove_files(paths, &c);
    } else {
        let _ = state.save(paths, id);
    }
    code
}

fn write_fd(fd: libc::c_int, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    io::stdout().flush()
}
