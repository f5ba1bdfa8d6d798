//! Images the build reads (base images) and writes (the result), seen
//! through berth-copy's [`Endpoint`] so every output (local store, registry,
//! OCI/Docker archives) is one `copy`.

use std::io::Read;
use std::sync::Arc;

use berth_copy::{Endpoint, Fetched, Location, Options, Target};
use berth_oci::{
    media_type, Descriptor, Digest, ImageConfig, ImageRef, ManifestKind, ParsedManifest,
};
use berth_store::BlobStore;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::json;

use crate::cache::LayerRef;
use crate::{BuildError, Platform, Result};

/// Opens a repository of the local store as a copy endpoint.
pub type LocalRepos = Arc<dyn Fn(&str) -> berth_copy::Result<Box<dyn Endpoint>> + Send + Sync>;

/// A resolved base image: one platform's manifest, its config and layers.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub name: String,
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
}

fn platform_matches(p: &serde_json::Value, want: &Platform) -> bool {
    let f = |k: &str| p.get(k).and_then(|v| v.as_str());
    f("os") == Some(want.os.as_str())
        && f("architecture") == Some(want.architecture.as_str())
        && match (&want.variant, f("variant")) {
            (Some(w), Some(v)) => w == v,
            (Some(w), None) => w.is_empty(),
            (None, _) => true,
        }
}

/// Reads a blob of the content store whole (configs are small).
pub fn read_blob(blobs: &BlobStore, digest: &Digest) -> Result<Vec<u8>> {
    let mut f = blobs
        .open_blob(digest)
        .map_err(|e| BuildError::Store(format!("blob {digest} is not in the store: {e}")))?;
    let mut v = Vec::new();
    f.read_to_end(&mut v)?;
    if Digest::of(digest.algorithm(), &v) != *digest {
        return Err(BuildError::Store(format!(
            "blob {digest} in the store does not match its digest; run berth fsck"
        )));
    }
    Ok(v)
}

/// Finds `name` in the local store, or (when absent or `pull`) pulls it
/// from its registry into the local store first, and resolves `platform`.
pub async fn resolve_base(
    name: &str,
    platform: &Platform,
    pull: bool,
    insecure: bool,
    local: &LocalRepos,
    blobs: &BlobStore,
    root: &std::path::Path,
) -> Result<BaseImage> {
    let r = ImageRef::parse(name)
        .map_err(|e| BuildError::Base(format!("{name:?} is not a valid image reference: {e}")))?;
    let reference = r.reference();
    let repo = local(&r.repository).map_err(|e| BuildError::Store(e.to_string()))?;
    let mut found = if pull {
        None
    } else {
        repo.get_manifest(&reference).await.ok()
    };
    if found.is_none() {
        let opts = Options {
            all: false,
            platform: platform.clone(),
            jobs: 4,
            insecure,
            root: root.to_path_buf(),
            archive: berth_copy::ArchiveLimits::from_env(),
        };
        let src = berth_copy::open(&Location::Registry(r.clone()), &opts, false)
            .map_err(|e| BuildError::Base(format!("{name}: {e}")))?;
        let tag = r.tag.clone();
        berth_copy::copy_endpoints(
            src.as_ref(),
            &Location::Registry(r.clone()),
            &reference,
            repo.as_ref(),
            tag.as_deref(),
            &opts,
            &|_| {},
        )
        .await
        .map_err(|e| {
            BuildError::Base(format!(
                "failed to resolve base image {name}: {e} (load it with `berth load`/`berth import`, or check the name)"
            ))
        })?;
        found = Some(
            repo.get_manifest(&reference)
                .await
                .map_err(|e| BuildError::Base(format!("{name}: {e}")))?,
        );
    }
    let mut top = found.expect("set above");
    let mut parsed = ParsedManifest::parse(&top.bytes, Some(&top.media_type))
        .map_err(|e| BuildError::Base(format!("{name}: invalid manifest: {e}")))?;
    if parsed.kind == ManifestKind::Index {
        let child = parsed
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| platform_matches(p, platform))
            })
            .cloned()
            .ok_or_else(|| {
                BuildError::Base(format!("{name} has no image for platform {platform}"))
            })?;
        top = repo
            .get_manifest(&child.digest.to_string())
            .await
            .map_err(|e| BuildError::Base(format!("{name}: {e}")))?;
        parsed = ParsedManifest::parse(&top.bytes, Some(&top.media_type))
            .map_err(|e| BuildError::Base(format!("{name}: invalid manifest: {e}")))?;
    }
    let config_desc = parsed
        .config
        .clone()
        .ok_or_else(|| BuildError::Base(format!("{name}: the manifest names no config")))?;
    let config: ImageConfig = serde_json::from_slice(&read_blob(blobs, &config_desc.digest)?)
        .map_err(|e| BuildError::Base(format!("{name}: invalid image config: {e}")))?;
    if !config.os.is_empty()
        && (config.os != platform.os || config.architecture != platform.architecture)
    {
        return Err(BuildError::Base(format!(
            "{name} is for {}/{}, but the build is for {platform} (use --platform)",
            config.os, config.architecture
        )));
    }
    let layers = layer_refs(&parsed.layers, &config)
        .map_err(|e| BuildError::Base(format!("{name}: {e}")))?;
    Ok(BaseImage {
        name: name.to_string(),
        manifest_digest: top.digest,
        config,
        layers,
    })
}

/// The image a build made: its manifest in memory, config and layers in the
/// content store. A read-only copy source.
pub struct BuiltImage {
    pub manifest: Fetched,
    pub config_digest: Digest,
    pub blobs: BlobStore,
}

