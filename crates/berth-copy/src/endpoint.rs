//! Sources and destinations behind one small trait: a registry repository,
//! an OCI layout directory, or a repository of the local store.

use std::path::PathBuf;

use berth_client::{ClientConfig, RegistryClient};
use berth_layout::OciLayout;
use berth_oci::{Descriptor, Digest, ImageRef, ParsedManifest, Reference};
use berth_root::{LocalRoot, RootError};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use crate::{Error, Result};

/// A manifest, byte-exact.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Bytes,
    pub media_type: String,
    pub digest: Digest,
}

pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Where a manifest goes in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A child of an index being copied: stored by digest only.
    Child,
    /// What the copy was asked for, named `tag` if the destination has one.
    Top(Option<&'a str>),
}

impl<'a> Target<'a> {
    pub fn tag(self) -> Option<&'a str> {
        match self {
            Target::Child => None,
            Target::Top(t) => t,
        }
    }
}

/// What a copy needs from a source and a destination.
pub trait Endpoint: Send + Sync {
    /// A manifest by tag or digest (verified against a digest reference).
    fn get_manifest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Fetched>>;
    /// The size of a blob, if this endpoint has it.
    fn has_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>>>;
    /// A blob's content, NOT verified against `digest`: whoever consumes
    /// it verifies (every `write_blob` does; a reader into memory hashes
    /// it). `size` is what its
    /// descriptor declares: a registry download stops at the first byte
    /// past it ([`berth_client::Error::SizeMismatch`]), and the copy checks
    /// every source the same way.
    fn read_blob<'a>(&'a self, digest: &'a Digest, size: u64) -> BoxFuture<'a, Result<ByteStream>>;
    /// Stores a blob, verified against `digest` and `size`: on mismatch
    /// nothing is stored.
    fn write_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        data: ByteStream,
    ) -> BoxFuture<'a, Result<()>>;
    /// Stores a manifest byte-exact (named by its tag for `Target::Top`).
    fn put_manifest<'a>(
        &'a self,
        manifest: &'a Fetched,
        target: Target<'a>,
    ) -> BoxFuture<'a, Result<()>>;
    /// The registry host and repository, for cross-repository mounts.
    fn registry_repo(&self) -> Option<(&str, &str)> {
        None
    }
    /// Links `digest` from repository `from` of the same registry; `false`
    /// if this endpoint cannot (the caller uploads instead).
    fn mount_blob<'a>(
        &'a self,
        _from: &'a str,
        _digest: &'a Digest,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }
    /// Completes a destination after the copy (an archive is written and
    /// renamed into place); nothing for the others.
    fn finish(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

fn media_type_of(bytes: &[u8], hint: Option<&str>) -> Result<String> {
    Ok(ParsedManifest::parse(bytes, hint)
        .map_err(|e| Error::Manifest(e.to_string()))?
        .media_type)
}

/// Reads a file as a stream of 1 MiB chunks.
pub fn file_stream(file: std::fs::File) -> ByteStream {
    let file = tokio::fs::File::from_std(file);
    stream::try_unfold(file, |mut f| async move {
        crate::staging::check()?;
        let mut buf = vec![0u8; 1 << 20];
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), f)))
    })
    .boxed()
}

/// Feeds `data` to a blocking writer (or reader: `berth dive` reads layer
/// streams with it) through a bounded channel.
pub async fn sink_blocking<T, F>(mut data: ByteStream, write: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut ChannelReader) -> Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let task = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            current: Bytes::new(),
        };
        write(&mut reader)
    });
    let mut source_error = None;
    while let Some(item) = data.next().await {
        let item = crate::staging::check().and(item);
        let (item, stop) = match item {
            Ok(b) => (Ok(b), false),
            Err(e) => {
                let msg = e.to_string();
                source_error = Some(e);
                (Err(std::io::Error::other(msg)), true)
            }
        };
        // The writer stopped early (it failed): its error is reported below.
        if tx.send(item).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    let result = task
        .await
        .map_err(|e| Error::Other(format!("writer task failed: {e}")))?;
    match source_error {
        Some(e) => Err(e),
        None => result,
    }
}

pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn next_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        if !self.current.is_empty() {
            return Ok(Some(std::mem::take(&mut self.current)));
        }
        match self.rx.blocking_recv() {
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(mut chunk) = self.next_chunk()? else {
                return Ok(0);
            };
            if chunk.is_empty() {
                continue;
            }
            let n = chunk.len().min(buf.len());
            buf[..n].copy_from_slice(&chunk[..n]);
            self.current = chunk.split_off(n);
            return Ok(n);
        }
    }
}

/// A repository of a registry.
pub struct RegistryEndpoint {
    client: RegistryClient,
    repository: String,
}

impl RegistryEndpoint {
    pub fn open(image: &ImageRef, insecure: bool) -> Result<RegistryEndpoint> {
        let mut config = ClientConfig::from_docker_config(&image.registry)?;
        config.insecure = insecure;
        Ok(RegistryEndpoint {
            client: RegistryClient::new(image.api_host(), config)?,
            repository: image.repository.clone(),
        })
    }
}

impl Endpoint for RegistryEndpoint {
    fn get_manifest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Fetched>> {
        Box::pin(async move {
            let m = self
                .client
                .get_manifest(&self.repository, reference, &[])
                .await?;
            Ok(Fetched {
                bytes: m.bytes,
                media_type: m.media_type,
                digest: m.digest,
            })
        })
    }

    fn has_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move { Ok(self.client.blob_exists(&self.repository, digest).await?) })
    }

    fn read_blob<'a>(&'a self, digest: &'a Digest, size: u64) -> BoxFuture<'a, Result<ByteStream>> {
        Box::pin(async move {
            let blob = self
                .client
                .get_blob_unverified(&self.repository, digest, Some(size), 0)
                .await?;
            Ok(resuming(
                self.client.clone(),
                self.repository.clone(),
                digest.clone(),
                size,
                blob.stream,
            ))
        })
    }

    fn write_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        data: ByteStream,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let data = data.map(|r| r.map_err(std::io::Error::other));
            Ok(self
                .client
                .push_blob(&self.repository, digest, size, data)
                .await?)
        })
    }

    fn put_manifest<'a>(&'a self, m: &'a Fetched, target: Target<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let digest = m.digest.to_string();
            let reference = target.tag().unwrap_or(&digest);
            self.client
                .put_manifest(&self.repository, reference, &m.media_type, m.bytes.clone())
                .await?;
            Ok(())
        })
    }

    fn registry_repo(&self) -> Option<(&str, &str)> {
        Some((self.client.registry(), &self.repository))
    }

    fn mount_blob<'a>(&'a self, from: &'a str, digest: &'a Digest) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            Ok(self
                .client
                .mount_blob(&self.repository, from, digest)
                .await?)
        })
    }
}

/// Times a download is resumed after its connection broke.
const RESUMES: u32 = 3;

/// A download that resumes with `Range` where it broke off when the
/// connection fails mid-body. The content is verified by the destination
/// alone (berth-store and berth-layout hash what they write, registries what
/// they receive; see [`Endpoint::read_blob`]), so it is hashed once, not
/// twice, and a resumed download is verified whole all the same. A stall (the idle timeout) is resumed only if data came since
/// the last connection: a registry that hangs again at once is given up on
/// (as containers/image's body reader does), not waited for three times more.
fn resuming(
    client: RegistryClient,
    repository: String,
    digest: Digest,
    size: u64,
    first: berth_client::BlobStream,
) -> ByteStream {
    struct State {
        client: RegistryClient,
        repository: String,
        digest: Digest,
        size: u64,
        offset: u64,
        /// Where the current connection started.
        connected_at: u64,
        inner: Option<berth_client::BlobStream>,
        resumes: u32,
    }
    let state = State {
        client,
        repository,
        digest,
        size,
        offset: 0,
        connected_at: 0,
        inner: Some(first),
        resumes: 0,
    };
    stream::try_unfold(state, |mut st| async move {
        loop {
            let inner = match &mut st.inner {
                Some(i) => i,
                None => {
                    let blob = st
                        .client
                        .get_blob_unverified(&st.repository, &st.digest, Some(st.size), st.offset)
                        .await?;
                    st.connected_at = st.offset;
                    st.inner.insert(blob.stream)
                }
            };
            match inner.next().await {
                Some(Ok(chunk)) => {
                    st.offset += chunk.len() as u64;
                    return Ok(Some((chunk, st)));
                }
                None => return Ok(None),
                Some(Err(e))
                    if st.resumes < RESUMES && resumable(&e, st.offset > st.connected_at) =>
                {
                    st.resumes += 1;
                    st.inner = None;
                    tokio::time::sleep(std::time::Duration::from_millis(200 << st.resumes)).await;
                }
                Some(Err(e)) => return Err(Error::from(e)),
            }
        }
    })
    .boxed()
}

