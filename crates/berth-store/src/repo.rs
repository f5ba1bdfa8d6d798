//! Repository operations on the metadata database: blob links, manifests,
//! tags, referrers. Every write is one transaction, so a manifest and its tag
//! appear together or not at all, and a manifest is accepted only if every
//! blob it references is in its repository at that instant.

use std::ops::Bound;

use berth_oci::{Digest, ManifestKind, ParsedManifest, Reference};
use redb::{ReadableTable, WriteTransaction};

use crate::meta::{
    BLOB_LINKS, INDEX_CHILDREN, MANIFESTS, MANIFEST_BYTES, REFERRERS, REPOS, SCHEMA, TAGS,
};
use crate::{Store, StoreError};

/// A manifest as stored: bytes exactly as pushed plus the media type.
#[derive(Debug, Clone)]
pub struct ManifestEntry {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A manifest push, already parsed and hashed outside the transaction.
pub struct PutManifest {
    pub repo: String,
    /// The tag to point at it, if pushed by tag.
    pub tag: Option<String>,
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub parsed: ParsedManifest,
    /// Accept an index whose children are not (yet) in the repository.
    pub allow_sparse_index: bool,
}

#[derive(Debug, Clone)]
pub struct PutManifestOutcome {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// One page of a sorted listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    /// Whether more items follow the last one returned.
    pub more: bool,
}

fn page_of(
    iter: impl Iterator<Item = Result<String, StoreError>>,
    n: Option<usize>,
) -> Result<Page, StoreError> {
    let limit = n.unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut more = false;
    for item in iter {
        let item = item?;
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(item);
    }
    Ok(Page { items, more })
}

impl Store {
    pub fn repo_exists(&self, repo: &str) -> Result<bool, StoreError> {
        let t = self.meta.read()?.open_table(REPOS)?;
        Ok(t.get(repo)?.is_some())
    }

    /// Size of `digest` if the repository may serve it.
    pub fn blob_in_repo(&self, repo: &str, digest: &Digest) -> Result<Option<u64>, StoreError> {
        let t = self.meta.read()?.open_table(BLOB_LINKS)?;
        Ok(t.get((repo, digest.to_string().as_str()))?
            .map(|v| v.value()))
    }

    /// Makes a committed blob visible in `repo`.
    pub async fn link_blob(
        &self,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.meta
            .write(move |txn| link(txn, &repo, &digest, size))
            .await
    }

    /// Links a blob that is already committed under `blobs/` (written by
    /// this or another process) into `repo`; returns its size.
    pub async fn link_stored_blob(&self, repo: &str, digest: &Digest) -> Result<u64, StoreError> {
        let size = self
            .blobs
            .size(digest)?
            .ok_or_else(|| StoreError::BlobUnknown(digest.clone()))?;
        self.link_blob(repo, digest, size).await?;
        Ok(size)
    }

    /// Cross-repository mount: links `digest` into `repo` if `from` has it.
    /// Returns the blob's size, or `None` if `from` does not have it.
    pub async fn mount_blob(
        &self,
        from: &str,
        repo: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, StoreError> {
        let (from, repo, digest) = (from.to_string(), repo.to_string(), digest.to_string());
        self.meta
            .write(move |txn| {
                let size = txn
                    .open_table(BLOB_LINKS)?
                    .get((from.as_str(), digest.as_str()))?
                    .map(|v| v.value());
                if let Some(size) = size {
                    link(txn, &repo, &digest, size)?;
                }
                Ok(size)
            })
            .await
    }

    /// Removes `digest` from `repo`; the data stays until garbage collection.
    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.meta
            .write(move |txn| {
                Ok(txn
                    .open_table(BLOB_LINKS)?
                    .remove((repo.as_str(), digest.as_str()))?
                    .is_some())
            })
            .await
    }

    /// Resolves a tag or digest to the manifest digest it names in `repo`.
    pub fn resolve(&self, repo: &str, reference: &Reference) -> Result<Option<Digest>, StoreError> {
        Ok(self.manifest(repo, reference)?.map(|m| m.digest))
    }

