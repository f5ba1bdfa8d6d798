//! `berth save`/`load` and the archive locations against the real tools:
//! a private dockerd (`docker load`/`docker save`), `podman load`, skopeo's
//! oci-archive; and archives that must be refused.

use std::io::Read as _;
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

/// A docker-archive whose one layer (`abc/layer.tar`) is `layer_size`
/// bytes read from `layer`, plus `extra` files of `extra_size` bytes
/// (zeros), piped through `gzip -1` into `path` when `gzip` is set.
fn big_archive(
    path: &Path,
    layer: &mut dyn std::io::Read,
    layer_size: u64,
    extra: usize,
    extra_size: u64,
    gzip: bool,
) {
    use std::io::Write;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_name = format!("{}.json", berth_oci::Digest::sha256_of(config).hex());
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["bomb/img:1"],
        "Layers": ["abc/layer.tar"],
    }]))
    .unwrap();
    let out = std::fs::File::create(path).unwrap();
    let mut gz = None;
    let sink: Box<dyn Write> = if gzip {
        let mut child = Command::new("gzip")
            .arg("-1")
            .stdin(Stdio::piped())
            .stdout(out)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        gz = Some(child);
        Box::new(stdin)
    } else {
        Box::new(out)
    };
    let mut b = tar::Builder::new(sink);
    let add = |b: &mut tar::Builder<Box<dyn Write>>,
               name: &str,
               size: u64,
               data: &mut dyn std::io::Read| {
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&mut b, &config_name, config.len() as u64, &mut &config[..]);
    add(
        &mut b,
        "manifest.json",
        manifest.len() as u64,
        &mut &manifest[..],
    );
    for i in 0..extra {
        add(
            &mut b,
            &format!("extra/{i}"),
            extra_size,
            &mut std::io::repeat(0).take(extra_size),
        );
    }
    add(&mut b, "abc/layer.tar", layer_size, layer);
    // Finished and flushed, then dropped: gzip sees the end of its input.
    b.into_inner().unwrap().flush().unwrap();
    if let Some(mut c) = gz {
        assert!(c.wait().unwrap().success());
    }
}

/// Every file under `dir`.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_in(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Disk blocks used under `dir`, in bytes.
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    files_in(dir)
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// `berth load -i archive` (or from stdin) with its own root and TMPDIR.
fn load_cmd(home: &Path, archive: Option<&Path>, extra: &[&str]) -> Command {
    std::fs::create_dir_all(home.join("tmp")).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.arg("load");
    if let Some(a) = archive {
        c.arg("-i").arg(a);
    }
    c.args(extra)
        .env("DOCKER_CONFIG", home.join("docker-config"))
        .env("BERTH_ROOT", home.join("root"))
        .env("TMPDIR", home.join("tmp"));
    c
}

