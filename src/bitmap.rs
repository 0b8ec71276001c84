//! A set of row positions within one segment: the rows a segment has deleted, or the rows a
//! filter selects. Pure data; its file format lives in `storage::deletes`.

/// A fixed-size set of rows `0..rows`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    count: usize,
}

impl Bitmap {
    /// An empty set over `rows` rows.
    pub(crate) fn new(rows: usize) -> Self {
        Bitmap {
            words: vec![0; rows.div_ceil(64)],
            count: 0,
        }
    }

    /// The set whose 64-row words are `words` (row `r` is bit `r % 64` of word `r / 64`).
    pub(crate) fn from_words(words: Vec<u64>) -> Self {
        let count = words.iter().map(|w| w.count_ones() as usize).sum();
        Bitmap { words, count }
    }

    /// The 64-row words, as `from_words` takes them.
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    /// Whether `row` is in the set.
    #[inline]
    pub(crate) fn contains(&self, row: usize) -> bool {
        self.words
            .get(row / 64)
            .is_some_and(|w| w & (1 << (row % 64)) != 0)
    }

    /// Adds `row`; returns whether it was newly added.
    pub(crate) fn insert(&mut self, row: usize) -> bool {
        let (w, b) = (row / 64, 1u64 << (row % 64));
        let fresh = self.words[w] & b == 0;
        self.words[w] |= b;
        self.count += fresh as usize;
        fresh
    }

    /// How many rows are in the set.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The rows in the set, ascending.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let b = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    w * 64 + b
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Bitmap;

    #[test]
    fn insert_count_iterate() {
        let mut b = Bitmap::new(130);
        assert!(b.insert(0) && b.insert(64) && b.insert(129));
        assert!(!b.insert(64));
        assert_eq!(b.count(), 3);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 64, 129]);
        assert!(b.contains(129) && !b.contains(1) && !b.contains(1000));
        assert_eq!(Bitmap::from_words(b.words().to_vec()), b);
    }
}
