//! The `berth` command line: serve's flags and config file, graceful
//! shutdown, and the offline commands' refusal to share a root with a server.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::{free_port, sigterm, spawn_serve};

fn berth(args: &[&str], root: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .arg("--root")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn config_file_sets_what_flags_do_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:{port}\"\nroot = \"{}\"\nread_only = true\nlog_level = \"warn\"\n",
            dir.path().join("root").display()
        ),
    )
    .unwrap();
    let mut server = spawn_serve(&["--config", config.to_str().unwrap()], port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(
            c.get(format!("{base}/v2/")).send().await.unwrap().status(),
            200
        );
        let r = c
            .post(format!("{base}/v2/a/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "read_only from the config file");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    });
    sigterm(&server);
    assert!(server.wait().unwrap().success());
    assert!(
        dir.path().join("root/meta.redb").exists(),
        "root from the config file"
    );
}

#[test]
fn bad_config_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "adress = \"127.0.0.1:1\"\n").unwrap();
    let out = berth(&["serve", "--config", config.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("berth.toml") && err.contains("adress"),
        "{err}"
    );
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().to_str().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_serve(&["--root", root, "--addr", &addr], port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = format!("http://{addr}");
    let status = rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{base}/v2/slow/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        // A body that trickles in over ~1.5 s; SIGTERM arrives meanwhile.
        let chunks = futures_util::stream::unfold(0, |i| async move {
            if i == 15 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>(vec![b'x'; 1000]), i + 1))
        });
        let patch = tokio::spawn(
            c.patch(format!("{base}{loc}"))
                .body(reqwest::Body::wrap_stream(chunks))
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        sigterm(&server);
        let r = patch.await.unwrap().unwrap();
        (
            r.status(),
            r.headers()["range"].to_str().unwrap().to_string(),
        )
    });
    assert_eq!(status.0, 202, "the in-flight PATCH completed");
    assert_eq!(status.1, "0-14999");
    assert!(server.wait().unwrap().success(), "clean exit after SIGTERM");
}

#[test]
fn gc_refuses_a_root_a_server_is_using() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().to_str().unwrap();
    let mut server = spawn_serve(
        &["--root", root, "--addr", &format!("127.0.0.1:{port}")],
        port,
    );
    let out = berth(&["gc"], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use") && err.contains("stop it first"),
        "{err}"
    );
    sigterm(&server);
    server.wait().unwrap();
    let out = berth(&["gc", "--dry-run"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would remove 0 manifests, 0 blobs"));
}

/// Pushes `data` as a blob of `repo` (monolithic POST) and returns its digest.
async fn push_blob(c: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> String {
    let d = format!("sha256:{}", sha256_hex(data));
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    d
}

fn sha256_hex(data: &[u8]) -> String {
    berth_oci::Digest::sha256_of(data).hex().to_string()
}

/// A one-layer OCI image in `repo`; returns the manifest's bytes.
async fn push_image(c: &reqwest::Client, base: &str, repo: &str, tag: &str, seed: u8) -> Vec<u8> {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"seed\":{seed}}}");
    let layer = vec![seed; 1000];
    let cd = push_blob(c, base, repo, config.as_bytes()).await;
    let ld = push_blob(c, base, repo, &layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": 1000}],
    }))
    .unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    manifest
}

