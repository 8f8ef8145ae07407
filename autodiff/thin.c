// Products whose output has few columns: C [m, n] = op(A) op(B) with n <= 16 and m, k large,
// as in a linear model's forward X W ([5000, 784] x [784, 10]) and its reverse rule X^T G
// ([784, 5000] x [5000, 10]). OpenBLAS packs the big operand on every call and reaches 6-18
// GFLOP/s on these shapes here; op(B) is packed instead, into a small zero-padded buffer
// [k, n rounded up to 4], and A is streamed once, its entries broadcast against accumulators
// held in registers: 20-28 GFLOP/s on one thread, up to ~45 on two (`hypertape bench
// autodiff`, line (e)). A may also be one-byte codes into a table of doubles (an 8-bit image
// set, ad_matmul_coded): the same values read in the same order, so the same bits, from 1/8 of
// the memory. Where the table is c / d (pixels c / 255.0), AVX-512 decodes 8 codes at a time by
// arithmetic that gives each table entry exactly (checked entry by entry; else one load a code).
//
// Layout: the reference loop, then the portable kernels, the AVX2 + FMA and the AVX-512
// kernels (compiled with function-level targets so the library needs no -march flag; the
// widest the CPU runs is chosen at run time; AVX-512's sums are AVX2's, so are its bits), and
// the driver that packs B and hands pieces of the product to threads.
#include "thin.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define THIN_X86 1
#include <immintrin.h>
#else
#define THIN_X86 0
#endif

static inline int min_int(int a, int b) { return a < b ? a : b; }

// ---- the reference ----

void ad_thin_matmul_naive(int ta, int tb, int m, int n, int k, const double *A, int lda,
                          const double *B, int ldb, double *C) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) {
                double a = ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p];
                double b = tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j];
                s += a * b;
            }
            C[(size_t)i * n + j] = s;
        }
}

// ---- what every variant shares ----

// One piece of work: rows [lo, hi) of C, and with A transposed rows [p0, p1) of A summed into
// cb (rows [lo, hi) of C, padded to np columns). bp is op(B) packed [k, np], np = n rounded up
// to 4, zero past n.
// A is doubles, or (au non-NULL) one-byte codes whose entry x is tab[x]: the same values,
// read in the same order, so both give the same bits.
// lin: the table is tab[c] = c / d, each entry exactly the division (ad_thin_linear_table), so
// AVX-512 decodes a vector of codes by arithmetic instead of loading one entry per code.
typedef struct {
    ad_thin_isa isa;
    int ta, m, n, k, np, lda, lo, hi, p0, p1;
    const double *A, *bp;
    const uint8_t *au;
    const double *tab;
    double *C, *cb;
    int nb; // row stride of bp: np, or ldb where the strips read B as given (thin_run)
    bool lin;
    double dhi, dlo; // lin: 1 / d as a rounded part and the rest (decode8_x512)
} thin_task;

static inline double a_at(const thin_task *t, size_t at) {
    return t->au ? t->tab[t->au[at]] : t->A[at];
}

static int padded(int n) { return (n + 3) & ~3; }

static void pack_b(int tb, int n, int k, const double *B, int ldb, int np, double *bp) {
    for (int p = 0; p < k; p++) {
        double *row = bp + (size_t)p * np;
        if (tb)
            for (int j = 0; j < n; j++) row[j] = B[(size_t)j * ldb + p];
        else
            memcpy(row, B + (size_t)p * ldb, (size_t)n * sizeof(double));
        for (int j = n; j < np; j++) row[j] = 0;
    }
}

// ---- portable kernels ----

// C rows [lo, hi) = A rows [lo, hi) [., k] times bp, four rows at a time, each entry summed
// in order p (a multiply then an add: no contraction in ISO C, so every row and every thread
// computes the same bits).
static void nn_portable(const thin_task *t) {
    int np = t->np, k = t->k;
    for (int i = t->lo; i < t->hi; i += 4) {
        int rows = min_int(4, t->hi - i);
        double acc[4][AD_THIN_MAX_N] = {{0}};
        for (int p = 0; p < k; p++) {
            const double *b = t->bp + (size_t)p * np;
            for (int r = 0; r < rows; r++) {
                double x = a_at(t, (size_t)(i + r) * t->lda + p);
                for (int j = 0; j < np; j++) acc[r][j] += x * b[j];
            }
        }
        for (int r = 0; r < rows; r++)
            memcpy(t->C + (size_t)(i + r) * t->n, acc[r], (size_t)t->n * sizeof(double));
    }
}

