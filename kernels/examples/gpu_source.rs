//! Writes the CUDA kernel source exactly as the CUDA backend hands it to NVRTC, with the NVRTC
//! options it uses, for tools outside Rust (scripts/gpu-estimate.sh compiles it with NVRTC and
//! ptxas and reads the SASS):
//!
//! ```text
//! cargo run -p seedq-kernels --example gpu_source -- OUT_DIR [CC ...]   (CC like 86 or 90)
//! ```
//!
//! For every family and compute capability it writes `OUT_DIR/<family>-sm_<CC>.cu` (the
//! amalgamated source) and `OUT_DIR/<family>-sm_<CC>.opts` (one option per line).

use std::path::PathBuf;

use seedq_kernels::gpu::source::{cuda_source, nvrtc_options};
use seedq_kernels::Family;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: gpu_source OUT_DIR [CC ...]");
        std::process::exit(2);
    };
    let mut ccs: Vec<u32> = args.filter_map(|a| a.parse().ok()).collect();
    if ccs.is_empty() {
        ccs = vec![86, 90];
    }
    std::fs::create_dir_all(&out)?;
    let source = cuda_source();
    for cc in ccs {
        for family in Family::ALL {
            let stem = format!("{}-sm_{cc}", family.name());
            std::fs::write(out.join(format!("{stem}.cu")), &source)?;
            let opts = nvrtc_options(family, cc / 10, cc % 10).join("\n");
            std::fs::write(out.join(format!("{stem}.opts")), opts + "\n")?;
        }
    }
    Ok(())
}
