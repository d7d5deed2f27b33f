//! The listing: every disk of a [`SysRoot`] with its facts, the labels of what it holds
//! (probed when the device can be read) and its [`Verdict`](super::model::Verdict).

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::model::{Drive, Transport};
use super::sysfs::{Host, SysRoot};
use super::verdict::{judge, Check};
use crate::io::blockdev::BlockDevice;
use crate::io::{FileSource, ReadAt};

/// Whether an entry of `/sys/block` is a disk to list. Stacked devices (`dm-*`, `md*`) are
/// not: they show as holders of the disks under them. RAM disks (`ram*`, `zram*`) are, and
/// judged like any disk: internal (not removable), and refused while they hold swap.
pub fn is_listed(name: &str) -> bool {
    !["dm-", "md"].iter().any(|p| name.starts_with(p))
}

/// The filesystem type and label at `path` (a block device, or a regular file in a fixture
/// tree), when it can be opened and something is recognised; otherwise nothing.
fn probe(path: &Path) -> Option<(String, Option<String>)> {
    let md = fs::metadata(path).ok()?;
    let src: Box<dyn ReadAt> = if md.file_type().is_block_device() {
        Box::new(BlockDevice::open(path).ok()?)
    } else if md.is_file() {
        Box::new(FileSource::open(path).ok()?)
    } else {
        return None;
    };
    if src.size() == 0 {
        return None;
    }
    let info = crate::fs::probe_all(&*src).ok()??;
    Some((info.fs_type.name().to_string(), info.label))
}

/// Fills in the filesystem types and labels of a drive's partitions (or of the whole disk
/// when it has none), where the devices can be read.
fn probe_labels(d: &mut Drive) {
    if d.size == 0 || (d.transport == Transport::Loop && d.backing.is_none()) {
        return;
    }
    if d.partitions.is_empty() {
        if let Some((t, l)) = probe(&d.path) {
            d.fs_type = Some(t);
            d.label = l;
        }
    }
    for p in &mut d.partitions {
        if p.size == Some(0) {
            continue;
        }
        if let Some((t, l)) = probe(&p.path) {
            p.fs_type = Some(t);
            p.label = l;
        }
    }
}

/// One drive of `host` with its labels and verdict.
fn complete(host: &Host, name: &str, check: &Check) -> Option<Drive> {
    let mut d = host.drive(name)?;
    probe_labels(&mut d);
    d.verdict = judge(&d, host, check);
    Some(d)
}

/// Every disk under `root` (see [`is_listed`]), in name order, each with its verdict for
/// `check`. Offered drives are those whose `verdict.offered()`.
pub fn list(root: &SysRoot, check: &Check) -> Vec<Drive> {
    let host = Host::read(root);
    host.disk_names()
        .iter()
        .filter(|n| is_listed(n))
        .filter_map(|n| complete(&host, n, check))
        .collect()
}

/// The disk a target path names (`/dev/sdb`, or a fixture's `dev/sdb`), with its verdict for
/// `check`; `None` when it is not a whole disk of `root` (a partition, a regular file, a
/// stacked device).
pub fn find(root: &SysRoot, target: &Path, check: &Check) -> Option<Drive> {
    let host = Host::read(root);
    // A path under the root's dev directory is named as if it were under `/dev`.
    let as_dev = match target.strip_prefix(&root.dev) {
        Ok(rest) if root.dev != Path::new("/dev") => Path::new("/dev").join(rest),
        _ => target.to_path_buf(),
    };
    let name = host.name_of_node(&as_dev)?;
    if !is_listed(&name) {
        return None;
    }
    complete(&host, &name, check)
}
