//! `berth build` end to end: the image it stores (filesystem and config),
//! the cache (what reruns and what does not), parallel stages, `--target`,
//! reproducibility, every output, pushing, building beside `berth serve`,
//! bad input, and the same core scenarios as a non-root user.
//!
//! The base image is a busybox-static rootfs `berth import`ed into a fresh
//! root per test; nothing reaches beyond 127.0.0.1.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;

mod common;
use common::layers::{entries, Image};

/// One test's directory, its root, and who runs berth in it.
struct Env {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    /// `Some((uid, gid))`: every berth command runs as this user.
    user: Option<(u32, u32)>,
}

impl Env {
    /// A fresh root with `base:1` imported (busybox), as the test's own user.
    fn new() -> Env {
        Env::with_user(None)
    }

    /// The same as the user `berth`, in a directory it owns under /tmp.
    /// `None` (and a message) when that is impossible here.
    fn rootless() -> Option<Env> {
        common::rootless_user().map(|user| Env::with_user(Some(user)))
    }

    fn with_user(user: Option<(u32, u32)>) -> Env {
        let (tmp, work) = common::work_dir("berth-build-test.", user);
        let env = Env {
            root: work.join("root"),
            work,
            _tmp: tmp,
            user,
        };
        // Relative (berth runs in `work`): the history comment names the
        // file, and base images of different roots must be identical.
        ok(env.berth_env(
            &["import", "busybox-rootfs.tar", "base:1"],
            &[("SOURCE_DATE_EPOCH", "1600000000")],
        ));
        env
    }

    /// Hands a path the test made to the user berth runs as.
    fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir(&self.work)
            .env("DOCKER_CONFIG", self.work.join("docker-config"))
            .env("HOME", &self.work)
            .env_remove("SOURCE_DATE_EPOCH")
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

    fn berth_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.berth_env(args, &[])
    }

    /// A build context directory with these files (and the directories
    /// they are in).
    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        self.give(&dir);
        for (path, text) in files {
            let path = dir.join(path);
            for parent in path.ancestors().skip(1).take_while(|p| *p != dir) {
                if !parent.exists() {
                    std::fs::create_dir_all(parent).unwrap();
                }
            }
            for parent in path.ancestors().skip(1).take_while(|p| *p != dir) {
                self.give(parent);
            }
            self.write(&path, text);
        }
        dir
    }

    fn write(&self, path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        self.give(path);
    }

    /// `berth build --progress plain ARGS CONTEXT`.
    fn build(&self, context: &Path, args: &[&str]) -> Build {
        self.build_env(context, args, &[])
    }

    fn build_env(&self, context: &Path, args: &[&str], env: &[(&str, &str)]) -> Build {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.push(context.to_str().unwrap());
        let started = Instant::now();
        let out = self.berth_env(&all, env);
        Build::new(out, started.elapsed())
    }

    /// The stored image `repo:tag` (Docker-normalised, e.g. `library/x:1`),
    /// read back through an OCI layout written by `berth copy`.
    fn image(&self, name: &str) -> Image {
        let dir = self.work.join(format!(
            "layout-{}",
            name.replace(['/', ':'], "_") + &format!("-{}", unique())
        ));
        ok(self.berth(&[
            "copy",
            &format!("local:{name}"),
            &format!("oci:{}:x", dir.display()),
        ]));
        Image::from_layout(&dir)
    }

    /// Repositories and tags in the local store (`berth images`).
    fn images(&self) -> String {
        ok(self.berth(&["images"]))
    }

    fn fsck_clean(&self) {
        let out = self.berth(&["fsck"]);
        assert!(
            out.status.success(),
            "berth fsck failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
        "berth failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// How a step ended in `--progress plain` output.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Cached,
    Done,
    Error,
    Running,
}

/// A finished `berth build`: its output and the steps' fates by name.
struct Build {
    out: Output,
    stderr: String,
    elapsed: std::time::Duration,
    /// `[stage-0 3/7] COPY a.txt /a.txt` -> status, in order of appearance.
    steps: Vec<(String, Status)>,
}

impl Build {
    fn new(out: Output, elapsed: std::time::Duration) -> Build {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut names: BTreeMap<u64, usize> = BTreeMap::new();
        let mut steps: Vec<(String, Status)> = Vec::new();
        for line in stderr.lines() {
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            let Some((id, text)) = rest.split_once(' ') else {
                continue;
            };
            let Ok(id) = id.parse::<u64>() else { continue };
            if id == 0 {
                continue;
            }
            match names.get(&id) {
                None => {
                    names.insert(id, steps.len());
                    steps.push((text.to_string(), Status::Running));
                }
                Some(&i) => {
                    if text == "CACHED" {
                        steps[i].1 = Status::Cached;
                    } else if text.starts_with("DONE") {
                        steps[i].1 = Status::Done;
                    } else if text.starts_with("ERROR") {
                        steps[i].1 = Status::Error;
                    }
                }
            }
        }
        Build {
            out,
            stderr,
            elapsed,
            steps,
        }
    }

    fn ok(&self) -> &Self {
        assert!(
            self.out.status.success(),
            "berth build failed ({}):\n{}",
            self.out.status,
            self.stderr
        );
        self
    }

    fn failed(&self) -> &str {
        assert!(
            !self.out.status.success(),
            "berth build succeeded unexpectedly:\n{}",
            self.stderr
        );
        &self.stderr
    }

    /// The status of the one step whose name contains `needle`.
    fn step(&self, needle: &str) -> Status {
        let hits: Vec<_> = self
            .steps
            .iter()
            .filter(|(n, _)| n.contains(needle))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "expected one step matching {needle:?}, steps: {:?}\n{}",
            self.steps,
            self.stderr
        );
        hits[0].1.clone()
    }

    /// Dockerfile steps (not `[internal]` ones).
    fn dockerfile_steps(&self) -> Vec<&(String, Status)> {
        self.steps
            .iter()
            .filter(|(n, _)| !n.starts_with("[internal]"))
            .collect()
    }

    fn assert_all(&self, want: Status) {
        let steps = self.dockerfile_steps();
        assert!(!steps.is_empty(), "no steps in:\n{}", self.stderr);
        for (name, status) in steps {
            assert_eq!(*status, want, "step {name}\n{}", self.stderr);
        }
    }

    /// The manifest digest from `#0 writing image sha256:... done`.
    fn digest(&self) -> String {
        self.stderr
            .lines()
            .find_map(|l| l.strip_prefix("#0 writing image "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("no `writing image` line in:\n{}", self.stderr))
            .to_string()
    }
}

impl Image {
    fn env(&self) -> Vec<String> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }
}

fn build_dockerfile_basic() -> &'static str {
    "FROM base:1\n\
     ENV GREETING=hello\n\
     WORKDIR /app\n\
     COPY greeting.txt ./\n\
     RUN echo \"built as $(id -u)\" > /app/built.txt && touch /app/owned && chown 1000:1000 /app/owned\n\
     USER app\n\
     RUN id -u > /tmp/by-app\n\
     LABEL stage=one\n\
     CMD [\"cat\", \"/app/greeting.txt\"]\n"
}

// ------------------------------------------------------------ scenarios
// Each runs as root and (some) again as the user `berth`.

/// 1: the stored image's filesystem and config.
fn scenario_image_and_config(env: &Env) {
    let ctx = env.context(
        "ctx",
        &[
            ("Dockerfile", build_dockerfile_basic()),
            ("greeting.txt", "hello from the context\n"),
        ],
    );
    env.build(&ctx, &["-t", "out:1", "--label", "from.cli=yes"])
        .ok();
    assert!(env.images().contains("library/out"), "{}", env.images());
    let img = env.image("library/out:1");

    let c = &img.config["config"];
    assert!(env_has(&img, "GREETING=hello"), "{:?}", img.env());
    assert!(
        img.env().iter().any(|e| e.starts_with("PATH=")),
        "a default PATH: {:?}",
        img.env()
    );
    assert_eq!(c["Cmd"], serde_json::json!(["cat", "/app/greeting.txt"]));
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["User"], "app");
    assert_eq!(c["Labels"]["stage"], "one");
    assert_eq!(c["Labels"]["from.cli"], "yes");
    assert_eq!(img.config["os"], "linux");
    assert!(img.config["architecture"].is_string());

    // History: the base's one entry + 8 instructions; one non-empty entry
    // per layer, and the diff IDs match the layers.
    let history = img.config["history"].as_array().unwrap();
    assert_eq!(history.len(), 1 + 8, "{history:#?}");
    let non_empty = history
        .iter()
        .filter(|h| h["empty_layer"] != Value::Bool(true))
        .count();
    assert_eq!(non_empty, img.layers.len(), "{history:#?}");
    assert_eq!(
        img.config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        img.layers.len()
    );
    assert!(history.iter().any(|h| h["created_by"]
        .as_str()
        .unwrap_or("")
        .contains("COPY greeting.txt")));

    // The filesystem.
    assert_eq!(img.text("app/greeting.txt"), "hello from the context\n");
    assert_eq!(img.text("app/built.txt"), "built as 0\n");
    assert_eq!(img.text("tmp/by-app"), "1000\n");
    let owned = img.file("app/owned").unwrap();
    assert_eq!((owned.uid, owned.gid), (1000, 1000), "chown 1000:1000");
    let by_app = img.file("tmp/by-app").unwrap();
    assert_eq!(
        (by_app.uid, by_app.gid),
        (1000, 1000),
        "written by USER app"
    );
    let built = img.file("app/built.txt").unwrap();
    assert_eq!((built.uid, built.gid), (0, 0), "written by root");
    assert!(img.file("bin/busybox").is_some());

    // type=local writes the same filesystem to a directory.
    let dir = env.work.join("local-out");
    env.build(
        &ctx,
        &["--output", &format!("type=local,dest={}", dir.display())],
    )
    .ok();
    assert_eq!(
        std::fs::read_to_string(dir.join("app/greeting.txt")).unwrap(),
        "hello from the context\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("app/built.txt")).unwrap(),
        "built as 0\n"
    );
    env.fsck_clean();
}

