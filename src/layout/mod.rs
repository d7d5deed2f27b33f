//! Partition tables: MBR (with extended/logical partitions), GPT, protective and hybrid MBRs,
//! 512- and 4096-byte sectors, and whole-disk filesystems with no table at all.

use serde::Serialize;

use crate::io::{ReadAt, ReadAtExt};

pub(crate) mod gpt;
pub(crate) mod mbr;
pub(crate) mod types;

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
    pub(crate) disk_signature: String,
    /// Non-zero bytes in the boot code area (0..440): something boots from this disk.
    pub(crate) boot_code: bool,
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
    pub(crate) slot: u32,
    /// System ID byte.
    pub type_code: u8,
    /// Active flag.
    pub(crate) bootable: bool,
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
}

/// GPT header facts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GptInfo {
    /// Disk GUID, lowercase.
    pub(crate) disk_guid: String,
    /// First usable LBA.
    pub first_usable_lba: u64,
    /// Last usable LBA.
    pub last_usable_lba: u64,
    /// LBA of the primary header (normally 1).
    pub(crate) primary_lba: u64,
    /// LBA the primary header says the backup lives at.
    pub(crate) backup_lba: u64,
    /// Number of entries in the array and their size.
    pub(crate) entry_count: u32,
    /// Size of one entry in bytes.
    pub(crate) entry_size: u32,
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
    pub(crate) fn data_partitions(&self) -> impl Iterator<Item = &Partition> {
        self.partitions.iter().filter(|p| !p.is_container())
    }

    /// How far into the disk the table reaches: the end of its furthest partition, MBR entry
    /// or GPT header (the backup sits in the disk's last sector). For an image whose size is
    /// only a hint (a stream read in one pass), a better guess at its size when larger.
    pub(crate) fn extent(&self) -> u64 {
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
    pub(crate) fn is_container(&self) -> bool {
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
    pub(crate) fn is_esp(&self) -> bool {
        match self {
            PartKind::Gpt { type_guid, .. } => type_guid.eq_ignore_ascii_case(types::ESP_GUID),
            PartKind::Mbr { type_code, .. } => *type_code == types::MBR_ESP,
        }
    }
}

/// Sector sizes tried for GPT when the caller gives no (usable) hint.
const DEFAULT_SECTOR_SIZES: [u32; 2] = [512, 4096];

/// Reads the partition table of `src`. `sector_hint` is the device's logical sector size when
/// known; otherwise 512 and 4096 are both tried for GPT.
///
/// Decision order: a valid GPT (primary, or backup when the primary is damaged) wins, with the
/// MBR kept in [`Layout::mbr`] as protective or hybrid; otherwise a DOS/MBR table; otherwise
/// [`TableKind::None`] (blank, or a filesystem boot sector such as a whole-disk FAT, which also
/// ends in 0x55AA).
///
/// Never panics on hostile input: damaged structures become warnings (or an empty table), and
/// only I/O errors are returned as errors.
pub fn read_layout(src: &dyn ReadAt, sector_hint: Option<u32>) -> crate::Result<Layout> {
    let size = src.size();
    let hint = sector_hint.filter(|s| s.is_power_of_two() && (512..=65536).contains(s));
    let mut sizes: Vec<u32> = hint.into_iter().collect();
    sizes.extend(DEFAULT_SECTOR_SIZES.iter().filter(|s| Some(**s) != hint));

    let s0 = src.read_upto(0, mbr::MBR_SIZE)?;
    let mut warnings = Vec::new();
    let has_sig = mbr::has_signature(&s0);
    let has_ee = has_sig
        && mbr::raw_entries(&s0)
            .iter()
            .any(|e| e.type_code == types::MBR_GPT_PROTECTIVE);

    let mut broken = None;
    for &ss in &sizes {
        match gpt::read_gpt(src, ss, has_ee)? {
            gpt::Outcome::Found(g) => {
                warnings.extend(g.warnings);
                let mbr = has_sig.then(|| mbr::mbr_info(&s0, ss));
                if !has_ee {
                    let mbr_parts = has_sig
                        && mbr::classify(&s0, size / u64::from(ss)) == mbr::Sector0::Mbr
                        && mbr::raw_entries(&s0).iter().any(|e| e.type_code != 0);
                    warnings.push(if mbr_parts {
                        "GPT found but the MBR has no protective 0xEE entry and lists \
                         partitions of its own: one of the two tables is stale; the GPT is \
                         shown, check before writing"
                            .into()
                    } else {
                        "GPT found but the MBR has no protective 0xEE entry: tools that read \
                         the MBR will see no partition table"
                            .into()
                    });
                }
                let mut layout = Layout {
                    sector_size: ss,
                    table: TableKind::Gpt,
                    disk_id: Some(g.info.disk_guid.clone()),
                    partitions: g.partitions,
                    mbr,
                    gpt: Some(g.info),
                    warnings,
                    unusable: (!g.defects.is_empty())
                        .then(|| format!("partition table unusable: {}", g.defects.join("; "))),
                };
                check_extents(&mut layout, size);
                return Ok(layout);
            }
            gpt::Outcome::Broken(msg) => {
                broken.get_or_insert(msg);
            }
            gpt::Outcome::Absent => {}
        }
    }
    let ss = hint.unwrap_or(512);
    let total = size / u64::from(ss);
    let sector0 = mbr::classify(&s0, total);
    // Behind a protective MBR a broken GPT is the table that counts: it becomes the reason
    // the layout is unusable (said once, below); otherwise it is a stale leftover.
    let gpt_intended = has_ee && sector0 == mbr::Sector0::Mbr;
    if !gpt_intended {
        warnings.extend(broken.clone());
    }

    let mut layout = Layout {
        sector_size: ss,
        table: TableKind::None,
        disk_id: None,
        partitions: vec![],
        mbr: None,
        gpt: None,
        warnings,
        unusable: None,
    };
    match sector0 {
        mbr::Sector0::Mbr => {
            let info = mbr::mbr_info(&s0, ss);
            if gpt_intended {
                // The disk was partitioned with a GPT that can no longer be read: its
                // partitions are unknown, so nothing in the image is known to be free.
                layout.unusable = Some(match broken {
                    Some(b) => b,
                    None => "the protective MBR (0xEE) announces a GPT, but none was found".into(),
                });
            }
            layout.partitions = mbr::read_partitions(src, &s0, ss, &mut layout.warnings)?;
            layout.table = TableKind::Mbr;
            layout.disk_id = Some(info.disk_signature.clone());
            layout.mbr = Some(info);
        }
        mbr::Sector0::BadFlags => layout.warnings.push(
            "sector 0 ends in 0x55AA but its partition entries have invalid boot flags: \
             not treated as a partition table"
                .into(),
        ),
        mbr::Sector0::Vbr | mbr::Sector0::NoSignature => {}
    }
    check_extents(&mut layout, size);
    Ok(layout)
}

/// Warns about partitions that start or end past the end of the image, and about partitions
/// that overlap (extended containers and 0xEE entries are containers by design and are left
/// out of the overlap check).
fn check_extents(layout: &mut Layout, image_size: u64) {
    let mut defects = Vec::new();
    for p in &layout.partitions {
        let end = p.start.saturating_add(p.size);
        if p.start >= image_size {
            let w = format!(
                "partition {} starts at {}, beyond the end of the image ({image_size})",
                p.index, p.start
            );
            layout.warnings.push(w.clone());
            defects.push(w);
        } else if end > image_size {
            let w = format!(
                "partition {} ends at {end}, past the end of the image ({image_size}): image truncated?",
                p.index
            );
            layout.warnings.push(w.clone());
            defects.push(w);
        }
        if p.start < u64::from(layout.sector_size) && p.size > 0 && !p.is_container() {
            let w = format!(
                "partition {} starts at byte {}, over the partition table itself",
                p.index, p.start
            );
            layout.warnings.push(w.clone());
            defects.push(w);
        }
    }
    if layout.unusable.is_none() && !defects.is_empty() {
        layout.unusable = Some(format!("partition table unusable: {}", defects.join("; ")));
    }
    let mut spans: Vec<(u64, u64, u32)> = layout
        .partitions
        .iter()
        .filter(|p| !p.is_container())
        .map(|p| (p.start, p.start.saturating_add(p.size), p.index))
        .collect();
    spans.sort_unstable();
    // Report each partition against the furthest-reaching earlier one, so the check stays
    // linear and still catches a large partition that swallows several later ones.
    let mut reach: Option<(u64, u32)> = None;
    for &(start, end, index) in &spans {
        if let Some((r_end, r_index)) = reach {
            if start < r_end {
                layout
                    .warnings
                    .push(format!("partitions {r_index} and {index} overlap"));
            }
        }
        if reach.is_none_or(|(r_end, _)| end > r_end) {
            reach = Some((end, index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr(type_code: u8, extended: bool) -> Partition {
        Partition {
            index: 1,
            start: 512,
            size: 512,
            kind: PartKind::Mbr {
                type_code,
                bootable: false,
                logical: false,
                extended,
            },
            type_name: String::new(),
        }
    }

    #[test]
    fn containers_are_extended_and_protective_entries_only() {
        assert!(mbr(0x05, true).is_container());
        assert!(mbr(0xee, false).is_container());
        assert!(mbr(0xee, false).kind.is_protective());
        assert!(!mbr(0x05, true).kind.is_protective());
        assert!(!mbr(0x83, false).is_container());
        let gpt = Partition {
            kind: PartKind::Gpt {
                type_guid: types::ESP_GUID.into(),
                uuid: String::new(),
                name: String::new(),
                attributes: 0,
            },
            ..mbr(0, false)
        };
        assert!(!gpt.is_container());
        assert!(gpt.kind.is_esp() && mbr(0xef, false).kind.is_esp());
        assert!(!mbr(0x0c, false).kind.is_esp());
    }
}
