#!/usr/bin/env bash
# How much of a 32 GiB card with 3 GB of files each tool maps (the tight ext map, issue 11),
# from one run:
#   - sparse.img: the card as image builders make it (make-card.sh FRESH=1: sfdisk, mkfs.vfat,
#     mkfs.ext4 with its defaults on a sparse file, files copied in through a loop mount);
#   - reused.img: the same card written onto one full of old random data (only the sparse
#     image's data extents are written, so its free space, and the inode-table blocks mkfs
#     never wrote, hold old data: a card that was dd'd, or an image read back from one).
# On each: `bmaptool create` (its map is the file's holes), `blockwise bmap` (tight ext4
# metadata), `blockwise bmap --whole-metadata` (the map before the tight rule), and for the
# ext4 root the blocks partclone.ext4 counts in use. BEFORE=path adds a row for an older
# blockwise binary (built from before the tight rule: its map must equal --whole-metadata).
#
#   usage: sudo benches/tight_ext.sh [WORK]      (default /var/tmp/blockwise-tight-ext)
#   env:   SIZE (32G), USED_MB (3000), BIN (default: this tree, cargo --release), BEFORE
# Needs: root, losetup, mount, python3, bmaptool, partclone.ext4, bc; ~36 GB free in WORK
# (the sparse card takes ~3 GB, the reused one all 32 GiB). Both cards are kept for reruns.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd); repo=$(dirname "$here")
work=${1:-/var/tmp/blockwise-tight-ext}
size=${SIZE:-32G}; used=${USED_MB:-3000}
for t in bmaptool partclone.ext4 python3 losetup bc sfdisk; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (apt-get install bmap-tools partclone python3 bc)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (loop mounts)" >&2; exit 2; }
if [ -n "${BIN:-}" ]; then bw=$BIN; else (cd "$repo" && cargo build --release -q); bw=$repo/target/release/blockwise; fi
mkdir -p "$work"
sparse=$work/sparse.img; reused=$work/reused.img
lp=
trap '[ -n "$lp" ] && losetup -d "$lp" 2>/dev/null || true' EXIT

if [ ! -f "$sparse" ]; then
  FRESH=1 bash "$here/make-card.sh" "$sparse.part" "$size" "$used"
  mv "$sparse.part" "$sparse"
