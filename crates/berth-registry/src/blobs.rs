//! Blobs: GET (with Range), HEAD, DELETE.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::Digest;

use crate::body::{file_body, parse_range, RangeRequest};
use crate::{empty, ApiError, Registry, Request, Result};

pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e: berth_oci::DigestError| ApiError::digest_invalid(e.to_string()))
}

pub fn get(reg: &Registry, name: &str, digest: &str, req: &Request) -> Result<Response> {
    let digest = parse_digest(digest)?;
    reg.store
        .blob_in_repo(name, &digest)?
        .ok_or_else(|| ApiError::blob_unknown(&digest))?;
    let file = match reg.store.blobs.open_blob(&digest) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::blob_unknown(&digest))
        }
        Err(e) => return Err(ApiError::io(e)),
    };
    let size = file.metadata().map_err(ApiError::io)?.len();
    let digest = digest.to_string();
    let common = |resp: &mut Response| {
        let h = resp.headers_mut();
        h.insert("accept-ranges", HeaderValue::from_static("bytes"));
        if let Ok(v) = HeaderValue::from_str(&digest) {
            h.insert("docker-content-digest", v);
        }
        if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
            h.insert("etag", v);
        }
    };
    let (status, start, len) = match parse_range(req.header("range"), size) {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, len } => (StatusCode::PARTIAL_CONTENT, start, len),
        RangeRequest::Unsatisfiable => {
            let mut resp = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                format!("requested range is outside the blob of {size} bytes"),
            )
            .header("content-range", format!("bytes */{size}"))
            .into_response();
            common(&mut resp);
            return Ok(resp);
        }
    };
    let body = if req.method == Method::HEAD {
        Body::empty()
    } else {
        file_body(file, start, len)
    };
    let mut resp = (status, body).into_response();
    common(&mut resp);
    let h = resp.headers_mut();
    h.insert("content-length", HeaderValue::from(len));
    h.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) =
            HeaderValue::from_str(&format!("bytes {}-{}/{}", start, start + len - 1, size))
        {
            h.insert("content-range", v);
        }
    }
    Ok(resp)
}

pub async fn delete(reg: &Registry, name: &str, digest: &str) -> Result<Response> {
    let digest = parse_digest(digest)?;
    if !reg.store.unlink_blob(name, &digest).await? {
        return Err(ApiError::blob_unknown(&digest));
    }
    Ok(empty(StatusCode::ACCEPTED, &[]))
}
