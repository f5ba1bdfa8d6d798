//! Tar archives: `oci-archive:` (a tar of an OCI image layout) and
//! `docker-archive:` (what `docker save` writes).
//!
//! Reading extracts the archive into a private staging directory under
//! `<root>/ingest/archives/` (see [`crate::staging`]; on the root's
//! filesystem, never `$TMPDIR`, and removed however the command ends): only
//! regular files and directories are written, every path is checked (no
//! `..`, no absolute paths), links are never created on disk but resolved
//! inside the archive (a link pointing outside is refused). A
//! gzip-compressed archive is decompressed on the fly (every member of a
//! multi-member gzip). What extraction may write is bounded
//! ([`ArchiveLimits`]: the files' total size, sparse files counted at their
//! full size since they are stored in full, 64 GiB by default) and so is
//! the number of entries; sparse members keep their holes on disk.
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
use std::io::{self, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use berth_layout::OciLayout;
use berth_oci::media_type as mt;
use berth_oci::{Descriptor, Digest, ImageRef, ManifestKind, ParsedManifest};
use futures_util::future::BoxFuture;
use serde_json::json;

use crate::endpoint::{file_stream, ByteStream, Endpoint, Fetched, LayoutEndpoint, Target};
use crate::staging::{self, StagingDir};
use crate::{Error, Result};

/// The variable that bounds how much an archive being read may expand to.
pub const MAX_ARCHIVE_BYTES_ENV: &str = "BERTH_MAX_ARCHIVE_BYTES";
/// Default bound on what extracting one archive may write: larger than
/// any image one loads in practice, far below what a gzip bomb makes.
pub const DEFAULT_MAX_ARCHIVE_BYTES: u64 = 64 << 30;
/// Most entries an archive may have (a docker-archive of [`MAX_LAYERS`]
/// layers in the legacy form has about four per layer), and most configs
/// and layers its `manifest.json` may name in all its images.
///
/// [`MAX_LAYERS`]: crate::MAX_LAYERS
pub const MAX_ARCHIVE_ENTRIES: usize = 100_000;
/// Largest `manifest.json` or `index.json` read from an archive (as the
/// manifest limit: containers/image reads at most 1 MiB of manifest.json).
const MAX_JSON_BYTES: u64 = berth_client::MAX_MANIFEST_BYTES as u64;

/// Bounds on extracting an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Total size of the files extraction may write (`None` = no limit).
    pub max_bytes: Option<u64>,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits {
            max_bytes: Some(DEFAULT_MAX_ARCHIVE_BYTES),
        }
    }
}

impl ArchiveLimits {
    /// The default, or `BERTH_MAX_ARCHIVE_BYTES` (`0` = no limit).
    pub fn from_env() -> ArchiveLimits {
        ArchiveLimits {
            max_bytes: berth_client::settings::env_size(
                MAX_ARCHIVE_BYTES_ENV,
                Some(DEFAULT_MAX_ARCHIVE_BYTES),
            ),
        }
    }
}

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

/// An archive extracted into a private staging directory.
struct Extracted {
    dir: StagingDir,
    /// Links (symbolic or hard) by their path, to their target's path, both
    /// relative to the archive root.
    links: HashMap<PathBuf, PathBuf>,
    archive: PathBuf,
}

/// What reading an archive found out of bounds, as an error.
fn too_big(archive: &Path, limit: u64) -> Error {
    Error::Limit(format!(
        "archive {} expands to more than {} (the limit on what reading an archive may write); \
         refusing it. If the archive is trusted, raise the limit with --max-size SIZE (berth \
         load) or {MAX_ARCHIVE_BYTES_ENV}=SIZE (0 = no limit)",
        archive.display(),
        berth_client::settings::format_size(limit)
    ))
}

/// An I/O error of the archive (`corrupt`) or of the signal that stopped it.
fn read_error(archive: &Path, e: io::Error) -> Error {
    if staging::is_interrupted(&e) {
        Error::Interrupted
    } else {
        corrupt(archive, e)
    }
}

impl Extracted {
    fn open(archive: &Path, root: &Path, limits: &ArchiveLimits) -> Result<Extracted> {
        let file = File::open(archive)
            .map_err(|e| Error::Other(format!("cannot open archive {}: {e}", archive.display())))?;
        Self::read(Box::new(file), archive, root, limits)
    }

