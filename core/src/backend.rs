//! [`Backend`]: the kind of device a node's seed slots run on, named once for the cluster
//! config, the consumer's `--backend` flag and the kernels' device opening.

use serde::{Deserialize, Serialize};

/// The kind of device a seed slot runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The CPU backend (SIMD lanes, threads); every node can run it.
    #[default]
    Cpu,
    /// NVIDIA GPUs through CUDA (cudarc, NVRTC at run time).
    Cuda,
    /// AMD GPUs through ROCm/HIP (hip-sys, code objects built by hipcc); `rocm` is an alias.
    #[serde(alias = "rocm")]
    Hip,
}

impl Backend {
    /// Every backend, in the order the CLI lists them.
    pub const ALL: [Backend; 3] = [Backend::Cpu, Backend::Cuda, Backend::Hip];

    /// The name used in config files, flags, heartbeats and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
            Backend::Hip => "hip",
        }
    }

    /// Whether the backend drives a GPU.
    pub fn is_gpu(self) -> bool {
        self != Backend::Cpu
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown backend name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend '{0}' (expected cpu, cuda or hip)")]
pub struct UnknownBackend(pub String);

impl std::str::FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Backend::Cpu),
            "cuda" => Ok(Backend::Cuda),
            "hip" | "rocm" => Ok(Backend::Hip),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Backend::ALL {
            assert_eq!(b.as_str().parse::<Backend>(), Ok(b));
        }
        assert_eq!("rocm".parse::<Backend>(), Ok(Backend::Hip));
        assert!("shim".parse::<Backend>().is_err());
    }
}
