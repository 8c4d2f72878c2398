//! `seedq-producer results JOB`: a sieve's survivors, or a correlation / analysis job's flagged
//! seeds and the merged summary of its chunks, as JSON, JSON lines or CSV (formats in
//! [`crate::results_format`]), to stdout or `-o FILE`. A job still running gives its results so
//! far, with a note on stderr; a script batch's outputs are fetched by `collect` instead.
//!
//! Sieve survivors are streamed: read piece by piece from Redis (at most 64 KiB each), decoded
//! and written out in seed order, so memory stays bounded whatever the job's size (`--top N`
//! keeps N rows). A count-only job prints its merged counts and match histograms.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use seedq_core::analysis::Summary;
use seedq_core::SieveSpec;
use seedq_protocol::survivors::{decode, RecordShape, SieveCounts};
use seedq_protocol::{Job, JobSpec};
use seedq_store::Store;

use crate::cmd::no_such_job;
use crate::context::Env;
use crate::results_format::{self, ResultRow};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultsFormat {
    /// One JSON document (an array of rows for a sieve).
    Json,
    /// One JSON object per line (sieve rows).
    Jsonl,
    /// A header line, then one row per line.
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct ResultsArgs {
    pub job: String,
    #[arg(long, value_enum, default_value_t = ResultsFormat::Json)]
    pub format: ResultsFormat,
    /// Write to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Sieve: only survivors whose match rate (the mean of both passes for bidirectional jobs)
    /// is at least R.
    #[arg(long, value_name = "R")]
    pub min_rate: Option<f64>,
    /// Sieve: only the N survivors with the highest match rate (ties: smaller seed first),
    /// printed in seed order.
    #[arg(long, value_name = "N")]
    pub top: Option<usize>,
}

pub async fn run(env: &Env, args: ResultsArgs) -> anyhow::Result<i32> {
    if let Some(r) = args.min_rate {
        anyhow::ensure!(
            r.is_finite(),
            "--min-rate {r}: give a match rate, e.g. 0.05"
        );
    }
    let store = env.store().await?;
    let job = store
        .load_job(&args.job)
        .await?
        .ok_or_else(|| no_such_job(env, &args.job))?;
    let mut out: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let text = match &job.spec {
        JobSpec::Sieve(_) if job.count_only => {
            let counts = merged_counts(&store, &job.job_id).await?;
            anyhow::ensure!(
                args.format == ResultsFormat::Json,
                "job {} is count-only: its results are counts, printed as JSON (--format json)",
                job.job_id
            );
            serde_json::to_string_pretty(&counts)? + "\n"
        }
        JobSpec::Sieve(spec) => {
            stream_sieve(&store, &job, spec, &args, &mut out).await?;
            String::new()
        }
        JobSpec::Correlation(_) | JobSpec::Analysis(_) => {
            let results = analysis_results(&store, &job).await?;
            match args.format {
                ResultsFormat::Json | ResultsFormat::Jsonl => {
                    serde_json::to_string_pretty(&results)? + "\n"
                }
                ResultsFormat::Csv => {
                    // CSV holds the flagged seeds only; the summary's headline goes to stderr.
                    eprintln!("{}", summary_line(&results.summary));
                    results_format::analysis_csv(&results.flagged)
                }
            }
        }
        JobSpec::Scripts(_) => anyhow::bail!(
            "job {} is a script batch: use `seedq-producer collect {}`",
            args.job,
            args.job
        ),
    };
    let progress = store.progress(&args.job).await?;
    if let Some(p) = progress.as_ref().filter(|p| !p.finished()) {
        eprintln!(
            "note: job {} is still running ({}/{} chunks done): results so far",
            args.job, p.chunks_done, p.chunks_total
        );
    }
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(0)
}

/// Writes a sieve's survivors in seed order, piece by piece.
async fn stream_sieve(
    store: &Store,
    job: &Job,
    spec: &SieveSpec,
    args: &ResultsArgs,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let shape = RecordShape::of(spec);
    let mut pieces = store.survivor_pieces(job);
    let keep = |row: &ResultRow| args.min_rate.is_none_or(|r| row_rate(row) >= r);
    // --top N: the best N by rate (ties to the smaller seed), printed in seed order at the end.
    let mut top: BinaryHeap<Reverse<Ranked>> = BinaryHeap::new();
    let mut first = true;
    match args.format {
        ResultsFormat::Csv if args.top.is_none() => {
            writeln!(out, "{}", results_format::CSV_HEADER)?
        }
        ResultsFormat::Json if args.top.is_none() => write!(out, "[")?,
        _ => {}
    }
    while let Some(piece) = pieces.next().await? {
        let survivors = decode(&shape, &piece)
            .with_context(|| format!("reading the survivors of job {}", job.job_id))?;
        for s in &survivors {
            let row = results_format::row(s, spec.direction)?;
            if !keep(&row) {
                continue;
            }
            match args.top {
                Some(n) => {
                    top.push(Reverse(Ranked(row)));
                    if top.len() > n {
                        top.pop();
                    }
                }
                None => write_row(out, args.format, &row, &mut first)?,
            }
        }
    }
    if args.top.is_some() {
        let mut rows: Vec<ResultRow> = top.into_iter().map(|Reverse(Ranked(r))| r).collect();
        rows.sort_by_key(|r| r.seed);
        match args.format {
            ResultsFormat::Csv => writeln!(out, "{}", results_format::CSV_HEADER)?,
            ResultsFormat::Json => write!(out, "[")?,
            ResultsFormat::Jsonl => {}
        }
        for row in &rows {
            write_row(out, args.format, row, &mut first)?;
        }
    }
    if args.format == ResultsFormat::Json {
        writeln!(out, "{}]", if first { "" } else { "\n" })?;
    }
    Ok(())
}

fn write_row(
    out: &mut dyn std::io::Write,
    format: ResultsFormat,
    row: &ResultRow,
    first: &mut bool,
) -> anyhow::Result<()> {
    match format {
        ResultsFormat::Csv => writeln!(out, "{}", results_format::csv_line(row))?,
        ResultsFormat::Jsonl => writeln!(out, "{}", serde_json::to_string(row)?)?,
        ResultsFormat::Json => write!(
            out,
            "{}\n  {}",
            if *first { "" } else { "," },
            serde_json::to_string(row)?
        )?,
    }
    *first = false;
    Ok(())
}

/// The rate `--min-rate` and `--top` rank by: the mean of both passes for bidirectional jobs.
fn row_rate(row: &ResultRow) -> f64 {
    row.mean_rate.unwrap_or(row.match_rate)
}

/// A row ordered by rate, then by smaller seed first (so the heap drops the larger seed).
struct Ranked(ResultRow);

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        row_rate(&self.0)
            .total_cmp(&row_rate(&other.0))
            .then(other.0.seed.cmp(&self.0.seed))
    }
}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for Ranked {}

