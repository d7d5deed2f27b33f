//! Which blocks of a stream are already known to be free, decided block by block as it goes
//! by: [`StreamSkip`].
//!
//! A flash of a streaming source without a bmap (a single-block `.xz`, `.gz`, `.bz2`, `.lz4`,
//! a zip member: one decoder, read once front to back) cannot map the image before writing
//! without decoding it twice. Instead, the partition table, the FAT tables, the ext group
//! descriptors, bitmaps and inode tables (with `flex_bg` they come before the data they
//! describe) are read as they pass, and every block whose owner has already said "free" is
//! skipped; everything not yet known is written. One pass, decoding once.
//!
//! No filesystem is parsed here. The scan's own readers (`layout::read_layout`,
//! `scan::whole_disk_fs`, `scan::read_volume`: the probes, the allocation maps and their
//! cross-checks) run over a [`Captured`] view of the bytes that went by, one *owner* at a
//! time: the partition table, the whole-disk filesystem, each partition. A run that read a
//! byte which was not kept is tainted: its result is thrown away, and the bytes it wanted are
//! kept when they come by, then the owner runs again. A run that read only kept bytes read
//! exactly what the scan of the whole image reads, so its result is the scan's. The map is
//! `map::image_map` of a [`Scan`] in which resolved owners carry their result and the others
//! carry nothing (so the map keeps them whole): every byte skipped here is one the full map
//! skips too, cross-check included (the skip rule of `spec/safety.md`).
//!
//! When an owner runs again: at once when one of the ranges it wanted has come whole and its
//! last run learned something new (it wanted bytes the run before did not), so that the next
//! level of its metadata (a FAT after the boot sector that places it) is asked for before it
//! passes. Otherwise (the probes ask speculatively for bytes up to megabytes in, LUKS2 header
//! copies up to 4 MiB; an ext filesystem reads one guard block per group) it waits until all
//! of them have come, or until [`QUIET`] bytes have passed since the last one did, instead of
//! running once per range. From the moment the first of them has come until it runs again,
//! every byte it can read is kept (its *window*): whatever the bytes that came point to
//! further on is there when it runs, so waiting costs memory, never a give-up.
//!
//! An owner is given up (nothing in it is ever skipped) when it wants bytes that went by
//! before anyone asked for them (a structure stored before the one that points to it, outside
//! any window), after [`MAX_RUNS`] runs, or when keeping what it wants would hold more than
//! [`MAX_KEPT`] bytes. The granularity is the partition: each one's free blocks are known once
//! all of its metadata has passed, so a boot partition resolves long before the root that
//! follows it. For ext that is after the last inode table the cross-check reads (the last
//! flex group's, or its guard block): a block is free only if no inode references it, and any
//! inode may reference any block.

use std::ops::Range;

use super::captured::{Captured, Missed};
use crate::extent::ExtentMap;
use crate::fs;
use crate::layout::{self, Layout, TableKind};
use crate::map;
use crate::scan::{self, Scan, Volume, WholeDisk};

/// The first bytes of the image, kept whatever they hold: partition tables, boot sectors.
const HEAD: u64 = 1 << 20;

/// Most runs of one owner; a metadata chain deeper than this is given up.
const MAX_RUNS: u32 = 64;

/// Most bytes kept at once, for all owners together; an owner that would need more is given
/// up.
const MAX_KEPT: u64 = 256 << 20;

/// An owner waiting in its window runs again once this many bytes have passed since the
/// last range it wanted came whole.
const QUIET: u64 = 4 << 20;

/// Whose metadata an owner reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The partition table.
    Table,
    /// The filesystem spanning the disk, beside or instead of the table.
    WholeDisk,
    /// The partition at this index of the layout.
    Volume(usize),
}

/// Where an owner stands.
#[derive(Clone, Debug)]
enum State {
    /// Its last run wanted these bytes (none of which had gone by then).
    Waiting(ExtentMap),
    /// Its last run read only kept bytes: its result is in the scan.
    Resolved,
    /// Nothing it owns is ever skipped; the note says why.
    GivenUp,
}

/// One reader of metadata and where it stands.
#[derive(Clone, Debug)]
struct Owner {
    /// What it reads.
    role: Role,
    /// Bytes of the image its runs can read (`[start, end)`).
    reach: (u64, u64),
    /// Where it stands.
    state: State,
    /// Runs so far.
    runs: u32,
    /// Its last run wanted bytes the run before it did not: it runs again as soon as a
    /// wanted range has come.
    eager: bool,
    /// Since a wanted range came whole, every byte of `reach` from this offset on is kept,
    /// until it runs again.
    window: Option<u64>,
    /// Where the last wanted range to come whole ended.
    last_done: u64,
    /// The kept bytes its runs read (`None`: too scattered to say; all of `reach`): kept
    /// while it waits, since a later run that learns more may read them again.
    touched: Option<ExtentMap>,
    /// Bytes its runs asked to keep, over all its runs.
    asked: u64,
    /// What it found, or why it was given up, once it is settled.
    note: Option<String>,
}

impl Owner {
    /// A fresh owner, to run at once.
    fn new(role: Role, reach: (u64, u64), wants: ExtentMap) -> Owner {
        Owner {
            role,
            reach,
            asked: wants.total(),
            state: State::Waiting(wants),
            runs: 0,
            eager: true,
            window: None,
            last_done: 0,
            touched: Some(ExtentMap::new()),
            note: None,
        }
    }

    /// What it waits for, if it does.
    fn waiting(&self) -> Option<&ExtentMap> {
        match &self.state {
            State::Waiting(w) => Some(w),
            _ => None,
        }
    }

