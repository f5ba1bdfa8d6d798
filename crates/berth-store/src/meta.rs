//! The metadata database (redb): repositories, tags, manifests, blob links,
//! referrers and upload sessions. Listing a catalog or a repository's tags
//! reads only this file, never the filesystem.
//!
//! Writes go through one writer thread that applies every queued write in a
//! single transaction and commits (fsync) once: group commit. Concurrent
//! pushes therefore share fsyncs instead of queueing behind each other.
//! A write closure must check everything before it modifies anything: if it
//! returns a logical error, the other writes of its batch still commit.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use redb::{Database, ReadTransaction, ReadableDatabase, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use crate::StoreError;

/// repository -> ()
pub(crate) const REPOS: TableDefinition<&str, ()> = TableDefinition::new("repos");
/// (repository, tag) -> manifest digest
pub(crate) const TAGS: TableDefinition<(&str, &str), &str> = TableDefinition::new("tags");
/// (repository, manifest digest) -> media type
pub(crate) const MANIFESTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("manifests");
/// manifest digest -> manifest bytes, exactly as pushed (shared by repositories)
pub(crate) const MANIFEST_BYTES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("manifest_bytes");
/// (repository, blob digest) -> size: the blobs a repository may serve
pub(crate) const BLOB_LINKS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("blob_links");
/// (repository, subject digest, referrer digest) -> descriptor JSON
pub(crate) const REFERRERS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("referrers");
/// upload id -> upload record JSON
pub(crate) const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// (repository, child manifest digest, index digest) -> (): which indexes of
/// a repository name a manifest, so a DELETE can refuse to break one
pub(crate) const INDEX_CHILDREN: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("index_children");
/// migration name -> version, for tables added to existing databases
pub(crate) const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&WriteTransaction) -> (Reply, bool) + Send>;

/// Handle to the database and its writer thread.
pub struct Meta {
    db: std::sync::Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl Meta {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        let db = match Database::create(path) {
            Ok(db) => std::sync::Arc::new(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked(
                    path.to_path_buf(),
                    crate::LockReason::Database,
                ))
            }
            Err(e) => return Err(e.into()),
        };
        // Create every table once so readers never meet a missing table.
        let txn = db.begin_write().map_err(redb::Error::from)?;
        {
            txn.open_table(REPOS).map_err(redb::Error::from)?;
            txn.open_table(TAGS).map_err(redb::Error::from)?;
            txn.open_table(MANIFESTS).map_err(redb::Error::from)?;
            txn.open_table(MANIFEST_BYTES).map_err(redb::Error::from)?;
            txn.open_table(BLOB_LINKS).map_err(redb::Error::from)?;
            txn.open_table(REFERRERS).map_err(redb::Error::from)?;
            txn.open_table(UPLOADS).map_err(redb::Error::from)?;
            txn.open_table(INDEX_CHILDREN).map_err(redb::Error::from)?;
            txn.open_table(SCHEMA).map_err(redb::Error::from)?;
        }
        crate::repo::backfill_index_children(&txn)?;
        txn.commit().map_err(redb::Error::from)?;

        let (tx, rx) = mpsc::channel::<Job>();
        let wdb = db.clone();
        let writer = std::thread::Builder::new()
            .name("berth-meta-writer".into())
            .spawn(move || writer_loop(&wdb, rx))?;
        Ok(Meta {
            db,
            jobs: Some(tx),
            writer: Some(writer),
        })
    }

    pub fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read().map_err(redb::Error::from)?)
    }

    fn submit<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> oneshot::Receiver<Result<R, StoreError>> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let result = f(txn);
            let failed_storage = matches!(result, Err(StoreError::Db(_)));
            let reply: Reply = Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Db(e)),
                });
            });
            (reply, failed_storage)
        });
        if let Some(jobs) = &self.jobs {
            // If the writer is gone the receiver reports it as closed.
            let _ = jobs.send(job);
        }
        rx
    }

    /// Runs `f` in a (shared) write transaction and waits for the commit.
    pub async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.submit(f)
            .await
            .map_err(|_| StoreError::Db("metadata writer stopped".into()))?
    }

    /// Blocking form of [`Meta::write`] for command-line tools and tests.
    pub fn write_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.submit(f)
            .blocking_recv()
            .map_err(|_| StoreError::Db("metadata writer stopped".into()))?
    }
}

impl Drop for Meta {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish queued work and exit.
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Most writes one transaction gathers before committing.
const MAX_BATCH: usize = 256;

fn writer_loop(db: &Database, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("metadata database: {e}");
                for job in batch {
                    // A job needs a transaction to run; answer without one.
                    drop(job);
                    tracing::error!("{msg}");
                }
                continue;
            }
        };
        let mut replies = Vec::with_capacity(batch.len());
        let mut storage_failed = false;
        for job in batch {
            let (reply, failed) = job(&txn);
            storage_failed |= failed;
            replies.push(reply);
        }
        let outcome = if storage_failed {
            let _ = txn.abort();
            Err("metadata database write failed; nothing was changed".to_string())
        } else {
            txn.commit()
                .map_err(|e| format!("metadata database commit failed: {e}"))
        };
        if let Err(e) = &outcome {
            tracing::error!("{e}");
        }
        for reply in replies {
            reply(outcome.clone());
        }
    }
}
