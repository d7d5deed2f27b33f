//! Inputs the fuzzers found, kept so the bugs stay fixed.

use std::time::{Duration, Instant};

use blockwise::fs;
use blockwise::io::{MemSource, ReadAt};

fn input(name: &str) -> MemSource {
    MemSource(
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/fuzz-regressions")
                .join(name),
        )
        .unwrap(),
    )
}

/// A 531-byte "FAT" whose BPB claims billions of clusters made `fat::used` walk every one of
/// them (a fuzzer timeout). Clusters past the end of the source are now kept wholesale.
#[test]
fn fat_used_does_not_walk_clusters_past_the_source() {
    let src = input("fat-used-huge-cluster-count.bin");
    let t = Instant::now();
    if let Ok(u) = fs::fat::used(&src) {
        // The volume claims far more than the source holds: the map must reach the end.
        assert!(u.used.end() >= src.size(), "{}", u.used);
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
}
