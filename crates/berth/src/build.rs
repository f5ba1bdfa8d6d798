//! `berth build`: docker build / buildx flags mapped onto berth-build, and
//! the outputs (local store, registry, OCI/Docker tarballs, a directory).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use berth_build::{BuildOptions, LayerCompression, MediaTypes, NetworkMode, Platform};
use berth_copy::{ArchiveKind, Endpoint, Location, Options};
use berth_oci::ImageRef;
use berth_root::LocalRoot;
use clap::Args;

use crate::build_progress::Display;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Build context: a directory, or `-` to read a Dockerfile (no context) from stdin
    context: String,
    /// Dockerfile path (default: CONTEXT/Dockerfile); `-` reads it from stdin
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Name and optionally tag the image (NAME[:TAG]); repeatable
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Build-time variable KEY=VALUE (KEY alone takes the value from the environment)
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build this stage (and what it needs) instead of the last one
    #[arg(long)]
    target: Option<String>,
    /// Label KEY=VALUE on the image; repeatable
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Do not use the build cache
    #[arg(long)]
    no_cache: bool,
    /// Always fetch base images from their registry
    #[arg(long)]
    pull: bool,
    /// Network for RUN steps: default (isolated, outbound through slirp4netns), none, host (needs --allow network.host)
    #[arg(long, default_value = "default")]
    network: String,
    /// Extra privileged entitlement, as buildx: network.host (RUN steps may share the host's network)
    #[arg(long = "allow", value_delimiter = ',')]
    allow: Vec<String>,
    /// Target platform OS/ARCH[/VARIANT] (default: this machine's)
    #[arg(long)]
    platform: Option<String>,
    /// Progress output: auto, plain, tty, quiet
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Only print the image ID (like `docker build -q`)
    #[arg(short, long)]
    quiet: bool,
    /// Output: type=image|registry|oci|docker|local|tar[,name=R][,push=true][,dest=PATH][,compression=gzip|zstd|uncompressed][,oci-mediatypes=true]
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Push the tagged image to its registry (shorthand for --output type=image,push=true)
    #[arg(long)]
    push: bool,
    /// Write the image ID (the config digest, as docker build) to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Write build result metadata (digests, names) as JSON to this file
    #[arg(long)]
    metadata_file: Option<PathBuf>,
    /// Check the built image against dive's CI rules (`berth dive --ci`); exit 1 if one fails
    #[arg(long, visible_alias = "check-efficiency")]
    dive: bool,
    /// The rules file for --dive (YAML `rules:` as dive's)
    #[arg(long, value_name = "FILE", default_value = berth_dive::ci::DEFAULT_CONFIG_FILE)]
    dive_config: PathBuf,
    /// Steps doing berth-side work (unpacking, copying, diffing, compressing) at once [default: number of CPUs]; RUN processes themselves are not throttled, as with BuildKit
    #[arg(long)]
    jobs: Option<usize>,
    /// Speak plain HTTP to registries (loopback addresses always do)
    #[arg(long)]
    insecure: bool,
    /// Secret for RUN --mount=type=secret: id=ID[,src=FILE|,env=VAR][,type=file|env]; repeatable
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// SSH agent socket or keys for RUN --mount=type=ssh: default|ID[=SOCKET|KEY[,KEY...]]; repeatable
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// External cache sources: REF (an image with inline cache, or a cache manifest), type=registry,ref=REF, type=local,src=DIR[,tag=T|digest=D]; repeatable
    #[arg(long = "cache-from")]
    cache_from: Vec<String>,
    /// Cache export destinations: type=inline, type=registry,ref=REF[,mode=min|max][,oci-mediatypes=true][,image-manifest=false], type=local,dest=DIR[,mode=min|max]; repeatable
    #[arg(long = "cache-to")]
    cache_to: Vec<String>,
}

/// One `--output`.
#[derive(Debug, Clone, Default)]
struct Output {
    kind: String,
    names: Vec<String>,
    push: bool,
    dest: Option<PathBuf>,
    compression: Option<LayerCompression>,
    oci_media_types: Option<bool>,
}

