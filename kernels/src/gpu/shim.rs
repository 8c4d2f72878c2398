//! The host shim: the GPU kernel source (gpu/sieve.cu) compiled as C++ and run on the CPU over
//! an emulated grid (gpu/shim.cpp, built by build.rs).
//!
//! It exists to prove the kernels on machines without a GPU: the same source, the same launch
//! parameters, the same warp-aggregated survivor compaction and overflow handling as on a
//! device, compared with the reference in kernels/tests/gpu_shim_parity.rs. It is correct but
//! not fast (one OS thread per emulated GPU thread); use the CPU backend for real work.

use std::ffi::CString;

use crate::gpu::driver::{
    self, BufferAddresses, LaunchLayout, LaunchResult, LaunchSeeds, Launcher,
};
use crate::gpu::params::{PassPlan, SeedqParams};
use crate::spec::{SeedSet, SieveError, SieveOutcome, SieveSpec};
use crate::SieveBackend;

extern "C" {
    fn seedq_shim_launch(
        name: *const std::ffi::c_char,
        grid: u32,
        block: u32,
        params: *const SeedqParams,
    ) -> i32;
    fn seedq_shim_params_size() -> u64;
    fn seedq_shim_params_offsets(out: *mut u64, cap: u64) -> u64;
}

/// Size in bytes of the kernel's `SeedqParams` as the C++ compiler laid it out.
pub fn kernel_params_size() -> u64 {
    // SAFETY: a pure function of the compiled struct layout.
    unsafe { seedq_shim_params_size() }
}

/// `offsetof` of every field of the kernel's `SeedqParams`, in declaration order, as the C++
/// compiler laid it out.
pub fn kernel_params_offsets() -> Vec<u64> {
    let mut out = vec![0u64; 64];
    // SAFETY: the callee writes at most `cap` = out.len() entries into `out`.
    let n = unsafe { seedq_shim_params_offsets(out.as_mut_ptr(), out.len() as u64) };
    out.truncate(n as usize);
    out
}

/// Runs gpu/sieve.cu on the CPU through the emulated grid.
#[derive(Debug, Clone)]
pub struct ShimBackend {
    /// Emulated blocks per launch.
    pub grid: u32,
    /// Emulated threads per block (a multiple of 32: whole warps; at most 256, the block size
    /// the kernels' shared arrays are sized for).
    pub block: u32,
    /// Survivor slots a launch starts with (tiny values exercise the overflow re-run).
    pub initial_capacity: u64,
    /// Seeds per launch.
    pub max_seeds_per_launch: u64,
}

impl Default for ShimBackend {
    fn default() -> Self {
        ShimBackend {
            grid: 2,
            block: 64,
            initial_capacity: 1024,
            max_seeds_per_launch: 1 << 16,
        }
    }
}

impl ShimBackend {
    /// The shim with its default grid (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }
}

impl SieveBackend for ShimBackend {
    fn describe(&self) -> String {
        format!(
            "gpu-shim (sieve.cu on the CPU, {}x{} emulated threads)",
            self.grid, self.block
        )
    }

    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
        driver::sieve(self, spec, seeds)
    }
}

