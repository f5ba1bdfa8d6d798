//! The context directory as a build sees it: ignored paths are invisible,
//! COPY sources resolve like BuildKit's file op.

use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::gomatch;
use crate::ignore::{IgnoreMatcher, MatchInfo};
use crate::statcache::{StatCache, StatKey};
use crate::Error;

/// Linux's limit on symlinks followed while resolving one path.
const MAX_LINKS: usize = 255;

/// The type of a context entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn of(meta: &Metadata) -> FileKind {
        let t = meta.file_type();
        if t.is_dir() {
            FileKind::Dir
        } else if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else {
            FileKind::File
        }
    }
}

/// One resolved COPY/ADD source.
#[derive(Debug, Clone)]
pub struct Source {
    /// The pattern it came from, as given.
    pub pattern: String,
    /// The matched path relative to the context root ("" = the root), before
    /// the final symlink is followed. Its base name is the name a COPY into
    /// a directory gives the copy.
    pub path: PathBuf,
    /// The path actually read, relative to the context root, with every
    /// symlink on the way (including the last component) followed.
    pub resolved: PathBuf,
    /// The type of `resolved` (never `Symlink`).
    pub kind: FileKind,
    /// .dockerignore match state of `resolved`, for walking below it.
    info: Option<MatchInfo>,
}

/// One entry of a walk below a source.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the source ("" for the source itself).
    pub rel_path: PathBuf,
    /// Path relative to the context root.
    pub context_path: PathBuf,
    /// Absolute path on this machine.
    pub abs_path: PathBuf,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Size in bytes (regular files; 0 for directories).
    pub size: u64,
    /// Target of a symlink, verbatim (symlinks below a source are copied as
    /// symlinks, not followed).
    pub link_target: Option<PathBuf>,
    /// Device number of a character or block device.
    pub rdev: u64,
    pub(crate) stat: StatKey,
}

/// A build context directory.
pub struct Context {
    root: PathBuf,
    ignore: IgnoreMatcher,
    pub(crate) cache: Option<Mutex<StatCache>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Opens `dir` as a build context. `ignore` is usually
    /// [`IgnoreMatcher::load`]; with a stat cache, unchanged files are not
    /// re-read by [`Context::checksum`] (save it with
    /// [`Context::save_stat_cache`]).
    pub fn open(
        dir: &Path,
        ignore: IgnoreMatcher,
        stat_cache: Option<StatCache>,
    ) -> Result<Context, Error> {
        let root = std::fs::canonicalize(dir).map_err(|e| Error::BadContext {
            path: dir.to_path_buf(),
            reason: format!("{e} (pass an existing directory as the build context)"),
        })?;
        let meta = std::fs::metadata(&root).map_err(|e| Error::io(&root, e))?;
        if !meta.is_dir() {
            return Err(Error::BadContext {
                path: dir.to_path_buf(),
                reason: "not a directory (the build context must be a directory)".into(),
            });
        }
        let cache = stat_cache.map(|mut c| {
            c.bind_root(root.as_os_str().as_bytes());
            Mutex::new(c)
        });
        Ok(Context {
            root,
            ignore,
            cache,
        })
    }

    /// The canonical context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The .dockerignore patterns in effect.
    pub fn ignore(&self) -> &IgnoreMatcher {
        &self.ignore
    }

    /// Writes the stat cache (if any) back to its file.
    pub fn save_stat_cache(&self) -> Result<(), Error> {
        match &self.cache {
            Some(c) => c.lock().unwrap_or_else(|e| e.into_inner()).save(),
            None => Ok(()),
        }
    }

    /// Gives the stat cache back.
    pub fn into_stat_cache(self) -> Option<StatCache> {
        self.cache
            .map(|c| c.into_inner().unwrap_or_else(|e| e.into_inner()))
    }

    /// Resolves COPY/ADD source patterns like BuildKit:
    ///
    /// * paths are relative to the context root; a leading `/` is the root;
    /// * a component with `*`, `?` or `[...]` (Go `filepath.Match`, which
    ///   never matches `/`) starts the wildcard part: everything before it is
    ///   resolved as a plain path, the rest is matched against the entries
    ///   below, in name order, without descending into symlinked directories;
    /// * a wildcard that matches nothing contributes no sources (BuildKit
    ///   copies with `AllowEmptyWildcard`), but its directory part must exist;
    /// * a plain path that does not exist, or is excluded by .dockerignore,
    ///   is [`Error::NotFound`];
    /// * symlinks on the way and the source itself are followed (inside the
    ///   context: an absolute target is relative to the context root);
    ///   symlinks below a source directory are left alone;
    /// * leaving the context is [`Error::OutsideContext`].
    pub fn resolve_sources(&self, patterns: &[String]) -> Result<Vec<Source>, Error> {
        let mut out = Vec::new();
        for pattern in patterns {
            self.resolve_one(pattern, &mut out)?;
        }
        Ok(out)
    }

