//! Runs the stages a target needs, concurrently: every stage is a task that
//! waits for the stages it reads from (its base, `COPY --from`) and runs
//! its instructions in order; independent stages overlap. A semaphore caps
//! the steps that run at once (`--jobs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use berth_oci::ImageConfig;
use serde_json::json;
use tokio::sync::{watch, Semaphore};

use crate::cache::{CacheIndex, CacheKey, LayerRef};
use crate::image::{resolve_base, BaseImage, BuiltImage};
use crate::plan::{BaseRef, Plan};
use crate::progress::Event;
use crate::snapshots::Snapshots;
use crate::stage::{CopyFrom, StageState, StepInfo};
use crate::NetworkMode;
use crate::{BuildError, BuildOptions, Platform, Result};

/// The background task making one layer.
type LayerTask = tokio::task::JoinHandle<Result<LayerRef>>;

/// diff_id prefix of a layer still being made in the background.
pub(crate) const PENDING: &str = "pending:";

type StageOutcome = Option<std::result::Result<Arc<StageState>, String>>;

/// State shared by the stages of one build.
pub struct Engine {
    pub opts: BuildOptions,
    pub snapshots: Snapshots,
    /// Context files by content, linked into COPY layers.
    pub files: crate::copy::FileCache,
    pub cache: CacheIndex,
    pub jobs: Semaphore,
    /// Slots for making layers in the background: separate from `jobs`, so
    /// a step on the critical path never waits behind an earlier step's
    /// compression.
    layer_jobs: Semaphore,
    pub hosts: Vec<u8>,
    pub resolv: Vec<u8>,
    plan: Arc<Plan>,
    results: Vec<watch::Sender<StageOutcome>>,
    /// Stages that run only when their files are needed (remote cache).
    pub(crate) lazy: crate::remote_cache::LazyStages,
    context: OnceLock<std::result::Result<Arc<berth_context::Context>, String>>,
    empty_dir: PathBuf,
    used_args: Mutex<BTreeSet<String>>,
    /// Layers being made in the background: provisional diff_id ->
    /// (the step's snapshot, the task making the layer).
    in_flight: Mutex<BTreeMap<String, (PathBuf, LayerTask)>>,
    /// Layers made by this build, verified but not yet published, with the
    /// cache records to write once they are.
    pending: Mutex<Vec<(berth_store::StagedBlob, CacheKey, crate::cache::CacheRecord)>>,
    /// Cache records of snapshot-only layers, written with the others.
    snapshot_records: Mutex<Vec<(CacheKey, crate::cache::CacheRecord)>>,
    /// Base images resolved once per name, however many stages use them.
    bases: Mutex<BTreeMap<String, Arc<tokio::sync::OnceCell<BaseImage>>>>,
    /// `RUN --mount` state of this build (ssh forwarding).
    pub mounts: crate::mounts::MountState,
    /// What `--network default` becomes here, decided at the first RUN.
    default_network: OnceLock<berth_sandbox::Network>,
}

/// What a build made.
pub struct BuildResult {
    pub image: BuiltImage,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
}

