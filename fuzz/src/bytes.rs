//! Choices read from the fuzzer's bytes: every input decodes to some case, and a longer
//! input only adds choices (an exhausted input reads zeros), so the fuzzer's mutations and
//! proptest's shrinking both work on plain byte strings.

/// A cursor over the input.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }

    /// The next byte, 0 once the input is exhausted.
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// Whether the input has bytes left.
    pub fn more(&self) -> bool {
        self.pos < self.data.len()
    }

    /// A choice in `0..n` (`n` at most 256).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!((1..=256).contains(&n));
        self.byte() as usize % n
    }

    /// A coin (true when the byte is odd).
    pub fn coin(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}
