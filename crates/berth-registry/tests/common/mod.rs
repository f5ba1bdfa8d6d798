//! Test harness: a real `berth serve` (store in a tempdir, HTTP on
//! 127.0.0.1:0) that can be stopped and restarted on the same root, plus a
//! small client that checks the invariants every response must satisfy.
#![allow(dead_code)]

use std::sync::{Arc, Weak};
use std::time::Duration;

use berth_registry::{Registry, Settings};
use berth_store::{Access, Store};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The error codes a response may carry: the spec's, plus distribution's
/// `TAG_INVALID` and `RANGE_INVALID` (for 416s), which clients know.
pub const SPEC_CODES: &[&str] = &[
    "RANGE_INVALID",
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "MANIFEST_UNVERIFIED",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "TAG_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// sha256 digest string of `data`.
pub fn sha(data: &[u8]) -> String {
    berth_oci::Digest::sha256_of(data).to_string()
}

/// Deterministic pseudo-random bytes (no rand dependency needed).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A fully read response.
#[derive(Debug)]
pub struct Resp {
    pub method: Method,
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
    }

    /// A header that must be present.
    pub fn h(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("{} {}: no {name} header in {self:?}", self.method, self.url))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {}: body is not JSON ({e}): {:?}",
                self.method,
                self.url,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn status(&self, want: u16) -> &Self {
        assert_eq!(
            self.status,
            want,
            "{} {}: body {:?}, headers {:?}",
            self.method,
            self.url,
            self.text(),
            self.headers
        );
        self
    }

    /// Asserts an OCI error response with this status and first error code.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> &Self {
        self.status(status);
        if self.method != Method::HEAD {
            let body = self.json();
            assert_eq!(
                body["errors"][0]["code"], code,
                "{} {}: {body}",
                self.method, self.url
            );
            assert!(
                body["errors"][0]["message"].is_string(),
                "error without message: {body}"
            );
        }
        self
    }

    /// The `tags` of a tag-list body.
    pub fn tags(&self) -> Vec<String> {
        let body = self.json();
        body["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("no tags array in {body}"))
            .iter()
            .map(|t| t.as_str().expect("tag string").to_string())
            .collect()
    }

    /// The URL of a `Link: <url>; rel="next"` header, checking its syntax.
    pub fn next_link(&self) -> Option<String> {
        let link = self.header("link")?;
        let rest = link
            .strip_prefix('<')
            .unwrap_or_else(|| panic!("Link without <>: {link:?}"));
        let (url, params) = rest
            .split_once('>')
            .unwrap_or_else(|| panic!("Link without <>: {link:?}"));
        assert_eq!(params, "; rel=\"next\"", "Link {link:?}");
        Some(url.to_string())
    }
}

/// Sends a request and checks what every response must satisfy:
/// the API version header, no 5xx, no body on HEAD, and spec-conforming
/// error bodies.
pub async fn send(rb: RequestBuilder) -> Resp {
    let (client, req) = rb.build_split();
    let req = req.expect("request builds");
    let method = req.method().clone();
    let url = req.url().to_string();
    let resp = client
        .execute(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
    let r = Resp {
        method,
        url,
        status,
        headers,
        body,
    };
    check_invariants(&r);
    r
}

#[track_caller]
pub fn check_invariants(r: &Resp) {
    assert!(
        r.status < 500,
        "{} {} got a server error: {} {:?}",
        r.method,
        r.url,
        r.status,
        r.text()
    );
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0"),
        "{} {}: missing API version header ({})",
        r.method,
        r.url,
        r.status
    );
    if r.method == Method::HEAD {
        assert!(
            r.body.is_empty(),
            "{} {}: HEAD with a body",
            r.method,
            r.url
        );
        return;
    }
    if r.status >= 400 && !r.body.is_empty() {
        let ct = r.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{} {}: error body with Content-Type {ct:?}",
            r.method,
            r.url
        );
        let body = r.json();
        let errors = body["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{} {}: error body {body} has no errors", r.method, r.url));
        assert!(!errors.is_empty(), "{} {}: empty errors", r.method, r.url);
        for e in errors {
            let code = e["code"].as_str().expect("code is a string");
            assert!(
                SPEC_CODES.contains(&code),
                "{} {}: error code {code} is not one the spec allows ({body})",
                r.method,
                r.url
            );
        }
    }
}

/// The client side: a base URL and a connection pool. Cheap to clone into
/// spawned tasks.
#[derive(Clone)]
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub addr: std::net::SocketAddr,
}

impl Api {
    /// `path` is absolute (`/v2/...`), possibly with a query: a Location
    /// header can be passed as it is.
    pub fn url(&self, path: &str) -> String {
        assert!(path.starts_with('/'), "not an absolute path: {path:?}");
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Resp {
        send(self.req(Method::GET, path)).await
    }

    pub async fn head(&self, path: &str) -> Resp {
        send(self.req(Method::HEAD, path)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        send(self.req(Method::DELETE, path)).await
    }

    /// `POST /v2/<repo>/blobs/uploads/` with no body: asserts 202 and
    /// returns the Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = send(self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))).await;
        r.status(202);
        r.h("location").to_string()
    }

    /// Monolithic push (`POST ?digest=`), asserting 201. Returns the digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let d = sha(data);
        let r = send(
            self.req(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
            )
            .header("content-type", "application/octet-stream")
            .body(data.to_vec()),
        )
        .await;
        r.status(201);
        assert_eq!(r.h("location"), format!("/v2/{repo}/blobs/{d}"));
        assert_eq!(r.h("docker-content-digest"), d);
        d
    }

