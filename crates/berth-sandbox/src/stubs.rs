//! Mount targets inside the image's root: resolving them without escaping
//! the root through symlinks, creating missing ones as stubs, and removing
//! those stubs after the step so they never show up in the layer diff
//! (BuildKit does the same). Removal runs in the helper's parent, directly on
//! the upper (or plain) directory, after the step's mounts are gone.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SandboxError};

const MAX_SYMLINKS: usize = 40;

/// Lexically clean an absolute path inside the root into a relative one
/// (`..` stops at the root, as it does inside a chroot).
pub(crate) fn clean_rel(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Resolve `target` (absolute inside the image) against `root` following
/// symlinks as if `root` were `/`. Returns the resolved relative path of the
/// longest existing prefix and the missing components after it.
pub fn resolve_in_root(root: &Path, target: &Path) -> Result<(PathBuf, Vec<OsString>)> {
    let mut queue: VecDeque<OsString> = clean_rel(target)
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut cur = PathBuf::new();
    let mut links = 0;
    while let Some(comp) = queue.pop_front() {
        if comp == ".." {
            cur.pop();
            continue;
        }
        if comp == "." || comp.is_empty() {
            continue;
        }
        let cand = cur.join(&comp);
        match fs::symlink_metadata(root.join(&cand)) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(SandboxError::Setup(format!(
                        "too many levels of symbolic links resolving mount target {} in the image",
                        target.display()
                    )));
                }
                let link = fs::read_link(root.join(&cand)).map_err(|e| {
                    SandboxError::sys(format!("reading symlink /{}", cand.display()), e)
                })?;
                if link.is_absolute() {
                    cur = PathBuf::new();
                }
                for c in link.components().rev() {
                    match c {
                        Component::Normal(n) => queue.push_front(n.to_owned()),
                        Component::ParentDir => queue.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            Ok(_) => cur = cand,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut missing = vec![comp];
                // Lexically: what is missing cannot contain symlinks.
                for c in queue {
                    if c == ".." {
                        missing.pop();
                    } else if c != "." {
                        missing.push(c);
                    }
                }
                return Ok((cur, missing));
            }
            Err(e) => {
                return Err(SandboxError::sys(
                    format!("looking up mount target /{} in the image", cand.display()),
                    e,
                ))
            }
        }
    }
    Ok((cur, Vec::new()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StubKind {
    Dir,
    File,
}

/// What the helper's parent must undo after the step. Paths are relative to
/// the root of the image (and so to the upper directory).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Cleanup {
    /// Entries created as stubs, in creation order.
    pub created: Vec<PathBuf>,
    /// Directories that existed only in a lower layer and were copied up into
    /// the upper directory by the stub creation: `(path, mode, uid, gid)`.
    pub copied_up: Vec<(PathBuf, u32, u32, u32)>,
    /// Directories of the upper whose times change: `(path, atime, atime_ns, mtime, mtime_ns)`.
    pub times: Vec<(PathBuf, i64, i64, i64, i64)>,
}

/// Creates stubs through the merged root while recording how to undo them.
pub(crate) struct StubMaker<'a> {
    /// The mounted root as the helper sees it.
    pub root: &'a Path,
    /// Where writes land (upper dir or the plain root dir), as the helper sees it.
    pub base: &'a Path,
    /// Resolved targets mounted so far: stubs below them live in those mounts
    /// and are not recorded.
    pub mounted: Vec<PathBuf>,
    pub cleanup: Cleanup,
    timed: HashSet<PathBuf>,
}

impl<'a> StubMaker<'a> {
    pub fn new(root: &'a Path, base: &'a Path) -> Self {
        StubMaker {
            root,
            base,
            mounted: Vec::new(),
            cleanup: Cleanup::default(),
            timed: HashSet::new(),
        }
    }

    /// Resolve `target`, create it as `kind` if missing, and return the path
    /// to mount on (as the helper sees it).
    pub fn ensure(&mut self, target: &Path, kind: StubKind) -> Result<PathBuf> {
        let (existing, missing) = resolve_in_root(self.root, target)?;
        let in_mount = self.mounted.iter().any(|m| existing.starts_with(m));
        let full = self.root.join(&existing);
        if missing.is_empty() {
            let meta = fs::metadata(&full)
                .map_err(|e| SandboxError::sys(format!("mount target {}", target.display()), e))?;
            match kind {
                StubKind::Dir if !meta.is_dir() => {
                    return Err(SandboxError::Setup(format!(
                        "mount target {} exists in the image and is not a directory",
                        target.display()
                    )))
                }
                StubKind::File if meta.is_dir() => {
                    return Err(SandboxError::Setup(format!(
                        "mount target {} is a directory in the image, but a file is mounted there",
                        target.display()
                    )))
                }
                _ => {}
            }
            self.mounted.push(existing.clone());
            return Ok(full);
        }
        if !fs::metadata(&full).map(|m| m.is_dir()).unwrap_or(false) {
            return Err(SandboxError::Setup(format!(
                "cannot create mount target {}: /{} is not a directory in the image",
                target.display(),
                existing.display()
            )));
        }
        if !in_mount {
            self.record_before_change(&existing)?;
        }
        let mut rel = existing;
        let n = missing.len();
        for (i, comp) in missing.into_iter().enumerate() {
            rel.push(comp);
            let path = self.root.join(&rel);
            let res = if i + 1 == n && kind == StubKind::File {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|f| f.set_permissions(fs::Permissions::from_mode(0o644)))
            } else {
                fs::create_dir(&path)
                    .and_then(|_| fs::set_permissions(&path, fs::Permissions::from_mode(0o755)))
            };
            res.map_err(|e| {
                SandboxError::sys(
                    format!("creating mount target /{} in the image", rel.display()),
                    e,
                )
            })?;
            if !in_mount {
                self.cleanup.created.push(rel.clone());
            }
        }
        self.mounted.push(rel.clone());
        Ok(self.root.join(rel))
    }

    /// Before creating under `dir`: note the times of every ancestor present
    /// in the upper directory, and which ancestors exist only below it.
    fn record_before_change(&mut self, dir: &Path) -> Result<()> {
        let mut rel = PathBuf::new();
        let mut chain = vec![PathBuf::new()];
        for c in dir.components() {
            rel.push(c);
            chain.push(rel.clone());
        }
        for rel in chain {
            if !self.timed.insert(rel.clone()) {
                continue;
            }
            match fs::symlink_metadata(self.base.join(&rel)) {
                Ok(m) => self.cleanup.times.push((
                    rel,
                    m.atime(),
                    m.atime_nsec(),
                    m.mtime(),
                    m.mtime_nsec(),
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let m = fs::metadata(self.root.join(&rel))
                        .map_err(|e| SandboxError::sys(format!("stat /{}", rel.display()), e))?;
                    self.cleanup
                        .copied_up
                        .push((rel, m.mode() & 0o7777, m.uid(), m.gid()));
                }
                Err(e) => {
                    return Err(SandboxError::sys(
                        format!("stat {}", self.base.join(&rel).display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Undo the stubs in `base` (the upper directory or plain root directory).
/// Best effort: an entry the step filled is left alone.
pub(crate) fn undo(base: &Path, cleanup: &Cleanup) -> Vec<String> {
    let mut problems = Vec::new();
    for rel in cleanup.created.iter().rev() {
        let path = base.join(rel);
        let res = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => {}
            // The step wrote into a stub directory: its content is the step's.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {}
            Err(e) => problems.push(format!("removing mount stub {}: {e}", path.display())),
        }
    }
    // Deepest first: a copied-up directory that is empty again and unchanged
    // carries no change of the step.
    for (rel, mode, uid, gid) in cleanup.copied_up.iter().rev() {
        let path = base.join(rel);
        let Ok(m) = fs::symlink_metadata(&path) else {
            continue;
        };
        let unchanged =
            m.is_dir() && m.mode() & 0o7777 == *mode && m.uid() == *uid && m.gid() == *gid;
        let empty = fs::read_dir(&path)
            .map(|mut d| d.next().is_none())
            .unwrap_or(false);
        let opaque = has_opaque_xattr(&path);
        if unchanged && empty && !opaque {
            if let Err(e) = fs::remove_dir(&path) {
                problems.push(format!(
                    "removing copied-up directory {}: {e}",
                    path.display()
                ));
            }
        }
    }
    for (rel, asec, ansec, msec, mnsec) in &cleanup.times {
        let path = base.join(rel);
        if let Err(e) = set_times(&path, (*asec, *ansec), (*msec, *mnsec)) {
            if e.kind() != io::ErrorKind::NotFound {
                problems.push(format!("restoring the times of {}: {e}", path.display()));
            }
        }
    }
    problems
}

fn has_opaque_xattr(path: &Path) -> bool {
    let Ok(p) = crate::sys::cstr(path) else {
        return false;
    };
    let mut buf = [0u8; 4];
    let name = c"user.overlay.opaque";
    let trusted = c"trusted.overlay.opaque";
    // SAFETY: valid path and name, buffer of the given size.
    unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        ) > 0
            || libc::lgetxattr(
                p.as_ptr(),
                trusted.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            ) > 0
    }
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let p = crate::sys::cstr(path)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn clean_rel_clamps_at_root() {
        assert_eq!(clean_rel(Path::new("/a/./b/../c")), PathBuf::from("a/c"));
        assert_eq!(clean_rel(Path::new("/../../etc")), PathBuf::from("etc"));
        assert_eq!(clean_rel(Path::new("/")), PathBuf::new());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("var/run")).unwrap();
        symlink("/var/run", root.join("run")).unwrap();
        symlink("../../../../etc", root.join("var/escape")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();

        let (p, missing) = resolve_in_root(root, Path::new("/run/secrets/x")).unwrap();
        assert_eq!(p, PathBuf::from("var/run"));
        assert_eq!(
            missing,
            vec![OsString::from("secrets"), OsString::from("x")]
        );

        // `..` beyond the root stays at the root, like in a chroot.
        let (p, missing) = resolve_in_root(root, Path::new("/var/escape/passwd")).unwrap();
        assert_eq!(p, PathBuf::new());
        assert_eq!(
            missing,
            vec![OsString::from("etc"), OsString::from("passwd")]
        );

        let err = resolve_in_root(root, Path::new("/loop1/x")).unwrap_err();
        assert!(err.to_string().contains("too many levels"), "{err}");
    }

    #[test]
    fn stubs_are_created_and_undone_with_times_restored() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::write(root.join("etc/keep"), b"x").unwrap();
        set_times(&root.join("etc"), (1000, 0), (2000, 5)).unwrap();
        set_times(root, (3000, 0), (4000, 0)).unwrap();

        let mut maker = StubMaker::new(root, root);
        let f = maker
            .ensure(Path::new("/etc/hosts"), StubKind::File)
            .unwrap();
        assert!(f.is_file());
        let d = maker
            .ensure(Path::new("/run/secrets/deep"), StubKind::Dir)
            .unwrap();
        assert!(d.is_dir());
        // A target below an earlier mount is created but not recorded.
        maker
            .ensure(Path::new("/run/secrets/deep/inner"), StubKind::File)
            .unwrap();
        assert_eq!(
            maker.cleanup.created,
            vec![
                PathBuf::from("etc/hosts"),
                PathBuf::from("run"),
                PathBuf::from("run/secrets"),
                PathBuf::from("run/secrets/deep")
            ]
        );
        // An existing target is used as is.
        assert_eq!(
            maker
                .ensure(Path::new("/etc/keep"), StubKind::File)
                .unwrap(),
            root.join("etc/keep")
        );
        assert!(maker.ensure(Path::new("/etc"), StubKind::File).is_err());
        assert!(maker
            .ensure(Path::new("/etc/keep/x"), StubKind::Dir)
            .is_err());

        fs::remove_file(root.join("run/secrets/deep/inner")).unwrap();
        let problems = undo(root, &maker.cleanup);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!root.join("etc/hosts").exists());
        assert!(!root.join("run").exists());
        assert!(root.join("etc/keep").exists());
        let m = fs::metadata(root.join("etc")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (2000, 5));
        assert_eq!(fs::metadata(root).unwrap().mtime(), 4000);
    }

    #[test]
    fn copied_up_directories_are_removed_only_when_unchanged_and_empty() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        fs::create_dir_all(lower.path().join("a/b")).unwrap();
        // Simulate the merged view with the lower itself; the "upper" lacks a/.
        let mut maker = StubMaker::new(lower.path(), upper.path());
        maker.ensure(Path::new("/a/b/stub"), StubKind::Dir).unwrap();
        assert_eq!(maker.cleanup.copied_up.len(), 2, "{:?}", maker.cleanup);
        assert_eq!(
            maker.cleanup.times.len(),
            1,
            "only the upper root exists there"
        );
        // What overlay's copy-up would have produced in the upper.
        fs::create_dir_all(upper.path().join("a/b/stub")).unwrap();
        fs::create_dir_all(upper.path().join("a/other")).unwrap();
        let problems = undo(upper.path(), &maker.cleanup);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(
            !upper.path().join("a/b").exists(),
            "empty copied-up dir removed"
        );
        assert!(
            upper.path().join("a/other").exists(),
            "a/ holds the step's change"
        );
    }
}
