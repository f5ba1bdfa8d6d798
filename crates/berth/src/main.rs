//! The `berth` command line: parses flags, maps them onto library calls.

mod archive;
mod artifact;
mod build;
mod build_progress;
mod builder;
mod containers;
mod copy;
mod dive;
mod dive_ui;
mod exit;
mod fs_output;
mod images;
mod inspect;
mod interrupt;
mod local;
mod login;
mod manifest;
mod progress;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Build, serve, move and inspect container images",
    after_help = exit::HELP
)]
struct Cli {
    /// Local root (content store and metadata) [default: $XDG_DATA_HOME/berth, /var/lib/berth as root]
    #[arg(long, global = true, env = "BERTH_ROOT")]
    root: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter)
    #[arg(long, global = true, env = "BERTH_LOG")]
    log_level: Option<String>,
    /// Shorthand for --log-level debug
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile (daemonless, rootless, cached, parallel)
    Build(Box<build::BuildArgs>),
    /// Serve the local root as an OCI distribution registry
    Serve(serve::ServeArgs),
    /// Remove blobs no manifest references (offline: stop the server first)
    Gc(serve::GcArgs),
    /// Manage the build cache (`builder prune [--all]`)
    #[command(subcommand)]
    Builder(builder::BuilderCommand),
    /// Check the local root: re-hash every blob, resolve every manifest's references
    Fsck(serve::FsckArgs),
    /// Copy an image between registries, OCI layouts (oci:PATH[:TAG]) and the local store (local:REPO[:TAG])
    Copy(copy::CopyArgs),
    /// Copy an image from a registry into the local store (same repository and tag)
    Pull(copy::PullArgs),
    /// Copy an image from the local store to a registry (same repository and tag)
    Push(copy::PushArgs),
    /// List the images in the local store
    Images(images::ImagesArgs),
    /// Give a local image another name (NAME[:TAG], any repository)
    Tag(local::TagArgs),
    /// Remove local images (tags, then the image with its last tag; blobs go at the next `berth gc`)
    Rmi(local::RmiArgs),
    /// Make a one-layer image from a rootfs tarball (like `docker import`)
    Import(local::ImportArgs),
    /// Show an image's manifest, config or a summary (like `skopeo inspect`)
    Inspect(inspect::InspectArgs),
    /// Print an image's manifest digest (the index's for multi-platform images)
    Digest(inspect::DigestArgs),
    /// List a repository's tags
    ListTags(inspect::ListTagsArgs),
    /// List a registry's repositories
    Catalog(inspect::CatalogArgs),
    /// List the platforms of an image (like `mquery`)
    Platforms(inspect::PlatformsArgs),
    /// Check and store credentials for a registry in the Docker config
    Login(login::LoginArgs),
    /// Remove stored credentials for a registry
    Logout(login::LogoutArgs),
    /// Write images from the local store (or docker://REF) to a docker-archive tarball
    Save(archive::SaveArgs),
    /// Load images from a docker-archive or oci-archive tarball into the local store
    Load(archive::LoadArgs),
    /// Push, pull, attach and discover OCI artifacts (like oras)
    Artifact(artifact::ArtifactArgs),
    /// Create, annotate, inspect and push manifest lists (like `docker manifest`)
    Manifest(manifest::ManifestArgs),
    /// Create a container from a local image without starting it (like `docker create`)
    Create(Box<containers::CreateFlags>),
    /// Run a command in a new container, daemonless and rootless (like `docker run`)
    Run(Box<containers::RunArgs>),
    /// Start created or stopped containers
    Start(containers::StartArgs),
    /// List containers
    Ps(containers::PsArgs),
    /// Show a container's output (json-file log)
    Logs(containers::LogsArgs),
    /// Stop containers: the stop signal, then SIGKILL after a grace period
    Stop(containers::StopArgs),
    /// Send a signal to containers (default SIGKILL)
    Kill(containers::KillArgs),
    /// Remove containers
    Rm(containers::RmArgs),
    /// Block until containers stop, then print their exit codes
    Wait(containers::WaitArgs),
    /// Run a command in a running container
    Exec(containers::ExecArgs),
    /// Copy files between a container and the local filesystem (CONTAINER:PATH)
    Cp(containers::CpArgs),
    /// Analyse an image's layers and wasted space like dive (--json, CI rules)
    Dive(dive::DiveArgs),
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// `berth build` runs in its own mount namespace (and, as an ordinary
/// user, a user namespace where it is root): entered here, before any
/// thread exists. The root is resolved first, with the real user's paths.
fn build_command(root: Option<PathBuf>, args: build::BuildArgs) -> anyhow::Result<()> {
    let root = root.unwrap_or_else(berth_store::default_root);
    let ns = berth_sandbox::enter_build_namespace()
        .map_err(|e| anyhow::anyhow!("setting up the build namespace: {e}"))?;
    build::build(root, &ns, args)
}

