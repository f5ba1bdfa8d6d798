//! A minimal HTTP/1.1 client for `berth serve`'s local endpoint: one Unix
//! socket connection per request (cheap locally, and nothing to go stale
//! when the server restarts). hyper's connection API is enough; reqwest 0.12
//! cannot speak over a Unix socket.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::RootError;

pub(crate) struct SocketClient {
    path: PathBuf,
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The registry error this reply carries (first entry), for messages
    /// and for telling "unknown" apart from a real failure.
    pub fn error(&self) -> RootError {
        let parsed: Option<(String, String)> =
            serde_json::from_slice::<serde_json::Value>(&self.body)
                .ok()
                .and_then(|v| {
                    let e = v.get("errors")?.get(0)?;
                    Some((
                        e.get("code")?.as_str()?.to_string(),
                        e.get("message")
                            .and_then(|m| m.as_str())
                            .unwrap_or("")
                            .to_string(),
                    ))
                });
        let (code, message) = parsed.unwrap_or_else(|| {
            (
                "UNKNOWN".into(),
                String::from_utf8_lossy(&self.body).trim().to_string(),
            )
        });
        RootError::Server {
            status: self.status.as_u16(),
            code,
            message,
        }
    }

    pub fn code(&self) -> Option<String> {
        match self.error() {
            RootError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl SocketClient {
    pub fn new(path: &Path) -> SocketClient {
        SocketClient {
            path: path.to_path_buf(),
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Reply, RootError> {
        let gone = |e: &dyn std::fmt::Display| RootError::ServerGone {
            socket: self.path.clone(),
            reason: e.to_string(),
        };
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|e| gone(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| gone(&e))?;
        // Drives the connection; it ends when `sender` is dropped.
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| RootError::Other(format!("building a request for {path}: {e}")))?;
        let resp = sender.send_request(req).await.map_err(|e| gone(&e))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| gone(&e))?.to_bytes();
        drop(sender);
        let _ = driver.await;
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
