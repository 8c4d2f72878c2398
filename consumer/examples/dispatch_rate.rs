//! Measures end-to-end dispatch through a running `seedq-consumer`: enqueues a job of N chunks
//! of `--chunk` seeds each (1 by default) and reports chunks per second from the first applied
//! result to the last. Start a consumer on the same namespace first:
//!
//! ```text
//! seedq-consumer --namespace rate --backend cpu --slots 4 --no-scripts &
//! cargo run --release -p seedq-consumer --example dispatch_rate -- rate 20000 1
//! ```

use std::time::{Duration, Instant};

use seedq_broker::Broker;
use seedq_kernels::{Family, FamilyConfig, SieveSpec, Threshold};
use seedq_protocol::{BrokerSettings, ChunkMessage, Job, JobSeeds, JobSpec};
use seedq_store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let ns = args.get(1).cloned().unwrap_or_else(|| "rate".into());
    let chunks: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    let chunk: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let store = Store::connect(seedq_protocol::DEFAULT_REDIS_URL, &ns).await?;
    let broker = Broker::connect(
        seedq_protocol::DEFAULT_AMQP_URL,
        "seedq-bench@dispatch",
        &ns,
    )
    .await?;
    broker.declare_topology(&BrokerSettings::default()).await?;
    let spec = SieveSpec {
        family: FamilyConfig::new(Family::Xorshift32),
        draws: vec![1, 2, 3, 4, 5, 6, 7, 8],
        modulus: 1000,
        offset: 0,
        offset_max: None,
        skip_min: 0,
        skip_max: 3,
        threshold: Threshold::parse(
            &std::env::var("RATE_THRESHOLD").unwrap_or_else(|_| "0.5".into()),
        )?,
        reverse_threshold: None,
        direction: Default::default(),
        skip_mode: Default::default(),
    };
    let id = format!("rate-{}", seedq_protocol::now_ms());
    let job = Job::new_seed_job(
        &id,
        JobSpec::Sieve(spec),
        JobSeeds::Range {
            start: 1,
            end: 1 + (chunks * chunk) as u128,
        },
        chunk,
    )?;
    store.create_job(&job).await?;
    let msgs: Vec<ChunkMessage> = (0..job.chunk_count)
        .map(|i| job.chunk_message(i).unwrap())
        .collect();
    let t0 = Instant::now();
    broker.publish_chunks(&job, &msgs).await?;
    eprintln!(
        "published {} chunks in {:.2}s",
        msgs.len(),
        t0.elapsed().as_secs_f64()
    );
    loop {
        let p = store.progress(&id).await?.expect("job");
        if p.finished() {
            let secs = (p.finished_at_ms.unwrap() - p.started_at_ms.unwrap()) as f64 / 1000.0;
            println!(
                "{} chunks of {} seeds: {:.2}s from first to last result = {:.0} chunks/s (wall incl. publish {:.2}s)",
                p.chunks_done,
                chunk,
                secs,
                p.chunks_done as f64 / secs,
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    store.delete_job(&id).await?;
    Ok(())
}
