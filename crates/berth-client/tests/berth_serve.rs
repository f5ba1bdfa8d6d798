//! The client against a real `berth serve` (in-process, no authentication).

mod common;

use berth_client::{ClientConfig, Error, RegistryClient};
use berth_oci::Digest;
use bytes::Bytes;
use common::{chunks, collect, noise, BerthServe, TestImage, OCI_MANIFEST};

#[tokio::test]
async fn push_then_pull_blobs_and_manifests() {
    let srv = BerthServe::start().await;
    let c = srv.client();
    c.ping().await.unwrap();
    // 3 MiB layer, uploaded as a stream of 64 KiB chunks.
    let img = TestImage::new(1, 3 << 20);
    assert_eq!(
        c.blob_exists("app/web", &img.layer_digest()).await.unwrap(),
        None
    );
    let digest = img.push(&c, "app/web", "v1").await.unwrap();
    assert_eq!(digest, img.manifest_digest());
    assert_eq!(
        c.blob_exists("app/web", &img.layer_digest()).await.unwrap(),
        Some(img.layer.len() as u64)
    );

    // By tag and by digest, byte-exact.
    for reference in ["v1".to_string(), digest.to_string()] {
        let m = c.get_manifest("app/web", &reference, &[]).await.unwrap();
        assert_eq!(m.bytes, img.manifest);
        assert_eq!(m.digest, digest);
        assert_eq!(m.media_type, OCI_MANIFEST);
    }
    let info = c
        .head_manifest("app/web", "v1", &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.digest, digest);
    assert_eq!(info.size, img.manifest.len() as u64);
    assert_eq!(info.media_type, OCI_MANIFEST);
    assert_eq!(c.head_manifest("app/web", "nope", &[]).await.unwrap(), None);

    // Whole blob (verified) and a resumed download from an offset.
    let blob = c
        .get_blob(
            "app/web",
            &img.layer_digest(),
            Some(img.layer.len() as u64),
            0,
        )
        .await
        .unwrap();
    assert_eq!(blob.size, Some(img.layer.len() as u64));
    assert_eq!(collect(blob).await.unwrap(), img.layer);
    let offset = 1_000_003;
    let blob = c
        .get_blob(
            "app/web",
            &img.layer_digest(),
            Some(img.layer.len() as u64),
            offset,
        )
        .await
        .unwrap();
    assert_eq!(blob.size, Some(img.layer.len() as u64 - offset));
    assert_eq!(collect(blob).await.unwrap(), &img.layer[offset as usize..]);

    // An empty blob works too.
    let empty = Digest::sha256_of(b"");
    c.push_blob("app/web", &empty, 0, chunks(b"", 1))
        .await
        .unwrap();
    assert_eq!(c.blob_exists("app/web", &empty).await.unwrap(), Some(0));
}

#[tokio::test]
async fn unknown_things_are_clear_errors() {
    let srv = BerthServe::start().await;
    let c = srv.client();
    let e = c
        .get_manifest("nobody/here", "latest", &[])
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&srv.registry()) && msg.contains("nobody/here") && msg.contains("latest"),
        "{msg}"
    );
    let d = Digest::sha256_of(b"missing");
    let e = c.get_blob("nobody/here", &d, None, 0).await.err().unwrap();
    assert!(e.is_not_found(), "{e:?}");
    assert!(c.get_manifest("Bad Name", "x", &[]).await.is_err());
    assert!(c.get_manifest("ok", "bad tag!", &[]).await.is_err());

    // A blob whose content does not match its digest is refused by the
    // registry; the error carries its message.
    let e = c
        .push_blob("a", &d, 3, chunks(b"abc", 1))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Status { status: 400, .. }), "{e:?}");
    assert!(e.to_string().contains("DIGEST_INVALID"), "{e}");
    // A manifest naming blobs the repository lacks.
    let img = TestImage::new(9, 10);
    let e = c
        .put_manifest("a", "t", OCI_MANIFEST, img.manifest.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{e}");
    // Pushing under a digest that is not the content's is caught locally.
    let e = c
        .put_manifest("a", &d.to_string(), OCI_MANIFEST, img.manifest)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Protocol { .. }), "{e:?}");
}

