//! The spec's JSON error responses (`{"errors":[{code,message,detail}]}`).
//!
//! Codes are the spec's, plus two of distribution's that Docker clients
//! know: `TAG_INVALID` and `RANGE_INVALID` (every 416).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::NameError;
use berth_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: serde_json::Value,
    /// Extra headers (e.g. `Range` and `Location` on a 416 for an upload).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: serde_json::Value::Null,
            headers: Vec::new(),
        }
    }

    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn blob_unknown(digest: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
        )
        .detail(serde_json::json!({ "digest": digest.to_string() }))
    }

    pub fn manifest_unknown(reference: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            "manifest unknown",
        )
        .detail(serde_json::json!({ "reference": reference.to_string() }))
    }

    pub fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
        )
        .detail(serde_json::json!({ "name": name }))
    }

    pub fn upload_unknown(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            "blob upload unknown to registry: it was finished, cancelled or never started",
        )
        .detail(serde_json::json!({ "uuid": id }))
    }

    pub fn digest_invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", message)
    }

    pub fn unsupported(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "UNSUPPORTED", message)
    }

    pub fn read_only() -> Self {
        Self::unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            "the registry is in read-only mode: pushes and deletes are refused (restart it without --read-only to allow them)",
        )
    }

    pub fn delete_disabled() -> Self {
        Self::unsupported(
            StatusCode::METHOD_NOT_ALLOWED,
            "deletion is disabled on this registry (--no-delete)",
        )
    }

    /// The process ran out of file descriptors: a temporary condition the
    /// client may retry, not a server error.
    pub fn out_of_descriptors(e: impl std::fmt::Display) -> Self {
        tracing::warn!("out of file descriptors: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "TOOMANYREQUESTS",
            "the registry is out of file descriptors: retry later",
        )
        .header("retry-after", "1".to_string())
    }

    /// An I/O error: 503 when descriptors ran out, else 500.
    pub fn io(e: std::io::Error) -> Self {
        if is_fd_exhaustion(&e) {
            Self::out_of_descriptors(e)
        } else {
            Self::internal(e)
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN",
            format!("internal error: {e}"),
        )
    }
}

/// Seconds a client refused a new upload session is told to wait.
const UPLOAD_RETRY_AFTER: u32 = 10;

pub(crate) fn is_fd_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::Digest(d) => ApiError::digest_invalid(d.to_string()),
            NameError::Tag(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "TAG_INVALID", e.to_string())
            }
            NameError::Repository(_) | NameError::RepositoryTooLong => {
                ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::DigestMismatch { .. } => ApiError::digest_invalid(msg),
            StoreError::SizeInvalid { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", msg)
            }
            StoreError::BlobUnknown(d) => ApiError::blob_unknown(d),
            StoreError::ManifestUnknown(r) => ApiError::manifest_unknown(r),
            StoreError::ManifestBlobUnknown(d) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN", msg)
                    .detail(serde_json::json!({ "digest": d.to_string() }))
            }
            StoreError::ManifestInvalid(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", msg)
            }
            // 409: the request conflicts with the repository's state (an
            // index still names the manifest); 400/405 would tell the client
            // that deletion is disabled. See ARCHITECTURE.md.
            StoreError::ManifestReferenced { digest, index } => {
                ApiError::new(StatusCode::CONFLICT, "DENIED", msg).detail(
                    serde_json::json!({ "digest": digest.to_string(), "index": index.to_string() }),
                )
            }
            StoreError::NameUnknown(n) => ApiError::name_unknown(&n),
            StoreError::UploadUnknown(id) => ApiError::upload_unknown(&id),
            StoreError::TooManyUploads { limit, per_client } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", msg)
                    .detail(serde_json::json!({
                        "limit": limit,
                        "scope": if per_client { "client" } else { "registry" },
                    }))
                    .header("retry-after", UPLOAD_RETRY_AFTER.to_string())
            }
            StoreError::Io(e) if is_fd_exhaustion(&e) => ApiError::out_of_descriptors(e),
            StoreError::Io(_) | StoreError::Db(_) | StoreError::Locked(..) => {
                ApiError::internal(msg)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err = serde_json::json!({ "code": self.code, "message": self.message });
        if !self.detail.is_null() {
            err["detail"] = self.detail;
        }
        let body = serde_json::json!({ "errors": [err] }).to_string();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp
    }
}
