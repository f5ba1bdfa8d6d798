//! .dockerignore semantics: moby/patternmatcher's test table, Docker's
//! documentation examples, the file loading rule, and the walk-level
//! behaviour (excluded directories with re-included children).

use std::fs;
use std::path::Path;

use berth_context::{Context, IgnoreMatcher};

/// (.dockerignore line, path, excluded): patternmatcher_test.go's
/// TestMatches (the `MatchesUsingParentResults` expectations), Go's
/// filepath.Match table, and Docker's documentation.
const SINGLE: &[(&str, &str, bool)] = &[
    ("**", "file", true),
    ("**", "file/", true),
    ("**/", "file", true),
    ("**/", "file/", true),
    ("**", "dir/file", true),
    ("**/", "dir/file", true),
    ("**", "dir/file/", true),
    ("**/", "dir/file/", true),
    ("**/**", "dir/file", true),
    ("**/**", "dir/file/", true),
    ("dir/**", "dir/file", true),
    ("dir/**", "dir/file/", true),
    ("dir/**", "dir/dir2/file", true),
    ("dir/**", "dir/dir2/file/", true),
    ("**/dir", "dir", true),
    ("**/dir", "dir/file", true),
    ("**/dir2/*", "dir/dir2/file", true),
    ("**/dir2/*", "dir/dir2/file/", true),
    ("**/dir2/**", "dir/dir2/dir3/file", true),
    ("**/dir2/**", "dir/dir2/dir3/file/", true),
    ("**file", "file", true),
    ("**file", "dir/file", true),
    ("**/file", "dir/file", true),
    ("**file", "dir/dir/file", true),
    ("**/file", "dir/dir/file", true),
    ("**/file*", "dir/dir/file", true),
    ("**/file*", "dir/dir/file.txt", true),
    ("**/file*txt", "dir/dir/file.txt", true),
    ("**/file*.txt", "dir/dir/file.txt", true),
    ("**/file*.txt*", "dir/dir/file.txt", true),
    ("**/**/*.txt", "dir/dir/file.txt", true),
    ("**/**/*.txt2", "dir/dir/file.txt", false),
    ("**/*.txt", "file.txt", true),
    ("**/**/*.txt", "file.txt", true),
    ("a**/*.txt", "a/file.txt", true),
    ("a**/*.txt", "a/dir/file.txt", true),
    ("a**/*.txt", "a/dir/dir/file.txt", true),
    ("a/*.txt", "a/dir/file.txt", false),
    ("a/*.txt", "a/file.txt", true),
    ("a/*.txt**", "a/file.txt", true),
    ("a[b-d]e", "ae", false),
    ("a[b-d]e", "ace", true),
    ("a[b-d]e", "aae", false),
    ("a[^b-d]e", "aze", true),
    (".*", ".foo", true),
    (".*", "foo", false),
    ("abc.def", "abcdef", false),
    ("abc.def", "abc.def", true),
    ("abc.def", "abcZdef", false),
    ("abc?def", "abcZdef", true),
    ("abc?def", "abcdef", false),
    ("**/foo/bar", "foo/bar", true),
    ("**/foo/bar", "dir/foo/bar", true),
    ("**/foo/bar", "dir/dir2/foo/bar", true),
    ("abc/**", "abc", false),
    ("abc/**", "abc/def", true),
    ("abc/**", "abc/def/ghi", true),
    ("**/.foo", ".foo", true),
    ("**/.foo", "bar.foo", false),
    ("a(b)c/def", "a(b)c/def", true),
    ("a(b)c/def", "a(b)c/xyz", false),
    ("a.|)$(}+{bc", "a.|)$(}+{bc", true),
    (
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
    ),
    (
        "dist/*.whl",
        "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
        true,
    ),
    ("a\\\\", "a\\", true),
    ("a\\*b", "a*b", true),
    // Go filepath.Match's table, through the matcher (TestMatch); a path
    // matches when it or a parent does.
    ("abc", "abc", true),
    ("*", "abc", true),
    ("*c", "abc", true),
    ("a*", "a", true),
    ("a*", "abc", true),
    ("a*", "ab/c", true),
    ("a*/b", "abc/b", true),
    ("a*/b", "a/c/b", false),
    ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
    ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
    ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
    ("a*b?c*x", "abxbbxdbxebxczzx", true),
    ("a*b?c*x", "abxbbxdbxebxczzy", false),
    ("ab[c]", "abc", true),
    ("ab[b-d]", "abc", true),
    ("ab[e-g]", "abc", false),
    ("ab[^c]", "abc", false),
    ("ab[^b-d]", "abc", false),
    ("ab[^e-g]", "abc", true),
    ("a\\*b", "ab", false),
    ("a?b", "a☺b", true),
    ("a[^a]b", "a☺b", true),
    ("a???b", "a☺b", false),
    ("a[^a][^a][^a]b", "a☺b", false),
    ("[a-ζ]*", "α", true),
    ("*[a-ζ]", "A", false),
    ("a?b", "a/b", false),
    ("a*b", "a/b", false),
    ("[\\]a]", "]", true),
    ("[\\-]", "-", true),
    ("[x\\-]", "x", true),
    ("[x\\-]", "-", true),
    ("[x\\-]", "z", false),
    ("[\\-x]", "x", true),
    ("[\\-x]", "-", true),
    ("[\\-x]", "a", false),
    ("*x", "xxx", true),
    // Docker documentation examples.
    ("*/temp*", "somedir/temporary.txt", true),
    ("*/temp*", "somedir/temp", true),
    ("*/temp*", "somedir/temp/inner", true),
    ("*/temp*", "temp", false),
    ("*/*/temp*", "somedir/subdir/temporary.txt", true),
    ("*/*/temp*", "somedir/temporary.txt", false),
    ("temp?", "tempa", true),
    ("temp?", "tempab", false),
    ("temp?", "sub/tempa", false),
    ("**/*.go", "main.go", true),
    ("**/*.go", "cmd/x/main.go", true),
    // A leading `/` and `./` mean the root; a trailing `/` is dropped.
    ("/foo", "foo", true),
    ("./foo", "foo", true),
    ("foo/", "foo/bar", true),
    ("foo/../bar", "bar", true),
    ("foo/../bar", "foo", false),
    // A pattern matching a parent directory excludes everything below it.
    ("node_modules", "node_modules/a/b/c.js", true),
    ("node_modules", "src/node_modules", false),
];

