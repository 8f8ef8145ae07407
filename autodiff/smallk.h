// Products with a small inner dimension (smallk.c): C [m, n] = op(A) [m, k] op(B) [k, n] with
// k <= AD_SMALLK_MAX_K and C wide, the shape of an MLP's G W2^T ([5000, 10] x [10, 300]) in its
// reverse sweep. Internal to the library; the tests call it directly.
#ifndef HYPERTAPE_AD_SMALLK_H
#define HYPERTAPE_AD_SMALLK_H

#include "pool.h"
#include "thin.h"

#include <stddef.h>

enum { AD_SMALLK_MAX_K = 16 };

// Doubles of workspace for n columns and inner dimension k (op(B) packed, padded).
size_t ad_smallk_work_size(int n, int k);

// C [m, n] (row stride n) = op(A) op(B), row-major A and B with row strides lda and ldb, op(X) =
// X^T when tX, for 1 <= k <= AD_SMALLK_MAX_K, m, n >= 0. Each entry is the ordered loop
// s = +0.0; s = fma(op(A)_ip, op(B)_pj, s) for p ascending, whatever the variant (the AVX2 and
// AVX-512 builds of the same loop, or the portable one; an isa this CPU does not run runs the
// portable code) and the number of threads (a row of C is computed whole by one thread), run on
// pool's workers (NULL: threads made for the call). work: ad_smallk_work_size doubles, 64-byte
// aligned.
void ad_smallk_matmul(ad_thin_isa isa, int threads, ad_pool *pool, int ta, int tb, int m, int n,
                      int k, const double *A, int lda, const double *B, int ldb, double *C,
                      double *work);

#endif
