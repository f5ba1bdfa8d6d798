//! The local store shared between processes (`berth serve` holding the
//! root, commands going through its local endpoint; two commands without a
//! server) and `berth tag`, `rmi`, `import`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_oci::{Digest, Reference};
use berth_store::{Access, Store};

mod common;
use common::{free_port, serve, spawn_serve, Server};

/// `berth --root ROOT ARGS` with a private Docker config.
fn berth_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.arg("--root")
        .arg(root)
        .args(args)
        .env("DOCKER_CONFIG", root.with_extension("docker"))
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("BERTH_LOCK_TIMEOUT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn berth(root: &Path, args: &[&str]) -> Output {
    berth_env(root, args, &[])
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "berth succeeded unexpectedly: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A small rootfs tarball (written with the tar crate: deterministic).
fn rootfs_tar(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join(format!(
        "rootfs-{}.tar",
        &Digest::sha256_of(text.as_bytes()).hex()[..8]
    ));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("etc/hello", text.as_bytes(), 0o644);
    add("bin/tool", &vec![0x5a; 200_000], 0o755);
    b.finish().unwrap();
    path
}

fn gzip(path: &Path) -> PathBuf {
    let out = path.with_extension("tar.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&out).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&std::fs::read(path).unwrap()).unwrap();
    enc.finish().unwrap();
    out
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn images_json(root: &Path) -> Vec<(String, String, String)> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(berth(root, &["images", "--format", "json"]))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["Repository"].as_str().unwrap().to_string(),
                r["Tag"].as_str().unwrap().to_string(),
                r["Digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn fsck_clean(root: &Path) {
    let store = Store::open(root, Access::Shared).unwrap();
    let report = store.fsck().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        std::fs::read_dir(root.join("ingest/tmp")).unwrap().count(),
        0,
        "scratch files left behind"
    );
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .count()
}

fn http_get(port: u16, path: &str) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    })
}

#[test]
fn import_makes_a_deterministic_one_layer_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tar = rootfs_tar(dir.path(), "hello\n");
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let args = [
        "import",
        "--change",
        r#"CMD ["/bin/tool", "run"]"#,
        "-c",
        "ENV PATH=/bin",
        "--change",
        "EXPOSE 8080",
        "-m",
        "made in a test",
        "--platform",
        "linux/arm64/v8",
    ];
    let run = |src: &Path, name: &str| {
        let mut a = args.to_vec();
        a.push(src.to_str().unwrap());
        a.push(name);
        ok(berth_env(&root, &a, &epoch)).trim().to_string()
    };
    let digest = run(&tar, "demo/app:1");
    assert!(digest.starts_with("sha256:"), "{digest}");
    // Same input, same time: same image; gzip input holds the same tar.
    assert_eq!(run(&tar, "demo/app:2"), digest);
    assert_eq!(run(&gzip(&tar), "demo/app:3"), digest);
    // From standard input, without a name: stored by digest in `imported`.
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(&root)
        .args(["import", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&tar).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let unnamed: Digest = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let store = Store::open(&root, Access::Shared).unwrap();
    let m = store
        .manifest("demo/app", &Reference::Tag("1".into()))
        .unwrap()
        .unwrap();
    assert_eq!(m.digest.to_string(), digest);
    assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    let manifest = json(&m.bytes);
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_digest: Digest = layer["digest"].as_str().unwrap().parse().unwrap();
    let stored = store.blobs.read(&layer_digest).unwrap();
    assert_eq!(stored[..2], [0x1f, 0x8b], "layer is gzip-compressed");
    let config_digest: Digest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let config = json(&store.blobs.read(&config_digest).unwrap());
    let diff_id = Digest::sha256_of(&std::fs::read(&tar).unwrap()).to_string();
    assert_eq!(config["rootfs"]["diff_ids"][0], diff_id.as_str());
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["variant"], "v8");
    assert_eq!(config["os"], "linux");
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/bin/tool", "run"])
    );
    assert_eq!(config["config"]["Env"], serde_json::json!(["PATH=/bin"]));
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(config["history"][0]["comment"], "made in a test");
    let unnamed_m = store
        .manifest("imported", &Reference::Digest(unnamed.clone()))
        .unwrap()
        .expect("untagged import stored by digest");
    let unnamed_config = json(
        &json(&unnamed_m.bytes)["config"]["digest"]
            .as_str()
            .map(|d| store.blobs.read(&d.parse().unwrap()).unwrap())
            .unwrap(),
    );
    assert_eq!(unnamed_config["history"][0]["comment"], "Imported from -");
    assert!(store
        .tags("imported", None, None)
        .unwrap()
        .unwrap()
        .items
        .is_empty());
    drop(store);
    fsck_clean(&root);
}

