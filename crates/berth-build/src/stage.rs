//! One stage's instructions, applied in order to a [`StageState`].
//!
//! Filesystem steps (RUN, COPY/ADD, WORKDIR) get a content-based cache key;
//! a hit reuses the recorded layer, a miss runs the step into a fresh
//! overlay upper directory and turns that directory into a layer. Metadata
//! instructions only edit the image config (and history).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use berth_oci::{Healthcheck, History, ImageConfig};
use serde_json::{json, Value};

use crate::cache::{CacheKey, CacheRecord, LayerRef};
use crate::copy::{copy_source, CopyOptions};
use crate::fsops::{self, Owner};
use crate::ops::{CommandLine, CopyOp, HealthcheckOp, Op, RunOp};
use crate::progress::Event;
use crate::solver::Engine;
use crate::{BuildError, LayerCompression, NetworkMode, Result};

/// BuildKit's history comment on every entry it writes.
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The default shell of shell-form commands.
fn default_shell() -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into()]
}

/// Where a stage is: its config, layers and the key of its filesystem.
#[derive(Debug, Clone)]
pub struct StageState {
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
    /// Key of the filesystem so far (base digest, then each step's key).
    pub key: CacheKey,
    /// ARG declarations in scope, in order (a redeclared name appears
    /// twice, as in BuildKit's RUN history prefix).
    pub args: Vec<ArgBinding>,
    /// When the filesystem last changed (history times of cached rebuilds
    /// stay the same, so does the image digest).
    pub created: String,
    /// Whether this stage set CMD (ENTRYPOINT resets an inherited CMD).
    pub cmd_set: bool,
    /// Whether the stage's layers can be part of the built image (see
    /// `Plan::image_stages`); if not, its steps make no layer blobs.
    pub in_image: bool,
}

/// One `ARG` declaration of the stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgBinding {
    pub name: String,
    /// Build-arg, default or global value; `None` when there is none.
    pub value: Option<String>,
    /// The value is still what the variable expands to: no ENV of the
    /// same name came after it. BuildKit puts an ARG's value into the
    /// build state's environment when it is declared, so whichever of ENV
    /// and ARG came last wins (for expansion and for RUN).
    pub live: bool,
    /// Declared in this stage (shown in RUN history), not inherited from
    /// the stage this one is built on.
    pub declared: bool,
}

/// The identity of a step in messages: `Dockerfile:12` and its text.
#[derive(Debug, Clone)]
pub struct StepInfo {
    pub location: String,
    pub text: String,
    /// `[stage 2/5]`-style label for progress.
    pub label: String,
}

impl StageState {
    /// Variable lookup for expansion and RUN: the last of ENV and ARG
    /// (with a value) to set the name wins.
    pub fn lookup(&self, name: &str) -> Option<String> {
        if let Some(b) = self.live_arg(name) {
            return b.value.clone();
        }
        self.config.env_var(name).map(str::to_string)
    }

    /// The ARG whose value `name` currently has, if an ARG set it last.
    fn live_arg(&self, name: &str) -> Option<&ArgBinding> {
        self.args
            .iter()
            .rev()
            .find(|b| b.name == name && b.value.is_some())
            .filter(|b| b.live)
    }

    /// At the start of a stage built `FROM` another stage: BuildKit's
    /// state (and so its environment, where ARG values live) carries
    /// over, its declarations do not (RUN history shows only this stage's).
    pub fn inherit_args(&mut self) {
        self.args.retain(|b| b.live && b.value.is_some());
        for b in &mut self.args {
            b.declared = false;
        }
    }

    /// ENV of `name`: an earlier ARG of that name no longer decides its value.
    fn shadow_args(&mut self, name: &str) {
        for b in self.args.iter_mut().filter(|b| b.name == name) {
            b.live = false;
        }
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .config
            .shell
            .clone()
            .unwrap_or_else(default_shell)
    }

