//! Filesystem probes: recognise a filesystem from its superblock and report its identity.
//!
//! One file per filesystem. Each exposes `pub fn probe(dev: &dyn ReadAt) -> Result<Option<FsInfo>>`
//! where `dev` is the partition (or whole image) as its own source starting at offset 0.
//! `Ok(None)` means "not this filesystem"; a recognised but damaged superblock gives `Some`
//! with warnings (or `Err(Error::Corrupt)` when nothing sensible can be said).

use serde::Serialize;

use crate::source::ReadAt;

pub mod btrfs;
pub mod exfat;
pub mod ext;
pub mod f2fs;
pub mod fat;
pub mod iso9660;
pub mod luks;
pub mod lvm;
pub mod ntfs;
pub mod squashfs;
pub mod swap;
pub mod udf;
pub mod xfs;

/// Identity of a filesystem (or volume format such as LUKS, LVM PV, swap).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FsInfo {
    /// Type name as `blkid` spells it: ext2, ext3, ext4, vfat, exfat, ntfs, xfs, btrfs, f2fs,
    /// swap, squashfs, iso9660, udf, crypto_LUKS, LVM2_member.
    pub fs_type: &'static str,
    /// Volume label, if the format has one and it is set.
    pub label: Option<String>,
    /// UUID or serial, formatted as `blkid` prints it.
    pub uuid: Option<String>,
    /// Size of the filesystem in bytes as its own metadata declares it.
    pub size: Option<u64>,
    /// Allocation unit (block/cluster) size in bytes.
    pub block_size: Option<u32>,
    /// Format version as `blkid` prints it (e.g. "1.0" for ext4, "FAT32", "2").
    pub version: Option<String>,
    /// Notable feature flags ("64bit", "metadata_csum", "needs_recovery", "joliet", ...).
    pub features: Vec<String>,
    /// Boot entries (El Torito), empty for most filesystems.
    pub boot_entries: Vec<BootEntry>,
    /// Problems with this filesystem's metadata a user should know about.
    pub warnings: Vec<String>,
}

/// An El Torito boot catalog entry.
#[derive(Clone, Debug, Serialize)]
pub struct BootEntry {
    /// Platform: "BIOS" (x86), "UEFI" (0xEF), "PowerPC", "Mac", or the hex id.
    pub platform: String,
    /// Entry is marked bootable (0x88).
    pub bootable: bool,
    /// Emulation: "no-emulation", "1.2M floppy", "1.44M floppy", "2.88M floppy", "hard disk".
    pub emulation: String,
    /// Image start as an ISO block (2048 bytes) number.
    pub load_rba: u32,
    /// Sector count (512-byte virtual sectors) as recorded in the entry.
    pub sector_count: u16,
}

/// Tries every probe in an order that avoids false positives (formats whose magic sits deep
/// in the volume are tried before those with weak signatures at offset 0), returning the first
/// match.
pub fn probe_all(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    type Probe = fn(&dyn ReadAt) -> crate::Result<Option<FsInfo>>;
    const PROBES: &[Probe] = &[
        // blkid lets RAID-usage signatures (LVM PV) win over everything else.
        lvm::probe,
        luks::probe_primary,
        swap::probe,
        btrfs::probe,
        xfs::probe,
        ext::probe,
        f2fs::probe,
        squashfs::probe,
        udf::probe,
        iso9660::probe,
        ntfs::probe,
        exfat::probe,
        fat::probe,
        // A lone LUKS2 secondary header is often a leftover under a newer format; only
        // believe it when nothing else claims the device.
        luks::probe,
    ];
    for p in PROBES {
        match p(dev) {
            Ok(Some(info)) => return Ok(Some(info)),
            Ok(None) => {}
            // A short read means the volume is too small for this format's superblock.
            Err(crate::Error::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
