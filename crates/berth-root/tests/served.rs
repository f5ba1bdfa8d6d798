//! `LocalRoot` beside an in-process `berth serve` (read-only, no deletes on
//! its public side): every operation goes through `<root>/serve.sock`.

use std::sync::Arc;
use std::time::Duration;

use berth_oci::{Digest, Reference};
use berth_registry::{Registry, Settings};
use berth_root::{LocalRoot, OpenOptions, RootError};
use berth_store::{Access, Store, StoreError};
use bytes::Bytes;

fn put_blob(root: &LocalRoot, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let mut w = root.blobs().writer().unwrap();
    w.write(data).unwrap();
    w.commit(&d, None).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_goes_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    // A stale socket from a killed server is replaced.
    std::os::unix::net::UnixListener::bind(root.join("serve.sock")).unwrap();
    let store = Arc::new(Store::open(&root, Access::Shared).unwrap());
    let registry = Arc::new(Registry {
        store,
        settings: Settings {
            read_only: true,
            delete_enabled: false,
            ..Settings::default()
        },
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(berth_registry::serve(listener, registry, async {
        let _ = stopped.await;
    }));
    let opened = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || {
            LocalRoot::open_with(
                &root,
                &OpenOptions {
                    wait: Duration::from_secs(10),
                },
            )
        })
    };
    let local = opened.await.unwrap().unwrap();
    assert!(local.is_served());
    assert!(local.store().is_none());

    let config = put_blob(&local, b"{}");
    let layer = put_blob(&local, b"layer bytes");
    assert_eq!(local.blob_in_repo("a/b", &layer).await.unwrap(), None);
    assert_eq!(local.link_blob("a/b", &layer).await.unwrap(), 11);
    local.link_blob("a/b", &config).await.unwrap();
    assert_eq!(local.blob_in_repo("a/b", &layer).await.unwrap(), Some(11));
    let missing = Digest::sha256_of(b"never written");
    assert!(matches!(
        local.link_blob("a/b", &missing).await,
        Err(RootError::Store(StoreError::BlobUnknown(_)))
    ));

    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":11}}]}}"#
    );
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let d = local
        .put_manifest("a/b", Some("v1"), Bytes::from(manifest.clone()), mt)
        .await
        .unwrap();
    assert_eq!(d, Digest::sha256_of(manifest.as_bytes()));
    let got = local
        .manifest("a/b", &Reference::Tag("v1".into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.digest.clone(), got.media_type.as_str()),
        (d.clone(), mt)
    );
    assert_eq!(got.bytes, manifest.as_bytes());
    // A manifest whose blobs are not linked is refused by the server.
    let err = local
        .put_manifest("other", Some("x"), Bytes::from(manifest.clone()), mt)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MANIFEST_BLOB_UNKNOWN"), "{err}");

    local
        .put_manifest("a/b", Some("v2"), Bytes::from(manifest), mt)
        .await
        .unwrap();
    assert_eq!(local.catalog().await.unwrap(), ["a/b"]);
    assert_eq!(local.tags("a/b").await.unwrap().unwrap(), ["v1", "v2"]);
    assert_eq!(local.tags("nope").await.unwrap(), None);
    // Deletes work on the local endpoint despite --no-delete.
    assert!(local.delete_tag("a/b", "v1").await.unwrap());
    assert!(!local.delete_tag("a/b", "v1").await.unwrap());
    assert!(local.delete_manifest("a/b", &d).await.unwrap());
    assert_eq!(
        local
            .resolve("a/b", &Reference::Tag("v2".into()))
            .await
            .unwrap(),
        None
    );

    drop(local);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!root.join("serve.sock").exists(), "removed on shutdown");
}
