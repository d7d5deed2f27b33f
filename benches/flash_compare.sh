#!/usr/bin/env bash
# Whole-process flash benchmark (the flash issue): write the reused SD card of make-card.sh to an
# emulated card whose writes are throttled to a card's speed, with blockwise flash (from its
# backup archive, the raw image, a streaming single-block .xz and a .gz) against dd and the
# bmaptool workflow for a dd backup, side by side in one run; prove every restore on the card;
# then flash the archive unthrottled into RAM against plain `zstd -d`. Prints a markdown table
# with the issue's targets evaluated on this run's figures only.
#
#   usage: sudo benches/flash_compare.sh [SIZE] [USED_MB]      (default 4G 400; try 512M 80)
#   env:   CARD=path   reuse an image made by make-card.sh (same layout) instead of building one
#          WORK=dir    where the card, its archives and the logs live (default
#                      /var/tmp/blockwise-flash-bench-SIZE); kept, so that a rerun skips
#                      building the card, its archive, its .xz and .gz. Delete it yourself.
#          BIN=path    the blockwise binary (default: this tree, built with cargo --release)
#          BPS=n       write throttle of the emulated card, bytes/s (default 40000000)
#          READ_BPS=n  also throttle reading the card (verify's read-back), bytes/s
#                      (default: reads are not throttled)
#          RUNS=n      runs per command of the unthrottled comparison (default 5 with
#                      hyperfine, else 3)
#          EMU_DIR=dir where the emulated card's backing file lives (default /dev/shm)
#
# The emulated card: a loop device over a card-sized file in tmpfs (EMU_DIR), so the medium
# itself costs nothing and the only limit is the blkio (cgroup v1) throttle on the loop device.
# Every writer runs inside the throttle group; before each timed write the whole card is
# refilled with the same old random data (not the image's: another key), so every run starts
# from a used card, never from the previous run's result. Before each timed run: `sync` and
# `echo 3 > /proc/sys/vm/drop_caches`, so every source (image, archive, bmap) is read from disk,
# cold. A timing ends when the writer exits: each one makes its own writes durable (blockwise
# and dd write O_DIRECT, dd and bmaptool fsync), and fsync of a loop device over tmpfs costs
# nothing beyond the throttled writes.
#
# Needs: root, blkio cgroup v1 at /sys/fs/cgroup/blkio, losetup, zstd, xz, gzip (or pigz),
# dd, bmaptool, openssl, sfdisk, jq, bc, fsck.vfat, e2fsck, mtools; hyperfine optional.
set -euo pipefail
started=$(date +%s.%N); load0=$(cut -d' ' -f1-3 /proc/loadavg)
size=${1:-4G}; used=${2:-400}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
for t in zstd xz gzip dd bmaptool openssl sfdisk jq bc fsck.vfat e2fsck mcopy losetup sha256sum cmp; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install zstd xz-utils gzip bmap-tools openssl fdisk jq bc dosfstools e2fsprogs mtools)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (loop devices, cgroups, mounts, drop_caches)" >&2; exit 2; }
cgroot=/sys/fs/cgroup/blkio
[ -w "$cgroot/cgroup.procs" ] || { echo "no blkio cgroup v1 at $cgroot" >&2; exit 2; }
if [ -n "${BIN:-}" ]; then bw=$BIN; else (cd "$repo" && cargo build --release -q); bw=$repo/target/release/blockwise; fi
bps=${BPS:-40000000}; read_bps=${READ_BPS:-}
WORK=${WORK:-/var/tmp/blockwise-flash-bench-$size}
mkdir -p "$WORK/logs"
emu_dir=${EMU_DIR:-/dev/shm}
export MTOOLS_SKIP_CHECK=1 LC_ALL=C

loop=; pq=(); mnt=; cg=; emu=
cleanup() {
  if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || true; fi
  for l in "${pq[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  if [ -n "$cg" ]; then rmdir "$cg" 2>/dev/null || echo "could not remove cgroup $cg" >&2; fi
  if [ -n "$emu" ]; then rm -f "$emu"; fi
  rm -rf "$WORK/proof"
}
trap cleanup EXIT

