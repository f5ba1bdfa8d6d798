//! Push workflow: upload sessions (streamed, monolithic, chunked), their
//! status, cross-repository mounts, and manifest uploads, as the conformance
//! suites v1.0.1 and v1.1 and real clients drive them.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::json;

const NS: &str = "conformance/primary";
const XNS: &str = "conformance-b2d6c4f0";
const DUMMY: &str = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

/// Headers every upload-session response (202/204/416) must carry; returns
/// the upload id.
#[track_caller]
fn assert_session(r: &Resp, repo: &str, received: u64) -> String {
    let loc = r.h("location");
    let prefix = format!("/v2/{repo}/blobs/uploads/");
    let id = loc
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("Location {loc:?} is not under {prefix}"));
    assert!(!id.is_empty() && !id.contains('/'), "Location {loc:?}");
    assert_eq!(r.h("docker-upload-uuid"), id);
    assert_eq!(
        r.h("range"),
        format!("0-{}", received.saturating_sub(1)),
        "Range after {received} bytes"
    );
    id.to_string()
}

#[track_caller]
fn assert_blob_created(r: &Resp, repo: &str, digest: &str) {
    r.status(201);
    assert_eq!(r.h("location"), format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(r.h("docker-content-digest"), digest);
    assert_eq!(r.h("content-length"), "0");
    assert!(r.body.is_empty());
}

async fn assert_blob(api: &Api, repo: &str, data: &[u8]) {
    let d = sha(data);
    let r = api.get(&format!("/v2/{repo}/blobs/{d}")).await;
    r.status(200);
    assert!(r.body == data, "blob {d} content differs");
    assert_eq!(r.h("docker-content-digest"), d);
    let r = api.head(&format!("/v2/{repo}/blobs/{d}")).await;
    r.status(200);
    assert_eq!(r.h("content-length"), data.len().to_string());
}

fn octets(rb: reqwest::RequestBuilder, body: &[u8]) -> reqwest::RequestBuilder {
    rb.header("content-type", "application/octet-stream")
        .body(body.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_starts_a_session() {
    let srv = Server::start().await;
    for path in ["/v2/a/blobs/uploads/", "/v2/a/blobs/uploads"] {
        let r = send(srv.req(Method::POST, path).header("content-length", "0")).await;
        r.status(202);
        assert_session(&r, "a", 0);
        assert_eq!(r.h("content-length"), "0");
    }
}

/// v1.0.1 "Blob Upload Streamed": PATCH without Content-Range, then PUT
/// whose Content-Length header promises 23 bytes but no body is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_streamed_upload() {
    let srv = Server::start().await;
    let blob_a = b"NBA Jam on my NBA toast";
    let d = sha(blob_a);

    let r = send(srv.req(Method::POST, &format!("/v2/{NS}/blobs/uploads/"))).await;
    let loc = r.h("location").to_string();
    let r = send(octets(srv.req(Method::PATCH, &loc), blob_a)).await;
    r.status(202);
    assert_session(&r, NS, 23);
    let loc = r.h("location").to_string();

    let r = send(
        srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .header("content-type", "application/octet-stream"),
    )
    .await;
    assert_blob_created(&r, NS, &d);
    assert_blob(&srv, NS, blob_a).await;
}

/// v1.0.1 "Blob Upload Monolithic".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_monolithic_upload() {
    let srv = Server::start().await;
    let config = noise(11, 144);
    let layer = noise(12, 168);
    let (cd, ld) = (sha(&config), sha(&layer));

    srv.get(&format!("/v2/{NS}/blobs/{DUMMY}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    // POST with digest and body: berth stores it (201), so GET is 200.
    let r = send(octets(
        srv.req(
            Method::POST,
            &format!("/v2/{NS}/blobs/uploads/?digest={cd}"),
        ),
        &config,
    ))
    .await;
    assert_blob_created(&r, NS, &cd);
    srv.get(&format!("/v2/{NS}/blobs/{cd}")).await.status(200);

    // POST for a session, then a single PUT with the whole body.
    let loc = srv.start_upload(NS).await;
    let r = send(octets(
        srv.req(Method::PUT, &with_query(&loc, &format!("digest={cd}"))),
        &config,
    ))
    .await;
    assert_blob_created(&r, NS, &cd);
    srv.get(&format!("/v2/{NS}/blobs/{cd}")).await.status(200);

    let loc = srv.start_upload(NS).await;
    let r = send(octets(
        srv.req(Method::PUT, &with_query(&loc, &format!("digest={ld}"))),
        &layer,
    ))
    .await;
    assert_blob_created(&r, NS, &ld);
    assert_blob(&srv, NS, &layer).await;
    assert_blob(&srv, NS, &config).await;
}

/// v1.0.1 "Blob Upload Chunked": out-of-order chunk, first chunk, and a
/// closing PUT that carries the final chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_v1_0_1_chunked_upload() {
    let srv = Server::start().await;
    let blob_b = b"Hello, how are you today?";
    let d = sha(blob_b);
    assert_eq!(
        d,
        "sha256:6e766a49e512e0ba0bc935e2aacd3e5a4a34add17f83afc4c9e669c70241cd48"
    );
    let (chunk1, chunk2) = blob_b.split_at(3);

    let r = send(
        srv.req(Method::POST, &format!("/v2/{NS}/blobs/uploads/"))
            .header("content-length", "0"),
    )
    .await;
    let loc = r.h("location").to_string();
    let r =
        send(octets(srv.req(Method::PATCH, &loc), chunk2).header("content-range", "3-24")).await;
    r.error(416, "RANGE_INVALID");
    // The 416 tells the client where the session really is.
    assert_session(&r, NS, 0);

    let loc = srv.start_upload(NS).await;
    let r = send(octets(srv.req(Method::PATCH, &loc), chunk1).header("content-range", "0-2")).await;
    r.status(202);
    assert_session(&r, NS, 3);
    let loc = r.h("location").to_string();

    let r = send(
        octets(
            srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))),
            chunk2,
        )
        .header("content-range", "3-24"),
    )
    .await;
    assert_blob_created(&r, NS, &d);
    assert_blob(&srv, NS, blob_b).await;
}

