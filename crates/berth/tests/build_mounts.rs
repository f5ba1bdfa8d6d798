//! `RUN --mount` end to end: cache mounts (persistence, no layer, owner and
//! mode, locked/private sharing), bind mounts (context, stage, `rw`,
//! `.dockerignore`, content-sensitive cache), tmpfs, secrets (the seed's
//! demo verbatim, env secrets, required/optional, and a search of every
//! file under the root for the value) and SSH forwarding (the seed's demo
//! with a real `ssh-agent` and `ssh-add -l` inside the step, and key files
//! served by a private agent). The main scenarios run as the unprivileged
//! user `berth` too.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

struct Env {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    user: Option<(u32, u32)>,
}

impl Env {
    fn new() -> Env {
        Env::with_user(None)
    }

    fn rootless() -> Option<Env> {
        common::rootless_user().map(|user| Env::with_user(Some(user)))
    }

    fn with_user(user: Option<(u32, u32)>) -> Env {
        let (tmp, work) = common::work_dir("berth-mounts-test.", user);
        let env = Env {
            root: work.join("root"),
            work,
            _tmp: tmp,
            user,
        };
        ok(env.berth(&["import", "busybox-rootfs.tar", "base:1"], &[]));
        env
    }

    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    fn command(&self, program: &str, dir: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir)
            .env("HOME", &self.work)
            .env("DOCKER_CONFIG", self.work.join("docker-config"))
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("BERTH_ROOT")
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn berth_in(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_berth"), dir);
        cmd.arg("--root").arg(&self.root).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn berth(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.berth_in(&self.work, args, env)
    }

    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.work.join(name);
        self.mkdir(&dir);
        for (path, text) in files {
            let p = dir.join(path);
            self.mkdir(p.parent().unwrap());
            std::fs::write(&p, text).unwrap();
            self.give(&p);
        }
        dir
    }

    fn mkdir(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let mut d = dir;
        while d.starts_with(&self.work) && d != self.work {
            self.give(d);
            d = d.parent().unwrap();
        }
    }

    /// `berth build --progress plain ARGS CONTEXT` with the final
    /// filesystem written to a fresh directory (returned).
    fn build(&self, ctx: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, PathBuf) {
        let out_dir = self.work.join(format!("fs-{}", unique()));
        let dest = format!("type=local,dest={}", out_dir.display());
        let mut all = vec!["build", "--progress", "plain", "-o", &dest];
        all.extend_from_slice(args);
        let c = ctx.to_str().unwrap();
        all.push(c);
        (self.berth(&all, env), out_dir)
    }

    /// Every file under the root, with gzip blobs decompressed too.
    fn assert_nowhere_in_root(&self, needle: &[u8]) {
        let mut stack = vec![self.root.clone()];
        let mut checked = 0;
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    stack.push(e.path());
                    continue;
                }
                if !ft.is_file() {
                    continue;
                }
                let Ok(data) = std::fs::read(e.path()) else {
                    continue;
                };
                checked += 1;
                assert!(
                    !contains(&data, needle),
                    "the secret is in {}",
                    e.path().display()
                );
                if data.starts_with(&[0x1f, 0x8b]) {
                    let plain = gunzip(&data);
                    assert!(
                        !contains(&plain, needle),
                        "the secret is in the decompressed {}",
                        e.path().display()
                    );
                }
            }
        }
        assert!(checked > 10, "searched only {checked} files");
    }
}

/// `gzip -dc` of a blob (layers are concatenated gzip members).
fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let mut plain = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    let _ = writer.join();
    let _ = child.wait();
    plain
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded unexpectedly:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn read(dir: &Path, path: &str) -> String {
    std::fs::read_to_string(dir.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path} in the image: {e}"))
}

