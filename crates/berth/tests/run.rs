//! `berth run` and friends end to end, as the invoking user (root here) and
//! as the unprivileged user `berth` (rootless, subordinate ids mapped):
//! exit codes, detached containers with `ps`/`logs`/`inspect`/`stop`/`rm`,
//! `exec` in the container's namespaces, `cp` both ways (confined to the
//! container's root), `--rm`, a supervisor killed with SIGKILL, and that
//! nothing is left behind (processes, mounts, state files).
//!
//! The image is a busybox-static rootfs `berth import`ed into a fresh root
//! per test; nothing needs the network.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

struct Env {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    run: PathBuf,
    user: Option<(u32, u32)>,
}

impl Env {
    fn new(user: Option<(u32, u32)>) -> Env {
        let (tmp, work) = common::work_dir("berth-run-test.", user);
        let env = Env {
            root: work.join("root"),
            run: work.join("run"),
            work,
            _tmp: tmp,
            user,
        };
        ok(&env.berth(&["import", "busybox-rootfs.tar", "bb:1"]));
        env
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.work)
            .env("BERTH_RUNTIME_DIR", &self.run)
            .env("HOME", &self.work)
            .env_remove("BERTH_ROOT")
            .env_remove("BERTH_LOG")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Hands a path the test made to the user berth runs as.
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.work.join(rel);
        std::fs::create_dir_all(&p).unwrap();
        self.give(&p);
        p
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.work.join(rel);
        std::fs::write(&p, text).unwrap();
        self.give(&p);
        p
    }

    fn inspect(&self, name: &str) -> Value {
        let out = ok(&self.berth(&["inspect", name]));
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    fn state_files(&self) -> Vec<String> {
        match std::fs::read_dir(&self.run) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn container_dirs(&self) -> Vec<String> {
        match std::fs::read_dir(self.root.join("containers")) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Nothing of any container is left: no process whose command line
    /// has `marker`, no mount under the test's directory, no state file,
    /// no container directory, no name.
    fn assert_clean(&self, marker: &str) {
        assert_eq!(
            processes_with(marker),
            Vec::<String>::new(),
            "stray processes"
        );
        let work = self.work.to_string_lossy().into_owned();
        for pid in ["self".to_string(), "1".to_string()] {
            let mounts =
                std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
            let stray: Vec<&str> = mounts.lines().filter(|l| l.contains(&work)).collect();
            assert!(stray.is_empty(), "stray mounts: {stray:?}");
        }
        assert_eq!(self.state_files(), Vec::<String>::new(), "state files left");
        assert_eq!(
            self.container_dirs(),
            Vec::<String>::new(),
            "containers left"
        );
        let names = std::fs::read_dir(self.root.join("container-names"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(names, 0, "names left");
    }
}

/// A failed test must not leave containers running: remove every one.
impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Ok(out) = self.command(&["ps", "-aq", "--no-trunc"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self.command(&["rm", "-f", id]).output();
            }
        }
    }
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "berth failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Live (not zombie) processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !zombie && cmdline.contains(marker) {
            out.push(format!("{name}: {cmdline}"));
        }
    }
    out
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn marker() -> String {
    format!(
        "berth-test-marker-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// The same test as the invoking user and as user `berth` (rootless).
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn as_invoker() {
                super::$name(&super::Env::new(None));
            }

            #[test]
            fn rootless() {
                if let Some(user) = super::common::rootless_user() {
                    super::$name(&super::Env::new(Some(user)));
                }
            }
        }
    };
}

