//! The flash writer writes exactly the plan: for random images, maps and target sizes, every
//! mapped byte and the whole head hold the image, a larger target's last MiB is zero, and no
//! other byte of the target is touched. The head is zeroed first and written last; a target
//! that fails is dropped while the others finish; read-back finds a changed byte.

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use blockwise::flash::{self, FlashOptions, FlashPlan, FlashTarget, Report, Stage, HEAD, TAIL};
use blockwise::io::{MemSource, ReadAt, WriteAt};
use blockwise::ExtentMap;
use proptest::prelude::*;

/// The byte a target held before the flash, at `i`.
fn old(i: usize) -> u8 {
    (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] | 1
}

fn image(len: usize, seed: u64) -> Vec<u8> {
    common::seeded_bytes(len, seed)
}

/// A target that logs its operations.
struct Logged {
    data: Vec<u8>,
    log: Arc<Mutex<Vec<String>>>,
    fail_after: Option<u64>,
    written: u64,
}

impl WriteAt for Logged {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        if self
            .fail_after
            .is_some_and(|n| self.written + buf.len() as u64 > n)
        {
            return Err(io::Error::other("no space left on the card"));
        }
        self.written += buf.len() as u64;
        let zeros = buf.iter().all(|&b| b == 0);
        self.log.lock().unwrap().push(format!(
            "{} {offset} {}",
            if zeros { "zero" } else { "write" },
            buf.len()
        ));
        self.data.write_all_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        WriteAt::set_len(&mut self.data, len)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.log.lock().unwrap().push("sync".into());
        Ok(())
    }
}

impl FlashTarget for Logged {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_current(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.data.read_current(offset, buf)
    }
    fn medium(&self) -> io::Result<Box<dyn ReadAt + '_>> {
        self.data.medium()
    }
}

/// Runs `plan` onto `targets` with `opts`.
fn run(
    src: &MemSource,
    plan: &FlashPlan,
    targets: &mut [&mut dyn FlashTarget],
    opts: &FlashOptions,
) -> blockwise::Result<Report> {
    flash::run(src, plan, targets, opts, &|_| {}, None)
}

/// Without read-back, so that the log shows the writes alone.
fn plain() -> FlashOptions {
    FlashOptions {
        verify: false,
        ..FlashOptions::default()
    }
}

fn target(len: usize) -> Logged {
    Logged {
        data: (0..len).map(old).collect(),
        log: Arc::default(),
        fail_after: None,
        written: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn only_the_plan_is_written(
        len in 1usize..(3 << 20),
        extra in 0usize..(2 << 20),
        ranges in proptest::collection::vec((0u64..(3 << 20), 1u64..300_000), 0..12),
        block_shift in 9u32..16,
        seed in any::<u64>(),
    ) {
        let img = image(len, seed);
        let map = ExtentMap::from_ranges(ranges.iter().map(|&(s, l)| (s, s + l)));
        let plan = FlashPlan::new(len as u64, (len + extra) as u64, &map, 1 << block_shift);
        let mut t = target(len + extra);
        let src = MemSource(img.clone());
        let w = run(&src, &plan, &mut [&mut t], &FlashOptions::default()).unwrap();
        prop_assert_eq!(&w.targets[0].error, &None);
        prop_assert_eq!(w.targets[0].written, plan.mapped());
        for (i, &b) in t.data.iter().enumerate() {
            let at = i as u64;
            let want = if plan.written().contains(at) {
                img[i]
            } else if at < HEAD || plan.zero_tail.contains(&at) {
                0
            } else {
                old(i)
            };
            prop_assert_eq!(b, want, "byte {}", i);
        }
        // Every mapped byte of the caller's map is written.
        for e in map.intersect(&ExtentMap::single(0, len as u64)).iter() {
            prop_assert!(plan.written().covered(e.start, e.end) == e.end - e.start);
        }
        prop_assert_eq!(flash::read_back(&MemSource(t.data.clone()), &w).unwrap(), None);
    }
}

#[test]
fn the_head_is_zeroed_first_and_written_last() {
    let len = 5 << 20;
    let img = image(len, 7);
    let map = ExtentMap::from_ranges([(100, 200), (2 << 20, 3 << 20), (4 << 20, 5 << 20)]);
    let plan = FlashPlan::new(len as u64, 8 << 20, &map, 4096);
    let mut t = target(8 << 20);
    let log = t.log.clone();
    run(&MemSource(img), &plan, &mut [&mut t], &plain()).unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            format!("zero 0 {HEAD}"),
            "sync".into(),
            format!("write {} {}", 2 << 20, 1 << 20),
            format!("write {} {}", 4 << 20, 1 << 20),
            "sync".into(),
            format!("zero {} {TAIL}", (8 << 20) - TAIL),
            format!("write 0 {HEAD}"),
            "sync".into(),
        ]
    );
}

