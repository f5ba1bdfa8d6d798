//! `berth copy`, `pull` and `push` against real servers: two `berth serve`
//! children, Debian's distribution (`docker-registry`) when installed, OCI
//! layouts read by skopeo and unpacked by umoci.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use berth_oci::Digest;

mod common;
use common::{serve, start_distribution, REGISTRY_BIN};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Runs `berth ARGS` with an empty Docker config.
fn berth(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", home.join("docker"))
        .env("XDG_DATA_HOME", home.join("xdg"))
        .output()
        .unwrap()
}

/// Progress (stderr) followed by the result (stdout, the digest last).
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr.clone()).unwrap() + &String::from_utf8(out.stdout.clone()).unwrap()
}

fn last_line(s: &str) -> &str {
    s.lines().last().unwrap_or_default()
}

fn put_blob(layout: &Path, data: &[u8]) -> (Digest, usize) {
    let d = Digest::sha256_of(data);
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(d.hex()), data).unwrap();
    (d, data.len())
}

/// A layer tar holding `/etc/hello` = `text` plus 1 MiB of filler.
fn layer(dir: &Path, text: &str) -> Vec<u8> {
    let rootfs = dir.join(format!(
        "rootfs-{}",
        Digest::sha256_of(text.as_bytes()).hex()
    ));
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), text).unwrap();
    let filler: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(rootfs.join("etc/filler"), filler).unwrap();
    let tar = dir.join("layer.tar");
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args([
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "-cf"
        ])
        .arg(&tar)
        .arg("etc")
        .status()
        .unwrap()
        .success());
    std::fs::read(&tar).unwrap()
}

fn image(layout: &Path, work: &Path, arch: &str) -> (Digest, String) {
    let l = layer(work, &format!("hello from {arch}\n"));
    let (ld, ls) = put_blob(layout, &l);
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [ld]},
    })
    .to_string();
    let (cd, cs) = put_blob(layout, config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    })
    .to_string();
    let (md, _) = put_blob(layout, manifest.as_bytes());
    (md, manifest)
}

struct Fixture {
    layout: PathBuf,
    single: (Digest, String),
    arm: (Digest, String),
    index: (Digest, String),
}

/// An OCI layout with `single` (linux/amd64) and `multi` (an index of
/// linux/amd64 and linux/arm64).
fn fixture(dir: &Path) -> Fixture {
    let layout = dir.join("src-layout");
    std::fs::create_dir_all(&layout).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let single = image(&layout, dir, "amd64");
    let arm = image(&layout, dir, "arm64");
    let desc = |d: &Digest, m: &str, arch: &str| {
        serde_json::json!({"mediaType": OCI_MANIFEST, "digest": d, "size": m.len(),
            "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [desc(&single.0, &single.1, "amd64"), desc(&arm.0, &arm.1, "arm64")],
    })
    .to_string();
    let (id, is) = put_blob(&layout, index.as_bytes());
    let top = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": single.0, "size": single.1.len(),
             "annotations": {"org.opencontainers.image.ref.name": "single"}},
            {"mediaType": OCI_INDEX, "digest": id, "size": is,
             "annotations": {"org.opencontainers.image.ref.name": "multi"}},
        ],
    });
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    Fixture {
        layout,
        single,
        arm,
        index: (id, index),
    }
}

fn get_manifest(port: u16, repo: &str, reference: &str) -> (u16, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(format!(
                "http://127.0.0.1:{port}/v2/{repo}/manifests/{reference}"
            ))
            .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    })
}