fn env_has(img: &Image, kv: &str) -> bool {
    img.env().iter().any(|e| e == kv)
}

const STAMP_DOCKERFILE: &str = "FROM base:1\n\
    RUN cat /proc/sys/kernel/random/uuid > /stamp-run\n\
    COPY input.txt /input.txt\n\
    RUN cat /proc/sys/kernel/random/uuid > /stamp-after\n\
    CMD [\"cat\", \"/input.txt\"]\n";

/// 2: a rebuild of the same thing is all CACHED, runs nothing and stores
/// the same digest.
fn scenario_noop_rebuild(env: &Env) {
    let ctx = env.context(
        "ctx-stamp",
        &[("Dockerfile", STAMP_DOCKERFILE), ("input.txt", "one\n")],
    );
    let first = env.build(&ctx, &["-t", "stamp:1"]);
    first.ok();
    first.assert_all(Status::Done);
    let img1 = env.image("library/stamp:1");
    let second = env.build(&ctx, &["-t", "stamp:1"]);
    second.ok();
    second.assert_all(Status::Cached);
    assert_eq!(first.digest(), second.digest());
    let img2 = env.image("library/stamp:1");
    assert_eq!(img1.manifest_digest, img2.manifest_digest);
    // The RUN writes a fresh random UUID: the same value proves it did
    // not run again (a rerun could not reproduce it).
    assert_eq!(img1.text("stamp-run"), img2.text("stamp-run"));
    assert_eq!(img1.text("stamp-after"), img2.text("stamp-after"));
}

/// 5: independent stages run at once.
fn scenario_parallel_stages(env: &Env) {
    // Warm the base's snapshot first: the timing is about the stages.
    let warm = env.context("ctx-warm", &[("Dockerfile", "FROM base:1\nRUN true\n")]);
    env.build(&warm, &[]).ok();
    let ctx = env.context(
        "ctx-par",
        &[(
            "Dockerfile",
            "FROM base:1 AS a\nRUN sleep 1 && echo a > /a\n\
             FROM base:1 AS b\nRUN sleep 1 && echo b > /b\n\
             FROM base:1 AS c\nRUN sleep 1 && echo c > /c\n\
             FROM base:1\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nCOPY --from=c /c /c\n\
             RUN cat /a /b /c > /abc\n",
        )],
    );
    let b = env.build(&ctx, &["--jobs", "3", "-t", "par:1"]);
    b.ok();
    b.assert_all(Status::Done);
    // Three one-second sleeps in sequence take more than 3 s.
    assert!(
        b.elapsed.as_secs_f64() < 2.9,
        "three `sleep 1` stages took {:.2}s with --jobs 3: they did not overlap\n{}",
        b.elapsed.as_secs_f64(),
        b.stderr
    );
    assert_eq!(env.image("library/par:1").text("abc"), "a\nb\nc\n");
}

/// 12 (part): a RUN as USER app and a RUN that chowns leave files owned by
/// 1000 in the layer, whoever runs the build.
fn scenario_ownership(env: &Env) {
    let ctx = env.context(
        "ctx-own",
        &[(
            "Dockerfile",
            "FROM base:1\n\
             RUN touch /by-root && mkdir /chowned && touch /chowned/f && chown -R 1000:1000 /chowned\n\
             USER app\n\
             RUN echo mine > /tmp/by-app && id -u > /tmp/uid\n",
        )],
    );
    env.build(&ctx, &["-t", "own:1"]).ok();
    let img = env.image("library/own:1");
    for path in ["chowned", "chowned/f", "tmp/by-app", "tmp/uid"] {
        let e = img
            .file(path)
            .unwrap_or_else(|| panic!("{path} missing from the layers"));
        assert_eq!((e.uid, e.gid), (1000, 1000), "owner of {path}");
    }
    let r = img.file("by-root").unwrap();
    assert_eq!((r.uid, r.gid), (0, 0), "owner of /by-root");
    assert_eq!(img.text("tmp/uid"), "1000\n");
}

#[test]
fn image_filesystem_and_config() {
    scenario_image_and_config(&Env::new());
}

#[test]
fn noop_rebuild_is_cached_and_runs_nothing() {
    scenario_noop_rebuild(&Env::new());
}

#[test]
fn parallel_stages_overlap() {
    scenario_parallel_stages(&Env::new());
}

#[test]
fn ownership_of_run_results() {
    scenario_ownership(&Env::new());
}

#[test]
fn rootless_image_filesystem_and_config() {
    if let Some(env) = Env::rootless() {
        scenario_image_and_config(&env);
    }
}

#[test]
fn rootless_noop_rebuild() {
    if let Some(env) = Env::rootless() {
        scenario_noop_rebuild(&env);
    }
}

#[test]
fn rootless_parallel_stages() {
    if let Some(env) = Env::rootless() {
        scenario_parallel_stages(&env);
    }
}

#[test]
fn rootless_ownership_is_container_ids_not_subuids() {
    if let Some(env) = Env::rootless() {
        scenario_ownership(&env);
    }
}

/// 3: a changed context file reruns the COPY reading it and what follows;
/// a changed ignored file changes nothing.
#[test]
fn context_change_reruns_from_the_copy_that_reads_it() {
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM base:1\n\
                 RUN cat /proc/sys/kernel/random/uuid > /before\n\
                 COPY a.txt /a.txt\n\
                 RUN cat /proc/sys/kernel/random/uuid > /mid\n\
                 COPY . /ctx/\n\
                 RUN cat /proc/sys/kernel/random/uuid > /last\n",
            ),
            (".dockerignore", "ignored.txt\n"),
            ("a.txt", "a1\n"),
            ("b.txt", "b1\n"),
            ("ignored.txt", "i1\n"),
        ],
    );
    env.build(&ctx, &["-t", "ctx:1"]).ok();
    let img1 = env.image("library/ctx:1");
    assert!(img1.file("ctx/ignored.txt").is_none(), ".dockerignore");
    assert_eq!(img1.text("ctx/b.txt"), "b1\n");

    // a.txt: everything from `COPY a.txt` on reruns.
    env.write(&ctx.join("a.txt"), "a2\n");
    let b = env.build(&ctx, &["-t", "ctx:1"]);
    b.ok();
    assert_eq!(
        b.step("RUN cat /proc/sys/kernel/random/uuid > /before"),
        Status::Cached
    );
    assert_eq!(b.step("COPY a.txt"), Status::Done);
    assert_eq!(b.step("/mid"), Status::Done);
    assert_eq!(b.step("COPY . /ctx/"), Status::Done);
    assert_eq!(b.step("/last"), Status::Done);
    let img2 = env.image("library/ctx:1");
    assert_eq!(img2.text("before"), img1.text("before"));
    assert_ne!(img2.text("mid"), img1.text("mid"));
    assert_eq!(img2.text("a.txt"), "a2\n");

    // b.txt: only `COPY .` and after.
    env.write(&ctx.join("b.txt"), "b2\n");
    let b = env.build(&ctx, &["-t", "ctx:1"]);
    b.ok();
    assert_eq!(
        b.step("RUN cat /proc/sys/kernel/random/uuid > /before"),
        Status::Cached
    );
    assert_eq!(b.step("COPY a.txt"), Status::Cached);
    assert_eq!(b.step("/mid"), Status::Cached);
    assert_eq!(b.step("COPY . /ctx/"), Status::Done);
    assert_eq!(b.step("/last"), Status::Done);
    let img3 = env.image("library/ctx:1");
    assert_eq!(img3.text("mid"), img2.text("mid"));
    assert_eq!(img3.text("ctx/b.txt"), "b2\n");

    // The ignored file: nothing reruns, same image.
    env.write(&ctx.join("ignored.txt"), "i2 (changed)\n");
    let b = env.build(&ctx, &["-t", "ctx:1"]);
    b.ok();
    b.assert_all(Status::Cached);
    assert_eq!(
        env.image("library/ctx:1").manifest_digest,
        img3.manifest_digest
    );

    // Touching a file without changing it (new mtime) keeps the cache too:
    // keys are content-based.
    env.write(&ctx.join("a.txt"), "a2\n");
    let b = env.build(&ctx, &["-t", "ctx:1"]);
    b.ok();
    b.assert_all(Status::Cached);
}

