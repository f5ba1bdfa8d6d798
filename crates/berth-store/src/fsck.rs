//! Consistency check of a root: every blob matches its digest, every
//! manifest's bytes match its digest and everything it references resolves:
//! blobs, the children of indexes, the manifests of referrer entries.
//! `berth fsck` and the crash tests use it.

use berth_oci::{Digest, ManifestKind, ParsedManifest};
use redb::ReadableTable;

use crate::meta::{BLOB_LINKS, INDEX_CHILDREN, MANIFESTS, MANIFEST_BYTES, REFERRERS};
use crate::{Store, StoreError};

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub manifests_checked: usize,
    /// Human-readable descriptions of every inconsistency found.
    pub problems: Vec<String>,
    /// Things worth knowing that are allowed (referrers whose subject is not
    /// in the repository; with `allow_sparse_index`, absent index children).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct FsckOptions {
    /// Index children absent from the repository are notes, not problems
    /// (for roots served with `--allow-sparse-index`).
    pub allow_sparse_index: bool,
}

impl Store {
    /// Checks the whole root. Blobs are re-hashed, so this reads everything.
    pub fn fsck(&self) -> Result<FsckReport, StoreError> {
        self.fsck_with(FsckOptions::default())
    }

    pub fn fsck_with(&self, opts: FsckOptions) -> Result<FsckReport, StoreError> {
        let mut report = FsckReport::default();
        for d in self.blobs.list()? {
            report.blobs_checked += 1;
            if !self.blobs.verify(&d)? {
                report
                    .problems
                    .push(format!("blob {d} does not match its digest"));
            }
        }
        let txn = self.meta.read()?;
        let links = txn.open_table(BLOB_LINKS)?;
        for r in links.iter()? {
            let (k, size) = r?;
            let (repo, d) = k.value();
            let digest: Digest = match d.parse() {
                Ok(d) => d,
                Err(e) => {
                    report
                        .problems
                        .push(format!("{repo}: link to invalid digest: {e}"));
                    continue;
                }
            };
            match self.blobs.size(&digest)? {
                None => report
                    .problems
                    .push(format!("{repo}: links {d}, which is not stored")),
                Some(s) if s != size.value() => report.problems.push(format!(
                    "{repo}: link to {d} records size {}, stored blob has {s}",
                    size.value()
                )),
                Some(_) => {}
            }
        }
        let bytes = txn.open_table(MANIFEST_BYTES)?;
        let manifests = txn.open_table(MANIFESTS)?;
        let children = txn.open_table(INDEX_CHILDREN)?;
        for r in manifests.iter()? {
            let (k, media_type) = r?;
            let (repo, d) = k.value();
            report.manifests_checked += 1;
            let Some(content) = bytes.get(d)? else {
                report
                    .problems
                    .push(format!("{repo}: manifest {d} has no content"));
                continue;
            };
            let content = content.value();
            match d.parse::<Digest>() {
                Ok(digest) if Digest::of(digest.algorithm(), content) == digest => {}
                _ => {
                    report
                        .problems
                        .push(format!("{repo}: manifest {d} does not match its digest"));
                    continue;
                }
            }
            let parsed = match ParsedManifest::parse(content, Some(media_type.value())) {
                Ok(p) => p,
                Err(e) => {
                    report
                        .problems
                        .push(format!("{repo}: manifest {d} does not parse: {e}"));
                    continue;
                }
            };
            for b in parsed.required_blobs() {
                let key = b.digest.to_string();
                if links.get((repo, key.as_str()))?.is_none() {
                    report.problems.push(format!(
                        "{repo}: manifest {d} references {key}, not in the repository"
                    ));
                }
            }
            if parsed.kind == ManifestKind::Index {
                for c in &parsed.manifests {
                    let key = c.digest.to_string();
                    if children.get((repo, key.as_str(), d))?.is_none() {
                        report.problems.push(format!(
                            "{repo}: index {d} names {key}, but the index table does not record it \
                             (a DELETE of {key} would not be refused)"
                        ));
                    }
                    if manifests.get((repo, key.as_str()))?.is_some() {
                        continue;
                    }
                    let stored = if bytes.get(key.as_str())?.is_some() {
                        " (its content is still stored: push it to the repository again to repair)"
                    } else {
                        ""
                    };
                    let msg = format!(
                        "{repo}: index {d} names child manifest {key}, which is not in the repository{stored}"
                    );
                    if opts.allow_sparse_index {
                        report
                            .notes
                            .push(format!("{msg}; allowed for sparse indexes"));
                    } else {
                        report.problems.push(msg);
                    }
                }
            }
        }
        // Referrer entries: the referrer must be there; its subject may not
        // be (the spec lets referrers be pushed before their subject, and a
        // subject be deleted while referrers remain).
        for r in txn.open_table(REFERRERS)?.iter()? {
            let (k, _) = r?;
            let (repo, subject, referrer) = k.value();
            if manifests.get((repo, referrer))?.is_none() {
                report.problems.push(format!(
                    "{repo}: the referrers of {subject} list {referrer}, which is not in the repository"
                ));
            } else if manifests.get((repo, subject))?.is_none() {
                report.notes.push(format!(
                    "{repo}: referrer {referrer} has subject {subject}, which is not in the repository (allowed)"
                ));
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use berth_oci::{media_type as mt, Digest, ParsedManifest};

    use crate::meta::{INDEX_CHILDREN, MANIFESTS, SCHEMA};
    use crate::{Access, GcOptions, PutManifest, Store, StoreError};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn put_blob(store: &Store, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let mut w = store.blobs.writer().unwrap();
        w.write(data).unwrap();
        let size = w.commit(&d, None).unwrap();
        rt().block_on(store.link_blob(repo, &d, size)).unwrap();
        d
    }

    fn put(
        store: &Store,
        repo: &str,
        tag: Option<&str>,
        json: serde_json::Value,
    ) -> (Digest, usize) {
        let bytes = json.to_string().into_bytes();
        let digest = Digest::sha256_of(&bytes);
        let len = bytes.len();
        let parsed = ParsedManifest::parse(&bytes, None).unwrap();
        rt().block_on(store.put_manifest(PutManifest {
            repo: repo.into(),
            tag: tag.map(Into::into),
            digest: digest.clone(),
            bytes,
            parsed,
            allow_sparse_index: false,
        }))
        .unwrap();
        (digest, len)
    }

    /// An untagged image and a tagged index naming it: (child, its layer).
    fn image_under_index(store: &Store) -> (Digest, Digest) {
        let cfg = put_blob(store, "app", b"{}");
        let layer = put_blob(store, "app", b"child layer");
        let (child, len) = put(
            store,
            "app",
            None,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": mt::OCI_MANIFEST,
                "config": {"mediaType": mt::OCI_CONFIG, "digest": cfg, "size": 2},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 11}],
            }),
        );
        put(
            store,
            "app",
            Some("multi"),
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": mt::OCI_INDEX,
                "manifests": [{"mediaType": mt::OCI_MANIFEST, "digest": child, "size": len}],
            }),
        );
        (child, layer)
    }

    /// What a DELETE did before it was refused (and what distribution 2.8
    /// still does): the child's entry goes, the index stays.
    fn drop_row_offline(store: &Store, repo: &str, digest: &Digest) {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        store
            .meta
            .write_blocking(move |txn| {
                txn.open_table(MANIFESTS)?
                    .remove((repo.as_str(), digest.as_str()))?;
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_broken_index_is_a_problem_and_gc_keeps_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Exclusive).unwrap();
        let (child, layer) = image_under_index(&store);
        assert!(store.fsck().unwrap().problems.is_empty());

        // The API refuses the delete.
        match rt().block_on(store.delete_manifest("app", &child)) {
            Err(StoreError::ManifestReferenced { digest, .. }) => assert_eq!(digest, child),
            other => panic!("delete of an index child: {other:?}"),
        }
        assert_eq!(store.indexes_naming("app", &child).unwrap().len(), 1);

        drop_row_offline(&store, "app", &child);
        let report = store.fsck().unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].contains(&format!("names child manifest {child}"))
                && report.problems[0].contains("still stored"),
            "{:?}",
            report.problems
        );
        let sparse = store
            .fsck_with(super::FsckOptions {
                allow_sparse_index: true,
            })
            .unwrap();
        assert!(sparse.problems.is_empty(), "{:?}", sparse.problems);
        assert_eq!(sparse.notes.len(), 1);

        // gc marks through the index: the child's content and blobs stay,
        // also when untagged manifests are collected.
        for delete_untagged in [false, true] {
            let report = store
                .gc(GcOptions {
                    delete_untagged,
                    ..GcOptions::default()
                })
                .unwrap();
            assert!(report.blobs.is_empty(), "{:?}", report.blobs);
            assert!(report.links.is_empty(), "{:?}", report.links);
            assert!(store.blobs.size(&layer).unwrap().is_some());
        }
        let txn = store.meta.read().unwrap();
        let bytes = txn.open_table(crate::meta::MANIFEST_BYTES).unwrap();
        assert!(bytes.get(child.to_string().as_str()).unwrap().is_some());
    }

    #[test]
    fn index_children_are_backfilled_for_older_databases() {
        let dir = tempfile::tempdir().unwrap();
        let child = {
            let store = Store::open(dir.path(), Access::Shared).unwrap();
            let (child, _) = image_under_index(&store);
            // As a database from before the table existed.
            store
                .meta
                .write_blocking(|txn| {
                    let mut t = txn.open_table(INDEX_CHILDREN)?;
                    t.retain(|_, _| false)?;
                    txn.open_table(SCHEMA)?.remove("index_children")?;
                    Ok(())
                })
                .unwrap();
            assert!(store.indexes_naming("app", &child).unwrap().is_empty());
            child
        };
        let store = Store::open(dir.path(), Access::Shared).unwrap();
        assert_eq!(store.indexes_naming("app", &child).unwrap().len(), 1);
        assert!(rt().block_on(store.delete_manifest("app", &child)).is_err());
        assert!(store.fsck().unwrap().problems.is_empty());
    }

    #[test]
    fn deleting_the_index_frees_the_child_and_referrers_may_outlive_their_subject() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Shared).unwrap();
        let (child, _) = image_under_index(&store);
        let index = store
            .resolve("app", &berth_oci::Reference::Tag("multi".into()))
            .unwrap()
            .unwrap();
        let cfg = Digest::sha256_of(b"{}");
        let (sig, _) = put(
            &store,
            "app",
            None,
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": mt::OCI_MANIFEST,
                "artifactType": "application/example.sig",
                "config": {"mediaType": mt::OCI_EMPTY, "digest": cfg, "size": 2},
                "layers": [],
                "subject": {"mediaType": mt::OCI_MANIFEST, "digest": child, "size": 1},
            }),
        );
        assert!(rt().block_on(store.delete_manifest("app", &index)).unwrap());
        assert!(store.indexes_naming("app", &child).unwrap().is_empty());
        // The subject goes; its referrer stays, as the spec allows.
        assert!(rt().block_on(store.delete_manifest("app", &child)).unwrap());
        let report = store.fsck().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.notes.len(), 1, "{:?}", report.notes);
        assert!(report.notes[0].contains(&sig.to_string()));
    }
}
