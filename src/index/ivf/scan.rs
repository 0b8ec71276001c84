//! Scanning a query's lists: exactly when the index has no usable codes, else over its codes
//! (`scan_codes`, one arm per kind), 1-bit codes by fast scan where they are stored in blocks
//! (`scan_fast`, over `quant::rabitq::fastscan`'s layout).

use std::cell::Cell;

use super::Ivf;
use crate::distance::{kernels, Metric};
use crate::quant::rabitq::fastscan::BLOCK;
use crate::quant::rabitq::RaBitQScorer;
use crate::quant::{Codes, Quantizer};
use crate::topk::{Neighbor, TopK};
use crate::vector::{Exact, Scorer};

/// How many entries ahead an exact scan prefetches their rows.
const PREFETCH_AHEAD: usize = 4;

impl Ivf {
    /// The exact scan (without usable codes): the `room` nearest accepted entries of `lists` by
    /// exact distance (counted in `seen`), nearest first, each row once.
    pub(super) fn scan_exact(
        &self,
        lists: impl Iterator<Item = u32>,
        accept: &dyn Fn(u32) -> bool,
        seen: &Cell<usize>,
        exact: &Exact<'_>,
        room: usize,
    ) -> Vec<Neighbor> {
        let mut top = TopK::<u32>::new(room);
        for l in lists {
            let list = &self.rows[self.entries(l)];
            for (j, &row) in list.iter().enumerate() {
                if let Some(&next) = list.get(j + PREFETCH_AHEAD) {
                    exact.prefetch(next);
                }
                if accept(row) {
                    seen.set(seen.get() + 1);
                    top.push(Neighbor::new(exact.dist(row), row));
                }
            }
        }
        let mut found = top.into_sorted();
        found.dedup_by_key(|n| n.id);
        found
    }

    /// The `room` nearest accepted entries of `lists` (counted in `seen`) by `codes`'
    /// estimates for the prepared query `q`, in no order (a row in two lists may be there
    /// twice).
    #[allow(clippy::too_many_arguments)] // Those of `scan`, and what the scorer is made of.
    pub(super) fn scan_codes(
        &self,
        codes: &Codes,
        metric: Metric,
        q: &[f32],
        lists: impl Iterator<Item = u32>,
        accept: &dyn Fn(u32) -> bool,
        seen: &Cell<usize>,
        room: usize,
    ) -> Vec<Neighbor> {
        let mut top = TopK::<u32>::new(room);
        match codes {
            Codes::Sq8(c) => {
                let s = c.scorer(metric, q);
                self.scan(lists, accept, seen, &mut top, |at, _| s.dist(at), &|_| 0.0);
            }
            Codes::Sq4(c) => {
                let s = c.scorer(metric, q);
                self.scan(lists, accept, seen, &mut top, |at, _| s.dist(at), &|_| 0.0);
            }
            Codes::RaBitQ(c) => {
                let s = c.scorer(metric, q);
                let rotated = c.rotated();
                let term = |l: u32| s.centre_term(if rotated { l as usize } else { 0 });
                match (&self.blocks, s.tables()) {
                    (Some(blocks), Some(lut)) => {
                        let scan = FastScan {
                            blocks,
                            lut: &lut,
                            scorer: &s,
                        };
                        self.scan_fast(lists, accept, seen, &mut top, scan, &term);
                    }
                    _ => {
                        let dist = |at, t| s.estimate(at, t);
                        self.scan(lists, accept, seen, &mut top, dist, &term);
                    }
                }
            }
        }
        top.into_unsorted().collect()
    }

    /// Offers every accepted entry of `lists` to `top` with distance `dist(at, term(list))`,
    /// counting them in `seen`.
    fn scan(
        &self,
        lists: impl Iterator<Item = u32>,
        accept: &dyn Fn(u32) -> bool,
        seen: &Cell<usize>,
        top: &mut TopK<u32>,
        dist: impl Fn(u32, f32) -> f32,
        term: &dyn Fn(u32) -> f32,
    ) {
        for l in lists {
            let t = term(l);
            let range = self.entries(l);
            for (at, &row) in range.clone().zip(&self.rows[range]) {
                if accept(row) {
                    seen.set(seen.get() + 1);
                    top.push(Neighbor::new(dist(at as u32, t), row));
                }
            }
        }
    }

    /// `scan` over 1-bit codes, 32 entries per fast-scan kernel call. Only the entries that
    /// would enter `top` are looked up and filtered: a finite threshold means it already holds
    /// `ef` accepted rows, so `seen` needs no count of the others.
    fn scan_fast(
        &self,
        lists: impl Iterator<Item = u32>,
        accept: &dyn Fn(u32) -> bool,
        seen: &Cell<usize>,
        top: &mut TopK<u32>,
        scan: FastScan<'_>,
        term: &dyn Fn(u32) -> f32,
    ) {
        let bytes = scan.scorer.groups() * 16;
        let fastscan = kernels().fastscan;
        let mut ints = [0u16; BLOCK];
        let mut dists = [0f32; BLOCK];
        for l in lists {
            let t = term(l);
            let range = self.entries(l);
            let start = self.block_starts[l as usize];
            for (b, block) in range.clone().step_by(BLOCK).enumerate() {
                let at = (start + b) * bytes;
                fastscan(&scan.blocks[at..at + bytes], scan.lut, &mut ints);
                let n = BLOCK.min(range.end - block);
                scan.scorer.estimate_block(block, &ints[..n], t, &mut dists);
                for (e, &d) in (block..range.end).zip(&dists[..n]) {
                    if d >= top.threshold() {
                        continue;
                    }
                    let row = self.rows[e];
                    if accept(row) {
                        seen.set(seen.get() + 1);
                        top.push(Neighbor::new(d, row));
                    }
                }
            }
        }
    }
}

/// What a fast scan reads: the blocks, the query's tables and the scorer of its estimates.
struct FastScan<'a> {
    /// The index's fast-scan blocks (`Ivf::blocks`).
    blocks: &'a [u8],
    /// The query's tables (`RaBitQScorer::tables`).
    lut: &'a [u8],
    /// What turns a block's integer dot products into estimates.
    scorer: &'a RaBitQScorer<'a>,
}