/// 4: --no-cache reruns every step.
#[test]
fn no_cache_reruns_everything() {
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", STAMP_DOCKERFILE), ("input.txt", "one\n")],
    );
    env.build(&ctx, &["-t", "nc:1"]).ok();
    let img1 = env.image("library/nc:1");
    let b = env.build(&ctx, &["-t", "nc:1", "--no-cache"]);
    b.ok();
    b.assert_all(Status::Done);
    let img2 = env.image("library/nc:1");
    assert_ne!(img1.text("stamp-run"), img2.text("stamp-run"));
    assert_ne!(img1.manifest_digest, img2.manifest_digest);
    // And the cache is still usable afterwards.
    env.build(&ctx, &["-t", "nc:1"])
        .ok()
        .assert_all(Status::Cached);
}

/// 6: --target builds only the stages it reaches.
#[test]
fn target_builds_only_reached_stages() {
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM base:1 AS broken\nRUN echo about to fail && exit 3\n\
             FROM base:1 AS good\nRUN echo good > /good\n\
             FROM good AS final\nCOPY --from=broken /x /x\n",
        )],
    );
    let b = env.build(&ctx, &["--target", "good", "-t", "tgt:1"]);
    b.ok();
    assert!(
        !b.stderr.contains("exit 3"),
        "the unreached stage ran:\n{}",
        b.stderr
    );
    assert_eq!(env.image("library/tgt:1").text("good"), "good\n");
    // Without --target the broken stage is reached, and fails the build.
    let err = env.build(&ctx, &["-t", "tgt:2"]).failed().to_string();
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(!env.images().contains("tgt   2"));
    // An unknown target is named.
    let err = env.build(&ctx, &["--target", "nope"]).failed().to_string();
    assert!(err.contains("nope"), "{err}");
}

/// 7: SOURCE_DATE_EPOCH makes builds reproducible across roots; without
/// it, the config carries the build time.
#[test]
fn source_date_epoch_is_reproducible() {
    let dockerfile = "FROM base:1\n\
        RUN mkdir -p /out && echo data > /out/file && touch /out/touched\n\
        COPY in.txt /in.txt\n\
        WORKDIR /w\n\
        CMD [\"cat\", \"/out/file\"]\n";
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let mut digests = Vec::new();
    for _ in 0..2 {
        let env = Env::new();
        let ctx = env.context("ctx", &[("Dockerfile", dockerfile), ("in.txt", "x\n")]);
        // COPY keeps the context's mtimes (as BuildKit does without
        // rewrite-timestamp): a checkout with fixed times, then.
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_650_000_000);
        std::fs::File::options()
            .write(true)
            .open(ctx.join("in.txt"))
            .unwrap()
            .set_modified(t)
            .unwrap();
        env.build_env(&ctx, &["-t", "repro:1"], &sde).ok();
        let img = env.image("library/repro:1");
        assert_eq!(img.config["created"], "2023-11-14T22:13:20Z");
        for h in img.config["history"].as_array().unwrap().iter().skip(1) {
            assert_eq!(h["created"], "2023-11-14T22:13:20Z", "{h}");
        }
        digests.push((img.manifest_digest.clone(), img));
    }
    if digests[0].0 != digests[1].0 {
        let show = |i: &Image| {
            format!(
                "{:#}\n{:#?}",
                i.config,
                i.layers
                    .iter()
                    .skip(1)
                    .map(|l| l
                        .iter()
                        .map(|e| (&e.path, e.mode, e.mtime, e.uid, e.kind))
                        .collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            )
        };
        panic!(
            "same SOURCE_DATE_EPOCH, different images:\n{}\n---\n{}",
            show(&digests[0].1),
            show(&digests[1].1)
        );
    }
    let digests: Vec<String> = digests.into_iter().map(|d| d.0).collect();

    let env = Env::new();
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile), ("in.txt", "x\n")]);
    let today = || {
        String::from_utf8(
            Command::new("date")
                .args(["-u", "+%Y-%m-%d"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    };
    let before = today();
    env.build(&ctx, &["-t", "repro:1"]).ok();
    let after = today();
    let img = env.image("library/repro:1");
    let created = img.config["created"].as_str().unwrap().to_string();
    assert!(
        created.starts_with(&before) || created.starts_with(&after),
        "created {created} is not the build time ({before})"
    );
    assert_ne!(img.manifest_digest, digests[0]);
}

/// 8: every output type, --iidfile, --metadata-file, -q.
#[test]
fn outputs_files_and_quiet() {
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM base:1\nCOPY hello.txt /hello.txt\nRUN echo ran > /ran\nCMD [\"cat\", \"/hello.txt\"]\n",
            ),
            ("hello.txt", "hello\n"),
        ],
    );
    let w = &env.work;
    let oci = w.join("x.oci.tar");
    let docker = w.join("y.docker.tar");
    let local = w.join("z-local");
    let tarball = w.join("z.tar");
    let iid = w.join("iid");
    let meta = w.join("meta.json");
    let b = env.build(
        &ctx,
        &[
            "-t",
            "outs:1",
            "--output",
            &format!("type=oci,dest={}", oci.display()),
            "--output",
            &format!("type=docker,dest={},name=outs:docker", docker.display()),
            "--output",
            &format!("type=local,dest={}", local.display()),
            "--output",
            &format!("type=tar,dest={}", tarball.display()),
            "--iidfile",
            iid.to_str().unwrap(),
            "--metadata-file",
            meta.to_str().unwrap(),
        ],
    );
    b.ok();
    let digest = b.digest();

    // --iidfile: the config digest; --metadata-file: BuildKit's keys.
    let iid = std::fs::read_to_string(&iid).unwrap();
    assert!(iid.starts_with("sha256:") && iid.len() == 71, "{iid:?}");
    let meta: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], digest.as_str());
    assert_eq!(meta["containerimage.config.digest"], iid.as_str());
    assert_eq!(meta["containerimage.descriptor"]["digest"], digest.as_str());
    assert!(meta["containerimage.descriptor"]["size"].as_u64().unwrap() > 0);

    // type=local: the filesystem.
    assert_eq!(
        std::fs::read_to_string(local.join("hello.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(std::fs::read_to_string(local.join("ran")).unwrap(), "ran\n");
    assert!(local.join("bin/busybox").is_file());

    // type=tar: the same filesystem as one tarball.
    let fs = entries(&std::fs::read(&tarball).unwrap());
    let get = |p: &str| fs.iter().find(|e| e.path.trim_end_matches('/') == p);
    assert_eq!(get("hello.txt").unwrap().data, b"hello\n");
    assert_eq!(get("ran").unwrap().data, b"ran\n");
    assert!(get("bin/busybox").is_some());

    // type=oci: an OCI archive berth (and umoci) can read back.
    let oci_img = w.join("oci-layout");
    std::fs::create_dir(&oci_img).unwrap();
    let status = Command::new("tar")
        .arg("-xf")
        .arg(&oci)
        .arg("-C")
        .arg(&oci_img)
        .status()
        .unwrap();
    assert!(status.success());
    let img = Image::from_layout(&oci_img);
    assert_eq!(
        img.manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "type=oci has OCI media types"
    );
    assert_eq!(img.manifest["config"]["digest"], iid.as_str());
    assert_eq!(img.file("hello.txt").unwrap().data, b"hello\n");
    if Path::new("/usr/bin/umoci").exists() {
        let bundle = w.join("bundle");
        let out = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{}", oci_img.display(), oci_tag(&oci_img)))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
            "hello\n"
        );
    }
    let copied = ok(env.berth(&[
        "copy",
        &format!("oci-archive:{}", oci.display()),
        "local:fromoci:1",
    ]));
    assert!(copied.contains("sha256:"), "{copied}");

    // type=docker: `berth load` takes it, under the name given.
    let other = Env::new();
    let loaded = ok(other.berth(&["load", "-i", docker.to_str().unwrap()]));
    assert!(loaded.contains("outs:docker"), "{loaded}");
    let img = other.image("library/outs:docker");
    assert_eq!(
        img.config["config"]["Cmd"],
        serde_json::json!(["cat", "/hello.txt"])
    );
    assert_eq!(img.text("ran"), "ran\n");

    // -q: the image ID alone on stdout, nothing on stderr.
    let q = env.build(&ctx, &["-q"]);
    q.ok();
    assert_eq!(String::from_utf8_lossy(&q.out.stdout), format!("{iid}\n"));
    assert_eq!(q.stderr, "", "-q prints nothing else");
}

/// The ref name of the first manifest of an OCI layout.
fn oci_tag(layout: &Path) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_string()
}

