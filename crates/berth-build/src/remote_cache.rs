//! Remote build cache in BuildKit's formats: `--cache-to` / `--cache-from`
//! with `type=inline`, `type=registry` and `type=local`.
//!
//! The cache config is BuildKit's v0 (`application/vnd.buildkit.cacheconfig.v0`,
//! see BuildKit's `cache/remotecache/v1/spec.go`): `layers` is a forest of
//! blobs (each names its parent by index, `-1` for none) and every record
//! names the top of a layer chain as its result. A record's digest is
//! berth's own cache key (`sha256:<key>`), and a key already covers its
//! parent's, so an imported record answers a step exactly like the local
//! index does; `inputs` link a record to its parent step's record for
//! BuildKit-shaped tooling.
//!
//! Imports are read at build start, beside base image resolution. A hit
//! costs nothing until its layer is needed: a later step that runs on top
//! of it (its snapshot is unpacked from the blob, downloaded then) or an
//! output that needs the bytes ([`RemoteCache::image_source`] streams them
//! from the cache's registry, which a push to the same registry mounts).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use berth_copy::{Endpoint, Fetched, Target};
use berth_oci::{media_type, Descriptor, Digest, ImageRef, ManifestKind, ParsedManifest};
use berth_store::BlobStore;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::cache::{CacheIndex, CacheKey, CacheRecord, LayerRef};
use crate::progress::{Event, Progress};
use crate::Platform;

/// Media type of BuildKit's cache config blob.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.buildkit.cacheconfig.v0";
/// The image config field holding an inline cache (base64 of the config).
pub const INLINE_CACHE_FIELD: &str = "moby.buildkit.cache.v0";
/// Layer descriptor annotations BuildKit writes in cache manifests.
const ANNOTATION_UNCOMPRESSED: &str = "containerd.io/uncompressed";
const ANNOTATION_CREATED: &str = "buildkit/createdat";
/// A cache config larger than this is refused (BuildKit's are kilobytes).
const MAX_CONFIG: usize = 64 << 20;

// ---------------------------------------------------------------------------
// BuildKit's cache config (v0), field names and omissions as BuildKit's.

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<CacheLayer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<ConfigRecord>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheLayer {
    pub blob: Digest,
    /// Index of the layer below, `-1` for none (0 is omitted, as in Go).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parent: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<LayerAnnotations>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LayerAnnotations {
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(rename = "diffID", default, skip_serializing_if = "String::is_empty")]
    pub diff_id: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    #[serde(
        rename = "createdAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub created_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigRecord {
    #[serde(rename = "layers", default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ConfigResult>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Vec<ConfigInput>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigResult {
    pub layer: i64,
    #[serde(
        rename = "createdAt",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigInput {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    pub link: i64,
}

// ---------------------------------------------------------------------------
// Flags.

/// `mode=` of an exported cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The steps of the final image only (BuildKit's default).
    Min,
    /// Every step of every stage built.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheTo {
    Inline,
    Registry {
        reference: ImageRef,
        mode: CacheMode,
        oci_media_types: bool,
        image_manifest: bool,
        ignore_error: bool,
    },
    Local {
        dest: PathBuf,
        tag: String,
        mode: CacheMode,
        oci_media_types: bool,
        image_manifest: bool,
        ignore_error: bool,
    },
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheFrom {
    Registry {
        reference: ImageRef,
    },
    Local {
        src: PathBuf,
        /// `digest=` wins over `tag=` (default `latest`).
        reference: String,
    },
}

impl std::fmt::Display for CacheFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheFrom::Registry { reference } => write!(f, "{reference}"),
            CacheFrom::Local { src, reference } => write!(f, "{}:{reference}", src.display()),
        }
    }
}

fn csv(s: &str, flag: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{flag} {s:?}: {part:?} is not KEY=VALUE"))?;
        map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    Ok(map)
}

fn bool_attr(
    attrs: &BTreeMap<String, String>,
    key: &str,
    default: bool,
    flag: &str,
) -> Result<bool, String> {
    match attrs.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(format!("{flag} {key}={v}: use true or false")),
    }
}

fn registry_ref(v: &str, flag: &str) -> Result<ImageRef, String> {
    ImageRef::parse(v).map_err(|e| format!("{flag} ref={v:?} is not an image reference: {e}"))
}

fn unsupported(kind: &str, flag: &str) -> String {
    format!("{flag} type={kind} is not supported by berth: use type=registry, type=local or (for --cache-to) type=inline")
}

/// Parses `--cache-to` like buildx: `type=...,k=v`, or a bare reference
/// for `type=registry,ref=R`.
pub fn parse_cache_to(s: &str) -> Result<CacheTo, String> {
    const FLAG: &str = "--cache-to";
    if !s.contains('=') {
        return Ok(CacheTo::Registry {
            reference: registry_ref(s, FLAG)?,
            mode: CacheMode::Min,
            oci_media_types: true,
            image_manifest: false,
            ignore_error: false,
        });
    }
    let attrs = csv(s, FLAG)?;
    let mode = match attrs.get("mode").map(String::as_str) {
        None | Some("min") => CacheMode::Min,
        Some("max") => CacheMode::Max,
        Some(v) => return Err(format!("{FLAG} mode={v}: use min or max")),
    };
    let oci_media_types = bool_attr(&attrs, "oci-mediatypes", true, FLAG)?;
    let image_manifest = bool_attr(&attrs, "image-manifest", false, FLAG)?;
    if image_manifest && !oci_media_types {
        return Err(format!(
            "{FLAG} image-manifest=true needs oci-mediatypes=true (as in BuildKit)"
        ));
    }
    let ignore_error = bool_attr(&attrs, "ignore-error", false, FLAG)?;
    match attrs.get("type").map(String::as_str) {
        Some("inline") => Ok(CacheTo::Inline),
        Some("registry") => {
            let r = attrs
                .get("ref")
                .ok_or_else(|| format!("{FLAG} type=registry needs ref=REGISTRY/REPO[:TAG]"))?;
            Ok(CacheTo::Registry {
                reference: registry_ref(r, FLAG)?,
                mode,
                oci_media_types,
                image_manifest,
                ignore_error,
            })
        }
        Some("local") => {
            let dest = attrs
                .get("dest")
                .ok_or_else(|| format!("{FLAG} type=local needs dest=DIRECTORY"))?;
            Ok(CacheTo::Local {
                dest: PathBuf::from(dest),
                tag: attrs.get("tag").cloned().unwrap_or_else(|| "latest".into()),
                mode,
                oci_media_types,
                image_manifest,
                ignore_error,
            })
        }
        None => Err(format!(
            "{FLAG} {s:?} has no type= (registry, local, inline)"
        )),
        Some(other) => Err(unsupported(other, FLAG)),
    }
}

