//! Blob uploads: monolithic POST, streamed and chunked sessions (PATCH),
//! status (GET), completion (PUT), cancellation (DELETE), and
//! cross-repository mount.

use axum::http::StatusCode;
use axum::response::Response;
use berth_oci::Digest;
use berth_store::{BlobWriter, SessionCaps, StoreError};

use crate::blobs::parse_digest;
use crate::body::{parse_content_range, write_body, BodyError};
use crate::{empty, ApiError, Registry, Request, Result};

/// The `Range` value reporting `size` bytes received (inclusive end, as
/// distribution reports it: `0-0` before the first byte).
fn received(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn session_headers(name: &str, id: &str, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("range", received(size)),
        ("docker-upload-uuid", id.to_string()),
    ]
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        &[
            ("location", format!("/v2/{name}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
        ],
    )
}

fn body_error(e: BodyError) -> ApiError {
    match e {
        BodyError::Client(m) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "BLOB_UPLOAD_INVALID",
            format!("the upload body broke off: {m}"),
        ),
        BodyError::Io(e) if crate::error::is_fd_exhaustion(&e) => ApiError::io(e),
        BodyError::Io(e) => ApiError::internal(format!("writing upload data: {e}")),
    }
}

/// Verifies and commits `writer` on a blocking thread; the writer comes back
/// (unchanged) when the content does not match.
async fn commit(mut writer: BlobWriter, digest: Digest) -> (BlobWriter, Result<u64, StoreError>) {
    tokio::task::spawn_blocking(move || {
        let r = writer.commit(&digest, None);
        (writer, r)
    })
    .await
    .expect("commit thread panicked")
}

/// Parses `Content-Range: <start>-<end>` (a `bytes ` prefix is tolerated).
fn content_range(req: &Request) -> Result<Option<(u64, u64)>> {
    let Some(v) = req.header("content-range") else {
        return Ok(None);
    };
    match parse_content_range(v) {
        Some(r) => Ok(Some(r)),
        None => Err(ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "RANGE_INVALID",
            format!("invalid Content-Range {v:?}: expected <start>-<end>"),
        )),
    }
}

pub async fn start(reg: &Registry, name: &str, req: &mut Request) -> Result<Response> {
    if let Some(mount) = req.param("mount") {
        let digest = parse_digest(mount)?;
        if let Some(from) = req.param("from").filter(|f| !f.is_empty()) {
            berth_oci::validate_repository(from)?;
            if reg.store.mount_blob(from, name, &digest).await?.is_some() {
                return Ok(blob_created(name, &digest));
            }
        }
        // Not mountable: fall back to an ordinary session (202).
    } else if let Some(d) = req.param("digest") {
        let digest = parse_digest(d)?;
        let writer = reg.store.blobs.writer().map_err(ApiError::io)?;
        let (writer, written) = write_body(writer, std::mem::take(&mut req.body)).await;
        if let Err(e) = written {
            writer.discard();
            return Err(body_error(e));
        }
        let (writer, committed) = commit(writer, digest.clone()).await;
        let size = match committed {
            Ok(size) => size,
            Err(e) => {
                writer.discard();
                return Err(e.into());
            }
        };
        reg.store.link_blob(name, &digest, size).await?;
        return Ok(blob_created(name, &digest));
    }
    let caps = SessionCaps {
        total: reg.settings.uploads.max_sessions,
        per_client: reg.settings.uploads.max_sessions_per_client,
    };
    let id = reg
        .store
        .start_upload(name, req.client.as_deref(), caps)
        .await?;
    Ok(empty(StatusCode::ACCEPTED, &session_headers(name, &id, 0)))
}

pub async fn status(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    let size = reg.store.upload_size(name, id)?;
    Ok(empty(
        StatusCode::NO_CONTENT,
        &session_headers(name, id, size),
    ))
}

/// Appends the request body to the session, after checking a Content-Range
/// against the data received so far.
async fn append(
    name: &str,
    id: &str,
    writer: BlobWriter,
    req: &mut Request,
) -> (BlobWriter, Result<()>) {
    let range = match content_range(req) {
        Ok(r) => r,
        Err(e) => return (writer, Err(e)),
    };
    if let Some((start, end)) = range {
        if start != writer.len() {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "RANGE_INVALID",
                format!(
                    "chunk starts at {start}, but the upload has {} bytes: send the chunk starting there",
                    writer.len()
                ),
            );
            for (k, v) in session_headers(name, id, writer.len()) {
                e = e.header(k, v);
            }
            return (writer, Err(e));
        }
        let declared = req
            .header("content-length")
            .and_then(|l| l.parse::<u64>().ok());
        if declared.is_some_and(|l| l != end - start + 1) {
            return (
                writer,
                Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "SIZE_INVALID",
                    "Content-Length does not match the Content-Range of the chunk",
                )),
            );
        }
    }
    let (writer, r) = write_body(writer, std::mem::take(&mut req.body)).await;
    (writer, r.map_err(body_error))
}

pub async fn patch(reg: &Registry, name: &str, id: &str, req: &mut Request) -> Result<Response> {
    let slot = reg.store.upload_writer(name, id)?;
    let mut guard = slot.lock().await;
    let writer = reg.store.checkout_writer(id, &mut guard).await?;
    let (writer, r) = append(name, id, writer, req).await;
    let size = writer.len();
    reg.store.park_writer(&slot, &mut guard, writer);
    r?;
    Ok(empty(
        StatusCode::ACCEPTED,
        &session_headers(name, id, size),
    ))
}

pub async fn finish(reg: &Registry, name: &str, id: &str, req: &mut Request) -> Result<Response> {
    let digest = match req.param("digest") {
        Some(d) => parse_digest(d)?,
        None => {
            return Err(ApiError::digest_invalid(
                "the digest query parameter is required to finish an upload",
            ))
        }
    };
    let slot = reg.store.upload_writer(name, id)?;
    let mut guard = slot.lock().await;
    let writer = reg.store.checkout_writer(id, &mut guard).await?;
    let (writer, r) = append(name, id, writer, req).await;
    if let Err(e) = r {
        reg.store.park_writer(&slot, &mut guard, writer);
        return Err(e);
    }
    let (writer, committed) = commit(writer, digest.clone()).await;
    match committed {
        Ok(size) => {
            reg.store.finish_upload(name, id, &digest, size).await?;
            Ok(blob_created(name, &digest))
        }
        Err(e) => {
            // The session stays open: the client may still send the rest.
            reg.store.park_writer(&slot, &mut guard, writer);
            Err(e.into())
        }
    }
}

pub async fn cancel(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    reg.store.cancel_upload(name, id).await?;
    Ok(empty(StatusCode::NO_CONTENT, &[]))
}
