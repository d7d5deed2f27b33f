use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;

use super::job::{MAX_JOB, TAIL};
use super::*;
use crate::io::{Access, Caps, MemSource, SizeKnown};

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// A random-access source made of `unit`-byte units that records every read (offset, length,
/// thread) and fails or panics on reads reaching `bad_from`.
struct Framed {
    data: MemSource,
    unit: u64,
    reads: Mutex<Vec<(u64, u64, ThreadId)>>,
    bad_from: u64,
    panic: bool,
    live: Option<&'static AtomicI64>,
}

impl Framed {
    fn new(n: usize, unit: u64) -> Self {
        Framed {
            data: MemSource(bytes(n)),
            unit,
            reads: Mutex::new(Vec::new()),
            bad_from: u64::MAX,
            panic: false,
            live: None,
        }
    }
}

impl ReadAt for Framed {
    fn size(&self) -> u64 {
        self.data.size()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset + buf.len() as u64 > self.bad_from {
            if self.panic {
                panic!("decoder blew up at {offset}");
            }
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if let Some(l) = self.live {
            l.fetch_add(1, Ordering::SeqCst);
        }
        self.reads
            .lock()
            .unwrap()
            .push((offset, buf.len() as u64, std::thread::current().id()));
        self.data.read_at(offset, buf)
    }
    fn boundaries(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let first = start / self.unit + 1;
        Some(
            (first..)
                .map(|i| i * self.unit)
                .take_while(|&b| b < end)
                .collect(),
        )
    }
}

/// A sequential-only source: reading it at an offset is a bug here.
struct Stream {
    data: Vec<u8>,
    opened: AtomicUsize,
}

impl ReadAt for Stream {
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        panic!("a sequential source must be read in order");
    }
    fn caps(&self) -> Caps {
        Caps {
            access: Access::Sequential,
            ..Caps::RANDOM
        }
    }
    fn sequential(&self, offset: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(&self.data[offset as usize..]))
    }
}

/// Collects what it is given; optionally fails, panics or dawdles at a job.
#[derive(Default)]
struct Collect {
    got: Vec<(usize, Vec<u8>)>,
    finished: bool,
    fail_at: Option<usize>,
    panic_at: Option<usize>,
    slow: bool,
    live: Option<&'static AtomicI64>,
}