/// Parses `--cache-from` like buildx / docker build: a bare reference is
/// `type=registry,ref=R`.
pub fn parse_cache_from(s: &str) -> Result<CacheFrom, String> {
    const FLAG: &str = "--cache-from";
    if !s.contains('=') {
        return Ok(CacheFrom::Registry {
            reference: registry_ref(s, FLAG)?,
        });
    }
    let attrs = csv(s, FLAG)?;
    match attrs.get("type").map(String::as_str) {
        Some("registry") => {
            let r = attrs
                .get("ref")
                .ok_or_else(|| format!("{FLAG} type=registry needs ref=REGISTRY/REPO[:TAG]"))?;
            Ok(CacheFrom::Registry {
                reference: registry_ref(r, FLAG)?,
            })
        }
        Some("local") => {
            let src = attrs
                .get("src")
                .ok_or_else(|| format!("{FLAG} type=local needs src=DIRECTORY"))?;
            let reference = match (attrs.get("digest"), attrs.get("tag")) {
                (Some(d), _) => {
                    d.parse::<Digest>()
                        .map_err(|e| format!("{FLAG} digest={d}: {e}"))?;
                    d.clone()
                }
                (None, Some(t)) => t.clone(),
                (None, None) => "latest".into(),
            };
            Ok(CacheFrom::Local {
                src: PathBuf::from(src),
                reference,
            })
        }
        None => Err(format!("{FLAG} {s:?} has no type= (registry, local)")),
        Some(other) => Err(unsupported(other, FLAG)),
    }
}

// ---------------------------------------------------------------------------
// The build's remote cache state.

/// A step as the build saw it (run or cached), for exports.
#[derive(Debug, Clone)]
struct StepNote {
    parent: CacheKey,
    /// The stage's layers after the step (provisional ones resolved at
    /// export).
    stack: Vec<LayerRef>,
    created: String,
}

/// Where imported blobs come from.
struct Source {
    name: String,
    endpoint: Box<dyn Endpoint>,
}

#[derive(Default)]
struct Imported {
    /// Key -> (record, index of its source).
    records: HashMap<String, (CacheRecord, usize)>,
    /// Blob -> index of a source that has it.
    blobs: HashMap<Digest, usize>,
    sources: Vec<Source>,
}

/// Imports and exports of one build. Shared by the builder and the CLI
/// (which exports after the image is written).
pub struct RemoteCache {
    imports: Vec<CacheFrom>,
    exports: Vec<CacheTo>,
    insecure: bool,
    platform: Platform,
    loaded: tokio::sync::OnceCell<Imported>,
    notes: Mutex<HashMap<CacheKey, StepNote>>,
    /// Imported records used by this build, recorded locally once their
    /// blob is in the store.
    hits: Mutex<BTreeMap<CacheKey, CacheRecord>>,
    fetches: Mutex<HashMap<Digest, Arc<tokio::sync::OnceCell<()>>>>,
}

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteCache")
            .field("imports", &self.imports)
            .field("exports", &self.exports)
            .finish()
    }
}

fn sha256_key(digest: &str) -> Option<CacheKey> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| CacheKey(hex.to_string()))
}

impl RemoteCache {
    pub fn new(
        imports: Vec<CacheFrom>,
        exports: Vec<CacheTo>,
        insecure: bool,
        platform: Platform,
    ) -> RemoteCache {
        RemoteCache {
            imports,
            exports,
            insecure,
            platform,
            loaded: tokio::sync::OnceCell::new(),
            notes: Mutex::new(HashMap::new()),
            hits: Mutex::new(BTreeMap::new()),
            fetches: Mutex::new(HashMap::new()),
        }
    }

    pub fn exports(&self) -> &[CacheTo] {
        &self.exports
    }

    pub fn inline(&self) -> bool {
        self.exports.iter().any(|e| matches!(e, CacheTo::Inline))
    }

    fn wants_notes(&self) -> bool {
        !self.exports.is_empty()
    }

    /// Reads every `--cache-from` (once; concurrent callers wait for the
    /// same load). A cache that cannot be read is a warning, as in
    /// BuildKit: the build goes on without it.
    pub async fn ready(&self, progress: &Progress) {
        self.loaded
            .get_or_init(|| async {
                let loads = self.imports.iter().map(|from| async move {
                    let id =
                        progress.start(format!("[internal] importing cache manifest from {from}"));
                    let started = std::time::Instant::now();
                    match self.load_one(from).await {
                        Ok(r) => {
                            progress.emit(Event::Done {
                                id,
                                elapsed: started.elapsed(),
                            });
                            Some(r)
                        }
                        Err(e) => {
                            progress.emit(Event::Done {
                                id,
                                elapsed: started.elapsed(),
                            });
                            progress.emit(Event::Warning(format!(
                                "cache import {from}: {e}; building without it"
                            )));
                            None
                        }
                    }
                });
                let results = futures_util::future::join_all(loads).await;
                let mut imported = Imported::default();
                for (source, records, blobs) in results.into_iter().flatten() {
                    let index = imported.sources.len();
                    imported.sources.push(source);
                    for (d, _) in blobs {
                        imported.blobs.entry(d).or_insert(index);
                    }
                    for (k, r) in records {
                        imported.records.entry(k).or_insert((r, index));
                    }
                }
                imported
            })
            .await;
    }

    /// Reads one cache: its endpoint, records and blobs.
    #[allow(clippy::type_complexity)]
    async fn load_one(
        &self,
        from: &CacheFrom,
    ) -> Result<(Source, BTreeMap<String, CacheRecord>, Vec<(Digest, ())>), String> {
        let (endpoint, reference): (Box<dyn Endpoint>, String) = match from {
            CacheFrom::Registry { reference } => (
                Box::new(
                    berth_copy::endpoint::RegistryEndpoint::open(reference, self.insecure)
                        .map_err(|e| e.to_string())?,
                ),
                reference.reference(),
            ),
            CacheFrom::Local { src, reference } => {
                if !src.join("index.json").is_file() {
                    return Err(format!(
                        "{} is not a cache directory (no index.json); export one with --cache-to type=local,dest=DIR",
                        src.display()
                    ));
                }
                (
                    Box::new(
                        berth_copy::endpoint::LayoutEndpoint::open(src, false)
                            .map_err(|e| e.to_string())?,
                    ),
                    reference.clone(),
                )
            }
        };
        let top = endpoint
            .get_manifest(&reference)
            .await
            .map_err(|e| e.to_string())?;
        let (config, descs) = read_cache_config(endpoint.as_ref(), top, &self.platform).await?;
        let records = records_of(&config, &descs)?;
        let blobs = descs.keys().map(|d| (d.clone(), ())).collect();
        Ok((
            Source {
                name: from.to_string(),
                endpoint,
            },
            records,
            blobs,
        ))
    }

