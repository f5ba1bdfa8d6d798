//! `/v2/`, `_catalog`, `tags/list` and `referrers`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_oci::media_type::OCI_INDEX;
use berth_oci::Digest;

use crate::{ApiError, Registry, Request, Result};

/// Catalog pages hold at most this many names unless `n` asks for fewer.
const CATALOG_PAGE: usize = 1000;

fn json(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
    resp
}

pub fn base() -> Response {
    json(StatusCode::OK, "application/json", "{}".into())
}

/// `n`: absent, or a non-negative integer.
fn page_size(req: &Request) -> Result<Option<usize>> {
    match req.param("n") {
        None | Some("") => Ok(None),
        // UNSUPPORTED ("invalid set of parameters"): the spec allows only
        // its own error codes, so not distribution's PAGINATION_NUMBER_INVALID.
        Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "UNSUPPORTED",
                format!("invalid page size n={n:?}: use a non-negative integer"),
            )
        }),
    }
}

fn with_link(mut resp: Response, path: &str, last: Option<&String>, n: usize) -> Response {
    if let Some(last) = last {
        let link = format!("<{path}?last={last}&n={n}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            resp.headers_mut().insert("link", v);
        }
    }
    resp
}

pub fn catalog(reg: &Registry, req: &Request) -> Result<Response> {
    let n = page_size(req)?.unwrap_or(CATALOG_PAGE);
    let page = reg.store.catalog(req.param("last"), Some(n))?;
    let body = serde_json::json!({ "repositories": page.items }).to_string();
    let resp = json(StatusCode::OK, "application/json", body);
    let next = page.more.then(|| page.items.last()).flatten();
    Ok(with_link(resp, "/v2/_catalog", next, n))
}

pub fn tags(reg: &Registry, name: &str, req: &Request) -> Result<Response> {
    let n = page_size(req)?;
    let page = reg
        .store
        .tags(name, req.param("last"), n)?
        .ok_or_else(|| ApiError::name_unknown(name))?;
    let body = serde_json::json!({ "name": name, "tags": page.items }).to_string();
    let resp = json(StatusCode::OK, "application/json", body);
    let next = page.more.then(|| page.items.last()).flatten();
    let path = format!("/v2/{name}/tags/list");
    Ok(with_link(resp, &path, next, n.unwrap_or(0)))
}

pub fn referrers(reg: &Registry, name: &str, digest: &str, req: &Request) -> Result<Response> {
    let subject: Digest = digest
        .parse()
        .map_err(|e: berth_oci::DigestError| ApiError::digest_invalid(e.to_string()))?;
    let filter = req.param("artifactType").filter(|a| !a.is_empty());
    let manifests = reg.store.referrers(name, &subject, filter)?;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })
    .to_string();
    let mut resp = json(StatusCode::OK, OCI_INDEX, body);
    if filter.is_some() {
        resp.headers_mut().insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(resp)
}
