//! The flash writer writes exactly the plan: for random images, maps and target sizes, every
//! mapped byte and the whole head hold the image, a larger target's last MiB is zero, and no
//! other byte of the target is touched. The head is zeroed first and written last; a target
//! that fails is dropped while the others finish; read-back finds a changed byte.

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use blockwise::flash::{self, FlashPlan, HEAD, TAIL};
use blockwise::io::{MemSource, WriteAt};
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
        let w = flash::write(&src, &plan, &mut [&mut t], &mut |_| {}, None).unwrap();
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
    flash::write(&MemSource(img), &plan, &mut [&mut t], &mut |_| {}, None).unwrap();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        vec![
            format!("zero 0 {HEAD}"),
            format!("zero {} {TAIL}", (8 << 20) - TAIL),
            "sync".into(),
            format!("write {} {}", 2 << 20, 1 << 20),
            format!("write {} {}", 4 << 20, 1 << 20),
            "sync".into(),
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
    let w = flash::write(&src, &plan, &mut [&mut good, &mut bad], &mut |_| {}, None).unwrap();
    assert_eq!(w.targets[0].error, None);
    assert!(good.data == img);
    let e = w.targets[1].error.clone().unwrap();
    assert!(e.contains("no space left"), "{e}");
    // Its head was zeroed before anything else, and the image's head never came: no table.
    assert!(bad.data[..HEAD as usize].iter().all(|&b| b == 0));
    // Both failing: the run fails.
    let mut a = target(len);
    let mut b = target(len);
    a.fail_after = Some(1 << 20);
    b.fail_after = Some(2 << 20);
    let r = flash::write(&src, &plan, &mut [&mut a, &mut b], &mut |_| {}, None);
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
    let w = flash::write(&MemSource(img), &plan, &mut [&mut t], &mut |_| {}, None).unwrap();
    let mut data = t.data.clone();
    data[(6 << 20) + 12345] ^= 1;
    let bad = flash::read_back(&MemSource(data), &w).unwrap().unwrap();
    assert!(
        bad <= (6 << 20) + 12345 && (6 << 20) + 12345 - bad < 4 << 20,
        "{bad}"
    );
}
