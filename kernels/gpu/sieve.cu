// sieve.cu: the seed sieve for every PRNG family, one source for CUDA (NVRTC at run time),
// HIP (hipcc at build time) and the host shim (g++). Semantics: kernels/src/reference.rs.
//
// One thread evaluates one seed at a time in a grid-stride loop that is uniform across each
// warp, so the survivor compaction can use warp-aggregated atomics (one atomicAdd per warp).
// Seeds come from the thread index (range launches) or from a candidate list (list launches:
// the reverse pass of a bidirectional job, prefiltered candidates, explicit seed lists).
//
// Constant skip runs one generator stream per seed, shared by every skip of the launch's skip
// group (at most SEEDQ_GROUP_SKIPS skips; the host cuts wider ranges into groups): draw i of
// skip t is output j = t + i*(t+1) after the offset, so the host lists every (j, skip, draw)
// "landing" of the group sorted by j (`landings`), and the kernel walks its stream once,
// testing each output against the landings on it. Match counts per skip live on chip (shared
// memory). mt19937 beyond output 226 gives each seed a warp: its 624-word state sits in shared
// memory, the twist runs 32 words at a time in its three dependency-free phases, and each block
// of 624 outputs is tested against the host's list of the landings on it, 32 at a time.
//
// The kernel answers one question per seed: does some skip (constant mode) or some strategy
// (variable mode) reach `need` matches? It stops at the first that does, and gives up on a skip
// or strategy as soon as the remaining draws cannot reach `need` (early exit both ways). The
// host recomputes the details of the few survivors (best skip, strategy, skip pattern) with
// the reference, so the kernel keeps no per-draw state: the window is read from global memory
// and a thread holds a few registers whatever the window length (no local arrays, no spills).
//
// Survivors: the counter counts every survivor even past the buffer's capacity, so the host
// sees an overflow exactly and re-runs the launch with a buffer of the reported size.
// Family numbers (SEEDQ_XORSHIFT32 ...), every family constant, the SEEDQ_FLAG_* bits and
// `struct SeedqParams` (the launch description) come from seedq_generated.h, which
// kernels/build.rs writes from seedq-core's family registry; the Rust side is generated from
// the same list, so nothing here is kept in sync by hand.
#ifndef SEEDQ_AMALGAMATED
#include "seedq_compat.h"
#include "seedq_generated.h"
#endif

// ---------------------------------------------------------------------------------------------
// Arithmetic helpers

// x mod m for x < 2^64 and 2 <= m with 3m < 2^64, minv = floor((2^64-1)/m): the quotient
// estimate is at most 2 short, so two conditional subtractions finish the job.
SEEDQ_DEV u64 seedq_mod_barrett(u64 x, u64 m, u64 minv) {
    u64 q = seedq_umul64hi(x, minv);
    u64 r = x - q * m;
    if (r >= m) r -= m;
    if (r >= m) r -= m;
    return r;
}

// x mod m for x < 2^32 and 2 <= m with 3m < 2^32, minv = floor(2^32/m): x*minv/2^32 lies in
// (x/m - 1, x/m], so the quotient estimate is at most 1 short and r = x - q*m < 2m. The one
// conditional subtraction is a minimum (r - m wraps above r when r < m), and x - q*m one
// multiply-add by -m: half the fastmod's work.
SEEDQ_DEV u32 seedq_mod_barrett32(u32 x, u32 m, u32 minv) {
    const u32 r = x + seedq_umulhi32(x, minv) * (0u - m);
    const u32 t = r - m;
    return t < r ? t : r;
}

// a mod d for a < 2^32, 2 <= d < 2^32, magic = floor((2^64-1)/d)+1 (Lemire, Kaser, Kurz 2019):
// the high 64 bits of (magic*a mod 2^64) * d, written as two 32x32->64 multiplies.
SEEDQ_DEV u64 seedq_fastmod32(u32 a, u64 magic, u32 d) {
    u64 lowbits = magic * a;
    u64 lo = (u64)(u32)lowbits * d;
    u64 hi = (lowbits >> 32) * (u64)d + (lo >> 32);
    return hi >> 32;
}

SEEDQ_DEV u32 seedq_rotr32(u32 v, u32 r) { return (v >> (r & 31u)) | (v << ((32u - r) & 31u)); }
SEEDQ_DEV u64 seedq_rotl64(u64 v, u32 r) { return (v << r) | (v >> (64u - r)); }

// ---------------------------------------------------------------------------------------------
// Generators. Each has: BITS (output width), init(seed), next() (the next output),
// discard(n), a Jump type with make_jump(n) and skip_next(j) = "discard n-1, return next()",
// and save()/restore() for the variable-skip search, which sometimes steps back to the start
// of the previous search window.

// A mark is a copy of the whole generator, for every family whose state is a few registers
// (all but the full-state mt19937).
#define SEEDQ_COPY_MARK(Self)                                                               \
    typedef Self Mark;                                                                      \
    SEEDQ_DEV Mark save() const { return *this; }                                           \
    SEEDQ_DEV void restore(const Mark& m, u64, u64, const SeedqParams&, u64) { *this = m; }

// Plain stepping for families without a cheap jump.
#define SEEDQ_STEPPING_JUMP(Self)                                                           \
    typedef u64 Jump;                                                                       \
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams&) { return n; }                \
    SEEDQ_DEV void discard(u64 n) {                                                         \
        for (u64 r = 0; r < n; ++r) next();                                                 \
    }                                                                                       \
    SEEDQ_DEV u64 skip_next(Jump n) {                                                       \
        discard(n - 1);                                                                     \
        return next();                                                                      \
    }                                                                                       \
    SEEDQ_COPY_MARK(Self)

// Jump-ahead for the affine families (lcg32, java_lcg, pcg32): n steps of x -> a*x + c compose
// into one affine map x -> A*x + C, found by square-and-multiply in O(log n) steps. `mad(x, y,
// z)` is x*y + z in the family's ring (mod m, mod 2^48, or the natural wrap mod 2^64) and `one`
// that ring's 1; Word is the narrowest type holding its elements, so lcg32 keeps 32x32->64
// multiplies.
template <class Word>
struct SeedqAffine {
    Word A, C;
};
template <class Word, class Mad>
SEEDQ_DEV SeedqAffine<Word> seedq_affine_power(Word a, Word c, u64 n, Word one, Mad mad) {
    SeedqAffine<Word> acc = {one, 0}, sq = {a, c};
    while (n) {
        if (n & 1) {
            acc.C = mad(acc.C, sq.A, sq.C);
            acc.A = mad(acc.A, sq.A, 0);
        }
        sq.C = mad(sq.C, sq.A, sq.C);
        sq.A = mad(sq.A, sq.A, 0);
        n >>= 1;
    }
    return acc;
}

struct GenXorshift32 {
    enum { BITS = 32 };
    u32 x, a, b, c;
    SEEDQ_DEV void init(u64 seed, const SeedqParams& p, u64) {
        x = (u32)seed;
        a = (u32)p.fam[0];
        b = (u32)p.fam[1];
        c = (u32)p.fam[2];
    }
    SEEDQ_DEV u64 next() {
        x ^= x << a;
        x ^= x >> b;
        x ^= x << c;
        return x;
    }
    SEEDQ_STEPPING_JUMP(GenXorshift32)
};

