//! `RUN --mount`: cache, bind, tmpfs, secret and ssh mounts (BuildKit's
//! `dockerfile2llb` semantics), and the `--secret` / `--ssh` sources.
//!
//! A RUN with mounts goes through two phases:
//! - [`prepare`] (async, before the cache lookup): resolves defaults,
//!   waits for `from` stages, checksums bound context files, starts ssh
//!   forwarding, and yields the mounts' part of the step's cache key. The key
//!   covers the *spec* of every mount and the *content* of bind sources,
//!   never the contents of caches or secrets.
//! - [`Prepared::activate`] (blocking, right before the process runs):
//!   locks and creates cache directories, mounts `from` filesystems, reads
//!   secrets, and returns the sandbox mounts plus guards that undo it all.
//!
//! Cache mounts live in `<root>/cachemounts/<hash of id (+ from)>/data-N`:
//! bind-mounted as they are (no copy per build), kept between builds and
//! never part of a layer. `sharing=locked` holds an exclusive `flock` on
//! `data-0.lock` for the step, `shared` a shared one (so it waits only for
//! a locked or private user of the same directory), `private` takes the
//! first `data-N` nobody holds.
//!
//! Secrets travel in memory only (`MountKind::File`, a tmpfs in the step's
//! mount namespace). SSH agents are forwarded through a per-build proxy
//! socket owned by the mount's uid/gid with its mode (the agent itself only
//! ever sees the builder as its peer, which it accepts); `--ssh id=KEY...`
//! runs a private OpenSSH `ssh-agent` for the build.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use berth_dockerfile::{Mount, MountType, Sharing};
use serde_json::{json, Value};

use crate::cache::{CacheKey, LayerRef};
use crate::fsops;
use crate::solver::Engine;
use crate::stage::{clean_path, CopyFrom, StepInfo};
use crate::{BuildError, Result};

/// buildkit's limit on one secret (`secretsprovider.MaxSecretSize`).
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// One `--secret`: where the value comes from (never the value itself, so
/// options and their `Debug` output cannot carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub id: String,
    pub from: SecretFrom,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    File(PathBuf),
    Env(String),
}

impl SecretSource {
    /// buildx's `--secret` syntax: `id=X[,src=FILE|source=FILE][,env=VAR]
    /// [,type=file|env]`. Without `src` and `env` the value comes from the
    /// environment variable named `id` if it is set, else from the file
    /// named `id` (buildx's rule). `env_set` tells whether a variable exists.
    pub fn parse(value: &str, env_set: &dyn Fn(&str) -> bool) -> Result<SecretSource, String> {
        let mut typ = None;
        let (mut id, mut file, mut env) = (String::new(), None::<String>, None::<String>);
        for field in value.split(',') {
            let Some((key, v)) = field.split_once('=') else {
                return Err(format!(
                    "--secret {value:?}: invalid field '{field}' must be a key=value pair"
                ));
            };
            match key.to_ascii_lowercase().as_str() {
                "type" => {
                    if v != "file" && v != "env" {
                        return Err(format!("--secret {value:?}: unsupported secret type {v:?} (use file or env)"));
                    }
                    typ = Some(v.to_string());
                }
                "id" => id = v.to_string(),
                "source" | "src" => file = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                other => {
                    return Err(format!(
                        "--secret {value:?}: unexpected key '{other}' in '{field}' (use id, src, env, type)"
                    ))
                }
            }
        }
        if typ.as_deref() == Some("env") && env.is_none() {
            env = file.take();
        }
        if id.is_empty() {
            return Err(format!(
                "--secret {value:?}: secret missing ID (use id=NAME,src=FILE or id=NAME,env=VAR)"
            ));
        }
        let from = match (env, file) {
            (Some(e), _) if !e.is_empty() => SecretFrom::Env(e),
            (_, Some(f)) if !f.is_empty() => SecretFrom::File(PathBuf::from(f)),
            _ if typ.as_deref() != Some("file") && env_set(&id) => SecretFrom::Env(id.clone()),
            _ => SecretFrom::File(PathBuf::from(&id)),
        };
        Ok(SecretSource { id, from })
    }

    /// What buildx checks before a build starts: a file exists and is not
    /// too big.
    pub fn check(&self) -> Result<(), String> {
        if let SecretFrom::File(path) = &self.from {
            let meta = fs::metadata(path).map_err(|e| {
                format!(
                    "--secret id={}: failed to stat {}: {e}",
                    self.id,
                    path.display()
                )
            })?;
            if meta.len() > MAX_SECRET_SIZE {
                return Err(format!(
                    "--secret id={}: secret {} too big. max size 500KB",
                    self.id, self.id
                ));
            }
        }
        Ok(())
    }

    /// The value, read now (`None`: an environment variable that is unset).
    fn read(&self) -> Result<Option<Vec<u8>>> {
        match &self.from {
            SecretFrom::Env(var) => Ok(std::env::var_os(var).map(|v| v.into_encoded_bytes())),
            SecretFrom::File(path) => {
                let data = fs::read(path).map_err(|e| {
                    BuildError::Step(format!(
                        "secret {}: reading {}: {e}",
                        self.id,
                        path.display()
                    ))
                })?;
                if data.len() as u64 > MAX_SECRET_SIZE {
                    return Err(BuildError::Step(format!(
                        "secret {} too big. max size 500KB",
                        self.id
                    )));
                }
                Ok(Some(data))
            }
        }
    }
}

