//! The Bearer token flow against a real HTTP server: `berth serve`'s router
//! behind a token guard, plus a token service on `/token` (GET with Basic
//! credentials or anonymous, POST of an OAuth2 refresh-token form), the way
//! Docker Hub and distribution's token auth behave.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use berth_client::{ClientConfig, Credential, Error, RegistryClient};
use berth_registry::{Registry, Settings};
use berth_store::{Access, Store};
use common::{collect, TestImage};
use reqwest::Url;

const SERVICE: &str = "berth-test";

struct TokenService {
    realm: String,
    /// token -> granted scopes (`type:name:action`, one action each).
    tokens: Mutex<HashMap<String, Vec<String>>>,
    requests: AtomicUsize,
    /// Requests seen for `flaky/*`.
    flaky: AtomicUsize,
}

/// `repository:a/b:pull,push` -> one entry per action.
fn split_scope(scope: &str) -> Vec<(String, String)> {
    let Some((prefix, actions)) = scope.rsplit_once(':') else {
        return Vec::new();
    };
    actions
        .split(',')
        .map(|a| (prefix.to_owned(), a.to_owned()))
        .collect()
}

impl TokenService {
    /// Grants what `who` may have of `scopes`: alice everything; anonymous
    /// users only pulls of `public/*`.
    fn issue(&self, who: Option<&str>, scopes: &[String], field: &str) -> Response {
        let granted: Vec<String> = scopes
            .iter()
            .flat_map(|s| split_scope(s))
            .filter(|(prefix, action)| {
                who == Some("alice")
                    || (prefix.starts_with("repository:public/") && action == "pull")
            })
            .map(|(p, a)| format!("{p}:{a}"))
            .collect();
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let token = format!("tok{n}");
        self.tokens.lock().unwrap().insert(token.clone(), granted);
        let body = serde_json::json!({ field: token, "expires_in": 300 });
        ([("content-type", "application/json")], body.to_string()).into_response()
    }
}

fn query_pairs(uri: &str) -> Vec<(String, String)> {
    Url::parse(&format!("http://x{uri}"))
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

async fn token_endpoint(svc: &TokenService, req: Request) -> Response {
    let is_post = req.method() == "POST";
    let uri = req.uri().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    if is_post {
        let form = query_pairs(&format!("/?{}", String::from_utf8_lossy(&body)));
        let get = |k: &str| values(&form, k).pop().unwrap_or_default();
        if get("grant_type") != "refresh_token"
            || get("service") != SERVICE
            || get("refresh_token") != "refresh-alice"
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let scopes: Vec<String> = get("scope").split(' ').map(str::to_owned).collect();
        return svc.issue(Some("alice"), &scopes, "access_token");
    }
    let q = query_pairs(&uri);
    if values(&q, "service") != [SERVICE] {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let who = match auth.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        None => None,
        Some(b64) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            if raw != b"alice:s3cret" {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            Some("alice")
        }
    };
    svc.issue(who, &values(&q, "scope"), "token")
}

/// The scopes (one action each) a registry request needs.
fn needed(method: &str, path: &str, query: &[(String, String)]) -> Vec<String> {
    if path == "/v2/" {
        return Vec::new();
    }
    if path == "/v2/_catalog" {
        return vec!["registry:catalog:*".into()];
    }
    let rest = &path["/v2/".len()..];
    let name = ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|m| rest.rfind(m))
        .max()
        .map(|i| &rest[..i])
        .unwrap_or(rest);
    let action = match method {
        "GET" | "HEAD" => "pull",
        "DELETE" => "delete",
        _ => "push",
    };
    let mut out = vec![format!("repository:{name}:{action}")];
    for from in values(query, "from") {
        out.push(format!("repository:{from}:pull"));
    }
    out
}