    /// `PUT /v2/<repo>/manifests/<reference>`.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Resp {
        send(
            self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
                .header("content-type", content_type)
                .body(bytes.to_vec()),
        )
        .await
    }

    /// Pushes a manifest expecting 201 with the right Location and digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> String {
        let r = self
            .put_manifest(repo, reference, content_type, bytes)
            .await;
        r.status(201);
        let d = sha(bytes);
        assert_eq!(r.h("docker-content-digest"), d);
        assert_eq!(r.h("location"), format!("/v2/{repo}/manifests/{d}"));
        d
    }

    /// Pushes config, layers and an OCI manifest for them under `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str, seed: u64) -> Image {
        let img = Image::new(seed);
        self.push_blob(repo, &img.config).await;
        for l in &img.layers {
            self.push_blob(repo, l).await;
        }
        self.push_manifest(repo, tag, OCI_MANIFEST, &img.manifest)
            .await;
        img
    }

    /// Tags of `repo`, asserting 200.
    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.get(&format!("/v2/{repo}/tags/list")).await;
        r.status(200);
        assert_eq!(r.json()["name"], repo);
        r.tags()
    }
}

/// `location` with `param` added to its query.
pub fn with_query(location: &str, param: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}{param}")
}

/// A small OCI image: a config, two layers and the manifest naming them.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
    pub digest: String,
}

impl Image {
    pub fn new(seed: u64) -> Image {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"author\":\"seed-{seed}\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[]}}}}"
        )
        .into_bytes();
        let layers = vec![noise(seed * 2 + 1, 300), noise(seed * 2 + 2, 1000)];
        let manifest = oci_manifest(&config, OCI_CONFIG, &layers);
        let digest = sha(&manifest);
        Image {
            config,
            layers,
            manifest,
            digest,
        }
    }
}

pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": sha(data), "size": data.len() })
}

/// An OCI image manifest (with its `mediaType` field) for these blobs.
pub fn oci_manifest(config: &[u8], config_type: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config_type, config),
        "layers": layers.iter().map(|l| descriptor(OCI_LAYER, l)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// An OCI index of these manifests (each an OCI image manifest).
pub fn oci_index(manifests: &[&[u8]]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests.iter().map(|m| descriptor(OCI_MANIFEST, m)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// A running registry over a root in a tempdir.
pub struct Server {
    pub api: Api,
    pub settings: Settings,
    dir: Option<TempDir>,
    store: Weak<Store>,
    registry: Option<Arc<Registry>>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    pub async fn start() -> Server {
        Self::start_with(Settings::default()).await
    }

    pub async fn start_with(settings: Settings) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_on(dir, settings).await
    }

    /// Opens the store on `dir` (as `berth serve` does) and serves it.
    pub async fn start_on(dir: TempDir, settings: Settings) -> Server {
        let store = Arc::new(Store::open(dir.path(), Access::Shared).expect("open store"));
        let registry = Arc::new(Registry {
            store: store.clone(),
            settings: settings.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(berth_registry::serve(listener, registry.clone(), async {
            let _ = rx.await;
        }));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Server {
            api: Api {
                client,
                base: format!("http://{addr}"),
                addr,
            },
            settings,
            dir: Some(dir),
            store: Arc::downgrade(&store),
            registry: Some(registry),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn root(&self) -> &std::path::Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.upgrade().expect("store is open")
    }

    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// A client whose connections come from `source` (another loopback
    /// address: `127.0.0.2`), i.e. another client for per-client caps.
    pub fn api_from(&self, source: &str) -> Api {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .local_address(source.parse::<std::net::IpAddr>().expect("source address"))
            .build()
            .unwrap();
        Api {
            client,
            ..self.api.clone()
        }
    }

    /// Shuts the server down and waits until nothing holds the store any
    /// more (database closed, root lock released). Returns the root.
    pub async fn stop(mut self) -> TempDir {
        let _ = self.shutdown.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("server stops within 10s")
            .expect("server task")
            .expect("serve returns Ok");
        drop(self.registry.take());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.store.strong_count() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the store is still referenced after shutdown"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The last reference may still be running the store's drop on
        // another thread; an exclusive open succeeds once database and lock
        // are really released.
        let dir = self.dir.take().unwrap();
        loop {
            match Store::open(dir.path(), Access::Exclusive) {
                Ok(store) => break drop(store),
                Err(berth_store::StoreError::Locked(..)) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the root is still in use after shutdown"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => panic!("reopening the root: {e}"),
            }
        }
        dir
    }

    /// Stops the server and starts a new one (new port) on the same root.
    pub async fn restart(self) -> Server {
        let settings = self.settings.clone();
        self.restart_with(settings).await
    }

    pub async fn restart_with(self, settings: Settings) -> Server {
        let dir = self.stop().await;
        Server::start_on(dir, settings).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A raw HTTP/1.1 exchange, for request targets a URL library would
/// normalise (`..`, `.`). Returns status, lower-cased headers and body.
pub async fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    target: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .expect("raw response within 10s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("complete response");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers, body.to_string())
}

pub fn raw_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Settings with one change from the defaults.
pub fn settings(f: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = Settings::default();
    f(&mut s);
    s
}
