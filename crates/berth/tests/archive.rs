//! `berth save`/`load` and the archive locations against the real tools:
//! a private dockerd (`docker load`/`docker save`), `podman load`, skopeo's
//! oci-archive; and archives that must be refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, spawn_serve};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `berth ARGS` with its own root and an empty Docker config.
fn berth(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", home.join("docker-config"))
        .env("BERTH_ROOT", home.join("root"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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
        "berth should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// A private dockerd: own data root, exec root and socket; no networking.
struct Dockerd {
    child: Child,
    host: String,
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
        let mut why = String::new();
        for driver in ["overlay2", "vfs"] {
            let d = dir.join(format!("dockerd-{driver}"));
            std::fs::create_dir_all(&d).unwrap();
            let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
            let host = format!("unix://{}/docker.sock", d.display());
            let child = Command::new("dockerd")
                .args(["--data-root", d.join("data").to_str().unwrap()])
                .args(["--exec-root", d.join("exec").to_str().unwrap()])
                .args(["--pidfile", d.join("dockerd.pid").to_str().unwrap()])
                .args(["-H", &host, "--storage-driver", driver])
                .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
                .arg("--ip-masq=false")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("dockerd is needed for this test (apt-get install docker.io)");
            let mut dockerd = Dockerd { child, host };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let info = dockerd
                    .docker()
                    .args(["info", "--format", "{{.Driver}}"])
                    .stderr(Stdio::null())
                    .output()
                    .unwrap();
                if info.status.success() {
                    if String::from_utf8_lossy(&info.stdout).trim() == driver {
                        return dockerd;
                    }
                    break;
                }
                if dockerd.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let log = std::fs::read_to_string(d.join("dockerd.log")).unwrap_or_default();
            why.push_str(&format!(
                "\n{driver}: {}",
                log.lines()
                    .rev()
                    .find(|l| l.contains("level=error") || l.contains("level=fatal"))
                    .unwrap_or("no error logged")
            ));
            dockerd.stop();
        }
        panic!("the private dockerd did not start:{why}");
    }

    fn docker(&self) -> Command {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", "/nonexistent-berth-test");
        c
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal busybox rootfs as a tar.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/berth-test"), "archive test\n").unwrap();
    let tar = dir.join("rootfs.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("."));
    tar
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn skopeo_config_digest(location: &str) -> String {
    let raw =
        run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", location]));
    json(&raw)["config"]["digest"].as_str().unwrap().to_string()
}

#[test]
fn save_and_load_with_docker_podman_and_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dockerd = Dockerd::start(t);
    let rootfs = busybox_rootfs(t);
    run(dockerd
        .docker()
        .arg("import")
        .arg(&rootfs)
        .arg("berthtest/bb:1"));
    let id = run(dockerd
        .docker()
        .args(["inspect", "--format", "{{.Id}}", "berthtest/bb:1"]))
    .trim()
    .to_string();
    assert!(id.starts_with("sha256:"), "{id}");

    // docker save -> berth load, and -> berth copy to a registry.
    let saved = t.join("docker-saved.tar");
    run(dockerd
        .docker()
        .arg("save")
        .arg("-o")
        .arg(&saved)
        .arg("berthtest/bb:1"));
    let out = ok(berth(&["load", "-i", saved.to_str().unwrap()], t));
    assert_eq!(out.trim(), "Loaded image: berthtest/bb:1");

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let reg_root = t.join("registry");
    let _serve = Kill(spawn_serve(
        &[
            "--root",
            reg_root.to_str().unwrap(),
            "--addr",
            &addr,
            "--log-level",
            "warn",
        ],
        port,
    ));
    let dst = format!("docker://{addr}/copied/bb:1");
    ok(berth(
        &[
            "copy",
            "-q",
            &format!("docker-archive:{}", saved.display()),
            &dst,
        ],
        t,
    ));
    assert_eq!(skopeo_config_digest(&dst), id);

    // berth save (from the local store) -> docker load and podman load.
    let ours = t.join("berth-saved.tar");
    ok(berth(
        &["save", "-o", ours.to_str().unwrap(), "berthtest/bb:1"],
        t,
    ));
    run(dockerd.docker().args(["rmi", "berthtest/bb:1"]));
    let loaded = run(dockerd.docker().arg("load").arg("-i").arg(&ours));
    assert!(loaded.contains("Loaded image: berthtest/bb:1"), "{loaded}");
    let id2 = run(dockerd
        .docker()
        .args(["inspect", "--format", "{{.Id}}", "berthtest/bb:1"]));
    assert_eq!(id2.trim(), id);
    let ran = run(dockerd.docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        "berthtest/bb:1",
        "/bin/cat",
        "/etc/berth-test",
    ]));
    assert_eq!(ran, "archive test\n");

    // gzip layers, saved straight from a registry: docker load runs them too.
    let gz = format!("docker://{addr}/gz/bb:1");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--dest-compress",
        &dst,
        &gz,
    ]));
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &gz]));
    assert!(
        json(&raw)["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .ends_with("gzip"),
        "{raw}"
    );
    let gz_tar = t.join("gz.tar");
    ok(berth(&["save", "-o", gz_tar.to_str().unwrap(), &gz], t));
    let loaded = run(dockerd.docker().arg("load").arg("-i").arg(&gz_tar));
    assert!(
        loaded.contains(&format!("Loaded image: {addr}/gz/bb:1")),
        "{loaded}"
    );
    let ran = run(dockerd.docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        &format!("{addr}/gz/bb:1"),
        "/bin/cat",
        "/etc/berth-test",
    ]));
    assert_eq!(ran, "archive test\n");

    let podman = |args: &[&str]| {
        run(Command::new("podman")
            .arg("--root")
            .arg(t.join("podman/root"))
            .arg("--runroot")
            .arg(t.join("podman/run"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args))
    };
    let out = podman(&["load", "-i", ours.to_str().unwrap()]);
    assert!(out.contains("berthtest/bb:1"), "{out}");
    let pid = podman(&["inspect", "--format", "{{.Id}}", "berthtest/bb:1"]);
    assert_eq!(format!("sha256:{}", pid.trim()), id);

    // oci-archive: skopeo writes (an OCI manifest: skopeo 1.9 does not see
    // Docker manifests in a layout), berth reads and writes, skopeo reads.
    let oci = t.join("skopeo-oci.tar");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        "--src-tls-verify=false",
        &dst,
        &format!("oci-archive:{}:v1", oci.display()),
    ]));
    // Converting to OCI, skopeo rewrites the config: compare with its own.
    let oci_config = skopeo_config_digest(&format!("oci-archive:{}:v1", oci.display()));
    let oci2 = t.join("berth-oci.tar");
    ok(berth(
        &[
            "copy",
            "-q",
            &format!("oci-archive:{}:v1", oci.display()),
            &format!("oci-archive:{}:v2", oci2.display()),
        ],
        t,
    ));
    assert_eq!(
        skopeo_config_digest(&format!("oci-archive:{}:v2", oci2.display())),
        oci_config
    );
    let dst2 = format!("docker://{addr}/from-oci/bb:2");
    ok(berth(
        &[
            "copy",
            "-q",
            &format!("oci-archive:{}:v2", oci2.display()),
            &dst2,
        ],
        t,
    ));
    assert_eq!(skopeo_config_digest(&dst2), oci_config);
}