#[test]
fn copy_between_layouts_registries_and_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let fx = fixture(home);
    let (_a, pa) = serve(&home.join("root-a"));
    let (_b, pb) = serve(&home.join("root-b"));
    let layout = fx.layout.to_str().unwrap();

    // OCI layout -> registry: a single image and a two-platform index.
    let out = ok(&berth(
        &[
            "copy",
            &format!("oci:{layout}:single"),
            &format!("docker://127.0.0.1:{pa}/src/app:1"),
        ],
        home,
    ));
    assert!(out.contains("Copied sha256:"), "{out}");
    assert!(
        out.contains(&format!("Copied manifest {}", fx.single.0)),
        "{out}"
    );
    assert_eq!(last_line(&out), fx.single.0.to_string());
    assert_eq!(
        get_manifest(pa, "src/app", "1"),
        (200, fx.single.1.clone().into_bytes())
    );
    let out = ok(&berth(
        &[
            "copy",
            "--all",
            &format!("oci:{layout}:multi"),
            &format!("127.0.0.1:{pa}/src/app:multi"),
        ],
        home,
    ));
    assert_eq!(last_line(&out), fx.index.0.to_string());
    // Children first, then the index.
    let children = out.find(&format!("Copied manifest {}", fx.arm.0)).unwrap();
    let idx = out
        .find(&format!("Copied manifest {}", fx.index.0))
        .unwrap();
    assert!(children < idx, "{out}");

    // Registry -> registry with --all: every manifest byte-exact.
    let out = ok(&berth(
        &[
            "copy",
            "--all",
            "--jobs",
            "2",
            &format!("127.0.0.1:{pa}/src/app:multi"),
            &format!("127.0.0.1:{pb}/dst/app:multi"),
        ],
        home,
    ));
    assert_eq!(last_line(&out), fx.index.0.to_string());
    assert_eq!(
        get_manifest(pb, "dst/app", "multi"),
        (200, fx.index.1.clone().into_bytes())
    );
    for (d, m) in [&fx.single, &fx.arm] {
        assert_eq!(
            get_manifest(pb, "dst/app", &d.to_string()),
            (200, m.clone().into_bytes())
        );
    }
    // A second copy skips every blob.
    let out = ok(&berth(
        &[
            "copy",
            "--all",
            &format!("127.0.0.1:{pa}/src/app:multi"),
            &format!("127.0.0.1:{pb}/dst/app:multi"),
        ],
        home,
    ));
    assert!(!out.contains("Copied sha256:"), "{out}");
    assert_eq!(out.matches("(already exists)").count(), 4, "{out}");
    // Without --all: one platform's image only, tagged.
    let out = ok(&berth(
        &[
            "copy",
            "--quiet",
            "--platform",
            "linux/arm64",
            &format!("127.0.0.1:{pa}/src/app:multi"),
            &format!("127.0.0.1:{pb}/arm/app:1"),
        ],
        home,
    ));
    assert_eq!(
        out.trim(),
        fx.arm.0.to_string(),
        "--quiet prints only the digest"
    );
    assert_eq!(
        get_manifest(pb, "arm/app", "1"),
        (200, fx.arm.1.clone().into_bytes())
    );
    let out = berth(
        &[
            "copy",
            "--platform",
            "windows/amd64",
            &format!("127.0.0.1:{pa}/src/app:multi"),
            &format!("127.0.0.1:{pb}/win/app:1"),
        ],
        home,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("windows/amd64") && err.contains("linux/arm64"),
        "{err}"
    );

    // Same registry: blobs are mounted, not uploaded.
    let out = ok(&berth(
        &[
            "copy",
            &format!("127.0.0.1:{pa}/src/app:1"),
            &format!("127.0.0.1:{pa}/other/app:1"),
        ],
        home,
    ));
    assert_eq!(out.matches("Mounted sha256:").count(), 2, "{out}");
    assert!(!out.contains("Copied sha256:"), "{out}");
    assert_eq!(
        get_manifest(pa, "other/app", "1"),
        (200, fx.single.1.clone().into_bytes())
    );

    // Registry -> OCI layout: skopeo reads it byte-exact, umoci unpacks it.
    let out_layout = home.join("out-layout");
    let out_ref = format!("oci:{}:v1", out_layout.display());
    ok(&berth(
        &["copy", &format!("127.0.0.1:{pb}/dst/app:multi"), &out_ref],
        home,
    ));
    let sk = Command::new("skopeo")
        .args(["inspect", "--raw", &out_ref])
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    assert_eq!(
        sk.stdout,
        fx.single.1.as_bytes(),
        "linux/amd64 picked by default"
    );
    let bundle = home.join("bundle");
    let um = Command::new("umoci")
        .args([
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:v1", out_layout.display()),
        ])
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        um.status.success(),
        "{}",
        String::from_utf8_lossy(&um.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/etc/hello")).unwrap(),
        "hello from amd64\n"
    );

    // An untagged layout destination lists the manifest without a name.
    let bare = home.join("bare-layout");
    let bare_ref = format!("oci:{}", bare.display());
    ok(&berth(
        &[
            "copy",
            "--all",
            &format!("127.0.0.1:{pb}/dst/app:multi"),
            &bare_ref,
        ],
        home,
    ));
    let sk = Command::new("skopeo")
        .args(["inspect", "--raw", &bare_ref])
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    assert_eq!(sk.stdout, fx.index.1.as_bytes());

    // An unknown image: a clear error naming it, and nothing written.
    let missing = home.join("missing-layout");
    let out = berth(
        &[
            "copy",
            &format!("127.0.0.1:{pa}/src/nope:1"),
            &format!("oci:{}:x", missing.display()),
        ],
        home,
    );
    assert_eq!(out.status.code(), Some(3), "exit code 3: not found");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("berth: error: "), "{err}");
    assert!(
        err.contains("src/nope") && err.contains("not found"),
        "{err}"
    );
    assert!(!missing.exists(), "nothing is written for a failed copy");

    // Pull into a local root, push from it, then serve it.
    let root = home.join("local-root");
    let root_s = root.to_str().unwrap();
    let out = ok(&berth(
        &[
            "--root",
            root_s,
            "pull",
            &format!("127.0.0.1:{pa}/src/app:1"),
        ],
        home,
    ));
    assert_eq!(last_line(&out), fx.single.0.to_string());
    let out = ok(&berth(
        &[
            "--root",
            root_s,
            "push",
            &format!("127.0.0.1:{pb}/src/app:1"),
        ],
        home,
    ));
    assert_eq!(last_line(&out), fx.single.0.to_string());
    assert_eq!(
        get_manifest(pb, "src/app", "1"),
        (200, fx.single.1.clone().into_bytes())
    );
    let out = berth(
        &[
            "--root",
            root_s,
            "push",
            &format!("127.0.0.1:{pb}/src/absent:1"),
        ],
        home,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the local store"));
    let (_local, pl) = serve(&root);
    assert_eq!(
        get_manifest(pl, "src/app", "1"),
        (200, fx.single.1.clone().into_bytes())
    );
}

