//! `seedq-consumer bench`: runs a named sieve workload on one backend and prints its throughput.
//!
//! Needs no broker. The workloads live in `seedq_kernels::bench` so tests and the GPU parity
//! script measure the same jobs. The run fails (non-zero exit) when the planted seed is not
//! among the survivors (or, in a bidirectional custom workload whose reverse pass the planted
//! draws fail, when it is), so a fast but wrong backend cannot post a figure.

use anyhow::{bail, Context};
use clap::Args;
use seedq_kernels::bench::{self, Workload};
use seedq_kernels::cpu::{CpuBackend, SimdLevel};
use seedq_kernels::family::FamilyConfig;
use seedq_kernels::reference::ReferenceBackend;
use seedq_kernels::{Direction, SieveBackend, SkipMode, Threshold};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workload: pipeline, s128, xs32-exact, mt-exact, java-exact, custom (with the sieve flags
    /// below), or matrix (the pipeline's shape on every family, beside the reference).
    #[arg(long, default_value = "s128")]
    workload: String,
    /// matrix: seconds each measurement should last (sized from a short probe).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Number of seeds to sieve.
    #[arg(long, default_value_t = 1_000_000)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    seed_start: u64,
    /// CPU threads (0: one per core). Ignored by the reference (single-threaded) and GPUs.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// cpu, reference, cuda, hip (or rocm), shim.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// GPU ordinal for cuda/hip.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Seed the draws are generated from (default: two thirds into the range).
    #[arg(long)]
    planted_seed: Option<u64>,
    /// CPU SIMD level: auto, avx512, avx2, portable, scalar.
    #[arg(long, default_value = "auto")]
    simd: String,
    /// Disable the CPU backend's algebraic shortcuts (measure the brute-force kernels).
    #[arg(long)]
    no_shortcuts: bool,

    /// custom: PRNG family.
    #[arg(long)]
    prng: Option<String>,
    /// custom: family parameter NAME=VALUE (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// custom: window length k (default 16).
    #[arg(long)]
    window: Option<usize>,
    /// custom: smallest skip (default 0).
    #[arg(long)]
    skip_min: Option<u32>,
    /// custom: largest skip (default skip_min).
    #[arg(long)]
    skip_max: Option<u32>,
    /// custom: threshold in (0, 1] (default 1).
    #[arg(long)]
    threshold: Option<String>,
    /// custom: threshold of the reverse pass (default: --threshold).
    #[arg(long)]
    reverse_threshold: Option<String>,
    /// custom: outputs discarded before draw 0 (default 0).
    #[arg(long)]
    offset: Option<u64>,
    /// custom: search every offset from --offset to this one in one pass.
    #[arg(long)]
    offset_max: Option<u64>,
    /// custom: draw modulus (default 1000).
    #[arg(long)]
    modulus: Option<u64>,
    /// custom: forward, reverse or bidirectional (default forward).
    #[arg(long)]
    direction: Option<String>,
    /// custom: variable skip with the five strategy presets.
    #[arg(long)]
    variable_skip: bool,
}

impl BenchArgs {
    fn has_custom_flags(&self) -> bool {
        self.prng.is_some()
            || !self.params.is_empty()
            || self.window.is_some()
            || self.skip_min.is_some()
            || self.skip_max.is_some()
            || self.threshold.is_some()
            || self.reverse_threshold.is_some()
            || self.offset.is_some()
            || self.offset_max.is_some()
            || self.modulus.is_some()
            || self.direction.is_some()
            || self.variable_skip
    }

