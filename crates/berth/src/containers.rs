//! `berth create/run/start/ps/logs/stop/kill/rm/wait/exec/cp` and
//! `berth inspect CONTAINER`: Docker's command line over berth-run. Flags
//! are parsed here; everything else is the library's.
//!
//! Exit codes are Docker's: `run` returns the container's own code, and
//! 125 when berth fails (126/127: the command cannot be run / is not found);
//! the other commands return 1 on failure.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_run::create::CreateOptions;
use berth_run::exec::ExecOptions;
use berth_run::{Container, Paths};

#[derive(clap::Args, Debug)]
pub struct CreateFlags {
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Automatically remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Set environment variables (KEY=VALUE, or KEY to take this shell's value)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// Bind mount a host path: SRC:DST[:ro]
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    read_only: bool,
    /// Network: bridge (default; outbound through slirp4netns, loopback only where it cannot run), none, host, container:NAME
    #[arg(long, alias = "net")]
    network: Option<String>,
    /// PID namespace: container:NAME shares that container's processes
    #[arg(long)]
    pid: Option<String>,
    /// Publish a container's TCP port on the host: [IP:][HOST:]CONTAINER[/tcp] (no HOST: a free port)
    #[arg(short, long = "publish", value_name = "[IP:]HOST:CTR")]
    publish: Vec<String>,
    /// Signal to stop the container (default: the image's StopSignal, else SIGTERM)
    #[arg(long)]
    stop_signal: Option<String>,
    /// Memory limit (needs a delegated cgroup v2 subtree: not enforced here, with a warning)
    #[arg(short, long)]
    memory: Option<String>,
    /// Number of CPUs (needs a delegated cgroup v2 subtree: not enforced here, with a warning)
    #[arg(long)]
    cpus: Option<String>,
    /// Tune the container's pids limit (needs a delegated cgroup v2 subtree: not enforced here, with a warning)
    #[arg(long)]
    pids_limit: Option<String>,
    /// Keep STDIN open (not supported yet)
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY (not supported yet)
    #[arg(short, long)]
    tty: bool,
    /// The image (from the local store: berth build, pull, load or import)
    image: String,
    /// The command and its arguments (default: the image's ENTRYPOINT and CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run the container in the background and print its id
    #[arg(short, long)]
    detach: bool,
    #[command(flatten)]
    flags: CreateFlags,
}

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Attach stdout and stderr and return the container's exit code
    #[arg(short, long)]
    attach: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Output format: table (default) or json (one object per line)
    #[arg(long)]
    format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs ("all" by default)
    #[arg(short = 'n', long)]
    tail: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    container: String,
}

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    signal: String,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (kills it)
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes (there are none yet: accepted for Docker's sake)
    #[arg(short, long)]
    volumes: bool,
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct WaitArgs {
    #[arg(required = true, value_name = "CONTAINER")]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short, long)]
    detach: bool,
    /// Keep STDIN open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY (not supported yet)
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short, long)]
    user: Option<String>,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct CpArgs {
    /// Source: CONTAINER:PATH or a local path
    src: String,
    /// Destination: CONTAINER:PATH or a local path
    dst: String,
}

fn paths(root: Option<PathBuf>) -> Paths {
    Paths::new(root.unwrap_or_else(berth_store::default_root))
}

fn fail(code: u8, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("berth: error: {e}");
    ExitCode::from(code)
}

fn warn(msg: &str) {
    eprintln!("berth: warning: {msg}");
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(c.clamp(0, 255) as u8)
}

/// berth's build namespace (rootless: a user namespace with the
/// subordinate ids), entered before any thread exists.
fn enter_namespace() -> Result<(), String> {
    berth_sandbox::enter_build_namespace()
        .map(|_| ())
        .map_err(|e| format!("setting up berth's namespace: {e}"))
}