#[test]
fn broken_imports_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tar = rootfs_tar(dir.path(), "ok\n");
    ok(berth(&root, &["import", tar.to_str().unwrap(), "good:1"]));
    let before = blob_count(&root);

    let gz = std::fs::read(gzip(&tar)).unwrap();
    let truncated = dir.path().join("truncated.tar.gz");
    std::fs::write(&truncated, &gz[..gz.len() / 2]).unwrap();
    let not_tar = dir.path().join("notes.txt");
    std::fs::write(
        &not_tar,
        "these are not the files you are looking for\n".repeat(40),
    )
    .unwrap();
    let plain = std::fs::read(&tar).unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &plain[..plain.len() - 100_000]).unwrap();
    for file in [&truncated, &not_tar, &cut] {
        let err = failed(berth(&root, &["import", file.to_str().unwrap(), "bad:1"]));
        assert!(
            err.contains("truncated or corrupt"),
            "{}: {err}",
            file.display()
        );
    }
    let err = failed(berth(&root, &["import", "/nonexistent.tar", "bad:1"]));
    assert!(err.contains("cannot open /nonexistent.tar"), "{err}");
    let err = failed(berth(
        &root,
        &[
            "import",
            "--change",
            "RUN rm -rf /",
            tar.to_str().unwrap(),
            "bad:1",
        ],
    ));
    assert!(err.contains("supported: CMD"), "{err}");
    let err = failed(berth(
        &root,
        &[
            "import",
            tar.to_str().unwrap(),
            "bad@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
    ));
    assert!(err.contains("not a digest"), "{err}");

    let names: Vec<_> = images_json(&root)
        .into_iter()
        .map(|(r, t, _)| format!("{r}:{t}"))
        .collect();
    assert_eq!(names, ["library/good:1"]);
    assert_eq!(blob_count(&root), before, "no blob from a broken import");
    fsck_clean(&root);
}

#[test]
fn tag_and_rmi_like_docker() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tar = rootfs_tar(dir.path(), "tagging\n");
    let epoch = [("SOURCE_DATE_EPOCH", "0")];
    let d = ok(berth_env(
        &root,
        &["import", tar.to_str().unwrap(), "alpine"],
        &epoch,
    ))
    .trim()
    .to_string();

    // Docker's normalisation: alpine = docker.io/library/alpine:latest.
    ok(berth(
        &root,
        &["tag", "docker.io/library/alpine:latest", "alpine:3"],
    ));
    ok(berth(
        &root,
        &["tag", &format!("alpine@{d}"), "team/app:v1"],
    ));
    let mut listed = images_json(&root);
    listed.sort();
    assert_eq!(
        listed,
        [
            ("library/alpine".to_string(), "3".to_string(), d.clone()),
            (
                "library/alpine".to_string(),
                "latest".to_string(),
                d.clone()
            ),
            ("team/app".to_string(), "v1".to_string(), d.clone()),
        ]
    );
    let err = failed(berth(&root, &["tag", "nosuch:1", "x:1"]));
    assert!(err.contains("No such image: nosuch:1"), "{err}");
    let err = failed(berth(&root, &["tag", "alpine", &format!("x@{d}")]));
    assert!(err.contains("cannot be a digest"), "{err}");

    // One of several tags: untag only.
    assert_eq!(
        ok(berth(&root, &["rmi", "alpine:3"])),
        "Untagged: alpine:3\n"
    );
    // By digest while two repositories name it: refused without -f.
    let err = failed(berth(&root, &["rmi", &d]));
    assert!(
        err.contains("must be forced") && err.contains("team/app"),
        "{err}"
    );
    // The last tag of a repository: the manifest leaves it, but another
    // repository still names the image, so it is not "Deleted".
    assert_eq!(
        ok(berth(&root, &["rmi", "alpine"])),
        "Untagged: alpine:latest\n"
    );
    let store = Store::open(&root, Access::Shared).unwrap();
    let by_digest = Reference::Digest(d.parse().unwrap());
    assert!(store
        .manifest("library/alpine", &by_digest)
        .unwrap()
        .is_none());
    assert!(store.manifest("team/app", &by_digest).unwrap().is_some());
    drop(store);

    ok(berth(&root, &["tag", "team/app:v1", "team/app:v2"]));
    ok(berth(&root, &["tag", "team/app:v1", "other:1"]));
    // -f on a name: the image goes from every repository and tag.
    let out = ok(berth(&root, &["rmi", "-f", "team/app:v2"]));
    assert_eq!(
        out,
        format!("Untagged: other:1\nUntagged: team/app:v1\nUntagged: team/app:v2\nDeleted: {d}\n")
    );
    assert!(images_json(&root).is_empty());

    // A short digest (as `berth images` prints it) and unknown images.
    let d2 = ok(berth_env(
        &root,
        &["import", tar.to_str().unwrap(), "again:1"],
        &epoch,
    ))
    .trim()
    .to_string();
    assert_eq!(d2, d);
    let out = berth(&root, &["rmi", "nosuch", &d[..19]]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Untagged: again:1\nDeleted: {d}\n")
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image: nosuch"));
    fsck_clean(&root);
}

