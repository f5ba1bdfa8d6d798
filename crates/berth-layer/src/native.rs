//! The copy-based fallback for where overlayfs cannot be mounted (old
//! kernels, filesystems without user xattrs, nested sandboxes): BuildKit's
//! "native" snapshotter.
//!
//! Snapshots keep one format either way: an overlay-style upper directory
//! per layer (whiteouts are char 0/0 devices, opaque directories carry
//! `user.overlay.opaque=y`). Without overlayfs a step runs in a plain
//! directory instead:
//!
//! * [`materialize`] merges the lower snapshots into a fresh tree by copying,
//!   exactly as an overlay mount of them would show it;
//! * after the step, [`upper_from_tree`] moves what changed into an
//!   overlay-style upper directory (and writes whiteouts for what was
//!   deleted), so the rest of the builder (layers, cache, later steps) cannot
//!   tell the difference.
//!
//! Change detection uses ctime: the kernel sets it on every content or
//! metadata change and no one can set it back, so a step that restores an
//! mtime is still seen. [`ChangeClock`] marks the moment after which a ctime
//! means "changed by the step".

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::LayerError;
use crate::sys;
use crate::unpack::xattr_allowed;

const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// The instant (in the filesystem's own ctime clock) after which a ctime
/// means the entry was changed after [`materialize`] finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ChangeClock {
    sec: i64,
    nsec: i64,
}

impl ChangeClock {
    fn of(m: &Metadata) -> ChangeClock {
        ChangeClock {
            sec: m.ctime(),
            nsec: m.ctime_nsec(),
        }
    }

    /// Reads the ctime clock of the filesystem holding `dir`, waiting until
    /// it has ticked past everything written so far: ctimes come from the
    /// kernel's coarse clock, so a change made right after a copy could
    /// otherwise share the copy's timestamp.
    pub fn tick(dir: &Path) -> Result<ChangeClock, LayerError> {
        let marker = dir.join(".berth-clock");
        let stamp = |p: &Path| -> Result<ChangeClock, LayerError> {
            File::create(p).map_err(|e| LayerError::io("creating", p, e))?;
            let m = fs::symlink_metadata(p).map_err(|e| LayerError::io("inspecting", p, e))?;
            Ok(ChangeClock::of(&m))
        };
        let first = stamp(&marker)?;
        let deadline = Instant::now() + Duration::from_secs(1);
        let next = loop {
            std::thread::sleep(Duration::from_millis(1));
            fs::remove_file(&marker).map_err(|e| LayerError::io("removing", &marker, e))?;
            let now = stamp(&marker)?;
            if now > first || Instant::now() > deadline {
                break now;
            }
        };
        fs::remove_file(&marker).map_err(|e| LayerError::io("removing", &marker, e))?;
        Ok(next)
    }

    fn changed(self, m: &Metadata) -> bool {
        ChangeClock::of(m) >= self
    }
}

/// One name as the merged lower view shows it.
struct LowerEntry {
    /// The topmost lower's entry for the name.
    path: PathBuf,
    meta: Metadata,
    /// For a directory: the lower directories merged into it, topmost first.
    dirs: Vec<PathBuf>,
}

fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(dir: &Path) -> Result<bool, LayerError> {
    sys::lgetxattr_path(dir, OPAQUE_XATTR)
        .map(|v| v.as_deref() == Some(b"y"))
        .map_err(|e| LayerError::io("reading xattrs of", dir, e))
}

fn read_names(dir: &Path) -> Result<Vec<OsString>, LayerError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| LayerError::io("listing", dir, e))? {
        names.push(
            e.map_err(|e| LayerError::io("listing", dir, e))?
                .file_name(),
        );
    }
    Ok(names)
}

fn lstat_opt(p: &Path) -> Result<Option<Metadata>, LayerError> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LayerError::io("inspecting", p, e)),
    }
}

