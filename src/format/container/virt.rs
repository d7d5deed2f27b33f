//! The virtual disk every VM container decodes to: a format describes its disk as runs (stored
//! bytes, compressed units, zeros, "ask the parent"), and [`VirtualDisk`] reads through them,
//! with a bounded cache of decoded units and the parent (backing file) underneath.
//!
//! A format only has to answer [`Layout::run_at`] (what lies at an offset and for how long) and,
//! if it compresses, [`Layout::decode`]; the reads, the cache, the parent chain and the
//! allocated-ranges hint are written once, here.

use std::io;
use std::sync::{Arc, Mutex};

use crate::io::{Caps, ReadAt, ReadAtExt, SizeKnown};
use crate::ExtentMap;

/// What one stretch of a virtual disk is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// Reads as zeros, and the image says so itself (a zero cluster, a VHDX block in state
    /// ZERO, a DMG zero chunk): never read from the parent.
    Zero,
    /// Not in this image: read from the parent (backing file) at the same offset, or zeros
    /// when there is none.
    Parent,
    /// Stored as is in file `file` of [`VirtualDisk::files`] (0: the image itself; VMDK extents
    /// are 1, 2, ...), the run's first byte at `at`.
    Stored {
        /// Index of the file holding it.
        file: usize,
        /// Offset of the run's first byte in that file.
        at: u64,
    },
    /// Inside decoded unit `unit` (a compressed cluster, grain or chunk; numbered by the
    /// format), the run's first byte `skip` bytes into the decoded unit.
    Coded {
        /// The unit, as [`Layout::decode`] knows it.
        unit: u64,
        /// Where in the decoded unit the run starts.
        skip: u64,
    },
}

/// How a container lays its disk out: what [`VirtualDisk`] asks a format.
pub(crate) trait Layout: Send + Sync {
    /// The run at `offset` (below the disk's size) and how many bytes it goes on for, at
    /// least 1 (reads clip it to what they need). Errors name the table and entry that is bad.
    fn run_at(&self, offset: u64) -> io::Result<(Run, u64)>;

    /// The decoded bytes of unit `unit` (bounded: a format refuses at open units larger than
    /// it can hold). Formats without compressed units never return [`Run::Coded`].
    fn decode(&self, unit: u64) -> io::Result<Vec<u8>> {
        Err(io::Error::other(format!(
            "unit {unit}: this container has no compressed units"
        )))
    }

    /// Every range of the disk whose run is not [`Run::Zero`] nor [`Run::Parent`]: what this
    /// file itself holds. Computed at open from the tables already read.
    fn stored(&self) -> ExtentMap;

    /// Every range whose run is [`Run::Parent`].
    fn from_parent(&self) -> ExtentMap;

    /// The natural read size (a cluster, a block, a grain), a power of two.
    fn unit_size(&self) -> u64;
}

/// Decoded units kept at most, in bytes: enough for a few DMG chunks (1 MiB each is usual)
/// or hundreds of compressed clusters, whatever the disk size.
const CACHE_BYTES: usize = 64 << 20;

/// A small cache of decoded units, least recently used out first.
#[derive(Default)]
struct UnitCache {
    entries: Vec<(u64, Arc<Vec<u8>>, u64)>,
    bytes: usize,
    tick: u64,
}

impl UnitCache {
    fn get(&mut self, unit: u64) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let t = self.tick;
        self.entries.iter_mut().find(|e| e.0 == unit).map(|e| {
            e.2 = t;
            e.1.clone()
        })
    }

    fn put(&mut self, unit: u64, data: Arc<Vec<u8>>) {
        if self.entries.iter().any(|e| e.0 == unit) {
            return;
        }
        self.tick += 1;
        self.bytes += data.len();
        self.entries.push((unit, data, self.tick));
        while self.bytes > CACHE_BYTES && self.entries.len() > 1 {
            let (i, _) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.2)
                .expect("not empty");
            let e = self.entries.swap_remove(i);
            self.bytes -= e.1.len();
        }
    }
}

