//! `berth serve` and `berth gc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use berth_registry::{Registry, Settings, DEFAULT_MAX_MANIFEST_BYTES};
use berth_store::{Access, GcOptions, Store};
use serde::Deserialize;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// TOML file with the same settings (flags win over it)
    #[arg(long)]
    config: Option<PathBuf>,
    /// Refuse every push and delete
    #[arg(long)]
    read_only: bool,
    /// Refuse DELETE of manifests, tags and blobs
    #[arg(long)]
    no_delete: bool,
    /// Accept indexes whose child manifests are not in the repository
    #[arg(long)]
    allow_sparse_index: bool,
}

/// The config file (`--config`): every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    addr: Option<SocketAddr>,
    root: Option<PathBuf>,
    log_level: Option<String>,
    read_only: Option<bool>,
    /// Allow deletes (default true).
    delete: Option<bool>,
    allow_sparse_index: Option<bool>,
    max_manifest_bytes: Option<usize>,
}

fn load_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "config file {} is not valid (keys: addr, root, log_level, read_only, delete, allow_sparse_index, max_manifest_bytes)",
            path.display()
        )
    })
}

pub fn serve(
    root: Option<PathBuf>,
    log_level: Option<String>,
    debug: bool,
    args: ServeArgs,
) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => load_config(p)?,
        None => ConfigFile::default(),
    };
    let level = if debug {
        "debug".to_string()
    } else {
        log_level
            .or(file.log_level)
            .unwrap_or_else(|| "info".into())
    };
    crate::logging(&level);

    let root = root.or(file.root).unwrap_or_else(berth_store::default_root);
    let addr = args
        .addr
        .or(file.addr)
        .unwrap_or_else(|| "127.0.0.1:5000".parse().expect("default address"));
    let settings = Settings {
        read_only: args.read_only || file.read_only.unwrap_or(false),
        delete_enabled: !args.no_delete && file.delete.unwrap_or(true),
        allow_sparse_index: args.allow_sparse_index || file.allow_sparse_index.unwrap_or(false),
        max_manifest_bytes: file
            .max_manifest_bytes
            .unwrap_or(DEFAULT_MAX_MANIFEST_BYTES),
    };

    let store = Store::open(&root, Access::Shared)
        .with_context(|| format!("cannot open the berth root {}", root.display()))?;
    limit_heap_retention();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (is another registry running there? pick another with --addr)"))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            root = %root.display(),
            read_only = settings.read_only,
            delete = settings.delete_enabled,
            "berth registry listening"
        );
        let registry = Arc::new(Registry {
            store: Arc::new(store),
            settings,
        });
        berth_registry::serve(listener, registry, shutdown_signal()).await?;
        tracing::info!("shut down cleanly");
        anyhow::Ok(())
    })
}

/// Uploads stream through ~400 KiB buffers. glibc's adaptive mmap threshold
/// would move such buffers onto the heap after the first frees and keep the
/// freed memory; a fixed threshold returns each one to the kernel when it is
/// dropped, so resident memory stays a few buffers, not the high-water mark.
fn limit_heap_retention() {
    // SAFETY: mallopt only tunes the allocator; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: finishing requests in flight");
}

#[derive(clap::Args)]
pub struct GcArgs {
    /// Print what would be removed without removing anything
    #[arg(long)]
    dry_run: bool,
    /// Also remove manifests that no tag reaches (directly, through an index, or as a referrer)
    #[arg(long, short = 'm')]
    delete_untagged: bool,
}

pub fn gc(root: Option<PathBuf>, args: GcArgs) -> anyhow::Result<()> {
    let root = root.unwrap_or_else(berth_store::default_root);
    let store = Store::open(&root, Access::Exclusive).with_context(|| {
        format!(
            "cannot open the berth root {} for garbage collection",
            root.display()
        )
    })?;
    let report = store.gc(GcOptions {
        dry_run: args.dry_run,
        delete_untagged: args.delete_untagged,
    })?;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for (repo, d) in &report.manifests {
        println!("{verb} manifest {repo}@{d}");
    }
    for (d, size) in &report.blobs {
        println!("{verb} blob {d} ({size} bytes)");
    }
    println!(
        "{verb} {} manifests, {} blobs ({} bytes), {} repository links, {} stray upload files",
        report.manifests.len(),
        report.blobs.len(),
        report.bytes_freed(),
        report.links.len(),
        report.stray_files
    );
    Ok(())
}

#[derive(clap::Args)]
pub struct FsckArgs {
    /// Index children missing from the repository are notes, not problems
    /// (for roots served with --allow-sparse-index)
    #[arg(long)]
    allow_sparse_index: bool,
}

pub fn fsck(root: Option<PathBuf>, args: FsckArgs) -> anyhow::Result<()> {
    let root = root.unwrap_or_else(berth_store::default_root);
    let store = Store::open(&root, Access::Shared)
        .with_context(|| format!("cannot open the berth root {}", root.display()))?;
    let report = store.fsck_with(berth_store::FsckOptions {
        allow_sparse_index: args.allow_sparse_index,
    })?;
    for n in &report.notes {
        println!("note: {n}");
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    println!(
        "checked {} blobs and {} manifests: {} problems",
        report.blobs_checked,
        report.manifests_checked,
        report.problems.len()
    );
    if report.problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("the root {} is inconsistent (see above)", root.display())
    }
}
