// Products with a coded constant that skip its zeros (sparse.h): C = op(X) B with X's nonzeros
// listed once by rows and by columns (ad_coded_nz_make), for the wide products of an MLP's first
// layer over 8-bit images: X1 W1 [5000, 785] x [785, 300] and X1^T G [785, 5000] x [5000, 300],
// half of whose multiply-adds are with a pixel 0. The bits are those of the ordered fma loop over
// all entries (sparse.h says why skipping a zero changes nothing).
//
// Both products are one kernel on a list of rows: C row r = sum over the nonzeros (q, code) of
// row r of op(X), in q ascending, of tab[code] B row q; X's rows list for X B, its columns' list
// for X^T B. Blocking: C in panels of 64 columns (8 AVX-512 registers of accumulators, the last
// masked), B's panel in blocks of QBLOCK rows (32 KB, in the 48 KB L1) and C's rows in chunks of
// at most CHUNK rows (256 KB of a panel, in L2); for each block every row of the chunk loads its
// accumulators, adds its nonzeros in the block (a cursor per row remembers where it stopped) and
// stores them: the same sums in the same order as one run over q.
//
// On AVX-512 the rows go four at a time where that pays (ad_coded_groups): a group's union list
// loads each vector of B once for 4 fused multiply-adds, where a row alone needs a load for each
// (the load ports, not the multiply units, bound it; half dgemm's rate). Greedy grouping of
// similar rows keeps the unions small: 1.19 times the nonzeros for 5000 FashionMNIST images, 1.18
// for their 785 pixel columns, where adjacent images give 1.59. Panels are then GROUP_NV vectors
// wide (24 accumulators).
//
// Layout: the structure, the reference, the portable and AVX-512 kernels (a function-level
// target as in thin.c, chosen at run time), the Inf/NaN fix-up and the driver with its threads.
#include "sparse.h"

#include "pool.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define SPARSE_X86 1
#include <immintrin.h>
#else
#define SPARSE_X86 0
#endif

enum { PANEL = 64, QBLOCK = 64, CHUNK = 512, MAX_THREADS = 64, PREFETCH = 4, PACK_AHEAD = 8 };
// groups: their panels' width in vectors; the pay rule; how many rows ahead the greedy looks
enum { GROUP_NV = 6, GROUP_QBLOCK = 96, GROUP_CHUNK = 256, GROUPS_PAY_PERCENT = 150, GROUP_WINDOW = 512 };
// pk's size in doubles: QBLOCK rows of PANEL, or GROUP_QBLOCK rows of 8 GROUP_NV
enum { PK_SIZE = QBLOCK * PANEL > GROUP_QBLOCK * 8 * GROUP_NV ? QBLOCK * PANEL : GROUP_QBLOCK * 8 * GROUP_NV };

static inline int min_int(int a, int b) { return a < b ? a : b; }

// ---- the structure ----

static bool is_zero(double v) { return v == 0.0; } // +0.0 and -0.0

void ad_coded_nz_free(ad_coded_nz *nz) {
    if (!nz) return;
    free(nz->row_ptr), free(nz->row_idx), free(nz->row_code);
    free(nz->col_ptr), free(nz->col_idx), free(nz->col_code);
    for (int t = 0; t < 2; t++) {
        free(nz->grp[t].row), free(nz->grp[t].ptr), free(nz->grp[t].idx), free(nz->grp[t].code);
        free(nz->strip[t].row), free(nz->strip[t].ptr), free(nz->strip[t].idx), free(nz->strip[t].code);
    }
    free(nz);
}

static ad_coded_nz *nz_fail(ad_coded_nz *nz, char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "coded_nz_make: %s", msg);
    ad_coded_nz_free(nz);
    return NULL;
}

static bool make_groups(ad_coded_nz *nz, int tx);

