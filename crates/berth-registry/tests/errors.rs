//! Error responses: every refusal has the right status and OCI error code,
//! and no request, however odd, gets a 5xx.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_manifest_reference_is_unknown() {
    let srv = Server::start().await;
    srv.push_image("conformance/primary", "v1", 1).await;
    for path in [
        "/v2/conformance/primary/manifests/.INVALID_MANIFEST_NAME",
        "/v2/conformance/primary/manifests/sha256:totallywrong",
        "/v2/never/manifests/.INVALID_MANIFEST_NAME",
    ] {
        srv.head(path).await.status(404);
        srv.get(path).await.error(404, "MANIFEST_UNKNOWN");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_digest_on_manifest_put() {
    let srv = Server::start().await;
    let r = srv
        .put_manifest("a", "sha256:totallywrong", OCI_MANIFEST, b"blablabla")
        .await;
    r.error(400, "DIGEST_INVALID");
    assert!(r.h("content-type").starts_with("application/json"));
    // Nothing was created.
    srv.get("/v2/a/tags/list").await.error(404, "NAME_UNKNOWN");
}

/// Names outside the grammar: 400 NAME_INVALID on every endpoint. Sent raw
/// so that `..` and `.` segments reach the server unnormalised.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_repository_names() {
    let srv = Server::start().await;
    let d = sha(b"x");
    let names = [
        "UPPER", "a//b", "../x", "a/./b", "a/../b", "a/", "-a", "a-", "a___b", "a%2Fb", "%41",
        "a.-b",
    ];
    for name in names {
        for (method, suffix) in [
            ("GET", "/tags/list".to_string()),
            ("GET", "/manifests/latest".to_string()),
            ("HEAD", format!("/manifests/{d}")),
            ("PUT", "/manifests/latest".to_string()),
            ("DELETE", "/manifests/latest".to_string()),
            ("GET", format!("/blobs/{d}")),
            ("DELETE", format!("/blobs/{d}")),
            ("POST", "/blobs/uploads/".to_string()),
            (
                "GET",
                "/blobs/uploads/8a2b1b3e-3c14-4f39-9d0c-6f1c6f6d2f0e".to_string(),
            ),
            (
                "PATCH",
                "/blobs/uploads/8a2b1b3e-3c14-4f39-9d0c-6f1c6f6d2f0e".to_string(),
            ),
            ("GET", format!("/referrers/{d}")),
        ] {
            let target = format!("/v2/{name}{suffix}");
            let (status, headers, body) = raw(srv.addr, method, &target).await;
            assert_eq!(status, 400, "{method} {target}: {body}");
            assert_eq!(
                raw_header(&headers, "docker-distribution-api-version"),
                Some("registry/2.0")
            );
            if method != "HEAD" {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["errors"][0]["code"], "NAME_INVALID", "{method} {target}");
            }
        }
    }
    // Over 255 characters.
    let long = "a".repeat(256);
    srv.get(&format!("/v2/{long}/tags/list"))
        .await
        .error(400, "NAME_INVALID");
    // Nothing got created by any of this.
    let r = srv.get("/v2/_catalog").await;
    assert_eq!(r.json(), json!({ "repositories": [] }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_tags_on_put() {
    let srv = Server::start().await;
    let img = Image::new(1);
    srv.push_blob("t", &img.config).await;
    for l in &img.layers {
        srv.push_blob("t", l).await;
    }
    let long = "a".repeat(129);
    for tag in ["-bad", ".bad", "bad!tag", "b%40d", long.as_str()] {
        srv.put_manifest("t", tag, OCI_MANIFEST, &img.manifest)
            .await
            .error(400, "TAG_INVALID");
    }
    // 128 characters is the limit, and fine.
    let max = "a".repeat(128);
    srv.push_manifest("t", &max, OCI_MANIFEST, &img.manifest)
        .await;
    assert_eq!(srv.tags("t").await, [max]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_upload_sessions() {
    let srv = Server::start().await;
    srv.push_blob("u", b"x").await;
    for id in [
        "8a2b1b3e-3c14-4f39-9d0c-6f1c6f6d2f0e",
        "not-a-uuid",
        "8A2B1B3E-3C14-4F39-9D0C-6F1C6F6D2F0E",
        "x%2Fy",
    ] {
        let loc = format!("/v2/u/blobs/uploads/{id}");
        srv.get(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
        send(srv.req(Method::PATCH, &loc).body("data"))
            .await
            .error(404, "BLOB_UPLOAD_UNKNOWN");
        send(
            srv.req(Method::PUT, &format!("{loc}?digest={}", sha(b"data")))
                .body("data"),
        )
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");
        srv.delete(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    }
    // Nothing leaked into the store.
    assert_eq!(srv.store().blobs.list().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_validation() {
    let srv = Server::start().await;
    let repo = "val";
    let img = Image::new(2);
    srv.push_blob(repo, &img.config).await;
    srv.push_blob(repo, &img.layers[0]).await;
    // layers[1] is missing.

    let put = |ct: &'static str, body: Vec<u8>| {
        let api = srv.api();
        async move { api.put_manifest(repo, "v1", ct, &body).await }
    };
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
        f(&mut m);
        serde_json::to_vec(&m).unwrap()
    };

    // A missing layer and a missing config.
    let r = put(OCI_MANIFEST, img.manifest.clone()).await;
    r.error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        r.json()["errors"][0]["detail"]["digest"],
        sha(&img.layers[1])
    );
    let missing_config = with(&|m| {
        m["config"] = descriptor(OCI_CONFIG, b"no such config");
        m["layers"] = json!([descriptor(OCI_LAYER, &img.layers[0])]);
    });
    put(OCI_MANIFEST, missing_config)
        .await
        .error(400, "MANIFEST_BLOB_UNKNOWN");

    srv.push_blob(repo, &img.layers[1]).await;
    // Wrong descriptor size.
    let wrong_size = with(&|m| m["layers"][0]["size"] = json!(img.layers[0].len() + 1));
    put(OCI_MANIFEST, wrong_size)
        .await
        .error(400, "MANIFEST_INVALID");
    // Content-Type contradicting the mediaType field.
    for ct in [OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST] {
        put(ct, img.manifest.clone())
            .await
            .error(400, "MANIFEST_INVALID");
    }
    // Schema 1, by Content-Type or by content.
    let schema1 = br#"{"schemaVersion":1,"name":"val","tag":"v1","architecture":"amd64","fsLayers":[],"history":[]}"#.to_vec();
    for ct in [
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/json",
    ] {
        put(ct, schema1.clone())
            .await
            .error(400, "MANIFEST_INVALID");
    }
    put(
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        img.manifest.clone(),
    )
    .await
    .error(400, "MANIFEST_INVALID");
    // Not JSON, wrong shapes, unknown types.
    let bad_bodies: Vec<(&'static str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"blablabla".to_vec()),
        (OCI_MANIFEST, b"".to_vec()),
        (OCI_MANIFEST, b"[]".to_vec()),
        (OCI_MANIFEST, with(&|m| m["schemaVersion"] = json!(3))),
        (
            OCI_MANIFEST,
            with(&|m| {
                m.as_object_mut().unwrap().remove("schemaVersion");
            }),
        ),
        (
            OCI_MANIFEST,
            with(&|m| {
                m.as_object_mut().unwrap().remove("config");
            }),
        ),
        (
            OCI_MANIFEST,
            with(&|m| {
                m.as_object_mut().unwrap().remove("layers");
            }),
        ),
        (
            OCI_MANIFEST,
            with(&|m| m["layers"][0]["digest"] = json!("sha256:zz")),
        ),
        (OCI_MANIFEST, with(&|m| m["layers"][0]["size"] = json!(-1))),
        (
            OCI_INDEX,
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#
                .to_vec(),
        ),
        (
            "text/plain",
            with(&|m| {
                m.as_object_mut().unwrap().remove("mediaType");
            }),
        ),
        (
            "application/json",
            with(&|m| m["mediaType"] = json!("application/vnd.example.unknown")),
        ),
    ];
    for (ct, body) in bad_bodies {
        let r = put(ct, body.clone()).await;
        r.error(400, "MANIFEST_INVALID");
    }
    // None of this created a tag; the valid manifest still goes in.
    assert_eq!(srv.tags(repo).await, Vec::<String>::new());
    srv.push_manifest(repo, "v1", OCI_MANIFEST, &img.manifest)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_blobs_must_be_in_the_same_repository() {
    let srv = Server::start().await;
    let img = srv.push_image("here", "v1", 1).await;
    srv.put_manifest("there", "v1", OCI_MANIFEST, &img.manifest)
        .await
        .error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn index_children_must_exist_unless_sparse() {
    let present = Image::new(1);
    let absent = Image::new(2);
    let index = oci_index(&[&present.manifest, &absent.manifest]);
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [descriptor(DOCKER_MANIFEST, &absent.manifest)],
    }))
    .unwrap();

    let srv = Server::start().await;
    srv.push_image("i", "v1", 1).await;
    let r = srv.put_manifest("i", "all", OCI_INDEX, &index).await;
    r.error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(r.json()["errors"][0]["detail"]["digest"], absent.digest);
    srv.put_manifest("i", "list", DOCKER_LIST, &list)
        .await
        .error(400, "MANIFEST_BLOB_UNKNOWN");
    // Once the child is there, the index goes in.
    srv.push_image("i", "v2", 2).await;
    srv.push_manifest("i", "all", OCI_INDEX, &index).await;

    let srv = Server::start_with(settings(|s| s.allow_sparse_index = true)).await;
    srv.push_manifest("i", "all", OCI_INDEX, &index).await;
    srv.push_manifest("i", "list", DOCKER_LIST, &list).await;
    let r = srv.get("/v2/i/manifests/all").await;
    r.status(200);
    assert_eq!(r.body, index);
    // Image manifests still need their blobs even then.
    srv.put_manifest("i", "img", OCI_MANIFEST, &absent.manifest)
        .await
        .error(400, "MANIFEST_BLOB_UNKNOWN");
}

/// An OCI manifest padded (in an annotation) to exactly `len` bytes.
fn manifest_of_size(img: &Image, len: usize) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&img.manifest).unwrap();
    m["annotations"] = json!({ "pad": "" });
    let base = serde_json::to_vec(&m).unwrap().len();
    m["annotations"]["pad"] = json!("x".repeat(len - base));
    let bytes = serde_json::to_vec(&m).unwrap();
    assert_eq!(bytes.len(), len);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manifest_size_limit() {
    const LIMIT: usize = 4 << 20;
    let srv = Server::start().await;
    let img = Image::new(1);
    srv.push_blob("big", &img.config).await;
    for l in &img.layers {
        srv.push_blob("big", l).await;
    }
    // Exactly 4 MiB is accepted and served back.
    let at_limit = manifest_of_size(&img, LIMIT);
    srv.push_manifest("big", "max", OCI_MANIFEST, &at_limit)
        .await;
    let r = srv.get("/v2/big/manifests/max").await;
    r.status(200);
    assert!(r.body == at_limit);

    // One byte more: 413, with Content-Length and when streamed.
    let over = manifest_of_size(&img, LIMIT + 1);
    srv.put_manifest("big", "over", OCI_MANIFEST, &over)
        .await
        .error(413, "SIZE_INVALID");
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        over.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let r = send(
        srv.req(Method::PUT, "/v2/big/manifests/over")
            .header("content-type", OCI_MANIFEST)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                parts,
            ))),
    )
    .await;
    r.error(413, "SIZE_INVALID");
    srv.get("/v2/big/manifests/over")
        .await
        .error(404, "MANIFEST_UNKNOWN");

    // A lower configured limit applies too.
    let srv = Server::start_with(settings(|s| s.max_manifest_bytes = 1000)).await;
    srv.push_blob("small", &img.config).await;
    for l in &img.layers {
        srv.push_blob("small", l).await;
    }
    srv.push_manifest("small", "ok", OCI_MANIFEST, &manifest_of_size(&img, 1000))
        .await;
    srv.put_manifest("small", "no", OCI_MANIFEST, &manifest_of_size(&img, 1001))
        .await
        .error(413, "SIZE_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_endpoints_and_methods() {
    let srv = Server::start().await;
    srv.push_image("e", "v1", 1).await;
    for path in [
        "/",
        "/v1/",
        "/v2/e",
        "/v2/e/unknown/thing",
        "/v3/e/tags/list",
    ] {
        srv.get(path).await.status(404);
    }
    let d = sha(b"x");
    for (method, path) in [
        (Method::POST, "/v2/e/manifests/v1".to_string()),
        (Method::PATCH, "/v2/e/manifests/v1".to_string()),
        (Method::PUT, format!("/v2/e/blobs/{d}")),
        (Method::POST, format!("/v2/e/blobs/{d}")),
        (Method::GET, "/v2/e/blobs/uploads/".to_string()),
        (Method::DELETE, "/v2/e/tags/list".to_string()),
        (Method::PUT, "/v2/_catalog".to_string()),
        (Method::POST, "/v2/".to_string()),
        (Method::DELETE, format!("/v2/e/referrers/{d}")),
    ] {
        send(srv.req(method, &path)).await.error(405, "UNSUPPORTED");
    }
}

/// A sweep of odd requests: whatever the answer, it is never a 5xx and
/// always carries the API version header (checked by `send` and `raw`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_gets_a_server_error() {
    let srv = Server::start().await;
    let img = srv.push_image("z", "v1", 1).await;
    let loc = srv.start_upload("z").await;
    let d = img.digest.clone();
    let paths = [
        "/v2/z/manifests/v1".to_string(),
        format!("/v2/z/manifests/{d}"),
        "/v2/z/manifests/sha512:abc".to_string(),
        "/v2/z/manifests/sha999:abc".to_string(),
        "/v2/z/manifests/:".to_string(),
        format!("/v2/z/blobs/{d}"),
        "/v2/z/blobs/sha256:".to_string(),
        "/v2/z/blobs/uploads/".to_string(),
        "/v2/z/blobs/uploads/?digest=sha256:".to_string(),
        "/v2/z/blobs/uploads/?mount=&from=".to_string(),
        "/v2/z/blobs/uploads/?mount=%ZZ".to_string(),
        loc.clone(),
        format!("{loc}?digest=%"),
        format!("{loc}?digest={d}&digest={d}"),
        "/v2/z/tags/list?n=1&n=2&last=%FF".to_string(),
        format!("/v2/z/referrers/{d}?artifactType="),
        "/v2/_catalog?last=%00".to_string(),
    ];
    let bodies: [&[u8]; 3] = [b"", b"{}", &[0xff, 0x00, 0x7b]];
    for path in &paths {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::PATCH,
            Method::POST,
            Method::DELETE,
        ] {
            for body in bodies {
                let r = send(
                    srv.req(method.clone(), path)
                        .header("content-type", OCI_MANIFEST)
                        .header("content-range", "0-2")
                        .header("range", "bytes=1-0")
                        .body(body.to_vec()),
                )
                .await;
                assert!(r.status != 0);
            }
        }
    }
    // Raw targets a client library would not send.
    for target in [
        "/v2/z/manifests/%2e%2e",
        "/v2/z/blobs/sha256:%00",
        "/v2/z/blobs/uploads/%2e%2e%2f%2e%2e",
        "/v2/%00/tags/list",
        "/v2/z/tags/list?n=%",
        "/v2//tags/list",
        "/v2///",
        "*",
    ] {
        let (status, headers, body) = raw(srv.addr, "GET", target).await;
        assert!(
            (400..500).contains(&status),
            "GET {target}: {status} {body}"
        );
        if target != "*" {
            assert_eq!(
                raw_header(&headers, "docker-distribution-api-version"),
                Some("registry/2.0"),
                "GET {target}"
            );
        }
    }
    // The registry still works.
    let again = srv.push_image("z2", "v1", 5).await;
    let r = srv.get("/v2/z2/manifests/v1").await;
    r.status(200);
    assert_eq!(r.body, again.manifest);
}

/// Every error body is the spec's JSON; `send` checks this for all tests,
/// and here one is checked in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_body_shape() {
    let srv = Server::start().await;
    let d = sha(b"unknown");
    let r = srv.get(&format!("/v2/a/blobs/{d}")).await;
    r.status(404);
    assert_eq!(r.h("content-type"), "application/json; charset=utf-8");
    let body = r.json();
    assert_eq!(body["errors"].as_array().unwrap().len(), 1);
    assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
    assert_eq!(body["errors"][0]["message"], "blob unknown to registry");
    assert_eq!(body["errors"][0]["detail"], json!({ "digest": d }));
}
