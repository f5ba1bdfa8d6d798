//! `berth save` and `berth load`: docker-archive tarballs (what `docker
//! save` writes and `docker load`/`podman load` read) from and into the
//! local store, through berth-copy's archive locations.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use berth_copy::{
    ArchiveKind, ArchiveLimits, ArchiveReader, ArchiveWriter, Endpoint, Location, Options, Platform,
};
use berth_oci::ImageRef;
use clap::Args;

use crate::progress::{Format, Mode, Reporter};

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Images: NAME[:TAG] from the local store, or docker://REF from a registry
    #[arg(required = true)]
    images: Vec<String>,
    /// The image to take from a multi-platform index: OS/ARCH[/VARIANT]
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Speak plain HTTP to registries (loopback addresses always do)
    #[arg(long)]
    insecure: bool,
    /// No progress on stderr (errors still go there)
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this file instead of standard input (docker-archive or oci-archive)
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// No progress on stderr and no `Loaded image:` lines on stdout
    #[arg(short, long)]
    quiet: bool,
    /// Most the archive may expand to when extracted, e.g. 100G (0 = no limit) [default: $BERTH_MAX_ARCHIVE_BYTES, else 64GiB]
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
}

fn options(root: Option<PathBuf>, platform: &str, insecure: bool) -> Result<Options> {
    Ok(Options {
        all: false,
        platform: Platform::parse(platform).map_err(crate::exit::usage)?,
        jobs: 4,
        insecure,
        root: root.unwrap_or_else(berth_store::default_root),
        archive: ArchiveLimits::from_env(),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `NAME[:TAG]` -> the local store; `docker://REF` -> the registry. Also
/// the `RepoTags` name (`name:tag`), if the reference has a tag.
fn source(s: &str) -> Result<(Location, Option<String>)> {
    let (r, registry) = match s.strip_prefix("docker://") {
        Some(r) => (r, true),
        None => (s, false),
    };
    let r = ImageRef::parse(r)
        .map_err(|e| crate::exit::usage(format!("{s:?} is not an image reference: {e}")))?;
    let name = match (&r.tag, &r.digest) {
        (_, Some(_)) => None,
        (Some(_), None) => Some(r.familiar()),
        (None, None) => Some(r.with_tag("latest").familiar()),
    };
    let loc = if registry {
        Location::Registry(r)
    } else {
        Location::Local {
            repo: r.repository.clone(),
            reference: Some(r.reference()),
        }
    };
    Ok((loc, name))
}

pub fn save(root: Option<PathBuf>, args: SaveArgs) -> Result<()> {
    let opts = options(root, &args.platform, args.insecure)?;
    let scratch;
    let path = match &args.output {
        Some(p) => p.clone(),
        None => {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal; use -o FILE or redirect");
            }
            let dir = tempfile::tempdir().context("creating a temporary directory")?;
            let registered = berth_copy::staging::Registered::new(dir.path());
            scratch = (dir, registered);
            scratch.0.path().join("image.tar")
        }
    };
    let sources = args
        .images
        .iter()
        .map(|s| source(s))
        .collect::<Result<Vec<_>>>()?;
    let rt = runtime()?;
    // Progress on stderr: stdout may be the archive itself.
    let reporter = Reporter::new(Mode::pick(args.quiet, Format::Text));
    let result = rt.block_on(async {
        let writer = ArchiveWriter::create(&path, ArchiveKind::Docker)?;
        for (loc, name) in &sources {
            let src = berth_copy::open(loc, &opts, false)?;
            let reference = match loc {
                Location::Registry(r) => r.reference(),
                Location::Local { reference, .. } => reference.clone().unwrap_or_default(),
                _ => unreachable!(),
            };
            berth_copy::copy_endpoints(
                src.as_ref(),
                loc,
                &reference,
                &writer,
                name.as_deref(),
                &opts,
                &|e| reporter.event(e),
            )
            .await
            .with_context(|| format!("saving {loc}"))?;
        }
        writer.finish().await?;
        anyhow::Ok(())
    });
    reporter.finish(result.is_ok());
    result?;
    if args.output.is_none() {
        let mut f = std::fs::File::open(&path)?;
        std::io::copy(&mut f, &mut std::io::stdout().lock()).context("writing the archive")?;
    }
    Ok(())
}

pub fn load(root: Option<PathBuf>, args: LoadArgs) -> Result<()> {
    let mut opts = options(root, "linux/amd64", false)?;
    if let Some(m) = &args.max_size {
        opts.archive.max_bytes = berth_client::settings::parse_size(m)
            .map_err(|e| crate::exit::usage(format!("--max-size: {e}")))?;
    }
    // Extracted as it is read (from standard input too), into a private
    // staging directory of the root: nothing goes to $TMPDIR.
    let stdin_name = PathBuf::from("standard input");
    let (path, reader): (&Path, _) = match &args.input {
        Some(p) => (p, ArchiveReader::open_any(p, &opts.root, &opts.archive)),
        None => {
            if std::io::stdin().is_terminal() {
                bail!("no archive on standard input; use -i FILE or redirect");
            }
            let input = Box::new(std::io::stdin());
            let r = ArchiveReader::read_any(input, &stdin_name, &opts.root, &opts.archive);
            (&stdin_name, r)
        }
    };
    let what = || format!("loading {}", path.display());
    let reader = reader.with_context(what)?;
    let images = reader.images().with_context(what)?;
    let rt = runtime()?;
    let reporter = Reporter::new(Mode::pick(args.quiet, Format::Text));
    let mut loaded = 0;
    for image in images {
        let Some(name) = image.name else {
            eprintln!(
                "berth: warning: image {} in the archive has no name; skipped (use berth copy ...archive:PATH local:REPO:TAG)",
                image.reference
            );
            continue;
        };
        // The archive's fault, not the command line's: a plain error (exit 1).
        let r = ImageRef::parse(&name)
            .map_err(|e| anyhow!("image name {name:?} in the archive is not a reference: {e}"))?;
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        let dst = Location::Local {
            repo: r.repository.clone(),
            reference: Some(tag.clone()),
        };
        let src = Location::OciArchive {
            path: path.to_path_buf(),
            tag: None,
        };
        let result = rt.block_on(async {
            let store = berth_copy::open(&dst, &opts, true)?;
            berth_copy::copy_endpoints(
                &reader,
                &src,
                &image.reference,
                store.as_ref(),
                Some(&tag),
                &opts,
                &|e| reporter.event(e),
            )
            .await?;
            anyhow::Ok(())
        });
        if result.is_err() {
            reporter.finish(false);
        }
        result.with_context(|| format!("loading {name} from {}", path.display()))?;
        loaded += 1;
        if !args.quiet {
            reporter.suspend(|| println!("Loaded image: {}", r.with_tag(&tag).familiar()));
        }
    }
    if loaded == 0 {
        reporter.finish(false);
        bail!("{} holds no named image to load", path.display());
    }
    reporter.finish(true);
    Ok(())
}
