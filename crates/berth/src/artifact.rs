//! `berth artifact push|pull|attach|discover`: oras-style OCI 1.1 artifacts
//! (image manifests with `artifactType`, the empty config, files as layers
//! named by `org.opencontainers.image.title`, and `subject` for referrers).
//!
//! Registries without the referrers API (distribution 2.8) are handled with
//! the tag schema: `attach` maintains the `sha256-<hex>` index when the
//! registry does not answer the PUT with `OCI-Subject`, and `discover`
//! reads it (both in berth-client).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_client::RegistryClient;
use berth_oci::manifest::{Descriptor, ManifestKind, ParsedManifest};
use berth_oci::media_type as mt;
use berth_oci::{Digest, ImageRef};
use bytes::Bytes;
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::inspect::{block_on, client_for, parse_ref, RemoteOpts};
use crate::progress::{track, Format, Mode, Reporter};
use berth_copy::Event;

/// Layer media type of a file given without one (as oras).
pub const DEFAULT_LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// `artifactType` of an artifact with the empty config and no --artifact-type (as oras).
pub const DEFAULT_ARTIFACT_TYPE: &str = "application/vnd.unknown.artifact.v1";
pub const TITLE: &str = "org.opencontainers.image.title";
/// The empty JSON object `{}`, the OCI 1.1 empty descriptor's content.
const EMPTY_JSON: &[u8] = b"{}";
/// Nesting limit of `discover` (referrers of referrers of ...).
const MAX_DEPTH: usize = 16;

#[derive(Args, Debug)]
pub struct ArtifactArgs {
    #[command(subcommand)]
    command: ArtifactCommand,
}

#[derive(Subcommand, Debug)]
enum ArtifactCommand {
    /// Push files as an OCI artifact (like `oras push`); prints its digest
    Push(PushArgs),
    /// Write an artifact's files (layers with a title) into a directory (like `oras pull`)
    Pull(PullArgs),
    /// Push an artifact that refers to an existing image or artifact (like `oras attach`)
    Attach(AttachArgs),
    /// Show the tree of artifacts that refer to REF (like `oras discover`)
    Discover(DiscoverArgs),
}

#[derive(Args, Debug)]
struct PushArgs {
    /// Where to push: registry/repository[:tag]
    #[arg(value_name = "REF")]
    target: String,
    /// Files to push, each optionally with its media type
    #[arg(value_name = "FILE[:MEDIATYPE]", required = true)]
    files: Vec<String>,
    /// The artifact's type (`artifactType`)
    #[arg(long)]
    artifact_type: Option<String>,
    /// Manifest annotation (repeatable)
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Config blob instead of the empty one
    #[arg(long, value_name = "FILE:MEDIATYPE")]
    config: Option<String>,
    /// No progress on stderr (errors still go there)
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Args, Debug)]
struct PullArgs {
    #[arg(value_name = "REF")]
    source: String,
    /// Directory to write the files into
    #[arg(long, short = 'o', default_value = ".")]
    output: PathBuf,
    /// No progress on stderr (errors still go there)
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Args, Debug)]
struct AttachArgs {
    /// The image or artifact the new artifact refers to
    #[arg(long, value_name = "REF")]
    subject: String,
    /// The artifact's type (`artifactType`)
    #[arg(long)]
    artifact_type: String,
    #[arg(value_name = "FILE[:MEDIATYPE]")]
    files: Vec<String>,
    /// Manifest annotation (repeatable)
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// No progress on stderr (errors still go there)
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Args, Debug)]
struct DiscoverArgs {
    #[arg(value_name = "REF")]
    subject: String,
    /// Only referrers of this artifact type
    #[arg(long)]
    artifact_type: Option<String>,
    /// Output: tree or json
    #[arg(long, short = 'f', default_value = "tree")]
    format: String,
    #[command(flatten)]
    remote: RemoteOpts,
}

pub fn artifact(args: ArtifactArgs) -> Result<()> {
    match args.command {
        ArtifactCommand::Push(a) => push(a),
        ArtifactCommand::Pull(a) => pull(a),
        ArtifactCommand::Attach(a) => attach(a),
        ArtifactCommand::Discover(a) => discover(a),
    }
}

/// `FILE[:MEDIATYPE]`: the media type follows the last `:` when that part
/// looks like one (has a `/`), so `C:/x` style paths and `a:b` names stay files.
fn split_file(spec: &str) -> (PathBuf, Option<String>) {
    match spec.rsplit_once(':') {
        Some((file, media)) if !file.is_empty() && media.contains('/') && !media.contains(' ') => {
            (PathBuf::from(file), Some(media.to_owned()))
        }
        _ => (PathBuf::from(spec), None),
    }
}

