//! `berth dive IMAGE`: dive's analysis of an image from any location
//! (registry read directly, local store, docker-archive:, oci:,
//! oci-archive:): `--json FILE` (dive's schema + a `berth` object), CI
//! mode (`--ci` or `CI=true`: dive's rules, report and exit code 1), and
//! otherwise a summary. The analysis itself is `berth_dive`'s.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_copy::{Endpoint, Location, Options, Platform};
use berth_dive::ci::{self, Rules};
use berth_dive::{Analysis, Analyzer};
use berth_oci::ManifestKind;
use clap::Args;

#[derive(Args)]
pub struct DiveArgs {
    /// The image: REF (local store if it has it, else the registry),
    /// docker://REF, local:REPO[:TAG], docker-archive:PATH, oci:PATH[:TAG], oci-archive:PATH[:TAG]
    image: String,
    /// Write dive's JSON analysis (plus a `berth` object) to FILE instead of the UI
    #[arg(long, short = 'j', value_name = "FILE")]
    json: Option<PathBuf>,
    /// Leave the `berth` object out of --json (exactly dive's schema)
    #[arg(long)]
    dive_only: bool,
    /// Check the image against CI rules instead of the UI (also with CI=true)
    #[arg(long)]
    ci: bool,
    /// The CI rules file (YAML `rules:` as dive's)
    #[arg(long, value_name = "FILE", default_value = ci::DEFAULT_CONFIG_FILE)]
    ci_config: PathBuf,
    /// Lowest allowed efficiency (0-1, or `disabled`) [default: 0.9]
    #[arg(
        long = "lowestEfficiency",
        visible_alias = "lowest-efficiency",
        value_name = "RATIO"
    )]
    lowest_efficiency: Option<String>,
    /// Most wasted bytes allowed (`20MB`, `1GiB`, or `disabled`) [default: disabled]
    #[arg(
        long = "highestWastedBytes",
        visible_alias = "highest-wasted-bytes",
        value_name = "SIZE"
    )]
    highest_wasted_bytes: Option<String>,
    /// Most wasted bytes allowed, as a ratio of the bytes above the first layer (0-1, or `disabled`) [default: 0.1]
    #[arg(
        long = "highestUserWastedPercent",
        visible_alias = "highest-user-wasted-percent",
        value_name = "RATIO"
    )]
    highest_user_wasted_percent: Option<String>,
    /// Paths the analysis must not count (Go filepath.Match on the path or a parent; repeatable)
    #[arg(long, value_name = "GLOB")]
    ignore: Vec<String>,
    /// CI verdict format: text (dive's report) or json
    #[arg(long, default_value = "text")]
    format: String,
    /// The image of an index to analyse [default: linux/amd64]
    #[arg(long)]
    platform: Option<String>,
    /// Plain HTTP for the registry
    #[arg(long)]
    insecure: bool,
    /// Extract PATH (a file or a directory) as a layer holds it, instead of the UI
    #[arg(long, value_name = "PATH")]
    extract: Option<String>,
    /// The layer --extract reads (index as in the layers pane) [default: the last]
    #[arg(long, value_name = "N", requires = "extract")]
    layer: Option<usize>,
    /// Where --extract writes (the path is recreated under it)
    #[arg(long, value_name = "DIR", default_value = ".", requires = "extract")]
    to: PathBuf,
}

/// Go's `strconv.ParseBool`, as dive reads `CI`.
fn env_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("1" | "t" | "T" | "TRUE" | "true" | "True")
    )
}

