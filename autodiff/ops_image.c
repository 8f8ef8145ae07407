// Ops for image backbones: 3x3 convolution (stride 1, zero padding 1), its weight gradient and
// the kernel flip that makes its transpose a convolution again, 2x2 max-pooling (stride 2) as a
// gather at the windows' argmax with its adjoint, the scatter, and batch normalization's
// per-channel parts (normalize, its adjoint in one op and its projection, scale and shift). A
// batch of n images of c channels of h x w pixels is a matrix [n, c*h*w]: each row one image,
// channel after channel, each channel row after row (PyTorch's NCHW, flattened). Weights are [c_out, c_in*9]:
// entry (o, i*9 + 3*(dy+1) + (dx+1)) weighs input channel i at offset (dy, dx) for output o.
//
// Every reverse rule is these ops again, so gradients differentiate to any order (MAML through
// the backbone): with Y = conv(X, W) and adjoint G,
//   dX = conv(G, flip(W))    (the transposed convolution: stride 1, padding 1 keep the size)
//   dW = conv_wgrad(X, G)    (sum over images and pixels of G times the shifted X)
// and conv_wgrad's own adjoints are convolutions of X and G with the incoming [c_out, c_in*9].
// maxpool(X) is gather(X, X): A = X's entries at the argmax of X's windows; gather's adjoint in A
// is scatter (the window's gradient to its argmax) and scatter's is gather; both are constant in
// the X that picks the positions (a piecewise-constant choice), as max is.
//
// The products run as im2col + cblas_dgemm, one image per product for images of 64 pixels or
// more, over blocks of images for smaller ones, or where the CPU has AVX-512 and the channels
// suit it, without im2col (ops_image_direct.c); ad_conv3x3_direct is the plain loop a test
// compares them with. The loops over the activations are in ops_image_kernels.c, split over
// images on the tape's threads with bits that do not depend on their number.
#include "image_kernels.h"
#include "internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- geometry checks ----

// c, h, w >= 1 and c*h*w an int: the columns of a batch of such images (0 if not).
static int image_cols(int c, int h, int w) {
    if (c < 1 || h < 1 || w < 1) return 0;
    int64_t m = (int64_t)c * h * w;
    return m <= INT32_MAX ? (int)m : 0;
}

// X is a batch [n, c*h*w]; fails with a message naming op and what if not.
bool imk_check_images(ad_tape *t, const char *op, const char *what, ad_var X, int c, int h, int w) {
    ad_shape s = ad_shape_fast(t, X);
    int cols = image_cols(c, h, w);
    if (!cols) {
        ad_fail(t, AD_EARG, "%s: bad image geometry c = %d, h = %d, w = %d (each >= 1, c*h*w an int)",
                op, c, h, w);
        return false;
    }
    if (s.rank != 2 || s.cols != cols) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "%s: %s %s is not a batch [n, %d] of %d x %d x %d images", op, what,
                ad_shape_str(s, b), cols, c, h, w);
        return false;
    }
    return true;
}

// W is [c_out, c_in*9].
static bool check_weights(ad_tape *t, const char *op, ad_var W, int c_in, int c_out) {
    ad_shape s = ad_shape_fast(t, W);
    if (c_in < 1 || c_out < 1 || c_in > INT32_MAX / 9 || c_out > INT32_MAX / 9) {
        ad_fail(t, AD_EARG, "%s: bad channel counts c_in = %d, c_out = %d", op, c_in, c_out);
        return false;
    }
    if (s.rank != 2 || s.rows != c_out || s.cols != c_in * 9) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "%s: weights %s are not [c_out, c_in*9] = [%d, %d]", op,
                ad_shape_str(s, b), c_out, c_in * 9);
        return false;
    }
    return true;
}

// ---- im2col (ops_image_kernels.c) ----

// Images per block: one for images of 64 pixels or more, whose product reads and writes the
// image's own rows (an image's [c_out, hw] is the product's layout: nothing to copy, and the
// product is big enough for dgemm; imk_conv_images, images over threads); for smaller ones, the block's columns [c_in*9, B*hw] and
// output [c_out, B*hw] about 2 MB (in cache for the product and the copy).
static int block_images(int n, int c_in, int c_out, int hw) {
    if (hw >= 64) return 1;
    size_t per = ((size_t)c_in * 9 + c_out) * hw;
    size_t b = ((size_t)1 << 18) / (per ? per : 1);
    return b < 1 ? 1 : b > (size_t)n ? n : (int)b;
}

