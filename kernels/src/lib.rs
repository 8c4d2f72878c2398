#![warn(missing_docs)]
//! seedq-kernels: the fast sieve backends and the analysis statistics.
//!
//! The definitions (families, the sieve contract, the scalar reference) live in `seedq-core`
//! and are re-exported here under the same paths ([`family`], [`spec`], [`mod@reference`]);
//! this crate holds the backends that must agree with the reference bit for bit ([`cpu`],
//! [`gpu`]), the per-seed statistics of analysis jobs ([`analysis`]) and [`bench`] workloads.
//!
//! Every backend implements [`SieveBackend`], which is what a consumer's GPU or CPU slot holds.

pub mod analysis;
pub mod bench;
pub mod cpu;
pub mod gpu;

pub use seedq_core::{family, spec};

/// The scalar reference ([`seedq_core::reference`]) and [`ReferenceBackend`], its backend form.
pub mod reference {
    pub use super::ReferenceBackend;
    pub use seedq_core::reference::*;
}

pub use family::{Family, FamilyConfig, FamilyParams};
pub use seedq_core::Backend;
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

/// The reference implementation as a [`SieveBackend`] (validates, then runs
/// [`reference::sieve`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReferenceBackend;

impl SieveBackend for ReferenceBackend {
    fn describe(&self) -> String {
        "reference (scalar, 1 thread)".to_string()
    }

    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
        reference::try_sieve(spec, seeds)
    }
}
