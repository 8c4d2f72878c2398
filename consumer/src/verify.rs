//! Verification by redundancy on a node (`docs/verification.md`): the CPU referee that decides
//! a chunk whose two runs differ.
//!
//! The slots only run checks (`seedq_protocol::check`, handled in `crate::chunks`); when a
//! verification's result differs from the applied one, the chunk is run a third time on the
//! node's CPU backend, which the property tests hold equal to the scalar reference at every
//! SIMD level. It is not one of the node's slots: it is made the first time a node needs it
//! (rare by construction), on its own thread, and lives as long as the process. The slot that
//! met the mismatch waits for it: a wrong slot must not take more work before it is decided.

use std::sync::Arc;

use seedq_kernels::{SieveBackend, SieveError};
use tokio::sync::OnceCell;

use crate::slot::{Output, SlotWorker, Work};

/// The slot name a referee's results carry (`<node>/referee`).
pub const REFEREE_SLOT: &str = "referee";

/// The node's CPU referee, made on first use.
#[derive(Default)]
pub struct Referee {
    worker: OnceCell<Arc<SlotWorker>>,
}

impl Referee {
    /// Runs `work` on the referee (made now if this is its first decision).
    pub async fn run(&self, work: Work) -> Result<(Arc<SlotWorker>, Output), SieveError> {
        let worker = self
            .worker
            .get_or_try_init(|| async {
                // Building the backend makes a thread pool: not on a runtime thread.
                tokio::task::spawn_blocking(|| {
                    SlotWorker::spawn(
                        REFEREE_SLOT.into(),
                        "cpu".into(),
                        0,
                        Box::new(|| {
                            Ok(Box::new(seedq_kernels::cpu::CpuBackend::new(0))
                                as Box<dyn SieveBackend>)
                        }),
                    )
                    .map(Arc::new)
                })
                .await
                .map_err(|e| SieveError::Backend(format!("starting the CPU referee: {e}")))?
            })
            .await?
            .clone();
        let out = worker.run(work).await?;
        Ok((worker, out))
    }
}
