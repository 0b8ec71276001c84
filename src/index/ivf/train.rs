//! Training an IVF's centroids on a sample of the rows: one k-means over every list, or, with
//! many lists (from `GROUPED_FROM`), two levels: the lists in groups around group centroids.

use rayon::prelude::*;

use super::kmeans::{assign, keep_nearest, kmeans, nearest, recentre, Probe};
use crate::quant::splitmix;
use crate::task::Task;
use crate::vector::VectorView;

/// Training rows per list (at most): enough for stable centroids, bounded work.
const SAMPLE_PER_LIST: usize = 64;
/// Lists from which k-means goes through groups of lists (see `train`): about 4M rows with
/// the automatic number of lists. Below, one k-means over every list partitions better (on
/// the 1M stand-in, recall 0.947 against 0.924 at nprobe 64) and costs minutes, not hours.
const GROUPED_FROM: usize = 8192;
/// Lloyd rounds over every list after the grouped k-means.
const REFINE_ROUNDS: usize = 4;
/// Groups each row is compared within when assigned to a list of grouped centroids.
const GROUPS_PER_ROW: usize = 6;

/// The vectors of `rows` of `view` as search sees them, row-major.
pub(super) fn gather(view: &VectorView<'_>, rows: &[u32]) -> Vec<f32> {
    let dim = view.dim();
    let mut out = vec![0f32; rows.len() * dim];
    out.par_chunks_mut(dim.max(1))
        .zip(rows)
        .for_each(|(o, &r)| o.copy_from_slice(&view.normalized_row(r as usize)));
    out
}

/// Trained centroids (`lists × dim`). With many lists they come in groups: group `g` holds
/// lists `starts[g]..starts[g + 1]` around the group centroid `groups[g]`.
pub(super) struct Trained {
    /// `lists × dim`.
    pub(super) centroids: Vec<f32>,
    /// With many lists, the group centroids (`groups × dim`) and each group's first list
    /// (`groups + 1`).
    pub(super) groups: Option<(Vec<f32>, Vec<usize>)>,
}

/// `lists` shared among groups in proportion to their `sizes`, each non-empty group getting
/// at least one and at most its size (largest remainders first).
fn share(lists: usize, sizes: &[usize]) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let exact: Vec<f64> = sizes
        .iter()
        .map(|&s| lists as f64 * s as f64 / total as f64)
        .collect();
    let mut out: Vec<usize> = exact
        .iter()
        .zip(sizes)
        .map(|(&e, &s)| (e.floor() as usize).clamp(usize::from(s > 0), s))
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut given: usize = out.iter().sum();
    // Hand out what flooring left (to groups with room), or take back what the minimum of one
    // gave beyond `lists` (from groups with more than one).
    for &g in order.iter().cycle().take(4 * sizes.len()) {
        if given < lists && out[g] < sizes[g] {
            out[g] += 1;
            given += 1;
        } else if given > lists && out[g] > 1 {
            out[g] -= 1;
            given -= 1;
        }
    }
    out
}

/// k-means centroids of a sample of `view`. Up to `GROUPED_FROM` lists, one k-means over
/// the sample; from there, two levels: √lists group centroids, then each group's sample rows
/// clustered into its share of the lists, which costs about √lists times less than one
/// k-means over every list (12,649 lists for 10M rows). `None` when cancelled.
pub(super) fn train(view: &VectorView<'_>, lists: usize, cancel: &Task) -> Option<Trained> {
    let (n, dim) = (view.len(), view.dim());
    let probe = Probe::of(view.metric());
    // A pseudo-random sample: each row gets a hash, the smallest hashes are kept.
    let want = (lists * SAMPLE_PER_LIST).min(n);
    let sample: Vec<u32> = if want == n {
        (0..n as u32).collect()
    } else {
        let mut keyed: Vec<(u64, u32)> = (0..n as u32)
            .into_par_iter()
            .map(|i| (splitmix(0x1DF ^ u64::from(i)), i))
            .collect();
        keyed.select_nth_unstable(want - 1);
        let mut rows: Vec<u32> = keyed[..want].iter().map(|&(_, i)| i).collect();
        rows.sort_unstable();
        rows
    };
    let data = gather(view, &sample);
    if lists < GROUPED_FROM {
        let centroids = kmeans(&data, dim, lists, probe, 0, cancel)?;
        return Some(Trained {
            centroids,
            groups: None,
        });
    }
    let g = (lists as f64).sqrt().round() as usize;
    let groups = kmeans(&data, dim, g, probe, 1, cancel)?;
    let mut members: Vec<Vec<f32>> = vec![Vec::new(); g];
    for (row, o) in data
        .chunks_exact(dim)
        .zip(assign(&data, dim, &groups, probe))
    {
        members[o as usize].extend_from_slice(row);
    }
    let sizes: Vec<usize> = members.iter().map(|m| m.len() / dim).collect();
    let shares = share(lists, &sizes);
    let mut centroids = Vec::with_capacity(lists * dim);
    let mut starts = vec![0usize];
    for (j, (rows, &k)) in members.iter().zip(&shares).enumerate() {
        if k > 0 {
            centroids.extend(kmeans(rows, dim, k, probe, 2 + j as u64, cancel)?);
        }
        starts.push(starts[j] + k);
    }
    drop(members);
    let mut trained = Trained {
        centroids,
        groups: Some((groups, starts)),
    };
    // Lloyd rounds over the whole sample with the grouped assignment: each group's lists were
    // fitted to the rows of its cell alone, and rows near the cells' borders move to the
    // lists that are nearest to them across groups.
    for _ in 0..REFINE_ROUNDS {
        if cancel.cancelled() {
            return None;
        }
        let owner = trained.assign(&data, dim, probe);
        // A list left empty keeps its centroid.
        let counts = recentre(&data, dim, &owner, &mut trained.centroids);
        // Each group centred again on its lists, weighted by their rows.
        let (groups, starts) = trained.groups.as_mut().expect("grouped");
        for (j, group) in groups.chunks_exact_mut(dim).enumerate() {
            let (mut acc, mut rows) = (vec![0f64; dim], 0usize);
            let (first, last) = (starts[j], starts[j + 1]);
            let members = trained.centroids[first * dim..last * dim].chunks_exact(dim);
            for (&count, centroid) in counts[first..last].iter().zip(members) {
                rows += count;
                for (a, &x) in acc.iter_mut().zip(centroid) {
                    *a += count as f64 * f64::from(x);
                }
            }
            if rows > 0 {
                for (g, a) in group.iter_mut().zip(acc) {
                    *g = (a / rows as f64) as f32;
                }
            }
        }
    }
    Some(trained)
}

