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
