//! `berth artifact push|pull|attach|discover` against a `berth serve` child
//! (referrers API) and Debian's distribution without auth (no referrers
//! API: the tag schema fallback), checked with skopeo and, when
//! importable, the oras Python SDK.

use std::path::Path;
use std::process::{Command, Output};

use berth_oci::Digest;
use serde_json::Value;

mod common;
use common::{serve, start_distribution, REGISTRY_BIN};

const SIG: &str = "application/vnd.example.signature";
const SBOM: &str = "application/vnd.example.sbom";

/// Runs `berth ARGS` in `dir` with an empty Docker config.
fn berth(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env("XDG_DATA_HOME", dir.join("xdg"))
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn digest_of(stdout: &str) -> Digest {
    stdout.trim().parse().expect("a digest on stdout")
}

fn skopeo_raw(reference: &str) -> Value {
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo");
    assert!(out.status.success(), "skopeo: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A manifest `berth artifact pull` must refuse: a layer titled `../x`.
fn push_evil(port: u16, layer: &Digest, size: u64) {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.evil",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": Digest::sha256_of(b"{}").to_string(),
            "size": 2,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer.to_string(),
            "size": size,
            "annotations": {"org.opencontainers.image.title": "../x"},
        }],
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = berth_client::RegistryClient::new(
            &format!("127.0.0.1:{port}"),
            berth_client::ClientConfig::default(),
        )
        .unwrap();
        client
            .put_manifest(
                "test",
                "evil",
                "application/vnd.oci.image.manifest.v1+json",
                serde_json::to_vec(&manifest).unwrap().into(),
            )
            .await
            .unwrap();
    });
}