    /// The manifest `reference` names in `repo`.
    pub fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<Option<ManifestEntry>, StoreError> {
        let txn = self.meta.read()?;
        let digest = match reference {
            Reference::Digest(d) => d.to_string(),
            Reference::Tag(t) => match txn.open_table(TAGS)?.get((repo, t.as_str()))? {
                Some(d) => d.value().to_string(),
                None => return Ok(None),
            },
        };
        let media_type = match txn.open_table(MANIFESTS)?.get((repo, digest.as_str()))? {
            Some(m) => m.value().to_string(),
            None => return Ok(None),
        };
        let bytes = txn
            .open_table(MANIFEST_BYTES)?
            .get(digest.as_str())?
            .map(|b| b.value().to_vec())
            .ok_or_else(|| StoreError::Db(format!("manifest {digest} has no content")))?;
        let digest = digest
            .parse()
            .map_err(|e| StoreError::Db(format!("stored digest is invalid: {e}")))?;
        Ok(Some(ManifestEntry {
            digest,
            media_type,
            bytes,
        }))
    }

    /// Stores a manifest (and its tag, and its referrer entry) atomically.
    pub async fn put_manifest(&self, put: PutManifest) -> Result<PutManifestOutcome, StoreError> {
        self.meta.write(move |txn| put_manifest(txn, put)).await
    }

    /// Deletes a manifest from `repo`, with every tag pointing at it.
    /// Refused ([`StoreError::ManifestReferenced`]) while an index of `repo`
    /// still names it: deleting it would leave that index broken (and the
    /// child's blobs unprotected), as the PUT side refuses such an index.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, StoreError> {
        let (repo, digest) = (repo.to_string(), digest.to_string());
        self.meta
            .write(move |txn| {
                if let Some(index) = referencing_index(txn, &repo, &digest)? {
                    return Err(StoreError::ManifestReferenced {
                        digest: parse_stored(&digest)?,
                        index: parse_stored(&index)?,
                    });
                }
                delete_manifest(txn, &repo, &digest)
            })
            .await
    }

    /// The indexes of `repo` that name `digest` as a child.
    pub fn indexes_naming(&self, repo: &str, digest: &Digest) -> Result<Vec<Digest>, StoreError> {
        let txn = self.meta.read()?;
        let children = txn.open_table(INDEX_CHILDREN)?;
        let manifests = txn.open_table(MANIFESTS)?;
        let child = digest.to_string();
        let mut out = Vec::new();
        for r in children.range((repo, child.as_str(), "")..)? {
            let (k, _) = r?;
            let (r, c, parent) = k.value();
            if r != repo || c != child {
                break;
            }
            if manifests.get((repo, parent))?.is_some() {
                out.push(parse_stored(parent)?);
            }
        }
        Ok(out)
    }

    /// Removes a tag; the manifest stays, reachable by digest.
    pub async fn delete_tag(&self, repo: &str, tag: &str) -> Result<bool, StoreError> {
        let (repo, tag) = (repo.to_string(), tag.to_string());
        self.meta
            .write(move |txn| {
                Ok(txn
                    .open_table(TAGS)?
                    .remove((repo.as_str(), tag.as_str()))?
                    .is_some())
            })
            .await
    }

