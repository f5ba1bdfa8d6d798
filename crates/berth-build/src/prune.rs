//! `berth builder prune`: removes build cache that nothing can use any
//! more, or (`--all`) all of it.
//!
//! A build holds the root's build lock shared for its whole run; pruning
//! takes it exclusively and refuses to wait, so it never removes a snapshot
//! or file-cache entry a running build is about to use.
//!
//! Dangling (always removed): step snapshots no layer is named by (failed
//! or superseded runs: `snapshots/k-*` without a diff_id link), links to
//! missing snapshots, leftovers of interrupted work (`snapshots/tmp/*`,
//! `buildcache/.tmp-*`), file-cache entries no snapshot links any more
//! (link count 1), and cache records whose layer blob is gone from the
//! store (`berth gc` removed it). `--all` also removes every snapshot,
//! cache record, file-cache entry, stat cache and cache mount: the next
//! build starts cold (blobs stay in the store until `berth gc`).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_oci::Digest;

use crate::cache::CacheRecord;
use crate::Result;

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Snapshot directories (unpacked layers and step results).
    pub snapshots: u64,
    /// Cache records (`buildcache/<key>`).
    pub records: u64,
    /// File-cache entries.
    pub files: u64,
    /// Cache mount directories.
    pub cache_mounts: u64,
    /// Bytes of file data freed (file sizes of removed entries whose last
    /// link went; shared inodes count once, when their last link goes).
    pub bytes: u64,
}

/// The root's build lock: shared by builds, exclusive for prune.
pub struct BuildLock {
    _file: fs::File,
}

impl BuildLock {
    fn path(root: &Path) -> PathBuf {
        root.join("buildcache").join(".lock")
    }

    fn take(root: &Path, how: libc::c_int) -> io::Result<BuildLock> {
        fs::create_dir_all(root.join("buildcache"))?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Self::path(root))?;
        // SAFETY: valid descriptor; flock has no memory effects.
        if unsafe { libc::flock(file.as_raw_fd(), how) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(BuildLock { _file: file })
    }

    /// Held by a build for its whole run (many builds share it).
    pub fn shared(root: &Path) -> io::Result<BuildLock> {
        Self::take(root, libc::LOCK_SH)
    }

