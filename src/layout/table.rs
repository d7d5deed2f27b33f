//! What a partition table says, as data: [`Layout`], [`Partition`], [`PartKind`],
//! [`TableKind`], [`MbrInfo`]/[`MbrEntry`] and [`GptInfo`].
//!
//! Apart from the `layout` façade (`layout/mod.rs`, which re-exports them and reads a table by
//! calling the `mbr` and `gpt` readers) so that those readers build these types from here and
//! the façade and its readers never import each other.

use serde::Serialize;

use super::types;

/// Which kind of table was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    /// Classic DOS/MBR table (possibly with logical partitions).
    Mbr,
    /// GUID partition table (with a protective or hybrid MBR).
    Gpt,
    /// No partition table: the whole image is one filesystem (or unknown data).
    None,
}

/// One partition, in byte units of the image.
#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    /// Number as Linux names it (MBR logical partitions start at 5; GPT = entry index + 1).
    pub index: u32,
    /// Byte offset of the first byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Table-specific type information.
    pub kind: PartKind,
    /// Human name of the type ("Linux filesystem", "EFI System", "W95 FAT32 (LBA)").
    pub type_name: String,
}

/// Table-specific partition facts.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "table", rename_all = "kebab-case")]
pub enum PartKind {
    /// An MBR entry (primary, extended container, or logical from the EBR chain).
    Mbr {
        /// System ID byte.
        type_code: u8,
        /// Active (0x80) flag.
        bootable: bool,
        /// True for partitions found through the EBR chain.
        logical: bool,
        /// True for the extended container entry itself (0x05/0x0f/0x85).
        extended: bool,
    },
    /// A GPT entry.
    Gpt {
        /// Partition type GUID, lowercase.
        type_guid: String,
        /// Unique partition GUID, lowercase.
        uuid: String,
        /// Partition name (UTF-16LE in the entry).
        name: String,
        /// Attribute flags.
        attributes: u64,
    },
}

/// MBR facts that matter for booting and for recognising protective/hybrid MBRs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MbrInfo {
    /// 32-bit disk signature at offset 440, as 8 hex digits.
    pub disk_signature: String,
    /// Non-zero bytes in the boot code area (0..440): something boots from this disk.
    pub boot_code: bool,
    /// Index (1-4) of the entry flagged active, if any.
    pub active: Option<u32>,
    /// The MBR only protects a GPT (one 0xEE entry).
    pub protective: bool,
    /// The MBR carries a 0xEE entry plus real entries (hybrid MBR).
    pub hybrid: bool,
    /// The four primary entries as found (type code, bootable, start byte, size bytes), empty
    /// slots omitted.
    pub entries: Vec<MbrEntry>,
}

/// A raw primary MBR slot.
#[derive(Clone, Debug, Serialize)]
pub struct MbrEntry {
    /// Slot number 1-4.
    pub slot: u32,
    /// System ID byte.
    pub type_code: u8,
    /// Active flag.
    pub bootable: bool,
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// GPT header facts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GptInfo {
    /// Disk GUID, lowercase.
    pub disk_guid: String,
    /// First usable LBA.
    pub first_usable_lba: u64,
    /// Last usable LBA.
    pub last_usable_lba: u64,
    /// LBA of the primary header (normally 1).
    pub primary_lba: u64,
    /// LBA the primary header says the backup lives at.
    pub backup_lba: u64,
    /// Number of entries in the array and their size.
    pub entry_count: u32,
    /// Size of one entry in bytes.
    pub entry_size: u32,
    /// Primary header and its entry array passed their CRC checks.
    pub primary_ok: bool,
    /// Backup header found at the end and valid.
    ///
    /// Also false when the backup was not read: in an image whose size is only a hint (a
    /// stream read in one pass, [`crate::io::SizeKnown::Hint`]) a valid primary is taken on
    /// its word, since reaching the last sector would decode the whole stream before the
    /// pass; the backup's sectors are kept all the same.
    pub backup_ok: bool,
    /// The partitions were read from the backup because the primary is damaged.
    pub used_backup: bool,
}

