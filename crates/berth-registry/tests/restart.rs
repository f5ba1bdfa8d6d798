//! Restarts: the server is stopped (store closed, root released) and a new
//! one opens the same root. Upload sessions resume where their data ends;
//! content survives.

mod common;

use berth_store::{Access, Store};
use common::*;
use reqwest::Method;
use serde_json::json;

fn octets(rb: reqwest::RequestBuilder, body: &[u8]) -> reqwest::RequestBuilder {
    rb.header("content-type", "application/octet-stream")
        .body(body.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_resumes_after_restart() {
    let srv = Server::start().await;
    let blob = noise(1, 300_000);
    let d = sha(&blob);
    let loc = srv.start_upload("resume/me").await;
    let r = send(
        octets(srv.req(Method::PATCH, &loc), &blob[..100_000]).header("content-range", "0-99999"),
    )
    .await;
    r.status(202);
    assert_eq!(r.h("range"), "0-99999");

    let srv = srv.restart().await;
    // The old Location works on the new server and reports the offset.
    let r = srv.get(&loc).await;
    r.status(204);
    assert_eq!(r.h("range"), "0-99999");
    assert_eq!(r.h("location"), loc);
    assert_eq!(r.h("docker-upload-uuid"), loc.rsplit('/').next().unwrap());
    // Resending the first part is out of order.
    send(octets(srv.req(Method::PATCH, &loc), &blob[..10]).header("content-range", "0-9"))
        .await
        .error(416, "RANGE_INVALID");

    let r = send(
        octets(srv.req(Method::PATCH, &loc), &blob[100_000..200_000])
            .header("content-range", "100000-199999"),
    )
    .await;
    r.status(202);
    assert_eq!(r.h("range"), "0-199999");

    // Restart again, then finish with the last chunk in the PUT.
    let srv = srv.restart().await;
    let r = send(
        octets(
            srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))),
            &blob[200_000..],
        )
        .header("content-range", "200000-299999"),
    )
    .await;
    r.status(201);
    assert_eq!(r.h("docker-content-digest"), d);
    let r = srv.get(&format!("/v2/resume/me/blobs/{d}")).await;
    r.status(200);
    assert!(r.body == blob);
    let digest: berth_oci::Digest = d.parse().unwrap();
    assert!(srv.store().blobs.verify(&digest).unwrap());
    // The session is finished, also after another restart.
    let srv = srv.restart().await;
    srv.get(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    srv.get(&format!("/v2/resume/me/blobs/{d}"))
        .await
        .status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streamed_patch_then_put_after_restart() {
    let srv = Server::start().await;
    let blob = noise(2, 5000);
    let d = sha(&blob);
    let loc = srv.start_upload("s").await;
    send(octets(srv.req(Method::PATCH, &loc), &blob[..1234]))
        .await
        .status(202);
    let srv = srv.restart().await;
    let r = send(octets(srv.req(Method::PATCH, &loc), &blob[1234..])).await;
    r.status(202);
    assert_eq!(r.h("range"), "0-4999");
    let r = send(srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}")))).await;
    r.status(201);
    let r = srv.get(&format!("/v2/s/blobs/{d}")).await;
    assert!(r.body == blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_session_survives_restart() {
    let srv = Server::start().await;
    let loc = srv.start_upload("e").await;
    let srv = srv.restart().await;
    let r = srv.get(&loc).await;
    r.status(204);
    assert_eq!(r.h("range"), "0-0");
    let d = sha(b"whole");
    let r = send(octets(
        srv.req(Method::PUT, &with_query(&loc, &format!("digest={d}"))),
        b"whole",
    ))
    .await;
    r.status(201);
    srv.get(&format!("/v2/e/blobs/{d}")).await.status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_digest_then_restart_then_right_digest() {
    let srv = Server::start().await;
    let loc = srv.start_upload("w").await;
    send(octets(srv.req(Method::PATCH, &loc), b"content"))
        .await
        .status(202);
    send(srv.req(
        Method::PUT,
        &with_query(&loc, &format!("digest={}", sha(b"other"))),
    ))
    .await
    .error(400, "DIGEST_INVALID");
    let srv = srv.restart().await;
    let r = srv.get(&loc).await;
    r.status(204);
    assert_eq!(r.h("range"), "0-6");
    let r = send(srv.req(
        Method::PUT,
        &with_query(&loc, &format!("digest={}", sha(b"content"))),
    ))
    .await;
    r.status(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_session_stays_cancelled() {
    let srv = Server::start().await;
    let loc = srv.start_upload("c").await;
    send(octets(srv.req(Method::PATCH, &loc), b"abc"))
        .await
        .status(202);
    srv.delete(&loc).await.status(204);
    let srv = srv.restart().await;
    srv.get(&loc).await.error(404, "BLOB_UPLOAD_UNKNOWN");
    send(octets(srv.req(Method::PATCH, &loc), b"def"))
        .await
        .error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn content_survives_restart() {
    let srv = Server::start().await;
    let img = srv.push_image("keep/app", "v1", 1).await;
    srv.push_manifest("keep/app", "v2", OCI_MANIFEST, &img.manifest)
        .await;
    let index = oci_index(&[&img.manifest]);
    let index_d = srv
        .push_manifest("keep/app", "multi", OCI_INDEX, &index)
        .await;
    srv.push_blob("keep/app", b"{}").await;
    let art = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1",
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [],
        "subject": descriptor(OCI_MANIFEST, &img.manifest),
    }))
    .unwrap();
    let art_d = srv
        .push_manifest("keep/app", &sha(&art), OCI_MANIFEST, &art)
        .await;
    srv.push_blob("other", b"x").await;
    srv.delete("/v2/keep/app/manifests/v2").await.status(202);

    let srv = srv.restart().await;
    assert_eq!(srv.tags("keep/app").await, ["multi", "v1"]);
    for (reference, bytes, ct) in [
        ("v1", &img.manifest, OCI_MANIFEST),
        (img.digest.as_str(), &img.manifest, OCI_MANIFEST),
        ("multi", &index, OCI_INDEX),
        (index_d.as_str(), &index, OCI_INDEX),
        (art_d.as_str(), &art, OCI_MANIFEST),
    ] {
        let r = srv
            .get(&format!("/v2/keep/app/manifests/{reference}"))
            .await;
        r.status(200);
        assert_eq!(&r.body[..], &bytes[..]);
        assert_eq!(r.h("content-type"), ct);
        let r = srv
            .head(&format!("/v2/keep/app/manifests/{reference}"))
            .await;
        assert_eq!(r.h("content-length"), bytes.len().to_string());
    }
    srv.get("/v2/keep/app/manifests/v2").await.status(404);
    for blob in [&img.config, &img.layers[0], &img.layers[1]] {
        let r = srv.get(&format!("/v2/keep/app/blobs/{}", sha(blob))).await;
        r.status(200);
        assert_eq!(&r.body[..], &blob[..]);
    }
    let r = srv.get("/v2/_catalog").await;
    assert_eq!(r.json()["repositories"], json!(["keep/app", "other"]));
    let r = srv
        .get(&format!("/v2/keep/app/referrers/{}", img.digest))
        .await;
    r.status(200);
    let list = r.json()["manifests"].clone();
    assert_eq!(
        list,
        json!([{
            "mediaType": OCI_MANIFEST,
            "digest": art_d,
            "size": art.len(),
            "artifactType": "application/vnd.example.sbom.v1",
        }])
    );
}

/// Stopping really releases the root: an exclusive open (what `berth gc`
/// does) succeeds while the server is down, and fails while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_releases_the_root() {
    let srv = Server::start().await;
    srv.push_image("r", "v1", 1).await;
    match Store::open(srv.root(), Access::Exclusive) {
        Err(berth_store::StoreError::Locked(..)) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("exclusive open succeeded while the server runs"),
    }
    let dir = srv.stop().await;
    {
        let store = Store::open(dir.path(), Access::Exclusive).expect("root released");
        assert!(store.repo_exists("r").unwrap());
    }
    let srv = Server::start_on(dir, Default::default()).await;
    srv.get("/v2/r/manifests/v1").await.status(200);
}

/// Scratch files of interrupted monolithic writes are cleaned on open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stray_tmp_files_are_removed_on_open() {
    let srv = Server::start().await;
    let dir = srv.stop().await;
    let tmp = dir.path().join("ingest/tmp");
    std::fs::write(tmp.join("leftover"), b"partial").unwrap();
    let srv = Server::start_on(dir, Default::default()).await;
    assert_eq!(
        std::fs::read_dir(srv.root().join("ingest/tmp"))
            .unwrap()
            .count(),
        0
    );
}
