//! The `berth` command line: parses flags, maps them onto library calls.

mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Build, serve, move and inspect container images"
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
    /// Serve the local root as an OCI distribution registry
    Serve(serve::ServeArgs),
    /// Remove blobs no manifest references (offline: stop the server first)
    Gc(serve::GcArgs),
    /// Check the local root: re-hash every blob, resolve every manifest's references
    Fsck,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(cli.root, cli.log_level, cli.debug, args),
        Command::Gc(args) => {
            init_logging(if cli.debug {
                "debug"
            } else {
                cli.log_level.as_deref().unwrap_or("info")
            });
            serve::gc(cli.root, args)
        }
        Command::Fsck => serve::fsck(cli.root),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) use init_logging as logging;