#[test]
fn commands_share_the_root_with_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tar = rootfs_tar(dir.path(), "served\n");
    let (server, port) = serve(&root);
    let socket = root.join("serve.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no local endpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // import -> visible over TCP at once.
    let d = ok(berth(
        &root,
        &["import", tar.to_str().unwrap(), "web/app:1"],
    ))
    .trim()
    .to_string();
    let (status, body) = http_get(port, "/v2/web/app/manifests/1");
    assert_eq!(status, 200);
    assert_eq!(Digest::sha256_of(&body).to_string(), d);
    // tag, images, push to the server itself (registry -> local -> registry).
    ok(berth(&root, &["tag", "web/app:1", "web/app:2"]));
    assert_eq!(http_get(port, "/v2/web/app/manifests/2").0, 200);
    let names: Vec<_> = images_json(&root)
        .into_iter()
        .map(|(r, t, _)| format!("{r}:{t}"))
        .collect();
    assert_eq!(names, ["web/app:1", "web/app:2"]);
    let remote = format!("127.0.0.1:{port}/mirror/app:1");
    ok(berth(
        &root,
        &[
            "copy",
            "--quiet",
            "local:web/app:1",
            &format!("docker://{remote}"),
        ],
    ));
    ok(berth(
        &root,
        &["pull", "--quiet", &format!("127.0.0.1:{port}/mirror/app:1")],
    ));
    assert_eq!(http_get(port, "/v2/mirror/app/manifests/1").0, 200);
    ok(berth(
        &root,
        &["push", "--quiet", &format!("127.0.0.1:{port}/web/app:2")],
    ));
    // rmi through the server: gone from the registry at once.
    assert_eq!(
        ok(berth(&root, &["rmi", "web/app:1"])),
        "Untagged: web/app:1\n"
    );
    assert_eq!(http_get(port, "/v2/web/app/manifests/1").0, 404);
    assert_eq!(http_get(port, "/v2/web/app/manifests/2").0, 200);

    // SIGKILL leaves a stale socket; commands then open the root directly,
    // and the next server replaces the socket.
    drop(server);
    assert!(socket.exists(), "SIGKILL cannot remove the socket");
    let names: Vec<_> = images_json(&root)
        .into_iter()
        .map(|(r, t, _)| format!("{r}:{t}"))
        .collect();
    assert_eq!(names, ["mirror/app:1", "web/app:2"]);
    let (server, port) = serve(&root);
    ok(berth(&root, &["tag", "web/app:2", "web/app:3"]));
    assert_eq!(http_get(port, "/v2/web/app/manifests/3").0, 200);

    // Graceful shutdown removes the socket.
    common::sigterm(&server.0);
    let mut server = server;
    assert!(server.0.wait().unwrap().success());
    assert!(!socket.exists());
    fsck_clean(&root);
}

#[test]
fn a_read_only_server_still_takes_local_writes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tar = rootfs_tar(dir.path(), "read-only\n");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _server = Server(spawn_serve(
        &[
            "--root",
            root.to_str().unwrap(),
            "--addr",
            &addr,
            "--read-only",
            "--no-delete",
            "--log-level",
            "warn",
        ],
        port,
    ));
    let d = ok(berth(&root, &["import", tar.to_str().unwrap(), "ro/app:1"]))
        .trim()
        .to_string();
    assert_eq!(http_get(port, "/v2/ro/app/manifests/1").0, 200);
    // The public listener refuses pushes.
    let err = failed(berth(
        &root,
        &[
            "copy",
            "--quiet",
            "local:ro/app:1",
            &format!("docker://127.0.0.1:{port}/ro/app:pushed"),
        ],
    ));
    assert!(err.contains("read-only"), "{err}");
    // Local deletes work despite --no-delete.
    ok(berth(&root, &["tag", "ro/app:1", "ro/app:2"]));
    let out = ok(berth(&root, &["rmi", "-f", &d]));
    assert!(out.ends_with(&format!("Deleted: {d}\n")), "{out}");
    assert_eq!(http_get(port, "/v2/ro/app/manifests/2").0, 404);
}

