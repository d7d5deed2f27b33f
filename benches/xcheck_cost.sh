#!/usr/bin/env bash
# What the bounded-loss cross-check (spec/safety.md) costs, measured side by side in one run:
# `inspect`, `bmap` and `backup` of the reused 4 GiB card (benches/make-card.sh) with this
# tree's blockwise and with a build from before the cross-check (BASE_REV), warm page cache,
# hyperfine means. Also the bytes `inspect` reads from the card against the mapped bytes.
#   usage: benches/xcheck_cost.sh [WORKDIR]     (root: the card is built through a loop mount)
#   env:   BASE_REV (default 9916249, the last commit without the cross-check), BASE_BIN (a
#          prebuilt base binary instead), RUNS (default 10)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
work=${1:-$(mktemp -d /tmp/bw-xcheck.XXXXXX)}
runs=${RUNS:-10}
mkdir -p "$work"
bw=${BLOCKWISE:-$repo/target/release/blockwise}
[ -x "$bw" ] || (cd "$repo" && cargo build --release -q)
base=${BASE_BIN:-}
if [ -z "$base" ]; then
  rev=${BASE_REV:-9916249}
  base=$work/bw-base-$rev
  if [ ! -x "$base" ]; then
    wt=$work/base-src
    rm -rf "$wt"
    git -C "$repo" worktree add -q --detach "$wt" "$rev"
    (cd "$wt" && CARGO_TARGET_DIR=$work/base-target cargo build --release -q)
    cp "$work/base-target/release/blockwise" "$base"
    git -C "$repo" worktree remove --force "$wt"
  fi
fi
img=$work/card.img
[ -f "$img" ] || "$here/make-card.sh" "$img" 4G 400

# hyperfine wants one --prepare per command when any has one.
rm_out="rm -f $work/out.img.zst $work/out.img.zst.bmap"
hyperfine -N -w 2 -r "$runs" --export-json "$work/times.json" \
  --prepare true --prepare true --prepare true --prepare true \
  --prepare "$rm_out" --prepare "$rm_out" \
  -n "inspect (before)" "$base inspect $img" \
  -n "inspect (cross-checked)" "$bw inspect $img" \
  -n "bmap (before)" "$base bmap $img -o $work/a.bmap" \
  -n "bmap (cross-checked)" "$bw bmap $img -o $work/b.bmap" \
  -n "backup (before)" "$base backup $img $work/out.img.zst" \
  -n "backup (cross-checked)" "$bw backup $img $work/out.img.zst" \
  >/dev/null

strace -f -e trace=pread64,read -o "$work/inspect.strace" "$bw" inspect "$img" >/dev/null
"$bw" inspect --json "$img" > "$work/inspect.json"

python3 - "$work/times.json" "$work/inspect.strace" "$work/inspect.json" <<'PY'
import json, re, sys
t = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
print(f"{'command':26} {'mean s':>9} {'± s':>7}")
for name, r in t.items():
    print(f"{name:26} {r['mean']:9.4f} {r['stddev']:7.4f}")
for what, goal in (("inspect", None), ("bmap", 1.1), ("backup", 1.1)):
    a, b = t[f"{what} (before)"]["mean"], t[f"{what} (cross-checked)"]["mean"]
    verdict = "" if goal is None else f" (goal <= {goal}): {'PASS' if b / a <= goal else 'FAIL'}"
    print(f"{what}: cross-checked / before = {b / a:.3f}{verdict}")
# Bytes inspect read from the image: every read on descriptor 3 (the image is the first file
# it opens after its own libraries; strace -e read,pread64 does not log openat).
total = 0
for line in open(sys.argv[2]):
    m = re.search(r'(?:pread64|read)\(3,.*\) = (\d+)$', line)
    if m:
        total += int(m.group(1))
rep = json.load(open(sys.argv[3]))
mapped = rep["usage"]["mapped"]
frac = total / mapped
ok = frac <= 0.02
mean = t["inspect (cross-checked)"]["mean"]
print(f"inspect read {total} bytes of the image, {frac*100:.2f}% of the {mapped} mapped bytes (goal <= 2%): {'PASS' if ok else 'FAIL'}")
print(f"inspect took {mean:.4f} s (goal < 0.2 s): {'PASS' if mean < 0.2 else 'FAIL'}")
for p in rep["usage"]["parts"]:
    c = p.get("cross_check")
    if c:
        print(f"partition {p['index']} ({p['fs_type']}): cross-checked against {c['against']}; added {c['added']} bytes")
PY