/// The disk inside a container, read through its [`Layout`].
pub(crate) struct VirtualDisk {
    size: u64,
    layout: Box<dyn Layout>,
    files: Vec<Arc<dyn ReadAt>>,
    parent: Option<Arc<dyn ReadAt>>,
    allocated: ExtentMap,
    cache: Mutex<UnitCache>,
}

impl VirtualDisk {
    /// The `size`-byte disk laid out by `layout` over `files` (the image first), on top of
    /// `parent` when it is a differencing image.
    pub(crate) fn new(
        size: u64,
        layout: Box<dyn Layout>,
        files: Vec<Arc<dyn ReadAt>>,
        parent: Option<Arc<dyn ReadAt>>,
    ) -> Self {
        let mut allocated = layout.stored().clip(size);
        if let Some(p) = &parent {
            let inherited = layout.from_parent().clip(size.min(p.size()));
            let inherited = match p.allocated_hint() {
                Some(a) => inherited.intersect(&a),
                None => inherited,
            };
            allocated = allocated.union(&inherited);
        }
        VirtualDisk {
            size,
            layout,
            files,
            parent,
            allocated,
            cache: Mutex::default(),
        }
    }

    /// The decoded bytes of `unit`, from the cache or decoded now (outside the lock, so
    /// readers on other threads decode other units at the same time).
    fn unit(&self, unit: u64) -> io::Result<Arc<Vec<u8>>> {
        if let Some(d) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).get(unit) {
            return Ok(d);
        }
        let d = Arc::new(self.layout.decode(unit)?);
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(unit, d.clone());
        Ok(d)
    }

    fn fill(&self, run: Run, pos: u64, out: &mut [u8]) -> io::Result<()> {
        match run {
            Run::Zero => out.fill(0),
            Run::Parent => match &self.parent {
                None => out.fill(0),
                Some(p) => {
                    // A parent smaller than its child reads as zeros past its end, as qemu does.
                    let n = p.read_at(pos, out)?;
                    let mut done = n;
                    while done < out.len() {
                        let k = p.read_at(pos + done as u64, &mut out[done..])?;
                        if k == 0 {
                            break;
                        }
                        done += k;
                    }
                    out[done..].fill(0);
                }
            },
            Run::Stored { file, at } => {
                let f = self.files.get(file).ok_or_else(|| {
                    io::Error::other(format!("run names file {file}, which is not open"))
                })?;
                f.read_exact_at(at, out)?;
            }
            Run::Coded { unit, skip } => {
                let d = self.unit(unit)?;
                let s = usize::try_from(skip).ok();
                let src = s
                    .and_then(|s| d.get(s..s.checked_add(out.len())?))
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "unit {unit} decodes to {} bytes, fewer than the table says",
                                d.len()
                            ),
                        )
                    })?;
                out.copy_from_slice(src);
            }
        }
        Ok(())
    }
}

impl ReadAt for VirtualDisk {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(self.size - offset) as usize;
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let (run, n) = self.layout.run_at(pos)?;
            if n == 0 {
                return Err(io::Error::other(format!(
                    "container layout gives an empty run at byte {pos}"
                )));
            }
            let n = n.min((len - done) as u64) as usize;
            self.fill(run, pos, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(done)
    }

    fn caps(&self) -> Caps {
        let own = Caps {
            chunk: crate::io::chunk_for(self.layout.unit_size().max(DEFAULT_READ)),
            size: SizeKnown::Exact,
            ..Caps::RANDOM
        };
        match self.files.first() {
            Some(f) => own.over(f.caps()),
            None => own,
        }
    }

    fn allocated_hint(&self) -> Option<ExtentMap> {
        Some(self.allocated.clone())
    }
}

/// Reads of at least this much: a cluster of 64 KiB read alone would cost a call each.
const DEFAULT_READ: u64 = 1 << 20;