impl Sink<usize, Vec<u8>> for Collect {
    fn put(&mut self, job: &Job<usize>, item: &Vec<u8>) -> crate::Result<()> {
        if self.slow {
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.fail_at == Some(job.meta) {
            return Err(Error::Unsupported(format!("sink refuses job {}", job.meta)));
        }
        if self.panic_at == Some(job.meta) {
            panic!("sink blew up at job {}", job.meta);
        }
        if let (Some(l), Some(_)) = (self.live, &job.read) {
            l.fetch_sub(1, Ordering::SeqCst);
        }
        self.got.push((job.meta, item.clone()));
        Ok(())
    }
    fn finish(&mut self) -> crate::Result<()> {
        self.finished = true;
        Ok(())
    }
}

/// Jobs of `len` bytes every `step` bytes; every third one reads nothing.
fn jobs(n: usize, step: u64, len: u64) -> Vec<Job<usize>> {
    (0..n)
        .map(|i| Job {
            read: (i % 3 != 2).then(|| i as u64 * step..i as u64 * step + len),
            meta: i,
            to: None,
        })
        .collect()
}

fn identity(_: &Job<usize>, data: Option<Buf>) -> crate::Result<Vec<u8>> {
    Ok(data.map(Buf::into_vec).unwrap_or_default())
}

fn expected(src: &[u8], jobs: &[Job<usize>]) -> Vec<(usize, Vec<u8>)> {
    jobs.iter()
        .map(|j| {
            let b = j
                .read
                .clone()
                .map(|r| src[r.start as usize..r.end as usize].to_vec());
            (j.meta, b.unwrap_or_default())
        })
        .collect()
}

#[test]
fn every_sink_gets_every_job_in_order() {
    let src = Framed::new(200_000, 1000);
    // Jobs of 2500 bytes every 3000: most cross a unit boundary, some two.
    let js = jobs(60, 3000, 2500);
    let (mut a, mut b) = (Collect::default(), Collect::default());
    let stats = Pipeline::new(&src)
        .threads(3)
        .run(&js, &identity, &mut [&mut a, &mut b], &mut |_| {})
        .unwrap();
    let want = expected(&src.data.0, &js);
    assert_eq!(a.got, want);
    assert_eq!(b.got, want);
    assert!(a.finished && b.finished);
    assert_eq!(stats.bytes_read, 40 * 2500);
}

#[test]
fn a_gate_holds_releases_and_drops_in_job_order() {
    let src = Framed::new(200_000, 1000);
    let js = jobs(30, 3000, 2500);
    let mut a = Collect::default();
    // Jobs 4..=6 held until 7 releases them; every job divisible by 5 dropped, except 5,
    // which is held then (dropped with nothing held before it otherwise).
    Pipeline::new(&src)
        .threads(2)
        .run_gated(&js, &identity, &mut [&mut a], &mut |_| {}, &mut |j, _| {
            Ok(match j.meta {
                4..=6 => Gate::Hold,
                m if m % 5 == 0 => Gate::Drop,
                _ => Gate::Release,
            })
        })
        .unwrap();
    let want: Vec<_> = expected(&src.data.0, &js)
        .into_iter()
        .filter(|(m, _)| m % 5 != 0 || *m == 5)
        .collect();
    assert_eq!(a.got, want);
    assert!(a.finished);
}

#[test]
fn each_unit_is_read_by_one_thread_and_no_read_crosses_one() {
    let src = Framed::new(400_000, 4096);
    let js: Vec<Job<usize>> = (0..100)
        .map(|i| Job {
            read: Some(i * 3000 + 7..i * 3000 + 2900),
            meta: i as usize,
            to: None,
        })
        .collect();
    let mut c = Collect::default();
    Pipeline::new(&src)
        .threads(4)
        .run(&js, &identity, &mut [&mut c], &mut |_| {})
        .unwrap();
    assert_eq!(c.got, expected(&src.data.0, &js));
    let mut by_unit: HashMap<u64, ThreadId> = HashMap::new();
    for (off, len, t) in src.reads.lock().unwrap().iter() {
        let unit = off / 4096;
        assert_eq!(
            (off + len - 1) / 4096,
            unit,
            "read {off}+{len} crosses a unit"
        );
        assert_eq!(
            *by_unit.entry(unit).or_insert(*t),
            *t,
            "unit {unit} read by two threads"
        );
    }
}

#[test]
fn a_sequential_source_is_decoded_once_in_order() {
    let src = Stream {
        data: bytes(100_000),
        opened: AtomicUsize::new(0),
    };
    let js = jobs(30, 3000, 1000);
    let mut c = Collect::default();
    let stats = Pipeline::new(&src)
        .run(&js, &identity, &mut [&mut c], &mut |_| {})
        .unwrap();
    assert_eq!(c.got, expected(&src.data, &js));
    assert_eq!(src.opened.load(Ordering::SeqCst), 1);
    assert_eq!(stats.bytes_read, 20 * 1000);
}

#[test]
fn the_first_failure_in_job_order_is_the_result() {
    for _ in 0..20 {
        let mut src = Framed::new(100_000, 1000);
        src.bad_from = 30_500;
        let js: Vec<Job<usize>> = (0..50)
            .map(|i| Job {
                read: Some(i * 2000..i * 2000 + 1500),
                meta: i as usize,
                to: None,
            })
            .collect();
        let mut c = Collect::default();
        let e = Pipeline::new(&src)
            .threads(4)
            .run(&js, &identity, &mut [&mut c], &mut |_| {})
            .unwrap_err();
        // Job 15 (30000..31500) is the first to reach byte 30500, in its first piece (up to
        // the unit boundary at 31000); later jobs fail too, maybe first.
        assert!(
            matches!(
                e,
                Error::Read {
                    offset: 30_000,
                    len: 1000,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!c.finished);
        assert!(c.got.len() <= 15);
    }
}

#[test]
fn a_panic_in_any_stage_is_an_error_and_nothing_is_finished() {
    let js = jobs(40, 1000, 1000);
    // Transform.
    let src = Framed::new(100_000, 4096);
    let t = |j: &Job<usize>, d: Option<Buf>| {
        assert!(j.meta != 17, "transform blew up");
        identity(j, d)
    };
    let mut c = Collect::default();
    let e = Pipeline::new(&src)
        .run(&js, &t, &mut [&mut c], &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(&e, Error::Panicked { stage: "transform", message } if message.contains("transform blew up")),
        "{e:?}"
    );
    assert!(!c.finished);
    // Sink: the other sink is not finished either.
    let (mut bad, mut good) = (
        Collect {
            panic_at: Some(9),
            ..Collect::default()
        },
        Collect::default(),
    );
    let e = Pipeline::new(&src)
        .run(&js, &identity, &mut [&mut good, &mut bad], &mut |_| {})
        .unwrap_err();
    assert!(matches!(e, Error::Panicked { stage: "sink", .. }), "{e:?}");
    assert!(!good.finished && !bad.finished);
    // Decoder.
    let mut src = Framed::new(100_000, 4096);
    src.bad_from = 20_000;
    src.panic = true;
    let e = Pipeline::new(&src)
        .run(&js, &identity, &mut [&mut Collect::default()], &mut |_| {})
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Panicked {
                stage: "decoder",
                ..
            }
        ),
        "{e:?}"
    );
    // A sequential source's decoder.
    let src = Stream {
        data: bytes(10_000),
        opened: AtomicUsize::new(0),
    };
    let past_end = vec![Job {
        read: Some(0..20_000),
        meta: 0,
        to: None,
    }];
    let e = Pipeline::new(&src)
        .run(
            &past_end,
            &identity,
            &mut [&mut Collect::default()],
            &mut |_| {},
        )
        .unwrap_err();
    assert!(matches!(e, Error::Read { offset: 0, .. }), "{e:?}");
}

#[test]
fn a_sink_error_stops_the_run() {
    let src = Framed::new(100_000, 4096);
    let js = jobs(40, 1000, 1000);
    let mut bad = Collect {
        fail_at: Some(12),
        ..Collect::default()
    };
    let e = Pipeline::new(&src)
        .run(&js, &identity, &mut [&mut bad], &mut |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("sink refuses job 12"), "{e}");
    assert_eq!(bad.got.len(), 12);
    assert!(!bad.finished);
}

#[test]
fn cancel_interrupts() {
    let src = Framed::new(100_000, 4096);
    let js = jobs(40, 1000, 1000);
    let flag = AtomicBool::new(false);
    let mut c = Collect::default();
    let mut n = 0;
    let e = Pipeline::new(&src)
        .cancel(&flag)
        .run(&js, &identity, &mut [&mut c], &mut |_| {
            n += 1;
            if n == 5 {
                flag.store(true, Ordering::Relaxed);
            }
        })
        .unwrap_err();
    assert!(matches!(e, Error::Interrupted), "{e:?}");
    assert!(!c.finished);
}

#[test]
fn memory_is_bounded_by_the_window() {
    static LIVE: AtomicI64 = AtomicI64::new(0);
    let mut src = Framed::new(400_000, 1 << 20);
    src.live = Some(&LIVE);
    let js: Vec<Job<usize>> = (0..300)
        .map(|i| Job {
            read: Some(i * 1000..i * 1000 + 1000),
            meta: i as usize,
            to: None,
        })
        .collect();
    let max = AtomicI64::new(0);
    let t = |j: &Job<usize>, d: Option<Buf>| {
        max.fetch_max(LIVE.load(Ordering::SeqCst), Ordering::SeqCst);
        identity(j, d)
    };
    let mut slow = Collect {
        slow: true,
        live: Some(&LIVE),
        ..Collect::default()
    };
    Pipeline::new(&src)
        .threads(4)
        .window(5)
        .run(&js, &t, &mut [&mut slow], &mut |_| {})
        .unwrap();
    let m = max.load(Ordering::SeqCst);
    assert!(
        m <= 5 + SINK_QUEUE as i64 + 2,
        "{m} jobs were in memory at once"
    );
    assert_eq!(slow.got.len(), 300);
}

fn reads(v: &[(u64, u64)]) -> Vec<Job<usize>> {
    v.iter()
        .enumerate()
        .map(|(i, &(s, e))| Job {
            read: Some(s..e),
            meta: i,
            to: None,
        })
        .collect()
}

#[test]
fn reads_too_large_or_out_of_order_from_a_stream_are_refused() {
    let src = MemSource(vec![0; 100]);
    for bad in [vec![(10, 5)], vec![(0, MAX_JOB + 1)]] {
        assert!(Pipeline::new(&src)
            .run(
                &reads(&bad),
                &identity,
                &mut [&mut Collect::default()],
                &mut |_| {}
            )
            .is_err());
    }
    let stream = Stream {
        data: bytes(100),
        opened: AtomicUsize::new(0),
    };
    let backwards = reads(&[(50, 60), (10, 20)]);
    assert!(Pipeline::new(&stream)
        .run(
            &backwards,
            &identity,
            &mut [&mut Collect::default()],
            &mut |_| {}
        )
        .is_err());
    // A random-access source serves any order, still delivered in job order.
    let src = Framed::new(100_000, 1000);
    let mut c = Collect::default();
    Pipeline::new(&src)
        .run(&backwards, &identity, &mut [&mut c], &mut |_| {})
        .unwrap();
    assert_eq!(c.got, expected(&src.data.0, &backwards));
}

/// A stream whose size is a hint (`hint` bytes, whatever its data holds).
struct Hinted {
    data: Vec<u8>,
    hint: u64,
}

impl ReadAt for Hinted {
    fn size(&self) -> u64 {
        self.hint
    }
    fn read_at(&self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        panic!("a sequential source must be read in order");
    }
    fn caps(&self) -> Caps {
        Caps {
            access: Access::Sequential,
            size: SizeKnown::Hint,
            ..Caps::RANDOM
        }
    }
    fn sequential(&self, offset: u64) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(
            &self.data[(offset as usize).min(self.data.len())..],
        ))
    }
}

