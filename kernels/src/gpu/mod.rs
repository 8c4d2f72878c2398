//! GPU backends: the sieve kernels of `kernels/gpu/sieve.cu` on CUDA (cudarc, feature `cuda`),
//! on ROCm (hip-sys, feature `rocm`), and on the CPU through the host shim (feature `shim`; the
//! proof that the kernel source agrees with the reference on machines without a GPU).
//!
//! All three share [`driver`]: seed sets split into launches, each launch's buffers and kernel
//! parameters ([`driver::LaunchLayout`]), survivor buffer overflow handled by an exact-size
//! re-run, the bidirectional reverse pass launched on forward survivors, and the survivors
//! completed (best skip, strategy, skip pattern) by the reference's per-seed evaluation, which
//! must confirm every one of them. A backend only moves memory and starts kernels.
//!
//! Callers use [`open_backend`] and [`list_devices`] with a [`Backend`]; both report a missing
//! driver, library or device as an error naming the cause, so a consumer can log it and fall
//! back to the CPU ([`open_or_cpu`] does exactly that).

// Device sizing, launch parameters and the NVRTC source serve the CUDA/HIP backends: without a
// GPU feature some of their items have no caller.
#[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(dead_code))]
pub(crate) mod driver;
pub(crate) mod linear;
#[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(dead_code))]
pub(crate) mod params;
pub mod parity;
#[cfg(feature = "shim")]
pub mod shim;
/// The single-file CUDA source and NVRTC options (public for the `gpu_source` example, which
/// hands them to scripts/gpu-estimate.sh).
pub mod source;

pub use params::{all_kernel_names, kernel_name};
pub use seedq_core::Backend;

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
    /// The driver's device name (e.g. `NVIDIA H200`, `AMD Radeon RX 6600`).
    pub name: String,
    /// Device memory in bytes.
    pub total_memory_bytes: u64,
    /// Streaming multiprocessors (CUDA) or compute units (ROCm).
    pub compute_units: u32,
    /// e.g. `sm_90` or `gfx1030`.
    pub arch: String,
}

/// Opens device `device` of GPU backend `kind` (CUDA or HIP).
// Without a GPU feature no arm opens anything, so the device goes unused.
#[cfg_attr(not(any(feature = "cuda", feature = "rocm")), allow(unused_variables))]
pub fn open_backend(kind: Backend, device: usize) -> Result<Box<dyn SieveBackend>, SieveError> {
    match kind {
        #[cfg(feature = "cuda")]
        Backend::Cuda => Ok(Box::new(cuda::CudaBackend::open(device)?)),
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => Err(not_built("cuda")),
        #[cfg(feature = "rocm")]
        Backend::Hip => Ok(Box::new(hip::HipBackend::open(device)?)),
        #[cfg(not(feature = "rocm"))]
        Backend::Hip => Err(not_built("rocm")),
        Backend::Cpu => Err(not_a_gpu()),
    }
}

/// The host shim as a backend (the kernel source run on the CPU, for benches and parity), or
/// an error naming the feature when this build left it out.
pub fn open_shim() -> Result<Box<dyn SieveBackend>, SieveError> {
    #[cfg(feature = "shim")]
    return Ok(Box::new(shim::ShimBackend::default()));
    #[cfg(not(feature = "shim"))]
    return Err(not_built("shim"));
}

/// The devices of GPU backend `kind`. An empty list means the runtime works but sees no
/// device; an error names why the runtime itself is unusable (feature not built, library
/// missing).
pub fn list_devices(kind: Backend) -> Result<Vec<DeviceInfo>, SieveError> {
    match kind {
        #[cfg(feature = "cuda")]
        Backend::Cuda => cuda::list_devices(),
        #[cfg(not(feature = "cuda"))]
        Backend::Cuda => Err(not_built("cuda")),
        #[cfg(feature = "rocm")]
        Backend::Hip => hip::list_devices(),
        #[cfg(not(feature = "rocm"))]
        Backend::Hip => Err(not_built("rocm")),
        Backend::Cpu => Err(not_a_gpu()),
    }
}

/// [`open_backend`], or the CPU backend with `cpu_threads` threads when the GPU cannot be used,
/// with a log line saying why.
pub fn open_or_cpu(kind: Backend, device: usize, cpu_threads: usize) -> Box<dyn SieveBackend> {
    match open_backend(kind, device) {
        Ok(backend) => backend,
        Err(e) => {
            tracing::warn!(backend = %kind, device, error = %e, "GPU backend unavailable; falling back to the CPU backend");
            Box::new(crate::cpu::CpuBackend::new(cpu_threads))
        }
    }
}

fn not_a_gpu() -> SieveError {
    SieveError::Backend(
        "cpu is not a GPU backend: use cpu::CpuBackend (expected cuda or hip)".into(),
    )
}

#[cfg(not(all(feature = "cuda", feature = "rocm", feature = "shim")))]
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
