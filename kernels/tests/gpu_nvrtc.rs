//! NVRTC compiles the CUDA kernels (kernels/gpu/sieve.cu) to PTX for every family and the
//! architectures of the rigs (sm_86: RTX 3080 Ti) and of the H200 (sm_90), with no GPU needed.
//! The PTX must not use local memory: no per-thread arrays, whatever the window length.
//!
//! Needs the `cuda` feature (without it the test is listed as ignored, with the reason) and
//! libnvrtc on the loader path (scripts/ci-gpu-toolchain.sh installs the PyPI wheel and writes
//! the path to .nvrtc/env; without it the test says "skipped" and why).

mod gpu_common;

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "built without the `cuda` feature; scripts/ci-gpu-toolchain.sh runs the NVRTC/hipcc checks"
)]
fn every_family_compiles_to_ptx_without_local_memory() {
    #[cfg(feature = "cuda")]
    compile_every_family();
    #[cfg(not(feature = "cuda"))]
    gpu_common::CUDA.report_not_built();
}

#[cfg(feature = "cuda")]
fn compile_every_family() {
    use seedq_kernels::gpu::cuda::{compile_family, probe_nvrtc};
    use seedq_kernels::gpu::kernel_name;
    use seedq_kernels::Family;

    if let Err(reason) = probe_nvrtc() {
        println!("skipped: NVRTC not available ({reason}; run scripts/ci-gpu-toolchain.sh and source .nvrtc/env)");
        return;
    }
    // SEEDQ_NVRTC_ARCHS: compute capabilities as "86,90" (default); SEEDQ_PTX_DIR: also write the
    // PTX there (scripts/gpu-check.sh feeds it to ptxas for the register/spill report).
    let archs: Vec<(u32, u32)> = std::env::var("SEEDQ_NVRTC_ARCHS")
        .unwrap_or_else(|_| "86,90".to_string())
        .split(',')
        .filter_map(|cc| cc.trim().parse::<u32>().ok())
        .map(|cc| (cc / 10, cc % 10))
        .collect();
    assert!(
        !archs.is_empty(),
        "SEEDQ_NVRTC_ARCHS names no compute capability"
    );
    let ptx_dir = std::env::var_os("SEEDQ_PTX_DIR").map(std::path::PathBuf::from);
    for (major, minor) in archs {
        for family in Family::ALL {
            let ptx = compile_family(family, major, minor)
                .unwrap_or_else(|e| panic!("{family} sm_{major}{minor}: {e}"));
            let mut entries = vec![kernel_name(family, false)];
            if family == Family::Mt19937 {
                entries.push(kernel_name(family, true));
                // Constant skip beyond output 226: the shared-memory stream kernel.
                entries.push("seedq_sieve_mt19937_stream");
            }
            for entry in &entries {
                assert!(
                    ptx.contains(&format!(".entry {entry}(")),
                    "{family}: PTX lacks entry {entry}"
                );
            }
            if let Some(dir) = &ptx_dir {
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(
                    dir.join(format!("{}-sm_{major}{minor}.ptx", family.name())),
                    &ptx,
                )
                .unwrap();
            }
            let uses_local = ptx.contains(".local");
            println!(
                "nvrtc compute_{major}{minor} {family:<13} PTX {:>7} bytes, entries {:?}, local memory: {}",
                ptx.len(),
                entries,
                if uses_local { "YES" } else { "none" }
            );
            assert!(
                !uses_local,
                "{family}: the kernel uses local memory (per-thread arrays spill)"
            );
        }
    }
}
