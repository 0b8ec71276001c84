//! Quantizers: compact codes of a segment's vectors that graph search traverses instead of
//! the floats, re-ranking its final candidates with exact distances. Each quantizer trains on
//! and encodes a segment (`train`), scores a prepared query against any coded row (`scorer`),
//! and writes its section of an index file. `Codes` dispatches on `QuantKind` once per search,
//! outside the hot loop; a new quantizer is a new file here and a new arm there.

pub(crate) mod sq8;

use arrow_buffer::Buffer;

use crate::distance::Metric;
use crate::options::QuantKind;
use crate::vector::{Scorer, VectorView};

/// What every quantizer provides.
pub(crate) trait Quantizer: Sized {
    /// Distances from one query to coded rows.
    type Scorer<'a>: Scorer
    where
        Self: 'a;
    /// Learns the code book from `view` and encodes every row of it.
    fn train(view: &VectorView<'_>) -> Self;
    /// The scorer of `query`, prepared for `metric` (see `Metric::prepare_query`).
    fn scorer<'a>(&'a self, metric: Metric, query: &[f32]) -> Self::Scorer<'a>;
    /// Rows coded.
    fn rows(&self) -> usize;
    /// Dimensions per row.
    fn dim(&self) -> usize;
    /// Bytes of the file section for `rows` rows of `dim` dimensions (a multiple of four).
    fn section_bytes(rows: usize, dim: usize) -> usize;
    /// Appends the file section.
    fn write(&self, out: &mut Vec<u8>);
    /// Reads a section written by `write` from `buffer` at byte `at` (in place, no copy).
    fn read(buffer: &Buffer, at: usize, rows: usize, dim: usize) -> Self;
}

/// The codes an index holds, of whichever kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Codes {
    Sq8(sq8::Sq8),
}

impl Codes {
    /// Trains the quantizer `kind` names on `view` (`None` for `QuantKind::None`).
    pub(crate) fn train(kind: QuantKind, view: &VectorView<'_>) -> Option<Codes> {
        match kind {
            QuantKind::None => None,
            QuantKind::Sq8 => Some(Codes::Sq8(sq8::Sq8::train(view))),
        }
    }

    /// Rows coded.
    pub(crate) fn rows(&self) -> usize {
        match self {
            Codes::Sq8(c) => c.rows(),
        }
    }

    /// Dimensions per row.
    pub(crate) fn dim(&self) -> usize {
        match self {
            Codes::Sq8(c) => c.dim(),
        }
    }
}
