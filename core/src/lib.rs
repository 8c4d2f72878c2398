#![warn(missing_docs)]
//! seedq-core: the definitions every part of seedq shares, and nothing that computes fast.
//!
//! The sieve asks, for every candidate seed, whether the generator seeded with it reproduces a
//! window of observed draws (mod `modulus`) often enough. This crate holds the families and
//! their parameters ([`family`]), the job-independent sieve contract ([`spec`]), the scalar
//! reference that is obviously correct and that every backend must match bit for bit
//! ([`mod@reference`]), and the `correlation`/`analysis` spec and result types ([`analysis`]).
//! `docs/semantics.md` states the semantics in prose.
//!
//! It depends on serde and thiserror only: the wire contract (`seedq-protocol`), the store and
//! the producer build on it without SIMD, rayon, a C++ compiler or GPU libraries, which live in
//! `seedq-kernels`.

pub mod analysis;
pub mod backend;
pub mod estimate;
pub mod family;
pub mod reference;
pub mod spec;

pub use backend::Backend;
pub use family::{Family, FamilyConfig, FamilyParams};
pub use spec::{
    Direction, PassResult, SeedSet, SieveError, SieveOutcome, SieveSpec, SkipMode, Strategy,
    Survivor, Threshold,
};
