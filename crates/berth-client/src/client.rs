//! `RegistryClient`: the distribution API of one registry host.
//!
//! HTTPS with the system's root certificates by default; plain HTTP for
//! `localhost`, `127.0.0.0/8`, `::1` and registries the caller marks
//! insecure. Idempotent requests are retried with exponential backoff on
//! connection errors, 5xx and 429; every request goes through the
//! authentication flow of [`crate::auth`].

use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use berth_oci::media_type as mt;
use berth_oci::{Digest, Hasher};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    LINK, LOCATION, RANGE, RETRY_AFTER,
};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::{repository_scope, Auth, CATALOG_SCOPE};
use crate::credentials::{Credential, DockerConfig};
use crate::error::{Error, Result};
use crate::settings::{format_duration, format_size, Timeouts};

/// Largest manifest accepted from a registry: 4 MiB, what berth serve
/// accepts by default (`max_manifest_bytes`), distribution's limit and
/// containers/image's (skopeo, podman) `MaxManifestBodySize`. A manifest
/// fetched by tag has no declared size, so this is its only bound.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Largest page of a tag list or catalog.
pub const MAX_LIST_BYTES: usize = 16 << 20;
/// Largest token service answer (containers/image's `MaxAuthTokenBodySize`).
pub const MAX_TOKEN_BYTES: usize = 1 << 20;
/// How much of an error response is read for its message.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// A listing that goes on for more pages than this is refused (a loop).
const MAX_PAGES: usize = 100_000;

/// What every manifest request accepts unless told otherwise.
pub const DEFAULT_MANIFEST_ACCEPT: &[&str] = &[
    mt::OCI_MANIFEST,
    mt::OCI_INDEX,
    mt::DOCKER_MANIFEST,
    mt::DOCKER_MANIFEST_LIST,
];

/// How to talk to a registry.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub credential: Option<Credential>,
    /// Use plain HTTP (always the case for loopback hosts).
    pub insecure: bool,
    /// Tries of an idempotent request (1 = no retry).
    pub max_attempts: u32,
    /// First backoff delay; doubled after each failed try (at most 10 s).
    pub retry_delay: Duration,
    pub user_agent: String,
    /// Connect, idle and per-request timeouts ([`Timeouts::from_env`] by
    /// default).
    pub timeouts: Timeouts,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            credential: None,
            insecure: false,
            max_attempts: 4,
            retry_delay: Duration::from_millis(250),
            user_agent: format!("berth/{}", env!("CARGO_PKG_VERSION")),
            timeouts: Timeouts::from_env(),
        }
    }
}

impl ClientConfig {
    /// The default config with `registry`'s credential from the Docker
    /// config (helpers included). Runs helpers: call it off the async
    /// threads if that matters.
    pub fn from_docker_config(registry: &str) -> Result<ClientConfig> {
        Ok(ClientConfig {
            credential: DockerConfig::load()?.get(registry)?,
            ..ClientConfig::default()
        })
    }
}

/// A manifest as the registry served it (byte-exact).
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

/// What a HEAD of a manifest tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// What a manifest PUT answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedManifest {
    pub digest: Digest,
    /// The `OCI-Subject` header: the registry indexed the manifest's subject.
    pub subject: Option<Digest>,
}

/// The referrers tag schema's tag for `subject`: `<alg>-<hex>` (at most
/// 128 characters, as the distribution spec says).
pub fn referrers_tag(subject: &Digest) -> String {
    let hex = subject.hex();
    let tag = format!("{}-{}", subject.algorithm().as_str(), hex);
    tag.chars().take(128).collect()
}

/// A blob download: `size` is the number of bytes `stream` will yield when
/// the registry said so. A download from offset 0 is verified: the stream
/// ends with [`Error::DigestMismatch`] instead of `None` if the content does
/// not match the digest. With a declared size, the stream never yields
/// more than it ([`Error::SizeMismatch`] at the first byte too many).
pub struct Blob {
    pub size: Option<u64>,
    pub stream: BlobStream,
}

pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Is `registry` (host[:port]) a loopback address, spoken to in plain HTTP?
pub fn is_loopback(registry: &str) -> bool {
    let host = if registry.parse::<IpAddr>().is_ok() {
        registry
    } else if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match registry.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => registry,
        }
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.octets()[0] == 127,
        Ok(IpAddr::V6(v6)) => {
            v6.is_loopback()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| Ipv4Addr::is_loopback(&v4))
        }
        Err(_) => false,
    }
}

struct Inner {
    registry: String,
    base: Url,
    http: reqwest::Client,
    /// For blob uploads: no read deadline (reqwest's counts from the start
    /// of the request, body included); the upload watches its own progress.
    upload: reqwest::Client,
    auth: Auth,
    config: ClientConfig,
}

/// A client for one registry. Cheap to clone (shared state: connections,
/// tokens), so parallel transfers can each hold one.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

