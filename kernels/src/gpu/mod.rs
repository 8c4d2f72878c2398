//! GPU backends (CUDA via cudarc, ROCm via hip-sys). STUB: owned by the GPU helper.
