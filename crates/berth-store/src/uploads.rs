//! Blob upload sessions. A session is a record in the metadata database plus
//! a data file under `ingest/uploads/<id>`; its offset is the file's length,
//! so a session survives a restart of the server and resumes where the data
//! on disk ends (its hash state is rebuilt by re-reading the file once).
//!
//! Sessions are cheap to hold and bounded (issue 9: a thousand sessions
//! opened and never finished used to hold a file descriptor each, until the
//! server answered `Too many open files`):
//!
//! - a session's writer is kept open between requests (a new session's
//!   too, so the usual POST then PUT opens its file once, and a chunked
//!   upload is not re-hashed for every chunk), but at most
//!   [`Uploads::set_max_open_files`] are kept at all: the least recently
//!   used beyond that are closed, and so are those of sessions idle for a
//!   while ([`Store::sweep_uploads`]). A closed session's next request
//!   reopens its file, re-hashing what it holds;
//! - [`Store::start_upload`] refuses new sessions past a total cap and a
//!   per-client cap ([`SessionCaps`], [`StoreError::TooManyUploads`]);
//! - sessions idle for longer than a maximum age expire: the server removes
//!   them as it runs, `berth gc` offline ([`Store::expired_uploads`]).
//!
//! A session's last activity is its data file's modification time (every
//! write updates it, creation sets it), so tracking activity costs nothing.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_oci::Digest;
use redb::{ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobStore, BlobWriter};
use crate::meta::UPLOADS;
use crate::repo::link;
use crate::{Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UploadRecord {
    pub repo: String,
    /// Seconds since the epoch when the session started.
    pub started: u64,
    /// Who started it (the server's client key: an IPv4 address, an IPv6
    /// /64), for the per-client cap. `None` for sessions of the local
    /// endpoint and those recorded before berth tracked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// Caps checked when a session starts; 0 means no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionCaps {
    /// Open sessions in the whole root.
    pub total: usize,
    /// Open sessions started by one client.
    pub per_client: usize,
}

impl SessionCaps {
    pub const UNLIMITED: SessionCaps = SessionCaps {
        total: 0,
        per_client: 0,
    };
}

/// One session's writer slot, shared by the requests of that session. Lock
/// it for the whole request ([`Session::lock`]); the writer inside is
/// `None` while a request has taken it out, or while the session's file is
/// closed.
pub struct Session {
    writer: tokio::sync::Mutex<Option<BlobWriter>>,
    /// Milliseconds since [`Uploads`]' epoch when a request last parked the
    /// writer here.
    last_used: AtomicU64,
}

impl Session {
    fn new() -> Self {
        Session {
            writer: tokio::sync::Mutex::new(None),
            last_used: AtomicU64::new(0),
        }
    }

    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Option<BlobWriter>> {
        self.writer.lock().await
    }
}

pub type SessionWriter = Arc<Session>;

/// Sessions kept open between requests by default, before the fd budget
/// of a server lowers it.
pub const DEFAULT_MAX_OPEN_FILES: usize = 256;

/// The sessions of a root as this process sees them: the writer slots of
/// sessions it touched, how many writers are parked (open files), and how
/// many sessions each client holds.
pub struct Uploads {
    blobs: BlobStore,
    live: Mutex<HashMap<String, SessionWriter>>,
    counts: Mutex<Counts>,
    /// Writers parked in slots, i.e. session files open between requests.
    parked: AtomicUsize,
    max_parked: AtomicUsize,
    epoch: Instant,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_client: HashMap<String, usize>,
}

impl Counts {
    fn add(&mut self, client: Option<&str>) {
        self.total += 1;
        if let Some(c) = client {
            *self.per_client.entry(c.to_string()).or_default() += 1;
        }
    }

    fn remove(&mut self, client: Option<&str>) {
        self.total = self.total.saturating_sub(1);
        if let Some(c) = client {
            if let Some(n) = self.per_client.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    self.per_client.remove(c);
                }
            }
        }
    }
}

impl Uploads {
    pub(crate) fn new(blobs: BlobStore, records: Vec<UploadRecord>) -> Self {
        let mut counts = Counts::default();
        for r in &records {
            counts.add(r.client.as_deref());
        }
        Uploads {
            blobs,
            live: Mutex::new(HashMap::new()),
            counts: Mutex::new(counts),
            parked: AtomicUsize::new(0),
            max_parked: AtomicUsize::new(DEFAULT_MAX_OPEN_FILES),
            epoch: Instant::now(),
        }
    }