/// The host's resolv.conf with its name servers replaced by slirp4netns's
/// forwarder (a loopback resolver such as systemd-resolved's 127.0.0.53 is
/// not reachable from the step); search domains and options are kept.
fn slirp_resolv_conf(host: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(host);
    let mut out = format!("nameserver {}\n", berth_sandbox::SLIRP_DNS);
    for line in text.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        if matches!(word, "search" | "domain" | "options" | "sortlist") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// BuildKit's `/etc/hosts` for steps.
const HOSTS: &str =
    "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n";

impl Engine {
    /// The sandbox network and `/etc/resolv.conf` of a RUN step in `mode`.
    /// `default` is an isolated namespace with outbound access through
    /// slirp4netns; where it cannot run, loopback only (never the host's
    /// network: that takes `--network host --allow network.host`), with one
    /// warning per build that names the reason.
    pub(crate) fn step_network(&self, mode: NetworkMode) -> (berth_sandbox::Network, Vec<u8>) {
        use berth_sandbox::Network;
        let net = match mode {
            NetworkMode::Host => Network::Host,
            NetworkMode::None => Network::None,
            NetworkMode::Default => *self.default_network.get_or_init(|| {
                match berth_sandbox::isolated_network() {
                    Ok(_) => Network::Isolated,
                    Err(why) => {
                        self.opts.progress.emit(Event::Warning(format!(
                            "RUN steps have no outbound network: {why}; to share the host's network instead use --network host --allow network.host"
                        )));
                        Network::None
                    }
                }
            }),
        };
        let resolv = match net {
            Network::Isolated => slirp_resolv_conf(&self.resolv),
            _ => self.resolv.clone(),
        };
        (net, resolv)
    }

    /// The value of `ARG name[=default]` inside a stage.
    pub fn arg_value(&self, name: &str, default: Option<String>) -> Option<String> {
        if let Some(v) = self.opts.build_args.get(name) {
            self.used_args.lock().unwrap().insert(name.to_string());
            return Some(v.clone());
        }
        if default.is_some() {
            return default;
        }
        self.plan.global_args.get(name).cloned().flatten()
    }

    /// Makes the layer of a finished step from its snapshot, in the
    /// background (at most `--jobs` at once), and returns the provisional
    /// layer the stage carries until [`Engine::finish_layers`] swaps in the
    /// real one. The cache record is staged with the blob.
    pub fn layer_in_background(
        self: &Arc<Self>,
        key: CacheKey,
        snapshot: PathBuf,
        lowers: Vec<PathBuf>,
        created: String,
        media_type: &'static str,
        compression: berth_layer::Compression,
    ) -> LayerRef {
        let provisional = LayerRef {
            diff_id: format!("{PENDING}{}", key.0),
            digest: format!("sha256:{}", key.0)
                .parse()
                .expect("a cache key is 64 hex digits"),
            size: 0,
            media_type: media_type.to_string(),
        };
        let eng = Arc::clone(self);
        let snap = snapshot.clone();
        let task = tokio::spawn(async move {
            let _slot = eng
                .layer_jobs
                .acquire()
                .await
                .map_err(|e| BuildError::Other(e.to_string()))?;
            let eng2 = Arc::clone(&eng);
            tokio::task::spawn_blocking(move || -> Result<LayerRef> {
                let opts = berth_layer::DiffOptions {
                    source_date_epoch: eng2.opts.source_date_epoch,
                };
                let (layer, staged) = crate::snapshots::commit_layer(
                    &eng2.opts.blobs,
                    compression,
                    media_type,
                    |out| berth_layer::write_diff_from_upper(&snap, &lowers, out, &opts),
                )?;
                eng2.snapshots.name_by_diff_id(&layer.diff_id, &snap)?;
                let record = crate::cache::CacheRecord {
                    layer: Some(layer.clone()),
                    created,
                };
                eng2.stage_pending(staged, key, record);
                Ok(layer)
            })
            .await
            .map_err(|e| BuildError::Other(format!("layer task failed: {e}")))?
        });
        self.in_flight
            .lock()
            .unwrap()
            .insert(provisional.diff_id.clone(), (snapshot, task));
        provisional
    }

    /// The layer of a step of a stage no image includes: its snapshot
    /// alone, recorded in the cache with the build's other records. No
    /// tar, no blob, no sync: a later build that puts the stage into an
    /// image makes the blob then ([`build`]).
    pub fn snapshot_layer(
        &self,
        key: &CacheKey,
        snapshot: &std::path::Path,
        created: &str,
        media_type: &str,
    ) -> LayerRef {
        let name = snapshot
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let layer = LayerRef {
            diff_id: format!("{}{name}", crate::cache::SNAPSHOT_LAYER),
            digest: format!("sha256:{}", key.0)
                .parse()
                .expect("a cache key is 64 hex digits"),
            size: 0,
            media_type: media_type.to_string(),
        };
        let record = crate::cache::CacheRecord {
            layer: Some(layer.clone()),
            created: created.to_string(),
        };
        self.snapshot_records
            .lock()
            .unwrap()
            .push((key.clone(), record));
        layer
    }

    /// Starts making the blob of a snapshot-only `layer` (whose stack below
    /// is `below`) in the background, like a fresh step's; `None` for any
    /// other layer. The history time comes from its cache record
    /// (`created` without one).
    pub fn realize_snapshot_layer(
        self: &Arc<Self>,
        below: &[LayerRef],
        layer: &LayerRef,
        created: &str,
    ) -> Result<Option<LayerRef>> {
        let Some(name) = layer.snapshot_name() else {
            return Ok(None);
        };
        let key = CacheKey(layer.digest.hex().to_string());
        let lowers = self.lowers(below)?;
        let created = self
            .cache
            .get(&key, |_| true)
            .map(|r| r.created)
            .unwrap_or_else(|| created.to_string());
        let (media_type, compression) = crate::stage::layer_media_type(self.opts.compression);
        Ok(Some(self.layer_in_background(
            key,
            self.snapshots.named(name),
            lowers,
            created,
            media_type,
            compression,
        )))
    }

    /// Waits for every background layer and returns the real layers by
    /// provisional diff_id.
    async fn finish_layers(&self) -> Result<BTreeMap<String, LayerRef>> {
        let tasks = std::mem::take(&mut *self.in_flight.lock().unwrap());
        let mut done = BTreeMap::new();
        for (pending, (_, task)) in tasks {
            let layer = task
                .await
                .map_err(|e| BuildError::Other(format!("layer task failed: {e}")))??;
            done.insert(pending, layer);
        }
        Ok(done)
    }

    /// Remembers a staged layer blob and its cache record until
    /// [`Engine::publish`].
    pub fn stage_pending(
        &self,
        blob: berth_store::StagedBlob,
        key: CacheKey,
        record: crate::cache::CacheRecord,
    ) {
        self.pending.lock().unwrap().push((blob, key, record));
    }

    /// Makes every layer of the build durable with one sync and visible in
    /// the store, then records their cache entries.
    fn publish(&self) -> Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap());
        let mut records = Vec::with_capacity(pending.len());
        let mut blobs = Vec::with_capacity(pending.len());
        for (blob, key, record) in pending {
            blobs.push(blob);
            records.push((key, record));
        }
        self.opts
            .blobs
            .publish(blobs)
            .map_err(|e| BuildError::Store(e.to_string()))?;
        for (key, record) in records {
            self.cache.put(&key, &record)?;
        }
        let snapshot_records = std::mem::take(&mut *self.snapshot_records.lock().unwrap());
        for (key, record) in snapshot_records {
            self.cache.put(&key, &record)?;
        }
        Ok(())
    }

    /// Unpacked snapshots of `layers`, topmost first (an empty directory
    /// stands in for an image without layers: overlay needs one lower).
    pub fn lowers(&self, layers: &[LayerRef]) -> Result<Vec<PathBuf>> {
        if layers.is_empty() {
            return Ok(vec![self.empty_dir.clone()]);
        }
        let mut out = Vec::with_capacity(layers.len());
        for l in layers.iter().rev() {
            // A lazy stage's placeholder: that stage runs now, and its
            // real layer stands in.
            let real;
            let l = match crate::remote_cache::parse_placeholder(&l.diff_id) {
                Some((stage, position)) => {
                    real = self.lazy_layer(stage, position)?;
                    &real
                }
                None => l,
            };
            let dir = if let Some(name) = l.snapshot_name() {
                self.snapshots.named(name)
            } else if l.diff_id.starts_with(PENDING) {
                let in_flight = self.in_flight.lock().unwrap();
                let (snap, _) = in_flight.get(&l.diff_id).ok_or_else(|| {
                    BuildError::Other(format!("layer {} is not known to this build", l.diff_id))
                })?;
                snap.clone()
            } else {
                if let Some(rc) = &self.opts.remote_cache {
                    // A layer from an imported cache is downloaded only
                    // now that a step runs on top of it.
                    if !self.snapshots.path(&l.diff_id).exists() {
                        rc.ensure_blob_blocking(&self.opts.blobs, l)?;
                    }
                }
                self.snapshots.ensure(&self.opts.blobs, l)?
            };
            // Compare real directories (a diff_id name is a link to a
            // key-named snapshot).
            let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
            // The same layer twice (two steps with identical changes, or
            // two empty ones) would be one directory twice, which overlayfs
            // refuses (ELOOP). The topmost copy alone gives the same tree:
            // it shadows everything the lower copy does.
            if !out.contains(&dir) {
                out.push(dir);
            }
        }
        Ok(out)
    }

    fn open_context(&self) -> std::result::Result<Arc<berth_context::Context>, String> {
        self.context
            .get_or_init(|| {
                let dir = self.opts.context.clone().ok_or_else(|| {
                    "this build has no context (Dockerfile from stdin): COPY and ADD need one; pass a context directory".to_string()
                })?;
                let ignore = berth_context::IgnoreMatcher::load(&dir, self.opts.dockerfile_path.as_deref())
                    .map_err(|e| format!(".dockerignore: {e}"))?;
                let cache = berth_context::StatCache::load(stat_cache_path(&self.opts.root, &dir));
                berth_context::Context::open(&dir, ignore, Some(cache))
                    .map(Arc::new)
                    .map_err(|e| format!("build context {}: {e}", dir.display()))
            })
            .clone()
    }

    pub fn context(&self, step: &StepInfo) -> Result<Arc<berth_context::Context>> {
        self.open_context()
            .map_err(|e| BuildError::Context(format!("{}: {e}", step.location)))
    }

    pub fn context_blocking(&self) -> Result<Arc<berth_context::Context>> {
        self.open_context().map_err(BuildError::Context)
    }

    /// Layer `position` of lazy stage `stage`, running it first. Blocks.
    fn lazy_layer(&self, stage: usize, position: usize) -> Result<LayerRef> {
        let handle = tokio::runtime::Handle::current();
        let st = tokio::task::block_in_place(|| handle.block_on(self.stage_result(stage)))?;
        st.layers.get(position).cloned().ok_or_else(|| {
            BuildError::Other(format!(
                "stage {stage} has no layer {position} (its run differs from its key-only pass)"
            ))
        })
    }

    pub(crate) fn target_stage(&self) -> usize {
        self.plan.target
    }

    async fn stage_result(&self, index: usize) -> Result<Arc<StageState>> {
        if let Some(eng) = self.lazy.claim(index) {
            // A lazy stage's files are needed: run it now.
            drop(tokio::spawn(stage_task(eng, index)));
        }
        let mut rx = self.results[index].subscribe();
        loop {
            if let Some(outcome) = rx.borrow().clone() {
                return outcome.map_err(BuildError::Other);
            }
            if rx.changed().await.is_err() {
                return Err(BuildError::Other("the build was cancelled".into()));
            }
        }
    }

    /// The filesystem a `COPY --from=NAME` reads: a stage (by name or
    /// index) or an image.
    pub async fn copy_source(&self, from: Option<&str>, step: &StepInfo) -> Result<CopyFrom> {
        let Some(name) = from else {
            return Ok(CopyFrom::Context);
        };
        if let Some(index) = self.plan.stage_index(name) {
            // A lazy stage's key is enough for the cache lookup; its
            // placeholder layers make it run if the step itself must.
            let st = match self.lazy.dry_result(index).await {
                Some(st) if self.results[index].borrow().is_none() => st,
                _ => self.stage_result(index).await?,
            };
            return Ok(CopyFrom::Layers {
                layers: st.layers.clone(),
                key: st.key.clone(),
            });
        }
        let base = self.base_image(name, &self.opts.platform, step).await?;
        Ok(CopyFrom::Layers {
            key: CacheKey::of(&json!({"image": base.manifest_digest.to_string()})),
            layers: base.layers,
        })
    }

    async fn base_image(
        &self,
        name: &str,
        platform: &Platform,
        step: &StepInfo,
    ) -> Result<BaseImage> {
        let cell = Arc::clone(
            self.bases
                .lock()
                .unwrap()
                .entry(format!("{name} {platform}"))
                .or_default(),
        );
        cell.get_or_try_init(|| self.resolve_base_image(name, platform, step))
            .await
            .cloned()
    }

    async fn resolve_base_image(
        &self,
        name: &str,
        platform: &Platform,
        step: &StepInfo,
    ) -> Result<BaseImage> {
        let id = self
            .opts
            .progress
            .start(format!("[internal] load metadata for {name}"));
        let started = std::time::Instant::now();
        let r = resolve_base(
            name,
            platform,
            self.opts.pull,
            self.opts.insecure,
            &self.opts.local,
            &self.opts.blobs,
            &self.opts.root,
        )
        .await
        .map_err(|e| BuildError::Base(format!("{}: {e}", step.location)));
        match &r {
            Ok(_) => self.opts.progress.emit(Event::Done {
                id,
                elapsed: started.elapsed(),
            }),
            Err(e) => self.opts.progress.emit(Event::Failed {
                id,
                error: e.to_string(),
            }),
        }
        r
    }
}

