//! Seed slots: one dedicated OS thread per GPU (or CPU slot) that owns its backend and runs one
//! chunk at a time. The async side sends work over a channel and awaits a oneshot, so no kernel
//! ever runs on a tokio worker (a blocked runtime would stop AMQP heartbeats).
//!
//! The backend is created ON the slot thread (a CUDA/HIP context belongs to the thread that made
//! it) and lives as long as the process: reconnecting to the broker does not reopen devices.
//! A panicking kernel is caught and reported as a backend error (retried, then dead-lettered);
//! it never takes the node down.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use seedq_kernels::analysis::{AnalysisKind, AnalysisSpec};
use seedq_kernels::bench::Workload;
use seedq_kernels::family::Family;
use seedq_kernels::{Direction, SeedSet, SieveBackend, SieveError, SieveSpec};
use seedq_protocol::survivors::{encode, PassCounts, RecordShape, SieveCounts};
use seedq_protocol::FlaggedSeed;
use tokio::sync::oneshot;

/// One unit of work for a slot.
pub enum Work {
    Sieve {
        spec: Arc<SieveSpec>,
        seeds: SeedSet,
        /// Keep counts and match histograms only, no per-seed records.
        count_only: bool,
    },
    Analysis {
        kind: AnalysisKind,
        spec: Arc<AnalysisSpec>,
        seeds: SeedSet,
    },
    /// Time the backend on [`Workload::calibration`] for each family (see [`calibrate`]).
    Calibrate { families: Vec<Family> },
    /// The known-answer check (`crate::selftest`).
    SelfTest,
}

/// What a slot returns for one chunk.
#[derive(Debug, Default)]
pub struct Output {
    pub seeds_tested: u64,
    /// Sieve: the survivors as compact pieces, in seed order.
    pub survivor_pieces: Vec<Vec<u8>>,
    /// Sieve: survivors in the pieces (or counted, for count-only jobs).
    pub survivor_count: u64,
    /// Count-only sieve: counts and match histograms.
    pub counts: Option<SieveCounts>,
    pub flagged: Vec<FlaggedSeed>,
    pub summary: Option<seedq_kernels::analysis::Summary>,
    /// `Work::Calibrate`: work units per second by family.
    pub calibration: Vec<(Family, f64)>,
    /// `Work::SelfTest`: its verdict.
    pub self_test: Option<Result<crate::selftest::Passed, crate::selftest::Failed>>,
    /// Kernel wall time.
    pub duration: Duration,
}

type Request = (Work, oneshot::Sender<Result<Output, SieveError>>);

/// Builds a slot's backend on the slot thread.
pub type BackendFactory = Box<dyn FnOnce() -> Result<Box<dyn SieveBackend>, SieveError> + Send>;

/// Handle on a slot thread.
pub struct SlotWorker {
    /// `gpu0`, `cpu1`, ...
    pub name: String,
    /// `SieveBackend::describe()`.
    pub backend: String,
    /// Throughput key model (`cpu` or the GPU model).
    pub gpu_model: String,
    tx: mpsc::Sender<Request>,
}

impl SlotWorker {
    /// Starts the slot thread, builds its backend there, and returns once it is ready.
    pub fn spawn(
        name: String,
        gpu_model: String,
        cpu_threads: usize,
        factory: BackendFactory,
    ) -> Result<SlotWorker, SieveError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, SieveError>>();
        let thread_name = format!("slot-{name}");
        std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let backend = match factory() {
                    Ok(b) => b,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(backend.describe()));
                // Analysis kernels run on rayon; give each slot its own small pool.
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(cpu_threads.max(1))
                    .build()
                    .ok();
                while let Ok((work, reply)) = rx.recv() {
                    let started = Instant::now();
                    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        execute(backend.as_ref(), pool.as_ref(), work)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown panic".into());
                        Err(SieveError::Backend(format!("kernel panicked: {what}")))
                    })
                    .map(|mut out| {
                        out.duration = started.elapsed();
                        out
                    });
                    let _ = reply.send(result);
                }
            })
            .map_err(|e| SieveError::Backend(format!("cannot start slot thread: {e}")))?;
        let backend = ready_rx.recv().map_err(|_| {
            SieveError::Backend("slot thread exited during backend initialisation".into())
        })??;
        Ok(SlotWorker {
            name,
            backend,
            gpu_model,
            tx,
        })
    }

    /// Runs one unit of work on the slot thread.
    pub async fn run(&self, work: Work) -> Result<Output, SieveError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        self.tx
            .send((work, reply_tx))
            .map_err(|_| SieveError::Backend(format!("slot {} thread is gone", self.name)))?;
        reply_rx
            .await
            .map_err(|_| SieveError::Backend(format!("slot {} dropped the chunk", self.name)))?
    }
}

