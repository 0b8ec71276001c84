//! Register tiles and the loop that drives them over a block of queries × rows, shared by
//! the SIMD levels; shape checks and row prefetching.

/// Checks the shapes of a `dot_block` call and returns the number of rows.
pub(crate) fn check_block(q: &[f32], x: &[f32], d: usize, out: &[f32]) -> usize {
    assert!(d > 0, "dimension must be positive");
    assert!(
        q.len().is_multiple_of(d) && x.len().is_multiple_of(d),
        "ragged block"
    );
    let (nq, nr) = (q.len() / d, x.len() / d);
    assert_eq!(out.len(), nq * nr, "output has the wrong size");
    nr
}

/// A register tile: `QT` queries × `RT` rows. `tile(q, x, d, out, stride)` writes
/// `out[i * stride + j]` for `i < QT`, `j < RT`. Unsafe: the pointers must cover `QT` (`RT`)
/// vectors of `d` floats, `out` must cover the tile, and the CPU must run the tile's level.
pub(super) type TileFn = unsafe fn(*const f32, *const f32, usize, *mut f32, usize);

/// The tiles of one level: a full `QT × RT` tile and its three edge variants.
pub(super) struct Tiles {
    /// Queries per full tile.
    pub qt: usize,
    /// Rows per full tile.
    pub rt: usize,
    /// `QT × RT`.
    pub full: TileFn,
    /// `1 × RT`, for the last queries.
    pub one_query: TileFn,
    /// `QT × 1`, for the last rows.
    pub one_row: TileFn,
    /// `1 × 1`.
    pub single: TileFn,
}

/// How many row tiles ahead `drive_tiles` prefetches. Segments are memory-mapped files in
/// 4 KiB pages, where the hardware prefetcher stops at every page boundary; explicit
/// prefetches keep a single-query scan streaming.
const PREFETCH_TILES: usize = 8;

/// Prefetches `len` elements of `x` from `start` (clamped to `x`) into L1, a cache line at a
/// time.
#[inline]
pub(crate) fn prefetch_rows<T>(x: &[T], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (start + len).min(x.len());
        let mut i = start;
        while i < end {
            // SAFETY: i < x.len(), so the address lies inside x; prefetch has no other effect
            // (SSE is part of the x86_64 baseline).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    x.as_ptr().add(i) as *const i8,
                )
            };
            i += 64 / std::mem::size_of::<T>().max(1);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, start, len);
}

/// Drives a level's register tiles over a whole block. Row tiles are the outer loop so a
/// handful of rows stays in L1 while the queries stream from L2.
#[allow(dead_code)] // unused on targets with no SIMD level
pub(super) fn drive_tiles(t: &Tiles, q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    let nr = check_block(q, x, d, out);
    let nq = q.len() / d;
    let (qp, xp, op) = (q.as_ptr(), x.as_ptr(), out.as_mut_ptr());
    let mut r = 0;
    while r < nr {
        prefetch_rows(x, (r + t.rt * PREFETCH_TILES) * d, t.rt * d);
        let full_rows = r + t.rt <= nr;
        let mut i = 0;
        while i < nq {
            let full_queries = i + t.qt <= nq;
            let tile = match (full_queries, full_rows) {
                (true, true) => t.full,
                (false, true) => t.one_query,
                (true, false) => t.one_row,
                (false, false) => t.single,
            };
            // SAFETY: check_block proved q holds nq and x holds nr vectors of d floats and out
            // holds nq × nr floats; the tile chosen touches queries i..i+qt (or i) and rows
            // r..r+rt (or r), all in range, and writes out[(i..) * nr + (r..)] in range. The
            // Tiles value was built for a level that Kernels::for_level verified on this CPU.
            unsafe { tile(qp.add(i * d), xp.add(r * d), d, op.add(i * nr + r), nr) };
            i += if full_queries { t.qt } else { 1 };
        }
        r += if full_rows { t.rt } else { 1 };
    }
}