    /// At most this many session files stay open between requests (at
    /// least 1); the least recently used beyond it are closed and reopened
    /// (re-hashed) by their next request.
    pub fn set_max_open_files(&self, n: usize) {
        self.max_parked.store(n.max(1), Ordering::Relaxed);
    }

    /// Session files open between requests right now.
    pub fn open_files(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// Open sessions: in total, and those of `client`.
    pub fn sessions(&self, client: Option<&str>) -> (usize, usize) {
        let c = self.counts.lock().expect("uploads lock");
        let mine = client
            .and_then(|k| c.per_client.get(k).copied())
            .unwrap_or(0);
        (c.total, mine)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn slot(&self, id: &str) -> SessionWriter {
        self.live
            .lock()
            .expect("uploads lock")
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Session::new()))
            .clone()
    }

    fn forget(&self, id: &str) {
        self.live.lock().expect("uploads lock").remove(id);
    }

    fn release(&self, client: Option<&str>) {
        self.counts.lock().expect("uploads lock").remove(client);
    }

    /// Takes the writer out of a locked slot (it is no longer parked).
    fn unpark(&self, slot: &mut Option<BlobWriter>) -> Option<BlobWriter> {
        let w = slot.take();
        if w.is_some() {
            self.parked.fetch_sub(1, Ordering::Relaxed);
        }
        w
    }

    /// Closes parked writers, least recently used first, until at most
    /// `keep` remain. Slots in use by a request are skipped.
    fn close_lru(&self, keep: usize) -> usize {
        if self.parked.load(Ordering::Relaxed) <= keep {
            return 0;
        }
        // Read each key once: requests touch `last_used` while this sorts,
        // and a key that changes mid-sort breaks the sort (it panics).
        let mut slots: Vec<(u64, SessionWriter)> = self
            .live
            .lock()
            .expect("uploads lock")
            .values()
            .map(|s| (s.last_used.load(Ordering::Relaxed), s.clone()))
            .collect();
        slots.sort_unstable_by_key(|(used, _)| *used);
        let mut closed = 0;
        for (_, s) in slots {
            if self.parked.load(Ordering::Relaxed) <= keep {
                break;
            }
            if let Ok(mut g) = s.writer.try_lock() {
                if self.unpark(&mut g).is_some() {
                    closed += 1; // dropped: the file is closed, its data stays
                }
            }
        }
        closed
    }

    /// Closes writers parked for longer than `idle`, and drops slots nobody
    /// uses. Returns how many files were closed.
    fn close_idle(&self, idle: Duration) -> usize {
        let now = self.now_ms();
        let idle = idle.as_millis() as u64;
        let slots: Vec<(String, SessionWriter)> = self
            .live
            .lock()
            .expect("uploads lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut closed = 0;
        let mut unused = Vec::new();
        for (id, s) in slots {
            let Ok(mut g) = s.writer.try_lock() else {
                continue;
            };
            if g.is_some() && now.saturating_sub(s.last_used.load(Ordering::Relaxed)) >= idle {
                self.unpark(&mut g);
                closed += 1;
            }
            if g.is_none() {
                unused.push(id);
            }
        }
        let mut live = self.live.lock().expect("uploads lock");
        for id in unused {
            // Only if no request holds the slot meanwhile (the map's
            // reference plus none other).
            if live.get(&id).is_some_and(|s| Arc::strong_count(s) == 1) {
                live.remove(&id);
            }
        }
        closed
    }
}

/// Upload ids are UUIDs; anything else never names a session (and never
/// reaches the filesystem).
fn valid_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

/// A session past its maximum age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredUpload {
    pub id: String,
    pub repo: String,
    pub client: Option<String>,
    /// Bytes received.
    pub size: u64,
    /// Time since its last activity.
    pub idle: Duration,
}

/// What [`Store::sweep_uploads`] did.
#[derive(Debug, Default, Clone)]
pub struct SweepReport {
    /// Session files closed (idle, or beyond the open-file bound).
    pub closed: usize,
    pub expired: Vec<ExpiredUpload>,
}

