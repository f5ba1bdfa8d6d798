//! `berth copy`, `pull` and `push`: thin wrappers over berth-copy.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use berth_copy::{Event, Location, Options, Platform};
use clap::Args;

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
    /// Print only the final digest
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Source: REF, docker://REF, oci:PATH[:TAG], local:REPO[:TAG], oci-archive:PATH[:TAG] or docker-archive:PATH[:NAME:TAG]
    src: String,
    /// Destination, same forms
    dst: String,
    #[command(flatten)]
    flags: TransferFlags,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// The registry image to store locally, e.g. localhost:5000/app:1
    reference: String,
    #[command(flatten)]
    flags: TransferFlags,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// The registry image to push the local image of the same repository and tag to
    reference: String,
    #[command(flatten)]
    flags: TransferFlags,
}

fn short(d: &berth_oci::Digest) -> String {
    let s = d.to_string();
    let end = (d.algorithm().as_str().len() + 1 + 12).min(s.len());
    format!("{}…", &s[..end])
}

fn run(src: Location, dst: Location, root: Option<PathBuf>, flags: TransferFlags) -> Result<()> {
    let platform = Platform::parse(&flags.platform).map_err(|e| anyhow!(e))?;
    let opts = Options {
        all: flags.all,
        platform,
        jobs: flags.jobs.into(),
        insecure: flags.insecure,
        root: root.unwrap_or_else(berth_store::default_root),
    };
    let quiet = flags.quiet;
    let progress = move |e: Event| {
        if quiet {
            return;
        }
        match e {
            Event::Copied { digest, size } => {
                println!("copying blob {} ({size} bytes)", short(&digest))
            }
            Event::Skipped { digest, size } => {
                println!(
                    "skipped blob {} ({size} bytes, already there)",
                    short(&digest)
                )
            }
            Event::Mounted { digest, size } => {
                println!("mounted blob {} ({size} bytes)", short(&digest))
            }
            Event::Manifest { digest } => println!("copied manifest {digest}"),
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let digest = rt
        .block_on(berth_copy::copy(&src, &dst, &opts, &progress))
        .with_context(|| format!("copying {src} to {dst} failed"))?;
    println!("{digest}");
    Ok(())
}

fn registry(s: &str) -> Result<berth_oci::ImageRef> {
    berth_oci::ImageRef::parse(s.strip_prefix("docker://").unwrap_or(s))
        .with_context(|| format!("{s:?} is not an image reference (e.g. localhost:5000/app:1)"))
}

fn local_of(r: &berth_oci::ImageRef) -> Location {
    Location::Local {
        repo: r.repository.clone(),
        reference: Some(r.reference()),
    }
}

pub fn copy(root: Option<PathBuf>, args: CopyArgs) -> Result<()> {
    let src = Location::parse(&args.src)?;
    let dst = Location::parse(&args.dst)?;
    run(src, dst, root, args.flags)
}

/// Registry -> local store, under the same repository path and tag.
pub fn pull(root: Option<PathBuf>, args: PullArgs) -> Result<()> {
    let r = registry(&args.reference)?;
    let dst = local_of(&r);
    run(Location::Registry(r), dst, root, args.flags)
}

/// Local store -> registry, from the same repository path and tag.
pub fn push(root: Option<PathBuf>, args: PushArgs) -> Result<()> {
    let r = registry(&args.reference)?;
    let src = local_of(&r);
    run(src, Location::Registry(r), root, args.flags)
}
