//! Turning a build step's result into an OCI layer tar.
//!
//! * [`write_diff_from_upper`]: an overlayfs upper directory (mounted with
//!   `userxattr`) is already the diff; translate overlay whiteouts and opaque
//!   markers to OCI ones and skip directories that were only copied up.
//! * [`write_diff_dirs`]: compare two plain trees (the copy-based fallback).
//! * [`write_tree`]: a whole directory as one layer.
//!
//! Output is deterministic: a depth-first walk with the entries of each
//! directory sorted by the bytes of their tar names (so `.wh.x` sorts as
//! `.wh.x`), directories written with a trailing `/`, an opaque marker right
//! after its directory, and the header rules of [`crate::tarwrite`].

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::LayerError;
use crate::sys;
use crate::tarwrite::{Entry, Kind, TarWriter};
use crate::unpack::xattr_allowed;

/// Options shared by the diff writers.
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Clamp every mtime to at most this (reproducible builds'
    /// `SOURCE_DATE_EPOCH`).
    pub source_date_epoch: Option<i64>,
}

/// What a diff wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiffReport {
    /// Tar entries written (whiteouts and opaque markers included).
    pub entries: u64,
    /// Regular files written with content.
    pub files: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Whiteouts and opaque markers.
    pub whiteouts: u64,
    /// Entries a tar cannot carry (sockets), left out.
    pub skipped: u64,
}

/// Write the overlay upper directory `upper` as an OCI layer. `lowers` are
/// the lower directories of the same mount, topmost first; they decide
/// whether a directory in `upper` changed or was only copied up.
pub fn write_diff_from_upper(
    upper: &Path,
    lowers: &[PathBuf],
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffReport, LayerError> {
    let mut em = Emitter::new(out, opts);
    walk_upper(&mut em, upper, b"", lowers)?;
    em.finish()
}

/// Write what changed from `lower` to `upper` (two plain directory trees) as
/// an OCI layer: new and changed entries, `.wh.` whiteouts for deleted ones.
pub fn write_diff_dirs(
    lower: &Path,
    upper: &Path,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffReport, LayerError> {
    let mut em = Emitter::new(out, opts);
    walk_pair(&mut em, Some(lower), upper, b"")?;
    em.finish()
}

/// Write the whole tree `dir` as a layer (no whiteouts).
pub fn write_tree(
    dir: &Path,
    out: impl Write,
    opts: &DiffOptions,
) -> Result<DiffReport, LayerError> {
    let mut em = Emitter::new(out, opts);
    walk_pair(&mut em, None, dir, b"")?;
    em.finish()
}

struct Emitter<W: Write> {
    tw: TarWriter<W>,
    sde: Option<i64>,
    report: DiffReport,
    /// (dev, ino) of multiply-linked files already written -> their tar path.
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn child_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = rel.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

fn os(rel: &[u8]) -> &std::ffi::OsStr {
    std::ffi::OsStr::from_bytes(rel)
}

fn lstat(p: &Path) -> Result<Metadata, LayerError> {
    fs::symlink_metadata(p).map_err(|e| LayerError::io("inspecting", p, e))
}

fn lstat_opt(p: &Path) -> Result<Option<Metadata>, LayerError> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Ok(None)
        }
        Err(e) => Err(LayerError::io("inspecting", p, e)),
    }
}

/// Directory entry names sorted by bytes.
fn sorted_names(dir: &Path) -> Result<Vec<Vec<u8>>, LayerError> {
    let mut names = Vec::new();
    for ent in fs::read_dir(dir).map_err(|e| LayerError::io("listing", dir, e))? {
        let ent = ent.map_err(|e| LayerError::io("listing", dir, e))?;
        names.push(ent.file_name().into_vec());
    }
    names.sort();
    Ok(names)
}

/// Extended attributes as (name, value), sorted by name.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn is_whiteout_dev(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Xattrs a layer carries (the same set [`crate::unpack`] restores).
fn layer_xattrs(p: &Path) -> Result<Xattrs, LayerError> {
    let mut x = sys::lxattrs(p).map_err(|e| LayerError::io("reading xattrs of", p, e))?;
    x.retain(|(k, _)| xattr_allowed(k));
    Ok(x)
}