#[test]
fn a_hinted_stream_is_read_to_its_end_and_checked_before_the_last_job() {
    let data = bytes(100_000);
    let js = reads(&[(0, 1000), (5000, 6000)]);
    let run = |hint: u64, to_end: Option<u64>| {
        let src = Hinted {
            data: data.clone(),
            hint,
        };
        let mut c = Collect::default();
        let mut p = Pipeline::new(&src);
        if let Some(e) = to_end {
            p = p.to_end(e);
        }
        let r = p.run(&js, &identity, &mut [&mut c], &mut |_| {});
        (r, c)
    };
    // The plan was right: every job delivered.
    let (r, c) = run(100_000, Some(100_000));
    assert!(r.is_ok(), "{r:?}");
    assert!(c.finished && c.got.len() == 2);
    // The right size, but its last sector is a fixed VHD's footer: the stream was not the raw
    // disk it was planned as, and the last job never reaches the sink.
    let mut vhd = data.clone();
    vhd[100_000 - TAIL..100_000 - TAIL + 8].copy_from_slice(b"conectix");
    let src = Hinted {
        data: vhd,
        hint: 100_000,
    };
    let mut c = Collect::default();
    let r = Pipeline::new(&src)
        .to_end(100_000)
        .run(&js, &identity, &mut [&mut c], &mut |_| {});
    assert!(
        matches!(&r, Err(Error::Replan { reason, .. }) if reason.contains("vhd trailer")),
        "{r:?}"
    );
    assert!(!c.finished && c.got.len() == 1);
    // The stream goes on past the plan: the last job never reaches the sink.
    let (r, c) = run(50_000, Some(50_000));
    assert!(
        matches!(&r, Err(Error::Replan { reason, .. }) if reason.contains("100000 bytes, not the 50000")),
        "{r:?}"
    );
    assert!(!c.finished && c.got.len() == 1);
    // It ends before a job: the same, whether or not the end was to be checked.
    let short = reads(&[(0, 1000), (99_000, 101_000)]);
    for to_end in [Some(200_000), None] {
        let src = Hinted {
            data: data.clone(),
            hint: 200_000,
        };
        let mut c = Collect::default();
        let mut p = Pipeline::new(&src);
        if let Some(e) = to_end {
            p = p.to_end(e);
        }
        let r = p.run(&short, &identity, &mut [&mut c], &mut |_| {});
        assert!(
            matches!(&r, Err(Error::Replan { reason, .. }) if reason.contains("only 100000")),
            "{r:?}"
        );
        assert!(!c.finished);
    }
    // Without to_end, a right plan is not read past.
    let (r, c) = run(100_000, None);
    assert!(r.is_ok() && c.finished);
    // at_least: read up to the size and no further, or fail where the stream ends before.
    for (need, ok) in [(60_000, true), (100_000, true), (100_001, false)] {
        let src = Hinted {
            data: data.clone(),
            hint: need,
        };
        let mut c = Collect::default();
        let r = Pipeline::new(&src)
            .at_least(need)
            .run(&js, &identity, &mut [&mut c], &mut |_| {});
        assert_eq!(r.is_ok(), ok, "{need}: {r:?}");
        assert_eq!(c.finished, ok);
    }
}

