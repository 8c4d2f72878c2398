//! The producer's commands, one module each, every one with its clap arguments and a `run` that
//! `main` dispatches to and that returns the exit code. What several commands share lives outside:
//! argument parsing ([`crate::sieve_args`], [`crate::jobs_file`], [`crate::draws`]), planning
//! ([`crate::planner`]), enqueueing and publishing ([`crate::enqueue`], [`crate::publish`]),
//! following a job ([`crate::watch`]) and rendering ([`crate::progress`],
//! [`crate::results_format`]). The exit codes are listed in README.md and `main`'s doc.

pub mod analysis;
pub mod cancel;
pub mod collect;
pub mod declare;
pub mod dlq;
pub mod gen_draws;
pub mod nodes;
pub mod results;
pub mod resume;
pub mod scripts;
pub mod sieve;
pub mod status;
pub mod teardown;
pub mod top;
pub mod wait;

use crate::context::Env;

/// The job finished, but some of its chunks or tasks were dead-lettered (or cancelled).
pub const EXIT_DEAD_LETTERED: i32 = 3;
/// `--timeout` passed before the job finished; the job keeps running.
pub const EXIT_TIMEOUT: i32 = 4;

/// The error of a command given a job id the namespace does not hold.
pub fn no_such_job(env: &Env, id: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no job '{id}' in namespace '{}' (it may have expired; `seedq-producer status` lists the jobs)",
        env.namespace
    )
}
