//! What a filesystem is and what it uses, as data: [`FsType`] (from one list), [`FsInfo`]
//! and its [`BootEntry`]s, and [`Usage`] with its [`CrossCheck`].
//!
//! Apart from the `fs` façade (`fs/mod.rs`, which re-exports them and holds the driver table
//! that names every filesystem's `probe` and `used`) so that the filesystem readers build these
//! types from here and the readers and the façade never import each other.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::extent::ExtentMap;

/// Defines [`FsType`] from one list, so its variants, [`FsType::ALL`] and the `blkid` names
/// cannot drift apart.
macro_rules! fs_types {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A filesystem or volume format blockwise recognises. Shown and serialised as
        /// `blkid` names it ([`FsType::name`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum FsType {
            $($(#[$doc])* $variant,)*
        }

        impl FsType {
            /// Every type, for tables and tests that must cover them all.
            pub const ALL: &'static [FsType] = &[$(FsType::$variant,)*];

            /// The name `blkid` gives the type (its `TYPE=`), which the JSON output carries.
            pub const fn name(self) -> &'static str {
                match self {
                    $(FsType::$variant => $name,)*
                }
            }
        }
    };
}

fs_types! {
    /// ext2: no journal, only ext2's features.
    Ext2 => "ext2",
    /// ext3: a journal, only ext3's features.
    Ext3 => "ext3",
    /// ext4 (anything newer than ext3).
    Ext4 => "ext4",
    /// ext4 with the test-filesystem flag set.
    Ext4Dev => "ext4dev",
    /// An external ext3/ext4 journal device.
    Jbd => "jbd",
    /// FAT12, FAT16 or FAT32.
    Vfat => "vfat",
    /// exFAT.
    Exfat => "exfat",
    /// NTFS.
    Ntfs => "ntfs",
    /// XFS.
    Xfs => "xfs",
    /// An external XFS log device.
    XfsExternalLog => "xfs_external_log",
    /// btrfs.
    Btrfs => "btrfs",
    /// F2FS.
    F2fs => "f2fs",
    /// A swap area.
    Swap => "swap",
    /// A swap area holding a hibernation image.
    Swsuspend => "swsuspend",
    /// squashfs version 4.
    Squashfs => "squashfs",
    /// squashfs before version 4.
    Squashfs3 => "squashfs3",
    /// ISO9660.
    Iso9660 => "iso9660",
    /// UDF.
    Udf => "udf",
    /// A LUKS1 or LUKS2 encrypted volume.
    CryptoLuks => "crypto_LUKS",
    /// An LVM2 physical volume.
    Lvm2Member => "LVM2_member",
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for FsType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// Identity of a filesystem (or volume format such as LUKS, LVM PV, swap).
#[derive(Clone, Debug, Serialize)]
pub struct FsInfo {
    /// The type (serialised as `blkid` spells it: ext2, ext3, ext4, vfat, exfat, ntfs, xfs,
    /// btrfs, f2fs, swap, squashfs, iso9660, udf, crypto_LUKS, LVM2_member, ...).
    pub fs_type: FsType,
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
    /// A filesystem of type `fs_type` about which nothing else is known yet.
    pub fn new(fs_type: FsType) -> FsInfo {
        FsInfo {
            fs_type,
            label: None,
            uuid: None,
            size: None,
            block_size: None,
            version: None,
            features: Vec::new(),
            boot_entries: Vec::new(),
            warnings: Vec::new(),
        }
    }

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
    /// Metadata blocks the allocation map marks in use but that no one reads as they are,
    /// as the filesystem promises (ext4 with checksummed group descriptors and a journal; the
    /// tight-metadata rule of `spec/safety.md`): inode-table blocks no inode can occupy, the
    /// copies of the reserved descriptor blocks, the bitmaps of uninitialised groups. Left
    /// out of `used`; relative to the volume's first byte.
    /// [`crate::map::MapRules::whole_metadata`] puts them back.
    pub unread_metadata: ExtentMap,
    /// Of `unread_metadata`, the bytes of inode tables.
    pub unread_inode_tables: u64,
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
