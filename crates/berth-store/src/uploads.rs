//! Blob upload sessions. A session is a record in the metadata database plus
//! a data file under `ingest/uploads/<id>`; its offset is the file's length,
//! so a session survives a restart of the server and resumes where the data
//! on disk ends (its hash state is rebuilt by re-reading the file once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use berth_oci::Digest;
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
}

/// A session's writer, shared by the requests of that session. `None` while
/// a request has taken it to a blocking thread or after it finished.
pub type SessionWriter = Arc<tokio::sync::Mutex<Option<BlobWriter>>>;

/// Writers of the sessions this process has touched.
pub struct Uploads {
    blobs: BlobStore,
    live: Mutex<HashMap<String, SessionWriter>>,
}

impl Uploads {
    pub(crate) fn new(blobs: BlobStore) -> Self {
        Uploads {
            blobs,
            live: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self, id: &str) {
        self.live.lock().expect("uploads lock").remove(id);
    }
}

/// Upload ids are UUIDs; anything else never names a session (and never
/// reaches the filesystem).
fn valid_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

impl Store {
    /// Starts a session for `repo` and returns its id.
    pub async fn start_upload(&self, repo: &str) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        let writer = BlobWriter::create_at(self.blobs.clone(), self.blobs.upload_path(&id))?;
        let record = UploadRecord {
            repo: repo.to_string(),
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
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
            return Err(e);
        }
        self.uploads
            .live
            .lock()
            .expect("uploads lock")
            .insert(id.clone(), Arc::new(tokio::sync::Mutex::new(Some(writer))));
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
    /// whole request and take the writer out with [`Store::checkout_writer`].
    pub fn upload_writer(&self, repo: &str, id: &str) -> Result<SessionWriter, StoreError> {
        match self.upload_record(id)? {
            Some(r) if r.repo == repo => {}
            _ => return Err(StoreError::UploadUnknown(id.to_string())),
        }
        let mut live = self.uploads.live.lock().expect("uploads lock");
        Ok(live
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone())
    }

    /// Takes the writer out of a locked slot. An empty slot (a session from
    /// before a restart, or one whose last request broke off) is reopened
    /// from the data on disk.
    pub async fn checkout_writer(
        &self,
        id: &str,
        slot: &mut Option<BlobWriter>,
    ) -> Result<BlobWriter, StoreError> {
        if let Some(w) = slot.take() {
            return Ok(w);
        }
        let path = self.blobs.upload_path(id);
        let blobs = self.uploads.blobs.clone();
        tokio::task::spawn_blocking(move || BlobWriter::resume(blobs, path))
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => StoreError::UploadUnknown(id.to_string()),
                _ => StoreError::Io(e),
            })
    }

    /// Bytes received so far by session `id` of `repo`.
    pub fn upload_size(&self, repo: &str, id: &str) -> Result<u64, StoreError> {
        match self.upload_record(id)? {
            Some(r) if r.repo == repo => {}
            _ => return Err(StoreError::UploadUnknown(id.to_string())),
        }
        match std::fs::metadata(self.blobs.upload_path(id)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
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
        self.meta
            .write(move |txn| {
                txn.open_table(UPLOADS)?.remove(key.as_str())?;
                link(txn, &repo, &digest, size)
            })
            .await?;
        self.uploads.forget(id);
        Ok(())
    }

    /// Cancels session `id` of `repo`, dropping its data. Waits for a
    /// request still writing to it.
    pub async fn cancel_upload(&self, repo: &str, id: &str) -> Result<(), StoreError> {
        let slot = self.upload_writer(repo, id)?;
        let mut guard = slot.lock().await;
        if let Some(w) = guard.take() {
            w.discard();
        }
        let key = id.to_string();
        self.meta
            .write(move |txn| {
                txn.open_table(UPLOADS)?.remove(key.as_str())?;
                Ok(())
            })
            .await?;
        self.uploads.forget(id);
        let _ = std::fs::remove_file(self.blobs.upload_path(id));
        Ok(())
    }
}
