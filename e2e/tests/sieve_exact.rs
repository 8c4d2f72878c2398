//! Planted seeds are found through the whole system (producer -> RabbitMQ -> consumer -> Redis
//! -> results) for every family, forward, reverse, bidirectional, variable skip and offset
//! ranges, and the
//! survivors equal what the sieve engine (`kernels::reference::sieve`) returns for the same spec.
//!
//! The thresholds are low on purpose (8 draws mod 10, half must match): besides the planted seed
//! each job has dozens of chance survivors, so "equal to the engine" checks real data, not one row.

use seedq_e2e::Namespace;
use seedq_kernels::{
    reference, Direction, Family, FamilyConfig, SeedSet, SieveSpec, SkipMode, Strategy, Threshold,
};
use serde_json::Value;

const K: usize = 8;
const MODULUS: u64 = 10;
const SKIP_MIN: u32 = 0;
const SKIP_MAX: u32 = 3;
const PLANT_SKIP: u32 = 2;
const SPAN: u64 = 6_000;

/// A seed well inside the family's space (and away from 0, a fixed point of xorshift).
fn planted_seed(family: Family, salt: u64) -> u64 {
    let base = 0x1234_5678u64 + salt * 7919;
    if family.seed_space_end() > 1 << 32 {
        base | (0x5A5Au64 << 40)
    } else {
        base
    }
}

struct Case {
    family: Family,
    seed: u64,
    direction: Direction,
    variable: bool,
    draws_file: String,
    start: u64,
    end: u64,
    modulus: u64,
    threshold: &'static str,
    offset_max: Option<u64>,
}

impl Case {
    fn new(
        ns: &Namespace,
        family: Family,
        salt: u64,
        direction: Direction,
        variable: bool,
    ) -> Case {
        let seed = planted_seed(family, salt);
        let fam = FamilyConfig::new(family);
        // Variable skip takes the SMALLEST matching skip near the expected one, so at modulus 10 a
        // chance match can derail even the planted seed; modulus 100 keeps chance matches rare
        // while threshold 0.25 still lets hundreds of chance survivors through.
        let (modulus, threshold) = if variable {
            (100, "0.25")
        } else {
            (MODULUS, "0.5")
        };
        let mut draws = planted_draws(&fam, seed, modulus, 0);
        match direction {
            Direction::Forward => {}
            Direction::Reverse => draws.reverse(),
            // First half forward, second half its mirror: the planted seed matches half of the
            // window in each direction, which the 0.5 threshold accepts.
            Direction::Bidirectional => {
                for i in 0..K / 2 {
                    draws[K - 1 - i] = draws[i];
                }
            }
        }
        let draws_file = seedq_e2e::write_json(
            ns,
            &format!("{}-{salt}.json", family.name()),
            &serde_json::json!(draws),
        );
        Case {
            family,
            seed,
            direction,
            variable,
            draws_file,
            start: seed - SPAN / 2,
            end: seed + SPAN / 2,
            modulus,
            threshold,
            offset_max: None,
        }
    }

    /// A forward case searching offsets `0..=offset_max`, its draws planted at offset `at`.
    fn offset_range(ns: &Namespace, family: Family, salt: u64, at: u64, offset_max: u64) -> Case {
        let mut case = Case::new(ns, family, salt, Direction::Forward, false);
        let fam = FamilyConfig::new(family);
        let draws: Vec<u64> = planted_draws(&fam, case.seed, case.modulus, at);
        std::fs::write(&case.draws_file, serde_json::to_vec(&draws).unwrap()).unwrap();
        case.offset_max = Some(offset_max);
        case
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "--prng".into(),
            self.family.name().into(),
            "--draws".into(),
            self.draws_file.clone(),
            "--modulus".into(),
            self.modulus.to_string(),
            "--skip-min".into(),
            SKIP_MIN.to_string(),
            "--skip-max".into(),
            SKIP_MAX.to_string(),
            "--threshold".into(),
            self.threshold.into(),
            "--seed-start".into(),
            self.start.to_string(),
            "--seed-end".into(),
            self.end.to_string(),
            "--chunk-size".into(),
            "1000".into(),
            "--direction".into(),
            match self.direction {
                Direction::Forward => "forward",
                Direction::Reverse => "reverse",
                Direction::Bidirectional => "bidirectional",
            }
            .into(),
        ];
        if self.variable {
            a.push("--variable-skip".into());
        }
        if let Some(m) = self.offset_max {
            a.extend(["--offset-max".into(), m.to_string()]);
        }
        a
    }

    fn spec(&self) -> SieveSpec {
        let text = std::fs::read_to_string(&self.draws_file).unwrap();
        SieveSpec {
            family: FamilyConfig::new(self.family),
            draws: serde_json::from_str(&text).unwrap(),
            modulus: self.modulus,
            offset: 0,
            offset_max: self.offset_max,
            skip_min: SKIP_MIN,
            skip_max: SKIP_MAX,
            threshold: Threshold::parse(self.threshold).unwrap(),
            reverse_threshold: None,
            direction: self.direction,
            skip_mode: if self.variable {
                SkipMode::Variable {
                    strategies: Strategy::presets(),
                }
            } else {
                SkipMode::Constant
            },
        }
    }
}