/// How many RUN steps executed (`DONE`) in a plain progress log.
fn runs(log: &str) -> usize {
    let mut started = std::collections::BTreeMap::new();
    let mut done = 0;
    for line in log.lines() {
        let Some((id, text)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if !started.contains_key(id) {
            started.insert(id.to_string(), text.contains("] RUN "));
        } else if text.starts_with("DONE") && started[id] {
            done += 1;
        }
    }
    done
}

fn cache_scenario(env: &Env) {
    let ctx = env.context(
        "cache",
        &[(
            "Dockerfile",
            "FROM base:1 AS seed\nRUN mkdir /seed && echo seeded > /seed/f\n\
             FROM base:1\nARG N\n\
             RUN --mount=type=cache,target=/s,from=seed,source=/seed cat /s/f > /seeded\n\
             RUN --mount=type=cache,target=/cro,ro sh -c 'if touch /cro/x 2>/dev/null; then echo writable; else echo readonly; fi > /cro-state'\n\
             RUN --mount=type=cache,target=/cache sh -c 'echo run-$N >> /cache/log; wc -l < /cache/log > /count; echo cachemarker-$N-xyz > /cache/big'\n\
             RUN --mount=type=cache,target=/c2,uid=1000,gid=1000,mode=0700 stat -c '%u:%g:%a' /c2 > /owner\n\
             RUN --mount=type=cache,id=shared-id,target=/var/x sh -c 'cat /var/x/from-other 2>/dev/null > /seen; echo $N > /var/x/from-other'\n",
        )],
    );
    let (out, fs1) = env.build(&ctx, &["--build-arg", "N=1"], &[]);
    ok(out);
    assert_eq!(read(&fs1, "/count").trim(), "1");
    assert_eq!(read(&fs1, "/owner").trim(), "1000:1000:700");
    assert_eq!(
        read(&fs1, "/seeded").trim(),
        "seeded",
        "from= seeds a new cache"
    );
    assert_eq!(read(&fs1, "/cro-state").trim(), "readonly");
    assert!(
        !fs1.join("cache").exists(),
        "the mount point is not left in the image"
    );
    let (out, fs2) = env.build(&ctx, &["--build-arg", "N=2"], &[]);
    let log = ok(out);
    // The cache kept the first build's contents.
    assert_eq!(read(&fs2, "/count").trim(), "2", "{log}");
    assert_eq!(read(&fs2, "/seen").trim(), "1");
    // Same build arg again: every step cached, no RUN.
    let (out, _) = env.build(&ctx, &["--build-arg", "N=2"], &[]);
    assert_eq!(runs(&ok(out)), 0);
    // The cache's contents are in no layer or record.
    env.assert_nowhere_in_root_except_cachemounts(b"cachemarker-2-xyz");
}

impl Env {
    fn assert_nowhere_in_root_except_cachemounts(&self, needle: &[u8]) {
        // The cache directory itself holds it, of course; move it aside.
        let aside = self.work.join("cachemounts-aside");
        std::fs::rename(self.root.join("cachemounts"), &aside).unwrap();
        self.assert_nowhere_in_root(needle);
        std::fs::rename(&aside, self.root.join("cachemounts")).unwrap();
    }
}

#[test]
fn cache_mounts_persist_and_stay_out_of_layers() {
    cache_scenario(&Env::new());
}

#[test]
fn cache_mounts_rootless() {
    if let Some(env) = Env::rootless() {
        cache_scenario(&env);
    }
}

#[test]
fn cache_mount_sharing_locked_and_private() {
    let env = Env::new();
    let stage = |name: &str, sharing: &str| {
        format!(
            "FROM base:1 AS {name}\nRUN --mount=type=cache,id=s-{sharing},target=/c,sharing={sharing} sh -c 'touch /c/busy-{name}; sleep 1; ls /c > /seen; rm /c/busy-{name}'\n"
        )
    };
    let mut df = String::new();
    for (n, s) in [
        ("la", "locked"),
        ("lb", "locked"),
        ("pa", "private"),
        ("pb", "private"),
    ] {
        df.push_str(&stage(n, s));
    }
    df.push_str("FROM base:1\n");
    for n in ["la", "lb", "pa", "pb"] {
        df.push_str(&format!("COPY --from={n} /seen /seen-{n}\n"));
    }
    let ctx = env.context("sharing", &[("Dockerfile", &df)]);
    let (out, fs) = env.build(&ctx, &[], &[]);
    ok(out);
    for n in ["la", "lb", "pa", "pb"] {
        let seen = read(&fs, &format!("/seen-{n}"));
        assert_eq!(
            seen.trim(),
            format!("busy-{n}"),
            "stage {n} saw another user of its cache"
        );
    }
}

fn bind_scenario(env: &Env) {
    let ctx = env.context(
        "bind",
        &[
            (
                "Dockerfile",
                "FROM base:1 AS build\nRUN mkdir /out && echo built > /out/artifact\n\
                 FROM base:1\n\
                 RUN --mount=type=bind,source=data,target=/src cat /src/file > /from-context\n\
                 RUN --mount=type=bind,from=build,source=/out,target=/o cat /o/artifact > /from-stage\n\
                 RUN --mount=target=/ctx,rw sh -c 'echo x > /ctx/new && rm /ctx/data/file && test ! -e /ctx/data/ignored && echo rw-ok > /rw'\n\
                 RUN --mount=type=bind,source=data,target=/ro sh -c 'if touch /ro/x 2>/dev/null; then echo writable; else echo readonly; fi > /ro-state'\n\
                 RUN --mount=type=tmpfs,target=/t,size=1m sh -c 'echo hi > /t/f && /bin/busybox grep \" /t \" /proc/mounts > /tmpfs'\n",
            ),
            ("data/file", "v1\n"),
            ("data/ignored", "never\n"),
            (".dockerignore", "data/ignored\n"),
        ],
    );
    let (out, fs) = env.build(&ctx, &[], &[]);
    ok(out);
    assert_eq!(read(&fs, "/from-context"), "v1\n");
    assert_eq!(read(&fs, "/from-stage"), "built\n");
    assert_eq!(read(&fs, "/rw"), "rw-ok\n");
    assert_eq!(read(&fs, "/ro-state"), "readonly\n");
    let tmpfs = read(&fs, "/tmpfs");
    assert!(
        tmpfs.contains("tmpfs") && tmpfs.contains("size=1024k"),
        "{tmpfs}"
    );
    for p in ["src", "o", "ctx", "ro", "t"] {
        assert!(!fs.join(p).exists(), "/{p} stayed in the image");
    }
    // rw writes are discarded, the context is untouched.
    assert!(!ctx.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(ctx.join("data/file")).unwrap(),
        "v1\n"
    );
    // Unchanged: all cached. The bound content changes: the RUNs binding it rerun.
    let (out, _) = env.build(&ctx, &[], &[]);
    assert_eq!(runs(&ok(out)), 0);
    std::fs::write(ctx.join("data/ignored"), "changed but ignored\n").unwrap();
    let (out, _) = env.build(&ctx, &[], &[]);
    assert_eq!(runs(&ok(out)), 0, "an ignored file is not part of the key");
    std::fs::write(ctx.join("data/file"), "v2\n").unwrap();
    let (out, fs) = env.build(&ctx, &[], &[]);
    let log = ok(out);
    assert_eq!(read(&fs, "/from-context"), "v2\n");
    // The RUN binding it and every step after it rerun; the other stage is cached.
    assert_eq!(runs(&log), 5, "{log}");
    assert!(log.contains("#2 CACHED"), "{log}");
}

#[test]
fn bind_and_tmpfs_mounts() {
    bind_scenario(&Env::new());
}

#[test]
fn bind_and_tmpfs_mounts_rootless() {
    if let Some(env) = Env::rootless() {
        bind_scenario(&env);
    }
}

fn secret_scenario(env: &Env) {
    let value = format!("s3cr3t-{}-value", unique());
    // The seed's demo, verbatim (FROM alpine: a local image of that name).
    ok(env.berth(&["import", "busybox-rootfs.tar", "alpine"], &[]));
    let ctx = env.context(
        "secret",
        &[
            (
                "Dockerfile",
                "# syntax=docker/dockerfile:1.0.0-experimental\n\nFROM alpine \nRUN --mount=type=secret,id=mysite.key ls -l /run/secrets\n",
            ),
            ("mysite.key", &value),
        ],
    );
    let out = env.berth_in(
        &ctx,
        &[
            "build",
            "--secret",
            "id=mysite.key,src=./mysite.key",
            "--progress",
            "plain",
            ".",
        ],
        &[],
    );
    let log = ok(out);
    assert!(
        log.lines()
            .any(|l| l.contains("-r--------") && l.contains("mysite.key")),
        "{log}"
    );
    // More forms: env=, the variable named by id, a file target, uid/mode,
    // an optional missing secret.
    let ctx2 = env.context(
        "secret2",
        &[(
            "Dockerfile",
            "FROM base:1\n\
             RUN --mount=type=secret,id=tok,env=TOKEN sh -c 'echo ${#TOKEN} > /envlen; test ! -e /run/secrets/tok && echo nofile > /nofile'\n\
             RUN --mount=type=secret,id=tok,target=/etc/tok,uid=1000,mode=0440 sh -c 'stat -c %u:%a /etc/tok > /tokstat; wc -c < /etc/tok > /toklen'\n\
             RUN --mount=type=secret,id=BERTH_TEST_SECRET sh -c 'wc -c < /run/secrets/BERTH_TEST_SECRET > /idlen'\n\
             RUN --mount=type=secret,id=absent sh -c 'test ! -e /run/secrets/absent && echo skipped > /skipped'\n",
        )],
    );
    let secret_file = ctx.join("mysite.key");
    let src = format!("id=tok,src={}", secret_file.display());
    let (out, fs) = env.build(
        &ctx2,
        &["--secret", &src, "--secret", "id=BERTH_TEST_SECRET"],
        &[("BERTH_TEST_SECRET", &value)],
    );
    let log2 = ok(out);
    let n = value.len().to_string();
    assert_eq!(read(&fs, "/envlen").trim(), n);
    assert_eq!(read(&fs, "/nofile").trim(), "nofile");
    assert_eq!(read(&fs, "/tokstat").trim(), "1000:440");
    assert_eq!(read(&fs, "/toklen").trim(), n);
    assert_eq!(read(&fs, "/idlen").trim(), n);
    assert_eq!(read(&fs, "/skipped").trim(), "skipped");
    assert!(!fs.join("run/secrets").exists() && !fs.join("etc/tok").exists());
    // A required secret that is missing fails the step and says how to pass it.
    let ctx3 = env.context(
        "secret3",
        &[(
            "Dockerfile",
            "FROM base:1\nRUN --mount=type=secret,id=need,required true\n",
        )],
    );
    let (out, _) = env.build(&ctx3, &[], &[]);
    let err = failed(&out);
    assert!(
        err.contains("secret need: not found") && err.contains("--secret id=need"),
        "{err}"
    );
    // A missing --secret file is refused before anything runs.
    let (out, _) = env.build(&ctx3, &["--secret", "id=need,src=/nonexistent/x"], &[]);
    assert!(failed(&out).contains("/nonexistent/x"));
    // The value is in no output and no file berth wrote.
    for l in [&log, &log2] {
        assert!(!l.contains(&value), "the secret is in the build output");
    }
    env.assert_nowhere_in_root(value.as_bytes());
    let mut stack = vec![fs];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else if let Ok(data) = std::fs::read(e.path()) {
                assert!(
                    !contains(&data, value.as_bytes()),
                    "secret in {}",
                    e.path().display()
                );
            }
        }
    }
}

