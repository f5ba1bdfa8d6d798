//! Sparse files in tars, written with their holes kept (as Docker and
//! containerd do through Go's `archive/tar`): a small tar describing a
//! 5 GiB file with one byte of data must not write 5 GiB.
//!
//! - Old GNU sparse members (type `S`): the `tar` crate parses their map
//!   and hands the holes over as zeros; [`write_holes`] skips blocks of
//!   zeros instead of writing them.
//! - PAX sparse members (GNU tar `--sparse --format=pax`, versions 0.0, 0.1
//!   and 1.0): the `tar` crate does not know them and gives the stored
//!   data as it is (for 1.0 the map, then the data segments).
//!   [`PaxSparseRecords`] collects the `GNU.sparse.*` records of the PAX
//!   header into a [`PaxSparse`] and [`write_pax_sparse`] writes each
//!   segment at its offset. The map is validated as Go's `archive/tar`
//!   (and BSD tar) do: segments in order, not overlapping, inside the real
//!   size, and exactly as much data as the segments need.
//!
//! Untrusted input: everything is bounded (map text, entry count) and
//! fuzzed (`fuzz/fuzz_targets/layer_unpack.rs` builds PAX sparse members).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Largest 1.0 map text accepted (at ~20 bytes a segment, a million
/// segments; Go reads it without a limit).
const MAX_MAP_BYTES: usize = 16 << 20;
/// Most segments in one map.
const MAX_SEGMENTS: usize = 1 << 20;
/// Holes are found in blocks of this size (the usual filesystem block).
const HOLE_BLOCK: usize = 4096;

/// One stretch of data of a sparse file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
}

/// A PAX sparse member's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaxSparse {
    /// The file's real name (`GNU.sparse.name`); the header's is a
    /// placeholder like `./GNUSparseFile.123/name`.
    pub name: Option<Vec<u8>>,
    /// The size of the file once expanded.
    pub real_size: u64,
    /// 0.0 and 0.1: the map from the PAX records. `None` for 1.0, whose
    /// map starts the entry's data.
    pub map: Option<Vec<Segment>>,
}

