//! Concurrent pushes: all succeed and the end state is consistent.

mod common;

use std::collections::BTreeSet;

use common::*;
use reqwest::Method;
use tokio::task::JoinSet;

const N: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_pushes_of_the_same_blob() {
    let srv = Server::start().await;
    let blob = noise(1, 256 * 1024);
    let mut set = JoinSet::new();
    for i in 0..N {
        let (api, blob) = (srv.api(), blob.clone());
        set.spawn(async move {
            // Half into one repository, half into a repository each.
            let repo = if i % 2 == 0 {
                "same".to_string()
            } else {
                format!("repo{i}")
            };
            let d = api.push_blob(&repo, &blob).await;
            (repo, d)
        });
    }
    let results = set.join_all().await;
    let d = sha(&blob);
    for (repo, got) in &results {
        assert_eq!(got, &d);
        let r = srv.get(&format!("/v2/{repo}/blobs/{d}")).await;
        r.status(200);
        assert!(r.body == blob);
    }
    // One file in the store, and no scratch files left behind.
    assert_eq!(srv.store().blobs.list().unwrap().len(), 1);
    assert!(srv.store().blobs.verify(&d.parse().unwrap()).unwrap());
    assert_eq!(
        std::fs::read_dir(srv.root().join("ingest/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_pushes_of_different_blobs() {
    let srv = Server::start().await;
    let mut set = JoinSet::new();
    for i in 0..N {
        let api = srv.api();
        set.spawn(async move {
            let blob = noise(100 + i as u64, 10_000 + i * 997);
            if i % 2 == 0 {
                api.push_blob("diff", &blob).await;
            } else {
                // A chunked session: POST, two PATCHes, PUT.
                let loc = api.start_upload("diff").await;
                let (a, b) = blob.split_at(blob.len() / 3);
                let r = send(api.req(Method::PATCH, &loc).body(a.to_vec())).await;
                r.status(202);
                let r = send(api.req(Method::PATCH, r.h("location")).body(b.to_vec())).await;
                r.status(202);
                let put = with_query(r.h("location"), &format!("digest={}", sha(&blob)));
                send(api.req(Method::PUT, &put)).await.status(201);
            }
            blob
        });
    }
    let blobs = set.join_all().await;
    for blob in &blobs {
        let r = srv.get(&format!("/v2/diff/blobs/{}", sha(blob))).await;
        r.status(200);
        assert!(r.body == *blob);
    }
    assert_eq!(srv.store().blobs.list().unwrap().len(), N);
    assert_eq!(
        std::fs::read_dir(srv.root().join("ingest/uploads"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_manifest_pushes_to_one_tag() {
    let srv = Server::start().await;
    // The blobs first, then N different manifests racing for one tag.
    let images: Vec<Image> = (0..N as u64).map(Image::new).collect();
    for img in &images {
        srv.push_blob("race", &img.config).await;
        for l in &img.layers {
            srv.push_blob("race", l).await;
        }
    }
    let mut set = JoinSet::new();
    for img in images.clone() {
        let api = srv.api();
        set.spawn(async move {
            api.push_manifest("race", "latest", OCI_MANIFEST, &img.manifest)
                .await;
            // And each under its own tag as well.
            api.push_manifest(
                "race",
                &format!("own-{}", &img.digest[7..19]),
                OCI_MANIFEST,
                &img.manifest,
            )
            .await
        });
    }
    set.join_all().await;

    let r = srv.get("/v2/race/manifests/latest").await;
    r.status(200);
    let winner = r.h("docker-content-digest").to_string();
    assert_eq!(sha(&r.body), winner);
    assert!(images.iter().any(|i| i.digest == winner));
    for img in &images {
        let r = srv.get(&format!("/v2/race/manifests/{}", img.digest)).await;
        r.status(200);
        assert!(r.body == img.manifest);
    }
    let tags: BTreeSet<String> = srv.tags("race").await.into_iter().collect();
    assert_eq!(tags.len(), N + 1);
    assert!(tags.contains("latest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_patches_to_one_session_do_not_interleave() {
    let srv = Server::start().await;
    let loc = srv.start_upload("one").await;
    let chunks: Vec<Vec<u8>> = (0..8).map(|i| vec![b'a' + i as u8; 64 * 1024]).collect();
    let mut set = JoinSet::new();
    for c in chunks.clone() {
        let (api, loc) = (srv.api(), loc.clone());
        set.spawn(async move {
            send(api.req(Method::PATCH, &loc).body(c)).await.status(202);
        });
    }
    set.join_all().await;
    let r = srv.get(&loc).await;
    r.status(204);
    let total = 8 * 64 * 1024;
    assert_eq!(r.h("range"), format!("0-{}", total - 1));

    // Each chunk landed whole: the content is the chunks in some order.
    let path = srv
        .root()
        .join("ingest/uploads")
        .join(loc.rsplit('/').next().unwrap());
    let data = std::fs::read(path).unwrap();
    assert_eq!(data.len(), total);
    let mut seen = BTreeSet::new();
    for piece in data.chunks(64 * 1024) {
        assert!(piece.iter().all(|&b| b == piece[0]), "chunks interleaved");
        assert!(seen.insert(piece[0]), "chunk twice");
    }
    let r = send(srv.req(
        Method::PUT,
        &with_query(&loc, &format!("digest={}", sha(&data))),
    ))
    .await;
    r.status(201);
}