async fn guard(State(svc): State<Arc<TokenService>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/token" {
        return token_endpoint(&svc, req).await;
    }
    let query = query_pairs(&req.uri().to_string());
    let needed = needed(req.method().as_str(), &path, &query);
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
        .map(str::to_owned);
    let granted = token.and_then(|t| svc.tokens.lock().unwrap().get(&t).cloned());
    if let Some(granted) = &granted {
        if needed.iter().all(|n| granted.contains(n)) {
            // Two of every three requests to flaky/* fail transiently.
            if path.starts_with("/v2/flaky/") && req.method() == "GET" {
                match svc.flaky.fetch_add(1, Ordering::SeqCst) % 3 {
                    0 => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    1 => {
                        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "0")])
                            .into_response()
                    }
                    _ => {}
                }
            }
            let lie = path.starts_with("/v2/liar/") && req.method() == "GET";
            let resp = next.run(req).await;
            return if lie { corrupt(resp).await } else { resp };
        }
    }
    let mut challenge = format!(r#"Bearer realm="{}",service="{SERVICE}""#, svc.realm);
    if !needed.is_empty() {
        challenge.push_str(&format!(r#",scope="{}""#, needed.join(" ")));
    }
    if granted.is_some() {
        challenge.push_str(r#",error="insufficient_scope""#);
    }
    let mut resp = Response::new(Body::from(
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    ));
    *resp.status_mut() = StatusCode::UNAUTHORIZED;
    resp.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_str(&challenge).unwrap(),
    );
    resp
}

/// A registry that lies: flips the last byte of what it serves, keeping
/// its headers (Docker-Content-Digest included).
async fn corrupt(resp: Response) -> Response {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let mut bytes = axum::body::to_bytes(body, 64 << 20).await.unwrap().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last ^= 1;
    }
    Response::from_parts(parts, Body::from(bytes))
}

struct Server {
    registry: String,
    svc: Arc<TokenService>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Access::Shared).unwrap());
        let registry = Arc::new(Registry {
            store,
            settings: Settings::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = Arc::new(TokenService {
            realm: format!("http://{addr}/token"),
            tokens: Mutex::default(),
            requests: AtomicUsize::new(0),
            flaky: AtomicUsize::new(0),
        });
        let app: Router = berth_registry::router(registry)
            .layer(axum::middleware::from_fn_with_state(svc.clone(), guard));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            registry: addr.to_string(),
            svc,
            _dir: dir,
        }
    }

    fn client(&self, credential: Option<Credential>) -> RegistryClient {
        RegistryClient::new(
            &self.registry,
            ClientConfig {
                credential,
                ..common::config()
            },
        )
        .unwrap()
    }

    fn token_requests(&self) -> usize {
        self.svc.requests.load(Ordering::SeqCst)
    }
}

fn alice(password: &str) -> Option<Credential> {
    Some(Credential::Basic {
        username: "alice".into(),
        password: password.into(),
    })
}

#[tokio::test]
async fn credentials_get_tokens_that_are_cached_per_scope() {
    let srv = Server::start().await;
    let c = srv.client(alice("s3cret"));
    c.ping().await.unwrap();
    let img = TestImage::new(11, 50_000);
    let digest = img.push(&c, "team/app", "v1").await.unwrap();
    let m = c.get_manifest("team/app", "v1", &[]).await.unwrap();
    assert_eq!(m.digest, digest);
    let blob = c
        .get_blob(
            "team/app",
            &img.layer_digest(),
            Some(img.layer.len() as u64),
            0,
        )
        .await
        .unwrap();
    assert_eq!(collect(blob).await.unwrap(), img.layer);
    assert!(c
        .mount_blob("team/other", "team/app", &img.layer_digest())
        .await
        .unwrap());
    assert_eq!(c.catalog(None).await.unwrap(), ["team/app", "team/other"]);
    c.delete_manifest("team/app", "v1").await.unwrap();

    // Repeated requests for a scope reuse its token.
    let before = srv.token_requests();
    for _ in 0..10 {
        c.blob_exists("team/app", &img.layer_digest())
            .await
            .unwrap();
        c.head_manifest("team/app", &digest.to_string(), &[])
            .await
            .unwrap();
    }
    assert_eq!(srv.token_requests(), before);
    // A clone shares the cache.
    c.clone()
        .blob_exists("team/app", &img.layer_digest())
        .await
        .unwrap();
    assert_eq!(srv.token_requests(), before);
}

