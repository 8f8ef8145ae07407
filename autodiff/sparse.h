// Products with a coded constant that skip its zero entries (sparse.c): C = X B and C = X^T B
// for X given as codes into a table (ad_coded) with its nonzeros listed (ad_coded_nz), as the
// 8-bit images of hyper-cleaning, half of whose pixels are 0, times a wide B (the first layer of
// an MLP, [785, 300]). Internal to the library; the tests and the benchmark call it directly.
//
// Exactness. Each entry is the ordered loop s = 0; for q ascending: s = fma(x_rq, b_qj, s) with
// every entry of op(X), zeros included (ad_sparse_matmul_naive), bit for bit: an accumulator that
// starts at +0.0 is never -0.0 under round to nearest (a sum is -0.0 only from two -0.0's, and
// an exact cancellation gives +0.0), and fma(+-0, b, s) == s for such s and a finite b, so the
// terms skipped change nothing. With an Inf or NaN in B the skipped 0 * b is NaN: such entries
// of C are set to NaN after the product (the dense loop's NaN, its payload aside).
#ifndef HYPERTAPE_AD_SPARSE_H
#define HYPERTAPE_AD_SPARSE_H

#include "ad.h"
#include "thin.h"

#include <stdbool.h>
#include <stdint.h>

// op(X)'s rows four by four with the union of their nonzeros, for kernels that load a row of B
// once for four rows of C. The four are any rows, chosen so that their nonzeros overlap
// (sparse.c, make_groups): group g's rows are row[4 g .. 4 g + 3], its entries at
// [ptr[g], ptr[g + 1]), index ascending, the four rows' codes at code[4 e .. 4 e + 3] (a zero's
// code for a row without a nonzero there); the m % 4 rows left over are rest[0 .. n_rest).
// Kept only where they pay (ad_sparse_groups), else ptr is NULL.
typedef struct {
    int n, n_rest;
    int32_t *row;  // [4 n]
    int64_t *ptr;  // [n + 1]
    int32_t *idx;  // [ptr[n]]
    uint8_t *code; // [4 ptr[n]]
    int32_t rest[3];
} ad_coded_groups;

// op(X)'s rows eight by eight, for products with at most 16 columns (strips.c): each strip's rows
// chosen to overlap (ad_sparse_greedy), the last short (-1 past the rows); strip s's rows are
// row[8 s .. 8 s + 7], its entries at [ptr[s], ptr[s + 1]): the union of their nonzeros, index
// idx[e] ascending, and the eight rows' codes in code[e] (byte h for row[8 s + h]; a zero's code
// for a row without a nonzero there, and for -1). Made only on request (ad_coded_nz_add_strips);
// ptr NULL until then.
typedef struct {
    int n;
    int32_t *row;   // [8 n]
    int64_t *ptr;   // [n + 1]
    int32_t *idx;   // [ptr[n]]
    uint64_t *code; // [ptr[n]]
} ad_coded_strips;

// X's nonzeros by rows (row r's at [row_ptr[r], row_ptr[r + 1]), column ascending) and by
// columns (column c's at [col_ptr[c], col_ptr[c + 1]), row ascending): an index and the code.
// An entry is zero when its table value is +0.0 or -0.0.
struct ad_coded_nz {
    int rows, cols;
    const uint8_t *codes; // the matrix it was made for (its codes and table)
    const double *table;
    int64_t nnz;
    int64_t *row_ptr; // [rows + 1]
    int32_t *row_idx; // [nnz] column indices
    uint8_t *row_code;
    int64_t *col_ptr; // [cols + 1]
    int32_t *col_idx; // [nnz] row indices
    uint8_t *col_code;
    ad_coded_groups grp[2]; // X's rows four by four, X^T's (its columns)
    ad_coded_strips strip[2]; // X's rows eight by eight, X^T's
};

// Whether AVX-512 takes op(X)'s rows (tx: X^T's) in groups of four: their unions hold at most
// 1.5 times the nonzeros (GROUPS_PAY_PERCENT in sparse.c).
bool ad_sparse_groups(const ad_coded_nz *nz, int tx);

// op(X)'s rows (tx: X^T's) as bit sets of their nonzeros [m, words], words = (k + 63) / 64, with one
// row more past the last for ad_sparse_greedy's use; *words set. NULL when out of memory.
uint64_t *ad_sparse_bits(const ad_coded_nz *nz, int tx, int *words);
// row [m]: op(X)'s rows in groups of G whose nonzeros overlap (sparse.c says how), the last group
// short when G does not divide m; window: how many rows not yet taken each choice looks at. false
// when out of memory.
bool ad_sparse_greedy(const ad_coded_nz *nz, int tx, uint64_t *bits, int words, int G, int window,
                      int32_t *row);

// Whether rows [q0, q1) of B [., n] (row stride ldb) hold no Inf and no NaN (their exponent bits
// tested; the portable loop of sparse.c).
bool ad_sparse_all_finite(const double *B, int ldb, int n, int q0, int q1);

// Whether X->nz describes X (made from its codes and table, the same size).
bool ad_sparse_matches(const ad_coded *X);

// C [m, n] (row stride n) = op(X) B, op(X) = X [rows, cols] or (tx) X^T, B [k, n] (row stride
// ldb), for X with X->nz describing it (ad_sparse_matches) and n >= 1. The ordered loop's bits
// for any isa (AVX-512, or the portable code with fma(); AD_THIN_AVX2 runs the portable code)
// and any number of threads (each row of C is computed whole by one thread), run on pool's
// workers (pool.h; NULL: threads made for the call).
void ad_sparse_matmul(ad_thin_isa isa, int threads, ad_pool *pool, const ad_coded *X, int tx,
                      int n, const double *B, int ldb, double *C);

// C [m, n] = op(X) B for 1 <= n <= 16 through X->nz's strips (ad_coded_nz_add_strips): lanes
// along a strip's rows, each entry a decoded vector of codes times a broadcast of B's row idx.
// The ordered loop's bits (as ad_sparse_matmul's) for any isa (AVX-512, AVX2, or portable code
// with fma(); AD_THIN_AUTO: the best this CPU runs) and any number of threads, run on pool's
// workers (NULL: threads made for the call); then (or NULL) on each row of C once C is final.
// false, with nothing written, when it does not take the product (no strips, more than 16
// columns, or an Inf or NaN in B): the caller then uses another kernel.
bool ad_strips_matmul(ad_thin_isa isa, int threads, ad_pool *pool, const ad_coded *X, int tx, int n,
                      const double *B, int ldb, double *C, const ad_thin_rows *then);

// The reference: the ordered fma loop over every entry of op(X), no entry skipped.
void ad_sparse_matmul_naive(const ad_coded *X, int tx, int n, const double *B, int ldb, double *C);

#endif
