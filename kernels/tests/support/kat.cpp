// Known-answer vectors from the real generators (C++ <random>) and from the published
// reference C code of Marsaglia's xorshift32/xor128, xoshiro256++ (Blackman & Vigna),
// SFC64 (PractRand) and PCG32 (pcg-c-basic). known_answers.rs compiles this with g++ and
// compares each line with seedq's generators. Line format: `name key... : out0 out1 ...`.
#include <cstdint>
#include <cstdio>
#include <random>

static void line(const char* name, unsigned long long key, const uint64_t* v, int n) {
    std::printf("%s %llu :", name, key);
    for (int i = 0; i < n; i++) std::printf(" %llu", (unsigned long long)v[i]);
    std::printf("\n");
}

template <class Engine>
static void engine_line(const char* name, unsigned long long seed) {
    Engine e(seed);
    uint64_t v[11];
    for (int i = 0; i < 10; i++) v[i] = e();
    e.discard(9999 - 10);
    v[10] = e();  // the 10000th output
    line(name, seed, v, 11);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// xoshiro256++ 1.0, reference code by David Blackman and Sebastiano Vigna (public domain).
static uint64_t xs[4];
static uint64_t xoshiro_next(void) {
    const uint64_t result = rotl(xs[0] + xs[3], 23) + xs[0];
    const uint64_t t = xs[1] << 17;
    xs[2] ^= xs[0]; xs[3] ^= xs[1]; xs[1] ^= xs[2]; xs[0] ^= xs[3]; xs[2] ^= t;
    xs[3] = rotl(xs[3], 45);
    return result;
}

// SFC64 (Chris Doty-Humphrey, PractRand), without the 12 warm-up rounds of its seeding.
static uint64_t sa, sb, sc, scnt;
static uint64_t sfc_next(void) {
    uint64_t tmp = sa + sb + scnt++;
    sa = sb ^ (sb >> 11);
    sb = sc + (sc << 3);
    sc = rotl(sc, 24) + tmp;
    return tmp;
}

// pcg-c-basic (Melissa O'Neill), pcg32_random_r and pcg32_srandom_r.
struct pcg32_random_t { uint64_t state, inc; };
static uint32_t pcg32_random_r(pcg32_random_t* rng) {
    uint64_t oldstate = rng->state;
    rng->state = oldstate * 6364136223846793005ULL + rng->inc;
    uint32_t xorshifted = ((oldstate >> 18u) ^ oldstate) >> 27u;
    uint32_t rot = oldstate >> 59u;
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

int main() {
    const unsigned long long mt_seeds[] = {5489, 0, 1, 123456789, 4294967295ULL};
    for (auto s : mt_seeds) engine_line<std::mt19937>("mt19937", s);
    const unsigned long long lcg_seeds[] = {1, 2, 48271, 2147483646ULL, 3000000000ULL, 4294967295ULL};
    for (auto s : lcg_seeds) {
        engine_line<std::minstd_rand>("minstd_rand", s);
        engine_line<std::minstd_rand0>("minstd_rand0", s);
    }
    const unsigned long long lcg32_seeds[] = {1, 12345, 2147483646ULL};
    for (auto s : lcg32_seeds) {
        engine_line<std::linear_congruential_engine<uint64_t, 1103515245, 12345, 2147483647>>("lcg32_default", s);
        engine_line<std::linear_congruential_engine<uint64_t, 1103515245, 12345, 4294967296ULL>>("lcg32_m0", s);
    }
    {
        // Marsaglia (2003), "Xorshift RNGs": xor32 with y = 2463534242.
        uint32_t y = 2463534242u;
        uint64_t v[10];
        for (int i = 0; i < 10; i++) { y ^= y << 13; y ^= y >> 17; y ^= y << 5; v[i] = y; }
        line("xorshift32", 2463534242u, v, 10);
    }
    {
        // Marsaglia's xor128 with its published initial state (x = 123456789).
        uint32_t x = 123456789, y = 362436069, z = 521288629, w = 88675123;
        uint64_t v[10];
        for (int i = 0; i < 10; i++) {
            uint32_t t = x ^ (x << 11);
            x = y; y = z; z = w;
            w = w ^ (w >> 19) ^ (t ^ (t >> 8));
            v[i] = w;
        }
        line("xor128", 123456789, v, 10);
    }
    {
        uint64_t v[10];
        xs[0] = 1; xs[1] = 2; xs[2] = 3; xs[3] = 4;
        for (int i = 0; i < 10; i++) v[i] = xoshiro_next();
        line("xoshiro256pp_1234", 0, v, 10);
        const unsigned long long seeds[] = {0, 7, 18446744073709551615ULL};
        for (auto s : seeds) {
            xs[0] = s; xs[1] = 0x9E3779B97F4A7C15ULL; xs[2] = 0x6A09E667F3BCC908ULL; xs[3] = 0xBB67AE8584CAA73BULL;
            for (int i = 0; i < 10; i++) v[i] = xoshiro_next();
            line("xoshiro256pp", s, v, 10);
        }
    }
    {
        uint64_t v[10];
        const unsigned long long seeds[] = {0, 7, 18446744073709551615ULL};
        for (auto s : seeds) {
            sa = s; sb = 0x9E3779B97F4A7C15ULL; sc = 0x6A09E667F3BCC908ULL; scnt = 1;
            for (int i = 0; i < 10; i++) v[i] = sfc_next();
            line("sfc64", s, v, 10);
        }
    }
    {
        uint64_t v[10];
        const unsigned long long seeds[] = {0, 42, 4294967295ULL};
        for (auto s : seeds) {
            pcg32_random_t rng = {s, 1442695040888963407ULL};
            for (int i = 0; i < 10; i++) v[i] = pcg32_random_r(&rng);
            line("pcg32", s, v, 10);
        }
    }
    return 0;
}
