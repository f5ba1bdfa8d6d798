//! Steps run through the helper, as root and rootless (the same tests run
//! three times: `::root`, `::rootless` with a subordinate id range,
//! `::rootless_single` with only the user's own id mapped).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use berth_sandbox::{Mount, MountKind, Network, Rootfs};
use common::{Fixture, Mode};

all_modes!(exit_codes_and_output_streams, |mode| {
    let f = Fixture::new(mode);
    let r = f.run(&f.spec(&["sh", "-c", "echo out; echo err >&2; exit 3"]));
    assert_eq!(r.code(), Some(3), "{:#}", r.0);
    assert_eq!(r.stdout(), "out\n");
    assert_eq!(r.stderr(), "err\n");
    assert_eq!(f.run(&f.spec(&["true"])).code(), Some(0));
    // stdin is /dev/null: cat ends at once.
    assert_eq!(f.run(&f.spec(&["cat"])).ok(), "");
});

all_modes!(missing_command_is_127, |mode| {
    let f = Fixture::new(mode);
    let r = f.run(&f.spec(&["no-such-tool", "arg"]));
    assert_eq!(r.code(), Some(127), "{:#}", r.0);
    assert!(
        r.stderr().contains("exec: no-such-tool: not found"),
        "{}",
        r.stderr()
    );
    let r = f.run(&f.spec(&["/bin/no-such-tool"]));
    assert_eq!(r.code(), Some(127), "{:#}", r.0);
    assert!(
        r.stderr().contains("exec: /bin/no-such-tool: not found"),
        "{}",
        r.stderr()
    );
    // A non-executable file is 126, as in a shell.
    let r = f.run(&f.spec(&["/etc/motd"]));
    assert_eq!(r.code(), Some(126), "{:#}", r.0);
});

all_modes!(environment_is_exact_and_cwd_is_used, |mode| {
    let f = Fixture::new(mode);
    let mut s = f.spec(&["env"]);
    s.env = vec!["PATH=/bin".into(), "FOO=bar baz".into()];
    assert_eq!(f.run(&s).ok(), "PATH=/bin\nFOO=bar baz\n");
    let mut s = f.spec(&["pwd"]);
    s.cwd = "/etc".into();
    assert_eq!(f.run(&s).ok(), "/etc\n");
    s.cwd = "/does/not/exist".into();
    let r = f.run(&s);
    let err = r
        .error()
        .unwrap_or_else(|| panic!("expected an error: {:#}", r.0));
    assert!(
        err.contains("/does/not/exist") && err.contains("does not exist"),
        "{err}"
    );
});

all_modes!(user_and_groups, |mode| {
    let f = Fixture::new(mode);
    let mut s = f.spec(&["sh", "-c", "id -u; id -g; id -G"]);
    s.uid = 1000;
    s.gid = 1000;
    s.additional_gids = vec![1000, 2000];
    let r = f.run(&s);
    if mode == Mode::RootlessSingle {
        let err = r
            .error()
            .unwrap_or_else(|| panic!("expected an error: {:#}", r.0));
        assert!(err.contains("uid 1000 is not mapped"), "{err}");
        assert!(err.contains("install uidmap and add a range"), "{err}");
    } else {
        assert_eq!(r.ok(), "1000\n1000\n1000 2000\n");
    }
    // Root in the sandbox works everywhere.
    assert_eq!(f.run(&f.spec(&["id", "-u"])).ok(), "0\n");
});

all_modes!(pid1_hostname_and_proc, |mode| {
    let f = Fixture::new(mode);
    let mut s = f.spec(&["sh", "-c", "echo $$; hostname; ls /proc | grep -c '^[0-9]'; grep -c . /proc/self/status >/dev/null && echo proc-ok"]);
    s.hostname = "buildkitsandbox".into();
    let out = f.run(&s).ok().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the step is pid 1: {out}");
    assert_eq!(lines[1], "buildkitsandbox");
    // Only the step's own processes are visible (sh, ls, grep at most).
    let n: u32 = lines[2].parse().unwrap();
    assert!((1..=3).contains(&n), "{out}");
    assert_eq!(lines[3], "proc-ok");
});

