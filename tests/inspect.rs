//! `inspect` end to end: the bundled sample, the CLI contract, and the 32 GiB sparse image
//! that must be answered from a few MiB of reads.

mod common;

use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use blockwise::io::{Counting, ReadAt};
use blockwise::layout::{PartKind, TableKind};
use blockwise::report::{inspect_path, inspect_source};
use common::*;

#[test]
fn sample_card_is_reported_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let r = inspect_path(&img).unwrap();
    assert_eq!(r.image_size, 128 << 20);
    assert_eq!(r.layout.table, TableKind::Mbr);
    assert_eq!(r.layout.disk_id.as_deref(), Some("5eed0001"));
    assert_eq!(r.partitions.len(), 2, "{:#?}", r.partitions);
    let (p1, p2) = (&r.partitions[0], &r.partitions[1]);
    assert_eq!((p1.index, p1.start, p1.size), (1, 8192 * 512, 98304 * 512));
    assert!(matches!(
        p1.kind,
        PartKind::Mbr {
            type_code: 0x0c,
            bootable: true,
            ..
        }
    ));
    let f1 = p1.filesystem.as_ref().expect("FAT32 found");
    assert_eq!(f1.fs_type.name(), "vfat");
    assert_eq!(f1.label.as_deref(), Some("bootfs"));
    assert_eq!(f1.uuid.as_deref(), Some("5EED-B007"));
    assert_eq!(f1.version.as_deref(), Some("FAT32"));
    let f2 = p2.filesystem.as_ref().expect("ext4 found");
    assert_eq!(f2.fs_type.name(), "ext4");
    assert_eq!(f2.label.as_deref(), Some("rootfs"));
    assert_eq!(
        f2.uuid.as_deref(),
        Some("5eed0000-0000-4000-8000-00000000f00d")
    );
    assert_eq!(r.boot.active_partition, Some(1));
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // blkid agrees on every partition (the oracle).
    if have("blkid") {
        for p in &r.partitions {
            let kv = blkid(&img, Some(p.start));
            let f = p.filesystem.as_ref().unwrap();
            assert_eq!(get(&kv, "ID_FS_TYPE"), Some(f.fs_type.name()));
            assert_eq!(get(&kv, "ID_FS_LABEL"), f.label.as_deref());
            assert_eq!(get(&kv, "ID_FS_UUID"), f.uuid.as_deref());
        }
    }
}

