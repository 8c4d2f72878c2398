//! Known-answer tests: seedq's families against the real generators and published vectors.
//!
//! Two sources:
//! * constants published with the generators (C++ standard `[rand.predef]` 10000th outputs,
//!   Random123's Philox KAT file, pcg-c-basic's demo, Marsaglia's paper, java.util.Random),
//!   hard-coded here and always checked;
//! * programs in `tests/support/` compiled at test time: `kat.cpp` (g++, C++ `<random>` plus the
//!   reference C code of xorshift32, xor128, xoshiro256++, SFC64 and PCG32) and
//!   `JavaRandomKat.java` (javac, `java.util.Random`). When a compiler is missing the test prints
//!   `SKIPPED: ...` and checks only the hard-coded vectors.
//!
//! Where a family's seeding differs from the public generator (java_lcg is unscrambled, pcg32 has
//! no srandom, xoshiro256pp/sfc64 use fixed constants instead of SplitMix/warm-up), the public
//! generator is run from the same state as seedq's.

mod support;

use seedq_kernels::family::{philox4x32_10, FamilyParams, Generator};
use seedq_kernels::{Family, FamilyConfig};
use support::{numbers, run_program};

fn outputs(family: &FamilyConfig, seed: u64, n: usize) -> Vec<u64> {
    let mut g = family.generator(seed);
    (0..n).map(|_| g.next_output()).collect()
}

fn cfg(name: &str, params: &[(&str, &str)]) -> FamilyConfig {
    FamilyConfig::parse(name, params).unwrap()
}

fn java_seed(x: i64) -> u64 {
    (x as u64 ^ 0x5_DEEC_E66D) & ((1 << 48) - 1)
}

#[test]
fn cpp_standard_10000th_outputs() {
    // [rand.predef]: the 10000th consecutive invocation of a default-constructed engine.
    assert_eq!(
        FamilyConfig::new(Family::Mt19937).output_at(5489, 9999),
        4123659995
    );
    assert_eq!(
        FamilyConfig::new(Family::Minstd).output_at(1, 9999),
        399268537
    );
    assert_eq!(
        cfg("minstd", &[("a", "16807")]).output_at(1, 9999),
        1043618065
    );
    // The same through plain stepping, not only jump-ahead.
    assert_eq!(
        outputs(&FamilyConfig::new(Family::Minstd), 1, 10000)[9999],
        399268537
    );
    assert_eq!(
        outputs(&FamilyConfig::new(Family::Mt19937), 5489, 10000)[9999],
        4123659995
    );
}

#[test]
fn marsaglia_xorshift32_and_xor128() {
    // Marsaglia, "Xorshift RNGs" (2003): xor32 from y = 2463534242; xor128 from its published state.
    let xs = outputs(&FamilyConfig::new(Family::Xorshift32), 2463534242, 3);
    assert_eq!(xs, [723471715, 2497366906, 2064144800]);
    let x128 = outputs(&FamilyConfig::new(Family::Xorshift128), 123456789, 3);
    assert_eq!(x128, [3701687786, 458299110, 2500872618]);
}

#[test]
fn java_util_random_published_values() {
    // new Random(0).nextInt() == -1155484576, new Random(42).nextInt() == -1170105035.
    let java = FamilyConfig::new(Family::JavaLcg);
    assert_eq!(java.output_at(java_seed(0), 0) as u32 as i32, -1155484576);
    assert_eq!(java.output_at(java_seed(42), 0) as u32 as i32, -1170105035);
}

#[test]
fn philox4x32_10_random123_kat() {
    // Random123 kat_vectors: "philox4x32 10 CTR[4] KEY[2] -> OUT[4]".
    let kat: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
        (
            [0, 0, 0, 0],
            [0, 0],
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
        ),
        (
            [u32::MAX; 4],
            [u32::MAX; 2],
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
        ),
        (
            [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
            [0xa4093822, 0x299f31d0],
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
        ),
    ];
    for (ctr, key, expected) in kat {
        assert_eq!(philox4x32_10(ctr, key), expected);
    }
    // The family: key (seed lo, seed hi), counter n in word 0, output word 0.
    let philox = FamilyConfig::new(Family::Philox4x32);
    assert_eq!(philox.output_at(0, 0), 0x6627e8d5);
    let seed = 0x299f31d0_a4093822u64;
    for n in [0u64, 1, 5, 0xFFFF_FFFF, 0x1_0000_0002] {
        let block = philox4x32_10([n as u32, (n >> 32) as u32, 0, 0], [0xa4093822, 0x299f31d0]);
        assert_eq!(philox.output_at(seed, n), block[0] as u64, "n = {n}");
    }
}

