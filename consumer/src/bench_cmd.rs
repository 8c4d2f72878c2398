//! `seedq-consumer bench`: runs a named sieve workload on one backend. STUB: owned by the kernels-cpu helper.

use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench is not implemented yet")
}