#[test]
fn a_failing_target_is_dropped_and_the_others_finish() {
    let len = 6 << 20;
    let img = image(len, 9);
    let plan = FlashPlan::new(
        len as u64,
        len as u64,
        &ExtentMap::single(0, len as u64),
        4096,
    );
    let mut good = target(len);
    let mut bad = target(len);
    bad.fail_after = Some(3 << 20);
    let src = MemSource(img.clone());
    let w = run(
        &src,
        &plan,
        &mut [&mut good, &mut bad],
        &FlashOptions::default(),
    )
    .unwrap();
    assert_eq!(w.targets[0].error, None);
    assert!(good.data == img);
    let e = w.targets[1].error.clone().unwrap().to_string();
    assert!(e.contains("no space left"), "{e}");
    // Its head was zeroed before anything else, and the image's head never came: no table.
    assert!(bad.data[..HEAD as usize].iter().all(|&b| b == 0));
    // Both failing: the run fails.
    let mut a = target(len);
    let mut b = target(len);
    a.fail_after = Some(1 << 20);
    b.fail_after = Some(2 << 20);
    let r = run(&src, &plan, &mut [&mut a, &mut b], &plain());
    assert!(r.is_err());
}

#[test]
fn read_back_finds_the_first_changed_piece() {
    let len = 9 << 20;
    let img = image(len, 3);
    let plan = FlashPlan::new(
        len as u64,
        len as u64,
        &ExtentMap::single(0, len as u64),
        4096,
    );
    let mut t = target(len);
    let w = run(&MemSource(img), &plan, &mut [&mut t], &plain()).unwrap();
    let mut data = t.data.clone();
    data[(6 << 20) + 12345] ^= 1;
    let bad = flash::read_back(&MemSource(data), &w).unwrap().unwrap();
    assert!(
        bad <= (6 << 20) + 12345 && (6 << 20) + 12345 - bad < 4 << 20,
        "{bad}"
    );
}

/// A target whose medium reads one byte wrong, `times` times.
struct Flaky {
    inner: Logged,
    at: usize,
    times: std::sync::atomic::AtomicUsize,
}

impl WriteAt for Flaky {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl FlashTarget for Flaky {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_current(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_current(offset, buf)
    }
    fn medium(&self) -> io::Result<Box<dyn ReadAt + '_>> {
        let mut d = self.inner.data.clone();
        let left = self.times.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.times
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            d[self.at] ^= 0x40;
        }
        Ok(Box::new(MemSource(d)))
    }
}

