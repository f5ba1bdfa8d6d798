//! Thin, safe wrappers over the Linux calls the unpacker and differ need.
//!
//! Everything the unpacker touches goes through a directory file descriptor:
//! paths are resolved with `openat2(RESOLVE_IN_ROOT)` and every creation,
//! removal and metadata change is an `*at()` call on the resolved parent, so a
//! symlink planted by a layer can never redirect a write outside the root.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_IN_ROOT: u64 = 0x10;

pub(crate) fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Open a directory by ordinary path (the root the caller chose).
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: c is a valid NUL-terminated string.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resolve `rel` below `root` as if `root` were `/` (symlinks, `..` and
/// absolute link targets all stay inside), refusing /proc-style magic links.
pub fn openat2_in_root(root: RawFd, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    openat2_resolve(root, rel, flags, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
}

/// [`openat2_in_root`] that fails (`ELOOP`) on any symlink on the way
/// instead of following it.
pub(crate) fn openat2_no_symlinks(
    root: RawFd,
    rel: &[u8],
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    openat2_resolve(
        root,
        rel,
        flags,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS,
    )
}

fn openat2_resolve(
    root: RawFd,
    rel: &[u8],
    flags: libc::c_int,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstr(if rel.is_empty() { b"." } else { rel })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    loop {
        // SAFETY: arguments match the openat2 ABI; `how` outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root,
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a fresh descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        // RESOLVE_IN_ROOT may fail with EAGAIN when a concurrent rename races
        // the lookup; retrying is what the man page asks for.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            if e.raw_os_error() == Some(libc::ENOSYS) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "openat2 is not available: berth needs Linux 5.6 or newer to unpack layers safely",
                ));
            }
            return Err(e);
        }
    }
}

/// Open `name` inside directory `dir` without following a final symlink.
pub(crate) fn openat(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and C string.
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn fstatat(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out pointer.
    cvt(unsafe {
        libc::fstatat(
            dir,
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded, so st is initialised.
    Ok(unsafe { st.assume_init() })
}

/// `fstatat` that maps "does not exist" to `None`.
pub(crate) fn fstatat_opt(dir: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    match fstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn mkdirat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mknodat(
    dir: RawFd,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::mknodat(dir, name.as_ptr(), mode, dev) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and C strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

/// Hard link without following a symlink at `old` (flags 0): linking to a
/// symlink links the symlink itself, never what it points at.
pub(crate) fn linkat(old_dir: RawFd, old: &CStr, new_dir: RawFd, new: &CStr) -> io::Result<()> {
    // SAFETY: valid fds and C strings.
    cvt(unsafe { libc::linkat(old_dir, old.as_ptr(), new_dir, new.as_ptr(), 0) }).map(drop)
}

pub(crate) fn unlinkat(dir: RawFd, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn fchownat_nofollow(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub(crate) fn fchmodat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // fchmodat cannot take AT_SYMLINK_NOFOLLOW on most kernels; callers only
    // use it for non-symlinks that they just created or checked with lstat.
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::fchmodat(dir, name.as_ptr(), mode, 0) }).map(drop)
}

pub(crate) fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchown(fd, uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: RawFd, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchmod(fd, mode) }).map(drop)
}

fn timespec(sec: i64, nsec: u32) -> libc::timespec {
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    }
}

/// Set atime and mtime of `name` (not following a symlink) to the same value.
pub(crate) fn utimensat_nofollow(dir: RawFd, name: &CStr, sec: i64, nsec: u32) -> io::Result<()> {
    let ts = [timespec(sec, nsec), timespec(sec, nsec)];
    // SAFETY: valid fd, C string and a two-element array.
    cvt(unsafe { libc::utimensat(dir, name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

pub(crate) fn futimens(fd: RawFd, sec: i64, nsec: u32) -> io::Result<()> {
    let ts = [timespec(sec, nsec), timespec(sec, nsec)];
    // SAFETY: valid fd and a two-element array.
    cvt(unsafe { libc::futimens(fd, ts.as_ptr()) }).map(drop)
}

pub(crate) fn fsetxattr(fd: RawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: valid fd, C string and buffer.
    cvt(unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
        .map(drop)
}

/// Names of the entries of an open directory (without `.` and `..`).
pub(crate) fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // fdopendir takes ownership of the descriptor it gets, so give it a dup.
    // SAFETY: valid fd.
    let dup = cvt(unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: dup is a directory descriptor we own.
    let dp = unsafe { libc::fdopendir(dup) };
    if dp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so dup is still ours to close.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    // The dup shares the file offset with `dir`; start from the beginning.
    // SAFETY: dp is a valid DIR*.
    unsafe { libc::rewinddir(dp) };
    let mut names = Vec::new();
    let result = loop {
        // SAFETY: errno is thread-local.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: dp is valid.
        let ent = unsafe { libc::readdir64(dp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            break if e.raw_os_error().unwrap_or(0) != 0 {
                Err(e)
            } else {
                Ok(())
            };
        }
        // SAFETY: readdir returned a valid entry with a NUL-terminated name.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            names.push(name.to_owned());
        }
    };
    // SAFETY: dp is valid and closed exactly once.
    unsafe { libc::closedir(dp) };
    result.map(|()| names)
}

/// Remove `name` in `dir` and, if it is a directory, everything below it.
/// Never follows symlinks: each level is opened with O_NOFOLLOW.
pub(crate) fn remove_all_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    let Some(st) = fstatat_opt(dir, name)? else {
        return Ok(());
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        for child in read_dir_names(&sub)? {
            remove_all_at(sub.as_raw_fd(), &child)?;
        }
        unlinkat(dir, name, true)
    } else {
        unlinkat(dir, name, false)
    }
}

/// Extended attributes of a path (not following symlinks), sorted by name.
pub(crate) fn lxattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let mut buf = vec![0u8; 1024];
    let len = loop {
        // SAFETY: valid path and buffer.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(e),
        }
    };
    let mut out = Vec::new();
    for name in buf[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if let Some(v) = lgetxattr(&c, name)? {
            out.push((name.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

fn lgetxattr(path: &CStr, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: valid strings and buffer.
        let r = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            // Removed between list and get, or not readable: treat as absent.
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// Read one xattr of a path without following symlinks.
pub(crate) fn lgetxattr_path(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let c = cstr(path.as_os_str().as_bytes())?;
    lgetxattr(&c, name.as_bytes())
}

/// True when this process can create device nodes: root in the initial user
/// namespace (inside a user namespace mknod of real devices is refused).
pub(crate) fn can_create_devices() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => false,
    }
}
