//! Helpers shared by the damage tests (`tests/damage_*.rs`): seeded randomness, running
//! tools, and reading back a mounted tree to compare an original with its restore.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// xorshift64*, fixed seeds.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A generator whose stream depends on `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    /// A random element, `None` for an empty slice.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        v.get(self.below(v.len() as u64) as usize)
    }
}

/// `len` seeded pseudo-random bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Runs a shell command: success, and stdout+stderr with `path` replaced by "DEV".
pub fn run(cmd: &str, path: &str) -> (bool, String) {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text.replace(path, "DEV"))
}

/// Every file under `root`: its content hash or the error reading it; directories by name.
pub fn read_tree(root: &Path) -> BTreeMap<String, String> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let rd = match std::fs::read_dir(root.join(&rel)) {
            Ok(rd) => rd,
            Err(e) => {
                out.insert(
                    rel.display().to_string(),
                    format!("dir error {:?}", e.kind()),
                );
                continue;
            }
        };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok()).collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let r = rel.join(e.file_name());
            let p = root.join(&r);
            if p.is_dir() {
                out.insert(format!("{}/", r.display()), String::new());
                todo.push(r);
                continue;
            }
            let v = match std::fs::read(&p) {
                Ok(data) => {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    data.hash(&mut h);
                    format!("{} bytes, {:016x}", data.len(), h.finish())
                }
                Err(e) => format!("read error {:?}", e.kind()),
            };
            out.insert(r.display().to_string(), v);
        }
    }
    out
}

/// `read_tree` of `dev` mounted read-only with `mount_cmd` ("mount -t ntfs-3g -o ro").
pub fn mounted_tree(mount_cmd: &str, dev: &str) -> BTreeMap<String, String> {
    let mnt = tempfile::tempdir().unwrap();
    super::sh(&format!(
        "{mount_cmd} '{dev}' '{}' 2>/dev/null",
        mnt.path().display()
    ));
    let t = read_tree(mnt.path());
    let _ = Command::new("umount").arg(mnt.path()).status();
    t
}

/// The read cost of a map with its cross-check on a realistic filled volume: a 512 MiB image
/// made by `mkfs` (`{img}` stands for its path), filled through `mount` with 3000 files in 60
/// directories; prints the bytes `used` read against the bytes it maps.
pub fn read_cost(
    label: &str,
    mkfs: &str,
    mount: &str,
    used: fn(&dyn blockwise::io::ReadAt) -> blockwise::Result<blockwise::fs::Usage>,
) {
    let dir = tempfile::tempdir().unwrap();
    let Some(img) = make_filled(dir.path(), 512, mkfs, mount, |mnt| {
        for i in 0..3000u64 {
            let p = mnt.join(format!("dir{:02}/file {i:04}.bin", i % 60));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, noise((1 + (i * 7919) % 200) as usize * 1000, i)).unwrap();
        }
    }) else {
        return;
    };
    let c = blockwise::io::Counting::new(blockwise::io::FileSource::open(&img).unwrap());
    let u = used(&c).unwrap();
    eprintln!(
        "{label} 512 MiB, 3000 files: read {} bytes in {} calls, mapped {} bytes ({:.3}%); {:?}",
        c.bytes_read(),
        c.calls(),
        u.used.total(),
        100.0 * c.bytes_read() as f64 / u.used.total() as f64,
        u.cross_check
    );
}

/// The shape of the tree [`write_tree`] writes.
pub struct TreeShape {
    /// `f00.bin`..`f39.bin` are `(i * step) % modulo` bytes.
    pub step: usize,
    pub modulo: usize,
    /// How many files in `many/` (a directory that spans clusters), named with this prefix,
    /// `1 + (i * 977) % many_mod` bytes each.
    pub many: usize,
    pub many_prefix: &'static str,
    pub many_mod: usize,
    /// Five nested levels under `deep/`, named `level{sep}{i}`, holding `x{i}.bin` of
    /// `deep_base + deep_step * i` bytes.
    pub level_sep: &'static str,
    pub deep_base: usize,
    pub deep_step: usize,
}

/// Files from empty to many clusters, a directory spanning clusters, and nesting, with
/// seeded contents.
pub fn write_tree(root: &Path, t: &TreeShape) {
    let w = |rel: &str, len: usize, seed: u64| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, noise(len, seed)).unwrap();
    };
    for i in 0..40 {
        w(&format!("f{i:02}.bin"), (i * t.step) % t.modulo, i as u64);
    }
    for i in 0..t.many {
        w(
            &format!("many/{} {i:03}.dat", t.many_prefix),
            1 + (i * 977) % t.many_mod,
            100 + i as u64,
        );
    }
    let mut d = String::from("deep");
    for i in 0..5 {
        d = format!("{d}/level{}{i}", t.level_sep);
        w(
            &format!("{d}/x{i}.bin"),
            t.deep_base + t.deep_step * i,
            200 + i as u64,
        );
    }
    w("empty.txt", 0, 0);
}

/// A `mib` MiB image `fs.img` in `dir`, made by `mkfs` (`{img}` stands for its path) and
/// filled by `fill` through `mount` on a loop device; `None` (after a [`super::skip`]) when no
/// loop device can be had.
pub fn make_filled(
    dir: &Path,
    mib: u64,
    mkfs: &str,
    mount: &str,
    fill: impl FnOnce(&Path),
) -> Option<PathBuf> {
    let img = dir.join("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    super::sh(&mkfs.replace("{img}", &img.display().to_string()));
    let lp = super::Loop::attach(&img)?;
    let mnt = tempfile::tempdir().unwrap();
    super::sh(&format!(
        "{mount} '{}' '{}' 2>/dev/null",
        lp.dev,
        mnt.path().display()
    ));
    fill(mnt.path());
    super::sh(&format!("umount '{}'", mnt.path().display()));
    Some(img)
}

/// What the map of an image whose allocation bitmap lost `cleared` bytes under live data must
/// show: the cross-check added exactly those bytes back and said so (a warning containing
/// `hint`), everything in `must` is kept, and nothing is added beyond `bitmap` (what the
/// damaged bitmap itself still maps).
pub fn assert_cross_check_added(
    case: &str,
    u: &blockwise::fs::Usage,
    cleared: u64,
    must: &blockwise::ExtentMap,
    bitmap: &blockwise::ExtentMap,
    hint: &str,
) {
    let cc = u.cross_check.clone().expect("cross-checked");
    eprintln!("{case}\n  -> {cc:?}");
    assert!(cc.added > 0, "{case}: nothing added");
    assert_eq!(cc.added, cleared, "{case}: added is not what was cleared");
    assert!(cc.incomplete.is_none());
    assert!(
        u.warnings.iter().any(|w| w.contains(hint)),
        "{case}: {:?}",
        u.warnings
    );
    assert_eq!(
        must.subtract(&u.used).total(),
        0,
        "{case}: cleared not kept"
    );
    assert_eq!(
        u.used.subtract(bitmap).total(),
        cc.added,
        "{case}: the map is more than bitmap + added"
    );
}