all_modes!(stray_daemons_die_with_the_step, |mode| {
    let f = Fixture::new(mode);
    // A background sleeper holding stdout would keep the step's pipe open
    // for 100 s if it survived pid 1.
    let start = std::time::Instant::now();
    let r = f.run(&f.spec(&["sh", "-c", "sleep 100 & echo started"]));
    assert_eq!(r.ok(), "started\n");
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
});

all_modes!(network_none_has_only_lo_up, |mode| {
    let f = Fixture::new(mode);
    let mut s = f.spec(&[
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; ip link show lo",
    ]);
    s.network = Network::None;
    let out = f.run(&s).ok().to_string();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"), "{out}");
    let rest: String = lines.collect::<Vec<_>>().join("\n");
    assert!(rest.contains("lo:") && rest.contains(",UP"), "{out}");
    // Host network: more than lo (the test host has at least one more).
    let s = f.spec(&["sh", "-c", "tail -n +3 /proc/net/dev | wc -l"]);
    let n: u32 = f.run(&s).ok().trim().parse().unwrap();
    assert!(n >= 1);
});

all_modes!(dev_nodes_and_sys, |mode| {
    let f = Fixture::new(mode);
    let script =
        "echo x > /dev/null && head -c 5 /dev/zero | wc -c && head -c 3 /dev/urandom | wc -c \
        && test -c /dev/full && test -c /dev/tty && test -c /dev/random && test -L /dev/ptmx \
        && test -d /dev/pts && test -d /dev/shm && readlink /dev/fd && readlink /dev/stdout \
        && echo shm > /dev/shm/x && cat /dev/shm/x && ls /sys/class >/dev/null && echo sys-ok \
        && (touch /sys/berth-probe 2>/dev/null && echo sys-writable || echo sys-ro)";
    let out = f.run(&f.spec(&["sh", "-c", script])).ok().to_string();
    assert_eq!(
        out,
        "5\n3\n/proc/self/fd\n/proc/self/fd/1\nshm\nsys-ok\nsys-ro\n"
    );
    // Nothing of /dev, /proc or /sys ends up in the layer.
    assert!(f.upper_entries().is_empty(), "{:?}", f.upper_entries());
});

all_modes!(writes_land_in_upper_with_whiteouts, |mode| {
    let f = Fixture::new(mode);
    // A second, lower layer: the top one wins.
    let bottom = f.path("bottom");
    std::fs::create_dir_all(bottom.join("etc")).unwrap();
    std::fs::write(bottom.join("etc/motd"), "bottom\n").unwrap();
    std::fs::write(bottom.join("etc/only-bottom"), "b\n").unwrap();
    let mut s = f.spec(&["sh", "-c", "cat /etc/motd /etc/only-bottom; echo data > /newfile; mkdir -p /var/x; rm /etc/motd; cat /etc/hosts /etc/resolv.conf"]);
    s.rootfs = Rootfs::Overlay {
        lowers: vec![f.path("lower"), bottom.clone()],
        upper: f.path("upper"),
        work: f.path("work"),
    };
    s.hosts = Some(b"127.0.0.1 localhost buildkitsandbox\n".to_vec());
    s.resolv_conf = Some(b"nameserver 10.0.0.53\n".to_vec());
    let out = f.run(&s).ok().to_string();
    assert_eq!(
        out,
        "from the image\nb\n127.0.0.1 localhost buildkitsandbox\nnameserver 10.0.0.53\n"
    );
    assert_eq!(
        f.upper_entries(),
        ["etc", "etc/motd", "newfile", "var", "var/x"]
    );
    let wh = std::fs::symlink_metadata(f.path("upper/etc/motd")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout is char 0/0"
    );
    assert_eq!(
        std::fs::read_to_string(f.path("upper/newfile")).unwrap(),
        "data\n"
    );
    // The layers are untouched.
    assert!(f.path("lower/etc/motd").exists());
    assert!(!f.path("lower/newfile").exists() && !f.path("lower/etc/hosts").exists());
    assert!(!bottom.join("etc/hosts").exists());
});

