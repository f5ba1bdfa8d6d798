//! `ADD` from an http(s) URL or a git repository, as BuildKit's
//! dockerfile frontend does it.
//!
//! - URL: the file is named after the last component of the URL path
//!   (`__unnamed__` without one), has mode 0600 (BuildKit's http source)
//!   and the `Last-Modified` time. With `--checksum=sha256:...` the cache
//!   key is the pinned digest and nothing is downloaded on a cache hit; a
//!   download that does not match fails the step and changes nothing.
//!   Without it the file is fetched on every build and the key is its
//!   content digest (BuildKit re-fetches unpinned URLs too).
//! - git: `https://host/repo.git#ref:subdir`, `git@host:repo.git#ref`,
//!   `git://host/repo#ref`, `ssh://...`. The ref is resolved to a commit
//!   with `git ls-remote` (the cache key), then fetched shallowly; the
//!   contents of `subdir` (default: the whole tree) are copied, `.git`
//!   only with `--keep-git-dir`. berth runs the `git` command like BuildKit.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// One remote source of an ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Http {
        url: String,
        /// The file name the content gets.
        filename: String,
    },
    Git(GitRef),
}

/// A git source: where, which ref, which directory of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitRef {
    /// What `git` is given as the remote (fragment removed).
    pub remote: String,
    /// Branch, tag or commit; empty for the remote's HEAD.
    pub reference: String,
    pub subdir: String,
}

/// Classifies an ADD source: `None` for a path of the context.
pub fn classify(src: &str) -> Option<Remote> {
    if let Some(git) = parse_git(src) {
        return Some(Remote::Git(git));
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        return Some(Remote::Http {
            url: src.to_string(),
            filename: url_filename(src),
        });
    }
    None
}

/// Whether COPY was given something only ADD can fetch.
pub fn is_remote(src: &str) -> bool {
    classify(src).is_some()
}

