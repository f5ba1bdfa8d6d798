//! Reading back an image berth wrote to an OCI layout: manifest, config,
//! and every layer's tar entries.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

/// One entry of a layer tarball (`./` and a trailing `/` trimmed from the
/// path, permission bits only in `mode`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: String,
    pub uid: u64,
    pub gid: u64,
    pub kind: tar::EntryType,
    pub mode: u32,
    pub mtime: u64,
    pub link: Option<String>,
    pub data: Vec<u8>,
}

/// An image read from an OCI layout (its first manifest).
pub struct Image {
    pub manifest_digest: String,
    pub manifest: Value,
    pub config: Value,
    pub layers: Vec<Vec<Entry>>,
}

pub fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let (alg, hex) = digest.split_once(':').unwrap();
    std::fs::read(layout.join("blobs").join(alg).join(hex)).unwrap()
}

/// The entries of a layer tarball: plain or gzip (berth's parallel gzip
/// writes several members, so all of them are read).
pub fn entries(bytes: &[u8]) -> Vec<Entry> {
    let mut plain = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut plain)
            .unwrap();
    } else {
        plain = bytes.to_vec();
    }
    let mut ar = tar::Archive::new(plain.as_slice());
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let h = e.header().clone();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push(Entry {
            path: path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            kind: h.entry_type(),
            mode: h.mode().unwrap() & 0o7777,
            mtime: h.mtime().unwrap(),
            link,
            data,
        });
    }
    out
}

impl Image {
    pub fn from_layout(dir: &Path) -> Image {
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let manifest: Value = serde_json::from_slice(&blob(dir, &manifest_digest)).unwrap();
        let config: Value =
            serde_json::from_slice(&blob(dir, manifest["config"]["digest"].as_str().unwrap()))
                .unwrap();
        let layers = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| entries(&blob(dir, l["digest"].as_str().unwrap())))
            .collect();
        Image {
            manifest_digest,
            manifest,
            config,
            layers,
        }
    }

    /// The topmost layer entry at `path` (the image's view of it, whiteouts
    /// aside).
    pub fn file(&self, path: &str) -> Option<&Entry> {
        let path = path.trim_end_matches('/');
        self.layers.iter().flatten().rfind(|e| e.path == path)
    }

    pub fn text(&self, path: &str) -> String {
        let e = self
            .file(path)
            .unwrap_or_else(|| panic!("{path} is not in any layer"));
        String::from_utf8(e.data.clone()).unwrap()
    }
}
