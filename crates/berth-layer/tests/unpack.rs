//! Unpacking: hostile layers stay inside the destination; whiteouts,
//! metadata and replacement rules behave as in containerd.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_layer::{unpack, LayerError, UnpackOptions, UnpackReport, Whiteouts};
use common::{can_chown_any, getxattr, is_root, listing, TarBuf};

/// A parent holding `dest` and `outside/secret`; the check at the end proves
/// nothing outside `dest` changed.
struct Jail {
    _tmp: tempfile::TempDir,
    parent: PathBuf,
    dest: PathBuf,
}

impl Jail {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().to_path_buf();
        let dest = parent.join("dest");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(parent.join("outside")).unwrap();
        fs::write(parent.join("outside/secret"), b"secret").unwrap();
        Jail {
            _tmp: tmp,
            parent,
            dest,
        }
    }

    fn unpack(&self, tar: &[u8], mode: Whiteouts) -> Result<UnpackReport, LayerError> {
        unpack(tar, &self.dest, &UnpackOptions::new(mode))
    }

    fn assert_contained(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["dest", "outside"],
            "something appeared next to dest"
        );
        let outside: Vec<_> = fs::read_dir(self.parent.join("outside"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, ["secret"], "something appeared in ../outside");
        assert_eq!(
            fs::read(self.parent.join("outside/secret")).unwrap(),
            b"secret"
        );
        assert!(!Path::new("/etc/berth-layer-pwned").exists());
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

#[test]
fn dotdot_and_absolute_names_are_contained() {
    for mode in [Whiteouts::Overlay, Whiteouts::Apply] {
        let j = Jail::new();
        let tar = TarBuf::new()
            .file("../../etc/berth-layer-pwned", b"a")
            .file("/etc/berth-layer-pwned2", b"b")
            .file("x/../../outside/secret", b"c")
            .bytes();
        j.unpack(&tar, mode).unwrap();
        assert_eq!(fs::read(j.p("etc/berth-layer-pwned")).unwrap(), b"a");
        assert_eq!(fs::read(j.p("etc/berth-layer-pwned2")).unwrap(), b"b");
        assert_eq!(fs::read(j.p("outside/secret")).unwrap(), b"c");
        j.assert_contained();
    }
}

#[test]
fn symlink_to_root_resolves_inside_dest() {
    let j = Jail::new();
    let tar = TarBuf::new()
        .symlink("a", "/")
        .file("a/etc/berth-layer-pwned", b"x")
        .symlink("up", "../../..")
        .file("up/outside/secret", b"y")
        .bytes();
    j.unpack(&tar, Whiteouts::Apply).unwrap();
    // The symlinks survive as written; what went through them landed in dest.
    assert_eq!(fs::read_link(j.p("a")).unwrap(), Path::new("/"));
    assert_eq!(fs::read(j.p("etc/berth-layer-pwned")).unwrap(), b"x");
    assert_eq!(fs::read(j.p("outside/secret")).unwrap(), b"y");
    j.assert_contained();
}

#[test]
fn symlink_chains_stay_inside() {
    let j = Jail::new();
    let outside = j.parent.join("outside");
    let tar = TarBuf::new()
        .symlink("l1", "l2")
        .symlink("l2", "sub/l3")
        .dir("sub/")
        .symlink("sub/l3", "../../../..")
        .file("l1/pwn", b"1")
        // An absolute symlink naming the real outside directory.
        .symlink("abs", outside.to_str().unwrap())
        .bytes();
    j.unpack(&tar, Whiteouts::Apply).unwrap();
    assert_eq!(fs::read(j.p("pwn")).unwrap(), b"1");
    // Writing through "abs" needs abs's target inside dest, which does not
    // exist: refused rather than followed.
    let tar2 = TarBuf::new().file("abs/pwn", b"2").bytes();
    let err = j.unpack(&tar2, Whiteouts::Apply).unwrap_err();
    assert!(err.to_string().contains("abs"), "{err}");
    j.assert_contained();
}

#[test]
fn existing_symlinks_in_dest_are_not_followed_out() {
    let j = Jail::new();
    std::os::unix::fs::symlink(j.parent.join("outside"), j.p("evil")).unwrap();
    std::os::unix::fs::symlink("../outside/secret", j.p("evilfile")).unwrap();
    fs::create_dir_all(
        j.dest
            .join(j.parent.join("outside").strip_prefix("/").unwrap()),
    )
    .unwrap();
    let tar = TarBuf::new()
        .file("evil/pwn", b"1")
        // A file over a symlink replaces the symlink; it never writes the target.
        .file("evilfile", b"2")
        .bytes();
    j.unpack(&tar, Whiteouts::Apply).unwrap();
    let inner = j
        .dest
        .join(j.parent.join("outside/pwn").strip_prefix("/").unwrap());
    assert_eq!(fs::read(inner).unwrap(), b"1");
    assert!(fs::symlink_metadata(j.p("evilfile")).unwrap().is_file());
    j.assert_contained();
}

#[test]
fn hardlinks_must_point_inside() {
    let j = Jail::new();
    let err = j
        .unpack(
            &TarBuf::new().hardlink("pw", "/etc/passwd").bytes(),
            Whiteouts::Apply,
        )
        .unwrap_err();
    assert!(matches!(err, LayerError::Entry { .. }), "{err}");
    assert!(err.to_string().contains("/etc/passwd"));
    let err = j
        .unpack(
            &TarBuf::new().hardlink("s", "../outside/secret").bytes(),
            Whiteouts::Apply,
        )
        .unwrap_err();
    assert!(matches!(err, LayerError::Entry { .. }), "{err}");
    j.assert_contained();

    // With the target inside dest, "/etc/passwd" means dest/etc/passwd.
    let tar = TarBuf::new()
        .file("etc/passwd", b"root:x:0:0")
        .hardlink("pw", "/etc/passwd")
        .bytes();
    j.unpack(&tar, Whiteouts::Apply).unwrap();
    let a = fs::metadata(j.p("pw")).unwrap();
    let b = fs::metadata(j.p("etc/passwd")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    j.assert_contained();
}

#[test]
fn hardlink_to_escaping_symlink_links_the_symlink() {
    let j = Jail::new();
    let secret = j.parent.join("outside/secret");
    let tar = TarBuf::new()
        .symlink("s", secret.to_str().unwrap())
        .hardlink("h", "s")
        // Overwrite both names with files: must replace the links, not write
        // through them.
        .file("h", b"overwritten")
        .bytes();
    j.unpack(&tar, Whiteouts::Apply).unwrap();
    assert!(fs::symlink_metadata(j.p("s"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read(j.p("h")).unwrap(), b"overwritten");
    j.assert_contained();

    let j = Jail::new();
    let tar = TarBuf::new()
        .symlink("s", secret.to_str().unwrap())
        .hardlink("h", "s")
        .bytes();
    j.unpack(&tar, Whiteouts::Apply).unwrap();
    let h = fs::symlink_metadata(j.p("h")).unwrap();
    assert!(
        h.file_type().is_symlink(),
        "the hard link is to the symlink inode"
    );
    assert_eq!(h.ino(), fs::symlink_metadata(j.p("s")).unwrap().ino());
    j.assert_contained();
}

#[test]
fn devices_are_skipped_and_fifos_created() {
    let j = Jail::new();
    let tar = TarBuf::new()
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .device("dev/sda", tar::EntryType::Block, 8, 0)
        .device("run/fifo", tar::EntryType::Fifo, 0, 0)
        .bytes();
    let report = j.unpack(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(report.devices_skipped, 2);
    assert_eq!(report.warnings.len(), 2);
    assert!(!j.p("dev/null").exists());
    assert!(fs::symlink_metadata(j.p("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    j.assert_contained();
}

#[test]
fn file_replaces_dir_and_dir_over_dir_keeps_contents() {
    let j = Jail::new();
    let tar = TarBuf::new()
        .dir("d/")
        .file("d/f", b"1")
        .dir("keep/")
        .file("keep/f", b"2")
        .file("d", b"now a file")
        .dir_meta("keep/", 0o700, 1_500_000_000)
        .bytes();
    j.unpack(&tar, Whiteouts::Apply).unwrap();
    assert_eq!(fs::read(j.p("d")).unwrap(), b"now a file");
    assert_eq!(fs::read(j.p("keep/f")).unwrap(), b"2");
    let md = fs::metadata(j.p("keep")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    assert_eq!(md.mtime(), 1_500_000_000);
    j.assert_contained();
}

#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    for name in ["sub/.wh..", "sub/.wh...", ".wh..", "../.wh.outside"] {
        for mode in [Whiteouts::Overlay, Whiteouts::Apply] {
            let j = Jail::new();
            let tar = TarBuf::new().file("sub/f", b"x").file(name, b"").bytes();
            let res = j.unpack(&tar, mode);
            if name == "../.wh.outside" {
                // Cleans to dest/.wh.outside: a harmless whiteout inside dest.
                res.unwrap();
            } else {
                let err = res.unwrap_err();
                assert!(err.to_string().contains("whiteout"), "{name}: {err}");
            }
            assert_eq!(fs::read(j.p("sub/f")).unwrap(), b"x");
            j.assert_contained();
        }
    }
}

#[test]
fn overlay_whiteouts_become_devices_and_xattrs() {
    if !is_root() {
        eprintln!("skipping: creating whiteout devices needs root (or a user namespace)");
        return;
    }
    let j = Jail::new();
    let tar = TarBuf::new()
        .dir("a/")
        .file("a/.wh.gone", b"")
        .dir("o/")
        .file("o/.wh..wh..opq", b"")
        .file("o/new", b"n")
        .file(".wh..wh.plnk", b"")
        .bytes();
    let report = j.unpack(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(report.whiteouts, 2);
    let md = fs::symlink_metadata(j.p("a/gone")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), 0);
    assert!(!j.p("a/.wh.gone").exists());
    assert_eq!(
        getxattr(&j.p("o"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(!j.p(".wh..wh.plnk").exists());
    j.assert_contained();
}

#[test]
fn apply_whiteouts_delete_and_opaque_empties() {
    let j = Jail::new();
    let base = TarBuf::new()
        .file("a/gone", b"1")
        .file("a/stay", b"2")
        .file("o/old1", b"3")
        .file("o/sub/old2", b"4")
        .dir("deldir/")
        .file("deldir/x", b"5")
        .bytes();
    j.unpack(&base, Whiteouts::Apply).unwrap();
    let layer = TarBuf::new()
        .file("a/.wh.gone", b"")
        .file(".wh.deldir", b"")
        .file("o/sub/mine", b"6") // before the marker: kept
        .file("o/.wh..wh..opq", b"")
        .file("o/after", b"7")
        .bytes();
    let report = j.unpack(&layer, Whiteouts::Apply).unwrap();
    assert_eq!(report.whiteouts, 3);
    let l = listing(&j.dest, false);
    let names: Vec<&str> = l.keys().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        ["a", "a/stay", "o", "o/after", "o/sub", "o/sub/mine"]
    );
    j.assert_contained();
}

#[test]
fn metadata_is_restored() {
    if !can_chown_any() {
        eprintln!("skipping: chown to other ids needs root with a full id map");
        return;
    }
    let j = Jail::new();
    let tar = TarBuf::new()
        .dir_meta("d/", 0o1777, 1_400_000_000)
        .pax(&[
            ("SCHILY.xattr.user.note", b"hi"),
            ("SCHILY.xattr.user.overlay.opaque", b"y"),
            ("mtime", b"1300000000.25"),
        ])
        .file_meta("d/suid", b"#!", 0o4755, 1000, 2000, 1_200_000_000)
        .symlink("d/link", "suid")
        .bytes();
    let report = j.unpack(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(
        report.xattrs_skipped, 1,
        "user.overlay.* from a tar is refused"
    );
    let f = fs::symlink_metadata(j.p("d/suid")).unwrap();
    assert_eq!(f.mode() & 0o7777, 0o4755, "setuid survives the chown");
    assert_eq!((f.uid(), f.gid()), (1000, 2000));
    assert_eq!(
        (f.mtime(), f.mtime_nsec()),
        (1_300_000_000, 250_000_000),
        "PAX mtime wins"
    );
    assert_eq!(
        getxattr(&j.p("d/suid"), "user.note").as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(getxattr(&j.p("d/suid"), "user.overlay.opaque"), None);
    assert_eq!(
        fs::symlink_metadata(j.p("d/link")).unwrap().mtime(),
        1_600_000_000
    );
    // Set after the children were created.
    let d = fs::metadata(j.p("d")).unwrap();
    assert_eq!((d.mtime(), d.mode() & 0o7777), (1_400_000_000, 0o1777));
}

#[test]
fn truncated_tar_is_an_error() {
    let j = Jail::new();
    let tar = TarBuf::new().file("f", &[7u8; 5000]).bytes();
    let err = j.unpack(&tar[..2000], Whiteouts::Apply).unwrap_err();
    assert!(matches!(err, LayerError::Tar(_)), "{err:?}");
    j.assert_contained();
}

/// Rootless with a single mapped id (`unshare -Ur`): ownership from the tar
/// cannot be applied. The error must say so and how to fix it; the option
/// to ignore it must work. Runs only in such a namespace, e.g.
/// `su berth -c 'unshare -Urm <test binary> chown'`.
#[test]
fn chown_failure_is_explained_or_ignored() {
    if !is_root() || can_chown_any() {
        eprintln!("skipping: needs a user namespace that maps only root");
        return;
    }
    let j = Jail::new();
    let tar = TarBuf::new()
        .file_meta("f", b"x", 0o644, 1000, 1000, 1)
        .bytes();
    let err = j.unpack(&tar, Whiteouts::Overlay).unwrap_err().to_string();
    assert!(
        err.contains("not mapped") && err.contains("/etc/subuid"),
        "{err}"
    );
    let mut opts = UnpackOptions::new(Whiteouts::Overlay);
    opts.ignore_chown_errors = true;
    let report = unpack(&tar[..], &j.dest, &opts).unwrap();
    assert_eq!(report.chown_failed, 1);
    assert_eq!(fs::read(j.p("f")).unwrap(), b"x");
}

/// Flattening an image: an upper layer's `data/x` over a lower layer's
/// `data -> /real` (or a dangling `lib64 -> lib`, or a plain file) gives
/// what overlayfs shows a container: this layer's directory, hiding what
/// was there, never a write through the lower symlink, never `File exists`.
#[test]
fn flattening_hides_lower_non_directories_as_overlayfs_does() {
    let j = Jail::new();
    let lower = TarBuf::new()
        .symlink("data", "/real")
        .dir("real/")
        .file("real/old", b"old")
        .symlink("lib64", "lib")
        .file("plain", b"p")
        .symlink("out", j.parent.join("outside").to_str().unwrap())
        .bytes();
    let upper = TarBuf::new()
        .file("data/x", b"x")
        .file("lib64/y", b"y")
        .file("plain/z", b"z")
        .file("out/pwn", b"!")
        // The layer's own symlink is followed, as in its overlay dir.
        .symlink("own", "real")
        .file("own/w", b"w")
        .bytes();
    let mut opts = UnpackOptions::new(Whiteouts::Apply);
    opts.flatten = true;
    unpack(&lower[..], &j.dest, &opts).unwrap();
    unpack(&upper[..], &j.dest, &opts).unwrap();
    for (dir, names) in [
        ("data", vec!["x"]),
        ("real", vec!["old", "w"]),
        ("lib64", vec!["y"]),
        ("plain", vec!["z"]),
        ("out", vec!["pwn"]),
    ] {
        let m = fs::symlink_metadata(j.p(dir)).unwrap();
        assert!(m.is_dir(), "{dir} is a directory now");
        assert_eq!(m.permissions().mode() & 0o7777, 0o755, "{dir}");
        let mut got: Vec<_> = fs::read_dir(j.p(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        got.sort();
        assert_eq!(got, names, "{dir}");
    }
    assert!(
        !j.p("lib").exists(),
        "the dangling link's target is not made"
    );
    assert!(fs::symlink_metadata(j.p("own")).unwrap().is_symlink());
    j.assert_contained();

    // Without `flatten` (ADD of an archive) existing symlinks are followed.
    let j = Jail::new();
    j.unpack(&lower, Whiteouts::Apply).unwrap();
    j.unpack(
        &TarBuf::new().file("data/x", b"x").bytes(),
        Whiteouts::Apply,
    )
    .unwrap();
    assert!(fs::symlink_metadata(j.p("data")).unwrap().is_symlink());
    assert_eq!(fs::read(j.p("real/x")).unwrap(), b"x");
    j.assert_contained();
}

/// A sparse file of `size` bytes with `marks` written at their offsets,
/// tarred by GNU tar with `args` (`--sparse`, a format, a sparse version).
fn sparse_tar(dir: &Path, size: u64, marks: &[(u64, &[u8])], args: &[&str]) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let f = fs::File::create(src.join("big")).unwrap();
    f.set_len(size).unwrap();
    for (at, data) in marks {
        f.write_all_at(data, *at).unwrap();
    }
    drop(f);
    let tar = dir.join("sparse.tar");
    let out = std::process::Command::new("tar")
        .args(args)
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&tar)
        .arg("big")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read(&tar).unwrap()
}

/// The file holds `marks` at their offsets and zeros elsewhere (probed),
/// and uses about as much disk as its data.
fn assert_sparse_copy(path: &Path, size: u64, marks: &[(u64, &[u8])]) {
    use std::os::unix::fs::FileExt;
    let meta = fs::metadata(path).unwrap();
    assert_eq!(meta.len(), size);
    let used = meta.blocks() * 512;
    assert!(used <= 1 << 20, "{used} bytes on disk for a sparse file");
    let f = fs::File::open(path).unwrap();
    for (at, data) in marks {
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, *at).unwrap();
        assert_eq!(&back, data, "at {at}");
    }
    for probe in [1u64, 4096, size / 2, size - 4097] {
        if marks
            .iter()
            .any(|(at, d)| probe >= *at && probe < at + d.len() as u64)
        {
            continue;
        }
        let mut b = [9u8; 1];
        f.read_exact_at(&mut b, probe).unwrap();
        assert_eq!(b, [0], "at {probe}");
    }
}

#[test]
fn gnu_and_pax_sparse_files_keep_their_holes() {
    // 5 GiB with a few bytes of data: a tar of a few KiB must not write 5 GiB.
    let size = 5u64 << 30;
    let marks: [(u64, &[u8]); 3] = [
        (0, b"head"),
        (3 << 30, b"middle of the file"),
        (size - 4, b"tail"),
    ];
    for args in [
        &["--sparse", "--format=gnu"][..],
        &["--sparse", "--format=pax", "--sparse-version=0.0"][..],
        &["--sparse", "--format=pax", "--sparse-version=0.1"][..],
        &["--sparse", "--format=pax", "--sparse-version=1.0"][..],
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let tar = sparse_tar(tmp.path(), size, &marks, args);
        assert!(
            tar.len() < 2 << 20,
            "{args:?}: the tar is {} bytes",
            tar.len()
        );
        for mode in [Whiteouts::Overlay, Whiteouts::Apply] {
            let jail = Jail::new();
            let report = jail.unpack(&tar, mode).unwrap();
            assert_eq!(report.files, 1, "{args:?}");
            assert_eq!(report.bytes, size, "{args:?}");
            // PAX sparse members carry a placeholder name (GNUSparseFile.N/big).
            let names: Vec<_> = fs::read_dir(&jail.dest)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["big"], "{args:?}");
            assert_sparse_copy(&jail.dest.join("big"), size, &marks);
            jail.assert_contained();
        }
    }
}

#[test]
fn broken_pax_sparse_maps_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let marks: [(u64, &[u8]); 1] = [(8192, b"data")];
    let good = sparse_tar(
        tmp.path(),
        1 << 20,
        &marks,
        &["--sparse", "--format=pax", "--sparse-version=0.1"],
    );
    let text = String::from_utf8_lossy(&good).into_owned();
    assert!(text.contains("GNU.sparse.map"), "GNU tar wrote no 0.1 map");
    // Overlapping/out-of-range segments, each keeping the record's length
    // (so the PAX header stays well-formed).
    let start = text.find("GNU.sparse.map=").unwrap() + "GNU.sparse.map=".len();
    let end = start + text[start..].find('\n').unwrap();
    let orig = &good[start..end];
    for evil in ["9999999999999,1", "0,99999999999"] {
        let mut bad = good.clone();
        let mut v = evil.as_bytes().to_vec();
        if v.len() > orig.len() {
            continue;
        }
        v.resize(orig.len(), b'0');
        bad[start..end].copy_from_slice(&v);
        let jail = Jail::new();
        let e = jail.unpack(&bad, Whiteouts::Overlay).unwrap_err();
        assert!(matches!(e, LayerError::Tar(_)), "{evil}: {e}");
        jail.assert_contained();
    }
}
