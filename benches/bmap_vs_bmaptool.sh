#!/usr/bin/env bash
# Whole-process benchmark: `blockwise bmap` vs `bmaptool create` on the same non-sparse 4 GiB
# reused card image with about 400 MB in use. Prints time and mapped size side by side, from
# one run. Usage: benches/bmap_vs_bmaptool.sh [WORKDIR]   (root: the image is built via loop)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d /tmp/bw-bench.XXXXXX)}
bw=${BLOCKWISE:-$here/../target/release/blockwise}
[ -x "$bw" ] || (cd "$here/.." && cargo build --release -q)
img=$work/card.img
[ -f "$img" ] || "$here/make-card.sh" "$img" 4G 400
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
mapped() { grep -o '<MappedBlocksCount> *[0-9]*' "$1" | grep -o '[0-9]*$'; }

tb=$(t bmaptool create -o "$work/bmaptool.bmap" "$img")
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
tw=$(t "$bw" bmap "$img" -o "$work/blockwise.bmap")
mb=$(mapped "$work/bmaptool.bmap"); mw=$(mapped "$work/blockwise.bmap")
printf '%-22s %10s %14s\n' tool seconds "mapped MiB"
printf '%-22s %10.2f %14.1f\n' "bmaptool create" "$tb" "$(echo "$mb*4096/1048576" | bc -l)"
printf '%-22s %10.2f %14.1f\n' "blockwise bmap" "$tw" "$(echo "$mw*4096/1048576" | bc -l)"
printf 'speed-up %.1fx, map %.1fx smaller\n' "$(echo "$tb/$tw" | bc -l)" "$(echo "$mb/$mw" | bc -l)"