/// Xattrs that matter when comparing two versions: all but overlay's own.
fn compare_xattrs(p: &Path) -> Result<Xattrs, LayerError> {
    let mut x = sys::lxattrs(p).map_err(|e| LayerError::io("reading xattrs of", p, e))?;
    x.retain(|(k, _)| !k.starts_with(b"trusted.overlay.") && !k.starts_with(b"user.overlay."));
    Ok(x)
}

impl<W: Write> Emitter<W> {
    fn new(out: W, opts: &DiffOptions) -> Self {
        Emitter {
            tw: TarWriter::new(out),
            sde: opts.source_date_epoch,
            report: DiffReport::default(),
            links: HashMap::new(),
        }
    }

    fn finish(self) -> Result<DiffReport, LayerError> {
        self.tw.finish().map_err(LayerError::Write)?;
        Ok(self.report)
    }

    fn mtime(&self, md: &Metadata) -> i64 {
        match self.sde {
            Some(sde) => md.mtime().min(sde),
            None => md.mtime(),
        }
    }

    fn marker(&mut self, path: Vec<u8>) -> Result<(), LayerError> {
        let e = Entry {
            path,
            kind: Kind::File { size: 0 },
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: vec![],
        };
        self.tw.header(&e).map_err(LayerError::Write)?;
        self.report.entries += 1;
        self.report.whiteouts += 1;
        Ok(())
    }

    /// `.wh.<name>` in directory `rel`.
    fn whiteout(&mut self, rel: &[u8], name: &[u8]) -> Result<(), LayerError> {
        self.marker(child_rel(rel, &[b".wh.", name].concat()))
    }

    /// `.wh..wh..opq` in directory `rel`.
    fn opaque(&mut self, rel: &[u8]) -> Result<(), LayerError> {
        self.marker(child_rel(rel, b".wh..wh..opq"))
    }

    /// Write the entry for `abs` (tar path `rel`), including file content.
    fn emit(&mut self, abs: &Path, rel: &[u8], md: &Metadata) -> Result<(), LayerError> {
        let ft = md.file_type();
        let mut path = rel.to_vec();
        let mut xattrs = Vec::new();
        let kind = if ft.is_dir() {
            path.push(b'/');
            xattrs = layer_xattrs(abs)?;
            Kind::Dir
        } else if ft.is_symlink() {
            let t = fs::read_link(abs).map_err(|e| LayerError::io("reading symlink", abs, e))?;
            Kind::Symlink {
                target: t.into_os_string().into_vec(),
            }
        } else if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key) {
                    let target = first.clone();
                    return self.write_plain(path, Kind::HardLink { target }, md, vec![]);
                }
                self.links.insert(key, rel.to_vec());
            }
            xattrs = layer_xattrs(abs)?;
            Kind::File { size: md.len() }
        } else if ft.is_char_device() || ft.is_block_device() {
            let (major, minor) = (libc::major(md.rdev()), libc::minor(md.rdev()));
            if ft.is_char_device() {
                Kind::Char { major, minor }
            } else {
                Kind::Block { major, minor }
            }
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            tracing::warn!(
                "leaving socket {} out of the layer: tar cannot hold sockets",
                abs.display()
            );
            self.report.skipped += 1;
            return Ok(());
        };
        let size = if let Kind::File { size } = kind {
            Some(size)
        } else {
            None
        };
        self.write_plain(path, kind, md, xattrs)?;
        if let Some(size) = size {
            let f = File::open(abs).map_err(|e| LayerError::io("opening", abs, e))?;
            let n = io::copy(&mut f.take(size), self.tw.data())
                .map_err(|e| LayerError::io("reading", abs, e))?;
            if n != size {
                return Err(LayerError::io(
                    "reading",
                    abs,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("file shrank from {size} to {n} bytes while being archived"),
                    ),
                ));
            }
            self.tw.pad(size).map_err(LayerError::Write)?;
            self.report.files += 1;
            self.report.bytes += size;
        }
        Ok(())
    }

    fn write_plain(
        &mut self,
        path: Vec<u8>,
        kind: Kind,
        md: &Metadata,
        xattrs: Xattrs,
    ) -> Result<(), LayerError> {
        let e = Entry {
            path,
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid() as u64,
            gid: md.gid() as u64,
            mtime: self.mtime(md),
            xattrs,
        };
        self.tw.header(&e).map_err(LayerError::Write)?;
        self.report.entries += 1;
        Ok(())
    }
}

