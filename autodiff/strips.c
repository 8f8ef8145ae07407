// Products with at most 16 columns that skip a coded constant's zeros (sparse.h,
// ad_strips_matmul): a linear model's X W [5000, 785] x [785, 10] and X^T G [785, 5000] x
// [5000, 10] on 8-bit images. The thin kernel (thin.c) runs them dense, lanes along 8 rows of
// op(X) at a time; here the same lanes run only over the union of 8 rows' nonzeros. Rows that
// share their zeros go together (ad_sparse_greedy): 0.66 of the entries for FashionMNIST's
// images and for their pixel columns, where 8 neighbouring rows would keep 0.87 of them. Each
// entry is 8 codes stored together, decoded into one register and multiplied by a broadcast of
// B's row: n fused multiply-adds, in q ascending from +0.0, so each entry of C has the ordered
// loop's bits (sparse.h says why the zeros of the union change nothing).
//
// Layout: making the strips; the kernels: AVX-512 (8 rows in a register), AVX2 (4 rows, each strip
// in two halves) and portable C with fma(), all running the same fused multiply-adds in the same
// order, so the same bits (function-level targets chosen at run time, as in thin.c); the driver
// with its threads.
#include "sparse.h"

#include "pool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define STRIPS_X86 1
#include <immintrin.h>
#else
#define STRIPS_X86 0
#endif

enum { STRIP_WINDOW = 256, STRIPS_PER_PIECE = 2, THEN_ROWS = 256 };

// ---- making them ----

// Strip s's union entries from its rows' bit sets: index ascending, the 8 rows' codes.
static int64_t fill_strip(const ad_coded_nz *nz, int tx, const uint64_t *bits, int words,
                          const int32_t *row, int64_t e, int32_t *idx, uint64_t *code) {
    for (int i = 0; i < words; i++) {
        uint64_t u = 0;
        for (int h = 0; h < 8; h++) u |= row[h] < 0 ? 0 : bits[(size_t)row[h] * words + i];
        for (; u; u &= u - 1, e++) {
            int q = 64 * i + __builtin_ctzll(u);
            uint64_t c8 = 0;
            for (int h = 0; h < 8; h++) {
                if (row[h] < 0) continue;
                size_t at = tx ? (size_t)q * nz->cols + row[h] : (size_t)row[h] * nz->cols + q;
                c8 |= (uint64_t)nz->codes[at] << (8 * h);
            }
            if (idx) idx[e] = q, code[e] = c8;
        }
    }
    return e;
}

// The strips of op(X) (tx: of X^T): rows in the greedy order, eight by eight, then their entries
// counted and written.
static bool make_strips(ad_coded_nz *nz, int tx, ad_coded_strips *S) {
    int m = tx ? nz->cols : nz->rows, words, n = (m + 7) / 8;
    uint64_t *bits = ad_sparse_bits(nz, tx, &words);
    *S = (ad_coded_strips){.n = n};
    S->row = malloc(((size_t)8 * n + 1) * sizeof(int32_t));
    S->ptr = calloc((size_t)n + 1, sizeof(int64_t));
    bool ok = bits && S->row && S->ptr && ad_sparse_greedy(nz, tx, bits, words, 8, STRIP_WINDOW, S->row);
    for (int i = m; ok && i < 8 * n; i++) S->row[i] = -1;
    for (int s = 0; ok && s < n; s++)
        S->ptr[s + 1] = fill_strip(nz, tx, bits, words, S->row + 8 * s, S->ptr[s], NULL, NULL);
    if (ok) {
        size_t entries = (size_t)S->ptr[n] + 1;
        S->idx = malloc(entries * sizeof(int32_t)), S->code = malloc(entries * sizeof(uint64_t));
        ok = S->idx && S->code;
    }
    for (int s = 0; ok && s < n; s++)
        fill_strip(nz, tx, bits, words, S->row + 8 * s, S->ptr[s], S->idx, S->code);
    free(bits);
    if (!ok) {
        free(S->row), free(S->ptr), free(S->idx), free(S->code);
        *S = (ad_coded_strips){0};
    }
    return ok;
}

int ad_coded_nz_add_strips(ad_coded_nz *nz, char *err, size_t errlen) {
    if (!nz) {
        if (err && errlen) snprintf(err, errlen, "coded_nz_add_strips: no nonzeros given");
        return -1;
    }
    if (nz->strip[0].ptr) return 0; // made already
    ad_coded_strips S[2];
    if (!make_strips(nz, 0, &S[0])) {
        if (err && errlen) snprintf(err, errlen, "coded_nz_add_strips: out of memory");
        return -1;
    }
    if (!make_strips(nz, 1, &S[1])) {
        free(S[0].row), free(S[0].ptr), free(S[0].idx), free(S[0].code);
        if (err && errlen) snprintf(err, errlen, "coded_nz_add_strips: out of memory");
        return -1;
    }
    nz->strip[0] = S[0], nz->strip[1] = S[1];
    return 0;
}

