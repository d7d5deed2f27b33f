#!/usr/bin/env bash
# Builds the fixture of the ext cross-check property test and fuzz target:
#   ext-xcheck.img.xz  an 8 MiB ext4 (1 KiB blocks, 8 groups, metadata_csum, flex_bg) made by
#                      mke2fs -d from a seeded tree: block-mapped and extent files, a sparse
#                      file with an extent index node, an xattr block, slow symlinks, a journal
#   ext-xcheck.refs    every block its inodes reference (data, extent tree, xattr, journal),
#                      as "first-last" lines, read with debugfs: the truth the map must cover
#                      whatever happens to the bitmaps and group flags.
# Needs e2fsprogs, python3 and xz. Usage: tests/data/make-ext-xcheck.sh (from anywhere).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src=$work/src
mkdir -p "$src/etc" "$src/usr/lib/a" "$src/usr/lib/b" "$src/home"
python3 - "$src" <<'PY'
import os, random, sys
root = sys.argv[1]
r = random.Random(20261201)
def blob(n, tag):
    # Non-zero (so mke2fs stores every block) and compressible (so the fixture stays small).
    line = (tag + ' ').encode() * 8
    return (line * (n // len(line) + 1))[:n]
def put(rel, n):
    with open(os.path.join(root, rel), 'wb') as f:
        f.write(blob(n, rel))
for i in range(30):
    put(f'etc/conf{i}', r.randrange(50, 3000))
for d in 'ab':
    for i in range(6):
        put(f'usr/lib/{d}/lib{i}.so', r.randrange(2000, 90000))
put('home/photo.jpg', 900_000)
put('home/big.bin', 1_500_000)
with open(os.path.join(root, 'home/sparse.bin'), 'wb') as f:
    for i in range(24):
        f.seek(i * 32768)
        f.write(blob(2048, f'island {i}'))
os.symlink('usr/lib/a/' + 'x' * 80, os.path.join(root, 'slow'))
os.symlink('etc/conf1', os.path.join(root, 'fast'))
PY
img=$work/ext-xcheck.img
mke2fs -q -F -t ext4 -b 1024 -g 1024 -N 512 -E lazy_itable_init=0,root_owner=0:0 \
  -U 5eed0000-0000-4000-8000-0000000e4c0c -d "$src" "$img" 8M
debugfs -w -R "ea_set /home/photo.jpg user.note $(printf 'n%.0s' $(seq 400))" "$img" 2>/dev/null
# Every in-use inode's blocks: the files of the tree, the root and lost+found, the journal.
{
  echo "/"; echo "/lost+found"; echo "<8>"
  (cd "$src" && find . -mindepth 1 | sed 's#^\.##')
} | while read -r p; do
  debugfs -R "stat \"$p\"" "$img" 2>/dev/null \
    | python3 -c '
import re, sys
t = sys.stdin.read()
acl = re.search(r"File ACL: (\d+)", t)
if acl and acl.group(1) != "0": print(acl.group(1) + "-" + acl.group(1))
for m in re.finditer(r"\((?:[^)]*)\):(\d+)(?:-(\d+))?", t):
    print(m.group(1) + "-" + (m.group(2) or m.group(1)))
'
done | sort -n -t- -k1,1 -u > "$here/ext-xcheck.refs"
e2fsck -fn "$img" >/dev/null 2>&1
xz -9e -T1 -c "$img" > "$here/ext-xcheck.img.xz"
echo "made ext-xcheck.img.xz ($(stat -c %s "$here/ext-xcheck.img.xz") bytes) and $(wc -l < "$here/ext-xcheck.refs") reference ranges" >&2