# 1. The card and what is made from it, cached in WORK (remade when the card is newer).
card=${CARD:-$WORK/card.img}
if [ ! -f "$card" ]; then bash "$here/make-card.sh" "$card" "$size" "$used"; fi
card=$(cd "$(dirname "$card")" && pwd)/$(basename "$card")
raw=$(stat -c %s "$card")
fresh() { [ -s "$1" ] && [ "$1" -nt "$card" ]; }
made() { echo "  made $1 in $(printf '%.1f' "$(echo "$(date +%s.%N) - $2" | bc -l)") s" >&2; }
zst=$WORK/card.img.zst; xzf=$WORK/card.img.xz; gzf=$WORK/card.img.gz
if ! fresh "$zst" || ! fresh "$zst.bmap"; then
  s=$(date +%s.%N); rm -f "$zst" "$zst.bmap"; "$bw" backup "$card" "$zst" 2>"$WORK/logs/backup.err"; made "$zst" "$s"
fi
# A single-block .xz (-T1), so it is one stream nobody can seek in; -1 to keep making it as
# cheap as xz gets: single-threaded xz is slow on random data at any level (on the 2-core test
# machine, shared with other work, -1 took 71 min for the 4 GiB card; 64 MiB of random data
# took 52 s of CPU at -1, 31 s at -0), which is why it is made once and cached in WORK.
if ! fresh "$xzf"; then
  s=$(date +%s.%N); xz -T1 -1 -c "$card" > "$xzf.part"; mv "$xzf.part" "$xzf"; made "$xzf" "$s"
fi
if ! fresh "$gzf"; then
  s=$(date +%s.%N)
  if command -v pigz >/dev/null; then pigz -1 -c "$card" > "$gzf.part"; else gzip -1 -c "$card" > "$gzf.part"; fi
  mv "$gzf.part" "$gzf"; made "$gzf" "$s"
fi
xz_blocks=$(xz --robot --list "$xzf" | awk '$1 == "totals" { print $3 }')
[ "$xz_blocks" = 1 ] || { echo "$xzf has $xz_blocks blocks, expected 1" >&2; exit 1; }
# The raw image, .xz and .gz are flashed from a directory holding no bmap, so blockwise finds
# no sidecar (it would look for card.img.bmap, card.bmap) and maps the image itself.
nos=$WORK/nosidecar
rm -rf "$nos"; mkdir -p "$nos"
ln -s "$card" "$nos/card.img"; ln -s "$xzf" "$nos/card.img.xz"; ln -s "$gzf" "$nos/card.img.gz"

# 2. The emulated card: a card-sized file in tmpfs behind a loop device, writes throttled.
avail=$(( $(df --output=avail -B1 "$emu_dir" | tail -1) ))
[ "$avail" -gt $(( raw + (256 << 20) )) ] || { echo "$emu_dir has $avail bytes free, the emulated card needs $raw" >&2; exit 2; }
emu=$(mktemp "$emu_dir/bw-flash-card.XXXXXX")
truncate -s "$raw" "$emu"
loop=$(losetup -f --show "$emu")
majmin=$(( $(stat -c '0x%t' "$loop") )):$(( $(stat -c '0x%T' "$loop") ))
cg=$cgroot/blockwise-flash-bench.$$
mkdir "$cg"
echo "$majmin $bps" > "$cg/blkio.throttle.write_bps_device"
if [ -n "$read_bps" ]; then echo "$majmin $read_bps" > "$cg/blkio.throttle.read_bps_device"; fi
# Bytes the group wrote to the card so far (the throttle's own count).
cg_written() { awk -v d="$majmin" '$1 == d && $2 == "Write" { print $3; f = 1 } END { if (!f) print 0 }' "$cg/blkio.throttle.io_service_bytes"; }
# Old data on the whole card, written outside the group. Same key every time: every run starts
# from the same used card. (openssl dies of SIGPIPE when head has enough: expected.)
refill() {
  { openssl enc -aes-128-ctr -nosalt -pass pass:an-older-card -in /dev/zero 2>/dev/null || true; } \
    | head -c "$raw" | dd of="$loop" bs=4M iflag=fullblock oflag=direct status=none
}

# The restore proof, on the card against the image.
# shellcheck source=benches/card-proof.sh
. "$here/card-proof.sh"
p1_start=$(part "$card" 1 | cut -d' ' -f1)
proof_dir=$WORK/proof
ref_fat=; ref_ext=; ref_fat_n=; ref_ext_n=
reference() {
  local o1 l1 o2 l2 q
  read -r o1 l1 < <(part "$card" 1); read -r o2 l2 < <(part "$card" 2)
  rm -rf "$proof_dir"; mkdir -p "$proof_dir/fat" "$proof_dir/mnt"
  mcopy -s -n -i "$card@@$o1" ::/ "$proof_dir/fat/"
  ref_fat=$(hashes "$proof_dir/fat"); ref_fat_n=$(printf '%s\n' "$ref_fat" | grep -c . || true)
  q=$(losetup -f --show -r -o "$o2" --sizelimit "$l2" "$card"); pq=("$q")
  mount -o ro,noload "$q" "$proof_dir/mnt"; mnt=$proof_dir/mnt
  ref_ext=$(hashes "$proof_dir/mnt"); ref_ext_n=$(printf '%s\n' "$ref_ext" | grep -c . || true)
  umount "$mnt"; mnt=; losetup -d "$q"; pq=()
}