/// The whole scenario against the registry at `port`.
fn scenario(port: u16, dir: &Path, expect_tag_schema: bool) {
    let reg = format!("localhost:{port}");
    // The seeds' oras demo.
    std::fs::write(dir.join("artifact.txt"), "blarg\n").unwrap();
    let image = format!("{reg}/test:latest");
    let pushed = digest_of(&ok(&berth(
        &["artifact", "push", &image, "artifact.txt"],
        dir,
    )));
    ok(&berth(&["artifact", "pull", &image, "-o", "out"], dir));
    assert_eq!(
        std::fs::read_to_string(dir.join("out/artifact.txt")).unwrap(),
        "blarg\n"
    );

    // skopeo sees an OCI 1.1 artifact.
    let m = skopeo_raw(&image);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], "application/vnd.unknown.artifact.v1");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_eq!(m["config"]["size"], 2);
    assert_eq!(m["config"]["data"], "e30=");
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        m["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "artifact.txt"
    );

    // Several files with media types, a config, annotations: round trip.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &big).unwrap();
    std::fs::write(dir.join("notes.md"), "# notes\n").unwrap();
    std::fs::write(dir.join("cfg.json"), r#"{"k":1}"#).unwrap();
    let multi = format!("{reg}/files:v1");
    ok(&berth(
        &[
            "artifact",
            "push",
            &multi,
            "big.bin",
            "notes.md:text/markdown",
            "--artifact-type",
            "application/vnd.example.bundle",
            "--annotation",
            "org.example.k=v",
            "--config",
            "cfg.json:application/vnd.example.config+json",
        ],
        dir,
    ));
    let m = skopeo_raw(&multi);
    assert_eq!(m["artifactType"], "application/vnd.example.bundle");
    // With a config and no --artifact-type, artifactType stays unset (as oras).
    std::fs::write(dir.join("plain.txt"), "plain").unwrap();
    ok(&berth(
        &[
            "artifact",
            "push",
            &format!("{reg}/files:v2"),
            "plain.txt",
            "--config",
            "cfg.json:application/vnd.example.config+json",
        ],
        dir,
    ));
    let m2 = skopeo_raw(&format!("{reg}/files:v2"));
    assert!(m2.get("artifactType").is_none());
    assert_eq!(
        m2["config"]["mediaType"],
        "application/vnd.example.config+json"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.example.config+json"
    );
    assert!(m["config"].get("data").is_none());
    assert_eq!(m["layers"][1]["mediaType"], "text/markdown");
    assert_eq!(
        m["layers"][1]["annotations"]["org.opencontainers.image.title"],
        "notes.md"
    );
    assert_eq!(m["annotations"]["org.example.k"], "v");
    ok(&berth(&["artifact", "pull", &multi, "-o", "multi"], dir));
    assert_eq!(std::fs::read(dir.join("multi/big.bin")).unwrap(), big);
    assert_eq!(
        std::fs::read_to_string(dir.join("multi/notes.md")).unwrap(),
        "# notes\n"
    );

    // attach + discover, recursively, with a filter.
    std::fs::write(dir.join("sig.txt"), "signed").unwrap();
    std::fs::write(dir.join("sbom.json"), "{}").unwrap();
    let sig = digest_of(&ok(&berth(
        &[
            "artifact",
            "attach",
            "--subject",
            &image,
            "--artifact-type",
            SIG,
            "sig.txt",
            "--annotation",
            "who=me",
        ],
        dir,
    )));
    let sbom = digest_of(&ok(&berth(
        &[
            "artifact",
            "attach",
            "--subject",
            &image,
            "--artifact-type",
            SBOM,
            "sbom.json:application/json",
        ],
        dir,
    )));
    let sbom_sig = digest_of(&ok(&berth(
        &[
            "artifact",
            "attach",
            "--subject",
            &format!("{reg}/test@{sbom}"),
            "--artifact-type",
            SIG,
            "sig.txt",
        ],
        dir,
    )));
    let m = skopeo_raw(&format!("{reg}/test@{sig}"));
    assert_eq!(m["subject"]["digest"], pushed.to_string());
    assert_eq!(m["artifactType"], SIG);

    let tree = ok(&berth(&["artifact", "discover", &image], dir));
    let expected = format!(
        "localhost:{port}/test@{pushed}\n\
         ├── {SBOM}\n\
         │   └── {sbom}\n\
         │       └── {SIG}\n\
         │           └── {sbom_sig}\n\
         └── {SIG}\n    \
             └── {sig}\n"
    );
    assert_eq!(tree, expected);

    let filtered = ok(&berth(
        &["artifact", "discover", &image, "--artifact-type", SBOM],
        dir,
    ));
    assert_eq!(
        filtered,
        format!("localhost:{port}/test@{pushed}\n└── {SBOM}\n    └── {sbom}\n")
    );

    let json: Value = serde_json::from_str(&ok(&berth(
        &["artifact", "discover", &image, "--format", "json"],
        dir,
    )))
    .unwrap();
    assert_eq!(json["digest"], pushed.to_string());
    let refs = json["referrers"].as_array().unwrap();
    assert_eq!(refs.len(), 2);
    let s = refs.iter().find(|r| r["artifactType"] == SIG).unwrap();
    assert_eq!(s["digest"], sig.to_string());
    assert_eq!(s["annotations"]["who"], "me");
    let b = refs.iter().find(|r| r["artifactType"] == SBOM).unwrap();
    assert_eq!(b["referrers"][0]["digest"], sbom_sig.to_string());

    // Which mechanism held the referrers.
    let tags = ok(&berth(&["list-tags", &format!("{reg}/test")], dir));
    let fallback_tag = format!("sha256-{}", pushed.hex());
    assert_eq!(
        tags.lines().any(|t| t == fallback_tag),
        expect_tag_schema,
        "tags: {tags}"
    );

    // A title that escapes the output directory is refused, nothing written.
    let layer = Digest::sha256_of(b"blarg\n");
    push_evil(port, &layer, 6);
    let out = berth(
        &[
            "artifact",
            "pull",
            &format!("{reg}/test:evil"),
            "-o",
            "evil/out",
        ],
        dir,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("path traversal"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.join("evil/x").exists());

    oras_pulls(&image, dir);
}

/// The oras Python SDK pulls what berth pushed (skipped if not importable).
fn oras_pulls(image: &str, dir: &Path) {
    let probe = Command::new("python3")
        .args(["-c", "import oras.client"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        println!("skipped: the oras Python SDK is not importable");
        return;
    }
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(insecure=True)\n\
         print(c.pull(target={image:?}, outdir='oras-out'))\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .current_dir(dir)
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "oras: {out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("oras-out/artifact.txt")).unwrap(),
        "blarg\n"
    );
}

#[test]
fn artifacts_on_berth_serve() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = serve(&dir.path().join("root"));
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    scenario(port, &work, false);
}

#[test]
fn artifacts_on_distribution_use_the_tag_schema() {
    if !Path::new(REGISTRY_BIN).exists() {
        println!("skipped: {REGISTRY_BIN} is not installed (Debian package docker-registry)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start_distribution(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    scenario(port, &work, true);
}
