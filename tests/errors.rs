//! Errors as users see them: each cause said once, naming the file; a source that breaks
//! inside its size is a read error naming the offset, never taken for "no filesystem".

mod common;

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use blockwise::format::{open_source, OpenOptions};
use blockwise::io::{MemSource, ReadAt};

/// Runs `blockwise inspect path`, expecting failure; returns stderr.
fn inspect_fails(path: &Path) -> String {
    let out = common::blockwise()
        .arg("inspect")
        .arg(path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

/// The error names `path` and says `cause` exactly once.
fn assert_once(stderr: &str, path: &Path, cause: &str) {
    assert!(
        stderr.contains(&path.display().to_string()),
        "does not name the file: {stderr}"
    );
    assert_eq!(
        stderr.matches(cause).count(),
        1,
        "{cause:?} not said exactly once: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn cli_errors_name_the_file_and_say_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.img");
    let e = inspect_fails(&missing);
    assert_once(&e, &missing, "No such file or directory");
    assert!(!e.contains("I/O error"), "{e}");

    // A pipe has no length and no pread: it used to read as an empty image (and `flash`
    // "succeeded", writing nothing). The check is made before it is opened, so nothing
    // waits for a writer.
    let fifo = dir.path().join("stream.img");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        let e = inspect_fails(&fifo);
        assert_once(&e, &fifo, "a pipe, socket or character device");
    }

    let gz = dir.path().join("bad.img.gz");
    std::fs::write(
        &gz,
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbagegarbage",
    )
    .unwrap();
    let e = inspect_fails(&gz);
    assert_once(&e, &gz, "gzip stream corrupt");
    assert_once(&e, &gz, "corrupt deflate stream");

    let xz = dir.path().join("bad.img.xz");
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 6);
    enc.write_all(&common::seeded_bytes(64 << 10, 7)).unwrap();
    let mut bytes = enc.finish().unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&xz, &bytes).unwrap();
    let e = inspect_fails(&xz);
    assert_once(&e, &xz, "xz stream corrupt or truncated");
}

/// An MBR disk of `mib` MiB with one Linux partition of `sectors` sectors at 1 MiB.
fn mbr_disk(mib: usize, sectors: u32) -> Vec<u8> {
    let mut img = vec![0u8; mib << 20];
    img[510] = 0x55;
    img[511] = 0xaa;
    let e = &mut img[446..462];
    e[4] = 0x83;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors.to_le_bytes());
    img
}

/// A disk whose reads break inside its size: either failing with `UnexpectedEof` (what a
/// truncated or corrupt compressed stream reports) or ending early (`Ok(0)`).
struct BreaksAt {
    inner: MemSource,
    from: u64,
    fail: bool,
}

impl ReadAt for BreaksAt {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.from {
            return if self.fail {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "stream truncated here",
                ))
            } else {
                Ok(0)
            };
        }
        let n = buf.len().min((self.from - offset) as usize);
        self.inner.read_at(offset, &mut buf[..n])
    }
}

#[test]
fn a_source_breaking_inside_a_partition_is_a_read_error_not_no_filesystem() {
    for fail in [true, false] {
        let src = Arc::new(BreaksAt {
            inner: MemSource(mbr_disk(8, 12288)),
            from: (1 << 20) + 700,
            fail,
        });
        let r = blockwise::report::inspect_source(src, None, "t").unwrap();
        let p = &r.partitions[0];
        assert!(p.filesystem.is_none());
        let e = p.probe_error.as_deref().unwrap_or_else(|| {
            panic!("fail={fail}: a broken read was taken for no filesystem: {r:?}")
        });
        // Named in the image's offsets: the partition starts at 1 MiB.
        assert!(e.contains("read error at byte 1048576"), "{e}");
        if fail {
            assert!(e.contains("stream truncated here"), "{e}");
        } else {
            assert!(e.contains("ends at byte 700, inside its size"), "{e}");
        }
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("partition 1: read error at byte 1048576")),
            "{:?}",
            r.warnings
        );
    }
}

/// A gzip stream cut inside a partition, opened as `bmap` and `backup` open (the size taken
/// from the gzip size field, not learnt by decoding at open): the partition's probe reports
/// the broken stream with an offset.
#[test]
fn a_truncated_gzip_inside_a_partition_is_a_read_error() {
    use flate2::{Compress, Compression, FlushCompress};
    let disk = mbr_disk(8, 12288);
    let cut = (1 << 20) + 1100;
    let mut c = Compress::new(Compression::best(), false);
    let mut deflate = Vec::with_capacity(64 << 10);
    c.compress_vec(&disk[..cut], &mut deflate, FlushCompress::Full)
        .unwrap();
    assert_eq!(
        c.total_in() as usize,
        cut,
        "the output buffer was too small"
    );
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    gz.extend_from_slice(&deflate);
    // A stored block that says 65535 bytes follow but holds 4: the file ends in a truncated
    // stream whose last 4 bytes, read as the gzip size field, give the disk's size.
    gz.extend_from_slice(&[0x00, 0xff, 0xff, 0x00, 0x00]);
    gz.extend_from_slice(&(disk.len() as u32).to_le_bytes());

    let opened = open_source(
        Arc::new(MemSource(gz)),
        "cut.img.gz",
        &OpenOptions::deferred(),
    )
    .unwrap();
    let scan = blockwise::scan::scan(&opened).unwrap();
    assert_eq!(scan.layout.partitions.len(), 1);
    let v = &scan.volumes[0];
    assert!(v.fs.is_none());
    let e = v
        .probe_error
        .as_deref()
        .expect("a truncated stream was taken for no filesystem");
    assert!(e.contains("read error at byte"), "{e}");
    assert!(e.contains("gzip stream corrupt or truncated"), "{e}");
}

/// A partition too small for any superblock is simply "no filesystem", with no error.
#[test]
fn a_tiny_partition_is_no_filesystem_without_an_error() {
    let src = Arc::new(MemSource(mbr_disk(2, 2)));
    let r = blockwise::report::inspect_source(src, None, "t").unwrap();
    let p = &r.partitions[0];
    assert_eq!(p.size, 1024);
    assert!(p.filesystem.is_none());
    assert_eq!(p.probe_error, None);
    assert!(
        !r.warnings.iter().any(|w| w.starts_with("partition 1")),
        "{:?}",
        r.warnings
    );
}