    /// The imported record of `key`, if any (after [`RemoteCache::ready`]).
    pub fn lookup(&self, key: &CacheKey) -> Option<CacheRecord> {
        let imported = self.loaded.get()?;
        let (record, _) = imported.records.get(&key.0)?;
        self.hits
            .lock()
            .unwrap()
            .insert(key.clone(), record.clone());
        Some(record.clone())
    }

    /// Remembers a step of this build for exports.
    pub fn note_step(&self, parent: &CacheKey, key: &CacheKey, stack: &[LayerRef], created: &str) {
        if !self.wants_notes() {
            return;
        }
        self.notes.lock().unwrap().insert(
            key.clone(),
            StepNote {
                parent: parent.clone(),
                stack: stack.to_vec(),
                created: created.to_string(),
            },
        );
    }

    /// Swaps the provisional layers of the noted steps for the real ones
    /// (the build made them in the background).
    pub fn resolve_notes(&self, resolve: &dyn Fn(&LayerRef) -> LayerRef) {
        for n in self.notes.lock().unwrap().values_mut() {
            for l in &mut n.stack {
                *l = match l.snapshot_name() {
                    // A snapshot-only layer got its blob as the step's
                    // pending layer (see `materialize_for_export`).
                    Some(_) => resolve(&LayerRef {
                        diff_id: format!("{}{}", crate::solver::PENDING, l.digest.hex()),
                        ..l.clone()
                    }),
                    None => resolve(l),
                };
            }
        }
    }

    /// Starts making blobs for the snapshot-only layers (steps of stages
    /// no image included) that a `mode=max` export names; the final
    /// image's own (`in_image`) are made by the build already.
    pub(crate) fn materialize_for_export(
        &self,
        eng: &Arc<crate::solver::Engine>,
        in_image: &[LayerRef],
    ) -> crate::Result<()> {
        let max = self.exports.iter().any(|e| {
            matches!(
                e,
                CacheTo::Registry {
                    mode: CacheMode::Max,
                    ..
                } | CacheTo::Local {
                    mode: CacheMode::Max,
                    ..
                }
            )
        });
        if !max {
            return Ok(());
        }
        let mut done: std::collections::HashSet<Digest> = in_image
            .iter()
            .filter(|l| l.snapshot_name().is_some())
            .map(|l| l.digest.clone())
            .collect();
        let notes: Vec<StepNote> = self.notes.lock().unwrap().values().cloned().collect();
        for n in notes {
            for (i, l) in n.stack.iter().enumerate() {
                if l.snapshot_name().is_none() || !done.insert(l.digest.clone()) {
                    continue;
                }
                eng.realize_snapshot_layer(&n.stack[..i], l, &n.created)?;
            }
        }
        Ok(())
    }

    /// Makes `layer`'s blob local if an imported cache has it and the
    /// store does not (a later step runs on top of it). Blocking: called
    /// from the builder's blocking threads.
    pub fn ensure_blob_blocking(
        self: &Arc<Self>,
        blobs: &BlobStore,
        layer: &LayerRef,
    ) -> crate::Result<()> {
        if blobs.size(&layer.digest).ok().flatten().is_some() {
            return Ok(());
        }
        let Some(imported) = self.loaded.get() else {
            return Ok(());
        };
        if !imported.blobs.contains_key(&layer.digest) {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|e| {
            crate::BuildError::Other(format!("no runtime for a cache download: {e}"))
        })?;
        // The download runs on the runtime; this (blocking) thread waits.
        let (tx, rx) = std::sync::mpsc::channel();
        let this = Arc::clone(self);
        let blobs2 = blobs.clone();
        let layer2 = layer.clone();
        handle.spawn(async move {
            let _ = tx.send(this.fetch(&blobs2, &layer2).await);
        });
        rx.recv()
            .map_err(|_| crate::BuildError::Other("cache download task vanished".into()))?
    }

    /// Downloads `layer`'s blob from the cache that has it, once.
    pub async fn fetch(&self, blobs: &BlobStore, layer: &LayerRef) -> crate::Result<()> {
        let cell = Arc::clone(
            self.fetches
                .lock()
                .unwrap()
                .entry(layer.digest.clone())
                .or_default(),
        );
        cell.get_or_try_init(|| async {
            if blobs.size(&layer.digest)?.is_some() {
                return Ok(());
            }
            let imported = self.loaded.get().ok_or_else(|| {
                crate::BuildError::Other("the remote cache was not loaded".into())
            })?;
            let source = imported
                .blobs
                .get(&layer.digest)
                .map(|i| &imported.sources[*i])
                .ok_or_else(|| {
                    crate::BuildError::Store(format!(
                        "layer {} is neither in the store nor in an imported cache",
                        layer.digest
                    ))
                })?;
            let stream = source
                .endpoint
                .read_blob(&layer.digest, layer.size)
                .await
                .map_err(|e| {
                    crate::BuildError::Store(format!(
                        "downloading layer {} from cache {}: {e}",
                        layer.digest, source.name
                    ))
                })?;
            write_stream(blobs, &layer.digest, layer.size, stream)
                .await
                .map_err(|e| {
                    crate::BuildError::Store(format!(
                        "downloading layer {} from cache {}: {e}",
                        layer.digest, source.name
                    ))
                })
        })
        .await
        .map(|_| ())
    }

    /// Records imported hits whose blob is now local in the local index,
    /// so the next build finds them without the remote cache.
    pub fn record_local_hits(&self, index: &CacheIndex, blobs: &BlobStore) {
        let hits = self.hits.lock().unwrap().clone();
        for (key, record) in hits {
            let local = match &record.layer {
                Some(l) => blobs.size(&l.digest).ok().flatten().is_some(),
                None => true,
            };
            if local {
                if let Err(e) = index.put(&key, &record) {
                    tracing::debug!("recording cache hit {key}: {e}");
                }
            }
        }
    }