    /// Extracts the archive `input` (named `archive` in messages).
    fn read(
        input: Box<dyn Read + Send>,
        archive: &Path,
        root: &Path,
        limits: &ArchiveLimits,
    ) -> Result<Extracted> {
        use std::io::BufRead;
        let mut input = BufReader::with_capacity(1 << 20, input);
        let magic = input.fill_buf().map_err(|e| corrupt(archive, e))?;
        // Every member: `gzip -dc` reads concatenated members, and so does
        // berth (pigz and parallel compressors write several).
        let reader: Box<dyn Read> = if magic.starts_with(&GZIP_MAGIC) {
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        } else if magic.starts_with(&ZSTD_MAGIC) {
            return Err(Error::Other(format!(
                "archive {} is zstd-compressed; decompress it first (zstd -d)",
                archive.display()
            )));
        } else {
            Box::new(input)
        };
        let dir = StagingDir::create(root).map_err(|e| {
            Error::Other(format!(
                "cannot create a staging directory under {}: {e}",
                root.join("ingest").display()
            ))
        })?;
        // The archive's files go one level down, beside (never over) the
        // lock of the staging directory.
        let content = dir.path().join("archive");
        fs::create_dir(&content)?;
        let mut links = HashMap::new();
        // PAX records and long names are held in memory by the tar crate:
        // bounded, as is the data it skips.
        let (reader, budget) =
            berth_layer::headers::budgeted(reader, berth_layer::headers::MAX_HEADER_BYTES);
        let mut tar = tar::Archive::new(reader);
        let mut files = 0usize;
        let mut entries = 0usize;
        let mut written = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for entry in budget.entries(tar.entries().map_err(|e| corrupt(archive, e))?) {
            staging::check()?;
            let mut entry = entry.map_err(|e| corrupt(archive, e))?;
            entries += 1;
            if entries > MAX_ARCHIVE_ENTRIES {
                return Err(Error::Limit(format!(
                    "archive {} has more than {MAX_ARCHIVE_ENTRIES} entries; refusing it",
                    archive.display()
                )));
            }
            let mut raw = entry.path().map_err(|e| corrupt(archive, e))?.into_owned();
            let mut sparse = berth_layer::sparse::PaxSparseRecords::default();
            if let Some(pax) = entry.pax_extensions().map_err(|e| corrupt(archive, e))? {
                for r in pax {
                    let r = r.map_err(|e| corrupt(archive, e))?;
                    sparse.record(r.key_bytes(), r.value_bytes());
                }
            }
            let sparse = sparse.finish().map_err(|e| corrupt(archive, e))?;
            if let Some(name) = sparse.as_ref().and_then(|s| s.name.as_ref()) {
                use std::os::unix::ffi::OsStrExt;
                raw = PathBuf::from(std::ffi::OsStr::from_bytes(name));
            }
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
                    fs::create_dir_all(content.join(&rel))?;
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    // Sparse files count at their full size: what gets stored.
                    let size = sparse.as_ref().map_or(entry.size(), |s| s.real_size);
                    written = written.saturating_add(size);
                    if let Some(max) = limits.max_bytes {
                        if written > max {
                            return Err(too_big(archive, max));
                        }
                    }
                    let dest = content.join(&rel);
                    if let Some(parent) = dest.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    links.remove(&rel);
                    // A name seen twice: the later entry wins, as with tar.
                    match fs::remove_file(&dest) {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                        _ => {}
                    }
                    let out = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&dest)?;
                    let tick = &mut staging::check_io;
                    let result = if kind == tar::EntryType::GNUSparse {
                        berth_layer::sparse::write_holes(&mut entry, &out, &mut buf, tick)
                    } else if let Some(sp) = &sparse {
                        let stored = entry.size();
                        berth_layer::sparse::write_pax_sparse(
                            &mut entry, stored, sp, &out, &mut buf, tick,
                        )
                    } else {
                        copy_checked(&mut entry, &out, &mut buf)
                    };
                    result.map_err(|e| read_error(archive, e))?;
                    files += 1;
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
        if files == 0 {
            return Err(corrupt(archive, "it holds no files"));
        }
        Ok(Extracted {
            dir,
            links,
            archive: archive.to_path_buf(),
        })
    }

