//! The decoded size of a stream as it is known: exact, or a hint that reading refines.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// A stream's decoded size, shared by every reader of the stream. Once exact it never changes;
/// a hint only grows (readers prove lower bounds) until a reader reaches the end.
pub(super) struct Size {
    bytes: AtomicU64,
    exact: AtomicBool,
    /// The hint is only known modulo this (gzip's ISIZE: 2^32), so raising it keeps the
    /// residue.
    modulus: Option<u64>,
    /// Where the current value comes from, for messages.
    origin: Mutex<&'static str>,
}

impl Size {
    /// An exact size.
    pub(super) fn exact(bytes: u64, origin: &'static str) -> Self {
        Size {
            bytes: AtomicU64::new(bytes),
            exact: AtomicBool::new(true),
            modulus: None,
            origin: Mutex::new(origin),
        }
    }

    /// A hint, known only modulo `modulus` when given.
    pub(super) fn hint(bytes: u64, modulus: Option<u64>, origin: &'static str) -> Self {
        Size {
            bytes: AtomicU64::new(bytes),
            exact: AtomicBool::new(false),
            modulus: modulus.filter(|&m| m > 0),
            origin: Mutex::new(origin),
        }
    }

    /// The size (a hint unless [`is_exact`](Self::is_exact)).
    pub(super) fn get(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// True once the size is exact.
    pub(super) fn is_exact(&self) -> bool {
        self.exact.load(Ordering::Acquire)
    }

    /// Where the size comes from.
    pub(super) fn origin(&self) -> &'static str {
        *self.origin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stream holds at least `at_least` bytes: raises a hint to the smallest value it
    /// allows that is not below that (for a hint known modulo m, the smallest `hint + k·m`).
    pub(super) fn raise(&self, at_least: u64) {
        if self.is_exact() {
            return;
        }
        let mut cur = self.get();
        while cur < at_least {
            let next = match self.modulus {
                Some(m) => {
                    let steps = (at_least - cur).div_ceil(m);
                    steps.checked_mul(m).and_then(|d| cur.checked_add(d))
                }
                None => Some(at_least),
            }
            .unwrap_or(at_least);
            match self
                .bytes
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }

    /// A reader reached the end of the stream at `end`: the size is exact from now on. An
    /// exact size is kept (a reader that finds it wrong reports that itself).
    pub(super) fn learn_end(&self, end: u64) {
        let mut origin = self.origin.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_exact() {
            return;
        }
        self.bytes.store(end, Ordering::Release);
        self.exact.store(true, Ordering::Release);
        *origin = "decoded to the end";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_rise_keeping_their_residue_and_settle_at_the_end() {
        let s = Size::hint(100, Some(1 << 32), "gzip");
        s.raise(50);
        assert_eq!(s.get(), 100);
        s.raise(5_000_000_000);
        assert_eq!(s.get(), 100 + 2 * (1 << 32));
        s.raise(100 + 2 * (1 << 32));
        assert_eq!(s.get(), 100 + 2 * (1 << 32));
        s.learn_end(7);
        assert!(s.is_exact());
        assert_eq!(s.get(), 7);
        s.raise(1000);
        s.learn_end(9);
        assert_eq!(s.get(), 7);
        assert_eq!(s.origin(), "decoded to the end");

        let s = Size::hint(10, None, "compressed size");
        s.raise(4096);
        assert_eq!(s.get(), 4096);
        // Near the top of the range the residue cannot be kept: the bound itself is used.
        let s = Size::hint(5, Some(1 << 32), "gzip");
        s.raise(u64::MAX - 1);
        assert_eq!(s.get(), u64::MAX - 1);

        let e = Size::exact(10, "xz index");
        e.raise(20);
        e.learn_end(30);
        assert_eq!((e.get(), e.is_exact()), (10, true));
    }
}