struct GenXorshift64 {
    enum { BITS = 64 };
    u64 x;
    SEEDQ_DEV void init(u64 seed, const SeedqParams&, u64) { x = seed; }
    SEEDQ_DEV u64 next() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x *= SEEDQ_XORSHIFT64_MULTIPLIER;
        return x;
    }
    SEEDQ_STEPPING_JUMP(GenXorshift64)
};

struct GenXorshift128 {
    enum { BITS = 32 };
    u32 x, y, z, w;
    SEEDQ_DEV void init(u64 seed, const SeedqParams&, u64) {
        x = (u32)seed;
        y = SEEDQ_XORSHIFT128_Y;
        z = SEEDQ_XORSHIFT128_Z;
        w = SEEDQ_XORSHIFT128_W;
    }
    SEEDQ_DEV u64 next() {
        u32 t = x ^ (x << 11);
        x = y;
        y = z;
        z = w;
        w = w ^ (w >> 19) ^ (t ^ (t >> 8));
        return w;
    }
    SEEDQ_STEPPING_JUMP(GenXorshift128)
};

struct GenXoshiro256pp {
    enum { BITS = 64 };
    u64 s0, s1, s2, s3;
    SEEDQ_DEV void init(u64 seed, const SeedqParams&, u64) {
        s0 = seed;
        s1 = SEEDQ_XOSHIRO_S1;
        s2 = SEEDQ_XOSHIRO_S2;
        s3 = SEEDQ_XOSHIRO_S3;
    }
    SEEDQ_DEV u64 next() {
        u64 out = seedq_rotl64(s0 + s3, 23) + s0;
        u64 t = s1 << 17;
        s2 ^= s0;
        s3 ^= s1;
        s1 ^= s2;
        s0 ^= s3;
        s2 ^= t;
        s3 = seedq_rotl64(s3, 45);
        return out;
    }
    SEEDQ_STEPPING_JUMP(GenXoshiro256pp)
};

struct GenSfc64 {
    enum { BITS = 64 };
    u64 a, b, c, cnt;
    SEEDQ_DEV void init(u64 seed, const SeedqParams&, u64) {
        a = seed;
        b = SEEDQ_SFC64_B;
        c = SEEDQ_SFC64_C;
        cnt = 1;
    }
    SEEDQ_DEV u64 next() {
        u64 tmp = a + b + cnt;
        cnt += 1;
        a = b ^ (b >> 11);
        b = c + (c << 3);
        c = seedq_rotl64(c, 24) + tmp;
        return tmp;
    }
    SEEDQ_STEPPING_JUMP(GenSfc64)
};

// lcg32: s = (a*s + c) mod m with a 64-bit intermediate; m = 0 means 2^32.
// fam = {a, c, m, floor((2^64-1)/m) or 0}. Jumps are affine maps (A, C) reduced mod m. All
// operands are below 2^32, so every product is one 32x32->64 multiply, and the default
// m = 2^31-1 reduces with two Mersenne folds instead of a division.
struct GenLcg32 {
    enum { BITS = 32 };
    u32 s, a, c, m;
    u64 minv;
    // x < 2^64 reduced mod m (the branch is uniform: m is a launch parameter).
    SEEDQ_DEV u32 reduce(u64 x) const {
        if (m == 0) return (u32)x;
        if (m == 0x7FFFFFFFu) {
            x = (x & 0x7FFFFFFFull) + (x >> 31); // < 2^31 + 2^33
            x = (x & 0x7FFFFFFFull) + (x >> 31); // < 2^31 + 2^3
            return (u32)(x >= 0x7FFFFFFFull ? x - 0x7FFFFFFFull : x);
        }
        return (u32)seedq_mod_barrett(x, m, minv);
    }
    SEEDQ_DEV void init(u64 seed, const SeedqParams& p, u64) {
        s = (u32)seed;
        m = (u32)p.fam[2];
        minv = p.fam[3];
        a = reduce(p.fam[0]);
        c = reduce(p.fam[1]);
    }
    // a, s < 2^32 and c < 2^32: a*s + c < 2^64.
    SEEDQ_DEV u64 next() {
        s = reduce((u64)a * s + c);
        return s;
    }
    typedef SeedqAffine<u32> Jump;
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams& p) {
        GenLcg32 g;
        g.init(0, p, 0);
        // By value: NVRTC then emits the same PTX as a hand-written loop (not so by reference).
        auto mad = [g](u32 x, u32 y, u32 z) { return g.reduce((u64)x * y + z); };
        return seedq_affine_power(g.a, g.c, n, g.reduce(1), mad);
    }
    SEEDQ_DEV u64 skip_next(const Jump& j) {
        s = reduce((u64)j.A * s + j.C);
        return s;
    }
    SEEDQ_DEV void discard(u64 n, const SeedqParams& p) {
        if (n) skip_next(make_jump(n, p));
    }
    SEEDQ_COPY_MARK(GenLcg32)
};

// java_lcg: 48-bit state, s = (a*s + c) mod 2^48, output s >> 16. fam = {a, c}.
struct GenJavaLcg {
    enum { BITS = 32 };
    u64 s, a, c;
    SEEDQ_DEV void init(u64 seed, const SeedqParams& p, u64) {
        s = seed & SEEDQ_JAVA_MASK;
        a = p.fam[0];
        c = p.fam[1];
    }
    SEEDQ_DEV u64 next() {
        s = (a * s + c) & SEEDQ_JAVA_MASK;
        return s >> 16;
    }
    typedef SeedqAffine<u64> Jump;
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams& p) {
        auto mad = [](u64 x, u64 y, u64 z) { return (x * y + z) & SEEDQ_JAVA_MASK; };
        return seedq_affine_power(p.fam[0], p.fam[1], n, (u64)1, mad);
    }
    SEEDQ_DEV u64 skip_next(const Jump& j) {
        s = (j.A * s + j.C) & SEEDQ_JAVA_MASK;
        return s >> 16;
    }
    SEEDQ_DEV void discard(u64 n, const SeedqParams& p) {
        if (n) skip_next(make_jump(n, p));
    }
    SEEDQ_COPY_MARK(GenJavaLcg)
};

// minstd: s = a*s mod m; seeded with seed mod m, 0 becomes 1. fam = {a, m, floor((2^64-1)/m)}.
struct GenMinstd {
    enum { BITS = 32 };
    u64 s, a, m, minv;
    SEEDQ_DEV void init(u64 seed, const SeedqParams& p, u64) {
        a = p.fam[0];
        m = p.fam[1];
        minv = p.fam[2];
        s = seedq_mod_barrett((u32)seed, m, minv);
        if (s == 0) s = 1;
    }
    SEEDQ_DEV u64 next() {
        s = seedq_mod_barrett(a * s, m, minv);
        return s;
    }
    typedef u64 Jump; // a^n mod m
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams& p) {
        u64 m = p.fam[1], minv = p.fam[2];
        u64 acc = 1 % m, sq = p.fam[0];
        while (n) {
            if (n & 1) acc = seedq_mod_barrett(acc * sq, m, minv);
            sq = seedq_mod_barrett(sq * sq, m, minv);
            n >>= 1;
        }
        return acc;
    }
    SEEDQ_DEV u64 skip_next(Jump j) {
        s = seedq_mod_barrett(j * s, m, minv);
        return s;
    }
    SEEDQ_DEV void discard(u64 n, const SeedqParams& p) {
        if (n) skip_next(make_jump(n, p));
    }
    SEEDQ_COPY_MARK(GenMinstd)
};

