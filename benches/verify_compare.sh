#!/usr/bin/env bash
# `verify` and `bmap` of the reused 4 GiB card (make-card.sh), raw and as blockwise's seekable
# zstd and multi-block xz archives, with this build against another binary (BASE, e.g. main's),
# side by side with hyperfine in one run: what decoding archives on every core buys, and that
# the raw image is not slower for it.
#
#   usage: sudo BASE=/path/to/other/blockwise benches/verify_compare.sh [RUNS]   (default 5)
#   env:   CARD=path   reuse an image made by make-card.sh instead of building one
#          WORK=dir    where outputs go (default: a fresh directory under /tmp, removed at exit)
#
# Every command reads from a warm page cache (each file is read once before its benchmark), so
# the numbers are decoding and hashing, not the disk. Needs: hyperfine, and root for
# make-card.sh when no CARD is given.
set -euo pipefail
runs=${1:-5}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
command -v hyperfine >/dev/null || { echo "missing tool: hyperfine (apt-get install hyperfine)" >&2; exit 2; }
[ -n "${BASE:-}" ] && [ -x "$BASE" ] || { echo "set BASE to the blockwise binary to compare with" >&2; exit 2; }
(cd "$repo" && cargo build --release -q)
bw=$repo/target/release/blockwise
own_work=; if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d /tmp/bw-verify-bench.XXXXXX); own_work=1; fi
mkdir -p "$WORK"
trap 'if [ -n "$own_work" ]; then rm -rf "$WORK"; fi' EXIT
card=${CARD:-$WORK/card.img}
[ -f "$card" ] || bash "$here/make-card.sh" "$card" 4G 400

# The archives and their bmaps, made once by this build (both binaries read the same files).
"$bw" backup --force "$card" "$WORK/a.img.zst" 2>/dev/null
"$bw" backup --force --level 1 "$card" "$WORK/a.img.xz" 2>/dev/null
"$bw" bmap "$card" -o "$WORK/card.bmap" 2>/dev/null
echo "card: $card; zst $(stat -c %s "$WORK/a.img.zst") bytes, xz $(stat -c %s "$WORK/a.img.xz") bytes;" \
  "$(grep -c '<Range' "$WORK/card.bmap") bmap ranges" >&2

bench() { # title, file to warm, command with {bw} for the binary
  local title=$1 warm=$2 cmd=$3
  echo; echo "== $title"
  cat "$warm" >/dev/null
  hyperfine -N -w 1 -r "$runs" --export-markdown "$WORK/last.md" \
    -n base "${cmd//\{bw\}/$BASE}" -n this "${cmd//\{bw\}/$bw}" 2>&1 | grep -E 'Time|±|faster|slower' || true
}
bench "verify, seekable zstd archive" "$WORK/a.img.zst" "{bw} verify $WORK/a.img.zst --bmap $WORK/a.img.zst.bmap"
bench "verify, multi-block xz archive" "$WORK/a.img.xz" "{bw} verify $WORK/a.img.xz --bmap $WORK/a.img.xz.bmap"
bench "bmap, seekable zstd archive" "$WORK/a.img.zst" "{bw} bmap $WORK/a.img.zst -o $WORK/out.bmap"
bench "verify, raw card" "$card" "{bw} verify $card --bmap $WORK/card.bmap"
bench "bmap, raw card" "$card" "{bw} bmap $card -o $WORK/out.bmap"
