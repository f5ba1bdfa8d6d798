//! Remote build cache end to end: the inline cache (`BUILDKIT_INLINE_CACHE=1`,
//! `--cache-to type=inline`), registry caches (`mode=min|max`), local cache
//! directories, lazy layer downloads, and bad input. Every "second machine"
//! is a separate root with the same imported base image; a `berth serve`
//! is the registry between them.
//!
//! A RUN that writes a fresh random id (`/proc/sys/kernel/random/uuid`)
//! proves whether it ran: had it run again, the image digest would differ.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use serde_json::Value;

mod common;

struct Env {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    user: Option<(u32, u32)>,
}

/// One "machine": a local root with `base:1` imported.
struct Machine<'a> {
    env: &'a Env,
    root: PathBuf,
}

impl Env {
    fn new(user: Option<(u32, u32)>) -> Env {
        let (tmp, work) = common::work_dir("berth-cache-test.", user);
        Env {
            _tmp: tmp,
            work,
            user,
        }
    }

    fn rootless() -> Option<Env> {
        common::rootless_user().map(|user| Env::new(Some(user)))
    }

    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    /// A fresh root (another machine) with the same base image.
    fn machine(&self, name: &str) -> Machine<'_> {
        let m = Machine {
            env: self,
            root: self.work.join(name),
        };
        ok(m.berth_env(
            &["import", "busybox-rootfs.tar", "base:1"],
            &[("SOURCE_DATE_EPOCH", "1600000000")],
        ));
        m
    }

    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.give(&dir);
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        self.give(&dir.join("Dockerfile"));
        dir
    }
}

impl Machine<'_> {
    fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.env.work)
            .env("DOCKER_CONFIG", self.env.work.join("docker-config"))
            .env("HOME", &self.env.work)
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("BERTH_ROOT")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some((uid, gid)) = self.env.user {
            cmd.uid(uid).gid(gid);
        }
        cmd.output().unwrap()
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.berth_env(args, &[])
    }

    fn build(&self, ctx: &Path, args: &[&str]) -> Build {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.push(ctx.to_str().unwrap());
        Build::new(self.berth(&all))
    }

    /// Whether the content store holds `digest`.
    fn has_blob(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.root.join("blobs/sha256").join(hex).exists()
    }
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "berth failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Build {
    out: Output,
    stderr: String,
    /// Step name -> CACHED / DONE / ERROR, Dockerfile steps only.
    steps: Vec<(String, String)>,
}

impl Build {
    fn new(out: Output) -> Build {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut names: std::collections::BTreeMap<u64, usize> = Default::default();
        let mut steps: Vec<(String, String)> = Vec::new();
        for line in stderr.lines() {
            let Some((id, text)) = line.strip_prefix('#').and_then(|r| r.split_once(' ')) else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else { continue };
            if id == 0 {
                continue;
            }
            match names.get(&id) {
                None => {
                    names.insert(id, steps.len());
                    steps.push((text.to_string(), "RUNNING".into()));
                }
                Some(&i) => {
                    let word = text.split_whitespace().next().unwrap_or_default();
                    if matches!(word, "CACHED" | "DONE" | "ERROR:") {
                        steps[i].1 = word.trim_end_matches(':').to_string();
                    }
                }
            }
        }
        steps.retain(|(n, _)| n.starts_with('['));
        steps.retain(|(n, _)| !n.starts_with("[internal]"));
        Build { out, stderr, steps }
    }

    fn ok(&self) -> &Self {
        assert!(self.out.status.success(), "build failed:\n{}", self.stderr);
        self
    }

    fn status(&self, needle: &str) -> &str {
        let hits: Vec<_> = self
            .steps
            .iter()
            .filter(|(n, _)| n.contains(needle))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "{needle:?} in {:?}\n{}",
            self.steps,
            self.stderr
        );
        &hits[0].1
    }

    /// Steps that did not come from a cache (FROM lines aside).
    fn ran(&self) -> Vec<&str> {
        self.steps
            .iter()
            .filter(|(n, s)| s != "CACHED" && !n.contains(" FROM "))
            .map(|(n, _)| n.as_str())
            .collect()
    }

    fn digest(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("#0 writing image "))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no digest in:\n{}", self.stderr))
            .to_string()
    }
}

const UUID: &str = "cat /proc/sys/kernel/random/uuid";

fn single_stage() -> String {
    format!(
        "FROM base:1\nRUN {UUID} > /id1\nWORKDIR /app\nRUN {UUID} > /app/id2 && echo built > /app/note\nCMD [\"cat\", \"/app/note\"]\n"
    )
}

