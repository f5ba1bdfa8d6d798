//! The read-only registry commands: `inspect`, `digest`, `list-tags`,
//! `catalog`, `platforms` (skopeo/crane/mquery-like output).
//!
//! Credentials come from the Docker config, read before the async runtime
//! starts (helpers are blocking processes).

use std::future::Future;
use std::io::Write;

use anyhow::{bail, Context, Result};
use berth_client::{ClientConfig, Error as ClientError, Manifest, RegistryClient};
use berth_oci::manifest::{Descriptor, ManifestKind, ParsedManifest};
use berth_oci::{Digest, ImageRef};
use clap::Args;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};

/// How to reach a registry (skopeo/docker flag names).
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteOpts {
    /// Talk plain HTTP to the registry (loopback registries always are)
    #[arg(long)]
    pub insecure: bool,
    /// `--tls-verify=false` is the same as --insecure (skopeo's spelling)
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_verify: Option<bool>,
}

impl RemoteOpts {
    pub fn is_insecure(&self) -> bool {
        self.insecure || self.tls_verify == Some(false)
    }
}

/// Registry host as given on the command line: scheme and path dropped,
/// every spelling of Docker Hub is `docker.io`.
pub fn normalize_registry(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// A client for `registry` with its stored credential. Blocking (it may run
/// a credential helper): call it before entering the runtime.
pub fn client_for(registry: &str, opts: &RemoteOpts) -> Result<RegistryClient> {
    let mut config = ClientConfig::from_docker_config(registry)
        .with_context(|| format!("cannot read the credentials for {registry}"))?;
    config.insecure = opts.is_insecure();
    Ok(RegistryClient::new(registry, config)?)
}

/// Runs `fut` on a small runtime.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(rt.block_on(fut))
}

pub fn parse_ref(s: &str) -> Result<ImageRef> {
    Ok(ImageRef::parse(s)?)
}

/// Turns "not found" into what the user needs to read.
fn manifest_error(image: &ImageRef, e: ClientError) -> anyhow::Error {
    if e.is_not_found() {
        crate::exit::not_found(format!(
            "manifest unknown: {} does not exist",
            image.familiar()
        ))
    } else {
        e.into()
    }
}

async fn get_manifest(
    client: &RegistryClient,
    image: &ImageRef,
    reference: &str,
) -> Result<Manifest> {
    client
        .get_manifest(&image.repository, reference, &[])
        .await
        .map_err(|e| manifest_error(image, e))
}

fn parse_manifest(image: &ImageRef, m: &Manifest) -> Result<ParsedManifest> {
    ParsedManifest::parse(&m.bytes, Some(&m.media_type)).with_context(|| {
        format!(
            "{}: cannot read the manifest {}",
            image.familiar(),
            m.digest
        )
    })
}

/// `os/arch[/variant]` wanted from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => bail!("platform {s:?} is not os/arch[/variant] (e.g. linux/amd64, linux/arm/v7)"),
        }
    }

    /// The platform this binary runs on, in Go's names.
    pub fn current() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    fn of(desc: &Descriptor) -> Option<Platform> {
        let p = desc.platform.as_ref()?;
        let field = |k: &str| p.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
        Some(Platform {
            os: field("os")?.to_string(),
            architecture: field("architecture")?.to_string(),
            variant: field("variant").map(str::to_string),
        })
    }

    fn from_config(config: &Value) -> Platform {
        let field = |k: &str| config.get(k).and_then(Value::as_str).unwrap_or_default();
        Platform {
            os: field("os").to_string(),
            architecture: field("architecture").to_string(),
            variant: Some(field("variant"))
                .filter(|v| !v.is_empty())
                .map(str::to_string),
        }
    }

    /// Does an index entry for `self` satisfy a request for `want`?
    /// Without a requested variant any variant matches; `arm64` without
    /// variant is `arm64/v8`.
    fn satisfies(&self, want: &Platform) -> bool {
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            _ => p.variant.clone(),
        };
        self.os == want.os
            && self.architecture == want.architecture
            && (want.variant.is_none() || norm(self) == norm(want))
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