impl Launcher for ShimBackend {
    fn max_seeds_per_launch(&self) -> u64 {
        self.max_seeds_per_launch
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
        if self.block == 0
            || !self.block.is_multiple_of(32)
            || self.block > driver::DEVICE_BLOCK
            || self.grid == 0
        {
            return Err(SieveError::Backend(format!(
                "shim grid {}x{}: the block size must be a positive multiple of 32, at most 256",
                self.grid, self.block
            )));
        }
        let layout = LaunchLayout::new(plan, seeds, capacity, self.grid as u64 * self.block as u64);
        let mut out = vec![0u64; layout.out_slots()];
        let mut count = 0u64;
        let mut scratch = vec![0u32; layout.scratch_words()];
        // Host addresses: the emulated kernel dereferences them directly, nothing is copied.
        let params = layout.params(&BufferAddresses {
            window: layout.window().as_ptr() as u64,
            strategies: layout.strategies().as_ptr() as u64,
            landings: layout.landings().as_ptr() as u64,
            seed_list: layout.seed_list().map_or(0, |list| list.as_ptr() as u64),
            out_seeds: out.as_mut_ptr() as u64,
            out_count: &mut count as *mut u64 as u64,
            scratch: scratch.as_mut_ptr() as u64,
        });
        let name = CString::new(plan.kernel).expect("kernel names have no NUL");
        // SAFETY: every address in `params` points into a live buffer of the size the kernel
        // reads or writes (window k, strategies 2*n, landings 2*(n_landings+1), list n_seeds,
        // out capacity, one counter,
        // scratch MT_WORDS per emulated thread), all outliving the synchronous call.
        let rc = unsafe { seedq_shim_launch(name.as_ptr(), self.grid, self.block, &params) };
        drop(scratch);
        if rc != 0 {
            return Err(SieveError::Backend(format!(
                "shim launch of {} failed with code {rc}",
                plan.kernel
            )));
        }
        out.truncate(layout.survivors_stored(count));
        Ok(LaunchResult { count, seeds: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::params::SEEDQ_PARAMS_FIELD_NAMES;

    /// The generated Rust mirror and the generated C struct agree field by field.
    #[test]
    fn kernel_params_offsets_match_rust_field_by_field() {
        // offset_of! needs literal field names; the list is checked against the generated one.
        let rust: Vec<(&str, u64)> = vec![
            ("seed_start", std::mem::offset_of!(SeedqParams, seed_start)),
            ("n_seeds", std::mem::offset_of!(SeedqParams, n_seeds)),
            ("seed_list", std::mem::offset_of!(SeedqParams, seed_list)),
            ("window", std::mem::offset_of!(SeedqParams, window)),
            ("out_seeds", std::mem::offset_of!(SeedqParams, out_seeds)),
            ("out_count", std::mem::offset_of!(SeedqParams, out_count)),
            ("scratch", std::mem::offset_of!(SeedqParams, scratch)),
            ("landings", std::mem::offset_of!(SeedqParams, landings)),
            ("n_landings", std::mem::offset_of!(SeedqParams, n_landings)),
            ("mod_inv", std::mem::offset_of!(SeedqParams, mod_inv)),
            ("strategies", std::mem::offset_of!(SeedqParams, strategies)),
            ("modulus", std::mem::offset_of!(SeedqParams, modulus)),
            ("mod_magic", std::mem::offset_of!(SeedqParams, mod_magic)),
            ("offset", std::mem::offset_of!(SeedqParams, offset)),
            (
                "offset_last",
                std::mem::offset_of!(SeedqParams, offset_last),
            ),
            ("out_cap", std::mem::offset_of!(SeedqParams, out_cap)),
            (
                "scratch_threads",
                std::mem::offset_of!(SeedqParams, scratch_threads),
            ),
            ("fam", std::mem::offset_of!(SeedqParams, fam)),
            ("k", std::mem::offset_of!(SeedqParams, k)),
            ("skip_min", std::mem::offset_of!(SeedqParams, skip_min)),
            ("skip_max", std::mem::offset_of!(SeedqParams, skip_max)),
            ("need", std::mem::offset_of!(SeedqParams, need)),
            (
                "n_strategies",
                std::mem::offset_of!(SeedqParams, n_strategies),
            ),
            ("flags", std::mem::offset_of!(SeedqParams, flags)),
            ("mod_inv32", std::mem::offset_of!(SeedqParams, mod_inv32)),
        ]
        .into_iter()
        .map(|(n, o)| (n, o as u64))
        .collect();
        let names: Vec<&str> = rust.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names, SEEDQ_PARAMS_FIELD_NAMES,
            "every generated field is checked"
        );
        let c = kernel_params_offsets();
        assert_eq!(
            c.len(),
            rust.len(),
            "C and Rust have the same number of fields"
        );
        for ((name, rust_offset), c_offset) in rust.iter().zip(&c) {
            assert_eq!(*rust_offset, *c_offset, "offset of field `{name}`");
        }
        assert_eq!(
            kernel_params_size(),
            std::mem::size_of::<SeedqParams>() as u64
        );
    }
}
