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

fn build_tar(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let jail = Path::new(JAIL);
    reset(jail);
    let tar = if mode & 1 == 1 { rest.to_vec() } else { build_tar(rest) };
    let whiteouts = if mode & 2 == 2 { Whiteouts::Apply } else { Whiteouts::Overlay };
    // Errors are fine (hostile input); escaping is not.
    let _ = unpack(&tar[..], &jail.join("dest"), &UnpackOptions::new(whiteouts));
    check(jail);
});
