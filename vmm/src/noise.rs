//! Reproducible pseudo-random numbers for the tests that play a careless or hostile guest
//! (xorshift64*): the same sequence every run, so a failure can be replayed, and no
//! dependency for it.

pub(crate) struct Noise(u64);

impl Noise {
    /// A sequence from `seed` (any value but 0, which xorshift never leaves).
    pub(crate) fn new(seed: u64) -> Self {
        assert_ne!(seed, 0, "xorshift stays at 0");
        Self(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
