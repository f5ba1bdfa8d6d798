//! A deterministic tar writer: the same entries always produce the same bytes.
//!
//! USTAR headers with numeric ids only (uname/gname empty), no atime/ctime,
//! device numbers only on device entries, and PAX records only when USTAR
//! cannot hold a value (long names, big sizes/ids, sub-second or negative
//! times are dropped, xattrs), with records sorted by key.

use std::io::{self, Write};

/// The kind of a tar entry berth writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    File { size: u64 },
    Dir,
    Symlink { target: Vec<u8> },
    HardLink { target: Vec<u8> },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Path without leading `/` or `./`; directories get a trailing `/` here.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    /// Sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

const USTAR_MAX_OCTAL_8: u64 = 0o7777777; // 8-byte field: 7 digits
const USTAR_MAX_OCTAL_12: u64 = 0o77777777777; // 12-byte field: 11 digits

pub(crate) struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Write one header (with its PAX header when needed). For files the
    /// caller then writes exactly `size` bytes and calls [`Self::pad`].
    pub fn header(&mut self, e: &Entry) -> io::Result<()> {
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut h = tar::Header::new_ustar();

        let (name_ok, prefix, name) = split_ustar_path(&e.path);
        {
            let u = h.as_ustar_mut().expect("ustar header");
            if name_ok {
                u.prefix[..prefix.len()].copy_from_slice(prefix);
                u.name[..name.len()].copy_from_slice(name);
            } else {
                // Keep a readable truncated name for old readers; PAX wins.
                let n = e.path.len().min(100);
                u.name[..n].copy_from_slice(&e.path[..n]);
                pax.push((b"path".to_vec(), e.path.clone()));
            }
        }
        h.set_mode(e.mode & 0o7777);
        if e.uid > USTAR_MAX_OCTAL_8 {
            pax.push((b"uid".to_vec(), e.uid.to_string().into_bytes()));
            h.set_uid(0);
        } else {
            h.set_uid(e.uid);
        }
        if e.gid > USTAR_MAX_OCTAL_8 {
            pax.push((b"gid".to_vec(), e.gid.to_string().into_bytes()));
            h.set_gid(0);
        } else {
            h.set_gid(e.gid);
        }
        if e.mtime < 0 || e.mtime as u64 > USTAR_MAX_OCTAL_12 {
            pax.push((b"mtime".to_vec(), e.mtime.to_string().into_bytes()));
            h.set_mtime(0);
        } else {
            h.set_mtime(e.mtime as u64);
        }
        h.set_size(0);
        let link_target = match &e.kind {
            Kind::File { size } => {
                h.set_entry_type(tar::EntryType::Regular);
                if *size > USTAR_MAX_OCTAL_12 {
                    pax.push((b"size".to_vec(), size.to_string().into_bytes()));
                } else {
                    h.set_size(*size);
                }
                None
            }
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                None
            }
            Kind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                Some(target)
            }
            Kind::HardLink { target } => {
                h.set_entry_type(tar::EntryType::Link);
                Some(target)
            }
            Kind::Char { major, minor } | Kind::Block { major, minor } => {
                h.set_entry_type(if matches!(e.kind, Kind::Char { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*major)?;
                h.set_device_minor(*minor)?;
                None
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                None
            }
        };
        if let Some(target) = link_target {
            let u = h.as_ustar_mut().expect("ustar header");
            if target.len() <= 100 && !target.contains(&0) {
                u.linkname[..target.len()].copy_from_slice(target);
            } else {
                pax.push((b"linkpath".to_vec(), target.clone()));
            }
        }
        for (k, v) in &e.xattrs {
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            pax.push((key, v.clone()));
        }
        if !pax.is_empty() {
            pax.sort();
            self.pax_header(&e.path, &pax)?;
        }
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    fn pax_header(&mut self, path: &[u8], records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend_from_slice(&pax_record(k, v));
        }
        let mut h = tar::Header::new_ustar();
        // Go names it "PaxHeaders.0/<base>"; any fixed name is fine as long
        // as it is deterministic.
        let base = path.trim_end_matches_slash();
        let base = base.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        let mut name = b"PaxHeaders.0/".to_vec();
        name.extend_from_slice(base);
        name.truncate(100);
        h.as_ustar_mut().expect("ustar header").name[..name.len()].copy_from_slice(&name);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(&data)?;
        self.pad(data.len() as u64)
    }

    /// Pad file data of `size` bytes to the 512-byte block.
    pub fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; 512][..512 - rem])?;
        }
        Ok(())
    }

    pub fn data(&mut self) -> &mut W {
        &mut self.out
    }

    /// Write the end-of-archive marker and return the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