/// A broken connection is resumed; a stall only after progress.
fn resumable(e: &berth_client::Error, progressed: bool) -> bool {
    match e {
        berth_client::Error::Transport { .. } => true,
        berth_client::Error::Timeout { .. } => progressed,
        _ => false,
    }
}

/// An OCI image layout directory.
pub struct LayoutEndpoint {
    layout: OciLayout,
}

impl LayoutEndpoint {
    pub fn open(path: &std::path::Path, create: bool) -> Result<LayoutEndpoint> {
        let layout = if create {
            OciLayout::open_or_create(path)?
        } else {
            OciLayout::open(path)?
        };
        Ok(LayoutEndpoint { layout })
    }
}

impl Endpoint for LayoutEndpoint {
    fn get_manifest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Fetched>> {
        Box::pin(async move {
            let (digest, hint) = match reference.parse::<Digest>() {
                Ok(d) => (d, None),
                Err(_) => {
                    let name = (!reference.is_empty()).then_some(reference);
                    let d = self.layout.resolve(name)?;
                    (d.digest, Some(d.media_type))
                }
            };
            // Read whole: bounded like a registry's.
            if let Some(n) = self.layout.blob_size(&digest)? {
                if n > berth_client::MAX_MANIFEST_BYTES as u64 {
                    return Err(Error::Limit(format!(
                        "manifest {digest} is {}, more than the {} berth accepts; refusing it",
                        berth_client::settings::format_size(n),
                        berth_client::settings::format_size(
                            berth_client::MAX_MANIFEST_BYTES as u64
                        )
                    )));
                }
            }
            let bytes = self.layout.read_blob(&digest)?;
            let hint = hint.filter(|h| !h.is_empty());
            let media_type = media_type_of(&bytes, hint.as_deref())?;
            Ok(Fetched {
                bytes: bytes.into(),
                media_type,
                digest,
            })
        })
    }

    fn has_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move { Ok(self.layout.blob_size(digest)?) })
    }

    fn read_blob<'a>(&'a self, digest: &'a Digest, _: u64) -> BoxFuture<'a, Result<ByteStream>> {
        Box::pin(async move { Ok(file_stream(self.layout.open_blob(digest)?)) })
    }

    fn write_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        data: ByteStream,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let layout = self.layout.clone();
            let d = digest.clone();
            let n = sink_blocking(data, move |r| Ok(layout.write_blob(&d, r)?)).await?;
            if n != size {
                return Err(Error::Other(format!(
                    "blob {digest} has {n} bytes, its descriptor says {size}"
                )));
            }
            Ok(())
        })
    }

    fn put_manifest<'a>(&'a self, m: &'a Fetched, target: Target<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let digest = self.layout.write_blob_bytes(&m.bytes)?;
            debug_assert_eq!(digest, m.digest);
            if let Target::Top(tag) = target {
                // An untagged top-level manifest is listed without a name.
                let desc = Descriptor {
                    media_type: m.media_type.clone(),
                    digest: m.digest.clone(),
                    size: m.bytes.len() as u64,
                    urls: None,
                    annotations: None,
                    artifact_type: None,
                    platform: None,
                };
                self.layout.add_manifest(desc, tag)?;
            }
            Ok(())
        })
    }
}