// Buffers for a block: the columns, and the block's output (or gradient) channel-major
// [c_out, B*hw]. NULL after an error (recorded).
static double *block_buffers(ad_tape *t, const char *op, int B, int c_in, int c_out, int hw,
                             double **out) {
    size_t nc = (size_t)c_in * 9 * B * hw, no = (size_t)c_out * B * hw;
    double *cols = malloc((nc + no) * sizeof *cols);
    if (!cols) ad_fail(t, AD_ENOMEM, "%s: no memory for %zu doubles of columns", op, nc + no);
    *out = cols ? cols + nc : NULL;
    return cols;
}

// ---- conv2d: X [n, c_in*h*w], W [c_out, c_in*9] -> [n, c_out*h*w] ----

ad_var ad_conv2d(ad_tape *t, ad_var X, ad_var W, int c_in, int h, int w, int c_out) {
    ad_var in[2] = {X, W};
    if (!ad_check_args(t, "conv2d", 2, in) || !imk_check_images(t, "conv2d", "input", X, c_in, h, w) ||
        !check_weights(t, "conv2d", W, c_in, c_out))
        return AD_NONE;
    if (!image_cols(c_out, h, w)) {
        ad_fail(t, AD_EARG, "conv2d: %d output channels of %d x %d do not fit an int", c_out, h, w);
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_CONV2D, ad_mat_shape(ad_shape_fast(t, X).rows, c_out * h * w), X, W);
    if (!p) return AD_NONE;
    p->i0 = h, p->i1 = w;
    return ad_commit(t, p);
}
// Both products over blocks of images, from each block's columns [c_in*9, nb*hw] and a buffer
// [c_out, nb*hw] channel-major across the block: forward (wgrad false), y [n, c_out*hw] from
// W [c_out, c_in*9] (the buffer is the block's output, copied into each image's row); weight
// gradient, y [c_out, c_in*9] from G [n, c_out*hw] (the buffer is G's block, summed over blocks).
static ad_status conv_blocks(ad_tape *t, const char *op, const ad_node *X, const double *other,
                             int c_in, int c_out, int h, int w, bool wgrad, double *y) {
    int n = X->rows, hw = h * w, B = block_images(n, c_in, c_out, hw);
    size_t row = (size_t)c_out * hw; // an image's output (or G's) row
    double t0 = t->par.time_blas ? ad_now() : 0;
    bool direct = imk_conv_direct_runs(c_in, c_out);
    if (B == 1 || direct) { // one image per product, on the tape's threads
        bool ok = direct ? imk_conv_direct(X->val, other, n, c_in, h, w, c_out, wgrad, t->threads, y)
                         : imk_conv_images(X->val, other, n, c_in, h, w, c_out, wgrad, t->threads, y);
        if (!ok) ad_fail(t, AD_ENOMEM, "%s: no memory for the columns of %d x %d images", op, h, w);
        if (t->par.time_blas) t->blas_seconds += ad_now() - t0;
        return ok ? AD_OK : AD_ENOMEM;
    }
    double *buf, *cols = block_buffers(t, op, B, c_in, c_out, hw, &buf);
    if (!cols) return AD_ENOMEM;
    for (int b0 = 0; b0 < n; b0 += B) {
        int nb = n - b0 < B ? n - b0 : B;
        size_t ld = (size_t)nb * hw;
        for (int b = 0; b < nb; b++) {
            imk_im2col(X->val + (size_t)(b0 + b) * X->cols, c_in, h, w, cols, ld, (size_t)b * hw);
            for (int o = 0; wgrad && o < c_out; o++)
                memcpy(buf + o * ld + (size_t)b * hw, other + (b0 + b) * row + (size_t)o * hw,
                       (size_t)hw * sizeof(double));
        }
        if (wgrad) // dW [c_out, c_in*9] (+)= G block [c_out, nb*hw] cols^T [nb*hw, c_in*9]
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c_out, c_in * 9, (int)ld, 1.0, buf,
                        (int)ld, cols, (int)ld, b0 ? 1.0 : 0.0, y, c_in * 9);
        else // [c_out, nb*hw] = W [c_out, c_in*9] cols [c_in*9, nb*hw]
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c_out, (int)ld, c_in * 9, 1.0,
                        other, c_in * 9, cols, (int)ld, 0.0, buf, (int)ld);
        for (int b = 0; !wgrad && b < nb; b++)
            for (int o = 0; o < c_out; o++)
                memcpy(y + (b0 + b) * row + (size_t)o * hw, buf + o * ld + (size_t)b * hw,
                       (size_t)hw * sizeof(double));
    }
    if (t->par.time_blas) t->blas_seconds += ad_now() - t0;
    free(cols);
    return AD_OK;
}