fn parse_annotations(list: &[String]) -> Result<Option<Map<String, Value>>> {
    let mut map = Map::new();
    for a in list {
        let Some((k, v)) = a.split_once('=') else {
            bail!("annotation {a:?} is not KEY=VALUE");
        };
        if k.is_empty() {
            bail!("annotation {a:?} has an empty key");
        }
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok((!map.is_empty()).then_some(map))
}

/// A file to upload: its descriptor and where it is.
struct Blob {
    desc: Descriptor,
    source: Source,
}

enum Source {
    File(PathBuf),
    Memory(Bytes),
}

/// Hashes a file (blocking) and describes it.
fn describe_file(path: &Path, media_type: &str) -> Result<Descriptor> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = berth_oci::Algorithm::Sha256.hasher();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest: hasher.finish(),
        size,
        urls: None,
        annotations: None,
        artifact_type: None,
        platform: None,
    })
}

fn layer_blobs(files: &[String]) -> Result<Vec<Blob>> {
    let mut titles = HashSet::new();
    let mut out = Vec::new();
    for spec in files {
        let (path, media) = split_file(spec);
        let title = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{}: not a file name", path.display()))?
            .to_owned();
        if !titles.insert(title.clone()) {
            bail!("two files are named {title:?}: an artifact's file names must differ");
        }
        if !path.is_file() {
            bail!("{}: not a regular file", path.display());
        }
        let mut desc = describe_file(&path, media.as_deref().unwrap_or(DEFAULT_LAYER_TYPE))?;
        let mut ann = Map::new();
        ann.insert(TITLE.to_owned(), Value::String(title));
        desc.annotations = Some(ann);
        out.push(Blob {
            desc,
            source: Source::File(path),
        });
    }
    Ok(out)
}

fn empty_config() -> Blob {
    Blob {
        desc: Descriptor {
            media_type: mt::OCI_EMPTY.to_owned(),
            digest: Digest::sha256_of(EMPTY_JSON),
            size: EMPTY_JSON.len() as u64,
            urls: None,
            annotations: None,
            artifact_type: None,
            platform: None,
        },
        source: Source::Memory(Bytes::from_static(EMPTY_JSON)),
    }
}

/// The OCI 1.1 image manifest of an artifact, fields in the spec's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactManifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    config: ConfigDescriptor<'a>,
    layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a Descriptor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<&'a Map<String, Value>>,
}

/// The config descriptor; the empty one carries its data inline (`e30=`).
#[derive(Serialize)]
struct ConfigDescriptor<'a> {
    #[serde(flatten)]
    desc: &'a Descriptor,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'static str>,
}

fn config_json(desc: &Descriptor) -> ConfigDescriptor<'_> {
    let empty = desc.media_type == mt::OCI_EMPTY && desc.digest == Digest::sha256_of(EMPTY_JSON);
    ConfigDescriptor {
        desc,
        data: empty.then_some("e30="),
    }
}

async fn upload(
    client: &RegistryClient,
    repository: &str,
    blob: &Blob,
    reporter: &Reporter,
) -> Result<()> {
    let d = &blob.desc;
    let (digest, size) = (d.digest.clone(), d.size);
    if client.blob_exists(repository, &d.digest).await? == Some(d.size) {
        reporter.event(Event::Skipped { digest, size });
        return Ok(());
    }
    match &blob.source {
        Source::Memory(bytes) => {
            let data = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes.clone())]);
            client
                .push_blob(repository, &d.digest, d.size, data)
                .await?;
        }
        Source::File(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            reporter.event(Event::Started {
                digest: digest.clone(),
                size,
            });
            let done = Arc::new(AtomicU64::new(0));
            let counter = done.clone();
            let data = futures_util::stream::unfold(file, move |mut f| {
                let counter = counter.clone();
                async move {
                    let mut buf = vec![0u8; 1 << 20];
                    match f.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                            Some((Ok(Bytes::from(buf)), f))
                        }
                        Err(e) => Some((Err(e), f)),
                    }
                }
            });
            track(
                reporter,
                &d.digest,
                d.size,
                &done,
                client.push_blob(repository, &d.digest, d.size, data),
            )
            .await?;
        }
    }
    reporter.event(Event::Copied { digest, size });
    Ok(())
}

struct NewArtifact<'a> {
    artifact_type: Option<&'a str>,
    config: Option<&'a str>,
    files: &'a [String],
    annotations: &'a [String],
}

