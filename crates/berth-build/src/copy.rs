//! COPY and ADD: Docker's copy semantics on top of [`fsops`], reading from
//! the build context or another stage's root and writing into the stage's
//! root, both confined to their roots.
//!
//! - A directory source copies its *contents* into the destination.
//! - A file source lands at `dest/<name>` when the destination is a
//!   directory (ends with `/`, already is one, or there are several
//!   sources), else at `dest` itself.
//! - Parents of the destination are created (0755, owned by the `--chown`
//!   user or root).
//! - Symlinks are copied as links; only a source path itself is followed.
//! - Context files are owned by root (or `--chown`); files from a stage or
//!   image keep their owner unless `--chown` says otherwise.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use crate::fsops::{self, Meta, Owner};

/// Options shared by every entry of one COPY.
pub struct CopyOptions<'a> {
    pub owner: Owner,
    pub chmod: Option<Chmod>,
    /// `true` for paths to skip (the context's `.dockerignore`, `--exclude`);
    /// called with the path relative to the source root.
    pub skip: &'a (dyn Fn(&Path) -> bool + Sync),
    /// ADD: extract a local tar archive instead of copying it.
    pub extract_archives: bool,
    /// Link context files from the content-addressed file cache instead of
    /// copying them (only when writing to a plain directory on the root's
    /// filesystem: a layer's upper dir, never through an overlay mount).
    pub file_cache: Option<&'a FileCache>,
}

/// `--chmod`: an octal mode (BuildKit keeps only its permission bits) or,
/// as BuildKit's dockerfile frontend >= 1.6 accepts, a symbolic mode of
/// chmod(1) (`u+x,g-w`, `a=r`, `go=u`, `+X`), applied to each copied
/// entry's own mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<ModeClause>),
}

/// One `who op perms` action of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeClause {
    /// Bits of u/g/o (and their setuid/setgid/sticky) the clause touches.
    who: u32,
    op: char,
    perm: ModePerm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ModePerm {
    /// `rwxst` bits for every class (masked by `who` when applied), and `X`.
    Bits { bits: u32, cond_x: bool },
    /// `=u`, `+g`, `-o`: the permissions one class has now.
    Copy(char),
}