/// 9: --push to a registry (a `berth serve` of another root).
#[test]
fn push_to_a_registry() {
    let env = Env::new();
    let registry = tempfile::tempdir().unwrap();
    let (_server, port) = common::serve(registry.path());
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM base:1\nRUN echo pushed > /pushed\nCMD [\"cat\", \"/pushed\"]\n",
        )],
    );
    let name = format!("127.0.0.1:{port}/team/pushed:v1");
    let b = env.build(&ctx, &["-t", &name, "--push"]);
    b.ok();
    let digest = b.digest();
    let out = ok(env.berth(&["inspect", "--raw", &name]));
    let manifest: Value = serde_json::from_str(&out).unwrap();
    assert!(manifest["layers"].as_array().unwrap().len() >= 2);
    assert_eq!(
        ok(env.berth(&["digest", &name])).trim(),
        digest,
        "the pushed manifest is the built one"
    );
    let summary: Value =
        serde_json::from_str(&ok(env.berth(&["inspect", "--format", "json", &name]))).unwrap();
    assert_eq!(summary["Digest"], digest.as_str());

    // --output type=registry pushes without storing locally.
    let name2 = format!("127.0.0.1:{port}/team/registry-only:v2");
    env.build(&ctx, &["--output", &format!("type=registry,name={name2}")])
        .ok();
    assert_eq!(ok(env.berth(&["digest", &name2])).trim(), digest);
    assert!(!env.images().contains("registry-only"), "{}", env.images());

    // Pushing without a name is refused before anything runs.
    let err = env.build(&ctx, &["--push"]).failed().to_string();
    assert!(err.contains("-t"), "{err}");
}

/// 10: a build beside the `berth serve` holding the root is visible over
/// HTTP at once.
#[test]
fn build_beside_a_running_server() {
    let env = Env::new();
    let (_server, port) = common::serve(&env.root);
    let ctx = env.context(
        "ctx",
        &[("Dockerfile", "FROM base:1\nRUN echo served > /served\n")],
    );
    let b = env.build(&ctx, &["-t", "beside/app:7"]);
    b.ok();
    let digest = b.digest();
    // curl: the request a registry client makes, headers included.
    let out = Command::new("curl")
        .args(["-sS", "-D", "-", "-o", "/dev/null", "-H"])
        .arg(
            "Accept: application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.manifest.v1+json",
        )
        .arg(format!("http://127.0.0.1:{port}/v2/beside/app/manifests/7"))
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.starts_with("http/1.1 200"), "{headers}");
    assert!(
        headers.contains(&format!("docker-content-digest: {digest}")),
        "{headers}"
    );
    // And a rebuild beside the server still hits the cache.
    env.build(&ctx, &["-t", "beside/app:7"])
        .ok()
        .assert_all(Status::Cached);
}

// ------------------------------------------------------------ bad input

/// Builds `dockerfile` (with `files`) expecting failure; checks nothing got
/// tagged and the root is consistent. Returns stderr.
fn build_fails(env: &Env, dockerfile: &str, files: &[(&str, &str)]) -> String {
    let name = format!("ctx-bad-{}", unique());
    let mut all = vec![("Dockerfile", dockerfile)];
    all.extend_from_slice(files);
    let ctx = env.context(&name, &all);
    let err = env.build(&ctx, &["-t", "bad:1"]).failed().to_string();
    assert!(
        !env.images().contains("library/bad"),
        "a failed build tagged its image:\n{}",
        env.images()
    );
    env.fsck_clean();
    err
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let env = Env::new();
    let err = build_fails(&env, "FROM base:1\nRUN echo ok\nCOPY --from\n", &[]);
    assert!(err.contains("Dockerfile:3:1"), "{err}");
    assert!(
        err.contains("COPY requires at least two arguments"),
        "{err}"
    );

    let err = build_fails(&env, "FROM base:1\nFROBNICATE the thing\n", &[]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.to_lowercase().contains("frobnicate"), "{err}");

    // (`CMD ["unterminated` is not an error: Docker runs it in shell form.)
    let err = build_fails(&env, "FROM base:1\nENV\n", &[]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("ENV"), "{err}");

    let err = build_fails(&env, "RUN echo no from\n", &[]);
    assert!(err.contains("Dockerfile:1"), "{err}");
}

#[test]
fn copy_errors_name_the_source() {
    let env = Env::new();
    let err = build_fails(
        &env,
        "FROM base:1\nRUN true\nCOPY --from=nosuchstage /x /x\n",
        &[],
    );
    assert!(err.contains("nosuchstage"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");

    let err = build_fails(
        &env,
        "FROM base:1\nCOPY missing.txt /m\n",
        &[("present.txt", "x")],
    );
    assert!(err.contains("missing.txt"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");

    let err = build_fails(&env, "FROM base:1\nCOPY ../outside /x\n", &[]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("outside"), "{err}");
    // The file next to the context was not read.
    assert!(!env.images().contains("bad"));
}

#[test]
fn missing_base_images_are_named() {
    let env = Env::new();
    let err = build_fails(&env, "FROM nosuchimage:3\nRUN true\n", &[]);
    assert!(err.contains("nosuchimage"), "{err}");
    assert!(err.contains("Dockerfile:1"), "{err}");

    // A registry that does not answer: a closed port on loopback.
    let port = common::free_port();
    let err = build_fails(&env, &format!("FROM 127.0.0.1:{port}/gone/base:1\n"), &[]);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn failing_run_shows_exit_code_and_last_output() {
    let env = Env::new();
    let err = build_fails(
        &env,
        "FROM base:1\nRUN true\nRUN echo first line && echo 'the last words' && exit 42\n",
        &[],
    );
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("exit code: 42"), "{err}");
    assert!(err.contains("the last words"), "{err}");
}

/// An OCI archive holding one image whose single layer is `entries`
/// (raw tar names, so `..` and absolute paths can be written).
fn hostile_archive(dir: &Path, name: &str, entries: &[(&str, tar::EntryType, &str)]) -> PathBuf {
    layered_archive(dir, name, &[entries])
}

/// An OCI archive of image `name:1`: busybox (`bin/busybox`, `bin/sh`,
/// `tmp/`) and then each entry list of `layers` as a layer of its own.
fn layered_archive(dir: &Path, name: &str, layers: &[&[(&str, tar::EntryType, &str)]]) -> PathBuf {
    fn header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        let bytes = name.as_bytes();
        // Raw name bytes: the tar crate's setters refuse `..`.
        h.as_ustar_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_size(size);
        h.set_mtime(1_600_000_000);
        if let Some(l) = link {
            h.as_ustar_mut().unwrap().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        h
    }
    let mut tars: Vec<Vec<u8>> = Vec::new();
    for (i, entries) in layers.iter().enumerate() {
        let mut layer = Vec::new();
        let mut b = tar::Builder::new(&mut layer);
        // A usable system below the hostile entries: busybox, so RUN works.
        let bb = std::fs::read("/bin/busybox").unwrap();
        b.append(
            &header("bin/", tar::EntryType::Directory, 0, None),
            std::io::empty(),
        )
        .unwrap();
        b.append(
            &header("tmp/", tar::EntryType::Directory, 0, None),
            std::io::empty(),
        )
        .unwrap();
        if i == 0 {
            let mut h = header(
                "bin/busybox",
                tar::EntryType::Regular,
                bb.len() as u64,
                None,
            );
            h.set_mode(0o755);
            h.set_cksum();
            b.append(&h, bb.as_slice()).unwrap();
            b.append(
                &header("bin/sh", tar::EntryType::Symlink, 0, Some("busybox")),
                std::io::empty(),
            )
            .unwrap();
        }
        for (path, kind, data) in entries.iter() {
            let link = (*kind == tar::EntryType::Symlink).then_some(*data);
            let size = if link.is_some() { 0 } else { data.len() as u64 };
            let body: &[u8] = if link.is_some() { b"" } else { data.as_bytes() };
            b.append(&header(path, *kind, size, link), body).unwrap();
        }
        b.finish().unwrap();
        drop(b);
        tars.push(layer);
    }
    let sha = |b: &[u8]| berth_oci::Digest::sha256_of(b).to_string();
    let diff_ids: Vec<String> = tars.iter().map(|t| sha(t)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": tars.iter().map(|_| serde_json::json!({"created_by": "hostile"})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(&config), "size": config.len()},
        "layers": tars.iter().map(|t| serde_json::json!(
            {"mediaType": "application/vnd.oci.image.layer.v1.tar",
             "digest": sha(t), "size": t.len()})).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha(&manifest), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": format!("{name}:1"),
                                       "org.opencontainers.image.ref.name": "1"}}],
    }))
    .unwrap();
    let path = dir.join("hostile.oci.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    for blob in tars.iter().chain([&config, &manifest]) {
        add(format!("blobs/sha256/{}", &sha(blob)[7..]), blob);
    }
    b.finish().unwrap();
    path
}

