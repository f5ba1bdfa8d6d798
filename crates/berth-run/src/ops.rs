//! `ps`, `stop`, `kill`, `rm`, `wait`, `inspect`, `logs`: everything that
//! reads or ends a container through its state.

use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::container::{Container, State, Status};
use crate::{logs, time, Error, Paths, Result};

const POLL: Duration = Duration::from_millis(20);

fn send(pid: u32, sig: i32) -> Result<()> {
    // SAFETY: kill with a pid and a signal number.
    if pid == 0 || unsafe { libc::kill(pid as libc::pid_t, sig) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(Error::io(
        format!("sending signal {sig} to process {pid}"),
        e,
    ))
}

/// Polls until the container is no longer running; `false` on timeout.
fn wait_stopped(paths: &Paths, c: &Container, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if c.state(paths).status != Status::Running {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// The state of a running container with its process's pid (waiting a
/// moment for a container whose supervisor is still starting it).
fn running_pid(paths: &Paths, c: &Container) -> Option<(State, u32)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = c.state(paths);
        if st.status != Status::Running {
            return None;
        }
        if st.pid != 0 {
            let pid = st.pid;
            return Some((st, pid));
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

/// `docker kill -s SIG`.
pub fn kill(paths: &Paths, c: &Container, sig: i32) -> Result<()> {
    let (_, pid) = running_pid(paths, c)
        .ok_or_else(|| Error::Conflict(format!("container {} is not running", c.name)))?;
    send(pid, sig)
}

/// `docker stop -t N`: the image's StopSignal (SIGTERM by default), then
/// SIGKILL after `timeout`. Stopping a stopped container is not an error.
pub fn stop(paths: &Paths, c: &Container, timeout: Duration) -> Result<()> {
    let Some((_, pid)) = running_pid(paths, c) else {
        return Ok(());
    };
    send(pid, c.stop_signal)?;
    if wait_stopped(paths, c, timeout) {
        return Ok(());
    }
    send(pid, libc::SIGKILL)?;
    if wait_stopped(paths, c, Duration::from_secs(10)) {
        return Ok(());
    }
    Err(Error::Failed(format!(
        "container {} did not stop after SIGKILL",
        c.name
    )))
}

/// The first half of `rm`, run outside berth's build namespace: a running
/// container is refused, or (`force`) killed with its supervisor.
pub fn prepare_remove(paths: &Paths, c: &Container, force: bool) -> Result<()> {
    let st = c.state(paths);
    if st.status != Status::Running {
        return Ok(());
    }
    if !force {
        return Err(Error::Conflict(format!(
            "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
            c.id
        )));
    }
    send(st.pid, libc::SIGKILL)?;
    if !wait_stopped(paths, c, Duration::from_secs(10)) {
        // Its helper and the container die with it (PDEATHSIG).
        send(st.supervisor_pid, libc::SIGKILL)?;
    }
    // The supervisor writes the final state and exits right after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while st.supervisor_alive() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// The second half of `rm` (and `--rm`): the container's directory, name
/// and state file. Rootless, run it in berth's build namespace (the upper
/// directory holds files of the mapped ids).
pub fn remove_files(paths: &Paths, c: &Container) -> Result<()> {
    let dir = paths.dir(&c.id);
    // The config goes first: a half-removed container is not listed.
    let _ = fs::remove_file(dir.join("config.json"));
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
    }
    let link = paths.name_link(&c.name);
    if fs::read_link(&link).is_ok_and(|t| t.as_os_str() == c.id.as_str()) {
        let _ = fs::remove_file(&link);
    }
    match fs::remove_file(paths.state_file(&c.id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing the state file", e)),
    }
}

/// `docker wait`: blocks until the container is not running; its exit code.
pub fn wait(paths: &Paths, c: &Container) -> Result<i32> {
    loop {
        let st = c.state(paths);
        if st.status != Status::Running {
            return Ok(st.exit_code);
        }
        if !paths.dir(&c.id).exists() {
            // Removed (--rm) while we waited.
            return Ok(st.exit_code);
        }
        std::thread::sleep(POLL);
    }
}

/// `Up 3 seconds`, `Exited (0) 2 minutes ago`, `Created`.
pub fn status_text(st: &State) -> String {
    match st.status {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", time::human(st.started_ns)),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            st.exit_code,
            time::human(st.finished_ns)
        ),
    }
}

fn quote_command(args: &[String]) -> String {
    let s = args.join(" ");
    if s.chars().count() > 20 {
        format!("\"{}…\"", s.chars().take(19).collect::<String>())
    } else {
        format!("\"{s}\"")
    }
}

/// One row of `docker ps`, with Docker's `--format json` keys.
pub fn ps_row(paths: &Paths, c: &Container) -> Value {
    let st = c.state(paths);
    json!({
        "ID": c.short_id(),
        "Image": c.image,
        "Command": quote_command(&c.args),
        "CreatedAt": time::rfc3339(c.created_ns),
        "RunningFor": format!("{} ago", time::human(c.created_ns)),
        "Status": status_text(&st),
        "State": st.status.as_str(),
        "Ports": st.ports.iter().map(|p| p.show()).collect::<Vec<_>>().join(", "),
        "Names": c.name,
        "Labels": c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Mounts": c.binds.iter().map(|b| b.source.display().to_string()).collect::<Vec<_>>().join(","),
        "Networks": c.network_requested,
    })
}

/// Docker's `{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`.
fn port_bindings(ports: &[crate::container::PortMap]) -> Value {
    let mut m = serde_json::Map::new();
    for p in ports {
        let e = m
            .entry(format!("{}/tcp", p.container_port))
            .or_insert_with(|| json!([]));
        if let Value::Array(a) = e {
            a.push(json!({"HostIp": p.host_ip, "HostPort": p.host_port.to_string()}));
        }
    }
    Value::Object(m)
}

fn null_if_empty(v: &[String]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        json!(v)
    }
}

/// `docker inspect`'s object for a container (the main fields).
pub fn inspect(paths: &Paths, c: &Container) -> Value {
    let st = c.state(paths);
    let binds: Vec<String> = c
        .binds
        .iter()
        .map(|b| {
            let mut s = format!("{}:{}", b.source.display(), b.target.display());
            if b.readonly {
                s.push_str(":ro");
            }
            s
        })
        .collect();
    let mounts: Vec<Value> = c
        .binds
        .iter()
        .map(|b| {
            json!({
                "Type": "bind",
                "Source": b.source,
                "Destination": b.target,
                "Mode": if b.readonly { "ro" } else { "" },
                "RW": !b.readonly,
                "Propagation": "rprivate",
            })
        })
        .collect();
    json!({
        "Id": c.id,
        "Created": time::rfc3339(c.created_ns),
        "Path": c.args.first().cloned().unwrap_or_default(),
        "Args": c.args.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": st.status.as_str(),
            "Running": st.status == Status::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": false,
            "Pid": st.pid,
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": time::rfc3339(st.started_ns),
            "FinishedAt": time::rfc3339(st.finished_ns),
        },
        "Image": c.image_id,
        "LogPath": paths.log_file(&c.id),
        "Name": format!("/{}", c.name),
        "RestartCount": 0,
        "Driver": if c.overlay { "overlay" } else { "vfs" },
        "Platform": "linux",
        "HostConfig": {
            "Binds": if binds.is_empty() { Value::Null } else { json!(binds) },
            "NetworkMode": match &c.join_net {
                Some(id) => format!("container:{id}"),
                None => c.network_requested.clone(),
            },
            "PidMode": c.join_pid.as_ref().map(|id| format!("container:{id}")).unwrap_or_default(),
            "AutoRemove": c.auto_remove,
            "ReadonlyRootfs": c.readonly_rootfs,
            "LogConfig": { "Type": "json-file", "Config": {} },
            "PortBindings": port_bindings(&c.ports),
            "Privileged": false,
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": c.hostname,
            "Domainname": "",
            "User": c.user,
            "AttachStdin": false,
            "AttachStdout": false,
            "AttachStderr": false,
            "Tty": false,
            "OpenStdin": false,
            "Env": c.env,
            "Cmd": null_if_empty(&c.cmd),
            "Image": c.image,
            "WorkingDir": if c.working_dir == "/" { String::new() } else { c.working_dir.clone() },
            "Entrypoint": null_if_empty(&c.entrypoint),
            "Labels": c.labels,
            "StopSignal": crate::signals::name(c.stop_signal),
        },
        "NetworkSettings": {
            "Networks": {},
            "Ports": port_bindings(&st.ports),
        },
    })
}

/// `docker logs [-f] [--tail N] [-t]`: the log's lines to stdout and stderr.
pub fn logs(
    paths: &Paths,
    c: &Container,
    follow: bool,
    tail: Option<usize>,
    timestamps: bool,
) -> Result<()> {
    let path = paths.log_file(&c.id);
    let (mut entries, mut offset) = read_log(&path, 0)?;
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    print_entries(&entries, timestamps);
    if !follow {
        return Ok(());
    }
    loop {
        let running = c.state(paths).status == Status::Running;
        let (more, next) = read_log(&path, offset)?;
        offset = next;
        print_entries(&more, timestamps);
        if more.is_empty() {
            if !running || !path.exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_log(path: &Path, from: u64) -> Result<(Vec<logs::Entry>, u64)> {
    match logs::read_from(path, from) {
        Ok(r) => Ok(r),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((Vec::new(), from)),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

fn print_entries(entries: &[logs::Entry], timestamps: bool) {
    let (mut out, mut err) = (io::stdout().lock(), io::stderr().lock());
    for e in entries {
        let w: &mut dyn Write = if e.stream == "stderr" {
            &mut err
        } else {
            &mut out
        };
        if timestamps {
            let _ = write!(w, "{} ", e.time);
        }
        let _ = w.write_all(e.log.as_bytes());
    }
    let _ = out.flush();
    let _ = err.flush();
}