fn stat_cache_path(root: &std::path::Path, context: &std::path::Path) -> PathBuf {
    use sha2::{Digest as _, Sha256};
    let abs = std::fs::canonicalize(context).unwrap_or_else(|_| context.to_path_buf());
    let h = Sha256::digest(abs.as_os_str().as_encoded_bytes());
    root.join("buildcache")
        .join(format!("statcache-{}", &crate::cache::hex(&h)[..16]))
}

/// Runs stage `index` and publishes its outcome to the stages waiting for it.
/// (Boxed: a lazy stage is started from inside another stage's task, and
/// the explicit `Send` breaks that type cycle.)
fn stage_task(
    eng: Arc<Engine>,
    index: usize,
) -> futures_util::future::BoxFuture<'static, (usize, Result<Arc<StageState>>)> {
    Box::pin(async move {
        let r = run_stage(Arc::clone(&eng), index).await;
        let outcome = match &r {
            Ok(st) => Ok(Arc::clone(st)),
            Err(e) => Err(e.to_string()),
        };
        eng.results[index].send_replace(Some(outcome));
        (index, r)
    })
}

/// Runs one stage to completion.
async fn run_stage(eng: Arc<Engine>, index: usize) -> Result<Arc<StageState>> {
    let plan = Arc::clone(&eng.plan);
    let stage = &plan.stages[index];
    let total = stage.instructions.len() + 1;
    let label = |n: usize| match &stage.name {
        Some(name) => format!("[{name} {n}/{total}]"),
        None => format!("[stage-{index} {n}/{total}]"),
    };
    let from_step = StepInfo {
        location: stage.location.clone(),
        text: stage.text.clone(),
        label: label(1),
    };
    let platform = stage.platform.as_ref().unwrap_or(&eng.opts.platform);
    let mut st = match &stage.base {
        BaseRef::Stage(i) => {
            let dry = match crate::remote_cache::dry_stage() {
                Some(_) => eng.lazy.dry_result(*i).await,
                None => None,
            };
            match dry {
                Some(st) => (*st).clone(),
                None => (*eng.stage_result(*i).await?).clone(),
            }
        }
        BaseRef::Scratch => StageState {
            config: ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                ..Default::default()
            },
            layers: Vec::new(),
            key: CacheKey::of(&json!({"scratch": platform.to_string()})),
            args: Vec::new(),
            created: crate::time::now_or_epoch(eng.opts.source_date_epoch),
            cmd_set: false,
            in_image: true,
        },
        BaseRef::Image(name) => {
            let base = eng.base_image(name, platform, &from_step).await?;
            let created = base
                .config
                .created
                .clone()
                .unwrap_or_else(|| crate::time::now_or_epoch(eng.opts.source_date_epoch));
            let mut config = base.config.clone();
            config.rootfs.diff_ids = base.layers.iter().map(|l| l.diff_id.clone()).collect();
            StageState {
                config,
                layers: base.layers.clone(),
                key: CacheKey::of(&json!({"image": base.manifest_digest.to_string()})),
                args: Vec::new(),
                created,
                cmd_set: false,
                in_image: true,
            }
        }
    };
    st.inherit_args();
    st.cmd_set = false;
    st.in_image = plan.image_stages.contains(&index);
    // BuildKit gives every image a PATH.
    if st.config.env_var("PATH").is_none() {
        st.config.set_env_var("PATH", berth_sandbox::DEFAULT_PATH);
    }
    // ONBUILD triggers of a base image run first, then are cleared.
    let triggers = if matches!(stage.base, BaseRef::Image(_) | BaseRef::Stage(_)) {
        st.config.config.on_build.take().unwrap_or_default()
    } else {
        Vec::new()
    };
    if let Some(rc) = &eng.opts.remote_cache {
        // Steps look keys up in the imported caches: wait for them.
        rc.ready(&eng.opts.progress).await;
    }
    let mut instructions = Vec::new();
    for t in &triggers {
        instructions.extend(crate::lower::parse_trigger(t, &stage.location)?);
    }
    instructions.extend(stage.instructions.iter().cloned());
    for (n, instr) in instructions.iter().enumerate() {
        let step = StepInfo {
            location: instr.location.clone(),
            text: instr.text.clone(),
            label: label(n + 2),
        };
        let op = crate::lower::lower(instr, &st)?;
        crate::stage::apply(&eng, &mut st, op, &step).await?;
    }
    if index == plan.target {
        for (k, v) in &eng.opts.labels {
            st.config
                .config
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(k.clone(), v.clone());
        }
    }
    Ok(Arc::new(st))
}

