# The restore proof the flash benchmarks run on every target they write, sourced by
# flash_compare.sh and remote_flash.sh. The caller sets: card (the image), loop (the written
# target), p1_start (bytes before partition 1), proof_dir (a scratch directory), ref_fat and
# ref_ext (the reference file hashes, from `hashes`), and the arrays/vars pq and mnt its
# cleanup reads (loop devices and a mount left open if a proof is interrupted).

hashes() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -r sha256sum); }
table() { sfdisk -d "$1" | sed -E -e '/^device:/d' -e 's/^[^ ]+ +: /: /'; }
part() { # device, partition number -> "offset length" in bytes, from the device's own table
  sfdisk -J "$1" | jq -r --argjson n "$2" '.partitiontable | .sectorsize as $s | .partitions[$n - 1] | "\(.start * $s) \(.size * $s)"'
}

proof_result=
proof() { # log file; sets proof_result to PASS or "FAIL (what)" (not in a subshell: cleanup must see pq, mnt)
  local log=$1 fails=() o1 l1 o2 l2 q1 q2
  {
    cmp -n "$p1_start" "$card" "$loop" || fails+=("bytes before partition 1")
    diff <(table "$card") <(table "$loop") || fails+=("sfdisk -d")
    if read -r o1 l1 < <(part "$loop" 1) && read -r o2 l2 < <(part "$loop" 2); then
      q1=$(losetup -f --show -r -o "$o1" --sizelimit "$l1" "$loop"); pq=("$q1")
      q2=$(losetup -f --show -r -o "$o2" --sizelimit "$l2" "$loop"); pq=("$q1" "$q2")
      fsck.vfat -n "$q1" || fails+=("fsck.vfat -n")
      e2fsck -fn "$q2" || fails+=("e2fsck -fn")
      rm -rf "$proof_dir/fat"; mkdir -p "$proof_dir/fat"
      if mcopy -s -n -i "$loop@@$o1" ::/ "$proof_dir/fat/"; then
        [ "$(hashes "$proof_dir/fat")" = "$ref_fat" ] || fails+=("FAT files")
      else fails+=("mcopy"); fi
      if mount -o ro,noload "$q2" "$proof_dir/mnt"; then
        mnt=$proof_dir/mnt
        [ "$(hashes "$mnt")" = "$ref_ext" ] || fails+=("ext4 files")
        umount "$mnt"; mnt=
      else fails+=("mount ext4"); fi
      losetup -d "$q2"; losetup -d "$q1"; pq=()
    else fails+=("no partition table"); fi
  } >"$log" 2>&1
  if [ "${#fails[@]}" = 0 ]; then proof_result=PASS; else local IFS=,; proof_result="FAIL (${fails[*]})"; fi
}
