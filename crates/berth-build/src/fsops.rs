//! File operations inside an image's root filesystem that never leave it.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT)` against a
//! directory fd of the root, so `..`, absolute paths and symlinks (a base
//! image's `/app -> /etc` included) resolve the way they would inside the
//! container, never onto the host. Creation happens with the `*at` calls on
//! the resolved parent fd.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// How copied entries are owned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Keep the source's uid/gid (COPY --from a stage or image).
    Preserve,
    /// Force these ids (the context's files, `--chown`).
    Fixed(u32, u32),
}

impl Owner {
    pub fn ids(self, uid: u32, gid: u32) -> (u32, u32) {
        match self {
            Owner::Preserve => (uid, gid),
            Owner::Fixed(u, g) => (u, g),
        }
    }
}

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens `path` (relative to, and confined in, the root `root`): berth-layer's
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
pub fn open_in_root(root: RawFd, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    berth_layer::openat2_in_root(root, rel.as_os_str().as_bytes(), flags)
}

/// `path` without its root and with `.` dropped (`..` is kept: the kernel
/// clamps it at the root).
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| {
            !matches!(
                c,
                Component::RootDir | Component::CurDir | Component::Prefix(_)
            )
        })
        .collect()
}

pub fn open_root(dir: &Path) -> io::Result<OwnedFd> {
    let f = File::open(dir)?;
    Ok(OwnedFd::from(f))
}

/// Stat of `path` in the root, not following a final symlink.
pub fn lstat_in_root(root: RawFd, path: &Path) -> io::Result<Option<libc::stat>> {
    let rel = relative(path);
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p.to_path_buf(), n.to_os_string()),
        _ => return fstat(root).map(Some),
    };
    let pfd = match open_in_root(root, &parent, libc::O_PATH | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    fstatat(pfd.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW)
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

fn fstatat(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, flags) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Symlinks [`resolve_in_root`] follows before giving up (continuity's
/// `fs.RootPath` limit).
const MAX_LINKS: usize = 255;

/// The path `path` names inside the root once every symlink on it, the last
/// one included, is followed inside the root: containerd's `fs.RootPath`,
/// which BuildKit resolves COPY destinations and WORKDIR with. What does not
/// exist (a dangling link's target, say) is kept as written, so creating the
/// result creates what the link points at, as BuildKit does. `..` never
/// leaves the root. The result is relative to the root and has no symlink
/// in it (short of a concurrent change).
pub fn resolve_in_root(root: RawFd, path: &Path) -> io::Result<PathBuf> {
    use std::collections::VecDeque;
    let mut pending: VecDeque<std::ffi::OsString> = relative(path)
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        if c == "." || c.is_empty() {
            continue;
        }
        let here = resolved.join(&c);
        match lstat_in_root(root, &here)? {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("/{}: too many levels of symbolic links", here.display()),
                    ));
                }
                let dir = open_in_root(root, &resolved, libc::O_PATH | libc::O_DIRECTORY)?;
                let target = readlinkat(dir.as_raw_fd(), &c)?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => pending.push_front(n.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = here,
        }
    }
    Ok(resolved)
}

fn readlinkat(dir: RawFd, name: &OsStr) -> io::Result<PathBuf> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}

/// Creates `path` and missing parents (mode 0755, owned `uid:gid`) and
/// returns a directory fd. Existing directories are left as they are.
/// Symlinks on the way are followed inside the root, dangling ones too:
/// what they point at is created ([`resolve_in_root`]).
pub fn mkdir_all(root: RawFd, path: &Path, uid: u32, gid: u32) -> io::Result<OwnedFd> {
    let rel = resolve_in_root(root, path)?;
    let mut current = open_in_root(root, Path::new(""), libc::O_DIRECTORY | libc::O_RDONLY)?;
    let mut so_far = PathBuf::new();
    for comp in rel.components() {
        so_far.push(comp);
        match open_in_root(root, &so_far, libc::O_DIRECTORY | libc::O_RDONLY) {
            Ok(fd) => current = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let name = cstr(comp.as_os_str())?;
                // SAFETY: plain *at syscalls on fds we own.
                let r = unsafe { libc::mkdirat(current.as_raw_fd(), name.as_ptr(), 0o755) };
                if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(io::Error::last_os_error());
                }
                check(unsafe {
                    libc::fchownat(
                        current.as_raw_fd(),
                        name.as_ptr(),
                        uid,
                        gid,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                })?;
                check(unsafe { libc::fchmodat(current.as_raw_fd(), name.as_ptr(), 0o755, 0) })?;
                current = open_in_root(root, &so_far, libc::O_DIRECTORY | libc::O_RDONLY)?;
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("/{} exists and is not a directory", so_far.display()),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(current)
}

/// Removes `name` in `dir` unless it is a directory (which is kept, like
/// Docker's copy onto an existing directory).
fn clear_non_dir(dir: RawFd, name: &CString) -> io::Result<()> {
    // SAFETY: plain *at syscalls.
    let r = unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::EISDIR) => {}
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Metadata to give a copied entry.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: libc::timespec,
}

fn set_times(dir: RawFd, name: &CString, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    // SAFETY: valid pointers for the call.
    check(unsafe {
        libc::utimensat(
            dir,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(())
}

/// Writes a regular file `name` in `dir` with `data`'s contents.
pub fn write_file<R: io::Read + ?Sized>(
    dir: RawFd,
    name: &OsStr,
    data: &mut R,
    meta: Meta,
) -> io::Result<()> {
    let c = cstr(name)?;
    if let Some(st) = fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)? {
        if is_dir(&st) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "cannot copy a file onto the directory {}",
                    name.to_string_lossy()
                ),
            ));
        }
    }
    clear_non_dir(dir, &c)?;
    // SAFETY: plain openat with O_NOFOLLOW|O_EXCL: never follows or reuses.
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    })?;
    let mut f = unsafe { File::from_raw_fd(fd) };
    // File to File: io::copy uses copy_file_range (an in-kernel copy).
    io::copy(data, &mut f)?;
    check(unsafe { libc::fchown(fd, meta.uid, meta.gid) })?;
    // After chown: chown clears setuid bits.
    check(unsafe { libc::fchmod(fd, meta.mode & 0o7777) })?;
    let times = [meta.mtime, meta.mtime];
    check(unsafe { libc::futimens(fd, times.as_ptr()) })?;
    Ok(())
}