all_modes!(mount_stubs_do_not_remain, |mode| {
    let f = Fixture::new(mode);
    let cache = f.path("cache");
    std::fs::create_dir(&cache).unwrap();
    let etc_mtime = std::fs::metadata(f.path("lower/etc")).unwrap().mtime();
    let mut s = f.spec(&[
        "sh",
        "-c",
        "ls -d /run/secrets/tok /cache /mnt/t /etc/extra/file /deep/a/b",
    ]);
    s.mounts = vec![
        Mount {
            target: "/run/secrets/tok".into(),
            kind: MountKind::File {
                contents: b"x".to_vec(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            },
        },
        Mount {
            target: "/cache".into(),
            kind: MountKind::Bind {
                source: cache.clone(),
                readonly: false,
            },
        },
        Mount {
            target: "/mnt/t".into(),
            kind: MountKind::Tmpfs {
                size: Some(1 << 20),
            },
        },
        // Inside a directory that exists in the image: copied up, then removed.
        Mount {
            target: "/etc/extra/file".into(),
            kind: MountKind::File {
                contents: b"y".to_vec(),
                mode: 0o444,
                uid: 0,
                gid: 0,
            },
        },
        // Nested: the inner target is created inside the outer tmpfs.
        Mount {
            target: "/deep/a/b".into(),
            kind: MountKind::Tmpfs { size: None },
        },
        Mount {
            target: "/deep".into(),
            kind: MountKind::Tmpfs { size: None },
        },
    ];
    f.run(&s).ok();
    assert!(
        f.upper_entries().is_empty(),
        "stubs left in upper: {:?}",
        f.upper_entries()
    );
    assert_eq!(
        std::fs::metadata(f.path("lower/etc")).unwrap().mtime(),
        etc_mtime
    );
    assert!(std::fs::read_dir(&cache).unwrap().next().is_none());
});

all_modes!(file_secret_is_readable_and_leaves_nothing, |mode| {
    let f = Fixture::new(mode);
    let mut s = f.spec(&["sh", "-c", "cat /run/secrets/token; echo; stat -c '%a %u %g' /run/secrets/token; echo changed > /run/secrets/token || echo refused"]);
    s.mounts = vec![Mount {
        target: "/run/secrets/token".into(),
        kind: MountKind::File {
            contents: b"s3cret".to_vec(),
            mode: 0o400,
            uid: 0,
            gid: 0,
        },
    }];
    let r = f.run(&s);
    assert_eq!(r.ok(), "s3cret\n400 0 0\nrefused\n");
    assert!(f.upper_entries().is_empty(), "{:?}", f.upper_entries());
    // The secret never touched the disk under the fixture.
    let grep = std::process::Command::new("grep")
        .args(["-r", "s3cret"])
        .arg(f.dir.path())
        .output()
        .unwrap();
    assert!(
        grep.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&grep.stdout)
    );
});

all_modes!(bind_tmpfs_readonly_and_discarded_writes, |mode| {
    let f = Fixture::new(mode);
    let (rw, ro, ov) = (f.path("rw"), f.path("ro"), f.path("ov"));
    for d in [&rw, &ro, &ov] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(ro.join("f"), "ro\n").unwrap();
    std::fs::write(ov.join("f"), "original\n").unwrap();
    let script = "echo w > /rw/out; cat /ro/f; (echo x > /ro/g) 2>/dev/null || echo ro-refused; \
        echo t > /tmpfs/t && cat /tmpfs/t; echo changed > /ov/f; echo new > /ov/new; cat /ov/f /ov/new";
    let mut s = f.spec(&["sh", "-c", script]);
    s.mounts = vec![
        Mount {
            target: "/rw".into(),
            kind: MountKind::Bind {
                source: rw.clone(),
                readonly: false,
            },
        },
        Mount {
            target: "/ro".into(),
            kind: MountKind::Bind {
                source: ro.clone(),
                readonly: true,
            },
        },
        Mount {
            target: "/tmpfs".into(),
            kind: MountKind::Tmpfs { size: None },
        },
        Mount {
            target: "/ov".into(),
            kind: MountKind::BindOverlay { source: ov.clone() },
        },
    ];
    assert_eq!(f.run(&s).ok(), "ro\nro-refused\nt\nchanged\nnew\n");
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "w\n");
    assert!(!ro.join("g").exists());
    assert_eq!(std::fs::read_to_string(ov.join("f")).unwrap(), "original\n");
    assert!(!ov.join("new").exists());
    assert!(f.upper_entries().is_empty(), "{:?}", f.upper_entries());
});

