#!/usr/bin/env bash
# Whole-process backup benchmark (issue 4): on a reused SD card image, compare blockwise backup
# against what people use today — dd|zstd, dd|xz, partclone+zstd, img2simg — side by side in one
# run, then check that the blockwise archive restores with stock zstd and that inspecting it
# reads only a sliver of it.
#
#   usage: sudo benches/backup_compare.sh [SIZE] [USED_MB]     (default 4G 400)
#   env:   CARD=path   reuse an image made by make-card.sh (same layout) instead of building one
#          WORK=dir    where outputs go (default: a fresh directory under /tmp, removed at exit)
#          BASE=path   another blockwise binary (e.g. main's) run in the same session for the
#                      three blockwise rows, so a change is judged against the same noise
#          PEERS=0     leave out the other tools (dd|xz -6 alone takes an hour on a busy
#                      2-core machine) when only blockwise against BASE is wanted
#
# Every tool starts from a warm page cache (the image is read once before each), and every
# timing includes `sync`, so all tools pay for getting their output to disk (blockwise fsyncs
# its archive anyway). Needs: root, zstd, xz, partclone.fat32, partclone.ext4, img2simg, strace,
# e2fsck, fsck.vfat, mtools, losetup.
set -euo pipefail
size=${1:-4G}; used=${2:-400}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
for t in zstd xz partclone.fat32 partclone.ext4 img2simg strace e2fsck fsck.vfat mcopy losetup python3; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install zstd xz-utils partclone android-sdk-libsparse-utils strace e2fsprogs dosfstools mtools)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices, mounts)" >&2; exit 2; }
(cd "$repo" && cargo build --release -q)
bw=$repo/target/release/blockwise
own_work=; if [ -z "${WORK:-}" ]; then WORK=$(mktemp -d /tmp/bw-backup-bench.XXXXXX); own_work=1; fi
mkdir -p "$WORK"
loops=(); mnts=()
cleanup() {
  for m in "${mnts[@]}"; do umount "$m" 2>/dev/null || true; done
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  if [ -n "$own_work" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
card=${CARD:-$WORK/card.img}
[ -f "$card" ] || bash "$here/make-card.sh" "$card" "$size" "$used"
raw=$(stat -c %s "$card")
export MTOOLS_SKIP_CHECK=1
# The card's layout, as make-card.sh makes it.
p1=$((8192*512)); p1_len=$((524288*512)); p2=$((532480*512)); p2_len=$((raw - p2))
attach() { local l; l=$(losetup -f --show -r -o "$1" --sizelimit "$2" "$3"); loops+=("$l"); echo "$l"; }

names=(); sizes=(); times=()
run() { # name, output files (space-separated), command
  local name=$1 outs=$2 cmd=$3
  cat "$card" > /dev/null
  local t0 t1 st=0
  t0=$(date +%s.%N)
  bash -c "set -o pipefail; $cmd; sync" >"$WORK/$name.log" 2>&1 || st=$?
  t1=$(date +%s.%N)
  names+=("$name")
  if [ "$st" != 0 ]; then sizes+=("FAILED"); times+=("FAILED"); echo "  $name FAILED (see $WORK/$name.log)" >&2; return; fi
  local total=0 f
  for f in $outs; do total=$((total + $(stat -c %s "$WORK/$f"))); done
  sizes+=("$total"); times+=("$(echo "$t1 - $t0" | bc -l)")
  echo "  $name: $total bytes in ${times[-1]} s" >&2
}
command -v bc >/dev/null || { echo "missing tool: bc" >&2; exit 2; }

echo "card: $card ($raw bytes); outputs in $WORK" >&2
lp1=$(attach $p1 $p1_len "$card"); lp2=$(attach $p2 $p2_len "$card")
rm -f "$WORK"/out.* "$WORK"/pc.*
run "blockwise backup (zst)" "out.img.zst out.img.zst.bmap" "'$bw' backup '$card' '$WORK/out.img.zst'"
run "blockwise backup (xz)" "out.img.xz out.img.xz.bmap" "'$bw' backup '$card' '$WORK/out.img.xz'"
run "blockwise backup (simg)" "out.simg out.simg.bmap" "'$bw' backup '$card' '$WORK/out.simg'"
if [ -n "${BASE:-}" ]; then
  run "base backup (zst)" "base.img.zst base.img.zst.bmap" "'$BASE' backup '$card' '$WORK/base.img.zst'"
  run "base backup (xz)" "base.img.xz base.img.xz.bmap" "'$BASE' backup '$card' '$WORK/base.img.xz'"
  run "base backup (simg)" "base.simg base.simg.bmap" "'$BASE' backup '$card' '$WORK/base.simg'"
fi
if [ "${PEERS:-1}" != 0 ]; then
run "dd | zstd -T0 -3" "out.dd.zst" "dd if='$card' bs=4M status=none | zstd -T0 -3 -q > '$WORK/out.dd.zst'"
run "dd | xz -6 -T0" "out.dd.xz" "dd if='$card' bs=4M status=none | xz -6 -T0 > '$WORK/out.dd.xz'"
run "partclone + zstd -3" "pc.head pc.p1.zst pc.p2.zst" \
  "dd if='$card' of='$WORK/pc.head' bs=512 count=8192 status=none && partclone.fat32 -c -s $lp1 -o - -L '$WORK/pc1.log' 2>/dev/null | zstd -T0 -3 -q > '$WORK/pc.p1.zst' && partclone.ext4 -c -s $lp2 -o - -L '$WORK/pc2.log' 2>/dev/null | zstd -T0 -3 -q > '$WORK/pc.p2.zst'"
run "img2simg" "out.img2simg.simg" "img2simg '$card' '$WORK/out.img2simg.simg'"
fi

echo
echo "Backup of a reused $((raw >> 20)) MiB card ($card), one run, warm cache, each timing includes sync"
printf '%-26s %12s %9s %9s %11s %11s\n' tool "size MiB" "% of raw" "time s" "time vs bw" "size vs bw"
bw_size=${sizes[0]}; bw_time=${times[0]}
for i in "${!names[@]}"; do
  if [ "${sizes[$i]}" = FAILED ]; then printf '%-26s %12s\n' "${names[$i]}" FAILED; continue; fi
  printf '%-26s %12.1f %8.2f%% %9.2f %10.1fx %10.1fx\n' "${names[$i]}" \
    "$(echo "${sizes[$i]} / 1048576" | bc -l)" "$(echo "${sizes[$i]} * 100 / $raw" | bc -l)" \
    "${times[$i]}" "$(echo "${times[$i]} / $bw_time" | bc -l)" "$(echo "${sizes[$i]} / $bw_size" | bc -l)"
done
idx() { local i; for i in "${!names[@]}"; do if [ "${names[$i]}" = "$1" ]; then echo "$i"; fi; done; }
xi=$(idx "dd | xz -6 -T0"); zi=$(idx "dd | zstd -T0 -3")
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo PASS; else echo FAIL; fi; }
if [ -n "$xi" ] && [ "${sizes[$xi]}" != FAILED ]; then
  echo "size: blockwise zst is $(printf '%.3f' "$(echo "$bw_size / ${sizes[$xi]}" | bc -l)") of xz -6 -T0's (goal <= 0.25): $(verdict "$bw_size * 4 <= ${sizes[$xi]}")"
fi
if [ -n "$zi" ] && [ "${times[$zi]}" != FAILED ]; then
  echo "time: blockwise zst takes $(printf '%.3f' "$(echo "$bw_time / ${times[$zi]}" | bc -l)") of zstd -T0 -3's time (goal <= 0.25): $(verdict "$bw_time * 4 <= ${times[$zi]}")"
fi
if [ -n "${BASE:-}" ]; then
  for f in zst xz simg; do
    bi=$(idx "blockwise backup ($f)"); ai=$(idx "base backup ($f)")
    [ "${times[$bi]}" = FAILED ] || [ "${times[$ai]}" = FAILED ] && continue
    echo "vs base ($f): time $(printf '%.3f' "$(echo "${times[$bi]} / ${times[$ai]}" | bc -l)")x, size $(printf '%.4f' "$(echo "${sizes[$bi]} / ${sizes[$ai]}" | bc -l)")x"
  done
  cmp -s "$WORK/out.img.zst" "$WORK/base.img.zst" && cmp -s "$WORK/out.img.zst.bmap" "$WORK/base.img.zst.bmap" \
    && echo "zst archive and bmap byte-identical to base's: PASS" || echo "zst archive or bmap differs from base's: FAIL"
fi

# inspect of the archive: bytes read from it / its size.
strace -f -e trace=pread64,read -o "$WORK/inspect.strace" "$bw" inspect "$WORK/out.img.zst" >/dev/null
python3 - "$WORK/inspect.strace" "$WORK/out.img.zst" <<'PY'
import os, re, sys
log, arc = sys.argv[1], sys.argv[2]
fds, total = set(), 0
for line in open(log):
    m = re.search(r'openat\(.*"(.*)", .*\) = (\d+)$', line)
    if m and os.path.abspath(m.group(1)) == os.path.abspath(arc):
        fds.add(m.group(2))
# strace -e trace=read,pread64 does not log openat: the archive is the only file inspect
# opens after the binary's own libraries, on the lowest free descriptor, 3.
fds = fds or {"3"}
for line in open(log):
    m = re.search(r'(?:pread64|read)\((\d+),.*\) = (\d+)$', line)
    if m and m.group(1) in fds:
        total += int(m.group(2))
size = os.path.getsize(arc)
frac = total / size
print(f"inspect of out.img.zst read {total} of {size} bytes ({frac*100:.2f}%, goal < 2%): {'PASS' if frac < 0.02 else 'FAIL'}")
PY

# Restore with stock zstd, then the restore proof.
zstd -q -d "$WORK/out.img.zst" -o "$WORK/restored.img"
"$bw" verify "$WORK/restored.img" --bmap "$WORK/out.img.zst.bmap" >/dev/null && echo "zstd -d restore: mapped ranges match the bmap: PASS"
r1=$(attach $p1 $p1_len "$WORK/restored.img"); r2=$(attach $p2 $p2_len "$WORK/restored.img")
fsck.vfat -n "$r1" >/dev/null && echo "fsck.vfat -n on the restored boot partition: PASS"
e2fsck -fn "$r2" >/dev/null 2>&1 && echo "e2fsck -fn on the restored root partition: PASS"
hashes() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
mkdir -p "$WORK/fa" "$WORK/fb" "$WORK/ma" "$WORK/mb"
mcopy -s -n -i "$card@@$p1" ::/ "$WORK/fa/"; mcopy -s -n -i "$WORK/restored.img@@$p1" ::/ "$WORK/fb/"
[ "$(hashes "$WORK/fa")" = "$(hashes "$WORK/fb")" ] && echo "FAT files identical ($(find "$WORK/fa" -type f | wc -l) files): PASS"
mount -o ro,noload "$lp2" "$WORK/ma"; mnts+=("$WORK/ma"); mount -o ro,noload "$r2" "$WORK/mb"; mnts+=("$WORK/mb")
[ "$(hashes "$WORK/ma")" = "$(hashes "$WORK/mb")" ] && echo "ext4 files identical ($(find "$WORK/ma" -type f | wc -l) files): PASS"
