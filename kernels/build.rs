//! Build script: generates the header the kernels share with Rust, compiles the sieve kernels
//! for the host shim (feature `shim`) and, with the `rocm` feature, for AMD GPUs with hipcc.
//!
//! * Generated header `seedq_generated.h` (in OUT_DIR): the family numbers (`Family::ALL`
//!   order), every family constant (`seedq_core::family::constants`), the flags, and
//!   `struct SeedqParams`, the launch description. The same field list ([`PARAMS_FIELDS`])
//!   generates the Rust mirror (`seedq_params.rs`, included by `src/gpu/params.rs`) and a table
//!   of C `offsetof`s the layout test compares field by field, so nothing in `gpu/sieve.cu` is
//!   kept in sync with Rust by hand.
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

/// `struct SeedqParams`: (C type, field, comment). Device addresses are `u64` on both sides so
/// the layout is the same on every platform; `fam` is `u64 fam[6]`.
const PARAMS_FIELDS: &[(&str, &str, &str)] = &[
    ("u64", "seed_start", "range launches: the first seed"),
    ("u64", "n_seeds", "seeds in this launch"),
    (
        "u64",
        "seed_list",
        "list launches: device address of n_seeds u64 seeds; 0 for a range",
    ),
    (
        "u64",
        "window",
        "device address of k u64 draws, reduced mod modulus, in pass order",
    ),
    (
        "u64",
        "out_seeds",
        "device address of out_cap u64 survivor slots",
    ),
    (
        "u64",
        "out_count",
        "device address of one u64 counter (zeroed by the host)",
    ),
    (
        "u64",
        "scratch",
        "SEEDQ_FLAG_MT_FULL: 624 u32 words per thread, interleaved",
    ),
    (
        "u64",
        "landings",
        "SEEDQ_FLAG_SHARED_STREAM: device address of 2*n_landings u64, (draw, (j << 5) | skip index) sorted by j",
    ),
    (
        "u64",
        "n_landings",
        "entries in landings (k times the skips of the launch's skip group)",
    ),
    (
        "u64",
        "mod_inv",
        "floor((2^64-1)/modulus) when 3*modulus < 2^64 (Barrett for 64-bit outputs), else 0",
    ),
    (
        "u64",
        "strategies",
        "variable skip: device address of 2*n_strategies u32 (misses, tolerance)",
    ),
    ("u64", "modulus", "the draws' modulus"),
    (
        "u64",
        "mod_magic",
        "floor((2^64-1)/modulus)+1 when modulus < 2^32 (Lemire fastmod), else 0",
    ),
    (
        "u64",
        "offset",
        "generator outputs before the window's first",
    ),
    (
        "u64",
        "offset_last",
        "the launch's largest offset (an mt19937 offset-range group; offset otherwise)",
    ),
    ("u64", "out_cap", "survivor slots in out_seeds"),
    (
        "u64",
        "scratch_threads",
        "threads the scratch is laid out for (the launch's grid size)",
    ),
    (
        "u64[6]",
        "fam",
        "family parameters (see each generator's init)",
    ),
    ("u32", "k", "draws in the window"),
    ("u32", "skip_min", "smallest skip"),
    ("u32", "skip_max", "largest skip"),
    (
        "u32",
        "need",
        "matches a pass must reach: ceil(threshold * k)",
    ),
    ("u32", "n_strategies", "variable-skip strategies"),
    ("u32", "flags", "SEEDQ_FLAG_* bits"),
    (
        "u32",
        "mod_inv32",
        "floor(2^32/modulus) when 3*modulus < 2^32 (Barrett for 32-bit outputs), else 0",
    ),
];

/// Launch flags: (name without the `SEEDQ_FLAG_` prefix, bit, comment).
const FLAGS: &[(&str, u32, &str)] = &[
    (
        "VARIABLE",
        1,
        "variable-skip strategies instead of constant skips",
    ),
    (
        "MT_FULL",
        2,
        "mt19937 needs outputs >= 227: full state in `scratch`",
    ),
    (
        "SHARED_STREAM",
        4,
        "constant skip: one stream per seed shared by the skips, tested through `landings`",
    ),
];

