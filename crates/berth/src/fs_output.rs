//! `--output type=local` and `type=tar`: the image's filesystem as a
//! directory or one tarball, written so that a failure leaves the
//! destination as it was.
//!
//! The layers are flattened into a temporary directory beside the
//! destination (same filesystem) exactly as overlayfs shows them to a RUN
//! step ([`berth_layer::UnpackOptions::flatten`]: a layer's directory hides a
//! lower layer's symlink or file of that name, as BuildKit's export of the
//! mounted snapshot does). Only a complete tree reaches the destination:
//!
//! - `type=tar`: the tarball is written to a temporary file beside `dest`
//!   and renamed onto it.
//! - `type=local`, `dest` missing or an empty directory: the tree is renamed
//!   into place in one `rename(2)` (an empty directory keeps its mode and
//!   owner).
//! - `type=local`, `dest` a directory with entries: like BuildKit, the
//!   result is merged into it (entries of the image replace same-named ones,
//!   directories merge, other entries stay). The merge is renames only, each
//!   one journaled: a failing rename undoes the ones before it, so `dest`
//!   ends with the whole result or as it was. Replaced entries are removed
//!   once everything is in place.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// Writes the flattened filesystem of `manifest`'s layers to `dest`.
pub fn write_filesystem(
    blobs: &berth_store::BlobStore,
    manifest: &serde_json::Value,
    dest: &Path,
    kind: &str,
) -> Result<()> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if kind == "local" {
        if let Ok(m) = std::fs::symlink_metadata(dest) {
            if !m.is_dir() {
                bail!(
                    "--output type=local,dest={}: exists and is not a directory",
                    dest.display()
                );
            }
        }
    } else if std::fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
        bail!("--output type=tar,dest={}: is a directory", dest.display());
    }
    // BuildKit creates missing parents of the destination too.
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    // Removed on every early return: nothing half-made stays behind.
    let tree = tempfile::Builder::new()
        .prefix(".berth-output-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let digest: berth_oci::Digest = layer["digest"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|e| anyhow!("{e}"))?;
        let f = blobs.open_blob(&digest)?;
        let reader = berth_layer::decompress(std::io::BufReader::new(f))?;
        let mut opts = berth_layer::UnpackOptions::new(berth_layer::Whiteouts::Apply);
        opts.ignore_chown_errors = true;
        opts.flatten = true;
        berth_layer::unpack(reader, tree.path(), &opts)
            .map_err(|e| anyhow!("unpacking {digest}: {e}"))?;
    }
    if kind == "tar" {
        let tmp = tempfile::Builder::new()
            .prefix(".berth-output-")
            .suffix(".tar")
            .tempfile_in(parent)
            .with_context(|| format!("creating a temporary file in {}", parent.display()))?;
        let mut w = std::io::BufWriter::new(tmp.as_file());
        berth_layer::write_tree(tree.path(), &mut w, &berth_layer::DiffOptions::default())
            .map_err(|e| anyhow!("{e}"))?;
        w.flush()?;
        drop(w);
        // Like any new file (the temporary one is 0600).
        let mode = 0o666 & !umask();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
        tmp.persist(dest)
            .map_err(|e| anyhow!("writing {}: {}", dest.display(), e.error))?;
        return Ok(());
    }
    publish(tree, dest)
}

/// The process umask (read by setting and restoring it).
fn umask() -> u32 {
    // SAFETY: umask cannot fail; it is set back at once.
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old
    }
}

/// Moves the finished `tree` to `dest` (see the module docs).
fn publish(tree: tempfile::TempDir, dest: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new directory like `mkdir -p` makes (BuildKit's is 0700).
            let mode = 0o777 & !umask();
            std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(mode))?;
            std::fs::rename(tree.path(), dest)
                .with_context(|| format!("moving the result to {}", dest.display()))?;
            // Renamed away: nothing left to remove.
            let _ = tree.keep();
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("inspecting {}", dest.display())),
        Ok(m) if is_empty_dir(dest)? => {
            // rename(2) replaces an empty directory in one step; it keeps
            // the mode and owner it had.
            std::fs::set_permissions(tree.path(), std::fs::Permissions::from_mode(m.mode()))?;
            let _ = std::os::unix::fs::lchown(tree.path(), Some(m.uid()), Some(m.gid()));
            std::fs::rename(tree.path(), dest)
                .with_context(|| format!("moving the result to {}", dest.display()))?;
            let _ = tree.keep();
            Ok(())
        }
        Ok(_) => {
            let parent = tree.path().parent().unwrap_or(Path::new(".")).to_path_buf();
            let aside = tempfile::Builder::new()
                .prefix(".berth-replaced-")
                .tempdir_in(&parent)
                .with_context(|| {
                    format!("creating a temporary directory in {}", parent.display())
                })?;
            let mut merge = Merge {
                aside: aside.path().to_path_buf(),
                journal: Vec::new(),
                n: 0,
            };
            if let Err(e) = merge.dir(tree.path(), dest) {
                merge.undo();
                return Err(e.context(format!(
                    "merging the result into {} (left as it was)",
                    dest.display()
                )));
            }
            // `tree` (now only emptied directories) and `aside` (what the
            // result replaced) are removed when dropped.
            Ok(())
        }
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(std::fs::read_dir(p)
        .with_context(|| format!("reading {}", p.display()))?
        .next()
        .is_none())
}