/// The children of a directory merged from `dirs` (topmost first), as
/// overlayfs shows them: the topmost entry of a name wins, a whiteout hides
/// the name below it, an opaque directory hides everything below it, and a
/// directory merges only with directories below it.
fn merged_children(dirs: &[PathBuf]) -> Result<BTreeMap<OsString, LowerEntry>, LayerError> {
    let mut out: BTreeMap<OsString, LowerEntry> = BTreeMap::new();
    // Names decided by an upper lower (present or whited out).
    let mut decided: HashMap<OsString, bool> = HashMap::new();
    for dir in dirs {
        for name in read_names(dir)? {
            let path = dir.join(&name);
            let meta =
                fs::symlink_metadata(&path).map_err(|e| LayerError::io("inspecting", &path, e))?;
            match decided.get(&name) {
                None => {
                    if is_whiteout(&meta) {
                        decided.insert(name, false);
                        continue;
                    }
                    let open_below = meta.is_dir() && !is_opaque(&path)?;
                    decided.insert(name.clone(), open_below);
                    let dirs = if meta.is_dir() {
                        vec![path.clone()]
                    } else {
                        Vec::new()
                    };
                    out.insert(name, LowerEntry { path, meta, dirs });
                }
                // A directory above still merges with a directory here.
                Some(true) => {
                    let entry = out
                        .get_mut(&name)
                        .expect("decided open dirs are in the map");
                    if meta.is_dir() {
                        entry.dirs.push(path.clone());
                        if is_opaque(&path)? {
                            decided.insert(name, false);
                        }
                    } else {
                        decided.insert(name, false);
                    }
                }
                Some(false) => {}
            }
        }
        if is_opaque(dir)? {
            break;
        }
    }
    Ok(out)
}

/// Copies the merged view of `lowers` (overlay-style snapshots, topmost
/// first) into the empty directory `dest`: contents, owners, modes, times,
/// xattrs, hard links within the view.
pub fn materialize(lowers: &[PathBuf], dest: &Path) -> Result<(), LayerError> {
    let mut links = HashMap::new();
    let mut dirs_done = Vec::new();
    copy_dir(lowers, dest, &mut links, &mut dirs_done)?;
    // The root shows the topmost lower's metadata, as overlayfs does.
    if let Some(top) = lowers.first() {
        let meta = fs::symlink_metadata(top).map_err(|e| LayerError::io("inspecting", top, e))?;
        set_meta(top, dest, &meta)?;
        dirs_done.insert(0, (dest.to_path_buf(), meta));
    }
    // Directory times last: creating children changed them.
    for (path, meta) in dirs_done.iter().rev() {
        set_times(path, meta)?;
    }
    Ok(())
}

fn copy_dir(
    dirs: &[PathBuf],
    dest: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs_done: &mut Vec<(PathBuf, Metadata)>,
) -> Result<(), LayerError> {
    for (name, entry) in merged_children(dirs)? {
        let to = dest.join(&name);
        if entry.meta.is_dir() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&to)
                .map_err(|e| LayerError::io("creating directory", &to, e))?;
            copy_dir(&entry.dirs, &to, links, dirs_done)?;
            set_meta(&entry.path, &to, &entry.meta)?;
            dirs_done.push((to, entry.meta));
        } else {
            copy_entry(&entry.path, &entry.meta, &to, links)?;
        }
    }
    Ok(())
}

/// Copies one non-directory entry (a hard link to an earlier copy when the
/// source inode was copied already).
fn copy_entry(
    from: &Path,
    meta: &Metadata,
    to: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), LayerError> {
    let ft = meta.file_type();
    if meta.nlink() > 1 && !ft.is_symlink() {
        let id = (meta.dev(), meta.ino());
        if let Some(first) = links.get(&id) {
            return fs::hard_link(first, to).map_err(|e| LayerError::io("linking", to, e));
        }
        links.insert(id, to.to_path_buf());
    }
    if ft.is_file() {
        let mut src = File::open(from).map_err(|e| LayerError::io("opening", from, e))?;
        let mut dst = File::create_new(to).map_err(|e| LayerError::io("creating", to, e))?;
        // std's copy uses copy_file_range, which reflinks where it can.
        io::copy(&mut src, &mut dst).map_err(|e| LayerError::io("copying to", to, e))?;
    } else if ft.is_symlink() {
        let target = fs::read_link(from).map_err(|e| LayerError::io("reading link", from, e))?;
        std::os::unix::fs::symlink(&target, to).map_err(|e| LayerError::io("creating", to, e))?;
    } else {
        mknod_like(to, meta)?;
    }
    set_meta(from, to, meta)?;
    set_times(to, meta)
}

fn mknod_like(to: &Path, meta: &Metadata) -> Result<(), LayerError> {
    let c = sys::cstr(to.as_os_str().as_bytes()).map_err(|e| LayerError::io("creating", to, e))?;
    // SAFETY: valid C string; mode and device come from an existing inode.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            meta.mode() as libc::mode_t,
            meta.rdev() as libc::dev_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(LayerError::io("creating device or fifo", to, e));
    }
    Ok(())
}

