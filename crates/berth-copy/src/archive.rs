//! Tar archives: `oci-archive:` (a tar of an OCI image layout) and
//! `docker-archive:` (what `docker save` writes).
//!
//! Reading extracts the archive into a private temporary directory: only
//! regular files and directories are written, every path is checked (no
//! `..`, no absolute paths), links are never created on disk but resolved
//! inside the archive (a link pointing outside is refused). A gzip-compressed
//! archive is decompressed on the fly.
//!
//! A docker-archive is read through its `manifest.json` (legacy
//! `<id>/layer.tar` archives and Docker 25+'s OCI-inside form alike): each
//! image becomes a Docker schema2 manifest whose config and layers are the
//! archive's files as they are (uncompressed or gzip layers).
//!
//! Writing stages an OCI layout in a temporary directory beside the
//! destination (plus `manifest.json` and `repositories` for docker-archive,
//! the Docker 25+ form that old and new loaders read), tars it into a
//! temporary file in the same directory and renames that into place only
//! when complete: a failed write leaves nothing behind.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use berth_layout::OciLayout;
use berth_oci::media_type as mt;
use berth_oci::{Descriptor, Digest, ImageRef, ManifestKind, ParsedManifest};
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::endpoint::{file_stream, ByteStream, Endpoint, Fetched, LayoutEndpoint, Target};
use crate::{Error, Result};

/// Which archive format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Oci,
    Docker,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const CONTAINERD_NAME: &str = "io.containerd.image.name";

fn corrupt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Other(format!(
        "archive {} is truncated or corrupt: {e}",
        path.display()
    ))
}

/// `a/./b/../c` -> `a/c`; `None` if it is absolute or leaves the root.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// An archive extracted into a private temporary directory.
struct Extracted {
    dir: tempfile::TempDir,
    /// Links (symbolic or hard) by their path, to their target's path, both
    /// relative to the archive root.
    links: HashMap<PathBuf, PathBuf>,
    archive: PathBuf,
}

impl Extracted {
    fn open(archive: &Path) -> Result<Extracted> {
        let mut file = File::open(archive)
            .map_err(|e| Error::Other(format!("cannot open archive {}: {e}", archive.display())))?;
        let mut magic = [0u8; 2];
        let n = file.read(&mut magic).map_err(|e| corrupt(archive, e))?;
        file.rewind()?;
        let reader: Box<dyn Read> = if n == 2 && magic == GZIP_MAGIC {
            Box::new(flate2::read::GzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-archive-")
            .tempdir()?;
        let mut links = HashMap::new();
        let mut tar = tar::Archive::new(reader);
        let mut count = 0usize;
        for entry in tar.entries().map_err(|e| corrupt(archive, e))? {
            let mut entry = entry.map_err(|e| corrupt(archive, e))?;
            let raw = entry.path().map_err(|e| corrupt(archive, e))?.into_owned();
            let bad = |why: &str| {
                Error::Other(format!(
                    "archive {} has an unsafe entry {:?}: {why}; refusing it",
                    archive.display(),
                    raw
                ))
            };
            if raw
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            {
                return Err(bad("absolute paths and `..` are not allowed"));
            }
            let rel = normalize(&raw).ok_or_else(|| bad("it leaves the archive"))?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let kind = entry.header().entry_type();
            match kind {
                tar::EntryType::Directory => {
                    fs::create_dir_all(dir.path().join(&rel))?;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let dest = dir.path().join(&rel);
                    if let Some(parent) = dest.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    links.remove(&rel);
                    let mut out = File::create(&dest)?;
                    io::copy(&mut entry, &mut out).map_err(|e| corrupt(archive, e))?;
                    count += 1;
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| corrupt(archive, e))?
                        .ok_or_else(|| bad("a link without a target"))?
                        .into_owned();
                    // Symlinks are relative to their directory, hard links
                    // to the archive root.
                    let joined = if kind == tar::EntryType::Symlink {
                        if target.is_absolute() {
                            return Err(bad("a link to an absolute path"));
                        }
                        rel.parent().unwrap_or(Path::new("")).join(&target)
                    } else {
                        target
                    };
                    let resolved =
                        normalize(&joined).ok_or_else(|| bad("a link pointing outside"))?;
                    links.insert(rel, resolved);
                }
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => {}
                other => return Err(bad(&format!("entry type {other:?} is not allowed"))),
            }
        }
        if count == 0 {
            return Err(corrupt(archive, "it holds no files"));
        }
        Ok(Extracted {
            dir,
            links,
            archive: archive.to_path_buf(),
        })
    }

    /// The file `name` (relative to the archive root) on disk, links followed.
    fn file(&self, name: &str) -> Result<PathBuf> {
        let mut rel = normalize(Path::new(name)).ok_or_else(|| {
            Error::Other(format!(
                "archive {} names {name:?}, which leaves the archive",
                self.archive.display()
            ))
        })?;
        for _ in 0..16 {
            match self.links.get(&rel) {
                Some(t) => rel = t.clone(),
                None => {
                    let p = self.dir.path().join(&rel);
                    if p.is_file() {
                        return Ok(p);
                    }
                    return Err(corrupt(&self.archive, format!("{name} is missing")));
                }
            }
        }
        Err(corrupt(&self.archive, format!("{name}: too many links")))
    }
}

/// One image of an archive, as `berth load` sees it.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// What to pass as the source reference.
    pub reference: String,
    /// The image's name (`name:tag`), if the archive gives one.
    pub name: Option<String>,
}

