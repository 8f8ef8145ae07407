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

enum { PANEL = 64, QBLOCK = 64, CHUNK = 512, MAX_THREADS = 64, PAIRS_PAY_PERCENT = 120, PREFETCH = 4 };

static inline int min_int(int a, int b) { return a < b ? a : b; }

// ---- the structure ----

static bool is_zero(double v) { return v == 0.0; } // +0.0 and -0.0

void ad_coded_nz_free(ad_coded_nz *nz) {
    if (!nz) return;
    free(nz->row_ptr), free(nz->row_idx), free(nz->row_code);
    free(nz->col_ptr), free(nz->col_idx), free(nz->col_code);
    for (int t = 0; t < 2; t++)
        free(nz->pair[t].ptr), free(nz->pair[t].idx), free(nz->pair[t].code);
    free(nz);
}

static ad_coded_nz *nz_fail(ad_coded_nz *nz, char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "coded_nz_make: %s", msg);
    ad_coded_nz_free(nz);
    return NULL;
}

static bool make_pairs(ad_coded_nz *nz, int tx);

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
    if (!make_pairs(nz, 0) || !make_pairs(nz, 1)) return nz_fail(nz, err, errlen, "out of memory");
    return nz;
}

// Pairs of rows of op(X) (tx: of X^T) with the union of their nonzeros (sparse.h): counted, then
// merged. Entry codes are read from X, so the row without a nonzero there gets its zero's code.
static bool make_pairs(ad_coded_nz *nz, int tx) {
    const int64_t *ptr = tx ? nz->col_ptr : nz->row_ptr;
    const int32_t *idx = tx ? nz->col_idx : nz->row_idx;
    int m = tx ? nz->cols : nz->rows, cols = nz->cols, g_n = m / 2;
    ad_coded_pairs *P = &nz->pair[tx];
    if (!(P->ptr = calloc((size_t)g_n + 1, sizeof(int64_t)))) return false;
    for (int pass = 0; pass < 2; pass++) {
        int64_t out = 0;
        for (int g = 0; g < g_n; g++) {
            int64_t a = ptr[2 * g], ae = ptr[2 * g + 1], b = ptr[2 * g + 1], be = ptr[2 * g + 2];
            while (a < ae || b < be) {
                int q = a == ae ? idx[b] : b == be ? idx[a] : idx[a] < idx[b] ? idx[a] : idx[b];
                a += a < ae && idx[a] == q, b += b < be && idx[b] == q;
                if (pass) {
                    P->idx[out] = q;
                    for (int h = 0; h < 2; h++) {
                        int r = 2 * g + h;
                        size_t at = tx ? (size_t)q * cols + r : (size_t)r * cols + q;
                        P->code[2 * out + h] = nz->codes[at];
                    }
                }
                out++;
            }
            if (!pass) P->ptr[g + 1] = out;
        }
        if (!pass) {
            size_t n = (size_t)out ? (size_t)out : 1;
            P->idx = malloc(n * sizeof(int32_t)), P->code = malloc(2 * n);
            if (!P->idx || !P->code) return false;
        }
    }
    if (!ad_sparse_pairs(nz, tx)) { // not used: not kept
        free(P->ptr), free(P->idx), free(P->code);
        *P = (ad_coded_pairs){NULL, NULL, NULL};
    }
    return true;
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
// tab[code[e]] B row idx[e], idx ascending in each row; B [k, n] with row stride ldb.
typedef struct {
    const int64_t *ptr;
    const int32_t *idx;
    const uint8_t *code;
    const ad_coded_pairs *pair; // the rows two by two
    const double *tab, *B;
    int m, n, k, ldb;
    double *C;
} sp_rows;

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
            const double *b = pk + (size_t)(s->idx[e] - q0) * PANEL;
            for (int j = 0; j < w; j++) acc[j] = fma(a, b[j], acc[j]);
        }
        cur[r - lo] = e;
        memcpy(c, acc, (size_t)w * sizeof(double));
    }
}

#if SPARSE_X86
#define X512_FN static __attribute__((target("avx512f,avx2,fma")))
#define X512_INLINE static inline __attribute__((always_inline, target("avx512f,avx2,fma")))

