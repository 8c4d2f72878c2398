//! `seedq-producer sieve`: validate the arguments ([`crate::sieve_args`]), then create and
//! publish the job like every seed job ([`crate::enqueue`]). The default job id is
//! `sieve-<family>-<hash>` of the spec and seeds, so re-running the same command resumes the
//! same job (`docs/defects.md` C14: ids never collide by time).

use seedq_core::SieveSpec;
use seedq_protocol::{JobSeeds, JobSpec};

use crate::context::Env;
use crate::enqueue::{self, SeedJobRequest};
use crate::planner;
use crate::sieve_args::SieveArgs;
use seedq_core::estimate::SurvivorEstimate;

/// `sieve-<family>-<16 hex>` from the canonical JSON of the spec and seeds.
pub fn derived_job_id(spec: &SieveSpec, seeds: &JobSeeds) -> String {
    enqueue::derived_id("sieve", spec.family.family().name(), spec, seeds)
}

pub async fn run(env: &Env, args: SieveArgs) -> anyhow::Result<i32> {
    let validated = args.validate()?;
    let estimate = seedq_core::estimate::survivors(&validated.spec);
    if !args.count_only {
        let limit = args.max_survivors.unwrap_or(env.cluster.jobs.max_survivors);
        check_survivor_limit(estimate, validated.seeds.len(), limit)?;
    }
    let mut derived = derived_job_id(&validated.spec, &validated.seeds);
    if args.count_only {
        // A different job from the full sieve of the same spec: it keeps other results.
        derived.push_str("-counts");
    }
    let work_per_seed = planner::work_per_seed(&validated.spec);
    let mut request = SeedJobRequest::new(
        &args.job,
        JobSpec::Sieve(validated.spec),
        validated.seeds,
        work_per_seed,
        derived,
    );
    request.count_only = args.count_only;
    request.estimate = Some(estimate);
    enqueue::enqueue_seed_job(env, request).await
}

/// Refuses, before anything is published, a sieve expected to keep more than `limit`
/// survivors, naming the estimate, the limit and the ways out.
fn check_survivor_limit(estimate: SurvivorEstimate, seeds: u128, limit: u64) -> anyhow::Result<()> {
    let expected = estimate.survivors(seeds);
    if expected <= limit as f64 {
        return Ok(());
    }
    anyhow::bail!(
        "refused: {} {expected:.0} survivors expected ({:.3e} of {seeds} seeds survive under \
         random draws), over the limit of {limit} ([jobs] max_survivors). Tighten --threshold \
         (or use a longer --window, fewer skips, a larger --modulus), raise the limit with \
         --max-survivors N, or keep counts only with --count-only",
        if estimate.upper_bound {
            "up to"
        } else {
            "about"
        },
        estimate.rate,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::fnv1a64;
    use seedq_core::{Family, FamilyConfig, Threshold};

    fn spec(draws: Vec<u64>) -> SieveSpec {
        SieveSpec {
            family: FamilyConfig::new(Family::Mt19937),
            draws,
            modulus: 1000,
            offset: 0,
            offset_max: None,
            skip_min: 0,
            skip_max: 3,
            threshold: Threshold::parse("0.5").unwrap(),
            reverse_threshold: None,
            direction: Default::default(),
            skip_mode: Default::default(),
        }
    }

    #[test]
    fn a_loose_sieve_is_refused_with_the_estimate_and_the_ways_out() {
        let loose = seedq_core::estimate::survivors(&spec(vec![1, 2]));
        let err = check_survivor_limit(loose, 1 << 32, 1_000_000)
            .unwrap_err()
            .to_string();
        for needle in [
            "survivors expected",
            "1000000",
            "--max-survivors",
            "--count-only",
            "--threshold",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(check_survivor_limit(loose, 1000, 1_000_000).is_ok());
    }

    #[test]
    fn derived_ids_are_stable_and_spec_sensitive() {
        let seeds = JobSeeds::Range { start: 0, end: 100 };
        let a = derived_job_id(&spec(vec![1, 2]), &seeds);
        assert_eq!(a, derived_job_id(&spec(vec![1, 2]), &seeds));
        assert!(a.starts_with("sieve-mt19937-"));
        assert_ne!(a, derived_job_id(&spec(vec![1, 3]), &seeds));
        assert_ne!(
            a,
            derived_job_id(&spec(vec![1, 2]), &JobSeeds::Range { start: 1, end: 100 })
        );
        seedq_protocol::validate_identifier("job id", &a).unwrap();
        // FNV-1a test vectors: ids must not change between builds.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
