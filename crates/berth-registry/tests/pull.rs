//! Pull workflow: the conformance suite's requests, blob and manifest
//! GET/HEAD with their headers, Range requests, and byte-exact manifests of
//! every supported media type.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

const NS: &str = "conformance/primary";
const DUMMY: &str = "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

/// The conformance suite's config blob: tab-indented, 144 bytes in v1.0.1.
fn conformance_config(author: &str) -> Vec<u8> {
    format!(
        "{{\n\t\"author\": \"{author}\",\n\t\"architecture\": \"amd64\",\n\t\"os\": \"linux\",\n\t\"config\": {{}},\n\t\"rootfs\": {{\n\t\t\"type\": \"layers\",\n\t\t\"diff_ids\": []\n\t}}\n}}"
    )
    .into_bytes()
}

/// The v1.0.1 manifest: tab-indented, no top-level `mediaType`.
fn conformance_manifest(config: &[u8], layer: &[u8]) -> Vec<u8> {
    format!(
        "{{\n\t\"schemaVersion\": 2,\n\t\"config\": {{\n\t\t\"mediaType\": \"application/vnd.oci.image.config.v1+json\",\n\t\t\"digest\": \"{}\",\n\t\t\"size\": {}\n\t}},\n\t\"layers\": [\n\t\t{{\n\t\t\t\"mediaType\": \"application/vnd.oci.image.layer.v1.tar+gzip\",\n\t\t\t\"digest\": \"{}\",\n\t\t\t\"size\": {}\n\t\t}}\n\t]\n}}",
        sha(config),
        config.len(),
        sha(layer),
        layer.len()
    )
    .into_bytes()
}

#[test]
fn harness_digests_match_the_conformance_suite() {
    assert_eq!(sha(b"hello world"), DUMMY);
    assert_eq!(
        sha(b"NBA Jam on my NBA toast"),
        "sha256:852411eaf653ebebfa34b688ad1736c9da4decadb8f55b839b550d64eaad3f75"
    );
    assert_eq!(conformance_config("87XiuxOKOYwSOU2G").len(), 144);
}