static ad_status fwd_conv2d(ad_tape *t, ad_node *nd) {
    const ad_node *X = &t->nodes[nd->a], *W = &t->nodes[nd->b];
    if (X->rows == 0) return AD_OK;
    return conv_blocks(t, "conv2d", X, W->val, W->cols / 9, W->rows, nd->i0, nd->i1, false, nd->val);
}
static void rev_conv2d(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    ad_var X = ad_input(t, y, 0), W = ad_input(t, y, 1);
    int h = n->i0, w = n->i1, c_in = t->nodes[n->b].cols / 9, c_out = t->nodes[n->b].rows;
    if (need[0]) gin[0] = ad_conv2d(t, g, ad_conv_flip(t, W, c_in, c_out), c_out, h, w, c_in);
    if (need[1]) gin[1] = ad_conv2d_wgrad(t, X, g, c_in, h, w, c_out);
}
AD_DEF(conv2d, 2, fwd_conv2d, rev_conv2d);

// ---- conv2d_wgrad: X [n, c_in*h*w], G [n, c_out*h*w] -> [c_out, c_in*9] ----
// dW (o, i*9 + k) = sum over images and pixels p of G (o, p) X (i, p + offset k).

ad_var ad_conv2d_wgrad(ad_tape *t, ad_var X, ad_var G, int c_in, int h, int w, int c_out) {
    ad_var in[2] = {X, G};
    if (!ad_check_args(t, "conv2d_wgrad", 2, in) ||
        !imk_check_images(t, "conv2d_wgrad", "input", X, c_in, h, w) ||
        !imk_check_images(t, "conv2d_wgrad", "output gradient", G, c_out, h, w))
        return AD_NONE;
    ad_shape sx = ad_shape_fast(t, X), sg = ad_shape_fast(t, G);
    if ((int64_t)c_out * c_in * 9 > INT32_MAX) {
        ad_fail(t, AD_EARG, "conv2d_wgrad: a gradient [%d, %d * 9] has more entries than an int holds",
                c_out, c_in);
        return AD_NONE;
    }
    if (sx.rows != sg.rows) {
        char a[32], b[32];
        ad_fail(t, AD_ESHAPE, "conv2d_wgrad: input %s and output gradient %s differ in images",
                ad_shape_str(sx, a), ad_shape_str(sg, b));
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_CONV2D_WGRAD, ad_mat_shape(c_out, c_in * 9), X, G);
    if (!p) return AD_NONE;
    p->i0 = h, p->i1 = w;
    return ad_commit(t, p);
}
static ad_status fwd_conv2d_wgrad(ad_tape *t, ad_node *nd) {
    const ad_node *X = &t->nodes[nd->a], *G = &t->nodes[nd->b];
    if (X->rows == 0) {
        memset(nd->val, 0, (size_t)ad_size(nd) * sizeof(double));
        return AD_OK;
    }
    return conv_blocks(t, "conv2d_wgrad", X, G->val, nd->cols / 9, nd->rows, nd->i0, nd->i1, true,
                       nd->val);
}
static void rev_conv2d_wgrad(ad_tape *t, ad_var y, ad_var hbar, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    ad_var X = ad_input(t, y, 0), G = ad_input(t, y, 1);
    int h = n->i0, w = n->i1, c_in = n->cols / 9, c_out = n->rows;
    if (need[0]) gin[0] = ad_conv2d(t, G, ad_conv_flip(t, hbar, c_in, c_out), c_out, h, w, c_in);
    if (need[1]) gin[1] = ad_conv2d(t, X, hbar, c_in, h, w, c_out);
}
AD_DEF(conv2d_wgrad, 2, fwd_conv2d_wgrad, rev_conv2d_wgrad);

// ---- conv_flip: W [c_out, c_in*9] -> [c_in, c_out*9], (i, o*9 + k) = W (o, i*9 + 8 - k) ----
// The kernel rotated by 180 degrees with the channel roles swapped: conv(G, flip(W)) is the
// transposed convolution. A permutation, its own inverse up to the swap, so its adjoint is a flip.

