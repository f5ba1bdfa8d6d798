//! `berth serve`: the OCI distribution-spec v1.1 API (plus Docker's schema 2
//! compatibility) over a berth root.
//!
//! Requests go through one dispatcher ([`route::parse`] picks the endpoint,
//! repository names are checked against the spec grammar) to a handler in
//! [`blobs`], [`uploads`], [`manifests`] or [`listing`]. Handlers only speak
//! HTTP; storage rules live in `berth-store`. [`serve`] also serves the
//! root's private [`local`] endpoint (`<root>/serve.sock`) for other berth
//! processes on the same root. Connections are served by [`conn`] within
//! the [`limits`] (caps, timeouts, minimum body rate).

pub mod blobs;
pub mod body;
mod conn;
pub mod error;
pub mod limits;
pub mod listing;
pub mod local;
pub mod manifests;
pub mod route;
pub mod uploads;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use berth_store::Store;

pub use error::ApiError;
pub use limits::{BodyRate, Limits, UploadLimits};
use route::Route;

/// Largest manifest accepted; larger pushes get 413.
pub const DEFAULT_MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Behaviour switches of a running registry.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Refuse every write (pushes, uploads, deletes) with 405 UNSUPPORTED.
    pub read_only: bool,
    /// Allow DELETE of manifests, tags and blobs.
    pub delete_enabled: bool,
    /// Accept an index whose child manifests are not in the repository.
    pub allow_sparse_index: bool,
    pub max_manifest_bytes: usize,
    /// Connection caps and timeouts of the public listener.
    pub limits: Limits,
    /// Upload session caps and expiry.
    pub uploads: UploadLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            read_only: false,
            delete_enabled: true,
            allow_sparse_index: false,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            limits: Limits::default(),
            uploads: UploadLimits::default(),
        }
    }
}

pub struct Registry {
    pub store: Arc<Store>,
    pub settings: Settings,
}

pub type Shared = Arc<Registry>;

