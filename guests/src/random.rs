//! A deterministic stream of pseudo-random numbers (xorshift64, Marsaglia 2003) for the
//! hostile test guests: the same seed gives the same attack in every run, so a failure
//! found once can be replayed.

/// xorshift64: never zero once seeded with a number that is not zero.
pub struct Random(u64);

impl Random {
    /// A stream from `seed` (mixed with a constant, so that small seeds — domain numbers —
    /// do not start with long runs of zero bits).
    pub fn new(seed: u64) -> Random {
        Random((seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xd1b5_4a32_d192_ed03) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
