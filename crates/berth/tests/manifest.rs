//! `berth manifest create|annotate|inspect|push|rm` against a `berth serve`
//! child: images pushed over HTTP (OCI and Docker schema 2, in the list's
//! repository and in others), lists made, annotated, inspected and pushed,
//! then read back over HTTP and with `berth inspect --raw` / `platforms`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use berth_oci::Digest;
use serde_json::{json, Value};

mod common;
use common::serve;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Runs `berth ARGS` with its own root and an empty Docker config.
fn berth(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("DOCKER_CONFIG", home.join("docker"))
        .env("BERTH_ROOT", home.join("client-root"))
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
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

fn fails(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "stdout on failure: {out:?}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
}

/// A single-platform image: config, one layer, manifest of `media_type`.
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
    media_type: &'static str,
}

impl Image {
    fn new(media_type: &'static str, config: Value, seed: u8) -> Image {
        let config = serde_json::to_vec(&config).unwrap();
        let layer: Vec<u8> = (0..3000u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let (config_type, layer_type) = if media_type == OCI_MANIFEST {
            (
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            )
        };
        let manifest = serde_json::to_vec_pretty(&json!({
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": Digest::sha256_of(&config), "size": config.len()},
            "layers": [{"mediaType": layer_type, "digest": Digest::sha256_of(&layer), "size": layer.len()}],
        }))
        .unwrap();
        Image {
            config,
            layer,
            manifest,
            media_type,
        }
    }

    fn linux(media_type: &'static str, arch: &str, variant: Option<&str>, seed: u8) -> Image {
        let mut config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [format!("SEED={seed}")]},
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        if let Some(v) = variant {
            config["variant"] = v.into();
        }
        Image::new(media_type, config, seed)
    }

    fn digest(&self) -> Digest {
        Digest::sha256_of(&self.manifest)
    }
}

struct Registry {
    http: reqwest::Client,
    base: String,
    rt: tokio::runtime::Runtime,
}

