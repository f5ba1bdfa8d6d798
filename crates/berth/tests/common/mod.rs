//! Starting `berth serve` as a child process for the CLI-level tests.

use std::net::TcpListener;
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