/// Uploads the blobs and builds the manifest (not yet pushed).
async fn prepare(
    (client, repository): (&RegistryClient, &str),
    layers: &[Blob],
    config: &Blob,
    artifact_type: Option<&str>,
    subject: Option<&Descriptor>,
    annotations: Option<&Map<String, Value>>,
    reporter: &Reporter,
) -> Result<Bytes> {
    for b in layers.iter().chain(std::iter::once(config)) {
        upload(client, repository, b, reporter).await?;
    }
    let layer_descs: Vec<Descriptor> = layers.iter().map(|b| b.desc.clone()).collect();
    let manifest = ArtifactManifest {
        schema_version: 2,
        media_type: mt::OCI_MANIFEST,
        artifact_type,
        config: config_json(&config.desc),
        layers: &layer_descs,
        subject,
        annotations,
    };
    Ok(Bytes::from(serde_json::to_vec_pretty(&manifest)?))
}

/// An artifact's parts, read before the runtime starts.
struct Gathered {
    layers: Vec<Blob>,
    config: Blob,
    artifact_type: Option<String>,
    annotations: Option<Map<String, Value>>,
}

/// Reads the files and config (blocking) before the runtime starts.
fn gather(a: &NewArtifact) -> Result<Gathered> {
    let layers = layer_blobs(a.files)?;
    let config = match a.config {
        None => empty_config(),
        Some(spec) => {
            let (path, media) = split_file(spec);
            let Some(media) = media else {
                bail!("--config {spec:?}: give the media type too (FILE:MEDIATYPE)");
            };
            Blob {
                desc: describe_file(&path, &media)?,
                source: Source::File(path),
            }
        }
    };
    let artifact_type = match a.artifact_type {
        Some(t) if !t.is_empty() => Some(t.to_owned()),
        Some(_) => bail!("--artifact-type must not be empty"),
        // The spec requires artifactType with the empty config.
        None if a.config.is_none() => Some(DEFAULT_ARTIFACT_TYPE.to_owned()),
        // With a config, its media type is the type (as oras, unset).
        None => None,
    };
    let annotations = parse_annotations(a.annotations)?;
    Ok(Gathered {
        layers,
        config,
        artifact_type,
        annotations,
    })
}

fn push(args: PushArgs) -> Result<()> {
    let image = parse_ref(&args.target)?;
    let Gathered {
        layers,
        config,
        artifact_type,
        annotations,
    } = gather(&NewArtifact {
        artifact_type: args.artifact_type.as_deref(),
        config: args.config.as_deref(),
        files: &args.files,
        annotations: &args.annotations,
    })?;
    let client = client_for(&image.registry, &args.remote)?;
    let reporter = Reporter::new(Mode::pick(args.quiet, Format::Text));
    let result = block_on(async {
        let bytes = prepare(
            (&client, &image.repository),
            &layers,
            &config,
            artifact_type.as_deref(),
            None,
            annotations.as_ref(),
            &reporter,
        )
        .await?;
        let reference = image.reference();
        let size = bytes.len() as u64;
        let digest = client
            .put_manifest(&image.repository, &reference, mt::OCI_MANIFEST, bytes)
            .await?;
        reporter.event(Event::Manifest {
            digest: digest.clone(),
            media_type: mt::OCI_MANIFEST.to_owned(),
            size,
        });
        anyhow::Ok(digest)
    })
    .and_then(|r| r);
    reporter.finish(result.is_ok());
    println!("{}", result?);
    Ok(())
}

/// The descriptor of `image`'s manifest (HEAD).
async fn manifest_descriptor(client: &RegistryClient, image: &ImageRef) -> Result<Descriptor> {
    let info = client
        .head_manifest(&image.repository, &image.reference(), &[])
        .await?
        .ok_or_else(|| {
            crate::exit::not_found(format!(
                "manifest unknown: {} does not exist",
                image.familiar()
            ))
        })?;
    Ok(Descriptor {
        media_type: info.media_type,
        digest: info.digest,
        size: info.size,
        urls: None,
        annotations: None,
        artifact_type: None,
        platform: None,
    })
}