/// The `GNU.sparse.*` records of one PAX header, in order.
#[derive(Debug, Default)]
pub struct PaxSparseRecords {
    major: Option<String>,
    minor: Option<String>,
    name: Option<Vec<u8>>,
    size: Option<String>,
    real_size: Option<String>,
    map: Option<String>,
    /// 0.0: `GNU.sparse.offset` / `GNU.sparse.numbytes`, repeated, in order.
    pairs: Vec<String>,
    pairs_bytes: usize,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl PaxSparseRecords {
    /// Takes one PAX record; `true` if it was a sparse one.
    pub fn record(&mut self, key: &[u8], value: &[u8]) -> bool {
        let Some(k) = key.strip_prefix(b"GNU.sparse.") else {
            return false;
        };
        let text = || String::from_utf8_lossy(value).into_owned();
        match k {
            b"major" => self.major = Some(text()),
            b"minor" => self.minor = Some(text()),
            b"name" => self.name = Some(value.to_vec()),
            b"size" => self.size = Some(text()),
            b"realsize" => self.real_size = Some(text()),
            b"map" => self.map = Some(text()),
            b"offset" | b"numbytes" => {
                // Bounded like a 1.0 map; past it the map is refused.
                self.pairs_bytes += value.len() + 1;
                if self.pairs_bytes <= MAX_MAP_BYTES {
                    self.pairs.push(text());
                }
            }
            // numblocks is implied by the map; anything else is unknown.
            _ => {}
        }
        true
    }

    /// The layout, if the records describe a sparse file (Go's
    /// `readGNUSparsePAXHeaders`: explicit 0.0/0.1/1.0 versions, or a 0.x
    /// map without them; an unknown version is not sparse).
    pub fn finish(self) -> io::Result<Option<PaxSparse>> {
        let v1 = match (self.major.as_deref(), self.minor.as_deref()) {
            (Some("0"), Some("0" | "1")) => false,
            (Some("1"), Some("0")) => true,
            (None, None) if self.map.is_some() || !self.pairs.is_empty() => false,
            _ => return Ok(None),
        };
        let size = self.size.or(self.real_size).ok_or_else(|| {
            invalid("PAX sparse file without GNU.sparse.size or GNU.sparse.realsize")
        })?;
        let real_size = parse_u64(size.trim())
            .ok_or_else(|| invalid(format!("invalid PAX sparse size {size:?}")))?;
        let map = if v1 {
            None
        } else {
            let values: Vec<&str> = match &self.map {
                Some(m) if m.len() > MAX_MAP_BYTES => {
                    return Err(invalid("PAX sparse map too large"))
                }
                Some(m) if m.is_empty() => Vec::new(),
                Some(m) => m.split(',').collect(),
                None if self.pairs_bytes > MAX_MAP_BYTES => {
                    return Err(invalid("PAX sparse map too large"))
                }
                None => self.pairs.iter().map(String::as_str).collect(),
            };
            Some(pairs(&values)?)
        };
        let sparse = PaxSparse {
            name: self.name.filter(|n| !n.is_empty()),
            real_size,
            map,
        };
        if let Some(m) = &sparse.map {
            validate(m, real_size)?;
        }
        Ok(Some(sparse))
    }
}

/// Decimal, no sign, no spaces (Go's `ParseInt` base 10, positive).
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn pairs(values: &[&str]) -> io::Result<Vec<Segment>> {
    if values.len() % 2 != 0 {
        return Err(invalid("PAX sparse map with an odd number of values"));
    }
    if values.len() / 2 > MAX_SEGMENTS {
        return Err(invalid("PAX sparse map with too many segments"));
    }
    values
        .chunks_exact(2)
        .map(|p| match (parse_u64(p[0]), parse_u64(p[1])) {
            (Some(offset), Some(len)) => Ok(Segment { offset, len }),
            _ => Err(invalid(format!(
                "invalid PAX sparse map entry {},{}",
                p[0], p[1]
            ))),
        })
        .collect()
}

/// Go's `validateSparseEntries` (BSD tar's checks): in order, not
/// overlapping, inside the file.
fn validate(map: &[Segment], real_size: u64) -> io::Result<()> {
    let mut end = 0u64;
    for s in map {
        let e = s
            .offset
            .checked_add(s.len)
            .ok_or_else(|| invalid("PAX sparse segment overflows"))?;
        if e > real_size {
            return Err(invalid("PAX sparse segment past the end of the file"));
        }
        if s.offset < end {
            return Err(invalid("PAX sparse segments out of order or overlapping"));
        }
        end = e;
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, or fails with `UnexpectedEof`.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            invalid("sparse file data ends early")
        } else {
            e
        }
    })
}

/// The 1.0 map at the start of the data: decimal numbers, one a line (the
/// count, then offset/length pairs), padded to 512-byte blocks. Returns it
/// and how many bytes of data it took.
fn read_map_v1(data: &mut impl Read, stored: u64) -> io::Result<(Vec<Segment>, u64)> {
    let mut text: Vec<u8> = Vec::new();
    let mut block = [0u8; 512];
    let mut newlines = 0usize;
    let mut need = 1usize;
    let mut count: Option<usize> = None;
    loop {
        while newlines < need {
            if text.len() as u64 + 512 > stored {
                return Err(invalid("PAX sparse 1.0 map longer than the entry"));
            }
            if text.len() + 512 > MAX_MAP_BYTES {
                return Err(invalid("PAX sparse map too large"));
            }
            read_full(data, &mut block)?;
            newlines += block.iter().filter(|&&b| b == b'\n').count();
            text.extend_from_slice(&block);
        }
        if count.is_some() {
            break;
        }
        let first = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let n = std::str::from_utf8(first)
            .ok()
            .and_then(parse_u64)
            .ok_or_else(|| invalid("invalid PAX sparse 1.0 map count"))?;
        if n > MAX_SEGMENTS as u64 {
            return Err(invalid("PAX sparse map with too many segments"));
        }
        count = Some(n as usize);
        need = 1 + 2 * n as usize;
    }
    let n = count.unwrap_or(0);
    let tokens: Vec<&str> = text
        .split(|&b| b == b'\n')
        .skip(1)
        .take(2 * n)
        .map(|t| std::str::from_utf8(t).unwrap_or("x"))
        .collect();
    if tokens.len() != 2 * n {
        return Err(invalid("PAX sparse 1.0 map ends early"));
    }
    Ok((pairs(&tokens)?, text.len() as u64))
}