#[test]
fn a_source_that_lies_about_a_digest_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let fx = fixture(home);
    // Corrupt the amd64 layer in place (same size, other content).
    let m: serde_json::Value = serde_json::from_str(&fx.single.1).unwrap();
    let layer = m["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap();
    let path = fx.layout.join("blobs/sha256").join(layer);
    let mut data = std::fs::read(&path).unwrap();
    data[600] ^= 0xff;
    std::fs::write(&path, data).unwrap();
    let src = format!("oci:{}:single", fx.layout.display());

    let (_b, pb) = serve(&home.join("root-b"));
    let out = berth(&["copy", &src, &format!("127.0.0.1:{pb}/dst/app:1")], home);
    assert_eq!(
        out.status.code(),
        Some(5),
        "exit code 5: verification failed"
    );
    assert_eq!(get_manifest(pb, "dst/app", "1").0, 404);

    let root = home.join("local");
    let out = berth(
        &[
            "--root",
            root.to_str().unwrap(),
            "copy",
            &src,
            "local:dst/app:1",
        ],
        home,
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "exit code 5: verification failed"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(layer), "the error names the blob: {err}");
    assert!(!root.join("blobs/sha256").join(layer).exists());

    let dest = home.join("dest-layout");
    let out = berth(&["copy", &src, &format!("oci:{}:v1", dest.display())], home);
    assert_eq!(
        out.status.code(),
        Some(5),
        "exit code 5: verification failed"
    );
    assert!(!dest.join("blobs/sha256").join(layer).exists());
    let index = std::fs::read_to_string(dest.join("index.json")).unwrap_or_default();
    assert!(!index.contains("ref.name"), "no manifest named: {index}");
}