#[test]
fn compressed_sample_matches_raw() {
    let xz = repo().join("samples/card.img.xz");
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let a = inspect_path(&xz).unwrap();
    let b = inspect_path(&img).unwrap();
    assert_eq!(
        a.chain.first().map(|l| l.format),
        Some(blockwise::format::Format::Xz)
    );
    assert_eq!(a.image_size, b.image_size);
    let fs = |r: &blockwise::report::Report| {
        r.partitions
            .iter()
            .map(|p| {
                p.filesystem
                    .as_ref()
                    .map(|f| (f.fs_type, f.label.clone(), f.uuid.clone()))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(fs(&a), fs(&b));
}

#[test]
fn cli_json_and_exit_codes() {
    let xz = repo().join("samples/card.img.xz");
    let out = blockwise()
        .args(["inspect", "--json"])
        .arg(&xz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["layout"]["table"], "mbr");
    assert_eq!(v["partitions"][1]["filesystem"]["fs_type"], "ext4");
    assert_eq!(v["chain"][0]["format"], "xz");

    let human = blockwise().arg("inspect").arg(&xz).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("xz → raw disk image (MBR, 2 partitions)"),
        "{text}"
    );
    assert!(text.contains("\"rootfs\""), "{text}");

    let missing = blockwise()
        .args(["inspect", "/nonexistent/card.img"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("/nonexistent/card.img"), "{err}");

    let usage = blockwise().args(["inspect"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let usage = blockwise().args(["frobnicate"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn demo_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = blockwise()
        .args(["demo", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ext4"), "{text}");
    assert!(text.contains("vfat"), "{text}");
    // It converts the card to a qcow2 and reads it back as the card.
    assert!(
        text.contains("$ blockwise convert card.img card.qcow2")
            && text.contains("128.0 MiB disk with 2 partitions"),
        "{text}"
    );
    assert!(dir.path().join("card.qcow2").exists());
    // It ends by flashing the archive onto a card-sized file and verifying that.
    assert!(
        text.contains("$ blockwise flash card.img.zst sdcard.img"),
        "{text}"
    );
    let flashed = std::fs::read(dir.path().join("sdcard.img")).unwrap();
    let original = std::fs::read(dir.path().join("card.img")).unwrap();
    assert_eq!(flashed.len(), original.len());
    assert_eq!(
        flashed[..1 << 20],
        original[..1 << 20],
        "the table is there"
    );
    let last = format!("match {}", dir.path().join("card.img.bmap").display());
    assert!(text.trim_end().ends_with(&last), "{text}");
}

/// A file read with pread, for counting what inspect touches.
struct PlainFile(std::fs::File, u64);
impl ReadAt for PlainFile {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.1 {
            return Ok(0);
        }
        let n = buf.len().min((self.1 - offset) as usize);
        self.0.read_at(&mut buf[..n], offset)
    }
}

#[test]
fn sparse_32gib_gpt_ext4_inspects_fast_reading_few_mib() {
    if !have("sgdisk") || !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("big.img");
    let p = img.display();
    sh(&format!("truncate -s 32G {p}"));
    // Partition 1 runs from sector 2048 to the last usable sector (end - 34). mke2fs wipes
    // the GPT when run on the whole file, so the filesystem goes in first, then the table.
    let part_bytes = (32u64 << 30) - 2048 * 512 - 34 * 512;
    sh(&format!(
        "mkfs.ext4 -q -F -L big -E offset=1048576,lazy_itable_init=1 {p} {}k",
        part_bytes / 1024
    ));
    // `sgdisk -q` writes nothing when the file already holds a filesystem signature.
    sh(&format!(
        "sgdisk -n1:2048:0 -t1:8300 -c1:root {p} >/dev/null"
    ));
    let f = std::fs::File::open(&img).unwrap();
    let len = f.metadata().unwrap().len();
    let counting = Arc::new(Counting::new(PlainFile(f, len)));
    let t = Instant::now();
    let r = inspect_source(counting.clone(), None, "big.img").unwrap();
    let took = t.elapsed();
    assert_eq!(r.layout.table, TableKind::Gpt);
    let fs = r.partitions[0].filesystem.as_ref().expect("ext4");
    assert_eq!(fs.fs_type.name(), "ext4");
    assert_eq!(fs.label.as_deref(), Some("big"));
    let read = counting.bytes_read();
    eprintln!(
        "inspect of a 32 GiB image: {read} bytes read in {} calls, {took:?}",
        counting.calls()
    );
    assert!(read < 4 << 20, "read {read} bytes");
    assert!(took.as_millis() < 1000, "took {took:?}");
}

#[test]
fn isohybrid_iso_with_bios_and_uefi_entries() {
    if !have("xorriso") || !have("mkfs.vfat") || !have("mcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    sh(&format!(
        "set -e; cd {d}; mkdir -p iso/boot iso/EFI/BOOT; \
         dd if=/dev/urandom of=iso/boot/bios.img bs=2048 count=2 status=none; \
         truncate -s 2M efi.img; mkfs.vfat -n EFIBOOT efi.img >/dev/null; \
         echo bootx64 > BOOTX64.EFI; MTOOLS_SKIP_CHECK=1 mmd -i efi.img ::EFI ::EFI/BOOT; \
         MTOOLS_SKIP_CHECK=1 mcopy -i efi.img BOOTX64.EFI ::EFI/BOOT/; cp efi.img iso/boot/efi.img; \
         echo hello > iso/README.txt; \
         xorriso -as mkisofs -quiet -R -J -V HYBRID_TEST -b boot/bios.img -no-emul-boot \
           -boot-load-size 4 -c boot/boot.cat -eltorito-alt-boot -e boot/efi.img -no-emul-boot \
           -isohybrid-gpt-basdat -append_partition 2 0xef efi.img -o hybrid.iso iso 2>/dev/null"
    ));
    let r = inspect_path(&dir.path().join("hybrid.iso")).unwrap();
    let iso = r.whole_disk.as_ref().expect("ISO9660 over the whole image");
    assert_eq!(iso.fs_type.name(), "iso9660");
    assert_eq!(iso.label.as_deref(), Some("HYBRID_TEST"));
    assert!(r.boot.isohybrid, "{:#?}", r.boot);
    let plats: Vec<&str> = r
        .boot
        .el_torito
        .iter()
        .map(|e| e.platform.as_str())
        .collect();
    assert_eq!(plats, ["BIOS", "UEFI"], "{:#?}", r.boot.el_torito);
    assert!(
        !r.boot.esp.is_empty(),
        "appended ESP found: {:#?}",
        r.partitions
    );
    let esp = r
        .partitions
        .iter()
        .find(|p| r.boot.esp.contains(&p.index))
        .unwrap();
    assert_eq!(
        esp.filesystem.as_ref().map(|f| f.fs_type.name()),
        Some("vfat")
    );
    assert!(
        r.boot.notes.iter().any(|n| n.contains("written raw")),
        "{:?}",
        r.boot.notes
    );
}

#[test]
fn plain_iso_without_table_is_not_usb_bootable() {
    if !have("xorriso") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    sh(&format!(
        "set -e; cd {d}; mkdir -p iso/boot; dd if=/dev/urandom of=iso/boot/bios.img bs=2048 count=2 status=none; \
         xorriso -as mkisofs -quiet -V PLAIN -b boot/bios.img -no-emul-boot -boot-load-size 4 \
           -c boot/boot.cat -o plain.iso iso 2>/dev/null"
    ));
    let r = inspect_path(&dir.path().join("plain.iso")).unwrap();
    assert_eq!(r.layout.table, TableKind::None);
    assert_eq!(
        r.whole_disk.as_ref().map(|f| f.fs_type.name()),
        Some("iso9660")
    );
    assert!(!r.boot.isohybrid);
    assert!(
        r.boot.notes.iter().any(|n| n.contains("will not boot")),
        "{:?}",
        r.boot.notes
    );
}

#[test]
fn block_device_reads_like_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let Some(lp) = Loop::attach_read_only(&img) else {
        return;
    };
    let r = inspect_path(std::path::Path::new(&lp.dev));
    drop(lp);
    let r = r.unwrap();
    let f = inspect_path(&img).unwrap();
    assert!(r.block_device);
    assert_eq!(r.image_size, f.image_size);
    assert_eq!(r.partitions.len(), f.partitions.len());
    for (a, b) in r.partitions.iter().zip(&f.partitions) {
        assert_eq!(
            a.filesystem.as_ref().map(|x| &x.uuid),
            b.filesystem.as_ref().map(|x| &x.uuid)
        );
    }
}

#[test]
fn truncated_sample_warns_and_mutations_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let full = std::fs::read(&img).unwrap();
    // Cut inside the ext4 partition: the report must say the image is truncated.
    let cut = blockwise::io::MemSource(full[..100 << 20].to_vec());
    let r = inspect_source(Arc::new(cut), None, "cut").unwrap();
    assert!(
        r.warnings.iter().any(|w| w.contains("past the end")),
        "{:?}",
        r.warnings
    );
    // Deterministic byte flips in the metadata at the front of each partition.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let regions = [
        (0usize, 4096usize),
        (8192 * 512, 64 << 10),
        (106496 * 512, 64 << 10),
    ];
    let head = 106496 * 512 + (1 << 20);
    for _ in 0..300 {
        let mut m = full[..head].to_vec();
        for _ in 0..8 {
            let (s, l) = regions[(next() % 3) as usize];
            let i = s + (next() as usize % l);
            m[i] = next() as u8;
        }
        let _ = inspect_source(Arc::new(blockwise::io::MemSource(m)), None, "m");
    }
}

#[test]
fn qcow2_container_is_decoded_and_probed() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let raw = inspect_path(&img).unwrap();
    let q = dir.path().join("card.qcow2");
    sh(&format!(
        "qemu-img convert -f raw -O qcow2 '{}' '{}'",
        img.display(),
        q.display()
    ));
    let r = inspect_path(&q).unwrap();
    assert!(r.contents_decoded);
    assert_eq!(
        r.chain.first().map(|l| l.format),
        Some(blockwise::format::Format::Qcow2)
    );
    assert_eq!(r.image_size, 128 << 20, "virtual size from the header");
    assert_eq!(r.partitions.len(), raw.partitions.len());
    assert!(
        !r.warnings.iter().any(|w| w.contains("not decoded")),
        "{:?}",
        r.warnings
    );
    let out = blockwise().arg("inspect").arg(&q).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("qcow2 → raw disk image (MBR, 2 partitions)"),
        "{text}"
    );
}

#[test]
fn every_wrapper_of_the_sample_reports_the_same_disk() {
    let dir = tempfile::tempdir().unwrap();
    let img = unpack_sample(dir.path());
    let raw = inspect_path(&img).unwrap();
    let p = img.display();
    let mut made = vec![];
    for (tool, cmd, ext) in [
        ("gzip", "gzip -1 -c", "gz"),
        ("zstd", "zstd -q -1 -c", "zst"),
        ("bzip2", "bzip2 -1 -c", "bz2"),
        ("lz4", "lz4 -q -1 -c", "lz4"),
    ] {
        if have(tool) {
            let out = dir.path().join(format!("card.img.{ext}"));
            sh(&format!("{cmd} '{p}' > '{}'", out.display()));
            made.push(out);
        }
    }
    if have("zip") {
        let out = dir.path().join("card.zip");
        sh(&format!(
            "cd '{}' && zip -q -1 card.zip card.img",
            dir.path().display()
        ));
        made.push(out);
    }
    if have("img2simg") {
        let out = dir.path().join("card.simg");
        sh(&format!("img2simg '{p}' '{}'", out.display()));
        made.push(out);
    }
    for f in made {
        let r = inspect_path(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(r.image_size, raw.image_size, "{}", f.display());
        assert_eq!(r.partitions.len(), raw.partitions.len(), "{}", f.display());
        for (a, b) in r.partitions.iter().zip(&raw.partitions) {
            let fa = a
                .filesystem
                .as_ref()
                .map(|x| (x.fs_type, &x.label, &x.uuid));
            let fb = b
                .filesystem
                .as_ref()
                .map(|x| (x.fs_type, &x.label, &x.uuid));
            assert_eq!(fa, fb, "{}", f.display());
        }
    }
}
