//! The list of format drivers, in the order they are asked, and what is answered by asking
//! them all.

use super::{archive, cd, compress, container, raw};
use crate::format::driver::{FormatDriver, Probe};
use crate::format::kind::Format;
use crate::io::ReadAt;

/// Every format driver, in order of precedence: the first whose
/// [`detect`](FormatDriver::detect) says yes opens the layer.
///
/// Trailer formats come first: a fixed VHD's disk and a DMG's data fork start with whatever
/// they hold (an MBR, a bzip2 or zlib chunk), only their last sector says what the file is.
/// Seekable zstd comes before zstd (the same frames plus a seek table). The CD formats and the
/// CUE sheet come after every magic number, since their marks sit deeper or are text; raw
/// comes last and takes anything.
pub static DRIVERS: &[&dyn FormatDriver] = &[
    &container::vhd::Driver,
    &container::dmg::Driver,
    &cd::nrg::Driver,
    &compress::gzip::Driver,
    &compress::xz::Driver,
    &compress::seekable_zstd::Driver,
    &compress::zstd::Driver,
    &compress::bzip2::Driver,
    &compress::lz4::Driver,
    &archive::zip::Driver,
    &archive::sevenzip::Driver,
    &archive::tar::Driver,
    &container::qcow::DriverV1,
    &container::qcow::DriverV2,
    &container::vhdx::Driver,
    &container::vmdk::SparseDriver,
    &container::vmdk::DescriptorDriver,
    &container::vdi::Driver,
    &container::android_sparse::Driver,
    &cd::bin::Driver,
    &cd::iso::Driver,
    &cd::cue::Driver,
    &cd::toc::Driver,
    &raw::Driver,
];

/// The driver that recognises the probed bytes (raw, if no other does).
pub(crate) fn detect(probe: &Probe<'_>) -> &'static dyn FormatDriver {
    DRIVERS
        .iter()
        .copied()
        .find(|d| d.detect(probe))
        .unwrap_or(&raw::Driver)
}

/// Recognises the format of `src` from its bytes: its head, and its last sector. Short or
/// empty input is simply [`Format::Raw`].
pub fn sniff(src: &dyn ReadAt) -> std::io::Result<Format> {
    Ok(detect(&Probe::read(src, true)?).format())
}

/// The format whose trailer ends `last`, the last bytes (at least 512 when the image is that
/// long) of a decoded image, if any: a fixed VHD or a DMG. For readers that learn the end of a
/// stream only when they get there (a stream opened with `StreamEnd::Deferred`), so
/// they can still tell the image was not raw.
pub fn trailer_format(last: &[u8]) -> Option<Format> {
    DRIVERS.iter().find(|d| d.trailer(last)).map(|d| d.format())
}

/// Fails with [`crate::Error::Replan`] if `tail`, the last bytes of a stream of hinted size
/// that a pass read to its end (`Pipeline::to_end`, before its last job reaches the sinks),
/// is a container's trailer: the pass took for a raw disk what is a fixed VHD or a DMG.
pub(crate) fn check_tail(tail: Option<&[u8]>) -> crate::Result<()> {
    match tail.and_then(trailer_format) {
        None => Ok(()),
        Some(f) => Err(crate::Error::Replan {
            size: None,
            reason: format!(
                "the decoded stream ends with a {} trailer: it holds a {} image, not a raw disk",
                f.name(),
                f.name()
            ),
        }),
    }
}

#[cfg(test)]
impl Format {
    /// The driver that recognises and opens this format.
    pub(crate) fn driver(self) -> &'static dyn FormatDriver {
        driver(self)
    }
}

/// The driver of `format`.
#[cfg(test)]
pub(crate) fn driver(format: Format) -> &'static dyn FormatDriver {
    DRIVERS
        .iter()
        .copied()
        .find(|d| d.format() == format)
        .unwrap_or(&raw::Driver)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::cd::CD_SYNC;
    use crate::format::driver::{OpenCtx, OpenOptions};
    use crate::io::MemSource;
    use std::sync::Arc;

    fn sn(b: &[u8]) -> Format {
        sniff(&MemSource(b.to_vec())).unwrap()
    }

    #[test]
    fn short_inputs_are_raw() {
        for n in 0..40 {
            assert_eq!(sn(&vec![0u8; n]), Format::Raw);
        }
        assert_eq!(sn(b"\x1f\x8b"), Format::Raw);
        assert_eq!(sn(b"\x1f\x8b\x08"), Format::Gzip);
    }

    #[test]
    fn seekable_zstd_footer() {
        // one zstd magic, then a seek table with one entry, no checksums
        let mut v = 0xFD2F_B528u32.to_le_bytes().to_vec();
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&0x184D_2A5Eu32.to_le_bytes());
        v.extend_from_slice(&17u32.to_le_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&1u32.to_le_bytes());
        v.push(0);
        v.extend_from_slice(&0x8F92_EAB1u32.to_le_bytes());
        assert_eq!(sn(&v), Format::SeekableZstd);
        v[12 + 4] = 18;
        assert_eq!(sn(&v), Format::Zstd);
    }

    #[test]
    fn tail_and_deep_magics() {
        let mut v = vec![0u8; 4096];
        v[4096 - 512..4096 - 504].copy_from_slice(b"conectix");
        assert_eq!(sn(&v), Format::Vhd);
        assert_eq!(trailer_format(&v), Some(Format::Vhd));
        assert_eq!(trailer_format(&v[..4000]), None);
        let mut v = vec![0u8; 40000];
        v[32769..32774].copy_from_slice(b"CD001");
        assert_eq!(sn(&v), Format::Iso9660);
        let mut v = vec![0u8; 2352 * 2];
        v[..12].copy_from_slice(&CD_SYNC);
        v[2352..2364].copy_from_slice(&CD_SYNC);
        assert_eq!(sn(&v), Format::CdRaw);
    }

    #[test]
    fn every_driver_survives_short_and_garbage_input() {
        let opts = OpenOptions::default();
        for d in DRIVERS {
            for n in [0usize, 4, 100, 600, 5000] {
                for fill in [0u8, 0xFF] {
                    let mut ctx = OpenCtx::new(&opts, std::path::Path::new("t"), None);
                    let src: Arc<dyn ReadAt> = Arc::new(MemSource(vec![fill; n]));
                    let _ = d.open(src, &mut ctx);
                }
            }
        }
    }

    #[test]
    fn every_format_has_one_driver() {
        for (i, d) in DRIVERS.iter().enumerate() {
            let f = d.format();
            assert!(
                DRIVERS[i + 1..].iter().all(|e| e.format().id() != f.id()),
                "{} listed twice",
                f.id()
            );
            assert_eq!(f.driver().format(), f);
        }
        assert_eq!(DRIVERS.last().map(|d| d.format()), Some(Format::Raw));
    }
}
