//! `berth images` lists what the local store holds.

use std::path::Path;
use std::process::Command;

use berth_oci::Digest;

fn berth(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes a one-layer OCI layout at `dir` tagged `v1`; returns (digest, total size).
fn layout(dir: &Path) -> (Digest, u64) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = Digest::sha256_of(data);
        std::fs::write(blobs.join(d.hex()), data).unwrap();
        d
    };
    let layer = vec![7u8; 3000];
    let layer_d = put(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_d}"]}}}}"#
    );
    let config_d = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_d}","size":3000}}]}}"#,
        config.len()
    );
    let manifest_d = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_d}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    (
        manifest_d,
        (manifest.len() + config.len() + layer.len()) as u64,
    )
}

#[test]
fn images_lists_the_local_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (digest, size) = layout(&dir.path().join("layout"));
    let src = format!("oci:{}:v1", dir.path().join("layout").display());
    berth(&root, &["copy", "--quiet", &src, "local:demo/app:v1"]);
    berth(&root, &["copy", "--quiet", &src, "local:other:latest"]);

    let table = berth(&root, &["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("REPOSITORY") && lines[0].ends_with("SIZE"));
    let short = &digest.to_string()[..19];
    assert!(
        lines[1].starts_with("demo/app") && lines[1].contains(" v1 ") && lines[1].contains(short),
        "{table}"
    );
    assert!(
        lines[2].starts_with("other ") && lines[2].contains("latest"),
        "{table}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&berth(&root, &["images", "--format", "json", "demo"])).unwrap();
    assert_eq!(
        json.as_array().unwrap().len(),
        1,
        "filtered by repository prefix"
    );
    assert_eq!(json[0]["Repository"], "demo/app");
    assert_eq!(json[0]["Digest"], digest.to_string());
    assert_eq!(json[0]["Size"], size);

    assert_eq!(
        berth(&root, &["images", "-q"]),
        format!("{digest}\n{digest}\n")
    );
}
