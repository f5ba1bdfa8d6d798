//! Offline garbage collection (the root must be opened with
//! [`crate::Access::Exclusive`]).
//!
//! Mark: every manifest kept marks the blobs it references. With
//! `delete_untagged`, only manifests reachable from a tag are kept: through
//! index children and referrers (an artifact attached to a kept image is
//! kept); a kept index keeps its children's content and blobs. Sweep: links
//! to unmarked blobs, unmarked blob files, manifest content no repository
//! names, upload sessions past their maximum age, and stray ingest files.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::time::Duration;

use berth_oci::{Digest, ParsedManifest};
use redb::ReadableTable;

use crate::meta::{BLOB_LINKS, MANIFESTS, MANIFEST_BYTES, REFERRERS, TAGS, UPLOADS};
use crate::repo::delete_manifest;
use crate::uploads::{remove_expired, ExpiredUpload};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
    /// Also remove manifests no tag reaches.
    pub delete_untagged: bool,
    /// Remove upload sessions idle for at least this long.
    pub upload_max_age: Option<Duration>,
}

#[derive(Debug, Default, Clone)]
pub struct GcReport {
    /// (repository, digest) of manifests removed.
    pub manifests: Vec<(String, String)>,
    /// Blobs removed from disk, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Links removed: (repository, digest).
    pub links: Vec<(String, String)>,
    /// Upload sessions removed because they were idle past the maximum age.
    pub expired_uploads: Vec<ExpiredUpload>,
    pub stray_files: usize,
}

impl GcReport {
    pub fn bytes_freed(&self) -> u64 {
        self.blobs.iter().map(|(_, s)| s).sum()
    }
}