fn exit_codes(env: &Env) {
    // Unique: the other variant of this test runs at the same time.
    let missing = format!("no-such-command-{}", marker());
    let out = env.berth(&[
        "run",
        "--rm",
        "bb:1",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert!(stderr(&out).contains("err\n"), "{}", stderr(&out));

    let out = env.berth(&["run", "--rm", "bb:1", &missing]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(stderr(&out).contains(&missing), "{}", stderr(&out));

    let out = env.berth(&["run", "--rm", "bb:1", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));

    let out = env.berth(&["run", "--rm", "missing-image:7", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("missing-image:7"), "{}", stderr(&out));

    // -d: the command cannot be found before anything runs: its code.
    let out = env.berth(&["run", "-d", "--rm", "bb:1", &missing]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));

    // Every container above was --rm.
    env.assert_clean(&missing);
}
both!(exit_codes);

fn detached_lifecycle(env: &Env) {
    let mark = marker();
    let script = format!(
        "echo started; trap 'echo bye; exit 0' TERM; while :; do /bin/busybox sleep 0.1; done # {mark}"
    );
    let out = env.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "--hostname",
        "box",
        "bb:1",
        "sh",
        "-c",
        &script,
    ]);
    let id = ok(&out).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    wait_until(
        "the container's first line",
        Duration::from_secs(10),
        || stdout(&env.berth(&["logs", "web"])) == "started\n",
    );

    // A name already in use.
    let out = env.berth(&["run", "-d", "--name", "web", "bb:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));

    let ps = ok(&env.berth(&["ps"]));
    assert!(
        ps.contains(&id[..12]) && ps.contains("web") && ps.contains("Up "),
        "{ps}"
    );
    let json: Value =
        serde_json::from_str(ok(&env.berth(&["ps", "--format", "json"])).trim()).unwrap();
    assert_eq!(json["Names"], "web");
    assert_eq!(json["State"], "running");
    assert_eq!(ok(&env.berth(&["ps", "-q"])).trim(), &id[..12]);

    let info = env.inspect("web");
    assert_eq!(info["Id"], id.as_str());
    assert_eq!(info["Name"], "/web");
    assert_eq!(info["State"]["Status"], "running");
    assert_eq!(info["State"]["Running"], true);
    let pid = info["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 1);
    assert_eq!(info["Config"]["Hostname"], "box");
    assert_eq!(info["Config"]["Image"], "bb:1");
    assert_eq!(info["Config"]["Cmd"][0], "sh");
    assert!(info["Image"].as_str().unwrap().starts_with("sha256:"));
    // The pid is the container's process on the host.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains(&mark));

    // exec: the container's pid namespace (its own processes only) and
    // uts namespace.
    let procs = ok(&env.berth(&["exec", "web", "/bin/busybox", "ps", "-o", "pid,args"]));
    let lines: Vec<&str> = procs.lines().skip(1).collect();
    assert!(
        lines
            .iter()
            .any(|l| l.trim().starts_with("1 ") && l.contains(&mark)),
        "{procs}"
    );
    assert!(lines.len() <= 4, "only the container's processes: {procs}");
    assert!(
        !procs.contains("cargo") && !procs.contains("process_api"),
        "{procs}"
    );
    assert_eq!(
        ok(&env.berth(&["exec", "web", "/bin/busybox", "hostname"])),
        "box\n"
    );
    let out = env.berth(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "-u",
        "app",
        "web",
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u); exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1 /tmp 1000\n");
    let out = env.berth(&["exec", "web", "no-such-tool"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));

    // stop: SIGTERM reaches the trap; the container exits 0.
    ok(&env.berth(&["stop", "-t", "5", "web"]));
    assert_eq!(stdout(&env.berth(&["logs", "web"])), "started\nbye\n");
    let ps = ok(&env.berth(&["ps", "-a"]));
    assert!(ps.contains("Exited (0)"), "{ps}");
    assert!(!ok(&env.berth(&["ps"])).contains("web"));
    assert_eq!(ok(&env.berth(&["wait", "web"])), "0\n");
    let info = env.inspect("web");
    assert_eq!(info["State"]["Status"], "exited");
    assert_eq!(info["State"]["ExitCode"], 0);
    assert!(processes_with(&mark).is_empty());

    // Restart it, then remove it running with -f.
    ok(&env.berth(&["start", "web"]));
    wait_until("the restarted container", Duration::from_secs(10), || {
        !processes_with(&mark).is_empty()
    });
    let out = env.berth(&["rm", "web"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Stop the container"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ok(&env.berth(&["rm", "-f", "web"])), "web\n");
    env.assert_clean(&mark);
    let out = env.berth(&["logs", "web"]);
    assert!(
        stderr(&out).contains("No such container: web"),
        "{}",
        stderr(&out)
    );
}
both!(detached_lifecycle);

fn logs_in_json_file_format(env: &Env) {
    let id = ok(&env.berth(&[
        "run",
        "-d",
        "bb:1",
        "sh",
        "-c",
        "echo a; echo b >&2; echo c",
    ]));
    let id = id.trim();
    assert_eq!(ok(&env.berth(&["wait", id])), "0\n");
    let out = env.berth(&["logs", id]);
    assert_eq!(stdout(&out), "a\nc\n");
    assert_eq!(stderr(&out), "b\n");
    let t = stdout(&env.berth(&["logs", "-t", id]));
    let first = t.lines().next().unwrap();
    assert!(first.ends_with("Z a") && first.starts_with("20"), "{t}");
    // Docker's json-file lines.
    let log =
        std::fs::read_to_string(env.root.join(format!("containers/{id}/{id}-json.log"))).unwrap();
    let entries: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 3);
    // stdout and stderr are separate pipes: only each stream's order is kept.
    let err: Vec<&Value> = entries.iter().filter(|e| e["stream"] == "stderr").collect();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0]["log"], "b\n");
    assert!(entries[0]["time"].as_str().unwrap().contains('T'));
    // -f returns when the container has ended.
    assert_eq!(stdout(&env.berth(&["logs", "-f", id])), "a\nc\n");
    let id2 = ok(&env.berth(&["run", "-d", "bb:1", "sh", "-c", "echo 1; echo 2; echo 3"]));
    let id2 = id2.trim();
    assert_eq!(ok(&env.berth(&["wait", id2])), "0\n");
    assert_eq!(stdout(&env.berth(&["logs", "--tail", "2", id2])), "2\n3\n");
    ok(&env.berth(&["rm", id2]));
    // A random Docker-style name.
    let info = env.inspect(id);
    let name = info["Name"].as_str().unwrap();
    assert!(name.starts_with('/') && name.contains('_'), "{name}");
    ok(&env.berth(&["rm", id]));
    env.assert_clean(id);
}
both!(logs_in_json_file_format);

fn supervisor_killed(env: &Env) {
    let mark = marker();
    let id = ok(&env.berth(&[
        "run",
        "-d",
        "--name",
        "victim",
        "bb:1",
        "sh",
        "-c",
        &format!("/bin/busybox sleep 1000 # {mark}"),
    ]));
    let id = id.trim();
    let state: Value =
        serde_json::from_slice(&std::fs::read(env.run.join(format!("{id}.json"))).unwrap())
            .unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap() as i32;
    assert!(sup > 1);
    // SAFETY: SIGKILL to the supervisor this test started.
    assert_eq!(unsafe { libc::kill(sup, libc::SIGKILL) }, 0);
    wait_until(
        "ps -a to show the container exited",
        Duration::from_secs(10),
        || ok(&env.berth(&["ps", "-a"])).contains("Exited (137)"),
    );
    wait_until(
        "the container's processes to end",
        Duration::from_secs(10),
        || processes_with(&mark).is_empty(),
    );
    assert!(!ok(&env.berth(&["ps"])).contains("victim"));
    assert_eq!(env.inspect("victim")["State"]["Running"], false);
    assert_eq!(ok(&env.berth(&["rm", "victim"])), "victim\n");
    env.assert_clean(&mark);
}
both!(supervisor_killed);

fn cp_both_ways(env: &Env) {
    // A created, never started container: docker cp alpine:/ rootfs.
    ok(&env.berth(&["create", "--name", "cr", "bb:1", "sh"]));
    ok(&env.berth(&["cp", "cr:/", "rootfs"]));
    let rootfs = env.work.join("rootfs");
    assert_eq!(
        std::fs::read(rootfs.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert!(std::fs::read_to_string(rootfs.join("etc/passwd"))
        .unwrap()
        .contains("app:x:1000"));
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    // DIR/. copies the contents; the files land in the container's root.
    env.mkdir("content/sub");
    env.write("content/one", "1\n");
    env.write("content/sub/two", "2\n");
    ok(&env.berth(&["cp", "content/.", "cr:/tmp"]));
    ok(&env.berth(&["cp", "cr:/tmp/sub/two", "two-back"]));
    assert_eq!(
        std::fs::read_to_string(env.work.join("two-back")).unwrap(),
        "2\n"
    );
    let out = env.berth(&["cp", "cr:/nope", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nope"), "{}", stderr(&out));
    // The container sees them once started.
    let out = env.berth(&["start", "-a", "cr"]);
    assert!(out.status.success(), "{}", stderr(&out));
    ok(&env.berth(&["rm", "cr"]));

    // A running container: in and out, and a symlink pointing out of the
    // root does not take the copy there.
    let mark = marker();
    ok(&env.berth(&[
        "run",
        "-d",
        "--name",
        "live",
        "bb:1",
        "sh",
        "-c",
        &format!("/bin/busybox sleep 1000 # {mark}"),
    ]));
    let outside = env.mkdir("outside");
    let link_target = outside.to_string_lossy().into_owned();
    ok(&env.berth(&[
        "exec",
        "live",
        "/bin/busybox",
        "ln",
        "-s",
        &link_target,
        "/tmp/evil",
    ]));
    env.write("payload", "p\n");
    let _ = env.berth(&["cp", "payload", "live:/tmp/evil/"]);
    ok(&env.berth(&["cp", "payload", "live:/tmp/evil2"]));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "cp wrote outside the root"
    );
    assert_eq!(
        ok(&env.berth(&["exec", "live", "cat", "/tmp/evil2"])),
        "p\n"
    );
    let ls = ok(&env.berth(&["exec", "live", "ls", "-ln", "/tmp/evil2"]));
    assert!(ls.contains(" 0 "), "owned by the container's root: {ls}");
    ok(&env.berth(&["cp", "live:/etc/passwd", "passwd-back"]));
    assert!(std::fs::read_to_string(env.work.join("passwd-back"))
        .unwrap()
        .starts_with("root:"));
    ok(&env.berth(&["rm", "-f", "live"]));
    env.assert_clean(&mark);
}
both!(cp_both_ways);

fn flags_reach_the_process(env: &Env) {
    let data = env.mkdir("data");
    env.write("data/file", "from the host\n");
    env.write("env.list", "# comment\nFROM_FILE=yes\n");
    let vol = format!("{}:/data:ro", data.display());
    let out = env.berth(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "--env-file",
        "env.list",
        "-w",
        "/made/here",
        "-u",
        "app",
        "-v",
        &vol,
        "bb:1",
        "sh",
        "-c",
        "echo $FOO $FROM_FILE $(pwd) $(id -u) $HOSTNAME; cat /data/file; touch /data/x || echo ro",
    ]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    let first: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(&first[..4], ["bar", "yes", "/made/here", "1000"], "{text}");
    assert_eq!(first[4].len(), 12, "default hostname = short id: {text}");
    assert_eq!(lines[1], "from the host");
    assert_eq!(lines[2], "ro");
    assert!(!data.join("x").exists());

    let out = env.berth(&[
        "run",
        "--rm",
        "--read-only",
        "bb:1",
        "sh",
        "-c",
        "touch /x || echo refused",
    ]);
    assert_eq!(ok(&out), "refused\n");
    // Confined like a Docker container: seccomp filter mode, no_new_privs
    // (the program is precompiled and cached in the root: twice the same).
    for _ in 0..2 {
        let out = env.berth(&["run", "--rm", "bb:1", "cat", "/proc/self/status"]);
        let status = ok(&out);
        assert!(status.contains("Seccomp:\t2"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }
    let out = env.berth(&["run", "--rm", "--entrypoint", "echo", "bb:1", "a", "b"]);
    assert_eq!(ok(&out), "a b\n");
    let out = env.berth(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb:1",
        "cat",
        "/etc/hostname",
    ]);
    assert_eq!(ok(&out).trim().len(), 12);
    let out = env.berth(&["run", "--rm", "-v", "/no/such/dir:/x", "bb:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("/no/such/dir"), "{}", stderr(&out));
    let out = env.berth(&["run", "--rm", "--memory", "64m", "bb:1", "true"]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("NOT enforced"), "{}", stderr(&out));
    env.assert_clean("no-marker-needed-here");
}
both!(flags_reach_the_process);

/// One HTTP GET over a plain TCP connection; the response body.
fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

fn published_ports(env: &Env) {
    let mark = marker();
    let port = common::free_port();
    let spec = format!("127.0.0.1:{port}:8080");
    let script = format!(
        "mkdir -p /{mark} && echo hello-from-the-container > /{mark}/index.html && exec /bin/busybox httpd -f -p 8080 -h /{mark}"
    );
    ok(&env.berth(&[
        "run", "-d", "--name", "srv", "-p", &spec, "bb:1", "sh", "-c", &script,
    ]));
    let mut body = None;
    wait_until(
        "the published port to answer",
        Duration::from_secs(10),
        || {
            body = http_get(port);
            body.is_some()
        },
    );
    assert_eq!(body.unwrap(), "hello-from-the-container\n");
    let ps = ok(&env.berth(&["ps"]));
    assert!(ps.contains(&format!("127.0.0.1:{port}->8080/tcp")), "{ps}");
    let info = env.inspect("srv");
    assert_eq!(
        info["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"],
        port.to_string()
    );
    // The port is taken now: a clear error, exit 125, nothing running.
    let out = env.berth(&["run", "-d", "--name", "second", "-p", &spec, "bb:1", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("already allocated"),
        "{}",
        stderr(&out)
    );
    ok(&env.berth(&["rm", "second"]));
    if env.user.is_some() {
        // A privileged port as an ordinary user.
        let out = env.berth(&["run", "--rm", "-p", "127.0.0.1:81:80", "bb:1", "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(stderr(&out).contains("81"), "{}", stderr(&out));
    }
    ok(&env.berth(&["rm", "-f", "srv"]));
    assert!(http_get(port).is_none(), "the forwarder is gone");
    env.assert_clean(&mark);
}
both!(published_ports);

fn shared_namespaces(env: &Env) {
    let mark = marker();
    let script = format!(
        "mkdir -p /{mark} && echo shared-loopback > /{mark}/index.html && exec /bin/busybox httpd -f -p 8080 -h /{mark}"
    );
    ok(&env.berth(&[
        "run",
        "-d",
        "--name",
        "nginx",
        "--network",
        "none",
        "bb:1",
        "sh",
        "-c",
        &script,
    ]));
    // The other container's loopback port, through its network namespace.
    let mut body = String::new();
    wait_until("the shared loopback port", Duration::from_secs(10), || {
        let out = env.berth(&[
            "run",
            "--rm",
            "--net",
            "container:nginx",
            "bb:1",
            "/bin/busybox",
            "wget",
            "-qO-",
            "http://127.0.0.1:8080/",
        ]);
        body = stdout(&out);
        out.status.success()
    });
    assert_eq!(body, "shared-loopback\n");
    // Its processes, through its pid namespace.
    let out = env.berth(&[
        "run",
        "--rm",
        "--net",
        "container:nginx",
        "--pid",
        "container:nginx",
        "bb:1",
        "/bin/busybox",
        "ps",
        "-o",
        "pid,args",
    ]);
    let procs = ok(&out);
    assert!(
        procs
            .lines()
            .any(|l| l.trim().starts_with("1 ") && l.contains(&mark)),
        "{procs}"
    );
    let info =
        env.inspect(ok(&env.berth(&["create", "--pid", "container:nginx", "bb:1", "true"])).trim());
    assert!(info["HostConfig"]["PidMode"]
        .as_str()
        .unwrap()
        .starts_with("container:"));
    ok(&env.berth(&["rm", info["Id"].as_str().unwrap()]));
    let out = env.berth(&[
        "run",
        "--rm",
        "--net",
        "container:no-such-ctr",
        "bb:1",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no-such-ctr"), "{}", stderr(&out));
    ok(&env.berth(&["rm", "-f", "nginx"]));
    env.assert_clean(&mark);
}
both!(shared_namespaces);

fn attached_run_forwards_signals(env: &Env) {
    let mark = marker();
    let script = format!(
        "trap 'echo got-term; exit 7' TERM; echo ready; while :; do /bin/busybox sleep 0.1; done # {mark}"
    );
    let mut child = env
        .command(&["run", "--rm", "bb:1", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    // Read in a thread: a container left running would hold the pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20));
    // SAFETY: signalling the berth process this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let second = rx.recv_timeout(Duration::from_secs(5));
    if status.is_none() || second.as_deref() != Ok("got-term") {
        let _ = child.kill();
        for c in ok(&env.berth(&["ps", "-aq"])).lines() {
            let _ = env.berth(&["rm", "-f", c]);
        }
    }
    assert_eq!(first.as_deref(), Ok("ready"));
    assert_eq!(second.as_deref(), Ok("got-term"));
    assert_eq!(status.and_then(|s| s.code()), Some(7));
    env.assert_clean(&mark);
}
both!(attached_run_forwards_signals);
