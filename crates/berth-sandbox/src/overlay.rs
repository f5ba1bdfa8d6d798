//! Overlay mounts with any number of lower layers.
//!
//! The classic `lowerdir=a:b:c` option string is limited to one page, which
//! a deep image exceeds quickly. Linux 6.8 added `lowerdir+` to the new mount
//! API (`fsopen`/`fsconfig`), one layer per call without a length limit; we
//! use it and fall back to the string form on older kernels, where long
//! layer lists are spelled as short `/proc/self/fd/N` links to pre-opened
//! directories (thread-safe, unlike a `chdir` to a common parent).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Result, SandboxError};
use crate::sys::{self, cstr};

const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
/// Overlay refuses more lower layers than this (OVL_MAX_STACK).
const MAX_LOWERS: usize = 500;

/// An overlay layer set.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverlayLayers<'a> {
    /// Topmost first.
    pub lowers: &'a [PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
}

/// Unmounts its target when dropped; a busy mount is detached lazily.
#[derive(Debug)]
pub struct MountGuard {
    target: PathBuf,
    mounted: bool,
}

impl MountGuard {
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Unmount now and report failure (a busy mount is detached lazily and
    /// the error still returned, so the caller knows something held it).
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        match sys::umount(&self.target, 0) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = sys::umount(&self.target, libc::MNT_DETACH);
                Err(e)
            }
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted && sys::umount(&self.target, 0).is_err() {
            let _ = sys::umount(&self.target, libc::MNT_DETACH);
        }
    }
}

/// Mount an overlay of `lowers` (topmost first) with `upper`/`work` at
/// `target`, in the calling process's mount namespace.
///
/// The caller must be root or root in its user namespace, in a private mount
/// namespace (see [`crate::enter_build_namespace`]). `userxattr` is always
/// set: layers are unpacked with `user.overlay.*` xattrs and char 0/0
/// whiteouts, which work both as root and rootless.
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<MountGuard> {
    let layers = OverlayLayers {
        lowers,
        upper,
        work,
    };
    mount_overlay_at(&layers, target, Path::new("/proc"), false)?;
    Ok(MountGuard {
        target: target.to_path_buf(),
        mounted: true,
    })
}

/// Mount an overlay; `proc` is where procfs is visible (the helper sees the
/// host's under its old root). `force_legacy` skips the new mount API (tests).
pub(crate) fn mount_overlay_at(
    layers: &OverlayLayers<'_>,
    target: &Path,
    proc: &Path,
    force_legacy: bool,
) -> Result<()> {
    if layers.lowers.is_empty() {
        return Err(SandboxError::InvalidSpec(
            "an overlay needs at least one lower layer".into(),
        ));
    }
    if layers.lowers.len() > MAX_LOWERS {
        return Err(SandboxError::InvalidSpec(format!(
            "{} layers exceed overlayfs's limit of {MAX_LOWERS} lower layers; squash the base image",
            layers.lowers.len()
        )));
    }
    if !force_legacy {
        match mount_new_api(layers, target) {
            Ok(()) => return Ok(()),
            Err(NewApi::Unsupported) => {}
            Err(NewApi::Failed(e)) => return Err(e),
        }
    }
    mount_legacy(layers, target, proc)
}

enum NewApi {
    /// Kernel without fsopen or without `lowerdir+` (< 6.8): use the string form.
    Unsupported,
    Failed(SandboxError),
}

fn overlay_error(layers: &OverlayLayers<'_>, target: &Path, detail: String) -> SandboxError {
    SandboxError::Setup(format!(
        "mounting overlay on {} (upper {}, {} lower layers, topmost {}): {detail}",
        target.display(),
        layers.upper.display(),
        layers.lowers.len(),
        layers.lowers[0].display()
    ))
}

