//! Facts about block devices that keep data safe: which of a device's partitions (or the
//! device-mapper/LVM/LUKS devices stacked on them) are mounted or used as swap.
//!
//! Linux-only, read from `/sys/dev/block` and `/proc/self/mountinfo`, with no udev needed.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// One way a device (or something on it) is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct InUse {
    /// The kernel name of the device in use (`sdb1`, `dm-0`).
    pub(crate) device: String,
    /// Where it is mounted, or `[swap]`.
    pub(crate) mount_point: String,
    /// Mounted read-only.
    pub(crate) read_only: bool,
}

/// `major:minor` of a device number, as the kernel prints it.
fn dev_string(rdev: u64) -> String {
    // glibc's gnu_dev_major/minor encoding.
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    format!("{major}:{minor}")
}

/// The device numbers of `dev` itself, its partitions, and every device stacked on any of
/// them (holders), with their kernel names.
fn family(dev: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut todo = vec![PathBuf::from(format!("/sys/dev/block/{dev}"))];
    while let Some(p) = todo.pop() {
        if out.len() > 4096 {
            break;
        }
        let Ok(real) = fs::canonicalize(&p) else {
            continue;
        };
        let Ok(num) = fs::read_to_string(real.join("dev")) else {
            continue;
        };
        let num = num.trim().to_string();
        if out.iter().any(|(n, _)| *n == num) {
            continue;
        }
        let name = real
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((num, name));
        if let Ok(rd) = fs::read_dir(&real) {
            for e in rd.flatten() {
                if e.path().join("partition").exists() {
                    todo.push(e.path());
                }
            }
        }
        if let Ok(rd) = fs::read_dir(real.join("holders")) {
            for e in rd.flatten() {
                todo.push(e.path());
            }
        }
    }
    out
}

/// Everything that uses the block device at `path`: mounts of it, its partitions or devices
/// stacked on them, and swap. Empty for a regular file.
pub(crate) fn in_use(path: &Path) -> io::Result<Vec<InUse>> {
    let md = fs::metadata(path)?;
    if !md.file_type().is_block_device() {
        return Ok(Vec::new());
    }
    let fam = family(&dev_string(md.rdev()));
    let mut out = Vec::new();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options ...
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(num), Some(mp), Some(opts)) = (f.get(2), f.get(4), f.get(5)) else {
            continue;
        };
        if let Some((_, name)) = fam.iter().find(|(n, _)| n == num) {
            out.push(InUse {
                device: name.clone(),
                mount_point: unescape_octal(mp),
                read_only: opts.split(',').any(|o| o == "ro"),
            });
        }
    }
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let Some(p) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(m) = fs::metadata(unescape_octal(p)) else {
            continue;
        };
        if !m.file_type().is_block_device() {
            continue;
        }
        if let Some((_, name)) = fam.iter().find(|(n, _)| *n == dev_string(m.rdev())) {
            out.push(InUse {
                device: name.clone(),
                mount_point: "[swap]".into(),
                read_only: false,
            });
        }
    }
    Ok(out)
}

/// Undoes the `\040`-style escapes of /proc mount tables.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_and_escapes() {
        assert_eq!(dev_string(0x0801), "8:1");
        assert_eq!(dev_string((259u64 << 8) | 3), "259:3");
        assert_eq!(unescape_octal(r"/mnt/my\040card"), "/mnt/my card");
        assert_eq!(unescape_octal(r"\04"), r"\04");
    }

    #[test]
    fn regular_files_are_never_in_use() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(in_use(f.path()).unwrap().is_empty());
    }
}
