//! The stable digest inside derived job and batch ids: one definition, so that a sieve id and a
//! script batch id are hashed alike. (The host name in connection names is
//! `seedq_protocol::hostname`, shared with the consumer.)

/// FNV-1a, 64 bit. Derived ids must stay the same across builds and Rust releases (re-running a
/// command must name the same job), which std's `DefaultHasher` does not promise. Not a security
/// boundary: a colliding id is refused by the store as a conflicting job.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
