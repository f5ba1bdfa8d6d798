//! Content checksums of COPY sources.
//!
//! The checksum covers exactly what a copy reads and what the copy's
//! result depends on: each source's matched path (its base name names the
//! copy), and for every entry below it the path relative to the source,
//! the type, the permission bits, and for files the size and SHA-256 of
//! the contents, for symlinks the target, for devices the device number.
//! Never times, inode numbers or owners (Docker resets context files to
//! 0:0), so a fresh clone of the same tree gives the same checksum.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::context::{Context, Entry, FileKind};
use crate::ignore::IgnoreMatcher;
use crate::Error;

/// A SHA-256 content checksum. Displays as `sha256:<hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest(pub [u8; 32]);

impl ContentDigest {
    /// The lowercase hex of the hash.
    pub fn hex(&self) -> String {
        crate::hex(&self.0)
    }
}

impl std::fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

/// What one checksum did (for progress output, and to verify the stat
/// cache works).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChecksumStats {
    /// Entries covered (all types).
    pub entries: usize,
    /// Regular files covered.
    pub files: usize,
    /// Files whose contents were read and hashed.
    pub files_read: usize,
    /// Bytes read and hashed.
    pub bytes_read: u64,
    /// Files whose hash came from the stat cache.
    pub cache_hits: usize,
}

/// A file's SHA-256 and the number of bytes read.
type Hashed = ([u8; 32], u64);

const READ_BUF: usize = 256 * 1024;
const MAX_THREADS: usize = 8;

impl Context {
    /// The checksum of what `COPY <patterns...>` reads (see the module
    /// docs for what it covers). Errors are those of
    /// [`Context::resolve_sources`] and I/O errors naming the file.
    pub fn checksum(&self, patterns: &[String]) -> Result<ContentDigest, Error> {
        Ok(self.checksum_detailed(patterns, &IgnoreMatcher::empty())?.0)
    }

    /// The sha256 of a file's contents as the stat cache knows it: `None`
    /// unless the entry is in the cache, unchanged and not racily clean. A
    /// copy may then reuse content stored under this hash, but must still
    /// verify what it reads (the file may change after this answer).
    pub fn cached_digest(&self, entry: &Entry) -> Option<[u8; 32]> {
        let cache = self.cache.as_ref()?;
        let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.lookup(
            entry.context_path.as_os_str().as_encoded_bytes(),
            &entry.stat,
        )
    }

    /// [`Context::checksum`] of a `COPY --exclude=...`: entries `excludes`
    /// leaves out are not covered.
    pub fn checksum_excluding(
        &self,
        patterns: &[String],
        excludes: &IgnoreMatcher,
    ) -> Result<ContentDigest, Error> {
        Ok(self.checksum_detailed(patterns, excludes)?.0)
    }

    /// The checksum plus what it took.
    pub fn checksum_detailed(
        &self,
        patterns: &[String],
        excludes: &IgnoreMatcher,
    ) -> Result<(ContentDigest, ChecksumStats), Error> {
        let sources = self.resolve_sources(patterns)?;
        let mut groups: Vec<(Vec<u8>, Vec<Entry>)> = Vec::with_capacity(sources.len());
        for source in &sources {
            let entries = self
                .walk_excluding(source, excludes)
                .collect::<Result<Vec<_>, _>>()?;
            groups.push((source.path.as_os_str().as_encoded_bytes().to_vec(), entries));
        }
        let files: Vec<&Entry> = groups
            .iter()
            .flat_map(|(_, es)| es)
            .filter(|e| e.kind == FileKind::File)
            .collect();
        let mut stats = ChecksumStats {
            entries: groups.iter().map(|(_, es)| es.len()).sum(),
            files: files.len(),
            ..Default::default()
        };

        // Cache lookups first, then the misses in parallel.
        let mut hashes: Vec<Option<[u8; 32]>> = vec![None; files.len()];
        if let Some(cache) = &self.cache {
            let cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            for (i, e) in files.iter().enumerate() {
                hashes[i] = cache.lookup(e.context_path.as_os_str().as_encoded_bytes(), &e.stat);
            }
        }
        let misses: Vec<usize> = (0..files.len()).filter(|&i| hashes[i].is_none()).collect();
        stats.cache_hits = files.len() - misses.len();
        stats.files_read = misses.len();
        let hashed_at = now_ns();
        let computed = hash_files(&files, &misses)?;
        for (&i, (h, n)) in misses.iter().zip(&computed) {
            hashes[i] = Some(*h);
            stats.bytes_read += n;
        }
        if let Some(cache) = &self.cache {
            let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
            for (&i, (h, _)) in misses.iter().zip(&computed) {
                let e = files[i];
                cache.insert(
                    e.context_path.as_os_str().as_encoded_bytes(),
                    e.stat,
                    hashed_at,
                    *h,
                );
            }
        }

        let mut by_path = hashes.into_iter().flatten();
        let mut h = Sha256::new();
        h.update(b"berth-context-checksum-v1\0");
        for (path, entries) in &groups {
            h.update(b"S");
            put(&mut h, path);
            for e in entries {
                let tag: u8 = match e.kind {
                    FileKind::File => b'f',
                    FileKind::Dir => b'd',
                    FileKind::Symlink => b'l',
                    FileKind::Fifo => b'p',
                    FileKind::Socket => b's',
                    FileKind::CharDevice => b'c',
                    FileKind::BlockDevice => b'b',
                };
                h.update([tag]);
                put(&mut h, e.rel_path.as_os_str().as_encoded_bytes());
                h.update(e.mode.to_be_bytes());
                match e.kind {
                    FileKind::File => {
                        h.update(e.size.to_be_bytes());
                        // One hash per file, in the same order as `files`.
                        let content = by_path.next().expect("a hash for every file");
                        h.update(content);
                    }
                    FileKind::Symlink => {
                        let t = e.link_target.as_deref().unwrap_or(std::path::Path::new(""));
                        put(&mut h, t.as_os_str().as_encoded_bytes());
                    }
                    FileKind::CharDevice | FileKind::BlockDevice => h.update(e.rdev.to_be_bytes()),
                    FileKind::Dir | FileKind::Fifo | FileKind::Socket => {}
                }
            }
        }
        Ok((ContentDigest(h.finalize().into()), stats))
    }
}

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn now_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Hashes `files[which[..]]` on up to `MAX_THREADS` threads (at least two
/// when there is more than one file), returning (sha256, bytes) in the
/// order of `which`.
fn hash_files(files: &[&Entry], which: &[usize]) -> Result<Vec<Hashed>, Error> {
    if which.is_empty() {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, MAX_THREADS)
        .min(which.len());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Hashed>>> = Mutex::new(vec![None; which.len()]);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; READ_BUF];
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= which.len() {
                        return;
                    }
                    let entry = files[which[k]];
                    match hash_file(entry, &mut buf) {
                        Ok(r) => results.lock().unwrap_or_else(|e| e.into_inner())[k] = Some(r),
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .get_or_insert(e);
                            // Stop handing out work.
                            next.store(which.len(), Ordering::Relaxed);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every file hashed"))
        .collect())
}

fn hash_file(entry: &Entry, buf: &mut [u8]) -> Result<Hashed, Error> {
    let path = &entry.abs_path;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finalize().into(), total))
}