/// Owner, mode and xattrs of `meta` (read from `from`) onto `to`.
fn set_meta(from: &Path, to: &Path, meta: &Metadata) -> Result<(), LayerError> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| LayerError::io("changing the owner of", to, e))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(
            to,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
        )
        .map_err(|e| LayerError::io("changing the mode of", to, e))?;
        for (name, value) in
            sys::lxattrs(from).map_err(|e| LayerError::io("reading xattrs of", from, e))?
        {
            if !xattr_allowed(&name) {
                continue;
            }
            let c = sys::cstr(&name).map_err(|e| LayerError::io("setting xattrs of", to, e))?;
            let f = File::open(to).map_err(|e| LayerError::io("opening", to, e))?;
            use std::os::fd::AsRawFd;
            sys::fsetxattr(f.as_raw_fd(), &c, &value)
                .map_err(|e| LayerError::io("setting xattrs of", to, e))?;
        }
    }
    Ok(())
}

fn set_times(to: &Path, meta: &Metadata) -> Result<(), LayerError> {
    let (dir, name) = split(to);
    let dfd = sys::open_dir_path(dir).map_err(|e| LayerError::io("opening", dir, e))?;
    let c = sys::cstr(name.as_bytes()).map_err(|e| LayerError::io("setting times of", to, e))?;
    use std::os::fd::AsRawFd;
    sys::utimensat_nofollow(dfd.as_raw_fd(), &c, meta.mtime(), meta.mtime_nsec() as u32)
        .map_err(|e| LayerError::io("setting times of", to, e))
}

fn split(p: &Path) -> (&Path, &OsStr) {
    (
        p.parent().unwrap_or(Path::new("/")),
        p.file_name().unwrap_or(OsStr::new(".")),
    )
}

/// What [`upper_from_tree`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeDiff {
    /// Entries moved into the upper directory (a new directory counts once).
    pub moved: u64,
    /// Whiteouts written for deleted names.
    pub whiteouts: u64,
}

/// Moves what a step changed in `tree` (made by [`materialize`] from
/// `lowers`, then changed by the step after `since`) into the empty
/// overlay-style upper directory `upper`: new and changed entries (a new
/// directory whole), whiteouts for deleted names, and the directories
/// leading to them with the tree's metadata. `tree` is consumed: what is
/// left of it is garbage. Entries are examined with lstat and moved with
/// rename, so links the step planted are never followed.
pub fn upper_from_tree(
    lowers: &[PathBuf],
    tree: &Path,
    upper: &Path,
    since: ChangeClock,
) -> Result<TreeDiff, LayerError> {
    let mut diff = TreeDiff::default();
    let mut created = Vec::new();
    diff_dir(
        lowers,
        tree,
        upper,
        Path::new(""),
        since,
        &mut diff,
        &mut created,
    )?;
    for (dir, meta) in created.iter().rev() {
        set_times(dir, meta)?;
    }
    Ok(diff)
}

#[allow(clippy::too_many_arguments)]
fn diff_dir(
    lower_dirs: &[PathBuf],
    tree: &Path,
    upper: &Path,
    rel: &Path,
    since: ChangeClock,
    diff: &mut TreeDiff,
    created: &mut Vec<(PathBuf, Metadata)>,
) -> Result<(), LayerError> {
    let here = tree.join(rel);
    let mut lower = merged_children(lower_dirs)?;
    let mut ensured = false;
    let mut ensure = |created: &mut Vec<(PathBuf, Metadata)>| -> Result<(), LayerError> {
        if !ensured {
            ensure_upper_dir(tree, upper, rel, created)?;
            ensured = true;
        }
        Ok(())
    };
    for name in read_names(&here)? {
        let path = here.join(&name);
        let meta =
            fs::symlink_metadata(&path).map_err(|e| LayerError::io("inspecting", &path, e))?;
        let below = lower.remove(&name);
        match below {
            Some(b) if b.meta.is_dir() && meta.is_dir() => {
                diff_dir(&b.dirs, tree, upper, &rel.join(&name), since, diff, created)?;
            }
            Some(b) if !since.changed(&meta) && same_kind(&b.meta, &meta) => {}
            _ => {
                ensure(created)?;
                let to = upper.join(rel).join(&name);
                fs::rename(&path, &to).map_err(|e| LayerError::io("moving", &path, e))?;
                diff.moved += 1;
            }
        }
    }
    // Whatever the lowers still show here was deleted by the step.
    for name in lower.into_keys() {
        ensure(created)?;
        let to = upper.join(rel).join(&name);
        mknod_whiteout(&to)?;
        diff.whiteouts += 1;
    }
    // The directory's own metadata changed (or entries came and went).
    if !rel.as_os_str().is_empty() {
        let meta =
            fs::symlink_metadata(&here).map_err(|e| LayerError::io("inspecting", &here, e))?;
        if since.changed(&meta) {
            ensure(created)?;
        }
    }
    Ok(())
}

