//! `drives`: the target list and its reasons, read from fixture sysfs/procfs trees shaped like
//! the kernel's (the `/sys/block` links into the device tree, `device` links, partitions as
//! subdirectories, holders and slaves, a mountinfo and a swaps table), then from this machine
//! with one real loop device.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use blockwise::drives::{self, Check, Drive, Host, Reason, SysRoot, Transport};

/// A fixture tree: `sys/`, `proc/`, `dev/` under a temporary directory.
struct Fixture {
    dir: tempfile::TempDir,
}

fn write(p: &Path, text: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

impl Fixture {
    fn new() -> Fixture {
        let f = Fixture {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["sys/block", "proc/self", "dev"] {
            fs::create_dir_all(f.dir.path().join(d)).unwrap();
        }
        f.mountinfo("");
        f.swaps(&[]);
        f
    }

    fn root(&self) -> SysRoot {
        SysRoot::under(self.dir.path())
    }

    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    /// A disk at `sys/devices/{devpath}/block/{name}`, linked from `sys/block/{name}`, with a
    /// `device` link to `{devpath}` (where `device_attrs` are written). `size` in sectors.
    fn disk(
        &self,
        name: &str,
        devpath: &str,
        dev: &str,
        size: &str,
        flags: u8,
        device_attrs: &[(&str, &str)],
    ) -> PathBuf {
        let devdir = self.sys().join("devices").join(devpath);
        let dir = devdir.join("block").join(name);
        write(&dir.join("dev"), &format!("{dev}\n"));
        write(&dir.join("size"), &format!("{size}\n"));
        let bit = |b: u8| if flags & b != 0 { "1\n" } else { "0\n" };
        write(&dir.join("removable"), bit(REMOVABLE));
        write(&dir.join("ro"), bit(RO));
        write(&dir.join("queue/logical_block_size"), "512\n");
        fs::create_dir_all(dir.join("holders")).unwrap();
        fs::create_dir_all(dir.join("slaves")).unwrap();
        if !devpath.starts_with("virtual") {
            symlink("../..", dir.join("device")).unwrap();
        }
        for (k, v) in device_attrs {
            write(&devdir.join(k), &format!("{v}\n"));
        }
        symlink(
            format!("../devices/{devpath}/block/{name}"),
            self.sys().join("block").join(name),
        )
        .unwrap();
        dir
    }

    /// A partition `name` of the disk at `disk_dir`; start and size in sectors.
    fn part(&self, disk_dir: &Path, name: &str, number: u32, start: u64, size: u64, dev: &str) {
        let dir = disk_dir.join(name);
        write(&dir.join("partition"), &format!("{number}\n"));
        write(&dir.join("start"), &format!("{start}\n"));
        write(&dir.join("size"), &format!("{size}\n"));
        write(&dir.join("dev"), &format!("{dev}\n"));
        fs::create_dir_all(dir.join("holders")).unwrap();
    }

    /// A device-mapper device stacked on `slaves` (their sysfs dirs): `holders/dm-N` on each.
    fn dm(&self, name: &str, dm_name: &str, dev: &str, slaves: &[&Path]) {
        let dir = self.disk(name, &format!("virtual/block/{name}"), dev, "1000", 0, &[]);
        // `disk` puts it at devices/virtual/block/NAME/block/NAME; fine for a fixture.
        write(&dir.join("dm/name"), dm_name);
        for s in slaves {
            let sname = s.file_name().unwrap();
            symlink(s, dir.join("slaves").join(sname)).unwrap();
            symlink(&dir, s.join("holders").join(name)).unwrap();
        }
    }

    /// A loop device; `backing` is its `loop/backing_file` when attached.
    fn loop_dev(&self, name: &str, minor: u32, size: u64, backing: Option<&str>) {
        let dir = self.disk(
            name,
            &format!("virtual/block/{name}"),
            &format!("7:{minor}"),
            &size.to_string(),
            0,
            &[],
        );
        if let Some(b) = backing {
            write(&dir.join("loop/backing_file"), &format!("{b}\n"));
            write(&dir.join("loop/offset"), "0\n");
        }
    }

    fn mountinfo(&self, text: &str) {
        write(&self.dir.path().join("proc/self/mountinfo"), text);
    }

    fn swaps(&self, devices: &[&str]) {
        let mut t = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        for d in devices {
            t.push_str(&format!("{d}\tpartition\t8388604\t0\t-2\n"));
        }
        write(&self.dir.path().join("proc/swaps"), &t);
    }
}

/// `disk` flags: the kernel's removable and read-only flags.
const REMOVABLE: u8 = 1;
const RO: u8 = 2;

const USB_HOST: &str = "pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0";
const USB_HOST2: &str = "pci0000:00/0000:00:14.0/usb2/2-3/2-3:1.0/host7/target7:0:0/7:0:0:0";
const USB_HOST3: &str = "pci0000:00/0000:00:14.0/usb2/2-4/2-4:1.0/host8/target8:0:0/8:0:0:0";
const USB_HOST4: &str = "pci0000:00/0000:00:14.0/usb2/2-5/2-5:1.0/host9/target9:0:0/9:0:0:0";
const MMC_HOST: &str = "platform/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa";
const NVME_HOST: &str = "pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0";
const ATA_HOST: &str = "pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0";

/// A laptop with a USB stick, an SD card in its slot, an NVMe system disk (ESP, LUKS root,
/// swap), a SATA data disk, a mounted USB disk, a write-protected card in a USB reader, an
/// empty reader, loop devices (attached, unused, over a disk) and RAM disks.
fn laptop() -> Fixture {
    let f = Fixture::new();
    let sdb = f.disk(
        "sdb",
        USB_HOST,
        "8:16",
        "61071360",
        REMOVABLE,
        &[("vendor", "SanDisk "), ("model", "Cruzer Blade    ")],
    );
    f.part(&sdb, "sdb1", 1, 8192, 524288, "8:17");
    f.part(&sdb, "sdb2", 2, 532480, 60538880, "8:18");

    let mmc = f.disk(
        "mmcblk0",
        MMC_HOST,
        "179:0",
        "62333952",
        0,
        &[("type", "SD"), ("name", "SD32G"), ("serial", "0x1234abcd")],
    );
    f.part(&mmc, "mmcblk0p1", 1, 8192, 1048576, "179:1");

    let nvme = f.disk(
        "nvme0n1",
        NVME_HOST,
        "259:0",
        "1000215216",
        0,
        &[
            ("model", "Samsung SSD 980 PRO 1TB"),
            ("serial", "S5GXNF0R123456"),
        ],
    );
    write(&nvme.join("wwid"), "eui.002538b111b2c3d4\n");
    f.part(&nvme, "nvme0n1p1", 1, 2048, 1048576, "259:1");
    f.part(&nvme, "nvme0n1p2", 2, 1050624, 980000000, "259:2");
    f.part(&nvme, "nvme0n1p3", 3, 981050624, 16777216, "259:3");
    f.dm("dm-0", "luks-root", "253:0", &[&nvme.join("nvme0n1p2")]);

    f.disk(
        "sda",
        ATA_HOST,
        "8:0",
        "3907029168",
        0,
        &[("vendor", "ATA     "), ("model", "WDC WD20EZRZ-00Z")],
    );

    let sdc = f.disk(
        "sdc",
        USB_HOST2,
        "8:32",
        "1953525168",
        0,
        &[("vendor", "WD"), ("model", "Elements 2620")],
    );
    f.part(&sdc, "sdc1", 1, 2048, 1953521664, "8:33");

    f.disk(
        "sdd",
        USB_HOST3,
        "8:48",
        "15523840",
        REMOVABLE | RO,
        &[("vendor", "Generic-"), ("model", "SD/MMC")],
    );
    f.disk(
        "sde",
        USB_HOST4,
        "8:64",
        "0",
        REMOVABLE,
        &[("vendor", "Generic-"), ("model", "Micro SD/M2")],
    );

    f.loop_dev("loop0", 0, 8388608, Some("/home/u/images/card.img"));
    f.loop_dev("loop1", 1, 0, None);
    f.loop_dev("loop2", 2, 1953525168, Some("/dev/sdc"));
    f.disk("zram0", "virtual/block/zram0", "252:0", "16777216", 0, &[]);

    f.mountinfo(
        "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/luks-root rw\n\
         23 22 259:1 / /boot/efi rw,relatime shared:2 - vfat /dev/nvme0n1p1 rw\n\
         24 22 0:22 / /proc rw,relatime - proc proc rw\n\
         25 22 8:33 / /media/u/my\\040disk rw,nosuid shared:3 - exfat /dev/sdc1 rw\n",
    );
    f.swaps(&["/dev/nvme0n1p3", "/swapfile", "/dev/zram0"]);
    f
}

fn by_name<'a>(list: &'a [Drive], name: &str) -> &'a Drive {
    list.iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

#[test]
fn usb_stick_is_offered_with_its_model_and_partitions() {
    let f = laptop();
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "sdb");
    assert_eq!(d.transport, Transport::Usb);
    assert_eq!(d.vendor.as_deref(), Some("SanDisk"));
    assert_eq!(d.model.as_deref(), Some("Cruzer Blade"));
    assert_eq!(d.description(), "SanDisk Cruzer Blade");
    assert_eq!(d.size, 61071360 * 512);
    assert_eq!(d.dev.as_deref(), Some("8:16"));
    assert_eq!(d.logical_block_size, Some(512));
    assert!(d.removable && !d.read_only);
    assert_eq!(d.path, f.root().dev.join("sdb"));
    let p: Vec<_> = d
        .partitions
        .iter()
        .map(|p| (p.name.as_str(), p.number, p.start, p.size))
        .collect();
    assert_eq!(
        p,
        [
            ("sdb1", Some(1), Some(8192 * 512), Some(524288 * 512)),
            ("sdb2", Some(2), Some(532480 * 512), Some(60538880 * 512)),
        ]
    );
    assert!(d.verdict.offered(), "{:?}", d.verdict);
}

