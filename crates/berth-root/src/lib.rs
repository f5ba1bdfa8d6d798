//! One handle on a berth root for everything that is not `berth serve`:
//! the CLI commands (`pull`, `push`, `images`, `tag`, `rmi`, `import`, ...)
//! and the builder.
//!
//! Only one process can open a root's metadata database. [`LocalRoot::open`]
//! opens it directly when it is free; when `berth serve` holds it, the
//! handle talks to the server's private local endpoint (`<root>/serve.sock`)
//! instead, so whatever the command stores is visible to the registry at
//! once. Blobs are plain files either way: they are written straight into
//! `blobs/` ([`LocalRoot::blobs`]) and only linked through the server.
//!
//! When another *command* holds the database (no server), opening waits a
//! bounded time ([`OpenOptions::wait`], default 10 s, `BERTH_LOCK_TIMEOUT`
//! seconds) for it to finish, then fails naming the holder. Waiting rather
//! than failing at once makes scripts like `berth pull a & berth pull b`
//! work; the bound keeps a forgotten long-running process from hanging
//! every command silently.

mod client;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_oci::{Digest, ParsedManifest, Reference};
use berth_store::{
    Access, BlobStore, LockReason, ManifestEntry, PutManifest, RootLock, Store, StoreError,
    LINK_ROUTE, SOCKET_NAME,
};
use bytes::Bytes;
use hyper::{Method, StatusCode};

use client::SocketClient;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the root {root} is locked by another berth process ({holder}) and no `berth serve` \
         answers on its {SOCKET_NAME} (waited {waited}s): wait for that process to finish, \
         or run `berth serve --root {root}` so that several processes can share the root"
    )]
    Locked {
        root: PathBuf,
        holder: String,
        waited: u64,
    },
    #[error("lost the berth server on {socket}: {reason} (is `berth serve` still running?)")]
    ServerGone { socket: PathBuf, reason: String },
    #[error("the berth server refused the request: {code}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = RootError> = std::result::Result<T, E>;

impl RootError {
    /// A manifest DELETE refused because an index of the repository still
    /// names the manifest (409 from a server, the store's error directly).
    pub fn is_manifest_referenced(&self) -> bool {
        matches!(
            self,
            RootError::Store(StoreError::ManifestReferenced { .. })
                | RootError::Server { status: 409, .. }
        )
    }
}

/// How [`LocalRoot::open_with`] behaves when the root is busy.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How long to wait for another command (or gc) to release the root.
    pub wait: Duration,
}

/// Default wait for a busy root.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(10);

impl Default for OpenOptions {
    /// [`DEFAULT_LOCK_WAIT`], or `BERTH_LOCK_TIMEOUT` seconds if set.
    fn default() -> Self {
        let wait = std::env::var("BERTH_LOCK_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_LOCK_WAIT);
        OpenOptions { wait }
    }
}

enum Mode {
    Direct(Arc<Store>),
    Served {
        client: SocketClient,
        // Keeps gc out while this process writes blobs nobody links yet.
        _lock: RootLock,
    },
}

/// An opened root: direct, or through the server that holds it.
pub struct LocalRoot {
    root: PathBuf,
    blobs: BlobStore,
    mode: Mode,
}

/// How often a waiting open looks again.
const RETRY: Duration = Duration::from_millis(100);

impl LocalRoot {
    /// Opens `root` (creating it if needed) with the default options.
    pub fn open(root: &Path) -> Result<LocalRoot> {
        Self::open_with(root, &OpenOptions::default())
    }

