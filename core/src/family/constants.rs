//! Every fixed constant of the eleven families, in one place.
//!
//! The scalar generators, the CPU lanes and the GPU kernel source all use these: the kernels'
//! build script writes them into the generated `seedq_generated.h` that `kernels/gpu/sieve.cu`
//! includes, so no copy of a constant is kept in sync by hand.

/// xorshift64's output multiplier (`x *= XORSHIFT64_MULTIPLIER` after the three shifts).
pub const XORSHIFT64_MULTIPLIER: u64 = 0x2545_F491_4F6C_DD1D;

/// xorshift128's fixed seeding words `y, z, w` (Marsaglia's; `x` is the seed).
pub const XORSHIFT128_SEEDING: [u32; 3] = [362_436_069, 521_288_629, 88_675_123];

/// java_lcg's state is 48 bits wide: `s = (a*s + c) & JAVA_MASK`.
pub const JAVA_MASK: u64 = (1 << 48) - 1;

/// The golden-ratio word that seeds xoshiro256++'s `s1` and sfc64's `b`.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// xoshiro256++'s fixed seeding words `s1, s2, s3` (`s0` is the seed).
pub const XOSHIRO256PP_SEEDING: [u64; 3] =
    [GOLDEN_GAMMA, 0x6A09_E667_F3BC_C908, 0xBB67_AE85_84CA_A73B];

/// sfc64's fixed seeding words `b, c` (`a` is the seed, the counter starts at 1, no warm-up).
pub const SFC64_SEEDING: [u64; 2] = [GOLDEN_GAMMA, 0x6A09_E667_F3BC_C908];

/// Philox4x32-10's round multipliers `M0, M1`.
pub const PHILOX_MULTIPLIERS: [u32; 2] = [0xD251_1F53, 0xCD9E_8D57];

/// Philox4x32-10's key schedule increments (Weyl constants).
pub const PHILOX_WEYL: [u32; 2] = [0x9E37_79B9, 0xBB67_AE85];

/// MT19937's state size in words.
pub const MT_N: usize = 624;

/// MT19937's middle word offset used by the twist.
pub const MT_M: usize = 397;

/// MT19937's twist matrix word (xored in when the low bit of `y` is set).
pub const MT_MATRIX_A: u32 = 0x9908_B0DF;

/// MT19937's upper (most significant bit) and lower masks of the twist.
pub const MT_UPPER_MASK: u32 = 0x8000_0000;

/// See [`MT_UPPER_MASK`].
pub const MT_LOWER_MASK: u32 = 0x7FFF_FFFF;

/// MT19937's `init_genrand` multiplier: `mt[i] = MT_INIT_MULTIPLIER * (mt[i-1] ^ (mt[i-1] >> 30)) + i`.
pub const MT_INIT_MULTIPLIER: u32 = 1_812_433_253;

/// MT19937's tempering masks `b` (with the shift 7) and `c` (with the shift 15).
pub const MT_TEMPER_B: u32 = 0x9D2C_5680;

/// See [`MT_TEMPER_B`].
pub const MT_TEMPER_C: u32 = 0xEFC6_0000;

/// Every constant above as `(C name, value, C type)`, for the kernels' generated header.
pub fn c_definitions() -> Vec<(&'static str, u64, &'static str)> {
    let mut defs = vec![
        ("SEEDQ_XORSHIFT64_MULTIPLIER", XORSHIFT64_MULTIPLIER, "u64"),
        ("SEEDQ_JAVA_MASK", JAVA_MASK, "u64"),
        ("SEEDQ_MT_N", MT_N as u64, "u32"),
        ("SEEDQ_MT_M", MT_M as u64, "u32"),
        ("SEEDQ_MT_MATRIX_A", MT_MATRIX_A as u64, "u32"),
        ("SEEDQ_MT_UPPER_MASK", MT_UPPER_MASK as u64, "u32"),
        ("SEEDQ_MT_LOWER_MASK", MT_LOWER_MASK as u64, "u32"),
        ("SEEDQ_MT_INIT_MULTIPLIER", MT_INIT_MULTIPLIER as u64, "u32"),
        ("SEEDQ_MT_TEMPER_B", MT_TEMPER_B as u64, "u32"),
        ("SEEDQ_MT_TEMPER_C", MT_TEMPER_C as u64, "u32"),
        ("SEEDQ_PHILOX_M0", PHILOX_MULTIPLIERS[0] as u64, "u32"),
        ("SEEDQ_PHILOX_M1", PHILOX_MULTIPLIERS[1] as u64, "u32"),
        ("SEEDQ_PHILOX_W0", PHILOX_WEYL[0] as u64, "u32"),
        ("SEEDQ_PHILOX_W1", PHILOX_WEYL[1] as u64, "u32"),
    ];
    defs.extend([
        ("SEEDQ_XORSHIFT128_Y", XORSHIFT128_SEEDING[0] as u64, "u32"),
        ("SEEDQ_XORSHIFT128_Z", XORSHIFT128_SEEDING[1] as u64, "u32"),
        ("SEEDQ_XORSHIFT128_W", XORSHIFT128_SEEDING[2] as u64, "u32"),
        ("SEEDQ_XOSHIRO_S1", XOSHIRO256PP_SEEDING[0], "u64"),
        ("SEEDQ_XOSHIRO_S2", XOSHIRO256PP_SEEDING[1], "u64"),
        ("SEEDQ_XOSHIRO_S3", XOSHIRO256PP_SEEDING[2], "u64"),
        ("SEEDQ_SFC64_B", SFC64_SEEDING[0], "u64"),
        ("SEEDQ_SFC64_C", SFC64_SEEDING[1], "u64"),
    ]);
    defs
}
