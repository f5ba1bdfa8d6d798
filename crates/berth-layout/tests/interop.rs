//! Layouts berth writes are read by skopeo and unpacked by umoci.

use std::process::Command;

use berth_layout::OciLayout;
use berth_oci::{media_type as mt, Descriptor, Digest};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

#[test]
fn skopeo_and_umoci_read_a_layout_berth_wrote() {
    for tool in ["skopeo", "umoci", "tar"] {
        assert!(have(tool), "{tool} is needed (scripts/test.sh installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hello"), b"hello from berth\n").unwrap();
    let layer_tar = dir.path().join("layer.tar");
    assert!(Command::new("tar")
        .args(["-C"])
        .arg(&rootfs)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&layer_tar)
        .arg("etc")
        .status()
        .unwrap()
        .success());
    let layer = std::fs::read(&layer_tar).unwrap();
    let layer_digest = Digest::sha256_of(&layer);

    let layout = OciLayout::open_or_create(&dir.path().join("layout")).unwrap();
    layout.write_blob(&layer_digest, &mut &layer[..]).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string();
    let config_digest = layout.write_blob_bytes(config.as_bytes()).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    let manifest_digest = layout.write_blob_bytes(manifest.as_bytes()).unwrap();
    layout
        .add_manifest(
            Descriptor {
                media_type: mt::OCI_MANIFEST.into(),
                digest: manifest_digest.clone(),
                size: manifest.len() as u64,
                urls: None,
                annotations: None,
                artifact_type: None,
                platform: None,
            },
            Some("v1"),
        )
        .unwrap();

    let layout_ref = format!("oci:{}:v1", layout.root().display());
    let out = Command::new("skopeo")
        .args(["inspect", "--raw", &layout_ref])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.stdout,
        manifest.as_bytes(),
        "skopeo reads the manifest byte-exact"
    );
    let copy = format!("oci:{}:copied", dir.path().join("copy").display());
    let out = Command::new("skopeo")
        .args(["copy", "--preserve-digests", &layout_ref, &copy])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bundle = dir.path().join("bundle");
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:v1", layout.root().display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(bundle.join("rootfs/etc/hello")).unwrap(),
        b"hello from berth\n"
    );
}