/// BuildKit: `path.Base` of the URL path, `__unnamed__` when that is
/// empty, `.` or `/`.
fn url_filename(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    let no_frag = after_scheme.split('#').next().unwrap_or("");
    let no_query = no_frag.split('?').next().unwrap_or("");
    let path = no_query.find('/').map_or("", |i| &no_query[i..]);
    // Decode first, as Go's url.Parse does before path.Base: an encoded
    // `%2F` must not smuggle a `/` into the file name.
    let decoded = percent_decode(path);
    let base = decoded
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    if base.is_empty() || base == "." || base == ".." {
        "__unnamed__".into()
    } else {
        base.to_string()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// BuildKit's git URL forms (`gitutil.ParseGitRef`): `git@`, `git://`,
/// `ssh://` and `github.com/` prefixes, or an http(s) URL whose path ends
/// in `.git`; `#ref:subdir` after it.
pub fn parse_git(src: &str) -> Option<GitRef> {
    let (base, fragment) = match src.split_once('#') {
        Some((b, f)) => (b, f),
        None => (src, ""),
    };
    let is_git = src.starts_with("git@")
        || src.starts_with("git://")
        || src.starts_with("ssh://")
        || src.starts_with("github.com/")
        || ((base.starts_with("http://") || base.starts_with("https://"))
            && base.split('?').next().unwrap_or("").ends_with(".git"));
    if !is_git {
        return None;
    }
    let remote = if base.starts_with("github.com/") {
        format!("https://{base}")
    } else {
        base.to_string()
    };
    let (reference, subdir) = match fragment.split_once(':') {
        Some((r, d)) => (r.to_string(), d.to_string()),
        None => (fragment.to_string(), String::new()),
    };
    Some(GitRef {
        remote,
        reference,
        subdir,
    })
}

/// A fetched or resolved remote source: its part of the cache key, and
/// where its content is (or will be) on disk.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub remote: Remote,
    pub key: Value,
    /// git: the commit the ref named.
    pub commit: Option<String>,
    /// http: already downloaded to `dir/<filename>` (no `--checksum`).
    pub fetched: bool,
    /// The directory the content goes into (one per source).
    pub dir: PathBuf,
}

/// `--checksum=sha256:<64 hex>` (BuildKit accepts only a digest there for
/// URLs).
pub fn parse_checksum(c: &str) -> Result<String, String> {
    let hex = c.strip_prefix("sha256:").ok_or_else(|| {
        format!("invalid --checksum={c}: use sha256:<64 hex digits> (the digest of the file)")
    })?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid --checksum={c}: use sha256:<64 hex digits> (the digest of the file)"
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Resolves a remote source for the cache key: a pinned URL needs
/// nothing, an unpinned one is downloaded now, a git ref is resolved to
/// its commit.
pub async fn resolve(
    remote: Remote,
    checksum: Option<&str>,
    keep_git_dir: bool,
    dir: PathBuf,
) -> Result<Resolved, String> {
    match &remote {
        Remote::Http { url, filename } => match checksum {
            Some(c) => {
                let digest = parse_checksum(c)?;
                Ok(Resolved {
                    key: json!({"url": url, "checksum": digest, "filename": filename}),
                    remote,
                    commit: None,
                    fetched: false,
                    dir,
                })
            }
            None => {
                let (digest, mtime) = download(url, &dir, filename, None).await?;
                Ok(Resolved {
                    key: json!({"url": url, "sha256": digest, "filename": filename, "mtime": mtime}),
                    remote,
                    commit: None,
                    fetched: true,
                    dir,
                })
            }
        },
        Remote::Git(g) => {
            let g2 = g.clone();
            let commit = tokio::task::spawn_blocking(move || resolve_commit(&g2))
                .await
                .map_err(|e| e.to_string())??;
            if let Some(c) = checksum {
                // BuildKit: a git source's --checksum is the commit (or a prefix).
                let want = c.trim_start_matches("sha1:").to_ascii_lowercase();
                if want.is_empty() || !commit.starts_with(&want) {
                    return Err(format!(
                        "{}: ref {:?} is commit {commit}, not the --checksum {c}",
                        g.remote, g.reference
                    ));
                }
            }
            Ok(Resolved {
                key: json!({"git": g.remote, "commit": commit, "subdir": g.subdir, "keep_git_dir": keep_git_dir}),
                remote,
                commit: Some(commit),
                fetched: false,
                dir,
            })
        }
    }
}

/// The content of a resolved source on disk (fetching what `resolve` did
/// not): the directory to copy from and the path in it.
pub async fn materialize(
    r: &Resolved,
    checksum: Option<&str>,
) -> Result<(PathBuf, PathBuf), String> {
    match &r.remote {
        Remote::Http { url, filename } => {
            if !r.fetched {
                let want = checksum.map(parse_checksum).transpose()?;
                download(url, &r.dir, filename, want.as_deref()).await?;
            }
            Ok((r.dir.clone(), PathBuf::from(filename)))
        }
        Remote::Git(g) => {
            let g = g.clone();
            let dir = r.dir.clone();
            let commit = r.commit.clone().unwrap_or_default();
            tokio::task::spawn_blocking(move || checkout(&g, &commit, &dir))
                .await
                .map_err(|e| e.to_string())??;
            let sub = clean_subdir(&r_subdir(&r.remote))?;
            Ok((r.dir.join("repo"), sub))
        }
    }
}

fn r_subdir(r: &Remote) -> String {
    match r {
        Remote::Git(g) => g.subdir.clone(),
        Remote::Http { .. } => String::new(),
    }
}

/// The subdirectory as a relative path that stays in the checkout.
fn clean_subdir(s: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::from(".");
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("git subdirectory {s:?} leaves the repository")),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The URL for messages: a password in it (`https://user:pw@host/`) is
/// never printed.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://xxxxx@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Downloads `url` into `dir/filename` (0600, `Last-Modified` as mtime),
/// verifying `want` before the file appears. Returns the digest and mtime.
async fn download(
    url: &str,
    dir: &Path,
    filename: &str,
    want: Option<&str>,
) -> Result<(String, i64), String> {
    use futures_util::StreamExt;
    use std::io::Write;
    let shown = redact(url);
    // Bounded: BERTH_MAX_DOWNLOAD_BYTES, and the connect and idle timeouts.
    let fetched = berth_client::fetch::fetch(
        url,
        &shown,
        concat!("berth/", env!("CARGO_PKG_VERSION")),
        berth_client::Timeouts::from_env(),
        berth_client::fetch::max_download_bytes(),
    )
    .await
    .map_err(|e| match e {
        berth_client::Error::Status { status, detail, .. } => {
            format!("failed to fetch {shown}: invalid response status {status} {detail}")
        }
        e => format!("failed to fetch: {e}"),
    })?;
    let mtime = fetched
        .headers
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let tmp_path = dir.join(format!(".download-{filename}"));
    // Whatever stops the download (a stall, the size cap, a full disk, a
    // wrong checksum), the partial file goes.
    struct Partial<'a>(&'a Path, bool);
    impl Drop for Partial<'_> {
        fn drop(&mut self) {
            if !self.1 {
                let _ = std::fs::remove_file(self.0);
            }
        }
    }
    let mut partial = Partial(&tmp_path, false);
    let mut file = std::fs::File::create(&tmp_path).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut stream = fetched.body;
    while let Some(chunk) = stream.next().await {
        // The error names the URL (shown) and the limit that stopped it.
        let chunk = chunk.map_err(|e| format!("failed to fetch: {e}"))?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    file.sync_all().map_err(|e| e.to_string())?;
    drop(file);
    let digest = format!(
        "sha256:{}",
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    if let Some(want) = want {
        if digest != want {
            return Err(format!(
                "checksum mismatch for {shown}: expected {want}, got {digest} (the file changed on the server, or --checksum is wrong)"
            ));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    let mtime = mtime.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    });
    set_mtime(&tmp_path, mtime).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp_path, dir.join(filename)).map_err(|e| e.to_string())?;
    partial.1 = true;
    Ok((digest, mtime))
}

fn set_mtime(path: &Path, secs: i64) -> std::io::Result<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| std::io::Error::other("NUL in path"))?;
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let times = [t, t];
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn git() -> Command {
    let mut c = Command::new("git");
    // Fail instead of asking for a password on a terminal.
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE");
    c
}