/// Files and tables bigger than this are refused rather than read into memory: a hostile
/// header cannot make a container allocate more.
pub(crate) const MAX_TABLE_BYTES: u64 = 256 << 20;

/// Reads `len` bytes of table at `at` in `src`, refusing lengths above [`MAX_TABLE_BYTES`] or
/// reaching past the end of the file, naming the table in the error.
pub(crate) fn read_table(
    src: &dyn ReadAt,
    what: &'static str,
    at: u64,
    len: u64,
) -> crate::Result<Vec<u8>> {
    if len > MAX_TABLE_BYTES {
        return Err(crate::Error::corrupt(
            what,
            format!(
                "{len} bytes at byte {at}: more than the {} MiB a table may take",
                MAX_TABLE_BYTES >> 20
            ),
        ));
    }
    let end = at.checked_add(len);
    if end.is_none_or(|e| e > src.size()) {
        return Err(crate::Error::corrupt(
            what,
            format!(
                "{len} bytes at byte {at} reach past the end of the file ({} bytes)",
                src.size()
            ),
        ));
    }
    Ok(src.read_vec(at, len as usize)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemSource;

    /// 4 units of 8 bytes: stored, zero, parent, coded.
    struct T;
    impl Layout for T {
        fn run_at(&self, offset: u64) -> io::Result<(Run, u64)> {
            let u = offset / 8;
            let left = 8 - offset % 8;
            Ok(match u {
                0 => (Run::Stored { file: 0, at: offset }, left),
                1 => (Run::Zero, left),
                2 => (Run::Parent, left),
                _ => (
                    Run::Coded {
                        unit: 7,
                        skip: offset % 8,
                    },
                    left,
                ),
            })
        }
        fn decode(&self, unit: u64) -> io::Result<Vec<u8>> {
            assert_eq!(unit, 7);
            Ok(b"CODEDxyz".to_vec())
        }
        fn stored(&self) -> ExtentMap {
            ExtentMap::from_ranges([(0, 8), (24, 32)])
        }
        fn from_parent(&self) -> ExtentMap {
            ExtentMap::single(16, 24)
        }
        fn unit_size(&self) -> u64 {
            8
        }
    }

    #[test]
    fn reads_every_kind_of_run() {
        let file: Arc<dyn ReadAt> = Arc::new(MemSource(b"storedAB".to_vec()));
        let parent: Arc<dyn ReadAt> = Arc::new(MemSource(vec![b'p'; 20]));
        let d = VirtualDisk::new(32, Box::new(T), vec![file.clone()], Some(parent));
        let all = d.read_vec(0, 32).unwrap();
        assert_eq!(&all, b"storedAB\0\0\0\0\0\0\0\0pppp\0\0\0\0CODEDxyz");
        assert_eq!(d.read_vec(5, 14).unwrap(), b"dAB\0\0\0\0\0\0\0\0ppp");
        // The parent holds 16..20 only; its allocated hint is "all of it".
        assert_eq!(
            d.allocated_hint().unwrap(),
            ExtentMap::from_ranges([(0, 8), (16, 20), (24, 32)])
        );
        let d = VirtualDisk::new(32, Box::new(T), vec![file], None);
        assert_eq!(&d.read_vec(16, 8).unwrap(), &[0; 8]);
    }

    #[test]
    fn the_cache_is_bounded() {
        let mut c = UnitCache::default();
        for u in 0..100u64 {
            c.put(u, Arc::new(vec![0; 4 << 20]));
        }
        assert!(c.bytes <= CACHE_BYTES);
        assert!(c.get(99).is_some());
        assert!(c.get(0).is_none());
    }

    #[test]
    fn tables_are_bounded() {
        let f = MemSource(vec![0; 100]);
        assert!(read_table(&f, "t", 0, 100).is_ok());
        assert!(read_table(&f, "t", 1, 100).is_err());
        assert!(read_table(&f, "t", u64::MAX, 2).is_err());
        assert!(read_table(&f, "t", 0, 1 << 40).is_err());
    }
}
