//! Filesystems: recognise one from its superblock, report its identity, and read which of its
//! bytes are in use.
//!
//! One file per filesystem. Each exposes `pub fn probe(dev: &dyn ReadAt) -> Result<Option<FsInfo>>`
//! where `dev` is the partition (or whole image) as its own source starting at offset 0.
//! `Ok(None)` means "not this filesystem"; a recognised but damaged superblock gives `Some`
//! with warnings (or `Err(Error::Corrupt)` when nothing sensible can be said). Formats whose
//! allocation map blockwise reads also expose `pub fn used(dev) -> Result<Usage>`.
//!
//! [`DRIVERS`] is the one table that ties them together: the probe order, the [`FsType`]s each
//! probe reports, and how each type's allocation map is read. Adding a filesystem is one new
//! file, its [`FsType`] variant(s) and one row there.

use std::fmt;

use serde::{Serialize, Serializer};

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
            #[cfg(test)]
            pub(crate) const ALL: &'static [FsType] = &[$(FsType::$variant,)*];

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

impl FsType {
    /// How this type's allocation map is read; `None` when its contents are opaque to
    /// blockwise (every byte is then kept).
    pub(crate) fn used_fn(self) -> Option<UsedFn> {
        DRIVERS
            .iter()
            .flat_map(|d| d.types)
            .find(|(t, _)| *t == self)
            .and_then(|(_, used)| *used)
    }
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

/// A probe: recognises its format in a volume (`Ok(None)`: not this format).
pub(crate) type ProbeFn = fn(&dyn ReadAt) -> crate::Result<Option<FsInfo>>;

/// An allocation-map reader: the bytes of a volume its filesystem needs.
pub(crate) type UsedFn = fn(&dyn ReadAt) -> crate::Result<Usage>;

/// One row of the driver table.
#[derive(Clone, Copy, Debug)]
pub struct Driver {
    /// Recognises the format.
    pub probe: ProbeFn,
    /// Every type `probe` can report, each with the reader of its allocation map (`None`:
    /// the contents are opaque to blockwise and every byte is kept).
    pub types: &'static [(FsType, Option<UsedFn>)],
}

/// The filesystem drivers, in probe order: formats whose magic sits deep in the volume are
/// tried before those with weak signatures at offset 0, so the first match is the right one.
pub static DRIVERS: &[Driver] = &[
    // blkid lets RAID-usage signatures (LVM PV) win over everything else.
    Driver {
        probe: lvm::probe,
        types: &[(FsType::Lvm2Member, None)],
    },
    Driver {
        probe: luks::probe_primary,
        types: &[(FsType::CryptoLuks, None)],
    },
    Driver {
        probe: swap::probe,
        // A hibernation image is live data: every page is kept.
        types: &[(FsType::Swap, Some(swap::used)), (FsType::Swsuspend, None)],
    },
    Driver {
        probe: btrfs::probe,
        types: &[(FsType::Btrfs, Some(btrfs::used))],
    },
    Driver {
        probe: xfs::probe,
        types: &[
            (FsType::Xfs, Some(xfs::used)),
            (FsType::XfsExternalLog, None),
        ],
    },
    Driver {
        probe: ext::probe,
        types: &[
            (FsType::Ext2, Some(ext::used)),
            (FsType::Ext3, Some(ext::used)),
            (FsType::Ext4, Some(ext::used)),
            (FsType::Ext4Dev, Some(ext::used)),
            (FsType::Jbd, None),
        ],
    },
    Driver {
        probe: f2fs::probe,
        types: &[(FsType::F2fs, Some(f2fs::used))],
    },
    Driver {
        probe: squashfs::probe,
        types: &[
            (FsType::Squashfs, Some(squashfs::used)),
            (FsType::Squashfs3, Some(squashfs::used)),
        ],
    },
    Driver {
        probe: udf::probe,
        types: &[(FsType::Udf, Some(udf::used))],
    },
    Driver {
        probe: iso9660::probe,
        types: &[(FsType::Iso9660, Some(iso9660::used))],
    },
    Driver {
        probe: ntfs::probe,
        types: &[(FsType::Ntfs, Some(ntfs::used))],
    },
    Driver {
        probe: exfat::probe,
        types: &[(FsType::Exfat, Some(exfat::used))],
    },
    Driver {
        probe: fat::probe,
        types: &[(FsType::Vfat, Some(fat::used))],
    },
    // A lone LUKS2 secondary header is often a leftover under a newer format; only believe
    // it when nothing else claims the device.
    Driver {
        probe: luks::probe,
        types: &[(FsType::CryptoLuks, None)],
    },
];

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
    pub(crate) fn new(fs_type: FsType) -> FsInfo {
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

/// Tries every driver's probe in [`DRIVERS`] order, returning the first match.
pub fn probe_all(dev: &dyn ReadAt) -> crate::Result<Option<FsInfo>> {
    for d in DRIVERS {
        match (d.probe)(dev) {
            Ok(Some(info)) => {
                debug_assert!(
                    d.types.iter().any(|(t, _)| *t == info.fs_type),
                    "{} is missing from its driver's row",
                    info.fs_type
                );
                return Ok(Some(info));
            }
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
    pub(crate) beyond_fs: u64,
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
    pub(crate) fn everything(size: u64, why: impl Into<String>) -> Usage {
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
pub fn unchecked_reason(fs_type: FsType) -> &'static str {
    match fs_type {
        FsType::Xfs => "XFS free-space B+trees, used only when the log is clean",
        FsType::Btrfs => "btrfs chunks: every allocated chunk is kept whole",
        FsType::F2fs => "F2FS segment table, used only after a clean-unmount checkpoint",
        FsType::Swap => "swap: only the header page holds data",
        FsType::Squashfs | FsType::Squashfs3 | FsType::Iso9660 | FsType::Udf => {
            "read-only image: its whole extent is kept"
        }
        _ => "no file metadata is read for this format",
    }
}

/// The bytes of `dev` that the filesystem `info` (from [`probe_all`]) needs.
///
/// Never fails: when the allocation metadata cannot be read the whole volume is kept, with a
/// warning. Bytes of the volume past the filesystem's declared size are kept too: nothing
/// says they are free.
pub fn usage(dev: &dyn ReadAt, info: &FsInfo) -> Usage {
    let size = dev.size();
    let Some(used) = info.fs_type.used_fn() else {
        return Usage::everything(
            size,
            format!(
                "{}: contents are opaque to blockwise; every block is kept",
                info.fs_type
            ),
        );
    };
    let mut u = match used(dev) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_one_unique_name_and_a_driver() {
        let mut names = std::collections::HashSet::new();
        for &t in FsType::ALL {
            assert!(names.insert(t.name()), "{t} named twice");
            let rows: Vec<_> = DRIVERS
                .iter()
                .flat_map(|d| d.types)
                .filter(|(x, _)| *x == t)
                .collect();
            assert!(!rows.is_empty(), "{t} has no driver");
            // A type listed by two drivers (LUKS: primary header first, secondary last) must
            // be read the same way whichever probe found it.
            assert!(
                rows.iter().all(|(_, u)| u.is_some() == rows[0].1.is_some()),
                "{t} is read differently by its drivers"
            );
        }
    }

    #[test]
    fn types_serialise_as_blkid_names() {
        let info = FsInfo::new(FsType::CryptoLuks);
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["fs_type"], "crypto_LUKS");
        assert_eq!(FsType::Lvm2Member.to_string(), "LVM2_member");
    }

    #[test]
    fn opaque_types_keep_everything_with_the_type_named() {
        let src = crate::io::MemSource(vec![0; 4096]);
        for t in [FsType::Jbd, FsType::Swsuspend, FsType::CryptoLuks] {
            let u = usage(&src, &FsInfo::new(t));
            assert!(!u.from_fs);
            assert_eq!(u.used.total(), 4096);
            assert_eq!(
                u.warnings,
                [format!(
                    "{}: contents are opaque to blockwise; every block is kept",
                    t.name()
                )]
            );
        }
    }
}
