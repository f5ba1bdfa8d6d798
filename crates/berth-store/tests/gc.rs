//! Garbage collection: unreferenced blobs go, nothing a tag reaches does.

use berth_oci::{media_type as mt, Digest, ParsedManifest};
use berth_store::{Access, GcOptions, PutManifest, Store};

fn put_blob(store: &Store, repo: &str, data: &[u8]) -> Digest {
    let d = Digest::sha256_of(data);
    let mut w = store.blobs.writer().unwrap();
    w.write(data).unwrap();
    let size = w.commit(&d, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.link_blob(repo, &d, size)).unwrap();
    d
}

fn put_manifest(store: &Store, repo: &str, tag: Option<&str>, json: serde_json::Value) -> Digest {
    let bytes = json.to_string().into_bytes();
    let digest = Digest::sha256_of(&bytes);
    let parsed = ParsedManifest::parse(&bytes, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(store.put_manifest(PutManifest {
        repo: repo.into(),
        tag: tag.map(Into::into),
        digest: digest.clone(),
        bytes,
        parsed,
        allow_sparse_index: false,
    }))
    .unwrap();
    digest
}

fn image(
    config: &Digest,
    config_len: usize,
    layer: &Digest,
    layer_len: usize,
) -> serde_json::Value {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt::OCI_MANIFEST,
        "config": {"mediaType": mt::OCI_CONFIG, "digest": config, "size": config_len},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_len}],
    })
}

#[test]
fn gc_keeps_what_tags_reach_and_removes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Access::Exclusive).unwrap();

    let cfg = put_blob(&store, "app", b"{}");
    let tagged_layer = put_blob(&store, "app", b"tagged layer");
    let untagged_layer = put_blob(&store, "app", b"untagged layer");
    let orphan = put_blob(&store, "app", b"nobody references me");
    let tagged = put_manifest(&store, "app", Some("v1"), image(&cfg, 2, &tagged_layer, 12));
    let untagged = put_manifest(&store, "app", None, image(&cfg, 2, &untagged_layer, 14));
    // An artifact attached to the tagged image: untagged, but reachable as a referrer.
    let sig = put_blob(&store, "app", b"signature");
    let referrer = put_manifest(
        &store,
        "app",
        None,
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt::OCI_MANIFEST,
            "artifactType": "application/example.sig",
            "config": {"mediaType": mt::OCI_EMPTY, "digest": cfg, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": sig, "size": 9}],
            "subject": {"mediaType": mt::OCI_MANIFEST, "digest": tagged, "size": 1},
        }),
    );
    // A stray upload file with no session record.
    std::fs::write(dir.path().join("ingest/uploads/stray"), b"x").unwrap();

    // Dry run: reports, removes nothing.
    let dry = store
        .gc(GcOptions {
            dry_run: true,
            delete_untagged: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(dry.blobs.iter().map(|b| &b.0).collect::<Vec<_>>().len(), 2);
    assert!(store.blobs.size(&orphan).unwrap().is_some());
    assert!(dir.path().join("ingest/uploads/stray").exists());

    // Plain gc: only the orphan blob goes; untagged manifests are kept.
    let report = store.gc(GcOptions::default()).unwrap();
    assert_eq!(
        report.blobs.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
        vec![orphan.clone()]
    );
    assert_eq!(report.bytes_freed(), 20);
    assert_eq!(report.stray_files, 1);
    assert!(store.blobs.size(&orphan).unwrap().is_none());
    assert!(store.blob_in_repo("app", &orphan).unwrap().is_none());
    assert!(store.blobs.size(&untagged_layer).unwrap().is_some());

    // With delete_untagged: the untagged image and its layer go, the
    // referrer of the tagged image stays.
    let report = store
        .gc(GcOptions {
            dry_run: false,
            delete_untagged: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert_eq!(
        report.manifests,
        vec![("app".to_string(), untagged.to_string())]
    );
    assert_eq!(
        report.blobs.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
        vec![untagged_layer.clone()]
    );
    let get = |d: &Digest| {
        store
            .manifest("app", &berth_oci::Reference::Digest(d.clone()))
            .unwrap()
    };
    assert!(get(&untagged).is_none());
    assert!(get(&tagged).is_some());
    assert!(get(&referrer).is_some());
    for kept in [&cfg, &tagged_layer, &sig] {
        assert!(store.blobs.size(kept).unwrap().is_some(), "{kept} removed");
        assert!(store.blob_in_repo("app", kept).unwrap().is_some());
    }
    assert!(store.fsck().unwrap().problems.is_empty());

    // Nothing left to do.
    let again = store
        .gc(GcOptions {
            dry_run: false,
            delete_untagged: true,
            ..GcOptions::default()
        })
        .unwrap();
    assert!(again.blobs.is_empty() && again.manifests.is_empty());
}

#[test]
fn gc_needs_the_root_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let _server = Store::open(dir.path(), Access::Shared).unwrap();
    let err = Store::open(dir.path(), Access::Exclusive)
        .err()
        .expect("lock refused");
    assert!(err.to_string().contains("in use"), "{err}");
}
