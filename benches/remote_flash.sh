#!/usr/bin/env bash
# Remote flash benchmark (issue 13): a card image on a web server behind a 100 Mbit/s link,
# written onto a reused card. Side by side, in one run:
#   (a)  the usual way: curl downloads the whole .img.xz (made by `xz -T2`) and its bmap, then
#        `bmaptool copy --bmap` writes it (the two times summed);
#   (a') bmaptool copy given the URL itself (it downloads the whole .img.xz as it writes);
#   (b)  `blockwise flash URL` of the same .img.xz, with the same bmap beside it on the server;
#   (b') the same .img.xz with no bmap beside it (blockwise maps the image remotely);
#   (c)  `blockwise flash URL` of blockwise's own `.img.zst` backup of the card (its .bmap beside).
# Every card passes the restore proof. The bytes each method downloaded are nginx's own count
# (its access log: body bytes sent), beside blockwise's (`flash --json` remote.downloaded_bytes).
# Prints a markdown table; the target is blockwise at most a fifth of the time of (a).
#
#   usage: sudo benches/remote_flash.sh [SIZE] [USED_MB]      (default 4G 400; try 512M 80)
#   env:   CARD=path   reuse an image made by make-card.sh (same layout) instead of building one
#          WORK=dir    where the card, its archives, downloads and logs live (default
#                      /var/tmp/blockwise-remote-bench-SIZE); kept, so that a rerun skips
#                      building the card, its .zst, and its .xz (which takes xz -T2 about half
#                      an hour on two cores: the card's free space holds old random data).
#                      Delete it yourself.
#          BIN=path    the blockwise binary (default: this tree, built with cargo --release)
#          RATE=r      the link's rate, as tc writes it (default 100mbit)
#          EMU_DIR=dir where the target card's backing file lives (default /dev/shm)
#
# The link: nginx on 127.0.0.1 on a port of its own; an htb qdisc on `lo` whose one class,
# RATE, takes only the packets sent from that port (the downloads), so nothing else on the
# machine is slowed. Removed at exit. (A root qdisc already on `lo` is not touched: the script
# refuses to run.)
# The target: a loop device over a card-sized file in tmpfs (EMU_DIR), refilled with the same
# old random data before each run, so writing costs little and every run starts from the same
# used card. Before each run: `sync` and `echo 3 > /proc/sys/vm/drop_caches`.
#
# Needs: root, nginx (Debian nginx-light), curl, tc (iproute2) with sch_htb, bmaptool, xz,
# zstd, openssl, sfdisk, jq, bc, fsck.vfat, e2fsck, mtools, losetup, python3 (a free port).
set -euo pipefail
started=$(date +%s.%N); load0=$(cut -d' ' -f1-3 /proc/loadavg)
size=${1:-4G}; used=${2:-400}
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
PATH=$PATH:/usr/sbin:/sbin
for t in nginx curl tc bmaptool xz openssl sfdisk jq bc fsck.vfat e2fsck mcopy losetup python3 sha256sum cmp; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install nginx-light curl iproute2 bmap-tools xz-utils openssl fdisk jq bc dosfstools e2fsprogs mtools python3)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (tc, loop devices, mounts, drop_caches)" >&2; exit 2; }
if [ -n "${BIN:-}" ]; then bw=$BIN; else (cd "$repo" && cargo build --release -q); bw=$repo/target/release/blockwise; fi
rate=${RATE:-100mbit}
WORK=${WORK:-/var/tmp/blockwise-remote-bench-$size}
mkdir -p "$WORK/logs"
emu_dir=${EMU_DIR:-/dev/shm}
export MTOOLS_SKIP_CHECK=1 LC_ALL=C

loop=; pq=(); mnt=; emu=; ngpid=; qdisc=
cleanup() {
  if [ -n "$qdisc" ]; then tc qdisc del dev lo root 2>/dev/null || echo "could not remove the qdisc on lo" >&2; fi
  if [ -n "$ngpid" ]; then kill "$ngpid" 2>/dev/null || true; wait "$ngpid" 2>/dev/null || true; fi
  if [ -n "$mnt" ]; then umount "$mnt" 2>/dev/null || true; fi
  for l in "${pq[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  if [ -n "$loop" ]; then losetup -d "$loop" 2>/dev/null || true; fi
  if [ -n "$emu" ]; then rm -f "$emu"; fi
  rm -rf "$WORK/proof" "$WORK/dl"
}
trap cleanup EXIT

