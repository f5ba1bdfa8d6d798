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
    /// Chosen when the first step needs it (a no-op rebuild never mounts).
    snapshotter: std::sync::Arc<std::sync::OnceLock<Snapshotter>>,
}

/// How a step sees the layers below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Snapshotter {
    /// An overlayfs mount of the lower snapshots; the step writes the upper
    /// directory directly.
    Overlay,
    /// The copy-based fallback (BuildKit's "native"): the lowers are copied
    /// into a plain directory, and what the step changed is moved into the
    /// upper directory afterwards ([`berth_layer::upper_from_tree`]).
    Native,
}

impl Snapshotter {
    /// `BERTH_SNAPSHOTTER=overlay|native|auto`; `None` for auto (the
    /// default).
    fn from_env() -> io::Result<Option<Snapshotter>> {
        match std::env::var("BERTH_SNAPSHOTTER").as_deref() {
            Ok("overlay") => Ok(Some(Snapshotter::Overlay)),
            Ok("native") => Ok(Some(Snapshotter::Native)),
            Ok("auto") | Ok("") | Err(_) => Ok(None),
            Ok(other) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("BERTH_SNAPSHOTTER={other:?}: use overlay, native or auto"),
            )),
        }
    }

    /// Overlay when a test mount works here.
    fn probe(tmp: &Path) -> Snapshotter {
        if overlay_works(tmp) {
            Snapshotter::Overlay
        } else {
            tracing::info!("overlayfs cannot be mounted here: using copy-based snapshots");
            Snapshotter::Native
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Snapshotter::Overlay => "overlay",
            Snapshotter::Native => "native",
        }
    }
}

/// Mounts a one-lower overlay (with `userxattr`, as every step's) in a
/// scratch directory and unmounts it.
fn overlay_works(tmp: &Path) -> bool {
    let Ok(probe) = tempfile::Builder::new().prefix("probe-").tempdir_in(tmp) else {
        return false;
    };
    let dirs: Vec<PathBuf> = ["lower", "upper", "work", "merged"]
        .iter()
        .map(|d| probe.path().join(d))
        .collect();
    if dirs.iter().any(|d| fs::create_dir(d).is_err()) {
        return false;
    }
    match berth_sandbox::mount_overlay(&dirs[..1], &dirs[1], &dirs[2], &dirs[3]) {
        Ok(guard) => guard.unmount().is_ok(),
        Err(e) => {
            tracing::debug!("overlay probe: {e}");
            false
        }
    }
}

/// A fresh upper + work directory pair for one step.
#[derive(Debug)]
pub struct Scratch {
    pub base: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    snapshotter: Snapshotter,
    /// Native: the tree the lowers were copied into, and when the copy
    /// was done (what changed after is the step's).
    materialized: std::sync::Mutex<Option<(PathBuf, berth_layer::ChangeClock)>>,
}

/// The merged view of a step's layers: an overlay mount, or (native) a
/// copied tree that needs no unmounting.
pub enum RootView {
    Mounted(berth_sandbox::MountGuard),
    Copied,
}

impl RootView {
    pub fn unmount(self) -> Result<()> {
        match self {
            RootView::Mounted(g) => g.unmount().map_err(|e| BuildError::Sandbox(e.to_string())),
            RootView::Copied => Ok(()),
        }
    }
}

impl Scratch {
    pub fn snapshotter(&self) -> Snapshotter {
        self.snapshotter
    }

    /// Shows `lowers` with this scratch's upper directory on top at
    /// `target` (an empty directory): an overlay mount, or a copy.
    pub fn mount(&self, lowers: &[PathBuf], target: &Path) -> Result<RootView> {
        match self.snapshotter {
            Snapshotter::Overlay => {
                berth_sandbox::mount_overlay(lowers, &self.upper, &self.work, target)
                    .map(RootView::Mounted)
                    .map_err(|e| BuildError::Sandbox(e.to_string()))
            }
            Snapshotter::Native => {
                self.materialize(lowers, target)?;
                Ok(RootView::Copied)
            }
        }
    }

    /// The root filesystem for a sandboxed process on `lowers`.
    pub fn rootfs(&self, lowers: &[PathBuf]) -> Result<berth_sandbox::Rootfs> {
        match self.snapshotter {
            Snapshotter::Overlay => Ok(berth_sandbox::Rootfs::Overlay {
                lowers: lowers.to_vec(),
                upper: self.upper.clone(),
                work: self.work.clone(),
            }),
            Snapshotter::Native => {
                let tree = self.base.join("rootfs");
                fs::create_dir(&tree)?;
                self.materialize(lowers, &tree)?;
                Ok(berth_sandbox::Rootfs::Dir(tree))
            }
        }
    }

    fn materialize(&self, lowers: &[PathBuf], target: &Path) -> Result<()> {
        let mut slot = self.materialized.lock().unwrap();
        if slot.is_some() {
            return Err(BuildError::Other(
                "a step's layers were materialized twice".into(),
            ));
        }
        berth_layer::materialize(lowers, target)
            .map_err(|e| BuildError::Layer(format!("copying the layers below the step: {e}")))?;
        let clock = berth_layer::ChangeClock::tick(&self.base)
            .map_err(|e| BuildError::Layer(e.to_string()))?;
        *slot = Some((target.to_path_buf(), clock));
        Ok(())
    }

    /// After the step: with native snapshots, moves what it changed in the
    /// copied tree into the upper directory (overlay steps wrote it there
    /// already, as did steps that wrote the upper directory directly).
    pub fn settle(&self, lowers: &[PathBuf]) -> Result<()> {
        let Some((tree, since)) = self.materialized.lock().unwrap().take() else {
            return Ok(());
        };
        berth_layer::upper_from_tree(lowers, &tree, &self.upper, since)
            .map_err(|e| BuildError::Layer(format!("collecting the step's changes: {e}")))?;
        Ok(())
    }
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
        // A bad BERTH_SNAPSHOTTER is an error at once, not at the first step.
        Snapshotter::from_env()?;
        Ok(Snapshots {
            dir,
            tmp,
            snapshotter: Default::default(),
        })
    }

    pub fn snapshotter(&self) -> Snapshotter {
        *self
            .snapshotter
            .get_or_init(|| match Snapshotter::from_env() {
                Ok(Some(s)) => s,
                _ => Snapshotter::probe(&self.tmp),
            })
    }

    /// A snapshot by its directory name (a snapshot-only layer's).
    pub fn named(&self, name: &str) -> PathBuf {
        self.dir.join(name)
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
        Ok(Scratch {
            base,
            upper,
            work,
            snapshotter: self.snapshotter(),
            materialized: Default::default(),
        })
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