#[test]
fn a_range_that_reads_back_wrong_is_rewritten_once_then_reported() {
    let len = 6 << 20;
    let img = image(len, 11);
    let map = ExtentMap::from_ranges([(2 << 20, 4 << 20)]);
    let plan = FlashPlan::new(len as u64, len as u64, &map, 4096);
    let src = MemSource(img.clone());
    // Wrong once: rewritten, then good.
    let mut t = Flaky {
        inner: target(len),
        at: (3 << 20) + 5,
        times: 1.into(),
    };
    let w = run(&src, &plan, &mut [&mut t], &FlashOptions::default()).unwrap();
    let r = &w.targets[0];
    assert_eq!(r.error, None);
    assert!(r.rewritten > 0 && r.rewritten <= 4 << 20, "{r:?}");
    assert_eq!(r.verified, plan.mapped());
    assert_eq!(
        &t.inner.data[..len],
        &img[..len]
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if plan.written().contains(i as u64) {
                    b
                } else {
                    old(i)
                }
            })
            .collect::<Vec<u8>>()[..]
    );
    // Wrong every time: the target fails with a mismatch, and its head is never written.
    let mut t = Flaky {
        inner: target(len),
        at: (3 << 20) + 5,
        times: 10.into(),
    };
    let w = run(&src, &plan, &mut [&mut t], &FlashOptions::default()).unwrap();
    let e = w.targets[0].error.clone().unwrap();
    assert!(e.mismatch, "{e:?}");
    assert!(e.offset <= (3 << 20) + 5 && (3 << 20) + 5 - e.offset < 4 << 20);
    assert!(
        t.inner.data[..HEAD as usize].iter().all(|&b| b == 0),
        "no table"
    );
}

#[test]
fn a_bmap_range_that_does_not_match_is_never_written() {
    use blockwise::bmap;
    let len = 8 << 20;
    let img = image(len, 5);
    let map = ExtentMap::from_ranges([(1 << 20, 2 << 20), (3 << 20, 5 << 20), (6 << 20, 7 << 20)]);
    let blocks: Vec<(u64, u64)> = map.block_ranges(4096).collect();
    let sums = bmap::range_checksums(&MemSource(img.clone()), &blocks, 4096, len as u64).unwrap();
    let xml = bmap::render(
        len as u64,
        &map,
        Some(&sums),
        &bmap::BmapWriteOptions::default(),
    );
    let good = bmap::parse(&xml).unwrap();
    // The image differs from what the bmap vouches for inside the second range.
    let mut bad_img = img.clone();
    bad_img[(4 << 20) + 77] ^= 1;
    let plan = FlashPlan::new(len as u64, len as u64, &good.extent_map(), 4096).with_checks(&good);
    assert_eq!(plan.checks.len(), 3);
    let mut t = target(len);
    let e = run(&MemSource(bad_img), &plan, &mut [&mut t], &plain()).unwrap_err();
    assert!(
        matches!(e, blockwise::Error::Mismatch { offset, .. } if offset == 3 << 20),
        "{e}"
    );
    for i in (3 << 20)..(5 << 20) {
        assert_eq!(t.data[i], old(i), "byte {i} of the bad range was written");
    }
    assert!(t.data[..HEAD as usize].iter().all(|&b| b == 0));
    // The same plan over the right image writes everything.
    let mut t = target(len);
    let w = run(
        &MemSource(img.clone()),
        &plan,
        &mut [&mut t],
        &FlashOptions::default(),
    )
    .unwrap();
    assert_eq!(w.targets[0].error, None);
    assert_eq!(&t.data[(3 << 20)..(5 << 20)], &img[(3 << 20)..(5 << 20)]);
}

