//! The private local endpoint: `<root>/serve.sock`.
//!
//! Only one process can hold a root's metadata database, and `berth serve`
//! holds it for as long as it runs. Commands on the same root (`pull`,
//! `push`, `tag`, the builder) write blobs straight into `blobs/` and send
//! the metadata here: the same registry API with full rights (whatever
//! `--read-only` / `--no-delete` say for the public listener) plus one admin
//! route that links a blob already committed under `blobs/` into a
//! repository (`POST /_berth/v1/link/<repo>/<digest>`).
//!
//! Access control is the socket's mode (0600, owned by the server's user)
//! and a peer-credential check: only the server's own uid and root may talk
//! to it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use berth_store::{LINK_ROUTE, SOCKET_NAME};
use tokio::net::{UnixListener, UnixStream};

use crate::{blobs::parse_digest, empty, ApiError, Registry, Settings, Shared};

/// Where the local endpoint of `root` lives.
pub fn socket_path(root: &Path) -> PathBuf {
    root.join(SOCKET_NAME)
}

/// Binds `<root>/serve.sock`, replacing a stale socket left by a server that
/// was killed. Refuses if a live server answers on it.
pub fn bind(root: &Path) -> io::Result<LocalListener> {
    let path = socket_path(root);
    if path.exists() || path.symlink_metadata().is_ok() {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is served by another live process; stop it first",
                        path.display()
                    ),
                ))
            }
            // Nobody listens: a stale socket (or junk) from a killed server.
            Err(_) => std::fs::remove_file(&path)?,
        }
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind the local endpoint {}: {e}", path.display()),
        )
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(LocalListener {
        inner: listener,
        path,
        // SAFETY: geteuid cannot fail.
        uid: unsafe { libc::geteuid() },
    })
}

/// A Unix listener that drops connections from other users.
pub struct LocalListener {
    inner: UnixListener,
    path: PathBuf,
    uid: u32,
}

impl LocalListener {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl crate::conn::Accept for LocalListener {
    type Io = UnixStream;

    async fn accept(&mut self) -> io::Result<(Self::Io, Option<String>)> {
        loop {
            let (stream, _) = self.inner.accept().await?;
            match stream.peer_cred() {
                Ok(c) if c.uid() == self.uid || c.uid() == 0 => return Ok((stream, None)),
                Ok(c) => tracing::warn!(
                    uid = c.uid(),
                    "refused a local connection from another user"
                ),
                Err(e) => tracing::warn!("refused a local connection: {e}"),
            }
        }
    }
}

/// `registry` with full rights, as the local endpoint serves it: no
/// read-only or no-delete mode, no upload session caps.
fn full_rights(registry: &Registry) -> Shared {
    Arc::new(Registry {
        store: registry.store.clone(),
        settings: Settings {
            read_only: false,
            delete_enabled: true,
            uploads: crate::UploadLimits {
                max_sessions: 0,
                max_sessions_per_client: 0,
                ..registry.settings.uploads.clone()
            },
            ..registry.settings.clone()
        },
    })
}

/// The local endpoint's requests: the registry API with full rights, plus
/// the link route.
pub(crate) fn handler(registry: &Registry) -> crate::conn::Handler {
    let full = full_rights(registry);
    Arc::new(move |req, _client| {
        let reg = full.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            dispatch(&reg, parts.method, parts.uri, parts.headers, body).await
        })
    })
}

async fn dispatch(
    reg: &Registry,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match uri.path().strip_prefix(LINK_ROUTE) {
        Some(rest) => {
            crate::body::drain(body).await;
            let resp = match link(reg, &method, rest).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            };
            crate::with_api_version(resp)
        }
        None => crate::respond(reg, method, uri, headers, body, None).await,
    }
}

/// `POST /_berth/v1/link/<repo>/<digest>`: 201 with the blob's size in
/// `Berth-Blob-Size`, or 404 BLOB_UNKNOWN if the blob is not committed
/// under `blobs/`.
async fn link(reg: &Registry, method: &Method, rest: &str) -> crate::Result<Response> {
    if method != Method::POST {
        return Err(ApiError::unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} is not allowed on the link route (use POST)"),
        ));
    }
    let (repo, digest) = rest.rsplit_once('/').ok_or_else(|| {
        ApiError::unsupported(
            StatusCode::NOT_FOUND,
            format!("the link route is {LINK_ROUTE}<repository>/<digest>"),
        )
    })?;
    berth_oci::validate_repository(repo)?;
    let digest = parse_digest(digest)?;
    let size = reg.store.link_stored_blob(repo, &digest).await?;
    Ok(empty(
        StatusCode::CREATED,
        &[
            ("docker-content-digest", digest.to_string()),
            ("berth-blob-size", size.to_string()),
        ],
    ))
}
