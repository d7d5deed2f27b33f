//! Reading the kernel's view of block devices: `/sys/block` (disks, partitions, holders and
//! slaves, sizes, flags, models), `/proc/self/mountinfo` and `/proc/swaps`. No udev, no
//! `lsblk`. The roots are injectable ([`SysRoot`]) so tests read fixture trees.
//!
//! Odd content never panics: a missing file, a garbage number or an unreadable directory is
//! an unknown fact (`None`, empty, or false).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::model::{Backing, Drive, Mount, Partition, Transport, Verdict};

/// Where the kernel's tables are read from: `/sys`, `/proc` and `/dev` on a live system, or
/// the same layout under a fixture directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysRoot {
    /// The sysfs root (`/sys`).
    pub sys: PathBuf,
    /// The procfs root (`/proc`); `self/mountinfo` and `swaps` are read from it.
    pub proc: PathBuf,
    /// Where device nodes live (`/dev`): node paths are built from it, and the nodes are
    /// opened (read-only) to probe filesystem labels when they can be.
    pub dev: PathBuf,
}

impl SysRoot {
    /// The running system: `/sys`, `/proc`, `/dev`.
    pub fn system() -> SysRoot {
        SysRoot::under(Path::new("/"))
    }

    /// A fixture tree: `root/sys`, `root/proc`, `root/dev`.
    pub fn under(root: &Path) -> SysRoot {
        SysRoot {
            sys: root.join("sys"),
            proc: root.join("proc"),
            dev: root.join("dev"),
        }
    }
}

/// At most this many block devices (disks and partitions) are read: a bound on a hostile or
/// broken tree, far above any real machine.
const MAX_NODES: usize = 16384;

/// One block device in `/sys/block`, or a partition of one.
#[derive(Clone, Debug)]
struct Node {
    /// Its sysfs directory.
    dir: PathBuf,
    /// For a partition, the disk it belongs to.
    parent: Option<String>,
    /// Its partitions (for a disk).
    partitions: Vec<String>,
    /// `major:minor`.
    dev: Option<String>,
    /// Devices stacked on it.
    holders: Vec<String>,
    /// Devices it is stacked on.
    slaves: Vec<String>,
}

/// The machine's block devices and what uses them, read once.
#[derive(Clone, Debug)]
pub struct Host {
    root: SysRoot,
    /// Disks (the entries of `/sys/block`), in name order.
    disks: Vec<String>,
    nodes: BTreeMap<String, Node>,
    by_dev: HashMap<String, String>,
    /// Every mount and active swap on a block device, in table order.
    mounts: Vec<Mount>,
}