/// Draw i = output `at + PLANT_SKIP + i*(PLANT_SKIP+1)` mod `modulus` (the sieve's numbering).
fn planted_draws(fam: &FamilyConfig, seed: u64, modulus: u64, at: u64) -> Vec<u64> {
    (0..K as u64)
        .map(|i| {
            fam.output_at(seed, at + PLANT_SKIP as u64 + i * (PLANT_SKIP as u64 + 1)) % modulus
        })
        .collect()
}

/// The engine's survivors in the `results --format json` shape (the fields that must agree).
fn expected_rows(case: &Case) -> Vec<Value> {
    let spec = case.spec();
    let outcome = reference::sieve(
        &spec,
        &SeedSet::Range {
            start: case.start,
            end: case.end,
        },
    );
    outcome
        .survivors
        .iter()
        .map(|s| {
            let primary = match case.direction {
                Direction::Reverse => s.reverse.as_ref().unwrap(),
                _ => s.forward.as_ref().unwrap(),
            };
            let mut v = serde_json::json!({
                "seed": s.seed,
                "matches": primary.matches,
                "total": primary.total,
                "best_skip": primary.best_skip,
            });
            if let Some(o) = primary.best_offset {
                v["best_offset"] = o.into();
            }
            if let Some(st) = &primary.strategy {
                v["strategy"] = st.clone().into();
                v["skip_pattern"] = serde_json::json!(primary.skip_pattern);
            }
            if case.direction == Direction::Bidirectional {
                let r = s.reverse.as_ref().unwrap();
                v["reverse_matches"] = r.matches.into();
            }
            v
        })
        .collect()
}

fn project(row: &Value, template: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for key in template.as_object().unwrap().keys() {
        out.insert(key.clone(), row.get(key).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn run_cases(tag: &str, cases_of: impl Fn(&Namespace) -> Vec<Case>) {
    let mut ns = Namespace::new(tag);
    ns.start_consumer(&format!("{}-node", ns.name), 2, 1);
    let cases = cases_of(&ns);
    let jobs: Vec<String> = cases
        .iter()
        .map(|c| {
            let args = c.args();
            ns.sieve(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    for (case, job) in cases.iter().zip(&jobs) {
        ns.wait(job, 600);
        let got = ns.results(job);
        let expected = expected_rows(case);
        let label = format!(
            "{} {:?} variable={}",
            case.family.name(),
            case.direction,
            case.variable
        );
        assert!(
            got.iter().any(|r| r["seed"].as_u64() == Some(case.seed)),
            "{label}: planted seed {} not among {} survivors",
            case.seed,
            got.len()
        );
        assert!(
            expected.len() > 1,
            "{label}: the spec should give chance survivors too"
        );
        assert_eq!(
            got.len(),
            expected.len(),
            "{label}: survivor count differs from the engine"
        );
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(
                project(g, e),
                *e,
                "{label}: survivor differs from the engine"
            );
        }
        let status = ns.status(job);
        assert_eq!(
            status["chunks_done"], status["chunks_total"],
            "{label}: {status}"
        );
        assert_eq!(
            status["seeds_done"].as_u64(),
            Some(case.end - case.start),
            "{label}: {status}"
        );
    }
}

#[test]
fn every_family_forward() {
    run_cases("fwd", |ns| {
        Family::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| Case::new(ns, *f, i as u64, Direction::Forward, false))
            .collect()
    });
}

#[test]
fn every_family_reverse_and_bidirectional() {
    run_cases("rev", |ns| {
        Family::ALL
            .iter()
            .enumerate()
            .flat_map(|(i, f)| {
                [
                    Case::new(ns, *f, 100 + i as u64, Direction::Reverse, false),
                    Case::new(ns, *f, 200 + i as u64, Direction::Bidirectional, false),
                ]
            })
            .collect()
    });
}

#[test]
fn every_family_variable_skip() {
    run_cases("var", |ns| {
        Family::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| Case::new(ns, *f, 300 + i as u64, Direction::Forward, true))
            .collect()
    });
}

#[test]
fn every_family_offset_range() {
    run_cases("offs", |ns| {
        Family::ALL
            .iter()
            .enumerate()
            .map(|(i, f)| Case::offset_range(ns, *f, 400 + i as u64, 3 + i as u64 % 4, 9))
            .collect()
    });
}