ad_coded_nz *ad_coded_nz_make(const ad_coded *X, char *err, size_t errlen) {
    if (!X || !X->codes || !X->table || X->rows < 0 || X->cols < 0)
        return nz_fail(NULL, err, errlen, !X ? "no matrix" : X->rows < 0 || X->cols < 0
                                                               ? "negative size"
                                                               : "no codes or no table");
    ad_coded_nz *nz = calloc(1, sizeof *nz);
    if (!nz) return nz_fail(NULL, err, errlen, "out of memory");
    int R = X->rows, K = X->cols;
    bool zero[256];
    for (int c = 0; c < 256; c++) zero[c] = is_zero(X->table[c]);
    *nz = (ad_coded_nz){.rows = R, .cols = K, .codes = X->codes, .table = X->table};
    nz->row_ptr = calloc((size_t)R + 1, sizeof(int64_t));
    nz->col_ptr = calloc((size_t)K + 1, sizeof(int64_t));
    if (!nz->row_ptr || !nz->col_ptr) return nz_fail(nz, err, errlen, "out of memory");
    for (int r = 0; r < R; r++) { // counts, then the lists' starts
        const uint8_t *row = X->codes + (size_t)r * K;
        for (int c = 0; c < K; c++)
            if (!zero[row[c]]) nz->row_ptr[r + 1]++, nz->col_ptr[c + 1]++;
    }
    for (int r = 0; r < R; r++) nz->row_ptr[r + 1] += nz->row_ptr[r];
    for (int c = 0; c < K; c++) nz->col_ptr[c + 1] += nz->col_ptr[c];
    size_t nnz = (size_t)nz->row_ptr[R], sz = nnz ? nnz : 1;
    nz->nnz = (int64_t)nnz;
    nz->row_idx = malloc(sz * sizeof(int32_t)), nz->row_code = malloc(sz);
    nz->col_idx = malloc(sz * sizeof(int32_t)), nz->col_code = malloc(sz);
    int64_t *fill = malloc(((size_t)K + 1) * sizeof(int64_t)); // the columns' next free place
    if (!nz->row_idx || !nz->row_code || !nz->col_idx || !nz->col_code || !fill) {
        free(fill);
        return nz_fail(nz, err, errlen, "out of memory");
    }
    memcpy(fill, nz->col_ptr, ((size_t)K + 1) * sizeof(int64_t));
    int64_t e = 0;
    for (int r = 0; r < R; r++) { // rows in order: each column's list comes out row ascending
        const uint8_t *row = X->codes + (size_t)r * K;
        for (int c = 0; c < K; c++) {
            if (zero[row[c]]) continue;
            nz->row_idx[e] = c, nz->row_code[e++] = row[c];
            nz->col_idx[fill[c]] = r, nz->col_code[fill[c]++] = row[c];
        }
    }
    free(fill);
    if (!make_groups(nz, 0) || !make_groups(nz, 1)) return nz_fail(nz, err, errlen, "out of memory");
    return nz;
}

// ---- groups of four rows ----

// |a + b| (b NULL: |a|) over words 64-bit words. Built without -mpopcnt, __builtin_popcountll is
// a library call of shifts and masks (5% of a linear hyper-cleaning run went there, making the
// groups and strips), so where the CPU has the instruction a copy built for it counts.
static inline __attribute__((always_inline)) int popcount_or_body(const uint64_t *a, const uint64_t *b,
                                                                  int words) {
    int c = 0;
    for (int i = 0; i < words; i++) c += __builtin_popcountll(a[i] | (b ? b[i] : 0));
    return c;
}
static int popcount_or_plain(const uint64_t *a, const uint64_t *b, int words) {
    return popcount_or_body(a, b, words);
}
#if SPARSE_X86
static __attribute__((target("popcnt"))) int popcount_or_hw(const uint64_t *a, const uint64_t *b,
                                                           int words) {
    return popcount_or_body(a, b, words);
}
#endif
typedef int (*popcount_or_fn)(const uint64_t *a, const uint64_t *b, int words);
static popcount_or_fn popcount_or_best(void) {
#if SPARSE_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("popcnt")) return popcount_or_hw;
#endif
    return popcount_or_plain;
}

// The rows of op(X) not yet grouped, a list with sentinel m: next [m + 1], prev [m + 1].
static void list_take(int *next, int *prev, int r) {
    next[prev[r]] = next[r];
    prev[next[r]] = prev[r];
}

// Group g's union entries written from its rows' bit sets (X's codes for each row at them).
static void fill_group(ad_coded_nz *nz, int tx, const uint64_t *bits, int words, int g,
                       uint64_t *U) {
    ad_coded_groups *G = &nz->grp[tx];
    const int32_t *row = G->row + 4 * g;
    for (int i = 0; i < words; i++) {
        U[i] = 0;
        for (int h = 0; h < 4; h++) U[i] |= bits[(size_t)row[h] * words + i];
    }
    int64_t e = G->ptr[g];
    for (int i = 0; i < words; i++)
        for (uint64_t w = U[i]; w; w &= w - 1, e++) {
            int q = 64 * i + __builtin_ctzll(w);
            G->idx[e] = q;
            for (int h = 0; h < 4; h++) {
                size_t at = tx ? (size_t)q * nz->cols + row[h] : (size_t)row[h] * nz->cols + q;
                G->code[4 * e + h] = nz->codes[at];
            }
        }
}

