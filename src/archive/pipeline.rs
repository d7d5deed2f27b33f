//! The backup pipeline: read mapped segments in order, encode them on every core, write them
//! in order, and hash the bmap ranges from the same bytes (the source is read once).
//!
//! Threads: one reader (sequential large reads, so a card or disk streams), `threads` encoders,
//! one hasher, and the caller's thread writing. Memory is bounded by a fixed number of
//! segments in flight, whatever the image size or the speed of each stage.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{ArchiveWriter, DataSegment, Encoded, Encoder, Segment};
use crate::bmap::{self, write::block_ranges};
use crate::extent::ExtentMap;
use crate::io::{ReadAt, ReadAtExt};

/// Hot ranges are widened to this before cutting: a frame holding a 512-byte boot sector
/// alone would cost more in frame overhead than it saves.
const HOT_ALIGN: u64 = 64 << 10;

/// Writeback of the archive is started every this many mapped bytes, so the final fsync
/// finds little left to do.
const WRITEBACK_EVERY: u64 = 32 << 20;

/// How to run a backup.
#[derive(Clone, Debug)]
pub struct BackupOptions {
    /// Encoder threads (at least 1).
    pub threads: usize,
    /// Block size of the bmap written beside the archive; the archive holds whole blocks.
    pub bmap_block_size: u64,
    /// Compute SHA-256 of every bmap range.
    pub checksums: bool,
    /// Byte ranges that readers of the archive will want on their own (the metadata inspect
    /// reads): segments are cut at their edges.
    pub hot: ExtentMap,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            bmap_block_size: 4096,
            checksums: true,
            hot: ExtentMap::new(),
        }
    }
}

/// Where a running backup is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Mapped bytes read and written so far.
    pub mapped_done: u64,
    /// Mapped bytes in all.
    pub mapped_total: u64,
}

/// What a finished backup did.
#[derive(Clone, Debug, Default)]
pub struct BackupStats {
    /// Size of the image the archive restores to.
    pub image_size: u64,
    /// The mapped bytes stored (the map aligned to the bmap block size).
    pub map: ExtentMap,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Data segments written.
    pub data_segments: u64,
    /// Zero runs written.
    pub zero_segments: u64,
    /// Inclusive block ranges of the bmap, and their SHA-256 (hex) when asked for.
    pub bmap_ranges: Vec<(u64, u64)>,
    /// One hex SHA-256 per entry of `bmap_ranges`, or empty without checksums.
    pub checksums: Vec<String>,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Block size of the bmap ranges.
    pub bmap_block_size: u64,
}

impl BackupStats {
    /// The bmap file for this archive (bmaptool format 2.0).
    pub fn bmap(&self) -> Vec<u8> {
        let ck = (!self.checksums.is_empty()).then_some(&self.checksums[..]);
        crate::bmap::write::render(
            self.image_size,
            &self.map,
            ck,
            &crate::bmap::BmapWriteOptions {
                block_size: self.bmap_block_size,
            },
        )
    }
}

/// Why a backup stopped early.
fn interrupted() -> crate::Error {
    crate::Error::Io(io::Error::new(
        io::ErrorKind::Interrupted,
        "interrupted by a signal",
    ))
}

struct Item {
    seq: u64,
    seg: Segment,
    data: Option<Arc<Vec<u8>>>,
    enc: Option<Encoded>,
}

