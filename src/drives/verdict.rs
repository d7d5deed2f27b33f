//! The target rules, in one place: why a disk is not offered as a target ([`judge`]).
//! `drives` lists every disk with its verdict; `flash` asks the same question of the targets
//! it was given, with the image's path and the size it needs ([`Check`]).
//!
//! The rules (`spec/safety.md`, *Targets*): a disk is refused when it holds the running system
//! (`/`, `/boot`, `/boot/efi`, `/efi`, `/usr` or active swap, through any partition or stacked
//! device), when it or anything on it is mounted, when devices are stacked on it (LVM, LUKS,
//! RAID), when it is read-only, empty (no medium), an optical drive, an unused loop device,
//! smaller than needed, when it holds the image file, or when it is a loop device over the
//! image itself or over a refused disk. A disk that does not count as removable is refused
//! unless forced ([`Reason::overridable`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::model::{Drive, Mount, Reason, Transport, Verdict};
use super::sysfs::Host;

/// Mount points that make the disk under them the system disk.
pub const SYSTEM_POINTS: &[&str] = &["/", "/boot", "/boot/efi", "/efi", "/usr"];

/// How deep a chain of loop devices over loop devices is followed.
const MAX_BACKING_DEPTH: usize = 8;

/// What the caller intends, beyond the fixed rules: the size the target must have and the
/// image that will be written to it.
#[derive(Clone, Debug, Default)]
pub struct Check {
    /// Refuse disks smaller than this many bytes (the image's last mapped byte).
    pub min_size: Option<u64>,
    /// The image file to be written: the disk holding it is refused, and so is a loop device
    /// over it.
    pub image: Option<PathBuf>,
}

/// The system mount points (and `[swap]`) on the disk `name`.
fn system_points(name: &str, host: &Host) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in host.mounts() {
        let system = m.point == "[swap]" || SYSTEM_POINTS.contains(&m.point.as_str());
        if system
            && !out.contains(&m.point)
            && host.disks_under(&m.device).iter().any(|d| d == name)
        {
            out.push(m.point.clone());
        }
    }
    out
}

/// Whether `a` and `b` are the same file (device and inode), or failing that the same path.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// Every reason the disk `drive` (read from `host`) is not a safe target for `check`; an
/// empty verdict means it is offered.
pub fn judge(drive: &Drive, host: &Host, check: &Check) -> Verdict {
    judge_at(drive, host, check, 0)
}

fn judge_at(drive: &Drive, host: &Host, check: &Check, depth: usize) -> Verdict {
    let mut reasons = Vec::new();
    if drive.transport == Transport::Loop && drive.backing.is_none() {
        return Verdict {
            reasons: vec![Reason::UnusedLoop],
        };
    }
    let system = system_points(&drive.name, host);
    if !system.is_empty() {
        reasons.push(Reason::SystemDisk {
            points: system.clone(),
        });
    }
    let mounts: Vec<Mount> = drive
        .mounts
        .iter()
        .filter(|m| !system.contains(&m.point))
        .cloned()
        .collect();
    if !mounts.is_empty() {
        reasons.push(Reason::Mounted { mounts });
    }
    let mut holders = drive.holders.clone();
    for p in &drive.partitions {
        holders.extend(p.holders.iter().cloned());
    }
    holders.sort();
    holders.dedup();
    if !holders.is_empty() {
        reasons.push(Reason::InUseBy { holders });
    }
    if drive.read_only {
        reasons.push(Reason::ReadOnly);
    }
    if drive.size == 0 {
        reasons.push(Reason::Empty);
    }
    if drive.transport == Transport::Optical {
        reasons.push(Reason::Optical);
    }
    if let Some(b) = &drive.backing {
        if let Some(dev) = &b.block_device {
            for disk in host.disks_under(dev) {
                let under = match host.drive(&disk) {
                    Some(d) if depth < MAX_BACKING_DEPTH => {
                        judge_at(&d, host, check, depth + 1).reasons
                    }
                    Some(_) => vec![Reason::InUseBy {
                        holders: vec![drive.name.clone()],
                    }],
                    None => Vec::new(),
                };
                if !under.is_empty() {
                    reasons.push(Reason::BackedBy {
                        disk,
                        reasons: under,
                    });
                }
            }
        }
        if let Some(img) = &check.image {
            if same_file(&b.file, img) {
                reasons.push(Reason::IsImage);
            }
        }
    }
    if let Some(img) = &check.image {
        if host.disks_of_path(img).contains(&drive.name) {
            reasons.push(Reason::HoldsImage);
        }
    }
    if let Some(needed) = check.min_size {
        if drive.size > 0 && drive.size < needed {
            reasons.push(Reason::TooSmall {
                size: drive.size,
                needed,
            });
        }
    }
    if !drive.counts_as_removable() && drive.transport != Transport::Optical {
        reasons.push(Reason::NotRemovable);
    }
    Verdict { reasons }
}