    fn argv(&self, cmd: &CommandLine) -> Vec<String> {
        match cmd {
            CommandLine::Exec(v) => v.clone(),
            CommandLine::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    fn workdir(&self) -> String {
        self.config
            .config
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    }

    fn history(&mut self, created_by: String, empty_layer: bool, epoch: Option<i64>) {
        let created = match epoch {
            Some(_) => crate::time::now_or_epoch(epoch),
            None => self.created.clone(),
        };
        self.config.history.push(History {
            created: Some(created),
            created_by: Some(created_by),
            author: None,
            comment: Some(HISTORY_COMMENT.into()),
            empty_layer,
        });
    }

    /// The environment a RUN sees: the image's ENV with the values of
    /// ARGs declared after it, then the ARGs ENV does not name.
    fn run_env(&self) -> Vec<String> {
        let mut env: Vec<String> = self.config.config.env.clone().unwrap_or_default();
        let has_path = env.iter().any(|kv| kv.starts_with("PATH="));
        if !has_path {
            env.insert(0, format!("PATH={}", berth_sandbox::DEFAULT_PATH));
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in &self.args {
            if !seen.insert(b.name.as_str()) {
                continue;
            }
            let Some(v) = self.live_arg(&b.name).and_then(|b| b.value.as_ref()) else {
                continue;
            };
            let kv = format!("{}={v}", b.name);
            let prefix = format!("{}=", b.name);
            match env.iter_mut().find(|e| e.starts_with(&prefix)) {
                Some(e) => *e = kv,
                None => env.push(kv),
            }
        }
        env
    }

    /// Build args shown in RUN's history: `|N k=v ...` (BuildKit's form):
    /// every declaration in scope (repeats too, as the Docker engine's
    /// BuildKit writes them), with the value the variable has now.
    fn args_prefix(&self) -> String {
        let shown: Vec<String> = self
            .args
            .iter()
            .filter(|b| b.declared)
            .map(|b| {
                let v = self
                    .lookup(&b.name)
                    .or_else(|| b.value.clone())
                    .unwrap_or_default();
                format!("{}={v}", b.name)
            })
            .collect();
        if shown.is_empty() {
            String::new()
        } else {
            format!("|{} {} ", shown.len(), shown.join(" "))
        }
    }
}

/// Normalises WORKDIR against the current one (Docker's `path.Join` +
/// `Clean`).
pub fn join_workdir(current: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", current.trim_end_matches('/'), path)
    };
    clean_path(&joined)
}

/// Go's `path.Clean` for absolute paths.
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
}

fn go_quote_list(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

/// Applies one metadata or filesystem instruction.
pub async fn apply(eng: &Arc<Engine>, st: &mut StageState, op: Op, step: &StepInfo) -> Result<()> {
    let epoch = eng.opts.source_date_epoch;
    match op {
        Op::Env(pairs) => {
            let mut shown = Vec::new();
            for (k, v) in pairs {
                st.config.set_env_var(&k, &v);
                st.shadow_args(&k);
                shown.push(format!("{k}={v}"));
            }
            st.history(format!("ENV {}", shown.join(" ")), true, epoch);
        }
        Op::Arg(decls) => {
            // History shows the declaration (default as written), not
            // the value a --build-arg gave it.
            let mut shown = Vec::new();
            for (name, default) in decls {
                shown.push(match &default {
                    Some(d) => format!("{name}={d}"),
                    None => name.clone(),
                });
                let value = eng.arg_value(&name, default);
                st.args.push(ArgBinding {
                    live: value.is_some(),
                    name,
                    value,
                    declared: true,
                });
            }
            st.history(format!("ARG {}", shown.join(" ")), true, epoch);
        }
        Op::Label(pairs) => {
            let mut shown = Vec::new();
            let labels = st.config.config.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in pairs {
                shown.push(format!("{k}={v}"));
                labels.insert(k, v);
            }
            st.history(format!("LABEL {}", shown.join(" ")), true, epoch);
        }
        Op::Expose(ports) => {
            let map = st
                .config
                .config
                .exposed_ports
                .get_or_insert_with(BTreeMap::new);
            // BuildKit prints the instruction's ports as a Go map: sorted, unique.
            let mut shown = std::collections::BTreeSet::new();
            for p in ports {
                for one in expand_port_range(&p)? {
                    shown.insert(one.clone());
                    map.insert(one, json!({}));
                }
            }
            let listed: Vec<String> = shown.iter().map(|p| format!("{p}:{{}}")).collect();
            st.history(format!("EXPOSE map[{}]", listed.join(" ")), true, epoch);
        }
        Op::Volume(vols) => {
            if vols.iter().any(|v| v.is_empty()) {
                return Err(BuildError::Dockerfile(format!(
                    "{}: VOLUME specified can not be an empty string",
                    step.location
                )));
            }
            let map = st.config.config.volumes.get_or_insert_with(BTreeMap::new);
            for v in &vols {
                map.insert(v.clone(), json!({}));
            }
            st.history(format!("VOLUME [{}]", vols.join(" ")), true, epoch);
        }
        Op::User(u) => {
            st.config.config.user = Some(u.clone());
            st.history(format!("USER {u}"), true, epoch);
        }
        Op::Cmd(c) => {
            let argv = st.argv(&c);
            st.history(format!("CMD {}", go_quote_list(&argv)), true, epoch);
            st.config.config.cmd = Some(argv);
            st.cmd_set = true;
        }
        Op::Entrypoint(c) => {
            let argv = st.argv(&c);
            st.history(format!("ENTRYPOINT {}", go_quote_list(&argv)), true, epoch);
            st.config.config.entrypoint = Some(argv);
            if !st.cmd_set {
                st.config.config.cmd = None;
            }
        }
        Op::Shell(v) => {
            st.history(format!("SHELL [{}]", v.join(" ")), true, epoch);
            st.config.config.shell = Some(v);
        }
        Op::StopSignal(s) => {
            st.history(format!("STOPSIGNAL {s}"), true, epoch);
            st.config.config.stop_signal = Some(s);
        }
        Op::Maintainer(m) => {
            st.history(format!("MAINTAINER {m}"), true, epoch);
            st.config.author = Some(m);
        }
        Op::OnBuild(trigger) => {
            // BuildKit records ONBUILD in the config only, not in history.
            st.config
                .config
                .on_build
                .get_or_insert_with(Vec::new)
                .push(trigger);
        }
        Op::Healthcheck(h) => apply_healthcheck(st, h, epoch),
        Op::Workdir(path) => {
            let wd = join_workdir(&st.workdir(), &path);
            st.config.config.working_dir = Some(wd.clone());
            if wd != "/" {
                workdir_step(eng, st, &wd, step).await?;
            } else {
                st.history(format!("WORKDIR {wd}"), true, epoch);
            }
        }
        Op::Run(run) => run_step(eng, st, run, step).await?,
        Op::Copy(c) => copy_step(eng, st, c, step).await?,
    }
    Ok(())
}

fn expand_port_range(p: &str) -> Result<Vec<String>> {
    let (port, proto) = match p.split_once('/') {
        Some((a, b)) => (a, b.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    let bad = || BuildError::Dockerfile(format!("invalid containerPort: {p}"));
    match port.split_once('-') {
        Some((a, b)) => {
            let a: u16 = a.parse().map_err(|_| bad())?;
            let b: u16 = b.parse().map_err(|_| bad())?;
            if b < a {
                return Err(bad());
            }
            Ok((a..=b).map(|n| format!("{n}/{proto}")).collect())
        }
        None => {
            let n: u16 = port.parse().map_err(|_| bad())?;
            Ok(vec![format!("{n}/{proto}")])
        }
    }
}

fn apply_healthcheck(st: &mut StageState, h: HealthcheckOp, epoch: Option<i64>) {
    let test = match &h.test {
        None => vec!["NONE".to_string()],
        Some(CommandLine::Shell(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        Some(CommandLine::Exec(v)) => {
            let mut t = vec!["CMD".to_string()];
            t.extend(v.iter().cloned());
            t
        }
    };
    let nz = |v: Option<i64>| v.filter(|n| *n != 0);
    st.config.config.healthcheck = Some(Healthcheck {
        test: Some(test.clone()),
        interval: nz(h.interval),
        timeout: nz(h.timeout),
        start_period: nz(h.start_period),
        start_interval: nz(h.start_interval),
        retries: nz(h.retries),
    });
    let hc = st.config.config.healthcheck.clone().unwrap_or_default();
    st.history(format!("HEALTHCHECK {}", go_healthcheck(&hc)), true, epoch);
}

/// BuildKit's history text for HEALTHCHECK is Go's `%q` of its config
/// struct: `&{["CMD" "x"] "5s" "3s" "0s" '\x03'}` (durations through
/// their String method, retries as a quoted rune). StartInterval appears
/// only when set (engines that know it print it).
fn go_healthcheck(h: &Healthcheck) -> String {
    let d = |v: Option<i64>| format!("\"{}\"", go_duration(v.unwrap_or(0)));
    let mut fields = vec![
        go_quote_list(h.test.as_deref().unwrap_or_default()),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
    ];
    if h.start_interval.is_some() {
        fields.push(d(h.start_interval));
    }
    fields.push(go_quote_rune(h.retries.unwrap_or(0)));
    format!("&{{{}}}", fields.join(" "))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5s`, `500ms`, `0s`.
pub fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let neg = nanos < 0;
    let n = nanos.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    // Below a second: the largest unit that keeps an integer part.
    let frac = |v: u64, unit: u64| -> String {
        let int = v / unit;
        let rem = v % unit;
        if rem == 0 {
            return int.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let s = format!("{rem:0digits$}");
        format!("{int}.{}", s.trim_end_matches('0'))
    };
    if n < 1_000 {
        return format!("{sign}{n}ns");
    }
    if n < 1_000_000 {
        return format!("{sign}{}µs", frac(n, 1_000));
    }
    if n < 1_000_000_000 {
        return format!("{sign}{}ms", frac(n, 1_000_000));
    }
    let secs = n / 1_000_000_000;
    let sub = n % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let s = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// Go's `%q` of an integer: a single-quoted rune literal.
fn go_quote_rune(v: i64) -> String {
    let named = match v {
        7 => Some("\\a"),
        8 => Some("\\b"),
        9 => Some("\\t"),
        10 => Some("\\n"),
        11 => Some("\\v"),
        12 => Some("\\f"),
        13 => Some("\\r"),
        0x27 => Some("\\'"),
        0x5c => Some("\\\\"),
        _ => None,
    };
    if let Some(n) = named {
        return format!("'{n}'");
    }
    match u32::try_from(v).ok().and_then(char::from_u32) {
        Some(c) if (' '..='~').contains(&c) => format!("'{c}'"),
        Some(c) if (c as u32) < 0x80 => format!("'\\x{:02x}'", c as u32),
        Some(c) if !c.is_control() => format!("'{c}'"),
        Some(c) if (c as u32) <= 0xffff => format!("'\\u{:04x}'", c as u32),
        Some(c) => format!("'\\U{:08x}'", c as u32),
        None => "'\\ufffd'".into(),
    }
}

/// Looks a key up, honouring `--no-cache`.
fn cached(eng: &Engine, key: &CacheKey) -> Option<CacheRecord> {
    if eng.opts.no_cache {
        return None;
    }
    eng.cache
        .get(key, |d| eng.opts.blobs.size(d).ok().flatten().is_some())
        .or_else(|| eng.opts.remote_cache.as_ref()?.lookup(key))
}

/// Records a step's outcome on the stage (cached or fresh).
fn adopt_result(
    st: &mut StageState,
    key: CacheKey,
    record: &CacheRecord,
    created_by: String,
    epoch: Option<i64>,
) {
    st.key = key;
    if let Some(l) = &record.layer {
        st.layers.push(l.clone());
        st.config.rootfs.diff_ids.push(l.diff_id.clone());
        st.created = record.created.clone();
    }
    st.history(created_by, record.layer.is_none(), epoch);
}

pub(crate) fn layer_media_type(c: LayerCompression) -> (&'static str, berth_layer::Compression) {
    match c {
        LayerCompression::Gzip => (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            berth_layer::Compression::Gzip { level: 6 },
        ),
        LayerCompression::Zstd => (
            "application/vnd.oci.image.layer.v1.tar+zstd",
            berth_layer::Compression::Zstd { level: 3 },
        ),
        LayerCompression::Uncompressed => (
            "application/vnd.oci.image.layer.v1.tar",
            berth_layer::Compression::None,
        ),
    }
}

/// Runs `work` (which changes the files of `scratch.upper` on top of the
/// stage's layers) off the async threads, then turns the upper directory
/// into a layer and records it under `key`.
/// How a step's own work is throttled by `--jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// berth's CPU work (COPY, mkdir): holds a job slot.
    Berth,
    /// A RUN process: it runs without a slot (it mostly waits on the
    /// network, the disk or `sleep`, and BuildKit does not throttle it
    /// either); unpacking before and diffing after it still take one.
    Process,
}

/// Runs `work` (which changes the files of `scratch.upper` on top of the
/// stage's layers) off the async threads, then turns the upper directory
/// into a layer and records it under `key`. Unpacking, `Work::Berth` work
/// and the diff + compression each hold one of the `--jobs` slots.
async fn fs_step<F>(
    eng: &Arc<Engine>,
    st: &mut StageState,
    key: CacheKey,
    created_by: String,
    kind: Work,
    work: F,
) -> Result<()>
where
    F: FnOnce(&[PathBuf], &crate::snapshots::Scratch) -> Result<()> + Send + 'static,
{
    let join = |e: tokio::task::JoinError| BuildError::Other(format!("step task failed: {e}"));
    let slot = || async {
        eng.jobs
            .acquire()
            .await
            .map_err(|e| BuildError::Other(e.to_string()))
    };
    let epoch = eng.opts.source_date_epoch;
    let prepared = {
        let _permit = slot().await?;
        let eng2 = Arc::clone(eng);
        let layers = st.layers.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            Ok((eng2.lowers(&layers)?, eng2.snapshots.scratch()?))
        })
        .await
        .map_err(join)??
    };
    let (lowers, scratch) = prepared;
    let (lowers, scratch) = {
        let _permit = match kind {
            Work::Berth => Some(slot().await?),
            Work::Process => None,
        };
        tokio::task::spawn_blocking(move || -> Result<_> {
            work(&lowers, &scratch)?;
            scratch.settle(&lowers)?;
            Ok((lowers, scratch))
        })
        .await
        .map_err(join)??
    };
    // The upper dir becomes the step's snapshot now; the layer (tar, diff_id,
    // compression, blob) is made in the background while the next steps
    // run on the snapshot. The stage carries a provisional layer until the
    // build resolves it (Engine::finish_layers).
    let snapshot = {
        let eng2 = Arc::clone(eng);
        let k = key.0.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let snap = eng2.snapshots.adopt_key(&scratch, &k)?;
            drop(scratch);
            Ok(snap)
        })
        .await
        .map_err(join)??
    };
    let created = crate::time::now_or_epoch(epoch);
    let (media_type, compression) = layer_media_type(eng.opts.compression);
    let provisional = if st.in_image {
        eng.layer_in_background(
            key.clone(),
            snapshot,
            lowers,
            created.clone(),
            media_type,
            compression,
        )
    } else {
        eng.snapshot_layer(&key, &snapshot, &created, media_type)
    };
    let record = CacheRecord {
        layer: Some(provisional),
        created,
    };
    let parent = st.key.clone();
    adopt_result(st, key, &record, created_by, epoch);
    crate::remote_cache::note(eng, &parent, st);
    Ok(())
}

async fn workdir_step(
    eng: &Arc<Engine>,
    st: &mut StageState,
    wd: &str,
    step: &StepInfo,
) -> Result<()> {
    let user = st.config.config.user.clone().unwrap_or_default();
    let key = CacheKey::of(&json!({
        "parent": st.key, "op": "mkdir", "path": wd, "user": user,
    }));
    let created_by = format!("WORKDIR {wd}");
    let Some((id, started)) = begin_step(eng, st, &key, &created_by, step) else {
        return Ok(());
    };
    let wd2 = wd.to_string();
    let user2 = user.clone();
    let location = step.location.clone();
    let result = fs_step(
        eng,
        st,
        key.clone(),
        created_by,
        Work::Berth,
        move |lowers, scratch| {
            let (uid, gid) = if user2.is_empty() {
                (0, 0)
            } else {
                let (u, g, _) = crate::users::resolve_user(&user2, lowers)
                    .map_err(|e| BuildError::Step(format!("{location}: WORKDIR: {e}")))?;
                (u, g)
            };
            let merged = scratch.base.join("merged");
            std::fs::create_dir_all(&merged)?;
            let guard = scratch.mount(lowers, &merged)?;
            let root = fsops::open_root(&merged)?;
            use std::os::fd::AsRawFd;
            fsops::mkdir_all(root.as_raw_fd(), Path::new(&wd2), uid, gid)
                .map_err(|e| BuildError::Step(format!("{location}: WORKDIR {wd2}: {e}")))?;
            drop(root);
            guard.unmount()?;
            Ok(())
        },
    )
    .await;
    finish(eng, id, started, result)
}

/// Announces a filesystem step and answers it from the cache when its key
/// is there (the stage adopts the recorded layer): `None` then. Otherwise
/// the progress id and start time for [`finish`].
fn begin_step(
    eng: &Engine,
    st: &mut StageState,
    key: &CacheKey,
    created_by: &str,
    step: &StepInfo,
) -> Option<(usize, Instant)> {
    if let Some(stage) = crate::remote_cache::dry_stage() {
        dry_step(eng, st, key, created_by, stage);
        return None;
    }
    let id = eng
        .opts
        .progress
        .start(format!("{} {}", step.label, step.text));
    match cached(eng, key) {
        Some(rec) => {
            eng.opts.progress.emit(Event::Cached { id });
            let parent = st.key.clone();
            adopt_result(
                st,
                key.clone(),
                &rec,
                created_by.to_string(),
                eng.opts.source_date_epoch,
            );
            crate::remote_cache::note(eng, &parent, st);
            None
        }
        None => Some((id, Instant::now())),
    }
}

/// A step of a lazy stage's key-only pass (see `remote_cache`): a hit
/// adopts its layer, a miss a placeholder for the layer the stage's real
/// run will make. Nothing runs and nothing is shown.
fn dry_step(eng: &Engine, st: &mut StageState, key: &CacheKey, created_by: &str, stage: usize) {
    let record = cached(eng, key).unwrap_or_else(|| CacheRecord {
        layer: Some(crate::remote_cache::placeholder(
            stage,
            st.layers.len(),
            key,
        )),
        created: st.created.clone(),
    });
    adopt_result(
        st,
        key.clone(),
        &record,
        created_by.to_string(),
        eng.opts.source_date_epoch,
    );
}

fn finish(eng: &Engine, id: usize, started: Instant, result: Result<()>) -> Result<()> {
    match &result {
        Ok(()) => eng.opts.progress.emit(Event::Done {
            id,
            elapsed: started.elapsed(),
        }),
        Err(e) => eng.opts.progress.emit(Event::Failed {
            id,
            error: e.to_string(),
        }),
    }
    result
}

/// The last lines of a failed step's output, for the error message.
struct Tail {
    lines: std::collections::VecDeque<String>,
    partial: Vec<u8>,
}

impl Tail {
    const KEEP: usize = 10;

    fn push_bytes(&mut self, data: &[u8], mut emit: impl FnMut(String)) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                emit(line.clone());
                if self.lines.len() == Self::KEEP {
                    self.lines.pop_front();
                }
                self.lines.push_back(line);
            } else {
                self.partial.push(b);
            }
        }
    }
}