#[tokio::test]
async fn failing_source_stream_is_reported_as_such() {
    let srv = BerthServe::start().await;
    let c = srv.client();
    let data = noise(3, 1 << 20);
    let stream = futures_util::stream::iter(vec![
        Ok(Bytes::copy_from_slice(&data[..1000])),
        Err(std::io::Error::other("disk on fire")),
    ]);
    let e = c
        .push_blob("a", &Digest::sha256_of(&data), data.len() as u64, stream)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Source { .. }), "{e:?}");
    assert!(e.to_string().contains("disk on fire"), "{e}");
}

#[tokio::test]
async fn cross_repository_mount() {
    let srv = BerthServe::start().await;
    let c = srv.client();
    let img = TestImage::new(2, 4096);
    img.push(&c, "src/repo", "v1").await.unwrap();
    assert!(c
        .mount_blob("dst/repo", "src/repo", &img.layer_digest())
        .await
        .unwrap());
    assert_eq!(
        c.blob_exists("dst/repo", &img.layer_digest())
            .await
            .unwrap(),
        Some(4096)
    );
    // Unknown blob or source: no mount, the caller uploads instead.
    let other = Digest::sha256_of(b"not there");
    assert!(!c.mount_blob("dst/repo", "src/repo", &other).await.unwrap());
    assert!(!c
        .mount_blob("dst/repo", "no/such", &img.layer_digest())
        .await
        .unwrap());
}

#[tokio::test]
async fn tags_and_catalog_follow_pagination() {
    let srv = BerthServe::start().await;
    let c = srv.client();
    let img = TestImage::new(4, 100);
    let tags = ["a", "b", "c", "d", "e"];
    for t in tags {
        img.push(&c, "lib/x", t).await.unwrap();
    }
    for page in [None, Some(1), Some(2), Some(5), Some(100)] {
        assert_eq!(c.list_tags("lib/x", page).await.unwrap(), tags, "{page:?}");
    }
    for r in ["lib/y", "other", "z/z/z"] {
        img.push(&c, r, "t").await.unwrap();
    }
    let all = ["lib/x", "lib/y", "other", "z/z/z"];
    for page in [None, Some(1), Some(3)] {
        assert_eq!(c.catalog(page).await.unwrap(), all, "{page:?}");
    }
    let e = c.list_tags("never/pushed", None).await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn delete_tag_and_manifest() {
    let srv = BerthServe::start().await;
    let c = srv.client();
    let img = TestImage::new(5, 100);
    let digest = img.push(&c, "d", "keep").await.unwrap();
    c.put_manifest("d", "drop", OCI_MANIFEST, img.manifest.clone())
        .await
        .unwrap();
    c.delete_manifest("d", "drop").await.unwrap();
    assert_eq!(c.list_tags("d", None).await.unwrap(), ["keep"]);
    c.delete_manifest("d", &digest.to_string()).await.unwrap();
    assert_eq!(
        c.head_manifest("d", &digest.to_string(), &[])
            .await
            .unwrap(),
        None
    );
    assert!(c
        .get_manifest("d", "keep", &[])
        .await
        .unwrap_err()
        .is_not_found());
    let e = c
        .delete_manifest("d", &digest.to_string())
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn unreachable_registry_retries_then_says_so() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let registry = format!("127.0.0.1:{port}");
    let c = RegistryClient::new(
        &registry,
        ClientConfig {
            max_attempts: 3,
            ..common::config()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let e = c.ping().await.unwrap_err();
    assert!(matches!(e, Error::Transport { attempts: 3, .. }), "{e:?}");
    assert!(e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.contains(&registry) && msg.contains("after 3 attempts"),
        "{msg}"
    );
    // 10 ms + 20 ms of backoff, not seconds.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
