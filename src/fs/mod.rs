//! Filesystem probes: recognise a filesystem from its superblock and report its identity.
//!
//! One file per filesystem. Each exposes `pub fn probe(dev: &dyn ReadAt) -> Result<Option<FsInfo>>`
//! where `dev` is the partition (or whole image) as its own source starting at offset 0.
//! `Ok(None)` means "not this filesystem"; a recognised but damaged superblock gives `Some`
//! with warnings (or `Err(Error::Corrupt)` when nothing sensible can be said).

use serde::Serialize;

use crate::extent::ExtentMap;
use crate::io::ReadAt;

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
pub(crate) mod xcheck;
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

impl FsInfo {
    /// Records the size the filesystem declares, warning when it is larger than the volume
    /// holding it (the usual sign of a truncated image).
    pub(crate) fn declare_size(&mut self, bytes: u64, volume: u64) {
        self.size = Some(bytes);
        self.warn_if_larger(bytes, volume);
    }

    /// Warns when `bytes` claimed by the filesystem exceed the `volume` holding it.
    pub(crate) fn warn_if_larger(&mut self, bytes: u64, volume: u64) {
        if bytes > volume {
            self.warnings.push(format!(
                "filesystem claims {bytes} bytes but the volume is only {volume}: truncated?"
            ));
        }
    }
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

/// Which bytes of a volume its filesystem needs: everything except what the filesystem's own
/// allocation metadata says is free (the skip rule in `spec/safety.md`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    /// Byte ranges the volume needs, relative to the volume's first byte.
    pub used: ExtentMap,
    /// True when the map comes from the filesystem's allocation metadata; false when every
    /// byte was kept because the format is opaque (LUKS, LVM, unknown) or could not be read.
    pub from_fs: bool,
    /// Why blocks were kept that might be free, or what looked wrong.
    pub warnings: Vec<String>,
    /// How the allocation map was checked against the filesystem's file metadata, and what
    /// that check added back; `None` when the map was not cross-checked.
    pub cross_check: Option<CrossCheck>,
    /// Bytes of the volume past the filesystem's declared end, kept because nothing says they
    /// are free (included in `used`, but not the filesystem's own use).
    pub beyond_fs: u64,
}

/// The result of checking a filesystem's allocation map against its file metadata (the
/// bounded-loss guarantee in `spec/safety.md`): every block a file, directory or metadata
/// structure references is kept, even where the allocation map calls it free.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CrossCheck {
    /// What the map was checked against, in words ("inode walk: 3598 inodes, 41 tree
    /// blocks"; "directory tree: 120 entries").
    pub against: String,
    /// Bytes the metadata references that the allocation map calls free, added to `used`.
    pub added: u64,
    /// Where those bytes are, in words ("groups 3, 7"), empty when nothing was added.
    pub added_where: String,
    /// Set when the check could not be finished (a cap was reached, metadata unreadable):
    /// what was kept whole instead, in words.
    pub incomplete: Option<String>,
}

impl Usage {
    /// Every byte of a volume of `size` bytes is needed, for the reason given.
    pub fn everything(size: u64, why: impl Into<String>) -> Usage {
        Usage {
            used: ExtentMap::single(0, size),
            from_fs: false,
            warnings: vec![why.into()],
            ..Default::default()
        }
    }
}

/// Why a filesystem's map is not cross-checked against file metadata (said by `inspect`):
/// for these formats the map is either the whole volume, or used only in a state where the
/// filesystem's own tools trust it (`spec/safety.md`).
pub fn unchecked_reason(fs_type: &str) -> &'static str {
    match fs_type {
        "xfs" => "XFS free-space B+trees, used only when the log is clean",
        "btrfs" => "btrfs chunks: every allocated chunk is kept whole",
        "f2fs" => "F2FS segment table, used only after a clean-unmount checkpoint",
        "swap" => "swap: only the header page holds data",
        "squashfs" | "squashfs3" | "iso9660" | "udf" => "read-only image: its whole extent is kept",
        _ => "no file metadata is read for this format",
    }
}

/// The bytes of `dev` that the filesystem `info` (from [`probe_all`]) needs.
///
/// Never fails: when the allocation metadata cannot be read the whole volume is kept, with a
/// warning. Bytes of the volume past the filesystem's declared size are kept too: nothing
/// says they are free.
pub fn usage(dev: &dyn ReadAt, info: &FsInfo) -> Usage {
    type UsedFn = fn(&dyn ReadAt) -> crate::Result<Usage>;
    let size = dev.size();
    let f: UsedFn = match info.fs_type {
        "ext2" | "ext3" | "ext4" | "ext4dev" => ext::used,
        "vfat" => fat::used,
        "exfat" => exfat::used,
        "ntfs" => ntfs::used,
        "xfs" => xfs::used,
        "btrfs" => btrfs::used,
        "f2fs" => f2fs::used,
        "swap" => swap::used,
        "squashfs" | "squashfs3" => squashfs::used,
        "iso9660" => iso9660::used,
        "udf" => udf::used,
        other => {
            return Usage::everything(
                size,
                format!("{other}: contents are opaque to blockwise; every block is kept"),
            )
        }
    };
    let mut u = match f(dev) {
        Ok(u) => u,
        Err(e) => {
            return Usage::everything(
                size,
                format!(
                    "{}: allocation map unreadable ({e}); every block is kept",
                    info.fs_type
                ),
            )
        }
    };
    if let Some(fs_size) = info.size {
        if fs_size < size {
            let tail = ExtentMap::single(fs_size, size);
            u.beyond_fs = tail.subtract(&u.used).total();
            u.used = u.used.union(&tail);
        }
    }
    u.used = u.used.clip(size);
    u
}