struct DockerImage {
    manifest: Fetched,
    repo_tags: Vec<String>,
}

/// An archive opened for reading: an [`Endpoint`] source.
pub struct ArchiveReader {
    extracted: Extracted,
    inner: ReaderKind,
}

enum ReaderKind {
    Oci(LayoutEndpoint),
    Docker {
        images: Vec<DockerImage>,
        blobs: HashMap<Digest, PathBuf>,
    },
}

fn hash_file(path: &Path) -> io::Result<(Digest, u64, [u8; 4])> {
    let mut f = File::open(path)?;
    let mut h = berth_oci::Algorithm::Sha256.hasher();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    let mut magic = [0u8; 4];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if size < 4 {
            let have = size as usize;
            let take = (4 - have).min(n);
            magic[have..have + take].copy_from_slice(&buf[..take]);
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((h.finish(), size, magic))
}

impl ArchiveReader {
    pub fn open(path: &Path, kind: ArchiveKind) -> Result<ArchiveReader> {
        let extracted = Extracted::open(path)?;
        let inner = match kind {
            ArchiveKind::Oci => ReaderKind::Oci(
                LayoutEndpoint::open(extracted.dir.path(), false).map_err(|e| {
                    Error::Other(format!("{} is not an OCI archive: {e}", path.display()))
                })?,
            ),
            ArchiveKind::Docker => Self::docker(&extracted)?,
        };
        Ok(ArchiveReader { extracted, inner })
    }

    /// Opens a docker-archive (it has `manifest.json`) or else an
    /// oci-archive, whichever `path` is.
    pub fn open_any(path: &Path) -> Result<ArchiveReader> {
        let extracted = Extracted::open(path)?;
        let inner = if extracted.file("manifest.json").is_ok() {
            Self::docker(&extracted)?
        } else if extracted.file("oci-layout").is_ok() {
            ReaderKind::Oci(LayoutEndpoint::open(extracted.dir.path(), false)?)
        } else {
            return Err(Error::Other(format!(
                "{} is neither a docker-archive (manifest.json) nor an oci-archive (oci-layout)",
                path.display()
            )));
        };
        Ok(ArchiveReader { extracted, inner })
    }

    fn docker(ex: &Extracted) -> Result<ReaderKind> {
        let archive = &ex.archive;
        let text = fs::read(ex.file("manifest.json").map_err(|_| {
            Error::Other(format!(
                "{} is not a docker-archive (no manifest.json)",
                archive.display()
            ))
        })?)?;
        let entries: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| corrupt(archive, format!("manifest.json: {e}")))?;
        let entries = entries
            .as_array()
            .ok_or_else(|| corrupt(archive, "manifest.json is not a list"))?;
        let mut images = Vec::new();
        let mut blobs = HashMap::new();
        // The file a blob came from must match its name if it is named by digest.
        let mut add = |name: &str| -> Result<(Digest, u64, [u8; 4], PathBuf)> {
            let p = ex.file(name)?;
            let (d, size, magic) = hash_file(&p)?;
            if let Some(hex) = name.strip_prefix("blobs/sha256/") {
                if hex != d.hex() {
                    return Err(corrupt(archive, format!("{name} has digest {d}")));
                }
            }
            blobs.insert(d.clone(), p.clone());
            Ok((d, size, magic, p))
        };
        for e in entries {
            let config = e["Config"]
                .as_str()
                .ok_or_else(|| corrupt(archive, "manifest.json: an entry has no Config"))?;
            let (cd, csize, _, _) = add(config)?;
            let mut layers = Vec::new();
            let mut zstd = false;
            for l in e["Layers"].as_array().into_iter().flatten() {
                let l = l
                    .as_str()
                    .ok_or_else(|| corrupt(archive, "manifest.json: a layer is not a path"))?;
                let (d, size, magic, _) = add(l)?;
                let kind = if magic[..2] == GZIP_MAGIC {
                    1
                } else if magic == ZSTD_MAGIC {
                    zstd = true;
                    2
                } else {
                    0
                };
                layers.push((d, size, kind));
            }
            // Docker schema2 has no zstd layer type: such images become OCI.
            let (manifest_type, config_type, types) = if zstd {
                (
                    mt::OCI_MANIFEST,
                    mt::OCI_CONFIG,
                    [
                        "application/vnd.oci.image.layer.v1.tar",
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                        "application/vnd.oci.image.layer.v1.tar+zstd",
                    ],
                )
            } else {
                (
                    mt::DOCKER_MANIFEST,
                    mt::DOCKER_CONFIG,
                    [
                        "application/vnd.docker.image.rootfs.diff.tar",
                        "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "",
                    ],
                )
            };
            let m = json!({
                "schemaVersion": 2,
                "mediaType": manifest_type,
                "config": {"mediaType": config_type, "size": csize, "digest": cd.to_string()},
                "layers": layers.iter().map(|(d, size, k)| json!({
                    "mediaType": types[*k], "size": size, "digest": d.to_string()
                })).collect::<Vec<_>>(),
            });
            let bytes = serde_json::to_vec_pretty(&m).expect("manifest serialises");
            let repo_tags = e["RepoTags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            images.push(DockerImage {
                manifest: Fetched {
                    digest: Digest::sha256_of(&bytes),
                    bytes: bytes.into(),
                    media_type: manifest_type.to_string(),
                },
                repo_tags,
            });
        }
        if images.is_empty() {
            return Err(corrupt(archive, "manifest.json lists no image"));
        }
        Ok(ReaderKind::Docker { images, blobs })
    }

    /// The images of the archive.
    pub fn images(&self) -> Result<Vec<ArchiveImage>> {
        match &self.inner {
            ReaderKind::Docker { images, .. } => Ok(images
                .iter()
                .flat_map(|i| {
                    let digest = i.manifest.digest.to_string();
                    let mut v: Vec<ArchiveImage> = i
                        .repo_tags
                        .iter()
                        .map(|t| ArchiveImage {
                            reference: t.clone(),
                            name: Some(t.clone()),
                        })
                        .collect();
                    if v.is_empty() {
                        v.push(ArchiveImage {
                            reference: digest,
                            name: None,
                        });
                    }
                    v
                })
                .collect()),
            ReaderKind::Oci(_) => {
                let layout = OciLayout::open(self.extracted.dir.path())?;
                Ok(layout
                    .manifests()?
                    .into_iter()
                    .map(|d| {
                        let ann = |k: &str| {
                            d.annotations
                                .as_ref()
                                .and_then(|a| a.get(k))
                                .and_then(|v| v.as_str())
                                .map(str::to_string)
                        };
                        let ref_name = ann(berth_layout::REF_NAME);
                        // A full name, from containerd's annotation or a
                        // ref.name that is one (not just a tag).
                        let name = ann(CONTAINERD_NAME).or_else(|| {
                            ref_name
                                .clone()
                                .filter(|n| n.contains('/') || n.contains(':'))
                        });
                        ArchiveImage {
                            reference: ref_name.unwrap_or_else(|| d.digest.to_string()),
                            name,
                        }
                    })
                    .collect())
            }
        }
    }

    fn docker_image(&self, reference: &str) -> Result<&DockerImage> {
        let ReaderKind::Docker { images, .. } = &self.inner else {
            unreachable!()
        };
        let archive = self.extracted.archive.display();
        if reference.is_empty() {
            return match images.as_slice() {
                [one] => Ok(one),
                _ => Err(Error::NotFound(format!(
                    "archive {archive} holds {} images; name one (docker-archive:PATH:NAME:TAG)",
                    images.len()
                ))),
            };
        }
        if let Ok(d) = reference.parse::<Digest>() {
            return images
                .iter()
                .find(|i| i.manifest.digest == d)
                .ok_or_else(|| Error::NotFound(format!("archive {archive} has no image {d}")));
        }
        let want =
            ImageRef::parse(reference).map_err(|e| Error::Other(format!("{reference:?}: {e}")))?;
        let same = |t: &str| {
            ImageRef::parse(t)
                .is_ok_and(|r| r.name() == want.name() && r.reference() == want.reference())
        };
        images
            .iter()
            .find(|i| i.repo_tags.iter().any(|t| same(t)))
            .ok_or_else(|| {
                let known: Vec<&str> = images
                    .iter()
                    .flat_map(|i| i.repo_tags.iter().map(String::as_str))
                    .collect();
                Error::NotFound(format!(
                    "archive {archive} has no image {reference}; it has {}",
                    if known.is_empty() {
                        "only untagged images".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })
    }
}

impl Endpoint for ArchiveReader {
    fn get_manifest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Fetched>> {
        match &self.inner {
            ReaderKind::Oci(l) => l.get_manifest(reference),
            ReaderKind::Docker { images, .. } => Box::pin(async move {
                if let Ok(d) = reference.parse::<Digest>() {
                    if let Some(i) = images.iter().find(|i| i.manifest.digest == d) {
                        return Ok(i.manifest.clone());
                    }
                }
                Ok(self.docker_image(reference)?.manifest.clone())
            }),
        }
    }

    fn has_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>>> {
        match &self.inner {
            ReaderKind::Oci(l) => l.has_blob(digest),
            ReaderKind::Docker { blobs, .. } => Box::pin(async move {
                Ok(match blobs.get(digest) {
                    Some(p) => Some(fs::metadata(p)?.len()),
                    None => None,
                })
            }),
        }
    }

    fn read_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<ByteStream>> {
        match &self.inner {
            ReaderKind::Oci(l) => l.read_blob(digest),
            ReaderKind::Docker { blobs, .. } => Box::pin(async move {
                let p = blobs.get(digest).ok_or_else(|| {
                    Error::NotFound(format!(
                        "blob {digest} is not in archive {}",
                        self.extracted.archive.display()
                    ))
                })?;
                Ok(file_stream(File::open(p)?))
            }),
        }
    }

    fn write_blob<'a>(&'a self, _: &'a Digest, _: u64, _: ByteStream) -> BoxFuture<'a, Result<()>> {
        Box::pin(async {
            Err(Error::Other(
                "an archive being read is not a destination".into(),
            ))
        })
    }

    fn put_manifest<'a>(&'a self, _: &'a Fetched, _: Target<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async {
            Err(Error::Other(
                "an archive being read is not a destination".into(),
            ))
        })
    }
}