    /// Of `[pos, stop)`, what it wants kept: the wanted range there, and everything in reach
    /// while its window is open.
    fn keeps(&self, pos: u64, stop: u64) -> Option<(u64, u64)> {
        let w = self.waiting()?;
        if self.window.is_some() {
            return Some((pos.max(self.reach.0), stop.min(self.reach.1)));
        }
        let s = w.as_slice();
        let r = s.get(s.partition_point(|r| r.end <= pos))?;
        Some((r.start.max(pos), r.end.min(stop)))
    }

    /// Where it wants the feed to pause past `pos`: the end of its next wanted range, or the
    /// end of its quiet period.
    fn pause(&self, pos: u64) -> Option<u64> {
        let w = self.waiting()?;
        let s = w.as_slice();
        let next = s.get(s.partition_point(|r| r.end <= pos)).map(|r| r.end);
        let quiet = self.window.map(|_| self.last_done.saturating_add(QUIET));
        next.into_iter().chain(quiet).min()
    }

    /// Notes what came by `fed`; true when it should run now.
    fn due(&mut self, fed: u64, short_of_memory: bool) -> bool {
        let Some(w) = self.waiting() else {
            return false;
        };
        let s = w.as_slice();
        let Some(first_end) = s.first().map(|r| r.end) else {
            return true; // new: nothing to wait for
        };
        let done = s[..s.partition_point(|r| r.end <= fed)]
            .last()
            .map(|r| r.end);
        let all_done = w.end() <= fed;
        if let Some(d) = done {
            self.last_done = self.last_done.max(d);
            // Kept from where the first wanted range ended, until it runs.
            self.window.get_or_insert(first_end);
        }
        all_done
            || (done.is_some() && self.eager)
            || (self.window.is_some()
                && (fed >= self.last_done.saturating_add(QUIET) || short_of_memory))
    }
}

/// Decides, as a stream goes by, which of its bytes are already known to be free.
///
/// Feed it every decoded byte in order ([`feed`](Self::feed)); before writing a piece, ask
/// which of its bytes are free ([`known_free`](Self::known_free)): those are never written,
/// everything else is. Memory is bounded by [`MAX_KEPT`] kept bytes plus what the scan's own
/// readers hold while they run.
pub(crate) struct StreamSkip {
    /// The (hinted) image size the map is made for; no byte past it is ever free.
    size: u64,
    /// The device's logical sector size, as `scan::scan_source` takes it.
    sector_hint: Option<u32>,
    /// The bytes kept so far.
    view: Captured,
    /// Everything before this offset has been fed.
    fed: u64,
    /// The table first, then (once it is read) the whole-disk filesystem and each partition.
    owners: Vec<Owner>,
    /// The scan as far as it is known, from the moment the table is read: unresolved
    /// partitions carry no filesystem and no usage.
    scan: Option<Scan>,
    /// The whole-disk owner is resolved.
    whole_known: bool,
    /// Bytes known free: the complement of the map of `scan` (empty until the table and the
    /// whole-disk filesystem are known).
    free: ExtentMap,
    /// Why nothing more is learned (the stream was fed out of order or past its size).
    stopped: Option<String>,
    /// Runs of all owners.
    runs: u32,
    /// Most bytes kept at once.
    peak_kept: u64,
    /// The user's choices about the skip rule.
    rules: map::MapRules,
}

impl StreamSkip {
    /// For an image of (hinted) size `image_size`, `sector_hint` as `scan::scan_source` takes
    /// it. `image_size` is the size the flash plans with (a stream's hint raised as the scan
    /// raises it): a table that reaches past it is unusable and nothing is skipped, and bytes
    /// past it are never free.
    pub(crate) fn new(image_size: u64, sector_hint: Option<u32>) -> Self {
        let head = ExtentMap::single(0, HEAD.min(image_size));
        let mut s = StreamSkip {
            size: image_size,
            sector_hint,
            view: Captured::new(image_size),
            fed: 0,
            owners: vec![Owner::new(Role::Table, (0, image_size), head)],
            scan: None,
            whole_known: false,
            free: ExtentMap::new(),
            stopped: None,
            runs: 0,
            peak_kept: 0,
            rules: map::MapRules::default(),
        };
        // An empty image's table is read at once; any other waits for its head.
        s.progress();
        s
    }

    /// The decoded bytes `data` at `offset` have gone by. Called in order, contiguous from 0;
    /// bytes fed again are ignored, and a gap (or bytes past the image size) stops all
    /// learning: what was known free stays free, nothing more becomes so.
    pub(crate) fn feed(&mut self, offset: u64, data: &[u8]) {
        if self.stopped.is_some() {
            return;
        }
        let Some(end) = offset.checked_add(data.len() as u64) else {
            self.stop(format!("bytes fed at {offset} end past 2^64"));
            return;
        };
        if offset > self.fed {
            self.stop(format!(
                "bytes {}..{offset} were never fed; nothing more is learned",
                self.fed
            ));
            return;
        }
        if end > self.size {
            self.stop(format!(
                "the stream goes on past {} bytes, the size its map was made for; nothing \
                 more is learned",
                self.size
            ));
            return;
        }
        let mut pos = self.fed.max(offset);
        while pos < end && self.owners.iter().any(|o| o.waiting().is_some()) {
            // Up to the next point where an owner may run, and want what follows.
            let stop = (self.owners.iter())
                .filter_map(|o| o.pause(pos))
                .fold(end, u64::min)
                .max(pos + 1);
            let keep =
                ExtentMap::from_ranges(self.owners.iter().filter_map(|o| o.keeps(pos, stop)));
            for r in keep.iter() {
                let at = |o: u64| (o - offset) as usize;
                self.view.keep(r.start, &data[at(r.start)..at(r.end)]);
            }
            self.peak_kept = self.peak_kept.max(self.view.bytes());
            self.fed = stop;
            pos = stop;
            self.progress();
        }
        self.fed = self.fed.max(end);
    }

