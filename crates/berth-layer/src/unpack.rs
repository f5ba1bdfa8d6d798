//! Applying a layer tar to a directory without ever touching anything outside
//! it.
//!
//! Every entry's parent is resolved with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` from a descriptor of the destination, so `..`,
//! absolute names and symlinks (from this layer or already present) resolve as
//! if the destination were `/`. The entry itself is then created with an
//! `*at()` call on that parent descriptor, never through a path the kernel
//! would resolve again. Hard link targets are resolved the same way and linked
//! with `linkat(.., 0)`, which links a symlink itself rather than its target.
//!
//! Sparse files keep their holes (GNU `S` members and PAX sparse 0.0, 0.1
//! and 1.0, see [`crate::sparse`]), as with Docker and containerd.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::LayerError;
use crate::sparse::{self, PaxSparse, PaxSparseRecords};
use crate::sys;

/// What to do with OCI whiteout entries (`.wh.NAME`, `.wh..wh..opq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whiteouts {
    /// The destination is an empty directory that becomes an overlayfs lower
    /// directory: `.wh.NAME` becomes a character device 0/0 `NAME` and
    /// `.wh..wh..opq` sets `user.overlay.opaque=y` on its directory (the
    /// `userxattr` convention the sandbox mounts with).
    Overlay,
    /// The destination is a complete root filesystem: `.wh.NAME` deletes
    /// `NAME`, `.wh..wh..opq` empties its directory of everything this layer
    /// did not itself create (containerd's apply).
    Apply,
}

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: Whiteouts,
    /// Create block and character devices from the tar. Only honoured when
    /// the process is root in the initial user namespace; otherwise devices
    /// are skipped and counted.
    pub allow_devices: bool,
    /// Keep going when `lchown` to the tar's uid/gid fails (a user namespace
    /// that maps only one id). Off by default: silently wrong ownership is
    /// worse than a clear error.
    pub ignore_chown_errors: bool,
    /// The destination holds the layers below this one (an image being
    /// flattened into one tree, [`Whiteouts::Apply`]): a symlink or other
    /// non-directory that a lower layer left where an entry of this layer
    /// has a parent directory is replaced by a new, empty directory, as
    /// overlayfs shows the layer's directory over it and hides it. The
    /// result is then the filesystem a container (a RUN step) sees. Off (an
    /// archive extracted into a directory: `ADD`), existing symlinks on the
    /// way are followed inside the root, as Docker's untar does. Symlinks
    /// this layer made itself are followed either way.
    pub flatten: bool,
}

impl UnpackOptions {
    pub fn new(whiteouts: Whiteouts) -> Self {
        UnpackOptions {
            whiteouts,
            allow_devices: false,
            ignore_chown_errors: false,
            flatten: false,
        }
    }
}

/// What an unpack did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Tar entries processed (whiteouts included).
    pub entries: u64,
    /// Regular files written.
    pub files: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Whiteout and opaque markers applied.
    pub whiteouts: u64,
    /// Block/character devices not created (not root, or not allowed).
    pub devices_skipped: u64,
    /// Extended attributes ignored (not `user.*`/`security.capability`, an
    /// overlay attribute, or refused by the filesystem).
    pub xattrs_skipped: u64,
    /// `lchown` failures ignored because of `ignore_chown_errors`.
    pub chown_failed: u64,
    /// Human-readable notes about skipped content (capped at 100).
    pub warnings: Vec<String>,
}