fn parse_output(s: &str) -> Result<Output> {
    let mut out = Output::default();
    for part in s.split(',') {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        match k {
            "type" => out.kind = v.to_string(),
            "name" => out.names.extend(v.split(',').map(str::to_string)),
            "push" => out.push = v == "true",
            "dest" => out.dest = Some(PathBuf::from(v)),
            "compression" => {
                out.compression = Some(match v {
                    "gzip" => LayerCompression::Gzip,
                    "zstd" => LayerCompression::Zstd,
                    "uncompressed" => LayerCompression::Uncompressed,
                    other => bail!("--output compression={other}: use gzip, zstd or uncompressed"),
                })
            }
            "oci-mediatypes" => out.oci_media_types = Some(v == "true"),
            // Accepted for buildx compatibility; berth's defaults already do these.
            "compression-level" | "force-compression" | "store" | "unpack" | "annotation" => {}
            other => bail!("--output: unknown key {other:?} in {s:?}"),
        }
    }
    if out.kind.is_empty() {
        // buildx: `-o DIR` means type=local,dest=DIR.
        if !s.contains('=') {
            return Ok(Output {
                kind: "local".into(),
                dest: Some(PathBuf::from(s)),
                ..Default::default()
            });
        }
        bail!("--output {s:?} has no type= (image, registry, oci, docker, local, tar)");
    }
    match out.kind.as_str() {
        "image" | "registry" => {}
        "oci" | "docker" | "local" | "tar" if out.dest.is_some() => {}
        "oci" | "docker" | "local" | "tar" => bail!("--output type={} needs dest=PATH", out.kind),
        other => {
            bail!("--output type={other} is not one of image, registry, oci, docker, local, tar")
        }
    }
    if out.kind == "registry" {
        out.push = true;
    }
    Ok(out)
}

fn parse_kv(items: &[String], what: &str, from_env: bool) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) => {
                map.insert(k.to_string(), v.to_string());
            }
            None if from_env => {
                // docker: `--build-arg KEY` takes KEY from the environment, or is ignored.
                if let Ok(v) = std::env::var(item) {
                    map.insert(item.clone(), v);
                }
            }
            None => bail!("{what} {item:?} is not KEY=VALUE"),
        }
    }
    Ok(map)
}

/// The local repository and tag a `-t`/`name=` value is stored under.
fn local_name(name: &str) -> Result<(ImageRef, String, Option<String>)> {
    let r =
        ImageRef::parse(name).with_context(|| format!("invalid tag {name:?}: use NAME[:TAG]"))?;
    let tag = r
        .tag
        .clone()
        .or_else(|| r.digest.is_none().then(|| "latest".to_string()));
    Ok((r.clone(), r.repository.clone(), tag))
}

