//! Verification by redundancy on a node (`docs/verification.md`): the CPU referee that decides
//! a chunk whose two runs differ.
//!
//! The slots only run checks (`seedq_protocol::check`, handled in `crate::chunks`); when a
//! verification's result differs from the applied one, the chunk is run a third time on the
//! node's CPU backend, which the property tests hold equal to the scalar reference at every
//! SIMD level. It is not one of the node's slots: it is made the first time a node needs it
//! (rare by construction), on its own thread, and lives as long as the process. The slot that
//! met the mismatch waits for it: a wrong slot must not take more work before it is decided.
//!
//! [`Peers`] tells a slot whether any other node could take a check it may not run, from the
//! live heartbeats: on a node alone a check would only bounce until its hops run out, so there
//! it goes to another slot of the node at once (or, with none, is given up at once).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use seedq_kernels::{SieveBackend, SieveError};
use tokio::sync::OnceCell;

use crate::context::NodeContext;
use crate::slot::{Output, SlotWorker, Work};

/// How long a view of the other nodes is trusted (heartbeats are written every few seconds).
const PEERS_TTL: Duration = Duration::from_secs(5);

/// Whether another node with a seed slot in service is alive, cached for [`PEERS_TTL`].
#[derive(Default)]
pub struct Peers {
    seen: Mutex<Option<(Instant, bool)>>,
}

impl Peers {
    /// Whether another live node has a seed slot that is not quarantined. When Redis cannot
    /// tell, `true`: a check then takes its ordinary hops.
    pub async fn other_node_alive(&self, ctx: &NodeContext) -> bool {
        let cached = *self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, alive)) = cached {
            if at.elapsed() < PEERS_TTL {
                return alive;
            }
        }
        let alive = match ctx.store().list_nodes().await {
            Ok(nodes) => nodes.iter().any(|n| {
                n.node != ctx.node_name() && n.slots.iter().any(|s| s.quarantined.is_none())
            }),
            Err(_) => return true,
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), alive));
        alive
    }
}

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