// pcg32: 64-bit LCG state (seeded with the 32-bit seed), output XSH-RR of the OLD state.
// fam = {inc, mult}. A Jump of n holds the affine map of n-1 steps: skip_next lands on the
// state whose output is wanted, outputs it, then steps once.
struct GenPcg32 {
    enum { BITS = 32 };
    u64 s, inc, mult;
    SEEDQ_DEV static u32 xsh_rr(u64 old) {
        u32 xs = (u32)(((old >> 18) ^ old) >> 27);
        return seedq_rotr32(xs, (u32)(old >> 59));
    }
    SEEDQ_DEV void init(u64 seed, const SeedqParams& p, u64) {
        s = (u32)seed;
        inc = p.fam[0];
        mult = p.fam[1];
    }
    SEEDQ_DEV u64 next() {
        u64 old = s;
        s = old * mult + inc;
        return xsh_rr(old);
    }
    typedef SeedqAffine<u64> Jump;
    SEEDQ_DEV static Jump affine(u64 n, const SeedqParams& p) {
        auto mad = [](u64 x, u64 y, u64 z) { return x * y + z; };
        return seedq_affine_power(p.fam[1], p.fam[0], n, (u64)1, mad);
    }
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams& p) { return affine(n - 1, p); }
    SEEDQ_DEV u64 skip_next(const Jump& j) {
        s = j.A * s + j.C;
        return next();
    }
    SEEDQ_DEV void discard(u64 n, const SeedqParams& p) {
        if (n) {
            Jump j = affine(n, p);
            s = j.A * s + j.C;
        }
    }
    SEEDQ_COPY_MARK(GenPcg32)
};

// philox4x32-10: key (seed lo, seed hi); output n is word 0 of the block of counter n (64-bit).
struct GenPhilox {
    enum { BITS = 32 };
    u32 k0, k1;
    u64 ctr;
    SEEDQ_DEV void init(u64 seed, const SeedqParams&, u64) {
        k0 = (u32)seed;
        k1 = (u32)(seed >> 32);
        ctr = 0;
    }
    SEEDQ_DEV static u32 block0(u64 n, u32 key0, u32 key1) {
        u32 c0 = (u32)n, c1 = (u32)(n >> 32), c2 = 0, c3 = 0;
#pragma unroll
        for (int round = 0; round < 10; ++round) {
            if (round > 0) {
                key0 += SEEDQ_PHILOX_W0;
                key1 += SEEDQ_PHILOX_W1;
            }
            u64 p0 = (u64)SEEDQ_PHILOX_M0 * c0;
            u64 p1 = (u64)SEEDQ_PHILOX_M1 * c2;
            u32 hi0 = (u32)(p0 >> 32), lo0 = (u32)p0;
            u32 hi1 = (u32)(p1 >> 32), lo1 = (u32)p1;
            u32 n0 = hi1 ^ c1 ^ key0, n2 = hi0 ^ c3 ^ key1;
            c0 = n0;
            c1 = lo1;
            c2 = n2;
            c3 = lo0;
        }
        return c0;
    }
    SEEDQ_DEV u64 next() {
        u64 n = ctr;
        ctr = n + 1;
        return block0(n, k0, k1);
    }
    typedef u64 Jump;
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams&) { return n; }
    SEEDQ_DEV u64 skip_next(Jump n) {
        ctr += n - 1;
        return next();
    }
    SEEDQ_DEV void discard(u64 n, const SeedqParams&) { ctr += n; }
    SEEDQ_COPY_MARK(GenPhilox)
};

// mt19937, outputs below 227 (php_mt_seed's technique): output j only needs the initial words
// mt[j], mt[j+1] and mt[j+397], so it is computed from the seed by running init_genrand up to
// word j+397 and twisting one word. No state array at all; position = next output number.
SEEDQ_DEV u32 seedq_mt_temper(u32 y) {
    y ^= y >> 11;
    y ^= (y << 7) & SEEDQ_MT_TEMPER_B;
    y ^= (y << 15) & SEEDQ_MT_TEMPER_C;
    y ^= y >> 18;
    return y;
}
SEEDQ_DEV u32 seedq_mt_twist_word(u32 a, u32 b, u32 c) {
    // A bit select, a shift, a multiply for the matrix term (y's low bit is b's) and a
    // three-way xor.
    const u32 y = (a & SEEDQ_MT_UPPER_MASK) | (b & SEEDQ_MT_LOWER_MASK);
    return c ^ (y >> 1) ^ ((b & 1u) * SEEDQ_MT_MATRIX_A);
}
SEEDQ_DEV u32 seedq_mt_output_below_227(u32 seed, u32 j) {
    u32 x = seed, i = 1;
    for (; i <= j; ++i) x = SEEDQ_MT_INIT_MULTIPLIER * (x ^ (x >> 30)) + i;
    u32 a = x; // mt[j]
    x = SEEDQ_MT_INIT_MULTIPLIER * (x ^ (x >> 30)) + i;
    ++i;
    u32 b = x; // mt[j+1]
#pragma unroll 4
    for (; i <= j + SEEDQ_MT_M; ++i) x = SEEDQ_MT_INIT_MULTIPLIER * (x ^ (x >> 30)) + i;
    return seedq_mt_temper(seedq_mt_twist_word(a, b, x)); // x = mt[j+397]
}

struct GenMtCapture {
    enum { BITS = 32 };
    u32 seed;
    u64 pos;
    SEEDQ_DEV void init(u64 s, const SeedqParams&, u64) {
        seed = (u32)s;
        pos = 0;
    }
    SEEDQ_DEV u64 next() { return seedq_mt_output_below_227(seed, (u32)pos++); }
    typedef u64 Jump;
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams&) { return n; }
    SEEDQ_DEV u64 skip_next(Jump n) {
        pos += n - 1;
        return next();
    }
    SEEDQ_DEV void discard(u64 n, const SeedqParams&) { pos += n; }
    SEEDQ_COPY_MARK(GenMtCapture)
};