pub fn build(root: PathBuf, ns: &berth_sandbox::NamespaceInfo, args: BuildArgs) -> Result<()> {
    let started = Instant::now();
    let quiet = args.quiet || args.progress == "quiet";
    if !matches!(args.progress.as_str(), "auto" | "plain" | "tty" | "quiet") {
        bail!(
            "--progress {:?} is not one of auto, plain, tty, quiet",
            args.progress
        );
    }
    let mut stdin_used = false;
    let (context, dockerfile, dockerfile_name, dockerfile_path) = if args.context == "-" {
        if args.file.is_some() {
            bail!("a Dockerfile from stdin (context `-`) cannot be combined with --file");
        }
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the Dockerfile from stdin")?;
        (None, s, "Dockerfile".to_string(), None)
    } else {
        let ctx = PathBuf::from(&args.context);
        if !ctx.is_dir() {
            bail!("build context {:?} is not a directory (pass a directory, or - for a Dockerfile on stdin)", args.context);
        }
        match args.file.as_deref() {
            Some("-") => {
                stdin_used = true;
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the Dockerfile from stdin")?;
                (Some(ctx), s, "Dockerfile".to_string(), None)
            }
            other => {
                let path = match other {
                    Some(f) => PathBuf::from(f),
                    None => ctx.join("Dockerfile"),
                };
                let text = std::fs::read_to_string(&path).with_context(|| {
                    format!(
                        "failed to read the Dockerfile {}: pass -f PATH if it lives elsewhere",
                        path.display()
                    )
                })?;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "Dockerfile".into());
                (Some(ctx), text, name, Some(path))
            }
        }
    };
    let _ = stdin_used;
    let platform = match &args.platform {
        Some(p) => Platform::parse(p).map_err(|e| anyhow!(e))?,
        None => berth_build::host_platform(),
    };
    let mut outputs: Vec<Output> = args
        .outputs
        .iter()
        .map(|s| parse_output(s))
        .collect::<Result<_>>()?;
    if outputs.is_empty() {
        outputs.push(Output {
            kind: "image".into(),
            names: args.tags.clone(),
            push: args.push,
            ..Default::default()
        });
    } else {
        for o in &mut outputs {
            // buildx names image, oci and docker outputs after `-t`.
            if matches!(o.kind.as_str(), "image" | "registry" | "oci" | "docker")
                && o.names.is_empty()
            {
                o.names = args.tags.clone();
            }
            if o.kind == "image" || o.kind == "registry" {
                o.push |= args.push;
            }
        }
    }
    if outputs.iter().any(|o| o.push && o.names.is_empty()) {
        bail!("pushing needs a name: add -t REGISTRY/REPO[:TAG] or name= to --output");
    }
    let compression = outputs
        .iter()
        .find_map(|o| o.compression)
        .unwrap_or(LayerCompression::Gzip);
    let oci = outputs
        .iter()
        .find_map(|o| o.oci_media_types)
        .unwrap_or(outputs.iter().any(|o| o.kind == "oci"));
    let media_types = if oci {
        MediaTypes::Oci
    } else {
        MediaTypes::Docker
    };
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        ),
        _ => None,
    };
    let mut build_args = parse_kv(&args.build_args, "--build-arg", true)?;
    if let Some(e) = epoch {
        build_args
            .entry("SOURCE_DATE_EPOCH".into())
            .or_insert(e.to_string());
    }
    let labels = parse_kv(&args.labels, "--label", false)?;
    let network = NetworkMode::parse(&args.network).map_err(|e| anyhow!(e))?;
    let mut allow_network_host = false;
    for entitlement in &args.allow {
        match entitlement.as_str() {
            "network.host" => allow_network_host = true,
            "security.insecure" => {
                return Err(crate::exit::usage(
                    "--allow security.insecure is not supported: berth never runs a step without its sandbox",
                ))
            }
            other => {
                return Err(crate::exit::usage(format!(
                    "--allow {other}: unknown entitlement (berth knows network.host)"
                )))
            }
        }
    }
    if network == NetworkMode::Host && !allow_network_host {
        return Err(crate::exit::usage(
            "--network host needs the network.host entitlement: add --allow network.host (RUN steps then share the host's network, loopback services included)",
        ));
    }
    let (secrets, ssh) =
        berth_build::mounts::parse_flags(&args.secrets, &args.ssh).map_err(|e| anyhow!(e))?;
    let remote_cache = remote_cache_of(&args, &build_args, &platform)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let local = Arc::new(
        LocalRoot::open(&root)
            .with_context(|| format!("opening the local root {}", root.display()))?,
    );
    let blobs = local.blobs().clone();
    let local2 = Arc::clone(&local);
    let repos: berth_build::LocalRepos = Arc::new(move |repo: &str| {
        Ok(Box::new(berth_copy::endpoint::StoreEndpoint::from_root(
            Arc::clone(&local2),
            repo,
        )) as Box<dyn Endpoint>)
    });
    let display = {
        use std::io::IsTerminal;
        match args.progress.as_str() {
            _ if quiet => Display::quiet(),
            "tty" => Display::tty(),
            "auto" if std::io::stderr().is_terminal() => Display::tty(),
            _ => Display::plain(),
        }
    };
    let opts = BuildOptions {
        root: root.clone(),
        context,
        dockerfile,
        dockerfile_name,
        dockerfile_path,
        build_args,
        target: args.target.clone(),
        labels,
        no_cache: args.no_cache,
        pull: args.pull,
        network,
        allow_network_host,
        platform: platform.clone(),
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
        source_date_epoch: epoch,
        compression,
        media_types,
        insecure: args.insecure,
        helper_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        full_id_range: ns.full_id_range,
        progress: display.progress.clone(),
        local: Arc::clone(&repos),
        blobs,
        secrets,
        ssh,
        remote_cache: remote_cache.clone(),
    };
    let result = rt.block_on(berth_build::build(opts));
    let _summary = display.finish();
    let result = result.map_err(|e| anyhow!("{e}"))?;
    let digest = result.image.digest().clone();
    let config_digest = result.image.config_digest.clone();
    let copy_opts = Options {
        all: false,
        platform: platform.clone(),
        jobs: 4,
        insecure: args.insecure,
        root: root.clone(),
        archive: berth_copy::ArchiveLimits::from_env(),
    };
    let mut names_done = Vec::new();
    rt.block_on(async {
        if let Some(rc) = &remote_cache {
            // These outputs read the store: imported layers come in first.
            if outputs
                .iter()
                .any(|o| matches!(o.kind.as_str(), "local" | "tar"))
            {
                rc.fetch_all(&result.image.blobs, &result.layers)
                    .await
                    .map_err(|e| anyhow!("{e}"))?;
            }
        }
        for o in &outputs {
            export(
                &result.image,
                remote_cache.as_deref(),
                o,
                &copy_opts,
                &repos,
                quiet,
                &mut names_done,
            )
            .await?;
        }
        anyhow::Ok(())
    })?;
    if let Some(rc) = &remote_cache {
        // Imported layers an output stored locally now answer from the
        // local index too.
        if let Ok(index) = berth_build::cache::CacheIndex::open(&root) {
            rc.record_local_hits(&index, &result.image.blobs);
        }
    }
    if let Some(f) = &args.iidfile {
        std::fs::write(f, config_digest.to_string())
            .with_context(|| format!("writing --iidfile {}", f.display()))?;
    }
    if let Some(f) = &args.metadata_file {
        let md = serde_json::json!({
            "containerimage.digest": digest.to_string(),
            "containerimage.config.digest": config_digest.to_string(),
            "containerimage.descriptor": {
                "mediaType": result.image.manifest.media_type,
                "digest": digest.to_string(),
                "size": result.image.manifest.bytes.len(),
            },
            "image.name": names_done.join(","),
        });
        std::fs::write(f, serde_json::to_vec_pretty(&md)?)
            .with_context(|| format!("writing --metadata-file {}", f.display()))?;
    }
    if quiet {
        println!("{config_digest}");
    } else {
        eprintln!(
            "#0 writing image {digest} done ({:.1}s)",
            started.elapsed().as_secs_f64()
        );
        for n in &names_done {
            eprintln!("#0 naming to {n} done");
        }
    }
    if args.dive {
        if let Some(rc) = &remote_cache {
            // Layers the cache only named come in to be read.
            rt.block_on(rc.fetch_all(&result.image.blobs, &result.layers))
                .map_err(|e| anyhow!("{e}"))?;
        }
        let pass = crate::dive::check_built(
            &result.image.blobs,
            &result.image.manifest,
            &args.dive_config,
        )?;
        if !pass {
            std::process::exit(1);
        }
    }
    Ok(())
}

