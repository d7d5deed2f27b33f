//! Writing bmap 2.0 files exactly as bmaptool lays them out.
//!
//! bmaptool writes placeholders, then overwrites them in place once the counts are known, and
//! hashes the file with the checksum field all zeros. Reproducing that byte for byte (including
//! its quirks: the placeholder widths are those of the image size, not of the mapped size)
//! makes our files indistinguishable from bmaptool's and their checksums verify there.

use sha2::{Digest, Sha256};

use crate::extent::ExtentMap;

/// What to put in a bmap.
#[derive(Clone, Debug)]
pub struct BmapWriteOptions {
    /// Block size in bytes (bmaptool uses the filesystem block size, normally 4096).
    pub block_size: u64,
}

impl Default for BmapWriteOptions {
    fn default() -> Self {
        BmapWriteOptions { block_size: 4096 }
    }
}

/// bmaptool's `human_size`, including its rounding and units.
pub(crate) fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut v = size as f64;
    for m in ["KiB", "MiB", "GiB", "TiB"] {
        v /= 1024.0;
        if v < 1024.0 {
            return format!("{v:.1} {m}");
        }
    }
    // bmaptool labels anything from 1024 TiB up "EiB" (in PiB units); kept for identity.
    format!("{v:.1} EiB")
}

const START: &str = r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

<bmap version="2.0">
"#;

/// Overwrites `dst[pos..]` with `s`, extending the buffer if needed, as a file write at a
/// seek position does.
fn overwrite(dst: &mut Vec<u8>, pos: usize, s: &str) {
    let b = s.as_bytes();
    let end = pos + b.len();
    if end > dst.len() {
        dst.resize(end, b' ');
    }
    dst[pos..end].copy_from_slice(b);
}

/// Renders a bmap 2.0 file for an image of `image_size` bytes whose mapped bytes are `map`
/// (aligned outward to `opts.block_size` here), with one SHA-256 hex digest per range in
/// `checksums` (or none, for `--no-checksum`).
///
/// `checksums`, if given, must have one entry per range of `block_ranges(map)`; see
/// [`block_ranges`].
pub fn render(
    image_size: u64,
    map: &ExtentMap,
    checksums: Option<&[String]>,
    opts: &BmapWriteOptions,
) -> Vec<u8> {
    let bs = opts.block_size.max(1);
    let blocks_cnt = image_size.div_ceil(bs);
    let ranges = block_ranges(image_size, map, bs);
    let image_human = human_size(image_size);

    let mut out: Vec<u8> = Vec::with_capacity(4096 + ranges.len() * 100);
    out.extend_from_slice(START.as_bytes());
    out.extend_from_slice(
        format!(
            "    <!-- Image size in bytes: {image_human} -->\n    <ImageSize> {image_size} </ImageSize>\n\n    <!-- Size of a block in bytes -->\n    <BlockSize> {bs} </BlockSize>\n\n    <!-- Count of blocks in the image file -->\n    <BlocksCount> {blocks_cnt} </BlocksCount>\n\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(b"    <!-- Count of mapped blocks: ");
    let pos1 = out.len();
    out.extend_from_slice(
        format!(
            "{} or {}   -->\n    <MappedBlocksCount> ",
            " ".repeat(image_human.len()),
            " ".repeat("100.0%".len())
        )
        .as_bytes(),
    );
    let pos2 = out.len();
    out.extend_from_slice(
        format!(
            "{} </MappedBlocksCount>\n\n",
            " ".repeat(blocks_cnt.to_string().len())
        )
        .as_bytes(),
    );
    out.extend_from_slice(b"    <!-- Type of checksum used in this file -->\n");
    out.extend_from_slice(b"    <ChecksumType> sha256 </ChecksumType>\n\n");
    out.extend_from_slice(
        b"    <!-- The checksum of this bmap file. When it is calculated, the value of\n",
    );
    out.extend_from_slice(b"         the checksum has be zero (all ASCII \"0\" symbols).  -->\n");
    out.extend_from_slice(b"    <BmapFileChecksum> ");
    let pos_ck = out.len();
    out.extend_from_slice("0".repeat(64).as_bytes());
    out.extend_from_slice(b" </BmapFileChecksum>\n\n");
    out.extend_from_slice(
        b"    <!-- The block map which consists of elements which may either be a\n",
    );
    out.extend_from_slice(b"         range of blocks or a single block. The 'chksum' attribute\n");
    out.extend_from_slice(b"         (if present) is the checksum of this blocks range. -->\n");
    out.extend_from_slice(b"    <BlockMap>\n");

    let mut mapped = 0u64;
    for (i, &(first, last)) in ranges.iter().enumerate() {
        mapped += last - first + 1;
        let ck = checksums
            .and_then(|c| c.get(i))
            .map(|c| format!(" chksum=\"{c}\""))
            .unwrap_or_default();
        let line = if first != last {
            format!("        <Range{ck}> {first}-{last} </Range>\n")
        } else {
            format!("        <Range{ck}> {first} </Range>\n")
        };
        out.extend_from_slice(line.as_bytes());
    }
    out.extend_from_slice(b"    </BlockMap>\n</bmap>\n");

    let mapped_size = mapped.saturating_mul(bs);
    let percent = if blocks_cnt == 0 {
        0.0
    } else {
        mapped as f64 * 100.0 / blocks_cnt as f64
    };
    overwrite(
        &mut out,
        pos1,
        &format!("{} or {percent:.1}%", human_size(mapped_size)),
    );
    overwrite(&mut out, pos2, &mapped.to_string());
    let digest = Sha256::digest(&out);
    overwrite(&mut out, pos_ck, &crate::checksum::hex(&digest));
    out
}

/// The inclusive block ranges a bmap lists for `map` (aligned outward to `block_size`, cut at
/// the image's last block).
pub fn block_ranges(image_size: u64, map: &ExtentMap, block_size: u64) -> Vec<(u64, u64)> {
    let bs = block_size.max(1);
    map.clip(image_size)
        .align_out(bs)
        .block_ranges(bs)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_size_matches_bmaptool() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(511), "511 bytes");
        assert_eq!(human_size(512), "0.5 KiB");
        assert_eq!(human_size(821752), "802.5 KiB");
        assert_eq!(human_size(117 * 4096), "468.0 KiB");
        assert_eq!(human_size(4 << 30), "4.0 GiB");
    }
}
