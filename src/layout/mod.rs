//! Partition tables: MBR (with extended/logical partitions), GPT, protective and hybrid MBRs,
//! 512- and 4096-byte sectors, and whole-disk filesystems with no table at all.

use crate::io::{ReadAt, ReadAtExt};

pub mod gpt;
mod gpt_move;
pub mod mbr;
mod table;
pub mod types;

pub(crate) use gpt_move::{move_backup, NewEnd};
pub use table::{GptInfo, Layout, MbrEntry, MbrInfo, PartKind, Partition, TableKind};

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

    let s0 = src.read_struct_upto(0, mbr::MBR_SIZE)?;
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
