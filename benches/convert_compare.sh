#!/usr/bin/env bash
# Whole-process convert benchmark (issue 12): on a 4 GiB reused SD card image with ~10% in use
# (made by make-card.sh), blockwise convert against qemu-img convert, side by side in one run:
#
#   raw -> qcow2, raw -> VHD (dynamic), raw -> fixed VHD, raw -> VHDX
#       qemu-img convert -O FMT           vs  blockwise convert (default: used blocks only)
#                                          and blockwise convert --keep-free (every byte)
#   qcow2 -> raw                          (the qcow2 made by qemu-img convert -O qcow2)
#       qemu-img convert -O raw           vs  blockwise convert x.qcow2 x.img
#   compressed qcow2 -> .img.zst          (the qcow2 made by qemu-img convert -c -O qcow2)
#       qemu-img convert -O raw + zstd -T0 -3  vs  blockwise convert x.qcow2 x.img.zst
#
# The rows reading a qcow2 need blockwise's qcow2 reader; with a build that does not decode
# qcow2 they print "n/a (this build does not read qcow2)". Each row prints the time and output
# size of both, and the ratio blockwise / peer. Every output is checked: qemu-img compare of
# blockwise's against the peer's over what blockwise carried (the default drops free space, so
# its outputs are compared with its own sparse raw conversion, which holds the card with free
# space zeroed; --keep-free outputs with the card itself).
#
#   usage: sudo benches/convert_compare.sh [SIZE] [USED_MB]     (default 4G 400)
#   env:   CARD=path   reuse an image made by make-card.sh instead of building one
#          WORK=dir    where outputs go (default: a fresh directory under /tmp, removed at exit;
#                      up to four card-sized files at a time, each removed once compared)
#
# Every tool starts from a warm page cache (its input is read once before), and every timing
# includes `sync`, so all pay for getting their output to disk. Needs: root (make-card.sh),
# qemu-img, zstd, bc, grep.
set -euo pipefail
size=${1:-4G}; used=${2:-400}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
for t in qemu-img zstd bc; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install qemu-utils zstd bc)" >&2; exit 2; }
done
(cd "$repo" && cargo build --release -q)
bw=$repo/target/release/blockwise
own_work=; if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d /tmp/bw-convert-bench.XXXXXX); own_work=1; fi
mkdir -p "$WORK"
cleanup() { if [ -n "$own_work" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
card=${CARD:-$WORK/card.img}
[ -f "$card" ] || bash "$here/make-card.sh" "$card" "$size" "$used"
echo "card: $card ($(stat -c %s "$card") bytes); outputs in $WORK" >&2

# time_of INPUT OUTPUTS... -- COMMAND: seconds (with sync), or FAILED.
secs=; bytes=
timed() {
  local input=$1 outs=$2 cmd=$3 log=$4
  cat "$input" > /dev/null
  rm -f $outs
  local t0 t1
  t0=$(date +%s.%N)
  if ! bash -c "set -o pipefail; $cmd; sync" >"$log" 2>&1; then
    secs=FAILED; bytes=FAILED; echo "  FAILED: $cmd (see $log)" >&2; return 1
  fi
  t1=$(date +%s.%N)
  secs=$(echo "$t1 - $t0" | bc -l)
  bytes=0; local f; for f in $outs; do bytes=$((bytes + $(stat -c %s "$f"))); done
}

rows=()
row() { # label peer_secs peer_bytes bw_secs bw_bytes check
  local r=n/a
  if [[ $2 != FAILED && $4 != FAILED && $2 != n/a && $4 != n/a ]]; then r=$(printf '%.2f' "$(echo "$4 / $2" | bc -l)"); fi
  local t2=$2 t4=$4
  [[ $t2 =~ ^[0-9.]+$ ]] && t2=$(printf '%.2f' "$t2")
  [[ $t4 =~ ^[0-9.]+$ ]] && t4=$(printf '%.2f' "$t4")
  rows+=("$(printf '%-34s %9s s %14s B | %9s s %14s B | %6s | %s' "$1" "$t2" "$3" "$t4" "$5" "$r" "$6")")
}

# compare A B [fmtB]: "identical" or what qemu-img says.
compare() {
  local f=${3:+-F $3}
  qemu-img compare -q -f raw $f "$1" "$2" >/dev/null 2>&1 && echo identical || echo "DIFFERENT"
}
check() { # file [fmt]
  local f=${2:+-f $2} o
  o=$(qemu-img check $f "$1" 2>&1) && echo "check clean" || { echo "$o" | grep -q "does not support checks" && echo "no check (vpc)" || echo "CHECK FAILED"; }
}

# The reference for the default conversions: the card with free space zeroed.
"$bw" convert "$card" "$WORK/ref.img" --force 2>/dev/null

for spec in "qcow2 qcow2 qcow2 -" "vhd vpc vpc -" "fixed.vhd vpc vpc subformat=fixed" "vhdx vhdx vhdx -"; do
  read -r ext qfmt cfmt qopt <<<"$spec"
  extra=(); [[ $ext == fixed.vhd ]] && extra=(--vhd fixed)
  qo=(); [[ $qopt != - ]] && qo=(-o "$qopt")
  timed "$card" "$WORK/q.$ext" "qemu-img convert -O $qfmt ${qo[*]} '$card' '$WORK/q.$ext'" "$WORK/q.$ext.log"; qs=$secs; qb=$bytes
  timed "$card" "$WORK/b.$ext" "'$bw' convert '$card' '$WORK/b.$ext' ${extra[*]}" "$WORK/b.$ext.log"; bs=$secs; bb=$bytes
  row "raw -> $ext" "$qs" "$qb" "$bs" "$bb" "$(check "$WORK/b.$ext" "$cfmt"), $(compare "$WORK/ref.img" "$WORK/b.$ext" "$cfmt") to ref"
  timed "$card" "$WORK/k.$ext" "'$bw' convert '$card' '$WORK/k.$ext' --keep-free ${extra[*]}" "$WORK/k.$ext.log"; ks=$secs; kb=$bytes
  row "raw -> $ext (--keep-free)" "$qs" "$qb" "$ks" "$kb" "$(check "$WORK/k.$ext" "$cfmt"), $(compare "$card" "$WORK/k.$ext" "$cfmt") to card"
  # Each output is as large as the card: keep the disk from filling (qemu's qcow2 is read
  # below).
  rm -f "$WORK/b.$ext" "$WORK/k.$ext"; [[ $ext == qcow2 ]] || rm -f "$WORK/q.$ext"
done

# Reading qcow2: the peer's own outputs as inputs.
qemu-img convert -c -O qcow2 "$card" "$WORK/qc.qcow2"
reads_qcow2=1
if ! "$bw" inspect --json "$WORK/q.qcow2" 2>/dev/null | grep -q '"contents_decoded": true'; then
  reads_qcow2=
fi
if [ -n "$reads_qcow2" ]; then
  timed "$WORK/q.qcow2" "$WORK/q2r.img" "qemu-img convert -O raw '$WORK/q.qcow2' '$WORK/q2r.img'" "$WORK/q2r.log"; qs=$secs; qb=$bytes
  timed "$WORK/q.qcow2" "$WORK/b2r.img" "'$bw' convert '$WORK/q.qcow2' '$WORK/b2r.img'" "$WORK/b2r.log"; bs=$secs; bb=$bytes
  row "qcow2 -> raw" "$qs" "$qb" "$bs" "$bb" "$(compare "$WORK/ref.img" "$WORK/b2r.img")"
  rm -f "$WORK/q2r.img" "$WORK/b2r.img"
  timed "$WORK/qc.qcow2" "$WORK/qc.img $WORK/qc.img.zst" "qemu-img convert -O raw '$WORK/qc.qcow2' '$WORK/qc.img' && zstd -T0 -3 -q '$WORK/qc.img' -o '$WORK/qc.img.zst'" "$WORK/qcz.log"; qs=$secs
  qb=$(stat -c %s "$WORK/qc.img.zst")
  timed "$WORK/qc.qcow2" "$WORK/bc.img.zst" "'$bw' convert '$WORK/qc.qcow2' '$WORK/bc.img.zst'" "$WORK/bcz.log"; bs=$secs; bb=$bytes
  zstd -q -d -c "$WORK/bc.img.zst" > "$WORK/bc.img"
  row "qcow2 -c -> .img.zst" "$qs" "$qb" "$bs" "$bb" "$(compare "$WORK/ref.img" "$WORK/bc.img") (zstd -d)"
else
  row "qcow2 -> raw" n/a n/a n/a n/a "this build does not read qcow2"
  row "qcow2 -c -> .img.zst" n/a n/a n/a n/a "this build does not read qcow2"
fi

echo
printf '%-34s %26s | %26s | %6s | %s\n' "conversion" "qemu-img (peer)" "blockwise" "ratio" "checks"
for r in "${rows[@]}"; do echo "$r"; done
echo "(ratio = blockwise time / peer time; sizes are apparent file sizes; the peer of the last row is qemu-img convert -O raw then zstd -T0 -3, its size the .zst's)"
