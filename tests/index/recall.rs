//! HNSW recall against exact search on real embeddings (a slice of minilm-words), on the raw
//! graph.

use omendb::internals::{Hnsw, HnswParams};
use omendb::Metric;
use omendb::VectorView;

use crate::common::dataset;

fn exact(space_data: &[f32], dim: usize, q: &[f32], k: usize, metric: Metric) -> Vec<u32> {
    let mut d: Vec<(f32, u32)> = space_data
        .chunks(dim)
        .enumerate()
        .map(|(i, v)| (metric.distance(q, v), i as u32))
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d.into_iter().take(k).map(|x| x.1).collect()
}

#[allow(clippy::too_many_arguments)]
fn recall(
    graph: &Hnsw,
    space: &VectorView<'_>,
    data: &[f32],
    queries: &[f32],
    dim: usize,
    metric: Metric,
    ef: usize,
    filter: Option<&dyn Fn(u32) -> bool>,
) -> f64 {
    let accept = |i: u32| filter.is_none_or(|f| f(i));
    let (mut got_all, mut want_all) = (Vec::new(), Vec::new());
    for q in queries.chunks(dim) {
        let got: Vec<u32> = graph
            .search(space, q, 10, ef, filter)
            .into_iter()
            .map(|h| h.0)
            .collect();
        let filtered: Vec<f32> = data
            .chunks(dim)
            .enumerate()
            .filter(|(i, _)| accept(*i as u32))
            .flat_map(|(_, v)| v.to_vec())
            .collect();
        let ids: Vec<u32> = (0..data.len() / dim)
            .map(|i| i as u32)
            .filter(|i| accept(*i))
            .collect();
        let want: Vec<u32> = exact(&filtered, dim, q, 10, metric)
            .into_iter()
            .map(|j| ids[j as usize])
            .collect();
        assert!(
            got.iter().all(|g| accept(*g)),
            "a rejected row was returned"
        );
        assert_eq!(got.len(), 10.min(ids.len()));
        got_all.push(got);
        want_all.push(want);
    }
    omendb_testkit::recall(&got_all, &want_all)
}

#[test]
fn recall_at_10_against_exact_search() {
    let (data, queries, dim) = dataset();
    for metric in [Metric::Cosine, Metric::L2] {
        let space = VectorView::new(&data, dim, metric);
        let graph = Hnsw::build(&space, HnswParams::default());
        let r = recall(&graph, &space, &data, &queries, dim, metric, 64, None);
        eprintln!("{metric}: recall@10 at ef=64: {r:.4}");
        assert!(r >= 0.95, "{metric} recall {r}");
        let high = recall(&graph, &space, &data, &queries, dim, metric, 400, None);
        assert!(high >= 0.995, "{metric} recall at ef=400: {high}");
        // Rebuilding with the same parameters gives the same graph's quality; every node is reachable.
        assert!(graph.layer0.chunks(1 + 2 * graph.m).all(|l| l[0] > 0));
    }
}

#[test]
fn filtered_search_returns_only_accepted_rows() {
    let (data, queries, dim) = dataset();
    let space = VectorView::new(&data, dim, Metric::Cosine);
    let graph = Hnsw::build(&space, HnswParams::default());
    // 10% of rows accepted: the graph search still returns 10 of them, with good recall.
    let accept = |i: u32| i % 10 == 3;
    let r = recall(
        &graph,
        &space,
        &data,
        &queries[..50 * dim],
        dim,
        Metric::Cosine,
        200,
        Some(&accept),
    );
    eprintln!("10% filter: recall@10 at ef=200: {r:.4}");
    assert!(r >= 0.95, "filtered recall {r}");
}