pub fn dive(root: Option<PathBuf>, args: DiveArgs) -> Result<()> {
    if !matches!(args.format.as_str(), "text" | "json") {
        bail!("--format must be text or json, not {:?}", args.format);
    }
    let ci_mode = args.json.is_none() && (args.ci || env_ci());
    let json_verdict = args.format == "json";
    let color = std::env::var_os("NO_COLOR").is_none();
    // The rules are read (and a bad file refused) before the image.
    let mut rules = Rules::default();
    let mut preamble = String::new();
    if ci_mode {
        if args.ci_config.exists() {
            preamble.push_str(&format!(
                "  Using CI config: {}\n",
                args.ci_config.display()
            ));
            let text = std::fs::read_to_string(&args.ci_config)
                .with_context(|| format!("reading {}", args.ci_config.display()))?;
            rules
                .apply_config(&text)
                .map_err(|e| anyhow!("{}: {e}", args.ci_config.display()))?;
        } else {
            preamble.push_str("  Using default CI config\n");
        }
        if let Some(v) = &args.lowest_efficiency {
            rules.lowest_efficiency = v.clone();
        }
        if let Some(v) = &args.highest_wasted_bytes {
            rules.highest_wasted_bytes = v.clone();
        }
        if let Some(v) = &args.highest_user_wasted_percent {
            rules.highest_user_wasted_percent = v.clone();
        }
    }
    let title = |s: &str| {
        if color {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    };
    if ci_mode && !json_verdict {
        print!("{preamble}");
        println!("{}{}", title("Image Source: "), args.image);
        println!("{}", title("Analyzing image..."));
    }
    if let Some(path) = &args.extract {
        return extract(root, &args, path);
    }
    let patterns = args.ignore.clone();
    let ignore = move |path: &str| ignored(&patterns, path);
    let analysis = load(
        root,
        &args,
        if args.ignore.is_empty() {
            None
        } else {
            Some(&ignore)
        },
    )?;

    if let Some(file) = &args.json {
        let f =
            std::fs::File::create(file).with_context(|| format!("writing {}", file.display()))?;
        let mut w = std::io::BufWriter::new(f);
        berth_dive::export::write_json(&analysis, !args.dive_only, &mut w)
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(w.write_all(b"\n")?))
            .and_then(|()| Ok(w.flush()?))
            .with_context(|| format!("writing {}", file.display()))?;
        return Ok(());
    }
    if ci_mode {
        let verdict = ci::evaluate(&analysis, &rules);
        if json_verdict {
            println!("{}", serde_json::to_string_pretty(&verdict)?);
        } else {
            print!("{}", ci::summary_lines(&analysis));
            println!("{}", ci::report(&verdict, color));
        }
        std::io::stdout().flush().ok();
        if !verdict.pass {
            std::process::exit(1);
        }
        return Ok(());
    }
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        return crate::dive_ui::run(&analysis, args.image.clone());
    }
    // Not a terminal: the same panes as text.
    print!("{}", summary(&analysis));
    Ok(())
}

/// `--ignore`: a pattern matches the path (with or without its leading
/// `/`) or one of its parent directories.
fn ignored(patterns: &[String], path: &str) -> bool {
    let mut p = path;
    loop {
        for pat in patterns {
            if berth_context::glob_match(pat, p)
                || berth_context::glob_match(pat, p.trim_start_matches('/'))
            {
                return true;
            }
        }
        match p.rsplit_once('/') {
            Some((parent, _)) if !parent.is_empty() => p = parent,
            _ => return false,
        }
    }
}

fn copy_options(root: Option<PathBuf>, args: &DiveArgs) -> Result<Options> {
    let platform = match &args.platform {
        Some(p) => Platform::parse(p).map_err(|e| anyhow!(e))?,
        None => Platform::parse("linux/amd64").expect("valid"),
    };
    Ok(Options {
        all: false,
        platform,
        jobs: 1,
        insecure: args.insecure,
        root: root.unwrap_or_else(berth_store::default_root),
        archive: berth_copy::ArchiveLimits::from_env(),
    })
}

