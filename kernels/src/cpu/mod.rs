//! The fast CPU backend. STUB: owned by the kernels-cpu helper.

use crate::spec::{SeedSet, SieveError, SieveOutcome, SieveSpec};
use crate::SieveBackend;

/// Sieves on all (or `threads`) CPU cores.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    pub threads: usize,
}

impl CpuBackend {
    pub fn new(threads: usize) -> Self {
        CpuBackend { threads: threads.max(1) }
    }
}

impl SieveBackend for CpuBackend {
    fn describe(&self) -> String {
        format!("cpu({} threads)", self.threads)
    }

    fn sieve(&self, spec: &SieveSpec, seeds: &SeedSet) -> Result<SieveOutcome, SieveError> {
        Ok(crate::reference::sieve(spec, seeds))
    }
}
