//! COPY source resolution, walks, checksums and the stat cache against
//! real directory trees.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use berth_context::{Context, Error, FileKind, IgnoreMatcher, StatCache};

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A context with files, a subdirectory, symlinks of every kind and an
/// ignored file.
fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let outer = dir.path();
    let root = outer.join("ctx");
    write(&root, "a.txt", b"A");
    write(&root, "b.txt", b"B");
    write(&root, "c.md", b"C");
    write(&root, "secret.txt", b"S");
    write(&root, "sub/x/file", b"X");
    write(&root, "sub/y/file", b"Y");
    write(&root, "sub/y/other", b"O");
    write(&root, "star*name", b"*");
    write(outer, "outside.txt", b"outside");
    symlink("a.txt", root.join("link-to-a")).unwrap();
    symlink("sub", root.join("link-to-sub")).unwrap();
    symlink("/sub/x", root.join("abs-link")).unwrap();
    symlink("../outside.txt", root.join("escape")).unwrap();
    symlink("secret.txt", root.join("link-to-secret")).unwrap();
    symlink("loop2", root.join("loop1")).unwrap();
    symlink("loop1", root.join("loop2")).unwrap();
    symlink("../../a.txt", root.join("sub/y/up")).unwrap();
    write(&root, ".dockerignore", b"secret.txt\n");
    dir
}

fn open(dir: &tempfile::TempDir) -> Context {
    let root = dir.path().join("ctx");
    let ignore = IgnoreMatcher::load(&root, None).unwrap();
    Context::open(&root, ignore, None).unwrap()
}

fn paths(ctx: &Context, patterns: &[&str]) -> Vec<(String, String, FileKind)> {
    ctx.resolve_sources(&s(patterns))
        .unwrap()
        .into_iter()
        .map(|src| {
            (
                src.path.to_string_lossy().into_owned(),
                src.resolved.to_string_lossy().into_owned(),
                src.kind,
            )
        })
        .collect()
}

fn p(path: &str, resolved: &str, kind: FileKind) -> (String, String, FileKind) {
    (path.to_string(), resolved.to_string(), kind)
}

#[test]
fn plain_sources() {
    let dir = fixture();
    let ctx = open(&dir);
    use FileKind::*;
    assert_eq!(paths(&ctx, &["a.txt"]), [p("a.txt", "a.txt", File)]);
    assert_eq!(
        paths(&ctx, &["/a.txt", "./b.txt", "sub/../c.md"]),
        [
            p("a.txt", "a.txt", File),
            p("b.txt", "b.txt", File),
            p("c.md", "c.md", File)
        ]
    );
    assert_eq!(paths(&ctx, &["sub/"]), [p("sub", "sub", Dir)]);
    assert_eq!(paths(&ctx, &["."]), [p("", "", Dir)]);
    assert_eq!(paths(&ctx, &["/"]), [p("", "", Dir)]);
    // Without a wildcard the path is taken verbatim (BuildKit does not
    // unescape it); inside a wildcard pattern `\*` is a literal star.
    assert!(matches!(
        ctx.resolve_sources(&s(&["star\\*name"])),
        Err(Error::NotFound { .. })
    ));
    assert_eq!(
        paths(&ctx, &["st?r\\*name"]),
        [p("star*name", "star*name", File)]
    );
}