ad_var ad_conv_flip(ad_tape *t, ad_var W, int c_in, int c_out) {
    if (!ad_check_args(t, "conv_flip", 1, &W) || !check_weights(t, "conv_flip", W, c_in, c_out))
        return AD_NONE;
    return ad_commit(t, ad_push(t, OP_CONV_FLIP, ad_mat_shape(c_in, c_out * 9), W, 0));
}
static ad_status fwd_conv_flip(ad_tape *t, ad_node *nd) {
    const ad_node *W = &t->nodes[nd->a];
    int c_out = W->rows, c_in = nd->rows;
    for (int i = 0; i < c_in; i++)
        for (int o = 0; o < c_out; o++)
            for (int k = 0; k < 9; k++)
                nd->val[(size_t)i * nd->cols + o * 9 + k] = W->val[(size_t)o * W->cols + i * 9 + 8 - k];
    return AD_OK;
}
static void rev_conv_flip(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_node *n = ad_node_at(t, y);
    gin[0] = ad_conv_flip(t, g, n->cols / 9, n->rows);
}
AD_DEF(conv_flip, 1, fwd_conv_flip, rev_conv_flip);

// The plain loop: y [n, c_out*h*w] = conv(x [n, c_in*h*w], wt [c_out, c_in*9]), for tests.
void ad_conv3x3_direct(const double *x, const double *wt, int n, int c_in, int h, int w, int c_out,
                       double *y) {
    size_t hw = (size_t)h * w;
    for (int b = 0; b < n; b++)
        for (int o = 0; o < c_out; o++)
            for (int py = 0; py < h; py++)
                for (int px = 0; px < w; px++) {
                    double s = 0;
                    for (int i = 0; i < c_in; i++)
                        for (int k = 0; k < 9; k++) {
                            int sy = py + k / 3 - 1, sx = px + k % 3 - 1;
                            if (sy >= 0 && sy < h && sx >= 0 && sx < w)
                                s += wt[(size_t)o * c_in * 9 + i * 9 + k] *
                                     x[(b * (size_t)c_in + i) * hw + (size_t)sy * w + sx];
                        }
                    y[(b * (size_t)c_out + o) * hw + (size_t)py * w + px] = s;
                }
}

// ---- 2x2 max-pooling: windows rows 2i, 2i+1 and columns 2j, 2j+1 (a last odd row or column
// is left out, as PyTorch's floor) ----

// Shared by gather and scatter: X [n, c*h*w] (positions) and the other operand's shape.
static ad_var record_pool(ad_tape *t, ad_op op, const char *name, ad_var A, ad_var X, int c, int h,
                          int w) {
    ad_var in[2] = {A, X};
    if (!ad_check_args(t, name, 2, in) || !imk_check_images(t, name, "position input", X, c, h, w))
        return AD_NONE;
    int n = ad_shape_fast(t, X).rows, small = c * (h / 2) * (w / 2), big = c * h * w;
    ad_shape sa = ad_shape_fast(t, A), want = ad_mat_shape(n, op == OP_POOL_GATHER ? big : small);
    if (!ad_shape_eq(sa, want)) {
        char a[32], b[32];
        ad_fail(t, AD_ESHAPE, "%s: operand %s is not %s", name, ad_shape_str(sa, a), ad_shape_str(want, b));
        return AD_NONE;
    }
    ad_node *p = ad_push(t, op, ad_mat_shape(n, op == OP_POOL_GATHER ? small : big), A, X);
    if (!p) return AD_NONE;
    p->i0 = h, p->i1 = w;
    return ad_commit(t, p);
}

// ---- pool_gather: A, X [n, c*h*w] -> [n, c*(h/2)*(w/2)], A at the argmax of X's windows ----

ad_var ad_maxpool2_gather(ad_tape *t, ad_var A, ad_var X, int c, int h, int w) {
    return record_pool(t, OP_POOL_GATHER, "pool_gather", A, X, c, h, w);
}
ad_var ad_maxpool2(ad_tape *t, ad_var X, int c, int h, int w) {
    return ad_maxpool2_gather(t, X, X, c, h, w);
}
// max-pool(ReLU(X)) = ReLU(max-pool(X)): the ReLU is monotone, so it keeps each window's first
// maximum where that maximum is positive, and where it is not both give 0 with a zero gradient.
ad_var ad_relu_maxpool2(ad_tape *t, ad_var X, int c, int h, int w) {
    return ad_relu(t, ad_maxpool2(t, X, c, h, w));
}
static ad_status fwd_pool_gather(ad_tape *t, ad_node *nd) {
    const ad_node *A = &t->nodes[nd->a], *X = &t->nodes[nd->b];
    int h = nd->i0, w = nd->i1;
    imk_pool_gather(A->val, X->val, X->rows, X->cols / (h * w), h, w, t->threads, nd->val);
    return AD_OK;
}
static void rev_pool_gather(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    ad_var X = ad_input(t, y, 1);
    int c = t->nodes[n->b].cols / (n->i0 * n->i1);
    if (need[0]) gin[0] = ad_maxpool2_scatter(t, g, X, c, n->i0, n->i1);
}
AD_DEF(pool_gather, 2, fwd_pool_gather, rev_pool_gather);