# 1. The card and what is made from it, cached in WORK (remade when the card is newer).
card=${CARD:-$WORK/card.img}
if [ ! -f "$card" ]; then bash "$here/make-card.sh" "$card" "$size" "$used"; fi
card=$(cd "$(dirname "$card")" && pwd)/$(basename "$card")
raw=$(stat -c %s "$card")
fresh() { [ -s "$1" ] && [ "$1" -nt "$card" ]; }
made() { echo "  made $1 in $(printf '%.1f' "$(echo "$(date +%s.%N) - $2" | bc -l)") s" >&2; }
zst=$WORK/card.img.zst; xzf=$WORK/card.img.xz; bmapf=$WORK/card.img.bmap
if ! fresh "$zst" || ! fresh "$zst.bmap"; then
  s=$(date +%s.%N); rm -f "$zst" "$zst.bmap"; "$bw" backup "$card" "$zst" 2>"$WORK/logs/backup.err"; made "$zst" "$s"
fi
if ! fresh "$bmapf"; then
  s=$(date +%s.%N); "$bw" bmap "$card" -o "$bmapf" 2>"$WORK/logs/bmap.err"; made "$bmapf" "$s"
fi
# xz's defaults with two threads: a multi-block file (24 MiB blocks), as `xz -T2` publishes it.
if ! fresh "$xzf"; then
  echo "  compressing the card with xz -T2 (slow: the free space holds old random data)" >&2
  s=$(date +%s.%N); xz -T2 -c "$card" > "$xzf.part"; mv "$xzf.part" "$xzf"; made "$xzf" "$s"
fi
xz_blocks=$(xz --robot --list "$xzf" | awk '$1 == "totals" { print $3 }')
zst_size=$(stat -c %s "$zst"); xz_size=$(stat -c %s "$xzf")

# What nginx serves: www/ the .xz with the bmap beside it (as distributions publish both) and
# the .zst with its own; nobmap/ the .xz alone.
rm -rf "$WORK/www"; mkdir -p "$WORK/www/nobmap"
ln -s "$xzf" "$WORK/www/card.img.xz"; ln -s "$bmapf" "$WORK/www/card.img.bmap"
ln -s "$zst" "$WORK/www/card.img.zst"; ln -s "$zst.bmap" "$WORK/www/card.img.zst.bmap"
ln -s "$xzf" "$WORK/www/nobmap/card.img.xz"

# 2. nginx on a free port, its own config, an access log of body bytes sent.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ng=$WORK/nginx; rm -rf "$ng"; mkdir -p "$ng"
cat > "$ng/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
user root;
pid $ng/nginx.pid;
error_log $ng/error.log;
events { worker_connections 512; }
http {
    log_format bytes '\$request	\$status	\$body_bytes_sent	\$http_range';
    access_log $ng/access.log bytes;
    client_body_temp_path $ng/body; proxy_temp_path $ng/proxy; fastcgi_temp_path $ng/fastcgi;
    uwsgi_temp_path $ng/uwsgi; scgi_temp_path $ng/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000;
    sendfile on;
    server { listen 127.0.0.1:$port; root $WORK/www; }
}
EOF
nginx -p "$ng" -c "$ng/nginx.conf" 2>>"$ng/error.log" &
ngpid=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/card.img.bmap" && break; sleep 0.1; done
curl -s -f -o /dev/null "http://127.0.0.1:$port/card.img.bmap" || { echo "nginx did not start: $(cat "$ng/error.log")" >&2; exit 1; }
base=http://127.0.0.1:$port

# 3. The link: only what nginx sends (source port $port) goes through the RATE class.
if tc qdisc show dev lo | grep -q 'qdisc htb\|qdisc tbf\|qdisc netem\|qdisc prio\|qdisc hfsc'; then
  echo "lo already has a qdisc ($(tc qdisc show dev lo | head -1)); not touching it" >&2; exit 2
fi
tc qdisc add dev lo root handle 1: htb default 99 && qdisc=1
tc class add dev lo parent 1: classid 1:10 htb rate "$rate" ceil "$rate" burst 256k cburst 256k quantum 65536
tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip sport "$port" 0xffff flowid 1:10
# Check it: 16 MiB of the .xz through the link.
t0=$(date +%s.%N)
curl -s -r 0-16777215 -o /dev/null "$base/card.img.xz"
link=$(echo "16777216 * 8 / ($(date +%s.%N) - $t0) / 1000000" | bc -l)
echo "link check: 16 MiB at $(printf '%.1f' "$link") Mbit/s (rate $rate)" >&2