#[test]
fn sd_card_in_an_mmc_slot_is_offered_though_the_kernel_says_not_removable() {
    let f = laptop();
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "mmcblk0");
    assert_eq!(d.transport, Transport::Sd);
    assert_eq!(d.model.as_deref(), Some("SD32G"));
    assert_eq!(d.vendor, None);
    assert_eq!(d.serial.as_deref(), Some("0x1234abcd"));
    assert!(!d.removable && d.counts_as_removable());
    assert_eq!(d.partitions.len(), 1);
    assert!(d.verdict.offered(), "{:?}", d.verdict);

    // The same slot holding soldered eMMC is an internal disk.
    write(
        &f.sys().join("devices").join(MMC_HOST).join("type"),
        "MMC\n",
    );
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "mmcblk0");
    assert_eq!(d.transport, Transport::Emmc);
    assert_eq!(d.verdict.reasons, [Reason::NotRemovable]);
}

#[test]
fn nvme_system_disk_is_refused_through_luks_and_swap() {
    let f = laptop();
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "nvme0n1");
    assert_eq!(d.transport, Transport::Nvme);
    assert_eq!(d.model.as_deref(), Some("Samsung SSD 980 PRO 1TB"));
    assert_eq!(d.serial.as_deref(), Some("S5GXNF0R123456"));
    assert_eq!(d.wwid.as_deref(), Some("eui.002538b111b2c3d4"));
    assert_eq!(
        d.verdict.reasons,
        [
            Reason::SystemDisk {
                points: vec!["/".into(), "/boot/efi".into(), "[swap]".into()]
            },
            Reason::InUseBy {
                holders: vec!["dm-0".into()]
            },
            Reason::NotRemovable,
        ]
    );
    // The root filesystem is seen on the partition under the LUKS mapping.
    let p2 = &d.partitions[1];
    assert_eq!(p2.holders, ["dm-0"]);
    assert_eq!(p2.mounts.len(), 1);
    assert_eq!(
        (p2.mounts[0].device.as_str(), p2.mounts[0].point.as_str()),
        ("dm-0", "/")
    );
    assert_eq!(d.partitions[2].mounts[0].point, "[swap]");
    assert!(!d.verdict.offered_with_force());
}