/// Writes a PAX sparse member's content into `out` (a new, empty file):
/// each segment at its offset, holes left as holes, the file extended to
/// its real size. `data` is the entry's stored data, `stored` bytes long.
/// `tick` runs before each chunk (cancellation, limits). Returns the real
/// size.
pub fn write_pax_sparse(
    data: &mut impl Read,
    stored: u64,
    sparse: &PaxSparse,
    out: &File,
    buf: &mut [u8],
    tick: &mut dyn FnMut() -> io::Result<()>,
) -> io::Result<u64> {
    let (map, used) = match &sparse.map {
        Some(m) => (m.clone(), 0),
        None => {
            let (m, used) = read_map_v1(data, stored)?;
            validate(&m, sparse.real_size)?;
            (m, used)
        }
    };
    let need: u64 = map.iter().map(|s| s.len).sum();
    if need != stored - used {
        return Err(invalid(format!(
            "PAX sparse map needs {need} bytes of data, the entry holds {}",
            stored - used
        )));
    }
    for s in &map {
        let mut left = s.len;
        let mut at = s.offset;
        while left > 0 {
            tick()?;
            let n = (buf.len() as u64).min(left) as usize;
            read_full(data, &mut buf[..n])?;
            out.write_all_at(&buf[..n], at)?;
            at += n as u64;
            left -= n as u64;
        }
    }
    out.set_len(sparse.real_size)?;
    Ok(sparse.real_size)
}

static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// A block (at most [`HOLE_BLOCK`] bytes) of zeros? A slice comparison is a
/// `memcmp`, fast in unoptimised builds too.
fn is_zero(block: &[u8]) -> bool {
    block == &ZEROS[..block.len()]
}