uint64_t *ad_sparse_bits(const ad_coded_nz *nz, int tx, int *words) {
    const int64_t *ptr = tx ? nz->col_ptr : nz->row_ptr;
    const int32_t *idx = tx ? nz->col_idx : nz->row_idx;
    int m = tx ? nz->cols : nz->rows, k = tx ? nz->rows : nz->cols, w = (k + 63) / 64;
    uint64_t *bits = calloc((size_t)m * w + (size_t)w + 1, sizeof(uint64_t));
    for (int r = 0; bits && r < m; r++)
        for (int64_t e = ptr[r]; e < ptr[r + 1]; e++)
            bits[(size_t)r * w + idx[e] / 64] |= 1ull << (idx[e] % 64);
    *words = w;
    return bits;
}

// Greedy (sparse.h): the first row not yet taken starts a group, and G - 1 times the row s among
// the next window not taken that costs least joins union U, its cost 2 |U + s| - |s| (a row that
// fills U's zeros is preferred; on the images |U + s| alone gives 1.28 times the nonzeros in
// groups of 4, this 1.17 with no window). U: bits' row past the last.
bool ad_sparse_greedy(const ad_coded_nz *nz, int tx, uint64_t *bits, int words, int G, int window,
                      int32_t *row) {
    const int64_t *ptr = tx ? nz->col_ptr : nz->row_ptr;
    int m = tx ? nz->cols : nz->rows;
    int *next = malloc(((size_t)m + 1) * sizeof(int)), *prev = malloc(((size_t)m + 1) * sizeof(int));
    if (!next || !prev) {
        free(next), free(prev);
        return false;
    }
    uint64_t *U = bits + (size_t)m * words;
    popcount_or_fn popcount_or = popcount_or_best();
    for (int i = 0; i <= m; i++) next[i] = (i + 1) % (m + 1), prev[i] = (i + m) % (m + 1);
    for (int at = 0; at < m; at++) {
        int r = next[m];
        if (at % G) { // the best of the next window rows joins the group
            int seen = 0;
            int64_t best_cost = INT64_MAX;
            for (int s = next[m]; s != m && seen < window; s = next[s], seen++) {
                int64_t cost = 2 * (int64_t)popcount_or(U, bits + (size_t)s * words, words) -
                               (ptr[s + 1] - ptr[s]);
                if (cost < best_cost) best_cost = cost, r = s;
            }
        } else {
            memset(U, 0, (size_t)words * sizeof(uint64_t));
        }
        list_take(next, prev, r);
        row[at] = r;
        for (int i = 0; i < words; i++) U[i] |= bits[(size_t)r * words + i];
    }
    free(next), free(prev);
    return true;
}

// Groups of four rows of op(X) (tx: of X^T) with their union lists (ad_coded_groups), in the
// greedy order (GROUP_WINDOW rows ahead); the m % 4 rows of the last, short, group are the rest.
// Not kept when they do not pay (ad_sparse_groups).
static bool make_groups(ad_coded_nz *nz, int tx) {
    int m = tx ? nz->cols : nz->rows, words, n = m / 4;
    ad_coded_groups *G = &nz->grp[tx];
    *G = (ad_coded_groups){.n = n, .n_rest = m - 4 * n};
    uint64_t *bits = ad_sparse_bits(nz, tx, &words);
    int32_t *order = malloc(((size_t)m + 1) * sizeof(int32_t));
    G->row = order;
    G->ptr = calloc((size_t)n + 1, sizeof(int64_t));
    bool ok = bits && order && G->ptr && ad_sparse_greedy(nz, tx, bits, words, 4, GROUP_WINDOW, order);
    uint64_t *U = ok ? bits + (size_t)m * words : NULL;
    popcount_or_fn popcount_or = popcount_or_best();
    for (int g = 0; ok && g < n; g++) {
        for (int i = 0; i < words; i++) {
            U[i] = 0;
            for (int h = 0; h < 4; h++) U[i] |= bits[(size_t)order[4 * g + h] * words + i];
        }
        G->ptr[g + 1] = G->ptr[g] + popcount_or(U, NULL, words);
    }
    for (int i = 0; ok && i < G->n_rest; i++) G->rest[i] = order[4 * n + i];
    size_t entries = ok ? (size_t)G->ptr[n] : 0;
    if (ok) {
        G->idx = malloc((entries + 1) * sizeof(int32_t)), G->code = malloc(4 * entries + 4);
        ok = G->idx && G->code;
    }
    for (int g = 0; ok && g < n; g++) fill_group(nz, tx, bits, words, g, U);
    free(bits);
    if (!ok || !ad_sparse_groups(nz, tx)) { // out of memory, or not used: not kept
        free(G->row), free(G->ptr), free(G->idx), free(G->code);
        *G = (ad_coded_groups){0};
    }
    return ok;
}

