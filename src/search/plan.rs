//! How each segment is searched, chosen from its index and the filter's selectivity.

use crate::bitmap::Bitmap;
use crate::snapshot::SegmentView;

/// How one part is searched.
pub(super) enum Plan<'a> {
    Skip,
    /// Every row, block by block (rows outside the selection are passed over).
    Scan(Option<&'a Bitmap>),
    /// Only the selected rows, one by one.
    Rows(Vec<u32>),
    /// The index (rows outside the selection are traversed but not returned).
    Index(Option<&'a Bitmap>),
}

/// The cost of an index search, in rows evaluated per result, relative to a scan.
///
/// A graph search with a filter that keeps a fraction `f` of the `n` rows evaluates about
/// `GRAPH_COST·ef/f` rows before it has `ef` selected ones; an exact pass evaluates the `f·n`
/// selected rows. The exact pass wins when `(f·n)² < GRAPH_COST·ef·n`.
const GRAPH_COST: usize = 32;

/// Without an index, a scan of the selected rows one by one beats a blocked scan of every row
/// when at most one row in this many is selected.
const SPARSE_SCAN: usize = 8;

/// Picks a part's plan (`exact`: ignore its index).
pub(super) fn plan<'a>(
    part: &SegmentView,
    sel: Option<&'a Bitmap>,
    ef: usize,
    exact: bool,
) -> Plan<'a> {
    let n = part.seg.rows();
    let indexed = part.index.is_some() && !exact;
    let Some(bits) = sel else {
        return if indexed {
            Plan::Index(None)
        } else {
            Plan::Scan(None)
        };
    };
    let c = bits.count();
    let rows = || {
        Plan::Rows(
            bits.iter()
                .filter(|&r| !part.is_deleted(r))
                .map(|r| r as u32)
                .collect(),
        )
    };
    if c == 0 {
        Plan::Skip
    } else if indexed {
        if (c as u128).pow(2) <= (GRAPH_COST * ef) as u128 * n as u128 {
            rows()
        } else {
            Plan::Index(Some(bits))
        }
    } else if c * SPARSE_SCAN <= n {
        rows()
    } else {
        Plan::Scan(Some(bits))
    }
}
