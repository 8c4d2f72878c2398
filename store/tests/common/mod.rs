//! What the store's integration tests share: the Redis they talk to, a store in a namespace of
//! their own, and the small sieve their jobs run.

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
