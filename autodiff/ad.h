// hypertape autodiff: a reverse-mode tape over dense tensors of doubles (rank 0, 1, 2).
//
// A tape is an arena. Each op checks shapes, records a node and (normally) computes its value
// at once; ad_tape_mark / ad_tape_rewind drop everything recorded after a point so loops reuse
// memory. Reverse rules are written with the tape's own ops, so a gradient recorded with
// AD_CREATE_GRAPH is itself an expression that can be differentiated again (Hessian-vector
// products, differentiation through a gradient step, third derivatives).
//
// Shapes. A tensor is a scalar (rank 0), a vector [n] (rank 1) or a matrix [m, n] (rank 2,
// row-major). For broadcasting a scalar is [1, 1] and a vector [n] is the row [1, n]; two shapes
// combine when each dimension is equal or 1 (a scalar with anything; a vector [n] or a matrix
// [1, n] added to each row of [m, n], as a bias; a matrix [m, 1] to each column).
//
// Errors never abort. The first error (shape mismatch, domain error, memory cap, NaN/Inf when
// checking is on, a bad argument) is kept on the tape with a message naming the op and shapes
// (inside a gradient, also the op whose reverse rule failed: "reverse of sqrt: div: division by
// zero ..."); every later op returns AD_NONE and does nothing; entry points return the status.
//
// Counters, benchmark hooks and products kept across a rewind are in ad_extra.h.
#ifndef HYPERTAPE_AD_H
#define HYPERTAPE_AD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ad_tape ad_tape;

// A handle to a node on a tape. AD_NONE (0) is what ops return after an error; reading its value
// gives NaN, using it in an op is a no-op. A handle names one recording of a node: once a rewind
// or a reset drops the node, the handle is stale, and an op given it records AD_EARG instead of
// reading whatever was recorded at that place since (ad_value gives NaN, as for any invalid
// handle). Handles are the node's index (bits 0-31) and the tape's epoch when it was recorded
// (bits 32-62), which moves at every rewind that drops nodes and at every reset, and wraps after
// 2^31 - 1 of them: a stale handle is told apart until exactly that many such rewinds later.
typedef int64_t ad_var;
#define AD_NONE ((ad_var)0)

typedef enum {
    AD_OK = 0,
    AD_ESHAPE,  // operand shapes do not fit the op
    AD_EDOMAIN, // an input outside the op's domain (log of a negative number, ...)
    AD_ENOMEM,  // the tape's memory cap was reached, or malloc failed
    AD_ENAN,    // a NaN or Inf was produced while finiteness checking is on
    AD_EARG,    // a bad argument: invalid handle, index out of range, bad parameter
} ad_status;

typedef struct {
    int rank;       // 0, 1 or 2
    int rows, cols; // rank 0: 1 x 1; rank 1: 1 x n (a row); rank 2: m x n
} ad_shape;

ad_shape ad_scalar_shape(void);
ad_shape ad_vec_shape(int n);
ad_shape ad_mat_shape(int rows, int cols);
static inline int ad_shape_size(ad_shape s) { return s.rows * s.cols; }

// ---- the tape ----------------------------------------------------------------------------------

typedef struct {
    size_t max_bytes;  // cap on nodes + values + scratch; 0 = no cap
    int check_finite;  // 1: an op producing NaN/Inf is an error (AD_ENAN)
    size_t chunk_bytes; // arena growth step for values (0 = 1 MiB)
    int time_blas;     // 1: add up the wall time of matrix products (ad_extra.h)
    int threads;       // threads for large products with few output columns (ad_matmul with at
                       // most 16); 0 = the online CPUs, at most 4, and no more than
                       // OPENBLAS_NUM_THREADS or OMP_NUM_THREADS when set
} ad_tape_params;

ad_tape_params ad_tape_default_params(void);
// Returns NULL only if the tape itself cannot be allocated.
ad_tape *ad_tape_new(const ad_tape_params *p);
void ad_tape_free(ad_tape *t);

