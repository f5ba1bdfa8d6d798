//! [`Network::Isolated`](crate::Network::Isolated): a step's own network
//! namespace with outbound access through `slirp4netns`, the user-mode
//! network stack BuildKit (rootlesskit) and podman use rootless. It runs in
//! the builder's network namespace and forwards the step's connections as
//! its own sockets; `--disable-host-loopback` keeps the host's loopback
//! (10.0.2.2 -> 127.0.0.1) out of reach, so services bound to localhost on
//! the build host are not exposed to RUN steps.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Result, SandboxError};
use crate::sys;

/// How long slirp4netns may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether [`Network::Isolated`](crate::Network::Isolated) can be used here:
/// the path of `slirp4netns`, or why not (to be shown to the user with the
/// fix). Checked once per process.
pub fn isolated_network() -> std::result::Result<PathBuf, String> {
    static PROBE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> std::result::Result<PathBuf, String> {
    let exe = find_in_path("slirp4netns")
        .ok_or_else(|| "slirp4netns is not installed (apt-get install slirp4netns)".to_string())?;
    // slirp4netns opens the tap device with the builder's credentials (root
    // in berth's user namespace when rootless).
    match File::options().read(true).write(true).open("/dev/net/tun") {
        Ok(_) => Ok(exe),
        Err(e) => Err(format!(
            "slirp4netns cannot open /dev/net/tun ({e}); most distributions make it mode 0666 (`chmod 0666 /dev/net/tun`)"
        )),
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A running slirp4netns attached to one step's network namespace. Dropping
/// it closes its exit pipe, which makes it exit, and reaps it.
pub(crate) struct Slirp {
    child: Child,
    exit_w: Option<OwnedFd>,
}

impl Slirp {
    /// Attach slirp4netns to the network namespace of `pid` and wait until
    /// it has configured `tap0`, its address and the default route.
    pub(crate) fn start(exe: &Path, pid: u32) -> Result<Slirp> {
        let (ready_r, ready_w) = sys::pipe_cloexec()?;
        let (exit_r, exit_w) = sys::pipe_cloexec()?;
        let log = log_file()?;
        let (ready_fd, exit_fd) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
        let mut cmd = Command::new(exe);
        cmd.args([
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            // It parses the step's packets: confine it too (an empty
            // root, no capabilities, a seccomp filter of its own).
            "--enable-sandbox",
            "--enable-seccomp",
        ])
        .arg(format!("--ready-fd={ready_fd}"))
        .arg(format!("--exit-fd={exit_fd}"))
        .arg(pid.to_string())
        .arg("tap0")
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.try_clone().map_err(|e| {
            SandboxError::sys("duplicating the slirp4netns log", e)
        })?));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                for fd in [ready_fd, exit_fd] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            SandboxError::Setup(format!(
                "starting {} for the step's network: {e}",
                exe.display()
            ))
        })?;
        drop((ready_w, exit_r));
        let mut slirp = Slirp {
            child,
            exit_w: Some(exit_w),
        };
        if let Err(why) = wait_ready(ready_r) {
            let _ = slirp.child.kill();
            let _ = slirp.child.wait();
            return Err(SandboxError::Setup(format!(
                "slirp4netns did not set up the step's network ({why}){}",
                read_log(log)
            )));
        }
        Ok(slirp)
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        // The step is over and slirp4netns keeps no state worth a clean
        // exit: stop it at once rather than wait for it to notice.
        drop(self.exit_w.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// slirp4netns writes "1" on the ready fd once the namespace is configured.
fn wait_ready(ready: OwnedFd) -> std::result::Result<(), String> {
    let mut pfd = libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = READY_TIMEOUT.as_millis() as libc::c_int;
    loop {
        // SAFETY: polling one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n == 0 {
            return Err(format!("no answer in {} s", READY_TIMEOUT.as_secs()));
        }
        break;
    }
    let mut byte = [0u8; 1];
    match File::from(ready).read(&mut byte) {
        Ok(1) => Ok(()),
        Ok(_) => Err("it exited".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// An anonymous file for slirp4netns's messages: read only when it fails,
/// and never a pipe that could fill up while a long step runs.
fn log_file() -> Result<File> {
    let name = c"slirp4netns-log";
    // SAFETY: memfd_create with a valid name; the fd is ours.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(SandboxError::last_os("creating the slirp4netns log"));
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn read_log(mut log: File) -> String {
    let mut text = String::new();
    let _ = log.rewind();
    let _ = log.take(8192).read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}
