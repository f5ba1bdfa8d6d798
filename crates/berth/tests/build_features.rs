//! Dockerfile features of BuildKit's frontend end to end, checked in the
//! image berth stores (layers read back through an OCI layout): heredocs
//! for RUN and COPY (`<<EOF`, `<<-EOF`, quoted delimiters, several
//! heredocs, `#!` scripts), `COPY --link` (cache independent of the layers
//! below, its own layer, symlinked destination directories not followed),
//! `COPY --parents` with the `/./` pivot, `--exclude`, symbolic `--chmod`,
//! `ADD` of an http URL (served by a thread of the test) with and without
//! `--checksum`, and `ADD` of a git repository served by `git daemon` on
//! 127.0.0.1. Heredocs and `--link` are not in Docker 20.10's built-in
//! frontend, so the expectations follow BuildKit's sources.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::layers::Image;

struct Env {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    user: Option<(u32, u32)>,
}

impl Env {
    fn new() -> Env {
        Env::with_user(None)
    }

    fn rootless() -> Option<Env> {
        common::rootless_user().map(|user| Env::with_user(Some(user)))
    }

    fn with_user(user: Option<(u32, u32)>) -> Env {
        let (tmp, work) = common::work_dir("berth-features-test.", user);
        let env = Env {
            root: work.join("root"),
            work,
            _tmp: tmp,
            user,
        };
        ok(env.berth(&["import", "busybox-rootfs.tar", "base:1"]));
        env
    }

    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.berth_env(args, &[])
    }

    fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.envs(env.iter().copied());
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.work)
            .env("HOME", &self.work)
            .env("DOCKER_CONFIG", self.work.join("docker-config"))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("BERTH_ROOT")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.output().unwrap()
    }

    /// A context directory: `(path, contents, mode)`; paths ending in `/`
    /// are directories.
    fn context(&self, name: &str, files: &[(&str, &str, u32)]) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.give(&dir);
        for (path, text, mode) in files {
            let p = dir.join(path);
            let mut made = p.parent().unwrap().to_path_buf();
            std::fs::create_dir_all(&made).unwrap();
            while made != dir {
                self.give(&made);
                made = made.parent().unwrap().to_path_buf();
            }
            if path.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                std::fs::write(&p, text).unwrap();
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
            self.give(&p);
        }
        dir
    }

    fn dockerfile(&self, ctx: &Path, text: &str) {
        let p = ctx.join("Dockerfile");
        std::fs::write(&p, text).unwrap();
        self.give(&p);
    }

    fn build(&self, ctx: &Path, tag: &str) -> Output {
        self.berth(&[
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ])
    }

    fn image(&self, name: &str) -> Image {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = self
            .work
            .join(format!("layout-{}", N.fetch_add(1, Ordering::Relaxed)));
        ok(self.berth(&[
            "copy",
            // Tags are stored Docker-normalised (`x:1` is `library/x:1`).
            &format!("local:library/{name}"),
            &format!("oci:{}:x", dir.display()),
        ]));
        Image::from_layout(&dir)
    }
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "berth failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn failed(out: Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "berth succeeded unexpectedly:\n{err}"
    );
    err
}

/// `--progress plain` says the step whose text contains `needle` was cached.
fn cached(log: &str, needle: &str) -> bool {
    let ids: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, text)| text.contains(needle))
        .map(|(id, _)| id)
        .collect();
    assert!(!ids.is_empty(), "no step {needle:?} in:\n{log}");
    ids.iter()
        .any(|id| log.lines().any(|l| l == format!("#{id} CACHED")))
}

impl Image {
    fn mode(&self, path: &str) -> u32 {
        self.file(path)
            .unwrap_or_else(|| panic!("{path} is not in any layer"))
            .mode
    }

