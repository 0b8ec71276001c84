//! The merge policy: which segments a compaction merges, decided from their sizes alone so it
//! can be tested without files. Tiered by size (LSM style): a row is rewritten about
//! `log_F(rows)` times, however small the writes, and the live segments stay logarithmic in
//! the rows written. Fresh rows are searched exactly until they add up to the index threshold;
//! then they merge into a segment with a graph, extending it rather than rebuilding it.

use crate::options::{IndexKind, IndexSettings};

/// One live segment as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegInfo {
    pub id: u64,
    pub rows: usize,
    pub live: usize,
    pub indexed: bool,
}

/// Segments to merge into one. When the first has a graph, the merged segment's graph starts
/// from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Merge {
    pub segments: Vec<u64>,
}

/// Why the policy is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Moment {
    /// After a commit: only merges that bound the segment count or the deleted rows.
    Commit,
    /// The collection has been quiet for `compaction_idle_ms`: fold the fresh rows in too.
    Idle,
    /// `Collection::compact`: merge everything that fits in a segment, drop every deleted row.
    Full,
}

/// A segment holding at least this share of deleted rows is rewritten without them.
const DELETED_SHARE: f64 = 0.2;

/// The next merge that involves graphs (the collection's worker runs these) for `segs` under
/// `settings` at `moment`, if any. `segs` leaves out segments another merge is working on.
pub(crate) fn choose(segs: &[SegInfo], s: &IndexSettings, moment: Moment) -> Option<Merge> {
    let f = s.compaction.merge_factor.max(2);
    let max = s.compaction.max_segment_rows.max(1);
    let indexing = s.kind != IndexKind::Flat && s.threshold > 0;
    // Segments that lost every row, or enough of them, are rewritten (or just dropped).
    if let Some(g) = segs.iter().find(|g| {
        g.live == 0 || (g.rows > 0 && (g.rows - g.live) as f64 >= DELETED_SHARE * g.rows as f64)
    }) {
        return merge(vec![*g]);
    }
    if moment == Moment::Full {
        // Greedy: the largest segment and as many others as fit, smallest first.
        let mut by_size: Vec<SegInfo> = segs.to_vec();
        by_size.sort_by_key(|g| (std::cmp::Reverse(g.live), g.id));
        let (first, rest) = by_size.split_first()?;
        let mut chosen = vec![*first];
        let mut total = first.live;
        for g in rest.iter().rev() {
            if total + g.live <= max {
                total += g.live;
                chosen.push(*g);
            }
        }
        return merge(chosen);
    }
    let fresh: Vec<SegInfo> = segs.iter().copied().filter(|g| !g.indexed).collect();
    let fresh_rows: usize = fresh.iter().map(|g| g.live).sum();
    // The largest graph the fresh rows may join: within `f` times their size (so a big
    // segment is not rewritten for a few rows), or any size once the collection is quiet.
    let host = |ratio_limit: bool| {
        segs.iter()
            .copied()
            .filter(|g| g.indexed && g.live + fresh_rows <= max)
            .filter(|g| !ratio_limit || g.live <= f * fresh_rows)
            .max_by_key(|g| (g.live, std::cmp::Reverse(g.id)))
    };
    if indexing && fresh_rows >= s.threshold && fresh_rows <= max {
        // (One fresh segment and no graph to join: indexed in place instead.)
        let mut chosen = fresh.clone();
        chosen.extend(host(true));
        return merge(chosen);
    }
    if let Some(group) = tier_group(segs.iter().filter(|g| g.indexed), f, max) {
        return merge(group);
    }
    if moment == Moment::Idle && !fresh.is_empty() {
        if let Some(h) = host(false).filter(|_| indexing) {
            let mut chosen = fresh;
            chosen.push(h);
            return merge(chosen);
        }
        if fresh_rows <= max {
            return merge(fresh);
        }
    }
    None
}

/// The next merge of unindexed segments that builds no graph (a second worker runs these, so
/// that small writes never pile up behind a graph build): tiers of `merge_factor` segments of
/// about the same size, up to `merge_factor` times the index threshold in all.
pub(crate) fn choose_small(segs: &[SegInfo], s: &IndexSettings) -> Option<Merge> {
    let f = s.compaction.merge_factor.max(2);
    let indexing = s.kind != IndexKind::Flat && s.threshold > 0;
    let cap = if indexing {
        s.threshold.saturating_mul(f)
    } else {
        s.compaction.max_segment_rows
    };
    tier_group(
        segs.iter().filter(|g| !g.indexed),
        f,
        cap.min(s.compaction.max_segment_rows).max(1),
    )
    .and_then(merge)
}

/// Segments whose live rows have the same order of magnitude (base `f`): the smallest group of
/// at least `f` of them, as many as fit in `max` rows (at least two).
fn tier_group<'a>(
    segs: impl Iterator<Item = &'a SegInfo>,
    f: usize,
    max: usize,
) -> Option<Vec<SegInfo>> {
    let tier = |rows: usize| {
        let mut t = 0;
        let mut r = rows.max(1);
        while r >= f {
            r /= f;
            t += 1;
        }
        t
    };
    let mut tiers: std::collections::BTreeMap<usize, Vec<SegInfo>> = Default::default();
    for g in segs {
        tiers.entry(tier(g.live)).or_default().push(*g);
    }
    tiers.into_values().find_map(|mut group| {
        if group.len() < f {
            return None;
        }
        group.sort_by_key(|g| (g.live, g.id));
        let mut total = 0;
        group.retain(|g| {
            total += g.live;
            total <= max
        });
        (group.len() >= 2).then_some(group)
    })
}