    /// The cache config of the steps `mode` exports, built on `final_key`.
    /// `resolve` maps a provisional layer to the real one.
    fn config_for(
        &self,
        mode: CacheMode,
        final_key: &CacheKey,
        resolve: &dyn Fn(&LayerRef) -> LayerRef,
        annotate: bool,
    ) -> (CacheConfig, Vec<LayerRef>) {
        let notes = self.notes.lock().unwrap();
        // Steps in export order: the final image's chain bottom-up, then
        // (mode=max) the other steps by depth and key: deterministic, so a
        // rebuild writes the same bytes.
        let mut chain = Vec::new();
        let mut k = final_key.clone();
        while let Some(n) = notes.get(&k) {
            chain.push(k.clone());
            k = n.parent.clone();
            if chain.len() > notes.len() {
                break;
            }
        }
        chain.reverse();
        let mut keys = chain.clone();
        if mode == CacheMode::Max {
            let depth = |k: &CacheKey| {
                let mut d = 0;
                let mut k = k.clone();
                while let Some(n) = notes.get(&k) {
                    d += 1;
                    k = n.parent.clone();
                    if d > notes.len() {
                        break;
                    }
                }
                d
            };
            let mut rest: Vec<(usize, CacheKey)> = notes
                .keys()
                .filter(|k| !chain.contains(k))
                .map(|k| (depth(k), k.clone()))
                .collect();
            rest.sort();
            keys.extend(rest.into_iter().map(|(_, k)| k));
        }
        let mut config = CacheConfig::default();
        let mut layer_index: HashMap<(Digest, i64), i64> = HashMap::new();
        let mut used_layers: Vec<LayerRef> = Vec::new();
        let mut record_index: HashMap<CacheKey, i64> = HashMap::new();
        for key in &keys {
            let note = &notes[key];
            let mut parent = -1i64;
            for l in note.stack.iter().map(resolve) {
                let idx = *layer_index
                    .entry((l.digest.clone(), parent))
                    .or_insert_with(|| {
                        config.layers.push(CacheLayer {
                            blob: l.digest.clone(),
                            parent,
                            annotations: annotate.then(|| LayerAnnotations {
                                media_type: l.media_type.clone(),
                                diff_id: l.diff_id.clone(),
                                size: l.size as i64,
                                created_at: String::new(),
                            }),
                        });
                        (config.layers.len() - 1) as i64
                    });
                if !used_layers.iter().any(|u| u.digest == l.digest) {
                    used_layers.push(l.clone());
                }
                parent = idx;
            }
            record_index.insert(key.clone(), config.records.len() as i64);
            config.records.push(ConfigRecord {
                results: if parent >= 0 {
                    vec![ConfigResult {
                        layer: parent,
                        created_at: note.created.clone(),
                    }]
                } else {
                    Vec::new()
                },
                digest: format!("sha256:{key}"),
                inputs: Vec::new(),
            });
        }
        for key in &keys {
            let parent = &notes[key].parent;
            if let (Some(&me), Some(&link)) = (record_index.get(key), record_index.get(parent)) {
                config.records[me as usize].inputs = vec![vec![ConfigInput {
                    selector: String::new(),
                    link,
                }]];
            }
        }
        (config, used_layers)
    }