fn attach(args: AttachArgs) -> Result<()> {
    let image = parse_ref(&args.subject)?;
    let Gathered {
        layers,
        config,
        artifact_type,
        annotations,
    } = gather(&NewArtifact {
        artifact_type: Some(&args.artifact_type),
        config: None,
        files: &args.files,
        annotations: &args.annotations,
    })?;
    let client = client_for(&image.registry, &args.remote)?;
    let reporter = Reporter::new(Mode::pick(args.quiet, Format::Text));
    let result = block_on(async {
        let subject = manifest_descriptor(&client, &image).await?;
        let bytes = prepare(
            (&client, &image.repository),
            &layers,
            &config,
            artifact_type.as_deref(),
            Some(&subject),
            annotations.as_ref(),
            &reporter,
        )
        .await?;
        let digest = Digest::sha256_of(&bytes);
        let size = bytes.len() as u64;
        let pushed = client
            .put_manifest_response(
                &image.repository,
                &digest.to_string(),
                mt::OCI_MANIFEST,
                bytes,
            )
            .await?;
        if pushed.subject.is_none() {
            tracing::debug!("no OCI-Subject: maintaining the referrers tag schema");
            let entry = Descriptor {
                media_type: mt::OCI_MANIFEST.to_owned(),
                digest: digest.clone(),
                size,
                urls: None,
                annotations: annotations.clone(),
                artifact_type: artifact_type.clone(),
                platform: None,
            };
            client
                .add_referrer_to_tag_schema(&image.repository, &subject.digest, &entry)
                .await?;
        }
        reporter.event(Event::Manifest {
            digest: digest.clone(),
            media_type: mt::OCI_MANIFEST.to_owned(),
            size,
        });
        anyhow::Ok(digest)
    })
    .and_then(|r| r);
    reporter.finish(result.is_ok());
    println!("{}", result?);
    Ok(())
}

/// A title safe as a file name inside the output directory.
fn safe_title(title: &str) -> Result<&str> {
    if title.is_empty()
        || title == "."
        || title == ".."
        || title.contains('/')
        || title.contains('\\')
        || title.contains('\0')
    {
        bail!("refusing the file name {title:?} in the artifact: not a plain file name (path traversal?)");
    }
    Ok(title)
}

fn pull(args: PullArgs) -> Result<()> {
    let image = parse_ref(&args.source)?;
    let client = client_for(&image.registry, &args.remote)?;
    let dir = args.output;
    let reporter = Reporter::new(Mode::pick(args.quiet, Format::Text));
    let result = block_on(async {
        let m = client
            .get_manifest(&image.repository, &image.reference(), &[mt::OCI_MANIFEST])
            .await
            .with_context(|| format!("cannot read {}", image.familiar()))?;
        let parsed = ParsedManifest::parse(&m.bytes, Some(&m.media_type))
            .with_context(|| format!("{}: unreadable manifest", image.familiar()))?;
        if parsed.kind != ManifestKind::Image {
            bail!("{} is an index, not an artifact", image.familiar());
        }
        // Check every name before writing anything.
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        for layer in &parsed.layers {
            let Some(title) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(TITLE))
                .and_then(Value::as_str)
            else {
                tracing::warn!(digest = %layer.digest, "layer without a title skipped");
                continue;
            };
            let title = safe_title(title)?;
            if !seen.insert(title.to_owned()) {
                bail!("the artifact names two files {title:?}");
            }
            files.push((title.to_owned(), layer.clone()));
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (title, layer) in files {
            let target = dir.join(&title);
            let tmp = dir.join(format!(".{title}.berth-partial"));
            let result = download(&client, &image, &layer, &tmp, &reporter).await;
            if let Err(e) = result {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
            tokio::fs::rename(&tmp, &target)
                .await
                .with_context(|| format!("cannot write {}", target.display()))?;
            reporter.suspend(|| println!("{}", target.display()));
        }
        anyhow::Ok(())
    })
    .and_then(|r| r);
    reporter.finish(result.is_ok());
    result
}

/// Downloads one layer to `path`, verified (digest by the client, size here).
async fn download(
    client: &RegistryClient,
    image: &ImageRef,
    layer: &Descriptor,
    path: &Path,
    reporter: &Reporter,
) -> Result<()> {
    let blob = client
        .get_blob(&image.repository, &layer.digest, Some(layer.size), 0)
        .await
        .with_context(|| format!("{}: cannot read blob {}", image.familiar(), layer.digest))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .with_context(|| format!("cannot create {}", path.display()))?;
    let (digest, size) = (layer.digest.clone(), layer.size);
    reporter.event(Event::Started {
        digest: digest.clone(),
        size,
    });
    let done = AtomicU64::new(0);
    let transfer = async {
        let mut stream = blob.stream;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            done.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            file.write_all(&chunk).await?;
        }
        anyhow::Ok(())
    };
    track(reporter, &digest, size, &done, transfer).await?;
    let got = done.load(Ordering::Relaxed);
    if got != size {
        bail!(
            "blob {} has {got} bytes, the manifest says {size}",
            layer.digest
        );
    }
    file.sync_all().await?;
    reporter.event(Event::Copied { digest, size });
    Ok(())
}