/// A repository of the local store: opened directly, or through the
/// `berth serve` that holds the root (see `berth_root`). Blobs are written
/// straight into the root's `blobs/` and then linked; manifests go through
/// the handle, so a server sees them at once.
pub struct StoreEndpoint {
    root: std::sync::Arc<LocalRoot>,
    repo: String,
}

/// Store errors keep their type (callers match on them); the rest become
/// messages.
fn root_error(e: RootError) -> Error {
    match e {
        RootError::Store(e) => Error::Store(Box::new(e)),
        RootError::Io(e) => Error::Io(e),
        RootError::Manifest(m) => Error::Manifest(m),
        other => Error::Other(other.to_string()),
    }
}

impl StoreEndpoint {
    /// Opens the root at `root` (waits a bounded time if another command
    /// holds it; see `berth_root::OpenOptions`).
    pub fn open(root: &std::path::Path, repo: &str) -> Result<StoreEndpoint> {
        Ok(StoreEndpoint {
            root: std::sync::Arc::new(LocalRoot::open(root).map_err(root_error)?),
            repo: repo.to_string(),
        })
    }

    /// A repository of an already opened root (one process opens a root
    /// once; the builder shares it between its stages and outputs).
    pub fn from_root(root: std::sync::Arc<LocalRoot>, repo: &str) -> StoreEndpoint {
        StoreEndpoint {
            root,
            repo: repo.to_string(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.root.root().to_path_buf()
    }
}

impl Endpoint for StoreEndpoint {
    fn get_manifest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Fetched>> {
        Box::pin(async move {
            let r = Reference::parse(reference)
                .map_err(|e| Error::Other(format!("reference {reference:?}: {e}")))?;
            let m = self
                .root
                .manifest(&self.repo, &r)
                .await
                .map_err(root_error)?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "{}:{reference} is not in the local store {}",
                        self.repo,
                        self.root.root().display()
                    ))
                })?;
            Ok(Fetched {
                bytes: m.bytes.into(),
                media_type: m.media_type,
                digest: m.digest,
            })
        })
    }

    fn has_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            self.root
                .blob_in_repo(&self.repo, digest)
                .await
                .map_err(root_error)
        })
    }

    fn read_blob<'a>(&'a self, digest: &'a Digest, _: u64) -> BoxFuture<'a, Result<ByteStream>> {
        Box::pin(async move {
            let linked = self
                .root
                .blob_in_repo(&self.repo, digest)
                .await
                .map_err(root_error)?;
            if linked.is_none() {
                return Err(Error::NotFound(format!(
                    "blob {digest} is not in repository {} of the local store",
                    self.repo
                )));
            }
            Ok(file_stream(self.root.blobs().open_blob(digest)?))
        })
    }

    fn write_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        data: ByteStream,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // Another repository of the store may already hold the data.
            if self.root.blobs().size(digest)? != Some(size) {
                let mut writer = self.root.blobs().writer()?;
                let d = digest.clone();
                sink_blocking(data, move |r| {
                    let result = (|| {
                        while let Some(chunk) = r.next_chunk()? {
                            writer.write_bytes(chunk)?;
                        }
                        Ok(writer.commit(&d, Some(size))?)
                    })();
                    if result.is_err() {
                        writer.discard();
                    }
                    result
                })
                .await?;
            }
            self.root
                .link_blob(&self.repo, digest)
                .await
                .map_err(root_error)?;
            Ok(())
        })
    }

    fn put_manifest<'a>(&'a self, m: &'a Fetched, target: Target<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let digest = self
                .root
                .put_manifest(&self.repo, target.tag(), m.bytes.clone(), &m.media_type)
                .await
                .map_err(root_error)?;
            if digest != m.digest {
                return Err(Error::Other(format!(
                    "manifest {} was stored as {digest}: only sha256 manifests can go into the local store",
                    m.digest
                )));
            }
            Ok(())
        })
    }
}
