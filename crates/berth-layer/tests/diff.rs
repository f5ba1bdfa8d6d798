//! Diffs: an overlay mount's upper dir and two plain trees turn into layers
//! that, applied to the base, reproduce the changed tree exactly.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_layer::{
    decompress, unpack, write_diff_dirs, write_diff_from_upper, write_tree, Compression,
    DiffOptions, LayerEncoder, UnpackOptions, Whiteouts,
};
use common::{can_chown_any, getxattr, listing, tar_names};

fn set_mtime(p: &Path, sec: i64) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and array.
    assert_eq!(
        unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        },
        0
    );
}

/// A base tree with the shapes that matter: nested dirs, setuid, other
/// owners, symlinks, hard links, a user xattr.
fn make_base(root: &Path) {
    for d in [
        "etc",
        "usr/lib/deep/er",
        "var/cache/apt",
        "opaque/sub",
        "gone/sub",
        "keep",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0\n").unwrap();
    fs::write(root.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(root.join("usr/lib/deep/er/lib.so"), vec![42u8; 70_000]).unwrap();
    fs::write(root.join("usr/bin-su"), "su").unwrap();
    fs::set_permissions(root.join("usr/bin-su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(root.join("var/cache/apt/pkg"), "pkg").unwrap();
    fs::write(root.join("opaque/a"), "a").unwrap();
    fs::write(root.join("opaque/sub/b"), "b").unwrap();
    fs::write(root.join("gone/sub/c"), "c").unwrap();
    fs::write(root.join("keep/k"), "k").unwrap();
    fs::hard_link(root.join("keep/k"), root.join("keep/k2")).unwrap();
    symlink("../etc/passwd", root.join("keep/pw")).unwrap();
    std::os::unix::fs::chown(root.join("var/cache/apt/pkg"), Some(100), Some(101)).unwrap();
    let c = std::ffi::CString::new(root.join("etc/hosts").to_str().unwrap()).unwrap();
    // SAFETY: valid strings.
    unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.mark".as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    // Deterministic times everywhere (dirs last).
    let mut all = vec![];
    collect(root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in all {
        set_mtime(&p, 1_600_000_000);
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            collect(&p, out);
        }
        out.push(p);
    }
}

/// The changes a RUN step might make, applied to a mounted (merged) view.
fn mutate(m: &Path) {
    fs::write(m.join("etc/hosts"), "changed\n").unwrap(); // modified (copy-up)
    fs::remove_file(m.join("etc/passwd")).unwrap(); // whiteout
    fs::remove_dir_all(m.join("gone")).unwrap(); // whiteout of a dir
    fs::remove_dir_all(m.join("opaque")).unwrap(); // recreated: opaque
    fs::create_dir(m.join("opaque")).unwrap();
    fs::write(m.join("opaque/new"), "new").unwrap();
    // Deep new file: usr, usr/lib, usr/lib/deep are copied up untouched.
    fs::write(m.join("usr/lib/deep/er/new.so"), "so").unwrap();
    fs::set_permissions(m.join("var/cache"), fs::Permissions::from_mode(0o700)).unwrap(); // dir meta
    fs::write(m.join("newdir-file"), "x").unwrap();
    fs::create_dir_all(m.join("new/tree")).unwrap();
    fs::write(m.join("new/tree/h1"), "hard").unwrap();
    fs::hard_link(m.join("new/tree/h1"), m.join("new/h2")).unwrap();
    symlink("/etc/hosts", m.join("new/abs-link")).unwrap();
    fs::remove_file(m.join("keep/k2")).unwrap();
    std::os::unix::fs::lchown(m.join("keep/pw"), Some(7), Some(7)).unwrap();
}

fn mount_overlay(lowers: &[&Path], upper: &Path, work: &Path, merged: &Path) -> bool {
    let lowerdir = lowers
        .iter()
        .map(|p| p.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},userxattr",
        upper.display(),
        work.display()
    );
    let st = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(merged)
        .status()
        .unwrap();
    st.success()
}

fn umount(p: &Path) {
    assert!(Command::new("umount").arg(p).status().unwrap().success());
}

fn tree_tar(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    write_tree(dir, &mut out, &DiffOptions::default()).unwrap();
    out
}

fn apply(tars: &[&[u8]], dest: &Path, mode: Whiteouts) {
    fs::create_dir_all(dest).unwrap();
    for t in tars {
        unpack(*t, dest, &UnpackOptions::new(mode)).unwrap();
    }
}

#[test]
fn overlay_upper_round_trip() {
    if !can_chown_any() {
        eprintln!("skipping overlay_upper_round_trip: needs root (mount, chown to other ids)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("src");
    fs::create_dir(&src).unwrap();
    make_base(&src);
    let base = tree_tar(&src);
    let lower = t.join("lower");
    apply(&[&base], &lower, Whiteouts::Overlay);
    // The unpacked lower is the tree it came from.
    assert_eq!(listing(&lower, true), listing(&src, true));

    let (upper, work, merged) = (t.join("upper"), t.join("work"), t.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    if !mount_overlay(&[&lower], &upper, &work, &merged) {
        eprintln!("skipping: overlayfs with userxattr cannot be mounted here");
        return;
    }
    mutate(&merged);
    let expected = listing(&merged, true);
    umount(&merged);

    let mut diff = Vec::new();
    let report = write_diff_from_upper(
        &upper,
        std::slice::from_ref(&lower),
        &mut diff,
        &DiffOptions::default(),
    )
    .unwrap();
    let mut again = Vec::new();
    write_diff_from_upper(
        &upper,
        std::slice::from_ref(&lower),
        &mut again,
        &DiffOptions::default(),
    )
    .unwrap();
    assert_eq!(diff, again, "same upper, same bytes");

    let names = tar_names(&diff);
    for want in [
        "etc/.wh.passwd",
        ".wh.gone",
        "opaque/",
        "opaque/.wh..wh..opq",
        "usr/lib/deep/er/",
        "var/cache/",
        "keep/.wh.k2",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // Copied up only because a descendant changed: not in the layer.
    for skipped in ["usr/", "usr/lib/", "usr/lib/deep/"] {
        assert!(
            !names.iter().any(|n| n == skipped),
            "{skipped} should be skipped: {names:?}"
        );
    }
    // Sorted within each directory, opaque marker right after its dir.
    let i = names.iter().position(|n| n == "opaque/").unwrap();
    assert_eq!(names[i + 1], "opaque/.wh..wh..opq");
    assert_eq!(report.whiteouts, 4);

    // The hard link pair is one file and one link entry.
    let mut a = tar::Archive::new(&diff[..]);
    let links: Vec<(String, String)> = a
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type() == tar::EntryType::Link)
        .map(|e| {
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned(),
            )
        })
        .collect();
    assert_eq!(links, [("new/tree/h1".to_string(), "new/h2".to_string())]);

    // Applying base + diff onto a plain tree gives the merged view.
    let applied = t.join("applied");
    apply(&[&base, &diff], &applied, Whiteouts::Apply);
    assert_eq!(listing(&applied, true), expected);

    // Unpacking the diff as another overlay lower gives the same view too.
    let lower2 = t.join("lower2");
    apply(&[&diff], &lower2, Whiteouts::Overlay);
    assert_eq!(
        getxattr(&lower2.join("opaque"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let (u2, w2, m2) = (t.join("u2"), t.join("w2"), t.join("m2"));
    for d in [&u2, &w2, &m2] {
        fs::create_dir(d).unwrap();
    }
    assert!(mount_overlay(&[&lower2, &lower], &u2, &w2, &m2));
    let stacked = listing(&m2, true);
    umount(&m2);
    assert_eq!(stacked, expected);

    // The copy-based fallback finds the same changes between two trees.
    let mut dirs_diff = Vec::new();
    write_diff_dirs(&src, &applied, &mut dirs_diff, &DiffOptions::default()).unwrap();
    let applied2 = t.join("applied2");
    apply(&[&base, &dirs_diff], &applied2, Whiteouts::Apply);
    assert_eq!(listing(&applied2, true), expected);
    let dnames = tar_names(&dirs_diff);
    assert!(dnames.contains(&"etc/.wh.passwd".to_string()), "{dnames:?}");
    assert!(
        !dnames.contains(&"usr/lib/deep/er/lib.so".to_string()),
        "unchanged file written: {dnames:?}"
    );
}

#[test]
fn dirs_diff_detects_same_size_same_second_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("f"), "aaaa").unwrap();
    fs::write(b.join("f"), "bbbb").unwrap();
    fs::write(a.join("same"), "same").unwrap();
    fs::write(b.join("same"), "same").unwrap();
    for p in [
        a.join("f"),
        b.join("f"),
        a.join("same"),
        b.join("same"),
        a.clone(),
        b.clone(),
    ] {
        set_mtime(&p, 1_000);
    }
    let mut out = Vec::new();
    write_diff_dirs(&a, &b, &mut out, &DiffOptions::default()).unwrap();
    assert_eq!(tar_names(&out), ["f"]);
}

#[test]
fn tree_output_is_deterministic_and_clamped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    fs::create_dir_all(d.join("b/c")).unwrap();
    fs::write(d.join("b/c/f"), "x").unwrap();
    fs::write(d.join("a-b"), "y").unwrap();
    let opts = DiffOptions {
        source_date_epoch: Some(1_000_000),
    };
    let mut one = Vec::new();
    write_tree(&d, &mut one, &opts).unwrap();
    let mut two = Vec::new();
    write_tree(&d, &mut two, &opts).unwrap();
    assert_eq!(one, two);
    assert_eq!(tar_names(&one), ["a-b", "b/", "b/c/", "b/c/f"]);
    let mut a = tar::Archive::new(&one[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        assert_eq!(e.header().mtime().unwrap(), 1_000_000);
        assert_eq!(e.header().username_bytes(), Some(&b""[..]));
    }
}

#[test]
fn parallel_gzip_matches_gzip_and_diff_id() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    fs::create_dir_all(&d).unwrap();
    // A few MiB so several gzip members are written in parallel.
    for i in 0..5u32 {
        let data: Vec<u8> = (0..1_000_000u32)
            .map(|j| ((j.wrapping_mul(2_654_435_761) >> 24) as u8) ^ (i as u8))
            .collect();
        fs::write(d.join(format!("f{i}")), data).unwrap();
    }
    let tar = tree_tar(&d);
    let mut enc = LayerEncoder::new(Vec::new(), Compression::Gzip { level: 6 }).unwrap();
    enc.write_all(&tar).unwrap();
    let (gz, id) = enc.finish().unwrap();
    assert_eq!(id.uncompressed_size, tar.len() as u64);

    let gzfile = tmp.path().join("layer.tar.gz");
    fs::write(&gzfile, &gz).unwrap();
    assert!(
        Command::new("gzip")
            .arg("-t")
            .arg(&gzfile)
            .status()
            .unwrap()
            .success(),
        "gzip -t refuses the stream"
    );
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&gzfile)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, tar, "gzip -dc gives back the tar");
    let sum = Command::new("sha256sum")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sum = sum;
    sum.stdin.take().unwrap().write_all(&tar).unwrap();
    let hex = String::from_utf8(sum.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(id.diff_id, format!("sha256:{}", &hex[..64]));

    // And berth's own reader takes it back (multi-member aware).
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut decompress(&gz[..]).unwrap(), &mut back).unwrap();
    assert_eq!(back, tar);

    // zstd too, through the zstd CLI when present.
    let mut enc = LayerEncoder::new(Vec::new(), Compression::Zstd { level: 3 }).unwrap();
    enc.write_all(&tar).unwrap();
    let (zs, zid) = enc.finish().unwrap();
    assert_eq!(zid, id);
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut decompress(&zs[..]).unwrap(), &mut back).unwrap();
    assert_eq!(back, tar);
}

#[test]
fn unpacked_ownership_round_trips_through_tree() {
    if !can_chown_any() {
        eprintln!("skipping: chown to other ids needs root with a full id map");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    make_base(&src);
    let tar = tree_tar(&src);
    let dst = tmp.path().join("dst");
    apply(&[&tar], &dst, Whiteouts::Apply);
    assert_eq!(listing(&dst, true), listing(&src, true));
    let md = fs::metadata(dst.join("var/cache/apt/pkg")).unwrap();
    assert_eq!((md.uid(), md.gid()), (100, 101));
    assert_eq!(
        fs::metadata(dst.join("keep/k")).unwrap().ino(),
        fs::metadata(dst.join("keep/k2")).unwrap().ino()
    );
}
