//! HNSW recall against exact search on real embeddings (a slice of minilm-words).

use omendb::distance::Metric;
use omendb::hnsw::{Hnsw, HnswParams, Space};
use omendb::npy;

const N: usize = 5000;

fn dataset() -> Option<(Vec<f32>, Vec<f32>, usize)> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets/minilm-words");
    let base = npy::read_f32(dir.join("base.npy")).ok()?;
    let queries = npy::read_f32(dir.join("queries.npy")).ok()?;
    Some((
        base.data[..N * base.cols].to_vec(),
        queries.data[..200 * queries.cols].to_vec(),
        base.cols,
    ))
}

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
    space: &Space<'_>,
    data: &[f32],
    queries: &[f32],
    dim: usize,
    metric: Metric,
    ef: usize,
    accept: &dyn Fn(u32) -> bool,
) -> f64 {
    let mut hits = 0;
    let mut total = 0;
    for q in queries.chunks(dim) {
        let got: Vec<u32> = graph
            .search(space, q, 10, ef, accept)
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
        hits += got.iter().filter(|g| want.contains(g)).count();
        total += want.len();
    }
    hits as f64 / total as f64
}

#[test]
fn recall_at_10_against_exact_search() {
    let Some((data, queries, dim)) = dataset() else {
        panic!("minilm-words dataset not found beside the repository (../shared/datasets)");
    };
    for metric in [Metric::Cosine, Metric::L2] {
        let space = Space::new(&data, dim, metric);
        let graph = Hnsw::build(&space, HnswParams::default());
        let r = recall(&graph, &space, &data, &queries, dim, metric, 64, &|_| true);
        eprintln!("{metric}: recall@10 at ef=64: {r:.4}");
        assert!(r >= 0.95, "{metric} recall {r}");
        let high = recall(&graph, &space, &data, &queries, dim, metric, 400, &|_| true);
        assert!(high >= 0.995, "{metric} recall at ef=400: {high}");
        // Rebuilding with the same parameters gives the same graph's quality; every node is reachable.
        assert!(graph.layer0.chunks(1 + 2 * graph.m).all(|l| l[0] > 0));
    }
}

#[test]
fn filtered_search_returns_only_accepted_rows() {
    let Some((data, queries, dim)) = dataset() else {
        return;
    };
    let space = Space::new(&data, dim, Metric::Cosine);
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
        &accept,
    );
    eprintln!("10% filter: recall@10 at ef=200: {r:.4}");
    assert!(r >= 0.95, "filtered recall {r}");
}