impl Trained {
    /// The list of each row of `data`: its nearest centroid, among the lists of its
    /// `GROUPS_PER_ROW` nearest groups when the centroids are grouped.
    pub(super) fn assign(&self, data: &[f32], dim: usize, probe: Probe) -> Vec<u32> {
        self.nearest(data, dim, probe, 1, GROUPS_PER_ROW)
            .into_iter()
            .map(|(_, j)| j)
            .collect()
    }

    /// The `t` nearest lists of each row of `data` with their rankings, nearest first (as
    /// `nearest`). With grouped centroids, among the lists of the row's `reach` nearest
    /// groups; where fewer lists are in reach the last entries have an infinite ranking.
    pub(super) fn nearest(
        &self,
        data: &[f32],
        dim: usize,
        probe: Probe,
        t: usize,
        reach: usize,
    ) -> Vec<(f32, u32)> {
        let Some((groups, starts)) = &self.groups else {
            return nearest(data, dim, &self.centroids, probe, t);
        };
        let g = starts.len() - 1;
        let per_row = reach.min(g);
        let near = nearest(data, dim, groups, probe, per_row);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); g];
        for (r, gs) in near.chunks_exact(per_row).enumerate() {
            for &(_, j) in gs {
                members[j as usize].push(r as u32);
            }
        }
        // Each group scores its member rows against its own lists.
        // Per group, (row, ranking, list) of each member row's nearest lists in it.
        let found: Vec<Vec<(u32, f32, u32)>> = members
            .into_par_iter()
            .enumerate()
            .filter(|(j, rows)| !rows.is_empty() && starts[*j] < starts[j + 1])
            .map(|(j, rows)| {
                let block: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| {
                        data[r as usize * dim..(r as usize + 1) * dim]
                            .iter()
                            .copied()
                    })
                    .collect();
                let lists = &self.centroids[starts[j] * dim..starts[j + 1] * dim];
                let tg = t.min(starts[j + 1] - starts[j]);
                let best = nearest(&block, dim, lists, probe, tg);
                rows.into_iter()
                    .zip(best.chunks_exact(tg))
                    .flat_map(|(r, b)| {
                        b.iter()
                            .map(move |&(rank, l)| (r, rank, l + starts[j] as u32))
                    })
                    .collect()
            })
            .collect();
        let mut best = vec![(f32::INFINITY, 0u32); data.len() / dim * t];
        for (r, rank, l) in found.into_iter().flatten() {
            keep_nearest(&mut best[r as usize * t..(r as usize + 1) * t], (rank, l));
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_shared_by_size_with_one_per_group() {
        assert_eq!(share(10, &[50, 30, 20]), [5, 3, 2]);
        assert_eq!(share(10, &[97, 1, 1, 1]).iter().sum::<usize>(), 10);
        assert_eq!(share(10, &[97, 1, 1, 1])[1..], [1, 1, 1]);
        assert_eq!(share(5, &[3, 0, 2]), [3, 0, 2]);
        let s = share(1000, &[7, 300, 2, 691]);
        assert_eq!(s.iter().sum::<usize>(), 1000);
        assert!(s
            .iter()
            .zip([7, 300, 2, 691])
            .all(|(&k, n)| k >= 1 && k <= n));
    }
}