// mt19937, any output: the 624-word state lives in global scratch, interleaved across threads
// (word w of thread t at scratch[w * threads + t]) so neighbouring threads' accesses coalesce.
struct GenMtFull {
    enum { BITS = 32 };
    u32* mt;
    u64 stride;
    u32 idx;
    SEEDQ_DEV u32& word(u32 w) { return mt[(u64)w * stride]; }
    SEEDQ_DEV void init(u64 s, const SeedqParams& p, u64 gtid) {
        mt = (u32*)p.scratch + gtid;
        stride = p.scratch_threads;
        u32 x = (u32)s;
        word(0) = x;
        for (u32 i = 1; i < SEEDQ_MT_N; ++i) {
            x = SEEDQ_MT_INIT_MULTIPLIER * (x ^ (x >> 30)) + i;
            word(i) = x;
        }
        idx = SEEDQ_MT_N;
    }
    SEEDQ_DEV void twist() {
        for (u32 i = 0; i < SEEDQ_MT_N; ++i) {
            u32 i1 = i + 1 == SEEDQ_MT_N ? 0u : i + 1;
            u32 im = i + SEEDQ_MT_M >= SEEDQ_MT_N ? i + SEEDQ_MT_M - SEEDQ_MT_N : i + SEEDQ_MT_M;
            word(i) = seedq_mt_twist_word(word(i), word(i1), word(im));
        }
        idx = 0;
    }
    SEEDQ_DEV u64 next() {
        if (idx >= SEEDQ_MT_N) twist();
        return seedq_mt_temper(word(idx++));
    }
    SEEDQ_DEV void discard(u64 n, const SeedqParams&) { advance(n); }
    SEEDQ_DEV void advance(u64 n) {
        while (n > 0) {
            if (idx >= SEEDQ_MT_N) twist();
            u64 take = SEEDQ_MT_N - idx;
            if (take > n) take = n;
            idx += (u32)take;
            n -= take;
        }
    }
    typedef u64 Jump;
    SEEDQ_DEV static Jump make_jump(u64 n, const SeedqParams&) { return n; }
    SEEDQ_DEV u64 skip_next(Jump n) {
        advance(n - 1);
        return next();
    }
    // The state is too big to copy: a mark is the output number, restored by re-seeding.
    typedef u64 Mark;
    SEEDQ_DEV Mark save() const { return 0; }
    SEEDQ_DEV void restore(const Mark&, u64 mark_pos, u64 seed, const SeedqParams& p, u64 gtid) {
        init(seed, p, gtid);
        discard(mark_pos, p);
    }
};

// Stepping families take discard(n) without params; give them the common signature.
template <class G>
SEEDQ_DEV void seedq_discard(G& g, u64 n, const SeedqParams& p) {
    g.discard(n, p);
}
#define SEEDQ_DISCARD_NO_PARAMS(G)                                                          \
    template <>                                                                             \
    SEEDQ_DEV void seedq_discard<G>(G & g, u64 n, const SeedqParams&) {                     \
        g.discard(n);                                                                       \
    }
SEEDQ_DISCARD_NO_PARAMS(GenXorshift32)
SEEDQ_DISCARD_NO_PARAMS(GenXorshift64)
SEEDQ_DISCARD_NO_PARAMS(GenXorshift128)
SEEDQ_DISCARD_NO_PARAMS(GenXoshiro256pp)
SEEDQ_DISCARD_NO_PARAMS(GenSfc64)

// ---------------------------------------------------------------------------------------------
// Matching
//
// (`// est:NAME` marks a loop whose SASS/ISA body scripts/gpu-estimate.sh costs: it finds the
// loop by the source line and multiplies its instructions by the trips the shape implies;
// `// est:rare` marks the code of a match, left out of the per-trip cost; `// est:hit` the entry
// of a path costed per trip of its own, here the outputs some draw lands on.)

// 64-bit outputs: Barrett with mod_inv = floor((2^64-1)/m), exact whenever 3m < 2^64 (the
// estimate is at most 2 short and x - q*m < 3m does not wrap); a 64-bit `%` is a ~66-instruction
// call on NVIDIA, so it is left to the moduli above that.
template <class G>
SEEDQ_DEV u64 seedq_reduce(u64 o, const SeedqParams& p) {
    if (G::BITS == 32) {
        if (p.modulus > 0xFFFFFFFFull) return o; // o < 2^32 <= modulus
        if (p.mod_inv32 != 0) return seedq_mod_barrett32((u32)o, (u32)p.modulus, p.mod_inv32);
        return seedq_fastmod32((u32)o, p.mod_magic, (u32)p.modulus);
    }
    if (p.mod_inv != 0) return seedq_mod_barrett(o, p.modulus, p.mod_inv);
    return o % p.modulus;
}

// The stream kernels are compiled once per reduction, chosen once per launch, so their
// per-output loops carry one reduction and no uniform branch (SEEDQ_ONLY_REDUCTION, set by
// scripts/gpu-estimate.sh only, instantiates just one, so the estimate costs that path alone).
#define SEEDQ_RED_NONE 0      // 32-bit outputs, modulus >= 2^32: nothing to do
#define SEEDQ_RED_BARRETT32 1 // 32-bit outputs, 3*modulus < 2^32
#define SEEDQ_RED_BARRETT64 2 // 64-bit outputs, 3*modulus < 2^64
#define SEEDQ_RED_GENERIC 3   // the rest: seedq_reduce's own choice
#if defined(SEEDQ_ONLY_REDUCTION)
#define SEEDQ_RED_WANT(r) (SEEDQ_ONLY_REDUCTION == (r))
#else
#define SEEDQ_RED_WANT(r) 1
#endif

template <class G>
SEEDQ_DEV int seedq_reduction_kind(const SeedqParams& p) {
    if (p.flags & SEEDQ_FLAG_VARIABLE) return SEEDQ_RED_GENERIC; // compiled once
    if (G::BITS == 32 && p.modulus > 0xFFFFFFFFull) return SEEDQ_RED_NONE;
    if (G::BITS == 32 && p.mod_inv32 != 0) return SEEDQ_RED_BARRETT32;
    if (G::BITS == 64 && p.mod_inv != 0) return SEEDQ_RED_BARRETT64;
    return SEEDQ_RED_GENERIC;
}

template <class G, int R>
SEEDQ_DEV u64 seedq_reduce_as(u64 o, const SeedqParams& p) {
    if (R == SEEDQ_RED_NONE) return o;
    if (R == SEEDQ_RED_BARRETT32) return seedq_mod_barrett32((u32)o, (u32)p.modulus, p.mod_inv32);
    if (R == SEEDQ_RED_BARRETT64) return seedq_mod_barrett(o, p.modulus, p.mod_inv);
    return seedq_reduce<G>(o, p);
}

// Calls F::template run<R>(p, a...) with the launch's reduction kind R. Shared arrays are
// declared by the kernel and passed in `a`: declared inside the templates, every instantiation
// would get its own, and the kernel would hold them all.
template <class G, class F, class... A>
SEEDQ_DEV void seedq_with_reduction(const SeedqParams& p, A... a) {
    const int kind = seedq_reduction_kind<G>(p);
    if constexpr (SEEDQ_RED_WANT(SEEDQ_RED_NONE)) {
        if (kind == SEEDQ_RED_NONE) return F::template run<SEEDQ_RED_NONE>(p, a...);
    }
    if constexpr (SEEDQ_RED_WANT(SEEDQ_RED_BARRETT32)) {
        if (kind == SEEDQ_RED_BARRETT32) return F::template run<SEEDQ_RED_BARRETT32>(p, a...);
    }
    if constexpr (SEEDQ_RED_WANT(SEEDQ_RED_BARRETT64)) {
        if (kind == SEEDQ_RED_BARRETT64) return F::template run<SEEDQ_RED_BARRETT64>(p, a...);
    }
    if constexpr (SEEDQ_RED_WANT(SEEDQ_RED_GENERIC)) {
        return F::template run<SEEDQ_RED_GENERIC>(p, a...);
    }
}

