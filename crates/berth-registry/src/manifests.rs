//! Manifests by tag or digest: GET, HEAD, PUT, DELETE.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, ParsedManifest, Reference};
use berth_store::PutManifest;

use crate::{empty, ApiError, Registry, Request, Result};

pub fn get(reg: &Registry, name: &str, reference: &str, req: &Request) -> Result<Response> {
    // A reference that cannot name anything names nothing: 404, as the
    // conformance suite and distribution expect, not 400.
    let reference =
        Reference::parse(reference).map_err(|_| ApiError::manifest_unknown(reference))?;
    let m = reg
        .store
        .manifest(name, &reference)?
        .ok_or_else(|| ApiError::manifest_unknown(&reference))?;
    let len = m.bytes.len();
    let body = if req.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(m.bytes)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    let digest = m.digest.to_string();
    h.insert("content-length", HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&m.media_type) {
        h.insert("content-type", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{digest}\"")) {
        h.insert("etag", v);
    }
    if let Ok(v) = HeaderValue::from_str(&digest) {
        h.insert("docker-content-digest", v);
    }
    Ok(resp)
}

pub async fn put(reg: &Registry, name: &str, reference: &str, req: Request) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let limit = reg.settings.max_manifest_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!("manifest is larger than the registry's limit of {limit} bytes"),
        )
    };
    if req
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .is_some_and(|l| l > limit)
    {
        return Err(too_large());
    }
    let content_type = req.header("content-type").map(str::to_string);
    let bytes = axum::body::to_bytes(req.body, limit)
        .await
        .map_err(|_| too_large())?
        .to_vec();

    let (digest, tag) = match reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &bytes);
            if actual != d {
                return Err(ApiError::digest_invalid(format!(
                    "manifest digest {actual} does not match the reference {d}"
                )));
            }
            (d, None)
        }
        Reference::Tag(t) => (Digest::sha256_of(&bytes), Some(t)),
    };
    let parsed = ParsedManifest::parse(&bytes, content_type.as_deref())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string()))?;
    let outcome = reg
        .store
        .put_manifest(PutManifest {
            repo: name.to_string(),
            tag,
            digest,
            bytes,
            parsed,
            allow_sparse_index: reg.settings.allow_sparse_index,
        })
        .await?;
    let digest = outcome.digest.to_string();
    let mut headers = vec![
        ("location", format!("/v2/{name}/manifests/{digest}")),
        ("docker-content-digest", digest),
    ];
    if let Some(subject) = outcome.subject {
        headers.push(("oci-subject", subject.to_string()));
    }
    Ok(empty(StatusCode::CREATED, &headers))
}

pub async fn delete(reg: &Registry, name: &str, reference: &str) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let deleted = match &reference {
        Reference::Digest(d) => reg.store.delete_manifest(name, d).await?,
        Reference::Tag(t) => reg.store.delete_tag(name, t).await?,
    };
    if !deleted {
        return Err(ApiError::manifest_unknown(&reference));
    }
    Ok(empty(StatusCode::ACCEPTED, &[]))
}
