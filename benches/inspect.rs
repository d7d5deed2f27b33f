//! In-process benchmarks: ExtentMap operations at bitmap scale, and inspecting the bundled
//! sample card image (raw, and through its xz wrapper).
//!
//! `cargo bench --bench inspect`

use std::hint::black_box;
use std::io::Read;
use std::sync::Arc;

use blockwise::io::MemSource;
use blockwise::report::inspect_source;
use blockwise::ExtentMap;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A fragmented map like a well-used ext4 bitmap: every other 4 KiB block of 256 MiB.
fn fragmented(n: u64, phase: u64) -> ExtentMap {
    let mut m = ExtentMap::new();
    for i in 0..n {
        let s = (2 * i + phase) * 4096;
        m.insert(s, s + 4096);
    }
    m
}

fn extent_map(c: &mut Criterion) {
    let n = 32_768;
    let mut g = c.benchmark_group("extent_map");
    g.throughput(Throughput::Elements(n));
    g.bench_function("insert_ascending_32k", |b| {
        b.iter(|| fragmented(black_box(n), 0))
    });
    let a = fragmented(n, 0);
    let bm = fragmented(n, 1);
    g.bench_function("union_32k", |b| {
        b.iter(|| black_box(&a).union(black_box(&bm)))
    });
    g.bench_function("subtract_32k", |b| {
        b.iter(|| black_box(&a).subtract(black_box(&bm)))
    });
    g.bench_function("align_out_64k_32k", |b| {
        b.iter(|| black_box(&a).align_out(65536))
    });
    g.finish();
}

fn inspect(c: &mut Criterion) {
    let xz = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/card.img.xz")).unwrap();
    let mut raw = Vec::new();
    liblzma::read::XzDecoder::new(&xz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let raw: Arc<MemSource> = Arc::new(MemSource(raw));
    c.bench_function("inspect_sample_card_raw", |b| {
        b.iter(|| inspect_source(raw.clone(), None, "card.img").unwrap())
    });
    let dir = std::env::temp_dir().join(format!("blockwise-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("card.img.xz");
    std::fs::write(&path, &xz).unwrap();
    let mut g = c.benchmark_group("inspect_sample_card_xz");
    g.sample_size(10);
    g.bench_function("decode_on_the_fly", |b| {
        b.iter(|| blockwise::report::inspect_path(&path).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, extent_map, inspect);
criterion_main!(benches);
