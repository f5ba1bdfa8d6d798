//! A stat cache for content hashes, like git's index.
//!
//! A file's SHA-256 is reused while its (size, mtime, ctime, inode, mode)
//! stay the same. As with git, a change that keeps all of these (possible
//! only by resetting both timestamps, which needs privileges for ctime)
//! goes unnoticed; any ordinary write, `touch`, `chmod` or replacement
//! changes the ctime at least.
//!
//! "Racily clean" entries are not trusted: if the file's mtime or ctime is
//! within the racy window of the moment it was hashed, a write in the same
//! timestamp tick could have followed the read, so it is hashed again.
//!
//! File format (all integers little endian): magic, root path, entry
//! count, entries, then a SHA-256 of everything before it. A file that is
//! truncated, corrupt or of another version is ignored, never an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::Error;

const MAGIC: &[u8] = b"berth-statcache\x01\n";
const DEFAULT_RACY_WINDOW_NS: i64 = 20_000_000;

/// What identifies a file's version without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StatKey {
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ctime_ns: i64,
    pub(crate) ino: u64,
    pub(crate) mode: u32,
}

#[derive(Debug, Clone)]
struct CacheEntry {
    key: StatKey,
    hashed_at_ns: i64,
    sha256: [u8; 32],
}

/// Remembered content hashes of the files of one context directory.
#[derive(Debug)]
pub struct StatCache {
    path: PathBuf,
    root: Vec<u8>,
    entries: HashMap<Vec<u8>, CacheEntry>,
    dirty: bool,
    racy_window_ns: i64,
}

impl StatCache {
    /// Loads the cache stored at `path`. A missing, unreadable, truncated
    /// or corrupt file gives an empty cache (rebuilt by the next checksum).
    pub fn load(path: impl Into<PathBuf>) -> StatCache {
        let path = path.into();
        let mut cache = StatCache::empty(path);
        if let Ok(bytes) = std::fs::read(&cache.path) {
            if let Some((root, entries)) = parse(&bytes) {
                cache.root = root;
                cache.entries = entries;
            }
        }
        cache
    }

    /// An empty cache that will be saved at `path`.
    pub fn empty(path: impl Into<PathBuf>) -> StatCache {
        StatCache {
            path: path.into(),
            root: Vec::new(),
            entries: HashMap::new(),
            dirty: false,
            racy_window_ns: DEFAULT_RACY_WINDOW_NS,
        }
    }

    /// Writes the cache atomically (temporary file + rename) if anything
    /// changed since it was loaded.
    pub fn save(&self) -> Result<(), Error> {
        if !self.dirty {
            return Ok(());
        }
        let bytes = self.serialize();
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&self.path, e)
        })
    }

    /// Where the cache is stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of remembered files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no file is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How close to the moment of hashing a timestamp may be before the
    /// entry counts as racily clean (default 20 ms: more than the coarsest
    /// kernel timestamp tick).
    pub fn set_racy_window(&mut self, window: Duration) {
        self.racy_window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
    }

    /// Binds the cache to a context root; entries of another root are
    /// dropped (their relative paths would mean other files).
    pub(crate) fn bind_root(&mut self, root: &[u8]) {
        if self.root != root {
            self.root = root.to_vec();
            if !self.entries.is_empty() {
                self.entries.clear();
            }
            self.dirty = true;
        }
    }

    pub(crate) fn lookup(&self, rel: &[u8], key: &StatKey) -> Option<[u8; 32]> {
        let e = self.entries.get(rel)?;
        if e.key != *key {
            return None;
        }
        let limit = e.hashed_at_ns.saturating_sub(self.racy_window_ns);
        if e.key.mtime_ns >= limit || e.key.ctime_ns >= limit {
            return None;
        }
        Some(e.sha256)
    }

    pub(crate) fn insert(&mut self, rel: &[u8], key: StatKey, hashed_at_ns: i64, sha256: [u8; 32]) {
        self.entries.insert(
            rel.to_vec(),
            CacheEntry {
                key,
                hashed_at_ns,
                sha256,
            },
        );
        self.dirty = true;
    }

    fn serialize(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 100);
        out.extend_from_slice(MAGIC);
        put_bytes(&mut out, &self.root);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        // Sorted so equal caches are equal files.
        let mut keys: Vec<&Vec<u8>> = self.entries.keys().collect();
        keys.sort();
        for k in keys {
            let e = &self.entries[k];
            put_bytes(&mut out, k);
            out.extend_from_slice(&e.key.size.to_le_bytes());
            out.extend_from_slice(&e.key.mtime_ns.to_le_bytes());
            out.extend_from_slice(&e.key.ctime_ns.to_le_bytes());
            out.extend_from_slice(&e.key.ino.to_le_bytes());
            out.extend_from_slice(&e.key.mode.to_le_bytes());
            out.extend_from_slice(&e.hashed_at_ns.to_le_bytes());
            out.extend_from_slice(&e.sha256);
        }
        let sum = Sha256::digest(&out);
        out.extend_from_slice(&sum);
        out
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

