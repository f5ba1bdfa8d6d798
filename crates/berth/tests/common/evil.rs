//! The malicious registry of berth-client's tests
//! (`crates/berth-client/tests/common/evil_registry.py`) as a child process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../berth-client/tests/common/evil_registry.py"
);

pub struct Evil {
    child: Child,
    /// `127.0.0.1:PORT`
    pub registry: String,
}

impl Drop for Evil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Evil {
    pub fn start() -> Evil {
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("python3 is needed for this test");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the script prints its port");
        Evil {
            child,
            registry: format!("127.0.0.1:{port}"),
        }
    }

    /// Bytes the server wrote for requests whose path contains `part`.
    pub fn sent(&self, part: &str) -> u64 {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://{}/_stats", self.registry)])
            .output()
            .unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["sent"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    }

    /// How many requests the server saw whose line contains `part`.
    pub fn requests(&self, part: &str) -> usize {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://{}/_stats", self.registry)])
            .output()
            .unwrap();
        let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r.as_str().unwrap().contains(part))
            .count()
    }
}