pub(crate) fn read_records(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Vec<(String, UploadRecord)>, StoreError> {
    let mut out = Vec::new();
    for r in table.iter()? {
        let (k, v) = r?;
        if let Ok(rec) = serde_json::from_slice::<UploadRecord>(v.value()) {
            out.push((k.value().to_string(), rec));
        }
    }
    Ok(out)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Removes session `id`'s record in `txn`; the record, if there was one.
fn remove_record(txn: &WriteTransaction, id: &str) -> Result<Option<UploadRecord>, StoreError> {
    Ok(txn
        .open_table(UPLOADS)?
        .remove(id)?
        .and_then(|v| serde_json::from_slice(v.value()).ok()))
}

impl Store {
    /// Starts a session for `repo` on behalf of `client` and returns its id,
    /// unless that would exceed `caps`.
    pub async fn start_upload(
        &self,
        repo: &str,
        client: Option<&str>,
        caps: SessionCaps,
    ) -> Result<String, StoreError> {
        {
            let mut c = self.uploads.counts.lock().expect("uploads lock");
            if caps.total > 0 && c.total >= caps.total {
                return Err(StoreError::TooManyUploads {
                    limit: caps.total,
                    per_client: false,
                });
            }
            if let Some(k) = client {
                if caps.per_client > 0
                    && c.per_client.get(k).copied().unwrap_or(0) >= caps.per_client
                {
                    return Err(StoreError::TooManyUploads {
                        limit: caps.per_client,
                        per_client: true,
                    });
                }
            }
            c.add(client);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.blobs.upload_path(&id);
        // The data file exists from the start (its mtime is the session's
        // activity).
        let writer = match BlobWriter::create_at(self.blobs.clone(), path.clone()) {
            Ok(w) => w,
            Err(e) => {
                self.uploads.release(client);
                return Err(e.into());
            }
        };
        let record = UploadRecord {
            repo: repo.to_string(),
            started: now_secs(),
            client: client.map(str::to_string),
        };
        let key = id.clone();
        let value = serde_json::to_vec(&record).expect("json");
        if let Err(e) = self
            .meta
            .write(move |txn| {
                txn.open_table(UPLOADS)?
                    .insert(key.as_str(), value.as_slice())?;
                Ok(())
            })
            .await
        {
            writer.discard();
            self.uploads.release(client);
            return Err(e);
        }
        // Parked like a writer a request leaves: counted against the
        // open-file bound, closed when idle or least recently used.
        let session = self.uploads.slot(&id);
        if let Ok(mut slot) = session.writer.try_lock() {
            self.park_writer(&session, &mut slot, writer);
        }
        Ok(id)
    }

    pub fn upload_record(&self, id: &str) -> Result<Option<UploadRecord>, StoreError> {
        if !valid_id(id) {
            return Ok(None);
        }
        let t = self.meta.read()?.open_table(UPLOADS)?;
        Ok(t.get(id)?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// The shared writer slot of session `id` of `repo`. Lock it for the
    /// whole request, take the writer out with [`Store::checkout_writer`]
    /// and put it back with [`Store::park_writer`].
    pub fn upload_writer(&self, repo: &str, id: &str) -> Result<SessionWriter, StoreError> {
        match self.upload_record(id)? {
            Some(r) if r.repo == repo => {}
            _ => return Err(StoreError::UploadUnknown(id.to_string())),
        }
        Ok(self.uploads.slot(id))
    }

    /// Takes the writer out of a locked slot. An empty slot (a new session,
    /// one from before a restart, one whose file was closed while idle, or
    /// whose last request broke off) is reopened from the data on disk,
    /// which re-hashes it once.
    pub async fn checkout_writer(
        &self,
        id: &str,
        slot: &mut Option<BlobWriter>,
    ) -> Result<BlobWriter, StoreError> {
        if let Some(w) = self.uploads.unpark(slot) {
            return Ok(w);
        }
        let path = self.blobs.upload_path(id);
        let blobs = self.uploads.blobs.clone();
        tokio::task::spawn_blocking(move || BlobWriter::resume(blobs, path))
            .await
            .map_err(|e| StoreError::Io(io::Error::other(e)))?
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => StoreError::UploadUnknown(id.to_string()),
                _ => StoreError::Io(e),
            })
    }

    /// Puts a session's writer back into its locked slot for the next
    /// request, keeping the file open; past the open-file bound the least
    /// recently used other sessions' files are closed.
    pub fn park_writer(
        &self,
        session: &Session,
        slot: &mut Option<BlobWriter>,
        writer: BlobWriter,
    ) {
        debug_assert!(slot.is_none());
        *slot = Some(writer);
        session
            .last_used
            .store(self.uploads.now_ms(), Ordering::Relaxed);
        let parked = self.uploads.parked.fetch_add(1, Ordering::Relaxed) + 1;
        let max = self.uploads.max_parked.load(Ordering::Relaxed);
        if parked > max {
            self.uploads.close_lru(max);
        }
    }

    /// Bytes received so far by session `id` of `repo`.
    pub fn upload_size(&self, repo: &str, id: &str) -> Result<u64, StoreError> {
        match self.upload_record(id)? {
            Some(r) if r.repo == repo => {}
            _ => return Err(StoreError::UploadUnknown(id.to_string())),
        }
        match std::fs::metadata(self.blobs.upload_path(id)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::UploadUnknown(id.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ends session `id` whose data was committed as `digest`: the blob
    /// becomes visible in the session's repository.
    pub async fn finish_upload(
        &self,
        repo: &str,
        id: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let (repo, key, digest) = (repo.to_string(), id.to_string(), digest.to_string());
        let removed = self
            .meta
            .write(move |txn| {
                let removed = remove_record(txn, &key)?;
                link(txn, &repo, &digest, size)?;
                Ok(removed)
            })
            .await?;
        self.uploads.forget(id);
        if let Some(r) = removed {
            self.uploads.release(r.client.as_deref());
        }
        Ok(())
    }

    /// Cancels session `id` of `repo`, dropping its data. Waits for a
    /// request still writing to it.
    pub async fn cancel_upload(&self, repo: &str, id: &str) -> Result<(), StoreError> {
        let slot = self.upload_writer(repo, id)?;
        let mut guard = slot.lock().await;
        self.remove_session(id, &mut guard).await?;
        Ok(())
    }

    /// Removes a session whose slot the caller holds locked: record, data,
    /// count. The record, if it was still there.
    async fn remove_session(
        &self,
        id: &str,
        slot: &mut Option<BlobWriter>,
    ) -> Result<Option<UploadRecord>, StoreError> {
        if let Some(w) = self.uploads.unpark(slot) {
            w.discard();
        }
        let key = id.to_string();
        let removed = self.meta.write(move |txn| remove_record(txn, &key)).await?;
        self.uploads.forget(id);
        let _ = std::fs::remove_file(self.blobs.upload_path(id));
        if let Some(r) = &removed {
            self.uploads.release(r.client.as_deref());
        }
        Ok(removed)
    }

    /// Sessions whose last activity (the data file's modification time,
    /// else the start) is at least `max_age` ago.
    pub fn expired_uploads(&self, max_age: Duration) -> Result<Vec<ExpiredUpload>, StoreError> {
        let records = read_records(&self.meta.read()?.open_table(UPLOADS)?)?;
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (id, r) in records {
            let meta = std::fs::metadata(self.blobs.upload_path(&id)).ok();
            let last = meta
                .as_ref()
                .and_then(|m| m.modified().ok())
                .unwrap_or(UNIX_EPOCH + Duration::from_secs(r.started));
            let idle = now.duration_since(last).unwrap_or_default();
            if idle >= max_age {
                out.push(ExpiredUpload {
                    id,
                    repo: r.repo,
                    client: r.client,
                    size: meta.map(|m| m.len()).unwrap_or(0),
                    idle,
                });
            }
        }
        Ok(out)
    }

    /// Housekeeping of a running server: closes the files of sessions idle
    /// for `close_idle_after` and, with `max_age`, removes expired sessions
    /// (a session a request is using right now is never touched).
    pub async fn sweep_uploads(
        &self,
        close_idle_after: Duration,
        max_age: Option<Duration>,
    ) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport {
            closed: self.uploads.close_idle(close_idle_after),
            expired: Vec::new(),
        };
        let Some(max_age) = max_age else {
            return Ok(report);
        };
        for e in self.expired_uploads(max_age)? {
            let slot = self.uploads.slot(&e.id);
            let Ok(mut guard) = slot.writer.try_lock() else {
                continue; // in use: not idle after all
            };
            if self.remove_session(&e.id, &mut guard).await?.is_some() {
                report.expired.push(e);
            }
        }
        Ok(report)
    }
}

/// Removes the expired sessions `expired` in `txn` (offline gc; the data
/// files go after the commit).
pub(crate) fn remove_expired(
    txn: &WriteTransaction,
    expired: &[ExpiredUpload],
) -> Result<(), StoreError> {
    let mut t = txn.open_table(UPLOADS)?;
    for e in expired {
        t.remove(e.id.as_str())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Access;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn caps_count_per_client_and_in_total_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let caps = SessionCaps {
            total: 5,
            per_client: 2,
        };
        let ids = {
            let store = Store::open(dir.path(), Access::Shared).unwrap();
            store.uploads.set_max_open_files(3);
            let a1 = rt
                .block_on(store.start_upload("r", Some("a"), caps))
                .unwrap();
            rt.block_on(store.start_upload("r", Some("a"), caps))
                .unwrap();
            match rt.block_on(store.start_upload("r", Some("a"), caps)) {
                Err(StoreError::TooManyUploads {
                    limit: 2,
                    per_client: true,
                }) => {}
                other => panic!("third session of a: {other:?}"),
            }
            rt.block_on(store.start_upload("r", Some("b"), caps))
                .unwrap();
            rt.block_on(store.start_upload("r", None, caps)).unwrap();
            rt.block_on(store.start_upload("r", None, caps)).unwrap();
            assert!(matches!(
                rt.block_on(store.start_upload("r", Some("c"), caps)),
                Err(StoreError::TooManyUploads {
                    per_client: false,
                    ..
                })
            ));
            assert_eq!(store.uploads.sessions(Some("a")), (5, 2));
            // New sessions keep their files open, but no more than the bound.
            assert_eq!(store.uploads.open_files(), 3);
            rt.block_on(store.cancel_upload("r", &a1)).unwrap();
            assert_eq!(store.uploads.sessions(Some("a")), (4, 1));
            a1
        };
        let store = Store::open(dir.path(), Access::Shared).unwrap();
        assert_eq!(
            store.uploads.sessions(Some("a")),
            (4, 1),
            "counted from the database"
        );
        assert!(store.upload_record(&ids).unwrap().is_none());
    }

    #[test]
    fn idle_and_surplus_session_files_are_closed_and_reopen_with_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let store = Store::open(dir.path(), Access::Shared).unwrap();
        store.uploads.set_max_open_files(2);
        let mut ids = Vec::new();
        for i in 0..4u8 {
            let id = rt
                .block_on(store.start_upload("r", None, SessionCaps::UNLIMITED))
                .unwrap();
            let slot = store.upload_writer("r", &id).unwrap();
            rt.block_on(async {
                let mut g = slot.lock().await;
                let mut w = store.checkout_writer(&id, &mut g).await.unwrap();
                w.write(&[i; 10]).unwrap();
                store.park_writer(&slot, &mut g, w);
            });
            ids.push(id);
        }
        assert_eq!(store.uploads.open_files(), 2, "bounded");
        let report = rt
            .block_on(store.sweep_uploads(Duration::ZERO, None))
            .unwrap();
        assert_eq!(report.closed, 2);
        assert_eq!(store.uploads.open_files(), 0);
        assert!(store.uploads.live.lock().unwrap().is_empty());
        // Reopened: the data is there and hashes as before.
        for (i, id) in ids.iter().enumerate() {
            let slot = store.upload_writer("r", id).unwrap();
            rt.block_on(async {
                let mut g = slot.lock().await;
                let mut w = store.checkout_writer(id, &mut g).await.unwrap();
                assert_eq!(w.len(), 10);
                assert_eq!(w.current_digest(), Digest::sha256_of(&[i as u8; 10]));
                store.park_writer(&slot, &mut g, w);
            });
        }
    }

    #[test]
    fn expired_sessions_are_removed_unless_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let rt = rt();
        let store = Store::open(dir.path(), Access::Shared).unwrap();
        let caps = SessionCaps {
            total: 0,
            per_client: 2,
        };
        let old = rt
            .block_on(store.start_upload("r", Some("a"), caps))
            .unwrap();
        let busy = rt
            .block_on(store.start_upload("r", Some("a"), caps))
            .unwrap();
        let fresh = rt
            .block_on(store.start_upload("r", Some("b"), caps))
            .unwrap();
        let past = SystemTime::now() - Duration::from_secs(3 * 86400);
        for id in [&old, &busy] {
            std::fs::File::options()
                .write(true)
                .open(store.blobs.upload_path(id))
                .unwrap()
                .set_modified(past)
                .unwrap();
        }
        let day = Duration::from_secs(86400);
        let expired = store.expired_uploads(day).unwrap();
        assert_eq!(expired.len(), 2);
        assert!(expired.iter().all(|e| e.idle >= 3 * day && e.repo == "r"));

        let slot = store.upload_writer("r", &busy).unwrap();
        let report = rt.block_on(async {
            let _in_use = slot.lock().await;
            store.sweep_uploads(day, Some(day)).await.unwrap()
        });
        assert_eq!(report.expired.len(), 1);
        assert_eq!(report.expired[0].id, old);
        assert!(store.upload_record(&old).unwrap().is_none());
        assert!(!store.blobs.upload_path(&old).exists());
        assert!(store.upload_record(&busy).unwrap().is_some());
        assert!(store.upload_record(&fresh).unwrap().is_some());
        // The expired session no longer counts against its client.
        assert_eq!(store.uploads.sessions(Some("a")), (2, 1));
    }
}
