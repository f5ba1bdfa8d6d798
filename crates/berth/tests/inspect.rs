//! The inspecting commands (`inspect`, `digest`, `list-tags`, `catalog`,
//! `platforms`) against a `berth serve` child, and `login`/`logout`
//! against Debian's distribution (`docker-registry`) with htpasswd.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_oci::Digest;
use serde_json::{json, Value};

mod common;
use common::{free_port, sigterm, spawn_serve};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Runs `berth ARGS` with `DOCKER_CONFIG=docker_config` and `stdin`.
fn berth_in(args: &[&str], docker_config: &Path, stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("BERTH_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "berth failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr_of_failure(o: &Output) -> String {
    // 1 (other), 2 (usage), 3 (not found), 4 (auth) or 6 (unreachable): see exit.rs.
    assert!(
        matches!(o.status.code(), Some(1..=6)),
        "expected a failure exit code, got {:?}, stdout {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(o.stdout.is_empty());
    String::from_utf8(o.stderr.clone()).unwrap()
}

struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(arch: &str, variant: Option<&str>, seed: u8) -> Image {
        let mut config = json!({
            "created": "2024-05-01T12:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/bin:/bin", format!("SEED={seed}")],
                "Labels": {"org.example.seed": seed.to_string()},
            },
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        let config = serde_json::to_vec(&config).unwrap();
        let layer: Vec<u8> = (0..1000u32).map(|i| (i as u8) ^ seed).collect();
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": Digest::sha256_of(&config), "size": config.len()},
            "layers": [{"mediaType": LAYER, "digest": Digest::sha256_of(&layer), "size": layer.len(),
                        "annotations": {"org.example.layer": "one"}}],
        }))
        .unwrap();
        Image {
            config,
            layer,
            manifest,
        }
    }

    fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }
}

struct Pusher {
    http: reqwest::Client,
    base: String,
    auth: Option<(&'static str, &'static str)>,
}

impl Pusher {
    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn blob(&self, repo: &str, data: &[u8]) {
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("{}/v2/{repo}/blobs/uploads/", self.base),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let mut url = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={}", Digest::sha256_of(data)));
        let r = self
            .req(reqwest::Method::PUT, &url)
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }

    async fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let r = self
            .req(
                reqwest::Method::PUT,
                &format!("{}/v2/{repo}/manifests/{reference}", self.base),
            )
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{:?}", r.text().await);
    }

    async fn image(&self, repo: &str, tags: &[&str], img: &Image) {
        self.blob(repo, &img.config).await;
        self.blob(repo, &img.layer).await;
        for t in tags {
            self.manifest(repo, t, OCI_MANIFEST, &img.manifest).await;
        }
    }
}

