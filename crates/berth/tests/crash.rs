//! Durability: `kill -9` of `berth serve` in the middle of many concurrent
//! pushes leaves no partial blob or manifest visible; after a restart every
//! acknowledged push is there, every blob verifies against its digest and
//! every manifest's references resolve (`berth fsck` agrees).

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_oci::Digest;

const CLIENTS: usize = 24;

mod common;
use common::{free_port, spawn_serve};

fn start(root: &Path, port: u16) -> Child {
    let addr = format!("127.0.0.1:{port}");
    spawn_serve(
        &[
            "--log-level",
            "error",
            "--root",
            root.to_str().unwrap(),
            "--addr",
            &addr,
        ],
        port,
    )
}

/// Deterministic pseudo-random bytes (xorshift), so no rand dependency.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn push_blob(
    c: &reqwest::Client,
    base: &str,
    repo: &str,
    blob: &[u8],
    chunked: bool,
) -> Option<Digest> {
    let d = Digest::sha256_of(blob);
    if !chunked {
        let r = c
            .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
            .body(blob.to_vec())
            .send()
            .await
            .ok()?;
        return (r.status() == 201).then_some(d);
    }
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .ok()?;
    let mut loc = r.headers().get("location")?.to_str().ok()?.to_string();
    let mut off = 0;
    for chunk in blob.chunks(blob.len() / 3 + 1) {
        let r = c
            .patch(format!("{base}{loc}"))
            .header(
                "content-range",
                format!("{}-{}", off, off + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .ok()?;
        if r.status() != 202 {
            return None;
        }
        loc = r.headers().get("location")?.to_str().ok()?.to_string();
        off += chunk.len();
    }
    let r = c.put(format!("{base}{loc}?digest={d}")).send().await.ok()?;
    (r.status() == 201).then_some(d)
}

/// Pushes images until the server dies; returns (repo, tag, digest) of every
/// manifest the server acknowledged with 201.
async fn pusher(
    base: String,
    client: usize,
    round: usize,
    acked: Arc<Mutex<Vec<(String, String, Digest)>>>,
) {
    let c = reqwest::Client::new();
    let repo = format!("crash/c{client}");
    for i in 0.. {
        let seed = (round * 1_000_000 + client * 10_000 + i) as u64;
        let config = format!("{{\"seed\":{seed}}}").into_bytes();
        let layer_a = data(seed, 1024 + (seed as usize * 7919) % (512 << 10));
        let layer_b = data(seed + 1, 100 + (seed as usize % 5000));
        let (Some(cd), Some(la), Some(lb)) = (
            push_blob(&c, &base, &repo, &config, false).await,
            push_blob(&c, &base, &repo, &layer_a, i % 2 == 0).await,
            push_blob(&c, &base, &repo, &layer_b, false).await,
        ) else {
            return;
        };
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": la, "size": layer_a.len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": lb, "size": layer_b.len()},
            ],
        })
        .to_string();
        let tag = format!("r{round}-{i}");
        let Ok(r) = c
            .put(format!("{base}/v2/{repo}/manifests/{tag}"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
        else {
            return;
        };
        if r.status() != 201 {
            return;
        }
        acked
            .lock()
            .unwrap()
            .push((repo.clone(), tag, Digest::sha256_of(manifest.as_bytes())));
    }
}

async fn check_acknowledged(base: &str, acked: &[(String, String, Digest)]) {
    let c = reqwest::Client::new();
    for (repo, tag, digest) in acked {
        let r = c
            .get(format!("{base}/v2/{repo}/manifests/{tag}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "acknowledged {repo}:{tag} lost after kill -9"
        );
        let body = r.bytes().await.unwrap();
        assert_eq!(&Digest::sha256_of(&body), digest, "{repo}:{tag} changed");
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let layers = m["layers"].as_array().unwrap();
        for d in layers.iter().chain(std::iter::once(&m["config"])) {
            let d = d["digest"].as_str().unwrap();
            let r = c
                .get(format!("{base}/v2/{repo}/blobs/{d}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{repo}: blob {d} of {tag} lost");
            let blob = r.bytes().await.unwrap();
            assert_eq!(
                Digest::sha256_of(&blob).to_string(),
                d,
                "{repo}: blob {d} corrupt"
            );
        }
    }
}

#[test]
fn kill_9_during_concurrent_pushes_leaves_a_consistent_root() {
    let root = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut all_acked = Vec::new();
    for round in 0..3 {
        let port = free_port();
        let mut server = start(root.path(), port);
        let base = format!("http://127.0.0.1:{port}");
        // Everything acknowledged in earlier rounds survived the kills.
        rt.block_on(check_acknowledged(&base, &all_acked));

        let acked = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|i| tokio::spawn(pusher(base.clone(), i, round, acked.clone())))
                .collect();
            // Kill while pushes are in flight, but only after some were
            // acknowledged (a loaded machine may take longer than usual).
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while acked.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            server.kill().unwrap(); // SIGKILL
            server.wait().unwrap();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            !acked.is_empty(),
            "round {round}: no push completed before the kill"
        );
        all_acked.extend(acked);
    }

    let port = free_port();
    let mut server = start(root.path(), port);
    rt.block_on(check_acknowledged(
        &format!("http://127.0.0.1:{port}"),
        &all_acked,
    ));
    server.kill().unwrap();
    server.wait().unwrap();

    // Offline: every blob re-hashes to its name, every reference resolves.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["fsck", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fsck failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": 0 problems"), "{stdout}");
    // No leftover partial writes under blobs/: only full digests.
    for entry in std::fs::read_dir(root.path().join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(name.len(), 64, "unexpected file {name:?} in blobs/");
    }
    eprintln!(
        "{} acknowledged images verified after 3 kills",
        all_acked.len()
    );
}
