//! The ROCm (HIP) backend against the reference, on a real AMD GPU (run this test binary on a
//! ROCm rig), plus what needs no GPU: the code objects hipcc built into the library. The device
//! tests live in gpu_common, shared with the CUDA backend.
//!
//! Built without the `rocm` feature (a plain `cargo test --workspace`), the tests that need it
//! are listed as ignored with the reason; built with it but without a usable device, the device
//! tests print "skipped:" and why. Either way the fallback test runs: a missing runtime is a
//! clear error and a CPU backend, not a panic.

mod gpu_common;

use gpu_common::HIP;

#[test]
fn missing_hip_is_an_error_not_a_panic_and_falls_back_to_cpu() {
    HIP.missing_runtime_is_an_error_and_falls_back_to_cpu();
}

#[test]
#[cfg_attr(
    not(feature = "rocm"),
    ignore = "built without the `rocm` feature; scripts/ci-gpu-toolchain.sh runs the NVRTC/hipcc checks"
)]
fn hip_matches_reference_on_the_parity_suite() {
    HIP.matches_reference_on_the_parity_suite();
}

#[test]
#[cfg_attr(
    not(feature = "rocm"),
    ignore = "built without the `rocm` feature; scripts/ci-gpu-toolchain.sh runs the NVRTC/hipcc checks"
)]
fn hip_finds_planted_seeds_in_a_large_range() {
    HIP.finds_planted_seeds_in_a_large_range();
}

#[test]
#[cfg_attr(
    not(feature = "rocm"),
    ignore = "built without the `rocm` feature; scripts/ci-gpu-toolchain.sh runs the NVRTC/hipcc checks"
)]
fn embedded_code_objects_hold_every_kernel() {
    #[cfg(feature = "rocm")]
    check_embedded_code_objects();
    #[cfg(not(feature = "rocm"))]
    HIP.report_not_built();
}

/// Every architecture's code object is an ELF with a kernel descriptor per entry point, and
/// hipcc's resource report shows every kernel without scratch (no register spills).
#[cfg(feature = "rocm")]
fn check_embedded_code_objects() {
    use seedq_kernels::gpu;
    assert!(!gpu::hip::HIP_CODE_OBJECTS.is_empty());
    for (arch, image) in gpu::hip::HIP_CODE_OBJECTS {
        assert_eq!(&image[..4], b"\x7fELF", "{arch}: not an ELF code object");
        for name in gpu::all_kernel_names() {
            let needle = format!("{name}.kd");
            assert!(
                image.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{arch}: no kernel descriptor {needle}"
            );
        }
        println!(
            "hip {arch}: code object {} bytes, {} kernels",
            image.len(),
            gpu::all_kernel_names().len()
        );
    }
    println!("hipcc resource report:\n{}", gpu::hip::HIP_RESOURCE_REPORT);
    for name in gpu::all_kernel_names() {
        assert!(
            gpu::hip::HIP_RESOURCE_REPORT.contains(&format!(" {name} ")),
            "no resource line for {name}"
        );
    }
    let spilling: Vec<&str> = gpu::hip::HIP_RESOURCE_REPORT
        .lines()
        .filter(|l| !l.contains("scratch   0 B/lane"))
        .collect();
    assert!(
        spilling.is_empty(),
        "kernels using scratch (spills): {spilling:?}"
    );
}
