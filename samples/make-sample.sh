#!/usr/bin/env bash
# Builds samples/card.img.xz: a small but real Raspberry-Pi-style SD card image, made only by
# stock Debian tools (sfdisk, mkfs.vfat, mtools, mkfs.ext4), so `blockwise demo` and the tests
# have something true to chew on without network or root.
#
#   MBR, disk id 0x5eed0001
#   bootloader blob at sector 16 (64 KiB, like Allwinner/Rockchip U-Boot before partition 1)
#   p1  FAT32 "bootfs"  48 MiB at 4 MiB  (type 0x0c, active)   config.txt, cmdline.txt, kernel, dtb
#   p2  ext4  "rootfs"  rest of 128 MiB  (type 0x83)            a few files; one deleted file's
#                                                               data left in free blocks (needs root)
#
# Contents are deterministic (seeded pseudo-random bytes, fixed UUIDs, fake time). Rerun only
# when the sample must change; commit the resulting card.img.xz.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'umount "$work/mnt" 2>/dev/null || true; [ -n "${loop:-}" ] && losetup -d "$loop" 2>/dev/null; rm -rf "$work"' EXIT
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000 MTOOLS_SKIP_CHECK=1

prng() { # prng SEED BYTES > file   (deterministic filler that does not compress)
  python3 -c 'import random,sys; r=random.Random(int(sys.argv[1])); sys.stdout.buffer.write(r.randbytes(int(sys.argv[2])))' "$1" "$2"
}

img=$work/card.img
truncate -s 128M "$img"
sfdisk -q "$img" <<'SF'
label: dos
label-id: 0x5eed0001
start=8192, size=98304, type=c, bootable
start=106496, type=83
SF
prng 16 65536 | dd of="$img" bs=512 seek=16 conv=notrunc status=none

# Boot partition: FAT32, filled with mtools (vfat cannot be mounted here).
boot=$work/boot.vfat
truncate -s 48M "$boot"
mkfs.vfat -F 32 -n bootfs -i 5eedb007 "$boot" >/dev/null
printf 'arm_64bit=1\nenable_uart=1\nkernel=kernel8.img\n' > "$work/config.txt"
printf 'console=serial0,115200 root=LABEL=rootfs rootfstype=ext4 fsck.repair=yes rootwait\n' > "$work/cmdline.txt"
prng 1 1572864 > "$work/kernel8.img"
prng 2 32768 > "$work/bcm2711-rpi-4-b.dtb"
mmd -i "$boot" ::overlays
mcopy -i "$boot" "$work/config.txt" "$work/cmdline.txt" "$work/kernel8.img" "$work/bcm2711-rpi-4-b.dtb" ::
mcopy -i "$boot" "$work/config.txt" ::overlays/README
dd if="$boot" of="$img" bs=512 seek=8192 conv=notrunc status=none

# Root partition: ext4 from a directory tree.
root=$work/rootfs
mkdir -p "$root/etc" "$root/usr/bin" "$root/home/pi" "$root/var/log"
echo demo-pi > "$root/etc/hostname"
printf 'LABEL=rootfs / ext4 defaults,noatime 0 1\nLABEL=bootfs /boot/firmware vfat defaults 0 2\n' > "$root/etc/fstab"
prng 3 1048576 > "$root/usr/bin/app"
for i in $(seq 1 200); do echo "line $i: the quick brown fox jumps over the lazy dog"; done > "$root/home/pi/notes.txt"
for i in $(seq 1 5000); do echo "Nov 23 12:00:$((i % 60)) demo-pi app[42]: heartbeat $i ok"; done > "$root/var/log/app.log"
rootimg=$work/root.ext4
size_sectors=$(( 262144 - 106496 ))
truncate -s $(( size_sectors * 512 )) "$rootimg"
mkfs.ext4 -q -F -L rootfs -U 5eed0000-0000-4000-8000-00000000f00d \
  -E root_owner=0:0,hash_seed=5eed0000-0000-4000-8000-0000000000aa -d "$root" "$rootimg"
# Old data in free space: what a reused card looks like. Needs a loop mount (root).
if [ "$(id -u)" = 0 ] && mkdir -p "$work/mnt" && loop=$(losetup -f --show "$rootimg" 2>/dev/null) \
   && mount "$loop" "$work/mnt" 2>/dev/null; then
  prng 4 1048576 > "$work/mnt/home/pi/old-photo.jpg"
  sync
  rm "$work/mnt/home/pi/old-photo.jpg"
  umount "$work/mnt"
  losetup -d "$loop"; loop=
  e2fsck -fy "$rootimg" >/dev/null || true
else
  echo "note: not root or no loop device: sample made without deleted data in free space" >&2
fi
dd if="$rootimg" of="$img" bs=512 seek=106496 conv=notrunc status=none

xz -9 -T1 -c "$img" > card.img.xz.tmp
mv card.img.xz.tmp card.img.xz
sha256sum "$img" | sed 's#  .*#  card.img#' > card.img.sha256
ls -l card.img.xz