#[test]
fn wildcard_sources() {
    let dir = fixture();
    let ctx = open(&dir);
    use FileKind::*;
    // Name order; the ignored secret.txt is invisible.
    assert_eq!(
        paths(&ctx, &["*.txt"]),
        [p("a.txt", "a.txt", File), p("b.txt", "b.txt", File)]
    );
    assert_eq!(
        paths(&ctx, &["[ab].txt"]),
        [p("a.txt", "a.txt", File), p("b.txt", "b.txt", File)]
    );
    assert_eq!(paths(&ctx, &["?.md"]), [p("c.md", "c.md", File)]);
    // Several wildcard components.
    assert_eq!(
        paths(&ctx, &["sub/*/file"]),
        [
            p("sub/x/file", "sub/x/file", File),
            p("sub/y/file", "sub/y/file", File)
        ]
    );
    assert_eq!(paths(&ctx, &["s*/y"]), [p("sub/y", "sub/y", Dir)]);
    // A matched symlink is followed; the wildcard does not descend into a
    // symlinked directory, but a plain prefix through one is resolved.
    assert_eq!(paths(&ctx, &["link-to-?"]), [p("link-to-a", "a.txt", File)]);
    assert_eq!(paths(&ctx, &["link-to-s*/x"]), []);
    assert_eq!(
        paths(&ctx, &["link-to-sub/*/file"]),
        [
            p("sub/x/file", "sub/x/file", File),
            p("sub/y/file", "sub/y/file", File)
        ]
    );
    // BuildKit copies with AllowEmptyWildcard: no match is no source...
    assert_eq!(paths(&ctx, &["*.nothing"]), []);
    // ...but the directory part of the pattern must exist.
    let err = ctx.resolve_sources(&s(&["missing/*.txt"])).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn symlinked_sources_are_followed_inside_the_context() {
    let dir = fixture();
    let ctx = open(&dir);
    use FileKind::*;
    assert_eq!(paths(&ctx, &["link-to-a"]), [p("link-to-a", "a.txt", File)]);
    assert_eq!(
        paths(&ctx, &["link-to-sub/x"]),
        [p("link-to-sub/x", "sub/x", Dir)]
    );
    // An absolute target is relative to the context root.
    assert_eq!(
        paths(&ctx, &["abs-link/file"]),
        [p("abs-link/file", "sub/x/file", File)]
    );
    // A relative target may use `..` as long as it stays inside.
    assert_eq!(paths(&ctx, &["sub/y/up"]), [p("sub/y/up", "a.txt", File)]);
}

#[test]
fn missing_ignored_and_escaping_sources_are_errors() {
    let dir = fixture();
    let ctx = open(&dir);
    let err = |pat: &str| ctx.resolve_sources(&s(&[pat])).unwrap_err();

    let e = err("nope.txt");
    assert!(matches!(e, Error::NotFound { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("\"/nope.txt\": not found") && msg.contains(".dockerignore"),
        "{msg}"
    );
    assert!(matches!(err("sub/x/file/deeper"), Error::NotFound { .. }));
    // Excluded by .dockerignore, directly or through a link.
    assert!(matches!(err("secret.txt"), Error::NotFound { .. }));
    assert!(matches!(err("link-to-secret"), Error::NotFound { .. }));

    for pat in ["../outside.txt", "sub/../../outside.txt", "escape", "/../x"] {
        let e = err(pat);
        assert!(matches!(e, Error::OutsideContext { .. }), "{pat}: {e}");
        assert!(
            e.to_string().contains("outside the build context") && e.to_string().contains(pat),
            "{e}"
        );
    }
    assert!(matches!(err("loop1"), Error::TooManyLinks { .. }));
    assert!(matches!(err("[x-]"), Error::InvalidPattern { .. }));
}

#[test]
fn walk_lists_entries_in_order_with_metadata() {
    let dir = fixture();
    let root = dir.path().join("ctx");
    fs::set_permissions(root.join("sub/y/other"), fs::Permissions::from_mode(0o4751)).unwrap();
    let ctx = open(&dir);
    let src = ctx.resolve_sources(&s(&["sub"])).unwrap().remove(0);
    let entries: Vec<_> = ctx.walk(&src).map(Result::unwrap).collect();
    let names: Vec<_> = entries
        .iter()
        .map(|e| e.rel_path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["", "x", "x/file", "y", "y/file", "y/other", "y/up"]);
    let other = &entries[5];
    assert_eq!(
        (other.kind, other.mode, other.size),
        (FileKind::File, 0o4751, 1)
    );
    assert_eq!(other.context_path, PathBuf::from("sub/y/other"));
    assert_eq!(
        other.abs_path,
        fs::canonicalize(&root).unwrap().join("sub/y/other")
    );
    // Symlinks below a source stay symlinks.
    let up = &entries[6];
    assert_eq!(
        (up.kind, up.link_target.as_deref()),
        (FileKind::Symlink, Some(Path::new("../../a.txt")))
    );

    // A followed source is walked at its target.
    let src = ctx.resolve_sources(&s(&["link-to-sub"])).unwrap().remove(0);
    assert_eq!(ctx.walk(&src).count(), 7);
    // A file source is one entry.
    let src = ctx.resolve_sources(&s(&["link-to-a"])).unwrap().remove(0);
    let only: Vec<_> = ctx.walk(&src).map(Result::unwrap).collect();
    assert_eq!(only.len(), 1);
    assert_eq!(
        (only[0].kind, only[0].rel_path.as_os_str().is_empty()),
        (FileKind::File, true)
    );
}

#[test]
fn copy_exclude_patterns_are_relative_to_the_source() {
    let dir = fixture();
    let ctx = open(&dir);
    let src = ctx.resolve_sources(&s(&["sub"])).unwrap().remove(0);
    let names = |ex: &[&str]| -> Vec<String> {
        let ex = IgnoreMatcher::new(ex).unwrap();
        ctx.walk_excluding(&src, &ex)
            .map(|e| e.unwrap().rel_path.to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&["y"]), ["", "x", "x/file"]);
    assert_eq!(names(&["*/file"]), ["", "x", "y", "y/other", "y/up"]);
    assert_eq!(
        names(&["y", "!y/other"]),
        ["", "x", "x/file", "y", "y/other"]
    );
    assert_eq!(names(&["**"]), [""]);
}

/// Builds the same tree at `root` with files created in the given order.
fn same_tree(root: &Path, reverse: bool) {
    let mut files: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("d{}/f{i}.txt", i % 7),
                format!("content {i}").into_bytes(),
            )
        })
        .collect();
    files.push(("big.bin".into(), vec![7u8; 3 * 1024 * 1024 + 5]));
    if reverse {
        files.reverse();
    }
    for (rel, data) in &files {
        write(root, rel, data);
    }
    symlink("d1/f1.txt", root.join("link")).unwrap();
    fs::set_permissions(root.join("d3/f3.txt"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn checksum_depends_on_content_not_on_times_inodes_or_owners() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    same_tree(a.path(), false);
    same_tree(b.path(), true);
    // Different times and owners.
    let old = SystemTime::now() - Duration::from_secs(86400);
    fs::File::options()
        .write(true)
        .open(b.path().join("d2/f2.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::os::unix::fs::lchown(b.path().join("d4/f4.txt"), Some(1234), Some(5678)).unwrap();

    let ca = Context::open(a.path(), IgnoreMatcher::empty(), None).unwrap();
    let cb = Context::open(b.path(), IgnoreMatcher::empty(), None).unwrap();
    let all = s(&["."]);
    let (da, stats) = ca.checksum_detailed(&all, &IgnoreMatcher::empty()).unwrap();
    assert_eq!(da, cb.checksum(&all).unwrap());
    assert_eq!(stats.files, 301);
    assert_eq!(stats.files_read, 301);
    assert_eq!(
        stats.bytes_read,
        3 * 1024 * 1024
            + 5
            + (0..300)
                .map(|i| format!("content {i}").len() as u64)
                .sum::<u64>()
    );
    assert!(da.to_string().starts_with("sha256:") && da.hex().len() == 64);
    // Different source lists differ.
    assert_ne!(
        ca.checksum(&s(&["d1"])).unwrap(),
        ca.checksum(&s(&["d2"])).unwrap()
    );
}

#[test]
fn checksum_sensitivity() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "src/a.rs", b"fn a() {}");
    write(root, "src/b.rs", b"fn b() {}");
    write(root, "src/gen/ignored.rs", b"1");
    write(root, "src/skip.log", b"1");
    write(root, "README", b"outside the sources");
    write(root, ".dockerignore", b"src/gen\n");
    symlink("a.rs", root.join("src/l")).unwrap();
    let sum = |patterns: &[&str]| {
        let ctx = Context::open(root, IgnoreMatcher::load(root, None).unwrap(), None).unwrap();
        ctx.checksum_excluding(&s(patterns), &IgnoreMatcher::new(&["*.log"]).unwrap())
            .unwrap()
    };
    let base = sum(&["src"]);
    assert_eq!(base, sum(&["src"]), "deterministic");
    assert_eq!(base, sum(&["./src/"]), "same sources, other spelling");

    // Outside the sources, ignored, excluded, or only times: unchanged.
    fs::write(root.join("README"), "changed").unwrap();
    fs::write(root.join("src/gen/ignored.rs"), "2").unwrap();
    write(root, "src/gen/new.rs", b"new but ignored");
    fs::write(root.join("src/skip.log"), "2").unwrap();
    fs::File::options()
        .write(true)
        .open(root.join("src/a.rs"))
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    assert_eq!(base, sum(&["src"]));

    type Change<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let changes: Vec<Change> = vec![
        (
            "a byte",
            Box::new(|| fs::write(root.join("src/a.rs"), b"fn a() {{").unwrap()),
        ),
        (
            "a mode",
            Box::new(|| {
                fs::set_permissions(root.join("src/b.rs"), fs::Permissions::from_mode(0o600))
                    .unwrap()
            }),
        ),
        (
            "a name",
            Box::new(|| fs::rename(root.join("src/b.rs"), root.join("src/c.rs")).unwrap()),
        ),
        (
            "a link target",
            Box::new(|| {
                fs::remove_file(root.join("src/l")).unwrap();
                symlink("c.rs", root.join("src/l")).unwrap();
            }),
        ),
        ("a new file", Box::new(|| write(root, "src/d.rs", b""))),
        (
            "an empty directory",
            Box::new(|| fs::create_dir(root.join("src/empty")).unwrap()),
        ),
        (
            "a directory mode",
            Box::new(|| {
                fs::set_permissions(root.join("src/empty"), fs::Permissions::from_mode(0o700))
                    .unwrap()
            }),
        ),
    ];
    let mut seen = vec![base];
    for (what, change) in changes {
        change();
        let now = sum(&["src"]);
        assert!(
            !seen.contains(&now),
            "changing {what} must change the checksum"
        );
        seen.push(now);
    }
}

fn cache_fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ctx");
    for i in 0..200 {
        write(
            &root,
            &format!("d{}/f{i}", i % 5),
            format!("file {i}").as_bytes(),
        );
    }
    write(&root, "big", &vec![1u8; 1 << 20]);
    let cache = dir.path().join("cache/statcache");
    (dir, root, cache)
}

fn open_cached(root: &Path, cache: &Path) -> Context {
    let mut c = StatCache::load(cache);
    // Files were written just now: without this they would count as racily
    // clean (see `racy_entries_are_rehashed`).
    c.set_racy_window(Duration::ZERO);
    Context::open(root, IgnoreMatcher::empty(), Some(c)).unwrap()
}

#[test]
fn stat_cache_avoids_reading_unchanged_files() {
    let (_dir, root, cache) = cache_fixture();
    let all = s(&["."]);
    let none = IgnoreMatcher::empty();

    let ctx = open_cached(&root, &cache);
    let (first, st) = ctx.checksum_detailed(&all, &none).unwrap();
    assert_eq!((st.files, st.files_read, st.cache_hits), (201, 201, 0));
    let (again, st) = ctx.checksum_detailed(&all, &none).unwrap();
    assert_eq!(again, first);
    assert_eq!((st.files_read, st.bytes_read, st.cache_hits), (0, 0, 201));
    ctx.save_stat_cache().unwrap();

    // A new process: the saved cache still answers everything.
    let ctx = open_cached(&root, &cache);
    let (third, st) = ctx.checksum_detailed(&all, &none).unwrap();
    assert_eq!((third, st.files_read), (first, 0));

    // Same size, mtime put back: the ctime still gives the change away.
    let f = root.join("d0/f0");
    let mtime = fs::metadata(&f).unwrap().modified().unwrap();
    fs::write(&f, b"file X").unwrap();
    fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (changed, st) = ctx.checksum_detailed(&all, &none).unwrap();
    assert_eq!(st.files_read, 1);
    assert_ne!(changed, first);
    // A checksum without any cache agrees.
    let plain = Context::open(&root, IgnoreMatcher::empty(), None).unwrap();
    assert_eq!(plain.checksum(&all).unwrap(), changed);
}

#[test]
fn corrupt_stat_cache_is_rebuilt() {
    let (_dir, root, cache) = cache_fixture();
    let all = s(&["."]);
    let ctx = open_cached(&root, &cache);
    let good = ctx.checksum(&all).unwrap();
    ctx.save_stat_cache().unwrap();
    let len = fs::metadata(&cache).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&cache)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let ctx = open_cached(&root, &cache);
    let (sum, st) = ctx
        .checksum_detailed(&all, &IgnoreMatcher::empty())
        .unwrap();
    assert_eq!((sum, st.files_read), (good, 201));
    ctx.save_stat_cache().unwrap();
    let ctx = open_cached(&root, &cache);
    assert_eq!(
        ctx.checksum_detailed(&all, &IgnoreMatcher::empty())
            .unwrap()
            .1
            .files_read,
        0
    );

    fs::write(&cache, b"garbage").unwrap();
    let ctx = open_cached(&root, &cache);
    assert_eq!(
        ctx.checksum_detailed(&all, &IgnoreMatcher::empty())
            .unwrap()
            .1
            .files_read,
        201
    );
}

