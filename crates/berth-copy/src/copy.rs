//! The copy: resolve the source manifest, pick a platform or take every
//! child of an index, move the blobs the destination lacks (in parallel,
//! streaming, verified by the destination), then the manifests byte-exact,
//! children before the index that names them.

use std::path::Path;
use std::time::Duration;

use berth_oci::{Descriptor, Digest, ManifestKind, ParsedManifest};
use futures_util::future::BoxFuture;
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::archive::{ArchiveKind, ArchiveReader, ArchiveWriter};
use crate::endpoint::{Endpoint, Fetched, LayoutEndpoint, RegistryEndpoint, StoreEndpoint, Target};
use crate::{Error, Location, Result};

/// `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
            }),
            _ => Err(format!(
                "platform {s:?} is not OS/ARCH[/VARIANT] (e.g. linux/amd64)"
            )),
        }
    }

    fn matches(&self, p: &serde_json::Value) -> bool {
        let field = |k: &str| p.get(k).and_then(|v| v.as_str());
        field("os") == Some(self.os.as_str())
            && field("architecture") == Some(self.architecture.as_str())
            && match &self.variant {
                Some(v) => field("variant") == Some(v.as_str()),
                None => true,
            }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Copy every image of an index (else only `platform`'s).
    pub all: bool,
    pub platform: Platform,
    /// Blobs transferred at once.
    pub jobs: usize,
    /// Plain HTTP for registries.
    pub insecure: bool,
    /// The local store's root for `local:` locations.
    pub root: std::path::PathBuf,
}

/// Progress reports.
#[derive(Debug, Clone)]
pub enum Event {
    Copied { digest: Digest, size: u64 },
    Skipped { digest: Digest, size: u64 },
    Mounted { digest: Digest, size: u64 },
    Manifest { digest: Digest },
}

/// Opens the endpoint a location names; a destination is created if needed.
pub fn open(loc: &Location, opts: &Options, create: bool) -> Result<Box<dyn Endpoint>> {
    Ok(match loc {
        Location::Registry(r) => Box::new(RegistryEndpoint::open(r, opts.insecure)?),
        Location::Layout { path, .. } => Box::new(LayoutEndpoint::open(path, create)?),
        Location::Local { repo, .. } => {
            if !create && !opts.root.join("meta.redb").exists() {
                return Err(Error::NotFound(format!(
                    "the local store {} does not exist; pull an image into it first",
                    opts.root.display()
                )));
            }
            Box::new(StoreEndpoint::open(Path::new(&opts.root), repo)?)
        }
        Location::OciArchive { path, .. } if create => {
            Box::new(ArchiveWriter::create(path, ArchiveKind::Oci)?)
        }
        Location::OciArchive { path, .. } => Box::new(ArchiveReader::open(path, ArchiveKind::Oci)?),
        Location::DockerArchive { path, .. } if create => {
            Box::new(ArchiveWriter::create(path, ArchiveKind::Docker)?)
        }
        Location::DockerArchive { path, .. } => {
            Box::new(ArchiveReader::open(path, ArchiveKind::Docker)?)
        }
    })
}

/// The name a destination gives the copied image: its tag, or for a
/// docker-archive the `NAME:TAG` of its `RepoTags`.
fn destination_name(loc: &Location) -> Option<String> {
    match loc {
        Location::DockerArchive { reference, .. } => reference.as_ref().map(|r| r.familiar()),
        other => other.tag().map(str::to_string),
    }
}

fn source_reference(loc: &Location) -> String {
    match loc {
        Location::Registry(r) => r.reference(),
        Location::Layout { tag, .. } | Location::OciArchive { tag, .. } => {
            tag.clone().unwrap_or_default()
        }
        Location::DockerArchive { reference, .. } => {
            reference.as_ref().map(|r| r.familiar()).unwrap_or_default()
        }
        Location::Local { reference, .. } => reference.clone().unwrap_or_else(|| "latest".into()),
    }
}

fn parse(m: &Fetched) -> Result<ParsedManifest> {
    ParsedManifest::parse(&m.bytes, Some(&m.media_type))
        .map_err(|e| Error::Manifest(format!("{}: {e}", m.digest)))
}

/// Copies `src` to `dst` and returns the digest of the manifest copied (the
/// index with `all`, else the selected image). Nothing is written to the
/// destination before the source manifest is resolved.
pub async fn copy(
    src: &Location,
    dst: &Location,
    opts: &Options,
    progress: &(dyn Fn(Event) + Send + Sync),
) -> Result<Digest> {
    let source = open(src, opts, false)?;
    let (top, parsed) = resolve(source.as_ref(), src, &source_reference(src), opts).await?;
    let destination = open(dst, opts, true)?;
    let name = destination_name(dst);
    let digest = copy_resolved(
        source.as_ref(),
        destination.as_ref(),
        top,
        parsed,
        name.as_deref(),
        opts,
        progress,
    )
    .await?;
    destination.finish().await?;
    Ok(digest)
}

/// Copies image `reference` of an opened `source` (`what` names it in
/// errors) into an opened `destination` under `name`; the caller calls
/// [`Endpoint::finish`] when done (several images may go to one archive).
pub async fn copy_endpoints(
    source: &dyn Endpoint,
    what: &Location,
    reference: &str,
    destination: &dyn Endpoint,
    name: Option<&str>,
    opts: &Options,
    progress: &(dyn Fn(Event) + Send + Sync),
) -> Result<Digest> {
    let (top, parsed) = resolve(source, what, reference, opts).await?;
    copy_resolved(source, destination, top, parsed, name, opts, progress).await
}

/// The source manifest: the image itself, or `opts.platform`'s child of an
/// index unless `opts.all`.
async fn resolve(
    source: &dyn Endpoint,
    src: &Location,
    reference: &str,
    opts: &Options,
) -> Result<(Fetched, ParsedManifest)> {
    let top = source.get_manifest(reference).await?;
    let parsed = parse(&top)?;
    if parsed.kind == ManifestKind::Index && !opts.all {
        let child = parsed
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| opts.platform.matches(p)))
            .ok_or_else(|| {
                let have: Vec<String> = parsed
                    .manifests
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| {
                        let f = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
                        format!("{}/{}", f("os"), f("architecture"))
                    })
                    .collect();
                Error::NotFound(format!(
                    "{src} has no image for platform {}; it has {} (use --platform, or --all to copy every one)",
                    opts.platform,
                    if have.is_empty() { "none".into() } else { have.join(", ") }
                ))
            })?;
        let m = fetch_child(source, child).await?;
        let p = parse(&m)?;
        Ok((m, p))
    } else {
        Ok((top, parsed))
    }
}