fn same_kind(a: &Metadata, b: &Metadata) -> bool {
    a.file_type() == b.file_type()
}

fn mknod_whiteout(to: &Path) -> Result<(), LayerError> {
    let c = sys::cstr(to.as_os_str().as_bytes()).map_err(|e| LayerError::io("creating", to, e))?;
    // SAFETY: valid C string. A 0/0 character device is overlayfs' whiteout,
    // which Linux lets unprivileged user namespaces create.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) } < 0 {
        return Err(LayerError::io(
            "creating whiteout",
            to,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Creates `upper/rel` and its missing parents, each with the metadata of
/// its counterpart in `tree` (times are set at the end, children first).
fn ensure_upper_dir(
    tree: &Path,
    upper: &Path,
    rel: &Path,
    created: &mut Vec<(PathBuf, Metadata)>,
) -> Result<(), LayerError> {
    let target = upper.join(rel);
    if lstat_opt(&target)?.is_some() {
        return Ok(());
    }
    if let Some(parent) = rel.parent() {
        ensure_upper_dir(tree, upper, parent, created)?;
    }
    let src = tree.join(rel);
    let meta = fs::symlink_metadata(&src).map_err(|e| LayerError::io("inspecting", &src, e))?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&target)
        .map_err(|e| LayerError::io("creating directory", &target, e))?;
    set_meta(&src, &target, &meta)?;
    created.push((target, meta));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    fn whiteout(p: &Path) {
        mknod_whiteout(p).unwrap();
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
            let mut names: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for p in names {
                let m = fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if m.is_dir() {
                    out.push(format!("{rel}/ {:o}", m.mode() & 0o7777));
                    walk(base, &p, out);
                } else if m.file_type().is_symlink() {
                    out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
                } else if is_whiteout(&m) {
                    out.push(format!("{rel} (whiteout)"));
                } else {
                    out.push(format!("{rel} = {}", fs::read_to_string(&p).unwrap()));
                }
            }
        }
        walk(dir, dir, &mut out);
        out
    }

    /// Two lowers: the upper one deletes, replaces and makes opaque.
    fn lowers(tmp: &Path) -> Vec<PathBuf> {
        let bottom = tmp.join("l0");
        let top = tmp.join("l1");
        write(&bottom.join("etc/passwd"), "root");
        write(&bottom.join("etc/gone"), "old");
        write(&bottom.join("opq/hidden"), "old");
        write(&bottom.join("dir/a"), "a");
        fs::hard_link(bottom.join("dir/a"), bottom.join("dir/a-link")).unwrap();
        std::os::unix::fs::symlink("../etc/passwd", bottom.join("dir/link")).unwrap();
        fs::create_dir_all(top.join("etc")).unwrap();
        whiteout(&top.join("etc/gone"));
        write(&top.join("opq/new"), "new");
        let opq = File::open(top.join("opq")).unwrap();
        use std::os::fd::AsRawFd;
        sys::fsetxattr(opq.as_raw_fd(), c"user.overlay.opaque", b"y").unwrap();
        write(&top.join("dir/b"), "b");
        vec![top, bottom]
    }

    /// A temp dir whose filesystem takes user xattrs (opaque markers);
    /// `None` (and a note) where it does not.
    fn xattr_tempdir() -> Option<tempfile::TempDir> {
        let tmp = tempfile::tempdir().unwrap();
        if xattrs_work(tmp.path()) {
            Some(tmp)
        } else {
            eprintln!("skipped: no user xattrs on the temp filesystem");
            None
        }
    }

    fn xattrs_work(tmp: &Path) -> bool {
        let p = tmp.join("probe");
        fs::write(&p, "").unwrap();
        let f = File::open(&p).unwrap();
        use std::os::fd::AsRawFd;
        let ok = sys::fsetxattr(f.as_raw_fd(), c"user.probe", b"1").is_ok();
        fs::remove_file(&p).unwrap();
        ok
    }

    #[test]
    fn materialize_merges_like_overlayfs() {
        let Some(tmp) = xattr_tempdir() else { return };
        let lowers = lowers(tmp.path());
        let dest = tmp.path().join("merged");
        fs::create_dir(&dest).unwrap();
        materialize(&lowers, &dest).unwrap();
        let l = listing(&dest);
        assert_eq!(
            l,
            vec![
                "dir/ 755",
                "dir/a = a",
                "dir/a-link = a",
                "dir/b = b",
                "dir/link -> ../etc/passwd",
                "etc/ 755",
                "etc/passwd = root",
                "opq/ 755",
                "opq/new = new",
            ],
            "{l:#?}"
        );
        let a = fs::metadata(dest.join("dir/a")).unwrap();
        let b = fs::metadata(dest.join("dir/a-link")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard links stay links");
        let src = fs::metadata(tmp.path().join("l0/dir/a")).unwrap();
        assert_ne!(a.ino(), src.ino(), "copies, never links into a snapshot");
        assert_eq!(a.mtime(), src.mtime());
    }

    #[test]
    fn upper_holds_exactly_the_changes() {
        let Some(tmp) = xattr_tempdir() else { return };
        let lowers = lowers(tmp.path());
        let tree = tmp.path().join("merged");
        fs::create_dir(&tree).unwrap();
        materialize(&lowers, &tree).unwrap();
        let since = ChangeClock::tick(tmp.path()).unwrap();

        // The step: a new file, a new directory, a deletion, an in-place
        // change with the mtime put back, a chmod, a replaced symlink.
        write(&tree.join("etc/new"), "n");
        write(&tree.join("newdir/sub/x"), "x");
        fs::remove_file(tree.join("dir/b")).unwrap();
        let before = fs::metadata(tree.join("etc/passwd")).unwrap();
        fs::write(tree.join("etc/passwd"), "toor").unwrap();
        let passwd = tree.join("etc/passwd");
        let (dir, name) = split(&passwd);
        let dfd = sys::open_dir_path(dir).unwrap();
        use std::os::fd::AsRawFd;
        sys::utimensat_nofollow(
            dfd.as_raw_fd(),
            &sys::cstr(name.as_bytes()).unwrap(),
            before.mtime(),
            before.mtime_nsec() as u32,
        )
        .unwrap();
        fs::set_permissions(tree.join("opq"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::remove_file(tree.join("dir/link")).unwrap();
        write(&tree.join("dir/link"), "now a file");

        let upper = tmp.path().join("upper");
        fs::create_dir(&upper).unwrap();
        let d = upper_from_tree(&lowers, &tree, &upper, since).unwrap();
        let l = listing(&upper);
        assert_eq!(
            l,
            vec![
                "dir/ 755",
                "dir/b (whiteout)",
                "dir/link = now a file",
                "etc/ 755",
                "etc/new = n",
                "etc/passwd = toor",
                "newdir/ 755",
                "newdir/sub/ 755",
                "newdir/sub/x = x",
                "opq/ 700",
            ],
            "{l:#?}"
        );
        assert_eq!(
            d,
            TreeDiff {
                moved: 4,
                whiteouts: 1
            }
        );
    }

    #[test]
    fn nothing_changed_means_an_empty_upper() {
        let Some(tmp) = xattr_tempdir() else { return };
        let lowers = lowers(tmp.path());
        let tree = tmp.path().join("merged");
        fs::create_dir(&tree).unwrap();
        materialize(&lowers, &tree).unwrap();
        let since = ChangeClock::tick(tmp.path()).unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir(&upper).unwrap();
        assert_eq!(
            upper_from_tree(&lowers, &tree, &upper, since).unwrap(),
            TreeDiff::default()
        );
        assert!(listing(&upper).is_empty());
    }

    #[test]
    fn planted_symlinks_are_moved_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let l0 = tmp.path().join("l0");
        write(&l0.join("etc/x"), "x");
        let tree = tmp.path().join("merged");
        fs::create_dir(&tree).unwrap();
        materialize(std::slice::from_ref(&l0), &tree).unwrap();
        let since = ChangeClock::tick(tmp.path()).unwrap();
        fs::remove_dir_all(tree.join("etc")).unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("etc")).unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir(&upper).unwrap();
        upper_from_tree(&[l0], &tree, &upper, since).unwrap();
        assert_eq!(
            listing(&upper),
            vec![format!("etc -> {}", outside.display())]
        );
        assert!(listing(&outside).is_empty());
    }
}