/// One `--ssh ID[=SOCKET|KEY[,KEY...]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshSource {
    /// An agent socket to forward (`$SSH_AUTH_SOCK` for a bare id).
    Agent { id: String, socket: PathBuf },
    /// Private key files, served by a private ssh-agent for the build.
    Keys { id: String, keys: Vec<PathBuf> },
}

impl SshSource {
    pub fn id(&self) -> &str {
        match self {
            SshSource::Agent { id, .. } | SshSource::Keys { id, .. } => id,
        }
    }

    /// buildx's `--ssh` syntax. `auth_sock` is `$SSH_AUTH_SOCK`.
    pub fn parse(value: &str, auth_sock: Option<&str>) -> Result<SshSource, String> {
        let (id, paths) = match value.split_once('=') {
            Some((id, p)) => (id, p.split(',').filter(|s| !s.is_empty()).collect()),
            None => (value, Vec::new()),
        };
        if id.is_empty() {
            return Err(format!(
                "--ssh {value:?}: missing id (use default[=SOCKET|KEY[,KEY...]])"
            ));
        }
        let id = id.to_string();
        if paths.is_empty() {
            let sock = auth_sock.filter(|s| !s.is_empty()).ok_or_else(|| {
                format!("--ssh {value}: invalid empty ssh agent socket, make sure SSH_AUTH_SOCK is set (or pass --ssh {id}=SOCKET|KEY)")
            })?;
            return Ok(SshSource::Agent {
                id,
                socket: PathBuf::from(sock),
            });
        }
        let mut keys = Vec::new();
        for p in paths {
            let meta = fs::metadata(p).map_err(|e| format!("--ssh {value}: {p}: {e}"))?;
            if meta.file_type().is_socket() {
                if keys.is_empty() && value.ends_with(p) && !value[id.len() + 1..].contains(',') {
                    return Ok(SshSource::Agent {
                        id,
                        socket: PathBuf::from(p),
                    });
                }
                return Err(format!(
                    "--ssh {value}: a socket cannot be combined with other paths: pass one agent socket or key files"
                ));
            }
            keys.push(PathBuf::from(p));
        }
        Ok(SshSource::Keys { id, keys })
    }
}