impl Store {
    pub fn gc(&self, opts: GcOptions) -> Result<GcReport, StoreError> {
        let blobs_on_disk = self.blobs.list()?;
        let expired = match opts.upload_max_age {
            Some(age) => self.expired_uploads(age)?,
            None => Vec::new(),
        };
        let (report, keep_blobs) = self.meta.write_blocking(move |txn| {
            let mut report = GcReport::default();
            if !opts.dry_run {
                remove_expired(txn, &expired)?;
            }
            report.expired_uploads = expired;
            let bytes_of =
                |d: &str, media_type: Option<&str>| -> Result<Option<ParsedManifest>, StoreError> {
                    Ok(txn.open_table(MANIFEST_BYTES)?.get(d)?.and_then(|b| {
                        ParsedManifest::parse(b.value(), media_type)
                            .or_else(|_| ParsedManifest::parse(b.value(), None))
                            .ok()
                    }))
                };

            // Every (repo, manifest digest).
            let mut manifests: Vec<(String, String)> = Vec::new();
            for r in txn.open_table(MANIFESTS)?.iter()? {
                let (k, _) = r?;
                let (repo, d) = k.value();
                manifests.push((repo.to_string(), d.to_string()));
            }

            if opts.delete_untagged {
                let mut reachable: HashSet<(String, String)> = HashSet::new();
                let mut queue: Vec<(String, String)> = Vec::new();
                for r in txn.open_table(TAGS)?.iter()? {
                    let (k, v) = r?;
                    queue.push((k.value().0.to_string(), v.value().to_string()));
                }
                let mut referrers: HashMap<(String, String), Vec<String>> = HashMap::new();
                for r in txn.open_table(REFERRERS)?.iter()? {
                    let (k, _) = r?;
                    let (repo, subject, referrer) = k.value();
                    referrers
                        .entry((repo.to_string(), subject.to_string()))
                        .or_default()
                        .push(referrer.to_string());
                }
                while let Some(node) = queue.pop() {
                    if !reachable.insert(node.clone()) {
                        continue;
                    }
                    if let Some(m) = bytes_of(&node.1, None)? {
                        for child in m.manifests {
                            queue.push((node.0.clone(), child.digest.to_string()));
                        }
                    }
                    if let Some(refs) = referrers.get(&node) {
                        queue.extend(refs.iter().map(|r| (node.0.clone(), r.clone())));
                    }
                }
                let (keep, drop): (Vec<_>, Vec<_>) =
                    manifests.into_iter().partition(|m| reachable.contains(m));
                manifests = keep;
                report.manifests = drop;
            }

            // Mark, through index children: a kept index keeps its children's
            // content and blobs even where the child's own entry is gone (a
            // root written before deletes of index children were refused),
            // so gc never turns a broken index into a lost image.
            let mut keep_links: HashSet<(String, String)> = HashSet::new();
            let mut keep_blobs: HashSet<String> = HashSet::new();
            let mut keep_bytes: HashSet<String> = HashSet::new();
            let mut marked: HashSet<(String, String)> = HashSet::new();
            let mut stack: Vec<(String, String, Option<String>)> = Vec::new();
            {
                let rows = txn.open_table(MANIFESTS)?;
                for (repo, d) in &manifests {
                    let media_type = rows
                        .get((repo.as_str(), d.as_str()))?
                        .map(|m| m.value().to_string());
                    stack.push((repo.clone(), d.clone(), media_type));
                }
            }
            while let Some((repo, d, media_type)) = stack.pop() {
                if !marked.insert((repo.clone(), d.clone())) {
                    continue;
                }
                let Some(m) = bytes_of(&d, media_type.as_deref())? else {
                    continue;
                };
                keep_bytes.insert(d.clone());
                for b in m.config.iter().chain(m.layers.iter()) {
                    keep_links.insert((repo.clone(), b.digest.to_string()));
                    keep_blobs.insert(b.digest.to_string());
                }
                for child in m.manifests {
                    stack.push((
                        repo.clone(),
                        child.digest.to_string(),
                        Some(child.media_type.clone()),
                    ));
                }
            }
            for r in txn.open_table(BLOB_LINKS)?.iter()? {
                let (k, _) = r?;
                let (repo, d) = k.value();
                let key = (repo.to_string(), d.to_string());
                if !keep_links.contains(&key) {
                    report.links.push(key);
                }
            }
            let mut drop_bytes = Vec::new();
            for r in txn.open_table(MANIFEST_BYTES)?.iter()? {
                let (k, _) = r?;
                if !keep_bytes.contains(k.value()) {
                    drop_bytes.push(k.value().to_string());
                }
            }

            if !opts.dry_run {
                for (repo, d) in &report.manifests {
                    delete_manifest(txn, repo, d)?;
                }
                let mut links = txn.open_table(BLOB_LINKS)?;
                for (repo, d) in &report.links {
                    links.remove((repo.as_str(), d.as_str()))?;
                }
                let mut bytes = txn.open_table(MANIFEST_BYTES)?;
                for d in &drop_bytes {
                    bytes.remove(d.as_str())?;
                }
            }
            Ok((report, keep_blobs))
        })?;
        let mut report = report;

        // Blob files are removed only after the database no longer links
        // them, so a crash in between leaves unreferenced files, never
        // dangling references.
        for d in blobs_on_disk {
            if !keep_blobs.contains(&d.to_string()) {
                let size = self.blobs.size(&d)?.unwrap_or(0);
                if !opts.dry_run {
                    self.blobs.remove(&d)?;
                }
                report.blobs.push((d, size));
            }
        }

        if !opts.dry_run {
            for e in &report.expired_uploads {
                let _ = fs::remove_file(self.blobs.upload_path(&e.id));
            }
        }

        // Upload data files whose session record is gone.
        let sessions: BTreeSet<String> = {
            let t = self.meta.read()?.open_table(UPLOADS)?;
            let mut s = BTreeSet::new();
            for r in t.iter()? {
                s.insert(r?.0.value().to_string());
            }
            s
        };
        for entry in fs::read_dir(self.blobs.uploads_dir())? {
            let entry = entry?;
            if !sessions.contains(entry.file_name().to_string_lossy().as_ref()) {
                report.stray_files += 1;
                if !opts.dry_run {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        Ok(report)
    }
}
