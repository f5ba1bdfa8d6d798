//! The client against a malicious registry (`common/evil_registry.py`, a
//! few lines of Python on loopback): endless and lying bodies stop at the
//! declared size, stalls end with a timeout naming the setting, manifests
//! are capped. Also: an upload that keeps moving is not cut off by the
//! idle timeout, one the registry stops reading is.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_client::{ClientConfig, Error, RegistryClient, Timeouts};
use berth_oci::Digest;
use bytes::Bytes;
use common::{collect, BerthServe};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/evil_registry.py");

struct Evil {
    child: Child,
    registry: String,
}

impl Drop for Evil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Evil {
    fn start() -> Evil {
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

    fn client(&self, idle: u64) -> RegistryClient {
        let config = ClientConfig {
            max_attempts: 1,
            timeouts: Timeouts {
                connect: Some(Duration::from_secs(5)),
                idle: Some(Duration::from_secs(idle)),
                request: Some(Duration::from_secs(30)),
            },
            ..ClientConfig::default()
        };
        RegistryClient::new(&self.registry, config).unwrap()
    }

    /// Bytes the server wrote for requests whose path contains `part`.
    async fn sent(&self, part: &str) -> u64 {
        let url = format!("http://{}/_stats", self.registry);
        let stats: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        stats["sent"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum()
    }
}

/// The image every repository of the evil registry serves.
async fn config_of(c: &RegistryClient, repo: &str) -> (Digest, u64) {
    let m = c.get_manifest(repo, "1", &[]).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.bytes).unwrap();
    let d = v["config"]["digest"].as_str().unwrap().parse().unwrap();
    (d, v["config"]["size"].as_u64().unwrap())
}

#[tokio::test]
async fn an_endless_body_stops_after_the_declared_size() {
    let evil = Evil::start();
    let c = evil.client(10);
    let (d, size) = config_of(&c, "endless/app").await;
    assert_eq!(size, 159);
    let started = Instant::now();
    let blob = c.get_blob("endless/app", &d, Some(size), 0).await.unwrap();
    let e = collect(blob).await.unwrap_err();
    assert!(matches!(e, Error::SizeMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    for part in [d.to_string().as_str(), "159", &evil.registry, "endless/app"] {
        assert!(msg.contains(part), "{part} not in: {msg}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Stopped at once: what the server got out is what the socket buffers
    // held, not hundreds of MB.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = evil.sent("endless").await;
    assert!(sent < 32 << 20, "the server wrote {sent} bytes");
}

#[tokio::test]
async fn a_lying_content_length_fails_before_the_body() {
    let evil = Evil::start();
    let c = evil.client(10);
    let (d, size) = config_of(&c, "liar/app").await;
    let e = c
        .get_blob("liar/app", &d, Some(size), 0)
        .await
        .err()
        .expect("refused before the body");
    assert!(matches!(e, Error::SizeMismatch { .. }), "{e:?}");
    assert!(
        e.to_string().contains("Content-Length 1073741824") && e.to_string().contains("159"),
        "{e}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = evil.sent("liar").await;
    assert!(sent < 32 << 20, "the server wrote {sent} bytes");
}

#[tokio::test]
async fn a_short_body_is_a_size_error() {
    let evil = Evil::start();
    let c = evil.client(10);
    let (d, size) = config_of(&c, "short/app").await;
    let blob = c.get_blob("short/app", &d, Some(size), 0).await.unwrap();
    let e = collect(blob).await.unwrap_err();
    assert!(matches!(e, Error::SizeMismatch { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("ended after 79 of the declared 159 bytes"),
        "{e}"
    );
}

#[tokio::test]
async fn stalls_end_with_the_idle_timeout() {
    let evil = Evil::start();
    let c = evil.client(1);
    let (d, size) = config_of(&c, "hang/app").await;
    // Mid-body.
    let started = Instant::now();
    let blob = c.get_blob("hang/app", &d, Some(size), 0).await.unwrap();
    let e = collect(blob).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                setting: "BERTH_IDLE_TIMEOUT",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("no data for 1s"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Before the headers.
    let started = Instant::now();
    let e = c
        .get_blob("hangheaders/app", &d, Some(size), 0)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(!e.is_transient(), "a timeout is not retried");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A manifest that never comes.
    let e = c
        .get_manifest("slowmanifest/app", "1", &[])
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
}

#[tokio::test]
async fn manifests_are_capped() {
    let evil = Evil::start();
    let c = evil.client(10);
    let e = c
        .get_manifest("hugemanifest/app", "1", &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("larger than 4.0 MiB"), "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = evil.sent("hugemanifest").await;
    assert!(sent < 40 << 20, "the server wrote {sent} bytes");
}

#[tokio::test]
async fn an_upload_the_registry_stops_reading_times_out() {
    let evil = Evil::start();
    let c = evil.client(1);
    let data = vec![7u8; 64 << 20];
    let digest = Digest::sha256_of(&data);
    let started = Instant::now();
    let e = c
        .push_blob(
            "stallupload/app",
            &digest,
            data.len() as u64,
            common::chunks(&data, 1 << 20),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Timeout {
                setting: "BERTH_IDLE_TIMEOUT",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_upload_that_keeps_moving_is_not_cut_off() {
    let srv = BerthServe::start().await;
    let c = RegistryClient::new(
        &srv.registry(),
        ClientConfig {
            timeouts: Timeouts {
                connect: Some(Duration::from_secs(5)),
                idle: Some(Duration::from_secs(1)),
                request: Some(Duration::from_secs(2)),
            },
            ..ClientConfig::default()
        },
    )
    .unwrap();
    // 3.5 s in all, longer than both limits; never 1 s without a chunk.
    let data = common::noise(7, 14 * 4096);
    let digest = Digest::sha256_of(&data);
    let pieces: Vec<Bytes> = data.chunks(4096).map(Bytes::copy_from_slice).collect();
    let slow = futures_util::stream::unfold(pieces.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        Some((Ok(next), it))
    });
    c.push_blob("slow/app", &digest, data.len() as u64, slow)
        .await
        .unwrap();
    let blob = c
        .get_blob("slow/app", &digest, Some(data.len() as u64), 0)
        .await
        .unwrap();
    assert_eq!(collect(blob).await.unwrap(), data);
}
