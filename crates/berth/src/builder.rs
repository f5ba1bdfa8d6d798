//! `berth builder ...`: the build cache (docker builder / buildx prune).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

#[derive(Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove build cache: dangling snapshots, records and files; with --all everything (the next build starts cold)
    Prune(PruneArgs),
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all build cache, not just dangling cache (cache mounts too)
    #[arg(short, long)]
    all: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
}

pub fn builder(root: Option<PathBuf>, cmd: BuilderCommand) -> Result<()> {
    match cmd {
        BuilderCommand::Prune(args) => prune(root, args),
    }
}

fn prune(root: Option<PathBuf>, args: PruneArgs) -> Result<()> {
    let root = root.unwrap_or_else(berth_store::default_root);
    if !args.force && std::io::stdin().is_terminal() {
        eprint!(
            "WARNING! This will remove {} build cache in {}.\nAre you sure you want to continue? [y/N] ",
            if args.all { "all" } else { "all dangling" },
            root.display()
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    // Rootless snapshots belong to the user's subordinate ids: only root
    // of the build's user namespace may remove them.
    berth_sandbox::enter_build_namespace()
        .map_err(|e| anyhow::anyhow!("setting up the build namespace: {e}"))?;
    let blobs = berth_store::BlobStore::open(&root)
        .with_context(|| format!("opening the content store in {}", root.display()))?;
    let report =
        berth_build::prune::prune(&root, args.all, |d| blobs.size(d).ok().flatten().is_some())?
            .ok_or_else(|| {
                crate::exit::locked(format!(
                    "a build is using the build cache of {}: prune again when it has finished",
                    root.display()
                ))
            })?;
    println!(
        "Deleted build cache: {} snapshots, {} cache records, {} cached files, {} cache mounts",
        report.snapshots, report.records, report.files, report.cache_mounts
    );
    println!(
        "Total reclaimed space: {}",
        crate::progress::human_bytes(report.bytes)
    );
    Ok(())
}