/// `--extract PATH [--layer N] [--to DIR]`: the entries of one layer at
/// or under PATH, unpacked under DIR with berth-layer's confined unpack
/// (nothing outside DIR is written or followed; whiteouts are left out;
/// owners kept only where allowed).
fn extract(root: Option<PathBuf>, args: &DiveArgs, path: &str) -> Result<()> {
    let opts = copy_options(root, args)?;
    let loc = Location::parse(&args.image)?;
    let want = berth_dive::gofmt::clean_path(path.trim_start_matches('/'));
    let to = args.to.clone();
    std::fs::create_dir_all(&to).with_context(|| format!("creating {}", to.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let layer_arg = args.layer;
    let n =
        rt.block_on(async move {
            let src = berth_copy::open(&loc, &opts, false)?;
            let (_, parsed) = berth_copy::resolve_location(src.as_ref(), &loc, &opts).await?;
            if parsed.layers.is_empty() {
                bail!("the image has no layers");
            }
            let i = layer_arg.unwrap_or(parsed.layers.len() - 1);
            let layer = parsed.layers.get(i).ok_or_else(|| {
                anyhow!(
                    "--layer {i}: the image has layers 0 to {}",
                    parsed.layers.len() - 1
                )
            })?;
            let data = src.read_blob(&layer.digest, layer.size).await?;
            let digest = layer.digest.to_string();
            berth_copy::endpoint::sink_blocking(data, move |reader| {
                Ok(extract_from(reader, &want, &to)
                    .map_err(|e| anyhow!("layer {i} ({digest}): {e:#}")))
            })
            .await?
        })?;
    if n == 0 {
        bail!("{path}: not in that layer (nothing extracted)");
    }
    eprintln!("extracted {n} entries of {path} to {}", args.to.display());
    Ok(())
}

fn extract_from(
    blob: &mut berth_copy::endpoint::ChannelReader,
    want: &str,
    to: &Path,
) -> Result<u64> {
    let tar_stream = berth_layer::decompress(blob)?;
    let mut archive = tar::Archive::new(tar_stream);
    let scratch = tempfile::tempfile_in(to).context("a scratch file for the extracted entries")?;
    let mut out = tar::Builder::new(scratch);
    let mut n = 0u64;
    for entry in archive.entries()? {
        let mut e = entry?;
        let name = berth_dive::gofmt::clean_path(&String::from_utf8_lossy(&e.path_bytes()));
        let name = name.trim_start_matches('/').to_string();
        let base = name.rsplit('/').next().unwrap_or("");
        if base.starts_with(berth_dive::tree::WHITEOUT_PREFIX) {
            continue;
        }
        if !(want == "." || name == want || name.starts_with(&format!("{want}/"))) {
            continue;
        }
        let mut h = e.header().clone();
        let kind = h.entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = e
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default();
            let target = String::from_utf8_lossy(&target).into_owned();
            if kind.is_hard_link() {
                // The target must be among what is extracted.
                let t = berth_dive::gofmt::clean_path(target.trim_start_matches('/'));
                if !(want == "." || t == want || t.starts_with(&format!("{want}/"))) {
                    continue;
                }
            }
            out.append_link(&mut h, &name, &target)?;
        } else {
            out.append_data(&mut h, &name, &mut e)?;
        }
        n += 1;
    }
    let mut file = out.into_inner()?;
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut opts = berth_layer::UnpackOptions::new(berth_layer::Whiteouts::Apply);
    opts.ignore_chown_errors = true;
    berth_layer::unpack(std::io::BufReader::new(file), to, &opts).map_err(|e| anyhow!("{e}"))?;
    Ok(n)
}

/// Resolves the image, reads its config and streams its layers once into
/// the analyzer.
fn load(
    root: Option<PathBuf>,
    args: &DiveArgs,
    ignore: Option<berth_dive::Ignore>,
) -> Result<Analysis> {
    let opts = copy_options(root, args)?;
    let loc = Location::parse(&args.image)?;
    if let Location::DockerArchive { path, reference } = &loc {
        // One pass over the archive, as dive reads it: nothing staged.
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open archive {}", path.display()))?;
        let name = reference.as_ref().map(|r| r.familiar());
        return berth_dive::archive::analyze_docker_archive(file, name.as_deref(), ignore)
            .map_err(|e| anyhow!(e).context(format!("archive {}", path.display())));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        // A bare reference is the local store's image if it has one.
        if let Location::Registry(r) = &loc {
            if !args.image.starts_with("docker://") && opts.root.join("meta.redb").exists() {
                let local = Location::parse(&format!("local:{}", r.familiar()));
                if let Ok(local @ Location::Local { .. }) = local {
                    if let Ok(src) = berth_copy::open(&local, &opts, false) {
                        if let Ok(found) =
                            berth_copy::resolve_location(src.as_ref(), &local, &opts).await
                        {
                            return analyse(src.as_ref(), found, None, &[], ignore).await;
                        }
                    }
                }
            }
        }
        let src = berth_copy::open(&loc, &opts, false)?;
        let found = berth_copy::resolve_location(src.as_ref(), &loc, &opts).await?;
        analyse(src.as_ref(), found, None, &[], ignore).await
    })
}

async fn analyse(
    src: &dyn Endpoint,
    (manifest, parsed): (berth_copy::Fetched, berth_oci::ParsedManifest),
    ids: Option<Vec<String>>,
    empty: &[bool],
    ignore: Option<berth_dive::Ignore<'_>>,
) -> Result<Analysis> {
    if parsed.kind != ManifestKind::Image {
        bail!("{}: not an image manifest", manifest.digest);
    }
    let config = parsed
        .config
        .as_ref()
        .ok_or_else(|| anyhow!("{}: the manifest has no config", manifest.digest))?;
    if parsed.layers.len() > berth_copy::MAX_LAYERS {
        bail!(
            "an image with {} layers; berth dive reads at most {}",
            parsed.layers.len(),
            berth_copy::MAX_LAYERS
        );
    }
    let mut stream = src.read_blob(&config.digest, config.size).await?;
    let mut config_bytes = Vec::new();
    use futures_util::StreamExt;
    while let Some(chunk) = stream.next().await {
        config_bytes.extend_from_slice(&chunk?);
        if config_bytes.len() as u64 > config.size {
            bail!("config {}: larger than its descriptor says", config.digest);
        }
    }
    let mut analyzer =
        Analyzer::new(&config_bytes).with_context(|| format!("config {}", config.digest))?;
    for (i, layer) in parsed.layers.iter().enumerate() {
        let id = ids
            .as_ref()
            .and_then(|v| v.get(i).cloned())
            .unwrap_or_else(|| layer.digest.to_string());
        if empty.get(i).copied().unwrap_or(false) {
            analyzer
                .add_layer(id, std::io::empty())
                .with_context(|| format!("layer {i}"))?;
            continue;
        }
        let data = src.read_blob(&layer.digest, layer.size).await?;
        analyzer = berth_copy::endpoint::sink_blocking(data, move |reader| {
            let mut a = analyzer;
            match a.add_layer(id, reader) {
                Ok(()) => Ok(Ok(a)),
                Err(e) => Ok(Err(e)),
            }
        })
        .await?
        .map_err(|e| match e {
            berth_dive::Error::Layer { reason, .. } => {
                anyhow!("layer {i} ({}): {reason}", layer.digest)
            }
            e => anyhow!(e),
        })?;
    }
    Ok(analyzer.finish(ignore))
}