#[test]
fn two_commands_without_a_server_wait_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let tar = rootfs_tar(dir.path(), "locked\n");
    ok(berth(&root, &["import", tar.to_str().unwrap(), "l/app:1"]));

    // This test process holds the database, as a long command would.
    let held = Store::open(&root, Access::Shared).unwrap();
    let start = Instant::now();
    let err = failed(berth_env(
        &root,
        &["images"],
        &[("BERTH_LOCK_TIMEOUT", "0.5")],
    ));
    assert!(start.elapsed() >= Duration::from_millis(500));
    assert!(
        err.contains("locked by another berth process")
            && err.contains(&format!("pid {}", std::process::id()))
            && err.contains("berth serve --root"),
        "{err}"
    );
    // A waiting command proceeds once the holder is gone.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        drop(held);
    });
    let out = ok(berth_env(
        &root,
        &["tag", "l/app:1", "l/app:2"],
        &[("BERTH_LOCK_TIMEOUT", "20")],
    ));
    assert!(out.is_empty());
    release.join().unwrap();
    let names: Vec<_> = images_json(&root)
        .into_iter()
        .map(|(r, t, _)| format!("{r}:{t}"))
        .collect();
    assert_eq!(names, ["l/app:1", "l/app:2"]);

    // Two real commands at once: both succeed (the second waits).
    let spawn = |tag: &str| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("--root")
            .arg(&root)
            .args(["import", tar.to_str().unwrap(), &format!("l/app:{tag}")])
            .output()
            .unwrap()
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| spawn("a"));
        let b = s.spawn(|| spawn("b"));
        ok(a.join().unwrap());
        ok(b.join().unwrap());
    });
    assert_eq!(images_json(&root).len(), 4);
    fsck_clean(&root);
}

/// `berth import URL` from a hostile server (`common/evil.rs`): a body
/// without end stops at `BERTH_MAX_DOWNLOAD_BYTES`, a Content-Length past
/// it is refused before the body, a server that stops sending ends with the
/// idle timeout (exit 6); none of them stores anything.
#[test]
fn imports_from_hostile_urls_are_bounded_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let evil = common::evil::Evil::start();
    let url = |name: &str| format!("http://{}/files/{name}", evil.registry);
    let limits = [
        ("BERTH_MAX_DOWNLOAD_BYTES", "8M"),
        ("BERTH_IDLE_TIMEOUT", "1"),
    ];
    ok(berth_env(
        &root,
        &["import", &url("ok.tar"), "fine:1"],
        &limits,
    ));
    let before = blob_count(&root);

    for (name, code, needle) in [
        (
            "endless",
            1,
            "larger than 8.0 MiB (BERTH_MAX_DOWNLOAD_BYTES)",
        ),
        ("huge", 1, "larger than 8.0 MiB (BERTH_MAX_DOWNLOAD_BYTES)"),
        ("hang", 6, "no data for 1s"),
    ] {
        let started = Instant::now();
        let out = berth_env(&root, &["import", &url(name), "bad:1"], &limits);
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
        assert!(err.contains(&url(name)), "{name}: names the URL: {err}");
        assert!(took < Duration::from_secs(10), "{name}: {took:?}");
    }
    assert!(failed(berth_env(
        &root,
        &["import", &url("hang"), "bad:1"],
        &limits
    ))
    .contains("BERTH_IDLE_TIMEOUT"));
    std::thread::sleep(Duration::from_millis(300));
    // Stopped near the cap: what the server got out is the cap plus the
    // socket buffers, not the 4 GiB the tar announces.
    let sent = evil.sent("/files/endless");
    assert!(sent < 64 << 20, "the server wrote {sent} bytes");
    assert!(evil.sent("/files/huge") < 64 << 20);

    let names: Vec<_> = images_json(&root)
        .into_iter()
        .map(|(r, t, _)| format!("{r}:{t}"))
        .collect();
    assert_eq!(names, ["library/fine:1"]);
    assert_eq!(blob_count(&root), before, "no blob from a failed download");
    fsck_clean(&root);
}
