// The thin-product kernel (thin.c): C = op(A) op(B) when C has few columns and the work is
// large, the shape of a linear model's X W and X^T G. Internal to the library; the tests and
// the benchmark call it directly to compare it with the reference loop and with cblas.
#ifndef HYPERTAPE_AD_THIN_H
#define HYPERTAPE_AD_THIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pool.h"

enum { AD_THIN_MAX_N = 16 }; // most columns of C the kernel takes

typedef enum {
    AD_THIN_AUTO = 0,  // the best variant this CPU runs
    AD_THIN_PORTABLE,  // plain C, any compiler and CPU
    AD_THIN_AVX2,      // AVX2 + FMA (x86-64 with GCC or Clang, chosen at run time)
    AD_THIN_AVX512,    // AVX-512F (+ AVX2, FMA): the same bits as AVX2, wider registers
} ad_thin_isa;

// Whether this CPU (and build) runs a variant; the one AD_THIN_AUTO runs (the widest that
// runs); and a variant's name for benchmark output.
bool ad_thin_runs(ad_thin_isa isa);
ad_thin_isa ad_thin_best(void);
const char *ad_thin_name(ad_thin_isa isa);
// Threads for the kernel when the tape is not told: the online CPUs, at most 4, and no more
// than OPENBLAS_NUM_THREADS or OMP_NUM_THREADS when set.
int ad_thin_default_threads(void);
// Doubles of workspace ad_thin_matmul needs for C [m, n] = op(A) [m, k] op(B) [k, n].
size_t ad_thin_work_size(int ta, int m, int n, int k);

// C [m, n] (row stride n) = op(A) op(B), row-major A and B with row strides lda and ldb, op(X)
// = X^T when tX. Needs 1 <= n <= AD_THIN_MAX_N, m, k >= 0, and work: ad_thin_work_size doubles,
// 32-byte aligned. Runs on up to `threads` threads: the caller's and the workers of pool
// (pool.h), or with pool NULL threads created for the call (the caller judges whether the work
// pays for them: creating and joining a thread costs ~30 us, waking a worker less). Each sum
// is fixed by the shape alone: in order p, or with A transposed and k >= 512, in order p within
// fixed blocks of rows of A whose sums are added in block order; so the result is bitwise the
// same for any `threads`, and the same for AVX2 and AVX-512 (both fuse each multiply-add; the
// portable code rounds the product first). An isa this CPU does not run runs the portable code.
void ad_thin_matmul(ad_thin_isa isa, int threads, ad_pool *pool, int ta, int tb, int m, int n,
                    int k, const double *A, int lda, const double *B, int ldb, double *C,
                    double *work);

// The same with A given as one-byte codes into a table of 256 doubles (entry (i, j) of A is
// table[codes[i * lda + j]]) and B not transposed: A's values are read in the same order, so
// the result has the same bits as ad_thin_matmul on the decoded A, with 1/8 of the bytes to
// stream.
void ad_thin_matmul_coded(ad_thin_isa isa, int threads, ad_pool *pool, int ta, int m, int n, int k,
                          const uint8_t *codes, const double *table, int lda, const double *B,
                          int ldb, double *C, double *work);

// C [m, n] = X B with X [m, k] given transposed, as codes_t [k, m] (row stride ldt) into the
// table: the same bits as ad_thin_matmul_coded with ta = 0 on X's codes (each sum in order p,
// in one run), computed by the kernels of X^T B, whose AVX-512 strips hold 8 rows of C in each
// register (lanes along X's rows, its codes decoded 8 at a time) and so beat the broadcasts of
// X's entries against padded rows of B (n = 10 fills 10 of 16 lanes) when the table is linear.
// work: ad_thin_work_size(1, m, n, k) doubles.
void ad_thin_matmul_coded_t(ad_thin_isa isa, int threads, ad_pool *pool, int m, int n, int k,
                            const uint8_t *codes_t, const double *table, int ldt, const double *B,
                            int ldb, double *C, double *work);

// C [m, n] = X B for X [m, k] given as codes [m, k] (row stride k) or, when codes_t is not NULL,
// as its transpose codes_t [k, m] (row stride m): ad_thin_matmul_coded (ta = 0) or
// ad_thin_matmul_coded_t, the same bits, and then then->fn(then->ctx, C, n, lo, hi) on rows
// [lo, hi) of C as they become final, each row once, by the thread that computed them while
// they are in its cache (the coded loss ops' softmax of each row of X W: its exps on all the
// threads). fn must give a row what it would give it alone, so that the bits do not depend on
// how the rows are split among threads. work: ad_thin_work_size(codes_t != NULL, m, n, k).
typedef struct {
    void (*fn)(void *ctx, double *C, int n, int lo, int hi);
    void *ctx;
} ad_thin_rows;
void ad_thin_coded_rows(ad_thin_isa isa, int threads, ad_pool *pool, int m, int n, int k,
                        const uint8_t *codes, const uint8_t *codes_t, const double *table,
                        const double *B, int ldb, double *C, double *work,
                        const ad_thin_rows *then);

// Whether tab [256] is c / d for each code c, each entry exactly that division (8-bit pixels
// scaled to [0, 1]), so that the vector kernels decode codes by arithmetic: x = float(c), entry =
// fma(x, hi, x lo), bit for bit; *hi and *lo set then. Checked on every entry, with fma().
bool ad_thin_linear_table(const double *tab, double *hi, double *lo);

// The reference next to it: the textbook loop, C_ij = sum_p op(A)_ip op(B)_pj in order p.
void ad_thin_matmul_naive(int ta, int tb, int m, int n, int k, const double *A, int lda,
                          const double *B, int ldb, double *C);

#endif