pub fn write_symlink(dir: RawFd, name: &OsStr, target: &Path, meta: Meta) -> io::Result<()> {
    let c = cstr(name)?;
    if let Some(st) = fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)? {
        if is_dir(&st) {
            remove_tree_at(dir, name)?;
        }
    }
    clear_non_dir(dir, &c)?;
    let t = cstr(target.as_os_str())?;
    // SAFETY: plain *at syscalls.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) })?;
    check(unsafe {
        libc::fchownat(
            dir,
            c.as_ptr(),
            meta.uid,
            meta.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    set_times(dir, &c, meta.mtime)
}

/// Creates (or keeps) directory `name` in `dir` and applies `meta`;
/// returns its fd.
pub fn write_dir(dir: RawFd, name: &OsStr, meta: Meta) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    match fstatat(dir, name, libc::AT_SYMLINK_NOFOLLOW)? {
        Some(st) if is_dir(&st) => {}
        Some(_) => {
            clear_non_dir(dir, &c)?;
            check(unsafe { libc::mkdirat(dir, c.as_ptr(), 0o700) })?;
        }
        None => {
            check(unsafe { libc::mkdirat(dir, c.as_ptr(), 0o700) })?;
        }
    }
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    check(unsafe { libc::fchown(fd.as_raw_fd(), meta.uid, meta.gid) })?;
    check(unsafe { libc::fchmod(fd.as_raw_fd(), meta.mode & 0o7777) })?;
    Ok(fd)
}

/// Sets a directory's mtime (after its children are written).
pub fn set_dir_mtime(fd: RawFd, mtime: libc::timespec) -> io::Result<()> {
    let times = [mtime, mtime];
    check(unsafe { libc::futimens(fd, times.as_ptr()) })?;
    Ok(())
}

fn remove_tree_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    let c = cstr(name)?;
    let fd = check(unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_DIRECTORY | libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    let sub = unsafe { OwnedFd::from_raw_fd(fd) };
    for entry in list_dir(sub.as_raw_fd())? {
        let ec = cstr(&entry)?;
        let st = fstatat(sub.as_raw_fd(), &entry, libc::AT_SYMLINK_NOFOLLOW)?;
        if st.as_ref().is_some_and(is_dir) {
            remove_tree_at(sub.as_raw_fd(), &entry)?;
        } else {
            check(unsafe { libc::unlinkat(sub.as_raw_fd(), ec.as_ptr(), 0) })?;
        }
    }
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), libc::AT_REMOVEDIR) })?;
    Ok(())
}

/// Names in a directory fd (sorted), without `.` and `..`.
pub fn list_dir(fd: RawFd) -> io::Result<Vec<std::ffi::OsString>> {
    let dup = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    let path = format!("/proc/self/fd/{dup}");
    let _guard = unsafe { OwnedFd::from_raw_fd(dup) };
    let mut names: Vec<_> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolution_stays_in_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("app")).unwrap();
        symlink("../../..", root.join("up")).unwrap();
        let fd = open_root(&root).unwrap();
        let uid = unsafe { libc::geteuid() };
        let gid = unsafe { libc::getegid() };
        // /app -> /etc resolves to the root's etc, not the host's.
        let d = mkdir_all(fd.as_raw_fd(), Path::new("/app/sub"), uid, gid).unwrap();
        let meta = Meta {
            mode: 0o644,
            uid,
            gid,
            mtime: libc::timespec {
                tv_sec: 1,
                tv_nsec: 0,
            },
        };
        write_file(d.as_raw_fd(), OsStr::new("f"), &mut &b"x"[..], meta).unwrap();
        assert_eq!(std::fs::read(root.join("etc/sub/f")).unwrap(), b"x");
        let d = mkdir_all(fd.as_raw_fd(), Path::new("up/escape"), uid, gid).unwrap();
        write_file(d.as_raw_fd(), OsStr::new("g"), &mut &b"y"[..], meta).unwrap();
        assert!(root.join("escape/g").exists(), "clamped at the root");
        assert!(!t.path().join("escape").exists());
    }
}
