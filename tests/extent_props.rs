//! Property tests: ExtentMap agrees with a naive bitset model on every operation.

use blockwise::ExtentMap;
use proptest::prelude::*;

const N: u64 = 256;

fn model(m: &ExtentMap) -> Vec<bool> {
    let mut v = vec![false; N as usize * 2];
    for r in m.iter() {
        for b in r.start..r.end {
            v[b as usize] = true;
        }
    }
    v
}

fn canonical(m: &ExtentMap) -> bool {
    m.as_slice().iter().all(|r| r.end > r.start)
        && m.as_slice().windows(2).all(|w| w[0].end < w[1].start)
}

fn ranges() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((0..N, 0..40u64).prop_map(|(s, l)| (s, s + l)), 0..20)
}

fn build_by_insert(v: &[(u64, u64)]) -> ExtentMap {
    let mut m = ExtentMap::new();
    for &(s, e) in v {
        m.insert(s, e);
    }
    m
}

proptest! {
    #[test]
    fn insert_equals_from_ranges(v in ranges()) {
        let a = build_by_insert(&v);
        let b = ExtentMap::from_ranges(v.iter().copied());
        prop_assert!(canonical(&a));
        prop_assert_eq!(&a, &b);
        let mut expect = vec![false; N as usize * 2];
        for &(s, e) in &v { for i in s..e { expect[i as usize] = true; } }
        prop_assert_eq!(model(&a), expect.clone());
        prop_assert_eq!(a.total(), expect.iter().filter(|&&x| x).count() as u64);
    }

    #[test]
    fn set_algebra(a in ranges(), b in ranges()) {
        let (ma, mb) = (ExtentMap::from_ranges(a), ExtentMap::from_ranges(b));
        let (xa, xb) = (model(&ma), model(&mb));
        let u = ma.union(&mb);
        let i = ma.intersect(&mb);
        let d = ma.subtract(&mb);
        for m in [&u, &i, &d] { prop_assert!(canonical(m)); }
        let (xu, xi, xd) = (model(&u), model(&i), model(&d));
        for k in 0..xa.len() {
            prop_assert_eq!(xu[k], xa[k] || xb[k]);
            prop_assert_eq!(xi[k], xa[k] && xb[k]);
            prop_assert_eq!(xd[k], xa[k] && !xb[k]);
        }
        prop_assert_eq!(u.total() + i.total(), ma.total() + mb.total());
        prop_assert_eq!(ma.gaps(2 * N).union(&ma), ExtentMap::single(0, 2 * N));
    }

    #[test]
    fn align_covers_and_is_aligned(a in ranges(), bs in 1u64..64) {
        let m = ExtentMap::from_ranges(a);
        let al = m.align_out(bs);
        prop_assert!(canonical(&al));
        prop_assert!(m.subtract(&al).is_empty());
        for r in al.iter() {
            prop_assert_eq!(r.start % bs, 0);
            prop_assert_eq!(r.end % bs, 0);
        }
        // No block is added that the original does not touch.
        for (first, last) in al.block_ranges(bs) {
            for blk in first..=last {
                prop_assert!(m.covered(blk * bs, (blk + 1) * bs) > 0);
            }
        }
    }

    #[test]
    fn contains_and_covered_match_model(a in ranges(), s in 0..2*N, l in 0..64u64) {
        let m = ExtentMap::from_ranges(a);
        let x = model(&m);
        for (k, &want) in x.iter().enumerate() { prop_assert_eq!(m.contains(k as u64), want); }
        let e = (s + l).min(2 * N);
        let want = (s..e).filter(|&k| x[k as usize]).count() as u64;
        prop_assert_eq!(m.covered(s, e), want);
    }

    #[test]
    fn chunks_cover_exactly(a in ranges(), max in 1u64..50) {
        let m = ExtentMap::from_ranges(a);
        let back: ExtentMap = m.chunks(max).map(|e| { assert!(e.len() <= max); (e.start, e.end) }).collect();
        prop_assert_eq!(back, m);
    }
}