/// What `backup` asks before reading a device: every mount and swap on the disk, its
/// partitions and what is stacked on them (here the LUKS mapping holding `/`).
#[test]
fn uses_cover_partitions_and_stacked_devices() {
    let f = laptop();
    let host = Host::read(&f.root());
    let points =
        |n: &str| -> Vec<String> { host.uses(n).into_iter().map(|m| m.point.clone()).collect() };
    let mut nvme = points("nvme0n1");
    nvme.sort();
    assert_eq!(nvme, ["/", "/boot/efi", "[swap]"]);
    assert_eq!(points("nvme0n1p2"), ["/"]);
    assert_eq!(points("sdc"), ["/media/u/my disk"]);
    assert!(points("sdb").is_empty());
}

#[test]
fn a_mounted_disk_is_refused_naming_the_mount_point() {
    let f = laptop();
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "sdc");
    assert_eq!(d.transport, Transport::Usb);
    assert!(!d.removable && d.counts_as_removable());
    assert_eq!(d.verdict.reasons.len(), 1, "{:?}", d.verdict);
    let Reason::Mounted { mounts } = &d.verdict.reasons[0] else {
        panic!("{:?}", d.verdict)
    };
    assert_eq!(mounts[0].device, "sdc1");
    assert_eq!(mounts[0].point, "/media/u/my disk");
    assert!(d.verdict.reasons[0]
        .to_string()
        .contains("/media/u/my disk"));
}

