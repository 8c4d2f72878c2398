//! Test-only fault injection (cargo feature `fault-injection`; the shipped binary has neither
//! this module nor its flag): `--inject-fault SLOT=SPEC` wraps one slot's backend in a
//! [`FaultyBackend`] that misbehaves the way a failing GPU does, to check that the slot's
//! self-test and quarantine catch it.
//!
//! `SPEC` is comma-separated:
//!
//! * `drop:P`: every survivor of a launch is dropped with probability `P` (a silent wrong answer);
//! * `error:P`: a launch fails with a backend error with probability `P`;
//! * `after:N`: launches `0..N` are clean (default 0);
//! * `until:N`: launches from `N` on are clean again (a device that recovers; default never).
//!
//! A launch is one backend call, whoever makes it: a chunk part, one family of the self-test
//! (one per family: 11 per run that passes) or the start-up calibration. The wrapper treats the self-test
//! like any chunk, which is the point: a bad device fails the known-answer check too.

use std::cell::Cell;

use seedq_kernels::{SeedSet, SieveBackend, SieveError, SieveOutcome, SieveSpec};

/// How a faulty backend misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Drops each survivor with this probability.
    Drop(f64),
    /// Fails a launch with this probability.
    Error(f64),
}

/// `--inject-fault SLOT=SPEC`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotFault {
    /// The slot (`cpu1`, `gpu0`).
    pub slot: String,
    pub kind: FaultKind,
    /// First faulty launch.
    pub after: u64,
    /// First clean launch after the faulty ones.
    pub until: Option<u64>,
}

impl std::str::FromStr for SlotFault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (slot, spec) = text.split_once('=').ok_or_else(|| {
            format!("--inject-fault takes SLOT=SPEC (cpu1=drop:0.01), not '{text}'")
        })?;
        let mut kind = None;
        let mut after = 0;
        let mut until = None;
        for part in spec.split(',') {
            let (key, value) = part
                .split_once(':')
                .ok_or_else(|| format!("'{part}': expected drop:P, error:P, after:N or until:N"))?;
            let probability = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|p| (0.0..=1.0).contains(p))
                    .ok_or_else(|| format!("'{part}': a probability from 0 to 1"))
            };
            let count = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("'{part}': a launch count"))
            };
            match key {
                "drop" => kind = Some(FaultKind::Drop(probability()?)),
                "error" => kind = Some(FaultKind::Error(probability()?)),
                "after" => after = count()?,
                "until" => until = Some(count()?),
                other => {
                    return Err(format!(
                        "unknown fault '{other}' (drop, error, after, until)"
                    ))
                }
            }
        }
        Ok(SlotFault {
            slot: slot.to_string(),
            kind: kind.ok_or("the fault needs drop:P or error:P")?,
            after,
            until,
        })
    }
}

/// A backend that misbehaves as its [`SlotFault`] says. It lives on its slot's thread, hence the
/// `Cell`s (a backend is `Send`, not `Sync`).
pub struct FaultyBackend {
    inner: Box<dyn SieveBackend>,
    fault: SlotFault,
    launches: Cell<u64>,
    rng: Cell<u64>,
}

impl FaultyBackend {
    pub fn new(inner: Box<dyn SieveBackend>, fault: SlotFault) -> FaultyBackend {
        // A fixed stream: a failing test can be rerun with the same faults.
        let rng = fault.slot.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        FaultyBackend {
            inner,
            fault,
            launches: Cell::new(0),
            rng: Cell::new(rng),
        }
    }