// Constant skip: does some t in [skip_min, skip_max] reach `need` matches?
// Draw i is output offset + t + i*(t+1).
template <class G, int R>
SEEDQ_DEV bool seedq_constant_survives(const SeedqParams& p, u64 seed, u64 gtid) {
    const u64* window = (const u64*)p.window;
    const u32 k = p.k, need = p.need;
    for (u64 t = p.skip_min; t <= (u64)p.skip_max; ++t) { // est:skip
        G g;
        g.init(seed, p, gtid);
        seedq_discard(g, p.offset + t, p);
        typename G::Jump gap = G::make_jump(t + 1, p);
        u64 o = g.next();
        u32 matches = 0;
        for (u32 i = 0;;) {
            if (seedq_reduce_as<G, R>(o, p) == seedq_ldg(window + i)) {
                if (++matches >= need) return true;
            }
            ++i;
            if (matches + (k - i) < need) break; // est:draw (also ends the window: matches < need)
            o = g.skip_next(gap);
        }
    }
    return false;
}

// Variable skip (reference.rs, "Variable skip"): each strategy carries (pos, expected, misses,
// matches) as running state; no per-draw arrays. A strategy stops early when its remaining
// draws cannot reach `need`, and the seed survives as soon as one strategy reaches it.
template <class G>
SEEDQ_DEV bool seedq_variable_survives(const SeedqParams& p, u64 seed, u64 gtid) {
    const u64* window = (const u64*)p.window;
    const u32* strategies = (const u32*)p.strategies;
    const u32 k = p.k, need = p.need, skip_min = p.skip_min, skip_max = p.skip_max;
    for (u32 st = 0; st < p.n_strategies; ++st) {
        const u32 max_misses = seedq_ldg32(strategies + 2 * st);
        const u32 tol = seedq_ldg32(strategies + 2 * st + 1);
        G g;
        g.init(seed, p, gtid);
        u64 g_pos = 0; // number of the next output g produces
        typename G::Mark mark = g.save();
        u64 mark_pos = 0;
        u64 pos = p.offset; // absolute number of the next output not yet consumed
        u32 expected = skip_min, misses = 0, matches = 0;
        for (u32 i = 0; i < k; ++i) {
            if (matches + (k - i) < need) break;
            u32 lo = expected >= tol ? expected - tol : 0u;
            if (lo < skip_min) lo = skip_min;
            u32 hi = expected + tol < expected ? 0xFFFFFFFFu : expected + tol;
            if (hi > skip_max) hi = skip_max;
            u64 start = pos + lo;
            // After a miss the next window may start before where the generator stands, but
            // never before the previous window's start, which is the mark.
            if (start < g_pos) {
                g.restore(mark, mark_pos, seed, p, gtid);
                g_pos = mark_pos;
            }
            seedq_discard(g, start - g_pos, p);
            g_pos = start;
            mark = g.save();
            mark_pos = start;
            const u64 draw = seedq_ldg(window + i);
            bool found = false;
            u32 t = lo;
            for (;;) {
                u64 o = g.next();
                ++g_pos;
                if (seedq_reduce<G>(o, p) == draw) {
                    found = true;
                    break;
                }
                if (t == hi) break;
                ++t;
            }
            if (found) {
                if (++matches >= need) return true;
                misses = 0;
                expected = t;
                pos += (u64)t + 1;
            } else {
                pos += (u64)expected + 1;
                if (++misses >= max_misses) break; // ended: the rest are misses
            }
        }
    }
    return false;
}

// ---------------------------------------------------------------------------------------------
// The grid-stride loop and the survivor compaction

// Every lane of the warp calls this once per loop iteration (warp-uniform loop).
SEEDQ_DEV void seedq_emit(const SeedqParams& p, bool survived, u64 seed) {
    u64 mask = seedq_ballot(survived);
    if (mask == 0) return;
    const u32 lane = seedq_lane();
    const u32 leader = seedq_ffs64(mask) - 1u;
    u64 base = 0;
    if (lane == leader) base = seedq_atomic_add_u64((u64*)p.out_count, (u64)seedq_popc64(mask));
    base = seedq_shfl_u64(base, leader);
    if (survived) {
        u64 slot = base + seedq_popc64(mask & seedq_lanemask_lt(lane));
        if (slot < p.out_cap) ((u64*)p.out_seeds)[slot] = seed;
    }
}

// Variable skip is compiled with the generic reduction only (its launches choose it).
template <class G, int R>
SEEDQ_DEV bool seedq_survives(const SeedqParams& p, u64 seed, u64 gtid) {
    if constexpr (R == SEEDQ_RED_GENERIC) {
        if (p.flags & SEEDQ_FLAG_VARIABLE) return seedq_variable_survives<G>(p, seed, gtid);
    }
    return seedq_constant_survives<G, R>(p, seed, gtid);
}

template <class G, int R>
SEEDQ_DEV void seedq_sieve_body(const SeedqParams& p) {
    const u64 gtid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 lane = seedq_lane();
    const u64* list = (const u64*)p.seed_list;
    // base is the warp's first seed index: the same for every lane, so the loop (and the
    // ballot inside seedq_emit) stays convergent even when lanes exit their seed early.
    for (u64 base = gtid - lane; base < p.n_seeds; base += stride) {
        const u64 idx = base + lane;
        bool survived = false;
        u64 seed = 0;
        if (idx < p.n_seeds) {
            seed = list ? seedq_ldg(list + idx) : p.seed_start + idx;
            survived = seedq_survives<G, R>(p, seed, gtid);
        }
        seedq_emit(p, survived, seed);
    }
}

// ---------------------------------------------------------------------------------------------
// Constant skip over one shared stream (SEEDQ_FLAG_SHARED_STREAM)
//
// The launch covers one skip group [skip_min, skip_max] of at most SEEDQ_GROUP_SKIPS skips.
// `landings` holds n_landings pairs (draw, j | s << 48) sorted by j, then one sentinel whose j
// is never reached: output j (after the offset) is compared with `draw` for skip skip_min + s.
// The host keeps every stream below 2^48 - 1 outputs, so the sentinel's j stays out of reach.
// The stream ends at output k*(skip_max+1) - 1, the last draw of the largest skip.
//
// Early exit without scanning the counters: every skip's final count is at most the best count
// so far plus the draws the largest skip still has ahead (it has the most), so once output
// j >= (k - need + best + 1) * (skip_max + 1) no skip can reach `need`.
#define SEEDQ_GROUP_SKIPS 32u
#define SEEDQ_LANDING_J 0xFFFFFFFFFFFFull
#define SEEDQ_LANDING_SKIP_SHIFT 48
// Outputs between two warp votes on whether any lane is still open.
#define SEEDQ_VOTE_EVERY 64u

SEEDQ_DEV u64 seedq_stop_output(const SeedqParams& p, u32 best) {
    return ((u64)(p.k - p.need) + best + 1) * ((u64)p.skip_max + 1);
}