int64_t ad_coded_nz_count(const ad_coded_nz *nz) { return nz ? nz->nnz : 0; }

bool ad_sparse_matches(const ad_coded *X) {
    const ad_coded_nz *nz = X->nz;
    return nz && nz->rows == X->rows && nz->cols == X->cols && nz->codes == X->codes &&
           nz->table == X->table;
}

// ---- the reference ----

void ad_sparse_matmul_naive(const ad_coded *X, int tx, int n, const double *B, int ldb, double *C) {
    int m = tx ? X->cols : X->rows, k = tx ? X->rows : X->cols, cols = X->cols;
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n; j++) {
            double s = 0.0;
            for (int q = 0; q < k; q++) {
                size_t at = tx ? (size_t)q * cols + r : (size_t)r * cols + q;
                s = fma(X->table[X->codes[at]], B[(size_t)q * ldb + j], s);
            }
            C[(size_t)r * n + j] = s;
        }
}

// ---- the kernels ----

// The product as a list of rows: C row r [n] = sum over e in [ptr[r], ptr[r + 1]) of
// tab[code[e]] B row idx[e], idx ascending in each row; B [k, n] with row stride ldb. The work
// comes in units: with grp (AVX-512), its groups 0 .. grp->n - 1 and then its rest rows, else
// the rows themselves.
typedef struct {
    const int64_t *ptr;
    const int32_t *idx;
    const uint8_t *code;
    const ad_coded_groups *grp; // the rows four by four, or NULL
    const double *tab, *B;
    int m, n, k, ldb;
    int pw, qb; // panels' width (and pk's row stride), blocks' rows: PANEL and QBLOCK, or for groups
                // 8 GROUP_NV and GROUP_QBLOCK (pk then 36 KB)
    double *C;
} sp_rows;

static int units(const sp_rows *s) { return s->grp ? s->grp->n + s->grp->n_rest : s->m; }

// The row of C that unit u is when it is one row (not a group).
static int unit_row(const sp_rows *s, int u) { return s->grp ? s->grp->rest[u - s->grp->n] : u; }

static bool unit_is_group(const sp_rows *s, int u) { return s->grp && u < s->grp->n; }

// Unit u's multiply-adds in vectors per column vector (a group's entries count 4), with per_row
// for each row's loads and stores.
static int64_t unit_work(const sp_rows *s, int u, int64_t per_row) {
    if (unit_is_group(s, u)) return 4 * (s->grp->ptr[u + 1] - s->grp->ptr[u] + per_row);
    int r = unit_row(s, u);
    return s->ptr[r + 1] - s->ptr[r] + per_row;
}

// Rows [lo, hi) of C (hi - lo <= CHUNK), columns [j0, j0 + w) (w <= PANEL), the block of B's rows
// [q0, q1): each row's accumulators loaded (or zero in the first block), its nonzeros in the
// block added in order, stored. cur [hi - lo]: each row's next nonzero, moved past the block.
// A row with nothing in a later block is left as it is.
static void block_portable(const sp_rows *s, const double *pk, int lo, int hi, int j0, int w,
                           int q0, int q1, int64_t *cur) {
    for (int r = lo; r < hi; r++) {
        int64_t e = cur[r - lo], end = s->ptr[r + 1];
        if (q0 > 0 && (e == end || s->idx[e] >= q1)) continue;
        double acc[PANEL], *c = s->C + (size_t)r * s->n + j0;
        for (int j = 0; j < w; j++) acc[j] = q0 == 0 ? 0.0 : c[j];
        for (; e < end && s->idx[e] < q1; e++) {
            double a = s->tab[s->code[e]];
            const double *b = pk + (size_t)(s->idx[e] - q0) * s->pw;
            for (int j = 0; j < w; j++) acc[j] = fma(a, b[j], acc[j]);
        }
        cur[r - lo] = e;
        memcpy(c, acc, (size_t)w * sizeof(double));
    }
}

#if SPARSE_X86
#define X512_FN static __attribute__((target("avx512f,avx2,fma")))
#define X512_INLINE static inline __attribute__((always_inline, target("avx512f,avx2,fma")))