/// The text shown without --json or CI mode (the terminal UI is not
/// there yet): layers, image details, the files that waste most.
fn summary(a: &Analysis) -> String {
    use berth_dive::gofmt::human_bytes;
    let mut s = String::new();
    s.push_str("Layers\n");
    s.push_str(&format!(
        "{:>4}  {:>9}  {:<19}  Command\n",
        "#", "Size", "Digest"
    ));
    for l in &a.layers {
        let digest = l.digest_id.strip_prefix("sha256:").unwrap_or(&l.digest_id);
        let cmd = if l.index == 0 {
            format!("FROM {}", short(&l.id))
        } else {
            l.command.replace('\n', "↵")
        };
        s.push_str(&format!(
            "{:>4}  {:>9}  {:<19}  {}\n",
            l.index,
            human_bytes(l.size),
            short(digest),
            cmd
        ));
    }
    s.push_str("\nImage details\n");
    s.push_str(&format!(
        "  Total Image size: {}\n",
        human_bytes(a.size_bytes)
    ));
    s.push_str(&format!(
        "  Potential wasted space: {}\n",
        human_bytes(a.wasted_bytes)
    ));
    s.push_str(&format!(
        "  Image efficiency score: {:.0} %\n",
        a.efficiency * 100.0
    ));
    s.push_str(&format!(
        "  Reclaimable (all copies of a path but the last): {}\n",
        human_bytes(a.extras.reclaimable_bytes)
    ));
    s.push_str(&format!("\n{:>5}  {:>12}  Path\n", "Count", "Total Space"));
    for i in a.inefficiencies.iter().take(20) {
        s.push_str(&format!(
            "{:>5}  {:>12}  {}\n",
            i.count,
            human_bytes(i.cumulative_size as u64),
            i.path
        ));
    }
    s
}

fn short(s: &str) -> &str {
    &s[..s.len().min(15)]
}

/// `berth build --dive`: dive's CI rules (`rules_file` if it exists, else
/// dive's defaults) on an image just built, its blobs read from the
/// store; the report goes to stderr. True when every rule passes.
pub fn check_built(
    blobs: &berth_store::BlobStore,
    manifest: &berth_copy::Fetched,
    rules_file: &Path,
) -> Result<bool> {
    let parsed = berth_oci::ParsedManifest::parse(&manifest.bytes, Some(&manifest.media_type))
        .map_err(|e| anyhow!("the built manifest: {e}"))?;
    let config = parsed
        .config
        .as_ref()
        .ok_or_else(|| anyhow!("the built manifest has no config"))?;
    let mut rules = Rules::default();
    let color = std::env::var_os("NO_COLOR").is_none();
    let mut out = String::new();
    if rules_file.exists() {
        out.push_str(&format!("  Using CI config: {}\n", rules_file.display()));
        let text = std::fs::read_to_string(rules_file)
            .with_context(|| format!("reading {}", rules_file.display()))?;
        rules
            .apply_config(&text)
            .map_err(|e| anyhow!("{}: {e}", rules_file.display()))?;
    } else {
        out.push_str("  Using default CI config\n");
    }
    let config_bytes = blobs
        .read(&config.digest)
        .with_context(|| format!("reading config {}", config.digest))?;
    let mut analyzer = Analyzer::new(&config_bytes)?;
    for (i, l) in parsed.layers.iter().enumerate() {
        let f = blobs
            .open_blob(&l.digest)
            .with_context(|| format!("layer {i} ({}) is not in the store", l.digest))?;
        analyzer
            .add_layer(l.digest.to_string(), std::io::BufReader::new(f))
            .map_err(|e| anyhow!(e))?;
    }
    let analysis = analyzer.finish(None);
    let verdict = ci::evaluate(&analysis, &rules);
    out.push_str(&ci::summary_lines(&analysis));
    out.push_str(&ci::report(&verdict, color));
    eprintln!("{out}");
    Ok(verdict.pass)
}