fn is_opaque(p: &Path) -> Result<bool, LayerError> {
    for name in ["user.overlay.opaque", "trusted.overlay.opaque"] {
        match sys::lgetxattr_path(p, name) {
            Ok(Some(v)) if v == b"y" => return Ok(true),
            Ok(_) => {}
            // trusted.* is unreadable without CAP_SYS_ADMIN: not opaque by it.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(LayerError::io("reading overlay xattrs of", p, e)),
        }
    }
    Ok(false)
}

/// The version of `rel` the lowers show (topmost first), honouring whiteouts
/// and opaque directories of higher lowers.
fn find_lower(lowers: &[PathBuf], rel: &[u8]) -> Result<Option<(PathBuf, Metadata)>, LayerError> {
    let comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    for lower in lowers {
        let p = lower.join(os(rel));
        if let Some(md) = lstat_opt(&p)? {
            if is_whiteout_dev(&md) {
                return Ok(None);
            }
            return Ok(Some((p, md)));
        }
        // Absent here: does this lower hide the path from the ones below?
        let mut anc = lower.clone();
        for c in &comps[..comps.len() - 1] {
            anc.push(os(c));
            match lstat_opt(&anc)? {
                None => break,
                Some(md) if !md.is_dir() => return Ok(None),
                Some(_) if is_opaque(&anc)? => return Ok(None),
                Some(_) => {}
            }
        }
    }
    Ok(None)
}

fn same_dir_meta(a: &Path, am: &Metadata, b: &Path, bm: &Metadata) -> Result<bool, LayerError> {
    Ok(am.mode() == bm.mode()
        && am.uid() == bm.uid()
        && am.gid() == bm.gid()
        && am.mtime() == bm.mtime()
        && am.mtime_nsec() == bm.mtime_nsec()
        && compare_xattrs(a)? == compare_xattrs(b)?)
}

fn walk_upper<W: Write>(
    em: &mut Emitter<W>,
    dir: &Path,
    rel: &[u8],
    lowers: &[PathBuf],
) -> Result<(), LayerError> {
    let mut children = Vec::new();
    for name in sorted_names(dir)? {
        let abs = dir.join(os(&name));
        let md = lstat(&abs)?;
        let tar_name = if is_whiteout_dev(&md) {
            [b".wh.", &name[..]].concat()
        } else {
            name.clone()
        };
        children.push((tar_name, name, abs, md));
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, name, abs, md) in children {
        let crel = child_rel(rel, &name);
        if is_whiteout_dev(&md) {
            em.whiteout(rel, &name)?;
        } else if md.is_dir() {
            if is_opaque(&abs)? {
                em.emit(&abs, &crel, &md)?;
                em.opaque(&crel)?;
            } else {
                // BuildKit's rule: a directory whose metadata equals the
                // lower one was copied up only because something below it
                // changed; leave it out, its children carry the change.
                let unchanged = match find_lower(lowers, &crel)? {
                    Some((lp, lmd)) if lmd.is_dir() => same_dir_meta(&abs, &md, &lp, &lmd)?,
                    _ => false,
                };
                if !unchanged {
                    em.emit(&abs, &crel, &md)?;
                }
            }
            walk_upper(em, &abs, &crel, lowers)?;
        } else {
            em.emit(&abs, &crel, &md)?;
        }
    }
    Ok(())
}

