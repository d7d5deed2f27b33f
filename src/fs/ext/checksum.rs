//! The checksums ext uses: CRC-32C for `metadata_csum` (superblock, descriptors, bitmaps,
//! inodes, tree blocks) and CRC-16 for the older `gdt_csum` descriptors.

/// CRC-32C (Castagnoli) register update without the final inversion, the form ext4 and
/// btrfs store. The standard CRC-32C of `data` is `!crc32c_raw(!0, data)`.
pub fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    }
    static TABLE: [u32; 256] = table();
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC-16 (reflected polynomial 0xA001, no final inversion), as `gdt_csum` uses.
pub(super) fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The catalogue check value of CRC-32C.
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn crc16_check_value() {
        // CRC-16/ARC check value (init 0); ext's variant only differs in its initial value.
        assert_eq!(crc16(0, b"123456789"), 0xBB3D);
    }
}