/// Backs up `src` (`size` bytes, of which `map` matters) into `out` with `encoder`/`writer`.
///
/// Reads every mapped byte once, in order. `progress` is called on this thread after each
/// segment; `cancel` is polled between segments (set it from a signal handler). On error the
/// output is incomplete and must be discarded (the caller writes to a temporary file).
#[allow(clippy::too_many_arguments)]
pub fn backup(
    src: Arc<dyn ReadAt>,
    size: u64,
    map: &ExtentMap,
    plan_opts: &super::PlanOptions,
    out: &mut File,
    encoder: Arc<dyn Encoder>,
    writer: &mut dyn ArchiveWriter,
    opts: &BackupOptions,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> crate::Result<BackupStats> {
    let t0 = Instant::now();
    let bs = opts.bmap_block_size.max(1);
    // Store whole bmap blocks, so flashing the archive with its bmap writes exactly what the
    // bmap lists.
    let map = map.clip(size).align_out(bs).clip(size);
    let cuts: Vec<u64> = opts
        .hot
        .align_out(HOT_ALIGN)
        .iter()
        .flat_map(|e| [e.start, e.end])
        .collect();
    let segments = super::plan::plan_with_cuts(size, &map, &cuts, plan_opts);
    let ranges = block_ranges(size, &map, bs);
    let byte_ranges: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(f, l)| bmap::range_bytes(f, l, bs, size))
        .collect();
    let threads = opts.threads.max(1);
    let in_flight = threads * 3 + 2;
    let mapped_total = map.total();

    let (work_tx, work_rx) = mpsc::sync_channel::<Item>(threads * 2);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::sync_channel::<io::Result<Item>>(in_flight);
    // Written segments wait here for the hasher; a short queue keeps memory bounded by the
    // read-ahead alone (the writer waits for the hasher instead of piling buffers up).
    let (hash_tx, hash_rx) = mpsc::sync_channel::<(u64, Arc<Vec<u8>>)>(2);
    // Tokens bound how far the reader may run ahead of the writer.
    let (tok_tx, tok_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = tok_tx.send(());
    }
    let stop = Arc::new(AtomicBool::new(false));

    std::thread::scope(|s| -> crate::Result<BackupStats> {
        // Reader.
        let reader = {
            let src = src.clone();
            let stop = stop.clone();
            let done_tx = done_tx.clone();
            let segments = &segments;
            s.spawn(move || -> u64 {
                let mut read = 0u64;
                for (seq, seg) in segments.iter().enumerate() {
                    if tok_rx.recv().is_err() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let data = match seg {
                        Segment::Data(d) => match read_segment(&*src, d) {
                            Ok(b) => {
                                read += b.len() as u64;
                                Some(Arc::new(b))
                            }
                            Err(e) => {
                                let _ = done_tx.send(Err(e));
                                break;
                            }
                        },
                        Segment::Zero { .. } => None,
                    };
                    let item = Item {
                        seq: seq as u64,
                        seg: seg.clone(),
                        data,
                        enc: None,
                    };
                    if work_tx.send(item).is_err() {
                        break;
                    }
                }
                read
            })
        };
        // Encoders.
        for _ in 0..threads {
            let rx = work_rx.clone();
            let tx = done_tx.clone();
            let encoder = encoder.clone();
            s.spawn(move || loop {
                let item = {
                    let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
                    rx.recv()
                };
                let Ok(mut item) = item else { break };
                let r = match (&item.seg, &item.data) {
                    (Segment::Data(d), Some(buf)) => encoder.encode(d, buf).map(|e| {
                        item.enc = Some(e);
                        item
                    }),
                    _ => Ok(item),
                };
                if tx.send(r).is_err() {
                    break;
                }
            });
        }
        // Only the workers hold the receiver now: when they stop, a blocked reader wakes up.
        drop(work_rx);
        drop(done_tx);
        // Hasher.
        let hasher = {
            let byte_ranges = &byte_ranges;
            let want = opts.checksums;
            s.spawn(move || hash_ranges(byte_ranges, hash_rx, want))
        };

        let result = write_in_order(
            done_rx,
            &tok_tx,
            &hash_tx,
            out,
            writer,
            size,
            mapped_total,
            segments.len() as u64,
            progress,
            cancel,
        );
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(hash_tx);
        drop(tok_tx);
        // A panicked stage must fail the backup: an empty checksum list would otherwise turn
        // into a bmap without checksums, and a lost reader count into a wrong summary.
        let bytes_read = reader.join();
        let checksums = hasher.join();
        let (data_segments, zero_segments) = result?;
        let (Ok(bytes_read), Ok(checksums)) = (bytes_read, checksums) else {
            return Err(crate::Error::Io(io::Error::other(
                "internal error: a backup thread panicked",
            )));
        };
        if opts.checksums && checksums.len() != ranges.len() {
            return Err(crate::Error::Io(io::Error::other(format!(
                "internal error: {} of {} bmap ranges were hashed",
                checksums.len(),
                ranges.len()
            ))));
        }
        Ok(BackupStats {
            image_size: size,
            map: map.clone(),
            bytes_read,
            data_segments,
            zero_segments,
            bmap_ranges: ranges.clone(),
            checksums,
            seconds: t0.elapsed().as_secs_f64(),
            bmap_block_size: bs,
        })
    })
}