    /// Tags of `repo` in lexical order after `last`, at most `n`.
    /// `None` if the repository is unknown.
    pub fn tags(
        &self,
        repo: &str,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<Option<Page>, StoreError> {
        let txn = self.meta.read()?;
        if txn.open_table(REPOS)?.get(repo)?.is_none() {
            return Ok(None);
        }
        let t = txn.open_table(TAGS)?;
        let start = match last {
            Some(l) => Bound::Excluded((repo, l)),
            None => Bound::Included((repo, "")),
        };
        let iter = t
            .range::<(&str, &str)>((start, Bound::Unbounded))?
            .map(|r| {
                r.map_err(StoreError::from).map(|(k, _)| {
                    let (r, tag) = k.value();
                    (r == repo).then(|| tag.to_string())
                })
            })
            .take_while(|r| !matches!(r, Ok(None)))
            .map(|r| r.map(|t| t.expect("filtered above")));
        page_of(iter, n).map(Some)
    }

    /// Repositories in lexical order after `last`, at most `n`.
    pub fn catalog(&self, last: Option<&str>, n: Option<usize>) -> Result<Page, StoreError> {
        let t = self.meta.read()?.open_table(REPOS)?;
        let start = match last {
            Some(l) => Bound::Excluded(l),
            None => Bound::Unbounded,
        };
        let iter = t.range::<&str>((start, Bound::Unbounded))?.map(|r| {
            r.map(|(k, _)| k.value().to_string())
                .map_err(StoreError::from)
        });
        page_of(iter, n)
    }

    /// Descriptors of the manifests in `repo` whose subject is `subject`,
    /// optionally only those of one artifact type.
    pub fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<serde_json::Value>, StoreError> {
        let t = self.meta.read()?.open_table(REFERRERS)?;
        let subject = subject.to_string();
        let mut out = Vec::new();
        for r in t.range((repo, subject.as_str(), "")..)? {
            let (k, v) = r?;
            let (r, s, _) = k.value();
            if r != repo || s != subject {
                break;
            }
            let desc: serde_json::Value = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Db(format!("referrer entry is corrupt: {e}")))?;
            if artifact_type
                .is_none_or(|want| desc.get("artifactType").and_then(|a| a.as_str()) == Some(want))
            {
                out.push(desc);
            }
        }
        Ok(out)
    }
}

fn parse_stored(d: &str) -> Result<Digest, StoreError> {
    d.parse()
        .map_err(|e| StoreError::Db(format!("stored digest {d:?} is invalid: {e}")))
}

/// An index of `repo` (present in it) that names `child`, if any.
fn referencing_index(
    txn: &WriteTransaction,
    repo: &str,
    child: &str,
) -> Result<Option<String>, StoreError> {
    let children = txn.open_table(INDEX_CHILDREN)?;
    let manifests = txn.open_table(MANIFESTS)?;
    for r in children.range((repo, child, "")..)? {
        let (k, _) = r?;
        let (r, c, parent) = k.value();
        if r != repo || c != child {
            break;
        }
        if parent != child && manifests.get((repo, parent))?.is_some() {
            return Ok(Some(parent.to_string()));
        }
    }
    Ok(None)
}

/// Fills `index_children` from the indexes already stored, once, for
/// databases written before the table existed.
pub(crate) fn backfill_index_children(txn: &WriteTransaction) -> Result<(), StoreError> {
    const MIGRATION: &str = "index_children";
    let mut schema = txn.open_table(SCHEMA)?;
    if schema.get(MIGRATION)?.is_some() {
        return Ok(());
    }
    let mut entries: Vec<(String, String, String)> = Vec::new();
    {
        let manifests = txn.open_table(MANIFESTS)?;
        let bytes = txn.open_table(MANIFEST_BYTES)?;
        for r in manifests.iter()? {
            let (k, media_type) = r?;
            let (repo, digest) = k.value();
            let media_type = media_type.value();
            if media_type != berth_oci::media_type::OCI_INDEX
                && media_type != berth_oci::media_type::DOCKER_MANIFEST_LIST
            {
                continue;
            }
            let Some(b) = bytes.get(digest)? else {
                continue;
            };
            if let Ok(m) = ParsedManifest::parse(b.value(), Some(media_type)) {
                for c in m.manifests {
                    entries.push((repo.to_string(), c.digest.to_string(), digest.to_string()));
                }
            }
        }
    }
    let mut children = txn.open_table(INDEX_CHILDREN)?;
    for (repo, child, parent) in &entries {
        children.insert((repo.as_str(), child.as_str(), parent.as_str()), ())?;
    }
    schema.insert(MIGRATION, 1)?;
    Ok(())
}

pub(crate) fn link(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
    size: u64,
) -> Result<(), StoreError> {
    txn.open_table(REPOS)?.insert(repo, ())?;
    txn.open_table(BLOB_LINKS)?.insert((repo, digest), size)?;
    Ok(())
}

