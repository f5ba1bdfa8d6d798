//! `body::parse_range(header, size)` and `body::parse_content_range(value)`.
//! Input is `SIZE\nHEADER`; without a newline the whole input is the header,
//! tried against a few fixed sizes.
#![no_main]

use berth_registry::body::{parse_content_range, parse_range, RangeRequest};
use libfuzzer_sys::fuzz_target;

const SIZES: [u64; 6] = [0, 1, 2, 10, 1 << 20, u64::MAX];

/// An ASCII decimal number (RFC 9110's `1*DIGIT`); `Err(())` for one too
/// large for u64, `None` for anything that is not digits.
fn number(s: &str) -> Option<Result<u64, ()>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().map_err(|_| ()))
}

/// RFC 9110's reading of a single `bytes=` range, on the same tokenisation
/// as berth (surrounding whitespace is tolerated). `None`: any answer
/// that satisfies the general invariants is fine (numbers beyond u64).
fn expected_range(header: &str, size: u64) -> Option<RangeRequest> {
    use RangeRequest::*;
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Some(Full);
    };
    if spec.contains(',') {
        return Some(Full);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Some(Full);
    };
    let (a, b) = (a.trim(), b.trim());
    // Anything but digits (or an empty side) makes the range invalid,
    // and an invalid Range is ignored: the whole blob is sent.
    let side = |s: &str| {
        if s.is_empty() {
            Some(None)
        } else {
            number(s).map(Some)
        }
    };
    let (Some(a), Some(b)) = (side(a), side(b)) else {
        return Some(Full);
    };
    Some(match (a, b) {
        (None, None) => Full,
        // suffix range: bytes=-N
        (None, Some(n)) => match n.ok()? {
            0 => Unsatisfiable,
            _ if size == 0 => Unsatisfiable,
            n => Partial {
                start: size - n.min(size),
                len: n.min(size),
            },
        },
        (Some(first), last) => {
            let first = first.ok()?;
            let last = match last {
                None => None,
                Some(l) => Some(l.ok()?),
            };
            match last {
                Some(l) if first > l => Full,
                _ if first >= size => Unsatisfiable,
                l => Partial {
                    start: first,
                    len: l.unwrap_or(u64::MAX).min(size - 1) - first + 1,
                },
            }
        }
    })
}

fn check_range(header: &str, size: u64) {
    assert_eq!(parse_range(None, size), RangeRequest::Full);
    let r = parse_range(Some(header), size);
    match r {
        RangeRequest::Partial { start, len } => {
            assert!(len > 0, "{header:?} on {size}: {r:?}");
            assert!(start < size, "{header:?} on {size}: {r:?}");
            assert!(
                start.checked_add(len).is_some_and(|end| end <= size),
                "{header:?} on {size}: {r:?} lies outside the blob"
            );
        }
        RangeRequest::Unsatisfiable => {
            assert!(header.trim().starts_with("bytes="), "{header:?}: {r:?}")
        }
        RangeRequest::Full => {}
    }
    if let Some(want) = expected_range(header, size) {
        assert_eq!(r, want, "parse_range({header:?}, {size})");
    }
}

fn check_content_range(value: &str) {
    let Some((start, end)) = parse_content_range(value) else {
        return;
    };
    assert!(start <= end, "{value:?} -> {start}-{end}");
    // uploads::append compares Content-Length with `end - start + 1`.
    assert!(
        (end - start).checked_add(1).is_some(),
        "{value:?} -> a chunk of 2^64 bytes"
    );
    // Only digits make a number.
    let spec = value.trim();
    let spec = spec.strip_prefix("bytes ").unwrap_or(spec);
    let spec = spec.split('/').next().unwrap_or(spec);
    let (a, b) = spec.split_once('-').unwrap();
    assert_eq!(number(a.trim()), Some(Ok(start)), "{value:?}");
    assert_eq!(number(b.trim()), Some(Ok(end)), "{value:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    check_content_range(s);
    match s.split_once('\n') {
        Some((size, header)) => {
            if let Ok(size) = size.parse::<u64>() {
                check_range(header, size);
            }
            check_content_range(header);
        }
        None => {
            for size in SIZES {
                check_range(s, size);
            }
        }
    }
});