fn create_options(f: &CreateFlags) -> Result<CreateOptions, String> {
    if f.tty {
        return Err(
            "-t/--tty is not supported yet: run without it (output goes through pipes)".into(),
        );
    }
    if f.interactive {
        return Err("-i/--interactive is not supported by run yet (berth exec -i is)".into());
    }
    for (flag, v) in [
        ("--memory", &f.memory),
        ("--cpus", &f.cpus),
        ("--pids-limit", &f.pids_limit),
    ] {
        if v.is_some() {
            warn(&format!(
                "{flag} is NOT enforced: resource limits need a delegated cgroup v2 subtree, and this host has a cgroup v1/hybrid layout"
            ));
        }
    }
    Ok(CreateOptions {
        image: f.image.clone(),
        name: f.name.clone(),
        cmd: f.command.clone(),
        entrypoint: f.entrypoint.clone(),
        env: f.env.clone(),
        env_files: f.env_file.clone(),
        workdir: f.workdir.clone(),
        user: f.user.clone(),
        hostname: f.hostname.clone(),
        volumes: f.volume.clone(),
        read_only: f.read_only,
        network: f.network.clone(),
        auto_remove: f.rm,
        stop_signal: f.stop_signal.clone(),
        publish: f.publish.clone(),
        pid: f.pid.clone(),
    })
}

fn do_create(paths: &Paths, f: &CreateFlags) -> Result<Container, String> {
    let opts = create_options(f)?;
    berth_run::enter_namespace(paths, opts.join_target()).map_err(|e| e.to_string())?;
    let (c, warnings) = berth_run::create::create(paths, &opts).map_err(|e| e.to_string())?;
    for w in warnings {
        warn(&w);
    }
    Ok(c)
}

pub fn create(root: Option<PathBuf>, f: CreateFlags) -> ExitCode {
    let paths = paths(root);
    match do_create(&paths, &f) {
        Ok(c) => {
            println!("{}", c.id);
            ExitCode::SUCCESS
        }
        Err(e) => fail(125, e),
    }
}

/// Starts `c` and follows it: attached, its exit code; detached, its id.
fn start_one(paths: &Paths, c: &Container, attach: bool, print_id: bool) -> ExitCode {
    let started = match berth_run::supervisor::start(paths, c, attach) {
        Ok(s) => s,
        Err(e) => return fail(125, e),
    };
    if attach {
        started.proxy_signals();
        return match started.wait() {
            Ok(c) => code(c),
            Err(e) => fail(125, e),
        };
    }
    if started.pid.is_none() {
        // Its command could not be run (not found, not executable).
        let c2 = started.wait().unwrap_or(125);
        let _ = berth_run::ops::logs(paths, c, false, None, false);
        eprintln!("berth: error: the container's command could not be started (exit code {c2})");
        return code(c2);
    }
    started.detach();
    if print_id {
        println!("{}", c.id);
    }
    ExitCode::SUCCESS
}

pub fn run(root: Option<PathBuf>, args: RunArgs) -> ExitCode {
    let paths = paths(root);
    let c = match do_create(&paths, &args.flags) {
        Ok(c) => c,
        Err(e) => return fail(125, e),
    };
    start_one(&paths, &c, !args.detach, true)
}

pub fn start(root: Option<PathBuf>, args: StartArgs) -> ExitCode {
    let paths = paths(root);
    if args.attach && args.containers.len() > 1 {
        return fail(1, "you cannot start and attach multiple containers at once");
    }
    let mut found = Vec::new();
    for name in &args.containers {
        match berth_run::container::find(&paths, name) {
            Ok(c) => found.push((name, c)),
            Err(e) => return fail(1, e),
        }
    }
    // Containers that share another one's namespaces start in its user
    // namespace; one such target per command.
    let mut targets: Vec<&str> = found.iter().filter_map(|(_, c)| c.join_target()).collect();
    targets.dedup();
    if targets.len() > 1 {
        return fail(
            1,
            "these containers join different containers' namespaces: start them one at a time",
        );
    }
    if let Err(e) = berth_run::enter_namespace(&paths, targets.first().copied()) {
        return fail(1, e);
    }
    let mut status = ExitCode::SUCCESS;
    for (name, c) in found {
        if args.attach {
            return start_one(&paths, &c, true, false);
        }
        if c.state(&paths).status == berth_run::Status::Running {
            println!("{name}");
            continue;
        }
        let s = start_one(&paths, &c, false, false);
        if s == ExitCode::SUCCESS {
            println!("{name}");
        } else {
            status = ExitCode::from(1);
        }
    }
    status
}

