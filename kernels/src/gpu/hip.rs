//! ROCm backend: gpu/sieve.cu compiled by hipcc at build time (build.rs; one code object per
//! architecture in SEEDQ_HIP_ARCHS, default gfx1030) and launched through hip-sys.
//!
//! hip-sys links libamdhip64, so a binary with this feature needs the HIP runtime library
//! installed (Debian: libamdhip64-5); with no AMD GPU the runtime reports no device and
//! [`HipBackend::open`] returns an error saying so, for the caller to fall back to the CPU.
//!
//! The ROCm environment (HSA_OVERRIDE_GFX_VERSION=10.3.0 for the RX 6600's gfx1032, ...) must be
//! set with [`crate::gpu::apply_rocm_env`] before the first HIP call; this module marks the
//! runtime as touched before its first call so a late attempt is refused.
//!
//! HIP keeps the current device per host thread, so every call sequence starts with
//! hipSetDevice: a backend can be used from any thread (the consumer's GPU slot threads).

use std::ffi::{c_void, CStr};
use std::sync::Mutex;

use hip_sys::hiprt::{self, hipError_t, hipFunction_t, hipModule_t};

use crate::gpu::driver::{
    self, BufferAddresses, LaunchLayout, LaunchResult, LaunchSeeds, Launcher, DEVICE_BLOCK,
};
use crate::gpu::params::PassPlan;
use crate::gpu::DeviceInfo;
use crate::spec::{SeedSet, SieveError, SieveOutcome, SieveSpec};
use crate::SieveBackend;

include!(concat!(env!("OUT_DIR"), "/hip_code_objects.rs"));

/// Compute units the grid is sized for when the runtime reports no plausible count (see
/// `device_info`): the grid-stride loop keeps results right whatever the grid; only speed
/// depends on it.
const FALLBACK_COMPUTE_UNITS: u32 = 16;