#[test]
fn racy_entries_are_rehashed() {
    let (_dir, root, cache) = cache_fixture();
    // A timestamp at or after the moment of hashing: a write in the same
    // tick could follow the read, so the entry is never trusted.
    let future = SystemTime::now() + Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(root.join("big"))
        .unwrap()
        .set_modified(future)
        .unwrap();
    let ctx = Context::open(&root, IgnoreMatcher::empty(), Some(StatCache::load(&cache))).unwrap();
    let all = s(&["big"]);
    for _ in 0..2 {
        let (_, st) = ctx
            .checksum_detailed(&all, &IgnoreMatcher::empty())
            .unwrap();
        assert_eq!(st.files_read, 1);
    }
}

#[test]
fn stat_cache_of_another_context_is_not_used() {
    let (dir, root, cache) = cache_fixture();
    let ctx = open_cached(&root, &cache);
    ctx.checksum(&s(&["."])).unwrap();
    ctx.save_stat_cache().unwrap();
    let other = dir.path().join("other");
    write(&other, "d0/f0", b"different");
    let ctx = open_cached(&other, &cache);
    let (_, st) = ctx
        .checksum_detailed(&s(&["."]), &IgnoreMatcher::empty())
        .unwrap();
    assert_eq!(st.files_read, 1);
}

#[test]
fn context_must_be_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "file", b"");
    let e = Context::open(&dir.path().join("file"), IgnoreMatcher::empty(), None).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let e = Context::open(&dir.path().join("missing"), IgnoreMatcher::empty(), None).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}
