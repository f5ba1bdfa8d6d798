//! `berth serve` and `berth gc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_registry::limits::{self, parse_duration};
use berth_registry::{
    BodyRate, Limits, Registry, Settings, UploadLimits, DEFAULT_MAX_MANIFEST_BYTES,
};
use berth_store::{Access, GcOptions, Store};
use serde::Deserialize;

/// A duration flag or config value: `30s`, `500ms`, `5m`, `24h`, `7d`, a
/// number of seconds, or `off` / `0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(Option<Duration>);

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(Dur)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(n) => Ok(Dur((n > 0).then(|| Duration::from_secs(n)))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

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
    /// A request header must arrive within this time (of connecting, or of its first byte) [default: 30s]
    #[arg(long, value_name = "DURATION")]
    header_read_timeout: Option<Dur>,
    /// Close keep-alive connections idle this long [default: 75s]
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<Dur>,
    /// Cut request bodies slower than this many bytes/s over --body-rate-window (0: off) [default: 1024]
    #[arg(long, value_name = "BYTES")]
    min_body_rate: Option<u64>,
    /// The window --min-body-rate is measured over [default: 60s]
    #[arg(long, value_name = "DURATION")]
    body_rate_window: Option<Dur>,
    /// Connections served at once; more are answered 503 (0: as many as the fd limit allows) [default: 4096]
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Connections from one client address (IPv6: /64) (0: no cap) [default: 512]
    #[arg(long, value_name = "N")]
    max_connections_per_client: Option<usize>,
    /// Open upload sessions in total (0: no cap) [default: 10000]
    #[arg(long, value_name = "N")]
    max_upload_sessions: Option<usize>,
    /// Open upload sessions per client address (0: no cap) [default: 256]
    #[arg(long, value_name = "N")]
    max_upload_sessions_per_client: Option<usize>,
    /// Upload sessions idle this long expire (off: never) [default: 24h]
    #[arg(long, value_name = "DURATION")]
    upload_max_age: Option<Dur>,
    /// Close an idle upload session's file after this long [default: 30s]
    #[arg(long, value_name = "DURATION")]
    upload_close_idle_after: Option<Dur>,
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
    header_read_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    min_body_rate: Option<u64>,
    body_rate_window: Option<Dur>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    #[serde(default)]
    uploads: UploadsConfig,
}

/// `[uploads]` of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadsConfig {
    max_age: Option<Dur>,
    max_sessions: Option<usize>,
    max_sessions_per_client: Option<usize>,
    close_idle_after: Option<Dur>,
}

const CONFIG_KEYS: &str = "addr, root, log_level, read_only, delete, allow_sparse_index, \
    max_manifest_bytes, header_read_timeout, idle_timeout, min_body_rate, body_rate_window, \
    max_connections, max_connections_per_client; [uploads] max_age, max_sessions, \
    max_sessions_per_client, close_idle_after";

fn load_config(path: &Path) -> anyhow::Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!(
            "config file {} is not valid (keys: {CONFIG_KEYS})",
            path.display()
        )
    })
}

/// A duration: the flag, else the config file, else the default.
fn dur(flag: Option<Dur>, file: Option<Dur>, default: Duration) -> Option<Duration> {
    flag.or(file).map_or(Some(default), |d| d.0)
}