/// A TCP proxy to `upstream` that cuts the first connection once it has
/// sent `cut_after` bytes down; counts every byte it forwards down.
fn cutting_proxy(upstream: u16, cut_after: u64) -> (u16, Arc<AtomicU64>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let total = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let counted = total.clone();
    let was_cut = cut.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { return };
            let up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (mut from_client, mut to_server) =
                (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from_client, &mut to_server);
                let _ = to_server.shutdown(Shutdown::Write);
            });
            let (total, cut) = (counted.clone(), cut.clone());
            std::thread::spawn(move || {
                let (mut from_server, mut to_client) = (up, down);
                let mut buf = [0u8; 16384];
                let mut sent = 0u64;
                loop {
                    let n = match from_server.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if sent + n as u64 > cut_after && !cut.swap(true, Ordering::SeqCst) {
                        let k = (cut_after - sent) as usize;
                        let _ = to_client.write_all(&buf[..k]);
                        total.fetch_add(k as u64, Ordering::SeqCst);
                        let _ = to_client.shutdown(Shutdown::Both);
                        let _ = from_server.shutdown(Shutdown::Both);
                        break;
                    }
                    if to_client.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n as u64;
                    total.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (port, total, was_cut)
}

#[test]
fn an_interrupted_download_resumes_with_range() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let fx = fixture(home);
    let (_a, pa) = serve(&home.join("root-a"));
    let src = format!("oci:{}:single", fx.layout.display());
    ok(&berth(
        &["copy", &src, &format!("127.0.0.1:{pa}/src/app:1")],
        home,
    ));
    let m: serde_json::Value = serde_json::from_str(&fx.single.1).unwrap();
    let layer_size = m["layers"][0]["size"].as_u64().unwrap();

    let (proxy, forwarded, cut) = cutting_proxy(pa, 600_000);
    let dest = home.join("resumed");
    let out = ok(&berth(
        &[
            "copy",
            &format!("127.0.0.1:{proxy}/src/app:1"),
            &format!("oci:{}:v1", dest.display()),
        ],
        home,
    ));
    assert_eq!(last_line(&out), fx.single.0.to_string());
    let sk = Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}:v1", dest.display())])
        .output()
        .unwrap();
    assert_eq!(sk.stdout, fx.single.1.as_bytes());
    assert!(cut.load(Ordering::SeqCst), "the proxy cut a connection");
    let forwarded = forwarded.load(Ordering::SeqCst);
    assert!(
        forwarded < layer_size + 200_000,
        "resumed where it broke off, not from the start: {forwarded} bytes for a {layer_size}-byte layer"
    );
}

