//! Shared helpers: hand-made tars (names are written raw, so hostile paths
//! like `../x` reach the unpacker unchanged) and a full tree listing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub struct TarBuf {
    b: tar::Builder<Vec<u8>>,
}

impl Default for TarBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuf {
    pub fn new() -> Self {
        TarBuf {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(path: &str, ty: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let name = &mut h.as_ustar_mut().unwrap().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn push(&mut self, mut h: tar::Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Self {
        self.push(
            Self::header(path, tar::EntryType::Regular, 0o644, data.len() as u64),
            data,
        )
    }

    pub fn file_meta(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        let mut h = Self::header(path, tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.push(h, data)
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.push(Self::header(path, tar::EntryType::Directory, 0o755, 0), b"")
    }

    pub fn dir_meta(&mut self, path: &str, mode: u32, mtime: u64) -> &mut Self {
        let mut h = Self::header(path, tar::EntryType::Directory, mode, 0);
        h.set_mtime(mtime);
        self.push(h, b"")
    }

    fn link(&mut self, path: &str, target: &str, ty: tar::EntryType) -> &mut Self {
        let mut h = Self::header(path, ty, 0o777, 0);
        h.as_ustar_mut().unwrap().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.push(h, b"")
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(path, target, tar::EntryType::Symlink)
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.link(path, target, tar::EntryType::Link)
    }

    pub fn device(&mut self, path: &str, ty: tar::EntryType, major: u32, minor: u32) -> &mut Self {
        let mut h = Self::header(path, ty, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, b"")
    }

    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    pub fn bytes(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

/// One line per entry: type, mode, owner, content or link target; `mtimes`
/// adds non-directory mtimes. Directory mtimes are left out: applying a diff
/// onto a full tree changes them legitimately.
pub fn listing(root: &Path, mtimes: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, mtimes, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, mtimes: bool, out: &mut BTreeMap<String, String>) {
    for ent in fs::read_dir(dir).unwrap() {
        let p = ent.unwrap().path();
        let md = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let ft = md.file_type();
        let what = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_symlink() {
            format!("link->{}", fs::read_link(&p).unwrap().display())
        } else if ft.is_file() {
            format!("file:{:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
        } else if ft.is_char_device() {
            format!("char:{}", md.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            "other".to_string()
        };
        let mut line = format!(
            "{what} mode={:o} uid={} gid={}",
            md.mode() & 0o7777,
            md.uid(),
            md.gid()
        );
        if mtimes && !ft.is_dir() {
            line.push_str(&format!(" mtime={}", md.mtime()));
        }
        let user: Vec<String> = xattr_names(&p)
            .into_iter()
            .filter(|n| n.starts_with("user.") && !n.starts_with("user.overlay."))
            .collect();
        if !user.is_empty() {
            line.push_str(&format!(" xattrs={user:?}"));
        }
        out.insert(rel, line);
        if ft.is_dir() {
            walk(root, &p, mtimes, out);
        }
    }
}

pub fn xattr_names(p: &Path) -> Vec<String> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return vec![];
    }
    let mut names: Vec<String> = buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names
}

pub fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid strings and buffer.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// Root with ids 0..65536 mapped: chown to arbitrary layer ids works.
pub fn can_chown_any() -> bool {
    is_root()
        && std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| {
                m.lines().any(|l| {
                    let f: Vec<u64> = l
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    f.len() == 3 && f[0] == 0 && f[2] >= 65536
                })
            })
            .unwrap_or(false)
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Entry names of a tar, in order.
pub fn tar_names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}
