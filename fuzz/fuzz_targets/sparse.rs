//! `berth_layer::sparse` on hostile PAX sparse members: the records and
//! data a tar would carry, for versions 0.0, 0.1 and 1.0. Whatever they
//! hold, writing either fails cleanly or yields a file of exactly the real
//! size whose data segments hold the entry's bytes in order and whose
//! holes read as zeros; nothing panics or allocates without bound.
//!
//! Input: byte 0 picks the version (0: 0.0 offset/numbytes records, 1:
//! 0.1 `GNU.sparse.map`, else 1.0 with the map in the data), bytes 1..4
//! the real size (at most 16 MiB), then the map text up to the first `|`
//! (0.x) and the stored data after it (1.0: everything is data).
#![no_main]

use std::io::Cursor;
use std::os::unix::fs::FileExt;

use berth_layer::sparse::{write_pax_sparse, PaxSparseRecords};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let version = data[0] % 3;
    let real = u32::from_le_bytes([data[1], data[2], data[3], 0]) as u64;
    let rest = &data[4..];
    let (map, stored) = if version == 2 {
        (&b""[..], rest)
    } else {
        match rest.iter().position(|&b| b == b'|') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b""[..]),
        }
    };
    let mut r = PaxSparseRecords::default();
    let size = real.to_string();
    match version {
        0 => {
            r.record(b"GNU.sparse.size", size.as_bytes());
            for (i, v) in map.split(|&b| b == b',').enumerate() {
                let key: &[u8] = if i % 2 == 0 { b"GNU.sparse.offset" } else { b"GNU.sparse.numbytes" };
                r.record(key, v);
            }
        }
        1 => {
            r.record(b"GNU.sparse.major", b"0");
            r.record(b"GNU.sparse.minor", b"1");
            r.record(b"GNU.sparse.size", size.as_bytes());
            r.record(b"GNU.sparse.map", map);
        }
        _ => {
            r.record(b"GNU.sparse.major", b"1");
            r.record(b"GNU.sparse.minor", b"0");
            r.record(b"GNU.sparse.realsize", size.as_bytes());
        }
    }
    r.record(b"GNU.sparse.name", b"x");
    let Ok(Some(sparse)) = r.finish() else { return };
    let out = tempfile::tempfile().unwrap();
    let mut buf = vec![0u8; 4096];
    let result = write_pax_sparse(
        &mut Cursor::new(stored),
        stored.len() as u64,
        &sparse,
        &out,
        &mut buf,
        &mut || Ok(()),
    );
    let Ok(n) = result else { return };
    assert_eq!(n, real);
    assert_eq!(out.metadata().unwrap().len(), real, "file length is the real size");
    if let Some(segments) = &sparse.map {
        // The data lands segment by segment, in order; the rest is zeros.
        let mut content = vec![0u8; real as usize];
        out.read_exact_at(&mut content, 0).unwrap();
        let mut at = 0usize;
        let mut expect = vec![0u8; real as usize];
        for s in segments {
            let (o, l) = (s.offset as usize, s.len as usize);
            expect[o..o + l].copy_from_slice(&stored[at..at + l]);
            at += l;
        }
        assert_eq!(at, stored.len(), "every stored byte is used");
        assert!(content == expect, "segments at their offsets, zeros between");
    }
});