    /// Opens `root`: directly if its database is free, else through the
    /// local endpoint of the `berth serve` holding it; else waits up to
    /// `opts.wait` for the holder to go away. Blocking (it may sleep).
    pub fn open_with(root: &Path, opts: &OpenOptions) -> Result<LocalRoot> {
        let start = Instant::now();
        loop {
            let busy = match Store::open(root, Access::Shared) {
                Ok(store) => {
                    return Ok(LocalRoot {
                        root: root.to_path_buf(),
                        blobs: store.blobs.clone(),
                        mode: Mode::Direct(Arc::new(store)),
                    })
                }
                Err(StoreError::Locked(_, LockReason::Database)) => {
                    let socket = root.join(SOCKET_NAME);
                    // Connecting proves a live server: a stale socket left
                    // by a killed one refuses the connection.
                    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                        let lock = RootLock::acquire(root, Access::Shared)?;
                        tracing::debug!(socket = %socket.display(), "using the server's local endpoint");
                        return Ok(LocalRoot {
                            root: root.to_path_buf(),
                            blobs: BlobStore::open(root)?,
                            mode: Mode::Served {
                                client: SocketClient::new(&socket),
                                _lock: lock,
                            },
                        });
                    }
                    RootError::Locked {
                        root: root.to_path_buf(),
                        holder: berth_store::database_holder(root)
                            .unwrap_or_else(|| "holder unknown".into()),
                        waited: start.elapsed().as_secs(),
                    }
                }
                Err(e @ StoreError::Locked(_, LockReason::Gc)) => RootError::Store(e),
                Err(e) => return Err(e.into()),
            };
            if start.elapsed() >= opts.wait {
                return Err(busy);
            }
            std::thread::sleep(RETRY);
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this handle goes through a running `berth serve`.
    pub fn is_served(&self) -> bool {
        matches!(self.mode, Mode::Served { .. })
    }

    /// The opened store, when this process holds the database itself.
    pub fn store(&self) -> Option<&Arc<Store>> {
        match &self.mode {
            Mode::Direct(s) => Some(s),
            Mode::Served { .. } => None,
        }
    }

    /// The blob files, written and read directly in both modes. A blob
    /// written here is visible in a repository only after [`Self::link_blob`].
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The size of `digest` if `repo` may serve it.
    pub async fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        match &self.mode {
            Mode::Direct(s) => Ok(s.blob_in_repo(repo, digest)?),
            Mode::Served { client, .. } => {
                let r = client
                    .request(
                        Method::HEAD,
                        &format!("/v2/{repo}/blobs/{digest}"),
                        &[],
                        Bytes::new(),
                    )
                    .await?;
                match r.status {
                    StatusCode::OK => Ok(r
                        .header("content-length")
                        .and_then(|l| l.parse().ok())
                        .or(self.blobs.size(digest)?)),
                    StatusCode::NOT_FOUND => Ok(None),
                    _ => Err(r.error()),
                }
            }
        }
    }

    /// Links a blob already committed under `blobs/` into `repo`; returns
    /// its size. `BlobUnknown` if it is not in the store.
    pub async fn link_blob(&self, repo: &str, digest: &Digest) -> Result<u64> {
        match &self.mode {
            Mode::Direct(s) => Ok(s.link_stored_blob(repo, digest).await?),
            Mode::Served { client, .. } => {
                let r = client
                    .request(
                        Method::POST,
                        &format!("{LINK_ROUTE}{repo}/{digest}"),
                        &[],
                        Bytes::new(),
                    )
                    .await?;
                if r.status == StatusCode::CREATED {
                    if let Some(size) = r.header("berth-blob-size").and_then(|s| s.parse().ok()) {
                        return Ok(size);
                    }
                }
                if r.code().as_deref() == Some("BLOB_UNKNOWN") {
                    return Err(StoreError::BlobUnknown(digest.clone()).into());
                }
                Err(r.error())
            }
        }
    }

    /// Stores a manifest byte-exact in `repo`, under `tag` if given (else
    /// by digest only); returns its digest. Every blob it references must be
    /// linked into `repo` first, and an index's children stored there.
    pub async fn put_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        bytes: Bytes,
        media_type: &str,
    ) -> Result<Digest> {
        let parsed = ParsedManifest::parse(&bytes, Some(media_type))
            .map_err(|e| RootError::Manifest(e.to_string()))?;
        if let Some(t) = tag {
            berth_oci::validate_tag(t).map_err(|e| RootError::Other(e.to_string()))?;
        }
        berth_oci::validate_repository(repo).map_err(|e| RootError::Other(e.to_string()))?;
        let digest = Digest::sha256_of(&bytes);
        match &self.mode {
            Mode::Direct(s) => {
                s.put_manifest(PutManifest {
                    repo: repo.to_string(),
                    tag: tag.map(str::to_string),
                    digest: digest.clone(),
                    bytes: bytes.to_vec(),
                    parsed,
                    allow_sparse_index: false,
                })
                .await?;
            }
            Mode::Served { client, .. } => {
                let reference = tag.map_or_else(|| digest.to_string(), str::to_string);
                let r = client
                    .request(
                        Method::PUT,
                        &format!("/v2/{repo}/manifests/{reference}"),
                        &[("content-type", &parsed.media_type)],
                        bytes,
                    )
                    .await?;
                if r.status != StatusCode::CREATED {
                    return Err(r.error());
                }
            }
        }
        Ok(digest)
    }

