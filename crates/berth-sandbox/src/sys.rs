//! Thin wrappers over the system calls the sandbox needs, with errors that
//! name the object. Raw libc is used where nix has no wrapper (new mount API)
//! or where the helper must not allocate between fork and exec.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Result, SandboxError};

pub(crate) fn cstr(s: impl AsRef<OsStr>) -> Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| {
        SandboxError::InvalidSpec(format!(
            "{:?} contains a NUL byte",
            s.as_ref().to_string_lossy()
        ))
    })
}

/// mount(2) with an error naming what was mounted where.
pub(crate) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let fs = fstype.map(cstr).transpose()?;
    let dat = data.map(cstr).transpose()?;
    // SAFETY: all pointers are valid NUL-terminated strings or null.
    let rc = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fs.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    };
    if rc != 0 {
        let what = match (fstype, source) {
            (Some(fs), _) => format!("mounting {fs} on {}", target.display()),
            (None, Some(src)) if flags & libc::MS_BIND != 0 => {
                format!("bind-mounting {} on {}", src.display(), target.display())
            }
            _ => format!("changing the mount {} (flags {flags:#x})", target.display()),
        };
        return Err(SandboxError::last_os(what));
    }
    Ok(())
}

pub(crate) fn bind(source: &Path, target: &Path, recursive: bool) -> Result<()> {
    let flags = libc::MS_BIND | if recursive { libc::MS_REC } else { 0 };
    mount(Some(source), target, None, flags, None)
}

/// Remount a bind mount read-only. In a user namespace the flags the mount
/// already has (nosuid, nodev, noexec, atime) are locked and must be kept, or
/// the kernel refuses the remount (runc does the same).
pub(crate) fn remount_readonly(target: &Path) -> Result<()> {
    remount_adding(target, libc::MS_RDONLY)
}

/// Remount so that device nodes under `target` cannot be opened: the only
/// devices a step may use are the ones bound into its `/dev`.
pub(crate) fn remount_nodev(target: &Path) -> Result<()> {
    remount_adding(target, libc::MS_NODEV)
}

/// Add per-mount flags to the mount at `target`, keeping the ones it has.
fn remount_adding(target: &Path, add: libc::c_ulong) -> Result<()> {
    let t = cstr(target)?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(t.as_ptr(), &mut st) } != 0 {
        return Err(SandboxError::last_os(format!(
            "statvfs {}",
            target.display()
        )));
    }
    let keep = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ]
    .iter()
    .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
    .fold(0, |acc, (_, ms)| acc | ms);
    mount(
        None,
        target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | add | keep,
        None,
    )
}

pub(crate) fn umount(target: &Path, flags: libc::c_int) -> Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::umount2(t.as_ptr(), flags) } != 0 {
        return Err(SandboxError::last_os(format!(
            "unmounting {}",
            target.display()
        )));
    }
    Ok(())
}

pub(crate) fn pivot_root(new_root: &Path, put_old: &Path) -> Result<()> {
    let n = cstr(new_root)?;
    let o = cstr(put_old)?;
    // SAFETY: raw syscall with two valid paths; glibc has no wrapper.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) };
    if rc != 0 {
        return Err(SandboxError::last_os(format!(
            "pivot_root to {}",
            new_root.display()
        )));
    }
    Ok(())
}

pub(crate) fn chdir(dir: &Path) -> Result<()> {
    std::env::set_current_dir(dir)
        .map_err(|e| SandboxError::sys(format!("changing directory to {}", dir.display()), e))
}

/// Write all of `buf` to a raw fd (retrying on EINTR and short writes).
pub(crate) fn write_all_fd(fd: libc::c_int, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// A pipe whose ends are close-on-exec.
pub(crate) fn pipe_cloexec() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SandboxError::sys("creating a pipe", io::Error::from(e)))
}