    /// Of `range` (at or past everything fed so far), the bytes already known to be free:
    /// never written. Everything else is written.
    pub(crate) fn known_free(&self, range: Range<u64>) -> ExtentMap {
        self.free
            .intersect(&ExtentMap::single(range.start, range.end))
    }

    /// What it learned, for the summary: per owner (the table, the whole-disk filesystem,
    /// each partition), resolved at which offset, given up and why, or still waiting.
    pub(crate) fn notes(&self) -> Vec<String> {
        let mut out: Vec<String> = (self.owners.iter())
            .map(|o| {
                let what = self.name(o.role);
                match (&o.note, &o.state) {
                    (Some(n), _) => format!("{what}: {n}"),
                    (None, State::Waiting(w)) => {
                        let r = w.as_slice().first().map_or(0..0, |r| r.start..r.end);
                        format!(
                            "{what}: not known yet, written whole (waiting for bytes {}..{} \
                             after {} runs)",
                            r.start, r.end, o.runs
                        )
                    }
                    (None, _) => what,
                }
            })
            .collect();
        out.extend(self.stopped.clone());
        out
    }

    /// Runs every owner that is due (an owner created by the table runs at once), brings the
    /// map up to date if one was resolved, and drops the kept bytes no waiting owner needs.
    fn progress(&mut self) {
        let short = self.view.bytes() > MAX_KEPT / 2;
        let (mut ran, mut settled) = (false, false);
        let mut k = 0;
        while k < self.owners.len() {
            let fed = self.fed;
            if self.owners[k].due(fed, short) {
                self.run(k);
                ran = true;
                settled |= self.owners[k].waiting().is_none();
            }
            k += 1;
        }
        if settled {
            self.remap();
        }
        if ran {
            let fed = self.fed;
            let mut keep = ExtentMap::new();
            for o in &self.owners {
                let Some(w) = o.waiting() else { continue };
                let reach = ExtentMap::single(o.reach.0, o.reach.1);
                match &o.touched {
                    Some(t) => keep = keep.union(&t.intersect(&reach)),
                    None => keep = keep.union(&reach),
                }
                keep = keep.union(w);
                if o.role == Role::Table {
                    // Until the table is known, nobody knows who reads its head: the owners
                    // it creates run over it first.
                    keep.insert(0, HEAD.min(self.size));
                }
                if let Some(from) = o.window {
                    keep.insert(from.max(o.reach.0), fed.min(o.reach.1));
                }
            }
            self.view.retain(&keep);
        }
    }

    /// Runs owner `k` over the kept bytes: it is resolved, given up, or waits again.
    fn run(&mut self, k: usize) {
        let role = self.owners[k].role;
        self.runs += 1;
        self.owners[k].runs += 1;
        self.view.begin();
        let outcome = match (role, &self.scan) {
            (Role::Table, _) => Outcome::Table(layout::read_layout(&self.view, self.sector_hint)),
            (Role::WholeDisk, Some(scan)) => {
                let mut warnings = Vec::new();
                let fs = scan::whole_disk_fs(&self.view, &scan.layout, &mut warnings);
                Outcome::Whole(fs.map(|fs| WholeDisk {
                    usage: fs::usage(&self.view, &fs),
                    fs,
                }))
            }
            (Role::Volume(i), Some(scan)) => {
                Outcome::Volume(scan::read_volume(&self.view, &scan.layout, i, self.size))
            }
            // Owners other than the table exist only once the scan does.
            (_, None) => return,
        };
        let report = self.view.finish();
        let fed = self.fed;
        // What the others still wait for will be kept too.
        let pending: u64 = (self.owners.iter().enumerate())
            .filter(|&(j, _)| j != k)
            .filter_map(|(_, o)| o.waiting())
            .map(|w| w.total() - w.covered(0, fed))
            .sum();
        let o = &mut self.owners[k];
        o.window = None;
        o.touched = match (o.touched.take(), report.touched) {
            (Some(a), Some(b)) => Some(a.union(&b)),
            _ => None,
        };
        let why = match report.missed {
            Missed::Nothing => {
                self.resolve(k, outcome);
                return;
            }
            Missed::Overflow => format!(
                "its run {} asks for too much, or too scattered, to keep as it goes by",
                o.runs
            ),
            Missed::Bytes(m) => {
                let gone = m.intersect(&ExtentMap::single(0, fed)).iter().next();
                if let Some(r) = gone {
                    format!(
                        "its run {} needs bytes {}..{}, which went by before anything asked \
                         for them",
                        o.runs, r.start, r.end
                    )
                } else if o.runs >= MAX_RUNS {
                    format!("still incomplete after {MAX_RUNS} runs")
                } else if self.view.bytes() + pending + m.total() > MAX_KEPT {
                    format!(
                        "its metadata would hold more than {} MiB in memory",
                        MAX_KEPT >> 20
                    )
                } else {
                    let before = o.waiting().cloned().unwrap_or_default();
                    o.eager = !m.subtract(&before).is_empty();
                    o.asked += m.subtract(&before).total();
                    o.state = State::Waiting(m);
                    return;
                }
            }
        };
        o.state = State::GivenUp;
        o.note = Some(format!("given up at byte {fed}: {why}; written whole"));
    }