    /// The manifest `reference` names in `repo`, if any.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<Option<ManifestEntry>> {
        match &self.mode {
            Mode::Direct(s) => Ok(s.manifest(repo, reference)?),
            Mode::Served { client, .. } => {
                let r = client
                    .request(
                        Method::GET,
                        &format!("/v2/{repo}/manifests/{reference}"),
                        &[],
                        Bytes::new(),
                    )
                    .await?;
                match r.status {
                    StatusCode::OK => {}
                    StatusCode::NOT_FOUND => return Ok(None),
                    _ => return Err(r.error()),
                }
                let digest = Digest::sha256_of(&r.body);
                if let Reference::Digest(want) = reference {
                    if Digest::of(want.algorithm(), &r.body) != *want {
                        return Err(RootError::Other(format!(
                            "the server returned content that does not match {want}"
                        )));
                    }
                }
                let digest = match r.header("docker-content-digest") {
                    Some(d) => d.parse().unwrap_or(digest),
                    None => digest,
                };
                Ok(Some(ManifestEntry {
                    digest,
                    media_type: r.header("content-type").unwrap_or_default().to_string(),
                    bytes: r.body.to_vec(),
                }))
            }
        }
    }

    /// The digest `reference` names in `repo`, if any.
    pub async fn resolve(&self, repo: &str, reference: &Reference) -> Result<Option<Digest>> {
        Ok(self.manifest(repo, reference).await?.map(|m| m.digest))
    }

    /// Every tag of `repo` in lexical order; `None` if `repo` is unknown.
    pub async fn tags(&self, repo: &str) -> Result<Option<Vec<String>>> {
        match &self.mode {
            Mode::Direct(s) => Ok(s.tags(repo, None, None)?.map(|p| p.items)),
            Mode::Served { client, .. } => {
                let path = format!("/v2/{repo}/tags/list");
                match self::paged(client, &path, "tags").await? {
                    Paged::Items(t) => Ok(Some(t)),
                    Paged::NotFound => Ok(None),
                }
            }
        }
    }

    /// Every repository in lexical order.
    pub async fn catalog(&self) -> Result<Vec<String>> {
        match &self.mode {
            Mode::Direct(s) => Ok(s.catalog(None, None)?.items),
            Mode::Served { client, .. } => {
                match self::paged(client, "/v2/_catalog", "repositories").await? {
                    Paged::Items(r) => Ok(r),
                    Paged::NotFound => Ok(Vec::new()),
                }
            }
        }
    }

    /// Removes a tag; the manifest stays (reachable by digest). `false` if
    /// there was no such tag.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool> {
        match &self.mode {
            Mode::Direct(s) => Ok(s.delete_tag(repo, tag).await?),
            Mode::Served { client, .. } => self::delete(client, repo, tag).await,
        }
    }

    /// Removes a manifest and every tag pointing at it from `repo`; its
    /// blobs stay until `berth gc`. `false` if `repo` does not have it.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool> {
        match &self.mode {
            Mode::Direct(s) => Ok(s.delete_manifest(repo, digest).await?),
            Mode::Served { client, .. } => self::delete(client, repo, &digest.to_string()).await,
        }
    }
}

async fn delete(client: &SocketClient, repo: &str, reference: &str) -> Result<bool> {
    let r = client
        .request(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[],
            Bytes::new(),
        )
        .await?;
    match r.status {
        StatusCode::ACCEPTED => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        _ => Err(r.error()),
    }
}

enum Paged {
    Items(Vec<String>),
    NotFound,
}

/// Follows `last=` pages of a listing until the server sends no `Link`.
async fn paged(client: &SocketClient, path: &str, field: &str) -> Result<Paged> {
    const PAGE: usize = 10_000;
    let mut out: Vec<String> = Vec::new();
    loop {
        let url = match out.last() {
            None => format!("{path}?n={PAGE}"),
            Some(last) => format!("{path}?n={PAGE}&last={last}"),
        };
        let r = client.request(Method::GET, &url, &[], Bytes::new()).await?;
        match r.status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Paged::NotFound),
            _ => return Err(r.error()),
        }
        let v: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| {
            RootError::Other(format!(
                "the server sent an invalid listing for {path}: {e}"
            ))
        })?;
        let items = v
            .get(field)
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let done = items.is_empty() || r.header("link").is_none();
        out.extend(items);
        if done {
            return Ok(Paged::Items(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_timeout_from_the_environment() {
        // Only this test touches the variable.
        std::env::set_var("BERTH_LOCK_TIMEOUT", "0.5");
        assert_eq!(OpenOptions::default().wait, Duration::from_millis(500));
        std::env::set_var("BERTH_LOCK_TIMEOUT", "soon");
        assert_eq!(OpenOptions::default().wait, DEFAULT_LOCK_WAIT);
        std::env::remove_var("BERTH_LOCK_TIMEOUT");
    }

    #[test]
    fn busy_root_without_a_server_times_out_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path(), Access::Shared).unwrap();
        let start = Instant::now();
        let err = LocalRoot::open_with(
            dir.path(),
            &OpenOptions {
                wait: Duration::from_millis(300),
            },
        )
        .err()
        .expect("the database is held");
        assert!(start.elapsed() >= Duration::from_millis(300));
        let msg = err.to_string();
        assert!(matches!(err, RootError::Locked { .. }), "{msg}");
        assert!(msg.contains("berth serve --root"), "{msg}");
    }
}
