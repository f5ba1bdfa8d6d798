//! Fixtures: a busybox-static root and a way to run a step as root or as the
//! unprivileged user `berth` through the self-test binary (which calls the
//! entry points exactly as `berth build` does).

#![allow(dead_code)]

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_sandbox::{Rootfs, RunSpec};
use serde_json::Value;

pub const SELFTEST: &str = env!("CARGO_BIN_EXE_berth-sandbox-selftest");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real root: private mount namespace only.
    Root,
    /// The user `berth` with the subordinate range (newuidmap).
    Rootless,
    /// The user `berth` with only its own id mapped.
    RootlessSingle,
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The uid/gid to run rootless tests as: `berth` when we are root, else ourselves.
pub fn rootless_ids() -> Option<(u32, u32)> {
    if !is_root() {
        return Some((
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ));
    }
    let u = nix::unistd::User::from_name("berth").ok().flatten()?;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

/// Whether this mode can run here; prints why not.
pub fn available(mode: Mode) -> bool {
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIP: /bin/busybox missing (apt-get install busybox-static)");
        return false;
    }
    match mode {
        Mode::Root if !is_root() => {
            eprintln!("SKIP: root mode needs root");
            false
        }
        Mode::Rootless | Mode::RootlessSingle if rootless_ids().is_none() => {
            eprintln!("SKIP: no user `berth` for the rootless tests");
            false
        }
        _ => true,
    }
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub mode: Mode,
}

impl Fixture {
    /// A fixture with a busybox lower layer at `lower`, plus `upper`, `work`.
    pub fn new(mode: Mode) -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("berth-sandbox-test")
            .tempdir()
            .unwrap();
        let f = Fixture { dir, mode };
        busybox_root(&f.path("lower"));
        std::fs::create_dir(f.path("upper")).unwrap();
        std::fs::create_dir(f.path("work")).unwrap();
        f
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn overlay(&self) -> Rootfs {
        Rootfs::Overlay {
            lowers: vec![self.path("lower")],
            upper: self.path("upper"),
            work: self.path("work"),
        }
    }

    pub fn spec(&self, args: &[&str]) -> RunSpec {
        let mut s = RunSpec::new(self.overlay(), args.iter().map(|a| a.to_string()).collect());
        s.helper_exe = PathBuf::from(SELFTEST);
        s.env = vec!["PATH=/bin".into()];
        s
    }

    /// Hand the whole tree to the rootless user (its uid is root inside).
    fn share(&self) {
        if self.mode != Mode::Root && is_root() {
            let (uid, gid) = rootless_ids().unwrap();
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(self.dir.path())
                .status()
                .unwrap();
            assert!(st.success());
        }
    }

    /// Run `spec` the way `berth build` would in this mode.
    pub fn run(&self, spec: &RunSpec) -> Report {
        self.share();
        let input = serde_json::to_vec(spec).unwrap();
        Report(selftest(self.mode, "run", &input))
    }

    pub fn overlay_cmd(&self, request: &Value) -> Value {
        self.share();
        selftest(self.mode, "overlay", &serde_json::to_vec(request).unwrap())
    }

    /// Relative paths of everything under `upper`, sorted.
    pub fn upper_entries(&self) -> Vec<String> {
        list_tree(&self.path("upper"))
    }
}

pub fn list_tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

pub fn selftest(mode: Mode, cmd: &str, input: &[u8]) -> Value {
    use std::io::Write;
    let mut c = Command::new(SELFTEST);
    c.arg("--enter");
    if mode == Mode::RootlessSingle {
        c.arg("--single-id");
    }
    c.arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if mode != Mode::Root && is_root() {
        let (uid, gid) = rootless_ids().unwrap();
        c.uid(uid).gid(gid).env("HOME", "/").env("USER", "berth");
    }
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "selftest {cmd} ({mode:?}) gave no report ({e}); status {}; stdout {text:?}; stderr {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub struct Report(pub Value);

impl Report {
    pub fn code(&self) -> Option<i64> {
        self.0["code"].as_i64()
    }
    pub fn stdout(&self) -> &str {
        self.0["stdout"].as_str().unwrap_or("")
    }
    pub fn stderr(&self) -> &str {
        self.0["stderr"].as_str().unwrap_or("")
    }
    pub fn error(&self) -> Option<&str> {
        self.0["error"].as_str()
    }
    /// Assert the step ran and exited 0; return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code(), Some(0), "step failed: {:#}", self.0);
        self.stdout()
    }
}

/// A root with busybox and its applets as symlinks, `/etc/motd`, `/tmp`.
pub fn busybox_root(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", bin.join(applet));
        }
    }
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/motd"), "from the image\n").unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

/// Generate one test per mode: `name::root`, `name::rootless`, `name::rootless_single`.
#[macro_export]
macro_rules! all_modes {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn root() {
                if common::available(common::Mode::Root) {
                    ($body)(common::Mode::Root)
                }
            }
            #[test]
            fn rootless() {
                if common::available(common::Mode::Rootless) {
                    ($body)(common::Mode::Rootless)
                }
            }
            #[test]
            fn rootless_single() {
                if common::available(common::Mode::RootlessSingle) {
                    ($body)(common::Mode::RootlessSingle)
                }
            }
        }
    };
}
