//! The 32-bit Mersenne Twister (`init_genrand` seeding, C++ `std::mt19937(seed)`) and its
//! tempering.

use super::constants::{
    MT_INIT_MULTIPLIER, MT_LOWER_MASK, MT_M, MT_MATRIX_A, MT_N, MT_TEMPER_B, MT_TEMPER_C,
    MT_UPPER_MASK,
};

/// MT19937 tempering of one state word.
#[inline]
pub fn mt_temper(mut y: u32) -> u32 {
    y ^= y >> 11;
    y ^= (y << 7) & MT_TEMPER_B;
    y ^= (y << 15) & MT_TEMPER_C;
    y ^= y >> 18;
    y
}

/// The 32-bit Mersenne Twister with `init_genrand` seeding (C++ `std::mt19937(seed)`).
#[derive(Clone, PartialEq, Eq)]
pub struct Mt19937 {
    mt: [u32; MT_N],
    index: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Mt19937 {{ index: {}, mt[0..4]: {:?} }}",
            self.index,
            &self.mt[..4]
        )
    }
}

impl Mt19937 {
    /// State size in words.
    pub const N: usize = MT_N;
    const M: usize = MT_M;

    /// Seeded with `init_genrand(seed)`; the first output twists the whole state.
    pub fn new(seed: u32) -> Self {
        let mut mt = [0u32; MT_N];
        mt[0] = seed;
        for i in 1..Self::N {
            mt[i] = MT_INIT_MULTIPLIER
                .wrapping_mul(mt[i - 1] ^ (mt[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { mt, index: Self::N }
    }

    /// The untempered state words right after seeding (for backends that compute few words).
    pub fn initial_state(seed: u32) -> [u32; MT_N] {
        Self::new(seed).mt
    }

    fn twist(&mut self) {
        for i in 0..Self::N {
            let y = (self.mt[i] & MT_UPPER_MASK) | (self.mt[(i + 1) % Self::N] & MT_LOWER_MASK);
            let mut v = self.mt[(i + Self::M) % Self::N] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= MT_MATRIX_A;
            }
            self.mt[i] = v;
        }
        self.index = 0;
    }

    /// The next tempered output word (twisting the state every [`Self::N`] outputs).
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let y = self.mt[self.index];
        self.index += 1;
        mt_temper(y)
    }

    /// Discards `n` outputs (whole blocks are twisted without tempering).
    pub fn discard(&mut self, mut n: u64) {
        while n > 0 {
            if self.index >= Self::N {
                self.twist();
            }
            let take = ((Self::N - self.index) as u64).min(n);
            self.index += take as usize;
            n -= take;
        }
    }
}