/// `berth fsck` reports an index whose child is missing (exit non-zero),
/// unless told the root serves sparse indexes; referrers whose subject is
/// gone are notes. The sparse index is how such a root is made through the
/// API alone (a DELETE of an index child is refused).
#[test]
fn fsck_reports_indexes_with_missing_children() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().to_str().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_serve(
        &["--root", root, "--addr", &addr, "--allow-sparse-index"],
        port,
    );
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let absent = rt.block_on(async {
        let c = reqwest::Client::new();
        let present = push_image(&c, &base, "app", "one", 1).await;
        let absent =
            serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "x": "never pushed"}))
                .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": format!("sha256:{}", sha256_hex(&present)), "size": present.len()},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                 "digest": format!("sha256:{}", sha256_hex(&absent)), "size": absent.len()},
            ],
        }))
        .unwrap();
        let r = c
            .put(format!("{base}/v2/app/manifests/multi"))
            .header("content-type", "application/vnd.oci.image.index.v1+json")
            .body(index)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        // The present child cannot be deleted while the index names it.
        let r = c
            .delete(format!(
                "{base}/v2/app/manifests/sha256:{}",
                sha256_hex(&present)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        format!("sha256:{}", sha256_hex(&absent))
    });
    sigterm(&server);
    assert!(server.wait().unwrap().success());

    let out = berth(&["fsck"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("problem: app: index")
            && stdout.contains(&format!("names child manifest {absent}"))
            && stdout.contains(": 1 problems"),
        "{stdout}"
    );
    let out = berth(&["fsck", "--allow-sparse-index"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("note: ") && stdout.contains(": 0 problems"),
        "{stdout}"
    );
}

// ---- issue 9: floods, slow clients, expired sessions --------------------

/// Lets this test process hold a thousand sockets.
fn raise_own_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with valid pointers.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// `berth serve ARGS` with at most `nofile` file descriptors (prlimit).
fn spawn_serve_limited(nofile: u32, args: &[&str], port: u16) -> Option<common::Server> {
    if !Path::new("/usr/bin/prlimit").exists() {
        eprintln!("skipped: no prlimit");
        return None;
    }
    let child = Command::new("/usr/bin/prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .args(args)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start berth serve under prlimit");
    let server = common::Server(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "berth serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(server)
}

fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Pushes a blob as docker does: POST a session, PUT the data to it.
async fn push_blob_session(c: &reqwest::Client, base: &str, repo: &str, data: &[u8]) -> String {
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let d = format!("sha256:{}", sha256_hex(data));
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{base}{loc}{sep}digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    d
}

/// A normal push (sessions, then the manifest) and pull of it.
async fn normal_push_and_pull(base: &str, repo: &str) {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = vec![7u8; 100_000];
    let cd = push_blob_session(&c, base, repo, config).await;
    let ld = push_blob_session(&c, base, repo, &layer).await;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": layer.len()}],
    }))
    .unwrap();
    let r = c
        .put(format!("{base}/v2/{repo}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/v1"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), manifest);
}

/// Issue 9: ~1,000 `POST .../uploads/` never finished made the server
/// answer 500 (`Too many open files`), then nothing at all. Under a limit
/// of 256 descriptors, 1,000 sessions from one client (and a chunk into
/// each accepted one) get 202 or 429, never a 5xx, and another client's
/// push still works. Only default settings: the same test run against a
/// berth from before the limits fails.
#[test]
fn an_upload_session_flood_does_not_exhaust_descriptors() {
    raise_own_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let root = dir.path().to_str().unwrap();
    let Some(_server) = spawn_serve_limited(256, &["--root", root, "--addr", &addr], port) else {
        return;
    };
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let flood = client_from("127.0.0.2");
        let mut set = tokio::task::JoinSet::new();
        for worker in 0..16 {
            let (c, base) = (flood.clone(), base.clone());
            set.spawn(async move {
                let mut out = Vec::new();
                for _ in 0..1000 / 16 + usize::from(worker < 1000 % 16) {
                    let r = c
                        .post(format!("{base}/v2/flood/blobs/uploads/"))
                        .send()
                        .await
                        .expect("the server answers");
                    let status = r.status().as_u16();
                    let loc = r
                        .headers()
                        .get("location")
                        .map(|l| l.to_str().unwrap().to_string());
                    let retry = r.headers().contains_key("retry-after");
                    let body = r.text().await.unwrap();
                    out.push((status, loc, retry, body));
                }
                out
            });
        }
        let results: Vec<_> = set.join_all().await.into_iter().flatten().collect();
        assert_eq!(results.len(), 1000);
        let accepted: Vec<String> = results.iter().filter_map(|r| r.1.clone()).collect();
        for (status, _, retry, body) in &results {
            assert!(
                *status == 202 || (*status == 429 && *retry && body.contains("TOOMANYREQUESTS")),
                "{status}: {body}"
            );
        }
        assert!(
            !accepted.is_empty() && accepted.len() < 1000,
            "{}",
            accepted.len()
        );
        // A chunk into every session: their files cannot all stay open.
        let mut set = tokio::task::JoinSet::new();
        for chunk in accepted.chunks(accepted.len().div_ceil(16)) {
            let (c, base, chunk) = (flood.clone(), base.clone(), chunk.to_vec());
            set.spawn(async move {
                for loc in chunk {
                    let r = c
                        .patch(format!("{base}{loc}"))
                        .header("content-type", "application/octet-stream")
                        .body(vec![b'x'; 100])
                        .send()
                        .await
                        .expect("the server answers");
                    let status = r.status().as_u16();
                    assert_eq!(status, 202, "{:?}", r.text().await);
                }
            });
        }
        set.join_all().await;
        normal_push_and_pull(&base, "normal/app").await;
    });
}