    /// Where the archive's files are.
    fn content(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// A JSON file of the archive (`manifest.json`, `index.json`), read
    /// only if it is of a sane size.
    fn json_file(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.file(name)?;
        let len = fs::metadata(&p)?.len();
        if len > MAX_JSON_BYTES {
            return Err(Error::Limit(format!(
                "archive {}: {name} is {}, more than the {} berth reads; refusing it",
                self.archive.display(),
                berth_client::settings::format_size(len),
                berth_client::settings::format_size(MAX_JSON_BYTES)
            )));
        }
        Ok(fs::read(p)?)
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
                    let p = self.content().join(&rel);
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

/// Copies an entry's data into a new file in 1 MiB chunks, checking for
/// cancellation between them.
fn copy_checked(from: &mut impl Read, to: &File, buf: &mut [u8]) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut at = 0u64;
    loop {
        staging::check_io()?;
        let n = match from.read(buf) {
            Ok(0) => return Ok(at),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all_at(&buf[..n], at)?;
        at += n as u64;
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
        staging::check_io()?;
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
    /// Opens the archive at `path`, extracting it under `root`'s ingest
    /// directory within `limits`.
    pub fn open(
        path: &Path,
        kind: ArchiveKind,
        root: &Path,
        limits: &ArchiveLimits,
    ) -> Result<ArchiveReader> {
        let extracted = Extracted::open(path, root, limits)?;
        let inner = match kind {
            ArchiveKind::Oci => ReaderKind::Oci(Self::oci(&extracted).map_err(|e| match e {
                Error::Limit(_) | Error::Interrupted => e,
                e => Error::Other(format!("{} is not an OCI archive: {e}", path.display())),
            })?),
            ArchiveKind::Docker => Self::docker(&extracted)?,
        };
        Ok(ArchiveReader { extracted, inner })
    }

    /// Opens a docker-archive (it has `manifest.json`) or else an
    /// oci-archive, whichever `path` is.
    pub fn open_any(path: &Path, root: &Path, limits: &ArchiveLimits) -> Result<ArchiveReader> {
        Self::any(Extracted::open(path, root, limits)?)
    }

    /// [`ArchiveReader::open_any`] of an archive read from a stream (standard
    /// input), extracted as it arrives; `name` is for messages.
    pub fn read_any(
        input: Box<dyn Read + Send>,
        name: &Path,
        root: &Path,
        limits: &ArchiveLimits,
    ) -> Result<ArchiveReader> {
        Self::any(Extracted::read(input, name, root, limits)?)
    }

    fn any(extracted: Extracted) -> Result<ArchiveReader> {
        let inner = if extracted.file("manifest.json").is_ok() {
            Self::docker(&extracted)?
        } else if extracted.file("oci-layout").is_ok() {
            ReaderKind::Oci(Self::oci(&extracted)?)
        } else {
            return Err(Error::Other(format!(
                "{} is neither a docker-archive (manifest.json) nor an oci-archive (oci-layout)",
                extracted.archive.display()
            )));
        };
        Ok(ArchiveReader { extracted, inner })
    }

    fn oci(ex: &Extracted) -> Result<LayoutEndpoint> {
        // index.json is read whole by the layout: bounded first.
        if ex.file("index.json").is_ok() {
            ex.json_file("index.json")?;
        }
        LayoutEndpoint::open(&ex.content(), false)
    }

    /// Where the archive's files are staged (for tests and diagnostics).
    pub fn staging_dir(&self) -> &Path {
        self.extracted.dir.path()
    }

    fn docker(ex: &Extracted) -> Result<ReaderKind> {
        let archive = &ex.archive;
        let text = ex.json_file("manifest.json").map_err(|e| match e {
            Error::Limit(_) => e,
            _ => Error::Other(format!(
                "{} is not a docker-archive (no manifest.json)",
                archive.display()
            )),
        })?;
        let entries: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| corrupt(archive, format!("manifest.json: {e}")))?;
        let entries = entries
            .as_array()
            .ok_or_else(|| corrupt(archive, "manifest.json is not a list"))?;
        // Counted before anything is hashed: a list of 200,000 layers is
        // refused at once, not after hashing them; so are many images
        // naming layers (each would be copied).
        let mut total = 0usize;
        for e in entries {
            let n = e["Layers"].as_array().map_or(0, Vec::len);
            if n > crate::MAX_LAYERS {
                return Err(crate::copy::too_many_layers(
                    &format!("archive {}", archive.display()),
                    n,
                ));
            }
            total += n + 1;
        }
        if total > MAX_ARCHIVE_ENTRIES {
            return Err(Error::Limit(format!(
                "archive {}: manifest.json names {total} configs and layers in all; berth reads \
                 at most {MAX_ARCHIVE_ENTRIES} (refusing it)",
                archive.display()
            )));
        }
        let mut images = Vec::new();
        let mut blobs = HashMap::new();
        // A file named several times is hashed once.
        let mut hashed: HashMap<PathBuf, (Digest, u64, [u8; 4])> = HashMap::new();
        // The file a blob came from must match its name if it is named by digest.
        let mut add = |name: &str| -> Result<(Digest, u64, [u8; 4], PathBuf)> {
            let p = ex.file(name)?;
            let (d, size, magic) = match hashed.get(&p) {
                Some(h) => h.clone(),
                None => {
                    let h = hash_file(&p).map_err(|e| read_error(archive, e))?;
                    hashed.insert(p.clone(), h.clone());
                    h
                }
            };
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
                let layout = OciLayout::open(&self.extracted.content())?;
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

    fn read_blob<'a>(&'a self, digest: &'a Digest, size: u64) -> BoxFuture<'a, Result<ByteStream>> {
        match &self.inner {
            ReaderKind::Oci(l) => l.read_blob(digest, size),
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
    /// The stage is removed on a signal too.
    _registered: staging::Registered,
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
        let registered = staging::Registered::new(stage.path());
        let layout = LayoutEndpoint::open(stage.path(), true)?;
        Ok(ArchiveWriter {
            kind,
            dest: dest.to_path_buf(),
            stage,
            layout,
            saved: Mutex::new(Vec::new()),
            _registered: registered,
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
        let _registered = staging::Registered::new(tmp.path());
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

    fn read_blob<'a>(&'a self, digest: &'a Digest, size: u64) -> BoxFuture<'a, Result<ByteStream>> {
        self.layout.read_blob(digest, size)
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