fn mount_new_api(layers: &OverlayLayers<'_>, target: &Path) -> Result<(), NewApi> {
    let name = CString::new("overlay").expect("static");
    // SAFETY: raw syscall; the name is NUL-terminated.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ENOSYS) {
            NewApi::Unsupported
        } else {
            NewApi::Failed(overlay_error(layers, target, format!("fsopen: {e}")))
        });
    }
    // SAFETY: fsopen returned a fresh descriptor that we own.
    let fs = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    let fail = |what: &str, e: io::Error| {
        let log = read_fs_log(&fs);
        let detail = if log.is_empty() {
            format!("{what}: {e}")
        } else {
            format!("{what}: {e} ({log})")
        };
        NewApi::Failed(overlay_error(layers, target, detail))
    };
    let set = |key: &str, value: Option<&Path>| -> Result<(), io::Error> {
        let k = CString::new(key).expect("static key");
        let v = value
            .map(|p| {
                cstr(p).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
            })
            .transpose()?;
        let (cmd, vptr) = match &v {
            Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
            None => (FSCONFIG_SET_FLAG, std::ptr::null()),
        };
        // SAFETY: raw syscall with valid NUL-terminated strings.
        let rc =
            unsafe { libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), cmd, k.as_ptr(), vptr, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    for (i, lower) in layers.lowers.iter().enumerate() {
        if let Err(e) = set("lowerdir+", Some(lower)) {
            // An unknown parameter on the very first layer means a kernel
            // older than 6.8; anything else is a real problem with a layer.
            if i == 0
                && e.raw_os_error() == Some(libc::EINVAL)
                && read_fs_log(&fs).contains("nknown parameter")
            {
                return Err(NewApi::Unsupported);
            }
            return Err(fail(&format!("lower layer {}", lower.display()), e));
        }
    }
    set("upperdir", Some(layers.upper))
        .map_err(|e| fail(&format!("upper {}", layers.upper.display()), e))?;
    set("workdir", Some(layers.work))
        .map_err(|e| fail(&format!("work {}", layers.work.display()), e))?;
    set("userxattr", None).map_err(|e| fail("option userxattr (needs Linux 5.11)", e))?;
    // SAFETY: raw syscall on our fs context fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if rc != 0 {
        return Err(fail("creating the overlay", io::Error::last_os_error()));
    }
    // SAFETY: raw syscall on our fs context fd.
    let mfd = unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if mfd < 0 {
        return Err(fail("fsmount", io::Error::last_os_error()));
    }
    // SAFETY: fsmount returned a fresh descriptor that we own.
    let mnt = unsafe { OwnedFd::from_raw_fd(mfd as libc::c_int) };
    let empty = CString::new("").expect("static");
    let t = cstr(target).map_err(NewApi::Failed)?;
    // SAFETY: raw syscall; paths are valid NUL-terminated strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc != 0 {
        return Err(fail("attaching the mount", io::Error::last_os_error()));
    }
    Ok(())
}

/// The messages the kernel logged on an fs context ("e overlay: ...").
fn read_fs_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..16 {
        // SAFETY: reading into a valid buffer from our own fd.
        let n = unsafe { libc::read(fs.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        let msg = String::from_utf8_lossy(&buf[..n as usize]);
        out.push(msg.strip_prefix("e ").unwrap_or(&msg).trim().to_string());
    }
    out.join("; ")
}

/// Escape a path for overlay's option parser (`\`, `:` and `,` are special).
fn escape_opt(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn legacy_options(lowers: &[String], upper: &str, work: &str) -> String {
    format!(
        "lowerdir={},upperdir={upper},workdir={work},userxattr",
        lowers.join(":")
    )
}

fn mount_legacy(layers: &OverlayLayers<'_>, target: &Path, proc: &Path) -> Result<()> {
    // mount(2) copies at most one page of options, including the NUL.
    let limit = page_size() - 1;
    let lowers: Vec<String> = layers.lowers.iter().map(|p| escape_opt(p)).collect();
    let mut opts = legacy_options(&lowers, &escape_opt(layers.upper), &escape_opt(layers.work));
    // Held open until mount(2) has resolved the /proc/self/fd links.
    let mut held = Vec::new();
    if opts.len() > limit {
        let mut short = |p: &Path| -> Result<String> {
            let fd = nix::fcntl::open(
                p,
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| {
                SandboxError::sys(format!("opening layer {}", p.display()), io::Error::from(e))
            })?;
            let s = escape_opt(&proc.join(format!("self/fd/{}", fd.as_raw_fd())));
            held.push(fd);
            Ok(s)
        };
        let lowers = layers
            .lowers
            .iter()
            .map(|p| short(p))
            .collect::<Result<Vec<_>>>()?;
        let upper = short(layers.upper)?;
        let work = short(layers.work)?;
        opts = legacy_options(&lowers, &upper, &work);
        if opts.len() > limit {
            return Err(overlay_error(
                layers,
                target,
                "too many layers for this kernel's mount option limit; Linux 6.8 or newer has no limit".into(),
            ));
        }
    }
    sys::mount(
        Some(Path::new("overlay")),
        target,
        Some("overlay"),
        0,
        Some(&opts),
    )
    .map_err(|e| overlay_error(layers, target, e.to_string()))?;
    drop(held);
    Ok(())
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_special_characters() {
        assert_eq!(escape_opt(Path::new("/a:b,c\\d")), "/a\\:b\\,c\\\\d");
        assert_eq!(escape_opt(Path::new("/plain/path")), "/plain/path");
    }

    #[test]
    fn legacy_option_string_orders_layers_topmost_first() {
        let s = legacy_options(&["/l1".into(), "/l2".into()], "/u", "/w");
        assert_eq!(s, "lowerdir=/l1:/l2,upperdir=/u,workdir=/w,userxattr");
    }

    #[test]
    fn refuses_empty_and_oversized_layer_lists() {
        let t = Path::new("/nonexistent");
        let none: Vec<PathBuf> = Vec::new();
        let layers = OverlayLayers {
            lowers: &none,
            upper: t,
            work: t,
        };
        assert!(matches!(
            mount_overlay_at(&layers, t, Path::new("/proc"), false),
            Err(SandboxError::InvalidSpec(_))
        ));
        let many: Vec<PathBuf> = (0..=MAX_LOWERS)
            .map(|i| PathBuf::from(format!("/l{i}")))
            .collect();
        let layers = OverlayLayers {
            lowers: &many,
            upper: t,
            work: t,
        };
        let err = mount_overlay_at(&layers, t, Path::new("/proc"), false).unwrap_err();
        assert!(err.to_string().contains("limit of 500"), "{err}");
    }
}