    fn history(&self) -> Vec<String> {
        self.config["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

// ------------------------------------------------------------- heredocs

fn heredoc_scenario(env: &Env) {
    let ctx = env.context("heredoc", &[]);
    // Tabs matter: `<<-` strips them, `<<` keeps them.
    env.dockerfile(
        &ctx,
        "FROM base:1\n\
         ENV WHO=world\n\
         RUN <<EOF\n\
         echo plain > /plain\n\
         echo \"$WHO\" >> /plain\n\
         EOF\n\
         RUN <<-EOF\n\
         \techo chomped > /chomped\n\
         \tEOF\n\
         RUN cat <<'EOF' > /quoted\n\
         $WHO stays\n\
         EOF\n\
         RUN cat <<EOF > /unquoted\n\
         hello $WHO\n\
         EOF\n\
         RUN cat <<A > /a && cat <<-B > /b && cat - <<C > /c\n\
         first\n\
         A\n\
         \tsecond\n\
         \tB\n\
         third\n\
         C\n\
         RUN <<EOF\n\
         #!/bin/sh\n\
         echo \"run as $0\" > /shebang\n\
         EOF\n\
         COPY <<EOF /etc/one.conf\n\
         key=$WHO\n\
         EOF\n\
         COPY --chmod=750 <<one <<'two' /docs/\n\
         1 $WHO\n\
         one\n\
         2 $WHO\n\
         two\n",
    );
    let log = ok(env.build(&ctx, "heredoc:1"));
    let img = env.image("heredoc:1");
    assert_eq!(img.text("plain"), "plain\nworld\n");
    assert_eq!(img.text("chomped"), "chomped\n");
    assert_eq!(img.text("quoted"), "$WHO stays\n");
    assert_eq!(img.text("unquoted"), "hello world\n");
    assert_eq!(img.text("a"), "first\n");
    assert_eq!(img.text("b"), "second\n");
    assert_eq!(img.text("c"), "third\n");
    // BuildKit mounts a `#!` body at /dev/pipes/<name> and runs that file.
    assert_eq!(img.text("shebang"), "run as /dev/pipes/EOF\n");
    assert!(
        img.file("dev/pipes").is_none(),
        "mount stub left in a layer"
    );
    // COPY heredocs expand unless quoted; default mode 0644, --chmod wins.
    assert_eq!(img.text("etc/one.conf"), "key=world\n");
    assert_eq!(img.mode("etc/one.conf"), 0o644);
    assert_eq!(img.text("docs/one"), "1 world\n");
    assert_eq!(img.text("docs/two"), "2 $WHO\n");
    assert_eq!(img.mode("docs/two"), 0o750);
    let one = img.file("docs/one").unwrap();
    assert_eq!((one.uid, one.gid), (0, 0));
    // History shows what the shell ran, as BuildKit writes it.
    let history = img.history();
    assert!(
        history.iter().any(
            |h| h == "RUN /bin/sh -c echo plain > /plain\necho \"$WHO\" >> /plain\n # buildkit"
        ),
        "{history:#?}"
    );
    assert!(
        history
            .iter()
            .any(|h| h == "RUN /bin/sh -c /dev/pipes/EOF # buildkit"),
        "{history:#?}"
    );

    // A changed script body reruns its step (the key has the file's content).
    let df = std::fs::read_to_string(ctx.join("Dockerfile")).unwrap();
    env.dockerfile(&ctx, &df.replace("run as $0", "ran as $0"));
    let log2 = ok(env.build(&ctx, "heredoc:2"));
    assert!(cached(&log2, "3/10] RUN <<EOF"), "{log2}");
    assert!(!cached(&log2, "8/10] RUN <<EOF"), "{log2}");
    assert_eq!(
        env.image("heredoc:2").text("shebang"),
        "ran as /dev/pipes/EOF\n"
    );
    let _ = log;
}

#[test]
fn heredocs_run_and_copy() {
    heredoc_scenario(&Env::new());
}

#[test]
fn heredocs_rootless() {
    if let Some(env) = Env::rootless() {
        heredoc_scenario(&env);
    }
}

// ------------------------------------------- --chmod, --parents, --exclude

fn copy_flags_scenario(env: &Env) {
    let ctx = env.context(
        "flags",
        &[
            ("f.txt", "f\n", 0o664),
            ("tool", "#!/bin/sh\n", 0o644),
            ("tree/", "", 0o700),
            ("tree/sub/", "", 0o700),
            ("tree/sub/x.txt", "x\n", 0o600),
            ("tree/run.sh", "#!/bin/sh\n", 0o700),
            ("tree/skip.log", "log\n", 0o644),
            ("src/app/main.c", "int main;\n", 0o644),
            ("src/app/util/u.c", "u\n", 0o644),
            ("src/lib/l.c", "l\n", 0o644),
            ("docs/a/readme", "r\n", 0o644),
        ],
    );
    env.dockerfile(
        &ctx,
        "FROM base:1\n\
         COPY --chmod=u+x,g-w f.txt /m/f1\n\
         COPY --chmod=a=r f.txt /m/f2\n\
         COPY --chmod=go=u,u-w f.txt /m/f3\n\
         COPY --chmod=a+X tree /m/tree/\n\
         COPY --chmod=0755 tool /m/tool\n\
         COPY --parents src/app/main.c src/*/util/u.c docs/a /p/\n\
         COPY --parents ./src/./lib/l.c /pivot/\n\
         COPY --exclude=*.log --exclude=sub tree /ex/\n\
         COPY --from=base:1 --parents bin/sh /fromimg/\n",
    );
    ok(env.build(&ctx, "flags:1"));
    let img = env.image("flags:1");
    assert_eq!(img.mode("m/f1"), 0o744);
    assert_eq!(img.mode("m/f2"), 0o444);
    assert_eq!(img.mode("m/f3"), 0o466);
    // +X: directories and files already executable by someone.
    assert_eq!(img.mode("m/tree/sub"), 0o711);
    assert_eq!(img.mode("m/tree/sub/x.txt"), 0o600);
    assert_eq!(img.mode("m/tree/run.sh"), 0o711);
    assert_eq!(img.mode("m/tool"), 0o755);
    // --parents keeps the source's directories; `/./` cuts them.
    assert_eq!(img.text("p/src/app/main.c"), "int main;\n");
    assert_eq!(img.text("p/src/app/util/u.c"), "u\n");
    assert_eq!(img.text("p/docs/a/readme"), "r\n");
    assert!(img.file("p/main.c").is_none() && img.file("p/readme").is_none());
    assert_eq!(img.text("pivot/lib/l.c"), "l\n");
    assert!(img.file("pivot/src").is_none());
    assert!(img.file("fromimg/bin/sh").is_some());
    // --exclude.
    assert!(img.file("ex/run.sh").is_some());
    assert!(img.file("ex/skip.log").is_none());
    assert!(img.file("ex/sub").is_none() && img.file("ex/sub/x.txt").is_none());

    let bad = env.context("bad-chmod", &[("f", "", 0o644)]);
    env.dockerfile(&bad, "FROM base:1\nCOPY --chmod=u+q f /f\n");
    let err = failed(env.build(&bad, "bad:1"));
    assert!(err.contains("invalid --chmod=u+q"), "{err}");
}

#[test]
fn copy_chmod_parents_exclude() {
    copy_flags_scenario(&Env::new());
}

#[test]
fn copy_chmod_parents_exclude_rootless() {
    if let Some(env) = Env::rootless() {
        copy_flags_scenario(&env);
    }
}

// ------------------------------------------------------------ COPY --link

#[test]
fn copy_link_is_independent_of_the_layers_below() {
    let env = Env::new();
    let ctx = env.context("link", &[("f.txt", "linked\n", 0o644)]);
    let df = |n: u32| {
        format!(
            "FROM base:1\n\
             RUN echo {n} > /before && mkdir -p /real /opt && chmod 700 /opt && busybox ln -s /real /lnk\n\
             COPY --link f.txt /opt/f.txt\n\
             COPY --link f.txt /lnk/\n\
             RUN cat /opt/f.txt > /after\n"
        )
    };
    env.dockerfile(&ctx, &df(1));
    ok(env.build(&ctx, "link:1"));
    let img = env.image("link:1");
    assert_eq!(img.text("opt/f.txt"), "linked\n");
    assert_eq!(img.text("after"), "linked\n");
    // The --link layer holds only what the copy made (on an empty root):
    // its own /opt (0755, not the 0700 of the layer below).
    let layer = &img.layers[img.layers.len() - 3];
    let mut paths: Vec<&str> = layer.iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["opt", "opt/f.txt"], "{layer:#?}");
    assert_eq!(layer[0].mode & 0o777, 0o755);
    // A symlinked destination directory of the layers below is not
    // followed: the link layer has a real /lnk, /real stays empty.
    let lnk_layer = &img.layers[img.layers.len() - 2];
    assert!(lnk_layer
        .iter()
        .any(|e| e.path == "lnk" && e.kind == tar::EntryType::Directory));
    assert!(lnk_layer.iter().any(|e| e.path == "lnk/f.txt"));
    assert!(img.file("real/f.txt").is_none());
    assert!(img.layers[..img.layers.len() - 3]
        .iter()
        .flatten()
        .any(|e| e.path == "lnk" && e.link.as_deref() == Some("/real")));

    // A changed step below: the --link copies stay cached, what follows them
    // (depends on both) reruns.
    env.dockerfile(&ctx, &df(2));
    let log = ok(env.build(&ctx, "link:2"));
    assert!(!cached(&log, "RUN echo 2"), "{log}");
    assert!(cached(&log, "COPY --link f.txt /opt/f.txt"), "{log}");
    assert!(cached(&log, "COPY --link f.txt /lnk/"), "{log}");
    assert!(!cached(&log, "RUN cat /opt/f.txt"), "{log}");
    let img2 = env.image("link:2");
    assert_eq!(img2.text("before"), "2\n");
    assert_eq!(img2.text("opt/f.txt"), "linked\n");
}

// --------------------------------------------------------------- ADD URL

/// Serves `files` (path -> body) over HTTP/1.0 on 127.0.0.1 with a fixed
/// Last-Modified; counts requests.
struct HttpServer {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

fn serve_http(files: Vec<(&'static str, Vec<u8>)>) -> HttpServer {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h2 = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            h2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let line = String::from_utf8_lossy(&req);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let resp = match files.iter().find(|(p, _)| *p == path) {
                Some((_, body)) => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Wed, 21 Oct 2015 07:28:00 GMT\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(body);
                    r
                }
                None => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec(),
            };
            let _ = conn.write_all(&resp);
        }
    });
    HttpServer { port, hits }
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn add_url_scenario(env: &Env) {
    let body = b"downloaded content\n".to_vec();
    let sum = sha256_hex(&body);
    let server = serve_http(vec![
        ("/files/data.txt", body.clone()),
        ("/", b"root\n".to_vec()),
    ]);
    let base = format!("http://127.0.0.1:{}", server.port);
    let ctx = env.context("url", &[]);
    env.dockerfile(
        &ctx,
        &format!(
            "FROM base:1\n\
             ADD {base}/files/data.txt /dl/\n\
             ADD --checksum=sha256:{sum} {base}/files/data.txt /pinned.txt\n\
             ADD --chown=7:8 --chmod=644 {base}/ /unnamed/\n"
        ),
    );
    ok(env.build(&ctx, "url:1"));
    let img = env.image("url:1");
    let f = img.file("dl/data.txt").expect("file named after the URL");
    assert_eq!(f.data, body);
    // BuildKit's http source: 0600, mtime from Last-Modified.
    assert_eq!(f.mode, 0o600);
    assert_eq!(f.mtime, 1_445_412_480);
    assert_eq!((f.uid, f.gid), (0, 0));
    assert_eq!(img.text("pinned.txt"), "downloaded content\n");
    let u = img.file("unnamed/__unnamed__").expect("__unnamed__");
    assert_eq!((u.uid, u.gid, u.mode), (7, 8, 0o644));

    // Pinned: a cache hit fetches nothing; unpinned URLs are fetched again.
    let before = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    let log = ok(env.build(&ctx, "url:1"));
    let after = server.hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(cached(&log, "--checksum"), "{log}");
    assert!(cached(&log, "/dl/"), "{log}");
    assert_eq!(after - before, 2, "only the two unpinned URLs are fetched");

    // A wrong checksum fails the step, names both digests, tags nothing.
    let wrong = "0".repeat(64);
    env.dockerfile(
        &ctx,
        &format!("FROM base:1\nADD --checksum=sha256:{wrong} {base}/files/data.txt /x\n"),
    );
    let err = failed(env.build(&ctx, "url:bad"));
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(err.contains(&sum) && err.contains(&wrong), "{err}");
    let listing = String::from_utf8_lossy(&env.berth(&["images"]).stdout).into_owned();
    assert!(!listing.contains("bad"), "{listing}");

    // COPY cannot fetch; --checksum needs a URL.
    env.dockerfile(
        &ctx,
        &format!("FROM base:1\nCOPY {base}/files/data.txt /x\n"),
    );
    let err = failed(env.build(&ctx, "url:copy"));
    assert!(err.contains("source can't be a URL for COPY"), "{err}");
    let missing = env.context("url-missing", &[("local", "", 0o644)]);
    env.dockerfile(
        &missing,
        &format!("FROM base:1\nADD --checksum=sha256:{sum} local /x\n"),
    );
    let err = failed(env.build(&missing, "url:local"));
    assert!(
        err.contains("checksum can't be specified for non-HTTP(S) sources"),
        "{err}"
    );
}

