//! `berth cp SRC DST`, one side `CONTAINER:PATH`: copies files in and out
//! of a container, Docker's rules (`DIR/.` copies the contents; a missing
//! destination is created; an existing directory receives the source by
//! its name). The container's side is confined to its root: paths are
//! resolved with symlinks interpreted inside the root
//! ([`berth_sandbox::resolve_in_root`]), and below the resolved directory
//! nothing is followed: an existing symlink or file in the way is replaced,
//! never written through.
//!
//! The root of a running container is `/proc/PID/root`, reached as root of
//! its user namespace (joined first, rootless); a container that is not
//! running has its layers and upper directory mounted as an overlay in a
//! private mount namespace (berth's build namespace, entered here), which
//! disappears with the command. Ownership is the destination's user, as
//! with `docker cp`: root in the container, the caller on the host.
//!
//! Known gap: against a *running* container that swaps a directory for a
//! symlink between resolution and write, the kernel would follow it; a
//! created or stopped container cannot do that.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::container::{Container, Status};
use crate::{Error, Paths, Result};

/// One side of `cp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    Host(PathBuf),
    Container(String, String),
}

/// Docker's rule: `NAME:PATH` unless the part before `:` is empty or has a
/// `/`, or the argument starts with `.` or `/` (a local path).
pub fn parse_side(s: &str) -> Side {
    if !s.starts_with('/') && !s.starts_with('.') {
        if let Some((name, path)) = s.split_once(':') {
            if !name.is_empty() && !name.contains('/') {
                return Side::Container(name.to_string(), path.to_string());
            }
        }
    }
    Side::Host(PathBuf::from(s))
}

/// `path` names the contents of a directory (`DIR/.`, `.`).
fn wants_contents(path: &str) -> bool {
    path == "." || path.ends_with("/.")
}

/// Copies between the host and a container. Call it while the process is
/// single-threaded and outside berth's build namespace: it enters the
/// namespace it needs.
pub fn cp(paths: &Paths, src: &str, dst: &str) -> Result<()> {
    let (s, d) = (parse_side(src), parse_side(dst));
    let name = match (&s, &d) {
        (Side::Container(n, _), Side::Host(_)) | (Side::Host(_), Side::Container(n, _)) => {
            n.clone()
        }
        (Side::Container(..), Side::Container(..)) => {
            return Err(Error::Invalid(
                "copying between containers is not supported".into(),
            ))
        }
        (Side::Host(_), Side::Host(_)) => {
            return Err(Error::Invalid(
                "must specify at least one container source (NAME:PATH)".into(),
            ))
        }
    };
    let c = crate::container::find(paths, &name)?;
    let st = c.state(paths);
    let (root, _guard) = if st.status == Status::Running && st.pid != 0 {
        berth_sandbox::join_user_namespace(st.pid)
            .map_err(|e| Error::Failed(format!("reaching container {name}: {e}")))?;
        (PathBuf::from(format!("/proc/{}/root", st.pid)), None)
    } else {
        berth_sandbox::enter_build_namespace()
            .map_err(|e| Error::Failed(format!("setting up berth's namespace: {e}")))?;
        mount_root(paths, &c)?
    };
    let skip_other_fs = st.status == Status::Running;
    let result = match (&s, &d) {
        (Side::Container(_, cpath), Side::Host(hpath)) => {
            let (real, _) = resolve(&root, cpath, &name)?;
            let real = real.ok_or_else(|| {
                Error::NotFound(format!(
                    "Could not find the file {cpath} in container {name}"
                ))
            })?;
            let dest = host_dest(hpath)?;
            copy_top(&real, wants_contents(cpath), dest, skip_other_fs)
        }
        (Side::Host(hpath), Side::Container(_, cpath)) => {
            fs::symlink_metadata(hpath)
                .map_err(|e| Error::NotFound(format!("could not find {}: {e}", hpath.display())))?;
            let dest = container_dest(&root, cpath, &name)?;
            copy_top(hpath, wants_contents(&hpath.to_string_lossy()), dest, false)
        }
        _ => unreachable!("checked above"),
    };
    result
}

/// Unmounts the overlay when the copy is done (the mount namespace goes
/// with the process anyway).
struct Unmount(Option<berth_sandbox::MountGuard>, Option<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Some(g) = self.0.take() {
            let _ = g.unmount();
        }
        if let Some(d) = self.1.take() {
            let _ = fs::remove_dir(d);
        }
    }
}