    /// splitmix64, as a uniform draw in [0, 1).
    fn uniform(&self) -> f64 {
        let mut z = self.rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn hits(&self, p: f64) -> bool {
        p >= 1.0 || self.uniform() < p
    }
}

impl SieveBackend for FaultyBackend {
    fn describe(&self) -> String {
        format!("{} [injected fault]", self.inner.describe())
    }

    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
        let launch = self.launches.get();
        self.launches.set(launch + 1);
        let faulty = launch >= self.fault.after && self.fault.until.is_none_or(|u| launch < u);
        if faulty {
            if let FaultKind::Error(p) = self.fault.kind {
                if self.hits(p) {
                    return Err(SieveError::Backend(format!(
                        "injected fault on launch {launch}"
                    )));
                }
            }
        }
        let mut out = self.inner.sieve(spec, seeds)?;
        if let (true, FaultKind::Drop(p)) = (faulty, self.fault.kind) {
            out.survivors.retain(|_| !self.hits(p));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let f: SlotFault = "cpu1=drop:0.01,after:11".parse().unwrap();
        assert_eq!(f.slot, "cpu1");
        assert_eq!(f.kind, FaultKind::Drop(0.01));
        assert_eq!((f.after, f.until), (11, None));
        let f: SlotFault = "gpu0=error:1,after:3,until:9".parse().unwrap();
        assert_eq!(f.kind, FaultKind::Error(1.0));
        assert_eq!((f.after, f.until), (3, Some(9)));
        assert!("cpu1".parse::<SlotFault>().is_err());
        assert!("cpu1=after:3".parse::<SlotFault>().is_err());
        assert!("cpu1=drop:2".parse::<SlotFault>().is_err());
        assert!("cpu1=melt:1".parse::<SlotFault>().is_err());
    }

    #[test]
    fn faults_hit_only_their_launches_and_fail_the_self_test() {
        let backend = FaultyBackend::new(
            Box::new(seedq_kernels::cpu::CpuBackend::new(1)),
            "cpu0=error:1,after:1,until:2".parse().unwrap(),
        );
        let spec = seedq_kernels::bench::Workload::named("xs32-exact")
            .unwrap()
            .spec(5)
            .unwrap();
        let seeds = SeedSet::Range { start: 0, end: 10 };
        assert!(backend.sieve(&spec, &seeds).is_ok(), "launch 0 is clean");
        assert!(backend.sieve(&spec, &seeds).is_err(), "launch 1 fails");
        assert!(
            backend.sieve(&spec, &seeds).is_ok(),
            "launch 2 is clean again"
        );

        let dropping = FaultyBackend::new(
            Box::new(seedq_kernels::cpu::CpuBackend::new(1)),
            "cpu0=drop:0.01".parse().unwrap(),
        );
        assert!(
            crate::selftest::run(&dropping).is_err(),
            "1 survivor in 100 dropped fails the known-answer check"
        );
        let erroring = FaultyBackend::new(
            Box::new(seedq_kernels::cpu::CpuBackend::new(1)),
            "cpu0=error:1".parse().unwrap(),
        );
        assert!(matches!(
            crate::selftest::run(&erroring),
            Err(crate::selftest::Failed::Backend { .. })
        ));
    }

    /// The figures of the closing note (run by hand: `cargo test --release -p seedq-consumer
    /// --features fault-injection -- --ignored --nocapture self_test_figures`): the self-test's
    /// duration on one CPU thread, and how often it misses a backend dropping 1 survivor in 100.
    #[test]
    #[ignore]
    fn self_test_figures() {
        let cpu = seedq_kernels::cpu::CpuBackend::new(1);
        let first = crate::selftest::run(&cpu).unwrap();
        let runs = 200;
        let started = std::time::Instant::now();
        for _ in 0..runs {
            crate::selftest::run(&cpu).unwrap();
        }
        let per_run = started.elapsed().as_secs_f64() / runs as f64;
        println!(
            "self-test: {} survivors compared, {:.2} ms per run on one CPU thread; overhead \
             {:.5}% at a 300 s interval",
            first.survivors,
            per_run * 1e3,
            per_run / 300.0 * 100.0
        );
        let trials = 5_000;
        let mut missed = 0;
        for t in 0..trials {
            let dropping = FaultyBackend::new(
                Box::new(seedq_kernels::cpu::CpuBackend::new(1)),
                format!("t{t}=drop:0.01").parse().unwrap(),
            );
            if crate::selftest::run(&dropping).is_ok() {
                missed += 1;
            }
        }
        println!(
            "drop 1 in 100: {missed} of {trials} self-tests missed it (expected 0.99^{} = {:.1e})",
            first.survivors,
            0.99f64.powi(first.survivors as i32)
        );
    }
}
