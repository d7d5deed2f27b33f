//! The qcow (version 1) and qcow2 (versions 2 and 3) headers, read and checked: everything
//! the tables and the clusters are found with, and the features that change how they read.

use crate::io::{ReadAt, ReadAtExt};
use crate::util::{be32, be64};
use crate::Error;

/// Incompatible feature bits of a version 3 header that this reader understands.
pub(super) const DIRTY: u64 = 1 << 0;
/// The image was marked corrupt by qemu (its metadata failed a consistency check).
pub(super) const CORRUPT: u64 = 1 << 1;
/// Guest data lives in a separate raw file named by a header extension.
pub(super) const EXTERNAL_DATA: u64 = 1 << 2;
/// The compression type byte (offset 104) is not zlib.
pub(super) const COMPRESSION_TYPE: u64 = 1 << 3;
/// L2 entries are 16 bytes with a 32-subcluster bitmap.
pub(super) const EXTENDED_L2: u64 = 1 << 4;
const KNOWN: u64 = DIRTY | CORRUPT | EXTERNAL_DATA | COMPRESSION_TYPE | EXTENDED_L2;

/// Header extension types (qcow2 only).
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_FEATURE_NAMES: u32 = 0x6803_f857;

/// Most header extensions walked: qemu writes a handful; a hostile header cannot loop.
const MAX_EXTENSIONS: usize = 64;

/// Largest L1 table qemu accepts (32 MiB, 4 Mi entries): more is refused before it is read.
pub(super) const MAX_L1_BYTES: u64 = 32 << 20;

/// How compressed clusters are coded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Codec {
    /// Raw deflate (no zlib header), a 4 KiB window: every qcow, and qcow2 by default.
    Deflate,
    /// One zstd frame per cluster (qcow2 version 3, compression type 1).
    Zstd,
}

/// A checked qcow or qcow2 header.
#[derive(Clone, Debug)]
pub(super) struct Header {
    /// 1, 2 or 3.
    pub(super) version: u32,
    /// Virtual disk size in bytes, as the header says.
    pub(super) size: u64,
    /// log2 of the cluster size (9..=21 for qcow2, 9..=16 for qcow).
    pub(super) cluster_bits: u32,
    /// log2 of the number of entries of an L2 table.
    pub(super) l2_bits: u32,
    /// L2 entries are 16 bytes with a subcluster bitmap (qcow2 version 3).
    pub(super) extended_l2: bool,
    /// Where the active L1 table starts in the file.
    pub(super) l1_offset: u64,
    /// How many L1 entries the table holds (at least as many as the size needs).
    pub(super) l1_entries: u64,
    /// The backing file's name, as written in the image.
    pub(super) backing: Option<String>,
    /// The backing file's format, from the header extension (qcow2), when given.
    pub(super) backing_format: Option<String>,
    /// How compressed clusters are coded.
    pub(super) codec: Codec,
    /// Incompatible feature bits (version 3; 0 before).
    pub(super) incompatible: u64,
    /// Encryption method (0: none, 1: AES, 2: LUKS).
    pub(super) crypt: u32,
}

fn corrupt(detail: String) -> Error {
    Error::corrupt("qcow header", detail)
}

impl Header {
    /// Reads and checks the header of `src`: the fields every read depends on are refused
    /// when implausible (naming the field); features this reader cannot honour are refused
    /// as unsupported, naming the feature.
    pub(super) fn read(src: &dyn ReadAt) -> crate::Result<Header> {
        let h = src.read_upto(0, 112)?;
        if !h.starts_with(b"QFI\xfb") {
            return Err(corrupt("no QFI\\xfb magic".into()));
        }
        let short = || corrupt(format!("only {} bytes, too short for a header", h.len()));
        let version = be32(&h, 4).ok_or_else(short)?;
        let backing_off = be64(&h, 8).ok_or_else(short)?;
        let backing_len = be32(&h, 16).ok_or_else(short)?;
        let mut hd = match version {
            1 => Self::v1(&h).ok_or_else(short)?,
            2 | 3 => Self::v2(&h, version).ok_or_else(short)?,
            v => return Err(Error::Unsupported(format!("qcow version {v}"))),
        };
        if hd.crypt != 0 {
            let how = match hd.crypt {
                1 => "AES".to_string(),
                2 => "LUKS".to_string(),
                m => format!("method {m}"),
            };
            return Err(Error::Unsupported(format!(
                "encrypted {} image ({how} encryption, crypt_method {}): its clusters cannot \
                 be read without the key",
                if version == 1 { "qcow" } else { "qcow2" },
                hd.crypt
            )));
        }
        if backing_off != 0 && backing_len != 0 {
            // qemu limits the name to 1023 bytes.
            if backing_len > 1023 {
                return Err(corrupt(format!(
                    "backing_file_size {backing_len}: longer than the 1023 bytes qemu allows"
                )));
            }
            let b = src.read_upto(backing_off, backing_len as usize)?;
            if b.len() != backing_len as usize {
                return Err(corrupt(format!(
                    "backing file name ({backing_len} bytes at byte {backing_off}) reaches \
                     past the end of the file"
                )));
            }
            hd.backing = Some(String::from_utf8_lossy(&b).into_owned());
        }
        if version >= 2 {
            hd.extensions(src, &h)?;
        }
        hd.check_size()?;
        Ok(hd)
    }