fi
if [ ! -f "$reused" ] || [ "$reused" -ot "$sparse" ]; then
  truncate -s "$(stat -c %s "$sparse")" "$reused.part"
  { openssl enc -aes-128-ctr -nosalt -pass pass:oldcard2 -in /dev/zero 2>/dev/null || true; } \
    | dd of="$reused.part" bs=4M count=$(( $(stat -c %s "$sparse") / (4<<20) )) iflag=fullblock conv=notrunc status=none
  # Only the data extents (SEEK_DATA/SEEK_HOLE), as a flash of the sparse image's own bmap.
  python3 - "$sparse" "$reused.part" <<'PY'
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY); dst = os.open(sys.argv[2], os.O_WRONLY)
end = os.fstat(src).st_size; pos = 0
while pos < end:
    try:
        pos = os.lseek(src, pos, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(src, pos, os.SEEK_HOLE)
    while pos < hole:
        n = min(8 << 20, hole - pos)
        os.pwrite(dst, os.pread(src, n, pos), pos)
        pos += n
os.fsync(dst)
PY
  mv "$reused.part" "$reused"
fi
echo "sparse card: $(du -h --apparent-size "$sparse" | cut -f1) apparent, $(du -h "$sparse" | cut -f1) allocated" >&2

mib() { echo "scale=1; $1 / 1048576" | bc; }
mapped_bytes() { echo $(( $(grep -o '<MappedBlocksCount> *[0-9]*' "$1" | grep -o '[0-9]*$') * 4096 )); }
declare -A got
for card in sparse reused; do
  img=$work/$card.img
  bmaptool create -o "$work/$card.bmaptool.bmap" "$img" 2>/dev/null
  got[$card,bmaptool]=$(mapped_bytes "$work/$card.bmaptool.bmap")
  "$bw" bmap "$img" -o "$work/$card.tight.bmap" 2>/dev/null
  got[$card,tight]=$(mapped_bytes "$work/$card.tight.bmap")
  "$bw" bmap "$img" --whole-metadata -o "$work/$card.whole.bmap" 2>/dev/null
  got[$card,whole]=$(mapped_bytes "$work/$card.whole.bmap")
  if [ -n "${BEFORE:-}" ]; then
    "$BEFORE" bmap "$img" -o "$work/$card.before.bmap" 2>/dev/null
    got[$card,before]=$(mapped_bytes "$work/$card.before.bmap")
  fi
done
# partclone's count for the ext4 root (partition 2; it reads the same on both cards).
start=$(( 532480 * 512 ))
lp=$(losetup -f --show -r -o "$start" "$reused")
pc=$(partclone.ext4 -c -s "$lp" -O /dev/null 2>&1 || true)
losetup -d "$lp"; lp=
pc_blocks=$(echo "$pc" | grep -m1 'Space in use' | grep -o '= *[0-9]* Blocks' | grep -o '[0-9]*')
pc_bs=$(echo "$pc" | grep -m1 'Block size' | grep -o '[0-9]* Byte' | grep -o '[0-9]*')
pc_bytes=$(( ${pc_blocks:-0} * ${pc_bs:-4096} ))
root_tight=$("$bw" inspect "$reused" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); print([p for p in r["usage"]["parts"] if p["index"]==2][0]["used"])')
root_whole=$("$bw" inspect "$reused" --json --whole-metadata | python3 -c 'import json,sys; r=json.load(sys.stdin); print([p for p in r["usage"]["parts"] if p["index"]==2][0]["used"])')

echo
echo "32 GiB card, $used MB of files ($(date -u +%Y-%m-%dT%H:%MZ), blockwise $("$bw" --version | cut -d' ' -f2)):"
echo
echo "| map | sparse image (as built) | reused card (old data in free space) |"
echo "|---|---:|---:|"
row() { printf '| %s | %s MiB | %s MiB |\n' "$1" "$(mib "${got[sparse,$2]}")" "$(mib "${got[reused,$2]}")"; }
row '`bmaptool create` (holes)' bmaptool
row '`blockwise bmap` (tight ext4 metadata)' tight
row '`blockwise bmap --whole-metadata`' whole
if [ -n "${BEFORE:-}" ]; then row "blockwise before the tight rule ($BEFORE)" before; fi
echo
echo "ext4 root alone: partclone.ext4 counts $(mib "$pc_bytes") MiB in use; blockwise keeps $(mib "$root_tight") MiB (tight), $(mib "$root_whole") MiB (--whole-metadata)."
echo
t1=$(echo "${got[sparse,tight]} <= ${got[sparse,bmaptool]}" | bc)
# "Today's" map: the binary from before the tight rule when given, else --whole-metadata.
base=${got[reused,before]:-${got[reused,whole]}}
r=$(echo "scale=3; ${got[reused,tight]} / $base" | bc)
t2=$(echo "$r <= 0.90" | bc)
echo "target: tight on the sparse image <= bmaptool create's: $([ "$t1" = 1 ] && echo met || echo NOT met) ($(mib "${got[sparse,tight]}") vs $(mib "${got[sparse,bmaptool]}") MiB)"
# The same from the first partition's start: the gap before it is kept whole by the skip rule
# (a bootloader's place), where bmaptool maps only what is not a hole.
first=$(( $(sfdisk -J "$sparse" | python3 -c 'import json,sys; print(min(p["start"] for p in json.load(sys.stdin)["partitiontable"]["partitions"]))') * 512 ))
from_first() { python3 - "$1" "$first" <<'PY'
import re, sys
x = open(sys.argv[1]).read(); first = int(sys.argv[2])
bs = int(re.search(r'<BlockSize>\s*(\d+)', x).group(1))
n = 0
for a, b in re.findall(r'<Range[^>]*>\s*(\d+)(?:\s*-\s*(\d+))?\s*</Range>', x):
    s, e = int(a) * bs, (int(b or a) + 1) * bs
    n += max(0, e - max(s, first))
print(n)
PY
}
pb=$(from_first "$work/sparse.bmaptool.bmap"); pt=$(from_first "$work/sparse.tight.bmap")
echo "  from the first partition on (byte $first): blockwise $(mib "$pt") MiB, bmaptool $(mib "$pb") MiB: $([ "$(echo "$pt <= $pb" | bc)" = 1 ] && echo met || echo NOT met)"
echo "target: tight on the reused card <= 0.90 x the map before the tight rule$([ -n "${BEFORE:-}" ] || echo ' (--whole-metadata)'): ${r}x, $([ "$t2" = 1 ] && echo met || echo NOT met)"
