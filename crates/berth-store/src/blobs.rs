//! The content store: blobs on disk under `blobs/<algorithm>/<hex>`, written
//! through [`BlobWriter`], which hashes while it writes and commits atomically.
//!
//! Invariant: a file under `blobs/` is complete, durable and matches its
//! name. Partial data lives only under `ingest/`, which readers never look at.
//!
//! The blob store needs no database and no lock of its own: every writer has
//! its own file under `ingest/tmp/` and commits by `rename`, which is atomic,
//! and two writers of the same digest rename identical content. So several
//! processes may write blobs into one root at once (a command beside
//! `berth serve`); only linking blobs into repositories goes through the
//! process that holds the metadata database.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use berth_oci::{Algorithm, Digest, Hasher};

use crate::StoreError;

/// Start kernel writeback every this many bytes so the final fsync only waits
/// for the tail of a large blob instead of all of it.
const WRITEBACK_STEP: u64 = 8 << 20;

#[derive(Debug, Clone)]
pub struct BlobStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob directories of `root`. Works
    /// while another process holds the root's database; take a shared
    /// [`crate::RootLock`] first so that gc cannot run meanwhile.
    pub fn open(root: &Path) -> io::Result<Self> {
        let blobs = root.join("blobs");
        let ingest = root.join("ingest");
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            fs::create_dir_all(blobs.join(alg.as_str()))?;
        }
        fs::create_dir_all(ingest.join("uploads"))?;
        fs::create_dir_all(ingest.join("tmp"))?;
        Ok(BlobStore { blobs, ingest })
    }

    /// Where the committed blob `digest` lives. The hex part is validated by
    /// [`Digest`], so this never escapes `blobs/`.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// Size of a committed blob, or `None` if it is not in the store.
    pub fn size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> io::Result<File> {
        File::open(self.path(digest))
    }

    /// Reads a whole (small) blob, e.g. a config.
    pub fn read(&self, digest: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.path(digest))
    }

    /// Removes a committed blob. Only garbage collection calls this.
    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every committed blob, for garbage collection and verification.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = Vec::new();
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for entry in fs::read_dir(self.blobs.join(alg.as_str()))? {
                let name = entry?.file_name();
                let name = name.to_string_lossy();
                // Stray files that are not digests are ignored, never deleted.
                if let Ok(d) = format!("{}:{name}", alg.as_str()).parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn upload_path(&self, id: &str) -> PathBuf {
        self.ingest.join("uploads").join(id)
    }

    pub(crate) fn uploads_dir(&self) -> PathBuf {
        self.ingest.join("uploads")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.ingest.join("tmp")
    }

    /// Removes scratch files of writers that died. A live writer (of this or
    /// another process) holds an exclusive `flock` on its file: skipped.
    pub(crate) fn clean_tmp(&self) -> io::Result<()> {
        for entry in fs::read_dir(self.tmp_dir())? {
            let path = entry?.path();
            let Ok(f) = File::open(&path) else { continue };
            // SAFETY: plain syscall on a descriptor we own.
            let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if free {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }

    /// A writer for a blob whose digest is not trusted yet.
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let path = self.tmp_dir().join(uuid::Uuid::new_v4().to_string());
        BlobWriter::create(self.clone(), path)
    }

    /// Re-hashes `digest`'s committed file; `false` if it does not match.
    pub fn verify(&self, digest: &Digest) -> io::Result<bool> {
        let mut f = self.open_blob(digest)?;
        let mut h = digest.algorithm().hasher();
        hash_reader(&mut f, &mut h)?;
        Ok(h.finish() == *digest)
    }

    /// Moves staged (verified, durable) blobs into `blobs/`, where they
    /// become visible.
    pub fn publish(&self, staged: Vec<StagedBlob>) -> Result<(), StoreError> {
        for mut blob in staged {
            self.commit_file(&blob.path, &blob.digest)?;
            blob.published = true;
        }
        Ok(())
    }

    fn commit_file(&self, tmp: &Path, digest: &Digest) -> io::Result<()> {
        let dest = self.path(digest);
        if dest.exists() {
            // Already stored (deduplicated): drop our copy.
            fs::remove_file(tmp)?;
            return Ok(());
        }
        fs::rename(tmp, &dest)?;
        File::open(dest.parent().expect("blob path has a parent"))?.sync_all()
    }
}

fn hash_reader(r: &mut impl Read, h: &mut Hasher) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
}

/// Past this many bytes a writer hashes on its own thread, so hashing and
/// the page-cache copy of large blobs run side by side on two cores.
const BACKGROUND_HASH_AFTER: u64 = 4 << 20;

/// The running sha256 of a writer: inline, or on a helper thread fed the
/// same chunks in order (bounded, so memory stays a few chunks).
enum HashState {
    Inline(Hasher),
    Background {
        chunks: std::sync::mpsc::SyncSender<bytes::Bytes>,
        done: std::thread::JoinHandle<Hasher>,
    },
}

