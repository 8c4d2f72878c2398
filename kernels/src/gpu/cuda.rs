//! CUDA backend: gpu/sieve.cu compiled at run time by NVRTC and launched through cudarc.
//!
//! cudarc is built with dynamic loading, so a binary with this feature builds and starts on a
//! machine without CUDA. cudarc panics when it cannot load a library, so [`probe`] checks that
//! the driver (libcuda) and NVRTC (libnvrtc) can be loaded before any other cudarc call, and
//! every cudarc call runs under `catch_unwind` (an old driver missing a symbol also panics).
//! Failures become [`SieveError::Backend`] naming the cause; callers fall back to the CPU.
//!
//! NVRTC compiles each family's kernels once per process and compute capability (PTX cached in
//! a process-wide table); each backend loads that PTX once into its device's context.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use rayon::prelude::*;

use crate::family::Family;
use crate::gpu::driver::{
    self, BufferAddresses, LaunchLayout, LaunchResult, LaunchSeeds, Launcher, DEVICE_BLOCK,
};
use crate::gpu::params::{PassPlan, SeedqParams};
use crate::gpu::source;
use crate::gpu::DeviceInfo;
use crate::spec::{SeedSet, SieveError, SieveOutcome, SieveSpec};
use crate::SieveBackend;

// SAFETY: SeedqParams is #[repr(C)], plain integers, and mirrors the kernel's parameter struct.
unsafe impl DeviceRepr for SeedqParams {}

fn backend_error(what: &str, e: impl std::fmt::Display) -> SieveError {
    SieveError::Backend(format!("CUDA: {what}: {e}"))
}

/// Runs a cudarc call, turning both its errors and its panics into a [`SieveError`].
fn guarded<T, E: std::fmt::Display>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, SieveError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(backend_error(what, e)),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(backend_error(what, msg))
        }
    }
}

/// Whether the CUDA driver and NVRTC libraries can be loaded; the error says which is missing
/// and what to do. Calls nothing in them.
pub fn probe() -> Result<(), SieveError> {
    // SAFETY: only tries dlopen on the candidate library names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(SieveError::Backend(
            "CUDA driver library (libcuda.so.1) not found: no NVIDIA driver on this machine, or it is not on the loader path".into(),
        ));
    }
    probe_nvrtc()
}

/// The CUDA devices, or why CUDA is unusable here.
pub fn list_devices() -> Result<Vec<DeviceInfo>, SieveError> {
    probe()?;
    let count = guarded("counting devices", CudaContext::device_count)?;
    (0..count.max(0) as usize)
        .map(|i| {
            let ctx = guarded("opening device", || CudaContext::new(i))?;
            device_info(&ctx)
        })
        .collect()
}

fn device_info(ctx: &Arc<CudaContext>) -> Result<DeviceInfo, SieveError> {
    let (major, minor) = guarded("compute capability", || ctx.compute_capability())?;
    Ok(DeviceInfo {
        index: ctx.ordinal(),
        name: guarded("device name", || ctx.name())?,
        total_memory_bytes: guarded("device memory", || ctx.total_mem())? as u64,
        compute_units: guarded("SM count", || {
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        })? as u32,
        arch: format!("sm_{major}{minor}"),
    })
}

/// NVRTC output, once per process per (family, compute capability).
type PtxCache = Mutex<HashMap<(Family, u32, u32), Arc<String>>>;

fn ptx_for(family: Family, major: u32, minor: u32) -> Result<Arc<String>, SieveError> {
    static CACHE: OnceLock<PtxCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(ptx) = cache
        .lock()
        .expect("PTX cache lock")
        .get(&(family, major, minor))
    {
        return Ok(ptx.clone());
    }
    let ptx = Arc::new(compile_family(family, major, minor)?);
    cache
        .lock()
        .expect("PTX cache lock")
        .insert((family, major, minor), ptx.clone());
    Ok(ptx)
}

/// Compiles one family's kernels to PTX with NVRTC (also used by the compile-check test).
pub fn compile_family(family: Family, major: u32, minor: u32) -> Result<String, SieveError> {
    probe_nvrtc()?;
    let opts = CompileOptions {
        options: source::nvrtc_options(family, major, minor),
        name: Some(format!("sieve_{}.cu", family.name())),
        ..Default::default()
    };
    let ptx = guarded(&format!("NVRTC compiling the {family} kernels"), || {
        compile_ptx_with_opts(source::cuda_source(), opts)
    })?;
    Ok(ptx.to_src())
}

/// Whether NVRTC can be loaded (compiling needs no driver and no GPU).
pub fn probe_nvrtc() -> Result<(), SieveError> {
    // SAFETY: only tries dlopen on the candidate library names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(SieveError::Backend(
            "NVRTC (libnvrtc.so.12) not found: install the CUDA toolkit's NVRTC (or the PyPI wheel nvidia-cuda-nvrtc-cu12) and add its lib directory to LD_LIBRARY_PATH".into(),
        ));
    }
    Ok(())
}

/// One CUDA device running the sieve.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    cc: (u32, u32),
    modules: Mutex<HashMap<Family, Arc<CudaModule>>>,
    /// Survivor slots a launch starts with.
    pub initial_capacity: u64,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", &self.info)
            .finish()
    }
}