f() { printf "%.${2:-2}f" "$1"; }

# 3. The timed runs.
keys=(); labels=(); secs=(); fracs=(); wrote=(); proofs=(); maps=()
timed() { # key, label, card (1: refill and prove the card; 0: the card is not written), command...
  local key=$1 label=$2 oncard=$3 st=0 t0 t1 w0 w1
  shift 3
  if [ "$oncard" = 1 ]; then refill; fi
  sync; echo 3 > /proc/sys/vm/drop_caches
  w0=$(cg_written); t0=$(date +%s.%N)
  # shellcheck disable=SC2016 # $$ and $0 belong to the inner shell
  sh -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" "$@" >"$WORK/logs/$key.out" 2>"$WORK/logs/$key.err" || st=$?
  t1=$(date +%s.%N); w1=$(cg_written)
  keys+=("$key"); labels+=("$label"); wrote+=("$((w1 - w0))"); maps+=("")
  if [ "$st" != 0 ]; then
    secs+=(FAILED); fracs+=(""); proofs+=("exit $st")
    echo "  $label: FAILED with exit status $st; its stderr ($WORK/logs/$key.err):" >&2
    sed 's/^/    /' "$WORK/logs/$key.err" | tail -n 20 >&2
    return
  fi
  secs+=("$(echo "$t1 - $t0" | bc -l)")
  case $key in
    bw-*)
      fracs+=("$(jq -r '.mapped_bytes / .image_size' "$WORK/logs/$key.out")")
      maps[-1]=$(jq -r '.map_source' "$WORK/logs/$key.out") ;;
    bmaptool-*)
      fracs+=("$(awk -F'[<>]' '/<BlockSize>/ { b = $3 } /<MappedBlocksCount>/ { m = $3 } /<ImageSize>/ { s = $3 } END { printf "%.6f", m * b / s }' "$WORK/card.bmaptool.bmap")")
      maps[-1]=bmap ;;
    *) fracs+=(1); maps[-1]=none ;;
  esac
  if [ "$oncard" = 1 ]; then proof "$WORK/logs/$key.proof"; proofs+=("$proof_result"); else proofs+=("-"); fi
  printf '  %s: %.2f s, %s bytes through the throttle, proof %s\n' "$label" "${secs[-1]}" "${wrote[-1]}" "${proofs[-1]}" >&2
}

echo "card: $card ($raw bytes); work: $WORK; emulated card: $loop over $emu, writes throttled to $bps B/s" >&2
echo "computing the reference file hashes" >&2
reference
echo "timed runs (cold cache each, the card refilled with old data before each):" >&2
timed dd "dd bs=4M oflag=direct conv=fsync" 1 dd if="$card" of="$loop" bs=4M oflag=direct conv=fsync
timed bw-zst "blockwise flash card.img.zst (+ .bmap)" 1 "$bw" flash "$zst" "$loop" --yes --json
timed bw-raw "blockwise flash card.img (no bmap)" 1 "$bw" flash "$nos/card.img" "$loop" --yes --json
timed bw-xz "blockwise flash card.img.xz (stream, no bmap)" 1 "$bw" flash "$nos/card.img.xz" "$loop" --yes --json
timed bw-gz "blockwise flash card.img.gz (stream, no bmap)" 1 "$bw" flash "$nos/card.img.gz" "$loop" --yes --json
rm -f "$WORK/card.bmaptool.bmap"
timed bmaptool-create "bmaptool create card.img" 0 bmaptool create -o "$WORK/card.bmaptool.bmap" "$card"
timed bmaptool-copy "bmaptool copy --bmap (dd backup)" 1 bmaptool copy --bmap "$WORK/card.bmaptool.bmap" "$card" "$loop"