# 4. The target card: a card-sized file in tmpfs behind a loop device.
avail=$(( $(df --output=avail -B1 "$emu_dir" | tail -1) ))
[ "$avail" -gt $(( raw + (256 << 20) )) ] || { echo "$emu_dir has $avail bytes free, the target needs $raw" >&2; exit 2; }
emu=$(mktemp "$emu_dir/bw-remote-card.XXXXXX")
truncate -s "$raw" "$emu"
loop=$(losetup -f --show "$emu")
refill() {
  { openssl enc -aes-128-ctr -nosalt -pass pass:an-older-card -in /dev/zero 2>/dev/null || true; } \
    | head -c "$raw" | dd of="$loop" bs=4M iflag=fullblock oflag=direct status=none
}

# The restore proof, on the card against the image (as benches/flash_compare.sh).
# shellcheck source=benches/card-proof.sh
. "$here/card-proof.sh"
p1_start=$(part "$card" 1 | cut -d' ' -f1)
proof_dir=$WORK/proof
ref_fat=; ref_ext=
reference() {
  local o1 l1 o2 l2 q
  read -r o1 l1 < <(part "$card" 1); read -r o2 l2 < <(part "$card" 2)
  rm -rf "$proof_dir"; mkdir -p "$proof_dir/fat" "$proof_dir/mnt"
  mcopy -s -n -i "$card@@$o1" ::/ "$proof_dir/fat/"
  ref_fat=$(hashes "$proof_dir/fat")
  q=$(losetup -f --show -r -o "$o2" --sizelimit "$l2" "$card"); pq=("$q")
  mount -o ro,noload "$q" "$proof_dir/mnt"; mnt=$proof_dir/mnt
  ref_ext=$(hashes "$proof_dir/mnt")
  umount "$mnt"; mnt=; losetup -d "$q"; pq=()
}

f() { printf "%.${2:-2}f" "$1"; }
log_lines() { wc -l < "$ng/access.log"; }
# Body bytes and requests nginx logged after line $1.
log_bytes() { tail -n +"$(( $1 + 1 ))" "$ng/access.log" | awk -F'\t' '{ b += $3 } END { printf "%.0f\n", b }'; }
log_reqs() { tail -n +"$(( $1 + 1 ))" "$ng/access.log" | wc -l; }

# 5. The timed runs.
keys=(); labels=(); secs=(); dl=(); reqs=(); said=(); proofs=(); notes=()
run() { # key, label, command... (the card refilled before, proved after)
  local key=$1 label=$2 st=0 t0 t1 m
  shift 2
  refill; sync; echo 3 > /proc/sys/vm/drop_caches
  m=$(log_lines); t0=$(date +%s.%N)
  "$@" >"$WORK/logs/$key.out" 2>"$WORK/logs/$key.err" || st=$?
  t1=$(date +%s.%N)
  sleep 1  # nginx logs a request as it ends: let the last lines land
  keys+=("$key"); labels+=("$label"); dl+=("$(log_bytes "$m")"); reqs+=("$(log_reqs "$m")"); notes+=("")
  said+=("$(jq -r '.remote.downloaded_bytes // empty' "$WORK/logs/$key.out" 2>/dev/null || true)")
  if [ "$st" != 0 ]; then
    secs+=(FAILED); proofs+=("exit $st")
    echo "  $label: FAILED with exit status $st; its stderr ($WORK/logs/$key.err):" >&2
    sed 's/^/    /' "$WORK/logs/$key.err" | tail -n 20 >&2
    return
  fi
  secs+=("$(echo "$t1 - $t0" | bc -l)")
  proof "$WORK/logs/$key.proof"; proofs+=("$proof_result")
  printf '  %s: %.2f s, %s bytes downloaded in %s requests, proof %s\n' "$label" "${secs[-1]}" "${dl[-1]}" "${reqs[-1]}" "${proofs[-1]}" >&2
}
# (a) as two timed steps, summed: the download, then the copy.
download_then_copy() {
  rm -rf "$WORK/dl"; mkdir -p "$WORK/dl"
  local t0 t1
  t0=$(date +%s.%N)
  curl -s -S -f -o "$WORK/dl/card.img.xz" "$base/card.img.xz"
  curl -s -S -f -o "$WORK/dl/card.img.bmap" "$base/card.img.bmap"
  t1=$(date +%s.%N)
  printf 'download %.2f s' "$(echo "$t1 - $t0" | bc -l)" > "$WORK/logs/a.steps"
  bmaptool copy --bmap "$WORK/dl/card.img.bmap" "$WORK/dl/card.img.xz" "$loop"
  printf ' + copy %.2f s' "$(echo "$(date +%s.%N) - $t1" | bc -l)" >> "$WORK/logs/a.steps"
  rm -rf "$WORK/dl"
}