ad_status ad_tape_status(const ad_tape *t);
const char *ad_tape_error(const ad_tape *t); // "" when no error
void ad_tape_clear_error(ad_tape *t);
// Records a failure of the caller's own (e.g. a callback's bad output) as the tape's error.
void ad_tape_fail(ad_tape *t, ad_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// A point in a tape's recording (its fields are the tape's business).
typedef struct {
    const ad_tape *tape;  // the tape it was taken on
    int32_t nodes;        // nodes recorded then
    uint32_t epoch;       // the epoch of the last of them (a later rewind below it changes it)
    size_t chunk, offset; // arena position
    size_t used;          // doubles handed out from the arena so far
} ad_mark;

ad_mark ad_tape_mark(const ad_tape *t);
// Drops every node recorded after m: their handles go stale. Memory is kept for reuse. A mark of
// another tape, one past the end of the recording, or one a rewind or reset has dropped since
// (its last node was dropped, whatever was recorded at its place after) is an AD_EARG recorded on
// the tape, and nothing is dropped.
void ad_tape_rewind(ad_tape *t, ad_mark m);
// Drops everything and clears the error; every handle and mark of the tape goes stale. What is
// recorded next is what a new tape would record, node for node and bit for bit (memory, the
// counters of ad_extra.h and the settings stay).
void ad_tape_reset(ad_tape *t);
// 1 if v is a live handle of t (a node on it now, not one a rewind or reset dropped), else 0.
int ad_tape_holds(const ad_tape *t, ad_var v);
int32_t ad_tape_nodes(const ad_tape *t); // nodes recorded now (node 0 is the tape's own)

// Deferred recording: while on, ops record their node (shape checks and errors as usual) but
// compute values only when something needs them: ad_value, an op recorded with deferral off, or
// a reverse sweep. A step re-recorded only to be differentiated then costs just the products its
// reverse rules read. Returns the previous setting.
int ad_tape_defer(ad_tape *t, int on);

// Bytes the tape holds now and at most so far (nodes, values, scratch).
size_t ad_tape_bytes(const ad_tape *t);
size_t ad_tape_peak_bytes(const ad_tape *t);
// Bytes in use now: the recorded nodes and the values handed out (what a mark-to-now difference of
// it measures is what that stretch of recording costs, unlike the allocated bytes, which grow by
// chunks, or the arena position, which skips a chunk's unused end).
size_t ad_tape_used_bytes(const ad_tape *t);

// ---- leaves --------------------------------------------------------------------------------------

// A parameter: its value is copied onto the tape; gradients can be taken with respect to it.
ad_var ad_param(ad_tape *t, ad_shape s, const double *init);
// A constant: copied; no gradient flows into it.
ad_var ad_const(ad_tape *t, ad_shape s, const double *data);
// A constant that refers to the caller's memory without copying (large data). The memory must
// stay valid and unchanged while the node is on the tape. Views of the same memory and shape are
// one node, and an op recorded again on the same such inputs (or on nodes found again this way)
// returns the earlier node: B x recorded at every unrolled step is computed once, and its
// reverse rule runs once on the summed adjoint. Handles may therefore repeat.
ad_var ad_const_view(ad_tape *t, ad_shape s, const double *data);
ad_var ad_scalar(ad_tape *t, double v); // constant scalar
ad_var ad_fill(ad_tape *t, ad_shape s, double v); // constant filled with v

// ---- values ---------------------------------------------------------------------------------------

ad_shape ad_shape_of(const ad_tape *t, ad_var v);
// The value (forced if it was recorded lazily). Never NULL: a value that could not be computed
// reads as NaNs, and an invalid handle gives a pointer to a single NaN.
const double *ad_value(ad_tape *t, ad_var v);
double ad_item(ad_tape *t, ad_var v); // value of a scalar (the first entry)
// A constant copy of v's value: no gradient flows through it (stop-gradient).
ad_var ad_detach(ad_tape *t, ad_var v);

// ---- elementwise ops (binary ones broadcast, see the top) ---------------------------------------

ad_var ad_add(ad_tape *t, ad_var a, ad_var b);
ad_var ad_sub(ad_tape *t, ad_var a, ad_var b);
// y + alpha x (alpha finite): a gradient step y - s g in one node, with exactly the numbers of
// ad_sub(y, ad_scale(g, s)) when alpha = -s.
ad_var ad_axpy(ad_tape *t, ad_var y, double alpha, ad_var x);
ad_var ad_mul(ad_tape *t, ad_var a, ad_var b);
ad_var ad_div(ad_tape *t, ad_var a, ad_var b); // b = 0 is a domain error
// Elementwise min / max. On a tie the gradient is split half and half.
ad_var ad_min(ad_tape *t, ad_var a, ad_var b);
ad_var ad_max(ad_tape *t, ad_var a, ad_var b);

ad_var ad_neg(ad_tape *t, ad_var x);
ad_var ad_scale(ad_tape *t, ad_var x, double c);   // c x
ad_var ad_shift(ad_tape *t, ad_var x, double c);   // x + c
// x^e. Integer e: any x (x = 0 with e < 0 is a domain error). Other e: x > 0, or x = 0 when e >= 1.
ad_var ad_pow(ad_tape *t, ad_var x, double e);
ad_var ad_abs(ad_tape *t, ad_var x);               // abs'(0) = 0
ad_var ad_sqrt(ad_tape *t, ad_var x);              // x >= 0; the derivative needs x > 0
ad_var ad_square(ad_tape *t, ad_var x);
ad_var ad_exp(ad_tape *t, ad_var x);
ad_var ad_log(ad_tape *t, ad_var x);               // x > 0
ad_var ad_sin(ad_tape *t, ad_var x);
ad_var ad_cos(ad_tape *t, ad_var x);
ad_var ad_tanh(ad_tape *t, ad_var x);
ad_var ad_sigmoid(ad_tape *t, ad_var x);
ad_var ad_softplus(ad_tape *t, ad_var x);          // log(1 + e^x), computed without overflow
ad_var ad_relu(ad_tape *t, ad_var x);              // relu'(0) = 0
// g relu'(x) (g broadcast with x): relu's reverse rule in one pass, as ad_mul(g, ad_step(x)).
ad_var ad_relu_mask(ad_tape *t, ad_var g, ad_var x);
// Clamp to the box [lo, hi] (scalars, lo <= hi). Derivative 1 strictly inside, 0 on and outside
// the boundary. For per-entry bounds use ad_min / ad_max with constant tensors.
ad_var ad_clamp(ad_tape *t, ad_var x, double lo, double hi);

// Piecewise-constant helpers used by reverse rules; their derivative is zero.
ad_var ad_sign(ad_tape *t, ad_var x);              // -1, 0, 1
ad_var ad_step(ad_tape *t, ad_var x);              // 1 if x > 0 else 0
ad_var ad_inbox(ad_tape *t, ad_var x, double lo, double hi); // 1 if lo < x < hi else 0
ad_var ad_cmp(ad_tape *t, ad_var a, ad_var b);     // 1 if a > b, 1/2 if a == b, 0 if a < b
// s^e for s > 0 and 0 at s = 0 (s >= 0), elementwise: ||v||^(p-2) in the reverse rule of ad_normp.
ad_var ad_powz(ad_tape *t, ad_var s, double e);

// ---- reductions and broadcasting ------------------------------------------------------------------

ad_var ad_sum(ad_tape *t, ad_var x);               // -> scalar
ad_var ad_mean(ad_tape *t, ad_var x);              // -> scalar
ad_var ad_sum_rows(ad_tape *t, ad_var x);          // [m, n] -> [n]: the rows added together
ad_var ad_sum_cols(ad_tape *t, ad_var x);          // [m, n] -> [m]: each row's sum
ad_var ad_max_all(ad_tape *t, ad_var x);           // -> scalar; gradient to the first argmax
// Sum x down to shape s (s broadcasts to x's shape), and its adjoint: broadcast x up to s.
ad_var ad_sum_to(ad_tape *t, ad_var x, ad_shape s);
ad_var ad_expand(ad_tape *t, ad_var x, ad_shape s);

// ---- linear algebra (cblas) -------------------------------------------------------------------------

ad_var ad_dot(ad_tape *t, ad_var u, ad_var v);     // [n] . [n] -> scalar (any equal shapes)
// op(A) x with op(A) = A [m, n] or A^T; x [n] -> [m] (x [m] -> [n] when transposed).
ad_var ad_matvec(ad_tape *t, ad_var A, ad_var x, int transA);
// op(A) op(B), each operand optionally transposed.
ad_var ad_matmul(ad_tape *t, ad_var A, ad_var B, int transA, int transB);
ad_var ad_outer(ad_tape *t, ad_var u, ad_var v);   // [m], [n] -> [m, n]
// X's nonzero entries listed by rows and by columns (made by ad_coded_nz_make), for products
// that skip the zeros.
typedef struct ad_coded_nz ad_coded_nz;
// A constant matrix [rows, cols] kept as one byte per entry: entry (i, j) is
// table[codes[i * cols + j]], table holding 256 doubles. 8-bit images as they come from the
// file are 1/8 the size of their doubles, with exactly their values. The caller owns the struct
// and both arrays; they must stay valid and unchanged while nodes made from them are on the tape.
typedef struct {
    int rows, cols;
    const uint8_t *codes; // [rows, cols]
    const double *table;  // [256]
    const double *values; // optional [rows, cols]: the same entries as doubles, if the caller
                          // keeps them (NULL: none); read by products off the thin kernel
    const uint8_t *codes_t; // optional [cols, rows]: the codes transposed (NULL: none); X B on
                            // the thin kernel then reads these, faster, with the same bits
    const ad_coded_nz *nz;  // optional: X's nonzeros (NULL: none); products off the thin kernel
                            // then skip the zeros, with the bits of the ordered loop (below)
} ad_coded;
// op(X) B for a coded constant X (X or X^T) and B [k, n]: the same values as ad_matmul with the
// decoded X. On the thin kernel (at most 16 columns) it reads the codes, 1/8 of the memory, and
// gives the same bits; off it, with X->nz, a kernel that skips X's zeros (half the work on 8-bit
// images) and gives each entry the bits of the ordered loop s = fma(x_iq, b_qj, s), q ascending
// from s = +0.0, over all entries (not cblas's bits; an Inf or NaN in B meeting a zero of X
// gives NaN as in that loop); else cblas on X->values (the same call as ad_matmul's), or on
// blocks of decoded rows without them. No gradient flows into X. An nz made for another matrix
// is an AD_EARG.
ad_var ad_matmul_coded(ad_tape *t, const ad_coded *X, ad_var B, int transX);
// The nonzeros of X (entries whose table value is not +-0) for ad_coded.nz, made once from X's
// codes and table as they are then (they must not change while it is used; 10 bytes per nonzero,
// and for X and for X^T whose rows go in groups of four, 2 per nonzero times the groups' ratio of
// entries to nonzeros: 14.7 in all for FashionMNIST's images, 29 MB per 5000; making them takes
// 0.1 s per 5000 images). NULL with a message in err [errlen] on bad arguments or when out of
// memory. Freed by
// ad_coded_nz_free (NULL: nothing); ad_coded_nz_count gives how many nonzeros X has.
ad_coded_nz *ad_coded_nz_make(const ad_coded *X, char *err, size_t errlen);
// Adds to nz the strips that products with at most 16 columns (a linear model's X W and X^T G)
// run on (AVX-512, AVX2 or portable code, the same bits) instead of the thin kernel: X's rows
// and X^T's eight by eight with the union of their nonzeros, 12 bytes per entry of a union
// (about 0.66 of X's entries for FashionMNIST's images, 3.9 MB per 5000 each way). Those products then skip the zeros and give
// the ordered loop's bits, as the wide ones do (not the thin kernel's: its X^T G sums in blocks).
// 0, or -1 with a message in err [errlen] when out of memory (nz is then as it was).
int ad_coded_nz_add_strips(ad_coded_nz *nz, char *err, size_t errlen);
void ad_coded_nz_free(ad_coded_nz *nz);
int64_t ad_coded_nz_count(const ad_coded_nz *nz);
// A linear classifier on coded data, as one op each: softmax of each row of X W, [n, k]; and
// the cross-entropy of each row of X W against labels [n] (each in [0, k)), [n]. X [n, d], W
// [d, k]. The values and derivatives of ad_softmax(ad_matmul_coded(X, W)) and
// ad_xent(ad_matmul_coded(X, W), labels), bit for bit; as one op the softmax is what ad_keep
// keeps, so a re-recorded gradient of the loss computes neither X W nor its exps again.
ad_var ad_softmax_coded(ad_tape *t, const ad_coded *X, ad_var W);
ad_var ad_xent_coded(ad_tape *t, const ad_coded *X, ad_var W, const int32_t *labels);
// A symmetric matrix S given by the upper triangle of A [n, n] (the lower one is never read, as
// in cblas_dsymv): S x, x [n] -> [n]; and the quadratic form 1/2 y^T S y -> scalar, whose
// gradient costs one product (S y). A's gradient is on its upper triangle.
ad_var ad_symv(ad_tape *t, ad_var A, ad_var x);
ad_var ad_quadform(ad_tape *t, ad_var A, ad_var y);

// ---- shape ops ----------------------------------------------------------------------------------------

ad_var ad_reshape(ad_tape *t, ad_var x, ad_shape s); // same size; shares the value (no copy)
ad_var ad_slice(ad_tape *t, ad_var x, int offset, int len); // vector [n] -> [len]
ad_var ad_pad(ad_tape *t, ad_var x, int offset, int n);     // [len] -> [n], zeros around (slice's adjoint)
ad_var ad_concat(ad_tape *t, ad_var a, ad_var b);           // [n], [m] -> [n + m]
ad_var ad_concat_n(ad_tape *t, int k, const ad_var *parts); // k vectors, left to right
// Rows idx[0..k) of X [m, n] -> [k, n] (indices copied, may repeat); and its adjoint: add the rows
// of G [k, n] into rows idx of an [m, n] zero matrix.
ad_var ad_take_rows(ad_tape *t, ad_var X, int k, const int32_t *idx);
ad_var ad_put_rows(ad_tape *t, ad_var G, int m, int k, const int32_t *idx);

// ---- learning losses and norms ------------------------------------------------------------------

ad_var ad_logsumexp(ad_tape *t, ad_var x);          // log sum_i e^{x_i} over all entries -> scalar
ad_var ad_log_softmax(ad_tape *t, ad_var Z);        // per row of Z [m, k] (a vector is one row)
ad_var ad_softmax(ad_tape *t, ad_var Z);            // per row, likewise
// Per-row cross-entropy of logits Z [m, k] against labels[m] in [0, k): -log softmax(Z_i)[label_i] -> [m].
ad_var ad_xent(ad_tape *t, ad_var Z, const int32_t *labels);
ad_var ad_onehot(ad_tape *t, int m, int k, const int32_t *labels); // constant [m, k]
ad_var ad_sqnorm(ad_tape *t, ad_var v);             // ||v||^2 -> scalar
// ||v||^p, p > 0. At v = 0 the gradient is taken as 0 (exact for p > 1) and so is the Hessian
// (exact for p > 2; p = 2 is exact everywhere).
ad_var ad_normp(ad_tape *t, ad_var v, double p);
// Smoothed ||v||_q^q = sum_i (v_i^2 + eps)^(q/2), 0 < q < 1, eps > 0.
ad_var ad_lq_smooth(ad_tape *t, ad_var v, double q, double eps);

// ---- images (ops_image.c) ----------------------------------------------------------------------
// A batch of n images of c channels of h x w pixels is a matrix [n, c*h*w]: a row per image,
// channel after channel, each channel row after row (NCHW flattened). Geometry that does not
// match the operands' shapes is an AD_ESHAPE; a count below 1 an AD_EARG.

// 3x3 convolution, stride 1, zero padding 1: X [n, c_in*h*w], W [c_out, c_in*9] (entry
// (o, i*9 + 3*(dy+1) + (dx+1)) weighs channel i at offset (dy, dx)) -> [n, c_out*h*w].
// im2col + cblas_dgemm; its reverse rules are the two ops below and conv2d again.
ad_var ad_conv2d(ad_tape *t, ad_var X, ad_var W, int c_in, int h, int w, int c_out);
// The weight gradient: sum over images and pixels of G (o, p) X (i, p + offset k) -> [c_out, c_in*9]
// for X [n, c_in*h*w] and G [n, c_out*h*w].
ad_var ad_conv2d_wgrad(ad_tape *t, ad_var X, ad_var G, int c_in, int h, int w, int c_out);
// W [c_out, c_in*9] -> [c_in, c_out*9], each kernel rotated 180 degrees with the channel roles
// swapped: ad_conv2d(G, ad_conv_flip(W), c_out, h, w, c_in) is the transposed convolution.
ad_var ad_conv_flip(ad_tape *t, ad_var W, int c_in, int c_out);
// 2x2 max-pooling, stride 2: X [n, c*h*w] -> [n, c*(h/2)*(w/2)] (an odd last row or column is
// left out). On a tie the first maximum of the window (row-major) is taken, and gets the gradient.
ad_var ad_maxpool2(ad_tape *t, ad_var X, int c, int h, int w);
// ad_maxpool2(ad_relu(X)) with the same values and gradients, computed as the ReLU of the
// max-pool: the ReLU and its adjoint touch a quarter of the entries.
ad_var ad_relu_maxpool2(ad_tape *t, ad_var X, int c, int h, int w);
// A ConvNet block after its convolution in one op: ad_relu_maxpool2(ad_channel_affine(
// ad_channel_norm(Y, c, eps), P, c), c, h, w) with the same bits, without the large intermediates
// (two passes over Y forward, four back): Y [n >= 1, c*h*w], P [2c] the scales, then the shifts
// -> [n, c*(h/2)*(w/2)]. Differentiable to any order.
ad_var ad_bn_relu_pool(ad_tape *t, ad_var Y, ad_var P, int c, int h, int w, double eps);
// A first block in one op: ad_bn_relu_pool(ad_conv2d(X, W, c_in, h, w, c_out), P, c_out, h, w,
// eps) with WP = [W [c_out, c_in*9] flattened, P [2 c_out]], the convolution made again in each
// pass instead of stored (for a small c_in: with c_in = 1 the conv output is the network's
// largest array and the cheapest to make) -> [n, c_out*(h/2)*(w/2)]. Differentiable to any order.
ad_var ad_conv_bn_relu_pool(ad_tape *t, ad_var X, ad_var WP, int c_in, int h, int w, int c_out, double eps);
// Its parts: A [n, c*h*w] at the argmax positions of X's windows -> [n, c*(h/2)*(w/2)]
// (ad_maxpool2 is A = X); and the adjoint, G [n, c*(h/2)*(w/2)] put at those positions of a zero
// [n, c*h*w]. Both are constant in X.
ad_var ad_maxpool2_gather(ad_tape *t, ad_var A, ad_var X, int c, int h, int w);
ad_var ad_maxpool2_scatter(ad_tape *t, ad_var G, ad_var X, int c, int h, int w);
// X [n, c*h*w] plus b [c] on every pixel of channel c.
ad_var ad_channel_bias(ad_tape *t, ad_var X, ad_var b, int c, int h, int w);
// Batch normalization over the batch (training mode): each channel of X [n, c*h*w] less its
// mean over the n*h*w entries, over sqrt(its biased variance + eps), times gamma [c], plus
// beta [c]. n >= 1 and eps > 0. ad_channel_norm, then ad_channel_affine: differentiable to any
// order.
ad_var ad_batchnorm(ad_tape *t, ad_var X, ad_var gamma, ad_var beta, int c, int h, int w, double eps);
// Its parts, for X [n, c*k] of c channels of k entries per image (n >= 1, eps > 0): the
// normalized Z = (X - mean) r per channel, r [c] = 1/sqrt(biased variance + eps), and
// G - mean(G) - Z mean(G Z) per channel (G, Z [n, c*k]), which times r is normalization's adjoint.
ad_var ad_channel_norm(ad_tape *t, ad_var X, int c, double eps);
ad_var ad_channel_rstd(ad_tape *t, ad_var X, int c, double eps);
ad_var ad_channel_proj(ad_tape *t, ad_var G, ad_var Z, int c);
// Normalization's adjoint at X in one op: r times G - mean(G) - Z mean(G Z) per channel, Z and
// r those of X (G, X [n, c*k]); what ad_channel_norm's reverse rule records.
ad_var ad_channel_norm_adj(ad_tape *t, ad_var G, ad_var X, int c, double eps);
// Z [n, c*k] times P[ch] plus P[c + ch] on channel ch, P [2c] (scales, then shifts); and its
// adjoint in P: [2c], per channel the sum of G Z, then the sum of G (G, Z [n, c*k]).
ad_var ad_channel_affine(ad_tape *t, ad_var Z, ad_var P, int c);
ad_var ad_channel_sums(ad_tape *t, ad_var G, ad_var Z, int c);

// ---- derivatives --------------------------------------------------------------------------------

enum {
    AD_CREATE_GRAPH = 1, // record the gradient so it can be differentiated again
};

// Vector-Jacobian product: out[i] = (dy/dwrt[i])^T ybar, ybar of y's shape. Any non-constant
// node can be in wrt; a wrt that y does not depend on gets zeros. Returns the tape's status;
// n < 0, or a NULL wrt or out with n > 0, is an AD_EARG.
ad_status ad_vjp(ad_tape *t, ad_var y, ad_var ybar, int n, const ad_var *wrt, ad_var *out,
                 unsigned flags);
// Jacobian-vector products (forward mode), m of them at once: out[j] = sum_i (dy/dwrt[i]) v[j n + i]
// for j = 0..m-1, each of y's shape, where v[j n + i] (a tangent of wrt[i]) has wrt[i]'s shape.
// Built as a reverse of a reverse: g(u) = J^T u is recorded once, deferred (its values are never
// needed), for a parameter u of y's shape, and J v = d<g(u), v>/du is one reverse sweep through
// it per tangent set; so every op has a forward derivative without a rule of its own, and a
// product costs what forward mode would (for y = A s: A v, never A^T u). With AD_CREATE_GRAPH
// out is recorded so it can be differentiated again. Constant wrt (no gradient flows into
// them) and tangents of another shape are errors, as are n < 0, m < 0 and NULL lists when
// n > 0 or m > 0 (AD_EARG, AD_ESHAPE); out is cleared first.
ad_status ad_jvp(ad_tape *t, ad_var y, int n, const ad_var *wrt, int m, const ad_var *v,
                 ad_var *out, unsigned flags);
// Gradient of a scalar y.
ad_status ad_grad(ad_tape *t, ad_var y, int n, const ad_var *wrt, ad_var *out, unsigned flags);
// Hessian-vector product at the current point: out = (d^2 f / d x^2) v, f scalar, v of x's shape.
ad_status ad_hvp(ad_tape *t, ad_var f, ad_var x, ad_var v, ad_var *out, unsigned flags);
// Mixed product: out = (d^2 f / dx dy) v = d/dx (grad_y f . v), v of y's shape, out of x's shape.
ad_status ad_hvp_mixed(ad_tape *t, ad_var f, ad_var x, ad_var y, ad_var v, ad_var *out,
                       unsigned flags);

// ---- finite-difference checks (for users' own expressions) ---------------------------------------

// Builds a scalar from the inputs (leaves made by the checker; ad_check_jvp takes any shape).
// Return AD_NONE on failure.
typedef ad_var (*ad_fn)(ad_tape *t, const ad_var *in, void *ctx);

typedef struct {
    double h;       // central-difference step (relative to max(1, |x_i|))
    double rtol;    // an entry passes if |a - n| <= atol + rtol * max(|a|, |n|)
    double atol;
    uint64_t seed;  // for the random direction of the Hessian check and random adjoints
} ad_check_params;

typedef struct {
    ad_status status;   // AD_OK, or the tape error that stopped the check
    int pass;           // 1 if every entry is within tolerance
    int worst_input, worst_index; // where the worst entry is
    double analytic, numeric;     // its two values
    double abs_err, rel_err;      // its errors; rel = abs / max(|a|, |n|, tiny)
    double worst_ratio; // max over entries of |a - n| / (atol + rtol max(|a|, |n|)); <= 1 passes
    char msg[256];
} ad_check_report;

ad_check_params ad_check_default_params(void);
// Compare ad_grad of fn at the given point with central differences of fn. Nothing runs, and the
// report has AD_EARG and a message, for bad arguments: no fn, other than 1 to 16 inputs, a shape
// a tensor cannot have, a NULL point[k] for an input with entries, h not finite and > 0, rtol or
// atol not finite and >= 0.
ad_check_report ad_check_grad(ad_fn fn, void *ctx, int n_in, const ad_shape *shapes,
                              const double *const *point, const ad_check_params *p);
// Compare the Hessian-vector products H v for a seeded random v (one per input, the joint
// Hessian of all inputs) with central differences of the gradient along v. Arguments are
// checked as for ad_check_grad.
ad_check_report ad_check_hvp(ad_fn fn, void *ctx, int n_in, const ad_shape *shapes,
                             const double *const *point, const ad_check_params *p);

// Compare ad_jvp along a seeded random tangent (one per input) with central differences of fn
// along it; fn may return a tensor of any shape here, and the report's entries are the output's
// (worst_input 0). Arguments are checked as for ad_check_grad.
ad_check_report ad_check_jvp(ad_fn fn, void *ctx, int n_in, const ad_shape *shapes,
                             const double *const *point, const ad_check_params *p);

// ---- a small seeded generator (splitmix64 / xoshiro256**) ---------------------------------------

typedef struct { uint64_t s[4]; } ad_rng;
void ad_rng_seed(ad_rng *r, uint64_t seed);
uint64_t ad_rng_next(ad_rng *r);
double ad_rng_uniform(ad_rng *r);                 // [0, 1)
double ad_rng_normal(ad_rng *r);                  // N(0, 1)

#ifdef __cplusplus
}
#endif

#endif
