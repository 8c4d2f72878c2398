//! The CUDA backend against the reference, on a real NVIDIA GPU (scripts/gpu-check.sh runs
//! this binary on the GPU machine). Without a usable device each test says "skipped" and why;
//! what can be checked without one is: no panic, a clear error, and the CPU fallback.
#![cfg(feature = "cuda")]

use seedq_kernels::gpu::{self, parity};
use seedq_kernels::{SeedSet, SieveBackend};

fn device_or_skip() -> Option<Box<dyn SieveBackend>> {
    let device = std::env::var("SEEDQ_CUDA_DEVICE")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    match gpu::open_backend("cuda", device) {
        Ok(backend) => Some(backend),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

#[test]
fn missing_cuda_is_an_error_not_a_panic_and_falls_back_to_cpu() {
    let devices = gpu::list_devices("cuda");
    println!("CUDA devices: {devices:?}");
    if devices.as_ref().is_ok_and(|d| !d.is_empty()) {
        return;
    }
    let error = gpu::open_backend("cuda", 0)
        .err()
        .expect("opening a device that is not there fails");
    assert!(
        error.to_string().contains("CUDA"),
        "the error names CUDA: {error}"
    );
    let fallback = gpu::open_or_cpu("cuda", 0, 1);
    assert!(
        fallback.describe().starts_with("cpu"),
        "fell back to {}",
        fallback.describe()
    );
}

#[test]
fn cuda_matches_reference_on_the_parity_suite() {
    let Some(backend) = device_or_skip() else {
        return;
    };
    let scale = std::env::var("SEEDQ_PARITY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let cases = parity::cases(scale);
    let report = parity::run(backend.as_ref(), &cases);
    println!(
        "{}: {} of {} parity cases passed",
        backend.describe(),
        report.passed,
        cases.len()
    );
    assert!(
        report.failures.is_empty(),
        "failures:\n{}",
        report.failures.join("\n")
    );
}

#[test]
fn cuda_finds_planted_seeds_in_a_large_range() {
    let Some(backend) = device_or_skip() else {
        return;
    };
    // mt19937 exact search over 2^28 seeds with the seed planted near the end.
    let cfg = seedq_kernels::FamilyConfig::new(seedq_kernels::Family::Mt19937);
    let planted = (1u64 << 28) - 12345;
    let draws: Vec<u64> = (0..8).map(|i| cfg.output_at(planted, i) % 1000).collect();
    let spec = seedq_kernels::SieveSpec {
        family: cfg,
        draws,
        modulus: 1000,
        offset: 0,
        skip_min: 0,
        skip_max: 0,
        threshold: seedq_kernels::Threshold::parse("1").unwrap(),
        reverse_threshold: None,
        direction: seedq_kernels::Direction::Forward,
        skip_mode: seedq_kernels::SkipMode::Constant,
    };
    let out = backend
        .sieve(
            &spec,
            &SeedSet::Range {
                start: 0,
                end: 1 << 28,
            },
        )
        .unwrap();
    assert!(
        out.survivors.iter().any(|s| s.seed == planted),
        "planted seed not found: {:?}",
        out.survivors
    );
}
