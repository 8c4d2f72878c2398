// seedq_shim.h: the CUDA execution model emulated on CPU threads, so that sieve.cu compiles
// with g++ and runs on the host (the "host shim", used to prove the kernels without a GPU).
//
// Each CUDA thread of a block is an OS thread; blocks run one after another. A warp is 32
// consecutive threads sharing a SeedqShimWarp whose barrier makes ballot and shuffle behave as
// on the device: every lane contributes, then every lane reads the combined value. Atomics are
// real (GCC builtins), so the compaction is exercised under true concurrency.
#ifndef SEEDQ_SHIM_H
#define SEEDQ_SHIM_H

#include <atomic>
#include <barrier>

struct seedq_dim3 {
    unsigned x, y, z;
};
extern thread_local seedq_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define SEEDQ_DEV inline
#define SEEDQ_KERNEL extern "C" void
#define SEEDQ_WARP_SIZE 32u

struct SeedqShimWarp {
    std::barrier<> bar{32};
    std::atomic<u64> bits{0};
    u64 slots[32];
};
extern thread_local SeedqShimWarp* seedq_shim_warp;

SEEDQ_DEV u64 seedq_umul64hi(u64 a, u64 b) { return (u64)(((unsigned __int128)a * b) >> 64); }
SEEDQ_DEV u32 seedq_umulhi32(u32 a, u32 b) { return (u32)(((u64)a * b) >> 32); }
SEEDQ_DEV u32 seedq_popc64(u64 v) { return (u32)__builtin_popcountll(v); }
SEEDQ_DEV u32 seedq_ffs64(u64 v) { return (u32)__builtin_ffsll((long long)v); }
SEEDQ_DEV u32 seedq_lane() { return threadIdx.x & 31u; }
SEEDQ_DEV u64 seedq_ballot(bool pred) {
    SeedqShimWarp* w = seedq_shim_warp;
    if (pred) w->bits.fetch_or(1ull << seedq_lane());
    w->bar.arrive_and_wait();
    u64 mask = w->bits.load();
    w->bar.arrive_and_wait();
    if (seedq_lane() == 0) w->bits.store(0);
    w->bar.arrive_and_wait();
    return mask;
}
SEEDQ_DEV u64 seedq_shfl_u64(u64 v, u32 src) {
    SeedqShimWarp* w = seedq_shim_warp;
    w->slots[seedq_lane()] = v;
    w->bar.arrive_and_wait();
    u64 r = w->slots[src];
    w->bar.arrive_and_wait();
    return r;
}
SEEDQ_DEV u64 seedq_atomic_add_u64(u64* p, u64 v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
SEEDQ_DEV u32 seedq_atomic_add_shared_u32(u32* p, u32 v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
SEEDQ_DEV void seedq_syncwarp() { seedq_shim_warp->bar.arrive_and_wait(); }

// Shared memory: one buffer per emulated block (shim.cpp allocates it and resets the cursor
// before each thread starts). Every thread makes the same allocations in the same order, so
// all threads of a block get the same addresses, as with `__shared__` arrays on a device.
#define SEEDQ_SHIM_SHARED_BYTES (64u * 1024u)
extern thread_local unsigned char* seedq_shim_smem;
extern thread_local unsigned long long seedq_shim_smem_used;
inline void* seedq_shim_shared(unsigned long long bytes) {
    unsigned long long at = (seedq_shim_smem_used + 15u) & ~15ull;
    if (at + bytes > SEEDQ_SHIM_SHARED_BYTES) __builtin_trap(); // a kernel outgrew the shim's block
    seedq_shim_smem_used = at + bytes;
    return seedq_shim_smem + at;
}
#define SEEDQ_SHARED_ARRAY(T, name, n) T* name = (T*)seedq_shim_shared(sizeof(T) * (n))
SEEDQ_DEV u64 seedq_ldg(const u64* p) { return *p; }
SEEDQ_DEV u32 seedq_ldg32(const u32* p) { return *p; }

#endif // SEEDQ_SHIM_H