/// The sum of a count-only sieve's chunk counts.
pub async fn merged_counts(store: &Store, job_id: &str) -> anyhow::Result<SieveCounts> {
    let mut total = SieveCounts::default();
    for (member, value) in store.chunk_summaries(job_id).await? {
        let counts: SieveCounts = serde_json::from_value(value)
            .with_context(|| format!("chunk {member} of job {job_id}: unreadable counts"))?;
        total.merge(&counts);
    }
    Ok(total)
}

/// A correlation / analysis job's flagged seeds and merged chunk summaries.
async fn analysis_results(
    store: &Store,
    job: &Job,
) -> anyhow::Result<results_format::AnalysisResults> {
    let stored = store.survivors(&job.job_id).await?;
    let pairs: Vec<(u64, &str)> = stored.iter().map(|r| (r.seed, r.json.as_str())).collect();
    let flagged = results_format::flagged_records(&pairs)
        .with_context(|| format!("reading the flagged seeds of job {}", job.job_id))?;
    let summary = merged_summary(store, &job.job_id).await?;
    Ok(results_format::AnalysisResults {
        job_id: job.job_id.clone(),
        kind: job.kind().to_string(),
        summary,
        flagged,
    })
}

/// The sum of every applied chunk's summary (also what `status` shows of a running job).
pub async fn merged_summary(store: &Store, job_id: &str) -> anyhow::Result<Summary> {
    let chunks = store.chunk_summaries(job_id).await?;
    results_format::merge_summaries(&chunks)
        .with_context(|| format!("reading the chunk summaries of job {job_id}"))
}

/// One line: seeds tested and flagged, flags per test, constant streams.
pub fn summary_line(s: &Summary) -> String {
    let by_test = s
        .flagged_by_test
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut line = format!(
        "summary: {} seeds tested, {} flagged",
        s.seeds_tested, s.seeds_flagged
    );
    if !by_test.is_empty() {
        line += &format!(" ({by_test})");
    }
    if s.constant_streams > 0 {
        line += &format!(", constant streams {}", s.constant_streams);
    }
    line
}