/// 12: symlinks a lower layer left. A layer writing `data/x` over a lower
/// `data -> /real` (and `lib64/y` over a dangling `lib64 -> lib`) shows
/// `data` as that layer's directory, as overlayfs (and BuildKit) do; COPY
/// follows symlinks on its destination, the last one and dangling ones
/// included (BuildKit's `fs.RootPath`); `--output type=local` and
/// `type=tar` write what RUN sees. Existing destinations are merged into;
/// a failed export leaves the destination as it was and nothing beside it.
fn scenario_symlinks_of_lower_layers(env: &Env) {
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    let archive = layered_archive(
        &env.work,
        "links",
        &[
            &[
                ("data", L, "/real"),
                ("real/", D, ""),
                ("real/old", F, "old\n"),
                ("lib64", L, "lib"),
                ("dangle", L, "/nowhere"),
                ("somedir/", D, ""),
                ("lnkdir", L, "/somedir"),
                ("tfile", F, "old\n"),
                ("lnkfile", L, "tfile"),
            ],
            &[("data/x", F, "x\n"), ("lib64/y", F, "y\n")],
        ],
    );
    env.give(&archive);
    ok(env.berth(&["load", "-i", archive.to_str().unwrap()]));
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM links:1\n\
                 RUN ls /data > /seen-data && ls /real > /seen-real && cat /lib64/y > /seen-y\n\
                 COPY f /dangle/\n\
                 COPY f /lnkdir\n\
                 COPY f /data/\n\
                 COPY f /lnkfile\n\
                 COPY dir /dangle/sub\n",
            ),
            ("f", "f\n"),
            ("dir/a", "a\n"),
        ],
    );
    // An existing destination: BuildKit merges into it.
    let local = env.work.join("out");
    std::fs::create_dir_all(local.join("data")).unwrap();
    std::fs::write(local.join("keep"), "mine\n").unwrap();
    std::fs::write(local.join("data/mine"), "mine\n").unwrap();
    std::fs::write(local.join("real"), "a file where the image has a dir\n").unwrap();
    for p in [
        &local,
        &local.join("data"),
        &local.join("keep"),
        &local.join("data/mine"),
        &local.join("real"),
    ] {
        env.give(p);
    }
    let tarball = env.work.join("out.tar");
    env.build(
        &ctx,
        &[
            "-t",
            "linked:1",
            "--output",
            &format!("type=local,dest={}", local.display()),
            "--output",
            &format!("type=tar,dest={}", tarball.display()),
        ],
    )
    .ok();
    let read =
        |p: &str| std::fs::read_to_string(local.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let names = |p: &str| {
        let mut v: Vec<String> = std::fs::read_dir(local.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v.join(" ")
    };
    let is_link = |p: &str| {
        std::fs::symlink_metadata(local.join(p))
            .unwrap()
            .is_symlink()
    };
    // What RUN saw...
    assert_eq!(read("seen-data"), "x\n");
    assert_eq!(read("seen-real"), "old\n");
    assert_eq!(read("seen-y"), "y\n");
    // ... is what the export wrote: the upper layer's directories.
    assert!(!is_link("data") && !is_link("lib64"));
    assert_eq!(names("data"), "f mine x", "merged with what dest had");
    assert_eq!(names("real"), "old");
    assert_eq!(names("lib64"), "y");
    // COPY followed the links: dangling ones make their target.
    assert!(is_link("dangle") && is_link("lnkdir") && is_link("lnkfile"));
    assert_eq!(names("nowhere"), "f sub");
    assert_eq!(read("nowhere/sub/a"), "a\n");
    assert_eq!(names("somedir"), "f");
    assert_eq!(read("tfile"), "f\n");
    assert_eq!(read("keep"), "mine\n", "entries the image lacks stay");
    let leftovers: Vec<_> = std::fs::read_dir(&env.work)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".berth"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // type=tar: the same tree.
    let fs = entries(&std::fs::read(&tarball).unwrap());
    let get = |p: &str| {
        fs.iter()
            .find(|e| e.path.trim_end_matches('/') == p)
            .unwrap_or_else(|| panic!("{p} not in the tar"))
    };
    assert_eq!(get("data/x").data, b"x\n");
    assert_eq!(get("data/f").data, b"f\n");
    assert_eq!(get("lib64/y").data, b"y\n");
    assert_eq!(get("nowhere/sub/a").data, b"a\n");
    assert!(fs.iter().all(|e| e.path != "real/x"));

    // A layer the export cannot apply (its own symlink to nothing, then a
    // file through it) fails the export: dest keeps what it had, a new
    // dest is not made, nothing is left beside them.
    let bad = layered_archive(
        &env.work,
        "badlayer",
        &[&[("own", L, "/missing"), ("own/w", F, "w\n")]],
    );
    env.give(&bad);
    ok(env.berth(&["load", "-i", bad.to_str().unwrap()]));
    let ctx2 = env.context(
        "ctx2",
        &[("Dockerfile", "FROM badlayer:1\nLABEL only=metadata\n")],
    );
    let before = tree_listing(&local);
    let fresh = env.work.join("fresh");
    for (dest, kind) in [(&local, "local"), (&fresh, "local"), (&tarball, "tar")] {
        let tar_before = std::fs::read(&tarball).unwrap();
        let err = env
            .build(
                &ctx2,
                &["--output", &format!("type={kind},dest={}", dest.display())],
            )
            .failed()
            .to_string();
        assert!(err.contains("own"), "{err}");
        assert_eq!(
            tree_listing(&local),
            before,
            "{kind} export to {} changed dest",
            dest.display()
        );
        assert!(!fresh.exists(), "a failed export made its destination");
        assert_eq!(std::fs::read(&tarball).unwrap(), tar_before);
        let leftovers: Vec<_> = std::fs::read_dir(&env.work)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".berth") || n.ends_with(".partial"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}

#[test]
fn symlinks_of_lower_layers_agree_in_run_copy_and_outputs() {
    scenario_symlinks_of_lower_layers(&Env::new());
}

#[test]
fn rootless_symlinks_of_lower_layers_agree_in_run_copy_and_outputs() {
    if let Some(env) = Env::rootless() {
        scenario_symlinks_of_lower_layers(&env);
    }
}

/// 13: BuildKit's `SecretsUsedInArgOrEnv` check: `#N WARN:` lines on the
/// vertex that loaded the Dockerfile, buildx's summary at the end, keys
/// only (never a value), per-instruction `# check=skip=`, stages not built
/// unchecked, `-q` silent, `# check=error=true` failing before any step
/// runs, `BUILDKIT_DOCKERFILE_CHECK` in the directive's place.
fn scenario_secrets_check(env: &Env) {
    let dockerfile = "FROM base:1 AS unused\n\
                      ENV UNUSED_TOKEN=1\n\
                      FROM base:1\n\
                      ARG DB_PASSWORD=s3cr3t\n\
                      ENV API_TOKEN=hunter2 PUBLIC_KEY=pk\n\
                      # check=skip=SecretsUsedInArgOrEnv // allowed here\n\
                      ENV OTHER_SECRET=x\n\
                      RUN echo ran\n";
    let ctx = env.context("ctx", &[("Dockerfile", dockerfile)]);
    let b = env.build(&ctx, &["--build-arg", "DB_PASSWORD=fromflag"]);
    b.ok();
    let d = "SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for sensitive data";
    let warn: Vec<&str> = b.stderr.lines().filter(|l| l.contains(" WARN: ")).collect();
    assert_eq!(warn.len(), 2, "{}", b.stderr);
    let id = warn[0].split(' ').next().unwrap();
    assert_eq!(
        warn[0],
        format!("{id} WARN: {d} (ARG \"DB_PASSWORD\") (line 4)")
    );
    assert_eq!(
        warn[1],
        format!("{id} WARN: {d} (ENV \"API_TOKEN\") (line 5)")
    );
    assert!(
        b.stderr.contains(&format!(
            "{id} [internal] load build definition from Dockerfile\n"
        )),
        "{}",
        b.stderr
    );
    let tail = b.stderr.split("#0 writing image").nth(1).unwrap_or("");
    assert!(
        tail.contains(&format!(
            "\n\n 2 warnings found (use --debug to expand):\n - {d} (ARG \"DB_PASSWORD\") (line 4)\n - {d} (ENV \"API_TOKEN\") (line 5)\n"
        )),
        "the summary comes last:\n{}",
        b.stderr
    );
    for secret in ["s3cr3t", "hunter2", "fromflag"] {
        assert!(!b.stderr.contains(secret), "{secret} in:\n{}", b.stderr);
    }
    // --debug expands the summary with the link.
    let dbg = env.berth(&[
        "--debug",
        "build",
        "--progress",
        "plain",
        ctx.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&dbg.stderr);
    assert!(
        err.contains(
            "More info: https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"
        ),
        "{err}"
    );
    assert!(!err.contains("hunter2") && !err.contains("s3cr3t"), "{err}");
    // -q: the image ID only.
    let q = env.build(&ctx, &["-q"]);
    q.ok();
    assert_eq!(q.stderr, "", "-q prints no warning");
    // check=error=true: the warnings, then the error; nothing ran.
    let strict = env.context(
        "strict",
        &[("Dockerfile", &format!("# check=error=true\n{dockerfile}"))],
    );
    let b = env.build(&strict, &["--no-cache"]);
    let err = b.failed();
    assert!(
        err.contains("lint violation found for rules: SecretsUsedInArgOrEnv"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{d} (ENV \"API_TOKEN\") (line 6)")),
        "{err}"
    );
    assert!(!err.contains("RUN echo ran"), "a step ran:\n{err}");
    // The build arg replaces the directive.
    let b = env.build(
        &strict,
        &[
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=SecretsUsedInArgOrEnv",
        ],
    );
    b.ok();
    assert!(!b.stderr.contains("WARN"), "{}", b.stderr);
    let bad = env.build(
        &strict,
        &["--build-arg", "BUILDKIT_DOCKERFILE_CHECK=nonsense"],
    );
    assert!(bad
        .failed()
        .contains("failed to parse build-arg:BUILDKIT_DOCKERFILE_CHECK"));
}

#[test]
fn secrets_used_in_arg_or_env_are_warned_about() {
    scenario_secrets_check(&Env::new());
}

#[test]
fn rootless_secrets_used_in_arg_or_env_are_warned_about() {
    if let Some(env) = Env::rootless() {
        scenario_secrets_check(&env);
    }
}

/// Every path under `dir` whose file name is `name`.
fn find_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name() == name {
            out.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_named(&p, name, out);
        }
    }
}

/// 11: a base image whose layer tries to escape (`../x`, `/abs`, a symlink
/// to `/` then a file through it): the build contains it or fails clearly,
/// and nothing lands outside the root.
#[test]
fn hostile_base_layer_cannot_escape() {
    let env = Env::new();
    let u = unique().replace('-', "_");
    let escape = format!("escape_{u}");
    let abs = format!("abs_{u}");
    let through = format!("through_{u}");
    let entries = [
        (format!("../{escape}"), tar::EntryType::Regular, "dotdot"),
        (
            format!("../../../../../../../../tmp/{escape}"),
            tar::EntryType::Regular,
            "deep",
        ),
        (format!("/tmp/{abs}"), tar::EntryType::Regular, "absolute"),
        ("evil".to_string(), tar::EntryType::Symlink, "/"),
        (
            format!("evil/tmp/{through}"),
            tar::EntryType::Regular,
            "via symlink",
        ),
    ];
    let entries: Vec<(&str, tar::EntryType, &str)> = entries
        .iter()
        .map(|(p, k, d)| (p.as_str(), *k, *d))
        .collect();
    let archive = hostile_archive(&env.work, "hostile", &entries);
    let loaded = env.berth(&["load", "-i", archive.to_str().unwrap()]);
    let loaded_err = String::from_utf8_lossy(&loaded.stderr).into_owned();
    let check_outside = || {
        for (dir, name) in [
            (Path::new("/tmp"), &escape),
            (Path::new("/tmp"), &abs),
            (Path::new("/tmp"), &through),
            (Path::new("/"), &escape),
        ] {
            assert!(
                !dir.join(name).exists(),
                "a hostile layer wrote {}",
                dir.join(name).display()
            );
        }
        // Inside the test dir, `../x` may only have landed nowhere or in
        // a directory the layer owns (a snapshot's tree), never beside
        // the store's files.
        let mut found = Vec::new();
        find_named(&env.work, &escape, &mut found);
        find_named(&env.work, &through, &mut found);
        for p in &found {
            let parent = p.parent().unwrap();
            assert!(
                parent != env.root && parent != env.work && !parent.ends_with("snapshots"),
                "{} escaped its layer",
                p.display()
            );
        }
    };
    eprintln!("berth load of the hostile archive: {loaded_err}");
    if !loaded.status.success() {
        // Refusing the archive outright is a fine answer, if it says why.
        assert!(!loaded_err.is_empty());
        check_outside();
        return;
    }
    let ctx = env.context(
        "ctx",
        &[(
            "Dockerfile",
            "FROM hostile:1\nRUN /bin/busybox ls -la / /tmp > /listing\n",
        )],
    );
    let b = env.build(&ctx, &["-t", "fromhostile:1"]);
    eprintln!("build from the hostile image:\n{}", b.stderr);
    check_outside();
    if b.out.status.success() {
        // Contained: the listing shows what the container saw, and nothing
        // the test process's /tmp holds.
        let img = env.image("library/fromhostile:1");
        let listing = img.text("listing");
        // The host's /tmp holds this test's own directory: the container
        // must not see it. The entries that aimed outside landed inside.
        let own = env.work.file_name().unwrap().to_str().unwrap();
        assert!(
            !listing.contains(own),
            "the host's /tmp leaked in:\n{listing}"
        );
        assert!(listing.contains("evil -> /"), "{listing}");
        assert!(listing.contains(&through), "{listing}");
    } else {
        assert!(
            b.stderr.contains("layer") || b.stderr.contains("unpack"),
            "the failure should name the bad layer:\n{}",
            b.stderr
        );
        assert!(!env.images().contains("fromhostile"));
    }
    env.fsck_clean();
}

/// Every entry of a directory tree: path, type, mode, owner, contents or
/// link target.
fn tree_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else {
                format!(
                    "= {:?}",
                    String::from_utf8_lossy(&std::fs::read(&p).unwrap())
                )
            };
            out.push(format!(
                "{rel} {:o} {}:{} {what}",
                m.mode(),
                m.uid(),
                m.gid()
            ));
        }
    }
    out.sort();
    out
}