// ---- the kernels ----

typedef struct {
    ad_thin_isa isa; // AD_THIN_AVX512, AD_THIN_AVX2 or AD_THIN_PORTABLE
    const ad_coded_strips *S;
    const double *tab, *B;
    int n, ldb;
    bool lin;        // the table is c / d (ad_thin_linear_table): decoded by arithmetic
    double hi, lo;   // lin: its constants
    double *C;
    const ad_thin_rows *then;
    int pieces, m;   // m: C's rows, for then
    atomic_int next;
} st_job;

// Strips [s0, s1) in plain C: each row's n sums over the strip's entries, one at a time.
static void strips_portable(const st_job *j, int s0, int s1) {
    const ad_coded_strips *S = j->S;
    for (int s = s0; s < s1; s++)
        for (int h = 0; h < 8; h++) {
            int r = S->row[8 * s + h];
            if (r < 0) continue;
            for (int c = 0; c < j->n; c++) {
                double acc = 0.0;
                for (int64_t e = S->ptr[s]; e < S->ptr[s + 1]; e++) {
                    double x = j->tab[(S->code[e] >> (8 * h)) & 0xff];
                    acc = fma(x, j->B[(size_t)S->idx[e] * j->ldb + c], acc);
                }
                j->C[(size_t)r * j->n + c] = acc;
            }
        }
}

// A vector kernel's sums into C: lanes [nv, H] holds columns [c0, c0 + nv) of the H rows rows[]
// (-1: past C's rows, not written).
static inline void write_lanes(const st_job *j, const int32_t *rows, int H, int c0, int nv,
                               const double *lanes) {
    for (int h = 0; h < H; h++) {
        if (rows[h] < 0) continue;
        double *out = j->C + (size_t)rows[h] * j->n + c0;
        for (int c = 0; c < nv; c++) out[c] = lanes[c * H + h];
    }
}

#if STRIPS_X86
#define X512_FN static __attribute__((target("avx512f,avx2,fma")))
#define X512_INLINE static inline __attribute__((always_inline, target("avx512f,avx2,fma")))

// 8 codes into 8 doubles: the table's entries exactly (by arithmetic when lin, else gathered).
X512_INLINE __m512d decode8(const st_job *j, uint64_t c8, __m512d hi, __m512d lo) {
    __m128i c = _mm_cvtsi64_si128((long long)c8);
    if (j->lin) {
        __m512d x = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(c));
        return _mm512_fmadd_pd(x, hi, _mm512_mul_pd(x, lo));
    }
    return _mm512_i64gather_pd(_mm512_cvtepu8_epi64(c), j->tab, 8);
}

// Strips [s0, s1) with NV = n columns: acc[j] holds column j of the strip's 8 rows.
X512_INLINE void strips_nv(const int NV, const st_job *j, int s0, int s1) {
    const ad_coded_strips *S = j->S;
    const __m512d hi = _mm512_set1_pd(j->hi), lo = _mm512_set1_pd(j->lo);
    for (int s = s0; s < s1; s++) {
        __m512d acc[16];
#pragma GCC unroll 16
        for (int c = 0; c < NV; c++) acc[c] = _mm512_setzero_pd();
        for (int64_t e = S->ptr[s]; e < S->ptr[s + 1]; e++) {
            const double *b = j->B + (size_t)S->idx[e] * j->ldb;
            __m512d x = decode8(j, S->code[e], hi, lo);
#pragma GCC unroll 16
            for (int c = 0; c < NV; c++) acc[c] = _mm512_fmadd_pd(x, _mm512_set1_pd(b[c]), acc[c]);
        }
        double lanes[16][8];
#pragma GCC unroll 16
        for (int c = 0; c < NV; c++) _mm512_storeu_pd(lanes[c], acc[c]);
        write_lanes(j, S->row + 8 * s, 8, 0, NV, lanes[0]);
    }
}

X512_FN void strips_x512(const st_job *j, int s0, int s1) {
    switch (j->n) {
#define CASE(N) case N: strips_nv(N, j, s0, s1); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
        CASE(9) CASE(10) CASE(11) CASE(12) CASE(13) CASE(14) CASE(15) CASE(16)
#undef CASE
    }
}
#undef X512_FN
#undef X512_INLINE

#define X256_FN static __attribute__((target("avx2,fma")))
#define X256_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

// 4 codes (the bytes of c4) into 4 doubles, as decode8.
X256_INLINE __m256d decode4(const st_job *j, uint32_t c4, __m256d hi, __m256d lo) {
    __m128i c = _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)c4));
    if (j->lin) {
        __m256d x = _mm256_cvtepi32_pd(c);
        return _mm256_fmadd_pd(x, hi, _mm256_mul_pd(x, lo));
    }
    return _mm256_i32gather_pd(j->tab, c, 8);
}

