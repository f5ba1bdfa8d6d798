//! Consistency check of a root: every blob matches its digest, every
//! manifest's bytes match its digest and everything it references resolves.
//! `berth fsck` and the crash tests use it.

use berth_oci::{Digest, ManifestKind, ParsedManifest};
use redb::ReadableTable;

use crate::meta::{BLOB_LINKS, MANIFESTS, MANIFEST_BYTES};
use crate::{Store, StoreError};

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub manifests_checked: usize,
    /// Human-readable descriptions of every inconsistency found.
    pub problems: Vec<String>,
}

impl Store {
    /// Checks the whole root. Blobs are re-hashed, so this reads everything.
    pub fn fsck(&self) -> Result<FsckReport, StoreError> {
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
                    if manifests.get((repo, key.as_str()))?.is_none() {
                        // Allowed only for sparse indexes; reported, not fatal.
                        tracing::debug!("{repo}: index {d} names absent child {key}");
                    }
                }
            }
        }
        Ok(report)
    }
}