impl UnpackReport {
    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        if self.warnings.len() < 100 {
            self.warnings.push(msg);
        }
    }
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// Unpack an uncompressed layer tar into `dest` (see [`crate::decompress`]).
///
/// `dest` must exist and be a directory. Nothing outside it is created,
/// modified or followed, whatever the tar contains.
pub fn unpack(
    tar: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, LayerError> {
    let root = sys::open_dir_path(dest)
        .map_err(|e| LayerError::io("opening the unpack destination", dest, e))?;
    let mut u = Unpacker {
        root,
        dest: dest.to_path_buf(),
        opts: opts.clone(),
        report: UnpackReport::default(),
        parent_cache: None,
        unpacked: HashSet::new(),
        dir_times: Vec::new(),
        devices_ok: opts.allow_devices && sys::can_create_devices(),
        buf: vec![0; 256 * 1024],
    };
    let (tar, budget) = crate::headers::budgeted(tar, crate::headers::MAX_HEADER_BYTES);
    let mut archive = tar::Archive::new(tar);
    for entry in budget.entries(archive.entries().map_err(LayerError::Tar)?) {
        let entry = entry.map_err(LayerError::Tar)?;
        u.entry(entry)?;
    }
    u.finish_dir_times()?;
    Ok(u.report)
}

/// Metadata of one entry, PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    xattrs: Vec<(CString, Vec<u8>)>,
    /// A PAX sparse file's layout (and real name).
    sparse: Option<PaxSparse>,
}

struct Unpacker {
    root: OwnedFd,
    dest: PathBuf,
    opts: UnpackOptions,
    report: UnpackReport,
    /// The last resolved parent directory: tars are mostly sorted, so
    /// consecutive entries share it.
    parent_cache: Option<(Vec<u8>, OwnedFd)>,
    /// Paths created by this layer (Apply mode: an opaque marker keeps them).
    unpacked: HashSet<Vec<u8>>,
    /// Directory mtimes, applied after all children are written.
    dir_times: Vec<(Vec<u8>, i64, u32)>,
    devices_ok: bool,
    buf: Vec<u8>,
}

/// Lexically clean a tar path into components: empty and `.` parts dropped,
/// `..` pops (and cannot climb above the root), a leading `/` is ignored.
pub(crate) fn clean_components(raw: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    out
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b'/')
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

