//! The scalar reference sieve. STUB: the kernels-reference helper replaces this file.

use crate::spec::{SeedSet, SieveOutcome, SieveSpec};

/// Runs the sieve exactly as the definitions say, one seed and one skip at a time.
pub fn sieve(spec: &SieveSpec, seeds: &SeedSet) -> SieveOutcome {
    let _ = (spec, seeds);
    unimplemented!("reference sieve")
}