# 4. Unthrottled: the same loop device over tmpfs, the writer outside the group, warm cache.
echo "unthrottled, into tmpfs, warm cache:" >&2
u_names=("blockwise flash card.img.zst --no-verify" "blockwise flash card.img.zst (verify)" "zstd -d -T0 -c card.img.zst > /dev/null")
u_cmds=("$bw flash $zst $loop --yes --no-verify" "$bw flash $zst $loop --yes" "zstd -d -T0 -c $zst")
u_med=(); u_min=(); u_max=(); u_runs=()
if command -v hyperfine >/dev/null; then runs=${RUNS:-5}; u_how="hyperfine -N, 1 warm-up run"; else runs=${RUNS:-3}; u_how="date +%s.%N, 1 warm-up run"; fi
ubench() { # index into u_cmds; a failure is recorded, not fatal, so the table still comes out
  local i=$1 j=$WORK/logs/tmpfs.$1.json c ts t0 t1 _
  if command -v hyperfine >/dev/null; then
    if hyperfine -N -w 1 -r "$runs" --export-json "$j" -n "${u_names[$i]}" "${u_cmds[$i]}" >"$WORK/logs/tmpfs.$i.log" 2>&1; then
      u_med+=("$(jq -r '.results[0].median' "$j")"); u_min+=("$(jq -r '.results[0].min' "$j")")
      u_max+=("$(jq -r '.results[0].max' "$j")"); u_runs+=("$(jq -r '.results[0].times | length' "$j")")
      echo "  ${u_names[$i]}: median $(f "${u_med[-1]}") s" >&2
      return
    fi
  else
    read -ra c <<<"${u_cmds[$i]}"
    ts=()
    if "${c[@]}" >/dev/null 2>"$WORK/logs/tmpfs.$i.log"; then  # warm-up
      for _ in $(seq "$runs"); do
        t0=$(date +%s.%N); "${c[@]}" >/dev/null 2>"$WORK/logs/tmpfs.$i.log" || break; t1=$(date +%s.%N)
        ts+=("$(echo "$t1 - $t0" | bc -l)")
      done
    fi
    if [ "${#ts[@]}" = "$runs" ]; then
      mapfile -t ts < <(printf '%s\n' "${ts[@]}" | sort -g)
      u_med+=("${ts[$(( (runs - 1) / 2 ))]}"); u_min+=("${ts[0]}"); u_max+=("${ts[-1]}"); u_runs+=("$runs")
      echo "  ${u_names[$i]}: median $(f "${u_med[-1]}") s" >&2
      return
    fi
  fi
  u_med+=(FAILED); u_min+=(""); u_max+=(""); u_runs+=("")
  echo "  ${u_names[$i]}: FAILED; its log ($WORK/logs/tmpfs.$i.log):" >&2
  sed 's/^/    /' "$WORK/logs/tmpfs.$i.log" | tail -n 20 >&2
}
ubench 0; ubench 1; ubench 2

# 5. The table.
idx() { local i; for i in "${!keys[@]}"; do if [ "${keys[$i]}" = "$1" ]; then echo "$i"; fi; done; }
le() { [ "$(echo "$1 <= $2" | bc -l)" = 1 ]; }
di=$(idx dd); dd_s=${secs[$di]}
if [ "$dd_s" = FAILED ]; then dd_s=; fi  # then no ratio and no target can be evaluated
ratio() { if [ -n "$dd_s" ]; then f "$(echo "$1 / $dd_s" | bc -l)" 3; fi; }
echo
echo "## blockwise flash vs dd and bmaptool: $((raw >> 20)) MiB reused card, one run"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r); blockwise $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') ($bw);" \
  "$(bmaptool --version 2>&1 | head -1), $(dd --version | head -1), $(xz --version | head -1), zstd $(zstd --version | grep -o 'v[0-9.]*' | head -1);" \
  "load average $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo "Sources: card.img $raw B, card.img.zst $(stat -c %s "$zst") B (+ bmap), card.img.xz $(stat -c %s "$xzf") B (xz -T1 -1, $xz_blocks block)," \
  "card.img.gz $(stat -c %s "$gzf") B ($(command -v pigz >/dev/null && echo pigz || echo gzip) -1)."
