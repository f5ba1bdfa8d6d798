//! Manifests by tag or digest: GET, HEAD, PUT, DELETE.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, ParsedManifest, Reference};
use berth_store::PutManifest;
use futures_util::StreamExt;

use crate::body::DRAIN_LIMIT;
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

pub async fn put(
    reg: &Registry,
    name: &str,
    reference: &str,
    req: &mut Request,
) -> Result<Response> {
    let reference = Reference::parse(reference)?;
    let limit = reg.settings.max_manifest_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!("manifest is larger than the registry's limit of {limit} bytes"),
        )
    };
    let declared = req
        .header("content-length")
        .and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|l| l > DRAIN_LIMIT) {
        return Err(too_large());
    }
    let content_type = req.header("content-type").map(str::to_string);
    let mut bytes = Vec::new();
    let mut over = declared.is_some_and(|l| l > limit as u64);
    let mut stream = std::mem::take(&mut req.body).into_data_stream();
    let mut total = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "MANIFEST_INVALID",
                format!("the manifest body broke off: {e}"),
            )
        })?;
        // Past the limit, keep reading (and dropping) the body: see
        // `body::drain`.
        total += chunk.len() as u64;
        over |= bytes.len() + chunk.len() > limit;
        if over {
            bytes.clear();
            if total > DRAIN_LIMIT {
                break;
            }
        } else {
            bytes.extend_from_slice(&chunk);
        }
    }
    if over {
        return Err(too_large());
    }

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
