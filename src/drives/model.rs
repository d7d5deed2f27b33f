//! What a drive is, as data: [`Drive`] and its [`Partition`]s, [`Mount`]s, [`Backing`] file,
//! [`Transport`], and the [`Verdict`] with its [`Reason`]s.
//!
//! Apart from the `drives` façade so that the sysfs reader, the verdict and the listing build
//! these types from here and never import each other or the façade.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How a disk is attached, read from where its device sits in the sysfs device tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// USB (a stick, a card reader, an external disk).
    Usb,
    /// An SD card in an MMC/SD host slot (`mmcblkN` with card type `SD`).
    Sd,
    /// Soldered eMMC storage (`mmcblkN` with card type `MMC`): internal, not removable.
    Emmc,
    /// NVMe.
    Nvme,
    /// SATA/PATA through libata.
    Ata,
    /// SCSI, SAS, or anything else behind a SCSI host that is not USB or ATA.
    Scsi,
    /// virtio-blk (a virtual machine's disk).
    Virtio,
    /// A loop device: a file (or another device) in disguise.
    Loop,
    /// An optical drive (`srN`).
    Optical,
    /// A network block device (`nbdN`).
    Nbd,
    /// Anything not recognised.
    Unknown,
}

impl Transport {
    /// The name shown and serialised (`usb`, `sd`, `emmc`, `nvme`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Usb => "usb",
            Transport::Sd => "sd",
            Transport::Emmc => "emmc",
            Transport::Nvme => "nvme",
            Transport::Ata => "ata",
            Transport::Scsi => "scsi",
            Transport::Virtio => "virtio",
            Transport::Loop => "loop",
            Transport::Optical => "optical",
            Transport::Nbd => "nbd",
            Transport::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One use of a block device by the system: a mount, or active swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// Kernel name of the device that is mounted (`sdb1`, `dm-0`, `sdb`).
    pub device: String,
    /// The mount point, or `[swap]` for active swap.
    pub point: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A loop device's backing file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backing {
    /// The path as the kernel reports it (without a trailing ` (deleted)`).
    pub file: PathBuf,
    /// The file was deleted after it was attached (the kernel says ` (deleted)`).
    pub deleted: bool,
    /// Byte offset into the file where the device starts.
    pub offset: u64,
    /// The backing file is itself a block device (kernel name), so the loop device is that
    /// disk in disguise and is judged with it.
    pub block_device: Option<String>,
    /// The disk (kernel name) holding the filesystem the backing file lives on, when found.
    pub on_disk: Option<String>,
}

/// One partition of a disk, as the kernel sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    /// Kernel name (`sdb1`, `mmcblk0p1`, `nvme0n1p2`).
    pub name: String,
    /// Device node (`/dev/sdb1`).
    pub path: PathBuf,
    /// Partition number, when the kernel gives it.
    pub number: Option<u32>,
    /// `major:minor`.
    pub dev: Option<String>,
    /// First byte on the disk.
    pub start: Option<u64>,
    /// Length in bytes.
    pub size: Option<u64>,
    /// Filesystem type as `blkid` names it, when the device could be read and probed.
    pub fs_type: Option<String>,
    /// Filesystem label, when probed and set.
    pub label: Option<String>,
    /// Devices stacked on this partition (`dm-0`: LVM, LUKS, RAID members).
    pub holders: Vec<String>,
    /// Where this partition, or a device stacked on it, is mounted or used as swap.
    pub mounts: Vec<Mount>,
}

/// Why a disk is not offered as a target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// It holds the running system: `/`, `/boot`, `/boot/efi`, `/efi` or `/usr` is mounted
    /// from it (directly or through a device stacked on it), or swap is active on it.
    SystemDisk {
        /// The system mount points (or `[swap]`) it holds.
        points: Vec<String>,
    },
    /// The disk, one of its partitions, or a device stacked on them is mounted or used as
    /// swap (besides any system mount points already named).
    Mounted {
        /// The mounts.
        mounts: Vec<Mount>,
    },
    /// Devices are stacked on the disk or a partition (device-mapper: LVM, LUKS; md RAID):
    /// writing under them corrupts what they present, mounted or not.
    InUseBy {
        /// Kernel names of the holders (`dm-0`, `md127`).
        holders: Vec<String>,
    },
    /// The kernel marks the device read-only (a card's lock switch, a read-only loop device).
    ReadOnly,
    /// Size 0: a card reader without a card, or a device with no medium.
    Empty,
    /// A loop device with nothing attached.
    UnusedLoop,
    /// An optical drive: written by burning software, not block by block.
    Optical,
    /// Neither removable (`/sys/block/X/removable`) nor attached by USB or as an SD card, nor
    /// a loop device: an internal disk, offered only with `--force` (by `flash`).
    NotRemovable,
    /// Smaller than the image needs.
    TooSmall {
        /// The disk's size in bytes.
        size: u64,
        /// Bytes needed (the image's last mapped byte).
        needed: u64,
    },
    /// The image file to be written lives on this disk.
    HoldsImage,
    /// The loop device's backing file is the image itself.
    IsImage,
    /// The loop device is backed by a disk (not a file) that is itself refused.
    BackedBy {
        /// Kernel name of the backing disk.
        disk: String,
        /// Why that disk is refused.
        reasons: Vec<Reason>,
    },
}

