//! `berth manifest`: local manifest lists, like `docker manifest`
//! (`create [--amend]`, `annotate`, `inspect`, `push [--purge]`, `rm`).
//!
//! A list is prepared locally, one JSON file per image, and only becomes a
//! registry object on `push`. The files live under
//! `<root>/manifests/<list>/<image>` (names made file-safe like Docker's
//! `~/.docker/manifests`: `:` -> `%`, `/` -> `#`) and have Docker's format
//! (`Ref`, `Descriptor`, `Raw`, `SchemaV2Manifest`/`OCIManifest`). `Raw` is
//! the image manifest byte-exact, so `push` copies it into the list's
//! repository under its own digest (Docker re-serialises it, which changes
//! the digest of manifests not formatted the way Docker formats them).
//!
//! Deviations from Docker, on purpose:
//! - the list is an OCI index when every image is an OCI manifest (Docker
//!   always writes a Docker manifest list; a mix still gives one);
//! - `create --amend` re-reads an image already in the list from the
//!   registry (Docker keeps the stale local copy), keeping its annotated
//!   platform only if the manifest did not change;
//! - a child whose blobs cannot be mounted is copied blob by blob instead of
//!   failing;
//! - `annotate` also checks the variant of arm, arm64 and amd64.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use berth_client::RegistryClient;
use berth_oci::manifest::{ManifestKind, ParsedManifest};
use berth_oci::media_type as mt;
use berth_oci::{Digest, ImageRef};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::exit::{not_found, usage};
use crate::inspect::{block_on, client_for, RemoteOpts};

/// Image configs larger than this are not read for their platform.
const MAX_CONFIG_BYTES: usize = 8 << 20;

#[derive(Args, Debug)]
pub struct ManifestArgs {
    #[command(subcommand)]
    command: ManifestCommand,
}

#[derive(Subcommand, Debug)]
enum ManifestCommand {
    /// Create a local manifest list for annotating and pushing to a registry
    Create(CreateArgs),
    /// Set the platform of an image in a local manifest list
    Annotate(AnnotateArgs),
    /// Display an image manifest or manifest list (a local list first, else the registry's)
    Inspect(InspectArgs),
    /// Push a local manifest list to its registry (images of other repositories are copied in first)
    Push(PushArgs),
    /// Delete local manifest lists
    Rm(RmArgs),
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// The list to create, e.g. localhost:5000/app:1
    #[arg(value_name = "MANIFEST_LIST")]
    list: String,
    /// Images (single-platform manifests) of the same registry
    #[arg(value_name = "MANIFEST", required = true)]
    images: Vec<String>,
    /// Add to (or refresh images of) an existing local list
    #[arg(long, short = 'a')]
    amend: bool,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Args, Debug)]
struct AnnotateArgs {
    #[arg(value_name = "MANIFEST_LIST")]
    list: String,
    #[arg(value_name = "MANIFEST")]
    image: String,
    /// Set operating system
    #[arg(long)]
    os: Option<String>,
    /// Set architecture
    #[arg(long)]
    arch: Option<String>,
    /// Set architecture variant (e.g. v7 for arm, v8 for arm64)
    #[arg(long)]
    variant: Option<String>,
    /// Set operating system version
    #[arg(long)]
    os_version: Option<String>,
    /// Add operating system features (comma-separated, repeatable)
    #[arg(long, value_delimiter = ',')]
    os_features: Vec<String>,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// [MANIFEST_LIST] MANIFEST: with a list, the image's entry in that local list
    #[arg(value_name = "REF", num_args = 1..=2, required = true)]
    refs: Vec<String>,
    /// Output additional info including layers and platform
    #[arg(long, short = 'v')]
    verbose: bool,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Args, Debug)]
struct PushArgs {
    #[arg(value_name = "MANIFEST_LIST")]
    list: String,
    /// Remove the local manifest list after the push
    #[arg(long, short = 'p')]
    purge: bool,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Args, Debug)]
struct RmArgs {
    #[arg(value_name = "MANIFEST_LIST", required = true)]
    lists: Vec<String>,
}

pub fn manifest(root: Option<PathBuf>, args: ManifestArgs) -> Result<()> {
    let store = ListStore::new(&root.unwrap_or_else(berth_store::default_root));
    match args.command {
        ManifestCommand::Create(a) => create(&store, a),
        ManifestCommand::Annotate(a) => annotate(&store, a),
        ManifestCommand::Inspect(a) => inspect(&store, a),
        ManifestCommand::Push(a) => push(&store, a),
        ManifestCommand::Rm(a) => rm(&store, a),
    }
}

// ---------------------------------------------------------------- model

/// An OCI platform, with Docker's field names and order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PlatformSpec {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    os_version: String,
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    variant: String,
}