fn check(what: &str, rc: hipError_t) -> Result<(), SieveError> {
    if rc == hipError_t::hipSuccess {
        return Ok(());
    }
    // SAFETY: hipGetErrorString returns a static NUL-terminated string for any code.
    let text = unsafe {
        let p = hiprt::hipGetErrorString(rc);
        if p.is_null() {
            format!("{rc:?}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    Err(SieveError::Backend(format!("HIP: {what}: {text} ({rc:?})")))
}

fn device_count() -> Result<usize, SieveError> {
    crate::gpu::mark_hip_touched();
    let mut count = 0i32;
    // SAFETY: plain out-parameter call.
    let rc = unsafe { hiprt::hipGetDeviceCount(&mut count) };
    if rc == hipError_t::hipErrorNoDevice {
        return Ok(0);
    }
    check(
        "counting devices (is the amdgpu/ROCm kernel driver loaded?)",
        rc,
    )?;
    Ok(count.max(0) as usize)
}

/// The HIP devices (empty when the runtime sees none).
pub fn list_devices() -> Result<Vec<DeviceInfo>, SieveError> {
    (0..device_count()?).map(device_info).collect()
}

fn device_info(index: usize) -> Result<DeviceInfo, SieveError> {
    let mut name = [0 as std::ffi::c_char; 256];
    let mut total = 0usize;
    let mut cus = 0i32;
    // SAFETY: out-parameters sized as the API requires.
    unsafe {
        check(
            "device name",
            hiprt::hipDeviceGetName(name.as_mut_ptr(), name.len() as i32, index as i32),
        )?;
        check(
            "device memory",
            hiprt::hipDeviceTotalMem(&mut total, index as i32),
        )?;
        check(
            "compute units",
            hiprt::hipDeviceGetAttribute(
                &mut cus,
                hiprt::hipDeviceAttribute_t::hipDeviceAttributeMultiprocessorCount,
                index as i32,
            ),
        )?;
    }
    // SAFETY: hipDeviceGetName wrote a NUL-terminated string into the buffer.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(DeviceInfo {
        index,
        name,
        total_memory_bytes: total as u64,
        // The attribute numbering differs between ROCm releases; keep the value only if sane.
        compute_units: if (1..=1024).contains(&cus) {
            cus as u32
        } else {
            0
        },
        arch: String::new(),
    })
}

/// Device memory owned by the backend for one launch.
struct DeviceBuffer(*mut c_void);

impl DeviceBuffer {
    fn alloc(bytes: usize) -> Result<DeviceBuffer, SieveError> {
        let mut p: *mut c_void = std::ptr::null_mut();
        // SAFETY: out-parameter; at least 8 bytes so the address is never null.
        check("allocating device memory", unsafe {
            hiprt::hipMalloc(&mut p, bytes.max(8))
        })?;
        Ok(DeviceBuffer(p))
    }

    fn upload<T: Copy>(data: &[T]) -> Result<DeviceBuffer, SieveError> {
        let bytes = std::mem::size_of_val(data);
        let buf = DeviceBuffer::alloc(bytes)?;
        if bytes > 0 {
            // SAFETY: the device buffer holds `bytes`; the host slice is valid for reads.
            check("copying to the device", unsafe {
                hiprt::hipMemcpy(
                    buf.0,
                    data.as_ptr() as *const c_void,
                    bytes,
                    hiprt::hipMemcpyKind::hipMemcpyHostToDevice,
                )
            })?;
        }
        Ok(buf)
    }

    fn zeroed(bytes: usize) -> Result<DeviceBuffer, SieveError> {
        let buf = DeviceBuffer::alloc(bytes)?;
        // SAFETY: the buffer holds at least `bytes`.
        check("clearing device memory", unsafe {
            hiprt::hipMemset(buf.0, 0, bytes.max(8))
        })?;
        Ok(buf)
    }

    fn download<T: Copy + Default>(&self, n: usize) -> Result<Vec<T>, SieveError> {
        let mut out = vec![T::default(); n];
        if n > 0 {
            // SAFETY: the device buffer holds at least n elements of T.
            check("copying from the device", unsafe {
                hiprt::hipMemcpy(
                    out.as_mut_ptr() as *mut c_void,
                    self.0,
                    n * std::mem::size_of::<T>(),
                    hiprt::hipMemcpyKind::hipMemcpyDeviceToHost,
                )
            })?;
        }
        Ok(out)
    }

    fn addr(&self) -> u64 {
        self.0 as u64
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by hipMalloc and freed once.
        unsafe {
            hiprt::hipFree(self.0);
        }
    }
}

/// One AMD GPU running the sieve.
pub struct HipBackend {
    device: usize,
    info: DeviceInfo,
    module: hipModule_t,
    functions: Mutex<Vec<(&'static str, usize)>>,
    /// Survivor slots a launch starts with.
    pub initial_capacity: u64,
}

// SAFETY: the module handle is only used after hipSetDevice on the calling thread, and HIP's
// module and launch APIs are thread-safe.
unsafe impl Send for HipBackend {}

impl HipBackend {
    /// Opens HIP device `device` and loads the embedded code object built for it.
    pub fn open(device: usize) -> Result<HipBackend, SieveError> {
        let count = device_count()?;
        if count == 0 {
            return Err(SieveError::Backend(
                "HIP: no AMD GPU visible to the ROCm runtime (check the amdgpu driver, /dev/kfd permissions and HSA_OVERRIDE_GFX_VERSION)".into(),
            ));
        }
        if device >= count {
            return Err(SieveError::Backend(format!(
                "HIP device {device} does not exist ({count} visible)"
            )));
        }
        // SAFETY: valid ordinal checked above.
        check("selecting the device", unsafe {
            hiprt::hipSetDevice(device as i32)
        })?;
        let mut info = device_info(device)?;
        // The runtime refuses code objects for another ISA: try each embedded architecture.
        let mut errors = Vec::new();
        for (arch, image) in HIP_CODE_OBJECTS {
            let mut module: hipModule_t = std::ptr::null_mut();
            // SAFETY: `image` is a complete code object embedded at build time.
            let rc =
                unsafe { hiprt::hipModuleLoadData(&mut module, image.as_ptr() as *const c_void) };
            if rc == hipError_t::hipSuccess {
                info.arch = arch.to_string();
                return Ok(HipBackend {
                    device,
                    info,
                    module,
                    functions: Mutex::new(Vec::new()),
                    initial_capacity: 1 << 16,
                });
            }
            errors.push(format!("{arch}: {rc:?}"));
        }
        Err(SieveError::Backend(format!(
            "HIP: none of the embedded kernels ({}) loads on device {device} ({}): rebuild with SEEDQ_HIP_ARCHS including its gfx target, or set HSA_OVERRIDE_GFX_VERSION",
            errors.join(", "),
            info.name
        )))
    }

    fn function(&self, name: &'static str) -> Result<hipFunction_t, SieveError> {
        let mut cache = self.functions.lock().expect("HIP function cache lock");
        if let Some((_, f)) = cache.iter().find(|(n, _)| *n == name) {
            return Ok(*f as hipFunction_t);
        }
        let cname = std::ffi::CString::new(name).expect("kernel names have no NUL");
        let mut f: hipFunction_t = std::ptr::null_mut();
        // SAFETY: module loaded in open(); out-parameter.
        check(&format!("finding kernel {name}"), unsafe {
            hiprt::hipModuleGetFunction(&mut f, self.module, cname.as_ptr())
        })?;
        cache.push((name, f as usize));
        Ok(f)
    }
}

impl Drop for HipBackend {
    fn drop(&mut self) {
        // SAFETY: loaded once in open().
        unsafe {
            hiprt::hipSetDevice(self.device as i32);
            hiprt::hipModuleUnload(self.module);
        }
    }
}

impl SieveBackend for HipBackend {
    fn describe(&self) -> String {
        format!(
            "hip:{} ({}, {})",
            self.device, self.info.name, self.info.arch
        )
    }

    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
        driver::sieve(self, spec, seeds)
    }
}

impl Launcher for HipBackend {
    fn max_seeds_per_launch(&self) -> u64 {
        1 << 28
    }

    /// About 2^33 draw evaluations: a few tenths of a second on an RX 6600.
    fn evaluations_per_launch(&self) -> u64 {
        1 << 33
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
        // SAFETY: valid ordinal (checked in open()).
        check("selecting the device", unsafe {
            hiprt::hipSetDevice(self.device as i32)
        })?;
        let function = self.function(plan.kernel)?;
        let grid = driver::device_grid(
            plan,
            seeds.len(),
            self.info.compute_units.max(FALLBACK_COMPUTE_UNITS),
        );
        let layout = LaunchLayout::new(plan, seeds, capacity, grid as u64 * DEVICE_BLOCK as u64);
        let window = DeviceBuffer::upload(layout.window())?;
        let strategies = DeviceBuffer::upload(layout.strategies())?;
        let landings = DeviceBuffer::upload(layout.landings())?;
        let list = layout.seed_list().map(DeviceBuffer::upload).transpose()?;
        let out = DeviceBuffer::alloc(layout.out_slots() * size_of::<u64>())?;
        let counter = DeviceBuffer::zeroed(size_of::<u64>())?;
        let scratch = match layout.scratch_words() {
            0 => None,
            words => Some(DeviceBuffer::alloc(words * size_of::<u32>())?),
        };
        let mut params = layout.params(&BufferAddresses {
            window: window.addr(),
            strategies: strategies.addr(),
            landings: landings.addr(),
            seed_list: list.as_ref().map_or(0, DeviceBuffer::addr),
            out_seeds: out.addr(),
            out_count: counter.addr(),
            scratch: scratch.as_ref().map_or(0, DeviceBuffer::addr),
        });
        let mut args: [*mut c_void; 1] = [&mut params as *mut _ as *mut c_void];
        // SAFETY: one kernel argument (SeedqParams by value); every address in it points to a
        // live device buffer of the documented size until the synchronize below.
        unsafe {
            check(
                &format!("launching {}", plan.kernel),
                hiprt::hipModuleLaunchKernel(
                    function,
                    grid,
                    1,
                    1,
                    DEVICE_BLOCK,
                    1,
                    1,
                    0,
                    std::ptr::null_mut(),
                    args.as_mut_ptr(),
                    std::ptr::null_mut(),
                ),
            )?;
            check("waiting for the kernel", hiprt::hipDeviceSynchronize())?;
        }
        let count = counter.download::<u64>(1)?[0];
        let seeds_out = out.download::<u64>(layout.survivors_stored(count))?;
        Ok(LaunchResult {
            count,
            seeds: seeds_out,
        })
    }
}