async fn run_step(
    eng: &Arc<Engine>,
    st: &mut StageState,
    run: RunOp,
    step: &StepInfo,
) -> Result<()> {
    let mut argv = st.argv(&run.command);
    // Heredocs: the shell gets the body or the rebuilt script (crate::heredoc).
    let script = match &run.command {
        CommandLine::Shell(cmd) => crate::heredoc::run_script(cmd, &run.heredocs),
        CommandLine::Exec(_) => None,
    };
    let script_file = script.as_ref().and_then(|s| s.file.clone());
    if let Some(s) = script {
        argv = st.shell();
        argv.push(s.arg);
    }
    let env = st.run_env();
    let user = st.config.config.user.clone().unwrap_or_default();
    let cwd = st.workdir();
    let network = match run.network.as_deref() {
        Some(n) => NetworkMode::parse(n)
            .map_err(|e| BuildError::Dockerfile(format!("{}: {e}", step.location)))?,
        None => eng.opts.network,
    };
    if network == NetworkMode::Host && !eng.opts.allow_network_host {
        return Err(BuildError::Dockerfile(format!(
            "{}: network mode \"host\" needs the network.host entitlement: add --allow network.host to berth build (the step then shares the host's network, loopback services included)",
            step.location
        )));
    }
    // RUN --mount: their spec (and bound content) is part of the key.
    let mounts = crate::mounts::prepare(eng, &run.mounts, &cwd, step).await?;
    let mut key_def = json!({
        "parent": st.key, "op": "run", "args": argv, "env": env, "user": user,
        "cwd": cwd, "network": network.as_str(),
    });
    if let Some(m) = mounts.key() {
        key_def["mounts"] = m;
    }
    let key = CacheKey::of(&key_def);
    let key = crate::heredoc::key_with_script(key, script_file.as_ref());
    let created_by = match &run.command {
        CommandLine::Shell(_) => format!("RUN {}{} # buildkit", st.args_prefix(), argv.join(" ")),
        // BuildKit joins exec-form arguments with spaces, unquoted.
        CommandLine::Exec(v) => format!("RUN {}{} # buildkit", st.args_prefix(), v.join(" ")),
    };
    let Some((id, started)) = begin_step(eng, st, &key, &created_by, step) else {
        return Ok(());
    };
    let progress = eng.opts.progress.clone();
    let helper = eng.opts.helper_exe.clone();
    let hosts = eng.hosts.clone();
    let (sandbox_network, resolv) = eng.step_network(network);
    let location = step.location.clone();
    let text = step.text.clone();
    let full_range = eng.opts.full_id_range;
    let result = fs_step(eng, st, key.clone(), created_by, Work::Process, move |lowers, scratch| {
        let (uid, gid, groups) = if user.is_empty() {
            (0, 0, Vec::new())
        } else {
            crate::users::resolve_user(&user, lowers)
                .map_err(|e| BuildError::Step(format!("{location}: {text}: {e}")))?
        };
        // runc sets HOME from the user's passwd entry ("/" without one)
        // when the environment has none; BuildKit's steps see it.
        let mut env = env;
        if !env.iter().any(|kv| kv.starts_with("HOME=")) {
            env.push(format!("HOME={}", crate::users::home_dir(uid, lowers)));
        }
        if !full_range && (uid != 0 || gid != 0) {
            return Err(BuildError::Step(format!(
                "{location}: {text}: running as user {uid}:{gid} needs a mapped id range: install uidmap and add a range for your user to /etc/subuid and /etc/subgid"
            )));
        }
        let mut spec = berth_sandbox::RunSpec::new(scratch.rootfs(lowers)?, argv);
        spec.helper_exe = helper;
        spec.env = env;
        spec.cwd = PathBuf::from(&cwd);
        spec.uid = uid;
        spec.gid = gid;
        spec.additional_gids = groups;
        spec.hosts = Some(hosts);
        spec.resolv_conf = Some(resolv);
        spec.network = sandbox_network;
        spec.mounts.extend(crate::heredoc::script_mount(script_file.as_ref(), &scratch.base)?);
        let mut active = mounts.activate(&location)?;
        active.apply_env(&mut spec.env);
        spec.mounts.append(&mut active.mounts);
        let mut tail = Tail {
            lines: Default::default(),
            partial: Vec::new(),
        };
        let t0 = Instant::now();
        let status = berth_sandbox::run(&spec, &mut |_, data| {
            tail.push_bytes(data, |line| {
                progress.emit(Event::Output {
                    id,
                    line: format!("{:.3} {line}", t0.elapsed().as_secs_f64()),
                })
            })
        })
        .map_err(|e| BuildError::Sandbox(format!("{location}: {text}: {e}")))?;
        if !tail.partial.is_empty() {
            let line = String::from_utf8_lossy(&tail.partial).into_owned();
            tail.lines.push_back(line);
        }
        if !status.success() {
            let code = match status.code() {
                Some(c) => format!("exit code: {c}"),
                None => format!("{status}"),
            };
            let out: Vec<String> = tail.lines.iter().map(|l| format!("    {l}")).collect();
            return Err(BuildError::Step(format!(
                "{location}: process \"{}\" did not complete successfully: {code}{}",
                spec.args.join(" "),
                if out.is_empty() { String::new() } else { format!("\n  last output:\n{}", out.join("\n")) }
            )));
        }
        Ok(())
    })
    .await;
    finish(eng, id, started, result)
}