impl Unpacker {
    fn full(&self, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.dest.join(std::ffi::OsStr::from_bytes(rel))
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), LayerError> {
        let mut raw_path = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let mut kind = entry.header().entry_type().as_byte();
        let meta = self.meta(&mut entry, &raw_path)?;
        // A PAX sparse member's header name is a placeholder.
        if let Some(name) = meta.sparse.as_ref().and_then(|s| s.name.clone()) {
            raw_path = name;
        }
        self.report.entries += 1;

        if kind == b'g' {
            return Ok(()); // global PAX header: nothing in it concerns the filesystem
        }
        // Pre-POSIX tars mark directories only with a trailing slash.
        if kind == b'\0' && raw_path.ends_with(b"/") {
            kind = b'5';
        }
        let comps = clean_components(&raw_path);
        let Some((&name, parent)) = comps.split_last() else {
            // The root itself ("./", "/"): its metadata belongs to whoever
            // owns the destination, not to the layer.
            tracing::debug!(
                "skipping root entry {:?}",
                String::from_utf8_lossy(&raw_path)
            );
            return Ok(());
        };
        let rel = join(&comps);

        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&raw_path, parent, name);
        }

        let parent_fd = self.parent(parent, &raw_path)?;
        let pfd = parent_fd.as_raw_fd();
        let cname = sys::cstr(name).map_err(|e| LayerError::entry(&raw_path, e.to_string()))?;

        // Replace whatever is there, except a directory over a directory,
        // which keeps its contents and only takes the new metadata.
        let existing = sys::fstatat_opt(pfd, &cname)
            .map_err(|e| LayerError::io("inspecting", self.full(&rel), e))?;
        if let Some(st) = existing {
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            if !(is_dir && kind == b'5') {
                sys::remove_all_at(pfd, &cname)
                    .map_err(|e| LayerError::io("removing", self.full(&rel), e))?;
                self.invalidate(&rel);
            }
        }

        match kind {
            b'0' | b'\0' | b'7' | b'S' => {
                let file = sys::openat(
                    pfd,
                    &cname,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    0o600,
                )
                .map_err(|e| LayerError::io("creating", self.full(&rel), e))?;
                let mut file = File::from(file);
                let n = if kind == b'S' {
                    // The tar crate expands the holes into zeros: skip them.
                    sparse::write_holes(&mut entry, &file, &mut self.buf, &mut || Ok(()))
                        .map_err(|e| self.data_error(e, &rel))?
                } else if let Some(sp) = &meta.sparse {
                    let stored = entry.size();
                    sparse::write_pax_sparse(
                        &mut entry,
                        stored,
                        sp,
                        &file,
                        &mut self.buf,
                        &mut || Ok(()),
                    )
                    .map_err(|e| self.data_error(e, &rel))?
                } else {
                    self.copy_data(&mut entry, &mut file, &rel)?
                };
                self.report.files += 1;
                self.report.bytes += n;
                self.chown(|| sys::fchown(file.as_raw_fd(), meta.uid, meta.gid), &rel)?;
                sys::fchmod(file.as_raw_fd(), meta.mode)
                    .map_err(|e| LayerError::io("chmod", self.full(&rel), e))?;
                self.set_xattrs(file.as_raw_fd(), &meta, &rel);
                sys::futimens(file.as_raw_fd(), meta.mtime, meta.mtime_nsec)
                    .map_err(|e| LayerError::io("setting times of", self.full(&rel), e))?;
            }
            b'5' => {
                if existing.is_none_or(|st| st.st_mode & libc::S_IFMT != libc::S_IFDIR) {
                    sys::mkdirat(pfd, &cname, 0o700)
                        .map_err(|e| LayerError::io("creating directory", self.full(&rel), e))?;
                }
                let dir = sys::openat(pfd, &cname, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(|e| LayerError::io("opening directory", self.full(&rel), e))?;
                self.chown(|| sys::fchown(dir.as_raw_fd(), meta.uid, meta.gid), &rel)?;
                sys::fchmod(dir.as_raw_fd(), meta.mode)
                    .map_err(|e| LayerError::io("chmod", self.full(&rel), e))?;
                self.set_xattrs(dir.as_raw_fd(), &meta, &rel);
                self.dir_times
                    .push((rel.clone(), meta.mtime, meta.mtime_nsec));
            }
            b'2' => {
                let target =
                    link.ok_or_else(|| LayerError::entry(&raw_path, "symlink without a target"))?;
                // The target is stored verbatim: it is only ever resolved by
                // the kernel inside a container, or by openat2 inside the root.
                let ctarget =
                    sys::cstr(&target).map_err(|e| LayerError::entry(&raw_path, e.to_string()))?;
                sys::symlinkat(&ctarget, pfd, &cname)
                    .map_err(|e| LayerError::io("creating symlink", self.full(&rel), e))?;
                self.invalidate(&rel);
                self.chown(
                    || sys::fchownat_nofollow(pfd, &cname, meta.uid, meta.gid),
                    &rel,
                )?;
                sys::utimensat_nofollow(pfd, &cname, meta.mtime, meta.mtime_nsec)
                    .map_err(|e| LayerError::io("setting times of", self.full(&rel), e))?;
            }
            b'1' => {
                let target =
                    link.ok_or_else(|| LayerError::entry(&raw_path, "hard link without a target"))?;
                self.hardlink(&raw_path, &target, pfd, &cname)?;
                self.invalidate(&rel);
            }
            b'3' | b'4' | b'6' => {
                let (major, minor) = {
                    let h = entry.header();
                    (
                        h.device_major().ok().flatten().unwrap_or(0),
                        h.device_minor().ok().flatten().unwrap_or(0),
                    )
                };
                let fmt = match kind {
                    b'3' => libc::S_IFCHR,
                    b'4' => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                if fmt != libc::S_IFIFO && !self.devices_ok {
                    self.report.devices_skipped += 1;
                    let why = if self.opts.allow_devices {
                        "not root in the initial user namespace"
                    } else {
                        "devices not allowed"
                    };
                    self.report.warn(format!(
                        "skipped device node {} ({major}:{minor}): {why}",
                        String::from_utf8_lossy(&rel)
                    ));
                    return Ok(());
                }
                sys::mknodat(
                    pfd,
                    &cname,
                    fmt | (meta.mode & 0o777),
                    libc::makedev(major, minor),
                )
                .map_err(|e| LayerError::io("creating node", self.full(&rel), e))?;
                self.chown(
                    || sys::fchownat_nofollow(pfd, &cname, meta.uid, meta.gid),
                    &rel,
                )?;
                sys::fchmodat(pfd, &cname, meta.mode)
                    .map_err(|e| LayerError::io("chmod", self.full(&rel), e))?;
                sys::utimensat_nofollow(pfd, &cname, meta.mtime, meta.mtime_nsec)
                    .map_err(|e| LayerError::io("setting times of", self.full(&rel), e))?;
            }
            other => {
                return Err(LayerError::entry(
                    &raw_path,
                    format!("unsupported tar entry type {:?}", other as char),
                ))
            }
        }
        self.mark(rel);
        Ok(())
    }

    /// Copy an entry's content with a large reused buffer (io::copy's 8 KiB
    /// costs a syscall pair per 8 KiB on big layers).
    fn copy_data(
        &mut self,
        from: &mut impl Read,
        to: &mut File,
        rel: &[u8],
    ) -> Result<u64, LayerError> {
        use std::io::Write as _;
        let mut total = 0u64;
        loop {
            let n = match from.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A read error is the tar's fault, a write error the disk's.
                Err(e) => return Err(LayerError::Tar(e)),
            };
            to.write_all(&self.buf[..n])
                .map_err(|e| LayerError::io("writing", self.full(rel), e))?;
            total += n as u64;
        }
    }

    /// A failure writing an entry's data: the tar's fault (truncated,
    /// invalid sparse map) unless the filesystem refused a write.
    fn data_error(&self, e: io::Error, rel: &[u8]) -> LayerError {
        match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => LayerError::Tar(e),
            _ if e.raw_os_error().is_some() => LayerError::io("writing", self.full(rel), e),
            _ => LayerError::Tar(e),
        }
    }

    /// Header metadata with PAX overrides (uid/gid/mtime, `SCHILY.xattr.*`,
    /// `GNU.sparse.*`).
    fn meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &[u8],
    ) -> Result<Meta, LayerError> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| {
            LayerError::entry(path, format!("invalid {what} in header: {e}"))
        };
        let mode = h.mode().map_err(|e| bad("mode", e))? & 0o7777;
        let mut uid = h.uid().map_err(|e| bad("uid", e))?;
        let mut gid = h.gid().map_err(|e| bad("gid", e))?;
        let mut mtime = h.mtime().map_err(|e| bad("mtime", e))? as i64;
        let mut mtime_nsec = 0;
        let mut xattrs = Vec::new();
        let mut sparse = PaxSparseRecords::default();
        if let Some(pax) = entry.pax_extensions().map_err(LayerError::Tar)? {
            for ext in pax {
                let ext = ext.map_err(LayerError::Tar)?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                if sparse.record(key, value) {
                    continue;
                }
                let num = || {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                };
                match key {
                    b"uid" => {
                        uid = num().ok_or_else(|| LayerError::entry(path, "invalid PAX uid"))?
                    }
                    b"gid" => {
                        gid = num().ok_or_else(|| LayerError::entry(path, "invalid PAX gid"))?
                    }
                    b"mtime" => {
                        (mtime, mtime_nsec) = parse_pax_time(value)
                            .ok_or_else(|| LayerError::entry(path, "invalid PAX mtime"))?;
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            if xattr_allowed(name) {
                                if let Ok(c) = CString::new(name) {
                                    xattrs.push((c, value.to_vec()));
                                    continue;
                                }
                            }
                            self.report.xattrs_skipped += 1;
                            tracing::debug!(
                                "ignoring xattr {} on {}",
                                String::from_utf8_lossy(name),
                                String::from_utf8_lossy(path)
                            );
                        }
                    }
                }
            }
        }
        let id = |v: u64, what: &str| {
            u32::try_from(v)
                .map_err(|_| LayerError::entry(path, format!("{what} {v} does not fit in 32 bits")))
        };
        let sparse = sparse.finish().map_err(LayerError::Tar)?;
        Ok(Meta {
            mode,
            uid: id(uid, "uid")?,
            gid: id(gid, "gid")?,
            mtime,
            mtime_nsec,
            xattrs,
            sparse,
        })
    }

    fn chown(&mut self, f: impl FnOnce() -> io::Result<()>, rel: &[u8]) -> Result<(), LayerError> {
        match f() {
            Ok(()) => Ok(()),
            Err(e) if self.opts.ignore_chown_errors && matches!(errno(&e), libc::EPERM | libc::EINVAL) => {
                self.report.chown_failed += 1;
                Ok(())
            }
            Err(e) if matches!(errno(&e), libc::EPERM | libc::EINVAL) => Err(LayerError::Io {
                what: "changing owner of (the layer's uid/gid is not mapped in this user namespace: \
                       run with a full subordinate id range in /etc/subuid and /etc/subgid, or ignore ownership)",
                path: self.full(rel),
                source: e,
            }),
            Err(e) => Err(LayerError::io("changing owner of", self.full(rel), e)),
        }
    }

    fn set_xattrs(&mut self, fd: i32, meta: &Meta, rel: &[u8]) {
        for (name, value) in &meta.xattrs {
            if let Err(e) = sys::fsetxattr(fd, name, value) {
                // Best effort like containerd: a filesystem without user
                // xattrs must not make the layer unusable.
                self.report.xattrs_skipped += 1;
                tracing::debug!(
                    "setting xattr {name:?} on {}: {e}",
                    String::from_utf8_lossy(rel)
                );
            }
        }
    }

    fn mark(&mut self, rel: Vec<u8>) {
        if self.opts.whiteouts == Whiteouts::Apply {
            // Ancestors count as this layer's too, so an opaque marker that
            // comes after `o/sub/mine` keeps `o/sub` (emptied of the rest).
            let mut cur = rel;
            loop {
                let parent = cur
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map(|i| cur[..i].to_vec());
                if !self.unpacked.insert(cur) {
                    break;
                }
                match parent {
                    Some(p) => cur = p,
                    None => break,
                }
            }
        }
    }

    /// Forget the cached parent after a removal or a new symlink: not only
    /// when `changed` is a lexical ancestor of it, since the cached path may
    /// have been resolved through a symlink into what changed. Both are rare,
    /// so dropping the cache every time costs little.
    fn invalidate(&mut self, changed: &[u8]) {
        tracing::trace!(
            "parent cache dropped: {} changed",
            String::from_utf8_lossy(changed)
        );
        self.parent_cache = None;
    }

    /// Resolve (creating missing directories, 0755 like containerd) the parent
    /// directory `parts` inside the root and return a descriptor of it.
    fn parent(&mut self, parts: &[&[u8]], raw: &[u8]) -> Result<OwnedFd, LayerError> {
        let key = join(parts);
        if let Some((p, fd)) = &self.parent_cache {
            if *p == key {
                return fd
                    .try_clone()
                    .map_err(|e| LayerError::io("duplicating descriptor of", self.full(&key), e));
            }
        }
        let fd = if self.opts.flatten && self.opts.whiteouts == Whiteouts::Apply {
            self.flat_parent(parts, &key, raw)?
        } else {
            self.followed_parent(parts, &key, raw)?
        };
        let copy = fd
            .try_clone()
            .map_err(|e| LayerError::io("duplicating descriptor of", self.full(&key), e))?;
        self.parent_cache = Some((key, copy));
        Ok(fd)
    }

    /// [`UnpackOptions::flatten`]: walks `parts` one at a time, replacing
    /// what lower layers left on the way that is not a directory. Symlinks
    /// this layer made are followed inside the root.
    fn flat_parent(
        &mut self,
        parts: &[&[u8]],
        key: &[u8],
        raw: &[u8],
    ) -> Result<OwnedFd, LayerError> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        // Mostly: directories all the way, no symlink.
        if let Ok(fd) = sys::openat2_no_symlinks(self.root.as_raw_fd(), key, flags) {
            return Ok(fd);
        }
        let mut cur = self
            .root
            .try_clone()
            .map_err(|e| LayerError::io("duplicating", self.dest.clone(), e))?;
        for i in 0..parts.len() {
            let prefix = join(&parts[..=i]);
            let c = sys::cstr(parts[i]).map_err(|e| LayerError::entry(raw, e.to_string()))?;
            let st = sys::fstatat_opt(cur.as_raw_fd(), &c)
                .map_err(|e| LayerError::io("inspecting", self.full(&prefix), e))?;
            let fmt = st.map(|st| st.st_mode & libc::S_IFMT);
            let ours = self.unpacked.contains(&prefix);
            cur = match fmt {
                Some(libc::S_IFDIR) => sys::openat(cur.as_raw_fd(), &c, flags, 0)
                    .map_err(|e| LayerError::io("opening directory", self.full(&prefix), e))?,
                Some(libc::S_IFLNK) if ours => {
                    sys::openat2_in_root(self.root.as_raw_fd(), &prefix, flags)
                        .map_err(|e| self.parent_error(&prefix, raw, e))?
                }
                Some(_) if ours => {
                    return Err(self.parent_error(
                        &prefix,
                        raw,
                        io::Error::from_raw_os_error(libc::ENOTDIR),
                    ))
                }
                other => {
                    if other.is_some() {
                        tracing::debug!(
                            "{}: a lower layer's non-directory is hidden by this layer's directory",
                            String::from_utf8_lossy(&prefix)
                        );
                        sys::remove_all_at(cur.as_raw_fd(), &c)
                            .map_err(|e| LayerError::io("removing", self.full(&prefix), e))?;
                        self.invalidate(&prefix);
                    }
                    sys::mkdirat(cur.as_raw_fd(), &c, 0o755).map_err(|e| {
                        LayerError::io("creating parent directory", self.full(&prefix), e)
                    })?;
                    sys::openat(cur.as_raw_fd(), &c, flags, 0).map_err(|e| {
                        LayerError::io("opening parent directory", self.full(&prefix), e)
                    })?
                }
            };
        }
        Ok(cur)
    }

    /// Resolves `parts` following every symlink inside the root, creating
    /// missing directories.
    fn followed_parent(
        &mut self,
        parts: &[&[u8]],
        key: &[u8],
        raw: &[u8],
    ) -> Result<OwnedFd, LayerError> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        let fd = match sys::openat2_in_root(self.root.as_raw_fd(), key, flags) {
            Ok(fd) => fd,
            Err(e) if errno(&e) == libc::ENOENT => {
                let mut cur: Option<OwnedFd> = None;
                for i in 0..parts.len() {
                    let prefix = join(&parts[..=i]);
                    let next = match sys::openat2_in_root(self.root.as_raw_fd(), &prefix, flags) {
                        Ok(fd) => fd,
                        Err(e) if errno(&e) == libc::ENOENT => {
                            let at = cur
                                .as_ref()
                                .map_or(self.root.as_raw_fd(), |f| f.as_raw_fd());
                            let c = sys::cstr(parts[i])
                                .map_err(|e| LayerError::entry(raw, e.to_string()))?;
                            sys::mkdirat(at, &c, 0o755).map_err(|e| {
                                LayerError::io("creating parent directory", self.full(&prefix), e)
                            })?;
                            sys::openat2_in_root(self.root.as_raw_fd(), &prefix, flags).map_err(
                                |e| {
                                    LayerError::io(
                                        "opening parent directory",
                                        self.full(&prefix),
                                        e,
                                    )
                                },
                            )?
                        }
                        Err(e) => return Err(self.parent_error(&prefix, raw, e)),
                    };
                    cur = Some(next);
                }
                match cur {
                    Some(fd) => fd,
                    None => self
                        .root
                        .try_clone()
                        .map_err(|e| LayerError::io("duplicating", self.dest.clone(), e))?,
                }
            }
            Err(e) => return Err(self.parent_error(key, raw, e)),
        };
        Ok(fd)
    }

    fn parent_error(&self, prefix: &[u8], raw: &[u8], e: io::Error) -> LayerError {
        if errno(&e) == libc::ENOTDIR {
            LayerError::entry(
                raw,
                format!(
                    "parent {:?} is not a directory",
                    String::from_utf8_lossy(prefix)
                ),
            )
        } else {
            LayerError::io("resolving parent directory", self.full(prefix), e)
        }
    }

    fn whiteout(&mut self, raw: &[u8], parent: &[&[u8]], name: &[u8]) -> Result<(), LayerError> {
        let parent_rel = join(parent);
        if name == OPAQUE_MARKER {
            self.report.whiteouts += 1;
            let dir = self.parent(parent, raw)?;
            match self.opts.whiteouts {
                Whiteouts::Overlay => {
                    sys::fsetxattr(dir.as_raw_fd(), c"user.overlay.opaque", b"y").map_err(|e| {
                        LayerError::io(
                            "marking opaque (needs user xattrs on the snapshot filesystem)",
                            self.full(&parent_rel),
                            e,
                        )
                    })?;
                }
                Whiteouts::Apply => {
                    self.parent_cache = None;
                    self.clear_opaque(&dir, &parent_rel)?;
                }
            }
            return Ok(());
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            // Other aufs metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless here.
            tracing::debug!(
                "ignoring whiteout metadata entry {}",
                String::from_utf8_lossy(raw)
            );
            return Ok(());
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(LayerError::entry(
                raw,
                "whiteout names no file (refusing `.`, `..` and empty names)",
            ));
        }
        self.report.whiteouts += 1;
        let dir = self.parent(parent, raw)?;
        let ctarget = sys::cstr(target).map_err(|e| LayerError::entry(raw, e.to_string()))?;
        let mut rel = parent_rel.clone();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(target);
        sys::remove_all_at(dir.as_raw_fd(), &ctarget)
            .map_err(|e| LayerError::io("removing", self.full(&rel), e))?;
        self.invalidate(&rel);
        if self.opts.whiteouts == Whiteouts::Overlay {
            sys::mknodat(
                dir.as_raw_fd(),
                &ctarget,
                libc::S_IFCHR,
                libc::makedev(0, 0),
            )
            .map_err(|e| LayerError::io("creating whiteout device for", self.full(&rel), e))?;
        }
        Ok(())
    }

    /// Apply mode opaque marker: remove everything below `dir` that this
    /// layer did not create itself (its own entries may precede the marker).
    fn clear_opaque(&self, dir: &OwnedFd, rel: &[u8]) -> Result<(), LayerError> {
        let names =
            sys::read_dir_names(dir).map_err(|e| LayerError::io("listing", self.full(rel), e))?;
        for name in names {
            let mut child = rel.to_vec();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.to_bytes());
            if self.unpacked.contains(&child) {
                let st = sys::fstatat(dir.as_raw_fd(), &name)
                    .map_err(|e| LayerError::io("inspecting", self.full(&child), e))?;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    let sub = sys::openat(
                        dir.as_raw_fd(),
                        &name,
                        libc::O_RDONLY | libc::O_DIRECTORY,
                        0,
                    )
                    .map_err(|e| LayerError::io("opening", self.full(&child), e))?;
                    self.clear_opaque(&sub, &child)?;
                }
            } else {
                sys::remove_all_at(dir.as_raw_fd(), &name)
                    .map_err(|e| LayerError::io("removing", self.full(&child), e))?;
            }
        }
        Ok(())
    }

    fn hardlink(
        &mut self,
        raw: &[u8],
        target: &[u8],
        pfd: i32,
        cname: &CString,
    ) -> Result<(), LayerError> {
        let tcomps = clean_components(target);
        let Some((&tname, tparent)) = tcomps.split_last() else {
            return Err(LayerError::entry(raw, "hard link to the root directory"));
        };
        let tparent_rel = join(tparent);
        let tdir = match sys::openat2_in_root(
            self.root.as_raw_fd(),
            &tparent_rel,
            libc::O_RDONLY | libc::O_DIRECTORY,
        ) {
            Ok(fd) => fd,
            Err(e) => {
                return Err(LayerError::entry(
                    raw,
                    format!(
                        "hard link target {:?} is not inside the layer: {e}",
                        String::from_utf8_lossy(target)
                    ),
                ))
            }
        };
        let ctname = sys::cstr(tname).map_err(|e| LayerError::entry(raw, e.to_string()))?;
        sys::linkat(tdir.as_raw_fd(), &ctname, pfd, cname).map_err(|e| {
            let why = match errno(&e) {
                libc::ENOENT => "does not exist in the destination".to_string(),
                libc::EPERM => "is a directory or may not be linked".to_string(),
                _ => e.to_string(),
            };
            LayerError::entry(
                raw,
                format!(
                    "hard link target {:?} {why}",
                    String::from_utf8_lossy(target)
                ),
            )
        })
    }

    fn finish_dir_times(&mut self) -> Result<(), LayerError> {
        // Deepest first, so setting a parent's time comes after every change
        // inside it.
        let mut times = std::mem::take(&mut self.dir_times);
        times.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.iter().filter(|&&b| b == b'/').count()));
        for (rel, sec, nsec) in times {
            let comps = clean_components(&rel);
            let Some((&name, parent)) = comps.split_last() else {
                continue;
            };
            let Ok(dir) = sys::openat2_in_root(
                self.root.as_raw_fd(),
                &join(parent),
                libc::O_RDONLY | libc::O_DIRECTORY,
            ) else {
                continue; // removed by a later entry of the layer
            };
            let cname = sys::cstr(name).map_err(|e| LayerError::entry(&rel, e.to_string()))?;
            match sys::fstatat_opt(dir.as_raw_fd(), &cname) {
                Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    sys::utimensat_nofollow(dir.as_raw_fd(), &cname, sec, nsec)
                        .map_err(|e| LayerError::io("setting times of", self.full(&rel), e))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The xattrs a layer may carry into a snapshot. `user.overlay.*` is refused:
/// in a lower directory it would be read by overlayfs as its own metadata
/// (fake opaque markers, redirects).
pub(crate) fn xattr_allowed(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.overlay."))
        || name == b"security.capability"
}

/// PAX time: decimal seconds with an optional fraction ("-1.5" allowed).
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    if nsec != 0 && int.starts_with('-') {
        // -1.5 is 1.5 s before the epoch: second -2, +0.5 s.
        return Some((sec - 1, 1_000_000_000 - nsec));
    }
    Some((sec, nsec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_contained() {
        assert_eq!(clean_components(b"../../etc/x"), vec![&b"etc"[..], b"x"]);
        assert_eq!(clean_components(b"/etc/x"), vec![&b"etc"[..], b"x"]);
        assert_eq!(clean_components(b"a/../../b/./c/"), vec![&b"b"[..], b"c"]);
        assert!(clean_components(b"./").is_empty());
        assert!(clean_components(b"..").is_empty());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
    }

    #[test]
    fn xattr_filter() {
        assert!(xattr_allowed(b"user.foo"));
        assert!(xattr_allowed(b"security.capability"));
        assert!(!xattr_allowed(b"user.overlay.opaque"));
        assert!(!xattr_allowed(b"trusted.overlay.opaque"));
        assert!(!xattr_allowed(b"security.selinux"));
    }
}
