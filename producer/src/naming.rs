//! Names the producer makes up: the stable digest inside derived job and batch ids, and the host
//! name inside its broker connection names. One definition of each, so that a sieve id and a
//! script batch id are hashed alike and every producer connection is named alike.

/// FNV-1a, 64 bit. Derived ids must stay the same across builds and Rust releases (re-running a
/// command must name the same job), which std's `DefaultHasher` does not promise. Not a security
/// boundary: a colliding id is refused by the store as a conflicting job.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// This machine's name, for `seedq-producer@<host>` connection names in the management UI.
/// `$HOSTNAME` is a shell variable that is often not exported, so the kernel's name comes first.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
