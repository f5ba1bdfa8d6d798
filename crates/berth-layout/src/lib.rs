//! OCI image layout directories (`oci:PATH[:TAG]`): the `oci-layout` marker,
//! `index.json` naming manifests by `org.opencontainers.image.ref.name`, and
//! content under `blobs/<algorithm>/<hex>`.
//!
//! Invariants: a blob file is written to a temporary name, verified against
//! its digest and renamed into place, so a reader never sees partial or wrong
//! content; `index.json` is replaced atomically. Paths are built only from
//! validated digests, so nothing outside the layout is ever touched.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use berth_oci::{media_type as mt, Descriptor, Digest, Hasher};
use serde::{Deserialize, Serialize};

/// Annotation naming a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not an OCI image layout (no oci-layout file); create one by copying an image to oci:{0}")]
    NotALayout(PathBuf),
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("blob {expected} written to {layout} does not match its digest (got {actual}); nothing was stored")]
    DigestMismatch {
        layout: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{layout} has no image named {name:?}; `index.json` names: {known}")]
    UnknownRef {
        layout: PathBuf,
        name: String,
        known: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An opened OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    root: PathBuf,
}

impl OciLayout {
    /// Opens an existing layout.
    pub fn open(root: &Path) -> Result<OciLayout, LayoutError> {
        let marker = root.join("oci-layout");
        let text = match fs::read_to_string(&marker) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LayoutError::NotALayout(root.to_path_buf()))
            }
            Err(e) => return Err(io_err(&marker)(e)),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| LayoutError::Invalid {
                path: marker.clone(),
                message: format!("not JSON: {e}"),
            })?;
        if v["imageLayoutVersion"].as_str().is_none() {
            return Err(LayoutError::Invalid {
                path: marker,
                message: "imageLayoutVersion is missing".into(),
            });
        }
        Ok(OciLayout {
            root: root.to_path_buf(),
        })
    }

    /// Opens the layout at `root`, creating an empty one if the directory
    /// is missing or empty.
    pub fn open_or_create(root: &Path) -> Result<OciLayout, LayoutError> {
        if root.join("oci-layout").exists() {
            return Self::open(root);
        }
        fs::create_dir_all(root.join("blobs")).map_err(io_err(root))?;
        let layout = OciLayout {
            root: root.to_path_buf(),
        };
        if !root.join("index.json").exists() {
            layout.write_index(&Index {
                schema_version: 2,
                media_type: Some(mt::OCI_INDEX.into()),
                manifests: Vec::new(),
                annotations: None,
            })?;
        }
        let marker = serde_json::json!({ "imageLayoutVersion": LAYOUT_VERSION }).to_string();
        layout.write_atomic(&root.join("oci-layout"), marker.as_bytes())?;
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where blob `digest` lives (whether or not it is there).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Size of blob `digest`, if present.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, LayoutError> {
        let p = self.blob_path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, LayoutError> {
        let p = self.blob_path(digest);
        File::open(&p).map_err(io_err(&p))
    }

    /// Reads a whole (small) blob and checks it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, LayoutError> {
        let p = self.blob_path(digest);
        let data = fs::read(&p).map_err(io_err(&p))?;
        let actual = Digest::of(digest.algorithm(), &data);
        if actual != *digest {
            return Err(LayoutError::DigestMismatch {
                layout: self.root.clone(),
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Copies `reader` into the layout as blob `digest`, verifying it.
    /// Returns the number of bytes written.
    pub fn write_blob(&self, digest: &Digest, reader: &mut dyn Read) -> Result<u64, LayoutError> {
        let dir = self.root.join("blobs").join(digest.algorithm().as_str());
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
            let mut hasher: Hasher = digest.algorithm().hasher();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let k = reader.read(&mut buf).map_err(io_err(&tmp))?;
                if k == 0 {
                    break;
                }
                hasher.update(&buf[..k]);
                file.write_all(&buf[..k]).map_err(io_err(&tmp))?;
                n += k as u64;
            }
            let actual = hasher.finish();
            if actual != *digest {
                return Err(LayoutError::DigestMismatch {
                    layout: self.root.clone(),
                    expected: digest.clone(),
                    actual,
                });
            }
            file.sync_all().map_err(io_err(&tmp))?;
            let dest = self.blob_path(digest);
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            Ok(n)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Convenience for in-memory content (manifests, configs).
    pub fn write_blob_bytes(&self, data: &[u8]) -> Result<Digest, LayoutError> {
        let digest = Digest::sha256_of(data);
        self.write_blob(&digest, &mut &data[..])?;
        Ok(digest)
    }

    fn read_index(&self) -> Result<Index, LayoutError> {
        let p = self.root.join("index.json");
        let text = fs::read(&p).map_err(io_err(&p))?;
        serde_json::from_slice(&text).map_err(|e| LayoutError::Invalid {
            path: p,
            message: format!("not a valid image index: {e}"),
        })
    }

    fn write_index(&self, index: &Index) -> Result<(), LayoutError> {
        let text = serde_json::to_vec(index).expect("index serialises");
        self.write_atomic(&self.root.join("index.json"), &text)
    }

    fn write_atomic(&self, path: &Path, data: &[u8]) -> Result<(), LayoutError> {
        let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err(path)(e)
        })
    }

    /// The manifests `index.json` lists, with their annotations.
    pub fn manifests(&self) -> Result<Vec<Descriptor>, LayoutError> {
        Ok(self.read_index()?.manifests)
    }

    /// The descriptor `index.json` names `name`. With no name, the only
    /// manifest of the index (an error if there are several).
    pub fn resolve(&self, name: Option<&str>) -> Result<Descriptor, LayoutError> {
        let manifests = self.manifests()?;
        let named = |d: &Descriptor| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let found = match name {
            Some(n) => manifests.iter().find(|d| named(d).as_deref() == Some(n)),
            None if manifests.len() == 1 => manifests.first(),
            None => None,
        };
        found.cloned().ok_or_else(|| LayoutError::UnknownRef {
            layout: self.root.clone(),
            name: name.unwrap_or("").to_string(),
            known: {
                let names: Vec<String> = manifests.iter().filter_map(named).collect();
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            },
        })
    }

    /// Names `descriptor` `name` in `index.json` (replacing what had that
    /// name), or adds it unnamed. The manifest blob must already be written.
    pub fn add_manifest(
        &self,
        mut descriptor: Descriptor,
        name: Option<&str>,
    ) -> Result<(), LayoutError> {
        if self.blob_size(&descriptor.digest)?.is_none() {
            return Err(LayoutError::Invalid {
                path: self.blob_path(&descriptor.digest),
                message: "manifest blob must be written before it is named in index.json".into(),
            });
        }
        let mut index = self.read_index()?;
        let has_name = |d: &Descriptor, n: &str| {
            d.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .and_then(|v| v.as_str())
                == Some(n)
        };
        match name {
            Some(n) => {
                index.manifests.retain(|d| !has_name(d, n));
                descriptor
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(REF_NAME.into(), n.into());
            }
            None => index
                .manifests
                .retain(|d| d.digest != descriptor.digest || d.annotations.is_some()),
        }
        index.manifests.push(descriptor);
        self.write_index(&index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(d: &Digest, size: usize) -> Descriptor {
        Descriptor {
            media_type: mt::OCI_MANIFEST.into(),
            digest: d.clone(),
            size: size as u64,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        }
    }

    #[test]
    fn round_trip_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(&dir.path().join("l")).unwrap();
        let m1 = layout.write_blob_bytes(b"{\"a\":1}").unwrap();
        let m2 = layout.write_blob_bytes(b"{\"a\":2}").unwrap();
        layout.add_manifest(desc(&m1, 7), Some("v1")).unwrap();
        assert_eq!(
            layout.resolve(None).unwrap().digest,
            m1,
            "the only manifest"
        );
        layout.add_manifest(desc(&m2, 7), Some("v2")).unwrap();
        assert!(layout.resolve(None).is_err(), "ambiguous without a name");
        // Re-naming v1 replaces the entry.
        layout.add_manifest(desc(&m2, 7), Some("v1")).unwrap();
        assert_eq!(layout.resolve(Some("v1")).unwrap().digest, m2);
        assert_eq!(layout.manifests().unwrap().len(), 2);
        let err = layout.resolve(Some("nope")).unwrap_err().to_string();
        assert!(err.contains("v1") && err.contains("v2"), "{err}");

        // Reopened, the layout reads the same; the files follow the spec.
        let again = OciLayout::open(layout.root()).unwrap();
        assert_eq!(again.read_blob(&m1).unwrap(), b"{\"a\":1}");
        let marker: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.root().join("oci-layout")).unwrap()).unwrap();
        assert_eq!(marker["imageLayoutVersion"], "1.0.0");
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(layout.root().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["manifests"][0]["annotations"][REF_NAME], "v2");
    }

    #[test]
    fn wrong_content_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let layout = OciLayout::open_or_create(dir.path()).unwrap();
        let claimed = Digest::sha256_of(b"expected");
        let err = layout
            .write_blob(&claimed, &mut &b"something else"[..])
            .unwrap_err();
        assert!(matches!(err, LayoutError::DigestMismatch { .. }));
        assert_eq!(layout.blob_size(&claimed).unwrap(), None);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty(), "temporary file left behind");
        // A manifest cannot be named before its blob exists.
        assert!(layout.add_manifest(desc(&claimed, 8), Some("x")).is_err());
    }

    #[test]
    fn not_a_layout() {
        let dir = tempfile::tempdir().unwrap();
        let err = OciLayout::open(dir.path()).unwrap_err();
        assert!(matches!(err, LayoutError::NotALayout(_)));
        assert!(err.to_string().contains("not an OCI image layout"));
    }
}