#[test]
fn secrets_never_land_anywhere() {
    secret_scenario(&Env::new());
}

#[test]
fn secrets_rootless() {
    if let Some(env) = Env::rootless() {
        secret_scenario(&env);
    }
}

/// An `ssh-agent` started for a test (killed by pid when dropped).
struct Agent {
    pid: i32,
    sock: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling the agent this test started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The seed's `ssh-keygen -f id_rsa_test; eval $(ssh-agent -s); ssh-add`.
fn start_agent(env: &Env, dir: &Path) -> (Agent, String, PathBuf) {
    let key = dir.join("id_rsa_test");
    let mut kg = env.command("ssh-keygen", dir);
    kg.args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key);
    let out = kg.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sock = dir.join("agent.sock");
    let mut ag = env.command("ssh-agent", dir);
    ag.arg("-a").arg(&sock).arg("-s");
    let out = String::from_utf8(ag.output().unwrap().stdout).unwrap();
    let pid = out
        .split(';')
        .find_map(|p| p.trim().strip_prefix("SSH_AGENT_PID="))
        .and_then(|p| p.parse().ok())
        .expect("ssh-agent printed its pid");
    let agent = Agent { pid, sock };
    let mut add = env.command("ssh-add", dir);
    add.arg(&key).env("SSH_AUTH_SOCK", &agent.sock);
    assert!(add.output().unwrap().status.success());
    let mut fp = env.command("ssh-keygen", dir);
    fp.arg("-lf").arg(key.with_extension("pub"));
    let fingerprint = String::from_utf8(fp.output().unwrap().stdout).unwrap();
    let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_string();
    (agent, fingerprint, key)
}