// ---- pool_scatter: G [n, c*(h/2)*(w/2)], X [n, c*h*w] -> [n, c*h*w], G at the argmaxes ----

ad_var ad_maxpool2_scatter(ad_tape *t, ad_var G, ad_var X, int c, int h, int w) {
    return record_pool(t, OP_POOL_SCATTER, "pool_scatter", G, X, c, h, w);
}
static ad_status fwd_pool_scatter(ad_tape *t, ad_node *nd) {
    const ad_node *G = &t->nodes[nd->a], *X = &t->nodes[nd->b];
    int h = nd->i0, w = nd->i1;
    imk_pool_scatter(G->val, X->val, X->rows, X->cols / (h * w), h, w, t->threads, nd->val);
    return AD_OK;
}
static void rev_pool_scatter(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    ad_var X = ad_input(t, y, 1);
    int c = n->cols / (n->i0 * n->i1);
    if (need[0]) gin[0] = ad_maxpool2_gather(t, g, X, c, n->i0, n->i1);
}
AD_DEF(pool_scatter, 2, fwd_pool_scatter, rev_pool_scatter);

// ---- per-channel ops: X [n, c*k] holds c channels of k entries per image (k = h*w) ----
// Batch normalization is Z = chan_norm(X) scaled and shifted per channel (existing ops). With N
// = n*k entries per channel, mean m, r = 1/sqrt(biased variance + eps) and Z = (X - m) r, the
// Jacobian of Z is r P_Z, where P_Z(G) = G - mean(G) - Z mean(G Z) per channel (symmetric), so
//   adjoint of chan_norm:  r P_Z(G)                        (chan_proj, times chan_rstd)
//   adjoint of chan_rstd:  -Z h r^2 / N                    (h [c] the incoming adjoint)
//   adjoints of chan_proj(G, Z) with incoming H:  P_Z(H) for G, and
//                          -(H mean(G Z) + G mean(H Z)) for Z
// each per channel, the means and broadcasts by the compositions below: every rule is tape ops.

// v [c] -> the row [c*k] that holds v's entry c over channel c's entries (broadcasts over images).
ad_var imk_channel_row(ad_tape *t, ad_var v, int c, int k) {
    ad_var col = ad_reshape(t, v, ad_mat_shape(c, 1));
    return ad_reshape(t, ad_expand(t, col, ad_mat_shape(c, k)), ad_vec_shape(c * k));
}
// G [n, c*k] times v[ch] on channel ch (v [c]): chan_affine with zero shifts, one threaded pass
// (a product with a broadcast row is a generic elementwise op).
ad_var imk_channel_scale(ad_tape *t, ad_var G, ad_var v, int c) {
    return ad_channel_affine(t, G, ad_concat(t, v, ad_fill(t, ad_vec_shape(c), 0)), c);
}
// X [n, c*k] -> [c]: each channel's mean over images and entries.
ad_var imk_channel_mean(ad_tape *t, ad_var X, int c, int k) {
    int n = ad_shape_of(t, X).rows;
    ad_var per_entry = ad_reshape(t, ad_sum_rows(t, X), ad_mat_shape(c, k));
    return ad_scale(t, ad_sum_cols(t, per_entry), 1.0 / ((double)n * k));
}

// X [n, c*k] with n >= 1, c >= 1 dividing the columns; eps (when asked) finite and > 0.
static bool check_channels(ad_tape *t, const char *op, ad_var X, int c, const double *eps) {
    ad_shape s = ad_shape_fast(t, X);
    if (c < 1 || s.rank != 2 || s.rows < 1 || s.cols % c || s.cols == 0) {
        char b[32];
        ad_fail(t, c < 1 ? AD_EARG : AD_ESHAPE, "%s: %s is not [n >= 1, c*k] with c = %d channels",
                op, ad_shape_str(s, b), c);
        return false;
    }
    if (eps && !(*eps > 0 && *eps < 1e300)) {
        ad_fail(t, AD_EARG, "%s: eps = %g is not finite and > 0", op, *eps);
        return false;
    }
    return true;
}

// Per-channel means and r of X [n, c*k] in a new [2c] (means, then r; the caller frees it);
// NULL (error recorded) when there is no memory.
static double *channel_stats(ad_tape *t, const char *op, const ad_node *X, int c, double eps) {
    double *mr = malloc((size_t)c * 2 * sizeof *mr);
    if (mr && imk_channel_stats(X->val, X->rows, c, X->cols / c, eps, t->threads, mr, mr + c)) return mr;
    free(mr);
    ad_fail(t, AD_ENOMEM, "%s: no memory for the statistics of %d channels", op, c);
    return NULL;
}

