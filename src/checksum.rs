//! The checksums on-disk formats carry, and hex, in one place on well-kept crates.
//!
//! - CRC-32C (Castagnoli): ext4 `metadata_csum`, XFS v5, btrfs. The `crc32c` crate uses the
//!   SSE4.2 / ARMv8 CRC instructions where the CPU has them, which matters for the ext inode
//!   walk and btrfs tree blocks (every block checked).
//! - CRC-32 (IEEE): GPT, LVM labels, F2FS checkpoints, via `crc32fast`.
//! - CRC-16 (ext `gdt_csum` group descriptors) and CRC-64 (xz block checks), via `crc`'s
//!   catalogued algorithms.
//!
//! Several formats store a CRC "register" rather than the finished checksum: they seed it with
//! something other than all ones, or skip the final inversion. The `_raw` functions take and
//! return that register, so callers chain fields exactly as the format's own code does.

use crc::{Crc, Table, CRC_16_MODBUS, CRC_64_XZ};

/// CRC-32C of `data`, as usually defined (all-ones seed, inverted result).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Feeds `data` into a CRC-32C `register` without the initial and final inversions: the form
/// ext4 and btrfs chain through their structures. `crc32c(d) == !crc32c_raw(!0, d)`.
pub fn crc32c_raw(register: u32, data: &[u8]) -> u32 {
    // The crate continues from a finished checksum (it inverts on the way in and out), so
    // inverting around it leaves the bare register update.
    !crc32c::crc32c_append(!register, data)
}

/// CRC-32 (IEEE 802.3, as zlib and GPT use it) of `data`.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// Feeds `data` into a CRC-32 (IEEE) `register` without the initial and final inversions: LVM
/// and F2FS seed the register with a magic number and store it as it ends.
pub(crate) fn crc32_raw(register: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!register);
    h.update(data);
    !h.finalize()
}

/// CRC-16 over the concatenation of `parts`, as ext's `gdt_csum` descriptors carry it:
/// reflected polynomial 0x8005, seed 0xFFFF, no final inversion (the catalogue's
/// CRC-16/MODBUS).
pub(crate) fn crc16_modbus(parts: &[&[u8]]) -> u16 {
    const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);
    let mut d = CRC16.digest();
    for p in parts {
        d.update(p);
    }
    d.finalize()
}

/// CRC-64 of `data` as xz's block check defines it (ECMA-182 polynomial, reflected; the
/// catalogue's CRC-64/XZ).
pub(crate) fn crc64_xz(data: &[u8]) -> u64 {
    // Slice-by-16: every decoded byte of an xz block with a CRC-64 check passes through here.
    const CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_XZ);
    CRC64.checksum(data)
}

/// Lowercase hex of `bytes` (digests in bmap files, identifiers in labels).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalogue's check input.
    const CHECK: &[u8] = b"123456789";

    /// A deterministic, irregular buffer long enough to reach the hardware and slice-by-N
    /// paths (which work on 8- and 16-byte words) with unaligned heads and tails.
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// CRC-32C one bit at a time, straight from the definition: the reference the crate's
    /// accelerated paths must match.
    fn crc32c_bitwise(mut reg: u32, data: &[u8]) -> u32 {
        for &b in data {
            reg ^= u32::from(b);
            for _ in 0..8 {
                reg = (reg >> 1) ^ (0x82F6_3B78 & (reg & 1).wrapping_neg());
            }
        }
        reg
    }

    #[test]
    fn crc32c_check_values() {
        assert_eq!(crc32c(CHECK), 0xE306_9283);
        assert_eq!(!crc32c_raw(!0, CHECK), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 (iSCSI) B.4 vectors: 32 bytes of zeros, of ones, ascending.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
    }

    #[test]
    fn crc32c_raw_matches_the_definition_and_chains() {
        let data = noise(4099);
        for (seed, len) in [
            (!0u32, 4099),
            (0, 1),
            (0x1234_5678, 17),
            (0xDEAD_BEEF, 4096),
        ] {
            assert_eq!(
                crc32c_raw(seed, &data[..len]),
                crc32c_bitwise(seed, &data[..len])
            );
        }
        // ext4 seeds with the UUID's checksum and chains field by field.
        let (a, b) = data.split_at(1000);
        assert_eq!(crc32c_raw(crc32c_raw(7, a), b), crc32c_raw(7, &data));
    }

    #[test]
    fn crc32_check_values() {
        assert_eq!(crc32(CHECK), 0xCBF4_3926);
        assert_eq!(!crc32_raw(!0, CHECK), 0xCBF4_3926);
        // CRC-32/JAMCRC is the same register without the final inversion.
        assert_eq!(crc32_raw(!0, CHECK), 0x340B_C6D9);
    }

    #[test]
    fn crc16_check_values() {
        assert_eq!(crc16_modbus(&[CHECK]), 0x4B37);
        assert_eq!(crc16_modbus(&[b"1234", b"", b"56789"]), 0x4B37);
    }

    #[test]
    fn crc64_check_values() {
        assert_eq!(crc64_xz(CHECK), 0x995D_C9BB_DF19_39FA);
        assert_eq!(crc64_xz(b""), 0);
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(hex(&[]), "");
    }
}