/// An image with the host's `ssh-add` and the libraries it loads.
fn ssh_image(env: &Env) {
    let ctx = env.context("sshimg", &[("Dockerfile", "FROM base:1\nCOPY rootfs/ /\nRUN ln -s busybox /bin/grep && printf '#!/bin/sh\\nexec env\\n' > /bin/printenv && chmod 755 /bin/printenv\n")]);
    let rootfs = ctx.join("rootfs");
    let mut files = vec![PathBuf::from("/usr/bin/ssh-add")];
    let ldd = Command::new("ldd")
        .arg("/usr/bin/ssh-add")
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let dst = rootfs.join(f.strip_prefix("/").unwrap());
        env.mkdir(dst.parent().unwrap());
        std::fs::copy(std::fs::canonicalize(&f).unwrap(), &dst).unwrap();
        env.give(&dst);
    }
    ok(env.berth(&["build", "-t", "sshbase", ctx.to_str().unwrap()], &[]));
}

fn ssh_scenario(env: &Env) {
    for tool in ["ssh-agent", "ssh-add", "ssh-keygen", "ldd"] {
        if !have(tool) {
            eprintln!("SKIP: no {tool} (apt-get install openssh-client)");
            return;
        }
    }
    ssh_image(env);
    let ctx = env.context(
        "ssh",
        &[(
            "Dockerfile",
            "FROM sshbase\nRUN --mount=type=ssh printenv | grep ssh && ssh-add -l\n",
        )],
    );
    let (agent, fingerprint, key) = start_agent(env, &ctx);
    // `docker build --ssh default --progress plain .` with the agent in the environment.
    let sock = agent.sock.to_str().unwrap().to_string();
    let out = env.berth_in(
        &ctx,
        &[
            "build",
            "--ssh",
            "default",
            "--progress",
            "plain",
            "--no-cache",
            ".",
        ],
        &[("SSH_AUTH_SOCK", &sock)],
    );
    let log = ok(out);
    assert!(
        log.contains("SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"),
        "{log}"
    );
    assert!(
        log.contains(&fingerprint),
        "ssh-add -l in the step lists the key:\n{log}"
    );
    // A non-root user in the step with the socket given to it.
    let ctx2 = env.context(
        "ssh2",
        &[(
            "Dockerfile",
            "FROM sshbase\nUSER 1000\nRUN --mount=type=ssh,id=gh,uid=1000,target=/home/agent.sock ssh-add -l\n",
        )],
    );
    // Key files: served by a private agent for the build.
    let keyarg = format!("gh={}", key.display());
    let out = env.berth_in(
        &ctx2,
        &["build", "--ssh", &keyarg, "--progress", "plain", "."],
        &[],
    );
    let log2 = ok(out);
    assert!(log2.contains(&fingerprint), "{log2}");
    // A required ssh mount without --ssh fails clearly.
    let ctx3 = env.context(
        "ssh3",
        &[(
            "Dockerfile",
            "FROM sshbase\nRUN --mount=type=ssh,required true\n",
        )],
    );
    let (out, _) = env.build(&ctx3, &[], &[]);
    assert!(failed(&out).contains("no SSH key \"default\" forwarded"));
    // The private key is in no layer.
    let pem = std::fs::read_to_string(&key).unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    env.assert_nowhere_in_root(&body.as_bytes()[..40]);
    drop(agent);
}

#[test]
fn ssh_agent_forwarding() {
    ssh_scenario(&Env::new());
}

#[test]
fn ssh_agent_forwarding_rootless() {
    if let Some(env) = Env::rootless() {
        ssh_scenario(&env);
    }
}