/// Reads one data segment with a single read (gaps inside are short by construction), then
/// zeroes what is not mapped: free blocks may hold deleted data that must not leak into an
/// archive.
fn read_segment(src: &dyn ReadAt, d: &DataSegment) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; d.len];
    src.read_exact_at(d.offset, &mut buf).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "read error at byte {} (reading {} bytes): {e}",
                d.offset, d.len
            ),
        )
    })?;
    let mut pos = d.offset;
    for e in &d.mapped {
        if e.start > pos {
            buf[(pos - d.offset) as usize..(e.start - d.offset) as usize].fill(0);
        }
        pos = e.end;
    }
    Ok(buf)
}

#[allow(clippy::too_many_arguments)]
fn write_in_order(
    done_rx: Receiver<io::Result<Item>>,
    tok_tx: &SyncSender<()>,
    hash_tx: &SyncSender<(u64, Arc<Vec<u8>>)>,
    out: &mut File,
    writer: &mut dyn ArchiveWriter,
    size: u64,
    mapped_total: u64,
    count: u64,
    progress: &mut dyn FnMut(&Progress),
    cancel: &AtomicBool,
) -> crate::Result<(u64, u64)> {
    let mut pending: BTreeMap<u64, Item> = BTreeMap::new();
    let mut next = 0u64;
    let mut p = Progress {
        mapped_done: 0,
        mapped_total,
    };
    let (mut nd, mut nz) = (0u64, 0u64);
    let mut flushed = 0u64;
    while next < count {
        if cancel.load(Ordering::Relaxed) {
            return Err(interrupted());
        }
        let item = match done_rx.recv() {
            Ok(r) => r?,
            Err(_) => {
                return Err(crate::Error::Io(io::Error::other(
                    "backup pipeline stopped unexpectedly",
                )))
            }
        };
        pending.insert(item.seq, item);
        while let Some(item) = pending.remove(&next) {
            match &item.seg {
                Segment::Data(d) => {
                    let data = item.data.clone().unwrap_or_default();
                    writer.data(out, d, &data, item.enc.unwrap_or_default())?;
                    p.mapped_done += d.mapped.iter().map(|e| e.len()).sum::<u64>();
                    let _ = hash_tx.send((d.offset, data));
                    nd += 1;
                }
                Segment::Zero { offset, len } => {
                    writer.zeros(out, *offset, *len)?;
                    nz += 1;
                }
            }
            let _ = tok_tx.send(());
            next += 1;
            progress(&p);
            if p.mapped_done >= flushed + WRITEBACK_EVERY {
                flushed = p.mapped_done;
                let _ = crate::io::sys::start_writeback(std::os::fd::AsFd::as_fd(&*out));
            }
        }
    }
    writer.finish(out, size)?;
    Ok((nd, nz))
}

/// SHA-256 of each byte range, fed the data segments in image order.
fn hash_ranges(
    ranges: &[(u64, u64)],
    rx: Receiver<(u64, Arc<Vec<u8>>)>,
    want: bool,
) -> Vec<String> {
    let mut out = Vec::with_capacity(if want { ranges.len() } else { 0 });
    let mut i = 0usize;
    let mut h = Sha256::new();
    for (off, data) in rx {
        if !want {
            continue;
        }
        let end = off + data.len() as u64;
        while let Some(&(rs, re)) = ranges.get(i) {
            if rs >= end {
                break;
            }
            let a = rs.max(off);
            let b = re.min(end);
            if b > a {
                h.update(&data[(a - off) as usize..(b - off) as usize]);
            }
            if re <= end {
                out.push(bmap::hex(&h.finalize_reset()));
                i += 1;
            } else {
                break;
            }
        }
    }
    out
}