struct Saved {
    manifest: Digest,
    config: Digest,
    layers: Vec<Digest>,
    repo_tags: Vec<String>,
}

/// An archive being written: an [`Endpoint`] destination that appears at
/// its path only when [`Endpoint::finish`] completes.
///
/// For docker-archive, the name in `Target::Top` is the image's `RepoTags`
/// entry (`name:tag`); for oci-archive it is the layout's ref name.
pub struct ArchiveWriter {
    kind: ArchiveKind,
    dest: PathBuf,
    stage: tempfile::TempDir,
    layout: LayoutEndpoint,
    saved: Mutex<Vec<Saved>>,
}

impl ArchiveWriter {
    pub fn create(dest: &Path, kind: ArchiveKind) -> Result<ArchiveWriter> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if dest.file_name().is_none() {
            return Err(Error::Other(format!(
                "{} is not a file name for an archive",
                dest.display()
            )));
        }
        let stage = tempfile::Builder::new()
            .prefix(".berth-archive-")
            .tempdir_in(dir)
            .map_err(|e| {
                Error::Other(format!("cannot write an archive in {}: {e}", dir.display()))
            })?;
        let layout = LayoutEndpoint::open(stage.path(), true)?;
        Ok(ArchiveWriter {
            kind,
            dest: dest.to_path_buf(),
            stage,
            layout,
            saved: Mutex::new(Vec::new()),
        })
    }

    fn write_tar(&self) -> Result<()> {
        let root = self.stage.path();
        if self.kind == ArchiveKind::Docker {
            let saved = self.saved.lock().unwrap();
            let manifest: Vec<serde_json::Value> = saved
                .iter()
                .map(|s| {
                    json!({
                        "Config": format!("blobs/sha256/{}", s.config.hex()),
                        "RepoTags": s.repo_tags,
                        "Layers": s.layers.iter().map(|l| format!("blobs/sha256/{}", l.hex())).collect::<Vec<_>>(),
                    })
                })
                .collect();
            fs::write(
                root.join("manifest.json"),
                serde_json::to_vec(&manifest).unwrap(),
            )?;
            let mut repos = serde_json::Map::new();
            for s in saved.iter() {
                for t in &s.repo_tags {
                    if let Some((name, tag)) = t.rsplit_once(':') {
                        let e = repos.entry(name.to_string()).or_insert_with(|| json!({}));
                        e[tag] = json!(s.config.hex());
                    }
                }
            }
            fs::write(
                root.join("repositories"),
                serde_json::to_vec(&repos).unwrap(),
            )?;
        }
        let dir = self.dest.parent().filter(|p| !p.as_os_str().is_empty());
        let mut tmp = tempfile::Builder::new()
            .prefix(".berth-archive-")
            .suffix(".tmp")
            .tempfile_in(dir.unwrap_or(Path::new(".")))?;
        {
            let mut b = tar::Builder::new(io::BufWriter::new(tmp.as_file_mut()));
            b.mode(tar::HeaderMode::Deterministic);
            b.follow_symlinks(false);
            let mut names: Vec<&str> = vec!["oci-layout", "index.json"];
            if self.kind == ArchiveKind::Docker {
                names.extend(["manifest.json", "repositories"]);
            }
            b.append_dir("blobs", root.join("blobs"))?;
            for alg in sorted_dir(&root.join("blobs"))? {
                let a = format!("blobs/{alg}");
                b.append_dir(&a, root.join(&a))?;
                for blob in sorted_dir(&root.join(&a))? {
                    let rel = format!("{a}/{blob}");
                    b.append_path_with_name(root.join(&rel), &rel)?;
                }
            }
            for n in names {
                b.append_path_with_name(root.join(n), n)?;
            }
            b.into_inner()?.flush()?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(&self.dest).map_err(|e| {
            Error::Other(format!("cannot write {}: {}", self.dest.display(), e.error))
        })?;
        Ok(())
    }
}