impl Registry {
    fn new(port: u16) -> Registry {
        Registry {
            http: reqwest::Client::new(),
            base: format!("http://127.0.0.1:{port}"),
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn blob(&self, repo: &str, data: &[u8]) {
        self.rt.block_on(async {
            let url = format!(
                "{}/v2/{repo}/blobs/uploads/?digest={}",
                self.base,
                Digest::sha256_of(data)
            );
            let r = self
                .http
                .post(url)
                .body(data.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{:?}", r.text().await);
        })
    }

    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        self.rt.block_on(async {
            let r = self
                .http
                .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
                .header("content-type", media_type)
                .body(bytes.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{:?}", r.text().await);
        })
    }

    fn image(&self, repo: &str, tag: &str, img: &Image) {
        self.blob(repo, &img.config);
        self.blob(repo, &img.layer);
        self.put_manifest(repo, tag, img.media_type, &img.manifest);
    }

    /// Status, Content-Type and body of a GET.
    fn get(&self, path: &str) -> (u16, String, Vec<u8>) {
        self.rt.block_on(async {
            let r = self
                .http
                .get(format!("{}/v2/{path}", self.base))
                .header("accept", ACCEPT)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            (status, ct, r.bytes().await.unwrap().to_vec())
        })
    }
}

/// `os/arch[/variant]` of each entry of a list document.
fn platforms(doc: &Value) -> Vec<String> {
    doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p.get("variant").and_then(Value::as_str) {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect()
}

fn digests(doc: &Value) -> Vec<String> {
    doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn oci_list_across_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_server, port) = serve(&home.join("server-root"));
    let reg = Registry::new(port);
    let r = format!("127.0.0.1:{port}");
    let run = |args: &[&str]| berth(args, home);

    let amd64 = Image::linux(OCI_MANIFEST, "amd64", None, 1);
    let arm64 = Image::linux(OCI_MANIFEST, "arm64", None, 2);
    // amd64 lives in another repository than the list, arm64 in the same.
    reg.image("src/amd64", "1", &amd64);
    reg.image("multi", "arm64", &arm64);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": arm64.digest(), "size": arm64.manifest.len(),
                       "platform": {"os": "linux", "architecture": "arm64"}}],
    }))
    .unwrap();
    reg.put_manifest("multi", "index", OCI_INDEX, &index);

    let list = format!("{r}/multi:list");
    let img_amd64 = format!("{r}/src/amd64:1");
    let img_arm64 = format!("{r}/multi:arm64");

    // Nothing local, nothing remote: "not found" is exit code 3.
    let out = run(&["manifest", "inspect", &list]);
    fails(&out, "no such manifest");
    assert_eq!(out.status.code(), Some(3));
    // A list is named by a tag: usage error, exit code 2.
    let out = run(&[
        "manifest",
        "create",
        &format!("{list}@{}", amd64.digest()),
        &img_amd64,
    ]);
    fails(&out, "name the list by a tag");
    assert_eq!(out.status.code(), Some(2));
    fails(
        &run(&["manifest", "push", &list]),
        "run berth manifest create",
    );

    // A failing create writes nothing.
    fails(
        &run(&[
            "manifest",
            "create",
            &list,
            &img_amd64,
            &format!("{r}/src/amd64:nope"),
        ]),
        "no such manifest",
    );
    fails(&run(&["manifest", "inspect", &list]), "no such manifest");
    // A list is no image of a list.
    fails(
        &run(&["manifest", "create", &list, &format!("{r}/multi:index")]),
        "is a manifest list",
    );
    // Images of another registry cannot be listed.
    fails(
        &run(&[
            "manifest",
            "create",
            &list,
            &format!("localhost:{port}/src/amd64:1"),
        ]),
        "different registry",
    );

    assert_eq!(
        ok(&run(&["manifest", "create", &list, &img_amd64, &img_arm64])),
        format!("Created manifest list {list}\n")
    );
    fails(
        &run(&["manifest", "create", &list, &img_amd64]),
        "refusing to amend an existing manifest list with no --amend flag",
    );

    // annotate: the variant, checked; unknown images and bad pairs refused.
    ok(&run(&[
        "manifest",
        "annotate",
        "--variant",
        "v8",
        &list,
        &img_arm64,
    ]));
    fails(
        &run(&["manifest", "annotate", "--variant", "v7", &list, &img_arm64]),
        "not a variant of arm64",
    );
    fails(
        &run(&[
            "manifest", "annotate", "--arch", "x86_64", &list, &img_amd64,
        ]),
        "unsupported os/arch combination: linux/x86_64",
    );
    fails(
        &run(&[
            "manifest",
            "annotate",
            "--os",
            "linux",
            &list,
            &format!("{r}/other:1"),
        ]),
        "does not exist in",
    );
    fails(
        &run(&[
            "manifest",
            "annotate",
            "--os",
            "linux",
            &format!("{r}/none:1"),
            &img_amd64,
        ]),
        "run berth manifest create",
    );

    // inspect of the local list: the document push will send.
    let text = ok(&run(&["manifest", "inspect", &list]));
    assert!(text.starts_with("{\n   \"schemaVersion\": 2,\n"), "{text}");
    let local: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(local["mediaType"], OCI_INDEX);
    // Entries in file-name order: multi%arm64 sorts before src#amd64%1.
    assert_eq!(
        digests(&local),
        [arm64.digest().to_string(), amd64.digest().to_string()]
    );
    assert_eq!(platforms(&local), ["linux/arm64/v8", "linux/amd64"]);
    assert_eq!(local["manifests"][1]["size"], amd64.manifest.len());
    assert_eq!(local["manifests"][1]["mediaType"], OCI_MANIFEST);

    // -v: Docker's ImageManifest objects, tab-indented.
    let text = ok(&run(&["manifest", "inspect", "-v", &list]));
    assert!(text.starts_with("[\n\t{\n\t\t\"Ref\": "), "{text}");
    let verbose: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(verbose[0]["Ref"], img_arm64);
    assert_eq!(verbose[0]["Descriptor"]["platform"]["variant"], "v8");
    assert_eq!(
        verbose[1]["OCIManifest"]["layers"][0]["digest"],
        Digest::sha256_of(&amd64.layer).to_string()
    );

    // LIST IMAGE: the image's manifest, re-indented with tabs.
    // (The test manifests are 2-space pretty JSON: each indent becomes a tab.)
    let tabbed = |m: &[u8]| {
        format!(
            "{}\n",
            String::from_utf8(m.to_vec()).unwrap().replace("  ", "\t")
        )
    };
    assert_eq!(
        ok(&run(&["manifest", "inspect", &list, &img_amd64])),
        tabbed(&amd64.manifest)
    );
    fails(
        &run(&["manifest", "inspect", &list, &format!("{r}/other:1")]),
        "No such manifest",
    );

    // push: amd64 is copied into multi first (by digest), then the index.
    let out = ok(&run(&["manifest", "push", &list]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..lines.len() - 1],
        [format!(
            "Pushed ref {r}/multi@{0} with digest: {0}",
            amd64.digest()
        )],
        "{out}"
    );
    let pushed: Digest = lines.last().unwrap().parse().unwrap();
    let (status, ct, body) = reg.get("multi/manifests/list");
    assert_eq!((status, ct.as_str()), (200, OCI_INDEX));
    assert_eq!(Digest::sha256_of(&body), pushed);
    assert_eq!(
        format!("{}\n", String::from_utf8(body.clone()).unwrap()),
        ok(&run(&["manifest", "inspect", &list])),
        "inspect shows exactly what push sent"
    );
    // The children and their blobs are in the list's repository.
    let (status, ct, child) = reg.get(&format!("multi/manifests/{}", amd64.digest()));
    assert_eq!((status, ct.as_str()), (200, OCI_MANIFEST));
    assert_eq!(child, amd64.manifest, "pushed byte-exact");
    for blob in [&amd64.config, &amd64.layer] {
        let (status, _, data) = reg.get(&format!("multi/blobs/{}", Digest::sha256_of(blob)));
        assert_eq!((status, &data), (200, blob));
    }

    // berth's own inspecting commands see both platforms.
    assert_eq!(
        ok(&run(&["platforms", &list])),
        format!(
            "linux/arm64/v8 {}\nlinux/amd64 {}\n",
            arm64.digest(),
            amd64.digest()
        )
    );
    assert_eq!(ok(&run(&["inspect", "--raw", &list])).as_bytes(), body);

    // A second push changes nothing and copies nothing.
    assert_eq!(
        ok(&run(&["manifest", "push", &list])),
        format!("{pushed}\n")
    );

    // rm: the local list goes, inspect then reads the registry's.
    fails(
        &run(&["manifest", "rm", &format!("{r}/none:1"), &list]),
        &format!("No such manifest: {r}/none:1"),
    );
    // The failing name did not stop the other: the list is gone.
    let text = ok(&run(&["manifest", "inspect", &list]));
    assert_eq!(
        text.as_bytes(),
        [&body[..], b"\n"].concat(),
        "the registry's copy"
    );
    fails(&run(&["manifest", "rm", &list]), "No such manifest");
    let text = ok(&run(&["manifest", "inspect", "-v", &list]));
    let verbose: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        verbose[1]["Ref"],
        format!("{r}/multi:list@{}", amd64.digest())
    );
    assert_eq!(verbose[0]["Descriptor"]["platform"]["variant"], "v8");
    // A single image from the registry: tab-indented as served.
    assert_eq!(
        ok(&run(&["manifest", "inspect", &img_amd64])),
        tabbed(&amd64.manifest)
    );
    let text = ok(&run(&["manifest", "inspect", "-v", &img_amd64]));
    let verbose: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(verbose["Descriptor"]["platform"]["architecture"], "amd64");
    assert_eq!(verbose["Descriptor"]["digest"], amd64.digest().to_string());
}