// block_portable for row r alone, with NV registers of 8 columns (w = 8 (NV - 1) + the lanes of
// ml); cur [1]: its next entry.
X512_INLINE void row_nv(const int NV, const sp_rows *s, const double *pk, int r, int j0,
                        __mmask8 ml, int q0, int q1, int64_t *cur) {
    const int32_t *idx = s->idx;
    int64_t e = cur[0], end = s->ptr[r + 1];
    if (q0 > 0 && (e == end || idx[e] >= q1)) return;
    double *c = s->C + (size_t)r * s->n + j0;
    __m512d acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++)
        acc[v] = q0 == 0 ? _mm512_setzero_pd() : _mm512_maskz_loadu_pd(v < NV - 1 ? 0xFF : ml, c + 8 * v);
    for (; e < end && idx[e] < q1; e++) {
        const double *b = pk + (size_t)(idx[e] - q0) * s->pw;
        __m512d a = _mm512_set1_pd(s->tab[s->code[e]]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) acc[v] = _mm512_fmadd_pd(a, _mm512_load_pd(b + 8 * v), acc[v]);
    }
    cur[0] = e;
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) _mm512_mask_storeu_pd(c + 8 * v, v < NV - 1 ? 0xFF : ml, acc[v]);
}

// The same for group g's four rows at once through its union list (NV <= GROUP_NV): each
// entry's NV vectors of B loaded once for 4 NV fused multiply-adds. A row's entries where it is
// zero add fma(+-0, b, s) == s (sparse.h): each row's sum is still the ordered loop's.
X512_INLINE void group_nv(const int NV, const sp_rows *s, const double *pk, int g, int j0,
                          __mmask8 ml, int q0, int q1, int64_t *cur) {
    const ad_coded_groups *G = s->grp;
    const int32_t *idx = G->idx;
    const double *tab = s->tab;
    int64_t e = cur[0], end = G->ptr[g + 1];
    if (q0 > 0 && (e == end || idx[e] >= q1)) return;
    double *c[4];
    for (int h = 0; h < 4; h++) c[h] = s->C + (size_t)G->row[4 * g + h] * s->n + j0;
    __m512d acc[4][GROUP_NV];
#pragma GCC unroll 4
    for (int h = 0; h < 4; h++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++)
            acc[h][v] = q0 == 0 ? _mm512_setzero_pd()
                                : _mm512_maskz_loadu_pd(v < NV - 1 ? 0xFF : ml, c[h] + 8 * v);
    for (; e < end && idx[e] < q1; e++) {
        const double *b = pk + (size_t)(idx[e] - q0) * s->pw;
        const uint8_t *cd = G->code + 4 * e;
        __m512d a0 = _mm512_set1_pd(tab[cd[0]]), a1 = _mm512_set1_pd(tab[cd[1]]);
        __m512d a2 = _mm512_set1_pd(tab[cd[2]]), a3 = _mm512_set1_pd(tab[cd[3]]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            __m512d bv = _mm512_load_pd(b + 8 * v);
            acc[0][v] = _mm512_fmadd_pd(a0, bv, acc[0][v]);
            acc[1][v] = _mm512_fmadd_pd(a1, bv, acc[1][v]);
            acc[2][v] = _mm512_fmadd_pd(a2, bv, acc[2][v]);
            acc[3][v] = _mm512_fmadd_pd(a3, bv, acc[3][v]);
        }
    }
    cur[0] = e;
#pragma GCC unroll 4
    for (int h = 0; h < 4; h++)
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_pd(c[h] + 8 * v, v < NV - 1 ? 0xFF : ml, acc[h][v]);
}

// The entries from e on (indices and NR codes each) asked into the cache ahead of their use: each
// block reads a few entries of every unit of the chunk, hundreds of streams that the hardware's
// prefetcher does not follow, so without this most units' entries miss. A hint: no bits change.
X512_INLINE void prefetch_entries(const int32_t *idx, const uint8_t *code, int NR, int64_t e) {
    _mm_prefetch((const char *)(idx + e), _MM_HINT_T0);
    _mm_prefetch((const char *)(idx + e) + 64, _MM_HINT_T0);
    _mm_prefetch((const char *)(code + NR * e), _MM_HINT_T0);
}

// Group g's four rows of C in columns [j0, j0 + 8 NV) asked into the cache before group_nv loads
// them: rows anywhere in C, which the hardware's prefetcher cannot guess. A hint.
X512_INLINE void prefetch_rows(const sp_rows *s, int g, int j0, const int NV) {
    for (int h = 0; h < 4; h++) {
        const char *c = (const char *)(s->C + (size_t)s->grp->row[4 * g + h] * s->n + j0);
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) _mm_prefetch(c + 64 * v, _MM_HINT_T0);
    }
}

