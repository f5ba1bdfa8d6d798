//! Starting `berth serve` as a child process for the CLI-level tests.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

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
