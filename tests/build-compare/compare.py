#!/usr/bin/env python3
"""berth build vs BuildKit: the pieces of the comparison (stdlib only).

  compare.py mkbase OUT.tar
      The base rootfs both builders start from (busybox-static, users,
      groups, a setuid file, a sticky /tmp), as a tar with fixed owners,
      modes and mtimes so both engines import the same bytes.

  compare.py mkimage BASE.tar LAYERS.json NAME OUT.tar
      A docker-archive (for `docker load` and `berth load`) of image NAME:
      BASE.tar as its first layer, then one layer per list in LAYERS.json,
      each entry [path, "file"|"dir"|"symlink", contents-or-target]
      (root-owned, 0644/0755, fixed mtime). Layers no Dockerfile step can
      make: e.g. `data/x` over a lower layer's `data -> /real` symlink.

  compare.py compare DOCKER_FS.tar DOCKER_IMAGE.tar BERTH_FS.tar BERTH_IMAGE.tar
      Compares the flattened filesystems (DOCKER_FS from `docker export`,
      BERTH_FS from `berth build -o type=tar`) and the image configs (read
      from the docker-archives `docker save` / `berth save` write). Prints
      one line per difference; exit status 1 if any, 0 if none.

  compare.py show FS.tar | IMAGE.tar
      The normalised summary, for debugging an entry by hand.

What is compared, per path: type, permission bits (with setuid, setgid,
sticky), uid, gid, size and sha256 of regular files, symlink targets and
device numbers. mtimes are not (each builder stamps its own time).
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

# Paths `docker export` shows that are not part of the image: Docker
# creates them in every container (mount points for the runtime, the
# files it bind-mounts over, the marker file). An image cannot influence
# them through `docker export`, so they are not compared.
EXPORT_ARTEFACTS = (
    ".dockerenv",      # Docker's "inside a container" marker file
    "etc/hostname",    # bind-mounted by the engine; an empty file in the rw layer
    "etc/hosts",       # ditto
    "etc/resolv.conf",  # ditto
    "etc/mtab",        # the engine's init layer adds a /proc/mounts link when absent
    "dev",             # the engine's mount point (+ console, pts, shm, mqueue)
    "proc",            # mount point
    "sys",             # mount point
)

# Config fields of the list (image config `config` object).
CONFIG_FIELDS = (
    "Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts",
    "Volumes", "Labels", "StopSignal", "Healthcheck", "OnBuild", "Shell",
)

TYPE_NAMES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink", tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo", tarfile.CONTTYPE: "file",
}


def norm(name):
    name = name.lstrip("./") if name.startswith("./") else name.lstrip("/")
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def is_artefact(path):
    return any(path == a or path.startswith(a + "/") for a in EXPORT_ARTEFACTS)


def fs_summary(tar_path):
    """path -> dict of what is compared. Hard links are reported as the
    file they link to (plus `links_to`), since which of two names a tar
    writer stores first is arbitrary."""
    out = {}
    with tarfile.open(tar_path, "r:*") as tf:
        for m in tf:
            path = norm(m.name)
            if path == "" or is_artefact(path):
                continue
            kind = TYPE_NAMES.get(m.type, "other:%r" % m.type)
            e = {"type": kind, "mode": "%04o" % (m.mode & 0o7777), "uid": m.uid, "gid": m.gid}
            if kind == "file":
                h = hashlib.sha256()
                f = tf.extractfile(m)
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    h.update(chunk)
                e["size"] = m.size
                e["sha256"] = h.hexdigest()
            elif kind == "symlink":
                e["target"] = m.linkname
            elif kind == "hardlink":
                target = norm(m.linkname)
                if target in out:
                    e = dict(out[target])
                    e["mode"] = "%04o" % (m.mode & 0o7777) if m.mode else e["mode"]
                e["links_to"] = target
            elif kind in ("char", "block"):
                e["dev"] = "%d:%d" % (m.devmajor, m.devminor)
            # xattrs: security.capability set by `setcap` is part of a file.
            caps = (m.pax_headers or {}).get("SCHILY.xattr.security.capability")
            if caps is not None:
                e["xattr.security.capability"] = caps.encode("latin-1", "replace").hex()
            out[path] = e
    # A link's identity is not compared, only that both names exist with
    # the same content (the writer's choice of which name is the link).
    for e in out.values():
        e.pop("links_to", None)
        if e["type"] == "hardlink":
            e["type"] = "file"
    return out


def read_archive_config(tar_path):
    """The image config of the single image of a docker-archive."""
    with tarfile.open(tar_path, "r:*") as tf:
        manifest = json.load(tf.extractfile("manifest.json"))
        if len(manifest) != 1:
            raise SystemExit("%s: expected one image in manifest.json, found %d" % (tar_path, len(manifest)))
        return json.load(tf.extractfile(manifest[0]["Config"]))


def config_summary(cfg):
    c = cfg.get("config") or {}
    out = {}
    for k in CONFIG_FIELDS:
        v = c.get(k)
        # Docker writes empty lists/maps and "" where BuildKit leaves the
        # field out; both mean "not set" to every consumer.
        if v in (None, "", [], {}):
            v = None
        out[k] = v
    out["author"] = cfg.get("author") or None
    hist = cfg.get("history") or []
    out["history"] = [{"empty_layer": bool(h.get("empty_layer")), "created_by": h.get("created_by", "")}
                      for h in hist]
    out["layers"] = len((cfg.get("rootfs") or {}).get("diff_ids") or [])
    out["os"] = cfg.get("os")
    out["architecture"] = cfg.get("architecture")
    return out


def compare(docker_fs, docker_img, berth_fs, berth_img):
    diffs = []
    a, b = fs_summary(docker_fs), fs_summary(berth_fs)
    # RUN --mount targets the image lacked: Docker 20.10's BuildKit leaves
    # them behind as empty directories, newer BuildKit and berth remove them.
    # An entry lists them in its `mount-stubs` file.
    stubs = os.environ.get("BUILD_COMPARE_MOUNT_STUBS", "")
    if stubs and os.path.exists(stubs):
        with open(stubs) as f:
            for line in f:
                p = line.strip().strip("/")
                if p and p not in b and a.get(p, {}).get("type") == "dir":
                    del a[p]
    # An image without /etc (FROM scratch) still shows one in `docker
    # export`: the engine creates it for the files it bind-mounts there.
    if "etc" in a and "etc" not in b and not any(p.startswith("etc/") for p in a):
        del a["etc"]
    for p in sorted(set(a) | set(b)):
        if p not in b:
            diffs.append("fs /%s: only in BuildKit's image %s" % (p, json.dumps(a[p], sort_keys=True)))
        elif p not in a:
            diffs.append("fs /%s: only in berth's image %s" % (p, json.dumps(b[p], sort_keys=True)))
        elif a[p] != b[p]:
            keys = sorted(set(a[p]) | set(b[p]))
            parts = ["%s buildkit=%s berth=%s" % (k, a[p].get(k), b[p].get(k)) for k in keys if a[p].get(k) != b[p].get(k)]
            diffs.append("fs /%s: %s" % (p, "; ".join(parts)))
    ca = config_summary(read_archive_config(docker_img))
    cb = config_summary(read_archive_config(berth_img))
    for k in CONFIG_FIELDS + ("author", "layers", "os", "architecture"):
        if ca[k] != cb[k]:
            diffs.append("config %s: buildkit=%s berth=%s" % (k, json.dumps(ca[k], sort_keys=True), json.dumps(cb[k], sort_keys=True)))
    ha, hb = ca["history"], cb["history"]
    if [h["empty_layer"] for h in ha] != [h["empty_layer"] for h in hb]:
        diffs.append("history empty_layer flags: buildkit=%s berth=%s" % (
            "".join("E" if h["empty_layer"] else "L" for h in ha),
            "".join("E" if h["empty_layer"] else "L" for h in hb)))
    for i, (x, y) in enumerate(zip(ha, hb)):
        if x["created_by"] != y["created_by"]:
            diffs.append("history[%d] created_by: buildkit=%s berth=%s" % (i, json.dumps(x["created_by"]), json.dumps(y["created_by"])))
    return diffs


def mkbase(out):
    """The shared base rootfs, written with Python's tarfile so owners,
    modes and mtimes are exactly these on every machine."""
    bb = "/bin/busybox"
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
    mtime = 1700000000

    def add(tf, name, kind, mode, data=b"", uid=0, gid=0, target=""):
        ti = tarfile.TarInfo(name)
        ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, mtime
        ti.uname = ti.gname = ""
        if kind == "dir":
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
        elif kind == "symlink":
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tf.addfile(ti)
        else:
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))

    with open(bb, "rb") as f:
        busybox = f.read()
    passwd = (
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "app:x:1000:1000:app user:/home/app:/bin/sh\n"
        "svc:x:1001:1001::/srv:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    ).encode()
    group = (
        "root:x:0:\n"
        "daemon:x:1:\n"
        "staff:x:50:app\n"
        "app:x:1000:\n"
        "svc:x:1001:app\n"
        "nogroup:x:65534:\n"
    ).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for d, mode, uid, gid in (
            ("bin", 0o755, 0, 0), ("etc", 0o755, 0, 0), ("tmp", 0o1777, 0, 0),
            ("root", 0o700, 0, 0), ("home", 0o755, 0, 0), ("home/app", 0o750, 1000, 1000),
            ("srv", 0o755, 1001, 1001), ("usr", 0o755, 0, 0), ("usr/local", 0o755, 0, 0),
            ("usr/local/bin", 0o755, 0, 0), ("usr/share", 0o755, 0, 0),
            ("usr/share/doc", 0o755, 0, 0), ("usr/share/doc/base", 0o755, 0, 0),
            ("var", 0o755, 0, 0), ("var/log", 0o755, 0, 0), ("opt", 0o755, 0, 0),
            ("opt/base", 0o755, 0, 0), ("opt/base/sub", 0o700, 1000, 50),
        ):
            add(tf, d, "dir", mode, uid=uid, gid=gid)
        add(tf, "bin/busybox", "file", 0o755, busybox)
        for a in applets:
            if a != "busybox":
                add(tf, "bin/" + a, "symlink", 0o777, target="busybox")
        add(tf, "etc/passwd", "file", 0o644, passwd)
        add(tf, "etc/group", "file", 0o644, group)
        add(tf, "etc/base-release", "file", 0o644, b"berth compare base 1\n")
        add(tf, "usr/share/doc/base/README", "file", 0o644, b"readme\n")
        add(tf, "usr/local/bin/suid-tool", "file", 0o4755, b"#!/bin/sh\necho suid\n")
        add(tf, "opt/base/keep.txt", "file", 0o640, b"keep\n", uid=1000, gid=1000)
        add(tf, "opt/base/remove-me.txt", "file", 0o644, b"remove\n")
        add(tf, "opt/base/sub/deep.txt", "file", 0o600, b"deep\n", uid=1000, gid=50)
        add(tf, "opt/base/link-to-keep", "symlink", 0o777, target="keep.txt")
        add(tf, "var/log/base.log", "file", 0o644, b"log line\n")


def mkimage(base, layers_json, name, out):
    """BASE.tar plus hand-made layers, as a docker-archive."""
    with open(layers_json) as f:
        specs = json.load(f)
    with open(base, "rb") as f:
        tars = [f.read()]
    for spec in specs:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for path, kind, data in spec:
                ti = tarfile.TarInfo(path)
                ti.uid = ti.gid = 0
                ti.uname = ti.gname = ""
                ti.mtime = 1700000000
                if kind == "dir":
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tf.addfile(ti)
                elif kind == "symlink":
                    ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, data
                    tf.addfile(ti)
                else:
                    body = data.encode()
                    ti.mode, ti.size = 0o644, len(body)
                    tf.addfile(ti, io.BytesIO(body))
        tars.append(buf.getvalue())
    diff_ids = ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "compare.py mkimage layer %d" % i} for i in range(len(tars))],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    with tarfile.open(out, "w") as tf:
        def add(n, data):
            ti = tarfile.TarInfo(n)
            ti.size, ti.mtime = len(data), 1700000000
            tf.addfile(ti, io.BytesIO(data))
        add(config_name, config)
        names = []
        for i, t in enumerate(tars):
            names.append("layer%d/layer.tar" % i)
            add(names[-1], t)
        add("manifest.json", json.dumps(
            [{"Config": config_name, "RepoTags": [name], "Layers": names}]).encode())


def main(argv):
    if len(argv) >= 2 and argv[1] == "mkbase" and len(argv) == 3:
        mkbase(argv[2])
        return 0
    if len(argv) == 6 and argv[1] == "mkimage":
        mkimage(*argv[2:])
        return 0
    if len(argv) == 6 and argv[1] == "compare":
        diffs = compare(*argv[2:])
        for d in diffs:
            print(d)
        return 1 if diffs else 0
    if len(argv) == 3 and argv[1] == "show":
        try:
            print(json.dumps(config_summary(read_archive_config(argv[2])), indent=1, sort_keys=True))
        except KeyError:
            print(json.dumps(fs_summary(argv[2]), indent=1, sort_keys=True))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