    /// qcow version 1: 48 bytes, cluster and L2 sizes given as bit counts.
    fn v1(h: &[u8]) -> Option<Header> {
        Some(Header {
            version: 1,
            size: be64(h, 24)?,
            cluster_bits: u32::from(*h.get(32)?),
            l2_bits: u32::from(*h.get(33)?),
            extended_l2: false,
            l1_offset: be64(h, 40)?,
            l1_entries: 0,
            backing: None,
            backing_format: None,
            codec: Codec::Deflate,
            incompatible: 0,
            crypt: be32(h, 36)?,
        })
    }

    /// qcow2 versions 2 and 3 (72 bytes, then the version 3 fields).
    fn v2(h: &[u8], version: u32) -> Option<Header> {
        let incompatible = if version >= 3 { be64(h, 72)? } else { 0 };
        Some(Header {
            version,
            size: be64(h, 24)?,
            cluster_bits: be32(h, 20)?,
            l2_bits: 0,
            extended_l2: incompatible & EXTENDED_L2 != 0,
            l1_offset: be64(h, 40)?,
            l1_entries: u64::from(be32(h, 36)?),
            backing: None,
            backing_format: None,
            codec: Codec::Deflate,
            incompatible,
            crypt: be32(h, 32)?,
        })
    }

    /// The header extensions (backing format, feature names) and the version 3 feature bits.
    fn extensions(&mut self, src: &dyn ReadAt, h: &[u8]) -> crate::Result<()> {
        let cb = self.cluster_bits;
        if !(9..=21).contains(&cb) {
            return Err(corrupt(format!(
                "cluster_bits {cb}: qcow2 clusters are 2^9 to 2^21 bytes"
            )));
        }
        let header_len = if self.version >= 3 {
            let l = be32(h, 100).unwrap_or(0);
            if l < 104 || u64::from(l) > 1 << cb {
                return Err(corrupt(format!(
                    "header_length {l}: a version 3 header is 104 bytes up to one cluster"
                )));
            }
            l
        } else {
            72
        };
        if self.version >= 3 {
            let ctype = if header_len > 104 {
                h.get(104).copied()
            } else {
                None
            };
            let ctype = ctype.unwrap_or(0);
            match (ctype, self.incompatible & COMPRESSION_TYPE != 0) {
                (0, false) => {}
                (1, true) => self.codec = Codec::Zstd,
                (0, true) | (1, false) => {
                    return Err(corrupt(format!(
                        "compression_type {ctype} disagrees with incompatible feature bit 3"
                    )))
                }
                (t, _) => {
                    return Err(Error::Unsupported(format!(
                        "qcow2 compression type {t} (only zlib 0 and zstd 1 are known)"
                    )))
                }
            }
        }
        // Extensions: (type, length, data padded to 8 bytes) until type 0, all within the
        // first cluster, as qemu requires.
        let end = 1u64 << cb;
        let mut at = u64::from(header_len);
        let mut names: Vec<(u8, u8, String)> = Vec::new();
        for _ in 0..MAX_EXTENSIONS {
            if at + 8 > end {
                break;
            }
            let eh = src.read_upto(at, 8)?;
            let (Some(t), Some(len)) = (be32(&eh, 0), be32(&eh, 4)) else {
                break;
            };
            if t == EXT_END {
                break;
            }
            let data_at = at + 8;
            if data_at + u64::from(len) > end {
                return Err(corrupt(format!(
                    "header extension {t:#x} at byte {at}: {len} bytes reach past the first \
                     cluster"
                )));
            }
            match t {
                EXT_BACKING_FORMAT => {
                    let d = src.read_upto(data_at, len as usize)?;
                    self.backing_format = Some(String::from_utf8_lossy(&d).into_owned());
                }
                EXT_FEATURE_NAMES => {
                    let d = src.read_upto(data_at, len as usize)?;
                    for e in d.chunks_exact(48) {
                        let name = e[2..].split(|&b| b == 0).next().unwrap_or_default();
                        names.push((e[0], e[1], String::from_utf8_lossy(name).into_owned()));
                    }
                }
                _ => {}
            }
            at = data_at + u64::from(len).div_ceil(8) * 8;
        }
        let unknown = self.incompatible & !KNOWN;
        if unknown != 0 {
            let bits: Vec<String> = (0..64u8)
                .filter(|b| unknown & (1 << b) != 0)
                .map(|b| match names.iter().find(|n| n.0 == 0 && n.1 == b) {
                    Some(n) => format!("bit {b} ({})", n.2),
                    None => format!("bit {b}"),
                })
                .collect();
            return Err(Error::Unsupported(format!(
                "qcow2 incompatible feature {}",
                bits.join(", ")
            )));
        }
        if self.incompatible & EXTERNAL_DATA != 0 {
            return Err(Error::Unsupported(
                "qcow2 with an external data file (incompatible feature bit 2): the guest \
                 data is not in this file"
                    .into(),
            ));
        }
        self.l2_bits = cb - if self.extended_l2 { 4 } else { 3 };
        Ok(())
    }

