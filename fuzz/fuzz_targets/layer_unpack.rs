//! `berth_layer::unpack` on hostile input: whatever the tar holds, nothing
//! may appear or change outside the destination directory.
//!
//! The first byte picks the mode. Bit 0 set: the rest is a raw tar stream.
//! Bit 0 clear: the rest describes entries that are packed into a tar with
//! valid checksums (random bytes almost never pass the header checksum, so
//! this is how the fuzzer reaches the filesystem code): each entry is
//! `type, name_len, name, link_len, link, data_len, data`, one byte per
//! length and type. Bit 1 picks `Whiteouts::Apply` over `Overlay`.
//!
//! A regular file whose type byte has bit 6 set is a sparse member instead,
//! in the format bits 3-4 pick (GNU `S`, PAX 0.0, 0.1, 1.0): its `link`
//! bytes are the map, (hole before the segment in 64 KiB units, segment
//! length) pairs, an odd last byte a hole at the end (and an empty last
//! segment); its data is what is stored (the map need not agree with it). Holes must stay holes: the
//! disk the destination uses is bounded by the size of the tar.
//!
//! The jail is fixed (`/tmp/berth-fuzz-layer`) so seeds can name the real
//! `outside` directory in absolute symlinks and hard links.
#![no_main]

use std::fs;
use std::path::Path;

use berth_layer::{unpack, UnpackOptions, Whiteouts};
use libfuzzer_sys::fuzz_target;

const JAIL: &str = "/tmp/berth-fuzz-layer";

fn take<'a>(data: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(data.len());
    let (head, rest) = data.split_at(n);
    *data = rest;
    head
}

/// Holes of sparse members are in these units (so a few bytes of input
/// describe MiBs of holes).
const HOLE_UNIT: u64 = 64 << 10;
/// Sparse members stop being made once their sizes add up to this (GNU
/// members' holes are read as zeros: time, not disk).
const MAX_SPARSE_TOTAL: u64 = 256 << 20;

/// One PAX record: `<length> key=value\n`, the length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn push_member(out: &mut Vec<u8>, h: &mut tar::Header, data: &[u8]) {
    h.set_size(data.len() as u64);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn name_into(h: &mut tar::Header, name: &[u8]) {
    let name = &name[..name.len().min(100)];
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
}

/// A sparse member (see the module docs); returns its real size.
fn sparse_member(out: &mut Vec<u8>, variant: u8, name: &[u8], map: &[u8], data: &[u8]) -> u64 {
    let mut segments = Vec::new();
    let mut end = 0u64;
    for pair in map.chunks(2) {
        end += pair[0] as u64 * HOLE_UNIT;
        // A lone last byte: a hole at the end, closed by an empty segment
        // at the real size (as GNU tar writes it).
        let len = pair.get(1).copied().unwrap_or(0) as u64;
        segments.push((end, len));
        end += len;
    }
    let real = end;
    match variant {
        0 => {
            // GNU `S`: up to four segments in the header itself.
            let mut h = tar::Header::new_gnu();
            name_into(&mut h, name);
            h.set_entry_type(tar::EntryType::GNUSparse);
            h.set_mode(0o644);
            let gnu = h.as_gnu_mut().unwrap();
            for (slot, (off, len)) in gnu.sparse.iter_mut().zip(&segments) {
                slot.offset.copy_from_slice(format!("{off:011o}\0").as_bytes());
                slot.numbytes.copy_from_slice(format!("{len:011o}\0").as_bytes());
            }
            gnu.realsize.copy_from_slice(format!("{real:011o}\0").as_bytes());
            push_member(out, &mut h, data);
        }
        v => {
            let mut records = Vec::new();
            let mut stored = Vec::new();
            let list = |sep: &str| {
                segments
                    .iter()
                    .map(|(o, l)| format!("{o}{sep}{l}"))
                    .collect::<Vec<_>>()
                    .join(sep)
            };
            match v {
                1 => {
                    records.extend(pax_record("GNU.sparse.size", real.to_string().as_bytes()));
                    for (o, l) in &segments {
                        records.extend(pax_record("GNU.sparse.offset", o.to_string().as_bytes()));
                        records.extend(pax_record("GNU.sparse.numbytes", l.to_string().as_bytes()));
                    }
                }
                2 => {
                    records.extend(pax_record("GNU.sparse.major", b"0"));
                    records.extend(pax_record("GNU.sparse.minor", b"1"));
                    records.extend(pax_record("GNU.sparse.size", real.to_string().as_bytes()));
                    records.extend(pax_record("GNU.sparse.map", list(",").as_bytes()));
                }
                _ => {
                    records.extend(pax_record("GNU.sparse.major", b"1"));
                    records.extend(pax_record("GNU.sparse.minor", b"0"));
                    records.extend(pax_record("GNU.sparse.realsize", real.to_string().as_bytes()));
                    stored = format!("{}\n{}\n", segments.len(), list("\n")).into_bytes();
                    stored.resize(stored.len().div_ceil(512) * 512, 0);
                }
            }
            records.extend(pax_record("GNU.sparse.name", name));
            stored.extend_from_slice(data);
            let mut x = tar::Header::new_ustar();
            name_into(&mut x, b"PaxHeaders.0/sparse");
            x.set_entry_type(tar::EntryType::XHeader);
            x.set_mode(0o644);
            push_member(out, &mut x, &records);
            let mut h = tar::Header::new_ustar();
            name_into(&mut h, b"GNUSparseFile.0/sparse");
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            push_member(out, &mut h, &stored);
        }
    }
    real
}