/// v1.1 "Blob Upload Chunked": Range checks, stale-location retry (416),
/// GET status (204 + Range + Location), and a closing PUT with no body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_v1_1_chunked_upload() {
    let srv = Server::start().await;
    let blob = noise(42, 42);
    let d = sha(&blob);
    let (chunk1, chunk2) = blob.split_at(22);

    let r = send(
        srv.req(Method::POST, &format!("/v2/{NS}/blobs/uploads/"))
            .header("content-length", "0"),
    )
    .await;
    r.status(202);
    let post_loc = r.h("location").to_string();
    // berth has no minimum chunk size.
    assert!(r.header("oci-chunk-min-length").is_none());

    let r = send(octets(srv.req(Method::PATCH, &post_loc), chunk1).header("content-range", "0-21"))
        .await;
    r.status(202);
    assert_eq!(r.h("range"), "0-21");
    assert_session(&r, NS, 22);

    // Retrying the same chunk at the original Location is out of order.
    let r = send(octets(srv.req(Method::PATCH, &post_loc), chunk1).header("content-range", "0-21"))
        .await;
    r.error(416, "RANGE_INVALID");
    assert_eq!(r.h("range"), "0-21");

    // The stale Location still answers the status.
    let r = srv.get(&post_loc).await;
    r.status(204);
    assert!(r.body.is_empty());
    assert_eq!(r.h("range"), "0-21");
    assert_session(&r, NS, 22);
    let loc = r.h("location").to_string();

    let r =
        send(octets(srv.req(Method::PATCH, &loc), chunk2).header("content-range", "22-41")).await;
    r.status(202);
    assert_eq!(r.h("range"), "0-41");
    let loc = r.h("location").to_string();

    let r = send(
        srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
            .header("content-length", "0"),
    )
    .await;
    assert_blob_created(&r, NS, &d);
    assert_blob(&srv, NS, &blob).await;

    // The finished session is gone.
    srv.get(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_of_a_fresh_session() {
    let srv = Server::start().await;
    let loc = srv.start_upload("s").await;
    let r = srv.get(&loc).await;
    r.status(204);
    assert_session(&r, "s", 0);
    assert_eq!(r.h("range"), "0-0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_chunks_with_and_without_content_range() {
    let srv = Server::start().await;
    let blob = noise(3, 10_000);
    let mut loc = srv.start_upload("c").await;
    let mut offset = 0usize;
    for (i, chunk) in blob.chunks(1234).enumerate() {
        let mut rb = octets(srv.req(Method::PATCH, &loc), chunk);
        if i % 2 == 0 {
            rb = rb.header(
                "content-range",
                format!("{}-{}", offset, offset + chunk.len() - 1),
            );
        }
        let r = send(rb).await;
        r.status(202);
        offset += chunk.len();
        assert_session(&r, "c", offset as u64);
        loc = r.h("location").to_string();
    }
    let r = send(srv.req(
        Method::PUT,
        &with_query(&loc, &format!("digest={}", sha(&blob))),
    ))
    .await;
    assert_blob_created(&r, "c", &sha(&blob));
    assert_blob(&srv, "c", &blob).await;
}

/// Docker's blob writer: one PATCH with a chunked (unknown-length) body, no
/// Content-Range, then a PUT with no body. It parses Range with `%d-%d`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_style_chunked_transfer_patch() {
    let srv = Server::start().await;
    let blob = noise(8, 200_000);
    let loc = srv.start_upload("library/docker").await;
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        blob.chunks(7000).map(|c| Ok(c.to_vec())).collect();
    let r = send(
        srv.req(Method::PATCH, &loc)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            ))),
    )
    .await;
    r.status(202);
    assert_eq!(r.h("range"), "0-199999");
    assert_session(&r, "library/docker", 200_000);
    let d = sha(&blob);
    let r = send(srv.req(
        Method::PUT,
        &with_query(r.h("location"), &format!("digest={d}")),
    ))
    .await;
    assert_blob_created(&r, "library/docker", &d);
    assert_blob(&srv, "library/docker", &blob).await;
}

