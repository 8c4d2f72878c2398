//! Build script: compiles the sieve kernels for the host shim (always) and, with the `rocm`
//! feature, for AMD GPUs with hipcc.
//!
//! * Host shim: `gpu/shim.cpp` includes `gpu/sieve.cu` and is compiled by the C++ compiler
//!   (`cc`), so the kernel source runs on the CPU in tests (kernels::gpu::shim).
//! * ROCm: hip-sys has no run-time compiler, so `gpu/sieve.cu` is compiled here with
//!   `hipcc --genco` into one code object per target architecture (`SEEDQ_HIP_ARCHS`, comma
//!   separated, default `gfx1030`), embedded in the library by kernels/src/gpu/hip.rs and
//!   loaded with hipModuleLoadData. `SEEDQ_HIPCC` overrides the hipcc path; ROCM_PATH defaults
//!   to /usr (Debian's packages).

use std::path::{Path, PathBuf};
use std::process::Command;

const KERNEL_SOURCES: [&str; 4] = [
    "gpu/sieve.cu",
    "gpu/seedq_compat.h",
    "gpu/seedq_shim.h",
    "gpu/shim.cpp",
];

fn main() {
    for source in KERNEL_SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    build_shim();
    if std::env::var_os("CARGO_FEATURE_ROCM").is_some() {
        build_hip();
    }
}

fn build_shim() {
    cc::Build::new()
        .cpp(true)
        .file("gpu/shim.cpp")
        .include("gpu")
        .flag("-std=c++20")
        .flag("-pthread")
        .flag_if_supported("-Wno-unknown-pragmas")
        .opt_level(2)
        .debug(false)
        .compile("seedq_shim");
}

fn build_hip() {
    println!("cargo:rerun-if-env-changed=SEEDQ_HIP_ARCHS");
    println!("cargo:rerun-if-env-changed=SEEDQ_HIPCC");
    println!("cargo:rerun-if-env-changed=ROCM_PATH");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let archs = std::env::var("SEEDQ_HIP_ARCHS").unwrap_or_else(|_| "gfx1030".to_string());
    let hipcc = std::env::var("SEEDQ_HIPCC").unwrap_or_else(|_| "hipcc".to_string());
    let rocm_path = std::env::var("ROCM_PATH").unwrap_or_else(|_| "/usr".to_string());
    let mut table = String::from(
        "/// Code objects of gpu/sieve.cu compiled by hipcc at build time: (gfx architecture, bytes).\n\
         pub static HIP_CODE_OBJECTS: &[(&str, &[u8])] = &[\n",
    );
    let mut report = String::new();
    for arch in archs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let object = out_dir.join(format!("sieve-{arch}.hsaco"));
        report.push_str(&compile_hip(&hipcc, &rocm_path, arch, &object));
        table.push_str(&format!(
            "    ({arch:?}, include_bytes!({:?})),\n",
            object.display().to_string()
        ));
    }
    table.push_str("];\n");
    table.push_str(&format!(
        "/// hipcc's resource report (registers, scratch = spills, occupancy) per kernel and architecture.\n\
         pub static HIP_RESOURCE_REPORT: &str = {report:?};\n"
    ));
    std::fs::write(out_dir.join("hip_code_objects.rs"), table).expect("write hip_code_objects.rs");
}

/// Compiles one architecture's code object (a plain ELF, not an offload bundle) and returns the
/// compiler's per-kernel resource report.
fn compile_hip(hipcc: &str, rocm_path: &str, arch: &str, object: &Path) -> String {
    let output = Command::new(hipcc)
        .env("ROCM_PATH", rocm_path)
        .env("HIP_PATH", std::env::var("HIP_PATH").unwrap_or_else(|_| rocm_path.to_string()))
        .args(["-x", "hip", "--genco", "--no-gpu-bundle-output", "-O3", "-Wno-unused-command-line-argument"])
        .arg("-Rpass-analysis=kernel-resource-usage")
        .arg(format!("--offload-arch={arch}"))
        .arg("gpu/sieve.cu")
        .arg("-o")
        .arg(object)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "feature `rocm` needs hipcc to compile the HIP kernels, and running `{hipcc}` failed: {e}. \
                 Install it (Debian: apt-get install hipcc libamdhip64-dev) or set SEEDQ_HIPCC."
            )
        });
    if !output.status.success() {
        panic!(
            "hipcc failed to compile gpu/sieve.cu for {arch} ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    resource_report(arch, &String::from_utf8_lossy(&output.stderr))
}

/// One line per kernel from clang's kernel-resource-usage remarks; warns when a kernel spills.
fn resource_report(arch: &str, remarks: &str) -> String {
    let mut lines = String::new();
    let mut current: Vec<(String, String)> = Vec::new();
    let flush = |fields: &mut Vec<(String, String)>, lines: &mut String| {
        if fields.is_empty() {
            return;
        }
        let get = |key: &str| {
            fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .unwrap_or("?")
        };
        let scratch = get("ScratchSize [bytes/lane]");
        if scratch != "0" && scratch != "?" {
            println!("cargo:warning=HIP kernel {} uses {scratch} bytes of scratch per lane on {arch} (register spills)", get("Function Name"));
        }
        lines.push_str(&format!(
            "{arch} {:<28} VGPRs {:>3}  SGPRs {:>3}  scratch {:>3} B/lane  occupancy {:>2} waves/SIMD\n",
            get("Function Name"),
            get("VGPRs"),
            get("SGPRs"),
            scratch,
            get("Occupancy [waves/SIMD]")
        ));
        fields.clear();
    };
    for line in remarks.lines() {
        let Some((_, rest)) = line.split_once("remark: ") else {
            continue;
        };
        let rest = rest
            .split(" [-Rpass-analysis")
            .next()
            .unwrap_or(rest)
            .trim();
        let Some((key, value)) = rest.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        if key == "Function Name" {
            flush(&mut current, &mut lines);
        }
        current.push((key, value));
    }
    flush(&mut current, &mut lines);
    lines
}
