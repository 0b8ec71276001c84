//! Building an IVF: centroids trained on a sample (`train`), then one pass that files every
//! row in its nearest list and a second one chosen as SOAR does (`spill`), and codes the list
//! entries in list order.

use rayon::prelude::*;

use super::kmeans::Probe;
use super::train::{gather, train, Trained};
use super::{Groups, Ivf};
use crate::options::{IndexSettings, QuantKind};
use crate::quant::rabitq::fastscan::pack_blocks;
use crate::quant::rabitq::RaBitQ;
use crate::quant::Codes;
use crate::task::Task;
use crate::vector::VectorView;

/// Each row's second list is chosen among this many of its nearest centroids.
const SPILL_CANDIDATES: usize = 16;
/// SOAR's weight on the part of a second list's residual parallel to the first one's.
const SPILL_LAMBDA: f32 = 1.0;
/// Groups each row is compared within for its nearest lists and its second list (`spill`) when
/// grouped lists are built: twice `GROUPS_PER_ROW`, which on minilm-phrases x10 (10M) raised
/// recall at every nprobe by half a point (0.954 to 0.960 at nprobe 16) for 100 s more build.
const SPILL_GROUPS: usize = 12;

/// The number of lists for `rows` rows when the settings leave it open: about 4·√rows.
fn auto_lists(rows: usize) -> usize {
    ((4.0 * (rows as f64).sqrt()).round() as usize).clamp(1, 1 << 16)
}

/// Each row's nearest list and a second one, chosen as SOAR (Sun et al., "SOAR: improved
/// indexing for approximate nearest neighbor search", 2023) does: among its nearest lists
/// `near` (`t` per row, nearest first, as `Trained::nearest` gives them), the one least in
/// `|x − c|² + λ⟨r, x − c⟩² / |r|²`, `r` the row's residual from its nearest centroid. The
/// second residual then tends to be orthogonal to the first, so a query that the first
/// list's centroid misranks (its error lies along `r`) usually finds the row through the
/// second. On minilm-phrases 1M with 1,000 lists (`benches/ivf_partition_recall.py`), the
/// true top-10 lie in the 30 nearest lists 97.4% of the time with a second list against
/// 86.4% without.
fn spill(
    data: &[f32],
    dim: usize,
    centroids: &[f32],
    near: &[(f32, u32)],
    t: usize,
) -> Vec<(u32, u32)> {
    let centroid = |j: u32| &centroids[j as usize * dim..(j as usize + 1) * dim];
    data.par_chunks(dim)
        .zip(near.par_chunks(t))
        .map(|(x, cands)| {
            let first = cands[0].1;
            let r: Vec<f32> = x.iter().zip(centroid(first)).map(|(a, c)| a - c).collect();
            let r2 = r.iter().map(|v| v * v).sum::<f32>().max(f32::MIN_POSITIVE);
            // With a single list in reach (never with more than one list in all) the row's
            // second entry is in its first list again; search counts each row once.
            let mut best = (f32::INFINITY, first);
            for &(_, j) in cands[1..].iter().filter(|(rank, _)| rank.is_finite()) {
                let (mut l2, mut along) = (0f32, 0f32);
                for ((a, c), rv) in x.iter().zip(centroid(j)).zip(&r) {
                    let d = a - c;
                    l2 += d * d;
                    along += rv * d;
                }
                let loss = l2 + SPILL_LAMBDA * along * along / r2;
                if loss < best.0 {
                    best = (loss, j);
                }
            }
            (first, best.1)
        })
        .collect()
}