impl CudaBackend {
    /// Opens CUDA device `ordinal` (explicitly: one backend per slot and GPU).
    pub fn open(ordinal: usize) -> Result<CudaBackend, SieveError> {
        probe()?;
        let count = guarded("counting devices", CudaContext::device_count)?;
        if ordinal >= count.max(0) as usize {
            return Err(SieveError::Backend(format!(
                "CUDA device {ordinal} does not exist ({count} device(s) visible)"
            )));
        }
        let ctx = guarded("opening device", || CudaContext::new(ordinal))?;
        let info = device_info(&ctx)?;
        let (major, minor) = guarded("compute capability", || ctx.compute_capability())?;
        let stream = ctx.default_stream();
        let backend = CudaBackend {
            ctx,
            stream,
            info,
            cc: (major as u32, minor as u32),
            modules: Mutex::new(HashMap::new()),
            initial_capacity: 1 << 16,
        };
        backend.preload()?;
        Ok(backend)
    }

    /// Compiles (in parallel, once per process) and loads every family's kernels, so that
    /// compile errors surface when the slot opens and no job pays for NVRTC.
    fn preload(&self) -> Result<(), SieveError> {
        let (major, minor) = self.cc;
        Family::ALL
            .par_iter()
            .map(|f| ptx_for(*f, major, minor).map(|_| ()))
            .collect::<Result<(), _>>()?;
        for family in Family::ALL {
            self.module(family)?;
        }
        Ok(())
    }

    /// The device this backend drives.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn module(&self, family: Family) -> Result<Arc<CudaModule>, SieveError> {
        let mut modules = self.modules.lock().expect("module cache lock");
        if let Some(m) = modules.get(&family) {
            return Ok(m.clone());
        }
        let ptx = ptx_for(family, self.cc.0, self.cc.1)?;
        let module = guarded(&format!("loading the {family} PTX"), || {
            self.ctx.load_module(Ptx::from_src(ptx.as_str()))
        })?;
        modules.insert(family, module.clone());
        Ok(module)
    }

    fn function(&self, family: Family, kernel: &str) -> Result<CudaFunction, SieveError> {
        let module = self.module(family)?;
        guarded(&format!("loading kernel {kernel}"), || {
            module.load_function(kernel)
        })
    }
}

impl SieveBackend for CudaBackend {
    fn describe(&self) -> String {
        format!(
            "cuda:{} ({}, {})",
            self.info.index, self.info.name, self.info.arch
        )
    }

    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
        driver::sieve(self, spec, seeds)
    }
}

impl Launcher for CudaBackend {
    fn max_seeds_per_launch(&self) -> u64 {
        1 << 30
    }

    /// About 2^36 draw evaluations: ~0.1 s on an H200, under a second on an RTX 3080 Ti.
    fn evaluations_per_launch(&self) -> u64 {
        1 << 36
    }

    fn initial_capacity(&self) -> u64 {
        self.initial_capacity
    }

    fn launch(
        &self,
        plan: &PassPlan,
        seeds: LaunchSeeds<'_>,
        capacity: u64,
    ) -> Result<LaunchResult, SieveError> {
        let function = self.function(plan.family, plan.kernel)?;
        let stream = &self.stream;
        let grid = driver::device_grid(plan, seeds.len(), self.info.compute_units.max(1));
        let layout = LaunchLayout::new(plan, seeds, capacity, grid as u64 * DEVICE_BLOCK as u64);
        guarded(
            "sieve launch",
            || -> Result<LaunchResult, cudarc::driver::DriverError> {
                let window = stream.clone_htod(layout.window())?;
                let strategies = stream.clone_htod(layout.strategies())?;
                let landings = stream.clone_htod(layout.landings())?;
                let list = layout
                    .seed_list()
                    .map(|list| stream.clone_htod(list))
                    .transpose()?;
                let out = stream.alloc_zeros::<u64>(layout.out_slots())?;
                let counter = stream.alloc_zeros::<u64>(1)?;
                // One word when unused: cuMemAlloc rejects zero-byte allocations.
                let scratch = stream.alloc_zeros::<u32>(layout.scratch_words().max(1))?;
                let params = layout.params(&BufferAddresses {
                    window: window.device_ptr(stream).0,
                    strategies: strategies.device_ptr(stream).0,
                    landings: landings.device_ptr(stream).0,
                    seed_list: list.as_ref().map_or(0, |list| list.device_ptr(stream).0),
                    out_seeds: out.device_ptr(stream).0,
                    out_count: counter.device_ptr(stream).0,
                    scratch: scratch.device_ptr(stream).0,
                });
                let cfg = LaunchConfig {
                    grid_dim: (grid, 1, 1),
                    block_dim: (DEVICE_BLOCK, 1, 1),
                    shared_mem_bytes: 0,
                };
                let mut builder = stream.launch_builder(&function);
                builder.arg(&params);
                // SAFETY: the kernel reads/writes exactly the buffers whose addresses are in
                // `params`, all sized as documented in sieve.cu and alive until synchronize.
                unsafe { builder.launch(cfg) }?;
                stream.synchronize()?;
                let count = stream.clone_dtoh(&counter)?[0];
                let mut seeds_out = stream.clone_dtoh(&out)?;
                seeds_out.truncate(layout.survivors_stored(count));
                drop((window, strategies, landings, scratch, list));
                Ok(LaunchResult {
                    count,
                    seeds: seeds_out,
                })
            },
        )
    }
}