/// Issue 9: idle connections locked everyone else out. Under a limit of
/// 256 descriptors, 1,000 connections that send nothing: the ones over the
/// cap get a 503 at once, another client gets an answer at once (never a
/// stall), and once the flood is gone a push works.
#[test]
fn an_idle_connection_flood_is_refused_not_stalled() {
    raise_own_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let root = dir.path().to_str().unwrap();
    let Some(mut server) = spawn_serve_limited(256, &["--root", root, "--addr", &addr], port)
    else {
        return;
    };
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sockaddr: std::net::SocketAddr = addr.parse().unwrap();
        let (flood, refused) = flood_connections(sockaddr, "127.0.0.2", 1000).await;
        assert_eq!(
            server.0.try_wait().unwrap(),
            None,
            "berth serve exited under the flood"
        );
        assert!(refused >= 500, "only {refused} of 1000 were refused");
        // Another client is answered at once: served, or refused (503).
        let answer = tokio::time::timeout(Duration::from_secs(3), raw_get(sockaddr, "/v2/"))
            .await
            .expect("a client stalled behind a thousand idle connections");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
        drop(flood);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !raw_get(sockaddr, "/v2/").await.starts_with("HTTP/1.1 200") {
            assert!(
                std::time::Instant::now() < deadline,
                "not served after the flood"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        normal_push_and_pull(&base, "after/flood").await;
    });
}

/// With a per-client cap, a flood from one address does not even cost the
/// others a 503: they are served while it lasts.
#[test]
fn a_connection_flood_from_one_address_spares_the_others() {
    raise_own_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let root = dir.path().to_str().unwrap();
    let Some(_server) = spawn_serve_limited(
        2048,
        &[
            "--root",
            root,
            "--addr",
            &addr,
            "--max-connections-per-client",
            "100",
        ],
        port,
    ) else {
        return;
    };
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sockaddr: std::net::SocketAddr = addr.parse().unwrap();
        let (_flood, refused) = flood_connections(sockaddr, "127.0.0.2", 1000).await;
        // Exactly 100 are admitted; a refusal a loaded machine delivers
        // late is counted as admitted, hence the small margin below.
        assert!(
            (895..=900).contains(&refused),
            "{refused} of 1000 refused, not 900"
        );
        for _ in 0..10 {
            let answer = tokio::time::timeout(Duration::from_secs(3), raw_get(sockaddr, "/v2/"))
                .await
                .expect("stalled");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        normal_push_and_pull(&base, "beside/flood").await;
    });
}