/// What a handler sees of a request.
pub struct Request {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Body,
    pub query: HashMap<String, String>,
    /// The client's key for per-client caps (see [`limits::client_key`]);
    /// `None` on the local endpoint and behind [`router`].
    pub client: Option<Arc<str>>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// The router: every path goes to the dispatcher. For embedding berth's
/// API in another axum server (no connection limits, no per-client caps:
/// [`serve`] has those).
pub fn router(registry: Shared) -> Router {
    Router::new().fallback(dispatch).with_state(registry)
}

async fn dispatch(
    State(reg): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(&reg, method, uri, headers, body, None).await
}

/// Answers one request of `client`.
pub(crate) async fn respond(
    reg: &Registry,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    client: Option<Arc<str>>,
) -> Response {
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let req = Request {
        method,
        uri,
        headers,
        body,
        query,
        client,
    };
    tracing::debug!(method = %req.method, uri = %req.uri, "request");
    let resp = match handle(reg, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    with_api_version(resp)
}

pub(crate) fn with_api_version(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn handle(reg: &Registry, mut req: Request) -> Result<Response> {
    let result = handle_route(reg, &mut req).await;
    if result.is_err() {
        // Handlers leave the body in `req` unless they consumed it.
        body::drain(std::mem::take(&mut req.body)).await;
    }
    result
}

async fn handle_route(reg: &Registry, req: &mut Request) -> Result<Response> {
    let path = req.uri.path().to_string();
    let Some(route) = route::parse(&path) else {
        return Err(ApiError::unsupported(
            StatusCode::NOT_FOUND,
            format!("no such endpoint: {path}"),
        ));
    };
    let name = match route {
        Route::Base | Route::Catalog => None,
        Route::Tags(n)
        | Route::Manifest(n, _)
        | Route::Blob(n, _)
        | Route::UploadStart(n)
        | Route::Upload(n, _)
        | Route::Referrers(n, _) => Some(n),
    };
    if let Some(name) = name {
        berth_oci::validate_repository(name)?;
    }
    let m = req.method.clone();
    let is_write = !matches!(m, Method::GET | Method::HEAD);
    if is_write && reg.settings.read_only && route != Route::Base {
        return Err(ApiError::read_only());
    }
    // Cancelling an upload session deletes no content: not covered.
    if m == Method::DELETE
        && !reg.settings.delete_enabled
        && matches!(route, Route::Manifest(..) | Route::Blob(..))
    {
        return Err(ApiError::delete_disabled());
    }
    match (route, m) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(listing::base()),
        (Route::Catalog, Method::GET) => listing::catalog(reg, req),
        (Route::Tags(n), Method::GET) => listing::tags(reg, n, req),
        (Route::Referrers(n, d), Method::GET) => listing::referrers(reg, n, d, req),
        (Route::Manifest(n, r), Method::GET | Method::HEAD) => manifests::get(reg, n, r, req),
        (Route::Manifest(n, r), Method::PUT) => manifests::put(reg, n, r, req).await,
        (Route::Manifest(n, r), Method::DELETE) => manifests::delete(reg, n, r).await,
        (Route::Blob(n, d), Method::GET | Method::HEAD) => blobs::get(reg, n, d, req),
        (Route::Blob(n, d), Method::DELETE) => blobs::delete(reg, n, d).await,
        (Route::UploadStart(n), Method::POST) => uploads::start(reg, n, req).await,
        (Route::Upload(n, id), Method::GET) => uploads::status(reg, n, id).await,
        (Route::Upload(n, id), Method::PATCH) => uploads::patch(reg, n, id, req).await,
        (Route::Upload(n, id), Method::PUT) => uploads::finish(reg, n, id, req).await,
        (Route::Upload(n, id), Method::DELETE) => uploads::cancel(reg, n, id).await,
        (_, m) => Err(ApiError::unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {m} is not allowed on {path}"),
        )),
    }
}

/// An empty-bodied response with the given headers.
pub fn empty(status: StatusCode, headers: &[(&'static str, String)]) -> Response {
    let mut resp = (status, Body::empty()).into_response();
    let h = resp.headers_mut();
    h.insert("content-length", HeaderValue::from_static("0"));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(*name, v);
        }
    }
    resp
}

/// Serves `registry` on `listener`, and with full rights on the root's
/// private local endpoint (`<root>/serve.sock`), until `shutdown` resolves;
/// requests in flight then finish before this returns and the socket is
/// removed. If the socket cannot be bound (say, the root's path is longer
/// than a socket address allows), the registry runs without it and other
/// berth commands on this root report the root as locked.
///
/// The connection caps are fitted into the process's file-descriptor limit
/// ([`limits::Budget`]; `berth serve` raises the soft limit to the hard one
/// first), and upload sessions are swept (idle files closed, expired
/// sessions removed) while it runs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Shared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stop = Arc::new(stop);
    let signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = signal.send(true);
    });

    let limits = &registry.settings.limits;
    let nofile = limits::nofile_limit();
    let budget = limits::Budget::fit(limits, nofile);
    if limits.max_connections != 0 && budget.max_connections < limits.max_connections {
        tracing::warn!(
            "the file-descriptor limit ({nofile}) allows {} connections, not the {} configured \
             (raise `ulimit -n` to serve more)",
            budget.max_connections,
            limits.max_connections
        );
    }
    tracing::debug!(?budget, nofile, "connection and file budget");
    registry
        .store
        .uploads
        .set_max_open_files(budget.session_files);
    let public = conn::ConnLimits {
        header_read_timeout: limits.header_read_timeout,
        idle_timeout: limits.idle_timeout,
        min_body_rate: limits.min_body_rate,
        max_connections: budget.max_connections,
        max_connections_per_client: budget.max_connections_per_client,
        refusals: budget.refusals,
    };
    let sweeper = tokio::spawn(sweep_uploads(registry.clone(), stopped.clone()));

    let local = match local::bind(registry.store.root()) {
        Ok(l) => {
            tracing::info!(socket = %l.path().display(), "local endpoint listening");
            let path = l.path().to_path_buf();
            // The local peers are the server's own user and root: no body
            // rate, no per-client cap, only the descriptor budget.
            let limits = conn::ConnLimits {
                min_body_rate: None,
                max_connections: budget.local_connections,
                max_connections_per_client: 0,
                ..public.clone()
            };
            let server = conn::serve(l, limits, local::handler(&registry), stopped.clone());
            Some((tokio::spawn(server), path))
        }
        Err(e) => {
            tracing::warn!("serving without the local endpoint: {e}");
            None
        }
    };

    let reg = registry.clone();
    let handler: conn::Handler = Arc::new(move |req, client| {
        let reg = reg.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            respond(&reg, parts.method, parts.uri, parts.headers, body, client).await
        })
    });
    let result = conn::serve(listener, public, handler, stopped).await;
    // Also when the public listener failed: the local one stops with it.
    let _ = stop.send(true);
    if let Some((task, path)) = local {
        match task.await {
            Ok(Err(e)) => tracing::warn!("local endpoint: {e}"),
            Err(e) => tracing::warn!("local endpoint task: {e}"),
            Ok(Ok(())) => {}
        }
        let _ = std::fs::remove_file(path);
    }
    let _ = sweeper.await;
    result
}

/// Closes the files of idle upload sessions and removes expired ones, a
/// few times per `close_idle_after` / `max_age`, until `stop`.
async fn sweep_uploads(reg: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let u = &reg.settings.uploads;
    let mut every = u.close_idle_after / 2;
    if let Some(age) = u.max_age {
        every = every.min(age / 4);
    }
    let every = every.clamp(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(60),
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        match reg.store.sweep_uploads(u.close_idle_after, u.max_age).await {
            Ok(r) => {
                for e in &r.expired {
                    tracing::info!(
                        upload = %e.id,
                        repository = %e.repo,
                        bytes = e.size,
                        "upload session expired after {}s idle (uploads.max_age)",
                        e.idle.as_secs()
                    );
                }
                if r.closed > 0 {
                    tracing::debug!("closed {} idle upload session files", r.closed);
                }
            }
            Err(e) => tracing::warn!("sweeping upload sessions: {e}"),
        }
    }
}