#[test]
fn add_from_http_url() {
    add_url_scenario(&Env::new());
}

#[test]
fn add_from_http_url_rootless() {
    if let Some(env) = Env::rootless() {
        add_url_scenario(&env);
    }
}

/// Every file under `dir` whose name starts with `prefix`.
fn files_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(files_named(&p, prefix));
            } else if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(p);
            }
        }
    }
    out
}

/// ADD of a URL from a hostile server (`common/evil.rs`): a body without
/// end stops at `BERTH_MAX_DOWNLOAD_BYTES`, a Content-Length past it is
/// refused before the body (pinned or not), a server that stops sending
/// fails the step after `BERTH_IDLE_TIMEOUT`; no partial download is left
/// and nothing is tagged.
#[test]
fn add_from_hostile_urls_is_bounded() {
    let env = Env::new();
    let evil = common::evil::Evil::start();
    let base = format!("http://{}/files", evil.registry);
    let limits = [
        ("BERTH_MAX_DOWNLOAD_BYTES", "8M"),
        ("BERTH_IDLE_TIMEOUT", "1"),
    ];
    let ctx = env.context("hostile-url", &[]);
    let pin = format!("--checksum=sha256:{}", "0".repeat(64));
    for (add, needle) in [
        (
            format!("ADD {base}/endless /x"),
            "larger than 8.0 MiB (BERTH_MAX_DOWNLOAD_BYTES)",
        ),
        (
            format!("ADD {pin} {base}/huge /x"),
            "larger than 8.0 MiB (BERTH_MAX_DOWNLOAD_BYTES)",
        ),
        (format!("ADD {base}/hang /x"), "BERTH_IDLE_TIMEOUT"),
    ] {
        env.dockerfile(&ctx, &format!("FROM base:1\n{add}\n"));
        let started = std::time::Instant::now();
        let out = env.berth_env(
            &[
                "build",
                "--progress",
                "plain",
                "-t",
                "hostile:1",
                ctx.to_str().unwrap(),
            ],
            &limits,
        );
        let took = started.elapsed();
        let err = failed(out);
        assert!(err.contains(needle), "{add}: {err}");
        assert!(err.contains(&base), "{add}: names the URL: {err}");
        assert!(took.as_secs() < 30, "{add}: {took:?}");
        assert_eq!(
            files_named(&env.root, ".download-"),
            Vec::<PathBuf>::new(),
            "{add}: a partial download was left"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let sent = evil.sent("/files/endless") + evil.sent("/files/huge");
    assert!(sent < 64 << 20, "the server wrote {sent} bytes");
    let listing = String::from_utf8_lossy(&env.berth(&["images"]).stdout).into_owned();
    assert!(!listing.contains("hostile"), "{listing}");
}

// --------------------------------------------------------------- ADD git

struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_AUTHOR_DATE", "1500000000 +0000")
        .env("GIT_COMMITTER_DATE", "1500000000 +0000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn add_from_git_repository() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("SKIP: no git");
        return;
    }
    git_scenario(&Env::new());
}

#[test]
fn add_from_git_repository_rootless() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("SKIP: no git");
        return;
    }
    if let Some(env) = Env::rootless() {
        git_scenario(&env);
    }
}