impl PlatformSpec {
    /// The platform fields of an image config (Docker reads them the same way).
    fn from_config(config: &Value) -> PlatformSpec {
        let s = |k: &str| {
            config
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        PlatformSpec {
            architecture: s("architecture"),
            os: s("os"),
            os_version: s("os.version"),
            os_features: config
                .get("os.features")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            variant: s("variant"),
        }
    }
}

/// The descriptor of an image in a local list (OCI field order).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryDescriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<PlatformSpec>,
}

/// One image of a local list (Docker's `types.ImageManifest`).
#[derive(Debug, Clone)]
struct Entry {
    reference: ImageRef,
    descriptor: EntryDescriptor,
    /// The manifest as the registry served it.
    raw: Bytes,
    parsed: ParsedManifest,
}

/// The stored form; the manifest object itself is derived from `Raw`.
#[derive(Deserialize)]
struct StoredEntry {
    #[serde(rename = "Ref")]
    reference: String,
    #[serde(rename = "Descriptor")]
    descriptor: EntryDescriptor,
    #[serde(rename = "Raw", default)]
    raw: Option<String>,
}

impl Entry {
    fn platform(&self) -> PlatformSpec {
        self.descriptor.platform.clone().unwrap_or_default()
    }

    /// Docker's JSON of an `ImageManifest`, compact.
    fn to_json(&self) -> Result<String> {
        let key = if self.descriptor.media_type == mt::OCI_MANIFEST {
            "OCIManifest"
        } else {
            "SchemaV2Manifest"
        };
        let text = std::str::from_utf8(&self.raw).context("manifest is not UTF-8")?;
        Ok(format!(
            "{{\"Ref\":{},\"Descriptor\":{},\"Raw\":{},\"{key}\":{}}}",
            serde_json::to_string(&self.reference.to_string())?,
            serde_json::to_string(&self.descriptor)?,
            serde_json::to_string(&base64::engine::general_purpose::STANDARD.encode(&self.raw))?,
            relayout(text, None),
        ))
    }

    /// Reads a stored entry back, checking that it is consistent.
    fn from_json(bytes: &[u8], path: &Path) -> Result<Entry> {
        let broken = |why: String| {
            anyhow!(
                "local manifest file {} is broken ({why}): delete its list with berth manifest rm and create it again",
                path.display()
            )
        };
        let stored: StoredEntry =
            serde_json::from_slice(bytes).map_err(|e| broken(e.to_string()))?;
        let reference = ImageRef::parse(&stored.reference).map_err(|e| broken(e.to_string()))?;
        let raw = stored
            .raw
            .as_deref()
            .ok_or_else(|| broken("no Raw manifest".to_string()))
            .and_then(|r| {
                base64::engine::general_purpose::STANDARD
                    .decode(r)
                    .map_err(|e| broken(format!("Raw is not base64: {e}")))
            })?;
        let d = &stored.descriptor;
        let actual = Digest::of(d.digest.algorithm(), &raw);
        if actual != d.digest || raw.len() as u64 != d.size {
            return Err(broken(format!(
                "the manifest is {actual} ({} bytes), the descriptor says {} ({} bytes)",
                raw.len(),
                d.digest,
                d.size
            )));
        }
        let parsed =
            ParsedManifest::parse(&raw, Some(&d.media_type)).map_err(|e| broken(e.to_string()))?;
        if parsed.kind != ManifestKind::Image {
            return Err(broken("it holds a manifest list, not an image".to_string()));
        }
        Ok(Entry {
            reference,
            descriptor: stored.descriptor,
            raw: Bytes::from(raw),
            parsed,
        })
    }
}

/// An entry of a Docker manifest list (distribution's field order).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DockerListEntry<'a> {
    media_type: &'a str,
    size: u64,
    digest: &'a Digest,
    platform: PlatformSpec,
}

/// An entry of an OCI index.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndexEntry<'a> {
    media_type: &'a str,
    digest: &'a Digest,
    size: u64,
    platform: PlatformSpec,
}

/// The list document `push` sends: an OCI index if every image is an OCI
/// manifest, else a Docker manifest list. Laid out like distribution's
/// canonical form (3-space indent), so it reads the way Docker prints it.
fn list_document(entries: &[Entry]) -> Result<(&'static str, String)> {
    let all_oci = entries
        .iter()
        .all(|e| e.descriptor.media_type == mt::OCI_MANIFEST);
    let (media_type, manifests) = if all_oci {
        let m: Vec<OciIndexEntry> = entries
            .iter()
            .map(|e| OciIndexEntry {
                media_type: &e.descriptor.media_type,
                digest: &e.descriptor.digest,
                size: e.descriptor.size,
                platform: e.platform(),
            })
            .collect();
        (mt::OCI_INDEX, serde_json::to_string(&m)?)
    } else {
        let m: Vec<DockerListEntry> = entries
            .iter()
            .map(|e| DockerListEntry {
                media_type: &e.descriptor.media_type,
                size: e.descriptor.size,
                digest: &e.descriptor.digest,
                platform: e.platform(),
            })
            .collect();
        (mt::DOCKER_MANIFEST_LIST, serde_json::to_string(&m)?)
    };
    let compact =
        format!("{{\"schemaVersion\":2,\"mediaType\":\"{media_type}\",\"manifests\":{manifests}}}");
    Ok((media_type, relayout(&compact, Some("   "))))
}