#[test]
fn inspecting_commands_against_berth_serve() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().join("root");
    let mut server = spawn_serve(
        &[
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--root",
            root.to_str().unwrap(),
        ],
        port,
    );
    let reg = format!("127.0.0.1:{port}");
    let amd64 = Image::new("amd64", None, 1);
    let arm64 = Image::new("arm64", Some("v8"), 2);
    let index = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": amd64.digest(), "size": amd64.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": OCI_MANIFEST, "digest": arm64.digest(), "size": arm64.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": OCI_MANIFEST, "digest": amd64.digest(), "size": amd64.manifest.len(),
             "platform": {"os": "unknown", "architecture": "unknown"},
             "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                             "vnd.docker.reference.digest": amd64.digest()}},
        ],
    }))
    .unwrap();
    let index_digest = Digest::sha256_of(&index);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let p = Pusher {
            http: reqwest::Client::new(),
            base: format!("http://{reg}"),
            auth: None,
        };
        p.image("alpine", &["3.20", "latest"], &amd64).await;
        p.image("multi", &[], &amd64).await;
        p.image("multi", &[], &arm64).await;
        p.manifest(
            "multi",
            &amd64.digest().to_string(),
            OCI_MANIFEST,
            &amd64.manifest,
        )
        .await;
        p.manifest(
            "multi",
            &arm64.digest().to_string(),
            OCI_MANIFEST,
            &arm64.manifest,
        )
        .await;
        p.manifest("multi", "1", OCI_INDEX, &index).await;
    });
    let cfg = dir.path().join("docker");
    let run = |args: &[&str]| berth_in(args, &cfg, b"");
    let alpine = format!("{reg}/alpine:3.20");
    let multi = format!("{reg}/multi:1");

    // list-tags, also in the seeds' `docker distribution list-tags` form.
    assert_eq!(
        stdout(&run(&["list-tags", &format!("{reg}/alpine")])),
        "3.20\nlatest\n"
    );
    assert_eq!(
        stdout(&run(&["list-tags", &format!("localhost:{port}/alpine")])),
        "3.20\nlatest\n"
    );
    assert_eq!(
        stdout(&run(&[
            "list-tags",
            "--format",
            "json",
            &format!("{reg}/alpine")
        ])),
        format!(
            "{{\n  \"Repository\": \"{reg}/alpine\",\n  \"Tags\": [\n    \"3.20\",\n    \"latest\"\n  ]\n}}\n"
        )
    );
    assert_eq!(stdout(&run(&["catalog", &reg])), "alpine\nmulti\n");
    assert_eq!(
        stdout(&run(&[
            "catalog",
            "--format",
            "json",
            &format!("http://{reg}/")
        ])),
        "{\n  \"Repositories\": [\n    \"alpine\",\n    \"multi\"\n  ]\n}\n"
    );

    // digest
    assert_eq!(
        stdout(&run(&["digest", &alpine])),
        format!("{}\n", amd64.digest())
    );
    assert_eq!(
        stdout(&run(&["digest", &multi])),
        format!("{index_digest}\n")
    );
    assert_eq!(
        stdout(&run(&["digest", "--platform", "linux/arm64", &multi])),
        format!("{}\n", arm64.digest())
    );

    // inspect --raw / --config: byte-exact.
    assert_eq!(run(&["inspect", "--raw", &alpine]).stdout, amd64.manifest);
    assert_eq!(run(&["inspect", "--raw", &multi]).stdout, index);
    assert_eq!(
        run(&["inspect", "--raw", "--platform", "linux/arm64/v8", &multi]).stdout,
        arm64.manifest
    );
    assert_eq!(run(&["inspect", "--config", &alpine]).stdout, amd64.config);
    assert_eq!(
        run(&["inspect", "--config", "--platform", "linux/arm64", &multi]).stdout,
        arm64.config
    );

    // The summary, like skopeo inspect.
    let summary = |digest: &Digest, name: &str, tags: Value, img: &Image, arch: &str| {
        let seed = if arch == "amd64" { 1 } else { 2 };
        let mut v = json!({
            "Name": name,
            "Digest": digest,
            "RepoTags": tags,
            "Created": "2024-05-01T12:00:00Z",
            "DockerVersion": "",
            "Labels": {"org.example.seed": seed.to_string()},
            "Architecture": arch,
            "Os": "linux",
            "Layers": [Digest::sha256_of(&img.layer)],
            "LayersData": [{"MIMEType": LAYER, "Digest": Digest::sha256_of(&img.layer),
                            "Size": 1000, "Annotations": {"org.example.layer": "one"}}],
            "Env": ["PATH=/usr/bin:/bin", format!("SEED={seed}")],
            "MediaType": OCI_MANIFEST,
        });
        if arch == "arm64" {
            v["Variant"] = "v8".into();
        }
        v
    };
    let out = stdout(&run(&["inspect", &alpine]));
    assert!(out.starts_with("{\n  \"Name\": "), "{out}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        summary(
            &amd64.digest(),
            &format!("{reg}/alpine"),
            json!(["3.20", "latest"]),
            &amd64,
            "amd64"
        )
    );
    let out = stdout(&run(&[
        "inspect",
        "--format",
        "json",
        "-n",
        "--platform",
        "linux/arm64",
        &multi,
    ]));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        summary(
            &index_digest,
            &format!("{reg}/multi"),
            json!([]),
            &arm64,
            "arm64"
        )
    );
    if cfg!(target_arch = "x86_64") {
        // Without --platform: this machine's (linux/amd64).
        let out = stdout(&run(&["inspect", &multi]));
        assert_eq!(
            serde_json::from_str::<Value>(&out).unwrap(),
            summary(
                &index_digest,
                &format!("{reg}/multi"),
                json!(["1"]),
                &amd64,
                "amd64"
            )
        );
    }

    // platforms: attestations are not platforms.
    assert_eq!(
        stdout(&run(&["platforms", &multi])),
        format!(
            "linux/amd64 {}\nlinux/arm64/v8 {}\n",
            amd64.digest(),
            arm64.digest()
        )
    );
    assert_eq!(
        stdout(&run(&["platforms", &alpine])),
        format!("linux/amd64 {}\n", amd64.digest())
    );

    // Errors: exit 1, the reference and what went wrong.
    for cmd in ["inspect", "digest", "platforms"] {
        let e = stderr_of_failure(&run(&[cmd, &format!("{reg}/x:y")]));
        assert_eq!(
            e,
            format!("berth: error: manifest unknown: {reg}/x:y does not exist\n"),
            "{cmd}"
        );
    }
    let e = stderr_of_failure(&run(&["list-tags", &format!("{reg}/nope")]));
    assert_eq!(
        e,
        format!("berth: error: repository unknown: {reg}/nope does not exist\n")
    );
    let e = stderr_of_failure(&run(&["inspect", "--platform", "linux/s390x", &multi]));
    assert!(
        e.contains(&format!("{reg}/multi:1 has no image for linux/s390x"))
            && e.contains("linux/amd64, linux/arm64/v8")
            && e.contains("--platform"),
        "{e}"
    );
    let e = stderr_of_failure(&run(&["inspect", "--format", "yaml", &alpine]));
    assert!(e.contains("unknown --format \"yaml\""), "{e}");
    let e = stderr_of_failure(&run(&["inspect", "Bad/Name"]));
    assert!(e.contains("lowercase"), "{e}");

    sigterm(&server);
    assert!(server.wait().unwrap().success());
}

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