/// One request, rebuildable for retries.
struct Call<'a> {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Bytes>,
    scopes: Vec<String>,
    repository: Option<&'a str>,
    /// May be sent again after a transient failure.
    retry: bool,
    /// Bounded by the overall request timeout (everything but blob bodies).
    overall: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, url: Url, repository: Option<&'a str>, scopes: Vec<String>) -> Self {
        let retry = method != Method::POST;
        Call {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            scopes,
            repository,
            retry,
            overall: true,
        }
    }

    /// What the request is about, for timeout messages.
    fn what(&self) -> String {
        format!("{} {}", self.method, self.url.path())
    }

    fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Self {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(value: &str) -> Option<&str> {
    let mut rest = value;
    while let Some(start) = rest.find('<') {
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        let after = &rest[end + 1..];
        let params_end = after.find('<').unwrap_or(after.len());
        let params = &after[..params_end];
        if params.split(';').any(|p| {
            let p = p.trim().trim_end_matches(',').trim();
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        }) {
            return Some(target);
        }
        rest = after;
    }
    None
}

/// The registry's error text from a JSON error body, else the body itself.
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        if !e.errors.is_empty() {
            return e
                .errors
                .iter()
                .map(|e| format!("{} {}", e.code, e.message).trim().to_owned())
                .collect::<Vec<_>>()
                .join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    let text = text.trim();
    if text.is_empty() {
        "(no details)".into()
    } else {
        text.to_owned()
    }
}

fn media_type_of(headers: &HeaderMap, body: &[u8]) -> String {
    let header = header_str(headers, "content-type")
        .map(mt::essence)
        .unwrap_or("");
    if !header.is_empty() && header != "application/json" && header != "text/plain" {
        return header.to_owned();
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(body)
        .ok()
        .and_then(|p| p.media_type)
        .unwrap_or_else(|| header.to_owned())
}

impl RegistryClient {
    /// A client for `registry` (`host[:port]`; `docker.io` means Docker Hub).
    pub fn new(registry: &str, config: ClientConfig) -> Result<RegistryClient> {
        let invalid = |detail: String| Error::Protocol {
            registry: registry.to_owned(),
            repository: None,
            detail,
        };
        let host = match registry {
            "docker.io" | "index.docker.io" => berth_oci::reference::DOCKER_HUB_API,
            r => r,
        };
        let scheme = if config.insecure || is_loopback(host) {
            "http"
        } else {
            "https"
        };
        let base = Url::parse(&format!("{scheme}://{host}/"))
            .ok()
            .filter(|u| u.path() == "/" && u.query().is_none() && u.host().is_some())
            .ok_or_else(|| invalid(format!("{registry:?} is not a registry host[:port]")))?;
        let t = config.timeouts;
        let http = t
            .apply(reqwest::Client::builder().user_agent(config.user_agent.clone()))
            .build()
            .map_err(|e| invalid(format!("cannot set up HTTP: {e}")))?;
        let mut upload = reqwest::Client::builder().user_agent(config.user_agent.clone());
        if let Some(c) = t.connect {
            upload = upload.connect_timeout(c);
        }
        let upload = upload
            .build()
            .map_err(|e| invalid(format!("cannot set up HTTP: {e}")))?;
        let auth = Auth::new(registry, base.clone(), config.credential.clone(), t);
        Ok(RegistryClient {
            inner: Arc::new(Inner {
                registry: registry.to_owned(),
                base,
                http,
                upload,
                auth,
                config,
            }),
        })
    }

    pub fn registry(&self) -> &str {
        &self.inner.registry
    }

    /// `scheme://host/` requests go to.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    fn url(&self, repository: Option<&str>, tail: &str) -> Result<Url> {
        if let Some(r) = repository {
            berth_oci::validate_repository(r).map_err(|e| Error::Protocol {
                registry: self.inner.registry.clone(),
                repository: Some(r.to_owned()),
                detail: format!("invalid repository name: {e}"),
            })?;
        }
        let path = match repository {
            Some(r) => format!("v2/{r}/{tail}"),
            None => format!("v2/{tail}"),
        };
        self.inner.base.join(&path).map_err(|e| Error::Protocol {
            registry: self.inner.registry.clone(),
            repository: repository.map(str::to_owned),
            detail: format!("cannot build a URL for {path:?}: {e}"),
        })
    }

    fn check_reference(&self, repository: &str, reference: &str) -> Result<()> {
        berth_oci::Reference::parse(reference)
            .map(drop)
            .map_err(|e| Error::Protocol {
                registry: self.inner.registry.clone(),
                repository: Some(repository.to_owned()),
                detail: format!("invalid tag or digest {reference:?}: {e}"),
            })
    }

    fn transport(&self, attempts: u32, source: reqwest::Error) -> Error {
        Error::Transport {
            registry: self.inner.registry.clone(),
            attempts,
            source,
        }
    }

    /// A failed request: [`Error::Timeout`] naming the limit that fired
    /// (guessed from how long it ran), else [`Error::Transport`].
    /// `started`: when the request began, if it had an overall limit
    /// (blob bodies have none: their timeouts are idle ones).
    fn request_error(
        &self,
        repository: Option<&str>,
        what: String,
        started: Option<Instant>,
        attempts: u32,
        source: reqwest::Error,
    ) -> Error {
        if !source.is_timeout() {
            return self.transport(attempts, source);
        }
        let elapsed = started.map(|s| s.elapsed()).unwrap_or_default();
        let (setting, limit) =
            self.inner
                .config
                .timeouts
                .which(elapsed, source.is_connect(), started.is_some());
        let limit = limit.map(format_duration).unwrap_or_default();
        let detail = if source.is_connect() {
            format!("no connection within {limit}")
        } else if setting == crate::settings::REQUEST_TIMEOUT_ENV {
            format!("not done within {limit}")
        } else {
            format!("no data for {limit}")
        };
        self.timeout(repository, what, detail, setting)
    }

    fn timeout(
        &self,
        repository: Option<&str>,
        what: String,
        detail: String,
        setting: &'static str,
    ) -> Error {
        Error::Timeout {
            registry: self.inner.registry.clone(),
            repository: repository.map(str::to_owned),
            what,
            detail,
            setting,
        }
    }

    fn size_mismatch(&self, repository: &str, what: String, detail: String) -> Error {
        Error::SizeMismatch {
            registry: self.inner.registry.clone(),
            repository: Some(repository.to_owned()),
            what,
            detail,
        }
    }

    async fn backoff(&self, attempt: u32, retry_after: Option<Duration>) {
        let exp = self
            .inner
            .config
            .retry_delay
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(Duration::from_secs(10));
        let delay = retry_after.map_or(exp, |r| r.min(Duration::from_secs(30)).max(exp));
        tracing::debug!(registry = %self.inner.registry, attempt, ?delay, "retrying");
        tokio::time::sleep(delay).await;
    }

    /// Sends `call` with authentication, retries and backoff. Returns any
    /// response but 401 (which becomes [`Error::Unauthorized`]).
    async fn send(&self, call: &Call<'_>) -> Result<Response> {
        let inner = &self.inner;
        let max = inner.config.max_attempts.max(1);
        let mut attempt = 1;
        let mut authenticated = false;
        loop {
            let auth = inner
                .auth
                .header(&inner.http, &call.scopes, call.repository)
                .await?;
            let mut req = inner
                .http
                .request(call.method.clone(), call.url.clone())
                .headers(call.headers.clone());
            if let Some(h) = auth {
                req = req.header(AUTHORIZATION, h);
            }
            if let Some(b) = &call.body {
                req = req.body(b.clone());
            }
            if let (true, Some(t)) = (call.overall, inner.config.timeouts.request) {
                req = req.timeout(t);
            }
            let started = Instant::now();
            let resp = match req.send().await {
                Ok(r) => r,
                // A timeout already waited long: it is not tried again.
                Err(e) if call.retry && attempt < max && !e.is_builder() && !e.is_timeout() => {
                    tracing::debug!(error = %e, url = %call.url, "transient failure");
                    self.backoff(attempt, None).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(self.request_error(
                        call.repository,
                        call.what(),
                        call.overall.then_some(started),
                        attempt,
                        e,
                    ))
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                if authenticated {
                    return Err(inner.auth.refused(call.repository));
                }
                inner
                    .auth
                    .on_unauthorized(&inner.http, resp.headers(), &call.scopes, call.repository)
                    .await?;
                authenticated = true;
                continue;
            }
            if (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
                && call.retry
                && attempt < max
            {
                let retry_after = header_str(resp.headers(), RETRY_AFTER.as_str())
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(Duration::from_secs);
                self.backoff(attempt, retry_after).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The error for an unexpected response (consumes its body for details).
    async fn fail(&self, call: &Call<'_>, resp: Response, what: &str) -> Error {
        let status = resp.status();
        let body = read_prefix(resp, MAX_ERROR_BYTES, self.inner.config.timeouts.idle).await;
        let detail = error_detail(&body);
        let registry = self.inner.registry.clone();
        let repository = call.repository.map(str::to_owned);
        match status {
            StatusCode::NOT_FOUND => Error::NotFound {
                registry,
                repository,
                what: what.to_owned(),
                detail: Some(detail),
            },
            StatusCode::FORBIDDEN => Error::Denied {
                registry,
                repository,
                detail,
            },
            _ => Error::Status {
                registry,
                repository,
                method: call.method.to_string(),
                path: call.url.path().to_owned(),
                status: status.as_u16(),
                detail,
            },
        }
    }

    fn protocol(&self, repository: Option<&str>, detail: String) -> Error {
        Error::Protocol {
            registry: self.inner.registry.clone(),
            repository: repository.map(str::to_owned),
            detail,
        }
    }

    fn mismatch(&self, repository: &str, what: String, expected: Digest, actual: Digest) -> Error {
        Error::DigestMismatch {
            registry: self.inner.registry.clone(),
            repository: Some(repository.to_owned()),
            what,
            expected: Box::new(expected),
            actual: Box::new(actual),
        }
    }

    /// `GET /v2/`: checks that the registry answers and that the credentials
    /// (if any) are accepted — what `berth login` verifies.
    pub async fn ping(&self) -> Result<()> {
        let call = Call::new(Method::GET, self.url(None, "")?, None, Vec::new());
        let resp = self.send(&call).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self.fail(&call, resp, "the registry API (/v2/)").await)
    }

    /// A GET or HEAD of a manifest, accepting `accept` (every manifest type
    /// berth knows when empty).
    fn manifest_call<'r>(
        &self,
        method: Method,
        repository: &'r str,
        reference: &str,
        accept: &[&str],
    ) -> Result<Call<'r>> {
        self.check_reference(repository, reference)?;
        let accept = if accept.is_empty() {
            DEFAULT_MANIFEST_ACCEPT
        } else {
            accept
        };
        Ok(Call::new(
            method,
            self.url(Some(repository), &format!("manifests/{reference}"))?,
            Some(repository),
            vec![repository_scope(repository, false)],
        )
        .header(ACCEPT, &accept.join(", ")))
    }

    /// Fetches a manifest byte-exact. The content is verified against the
    /// reference when it is a digest, and against `Docker-Content-Digest`
    /// when the registry sends one. `accept` empty = [`DEFAULT_MANIFEST_ACCEPT`].
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<Manifest> {
        let call = self.manifest_call(Method::GET, repository, reference, accept)?;
        let mut resp = self.send(&call).await?;
        if resp.status() != StatusCode::OK {
            return Err(self
                .fail(&call, resp, &format!("manifest {reference}"))
                .await);
        }
        let headers = resp.headers().clone();
        let too_large = || {
            self.protocol(
                Some(repository),
                format!(
                    "manifest {reference} is larger than {} (berth's limit for manifests, as \
                     distribution's and skopeo's); refusing it",
                    format_size(MAX_MANIFEST_BYTES as u64)
                ),
            )
        };
        if resp
            .content_length()
            .is_some_and(|l| l > MAX_MANIFEST_BYTES as u64)
        {
            return Err(too_large());
        }
        let started = Instant::now();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_MANIFEST_BYTES {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(self.request_error(
                        Some(repository),
                        format!("reading manifest {reference}"),
                        Some(started),
                        1,
                        e,
                    ))
                }
            }
        }
        let bytes = Bytes::from(body);
        let what = format!("manifest {reference}");
        let pinned = reference.parse::<Digest>().ok();
        let announced =
            header_str(&headers, "docker-content-digest").and_then(|d| d.parse::<Digest>().ok());
        for expected in pinned.iter().chain(announced.iter()) {
            let actual = Digest::of(expected.algorithm(), &bytes);
            if &actual != expected {
                return Err(self.mismatch(repository, what, expected.clone(), actual));
            }
        }
        let digest = pinned
            .or(announced)
            .unwrap_or_else(|| Digest::sha256_of(&bytes));
        Ok(Manifest {
            media_type: media_type_of(&headers, &bytes),
            bytes,
            digest,
        })
    }

    /// `HEAD` of a manifest: `None` if it does not exist.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
        accept: &[&str],
    ) -> Result<Option<ManifestInfo>> {
        let call = self.manifest_call(Method::HEAD, repository, reference, accept)?;
        let resp = self.send(&call).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            _ => {
                return Err(self
                    .fail(&call, resp, &format!("manifest {reference}"))
                    .await)
            }
        }
        let headers = resp.headers();
        let digest = header_str(headers, "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok())
            .or_else(|| reference.parse().ok());
        let size = header_str(headers, CONTENT_LENGTH.as_str()).and_then(|s| s.parse::<u64>().ok());
        let media_type = header_str(headers, CONTENT_TYPE.as_str())
            .map(|c| mt::essence(c).to_owned())
            .unwrap_or_default();
        match (digest, size) {
            (Some(digest), Some(size)) if !media_type.is_empty() => Ok(Some(ManifestInfo {
                digest,
                media_type,
                size,
            })),
            // The registry did not say enough: read the manifest itself.
            _ => {
                let m = self.get_manifest(repository, reference, accept).await?;
                Ok(Some(ManifestInfo {
                    digest: m.digest,
                    media_type: m.media_type,
                    size: m.bytes.len() as u64,
                }))
            }
        }
    }

    /// Pushes a manifest under `reference` (a tag, or its own digest) and
    /// returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest> {
        Ok(self
            .put_manifest_response(repository, reference, media_type, bytes)
            .await?
            .digest)
    }

    /// [`RegistryClient::put_manifest`], also returning the `OCI-Subject`
    /// header: a registry that sends it indexed the manifest's `subject`
    /// itself; without it a client maintains the referrers tag schema
    /// ([`RegistryClient::add_referrer_to_tag_schema`]).
    pub async fn put_manifest_response(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<PushedManifest> {
        self.check_reference(repository, reference)?;
        let digest = match reference.parse::<Digest>() {
            Ok(pinned) => {
                let actual = Digest::of(pinned.algorithm(), &bytes);
                if actual != pinned {
                    return Err(self.protocol(
                        Some(repository),
                        format!("cannot push a manifest whose digest is {actual} as {pinned}"),
                    ));
                }
                pinned
            }
            Err(_) => Digest::sha256_of(&bytes),
        };
        let mut call = Call::new(
            Method::PUT,
            self.url(Some(repository), &format!("manifests/{reference}"))?,
            Some(repository),
            vec![repository_scope(repository, true)],
        )
        .header(CONTENT_TYPE, media_type);
        call.body = Some(bytes.clone());
        let resp = self.send(&call).await?;
        if !resp.status().is_success() {
            return Err(self
                .fail(&call, resp, &format!("manifest {reference}"))
                .await);
        }
        if let Some(announced) = header_str(resp.headers(), "docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok())
        {
            let ours = Digest::of(announced.algorithm(), &bytes);
            if ours != announced {
                return Err(self.mismatch(
                    repository,
                    format!("pushed manifest {reference}"),
                    ours,
                    announced,
                ));
            }
        }
        let subject =
            header_str(resp.headers(), "oci-subject").and_then(|d| d.parse::<Digest>().ok());
        Ok(PushedManifest { digest, subject })
    }

    /// Deletes a manifest (by digest) or a tag.
    pub async fn delete_manifest(&self, repository: &str, reference: &str) -> Result<()> {
        self.check_reference(repository, reference)?;
        let call = Call::new(
            Method::DELETE,
            self.url(Some(repository), &format!("manifests/{reference}"))?,
            Some(repository),
            vec![format!("repository:{repository}:delete")],
        );
        let resp = self.send(&call).await?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(self
            .fail(&call, resp, &format!("manifest {reference}"))
            .await)
    }

    /// The size of a blob if the repository has it.
    pub async fn blob_exists(&self, repository: &str, digest: &Digest) -> Result<Option<u64>> {
        let call = Call::new(
            Method::HEAD,
            self.url(Some(repository), &format!("blobs/{digest}"))?,
            Some(repository),
            vec![repository_scope(repository, false)],
        );
        let resp = self.send(&call).await?;
        match resp.status() {
            StatusCode::OK => header_str(resp.headers(), CONTENT_LENGTH.as_str())
                .and_then(|s| s.parse::<u64>().ok())
                .map(Some)
                .ok_or_else(|| {
                    self.protocol(
                        Some(repository),
                        format!("HEAD of blob {digest} has no Content-Length"),
                    )
                }),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.fail(&call, resp, &format!("blob {digest}")).await),
        }
    }

    /// Downloads a blob from `offset` on (a `Range` request, to resume).
    ///
    /// `size` is the size its descriptor declares: a `Content-Length` that
    /// does not match it fails before the body is read, and the stream stops
    /// at the first byte past it, both with [`Error::SizeMismatch`]. Without
    /// it only the digest bounds what is accepted, so callers that have a
    /// descriptor pass its size. The body has no overall time limit, only the
    /// idle one (a 10 GB layer takes its time; a stalled one does not).
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: Option<u64>,
        offset: u64,
    ) -> Result<Blob> {
        self.download_blob(repository, digest, size, offset, true)
            .await
    }

    /// [`RegistryClient::get_blob`] without the digest check, for callers
    /// whose destination hashes what it stores anyway (a copy into a store,
    /// a layout or another registry): one sha256 pass instead of two. The
    /// size is still enforced.
    pub async fn get_blob_unverified(
        &self,
        repository: &str,
        digest: &Digest,
        size: Option<u64>,
        offset: u64,
    ) -> Result<Blob> {
        self.download_blob(repository, digest, size, offset, false)
            .await
    }

    async fn download_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: Option<u64>,
        offset: u64,
        verify: bool,
    ) -> Result<Blob> {
        if let Some(s) = size {
            if offset > s {
                return Err(self.protocol(
                    Some(repository),
                    format!("cannot resume blob {digest} of {s} bytes at byte {offset}"),
                ));
            }
        }
        let mut call = Call::new(
            Method::GET,
            self.url(Some(repository), &format!("blobs/{digest}"))?,
            Some(repository),
            vec![repository_scope(repository, false)],
        );
        call.overall = false;
        if offset > 0 {
            call = call.header(RANGE, &format!("bytes={offset}-"));
        }
        let resp = self.send(&call).await?;
        let length = resp.content_length();
        let what = format!("blob {digest}");
        let skip = match resp.status() {
            StatusCode::OK => offset,
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let start = header_str(resp.headers(), CONTENT_RANGE.as_str())
                    .and_then(|r| r.strip_prefix("bytes "))
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.parse::<u64>().ok());
                if start != Some(offset) {
                    return Err(self.protocol(
                        Some(repository),
                        format!("asked for blob {digest} from byte {offset}, got {start:?}"),
                    ));
                }
                0
            }
            _ => return Err(self.fail(&call, resp, &format!("blob {digest}")).await),
        };
        // What this response must carry: the rest of the blob from `offset`,
        // plus what a server that ignored `Range` resends before it.
        let expected = size.map(|s| s - offset + skip);
        if let (Some(l), Some(e)) = (length, expected) {
            if l != e {
                let declared = size.unwrap_or_default();
                return Err(self.size_mismatch(
                    repository,
                    what,
                    format!(
                        "the registry announced Content-Length {l}{}, but the descriptor \
                         declares {declared} bytes",
                        if offset > 0 {
                            format!(" from byte {offset}")
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        let stream = Download {
            inner: Box::pin(resp.bytes_stream()),
            hasher: (verify && offset == 0).then(|| digest.algorithm().hasher()),
            expected: digest.clone(),
            skip,
            client: self.clone(),
            repository: repository.to_owned(),
            done: false,
            declared: size,
            offset,
            remaining: size.map(|s| s - offset),
        };
        Ok(Blob {
            size: size
                .map(|s| s - offset)
                .or(length.map(|l| l.saturating_sub(skip))),
            stream: Box::pin(stream),
        })
    }

    /// Uploads a blob of `size` bytes: `POST` a session, then one streaming
    /// `PUT` to its Location (relative or absolute, query kept) with the
    /// digest. The stream is consumed once, so a failure of the `PUT` is
    /// not retried here.
    pub async fn push_blob<S>(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        data: S,
    ) -> Result<()>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let scopes = vec![repository_scope(repository, true)];
        let mut post = Call::new(
            Method::POST,
            self.url(Some(repository), "blobs/uploads/")?,
            Some(repository),
            scopes.clone(),
        );
        // Opening an upload session twice only leaves an unused session.
        post.retry = true;
        let location = self.open_session(&post).await?;
        let mut url = location;
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());

        let failure = Arc::new(Mutex::new(None::<std::io::Error>));
        let seen = failure.clone();
        // The body reports its progress, so a registry that stops taking
        // data is noticed (the idle timeout), while one that takes a 10 GB
        // blob slowly but steadily is not cut off.
        let progress = Arc::new(Progress::new());
        let p = progress.clone();
        let body = reqwest::Body::wrap_stream(
            data.map(move |item| {
                p.touch();
                item.map_err(|e| {
                    let msg = e.to_string();
                    *seen.lock().expect("source error") = Some(e);
                    std::io::Error::other(msg)
                })
            })
            .chain(stream_end(progress.clone())),
        );
        let inner = &self.inner;
        let mut req = inner
            .upload
            .put(url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        if let Some(h) = inner
            .auth
            .header(&inner.http, &scopes, Some(repository))
            .await?
        {
            req = req.header(AUTHORIZATION, h);
        }
        let put = Call::new(Method::PUT, url, Some(repository), scopes);
        let what = format!("upload of blob {digest}");
        let resp = match self
            .watch_upload(req.send(), &progress, repository, &what)
            .await?
        {
            Ok(r) => r,
            Err(e) => {
                if let Some(source) = failure.lock().expect("source error").take() {
                    return Err(Error::Source {
                        registry: inner.registry.clone(),
                        repository: Some(repository.to_owned()),
                        source,
                    });
                }
                return Err(self.request_error(Some(repository), what, None, 1, e));
            }
        };
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(inner.auth.refused(Some(repository))),
            s if s.is_success() => {
                if let Some(announced) = header_str(resp.headers(), "docker-content-digest")
                    .and_then(|d| d.parse::<Digest>().ok())
                {
                    if &announced != digest && announced.algorithm() == digest.algorithm() {
                        return Err(self.mismatch(
                            repository,
                            format!("uploaded blob {digest}"),
                            digest.clone(),
                            announced,
                        ));
                    }
                }
                Ok(())
            }
            _ => Err(self
                .fail(&put, resp, &format!("upload of blob {digest}"))
                .await),
        }
    }

    /// Awaits an upload's response while watching its body: no chunk taken
    /// for the idle timeout, or no answer within the request timeout once
    /// the whole body is sent, is an [`Error::Timeout`].
    async fn watch_upload<F>(
        &self,
        send: F,
        progress: &Progress,
        repository: &str,
        what: &str,
    ) -> Result<reqwest::Result<Response>>
    where
        F: std::future::Future<Output = reqwest::Result<Response>>,
    {
        let t = self.inner.config.timeouts;
        let tick = t
            .idle
            .into_iter()
            .chain(t.request)
            .min()
            .map_or(Duration::from_secs(1), |d| {
                (d / 4).min(Duration::from_secs(1))
            });
        tokio::pin!(send);
        loop {
            tokio::select! {
                r = &mut send => return Ok(r),
                _ = tokio::time::sleep(tick) => {}
            }
            let (done, since) = progress.since();
            let (limit, setting, detail) = if done {
                (
                    t.request,
                    crate::settings::REQUEST_TIMEOUT_ENV,
                    "the registry did not answer within",
                )
            } else {
                (
                    t.idle,
                    crate::settings::IDLE_TIMEOUT_ENV,
                    "the registry took no data for",
                )
            };
            if let Some(limit) = limit {
                if since >= limit {
                    return Err(self.timeout(
                        Some(repository),
                        what.to_owned(),
                        format!("{detail} {}", format_duration(limit)),
                        setting,
                    ));
                }
            }
        }
    }

    /// POSTs `call` and returns the upload session's Location.
    async fn open_session(&self, call: &Call<'_>) -> Result<Url> {
        let resp = self.send(call).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(self.fail(call, resp, "upload").await);
        }
        self.location(call, &resp)
    }

    fn location(&self, call: &Call<'_>, resp: &Response) -> Result<Url> {
        let loc = header_str(resp.headers(), LOCATION.as_str()).ok_or_else(|| {
            self.protocol(call.repository, "upload session without a Location".into())
        })?;
        call.url.join(loc).map_err(|e| {
            self.protocol(
                call.repository,
                format!("upload Location {loc:?} is not a URL ({e})"),
            )
        })
    }

    /// Asks the registry to link `digest` from repository `from` into
    /// `repository` without uploading. `false`: it did not (the caller
    /// uploads instead); the session it opened then is cancelled.
    pub async fn mount_blob(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool> {
        let mut url = self.url(Some(repository), "blobs/uploads/")?;
        berth_oci::validate_repository(from).map_err(|e| {
            self.protocol(
                Some(repository),
                format!("invalid source repository {from:?}: {e}"),
            )
        })?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from);
        let mut call = Call::new(
            Method::POST,
            url,
            Some(repository),
            vec![
                repository_scope(repository, true),
                repository_scope(from, false),
            ],
        );
        call.retry = true;
        let resp = self.send(&call).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(session) = self.location(&call, &resp) {
                    let cancel = Call::new(
                        Method::DELETE,
                        session,
                        Some(repository),
                        call.scopes.clone(),
                    );
                    // Best effort: an abandoned session expires anyway.
                    let _ = self.send(&cancel).await;
                }
                Ok(false)
            }
            _ => Err(self.fail(&call, resp, &format!("blob {digest}")).await),
        }
    }

    /// The manifests that refer to `subject` (their `subject` field), as
    /// descriptors with `artifactType` and annotations, filtered by
    /// `artifact_type` if given. Uses the referrers API
    /// (`GET /v2/<repo>/referrers/<digest>`); a registry without it (404,
    /// as distribution 2.8) is read through the tag schema: the OCI index
    /// under the tag `sha256-<hex>` (filtered here).
    pub async fn referrers(
        &self,
        repository: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<berth_oci::Descriptor>> {
        let mut url = self.url(Some(repository), &format!("referrers/{subject}"))?;
        if let Some(t) = artifact_type {
            url.query_pairs_mut().append_pair("artifactType", t);
        }
        let call = Call::new(
            Method::GET,
            url,
            Some(repository),
            vec![repository_scope(repository, false)],
        )
        .header(ACCEPT, mt::OCI_INDEX);
        let resp = self.send(&call).await?;
        let mut manifests = match resp.status() {
            StatusCode::OK => {
                let started = Instant::now();
                let body = read_capped(resp, MAX_MANIFEST_BYTES)
                    .await
                    .map_err(|e| {
                        self.request_error(
                            Some(repository),
                            format!("reading the referrers of {subject}"),
                            Some(started),
                            1,
                            e,
                        )
                    })?
                    .ok_or_else(|| {
                        self.protocol(
                            Some(repository),
                            format!(
                                "the referrers list of {subject} is larger than {}; refusing it",
                                format_size(MAX_MANIFEST_BYTES as u64)
                            ),
                        )
                    })?;
                self.index_descriptors(repository, &body, "referrers list")?
            }
            StatusCode::NOT_FOUND => {
                tracing::debug!(registry = %self.inner.registry, repository, "no referrers API: reading the tag schema");
                self.tag_schema_referrers(repository, subject)
                    .await?
                    .map(|(_, list)| list)
                    .unwrap_or_default()
            }
            _ => {
                return Err(self
                    .fail(&call, resp, &format!("referrers of {subject}"))
                    .await)
            }
        };
        if let Some(t) = artifact_type {
            manifests.retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(manifests)
    }

    fn index_descriptors(
        &self,
        repository: &str,
        body: &[u8],
        what: &str,
    ) -> Result<Vec<berth_oci::Descriptor>> {
        #[derive(serde::Deserialize)]
        struct Index {
            #[serde(default)]
            manifests: Vec<berth_oci::Descriptor>,
        }
        serde_json::from_slice::<Index>(body)
            .map(|i| i.manifests)
            .map_err(|e| self.protocol(Some(repository), format!("{what}: unreadable index ({e})")))
    }

    /// The tag schema's index for `subject`: its JSON and its descriptors,
    /// `None` if the tag does not exist.
    async fn tag_schema_referrers(
        &self,
        repository: &str,
        subject: &Digest,
    ) -> Result<Option<(serde_json::Value, Vec<berth_oci::Descriptor>)>> {
        let tag = referrers_tag(subject);
        let m = match self.get_manifest(repository, &tag, &[mt::OCI_INDEX]).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let what = format!("referrers tag {tag}");
        let value: serde_json::Value = serde_json::from_slice(&m.bytes).map_err(|e| {
            self.protocol(Some(repository), format!("{what}: unreadable JSON ({e})"))
        })?;
        let list = self.index_descriptors(repository, &m.bytes, &what)?;
        Ok(Some((value, list)))
    }

    /// Adds `referrer` (the descriptor of a manifest whose `subject` is
    /// `subject`, with its `artifactType` and annotations) to the tag
    /// schema's index `sha256-<hex>`: read, add unless already listed,
    /// write back. For registries that did not answer the manifest PUT
    /// with `OCI-Subject`. Not atomic: concurrent writers may lose an entry
    /// (the spec's tag schema has no locking).
    pub async fn add_referrer_to_tag_schema(
        &self,
        repository: &str,
        subject: &Digest,
        referrer: &berth_oci::Descriptor,
    ) -> Result<Digest> {
        let tag = referrers_tag(subject);
        let mut index = match self.tag_schema_referrers(repository, subject).await? {
            Some((value, _)) => value,
            None => serde_json::json!({
                "schemaVersion": 2,
                "mediaType": mt::OCI_INDEX,
                "manifests": [],
            }),
        };
        let obj = index.as_object_mut().ok_or_else(|| {
            self.protocol(
                Some(repository),
                format!("referrers tag {tag} is not a JSON object"),
            )
        })?;
        let entry = serde_json::to_value(referrer).map_err(|e| {
            self.protocol(Some(repository), format!("cannot encode a descriptor: {e}"))
        })?;
        let manifests = obj
            .entry("manifests")
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        let Some(list) = manifests.as_array_mut() else {
            return Err(self.protocol(
                Some(repository),
                format!("referrers tag {tag}: manifests is not a list"),
            ));
        };
        let digest = referrer.digest.to_string();
        if !list
            .iter()
            .any(|d| d.get("digest").and_then(|v| v.as_str()) == Some(digest.as_str()))
        {
            list.push(entry);
        }
        let bytes = serde_json::to_vec(&index)
            .map_err(|e| self.protocol(Some(repository), format!("cannot encode an index: {e}")))?;
        self.put_manifest(repository, &tag, mt::OCI_INDEX, Bytes::from(bytes))
            .await
    }

    /// Every page of a listing, following `Link: <...>; rel="next"`.
    async fn pages(
        &self,
        first: Url,
        repository: Option<&str>,
        scope: String,
        field: &str,
        what: &str,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut url = first;
        for _ in 0..MAX_PAGES {
            let call = Call::new(Method::GET, url.clone(), repository, vec![scope.clone()]);
            let resp = self.send(&call).await?;
            if resp.status() != StatusCode::OK {
                return Err(self.fail(&call, resp, what).await);
            }
            let next = header_str(resp.headers(), LINK.as_str())
                .and_then(next_link)
                .map(|l| url.join(l));
            let started = Instant::now();
            let body = read_capped(resp, MAX_LIST_BYTES)
                .await
                .map_err(|e| {
                    self.request_error(
                        repository,
                        format!("reading the {what}"),
                        Some(started),
                        1,
                        e,
                    )
                })?
                .ok_or_else(|| {
                    self.protocol(
                        repository,
                        format!(
                            "{what}: a page is larger than {}; refusing it",
                            format_size(MAX_LIST_BYTES as u64)
                        ),
                    )
                })?;
            let page: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| self.protocol(repository, format!("{what}: unreadable JSON ({e})")))?;
            match &page[field] {
                serde_json::Value::Null => {}
                serde_json::Value::Array(items) => {
                    for item in items {
                        let s = item.as_str().ok_or_else(|| {
                            self.protocol(repository, format!("{what}: {field} holds a non-string"))
                        })?;
                        out.push(s.to_owned());
                    }
                }
                _ => {
                    return Err(self.protocol(repository, format!("{what}: {field} is not a list")))
                }
            }
            match next {
                None => return Ok(out),
                Some(Ok(n)) if n != url => url = n,
                Some(_) => {
                    return Err(
                        self.protocol(repository, format!("{what}: bad Link to the next page"))
                    )
                }
            }
        }
        Err(self.protocol(repository, format!("{what}: more than {MAX_PAGES} pages")))
    }

    /// All tags of a repository (`page_size`: `n` of each request).
    pub async fn list_tags(
        &self,
        repository: &str,
        page_size: Option<usize>,
    ) -> Result<Vec<String>> {
        let mut url = self.url(Some(repository), "tags/list")?;
        if let Some(n) = page_size {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        self.pages(
            url,
            Some(repository),
            repository_scope(repository, false),
            "tags",
            "tag list",
        )
        .await
    }

    /// All repositories of the registry (`page_size`: `n` of each request).
    pub async fn catalog(&self, page_size: Option<usize>) -> Result<Vec<String>> {
        let mut url = self.url(None, "_catalog")?;
        if let Some(n) = page_size {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        self.pages(
            url,
            None,
            CATALOG_SCOPE.to_owned(),
            "repositories",
            "catalog",
        )
        .await
    }
}

/// When an upload body last moved, and whether it is all sent.
struct Progress {
    start: Instant,
    /// Milliseconds since `start` of the last chunk taken.
    last: std::sync::atomic::AtomicU64,
    done: std::sync::atomic::AtomicBool,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            start: Instant::now(),
            last: 0.into(),
            done: false.into(),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the body is sent, and the time since it last moved.
    fn since(&self) -> (bool, Duration) {
        let last = Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed));
        (
            self.done.load(std::sync::atomic::Ordering::Relaxed),
            self.start.elapsed().saturating_sub(last),
        )
    }
}