/// Re-lays out valid JSON text like Go's `json.Indent` (with `Some(indent)`)
/// or `json.Compact` (with `None`): keys, strings and numbers are copied
/// verbatim, so member order and number spelling survive (serde_json's
/// `Value` would sort keys).
fn relayout(src: &str, indent: Option<&str>) -> String {
    let mut out = String::with_capacity(src.len() + src.len() / 2);
    let newline = |out: &mut String, depth: usize| {
        if let Some(ind) = indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(ind);
            }
        }
    };
    let (mut depth, mut in_string, mut escaped, mut just_opened) = (0usize, false, false, false);
    for c in src.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        }
        if just_opened {
            just_opened = false;
            if matches!(c, '}' | ']') {
                // An empty object or array stays `{}` / `[]`.
                depth = depth.saturating_sub(1);
                out.push(c);
                continue;
            }
            newline(&mut out, depth);
        }
        match c {
            '{' | '[' => {
                out.push(c);
                depth += 1;
                just_opened = true;
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => {
                out.push(c);
                if indent.is_some() {
                    out.push(' ');
                }
            }
            '"' => {
                out.push(c);
                in_string = true;
            }
            _ => out.push(c),
        }
    }
    out
}

// ---------------------------------------------------------------- validation

/// Docker's os/arch pairs (Go's ports when it was written), plus the ports
/// Go added since that images exist for.
const VALID_OS_ARCH: &[(&str, &str)] = &[
    ("darwin", "386"),
    ("darwin", "amd64"),
    ("darwin", "arm"),
    ("darwin", "arm64"),
    ("dragonfly", "amd64"),
    ("freebsd", "386"),
    ("freebsd", "amd64"),
    ("freebsd", "arm"),
    ("freebsd", "arm64"),
    ("linux", "386"),
    ("linux", "amd64"),
    ("linux", "arm"),
    ("linux", "arm64"),
    ("linux", "loong64"),
    ("linux", "mips"),
    ("linux", "mipsle"),
    ("linux", "mips64"),
    ("linux", "mips64le"),
    ("linux", "ppc64le"),
    ("linux", "riscv64"),
    ("linux", "s390x"),
    ("netbsd", "386"),
    ("netbsd", "amd64"),
    ("netbsd", "arm"),
    ("openbsd", "386"),
    ("openbsd", "amd64"),
    ("openbsd", "arm"),
    ("plan9", "386"),
    ("plan9", "amd64"),
    ("solaris", "amd64"),
    ("windows", "386"),
    ("windows", "amd64"),
    ("windows", "arm64"),
];

/// The variants an architecture has, if it has a closed set.
fn known_variants(arch: &str) -> Option<&'static [&'static str]> {
    match arch {
        "arm" => Some(&["v5", "v6", "v7", "v8"]),
        "arm64" => Some(&[
            "v8", "v8.0", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v8.6", "v8.7", "v8.8", "v8.9",
            "v9", "v9.0", "v9.1", "v9.2", "v9.3", "v9.4", "v9.5",
        ]),
        "amd64" => Some(&["v1", "v2", "v3", "v4"]),
        _ => None,
    }
}

fn check_platform(image: &str, p: &PlatformSpec) -> Result<()> {
    if !VALID_OS_ARCH.contains(&(p.os.as_str(), p.architecture.as_str())) {
        let linux: Vec<&str> = VALID_OS_ARCH
            .iter()
            .filter(|(os, _)| *os == "linux")
            .map(|(_, a)| *a)
            .collect();
        bail!(
            "manifest entry for image {image} has unsupported os/arch combination: {}/{} (set both with --os and --arch; linux supports: {})",
            p.os,
            p.architecture,
            linux.join(", ")
        );
    }
    if p.variant.is_empty() {
        return Ok(());
    }
    match known_variants(&p.architecture) {
        Some(known) if !known.contains(&p.variant.as_str()) => bail!(
            "variant {:?} is not a variant of {} (use one of: {})",
            p.variant,
            p.architecture,
            known.join(", ")
        ),
        None if !p
            .variant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.') =>
        {
            bail!(
                "variant {:?} is not a valid variant name (lowercase letters, digits and dots, e.g. v7)",
                p.variant
            )
        }
        _ => Ok(()),
    }
}