/// Everything learned about the partitioning of an image.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    /// Logical sector size the table was found with (512 or 4096).
    pub sector_size: u32,
    /// Table kind.
    pub table: TableKind,
    /// Disk identifier: MBR signature or GPT disk GUID.
    pub disk_id: Option<String>,
    /// Partitions in table order (for MBR: primaries then logicals). Not serialised: the
    /// inspect report lists them once, together with their filesystems.
    #[serde(skip)]
    pub partitions: Vec<Partition>,
    /// The MBR (also present, as protective or hybrid, in front of a GPT).
    pub mbr: Option<MbrInfo>,
    /// GPT header facts.
    pub gpt: Option<GptInfo>,
    /// Things a user must know: truncation, CRC failures, fallbacks, loops.
    pub warnings: Vec<String>,
    /// Set when a partition table is present but cannot be trusted as a map of the disk
    /// (both GPT copies damaged behind a protective MBR, entries outside the usable area or
    /// past the end of the image, a partition over the table itself): why. Nothing may then
    /// be left out on the table's word (`spec/safety.md`).
    pub unusable: Option<String>,
}

impl Layout {
    /// Partitions that hold data, leaving out extended containers and 0xEE entries.
    pub fn data_partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.iter().filter(|p| !p.is_container())
    }

    /// Where the last partition ends (0 when there is none), in bytes: no disk the table is
    /// moved to may end before it. Overflowing entries are corrupt.
    pub fn partitions_end(&self) -> crate::Result<u64> {
        self.partitions
            .iter()
            .map(|p| p.start.checked_add(p.size))
            .try_fold(0u64, |m, e| e.map(|e| m.max(e)))
            .ok_or_else(|| crate::Error::corrupt("partition table", "partition end overflows"))
    }

    /// How far into the disk the table reaches: the end of its furthest partition, MBR entry
    /// or GPT header (the backup sits in the disk's last sector). For an image whose size is
    /// only a hint (a stream read in one pass), a better guess at its size when larger.
    pub fn extent(&self) -> u64 {
        let ss = u64::from(self.sector_size);
        let parts = self
            .partitions
            .iter()
            .map(|p| p.start.saturating_add(p.size));
        let mbr = self
            .mbr
            .iter()
            .flat_map(|m| &m.entries)
            .map(|e| e.start.saturating_add(e.size));
        let gpt = self
            .gpt
            .iter()
            .flat_map(|g| [g.primary_lba, g.backup_lba, g.last_usable_lba])
            .map(|lba| lba.saturating_add(1).saturating_mul(ss));
        parts.chain(mbr).chain(gpt).max().unwrap_or(0)
    }
}

impl Partition {
    /// An extended-partition container or a GPT-protective entry: a range that holds other
    /// partitions (or a GPT), not data of its own. Never probed, never counted as data.
    pub fn is_container(&self) -> bool {
        self.kind.is_container()
    }
}

impl PartKind {
    /// An extended-partition container or a GPT-protective entry: a range that holds other
    /// partitions (or a GPT), not data of its own.
    pub fn is_container(&self) -> bool {
        matches!(self, PartKind::Mbr { extended: true, .. }) || self.is_protective()
    }

    /// The MBR's GPT-protective (0xEE) entry: it stands for the GPT, so unlike an extended
    /// container it does not reach the end of the partitioned region.
    pub fn is_protective(&self) -> bool {
        matches!(
            self,
            PartKind::Mbr {
                type_code: types::MBR_GPT_PROTECTIVE,
                ..
            }
        )
    }

    /// Typed as an EFI System Partition (the GPT type GUID, or MBR type 0xEF): where UEFI
    /// firmware looks for boot loaders.
    pub fn is_esp(&self) -> bool {
        match self {
            PartKind::Gpt { type_guid, .. } => type_guid.eq_ignore_ascii_case(types::ESP_GUID),
            PartKind::Mbr { type_code, .. } => *type_code == types::MBR_ESP,
        }
    }
}