all_modes!(plain_directory_root, |mode| {
    let f = Fixture::new(mode);
    let root = f.path("lower");
    let before = common::list_tree(&root);
    // An old mtime on /etc shows whether the stub's creation was undone.
    let old = std::fs::File::open(root.join("etc")).unwrap();
    old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let mut s = f.spec(&["sh", "-c", "echo x > /made; cat /etc/sec/s"]);
    s.rootfs = Rootfs::Dir(root.clone());
    s.mounts = vec![Mount {
        target: "/etc/sec/s".into(),
        kind: MountKind::File {
            contents: b"sec".to_vec(),
            mode: 0o444,
            uid: 0,
            gid: 0,
        },
    }];
    assert_eq!(f.run(&s).ok(), "sec");
    let mut expected = before;
    expected.push("made".into());
    expected.sort();
    assert_eq!(
        common::list_tree(&root),
        expected,
        "only the step's write remains"
    );
    let m = std::fs::metadata(root.join("etc")).unwrap();
    assert_eq!(
        (m.mtime(), m.mtime_nsec()),
        (1_000_000, 0),
        "mtime of /etc restored"
    );
});

all_modes!(overlay_in_process_new_api_and_legacy, |mode| {
    for legacy in [false, true] {
        let f = Fixture::new(mode);
        // 60 layers with long names: past one page as an option string.
        let mut lowers: Vec<PathBuf> = Vec::new();
        for i in 0..60 {
            let d = f.path(&format!("layers/{i:03}-{}", "x".repeat(80)));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(format!("file{i}")), format!("{i}")).unwrap();
            lowers.push(d);
        }
        std::fs::create_dir(f.path("merged")).unwrap();
        let req = serde_json::json!({
            "lowers": lowers, "upper": f.path("upper"), "work": f.path("work"),
            "target": f.path("merged"), "legacy": legacy,
            "remove": "file0", "create": "created",
        });
        let rep = f.overlay_cmd(&req);
        assert!(rep["error"].is_null(), "legacy={legacy}: {rep:#}");
        let listing = rep["listing"].as_array().unwrap();
        assert_eq!(listing.len(), 60, "{rep:#}");
        assert!(rep["unmounted"].is_null(), "{rep:#}");
        assert_eq!(
            rep["after_unmount"].as_array().unwrap().len(),
            0,
            "unmounted: {rep:#}"
        );
        assert_eq!(f.upper_entries(), ["created", "file0"]);
        let wh = std::fs::symlink_metadata(f.path("upper/file0")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    }
});

#[test]
fn output_streams_as_it_arrives() {
    // In-process (the helper makes its own mount namespace): root only.
    if !common::available(Mode::Root) {
        return;
    }
    let f = Fixture::new(Mode::Root);
    let s = f.spec(&["sh", "-c", "echo first; sleep 1; echo second"]);
    let start = std::time::Instant::now();
    let mut arrivals = Vec::new();
    let status = berth_sandbox::run(&s, &mut |_, b| {
        arrivals.push((start.elapsed(), String::from_utf8_lossy(b).into_owned()))
    })
    .unwrap();
    assert!(status.success());
    let first = arrivals
        .iter()
        .find(|(_, t)| t.contains("first"))
        .unwrap()
        .0;
    let second = arrivals
        .iter()
        .find(|(_, t)| t.contains("second"))
        .unwrap()
        .0;
    assert!(
        second - first >= std::time::Duration::from_millis(800),
        "{arrivals:?}"
    );
}