static ad_var record_channels(ad_tape *t, ad_op op, ad_shape s, ad_var a, ad_var b, int c, double eps) {
    ad_node *p = ad_push(t, op, s, a, b);
    if (!p) return AD_NONE;
    p->i0 = c, p->p0 = eps;
    return ad_commit(t, p);
}

// ---- chan_norm: X [n, c*k] -> Z, each channel less its mean, times r ----

ad_var ad_channel_norm(ad_tape *t, ad_var X, int c, double eps) {
    if (!ad_check_args(t, "chan_norm", 1, &X) || !check_channels(t, "chan_norm", X, c, &eps))
        return AD_NONE;
    return record_channels(t, OP_CHAN_NORM, ad_shape_fast(t, X), X, 0, c, eps);
}
static ad_status fwd_chan_norm(ad_tape *t, ad_node *nd) {
    const ad_node *X = &t->nodes[nd->a];
    int c = nd->i0;
    double *mr = channel_stats(t, "chan_norm", X, c, nd->p0);
    if (!mr) return AD_ENOMEM;
    imk_channel_normalize(X->val, X->rows, c, X->cols / c, mr, mr + c, t->threads, nd->val);
    free(mr);
    return AD_OK;
}
static void rev_chan_norm(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_node *n = ad_node_at(t, y);
    gin[0] = ad_channel_norm_adj(t, g, ad_input(t, y, 0), n->i0, n->p0);
}
AD_DEF(chan_norm, 1, fwd_chan_norm, rev_chan_norm);

// ---- chan_rstd: X [n, c*k] -> r [c] ----

ad_var ad_channel_rstd(ad_tape *t, ad_var X, int c, double eps) {
    if (!ad_check_args(t, "chan_rstd", 1, &X) || !check_channels(t, "chan_rstd", X, c, &eps))
        return AD_NONE;
    return record_channels(t, OP_CHAN_RSTD, ad_vec_shape(c), X, 0, c, eps);
}
static ad_status fwd_chan_rstd(ad_tape *t, ad_node *nd) {
    const ad_node *X = &t->nodes[nd->a];
    int c = nd->i0;
    double *mr = channel_stats(t, "chan_rstd", X, c, nd->p0);
    if (!mr) return AD_ENOMEM;
    memcpy(nd->val, mr + c, (size_t)c * sizeof *mr);
    free(mr);
    return AD_OK;
}
static void rev_chan_rstd(ad_tape *t, ad_var y, ad_var h, const bool need[2], ad_var gin[2]) {
    (void)need;
    // the node's fields into locals first: recording may move the node array
    const ad_node *n = ad_node_at(t, y), *Xn = &t->nodes[n->a];
    int c = n->i0, k = Xn->cols / c;
    double eps = n->p0, entries = (double)Xn->rows * k;
    ad_var X = ad_input(t, y, 0);
    ad_var s = ad_scale(t, ad_mul(t, h, ad_square(t, y)), -1.0 / entries);
    gin[0] = imk_channel_scale(t, ad_channel_norm(t, X, c, eps), s, c);
}
AD_DEF(chan_rstd, 1, fwd_chan_rstd, rev_chan_rstd);

// ---- chan_proj: G, Z [n, c*k] -> G - mean(G) - Z mean(G Z), per channel ----

// G and Z live, Z [n, c*k] (n >= 1) and G of Z's shape: the operands of chan_proj and chan_sums.
static bool check_pair(ad_tape *t, const char *op, ad_var G, ad_var Z, int c) {
    ad_var in[2] = {G, Z};
    if (!ad_check_args(t, op, 2, in) || !check_channels(t, op, Z, c, NULL)) return false;
    ad_shape sg = ad_shape_fast(t, G), sz = ad_shape_fast(t, Z);
    if (!ad_shape_eq(sg, sz)) {
        char a[32], b[32];
        ad_fail(t, AD_ESHAPE, "%s: shapes %s and %s differ", op, ad_shape_str(sg, a), ad_shape_str(sz, b));
        return false;
    }
    return true;
}

