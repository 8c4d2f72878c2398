//! Helpers shared by the kernels' integration tests: building specs, planting a seed's outputs
//! in a window, and compiling/running small g++ and javac programs that produce known answers
//! from the real libraries (skipped, with a visible message, when the compiler is missing).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use seedq_kernels::{Direction, Family, FamilyConfig, SieveSpec, SkipMode, Strategy, Threshold};

/// A forward constant-skip spec with modulus 1000.
pub fn spec(
    family: FamilyConfig,
    draws: Vec<u64>,
    offset: u64,
    skip_min: u32,
    skip_max: u32,
    threshold: &str,
) -> SieveSpec {
    SieveSpec {
        family,
        draws,
        modulus: 1000,
        offset,
        offset_max: None,
        skip_min,
        skip_max,
        threshold: Threshold::parse(threshold).unwrap(),
        reverse_threshold: None,
        direction: Direction::Forward,
        skip_mode: SkipMode::Constant,
    }
}

pub fn variable(mut s: SieveSpec) -> SieveSpec {
    s.skip_mode = SkipMode::Variable {
        strategies: Strategy::presets(),
    };
    s
}

/// The window a seed produces at a constant skip: draw i = output `offset + skip + i*(skip+1)`.
pub fn plant(
    family: &FamilyConfig,
    seed: u64,
    offset: u64,
    skip: u32,
    k: usize,
    modulus: u64,
) -> Vec<u64> {
    seedq_kernels::reference::planted_window(family, seed, offset, skip, k, modulus)
}

/// The window a seed produces with a per-draw skip pattern: draw i is output
/// `offset + sum_{j<i}(pattern[j]+1) + pattern[i]`.
pub fn plant_pattern(
    family: &FamilyConfig,
    seed: u64,
    offset: u64,
    pattern: &[u32],
    modulus: u64,
) -> Vec<u64> {
    let mut pos = offset;
    pattern
        .iter()
        .map(|&t| {
            let v = family.output_at(seed, pos + t as u64) % modulus;
            pos += t as u64 + 1;
            v
        })
        .collect()
}

pub fn family(name: &str) -> FamilyConfig {
    FamilyConfig::new(Family::parse(name).unwrap())
}

/// Compiles `source` with `compiler` (g++ or javac) in a fresh temp dir and returns the program's
/// stdout, or `None` (after printing why) when the compiler is not installed.
pub fn run_program(compiler: &str, file_name: &str, source: &str, args: &[&str]) -> Option<String> {
    if Command::new(compiler).arg("--version").output().is_err()
        && Command::new(compiler).arg("-version").output().is_err()
    {
        eprintln!("SKIPPED: {compiler} not found; known-answer vectors from the real library were not checked");
        return None;
    }
    let dir = tempdir(file_name);
    let src = dir.join(file_name);
    std::fs::write(&src, source).unwrap();
    let (build, run): (Command, Command) = match compiler {
        "g++" => {
            let exe = dir.join("prog");
            let mut b = Command::new("g++");
            b.args(["-O2", "-std=c++17", "-o"]).arg(&exe).arg(&src);
            let mut r = Command::new(&exe);
            r.args(args);
            (b, r)
        }
        "javac" => {
            let mut b = Command::new("javac");
            b.arg("-d").arg(&dir).arg(&src);
            let class = file_name.trim_end_matches(".java");
            let mut r = Command::new("java");
            r.arg("-cp").arg(&dir).arg(class).args(args);
            (b, r)
        }
        other => panic!("unsupported compiler {other}"),
    };
    let out = { build }.output().expect("compiler runs");
    assert!(
        out.status.success(),
        "{compiler} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = { run }.output().expect("program runs");
    assert!(
        out.status.success(),
        "program failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Some(String::from_utf8(out.stdout).unwrap())
}

fn tempdir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "seedq-kat-{}-{}-{nanos}",
        std::process::id(),
        tag.replace('.', "_")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Whitespace-separated unsigned integers (decimal) from a program's output.
pub fn numbers(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .map(|w| w.parse().unwrap_or_else(|_| panic!("not a number: {w}")))
        .collect()
}
