//! What the transfer commands print and how they exit: plain progress
//! lines when stderr is not a terminal, bars on a pty (`script`),
//! `--quiet`, `--format json` (results and errors), and the documented
//! exit codes for not found, refused credentials, an unreachable
//! registry, a digest mismatch, a locked store and usage errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use serde_json::Value;

mod common;
use common::{free_port, serve, Server, REGISTRY_BIN};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Runs `berth ARGS` with its own Docker config and data directory; stdout
/// and stderr are pipes (not terminals).
fn berth(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", home.join("docker"))
        .env("XDG_DATA_HOME", home.join("xdg"))
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> (String, String) {
    assert!(
        out.status.success(),
        "berth failed ({:?}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    (text(&out.stdout), text(&out.stderr))
}

/// An image in an OCI layout under `dir`, tagged `v1`: a config and one
/// layer per size (random content). Returns the layout path, the manifest
/// digest, and every blob's digest and size.
fn layout_image(dir: &Path, layer_sizes: &[usize]) -> (PathBuf, Digest, Vec<(Digest, usize)>) {
    let layout = dir.join("layout");
    let blobs_dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs_dir).unwrap();
    let put = |data: &[u8]| {
        let d = Digest::sha256_of(data);
        std::fs::write(blobs_dir.join(d.hex()), data).unwrap();
        (d, data.len())
    };
    let mut blobs = Vec::new();
    let mut layers = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for &size in layer_sizes {
        // xorshift: incompressible enough, no rand dependency.
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.extend_from_slice(&seed.to_le_bytes());
        }
        data.truncate(size);
        let (d, n) = put(&data);
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d.to_string(), "size": n
        }));
        blobs.push((d, n));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": blobs.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>()}
    }))
    .unwrap();
    let (cd, cn) = put(&config);
    blobs.push((cd.clone(), cn));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cn},
        "layers": layers,
    }))
    .unwrap();
    let (md, mn) = put(&manifest);
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_MANIFEST, "digest": md.to_string(), "size": mn,
                "annotations": {"org.opencontainers.image.ref.name": "v1"}
            }]
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    (layout, md, blobs)
}

fn oci(layout: &Path) -> String {
    format!("oci:{}:v1", layout.display())
}

fn json(stdout: &str) -> Value {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object on one line: {stdout}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn plain_lines_when_stderr_is_not_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (layout, digest, blobs) = layout_image(home, &[300_000, 2 << 20]);
    let (_srv, port) = serve(&home.join("root"));
    let dst = format!("127.0.0.1:{port}/app:1");

    let (stdout, stderr) = ok(&berth(&["copy", &oci(&layout), &dst], home));
    assert_eq!(stdout, format!("{digest}\n"), "stdout is the digest only");
    assert!(
        !stderr.contains('\x1b') && !stderr.contains('\r'),
        "no redraws: {stderr:?}"
    );
    for (d, _) in &blobs {
        let short = &d.to_string()[..19];
        assert_eq!(
            stderr.matches(&format!("Copied {short}…")).count(),
            1,
            "one line per blob: {stderr}"
        );
    }
    assert!(stderr.contains("2.0 MiB"), "sizes are human: {stderr}");
    assert!(
        stderr.contains(&format!("Copied manifest {digest} ({OCI_MANIFEST})")),
        "{stderr}"
    );
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("Done in ")
            && last.contains("3 blobs copied")
            && last.contains("1 manifest"),
        "summary last: {stderr}"
    );

    // Again: every blob is already there.
    let (_, stderr) = ok(&berth(&["copy", &oci(&layout), &dst], home));
    assert_eq!(stderr.matches("(already exists)").count(), 3, "{stderr}");
    assert!(!stderr.contains("Copied sha256"), "{stderr}");
    assert!(
        stderr.contains("0 blobs copied") && stderr.contains("3 skipped"),
        "{stderr}"
    );

    // Same registry, other repository: mounted, naming where from.
    let (_, stderr) = ok(&berth(
        &["copy", &dst, &format!("127.0.0.1:{port}/other:1")],
        home,
    ));
    assert_eq!(stderr.matches(" from app").count(), 3, "{stderr}");
    assert!(
        stderr
            .lines()
            .filter(|l| l.starts_with("Mounted sha256:"))
            .count()
            == 3
    );
}