/// A panel tile: `Q` queries × one packed panel of `width` rows (see [`Panels`]) over a run of
/// `depth` dimensions. `tile(q, d, depth, panel, out, stride, cols, add)` reads element `k <
/// depth` of query `i` at `q[i * d + k]` and of row `j` at `panel[k * width + j]`, and writes
/// (`add`: adds to) `cols` ≤ `width` scores per query at `out[i * stride ..]`. Unsafe: `q`,
/// `panel` and `out` must cover what is read and written, and the CPU must run the tile's
/// level.
pub(super) type PanelFn =
    unsafe fn(*const f32, usize, usize, *const f32, *mut f32, usize, usize, bool);

/// The many-query kernel of one level: rows packed into panels of `width` rows, transposed
/// (`panel[k * width + j]` is element k of row j), so a register tile broadcasts one query
/// element and multiplies it by `width` rows' elements at once.
pub(super) struct Panels {
    /// Rows per panel: a whole number of the level's registers.
    pub width: usize,
    /// `tiles[n - 1]` runs `n` queries; the last is the full tile.
    pub tiles: &'static [PanelFn],
}

/// Dimensions per pass of the many-query kernel: a pass's panels (32 rows × 128 × 4 bytes =
/// 16 KiB each at AVX-512) and query tile (12 × 128 × 4 = 6 KiB) stay in a 32 KiB L1 together,
/// where whole 384- or 768-dimension rows would stream from L2 for every query tile.
const DEPTH: usize = 128;

/// Many queries: a small GEMM, blocked as BLAS blocks one. The rows are first transposed into
/// panels, a pass of [`DEPTH`] dimensions at a time; then for each pass, each query tile runs
/// over every panel (both in L1), adding the pass's products to the scores of the passes
/// before it (in L2: queries × rows floats).
#[allow(dead_code)] // unused on targets with no SIMD level
pub(super) fn drive_panels(p: &Panels, q: &[f32], x: &[f32], d: usize, out: &mut [f32]) {
    let nr = check_block(q, x, d, out);
    let nq = q.len() / d;
    let w = p.width;
    let panels = nr.div_ceil(w);
    // Pass k0..k1 of panel pi at `k0 * panels * w + pi * w * (k1 - k0)`.
    let mut packed = Vec::with_capacity(panels * w * d);
    for k0 in (0..d).step_by(DEPTH) {
        for rows in x.chunks(w * d) {
            // In the panel's order, so its stores are sequential (its loads are `w` rows'
            // streams); a last panel of fewer rows is padded with zeros.
            let pad = w - rows.len() / d;
            for k in k0..(k0 + DEPTH).min(d) {
                packed.extend(rows.chunks_exact(d).map(|row| row[k]));
                packed.extend(std::iter::repeat_n(0.0, pad));
            }
        }
    }
    let qtile = p.tiles.len();
    for k0 in (0..d).step_by(DEPTH) {
        let depth = DEPTH.min(d - k0);
        let mut i = 0;
        while i < nq {
            let n = qtile.min(nq - i);
            let tile = p.tiles[n - 1];
            for pi in 0..panels {
                let j0 = pi * w;
                let cols = w.min(nr - j0);
                let panel = &packed[k0 * panels * w + pi * w * depth..][..w * depth];
                // SAFETY: queries i..i+n lie in q (n ≤ nq - i) and the tile reads their
                // elements k0..k0+depth ≤ d; the panel slice holds w × depth floats; out rows
                // i..i+n hold nr floats from column j0, of which cols ≤ nr - j0 are read and
                // written. The Panels value was built for a level that Kernels::for_level
                // verified on this CPU.
                unsafe {
                    tile(
                        q.as_ptr().add(i * d + k0),
                        d,
                        depth,
                        panel.as_ptr(),
                        out.as_mut_ptr().add(i * nr + j0),
                        nr,
                        cols,
                        k0 > 0,
                    )
                };
            }
            i += n;
        }
    }
}