#[test]
fn docker_list_amend_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let (_server, port) = serve(&home.join("server-root"));
    let reg = Registry::new(port);
    let r = format!("127.0.0.1:{port}");
    let run = |args: &[&str]| berth(args, home);

    let amd64 = Image::linux(DOCKER_MANIFEST, "amd64", None, 3);
    let arm = Image::linux(DOCKER_MANIFEST, "arm", Some("v7"), 4);
    // An image whose config names no platform (as artifacts have).
    let bare = Image::new(DOCKER_MANIFEST, json!({"rootfs": {"type": "layers"}}), 5);
    reg.image("app", "amd64", &amd64);
    reg.image("app", "arm", &arm);
    reg.image("app", "bare", &bare);
    let list = format!("{r}/app:1");
    let img_amd64 = format!("{r}/app:amd64");
    let img_arm = format!("{r}/app:arm");

    ok(&run(&["manifest", "create", &list, &img_amd64]));
    ok(&run(&["manifest", "create", "--amend", &list, &img_arm]));
    ok(&run(&[
        "manifest",
        "annotate",
        "--os-version",
        "1.0",
        "--os-features",
        "a,b",
        "--os-features",
        "a",
        &list,
        &img_amd64,
    ]));
    // Amending with an unchanged image keeps its annotation.
    ok(&run(&["manifest", "create", "-a", &list, &img_amd64]));
    let doc: Value = serde_json::from_str(&ok(&run(&["manifest", "inspect", &list]))).unwrap();
    assert_eq!(doc["mediaType"], DOCKER_LIST);
    assert_eq!(platforms(&doc), ["linux/amd64", "linux/arm/v7"]);
    assert_eq!(doc["manifests"][0]["platform"]["os.version"], "1.0");
    assert_eq!(
        doc["manifests"][0]["platform"]["os.features"],
        json!(["a", "b"])
    );

    // The tag moved: amending replaces the entry, platform from the new config.
    let amd64_v2 = Image::linux(DOCKER_MANIFEST, "amd64", None, 6);
    reg.image("app", "amd64", &amd64_v2);
    ok(&run(&["manifest", "create", "--amend", &list, &img_amd64]));
    let doc: Value = serde_json::from_str(&ok(&run(&["manifest", "inspect", &list]))).unwrap();
    assert_eq!(
        digests(&doc),
        [amd64_v2.digest().to_string(), arm.digest().to_string()]
    );
    assert!(doc["manifests"][0]["platform"].get("os.version").is_none());

    // An entry without os/arch cannot be pushed until annotated.
    ok(&run(&[
        "manifest",
        "create",
        "--amend",
        &list,
        &format!("{r}/app:bare"),
    ]));
    fails(
        &run(&["manifest", "push", &list]),
        "must have an OS and Architecture",
    );
    ok(&run(&[
        "manifest",
        "annotate",
        "--os",
        "linux",
        "--arch",
        "arm64",
        &list,
        &format!("{r}/app:bare"),
    ]));

    let out = ok(&run(&["manifest", "push", "--purge", &list]));
    assert_eq!(
        out.lines().count(),
        1,
        "every image was in app already: {out}"
    );
    let pushed: Digest = out.trim().parse().unwrap();
    let (status, ct, body) = reg.get("app/manifests/1");
    assert_eq!((status, ct.as_str()), (200, DOCKER_LIST));
    assert_eq!(Digest::sha256_of(&body), pushed);
    let doc: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        platforms(&doc),
        ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    );
    // --purge removed the local list.
    fails(&run(&["manifest", "rm", &list]), "No such manifest");
    assert_eq!(
        ok(&run(&["platforms", &list])),
        format!(
            "linux/amd64 {}\nlinux/arm/v7 {}\nlinux/arm64 {}\n",
            amd64_v2.digest(),
            arm.digest(),
            bare.digest()
        )
    );
    assert!(
        std::fs::read_dir(home.join("client-root/manifests"))
            .unwrap()
            .next()
            .is_none(),
        "nothing left under manifests/"
    );
}