/// With `BERTH_SNAPSHOTTER=native` (the copy-based fallback for where
/// overlayfs cannot be mounted) a build makes the same image as with
/// overlayfs: byte for byte under SOURCE_DATE_EPOCH, and the same final
/// filesystem where the two may encode a layer differently (a directory
/// replaced whole is an opaque marker in overlay, whiteouts natively).
fn scenario_copy_based_snapshots(env_for: &dyn Fn() -> Env) {
    let same_bytes = "FROM base:1 AS one\n\
        RUN mkdir -p /d/e && echo f > /d/e/f && ln -s /d/e/f /d/link && ln /d/e/f /d/hard\n\
        FROM base:1\n\
        COPY --from=one /d /copied\n\
        COPY dir /dir\n\
        COPY in.txt /etc/\n\
        WORKDIR /w/x\n\
        RUN rm /etc/group && chmod 700 /etc && echo more >> /etc/passwd && rm -r /tmp && \
            mkdir -p /var/new && chown 7:8 /var/new && touch /w/x/t\n\
        RUN chmod 600 /copied/e/f && rm /dir/a\n";
    let replaced = "FROM base:1\n\
        RUN mkdir -p /d/sub && echo 1 > /d/one && echo 2 > /d/sub/two\n\
        RUN rm -rf /d && mkdir /d && echo 3 > /d/three && rm -rf /bin/* && ln -s /x /bin/sh2\n";
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let mut digests = Vec::new();
    let mut trees = Vec::new();
    for mode in ["overlay", "native"] {
        let env = env_for();
        let ctx = env.context(
            "ctx",
            &[
                ("Dockerfile", same_bytes),
                ("in.txt", "x\n"),
                ("dir/a", "a"),
                ("dir/b/c", "c"),
            ],
        );
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_650_000_000);
        for f in ["in.txt", "dir/a", "dir/b/c"] {
            std::fs::File::options()
                .write(true)
                .open(ctx.join(f))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        let mut vars = sde.to_vec();
        vars.push(("BERTH_SNAPSHOTTER", mode));
        env.build_env(&ctx, &["-t", "same:1"], &vars).ok();
        let img = env.image("library/same:1");
        digests.push((img.manifest_digest.clone(), img));

        let ctx2 = env.context("ctx2", &[("Dockerfile", replaced)]);
        let out = env.work.join("out");
        env.build_env(
            &ctx2,
            &["-o", &format!("type=local,dest={}", out.display())],
            &vars,
        )
        .ok();
        trees.push(tree_listing(&out));
    }
    assert_eq!(
        digests[0].0,
        digests[1].0,
        "overlay and copy-based snapshots made different images:\n{:#}\n{:#?}\n---\n{:#}\n{:#?}",
        digests[0].1.config,
        digests[0]
            .1
            .layers
            .iter()
            .skip(1)
            .map(|l| l
                .iter()
                .map(|e| (&e.path, e.mode, e.uid, e.kind))
                .collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        digests[1].1.config,
        digests[1]
            .1
            .layers
            .iter()
            .skip(1)
            .map(|l| l
                .iter()
                .map(|e| (&e.path, e.mode, e.uid, e.kind))
                .collect::<Vec<_>>())
            .collect::<Vec<_>>(),
    );
    let img = &digests[1].1;
    assert_eq!(img.text("copied/e/f"), "f\n");
    assert_eq!(img.file("copied/e/f").unwrap().mode & 0o7777, 0o600);
    assert!(img
        .layers
        .last()
        .unwrap()
        .iter()
        .any(|e| e.path == "dir/.wh.a"));
    assert_eq!(trees[0], trees[1], "final filesystems differ");
    assert!(
        trees[1].iter().any(|l| l.starts_with("d/three ")),
        "{:#?}",
        trees[1]
    );
    assert!(
        !trees[1].iter().any(|l| l.starts_with("d/one ")),
        "{:#?}",
        trees[1]
    );
    assert!(
        trees[1].iter().any(|l| l.starts_with("bin/sh2 ")),
        "{:#?}",
        trees[1]
    );
    assert!(
        !trees[1].iter().any(|l| l.starts_with("bin/busybox ")),
        "{:#?}",
        trees[1]
    );
}

#[test]
fn copy_based_snapshots_make_the_same_image() {
    scenario_copy_based_snapshots(&Env::new);
}

#[test]
fn rootless_copy_based_snapshots_make_the_same_image() {
    if Env::rootless().is_none() {
        return;
    }
    scenario_copy_based_snapshots(&|| Env::rootless().unwrap());
}

/// `berth builder prune` removes what no cache record can reach (a
/// `--no-cache` rerun's superseded snapshots) and keeps the cache working;
/// `--all` empties it, so the next build runs every step.
fn scenario_builder_prune(env: &Env) {
    let ctx = env.context(
        "ctx-prune",
        &[("Dockerfile", STAMP_DOCKERFILE), ("input.txt", "one\n")],
    );
    env.build(&ctx, &["-t", "stamp:1"]).ok();
    env.build(&ctx, &["-t", "stamp:1", "--no-cache"]).ok();
    let snapshots = || {
        std::fs::read_dir(env.root.join("snapshots"))
            .unwrap()
            .count()
    };
    let before = snapshots();

    let out = ok(env.berth(&["builder", "prune", "-f"]));
    assert!(out.contains("Total reclaimed space:"), "{out}");
    assert!(snapshots() < before, "superseded snapshots removed:\n{out}");
    assert!(!out.contains("Deleted build cache: 0 snapshots"), "{out}");
    env.build(&ctx, &["-t", "stamp:1"])
        .ok()
        .assert_all(Status::Cached);
    env.fsck_clean();

    let out = ok(env.berth(&["builder", "prune", "--all", "--force"]));
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let left: Vec<String> = std::fs::read_dir(env.root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tmp" && n != "empty")
        .collect();
    assert!(left.is_empty(), "{left:?}");
    env.build(&ctx, &["-t", "stamp:1"])
        .ok()
        .assert_all(Status::Done);
    // The images themselves are untouched.
    env.image("library/stamp:1");
    env.fsck_clean();
}

#[test]
fn builder_prune() {
    scenario_builder_prune(&Env::new());
}

#[test]
fn rootless_builder_prune() {
    if let Some(env) = Env::rootless() {
        scenario_builder_prune(&env);
    }
}

/// `--progress auto` on a terminal (and `tty` anywhere) is BuildKit's live
/// display: redrawn in place, a FINISHED header, every step with its time.
#[test]
fn live_progress_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIP: script (util-linux) is not installed");
        return;
    }
    let env = Env::new();
    let ctx = env.context(
        "ctx-tty",
        &[(
            "Dockerfile",
            "FROM base:1\nRUN for i in 1 2 3; do echo step-output-$i; sleep 0.3; done\nCOPY Dockerfile /\n",
        )],
    );
    let cmd = format!(
        "{} --root {} build {}",
        env!("CARGO_BIN_EXE_berth"),
        env.root.display(),
        ctx.display()
    );
    let out = Command::new("script")
        .args(["-qefc", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("BERTH_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("\x1b[2K"), "drawn in place: {all:?}");
    assert!(all.contains("FINISHED"), "{all:?}");
    assert!(all.contains("=> [stage-0 2/3] RUN for i in"), "{all:?}");
    assert!(
        all.contains("=> => # step-output-1"),
        "output under the running step: {all:?}"
    );
    assert!(!all.contains("#2 DONE"), "no plain lines: {all:?}");

    // Not a terminal: plain lines, unless tty is asked for.
    let plain = env.berth(&["build", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("CACHED") && !err.contains('\x1b'), "{err}");
    let tty = env.berth(&["build", "--progress", "tty", ctx.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&tty.stderr);
    assert!(
        err.contains("[+] Building") && err.contains('\x1b'),
        "{err}"
    );
}

/// `FROM --platform` picks the platform of that stage's base only: the
/// cross-compiling pattern builds on the build machine's image and ships a
/// target-platform image; a base that lacks the named platform is refused.
#[test]
fn per_stage_from_platform() {
    let env = Env::new();
    let host = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other = if host == "arm64" { "amd64" } else { "arm64" };
    let ctx = env.context(
        "ctx-platform",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM base:1 AS tools\n\
             ARG TARGETARCH\n\
             RUN echo built for $TARGETARCH > /out\n\
             FROM scratch\n\
             COPY --from=tools /out /out\n",
        )],
    );
    env.build(
        &ctx,
        &["--platform", &format!("linux/{other}"), "-t", "cross:1"],
    )
    .ok();
    let img = env.image("library/cross:1");
    assert_eq!(img.config["architecture"], other);
    assert_eq!(img.text("out"), format!("built for {other}\n"));

    let ctx = env.context(
        "ctx-platform-bad",
        &[(
            "Dockerfile",
            &format!("FROM --platform=linux/{other} base:1\nRUN true\n"),
        )],
    );
    let b = env.build(&ctx, &[]);
    let err = b.failed();
    assert!(err.contains(&format!("linux/{other}")), "{err}");
}

/// A stage only copied from makes no layer blobs (its steps are cached as
/// snapshots, as BuildKit's are); building it as the target later reuses
/// those steps and makes its blobs then: the same image a fresh build makes.
#[test]
fn side_stages_make_blobs_only_when_an_image_needs_them() {
    let dockerfile = "FROM base:1 AS side\n\
        RUN head -c 100000 /dev/zero | tr '\\\\0' x > /side-data && echo $RANDOM$RANDOM > /stamp\n\
        FROM base:1\n\
        COPY --from=side /side-data /copied\n";
    let blobs = |env: &Env| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(env.root.join("blobs/sha256"))
            .unwrap()
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect()
    };
    let env = Env::new();
    let ctx = env.context("ctx-side", &[("Dockerfile", dockerfile)]);
    let before = blobs(&env);
    env.build(&ctx, &["-t", "main:1"]).ok();
    let main = env.image("library/main:1");
    let mut referenced: std::collections::BTreeSet<String> = main.manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    referenced.insert(
        main.manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    referenced.insert(main.manifest_digest.clone());
    let new: Vec<String> = blobs(&env).difference(&before).cloned().collect();
    assert!(!new.is_empty());
    for b in &new {
        assert!(
            referenced.contains(b),
            "blob {b} belongs to no image: the side stage's?"
        );
    }

    // The side stage as the target: every step cached (the stamp proves
    // the RUN did not run again), its layer blob made now.
    let side = env.build(&ctx, &["--target", "side", "-t", "side:1"]);
    side.ok().assert_all(Status::Cached);
    let img = env.image("library/side:1");
    assert_eq!(img.text("side-data").len(), 100000);
    let stamp = img.text("stamp");
    assert_eq!(main.text("copied").len(), 100000);
    env.fsck_clean();
    let again = env.build(&ctx, &["--target", "side", "-t", "side:1"]);
    again.ok().assert_all(Status::Cached);
    assert_eq!(again.digest(), side.digest());
    assert_eq!(env.image("library/side:1").text("stamp"), stamp);
}

// ---- Issue 9: build steps must not reach the host ----

/// An HTTP server on `addr` that answers every request with "host-secret"
/// for 60 s (a service bound to the host's loopback, as an unauthenticated
/// registry would be).
fn host_service(addr: &str) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(addr).unwrap();
    let a = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().take(64) {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 512];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nhost-secret");
        }
    });
    a
}