    /// Sets (or, without `type=inline`, removes) the inline cache of the
    /// final image's config. The layers are the image's own.
    pub fn apply_inline(&self, config: &mut berth_oci::ImageConfig, final_key: &CacheKey) {
        config.extra.remove(INLINE_CACHE_FIELD);
        if !self.inline() {
            return;
        }
        let (cc, _) = self.config_for(CacheMode::Min, final_key, &|l| l.clone(), false);
        if cc.records.is_empty() {
            return;
        }
        let json = serde_json::to_vec(&cc).expect("cache configs serialise");
        config.extra.insert(
            INLINE_CACHE_FIELD.into(),
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(json)),
        );
    }

    /// Writes every `type=registry` / `type=local` export. `final_key` is
    /// the target stage's key; layers are real (the build finished).
    pub async fn export(
        &self,
        final_key: &CacheKey,
        blobs: &BlobStore,
        progress: &Progress,
    ) -> crate::Result<()> {
        for to in &self.exports {
            let (what, ignore_error) = match to {
                CacheTo::Inline => continue,
                CacheTo::Registry {
                    reference,
                    ignore_error,
                    ..
                } => (
                    format!("exporting cache to registry {reference}"),
                    *ignore_error,
                ),
                CacheTo::Local {
                    dest, ignore_error, ..
                } => (
                    format!("exporting cache to {}", dest.display()),
                    *ignore_error,
                ),
            };
            let id = progress.start(what);
            let started = std::time::Instant::now();
            match self.export_one(to, final_key, blobs, progress).await {
                Ok(()) => progress.emit(Event::Done {
                    id,
                    elapsed: started.elapsed(),
                }),
                Err(e) if ignore_error => {
                    progress.emit(Event::Done {
                        id,
                        elapsed: started.elapsed(),
                    });
                    progress.emit(Event::Warning(format!(
                        "cache export failed (ignore-error=true): {e}"
                    )));
                }
                Err(e) => {
                    progress.emit(Event::Failed {
                        id,
                        error: e.to_string(),
                    });
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    async fn export_one(
        &self,
        to: &CacheTo,
        final_key: &CacheKey,
        blobs: &BlobStore,
        progress: &Progress,
    ) -> crate::Result<()> {
        let (mode, oci, image_manifest) = match to {
            CacheTo::Inline => return Ok(()),
            CacheTo::Registry {
                mode,
                oci_media_types,
                image_manifest,
                ..
            }
            | CacheTo::Local {
                mode,
                oci_media_types,
                image_manifest,
                ..
            } => (*mode, *oci_media_types, *image_manifest),
        };
        let (config, layers) = self.config_for(mode, final_key, &|l| l.clone(), true);
        let config_bytes = serde_json::to_vec(&config).expect("cache configs serialise");
        let config_digest = Digest::sha256_of(&config_bytes);
        let created: HashMap<Digest, String> = self
            .notes
            .lock()
            .unwrap()
            .values()
            .filter_map(|n| {
                n.stack
                    .last()
                    .map(|l| (l.digest.clone(), n.created.clone()))
            })
            .collect();
        let layer_descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                let mut ann = serde_json::Map::new();
                ann.insert(ANNOTATION_UNCOMPRESSED.into(), l.diff_id.clone().into());
                if let Some(c) = created.get(&l.digest) {
                    ann.insert(ANNOTATION_CREATED.into(), c.clone().into());
                }
                serde_json::json!({
                    "mediaType": layer_media_type(&l.media_type, oci),
                    "digest": l.digest.to_string(),
                    "size": l.size,
                    "annotations": ann,
                })
            })
            .collect();
        let config_desc = serde_json::json!({
            "mediaType": CACHE_CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        });
        let index_form = |oci: bool| {
            let mut manifests = layer_descs.clone();
            manifests.push(config_desc.clone());
            let mt = if oci {
                media_type::OCI_INDEX
            } else {
                media_type::DOCKER_MANIFEST_LIST
            };
            manifest_bytes(
                serde_json::json!({
                    "schemaVersion": 2, "mediaType": mt, "manifests": manifests,
                }),
                mt,
            )
        };
        let image_form = || {
            manifest_bytes(
                serde_json::json!({
                    "schemaVersion": 2, "mediaType": media_type::OCI_MANIFEST,
                    "config": config_desc, "layers": layer_descs,
                }),
                media_type::OCI_MANIFEST,
            )
        };
        let (dest, tag): (Box<dyn Endpoint>, String) = match to {
            CacheTo::Registry { reference, .. } => (
                Box::new(
                    berth_copy::endpoint::RegistryEndpoint::open(reference, self.insecure)
                        .map_err(|e| crate::BuildError::Other(format!("{reference}: {e}")))?,
                ),
                reference.reference(),
            ),
            CacheTo::Local { dest, tag, .. } => (
                Box::new(
                    berth_copy::endpoint::LayoutEndpoint::open(dest, true).map_err(|e| {
                        crate::BuildError::Other(format!("{}: {e}", dest.display()))
                    })?,
                ),
                tag.clone(),
            ),
            CacheTo::Inline => unreachable!(),
        };
        // Blobs first (the config and every layer), then the manifest.
        let source = self.image_source_for(blobs, None);
        let cfg_size = config_bytes.len() as u64;
        let cfg = Bytes::from(config_bytes);
        let cfg_stream: BoxStream<'static, berth_copy::Result<Bytes>> =
            futures_util::stream::once(async move { Ok(cfg) }).boxed();
        if dest.has_blob(&config_digest).await.map_err(other)? != Some(cfg_size) {
            dest.write_blob(&config_digest, cfg_size, cfg_stream)
                .await
                .map_err(other)?;
        }
        let transfers = layers.iter().map(|l| {
            let dest = dest.as_ref();
            let source = &source;
            async move {
                if dest.has_blob(&l.digest).await? == Some(l.size) {
                    return Ok(());
                }
                if let (Some((sh, srepo)), Some((dh, _))) =
                    (source.registry_repo(), dest.registry_repo())
                {
                    if sh == dh && dest.mount_blob(srepo, &l.digest).await? {
                        return Ok(());
                    }
                }
                let data = source.read_blob(&l.digest, l.size).await?;
                dest.write_blob(&l.digest, l.size, data).await
            }
        });
        futures_util::stream::iter(transfers)
            .buffer_unordered(4)
            .try_collect::<Vec<()>>()
            .await
            .map_err(other)?;
        let first = if image_manifest {
            image_form()
        } else {
            index_form(oci)
        };
        match dest.put_manifest(&first, Target::Top(Some(&tag))).await {
            Ok(()) => {}
            Err(e) if !image_manifest => {
                // Registries that want every index child to be a manifest
                // (berth serve by default, ECR) refuse BuildKit's index;
                // its image-manifest form carries the same cache.
                progress.emit(Event::Warning(format!(
                    "the registry refused the cache index ({e}); pushing it as an image manifest (image-manifest=true)"
                )));
                dest.put_manifest(&image_form(), Target::Top(Some(&tag)))
                    .await
                    .map_err(other)?;
            }
            Err(e) => return Err(other(e)),
        }
        dest.finish().await.map_err(other)?;
        Ok(())
    }

    /// The built image as a copy source whose layers may still live only
    /// in an imported cache: missing blobs stream from there (a push to
    /// the cache's registry mounts them instead).
    pub fn image_source<'a>(&'a self, image: &'a crate::BuiltImage) -> LazyImage<'a> {
        self.image_source_for(&image.blobs, Some(image))
    }

    fn image_source_for<'a>(
        &'a self,
        blobs: &BlobStore,
        image: Option<&'a crate::BuiltImage>,
    ) -> LazyImage<'a> {
        LazyImage {
            image,
            blobs: blobs.clone(),
            cache: self,
        }
    }

    /// Downloads every blob of `layers` an imported cache has and the
    /// store lacks (outputs that read the store directly).
    pub async fn fetch_all(&self, blobs: &BlobStore, layers: &[LayerRef]) -> crate::Result<()> {
        if self.loaded.get().is_none() {
            return Ok(());
        }
        for l in layers {
            let known = self
                .loaded
                .get()
                .is_some_and(|i| i.blobs.contains_key(&l.digest));
            if known && blobs.size(&l.digest)?.is_none() {
                self.fetch(blobs, l).await?;
            }
        }
        Ok(())
    }

    fn source_of(&self, digest: &Digest) -> Option<&Source> {
        let imported = self.loaded.get()?;
        imported.blobs.get(digest).map(|i| &imported.sources[*i])
    }
}

fn other(e: berth_copy::Error) -> crate::BuildError {
    crate::BuildError::Other(e.to_string())
}

fn manifest_bytes(v: serde_json::Value, mt: &str) -> Fetched {
    let bytes = serde_json::to_vec(&v).expect("manifests serialise");
    Fetched {
        digest: Digest::sha256_of(&bytes),
        bytes: Bytes::from(bytes),
        media_type: mt.to_string(),
    }
}

fn layer_media_type(stored: &str, oci: bool) -> String {
    let types = if oci {
        crate::MediaTypes::Oci
    } else {
        crate::MediaTypes::Docker
    };
    types.layer(stored)
}

/// Streams `data` into the store as `digest` (verified, durable).
async fn write_stream(
    blobs: &BlobStore,
    digest: &Digest,
    size: u64,
    mut data: BoxStream<'static, berth_copy::Result<Bytes>>,
) -> crate::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let blobs = blobs.clone();
    let d = digest.clone();
    let writer = tokio::task::spawn_blocking(move || -> crate::Result<()> {
        let mut w = blobs.writer()?;
        while let Some(chunk) = rx.blocking_recv() {
            w.write_bytes(chunk)?;
        }
        w.commit(&d, Some(size))
            .map_err(|e| crate::BuildError::Store(e.to_string()))?;
        Ok(())
    });
    let mut failed = None;
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| crate::BuildError::Other(format!("download task failed: {e}")))?;
    if let Some(e) = failed {
        return Err(crate::BuildError::Store(e));
    }
    written
}

/// Reads at most [`MAX_CONFIG`] bytes of a blob, verified.
async fn read_small_blob(ep: &dyn Endpoint, d: &Descriptor) -> Result<Vec<u8>, String> {
    if d.size as usize > MAX_CONFIG {
        return Err(format!(
            "blob {} is {} bytes, too large for a cache config",
            d.digest, d.size
        ));
    }
    let mut s = ep
        .read_blob(&d.digest, d.size)
        .await
        .map_err(|e| e.to_string())?;
    let mut v = Vec::with_capacity(d.size as usize);
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| e.to_string())?;
        v.extend_from_slice(&c);
        if v.len() > MAX_CONFIG {
            return Err(format!(
                "blob {} is larger than its descriptor says",
                d.digest
            ));
        }
    }
    if Digest::of(d.digest.algorithm(), &v) != d.digest {
        return Err(format!("blob {} does not match its digest", d.digest));
    }
    Ok(v)
}