    fn resolve_one(&self, pattern: &str, out: &mut Vec<Source>) -> Result<(), Error> {
        let comps = lexical_components(pattern)?;
        let split = comps.iter().position(|c| gomatch::has_wildcard(c));
        let Some(split) = split else {
            let r = self.resolve_path(pattern, &comps, true)?;
            out.push(self.make_source(pattern, join(&comps), r));
            return Ok(());
        };
        let base = self.resolve_path(pattern, &comps[..split], true)?;
        let wild = &comps[split..];
        let mut glob = Vec::new();
        for (i, c) in wild.iter().enumerate() {
            if i > 0 {
                glob.push(b'/');
            }
            glob.extend_from_slice(c);
        }
        if gomatch::validate(&glob).is_err() {
            return Err(Error::InvalidPattern {
                pattern: pattern.to_string(),
                origin: "COPY source".into(),
                reason: "syntax error in pattern".into(),
            });
        }
        if base.kind != FileKind::Dir {
            return Ok(());
        }
        let mut matches = Vec::new();
        self.match_below(
            &base.comps,
            &base.info,
            &glob,
            wild.len(),
            &[],
            &mut matches,
        )?;
        for rel in matches {
            let mut comps = base.comps.clone();
            comps.extend(rel);
            let r = self.resolve_path(pattern, &comps, true)?;
            out.push(self.make_source(pattern, join(&comps), r));
        }
        Ok(())
    }

    fn make_source(&self, pattern: &str, path: Vec<u8>, r: Resolved) -> Source {
        Source {
            pattern: pattern.to_string(),
            path: PathBuf::from(OsString::from_vec(path)),
            resolved: PathBuf::from(OsString::from_vec(join(&r.comps))),
            kind: r.kind,
            info: r.info,
        }
    }

    /// Collects visible entries below `dir` whose path relative to the
    /// wildcard base matches `glob` (fsutil's `resolveWildcards`).
    fn match_below(
        &self,
        dir: &[Vec<u8>],
        info: &Option<MatchInfo>,
        glob: &[u8],
        depth_left: usize,
        rel: &[Vec<u8>],
        out: &mut Vec<Vec<Vec<u8>>>,
    ) -> Result<(), Error> {
        if depth_left == 0 {
            return Ok(());
        }
        for child in self.visible_children(dir, info.as_deref())? {
            let mut crel = rel.to_vec();
            crel.push(child.name.clone());
            let relpath = join(&crel);
            if gomatch::match_path(glob, &relpath).unwrap_or(false) {
                out.push(crel);
                continue;
            }
            if child.kind == FileKind::Dir {
                let mut cdir = dir.to_vec();
                cdir.push(child.name);
                self.match_below(&cdir, &Some(child.info), glob, depth_left - 1, &crel, out)?;
            }
        }
        Ok(())
    }

    /// Children of a visible directory that are visible themselves (an
    /// excluded directory is visible if something inside is re-included),
    /// sorted by name.
    fn visible_children(
        &self,
        dir: &[Vec<u8>],
        info: Option<&[bool]>,
    ) -> Result<Vec<Child>, Error> {
        let mut out = Vec::new();
        for name in read_dir_sorted(&self.abs(dir))? {
            let mut comps = dir.to_vec();
            comps.push(name.clone());
            let abs = self.abs(&comps);
            let Some(meta) = lstat(&abs)? else { continue };
            let kind = FileKind::of(&meta);
            let rel = join(&comps);
            let d = self.ignore.decide(&rel, info, kind == FileKind::Dir, true);
            let visible = !d.excluded
                || (kind == FileKind::Dir
                    && !d.skip_dir
                    && self.has_visible_descendant(&comps, &d.info)?);
            if visible {
                out.push(Child {
                    name,
                    kind,
                    info: d.info,
                });
            }
        }
        Ok(out)
    }

    fn has_visible_descendant(&self, dir: &[Vec<u8>], info: &[bool]) -> Result<bool, Error> {
        Ok(!self.visible_children(dir, Some(info))?.is_empty())
    }