fn mount_root(paths: &Paths, c: &Container) -> Result<(PathBuf, Option<Unmount>)> {
    if !c.overlay {
        return Ok((c.rootfs_dir(paths), None));
    }
    let target = paths.dir(&c.id).join("cp-merged");
    let _ = fs::create_dir(&target);
    let guard = berth_sandbox::mount_overlay(&c.lowers, &c.upper(paths), &c.work(paths), &target)
        .map_err(|e| Error::Failed(format!("mounting the container's filesystem: {e}")))?;
    Ok((target.clone(), Some(Unmount(Some(guard), Some(target)))))
}

/// `path` in the container resolved inside `root`: the real path if it
/// exists, and otherwise the real parent plus the missing name.
fn resolve(root: &Path, path: &str, name: &str) -> Result<(Option<PathBuf>, Vec<OsString>)> {
    let (rel, missing) = berth_sandbox::resolve_in_root(root, Path::new(path))
        .map_err(|e| Error::Failed(format!("resolving {path} in container {name}: {e}")))?;
    if missing.is_empty() {
        Ok((Some(root.join(rel)), missing))
    } else {
        Ok((None, {
            let mut v = vec![root.join(rel).into_os_string()];
            v.extend(missing);
            v
        }))
    }
}

/// Where a copy goes: into an existing directory (by the source's name, or
/// its contents), or as a new entry `name` in the directory `parent`.
enum Dest {
    IntoDir(PathBuf),
    New {
        parent: PathBuf,
        name: OsString,
    },
    /// An existing non-directory (a file is replaced).
    Replace(PathBuf),
}

fn host_dest(p: &Path) -> Result<Dest> {
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => Ok(Dest::IntoDir(p.to_path_buf())),
        Ok(_) => Ok(Dest::Replace(p.to_path_buf())),
        Err(_) => {
            let s = p.to_string_lossy();
            if s.ends_with('/') {
                return Err(Error::NotFound(format!(
                    "destination directory {s} does not exist"
                )));
            }
            let name = p
                .file_name()
                .ok_or_else(|| Error::Invalid(format!("invalid destination {s}")))?
                .to_owned();
            let parent = match p.parent() {
                Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !parent.is_dir() {
                return Err(Error::NotFound(format!(
                    "the parent directory of {s} does not exist"
                )));
            }
            Ok(Dest::New { parent, name })
        }
    }
}

fn container_dest(root: &Path, path: &str, name: &str) -> Result<Dest> {
    let (real, missing) = resolve(root, path, name)?;
    if let Some(real) = real {
        let m = fs::symlink_metadata(&real).map_err(|e| Error::io(path.to_string(), e))?;
        return Ok(if m.is_dir() {
            Dest::IntoDir(real)
        } else {
            Dest::Replace(real)
        });
    }
    // missing[0] is the real parent, then the missing components.
    if missing.len() != 2 || path.ends_with('/') {
        return Err(Error::NotFound(format!(
            "the parent directory of {path} does not exist in container {name}"
        )));
    }
    Ok(Dest::New {
        parent: PathBuf::from(&missing[0]),
        name: missing[1].clone(),
    })
}

fn copy_top(src: &Path, contents: bool, dest: Dest, skip_other_fs: bool) -> Result<()> {
    let meta = fs::symlink_metadata(src)
        .map_err(|e| Error::NotFound(format!("could not find {}: {e}", src.display())))?;
    let dev = skip_other_fs.then_some(meta.dev());
    match dest {
        Dest::IntoDir(dir) => {
            if meta.is_dir() && contents {
                copy_children(src, &dir, dev)
            } else {
                let name = src
                    .file_name()
                    .map(|n| n.to_owned())
                    .unwrap_or_else(|| OsString::from("root"));
                copy_entry(src, &dir.join(name), dev)
            }
        }
        Dest::New { parent, name } => copy_entry(src, &parent.join(name), dev),
        Dest::Replace(p) => {
            if meta.is_dir() {
                return Err(Error::Invalid(format!(
                    "cannot copy a directory to a file: {}",
                    p.display()
                )));
            }
            copy_entry(src, &p, dev)
        }
    }
}

fn copy_children(src: &Path, dst: &Path, dev: Option<u64>) -> Result<()> {
    let entries =
        fs::read_dir(src).map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
    for e in entries {
        let e = e.map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
        copy_entry(&e.path(), &dst.join(e.file_name()), dev)?;
    }
    Ok(())
}