/// Media types of an output: Docker's (the default, like `docker build`)
/// or OCI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTypes {
    Docker,
    Oci,
}

impl MediaTypes {
    pub fn manifest(self) -> &'static str {
        match self {
            MediaTypes::Docker => media_type::DOCKER_MANIFEST,
            MediaTypes::Oci => media_type::OCI_MANIFEST,
        }
    }

    pub fn config(self) -> &'static str {
        match self {
            MediaTypes::Docker => media_type::DOCKER_CONFIG,
            MediaTypes::Oci => media_type::OCI_CONFIG,
        }
    }

    /// A layer's media type for this output, translating the base image's
    /// layers between the two families.
    pub fn layer(self, compressed_as: &str) -> String {
        let gzip = compressed_as.ends_with("gzip");
        let zstd = compressed_as.ends_with("zstd");
        match self {
            MediaTypes::Docker if gzip => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip".into()
            }
            MediaTypes::Docker if zstd => "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            MediaTypes::Docker => "application/vnd.docker.image.rootfs.diff.tar".into(),
            MediaTypes::Oci if gzip => "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            MediaTypes::Oci if zstd => "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            MediaTypes::Oci => "application/vnd.oci.image.layer.v1.tar".into(),
        }
    }
}

impl BuiltImage {
    /// Writes the config into the store and assembles the manifest.
    pub fn assemble(
        blobs: &BlobStore,
        config: &ImageConfig,
        layers: &[LayerRef],
        types: MediaTypes,
    ) -> Result<BuiltImage> {
        let config_bytes =
            serde_json::to_vec(config).map_err(|e| BuildError::Other(e.to_string()))?;
        let config_digest = Digest::sha256_of(&config_bytes);
        if blobs.size(&config_digest)?.is_none() {
            let mut w = blobs.writer()?;
            w.write(&config_bytes)?;
            w.commit(&config_digest, Some(config_bytes.len() as u64))
                .map_err(|e| BuildError::Store(e.to_string()))?;
        }
        let layer_descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": types.layer(&l.media_type),
                    "size": l.size,
                    "digest": l.digest.to_string(),
                })
            })
            .collect();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": types.manifest(),
            "config": {
                "mediaType": types.config(),
                "size": config_bytes.len(),
                "digest": config_digest.to_string(),
            },
            "layers": layer_descs,
        });
        let bytes =
            serde_json::to_vec_pretty(&manifest).map_err(|e| BuildError::Other(e.to_string()))?;
        let digest = Digest::sha256_of(&bytes);
        Ok(BuiltImage {
            manifest: Fetched {
                bytes: Bytes::from(bytes),
                media_type: types.manifest().to_string(),
                digest,
            },
            config_digest,
            blobs: blobs.clone(),
        })
    }

    pub fn digest(&self) -> &Digest {
        &self.manifest.digest
    }
}

/// What writing to a build result (a copy source only) answers.
pub(crate) fn read_only<'a, T: 'a>() -> BoxFuture<'a, berth_copy::Result<T>> {
    Box::pin(async {
        Err(berth_copy::Error::Other(
            "a build result is read-only".into(),
        ))
    })
}

impl Endpoint for BuiltImage {
    fn get_manifest<'a>(
        &'a self,
        _reference: &'a str,
    ) -> BoxFuture<'a, berth_copy::Result<Fetched>> {
        Box::pin(async move { Ok(self.manifest.clone()) })
    }

    fn has_blob<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, berth_copy::Result<Option<u64>>> {
        Box::pin(async move { Ok(self.blobs.size(digest)?) })
    }

    fn read_blob<'a>(
        &'a self,
        digest: &'a Digest,
        _size: u64,
    ) -> BoxFuture<'a, berth_copy::Result<BoxStream<'static, berth_copy::Result<Bytes>>>> {
        Box::pin(async move {
            Ok(berth_copy::endpoint::file_stream(
                self.blobs.open_blob(digest)?,
            ))
        })
    }

    fn write_blob<'a>(
        &'a self,
        _digest: &'a Digest,
        _size: u64,
        _data: BoxStream<'static, berth_copy::Result<Bytes>>,
    ) -> BoxFuture<'a, berth_copy::Result<()>> {
        crate::image::read_only()
    }

    fn put_manifest<'a>(
        &'a self,
        _manifest: &'a Fetched,
        _target: Target<'a>,
    ) -> BoxFuture<'a, berth_copy::Result<()>> {
        crate::image::read_only()
    }
}

/// The descriptor of a stored layer, for callers that need one.
/// An image's layers, each descriptor paired with its config's diff_id;
/// an error if the manifest and the config disagree on how many there are.
pub fn layer_refs(
    layers: &[Descriptor],
    config: &ImageConfig,
) -> std::result::Result<Vec<LayerRef>, String> {
    if layers.len() != config.rootfs.diff_ids.len() {
        return Err(format!(
            "the manifest has {} layers but the config {} diff_ids",
            layers.len(),
            config.rootfs.diff_ids.len()
        ));
    }
    Ok(layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff_id)| LayerRef {
            diff_id: diff_id.clone(),
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
        })
        .collect())
}

pub fn descriptor(l: &LayerRef) -> Descriptor {
    Descriptor {
        media_type: l.media_type.clone(),
        digest: l.digest.clone(),
        size: l.size,
        urls: None,
        annotations: None,
        artifact_type: None,
        platform: None,
    }
}
