//! The copy: resolve the source manifest, pick a platform or take every
//! child of an index, move the blobs the destination lacks (in parallel,
//! streaming, verified by the destination), then the manifests byte-exact,
//! children before the index that names them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_oci::{Descriptor, Digest, ManifestKind, ParsedManifest};
use futures_util::future::BoxFuture;
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::archive::{ArchiveKind, ArchiveLimits, ArchiveReader, ArchiveWriter};
use crate::endpoint::{
    ByteStream, Endpoint, Fetched, LayoutEndpoint, RegistryEndpoint, StoreEndpoint, Target,
};
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
    /// The local store's root for `local:` locations (and where archives
    /// being read are staged: `<root>/ingest/archives/`).
    pub root: std::path::PathBuf,
    /// Bounds on extracting archives being read.
    pub archive: ArchiveLimits,
}

/// Most layers an image may have: 4096. Far above what runs anywhere
/// (Docker's overlay2 stops at 125 layers, overlayfs at 500 lower
/// directories) and above the ~2,000 a registry's 4 MiB manifest can
/// list, far below the 200,000 of an archive made to stall a copy.
pub const MAX_LAYERS: usize = 4096;

/// Deepest nesting of indexes a copy follows: 16. Real images nest one
/// level (an index of images, attestations included); the image-spec's
/// discussion of recursive references (opencontainers/image-spec#780)
/// suggested 20 levels as where implementations may refuse. Each manifest
/// is also copied at most once per copy, so indexes that name the same
/// child many times (a diamond) cost nothing more.
pub const MAX_INDEX_DEPTH: usize = 16;

pub(crate) fn too_many_layers(what: &str, n: usize) -> Error {
    Error::Limit(format!(
        "{what}: an image with {n} layers; berth copies at most {MAX_LAYERS} layers an image \
         (refusing it)"
    ))
}

/// Progress reports, in the order things happen. A blob ends with exactly
/// one of `Copied`, `Skipped` or `Mounted` (unless the copy fails); only a
/// copied blob has `Started` and `Progress` before that.
#[derive(Debug, Clone)]
pub enum Event {
    /// A blob's bytes start to move (again, after a retried failure: its
    /// progress restarts from 0).
    Started { digest: Digest, size: u64 },
    /// Bytes of a moving blob read from the source so far. Sent at most
    /// every [`PROGRESS_INTERVAL`] per blob, never per chunk.
    Progress {
        digest: Digest,
        done: u64,
        total: u64,
    },
    /// Streamed from the source and stored, verified, at the destination.
    Copied { digest: Digest, size: u64 },
    /// The destination already had it.
    Skipped { digest: Digest, size: u64 },
    /// Linked from repository `from` of the same registry; no bytes moved.
    Mounted {
        digest: Digest,
        size: u64,
        from: String,
    },
    /// A manifest stored byte-exact (children before the index naming them).
    Manifest {
        digest: Digest,
        media_type: String,
        size: u64,
    },
}

/// How often a moving blob reports [`Event::Progress`]: often enough for a
/// smooth bar, rare enough to cost nothing next to the transfer.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

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
        Location::OciArchive { path, .. } => Box::new(ArchiveReader::open(
            path,
            ArchiveKind::Oci,
            &opts.root,
            &opts.archive,
        )?),
        Location::DockerArchive { path, .. } if create => {
            Box::new(ArchiveWriter::create(path, ArchiveKind::Docker)?)
        }
        Location::DockerArchive { path, .. } => Box::new(ArchiveReader::open(
            path,
            ArchiveKind::Docker,
            &opts.root,
            &opts.archive,
        )?),
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