/// A legacy docker-archive (`<id>/layer.tar`, `<hex>.json`) made by hand,
/// with `extra` entries appended.
fn legacy_archive(path: &Path, extra: &dyn Fn(&mut tar::Builder<std::fs::File>)) -> String {
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    layer.append_data(&mut h, "hello", &b"hello\n"[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let diff_id = berth_oci::Digest::sha256_of(&layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string(), diff_id.to_string()]},
        "config": {}
    }))
    .unwrap();
    let config_digest = berth_oci::Digest::sha256_of(&config);
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{}.json", config_digest.hex()),
        "RepoTags": ["legacy/img:3"],
        "Layers": ["abc/layer.tar", "def/layer.tar"],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&format!("{}.json", config_digest.hex()), &config);
    add("abc/layer.tar", &layer);
    add("manifest.json", &manifest);
    // Older Docker links a repeated layer to its first copy.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "def/layer.tar", "../abc/layer.tar")
        .unwrap();
    extra(&mut b);
    b.finish().unwrap();
    config_digest.to_string()
}

fn raw_entry(b: &mut tar::Builder<std::fs::File>, name: &[u8], kind: tar::EntryType, link: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.as_gnu_mut().unwrap().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    let data: &[u8] = if kind == tar::EntryType::Regular {
        b"evil\n"
    } else {
        b""
    };
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn store_blobs(home: &Path) -> usize {
    std::fs::read_dir(home.join("root/blobs/sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn legacy_archives_load_and_bad_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let good = t.join("legacy.tar");
    let config = legacy_archive(&good, &|_| {});
    let out = ok(berth(&["load", "-i", good.to_str().unwrap()], t));
    assert_eq!(out.trim(), "Loaded image: legacy/img:3");
    // Compressed as a whole, and from standard input.
    run(Command::new("gzip").arg("-k").arg(&good));
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("load")
        .env("BERTH_ROOT", t.join("root2"))
        .stdin(std::fs::File::open(t.join("legacy.tar.gz")).unwrap())
        .output()
        .unwrap();
    assert_eq!(ok(out).trim(), "Loaded image: legacy/img:3");
    // Saved again, the config (the image ID) is the same.
    let again = t.join("again.tar");
    ok(berth(
        &["save", "-o", again.to_str().unwrap(), "legacy/img:3"],
        t,
    ));
    let layout = t.join("again-layout");
    ok(berth(
        &[
            "copy",
            "-q",
            &format!("docker-archive:{}", again.display()),
            &format!("oci:{}:x", layout.display()),
        ],
        t,
    ));
    let index = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = std::fs::read_to_string(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    let manifest = json(&manifest);
    assert_eq!(manifest["config"]["digest"], config.as_str());
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.docker.image.rootfs.diff.tar"
    );

    let fresh = t.join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();

    // Truncated in the middle of an entry.
    let bytes = std::fs::read(&good).unwrap();
    let truncated = t.join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2 + 100]).unwrap();
    let err = failed(berth(&["load", "-i", truncated.to_str().unwrap()], &fresh));
    assert!(err.contains("truncated or corrupt"), "{err}");
    assert_eq!(store_blobs(&fresh), 0);

    // `../evil`, an absolute path, and a link out of the archive.
    let cases: [(&[u8], tar::EntryType, &[u8]); 3] = [
        (b"../evil", tar::EntryType::Regular, b""),
        (b"/tmp/berth-evil-abs", tar::EntryType::Regular, b""),
        (
            b"abc/layer.tar",
            tar::EntryType::Symlink,
            b"../../../etc/passwd",
        ),
    ];
    for (i, (name, kind, link)) in cases.into_iter().enumerate() {
        let evil = t.join(format!("evil{i}/evil.tar"));
        std::fs::create_dir_all(evil.parent().unwrap()).unwrap();
        legacy_archive(&evil, &|b| raw_entry(b, name, kind, link));
        let err = failed(berth(&["load", "-i", evil.to_str().unwrap()], &fresh));
        assert!(err.contains("unsafe entry"), "{err}");
        let err = failed(berth(
            &[
                "copy",
                &format!("docker-archive:{}", evil.display()),
                "local:x/y:1",
            ],
            &fresh,
        ));
        assert!(err.contains("unsafe entry"), "{err}");
        assert_eq!(store_blobs(&fresh), 0);
    }
    assert!(!t.join("evil").exists());
    assert!(!Path::new("/tmp/berth-evil-abs").exists());

    // A failed save leaves no partial archive behind.
    let out_dir = t.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let err = failed(berth(
        &[
            "save",
            "-o",
            out_dir.join("x.tar").to_str().unwrap(),
            "legacy/img:3",
            "missing/img:1",
        ],
        t,
    ));
    assert!(err.contains("missing"), "{err}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0);
}