#[test]
fn delta_writes_only_what_differs_and_discard_covers_the_rest() {
    let len = 8 << 20;
    let mut img = image(len, 21);
    let map = ExtentMap::from_ranges([(2 << 20, 4 << 20), (5 << 20, 6 << 20)]);
    let plan = FlashPlan::new(len as u64, 10 << 20, &map, 4096);
    let mut t = target(10 << 20);
    run(&MemSource(img.clone()), &plan, &mut [&mut t], &plain()).unwrap();
    let delta = FlashOptions {
        delta: true,
        ..FlashOptions::default()
    };
    let log = t.log.clone();
    log.lock().unwrap().clear();
    let w = run(&MemSource(img.clone()), &plan, &mut [&mut t], &delta).unwrap();
    let r = &w.targets[0];
    assert_eq!(
        r.written, 0,
        "a card that holds the image is not written: {r:?}"
    );
    assert_eq!(r.unchanged, plan.mapped());
    assert_eq!(
        r.zeroed, 0,
        "not even its head, and the tail is zero already"
    );
    assert!(
        log.lock().unwrap().iter().all(|l| l == "sync"),
        "{:?}",
        log.lock().unwrap()
    );
    // One block changed: one block written.
    img[(5 << 20) + 4096 * 3 + 9] ^= 0xff;
    log.lock().unwrap().clear();
    let w = run(&MemSource(img.clone()), &plan, &mut [&mut t], &delta).unwrap();
    assert_eq!(w.targets[0].written, HEAD + 4096);
    // The head is zeroed before the block that differs is written, and written last.
    let l = log.lock().unwrap().clone();
    let first_write = l.iter().position(|x| x.starts_with("write")).unwrap();
    assert!(
        l[..first_write].contains(&format!("zero 0 {HEAD}")),
        "{l:?}"
    );
    assert_eq!(
        l.iter().rev().find(|x| x.starts_with("write")),
        Some(&format!("write 0 {HEAD}"))
    );
    assert_eq!(
        t.data[(5 << 20) + 4096 * 3 + 9],
        img[(5 << 20) + 4096 * 3 + 9]
    );
}

/// A target that records what it is told to discard.
struct Discarding {
    inner: Logged,
    discarded: ExtentMap,
}