/// The v1.0.1 Pull workflow, request for request (setup, tests, teardown).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_v1_0_1_pull_workflow() {
    let srv = Server::start().await;
    let config = conformance_config("87XiuxOKOYwSOU2G");
    let layer = noise(7, 168);
    let manifest = conformance_manifest(&config, &layer);
    let (config_d, layer_d, manifest_d) = (sha(&config), sha(&layer), sha(&manifest));

    // Setup: POST (status unchecked), then PUT <Location>?digest= with the body.
    for (data, d) in [(&config, &config_d), (&layer, &layer_d)] {
        let r = send(srv.req(Method::POST, &format!("/v2/{NS}/blobs/uploads/"))).await;
        let loc = r.h("location").to_string();
        let r = send(
            srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}")))
                .header("content-type", "application/octet-stream")
                .body(data.clone()),
        )
        .await;
        r.status(201);
    }
    srv.push_manifest(NS, "tagtest0", OCI_MANIFEST, &manifest)
        .await;
    let tags = srv.tags(NS).await;
    assert_eq!(tags, ["tagtest0"]);
    srv.push_manifest(NS, &tags[0], OCI_MANIFEST, &manifest)
        .await;

    // Pull blobs.
    srv.head(&format!("/v2/{NS}/blobs/{DUMMY}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    let r = srv.head(&format!("/v2/{NS}/blobs/{config_d}")).await;
    r.status(200);
    assert_eq!(r.h("docker-content-digest"), config_d);
    assert_eq!(r.h("content-length"), "144");
    srv.get(&format!("/v2/{NS}/blobs/{DUMMY}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    let r = srv.get(&format!("/v2/{NS}/blobs/{config_d}")).await;
    r.status(200);
    assert_eq!(r.body, config);

    // Pull manifests.
    srv.head(&format!("/v2/{NS}/manifests/.INVALID_MANIFEST_NAME"))
        .await
        .status(404);
    for reference in [manifest_d.as_str(), "tagtest0"] {
        for method in [Method::HEAD, Method::GET] {
            let r = send(
                srv.req(method.clone(), &format!("/v2/{NS}/manifests/{reference}"))
                    .header("accept", OCI_MANIFEST),
            )
            .await;
            r.status(200);
            assert_eq!(r.h("docker-content-digest"), manifest_d);
            assert_eq!(r.h("content-type"), OCI_MANIFEST);
            assert_eq!(r.h("content-length"), manifest.len().to_string());
            if method == Method::GET {
                assert_eq!(r.body, manifest);
            }
        }
    }
    srv.get(&format!("/v2/{NS}/manifests/.INVALID_MANIFEST_NAME"))
        .await
        .error(404, "MANIFEST_UNKNOWN");

    // Error codes: 400 with an OCI error body.
    let r = srv
        .put_manifest(NS, "sha256:totallywrong", OCI_MANIFEST, b"blablabla")
        .await;
    r.status(400);
    let body = r.json();
    let e = &body["errors"][0];
    assert!(SPEC_CODES.contains(&e["code"].as_str().unwrap()), "{body}");
    assert!(e["message"].is_string());

    // Teardown (blobs first, as v1.0.1 does): every DELETE is 202.
    srv.delete(&format!("/v2/{NS}/blobs/{config_d}"))
        .await
        .status(202);
    srv.delete(&format!("/v2/{NS}/blobs/{layer_d}"))
        .await
        .status(202);
    srv.delete(&format!("/v2/{NS}/manifests/{manifest_d}"))
        .await
        .status(202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_get_and_head_headers() {
    let srv = Server::start().await;
    let data = noise(1, 5000);
    let d = srv.push_blob("a/b", &data).await;

    let r = srv.get(&format!("/v2/a/b/blobs/{d}")).await;
    r.status(200);
    assert_eq!(r.body, data);
    assert_eq!(r.h("docker-content-digest"), d);
    assert_eq!(r.h("content-length"), "5000");
    assert_eq!(r.h("content-type"), "application/octet-stream");
    assert_eq!(r.h("accept-ranges"), "bytes");

    let r = srv.head(&format!("/v2/a/b/blobs/{d}")).await;
    r.status(200);
    assert!(r.body.is_empty());
    assert_eq!(r.h("docker-content-digest"), d);
    assert_eq!(
        r.h("content-length"),
        "5000",
        "HEAD must give the real size"
    );
    assert_eq!(r.h("content-type"), "application/octet-stream");

    // Unknown blob, unknown repository, malformed digest.
    let other = sha(b"other");
    srv.get(&format!("/v2/a/b/blobs/{other}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    srv.head(&format!("/v2/a/b/blobs/{other}"))
        .await
        .status(404);
    srv.get(&format!("/v2/nope/blobs/{d}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    srv.get("/v2/a/b/blobs/sha256:abc")
        .await
        .error(400, "DIGEST_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blobs_are_scoped_to_their_repository() {
    let srv = Server::start().await;
    let d = srv.push_blob("one", b"mine").await;
    srv.get(&format!("/v2/one/blobs/{d}")).await.status(200);
    srv.get(&format!("/v2/two/blobs/{d}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    srv.head(&format!("/v2/one/two/blobs/{d}"))
        .await
        .status(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_blob_streams_intact() {
    // Larger than the server's 1 MiB read chunk, so it is served in pieces.
    let srv = Server::start().await;
    let data = noise(99, 3 * 1024 * 1024 + 17);
    let d = srv.push_blob("big", &data).await;
    let r = srv.get(&format!("/v2/big/blobs/{d}")).await;
    r.status(200);
    assert_eq!(r.body.len(), data.len());
    assert!(r.body == data, "content differs");
    let r = send(
        srv.req(Method::GET, &format!("/v2/big/blobs/{d}"))
            .header("range", "bytes=1048570-2097160"),
    )
    .await;
    r.status(206);
    assert_eq!(
        r.h("content-range"),
        format!("bytes 1048570-2097160/{}", data.len())
    );
    assert_eq!(&r.body[..], &data[1048570..=2097160]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blob_range_requests() {
    let srv = Server::start().await;
    let data: Vec<u8> = (0u8..100).collect();
    let d = srv.push_blob("r", &data).await;
    let path = format!("/v2/r/blobs/{d}");
    let ranged =
        |range: &'static str, method: Method| send(srv.req(method, &path).header("range", range));

    for (range, start, end) in [
        ("bytes=0-4", 0usize, 4usize),
        ("bytes=10-19", 10, 19),
        ("bytes=95-", 95, 99),
        ("bytes=-3", 97, 99),
        ("bytes=90-1000", 90, 99),
        ("bytes=99-99", 99, 99),
    ] {
        let r = ranged(range, Method::GET).await;
        r.status(206);
        assert_eq!(r.h("content-range"), format!("bytes {start}-{end}/100"));
        assert_eq!(r.h("content-length"), (end - start + 1).to_string());
        assert_eq!(r.h("docker-content-digest"), d);
        assert_eq!(&r.body[..], &data[start..=end], "{range}");

        let r = ranged(range, Method::HEAD).await;
        r.status(206);
        assert_eq!(r.h("content-range"), format!("bytes {start}-{end}/100"));
        assert_eq!(r.h("content-length"), (end - start + 1).to_string());
    }

    for range in ["bytes=100-", "bytes=100-200", "bytes=-0"] {
        let r = ranged(range, Method::GET).await;
        r.status(416);
        assert_eq!(r.h("content-range"), "bytes */100", "{range}");
        assert_eq!(r.h("docker-content-digest"), d);
    }

    // Ranges a server may ignore: the whole blob.
    for range in ["bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=x-y"] {
        let r = ranged(range, Method::GET).await;
        r.status(200);
        assert_eq!(r.body, data, "{range}");
        assert!(r.header("content-range").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_blob() {
    let srv = Server::start().await;
    let d = srv.push_blob("e", b"").await;
    assert_eq!(
        d,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let r = srv.get(&format!("/v2/e/blobs/{d}")).await;
    r.status(200);
    assert!(r.body.is_empty());
    assert_eq!(r.h("content-length"), "0");
    let r = srv.head(&format!("/v2/e/blobs/{d}")).await;
    r.status(200);
    assert_eq!(r.h("content-length"), "0");
    let r = send(
        srv.req(Method::GET, &format!("/v2/e/blobs/{d}"))
            .header("range", "bytes=0-0"),
    )
    .await;
    r.status(416);
    assert_eq!(r.h("content-range"), "bytes */0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sha512_blob() {
    let srv = Server::start().await;
    let data = b"sha512 content".to_vec();
    let d = berth_oci::Digest::of(berth_oci::Algorithm::Sha512, &data).to_string();
    let r = send(
        srv.req(Method::POST, &format!("/v2/s/blobs/uploads/?digest={d}"))
            .body(data.clone()),
    )
    .await;
    r.status(201);
    assert_eq!(r.h("docker-content-digest"), d);
    let r = srv.get(&format!("/v2/s/blobs/{d}")).await;
    r.status(200);
    assert_eq!(r.body, data);
    assert_eq!(r.h("docker-content-digest"), d);
}

/// Pushes `bytes` with `content_type` under `tag` and checks both GET and
/// HEAD by tag and by digest give the same bytes and headers back.
async fn roundtrip(srv: &Server, repo: &str, tag: &str, content_type: &str, bytes: &[u8]) {
    let d = srv.push_manifest(repo, tag, content_type, bytes).await;
    for reference in [tag, d.as_str()] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let r = srv.get(&path).await;
        r.status(200);
        assert!(
            r.body == bytes,
            "{content_type} came back changed:\n{}\n---\n{}",
            r.text(),
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(r.h("content-type"), content_type);
        assert_eq!(r.h("docker-content-digest"), d);
        assert_eq!(r.h("content-length"), bytes.len().to_string());
        let r = srv.head(&path).await;
        r.status(200);
        assert_eq!(r.h("content-type"), content_type);
        assert_eq!(r.h("docker-content-digest"), d);
        assert_eq!(r.h("content-length"), bytes.len().to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifests_round_trip_byte_exact_with_their_media_type() {
    let srv = Server::start().await;
    let repo = "multi/type";
    let img = srv.push_image(repo, "oci", 1).await;

    // OCI index over the image.
    roundtrip(&srv, repo, "index", OCI_INDEX, &oci_index(&[&img.manifest])).await;

    // Docker schema 2 manifest with Docker media types.
    let dconfig = br#"{"architecture":"arm64","os":"linux"}"#.to_vec();
    let dlayer = noise(5, 200);
    srv.push_blob(repo, &dconfig).await;
    srv.push_blob(repo, &dlayer).await;
    let docker = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &dconfig),
        "layers": [descriptor(DOCKER_LAYER, &dlayer)],
    }))
    .unwrap();
    roundtrip(&srv, repo, "docker", DOCKER_MANIFEST, &docker).await;

    // Docker manifest list over it.
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST,
            "digest": sha(&docker),
            "size": docker.len(),
            "platform": {"architecture": "arm64", "os": "linux"},
        }],
    }))
    .unwrap();
    roundtrip(&srv, repo, "list", DOCKER_LIST, &list).await;

    // Unknown fields, odd key order and whitespace, and the v1.1 suite's
    // `data` and `newUnspecifiedField` in the config descriptor.
    let odd = format!(
        "\n  {{ \"layers\" :[ ],\r\n\t\"x-unknown\": {{\"nested\": [1, 2.50, null, \"\\u00e9\"]}},\n\"config\":{{\"newUnspecifiedField\":\"x\",\"size\" : {},\"digest\":\"{}\", \"data\":\"{}\",\n \"mediaType\":\"{}\"}},   \"schemaVersion\":2,\"mediaType\":\"{}\" }}  \n\n",
        img.config.len(),
        sha(&img.config),
        base64(&img.config),
        OCI_CONFIG,
        OCI_MANIFEST
    );
    roundtrip(&srv, repo, "odd", OCI_MANIFEST, odd.as_bytes()).await;

    // No mediaType field: the Content-Type names the type.
    let bare = format!(
        "{{\"schemaVersion\":2,\"config\":{{\"mediaType\":\"{OCI_CONFIG}\",\"digest\":\"{}\",\"size\":{}}},\"layers\":[]}}",
        sha(&img.config),
        img.config.len()
    );
    roundtrip(&srv, repo, "bare", OCI_MANIFEST, bare.as_bytes()).await;

    // All tags present, lexically ordered.
    assert_eq!(
        srv.tags(repo).await,
        ["bare", "docker", "index", "list", "oci", "odd"]
    );
}

/// Standard base64 with padding, for the descriptor `data` field.
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_helper() {
    assert_eq!(base64(b"{}"), "e30=");
    assert_eq!(base64(b"abc"), "YWJj");
    assert_eq!(base64(b"a"), "YQ==");
}

/// On the wire, HEAD answers carry the real Content-Length and no bytes of
/// body (a client library would hide stray bytes, so this reads the socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn head_sends_no_body_on_the_wire() {
    let srv = Server::start().await;
    let img = srv.push_image("w", "v1", 1).await;
    let blob = sha(&img.layers[1]);
    for (target, len) in [
        ("/v2/w/manifests/v1".to_string(), img.manifest.len()),
        (
            format!("/v2/w/manifests/{}", img.digest),
            img.manifest.len(),
        ),
        (format!("/v2/w/blobs/{blob}"), img.layers[1].len()),
    ] {
        let (status, headers, body) = raw(srv.addr, "HEAD", &target).await;
        assert_eq!(status, 200, "HEAD {target}");
        assert_eq!(
            raw_header(&headers, "content-length"),
            Some(len.to_string().as_str())
        );
        assert!(
            body.is_empty(),
            "HEAD {target} sent {} body bytes",
            body.len()
        );
        let (status, _, body) = raw(srv.addr, "GET", &target).await;
        assert_eq!(status, 200);
        assert!(!body.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_type_parameters_are_ignored() {
    let srv = Server::start().await;
    let img = Image::new(3);
    srv.push_blob("p", &img.config).await;
    for l in &img.layers {
        srv.push_blob("p", l).await;
    }
    let r = srv
        .put_manifest(
            "p",
            "v1",
            &format!("{OCI_MANIFEST}; charset=utf-8"),
            &img.manifest,
        )
        .await;
    r.status(201);
    let r = srv.get("/v2/p/manifests/v1").await;
    r.status(200);
    assert_eq!(r.h("content-type"), OCI_MANIFEST);
    assert_eq!(r.body, img.manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_media_type_from_field_when_content_type_is_generic() {
    let srv = Server::start().await;
    let img = Image::new(4);
    srv.push_blob("g", &img.config).await;
    for l in &img.layers {
        srv.push_blob("g", l).await;
    }
    srv.push_manifest("g", "v1", "application/json", &img.manifest)
        .await;
    let r = srv.get("/v2/g/manifests/v1").await;
    r.status(200);
    assert_eq!(r.h("content-type"), OCI_MANIFEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifests_are_scoped_to_their_repository() {
    let srv = Server::start().await;
    let img = srv.push_image("one", "latest", 1).await;
    srv.get(&format!("/v2/one/manifests/{}", img.digest))
        .await
        .status(200);
    for path in [
        format!("/v2/two/manifests/{}", img.digest),
        "/v2/two/manifests/latest".to_string(),
        "/v2/one/manifests/other".to_string(),
        format!("/v2/one/manifests/{}", sha(b"nothing")),
    ] {
        srv.get(&path).await.error(404, "MANIFEST_UNKNOWN");
        srv.head(&path).await.status(404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retagging_moves_the_tag() {
    let srv = Server::start().await;
    let a = srv.push_image("t", "latest", 1).await;
    let b = srv.push_image("t", "latest", 2).await;
    let r = srv.get("/v2/t/manifests/latest").await;
    r.status(200);
    assert_eq!(r.h("docker-content-digest"), b.digest);
    assert_eq!(r.body, b.manifest);
    // The old manifest is still there by digest.
    let r = srv.get(&format!("/v2/t/manifests/{}", a.digest)).await;
    r.status(200);
    assert_eq!(r.body, a.manifest);
    assert_eq!(srv.tags("t").await, ["latest"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn base_endpoint() {
    let srv = Server::start().await;
    for path in ["/v2/", "/v2"] {
        let r = srv.get(path).await;
        r.status(200);
        assert_eq!(r.json(), json!({}));
        assert_eq!(r.h("content-type"), "application/json");
        srv.head(path).await.status(200);
    }
}