/// An empty stream that, when reached, marks the body as sent.
fn stream_end(
    progress: Arc<Progress>,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::once(async move {
        progress.touch();
        progress
            .done
            .store(true, std::sync::atomic::Ordering::Relaxed);
        None
    })
    .filter_map(|x: Option<std::io::Result<Bytes>>| async move { x })
}

/// Reads at most `max` bytes of a response body (the rest is dropped with
/// the connection), giving up after `idle` without data. For error details:
/// failures read as what arrived.
async fn read_prefix(mut resp: Response, max: usize, idle: Option<Duration>) -> Bytes {
    let mut out = Vec::new();
    while out.len() < max {
        let next = resp.chunk();
        let chunk = match idle {
            Some(i) => match tokio::time::timeout(i, next).await {
                Ok(c) => c,
                Err(_) => break,
            },
            None => next.await,
        };
        match chunk {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(max - out.len())]),
            _ => break,
        }
    }
    Bytes::from(out)
}

/// A whole response body of at most `max` bytes: `Ok(None)` if it is
/// larger (refused as soon as that is known).
pub(crate) async fn read_capped(mut resp: Response, max: usize) -> reqwest::Result<Option<Bytes>> {
    if resp.content_length().is_some_and(|l| l > max as u64) {
        return Ok(None);
    }
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await? {
        if out.len() + c.len() > max {
            return Ok(None);
        }
        out.extend_from_slice(&c);
    }
    Ok(Some(Bytes::from(out)))
}