impl HashState {
    /// Brings the hash back inline (waits for the helper to catch up).
    fn settle(&mut self) -> &mut Hasher {
        let state = std::mem::replace(self, HashState::Inline(Algorithm::Sha256.hasher()));
        *self = match state {
            HashState::Background { chunks, done } => {
                drop(chunks); // ends the helper's loop
                HashState::Inline(done.join().expect("hasher thread panicked"))
            }
            inline => inline,
        };
        match self {
            HashState::Inline(h) => h,
            HashState::Background { .. } => unreachable!("settled above"),
        }
    }

    /// Moves the hash to a helper thread.
    fn offload(&mut self) -> io::Result<()> {
        if let HashState::Inline(h) = self {
            let mut h = std::mem::replace(h, Algorithm::Sha256.hasher());
            let (chunks, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(1);
            let done = std::thread::Builder::new()
                .name("berth-hash".into())
                .spawn(move || {
                    for c in rx {
                        h.update(&c);
                    }
                    h
                })?;
            *self = HashState::Background { chunks, done };
        }
        Ok(())
    }
}

/// A blob verified against its digest and durable, still in ingest and not
/// yet visible (see [`BlobWriter::stage`], [`BlobStore::publish`]). Its open
/// file keeps the scratch lock; dropped unpublished, its data is removed.
pub struct StagedBlob {
    path: PathBuf,
    digest: Digest,
    size: u64,
    _file: File,
    published: bool,
}

impl StagedBlob {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Streams data into `ingest/`, hashing as it goes (sha256), and commits it
/// into `blobs/` only if digest and size match.
pub struct BlobWriter {
    store: BlobStore,
    file: File,
    path: PathBuf,
    hasher: HashState,
    written: u64,
    writeback_from: u64,
}

impl BlobWriter {
    fn create(store: BlobStore, path: PathBuf) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Marks the file as in use for `clean_tmp` of a process that opens
        // the root's database meanwhile; released when the file is closed.
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(BlobWriter {
            store,
            file,
            path,
            hasher: HashState::Inline(Algorithm::Sha256.hasher()),
            written: 0,
            writeback_from: 0,
        })
    }

    /// Reopens a partially written upload file (after a restart), re-hashing
    /// what it already holds.
    pub(crate) fn resume(store: BlobStore, path: PathBuf) -> io::Result<Self> {
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut hasher = Algorithm::Sha256.hasher();
        let written = hash_reader(&mut file, &mut hasher)?;
        file.seek(SeekFrom::End(0))?;
        Ok(BlobWriter {
            store,
            file,
            path,
            hasher: HashState::Inline(hasher),
            written,
            writeback_from: written,
        })
    }

    pub(crate) fn create_at(store: BlobStore, path: PathBuf) -> io::Result<Self> {
        Self::create(store, path)
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.hasher.settle().update(data);
        self.write_file(data)
    }

    /// Like [`BlobWriter::write`], for shared chunks: once the blob is large,
    /// the chunk is hashed on a helper thread while it is written here.
    pub fn write_bytes(&mut self, chunk: bytes::Bytes) -> io::Result<()> {
        if self.written < BACKGROUND_HASH_AFTER {
            return self.write(&chunk);
        }
        self.hasher.offload()?;
        if let HashState::Background { chunks, .. } = &self.hasher {
            chunks
                .send(chunk.clone())
                .map_err(|_| io::Error::other("hasher thread stopped"))?;
        }
        self.write_file(&chunk)
    }

    fn write_file(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.written += data.len() as u64;
        if self.written - self.writeback_from >= WRITEBACK_STEP {
            // Best effort: ask the kernel to start writing this range now.
            // SAFETY: plain syscall on a file descriptor we own.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.writeback_from as i64,
                    (self.written - self.writeback_from) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.writeback_from = self.written;
        }
        Ok(())
    }

    /// Verifies the content against `expected` (and `expected_size`), makes
    /// it durable and moves it into the store. On mismatch the data stays in
    /// ingest (an upload session may still be retried) and nothing is stored.
    pub fn commit(
        &mut self,
        expected: &Digest,
        expected_size: Option<u64>,
    ) -> Result<u64, StoreError> {
        if let Some(size) = expected_size {
            if size != self.written {
                return Err(StoreError::SizeInvalid {
                    expected: size,
                    actual: self.written,
                });
            }
        }
        let actual = match expected.algorithm() {
            Algorithm::Sha256 => self.hasher.settle().clone().finish(),
            // Uploads are hashed with sha256 on the way in; other algorithms
            // are rare enough to pay one re-read.
            alg => {
                let mut h = alg.hasher();
                let mut f = File::open(&self.path)?;
                hash_reader(&mut f, &mut h)?;
                h.finish()
            }
        };
        if actual != *expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.file.sync_data()?;
        self.store.commit_file(&self.path, expected)?;
        Ok(self.written)
    }