/// One done step of a merge, undone in reverse on failure.
enum Step {
    /// `from` (in the new tree) was renamed to `to` (in dest).
    Placed { from: PathBuf, to: PathBuf },
    /// dest's `orig` was renamed out of the way to `at`.
    Aside { orig: PathBuf, at: PathBuf },
    /// An existing directory of dest took the new one's metadata.
    Meta {
        path: PathBuf,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: (i64, i64),
    },
}

struct Merge {
    aside: PathBuf,
    journal: Vec<Step>,
    n: u64,
}

impl Merge {
    /// Merges directory `src` into the existing directory `dst`.
    fn dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let mut names: Vec<OsString> = std::fs::read_dir(src)
            .with_context(|| format!("reading {}", src.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for name in names {
            let s = src.join(&name);
            let d = dst.join(&name);
            let sm = std::fs::symlink_metadata(&s)?;
            match std::fs::symlink_metadata(&d) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.place(&s, &d)?,
                Err(e) => return Err(e).with_context(|| format!("inspecting {}", d.display())),
                Ok(dm) if sm.is_dir() && dm.is_dir() => {
                    self.dir(&s, &d)?;
                    self.journal.push(Step::Meta {
                        path: d.clone(),
                        mode: dm.mode() & 0o7777,
                        uid: dm.uid(),
                        gid: dm.gid(),
                        mtime: (dm.mtime(), dm.mtime_nsec()),
                    });
                    copy_meta(&sm, &d).with_context(|| format!("setting {}", d.display()))?;
                }
                Ok(_) => {
                    self.n += 1;
                    let at = self.aside.join(self.n.to_string());
                    std::fs::rename(&d, &at)
                        .with_context(|| format!("moving {} out of the way", d.display()))?;
                    self.journal.push(Step::Aside {
                        orig: d.clone(),
                        at,
                    });
                    self.place(&s, &d)?;
                }
            }
        }
        Ok(())
    }

    fn place(&mut self, s: &Path, d: &Path) -> Result<()> {
        std::fs::rename(s, d).with_context(|| format!("moving the result to {}", d.display()))?;
        self.journal.push(Step::Placed {
            from: s.to_path_buf(),
            to: d.to_path_buf(),
        });
        Ok(())
    }

    fn undo(&mut self) {
        while let Some(step) = self.journal.pop() {
            let r = match &step {
                Step::Placed { from, to } => std::fs::rename(to, from),
                Step::Aside { orig, at } => std::fs::rename(at, orig),
                Step::Meta {
                    path,
                    mode,
                    uid,
                    gid,
                    mtime,
                } => restore_meta(path, *mode, *uid, *gid, *mtime),
            };
            if let Err(e) = r {
                tracing::warn!("undoing a partial --output merge: {e}");
            }
        }
    }
}

fn copy_meta(from: &std::fs::Metadata, to: &Path) -> std::io::Result<()> {
    restore_meta(
        to,
        from.mode() & 0o7777,
        from.uid(),
        from.gid(),
        (from.mtime(), from.mtime_nsec()),
    )
}

fn restore_meta(
    path: &Path,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
) -> std::io::Result<()> {
    // Ownership first: chown clears setuid/setgid bits that chmod then sets.
    if let Err(e) = std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(e);
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let t = std::time::UNIX_EPOCH
        + std::time::Duration::new(mtime.0.max(0) as u64, mtime.1.clamp(0, 999_999_999) as u32);
    let f = std::fs::File::open(path)?;
    f.set_modified(t)
}