/// Copies `data` into `out` (a new, empty file) leaving blocks of zeros as
/// holes, then sets the length: for GNU sparse members, whose holes the
/// `tar` crate produces as zeros. `tick` runs before each chunk. Returns the
/// size written.
pub fn write_holes(
    data: &mut impl Read,
    out: &File,
    buf: &mut [u8],
    tick: &mut dyn FnMut() -> io::Result<()>,
) -> io::Result<u64> {
    let mut pos = 0u64;
    loop {
        tick()?;
        let n = match data.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        // Blocks aligned to the file offset, so holes are whole blocks.
        let mut i = 0;
        while i < n {
            let lead = HOLE_BLOCK - ((pos + i as u64) % HOLE_BLOCK as u64) as usize;
            let end = (i + lead).min(n);
            let mut j = end;
            if is_zero(&chunk[i..end]) {
                i = end;
                continue;
            }
            // Extend over the following non-zero blocks: one write for them.
            while j < n {
                let e = (j + HOLE_BLOCK).min(n);
                if is_zero(&chunk[j..e]) {
                    break;
                }
                j = e;
            }
            out.write_all_at(&chunk[i..j], pos + i as u64)?;
            i = j;
        }
        pos += n as u64;
    }
    out.set_len(pos)?;
    Ok(pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::os::unix::fs::MetadataExt;

    fn records(recs: &[(&str, &str)]) -> io::Result<Option<PaxSparse>> {
        let mut r = PaxSparseRecords::default();
        for (k, v) in recs {
            r.record(k.as_bytes(), v.as_bytes());
        }
        r.finish()
    }

    #[test]
    fn versions() {
        let s = records(&[
            ("GNU.sparse.major", "0"),
            ("GNU.sparse.minor", "1"),
            ("GNU.sparse.name", "a/b"),
            ("GNU.sparse.size", "100"),
            ("GNU.sparse.map", "10,5,50,0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.name.as_deref(), Some(&b"a/b"[..]));
        assert_eq!(s.real_size, 100);
        assert_eq!(
            s.map,
            Some(vec![
                Segment { offset: 10, len: 5 },
                Segment { offset: 50, len: 0 }
            ])
        );
        // 0.0: repeated offset/numbytes records, no version.
        let s = records(&[
            ("GNU.sparse.size", "30"),
            ("GNU.sparse.numblocks", "2"),
            ("GNU.sparse.offset", "0"),
            ("GNU.sparse.numbytes", "1"),
            ("GNU.sparse.offset", "20"),
            ("GNU.sparse.numbytes", "10"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.map.unwrap().len(), 2);
        let s = records(&[
            ("GNU.sparse.major", "1"),
            ("GNU.sparse.minor", "0"),
            ("GNU.sparse.realsize", "4096"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((s.real_size, s.map), (4096, None));
        // Not sparse, or an unknown version.
        assert_eq!(records(&[("path", "x")]).unwrap(), None);
        assert_eq!(
            records(&[("GNU.sparse.major", "2"), ("GNU.sparse.minor", "0")]).unwrap(),
            None
        );
    }

    #[test]
    fn bad_maps_are_refused() {
        for map in [
            "10,5,12,1",
            "0,5,3",
            "90,20",
            "x,1",
            "-1,2",
            "1,18446744073709551615",
        ] {
            let r = records(&[
                ("GNU.sparse.major", "0"),
                ("GNU.sparse.minor", "1"),
                ("GNU.sparse.size", "100"),
                ("GNU.sparse.map", map),
            ]);
            assert!(r.is_err(), "{map}");
        }
        assert!(records(&[("GNU.sparse.map", "0,1")]).is_err(), "no size");
    }

    fn tmpfile() -> File {
        tempfile::tempfile().unwrap()
    }

    #[test]
    fn pax_v1_writes_segments_and_keeps_holes() {
        let mut data = b"2\n4096\n3\n1048576\n2\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"abcde");
        let sparse = PaxSparse {
            name: None,
            real_size: 8 << 20,
            map: None,
        };
        let out = tmpfile();
        let mut buf = vec![0; 64 << 10];
        let n = write_pax_sparse(
            &mut Cursor::new(&data),
            data.len() as u64,
            &sparse,
            &out,
            &mut buf,
            &mut || Ok(()),
        )
        .unwrap();
        assert_eq!(n, 8 << 20);
        let meta = out.metadata().unwrap();
        assert_eq!(meta.len(), 8 << 20);
        assert!(meta.blocks() * 512 <= 64 << 10, "{} blocks", meta.blocks());
        let mut b = [0u8; 3];
        out.read_exact_at(&mut b, 4096).unwrap();
        assert_eq!(&b, b"abc");
        let mut b = [0u8; 3];
        out.read_exact_at(&mut b, 1048575).unwrap();
        assert_eq!(&b, b"\0de");
        // Data left over, or missing: refused.
        for bad in [&data[..data.len() - 1], &[&data[..], b"x"].concat()[..]] {
            let r = write_pax_sparse(
                &mut Cursor::new(bad),
                bad.len() as u64,
                &sparse,
                &tmpfile(),
                &mut buf,
                &mut || Ok(()),
            );
            assert!(r.is_err());
        }
        // A map that claims more lines than the entry has.
        let mut huge = b"99999\n".to_vec();
        huge.resize(512, 0);
        let r = write_pax_sparse(
            &mut Cursor::new(&huge),
            huge.len() as u64,
            &sparse,
            &tmpfile(),
            &mut buf,
            &mut || Ok(()),
        );
        assert!(r.is_err());
    }

    #[test]
    fn zero_blocks_become_holes() {
        let mut data = vec![0u8; 4 << 20];
        data[5000] = 1;
        data[(4 << 20) - 1] = 2;
        let out = tmpfile();
        let mut buf = vec![0; 100_000]; // not a multiple of the block size
        let n = write_holes(&mut Cursor::new(&data), &out, &mut buf, &mut || Ok(())).unwrap();
        assert_eq!(n, 4 << 20);
        let meta = out.metadata().unwrap();
        assert_eq!(meta.len(), 4 << 20);
        assert!(meta.blocks() * 512 <= 64 << 10, "{} blocks", meta.blocks());
        let mut back = vec![0u8; 4 << 20];
        out.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data);
    }
}
