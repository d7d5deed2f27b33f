//! Helpers shared by the cross-checks of FAT, exFAT and NTFS (spec/safety.md, *Bounded
//! loss*): collecting what file metadata references but the allocation map calls free, and
//! saying where in cluster numbers.

use crate::extent::ExtentMap;

use super::info::{CrossCheck, Usage};

/// How a FAT, exFAT or NTFS cross-check ended, to be folded into the filesystem's usage.
pub(crate) struct Outcome {
    /// "FAT", "exFAT", "NTFS": the start of every warning.
    pub(crate) fs: &'static str,
    /// What was walked, as `CrossCheck::against` says it.
    pub(crate) against: String,
    /// Who references the clusters ("directory entries", "MFT records").
    pub(crate) referrers: &'static str,
    /// The allocation map's name ("the FAT", "the allocation bitmap", "$Bitmap").
    pub(crate) map_name: &'static str,
    /// The repair advice ("fsck.fat").
    pub(crate) fsck: &'static str,
    /// Bytes referenced but called free by the allocation map.
    pub(crate) unmapped: ExtentMap,
    /// Cluster numbering for messages: cluster `first` starts at byte `base`, `unit` bytes
    /// each.
    pub(crate) base: u64,
    pub(crate) unit: u64,
    pub(crate) first: u64,
    /// Why the walk could not finish, if it could not.
    pub(crate) incomplete: Option<String>,
    /// The bytes kept whole when it could not, and what they are in words.
    pub(crate) whole: (u64, u64),
    pub(crate) whole_what: &'static str,
}

/// Adds what the walk found to `u`, with one warning for what was added back and one for
/// an unfinished walk, and records the cross-check.
pub(crate) fn finish(u: &mut Usage, o: Outcome) {
    let added = o.unmapped.total();
    let where_ = describe_clusters(&o.unmapped, o.base, o.unit, o.first);
    if added > 0 {
        u.warnings.push(format!(
            "{}: {} clusters referenced by {} are marked free in {} (clusters {where_}); \
             kept — filesystem inconsistent: run {}",
            o.fs,
            count_clusters(&o.unmapped, o.base, o.unit),
            o.referrers,
            o.map_name,
            o.fsck
        ));
        u.used = u.used.union(&o.unmapped);
    }
    let incomplete = o.incomplete.map(|why| {
        u.used.insert(o.whole.0, o.whole.1);
        u.warnings.push(format!(
            "{}: cross-check incomplete ({why}); {} is kept",
            o.fs, o.whole_what
        ));
        format!("{why}; {} is kept", o.whole_what)
    });
    u.cross_check = Some(CrossCheck {
        against: o.against,
        added,
        added_where: if added > 0 {
            format!("clusters {where_}")
        } else {
            String::new()
        },
        incomplete,
    });
}

/// Byte ranges that metadata references and the allocation map calls free. Shared by the
/// FAT, exFAT and NTFS cross-checks.
#[derive(Default)]
pub(crate) struct Unmapped {
    pub(crate) map: ExtentMap,
}

impl Unmapped {
    /// Notes `[s, e)` as referenced: whatever part of it `used` lacks is remembered.
    pub(crate) fn note(&mut self, used: &ExtentMap, s: u64, e: u64) {
        if e <= s || used.covered(s, e) == e - s {
            return;
        }
        for x in ExtentMap::single(s, e).subtract(used).iter() {
            self.map.insert(x.start, x.end);
        }
    }
}

/// Summarises byte extents as cluster numbers ("120-131, 400"), cluster `first` starting at
/// byte `base`; at most a few ranges are listed.
pub(crate) fn describe_clusters(m: &ExtentMap, base: u64, unit: u64, first: u64) -> String {
    const SHOWN: usize = 8;
    let unit = unit.max(1);
    let mut parts: Vec<String> = m
        .iter()
        .take(SHOWN)
        .map(|x| {
            let a = (x.start.saturating_sub(base) / unit).saturating_add(first);
            let b = ((x.end - 1).saturating_sub(base) / unit).saturating_add(first);
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if m.len() > SHOWN {
        parts.push(format!("and {} more ranges", m.len() - SHOWN));
    }
    parts.join(", ")
}

/// Clusters (of `unit` bytes, counted from byte `base`) an extent map touches.
pub(crate) fn count_clusters(m: &ExtentMap, base: u64, unit: u64) -> u64 {
    let unit = unit.max(1);
    m.iter()
        .map(|x| (x.end - 1).saturating_sub(base) / unit - x.start.saturating_sub(base) / unit + 1)
        .sum()
}

/// `one` or `many` as `n` asks.
pub(crate) fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let used = ExtentMap::from_ranges([(0, 4096), (8192, 12288)]);
        let mut un = Unmapped::default();
        un.note(&used, 0, 4096); // fully mapped: nothing
        un.note(&used, 2048, 10240); // partly: 4096..8192 only
        un.note(&used, 20480, 21504);
        assert_eq!(
            un.map,
            ExtentMap::from_ranges([(4096, 8192), (20480, 21504)])
        );
        // 1 KiB clusters, cluster 2 at byte 0.
        assert_eq!(describe_clusters(&un.map, 0, 1024, 2), "6-9, 22");
        assert_eq!(count_clusters(&un.map, 0, 1024), 5);
        let many = ExtentMap::from_ranges((0..20u64).map(|i| (i * 4096, i * 4096 + 1024)));
        assert!(describe_clusters(&many, 0, 1024, 0).ends_with("and 12 more ranges"));
    }
}