/// containerd: POST, then a single PUT with the whole blob; the digest
/// query is URL-encoded by some clients and not by others.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_put_with_encoded_and_plain_digest() {
    let srv = Server::start().await;
    for (i, encode) in [false, true].into_iter().enumerate() {
        let blob = noise(20 + i as u64, 777);
        let d = sha(&blob);
        let q = if encode {
            format!("digest={}", d.replace(':', "%3A"))
        } else {
            format!("digest={d}")
        };
        let loc = srv.start_upload("ctr").await;
        let r = send(octets(srv.req(Method::PUT, &with_query(&loc, &q)), &blob)).await;
        assert_blob_created(&r, "ctr", &d);
        assert_blob(&srv, "ctr", &blob).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn monolithic_post_with_wrong_digest_stores_nothing() {
    let srv = Server::start().await;
    let data = b"the real content";
    let claimed = sha(b"something else");
    let r = send(octets(
        srv.req(
            Method::POST,
            &format!("/v2/m/blobs/uploads/?digest={claimed}"),
        ),
        data,
    ))
    .await;
    r.error(400, "DIGEST_INVALID");
    for d in [claimed, sha(data)] {
        srv.get(&format!("/v2/m/blobs/{d}"))
            .await
            .error(404, "BLOB_UNKNOWN");
    }
    assert_eq!(srv.store().blobs.list().unwrap(), vec![]);
}

/// A PUT with the wrong digest stores nothing; the session stays open and
/// can still be finished with the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finishing_with_wrong_digest_stores_nothing() {
    let srv = Server::start().await;
    let data = noise(5, 100);
    let wrong = sha(b"not it");
    let loc = srv.start_upload("w").await;
    let r = send(octets(srv.req(Method::PATCH, &loc), &data)).await;
    r.status(202);
    let loc = r.h("location").to_string();

    let r = send(srv.req(Method::PUT, &with_query(&loc, &format!("digest={wrong}")))).await;
    r.error(400, "DIGEST_INVALID");
    for d in [&wrong, &sha(&data)] {
        srv.get(&format!("/v2/w/blobs/{d}"))
            .await
            .error(404, "BLOB_UNKNOWN");
    }
    assert_eq!(srv.store().blobs.list().unwrap(), vec![]);

    let r = srv.get(&loc).await;
    r.status(204);
    assert_eq!(r.h("range"), "0-99");
    let r = send(srv.req(
        Method::PUT,
        &with_query(&loc, &format!("digest={}", sha(&data))),
    ))
    .await;
    assert_blob_created(&r, "w", &sha(&data));
    assert_blob(&srv, "w", &data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finishing_requires_a_valid_digest() {
    let srv = Server::start().await;
    let loc = srv.start_upload("d").await;
    send(octets(srv.req(Method::PUT, &loc), b"data"))
        .await
        .error(400, "DIGEST_INVALID");
    send(octets(
        srv.req(Method::PUT, &with_query(&loc, "digest=sha256:1234")),
        b"data",
    ))
    .await
    .error(400, "DIGEST_INVALID");
    send(srv.req(Method::PUT, &with_query(&loc, "digest=md5:abcd")))
        .await
        .error(400, "DIGEST_INVALID");
    send(srv.req(Method::PUT, &with_query(&loc, "digest=")))
        .await
        .error(400, "DIGEST_INVALID");
    // The session survives these refusals.
    let r = srv.get(&loc).await;
    r.status(204);
    // Bodies sent with a refused digest are not appended.
    assert_eq!(r.h("range"), "0-0");
    let d = sha(b"data");
    let r = send(octets(
        srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))),
        b"data",
    ))
    .await;
    assert_blob_created(&r, "d", &d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_and_cancelled_sessions_are_gone() {
    let srv = Server::start().await;
    let d = sha(b"x");
    let loc = srv.start_upload("f").await;
    let r = send(octets(
        srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))),
        b"x",
    ))
    .await;
    r.status(201);
    srv.get(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    send(octets(srv.req(Method::PATCH, &loc), b"y"))
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");
    send(srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))))
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");

    let loc = srv.start_upload("f").await;
    send(octets(srv.req(Method::PATCH, &loc), b"partial"))
        .await
        .status(202);
    let r = srv.delete(&loc).await;
    r.status(204);
    assert!(r.body.is_empty());
    srv.get(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    send(octets(srv.req(Method::PATCH, &loc), b"y"))
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");
    srv.delete(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    // Its data is gone from the ingest area.
    assert_eq!(
        std::fs::read_dir(srv.root().join("ingest/uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_belongs_to_its_repository() {
    let srv = Server::start().await;
    let loc = srv.start_upload("mine").await;
    let id = loc.rsplit('/').next().unwrap();
    let other = format!("/v2/theirs/blobs/uploads/{id}");
    srv.get(&other).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    send(octets(srv.req(Method::PATCH, &other), b"x"))
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");
    send(srv.req(Method::PUT, &format!("{other}?digest={}", sha(b""))))
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");
    srv.delete(&other).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    srv.get(&loc).await.status(204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_range_checks() {
    let srv = Server::start().await;
    let loc = srv.start_upload("cr").await;
    // Content-Length disagreeing with the Content-Range.
    send(octets(srv.req(Method::PATCH, &loc), b"12345").header("content-range", "0-9"))
        .await
        .error(400, "SIZE_INVALID");
    // Malformed ranges.
    for bad in ["abc", "5-2", "0-", "-4", "bytes=0-4"] {
        let r =
            send(octets(srv.req(Method::PATCH, &loc), b"12345").header("content-range", bad)).await;
        r.status(416);
    }
    // `bytes ` prefix and `/total` are tolerated.
    let r =
        send(octets(srv.req(Method::PATCH, &loc), b"12345").header("content-range", "bytes 0-4/*"))
            .await;
    r.status(202);
    assert_eq!(r.h("range"), "0-4");
    // A gap is out of order too.
    let r =
        send(octets(srv.req(Method::PATCH, &loc), b"67890").header("content-range", "6-10")).await;
    r.error(416, "RANGE_INVALID");
    assert_eq!(r.h("range"), "0-4");
    assert_eq!(r.h("location"), loc);
    // A closing PUT whose chunk is out of order is refused the same way.
    let d = sha(b"1234567890");
    let r = send(
        octets(
            srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))),
            b"67890",
        )
        .header("content-range", "4-8"),
    )
    .await;
    r.error(416, "RANGE_INVALID");
    let r = send(
        octets(
            srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))),
            b"67890",
        )
        .header("content-range", "5-9"),
    )
    .await;
    assert_blob_created(&r, "cr", &d);
    assert_blob(&srv, "cr", b"1234567890").await;
}