/// After a failed or interrupted load: no staging directory, nothing in
/// $TMPDIR, no blob, no image.
fn assert_nothing_left(home: &Path) {
    assert_eq!(files_in(&home.join("root/ingest")), Vec::<PathBuf>::new());
    let staged: Vec<_> = std::fs::read_dir(home.join("root/ingest/archives"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(
        staged,
        Vec::<PathBuf>::new(),
        "a staging directory was left"
    );
    assert_eq!(
        files_in(&home.join("tmp")),
        Vec::<PathBuf>::new(),
        "$TMPDIR was used"
    );
    assert_eq!(store_blobs(home), 0);
}

#[test]
fn archive_bombs_are_bounded_by_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // 1 GiB of zeros in a ~1 MiB gzip: refused from its header, nothing written.
    let bomb = t.join("bomb.tar.gz");
    big_archive(
        &bomb,
        &mut std::io::repeat(0).take(1 << 30),
        1 << 30,
        0,
        0,
        true,
    );
    assert!(std::fs::metadata(&bomb).unwrap().len() < 8 << 20);
    let home = t.join("h1");
    let started = Instant::now();
    let out = load_cmd(&home, Some(&bomb), &["--max-size", "16M"])
        .output()
        .unwrap();
    let err = failed(out);
    assert!(
        err.contains("more than 16.0 MiB")
            && err.contains("--max-size")
            && err.contains("BERTH_MAX_ARCHIVE_BYTES"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_nothing_left(&home);

    // Many files of 1 MiB: stopped once they pass the limit, disk use
    // bounded by it; the same limit from the environment, and for copy.
    let many = t.join("many.tar.gz");
    big_archive(&many, &mut &b"layer"[..], 5, 200, 1 << 20, true);
    let home = t.join("h2");
    let watch = home.join("root");
    let mut child = load_cmd(&home, Some(&many), &[])
        .env("BERTH_MAX_ARCHIVE_BYTES", "16M")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(disk_use(&watch));
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    let err = failed(out);
    assert!(err.contains("more than 16.0 MiB"), "{err}");
    assert!(peak <= 24 << 20, "{peak} bytes on disk while loading");
    assert_nothing_left(&home);
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["copy", &format!("docker-archive:{}", many.display())])
        .arg(format!("oci:{}:1", t.join("layout").display()))
        .env("BERTH_ROOT", home.join("root"))
        .env("BERTH_MAX_ARCHIVE_BYTES", "16M")
        .env("TMPDIR", home.join("tmp"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BERTH_MAX_ARCHIVE_BYTES"));
    assert_nothing_left(&home);

    // A sparse member counts at its full size (it is stored in full).
    let src = t.join("sparse-src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("manifest.json")).unwrap();
    f.set_len(5 << 30).unwrap();
    let sparse = t.join("sparse.tar");
    run(Command::new("tar")
        .args(["--sparse", "--format=pax", "-C"])
        .arg(&src)
        .arg("-cf")
        .arg(&sparse)
        .arg("manifest.json"));
    assert!(std::fs::metadata(&sparse).unwrap().len() < 1 << 20);
    let home = t.join("h3");
    let err = failed(
        load_cmd(&home, Some(&sparse), &["--max-size", "1G"])
            .output()
            .unwrap(),
    );
    assert!(err.contains("more than 1.0 GiB"), "{err}");
    assert_nothing_left(&home);

    // Under the limit, the same archive shape loads.
    let small = t.join("small.tar.gz");
    big_archive(&small, &mut &b"layer"[..], 5, 3, 1 << 20, true);
    let home = t.join("h4");
    let out = ok(load_cmd(&home, Some(&small), &["--max-size", "16M"])
        .output()
        .unwrap());
    assert_eq!(out.trim(), "Loaded image: bomb/img:1");
    assert!(files_in(&home.join("root/ingest/archives")).is_empty());
    assert!(files_in(&home.join("tmp")).is_empty());
}

#[test]
fn signals_during_a_load_leave_nothing_behind() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for (signal, code, stall) in [
        ("INT", 130, false),
        ("TERM", 143, false),
        ("TERM", 143, true),
        ("INT", 130, true),
    ] {
        let home = t.join(format!("{signal}-{stall}"));
        // From standard input: a tar whose one file keeps arriving (or
        // stops arriving: the command is stuck in a read).
        let mut child = load_cmd(&home, None, &["--max-size", "0"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_path("blobs/sha256/big").unwrap();
        h.set_size(64 << 30);
        h.set_mode(0o644);
        h.set_cksum();
        stdin.write_all(h.as_bytes()).unwrap();
        let chunk = vec![1u8; 1 << 20];
        let deadline = Instant::now() + Duration::from_millis(800);
        while Instant::now() < deadline {
            stdin.write_all(&chunk).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        let staged = home.join("root/ingest/archives");
        assert_eq!(
            std::fs::read_dir(&staged).unwrap().count(),
            1,
            "the archive is being staged in the root"
        );
        // A stalled sender keeps the pipe open and sends nothing: closing it
        // would be an end of file, which berth rightly reports as truncation.
        let (writer, _stalled_pipe) = if stall {
            (None, Some(stdin))
        } else {
            let feeder = std::thread::spawn(move || {
                // Keep feeding until the pipe breaks.
                while stdin.write_all(&chunk).is_ok() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
            (Some(feeder), None)
        };
        let started = Instant::now();
        run(Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string()));
        let out = child.wait_with_output().unwrap();
        let took = started.elapsed();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{signal} stall={stall}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            took < Duration::from_secs(6),
            "{signal}: exited after {took:?}"
        );
        if let Some(w) = writer {
            w.join().unwrap();
        }
        assert_nothing_left(&home);
    }
}

#[test]
fn multi_member_gzip_archives_and_layers_load() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let plain = t.join("legacy.tar");
    let config = legacy_archive(&plain, &|_| {});
    // The archive compressed as two gzip members (as pigz or `cat a.gz
    // b.gz` make), split in the middle of an entry.
    let bytes = std::fs::read(&plain).unwrap();
    let (a, b) = bytes.split_at(bytes.len() / 2 + 77);
    let mut two = Vec::new();
    for part in [a, b] {
        let mut gz = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        gz.stdin.take().unwrap().write_all(part).unwrap();
        two.extend(gz.wait_with_output().unwrap().stdout);
    }
    let multi = t.join("multi.tar.gz");
    std::fs::write(&multi, &two).unwrap();
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | cmp - {}",
            multi.display(),
            plain.display()
        ))
        .status()
        .unwrap();
    assert!(check.success(), "gzip -dc reads it");
    let out = ok(berth(&["load", "-i", multi.to_str().unwrap()], t));
    assert_eq!(out.trim(), "Loaded image: legacy/img:3");

    // A layer that is itself a multi-member gzip: loaded byte-exact as a
    // gzip layer.
    let home = t.join("layers");
    std::fs::create_dir_all(&home).unwrap();
    let mut layer_tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    layer_tar
        .append_data(&mut h, "hello", &b"hello\n"[..])
        .unwrap();
    let layer_tar = layer_tar.into_inner().unwrap();
    let mut layer = Vec::new();
    for part in layer_tar.chunks(700) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, part).unwrap();
        layer.extend(e.finish().unwrap());
    }
    let archive = home.join("gz-layer.tar");
    big_archive(&archive, &mut &layer[..], layer.len() as u64, 0, 0, false);
    let out = ok(load_cmd(&home, Some(&archive), &[]).output().unwrap());
    assert_eq!(out.trim(), "Loaded image: bomb/img:1");
    let layout = home.join("out");
    ok(berth(
        &[
            "--root",
            home.join("root").to_str().unwrap(),
            "copy",
            "local:bomb/img:1",
            &format!("oci:{}:1", layout.display()),
        ],
        &home,
    ));
    let d = berth_oci::Digest::sha256_of(&layer);
    assert_eq!(
        std::fs::read(layout.join("blobs/sha256").join(d.hex())).unwrap(),
        layer
    );
    let _ = config;
}

#[test]
fn an_archive_of_200000_layers_is_refused_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let layers: Vec<&str> = vec!["l"; 200_000];
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": "c.json", "RepoTags": ["many/img:1"], "Layers": layers,
    }]))
    .unwrap();
    let path = t.join("many.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (name, data) in [
        ("c.json", &br#"{"os":"linux"}"#[..]),
        ("l", b"x"),
        ("manifest.json", &manifest),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let home = t.join("h");
    let started = Instant::now();
    let err = failed(load_cmd(&home, Some(&path), &[]).output().unwrap());
    assert!(
        err.contains("200000 layers") && err.contains("at most 4096"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_nothing_left(&home);
}

/// Runs `cmd` and returns its output and peak resident memory in bytes
/// (`wait4`'s, for this child alone).
#[allow(clippy::zombie_processes)] // reaped by the wait4 below
fn output_and_peak_rss(cmd: &mut Command) -> (Output, u64) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.unwrap();
    let mut stderr = child.stderr.unwrap();
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        stderr.read_to_end(&mut v).unwrap();
        v
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: plain syscall; rusage is plain data it fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    let output = Output {
        status,
        stdout: out,
        stderr: err.join().unwrap(),
    };
    (output, usage.ru_maxrss as u64 * 1024)
}

/// The tar crate holds PAX records in memory whole: a gzip of about a MB
/// whose first member is a PAX header announcing 512 MiB of records must
/// be refused without allocating them.
#[test]
fn a_pax_header_bomb_is_refused_without_allocating_it() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let records: u64 = 512 << 20;
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders.0/manifest.json").unwrap();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(records);
    h.set_mode(0o644);
    h.set_cksum();
    // One gzip member for the header, then the same member of 1 MiB of
    // record text again and again: a multi-member gzip, as valid as any.
    let mut bomb = gz(h.as_bytes());
    let mib = gz(&vec![b'a'; 1 << 20]);
    for _ in 0..(records >> 20) {
        bomb.extend_from_slice(&mib);
    }
    assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
    let path = t.join("pax-bomb.tar.gz");
    std::fs::write(&path, &bomb).unwrap();
    let home = t.join("h");
    let started = Instant::now();
    let (out, rss) = output_and_peak_rss(&mut load_cmd(&home, Some(&path), &[]));
    let err = failed(out);
    assert!(
        err.contains("headers (PAX records, long names)") && err.contains("16 MiB"),
        "{err}"
    );
    assert!(rss < 200 << 20, "berth load used {} MiB", rss >> 20);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_nothing_left(&home);
}