impl WriteAt for Discarding {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

impl FlashTarget for Discarding {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_current(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_current(offset, buf)
    }
    fn medium(&self) -> io::Result<Box<dyn ReadAt + '_>> {
        self.inner.medium()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<u64> {
        self.discarded.insert(offset, offset + len);
        Ok(len)
    }
}

#[test]
fn discard_covers_exactly_what_the_plan_leaves_alone() {
    let len = 8 << 20;
    let img = image(len, 2);
    let map = ExtentMap::from_ranges([(2 << 20, 3 << 20), (5 << 20, 6 << 20)]);
    let plan = FlashPlan::new(len as u64, 12 << 20, &map, 4096);
    let mut t = Discarding {
        inner: target(12 << 20),
        discarded: ExtentMap::new(),
    };
    let opts = FlashOptions {
        discard: true,
        ..FlashOptions::default()
    };
    let w = run(&MemSource(img), &plan, &mut [&mut t], &opts).unwrap();
    let mut expect = ExtentMap::single(0, 12 << 20).subtract(plan.written());
    expect = expect.subtract(&ExtentMap::single(plan.zero_tail.start, plan.zero_tail.end));
    assert_eq!(t.discarded, expect);
    assert_eq!(w.targets[0].discarded, expect.total());
}

#[test]
fn patches_past_the_image_are_written_with_the_head_and_read_back() {
    let len = 4 << 20;
    let img = image(len, 8);
    let mut plan = FlashPlan::new(len as u64, 8 << 20, &ExtentMap::new(), 4096);
    plan.patches = vec![(512, vec![0xAB; 512]), ((8 << 20) - 1024, vec![0xCD; 1024])];
    let mut t = target(8 << 20);
    let w = run(
        &MemSource(img.clone()),
        &plan,
        &mut [&mut t],
        &FlashOptions::default(),
    )
    .unwrap();
    assert_eq!(w.targets[0].error, None);
    assert_eq!(&t.data[..512], &img[..512]);
    assert_eq!(&t.data[512..1024], &[0xAB; 512][..]);
    assert_eq!(&t.data[1024..HEAD as usize], &img[1024..HEAD as usize]);
    assert_eq!(&t.data[(8 << 20) - 1024..], &[0xCD; 1024][..]);
    assert_eq!(w.targets[0].verified, HEAD + 1024);
}

/// Each target reports its own progress: what it has written, up to the plan's mapped bytes,
/// then what it has read back, each count never going down.
#[test]
fn every_target_reports_its_own_write_and_verify_progress() {
    let len = 5 << 20;
    let img = image(len, 7);
    let map = ExtentMap::from_ranges([(0, 1 << 20), (2 << 20, 9 << 19)]);
    let plan = FlashPlan::new(len as u64, len as u64, &map, 4096);
    let (mut a, mut b) = (target(len), target(len));
    let seen = std::sync::Mutex::new(Vec::new());
    let r = flash::run(
        &MemSource(img),
        &plan,
        &mut [&mut a, &mut b],
        &FlashOptions::default(),
        &|p| seen.lock().unwrap().push(*p),
        None,
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    for i in 0..2 {
        for stage in [Stage::Write, Stage::Verify] {
            let mine: Vec<_> = seen
                .iter()
                .filter(|p| p.target == Some(i) && p.stage == stage)
                .collect();
            assert!(!mine.is_empty(), "target {i}: no {stage:?} progress");
            assert!(
                mine.windows(2).all(|w| w[0].done <= w[1].done),
                "target {i} {stage:?}"
            );
            let last = mine[mine.len() - 1];
            assert_eq!(last.done, last.total, "target {i} {stage:?} ends complete");
        }
        let written = seen
            .iter()
            .rfind(|p| p.target == Some(i) && p.stage == Stage::Write)
            .unwrap();
        assert_eq!(written.total, plan.mapped());
        assert_eq!(r.targets[i].verified, plan.mapped());
    }
}

/// A target whose discards zero what they cover (as a card that reads discarded blocks back
/// as zeros does): a discard that came after a write of the same bytes shows.
struct Zeroing(Logged);

impl WriteAt for Zeroing {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.0.write_all_at(offset, buf)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl FlashTarget for Zeroing {
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_current(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read_current(offset, buf)
    }
    fn medium(&self) -> io::Result<Box<dyn ReadAt + '_>> {
        self.0.medium()
    }
    fn discard(&mut self, offset: u64, len: u64) -> io::Result<u64> {
        self.0.data[offset as usize..(offset + len) as usize].fill(0);
        Ok(len)
    }
}

/// A stream flashed beside a scan that is still running when every piece passes: the
/// pieces are decided by what the scan's readers called free; the scan's map, handed over
/// once the last piece has gone by, keeps part of what was skipped (blocks a bitmap called
/// free that a file uses), and `outcome` decides what the second pass writes.
fn beside(outcome: Result<ExtentMap, String>, discard: bool) -> (Vec<u8>, Vec<u8>, Report) {
    let len = 8usize << 20;
    let img = image(len, 7);
    let hints = flash::ScanHints::new();
    let seen = hints.watch(Arc::new(MemSource(img.clone())));
    // The readers call 2..6 MiB free (a bitmap), and the scan has read to the end.
    seen.note_free(2 << 20, 4 << 20);
    seen.read_at(len as u64 - 1, &mut [0u8; 1]).unwrap();
    let plan = FlashPlan::streaming_beside(len as u64, len as u64, hints.clone());
    let mut t = Zeroing(target(len));
    let outcome = Mutex::new(Some(outcome));
    // The map comes once the decoder has handed over every piece.
    let progress = |p: &flash::Progress| {
        if p.stage == Stage::Write && p.target.is_none() && p.done == p.total {
            if let Some(o) = outcome.lock().unwrap().take() {
                hints.finish(o);
            }
        }
    };
    let opts = FlashOptions {
        discard,
        ..FlashOptions::default()
    };
    let w = flash::run(
        &MemSource(img.clone()),
        &plan,
        &mut [&mut t as &mut dyn FlashTarget],
        &opts,
        &progress,
        None,
    )
    .unwrap();
    assert_eq!(w.targets[0].error, None);
    (img, t.0.data, w)
}

#[test]
fn what_a_scan_beside_a_stream_keeps_after_the_stream_skipped_it_is_written_in_a_second_pass() {
    for discard in [false, true] {
        // The map keeps 3..4 MiB of the 4 MiB skipped on the hint.
        let map = ExtentMap::from_ranges([(0, 1 << 20), (3 << 20, 4 << 20), (7 << 20, 8 << 20)]);
        let (img, card, w) = beside(Ok(map), discard);
        let mb = 1usize << 20;
        for (i, (&got, &want)) in card.iter().zip(&img).enumerate() {
            let free = (2 * mb..3 * mb).contains(&i) || (4 * mb..6 * mb).contains(&i);
            let expect = match (free, discard) {
                (false, _) => want,
                (true, false) => old(i),
                (true, true) => 0,
            };
            assert_eq!(got, expect, "byte {i} (discard {discard})");
        }
        assert_eq!(w.skipped, 3 << 20);
        assert_eq!(w.targets[0].verified, 5 << 20);
        assert!(
            w.notes.iter().any(|n| n.contains("second pass")),
            "{:?}",
            w.notes
        );
        assert_eq!(flash::read_back(&MemSource(card), &w).unwrap(), None);
    }
}

#[test]
fn a_scan_beside_a_stream_that_fails_means_everything_it_skipped_is_written() {
    let (img, card, w) = beside(Err("the scan's decoder failed".into()), false);
    assert_eq!(card, img);
    assert_eq!(w.skipped, 0);
    assert!(
        w.notes.iter().any(|n| n.contains("failed")),
        "{:?}",
        w.notes
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// For random maps whose bmap ranges are hashed on lanes side by side: with every range
    /// right, exactly the plan is written; with one byte wrong, the run fails naming that
    /// range and not one byte of it reaches the card.
    #[test]
    fn checked_ranges_are_written_only_when_they_match(
        ranges in proptest::collection::vec((0u64..(12 << 20), 4096u64..(3 << 20)), 1..10),
        bad in any::<proptest::sample::Index>(),
        seed in any::<u64>(),
    ) {
        use blockwise::bmap;
        let len = 16usize << 20;
        let img = image(len, seed);
        let map = ExtentMap::from_ranges(ranges.iter().map(|&(s, l)| (s, (s + l).min(len as u64))))
            .align_out(4096);
        let blocks: Vec<(u64, u64)> = map.block_ranges(4096).collect();
        let sums = bmap::range_checksums(&MemSource(img.clone()), &blocks, 4096, len as u64).unwrap();
        let xml = bmap::render(len as u64, &map, Some(&sums), &bmap::BmapWriteOptions::default());
        let b = bmap::parse(&xml).unwrap();
        let plan = FlashPlan::new(len as u64, len as u64, &b.extent_map(), 4096).with_checks(&b);
        let mut t = target(len);
        let w = run(&MemSource(img.clone()), &plan, &mut [&mut t], &plain()).unwrap();
        prop_assert_eq!(w.targets[0].written, plan.mapped());
        for e in plan.written().iter() {
            prop_assert!(t.data[e.start as usize..e.end as usize] == img[e.start as usize..e.end as usize]);
        }
        // One byte wrong inside one range.
        let c = &plan.checks[bad.index(plan.checks.len())];
        let at = (c.range.start + (c.range.end - c.range.start) / 2) as usize;
        let mut wrong = img.clone();
        wrong[at] ^= 0x5a;
        let mut t = target(len);
        let e = run(&MemSource(wrong), &plan, &mut [&mut t], &plain()).unwrap_err();
        let named = matches!(e, blockwise::Error::Mismatch { offset, .. } if offset == c.range.start);
        prop_assert!(named, "{}", e);
        for i in c.range.start..c.range.end {
            // The head was zeroed before anything else.
            let before = if i < HEAD { 0 } else { old(i as usize) };
            prop_assert_eq!(t.data[i as usize], before, "byte {} of the bad range was written", i);
        }
    }
}