/// A PATCH whose connection breaks mid-body keeps what arrived; the client
/// asks for the status and resumes from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_patch_is_resumable() {
    use tokio::io::AsyncWriteExt;
    let srv = Server::start().await;
    let blob = noise(77, 4000);
    let loc = srv.start_upload("resume").await;

    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: 4000\r\n\r\n",
        srv.addr
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&blob[..1500]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);

    // The server notices the broken body and keeps the 1500 bytes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = srv.get(&loc).await;
        r.status(204);
        if r.h("range") == "0-1499" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Range stayed {}",
            r.h("range")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = send(
        octets(srv.req(Method::PATCH, &loc), &blob[1500..]).header("content-range", "1500-3999"),
    )
    .await;
    r.status(202);
    assert_eq!(r.h("range"), "0-3999");
    let d = sha(&blob);
    let r = send(srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}")))).await;
    assert_blob_created(&r, "resume", &d);
    assert_blob(&srv, "resume", &blob).await;
}

/// v1.0.1 and v1.1 "Cross-Repository Blob Mount", into a repository that
/// does not exist yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cross_repository_mount() {
    let srv = Server::start().await;
    let blob_a = b"NBA Jam on my NBA toast";
    let d = srv.push_blob(NS, blob_a).await;

    // Encoded (resty, containers/image) and plain (containerd) queries.
    for (i, query) in [
        format!(
            "mount={}&from={}",
            d.replace(':', "%3A"),
            NS.replace('/', "%2F")
        ),
        format!("from={NS}&mount={d}"),
    ]
    .into_iter()
    .enumerate()
    {
        let xns = format!("{XNS}{i}");
        let r = send(srv.req(Method::POST, &format!("/v2/{xns}/blobs/uploads/?{query}"))).await;
        assert_blob_created(&r, &xns, &d);
        assert!(r.h("location").contains(&xns));
        let r = srv.get(r.h("location")).await;
        r.status(200);
        assert_eq!(&r.body[..], blob_a);
        assert_blob(&srv, &xns, blob_a).await;
    }
    // The new repository shows up in the catalog.
    let r = srv.get("/v2/_catalog").await;
    r.status(200);
    assert_eq!(
        r.json()["repositories"],
        json!([format!("{XNS}0"), format!("{XNS}1"), NS])
    );
}

