//! `run()`: the builder's side of a step. Starts the helper, feeds it the
//! spec over a pipe, streams the step's output, and collects the result.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::devices::DeviceCgroup;
use crate::error::{Result, SandboxError};
use crate::helper::{Status, HELPER_ARG, STATUS_FD};
use crate::network::Slirp;
use crate::spec::{MountKind, Network, OutputStream, Rootfs, RunSpec};
use crate::sys;
use crate::userns::NamespaceInfo;

/// Run one step in a fresh sandbox and wait for it.
///
/// Blocking: call it from a blocking thread. Output is handed to `on_output`
/// as it arrives. A step that ran returns its exit status (a non-zero code or
/// a signal is not an error); `Err` means the sandbox could not be set up or
/// the command could not be started for a reason other than "not found"
/// (which is exit status 127, as in a shell).
pub fn run(spec: &RunSpec, on_output: &mut dyn FnMut(OutputStream, &[u8])) -> Result<ExitStatus> {
    run_observed(spec, &mut |_| {}, on_output)
}

/// [`run`], and `on_started` is called with the host pid of the step's
/// process (pid 1 of its pid namespace) once its sandbox is set up, right
/// before it execs its command: from then on [`crate::exec_in`] can join it.
/// (`berth run`'s supervisor records it.)
pub fn run_observed(
    spec: &RunSpec,
    on_started: &mut dyn FnMut(u32),
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> Result<ExitStatus> {
    let mut spec = checked(spec)?;
    if spec.security.seccomp && spec.seccomp_bpf.is_none() {
        spec.seccomp_bpf = Some(cached_seccomp_bpf(&spec.security.capabilities)?);
    }
    let input = serde_json::to_vec(&spec)
        .map_err(|e| SandboxError::InvalidSpec(format!("encoding the spec: {e}")))?;

    let slirp_exe = match spec.network {
        Network::Isolated => Some(crate::network::isolated_network().map_err(|why| {
            SandboxError::Setup(format!(
                "the step asks for an isolated network with outbound access, but {why}"
            ))
        })?),
        _ => None,
    };
    static STALE_CGROUPS: std::sync::Once = std::sync::Once::new();
    STALE_CGROUPS.call_once(crate::devices::remove_stale);

    let (status_r, status_w) = sys::pipe_cloexec()?;
    let status_raw = status_w.as_raw_fd();
    let new_netns = slirp_exe.is_some();
    let mut cmd = Command::new(&spec.helper_exe);
    cmd.arg(HELPER_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if status_raw == STATUS_FD {
                if libc::fcntl(STATUS_FD, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(status_raw, STATUS_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The helper (and with it the step) dies with this thread.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // Made here, not in the helper, so that slirp4netns can be
            // attached to it before the helper reads its spec.
            if new_netns && libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| SandboxError::HelperSpawn {
        exe: spec.helper_exe.clone(),
        source,
    })?;
    drop(status_w);
    // The helper waits for its spec on stdin: until it is written, nothing
    // of the step runs, so its cgroup and network are in place before.
    let devices = DeviceCgroup::create().filter(|cg| cg.add(child.id()));
    let slirp = match slirp_exe {
        Some(exe) => match Slirp::start(&exe, child.id()) {
            Ok(s) => Some(s),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        },
        None => None,
    };
    let mut stdin = child.stdin.take().expect("piped");
    // The helper reads the whole spec before it does anything; a write error
    // means it died, which the status channel explains.
    let _ = stdin.write_all(&input);
    drop(stdin);

    let stdout: OwnedFd = child.stdout.take().expect("piped").into();
    let stderr: OwnedFd = child.stderr.take().expect("piped").into();
    let mut failed = false;
    let mut on_status = |line: &[u8]| match serde_json::from_slice::<Status>(line) {
        Ok(Status::Error(_)) => failed = true,
        Ok(Status::Started(pid)) if !failed => on_started(pid as u32),
        _ => {}
    };
    let status_bytes = pump(stdout, stderr, status_r, on_output, &mut on_status)?;
    let helper = child
        .wait()
        .map_err(|e| SandboxError::sys("waiting for the sandbox helper", e))?;
    drop(slirp);
    drop(devices);

    let mut result = None;
    for line in status_bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        match serde_json::from_slice::<Status>(line) {
            // The first error is the cause; later lines are consequences.
            Ok(Status::Error(msg)) => return Err(classify(msg)),
            Ok(Status::Exit(code)) => result = Some(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(Status::Signal(sig)) => result = Some(ExitStatus::from_raw(sig & 0x7f)),
            Ok(Status::Started(_)) | Err(_) => {}
        }
    }
    result.ok_or_else(|| SandboxError::HelperDied {
        exe: spec.helper_exe.clone(),
        status: helper.to_string(),
    })
}

fn classify(msg: String) -> SandboxError {
    SandboxError::Setup(msg)
}

/// Read stdout, stderr and the status pipe until all three are closed.
fn pump(
    stdout: OwnedFd,
    stderr: OwnedFd,
    status: OwnedFd,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
    on_status: &mut dyn FnMut(&[u8]),
) -> Result<Vec<u8>> {
    let mut seen = 0;
    let mut files: [Option<std::fs::File>; 3] = [
        Some(stdout.into()),
        Some(stderr.into()),
        Some(status.into()),
    ];
    let mut status_bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while files.iter().any(Option::is_some) {
        let mut fds: Vec<libc::pollfd> = files
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: polling a valid array of pollfd (negative fds are ignored).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(SandboxError::sys("waiting for step output", e));
        }
        for (i, pfd) in fds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let Some(file) = files[i].as_mut() else {
                continue;
            };
            match file.read(&mut buf) {
                Ok(0) => files[i] = None,
                Ok(k) => match i {
                    0 => on_output(OutputStream::Stdout, &buf[..k]),
                    1 => on_output(OutputStream::Stderr, &buf[..k]),
                    _ => {
                        status_bytes.extend_from_slice(&buf[..k]);
                        while let Some(nl) = status_bytes[seen..].iter().position(|&b| b == b'\n') {
                            on_status(&status_bytes[seen..seen + nl]);
                            seen += nl + 1;
                        }
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SandboxError::sys("reading step output", e)),
            }
        }
    }
    Ok(status_bytes)
}

fn absolute(what: &str, p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p)
        .map_err(|e| SandboxError::InvalidSpec(format!("{what} {}: {e}", p.display())))
}

/// Validate the spec and make every host path absolute and symlink-free: the
/// helper reaches them through its old root, where absolute symlinks would
/// point at the wrong tree.
/// Docker's profile compiled for `caps`, once per capability set and
/// process: compiling it costs ~15 ms, which a build would otherwise pay
/// in every RUN step's helper.
fn cached_seccomp_bpf(caps: &[u32]) -> Result<Vec<u8>> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CACHE: Mutex<Option<HashMap<Vec<u32>, Vec<u8>>>> = Mutex::new(None);
    let mut key = caps.to_vec();
    key.sort_unstable();
    key.dedup();
    let mut cache = CACHE.lock().expect("seccomp cache lock");
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(bpf) = cache.get(&key) {
        return Ok(bpf.clone());
    }
    let bpf = crate::compile_seccomp(caps)?;
    cache.insert(key, bpf.clone());
    Ok(bpf)
}

fn checked(spec: &RunSpec) -> Result<RunSpec> {
    let mut s = spec.clone();
    if s.args.is_empty() {
        return Err(SandboxError::InvalidSpec(
            "no command to run (args is empty)".into(),
        ));
    }
    if !s.cwd.is_absolute() {
        return Err(SandboxError::InvalidSpec(format!(
            "the working directory must be absolute, got {}",
            s.cwd.display()
        )));
    }
    if s.hostname.is_empty() || s.hostname.len() > 64 {
        return Err(SandboxError::InvalidSpec(format!(
            "invalid hostname {:?}",
            s.hostname
        )));
    }
    s.rootfs = match &s.rootfs {
        Rootfs::Overlay {
            lowers,
            upper,
            work,
        } => Rootfs::Overlay {
            lowers: lowers
                .iter()
                .map(|l| absolute("lower layer", l))
                .collect::<Result<_>>()?,
            upper: absolute("upper directory", upper)?,
            work: absolute("work directory", work)?,
        },
        Rootfs::Dir(d) => Rootfs::Dir(absolute("root directory", d)?),
    };
    let ns = NamespaceInfo::current().ok();
    let mut ids = vec![(s.uid, s.gid)];
    for m in &mut s.mounts {
        if !m.target.is_absolute() {
            return Err(SandboxError::InvalidSpec(format!(
                "mount target {} must be absolute",
                m.target.display()
            )));
        }
        match &mut m.kind {
            MountKind::Bind { source, .. }
            | MountKind::BindOverlay { source }
            | MountKind::Socket { source } => *source = absolute("mount source", source)?,
            MountKind::File { uid, gid, .. } => ids.push((*uid, *gid)),
            MountKind::Tmpfs { .. } => {}
        }
    }
    if let Some(ns) = ns {
        for (uid, gid) in ids {
            ns.check_ids(uid, gid)?;
        }
        for &g in &s.additional_gids {
            ns.check_ids(0, g)?;
        }
    }
    if s.helper_exe.as_os_str().is_empty() {
        s.helper_exe = PathBuf::from("/proc/self/exe");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_specs_before_starting_anything() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = Rootfs::Dir(dir.path().to_path_buf());
        let mut spec = RunSpec::new(rootfs.clone(), vec![]);
        assert!(checked(&spec)
            .unwrap_err()
            .to_string()
            .contains("args is empty"));
        spec.args = vec!["true".into()];
        spec.cwd = "rel".into();
        assert!(checked(&spec)
            .unwrap_err()
            .to_string()
            .contains("must be absolute"));
        spec.cwd = "/".into();
        spec.rootfs = Rootfs::Dir("/nonexistent/berth-root".into());
        let err = checked(&spec).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/berth-root"), "{err}");
        spec.rootfs = rootfs;
        spec.mounts.push(crate::Mount {
            target: "relative".into(),
            kind: MountKind::Tmpfs { size: None },
        });
        assert!(checked(&spec)
            .unwrap_err()
            .to_string()
            .contains("mount target relative"));
    }
}