/// A manifest list reference: normalised, and named by a tag (the list is
/// pushed under it).
fn list_ref(s: &str) -> Result<ImageRef> {
    let r = ImageRef::parse(s).with_context(|| format!("invalid manifest list name {s:?}"))?;
    if r.digest.is_some() {
        return Err(usage(format!(
            "manifest list {s:?} names a digest: name the list by a tag (e.g. {}:latest)",
            r.name()
        )));
    }
    Ok(r)
}

fn image_ref(s: &str) -> Result<ImageRef> {
    ImageRef::parse(s).with_context(|| format!("invalid image reference {s:?}"))
}

fn same_registry(list: &ImageRef, image: &ImageRef) -> Result<()> {
    if list.registry != image.registry {
        bail!(
            "cannot use source images from a different registry than the target image: {} != {} (copy {} to {} first with berth copy)",
            image.registry,
            list.registry,
            image.familiar(),
            list.registry
        );
    }
    Ok(())
}

fn no_list(list: &ImageRef) -> anyhow::Error {
    not_found(format!("No such manifest: {list} (no local manifest list: run berth manifest create {list} IMAGE... first)"))
}

// ---------------------------------------------------------------- local store

/// `<root>/manifests`: one directory per list, one file per image.
struct ListStore {
    dir: PathBuf,
}

