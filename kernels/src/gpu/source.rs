//! The kernel source as the run-time compiler (NVRTC) sees it: gpu/seedq_compat.h, the
//! generated seedq_generated.h and gpu/sieve.cu in one translation unit, since NVRTC reads no
//! files.

use crate::family::Family;
use crate::gpu::params::family_index;

/// gpu/seedq_compat.h.
pub const COMPAT_H: &str = include_str!("../../gpu/seedq_compat.h");
/// The header build.rs generates from the family registry (family numbers, constants, the
/// launch description).
pub const GENERATED_H: &str = include_str!(concat!(env!("OUT_DIR"), "/seedq_generated.h"));
/// gpu/sieve.cu.
pub const SIEVE_CU: &str = include_str!("../../gpu/sieve.cu");

/// The single-file CUDA source (both headers inlined).
pub fn cuda_source() -> String {
    format!("{COMPAT_H}\n{GENERATED_H}\n#define SEEDQ_AMALGAMATED 1\n{SIEVE_CU}")
}

/// NVRTC options for one family's kernels on a device of compute capability `major.minor`
/// (PTX for the virtual architecture; the driver finishes it for the exact chip).
pub fn nvrtc_options(family: Family, major: u32, minor: u32) -> Vec<String> {
    vec![
        format!("--gpu-architecture=compute_{major}{minor}"),
        "--std=c++17".to_string(),
        format!("-DSEEDQ_FAMILY_ONLY={}", family_index(family)),
    ]
}
