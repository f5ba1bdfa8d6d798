//! Plain http(s) downloads that are not registry requests (`ADD <url>`,
//! `berth import <url>`), bounded like registry ones: the connect and idle
//! timeouts of [`Timeouts`], and a size cap (`BERTH_MAX_DOWNLOAD_BYTES`,
//! 16 GiB by default) checked against `Content-Length` before the body is
//! read and against the bytes as they arrive. No overall time limit: a
//! large file takes its time, a stalled one does not.

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::header::HeaderMap;

use crate::error::{Error, Result};
use crate::settings::{format_size, Timeouts};

pub const MAX_DOWNLOAD_BYTES_ENV: &str = "BERTH_MAX_DOWNLOAD_BYTES";
/// Default cap of one URL download.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 16 << 30;

/// The cap from `BERTH_MAX_DOWNLOAD_BYTES` (`0` = none), else the default.
pub fn max_download_bytes() -> Option<u64> {
    crate::settings::env_size(MAX_DOWNLOAD_BYTES_ENV, Some(DEFAULT_MAX_DOWNLOAD_BYTES))
}

/// A started download: the response headers and the body, which fails
/// with [`Error::Protocol`] past the cap and [`Error::Timeout`] when it
/// stalls.
pub struct Fetched {
    pub headers: HeaderMap,
    /// The announced length, if any (already checked against the cap).
    pub length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes>>,
}

/// `host[:port]` of `url` for messages (never the user or password).
fn host_of(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

fn too_large(host: &str, shown: &str, max: u64) -> Error {
    Error::Protocol {
        registry: host.to_owned(),
        repository: None,
        detail: format!(
            "{shown} is larger than {} ({MAX_DOWNLOAD_BYTES_ENV}); refusing it (raise \
             {MAX_DOWNLOAD_BYTES_ENV}=SIZE if it is expected, 0 = no limit)",
            format_size(max)
        ),
    }
}

/// A download has no overall limit: a timeout is the connect or the idle one.
fn timeout_error(timeouts: Timeouts, host: &str, shown: &str, e: &reqwest::Error) -> Error {
    let (setting, limit) = timeouts.which(Duration::ZERO, e.is_connect(), false);
    let limit = limit
        .map(crate::settings::format_duration)
        .unwrap_or_default();
    Error::Timeout {
        registry: host.to_owned(),
        repository: None,
        what: format!("downloading {shown}"),
        detail: if e.is_connect() {
            format!("no connection within {limit}")
        } else {
            format!("no data for {limit}")
        },
        setting,
    }
}

/// GETs `url` (shown as `shown` in messages, e.g. with a password removed).
pub async fn fetch(
    url: &str,
    shown: &str,
    user_agent: &str,
    timeouts: Timeouts,
    max: Option<u64>,
) -> Result<Fetched> {
    let parsed = reqwest::Url::parse(url).map_err(|e| Error::Protocol {
        registry: shown.to_owned(),
        repository: None,
        detail: format!("not a URL: {e}"),
    })?;
    let host = host_of(&parsed);
    let client = timeouts
        .apply(reqwest::Client::builder().user_agent(user_agent))
        .build()
        .map_err(|e| Error::Protocol {
            registry: host.clone(),
            repository: None,
            detail: format!("cannot set up HTTP: {e}"),
        })?;
    let resp = match client.get(parsed).send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(timeout_error(timeouts, &host, shown, &e)),
        Err(e) => {
            // Named by its URL: what the user wrote.
            return Err(Error::Transport {
                registry: shown.to_owned(),
                attempts: 1,
                source: e.without_url(),
            });
        }
    };
    let status = resp.status();
    if !status.is_success() {
        return Err(Error::Status {
            registry: host,
            repository: None,
            method: "GET".into(),
            path: shown.to_owned(),
            status: status.as_u16(),
            detail: status.canonical_reason().unwrap_or("").to_owned(),
        });
    }
    let length = resp.content_length();
    if let (Some(l), Some(m)) = (length, max) {
        if l > m {
            return Err(too_large(&host, shown, m));
        }
    }
    let headers = resp.headers().clone();
    let shown = shown.to_owned();
    let mut seen = 0u64;
    let body = resp
        .bytes_stream()
        .map(move |item| match item {
            Ok(chunk) => {
                seen += chunk.len() as u64;
                match max {
                    Some(m) if seen > m => Err(too_large(&host, &shown, m)),
                    _ => Ok(chunk),
                }
            }
            Err(e) if e.is_timeout() => Err(timeout_error(timeouts, &host, &shown, &e)),
            Err(e) => Err(Error::Transport {
                registry: shown.clone(),
                attempts: 1,
                source: e.without_url(),
            }),
        })
        .boxed();
    // Stop at the first error: nothing past the cap is read.
    let body = futures_util::stream::unfold((body, false), |(mut body, failed)| async move {
        if failed {
            return None;
        }
        let item = body.next().await?;
        let failed = item.is_err();
        Some((item, (body, failed)))
    })
    .boxed();
    Ok(Fetched {
        headers,
        length,
        body,
    })
}