/// What is known about a blob of the cache: its layer.
type Descs = HashMap<Digest, LayerRef>;

fn layer_of(d: &Descriptor) -> LayerRef {
    let diff_id = d
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_UNCOMPRESSED))
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    LayerRef {
        diff_id,
        digest: d.digest.clone(),
        size: d.size,
        media_type: d.media_type.clone(),
    }
}

/// Finds the cache config behind a manifest: BuildKit's cache index, its
/// image-manifest form, or an image (or an index of images) with an
/// inline cache. Returns the config and the layers it may name.
async fn read_cache_config(
    ep: &dyn Endpoint,
    top: Fetched,
    platform: &Platform,
) -> Result<(CacheConfig, Descs), String> {
    let parsed = ParsedManifest::parse(&top.bytes, Some(&top.media_type))
        .map_err(|e| format!("invalid manifest: {e}"))?;
    let (manifest, parsed) = match parsed.kind {
        ManifestKind::Index => {
            if let Some(cfg) = parsed
                .manifests
                .iter()
                .find(|d| d.media_type == CACHE_CONFIG_MEDIA_TYPE)
            {
                let bytes = read_small_blob(ep, cfg).await?;
                let config = parse_config(&bytes)?;
                let descs = parsed
                    .manifests
                    .iter()
                    .filter(|d| d.media_type != CACHE_CONFIG_MEDIA_TYPE)
                    .map(|d| (d.digest.clone(), layer_of(d)))
                    .collect();
                return Ok((config, descs));
            }
            let child = parsed
                .manifests
                .iter()
                .find(|d| {
                    d.platform
                        .as_ref()
                        .is_some_and(|p| platform_matches(p, platform))
                })
                .ok_or_else(|| {
                    format!("the index has no image for {platform} and no cache config")
                })?;
            let m = ep
                .get_manifest(&child.digest.to_string())
                .await
                .map_err(|e| e.to_string())?;
            if Digest::of(child.digest.algorithm(), &m.bytes) != child.digest {
                return Err(format!(
                    "manifest {} does not match its digest",
                    child.digest
                ));
            }
            let p = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
                .map_err(|e| format!("invalid manifest: {e}"))?;
            (m, p)
        }
        ManifestKind::Image => (top, parsed),
    };
    let _ = manifest;
    let cfg = parsed
        .config
        .clone()
        .ok_or_else(|| "the manifest names no config".to_string())?;
    let bytes = read_small_blob(ep, &cfg).await?;
    if cfg.media_type == CACHE_CONFIG_MEDIA_TYPE {
        let config = parse_config(&bytes)?;
        let descs = parsed
            .layers
            .iter()
            .map(|d| (d.digest.clone(), layer_of(d)))
            .collect();
        return Ok((config, descs));
    }
    // An image: its inline cache indexes its own layers, whose diff_ids
    // are in its config.
    let image: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("invalid image config: {e}"))?;
    let inline = image
        .get(INLINE_CACHE_FIELD)
        .and_then(|v| v.as_str())
        .ok_or_else(|| {
            format!("the image has no inline cache ({INLINE_CACHE_FIELD}); build it with --build-arg BUILDKIT_INLINE_CACHE=1 or --cache-to type=inline")
        })?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(inline)
        .map_err(|e| format!("the inline cache is not base64: {e}"))?;
    let config = parse_config(&raw)?;
    let diff_ids: Vec<String> = image
        .pointer("/rootfs/diff_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != parsed.layers.len() {
        return Err("the image's config and manifest disagree on its layers".into());
    }
    let descs = parsed
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            let mut l = layer_of(d);
            l.diff_id = diff_id;
            (d.digest.clone(), l)
        })
        .collect();
    Ok((config, descs))
}

fn platform_matches(p: &serde_json::Value, want: &Platform) -> bool {
    let f = |k: &str| p.get(k).and_then(|v| v.as_str());
    f("os") == Some(want.os.as_str())
        && f("architecture") == Some(want.architecture.as_str())
        && (want.variant.is_none() || f("variant") == want.variant.as_deref())
}

fn parse_config(bytes: &[u8]) -> Result<CacheConfig, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("the cache config is corrupt: {e}"))
}

/// berth's records in a cache config: records whose digest is a berth key
/// and whose result is a known layer.
fn records_of(
    config: &CacheConfig,
    descs: &Descs,
) -> Result<BTreeMap<String, CacheRecord>, String> {
    let mut out = BTreeMap::new();
    let n = config.layers.len() as i64;
    for (i, l) in config.layers.iter().enumerate() {
        if l.parent >= n || l.parent < -1 || l.parent == i as i64 {
            return Err(format!(
                "the cache config is corrupt: layer {i} has parent {}",
                l.parent
            ));
        }
    }
    for r in &config.records {
        let Some(key) = sha256_key(&r.digest) else {
            continue;
        };
        let Some(result) = r.results.first() else {
            continue;
        };
        let Some(cl) = usize::try_from(result.layer)
            .ok()
            .and_then(|i| config.layers.get(i))
        else {
            return Err(format!(
                "the cache config is corrupt: record {} names layer {}",
                r.digest, result.layer
            ));
        };
        let mut layer = match descs.get(&cl.blob) {
            Some(l) => l.clone(),
            None => continue,
        };
        if let Some(a) = &cl.annotations {
            if layer.diff_id.is_empty() {
                layer.diff_id = a.diff_id.clone();
            }
            if layer.media_type.is_empty() {
                layer.media_type = a.media_type.clone();
            }
        }
        if layer.diff_id.is_empty() {
            continue;
        }
        // Stored like berth's own layers: the compressed form's OCI name.
        layer.media_type = crate::MediaTypes::Oci.layer(&layer.media_type);
        out.insert(
            key.0,
            CacheRecord {
                layer: Some(layer),
                created: result.created_at.clone(),
            },
        );
    }
    Ok(out)
}

/// The built image as a copy source (see [`RemoteCache::image_source`]).
pub struct LazyImage<'a> {
    image: Option<&'a crate::BuiltImage>,
    blobs: BlobStore,
    cache: &'a RemoteCache,
}