/// v1.1 "Cross-mounting of a blob without the from argument should yield
/// session id", and mounts that cannot be done: all fall back to a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmountable_blobs_yield_a_session() {
    let srv = Server::start().await;
    let d = srv.push_blob(NS, b"source").await;
    let elsewhere = srv.push_blob("elsewhere", b"not in ns").await;

    for query in [
        format!("mount={d}"),
        format!("mount={d}&from="),
        format!("mount={DUMMY}&from={NS}"),
        format!("mount={elsewhere}&from={NS}"),
        format!("mount={d}&from=never/pushed"),
    ] {
        let r = send(srv.req(Method::POST, &format!("/v2/{XNS}/blobs/uploads/?{query}"))).await;
        r.status(202);
        assert_session(&r, XNS, 0);
        assert!(
            r.h("location")
                .starts_with(&format!("/v2/{XNS}/blobs/uploads/")),
            "{query}"
        );
    }
    // Nothing was mounted.
    for digest in [&d, &elsewhere] {
        srv.get(&format!("/v2/{XNS}/blobs/{digest}"))
            .await
            .error(404, "BLOB_UNKNOWN");
    }

    // The fallback session is an ordinary one.
    let r = send(srv.req(
        Method::POST,
        &format!("/v2/{XNS}/blobs/uploads/?mount={DUMMY}&from={NS}"),
    ))
    .await;
    let r = send(octets(
        srv.req(
            Method::PUT,
            &with_query(r.h("location"), &format!("digest={DUMMY}")),
        ),
        b"hello world",
    ))
    .await;
    assert_blob_created(&r, XNS, DUMMY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mount_with_invalid_arguments() {
    let srv = Server::start().await;
    let d = srv.push_blob("src", b"x").await;
    send(srv.req(
        Method::POST,
        &format!("/v2/dst/blobs/uploads/?mount={d}&from=Bad//Name"),
    ))
    .await
    .error(400, "NAME_INVALID");
    send(srv.req(
        Method::POST,
        "/v2/dst/blobs/uploads/?mount=sha256:nothex&from=src",
    ))
    .await
    .error(400, "DIGEST_INVALID");
    send(srv.req(Method::POST, "/v2/dst/blobs/uploads/?digest=nonsense"))
        .await
        .error(400, "DIGEST_INVALID");
}

/// v1.0.1 "Manifest Upload", including the empty-layer manifest, and the
/// push teardown that deletes blobs still referenced by a manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_manifest_upload() {
    let srv = Server::start().await;
    let config = noise(31, 144);
    let layer = noise(32, 168);
    srv.push_blob(NS, &config).await;
    srv.push_blob(NS, &layer).await;
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    }))
    .unwrap();
    let empty_layer = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [],
    }))
    .unwrap();
    let md = sha(&manifest);

    srv.get(&format!("/v2/{NS}/manifests/.INVALID_MANIFEST_NAME"))
        .await
        .error(404, "MANIFEST_UNKNOWN");
    for i in 0..4 {
        let r = srv
            .put_manifest(NS, &format!("test{i}"), OCI_MANIFEST, &manifest)
            .await;
        r.status(201);
        assert_eq!(r.h("location"), format!("/v2/{NS}/manifests/{md}"));
        assert_eq!(r.h("docker-content-digest"), md);
        assert_eq!(r.h("content-length"), "0");
        assert!(r.header("oci-subject").is_none());
    }
    srv.push_manifest(NS, "emptylayer", OCI_MANIFEST, &empty_layer)
        .await;
    let r = send(
        srv.req(Method::GET, &format!("/v2/{NS}/manifests/{md}"))
            .header("accept", OCI_MANIFEST),
    )
    .await;
    r.status(200);
    assert_eq!(r.body, manifest);

    // Teardown: blobs first, though manifests still reference them.
    srv.delete(&format!("/v2/{NS}/blobs/{}", sha(&config)))
        .await
        .status(202);
    srv.delete(&format!("/v2/{NS}/blobs/{}", sha(&layer)))
        .await
        .status(202);
    srv.delete(&format!("/v2/{NS}/manifests/{md}"))
        .await
        .status(202);
    assert_eq!(srv.tags(NS).await, ["emptylayer"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_put_by_digest() {
    let srv = Server::start().await;
    let img = Image::new(9);
    srv.push_blob("bd", &img.config).await;
    for l in &img.layers {
        srv.push_blob("bd", l).await;
    }
    // Wrong digest: refused, nothing stored.
    let wrong = sha(b"another manifest");
    srv.put_manifest("bd", &wrong, OCI_MANIFEST, &img.manifest)
        .await
        .error(400, "DIGEST_INVALID");
    for d in [&wrong, &img.digest] {
        srv.get(&format!("/v2/bd/manifests/{d}"))
            .await
            .error(404, "MANIFEST_UNKNOWN");
    }
    // Right digest: stored untagged.
    srv.push_manifest("bd", &img.digest, OCI_MANIFEST, &img.manifest)
        .await;
    let r = srv.get(&format!("/v2/bd/manifests/{}", img.digest)).await;
    r.status(200);
    assert_eq!(r.body, img.manifest);
    assert_eq!(srv.tags("bd").await, Vec::<String>::new());
    // Pushing the same manifest again is fine.
    srv.push_manifest("bd", &img.digest, OCI_MANIFEST, &img.manifest)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_schema2_push() {
    let srv = Server::start().await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = noise(50, 2048);
    srv.push_blob("library/app", config).await;
    srv.push_blob("library/app", &layer).await;
    let manifest = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER, &layer)],
    }))
    .unwrap();
    let d = srv
        .push_manifest("library/app", "1.0", DOCKER_MANIFEST, &manifest)
        .await;
    // What the Docker engine and containerd do to resolve a tag.
    let r = send(
        srv.req(Method::HEAD, "/v2/library/app/manifests/1.0")
            .header(
                "accept",
                format!("{DOCKER_MANIFEST}, {DOCKER_LIST}, {OCI_MANIFEST}, {OCI_INDEX}, */*"),
            ),
    )
    .await;
    r.status(200);
    assert_eq!(r.h("docker-content-digest"), d);
    assert_eq!(r.h("content-type"), DOCKER_MANIFEST);
    assert_eq!(r.h("content-length"), manifest.len().to_string());
}