// Rows [4 half, 4 half + 4) of strip s, columns [c0, c0 + NV) of C: 16 registers hold at most
// 12 columns of 4 rows with x, the broadcast and the decoding constants.
X256_INLINE void half_nv(const int NV, const st_job *j, int s, int half, int c0) {
    const ad_coded_strips *S = j->S;
    const __m256d hi = _mm256_set1_pd(j->hi), lo = _mm256_set1_pd(j->lo);
    __m256d acc[12];
#pragma GCC unroll 12
    for (int c = 0; c < NV; c++) acc[c] = _mm256_setzero_pd();
    for (int64_t e = S->ptr[s]; e < S->ptr[s + 1]; e++) {
        const double *b = j->B + (size_t)S->idx[e] * j->ldb + c0;
        __m256d x = decode4(j, (uint32_t)(S->code[e] >> (32 * half)), hi, lo);
#pragma GCC unroll 12
        for (int c = 0; c < NV; c++) acc[c] = _mm256_fmadd_pd(x, _mm256_set1_pd(b[c]), acc[c]);
    }
    double lanes[12][4];
#pragma GCC unroll 12
    for (int c = 0; c < NV; c++) _mm256_storeu_pd(lanes[c], acc[c]);
    write_lanes(j, S->row + 8 * s + 4 * half, 4, c0, NV, lanes[0]);
}

X256_FN void half_cols(const st_job *j, int s, int half, int c0, int nv) {
    switch (nv) {
#define CASE(N) case N: half_nv(N, j, s, half, c0); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
#undef CASE
    }
}

// Strips [s0, s1): each in halves of 4 rows; n > 12 columns as 8 and the rest.
X256_FN void strips_avx2(const st_job *j, int s0, int s1) {
    for (int s = s0; s < s1; s++)
        for (int half = 0; half < 2; half++) {
            if (j->S->row[8 * s + 4 * half] < 0) continue; // the last strip's rows past m
            if (j->n <= 12) {
                half_cols(j, s, half, 0, j->n);
            } else {
                half_cols(j, s, half, 0, 8);
                half_cols(j, s, half, 8, j->n - 8);
            }
        }
}
#undef X256_FN
#undef X256_INLINE
#endif

// then on C's rows, THEN_ROWS at a time, once the strips are done: a strip's rows are anywhere in
// C, and a call for each row (in the kernel, as the thin kernel does for its ranges) cost twice
// the softmax's time here.
static void run_then(void *arg) {
    st_job *j = arg;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) * THEN_ROWS < j->m;) {
        int lo = c * THEN_ROWS, hi = lo + THEN_ROWS < j->m ? lo + THEN_ROWS : j->m;
        j->then->fn(j->then->ctx, j->C, j->n, lo, hi);
    }
}

static void run_pieces(void *arg) {
    st_job *j = arg;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) < j->pieces;) {
        int s0 = c * STRIPS_PER_PIECE, s1 = s0 + STRIPS_PER_PIECE < j->S->n ? s0 + STRIPS_PER_PIECE : j->S->n;
#if STRIPS_X86
        if (j->isa == AD_THIN_AVX512) {
            strips_x512(j, s0, s1);
            continue;
        }
        if (j->isa == AD_THIN_AVX2) {
            strips_avx2(j, s0, s1);
            continue;
        }
#endif
        strips_portable(j, s0, s1);
    }
}

// ---- the driver ----

bool ad_strips_matmul(ad_thin_isa isa, int threads, ad_pool *pool, const ad_coded *X, int tx, int n,
                      const double *B, int ldb, double *C, const ad_thin_rows *then) {
    const ad_coded_nz *nz = X->nz;
    if (!nz || !nz->strip[tx ? 1 : 0].ptr || n < 1 || n > 16) return false;
    // An Inf or NaN in B: the dense loop's 0 * Inf = NaN would be skipped with the zeros; left to
    // the thin kernel, which adds every entry.
    if (!ad_sparse_all_finite(B, ldb, n, 0, tx ? X->rows : X->cols)) return false;
    if (isa == AD_THIN_AUTO) isa = ad_thin_best();
    if (!ad_thin_runs(isa)) isa = AD_THIN_PORTABLE;
    st_job job = {.isa = isa, .S = &nz->strip[tx ? 1 : 0], .tab = X->table, .B = B, .n = n,
                  .ldb = ldb, .C = C, .then = then};
    job.lin = isa != AD_THIN_PORTABLE && ad_thin_linear_table(X->table, &job.hi, &job.lo);
    job.pieces = (job.S->n + STRIPS_PER_PIECE - 1) / STRIPS_PER_PIECE;
    job.m = tx ? X->cols : X->rows;
    atomic_init(&job.next, 0);
    int nt = threads < 1 ? 1 : threads > job.pieces ? job.pieces : threads;
    ad_pool_run(pool, nt > 0 ? nt : 1, run_pieces, &job);
    if (then && job.m > 0) {
        atomic_store(&job.next, 0);
        ad_pool_run(pool, threads < 1 ? 1 : threads, run_then, &job);
    }
    return true;
}
