// A seeded generator (xoshiro256** seeded through splitmix64): every random draw in hypertape
// comes from one of these, so runs are reproducible.
#include "ad.h"

#include <math.h>

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ad_rng_seed(ad_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ad_rng_next(ad_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double ad_rng_uniform(ad_rng *r) { return (double)(ad_rng_next(r) >> 11) * 0x1.0p-53; }

// Box-Muller; one of the pair is dropped so the stream stays simple to reason about.
double ad_rng_normal(ad_rng *r) {
    double u = 1.0 - ad_rng_uniform(r), v = ad_rng_uniform(r);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