/// Opens `n` connections from `source` that send nothing. Returns the ones
/// still open and how many were refused (a 503 or closed, within 6 s).
async fn flood_connections(
    addr: std::net::SocketAddr,
    source: &str,
    n: usize,
) -> (Vec<tokio::net::TcpStream>, usize) {
    use tokio::io::AsyncReadExt;
    let mut open = Vec::new();
    let mut connect_refused = 0;
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
        match tokio::time::timeout(Duration::from_secs(3), sock.connect(addr))
            .await
            .expect("connect stalled")
        {
            Ok(s) => open.push(s),
            // The kernel refusing the handshake is an answer too, not a
            // stall (whether the server is still up is checked after).
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => connect_refused += 1,
            Err(e) => panic!("connect: {e}"),
        }
    }
    // Which of them were answered 503 and closed?
    let mut set = tokio::task::JoinSet::new();
    for mut s in open {
        set.spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            let refused = loop {
                match tokio::time::timeout(Duration::from_secs(6), s.read(&mut buf)).await {
                    Err(_) => break false, // still open and silent: admitted
                    // A 503, or closed by the server without one (past
                    // the refusals it answers): refused either way.
                    Ok(Ok(0)) | Ok(Err(_)) => {
                        let answer = String::from_utf8_lossy(&got);
                        break answer.is_empty() || answer.starts_with("HTTP/1.1 503");
                    }
                    Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
                }
            };
            (s, refused)
        });
    }
    let mut still_open = Vec::new();
    let mut refused = connect_refused;
    for (s, r) in set.join_all().await {
        if r {
            refused += 1;
        } else {
            still_open.push(s);
        }
    }
    (still_open, refused)
}

/// One `GET` over a fresh connection: the whole answer as text.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The timeouts and the body rate come from flags, and a cut body is
/// logged: a slowloris header, an idle keep-alive connection and a body
/// trickling in below the minimum are each cut within about their limit.
#[test]
fn timeouts_and_the_body_rate_cut_slow_clients() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--root"])
        .arg(dir.path().join("root"))
        .args(["--addr", &addr, "--log-level", "info"])
        .args(["--header-read-timeout", "1s", "--idle-timeout", "800ms"])
        .args(["--min-body-rate", "1000", "--body-rate-window", "1s"])
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _server = common::Server(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "berth serve did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Seconds until the server closes `s` (while `feed` keeps writing).
    let closed_after = |mut s: std::net::TcpStream, feed: Option<&'static [u8]>| {
        let start = std::time::Instant::now();
        let mut w = s.try_clone().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let feeder = std::thread::spawn(move || {
            if let Some(bytes) = feed {
                for b in bytes.iter().cycle() {
                    if stop2.load(std::sync::atomic::Ordering::Relaxed)
                        || w.write_all(&[*b]).is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
        let mut out = Vec::new();
        let r = s.read_to_end(&mut out);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        feeder.join().unwrap();
        assert!(
            !matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "still open after 6 s"
        );
        (start.elapsed(), String::from_utf8_lossy(&out).into_owned())
    };

    // A header arriving a byte every 100 ms.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (took, _) = closed_after(s, Some(b"X-Slow: aaaaaaaa"));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // An idle keep-alive connection after its request.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (took, answer) = closed_after(s, None);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(4),
        "{took:?}"
    );

    // An upload body at 10 bytes/s (minimum 1000).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let loc = rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/v2/slow/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        r.headers()["location"].to_str().unwrap().to_string()
    });
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        s,
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    let (took, answer) = closed_after(s, Some(b"slow body "));
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("too slow"),
        "{answer}"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("cutting a request body") && log.contains("127.0.0.1"),
        "{log}"
    );
    assert!(log.contains("header_read_timeout"), "{log}");
}