fn sorted_dir(p: &Path) -> io::Result<Vec<String>> {
    let mut v: Vec<String> = fs::read_dir(p)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.contains(".tmp-"))
        .collect();
    v.sort();
    Ok(v)
}

impl Endpoint for ArchiveWriter {
    fn get_manifest<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<Fetched>> {
        self.layout.get_manifest(reference)
    }

    fn has_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<Option<u64>>> {
        self.layout.has_blob(digest)
    }

    fn read_blob<'a>(&'a self, digest: &'a Digest) -> BoxFuture<'a, Result<ByteStream>> {
        self.layout.read_blob(digest)
    }

    fn write_blob<'a>(
        &'a self,
        digest: &'a Digest,
        size: u64,
        data: ByteStream,
    ) -> BoxFuture<'a, Result<()>> {
        self.layout.write_blob(digest, size, data)
    }

    fn put_manifest<'a>(&'a self, m: &'a Fetched, target: Target<'a>) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (Target::Top(name), ArchiveKind::Docker) = (target, self.kind) else {
                return self.layout.put_manifest(m, target).await;
            };
            let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
                .map_err(|e| Error::Manifest(e.to_string()))?;
            let (Some(config), ManifestKind::Image) = (parsed.config.clone(), parsed.kind) else {
                return Err(Error::Other(
                    "a docker-archive holds single-platform images; copy one platform (without --all)"
                        .into(),
                ));
            };
            let layout = OciLayout::open(self.stage.path())?;
            layout.write_blob_bytes(&m.bytes)?;
            let mut annotations = serde_json::Map::new();
            let (tag, full) = match name.map(ImageRef::parse) {
                Some(Ok(r)) => {
                    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
                    (Some(tag.clone()), Some(r.with_tag(&tag)))
                }
                Some(Err(e)) => return Err(Error::Other(format!("{name:?}: {e}"))),
                None => (None, None),
            };
            if let (Some(r), Some(t)) = (&full, &tag) {
                // As Docker 25+ writes them; several images may share a tag.
                let name = format!("{}:{}", r.name(), r.reference());
                annotations.insert(CONTAINERD_NAME.into(), name.into());
                annotations.insert(berth_layout::REF_NAME.into(), t.as_str().into());
            }
            let desc = Descriptor {
                media_type: m.media_type.clone(),
                digest: m.digest.clone(),
                size: m.bytes.len() as u64,
                urls: None,
                annotations: (!annotations.is_empty()).then_some(annotations),
                artifact_type: None,
                platform: None,
            };
            layout.add_manifest(desc, None)?;
            let repo_tag = full.map(|r| r.familiar());
            let mut saved = self.saved.lock().unwrap();
            if let Some(s) = saved.iter_mut().find(|s| s.manifest == m.digest) {
                s.repo_tags.extend(repo_tag);
            } else {
                saved.push(Saved {
                    manifest: m.digest.clone(),
                    config: config.digest,
                    layers: parsed.layers.iter().map(|l| l.digest.clone()).collect(),
                    repo_tags: repo_tag.into_iter().collect(),
                });
            }
            Ok(())
        })
    }

    fn finish(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.write_tar() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_inside_only() {
        assert_eq!(
            normalize(Path::new("a/./b/../c")),
            Some(PathBuf::from("a/c"))
        );
        assert_eq!(normalize(Path::new("../x")), None);
        assert_eq!(normalize(Path::new("/etc/passwd")), None);
        assert_eq!(normalize(Path::new("a/../../x")), None);
    }
}
