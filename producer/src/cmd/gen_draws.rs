//! `seedq-producer gen-draws`: writes a draws file produced by a known seed, for demos and
//! tests ("plant a seed, then find it").
//!
//! Draw `i` is output number `offset + skip + i*(skip+1)` of the generator seeded with `--seed`,
//! reduced mod `--modulus`: exactly what the sieve compares, so the planted seed matches every
//! draw at that skip. `--reverse` writes the window in reverse order, so the seed is found by a
//! reverse pass (and not, in general, by a forward one).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use seedq_core::FamilyConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrawsFormat {
    /// A JSON array of integers.
    Plain,
    /// The original's array of {date, session, draw} (alternating midday/evening, one day apart).
    Daily3,
}

#[derive(Debug, Clone, Args)]
pub struct GenDrawsArgs {
    #[arg(long)]
    pub prng: String,
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The planted seed.
    #[arg(long)]
    pub seed: u64,
    /// Number of draws.
    #[arg(long)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub skip: u32,
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
    #[arg(long, default_value_t = 1000)]
    pub modulus: u64,
    /// Write the window reversed (for reverse-pass searches).
    #[arg(long)]
    pub reverse: bool,
    #[arg(long, value_enum, default_value_t = DrawsFormat::Plain)]
    pub format: DrawsFormat,
    /// Output file (default: stdout).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// The planted window: draw `i` = output `offset + skip + i*(skip+1)` mod `modulus`.
pub fn planted_draws(
    family: &FamilyConfig,
    seed: u64,
    count: usize,
    skip: u32,
    offset: u64,
    modulus: u64,
) -> Vec<u64> {
    seedq_core::reference::planted_window(family, seed, offset, skip, count, modulus)
}

pub fn run(args: &GenDrawsArgs) -> anyhow::Result<()> {
    let overrides: Vec<(String, String)> = args
        .params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--param '{p}' must look like NAME=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    let family = FamilyConfig::parse(&args.prng, &overrides)?;
    anyhow::ensure!(args.modulus >= 2, "--modulus must be at least 2");
    anyhow::ensure!(args.count >= 1, "--count must be at least 1");
    anyhow::ensure!(
        (args.seed as u128) < family.family().seed_space_end(),
        "--seed {} is outside the {} seed space",
        args.seed,
        family.family()
    );
    let mut draws = planted_draws(
        &family,
        args.seed,
        args.count,
        args.skip,
        args.offset,
        args.modulus,
    );
    if args.reverse {
        draws.reverse();
    }
    let text = match args.format {
        DrawsFormat::Plain => serde_json::to_string(&draws)?,
        DrawsFormat::Daily3 => {
            let entries: Vec<serde_json::Value> = draws
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    serde_json::json!({
                        "date": format!("2000-01-01+{}d", i / 2),
                        "session": if i % 2 == 0 { "midday" } else { "evening" },
                        "draw": d,
                    })
                })
                .collect();
            serde_json::to_string_pretty(&entries)?
        }
    };
    match &args.out {
        Some(path) => std::fs::write(path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{text}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::Family;

    #[test]
    fn planted_draws_follow_the_sieve_numbering() {
        let family = FamilyConfig::new(Family::Mt19937);
        let (seed, skip, offset, modulus) = (12345, 2, 3, 1000);
        let draws = planted_draws(&family, seed, 5, skip, offset, modulus);
        for (i, d) in draws.iter().enumerate() {
            let n = offset + skip as u64 + i as u64 * (skip as u64 + 1);
            assert_eq!(*d, family.output_at(seed, n) % modulus, "draw {i}");
        }
    }
}