impl Reason {
    /// True when `--force` may override it (only [`Reason::NotRemovable`]); every other reason
    /// is a hard refusal.
    pub fn overridable(&self) -> bool {
        match self {
            Reason::NotRemovable => true,
            Reason::BackedBy { reasons, .. } => reasons.iter().all(Reason::overridable),
            _ => false,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::SystemDisk { points } => write!(f, "system disk (holds {})", points.join(", ")),
            Reason::Mounted { mounts } => {
                let list: Vec<String> = mounts
                    .iter()
                    .map(|m| format!("{} on {}", m.device, m.point))
                    .collect();
                write!(f, "mounted ({})", list.join(", "))
            }
            Reason::InUseBy { holders } => write!(f, "in use by {}", holders.join(", ")),
            Reason::ReadOnly => f.write_str("read-only"),
            Reason::Empty => f.write_str("no medium (size 0)"),
            Reason::UnusedLoop => f.write_str("unused loop device"),
            Reason::Optical => f.write_str("optical drive"),
            Reason::NotRemovable => {
                f.write_str("not removable (internal disk; flash needs --force)")
            }
            Reason::TooSmall { size, needed } => write!(
                f,
                "too small ({} < {} needed)",
                crate::util::human_bytes(*size),
                crate::util::human_bytes(*needed)
            ),
            Reason::HoldsImage => f.write_str("holds the image file"),
            Reason::IsImage => f.write_str("its backing file is the image"),
            Reason::BackedBy { disk, reasons } => {
                let list: Vec<String> = reasons.iter().map(Reason::to_string).collect();
                write!(f, "backed by {disk}: {}", list.join("; "))
            }
        }
    }
}

/// Whether a disk is offered as a target, and if not, every reason why. Serialised as
/// `{"offered": bool, "reasons": [{"reason": code, ...}], "messages": [string]}`, the
/// messages being the reasons in words, in the same order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Every reason against the disk, most serious first; empty when it is offered.
    pub reasons: Vec<Reason>,
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            offered: bool,
            reasons: &'a [Reason],
            messages: Vec<String>,
        }
        Out {
            offered: self.offered(),
            reasons: &self.reasons,
            messages: self.reasons.iter().map(Reason::to_string).collect(),
        }
        .serialize(s)
    }
}

impl Verdict {
    /// No reason against it.
    pub fn offered(&self) -> bool {
        self.reasons.is_empty()
    }

    /// Offered once `--force` overrides what it may (a non-removable disk).
    pub fn offered_with_force(&self) -> bool {
        self.reasons.iter().all(Reason::overridable)
    }
}

/// A whole disk as the kernel sees it, with what uses it.
#[derive(Clone, Debug, Serialize)]
pub struct Drive {
    /// Kernel name (`sdb`, `mmcblk0`, `nvme0n1`, `loop3`).
    pub name: String,
    /// Device node (`/dev/sdb`).
    pub path: PathBuf,
    /// `major:minor`.
    pub dev: Option<String>,
    /// Size in bytes (`/sys/block/X/size` × 512; 0 when unknown or no medium).
    pub size: u64,
    /// Logical block size in bytes.
    pub logical_block_size: Option<u64>,
    /// How it is attached.
    pub transport: Transport,
    /// Vendor, when sysfs gives a readable one.
    pub vendor: Option<String>,
    /// Model (for an SD/eMMC card, the card's product name).
    pub model: Option<String>,
    /// Serial number, when sysfs gives one.
    pub serial: Option<String>,
    /// World-wide identifier (WWN/EUI), when sysfs gives one.
    pub wwid: Option<String>,
    /// The kernel's removable flag (`/sys/block/X/removable`).
    pub removable: bool,
    /// The kernel's read-only flag (`/sys/block/X/ro`).
    pub read_only: bool,
    /// Partitions in number order.
    pub partitions: Vec<Partition>,
    /// Filesystem type of the whole disk, when it has no partitions and was probed.
    pub fs_type: Option<String>,
    /// Label of that filesystem.
    pub label: Option<String>,
    /// Devices stacked on the whole disk.
    pub holders: Vec<String>,
    /// Mounts and swap of the disk, its partitions and everything stacked on them.
    pub mounts: Vec<Mount>,
    /// For a loop device, its backing file.
    pub backing: Option<Backing>,
    /// Whether it is offered as a target, and why not.
    pub verdict: Verdict,
}

impl Drive {
    /// Counts as removable for the target rules: the kernel's removable flag, a USB or SD
    /// attachment (USB disks and many SD slots report removable 0), or a loop device (a file
    /// in disguise).
    pub fn counts_as_removable(&self) -> bool {
        self.removable
            || matches!(
                self.transport,
                Transport::Usb | Transport::Sd | Transport::Loop
            )
    }

    /// Vendor and model joined, for display (`"SanDisk Cruzer Blade"`).
    pub fn description(&self) -> String {
        let parts: Vec<&str> = [self.vendor.as_deref(), self.model.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        parts.join(" ")
    }
}
