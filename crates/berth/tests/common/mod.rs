//! Starting `berth serve` as a child process for the CLI-level tests.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

pub mod evil;
pub mod layers;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `berth serve ARGS` and waits until `port` accepts connections.
pub fn spawn_serve(args: &[&str], port: u16) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start berth serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "berth serve did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A `berth serve` child, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `berth serve` on `root` and a free port.
pub fn serve(root: &Path) -> (Server, u16) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let root = root.to_str().expect("utf-8 path");
    let child = spawn_serve(
        &["--root", root, "--addr", &addr, "--log-level", "warn"],
        port,
    );
    (Server(child), port)
}

/// Debian's distribution (`docker-registry`), for tests against a peer.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// Debian's distribution without auth, storing under `dir`.
pub fn start_distribution(dir: &Path) -> (Server, u16) {
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n",
        dir.join("data").display()
    );
    let path = dir.join("config.yml");
    std::fs::write(&path, config).unwrap();
    let child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

/// Asks a server to shut down gracefully.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// A busybox-static rootfs tarball for `berth import` (build tests): the
/// host's static `/bin/busybox` with its applet symlinks, `/etc/passwd` with
/// `root` and `app` (1000), `/etc/group`, and a world-writable `/tmp`.
/// Written with the tar crate and fixed mtimes, so it is byte-identical
/// every time. `None` if the host has no static busybox.
pub fn busybox_rootfs(dir: &Path) -> Option<std::path::PathBuf> {
    let busybox = std::fs::read("/bin/busybox").ok()?;
    let path = dir.join("busybox-rootfs.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    };
    for (d, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, format!("{d}/"), std::io::empty())
            .unwrap();
    }
    let mut h = header(tar::EntryType::Regular, 0o755, busybox.len() as u64);
    b.append_data(&mut h, "bin/busybox", busybox.as_slice())
        .unwrap();
    for applet in [
        "sh", "echo", "cat", "ls", "sleep", "date", "chown", "chmod", "id", "touch", "mkdir",
        "stat", "false", "true", "rm", "cp", "env", "pwd", "test", "wc", "head",
    ] {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    let files: [(&str, &str); 2] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        ),
        ("etc/group", "root:x:0:\napp:x:1000:\n"),
    ];
    for (name, text) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64);
        b.append_data(&mut h, name, text.as_bytes()).unwrap();
    }
    b.finish().unwrap();
    Some(path)
}

/// The uid and gid of the user `berth` the rootless tests run as.
pub fn berth_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"berth") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// User `berth`'s ids when the rootless tests can run here (as root, with
/// that user present); otherwise says why they are skipped.
pub fn rootless_user() -> Option<(u32, u32)> {
    if !is_root() {
        eprintln!("SKIP: the rootless tests start berth as user `berth` and need root");
        return None;
    }
    let user = berth_user();
    if user.is_none() {
        eprintln!("SKIP: no user `berth` (with /etc/subuid and /etc/subgid ranges)");
    }
    user
}

/// A fresh work directory under /tmp for one test, holding the busybox
/// rootfs as `busybox-rootfs.tar`; owned by `user` when given (berth then
/// runs as that user and must reach its files).
pub fn work_dir(prefix: &str, user: Option<(u32, u32)>) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .unwrap();
    let work = tmp.path().to_path_buf();
    let rootfs = busybox_rootfs(&work).expect("a static /bin/busybox");
    if let Some((uid, gid)) = user {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&work, Some(uid), Some(gid)).unwrap();
        std::os::unix::fs::chown(&rootfs, Some(uid), Some(gid)).unwrap();
    }
    (tmp, work)
}
