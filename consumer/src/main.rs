//! seedq-consumer: the node agent. STUB: owned by the pipeline-core helper (bench wiring kept).

mod bench_cmd;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "seedq-consumer", version, about = "seedq node agent")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the sieve kernels on a named workload (needs no broker).
    Bench(bench_cmd::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Bench(args)) => bench_cmd::run(args),
        None => anyhow::bail!("running a node is not implemented yet"),
    }
}