/// Builds the target of `opts` and returns the image (its blobs are in the
/// store; nothing is tagged: the caller exports it).
pub async fn build(opts: BuildOptions) -> Result<BuildResult> {
    if let Some(rc) = &opts.remote_cache {
        // Read the imported caches while the stages resolve their bases.
        let (rc, progress) = (Arc::clone(rc), opts.progress.clone());
        tokio::spawn(async move { rc.ready(&progress).await });
    }
    let plan = Arc::new(crate::plan::plan(&opts)?);
    if !plan.checks.warnings.is_empty() {
        // BuildKit reports them on the vertex that read the Dockerfile,
        // before anything runs; `check=error=true` stops there.
        let started = std::time::Instant::now();
        let id = opts.progress.start(format!(
            "[internal] load build definition from {}",
            opts.dockerfile_name
        ));
        for w in &plan.checks.warnings {
            opts.progress.emit(Event::Lint {
                id,
                warning: w.clone(),
            });
        }
        match plan.checks.error() {
            Some(e) => {
                opts.progress.emit(Event::Failed {
                    id,
                    error: e.clone(),
                });
                return Err(BuildError::Dockerfile(e));
            }
            None => opts.progress.emit(Event::Done {
                id,
                elapsed: started.elapsed(),
            }),
        }
    }
    // Held until the build returns: `berth builder prune` waits for no one.
    let _build_lock = crate::prune::BuildLock::shared(&opts.root)?;
    let snapshots = Snapshots::open(&opts.root)?;
    let cache = CacheIndex::open(&opts.root)?;
    let files = crate::copy::FileCache::open(&opts.root)?;
    let empty_dir = opts.root.join("snapshots").join("empty");
    std::fs::create_dir_all(&empty_dir)?;
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let results = plan.stages.iter().map(|_| watch::channel(None).0).collect();
    let opts_remote = opts.remote_cache.clone();
    let eng = Arc::new(Engine {
        jobs: Semaphore::new(opts.jobs.max(1)),
        layer_jobs: Semaphore::new(opts.jobs.max(1)),
        opts,
        snapshots,
        files,
        cache,
        hosts: HOSTS.as_bytes().to_vec(),
        resolv,
        plan: Arc::clone(&plan),
        results,
        lazy: crate::remote_cache::LazyStages::new(opts_remote.as_ref(), plan.stages.len()),
        context: OnceLock::new(),
        empty_dir,
        used_args: Mutex::new(BTreeSet::new()),
        bases: Mutex::new(BTreeMap::new()),
        pending: Mutex::new(Vec::new()),
        snapshot_records: Mutex::new(Vec::new()),
        in_flight: Mutex::new(BTreeMap::new()),
        mounts: Default::default(),
        default_network: OnceLock::new(),
    });
    eng.lazy.set_engine(&eng);
    let mut tasks = tokio::task::JoinSet::new();
    for &index in &plan.needed {
        let eng2 = Arc::clone(&eng);
        if eng.lazy.deferred(index, plan.target) {
            // Key-only first; the stage runs when its files are needed.
            drop(tokio::spawn(async move {
                let r =
                    crate::remote_cache::dry_pass(index, run_stage(Arc::clone(&eng2), index)).await;
                eng2.lazy.set_dry(index, r.map_err(|e| e.to_string()));
            }));
            continue;
        }
        tasks.spawn(stage_task(eng2, index));
    }
    let mut target = None;
    while let Some(joined) = tasks.join_next().await {
        let (index, r) =
            joined.map_err(|e| BuildError::Other(format!("stage task failed: {e}")))?;
        match r {
            // The first failure wins; dropping the set cancels the rest.
            Err(e) => return Err(e),
            Ok(st) if index == plan.target => target = Some(st),
            Ok(_) => {}
        }
    }
    let st = target.ok_or_else(|| BuildError::Other("the target stage produced nothing".into()))?;
    if let Ok(ctx) = eng.open_context() {
        if let Err(e) = ctx.save_stat_cache() {
            tracing::debug!("saving the stat cache: {e}");
        }
    }
    let unused: Vec<String> = {
        let used = eng.used_args.lock().unwrap();
        eng.opts
            .build_args
            .keys()
            .filter(|k| {
                !used.contains(*k)
                    && !plan.global_args.contains_key(*k)
                    && !crate::plan::is_builtin_arg(k)
            })
            .cloned()
            .collect()
    };
    if !unused.is_empty() {
        eng.opts.progress.emit(Event::Warning(format!(
            "one or more build args were not consumed: [{}]",
            unused.join(" ")
        )));
    }
    let mut config = st.config.clone();
    config.created = config
        .history
        .iter()
        .rev()
        .find_map(|h| h.created.clone())
        .or(Some(st.created.clone()));
    if let Some(epoch) = eng.opts.source_date_epoch {
        config.created = Some(crate::time::rfc3339(epoch, 0));
    }
    // Steps the cache kept as snapshots only (their stage was in no image
    // before) get their layer blobs now, in the background like fresh ones.
    let mut st_layers = st.layers.clone();
    for i in 0..st_layers.len() {
        if let Some(pending) =
            eng.realize_snapshot_layer(&st_layers[..i], &st_layers[i], &st.created)?
        {
            st_layers[i] = pending;
        }
    }
    if let Some(rc) = &eng.opts.remote_cache {
        // A mode=max cache export needs blobs of the other stages' steps too.
        rc.materialize_for_export(&eng, &st.layers)?;
    }
    // Background layers: wait, then swap the real ones in.
    let made = eng.finish_layers().await?;
    let resolve = |l: &LayerRef| made.get(&l.diff_id).cloned().unwrap_or_else(|| l.clone());
    let layers: Vec<LayerRef> = st_layers.iter().map(resolve).collect();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    // A base image's inline cache never carries over; ours is set here.
    config.extra.remove(crate::remote_cache::INLINE_CACHE_FIELD);
    if let Some(rc) = &eng.opts.remote_cache {
        rc.resolve_notes(&resolve);
        rc.apply_inline(&mut config, &st.key);
    }
    {
        let eng2 = Arc::clone(&eng);
        tokio::task::spawn_blocking(move || eng2.publish())
            .await
            .map_err(|e| BuildError::Other(format!("publishing layers: {e}")))??;
    }
    if let Some(rc) = &eng.opts.remote_cache {
        rc.record_local_hits(&eng.cache, &eng.opts.blobs);
        rc.export(&st.key, &eng.opts.blobs, &eng.opts.progress)
            .await?;
    }
    let image = BuiltImage::assemble(&eng.opts.blobs, &config, &layers, eng.opts.media_types)?;
    Ok(BuildResult {
        image,
        config,
        layers,
    })
}
