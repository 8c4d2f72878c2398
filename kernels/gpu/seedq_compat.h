// seedq_compat.h: one vocabulary for the sieve kernels on CUDA (NVRTC), HIP (hipcc) and the
// host shim (g++), so that sieve.cu is a single source for all three.
//
// Everything platform-specific the kernels use goes through a seedq_* name defined here:
// integer types, qualifiers, 64-bit multiply-high, popcount, warp ballot/shuffle, the lane
// index, 64-bit atomics and read-only loads. The shim's versions emulate the SIMT model on CPU
// threads (see seedq_shim.h), so the kernel's warp-aggregated survivor compaction runs as-is.
#ifndef SEEDQ_COMPAT_H
#define SEEDQ_COMPAT_H

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define SEEDQ_CUDA 1
#elif defined(__HIPCC__)
#define SEEDQ_HIP 1
#include <hip/hip_runtime.h>
#else
#define SEEDQ_SHIM 1
#endif

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// Threads per block: every kernel is compiled for at most this many (__launch_bounds__), and
// the per-thread and per-warp shared-memory arrays are sized for it.
#define SEEDQ_MAX_BLOCK 256u

#if defined(SEEDQ_CUDA) || defined(SEEDQ_HIP)
#define SEEDQ_DEV __device__ __forceinline__
#define SEEDQ_KERNEL extern "C" __global__ void __launch_bounds__(256)
// A block-wide array in on-chip shared memory (LDS on AMD).
#define SEEDQ_SHARED_ARRAY(T, name, n) __shared__ T name[n]
#else
#include "seedq_shim.h"
#endif

#if defined(SEEDQ_CUDA)
#define SEEDQ_WARP_SIZE 32u
SEEDQ_DEV u64 seedq_umul64hi(u64 a, u64 b) { return __umul64hi(a, b); }
SEEDQ_DEV u32 seedq_umulhi32(u32 a, u32 b) { return __umulhi(a, b); }
SEEDQ_DEV u32 seedq_popc64(u64 v) { return (u32)__popcll(v); }
SEEDQ_DEV u32 seedq_ffs64(u64 v) { return (u32)__ffsll((long long)v); }
SEEDQ_DEV u32 seedq_lane() { return threadIdx.x & 31u; }
// Called by every lane of the warp at a convergent point (the kernel's loops are warp-uniform).
SEEDQ_DEV u64 seedq_ballot(bool pred) { return (u64)__ballot_sync(0xffffffffu, pred); }
SEEDQ_DEV u64 seedq_shfl_u64(u64 v, u32 src) { return __shfl_sync(0xffffffffu, v, (int)src); }
SEEDQ_DEV u64 seedq_atomic_add_u64(u64* p, u64 v) { return atomicAdd(p, v); }
SEEDQ_DEV u64 seedq_ldg(const u64* p) { return __ldg(p); }
SEEDQ_DEV u32 seedq_ldg32(const u32* p) { return __ldg(p); }
// Orders the shared-memory accesses of the 32 lanes of a warp (every lane calls it).
SEEDQ_DEV void seedq_syncwarp() { __syncwarp(); }
SEEDQ_DEV u32 seedq_atomic_add_shared_u32(u32* p, u32 v) { return atomicAdd(p, v); }
#elif defined(SEEDQ_HIP)
// RDNA (gfx10) runs wave32 by default, GCN wave64: use the compiled warp size.
#define SEEDQ_WARP_SIZE ((u32)warpSize)
SEEDQ_DEV u64 seedq_umul64hi(u64 a, u64 b) { return __umul64hi(a, b); }
SEEDQ_DEV u32 seedq_umulhi32(u32 a, u32 b) { return __umulhi(a, b); }
SEEDQ_DEV u32 seedq_popc64(u64 v) { return (u32)__popcll(v); }
SEEDQ_DEV u32 seedq_ffs64(u64 v) { return (u32)__ffsll((unsigned long long)v); }
SEEDQ_DEV u32 seedq_lane() { return (u32)__lane_id(); }
SEEDQ_DEV u64 seedq_ballot(bool pred) { return (u64)__ballot(pred); }
SEEDQ_DEV u64 seedq_shfl_u64(u64 v, u32 src) {
    u32 lo = (u32)__shfl((int)(u32)v, (int)src);
    u32 hi = (u32)__shfl((int)(u32)(v >> 32), (int)src);
    return ((u64)hi << 32) | lo;
}
SEEDQ_DEV u64 seedq_atomic_add_u64(u64* p, u64 v) { return atomicAdd(p, v); }
SEEDQ_DEV u64 seedq_ldg(const u64* p) { return __ldg(p); }
SEEDQ_DEV u32 seedq_ldg32(const u32* p) { return __ldg(p); }
// A wavefront runs in lockstep: ordering its LDS accesses takes a fence, no barrier.
SEEDQ_DEV void seedq_syncwarp() {
    __builtin_amdgcn_fence(__ATOMIC_SEQ_CST, "wavefront");
    __builtin_amdgcn_wave_barrier();
}
SEEDQ_DEV u32 seedq_atomic_add_shared_u32(u32* p, u32 v) { return atomicAdd(p, v); }
#endif

SEEDQ_DEV u64 seedq_lanemask_lt(u32 lane) { return lane == 0 ? 0ull : (~0ull >> (64u - lane)); }

// The ballot of the 32-lane group holding this lane (the half of a 64-wide wavefront it lies
// in), for kernels that give one seed to each 32 lanes whatever the hardware's warp size.
SEEDQ_DEV u32 seedq_ballot32(bool pred) { return (u32)(seedq_ballot(pred) >> (seedq_lane() & 32u)); }

#endif // SEEDQ_COMPAT_H