fn upload_max_age(args_age: Option<Dur>, file: &UploadsConfig) -> Option<Duration> {
    dur(args_age, file.max_age, limits::DEFAULT_UPLOAD_MAX_AGE)
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
    let body_rate = args
        .min_body_rate
        .or(file.min_body_rate)
        .unwrap_or(limits::DEFAULT_MIN_BODY_RATE);
    let body_window = dur(
        args.body_rate_window,
        file.body_rate_window,
        limits::DEFAULT_BODY_RATE_WINDOW,
    );
    let settings = Settings {
        read_only: args.read_only || file.read_only.unwrap_or(false),
        delete_enabled: !args.no_delete && file.delete.unwrap_or(true),
        allow_sparse_index: args.allow_sparse_index || file.allow_sparse_index.unwrap_or(false),
        max_manifest_bytes: file
            .max_manifest_bytes
            .unwrap_or(DEFAULT_MAX_MANIFEST_BYTES),
        limits: Limits {
            header_read_timeout: dur(
                args.header_read_timeout,
                file.header_read_timeout,
                limits::DEFAULT_HEADER_READ_TIMEOUT,
            ),
            idle_timeout: dur(
                args.idle_timeout,
                file.idle_timeout,
                limits::DEFAULT_IDLE_TIMEOUT,
            ),
            min_body_rate: match (body_rate, body_window) {
                (0, _) | (_, None) => None,
                (bytes_per_sec, Some(window)) => Some(BodyRate {
                    bytes_per_sec,
                    window,
                }),
            },
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(limits::DEFAULT_MAX_CONNECTIONS),
            max_connections_per_client: args
                .max_connections_per_client
                .or(file.max_connections_per_client)
                .unwrap_or(limits::DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
        },
        uploads: UploadLimits {
            max_sessions: args
                .max_upload_sessions
                .or(file.uploads.max_sessions)
                .unwrap_or(limits::DEFAULT_MAX_SESSIONS),
            max_sessions_per_client: args
                .max_upload_sessions_per_client
                .or(file.uploads.max_sessions_per_client)
                .unwrap_or(limits::DEFAULT_MAX_SESSIONS_PER_CLIENT),
            max_age: upload_max_age(args.upload_max_age, &file.uploads),
            // "off" would keep every idle file open: the smallest sane value.
            close_idle_after: dur(
                args.upload_close_idle_after,
                file.uploads.close_idle_after,
                limits::DEFAULT_CLOSE_IDLE_AFTER,
            )
            .unwrap_or(Duration::from_secs(1)),
        },
    };
    // Every connection and every blob being read or written holds a
    // descriptor; the soft limit is often 1024 where the hard one is far
    // higher. The connection caps are fitted into what this gives.
    match limits::raise_nofile_limit() {
        Ok(n) => tracing::debug!("RLIMIT_NOFILE: {n}"),
        Err(e) => tracing::warn!("cannot raise RLIMIT_NOFILE to its hard limit: {e}"),
    }

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
    /// Remove upload sessions idle this long (off: keep them) [default: [uploads] max_age of --config, else 24h]
    #[arg(long, value_name = "DURATION")]
    upload_max_age: Option<Dur>,
    /// berth serve's config file, for its root and [uploads] max_age
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn gc(root: Option<PathBuf>, args: GcArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(p) => load_config(p)?,
        None => ConfigFile::default(),
    };
    let upload_max_age = upload_max_age(args.upload_max_age, &file.uploads);
    let root = root.or(file.root).unwrap_or_else(berth_store::default_root);
    let store = Store::open(&root, Access::Exclusive).with_context(|| {
        format!(
            "cannot open the berth root {} for garbage collection",
            root.display()
        )
    })?;
    let report = store.gc(GcOptions {
        dry_run: args.dry_run,
        delete_untagged: args.delete_untagged,
        upload_max_age,
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
    for u in &report.expired_uploads {
        println!(
            "{verb} expired upload {} of {} ({} bytes, idle {})",
            u.id,
            u.repo,
            u.size,
            idle(u.idle)
        );
    }
    println!(
        "{verb} {} manifests, {} blobs ({} bytes), {} repository links, {} expired upload sessions, {} stray upload files",
        report.manifests.len(),
        report.blobs.len(),
        report.bytes_freed(),
        report.links.len(),
        report.expired_uploads.len(),
        report.stray_files
    );
    Ok(())
}

/// `3d 4h`, `2h 5m`, `40s`.
fn idle(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86400 => format!("{}d {}h", s / 86400, s % 86400 / 3600),
        s if s >= 3600 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
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