/// A RUN line that fetches `http://HOST:PORT/` into `/FILE` (never fails).
fn fetch_into(host: &str, port: u16, file: &str) -> String {
    format!(
        "RUN printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} > /{file} 2>&1; echo end >> /{file}\n"
    )
}

/// A non-loopback IPv4 address of this host, if it has one.
fn host_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
}

fn scenario_default_network_is_isolated(env: &Env) {
    let port = host_service("127.0.0.1:0").port();
    let dockerfile = format!(
        "FROM base:1\n{}{}",
        fetch_into("127.0.0.1", port, "lo"),
        fetch_into("10.0.2.2", port, "gw")
    );
    let ctx = env.context("net", &[("Dockerfile", &dockerfile)]);
    let b = env.build(&ctx, &["-t", "net:1"]);
    b.ok();
    let img = env.image("library/net:1");
    for f in ["lo", "gw"] {
        let text = img.text(f);
        assert!(
            !text.contains("host-secret"),
            "/{f}: a default-network RUN reached the host's loopback: {text}"
        );
        assert!(text.ends_with("end\n"), "/{f}: {text}");
    }
    // Where slirp4netns cannot run (rootless with a root-only /dev/net/tun,
    // as on this machine), steps get loopback only and the build says why.
    let warned = b
        .stderr
        .contains("WARNING: RUN steps have no outbound network");
    if env.user.is_none() {
        assert!(!warned, "root runs slirp4netns: {}", b.stderr);
        // Outbound works: a service on the host's own non-loopback address
        // is reached like any other host.
        if let Some(ip) = host_address() {
            let outside = host_service(&format!("{ip}:0"));
            let df = format!("FROM base:1\n{}", fetch_into(&ip, outside.port(), "out"));
            let ctx = env.context("net-out", &[("Dockerfile", &df)]);
            env.build(&ctx, &["-t", "net:3"]).ok();
            let text = env.image("library/net:3").text("out");
            assert!(text.contains("host-secret"), "no outbound access: {text}");
        }
    } else if !warned {
        let tun = std::fs::File::options()
            .read(true)
            .write(true)
            .open("/dev/net/tun");
        assert!(
            tun.is_ok(),
            "no warning although slirp4netns cannot run: {}",
            b.stderr
        );
    }

    // The host's network takes the entitlement, as in BuildKit.
    let out = env.berth(&["build", "--network", "host", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--allow network.host"), "{err}");
    let host_run = "FROM base:1\nRUN --network=host true\n";
    let ctx2 = env.context("net-host", &[("Dockerfile", host_run)]);
    let err = env.build(&ctx2, &[]).failed().to_string();
    assert!(
        err.contains("network.host entitlement") && err.contains("Dockerfile:2"),
        "{err}"
    );
    // With it, the same fetch reaches the service: the check above can fail.
    let ctx3 = env.context(
        "net-allowed",
        &[(
            "Dockerfile",
            &format!("FROM base:1\n{}", fetch_into("127.0.0.1", port, "lo")),
        )],
    );
    env.build(
        &ctx3,
        &[
            "--network",
            "host",
            "--allow",
            "network.host",
            "-t",
            "net:2",
        ],
    )
    .ok();
    assert!(env
        .image("library/net:2")
        .text("lo")
        .contains("host-secret"));
}

#[test]
fn default_network_cannot_reach_host_loopback() {
    scenario_default_network_is_isolated(&Env::new());
}

#[test]
fn rootless_default_network_cannot_reach_host_loopback() {
    if let Some(env) = Env::rootless() {
        scenario_default_network_is_isolated(&env);
    }
}

/// The block device under the test's files, as `major minor`.
fn disk_device(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    if Path::new(&format!("/sys/dev/block/{major}:{minor}")).exists() {
        (major, minor)
    } else {
        (7, 0) // loop0
    }
}

fn scenario_step_confinement(env: &Env) {
    let (major, minor) = disk_device(&env.work);
    let dockerfile = format!(
        "FROM base:1\n\
         RUN grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status > /status; \
             (mknod /disk b {major} {minor} && head -c 512 /disk > /dev/null && echo read-disk || echo no-disk) > /disk.txt 2>/dev/null; \
             rm -f /disk; \
             (mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo no-mount) > /mount.txt; \
             (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null && echo proc-sys-written > /procsys.txt || echo proc-sys-ro > /procsys.txt\n"
    );
    let ctx = env.context("confined", &[("Dockerfile", &dockerfile)]);
    env.build(&ctx, &["-t", "confined:1"]).ok();
    let img = env.image("library/confined:1");
    let status = img.text("status");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("CapBnd:\t00000000a80425fb"), "{status}");
    assert_eq!(
        img.text("disk.txt"),
        "no-disk\n",
        "a RUN step read the host's disk"
    );
    assert_eq!(img.text("mount.txt"), "no-mount\n");
    assert_eq!(img.text("procsys.txt"), "proc-sys-ro\n");
}

#[test]
fn run_steps_are_confined_like_docker_containers() {
    scenario_step_confinement(&Env::new());
}

#[test]
fn rootless_run_steps_are_confined_like_docker_containers() {
    if let Some(env) = Env::rootless() {
        scenario_step_confinement(&env);
    }
}

/// A setuid binary from a layer (or made by a RUN step) and a device node
/// stay in the root, but no other local user can reach them; the root's
/// owner file keeps no command line.
#[test]
fn root_is_private_to_its_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Some((uid, gid)) = common::rootless_user() else {
        return;
    };
    let env = Env::new();
    // The other user can walk up to the root (so the test can fail).
    std::fs::set_permissions(&env.work, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dockerfile = "FROM base:1\nARG TOKEN\nRUN cp /bin/busybox /bin/suid && chmod 4755 /bin/suid && mknod /null c 1 3\n";
    let ctx = env.context("suid", &[("Dockerfile", dockerfile)]);
    env.build(
        &ctx,
        &["--build-arg", "TOKEN=tok-s3cr3t-value", "-t", "suid:1"],
    )
    .ok();

    let mode = std::fs::metadata(&env.root).unwrap().mode() & 0o777;
    assert_eq!(mode & 0o067, 0, "root mode {mode:o}");
    let owner = env.root.join("meta.owner");
    let m = std::fs::metadata(&owner).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&owner).unwrap();
    assert!(
        !text.contains("tok-s3cr3t") && !text.contains("--build-arg"),
        "{text}"
    );

    // Every setuid file and device node under the root, found as root.
    let out = Command::new("find")
        .arg(&env.root)
        .args([
            "(", "-perm", "-4000", "-o", "-type", "c", "-o", "-type", "b", ")", "-print",
        ])
        .output()
        .unwrap();
    let found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert!(found.iter().any(|p| p.ends_with("/bin/suid")), "{found:?}");
    let other = |script: &str, arg: &str| {
        Command::new("sh")
            .args(["-c", script, "sh", arg])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap()
    };
    assert!(other("test -x \"$1\"", env.work.to_str().unwrap())
        .status
        .success());
    for path in &found {
        let r = other("test -e \"$1\" || ls -l \"$1\"", path);
        assert!(!r.status.success(), "user berth reaches {path}");
    }
    // An old root made world-traversable is made private on next use.
    std::fs::set_permissions(&env.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    ok(env.berth(&["images"]));
    assert_eq!(std::fs::metadata(&env.root).unwrap().mode() & 0o777, 0o700);
}