    /// Records the untainted result of owner `k`'s run.
    fn resolve(&mut self, k: usize, outcome: Outcome) {
        let (fed, runs, asked) = (self.fed, self.owners[k].runs, self.owners[k].asked);
        let when = format!(
            "known at byte {fed}, after {runs} run{}, {asked} bytes asked for",
            if runs == 1 { "" } else { "s" }
        );
        self.owners[k].state = State::Resolved;
        let note = match outcome {
            Outcome::Table(Err(e)) => {
                self.owners[k].state = State::GivenUp;
                format!("unreadable ({}); every byte is written", e.chain())
            }
            Outcome::Table(Ok(layout)) => {
                let kind = match layout.table {
                    TableKind::Mbr => "MBR",
                    TableKind::Gpt => "GPT",
                    TableKind::None => "none",
                };
                match &layout.unusable {
                    // The map keeps every byte of such an image: nothing more to learn.
                    Some(why) => format!("{kind}: {why}; every byte is written ({when})"),
                    None => {
                        let n = layout.data_partitions().count();
                        self.table_read(layout);
                        format!("{kind}, {n} partitions ({when})")
                    }
                }
            }
            Outcome::Whole(w) => {
                let note = match &w {
                    Some(w) => format!("{} ({when})", w.fs.fs_type),
                    None => format!("no filesystem spans the disk ({when})"),
                };
                if let Some(s) = &mut self.scan {
                    s.whole_disk = w;
                }
                self.whole_known = true;
                note
            }
            Outcome::Volume(v) => {
                let container = (self.scan.as_ref())
                    .and_then(|s| s.layout.partitions.get(v.partition))
                    .is_some_and(|p| p.is_container());
                let note = match (&v.fs, &v.probe_error) {
                    _ if container => "a container: its gaps (EBRs) are written".to_string(),
                    (Some(f), _) => format!("{} ({when})", f.fs_type),
                    (None, Some(e)) => format!("unreadable ({e}); written whole ({when})"),
                    (None, None) => format!("no filesystem recognised; written whole ({when})"),
                };
                let slot = (self.scan.as_mut()).and_then(|s| s.volumes.get_mut(v.partition));
                if let Some(slot) = slot {
                    *slot = v;
                }
                note
            }
        };
        self.owners[k].note = Some(note);
    }

    /// The table is known: the scan starts, with an owner for the whole-disk filesystem and
    /// one per partition (in disk order), each to run at once.
    fn table_read(&mut self, layout: Layout) {
        let size = self.size;
        let volumes: Vec<Volume> = (layout.partitions.iter().enumerate())
            .map(|(i, p)| Volume {
                partition: i,
                start: p.start,
                len: p.size.min(size.saturating_sub(p.start)),
                fs: None,
                probe_error: None,
                usage: None,
            })
            .collect();
        let none = ExtentMap::new;
        self.owners
            .push(Owner::new(Role::WholeDisk, (0, size), none()));
        let mut order: Vec<&Volume> = volumes.iter().collect();
        order.sort_by_key(|v| v.start);
        for v in order {
            let reach = (v.start, v.start.saturating_add(v.len));
            self.owners
                .push(Owner::new(Role::Volume(v.partition), reach, none()));
        }
        self.scan = Some(Scan {
            image_size: size,
            decoded: true,
            layout,
            volumes,
            whole_disk: None,
            warnings: Vec::new(),
        });
    }

    /// Applies the user's choices about the skip rule.
    pub(crate) fn with_rules(mut self, rules: map::MapRules) -> Self {
        self.rules = rules;
        self
    }

    /// Recomputes the free bytes from the scan as far as it is known.
    fn remap(&mut self) {
        let Some(scan) = self.scan.as_ref().filter(|_| self.whole_known) else {
            return;
        };
        if let Some(m) = map::image_map_with(scan, self.rules) {
            self.free = m.used.gaps(self.size);
        }
    }

    /// Stops learning; `why` goes to the notes.
    fn stop(&mut self, why: String) {
        self.stopped = Some(why);
        self.view.retain(&ExtentMap::new());
    }

    /// How an owner is named in the notes.
    fn name(&self, role: Role) -> String {
        match role {
            Role::Table => "partition table".into(),
            Role::WholeDisk => "whole disk".into(),
            Role::Volume(i) => {
                let p = self.scan.as_ref().and_then(|s| s.layout.partitions.get(i));
                match p {
                    Some(p) => format!("partition {}", p.index),
                    None => format!("partition #{i}"),
                }
            }
        }
    }
}

/// What one run of an owner found.
enum Outcome {
    /// The table (or the error reading it).
    Table(crate::Result<Layout>),
    /// The whole-disk filesystem and its usage.
    Whole(Option<WholeDisk>),
    /// A partition's volume.
    Volume(Volume),
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use super::*;
    use crate::checksum::{crc32, crc32c_raw};
    use crate::io::MemSource;

    const MIB: u64 = 1 << 20;