#[test]
fn rootless_namespace_info() {
    for mode in [Mode::Rootless, Mode::RootlessSingle] {
        if !common::available(mode) {
            continue;
        }
        let f = Fixture::new(mode);
        let r = f.run(&f.spec(&["true"]));
        let info = &r.0["info"];
        assert_eq!(info["rootless"], true, "{info}");
        let (uid, _) = common::rootless_ids().unwrap();
        let user = nix::unistd::User::from_uid(uid.into())
            .unwrap()
            .unwrap()
            .name;
        let full = std::fs::read_to_string("/etc/subuid")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{user}:")));
        assert_eq!(
            info["full_id_range"],
            mode == Mode::Rootless && full,
            "{info}"
        );
    }
}

/// `major minor` of the block device holding the test's files (the host's
/// disk), if it is one.
fn host_block_device(path: &std::path::Path) -> Option<(u64, u64)> {
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    std::path::Path::new(&format!("/sys/dev/block/{major}:{minor}"))
        .exists()
        .then_some((major, minor))
}

all_modes!(host_devices_cannot_be_opened, |mode| {
    let f = Fixture::new(mode);
    // /dev/mem-class char device, and the disk the test runs on: root with
    // CAP_MKNOD may make the nodes (as in Docker), never open them.
    let (major, minor) = host_block_device(f.dir.path()).unwrap_or((7, 0));
    let script = format!(
        "for n in /tmp/disk /dev/disk; do \
           if mknod $n b {major} {minor} 2>/dev/null; then \
             if head -c 512 $n >/dev/null 2>&1; then echo read-$n; else echo denied-$n; fi; \
           else echo no-mknod-$n; fi; \
         done; \
         mknod /tmp/mem c 1 1 2>/dev/null && (head -c 1 /tmp/mem >/dev/null 2>&1 && echo read-mem || echo denied-mem); \
         echo x > /dev/null && echo null-ok"
    );
    let out = f.run(&f.spec(&["sh", "-c", &script])).ok().to_string();
    assert!(!out.contains("read-"), "a host device was opened: {out}");
    assert!(out.contains("null-ok"), "{out}");
    if mode == Mode::Root {
        // Root keeps CAP_MKNOD, like Docker; the open is what is refused.
        assert!(out.contains("denied-/tmp/disk"), "{out}");
        assert!(out.contains("denied-/dev/disk"), "{out}");
        device_cgroup_is_used_and_removed(&f);
    }
});

/// As real root with the cgroup v1 `devices` controller, the step runs in a
/// device cgroup of its own, gone once the step is.
fn device_cgroup_is_used_and_removed(f: &Fixture) {
    let hierarchy = std::path::Path::new("/sys/fs/cgroup/devices");
    if !hierarchy.join("devices.deny").exists() {
        return;
    }
    let s = f.spec(&["sh", "-c", "grep devices /proc/self/cgroup; cat /sys/fs/cgroup/devices/devices.list 2>/dev/null || true"]);
    let out = f.run(&s).ok().to_string();
    let line = out.lines().next().unwrap_or("");
    let name = line.rsplit('/').next().unwrap_or("");
    assert!(
        name.starts_with("berth-"),
        "not in a berth device cgroup: {out}"
    );
    let dir = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap()
        .lines()
        .find_map(|l| l.split_once(":devices:").map(|(_, p)| p.to_string()))
        .unwrap();
    let cg = hierarchy.join(dir.trim_start_matches('/')).join(name);
    assert!(!cg.exists(), "{} left behind", cg.display());
}