struct Distribution {
    child: Child,
    port: u16,
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_distribution(dir: &Path) -> Distribution {
    let out = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .expect("htpasswd (apache2-utils) must be installed");
    assert!(out.status.success(), "htpasswd failed: {out:?}");
    std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
    let port = free_port();
    let config = format!(
        "version: 0.1\n\
         log:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {data}\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-secret\n\
         auth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n",
        data = dir.join("data").display(),
        htpasswd = dir.join("htpasswd").display(),
    );
    let config_path = dir.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(REGISTRY_BIN)
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start docker-registry");
    let mut d = Distribution { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = d.child.try_wait().unwrap() {
            panic!("docker-registry exited early: {status}");
        }
        assert!(Instant::now() < deadline, "docker-registry did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    d
}

#[test]
fn login_and_logout_against_htpasswd_distribution() {
    if !Path::new(REGISTRY_BIN).exists() {
        println!("skipped: {REGISTRY_BIN} is not installed (Debian package docker-registry)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dist = start_distribution(tmp.path());
    let reg = format!("127.0.0.1:{}", dist.port);
    let img = Image::new("amd64", None, 3);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let p = Pusher {
            http: reqwest::Client::new(),
            base: format!("http://{reg}"),
            auth: Some(("alice", "s3cret")),
        };
        p.image("team/app", &["v1", "v2"], &img).await;
    });
    let docker = tmp.path().join("docker");
    let config_file = docker.join("config.json");
    let run = |args: &[&str], stdin: &[u8]| berth_in(args, &docker, stdin);
    let repo = format!("{reg}/team/app");

    // Anonymous: refused, with what to do.
    let e = stderr_of_failure(&run(&["list-tags", &repo], b""));
    assert!(e.contains(&format!("run `berth login {reg}`")), "{e}");

    // A wrong password is refused and nothing is stored.
    let o = run(&["login", &reg, "-u", "alice", "-p", "wrong"], b"");
    let e = stderr_of_failure(&o);
    assert!(
        e.contains(&format!("berth: error: login to {reg} failed"))
            && e.contains("nothing was stored"),
        "{e}"
    );
    assert!(!config_file.exists());

    // No password at all (stdin is not a terminal).
    let e = stderr_of_failure(&run(&["login", &reg, "-u", "alice"], b""));
    assert!(e.contains("--password-stdin"), "{e}");

    // Good credentials from stdin: verified, stored 0600 in `auths`.
    let o = run(
        &["login", &reg, "-u", "alice", "--password-stdin"],
        b"s3cret\n",
    );
    assert_eq!(stdout(&o), "Login Succeeded\n");
    let mode = std::fs::metadata(&config_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let doc: Value = serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({"auths": {reg.clone(): {"auth": "YWxpY2U6czNjcmV0"}}})
    );

    // The stored credentials are used.
    assert_eq!(stdout(&run(&["list-tags", &repo], b"")), "v1\nv2\n");
    assert_eq!(
        stdout(&run(&["digest", &format!("{repo}:v2")], b"")),
        format!("{}\n", img.digest())
    );
    assert_eq!(stdout(&run(&["catalog", &reg], b"")), "team/app\n");

    // A failed login leaves the stored credentials alone.
    let e = stderr_of_failure(&run(&["login", &reg, "-u", "alice", "-p", "nope"], b""));
    assert!(e.contains("nothing was stored"), "{e}");
    let again: Value = serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    assert_eq!(again, doc);

    // logout removes them; a second logout says so and succeeds.
    assert_eq!(
        stdout(&run(&["logout", &reg], b"")),
        format!("Removing login credentials for {reg}\n")
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&config_file).unwrap()).unwrap();
    assert_eq!(doc, json!({"auths": {}}));
    assert_eq!(
        stdout(&run(&["logout", &reg], b"")),
        format!("Not logged in to {reg}\n")
    );
    let e = stderr_of_failure(&run(&["list-tags", &repo], b""));
    assert!(e.contains(&format!("run `berth login {reg}`")), "{e}");

    // With a credential helper (`credsStore`): login stores through it and
    // leaves an empty `auths` entry, as Docker does; logout erases.
    let helper_dir = tmp.path().join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let script = r#"#!/bin/sh
dir=$(dirname "$0")
IFS= read -r input || true
case "$1" in
get)
    if [ -f "$dir/stored.json" ]; then
        printf '{"ServerURL":"%s","Username":"alice","Secret":"s3cret"}\n' "$input"
    else
        echo "credentials not found in native keychain"; exit 1
    fi ;;
store) printf '%s' "$input" > "$dir/stored.json" ;;
erase) rm -f "$dir/stored.json"; printf '%s' "$input" > "$dir/erased" ;;
esac
"#;
    let helper = helper_dir.join("docker-credential-berthtest");
    std::fs::write(&helper, script).unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker2 = tmp.path().join("docker2");
    std::fs::create_dir_all(&docker2).unwrap();
    std::fs::write(docker2.join("config.json"), r#"{"credsStore":"berthtest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        helper_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run2 = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .env("DOCKER_CONFIG", &docker2)
            .env("PATH", &path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let e = stderr_of_failure(&run2(&["login", &reg, "-u", "alice", "-p", "bad"], b""));
    assert!(e.contains("nothing was stored"), "{e}");
    assert!(!helper_dir.join("stored.json").exists());
    let o = run2(
        &["login", &reg, "-u", "alice", "--password-stdin"],
        b"s3cret",
    );
    assert_eq!(stdout(&o), "Login Succeeded\n");
    let stored: Value =
        serde_json::from_slice(&std::fs::read(helper_dir.join("stored.json")).unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({"ServerURL": reg.clone(), "Username": "alice", "Secret": "s3cret"})
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(docker2.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        doc,
        json!({"credsStore": "berthtest", "auths": {reg.clone(): {}}})
    );
    assert_eq!(stdout(&run2(&["list-tags", &repo], b"")), "v1\nv2\n");
    assert_eq!(
        stdout(&run2(&["logout", &reg], b"")),
        format!("Removing login credentials for {reg}\n")
    );
    assert_eq!(
        std::fs::read_to_string(helper_dir.join("erased")).unwrap(),
        reg
    );
    let e = stderr_of_failure(&run2(&["list-tags", &repo], b""));
    assert!(e.contains(&format!("run `berth login {reg}`")), "{e}");
}
