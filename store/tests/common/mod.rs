//! What the store's integration tests share: the Redis they talk to, a store in a namespace of
//! their own, the small sieve their jobs run, and a script batch.

// Each test file uses part of it.
#![allow(dead_code)]

use seedq_core::{Family, FamilyConfig, SieveSpec, Threshold};
use seedq_store::Store;

/// 127.0.0.1:6379, or `SEEDQ_REDIS_URL`.
pub fn redis_url() -> String {
    std::env::var("SEEDQ_REDIS_URL")
        .unwrap_or_else(|_| seedq_protocol::DEFAULT_REDIS_URL.to_string())
}

/// A store in a fresh namespace `t-<kind>-<tag>-<random>` (the test purges it).
pub async fn store(kind: &str, tag: &str) -> Store {
    let ns = format!(
        "t-{kind}-{tag}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    Store::connect(&redis_url(), &ns)
        .await
        .expect("redis reachable")
}

/// xorshift32, draws 1 2 3 mod 1000, skips 0..=2, every draw must match.
pub fn spec() -> SieveSpec {
    SieveSpec {
        family: FamilyConfig::new(Family::Xorshift32),
        draws: vec![1, 2, 3],
        modulus: 1000,
        offset: 0,
        offset_max: None,
        skip_min: 0,
        skip_max: 2,
        threshold: Threshold::parse("1").unwrap(),
        reverse_threshold: None,
        direction: Default::default(),
        skip_mode: Default::default(),
    }
}

/// A script batch of `tasks` tasks `<id>-0`, `<id>-1`...
pub async fn batch(s: &Store, id: &str, tasks: usize) -> seedq_protocol::Job {
    let tasks = (0..tasks)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "task_id": format!("{id}-{i}"), "script": "s.py", "timeout_secs": 60,
            }))
            .unwrap()
        })
        .collect();
    let job = seedq_protocol::Job::new_script_batch(
        id,
        seedq_protocol::ScriptBatch {
            tasks,
            output_dir: None,
            preserve_paths: false,
        },
    )
    .unwrap();
    s.create_job(&job).await.unwrap();
    job
}
