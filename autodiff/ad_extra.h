// hypertape autodiff, beyond ad.h: what the tape counts (op uses and evaluations), the hooks
// benchmarks use (time in products, the product kernel), and products kept across a rewind,
// which the bilevel layer's reverse sweep uses. A user of the tape needs only ad.h.
#ifndef HYPERTAPE_AD_EXTRA_H
#define HYPERTAPE_AD_EXTRA_H

#include "ad.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- counters ------------------------------------------------------------------------------------

// Node values computed since the tape was made (what deferral saves shows here).
int64_t ad_tape_evals(const ad_tape *t);
// The ops by number (0 to ad_op_count() - 1), for the counters below.
const char *ad_op_name(int op);   // "?" outside the range
int ad_op_find(const char *name); // the op's number, -1 if none
int ad_op_count(void);
// How many nodes of each op were recorded since the tape was made (for coverage tests).
int64_t ad_tape_op_uses(const ad_tape *t, int op);
// How many values of each op were computed (a deferred node that nothing read is recorded, not
// computed): what a benchmark counts as passes over its data.
int64_t ad_tape_op_evals(const ad_tape *t, int op);

// ---- matrix products -----------------------------------------------------------------------------

// Seconds spent in matrix products (matvec, matmul: cblas and the thin kernel) since the tape
// was made, when params.time_blas is set; benchmarks compare it with the total to show the
// overhead outside the products.
double ad_tape_blas_seconds(const ad_tape *t);
// Large products whose output has few columns (X W with W [784, 10], and X^T G) run on the
// tape's own streaming kernel where the CPU has one (AVX2 + FMA); off sends them to cblas, for
// comparisons. Returns the previous setting.
int ad_tape_thin_products(ad_tape *t, int on);
// How long the tape's worker threads spin between jobs before they sleep, in microseconds
// (autodiff/pool.c; 100 unless set, 0: sleep at once), for comparisons. Returns the previous
// setting.
int ad_tape_pool_spin(ad_tape *t, int spin_us);
// What those products run on: "AVX2+FMA kernel, 2 threads", or "cblas" when off or unavailable.
const char *ad_tape_product_kernel(const ad_tape *t, char buf[64]);

// ---- linear maps the caller computes (ops_linear.c) ----------------------------------------------

// y = L x, x of L's in size (any shape of it), y [L->out], for a linear map whose values the
// caller computes: apply(L, x, y, err) fills y [out] from x [in] and returns 0, or -1 with a
// message in err [200]. transpose is L^T (in and out swapped), whose transpose must be L: the
// reverse rule of ad_linear(L) is ad_linear(L^T), so derivatives of every order work. A sum over
// processes (its transpose: the copy to each) or a gather of their blocks (its transpose: taking
// one's own block) is such a map (models/shard.c); such a node is never merged with an equal one,
// so every recording calls apply. The maps must stay valid while nodes made from them are on the
// tape.
typedef struct ad_linmap ad_linmap;
struct ad_linmap {
    ad_shape in, out;
    int (*apply)(const ad_linmap *L, const double *x, double *y, char *err);
    const ad_linmap *transpose;
    void *ctx;
};
ad_var ad_linear(ad_tape *t, const ad_linmap *L, ad_var x);

// ---- a ConvNet block's batch norm, ReLU and max-pool in one op (ops_image_block.c) ----------

// The adjoints of ad_bn_relu_pool (ad.h), which its reverse rule records: with GP = [G flattened, P] (G [n, c*(h/2)*(w/2)]
// the output's adjoint), the adjoint in P then Y's per-channel means and r = 1/sqrt(variance +
// eps) [4c]; with GPS = [GP, those 4c], the adjoint in Y (the formulas are in ops_image_block.c).
ad_var ad_bn_relu_pool_dp(ad_tape *t, ad_var GP, ad_var Y, int c, int h, int w, double eps);
ad_var ad_bn_relu_pool_dy(ad_tape *t, ad_var GPS, ad_var Y, int c, int h, int w, double eps);
// The adjoint of ad_conv_bn_relu_pool (ad.h) in WP, which its reverse rule records: with GWP =
// [G flattened, WP], [dW [c_out, c_in*9] flattened, dP [2 c_out]].
ad_var ad_conv_bn_relu_pool_dwp(ad_tape *t, ad_var GWP, ad_var X, int c_in, int h, int w, int c_out,
                                double eps);

// ---- keeping products across a rewind (keep.c) ---------------------------------------------------

// A recording that is rewound and made again (a reverse sweep re-recording an unrolled step)
// computes its products over large constants twice. ad_keep copies the computed products
// recorded since m whose one operand is a constant (ad_matmul_coded, or ad_matmul with an
// ad_const_view) and the other a leaf seen through reshapes and slices (W_k, a slice of the
// state y_k) or any value at most a quarter of the product's size (W1 W2 of a folded 2-layer
// model), of at least 2^20 multiply-adds, each with that operand's value. NULL when there is
// none, or they would take more than max_bytes (then nothing is kept). ad_reuse, on the
// recording made again since m, gives each uncomputed such product whose constant is the same
// and whose operand equals a kept one entry by entry the kept value (the node reads it in place:
// k must outlive that recording); it returns how many. The
// constants are known by their address: their contents must not change between the two. A mark
// ad_tape_rewind would refuse is an AD_EARG on the tape for both (NULL, 0).
typedef struct ad_kept ad_kept;
ad_kept *ad_keep(ad_tape *t, ad_mark m, size_t max_bytes);
int ad_reuse(ad_tape *t, ad_mark m, const ad_kept *k);
size_t ad_kept_bytes(const ad_kept *k);
// NULL is fine. Before freeing k's tape: the arrays go back to the tape, whose next ad_keep
// takes them again (a sweep per UL iteration keeps the same sizes; fresh memory faults per page).
void ad_kept_free(ad_kept *k);

#ifdef __cplusplus
}
#endif

#endif
