//! `--truncate`: end an image at its last partition.
//!
//! Cards are often imaged whole although the partitions end far earlier (a 32 GB card holding
//! a 4 GB Raspberry Pi OS image). Cutting the image there is free for MBR disks; a GPT disk
//! keeps a backup header and entry array in its last sectors, so the cut image gets a new
//! backup at its new end, and the primary header is updated to point at it (AlternateLBA,
//! LastUsableLBA, CRC), and a protective MBR entry is shrunk to the new disk. The result is
//! clean for `sgdisk -v`. Nothing is guessed: a damaged primary GPT is refused.

use crate::io::ReadAt;
use crate::layout::{move_backup, Layout, NewEnd, TableKind};

/// How an image is ended at its last partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// New image size in bytes.
    pub new_size: u64,
    /// Bytes to replace in the truncated image: (offset, new bytes), sorted, disjoint.
    pub patches: Vec<(u64, Vec<u8>)>,
    /// What was changed, for the summary.
    pub(crate) notes: Vec<String>,
}

impl Truncation {
    /// Refuses a cut that would drop bytes the image map keeps: only the old GPT backup
    /// (rewritten at the new end) may lie past it. A whole-disk filesystem beside the table,
    /// or a table that cannot be trusted, keeps bytes there, and then nothing is cut.
    pub(crate) fn check_against_map(
        &self,
        layout: &Layout,
        map: &crate::ExtentMap,
        size: u64,
    ) -> crate::Result<()> {
        let mut past = map.subtract(&crate::ExtentMap::single(0, self.new_size));
        if let (TableKind::Gpt, Some(g)) = (layout.table, &layout.gpt) {
            let backup_from = g
                .last_usable_lba
                .saturating_add(1)
                .saturating_mul(u64::from(layout.sector_size));
            past = past.subtract(&crate::ExtentMap::single(backup_from.min(size), size));
        }
        let first = past.iter().next().map(|e| e.start);
        match first {
            None => Ok(()),
            Some(first) => Err(crate::Error::Unsupported(format!(
                "--truncate: {} past the last partition are in use (from byte {first}); nothing is cut",
                crate::util::human_bytes(past.total()),
            ))),
        }
    }
}

/// Works out the truncated size and the table rewrites it needs.
pub fn plan_truncation(src: &dyn ReadAt, layout: &Layout) -> crate::Result<Truncation> {
    let size = src.size();
    if let Some(why) = &layout.unusable {
        return Err(crate::Error::Unsupported(format!(
            "--truncate needs a partition table it can trust ({why})"
        )));
    }
    let end = layout.partitions_end()?;
    if end > size {
        return Err(crate::Error::corrupt(
            "partition table",
            format!("a partition ends at byte {end}, past the image end ({size}); the image is already truncated"),
        ));
    }
    match layout.table {
        TableKind::None => Err(crate::Error::Unsupported(
            "--truncate ends an image at its last partition, and this image has no partition table"
                .into(),
        )),
        TableKind::Gpt => gpt_truncation(src, layout),
        _ => {
            if end == 0 {
                return Err(crate::Error::Unsupported(
                    "--truncate: the partition table lists no partitions".into(),
                ));
            }
            if end >= size {
                return Ok(unchanged(size));
            }
            Ok(Truncation {
                new_size: end,
                patches: vec![],
                notes: vec![format!(
                    "truncated at the end of the last partition: {} of {} bytes kept",
                    end, size
                )],
            })
        }
    }
}

fn unchanged(size: u64) -> Truncation {
    Truncation {
        new_size: size,
        patches: vec![],
        notes: vec!["--truncate: the image already ends at its last partition".into()],
    }
}

/// A GPT image ends right after its last partition's backup: [`move_backup`] to the smallest
/// end the partitions allow.
fn gpt_truncation(src: &dyn ReadAt, layout: &Layout) -> crate::Result<Truncation> {
    let size = src.size();
    let moved = move_backup(src, layout, NewEnd::Smallest, "--truncate")?;
    if moved.new_size >= size {
        return Ok(unchanged(size));
    }
    let new_size = moved.new_size;
    let mut notes = vec![format!(
        "truncated at the end of the last partition: {new_size} of {size} bytes kept; GPT backup moved to LBA {}",
        moved.backup_lba
    )];
    if moved.mbr_resized {
        notes.push("protective MBR entry resized to the new disk".into());
    }
    Ok(Truncation {
        new_size,
        patches: moved.patches,
        notes,
    })
}