/// A blob download: skips what a server that ignored `Range` resent,
/// stops at the first byte past the declared size, and verifies the digest
/// of whole downloads at the end.
struct Download {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    hasher: Option<Hasher>,
    expected: Digest,
    skip: u64,
    client: RegistryClient,
    repository: String,
    done: bool,
    /// The descriptor's size, if the caller knows it.
    declared: Option<u64>,
    offset: u64,
    /// Bytes still to come (with a declared size).
    remaining: Option<u64>,
}

impl Download {
    fn size_error(&self, detail: String) -> Error {
        self.client
            .size_mismatch(&self.repository, format!("blob {}", self.expected), detail)
    }
}

impl Stream for Download {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(mut chunk))) => {
                    if this.skip > 0 {
                        let n = this.skip.min(chunk.len() as u64) as usize;
                        chunk = chunk.slice(n..);
                        this.skip -= n as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    if let Some(left) = &mut this.remaining {
                        if chunk.len() as u64 > *left {
                            this.done = true;
                            let declared = this.declared.unwrap_or_default();
                            return Poll::Ready(Some(Err(this.size_error(format!(
                                "the registry sent more than the declared {declared} bytes \
                                 (stopped there)"
                            )))));
                        }
                        *left -= chunk.len() as u64;
                    }
                    if let Some(h) = &mut this.hasher {
                        h.update(&chunk);
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    let what = format!("reading blob {}", this.expected);
                    return Poll::Ready(Some(Err(this.client.request_error(
                        Some(&this.repository),
                        what,
                        None,
                        1,
                        e,
                    ))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if let (Some(left @ 1..), Some(declared)) = (this.remaining, this.declared) {
                        let got = declared - this.offset - left;
                        return Poll::Ready(Some(Err(this.size_error(format!(
                            "the body ended after {} of the declared {declared} bytes",
                            this.offset + got
                        )))));
                    }
                    if let Some(h) = this.hasher.take() {
                        let actual = h.finish();
                        if actual != this.expected {
                            return Poll::Ready(Some(Err(this.client.mismatch(
                                &this.repository,
                                format!("blob {}", this.expected),
                                this.expected.clone(),
                                actual,
                            ))));
                        }
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn referrers_tags() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(referrers_tag(&d), format!("sha256-{}", d.hex()));
        assert!(berth_oci::validate_tag(&referrers_tag(&d)).is_ok());
        let long = Digest::of(berth_oci::Algorithm::Sha512, b"x");
        assert_eq!(referrers_tag(&long).len(), 128);
        assert!(berth_oci::validate_tag(&referrers_tag(&long)).is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "LOCALHOST:1",
            "127.0.0.1",
            "127.1.2.3:443",
            "[::1]:5000",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "128.0.0.1",
            "[::2]:5000",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn schemes() {
        let c = RegistryClient::new("localhost:5000", ClientConfig::default()).unwrap();
        assert_eq!(c.base_url().as_str(), "http://localhost:5000/");
        let c = RegistryClient::new("r.example.com", ClientConfig::default()).unwrap();
        assert_eq!(c.base_url().as_str(), "https://r.example.com/");
        let c = RegistryClient::new(
            "r.example.com:5000",
            ClientConfig {
                insecure: true,
                ..ClientConfig::default()
            },
        )
        .unwrap();
        assert_eq!(c.base_url().as_str(), "http://r.example.com:5000/");
        let c = RegistryClient::new("docker.io", ClientConfig::default()).unwrap();
        assert_eq!(c.base_url().as_str(), "https://registry-1.docker.io/");
        assert!(RegistryClient::new("a/b", ClientConfig::default()).is_err());
        assert!(RegistryClient::new("", ClientConfig::default()).is_err());
    }

    #[test]
    fn link_headers() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://x/prev>; rel="prev", <https://x/next?a=1,2>; rel=next"#),
            Some("https://x/next?a=1,2")
        );
        assert_eq!(next_link(r#"<https://x/p>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link("<unterminated; rel=next"), None);
    }

    #[test]
    fn error_details() {
        assert_eq!(
            error_detail(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#),
            "MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(error_detail(b""), "(no details)");
        assert_eq!(error_detail(b"oops\n"), "oops");
    }

    #[test]
    fn media_type_fallback_to_body() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        assert_eq!(
            media_type_of(
                &h,
                br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            ),
            mt::OCI_INDEX
        );
        h.insert(
            "content-type",
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        );
        assert_eq!(media_type_of(&h, b"{}"), mt::OCI_MANIFEST);
    }
}