// block_portable with NV registers of 8 columns (w = 8 (NV - 1) + the lanes of ml), for rows r
// and r + 1 at once through their union list (NR = 2, cur [1]: the pair's next entry; r even):
// each entry's NV vectors of B loaded once for both rows, 2 NV fused multiply-adds (a load of B
// per multiply-add, as for one row, keeps the load ports busy before the multiply units), or for
// row r alone through its own list (NR = 1, the last of an odd number). A row's entries where it
// is zero add fma(+-0, b, s) == s (sparse.h): each row's sum is still the ordered loop's.
X512_INLINE void block_nv(const int NV, const int NR, const sp_rows *s, const double *pk, int r,
                          int j0, __mmask8 ml, int q0, int q1, int64_t *cur) {
    const int64_t *ptr = NR > 1 ? s->pair->ptr : s->ptr;
    const int32_t *idx = NR > 1 ? s->pair->idx : s->idx;
    const uint8_t *code = NR > 1 ? s->pair->code : s->code;
    const double *tab = s->tab;
    int64_t e = cur[0], end = ptr[NR > 1 ? r / 2 + 1 : r + 1];
    if (q0 > 0 && (e == end || idx[e] >= q1)) return;
    double *c0 = s->C + (size_t)r * s->n + j0, *c1 = c0 + s->n;
    __m512d acc0[8], acc1[8];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        __mmask8 mv = v < NV - 1 ? 0xFF : ml;
        acc0[v] = q0 == 0 ? _mm512_setzero_pd() : _mm512_maskz_loadu_pd(mv, c0 + 8 * v);
        if (NR > 1) acc1[v] = q0 == 0 ? _mm512_setzero_pd() : _mm512_maskz_loadu_pd(mv, c1 + 8 * v);
    }
    for (; e < end && idx[e] < q1; e++) {
        const double *b = pk + (size_t)(idx[e] - q0) * PANEL;
        __m512d a0 = _mm512_set1_pd(tab[code[NR * e]]);
        __m512d a1 = NR > 1 ? _mm512_set1_pd(tab[code[NR * e + 1]]) : a0;
#pragma GCC unroll 8
        for (int v = 0; v < NV; v++) {
            __m512d bv = _mm512_load_pd(b + 8 * v);
            acc0[v] = _mm512_fmadd_pd(a0, bv, acc0[v]);
            if (NR > 1) acc1[v] = _mm512_fmadd_pd(a1, bv, acc1[v]);
        }
    }
    cur[0] = e;
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) {
        __mmask8 mv = v < NV - 1 ? 0xFF : ml;
        _mm512_mask_storeu_pd(c0 + 8 * v, mv, acc0[v]);
        if (NR > 1) _mm512_mask_storeu_pd(c1 + 8 * v, mv, acc1[v]);
    }
}

// The entries from e on (indices and NR codes each) asked into the cache ahead of their use: each
// block reads a few entries of every row of the chunk, hundreds of streams that the hardware's
// prefetcher does not follow, so without this most rows' entries miss. A hint: no bits change.
X512_INLINE void prefetch_entries(const int32_t *idx, const uint8_t *code, int NR, int64_t e) {
    _mm_prefetch((const char *)(idx + e), _MM_HINT_T0);
    _mm_prefetch((const char *)(idx + e) + 64, _MM_HINT_T0);
    _mm_prefetch((const char *)(code + NR * e), _MM_HINT_T0);
}

// Rows [lo, hi) (lo even) two at a time, the last alone if odd; cur: a cursor per pair, then the
// last row's. Without pairs (s->pair NULL) one at a time, a cursor each. NV constant for each.
X512_INLINE void rows_nv(const int NV, const sp_rows *s, const double *pk, int lo, int hi, int j0,
                         __mmask8 ml, int q0, int q1, int64_t *cur) {
    int r = lo;
    if (!s->pair) {
        for (; r < hi; r++) {
            if (r + PREFETCH < hi) prefetch_entries(s->idx, s->code, 1, cur[r - lo + PREFETCH]);
            block_nv(NV, 1, s, pk, r, j0, ml, q0, q1, cur + (r - lo));
        }
        return;
    }
    for (; r + 1 < hi; r += 2) {
        if (r + 2 * PREFETCH + 1 < hi)
            prefetch_entries(s->pair->idx, s->pair->code, 2, cur[(r - lo) / 2 + PREFETCH]);
        block_nv(NV, 2, s, pk, r, j0, ml, q0, q1, cur + (r - lo) / 2);
    }
    if (r < hi) block_nv(NV, 1, s, pk, r, j0, ml, q0, q1, cur + (r - lo) / 2);
}