/// Clears `dst` for a new non-directory: an existing file or symlink is
/// removed (never followed), a directory is an error.
fn clear_for_file(dst: &Path) -> Result<()> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => Err(Error::Invalid(format!(
            "cannot overwrite directory {} with a non-directory",
            dst.display()
        ))),
        Ok(_) => {
            fs::remove_file(dst).map_err(|e| Error::io(format!("replacing {}", dst.display()), e))
        }
        Err(_) => Ok(()),
    }
}

fn copy_entry(src: &Path, dst: &Path, dev: Option<u64>) -> Result<()> {
    let m = fs::symlink_metadata(src).map_err(|e| Error::io(format!("{}", src.display()), e))?;
    let ft = m.file_type();
    let mode = m.permissions().mode() & 0o7777;
    if ft.is_dir() {
        if dev.is_some_and(|d| d != m.dev()) {
            // /proc, /sys, /dev of a running container.
            return Ok(());
        }
        match fs::symlink_metadata(dst) {
            Ok(d) if d.is_dir() => {}
            Ok(_) => {
                fs::remove_file(dst)
                    .map_err(|e| Error::io(format!("replacing {}", dst.display()), e))?;
                fs::create_dir(dst)
                    .map_err(|e| Error::io(format!("creating {}", dst.display()), e))?;
            }
            Err(_) => fs::create_dir(dst)
                .map_err(|e| Error::io(format!("creating {}", dst.display()), e))?,
        }
        copy_children(src, dst, dev)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {}", dst.display()), e))?;
    } else if ft.is_symlink() {
        clear_for_file(dst)?;
        let target = fs::read_link(src).map_err(|e| Error::io(format!("{}", src.display()), e))?;
        std::os::unix::fs::symlink(target, dst)
            .map_err(|e| Error::io(format!("creating {}", dst.display()), e))?;
    } else if ft.is_file() {
        clear_for_file(dst)?;
        let mut from =
            fs::File::open(src).map_err(|e| Error::io(format!("opening {}", src.display()), e))?;
        let mut to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(dst)
            .map_err(|e| Error::io(format!("creating {}", dst.display()), e))?;
        io::copy(&mut from, &mut to)
            .map_err(|e| Error::io(format!("copying {}", src.display()), e))?;
        to.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("chmod {}", dst.display()), e))?;
        if let Ok(t) = m.modified() {
            let _ = to.set_modified(t);
        }
    }
    // Devices, fifos and sockets are skipped.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides() {
        assert_eq!(
            parse_side("web:/etc"),
            Side::Container("web".into(), "/etc".into())
        );
        assert_eq!(parse_side("./a:b"), Side::Host("./a:b".into()));
        assert_eq!(parse_side("/x:y"), Side::Host("/x:y".into()));
        assert_eq!(parse_side("a/b:c"), Side::Host("a/b:c".into()));
        assert_eq!(parse_side("rootfs"), Side::Host("rootfs".into()));
        assert!(wants_contents("dir/.") && wants_contents(".") && !wants_contents("dir"));
    }

    #[test]
    fn writes_never_follow_symlinks_out_of_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir(&outside).unwrap();
        // An absolute symlink in the container that would leave the root.
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink("/etc/../../..", root.join("up")).unwrap();
        let src = t.path().join("file");
        fs::write(&src, b"x").unwrap();
        // /escape resolves to <root>/<outside's path>, which does not exist.
        assert!(container_dest(&root, "/escape/file", "c").is_err());
        for target in ["/up/file", "/up/etc/"] {
            let d = container_dest(&root, target, "c").unwrap();
            copy_top(&src, false, d, false).unwrap();
        }
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(fs::read(root.join("file")).unwrap(), b"x");
        assert_eq!(fs::read(root.join("etc/file")).unwrap(), b"x");
        // A symlink in the way of a file is replaced, not written through.
        std::os::unix::fs::symlink(outside.join("victim"), root.join("etc/link")).unwrap();
        let d = container_dest(&root, "/etc/", "c").unwrap();
        let named = t.path().join("link");
        fs::write(&named, b"y").unwrap();
        copy_top(&named, false, d, false).unwrap();
        assert!(!outside.join("victim").exists());
        assert_eq!(fs::read(root.join("etc/link")).unwrap(), b"y");
    }
}