// cb rows [lo, hi) += A^T restricted to columns [lo, hi) and rows [p0, p1): rank-one updates
// in order p, the entries of one row of A against one packed row of B.
static void tn_portable(const thin_task *t) {
    int np = t->np;
    for (int p = t->p0; p < t->p1; p++) {
        const double *b = t->bp + (size_t)p * np;
        for (int i = t->lo; i < t->hi; i++) {
            double x = a_at(t, (size_t)p * t->lda + i), *c = t->cb + (size_t)i * np;
            for (int j = 0; j < np; j++) c[j] += x * b[j];
        }
    }
}

// ---- AVX2 + FMA kernels ----

#if THIN_X86
#define AVX2_FN static __attribute__((target("avx2,fma")))
#define AVX2_INLINE static inline __attribute__((always_inline, target("avx2,fma")))

// R rows of the output [R, 4 NV] from row i, in R * NV registers: per p in [p0, p1), NV loads
// of packed B and R broadcasts of op(A)'s entries (U8: of the table entry a code names), R * NV
// fused multiply-adds, each sum in order p. Without TA, row i + r of A streams along p and the
// rows go to C; with TA (C = A^T B) the entries are A[p, i + r], a strip of R columns of A, and
// the rows go to the block's partial cb [m, np]. R, NV, U8 and TA are constants at each call;
// the accumulators are named variables (GCC keeps an array of them on the stack, storing it
// every iteration), and those past R or NV are dead code.
#define ROW(r)                                                                               \
    if (R > r) {                                                                             \
        size_t at = TA ? (size_t)p * lda + (size_t)(i + r) : (size_t)(i + r) * lda + p;      \
        __m256d x = _mm256_broadcast_sd(U8 ? tab + au[at] : A + at);                         \
        c##r##0 = _mm256_fmadd_pd(x, b0, c##r##0);                                           \
        if (NV > 1) c##r##1 = _mm256_fmadd_pd(x, b1, c##r##1);                               \
        if (NV > 2) c##r##2 = _mm256_fmadd_pd(x, b2, c##r##2);                               \
        if (NV > 3) c##r##3 = _mm256_fmadd_pd(x, b3, c##r##3);                               \
    }
