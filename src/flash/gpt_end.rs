//! `--gpt-to-end`: a GPT image written to a larger target gets its backup GPT at the target's
//! end, so the whole card is usable and tools find the backup where the disk ends.
//!
//! Without it the card holds the image's backup header in the middle of the disk, and its
//! primary header points there: `sgdisk -v` and the kernel report the table as belonging to a
//! smaller disk, and partitioning tools will not use the space behind it. With it, the backup
//! header and entry array are written to the target's last sectors, the primary header points
//! at them (AlternateLBA, LastUsableLBA, header CRC; the entries and their CRC are unchanged),
//! and a protective MBR entry that spanned the image spans the target (at most 0xFFFFFFFF
//! sectors). The rewrite is the one `backup --truncate` uses (`crate::layout`'s
//! `move_backup`), here with the target's size as the new end.

use crate::io::ReadAt;
use crate::layout::{move_backup, read_layout, Layout, NewEnd, TableKind};

/// The option's name, as errors say it.
const OPTION: &str = "--gpt-to-end";

/// The bytes that move an image's backup GPT to the end of its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GptMove {
    /// Bytes to write over the image on the target: (offset, bytes), sorted and disjoint, for
    /// [`FlashPlan::patches`](super::FlashPlan::patches): the protective MBR and the primary
    /// header fall in the image's head, the backup entry array and header in the target's last
    /// sectors (past the image, on a larger target).
    pub patches: Vec<(u64, Vec<u8>)>,
    /// What was changed, for the summary.
    pub notes: Vec<String>,
}

/// Reads the partition table of `src` (the decoded image) and works out [`GptMove`] for a
/// target of `target_size` bytes. A caller that has read the table already (reading it again
/// can cost a second decode of a compressed image, whose backup GPT sits at its end) calls
/// [`gpt_to_end_with`].
pub fn gpt_to_end(src: &dyn ReadAt, target_size: u64) -> crate::Result<GptMove> {
    let layout = read_layout(src, None)?;
    gpt_to_end_with(src, &layout, target_size)
}