    /// Verifies the content and makes it durable like [`BlobWriter::commit`]
    /// but leaves it in ingest, invisible: a builder stages every layer of a
    /// build as it is made and publishes them together with
    /// [`BlobStore::publish`] once the build succeeded.
    pub fn stage(mut self, expected: &Digest) -> Result<StagedBlob, StoreError> {
        let actual = match expected.algorithm() {
            Algorithm::Sha256 => self.hasher.settle().clone().finish(),
            alg => {
                let mut h = alg.hasher();
                let mut f = File::open(&self.path)?;
                hash_reader(&mut f, &mut h)?;
                h.finish()
            }
        };
        if actual != *expected {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        self.file.sync_data()?;
        Ok(StagedBlob {
            path: self.path,
            digest: actual,
            size: self.written,
            _file: self.file,
            published: false,
        })
    }

    /// Drops the partial data.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
    }

    /// The sha256 of everything written so far.
    pub fn current_digest(&mut self) -> Digest {
        self.hasher.settle().clone().finish()
    }

    /// Reads back a range of what was written (used by tests and resumption).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_blobs_appear_only_when_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let stage = |data: &[u8]| {
            let mut w = store.writer().unwrap();
            w.write(data).unwrap();
            w.stage(&Digest::sha256_of(data)).unwrap()
        };
        let a = stage(b"layer a");
        let b = stage(b"layer b");
        assert_eq!(a.size(), 7);
        assert_eq!(
            store.size(a.digest()).unwrap(),
            None,
            "not visible while staged"
        );
        let (da, db) = (a.digest().clone(), b.digest().clone());
        // A staged blob dropped without publishing leaves nothing behind.
        drop(stage(b"abandoned"));
        store.publish(vec![a, b]).unwrap();
        assert_eq!(store.read(&da).unwrap(), b"layer a");
        assert_eq!(store.read(&db).unwrap(), b"layer b");
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
        // A wrong digest is refused and its data removed.
        let mut w = store.writer().unwrap();
        w.write(b"x").unwrap();
        assert!(w.stage(&da).is_err());
        assert_eq!(std::fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn commit_verifies_and_deduplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = Digest::sha256_of(b"hello");

        let mut w = store.writer().unwrap();
        w.write(b"hel").unwrap();
        w.write(b"lo").unwrap();
        assert!(matches!(
            w.commit(&Digest::sha256_of(b"other"), None),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert_eq!(
            store.size(&d).unwrap(),
            None,
            "nothing visible after a mismatch"
        );
        assert!(matches!(
            w.commit(&d, Some(4)),
            Err(StoreError::SizeInvalid { .. })
        ));
        assert_eq!(w.commit(&d, Some(5)).unwrap(), 5);
        assert_eq!(store.read(&d).unwrap(), b"hello");
        assert!(store.verify(&d).unwrap());

        let mut again = store.writer().unwrap();
        again.write(b"hello").unwrap();
        again.commit(&d, None).unwrap();
        assert_eq!(store.list().unwrap(), vec![d]);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn large_writes_hash_in_the_background_and_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(11u32 << 20)).map(|i| (i % 251) as u8).collect();
        let d = Digest::sha256_of(&data);
        let mut w = store.writer().unwrap();
        for (i, chunk) in data.chunks(400 << 10).enumerate() {
            if i % 5 == 0 {
                w.write(chunk).unwrap(); // inline writes settle the helper
            } else {
                w.write_bytes(bytes::Bytes::copy_from_slice(chunk)).unwrap();
            }
        }
        assert_eq!(w.current_digest(), d);
        w.write_bytes(bytes::Bytes::from_static(b"x")).unwrap();
        let mut with_x = data.clone();
        with_x.push(b'x');
        let dx = Digest::sha256_of(&with_x);
        assert_eq!(
            w.commit(&dx, Some(with_x.len() as u64)).unwrap(),
            with_x.len() as u64
        );
        assert!(store.verify(&dx).unwrap());
    }

    #[test]
    fn tmp_cleanup_skips_live_writers() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut live = store.writer().unwrap();
        live.write(b"in flight").unwrap();
        let dead = store.tmp_dir().join("dead");
        fs::write(&dead, b"left by a killed process").unwrap();
        store.clean_tmp().unwrap();
        assert!(!dead.exists());
        let d = Digest::sha256_of(b"in flight");
        live.commit(&d, None).unwrap();
        assert!(store.verify(&d).unwrap());
    }

    #[test]
    fn writers_of_separate_handles_commit_the_same_blob_concurrently() {
        // Two processes writing the same layer: two handles, many threads.
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(6u32 << 20)).map(|i| (i % 241) as u8).collect();
        let d = Digest::sha256_of(&data);
        std::thread::scope(|s| {
            for _ in 0..6 {
                let store = BlobStore::open(dir.path()).unwrap();
                let (data, d) = (&data, &d);
                s.spawn(move || {
                    let mut w = store.writer().unwrap();
                    for c in data.chunks(256 << 10) {
                        w.write_bytes(bytes::Bytes::copy_from_slice(c)).unwrap();
                    }
                    w.commit(d, Some(data.len() as u64)).unwrap();
                });
            }
        });
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(store.list().unwrap(), vec![d.clone()]);
        assert!(store.verify(&d).unwrap());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn sha512_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = Digest::of(Algorithm::Sha512, b"x");
        let mut w = store.writer().unwrap();
        w.write(b"x").unwrap();
        w.commit(&d, None).unwrap();
        assert_eq!(store.size(&d).unwrap(), Some(1));
    }
}
