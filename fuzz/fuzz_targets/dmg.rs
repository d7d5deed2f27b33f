#![no_main]
//! DMG (UDIF) over arbitrary bytes, with a valid `koly` trailer appended so the fuzzer reaches
//! the plist, the block tables and the chunk decoders instead of stopping at the trailer
//! check. The first input byte picks the mode:
//!
//! - `0`: the rest is an ADC stream, decoded with a 64 KiB limit (the output must respect it);
//! - `1`: the rest is a data fork followed by an XML plist (split at the first `<?xml` or
//!   `<plist`, else in the middle), the trailer pointing at both;
//! - `2`: the rest is a 2-byte fork length, the fork, then binary `mish` block tables (cut at
//!   each `mish`), which the target wraps in a plist as base64, as Apple's tools do: mutations
//!   then land in the tables' numbers rather than in their base64 text.
//!
//! Modes 1 and 2 open the file with the DMG driver and read what the disk says it holds: the
//! head, the end, and the start of every stored range (at most 16).

use std::path::Path;
use std::sync::Arc;

use blockwise::format::container::dmg::adc;
use blockwise::format::{Format, OpenCtx, OpenOptions, DRIVERS};
use blockwise::io::{MemSource, ReadAt, ReadAtExt};
use libfuzzer_sys::fuzz_target;

fn koly(fork_len: u64, xml_off: u64, xml_len: u64, sectors: u64) -> [u8; 512] {
    let mut k = [0u8; 512];
    k[0..4].copy_from_slice(b"koly");
    k[4..8].copy_from_slice(&4u32.to_be_bytes());
    k[8..12].copy_from_slice(&512u32.to_be_bytes());
    k[32..40].copy_from_slice(&fork_len.to_be_bytes());
    k[216..224].copy_from_slice(&xml_off.to_be_bytes());
    k[224..232].copy_from_slice(&xml_len.to_be_bytes());
    k[492..500].copy_from_slice(&sectors.to_be_bytes());
    k
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = u32::from(c[0]) << 16
            | u32::from(*c.get(1).unwrap_or(&0)) << 8
            | u32::from(*c.get(2).unwrap_or(&0));
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// The file of mode 2: fork, plist of the tables, trailer.
fn from_tables(rest: &[u8]) -> Option<Vec<u8>> {
    let fork_len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let rest = &rest[2..];
    let fork = rest.get(..fork_len.min(rest.len()))?;
    let mut tables = &rest[fork.len()..];
    let mut xml = String::from(
        "<?xml version=\"1.0\"?><plist version=\"1.0\"><dict><key>resource-fork</key><dict>\
         <key>blkx</key><array>",
    );
    while !tables.is_empty() {
        let next = find(&tables[1..], b"mish").map_or(tables.len(), |p| p + 1);
        xml.push_str("<dict><key>Name</key><string>t</string><key>Data</key><data>");
        xml.push_str(&b64(&tables[..next]));
        xml.push_str("</data></dict>");
        tables = &tables[next..];
    }
    xml.push_str("</array></dict></dict></plist>");
    let mut f = fork.to_vec();
    f.extend_from_slice(xml.as_bytes());
    f.extend_from_slice(&koly(
        fork.len() as u64,
        fork.len() as u64,
        xml.len() as u64,
        0,
    ));
    Some(f)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = match mode % 3 {
        0 => {
            if let Ok(out) = adc::decode(rest, 1 << 16) {
                assert!(out.len() <= 1 << 16);
            }
            return;
        }
        1 => {
            let xml = find(rest, b"<?xml")
                .or_else(|| find(rest, b"<plist"))
                .unwrap_or(rest.len() / 2) as u64;
            let mut f = rest.to_vec();
            let sectors = u64::from(mode >> 2) * 2048;
            f.extend_from_slice(&koly(xml, xml, rest.len() as u64 - xml, sectors));
            f
        }
        _ => match from_tables(rest) {
            Some(f) => f,
            None => return,
        },
    };
    let src: Arc<dyn ReadAt> = Arc::new(MemSource(file));
    let opts = OpenOptions::default();
    let mut ctx = OpenCtx::new(&opts, Path::new("fuzz.dmg"), None);
    let Some(driver) = DRIVERS.iter().find(|d| d.format() == Format::Dmg) else {
        return;
    };
    let Ok(step) = driver.open(src, &mut ctx) else {
        return;
    };
    let Some(disk) = step.inner else {
        return;
    };
    let size = disk.size();
    let _ = disk.read_upto(0, 4096);
    let _ = disk.read_upto(size.saturating_sub(4096), 4096);
    if let Some(h) = disk.allocated_hint() {
        assert!(h.end() <= size, "stored ranges end past the disk");
        for e in h.iter().take(16) {
            let _ = disk.read_upto(e.start, (e.end - e.start).min(1 << 16) as usize);
        }
    }
});