#[test]
fn loop_devices_offered_with_their_file_unused_or_over_a_refused_disk_not() {
    let f = laptop();
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "loop0");
    assert_eq!(d.transport, Transport::Loop);
    let b = d.backing.as_ref().unwrap();
    assert_eq!(b.file, Path::new("/home/u/images/card.img"));
    assert!(!b.deleted && b.block_device.is_none());
    assert!(d.verdict.offered(), "{:?}", d.verdict);

    assert_eq!(
        by_name(&list, "loop1").verdict.reasons,
        [Reason::UnusedLoop]
    );

    let d = by_name(&list, "loop2");
    assert_eq!(
        d.backing.as_ref().unwrap().block_device.as_deref(),
        Some("sdc")
    );
    assert!(
        matches!(&d.verdict.reasons[..], [Reason::BackedBy { disk, reasons }]
            if disk == "sdc" && matches!(reasons[..], [Reason::Mounted { .. }])),
        "{:?}",
        d.verdict
    );
}

#[test]
fn read_only_empty_and_internal_disks_are_refused_for_what_they_are() {
    let f = laptop();
    let list = drives::list(&f.root(), &Check::default());
    assert_eq!(by_name(&list, "sdd").verdict.reasons, [Reason::ReadOnly]);
    assert_eq!(by_name(&list, "sde").verdict.reasons, [Reason::Empty]);
    let sda = by_name(&list, "sda");
    assert_eq!(sda.transport, Transport::Ata);
    assert_eq!(sda.verdict.reasons, [Reason::NotRemovable]);
    assert!(sda.verdict.offered_with_force());
    // Stacked devices are not disks to list; a RAM disk is, refused while it holds swap.
    assert!(list.iter().all(|d| d.name != "dm-0"));
    let zram = by_name(&list, "zram0");
    assert!(
        zram.verdict.reasons.contains(&Reason::NotRemovable),
        "{zram:?}"
    );
    assert!(!zram.verdict.offered() && !zram.verdict.offered_with_force());
    let offered: Vec<&str> = list
        .iter()
        .filter(|d| d.verdict.offered())
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(offered, ["loop0", "mmcblk0", "sdb"]);
}