async fn copy_resolved(
    source: &dyn Endpoint,
    destination: &dyn Endpoint,
    top: Fetched,
    parsed: ParsedManifest,
    name: Option<&str>,
    opts: &Options,
    progress: &(dyn Fn(Event) + Send + Sync),
) -> Result<Digest> {
    let ctx = Ctx {
        src: source,
        dst: destination,
        opts,
        progress,
    };
    ctx.copy_manifest(&top, &parsed, Target::Top(name)).await?;
    Ok(top.digest)
}

async fn fetch_child(src: &dyn Endpoint, d: &Descriptor) -> Result<Fetched> {
    let m = src.get_manifest(&d.digest.to_string()).await?;
    let actual = Digest::of(d.digest.algorithm(), &m.bytes);
    if actual != d.digest {
        return Err(Error::Other(format!(
            "manifest {} from the source has digest {actual}; the source is corrupt",
            d.digest
        )));
    }
    Ok(Fetched {
        digest: d.digest.clone(),
        ..m
    })
}

const BLOB_ATTEMPTS: u32 = 3;

/// A dropped connection or a server-side failure: worth another try.
fn transient(e: &Error) -> bool {
    match e {
        Error::Client(c) => match c.as_ref() {
            berth_client::Error::Transport { .. } => true,
            berth_client::Error::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        },
        _ => false,
    }
}

struct Ctx<'a> {
    src: &'a dyn Endpoint,
    dst: &'a dyn Endpoint,
    opts: &'a Options,
    progress: &'a (dyn Fn(Event) + Send + Sync),
}

impl Ctx<'_> {
    fn copy_manifest<'b>(
        &'b self,
        m: &'b Fetched,
        parsed: &'b ParsedManifest,
        target: Target<'b>,
    ) -> BoxFuture<'b, Result<()>> {
        Box::pin(async move {
            match parsed.kind {
                ManifestKind::Index => {
                    for child in &parsed.manifests {
                        let cm = fetch_child(self.src, child).await?;
                        let cp = parse(&cm)?;
                        self.copy_manifest(&cm, &cp, Target::Child).await?;
                    }
                }
                ManifestKind::Image => {
                    let blobs: Vec<&Descriptor> = parsed
                        .config
                        .iter()
                        .chain(parsed.layers.iter())
                        .filter(|d| {
                            !(berth_oci::media_type::is_non_distributable(&d.media_type)
                                && d.urls.is_some())
                        })
                        .collect();
                    // The same blob twice (e.g. two identical layers) is copied once.
                    let mut seen = std::collections::HashSet::new();
                    let transfers: Vec<BoxFuture<'_, Result<()>>> = blobs
                        .into_iter()
                        .filter(|d| seen.insert(d.digest.clone()))
                        .map(|d| self.copy_blob(d.clone()))
                        .collect();
                    stream::iter(transfers)
                        .buffer_unordered(self.opts.jobs.max(1))
                        .try_collect::<Vec<()>>()
                        .await?;
                }
            }
            self.dst.put_manifest(m, target).await?;
            (self.progress)(Event::Manifest {
                digest: m.digest.clone(),
            });
            Ok(())
        })
    }

    /// One blob, retried whole (re-read, re-sent) after a transient failure
    /// in the middle of a transfer, which the client cannot retry itself.
    fn copy_blob(&self, d: Descriptor) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                match self.copy_blob_inner(&d).await {
                    Err(e) if attempt < BLOB_ATTEMPTS && transient(&e) => {
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })
    }

    async fn copy_blob_inner(&self, d: &Descriptor) -> Result<()> {
        let (digest, size) = (d.digest.clone(), d.size);
        if self.dst.has_blob(&d.digest).await? == Some(d.size) {
            (self.progress)(Event::Skipped { digest, size });
            return Ok(());
        }
        if let (Some((sh, srepo)), Some((dh, _))) =
            (self.src.registry_repo(), self.dst.registry_repo())
        {
            if sh == dh && self.dst.mount_blob(srepo, &d.digest).await? {
                (self.progress)(Event::Mounted { digest, size });
                return Ok(());
            }
        }
        let data = self.src.read_blob(&d.digest).await?;
        self.dst.write_blob(&d.digest, d.size, data).await?;
        (self.progress)(Event::Copied { digest, size });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches(
            &serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"})
        ));
        assert!(!p.matches(&serde_json::json!({"os": "linux", "architecture": "amd64"})));
        let v = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(v.to_string(), "linux/arm/v7");
        assert!(
            !v.matches(&serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v6"}))
        );
        for bad in ["", "linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
    }
}
