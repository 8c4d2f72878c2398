//! Which GPU a script job runs on, and the environment that binds it there.
//!
//! A job pinned with `gpu_id` gets that GPU (even when another script job already uses it: the
//! pin is the user's explicit choice). An unpinned job gets the node's least-loaded GPU (lowest
//! index on ties), so with `max_script_jobs <= gpus` every running job has a GPU of its own. The
//! binding is released when the [`GpuLease`] drops.
//!
//! The subprocess sees only its GPU: `CUDA_VISIBLE_DEVICES` and `HIP_VISIBLE_DEVICES` are both
//! set to the physical index (the CUDA variable is ignored by ROCm and vice versa, so setting
//! both is right on either backend, as the original did on the rigs), and the script should use
//! device 0. `SEEDQ_GPU_ID` carries the physical index for logs. The node's configured
//! environment (ROCm overrides, PyTorch allocator settings from `[nodes.env]`) comes first, so a
//! job cannot be bound to a GPU other than the one chosen here.

use std::sync::{Arc, Mutex};

/// The node's GPUs (physical indices from cluster.toml) and how many script jobs each is running.
#[derive(Debug)]
pub struct GpuPool {
    indices: Vec<u32>,
    running: Mutex<Vec<u32>>,
}

/// A GPU held by one job; `None` on a node without GPUs.
#[derive(Debug)]
pub struct GpuLease {
    pool: Arc<GpuPool>,
    /// Position in the pool's index list.
    slot: Option<usize>,
}

/// A pin the node cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the job is pinned to GPU {requested} but this node's GPUs are {available:?}")]
pub struct NoSuchGpu {
    pub requested: u32,
    pub available: Vec<u32>,
}

impl GpuPool {
    /// A pool over the given physical GPU indices (empty on a CPU node).
    pub fn new(indices: Vec<u32>) -> Arc<GpuPool> {
        let running = Mutex::new(vec![0; indices.len()]);
        Arc::new(GpuPool { indices, running })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the pinned GPU, or the least-loaded one.
    pub fn acquire(self: &Arc<Self>, pin: Option<u32>) -> Result<GpuLease, NoSuchGpu> {
        let mut running = self.lock();
        let slot = match pin {
            Some(requested) => match self.indices.iter().position(|&g| g == requested) {
                Some(slot) => Some(slot),
                None => {
                    return Err(NoSuchGpu {
                        requested,
                        available: self.indices.clone(),
                    })
                }
            },
            None => running
                .iter()
                .enumerate()
                .min_by_key(|(i, n)| (**n, *i))
                .map(|(i, _)| i),
        };
        if let Some(slot) = slot {
            running[slot] += 1;
        }
        Ok(GpuLease {
            pool: Arc::clone(self),
            slot,
        })
    }

    /// Jobs running per GPU.
    #[cfg(test)]
    pub fn load(&self) -> Vec<u32> {
        self.lock().clone()
    }
}

impl GpuLease {
    /// The physical GPU index.
    pub fn gpu(&self) -> Option<u32> {
        self.slot.map(|slot| self.pool.indices[slot])
    }

    /// The subprocess environment: the node's settings, then the binding (which wins).
    pub fn environment(&self, node_env: &[(String, String)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = node_env
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "CUDA_VISIBLE_DEVICES" | "HIP_VISIBLE_DEVICES" | "SEEDQ_GPU_ID"
                )
            })
            .cloned()
            .collect();
        if let Some(g) = self.gpu() {
            for key in [
                "CUDA_VISIBLE_DEVICES",
                "HIP_VISIBLE_DEVICES",
                "SEEDQ_GPU_ID",
            ] {
                env.push((key.to_string(), g.to_string()));
            }
        }
        env
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut running = self.pool.lock();
            running[slot] = running[slot].saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpinned_jobs_spread_and_pins_are_honoured() {
        let pool = GpuPool::new(vec![0, 1, 2]);
        let a = pool.acquire(None).unwrap();
        let b = pool.acquire(None).unwrap();
        let pinned = pool.acquire(Some(0)).unwrap();
        assert_eq!(
            (a.gpu(), b.gpu(), pinned.gpu()),
            (Some(0), Some(1), Some(0))
        );
        assert_eq!(pool.load(), vec![2, 1, 0]);
        let c = pool.acquire(None).unwrap();
        assert_eq!(c.gpu(), Some(2));
        drop(a);
        drop(pinned);
        assert_eq!(pool.load(), vec![0, 1, 1]);
        assert_eq!(pool.acquire(None).unwrap().gpu(), Some(0));
        assert_eq!(
            pool.acquire(Some(3)).unwrap_err(),
            NoSuchGpu {
                requested: 3,
                available: vec![0, 1, 2]
            }
        );
        // Physical indices need not start at 0.
        let sparse = GpuPool::new(vec![4, 7]);
        assert_eq!(sparse.acquire(Some(7)).unwrap().gpu(), Some(7));
        assert_eq!(sparse.acquire(None).unwrap().gpu(), Some(4));
        assert!(sparse.acquire(Some(0)).is_err());
    }

    #[test]
    fn environment_binds_the_gpu_over_node_settings() {
        let pool = GpuPool::new(vec![0, 1]);
        let lease = pool.acquire(Some(1)).unwrap();
        let node_env = vec![
            ("HSA_OVERRIDE_GFX_VERSION".to_string(), "10.3.0".to_string()),
            ("CUDA_VISIBLE_DEVICES".to_string(), "0,1".to_string()),
        ];
        let env = lease.environment(&node_env);
        assert_eq!(
            env,
            vec![
                ("HSA_OVERRIDE_GFX_VERSION".to_string(), "10.3.0".to_string()),
                ("CUDA_VISIBLE_DEVICES".to_string(), "1".to_string()),
                ("HIP_VISIBLE_DEVICES".to_string(), "1".to_string()),
                ("SEEDQ_GPU_ID".to_string(), "1".to_string()),
            ]
        );
        let cpu_only = GpuPool::new(vec![]);
        let lease = cpu_only.acquire(None).unwrap();
        assert_eq!(lease.gpu(), None);
        assert_eq!(lease.environment(&node_env).len(), 1);
    }
}