fn run_git(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            "ADD of a git repository needs the git command: install git (e.g. apt-get install git)"
                .to_string()
        } else {
            format!("running git: {e}")
        }
    })?;
    if !out.status.success() {
        return Err(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The commit `g.reference` names on the remote (`git ls-remote`).
pub fn resolve_commit(g: &GitRef) -> Result<String, String> {
    if is_commit_id(&g.reference) {
        return Ok(g.reference.to_ascii_lowercase());
    }
    let what = format!("resolving {} {}", g.remote, display_ref(&g.reference));
    let pattern = if g.reference.is_empty() {
        "HEAD".to_string()
    } else {
        g.reference.clone()
    };
    let out = run_git(git().args(["ls-remote", "--", &g.remote, &pattern]), &what)?;
    pick_ref(&out, &g.reference)
        .ok_or_else(|| format!("{what}: no branch or tag {:?} in the repository", pattern))
}

fn display_ref(r: &str) -> String {
    if r.is_empty() {
        "HEAD".into()
    } else {
        format!("ref {r:?}")
    }
}

/// Picks the commit of `reference` from `git ls-remote` output: HEAD, a
/// full ref name, a branch, or a tag (its peeled commit when annotated).
fn pick_ref(ls_remote: &str, reference: &str) -> Option<String> {
    let rows: Vec<(&str, &str)> = ls_remote
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let find = |name: &str| {
        rows.iter()
            .find(|(_, n)| *n == name)
            .map(|(c, _)| c.to_string())
    };
    if reference.is_empty() {
        return find("HEAD");
    }
    if reference.starts_with("refs/") {
        return find(&format!("{reference}^{{}}")).or_else(|| find(reference));
    }
    find(&format!("refs/heads/{reference}"))
        .or_else(|| find(&format!("refs/tags/{reference}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{reference}")))
}

/// Shallow-fetches `commit` into `dir/repo` and checks it out.
fn checkout(g: &GitRef, commit: &str, dir: &Path) -> Result<(), String> {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).map_err(|e| e.to_string())?;
    let what = format!("fetching {} {}", g.remote, display_ref(&g.reference));
    run_git(git().arg("-C").arg(&repo).args(["init", "-q"]), &what)?;
    run_git(
        git()
            .arg("-C")
            .arg(&repo)
            .args(["remote", "add", "origin", &g.remote]),
        &what,
    )?;
    // By commit first (servers allow it with protocol v2), else by the ref
    // name and check that it still is that commit.
    let by_commit = run_git(
        git()
            .arg("-C")
            .arg(&repo)
            .args(["fetch", "-q", "--depth", "1", "origin", commit]),
        &what,
    );
    if by_commit.is_err() {
        let refspec = if g.reference.is_empty() {
            "HEAD".to_string()
        } else {
            g.reference.clone()
        };
        run_git(
            git()
                .arg("-C")
                .arg(&repo)
                .args(["fetch", "-q", "--depth", "1", "origin", &refspec]),
            &what,
        )?;
    }
    run_git(
        git().arg("-C").arg(&repo).args([
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            commit,
        ]),
        &format!("{what}: the ref moved while building, build again"),
    )?;
    Ok(())
}

/// The commit time of the checkout (files get it as their mtime, so the
/// layer depends only on the commit).
pub fn commit_time(repo: &Path) -> Option<i64> {
    let out = run_git(
        git()
            .arg("-C")
            .arg(repo)
            .args(["log", "-1", "--format=%ct"]),
        "reading the commit time",
    )
    .ok()?;
    out.trim().parse().ok()
}

/// Sets every entry's mtime below `dir` (symlinks themselves).
pub fn set_tree_mtime(dir: &Path, secs: i64) -> std::io::Result<()> {
    let t = libc::timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    fn walk(dir: &Path, t: libc::timespec) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let p = e.path();
            if e.file_type()?.is_dir() {
                walk(&p, t)?;
            }
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
                .map_err(|_| std::io::Error::other("NUL in path"))?;
            let times = [t, t];
            if unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    c.as_ptr(),
                    times.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            } < 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
    walk(dir, t)?;
    set_mtime(dir, secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_file_names() {
        assert_eq!(url_filename("https://h/a/b/file.tar.gz"), "file.tar.gz");
        assert_eq!(url_filename("https://h/a/b/file.txt?x=1#f"), "file.txt");
        assert_eq!(url_filename("https://h/"), "__unnamed__");
        assert_eq!(url_filename("https://h/x/..%2F..%2Fetc%2Fpasswd"), "passwd");
        assert_eq!(url_filename("https://h/a%2F.."), "__unnamed__");
        assert_eq!(url_filename("https://h"), "__unnamed__");
        assert_eq!(url_filename("http://h/dir/"), "dir");
        assert_eq!(url_filename("http://h/a%20b"), "a b");
    }

    #[test]
    fn git_forms() {
        let g = parse_git("https://example.com/repo.git#v1.0:docs").unwrap();
        assert_eq!(
            (g.remote.as_str(), g.reference.as_str(), g.subdir.as_str()),
            ("https://example.com/repo.git", "v1.0", "docs")
        );
        let g = parse_git("git@github.com:moby/buildkit.git").unwrap();
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("", ""));
        let g = parse_git("git://localhost:9418/r#main").unwrap();
        assert_eq!(g.reference, "main");
        let g = parse_git("github.com/moby/buildkit#master").unwrap();
        assert_eq!(g.remote, "https://github.com/moby/buildkit");
        assert!(parse_git("https://example.com/file.tar.gz").is_none());
        assert!(parse_git("src/dir").is_none());
        assert!(matches!(
            classify("https://h/x.git#:sub"),
            Some(Remote::Git(_))
        ));
        assert!(matches!(
            classify("https://h/x.txt"),
            Some(Remote::Http { .. })
        ));
        assert_eq!(classify("local.txt"), None);
    }

    #[test]
    fn passwords_in_urls_are_not_shown() {
        assert_eq!(redact("https://u:secret@h/f"), "https://xxxxx@h/f");
        assert_eq!(redact("https://h/a@b"), "https://h/a@b");
    }

    #[test]
    fn checksums() {
        let hex = "a".repeat(64);
        assert_eq!(
            parse_checksum(&format!("sha256:{hex}")).unwrap(),
            format!("sha256:{hex}")
        );
        assert!(parse_checksum("sha256:abc").is_err());
        assert!(parse_checksum(&hex).is_err());
    }

    #[test]
    fn ls_remote_picking() {
        let out = "1111\tHEAD\n2222\trefs/heads/main\n3333\trefs/tags/v1\n4444\trefs/tags/v1^{}\n5555\trefs/tags/v2\n";
        assert_eq!(pick_ref(out, "").as_deref(), Some("1111"));
        assert_eq!(pick_ref(out, "main").as_deref(), Some("2222"));
        assert_eq!(pick_ref(out, "v1").as_deref(), Some("4444"));
        assert_eq!(pick_ref(out, "v2").as_deref(), Some("5555"));
        assert_eq!(pick_ref(out, "refs/heads/main").as_deref(), Some("2222"));
        assert_eq!(pick_ref(out, "nope"), None);
    }

    #[test]
    fn subdirs_stay_inside() {
        assert_eq!(clean_subdir("").unwrap(), PathBuf::from("."));
        assert_eq!(clean_subdir("a/b/").unwrap(), PathBuf::from("./a/b"));
        assert!(clean_subdir("../x").is_err());
    }
}