#define OUT(r)                                                                               \
    if (R > r) {                                                                             \
        double *o = TA ? t->cb + (size_t)(i + r) * np : out;                                 \
        _mm256_store_pd(o, c##r##0);                                                         \
        if (NV > 1) _mm256_store_pd(o + 4, c##r##1);                                         \
        if (NV > 2) _mm256_store_pd(o + 8, c##r##2);                                         \
        if (NV > 3) _mm256_store_pd(o + 12, c##r##3);                                        \
        if (!TA) memcpy(t->C + (size_t)(i + r) * t->n, out, (size_t)t->n * sizeof(double));  \
    }
#define IN(r)                                                                                \
    if (TA && R > r && !first) {                                                             \
        const double *o = t->cb + (size_t)(i + r) * np;                                     \
        c##r##0 = _mm256_load_pd(o);                                                         \
        if (NV > 1) c##r##1 = _mm256_load_pd(o + 4);                                         \
        if (NV > 2) c##r##2 = _mm256_load_pd(o + 8);                                         \
        if (NV > 3) c##r##3 = _mm256_load_pd(o + 12);                                        \
    }
// With TA the rows p run over [p0, p1), the accumulators starting from the partial unless first.
AVX2_INLINE void rows_avx2(const int R, const int NV, const int U8, const int TA,
                           const thin_task *t, int i, int p0, int p1, bool first) {
    // the fields in locals: the stores below could alias *t as far as the compiler knows
    const int lda = t->lda, np = t->np;
    const double *A = t->A, *tab = t->tab, *bp = t->bp;
    const uint8_t *au = t->au;
    __m256d z = _mm256_setzero_pd(), b0 = z, b1 = z, b2 = z, b3 = z;
    __m256d c00 = z, c01 = z, c02 = z, c03 = z, c10 = z, c11 = z, c12 = z, c13 = z;
    __m256d c20 = z, c21 = z, c22 = z, c23 = z, c30 = z, c31 = z, c32 = z, c33 = z;
    IN(0) IN(1) IN(2) IN(3)
    for (int p = p0; p < p1; p++) {
        const double *b = bp + (size_t)p * np;
        b0 = _mm256_load_pd(b);
        if (NV > 1) b1 = _mm256_load_pd(b + 4);
        if (NV > 2) b2 = _mm256_load_pd(b + 8);
        if (NV > 3) b3 = _mm256_load_pd(b + 12);
        ROW(0) ROW(1) ROW(2) ROW(3)
    }
    double out[16] __attribute__((aligned(32)));
    OUT(0) OUT(1) OUT(2) OUT(3)
}
#undef ROW
#undef OUT
#undef IN

// Rows [lo, hi) in blocks of R (at most 12 accumulators: 16 ymm registers less B and the
// broadcast), the rest one at a time; a row's sums are the same in either. With TA and A in
// doubles, A's rows [p0, p1) are taken TN_SUB at a time across all the strips, the partial
// carrying the sums from one to the next in the same order p, so A streams by rows (~1.4x
// faster than whole blocks per strip, measured alternately on [5000, 784]^T x [5000, 10]);
// codes, which the cache holds, go through the whole block per strip (10-25% faster than in
// pieces). Neither changes a bit of the result.
enum { TN_SUB = 8 };
#define ROWS_CASE(NV, R)                                                                     \
    case NV: {                                                                               \
        const int p0 = TA ? t->p0 : 0, p1 = TA ? t->p1 : t->k;                               \
        const int sub = TA && !U8 ? TN_SUB : p1 - p0;                                        \
        int s = p0;                                                                          \
        do { /* at least once: an empty range writes zeros */                                \
            int s1 = p1 - s > sub ? s + sub : p1, i = t->lo;                                 \
            for (; i + R <= t->hi; i += R) rows_avx2(R, NV, U8, TA, t, i, s, s1, s == p0);   \
            for (; i < t->hi; i++) rows_avx2(1, NV, U8, TA, t, i, s, s1, s == p0);           \
            s = s1;                                                                          \
        } while (s < p1);                                                                    \
    } break;
AVX2_INLINE void any_avx2(const int U8, const int TA, const thin_task *t) {
    switch (t->np / 4) {
        ROWS_CASE(1, 4)
        ROWS_CASE(2, 4)
        ROWS_CASE(3, 4)
        ROWS_CASE(4, 3)
    }
}
#undef ROWS_CASE
AVX2_FN void nn_avx2(const thin_task *t) {
    if (t->au) any_avx2(1, 0, t);
    else any_avx2(0, 0, t);
}
// A^T B: the same register blocking over strips of A's columns, each summing its rows [p0, p1)
// (a block of A's rows, see tn_blocks) in order p: the partial is written once, not loaded and
// stored at every p.
AVX2_FN void tn_avx2(const thin_task *t) {
    if (t->au) any_avx2(1, 1, t);
    else any_avx2(0, 1, t);
}
#undef AVX2_FN
#undef AVX2_INLINE

// ---- AVX-512 kernels ----
//
// The same sums as the AVX2 kernels, fused multiply-add by fused multiply-add in order p (and,
// with A transposed, the same blocks of rows of A), so the same bits: only which lanes hold
// which entries changes. C = A B: as above with 8-lane registers, op(B)'s rows packed to 8 or
// 16 columns (2 FMAs per entry of A for n = 10 where AVX2 needs 3). C = A^T B: the lanes run
// along a row of A instead, 8 consecutive entries A[p, i..i+7] (for codes: gathered from the
// table) times a broadcast B[p, j], one accumulator per column j of C: no padded lanes (n = 10
// wastes 6 of 16 lanes the other way), and A's entries are loaded as vectors, not one by one.
// Its partials are stored by columns of C ([n, m]: lane i of column j at j m + i).
#define X512_FN static __attribute__((target("avx512f,avx2,fma")))
#define X512_INLINE static inline __attribute__((always_inline, target("avx512f,avx2,fma")))

// R rows of C = A B from row i, NV 8-lane registers a row (np = 8 NV), as rows_avx2 without TA.
#define ROW5(r)                                                                              \
    if (R > r) {                                                                             \
        size_t at = (size_t)(i + r) * lda + p;                                               \
        __m512d x = _mm512_set1_pd(U8 ? tab[au[at]] : A[at]);                                \
        c##r##0 = _mm512_fmadd_pd(x, b0, c##r##0);                                           \
        if (NV > 1) c##r##1 = _mm512_fmadd_pd(x, b1, c##r##1);                               \
    }
#define OUT5(r)                                                                              \
    if (R > r) {                                                                             \
        double *o = t->C + (size_t)(i + r) * t->n;                                           \
        _mm512_mask_storeu_pd(o, m0, c##r##0);                                               \
        if (NV > 1) _mm512_mask_storeu_pd(o + 8, m1, c##r##1);                               \
    }
X512_INLINE void rows_x512(const int R, const int NV, const int U8, const thin_task *t, int i) {
    const int lda = t->lda, np = t->np, k = t->k;
    const double *A = t->A, *tab = t->tab, *bp = t->bp;
    const uint8_t *au = t->au;
    __m512d z = _mm512_setzero_pd(), b0 = z, b1 = z;
    __m512d c00 = z, c01 = z, c10 = z, c11 = z, c20 = z, c21 = z, c30 = z, c31 = z;
    __m512d c40 = z, c41 = z, c50 = z, c51 = z, c60 = z, c61 = z, c70 = z, c71 = z;
    for (int p = 0; p < k; p++) {
        const double *b = bp + (size_t)p * np;
        b0 = _mm512_load_pd(b);
        if (NV > 1) b1 = _mm512_load_pd(b + 8);
        ROW5(0) ROW5(1) ROW5(2) ROW5(3) ROW5(4) ROW5(5) ROW5(6) ROW5(7)
    }
    int n = t->n;
    __mmask8 m0 = (__mmask8)(n >= 8 ? 0xff : (1u << n) - 1);
    __mmask8 m1 = (__mmask8)(n >= 16 ? 0xff : n > 8 ? (1u << (n - 8)) - 1 : 0);
    OUT5(0) OUT5(1) OUT5(2) OUT5(3) OUT5(4) OUT5(5) OUT5(6) OUT5(7)
}
#undef ROW5
#undef OUT5
// Rows [lo, hi) in blocks of 8, the rest one at a time.
X512_INLINE void nn_any_x512(const int NV, const int U8, const thin_task *t) {
    int i = t->lo;
    for (; i + 8 <= t->hi; i += 8) rows_x512(8, NV, U8, t, i);
    for (; i < t->hi; i++) rows_x512(1, NV, U8, t, i);
}
X512_FN void nn_x512(const thin_task *t) {
    if (t->np == 8) {
        if (t->au) nn_any_x512(1, 1, t);
        else nn_any_x512(1, 0, t);
    } else {
        if (t->au) nn_any_x512(2, 1, t);
        else nn_any_x512(2, 0, t);
    }
}

// C^T's columns i .. i+8 NI (masked past hi) over A's rows [p0, p1): per row p, NI vectors of
// A[p, i..] and per column j < N one broadcast B[p, j] and NI FMAs into s<strip>_<j>. The
// accumulators start from the partial (cb, [N, m] by columns) unless first, and end there.
#define STRIP_DECL(j) __m512d s0_##j = z, s1_##j = z;
#define STRIP_IN(j)                                                                          \
    if (N > j && !first) {                                                                   \
        s0_##j = _mm512_maskz_loadu_pd(k0, cb + (size_t)j * m + i);                          \
        if (NI > 1) s1_##j = _mm512_maskz_loadu_pd(k1, cb + (size_t)j * m + i + 8);          \
    }
#define STRIP_FMA(j)                                                                         \
    if (N > j) {                                                                             \
        __m512d g = _mm512_set1_pd(b[j]);                                                    \
        s0_##j = _mm512_fmadd_pd(a0, g, s0_##j);                                             \
        if (NI > 1) s1_##j = _mm512_fmadd_pd(a1, g, s1_##j);                                 \
    }
#define STRIP_OUT(j)                                                                         \
    if (N > j) {                                                                             \
        _mm512_mask_storeu_pd(cb + (size_t)j * m + i, k0, s0_##j);                           \
        if (NI > 1) _mm512_mask_storeu_pd(cb + (size_t)j * m + i + 8, k1, s1_##j);           \
    }
#define STRIP_ALL(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

// 8 codes from c decoded to tab[c] = c / d exactly, with 1 / d split into hi (rounded) and lo
// (the rest, rounded): c hi + (c lo rounded), one fused multiply-add after one product (two
// operations on the FMA ports where the Newton-style correction q + (c - q d) / d took three:
// the strips spend ~1/4 of their FMA-port work decoding). ad_thin_linear_table checked that it
// gives every entry of the table bit for bit (c / 255.0 does, for every c).
X512_INLINE __m512d decode8_x512(const uint8_t *c, __m512d hi, __m512d lo) {
    __m512d x = _mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c)));
    return _mm512_fmadd_pd(x, hi, _mm512_mul_pd(x, lo));
}
// 8 NI entries of A's row from at: doubles (masked past the task's columns unless FULL), or
// codes decoded (the masked-off ones read from a zeroed copy: no byte past the row is read).
X512_INLINE void load_row_x512(const int NI, const int FULL, const int U8, const thin_task *t,
                               size_t at, int left, __mmask8 k0, __mmask8 k1, __m512d hi,
                               __m512d lo, __m512d *a0, __m512d *a1) {
    if (!U8) {
        const double *A = t->A;
        *a0 = FULL ? _mm512_loadu_pd(A + at) : _mm512_maskz_loadu_pd(k0, A + at);
        if (NI > 1) *a1 = FULL ? _mm512_loadu_pd(A + at + 8) : _mm512_maskz_loadu_pd(k1, A + at + 8);
        return;
    }
    const uint8_t *c = t->au + at;
    // the row's next line, which the strip 64 columns on reads: the block's codes come from
    // beyond L2 at this stride, and unfetched they stalled every row (1.9x slower measured)
    _mm_prefetch((const char *)c + 64, _MM_HINT_T0);
    // past the task's columns: the bytes that follow (the row's next columns or the next row's
    // first ones) fill lanes whose sums are never stored, so they are read as they are, but for
    // the last bytes of the matrix, which are copied (no byte past the matrix is read); the
    // copy on every row cost an A^T B with one column past the strips (785 = 49 x 16 + 1,
    // linear hyper-cleaning's X with its column of ones) ~15% more than one without
    uint8_t part[16] = {0};
    if (!FULL && at + 8 * NI > (size_t)(t->k - 1) * (size_t)t->lda + (size_t)t->m)
        c = memcpy(part, c, (size_t)(left < 8 * NI ? left : 8 * NI));
    *a0 = decode8_x512(c, hi, lo);
    if (NI > 1) *a1 = decode8_x512(c + 8, hi, lo);
}

// FULL: all 8 NI columns from i are in [lo, hi) (no masks in the loop). U8: A is codes with a
// linear table (t->lin).
X512_INLINE void strip_x512(const int N, const int NI, const int FULL, const int U8,
                            const thin_task *t, int i, int p0, int p1, bool first) {
    const int lda = t->lda, nb = t->nb, m = t->m, left = t->hi - i;
    const double *bp = t->bp;
    const __m512d hi = _mm512_set1_pd(t->dhi), lo = _mm512_set1_pd(t->dlo);
    double *cb = t->cb;
    __mmask8 k0 = (__mmask8)(left >= 8 ? 0xff : (1u << left) - 1);
    __mmask8 k1 = (__mmask8)(left >= 16 ? 0xff : left > 8 ? (1u << (left - 8)) - 1 : 0);
    __m512d z = _mm512_setzero_pd(), a0 = z, a1 = z;
    STRIP_ALL(STRIP_DECL)
    STRIP_ALL(STRIP_IN)
    for (int p = p0; p < p1; p++) {
        const double *b = bp + (size_t)p * nb;
        load_row_x512(NI, FULL, U8, t, (size_t)p * lda + (size_t)i, left, k0, k1, hi, lo, &a0, &a1);
        STRIP_ALL(STRIP_FMA)
    }
    STRIP_ALL(STRIP_OUT)
}
#undef STRIP_DECL
#undef STRIP_IN
#undef STRIP_FMA
#undef STRIP_OUT
#undef STRIP_ALL

// The task's columns [lo, hi) of A in strips of 8 NI: A's rows [p0, p1) TN_SUB5 at a time across
// all strips for doubles (A streams by rows, as in any_avx2), the whole block per strip for codes
// (the block's codes stay in cache; by 8 rows the loads of codes stalled, measured 1.7x slower):
// no bit changes with either.
#ifndef TN_SUB5
#define TN_SUB5 8
#endif
X512_INLINE void tn_n_x512(const int N, const int U8, const thin_task *t) {
    const int NI = N <= 13 ? 2 : 1, w = 8 * NI, sub = U8 ? t->p1 - t->p0 : TN_SUB5;
    int s = t->p0;
    do { // at least once: an empty range writes zeros
        int s1 = t->p1 - s > sub ? s + sub : t->p1;
        int i = t->lo;
        for (; i + w <= t->hi; i += w) strip_x512(N, NI, 1, U8, t, i, s, s1, s == t->p0);
        if (i < t->hi && (NI == 1 || t->hi - i > 8)) strip_x512(N, NI, 0, U8, t, i, s, s1, s == t->p0);
        else if (i < t->hi) strip_x512(N, 1, 0, U8, t, i, s, s1, s == t->p0); // 8 columns do
        s = s1;
    } while (s < t->p1);
}
#define TN_CASE(N)                                                                           \
    case N: if (t->au) tn_n_x512(N, 1, t); else tn_n_x512(N, 0, t); break;
// A^T B on doubles, or on codes whose table is linear (decoded by arithmetic), by strips of A's
// rows (partial [n, m] by columns). (Other codes go to tn_avx2: vectors of them need a gather
// from the table, ~2x slower here than broadcasts, and broadcasts against 8-lane rows of B
// measured no faster than AVX2's, 0.94-1.03x.)
X512_FN void tn_x512(const thin_task *t) {
    switch (t->n) {
        TN_CASE(1) TN_CASE(2) TN_CASE(3) TN_CASE(4) TN_CASE(5) TN_CASE(6) TN_CASE(7) TN_CASE(8)
        TN_CASE(9) TN_CASE(10) TN_CASE(11) TN_CASE(12) TN_CASE(13) TN_CASE(14) TN_CASE(15)
        TN_CASE(16)
    }
}
#undef TN_CASE
#undef X512_FN
#undef X512_INLINE
#endif

// ---- the driver ----

bool ad_thin_runs(ad_thin_isa isa) {
    switch (isa) {
    case AD_THIN_AUTO:
    case AD_THIN_PORTABLE: return true;
    case AD_THIN_AVX2:
    case AD_THIN_AVX512:
#if THIN_X86
        __builtin_cpu_init(); // idempotent; needed if this runs before the library's constructors
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return false;
        return isa == AD_THIN_AVX2 || __builtin_cpu_supports("avx512f");
#else
        return false;
#endif
    }
    return false;
}

ad_thin_isa ad_thin_best(void) {
    if (ad_thin_runs(AD_THIN_AVX512)) return AD_THIN_AVX512;
    return ad_thin_runs(AD_THIN_AVX2) ? AD_THIN_AVX2 : AD_THIN_PORTABLE;
}

const char *ad_thin_name(ad_thin_isa isa) {
    switch (isa) {
    case AD_THIN_AUTO: return ad_thin_name(ad_thin_best());
    case AD_THIN_PORTABLE: return "portable C";
    case AD_THIN_AVX2: return "AVX2+FMA";
    case AD_THIN_AVX512: return "AVX-512";
    }
    return "?";
}

// At most 4: the products stream A from memory, and on this 2-core host two threads already
// share its bandwidth; no more than the user allowed OpenBLAS, whose idle threads would
// otherwise compete with ours.
int ad_thin_default_threads(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int n = cpus < 1 ? 1 : cpus > 4 ? 4 : (int)cpus;
    const char *env[2] = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(env[i]);
        int lim = v ? atoi(v) : 0;
        if (lim >= 1 && lim < n) n = lim;
    }
    return n;
}

// With A transposed, C [m, n] sums over the rows of A, which are what streams well (the
// columns a thread would own in [784, 5000]^T are 3 KB pieces of rows, and narrower pieces
// measured up to 1.7x slower). So k is cut into blocks of rows, at least 256 and at most 16
// blocks, fixed by the shape alone; each block's sum goes to its own partial [m, np], and the
// partials are added in block order: the same bits for any thread count. Short k (one
// block) splits the columns instead. The partials are bounded to 16 MB.
enum { TN_MIN_ROWS = 256, TN_MAX_BLOCKS = 16, TN_PARTIALS_MAX = 1 << 21 }; // doubles
static int tn_blocks(int m, int n, int k) {
    int b = min_int(k / TN_MIN_ROWS, TN_MAX_BLOCKS);
    size_t part = (size_t)padded(n) * (size_t)m;
    while (b > 1 && (size_t)b * part > TN_PARTIALS_MAX) b--;
    return b < 1 ? 1 : b;
}

// Whether a table of codes is tab[c] = c / d with d = 1 / tab[1], each entry what the kernels'
// decoding computes from c, c hi + (c lo rounded) in one fused multiply-add (decode8_x512, and
// strips.c's on AVX-512 and AVX2; fma() gives those bits on any machine), pixels c / 255.0 among
// them: then 1 / d as *hi (rounded) + *lo (the rounding error of hi, divided by d and rounded).
bool ad_thin_linear_table(const double *tab, double *hi, double *lo) {
    if (!(tab[1] > 0) || tab[0] != 0 || signbit(tab[0])) return false;
    double d = 1.0 / tab[1], h = 1.0 / d, l = fma(-h, d, 1.0) / d;
    for (int c = 0; c < 256; c++) {
        double x = (double)c, v = fma(x, h, x * l);
        if (v != tab[c] || signbit(v) != signbit(tab[c])) return false;
    }
    *hi = h, *lo = l;
    return true;
}

// A^T B on AVX-512's strips (partials by columns of C): on doubles, or codes of a linear table.
static bool tn_strips(ad_thin_isa isa, bool codes, bool lin) {
    return isa == AD_THIN_AVX512 && (!codes || lin);
}

// Packed op(B) [k, np]: np = n rounded up to 4, or to 8 where AVX-512 runs (but A^T B on codes
// of a table that is not linear, which runs AVX2's code).
static int packed_width(ad_thin_isa isa, int ta, bool codes, bool lin, int n) {
    return isa == AD_THIN_AVX512 && !(ta && !tn_strips(isa, codes, lin)) ? (n + 7) & ~7 : padded(n);
}

size_t ad_thin_work_size(int ta, int m, int n, int k) {
    size_t np = (size_t)packed_width(AD_THIN_AVX512, 0, false, false, n); // the widest
    return np * (size_t)k + (ta ? np * (size_t)m * (size_t)tn_blocks(m, n, k) : 0);
}

static void run_task(const thin_task *t) {
    if (t->lo >= t->hi) return;
    if (!t->ta) {
#if THIN_X86
        if (t->isa == AD_THIN_AVX512) nn_x512(t);
        else if (t->isa == AD_THIN_AVX2) nn_avx2(t);
        else
#endif
            nn_portable(t);
        return;
    }
#if THIN_X86
    if (tn_strips(t->isa, t->au != NULL, t->lin)) { // writes every column of its partial ([n, m])
        tn_x512(t);
        return;
    }
    if (t->isa == AD_THIN_AVX2 || t->isa == AD_THIN_AVX512) { // writes every row of its partial
        tn_avx2(t);
        return;
    }
#endif
    memset(t->cb + (size_t)t->lo * t->np, 0, (size_t)(t->hi - t->lo) * t->np * sizeof(double));
    tn_portable(t);
}

// Threads take the pieces in turn from a shared counter: a thread the host is slow to schedule
// (it is shared) leaves its pieces to the others instead of holding up the call. Which thread
// computes a piece changes nothing in its bits. Pieces: a few ranges of rows of C per thread,
// or with A transposed the blocks of rows of A (tn_blocks), or one range of columns of A per
// thread when there is one block.
#ifndef THIN_CHUNKS_PER_THREAD
#define THIN_CHUNKS_PER_THREAD 4
#endif
typedef struct {
    thin_task all; // the whole product
    int chunk, n_chunks, by_rows_of_a;
    bool by_cols; // A^T B's partials are by columns of C ([n, m]), else by rows ([m, np])
    const ad_thin_rows *then; // NULL, or what to do with rows of C once final (thin.h)
    atomic_int next;
    // blocks of rows of A: the partials are added into the first in block order as they are
    // done (add_done), under mu: done[b] block b's partial is computed, merged the blocks
    // added so far
    pthread_mutex_t mu;
    bool done[TN_MAX_BLOCKS];
    int merged;
    size_t used; // doubles of a partial that hold sums
} thin_job;

// Block c's partial is done: adds every partial now due into the first, in block order (the
// same sums in the same order as adding them all after the join), on the thread that finishes
// the block that is due, while the other threads compute later blocks. No thread waits for
// another: a block done early is added by whoever completes the ones before it.
static void add_done(thin_job *j, int c) {
    pthread_mutex_lock(&j->mu);
    j->done[c] = true;
    size_t stride = (size_t)j->all.m * j->all.np;
    double *part = j->all.cb;
    for (; j->merged < j->n_chunks && j->done[j->merged]; j->merged++) {
        const double *pb = part + (size_t)j->merged * stride;
        if (j->merged > 0) // a loop the compiler vectorizes
            for (size_t at = 0; at < j->used; at++) part[at] += pb[at];
    }
    pthread_mutex_unlock(&j->mu);
}

// Rows [lo, hi) of C from a partial of A^T B (by columns of C or by rows, thin_job).
static void copy_out(const thin_task *t, bool by_cols, const double *part, int lo, int hi) {
    for (int i = lo; i < hi; i++)
        for (int j = 0; j < t->n; j++)
            t->C[(size_t)i * t->n + j] = part[by_cols ? (size_t)j * t->m + i : (size_t)i * t->np + j];
}

static void run_chunks(void *arg) {
    thin_job *j = arg;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) < j->n_chunks;) {
        thin_task t = j->all;
        if (j->by_rows_of_a) {
            t.p0 = c * j->chunk;
            t.p1 = min_int(t.k, t.p0 + j->chunk);
            t.cb += (size_t)c * t.m * t.np;
        } else {
            t.lo = c * j->chunk;
            t.hi = min_int(t.m, t.lo + j->chunk);
        }
        run_task(&t);
        if (j->by_rows_of_a) add_done(j, c);
        // A^T B in one block: its rows of C are final; copied while in cache, on this thread
        if (t.ta && !j->by_rows_of_a) copy_out(&t, j->by_cols, t.cb, t.lo, t.hi);
        // rows of C final here (not those of A^T B summed over blocks, final after the join)
        if (j->then && !j->by_rows_of_a && t.lo < t.hi)
            j->then->fn(j->then->ctx, t.C, t.n, t.lo, t.hi);
    }
}

enum { THIN_MAX_THREADS = 64 };

// one_block: with A transposed, sum over all of k in order p (no blocks of rows of A), which
// gives A^T B the bits of the product without the transpose on A^T's rows.
static void thin_run(ad_thin_isa isa, int threads, ad_pool *pool, int ta, int tb, int m, int n,
                     int k, const double *A, const uint8_t *au, const double *tab, int lda,
                     const double *B, int ldb, double *C, double *work, bool one_block,
                     const ad_thin_rows *then) {
    if (m <= 0 || n <= 0) return;
    if (isa == AD_THIN_AUTO) isa = ad_thin_best();
    if (!ad_thin_runs(isa)) isa = AD_THIN_PORTABLE;
    double hi = 0, lo = 0;
    bool lin = au && ta && isa == AD_THIN_AVX512 && ad_thin_linear_table(tab, &hi, &lo);
    int np = packed_width(isa, ta, au != NULL, lin, n);
    int blocks = ta && !one_block ? tn_blocks(m, n, k) : 1;
    // AVX-512's strips broadcast B's entries one by one, so they read B as given: no copy of
    // G [5000, 10] padded to 16 columns per X^T G
    bool as_given = ta && !tb && tn_strips(isa, au != NULL, lin);
    if (!as_given) pack_b(tb, n, k, B, ldb, np, work);
    thin_job job = {.all = {.isa = isa, .ta = ta, .m = m, .n = n, .k = k, .np = np, .lda = lda,
                            .lo = 0, .hi = m, .p0 = 0, .p1 = k, .A = A, .au = au, .tab = tab,
                            .bp = as_given ? B : work, .nb = as_given ? ldb : np, .C = C,
                            .cb = work + (size_t)np * k, .lin = lin, .dhi = hi, .dlo = lo},
                   .by_cols = tn_strips(isa, au != NULL, lin), .then = then,
                   .mu = PTHREAD_MUTEX_INITIALIZER};
    int nt = min_int(threads < 1 ? 1 : min_int(threads, THIN_MAX_THREADS), (m + 7) / 8);
    if (blocks > 1) { // A transposed, k long: blocks of rows of A
        job.by_rows_of_a = 1;
        job.chunk = ((k + blocks - 1) / blocks + 3) & ~3;
        job.n_chunks = (k + job.chunk - 1) / job.chunk;
    } else { // ranges of rows of C in multiples of 8 (16 for A^T: whole strips): a few per
             // thread, one per thread for A^T but in one run over a long k (one_block)
        int want = nt == 1 ? 1 : ta && !one_block ? nt : THIN_CHUNKS_PER_THREAD * nt;
        int align = ta ? 16 : 8;
        job.chunk = ((m + want - 1) / want + align - 1) / align * align;
        job.n_chunks = (m + job.chunk - 1) / job.chunk;
    }
    nt = min_int(nt, job.n_chunks);
    atomic_init(&job.next, 0);
    job.used = job.by_cols ? (size_t)n * m : (size_t)m * np;
    // a thread that cannot be started leaves its pieces to the others
    ad_pool_run(pool, nt, run_chunks, &job);
    pthread_mutex_destroy(&job.mu);
    if (!ta || !job.by_rows_of_a) return; // one block: its chunks copied their rows out
    // C = the partials added in block order (add_done: all of them by now), copied out
    copy_out(&job.all, job.by_cols, job.all.cb, 0, m);
    if (then) then->fn(then->ctx, C, n, 0, m);
}

void ad_thin_matmul(ad_thin_isa isa, int threads, ad_pool *pool, int ta, int tb, int m, int n,
                    int k, const double *A, int lda, const double *B, int ldb, double *C,
                    double *work) {
    thin_run(isa, threads, pool, ta, tb, m, n, k, A, NULL, NULL, lda, B, ldb, C, work, false, NULL);
}

void ad_thin_matmul_coded(ad_thin_isa isa, int threads, ad_pool *pool, int ta, int m, int n, int k,
                          const uint8_t *codes, const double *table, int lda, const double *B,
                          int ldb, double *C, double *work) {
    thin_run(isa, threads, pool, ta, 0, m, n, k, NULL, codes, table, lda, B, ldb, C, work, false,
             NULL);
}

void ad_thin_matmul_coded_t(ad_thin_isa isa, int threads, ad_pool *pool, int m, int n, int k,
                            const uint8_t *codes_t, const double *table, int ldt, const double *B,
                            int ldb, double *C, double *work) {
    thin_run(isa, threads, pool, 1, 0, m, n, k, NULL, codes_t, table, ldt, B, ldb, C, work, true,
             NULL);
}

void ad_thin_coded_rows(ad_thin_isa isa, int threads, ad_pool *pool, int m, int n, int k,
                        const uint8_t *codes, const uint8_t *codes_t, const double *table,
                        const double *B, int ldb, double *C, double *work,
                        const ad_thin_rows *then) {
    if (codes_t)
        thin_run(isa, threads, pool, 1, 0, m, n, k, NULL, codes_t, table, m, B, ldb, C, work, true,
                 then);
    else
        thin_run(isa, threads, pool, 0, 0, m, n, k, NULL, codes, table, k, B, ldb, C, work, false,
                 then);
}