fn build_tar(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sparse_total = 0u64;
    while !data.is_empty() {
        let ty = take(&mut data, 1)[0];
        let n = take(&mut data, 1).first().copied().unwrap_or(0) as usize;
        let name = take(&mut data, n).to_vec();
        let n = take(&mut data, 1).first().copied().unwrap_or(0) as usize;
        let link = take(&mut data, n).to_vec();
        let n = take(&mut data, 1).first().copied().unwrap_or(0) as usize;
        let body = take(&mut data, n).to_vec();
        let (typeflag, mode) = match ty % 8 {
            0 => (b'0', 0o644),
            1 => (b'5', 0o755),
            2 => (b'2', 0o777),
            3 => (b'1', 0o644),
            4 => (b'6', 0o644),
            5 => (b'3', 0o666),
            6 => (b'0', 0o000),
            _ => (b'5', 0o000),
        };
        if typeflag == b'0' && ty & 0x40 != 0 && sparse_total < MAX_SPARSE_TOTAL {
            sparse_total += sparse_member(&mut out, (ty >> 3) & 3, &name, &link, &body);
            continue;
        }
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            let name = &name[..name.len().min(100)];
            u.name[..name.len()].copy_from_slice(name);
            let link = &link[..link.len().min(100)];
            u.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_mode(mode | if ty & 0x80 != 0 { 0o4000 } else { 0 });
        h.set_size(if typeflag == b'0' { body.len() as u64 } else { 0 });
        h.set_mtime(1_000_000);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        if typeflag == b'0' {
            out.extend_from_slice(&body);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

fn reset(jail: &Path) {
    let _ = fs::remove_dir_all(jail);
    fs::create_dir_all(jail.join("dest")).unwrap();
    fs::create_dir(jail.join("outside")).unwrap();
    fs::write(jail.join("outside/secret"), b"secret").unwrap();
}

fn check(jail: &Path) {
    let mut names: Vec<_> = fs::read_dir(jail).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["dest", "outside"], "an entry escaped next to dest");
    assert!(fs::symlink_metadata(jail.join("dest")).unwrap().is_dir(), "dest was replaced");
    let outside = jail.join("outside");
    assert!(fs::symlink_metadata(&outside).unwrap().is_dir(), "outside was replaced");
    let inside: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(inside, ["secret"], "an entry escaped into outside/");
    let secret = fs::symlink_metadata(outside.join("secret")).unwrap();
    assert!(secret.is_file() && secret.len() == 6, "outside/secret was modified");
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret");
}

/// Disk blocks used under `dir` (entries lstat'ed, never followed).
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut used = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else { continue };
            used += m.blocks() * 512;
            if m.is_dir() {
                used += disk_use(&e.path());
            }
        }
    }
    used
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let jail = Path::new(JAIL);
    reset(jail);
    let tar = if mode & 1 == 1 { rest.to_vec() } else { build_tar(rest) };
    let whiteouts = if mode & 2 == 2 { Whiteouts::Apply } else { Whiteouts::Overlay };
    // Errors are fine (hostile input); escaping is not.
    let _ = unpack(&tar[..], &jail.join("dest"), &UnpackOptions::new(whiteouts));
    check(jail);
    // Holes are not written: what lands on disk is bounded by the tar
    // (a file's data is at most its stored bytes, rounded up to blocks; a
    // PAX sparse segment of one byte takes a block for a few map bytes).
    let used = disk_use(&jail.join("dest"));
    let bound = tar.len() as u64 * 1024 + (1 << 20);
    assert!(used <= bound, "{used} bytes on disk from a {}-byte tar", tar.len());
});