/// One node of the referrers tree.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    reference: String,
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    annotations: Option<Map<String, Value>>,
    referrers: Vec<Node>,
}

fn discover(args: DiscoverArgs) -> Result<()> {
    if args.format != "tree" && args.format != "json" {
        bail!("unknown --format {:?}: tree or json", args.format);
    }
    let image = parse_ref(&args.subject)?;
    let client = client_for(&image.registry, &args.remote)?;
    let root = block_on(async {
        let desc = manifest_descriptor(&client, &image).await?;
        let mut visited = HashSet::from([desc.digest.clone()]);
        let referrers = walk(
            &client,
            &image,
            &desc.digest,
            args.artifact_type.as_deref(),
            &mut visited,
            0,
        )
        .await?;
        anyhow::Ok(Node {
            reference: format!("{}@{}", image.name(), desc.digest),
            media_type: desc.media_type,
            digest: desc.digest,
            size: desc.size,
            artifact_type: None,
            annotations: None,
            referrers,
        })
    })??;
    if args.format == "json" {
        println!("{}", serde_json::to_string_pretty(&root)?);
    } else {
        let mut out = String::new();
        out.push_str(&root.reference);
        out.push('\n');
        tree(&root.referrers, "", &mut out);
        print!("{out}");
    }
    Ok(())
}

/// The referrers of `subject`, and theirs, depth first.
fn walk<'a>(
    client: &'a RegistryClient,
    image: &'a ImageRef,
    subject: &'a Digest,
    artifact_type: Option<&'a str>,
    visited: &'a mut HashSet<Digest>,
    depth: usize,
) -> futures_util::future::BoxFuture<'a, Result<Vec<Node>>> {
    Box::pin(async move {
        if depth >= MAX_DEPTH {
            return Ok(Vec::new());
        }
        let list = client
            .referrers(&image.repository, subject, artifact_type)
            .await
            .with_context(|| format!("cannot list the referrers of {subject}"))?;
        let mut out = Vec::new();
        for d in list {
            if !visited.insert(d.digest.clone()) {
                continue;
            }
            let referrers =
                walk(client, image, &d.digest, artifact_type, visited, depth + 1).await?;
            out.push(Node {
                reference: format!("{}@{}", image.name(), d.digest),
                media_type: d.media_type,
                digest: d.digest,
                size: d.size,
                artifact_type: d.artifact_type,
                annotations: d.annotations,
                referrers,
            });
        }
        Ok(out)
    })
}

/// `oras discover`'s tree: referrers grouped by artifact type, then digests.
fn tree(nodes: &[Node], prefix: &str, out: &mut String) {
    let mut groups: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for n in nodes {
        groups
            .entry(n.artifact_type.as_deref().unwrap_or("<unknown>"))
            .or_default()
            .push(n);
    }
    let count = groups.len();
    for (i, (kind, members)) in groups.into_iter().enumerate() {
        let last = i + 1 == count;
        out.push_str(&format!(
            "{prefix}{}{kind}\n",
            if last { "└── " } else { "├── " }
        ));
        let inner = format!("{prefix}{}", if last { "    " } else { "│   " });
        for (j, n) in members.iter().enumerate() {
            let last_member = j + 1 == members.len();
            out.push_str(&format!(
                "{inner}{}{}\n",
                if last_member {
                    "└── "
                } else {
                    "├── "
                },
                n.digest
            ));
            let deeper = format!("{inner}{}", if last_member { "    " } else { "│   " });
            tree(&n.referrers, &deeper, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_specs() {
        assert_eq!(split_file("a.txt"), (PathBuf::from("a.txt"), None));
        assert_eq!(
            split_file("a.txt:text/plain"),
            (PathBuf::from("a.txt"), Some("text/plain".into()))
        );
        assert_eq!(split_file("a:b"), (PathBuf::from("a:b"), None));
    }

    #[test]
    fn titles() {
        assert!(safe_title("a.txt").is_ok());
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b"] {
            assert!(safe_title(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_config_inline() {
        let c = empty_config();
        assert_eq!(
            c.desc.digest.to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let v = serde_json::to_value(config_json(&c.desc)).unwrap();
        assert_eq!(v["data"], "e30=");
        assert_eq!(v["size"], 2);
    }
}