#[test]
fn flash_checks_size_and_where_the_image_lives() {
    let f = laptop();
    let root = f.root();
    // A 20 GiB image: the 29 GiB stick fits, the 29.7 GiB card fits, the 4 GiB loop does not.
    let check = Check {
        min_size: Some(20 << 30),
        image: Some("/media/u/my disk/pi.img".into()),
    };
    let list = drives::list(&root, &check);
    assert!(by_name(&list, "sdb").verdict.offered());
    assert_eq!(
        by_name(&list, "loop0").verdict.reasons,
        [Reason::TooSmall {
            size: 8388608 * 512,
            needed: 20 << 30
        }]
    );
    assert!(by_name(&list, "sdc")
        .verdict
        .reasons
        .contains(&Reason::HoldsImage));
    // A loop device over the image itself.
    let check = Check {
        min_size: None,
        image: Some("/home/u/images/card.img".into()),
    };
    let d = drives::find(&root, &root.dev.join("loop0"), &check).unwrap();
    assert_eq!(d.verdict.reasons, [Reason::IsImage]);
    // find names whole disks only.
    assert!(drives::find(&root, &root.dev.join("sdb1"), &check).is_none());
    assert!(drives::find(&root, &root.dev.join("dm-0"), &check).is_none());
    assert_eq!(
        drives::find(&root, &root.dev.join("sdb"), &check)
            .unwrap()
            .name,
        "sdb"
    );
}

#[test]
fn labels_are_probed_where_the_device_can_be_read() {
    let f = laptop();
    if !common::have("mkfs.vfat") {
        return;
    }
    // A fixture's dev/sdb1 is a regular file holding a FAT filesystem.
    let p = f.dir.path().join("dev/sdb1");
    common::sh(&format!(
        "mkfs.vfat -C -n BOOT '{}' 2048 >/dev/null",
        p.display()
    ));
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "sdb");
    assert_eq!(d.partitions[0].fs_type.as_deref(), Some("vfat"));
    assert_eq!(d.partitions[0].label.as_deref(), Some("BOOT"));
    assert_eq!(d.partitions[1].fs_type, None);
}

#[test]
fn btrfs_root_with_an_anonymous_device_number_is_found_by_its_source() {
    let f = Fixture::new();
    let sda = f.disk("sda", ATA_HOST, "8:0", "1000000", 0, &[]);
    f.part(&sda, "sda2", 2, 2048, 900000, "8:2");
    f.mountinfo("30 1 0:31 /@ / rw,relatime - btrfs /dev/sda2 rw,subvol=/@\n");
    let list = drives::list(&f.root(), &Check::default());
    assert_eq!(
        list[0].verdict.reasons[0],
        Reason::SystemDisk {
            points: vec!["/".into()]
        }
    );
}

#[test]
fn garbage_and_missing_files_are_unknown_facts_not_panics() {
    let f = Fixture::new();
    let dir = f.disk("sdx", USB_HOST, "8:99", "lots\n\0\u{1}", REMOVABLE, &[]);
    fs::remove_file(dir.join("ro")).unwrap();
    fs::remove_file(dir.join("queue/logical_block_size")).unwrap();
    write(&dir.join("sdx1/partition"), "one");
    write(&dir.join("sdx1/size"), "99999999999999999999999");
    // A dangling entry and a plain file where a disk should be.
    symlink("../devices/nowhere", f.sys().join("block/sdy")).unwrap();
    write(&f.sys().join("block/sdz"), "x");
    f.mountinfo("garbage\n1 2 3\n\n- - - - - - -\n");
    write(&f.dir.path().join("proc/swaps"), "\n\n\\\\\n");
    let list = drives::list(&f.root(), &Check::default());
    let d = by_name(&list, "sdx");
    assert_eq!(d.size, 0);
    assert_eq!(d.logical_block_size, None);
    assert_eq!(d.partitions[0].number, None);
    assert_eq!(d.partitions[0].size, None);
    assert_eq!(d.verdict.reasons, [Reason::Empty]);
    // An empty tree is an empty list.
    let e = tempfile::tempdir().unwrap();
    assert!(drives::list(&SysRoot::under(e.path()), &Check::default()).is_empty());
    assert!(Host::read(&SysRoot::under(e.path())).mounts().is_empty());
}

