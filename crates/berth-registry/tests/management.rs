//! Content management: deleting tags, manifests and blobs, and the
//! read-only and delete-disabled modes.

mod common;

use common::*;
use reqwest::Method;

const NS: &str = "conformance/primary";

/// v1.0.1 "Content Management", with the `emptylayer` leftover of Push.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_management_workflow() {
    let srv = Server::start().await;
    srv.push_image(NS, "emptylayer", 0).await;
    let img = srv.push_image(NS, "tagtest0", 3).await;
    let num_tags = srv.tags(NS).await.len();
    assert_eq!(num_tags, 2);

    // Manifest delete: the tag (202), then the digest (202: only untagged).
    srv.delete(&format!("/v2/{NS}/manifests/tagtest0"))
        .await
        .status(202);
    srv.delete(&format!("/v2/{NS}/manifests/{}", img.digest))
        .await
        .status(202);
    srv.get(&format!("/v2/{NS}/manifests/{}", img.digest))
        .await
        .error(404, "MANIFEST_UNKNOWN");
    let tags = srv.tags(NS).await;
    assert!(tags.len() < num_tags);
    assert_eq!(tags, ["emptylayer"]);

    // Blob delete: both 202 in one go, then GET is 404.
    let config = sha(&img.config);
    srv.delete(&format!("/v2/{NS}/blobs/{config}"))
        .await
        .status(202);
    srv.delete(&format!("/v2/{NS}/blobs/{}", sha(&img.layers[0])))
        .await
        .status(202);
    srv.get(&format!("/v2/{NS}/blobs/{config}"))
        .await
        .error(404, "BLOB_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_tag_keeps_the_manifest() {
    let srv = Server::start().await;
    let img = srv.push_image("t", "v1", 1).await;
    srv.push_manifest("t", "v2", OCI_MANIFEST, &img.manifest)
        .await;
    let r = srv.delete("/v2/t/manifests/v1").await;
    r.status(202);
    assert!(r.body.is_empty());
    srv.get("/v2/t/manifests/v1")
        .await
        .error(404, "MANIFEST_UNKNOWN");
    srv.head("/v2/t/manifests/v1").await.status(404);
    srv.get("/v2/t/manifests/v2").await.status(200);
    let r = srv.get(&format!("/v2/t/manifests/{}", img.digest)).await;
    r.status(200);
    assert_eq!(r.body, img.manifest);
    assert_eq!(srv.tags("t").await, ["v2"]);
    // Again: it is gone.
    srv.delete("/v2/t/manifests/v1")
        .await
        .error(404, "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_manifest_drops_its_tags_only() {
    let srv = Server::start().await;
    let a = srv.push_image("m", "a0", 1).await;
    for t in ["a1", "a2", "a3"] {
        srv.push_manifest("m", t, OCI_MANIFEST, &a.manifest).await;
    }
    let b = srv.push_image("m", "b0", 2).await;
    assert_eq!(srv.tags("m").await, ["a0", "a1", "a2", "a3", "b0"]);

    srv.delete(&format!("/v2/m/manifests/{}", a.digest))
        .await
        .status(202);
    assert_eq!(srv.tags("m").await, ["b0"]);
    for reference in ["a0", "a1", "a2", "a3", a.digest.as_str()] {
        srv.get(&format!("/v2/m/manifests/{reference}"))
            .await
            .error(404, "MANIFEST_UNKNOWN");
    }
    let r = srv.get("/v2/m/manifests/b0").await;
    r.status(200);
    assert_eq!(r.body, b.manifest);
    srv.delete(&format!("/v2/m/manifests/{}", a.digest))
        .await
        .error(404, "MANIFEST_UNKNOWN");

    // It can be pushed again afterwards.
    srv.push_manifest("m", "again", OCI_MANIFEST, &a.manifest)
        .await;
    assert_eq!(srv.tags("m").await, ["again", "b0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_manifest_in_one_repository_keeps_it_in_another() {
    let srv = Server::start().await;
    let img = srv.push_image("one", "v1", 1).await;
    srv.push_image("two", "v1", 1).await;
    srv.delete(&format!("/v2/one/manifests/{}", img.digest))
        .await
        .status(202);
    srv.get("/v2/one/manifests/v1").await.status(404);
    let r = srv.get("/v2/two/manifests/v1").await;
    r.status(200);
    assert_eq!(r.body, img.manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_unknown_manifests() {
    let srv = Server::start().await;
    srv.push_image("k", "v1", 1).await;
    let nothing = sha(b"nothing");
    srv.delete(&format!("/v2/k/manifests/{nothing}"))
        .await
        .error(404, "MANIFEST_UNKNOWN");
    srv.delete("/v2/k/manifests/nosuchtag")
        .await
        .error(404, "MANIFEST_UNKNOWN");
    srv.delete(&format!("/v2/unknown/repo/manifests/{nothing}"))
        .await
        .status(404);
    srv.delete("/v2/k/manifests/sha256:short")
        .await
        .error(400, "DIGEST_INVALID");
    srv.delete("/v2/k/manifests/-bad")
        .await
        .error(400, "TAG_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_blobs() {
    let srv = Server::start().await;
    let data = b"blob to delete";
    let d = srv.push_blob("b", data).await;
    // The same blob mounted into another repository.
    let r = send(srv.req(
        Method::POST,
        &format!("/v2/c/blobs/uploads/?mount={d}&from=b"),
    ))
    .await;
    r.status(201);

    let r = srv.delete(&format!("/v2/b/blobs/{d}")).await;
    r.status(202);
    assert!(r.body.is_empty());
    srv.get(&format!("/v2/b/blobs/{d}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    srv.head(&format!("/v2/b/blobs/{d}")).await.status(404);
    srv.delete(&format!("/v2/b/blobs/{d}"))
        .await
        .error(404, "BLOB_UNKNOWN");
    // The other repository still has it.
    let r = srv.get(&format!("/v2/c/blobs/{d}")).await;
    r.status(200);
    assert_eq!(&r.body[..], data);
    // Mounting from the repository that no longer has it does not work.
    let r = send(srv.req(
        Method::POST,
        &format!("/v2/e/blobs/uploads/?mount={d}&from=b"),
    ))
    .await;
    r.status(202);
    // Pushing it again makes it visible again.
    srv.push_blob("b", data).await;
    srv.get(&format!("/v2/b/blobs/{d}")).await.status(200);

    srv.delete(&format!("/v2/b/blobs/{}", sha(b"never")))
        .await
        .error(404, "BLOB_UNKNOWN");
    srv.delete("/v2/b/blobs/sha256:zz")
        .await
        .error(400, "DIGEST_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_blob_is_no_longer_usable_by_new_manifests() {
    let srv = Server::start().await;
    let img = Image::new(5);
    srv.push_blob("x", &img.config).await;
    for l in &img.layers {
        srv.push_blob("x", l).await;
    }
    srv.delete(&format!("/v2/x/blobs/{}", sha(&img.layers[1])))
        .await
        .status(202);
    let r = srv
        .put_manifest("x", "v1", OCI_MANIFEST, &img.manifest)
        .await;
    r.error(400, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        r.json()["errors"][0]["detail"]["digest"],
        sha(&img.layers[1])
    );
}

/// Deletion disabled (`--no-delete`): 405 UNSUPPORTED for manifests, tags
/// and blobs; everything else works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_disabled() {
    let srv = Server::start_with(settings(|s| s.delete_enabled = false)).await;
    let img = srv.push_image("nd", "v1", 1).await;
    let blob = sha(&img.config);
    for path in [
        "/v2/nd/manifests/v1".to_string(),
        format!("/v2/nd/manifests/{}", img.digest),
        format!("/v2/nd/blobs/{blob}"),
    ] {
        srv.delete(&path).await.error(405, "UNSUPPORTED");
    }
    srv.get("/v2/nd/manifests/v1").await.status(200);
    srv.get(&format!("/v2/nd/manifests/{}", img.digest))
        .await
        .status(200);
    srv.get(&format!("/v2/nd/blobs/{blob}")).await.status(200);
    assert_eq!(srv.tags("nd").await, ["v1"]);

    // Cancelling an upload session deletes no content: still allowed.
    let loc = srv.start_upload("nd").await;
    srv.delete(&loc).await.status(204);
    srv.get(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
}

/// Read-only mode over a populated root: every write is 405 UNSUPPORTED,
/// every read works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_only_mode() {
    let srv = Server::start().await;
    let img = srv.push_image("ro", "v1", 1).await;
    let loc = srv.start_upload("ro").await;
    let srv = srv.restart_with(settings(|s| s.read_only = true)).await;

    let d = sha(b"new");
    let blob = sha(&img.config);
    let writes = [
        (Method::POST, "/v2/ro/blobs/uploads/".to_string()),
        (Method::POST, format!("/v2/ro/blobs/uploads/?digest={d}")),
        (
            Method::POST,
            format!("/v2/other/blobs/uploads/?mount={blob}&from=ro"),
        ),
        (Method::PATCH, loc.clone()),
        (Method::PUT, format!("{loc}?digest={d}")),
        (Method::DELETE, loc.clone()),
        (Method::PUT, "/v2/ro/manifests/v2".to_string()),
        (Method::PUT, format!("/v2/ro/manifests/{}", img.digest)),
        (Method::DELETE, "/v2/ro/manifests/v1".to_string()),
        (Method::DELETE, format!("/v2/ro/manifests/{}", img.digest)),
        (Method::DELETE, format!("/v2/ro/blobs/{blob}")),
    ];
    for (method, path) in writes {
        let rb = srv
            .req(method, &path)
            .header("content-type", OCI_MANIFEST)
            .body(img.manifest.clone());
        send(rb).await.error(405, "UNSUPPORTED");
    }

    // Reads.
    srv.get("/v2/").await.status(200);
    let r = srv.get("/v2/ro/manifests/v1").await;
    r.status(200);
    assert_eq!(r.body, img.manifest);
    srv.head(&format!("/v2/ro/manifests/{}", img.digest))
        .await
        .status(200);
    let r = srv.get(&format!("/v2/ro/blobs/{blob}")).await;
    r.status(200);
    assert_eq!(r.body, img.config);
    assert_eq!(srv.tags("ro").await, ["v1"]);
    let r = srv.get("/v2/_catalog").await;
    r.status(200);
    assert_eq!(r.json()["repositories"], serde_json::json!(["ro"]));
    srv.get(&format!("/v2/ro/referrers/{}", img.digest))
        .await
        .status(200);
    // The upload session is untouched.
    srv.get(&loc).await.status(204);
    srv.get("/v2/ro/manifests/v2").await.status(404);
}

/// Issue 9: a DELETE by digest of a manifest an index still names used to
/// succeed and leave the index broken (distribution 2.8 still does: 202).
/// It is refused with 409 DENIED, as the PUT side refuses such an index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_manifest_an_index_names_is_refused() {
    let srv = Server::start().await;
    let a = srv.push_image("multi", "a", 1).await;
    let b = srv.push_image("multi", "b", 2).await;
    let index = oci_index(&[&a.manifest, &b.manifest]);
    let index_digest = srv
        .push_manifest("multi", "latest", OCI_INDEX, &index)
        .await;
    // A Docker manifest list naming `a` too.
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [descriptor(OCI_MANIFEST, &a.manifest)],
    }))
    .unwrap();
    let list_digest = srv
        .push_manifest("multi", &sha(&list), DOCKER_LIST, &list)
        .await;

    for child in [&a.digest, &b.digest] {
        let r = srv.delete(&format!("/v2/multi/manifests/{child}")).await;
        r.error(409, "DENIED");
        let body = r.json();
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.contains("referenced by index") && message.contains("delete the index first"),
            "{message}"
        );
        assert_eq!(body["errors"][0]["detail"]["digest"], child.as_str());
        srv.get(&format!("/v2/multi/manifests/{child}"))
            .await
            .status(200);
    }
    // Deleting the tag of a child is fine: the index names digests.
    srv.delete("/v2/multi/manifests/a").await.status(202);
    srv.get("/v2/multi/manifests/latest").await.status(200);

    // Once no index names it, the child can go.
    srv.delete(&format!("/v2/multi/manifests/{index_digest}"))
        .await
        .status(202);
    srv.delete(&format!("/v2/multi/manifests/{}", b.digest))
        .await
        .status(202);
    srv.delete(&format!("/v2/multi/manifests/{}", a.digest))
        .await
        .error(409, "DENIED");
    srv.delete(&format!("/v2/multi/manifests/{list_digest}"))
        .await
        .status(202);
    srv.delete(&format!("/v2/multi/manifests/{}", a.digest))
        .await
        .status(202);
    // Nothing was left broken on the way.
    let report = srv.store().fsck().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}
