//! Issue 9: one client must not be able to take the registry down. Each
//! test reproduces an attack (slow or idle connections, connection and
//! upload-session floods, slow bodies) against a server with small limits
//! and checks that it is cut or refused promptly while others are served.
//! Loopback only; `127.0.0.2` plays the other client.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_registry::BodyRate;
use common::*;
use reqwest::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A TCP connection to `addr` from the loopback address `source`.
async fn connect_from(addr: SocketAddr, source: &str) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    sock.connect(addr).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset). What it
/// sent and when it closed, or `None` if it was still open after `limit`.
async fn read_until_closed(
    s: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response to a request without a body (`{}` from `/v2/`).
async fn read_base_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\n{}") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("response within 5s")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// Polls `GET /v2/` over fresh connections until it is answered 200.
async fn wait_until_served(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = raw(addr, "GET", "/v2/").await;
        if status == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "still {status} after 10s");
        tokio::time::sleep(ms(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slowloris_header_is_cut_after_the_header_timeout() {
    let srv = Server::start_with(settings(|s| {
        s.limits.header_read_timeout = Some(ms(600));
    }))
    .await;
    let s = TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    // The request line, then one header byte every 100 ms, never ending.
    let writer = tokio::spawn(async move {
        wr.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        for b in b"X-Slow: ".iter().cycle() {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(ms(100)).await;
        }
    });
    let closed = read_until_closed(&mut rd, Duration::from_secs(5)).await;
    writer.abort();
    let (_, took) = closed.expect("a header trickling in for 5s was never cut");
    assert!(took >= ms(500) && took < Duration::from_secs(3), "{took:?}");

    // A connection that sends nothing at all is cut the same way.
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let (_, took) = read_until_closed(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent connection was never cut");
    assert!(took >= ms(500) && took < Duration::from_secs(3), "{took:?}");
    srv.get("/v2/").await.status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let srv = Server::start_with(settings(|s| {
        s.limits.idle_timeout = Some(ms(500));
        s.limits.header_read_timeout = Some(Duration::from_secs(30));
    }))
    .await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let request = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n";
    // Requests within the idle timeout keep the connection.
    for _ in 0..3 {
        s.write_all(request).await.unwrap();
        assert!(read_base_response(&mut s).await.starts_with("HTTP/1.1 200"));
        tokio::time::sleep(ms(200)).await;
    }
    let (rest, took) = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection was never closed");
    assert!(rest.is_empty());
    // 200 ms of the 500 had passed already.
    assert!(took >= ms(200) && took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_slower_than_the_minimum_rate_is_cut() {
    let srv = Server::start_with(settings(|s| {
        s.limits.min_body_rate = Some(BodyRate {
            bytes_per_sec: 1000,
            window: ms(500),
        });
    }))
    .await;
    let loc = srv.start_upload("slow").await;
    let s = TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n"
    );
    // 10 bytes every 100 ms: 100 B/s, a tenth of the minimum.
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await.unwrap();
        loop {
            if wr.write_all(&[b'x'; 10]).await.is_err() {
                return;
            }
            tokio::time::sleep(ms(100)).await;
        }
    });
    let closed = read_until_closed(&mut rd, Duration::from_secs(5)).await;
    writer.abort();
    let (answer, took) = closed.expect("a body trickling in at 100 B/s was never cut");
    let answer = String::from_utf8_lossy(&answer);
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("BLOB_UPLOAD_INVALID") && answer.contains("too slow"),
        "{answer}"
    );
    // The session keeps what arrived and can go on.
    let r = srv.get(&loc).await;
    r.status(204);
    assert!(r.h("range") != "0-0", "{:?}", r.headers);

    // A body above the minimum is not cut, however long it takes.
    let chunks = futures_util::stream::unfold(0, |i| async move {
        if i == 20 {
            return None;
        }
        tokio::time::sleep(ms(75)).await;
        Some((Ok::<_, std::io::Error>(vec![b'y'; 300]), i + 1))
    });
    let loc = srv.start_upload("steady").await;
    let r = send(
        srv.req(Method::PATCH, &loc)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    r.status(202);
    assert_eq!(r.h("range"), "0-5999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_over_the_cap_are_answered_503_at_once() {
    let srv = Server::start_with(settings(|s| {
        s.limits.max_connections = 10;
        s.limits.max_connections_per_client = 0;
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from(srv.addr, "127.0.0.2").await);
    }
    // The cap is full: the next connection, from anyone, gets its answer
    // at once instead of waiting in the backlog.
    let start = Instant::now();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("a refused connection was left open");
    assert!(start.elapsed() < Duration::from_secs(2));
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("docker-distribution-api-version: registry/2.0"));
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("maximum of 10 connections"));

    drop(held);
    wait_until_served(srv.addr).await;
    srv.get("/v2/").await.status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_cannot_take_every_connection() {
    let srv = Server::start_with(settings(|s| {
        s.limits.max_connections = 100;
        s.limits.max_connections_per_client = 5;
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from(srv.addr, "127.0.0.2").await);
    }
    let mut sixth = connect_from(srv.addr, "127.0.0.2").await;
    let (answer, _) = read_until_closed(&mut sixth, Duration::from_secs(5))
        .await
        .expect("the client's sixth connection was left open");
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 503")
            && answer.contains("this client address has 5 connections"),
        "{answer}"
    );
    // Everyone else is served as usual, and the five are still open.
    for _ in 0..20 {
        srv.get("/v2/").await.status(200);
    }
    for s in &mut held {
        assert!(read_until_closed(s, ms(100)).await.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_sessions_are_capped_per_client_and_in_total() {
    let srv = Server::start_with(settings(|s| {
        s.uploads.max_sessions = 5;
        s.uploads.max_sessions_per_client = 3;
    }))
    .await;
    let other = srv.api_from("127.0.0.2");
    let mut theirs = Vec::new();
    for _ in 0..3 {
        theirs.push(other.start_upload("flood").await);
    }
    let r = send(other.req(Method::POST, "/v2/flood/blobs/uploads/")).await;
    r.error(429, "TOOMANYREQUESTS");
    assert_eq!(r.h("retry-after"), "10");
    assert_eq!(r.json()["errors"][0]["detail"]["scope"], "client");

    // Another client still gets sessions, up to the total.
    let a = srv.start_upload("mine").await;
    srv.start_upload("mine").await;
    let r = send(srv.req(Method::POST, "/v2/mine/blobs/uploads/")).await;
    r.error(429, "TOOMANYREQUESTS");
    assert_eq!(r.json()["errors"][0]["detail"]["scope"], "registry");
    // Monolithic pushes open no session: never capped.
    srv.push_blob("mine", b"monolithic").await;

    // Finishing or cancelling a session frees its place.
    let data = b"chunk";
    send(
        srv.req(
            Method::PUT,
            &with_query(&a, &format!("digest={}", sha(data))),
        )
        .body(data.to_vec()),
    )
    .await
    .status(201);
    srv.start_upload("mine").await;
    other.delete(&theirs[0]).await.status(204);
    other.start_upload("flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_upload_sessions_close_their_files_and_expire() {
    let srv = Server::start_with(settings(|s| {
        s.uploads.close_idle_after = ms(200);
        s.uploads.max_age = Some(Duration::from_secs(2));
        s.uploads.max_sessions_per_client = 1;
    }))
    .await;
    let store = srv.store();
    let loc = srv.start_upload("idle").await;
    assert_eq!(
        store.uploads.open_files(),
        1,
        "kept open for its first request"
    );
    let data = noise(7, 5000);
    let r = send(
        srv.req(Method::PATCH, &loc)
            .header("content-type", "application/octet-stream")
            .body(data[..3000].to_vec()),
    )
    .await;
    r.status(202);
    assert_eq!(
        store.uploads.open_files(),
        1,
        "kept open for the next chunk"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.uploads.open_files() > 0 {
        assert!(
            Instant::now() < deadline,
            "the idle session's file stayed open"
        );
        tokio::time::sleep(ms(20)).await;
    }
    // Reopened on demand, it goes on where it was.
    let r = send(
        srv.req(
            Method::PUT,
            &with_query(&loc, &format!("digest={}", sha(&data))),
        )
        .header("content-type", "application/octet-stream")
        .body(data[3000..].to_vec()),
    )
    .await;
    r.status(201);

    // A session left alone expires, and its client may start another.
    let loc = srv.start_upload("idle").await;
    send(srv.req(Method::POST, "/v2/idle/blobs/uploads/"))
        .await
        .error(429, "TOOMANYREQUESTS");
    let start = Instant::now();
    loop {
        let r = srv.get(&loc).await;
        if r.status == 404 {
            r.error(404, "BLOB_UPLOAD_UNKNOWN");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "never expired");
        tokio::time::sleep(ms(100)).await;
    }
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    srv.start_upload("idle").await;
}