#[test]
fn json_names_each_reason_and_says_it_in_words() {
    let f = laptop();
    let list = drives::list(&f.root(), &Check::default());
    let v = serde_json::to_value(by_name(&list, "nvme0n1")).unwrap();
    assert_eq!(v["transport"], "nvme");
    assert_eq!(v["verdict"]["offered"], false);
    assert_eq!(v["verdict"]["reasons"][0]["reason"], "system_disk");
    assert_eq!(v["verdict"]["reasons"][0]["points"][0], "/");
    assert_eq!(v["verdict"]["reasons"][2]["reason"], "not_removable");
    assert_eq!(
        v["verdict"]["messages"][0],
        "system disk (holds /, /boot/efi, [swap])"
    );
    assert_eq!(v["partitions"][1]["mounts"][0]["point"], "/");
    let v = serde_json::to_value(by_name(&list, "loop0")).unwrap();
    assert_eq!(v["backing"]["file"], "/home/u/images/card.img");
    assert_eq!(v["verdict"]["offered"], true);
    assert_eq!(v["verdict"]["reasons"], serde_json::json!([]));
}

/// Runs `blockwise drives ARGS` on this machine: exit 0, no panic.
fn run_drives(args: &[&str]) -> String {
    let o = common::blockwise()
        .arg("drives")
        .args(args)
        .output()
        .expect("run blockwise");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "drives {args:?} failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn this_machine_lists_without_panicking_and_refuses_its_system_disk() {
    run_drives(&[]);
    run_drives(&["--all"]);
    let v: serde_json::Value = serde_json::from_str(&run_drives(&["--all", "--json"])).unwrap();
    assert_eq!(v["schema_version"], 1);
    // Wherever `/` is mounted from a block device, that disk is refused as the system disk.
    let host = Host::read(&SysRoot::system());
    if let Some(root) = host.mounts().iter().find(|m| m.point == "/") {
        for disk in host.disks_under(&root.device) {
            let d = v["drives"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["name"] == disk.as_str())
                .unwrap_or_else(|| panic!("system disk {disk} not listed"));
            assert_eq!(d["verdict"]["reasons"][0]["reason"], "system_disk", "{d}");
        }
    }
}

#[test]
fn a_real_loop_device_is_listed_with_its_backing_file() {
    if !common::is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("target.img");
    fs::write(&file, vec![0u8; 4 << 20]).unwrap();
    // Detached on drop, also when an assertion below fails.
    let Some(lp) = common::Loop::attach(&file) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_str(&run_drives(&["--all", "--json"])).unwrap();
    let d = v["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == lp.dev.as_str())
        .unwrap_or_else(|| panic!("{} not listed: {v}", lp.dev));
    let want = fs::canonicalize(&file).unwrap();
    assert_eq!(d["backing"]["file"], want.to_str().unwrap(), "{d}");
    assert_eq!(d["transport"], "loop");
    assert_eq!(d["size"], 4 << 20);
    assert_eq!(d["verdict"]["offered"], true, "{d}");
    // Offered, so also listed without --all, and by the library's find for flash.
    let v: serde_json::Value = serde_json::from_str(&run_drives(&["--json"])).unwrap();
    assert!(v["drives"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["path"] == lp.dev.as_str()));
    let check = Check {
        min_size: None,
        image: Some(file.clone()),
    };
    let d = drives::find(&SysRoot::system(), Path::new(&lp.dev), &check).unwrap();
    assert_eq!(d.verdict.reasons, [Reason::IsImage]);
    // The human table: the loop device under "Candidate targets" with its size, transport
    // and backing file; the system disk under "Not offered" with its reason.
    let text = run_drives(&["--all"]);
    let (offered, refused) = text
        .split_once("Not offered:")
        .unwrap_or((text.as_str(), ""));
    assert!(offered.starts_with("Candidate targets:"), "{text}");
    let line = offered
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{} ", lp.dev)))
        .unwrap_or_else(|| panic!("{} not in the table: {text}", lp.dev));
    assert!(line.contains("4.0 MiB") && line.contains("loop"), "{line}");
    assert!(
        offered.contains(&format!("backing file {}", want.display())),
        "{text}"
    );
    if host_has_system_disk() {
        assert!(refused.contains("not offered: system disk"), "{text}");
    }
}

/// True when `/` is mounted from a block device this machine lists.
fn host_has_system_disk() -> bool {
    let host = Host::read(&SysRoot::system());
    host.mounts()
        .iter()
        .any(|m| m.point == "/" && !host.disks_under(&m.device).is_empty())
}
