//! Unpacked layers (overlayfs lower directories) and fresh upper
//! directories for steps, under `<root>/snapshots/`.
//!
//! A snapshot is one layer on its own, unpacked with overlay-style whiteouts
//! and named by its diff_id, so any image that shares the layer shares the
//! directory. A step writes into a new upper directory; after the step its
//! upper directory *is* the new layer's snapshot (renamed into place), so
//! nothing is unpacked twice. Directories appear under their final name only
//! when complete (unpack into `tmp/`, then rename).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_layer::{Compression, DiffReport, LayerEncoder, UnpackOptions, Whiteouts};
use berth_oci::Digest;
use berth_store::{BlobStore, BlobWriter};

use crate::cache::LayerRef;
use crate::{BuildError, Result};

#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    tmp: PathBuf,
}

/// A fresh upper + work directory pair for one step.
#[derive(Debug)]
pub struct Scratch {
    pub base: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The work dir may hold a root-owned `work/work` dir with mode 000.
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn hex_of(diff_id: &str) -> &str {
    diff_id.rsplit(':').next().unwrap_or(diff_id)
}

impl Snapshots {
    pub fn open(root: &Path) -> io::Result<Snapshots> {
        let dir = root.join("snapshots");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp)?;
        Ok(Snapshots { dir, tmp })
    }

    pub fn path(&self, diff_id: &str) -> PathBuf {
        self.dir.join(hex_of(diff_id))
    }

    pub fn scratch(&self) -> io::Result<Scratch> {
        let base = tempfile::Builder::new()
            .prefix("step-")
            .tempdir_in(&self.tmp)?
            .keep();
        let upper = base.join("fs");
        let work = base.join("work");
        fs::create_dir(&upper)?;
        fs::create_dir(&work)?;
        Ok(Scratch { base, upper, work })
    }

    /// Keeps a step's upper directory as a snapshot named by the step's
    /// cache key (and this run of it: `--no-cache` reruns must not reuse an
    /// older result), before its layer and diff_id exist: later steps can
    /// mount it while the layer is made in the background.
    pub fn adopt_key(&self, scratch: &Scratch, key: &str) -> io::Result<PathBuf> {
        let run = scratch
            .base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = self
            .dir
            .join(format!("k-{}-{run}", &key[..16.min(key.len())]));
        fs::rename(&scratch.upper, &dest)?;
        Ok(dest)
    }

    /// Names a key-named snapshot by its layer's diff_id too (a relative
    /// symlink), so later builds find it without unpacking the blob.
    pub fn name_by_diff_id(&self, diff_id: &str, snapshot: &Path) -> io::Result<()> {
        let link = self.path(diff_id);
        if link.exists() {
            return Ok(());
        }
        let target = snapshot
            .file_name()
            .ok_or_else(|| io::Error::other("snapshot has no name"))?;
        match std::os::unix::fs::symlink(target, &link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
            _ => Ok(()),
        }
    }

    /// The snapshot of `layer`, unpacking its blob first if needed.
    pub fn ensure(&self, blobs: &BlobStore, layer: &LayerRef) -> Result<PathBuf> {
        let dest = self.path(&layer.diff_id);
        if dest.exists() {
            return Ok(dest);
        }
        let tmp = tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(&self.tmp)?;
        let target = tmp.path().join("fs");
        fs::create_dir(&target)?;
        let file = blobs.open_blob(&layer.digest).map_err(|e| {
            BuildError::Store(format!("layer {} is not in the store: {e}", layer.digest))
        })?;
        let reader = berth_layer::decompress(io::BufReader::with_capacity(1 << 20, file))
            .map_err(|e| BuildError::Layer(format!("layer {}: {e}", layer.digest)))?;
        let opts = UnpackOptions::new(Whiteouts::Overlay);
        berth_layer::unpack(reader, &target, &opts)
            .map_err(|e| BuildError::Layer(format!("unpacking layer {}: {e}", layer.digest)))?;
        match fs::rename(&target, &dest) {
            Ok(()) => {}
            Err(_) if dest.exists() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(dest)
    }
}

/// A [`BlobWriter`] as a `std::io::Write`.
pub struct BlobSink(pub BlobWriter);

impl Write for BlobSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Shared chunks: past a few MiB the blob's sha256 runs on the
        // writer's helper thread while this thread tars and hashes the
        // diff_id (compression has its own workers).
        self.0.write_bytes(bytes::Bytes::copy_from_slice(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes a layer produced by `produce` (which writes an uncompressed tar)
/// into the store's ingest, verified but staged (see
/// [`BlobStore::publish`]).
pub fn commit_layer(
    blobs: &BlobStore,
    compression: Compression,
    media_type: &str,
    produce: impl FnOnce(&mut dyn Write) -> std::result::Result<DiffReport, berth_layer::LayerError>,
) -> Result<(LayerRef, berth_store::StagedBlob)> {
    let writer = blobs.writer()?;
    let mut encoder = LayerEncoder::new(BlobSink(writer), compression)
        .map_err(|e| BuildError::Layer(e.to_string()))?;
    let report = match produce(&mut encoder) {
        Ok(r) => r,
        Err(e) => return Err(BuildError::Layer(e.to_string())),
    };
    let (BlobSink(mut writer), encoded) = encoder
        .finish()
        .map_err(|e| BuildError::Layer(e.to_string()))?;
    // A step that changed nothing still gets its (empty) layer: the Docker
    // engine's BuildKit keeps one per RUN/COPY/ADD/WORKDIR, and images
    // must have the same layers and history.
    let _ = report;
    let digest: Digest = writer.current_digest();
    // Staged, not committed: the build publishes all its layers with one
    // filesystem sync before it tags anything.
    let staged = writer
        .stage(&digest)
        .map_err(|e| BuildError::Store(e.to_string()))?;
    let size = staged.size();
    Ok((
        LayerRef {
            diff_id: encoded.diff_id,
            digest,
            size,
            media_type: media_type.to_string(),
        },
        staged,
    ))
}
