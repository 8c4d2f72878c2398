//! seedq-kernels: the PRNG families and the seed sieve.
//!
//! The sieve asks, for every candidate seed, whether the generator seeded with it reproduces a
//! window of observed draws (mod `modulus`) often enough. This crate holds the definitions
//! ([`family`]), the job-independent contract ([`spec`]), a scalar reference implementation that
//! is obviously correct ([`mod@reference`]) and the fast backends that must agree with it bit for bit
//! ([`cpu`], [`gpu`]).
//!
//! Every backend implements [`SieveBackend`], which is what a consumer's GPU or CPU slot holds.

pub mod analysis;
pub mod bench;
pub mod cpu;
pub mod family;
pub mod gpu;
pub mod reference;
pub mod spec;

pub use family::{Family, FamilyConfig};
pub use spec::{
    Direction, PassResult, SeedSet, SieveError, SieveOutcome, SieveSpec, SkipMode, Strategy,
    Survivor, Threshold,
};

/// A device (or thread pool) that can run a sieve over a set of seeds.
///
/// Implementations must return exactly what [`reference::sieve`] returns for the same input:
/// survivors sorted by seed, one record per seed, identical whatever the chunking.
pub trait SieveBackend: Send {
    /// Short human-readable name for logs and heartbeats, e.g. `cpu(2 threads)` or `cuda:0 (H200)`.
    fn describe(&self) -> String;
    /// Runs the sieve. `spec` has been validated with [`SieveSpec::validate`] by the caller.
    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError>;
}
