//! Content-based cache keys and the persistent cache index.
//!
//! A key is the sha256 of a canonical JSON document describing a step: its
//! parent's key plus everything that decides the step's output (command,
//! environment, user, working directory, mounts, or the checksums of the
//! files a COPY reads). Equal keys mean equal outputs, so a step whose key is
//! in the index is not run again.
//!
//! The index is one small JSON file per key under `<root>/buildcache/`,
//! written with tmp + rename: several builds (and processes) may share a root
//! without a database lock, and a crash leaves either the old or the new
//! record, never half of one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_oci::Digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// A step's cache key: lowercase hex sha256.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CacheKey(pub String);

impl CacheKey {
    /// The key of `definition` (any JSON; object keys are serialised in
    /// sorted order by serde_json's default map, so it is canonical).
    pub fn of(definition: &Value) -> CacheKey {
        let bytes = serde_json::to_vec(definition).expect("JSON values always serialise");
        CacheKey(hex(&Sha256::digest(&bytes)))
    }

    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The diff_id prefix of a layer kept only as a snapshot
/// (`snapshot:<name under snapshots/>`): the step of a stage no image
/// included. Its `digest` is `sha256:<the step's cache key>`; the blob is
/// made from the snapshot when an image first needs it.
pub const SNAPSHOT_LAYER: &str = "snapshot:";

/// A layer as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Digest of the blob in the content store.
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "mediaType")]
    pub media_type: String,
}

impl LayerRef {
    /// The snapshot name of a snapshot-only layer.
    pub fn snapshot_name(&self) -> Option<&str> {
        self.diff_id.strip_prefix(SNAPSHOT_LAYER)
    }
}

/// What a cached step produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// `None`: the step changed nothing on the filesystem.
    pub layer: Option<LayerRef>,
    /// When the step ran (RFC 3339); reused so a cached rebuild makes the
    /// same image.
    pub created: String,
}

/// The persistent index from cache keys to results.
#[derive(Debug, Clone)]
pub struct CacheIndex {
    dir: PathBuf,
}

impl CacheIndex {
    pub fn open(root: &Path) -> io::Result<CacheIndex> {
        let dir = root.join("buildcache");
        fs::create_dir_all(&dir)?;
        Ok(CacheIndex { dir })
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(&key.0)
    }

    /// The record for `key`, if any. A record naming a blob that is no
    /// longer in the store (gc'd), or a snapshot that is gone (pruned), is
    /// treated as absent.
    pub fn get(
        &self,
        key: &CacheKey,
        blob_exists: impl Fn(&Digest) -> bool,
    ) -> Option<CacheRecord> {
        let bytes = fs::read(self.path(key)).ok()?;
        let record: CacheRecord = serde_json::from_slice(&bytes).ok()?;
        match &record.layer {
            Some(l) => match l.snapshot_name() {
                Some(name) if !self.snapshots_dir().join(name).is_dir() => None,
                Some(_) => Some(record),
                None if !blob_exists(&l.digest) => None,
                None => Some(record),
            },
            None => Some(record),
        }
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.dir.with_file_name("snapshots")
    }

    pub fn put(&self, key: &CacheKey, record: &CacheRecord) -> io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{}", key.0, std::process::id()));
        fs::write(&tmp, serde_json::to_vec(record)?)?;
        fs::rename(&tmp, self.path(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_canonical_and_sensitive() {
        let a = CacheKey::of(&json!({"b": 1, "a": [1, 2]}));
        let b = CacheKey::of(&json!({"a": [1, 2], "b": 1}));
        assert_eq!(a, b);
        assert_ne!(a, CacheKey::of(&json!({"a": [2, 1], "b": 1})));
        assert_eq!(a.0.len(), 64);
    }

    #[test]
    fn index_round_trip_and_gc_awareness() {
        let dir = tempfile::tempdir().unwrap();
        let idx = CacheIndex::open(dir.path()).unwrap();
        let key = CacheKey::of(&json!("x"));
        assert!(idx.get(&key, |_| true).is_none());
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let rec = CacheRecord {
            layer: Some(LayerRef {
                diff_id: format!("sha256:{}", "b".repeat(64)),
                digest: digest.clone(),
                size: 3,
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            }),
            created: "2026-01-01T00:00:00Z".into(),
        };
        idx.put(&key, &rec).unwrap();
        assert_eq!(idx.get(&key, |_| true), Some(rec));
        assert!(idx.get(&key, |_| false).is_none(), "blob gone -> miss");
    }
}