/// `berth build --secret ... --ssh ...` (buildx's flags), checked as buildx
/// checks them before the build starts (files exist, sizes, the agent).
pub fn parse_flags(
    secrets: &[String],
    ssh: &[String],
) -> Result<(Vec<SecretSource>, Vec<SshSource>), String> {
    let env_set = |name: &str| std::env::var_os(name).is_some();
    let mut out = Vec::new();
    for s in secrets {
        let src = SecretSource::parse(s, &env_set)?;
        src.check()?;
        out.push(src);
    }
    let auth_sock = std::env::var("SSH_AUTH_SOCK").ok();
    let ssh = ssh
        .iter()
        .map(|s| SshSource::parse(s, auth_sock.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((out, ssh))
}

/// Per-build state of the mounts: ssh forwarding (proxies and private
/// agents), torn down when the build's engine goes away.
#[derive(Default)]
pub struct MountState {
    ssh: tokio::sync::Mutex<SshState>,
}

#[derive(Default)]
struct SshState {
    dir: Option<tempfile::TempDir>,
    /// id -> the upstream agent socket.
    upstream: BTreeMap<String, PathBuf>,
    /// (id, uid, gid, mode) -> proxy socket.
    proxies: BTreeMap<(String, u32, u32, u32), PathBuf>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    agents: Vec<PrivateAgent>,
    next: usize,
}

impl Drop for SshState {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A private `ssh-agent` serving `--ssh id=KEY` files. It runs with a
/// command (`cat` on a pipe berth holds), so it also exits by itself within
/// seconds if berth dies without dropping this.
struct PrivateAgent {
    child: Child,
    agent_pid: Option<i32>,
}

impl Drop for PrivateAgent {
    fn drop(&mut self) {
        if let Some(pid) = self.agent_pid {
            // SAFETY: signalling the agent this build started (by its pid).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SshState {
    fn dir(&mut self) -> Result<PathBuf> {
        if self.dir.is_none() {
            // Sockets need short paths (108 bytes): the temp dir, not the root.
            let d = tempfile::Builder::new()
                .prefix("berth-ssh-")
                .tempdir()
                .map_err(|e| {
                    BuildError::Other(format!("creating a directory for ssh sockets: {e}"))
                })?;
            fs::set_permissions(d.path(), fs::Permissions::from_mode(0o700))?;
            self.dir = Some(d);
        }
        Ok(self.dir.as_ref().expect("set above").path().to_path_buf())
    }

    fn socket_path(&mut self, what: &str) -> Result<PathBuf> {
        let n = self.next;
        self.next += 1;
        Ok(self.dir()?.join(format!("{what}{n}.sock")))
    }

    fn upstream(&mut self, source: &SshSource) -> Result<PathBuf> {
        if let Some(p) = self.upstream.get(source.id()) {
            return Ok(p.clone());
        }
        let path = match source {
            SshSource::Agent { socket, .. } => socket.clone(),
            SshSource::Keys { id, keys } => {
                let sock = self.socket_path("agent")?;
                let agent = start_agent(id, &sock, keys)?;
                self.agents.push(agent);
                sock
            }
        };
        self.upstream.insert(source.id().to_string(), path.clone());
        Ok(path)
    }
}

fn start_agent(id: &str, sock: &Path, keys: &[PathBuf]) -> Result<PrivateAgent> {
    let missing = |e: io::Error| {
        BuildError::Other(format!(
            "--ssh {id}=KEY: serving key files needs OpenSSH's ssh-agent and ssh-add ({e}): install openssh-client, or start an agent yourself, ssh-add the keys and pass --ssh {id}=$SSH_AUTH_SOCK"
        ))
    };
    let mut child = Command::new("ssh-agent")
        .arg("-a")
        .arg(sock)
        .args(["sh", "-c", "echo \"$SSH_AGENT_PID\"; exec cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(missing)?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    let _ = io::BufReader::new(stdout).read_line(&mut line);
    let agent = PrivateAgent {
        agent_pid: line.trim().parse().ok(),
        child,
    };
    if agent.agent_pid.is_none() || !sock.exists() {
        return Err(BuildError::Other(format!(
            "--ssh {id}: ssh-agent did not start (no socket at {})",
            sock.display()
        )));
    }
    let out = Command::new("ssh-add")
        .args(keys)
        .env("SSH_AUTH_SOCK", sock)
        .env("SSH_ASKPASS_REQUIRE", "never")
        .stdin(Stdio::null())
        .output()
        .map_err(missing)?;
    if !out.status.success() {
        return Err(BuildError::Other(format!(
            "--ssh {id}: ssh-add could not load {}: {} (keys with a passphrase: add them to your own agent and pass --ssh {id}=$SSH_AUTH_SOCK)",
            keys.iter().map(|k| k.display().to_string()).collect::<Vec<_>>().join(", "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(agent)
}

impl MountState {
    /// A socket forwarding to the agent of `--ssh id`, owned by uid:gid
    /// with `mode`; `None` when the build has no such `--ssh`.
    async fn ssh_socket(
        &self,
        sources: &[SshSource],
        id: &str,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<Option<PathBuf>> {
        let Some(source) = sources.iter().rev().find(|s| s.id() == id) else {
            return Ok(None);
        };
        let mut st = self.ssh.lock().await;
        let k = (id.to_string(), uid, gid, mode);
        if let Some(p) = st.proxies.get(&k) {
            return Ok(Some(p.clone()));
        }
        let upstream = st.upstream(source)?;
        let path = st.socket_path("proxy")?;
        let listener = tokio::net::UnixListener::bind(&path).map_err(|e| {
            BuildError::Other(format!("ssh forwarding socket {}: {e}", path.display()))
        })?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| {
            BuildError::Step(format!(
                "giving the ssh socket to {uid}:{gid}: {e} (ids other than 0 need a mapped id range: install uidmap and add a range for your user to /etc/subuid and /etc/subgid)"
            ))
        })?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let up = upstream.clone();
                tokio::spawn(async move {
                    match tokio::net::UnixStream::connect(&up).await {
                        Ok(mut agent) => {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut agent).await;
                        }
                        Err(e) => tracing::warn!("ssh agent {}: {e}", up.display()),
                    }
                });
            }
        });
        st.tasks.push(task);
        st.proxies.insert(k, path.clone());
        Ok(Some(path))
    }
}

/// A RUN's mounts, resolved and ready to activate.
pub struct Prepared {
    eng: Arc<Engine>,
    items: Vec<Item>,
    key: Vec<Value>,
    /// `SSH_AUTH_SOCK` for the step unless its environment has one.
    ssh_auth_sock: Option<String>,
}

enum Item {
    Cache {
        dir: PathBuf,
        target: PathBuf,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
        readonly: bool,
        /// Initial contents of a new cache directory (`from` + `source`).
        init: Option<(Vec<LayerRef>, String)>,
    },
    Bind {
        from: BindFrom,
        target: PathBuf,
        readonly: bool,
    },
    Tmpfs {
        target: PathBuf,
        size: Option<u64>,
    },
    Secret {
        id: String,
        source: Option<SecretSource>,
        required: bool,
        target: Option<PathBuf>,
        env: Option<String>,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Ssh {
        socket: PathBuf,
        target: PathBuf,
    },
}

enum BindFrom {
    /// A path of the build context, bound as it is.
    Dir(PathBuf),
    /// A context source with `.dockerignore`d entries below it: copied
    /// without them first.
    Filtered(berth_context::Source),
    /// `source` inside a stage's or image's filesystem.
    Layers {
        layers: Vec<LayerRef>,
        source: String,
    },
}

/// What an activated RUN needs: the sandbox mounts, environment
/// additions, and the guards that release everything when dropped.
pub struct Active {
    pub mounts: Vec<berth_sandbox::Mount>,
    env_set: Vec<(String, String)>,
    env_default: Vec<(String, String)>,
    /// Released in reverse order (unmount before removing directories).
    guards: Vec<Guard>,
}

enum Guard {
    View(crate::snapshots::RootView),
    Lock(#[allow(dead_code)] File),
    Scratch(#[allow(dead_code)] crate::snapshots::Scratch),
    Dir(#[allow(dead_code)] tempfile::TempDir),
}

impl Drop for Active {
    fn drop(&mut self) {
        while let Some(g) = self.guards.pop() {
            match g {
                Guard::View(v) => {
                    if let Err(e) = v.unmount() {
                        tracing::warn!("unmounting a RUN --mount source: {e}");
                    }
                }
                other => drop(other),
            }
        }
    }
}

impl Active {
    /// Adds the mounts' variables to the step's environment (a secret's
    /// `env=` wins; `SSH_AUTH_SOCK` only if the step has none).
    pub fn apply_env(&self, env: &mut Vec<String>) {
        for (k, v) in &self.env_default {
            let prefix = format!("{k}=");
            if !env.iter().any(|e| e.starts_with(&prefix)) {
                env.push(format!("{k}={v}"));
            }
        }
        for (k, v) in &self.env_set {
            let prefix = format!("{k}=");
            env.retain(|e| !e.starts_with(&prefix));
            env.push(format!("{k}={v}"));
        }
    }
}

fn dockerfile_err(step: &StepInfo, msg: impl std::fmt::Display) -> BuildError {
    BuildError::Dockerfile(format!("{}: {msg}", step.location))
}

/// BuildKit: a relative target is relative to the working directory.
fn resolve_target(target: &str, cwd: &str) -> String {
    if target.starts_with('/') {
        clean_path(target)
    } else {
        crate::stage::join_workdir(cwd, target)
    }
}

fn short_hash(v: &Value) -> String {
    CacheKey::of(v).0[..32].to_string()
}

/// Resolves a RUN's mounts (see the module docs). `cwd` is the step's
/// working directory.
pub async fn prepare(
    eng: &Arc<Engine>,
    mounts: &[Mount],
    cwd: &str,
    step: &StepInfo,
) -> Result<Prepared> {
    let mut items = Vec::new();
    let mut key = Vec::new();
    let mut ssh_index = 0usize;
    let mut ssh_auth_sock = None;
    for m in mounts {
        let target = m.target.as_deref().filter(|t| !t.is_empty());
        let need_target = || -> Result<String> {
            let t = target.ok_or_else(|| {
                dockerfile_err(
                    step,
                    format!(
                        "RUN --mount=type={}: a target is required (add target=PATH)",
                        m.kind.as_str()
                    ),
                )
            })?;
            let t = resolve_target(t, cwd);
            if t == "/" {
                return Err(dockerfile_err(step, "invalid mount target \"/\""));
            }
            Ok(t)
        };
        match m.kind {
            MountType::Cache => {
                let t = need_target()?;
                let id =
                    m.id.clone()
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| t.clone());
                let sharing = m.sharing.unwrap_or(Sharing::Shared);
                let (init, from_key) = match m.from.as_deref().filter(|f| !f.is_empty()) {
                    Some(from) => {
                        let source = m.source.clone().unwrap_or_else(|| "/".into());
                        match eng.copy_source(Some(from), step).await? {
                            CopyFrom::Layers { layers, key } => (
                                Some((layers, source.clone())),
                                json!({"from": key, "source": source}),
                            ),
                            CopyFrom::Context => unreachable!("a from= is never the context"),
                        }
                    }
                    None => (None, Value::Null),
                };
                let (mode, uid, gid) = (
                    m.mode.unwrap_or(0o755),
                    m.uid.unwrap_or(0),
                    m.gid.unwrap_or(0),
                );
                let dir = eng
                    .opts
                    .root
                    .join("cachemounts")
                    .join(short_hash(&json!({"id": id, "base": from_key})));
                key.push(json!({
                    "type": "cache", "id": id, "target": t, "sharing": sharing_str(sharing),
                    "base": from_key, "mode": mode, "uid": uid, "gid": gid, "ro": m.readonly,
                }));
                items.push(Item::Cache {
                    dir,
                    target: t.into(),
                    sharing,
                    mode,
                    uid,
                    gid,
                    readonly: m.readonly,
                    init,
                });
            }
            MountType::Bind => {
                let t = need_target()?;
                let source = m
                    .source
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "/".into());
                let (from, content) = match eng
                    .copy_source(m.from.as_deref().filter(|f| !f.is_empty()), step)
                    .await?
                {
                    CopyFrom::Context => {
                        let ctx = eng.context(step)?;
                        let rel = fsops::relative(Path::new(&source));
                        let pattern = if rel.as_os_str().is_empty() {
                            ".".to_string()
                        } else {
                            rel.to_string_lossy().into_owned()
                        };
                        let ctx2 = Arc::clone(&ctx);
                        let p2 = pattern.clone();
                        let (src, sum) = tokio::task::spawn_blocking(move || {
                            let mut found = ctx2.resolve_sources(std::slice::from_ref(&p2))?;
                            let sum = ctx2.checksum(std::slice::from_ref(&p2))?;
                            Ok::<_, berth_context::Error>((found.pop(), sum))
                        })
                        .await
                        .map_err(|e| BuildError::Other(e.to_string()))?
                        .map_err(|e| {
                            BuildError::Context(format!(
                                "{}: --mount source={source}: {e}",
                                step.location
                            ))
                        })?;
                        let src = src.ok_or_else(|| {
                            BuildError::Context(format!(
                                "{}: --mount source={source}: not found in the build context",
                                step.location
                            ))
                        })?;
                        let from = if ctx.ignore().is_empty() {
                            BindFrom::Dir(ctx.root().join(&src.resolved))
                        } else {
                            BindFrom::Filtered(src)
                        };
                        (from, json!({"context": sum.hex()}))
                    }
                    CopyFrom::Layers { layers, key } => (
                        BindFrom::Layers {
                            layers,
                            source: source.clone(),
                        },
                        json!({"stage": key}),
                    ),
                };
                key.push(json!({
                    "type": "bind", "target": t, "source": source, "content": content, "ro": m.readonly,
                }));
                items.push(Item::Bind {
                    from,
                    target: t.into(),
                    readonly: m.readonly,
                });
            }
            MountType::Tmpfs => {
                let t = need_target()?;
                let size = m.size.filter(|s| *s > 0).map(|s| s as u64);
                key.push(json!({"type": "tmpfs", "target": t, "size": size}));
                items.push(Item::Tmpfs {
                    target: t.into(),
                    size,
                });
            }
            MountType::Secret => {
                // BuildKit: source is an alias of id; without both, the
                // target's base name.
                let id = m
                    .source
                    .clone()
                    .filter(|s| !s.is_empty())
                    .or_else(|| m.id.clone().filter(|s| !s.is_empty()))
                    .or_else(|| target.map(base_name))
                    .ok_or_else(|| {
                        dockerfile_err(step, "invalid secret mount. one of source, target required")
                    })?;
                let file_target = match (target, &m.env) {
                    (Some(t), _) => Some(resolve_target(t, cwd)),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{}", base_name(&id))),
                };
                let (mode, uid, gid) = (
                    m.mode.unwrap_or(0o400),
                    m.uid.unwrap_or(0),
                    m.gid.unwrap_or(0),
                );
                key.push(json!({
                    "type": "secret", "id": id, "target": file_target, "env": m.env,
                    "required": m.required, "mode": mode, "uid": uid, "gid": gid,
                }));
                let source = eng.opts.secrets.iter().rev().find(|s| s.id == id).cloned();
                items.push(Item::Secret {
                    id,
                    source,
                    required: m.required,
                    target: file_target.map(PathBuf::from),
                    env: m.env.clone(),
                    mode,
                    uid,
                    gid,
                });
            }
            MountType::Ssh => {
                if m.source.as_deref().is_some_and(|s| !s.is_empty()) {
                    return Err(dockerfile_err(step, "ssh does not support source"));
                }
                let id =
                    m.id.clone()
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "default".into());
                let t = match target {
                    Some(t) => resolve_target(t, cwd),
                    None => format!("/run/buildkit/ssh_agent.{ssh_index}"),
                };
                if ssh_index == 0 {
                    ssh_auth_sock = Some(t.clone());
                }
                ssh_index += 1;
                let (mode, uid, gid) = (
                    m.mode.unwrap_or(0o600),
                    m.uid.unwrap_or(0),
                    m.gid.unwrap_or(0),
                );
                key.push(json!({
                    "type": "ssh", "id": id, "target": t, "required": m.required,
                    "mode": mode, "uid": uid, "gid": gid,
                }));
                match eng.mounts.ssh_socket(&eng.opts.ssh, &id, uid, gid, mode).await? {
                    Some(socket) => items.push(Item::Ssh { socket, target: t.into() }),
                    None if m.required => {
                        return Err(BuildError::Step(format!(
                            "{}: no SSH key {id:?} forwarded from the client: pass --ssh {id} (your agent, $SSH_AUTH_SOCK) or --ssh {id}=KEYFILE",
                            step.location
                        )))
                    }
                    None => {}
                }
            }
        }
    }
    Ok(Prepared {
        eng: Arc::clone(eng),
        items,
        key,
        ssh_auth_sock,
    })
}

fn sharing_str(s: Sharing) -> &'static str {
    match s {
        Sharing::Shared => "shared",
        Sharing::Private => "private",
        Sharing::Locked => "locked",
    }
}

fn base_name(p: &str) -> String {
    let c = clean_path(&format!("/{p}"));
    c.rsplit('/').next().unwrap_or_default().to_string()
}

fn flock(f: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

fn open_lock(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

impl Prepared {
    /// The mounts' part of the RUN's cache key (`None` without mounts, so
    /// keys of RUNs without mounts stay what they were).
    pub fn key(&self) -> Option<Value> {
        (!self.key.is_empty()).then(|| Value::Array(self.key.clone()))
    }

    /// Makes the mounts real for one run (blocking). `location` names the
    /// step in errors.
    pub fn activate(&self, location: &str) -> Result<Active> {
        let mut active = Active {
            mounts: Vec::new(),
            env_set: Vec::new(),
            env_default: Vec::new(),
            guards: Vec::new(),
        };
        if let Some(s) = &self.ssh_auth_sock {
            active.env_default.push(("SSH_AUTH_SOCK".into(), s.clone()));
        }
        // Cache locks in one global order (by directory), so two steps
        // locking the same caches cannot deadlock; one directory used twice
        // in a step is locked once.
        let mut caches: Vec<&Item> = self
            .items
            .iter()
            .filter(|i| matches!(i, Item::Cache { .. }))
            .collect();
        caches.sort_by(|a, b| cache_dir(a).cmp(cache_dir(b)));
        let mut taken: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        for item in caches {
            let Item::Cache {
                dir,
                sharing,
                mode,
                uid,
                gid,
                init,
                ..
            } = item
            else {
                continue;
            };
            if taken.contains_key(dir) {
                continue;
            }
            let data = self
                .cache_dir(dir, *sharing, *mode, *uid, *gid, init.as_ref(), &mut active)
                .map_err(|e| BuildError::Step(format!("{location}: cache mount: {e}")))?;
            taken.insert(dir.clone(), data);
        }
        for item in &self.items {
            match item {
                Item::Cache {
                    dir,
                    target,
                    readonly,
                    ..
                } => active.mounts.push(berth_sandbox::Mount {
                    target: target.clone(),
                    kind: berth_sandbox::MountKind::Bind {
                        source: taken[dir].clone(),
                        readonly: *readonly,
                    },
                }),
                Item::Bind {
                    from,
                    target,
                    readonly,
                } => {
                    let source = self.bind_source(from, &mut active).map_err(|e| match e {
                        BuildError::Io(e) => BuildError::Step(format!(
                            "{location}: bind mount at {}: {e}",
                            target.display()
                        )),
                        other => other,
                    })?;
                    let kind = if *readonly {
                        berth_sandbox::MountKind::Bind {
                            source,
                            readonly: true,
                        }
                    } else if source.is_dir()
                        && self.eng.snapshots.snapshotter()
                            == crate::snapshots::Snapshotter::Overlay
                    {
                        berth_sandbox::MountKind::BindOverlay { source }
                    } else if source.is_dir() {
                        // No overlayfs here: a private copy takes the writes.
                        let tmp = tempfile::Builder::new()
                            .prefix("bind-")
                            .tempdir_in(self.eng.opts.root.join("snapshots").join("tmp"))?;
                        let src_root = fsops::open_root(&source)?;
                        let dst_root = fsops::open_root(tmp.path())?;
                        crate::copy::copy_verbatim(
                            src_root.as_raw_fd(),
                            Path::new("/"),
                            dst_root.as_raw_fd(),
                            Path::new("/data"),
                            false,
                        )?;
                        let copy = tmp.path().join("data");
                        active.guards.push(Guard::Dir(tmp));
                        berth_sandbox::MountKind::Bind {
                            source: copy,
                            readonly: false,
                        }
                    } else {
                        // A single file with discarded writes: a private copy.
                        let tmp = tempfile::Builder::new()
                            .prefix("bind-")
                            .tempdir_in(self.eng.opts.root.join("snapshots").join("tmp"))?;
                        let copy = tmp.path().join("file");
                        fs::copy(&source, &copy)?;
                        active.guards.push(Guard::Dir(tmp));
                        berth_sandbox::MountKind::Bind {
                            source: copy,
                            readonly: false,
                        }
                    };
                    active.mounts.push(berth_sandbox::Mount {
                        target: target.clone(),
                        kind,
                    });
                }
                Item::Tmpfs { target, size } => active.mounts.push(berth_sandbox::Mount {
                    target: target.clone(),
                    kind: berth_sandbox::MountKind::Tmpfs { size: *size },
                }),
                Item::Secret {
                    id,
                    source,
                    required,
                    target,
                    env,
                    mode,
                    uid,
                    gid,
                } => {
                    let value = match source {
                        Some(s) => s.read()?,
                        None => None,
                    };
                    let Some(value) = value else {
                        if *required {
                            return Err(BuildError::Step(format!(
                                "{location}: secret {id}: not found: pass --secret id={id},src=FILE or --secret id={id},env=VARIABLE"
                            )));
                        }
                        continue;
                    };
                    if let Some(var) = env {
                        let text = String::from_utf8(value.clone())
                            .ok()
                            .filter(|s| !s.contains('\0'))
                            .ok_or_else(|| BuildError::Step(format!(
                                "{location}: secret {id} cannot be the environment variable {var}: it is not text"
                            )))?;
                        active.env_set.push((var.clone(), text));
                    }
                    if let Some(t) = target {
                        active.mounts.push(berth_sandbox::Mount {
                            target: t.clone(),
                            kind: berth_sandbox::MountKind::File {
                                contents: value,
                                mode: *mode,
                                uid: *uid,
                                gid: *gid,
                            },
                        });
                    }
                }
                Item::Ssh { socket, target } => active.mounts.push(berth_sandbox::Mount {
                    target: target.clone(),
                    kind: berth_sandbox::MountKind::Socket {
                        source: socket.clone(),
                    },
                }),
            }
        }
        Ok(active)
    }

    /// Locks (per `sharing`) and if needed creates the cache directory.
    #[allow(clippy::too_many_arguments)]
    fn cache_dir(
        &self,
        dir: &Path,
        sharing: Sharing,
        mode: u32,
        uid: u32,
        gid: u32,
        init: Option<&(Vec<LayerRef>, String)>,
        active: &mut Active,
    ) -> Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let n = match sharing {
            Sharing::Shared | Sharing::Locked => {
                let lock = open_lock(&dir.join("data-0.lock"))?;
                let op = if sharing == Sharing::Locked {
                    libc::LOCK_EX
                } else {
                    libc::LOCK_SH
                };
                flock(&lock, op)?;
                active.guards.push(Guard::Lock(lock));
                0
            }
            Sharing::Private => {
                let mut n = 0;
                loop {
                    let lock = open_lock(&dir.join(format!("data-{n}.lock")))?;
                    if flock(&lock, libc::LOCK_EX | libc::LOCK_NB)? {
                        active.guards.push(Guard::Lock(lock));
                        break n;
                    }
                    n += 1;
                }
            }
        };
        let data = dir.join(format!("data-{n}"));
        if !data.is_dir() {
            self.create_cache_dir(dir, &data, mode, uid, gid, init)?;
        }
        Ok(data)
    }

    /// A new cache directory appears complete under its name (made beside
    /// it, then renamed): with its owner and mode, or `from`'s contents.
    fn create_cache_dir(
        &self,
        dir: &Path,
        data: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
        init: Option<&(Vec<LayerRef>, String)>,
    ) -> Result<()> {
        let tmp = tempfile::Builder::new().prefix("new-").tempdir_in(dir)?;
        let fresh = tmp.path().join("d");
        fs::create_dir(&fresh)?;
        match init {
            None => {
                std::os::unix::fs::chown(&fresh, Some(uid), Some(gid)).map_err(|e| {
                    BuildError::Step(format!(
                        "giving the cache directory to {uid}:{gid}: {e} (ids other than 0 need a mapped id range: install uidmap and add a range for your user to /etc/subuid and /etc/subgid)"
                    ))
                })?;
                fs::set_permissions(&fresh, fs::Permissions::from_mode(mode))?;
            }
            Some((layers, source)) => {
                let view = self.stage_view(layers)?;
                let src_root = fsops::open_root(&view.merged)?;
                let dst_root = fsops::open_root(&fresh)?;
                crate::copy::copy_verbatim(
                    src_root.as_raw_fd(),
                    Path::new(source),
                    dst_root.as_raw_fd(),
                    Path::new("/"),
                    true,
                )
                .map_err(|e| BuildError::Step(format!("cache mount from= source={source}: {e}")))?;
                drop((src_root, dst_root));
                view.release()?;
            }
        }
        match fs::rename(&fresh, data) {
            Ok(()) => Ok(()),
            // Another builder made it first (only possible for private n>0
            // races, which hold different locks): theirs is as good.
            Err(_) if data.is_dir() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// A read-only view of a stage's or image's filesystem (an overlay of
    /// its layers with a throwaway upper directory).
    fn stage_view(&self, layers: &[LayerRef]) -> Result<StageView> {
        let lowers = self.eng.lowers(layers)?;
        let scratch = self.eng.snapshots.scratch()?;
        let merged = scratch.base.join("merged");
        fs::create_dir_all(&merged)?;
        // An overlay, or a copy with the native snapshotter.
        let guard = scratch.mount(&lowers, &merged)?;
        Ok(StageView {
            merged,
            guard,
            scratch,
        })
    }

    fn bind_source(&self, from: &BindFrom, active: &mut Active) -> Result<PathBuf> {
        match from {
            BindFrom::Dir(p) => Ok(p.clone()),
            BindFrom::Filtered(src) => {
                let ctx = self.eng.context_blocking()?;
                let tmp = tempfile::Builder::new()
                    .prefix("bind-")
                    .tempdir_in(self.eng.opts.root.join("snapshots").join("tmp"))?;
                let dst_root = fsops::open_root(tmp.path())?;
                let skip = |_: &Path| false;
                let opts = crate::copy::CopyOptions {
                    owner: fsops::Owner::Fixed(0, 0),
                    chmod: None,
                    skip: &skip,
                    extract_archives: false,
                    file_cache: None,
                };
                crate::copy::copy_context_source(
                    &ctx,
                    src,
                    &berth_context::IgnoreMatcher::empty(),
                    dst_root.as_raw_fd(),
                    Path::new("/data"),
                    false,
                    &opts,
                )?;
                let path = tmp.path().join("data");
                active.guards.push(Guard::Dir(tmp));
                Ok(path)
            }
            BindFrom::Layers { layers, source } => {
                let view = self.stage_view(layers)?;
                let root = fsops::open_root(&view.merged)?;
                // Resolved inside the stage's root: a symlink there must
                // not lead to the builder's own files.
                let fd = fsops::open_in_root(root.as_raw_fd(), Path::new(source), libc::O_PATH)
                    .map_err(|e| BuildError::Step(format!("--mount from= source={source}: {e}")))?;
                let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
                let merged_real = fs::canonicalize(&view.merged)?;
                if !real.starts_with(&merged_real) {
                    return Err(BuildError::Step(format!(
                        "--mount from= source={source} resolved outside its stage"
                    )));
                }
                drop((fd, root));
                let StageView { guard, scratch, .. } = view;
                active.guards.push(Guard::Scratch(scratch));
                active.guards.push(Guard::View(guard));
                Ok(real)
            }
        }
    }
}

fn cache_dir(item: &Item) -> &Path {
    match item {
        Item::Cache { dir, .. } => dir,
        _ => Path::new(""),
    }
}

struct StageView {
    merged: PathBuf,
    guard: crate::snapshots::RootView,
    scratch: crate::snapshots::Scratch,
}

impl StageView {
    fn release(self) -> Result<()> {
        self.guard.unmount()?;
        drop(self.scratch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_flags_like_buildx() {
        let none = |_: &str| false;
        let s = SecretSource::parse("id=mysite.key,src=./mysite.key", &none).unwrap();
        assert_eq!(s.from, SecretFrom::File("./mysite.key".into()));
        let s = SecretSource::parse("id=tok,env=TOKEN", &none).unwrap();
        assert_eq!(s.from, SecretFrom::Env("TOKEN".into()));
        let s = SecretSource::parse("type=env,id=tok,src=TOKEN", &none).unwrap();
        assert_eq!(s.from, SecretFrom::Env("TOKEN".into()));
        // `id=X` alone: the variable X if set, else the file X.
        let s = SecretSource::parse("id=HOME_X", &|v| v == "HOME_X").unwrap();
        assert_eq!(s.from, SecretFrom::Env("HOME_X".into()));
        let s = SecretSource::parse("id=k.pem", &none).unwrap();
        assert_eq!(s.from, SecretFrom::File("k.pem".into()));
        let s = SecretSource::parse("type=file,id=X", &|_| true).unwrap();
        assert_eq!(s.from, SecretFrom::File("X".into()));
        assert!(SecretSource::parse("src=x", &none)
            .unwrap_err()
            .contains("secret missing ID"));
        assert!(SecretSource::parse("id=x,type=ssh", &none)
            .unwrap_err()
            .contains("unsupported secret type"));
        assert!(SecretSource::parse("id=x,bogus=1", &none)
            .unwrap_err()
            .contains("unexpected key 'bogus'"));
        assert!(SecretSource::parse("id", &none)
            .unwrap_err()
            .contains("key=value"));
    }

    #[test]
    fn secret_debug_has_no_value() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        fs::write(&f, "hunter2-value").unwrap();
        let s = SecretSource {
            id: "s".into(),
            from: SecretFrom::File(f),
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.read().unwrap().unwrap(), b"hunter2-value");
        s.check().unwrap();
        fs::write(dir.path().join("s"), vec![b'x'; 600 * 1024]).unwrap();
        assert!(s.check().unwrap_err().contains("too big"));
        let missing = SecretSource {
            id: "m".into(),
            from: SecretFrom::File(dir.path().join("nope")),
        };
        assert!(missing.check().unwrap_err().contains("failed to stat"));
    }

    #[test]
    fn ssh_flags_like_buildx() {
        let s = SshSource::parse("default", Some("/tmp/agent.sock")).unwrap();
        assert_eq!(
            s,
            SshSource::Agent {
                id: "default".into(),
                socket: "/tmp/agent.sock".into()
            }
        );
        assert!(SshSource::parse("default", None)
            .unwrap_err()
            .contains("SSH_AUTH_SOCK"));
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (dir.path().join("k1"), dir.path().join("k2"));
        fs::write(&k1, "x").unwrap();
        fs::write(&k2, "x").unwrap();
        let s = SshSource::parse(&format!("gh={},{}", k1.display(), k2.display()), None).unwrap();
        assert_eq!(
            s,
            SshSource::Keys {
                id: "gh".into(),
                keys: vec![k1.clone(), k2]
            }
        );
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let s = SshSource::parse(&format!("default={}", sock.display()), None).unwrap();
        assert_eq!(
            s,
            SshSource::Agent {
                id: "default".into(),
                socket: sock.clone()
            }
        );
        assert!(SshSource::parse(&format!("x={},{}", k1.display(), sock.display()), None).is_err());
        assert!(SshSource::parse("x=/nonexistent/key", None)
            .unwrap_err()
            .contains("/nonexistent/key"));
    }

    #[test]
    fn targets_and_names() {
        assert_eq!(resolve_target("cache", "/app"), "/app/cache");
        assert_eq!(resolve_target("/a/../b/", "/app"), "/b");
        assert_eq!(base_name("a/b/c.key"), "c.key");
        assert_eq!(base_name("mysite.key"), "mysite.key");
    }

    #[test]
    fn cache_locks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data-0.lock");
        let a = open_lock(&p).unwrap();
        let b = open_lock(&p).unwrap();
        assert!(flock(&a, libc::LOCK_SH).unwrap());
        assert!(
            flock(&b, libc::LOCK_SH | libc::LOCK_NB).unwrap(),
            "shared users share"
        );
        let c = open_lock(&p).unwrap();
        assert!(
            !flock(&c, libc::LOCK_EX | libc::LOCK_NB).unwrap(),
            "private/locked wait for shared users"
        );
        drop((a, b));
        assert!(flock(&c, libc::LOCK_EX | libc::LOCK_NB).unwrap());
    }
}