/// `berth gc` removes upload sessions idle past `[uploads] max_age` (or
/// `--upload-max-age`), and `--dry-run` only shows them.
#[test]
fn gc_removes_expired_upload_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let root = dir.path().join("root");
    let addr = format!("127.0.0.1:{port}");
    let mut server = spawn_serve(&["--root", root.to_str().unwrap(), "--addr", &addr], port);
    let base = format!("http://{addr}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let locations: Vec<String> = rt.block_on(async {
        let c = reqwest::Client::new();
        let mut locs = Vec::new();
        for _ in 0..3 {
            let r = c
                .post(format!("{base}/v2/up/blobs/uploads/"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            locs.push(r.headers()["location"].to_str().unwrap().to_string());
        }
        let r = c
            .patch(format!("{base}{}", locs[0]))
            .body(vec![1u8; 1234])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        locs
    });
    sigterm(&server);
    assert!(server.wait().unwrap().success());
    let ids: Vec<&str> = locations
        .iter()
        .map(|l| l.rsplit('/').next().unwrap())
        .collect();
    let file = |id: &str| root.join("ingest/uploads").join(id);
    // Two sessions last touched two days ago.
    let past = std::time::SystemTime::now() - Duration::from_secs(2 * 86400 + 60);
    for id in &ids[..2] {
        std::fs::File::options()
            .write(true)
            .open(file(id))
            .unwrap()
            .set_modified(past)
            .unwrap();
    }
    let config = dir.path().join("berth.toml");
    std::fs::write(&config, "[uploads]\nmax_age = \"1d\"\n").unwrap();

    let out = berth(
        &["gc", "--dry-run", "--config", config.to_str().unwrap()],
        &root,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "would remove expired upload {} of up (1234 bytes, idle 2d 0h)",
            ids[0]
        )) && stdout.contains(&format!(
            "would remove expired upload {} of up (0 bytes",
            ids[1]
        )) && stdout.contains("2 expired upload sessions")
            && !stdout.contains(ids[2]),
        "{stdout}"
    );
    assert!(
        ids.iter().all(|id| file(id).exists()),
        "a dry run removes nothing"
    );
    // The flag wins over the config file.
    let out = berth(
        &[
            "gc",
            "--dry-run",
            "--config",
            config.to_str().unwrap(),
            "--upload-max-age",
            "3d",
        ],
        &root,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 0 expired upload sessions"));

    let out = berth(&["gc", "--config", config.to_str().unwrap()], &root);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("removed 0 manifests")
            && stdout.contains("2 expired upload sessions, 0 stray"),
        "{stdout}"
    );
    assert!(!file(ids[0]).exists() && !file(ids[1]).exists() && file(ids[2]).exists());

    // Served again: the expired sessions are unknown, the fresh one goes on.
    let mut server = spawn_serve(&["--root", root.to_str().unwrap(), "--addr", &addr], port);
    rt.block_on(async {
        let c = reqwest::Client::new();
        for (loc, want) in locations.iter().zip([404, 404, 204]) {
            let r = c.get(format!("{base}{loc}")).send().await.unwrap();
            assert_eq!(r.status(), want, "{loc}");
        }
    });
    sigterm(&server);
    server.wait().unwrap();
}

/// Every new key of the config file is read, durations are checked.
#[test]
fn limits_in_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "addr = \"127.0.0.1:{port}\"\nroot = \"{}\"\n\
             header_read_timeout = \"10s\"\nidle_timeout = 60\nmin_body_rate = 512\n\
             body_rate_window = \"1m\"\nmax_connections = 100\nmax_connections_per_client = 2\n\
             [uploads]\nmax_age = \"7d\"\nmax_sessions = 10\nmax_sessions_per_client = 1\n\
             close_idle_after = \"5s\"\n",
            dir.path().join("root").display()
        ),
    )
    .unwrap();
    let mut server = spawn_serve(&["--config", config.to_str().unwrap()], port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("http://127.0.0.1:{port}");
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{base}/v2/a/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let r = c
            .post(format!("{base}/v2/a/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429, "max_sessions_per_client from [uploads]");
        assert!(r.headers().contains_key("retry-after"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    });
    sigterm(&server);
    assert!(server.wait().unwrap().success());

    std::fs::write(&config, "header_read_timeout = \"soon\"\n").unwrap();
    let out = berth(&["serve", "--config", config.to_str().unwrap()], dir.path());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("soon") && err.contains("30s"), "{err}");
    let out = berth(&["serve", "--idle-timeout", "5 minutes"], dir.path());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));
}