#[test]
fn quiet_prints_nothing_but_the_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (layout, digest, _) = layout_image(home, &[100_000]);
    let (_srv, port) = serve(&home.join("root"));
    let reg = format!("127.0.0.1:{port}/app:1");
    let (stdout, stderr) = ok(&berth(&["copy", "-q", &oci(&layout), &reg], home));
    assert_eq!(
        (stdout.as_str(), stderr.as_str()),
        (format!("{digest}\n").as_str(), "")
    );

    let root = home.join("local");
    let root = root.to_str().unwrap();
    let (stdout, stderr) = ok(&berth(&["--root", root, "pull", "--quiet", &reg], home));
    assert_eq!((stdout, stderr), (format!("{digest}\n"), String::new()));

    // save/load: no progress either.
    let archive = home.join("app.tar");
    let archive = archive.to_str().unwrap();
    let (stdout, stderr) = ok(&berth(
        &[
            "--root",
            root,
            "save",
            "-q",
            "-o",
            archive,
            &format!("127.0.0.1:{port}/app:1"),
        ],
        home,
    ));
    assert_eq!((stdout, stderr), (String::new(), String::new()));
    let other = home.join("other-root");
    let (stdout, stderr) = ok(&berth(
        &[
            "--root",
            other.to_str().unwrap(),
            "load",
            "-q",
            "-i",
            archive,
        ],
        home,
    ));
    assert_eq!((stdout, stderr), (String::new(), String::new()));
    // Without -q, load reports blobs on stderr and the image on stdout.
    let third = home.join("third-root");
    let (stdout, stderr) = ok(&berth(
        &["--root", third.to_str().unwrap(), "load", "-i", archive],
        home,
    ));
    assert_eq!(stdout, format!("Loaded image: 127.0.0.1:{port}/app:1\n"));
    assert!(
        stderr.contains("Copied sha256:") && stderr.contains("Done in"),
        "{stderr}"
    );
}

#[test]
fn json_report_counts_blobs_and_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (layout, digest, blobs) = layout_image(home, &[1 << 20, 70_000]);
    let (_srv, port) = serve(&home.join("root"));
    let dst = format!("127.0.0.1:{port}/app:1");
    let total: usize = blobs.iter().map(|(_, n)| n).sum();

    let run = || {
        let (stdout, stderr) = ok(&berth(
            &["copy", "--format", "json", &oci(&layout), &dst],
            home,
        ));
        assert_eq!(stderr, "", "no progress with --format json");
        json(&stdout)
    };
    let first = run();
    assert_eq!(first["digest"], digest.to_string());
    assert_eq!(first["mediaType"], OCI_MANIFEST);
    assert_eq!(first["source"], oci(&layout));
    assert_eq!(first["destination"], format!("docker://{dst}"));
    assert_eq!(
        first["blobs"],
        serde_json::json!({"copied": 3, "skipped": 0, "mounted": 0, "bytes": total})
    );
    let manifests = first["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], digest.to_string());
    assert_eq!(manifests[0]["mediaType"], OCI_MANIFEST);
    assert!(first["durationMs"].is_u64());

    let second = run();
    assert_eq!(second["digest"], digest.to_string());
    assert_eq!(
        second["blobs"],
        serde_json::json!({"copied": 0, "skipped": 3, "mounted": 0, "bytes": 0})
    );
}

/// Runs a failing `berth ARGS --format json`-style command and checks the
/// exit code, the JSON error on stdout (if asked) and the stderr line.
fn fails_with(out: &Output, code: i32, name: Option<&str>) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stdout {} stderr {stderr}",
        text(&out.stdout)
    );
    // Plain progress lines for blobs that made it may come first (copies run
    // in parallel); the error is the last line.
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("berth: error: "), "{stderr}");
    if let Some(name) = name {
        let v = json(&text(&out.stdout));
        assert_eq!(v["error"]["code"], name, "{v}");
        assert_eq!(v["error"]["exitCode"], code);
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    stderr
}

#[test]
fn exit_codes_not_found_unreachable_usage_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (layout, _, _) = layout_image(home, &[1000]);
    let (_srv, port) = serve(&home.join("root"));

    // Not found: an unknown repository, for copy and the inspecting commands.
    let nope = format!("127.0.0.1:{port}/nope:1");
    let dst = format!("oci:{}:x", home.join("out").display());
    fails_with(
        &berth(&["copy", "--format", "json", &nope, &dst], home),
        3,
        Some("NOT_FOUND"),
    );
    fails_with(&berth(&["copy", &nope, &dst], home), 3, None);
    fails_with(&berth(&["inspect", &nope], home), 3, None);
    fails_with(&berth(&["digest", &nope], home), 3, None);
    // ... and an image missing from the local store or a layout.
    let root = home.join("local");
    let root_s = root.to_str().unwrap();
    ok(&berth(
        &["copy", &oci(&layout), &format!("127.0.0.1:{port}/app:1")],
        home,
    ));
    ok(&berth(
        &["--root", root_s, "pull", &format!("127.0.0.1:{port}/app:1")],
        home,
    ));
    fails_with(
        &berth(
            &[
                "--root",
                root_s,
                "push",
                &format!("127.0.0.1:{port}/absent:1"),
            ],
            home,
        ),
        3,
        None,
    );
    fails_with(
        &berth(
            &["copy", &format!("oci:{}:nope", layout.display()), &dst],
            home,
        ),
        3,
        None,
    );

    // Unreachable: nothing listens on the port.
    let dead = free_port();
    let err = fails_with(
        &berth(
            &[
                "copy",
                "--format",
                "json",
                &format!("127.0.0.1:{dead}/app:1"),
                &dst,
            ],
            home,
        ),
        6,
        Some("UNREACHABLE"),
    );
    assert!(err.contains("cannot reach"), "{err}");

    // Usage errors that clap cannot see exit 2 like clap's own.
    fails_with(
        &berth(&["copy", "--platform", "linux", &nope, &dst], home),
        2,
        None,
    );
    fails_with(
        &berth(&["pull", "--format", "json", "UPPER/Case:1"], home),
        2,
        Some("USAGE"),
    );
    fails_with(
        &berth(&["copy", "--format", "json", "oci:", &dst], home),
        2,
        Some("USAGE"),
    );
    assert_eq!(
        berth(&["copy", "--no-such-flag"], home).status.code(),
        Some(2)
    );

    // Locked: another process holds the store exclusively (as gc does).
    let mut holder = Command::new("flock")
        .args([
            "-x",
            root.join("berth.lock").to_str().unwrap(),
            "sleep",
            "30",
        ])
        .spawn()
        .expect("flock (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = berth(
            &[
                "--root",
                root_s,
                "push",
                "--format",
                "json",
                &format!("127.0.0.1:{port}/app:1"),
            ],
            home,
        );
        if out.status.code() == Some(7) || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = holder.kill();
    let _ = holder.wait();
    let err = fails_with(&out, 7, Some("LOCKED"));
    assert!(err.contains("in use by another berth process"), "{err}");
}