type Parsed = (Vec<u8>, HashMap<Vec<u8>, CacheEntry>);

fn parse(bytes: &[u8]) -> Option<Parsed> {
    if bytes.len() < MAGIC.len() + 32 {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader(body);
    if r.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let root = r.bytes()?.to_vec();
    let count = r.u64()?;
    // Each entry takes at least 80 bytes: a count beyond that is corrupt.
    if count > (body.len() / 80) as u64 {
        return None;
    }
    let mut entries = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let path = r.bytes()?.to_vec();
        let key = StatKey {
            size: r.u64()?,
            mtime_ns: r.i64()?,
            ctime_ns: r.i64()?,
            ino: r.u64()?,
            mode: r.u32()?,
        };
        let hashed_at_ns = r.i64()?;
        let sha256: [u8; 32] = r.take(32)?.try_into().ok()?;
        entries.insert(
            path,
            CacheEntry {
                key,
                hashed_at_ns,
                sha256,
            },
        );
    }
    if !r.0.is_empty() {
        return None;
    }
    Some((root, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(size: u64) -> StatKey {
        StatKey {
            size,
            mtime_ns: 1_000,
            ctime_ns: 2_000,
            ino: 7,
            mode: 0o100644,
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cache");
        let mut c = StatCache::load(&path);
        assert!(c.is_empty());
        c.bind_root(b"/ctx");
        c.insert(b"a/b", key(3), 10_000_000_000, [7; 32]);
        c.save().unwrap();

        let c2 = StatCache::load(&path);
        assert_eq!(c2.len(), 1);
        assert_eq!(c2.lookup(b"a/b", &key(3)), Some([7; 32]));
        assert_eq!(c2.lookup(b"a/b", &key(4)), None);
        assert_eq!(c2.lookup(b"a/c", &key(3)), None);

        // Every truncation and a flipped byte anywhere are ignored.
        let bytes = std::fs::read(&path).unwrap();
        for n in 0..bytes.len() {
            std::fs::write(&path, &bytes[..n]).unwrap();
            assert!(StatCache::load(&path).is_empty(), "truncated to {n}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            std::fs::write(&path, &b).unwrap();
            assert!(StatCache::load(&path).is_empty(), "flipped byte {i}");
        }
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn racily_clean_entries_are_not_trusted() {
        let mut c = StatCache::empty("/nonexistent");
        // Hashed 1 ms after the last change: inside the default window.
        c.insert(b"f", key(1), 2_000 + 1_000_000, [1; 32]);
        assert_eq!(c.lookup(b"f", &key(1)), None);
        c.set_racy_window(Duration::ZERO);
        assert_eq!(c.lookup(b"f", &key(1)), Some([1; 32]));
    }

    #[test]
    fn another_root_drops_entries() {
        let mut c = StatCache::empty("/nonexistent");
        c.bind_root(b"/a");
        c.insert(b"f", key(1), i64::MAX, [1; 32]);
        c.bind_root(b"/a");
        assert_eq!(c.len(), 1);
        c.bind_root(b"/b");
        assert!(c.is_empty());
    }
}
