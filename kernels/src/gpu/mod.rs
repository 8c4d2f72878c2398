//! GPU backends: the sieve kernels of `kernels/gpu/sieve.cu` on CUDA (cudarc, feature `cuda`),
//! on ROCm (hip-sys, feature `rocm`), and on the CPU through the host shim (always built; the
//! proof that the kernel source agrees with the reference on machines without a GPU).
//!
//! All three share [`driver`]: seed sets split into launches, each launch's buffers and kernel
//! parameters ([`driver::LaunchLayout`]), survivor buffer overflow handled by an exact-size
//! re-run, the bidirectional reverse pass launched on forward survivors, and the survivors
//! completed (best skip, strategy, skip pattern) by the reference's per-seed evaluation, which
//! must confirm every one of them. A backend only moves memory and starts kernels.
//!
//! Callers use [`open_backend`] and [`list_devices`]; both report a missing driver, library or
//! device as an error naming the cause, so a consumer can log it and fall back to the CPU
//! ([`open_or_cpu`] does exactly that).

pub mod driver;
pub mod linear;
pub mod params;
pub mod parity;
pub mod shim;
pub mod source;

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "rocm")]
pub mod hip;

use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::spec::SieveError;
use crate::SieveBackend;

/// One GPU as a backend sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Ordinal within its backend (what [`open_backend`] takes).
    pub index: usize,
    pub name: String,
    pub total_memory_bytes: u64,
    /// Streaming multiprocessors (CUDA) or compute units (ROCm).
    pub compute_units: u32,
    /// e.g. `sm_90` or `gfx1030`.
    pub arch: String,
}

/// Opens device `device` of backend `kind`: `"cuda"`, `"hip"` (alias `"rocm"`) or `"shim"`.
// Without a GPU feature only the shim arm remains, which has no device to choose.
#[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(unused_variables))]
pub fn open_backend(kind: &str, device: usize) -> Result<Box<dyn SieveBackend>, SieveError> {
    match kind {
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Box::new(cuda::CudaBackend::open(device)?)),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(not_built("cuda")),
        #[cfg(feature = "rocm")]
        "hip" | "rocm" => Ok(Box::new(hip::HipBackend::open(device)?)),
        #[cfg(not(feature = "rocm"))]
        "hip" | "rocm" => Err(not_built("rocm")),
        "shim" => Ok(Box::new(shim::ShimBackend::default())),
        other => Err(unknown_backend(other)),
    }
}

/// The devices of backend `kind`. An empty list means the runtime works but sees no device;
/// an error names why the runtime itself is unusable (feature not built, library missing).
pub fn list_devices(kind: &str) -> Result<Vec<DeviceInfo>, SieveError> {
    match kind {
        #[cfg(feature = "cuda")]
        "cuda" => cuda::list_devices(),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err(not_built("cuda")),
        #[cfg(feature = "rocm")]
        "hip" | "rocm" => hip::list_devices(),
        #[cfg(not(feature = "rocm"))]
        "hip" | "rocm" => Err(not_built("rocm")),
        "shim" => Ok(vec![DeviceInfo {
            index: 0,
            name: "host shim (CPU)".to_string(),
            total_memory_bytes: 0,
            compute_units: std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            arch: "host".to_string(),
        }]),
        other => Err(unknown_backend(other)),
    }
}

/// [`open_backend`], or the CPU backend with `cpu_threads` threads when the GPU cannot be used,
/// with a log line saying why.
pub fn open_or_cpu(kind: &str, device: usize, cpu_threads: usize) -> Box<dyn SieveBackend> {
    match open_backend(kind, device) {
        Ok(backend) => backend,
        Err(e) => {
            tracing::warn!(backend = kind, device, error = %e, "GPU backend unavailable; falling back to the CPU backend");
            Box::new(crate::cpu::CpuBackend::new(cpu_threads))
        }
    }
}

fn unknown_backend(kind: &str) -> SieveError {
    SieveError::Backend(format!(
        "unknown GPU backend '{kind}' (expected cuda, hip or shim)"
    ))
}

#[cfg(not(all(feature = "cuda", feature = "rocm")))]
fn not_built(feature: &str) -> SieveError {
    SieveError::Backend(format!(
        "this binary was built without the `{feature}` feature: rebuild with `--features {feature}`"
    ))
}

/// Set once the first HIP runtime call is made: the ROCm environment must be in place before.
static HIP_TOUCHED: AtomicBool = AtomicBool::new(false);

/// Marks the HIP runtime as initialised (called by the HIP backend before its first call).
#[cfg(feature = "rocm")]
pub(crate) fn mark_hip_touched() {
    HIP_TOUCHED.store(true, Ordering::SeqCst);
}

/// Sets the node's ROCm environment (HSA_OVERRIDE_GFX_VERSION, HSA_ENABLE_SDMA, ROCM_PATH,
/// HIP_PATH, ...) for this process. The HIP runtime reads these once, when it initialises, so
/// this must run before the first HIP call (call it at start-up, before worker threads exist);
/// afterwards it refuses rather than silently having no effect.
pub fn apply_rocm_env(vars: &[(String, String)]) -> Result<(), SieveError> {
    if HIP_TOUCHED.load(Ordering::SeqCst) {
        return Err(SieveError::Backend(
            "ROCm environment must be applied before the first HIP call; the HIP runtime is already initialised".into(),
        ));
    }
    for (name, value) in vars {
        if name.is_empty() || name.contains('=') || name.contains('\0') || value.contains('\0') {
            return Err(SieveError::Backend(format!(
                "invalid environment variable name or value: {name:?}"
            )));
        }
        std::env::set_var(name, value);
    }
    Ok(())
}