/// A sysfs attribute, trimmed; `None` when missing, unreadable, empty or not text.
fn attr(path: &Path) -> Option<String> {
    let mut s = String::new();
    fs::File::open(path)
        .ok()?
        .take(4096)
        .read_to_string(&mut s)
        .ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A decimal sysfs attribute.
fn attr_u64(path: &Path) -> Option<u64> {
    attr(path)?.parse().ok()
}

/// The names in a sysfs directory (`holders/`, `slaves/`), sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .take(MAX_NODES)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Undoes the `\040`-style escapes of /proc mount tables.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0')
                .wrapping_mul(64)
                .wrapping_add((b[i + 2] - b'0') * 8)
                .wrapping_add(b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `major:minor` of a device number (glibc's encoding).
fn dev_string(rdev: u64) -> String {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    format!("{major}:{minor}")
}

impl Host {
    /// Reads the block devices under `root.sys` and the mounts and swaps under `root.proc`.
    pub fn read(root: &SysRoot) -> Host {
        let mut host = Host {
            root: root.clone(),
            disks: Vec::new(),
            nodes: BTreeMap::new(),
            by_dev: HashMap::new(),
            mounts: Vec::new(),
        };
        let block = root.sys.join("block");
        let mut disks = names_in(&block);
        disks.truncate(MAX_NODES);
        for name in &disks {
            let dir = block.join(name);
            let mut parts = Vec::new();
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten().take(MAX_NODES) {
                    if host.nodes.len() >= MAX_NODES {
                        break;
                    }
                    if !e.path().join("partition").is_file() {
                        continue;
                    }
                    let pname = e.file_name().to_string_lossy().into_owned();
                    host.add(&pname, e.path(), Some(name.clone()), Vec::new());
                    parts.push(pname);
                }
            }
            host.add(name, dir, None, parts);
        }
        host.disks = disks;
        host.mounts = host.read_mounts();
        host
    }

    fn add(&mut self, name: &str, dir: PathBuf, parent: Option<String>, partitions: Vec<String>) {
        let dev = attr(&dir.join("dev"));
        if let Some(d) = &dev {
            self.by_dev.insert(d.clone(), name.to_string());
        }
        let node = Node {
            holders: names_in(&dir.join("holders")),
            slaves: names_in(&dir.join("slaves")),
            dir,
            parent,
            partitions,
            dev,
        };
        self.nodes.insert(name.to_string(), node);
    }

    /// The kernel name of the device a `/dev/...` path names, as a mount table or
    /// `backing_file` gives it: by the device number of the node under [`SysRoot::dev`]
    /// (symlinks such as `/dev/disk/by-id/...` followed), else by its name (`/dev/sdb1`, or
    /// `/dev/mapper/NAME` through each device-mapper device's `dm/name`). `None` for a path
    /// outside `/dev`.
    pub fn name_of_node(&self, path: &Path) -> Option<String> {
        let rest = path.to_str()?.strip_prefix("/dev/")?;
        if let Ok(md) = fs::metadata(self.root.dev.join(rest)) {
            if md.file_type().is_block_device() {
                if let Some(n) = self.by_dev.get(&dev_string(md.rdev())) {
                    return Some(n.clone());
                }
            }
        }
        if let Some(dm) = rest.strip_prefix("mapper/") {
            return self
                .nodes
                .iter()
                .find(|(_, n)| attr(&n.dir.join("dm/name")).as_deref() == Some(dm))
                .map(|(k, _)| k.clone());
        }
        let base = Path::new(rest).file_name()?.to_str()?;
        self.nodes.contains_key(base).then(|| base.to_string())
    }

    /// The kernel name of the block device node at `path`, wherever the node is (a path
    /// outside `/dev` included), by its device number; `None` for anything else.
    pub fn name_of_device(&self, path: &Path) -> Option<String> {
        let md = fs::metadata(path).ok()?;
        if !md.file_type().is_block_device() {
            return None;
        }
        self.by_dev
            .get(&dev_string(md.rdev()))
            .cloned()
            .or_else(|| self.name_of_node(path))
    }

    /// What uses the block device `name`: mounts and active swap of it, its partitions, and
    /// every device stacked on them.
    pub fn uses(&self, name: &str) -> Vec<&Mount> {
        let family = self.family(name);
        self.mounts
            .iter()
            .filter(|m| family.contains(&m.device))
            .collect()
    }

    /// Mounts (from `mountinfo`) and active swap (from `swaps`) of known block devices.
    fn read_mounts(&self) -> Vec<Mount> {
        let mut out = Vec::new();
        let text = attr_file(&self.root.proc.join("self/mountinfo"));
        for line in text.lines() {
            // id parent major:minor root mount-point options [optional...] - fstype source super
            let f: Vec<&str> = line.split(' ').collect();
            let (Some(num), Some(mp), Some(opts)) = (f.get(2), f.get(4), f.get(5)) else {
                continue;
            };
            let source = f
                .iter()
                .position(|x| *x == "-")
                .and_then(|i| f.get(i + 2))
                .map(|s| unescape_octal(s));
            // By device number; for filesystems with anonymous numbers (btrfs, major 0), by
            // the source device the table names.
            let name = self.by_dev.get(*num).cloned().or_else(|| {
                source
                    .as_deref()
                    .and_then(|s| self.name_of_node(Path::new(s)))
            });
            if let Some(device) = name {
                out.push(Mount {
                    device,
                    point: unescape_octal(mp),
                    read_only: opts.split(',').any(|o| o == "ro"),
                });
            }
        }
        let swaps = attr_file(&self.root.proc.join("swaps"));
        for line in swaps.lines().skip(1) {
            let Some(p) = line.split_whitespace().next() else {
                continue;
            };
            // A swap file lives on a mounted filesystem, whose disk is mounted anyway.
            if let Some(device) = self.name_of_node(Path::new(&unescape_octal(p))) {
                out.push(Mount {
                    device,
                    point: "[swap]".into(),
                    read_only: false,
                });
            }
        }
        out
    }

    /// Every mount and active swap on a block device this host knows.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// The disks, as listed in `/sys/block` (including loop, dm and md devices), by name.
    pub fn disk_names(&self) -> &[String] {
        &self.disks
    }

    /// `name`, its partitions, and every device stacked on any of them, transitively.
    pub fn family(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if out.contains(&n) || out.len() >= MAX_NODES {
                continue;
            }
            if let Some(node) = self.nodes.get(&n) {
                todo.extend(node.partitions.iter().cloned());
                todo.extend(node.holders.iter().cloned());
            }
            out.push(n);
        }
        out
    }

    /// The disks `name` lives on: itself for a plain disk, its disk for a partition, and for a
    /// stacked device (dm, md) the disks under every slave, transitively.
    pub fn disks_under(&self, name: &str) -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        let mut out: Vec<String> = Vec::new();
        let mut todo = vec![name.to_string()];
        while let Some(n) = todo.pop() {
            if seen.contains(&n) || seen.len() >= MAX_NODES {
                continue;
            }
            seen.push(n.clone());
            match self.nodes.get(&n) {
                Some(node) if node.parent.is_some() => todo.extend(node.parent.clone()),
                Some(node) if !node.slaves.is_empty() => todo.extend(node.slaves.iter().cloned()),
                _ => {
                    if !out.contains(&n) {
                        out.push(n)
                    }
                }
            }
        }
        out
    }

    /// The disks holding the filesystem `path` lives on: the device of the mount whose mount
    /// point is the longest prefix of the path (after resolving it when it exists).
    pub fn disks_of_path(&self, path: &Path) -> Vec<String> {
        let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let best = self
            .mounts
            .iter()
            .filter(|m| m.point != "[swap]" && path.starts_with(&m.point))
            .max_by_key(|m| m.point.len());
        best.map(|m| self.disks_under(&m.device))
            .unwrap_or_default()
    }

    /// Mounts of the devices in `family`.
    fn mounts_of(&self, family: &[String]) -> Vec<Mount> {
        self.mounts
            .iter()
            .filter(|m| family.contains(&m.device))
            .cloned()
            .collect()
    }

    /// Where a disk sits, from its sysfs path and (for MMC) its card type.
    fn transport(&self, name: &str, dir: &Path) -> Transport {
        if name.starts_with("loop") {
            return Transport::Loop;
        }
        if name.starts_with("sr") {
            return Transport::Optical;
        }
        if name.starts_with("nbd") {
            return Transport::Nbd;
        }
        // `/sys/block/X` links into the device tree: `../devices/pci0000:00/.../usb1/...`.
        let link = fs::read_link(dir)
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let has = |s: &str| link.contains(s);
        if has("/usb") {
            Transport::Usb
        } else if has("/mmc_host/") || name.starts_with("mmcblk") {
            match attr(&dir.join("device/type")).as_deref() {
                Some("SD") => Transport::Sd,
                Some("MMC") => Transport::Emmc,
                _ => Transport::Unknown,
            }
        } else if has("/nvme") || name.starts_with("nvme") {
            Transport::Nvme
        } else if has("/ata") {
            Transport::Ata
        } else if has("/virtio") || name.starts_with("vd") {
            Transport::Virtio
        } else if has("/host") || has("/target") {
            Transport::Scsi
        } else {
            Transport::Unknown
        }
    }

    /// A loop device's backing file, if one is attached.
    fn backing(&self, dir: &Path) -> Option<Backing> {
        let raw = attr(&dir.join("loop/backing_file"))?;
        let (file, deleted) = match raw.strip_suffix(" (deleted)") {
            Some(f) => (f.to_string(), true),
            None => (raw, false),
        };
        let file = PathBuf::from(file);
        let block_device = self.name_of_node(&file);
        let on_disk = if block_device.is_none() {
            self.disks_of_path(&file).into_iter().next()
        } else {
            None
        };
        Some(Backing {
            offset: attr_u64(&dir.join("loop/offset")).unwrap_or(0),
            file,
            deleted,
            block_device,
            on_disk,
        })
    }

    /// The facts about the disk `name` (an entry of `/sys/block`), its verdict left empty;
    /// `None` when there is no such disk.
    pub fn drive(&self, name: &str) -> Option<Drive> {
        let node = self.nodes.get(name).filter(|n| n.parent.is_none())?;
        let dir = &node.dir;
        let dev_attr = |a: &str| attr(&dir.join("device").join(a));
        let transport = self.transport(name, dir);
        let readable = |v: Option<String>| v.filter(|s| !s.starts_with("0x"));
        let (vendor, model) = match transport {
            Transport::Sd | Transport::Emmc => (None, dev_attr("name")),
            _ => (readable(dev_attr("vendor")), dev_attr("model")),
        };
        let mut partitions: Vec<Partition> = node
            .partitions
            .iter()
            .filter_map(|p| self.nodes.get(p).map(|n| (p, n)))
            .map(|(p, n)| Partition {
                name: p.clone(),
                path: self.root.dev.join(p),
                number: attr(&n.dir.join("partition")).and_then(|s| s.parse().ok()),
                dev: n.dev.clone(),
                start: attr_u64(&n.dir.join("start")).and_then(|s| s.checked_mul(512)),
                size: attr_u64(&n.dir.join("size")).and_then(|s| s.checked_mul(512)),
                fs_type: None,
                label: None,
                holders: n.holders.clone(),
                mounts: self.mounts_of(&self.family(p)),
            })
            .collect();
        partitions.sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
        Some(Drive {
            name: name.to_string(),
            path: self.root.dev.join(name),
            dev: node.dev.clone(),
            size: attr_u64(&dir.join("size"))
                .and_then(|s| s.checked_mul(512))
                .unwrap_or(0),
            logical_block_size: attr_u64(&dir.join("queue/logical_block_size")),
            transport,
            vendor,
            model,
            serial: attr(&dir.join("serial")).or_else(|| dev_attr("serial")),
            wwid: attr(&dir.join("wwid")).or_else(|| dev_attr("wwid")),
            removable: attr(&dir.join("removable")).as_deref() == Some("1"),
            read_only: attr(&dir.join("ro")).as_deref() == Some("1"),
            partitions,
            fs_type: None,
            label: None,
            holders: node.holders.clone(),
            mounts: self.mounts_of(&self.family(name)),
            backing: self.backing(dir),
            verdict: Verdict::default(),
        })
    }
}

/// A whole text file of a few MiB at most (a mount table), or empty when unreadable.
fn attr_file(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(f) = fs::File::open(path) {
        let _ = f.take(16 << 20).read_to_string(&mut s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_numbers() {
        assert_eq!(unescape_octal(r"/mnt/my\040card"), "/mnt/my card");
        assert_eq!(unescape_octal(r"\04"), r"\04");
        assert_eq!(unescape_octal(r"\777"), "\u{fffd}");
        assert_eq!(dev_string(0x0801), "8:1");
        assert_eq!(dev_string((259u64 << 8) | 3), "259:3");
    }

    #[test]
    fn an_empty_root_is_an_empty_host() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::read(&SysRoot::under(d.path()));
        assert!(h.disk_names().is_empty());
        assert!(h.mounts().is_empty());
        assert!(h.drive("sda").is_none());
        assert!(h.disks_under("sda") == vec!["sda".to_string()]);
    }
}