    /// The cluster size, the L1 table's size against the disk size and qemu's bound, and
    /// (qcow) the L2 size.
    fn check_size(&mut self) -> crate::Result<()> {
        let cb = self.cluster_bits;
        if self.version == 1 {
            // qemu's bounds for qcow: clusters of 512 B to 64 KiB, L2 tables of 512 B to
            // 64 KiB.
            if !(9..=16).contains(&cb) {
                return Err(corrupt(format!(
                    "cluster_bits {cb}: qcow clusters are 2^9 to 2^16 bytes"
                )));
            }
            if !(6..=13).contains(&self.l2_bits) {
                return Err(corrupt(format!(
                    "l2_bits {}: qcow L2 tables hold 2^6 to 2^13 entries",
                    self.l2_bits
                )));
            }
        }
        // Bytes one L2 table maps: at most 2^21 × 2^18 = 2^39.
        let span_bits = cb + self.l2_bits;
        let needed = self.size.div_ceil(1u64 << span_bits);
        if self.version == 1 {
            self.l1_entries = needed;
        } else if self.l1_entries < needed {
            return Err(corrupt(format!(
                "l1_size {}: the disk of {} bytes needs {needed} L1 entries",
                self.l1_entries, self.size
            )));
        }
        let bytes = self.l1_entries * 8;
        if bytes > MAX_L1_BYTES {
            return Err(corrupt(format!(
                "L1 table of {} entries ({bytes} bytes): more than the {} MiB qemu allows \
                 (disk size {})",
                self.l1_entries,
                MAX_L1_BYTES >> 20,
                self.size
            )));
        }
        if self.version >= 2 && self.l1_offset % (1 << cb) != 0 {
            return Err(corrupt(format!(
                "l1_table_offset {} is not a multiple of the cluster size",
                self.l1_offset
            )));
        }
        Ok(())
    }

    /// The disk size qemu exposes: whole 512-byte sectors (it keeps the size as a sector
    /// count, rounding down).
    pub(super) fn disk_size(&self) -> u64 {
        self.size & !511
    }

    /// Facts for the layer's detail line.
    pub(super) fn detail(&self) -> String {
        let mut d = format!(
            "version {}, cluster {}",
            self.version,
            crate::util::human_bytes(1u64 << self.cluster_bits)
        );
        if self.extended_l2 {
            d += ", extended L2 (subclusters)";
        }
        if self.codec == Codec::Zstd {
            d += ", zstd compression";
        }
        if let Some(b) = &self.backing {
            d += &format!(", backing file {b:?}");
            if let Some(f) = &self.backing_format {
                d += &format!(" ({f})");
            }
            d += " (differencing image)";
        }
        if self.incompatible & DIRTY != 0 {
            d += ", dirty";
        }
        if self.incompatible & CORRUPT != 0 {
            d += ", marked corrupt";
        }
        d
    }
}