/// Where COPY reads from.
pub enum CopyFrom {
    Context,
    /// A stage's or image's filesystem: its layers and its key.
    Layers {
        layers: Vec<LayerRef>,
        key: CacheKey,
    },
}

async fn copy_step(
    eng: &Arc<Engine>,
    st: &mut StageState,
    c: CopyOp,
    step: &StepInfo,
) -> Result<()> {
    let what = if c.add { "ADD" } else { "COPY" };
    if c.sources.is_empty() && c.heredocs.is_empty() {
        return Err(BuildError::Dockerfile(format!(
            "{}: {what} requires at least two arguments",
            step.location
        )));
    }
    // ADD's URL and git sources are fetched (crate::remote_source); the
    // rest are paths of the context or of `--from`.
    let mut c = c;
    let shown_sources = c.sources.clone();
    let (remote_srcs, local_srcs): (Vec<String>, Vec<String>) = c
        .sources
        .iter()
        .cloned()
        .partition(|s| crate::remote_source::is_remote(s));
    if !remote_srcs.is_empty() && (!c.add || c.from.is_some()) {
        return Err(BuildError::Dockerfile(format!(
            "{}: source can't be a URL for COPY (use ADD to fetch {})",
            step.location, remote_srcs[0]
        )));
    }
    if c.checksum.is_some() && (!local_srcs.is_empty() || !c.heredocs.is_empty()) {
        return Err(BuildError::Dockerfile(format!(
            "{}: checksum can't be specified for non-HTTP(S) sources",
            step.location
        )));
    }
    c.sources = local_srcs;
    let fetch_dir = if remote_srcs.is_empty() {
        None
    } else {
        Some(Arc::new(eng.snapshots.scratch()?))
    };
    let mut remotes = Vec::new();
    for (i, src) in remote_srcs.iter().enumerate() {
        let Some(remote) = crate::remote_source::classify(src) else {
            continue;
        };
        let dir = fetch_dir
            .as_ref()
            .map(|d| d.base.join(format!("src-{i}")))
            .unwrap_or_default();
        let r = crate::remote_source::resolve(remote, c.checksum.as_deref(), c.keep_git_dir, dir)
            .await
            .map_err(|e| BuildError::Step(format!("{}: {what} {src}: {e}", step.location)))?;
        remotes.push((src.clone(), r));
    }
    let from = eng.copy_source(c.from.as_deref(), step).await?;
    let workdir = st.workdir();
    let dest_is_dir_syntax = c.dest.ends_with('/') || c.dest.ends_with("/.") || c.dest == ".";
    let dest = if c.dest.starts_with('/') {
        c.dest.clone()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), c.dest)
    };
    // Several sources need a directory destination written as one; a
    // wildcard is checked when it is matched (one match copies like a
    // plain source, more make the destination a directory).
    let several = shown_sources.len() + c.heredocs.len() > 1;
    if several && !dest_is_dir_syntax {
        return Err(BuildError::Dockerfile(format!(
            "{}: When using {what} with more than one source file, the destination must be a directory and end with a /",
            step.location
        )));
    }
    let chmod = match &c.chmod {
        None => None,
        Some(m) => Some(
            crate::copy::Chmod::parse(m)
                .map_err(|e| BuildError::Dockerfile(format!("{}: {e}", step.location)))?,
        ),
    };
    let chmod_key = match &chmod {
        Some(crate::copy::Chmod::Octal(m)) => json!(m),
        Some(crate::copy::Chmod::Symbolic(_)) => json!(c.chmod),
        None => Value::Null,
    };
    // Cache key: content checksums of exactly what is read.
    let sources_key = match &from {
        CopyFrom::Context if c.sources.is_empty() => Value::Null,
        CopyFrom::Context => {
            let ctx = eng.context(step)?;
            let patterns = c.sources.clone();
            let excludes = berth_context::IgnoreMatcher::new(&c.excludes).map_err(|e| {
                BuildError::Dockerfile(format!("{}: --exclude: {e}", step.location))
            })?;
            let ctx2 = Arc::clone(&ctx);
            let sum =
                tokio::task::spawn_blocking(move || ctx2.checksum_excluding(&patterns, &excludes))
                    .await
                    .map_err(|e| BuildError::Other(e.to_string()))?
                    .map_err(|e| {
                        BuildError::Context(format!(
                            "{}: {what} {}: {e}",
                            step.location,
                            c.sources.join(" ")
                        ))
                    })?;
            json!({"context": sum.hex()})
        }
        CopyFrom::Layers { key, .. } => json!({"stage": key, "paths": c.sources}),
    };
    let heredocs: Vec<Value> = c
        .heredocs
        .iter()
        .map(|h| json!([h.name, h.content]))
        .collect();
    let remote_keys: Vec<Value> = remotes.iter().map(|(_, r)| r.key.clone()).collect();
    // --link: the copy is made on an empty root, so its key leaves out the
    // layers below (a user *name* in --chown is still read from them).
    let parent_key = st.key.clone();
    let chown_reads_parent = c
        .chown
        .as_deref()
        .is_some_and(|o| !o.split(':').all(|p| p.bytes().all(|b| b.is_ascii_digit())));
    let key_parent = if c.link && !chown_reads_parent {
        json!("link")
    } else {
        json!(parent_key)
    };
    let key = CacheKey::of(&json!({
        "parent": key_parent, "op": if c.add { "add" } else { "copy" }, "sources": sources_key,
        "dest": dest, "dest_dir": dest_is_dir_syntax || several, "chown": c.chown, "chmod": chmod_key,
        "excludes": c.excludes, "parents": c.parents, "heredocs": heredocs, "workdir": workdir,
        "remote": remote_keys, "link": c.link,
    }));
    let mut shown = shown_sources.clone();
    shown.extend(c.heredocs.iter().map(|h| format!("<<{}", h.name)));
    let created_by = format!("{what} {} {} # buildkit", shown.join(" "), c.dest);
    let link = c.link;
    let Some((id, started)) = begin_step(eng, st, &key, &created_by, step) else {
        if link {
            st.key = link_key(&parent_key, &key);
        }
        return Ok(());
    };
    let eng2 = Arc::clone(eng);
    let location = step.location.clone();
    let runtime = tokio::runtime::Handle::current();
    let checksum = c.checksum.clone();
    let parent_layers = st.layers.clone();
    // --link: the step sees an empty root; its layer goes on top as is.
    let below = if link {
        Some(std::mem::take(&mut st.layers))
    } else {
        None
    };
    let result = fs_step(
        eng,
        st,
        key.clone(),
        created_by,
        Work::Berth,
        move |lowers, scratch| {
            let owner = match &c.chown {
                Some(spec) => {
                    let parent_lowers;
                    let users_from = if link {
                        parent_lowers = eng2.lowers(&parent_layers)?;
                        &parent_lowers[..]
                    } else {
                        lowers
                    };
                    let (u, g) = crate::users::resolve_chown(spec, users_from)
                        .map_err(|e| BuildError::Step(format!("{location}: {e}")))?;
                    Owner::Fixed(u, g)
                }
                None => match from {
                    CopyFrom::Context => Owner::Fixed(0, 0),
                    CopyFrom::Layers { .. } => Owner::Preserve,
                },
            };
            let merged = scratch.base.join("merged");
            std::fs::create_dir_all(&merged)?;
            let mut mount = Some(scratch.mount(lowers, &merged)?);
            let mut dst_root = fsops::open_root(&merged)?;
            use std::os::fd::AsRawFd;
            // Symlinks on the destination, the last one included, are
            // followed inside the image (dangling ones too: their target is
            // created), as BuildKit's copy resolves it with `fs.RootPath`.
            let resolved_dest = Path::new("/").join(
                fsops::resolve_in_root(dst_root.as_raw_fd(), Path::new(&dest))
                    .map_err(|e| BuildError::Step(format!("{location}: {dest}: {e}")))?,
            );
            // The destination counts as a directory if it already is one.
            let dest_path = resolved_dest.as_path();
            let existing_dir = fsops::lstat_in_root(dst_root.as_raw_fd(), dest_path)
                .ok()
                .flatten()
                .is_some_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR);
            // --parents always copies into dest as a directory.
            let dest_is_dir = dest_is_dir_syntax || several || existing_dir || c.parents;
            let excludes = berth_context::IgnoreMatcher::new(&c.excludes)
                .map_err(|e| BuildError::Dockerfile(format!("{location}: --exclude: {e}")))?;
            // Heredoc files.
            for doc in &c.heredocs {
                let dir = if dest_is_dir {
                    dest_path.to_path_buf()
                } else {
                    dest_path.parent().unwrap_or(Path::new("/")).to_path_buf()
                };
                let name = if dest_is_dir {
                    doc.name.clone()
                } else {
                    dest_path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                };
                let (u, g) = match owner {
                    Owner::Fixed(u, g) => (u, g),
                    Owner::Preserve => (0, 0),
                };
                let dfd = fsops::mkdir_all(dst_root.as_raw_fd(), &dir, u, g)?;
                let meta = fsops::Meta {
                    mode: chmod.as_ref().map_or(0o644, |m| m.apply(0o644, false)),
                    uid: u,
                    gid: g,
                    mtime: libc::timespec {
                        tv_sec: eng2.opts.source_date_epoch.unwrap_or(0),
                        tv_nsec: 0,
                    },
                };
                fsops::write_file(
                    dfd.as_raw_fd(),
                    std::ffi::OsStr::new(&name),
                    &mut doc.content.as_bytes(),
                    meta,
                )?;
            }
            // Fetched sources: files and checkouts owned by root (or --chown).
            let fetched_owner = match owner {
                Owner::Fixed(u, g) => Owner::Fixed(u, g),
                Owner::Preserve => Owner::Fixed(0, 0),
            };
            for (src, r) in &remotes {
                let fail = |e: String| BuildError::Step(format!("{location}: {what} {src}: {e}"));
                let (dir, rel) = runtime
                    .block_on(crate::remote_source::materialize(r, checksum.as_deref()))
                    .map_err(fail)?;
                let is_git = matches!(r.remote, crate::remote_source::Remote::Git(_));
                if is_git {
                    if let Some(t) = crate::remote_source::commit_time(&dir) {
                        crate::remote_source::set_tree_mtime(&dir, t)?;
                    }
                }
                let keep_git = c.keep_git_dir;
                let git_dir = rel.join(".git");
                let skip = |p: &Path| {
                    (is_git && !keep_git && p == git_dir)
                        || p.strip_prefix(&rel)
                            .is_ok_and(|q| excludes.is_excluded(&q.to_string_lossy()))
                };
                let opts = CopyOptions {
                    owner: fetched_owner,
                    chmod: chmod.clone(),
                    skip: &skip,
                    extract_archives: false,
                    file_cache: None,
                };
                let src_root = fsops::open_root(&dir)?;
                copy_source(
                    src_root.as_raw_fd(),
                    &rel,
                    dst_root.as_raw_fd(),
                    dest_path,
                    dest_is_dir || is_git,
                    &opts,
                )
                .map_err(|e| fail(e.to_string()))?;
            }
            drop(fetch_dir);
            match &from {
                CopyFrom::Context => {
                    let ctx = eng2.context_blocking()?;
                    let sources = ctx
                        .resolve_sources(&c.sources)
                        .map_err(|e| BuildError::Context(format!("{location}: {e}")))?;
                    let dest_is_dir = dest_is_dir || sources.len() > 1;
                    let skip = |_: &Path| false;
                    let mut opts = CopyOptions {
                        owner,
                        chmod,
                        skip: &skip,
                        extract_archives: c.add,
                        file_cache: None,
                    };
                    // One directory into a path the image does not have yet
                    // (`COPY . /src`): create the path through the overlay
                    // (copying up its parents), then fill it directly in the
                    // upper dir with files linked from the file cache. Nothing
                    // below it can collide with the lower layers, and a
                    // rebuild after a small change copies only that change.
                    // (Copy-based snapshots take the changes from the
                    // copied tree instead.)
                    let direct = scratch.snapshotter() == crate::snapshots::Snapshotter::Overlay
                        && c.heredocs.is_empty()
                        && remotes.is_empty()
                        && !c.parents
                        && sources.len() == 1
                        && sources[0].kind == berth_context::FileKind::Dir
                        && fsops::lstat_in_root(dst_root.as_raw_fd(), dest_path)?.is_none();
                    if direct {
                        let (u, g) = match owner {
                            Owner::Fixed(u, g) => (u, g),
                            Owner::Preserve => (0, 0),
                        };
                        let made = fsops::mkdir_all(dst_root.as_raw_fd(), dest_path, u, g)?;
                        let real =
                            std::fs::read_link(format!("/proc/self/fd/{}", made.as_raw_fd()))?;
                        let merged_real = std::fs::canonicalize(&merged)?;
                        let inside = real
                            .strip_prefix(&merged_real)
                            .map(Path::to_path_buf)
                            .map_err(|_| {
                                BuildError::Step(format!(
                                    "{location}: {dest} resolved outside the image root"
                                ))
                            })?;
                        drop(made);
                        drop(std::mem::replace(
                            &mut dst_root,
                            fsops::open_root(&scratch.upper)?,
                        ));
                        mount.take().map(|g| g.unmount()).transpose()?;
                        opts.file_cache = Some(&eng2.files);
                        let target = Path::new("/").join(inside);
                        crate::copy::copy_context_source(
                            &ctx,
                            &sources[0],
                            &excludes,
                            dst_root.as_raw_fd(),
                            &target,
                            true,
                            &opts,
                        )
                        .map_err(|e| {
                            BuildError::Step(format!(
                                "{location}: {}: {e}",
                                sources[0].path.display()
                            ))
                        })?;
                    } else {
                        for s in sources {
                            // --parents: under dest at the source's own path.
                            let target = if c.parents {
                                dest_path.join(crate::copy::parents_rel(
                                    &s.pattern,
                                    &s.path,
                                    s.kind == berth_context::FileKind::Dir,
                                ))
                            } else {
                                dest_path.to_path_buf()
                            };
                            crate::copy::copy_context_source(
                                &ctx,
                                &s,
                                &excludes,
                                dst_root.as_raw_fd(),
                                &target,
                                dest_is_dir,
                                &opts,
                            )
                            .map_err(|e| {
                                BuildError::Step(format!("{location}: {}: {e}", s.path.display()))
                            })?;
                        }
                    }
                }
                CopyFrom::Layers { layers, .. } => {
                    let src_lowers = eng2.lowers(layers)?;
                    let view = eng2.snapshots.scratch()?;
                    let src_merged = view.base.join("merged");
                    std::fs::create_dir_all(&src_merged)?;
                    let src_guard = view.mount(&src_lowers, &src_merged)?;
                    let src_root = fsops::open_root(&src_merged)?;
                    let skip = |rel: &Path| excludes.is_excluded(&rel.to_string_lossy());
                    let opts = CopyOptions {
                        owner,
                        chmod,
                        skip: &skip,
                        extract_archives: false,
                        file_cache: None,
                    };
                    let mut all = Vec::new();
                    for pattern in &c.sources {
                        let matches = crate::plan::glob_in_root(src_root.as_raw_fd(), pattern)
                            .map_err(|e| BuildError::Step(format!("{location}: {e}")))?;
                        if matches.is_empty() {
                            return Err(BuildError::Step(format!(
                                "{location}: failed to compute cache key: \"{pattern}\" not found"
                            )));
                        }
                        all.extend(matches.into_iter().map(|m| (pattern, m)));
                    }
                    let dest_is_dir = dest_is_dir || all.len() > 1;
                    for (pattern, m) in all {
                        let target = if c.parents {
                            let is_dir = fsops::lstat_in_root(src_root.as_raw_fd(), &m)
                                .ok()
                                .flatten()
                                .is_some_and(|s| s.st_mode & libc::S_IFMT == libc::S_IFDIR);
                            dest_path.join(crate::copy::parents_rel(pattern, &m, is_dir))
                        } else {
                            dest_path.to_path_buf()
                        };
                        copy_source(
                            src_root.as_raw_fd(),
                            &m,
                            dst_root.as_raw_fd(),
                            &target,
                            dest_is_dir,
                            &opts,
                        )
                        .map_err(|e| {
                            BuildError::Step(format!("{location}: {}: {e}", m.display()))
                        })?;
                    }
                    drop(src_root);
                    src_guard.unmount()?;
                }
            }
            drop(dst_root);
            if let Some(g) = mount {
                g.unmount()?;
            }
            Ok(())
        },
    )
    .await;
    if let Some(mut below) = below {
        // The layers below come back under the --link layer, and what
        // follows depends on both.
        below.append(&mut st.layers);
        st.layers = below;
        if result.is_ok() {
            st.key = link_key(&parent_key, &key);
        }
    }
    finish(eng, id, started, result)
}