/// How long one calibration run should take: long enough to time above the per-call fixed
/// costs, short enough that timing all eleven families adds well under a second to startup.
const CALIBRATION_SECS: f64 = 0.01;

/// Work units per second of `backend` on the calibration shape of each family, growing the seed
/// count until a run lasts [`CALIBRATION_SECS`] (after one warm-up run, which pays for thread
/// pools, JIT and module loads). A family that cannot be timed is left out.
///
/// The figure only seeds the planner's estimate for a family the cluster has never run; real
/// chunk timings replace it through the EMA. Without it the first job on a fresh cluster is
/// sized from the configured profile, which for a CPU slot can be off by two orders of magnitude
/// (too many tiny chunks, each paying a broker round trip).
pub fn calibrate(backend: &dyn SieveBackend, families: &[Family]) -> Vec<(Family, f64)> {
    families
        .iter()
        .filter_map(|&family| {
            let spec = Workload::calibration(family).spec(0).ok()?;
            let units_per_seed = seedq_protocol::sieve_work_per_seed(&spec);
            let space = u64::try_from(family.seed_space_end()).unwrap_or(u64::MAX);
            let range = |n: u64| SeedSet::Range {
                start: 0,
                end: n.min(space),
            };
            backend.sieve(&spec, &range(64)).ok()?;
            let mut seeds = 256u64;
            for _ in 0..32 {
                let started = Instant::now();
                backend.sieve(&spec, &range(seeds)).ok()?;
                let secs = started.elapsed().as_secs_f64();
                let tested = seeds.min(space);
                if secs >= CALIBRATION_SECS {
                    return Some((family, tested as f64 * units_per_seed / secs));
                }
                if tested == space {
                    return None;
                }
                let grow = if secs > 0.0 {
                    (1.5 * CALIBRATION_SECS / secs).ceil() as u64
                } else {
                    16
                };
                seeds = seeds.saturating_mul(grow.clamp(2, 16));
            }
            None
        })
        .collect()
}

fn execute(
    backend: &dyn SieveBackend,
    pool: Option<&rayon::ThreadPool>,
    work: Work,
) -> Result<Output, SieveError> {
    match work {
        Work::Calibrate { families } => Ok(Output {
            calibration: calibrate(backend, &families),
            ..Default::default()
        }),
        Work::SelfTest => Ok(Output {
            self_test: Some(crate::selftest::run(backend)),
            ..Default::default()
        }),
        Work::Sieve {
            spec,
            seeds,
            count_only,
        } => sieve_chunk(backend, &spec, &seeds, count_only),
        Work::Analysis { kind, spec, seeds } => {
            // Progress counts the chunk's seeds as planned (a list may repeat a seed).
            let planned = seeds.len();
            let run = || seedq_kernels::analysis::run(kind, &spec, &seeds);
            let outcome = match pool {
                Some(p) => p.install(run),
                None => run(),
            };
            let flagged = outcome
                .flagged
                .into_iter()
                .map(|record| FlaggedSeed {
                    seed: record.seed,
                    record,
                })
                .collect();
            Ok(Output {
                seeds_tested: planned,
                summary: Some(outcome.summary),
                flagged,
                ..Default::default()
            })
        }
    }
}

