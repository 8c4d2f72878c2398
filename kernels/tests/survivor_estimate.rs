//! The survivor estimate (`seedq_core::estimate`) against counts measured by the CPU backend on
//! random windows, for shapes from tight to loose (the producer refuses jobs on this estimate,
//! so it must hold within a factor of 2 wherever a job keeps at least 1,000 survivors).

mod support;

use seedq_core::estimate;
use seedq_kernels::cpu::CpuBackend;
use seedq_kernels::{Direction, SeedSet, SieveBackend, SkipMode, Strategy};

/// Draws from a fixed xorshift stream (no seed of any family planted).
fn draws(n: usize, salt: u64) -> Vec<u64> {
    let mut x = 0x2545_F491_4F6C_DD1D ^ salt;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x >> 11
        })
        .collect()
}

#[test]
fn estimate_is_within_a_factor_of_two_of_measured_counts() {
    let backend = CpuBackend::new(2);
    let seeds = SeedSet::Range {
        start: 1,
        end: 200_001,
    };
    // (family, window, modulus, skips, threshold, direction, variable skip)
    let shapes = [
        ("lcg32", 8, 10, (0, 3), "0.375", Direction::Forward, false),
        ("xorshift32", 4, 4, (0, 0), "0.5", Direction::Forward, false),
        ("mt19937", 16, 8, (0, 2), "0.25", Direction::Forward, false),
        (
            "pcg32",
            6,
            3,
            (0, 1),
            "0.5",
            Direction::Bidirectional,
            false,
        ),
        (
            "java_lcg",
            2,
            1000,
            (0, 250),
            "0.5",
            Direction::Forward,
            false,
        ),
        (
            "xoshiro256pp",
            10,
            4,
            (0, 4),
            "0.5",
            Direction::Reverse,
            false,
        ),
        ("minstd", 12, 6, (0, 3), "0.25", Direction::Forward, true),
    ];
    let mut report = Vec::new();
    for (name, k, modulus, (lo, hi), threshold, direction, variable) in shapes {
        let mut spec = support::spec(
            support::family(name),
            draws(k, k as u64),
            0,
            lo,
            hi,
            threshold,
        );
        spec.modulus = modulus;
        spec.direction = direction;
        if variable {
            spec.skip_mode = SkipMode::Variable {
                strategies: Strategy::presets(),
            };
        }
        let measured = backend.sieve(&spec, &seeds).unwrap().survivors.len() as f64;
        let e = estimate::survivors(&spec);
        let predicted = e.survivors(seeds.len() as u128);
        report.push(format!(
            "{name:<13} k {k:>2} mod {modulus:>4} skips {lo}..{hi} thr {threshold:<5} {direction:?}{}: predicted {predicted:>9.0} measured {measured:>7}",
            if variable { " variable (upper bound)" } else { "" }
        ));
        if e.upper_bound {
            assert!(
                predicted * 1.05 >= measured,
                "{name}: an upper bound {predicted} below the measured {measured}"
            );
        } else if measured >= 1000.0 {
            let ratio = predicted / measured;
            assert!(
                (0.5..=2.0).contains(&ratio),
                "{name}: predicted {predicted} vs measured {measured} (ratio {ratio:.2})"
            );
        }
    }
    println!("{}", report.join("\n"));
}