    /// Resolves a lexically clean component list, following symlinks
    /// (all of them, or all but the last).
    fn resolve_path(
        &self,
        pattern: &str,
        comps: &[Vec<u8>],
        follow_last: bool,
    ) -> Result<Resolved, Error> {
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut infos: Vec<MatchInfo> = Vec::new();
        let mut todo: std::collections::VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0;
        let mut kind = FileKind::Dir;
        let not_found = |cur: &[Vec<u8>], c: &[u8]| {
            let mut p = join(cur);
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(c);
            Error::NotFound {
                pattern: pattern.to_string(),
                path: String::from_utf8_lossy(&p).into_owned(),
            }
        };
        while let Some(c) = todo.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                if cur.pop().is_none() {
                    return Err(Error::OutsideContext {
                        pattern: pattern.to_string(),
                    });
                }
                infos.pop();
                kind = FileKind::Dir;
                continue;
            }
            let is_last = todo.is_empty();
            let mut next = cur.clone();
            next.push(c.clone());
            let abs = self.abs(&next);
            let Some(meta) = lstat(&abs)? else {
                return Err(not_found(&cur, &c));
            };
            let k = FileKind::of(&meta);
            let rel = join(&next);
            let d = self.ignore.decide(
                &rel,
                infos.last().map(|v| v.as_slice()),
                k == FileKind::Dir,
                true,
            );
            let visible = !d.excluded
                || (k == FileKind::Dir
                    && !d.skip_dir
                    && self.has_visible_descendant(&next, &d.info)?);
            if !visible {
                return Err(not_found(&cur, &c));
            }
            if k == FileKind::Symlink && (!is_last || follow_last) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::TooManyLinks {
                        pattern: pattern.to_string(),
                    });
                }
                let target = std::fs::read_link(&abs).map_err(|e| Error::io(&abs, e))?;
                let target = target.as_os_str().as_bytes();
                if target.first() == Some(&b'/') {
                    cur.clear();
                    infos.clear();
                    kind = FileKind::Dir;
                }
                for t in target.split(|&b| b == b'/').rev() {
                    todo.push_front(t.to_vec());
                }
                continue;
            }
            if !is_last && k != FileKind::Dir {
                return Err(not_found(&cur, &c));
            }
            cur.push(c);
            infos.push(d.info);
            kind = k;
        }
        Ok(Resolved {
            info: infos.pop(),
            comps: cur,
            kind,
        })
    }

    fn abs(&self, comps: &[Vec<u8>]) -> PathBuf {
        let mut p = self.root.clone();
        for c in comps {
            p.push(OsStr::from_bytes(c));
        }
        p
    }

    /// Every entry a copy of `source` reads: the source itself, then (for a
    /// directory) everything below it that .dockerignore leaves visible,
    /// depth first, names in byte order, each directory before its contents.
    pub fn walk<'a>(&'a self, source: &Source) -> Walk<'a> {
        self.walk_excluding(source, &EMPTY)
    }

    /// [`Context::walk`] that also leaves out what `excludes` (the patterns
    /// of `COPY --exclude`, matched against paths relative to the source)
    /// excludes.
    pub fn walk_excluding<'a>(&'a self, source: &Source, excludes: &'a IgnoreMatcher) -> Walk<'a> {
        Walk {
            ctx: self,
            excludes,
            start: Some(source.clone()),
            stack: Vec::new(),
            queue: std::collections::VecDeque::new(),
            failed: false,
        }
    }
}

static EMPTY: IgnoreMatcher = IgnoreMatcher::const_empty();

struct Child {
    name: Vec<u8>,
    kind: FileKind,
    info: MatchInfo,
}

struct Resolved {
    comps: Vec<Vec<u8>>,
    kind: FileKind,
    info: Option<MatchInfo>,
}

/// Splits a source pattern into clean components relative to the root,
/// refusing `..` that climbs above it.
fn lexical_components(pattern: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in pattern.as_bytes().split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(Error::OutsideContext {
                        pattern: pattern.to_string(),
                    });
                }
            }
            _ => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    out
}

fn lstat(path: &Path) -> Result<Option<Metadata>, Error> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(20) => Ok(None), // ENOTDIR
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(dir, e))?;
        names.push(e.file_name().into_vec());
    }
    names.sort_unstable();
    Ok(names)
}

fn stat_key(meta: &Metadata) -> StatKey {
    StatKey {
        size: meta.size(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        ctime_ns: meta
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.ctime_nsec()),
        ino: meta.ino(),
        mode: meta.mode(),
    }
}

fn make_entry(
    abs: PathBuf,
    ctx_rel: &[u8],
    src_rel: &[u8],
    meta: &Metadata,
    kind: FileKind,
) -> Result<Entry, Error> {
    let link_target = if kind == FileKind::Symlink {
        Some(std::fs::read_link(&abs).map_err(|e| Error::io(&abs, e))?)
    } else {
        None
    };
    Ok(Entry {
        rel_path: PathBuf::from(OsStr::from_bytes(src_rel)),
        context_path: PathBuf::from(OsStr::from_bytes(ctx_rel)),
        abs_path: abs,
        kind,
        mode: meta.mode() & 0o7777,
        size: if kind == FileKind::File {
            meta.size()
        } else {
            0
        },
        link_target,
        rdev: if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
            meta.rdev()
        } else {
            0
        },
        stat: stat_key(meta),
    })
}