ad_var ad_channel_proj(ad_tape *t, ad_var G, ad_var Z, int c) {
    if (!check_pair(t, "chan_proj", G, Z, c)) return AD_NONE;
    return record_channels(t, OP_CHAN_PROJ, ad_shape_fast(t, Z), G, Z, c, 0);
}
static ad_status fwd_chan_proj(ad_tape *t, ad_node *nd) {
    const ad_node *G = &t->nodes[nd->a], *Z = &t->nodes[nd->b];
    int c = nd->i0;
    if (imk_channel_proj(G->val, Z->val, Z->rows, c, Z->cols / c, t->threads, nd->val)) return AD_OK;
    ad_fail(t, AD_ENOMEM, "chan_proj: no memory for per-image sums");
    return AD_ENOMEM;
}
// Minus the adjoint in Z of chan_proj(G, Z) with incoming H: H mean(G Z) + G mean(H Z).
static ad_var proj_z_adjoint_neg(ad_tape *t, ad_var G, ad_var Z, ad_var H, int c, int k) {
    ad_var mgz = imk_channel_row(t, imk_channel_mean(t, ad_mul(t, G, Z), c, k), c, k);
    ad_var mhz = imk_channel_row(t, imk_channel_mean(t, ad_mul(t, H, Z), c, k), c, k);
    return ad_add(t, ad_mul(t, H, mgz), ad_mul(t, G, mhz));
}
static void rev_chan_proj(ad_tape *t, ad_var y, ad_var h, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int c = n->i0, k = n->cols / c;
    ad_var G = ad_input(t, y, 0), Z = ad_input(t, y, 1);
    if (need[0]) gin[0] = ad_channel_proj(t, h, Z, c);
    if (need[1]) gin[1] = ad_negated(proj_z_adjoint_neg(t, G, Z, h, c, k));
}
AD_DEF(chan_proj, 2, fwd_chan_proj, rev_chan_proj);

// ---- chan_norm_adj: G, X [n, c*k] -> r P_Z(G), Z = chan_norm(X), r = chan_rstd(X) ----
// chan_norm's adjoint in one op: Z is made on the fly from X and never stored, and the
// statistics, the sums and the product with r are one pass each (chan_rstd, chan_proj and a
// scaling make three nodes and twice the passes). Linear and symmetric in G, so its adjoint in
// G is itself; in X it is chan_proj's adjoint in Z (incoming r H) and chan_rstd's in r
// (incoming the per-channel sums of H P_Z(G)), each taken back to X.

ad_var ad_channel_norm_adj(ad_tape *t, ad_var G, ad_var X, int c, double eps) {
    if (!check_pair(t, "chan_norm_adj", G, X, c) || !check_channels(t, "chan_norm_adj", X, c, &eps))
        return AD_NONE;
    return record_channels(t, OP_CHAN_NORM_ADJ, ad_shape_fast(t, X), G, X, c, eps);
}
static ad_status fwd_chan_norm_adj(ad_tape *t, ad_node *nd) {
    const ad_node *G = &t->nodes[nd->a], *X = &t->nodes[nd->b];
    int c = nd->i0;
    if (imk_channel_norm_adj(G->val, X->val, X->rows, c, X->cols / c, nd->p0, t->threads, nd->val))
        return AD_OK;
    ad_fail(t, AD_ENOMEM, "chan_norm_adj: no memory for per-image sums");
    return AD_ENOMEM;
}
static void rev_chan_norm_adj(ad_tape *t, ad_var y, ad_var h, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int c = n->i0, k = n->cols / c;
    double eps = n->p0, entries = (double)n->rows * k;
    ad_var G = ad_input(t, y, 0), X = ad_input(t, y, 1);
    if (need[0]) gin[0] = ad_channel_norm_adj(t, h, X, c, eps);
    if (need[1]) {
        ad_var Z = ad_channel_norm(t, X, c, eps), r = ad_channel_rstd(t, X, c, eps);
        ad_var dz_neg = proj_z_adjoint_neg(t, G, Z, imk_channel_scale(t, h, r, c), c, k);
        ad_var dr = ad_slice(t, ad_channel_sums(t, h, ad_channel_proj(t, G, Z, c), c), 0, c);
        ad_var s = ad_scale(t, ad_mul(t, dr, ad_square(t, r)), -1.0 / entries); // chan_rstd's rule
        gin[1] = ad_sub(t, imk_channel_scale(t, Z, s, c), ad_channel_norm_adj(t, dz_neg, X, c, eps));
    }
}
AD_DEF(chan_norm_adj, 2, fwd_chan_norm_adj, rev_chan_norm_adj);

// ---- chan_affine: Z [n, c*k], P [2c] -> Z times P[ch] plus P[c + ch] on channel ch ----
// Batch norm's scale and shift in one pass (mul and add with a per-channel row make two, and
// their adjoints three more). Its adjoint in P is chan_sums, whose adjoint in G is chan_affine.