fn find_all(paths: &Paths, names: &[String]) -> Result<Vec<(String, Container)>, ExitCode> {
    let mut out = Vec::new();
    for n in names {
        match berth_run::container::find(paths, n) {
            Ok(c) => out.push((n.clone(), c)),
            Err(e) => return Err(fail(1, e)),
        }
    }
    Ok(out)
}

pub fn ps(root: Option<PathBuf>, args: PsArgs) -> ExitCode {
    let paths = paths(root);
    let all = match berth_run::container::list(&paths) {
        Ok(l) => l,
        Err(e) => return fail(1, e),
    };
    let mut rows = Vec::new();
    // Newest first, as Docker lists them.
    for c in all.iter().rev() {
        let row = berth_run::ops::ps_row(&paths, c);
        if !args.all && row["State"] != "running" {
            continue;
        }
        rows.push((c, row));
    }
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for (c, _) in &rows {
            let id = if args.no_trunc {
                &c.id[..]
            } else {
                c.short_id()
            };
            let _ = writeln!(out, "{id}");
        }
        return ExitCode::SUCCESS;
    }
    match args.format.as_deref() {
        Some("json") | Some("{{json .}}") => {
            for (c, mut row) in rows {
                if args.no_trunc {
                    row["ID"] = c.id.clone().into();
                }
                let _ = writeln!(out, "{row}");
            }
        }
        None | Some("table") => {
            let mut table = vec![[
                "CONTAINER ID".to_string(),
                "IMAGE".into(),
                "COMMAND".into(),
                "CREATED".into(),
                "STATUS".into(),
                "PORTS".into(),
                "NAMES".into(),
            ]];
            for (c, row) in &rows {
                let s = |k: &str| row[k].as_str().unwrap_or_default().to_string();
                table.push([
                    if args.no_trunc { c.id.clone() } else { s("ID") },
                    s("Image"),
                    s("Command"),
                    s("RunningFor"),
                    s("Status"),
                    s("Ports"),
                    s("Names"),
                ]);
            }
            let widths: Vec<usize> = (0..7)
                .map(|i| {
                    table
                        .iter()
                        .map(|r| r[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for r in table {
                let mut line = String::new();
                for (i, cell) in r.iter().enumerate() {
                    if i == 6 {
                        line.push_str(cell);
                    } else {
                        line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
                    }
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
        }
        Some(other) => {
            return fail(1, format!("--format {other}: use table or json"));
        }
    }
    ExitCode::SUCCESS
}

pub fn logs(root: Option<PathBuf>, args: LogsArgs) -> ExitCode {
    let paths = paths(root);
    let tail = match args.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => return fail(1, format!("--tail {n}: a number or \"all\"")),
        },
    };
    let c = match berth_run::container::find(&paths, &args.container) {
        Ok(c) => c,
        Err(e) => return fail(1, e),
    };
    match berth_run::ops::logs(&paths, &c, args.follow, tail, args.timestamps) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

pub fn stop(root: Option<PathBuf>, args: StopArgs) -> ExitCode {
    let paths = paths(root);
    let found = match find_all(&paths, &args.containers) {
        Ok(f) => f,
        Err(c) => return c,
    };
    let mut status = ExitCode::SUCCESS;
    for (name, c) in found {
        match berth_run::ops::stop(&paths, &c, Duration::from_secs(args.time)) {
            Ok(()) => println!("{name}"),
            Err(e) => status = fail(1, e),
        }
    }
    status
}

pub fn kill(root: Option<PathBuf>, args: KillArgs) -> ExitCode {
    let paths = paths(root);
    let sig = match berth_run::signals::parse(&args.signal) {
        Ok(s) => s,
        Err(e) => return fail(1, e),
    };
    let found = match find_all(&paths, &args.containers) {
        Ok(f) => f,
        Err(c) => return c,
    };
    let mut status = ExitCode::SUCCESS;
    for (name, c) in found {
        match berth_run::ops::kill(&paths, &c, sig) {
            Ok(()) => println!("{name}"),
            Err(e) => status = fail(1, e),
        }
    }
    status
}

pub fn rm(root: Option<PathBuf>, args: RmArgs) -> ExitCode {
    let paths = paths(root);
    let _ = args.volumes;
    let mut status = ExitCode::SUCCESS;
    let mut found = Vec::new();
    for n in &args.containers {
        match berth_run::container::find(&paths, n) {
            Ok(c) => found.push((n.clone(), c)),
            Err(e) => status = fail(1, e),
        }
    }
    // Signals first, from outside berth's namespace (the user owns the
    // containers' namespace; a new one would not).
    let mut stopped = Vec::new();
    for (name, c) in found {
        match berth_run::ops::prepare_remove(&paths, &c, args.force) {
            Ok(()) => stopped.push((name, c)),
            Err(e) => status = fail(1, e),
        }
    }
    if stopped.is_empty() {
        return status;
    }
    if let Err(e) = enter_namespace() {
        return fail(1, e);
    }
    for (name, c) in stopped {
        match berth_run::ops::remove_files(&paths, &c) {
            Ok(()) => println!("{name}"),
            Err(e) => status = fail(1, e),
        }
    }
    status
}

pub fn wait(root: Option<PathBuf>, args: WaitArgs) -> ExitCode {
    let paths = paths(root);
    let found = match find_all(&paths, &args.containers) {
        Ok(f) => f,
        Err(c) => return c,
    };
    for (_, c) in found {
        match berth_run::ops::wait(&paths, &c) {
            Ok(code) => println!("{code}"),
            Err(e) => return fail(1, e),
        }
    }
    ExitCode::SUCCESS
}

pub fn exec(root: Option<PathBuf>, args: ExecArgs) -> ExitCode {
    let paths = paths(root);
    if args.tty {
        return fail(
            1,
            "-t/--tty is not supported yet: use -i without a terminal (berth exec -i NAME sh)",
        );
    }
    let c = match berth_run::container::find(&paths, &args.container) {
        Ok(c) => c,
        Err(e) => return fail(1, e),
    };
    let opts = ExecOptions {
        cmd: args.command,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        detach: args.detach,
        interactive: args.interactive,
    };
    match berth_run::exec::exec(&paths, &c, &opts) {
        Ok(c) => code(c),
        Err(e) => fail(126, e),
    }
}

pub fn cp(root: Option<PathBuf>, args: CpArgs) -> ExitCode {
    let paths = paths(root);
    match berth_run::cp::cp(&paths, &args.src, &args.dst) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// `berth inspect NAME` for a container: Docker's JSON (an array of one).
/// `None` when `name` is no container (then it is an image reference).
pub fn inspect_container(root: Option<PathBuf>, name: &str) -> Option<ExitCode> {
    let paths = paths(root);
    let c = berth_run::container::find(&paths, name).ok()?;
    let v = serde_json::Value::Array(vec![berth_run::ops::inspect(&paths, &c)]);
    println!(
        "{}",
        serde_json::to_string_pretty(&v).expect("serializable")
    );
    Some(ExitCode::SUCCESS)
}