echo "Emulated card: loop device over a file in $emu_dir, writes throttled to $bps B/s (blkio cgroup v1), reads $(if [ -n "$read_bps" ]; then echo "throttled to $read_bps B/s"; else echo "not throttled (verify's read-back runs at memory speed)"; fi);" \
  "refilled with old random data before each run; sync + drop_caches before each run (sources read cold from disk)."
echo "Restore proof on the card: bytes before partition 1 identical, sfdisk -d identical (minus device names), fsck.vfat -n and e2fsck -fn clean," \
  "SHA-256 of every file identical ($ref_fat_n FAT files via mcopy, $ref_ext_n ext4 files mounted ro,noload)."
echo
echo "| method | seconds | ratio to dd | mapped fraction | MB written to the card | restore proof | target | met? |"
echo "|---|---:|---:|---:|---:|---|---|---|"
met_all=()
for i in "${!keys[@]}"; do
  s=${secs[$i]}; tgt=""; met=""
  if [ "$s" = FAILED ]; then
    printf '| %s | FAILED | | | %s | %s | | not met |\n' "${labels[$i]}" "$(f "$(echo "${wrote[$i]} / 1000000" | bc -l)" 1)" "${proofs[$i]}"
    case ${keys[$i]} in bw-*) met_all+=("${labels[$i]}: not met (failed)") ;; esac; continue
  fi
  case ${dd_s:+${keys[$i]}} in
    bw-zst|bw-raw)
      lim=$(echo "1.25 * ${fracs[$i]} * $dd_s + 2" | bc -l)
      tgt="<= 1.25 x $(f "${fracs[$i]}" 3) x dd + 2 s = $(f "$lim") s" ;;
    bw-xz|bw-gz)
      lim=$(echo "0.2 * $dd_s" | bc -l)
      tgt="<= 0.2 x dd = $(f "$lim") s" ;;
    *) lim= ;;
  esac
  if [ -z "$dd_s" ] && [ "${keys[$i]}" != "${keys[$i]#bw-}" ]; then met_all+=("${labels[$i]}: not evaluated (dd failed)"); fi
  if [ -n "$lim" ]; then
    if le "$s" "$lim"; then met=met; else met="not met"; fi
    case ${proofs[$i]} in PASS) ;; *) met="$met (but proof ${proofs[$i]})" ;; esac
    met_all+=("${labels[$i]}: $met")
  fi
  mapped=$(f "${fracs[$i]}" 3); [ "${keys[$i]}" = dd ] && mapped="1 (no map)"
  case ${maps[$i]} in bmap|scan) mapped="$mapped (${maps[$i]})" ;; esac
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "${labels[$i]}" "$(f "$s")" "$(ratio "$s")" \
    "$mapped" "$(f "$(echo "${wrote[$i]} / 1000000" | bc -l)" 1)" "${proofs[$i]}" "$tgt" "$met"
done
ci=$(idx bmaptool-create); pi=$(idx bmaptool-copy)
if [ "${secs[$ci]}" != FAILED ] && [ "${secs[$pi]}" != FAILED ]; then
  s=$(echo "${secs[$ci]} + ${secs[$pi]}" | bc -l)
  printf '| bmaptool create + copy (sum of the two rows) | %s | %s | | | | | |\n' "$(f "$s")" "$(ratio "$s")"
fi
echo
echo "MB written to the card: the throttle group's own count of bytes written to the loop device (1 MB = 10^6 B). bmaptool writes through"
echo "the page cache and fsyncs every few MiB; pages the kernel's flusher writes back in between are neither counted nor throttled."
echo
echo "Unthrottled, the same loop device over tmpfs, writer outside the throttle group, warm cache ($u_how, $runs runs each, median):"
echo
echo "| command | median s | min s | max s | runs | target | met? |"
echo "|---|---:|---:|---:|---:|---|---|"
zs=${u_med[2]}
for i in 0 1 2; do
  tgt=""; met=""
  if [ "$i" != 2 ]; then
    if [ "$zs" = FAILED ]; then tgt="<= zstd -d -T0 (failed)"; met="not evaluated"
    else
      tgt="<= zstd -d -T0 = $(f "$zs") s"
      if [ "${u_med[$i]}" = FAILED ]; then met="not met (failed)"; elif le "${u_med[$i]}" "$zs"; then met=met; else met="not met"; fi
    fi
    met_all+=("tmpfs ${u_names[$i]}: $met")
  fi
  if [ "${u_med[$i]}" = FAILED ]; then
    printf '| %s | FAILED | | | | %s | %s |\n' "${u_names[$i]}" "$tgt" "$met"
  else
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "${u_names[$i]}" "$(f "${u_med[$i]}")" "$(f "${u_min[$i]}")" "$(f "${u_max[$i]}")" "${u_runs[$i]}" "$tgt" "$met"
  fi
done
echo
echo "Targets:"
for m in "${met_all[@]}"; do echo "- $m"; done
echo
echo "Total runtime of this script: $(f "$(echo "$(date +%s.%N) - $started" | bc -l)" 0) s; logs in $WORK/logs"