fn main() {
    for source in KERNEL_SOURCES {
        println!("cargo:rerun-if-changed={source}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    write_generated(&out_dir);
    #[cfg(feature = "shim")]
    build_shim(&out_dir);
    if std::env::var_os("CARGO_FEATURE_ROCM").is_some() {
        build_hip(&out_dir);
    }
}

/// Writes `seedq_generated.h` (C) and `seedq_params.rs` (Rust) from one description.
fn write_generated(out_dir: &Path) {
    use seedq_core::family::{constants, Family};
    let mut h = String::from(
        "// Generated by kernels/build.rs from seedq-core's family registry: do not edit.\n\
         #ifndef SEEDQ_GENERATED_H\n#define SEEDQ_GENERATED_H\n\n\
         // Family numbers (Family::ALL order; SEEDQ_FAMILY_ONLY selects one).\n",
    );
    for (i, family) in Family::ALL.iter().enumerate() {
        h.push_str(&format!(
            "#define SEEDQ_{} {i}\n",
            family.name().to_ascii_uppercase()
        ));
    }
    h.push_str("\n// Family constants (seedq_core::family::constants).\n");
    for (name, value, ty) in constants::c_definitions() {
        let suffix = if ty == "u64" { "ull" } else { "u" };
        h.push_str(&format!("#define {name} {value:#X}{suffix}\n"));
    }
    h.push_str("\n// Launch flags.\n");
    for (name, bit, comment) in FLAGS {
        h.push_str(&format!("#define SEEDQ_FLAG_{name} {bit}u // {comment}\n"));
    }
    h.push_str("\n// The launch description (the Rust mirror is generated from the same list).\nstruct SeedqParams {\n");
    let mut rs = String::from(
        "// Generated by kernels/build.rs: the launch description, from the same list as the C struct.\n\
         /// Mirror of `struct SeedqParams` in the generated kernel header: same fields, same order.\n\
         #[repr(C)]\n#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]\npub struct SeedqParams {\n",
    );
    let mut offsets = String::from("#define SEEDQ_PARAMS_OFFSETS { ");
    let mut names = String::from(
        "/// Field names of [`SeedqParams`], in order (the layout test's C offsets follow it).\n\
         #[allow(dead_code)]\npub const SEEDQ_PARAMS_FIELD_NAMES: &[&str] = &[",
    );
    for (ty, field, comment) in PARAMS_FIELDS {
        let (c_decl, rust_ty) = match *ty {
            "u64[6]" => (format!("u64 {field}[6];"), "[u64; 6]".to_string()),
            t => (format!("{t} {field};"), t.to_string()),
        };
        h.push_str(&format!("    {c_decl:<24}// {comment}\n"));
        rs.push_str(&format!("    /// {comment}\n    pub {field}: {rust_ty},\n"));
        offsets.push_str(&format!("offsetof(SeedqParams, {field}), "));
        names.push_str(&format!("{field:?}, "));
    }
    h.push_str(
        "};\n\n// offsetof each field, in order (the shim exports them for the layout test).\n",
    );
    h.push_str(&offsets);
    h.push_str("}\n\n#endif\n");
    rs.push_str("}\n\n");
    rs.push_str(&names);
    rs.push_str("];\n");
    for (name, bit, comment) in FLAGS {
        rs.push_str(&format!(
            "/// `SEEDQ_FLAG_{name}`: {comment}.\npub const FLAG_{name}: u32 = {bit};\n"
        ));
    }
    std::fs::write(out_dir.join("seedq_generated.h"), h).expect("write seedq_generated.h");
    std::fs::write(out_dir.join("seedq_params.rs"), rs).expect("write seedq_params.rs");
}

#[cfg(feature = "shim")]
fn build_shim(out_dir: &Path) {
    cc::Build::new()
        .cpp(true)
        .file("gpu/shim.cpp")
        .include("gpu")
        .include(out_dir)
        .flag("-std=c++20")
        .flag("-pthread")
        .flag_if_supported("-Wno-unknown-pragmas")
        .opt_level(2)
        .debug(false)
        .compile("seedq_shim");
}

fn build_hip(out_dir: &Path) {
    println!("cargo:rerun-if-env-changed=SEEDQ_HIP_ARCHS");
    println!("cargo:rerun-if-env-changed=SEEDQ_HIPCC");
    println!("cargo:rerun-if-env-changed=ROCM_PATH");
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
        report.push_str(&compile_hip(&hipcc, &rocm_path, arch, &object, out_dir));
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
fn compile_hip(hipcc: &str, rocm_path: &str, arch: &str, object: &Path, include: &Path) -> String {
    let output = Command::new(hipcc)
        .env("ROCM_PATH", rocm_path)
        .env("HIP_PATH", std::env::var("HIP_PATH").unwrap_or_else(|_| rocm_path.to_string()))
        .args(["-x", "hip", "--genco", "--no-gpu-bundle-output", "-O3", "-Wno-unused-command-line-argument"])
        .arg("-Rpass-analysis=kernel-resource-usage")
        .arg("-std=c++17")
        .arg(format!("--offload-arch={arch}"))
        .arg("-I")
        .arg(include)
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