fn put_manifest(
    txn: &WriteTransaction,
    put: PutManifest,
) -> Result<PutManifestOutcome, StoreError> {
    let repo = put.repo.as_str();
    let digest = put.digest.to_string();
    let parsed = &put.parsed;

    // Checks first: nothing below may fail for a logical reason.
    {
        let links = txn.open_table(BLOB_LINKS)?;
        for d in parsed.required_blobs() {
            match links.get((repo, d.digest.to_string().as_str()))? {
                None => return Err(StoreError::ManifestBlobUnknown(d.digest.clone())),
                Some(size) if size.value() != d.size => {
                    return Err(StoreError::ManifestInvalid(format!(
                        "descriptor of {} says size {}, but the blob has {} bytes",
                        d.digest,
                        d.size,
                        size.value()
                    )))
                }
                Some(_) => {}
            }
        }
    }
    if parsed.kind == ManifestKind::Index && !put.allow_sparse_index {
        let manifests = txn.open_table(MANIFESTS)?;
        for child in &parsed.manifests {
            if manifests
                .get((repo, child.digest.to_string().as_str()))?
                .is_none()
            {
                return Err(StoreError::ManifestBlobUnknown(child.digest.clone()));
            }
        }
    }

    txn.open_table(REPOS)?.insert(repo, ())?;
    {
        let mut bytes = txn.open_table(MANIFEST_BYTES)?;
        if bytes.get(digest.as_str())?.is_none() {
            bytes.insert(digest.as_str(), put.bytes.as_slice())?;
        }
    }
    txn.open_table(MANIFESTS)?
        .insert((repo, digest.as_str()), parsed.media_type.as_str())?;
    if let Some(tag) = &put.tag {
        txn.open_table(TAGS)?
            .insert((repo, tag.as_str()), digest.as_str())?;
    }
    if parsed.kind == ManifestKind::Index {
        let mut children = txn.open_table(INDEX_CHILDREN)?;
        for child in &parsed.manifests {
            let child = child.digest.to_string();
            children.insert((repo, child.as_str(), digest.as_str()), ())?;
        }
    }
    if let Some(subject) = &parsed.subject {
        let mut desc = serde_json::json!({
            "mediaType": parsed.media_type,
            "digest": digest,
            "size": put.bytes.len(),
        });
        if let Some(at) = parsed.effective_artifact_type() {
            desc["artifactType"] = at.into();
        }
        if let Some(a) = &parsed.annotations {
            desc["annotations"] = a.clone().into();
        }
        let subject = subject.digest.to_string();
        txn.open_table(REFERRERS)?.insert(
            (repo, subject.as_str(), digest.as_str()),
            serde_json::to_vec(&desc).expect("json").as_slice(),
        )?;
    }
    Ok(PutManifestOutcome {
        digest: put.digest,
        subject: parsed.subject.as_ref().map(|s| s.digest.clone()),
    })
}

pub(crate) fn delete_manifest(
    txn: &WriteTransaction,
    repo: &str,
    digest: &str,
) -> Result<bool, StoreError> {
    let media_type = match txn.open_table(MANIFESTS)?.remove((repo, digest))? {
        Some(m) => m.value().to_string(),
        None => return Ok(false),
    };
    {
        let mut tags = txn.open_table(TAGS)?;
        let mut doomed = Vec::new();
        for r in tags.range((repo, "")..)? {
            let (k, v) = r?;
            let (r, tag) = k.value();
            if r != repo {
                break;
            }
            if v.value() == digest {
                doomed.push(tag.to_string());
            }
        }
        for tag in doomed {
            tags.remove((repo, tag.as_str()))?;
        }
    }
    let parsed = txn
        .open_table(MANIFEST_BYTES)?
        .get(digest)?
        .and_then(|b| ParsedManifest::parse(b.value(), Some(&media_type)).ok());
    let Some(parsed) = parsed else {
        return Ok(true);
    };
    if let Some(subject) = &parsed.subject {
        let subject = subject.digest.to_string();
        txn.open_table(REFERRERS)?
            .remove((repo, subject.as_str(), digest))?;
    }
    if parsed.kind == ManifestKind::Index {
        let mut children = txn.open_table(INDEX_CHILDREN)?;
        for child in &parsed.manifests {
            let child = child.digest.to_string();
            children.remove((repo, child.as_str(), digest))?;
        }
    }
    Ok(true)
}