    /// Held by prune; `Ok(None)` when a build is running.
    pub fn exclusive(root: &Path) -> io::Result<Option<BuildLock>> {
        match Self::take(root, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Removes dangling build cache (everything with `all`). `blob_exists`
/// tells whether the store still has a blob. `None`: a build is running,
/// nothing was removed.
pub fn prune(
    root: &Path,
    all: bool,
    blob_exists: impl Fn(&Digest) -> bool,
) -> Result<Option<PruneReport>> {
    let Some(_lock) = BuildLock::exclusive(root)? else {
        return Ok(None);
    };
    let mut report = PruneReport::default();
    let snapshots = root.join("snapshots");
    let cache = root.join("buildcache");

    // Snapshots: links by diff_id name the k- snapshots that are in use,
    // and so do the records of snapshot-only layers.
    let mut linked = std::collections::HashSet::new();
    if !all {
        for (_, path) in entries(&cache)? {
            let Ok(bytes) = fs::read(&path) else { continue };
            if let Ok(r) = serde_json::from_slice::<CacheRecord>(&bytes) {
                if let Some(name) = r.layer.as_ref().and_then(|l| l.snapshot_name()) {
                    linked.insert(std::ffi::OsString::from(name));
                }
            }
        }
    }
    for (name, path) in entries(&snapshots)? {
        if let Ok(target) = fs::read_link(&path) {
            if !all && snapshots.join(&target).is_dir() {
                linked.insert(target.into_os_string());
            } else {
                fs::remove_file(&path)?;
            }
        } else if name == "tmp" {
            for (_, p) in entries(&path)? {
                remove_tree(&p, &mut report.bytes)?;
            }
        } else if name == "empty" {
            // The stand-in lower of layerless images; made by every build.
        } else if all {
            remove_tree(&path, &mut report.bytes)?;
            report.snapshots += 1;
        }
    }
    if !all {
        for (name, path) in entries(&snapshots)? {
            if name.to_string_lossy().starts_with("k-") && !linked.contains(&name) {
                remove_tree(&path, &mut report.bytes)?;
                report.snapshots += 1;
            }
        }
    }

    // The file cache: after the snapshots, so entries they linked count 1.
    for (_, path) in entries(&cache.join("files"))? {
        let meta = fs::symlink_metadata(&path)?;
        if all || meta.nlink() == 1 {
            fs::remove_file(&path)?;
            report.bytes += meta.len();
            report.files += 1;
        }
    }

    // Records and other build-cache files.
    for (name, path) in entries(&cache)? {
        let name = name.to_string_lossy();
        if name == "files" || name == ".lock" {
            continue;
        }
        if name.starts_with(".tmp-") {
            fs::remove_file(&path)?;
            continue;
        }
        let is_record = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_record {
            // Stat caches: only with --all (they are what makes no-op
            // rebuilds of large contexts fast).
            if all && name.starts_with("statcache-") {
                fs::remove_file(&path)?;
            }
            continue;
        }
        let dangling = || -> bool {
            let Ok(bytes) = fs::read(&path) else {
                return true;
            };
            match serde_json::from_slice::<CacheRecord>(&bytes) {
                Ok(r) => r.layer.is_some_and(|l| match l.snapshot_name() {
                    Some(name) => !snapshots.join(name).is_dir(),
                    None => !blob_exists(&l.digest),
                }),
                Err(_) => true,
            }
        };
        if all || dangling() {
            fs::remove_file(&path)?;
            report.records += 1;
        }
    }

    if all {
        for (_, path) in entries(&root.join("cachemounts"))? {
            remove_tree(&path, &mut report.bytes)?;
            report.cache_mounts += 1;
        }
    }
    Ok(Some(report))
}

/// The entries of `dir` (none when it does not exist).
fn entries(dir: &Path) -> io::Result<Vec<(std::ffi::OsString, PathBuf)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        out.push((e.file_name(), e.path()));
    }
    Ok(out)
}

/// Removes a file or directory tree (never following symlinks), counting
/// the bytes of files whose last link it removes. Directories a step made
/// unwritable (mode 000) are opened up first.
fn remove_tree(path: &Path, bytes: &mut u64) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        if meta.is_file() && meta.nlink() == 1 {
            *bytes += meta.len();
        }
        return fs::remove_file(path);
    }
    use std::os::unix::fs::PermissionsExt;
    if meta.mode() & 0o700 != 0o700 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    }
    for e in fs::read_dir(path)? {
        remove_tree(&e?.path(), bytes)?;
    }
    fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn record(layer: Option<Digest>) -> String {
        let layer = layer.map(|d| {
            serde_json::json!({
                "diff_id": format!("sha256:{}", "d".repeat(64)),
                "digest": d.to_string(), "size": 1,
                "mediaType": "application/vnd.oci.image.layer.v1.tar"
            })
        });
        serde_json::json!({"layer": layer, "created": "2026-01-01T00:00:00Z"}).to_string()
    }

    /// A root with one used and one orphaned step snapshot, a used and an
    /// unused file-cache entry, a live and a dangling record, leftovers.
    fn root() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let snaps = r.join("snapshots");
        for d in [
            "k-used-1/fs",
            "k-orphan-2/sub",
            "tmp/step-x/fs",
            "empty",
            "unpacked",
        ] {
            fs::create_dir_all(snaps.join(d)).unwrap();
        }
        fs::write(snaps.join("k-orphan-2/sub/big"), vec![0u8; 1000]).unwrap();
        std::os::unix::fs::symlink("k-used-1", snaps.join("a".repeat(64))).unwrap();
        std::os::unix::fs::symlink("k-gone-3", snaps.join("b".repeat(64))).unwrap();
        let files = r.join("buildcache/files");
        fs::create_dir_all(&files).unwrap();
        fs::write(files.join("used"), "u").unwrap();
        fs::hard_link(files.join("used"), snaps.join("k-used-1/fs/u")).unwrap();
        fs::write(files.join("unused"), "xx").unwrap();
        let bc = r.join("buildcache");
        fs::write(bc.join("1".repeat(64)), record(Some(digest('a')))).unwrap();
        fs::write(bc.join("2".repeat(64)), record(Some(digest('b')))).unwrap();
        fs::write(bc.join("3".repeat(64)), record(None)).unwrap();
        // A snapshot-only layer keeps its k- snapshot; one whose snapshot
        // is gone is dangling.
        fs::create_dir_all(snaps.join("k-side-4/fs")).unwrap();
        let side = |name: &str| {
            serde_json::json!({"layer": {
                "diff_id": format!("snapshot:{name}"), "digest": digest('4').to_string(),
                "size": 0, "mediaType": "application/vnd.oci.image.layer.v1.tar"
            }, "created": "2026-01-01T00:00:00Z"})
            .to_string()
        };
        fs::write(bc.join("4".repeat(64)), side("k-side-4")).unwrap();
        fs::write(bc.join("5".repeat(64)), side("k-gone-5")).unwrap();
        fs::write(bc.join(".tmp-x-1"), "").unwrap();
        fs::write(bc.join("statcache-0123"), "s").unwrap();
        fs::create_dir_all(r.join("cachemounts/abc/data-0")).unwrap();
        tmp
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = entries(dir)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn dangling_cache_goes_the_rest_stays() {
        let tmp = root();
        let r = tmp.path();
        let report = prune(r, false, |d| *d == digest('a')).unwrap().unwrap();
        assert_eq!(
            names(&r.join("snapshots")),
            vec![
                "a".repeat(64),
                "empty".into(),
                "k-side-4".into(),
                "k-used-1".into(),
                "tmp".into(),
                "unpacked".into()
            ]
        );
        assert!(names(&r.join("snapshots/tmp")).is_empty());
        assert_eq!(names(&r.join("buildcache/files")), vec!["used"]);
        assert_eq!(
            names(&r.join("buildcache")),
            vec![
                ".lock".to_string(),
                "1".repeat(64),
                "3".repeat(64),
                "4".repeat(64),
                "files".into(),
                "statcache-0123".into()
            ]
        );
        assert_eq!(names(&r.join("cachemounts")), vec!["abc"]);
        assert_eq!(
            report,
            PruneReport {
                snapshots: 1,
                records: 2,
                files: 1,
                cache_mounts: 0,
                bytes: 1002
            }
        );
        // Nothing left to prune.
        let again = prune(r, false, |d| *d == digest('a')).unwrap().unwrap();
        assert_eq!(again, PruneReport::default());
    }

    #[test]
    fn all_leaves_an_empty_cache() {
        let tmp = root();
        let r = tmp.path();
        let report = prune(r, true, |_| true).unwrap().unwrap();
        assert_eq!(names(&r.join("snapshots")), vec!["empty", "tmp"]);
        assert_eq!(names(&r.join("buildcache")), vec![".lock", "files"]);
        assert!(names(&r.join("buildcache/files")).is_empty());
        assert!(names(&r.join("cachemounts")).is_empty());
        assert_eq!(
            (
                report.snapshots,
                report.records,
                report.files,
                report.cache_mounts
            ),
            (4, 5, 2, 1)
        );
    }

    #[test]
    fn a_running_build_blocks_prune() {
        let tmp = root();
        let lock = BuildLock::shared(tmp.path()).unwrap();
        assert_eq!(prune(tmp.path(), true, |_| true).unwrap(), None);
        assert!(tmp.path().join("snapshots/k-used-1").exists());
        drop(lock);
        assert!(prune(tmp.path(), true, |_| true).unwrap().is_some());
    }
}