/// Seeds per backend call: a chunk is sieved in parts of at most this many seeds, each encoded
/// (or counted) before the next runs, so a slot holds one part's survivor records at a time
/// whatever the chunk's survivors (compact pieces take 3-4 bytes a survivor).
const SIEVE_PART_SEEDS: u64 = 1 << 20;

/// The chunk's seeds in consecutive parts of at most `size` seeds.
fn parts(seeds: &SeedSet, size: u64) -> Vec<SeedSet> {
    match seeds {
        SeedSet::Range { start, end } => {
            let mut out = Vec::new();
            let mut lo = *start;
            while lo < *end {
                let hi = lo.saturating_add(size).min(*end);
                out.push(SeedSet::Range { start: lo, end: hi });
                lo = hi;
            }
            out
        }
        SeedSet::List(list) => list
            .chunks(size as usize)
            .map(|c| SeedSet::List(c.to_vec()))
            .collect(),
    }
}

/// Sieves one chunk part by part: survivors become compact pieces, or, for a count-only job,
/// counts and best-match histograms per pass (a bidirectional job runs its forward pass, then
/// its reverse pass on the forward survivors, exactly as the bidirectional sieve does, so the
/// reverse count is the intersection).
fn sieve_chunk(
    backend: &dyn SieveBackend,
    spec: &SieveSpec,
    seeds: &SeedSet,
    count_only: bool,
) -> Result<Output, SieveError> {
    let mut out = Output::default();
    if count_only {
        let mut counts = SieveCounts::default();
        let one_pass = |direction: Direction| SieveSpec {
            direction,
            ..spec.clone()
        };
        let (forward, reverse) = (one_pass(Direction::Forward), one_pass(Direction::Reverse));
        for part in parts(seeds, SIEVE_PART_SEEDS) {
            let first = match spec.direction {
                Direction::Reverse => &reverse,
                _ => &forward,
            };
            let outcome = backend.sieve(first, &part)?;
            out.seeds_tested += outcome.seeds_tested;
            let tally = |survivors: &[seedq_kernels::Survivor], reverse: bool| {
                let mut c = PassCounts::default();
                for s in survivors {
                    let pass = if reverse { &s.reverse } else { &s.forward };
                    c.add(pass.as_ref().map_or(0, |p| p.matches));
                }
                c
            };
            let passed = match spec.direction {
                Direction::Forward | Direction::Reverse => {
                    let reverse = spec.direction == Direction::Reverse;
                    let c = tally(&outcome.survivors, reverse);
                    let n = c.survivors;
                    let slot = if reverse {
                        &mut counts.reverse
                    } else {
                        &mut counts.forward
                    };
                    merge_into(slot, c);
                    n
                }
                Direction::Bidirectional => {
                    merge_into(&mut counts.forward, tally(&outcome.survivors, false));
                    let candidates: Vec<u64> = outcome.survivors.iter().map(|s| s.seed).collect();
                    let c = if candidates.is_empty() {
                        PassCounts::default()
                    } else {
                        tally(
                            &backend
                                .sieve(&reverse, &SeedSet::List(candidates))?
                                .survivors,
                            true,
                        )
                    };
                    let n = c.survivors;
                    merge_into(&mut counts.reverse, c);
                    n
                }
            };
            counts.survivors += passed;
        }
        out.survivor_count = counts.survivors;
        out.counts = Some(counts);
        return Ok(out);
    }
    let shape = RecordShape::of(spec);
    for part in parts(seeds, SIEVE_PART_SEEDS) {
        let outcome = backend.sieve(spec, &part)?;
        out.seeds_tested += outcome.seeds_tested;
        out.survivor_count += outcome.survivors.len() as u64;
        out.survivor_pieces.extend(
            encode(&shape, &outcome.survivors)
                .map_err(|e| SieveError::Backend(format!("survivor records: {e}")))?,
        );
    }
    Ok(out)
}

fn merge_into(slot: &mut Option<PassCounts>, c: PassCounts) {
    slot.get_or_insert_with(PassCounts::default).merge(&c);
}
