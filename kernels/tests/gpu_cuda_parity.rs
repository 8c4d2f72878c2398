//! The CUDA backend against the reference, on a real NVIDIA GPU (scripts/gpu-check.sh runs
//! this binary on the GPU machine). The tests themselves live in gpu_common, shared with the
//! HIP backend.
//!
//! Built without the `cuda` feature (a plain `cargo test --workspace`), the device tests are
//! listed as ignored with the reason; built with it but without a usable device, they print
//! "skipped:" and why. Either way the fallback test runs: a missing runtime is a clear error
//! and a CPU backend, not a panic.

mod gpu_common;

use gpu_common::CUDA;

#[test]
fn missing_cuda_is_an_error_not_a_panic_and_falls_back_to_cpu() {
    CUDA.missing_runtime_is_an_error_and_falls_back_to_cpu();
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "built without the `cuda` feature; scripts/ci-gpu-toolchain.sh runs the NVRTC/hipcc checks"
)]
fn cuda_matches_reference_on_the_parity_suite() {
    CUDA.matches_reference_on_the_parity_suite();
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "built without the `cuda` feature; scripts/ci-gpu-toolchain.sh runs the NVRTC/hipcc checks"
)]
fn cuda_finds_planted_seeds_in_a_large_range() {
    CUDA.finds_planted_seeds_in_a_large_range();
}
