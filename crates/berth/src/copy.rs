//! `berth copy`, `pull` and `push`: thin wrappers over berth-copy.
//!
//! stdout gets the result: the digest of the manifest copied (also with
//! `--quiet`, like `docker pull -q` prints what it pulled, as the one
//! thing a script needs), or with `--format json` one object describing
//! the transfer. Progress goes to stderr (see `progress.rs`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use berth_copy::{Event, Location, Options, Platform};
use clap::Args;

use crate::progress::{Format, Mode, Report, Reporter};

#[derive(Args, Debug)]
pub struct TransferFlags {
    /// Copy every image of a multi-platform index (else only --platform's)
    #[arg(long)]
    all: bool,
    /// Blobs transferred at once
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// The image to take from a multi-platform index: OS/ARCH[/VARIANT]
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    /// Speak plain HTTP to the registries (loopback addresses always do)
    #[arg(long)]
    insecure: bool,
    /// No progress on stderr; stdout gets only the digest (errors still go to stderr)
    #[arg(long, short)]
    quiet: bool,
    /// Result on stdout: text (the digest) or json (one object, no progress)
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

#[derive(Args, Debug)]
#[command(after_help = crate::exit::HELP)]
pub struct CopyArgs {
    /// Source: REF, docker://REF, oci:PATH[:TAG], local:REPO[:TAG], oci-archive:PATH[:TAG] or docker-archive:PATH[:NAME:TAG]
    src: String,
    /// Destination, same forms
    dst: String,
    #[command(flatten)]
    flags: TransferFlags,
}

#[derive(Args, Debug)]
#[command(after_help = crate::exit::HELP)]
pub struct PullArgs {
    /// The registry image to store locally, e.g. localhost:5000/app:1
    reference: String,
    #[command(flatten)]
    flags: TransferFlags,
}

#[derive(Args, Debug)]
#[command(after_help = crate::exit::HELP)]
pub struct PushArgs {
    /// The registry image to push the local image of the same repository and tag to
    reference: String,
    #[command(flatten)]
    flags: TransferFlags,
}

/// Runs the transfer and prints its result; `locations` is the parsed
/// command line, so that with `--format json` a malformed argument is
/// reported as JSON too.
fn run(
    locations: Result<(Location, Location)>,
    root: Option<PathBuf>,
    flags: TransferFlags,
) -> Result<()> {
    let format = flags.format;
    let result = locations.and_then(|(src, dst)| transfer(&src, &dst, root, &flags));
    match (result, format) {
        (Ok(report), Format::Json) => {
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        (Ok(report), Format::Text) => {
            println!("{}", report.digest);
            Ok(())
        }
        (Err(e), Format::Json) => {
            // Scripts read stdout; the human-readable error still goes to
            // stderr (from main) and the exit code is the same.
            println!("{}", crate::exit::json_error(&e));
            Err(e)
        }
        (Err(e), Format::Text) => Err(e),
    }
}

fn transfer(
    src: &Location,
    dst: &Location,
    root: Option<PathBuf>,
    flags: &TransferFlags,
) -> Result<Report> {
    let platform = Platform::parse(&flags.platform).map_err(crate::exit::usage)?;
    let opts = Options {
        all: flags.all,
        platform,
        jobs: flags.jobs.into(),
        insecure: flags.insecure,
        root: root.unwrap_or_else(berth_store::default_root),
        archive: berth_copy::ArchiveLimits::from_env(),
    };
    let reporter = Reporter::new(Mode::pick(flags.quiet, flags.format));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt
        .block_on(berth_copy::copy(src, dst, &opts, &|e: Event| {
            reporter.event(e)
        }))
        .with_context(|| format!("copying {src} to {dst} failed"));
    reporter.finish(result.is_ok());
    let digest = result?;
    let manifests = reporter.manifests();
    // The top manifest is written last; look it up by digest all the same.
    let media_type = manifests
        .iter()
        .rev()
        .find(|m| m.digest == digest)
        .map(|m| m.media_type.clone())
        .unwrap_or_default();
    Ok(Report {
        source: src.to_string(),
        destination: dst.to_string(),
        digest,
        media_type,
        blobs: reporter.totals(),
        manifests,
        duration_ms: reporter.elapsed().as_millis() as u64,
    })
}

fn registry(s: &str) -> Result<berth_oci::ImageRef> {
    berth_oci::ImageRef::parse(s.strip_prefix("docker://").unwrap_or(s)).map_err(|e| {
        crate::exit::usage(format!(
            "{s:?} is not an image reference (e.g. localhost:5000/app:1): {e}"
        ))
    })
}

fn local_of(r: &berth_oci::ImageRef) -> Location {
    Location::Local {
        repo: r.repository.clone(),
        reference: Some(r.reference()),
    }
}

pub fn copy(root: Option<PathBuf>, args: CopyArgs) -> Result<()> {
    let parse = || Ok((Location::parse(&args.src)?, Location::parse(&args.dst)?));
    run(parse(), root, args.flags)
}

/// Registry -> local store, under the same repository path and tag.
pub fn pull(root: Option<PathBuf>, args: PullArgs) -> Result<()> {
    let locations = registry(&args.reference).map(|r| (local_of(&r), r));
    let locations = locations.map(|(dst, r)| (Location::Registry(r), dst));
    run(locations, root, args.flags)
}

/// Local store -> registry, from the same repository path and tag.
pub fn push(root: Option<PathBuf>, args: PushArgs) -> Result<()> {
    let locations = registry(&args.reference).map(|r| (local_of(&r), Location::Registry(r)));
    run(locations, root, args.flags)
}
