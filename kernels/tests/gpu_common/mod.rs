//! The device tests the CUDA and HIP backends share (kernels/tests/gpu_cuda_parity.rs and
//! gpu_hip_parity.rs): a missing runtime or device is an error and a CPU fallback, never a
//! panic; the fixed parity suite matches the reference; a seed planted near the end of a large
//! range is found.
//!
//! The test binaries always compile, with or without their cargo feature, so a plain
//! `cargo test --workspace` lists the device tests as ignored with the reason instead of
//! silently leaving them out. A test that needs a device and has none prints "skipped: ..."
//! and why (scripts/gpu-check.sh counts such a line as a failure on a GPU machine).
// Each test binary uses the runtime it tests and leaves the other.
#![allow(dead_code)]

use seedq_kernels::gpu::{self, parity};
use seedq_kernels::{
    Direction, Family, FamilyConfig, SeedSet, SieveBackend, SieveSpec, SkipMode, Threshold,
};

/// One GPU runtime as its tests see it.
pub struct GpuRuntime {
    /// What [`gpu::open_backend`] takes.
    pub kind: gpu::Backend,
    /// How its errors and logs name it: `"CUDA"` or `"HIP"`.
    pub label: &'static str,
    /// The cargo feature that builds it.
    pub feature: &'static str,
    /// Whether this test binary was built with [`Self::feature`].
    pub built: bool,
    /// Environment variable choosing the device ordinal (default 0).
    pub device_env: &'static str,
}

pub const CUDA: GpuRuntime = GpuRuntime {
    kind: gpu::Backend::Cuda,
    label: "CUDA",
    feature: "cuda",
    built: cfg!(feature = "cuda"),
    device_env: "SEEDQ_CUDA_DEVICE",
};

pub const HIP: GpuRuntime = GpuRuntime {
    kind: gpu::Backend::Hip,
    label: "HIP",
    feature: "rocm",
    built: cfg!(feature = "rocm"),
    device_env: "SEEDQ_HIP_DEVICE",
};

impl GpuRuntime {
    /// Prints why a test cannot run in a binary built without the feature. (The tests are
    /// also `#[ignore]`d then; this covers `--include-ignored`.)
    pub fn report_not_built(&self) {
        println!(
            "skipped: built without the `{}` feature; scripts/ci-gpu-toolchain.sh runs the NVRTC/hipcc checks",
            self.feature
        );
    }

    /// The device under test, or `None` after printing why there is none.
    pub fn device_or_skip(&self) -> Option<Box<dyn SieveBackend>> {
        if !self.built {
            self.report_not_built();
            return None;
        }
        let device = std::env::var(self.device_env)
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        match gpu::open_backend(self.kind, device) {
            Ok(backend) => Some(backend),
            Err(e) => {
                println!("skipped: no {} device ({e})", self.label);
                None
            }
        }
    }

    /// Without a usable runtime (feature not built, library or device missing) opening a
    /// device is an error that names the cause, and [`gpu::open_or_cpu`] falls back to the CPU.
    pub fn missing_runtime_is_an_error_and_falls_back_to_cpu(&self) {
        let devices = gpu::list_devices(self.kind);
        println!("{} devices: {devices:?}", self.label);
        if devices.as_ref().is_ok_and(|d| !d.is_empty()) {
            return;
        }
        let error = gpu::open_backend(self.kind, 0)
            .err()
            .expect("opening a device that is not there fails");
        let cause = if self.built {
            self.label.to_string()
        } else {
            format!("`{}` feature", self.feature)
        };
        assert!(
            error.to_string().contains(&cause),
            "the error names {cause}: {error}"
        );
        let fallback = gpu::open_or_cpu(self.kind, 0, 1);
        assert!(
            fallback.describe().starts_with("cpu"),
            "fell back to {}",
            fallback.describe()
        );
    }

    /// The fixed parity suite (`SEEDQ_PARITY_SCALE` times the shim's seed counts, default 64)
    /// on the device, against the reference.
    pub fn matches_reference_on_the_parity_suite(&self) {
        let Some(backend) = self.device_or_skip() else {
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

    /// An exact mt19937 search over 2^28 seeds finds the seed planted near the end.
    pub fn finds_planted_seeds_in_a_large_range(&self) {
        let Some(backend) = self.device_or_skip() else {
            return;
        };
        let cfg = FamilyConfig::new(Family::Mt19937);
        let planted = (1u64 << 28) - 12345;
        let draws: Vec<u64> = (0..8).map(|i| cfg.output_at(planted, i) % 1000).collect();
        let spec = SieveSpec {
            family: cfg,
            draws,
            modulus: 1000,
            offset: 0,
            offset_max: None,
            skip_min: 0,
            skip_max: 0,
            threshold: Threshold::parse("1").unwrap(),
            reverse_threshold: None,
            direction: Direction::Forward,
            skip_mode: SkipMode::Constant,
        };
        let seeds = SeedSet::Range {
            start: 0,
            end: 1 << 28,
        };
        let out = backend.sieve(&spec, &seeds).unwrap();
        assert!(
            out.survivors.iter().any(|s| s.seed == planted),
            "planted seed not found: {:?}",
            out.survivors
        );
    }
}