all_modes!(docker_confinement_seccomp_no_new_privs_caps, |mode| {
    let f = Fixture::new(mode);
    let script = "grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status; \
        mount -t tmpfs t /mnt 2>/dev/null && echo mounted || echo no-mount; \
        unshare -U true 2>/dev/null && echo unshared || echo no-unshare; \
        unshare -n true 2>/dev/null && echo unshared-net || echo no-unshare-net";
    let out = f.run(&f.spec(&["sh", "-c", script])).ok().to_string();
    assert!(out.contains("Seccomp:\t2"), "seccomp filter mode: {out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    // Docker's default set: chown dac_override fowner fsetid kill setgid
    // setuid setpcap net_bind_service net_raw sys_chroot mknod audit_write
    // setfcap.
    assert!(out.contains("CapBnd:\t00000000a80425fb"), "{out}");
    assert!(
        out.contains("no-mount") && out.contains("no-unshare"),
        "{out}"
    );
    assert!(out.contains("no-unshare-net"), "{out}");
    // The profile can be turned off (for `--security=insecure`-like uses).
    let mut s = f.spec(&[
        "sh",
        "-c",
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status",
    ]);
    s.security.seccomp = false;
    s.security.no_new_privs = false;
    let out = f.run(&s).ok().to_string();
    assert!(
        out.contains("Seccomp:\t0") && out.contains("NoNewPrivs:\t0"),
        "{out}"
    );
});

all_modes!(proc_and_sys_paths_are_masked, |mode| {
    let f = Fixture::new(mode);
    // Not every kernel has every masked file (no /proc/kcore without
    // CONFIG_PROC_KCORE): those present must read as empty.
    let masked: Vec<&str> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect();
    assert!(!masked.is_empty(), "no masked /proc file on this host");
    let script = format!(
        "cat {} | wc -c; ls /sys/firmware | wc -l; \
        (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null && echo sys-written || echo proc-sys-ro; \
        (echo h > /proc/sysrq-trigger) 2>/dev/null && echo sysrq || echo sysrq-ro; \
        cat /proc/sys/kernel/ostype",
        masked.join(" ")
    );
    let out = f.run(&f.spec(&["sh", "-c", &script])).ok().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "0", "{masked:?} read as /dev/null: {out}");
    assert_eq!(lines[1].trim(), "0", "/sys/firmware is empty: {out}");
    assert_eq!(&lines[2..], ["proc-sys-ro", "sysrq-ro", "Linux"], "{out}");
});

/// A one-shot HTTP server on the host answering "host-secret".
fn host_server(addr: &str) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(addr).unwrap();
    let a = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let h = std::thread::spawn(move || {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < end {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 1024];
                    let _ = c.read(&mut buf);
                    let _ =
                        c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\nhost-secret");
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    });
    (a, h)
}

/// A non-loopback IPv4 address of this host, if it has one.
fn host_address() -> Option<String> {
    let out = std::process::Command::new("ip")
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

all_modes!(isolated_network_reaches_out_but_not_host_loopback, |mode| {
    let f = Fixture::new(mode);
    let (local, _h) = host_server("127.0.0.1:0");
    let port = local.port();
    let script = format!(
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo; \
         for a in 127.0.0.1 10.0.2.2; do \
           printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 $a {port} 2>/dev/null; echo; echo end-$a; \
         done"
    );
    let mut s = f.spec(&["sh", "-c", &script]);
    s.network = Network::Isolated;
    let r = f.run(&s);
    if let Some(err) = r.error() {
        // Rootless where the tap device is root-only (0600): the reason and
        // the fix are named; nothing falls back to the host's network.
        assert!(
            err.contains("/dev/net/tun") || err.contains("slirp4netns"),
            "{err}"
        );
        assert_ne!(mode, Mode::Root, "root can always use slirp4netns: {err}");
        return;
    }
    let out = r.ok().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0].trim(), "lo tap0", "{out}");
    assert!(!out.contains("host-secret"), "host loopback reached: {out}");
    assert!(
        out.contains("end-127.0.0.1") && out.contains("end-10.0.2.2"),
        "{out}"
    );
    // Outbound: a service on the host's own non-loopback address is reached
    // through slirp4netns like any other host.
    if let Some(ip) = host_address() {
        let (outside, _h2) = host_server(&format!("{ip}:0"));
        let mut s = f.spec(&[
            "sh",
            "-c",
            &format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {} {}",
                outside.ip(),
                outside.port()
            ),
        ]);
        s.network = Network::Isolated;
        let out = f.run(&s).ok().to_string();
        assert!(out.ends_with("host-secret"), "{out}");
    }
});