bool imk_check_params(ad_tape *t, const char *op, ad_var P, int c) {
    ad_shape s = ad_shape_fast(t, P);
    if (s.rank != 1 || s.cols != 2 * c) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "%s: %s is not [2c] = [%d] (scales, then shifts)", op, ad_shape_str(s, b), 2 * c);
        return false;
    }
    return true;
}

ad_var ad_channel_affine(ad_tape *t, ad_var Z, ad_var P, int c) {
    ad_var in[2] = {Z, P};
    if (!ad_check_args(t, "chan_affine", 2, in) || !check_channels(t, "chan_affine", Z, c, NULL) ||
        !imk_check_params(t, "chan_affine", P, c))
        return AD_NONE;
    return record_channels(t, OP_CHAN_AFFINE, ad_shape_fast(t, Z), Z, P, c, 0);
}
static ad_status fwd_chan_affine(ad_tape *t, ad_node *nd) {
    const ad_node *Z = &t->nodes[nd->a], *P = &t->nodes[nd->b];
    int c = nd->i0;
    imk_channel_affine(Z->val, Z->rows, c, Z->cols / c, P->val, P->val + c, t->threads, nd->val);
    return AD_OK;
}
// G times the first c entries of v [2c] (the scales) on each channel.
static ad_var scale_channels(ad_tape *t, ad_var G, ad_var v, int c) {
    return imk_channel_scale(t, G, ad_slice(t, v, 0, c), c);
}
static void rev_chan_affine(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int c = n->i0;
    ad_var Z = ad_input(t, y, 0), P = ad_input(t, y, 1);
    if (need[0]) gin[0] = scale_channels(t, g, P, c);
    if (need[1]) gin[1] = ad_channel_sums(t, g, Z, c);
}
AD_DEF(chan_affine, 2, fwd_chan_affine, rev_chan_affine);

// ---- chan_sums: G, Z [n, c*k] -> [2c]: per channel the sum of G Z, then the sum of G ----

ad_var ad_channel_sums(ad_tape *t, ad_var G, ad_var Z, int c) {
    if (!check_pair(t, "chan_sums", G, Z, c)) return AD_NONE;
    return record_channels(t, OP_CHAN_SUMS, ad_vec_shape(2 * c), G, Z, c, 0);
}
static ad_status fwd_chan_sums(ad_tape *t, ad_node *nd) {
    const ad_node *G = &t->nodes[nd->a], *Z = &t->nodes[nd->b];
    int c = nd->i0;
    if (imk_channel_sums(G->val, Z->val, Z->rows, c, Z->cols / c, t->threads, nd->val, nd->val + c))
        return AD_OK;
    ad_fail(t, AD_ENOMEM, "chan_sums: no memory for per-image sums");
    return AD_ENOMEM;
}
static void rev_chan_sums(ad_tape *t, ad_var y, ad_var h, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int c = n->i0;
    ad_var G = ad_input(t, y, 0), Z = ad_input(t, y, 1);
    if (need[0]) gin[0] = ad_channel_affine(t, Z, h, c);
    if (need[1]) gin[1] = scale_channels(t, G, h, c);
}
AD_DEF(chan_sums, 2, fwd_chan_sums, rev_chan_sums);

// ---- compositions: per-channel bias and batch normalization ----

static bool check_channel_vec(ad_tape *t, const char *op, const char *what, ad_var v, int c) {
    ad_shape s = ad_shape_fast(t, v);
    if (s.rank != 1 || s.cols != c) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "%s: %s %s is not a vector [%d] (one per channel)", op, what,
                ad_shape_str(s, b), c);
        return false;
    }
    return true;
}

ad_var ad_channel_bias(ad_tape *t, ad_var X, ad_var b, int c, int h, int w) {
    ad_var in[2] = {X, b};
    if (!ad_check_args(t, "channel_bias", 2, in) ||
        !imk_check_images(t, "channel_bias", "input", X, c, h, w) ||
        !check_channel_vec(t, "channel_bias", "bias", b, c))
        return AD_NONE;
    return ad_add(t, X, imk_channel_row(t, b, c, h * w));
}

ad_var ad_batchnorm(ad_tape *t, ad_var X, ad_var gamma, ad_var beta, int c, int h, int w, double eps) {
    ad_var in[3] = {X, gamma, beta};
    if (!ad_check_args(t, "batchnorm", 3, in) || !imk_check_images(t, "batchnorm", "input", X, c, h, w) ||
        !check_channel_vec(t, "batchnorm", "scale", gamma, c) ||
        !check_channel_vec(t, "batchnorm", "shift", beta, c))
        return AD_NONE;
    return ad_channel_affine(t, ad_channel_norm(t, X, c, eps), ad_concat(t, gamma, beta), c);
}