fn inline_cache_of(config: &Value) -> Value {
    let b64 = config["moby.buildkit.cache.v0"]
        .as_str()
        .unwrap_or_else(|| panic!("no inline cache in {config}"));
    serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// The seeds' cache-warming demo with berth's commands, then the same
/// digest when the rebuild exports the inline cache again.
fn inline_round_trip(env: &Env) {
    let registry = tempfile::tempdir().unwrap();
    let (_server, port) = common::serve(registry.path());
    let ctx = env.context("ctx", &single_stage());
    let name = format!("localhost:{port}/test:1");
    let a = env.machine("root-a");
    let first = a.build(
        &ctx,
        &["--tag", &name, "--build-arg", "BUILDKIT_INLINE_CACHE=1"],
    );
    first.ok();
    ok(a.berth(&["push", &name]));

    // The seed's curl | jq: the config carries BuildKit's cache records.
    let config: Value =
        serde_json::from_str(&ok(a.berth(&["inspect", "--config", &name]))).unwrap();
    let cache = inline_cache_of(&config);
    let layers = cache["layers"].as_array().unwrap();
    let records = cache["records"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        diff_ids.len(),
        "layers index the image's own: {cache}"
    );
    assert_eq!(records.len(), 3, "RUN, WORKDIR, RUN: {cache}");
    assert_eq!(layers[0]["parent"], -1);
    for r in records {
        assert!(r["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(r["layers"][0]["createdAt"].is_string(), "{r}");
    }
    assert_eq!(records[2]["inputs"][0][0]["link"], 1, "{cache}");
    let manifest: Value = serde_json::from_str(&ok(a.berth(&["inspect", "--raw", &name]))).unwrap();
    for (l, m) in layers.iter().zip(manifest["layers"].as_array().unwrap()) {
        assert_eq!(l["blob"], m["digest"]);
    }

    // Another machine: `berth build --cache-from R .` runs nothing.
    let b = env.machine("root-b");
    let second = b.build(&ctx, &["--cache-from", &name]);
    second.ok();
    assert!(
        second.ran().is_empty(),
        "ran {:?}\n{}",
        second.ran(),
        second.stderr
    );
    assert_eq!(second.status("WORKDIR"), "CACHED");
    // Without BUILDKIT_INLINE_CACHE the image has no cache metadata (as
    // with BuildKit): it is the image machine A builds that way.
    let plain = a.build(&ctx, &[]);
    assert!(plain.ok().ran().is_empty(), "{}", plain.stderr);
    assert_eq!(second.digest(), plain.digest());
    assert_ne!(second.digest(), first.digest());
    // Nothing was needed locally: no layer was downloaded (the first is
    // the base image's, imported on every machine).
    for m in manifest["layers"].as_array().unwrap().iter().skip(1) {
        assert!(!b.has_blob(m["digest"].as_str().unwrap()), "downloaded {m}");
    }
    // Pushing the result to the cache's registry mounts the cached layers
    // there: still nothing downloaded.
    let pushed = format!("localhost:{port}/other:1");
    let out = b.build(
        &ctx,
        &[
            "--cache-from",
            &name,
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "--output",
            &format!("type=registry,name={pushed}"),
        ],
    );
    assert!(out.ok().ran().is_empty(), "{}", out.stderr);
    assert_eq!(out.digest(), first.digest());
    assert_eq!(ok(b.berth(&["digest", &pushed])).trim(), first.digest());
    for m in manifest["layers"].as_array().unwrap().iter().skip(1) {
        assert!(!b.has_blob(m["digest"].as_str().unwrap()), "downloaded {m}");
    }
    // Exporting the inline cache again gives the very same image.
    let third = b.build(
        &ctx,
        &[
            "-t",
            "again:1",
            "--cache-from",
            &name,
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
        ],
    );
    third.ok();
    assert!(third.ran().is_empty(), "{}", third.stderr);
    assert_eq!(third.digest(), first.digest(), "same image digest");
    // Storing it locally brought the layers in; the local index has them.
    ok(b.berth(&["fsck"]));
    let fourth = b.build(&ctx, &["-t", "again:2"]);
    assert!(fourth.ok().ran().is_empty(), "{}", fourth.stderr);
}

#[test]
fn inline_cache_round_trip() {
    inline_round_trip(&Env::new(None));
}

#[test]
fn inline_cache_round_trip_rootless() {
    if let Some(env) = Env::rootless() {
        inline_round_trip(&env);
    }
}

/// `skopeo inspect --config --raw` (a real client) sees the inline cache field.
#[test]
fn skopeo_sees_the_inline_cache() {
    if Command::new("skopeo").arg("--version").output().is_err() {
        eprintln!("SKIP: skopeo is not installed");
        return;
    }
    let env = Env::new(None);
    let registry = tempfile::tempdir().unwrap();
    let (_server, port) = common::serve(registry.path());
    let ctx = env.context("ctx", &single_stage());
    let name = format!("127.0.0.1:{port}/inline/skopeo:1");
    let a = env.machine("root");
    a.build(&ctx, &["-t", &name, "--push", "--cache-to", "type=inline"])
        .ok();
    let out = Command::new("skopeo")
        // --raw: without it skopeo re-serialises the config as an OCI
        // struct, which has no field for the cache.
        .args(["inspect", "--tls-verify=false", "--config", "--raw"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        inline_cache_of(&config)["records"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

fn multi_stage() -> String {
    format!(
        "FROM base:1 AS side\nRUN {UUID} > /side && echo not-copied > /extra\nFROM base:1\nCOPY --from=side /side /side\nRUN {UUID} > /top\n"
    )
}

/// The layer digest of the step whose history mentions `needle`, in the
/// local store's `library/NAME` (read through an OCI layout copy).
fn layer_of(m: &Machine<'_>, name: &str, needle: &str) -> String {
    let dir = m
        .root
        .with_extension(format!("layout-{}", name.replace(':', "-")));
    ok(m.berth(&[
        "copy",
        &format!("local:library/{name}"),
        &format!("oci:{}:x", dir.display()),
    ]));
    let blob = |d: &str| -> Value {
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let layered: Vec<&Value> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] != true)
        .collect();
    let i = layered
        .iter()
        .position(|h| {
            h["created_by"]
                .as_str()
                .unwrap_or_default()
                .contains(needle)
        })
        .unwrap_or_else(|| panic!("no {needle} in {config}"));
    manifest["layers"][i]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn registry_min_max(env: &Env) {
    let registry = tempfile::tempdir().unwrap();
    let (_server, port) = common::serve(registry.path());
    let ctx = env.context("ctx", &multi_stage());
    let a = env.machine("root-a");
    let min = format!("127.0.0.1:{port}/cache/app:min");
    let max = format!("127.0.0.1:{port}/cache/app:max");
    let first = a.build(
        &ctx,
        &[
            "-t",
            "app:1",
            "--cache-to",
            &format!("type=registry,ref={min}"),
            "--cache-to",
            &format!("type=registry,ref={max},mode=max"),
        ],
    );
    first.ok();
    // Both are BuildKit cache manifests with the cache config media type.
    for r in [&min, &max] {
        let raw: Value = serde_json::from_str(&ok(a.berth(&["inspect", "--raw", r]))).unwrap();
        let text = raw.to_string();
        assert!(
            text.contains("application/vnd.buildkit.cacheconfig.v0"),
            "{text}"
        );
    }
    let side_layer = {
        // The side stage's own RUN layer is only in the max cache.
        let out = ok(a.berth(&["inspect", "--raw", &max]));
        let min_raw = ok(a.berth(&["inspect", "--raw", &min]));
        let max_v: Value = serde_json::from_str(&out).unwrap();
        let list = max_v
            .get("layers")
            .or_else(|| max_v.get("manifests"))
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        let extra: Vec<String> = list
            .iter()
            .filter(|d| d["mediaType"] != "application/vnd.buildkit.cacheconfig.v0")
            .map(|d| d["digest"].as_str().unwrap().to_string())
            .filter(|d| !min_raw.contains(d.as_str()))
            .collect();
        assert_eq!(
            extra.len(),
            1,
            "max has the side stage's layer: {out}\n{min_raw}"
        );
        extra[0].clone()
    };

    // mode=min: the final image's steps come from the cache. The side
    // stage is not in it, but only its key is needed: as with BuildKit,
    // it never runs.
    let b = env.machine("root-b");
    let second = b.build(
        &ctx,
        &[
            "-t",
            "app:1",
            "--cache-from",
            &format!("type=registry,ref={min}"),
        ],
    );
    second.ok();
    assert_eq!(
        second.status("COPY --from=side"),
        "CACHED",
        "{}",
        second.stderr
    );
    assert_eq!(second.status("> /top"), "CACHED");
    assert!(
        second.ran().is_empty(),
        "ran {:?}\n{}",
        second.ran(),
        second.stderr
    );
    assert!(!second.stderr.contains("> /side"), "{}", second.stderr);
    assert_eq!(second.digest(), first.digest());
    // A new step that reads the side stage's files makes it run.
    let ctx_more = env.context(
        "ctx-more",
        &format!("{}COPY --from=side /extra /extra\n", multi_stage()),
    );
    let more = b.build(
        &ctx_more,
        &["--cache-from", &format!("type=registry,ref={min}")],
    );
    more.ok();
    assert_eq!(more.status("> /side"), "DONE", "{}", more.stderr);
    assert_eq!(more.status("COPY --from=side /extra"), "DONE");
    assert_eq!(more.status("> /top"), "CACHED");

    // mode=max: nothing runs, and the side stage's layer, needed by no
    // step that runs and by no output, is never downloaded.
    let c = env.machine("root-c");
    let third = c.build(&ctx, &["-t", "app:1", "--cache-from", &max]);
    third.ok();
    assert!(
        third.ran().is_empty(),
        "ran {:?}\n{}",
        third.ran(),
        third.stderr
    );
    assert_eq!(third.digest(), first.digest());
    assert!(!c.has_blob(&side_layer), "the side layer was downloaded");
    // The image's own layers were stored (the output needs them).
    let top = layer_of(&c, "app:1", "/top");
    assert!(c.has_blob(&top));
    ok(c.berth(&["fsck"]));
}

#[test]
fn registry_cache_min_and_max() {
    registry_min_max(&Env::new(None));
}

#[test]
fn registry_cache_min_and_max_rootless() {
    if let Some(env) = Env::rootless() {
        registry_min_max(&env);
    }
}

#[test]
fn local_cache_directory() {
    let env = Env::new(None);
    let ctx = env.context("ctx", &multi_stage());
    let a = env.machine("root-a");
    let dir = env.work.join("cache-dir");
    let first = a.build(
        &ctx,
        &[
            "--cache-to",
            &format!("type=local,dest={},mode=max", dir.display()),
        ],
    );
    first.ok();
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "latest",
        "{index}"
    );
    let b = env.machine("root-b");
    let second = b.build(
        &ctx,
        &["--cache-from", &format!("type=local,src={}", dir.display())],
    );
    second.ok();
    assert!(
        second.ran().is_empty(),
        "ran {:?}\n{}",
        second.ran(),
        second.stderr
    );
    assert_eq!(second.digest(), first.digest());
    // A step that runs on top of imported layers downloads them (lazily).
    let ctx2 = env.context(
        "ctx2",
        &format!("{}RUN cat /side /top > /both\n", multi_stage()),
    );
    let third = b.build(
        &ctx2,
        &["--cache-from", &format!("type=local,src={}", dir.display())],
    );
    third.ok();
    assert_eq!(third.ran().len(), 1, "{}", third.stderr);
    assert_eq!(third.status("/both"), "DONE");
}

#[test]
fn bad_cache_input_is_a_warning() {
    let env = Env::new(None);
    let registry = tempfile::tempdir().unwrap();
    let (_server, port) = common::serve(registry.path());
    let ctx = env.context("ctx", "FROM base:1\nRUN echo hi > /hi\n");
    let a = env.machine("root-a");
    // An unknown cache ref: a warning, and a normal build.
    let b = a.build(
        &ctx,
        &["--cache-from", &format!("127.0.0.1:{port}/no/such:cache")],
    );
    b.ok();
    assert!(b.stderr.contains("WARNING: cache import"), "{}", b.stderr);
    assert_eq!(b.status("RUN echo"), "DONE");
    // A corrupt cache config (a layer pointing past the end).
    let dir = env.work.join("corrupt");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let d = berth_oci::Digest::sha256_of(bytes).to_string();
        std::fs::write(dir.join("blobs/sha256").join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let (cfg, cfg_size) = put(br#"{"layers":[{"blob":"sha256:0000000000000000000000000000000000000000000000000000000000000000","parent":9}],"records":[]}"#);
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.buildkit.cacheconfig.v0", "digest": cfg, "size": cfg_size},
        "layers": [],
    });
    let (m, m_size) = put(manifest.to_string().as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m, "size": m_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]})
        .to_string(),
    )
    .unwrap();
    let c = env.machine("root-c");
    let b = c.build(
        &ctx,
        &["--cache-from", &format!("type=local,src={}", dir.display())],
    );
    b.ok();
    assert!(b.stderr.contains("corrupt"), "{}", b.stderr);
    // Unsupported types and malformed flags are refused up front.
    let out = a.berth(&["build", "--cache-to", "type=gha", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not supported"));
}