X512_FN void block_x512(const sp_rows *s, const double *pk, int lo, int hi, int j0, int w,
                        int q0, int q1, int64_t *cur) {
    int nv = (w + 7) / 8;
    __mmask8 ml = (__mmask8)(w % 8 ? (1u << (w % 8)) - 1 : 0xFFu);
    switch (nv) {
    case 1: rows_nv(1, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 2: rows_nv(2, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 3: rows_nv(3, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 4: rows_nv(4, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 5: rows_nv(5, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 6: rows_nv(6, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    case 7: rows_nv(7, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    default: rows_nv(8, s, pk, lo, hi, j0, ml, q0, q1, cur); break;
    }
}

// pack_block (below) with AVX-512 loads and stores: the compiler's memcpy of a row of B's panel
// (512 bytes, its size known only at run time) was a rep movsq, slow to start for so few bytes.
X512_FN void pack_block_x512(const double *B, int ldb, int q0, int q1, int j0, int w, double *pk) {
    for (int q = q0; q < q1; q++) {
        const double *src = B + (size_t)q * ldb + j0;
        double *row = pk + (size_t)(q - q0) * PANEL;
        for (int v = 0; v < PANEL / 8; v++) { // lanes past w: 0
            int left = w - 8 * v;
            __mmask8 m = (__mmask8)(left >= 8 ? 0xFFu : left <= 0 ? 0u : (1u << left) - 1);
            _mm512_store_pd(row + 8 * v, _mm512_maskz_loadu_pd(m, src + 8 * v));
        }
    }
}

// all_finite (below) 8 entries at a time: the portable loop is not vectorized on x86-64's
// baseline (no 64-bit compare in SSE2).
X512_FN bool all_finite_x512(const double *B, int ldb, int n, int q0, int q1) {
    const __m512i expo = _mm512_set1_epi64(0x7FF0000000000000ll);
    __mmask8 bad = 0;
    for (int q = q0; q < q1; q++) {
        const double *row = B + (size_t)q * ldb;
        for (int j = 0; j < n; j += 8) { // lanes past n: 0, finite
            __mmask8 m = (__mmask8)(n - j >= 8 ? 0xFFu : (1u << (n - j)) - 1);
            __m512i u = _mm512_castpd_si512(_mm512_maskz_loadu_pd(m, row + j));
            bad |= _mm512_cmpeq_epi64_mask(_mm512_and_si512(u, expo), expo);
        }
    }
    return !bad;
}
#undef X512_FN
#undef X512_INLINE
#endif

// pk [QBLOCK, PANEL] = rows [q0, q1) of B, columns [j0, j0 + w), zero past w: aligned rows, so
// that no load of B straddles two cache lines (B [., 300] has rows 32 bytes off one in two), and
// in L1 for all the rows of the chunk.
static void pack_block(const sp_rows *s, int q0, int q1, int j0, int w, double *pk) {
    for (int q = q0; q < q1; q++) {
        double *row = pk + (size_t)(q - q0) * PANEL;
        memcpy(row, s->B + (size_t)q * s->ldb + j0, (size_t)w * sizeof(double));
        for (int j = w; j < PANEL; j++) row[j] = 0;
    }
}

// The cursors at the rows' first entries: a row's (portable), or a pair's and the last row's
// when odd (AVX-512; c0 even).
static void init_cursors(ad_thin_isa isa, const sp_rows *s, int c0, int c1, int64_t *cur) {
    if (isa != AD_THIN_AVX512 || !s->pair) {
        for (int r = c0; r < c1; r++) cur[r - c0] = s->ptr[r];
        return;
    }
    int r = c0;
    for (; r + 1 < c1; r += 2) cur[(r - c0) / 2] = s->pair->ptr[r / 2];
    if (r < c1) cur[(r - c0) / 2] = s->ptr[r];
}

// Rows [lo, hi) of C (lo even), all columns: chunks of rows, panels of columns, blocks of B's rows.
static void rows_run(ad_thin_isa isa, const sp_rows *s, int lo, int hi) {
    int64_t cur[CHUNK];
    _Alignas(64) double pk[QBLOCK * PANEL];
    for (int c0 = lo; c0 < hi; c0 += CHUNK) {
        int c1 = min_int(hi, c0 + CHUNK);
        for (int j0 = 0; j0 < s->n; j0 += PANEL) {
            int w = min_int(PANEL, s->n - j0);
            init_cursors(isa, s, c0, c1, cur);
            for (int q0 = 0; q0 < s->k; q0 += QBLOCK) {
                int q1 = min_int(s->k, q0 + QBLOCK);
#if SPARSE_X86
                if (isa == AD_THIN_AVX512) {
                    pack_block_x512(s->B, s->ldb, q0, q1, j0, w, pk);
                    block_x512(s, pk, c0, c1, j0, w, q0, q1, cur);
                    continue;
                }
#endif
                pack_block(s, q0, q1, j0, w, pk);
                block_portable(s, pk, c0, c1, j0, w, q0, q1, cur);
            }
        }
    }
}

// ---- Inf and NaN in B ----

// Whether rows [q0, q1) of B [., n] (row stride ldb) hold an Inf or a NaN: its exponent bits all
// set, tested on the bits (all_finite_x512 on AVX-512).
static bool all_finite(const double *B, int ldb, int n, int q0, int q1) {
    uint64_t bad = 0;
    for (int q = q0; q < q1; q++) {
        const double *row = B + (size_t)q * ldb;
        for (int j = 0; j < n; j++) {
            uint64_t u;
            memcpy(&u, row + j, sizeof u);
            bad |= (u & 0x7FF0000000000000ull) == 0x7FF0000000000000ull;
        }
    }
    return !bad;
}

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

// Pieces of the work: ranges of rows of C of about equal work (their nonzeros, plus the loads
// and stores of each row), taken by the threads from a counter. Piece c also checks B's rows
// [c k / pieces, (c + 1) k / pieces) for Inf and NaN (bad[c]), so that the check is shared too.
typedef struct {
    ad_thin_isa isa;
    sp_rows s;
    int pieces;
    int *start;  // [pieces + 1]: piece c is rows [start[c], start[c + 1])
    bool *bad;   // [pieces]
    atomic_int next;
} sp_job;

static void run_pieces(void *arg) {
    sp_job *j = arg;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) < j->pieces;) {
        const sp_rows *s = &j->s;
        int q0 = (int)((int64_t)c * s->k / j->pieces);
        int q1 = (int)((int64_t)(c + 1) * s->k / j->pieces);
#if SPARSE_X86
        if (j->isa == AD_THIN_AVX512) {
            j->bad[c] = !all_finite_x512(s->B, s->ldb, s->n, q0, q1);
            rows_run(j->isa, s, j->start[c], j->start[c + 1]);
            continue;
        }
#endif
        j->bad[c] = !all_finite(s->B, s->ldb, s->n, q0, q1);
        rows_run(j->isa, s, j->start[c], j->start[c + 1]);
    }
}

// Runs job's pieces on up to nt threads (the caller's one of them); a thread that cannot be
// started leaves its pieces to the others. One function, so that a pool can take its place.
// Whether op(X)'s rows are better taken in pairs: when the unions add few entries (1.1 x for the
// columns of FashionMNIST's images, neighbouring pixels; 1.33 x for pairs of images, a loss).
bool ad_sparse_pairs(const ad_coded_nz *nz, int tx) {
    int m = tx ? nz->cols : nz->rows;
    return nz->pair[tx].ptr && 2 * nz->pair[tx].ptr[m / 2] * 100 <= PAIRS_PAY_PERCENT * nz->nnz;
}

// start [pieces + 1]: rows [0, m) cut where the running work passes c / pieces of the whole.
static void split_rows(const int64_t *ptr, int m, int pieces, int *start) {
    const int64_t per_row = 16; // a row's loads and stores per block, as nonzeros
    int64_t total = ptr[m] - ptr[0] + per_row * m, done = 0;
    start[0] = 0;
    int r = 0;
    for (int c = 1; c < pieces; c++) {
        int64_t goal = total * c / pieces;
        for (; r < m && done < goal; r++) done += ptr[r + 1] - ptr[r] + per_row;
        r += r % 2 && r < m; // even: pieces start on a pair of rows
        start[c] = r;
    }
    start[pieces] = m;
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
                        .pair = ad_sparse_pairs(nz, tx) ? &nz->pair[tx] : NULL,
                        .tab = X->table, .B = B,
                        .m = m, .n = n, .k = k, .ldb = ldb, .C = C}};
    int nt = min_int(threads < 1 ? 1 : min_int(threads, MAX_THREADS), m);
    // one piece per thread, more when the rows would not fit a chunk (fewer passes over B)
    int pieces = nt > (m + CHUNK - 1) / CHUNK ? nt : (m + CHUNK - 1) / CHUNK;
    int start_buf[MAX_THREADS + 1];
    bool bad_buf[MAX_THREADS];
    int *start = pieces <= MAX_THREADS ? start_buf : malloc(sizeof(int) * ((size_t)pieces + 1));
    bool *bad = pieces <= MAX_THREADS ? bad_buf : malloc(sizeof(bool) * (size_t)pieces);
    if (!start || !bad) { // cannot split: one piece
        if (start != start_buf) free(start);
        if (bad != bad_buf) free(bad);
        start = start_buf, bad = bad_buf, pieces = 1, nt = 1;
    }
    split_rows(job.s.ptr, m, pieces, start);
    job.pieces = pieces, job.start = start, job.bad = bad;
    atomic_init(&job.next, 0);
    ad_pool_run(pool, nt, run_pieces, &job);
    bool any_bad = false;
    for (int c = 0; c < pieces; c++) any_bad |= bad[c];
    if (any_bad) nonfinite_fixup(X, tx, n, B, ldb, C);
    if (start != start_buf) free(start);
    if (bad != bad_buf) free(bad);
}
