//! Streaming between HTTP bodies and blob files. File I/O runs on blocking
//! threads, connected to the async side by small bounded channels, so a blob
//! is never held in memory whole and the network and disk work overlap.

use std::fs::File;
use std::os::unix::fs::FileExt;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use berth_store::BlobWriter;

/// Bytes read from disk per chunk when serving a blob.
const READ_CHUNK: usize = 2 << 20;

/// Why writing a request body stopped early.
#[derive(Debug)]
pub enum BodyError {
    /// The client's stream broke off.
    Client(String),
    /// The disk write failed.
    Io(std::io::Error),
}

/// Appends the request body to `writer` on a blocking thread. The writer is
/// always handed back, holding whatever arrived before an error.
pub async fn write_body(mut writer: BlobWriter, body: Body) -> (BlobWriter, Result<(), BodyError>) {
    // hyper hands over chunks of up to ~400 KiB: 4 of them bound what one
    // upload holds in memory to ~1.6 MiB (16 made the peak RSS of a single
    // 256 MiB push ~20 MiB instead of ~12, at no measurable speed gain).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let disk = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            if let Err(e) = writer.write_bytes(chunk) {
                return (writer, Err(e));
            }
        }
        (writer, Ok(()))
    });
    let mut stream = body.into_data_stream();
    let mut client_error = None;
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the disk side failed; its error is reported below
                }
            }
            Err(e) => {
                client_error = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let (writer, disk_result) = disk.await.expect("blob writer thread panicked");
    let result = match (disk_result, client_error) {
        (Err(e), _) => Err(BodyError::Io(e)),
        (Ok(()), Some(e)) => Err(BodyError::Client(e)),
        (Ok(()), None) => Ok(()),
    };
    (writer, result)
}

/// Refused request bodies are read and dropped up to this many bytes before
/// the error goes out; past it the connection is simply closed.
pub const DRAIN_LIMIT: u64 = 64 << 20;

/// Reads what is left of a refused request's body. An answer sent while the
/// client is still writing reaches it as a connection reset (the kernel
/// resets a socket closed with unread data), not as the error.
pub async fn drain(body: Body) {
    let mut stream = body.into_data_stream();
    let mut total = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        total += chunk.len() as u64;
        if total > DRAIN_LIMIT {
            break;
        }
    }
}

/// Blobs smaller than this are read into memory; larger ones are mapped.
const MAP_THRESHOLD: u64 = 256 << 10;

/// One chunk of a blob: read for small blobs, else a read-only mapping of
/// the page cache handed to hyper as is (no copy, no fresh buffer per MiB).
/// Mapping is sound because committed blobs are immutable: written once
/// under `ingest/`, renamed into place, never modified or truncated (gc
/// unlinks them, which leaves existing mappings valid).
fn read_chunk(file: &File, offset: u64, want: usize, total: u64) -> std::io::Result<Bytes> {
    if total < MAP_THRESHOLD {
        let mut buf = BytesMut::zeroed(want);
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "blob shorter than recorded",
            ));
        }
        buf.truncate(n);
        return Ok(buf.freeze());
    }
    // Mappings start on a page boundary.
    let page = 4096u64;
    let aligned = offset - offset % page;
    let skip = (offset - aligned) as usize;
    // SAFETY: the file is an immutable committed blob (see above).
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(aligned)
            .len(skip + want)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map).slice(skip..))
}

/// A body streaming `len` bytes of `file` from `start`.
pub fn file_body(file: File, start: u64, len: u64) -> Body {
    if len == 0 {
        return Body::empty();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    tokio::task::spawn_blocking(move || {
        let mut offset = start;
        let end = start + len;
        while offset < end {
            let want = READ_CHUNK.min((end - offset) as usize);
            let result = read_chunk(&file, offset, want, len);
            if let Ok(chunk) = &result {
                offset += chunk.len() as u64;
            }
            let failed = result.is_err();
            if tx.blocking_send(result).is_err() || failed {
                return; // client went away, or the read failed
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Body::from_stream(stream)
}

/// A `Range: bytes=...` request resolved against a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) Range header: send everything.
    Full,
    /// Send `[start, start+len)`.
    Partial { start: u64, len: u64 },
    /// Syntactically valid but outside the blob: 416.
    Unsatisfiable,
}

/// Parses a single-range `Range` header. Multiple ranges and unknown units are
/// answered with the whole blob, as RFC 9110 allows.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes
        (true, false) => match parse_decimal(b) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) => Some((size.saturating_sub(n), size.saturating_sub(1))),
            None => None,
        },
        (false, true) => parse_decimal(a).map(|s| (s, size.saturating_sub(1))),
        (false, false) => match (parse_decimal(a), parse_decimal(b)) {
            (Some(s), Some(e)) if s <= e => Some((s, e.min(size.saturating_sub(1)))),
            _ => None,
        },
        (true, true) => None,
    };
    match parsed {
        None => RangeRequest::Full,
        Some((start, _)) if start >= size => RangeRequest::Unsatisfiable,
        Some((start, end)) => RangeRequest::Partial {
            start,
            len: end - start + 1,
        },
    }
}

/// A number as HTTP writes one (`1*DIGIT`): `u64::from_str` alone would
/// also take a leading `+`.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a chunk's `Content-Range: <start>-<end>` value (inclusive end; a
/// `bytes ` prefix and a `/<total>` suffix are tolerated). `None` when it is
/// malformed, `start > end`, or the chunk length `end - start + 1` does not
/// fit in a u64 (`0-18446744073709551615`).
pub fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let spec = value.trim();
    let spec = spec.strip_prefix("bytes ").unwrap_or(spec);
    let spec = spec.split('/').next().unwrap_or(spec);
    spec.split_once('-')
        .and_then(|(a, b)| Some((parse_decimal(a.trim())?, parse_decimal(b.trim())?)))
        .filter(|&(a, b)| a <= b && b - a < u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Partial { start: 0, len: 5 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, len: 5 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, len: 3 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Partial { start: 8, len: 2 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
    }

    /// Found by fuzzing: `u64::from_str` takes a leading '+', so these
    /// invalid ranges were served as partial content instead of ignored.
    #[test]
    fn ranges_are_digits_only() {
        use RangeRequest::*;
        assert_eq!(parse_range(Some("bytes=+0-4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-+4"), 10), Full);
        assert_eq!(parse_range(Some("bytes=+5-"), 10), Full);
        assert_eq!(parse_range(Some("bytes=-+3"), 10), Full);
        assert_eq!(
            parse_range(Some("bytes= 0 - 4 "), 10),
            Partial { start: 0, len: 5 }
        );
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-1023"), Some((0, 1023)));
        assert_eq!(parse_content_range("bytes 5-9/100"), Some((5, 9)));
        assert_eq!(parse_content_range(" 7 - 7 "), Some((7, 7)));
        for bad in [
            "",
            "5",
            "9-5",
            "a-b",
            "-5",
            "5-",
            "+0-5",
            "0-+5",
            "bytes=0-5",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?} accepted");
        }
        // Found by fuzzing: a chunk of 2^64 bytes overflowed the length
        // uploads::append computes as `end - start + 1`.
        assert_eq!(parse_content_range("0-18446744073709551615"), None);
        assert_eq!(
            parse_content_range("1-18446744073709551615"),
            Some((1, u64::MAX))
        );
    }
}