/// Attestation manifests (BuildKit) are index entries, not platforms.
fn is_attestation(desc: &Descriptor) -> bool {
    desc.annotations
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .and_then(Value::as_str)
        == Some("attestation-manifest")
}

/// The image manifest for `want` out of an index. With a requested
/// variant the first exact match wins; otherwise the first entry of the
/// os/arch (like containers/image).
fn choose(image: &ImageRef, index: &ParsedManifest, want: &Platform) -> Result<Descriptor> {
    let candidates: Vec<(&Descriptor, Platform)> = index
        .manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .filter_map(|d| Platform::of(d).map(|p| (d, p)))
        .collect();
    if let Some((d, _)) = candidates.iter().find(|(_, p)| p.satisfies(want)) {
        return Ok((*d).clone());
    }
    let have: Vec<String> = candidates.iter().map(|(_, p)| p.to_string()).collect();
    bail!(
        "{} has no image for {want} (it has: {}); choose one with --platform",
        image.familiar(),
        if have.is_empty() {
            "no platforms".to_string()
        } else {
            have.join(", ")
        }
    )
}

/// Fetches the image (not index) manifest for `image`, descending into an
/// index for `platform`. Returns the top-level manifest too.
async fn resolve_image(
    client: &RegistryClient,
    image: &ImageRef,
    platform: &Platform,
) -> Result<(Manifest, Manifest, ParsedManifest)> {
    let top = get_manifest(client, image, &image.reference()).await?;
    let parsed = parse_manifest(image, &top)?;
    if parsed.kind == ManifestKind::Image {
        return Ok((top.clone(), top, parsed));
    }
    let desc = choose(image, &parsed, platform)?;
    let child = get_manifest(client, image, &desc.digest.to_string()).await?;
    let child_parsed = parse_manifest(image, &child)?;
    if child_parsed.kind != ManifestKind::Image {
        bail!(
            "{}: the entry for {platform} ({}) is itself an index; nested indexes are not supported",
            image.familiar(),
            desc.digest
        );
    }
    Ok((top, child, child_parsed))
}