/// The filesystem key after a `--link` copy: the layers below and the
/// copy's own (parent-independent) key.
fn link_key(parent: &CacheKey, copy: &CacheKey) -> CacheKey {
    CacheKey::of(&json!({"parent": parent, "link": copy}))
}

pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> StageState {
        StageState {
            config: ImageConfig::default(),
            layers: Vec::new(),
            key: CacheKey::of(&json!({"test": 1})),
            args: Vec::new(),
            created: String::new(),
            cmd_set: false,
            in_image: true,
        }
    }

    fn arg(st: &mut StageState, name: &str, value: Option<&str>) {
        st.args.push(ArgBinding {
            name: name.into(),
            value: value.map(str::to_string),
            live: value.is_some(),
            declared: true,
        });
    }

    #[test]
    fn last_of_env_and_arg_wins() {
        let mut st = state();
        arg(&mut st, "V", Some("from-arg"));
        assert_eq!(st.lookup("V").as_deref(), Some("from-arg"));
        st.config.set_env_var("V", "from-env");
        st.shadow_args("V");
        assert_eq!(st.lookup("V").as_deref(), Some("from-env"));
        arg(&mut st, "V", Some("again"));
        assert_eq!(st.lookup("V").as_deref(), Some("again"));
        assert!(st.run_env().contains(&"V=again".to_string()));
        // A redeclaration without a value keeps the current one.
        arg(&mut st, "V", None);
        assert_eq!(st.lookup("V").as_deref(), Some("again"));
        assert_eq!(st.args_prefix(), "|3 V=again V=again V=again ");
    }

    #[test]
    fn inherited_args_stay_in_env_but_not_in_history() {
        let mut st = state();
        arg(&mut st, "A", Some("1"));
        arg(&mut st, "NOVALUE", None);
        st.inherit_args();
        assert_eq!(st.lookup("A").as_deref(), Some("1"));
        assert_eq!(st.args_prefix(), "");
        arg(&mut st, "B", None);
        assert_eq!(st.args_prefix(), "|1 B= ");
    }

    #[test]
    fn go_duration_strings() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(7_200_000_000_000), "2h0m0s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(1_500), "1.5µs");
    }

    #[test]
    fn healthcheck_history_is_gos_struct_quote() {
        let h = Healthcheck {
            test: Some(vec!["CMD-SHELL".into(), "true".into()]),
            interval: Some(5_000_000_000),
            retries: Some(4),
            ..Default::default()
        };
        assert_eq!(
            go_healthcheck(&h),
            r#"&{["CMD-SHELL" "true"] "5s" "0s" "0s" '\x04'}"#
        );
        assert_eq!(go_quote_rune(10), r"'\n'");
        assert_eq!(go_quote_rune(65), "'A'");
    }

    #[test]
    fn expose_ranges() {
        assert_eq!(expand_port_range("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_port_range("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(
            expand_port_range("1-3").unwrap(),
            vec!["1/tcp", "2/tcp", "3/tcp"]
        );
        assert!(expand_port_range("3-1").is_err());
    }
}