struct Frame {
    abs: PathBuf,
    ctx_rel: Vec<u8>,
    src_rel: Vec<u8>,
    ign_info: Option<MatchInfo>,
    exc_info: Option<MatchInfo>,
    names: Vec<Vec<u8>>,
    next: usize,
    /// The directory's own entry while it is excluded and not yet known to
    /// hold anything visible.
    pending: Option<Entry>,
}

/// Iterator over the entries below one source; see [`Context::walk`].
pub struct Walk<'a> {
    ctx: &'a Context,
    excludes: &'a IgnoreMatcher,
    start: Option<Source>,
    stack: Vec<Frame>,
    queue: std::collections::VecDeque<Entry>,
    failed: bool,
}

impl Walk<'_> {
    fn begin(&mut self, source: Source) -> Result<(), Error> {
        let ctx_rel = source.resolved.as_os_str().as_bytes().to_vec();
        let abs = if ctx_rel.is_empty() {
            self.ctx.root.clone()
        } else {
            self.ctx.root.join(&source.resolved)
        };
        let meta = std::fs::symlink_metadata(&abs).map_err(|e| Error::io(&abs, e))?;
        let kind = FileKind::of(&meta);
        let entry = make_entry(abs.clone(), &ctx_rel, b"", &meta, kind)?;
        self.queue.push_back(entry);
        if kind == FileKind::Dir {
            self.push_frame(abs, ctx_rel, Vec::new(), source.info, None, None)?;
        }
        Ok(())
    }

    fn push_frame(
        &mut self,
        abs: PathBuf,
        ctx_rel: Vec<u8>,
        src_rel: Vec<u8>,
        ign_info: Option<MatchInfo>,
        exc_info: Option<MatchInfo>,
        pending: Option<Entry>,
    ) -> Result<(), Error> {
        let names = read_dir_sorted(&abs)?;
        self.stack.push(Frame {
            abs,
            ctx_rel,
            src_rel,
            ign_info,
            exc_info,
            names,
            next: 0,
            pending,
        });
        Ok(())
    }

    /// Advances the walk until something is queued or it ends.
    fn step(&mut self) -> Result<(), Error> {
        while self.queue.is_empty() {
            let Some(top) = self.stack.last_mut() else {
                return Ok(());
            };
            if top.next == top.names.len() {
                self.stack.pop();
                continue;
            }
            let name = std::mem::take(&mut top.names[top.next]);
            top.next += 1;
            let abs = top.abs.join(OsStr::from_bytes(&name));
            let ctx_rel = child_path(&top.ctx_rel, &name);
            let src_rel = child_path(&top.src_rel, &name);
            let ign_parent = top.ign_info.clone();
            let exc_parent = top.exc_info.clone();
            let Some(meta) = lstat(&abs)? else { continue };
            let kind = FileKind::of(&meta);
            let is_dir = kind == FileKind::Dir;
            let ign = self
                .ctx
                .ignore
                .decide(&ctx_rel, ign_parent.as_deref(), is_dir, true);
            let exc = self
                .excludes
                .decide(&src_rel, exc_parent.as_deref(), is_dir, false);
            let excluded = ign.excluded || exc.excluded;
            let skip = (ign.excluded && ign.skip_dir) || (exc.excluded && exc.skip_dir);
            if excluded && (!is_dir || skip) {
                continue;
            }
            let entry = make_entry(abs.clone(), &ctx_rel, &src_rel, &meta, kind)?;
            if !excluded {
                // Directories that were excluded but hold this entry appear
                // first, so a copy can create them.
                for f in self.stack.iter_mut() {
                    if let Some(p) = f.pending.take() {
                        self.queue.push_back(p);
                    }
                }
                self.queue.push_back(entry);
                if is_dir {
                    self.push_frame(abs, ctx_rel, src_rel, Some(ign.info), Some(exc.info), None)?;
                }
            } else {
                self.push_frame(
                    abs,
                    ctx_rel,
                    src_rel,
                    Some(ign.info),
                    Some(exc.info),
                    Some(entry),
                )?;
            }
        }
        Ok(())
    }
}

fn child_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + name.len() + 1);
    p.extend_from_slice(parent);
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Iterator for Walk<'_> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Some(src) = self.start.take() {
            if let Err(e) = self.begin(src) {
                self.failed = true;
                return Some(Err(e));
            }
        }
        if let Err(e) = self.step() {
            self.failed = true;
            return Some(Err(e));
        }
        self.queue.pop_front().map(Ok)
    }
}
