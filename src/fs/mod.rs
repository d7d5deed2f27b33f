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

use crate::extent::ExtentMap;
use crate::io::ReadAt;

pub mod btrfs;
pub mod exfat;
pub mod ext;
pub mod f2fs;
pub mod fat;
mod info;
pub mod iso9660;
pub mod luks;
pub mod lvm;
pub mod ntfs;
pub mod squashfs;
pub mod swap;
pub mod udf;
pub(crate) mod xcheck;
pub mod xfs;

pub use info::{BootEntry, CrossCheck, FsInfo, FsType, Usage};

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
            // The volume is too small for this format's superblock. (A source that fails, or
            // ends early inside its size, is an error: not "no filesystem".)
            Err(crate::Error::TooSmall { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
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
                    "{}: allocation map unreadable ({}); every block is kept",
                    info.fs_type,
                    e.chain()
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
    u.unread_metadata = u.unread_metadata.clip(size).subtract(&u.used);
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