fn git_scenario(env: &Env) {
    let repos = env.work.join("repos");
    let repo = repos.join("proj.git");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::create_dir_all(repo.join("sub/deep")).unwrap();
    std::fs::write(repo.join("top.txt"), "top v1\n").unwrap();
    std::fs::write(repo.join("sub/a.txt"), "a v1\n").unwrap();
    std::fs::write(repo.join("sub/deep/b.txt"), "b\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "-a", "v1", "-m", "v1"]);
    let v1 = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("sub/a.txt"), "a v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);

    let port = common::free_port();
    let daemon = Daemon(
        Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", repos.display()),
            ])
            .arg(&repos)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "git daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let url = format!("git://127.0.0.1:{port}/proj.git");
    let ctx = env.context("git", &[]);
    env.dockerfile(
        &ctx,
        &format!(
            "FROM base:1\n\
             ADD {url}#v1:sub /v1sub/\n\
             ADD {url}#main /main/\n\
             ADD --keep-git-dir=true {url}#{v1} /kept/\n"
        ),
    );
    ok(env.build(&ctx, "git:1"));
    let img = env.image("git:1");
    assert_eq!(img.text("v1sub/a.txt"), "a v1\n");
    assert_eq!(img.text("v1sub/deep/b.txt"), "b\n");
    assert!(img.file("v1sub/top.txt").is_none() && img.file("v1sub/.git").is_none());
    assert_eq!(img.text("main/sub/a.txt"), "a v2\n");
    assert_eq!(img.text("main/top.txt"), "top v1\n");
    assert!(img.file("main/.git").is_none());
    let t = img.file("main/top.txt").unwrap();
    assert_eq!((t.uid, t.gid, t.mtime), (0, 0, 1_500_000_000));
    assert!(img.file("kept/.git").is_some(), "--keep-git-dir keeps .git");
    assert_eq!(img.text("kept/sub/a.txt"), "a v1\n");

    // The key is the commit: same commit cached, a moved branch reruns.
    let log = ok(env.build(&ctx, "git:1"));
    assert!(cached(&log, "#v1:sub"), "{log}");
    assert!(cached(&log, "#main"), "{log}");
    std::fs::write(repo.join("top.txt"), "top v3\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "three"]);
    let log = ok(env.build(&ctx, "git:2"));
    assert!(cached(&log, "#v1:sub"), "{log}");
    assert!(!cached(&log, "#main"), "{log}");
    assert_eq!(env.image("git:2").text("main/top.txt"), "top v3\n");

    // A ref that does not exist is named.
    env.dockerfile(&ctx, &format!("FROM base:1\nADD {url}#nope /x/\n"));
    let err = failed(env.build(&ctx, "git:bad"));
    assert!(err.contains("nope"), "{err}");
    drop(daemon);
}
