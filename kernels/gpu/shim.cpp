// shim.cpp: runs the sieve kernels of sieve.cu on the CPU (the "host shim").
//
// The kernels are compiled from the very same source as on the GPU, through seedq_shim.h, and
// launched here on an emulated grid: blocks one after another, every thread of a block a real
// OS thread, warps synchronised by a barrier for ballot/shuffle. The Rust side
// (kernels/src/gpu/shim.rs) calls seedq_shim_launch exactly as the CUDA and HIP backends launch
// the device kernels, with host addresses in the parameter block.
#include <cstddef>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "seedq_compat.h"
#include "sieve.cu"

thread_local seedq_dim3 threadIdx, blockIdx, blockDim, gridDim;
thread_local SeedqShimWarp* seedq_shim_warp;
thread_local unsigned char* seedq_shim_smem;
thread_local unsigned long long seedq_shim_smem_used;

typedef void (*SeedqKernelFn)(SeedqParams);

static const struct {
    const char* name;
    SeedqKernelFn fn;
} kSeedqKernels[] = {
    {"seedq_sieve_xorshift32", seedq_sieve_xorshift32},
    {"seedq_sieve_xorshift64", seedq_sieve_xorshift64},
    {"seedq_sieve_xorshift128", seedq_sieve_xorshift128},
    {"seedq_sieve_pcg32", seedq_sieve_pcg32},
    {"seedq_sieve_lcg32", seedq_sieve_lcg32},
    {"seedq_sieve_java_lcg", seedq_sieve_java_lcg},
    {"seedq_sieve_minstd", seedq_sieve_minstd},
    {"seedq_sieve_mt19937", seedq_sieve_mt19937},
    {"seedq_sieve_mt19937_full", seedq_sieve_mt19937_full},
    {"seedq_sieve_mt19937_stream", seedq_sieve_mt19937_stream},
    {"seedq_sieve_xoshiro256pp", seedq_sieve_xoshiro256pp},
    {"seedq_sieve_philox4x32", seedq_sieve_philox4x32},
    {"seedq_sieve_sfc64", seedq_sieve_sfc64},
};

// Size of the launch description, so the Rust side can check its mirror of the layout.
extern "C" unsigned long long seedq_shim_params_size(void) { return sizeof(SeedqParams); }

// offsetof each field of SeedqParams in declaration order (the generated list), so the Rust
// side can check every field's offset, not only the size. Returns the number of fields written.
extern "C" unsigned long long seedq_shim_params_offsets(unsigned long long* out, unsigned long long cap) {
    static const unsigned long long offsets[] = SEEDQ_PARAMS_OFFSETS;
    const unsigned long long n = sizeof(offsets) / sizeof(offsets[0]);
    for (unsigned long long i = 0; i < n && i < cap; ++i) out[i] = offsets[i];
    return n;
}

// Returns 0 on success; -1 unknown kernel, -2 block size not a positive multiple of 32 or above
// SEEDQ_MAX_BLOCK (the kernels' shared arrays are sized for it).
extern "C" int seedq_shim_launch(const char* name, unsigned grid, unsigned block, const SeedqParams* params) {
    SeedqKernelFn fn = nullptr;
    for (const auto& k : kSeedqKernels) {
        if (std::strcmp(k.name, name) == 0) fn = k.fn;
    }
    if (!fn) return -1;
    if (block == 0 || block % 32 != 0 || block > SEEDQ_MAX_BLOCK) return -2;
    const SeedqParams p = *params;
    for (unsigned b = 0; b < grid; ++b) {
        std::vector<std::unique_ptr<SeedqShimWarp>> warps;
        std::unique_ptr<unsigned char[]> smem(new unsigned char[SEEDQ_SHIM_SHARED_BYTES]());
        unsigned char* smem_base = smem.get();
        for (unsigned w = 0; w < block / 32; ++w) warps.emplace_back(new SeedqShimWarp());
        std::vector<std::thread> threads;
        try {
            for (unsigned t = 0; t < block; ++t) {
                SeedqShimWarp* warp = warps[t / 32].get();
                threads.emplace_back([=] {
                    threadIdx = {t, 0, 0};
                    blockIdx = {b, 0, 0};
                    blockDim = {block, 1, 1};
                    gridDim = {grid, 1, 1};
                    seedq_shim_warp = warp;
                    seedq_shim_smem = smem_base;
                    seedq_shim_smem_used = 0;
                    fn(p);
                });
            }
        } catch (...) {
            // Threads already started would wait forever at their warp barrier: this is fatal.
            std::terminate();
        }
        for (auto& th : threads) th.join();
    }
    return 0;
}
