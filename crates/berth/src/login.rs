//! `berth login` / `berth logout`: credentials in the Docker config (or its
//! credential helper), checked against the registry before they are stored.

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{bail, Context, Result};
use berth_client::{ClientConfig, Credential, DockerConfig, Error as ClientError, RegistryClient};
use clap::Args;

use crate::inspect::{block_on, normalize_registry, RemoteOpts};

const DEFAULT_REGISTRY: &str = "docker.io";

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry host[:port] [default: docker.io]
    #[arg(value_name = "REGISTRY")]
    registry: Option<String>,
    /// User name
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// Password (visible to other users of the machine: prefer --password-stdin)
    #[arg(long, short = 'p', conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    remote: RemoteOpts,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port] [default: docker.io]
    #[arg(value_name = "REGISTRY")]
    registry: Option<String>,
}

fn prompt(label: &str) -> Result<String> {
    eprint!("{label}: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Reads a line from the terminal without echoing it.
fn prompt_hidden(label: &str) -> Result<String> {
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: fd is a terminal and quiet a valid termios.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let line = prompt(label);
    if have_tty {
        // SAFETY: restores what tcgetattr returned.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        eprintln!();
    }
    line
}

pub fn login(args: LoginArgs) -> Result<()> {
    let registry = normalize_registry(args.registry.as_deref().unwrap_or(DEFAULT_REGISTRY));
    let interactive = std::io::stdin().is_terminal();
    let username = match args.username {
        Some(u) => u,
        None if interactive && !args.password_stdin => prompt("Username")?,
        None => bail!("login to {registry}: give the user name with -u/--username"),
    };
    if username.is_empty() {
        bail!("login to {registry}: the user name is empty");
    }
    let password = if args.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the password from standard input")?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if interactive {
        prompt_hidden("Password")?
    } else {
        bail!("login to {registry}: give the password with --password-stdin or -p/--password");
    };
    if password.is_empty() {
        bail!("login to {registry}: the password is empty");
    }
    let credential = Credential::Basic { username, password };

    // The config is read (and its helper known) before anything is sent, so
    // a broken config fails before the network is touched.
    let mut config = DockerConfig::load()?;
    let client = RegistryClient::new(
        &registry,
        ClientConfig {
            credential: Some(credential.clone()),
            insecure: args.remote.is_insecure(),
            ..ClientConfig::default()
        },
    )?;
    block_on(client.ping())?.map_err(|e| match e {
        ClientError::Unauthorized { .. } => anyhow::anyhow!(
            "login to {registry} failed: the registry refused user {:?} and this password \
             (HTTP 401); nothing was stored, check the user name and password",
            credential.username()
        ),
        e => anyhow::Error::from(e)
            .context(format!("login to {registry} failed; nothing was stored")),
    })?;
    config.store(&registry, &credential)?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<()> {
    let registry = normalize_registry(args.registry.as_deref().unwrap_or(DEFAULT_REGISTRY));
    let mut config = DockerConfig::load()?;
    if config.erase(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
