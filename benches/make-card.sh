#!/usr/bin/env bash
# Builds a reused SD card image for the whole-process benchmarks: SIZE (default 4G), MBR,
# FAT32 boot (256 MiB) + ext4 root filling the rest, USED_MB (default 400) of files (half real
# system files copied from this machine, half incompressible photos; 34 MB in the boot partition), and
# free space full of old random data (the card was used before), so nothing is sparse.
#   usage: make-card.sh OUT.img [SIZE] [USED_MB]      (needs root for the ext4 loop mount)
#   env:   FRESH=1  build it the way image builders do instead: on a sparse file, no old data,
#                   mkfs.ext4 with its defaults (its discard punches the inode tables out as
#                   holes and flags them zeroed), so only what was written is allocated.
set -euo pipefail
out=$1; size=${2:-4G}; used_mb=${3:-400}
work=$(mktemp -d)
trap 'umount "$work/mnt" 2>/dev/null || true; [ -n "${lp:-}" ] && losetup -d "$lp" 2>/dev/null; rm -rf "$work"' EXIT
export MTOOLS_SKIP_CHECK=1
truncate -s "$size" "$out"
if [ -z "${FRESH:-}" ]; then
  # Old data everywhere first: a card is never blank.
  # (openssl dies of SIGPIPE when dd has enough: expected, hence the `|| true`.)
  { openssl enc -aes-128-ctr -nosalt -pass pass:oldcard -in /dev/zero 2>/dev/null || true; } \
    | dd of="$out" bs=4M count=$(( $(stat -c %s "$out") / (4<<20) )) iflag=fullblock conv=notrunc status=none
fi
sfdisk -q "$out" <<'SF'
label: dos
start=8192, size=524288, type=c, bootable
start=532480, type=83
SF
total=$(stat -c %s "$out")
p2_bytes=$(( total - 532480*512 ))
# FAT32 boot partition, filled with mtools.
mkfs.vfat -F 32 -s 1 -n bootfs --offset 8192 "$out" $(( 524288 / 2 )) >/dev/null 2>&1
head -c $((30<<20)) /dev/urandom > "$work/kernel8.img"
for i in $(seq 1 40); do head -c 100000 /dev/urandom > "$work/dtb$i.dtb"; done
mcopy -i "$out@@$((8192*512))" "$work/kernel8.img" "$work"/dtb*.dtb ::
# ext4 root: mount through a loop device and copy real files in.
if [ -z "${FRESH:-}" ]; then ext_opts=lazy_itable_init=0,nodiscard; else ext_opts=discard; fi
mkfs.ext4 -q -F -L rootfs -E offset=$((532480*512)),$ext_opts "$out" $(( p2_bytes / 1024 ))k
mkdir -p "$work/mnt"
lp=$(losetup -f --show -o $((532480*512)) --sizelimit "$p2_bytes" "$out")
mount "$lp" "$work/mnt"
mkdir -p "$work/mnt/usr" "$work/mnt/home/pi/photos" "$work/mnt/etc"
# Half the files are real, compressible system files (libraries, binaries, text) copied from
# this machine; the other half incompressible "photos". Deterministic order, sizes capped.
real_mb=$(( used_mb / 2 ))
( cd / && find usr/lib/x86_64-linux-gnu usr/share usr/bin -xdev -type f -size -8M -printf '%s\t%p\n' 2>/dev/null | sort -t"$(printf '\t')" -k2 ) \
  | awk -F'\t' -v budget=$(( real_mb << 20 )) '{ if (t + $1 <= budget) { t += $1; print $2 } }' \
  | tar -C / -cf - -T - 2>/dev/null | tar -C "$work/mnt" -xf -
# Photos make up the rest (also when this machine has fewer real files than asked for).
left=$(( used_mb - 34 - $(du -sm "$work/mnt" | cut -f1) ))
i=0
while [ "$left" -gt 0 ]; do
  n=$(( left < 16 ? left : 16 ))
  head -c $(( n << 20 )) /dev/urandom > "$work/mnt/home/pi/photos/img$i.jpg"
  left=$(( left - n )); i=$((i+1))
done
for j in $(seq 1 2000); do echo "config line $j" > "$work/mnt/etc/conf$j"; done
sync
umount "$work/mnt"; losetup -d "$lp"; lp=
echo "made $out: $(stat -c %s "$out") bytes, ~${used_mb} MB of files" >&2