/// Docker's file-safe spelling of a reference.
fn file_name(r: &ImageRef) -> String {
    r.to_string().replace(':', "%").replace('/', "#")
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

impl ListStore {
    fn new(root: &Path) -> ListStore {
        ListStore {
            dir: root.join("manifests"),
        }
    }

    fn list_dir(&self, list: &ImageRef) -> PathBuf {
        self.dir.join(file_name(list))
    }

    /// The list's images in file-name order (as Docker reads them); `None`
    /// if there is no list (or an empty one).
    fn get_list(&self, list: &ImageRef) -> Result<Option<Vec<Entry>>> {
        let dir = self.list_dir(list);
        let read = match fs::read_dir(&dir) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        let mut names = Vec::new();
        for item in read {
            let name = item
                .with_context(|| format!("cannot read {}", dir.display()))?
                .file_name();
            let name = name.to_string_lossy().into_owned();
            // Temporary files of an interrupted write start with a dot.
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Ok(None);
        }
        names.sort();
        names
            .iter()
            .map(|n| self.read_entry(&dir.join(n)))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn read_entry(&self, path: &Path) -> Result<Entry> {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Entry::from_json(&bytes, path)
    }

    fn get(&self, list: &ImageRef, image: &ImageRef) -> Result<Option<Entry>> {
        let path = self.list_dir(list).join(file_name(image));
        match fs::metadata(&path) {
            Ok(_) => self.read_entry(&path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn write_file(dir: &Path, entry: &Entry) -> Result<()> {
        let json = entry.to_json()?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        tmp.write_all(json.as_bytes())
            .and_then(|_| tmp.as_file().sync_all())
            .with_context(|| format!("cannot write {}", tmp.path().display()))?;
        let path = dir.join(file_name(&entry.reference));
        tmp.persist(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// Creates a new list whole: written into a temporary directory that is
    /// renamed into place, so a failure or a concurrent create leaves no
    /// partial list.
    fn create(&self, list: &ImageRef, entries: &[Entry]) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&self.dir)
            .with_context(|| format!("cannot create a directory in {}", self.dir.display()))?;
        for e in entries {
            Self::write_file(tmp.path(), e)?;
        }
        sync_dir(tmp.path())?;
        let dest = self.list_dir(list);
        // rename(2) replaces only an empty directory: a list created
        // meanwhile makes this fail instead of being overwritten.
        match fs::rename(tmp.path(), &dest) {
            Ok(()) => {
                let _ = tmp.keep();
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                bail!("refusing to amend an existing manifest list with no --amend flag ({list} was created meanwhile)")
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", dest.display()));
            }
        }
        sync_dir(&self.dir)
    }

    /// Adds or replaces images of an existing list, each file atomically.
    fn save(&self, list: &ImageRef, entries: &[Entry]) -> Result<()> {
        let dir = self.list_dir(list);
        for e in entries {
            Self::write_file(&dir, e)?;
        }
        sync_dir(&dir)
    }

    /// Removes a list: renamed out of the way first, so it disappears at
    /// once even if the deletion is interrupted.
    fn remove(&self, list: &ImageRef) -> Result<()> {
        let dir = self.list_dir(list);
        let trash = self.dir.join(format!(
            ".rm-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        fs::rename(&dir, &trash).with_context(|| format!("cannot remove {}", dir.display()))?;
        fs::remove_dir_all(&trash).with_context(|| format!("cannot remove {}", trash.display()))
    }
}

// ---------------------------------------------------------------- registry

fn manifest_error(image: &ImageRef, e: berth_client::Error) -> anyhow::Error {
    if e.is_not_found() {
        not_found(format!("no such manifest: {image}"))
    } else {
        e.into()
    }
}

async fn read_blob(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
    size: u64,
    limit: usize,
) -> Result<Vec<u8>> {
    if size > limit as u64 {
        bail!("blob {digest} is {size} bytes, more than the {limit} read here");
    }
    let blob = client.get_blob(repository, digest, Some(size), 0).await?;
    let mut out = Vec::new();
    let mut stream = blob.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
        if out.len() > limit {
            bail!("blob {digest} is larger than {limit} bytes");
        }
    }
    Ok(out)
}

/// The platform recorded in an image's config.
async fn config_platform(
    client: &RegistryClient,
    image: &ImageRef,
    parsed: &ParsedManifest,
) -> Result<PlatformSpec> {
    let Some(config) = &parsed.config else {
        bail!("{image}: the manifest has no config");
    };
    let bytes = read_blob(
        client,
        &image.repository,
        &config.digest,
        config.size,
        MAX_CONFIG_BYTES,
    )
    .await
    .with_context(|| format!("{image}: cannot read the image config {}", config.digest))?;
    // An artifact's config need not be JSON: its platform stays empty and
    // can be set with `annotate`.
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(PlatformSpec::from_config(&value))
}

/// Fetches an image manifest and the platform of its config.
async fn fetch_entry(client: &RegistryClient, image: &ImageRef) -> Result<Entry> {
    let m = client
        .get_manifest(&image.repository, &image.reference(), &[])
        .await
        .map_err(|e| manifest_error(image, e))?;
    let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
        .with_context(|| format!("{image}: cannot read the manifest {}", m.digest))?;
    if parsed.kind == ManifestKind::Index {
        bail!(
            "{image} is a manifest list: a list holds images, not lists; name its images by digest instead (berth platforms {image} lists them)"
        );
    }
    let platform = config_platform(client, image, &parsed).await?;
    Ok(Entry {
        reference: image.clone(),
        descriptor: EntryDescriptor {
            media_type: parsed.media_type.clone(),
            digest: m.digest,
            size: m.bytes.len() as u64,
            platform: Some(platform),
        },
        raw: m.bytes,
        parsed,
    })
}

/// Makes `entry`'s manifest and blobs available in `repository` of the
/// same registry: blobs are mounted from the image's repository (copied if
/// the registry declines the mount), then the manifest is put by digest.
/// Returns whether the manifest had to be pushed.
async fn ensure_child(client: &RegistryClient, repository: &str, entry: &Entry) -> Result<bool> {
    let digest = entry.descriptor.digest.to_string();
    if client
        .head_manifest(repository, &digest, &[&entry.descriptor.media_type])
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let from = entry.reference.repository.as_str();
    if from != repository {
        let blobs = entry
            .parsed
            .config
            .iter()
            .chain(entry.parsed.layers.iter())
            .filter(|d| !mt::is_non_distributable(&d.media_type));
        for blob in blobs {
            if client
                .blob_exists(repository, &blob.digest)
                .await?
                .is_some()
            {
                continue;
            }
            if client.mount_blob(repository, from, &blob.digest).await? {
                continue;
            }
            let source = client
                .get_blob(from, &blob.digest, Some(blob.size), 0)
                .await
                .with_context(|| {
                    format!("{}: cannot read blob {}", entry.reference, blob.digest)
                })?;
            let stream = source.stream.map(|r| r.map_err(std::io::Error::other));
            client
                .push_blob(repository, &blob.digest, blob.size, stream)
                .await
                .with_context(|| format!("cannot copy blob {} into {repository}", blob.digest))?;
        }
    }
    client
        .put_manifest(
            repository,
            &digest,
            &entry.descriptor.media_type,
            entry.raw.clone(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot push {} ({digest}) into {repository}",
                entry.reference
            )
        })?;
    Ok(true)
}

// ---------------------------------------------------------------- commands

fn create(store: &ListStore, args: CreateArgs) -> Result<()> {
    let list = list_ref(&args.list)?;
    let existing = store.get_list(&list)?;
    if existing.is_some() && !args.amend {
        bail!(
            "refusing to amend an existing manifest list with no --amend flag (add --amend to add images to {list}, or remove it with berth manifest rm {list})"
        );
    }
    let images = args
        .images
        .iter()
        .map(|s| image_ref(s))
        .collect::<Result<Vec<_>>>()?;
    for image in &images {
        same_registry(&list, image)?;
    }
    let client = client_for(&list.registry, &args.remote)?;
    // Everything is fetched before anything is written.
    let mut entries = block_on(async {
        let mut out = Vec::with_capacity(images.len());
        for image in &images {
            out.push(fetch_entry(&client, image).await?);
        }
        anyhow::Ok(out)
    })??;
    // An annotation belongs to the manifest it was made for: keep it while
    // the image still has that manifest.
    for e in entries.iter_mut() {
        if let Some(old) = existing
            .iter()
            .flatten()
            .find(|o| o.reference == e.reference && o.descriptor.digest == e.descriptor.digest)
        {
            e.descriptor.platform = old.descriptor.platform.clone();
        }
    }
    match existing {
        None => store.create(&list, &entries)?,
        Some(_) => store.save(&list, &entries)?,
    }
    println!("Created manifest list {list}");
    Ok(())
}

fn annotate(store: &ListStore, args: AnnotateArgs) -> Result<()> {
    let list = list_ref(&args.list)?;
    let image = image_ref(&args.image)?;
    let Some(mut entry) = store.get(&list, &image)? else {
        if store.get_list(&list)?.is_none() {
            return Err(no_list(&list));
        }
        return Err(not_found(format!(
            "manifest for image {} does not exist in {} (add it with berth manifest create --amend {} {})",
            args.image, args.list, args.list, args.image
        )));
    };
    let mut p = entry.platform();
    let set = |field: &mut String, value: Option<String>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            *field = v;
        }
    };
    set(&mut p.os, args.os);
    set(&mut p.architecture, args.arch);
    set(&mut p.variant, args.variant);
    set(&mut p.os_version, args.os_version);
    for f in args.os_features.into_iter().filter(|f| !f.is_empty()) {
        if !p.os_features.contains(&f) {
            p.os_features.push(f);
        }
    }
    check_platform(&args.image, &p)?;
    entry.descriptor.platform = Some(p);
    store.save(&list, std::slice::from_ref(&entry))
}

fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Docker's verbose form of several images: a JSON array, tab-indented.
fn verbose_list(entries: &[Entry]) -> Result<String> {
    let items = entries
        .iter()
        .map(Entry::to_json)
        .collect::<Result<Vec<_>>>()?;
    Ok(relayout(&format!("[{}]", items.join(",")), Some("\t")))
}

fn print_entry(entry: &Entry, verbose: bool) -> Result<()> {
    if verbose {
        print(&relayout(&entry.to_json()?, Some("\t")))
    } else {
        let text = std::str::from_utf8(&entry.raw).context("manifest is not UTF-8")?;
        print(&relayout(text, Some("\t")))
    }
}

fn inspect(store: &ListStore, args: InspectArgs) -> Result<()> {
    if let [list, image] = args.refs.as_slice() {
        let list = list_ref(list)?;
        let image = image_ref(image)?;
        let entry = store.get(&list, &image)?.ok_or_else(|| {
            not_found(format!(
                "No such manifest: {image} (it is not in the local manifest list {list})"
            ))
        })?;
        return print_entry(&entry, args.verbose);
    }
    let image = image_ref(&args.refs[0])?;
    if image.digest.is_none() {
        if let Some(entries) = store.get_list(&image)? {
            return if args.verbose {
                print(&verbose_list(&entries)?)
            } else {
                print(&list_document(&entries)?.1)
            };
        }
    }
    let client = client_for(&image.registry, &args.remote)?;
    block_on(async {
        let m = client
            .get_manifest(&image.repository, &image.reference(), &[])
            .await
            .map_err(|e| manifest_error(&image, e))?;
        let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
            .with_context(|| format!("{image}: cannot read the manifest {}", m.digest))?;
        let text = std::str::from_utf8(&m.bytes).context("manifest is not UTF-8")?;
        match (parsed.kind, args.verbose) {
            (ManifestKind::Image, false) => print(&relayout(text, Some("\t"))),
            (ManifestKind::Image, true) => {
                let platform = config_platform(&client, &image, &parsed).await?;
                let entry = Entry {
                    reference: image.clone(),
                    descriptor: EntryDescriptor {
                        media_type: parsed.media_type.clone(),
                        digest: m.digest.clone(),
                        size: m.bytes.len() as u64,
                        platform: Some(platform),
                    },
                    raw: m.bytes.clone(),
                    parsed,
                };
                print_entry(&entry, true)
            }
            (ManifestKind::Index, false) => print(&relayout(text, Some("   "))),
            (ManifestKind::Index, true) => {
                // Docker resolves every entry; the platform is the list's.
                let mut entries = Vec::new();
                for d in &parsed.manifests {
                    let child_ref = ImageRef {
                        digest: Some(d.digest.clone()),
                        ..image.clone()
                    };
                    let child = client
                        .get_manifest(&image.repository, &d.digest.to_string(), &[])
                        .await
                        .map_err(|e| manifest_error(&child_ref, e))?;
                    let child_parsed = ParsedManifest::parse(&child.bytes, Some(&child.media_type))
                        .with_context(|| format!("{child_ref}: cannot read the manifest"))?;
                    if child_parsed.kind != ManifestKind::Image {
                        bail!("{image}: entry {} is itself a manifest list; nested lists are not supported", d.digest);
                    }
                    let platform = d
                        .platform
                        .as_ref()
                        .map(PlatformSpec::from_config)
                        .unwrap_or_default();
                    entries.push(Entry {
                        reference: child_ref,
                        descriptor: EntryDescriptor {
                            media_type: child_parsed.media_type.clone(),
                            digest: child.digest,
                            size: child.bytes.len() as u64,
                            platform: Some(platform),
                        },
                        raw: child.bytes,
                        parsed: child_parsed,
                    });
                }
                print(&verbose_list(&entries)?)
            }
        }
    })?
}

fn push(store: &ListStore, args: PushArgs) -> Result<()> {
    let list = list_ref(&args.list)?;
    let entries = store.get_list(&list)?.ok_or_else(|| no_list(&list))?;
    for e in &entries {
        same_registry(&list, &e.reference)?;
        let p = e.platform();
        if p.os.is_empty() || p.architecture.is_empty() {
            bail!(
                "manifest {} must have an OS and Architecture to be pushed to a registry (set them with berth manifest annotate --os OS --arch ARCH {} {})",
                e.reference,
                list,
                e.reference
            );
        }
    }
    let (media_type, document) = list_document(&entries)?;
    let client = client_for(&list.registry, &args.remote)?;
    let tag = list.reference();
    block_on(async {
        // Children before the list: a registry refuses a list whose
        // manifests it does not have in the list's repository.
        for e in &entries {
            if ensure_child(&client, &list.repository, e).await? {
                println!(
                    "Pushed ref {}@{} with digest: {}",
                    list.name(),
                    e.descriptor.digest,
                    e.descriptor.digest
                );
            }
        }
        let digest = client
            .put_manifest(
                &list.repository,
                &tag,
                media_type,
                Bytes::from(document.into_bytes()),
            )
            .await
            .with_context(|| format!("cannot push the manifest list {list}"))?;
        println!("{digest}");
        anyhow::Ok(())
    })??;
    if args.purge {
        store.remove(&list)?;
    }
    Ok(())
}

fn rm(store: &ListStore, args: RmArgs) -> Result<()> {
    // Like Docker: every list is tried, the failures are reported together.
    let mut errors = Vec::new();
    for name in &args.lists {
        let result = list_ref(name).and_then(|list| match store.get_list(&list)? {
            Some(_) => store.remove(&list),
            None => Err(not_found(format!("No such manifest: {list}"))),
        });
        if let Err(e) = result {
            errors.push(e);
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => {
            let text: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
            let all_missing = errors
                .iter()
                .all(|e| crate::exit::classify(e) == crate::exit::Failure::NotFound);
            Err(if all_missing {
                not_found(text.join("\n"))
            } else {
                anyhow!("{}", text.join("\n"))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "size": 2},
  "layers": []
}"#;

    fn entry(reference: &str, media_type: &str, platform: Option<PlatformSpec>) -> Entry {
        let raw = Bytes::from_static(MANIFEST.as_bytes());
        Entry {
            reference: ImageRef::parse(reference).unwrap(),
            descriptor: EntryDescriptor {
                media_type: media_type.to_string(),
                digest: Digest::sha256_of(&raw),
                size: raw.len() as u64,
                platform,
            },
            parsed: ParsedManifest::parse(&raw, None).unwrap(),
            raw,
        }
    }

    fn linux(arch: &str, variant: &str) -> PlatformSpec {
        PlatformSpec {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.into(),
            ..Default::default()
        }
    }

    #[test]
    fn relayout_matches_go_indent() {
        let src = "{\"a\": [1, 2 ,{}], \"b\":{\"c\":\"x, \\\"y\\\": [z]\"},\"d\":[ ]}";
        assert_eq!(
            relayout(src, Some("\t")),
            "{\n\t\"a\": [\n\t\t1,\n\t\t2,\n\t\t{}\n\t],\n\t\"b\": {\n\t\t\"c\": \"x, \\\"y\\\": [z]\"\n\t},\n\t\"d\": []\n}"
        );
        assert_eq!(
            relayout(src, None),
            "{\"a\":[1,2,{}],\"b\":{\"c\":\"x, \\\"y\\\": [z]\"},\"d\":[]}"
        );
        // Key order and number spelling are kept.
        assert_eq!(
            relayout("{\"z\":1.50,\"a\":1e3}", None),
            "{\"z\":1.50,\"a\":1e3}"
        );
    }

    #[test]
    fn list_type_follows_the_images() {
        let oci = entry(
            "localhost:5000/a:1",
            mt::OCI_MANIFEST,
            Some(linux("amd64", "")),
        );
        let docker = entry(
            "localhost:5000/b:1",
            mt::DOCKER_MANIFEST,
            Some(linux("arm", "v7")),
        );
        let (t, doc) = list_document(std::slice::from_ref(&oci)).unwrap();
        assert_eq!(t, mt::OCI_INDEX);
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["mediaType"], mt::OCI_INDEX);
        assert_eq!(v["manifests"][0]["platform"]["architecture"], "amd64");
        assert!(v["manifests"][0]["platform"].get("variant").is_none());
        let (t, doc) = list_document(&[oci, docker]).unwrap();
        assert_eq!(t, mt::DOCKER_MANIFEST_LIST);
        // distribution's canonical layout: 3 spaces, mediaType/size/digest.
        assert!(doc.starts_with(
            "{\n   \"schemaVersion\": 2,\n   \"mediaType\": \"application/vnd.docker.distribution.manifest.list.v2+json\",\n   \"manifests\": [\n      {\n         \"mediaType\""
        ));
        assert!(doc.find("\"size\"").unwrap() < doc.find("\"digest\"").unwrap());
        let v: Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(v["manifests"][1]["platform"]["variant"], "v7");
        // The document parses as what it claims to be.
        let parsed = ParsedManifest::parse(doc.as_bytes(), Some(t)).unwrap();
        assert_eq!(parsed.manifests.len(), 2);
    }

    #[test]
    fn entries_round_trip_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = linux("arm64", "v8");
        p.os_features = vec!["f1".into()];
        p.os_version = "1".into();
        let e = entry("localhost:5000/a:1", mt::OCI_MANIFEST, Some(p.clone()));
        let json = e.to_json().unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Ref"], "localhost:5000/a:1");
        assert_eq!(v["Descriptor"]["platform"]["os.features"][0], "f1");
        assert_eq!(v["OCIManifest"]["schemaVersion"], 2);
        let back = Entry::from_json(json.as_bytes(), dir.path()).unwrap();
        assert_eq!(back.platform(), p);
        assert_eq!(back.raw, e.raw);
        // A Raw that does not match the descriptor is refused.
        let tampered = json.replace(
            &e.descriptor.digest.to_string(),
            &Digest::sha256_of(b"x").to_string(),
        );
        let err = Entry::from_json(tampered.as_bytes(), dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("berth manifest rm"), "{err:#}");
    }

    #[test]
    fn store_create_amend_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ListStore::new(dir.path());
        let list = list_ref("localhost:5000/app:1").unwrap();
        assert!(store.get_list(&list).unwrap().is_none());
        let a = entry(
            "localhost:5000/a:1",
            mt::OCI_MANIFEST,
            Some(linux("amd64", "")),
        );
        store.create(&list, std::slice::from_ref(&a)).unwrap();
        assert!(dir
            .path()
            .join("manifests/localhost%5000#app%1/localhost%5000#a%1")
            .is_file());
        // A second create of the same list loses the race cleanly.
        let err = store.create(&list, std::slice::from_ref(&a)).unwrap_err();
        assert!(err.to_string().contains("--amend"), "{err}");
        let b = entry(
            "localhost:5000/b:1",
            mt::OCI_MANIFEST,
            Some(linux("arm64", "")),
        );
        store.save(&list, &[b]).unwrap();
        let got = store.get_list(&list).unwrap().unwrap();
        let refs: Vec<String> = got.iter().map(|e| e.reference.to_string()).collect();
        assert_eq!(refs, ["localhost:5000/a:1", "localhost:5000/b:1"]);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(store.list_dir(&list))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2);
        store.remove(&list).unwrap();
        assert!(store.get_list(&list).unwrap().is_none());
        assert_eq!(fs::read_dir(&store.dir).unwrap().count(), 0);
    }

    #[test]
    fn platform_validation() {
        assert!(check_platform("i", &linux("amd64", "")).is_ok());
        assert!(check_platform("i", &linux("arm", "v7")).is_ok());
        assert!(check_platform("i", &linux("arm64", "v8")).is_ok());
        assert!(check_platform("i", &linux("riscv64", "rva22")).is_ok());
        let err = check_platform("i", &linux("arm", "v9")).unwrap_err();
        assert!(err.to_string().contains("v7"), "{err}");
        let err = check_platform("i", &linux("x86_64", "")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unsupported os/arch combination: linux/x86_64"),
            "{err}"
        );
        assert!(check_platform("i", &PlatformSpec::default()).is_err());
        assert!(check_platform("i", &linux("riscv64", "Bad/")).is_err());
    }

    #[test]
    fn config_platform_fields() {
        let p = PlatformSpec::from_config(&serde_json::json!({
            "architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1",
            "os.features": ["win32k"], "variant": ""
        }));
        assert_eq!(
            (p.os.as_str(), p.architecture.as_str()),
            ("windows", "amd64")
        );
        assert!(p.variant.is_empty());
        assert_eq!(p.os_version, "10.0.17763.1");
        assert_eq!(p.os_features, ["win32k"]);
        assert!(list_ref("localhost:5000/a@sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a").is_err());
    }
}
