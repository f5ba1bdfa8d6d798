//! `-p HOST:CTR`: berth's own port forwarder, a child of the supervisor.
//! The supervisor binds the host's listening sockets (in the host's network
//! namespace) before the container starts, so a port in use is an error at
//! once; the forwarder then joins the container's network namespace and
//! connects every accepted connection to `127.0.0.1:CTR` there. It works
//! rootless and without slirp4netns or pasta (with `--network none` too:
//! the container still has only loopback, reachable through the published
//! ports alone). TCP only.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use crate::container::PortMap;

/// The host's listening sockets of `ports`; the error names the port.
pub fn bind(ports: &[PortMap]) -> Result<Vec<(TcpListener, PortMap)>, String> {
    let mut out = Vec::new();
    for p in ports {
        let ip = if p.host_ip.is_empty() {
            "0.0.0.0"
        } else {
            &p.host_ip
        };
        let l = TcpListener::bind((ip, p.host_port)).map_err(|e| match e.raw_os_error() {
            Some(libc::EADDRINUSE) => format!(
                "Bind for {ip}:{} failed: port is already allocated",
                p.host_port
            ),
            Some(libc::EACCES) => format!(
                "cannot publish port {ip}:{}: ports below net.ipv4.ip_unprivileged_port_start need root ({e})",
                p.host_port
            ),
            _ => format!("cannot publish port {ip}:{}: {e}", p.host_port),
        })?;
        let mut actual = p.clone();
        actual.host_port = l.local_addr().map(|a| a.port()).unwrap_or(p.host_port);
        out.push((l, actual));
    }
    Ok(out)
}

/// Forks the forwarder for the container whose process is `pid`; its pid.
/// The caller (the supervisor) is single-threaded.
pub fn spawn(pid: u32, listeners: &[(TcpListener, PortMap)]) -> Option<libc::pid_t> {
    // SAFETY: single-threaded caller; the child only uses its own state.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Some(child.as_raw()),
        Ok(nix::unistd::ForkResult::Child) => {
            let code = match child_main(pid, listeners) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(code) }
        }
        Err(_) => None,
    }
}

fn child_main(pid: u32, listeners: &[(TcpListener, PortMap)]) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Nothing of the supervisor's (the caller's stdout when attached, the
    // report pipe, the container's pipes) stays open here.
    let keep: Vec<i32> = listeners.iter().map(|(l, _)| l.as_raw_fd()).collect();
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
    let open: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing descriptors this process does not use.
            unsafe { libc::close(fd) };
        }
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    // SAFETY: setns on a namespace descriptor; threads started after this
    // are in the container's network namespace too.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    drop(ns);
    let mut threads = Vec::new();
    for (l, p) in listeners {
        let l = l.try_clone()?;
        let port = p.container_port;
        threads.push(std::thread::spawn(move || accept_loop(l, port)));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn accept_loop(l: TcpListener, port: u16) {
    for conn in l.incoming() {
        let Ok(outer) = conn else { continue };
        std::thread::spawn(move || {
            let Ok(inner) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let _ = outer.set_nodelay(true);
            let _ = inner.set_nodelay(true);
            let (Ok(o2), Ok(i2)) = (outer.try_clone(), inner.try_clone()) else {
                return;
            };
            let up = std::thread::spawn(move || pipe(o2, i2));
            pipe(inner, outer);
            let _ = up.join();
        });
    }
}

/// Copies `from` to `to` until EOF, then half-closes `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