#[test]
fn patternmatcher_single_pattern_table() {
    let mut failures = Vec::new();
    for &(pattern, path, want) in SINGLE {
        let m = IgnoreMatcher::from_dockerignore(pattern.as_bytes())
            .unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        if m.is_excluded(path) != want {
            failures.push(format!(
                "pattern {pattern:?} path {path:?}: want excluded={want}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn multi_pattern_table() {
    let cases: &[(&[&str], &str, bool)] = &[
        (&["**", "!util/docker/web"], "util/docker/web/foo", false),
        (
            &["**", "!util/docker/web", "util/docker/web/foo"],
            "util/docker/web/foo",
            true,
        ),
        (
            &[
                "**",
                "!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            ],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (
            &["**", "!dist/*.whl"],
            "dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl",
            false,
        ),
        (&["!fileutils.go", "*.go"], "fileutils.go", true),
        (&["*.go", "!fileutils.go"], "fileutils.go", false),
        (&["docs", "!docs/README.md"], "docs/README.md", false),
        (&["docs", "!docs/README.md"], "docs/other.md", true),
        (&["docs/", "!docs/README.md"], "docs/README.md", false),
        (&["docs/*", "!docs/README.md"], "docs/README.md", false),
        // Docker docs: exceptions, and a later rule winning.
        (&["*.md", "!README.md"], "README.md", false),
        (&["*.md", "!README.md"], "CHANGES.md", true),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README-secret.md",
            true,
        ),
        (
            &["*.md", "!README*.md", "README-secret.md"],
            "README-public.md",
            false,
        ),
        (
            &["*.md", "README-secret.md", "!README*.md"],
            "README-secret.md",
            false,
        ),
        // A plain-path exception outside an excluded directory cannot
        // reach into it.
        (&["foo", "!bar"], "foo/bar", true),
    ];
    for &(patterns, path, want) in cases {
        let m = IgnoreMatcher::new(patterns).unwrap();
        assert_eq!(
            m.is_excluded(path),
            want,
            "patterns {patterns:?} path {path:?}"
        );
    }
}

#[test]
fn exclude_flags_are_not_normalised_like_ignore_files() {
    // `COPY --exclude` patterns go straight to patternmatcher.New: no
    // leading-slash stripping (that is the ignore file reader's job).
    assert!(!IgnoreMatcher::new(&["/foo"]).unwrap().is_excluded("foo"));
    assert!(IgnoreMatcher::from_dockerignore(b"/foo")
        .unwrap()
        .is_excluded("foo"));
}

#[test]
fn the_root_is_never_excluded() {
    let m = IgnoreMatcher::new(&["*", "**"]).unwrap();
    assert!(!m.is_excluded("."));
    assert!(!m.is_excluded(""));
    assert!(m.is_excluded("x"));
}

#[test]
fn malformed_patterns_are_errors_naming_the_pattern() {
    for bad in ["[", "a[", "[]a]", "[x-]", "\\", "!", "[^bc"] {
        let err = IgnoreMatcher::new(&[bad]).expect_err(bad).to_string();
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
    let err = IgnoreMatcher::from_dockerignore(b"ok\n[oops\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[oops") && err.contains("syntax error"),
        "{err}"
    );
}

#[test]
fn blank_patterns_are_skipped_and_spaces_trimmed() {
    let m = IgnoreMatcher::new(&["docs", "", "  !docs/README.md  "]).unwrap();
    assert_eq!(m.patterns(), ["docs", "!docs/README.md"]);
    assert!(!m.is_excluded("docs/README.md"));
}

#[test]
fn dockerfile_specific_ignore_file_wins() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    fs::write(ctx.join(".dockerignore"), "from-context\n").unwrap();
    let df_dir = ctx.join("build");
    fs::create_dir(&df_dir).unwrap();
    fs::write(df_dir.join("app.Dockerfile"), "FROM scratch\n").unwrap();

    // No app.Dockerfile.dockerignore yet: the context's file applies.
    let m = IgnoreMatcher::load(ctx, Some(&df_dir.join("app.Dockerfile"))).unwrap();
    assert_eq!(m.patterns(), ["from-context"]);
    assert_eq!(m.origin(), Some(ctx.join(".dockerignore").as_path()));

    fs::write(
        df_dir.join("app.Dockerfile.dockerignore"),
        "# mine\nfrom-dockerfile\n",
    )
    .unwrap();
    let m = IgnoreMatcher::load(ctx, Some(&df_dir.join("app.Dockerfile"))).unwrap();
    assert_eq!(m.patterns(), ["from-dockerfile"]);

    // Another Dockerfile in the same directory does not pick it up.
    let m = IgnoreMatcher::load(ctx, Some(&df_dir.join("Dockerfile"))).unwrap();
    assert_eq!(m.patterns(), ["from-context"]);

    fs::remove_file(ctx.join(".dockerignore")).unwrap();
    let m = IgnoreMatcher::load(ctx, None).unwrap();
    assert!(m.is_empty());
    assert_eq!(m.origin(), None);
}

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Lists what a `COPY . /dst` sees (paths relative to the context).
fn visible(root: &Path, dockerignore: &str) -> Vec<String> {
    let ctx = Context::open(
        root,
        IgnoreMatcher::from_dockerignore(dockerignore.as_bytes()).unwrap(),
        None,
    )
    .unwrap();
    let sources = ctx.resolve_sources(&[".".to_string()]).unwrap();
    ctx.walk(&sources[0])
        .map(|e| e.unwrap().rel_path.to_string_lossy().into_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

#[test]
fn excluded_directory_with_reincluded_child() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "docs/README.md", "r");
    write(root, "docs/other.md", "o");
    write(root, "docs/sub/keep.txt", "k");
    write(root, "docs/sub/drop.txt", "d");
    write(root, "src/main.rs", "m");

    // The directory stays (created for its child) but holds only the child.
    assert_eq!(
        visible(root, "docs\n!docs/README.md\n"),
        ["docs", "docs/README.md", "src", "src/main.rs"]
    );
    assert_eq!(
        visible(root, "docs\n!docs/sub/keep.txt\n"),
        [
            "docs",
            "docs/sub",
            "docs/sub/keep.txt",
            "src",
            "src/main.rs"
        ]
    );
    // A glob exception makes the walker look inside too.
    assert_eq!(
        visible(root, "docs\n!docs/**/*.txt\n"),
        [
            "docs",
            "docs/sub",
            "docs/sub/drop.txt",
            "docs/sub/keep.txt",
            "src",
            "src/main.rs"
        ]
    );
    // An exception elsewhere does not resurrect the directory.
    assert_eq!(visible(root, "docs\n!src\n"), ["src", "src/main.rs"]);
    // Everything but one path.
    assert_eq!(visible(root, "*\n!src/main.rs\n"), ["src", "src/main.rs"]);
    assert_eq!(
        visible(root, "**\n!docs/sub\n"),
        ["docs", "docs/sub", "docs/sub/drop.txt", "docs/sub/keep.txt"]
    );
}