impl Endpoint for LazyImage<'_> {
    fn get_manifest<'a>(
        &'a self,
        reference: &'a str,
    ) -> BoxFuture<'a, berth_copy::Result<Fetched>> {
        match self.image {
            Some(i) => i.get_manifest(reference),
            None => Box::pin(async { Err(berth_copy::Error::Other("no image".into())) }),
        }
    }

    fn has_blob<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> BoxFuture<'a, berth_copy::Result<Option<u64>>> {
        Box::pin(async move {
            if let Some(s) = self.blobs.size(digest)? {
                return Ok(Some(s));
            }
            match self.cache.source_of(digest) {
                Some(src) => src.endpoint.has_blob(digest).await,
                None => Ok(None),
            }
        })
    }

    fn read_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
    ) -> BoxFuture<'a, berth_copy::Result<BoxStream<'static, berth_copy::Result<Bytes>>>> {
        Box::pin(async move {
            if self.blobs.size(digest)?.is_some() {
                return Ok(berth_copy::endpoint::file_stream(
                    self.blobs.open_blob(digest)?,
                ));
            }
            match self.cache.source_of(digest) {
                Some(src) => src.endpoint.read_blob(digest, size).await,
                None => Ok(berth_copy::endpoint::file_stream(
                    self.blobs.open_blob(digest)?,
                )),
            }
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

    /// The registry of the (single) imported registry cache: a push there
    /// mounts the layers the build took from the cache.
    fn registry_repo(&self) -> Option<(&str, &str)> {
        let imported = self.cache.loaded.get()?;
        let mut repos = imported
            .sources
            .iter()
            .filter_map(|s| s.endpoint.registry_repo());
        let first = repos.next()?;
        repos.all(|r| r == first).then_some(first)
    }
}

/// Notes the step `st` just took (its key, layers and time) for exports.
pub(crate) fn note(eng: &crate::solver::Engine, parent: &CacheKey, st: &crate::stage::StageState) {
    if dry_stage().is_some() {
        return;
    }
    if let Some(rc) = &eng.opts.remote_cache {
        rc.note_step(parent, &st.key, &st.layers, &st.created);
    }
}

// ---------------------------------------------------------------------------
// Lazy stages: with an imported cache, a stage other than the target first
// runs key-only (a "dry" pass: cache hits adopt their layers, misses a
// placeholder, nothing executes). Its consumers' `COPY --from` keys need
// only its key, so when they hit the cache the stage never runs, as in
// BuildKit, which resolves the cache from the top. It runs for real the
// first time something needs its files.

tokio::task_local! {
    static DRY_STAGE: usize;
}

/// The stage whose dry pass this task is running, if any.
pub(crate) fn dry_stage() -> Option<usize> {
    DRY_STAGE.try_with(|i| *i).ok()
}

const LAZY_LAYER: &str = "lazy:";

/// The layer a dry pass adopts for a step it did not run: stage and
/// position, so the real stage's layer can stand in for it.
pub(crate) fn placeholder(stage: usize, position: usize, key: &CacheKey) -> LayerRef {
    LayerRef {
        diff_id: format!("{LAZY_LAYER}{stage}:{position}"),
        digest: format!("sha256:{key}")
            .parse()
            .expect("a cache key is 64 hex digits"),
        size: 0,
        media_type: String::new(),
    }
}

/// `(stage, position)` of a placeholder layer.
pub(crate) fn parse_placeholder(diff_id: &str) -> Option<(usize, usize)> {
    let (s, p) = diff_id.strip_prefix(LAZY_LAYER)?.split_once(':')?;
    Some((s.parse().ok()?, p.parse().ok()?))
}

type Outcome = Option<Result<Arc<crate::stage::StageState>, String>>;

/// Which stages run lazily, their dry results, and which have started.
pub(crate) struct LazyStages {
    enabled: bool,
    dry: Vec<tokio::sync::watch::Sender<Outcome>>,
    started: Mutex<std::collections::HashSet<usize>>,
    engine: std::sync::OnceLock<std::sync::Weak<crate::solver::Engine>>,
}

impl LazyStages {
    /// Lazy stages only with an imported cache: without one, a stage's
    /// steps would miss anyway.
    pub(crate) fn new(remote: Option<&Arc<RemoteCache>>, stages: usize) -> LazyStages {
        LazyStages {
            enabled: remote.is_some_and(|r| !r.imports.is_empty()),
            dry: (0..stages)
                .map(|_| tokio::sync::watch::channel(None).0)
                .collect(),
            started: Mutex::new(std::collections::HashSet::new()),
            engine: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn set_engine(&self, eng: &Arc<crate::solver::Engine>) {
        let _ = self.engine.set(Arc::downgrade(eng));
    }

    /// Whether stage `index` starts with a dry pass instead of running.
    pub(crate) fn deferred(&self, index: usize, target: usize) -> bool {
        self.enabled && index != target
    }

    /// The engine, if stage `index` is lazy and has not started yet (the
    /// caller starts it; later callers get `None`).
    pub(crate) fn claim(&self, index: usize) -> Option<Arc<crate::solver::Engine>> {
        if !self.enabled {
            return None;
        }
        let eng = self.engine.get()?.upgrade()?;
        if index == eng.target_stage() {
            return None;
        }
        self.started.lock().unwrap().insert(index).then_some(eng)
    }

    pub(crate) fn set_dry(
        &self,
        index: usize,
        outcome: Result<Arc<crate::stage::StageState>, String>,
    ) {
        self.dry[index].send_replace(Some(outcome));
    }

    /// The dry result of stage `index`: `None` if it has none (not lazy,
    /// or the dry pass failed: the real run decides then).
    pub(crate) async fn dry_result(&self, index: usize) -> Option<Arc<crate::stage::StageState>> {
        if !self.enabled {
            return None;
        }
        let mut rx = self.dry.get(index)?.subscribe();
        loop {
            if let Some(outcome) = rx.borrow().clone() {
                return outcome.ok();
            }
            rx.changed().await.ok()?;
        }
    }
}

/// Runs `f` as the dry pass of stage `index`.
pub(crate) async fn dry_pass<F: std::future::Future>(index: usize, f: F) -> F::Output {
    DRY_STAGE.scope(index, f).await
}

/// Whether `BUILDKIT_INLINE_CACHE` asks for an inline cache (BuildKit
/// takes any value strconv.ParseBool reads as true).
pub fn inline_cache_arg(build_args: &BTreeMap<String, String>) -> bool {
    matches!(
        build_args.get("BUILDKIT_INLINE_CACHE").map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Imported cache configs come from registries: mutated ones (bytes
    /// flipped, cut, indices out of range) are errors or fewer records,
    /// never a panic. A deterministic mutation loop in place of a
    /// libFuzzer target (which would need the whole HTTP stack built with
    /// sanitizers).
    #[test]
    fn corrupt_cache_configs_never_panic() {
        let blob = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let valid = json!({
            "layers": [
                {"blob": blob('a'), "parent": -1,
                 "annotations": {"diffID": blob('d'),
                                 "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}},
                {"blob": blob('b')},
            ],
            "records": [
                {"digest": blob('1'), "layers": [{"layer": 0, "createdAt": "2026-01-01T00:00:00Z"}]},
                {"digest": blob('2'), "layers": [{"layer": 1}], "inputs": [[{"selector": "", "link": 0}]]},
            ]
        })
        .to_string()
        .into_bytes();
        let descs: Descs = ['a', 'b']
            .iter()
            .map(|c| {
                let d: Digest = blob(*c).parse().unwrap();
                let l = LayerRef {
                    diff_id: String::new(),
                    digest: d.clone(),
                    size: 1,
                    media_type: String::new(),
                };
                (d, l)
            })
            .collect();
        let config = parse_config(&valid).unwrap();
        assert_eq!(
            records_of(&config, &descs).unwrap().len(),
            1,
            "b has no diff_id"
        );

        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let replacements: [&[u8]; 8] = [b"-2", b"99", b"-1", b"0", b"\"\"", b"[]", b"{}", b"null"];
        let mut parsed = 0;
        for _ in 0..20_000 {
            let mut data = valid.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % data.len();
                match next() % 4 {
                    0 => data[at] = next() as u8,
                    1 => data.truncate(at),
                    2 => {
                        let r = replacements[(next() as usize) % replacements.len()];
                        data.splice(at..at, r.iter().copied());
                    }
                    _ => {
                        data.remove(at);
                    }
                }
                if data.is_empty() {
                    break;
                }
            }
            if let Ok(config) = parse_config(&data) {
                parsed += 1;
                let _ = records_of(&config, &descs);
            }
        }
        // Enough mutants get past the JSON parser to reach records_of.
        assert!(parsed > 500, "only {parsed} mutants parsed");
    }

    #[test]
    fn flags_parse_like_buildx() {
        assert_eq!(
            parse_cache_from("localhost:5000/test:1").unwrap(),
            CacheFrom::Registry {
                reference: ImageRef::parse("localhost:5000/test:1").unwrap()
            }
        );
        assert_eq!(
            parse_cache_from("type=local,src=/c,tag=v2").unwrap(),
            CacheFrom::Local {
                src: "/c".into(),
                reference: "v2".into()
            }
        );
        assert!(parse_cache_from("type=gha")
            .unwrap_err()
            .contains("not supported"));
        assert!(parse_cache_from("type=local").unwrap_err().contains("src="));
        assert_eq!(parse_cache_to("type=inline").unwrap(), CacheTo::Inline);
        match parse_cache_to("type=registry,ref=r.io/a/b:cache,mode=max").unwrap() {
            CacheTo::Registry {
                mode,
                oci_media_types,
                image_manifest,
                ..
            } => {
                assert_eq!(mode, CacheMode::Max);
                assert!(oci_media_types);
                assert!(!image_manifest);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_cache_to("type=registry,ref=a/b,mode=all").is_err());
        assert!(
            parse_cache_to("type=registry,ref=a/b,image-manifest=true,oci-mediatypes=false")
                .is_err()
        );
        assert!(parse_cache_to("type=local").unwrap_err().contains("dest="));
    }

    #[test]
    fn config_json_has_buildkits_shape() {
        let c = CacheConfig {
            layers: vec![
                CacheLayer {
                    blob: Digest::sha256_of(b"a"),
                    parent: -1,
                    annotations: None,
                },
                CacheLayer {
                    blob: Digest::sha256_of(b"b"),
                    parent: 0,
                    annotations: None,
                },
            ],
            records: vec![ConfigRecord {
                results: vec![ConfigResult {
                    layer: 1,
                    created_at: "2026-01-01T00:00:00Z".into(),
                }],
                digest: format!("sha256:{}", "c".repeat(64)),
                inputs: vec![vec![ConfigInput {
                    selector: String::new(),
                    link: 0,
                }]],
            }],
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["layers"][0]["parent"], json!(-1));
        assert!(
            v["layers"][1].get("parent").is_none(),
            "0 is omitted as in Go"
        );
        assert_eq!(v["records"][0]["layers"][0]["layer"], json!(1));
        assert_eq!(v["records"][0]["inputs"][0][0], json!({"link": 0}));
        let back: CacheConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    fn layer(n: u8) -> LayerRef {
        LayerRef {
            diff_id: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            digest: Digest::sha256_of(&[n]),
            size: n as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        }
    }

    #[test]
    fn chain_round_trips_through_a_config() {
        let rc = RemoteCache::new(vec![], vec![CacheTo::Inline], false, crate::host_platform());
        let base = CacheKey::of(&json!("base"));
        let k1 = CacheKey::of(&json!(1));
        let k2 = CacheKey::of(&json!(2));
        let side = CacheKey::of(&json!("side"));
        rc.note_step(&base, &k1, &[layer(0), layer(1)], "t1");
        rc.note_step(&k1, &k2, &[layer(0), layer(1), layer(2)], "t2");
        rc.note_step(&base, &side, &[layer(0), layer(9)], "t9");
        let (min, used) = rc.config_for(CacheMode::Min, &k2, &|l| l.clone(), false);
        assert_eq!(min.records.len(), 2);
        assert_eq!(used.len(), 3);
        assert_eq!(min.records[1].inputs[0][0].link, 0);
        assert_eq!(min.records[1].results[0].layer, 2);
        let (max, _) = rc.config_for(CacheMode::Max, &k2, &|l| l.clone(), false);
        assert_eq!(max.records.len(), 3);
        // Deterministic bytes.
        let again = rc.config_for(CacheMode::Min, &k2, &|l| l.clone(), false).0;
        assert_eq!(
            serde_json::to_vec(&min).unwrap(),
            serde_json::to_vec(&again).unwrap()
        );
        let descs: Descs = (0..10).map(|n| (layer(n).digest, layer(n))).collect();
        let recs = records_of(&max, &descs).unwrap();
        assert_eq!(recs[&k2.0].layer.as_ref().unwrap(), &layer(2));
        assert_eq!(recs[&k2.0].created, "t2");
        assert_eq!(recs[&side.0].layer.as_ref().unwrap(), &layer(9));
    }

    #[test]
    fn corrupt_configs_are_refused() {
        let c = CacheConfig {
            layers: vec![CacheLayer {
                blob: Digest::sha256_of(b"a"),
                parent: 5,
                annotations: None,
            }],
            records: vec![],
        };
        assert!(records_of(&c, &Descs::new())
            .unwrap_err()
            .contains("corrupt"));
        assert!(parse_config(b"{not json").unwrap_err().contains("corrupt"));
    }

    #[test]
    fn inline_arg_values() {
        let mut m = BTreeMap::new();
        assert!(!inline_cache_arg(&m));
        m.insert("BUILDKIT_INLINE_CACHE".to_string(), "1".to_string());
        assert!(inline_cache_arg(&m));
        m.insert("BUILDKIT_INLINE_CACHE".to_string(), "0".to_string());
        assert!(!inline_cache_arg(&m));
    }
}