#[test]
fn pcg32_reference_demo_from_the_same_state() {
    // pcg32-demo: pcg32_srandom_r(42, 54) then six pcg32_random_r.
    let mult = 6364136223846793005u64;
    let inc = (54u64 << 1) | 1;
    let mut state = 0u64.wrapping_mul(mult).wrapping_add(inc);
    state = state.wrapping_add(42);
    state = state.wrapping_mul(mult).wrapping_add(inc);
    let mut g = Generator::Pcg32 { state, mult, inc };
    let got: Vec<u64> = (0..6).map(|_| g.next_output()).collect();
    assert_eq!(
        got,
        [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e]
    );
    // The family with that increment, seeded with a 32-bit value, is the same generator.
    let family = FamilyConfig::with_params(FamilyParams::Pcg32 { inc, mult }).unwrap();
    let mut from_seed = Generator::Pcg32 {
        state: 7,
        mult,
        inc,
    };
    assert_eq!(
        outputs(&family, 7, 20),
        (0..20).map(|_| from_seed.next_output()).collect::<Vec<_>>()
    );
}

#[test]
fn xoshiro256pp_reference_from_state_1234() {
    let mut g = Generator::Xoshiro256pp { s: [1, 2, 3, 4] };
    assert_eq!(g.next_output(), 41943041); // rotl(1 + 4, 23) + 1
    assert_eq!(g.next_output(), 58720359);
    assert_eq!(g.next_output(), 3588806011781223);
}

/// `name key : values` lines of kat.cpp, keyed by `(name, key)`.
fn kat_lines(text: &str) -> Vec<(String, u64, Vec<u64>)> {
    text.lines()
        .map(|l| {
            let (head, values) = l.split_once(':').unwrap();
            let mut head = head.split_whitespace();
            let name = head.next().unwrap().to_string();
            let key = head.next().unwrap().parse().unwrap();
            (name, key, numbers(values))
        })
        .collect()
}

#[test]
fn real_cpp_generators_and_reference_c_code() {
    let source = include_str!("support/kat.cpp");
    let Some(text) = run_program("g++", "kat.cpp", source, &[]) else {
        return;
    };
    let lines = kat_lines(&text);
    assert!(lines.len() >= 30, "kat.cpp printed too little:\n{text}");
    for (name, key, expected) in lines {
        // Engines print 10 outputs and then the 10000th.
        let engine = |family: FamilyConfig| {
            let mut got = outputs(&family, key, 10);
            got.push(family.output_at(key, 9999));
            got
        };
        let got = match name.as_str() {
            "mt19937" => engine(FamilyConfig::new(Family::Mt19937)),
            "minstd_rand" => engine(FamilyConfig::new(Family::Minstd)),
            "minstd_rand0" => engine(cfg("minstd", &[("a", "16807")])),
            "lcg32_default" => engine(FamilyConfig::new(Family::Lcg32)),
            "lcg32_m0" => engine(cfg("lcg32", &[("m", "0")])),
            "xorshift32" => outputs(&FamilyConfig::new(Family::Xorshift32), key, 10),
            "xor128" => outputs(&FamilyConfig::new(Family::Xorshift128), key, 10),
            "xoshiro256pp_1234" => {
                let mut g = Generator::Xoshiro256pp { s: [1, 2, 3, 4] };
                (0..10).map(|_| g.next_output()).collect()
            }
            "xoshiro256pp" => outputs(&FamilyConfig::new(Family::Xoshiro256pp), key, 10),
            "sfc64" => outputs(&FamilyConfig::new(Family::Sfc64), key, 10),
            "pcg32" => outputs(&FamilyConfig::new(Family::Pcg32), key, 10),
            other => panic!("unexpected kat line {other}"),
        };
        assert_eq!(got, expected, "{name} seed {key}");
    }
}

#[test]
fn real_java_util_random() {
    let source = include_str!("support/JavaRandomKat.java");
    let Some(text) = run_program("javac", "JavaRandomKat.java", source, &[]) else {
        return;
    };
    let java = FamilyConfig::new(Family::JavaLcg);
    let mut checked = 0;
    for line in text.lines() {
        let (x, values) = line.split_once(':').unwrap();
        let x: u64 = x.trim().parse().unwrap();
        let expected = numbers(values);
        assert_eq!(
            outputs(&java, java_seed(x as i64), expected.len()),
            expected,
            "new Random({})",
            x as i64
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
}