/// The image a location names in an opened `source`: its manifest, or
/// `opts.platform`'s child of an index.
pub async fn resolve_location(
    source: &dyn Endpoint,
    src: &Location,
    opts: &Options,
) -> Result<(Fetched, ParsedManifest)> {
    resolve(source, src, &source_reference(src), opts).await
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
        copied: std::sync::Mutex::new(std::collections::HashSet::new()),
    };
    ctx.copy_manifest(&top, &parsed, Target::Top(name), 0)
        .await?;
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
    if m.bytes.len() as u64 != d.size {
        return Err(Error::SizeMismatch(format!(
            "manifest {} is {} bytes, its descriptor declares {}; the source is corrupt",
            d.digest,
            m.bytes.len(),
            d.size
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
    /// Child manifests already copied (an index may name one many times).
    copied: std::sync::Mutex<std::collections::HashSet<Digest>>,
}

impl Ctx<'_> {
    /// `depth`: how many indexes lead to `m` (0 for the top).
    fn copy_manifest<'b>(
        &'b self,
        m: &'b Fetched,
        parsed: &'b ParsedManifest,
        target: Target<'b>,
        depth: usize,
    ) -> BoxFuture<'b, Result<()>> {
        Box::pin(async move {
            crate::staging::check()?;
            match parsed.kind {
                ManifestKind::Index => {
                    if depth >= MAX_INDEX_DEPTH && !parsed.manifests.is_empty() {
                        return Err(Error::Limit(format!(
                            "index {} is nested {} levels deep; berth follows indexes at most \
                             {MAX_INDEX_DEPTH} levels deep (refusing it)",
                            m.digest,
                            depth + 1
                        )));
                    }
                    for child in &parsed.manifests {
                        if self.copied.lock().unwrap().contains(&child.digest) {
                            continue;
                        }
                        let cm = fetch_child(self.src, child).await?;
                        let cp = parse(&cm)?;
                        self.copy_manifest(&cm, &cp, Target::Child, depth + 1)
                            .await?;
                        self.copied.lock().unwrap().insert(child.digest.clone());
                    }
                }
                ManifestKind::Image => {
                    if parsed.layers.len() > MAX_LAYERS {
                        return Err(too_many_layers(
                            &format!("manifest {}", m.digest),
                            parsed.layers.len(),
                        ));
                    }
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
                media_type: m.media_type.clone(),
                size: m.bytes.len() as u64,
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
                (self.progress)(Event::Mounted {
                    digest,
                    size,
                    from: srepo.to_string(),
                });
                return Ok(());
            }
        }
        let data = capped(
            self.src.read_blob(&d.digest, d.size).await?,
            d.digest.clone(),
            d.size,
        );
        (self.progress)(Event::Started {
            digest: digest.clone(),
            size,
        });
        // The stream only bumps a counter; this task samples it on a timer,
        // so the per-chunk cost is one relaxed atomic add.
        let done = Arc::new(AtomicU64::new(0));
        let mut write = self
            .dst
            .write_blob(&d.digest, d.size, counted(data, done.clone()));
        let start = tokio::time::Instant::now() + PROGRESS_INTERVAL;
        let mut tick = tokio::time::interval_at(start, PROGRESS_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                result = &mut write => {
                    result?;
                    break;
                }
                _ = tick.tick() => (self.progress)(Event::Progress {
                    digest: digest.clone(),
                    done: done.load(Ordering::Relaxed),
                    total: size,
                }),
            }
        }
        (self.progress)(Event::Copied { digest, size });
        Ok(())
    }
}

/// `data`, failing with [`Error::SizeMismatch`] at the first byte past
/// `size` or at an end short of it: whatever the source, a copy never moves
/// more than the descriptor declares.
fn capped(data: ByteStream, digest: Digest, size: u64) -> ByteStream {
    stream::try_unfold(
        (data, 0u64, digest),
        move |(mut data, seen, digest)| async move {
            match data.next().await {
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    if seen > size {
                        return Err(Error::SizeMismatch(format!(
                        "blob {digest} has more than the {size} bytes its descriptor declares; \
                         the source is corrupt (stopped there)"
                    )));
                    }
                    Ok(Some((chunk, (data, seen, digest))))
                }
                Some(Err(e)) => Err(e),
                None if seen < size => Err(Error::SizeMismatch(format!(
                    "blob {digest} has {seen} bytes, its descriptor declares {size}; the source \
                 is corrupt"
                ))),
                None => Ok(None),
            }
        },
    )
    .boxed()
}