/// [`gpt_to_end`] with the image's table, `layout`, already read from `src`.
///
/// Refuses an image with no GPT ([`crate::Error::Format`]: "--gpt-to-end: the image has no
/// GPT"), a table that cannot be trusted or whose primary copy is damaged
/// ([`crate::Error::Unsupported`]), and a target that ends before the last partition does, or
/// leaves no room for the backup after it ([`crate::Error::Refused`]).
pub fn gpt_to_end_with(
    src: &dyn ReadAt,
    layout: &Layout,
    target_size: u64,
) -> crate::Result<GptMove> {
    if layout.table != TableKind::Gpt {
        let intended = layout.mbr.as_ref().is_some_and(|m| m.protective);
        return Err(match (&layout.unusable, intended) {
            (Some(why), true) => crate::Error::Unsupported(format!(
                "{OPTION}: the image's GPT cannot be read ({why}); repair the table first"
            )),
            _ => crate::Error::Format(format!("{OPTION}: the image has no GPT")),
        });
    }
    if let Some(why) = &layout.unusable {
        return Err(crate::Error::Unsupported(format!(
            "{OPTION} needs a partition table it can trust ({why})"
        )));
    }
    let moved = move_backup(src, layout, NewEnd::At(target_size), OPTION)?;
    let mut notes = vec![if moved.in_place {
        format!(
            "GPT backup already at the target's last sector (LBA {})",
            moved.backup_lba
        )
    } else {
        format!(
            "GPT backup moved to the target's last sector (LBA {}); the primary header points at it",
            moved.backup_lba
        )
    }];
    if moved.mbr_resized {
        notes.push("protective MBR entry resized to the target".into());
    }
    Ok(GptMove {
        patches: moved.patches,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;
    use crate::util::le32;

    const SS: u64 = 512;

    fn put(buf: &mut [u8], at: u64, bytes: &[u8]) {
        let at = at as usize;
        buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    /// A GPT disk of `size` bytes (512-byte sectors, 128 entries) with partitions over the
    /// given inclusive LBA ranges, behind a protective MBR.
    fn gpt_image(size: u64, parts: &[(u64, u64)]) -> Vec<u8> {
        let mut d = vec![0u8; size as usize];
        let total = size / SS;
        // Protective MBR.
        put(&mut d, 446 + 4, &[0xEE]);
        put(&mut d, 446 + 8, &1u32.to_le_bytes());
        put(&mut d, 446 + 12, &((total - 1) as u32).to_le_bytes());
        put(&mut d, 510, &[0x55, 0xAA]);
        // Entries.
        let mut arr = vec![0u8; 128 * 128];
        for (i, &(first, last)) in parts.iter().enumerate() {
            let e = &mut arr[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(&[0xAF; 16]);
            e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        let header = |my: u64, alt: u64, entries: u64| {
            let mut h = vec![0u8; 512];
            h[0..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&my.to_le_bytes());
            h[32..40].copy_from_slice(&alt.to_le_bytes());
            h[40..48].copy_from_slice(&34u64.to_le_bytes());
            h[48..56].copy_from_slice(&(total - 34).to_le_bytes());
            h[56..72].copy_from_slice(&[0x42; 16]);
            h[72..80].copy_from_slice(&entries.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&crc32fast::hash(&arr).to_le_bytes());
            let crc = crc32fast::hash(&h[..92]);
            h[16..20].copy_from_slice(&crc.to_le_bytes());
            h
        };
        put(&mut d, SS, &header(1, total - 1, 2));
        put(&mut d, 2 * SS, &arr);
        put(&mut d, (total - 33) * SS, &arr);
        put(&mut d, (total - 1) * SS, &header(total - 1, 1, total - 33));
        d
    }

    /// `image` written to a zeroed target of `size` bytes, then `patches` over it.
    fn flashed(image: &[u8], size: u64, patches: &[(u64, Vec<u8>)]) -> Vec<u8> {
        let mut t = vec![0u8; size as usize];
        t[..image.len()].copy_from_slice(image);
        for (at, bytes) in patches {
            put(&mut t, *at, bytes);
        }
        t
    }

    #[test]
    fn a_larger_target_gets_a_clean_table_at_its_end() {
        let img = gpt_image(4 << 20, &[(2048, 4095), (4096, 8000)]);
        let target = 6 << 20;
        let m = gpt_to_end(&MemSource(img.clone()), target).unwrap();
        let offsets: Vec<u64> = m.patches.iter().map(|p| p.0).collect();
        assert_eq!(offsets, [0, SS, target - 33 * SS, target - SS]);
        assert!(m.notes[0].contains("LBA 12287"), "{:?}", m.notes);
        assert!(m.notes[1].contains("protective MBR"), "{:?}", m.notes);

        let t = flashed(&img, target, &m.patches);
        let l = read_layout(&MemSource(t.clone()), None).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let g = l.gpt.as_ref().unwrap();
        assert!(g.primary_ok && g.backup_ok);
        assert_eq!((g.backup_lba, g.last_usable_lba), (12287, 12287 - 33));
        let spans: Vec<(u64, u64)> = l.partitions.iter().map(|p| (p.start, p.size)).collect();
        assert_eq!(spans, [(2048 * SS, 2048 * SS), (4096 * SS, 3905 * SS)]);
        assert_eq!(le32(&t, 446 + 12), Some(12287));
        // The flashed card's own table is already at its end: nothing moves.
        let again = gpt_to_end(&MemSource(t), target).unwrap();
        assert!(again.notes[0].contains("already"), "{:?}", again.notes);
        assert_eq!(again.patches.len(), 3);
    }

    #[test]
    fn the_protective_entry_is_capped_on_huge_targets() {
        let img = gpt_image(1 << 20, &[(40, 100)]);
        let target = 4u64 << 40;
        let m = gpt_to_end(&MemSource(img), target).unwrap();
        assert_eq!(m.patches[0].0, 0);
        assert_eq!(le32(&m.patches[0].1, 446 + 12), Some(0xFFFF_FFFF));
        assert_eq!(m.patches[3].0, target - SS);
        assert_eq!(
            crate::util::le64(&m.patches[1].1, 32),
            Some(target / SS - 1)
        );
    }

    #[test]
    fn refusals_say_why() {
        let img = gpt_image(4 << 20, &[(2048, 6000)]);
        let src = MemSource(img.clone());
        // Smaller than the last partition's end.
        let e = gpt_to_end(&src, 2 << 20).unwrap_err();
        assert!(matches!(e, crate::Error::Refused { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains("smaller than the end of the last partition (byte 3072512)"),
            "{e}"
        );
        // Past the partitions, but no room for the backup after them.
        let e = gpt_to_end(&src, 6001 * SS + 10 * SS).unwrap_err();
        assert!(e.to_string().contains("not the backup GPT"), "{e}");
        // Exactly enough room.
        assert!(gpt_to_end(&src, (6001 + 33) * SS).is_ok());

        let e = gpt_to_end(&MemSource(vec![0; 1 << 20]), 2 << 20).unwrap_err();
        assert_eq!(e.to_string(), "--gpt-to-end: the image has no GPT");

        // A damaged primary header (only the backup is usable) is refused.
        let mut bad = img;
        bad[SS as usize + 60] ^= 1;
        let e = gpt_to_end(&MemSource(bad), 8 << 20).unwrap_err();
        assert!(e.to_string().contains("the primary GPT is damaged"), "{e}");
    }
}