#[tokio::test]
async fn anonymous_tokens_pull_public_and_are_refused_elsewhere() {
    let srv = Server::start().await;
    let img = TestImage::new(12, 1000);
    img.push(&srv.client(alice("s3cret")), "public/app", "v1")
        .await
        .unwrap();
    img.push(&srv.client(alice("s3cret")), "private/app", "v1")
        .await
        .unwrap();

    let anon = srv.client(None);
    anon.ping().await.unwrap();
    let m = anon.get_manifest("public/app", "v1", &[]).await.unwrap();
    assert_eq!(m.bytes, img.manifest);
    let blob = anon
        .get_blob(
            "public/app",
            &img.layer_digest(),
            Some(img.layer.len() as u64),
            0,
        )
        .await
        .unwrap();
    assert_eq!(collect(blob).await.unwrap(), img.layer);

    for e in [
        anon.get_manifest("private/app", "v1", &[])
            .await
            .unwrap_err(),
        img.push(&anon, "public/app", "v2").await.unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
        assert!(
            msg.contains("anonymous access was refused")
                && msg.contains(&format!("berth login {}", srv.registry)),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn wrong_password_is_refused_by_the_token_service() {
    let srv = Server::start().await;
    let c = srv.client(alice("wrong"));
    let e = c.get_manifest("team/app", "v1", &[]).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
    assert!(
        msg.contains("refused the credentials of user \"alice\"")
            && msg.contains("repository team/app")
            && msg.contains(&format!("berth login {}", srv.registry)),
        "{msg}"
    );
}

#[tokio::test]
async fn identity_tokens_use_the_oauth2_refresh_grant() {
    let srv = Server::start().await;
    let c = srv.client(Some(Credential::IdentityToken {
        username: String::new(),
        token: "refresh-alice".into(),
    }));
    let img = TestImage::new(13, 1000);
    img.push(&c, "team/app", "v1").await.unwrap();
    assert_eq!(c.list_tags("team/app", None).await.unwrap(), ["v1"]);

    let bad = srv.client(Some(Credential::IdentityToken {
        username: String::new(),
        token: "revoked".into(),
    }));
    let e = bad.list_tags("team/app", None).await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e:?}");
}

#[tokio::test]
async fn content_that_does_not_match_its_digest_is_refused() {
    let srv = Server::start().await;
    let c = srv.client(alice("s3cret"));
    let img = TestImage::new(14, 200_000);
    let digest = img.push(&c, "liar/app", "v1").await.unwrap();
    for reference in ["v1".to_string(), digest.to_string()] {
        let e = c
            .get_manifest("liar/app", &reference, &[])
            .await
            .unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
        assert!(e.to_string().contains(&digest.to_string()), "{e}");
    }
    let blob = c
        .get_blob(
            "liar/app",
            &img.layer_digest(),
            Some(img.layer.len() as u64),
            0,
        )
        .await
        .unwrap();
    let e = collect(blob).await.unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("repository liar/app"), "{e}");
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let srv = Server::start().await;
    let c = srv.client(alice("s3cret"));
    let img = TestImage::new(15, 1000);
    img.push(&c, "flaky/app", "v1").await.unwrap();
    // Default: 4 attempts, enough for 503, 429, then success.
    let m = c.get_manifest("flaky/app", "v1", &[]).await.unwrap();
    assert_eq!(m.bytes, img.manifest);
    assert_eq!(c.list_tags("flaky/app", None).await.unwrap(), ["v1"]);
    // With 2 attempts the 429 is final, and says what happened.
    let two = RegistryClient::new(
        &srv.registry,
        ClientConfig {
            credential: alice("s3cret"),
            max_attempts: 2,
            ..common::config()
        },
    )
    .unwrap();
    let e = two.get_manifest("flaky/app", "v1", &[]).await.unwrap_err();
    assert!(matches!(e, Error::Status { status: 429, .. }), "{e:?}");
    assert!(e.is_transient());
    assert!(e.to_string().contains("flaky/app"), "{e}");
}
