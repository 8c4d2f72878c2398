//! What seed slots and the script consumer both decide from a delivery's history: backoff
//! jitter, whether this is a message's last delivery before the broker's delivery limit, and the
//! headers and delay for parking a message while Redis is down.

use std::time::Instant;

use seedq_broker::lapin::BasicProperties;
use seedq_broker::Headers;
use seedq_protocol::topology::headers as h;
use seedq_protocol::RetryConfig;

/// A jitter fraction in [0, 1) without a random-number dependency.
pub fn jitter01() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos() ^ seedq_protocol::now_ms() as u128);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `Some(n)`, the number of this delivery, when it is the message's last one before the quorum
/// queue's `delivery_limit` (one spare): a message that keeps coming back unsettled (its
/// consumers crash on it) would next be dead-lettered by the broker, with nothing told to Redis,
/// so the consumer dead-letters it itself instead, with the reason and a record for the job.
pub fn last_delivery(props: &BasicProperties, delivery_limit: u32) -> Option<u64> {
    let deliveries = seedq_broker::delivery_count(props) + 1;
    let limit = u64::from(delivery_limit);
    (limit > 1 && deliveries >= limit).then_some(deliveries)
}

/// How to park a message in the delay queue while Redis is unreachable.
pub struct Parking {
    /// The delivery's headers with `x-seedq-redis-waits` bumped and the error set.
    pub headers: Headers,
    pub delay_ms: u64,
    /// Times it has now been parked (the attempt count is untouched: Redis is not its fault).
    pub waits: u32,
}

/// The delay grows with the waits, as retries do, so a long outage costs few redeliveries.
pub fn parking(props: &BasicProperties, retry: &RetryConfig) -> Parking {
    let mut headers = seedq_broker::headers_of(props);
    let before: u32 = headers
        .get(h::REDIS_WAITS)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let delay_ms = retry.backoff_ms(before.saturating_add(2), jitter01());
    let waits = before + 1;
    headers.insert(h::REDIS_WAITS.into(), waits.to_string());
    headers.insert(h::ERROR.into(), "redis_unavailable".into());
    Parking {
        headers,
        delay_ms,
        waits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_broker::lapin::types::{AMQPValue, FieldTable};

    fn delivered(count: Option<i64>, redis_waits: Option<&str>) -> BasicProperties {
        let mut table = FieldTable::default();
        if let Some(n) = count {
            table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(n));
        }
        if let Some(w) = redis_waits {
            table.insert(h::REDIS_WAITS.into(), AMQPValue::LongString(w.into()));
        }
        BasicProperties::default().with_headers(table)
    }

    #[test]
    fn only_the_delivery_before_the_limit_is_the_last() {
        assert_eq!(last_delivery(&delivered(None, None), 20), None);
        assert_eq!(last_delivery(&delivered(Some(17), None), 20), None);
        assert_eq!(last_delivery(&delivered(Some(19), None), 20), Some(20));
        assert_eq!(last_delivery(&delivered(Some(1), None), 2), Some(2));
        assert_eq!(
            last_delivery(&delivered(Some(5), None), 1),
            None,
            "a limit of 1 leaves no spare delivery"
        );
    }

    #[test]
    fn parking_counts_waits_and_grows_the_delay() {
        let retry = RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 500,
            max_backoff_ms: 10_000,
        };
        let first = parking(&delivered(None, None), &retry);
        assert_eq!(first.waits, 1);
        assert_eq!(
            first.headers.get(h::REDIS_WAITS).map(String::as_str),
            Some("1")
        );
        assert_eq!(
            first.headers.get(h::ERROR).map(String::as_str),
            Some("redis_unavailable")
        );
        let later = parking(&delivered(None, Some("6")), &retry);
        assert_eq!(later.waits, 7);
        assert!(
            later.delay_ms >= first.delay_ms,
            "{} < {}",
            later.delay_ms,
            first.delay_ms
        );
    }
}