/// A plan of nothing for a stream whose header says 0 bytes (a 4 GiB gzip: ISIZE is the size
/// modulo 2^32) still finds the stream's real end, and a truly empty one passes.
#[test]
fn a_run_without_jobs_still_checks_a_hinted_stream_end() {
    let none: Vec<Job<usize>> = Vec::new();
    let src = Hinted {
        data: bytes(100_000),
        hint: 0,
    };
    let mut c = Collect::default();
    let r = Pipeline::new(&src)
        .to_end(0)
        .run(&none, &identity, &mut [&mut c], &mut |_| {});
    assert!(
        matches!(
            &r,
            Err(Error::Replan {
                size: Some(100_000),
                ..
            })
        ),
        "{r:?}"
    );
    assert!(!c.finished);
    let empty = Hinted {
        data: Vec::new(),
        hint: 0,
    };
    let mut c = Collect::default();
    let r = Pipeline::new(&empty)
        .to_end(0)
        .run(&none, &identity, &mut [&mut c], &mut |_| {});
    assert!(r.is_ok() && c.finished, "{r:?}");
}

#[test]
fn the_tail_keeps_the_last_bytes_across_reads_of_any_size() {
    let data = bytes(5000);
    let mut t = Vec::new();
    for piece in data.chunks(37).chain(data[..0].chunks(1)) {
        super::decode::keep_tail(&mut t, piece);
        assert!(t.len() <= 2 * TAIL);
    }
    assert_eq!(&t[t.len() - TAIL..], &data[5000 - TAIL..]);
    let mut t = Vec::new();
    for piece in data.chunks(3000) {
        super::decode::keep_tail(&mut t, piece);
    }
    assert_eq!(&t[t.len() - TAIL..], &data[5000 - TAIL..]);
}
