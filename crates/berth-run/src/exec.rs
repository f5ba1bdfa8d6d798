//! `berth exec`: one more process in a running container's namespaces,
//! confined like its main process.

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;

use berth_sandbox::{Rootfs, RunSpec};

use crate::container::Container;
use crate::{Error, Paths, Result};

#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    pub cmd: Vec<String>,
    /// `-e K=V` (or `K`: the host's value).
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `-d`: start it and return at once.
    pub detach: bool,
    /// `-i`: the process gets this one's stdin (else /dev/null).
    pub interactive: bool,
}

fn set_env(env: &mut Vec<String>, kv: String) {
    let key = kv
        .split_once('=')
        .map_or(kv.as_str(), |(k, _)| k)
        .to_string();
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

fn redirect_null(fds: &[libc::c_int]) -> Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| Error::io("opening /dev/null", e))?;
    for &fd in fds {
        // SAFETY: dup2 onto a standard descriptor.
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
    }
    Ok(())
}

/// Runs `opts.cmd` in `c` and returns its exit code (128+N for a signal;
/// 0 at once with `detach`). Call it while the process is single-threaded
/// and outside berth's build namespace; it changes this process's
/// namespaces (call it last).
pub fn exec(paths: &Paths, c: &Container, opts: &ExecOptions) -> Result<i32> {
    if opts.cmd.is_empty() {
        return Err(Error::Invalid("exec needs a command to run".into()));
    }
    let st = c.state(paths);
    if st.status != crate::Status::Running || st.pid == 0 {
        return Err(Error::Conflict(format!(
            "container {} is not running",
            c.name
        )));
    }
    let mut spec = RunSpec::new(Rootfs::Dir(PathBuf::from("/")), opts.cmd.clone());
    spec.env = c.env.clone();
    for e in &opts.env {
        if e.contains('=') {
            set_env(&mut spec.env, e.clone());
        } else if let Ok(v) = std::env::var(e) {
            set_env(&mut spec.env, format!("{e}={v}"));
        }
    }
    spec.seccomp_bpf = crate::cached::seccomp_bpf(paths);
    spec.cwd = PathBuf::from(opts.workdir.as_deref().unwrap_or(&c.working_dir));
    if !spec.cwd.is_absolute() {
        return Err(Error::Invalid(format!(
            "the working directory {:?} must be absolute",
            spec.cwd
        )));
    }
    (spec.uid, spec.gid, spec.additional_gids) = match &opts.user {
        Some(u) => {
            let mut lowers = vec![c.upper(paths)];
            lowers.extend(c.lowers.iter().cloned());
            berth_build::users::resolve_user(u, &lowers).map_err(Error::Invalid)?
        }
        None => (c.uid, c.gid, c.groups.clone()),
    };
    if !opts.interactive {
        redirect_null(&[0])?;
    }
    if opts.detach {
        // SAFETY: single-threaded (the caller's contract).
        match unsafe { nix::unistd::fork() }
            .map_err(|e| Error::io("fork", std::io::Error::from(e)))?
        {
            nix::unistd::ForkResult::Parent { .. } => return Ok(0),
            nix::unistd::ForkResult::Child => {
                let _ = nix::unistd::setsid();
                let _ = redirect_null(&[0, 1, 2]);
                let code = match berth_sandbox::exec_in(st.pid, &spec) {
                    Ok(_) => 0,
                    Err(_) => 125,
                };
                std::process::exit(code);
            }
        }
    }
    let status = berth_sandbox::exec_in(st.pid, &spec)
        .map_err(|e| Error::Failed(format!("exec in container {}: {e}", c.name)))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        _ => 125,
    })
}