/// Byte-compare two files.
fn same_content(a: &Path, b: &Path) -> Result<bool, LayerError> {
    let mut fa = File::open(a).map_err(|e| LayerError::io("opening", a, e))?;
    let mut fb = File::open(b).map_err(|e| LayerError::io("opening", b, e))?;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let na = read_full(&mut fa, &mut ba).map_err(|e| LayerError::io("reading", a, e))?;
        let nb = read_full(&mut fb, &mut bb).map_err(|e| LayerError::io("reading", b, e))?;
        if na != nb || ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Whether a non-directory entry is unchanged between the two trees.
fn same_entry(l: &Path, lm: &Metadata, u: &Path, um: &Metadata) -> Result<bool, LayerError> {
    if lm.file_type() != um.file_type()
        || lm.mode() != um.mode()
        || lm.uid() != um.uid()
        || lm.gid() != um.gid()
        || lm.mtime() != um.mtime()
        || lm.mtime_nsec() != um.mtime_nsec()
    {
        return Ok(false);
    }
    if lm.dev() == um.dev() && lm.ino() == um.ino() {
        return Ok(true);
    }
    let ft = um.file_type();
    if ft.is_symlink() {
        let a = fs::read_link(l).map_err(|e| LayerError::io("reading symlink", l, e))?;
        let b = fs::read_link(u).map_err(|e| LayerError::io("reading symlink", u, e))?;
        return Ok(a == b);
    }
    if ft.is_char_device() || ft.is_block_device() {
        return Ok(lm.rdev() == um.rdev());
    }
    if compare_xattrs(l)? != compare_xattrs(u)? {
        return Ok(false);
    }
    if ft.is_file() {
        if lm.len() != um.len() {
            return Ok(false);
        }
        // Equal size and nanosecond mtime is trusted (like containerd); a
        // whole-second mtime may come from a tool that truncates times, so
        // only the content can tell.
        if um.mtime_nsec() == 0 {
            return same_content(l, u);
        }
    }
    Ok(true)
}

fn walk_pair<W: Write>(
    em: &mut Emitter<W>,
    lower: Option<&Path>,
    upper: &Path,
    rel: &[u8],
) -> Result<(), LayerError> {
    enum Item {
        Gone(Vec<u8>),
        Here(Vec<u8>),
    }
    let unames = sorted_names(upper)?;
    let mut items: Vec<(Vec<u8>, Item)> = Vec::new();
    if let Some(lower) = lower {
        for name in sorted_names(lower)? {
            if unames.binary_search(&name).is_err() {
                items.push(([b".wh.", &name[..]].concat(), Item::Gone(name)));
            }
        }
    }
    items.extend(unames.into_iter().map(|n| (n.clone(), Item::Here(n))));
    items.sort_by(|a, b| a.0.cmp(&b.0));

    for (_, item) in items {
        let name = match item {
            Item::Gone(name) => {
                em.whiteout(rel, &name)?;
                continue;
            }
            Item::Here(name) => name,
        };
        let abs = upper.join(os(&name));
        let crel = child_rel(rel, &name);
        let md = lstat(&abs)?;
        let lpath = lower.map(|l| l.join(os(&name)));
        let lmd = match &lpath {
            Some(p) => lstat_opt(p)?,
            None => None,
        };
        if md.is_dir() {
            let lower_dir = match (&lpath, &lmd) {
                (Some(lp), Some(lm)) if lm.is_dir() => {
                    if !same_dir_meta(lp, lm, &abs, &md)? {
                        em.emit(&abs, &crel, &md)?;
                    }
                    Some(lp.as_path())
                }
                _ => {
                    em.emit(&abs, &crel, &md)?;
                    None
                }
            };
            walk_pair(em, lower_dir, &abs, &crel)?;
        } else {
            let unchanged = match (&lpath, &lmd) {
                (Some(lp), Some(lm)) if !lm.is_dir() => same_entry(lp, lm, &abs, &md)?,
                _ => false,
            };
            if !unchanged {
                em.emit(&abs, &crel, &md)?;
            }
        }
    }
    Ok(())
}