    fn unxz(xz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(xz), &mut out).unwrap();
        out
    }

    /// The bundled sample card (MBR; FAT32 "bootfs" at 4 MiB, ext4 "rootfs" at 52 MiB).
    fn card() -> Vec<u8> {
        static IMG: OnceLock<Vec<u8>> = OnceLock::new();
        IMG.get_or_init(|| unxz(include_bytes!("../../samples/card.img.xz")))
            .clone()
    }

    /// The ext4 fixture of the cross-check tests (8 MiB, 1 KiB blocks, flex_bg,
    /// metadata_csum) and the block ranges its inodes reference.
    fn ext_fixture() -> (Vec<u8>, Vec<(u64, u64)>) {
        let img = unxz(include_bytes!("../../tests/data/ext-xcheck.img.xz"));
        let refs = include_str!("../../tests/data/ext-xcheck.refs")
            .lines()
            .filter_map(|l| l.split_once('-'))
            .map(|(a, b)| (a.parse().unwrap(), b.parse::<u64>().unwrap() + 1))
            .collect();
        (img, refs)
    }

    /// The map of the whole image, scanned as `inspect` scans it.
    fn full_used(img: &[u8]) -> ExtentMap {
        let scan = scan::scan_source(Arc::new(MemSource(img.to_vec())), None).unwrap();
        map::image_map(&scan).unwrap().used
    }

    /// What a flash of `img` as a stream in `piece`-byte pieces leaves out: for each piece,
    /// the bytes known free before it is fed. Checks on the way that an answer never shrinks.
    fn stream(img: &[u8], piece: usize) -> (ExtentMap, StreamSkip) {
        let size = img.len() as u64;
        let mut s = StreamSkip::new(size, None);
        let mut skipped = ExtentMap::new();
        let mut before = ExtentMap::new();
        for (i, data) in img.chunks(piece).enumerate() {
            let at = (i * piece) as u64;
            let now = s.known_free(at..size);
            assert!(
                before.clip(size).subtract(&now).covered(at, size) == 0,
                "bytes known free at {at} stopped being free"
            );
            skipped = skipped.union(&s.known_free(at..at + data.len() as u64));
            s.feed(at, data);
            before = now;
        }
        (skipped, s)
    }

    fn le16(b: &[u8], o: usize) -> u64 {
        u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
    }
    fn le32(b: &[u8], o: usize) -> u64 {
        u64::from(u32::from_le_bytes(b[o..o + 4].try_into().unwrap()))
    }

    #[test]
    fn sample_card_skips_what_the_full_map_skips_as_it_goes_by() {
        let img = card();
        let size = img.len() as u64;
        let used = full_used(&img);
        let free = used.gaps(size);
        for piece in [4 << 20, (1 << 20) + 4097, 3 * 65536 + 512, 12345] {
            let (skipped, s) = stream(&img, piece);
            let notes = s.notes();
            eprintln!(
                "pieces of {piece}: skipped {} of {} free bytes ({:.1}%), {} runs, at most {} \
                 bytes kept\n  {}",
                skipped.total(),
                free.total(),
                100.0 * skipped.total() as f64 / free.total() as f64,
                s.runs,
                s.peak_kept,
                notes.join("\n  ")
            );
            assert_eq!(
                skipped.intersect(&used),
                ExtentMap::new(),
                "skipped what the map keeps"
            );
            // Once everything has gone by, the map is the full map exactly.
            assert_eq!(s.known_free(0..size), free, "{notes:?}");
            assert!(
                s.owners.iter().all(|o| matches!(o.state, State::Resolved)),
                "{notes:?}"
            );
            // Boot's free space after its FATs and root's after its inode tables: all but
            // the few MiB of each that go by before their metadata is complete, and the
            // spare inode-table blocks (they go by before the tables are read).
            let scan = scan::scan_source(Arc::new(MemSource(img.to_vec())), None).unwrap();
            let spare: u64 = map::image_map(&scan)
                .unwrap()
                .parts
                .iter()
                .map(|p| p.metadata_left_out)
                .sum();
            assert!(
                skipped.total() >= free.total() - 6 * MIB - spare,
                "skipped only {} of {}",
                skipped.total(),
                free.total()
            );
            assert!(s.runs <= 12, "{} runs", s.runs);
            assert!(s.peak_kept <= 2 * QUIET, "{} bytes kept", s.peak_kept);
            assert_eq!(s.view.bytes(), 0, "everything resolved: nothing kept");
        }
    }

    /// GUID text to its on-disk (mixed-endian) bytes.
    fn guid(s: &str) -> [u8; 16] {
        let h: Vec<u8> = (0..16)
            .map(|i| {
                let hex: String = s
                    .chars()
                    .filter(|c| *c != '-')
                    .skip(2 * i)
                    .take(2)
                    .collect();
                u8::from_str_radix(&hex, 16).unwrap()
            })
            .collect();
        let mut g = [0u8; 16];
        g[..4].copy_from_slice(&[h[3], h[2], h[1], h[0]]);
        g[4..8].copy_from_slice(&[h[5], h[4], h[7], h[6]]);
        g[8..].copy_from_slice(&h[8..]);
        g
    }

    /// The sample card's partitions in a GPT (with 1 MiB more at the end for the backup).
    fn gpt_card() -> Vec<u8> {
        let mut img = card();
        img.resize(img.len() + MIB as usize, 0);
        let sectors = img.len() as u64 / 512;
        let mut entries = vec![0u8; 128 * 128];
        let parts = [
            ("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", 8192u64, 106_495u64),
            ("0FC63DAF-8483-4772-8E79-3D69D8477DE4", 106_496, 262_143),
        ];
        for (i, (t, first, last)) in parts.iter().enumerate() {
            let e = &mut entries[i * 128..(i + 1) * 128];
            e[..16].copy_from_slice(&guid(t));
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        let header = |me: u64, other: u64, array: u64| {
            let mut h = vec![0u8; 512];
            h[..8].copy_from_slice(b"EFI PART");
            h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
            h[12..16].copy_from_slice(&92u32.to_le_bytes());
            h[24..32].copy_from_slice(&me.to_le_bytes());
            h[32..40].copy_from_slice(&other.to_le_bytes());
            h[40..48].copy_from_slice(&34u64.to_le_bytes());
            h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
            h[56..72].copy_from_slice(&[0x5e; 16]);
            h[72..80].copy_from_slice(&array.to_le_bytes());
            h[80..84].copy_from_slice(&128u32.to_le_bytes());
            h[84..88].copy_from_slice(&128u32.to_le_bytes());
            h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
            let c = crc32(&h[..92]);
            h[16..20].copy_from_slice(&c.to_le_bytes());
            h
        };
        let put = |img: &mut Vec<u8>, lba: u64, b: &[u8]| {
            let o = (lba * 512) as usize;
            img[o..o + b.len()].copy_from_slice(b);
        };
        let mut mbr = vec![0u8; 512];
        mbr[446 + 4] = 0xee;
        mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&(sectors as u32 - 1).to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        put(&mut img, 0, &mbr);
        put(&mut img, 1, &header(1, sectors - 1, 2));
        put(&mut img, 2, &entries);
        put(&mut img, sectors - 33, &entries);
        put(&mut img, sectors - 1, &header(sectors - 1, 1, sectors - 33));
        img
    }

    #[test]
    fn gpt_is_taken_on_the_primary_and_its_backup_is_kept() {
        let img = gpt_card();
        let size = img.len() as u64;
        let scan = scan::scan_source(Arc::new(MemSource(img.clone())), None).unwrap();
        assert_eq!(scan.layout.table, TableKind::Gpt);
        assert!(scan.layout.gpt.as_ref().unwrap().backup_ok);
        let used = full_used(&img);
        let (skipped, s) = stream(&img, 4 << 20);
        assert_eq!(skipped.intersect(&used), ExtentMap::new());
        assert_eq!(s.known_free(0..size), used.gaps(size), "{:?}", s.notes());
        assert!(used.covered(size - 33 * 512, size) == 33 * 512);
        assert!(skipped.total() > 100 * MIB, "{}", skipped.total());
    }

    /// Every block bitmap of an ext image zeroed, with its checksums made valid again (as
    /// `tests/common/ext_damage.rs` does): only the cross-check against the inodes keeps the
    /// files.
    fn zero_block_bitmaps(img: &mut [u8]) {
        let sb = img[1024..2048].to_vec();
        let bs = 1024usize << le32(&sb, 0x18);
        let (blocks, first, bpg) = (le32(&sb, 4), le32(&sb, 0x14), le32(&sb, 0x20));
        let groups = (blocks - first).div_ceil(bpg) as usize;
        let gdt = (first as usize + 1) * bs;
        let dsz = le16(&sb, 0xFE) as usize;
        let cpg_bytes = le32(&sb, 0x24) as usize / 8;
        let seed = crc32c_raw(!0, &sb[0x68..0x78]);
        for g in 0..groups {
            let d = gdt + g * dsz;
            let bb = (le32(img, d) | le32(img, d + 0x20) << 32) as usize * bs;
            img[bb..bb + cpg_bytes].fill(0);
            let bc = if le16(img, d + 0x12) & 2 == 0 {
                crc32c_raw(seed, &img[bb..bb + cpg_bytes])
            } else {
                0
            };
            img[d + 0x18..d + 0x1A].copy_from_slice(&(bc as u16).to_le_bytes());
            img[d + 0x38..d + 0x3A].copy_from_slice(&((bc >> 16) as u16).to_le_bytes());
            let mut raw = img[d..d + dsz].to_vec();
            raw[0x1E..0x20].fill(0);
            let c = crc32c_raw(crc32c_raw(seed, &(g as u32).to_le_bytes()), &raw);
            img[d + 0x1E..d + 0x20].copy_from_slice(&(c as u16).to_le_bytes());
        }
    }

    /// `fs` in an MBR partition at 1 MiB, with 1 MiB of nothing after it.
    fn in_partition(fs: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; MIB as usize];
        img[510] = 0x55;
        img[511] = 0xaa;
        img[446 + 4] = 0x83;
        img[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        img[446 + 12..446 + 16].copy_from_slice(&(fs.len() as u32 / 512).to_le_bytes());
        img.extend_from_slice(fs);
        img.resize(img.len() + MIB as usize, 0);
        img
    }

    #[test]
    fn ext_with_lying_bitmaps_never_gets_a_referenced_block_skipped() {
        let (mut fs_img, refs) = ext_fixture();
        zero_block_bitmaps(&mut fs_img);
        for (img, at) in [(fs_img.clone(), 0), (in_partition(&fs_img), MIB)] {
            let size = img.len() as u64;
            let referenced =
                ExtentMap::from_ranges(refs.iter().map(|&(a, b)| (at + a * 1024, at + b * 1024)));
            let used = full_used(&img);
            assert_eq!(
                referenced.subtract(&used),
                ExtentMap::new(),
                "the cross-check keeps them"
            );
            for piece in [1 << 20, 4096 + 512, 65536] {
                let (skipped, s) = stream(&img, piece);
                eprintln!(
                    "damaged ext at {at}, pieces of {piece}: skipped {} of {}, {} runs\n  {}",
                    skipped.total(),
                    size - used.total(),
                    s.runs,
                    s.notes().join("\n  ")
                );
                assert_eq!(skipped.intersect(&referenced), ExtentMap::new());
                assert_eq!(skipped.intersect(&used), ExtentMap::new());
                assert_eq!(s.known_free(0..size), used.gaps(size), "{:?}", s.notes());
                assert!(skipped.total() > 0);
            }
        }
    }

    /// The sample's boot partition with the FAT entries (every copy) of every file in its
    /// root directory zeroed; returns the image and the bytes of those files' clusters.
    fn card_with_cleared_fat() -> (Vec<u8>, ExtentMap) {
        let mut img = card();
        let part = 4 * MIB as usize;
        let b = &img[part..part + 512];
        let (bps, spc, reserved) = (le16(b, 11), u64::from(b[13]), le16(b, 14));
        let (nfats, fatsz, root) = (u64::from(b[16]), le32(b, 36), le32(b, 44));
        let fat = part as u64 + reserved * bps;
        let cbytes = spc * bps;
        let data = fat + nfats * fatsz * bps;
        let cl = |c: u64| data + (c - 2) * cbytes;
        let entry = |img: &[u8], c: u64| le32(img, (fat + 4 * c) as usize) & 0x0FFF_FFFF;
        let chain = |img: &[u8], mut c: u64| {
            let mut v = Vec::new();
            while (2..0x0FFF_FFF8).contains(&c) && v.len() < 100_000 {
                v.push(c);
                c = entry(img, c);
            }
            v
        };
        let mut files = Vec::new();
        for c in chain(&img, root) {
            let dir = &img[cl(c) as usize..(cl(c) + cbytes) as usize];
            for e in dir.chunks(32) {
                let attr = e[11];
                if e[0] == 0 {
                    break;
                }
                if e[0] == 0xE5 || attr == 0x0F || attr & 0x18 != 0 {
                    continue;
                }
                let first = le16(e, 20) << 16 | le16(e, 26);
                if first >= 2 {
                    files.push(chain(&img, first));
                }
            }
        }
        let mut refs = ExtentMap::new();
        for c in files.iter().flatten() {
            refs.insert(cl(*c), cl(*c) + cbytes);
            for copy in 0..nfats {
                let o = (fat + copy * fatsz * bps + 4 * c) as usize;
                img[o..o + 4].fill(0);
            }
        }
        assert!(refs.total() > MIB, "the kernel is among them");
        (img, refs)
    }

    #[test]
    fn fat_with_cleared_entries_never_gets_a_referenced_cluster_skipped() {
        let (img, refs) = card_with_cleared_fat();
        let size = img.len() as u64;
        let used = full_used(&img);
        assert_eq!(
            refs.subtract(&used),
            ExtentMap::new(),
            "the cross-check keeps them"
        );
        for piece in [4 << 20, 777_777] {
            let (skipped, s) = stream(&img, piece);
            assert_eq!(skipped.intersect(&refs), ExtentMap::new());
            assert_eq!(skipped.intersect(&used), ExtentMap::new());
            assert_eq!(s.known_free(0..size), used.gaps(size), "{:?}", s.notes());
        }
    }

    /// Two copies of `fs` as logical partitions 5 and 6 of an extended partition, each behind
    /// its EBR (at 1 MiB and 10 MiB), with 1 MiB after them.
    fn extended(fs: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 20 * MIB as usize];
        let entry = |img: &mut [u8], sector: u64, slot: usize, t: u8, start: u32, len: u32| {
            let e = (sector * 512) as usize + 446 + 16 * slot;
            img[e + 4] = t;
            img[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            img[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
            let sig = (sector * 512) as usize + 510;
            img[sig..sig + 2].copy_from_slice(&[0x55, 0xaa]);
        };
        entry(&mut img, 0, 0, 0x05, 2048, 18 * 2048);
        entry(&mut img, 2048, 0, 0x83, 2048, 16384);
        entry(&mut img, 2048, 1, 0x05, 9 * 2048, 9 * 2048);
        entry(&mut img, 10 * 2048, 0, 0x83, 2048, 16384);
        for at in [2 * MIB as usize, 11 * MIB as usize] {
            img[at..at + fs.len()].copy_from_slice(fs);
        }
        img
    }

    #[test]
    fn logical_partitions_wait_for_the_ebr_chain() {
        let (fs_img, _) = ext_fixture();
        let img = extended(&fs_img);
        let size = img.len() as u64;
        let scan = scan::scan_source(Arc::new(MemSource(img.clone())), None).unwrap();
        let logicals: Vec<u32> = scan.layout.data_partitions().map(|p| p.index).collect();
        assert_eq!(logicals, [5, 6], "{:?}", scan.layout.warnings);
        let used = full_used(&img);
        let (skipped, s) = stream(&img, 1 << 20);
        let notes = s.notes();
        assert_eq!(skipped.intersect(&used), ExtentMap::new());
        // The table is known only when the second EBR has come, after partition 5's
        // superblock went by unkept: partition 5 is written whole, partition 6 and the
        // space past it are skipped where free.
        assert!(notes[0].contains("known at byte 10486272"), "{notes:?}");
        assert!(
            notes.iter().any(|n| n.starts_with("partition 5: given up")),
            "{notes:?}"
        );
        let free = used.gaps(size);
        let p6 = ExtentMap::single(11 * MIB, size);
        assert!(skipped.subtract(&p6).is_empty(), "{notes:?}");
        let after = ExtentMap::single(16 * MIB, size); // the first piece once it is known
        assert_eq!(
            skipped.intersect(&after),
            free.intersect(&after),
            "{notes:?}"
        );
    }

    /// xorshift64, fixed seeds.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n.div_ceil(8))
                .flat_map(|_| self.next().to_le_bytes())
                .take(n)
                .collect()
        }
    }

    #[test]
    fn garbage_never_panics_and_stays_bounded() {
        let mut rng = Rng(0x5eed_0bad);
        let noise = rng.bytes(6 << 20);
        // Noise alone, and noise behind an MBR whose partitions hold it (one starts over the
        // table, one runs past the end, one is fine).
        let mut parted = noise.clone();
        parted[510] = 0x55;
        parted[511] = 0xaa;
        for (i, (start, len)) in [(2048u32, 4096u32), (1, 100), (8192, 1 << 20)]
            .iter()
            .enumerate()
        {
            let e = 446 + 16 * i;
            parted[e] = 0;
            parted[e + 4] = 0x83;
            parted[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            parted[e + 12..e + 16].copy_from_slice(&len.to_le_bytes());
        }
        parted[446 + 48..510].fill(0);
        for img in [noise, parted] {
            let used = full_used(&img);
            for piece in [1, 4095, 1 << 20] {
                let piece = piece.max(img.len() / 20_000);
                let (skipped, s) = stream(&img, piece);
                assert_eq!(skipped.intersect(&used), ExtentMap::new());
                assert!(s.peak_kept <= MAX_KEPT);
            }
        }
        // Sizes that lie, pieces out of order, bytes past the end.
        let mut s = StreamSkip::new(0, Some(4096));
        s.feed(0, &[1; 100]);
        assert!(s.known_free(0..u64::MAX).is_empty());
        let mut s = StreamSkip::new(u64::MAX, Some(3));
        s.feed(0, &[0; 4096]);
        s.feed(1 << 40, &[0; 100]);
        assert!(s.known_free(0..u64::MAX).is_empty());
        assert!(
            s.notes().iter().any(|n| n.contains("never fed")),
            "{:?}",
            s.notes()
        );
        let mut s = StreamSkip::new(u64::MAX, None);
        s.feed(u64::MAX - 10, &[0; 100]);
        assert!(
            s.notes().iter().any(|n| n.contains("2^64")),
            "{:?}",
            s.notes()
        );
    }

    #[test]
    fn a_filesystem_claiming_terabytes_of_metadata_is_given_up_quickly() {
        // The sample's FAT32 boot sector in a 1 TiB partition, made a 1 TiB filesystem of
        // 8 KiB clusters with two FATs of 512 MiB each.
        let card = card();
        let mut img = vec![0u8; 2 * MIB as usize];
        img[..512].copy_from_slice(&card[..512]);
        img[446 + 16..510].fill(0);
        img[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        img[446 + 12..446 + 16].copy_from_slice(&(1u32 << 31).to_le_bytes());
        let bs = MIB as usize;
        img[bs..bs + 512].copy_from_slice(&card[4 * MIB as usize..4 * MIB as usize + 512]);
        img[bs + 13] = 16;
        img[bs + 32..bs + 36].copy_from_slice(&(u32::MAX >> 1).to_le_bytes());
        img[bs + 36..bs + 40].copy_from_slice(&(1u32 << 20).to_le_bytes());
        let t = std::time::Instant::now();
        let mut s = StreamSkip::new((1 << 40) + MIB, None);
        s.feed(0, &img);
        let notes = s.notes();
        eprintln!("{:?}: {notes:?}", t.elapsed());
        assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
        assert!(s.peak_kept <= MAX_KEPT, "{}", s.peak_kept);
        assert!(
            notes.iter().any(|n| n.starts_with("partition 1: given up")),
            "{notes:?}"
        );
        assert!(s.known_free(0..1 << 41).is_empty());
    }

    #[test]
    fn damaged_cards_never_get_a_kept_byte_skipped() {
        let base = card();
        let mut rng = Rng(0x0dd_ba11);
        // The table, the FAT boot sector and FATs, the ext superblock, descriptors, bitmaps
        // and inode tables: where the readers look.
        let spots = [(0u64, 512u64), (4 * MIB, 64 * 1024), (52 * MIB, 600 * 1024)];
        for case in 0..24 {
            let mut img = base.clone();
            for _ in 0..1 + rng.below(12) {
                let (at, len) = spots[rng.below(spots.len() as u64) as usize];
                let o = (at + rng.below(len)) as usize;
                img[o] = match rng.below(3) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            let used = full_used(&img);
            let piece = [4 << 20, 100_003][case % 2];
            let (skipped, s) = stream(&img, piece);
            assert_eq!(
                skipped.intersect(&used),
                ExtentMap::new(),
                "case {case}: {:?}",
                s.notes()
            );
            assert!(s.peak_kept <= MAX_KEPT);
        }
    }

    /// Measures an image named by `STREAM_SKIP_IMAGE` (raw, or `.xz`): what a stream in 4 MiB
    /// pieces skips against the full map. `cargo test --release --lib stream_skip::tests::measure
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure() {
        let Ok(path) = std::env::var("STREAM_SKIP_IMAGE") else {
            return;
        };
        let raw = std::fs::read(&path).unwrap();
        let img = if path.ends_with(".xz") {
            unxz(&raw)
        } else {
            raw
        };
        let size = img.len() as u64;
        let t = std::time::Instant::now();
        let used = full_used(&img);
        let full = t.elapsed();
        let t = std::time::Instant::now();
        let (skipped, s) = stream(&img, 4 << 20);
        eprintln!(
            "{path}: full map {:?}, stream {:?}; free {} skipped {} ({:.1}%), {} runs, at most \
             {} bytes kept\n  {}",
            full,
            t.elapsed(),
            size - used.total(),
            skipped.total(),
            100.0 * skipped.total() as f64 / (size - used.total()).max(1) as f64,
            s.runs,
            s.peak_kept,
            s.notes().join("\n  ")
        );
        assert_eq!(skipped.intersect(&used), ExtentMap::new());
    }

    #[test]
    fn a_stream_longer_than_its_size_stops_learning() {
        let img = card();
        let mut s = StreamSkip::new(64 * MIB, None);
        let mut free_before = ExtentMap::new();
        for (i, data) in img.chunks(4 << 20).enumerate() {
            let at = (i as u64) * (4 << 20);
            free_before = s.known_free(0..u64::MAX);
            s.feed(at, data);
        }
        // The table says partition 2 ends at 128 MiB: unusable at 64 MiB, nothing skipped.
        assert!(free_before.is_empty());
        assert!(
            s.notes().iter().any(|n| n.contains("goes on past")),
            "{:?}",
            s.notes()
        );
    }
}
