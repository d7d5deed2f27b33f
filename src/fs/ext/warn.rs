//! [`Warn`], the bounded list of warnings the ext allocation-map readers collect.
//!
//! Apart from the ext façade (`ext/mod.rs`, which creates one per volume and calls the
//! `group` and `xcheck` readers that add to it) so that those readers and the façade never
//! import each other.

/// Warnings beyond this many are summarised in one line.
const MAX_WARNINGS: usize = 32;

/// Collects warnings, summarising instead of growing without limit.
pub(super) struct Warn {
    pub(super) list: Vec<String>,
    pub(super) dropped: usize,
}

impl Warn {
    pub(super) fn push(&mut self, w: String) {
        if self.list.len() < MAX_WARNINGS {
            self.list.push(w);
        } else {
            self.dropped += 1;
        }
    }
    pub(super) fn finish(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.list
                .push(format!("... and {} more ext warnings", self.dropped));
        }
        self.list
    }
}