/// `data`, adding the length of every chunk that passes to `done`.
fn counted(data: ByteStream, done: Arc<AtomicU64>) -> ByteStream {
    data.inspect_ok(move |chunk| {
        done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use bytes::Bytes;

    /// A layout whose blob reads trickle: `chunks` chunks of 1 KiB, `pause`
    /// apart, so a transfer spans several progress intervals.
    struct Slow {
        inner: LayoutEndpoint,
        layout: berth_layout::OciLayout,
        chunks: usize,
        pause: Duration,
    }

    impl Endpoint for Slow {
        fn get_manifest<'a>(&'a self, r: &'a str) -> BoxFuture<'a, Result<Fetched>> {
            self.inner.get_manifest(r)
        }
        fn has_blob<'a>(&'a self, d: &'a Digest) -> BoxFuture<'a, Result<Option<u64>>> {
            self.inner.has_blob(d)
        }
        fn read_blob<'a>(&'a self, d: &'a Digest, _: u64) -> BoxFuture<'a, Result<ByteStream>> {
            Box::pin(async move {
                let data = Bytes::from(self.layout.read_blob(d)?);
                let pause = self.pause;
                let per = data.len().div_ceil(self.chunks).max(1);
                let parts: Vec<Bytes> = (0..data.len())
                    .step_by(per)
                    .map(|i| data.slice(i..(i + per).min(data.len())))
                    .collect();
                Ok(stream::iter(parts)
                    .then(move |b| async move {
                        tokio::time::sleep(pause).await;
                        Ok(b)
                    })
                    .boxed())
            })
        }
        fn write_blob<'a>(
            &'a self,
            d: &'a Digest,
            size: u64,
            data: ByteStream,
        ) -> BoxFuture<'a, Result<()>> {
            self.inner.write_blob(d, size, data)
        }
        fn put_manifest<'a>(&'a self, m: &'a Fetched, t: Target<'a>) -> BoxFuture<'a, Result<()>> {
            self.inner.put_manifest(m, t)
        }
    }

    fn source_layout(dir: &Path, layer: &[u8]) -> Digest {
        let layout = berth_layout::OciLayout::open_or_create(dir).unwrap();
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = layout.write_blob_bytes(config).unwrap();
        let ld = layout.write_blob_bytes(layer).unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": berth_oci::media_type::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd.to_string(), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": ld.to_string(), "size": layer.len()}],
        }))
        .unwrap();
        let md = layout.write_blob_bytes(&manifest).unwrap();
        let desc = Descriptor {
            media_type: berth_oci::media_type::OCI_MANIFEST.into(),
            digest: md.clone(),
            size: manifest.len() as u64,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        };
        layout.add_manifest(desc, Some("v1")).unwrap();
        md
    }

    #[tokio::test]
    async fn progress_is_reported_at_a_bounded_rate_then_each_blob_once() {
        let tmp = tempfile::tempdir().unwrap();
        let layer = vec![7u8; 100 * 1024];
        let md = source_layout(&tmp.path().join("src"), &layer);
        let layer_digest = Digest::sha256_of(&layer);
        // 100 chunks over ~500 ms: about 5 progress reports, not 100.
        let src = Slow {
            inner: LayoutEndpoint::open(&tmp.path().join("src"), false).unwrap(),
            layout: berth_layout::OciLayout::open(&tmp.path().join("src")).unwrap(),
            chunks: 100,
            pause: Duration::from_millis(5),
        };
        let dst = LayoutEndpoint::open(&tmp.path().join("dst"), true).unwrap();
        let opts = Options {
            all: false,
            platform: Platform::parse("linux/amd64").unwrap(),
            jobs: 2,
            insecure: false,
            root: tmp.path().join("root"),
            archive: ArchiveLimits::default(),
        };
        let events = Mutex::new(Vec::new());
        let what = Location::Layout {
            path: tmp.path().join("src"),
            tag: Some("v1".into()),
        };
        let record = |e: Event| events.lock().unwrap().push(e);
        let got = copy_endpoints(&src, &what, "v1", &dst, Some("v1"), &opts, &record)
            .await
            .unwrap();
        assert_eq!(got, md);
        let events = events.into_inner().unwrap();
        let of_layer: Vec<&Event> = events
            .iter()
            .filter(|e| match e {
                Event::Started { digest, .. }
                | Event::Progress { digest, .. }
                | Event::Copied { digest, .. } => *digest == layer_digest,
                _ => false,
            })
            .collect();
        assert!(matches!(
            of_layer.first(),
            Some(Event::Started { size: 102400, .. })
        ));
        assert!(matches!(
            of_layer.last(),
            Some(Event::Copied { size: 102400, .. })
        ));
        let done: Vec<u64> = of_layer
            .iter()
            .filter_map(|e| match e {
                Event::Progress { done, total, .. } => {
                    assert_eq!(*total, 102400);
                    Some(*done)
                }
                _ => None,
            })
            .collect();
        assert!(!done.is_empty(), "a slow blob reports progress: {events:?}");
        assert!(done.len() <= 12, "bounded by time, not chunks: {done:?}");
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
        assert!(done.iter().all(|d| *d <= 102400));
        assert!(matches!(
            events.last(),
            Some(Event::Manifest { digest, media_type, .. })
                if *digest == md && media_type == berth_oci::media_type::OCI_MANIFEST
        ));

        // Again: both blobs are there, so nothing starts or moves.
        let events = Mutex::new(Vec::new());
        let record = |e: Event| events.lock().unwrap().push(e);
        copy_endpoints(&src, &what, "v1", &dst, Some("v1"), &opts, &record)
            .await
            .unwrap();
        let events = events.into_inner().unwrap();
        let skipped = events
            .iter()
            .filter(|e| matches!(e, Event::Skipped { .. }))
            .count();
        assert_eq!(skipped, 2, "{events:?}");
        assert!(!events.iter().any(|e| matches!(
            e,
            Event::Started { .. } | Event::Progress { .. } | Event::Copied { .. }
        )));
    }

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