#[test]
fn copy_to_and_from_distribution() {
    if !Path::new(REGISTRY_BIN).exists() {
        println!("skipped: {REGISTRY_BIN} is not installed (Debian package docker-registry)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let fx = fixture(home);
    let (_d, pd) = start_distribution(home);
    let (_b, pb) = serve(&home.join("root-b"));
    let layout = fx.layout.to_str().unwrap();
    let out = ok(&berth(
        &[
            "copy",
            "--all",
            &format!("oci:{layout}:multi"),
            &format!("127.0.0.1:{pd}/src/app:multi"),
        ],
        home,
    ));
    assert_eq!(last_line(&out), fx.index.0.to_string());
    assert_eq!(
        get_manifest(pd, "src/app", "multi"),
        (200, fx.index.1.clone().into_bytes())
    );
    // Same-registry mount on distribution.
    let out = ok(&berth(
        &[
            "copy",
            "--all",
            &format!("127.0.0.1:{pd}/src/app:multi"),
            &format!("127.0.0.1:{pd}/other/app:multi"),
        ],
        home,
    ));
    assert_eq!(out.matches("Mounted sha256:").count(), 4, "{out}");
    // distribution -> berth serve.
    let out = ok(&berth(
        &[
            "copy",
            "--all",
            &format!("127.0.0.1:{pd}/other/app:multi"),
            &format!("127.0.0.1:{pb}/dst/app:multi"),
        ],
        home,
    ));
    assert_eq!(last_line(&out), fx.index.0.to_string());
    assert_eq!(
        get_manifest(pb, "dst/app", "multi"),
        (200, fx.index.1.clone().into_bytes())
    );
}

/// Files under `dir` (recursively), for "nothing was stored" checks.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `berth pull` and `berth copy` (to a layout) from `registry/repo:1`
/// with `env`: the exit code, stderr and how long it took; checks that
/// nothing was stored.
fn pull_fails(
    registry: &str,
    repo: &str,
    env: &[(&str, &str)],
    home: &Path,
) -> Vec<(Option<i32>, String, std::time::Duration)> {
    let mut results = Vec::new();
    let root = home.join(format!("root-{}", repo.replace('/', "-")));
    let layout = home.join(format!("layout-{}", repo.replace('/', "-")));
    let src = format!("{registry}/{repo}:1");
    let dst = format!("oci:{}:1", layout.display());
    let runs: [Vec<&str>; 2] = [
        vec!["--root", root.to_str().unwrap(), "pull", &src],
        vec!["copy", &src, &dst],
    ];
    for args in runs {
        let started = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(&args)
            .env("DOCKER_CONFIG", home.join("docker"))
            .env("XDG_DATA_HOME", home.join("xdg"))
            .envs(env.iter().copied())
            .output()
            .unwrap();
        results.push((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            started.elapsed(),
        ));
    }
    // Nothing half-stored: no partial file left in ingest, no tag, and
    // every blob in the store or the layout complete (the honest layer may
    // have been copied beside the bad config; the config never is).
    assert_eq!(files_under(&root.join("ingest")), Vec::<PathBuf>::new());
    let images = berth(&["--root", root.to_str().unwrap(), "images", "-q"], home);
    assert_eq!(String::from_utf8_lossy(&images.stdout).trim(), "");
    for blob in files_under(&root.join("blobs"))
        .into_iter()
        .chain(files_under(&layout.join("blobs")))
    {
        let name = blob.file_name().unwrap().to_str().unwrap().to_string();
        let data = std::fs::read(&blob).unwrap();
        assert_eq!(
            Digest::sha256_of(&data).hex(),
            name,
            "{} is not what its name says",
            blob.display()
        );
        assert_ne!(data.len(), 159, "the config was stored: {}", blob.display());
    }
    let index = std::fs::read_to_string(layout.join("index.json")).unwrap_or_default();
    assert!(!index.contains("ref.name"), "no manifest named: {index}");
    results
}

#[test]
fn a_malicious_registry_is_stopped_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let evil = common::evil::Evil::start();
    let fast = [("BERTH_IDLE_TIMEOUT", "2"), ("BERTH_REQUEST_TIMEOUT", "10")];

    // An endless body for the 159-byte config: stopped at 160 bytes, exit 5.
    for (code, err, took) in pull_fails(&evil.registry, "endless/app", &fast, home) {
        assert_eq!(code, Some(5), "{err}");
        assert!(
            err.contains("more than the declared 159 bytes") && err.contains(&evil.registry),
            "{err}"
        );
        assert!(took.as_secs() < 10, "{took:?}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = evil.sent("endless");
    assert!(sent < 64 << 20, "read {sent} bytes of an endless body");

    // A lying Content-Length: refused before the body, exit 5 (not 6).
    for (code, err, _) in pull_fails(&evil.registry, "liar/app", &fast, home) {
        assert_eq!(code, Some(5), "{err}");
        assert!(err.contains("Content-Length 1073741824"), "{err}");
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = evil.sent("liar");
    assert!(sent < 64 << 20, "read {sent} bytes of a lying body");

    // A body that ends short: exit 5.
    for (code, err, _) in pull_fails(&evil.registry, "short/app", &fast, home) {
        assert_eq!(code, Some(5), "{err}");
    }

    // Stalls: mid-body (resumed once, since it made progress, then given
    // up), before the headers, and a manifest that never comes: exit 6,
    // naming the setting, within a few idle timeouts.
    for repo in ["hang/app", "hangheaders/app", "slowmanifest/app"] {
        for (code, err, took) in pull_fails(&evil.registry, repo, &fast, home) {
            assert_eq!(code, Some(6), "{repo}: {err}");
            assert!(
                err.contains("BERTH_"),
                "{repo}: the message names the setting: {err}"
            );
            assert!(took.as_secs() < 15, "{repo}: {took:?}");
        }
    }

    // A manifest without end, fetched by tag: capped at 4 MiB (exit 1).
    for (code, err, _) in pull_fails(&evil.registry, "hugemanifest/app", &fast, home) {
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains("larger than 4.0 MiB"), "{err}");
    }

    // The honest repository of the same server works, with the same limits.
    let root = home.join("good-root");
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["--root", root.to_str().unwrap(), "pull", "-q"])
        .arg(format!("{}/good/app:1", evil.registry))
        .env("DOCKER_CONFIG", home.join("docker"))
        .envs(fast)
        .output()
        .unwrap();
    ok(&out);
}

#[test]
fn deep_indexes_and_huge_layer_lists_are_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let evil = common::evil::Evil::start();
    for depth in ["300", "3000"] {
        let layout = home.join(format!("deep-{depth}"));
        let started = std::time::Instant::now();
        let out = berth(
            &[
                "copy",
                "--all",
                &format!("{}/deep/x:{depth}", evil.registry),
                &format!("oci:{}:1", layout.display()),
            ],
            home,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("at most 16 levels deep"), "{err}");
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
        // It stopped at the limit: 16 levels fetched, not 300 or 3000.
        assert!(files_under(&layout.join("blobs")).len() <= 1);
    }
    assert!(
        evil.requests("deep/x/manifests/sha256") <= 2 * 20,
        "followed the chain past the limit"
    );
    // 15 levels where each index names the next one twice (2^15 paths):
    // within the limit, copied with each manifest fetched once.
    let out = berth(
        &[
            "copy",
            "--all",
            &format!("{}/deep/y:diamond", evil.registry),
            &format!("oci:{}:1", home.join("diamond").display()),
        ],
        home,
    );
    ok(&out);
    let fetched = evil.requests("deep/y/manifests/sha256");
    assert!(
        fetched <= 16,
        "{fetched} manifest requests for 16 manifests"
    );

    // Layers: 5,000 in a manifest (under 4 MiB) are past the layer limit;
    // 200,000 are past the manifest size limit. Refused before any blob
    // moves, in seconds.
    for (n, why) in [
        ("5000", "at most 4096 layers"),
        ("200000", "larger than 4.0 MiB"),
    ] {
        let started = std::time::Instant::now();
        let out = berth(
            &[
                "copy",
                &format!("{}/many/x:{n}", evil.registry),
                &format!("oci:{}:1", home.join(format!("many-{n}")).display()),
            ],
            home,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(why), "{n}: {err}");
        assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    }
    assert_eq!(evil.requests("many/x/blobs"), 0);
}