impl Chmod {
    /// Parses a `--chmod` value: octal digits, else a symbolic mode.
    pub fn parse(s: &str) -> Result<Chmod, String> {
        let bad = || {
            format!(
                "invalid --chmod={s}: use an octal mode like 755 or a symbolic mode like u+x,g-w"
            )
        };
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let m = u32::from_str_radix(s, 8).map_err(|_| bad())?;
            if m > 0o7777 {
                return Err(bad());
            }
            // The Docker engine's BuildKit applies only the permission bits
            // of an octal --chmod (setuid, setgid and sticky are dropped).
            return Ok(Chmod::Octal(m & 0o777));
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let mut chars = part.chars().peekable();
            let mut who = 0;
            while let Some(&c) = chars.peek() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => break,
                };
                chars.next();
            }
            if who == 0 {
                // No class: all of them (umask 0, as BuildKit applies it).
                who = 0o7777;
            }
            let mut any = false;
            while let Some(op) = chars.next() {
                if !matches!(op, '+' | '-' | '=') {
                    return Err(bad());
                }
                any = true;
                let perm = match chars.peek() {
                    Some(&c @ ('u' | 'g' | 'o')) => {
                        chars.next();
                        ModePerm::Copy(c)
                    }
                    _ => {
                        let (mut bits, mut cond_x) = (0, false);
                        while let Some(&c) = chars.peek() {
                            match c {
                                'r' => bits |= 0o444,
                                'w' => bits |= 0o222,
                                'x' => bits |= 0o111,
                                'X' => cond_x = true,
                                's' => bits |= 0o6000,
                                't' => bits |= 0o1000,
                                _ => break,
                            }
                            chars.next();
                        }
                        ModePerm::Bits { bits, cond_x }
                    }
                };
                clauses.push(ModeClause { who, op, perm });
            }
            if !any {
                return Err(bad());
            }
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The new permission bits of an entry whose bits are `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let clauses = match self {
            Chmod::Octal(m) => return *m,
            Chmod::Symbolic(c) => c,
        };
        let mut m = mode & 0o7777;
        for c in clauses {
            let bits = match c.perm {
                ModePerm::Bits { bits, cond_x } => {
                    let x = cond_x && (is_dir || m & 0o111 != 0);
                    bits | if x { 0o111 } else { 0 }
                }
                ModePerm::Copy(from) => {
                    let v = match from {
                        'u' => (m >> 6) & 7,
                        'g' => (m >> 3) & 7,
                        _ => m & 7,
                    };
                    v * 0o111
                }
            };
            let bits = bits & c.who;
            match c.op {
                '+' => m |= bits,
                '-' => m &= !bits,
                _ => {
                    // `=` resets the classes' rwx (and their special bit).
                    m = (m & !c.who) | bits;
                }
            }
        }
        m
    }
}

/// `COPY --parents`: the part of a matched source path kept under the
/// destination. The whole relative path, or what follows a `/./` pivot in
/// the pattern (`COPY --parents ./src/./app/*.go /dst/` keeps `app/`). A
/// file keeps its parent directories (its name is added by the copy); a
/// directory keeps itself (its contents are copied into it).
pub fn parents_rel(pattern: &str, matched: &Path, is_dir: bool) -> PathBuf {
    let p = pattern.trim_start_matches('/');
    let p = p.strip_prefix("./").unwrap_or(p);
    let skip = match p.find("/./") {
        Some(i) => Path::new(&p[..i])
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count(),
        None => 0,
    };
    let kept: PathBuf = matched
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .skip(skip)
        .collect();
    if is_dir {
        kept
    } else {
        kept.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

/// Context files by content and metadata, under `<root>/buildcache/files/`,
/// hard-linked into the upper directories of COPY steps. A rebuild after a
/// small context change then copies only what changed. Entries are
/// immutable (every later write to a layer goes through an overlay copy-up);
/// the key includes the destination path, so two paths of one layer never
/// share an inode (the layer would otherwise record a hardlink).
#[derive(Debug, Clone)]
pub struct FileCache {
    dir: PathBuf,
}

impl FileCache {
    pub fn open(root: &Path) -> io::Result<FileCache> {
        let dir = root.join("buildcache").join("files");
        std::fs::create_dir_all(&dir)?;
        Ok(FileCache { dir })
    }

    /// Places `name` in `parent` with the content of `source` (whose sha256
    /// the stat cache says is `sha`) and `meta`: a link to the cached copy,
    /// made (and verified against `sha`) on first use.
    fn place(
        &self,
        source: &Path,
        sha: &[u8; 32],
        key_path: &Path,
        parent: RawFd,
        name: &OsStr,
        meta: Meta,
    ) -> io::Result<()> {
        use sha2::{Digest as _, Sha256};
        let key = {
            let mut h = Sha256::new();
            h.update(sha);
            h.update(format!(
                ":{:o}:{}:{}:{}.{}:",
                meta.mode, meta.uid, meta.gid, meta.mtime.tv_sec, meta.mtime.tv_nsec
            ));
            h.update(key_path.as_os_str().as_encoded_bytes());
            crate::cache::hex(&h.finalize())
        };
        let cached = self.dir.join(&key);
        let link = |from: &Path| -> io::Result<()> {
            let src = std::ffi::CString::new(from.as_os_str().as_encoded_bytes())
                .map_err(io::Error::other)?;
            let dst = std::ffi::CString::new(name.as_encoded_bytes()).map_err(io::Error::other)?;
            // SAFETY: plain linkat with valid C strings.
            if unsafe { libc::linkat(libc::AT_FDCWD, src.as_ptr(), parent, dst.as_ptr(), 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        match link(&cached) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        // First use: copy into the cache, verifying the content on the way.
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(&self.dir)?;
        let mut input = File::from(openat_nofollow(
            libc::AT_FDCWD,
            source.as_os_str(),
            libc::O_RDONLY,
        )?);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut out = tmp.as_file();
        loop {
            let n = io::Read::read(&mut input, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            io::Write::write_all(&mut out, &buf[..n])?;
        }
        if hasher.finalize().as_slice() != sha {
            return Err(io::Error::other(format!(
                "{} changed while the build read it; run the build again",
                source.display()
            )));
        }
        let fd = tmp.as_file().as_raw_fd();
        // SAFETY: plain syscalls on a descriptor we own.
        unsafe {
            if libc::fchown(fd, meta.uid, meta.gid) < 0 || libc::fchmod(fd, meta.mode & 0o7777) < 0
            {
                return Err(io::Error::last_os_error());
            }
            let times = [meta.mtime, meta.mtime];
            libc::futimens(fd, times.as_ptr());
        }
        // Another build may have made the same entry meanwhile: theirs is equal.
        if let Err(e) = tmp.persist_noclobber(&cached) {
            if !cached.exists() {
                return Err(e.error);
            }
        }
        link(&cached)
    }
}

fn stat_fd(fd: RawFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstatat_nofollow(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn openat_nofollow(dir: RawFd, name: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let fd = unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn readlinkat(dir: RawFd, name: &OsStr) -> io::Result<PathBuf> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(
        <std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(buf),
    ))
}

fn meta_of(st: &libc::stat, opts: &CopyOptions<'_>) -> Meta {
    let (uid, gid) = opts.owner.ids(st.st_uid, st.st_gid);
    let mode = match &opts.chmod {
        Some(c) => c.apply(st.st_mode & 0o7777, st.st_mode & S_IFMT == libc::S_IFDIR),
        None => st.st_mode & 0o7777,
    };
    Meta {
        mode,
        uid,
        gid,
        mtime: libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    }
}

const S_IFMT: u32 = libc::S_IFMT;

/// Where a file source lands: `dest/<name>` when the destination is a
/// directory, else `dest` itself; a destination that already is a
/// directory receives the file inside. Creates the parent directories
/// (owned `uid:gid`) and returns the directory fd and the file name.
fn file_target(
    dst_root: RawFd,
    dest: &Path,
    dest_is_dir: bool,
    name: std::ffi::OsString,
    uid: u32,
    gid: u32,
) -> io::Result<(OwnedFd, std::ffi::OsString)> {
    let (dir, file_name) = if dest_is_dir {
        (dest.to_path_buf(), name.clone())
    } else {
        let parent = dest.parent().unwrap_or(Path::new("/")).to_path_buf();
        let n = dest.file_name().map(|n| n.to_os_string()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid destination {}", dest.display()),
            )
        })?;
        (parent, n)
    };
    let target_dir = fsops::mkdir_all(dst_root, &dir, uid, gid)?;
    match fsops::lstat_in_root(dst_root, &dir.join(&file_name))? {
        Some(t) if t.st_mode & S_IFMT == libc::S_IFDIR && !dest_is_dir => {
            let inner = fsops::open_in_root(
                dst_root,
                &dir.join(&file_name),
                libc::O_DIRECTORY | libc::O_RDONLY,
            )?;
            Ok((inner, name))
        }
        _ => Ok((target_dir, file_name)),
    }
}

/// [`copy_source`] as it is: owners, modes and times kept, nothing skipped,
/// archives not extracted (seeding cache mounts, private copies of binds).
pub fn copy_verbatim(
    src_root: RawFd,
    src_rel: &Path,
    dst_root: RawFd,
    dest: &Path,
    dest_is_dir: bool,
) -> io::Result<()> {
    let skip = |_: &Path| false;
    let opts = CopyOptions {
        owner: fsops::Owner::Preserve,
        chmod: None,
        skip: &skip,
        extract_archives: false,
        file_cache: None,
    };
    copy_source(src_root, src_rel, dst_root, dest, dest_is_dir, &opts)
}

/// Copies one resolved source (`src_rel` inside the root `src_root`) to
/// `dest` inside the root `dst_root`. `dest_is_dir` is decided by the
/// caller from the instruction (trailing `/`, several sources, existing
/// directory).
pub fn copy_source(
    src_root: RawFd,
    src_rel: &Path,
    dst_root: RawFd,
    dest: &Path,
    dest_is_dir: bool,
    opts: &CopyOptions<'_>,
) -> io::Result<()> {
    // The source path itself is followed (inside its root).
    let src = fsops::open_in_root(src_root, src_rel, libc::O_RDONLY | libc::O_NONBLOCK)
        .or_else(|_| fsops::open_in_root(src_root, src_rel, libc::O_PATH))?;
    let st = stat_fd(src.as_raw_fd())?;
    let (owner_uid, owner_gid) = match opts.owner {
        Owner::Fixed(u, g) => (u, g),
        Owner::Preserve => (0, 0),
    };
    match st.st_mode & S_IFMT {
        libc::S_IFDIR => {
            let dfd = fsops::mkdir_all(dst_root, dest, owner_uid, owner_gid)?;
            copy_dir_contents(src.as_raw_fd(), src_rel, dfd.as_raw_fd(), opts)
        }
        libc::S_IFREG => {
            if opts.extract_archives && is_archive(src.as_raw_fd())? {
                let dfd = fsops::mkdir_all(dst_root, dest, owner_uid, owner_gid)?;
                return extract_archive(src.as_raw_fd(), dfd.as_raw_fd());
            }
            let name = src_rel
                .file_name()
                .map(|n| n.to_os_string())
                .unwrap_or_else(|| "file".into());
            let (target_dir, file_name) =
                file_target(dst_root, dest, dest_is_dir, name, owner_uid, owner_gid)?;
            let mut f = File::from(src);
            fsops::write_file(
                target_dir.as_raw_fd(),
                &file_name,
                &mut f,
                meta_of(&st, opts),
            )
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file or directory", src_rel.display()),
        )),
    }
}

fn copy_dir_contents(
    src_dir: RawFd,
    src_rel: &Path,
    dst_dir: RawFd,
    opts: &CopyOptions<'_>,
) -> io::Result<()> {
    for name in fsops::list_dir(src_dir)? {
        let rel = src_rel.join(&name);
        if (opts.skip)(&rel) {
            continue;
        }
        let st = fstatat_nofollow(src_dir, &name)?;
        let meta = meta_of(&st, opts);
        match st.st_mode & S_IFMT {
            libc::S_IFDIR => {
                let sub_src = openat_nofollow(src_dir, &name, libc::O_DIRECTORY | libc::O_RDONLY)?;
                let sub_dst = fsops::write_dir(dst_dir, &name, meta)?;
                copy_dir_contents(sub_src.as_raw_fd(), &rel, sub_dst.as_raw_fd(), opts)?;
                fsops::set_dir_mtime(sub_dst.as_raw_fd(), meta.mtime)?;
            }
            libc::S_IFREG => {
                let f = openat_nofollow(src_dir, &name, libc::O_RDONLY)?;
                let mut f = File::from(f);
                fsops::write_file(dst_dir, &name, &mut f, meta)?;
            }
            libc::S_IFLNK => {
                let target = readlinkat(src_dir, &name)?;
                fsops::write_symlink(dst_dir, &name, &target, meta)?;
            }
            _ => {
                // Sockets, fifos and devices in a context or stage are skipped
                // (BuildKit copies fifos; nothing real depends on it).
                tracing::debug!("skipping special file {}", rel.display());
            }
        }
    }
    Ok(())
}

/// Whether a file is a tar archive (plain, gzip, bzip2, xz or zstd), as
/// ADD decides by content, not by name.
fn is_archive(fd: RawFd) -> io::Result<bool> {
    Ok(open_tar(fd)?.is_some())
}

/// The decompressed tar stream of `src`, or `None` when its content is
/// not a tar archive: BuildKit extracts only what decompresses to a tar
/// and copies anything else (e.g. a gzipped text file) as it is.
fn open_tar(src: RawFd) -> io::Result<Option<Box<dyn io::Read + Send>>> {
    let dup = unsafe { libc::fcntl(src, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut f = unsafe { File::from_raw_fd(dup) };
    io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
    let mut magic = [0u8; 6];
    let n = io::Read::read(&mut f, &mut magic)?;
    io::Seek::seek(&mut f, io::SeekFrom::Start(0))?;
    let magic = &magic[..n];
    // gzip and zstd are berth-layer's; bzip2 and xz are ADD's alone.
    let mut reader: Box<dyn io::Read + Send> = if magic.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(io::BufReader::new(f)))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        // lzma-rs decodes into a writer, not as a reader: spool the tar
        // to an unlinked temporary file.
        let mut tar = tempfile::tempfile()?;
        if lzma_rs::xz_decompress(&mut io::BufReader::new(f), &mut tar).is_err() {
            return Ok(None);
        }
        io::Seek::seek(&mut tar, io::SeekFrom::Start(0))?;
        Box::new(tar)
    } else {
        berth_layer::decompress(io::BufReader::new(f))?
    };
    let mut head = vec![0u8; 512];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            // Corrupt compressed data: not an archive we can extract.
            Err(_) => return Ok(None),
        }
    }
    if got < 512 || !is_tar_header(&head) {
        return Ok(None);
    }
    Ok(Some(Box::new(io::Read::chain(
        io::Cursor::new(head),
        reader,
    ))))
}

/// A tar header block: POSIX/GNU magic, or a valid v7 header checksum.
fn is_tar_header(h: &[u8]) -> bool {
    if h.len() < 512 {
        return false;
    }
    if &h[257..262] == b"ustar" {
        return true;
    }
    let field = String::from_utf8_lossy(&h[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want && h[0] != 0
}

fn extract_archive(src: RawFd, dst_dir: RawFd) -> io::Result<()> {
    let Some(reader) = open_tar(src)? else {
        return Err(io::Error::other("ADD: not a tar archive"));
    };
    let dest = PathBuf::from(format!("/proc/self/fd/{dst_dir}"));
    let opts = berth_layer::UnpackOptions::new(berth_layer::Whiteouts::Apply);
    berth_layer::unpack(reader, &dest, &opts)
        .map(|_| ())
        .map_err(|e| io::Error::other(format!("ADD: extracting archive: {e}")))
}

/// Copies one source of the build context, walking it with the context's
/// own rules (`.dockerignore` with its re-include exceptions, `--exclude`).
/// Context files are read by absolute path without following symlinks;
/// everything is written confined to `dst_root`.
pub fn copy_context_source(
    ctx: &berth_context::Context,
    source: &berth_context::Source,
    excludes: &berth_context::IgnoreMatcher,
    dst_root: RawFd,
    dest: &Path,
    dest_is_dir: bool,
    opts: &CopyOptions<'_>,
) -> io::Result<()> {
    use berth_context::FileKind;
    use std::collections::HashMap;
    let (owner_uid, owner_gid) = match opts.owner {
        Owner::Fixed(u, g) => (u, g),
        Owner::Preserve => (0, 0),
    };
    let fix = |mode: u32, is_dir: bool| Meta {
        mode: opts.chmod.as_ref().map_or(mode, |c| c.apply(mode, is_dir)),
        uid: owner_uid,
        gid: owner_gid,
        mtime: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    let with_mtime = |mut m: Meta, path: &Path| {
        if let Ok(md) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::MetadataExt;
            m.mtime = libc::timespec {
                tv_sec: md.mtime(),
                tv_nsec: md.mtime_nsec(),
            };
        }
        m
    };
    let err = |e: berth_context::Error| io::Error::other(e.to_string());
    if source.kind == FileKind::File {
        if opts.extract_archives {
            let f = File::open(ctx.root().join(&source.resolved))?;
            if is_archive(f.as_raw_fd())? {
                let dfd = fsops::mkdir_all(dst_root, dest, owner_uid, owner_gid)?;
                return extract_archive(f.as_raw_fd(), dfd.as_raw_fd());
            }
        }
        let name = source
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "file".into());
        let abs = ctx.root().join(&source.resolved);
        let mut f = File::from(openat_nofollow(
            libc::AT_FDCWD,
            abs.as_os_str(),
            libc::O_RDONLY,
        )?);
        let mode = stat_fd(f.as_raw_fd())?.st_mode & 0o7777;
        let (dfd, file_name) =
            file_target(dst_root, dest, dest_is_dir, name, owner_uid, owner_gid)?;
        return fsops::write_file(
            dfd.as_raw_fd(),
            &file_name,
            &mut f,
            with_mtime(fix(mode, false), &abs),
        );
    }
    // A directory: its contents go into `dest`.
    let top = fsops::mkdir_all(dst_root, dest, owner_uid, owner_gid)?;
    let mut dirs: HashMap<PathBuf, OwnedFd> = HashMap::new();
    for entry in ctx.walk_excluding(source, excludes) {
        let entry = entry.map_err(err)?;
        if entry.rel_path.as_os_str().is_empty() {
            continue;
        }
        let parent_rel = entry
            .rel_path
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let parent_fd = if parent_rel.as_os_str().is_empty() {
            top.as_raw_fd()
        } else {
            match dirs.get(&parent_rel) {
                Some(fd) => fd.as_raw_fd(),
                None => continue, // parent was skipped (special file)
            }
        };
        let name = entry
            .rel_path
            .file_name()
            .unwrap_or_default()
            .to_os_string();
        let meta = with_mtime(
            fix(entry.mode, entry.kind == FileKind::Dir),
            &entry.abs_path,
        );
        match entry.kind {
            FileKind::Dir => {
                let fd = fsops::write_dir(parent_fd, &name, meta)?;
                dirs.insert(entry.rel_path.clone(), fd);
            }
            FileKind::File => {
                let cached = opts
                    .file_cache
                    .and_then(|c| ctx.cached_digest(&entry).map(|sha| (c, sha)));
                match cached {
                    Some((cache, sha)) => cache.place(
                        &entry.abs_path,
                        &sha,
                        &dest.join(&entry.rel_path),
                        parent_fd,
                        &name,
                        meta,
                    )?,
                    None => {
                        let mut f = File::from(openat_nofollow(
                            libc::AT_FDCWD,
                            entry.abs_path.as_os_str(),
                            libc::O_RDONLY,
                        )?);
                        fsops::write_file(parent_fd, &name, &mut f, meta)?;
                    }
                }
            }
            FileKind::Symlink => {
                let target = entry.link_target.clone().unwrap_or_default();
                fsops::write_symlink(parent_fd, &name, &target, meta)?;
            }
            _ => tracing::debug!("skipping special file {}", entry.context_path.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f.txt", &b"abc"[..]).unwrap();
        b.into_inner().unwrap()
    }

    fn file_with(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    #[test]
    fn archives_are_recognised_by_content() {
        let tar = tar_bytes();
        assert!(is_archive(file_with(&tar).as_raw_fd()).unwrap());
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&tar).unwrap();
        assert!(is_archive(file_with(&bz.finish().unwrap()).as_raw_fd()).unwrap());
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &tar[..], &mut xz).unwrap();
        assert!(is_archive(file_with(&xz).as_raw_fd()).unwrap());
    }

    #[test]
    fn compressed_non_tar_is_copied_not_extracted() {
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(b"just text\n").unwrap();
        assert!(!is_archive(file_with(&bz.finish().unwrap()).as_raw_fd()).unwrap());
        assert!(!is_archive(file_with(b"plain text").as_raw_fd()).unwrap());
        // Magic without a valid stream behind it.
        assert!(!is_archive(file_with(b"BZh9garbage").as_raw_fd()).unwrap());
    }

    #[test]
    fn parents_keep_the_source_directories() {
        let p = |pat: &str, m: &str, dir: bool| parents_rel(pat, Path::new(m), dir);
        assert_eq!(p("a/b/c.txt", "a/b/c.txt", false), PathBuf::from("a/b"));
        assert_eq!(p("a/*/c.txt", "a/x/c.txt", false), PathBuf::from("a/x"));
        assert_eq!(p("c.txt", "c.txt", false), PathBuf::from(""));
        assert_eq!(p("a/b", "a/b", true), PathBuf::from("a/b"));
        assert_eq!(p("./x/./y/*.txt", "x/y/z.txt", false), PathBuf::from("y"));
        assert_eq!(p("x/./y", "x/y", true), PathBuf::from("y"));
        assert_eq!(p("/x/y/./z/f", "x/y/z/f", false), PathBuf::from("z"));
    }

    #[test]
    fn chmod_octal_keeps_permission_bits() {
        let c = Chmod::parse("4755").unwrap();
        assert_eq!(c.apply(0o600, false), 0o755);
        assert!(Chmod::parse("8").is_err());
        assert!(Chmod::parse("17777").is_err());
    }

    #[test]
    fn chmod_symbolic_like_chmod1() {
        let m = |s: &str, mode: u32, dir: bool| Chmod::parse(s).unwrap().apply(mode, dir);
        assert_eq!(m("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(m("a=r", 0o755, false), 0o444);
        assert_eq!(m("=rw", 0o755, false), 0o666);
        assert_eq!(m("+x", 0o644, false), 0o755);
        assert_eq!(m("go=u", 0o640, false), 0o666);
        assert_eq!(m("o-rwx", 0o777, true), 0o770);
        assert_eq!(m("a+X", 0o644, false), 0o644);
        assert_eq!(m("a+X", 0o644, true), 0o755);
        assert_eq!(m("a+X", 0o744, false), 0o755);
        assert_eq!(m("u+s,+t", 0o755, false), 0o5755);
        assert_eq!(m("u=rwx,g=rx,o=", 0o000, false), 0o750);
        assert_eq!(m("u+x-w", 0o644, false), 0o544);
        for bad in ["", "u", "x+r", "u+r,", "a+q", "u+x g-w"] {
            assert!(Chmod::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn v7_tar_header_by_checksum() {
        let mut h = vec![0u8; 512];
        h[..5].copy_from_slice(b"a.txt");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum::<u32>() + 8 * 32;
        let field = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(field.as_bytes());
        assert!(is_tar_header(&h));
        h[0] = b'b';
        assert!(!is_tar_header(&h));
    }
}
