#!/usr/bin/env python3
"""A counterfeit SD card for the flash tests, as a FUSE file system holding one file, `card`.

    fake-card.py BACKING MOUNTPOINT SIZE

`card` reports SIZE bytes but holds only as many as BACKING does: every read and write at an
offset past that lands at the offset modulo BACKING's size, the way fake cards wrap their
writes onto the flash they really have. A loop device over MOUNTPOINT/card is then a card
that lies about its capacity. Runs in the foreground until unmounted (fusermount -u).
Needs python3-fusepy (and libfuse2).
"""
import errno
import os
import stat
import sys

try:  # Debian's python3-fusepy names the module fusepy; pip's fusepy names it fuse.
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:
    from fuse import FUSE, FuseOSError, Operations


class FakeCard(Operations):
    def __init__(self, backing, size):
        self.fd = os.open(backing, os.O_RDWR)
        self.real = os.fstat(self.fd).st_size
        self.size = size

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == "/card":
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": self.size}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "card"]

    def open(self, path, flags):
        return 0

    def read(self, path, length, offset, fh):
        out = bytearray()
        while length > 0 and offset < self.size:
            at = offset % self.real
            n = min(length, self.real - at, self.size - offset)
            out += os.pread(self.fd, n, at)
            offset += n
            length -= n
        return bytes(out)

    def write(self, path, data, offset, fh):
        done = 0
        while done < len(data):
            at = (offset + done) % self.real
            n = min(len(data) - done, self.real - at)
            os.pwrite(self.fd, data[done:done + n], at)
            done += n
        return len(data)

    def truncate(self, path, length, fh=None):
        return 0

    def flush(self, path, fh):
        return 0

    def fsync(self, path, datasync, fh):
        os.fsync(self.fd)
        return 0


if __name__ == "__main__":
    backing, mountpoint, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    FUSE(FakeCard(backing, size), mountpoint, foreground=True, direct_io=True)