trait TrimSlash {
    fn trim_end_matches_slash(&self) -> &[u8];
}

impl TrimSlash for [u8] {
    fn trim_end_matches_slash(&self) -> &[u8] {
        let mut s = self;
        while let [rest @ .., b'/'] = s {
            s = rest;
        }
        s
    }
}

/// "%d %s=%s\n" where the length counts the whole record including itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(len.to_string().as_bytes());
    r.push(b' ');
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Split a path into USTAR prefix (<= 155) and name (<= 100) at a `/`.
/// Returns `(fits, prefix, name)`.
fn split_ustar_path(path: &[u8]) -> (bool, &[u8], &[u8]) {
    if path.contains(&0) {
        return (false, b"", b"");
    }
    if path.len() <= 100 {
        return (true, b"", path);
    }
    // A trailing slash belongs to the name part, so search before it.
    let search = &path[..path.len() - 1];
    for (i, &b) in search.iter().enumerate().rev() {
        if b == b'/' && i <= 155 && path.len() - i - 1 <= 100 && i > 0 {
            return (true, &path[..i], &path[i + 1..]);
        }
    }
    (false, b"", b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_includes_itself() {
        assert_eq!(pax_record(b"path", b"x"), b"9 path=x\n");
        let r = pax_record(b"k", &[b'v'; 95]);
        assert_eq!(r.len(), 102);
        assert!(r.starts_with(b"102 "));
    }

    #[test]
    fn ustar_split() {
        let long = [b"d".repeat(120), b"/".to_vec(), b"f".repeat(50)].concat();
        let (ok, p, n) = split_ustar_path(&long);
        assert!(ok);
        assert_eq!(p.len(), 120);
        assert_eq!(n.len(), 50);
        let (ok, ..) = split_ustar_path(&b"x".repeat(300));
        assert!(!ok);
    }

    type Parsed = (Vec<u8>, tar::Header, Vec<(String, Vec<u8>)>, Vec<u8>);

    fn roundtrip(e: &Entry) -> Parsed {
        let mut w = TarWriter::new(Vec::new());
        w.header(e).unwrap();
        let bytes = w.finish().unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut entries = a.entries().unwrap();
        let mut ent = entries.next().unwrap().unwrap();
        let pax = ent
            .pax_extensions()
            .unwrap()
            .map(|p| {
                p.map(|x| {
                    let x = x.unwrap();
                    (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                })
                .collect()
            })
            .unwrap_or_default();
        let path = ent.path_bytes().into_owned();
        let link = ent
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let h = ent.header().clone();
        assert_eq!(path, e.path);
        (bytes, h, pax, link)
    }

    #[test]
    fn headers_are_plain_and_long_values_use_pax() {
        let e = Entry {
            path: b"etc/passwd".to_vec(),
            kind: Kind::File { size: 0 },
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            mtime: 1_700_000_000,
            xattrs: vec![],
        };
        let (bytes, h, pax, _) = roundtrip(&e);
        assert_eq!(bytes.len(), 512 + 1024, "no PAX header for a plain entry");
        assert_eq!(h.mode().unwrap(), 0o4755);
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(
            h.as_ustar().unwrap().dev_major,
            [0u8; 8],
            "device fields stay empty"
        );
        assert!(pax.is_empty());

        let long = Entry {
            path: b"a/".repeat(200),
            kind: Kind::Symlink {
                target: b"t".repeat(150),
            },
            uid: 1 << 30,
            xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
            ..e
        };
        let (_, h, pax, link) = roundtrip(&long);
        let keys: Vec<&str> = pax.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["SCHILY.xattr.user.k", "linkpath", "path", "uid"]);
        assert_eq!(link, b"t".repeat(150));
        // The reader applies the PAX uid to the header it hands out.
        assert_eq!(h.uid().unwrap(), 1 << 30);
    }
}