echo "card: $card ($raw bytes); work: $WORK; nginx on $base (pid $ngpid), link $rate; target $loop over $emu" >&2
echo "computing the reference file hashes" >&2
reference
echo "timed runs (the card refilled with old data and caches dropped before each):" >&2
run a "curl the .img.xz + bmap, then bmaptool copy --bmap" download_then_copy
run a2 "bmaptool copy --bmap URL.bmap URL.img.xz" bmaptool copy --bmap "$base/card.img.bmap" "$base/card.img.xz" "$loop"
run b "blockwise flash URL.img.xz (bmap beside it)" "$bw" flash "$base/card.img.xz" "$loop" --yes --json
run b2 "blockwise flash URL.img.xz (no bmap: mapped remotely)" "$bw" flash "$base/nobmap/card.img.xz" "$loop" --yes --json
run c "blockwise flash URL.img.zst (its .bmap beside it)" "$bw" flash "$base/card.img.zst" "$loop" --yes --json

# 6. The table.
a_s=${secs[0]}
if [ "$a_s" = FAILED ]; then a_s=; fi
steps=$(cat "$WORK/logs/a.steps" 2>/dev/null || true)
echo
echo "## blockwise flash URL vs download + bmaptool: $((raw >> 20)) MiB reused card over a $rate link, one run"
echo
echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, kernel $(uname -r); blockwise $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?') ($bw);" \
  "$(nginx -v 2>&1 | head -1); $(curl --version | head -1 | cut -d' ' -f1-2); $(bmaptool --version 2>&1 | head -1); $(xz --version | head -1);" \
  "load average $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end."
echo "Served by nginx on 127.0.0.1, its responses through an htb class of $rate on lo (link check: 16 MiB at $(f "$link" 1) Mbit/s)."
echo "Objects: card.img.xz $xz_size B (xz -T2, $xz_blocks blocks) with card.img.bmap ($(stat -c %s "$bmapf") B, blockwise bmap) beside it;" \
  "card.img.zst $zst_size B (blockwise backup) with its .bmap. Image $raw B, mapped $(awk -F'[<>]' '/<BlockSize>/ { b = $3 } /<MappedBlocksCount>/ { m = $3 } END { printf "%.0f", m * b }' "$bmapf") B."
echo "Target: loop device over a file in $emu_dir, refilled with old random data before each run; sync + drop_caches before each run."
echo "Restore proof: bytes before partition 1 and sfdisk -d identical, fsck.vfat -n and e2fsck -fn clean, SHA-256 of every file identical."
echo "Downloaded: body bytes in nginx's access log for the run's requests (1 MB = 10^6 B); blockwise's own count beside it."
echo
echo "| method | seconds | ratio to (a) | MB downloaded | requests | blockwise says | restore proof | target | met? |"
echo "|---|---:|---:|---:|---:|---:|---|---|---|"
met_all=()
for i in "${!keys[@]}"; do
  s=${secs[$i]}; tgt=""; met=""
  mb=$(f "$(echo "${dl[$i]} / 1000000" | bc -l)" 1)
  sd=""; if [ -n "${said[$i]}" ]; then sd=$(f "$(echo "${said[$i]} / 1000000" | bc -l)" 1); fi
  if [ "$s" = FAILED ]; then
    printf '| %s | FAILED | | %s | %s | %s | %s | | |\n' "${labels[$i]}" "$mb" "${reqs[$i]}" "$sd" "${proofs[$i]}"
    case ${keys[$i]} in b|c) met_all+=("${labels[$i]}: not met (failed)") ;; esac; continue
  fi
  ratio=""; if [ -n "$a_s" ]; then ratio=$(f "$(echo "$s / $a_s" | bc -l)" 3); fi
  case ${keys[$i]} in
    b|b2|c)
      if [ -n "$a_s" ]; then
        lim=$(echo "$a_s / 5" | bc -l); tgt="<= (a) / 5 = $(f "$lim") s"
        if [ "$(echo "$s <= $lim" | bc -l)" = 1 ]; then met=met; else met="not met"; fi
        case ${proofs[$i]} in PASS) ;; *) met="$met (but proof ${proofs[$i]})" ;; esac
      else tgt="(a) failed"; met="not evaluated"; fi
      met_all+=("${labels[$i]}: $met") ;;
  esac
  label=${labels[$i]}; if [ "${keys[$i]}" = a ] && [ -n "$steps" ]; then label="$label ($steps)"; fi
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(f "$s")" "$ratio" "$mb" "${reqs[$i]}" "$sd" "${proofs[$i]}" "$tgt" "$met"
done
echo
echo "Targets (blockwise at most a fifth of the time of (a)):"
for m in "${met_all[@]}"; do echo "- $m"; done
echo
echo "Total runtime of this script: $(f "$(echo "$(date +%s.%N) - $started" | bc -l)" 0) s; logs in $WORK/logs"