// One thread per seed (register-state families): the stream is stepped once; the per-skip
// counters are u16 in shared memory, [skip][thread] so a warp's lanes hit distinct banks. A
// counter never has to hold more than need - 1 (reaching need ends the seed), so u16 suffices
// for windows up to 65536 draws.
template <class G, int R>
SEEDQ_DEV void seedq_sieve_shared_stream(const SeedqParams& p, u16* counts) {
    const u64 gtid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 lane = seedq_lane();
    const u64* list = (const u64*)p.seed_list;
    const u64* land = (const u64*)p.landings;
    const u32 nskips = p.skip_max - p.skip_min + 1;
    const u64 stream_len = (u64)p.k * ((u64)p.skip_max + 1);
    u16* mine = counts + threadIdx.x;
    for (u64 base = gtid - lane; base < p.n_seeds; base += stride) { // est:stream_seed
        const u64 idx = base + lane;
        const bool live = idx < p.n_seeds;
        const u64 seed = live ? (list ? seedq_ldg(list + idx) : p.seed_start + idx) : 0;
        bool survived = live && p.need == 0;
        u32 best = 0;
        u64 stop = seedq_stop_output(p, 0);
        for (u32 s = 0; s < nskips; ++s) mine[s * SEEDQ_MAX_BLOCK] = 0;
        G g;
        g.init(seed, p, gtid);
        seedq_discard(g, p.offset, p);
        const u64* at = land; // the next landing
        u64 meta = seedq_ldg(at + 1);
        for (u64 j0 = 0;; j0 += SEEDQ_VOTE_EVERY) {
            // Warp-uniform: lanes that survived or can no longer survive ride along.
            if (seedq_ballot(live && !survived && j0 < stop) == 0) break; // est:vote
            const u32 len = (u32)(stream_len - j0 < SEEDQ_VOTE_EVERY ? stream_len - j0 : SEEDQ_VOTE_EVERY);
            // The next landing's output relative to j0, or len when it lies beyond the chunk:
            // the per-output check is then one 32-bit compare.
            u32 next = (meta & SEEDQ_LANDING_J) - j0 < len ? (u32)((meta & SEEDQ_LANDING_J) - j0) : len;
#pragma unroll 1
            for (u32 n = 0; n < len; ++n) { // est:output
                const u64 o = g.next();
                if (n != next) continue;
                // Only outputs some draw lands on are reduced.
                const u64 r = seedq_reduce_as<G, R>(o, p);
                const u64 j = j0 + n; // est:hit
#pragma unroll 1
                do {
                    if (r == seedq_ldg(at)) { // est:landing
                        u16* c = mine + (u32)(meta >> SEEDQ_LANDING_SKIP_SHIFT) * SEEDQ_MAX_BLOCK; // est:rare
                        const u32 cnt = (u32)*c + 1u; // est:rare
                        *c = (u16)cnt; // est:rare
                        if (cnt > best) { // est:rare
                            best = cnt; // est:rare
                            stop = seedq_stop_output(p, best); // est:rare
                            if (best >= p.need) survived = true; // est:rare
                        }
                    }
                    at += 2; // est:landing
                    meta = seedq_ldg(at + 1);
                } while ((meta & SEEDQ_LANDING_J) == j);
                next = (meta & SEEDQ_LANDING_J) - j0 < len ? (u32)((meta & SEEDQ_LANDING_J) - j0) : len;
            }
        }
        // Lanes past the end ran a dummy seed in step with the warp; they report nothing.
        seedq_emit(p, live && survived, seed);
    }
}

// mt19937 beyond output 226, constant skip: one seed at a time per 32 lanes. The state (624
// words) and the tempered, reduced outputs of the current block of 624 sit in shared memory,
// so the twist never leaves the chip. Twisting word i reads old words i+1 and (below 227)
// i+397, and new word i-227 (from 227 on) or new word 0 (for 623): in 32-word rounds taken in
// order, every new word a round reads was written two or more rounds before, so a round only
// has to read before it writes (word i+1 of one lane is word i of the next). The rounds are
// unrolled, so every index is the lane plus a constant. The arrays are padded to 20 full
// rounds; the padding lanes of the last round compute and store garbage nobody reads.
#define SEEDQ_MT_GROUPS (SEEDQ_MAX_BLOCK / 32u)
#define SEEDQ_MT_ROUNDS ((SEEDQ_MT_N + 31u) / 32u)
#define SEEDQ_MT_RES_WORDS (SEEDQ_MT_ROUNDS * 32u)
#define SEEDQ_MT_STATE_WORDS (SEEDQ_MT_RES_WORDS + 4u)
// A landing entry of the mt19937 plan: the expected residue in the low 32 bits; above them the
// output's place in its block and the counter it adds to: its (offset, skip) pair's, or the
// spare one (SEEDQ_MT_PAIRS) for the padding that fills a block's entries up to whole rounds of
// 32. A launch counts at most SEEDQ_MT_PAIRS pairs (the host cuts bigger passes into groups).
#define SEEDQ_MT_POS_BITS 10
#define SEEDQ_MT_PAIRS 128u

// Twists `mt` in place and writes reduce(temper(word)) of every new word to `res`. Every lane of
// the 32-lane group calls it; `lane` is 0..31.
template <int R>
SEEDQ_DEV void seedq_mt_twist_shared(u32* mt, u32* res, u32 lane, const SeedqParams& p) {
#pragma unroll
    for (u32 at = 0; at < SEEDQ_MT_N; at += 32u) { // est:mt_twist
        const u32 i = at + lane;
        const u32 next = i == SEEDQ_MT_N - 1 ? 0u : i + 1;
        const u32 far = i < SEEDQ_MT_N - SEEDQ_MT_M ? i + SEEDQ_MT_M : i - (SEEDQ_MT_N - SEEDQ_MT_M);
        const u32 v = seedq_mt_twist_word(mt[i], mt[next], mt[far]); // est:mt_twist
        seedq_syncwarp(); // est:mt_twist
        mt[i] = v; // est:mt_twist
        res[i] = (u32)seedq_reduce_as<GenMtFull, R>(seedq_mt_temper(v), p); // est:mt_twist
    }
    seedq_syncwarp();
}

// The block's shared arrays: per 32-lane group the state, the block's residues and the
// per-pair counts (plus the spare counter the padding entries add to).
struct SeedqMtShared {
    u32 *mt_all, *res_all, *count_all;
};

// Seeding: init_genrand is one serial chain per seed, so each lane of a group runs the chain of
// one of the group's next 32 seeds, into the group's slice of `scratch` (32 x 624 words), and
// the group then takes the seeds one at a time. Word w of lane l's seed sits at
// (w / 8) * 256 + l * 8 + w % 8: the chain's stores write 32 sectors at once, and a seed's
// 32-word load reads four whole sectors.
#define SEEDQ_MT_TILE 8u