/// `--cache-from` / `--cache-to` / `BUILDKIT_INLINE_CACHE=1`, if any.
fn remote_cache_of(
    args: &BuildArgs,
    build_args: &BTreeMap<String, String>,
    platform: &Platform,
) -> Result<Option<Arc<berth_build::remote_cache::RemoteCache>>> {
    use berth_build::remote_cache::{self as rc, CacheTo};
    let imports = args
        .cache_from
        .iter()
        .map(|s| rc::parse_cache_from(s).map_err(|e| anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    let mut exports = args
        .cache_to
        .iter()
        .map(|s| rc::parse_cache_to(s).map_err(|e| anyhow!(e)))
        .collect::<Result<Vec<_>>>()?;
    if rc::inline_cache_arg(build_args) && !exports.contains(&CacheTo::Inline) {
        exports.push(CacheTo::Inline);
    }
    if imports.is_empty() && exports.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(rc::RemoteCache::new(
        imports,
        exports,
        args.insecure,
        platform.clone(),
    ))))
}

async fn export(
    image: &berth_build::BuiltImage,
    cache: Option<&berth_build::remote_cache::RemoteCache>,
    o: &Output,
    copy_opts: &Options,
    repos: &berth_build::LocalRepos,
    quiet: bool,
    names_done: &mut Vec<String>,
) -> Result<()> {
    let what = Location::Local {
        repo: "build".into(),
        reference: None,
    };
    let top = image.digest().to_string();
    // Layers taken from an imported cache may not be local: they stream
    // from (or are mounted across) the cache's registry.
    let lazy = cache.map(|c| c.image_source(image));
    let source: &dyn Endpoint = match &lazy {
        Some(l) => l,
        None => image,
    };
    match o.kind.as_str() {
        "image" | "registry" => {
            for name in &o.names {
                let (r, repo, tag) = local_name(name)?;
                if o.kind == "image" {
                    let dst = repos(&repo).map_err(|e| anyhow!("{e}"))?;
                    berth_copy::copy_endpoints(
                        source,
                        &what,
                        &top,
                        dst.as_ref(),
                        tag.as_deref(),
                        copy_opts,
                        &|_| {},
                    )
                    .await
                    .with_context(|| format!("storing {name} in the local store"))?;
                }
                if o.push {
                    if !quiet {
                        eprintln!("#0 pushing {} ...", r.name());
                    }
                    let dst = berth_copy::open(&Location::Registry(r.clone()), copy_opts, true)?;
                    berth_copy::copy_endpoints(
                        source,
                        &what,
                        &top,
                        dst.as_ref(),
                        tag.as_deref(),
                        copy_opts,
                        &|_| {},
                    )
                    .await
                    .with_context(|| format!("pushing {name}"))?;
                }
                // BuildKit's `image.name`: the full name with its tag.
                names_done.push(match &tag {
                    Some(t) => r.with_tag(t).to_string(),
                    None => r.to_string(),
                });
            }
        }
        "oci" | "docker" => {
            let dest = o.dest.clone().expect("checked");
            let kind = if o.kind == "oci" {
                ArchiveKind::Oci
            } else {
                ArchiveKind::Docker
            };
            let writer = berth_copy::ArchiveWriter::create(&dest, kind)?;
            let names: Vec<Option<String>> = if o.names.is_empty() {
                vec![None]
            } else {
                o.names.iter().map(|n| Some(n.clone())).collect()
            };
            for n in names {
                // docker: the RepoTags entry (name:tag); oci: the layout's
                // ref name, which is the tag alone (as BuildKit writes it).
                let tag_name = match n.as_deref() {
                    None => None,
                    Some(n) => {
                        let (r, _, tag) = local_name(n)?;
                        let tag = tag.unwrap_or_else(|| "latest".into());
                        Some(match kind {
                            ArchiveKind::Docker => r.with_tag(&tag).to_string(),
                            _ => tag,
                        })
                    }
                };
                berth_copy::copy_endpoints(
                    source,
                    &what,
                    &top,
                    &writer,
                    tag_name.as_deref(),
                    copy_opts,
                    &|_| {},
                )
                .await
                .with_context(|| format!("writing {}", dest.display()))?;
            }
            writer.finish().await?;
        }
        "local" | "tar" => {
            let dest = o.dest.clone().expect("checked");
            let blobs = image.blobs.clone();
            let manifest: serde_json::Value = serde_json::from_slice(&image.manifest.bytes)?;
            let kind = o.kind.clone();
            tokio::task::spawn_blocking(move || {
                crate::fs_output::write_filesystem(&blobs, &manifest, &dest, &kind)
            })
            .await??;
        }
        _ => unreachable!("validated in parse_output"),
    }
    Ok(())
}