#[test]
fn exit_code_for_a_digest_mismatch() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (layout, _, blobs) = layout_image(home, &[4096]);
    // Corrupt the layer in place: same size, other content.
    let path = layout.join("blobs/sha256").join(blobs[0].0.hex());
    let mut data = std::fs::read(&path).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&path, data).unwrap();

    let root = home.join("local");
    let out = berth(
        &[
            "--root",
            root.to_str().unwrap(),
            "copy",
            "--format",
            "json",
            &oci(&layout),
            "local:app:1",
        ],
        home,
    );
    fails_with(&out, 5, Some("VERIFICATION_FAILED"));
    let (_srv, port) = serve(&home.join("root"));
    let out = berth(
        &["copy", &oci(&layout), &format!("127.0.0.1:{port}/app:1")],
        home,
    );
    fails_with(&out, 5, None);
    let out = berth(
        &[
            "copy",
            &oci(&layout),
            &format!("oci:{}:v1", home.join("dest").display()),
        ],
        home,
    );
    fails_with(&out, 5, None);
}

/// Debian's distribution with htpasswd auth (user alice, password s3cret).
fn distribution_with_auth(dir: &Path) -> (Server, u16) {
    let out = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n\
         auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
        dir.join("data").display(),
        dir.join("htpasswd").display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, port)
}

#[test]
fn exit_code_for_refused_credentials() {
    if !Path::new(REGISTRY_BIN).exists() {
        println!("skipped: {REGISTRY_BIN} is not installed (Debian package docker-registry)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let (layout, _, _) = layout_image(home, &[1000]);
    let (_dist, port) = distribution_with_auth(home);
    let reg = format!("127.0.0.1:{port}");
    let dst = format!("{reg}/app:1");

    // No credentials at all.
    let out = berth(&["copy", "--format", "json", &oci(&layout), &dst], home);
    let err = fails_with(&out, 4, Some("UNAUTHORIZED"));
    assert!(err.contains("berth login"), "{err}");
    // Wrong ones.
    std::fs::create_dir_all(home.join("docker")).unwrap();
    let auth = "YWxpY2U6d3Jvbmc="; // alice:wrong
    std::fs::write(
        home.join("docker/config.json"),
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    fails_with(&berth(&["copy", &oci(&layout), &dst], home), 4, None);
    fails_with(&berth(&["list-tags", &format!("{reg}/app")], home), 4, None);
    // The right ones work (the classification is not just "auth configured").
    let auth = "YWxpY2U6czNjcmV0"; // alice:s3cret
    std::fs::write(
        home.join("docker/config.json"),
        format!(r#"{{"auths":{{"{reg}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    ok(&berth(&["copy", "-q", &oci(&layout), &dst], home));
}

#[test]
fn bars_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        println!("skipped: script (util-linux) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    // Big enough that the copy lasts several progress ticks.
    let (layout, digest, _) = layout_image(home, &[96 << 20, 1 << 20]);
    let root = home.join("local");
    let cmd = format!(
        "{} --root {} copy {} local:app:1",
        env!("CARGO_BIN_EXE_berth"),
        root.display(),
        oci(&layout)
    );
    // script gives the command a pty for stdin/stdout/stderr and copies
    // what it writes to our stdout.
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("DOCKER_CONFIG", home.join("docker"))
        .env("TERM", "xterm")
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = text(&out.stdout);
    assert!(out.status.success(), "{all}\n{}", text(&out.stderr));
    assert!(all.contains(&digest.to_string()), "{all}");
    // Drawn in place (cursor movement), with byte counts or a percentage.
    assert!(
        all.contains('\x1b'),
        "escape sequences on a terminal: {all:?}"
    );
    assert!(
        all.contains("MiB /") || all.contains('%'),
        "a bar with bytes or percent: {all:?}"
    );
    assert!(all.contains("Done in"), "{all:?}");
}