impl Ivf {
    /// Builds an IVF over every row of `view` with `settings`' lists and codes; `None` when
    /// `cancel` was set meanwhile.
    pub(crate) fn build(
        view: &VectorView<'_>,
        settings: &IndexSettings,
        cancel: &Task,
    ) -> Option<Ivf> {
        let (n, dim) = (view.len(), view.dim());
        let lists = match settings.ivf.nlist {
            0 => auto_lists(n),
            l => l,
        }
        .min(n.max(1));
        if n == 0 {
            return Some(Ivf::new(
                dim,
                0,
                vec![0f32; dim].into(),
                vec![0u32, 0].into(),
                Vec::new().into(),
                Codes::train(settings.quant, view),
                None,
            ));
        }
        let trained = train(view, lists, cancel)?;
        // Every row to its nearest list and, with more than one list, to a second list too
        // (`spill`), a block at a time so the copy stays small.
        let spilled = trained.centroids.len() / dim > 1;
        let probe = Probe::of(view.metric());
        let mut owner = Vec::with_capacity(n);
        let mut second: Vec<u32> = Vec::with_capacity(if spilled { n } else { 0 });
        let all: Vec<u32> = (0..n as u32).collect();
        for chunk in all.chunks(1 << 16) {
            if cancel.cancelled() {
                return None;
            }
            let data = gather(view, chunk);
            if spilled {
                let near = trained.nearest(&data, dim, probe, SPILL_CANDIDATES, SPILL_GROUPS);
                let pairs = spill(&data, dim, &trained.centroids, &near, SPILL_CANDIDATES);
                for (first, other) in pairs {
                    owner.push(first);
                    second.push(other);
                }
            } else {
                owner.extend(trained.assign(&data, dim, probe));
            }
            cancel.advance(chunk.len());
        }
        let Trained { centroids, groups } = trained;
        let lists = centroids.len() / dim;
        let groups = groups.map(|(g, starts)| {
            let starts: Vec<u32> = starts.iter().map(|&s| s as u32).collect();
            Groups::new(dim, g.into(), starts.into())
        });
        let mut offsets = vec![0u32; lists + 1];
        for &c in owner.iter().chain(&second) {
            offsets[c as usize + 1] += 1;
        }
        for c in 0..lists {
            offsets[c + 1] += offsets[c];
        }
        let mut next = offsets.clone();
        let mut rows = vec![0u32; n + second.len()];
        let mut list_of = vec![0u32; n + second.len()];
        for (r, &c) in owner.iter().enumerate().chain(second.iter().enumerate()) {
            rows[next[c as usize] as usize] = r as u32;
            list_of[next[c as usize] as usize] = c;
            next[c as usize] += 1;
        }
        // RaBitQ codes are centred on their list's centroid; the others train as anywhere.
        let codes = match settings.quant {
            QuantKind::RaBitQ(bits) => Some(Codes::RaBitQ(RaBitQ::encode(
                view,
                &rows,
                centroids.clone(),
                &|i| list_of[i] as usize,
                usize::from(bits),
                true,
            ))),
            other => Codes::train_rows(other, view, &rows),
        };
        if cancel.cancelled() {
            return None;
        }
        let mut ivf = Ivf::new(
            dim,
            n,
            centroids.into(),
            offsets.into(),
            rows.into(),
            codes,
            None,
        );
        ivf.groups = groups;
        if let Some(Codes::RaBitQ(c)) = &ivf.codes {
            if c.bits() == 1 {
                ivf.blocks = Some(pack_blocks(c, &ivf.offsets, &ivf.block_starts).into());
            }
        }
        Some(ivf)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arrow_buffer::Buffer;

    use super::*;
    use crate::distance::Metric;
    use crate::index::ivf::kmeans::{self, assign};
    use crate::index::ivf::{build_in_lists, by_rank, exact_top, in_two_lists};
    use crate::quant::uniform_rows;
    use crate::vector::Scorer;

    /// From `GROUPED_FROM` lists, training and assignment go through groups of lists: almost
    /// every row still lands in its nearest list, most of its nearest lists are found through
    /// the groups (so most second lists are the ones chosen among every list), every row is
    /// in two lists, and probing every list is exact.
    #[test]
    fn grouped_lists_assign_rows_to_their_nearest_list() {
        let (n, dim, lists) = (40_000, 16, 8300);
        let data = uniform_rows(n, dim);
        let view = VectorView::new(&data, dim, Metric::L2);
        let cancel = Task::new();
        let trained = train(&view, lists, &cancel).unwrap();
        let (_, starts) = trained.groups.as_ref().expect("grouped");
        assert_eq!(starts.len() - 1, 91);
        assert_eq!(trained.centroids.len(), lists * dim);
        let grouped = trained.assign(&data, dim, Probe::Euclid);
        let nearest = assign(&data, dim, &trained.centroids, Probe::Euclid);
        let same = grouped.iter().zip(&nearest).filter(|(a, b)| a == b).count();
        eprintln!("{same} of {n} rows in their nearest list");
        assert!(
            same as f64 >= 0.97 * n as f64,
            "{same} of {n} in their nearest list"
        );
        let t = SPILL_CANDIDATES;
        let (some, m) = (&data[..4000 * dim], 4000);
        let through_groups = trained.nearest(some, dim, Probe::Euclid, t, SPILL_GROUPS);
        let of_all = kmeans::nearest(some, dim, &trained.centroids, Probe::Euclid, t);
        let found = through_groups
            .chunks_exact(t)
            .zip(of_all.chunks_exact(t))
            .map(|(a, b)| a.iter().filter(|x| b.iter().any(|y| y.1 == x.1)).count())
            .sum::<usize>();
        eprintln!(
            "{found} of {} nearest lists found through the groups",
            m * t
        );
        let a = spill(some, dim, &trained.centroids, &through_groups, t);
        let b = spill(some, dim, &trained.centroids, &of_all, t);
        let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        eprintln!("{agree} of {m} second lists agree");
        // Uniform rows are the hard case: their nearest lists spread over many groups.
        assert!(
            found as f64 >= 0.85 * (m * t) as f64,
            "{found} of {}",
            m * t
        );
        assert!(agree as f64 >= 0.9 * m as f64, "{agree} of {m}");
        let built = build_in_lists(&view, lists, QuantKind::RaBitQ(4));
        assert_eq!(built.offsets.len(), lists + 1);
        assert!(in_two_lists(&built, n));
        assert_eq!(built.groups.as_ref().map(Groups::len), Some(91));
        let ivf = Ivf::from_buffer(Buffer::from(built.to_bytes()), Path::new("g.ivf")).unwrap();
        assert_eq!(ivf, built);
        let (mut same, mut probed) = (0, 0);
        for qi in 0..20 {
            let q = view.row(qi * 997 + 3).to_vec();
            if qi < 5 {
                let got: Vec<u32> = ivf
                    .search(&view, &q, 10, n, lists, &|_| true)
                    .into_iter()
                    .map(|(r, _)| r)
                    .collect();
                assert_eq!(got, exact_top(&view, &q, 10));
            }
            // The 16 nearest lists found among the nearest groups' lists, against every list
            // ranked.
            let p = view.prepare(&q);
            let ranker = ivf.ranker(Metric::L2, &p);
            let mut all: Vec<(f32, u32)> = (0..lists as u32).map(|j| (ranker.dist(j), j)).collect();
            all.sort_unstable_by(by_rank);
            let grouped = ivf.probe(Metric::L2, &p, 16);
            same += grouped[..16]
                .iter()
                .filter(|l| all[..16].iter().any(|a| a.1 == l.1))
                .count();
            probed += 16;
            // A filter that only the rows of far lists pass still gets k rows.
            let far: Vec<u32> = all[lists - 100..]
                .iter()
                .flat_map(|&(_, l)| ivf.rows[ivf.entries(l)].to_vec())
                .collect();
            let got = ivf.search(&view, &q, 10, 64, 16, &|r| far.contains(&r));
            assert_eq!(got.len(), 10);
        }
        eprintln!("{same} of {probed} nearest lists among the nearest groups' lists");
        assert!(same as f64 >= 0.95 * probed as f64, "{same} of {probed}");
    }
}