async fn get_blob(
    client: &RegistryClient,
    image: &ImageRef,
    digest: &Digest,
    size: u64,
) -> Result<Vec<u8>> {
    let blob = client
        .get_blob(&image.repository, digest, Some(size), 0)
        .await
        .with_context(|| format!("{}: cannot read blob {digest}", image.familiar()))?;
    let mut out = Vec::new();
    let mut stream = blob.stream;
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn get_config(
    client: &RegistryClient,
    image: &ImageRef,
    manifest: &ParsedManifest,
) -> Result<(Vec<u8>, Value)> {
    let Some(desc) = &manifest.config else {
        bail!("{}: the manifest has no config", image.familiar());
    };
    let bytes = get_blob(client, image, &desc.digest, desc.size).await?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((bytes, value))
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

fn check_format(format: &Option<String>) -> Result<()> {
    match format.as_deref() {
        None | Some("json") => Ok(()),
        Some(f) => bail!("unknown --format {f:?}: only json is supported"),
    }
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image reference (registry/repository[:tag|@digest])
    #[arg(value_name = "REF")]
    image: String,
    /// Print the manifest exactly as the registry serves it
    #[arg(long)]
    raw: bool,
    /// Print the image's config blob
    #[arg(long)]
    config: bool,
    /// Platform to pick from an index: os/arch[/variant] [default: this machine's]
    #[arg(long)]
    platform: Option<String>,
    /// Do not list the repository's tags (RepoTags stays empty)
    #[arg(long, short = 'n')]
    no_tags: bool,
    /// Output format (json)
    #[arg(long, short = 'f')]
    format: Option<String>,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LayerData {
    #[serde(rename = "MIMEType")]
    mime_type: String,
    digest: Digest,
    size: u64,
    annotations: Option<Map<String, Value>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Summary {
    name: String,
    digest: Digest,
    repo_tags: Vec<String>,
    created: Option<String>,
    docker_version: String,
    labels: Option<Value>,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: String,
    layers: Vec<Digest>,
    layers_data: Vec<LayerData>,
    env: Option<Value>,
    media_type: String,
}

impl InspectArgs {
    /// The argument: an image reference, or (`berth inspect NAME`) a
    /// container.
    pub fn target(&self) -> &str {
        &self.image
    }
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    check_format(&args.format)?;
    let image = parse_ref(&args.image)?;
    let platform = match &args.platform {
        Some(p) => Some(Platform::parse(p)?),
        None => None,
    };
    let client = client_for(&image.registry, &args.remote)?;
    block_on(async {
        if args.raw && !args.config && platform.is_none() {
            let m = get_manifest(&client, &image, &image.reference()).await?;
            return write_stdout(&m.bytes);
        }
        let want = platform.clone().unwrap_or_else(Platform::current);
        let (top, manifest, parsed) = resolve_image(&client, &image, &want).await?;
        if args.config {
            let (bytes, _) = get_config(&client, &image, &parsed).await?;
            return write_stdout(&bytes);
        }
        if args.raw {
            return write_stdout(&manifest.bytes);
        }
        let (_, config) = get_config(&client, &image, &parsed).await?;
        let repo_tags = if args.no_tags {
            Vec::new()
        } else {
            client
                .list_tags(&image.repository, None)
                .await
                .with_context(|| {
                    format!(
                        "cannot list the tags of {} (skip with --no-tags)",
                        image.name()
                    )
                })?
        };
        let p = Platform::from_config(&config);
        let inner = config.get("config");
        let present = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
        let summary = Summary {
            name: image.name(),
            digest: top.digest.clone(),
            repo_tags,
            created: config
                .get("created")
                .and_then(Value::as_str)
                .map(str::to_string),
            docker_version: config
                .get("docker_version")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            labels: present(inner.and_then(|c| c.get("Labels"))),
            architecture: p.architecture,
            variant: p.variant,
            os: p.os,
            layers: parsed.layers.iter().map(|l| l.digest.clone()).collect(),
            layers_data: parsed
                .layers
                .iter()
                .map(|l| LayerData {
                    mime_type: l.media_type.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    annotations: l.annotations.clone(),
                })
                .collect(),
            env: present(inner.and_then(|c| c.get("Env"))),
            media_type: manifest.media_type.clone(),
        };
        let mut text = serde_json::to_string_pretty(&summary)?;
        text.push('\n');
        write_stdout(text.as_bytes())
    })?
}

#[derive(Args, Debug)]
pub struct DigestArgs {
    /// Image reference (registry/repository[:tag|@digest])
    #[arg(value_name = "REF")]
    image: String,
    /// Print the digest of this platform's image instead of the index's
    #[arg(long)]
    platform: Option<String>,
    #[command(flatten)]
    remote: RemoteOpts,
}

pub fn digest(args: DigestArgs) -> Result<()> {
    let image = parse_ref(&args.image)?;
    let platform = match &args.platform {
        Some(p) => Some(Platform::parse(p)?),
        None => None,
    };
    let client = client_for(&image.registry, &args.remote)?;
    block_on(async {
        let digest = match &platform {
            None => {
                client
                    .head_manifest(&image.repository, &image.reference(), &[])
                    .await
                    .map_err(|e| manifest_error(&image, e))?
                    .ok_or_else(|| {
                        crate::exit::not_found(format!(
                            "manifest unknown: {} does not exist",
                            image.familiar()
                        ))
                    })?
                    .digest
            }
            Some(want) => resolve_image(&client, &image, want).await?.1.digest,
        };
        write_stdout(format!("{digest}\n").as_bytes())
    })?
}

#[derive(Args, Debug)]
pub struct ListTagsArgs {
    /// Repository (registry/repository; a tag is ignored)
    #[arg(value_name = "REPO")]
    repository: String,
    /// Output format: json prints {"Repository": ..., "Tags": [...]}
    #[arg(long, short = 'f')]
    format: Option<String>,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagList {
    repository: String,
    tags: Vec<String>,
}

fn repository_error(image: &ImageRef, e: ClientError) -> anyhow::Error {
    if e.is_not_found() {
        crate::exit::not_found(format!(
            "repository unknown: {} does not exist",
            image.name()
        ))
    } else {
        e.into()
    }
}

pub fn list_tags(args: ListTagsArgs) -> Result<()> {
    check_format(&args.format)?;
    let image = parse_ref(&args.repository)?;
    let client = client_for(&image.registry, &args.remote)?;
    block_on(async {
        let tags = client
            .list_tags(&image.repository, None)
            .await
            .map_err(|e| repository_error(&image, e))?;
        let text = if args.format.is_some() {
            json_text(&TagList {
                repository: image.name(),
                tags,
            })?
        } else {
            lines(&tags)
        };
        write_stdout(text.as_bytes())
    })?
}

/// Pretty JSON ending in a newline, for `--format json`.
fn json_text(value: &impl serde::Serialize) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value)?;
    s.push('\n');
    Ok(s)
}

/// One item per line, for plain output.
fn lines(items: &[String]) -> String {
    items.iter().map(|i| format!("{i}\n")).collect()
}

#[derive(Args, Debug)]
pub struct CatalogArgs {
    /// Registry host[:port]
    #[arg(value_name = "REGISTRY")]
    registry: String,
    /// Output format: json prints {"Repositories": [...]}
    #[arg(long, short = 'f')]
    format: Option<String>,
    #[command(flatten)]
    remote: RemoteOpts,
}

pub fn catalog(args: CatalogArgs) -> Result<()> {
    check_format(&args.format)?;
    let registry = normalize_registry(&args.registry);
    let client = client_for(&registry, &args.remote)?;
    block_on(async {
        let repos = client.catalog(None).await?;
        let text = if args.format.is_some() {
            json_text(&serde_json::json!({ "Repositories": repos }))?
        } else {
            lines(&repos)
        };
        write_stdout(text.as_bytes())
    })?
}

#[derive(Args, Debug)]
pub struct PlatformsArgs {
    /// Image reference (registry/repository[:tag|@digest])
    #[arg(value_name = "REF")]
    image: String,
    #[command(flatten)]
    remote: RemoteOpts,
}

/// One line per platform: `os/arch[/variant] DIGEST` (an index's entries,
/// attestations left out; a single image: its config's platform).
pub fn platforms(args: PlatformsArgs) -> Result<()> {
    let image = parse_ref(&args.image)?;
    let client = client_for(&image.registry, &args.remote)?;
    block_on(async {
        let top = get_manifest(&client, &image, &image.reference()).await?;
        let parsed = parse_manifest(&image, &top)?;
        let mut text = String::new();
        match parsed.kind {
            ManifestKind::Index => {
                for d in parsed.manifests.iter().filter(|d| !is_attestation(d)) {
                    let p = Platform::of(d)
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "unknown".to_string());
                    text.push_str(&format!("{p} {}\n", d.digest));
                }
            }
            ManifestKind::Image => {
                let (_, config) = get_config(&client, &image, &parsed).await?;
                let p = Platform::from_config(&config);
                text.push_str(&format!("{p} {}\n", top.digest));
            }
        }
        write_stdout(text.as_bytes())
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(p.to_string(), "linux/arm/v7");
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux//").is_err());
        let arm64 = Platform::parse("linux/arm64").unwrap();
        let arm64v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert!(arm64.satisfies(&arm64v8) && arm64v8.satisfies(&arm64));
        let amd64 = Platform::parse("linux/amd64").unwrap();
        assert!(!arm64.satisfies(&amd64));
        assert!(Platform::parse("linux/arm/v6")
            .unwrap()
            .satisfies(&Platform::parse("linux/arm").unwrap()));
        assert!(!Platform::parse("linux/arm/v6").unwrap().satisfies(&p));
    }

    #[test]
    fn registries_normalize() {
        assert_eq!(
            normalize_registry("https://index.docker.io/v1/"),
            "docker.io"
        );
        assert_eq!(normalize_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_registry("localhost:5000"), "localhost:5000");
        assert_eq!(
            normalize_registry("http://localhost:5000/"),
            "localhost:5000"
        );
    }
}