// The plan (`landings`, written by the host for the launch's group of (offset, skip) pairs): the
// number of pairs; n_landings pairs (block, first entry) for the blocks of 624 outputs some draw
// lands on (block b holds outputs 624b .. 624b+623), in order, then a pair (u64::MAX, entry
// count); then the entries, each block's padded to a multiple of 32. A block's 32 lanes test 32
// entries at a time, so the draws of every pair are spread over all lanes whatever their
// spacing, and an offset range costs its tests, not another walk of the stream.
// Early exit: offset_last and skip_max are the group's largest, so once a block starts at
// offset_last + seedq_stop_output(p, best) or later, no pair can reach `need`.
template <int R>
SEEDQ_DEV void seedq_sieve_mt_stream(const SeedqParams& p, SeedqMtShared sh) {
    const u32 lane = threadIdx.x & 31u;
    const u32 group = threadIdx.x / 32u;
    u32* mt = sh.mt_all + group * SEEDQ_MT_STATE_WORDS;
    u32* res = sh.res_all + group * SEEDQ_MT_RES_WORDS;
    u32* count = sh.count_all + group * (SEEDQ_MT_PAIRS + 1u);
    const u64 gwarp = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32u;
    const u64 nwarps = (u64)gridDim.x * blockDim.x / 32u;
    u32* scratch = (u32*)p.scratch + gwarp * (32u * SEEDQ_MT_N);
    const u64* list = (const u64*)p.seed_list;
    const u32 npairs = (u32)seedq_ldg((const u64*)p.landings);
    const u64* blocks = (const u64*)p.landings + 1u;
    const u64* entries = blocks + 2u * (p.n_landings + 1u);
    for (u64 batch = gwarp * 32u; batch < p.n_seeds; batch += nwarps * 32u) { // est:mt_batch
        const u32 nb = p.n_seeds - batch < 32u ? (u32)(p.n_seeds - batch) : 32u;
        {
            // Lanes past the last seed seed garbage that nobody reads.
            const u64 mine = batch + lane;
            u32 x = lane < nb ? (u32)(list ? seedq_ldg(list + mine) : p.seed_start + mine) : 0u;
            u32* w = scratch + lane * SEEDQ_MT_TILE;
            w[0] = x;
#pragma unroll
            for (u32 q = 1; q < SEEDQ_MT_TILE; ++q) {
                x = SEEDQ_MT_INIT_MULTIPLIER * (x ^ (x >> 30)) + q;
                w[q] = x;
            }
#pragma unroll 1
            for (u32 i = SEEDQ_MT_TILE; i < SEEDQ_MT_N; i += SEEDQ_MT_TILE) { // est:mt_init
                u32* t = w + (i / SEEDQ_MT_TILE) * (32u * SEEDQ_MT_TILE); // est:mt_init
#pragma unroll
                for (u32 q = 0; q < SEEDQ_MT_TILE; ++q) {
                    x = SEEDQ_MT_INIT_MULTIPLIER * (x ^ (x >> 30)) + (i + q); // est:mt_init
                    t[q] = x; // est:mt_init
                }
            }
            seedq_syncwarp();
        }
#pragma unroll 1
        for (u32 b = 0; b < nb; ++b) { // est:mt_seed
            const u64 seed = list ? seedq_ldg(list + batch + b) : p.seed_start + batch + b; // est:mt_seed
            const u32* from = scratch + b * SEEDQ_MT_TILE; // est:mt_seed
#pragma unroll
            for (u32 at = 0; at < SEEDQ_MT_N; at += 32u) {
                const u32 i = at + lane;
                if (i < SEEDQ_MT_N) mt[i] = from[(i / SEEDQ_MT_TILE) * (32u * SEEDQ_MT_TILE) + i % SEEDQ_MT_TILE]; // est:mt_seed
            }
            for (u32 c = lane; c < npairs; c += 32u) count[c] = 0; // est:mt_reset (not the spare)
            seedq_syncwarp(); // est:mt_seed
            // Twists done: after n of them the state holds block n - 1 (absolute outputs
            // 624(n-1) .. 624n - 1).
            u64 twisted = 0;
            u32 best = 0;
            bool survived = p.need == 0;
            for (u64 e = 0; e < p.n_landings && !survived; ++e) { // est:mt_block
                const u64 blk = seedq_ldg(blocks + 2u * e); // est:mt_block
                const u64 start = blk * SEEDQ_MT_N; // est:mt_block
                // Where no pair can reach `need` any more.
                if (start > p.offset_last && start - p.offset_last >= seedq_stop_output(p, best)) break; // est:mt_block
                for (; twisted <= blk; ++twisted) seedq_mt_twist_shared<R>(mt, res, lane, p); // est:mt_block
                const u32 lo = (u32)seedq_ldg(blocks + 2u * e + 1u); // est:mt_block
                const u32 hi = (u32)seedq_ldg(blocks + 2u * e + 3u); // est:mt_block
                u32 hits = 0;
                const u64* at = entries + lo + lane;
#pragma unroll 1
                for (u32 n = (hi - lo) / 32u; n != 0; --n, at += 32) { // est:mt_test
                    const u64 entry = seedq_ldg(at); // est:mt_test
                    const u32 meta = (u32)(entry >> 32); // est:mt_test
                    if (res[meta & ((1u << SEEDQ_MT_POS_BITS) - 1u)] == (u32)entry) { // est:mt_test
                        seedq_atomic_add_shared_u32(count + (meta >> SEEDQ_MT_POS_BITS), 1u); // est:rare
                        hits = 1; // est:rare
                    }
                }
                if (seedq_ballot32(hits != 0) != 0) { // est:mt_block
                    seedq_syncwarp();
                    // The largest count: each lane's share of the counters, then a butterfly
                    // over the group's 32 lanes (counts only grow, so it is the new best).
                    u32 m = 0; // est:rare
                    for (u32 c = lane; c < npairs; c += 32u) m = count[c] > m ? count[c] : m; // est:rare
                    for (u32 d = 16u; d != 0; d >>= 1) { // est:rare
                        const u32 o = (u32)seedq_shfl_u64(m, (seedq_lane() & ~31u) | (lane ^ d)); // est:rare
                        m = o > m ? o : m; // est:rare
                    }
                    best = m; // est:rare
                    survived = best >= p.need; // est:rare
                }
                seedq_syncwarp(); // est:mt_block
            }
            // Lane 0 of the group stands for its seed; the other lanes report nothing.
            seedq_emit(p, survived && lane == 0, seed); // est:mt_seed
            seedq_syncwarp(); // est:mt_seed
        }
    }
}

// lcg32, constant skip, seed range: SEEDQ_LCG32_BATCH consecutive seeds per thread. Every
// output is affine in the seed (output_n(s + j) = output_n(s) + j*A_n mod m), so the seeds of a
// batch cost one modular add each per draw instead of a multiply and a reduction; only the
// batch's first seed and the increment A_n step through the jumps.
#define SEEDQ_LCG32_BATCH 8u

SEEDQ_DEV u32 seedq_lcg32_addmod(u32 x, u32 y, u32 m) {
    if (m == 0) return x + y; // 2^32: natural wrap
    return x >= m - y ? x - (m - y) : x + y;
}