fn main() -> ExitCode {
    // A RUN step's sandbox helper is this binary re-executed.
    berth_sandbox::helper_main_if_requested();
    // So is each container's supervisor.
    berth_run::supervisor_main_if_requested();
    let cli = Cli::parse();
    // `serve` sets up logging itself (its config file may name a level);
    // everything else logs warnings unless asked for more.
    if !matches!(cli.command, Command::Serve(_)) {
        let default = if matches!(cli.command, Command::Gc(_)) {
            "info"
        } else {
            "warn"
        };
        init_logging(if cli.debug {
            "debug"
        } else {
            cli.log_level.as_deref().unwrap_or(default)
        });
    }
    // Commands that stage data clean it up on SIGINT/SIGTERM/SIGHUP.
    if matches!(
        cli.command,
        Command::Copy(_)
            | Command::Pull(_)
            | Command::Push(_)
            | Command::Save(_)
            | Command::Load(_)
            | Command::Import(_)
    ) {
        interrupt::install();
    }
    let root = cli.root;
    let command = match cli.command {
        // Docker's exit codes (the container's own, 125 for berth's
        // failures), so these report their errors themselves.
        Command::Create(f) => return containers::create(root, *f),
        Command::Run(args) => return containers::run(root, *args),
        Command::Start(args) => return containers::start(root, args),
        Command::Ps(args) => return containers::ps(root, args),
        Command::Logs(args) => return containers::logs(root, args),
        Command::Stop(args) => return containers::stop(root, args),
        Command::Kill(args) => return containers::kill(root, args),
        Command::Rm(args) => return containers::rm(root, args),
        Command::Wait(args) => return containers::wait(root, args),
        Command::Exec(args) => return containers::exec(root, args),
        Command::Cp(args) => return containers::cp(root, args),
        Command::Inspect(args) => {
            if let Some(code) = containers::inspect_container(root.clone(), args.target()) {
                return code;
            }
            Command::Inspect(args)
        }
        other => other,
    };
    let cli_root = root;
    let result = match command {
        Command::Build(args) => build_command(cli_root, *args),
        Command::Serve(args) => serve::serve(cli_root, cli.log_level, cli.debug, args),
        Command::Gc(args) => serve::gc(cli_root, args),
        Command::Builder(cmd) => builder::builder(cli_root, cmd),
        Command::Fsck(args) => serve::fsck(cli_root, args),
        Command::Copy(args) => copy::copy(cli_root, args),
        Command::Pull(args) => copy::pull(cli_root, args),
        Command::Push(args) => copy::push(cli_root, args),
        Command::Images(args) => images::images(cli_root, args),
        Command::Tag(args) => local::tag(cli_root, args),
        Command::Rmi(args) => local::rmi(cli_root, args),
        Command::Import(args) => local::import(cli_root, args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Digest(args) => inspect::digest(args),
        Command::ListTags(args) => inspect::list_tags(args),
        Command::Catalog(args) => inspect::catalog(args),
        Command::Platforms(args) => inspect::platforms(args),
        Command::Login(args) => login::login(args),
        Command::Logout(args) => login::logout(args),
        Command::Save(args) => archive::save(cli_root, args),
        Command::Load(args) => archive::load(cli_root, args),
        Command::Artifact(args) => artifact::artifact(args),
        Command::Manifest(args) => manifest::manifest(cli_root, args),
        Command::Create(_)
        | Command::Run(_)
        | Command::Start(_)
        | Command::Ps(_)
        | Command::Logs(_)
        | Command::Stop(_)
        | Command::Kill(_)
        | Command::Rm(_)
        | Command::Wait(_)
        | Command::Exec(_)
        | Command::Cp(_) => unreachable!("handled above"),
        Command::Dive(args) => dive::dive(cli_root, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: error: {e:#}");
            // One classification for every command (see exit.rs).
            ExitCode::from(exit::classify(&e).code())
        }
    }
}

pub(crate) use init_logging as logging;