    fn workload(&self) -> anyhow::Result<Workload> {
        if self.workload != "custom" {
            if self.has_custom_flags() {
                bail!("sieve flags (--prng, --window, ...) only apply to --workload custom");
            }
            return Workload::named(&self.workload).with_context(|| {
                format!(
                    "unknown workload '{}' (known: {}, custom)",
                    self.workload,
                    bench::NAMES.join(", ")
                )
            });
        }
        let prng = self
            .prng
            .as_deref()
            .context("--workload custom needs --prng FAMILY")?;
        let params: Vec<(String, String)> = self
            .params
            .iter()
            .map(|p| {
                p.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .with_context(|| format!("--param '{p}' is not NAME=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        let family = FamilyConfig::parse(prng, &params)?;
        let threshold = |text: &Option<String>| -> anyhow::Result<Option<Threshold>> {
            text.as_deref()
                .map(|t| Threshold::parse(t).with_context(|| format!("threshold '{t}'")))
                .transpose()
        };
        let skip_min = self.skip_min.unwrap_or(0);
        let direction = match self.direction.as_deref().unwrap_or("forward") {
            "forward" => Direction::Forward,
            "reverse" => Direction::Reverse,
            "bidirectional" => Direction::Bidirectional,
            other => bail!("--direction '{other}': expected forward, reverse or bidirectional"),
        };
        Ok(Workload {
            name: "custom".to_string(),
            family,
            k: self.window.unwrap_or(16),
            skip_min,
            skip_max: self.skip_max.unwrap_or(skip_min),
            threshold: threshold(&self.threshold)?.unwrap_or(Threshold::parse("1")?),
            reverse_threshold: threshold(&self.reverse_threshold)?,
            offset: self.offset.unwrap_or(0),
            offset_max: self.offset_max,
            modulus: self.modulus.unwrap_or(1000),
            direction,
            skip_mode: if self.variable_skip {
                Workload::variable_skip()
            } else {
                SkipMode::Constant
            },
        })
    }

    fn backend(&self) -> anyhow::Result<(Box<dyn SieveBackend>, usize)> {
        match self.backend.as_str() {
            "cpu" => {
                let level = match self.simd.as_str() {
                    "auto" => SimdLevel::detect(),
                    "avx512" => SimdLevel::Avx512,
                    "avx2" => SimdLevel::Avx2,
                    "portable" => SimdLevel::Portable,
                    "scalar" => SimdLevel::Scalar,
                    other => {
                        bail!("--simd '{other}': expected auto, avx512, avx2, portable or scalar")
                    }
                };
                let cpu = CpuBackend::new(self.threads)
                    .with_simd(level)
                    .with_shortcuts(!self.no_shortcuts);
                let threads = cpu.threads;
                Ok((Box::new(cpu), threads))
            }
            "reference" => Ok((Box::new(ReferenceBackend), 1)),
            "shim" => Ok((
                seedq_kernels::gpu::open_shim().context("backend shim is not available")?,
                0,
            )),
            kind @ ("cuda" | "hip" | "rocm") => {
                let backend: seedq_kernels::Backend = kind.parse()?;
                let gpu =
                    seedq_kernels::gpu::open_backend(backend, self.device).with_context(|| {
                        format!("backend {kind} (device {}) is not available", self.device)
                    })?;
                Ok((gpu, 0))
            }
            other => bail!("unknown backend '{other}' (expected cpu, reference, cuda, hip, shim)"),
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.workload == "matrix" {
        return run_matrix(&args);
    }
    let workload = args.workload()?;
    let (backend, threads) = args.backend()?;
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    let planted = args
        .planted_seed
        .unwrap_or_else(|| bench::default_planted(args.seed_start, args.seeds));
    if planted < args.seed_start || planted - args.seed_start >= args.seeds {
        bail!("--planted-seed {planted} is outside the benchmarked range");
    }
    let report = bench::run(
        backend.as_ref(),
        threads,
        &workload,
        args.seed_start,
        args.seeds,
        planted,
    )
    .with_context(|| {
        format!(
            "running workload '{}' on {}",
            workload.name,
            backend.describe()
        )
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "workload {} ({}, k={}, skips {}..={}, threshold {}) on {}",
            report.workload,
            report.family,
            report.k,
            report.skip_min,
            report.skip_max,
            report.threshold,
            report.backend
        );
        println!(
            "  {} seeds from {} in {:.3} s: {:.0} seeds/s, {:.3e} evaluations/s",
            report.seeds,
            report.seed_start,
            report.secs,
            report.seeds_per_sec,
            report.evals_per_sec
        );
        println!(
            "  (evaluations are nominal: seeds x {} skips x {} draws, whatever early exit saves)",
            report.skip_max - report.skip_min + 1,
            report.k
        );
        println!(
            "  survivors: {}; planted seed {} at skip {}: {}",
            report.survivors,
            report.planted_seed,
            report.planted_skip,
            match (report.found, report.expected) {
                (true, true) => "found",
                (false, false) => "not a survivor, as the reference says (reverse pass)",
                (false, true) => "NOT FOUND",
                (true, false) => "FOUND BUT SHOULD NOT BE",
            }
        );
    }
    if !report.planted_ok() {
        bail!(
            "the planted seed {} is {} the survivors, unlike in the reference: the backend is wrong",
            report.planted_seed,
            if report.found { "among" } else { "not among" }
        );
    }
    Ok(())
}

/// `--workload matrix`: every family at the pipeline's shape, the backend beside the reference.
fn run_matrix(args: &BenchArgs) -> anyhow::Result<()> {
    if args.has_custom_flags() {
        bail!("sieve flags (--prng, --window, ...) do not apply to --workload matrix");
    }
    if !(args.seconds > 0.0 && args.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600], got {}", args.seconds);
    }
    let (backend, threads) = args.backend()?;
    let families = seedq_kernels::family::Family::ALL;
    if !args.json {
        println!(
            "matrix: k=512, skips 0..=20, threshold 0.01, modulus 1000 on {}; reference single-threaded, same run",
            backend.describe()
        );
        println!(
            "{:<13} {:>14} {:>14} {:>8}",
            "family", "seeds/s", "reference", "ratio"
        );
    }
    let mut rows = Vec::new();
    for family in families {
        let row = bench::matrix(backend.as_ref(), threads, &[family], args.seconds)
            .with_context(|| format!("measuring {}", family.name()))?
            .remove(0);
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{:<13} {:>14.0} {:>14.0} {:>7.1}x{}",
                row.family,
                row.seeds_per_sec,
                row.reference_seeds_per_sec,
                row.ratio,
                if row.planted_ok {
                    ""
                } else {
                    "  PLANTED SEED MISSED"
                }
            );
        }
        rows.push(row);
    }
    if let Some(bad) = rows.iter().find(|r| !r.planted_ok) {
        bail!(
            "{}: the planted seed was missed: the backend is wrong",
            bad.family
        );
    }
    Ok(())
}