// Units [lo, hi), cur: a cursor each; NV constant.
X512_INLINE void units_nv(const int NV, const sp_rows *s, const double *pk, int lo, int hi, int j0,
                          __mmask8 ml, int q0, int q1, int64_t *cur) {
    int ng = s->grp ? s->grp->n : 0;
    for (int u = lo; u < hi; u++) {
        if (u < ng) {
            if (u + PREFETCH < min_int(hi, ng))
                prefetch_entries(s->grp->idx, s->grp->code, 4, cur[u - lo + PREFETCH]);
            if (u + 2 < min_int(hi, ng)) prefetch_rows(s, u + 2, j0, NV);
            // panels are at most GROUP_NV vectors wide with groups; the clamp only keeps the
            // compiler from building group_nv for the rows' widths 7 and 8, which never run
            group_nv(NV <= GROUP_NV ? NV : 1, s, pk, u, j0, ml, q0, q1, cur + (u - lo));
            continue;
        }
        if (!s->grp && u + PREFETCH < hi) prefetch_entries(s->idx, s->code, 1, cur[u - lo + PREFETCH]);
        row_nv(NV, s, pk, unit_row(s, u), j0, ml, q0, q1, cur + (u - lo));
    }
}

X512_FN void block_x512(const sp_rows *s, const double *pk, int lo, int hi, int j0, int w,
                        int q0, int q1, int64_t *cur) {
    int nv = (w + 7) / 8;
    __mmask8 ml = (__mmask8)(w % 8 ? (1u << (w % 8)) - 1 : 0xFFu);
    switch (nv) {
    case 1: units_nv(1, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 2: units_nv(2, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 3: units_nv(3, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 4: units_nv(4, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 5: units_nv(5, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 6: units_nv(6, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 7: units_nv(7, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    default: units_nv(8, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    }
}

// pack_block (below) with AVX-512 loads and stores: the compiler's memcpy of a row of B's panel
// (384 bytes, its size known only at run time) was a rep movsq, slow to start for so few bytes.
// The exponent test is vectorized here (x86-64's baseline SSE2 has no 64-bit compare).
X512_FN bool pack_block_x512(const double *B, int ldb, int q0, int q1, int j0, int w, int pw,
                             double *pk) {
    const __m512i expo = _mm512_set1_epi64(0x7FF0000000000000ll);
    __mmask8 bad = 0;
    for (int q = q0; q < q1; q++) {
        const double *src = B + (size_t)q * ldb + j0;
        double *row = pk + (size_t)(q - q0) * pw;
        if (q + PACK_AHEAD < q1) // B's rows are far apart and often out of cache: ask ahead
            for (int v = 0; v < w; v += 8) _mm_prefetch((const char *)(src + PACK_AHEAD * (size_t)ldb + v), _MM_HINT_T0);
        for (int v = 0; v < pw / 8; v++) { // lanes past w: 0, finite
            int left = w - 8 * v;
            __mmask8 m = (__mmask8)(left >= 8 ? 0xFFu : left <= 0 ? 0u : (1u << left) - 1);
            __m512d x = _mm512_maskz_loadu_pd(m, src + 8 * v);
            __m512i u = _mm512_castpd_si512(x);
            bad |= _mm512_cmpeq_epi64_mask(_mm512_and_si512(u, expo), expo);
            _mm512_store_pd(row + 8 * v, x);
        }
    }
    return !bad;
}
#undef X512_FN
#undef X512_INLINE
#endif

// Whether x [len] holds no Inf and no NaN: x - x is +0 for every finite x and NaN for the others,
// and a sum of such terms is 0 or NaN. Eight at a time in the compiler's vectors (SSE2 on any
// x86-64): as a scalar loop of exponent tests this was 1.3% of a linear hyper-cleaning run, on
// the tape's thread before each of the strips' X^T G, with the other thread waiting.
typedef double fin_v2d __attribute__((vector_size(16)));
static bool finite_run(const double *x, size_t len) {
    fin_v2d acc[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        fin_v2d v[4];
        memcpy(v, x + i, sizeof v);
        for (int k = 0; k < 4; k++) acc[k] += v[k] - v[k];
    }
    fin_v2d s = acc[0] + acc[1] + acc[2] + acc[3];
    double rest = s[0] + s[1];
    for (; i < len; i++) rest += x[i] - x[i];
    return rest == 0.0;
}

// Whether rows [q0, q1) of B [., n] (row stride ldb) hold no Inf and no NaN (pack_block_x512 does
// it on AVX-512 while it packs).
bool ad_sparse_all_finite(const double *B, int ldb, int n, int q0, int q1) {
    if (q1 <= q0 || n <= 0) return true;
    if (ldb == n) return finite_run(B + (size_t)q0 * ldb, (size_t)(q1 - q0) * (size_t)n);
    bool ok = true;
    for (int q = q0; q < q1 && ok; q++) ok = finite_run(B + (size_t)q * ldb, (size_t)n);
    return ok;
}

// pk [qb, pw] = rows [q0, q1) of B, columns [j0, j0 + w), zero past w: aligned rows, so that no
// load of B straddles two cache lines (B [., 300] has rows 32 bytes off one in two), and in L1
// for all the rows of the chunk. Whether those entries of B are finite: packing reads each entry
// of B once per piece of rows, so the check for Inf and NaN costs no pass of its own.
static bool pack_block(const sp_rows *s, int q0, int q1, int j0, int w, double *pk) {
    for (int q = q0; q < q1; q++) {
        double *row = pk + (size_t)(q - q0) * s->pw;
        memcpy(row, s->B + (size_t)q * s->ldb + j0, (size_t)w * sizeof(double));
        for (int j = w; j < s->pw; j++) row[j] = 0;
    }
    return ad_sparse_all_finite(s->B + j0, s->ldb, w, q0, q1);
}

// The cursors at units [c0, c1)'s first entries: a group's or a row's.
static void init_cursors(const sp_rows *s, int c0, int c1, int64_t *cur) {
    for (int u = c0; u < c1; u++)
        cur[u - c0] = unit_is_group(s, u) ? s->grp->ptr[u] : s->ptr[unit_row(s, u)];
}

// Units in a chunk: CHUNK rows of C, or GROUP_CHUNK groups (1024 rows, a panel of them 384 KB, in
// L2 with B's panel).
static int chunk_units(const sp_rows *s) { return s->grp ? GROUP_CHUNK : CHUNK; }

// Units [lo, hi), columns [j_lo, j_hi): chunks of units, panels of columns (GROUP_NV vectors wide
// with groups), blocks of B's rows. Whether B's entries in those columns are finite (each is
// packed once at least, when lo < hi).
static bool units_run(ad_thin_isa isa, const sp_rows *s, int lo, int hi, int j_lo, int j_hi) {
    bool finite = true;
    int64_t cur[CHUNK];
    _Alignas(64) double pk[PK_SIZE];
    int per = chunk_units(s), pw = s->pw;
    for (int c0 = lo; c0 < hi; c0 += per) {
        int c1 = min_int(hi, c0 + per);
        for (int j0 = j_lo; j0 < j_hi; j0 += pw) {
            int w = min_int(pw, j_hi - j0);
            init_cursors(s, c0, c1, cur);
            for (int q0 = 0; q0 < s->k; q0 += s->qb) {
                int q1 = min_int(s->k, q0 + s->qb);
#if SPARSE_X86
                if (isa == AD_THIN_AVX512) {
                    finite &= pack_block_x512(s->B, s->ldb, q0, q1, j0, w, pw, pk);
                    block_x512(s, pk, c0, c1, j0, w, q0, q1, cur);
                    continue;
                }
#endif
                finite &= pack_block(s, q0, q1, j0, w, pk);
                block_portable(s, pk, c0, c1, j0, w, q0, q1, cur);
            }
        }
    }
    return finite;
}

// ---- Inf and NaN in B ----

// Where the dense loop multiplies a zero of op(X) by an Inf or NaN of B, its sum is NaN from
// there on (0 * Inf is NaN, and NaN stays): those entries of C set to NaN. Elsewhere the skipped
// terms were fma(+-0, finite, s) == s, so C is the dense loop's already.
static void nonfinite_fixup(const ad_coded *X, int tx, int n, const double *B, int ldb, double *C) {
    int m = tx ? X->cols : X->rows, k = tx ? X->rows : X->cols, cols = X->cols;
    for (int q = 0; q < k; q++)
        for (int j = 0; j < n; j++) {
            if (isfinite(B[(size_t)q * ldb + j])) continue;
            for (int r = 0; r < m; r++) {
                size_t at = tx ? (size_t)q * cols + r : (size_t)r * cols + q;
                if (is_zero(X->table[X->codes[at]])) C[(size_t)r * n + j] = NAN;
            }
        }
}

// ---- the driver ----

// Pieces of the work, taken by the threads from a counter: ranges of units of about equal work
// (split_units), or (by_panel) panels of columns of all units, when the units fit one chunk: then
// each piece packs only its panel of B, where pieces of units would each pack all of it (X^T G:
// G [5000, 300], 12 MB, from memory). Piece c finds whether its part of B holds an Inf or a NaN
// (bad[c]); the pieces together pack all of B.
typedef struct {
    ad_thin_isa isa;
    sp_rows s;
    bool by_panel;
    int pieces;
    int *start;  // [pieces + 1]: piece c is units [start[c], start[c + 1])
    bool *bad;   // [pieces]
    atomic_int next;
} sp_job;

static void run_pieces(void *arg) {
    sp_job *j = arg;
    const sp_rows *s = &j->s;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) < j->pieces;)
        j->bad[c] = j->by_panel ? !units_run(j->isa, s, 0, units(s), c * s->pw, min_int(s->n, (c + 1) * s->pw))
                                : !units_run(j->isa, s, j->start[c], j->start[c + 1], 0, s->n);
}

// Whether op(X)'s rows are better taken in groups of four: when the unions hold at most 1.5 times
// the nonzeros, where a group's entry (4 NV multiply-adds, NV + 6 loads) costs as much as 4 / 1.5
// rows' entries (NV multiply-adds and NV + 3 loads each, load-bound).
bool ad_sparse_groups(const ad_coded_nz *nz, int tx) {
    const ad_coded_groups *G = &nz->grp[tx];
    return G->ptr && G->n > 0 && 4 * G->ptr[G->n] * 100 <= GROUPS_PAY_PERCENT * nz->nnz;
}

// start [pieces + 1]: units [0, units(s)) cut where the running work passes c / pieces of the
// whole, a unit's work its multiply-adds (4 per entry for a group) and its rows' loads and stores.
static void split_units(const sp_rows *s, int pieces, int *start) {
    const int64_t per_row = 16; // a row's loads and stores per block, as entries
    int nu = units(s);
    int64_t total = 0, done = 0;
    for (int u = 0; u < nu; u++) total += unit_work(s, u, per_row);
    start[0] = 0;
    int u = 0;
    for (int c = 1; c < pieces; c++) {
        int64_t goal = total * c / pieces;
        for (; u < nu && done < goal; u++) done += unit_work(s, u, per_row);
        start[c] = u;
    }
    start[pieces] = nu;
}

void ad_sparse_matmul(ad_thin_isa isa, int threads, ad_pool *pool, const ad_coded *X, int tx,
                      int n, const double *B, int ldb, double *C) {
    const ad_coded_nz *nz = X->nz;
    int m = tx ? X->cols : X->rows, k = tx ? X->rows : X->cols;
    if (m <= 0 || n <= 0) return;
    if (k == 0) {
        memset(C, 0, (size_t)m * (size_t)n * sizeof(double));
        return;
    }
    if (isa == AD_THIN_AUTO) isa = ad_thin_best();
    if (isa != AD_THIN_AVX512 || !ad_thin_runs(isa)) isa = AD_THIN_PORTABLE;
    sp_job job = {.isa = isa,
                  .s = {.ptr = tx ? nz->col_ptr : nz->row_ptr,
                        .idx = tx ? nz->col_idx : nz->row_idx,
                        .code = tx ? nz->col_code : nz->row_code,
                        .grp = isa == AD_THIN_AVX512 && ad_sparse_groups(nz, tx) ? &nz->grp[tx] : NULL,
                        .tab = X->table, .B = B,
                        .m = m, .n = n, .k = k, .ldb = ldb, .C = C}};
    job.s.pw = job.s.grp ? 8 * GROUP_NV : PANEL, job.s.qb = job.s.grp ? GROUP_QBLOCK : QBLOCK;
    int nu = units(&job.s), per = chunk_units(&job.s), panels = (n + job.s.pw - 1) / job.s.pw;
    int nt = min_int(threads < 1 ? 1 : min_int(threads, MAX_THREADS), nu);
    // one piece per thread, more when the units would not fit a chunk (fewer passes over B); or
    // a piece per panel
    int pieces = nt > (nu + per - 1) / per ? nt : (nu + per - 1) / per;
    job.by_panel = nt > 1 && nu <= per && panels >= nt;
    if (job.by_panel) pieces = panels;
    int start_buf[MAX_THREADS + 1];
    bool bad_buf[MAX_THREADS];
    int *start = pieces <= MAX_THREADS ? start_buf : malloc(sizeof(int) * ((size_t)pieces + 1));
    bool *bad = pieces <= MAX_THREADS ? bad_buf : malloc(sizeof(bool) * (size_t)pieces);
    if (!start || !bad) { // cannot split: one piece
        if (start != start_buf) free(start);
        if (bad != bad_buf) free(bad);
        start = start_buf, bad = bad_buf, pieces = 1, nt = 1, job.by_panel = false;
    }
    if (!job.by_panel) split_units(&job.s, pieces, start);
    job.pieces = pieces, job.start = start, job.bad = bad;
    atomic_init(&job.next, 0);
    ad_pool_run(pool, nt, run_pieces, &job);
    bool any_bad = false;
    for (int c = 0; c < pieces; c++) any_bad |= bad[c];
    if (any_bad) nonfinite_fixup(X, tx, n, B, ldb, C);
    if (start != start_buf) free(start);
    if (bad != bad_buf) free(bad);
}