/// Non-distributable layers need not be in the repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_distributable_layers_are_not_required() {
    let srv = Server::start().await;
    let config = b"{}";
    srv.push_blob("win", config).await;
    let foreign = noise(60, 10);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "digest": sha(&foreign),
            "size": 10,
            "urls": ["https://example.invalid/layer"],
        }],
    }))
    .unwrap();
    srv.push_manifest("win", "ltsc", OCI_MANIFEST, &manifest)
        .await;
}

/// Refusals of big chunks reach the client as the error, not as a reset
/// connection (the server reads the refused body before answering).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_big_chunks_get_their_error() {
    let srv = Server::start().await;
    let big = noise(9, 8 << 20);
    let loc = srv.start_upload("big").await;
    for _ in 0..3 {
        let r =
            send(octets(srv.req(Method::PATCH, &loc), &big).header("content-range", "5-8388612"))
                .await;
        r.error(416, "RANGE_INVALID");
        send(octets(
            srv.req(
                Method::PATCH,
                "/v2/big/blobs/uploads/8a2b1b3e-3c14-4f39-9d0c-6f1c6f6d2f0e",
            ),
            &big,
        ))
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");
        send(octets(srv.req(Method::PUT, &loc), &big))
            .await
            .error(400, "DIGEST_INVALID");
    }
    let r = srv.get(&loc).await;
    r.status(204);
    assert_eq!(r.h("range"), "0-0");
}