// Bit j set: seed first + j survives (only j < count are evaluated).
template <int R>
SEEDQ_DEV u32 seedq_lcg32_batch_survivors(const SeedqParams& p, u64 first, u32 count) {
    const u64* window = (const u64*)p.window;
    const u32 k = p.k, need = p.need;
    const u32 valid = count >= 32u ? 0xFFFFFFFFu : ((1u << count) - 1u);
    u32 survived = 0;
    GenLcg32 g;
    g.init(first, p, 0);
    const u32 s0 = g.s;
    for (u64 t = p.skip_min; t <= (u64)p.skip_max && survived != valid; ++t) { // est:lcg_skip
        // State after offset+t steps, then one step: output offset+t (draw 0) of seed `first`,
        // and what one more seed adds to it. (offset+t+1 itself may not fit in 64 bits.)
        const GenLcg32::Jump lead = GenLcg32::make_jump(p.offset + t, p);
        const GenLcg32::Jump gap = GenLcg32::make_jump(t + 1, p);
        u32 base = g.reduce((u64)g.a * g.reduce((u64)lead.A * s0 + lead.C) + g.c);
        u32 inc = g.reduce((u64)g.a * lead.A);
        u32 matches[SEEDQ_LCG32_BATCH];
#pragma unroll
        for (u32 j = 0; j < SEEDQ_LCG32_BATCH; ++j) matches[j] = 0;
        for (u32 i = 0; i < k; ++i) { // est:lcg_draw
            const u64 draw = seedq_ldg(window + i); // est:lcg_draw
            u32 o = base;
            u32 best_open = 0; // most matches among seeds still able and needing to survive
#pragma unroll
            for (u32 j = 0; j < SEEDQ_LCG32_BATCH; ++j) {
                if (seedq_reduce_as<GenLcg32, R>(o, p) == draw) ++matches[j];
                if (matches[j] >= need) survived |= (1u << j) & valid;
                const bool open = ((valid & ~survived) >> j) & 1u;
                if (open && matches[j] > best_open) best_open = matches[j];
                o = seedq_lcg32_addmod(o, inc, g.m);
            }
            if ((survived & valid) == valid) break;
            if (best_open + (k - 1 - i) < need) break; // est:lcg_draw (no open seed can reach need at this t)
            base = g.reduce((u64)gap.A * base + gap.C);
            inc = g.reduce((u64)gap.A * inc);
        }
    }
    return survived & valid;
}

template <int R>
SEEDQ_DEV void seedq_sieve_lcg32_batched(const SeedqParams& p) {
    const u64 gtid = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 lane = seedq_lane();
    const u64 batches = (p.n_seeds + SEEDQ_LCG32_BATCH - 1) / SEEDQ_LCG32_BATCH;
    for (u64 base = gtid - lane; base < batches; base += stride) {
        const u64 b = base + lane;
        u32 survived = 0;
        const u64 first = b * SEEDQ_LCG32_BATCH;
        if (b < batches) {
            const u64 left = p.n_seeds - first;
            survived = seedq_lcg32_batch_survivors<R>(p, p.seed_start + first, left < SEEDQ_LCG32_BATCH ? (u32)left : SEEDQ_LCG32_BATCH);
        }
        // Uniform across the warp: every lane emits SEEDQ_LCG32_BATCH times.
        for (u32 j = 0; j < SEEDQ_LCG32_BATCH; ++j) seedq_emit(p, (survived >> j) & 1u, p.seed_start + first + j);
    }
}

template <class G>
struct SeedqSharedStream {
    template <int R>
    SEEDQ_DEV static void run(const SeedqParams& p, u16* counts) { seedq_sieve_shared_stream<G, R>(p, counts); }
};
template <class G>
struct SeedqBody {
    template <int R>
    SEEDQ_DEV static void run(const SeedqParams& p) { seedq_sieve_body<G, R>(p); }
};
struct SeedqLcg32Batched {
    template <int R>
    SEEDQ_DEV static void run(const SeedqParams& p) { seedq_sieve_lcg32_batched<R>(p); }
};
// Every kernel but the stream ones: one reduction per launch, as for the streams.
template <class G>
SEEDQ_DEV void seedq_sieve_plain(const SeedqParams& p) {
    seedq_with_reduction<G, SeedqBody<G>>(p);
}
struct SeedqMtStream {
    template <int R>
    SEEDQ_DEV static void run(const SeedqParams& p, SeedqMtShared sh) { seedq_sieve_mt_stream<R>(p, sh); }
};

template <class G>
SEEDQ_DEV void seedq_sieve_stepping(const SeedqParams& p) {
    // Per skip and thread: [skip][thread], so a warp's lanes hit distinct banks.
    SEEDQ_SHARED_ARRAY(u16, counts, SEEDQ_GROUP_SKIPS * SEEDQ_MAX_BLOCK);
    if (p.flags & SEEDQ_FLAG_SHARED_STREAM)
        seedq_with_reduction<G, SeedqSharedStream<G>>(p, counts);
    else
        seedq_sieve_plain<G>(p);
}

#if !defined(SEEDQ_FAMILY_ONLY)
#define SEEDQ_WANT(fam) 1
#else
#define SEEDQ_WANT(fam) (SEEDQ_FAMILY_ONLY == (fam))
#endif

#if SEEDQ_WANT(SEEDQ_XORSHIFT32)
SEEDQ_KERNEL seedq_sieve_xorshift32(SeedqParams p) { seedq_sieve_stepping<GenXorshift32>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_XORSHIFT64)
SEEDQ_KERNEL seedq_sieve_xorshift64(SeedqParams p) { seedq_sieve_stepping<GenXorshift64>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_XORSHIFT128)
SEEDQ_KERNEL seedq_sieve_xorshift128(SeedqParams p) { seedq_sieve_stepping<GenXorshift128>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_PCG32)
SEEDQ_KERNEL seedq_sieve_pcg32(SeedqParams p) { seedq_sieve_plain<GenPcg32>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_LCG32)
SEEDQ_KERNEL seedq_sieve_lcg32(SeedqParams p) {
    if (p.seed_list == 0 && (p.flags & SEEDQ_FLAG_VARIABLE) == 0)
        seedq_with_reduction<GenLcg32, SeedqLcg32Batched>(p);
    else
        seedq_sieve_plain<GenLcg32>(p);
}
#endif
#if SEEDQ_WANT(SEEDQ_JAVA_LCG)
SEEDQ_KERNEL seedq_sieve_java_lcg(SeedqParams p) { seedq_sieve_plain<GenJavaLcg>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_MINSTD)
SEEDQ_KERNEL seedq_sieve_minstd(SeedqParams p) { seedq_sieve_plain<GenMinstd>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_MT19937)
// Three kernels: the stateless one for windows within outputs 0..226; beyond, the shared-state
// stream for constant skip and the global-scratch one for variable skip.
SEEDQ_KERNEL seedq_sieve_mt19937(SeedqParams p) { seedq_sieve_plain<GenMtCapture>(p); }
SEEDQ_KERNEL seedq_sieve_mt19937_full(SeedqParams p) { seedq_sieve_plain<GenMtFull>(p); }
SEEDQ_KERNEL seedq_sieve_mt19937_stream(SeedqParams p) {
    SEEDQ_SHARED_ARRAY(u32, mt_all, SEEDQ_MT_STATE_WORDS * SEEDQ_MT_GROUPS);
    SEEDQ_SHARED_ARRAY(u32, res_all, SEEDQ_MT_RES_WORDS * SEEDQ_MT_GROUPS);
    SEEDQ_SHARED_ARRAY(u32, count_all, (SEEDQ_MT_PAIRS + 1u) * SEEDQ_MT_GROUPS);
    seedq_with_reduction<GenMtFull, SeedqMtStream>(p, SeedqMtShared{mt_all, res_all, count_all});
}
#endif
#if SEEDQ_WANT(SEEDQ_XOSHIRO256PP)
SEEDQ_KERNEL seedq_sieve_xoshiro256pp(SeedqParams p) { seedq_sieve_stepping<GenXoshiro256pp>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_PHILOX4X32)
SEEDQ_KERNEL seedq_sieve_philox4x32(SeedqParams p) { seedq_sieve_plain<GenPhilox>(p); }
#endif
#if SEEDQ_WANT(SEEDQ_SFC64)
SEEDQ_KERNEL seedq_sieve_sfc64(SeedqParams p) { seedq_sieve_stepping<GenSfc64>(p); }
#endif
