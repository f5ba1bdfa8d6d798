//! The `berth` command line: serve's flags and config file, graceful
//! shutdown, and the offline commands' refusal to share a root with a server.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::{free_port, sigterm, spawn_serve};

fn berth(args: &[&str], root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn config_file_sets_what_flags_do_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:{port}\"\nroot = \"{}\"\nread_only = true\nlog_level = \"warn\"\n",
            dir.path().join("root").display()
        ),
    )
    .unwrap();
    let mut server = spawn_serve(&["--config", config.to_str().unwrap()], port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(
            c.get(format!("{base}/v2/")).send().await.unwrap().status(),
            200
        );
        let r = c
            .post(format!("{base}/v2/a/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "read_only from the config file");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    });
    sigterm(&server);
    assert!(server.wait().unwrap().success());
    assert!(
        dir.path().join("root/meta.redb").exists(),
        "root from the config file"
    );
}

#[test]
fn bad_config_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "adress = \"127.0.0.1:1\"\n").unwrap();
    let out = berth(&["serve", "--config", config.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("berth.toml") && err.contains("adress"),
        "{err}"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().to_str().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_serve(&["--root", root, "--addr", &addr], port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://{addr}");
    let status = rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{base}/v2/slow/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        // A body that trickles in over ~1.5 s; SIGTERM arrives meanwhile.
        let chunks = futures_util::stream::unfold(0, |i| async move {
            if i == 15 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(vec![b'x'; 1000]), i + 1))
        });
        let patch = tokio::spawn(
            c.patch(format!("{base}{loc}"))
                .body(reqwest::Body::wrap_stream(chunks))
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        sigterm(&server);
        let r = patch.await.unwrap().unwrap();
        (
            r.status(),
            r.headers()["range"].to_str().unwrap().to_string(),
        )
    });
    assert_eq!(status.0, 202, "the in-flight PATCH completed");
    assert_eq!(status.1, "0-14999");
    assert!(server.wait().unwrap().success(), "clean exit after SIGTERM");
}

#[test]
fn gc_refuses_a_root_a_server_is_using() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().to_str().unwrap();
    let mut server = spawn_serve(
        &["--root", root, "--addr", &format!("127.0.0.1:{port}")],
        port,
    );
    let out = berth(&["gc"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use") && err.contains("stop it first"),
        "{err}"
    );
    sigterm(&server);
    server.wait().unwrap();
    let out = berth(&["gc", "--dry-run"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would remove 0 manifests, 0 blobs"));
}

/// Pushes `data` as a blob of `repo` (monolithic POST) and returns its digest.
async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> String {
    let d = format!("sha256:{}", sha256_hex(data));
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    d
}

fn sha256_hex(data: &[u8]) -> String {
    berth_oci::Digest::sha256_of(data).hex().to_string()
}

/// A one-layer OCI image in `repo`; returns the manifest's bytes.
async fn push_image(c: &reqwest::Client, base: &str, repo: &str, tag: &str, seed: u8) -> Vec<u8> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
    let layer = vec![seed; 1000];
    let cd = push_blob(c, base, repo, config.as_bytes()).await;
    let ld = push_blob(c, base, repo, &layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": 1000}],
    }))
    .unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    manifest
}

/// `berth fsck` reports an index whose child is missing (exit non-zero),
/// unless told the root serves sparse indexes; referrers whose subject is
/// gone are notes. The sparse index is how such a root is made through the
/// API alone (a DELETE of an index child is refused).
#[test]
fn fsck_reports_indexes_with_missing_children() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().to_str().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_serve(
        &["--root", root, "--addr", &addr, "--allow-sparse-index"],
        port,
    );
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let absent = rt.block_on(async {
        let c = reqwest::Client::new();
        let present = push_image(&c, &base, "app", "one", 1).await;
        let absent =
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "x": "never pushed"}))
                .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": format!("sha256:{}", sha256_hex(&present)), "size": present.len()},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": format!("sha256:{}", sha256_hex(&absent)), "size": absent.len()},
            ],
        }))
        .unwrap();
        let r = c
            .put(format!("{base}/v2/app/manifests/multi"))
            .header("content-type", "application/vnd.oci.image.index.v1+json")
            .body(index)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // The present child cannot be deleted while the index names it.
        let r = c
            .delete(format!(
                "{base}/v2/app/manifests/sha256:{}",
                sha256_hex(&present)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        format!("sha256:{}", sha256_hex(&absent))
    });
    sigterm(&server);
    assert!(server.wait().unwrap().success());

    let out = berth(&["fsck"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("problem: app: index")
            && stdout.contains(&format!("names child manifest {absent}"))
            && stdout.contains(": 1 problems"),
        "{stdout}"
    );
    let out = berth(&["fsck", "--allow-sparse-index"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("note: ") && stdout.contains(": 0 problems"),
        "{stdout}"
    );
}
