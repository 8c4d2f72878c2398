//! The arguments of `seedq-producer sieve` ([`crate::cmd::sieve`]) and everything that turns them
//! into a validated sieve spec and seed set, before any service is contacted.
//!
//! The rule is "validate everything before publishing anything": a malformed draws file, an
//! unknown family or parameter, an empty or out-of-file window, a seed range outside the
//! family's seed space, a threshold outside (0, 1], an empty skip range or a zero chunk size each
//! stop the command here with a message naming the problem, and nothing reaches the broker.
//!
//! The pieces every seed command shares are here too: [`parse_params`] for `--param` pairs and
//! [`SeedJobFlags`] (the seed range or `--seeds-file`, `--chunk-size` / `--target-chunk-secs`,
//! `--job-id`, `--wait`, `--timeout`), which `correlation` and `analysis`
//! ([`crate::cmd::analysis`]) flatten into their arguments, so every command reads them the
//! same way.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use seedq_core::{Direction, Family, FamilyConfig, SieveSpec, SkipMode, Strategy, Threshold};
use seedq_protocol::JobSeeds;

use crate::draws;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Forward,
    Reverse,
    Bidirectional,
}

impl From<DirectionArg> for Direction {
    fn from(d: DirectionArg) -> Direction {
        match d {
            DirectionArg::Forward => Direction::Forward,
            DirectionArg::Reverse => Direction::Reverse,
            DirectionArg::Bidirectional => Direction::Bidirectional,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SieveArgs {
    /// PRNG family: xorshift32, xorshift64, xorshift128, pcg32, lcg32, java_lcg, minstd, mt19937,
    /// xoshiro256pp, philox4x32, sfc64.
    #[arg(long)]
    pub prng: String,
    /// Family parameter NAME=VALUE (decimal or 0x hex); repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Draws file: a JSON array of {date, session, draw} objects or of integers (file order).
    #[arg(long)]
    pub draws: PathBuf,
    /// Sessions kept from a {date, session, draw} file.
    #[arg(long, default_value = "midday,evening")]
    pub sessions: String,
    /// Index (after the session filter) of draw 0 of the window.
    #[arg(long, default_value_t = 0)]
    pub draw_start: usize,
    /// Number of draws in the window (default: every draw from --draw-start on).
    #[arg(long)]
    pub window: Option<usize>,
    /// Generator outputs discarded before draw 0 (applied once).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    /// Search every offset from --offset to this one in one pass over each seed's stream;
    /// results name the best offset.
    #[arg(long)]
    pub offset_max: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub skip_min: u32,
    #[arg(long, default_value_t = 20)]
    pub skip_max: u32,
    /// Fraction of the window that must match, in (0, 1], exact decimal (0.7 of 10 draws is 7).
    #[arg(long, allow_hyphen_values = true)]
    pub threshold: String,
    /// Threshold of the reverse pass (default: --threshold).
    #[arg(long, allow_hyphen_values = true)]
    pub reverse_threshold: Option<String>,
    /// Draws and outputs are compared mod this.
    #[arg(long, default_value_t = 1000)]
    pub modulus: u64,
    #[arg(long, value_enum, default_value_t = DirectionArg::Forward)]
    pub direction: DirectionArg,
    /// Variable-skip ("hybrid") search with the five strategy presets.
    #[arg(long)]
    pub variable_skip: bool,
    /// Keep only survivor counts and best-match histograms per pass, no per-seed records (what
    /// a window-optimizer trial needs; any looseness fits in O(chunks) Redis memory).
    #[arg(long)]
    pub count_only: bool,
    /// Refuse the job when more survivors than this are expected (default: `[jobs]
    /// max_survivors` of the cluster model). Ignored with --count-only.
    #[arg(long, value_name = "N")]
    pub max_survivors: Option<u64>,
    #[command(flatten)]
    pub job: SeedJobFlags,
}

/// The flags every seed job (`sieve`, `correlation`, `analysis`) shares: which seeds, how to
/// chunk them, the job id, and waiting.
#[derive(Debug, Clone, Default, Args)]
pub struct SeedJobFlags {
    /// First seed (decimal, 0x hex or 2^N).
    #[arg(long, conflicts_with = "seeds_file")]
    pub seed_start: Option<String>,
    /// End of the seed range, exclusive (default: the end of the family's seed space).
    #[arg(long, conflicts_with = "seeds_file")]
    pub seed_end: Option<String>,
    /// Explicit candidate seeds: a JSON array of integers, or integers separated by whitespace.
    #[arg(long)]
    pub seeds_file: Option<PathBuf>,
    /// Seeds per chunk (default: sized from throughput, see --target-chunk-secs).
    #[arg(long, conflicts_with = "target_chunk_secs")]
    pub chunk_size: Option<u64>,
    /// Aim for chunks of this many seconds on the slowest active slot class.
    #[arg(long)]
    pub target_chunk_secs: Option<f64>,
    /// Job id (1-128 of [A-Za-z0-9._-]); default: derived from the spec and seeds, so re-running
    /// the same command resumes the same job.
    #[arg(long)]
    pub job_id: Option<String>,
    /// Wait for the job with a progress bar (stderr); exit non-zero if chunks were dead-lettered.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// high, normal or low (default: `scheduler.default_priority` in the config, normal). A slot
    /// always takes the most urgent work waiting; jobs of one priority share the cluster evenly.
    /// Re-running the command with another priority changes the job's.
    #[arg(long)]
    pub priority: Option<seedq_protocol::Priority>,
    /// The fraction of the job's chunks (0 to 1) run a second time on another node or backend
    /// and compared; a mismatch is decided by the CPU reference and the wrong slot quarantined
    /// (default: `scheduler.verify_fraction` in the config, 0.01; 0 turns it off).
    #[arg(long, value_parser = parse_fraction)]
    pub verify_fraction: Option<f64>,
}

/// `--verify-fraction`: a number from 0 to 1.
fn parse_fraction(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| {
            format!("'{text}' is not a fraction from 0 to 1 (0.01 verifies one chunk in 100; 0 turns verification off)")
        })
}

impl SeedJobFlags {
    /// The chunking flags are sane (see [`check_chunking`]).
    pub fn check_chunking(&self) -> Result<(), SieveArgsError> {
        check_chunking(self.chunk_size, self.target_chunk_secs)
    }

    /// The range or `--seeds-file`, inside `family`'s seed space (see [`resolve_seeds`]).
    pub fn seeds(&self, family: Family) -> Result<JobSeeds, SieveArgsError> {
        resolve_seeds(
            family,
            self.seed_start.as_deref(),
            self.seed_end.as_deref(),
            self.seeds_file.as_deref(),
        )
    }
}

/// A sieve request after validation: ready to plan and publish.
#[derive(Debug, Clone)]
pub struct ValidatedSieve {
    pub spec: SieveSpec,
    pub seeds: JobSeeds,
}

/// Why `sieve` refuses. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SieveArgsError {
    #[error(transparent)]
    Draws(#[from] draws::DrawsError),
    #[error(transparent)]
    Spec(#[from] seedq_core::SieveError),
    #[error("--param '{0}' must look like NAME=VALUE")]
    BadParam(String),
    #[error("{flag} '{value}' is not a number (use decimal, 0x hex or 2^N)")]
    BadNumber { flag: &'static str, value: String },
    #[error("seed range [{start}, {end}) is empty: --seed-end must be greater than --seed-start")]
    EmptyRange { start: u128, end: u128 },
    #[error("seed range [{start}, {end}) is outside the {family} seed space [0, {space_end}): lower --seed-end (or --seed-start)")]
    OutOfSpace {
        family: String,
        start: u128,
        end: u128,
        space_end: u128,
    },
    #[error("cannot read --seeds-file {path}: {message}")]
    SeedsFile { path: String, message: String },
    #[error("--seeds-file {path} holds no seeds")]
    EmptySeedsFile { path: String },
    #[error("--chunk-size must be at least 1")]
    ZeroChunkSize,
    #[error("--target-chunk-secs must be a positive number of seconds, got {0}")]
    BadTarget(f64),
    #[error("--modulus must be at least 2, got {0}")]
    BadModulus(u64),
}

/// Parses an unsigned seed bound: decimal (underscores allowed), `0x` hex, or `2^N` (N <= 64).
pub fn parse_seed_bound(flag: &'static str, text: &str) -> Result<u128, SieveArgsError> {
    let bad = || SieveArgsError::BadNumber {
        flag,
        value: text.to_string(),
    };
    let t = text.trim().replace('_', "");
    if let Some(exp) = t.strip_prefix("2^").or_else(|| t.strip_prefix("2**")) {
        let n: u32 = exp.parse().map_err(|_| bad())?;
        if n > 64 {
            return Err(bad());
        }
        return Ok(1u128 << n);
    }
    let value = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u128::from_str_radix(hex, 16).map_err(|_| bad())?
    } else {
        t.parse::<u128>().map_err(|_| bad())?
    };
    Ok(value)
}

/// Parses a `--seeds-file`: a JSON array of integers, or whitespace/comma-separated integers.
pub fn parse_seeds_file(path: &str, text: &str) -> Result<Vec<u64>, SieveArgsError> {
    let err = |message: String| SieveArgsError::SeedsFile {
        path: path.to_string(),
        message,
    };
    let trimmed = text.trim_start();
    let mut seeds: Vec<u64> = if trimmed.starts_with('[') {
        serde_json::from_str::<Vec<u64>>(text)
            .map_err(|e| err(format!("not a JSON array of unsigned integers: {e}")))?
    } else {
        text.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .enumerate()
            .map(|(i, s)| {
                s.parse::<u64>()
                    .map_err(|_| err(format!("entry {i} '{s}' is not an unsigned integer")))
            })
            .collect::<Result<_, _>>()?
    };
    seeds.sort_unstable();
    seeds.dedup();
    if seeds.is_empty() {
        return Err(SieveArgsError::EmptySeedsFile {
            path: path.to_string(),
        });
    }
    Ok(seeds)
}

/// Splits repeatable `--param NAME=VALUE` flags into `(name, value)` pairs (trimmed); the family
/// checks the names and values ([`FamilyConfig::parse`]).
pub fn parse_params(params: &[String]) -> Result<Vec<(String, String)>, SieveArgsError> {
    params
        .iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| SieveArgsError::BadParam(p.clone()))?;
            if k.trim().is_empty() {
                return Err(SieveArgsError::BadParam(p.clone()));
            }
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Checks `--chunk-size` / `--target-chunk-secs` (the planner would refuse them too, but only
/// after contacting Redis).
pub fn check_chunking(
    chunk_size: Option<u64>,
    target_chunk_secs: Option<f64>,
) -> Result<(), SieveArgsError> {
    if chunk_size == Some(0) {
        return Err(SieveArgsError::ZeroChunkSize);
    }
    if let Some(t) = target_chunk_secs {
        if !(t.is_finite() && t > 0.0) {
            return Err(SieveArgsError::BadTarget(t));
        }
    }
    Ok(())
}

/// The seeds of a job: `--seeds-file` (a candidate list, sorted and deduplicated), else
/// `[--seed-start, --seed-end)` with the family's whole seed space as the default (`end` may be
/// 2^64 for 64-bit families); either must lie inside that space.
pub fn resolve_seeds(
    family: Family,
    seed_start: Option<&str>,
    seed_end: Option<&str>,
    seeds_file: Option<&std::path::Path>,
) -> Result<JobSeeds, SieveArgsError> {
    let space_end = family.seed_space_end();
    let family_name = family.name().to_string();
    match seeds_file {
        Some(path) => {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|e| SieveArgsError::SeedsFile {
                path: shown.clone(),
                message: e.to_string(),
            })?;
            let list = parse_seeds_file(&shown, &text)?;
            let (lo, hi) = (list[0] as u128, *list.last().unwrap() as u128 + 1);
            if hi > space_end {
                return Err(SieveArgsError::OutOfSpace {
                    family: family_name,
                    start: lo,
                    end: hi,
                    space_end,
                });
            }
            Ok(JobSeeds::List(list))
        }
        None => {
            let start = match seed_start {
                Some(s) => parse_seed_bound("--seed-start", s)?,
                None => 0,
            };
            let end = match seed_end {
                Some(s) => parse_seed_bound("--seed-end", s)?,
                None => space_end,
            };
            if end > space_end || start >= space_end {
                return Err(SieveArgsError::OutOfSpace {
                    family: family_name,
                    start,
                    end,
                    space_end,
                });
            }
            if start >= end {
                return Err(SieveArgsError::EmptyRange { start, end });
            }
            Ok(JobSeeds::Range {
                start: start as u64,
                end,
            })
        }
    }
}

impl SieveArgs {
    /// Builds and validates the spec and the seeds. Reads the draws (and seeds) files; contacts
    /// no service.
    pub fn validate(&self) -> Result<ValidatedSieve, SieveArgsError> {
        let overrides = parse_params(&self.params)?;
        let family = FamilyConfig::parse(&self.prng, &overrides)?;
        let threshold = Threshold::parse(&self.threshold)?;
        let reverse_threshold = self
            .reverse_threshold
            .as_deref()
            .map(Threshold::parse)
            .transpose()?;
        if self.modulus < 2 {
            return Err(SieveArgsError::BadModulus(self.modulus));
        }
        if self.skip_min > self.skip_max {
            return Err(seedq_core::SieveError::InvalidSkipRange {
                min: self.skip_min,
                max: self.skip_max,
            }
            .into());
        }
        self.job.check_chunking()?;

        let sessions = draws::parse_sessions(&self.sessions)?;
        let all = draws::load_draws(&self.draws, &sessions)?;
        let window = draws::select_window(
            &self.draws.display().to_string(),
            &all,
            &sessions,
            self.draw_start,
            self.window,
        )?;

        let skip_mode = if self.variable_skip {
            SkipMode::Variable {
                strategies: Strategy::presets(),
            }
        } else {
            SkipMode::Constant
        };
        let spec = SieveSpec {
            family,
            draws: window,
            modulus: self.modulus,
            offset: self.offset,
            offset_max: self.offset_max,
            skip_min: self.skip_min,
            skip_max: self.skip_max,
            threshold,
            reverse_threshold,
            direction: self.direction.into(),
            skip_mode,
        };
        spec.validate()?;

        let seeds = self.job.seeds(spec.family.family())?;
        Ok(ValidatedSieve { spec, seeds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::io::Write;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SieveArgs,
    }

    fn draws_file(content: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with_content(content)
    }

    /// A tiny self-cleaning temp file (no extra dependency).
    mod tempfile_path {
        use super::*;
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with_content(content: &str) -> TempPath {
                static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let path = std::env::temp_dir().join(format!(
                    "seedq-producer-test-{}-{n}.json",
                    std::process::id()
                ));
                std::fs::File::create(&path)
                    .unwrap()
                    .write_all(content.as_bytes())
                    .unwrap();
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    fn parse(extra: &[&str], draws: &std::path::Path) -> Result<ValidatedSieve, SieveArgsError> {
        let mut argv = vec!["x", "--draws", draws.to_str().unwrap()];
        argv.extend_from_slice(extra);
        Wrapper::try_parse_from(argv)
            .expect("clap parses")
            .args
            .validate()
    }

    #[test]
    fn a_good_request_builds_the_spec() {
        let f = draws_file("[1, 2, 3, 4, 5, 6]");
        let v = parse(
            &[
                "--prng",
                "lcg32",
                "--param",
                "a=0x41c64e6d",
                "--threshold",
                "0.5",
                "--draw-start",
                "1",
                "--window",
                "4",
                "--skip-min",
                "2",
                "--skip-max",
                "3",
                "--seed-start",
                "2^10",
                "--seed-end",
                "0x800",
                "--direction",
                "bidirectional",
            ],
            &f.0,
        )
        .unwrap();
        assert_eq!(v.spec.draws, vec![2, 3, 4, 5]);
        assert_eq!(v.spec.direction, Direction::Bidirectional);
        assert_eq!(
            v.seeds,
            JobSeeds::Range {
                start: 1024,
                end: 2048
            }
        );
        assert_eq!(
            v.spec.family,
            FamilyConfig::parse("lcg32", &[("a", "1103515245")]).unwrap()
        );
    }

    #[test]
    fn default_range_is_the_family_seed_space() {
        let f = draws_file("[1, 2]");
        let v = parse(&["--prng", "mt19937", "--threshold", "1"], &f.0).unwrap();
        assert_eq!(
            v.seeds,
            JobSeeds::Range {
                start: 0,
                end: 1 << 32
            }
        );
        let v = parse(&["--prng", "xorshift64", "--threshold", "1"], &f.0).unwrap();
        assert_eq!(
            v.seeds,
            JobSeeds::Range {
                start: 0,
                end: 1 << 64
            }
        );
    }

    #[test]
    fn every_bad_input_is_refused_with_a_named_problem() {
        let f = draws_file("[1, 2, 3]");
        let cases: &[(&[&str], &str)] = &[
            (
                &["--prng", "nope", "--threshold", "0.5"],
                "unknown PRNG family",
            ),
            (
                &["--prng", "lcg32", "--param", "zz=1", "--threshold", "0.5"],
                "unknown parameter",
            ),
            (
                &["--prng", "lcg32", "--param", "a", "--threshold", "0.5"],
                "NAME=VALUE",
            ),
            (&["--prng", "mt19937", "--threshold", "0"], "threshold"),
            (&["--prng", "mt19937", "--threshold", "1.5"], "threshold"),
            (&["--prng", "mt19937", "--threshold", "-0.1"], "threshold"),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--reverse-threshold",
                    "2",
                ],
                "threshold",
            ),
            (
                &["--prng", "mt19937", "--threshold", "0.5", "--window", "0"],
                "empty",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--draw-start",
                    "2",
                    "--window",
                    "2",
                ],
                "lower --draw-start or --window",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--seed-end",
                    "2^33",
                ],
                "outside the mt19937 seed space",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--seed-start",
                    "2^32",
                ],
                "outside the mt19937 seed space",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--seed-start",
                    "5",
                    "--seed-end",
                    "5",
                ],
                "is empty",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--seed-end",
                    "lots",
                ],
                "not a number",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--skip-min",
                    "5",
                    "--skip-max",
                    "4",
                ],
                "skip",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--chunk-size",
                    "0",
                ],
                "--chunk-size",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--target-chunk-secs",
                    "0",
                ],
                "--target-chunk-secs",
            ),
            (
                &["--prng", "mt19937", "--threshold", "0.5", "--modulus", "1"],
                "--modulus",
            ),
            (
                &[
                    "--prng",
                    "mt19937",
                    "--threshold",
                    "0.5",
                    "--sessions",
                    "night",
                ],
                "unknown session",
            ),
        ];
        for (args, expected) in cases {
            let err = parse(args, &f.0).expect_err(&format!("{args:?} must be refused"));
            assert!(
                err.to_string().contains(expected),
                "{args:?}: '{err}' should mention '{expected}'"
            );
        }
        let malformed = draws_file("[1, 2,");
        let err = parse(&["--prng", "mt19937", "--threshold", "0.5"], &malformed.0).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = parse(
            &["--prng", "mt19937", "--threshold", "0.5"],
            std::path::Path::new("/nonexistent/d.json"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot read draws file"), "{err}");
    }

    #[test]
    fn seeds_files_are_sorted_deduplicated_and_checked() {
        assert_eq!(
            parse_seeds_file("s", "[5, 1, 5, 3]").unwrap(),
            vec![1, 3, 5]
        );
        assert_eq!(parse_seeds_file("s", "7\n2, 9\n").unwrap(), vec![2, 7, 9]);
        assert!(parse_seeds_file("s", "[]").is_err());
        assert!(parse_seeds_file("s", "1 x").is_err());
        let draws = draws_file("[1, 2]");
        let seeds = draws_file("[1, 4294967296]");
        let seeds_arg = seeds.0.to_str().unwrap().to_string();
        let err = parse(
            &[
                "--prng",
                "mt19937",
                "--threshold",
                "1",
                "--seeds-file",
                &seeds_arg,
            ],
            &draws.0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("seed space"), "{err}");
    }

    #[test]
    fn seed_bounds() {
        assert_eq!(parse_seed_bound("f", "2^64").unwrap(), 1u128 << 64);
        assert_eq!(parse_seed_bound("f", "0xff").unwrap(), 255);
        assert_eq!(parse_seed_bound("f", "1_000").unwrap(), 1000);
        assert!(parse_seed_bound("f", "2^65").is_err());
        assert!(parse_seed_bound("f", "-1").is_err());
    }
}