/// A merge of `chosen` (at least two segments, or one to rewrite), the base first: the
/// largest segment with a graph, else the largest.
fn merge(mut chosen: Vec<SegInfo>) -> Option<Merge> {
    if chosen.is_empty() {
        return None;
    }
    if chosen.len() == 1 && chosen[0].live == chosen[0].rows && chosen[0].live > 0 {
        return None; // nothing to gain from rewriting it
    }
    chosen.sort_by_key(|g| (std::cmp::Reverse((g.indexed, g.live)), g.id));
    Some(Merge {
        segments: chosen.iter().map(|g| g.id).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(id: u64, rows: usize, indexed: bool) -> SegInfo {
        SegInfo {
            id,
            rows,
            live: rows,
            indexed,
        }
    }

    /// Removes the segments `m` merges from `segs`; returns their live rows.
    fn take(segs: &mut Vec<SegInfo>, m: &Merge) -> usize {
        let live = segs
            .iter()
            .filter(|g| m.segments.contains(&g.id))
            .map(|g| g.live)
            .sum();
        segs.retain(|g| !m.segments.contains(&g.id));
        live
    }

    /// Simulates `puts` writes of `rows` rows each, merging after every commit as the
    /// workers would (graph merges index their result, small merges do not, and an unindexed
    /// segment at the threshold gets indexed in place). Returns the segments, the most seen at
    /// once, and the rows rewritten.
    fn simulate(puts: usize, rows: usize, s: &IndexSettings) -> (Vec<SegInfo>, usize, usize) {
        let mut segs = Vec::new();
        let (mut next, mut written, mut most) = (0, 0, 0);
        let mut apply = |segs: &mut Vec<SegInfo>, m: Merge, indexed: bool| {
            let live = take(segs, &m);
            next += 1;
            written += live;
            if live > 0 {
                segs.push(seg(next, live, indexed && live >= s.threshold));
            }
        };
        for i in 0..puts {
            segs.push(seg(1_000_000 + i as u64, rows, false));
            loop {
                if let Some(m) = choose_small(&segs, s) {
                    apply(&mut segs, m, false);
                } else if let Some(m) = choose(&segs, s, Moment::Commit) {
                    apply(&mut segs, m, true);
                } else {
                    break;
                }
            }
            for g in &mut segs {
                g.indexed |= s.threshold > 0 && g.live >= s.threshold;
            }
            most = most.max(segs.len());
        }
        while let Some(m) = choose(&segs, s, Moment::Idle) {
            apply(&mut segs, m, true);
        }
        (segs, most, written)
    }

    #[test]
    fn small_puts_stay_few_segments_and_end_in_one_graph() {
        let s = IndexSettings::default();
        let (segs, most, rewritten) = simulate(1000, 100, &s);
        assert_eq!(segs.len(), 1, "{segs:?}");
        assert!(segs[0].indexed && segs[0].live == 100_000);
        assert!(most <= 20, "{most} segments at once");
        // Each row is rewritten a few times, not once per put.
        assert!(rewritten < 10 * 100_000, "{rewritten}");
        let (segs, _, _) = simulate(10_000, 10, &s);
        assert_eq!(segs.iter().map(|g| g.live).sum::<usize>(), 100_000);
        assert_eq!(segs.len(), 1);
    }

    #[test]
    fn segment_count_stays_logarithmic_between_merges() {
        let s = IndexSettings {
            threshold: 0, // no graphs: tiers alone
            ..Default::default()
        };
        let mut segs = Vec::new();
        let mut most = 0;
        for id in 0..20_000u64 {
            segs.push(seg(id * 2, 7, false));
            while let Some(m) = choose_small(&segs, &s) {
                let live = take(&mut segs, &m);
                segs.push(seg(id * 2 + 1, live, false));
            }
            most = most.max(segs.len());
        }
        // 140,000 rows in tiers of 10: at most 9 segments per tier, 6 tiers.
        assert!(most <= 9 * 6, "{most}");
    }

    #[test]
    fn deleted_rows_and_empty_segments_are_rewritten() {
        let s = IndexSettings::default();
        let mut g = seg(1, 100, false);
        g.live = 70;
        assert_eq!(
            choose(&[seg(2, 50, false), g], &s, Moment::Commit),
            Some(Merge { segments: vec![1] })
        );
        g.live = 0;
        assert_eq!(
            choose(&[g], &s, Moment::Commit),
            Some(Merge { segments: vec![1] })
        );
        g.live = 90;
        assert_eq!(choose(&[g], &s, Moment::Commit), None);
    }

    #[test]
    fn fresh_rows_join_the_largest_graph_when_quiet_and_full_merges_everything() {
        let s = IndexSettings::default();
        let segs = [
            seg(1, 90_000, true),
            seg(2, 5_000, false),
            seg(3, 300, false),
        ];
        assert_eq!(choose(&segs, &s, Moment::Commit), None);
        assert_eq!(
            choose(&segs, &s, Moment::Idle),
            Some(Merge {
                segments: vec![1, 2, 3]
            })
        );
        let s2 = IndexSettings {
            compaction: crate::options::CompactionPolicy {
                max_segment_rows: 92_000,
                ..s.compaction
            },
            ..s
        };
        // Too big for one segment: the fresh rows merge among themselves only.
        assert_eq!(
            choose(&segs, &s2, Moment::Idle),
            Some(Merge {
                segments: vec![2, 3]
            })
        );
        assert_eq!(
            choose(&segs, &s2, Moment::Full),
            Some(Merge {
                segments: vec![1, 3]
            })
        );
    }
}
