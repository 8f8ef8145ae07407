// Every op against finite differences: one row per op (and per interesting shape), first
// derivatives through ad_check_grad, second derivatives through ad_check_hvp, with incoming
// adjoints that are not all ones, and forward derivatives (the op's own J v) through ad_check_jvp. A case fails if an op has no row. Third order spot checks.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S0 {0, 1, 1}
#define V(n) {1, 1, n}
#define M(r, c) {2, r, c}

static const int32_t idx5[] = {4, 0, 4};      // rows of a 5-row operand, one repeated
static const int32_t labels3[] = {2, 0, 3};   // for [3, 4] logits
static const int32_t label1[] = {1};
static const int32_t labels3x3[] = {2, 0, 1};

typedef ad_var (*op_fn)(ad_tape *t, const ad_var *x);

typedef struct {
    const char *op;         // the op this row checks (ad_op_name)
    op_fn fn;
    int n_in;
    ad_shape shape[2];
    double lo, hi;          // inputs drawn uniformly from [lo, hi] ...
    double kink[2];         // ... at least 0.01 away from these (NAN: none)
    int separate;           // binary: keep |a_i - b_i| >= 0.01 (min, max, cmp ties)
} row;

// clang-format off
static ad_var r_add(ad_tape *t, const ad_var *x) { return ad_add(t, x[0], x[1]); }
static ad_var r_sub(ad_tape *t, const ad_var *x) { return ad_sub(t, x[0], x[1]); }
static ad_var r_mul(ad_tape *t, const ad_var *x) { return ad_mul(t, x[0], x[1]); }
static ad_var r_axpy(ad_tape *t, const ad_var *x) { return ad_axpy(t, x[0], -0.7, x[1]); }
static ad_var r_div(ad_tape *t, const ad_var *x) { return ad_div(t, x[0], ad_shift(t, ad_abs(t, x[1]), 0.5)); }
static ad_var r_min(ad_tape *t, const ad_var *x) { return ad_min(t, x[0], x[1]); }
static ad_var r_max(ad_tape *t, const ad_var *x) { return ad_max(t, x[0], x[1]); }
static ad_var r_neg(ad_tape *t, const ad_var *x) { return ad_neg(t, x[0]); }
static ad_var r_scale(ad_tape *t, const ad_var *x) { return ad_scale(t, x[0], -1.7); }
static ad_var r_shift(ad_tape *t, const ad_var *x) { return ad_shift(t, x[0], 0.3); }
static ad_var r_pow3(ad_tape *t, const ad_var *x) { return ad_pow(t, x[0], 3); }
static ad_var r_pow25(ad_tape *t, const ad_var *x) { return ad_pow(t, x[0], 2.5); }
static ad_var r_powm15(ad_tape *t, const ad_var *x) { return ad_pow(t, x[0], -1.5); }
static ad_var r_powm2(ad_tape *t, const ad_var *x) { return ad_pow(t, x[0], -2); }
static ad_var r_abs(ad_tape *t, const ad_var *x) { return ad_abs(t, x[0]); }
static ad_var r_sqrt(ad_tape *t, const ad_var *x) { return ad_sqrt(t, x[0]); }
static ad_var r_square(ad_tape *t, const ad_var *x) { return ad_square(t, x[0]); }
static ad_var r_exp(ad_tape *t, const ad_var *x) { return ad_exp(t, x[0]); }
static ad_var r_log(ad_tape *t, const ad_var *x) { return ad_log(t, x[0]); }
static ad_var r_sin(ad_tape *t, const ad_var *x) { return ad_sin(t, x[0]); }
static ad_var r_cos(ad_tape *t, const ad_var *x) { return ad_cos(t, x[0]); }
static ad_var r_tanh(ad_tape *t, const ad_var *x) { return ad_tanh(t, x[0]); }
static ad_var r_sigmoid(ad_tape *t, const ad_var *x) { return ad_sigmoid(t, x[0]); }
static ad_var r_softplus(ad_tape *t, const ad_var *x) { return ad_softplus(t, x[0]); }
static ad_var r_relu(ad_tape *t, const ad_var *x) { return ad_relu(t, x[0]); }
static ad_var r_relu_mask(ad_tape *t, const ad_var *x) { return ad_relu_mask(t, x[0], x[1]); }
static ad_var r_clamp(ad_tape *t, const ad_var *x) { return ad_clamp(t, x[0], -0.5, 0.7); }
// the masks are multiplied by the input so the row has a non-zero derivative to check
static ad_var r_sign(ad_tape *t, const ad_var *x) { return ad_mul(t, x[0], ad_sign(t, x[0])); }
static ad_var r_step(ad_tape *t, const ad_var *x) { return ad_mul(t, x[0], ad_step(t, x[0])); }
static ad_var r_inbox(ad_tape *t, const ad_var *x) { return ad_mul(t, x[0], ad_inbox(t, x[0], -0.5, 0.7)); }
static ad_var r_cmp(ad_tape *t, const ad_var *x) { return ad_mul(t, ad_mul(t, x[0], x[1]), ad_cmp(t, x[0], x[1])); }
static ad_var r_onehot(ad_tape *t, const ad_var *x) { return ad_mul(t, x[0], ad_onehot(t, 3, 4, labels3)); }
static ad_var r_sum(ad_tape *t, const ad_var *x) { return ad_sum(t, x[0]); }
static ad_var r_mean(ad_tape *t, const ad_var *x) { return ad_mean(t, x[0]); }
static ad_var r_sum_rows(ad_tape *t, const ad_var *x) { return ad_sum_rows(t, x[0]); }
static ad_var r_sum_cols(ad_tape *t, const ad_var *x) { return ad_sum_cols(t, x[0]); }
static ad_var r_expand(ad_tape *t, const ad_var *x) { return ad_expand(t, x[0], (ad_shape)M(3, 4)); }
static ad_var r_expand_col(ad_tape *t, const ad_var *x) { return ad_expand(t, x[0], (ad_shape)M(3, 4)); }
static ad_var r_max_all(ad_tape *t, const ad_var *x) { return ad_max_all(t, x[0]); }
static ad_var r_dot(ad_tape *t, const ad_var *x) { return ad_dot(t, x[0], x[1]); }
static ad_var r_matvec(ad_tape *t, const ad_var *x) { return ad_matvec(t, x[0], x[1], 0); }
static ad_var r_matvec_t(ad_tape *t, const ad_var *x) { return ad_matvec(t, x[0], x[1], 1); }
static ad_var r_matmul(ad_tape *t, const ad_var *x) { return ad_matmul(t, x[0], x[1], 0, 0); }
static ad_var r_matmul_ta(ad_tape *t, const ad_var *x) { return ad_matmul(t, x[0], x[1], 1, 0); }
static ad_var r_matmul_tb(ad_tape *t, const ad_var *x) { return ad_matmul(t, x[0], x[1], 0, 1); }
static ad_var r_matmul_tt(ad_tape *t, const ad_var *x) { return ad_matmul(t, x[0], x[1], 1, 1); }
static ad_var r_outer(ad_tape *t, const ad_var *x) { return ad_outer(t, x[0], x[1]); }
// X [5, 4] as codes into a table whose entries are not all of one sign or scale
static const uint8_t coded_bytes[20] = {0, 255, 3, 7, 128, 9, 200, 1, 42, 42, 17, 250, 64, 5, 99, 31, 0, 180, 77, 2};
static double coded_table[256];
static const ad_coded *coded_x(void) {
    static ad_coded X = {5, 4, coded_bytes, coded_table, NULL, NULL, NULL};
    for (int c = 0; c < 256; c++) coded_table[c] = (c - 100) / 61.0;
    return &X;
}
static ad_var r_matmul_coded(ad_tape *t, const ad_var *x) { return ad_matmul_coded(t, coded_x(), x[0], 0); }
static ad_var r_matmul_coded_t(ad_tape *t, const ad_var *x) { return ad_matmul_coded(t, coded_x(), x[0], 1); }
static const int32_t labels5[] = {2, 0, 1, 2, 1}; // for X [5, 4] W [4, 3]
static ad_var r_softmax_coded(ad_tape *t, const ad_var *x) { return ad_softmax_coded(t, coded_x(), x[0]); }
static ad_var r_xent_coded(ad_tape *t, const ad_var *x) { return ad_xent_coded(t, coded_x(), x[0], labels5); }
static ad_var r_symv(ad_tape *t, const ad_var *x) { return ad_symv(t, x[0], x[1]); }
static ad_var r_quadform(ad_tape *t, const ad_var *x) { return ad_quadform(t, x[0], x[1]); }
static ad_var r_reshape(ad_tape *t, const ad_var *x) { return ad_sin(t, ad_reshape(t, x[0], (ad_shape)M(2, 6))); }
static ad_var r_slice(ad_tape *t, const ad_var *x) { return ad_slice(t, x[0], 2, 3); }
static ad_var r_pad(ad_tape *t, const ad_var *x) { return ad_pad(t, x[0], 2, 7); }
static ad_var r_concat(ad_tape *t, const ad_var *x) { return ad_concat(t, x[0], x[1]); }
static ad_var r_concat_n(ad_tape *t, const ad_var *x) {
    ad_var p[3] = {x[1], x[0], x[1]};
    return ad_concat_n(t, 3, p);
}
static ad_var r_take_rows(ad_tape *t, const ad_var *x) { return ad_take_rows(t, x[0], 3, idx5); }
static ad_var r_take_vec(ad_tape *t, const ad_var *x) { return ad_take_rows(t, x[0], 3, idx5); }
static ad_var r_put_rows(ad_tape *t, const ad_var *x) { return ad_put_rows(t, x[0], 5, 3, idx5); }
static ad_var r_logsumexp(ad_tape *t, const ad_var *x) { return ad_logsumexp(t, x[0]); }
static ad_var r_log_softmax(ad_tape *t, const ad_var *x) { return ad_log_softmax(t, x[0]); }
static ad_var r_softmax(ad_tape *t, const ad_var *x) { return ad_softmax(t, x[0]); }
static ad_var r_xent(ad_tape *t, const ad_var *x) { return ad_xent(t, x[0], labels3); }
static ad_var r_xent1(ad_tape *t, const ad_var *x) { return ad_xent(t, x[0], label1); }
static ad_var r_sqnorm(ad_tape *t, const ad_var *x) { return ad_sqnorm(t, x[0]); }
static ad_var r_normp3(ad_tape *t, const ad_var *x) { return ad_normp(t, x[0], 3); }
static ad_var r_normp15(ad_tape *t, const ad_var *x) { return ad_normp(t, x[0], 1.5); }
static ad_var r_normp2(ad_tape *t, const ad_var *x) { return ad_normp(t, x[0], 2); }
static ad_var r_powz(ad_tape *t, const ad_var *x) { return ad_powz(t, x[0], 0.7); }
static ad_var r_lq(ad_tape *t, const ad_var *x) { return ad_lq_smooth(t, x[0], 0.5, 0.1); }
// images: 2 images of 2 channels of 3 x 2 pixels, 2 output channels
static ad_var r_conv2d(ad_tape *t, const ad_var *x) { return ad_conv2d(t, x[0], x[1], 2, 3, 2, 2); }
static ad_var r_conv2d_wgrad(ad_tape *t, const ad_var *x) { return ad_conv2d_wgrad(t, x[0], x[1], 2, 3, 2, 2); }
static ad_var r_conv_flip(ad_tape *t, const ad_var *x) { return ad_conv_flip(t, x[0], 3, 2); }
static ad_var r_maxpool2(ad_tape *t, const ad_var *x) { return ad_maxpool2(t, x[0], 2, 4, 3); }
static ad_var r_pool_gather(ad_tape *t, const ad_var *x) { return ad_maxpool2_gather(t, x[0], x[1], 2, 4, 3); }
static ad_var r_pool_scatter(ad_tape *t, const ad_var *x) { return ad_maxpool2_scatter(t, x[0], x[1], 2, 4, 3); }
// batch norm of 3 images of 2 channels of 2 x 2 pixels; x[1] is gamma and beta
static ad_var r_batchnorm(ad_tape *t, const ad_var *x) {
    return ad_batchnorm(t, x[0], ad_slice(t, x[1], 0, 2), ad_slice(t, x[1], 2, 2), 2, 2, 2, 1e-3);
}
static ad_var r_chan_rstd(ad_tape *t, const ad_var *x) { return ad_channel_rstd(t, x[0], 2, 0.3); }
static ad_var r_chan_proj(ad_tape *t, const ad_var *x) { return ad_channel_proj(t, x[0], x[1], 2); }
static ad_var r_chan_affine(ad_tape *t, const ad_var *x) { return ad_channel_affine(t, x[0], x[1], 2); }
static ad_var r_chan_sums(ad_tape *t, const ad_var *x) { return ad_channel_sums(t, x[0], x[1], 2); }
static ad_var r_chan_norm_adj(ad_tape *t, const ad_var *x) { return ad_channel_norm_adj(t, x[0], x[1], 2, 0.3); }
// ConvNet block: 2 images of 2 channels of 3 x 4 (an odd row left out by the pool), P [4]; the
// adjoints' first inputs: the pooled adjoint [2 * 2 * 1 * 2] then P [4] (then S, m, r [8])
static ad_var r_bn_pool(ad_tape *t, const ad_var *x) { return ad_bn_relu_pool(t, x[0], x[1], 2, 3, 4, 0.3); }
// the same block with its conv: 2 images of 2 channels of 3 x 4 to 2 channels, WP = [W [2, 18], P [4]] [40];
// the adjoint's first input: the pooled adjoint [8] then WP
static ad_var r_conv_bn_pool(ad_tape *t, const ad_var *x) { return ad_conv_bn_relu_pool(t, x[0], x[1], 2, 3, 4, 2, 0.3); }
static ad_var r_conv_bn_pool_dwp(ad_tape *t, const ad_var *x) {
    return ad_conv_bn_relu_pool_dwp(t, x[0], x[1], 2, 3, 4, 2, 0.3);
}
// one input channel to 4 (the AVX-512 kernel where the CPU has it): WP [44]; the adjoint's GWP [16 + 44]
static ad_var r_conv_bn_pool4(ad_tape *t, const ad_var *x) { return ad_conv_bn_relu_pool(t, x[0], x[1], 1, 3, 4, 4, 0.3); }
static ad_var r_conv_bn_pool4_dwp(ad_tape *t, const ad_var *x) {
    return ad_conv_bn_relu_pool_dwp(t, x[0], x[1], 1, 3, 4, 4, 0.3);
}
static ad_var r_bn_pool_dp(ad_tape *t, const ad_var *x) { return ad_bn_relu_pool_dp(t, x[0], x[1], 2, 3, 4, 0.3); }
static ad_var r_bn_pool_dy(ad_tape *t, const ad_var *x) { return ad_bn_relu_pool_dy(t, x[0], x[1], 2, 3, 4, 0.3); }
static ad_var r_channel_bias(ad_tape *t, const ad_var *x) { return ad_channel_bias(t, x[0], x[1], 2, 2, 2); }
// a caller's linear map [3] -> [2], y = A x, with its transpose
static const double lin_A[2][3] = {{0.5, -1.25, 2}, {1.5, 0.75, -0.5}};
static int lin_apply(const ad_linmap *L, const double *x, double *y, char *err) {
    (void)err;
    int tr = L->in.cols == 2;
    for (int i = 0; i < L->out.cols; i++) {
        y[i] = 0;
        for (int j = 0; j < L->in.cols; j++) y[i] += (tr ? lin_A[j][i] : lin_A[i][j]) * x[j];
    }
    return 0;
}
static const ad_linmap lin_T;
static const ad_linmap lin_L = {{1, 1, 3}, {1, 1, 2}, lin_apply, &lin_T, NULL};
static const ad_linmap lin_T = {{1, 1, 2}, {1, 1, 3}, lin_apply, &lin_L, NULL};
static ad_var r_linear(ad_tape *t, const ad_var *x) { return ad_linear(t, &lin_L, x[0]); }

#define NK {NAN, NAN}
static const row rows[] = {
    {"add", r_add, 2, {M(3, 4), M(3, 4)}, -2, 2, NK, 0},
    {"add", r_add, 2, {M(3, 4), V(4)}, -2, 2, NK, 0},       // bias: a row added to every row
    {"add", r_add, 2, {S0, V(3)}, -2, 2, NK, 0},            // scalar with a vector
    {"sub", r_sub, 2, {M(2, 3), M(2, 1)}, -2, 2, NK, 0},    // a column to every column
    {"axpy", r_axpy, 2, {V(5), V(5)}, -2, 2, NK, 0},
    {"axpy", r_axpy, 2, {M(2, 3), S0}, -2, 2, NK, 0},      // a scalar step along every entry
    {"mul", r_mul, 2, {M(3, 4), M(3, 4)}, -2, 2, NK, 0},
    {"mul", r_mul, 2, {M(3, 4), S0}, -2, 2, NK, 0},
    {"div", r_div, 2, {M(3, 4), M(3, 4)}, -2, 2, NK, 0},
    {"div", r_div, 2, {V(4), S0}, -2, 2, NK, 0},
    {"min", r_min, 2, {V(6), V(6)}, -1, 1, NK, 1},
    {"max", r_max, 2, {V(6), V(6)}, -1, 1, NK, 1},
    {"max", r_max, 2, {M(2, 3), V(3)}, -1, 1, NK, 1},
    {"neg", r_neg, 1, {V(4)}, -2, 2, NK, 0},
    {"scale", r_scale, 1, {V(4)}, -2, 2, NK, 0},
    {"shift", r_shift, 1, {V(4)}, -2, 2, NK, 0},
    {"pow", r_pow3, 1, {V(5)}, -2, 2, NK, 0},
    {"pow", r_pow25, 1, {V(5)}, 0.5, 2, NK, 0},
    {"pow", r_powm15, 1, {V(5)}, 0.5, 2, NK, 0},
    {"pow", r_powm2, 1, {V(5)}, 0.5, 2, NK, 0},
    {"abs", r_abs, 1, {V(6)}, -2, 2, {0, NAN}, 0},
    {"sqrt", r_sqrt, 1, {V(5)}, 0.3, 3, NK, 0},
    {"square", r_square, 1, {V(5)}, -2, 2, NK, 0},
    {"exp", r_exp, 1, {M(2, 3)}, -2, 2, NK, 0},
    {"log", r_log, 1, {V(5)}, 0.3, 3, NK, 0},
    {"sin", r_sin, 1, {V(5)}, -3, 3, NK, 0},
    {"cos", r_cos, 1, {V(5)}, -3, 3, NK, 0},
    {"tanh", r_tanh, 1, {V(5)}, -2, 2, NK, 0},
    {"sigmoid", r_sigmoid, 1, {V(5)}, -4, 4, NK, 0},
    {"softplus", r_softplus, 1, {V(5)}, -4, 4, NK, 0},
    {"relu", r_relu, 1, {V(6)}, -2, 2, {0, NAN}, 0},
    {"relu_mask", r_relu_mask, 2, {M(3, 4), M(3, 4)}, -2, 2, {0, NAN}, 0},
    {"relu_mask", r_relu_mask, 2, {V(4), M(3, 4)}, -2, 2, {0, NAN}, 0}, // g broadcast to x's rows
    {"clamp", r_clamp, 1, {V(8)}, -2, 2, {-0.5, 0.7}, 0},
    {"sign", r_sign, 1, {V(6)}, -2, 2, {0, NAN}, 0},
    {"step", r_step, 1, {V(6)}, -2, 2, {0, NAN}, 0},
    {"inbox", r_inbox, 1, {V(8)}, -2, 2, {-0.5, 0.7}, 0},
    {"cmp", r_cmp, 2, {V(6), V(6)}, -1, 1, NK, 1},
    {"onehot", r_onehot, 1, {M(3, 4)}, -2, 2, NK, 0},
    {"sum_to", r_sum, 1, {M(3, 4)}, -2, 2, NK, 0},
    {"sum_to", r_mean, 1, {M(3, 4)}, -2, 2, NK, 0},
    {"sum_to", r_sum_rows, 1, {M(3, 4)}, -2, 2, NK, 0},
    {"sum_to", r_sum_cols, 1, {M(3, 4)}, -2, 2, NK, 0},
    {"expand", r_expand, 1, {V(4)}, -2, 2, NK, 0},
    {"expand", r_expand_col, 1, {M(3, 1)}, -2, 2, NK, 0},
    {"max_all", r_max_all, 1, {M(3, 4)}, -2, 2, NK, 0},
    {"argmax1h", r_max_all, 1, {V(7)}, -2, 2, NK, 0},
    {"dot", r_dot, 2, {V(5), V(5)}, -2, 2, NK, 0},
    {"matvec", r_matvec, 2, {M(3, 4), V(4)}, -2, 2, NK, 0},
    {"matvec", r_matvec_t, 2, {M(3, 4), V(3)}, -2, 2, NK, 0},
    {"matmul", r_matmul, 2, {M(3, 4), M(4, 2)}, -2, 2, NK, 0},
    {"matmul", r_matmul_ta, 2, {M(4, 3), M(4, 2)}, -2, 2, NK, 0},
    {"matmul", r_matmul_tb, 2, {M(3, 4), M(2, 4)}, -2, 2, NK, 0},
    {"matmul", r_matmul_tt, 2, {M(4, 3), M(2, 4)}, -2, 2, NK, 0},
    {"outer", r_outer, 2, {V(3), V(4)}, -2, 2, NK, 0},
    {"matmul_coded", r_matmul_coded, 1, {M(4, 3)}, -2, 2, NK, 0},
    {"matmul_coded", r_matmul_coded_t, 1, {M(5, 2)}, -2, 2, NK, 0},
    {"softmax_coded", r_softmax_coded, 1, {M(4, 3)}, -1, 1, NK, 0},
    {"xent_coded", r_xent_coded, 1, {M(4, 3)}, -1, 1, NK, 0},
    {"symv", r_symv, 2, {M(4, 4), V(4)}, -2, 2, NK, 0},        // A's lower triangle: zero gradient
    {"quadform", r_quadform, 2, {M(4, 4), V(4)}, -2, 2, NK, 0},
    {"reshape", r_reshape, 1, {M(3, 4)}, -2, 2, NK, 0},
    {"slice", r_slice, 1, {V(6)}, -2, 2, NK, 0},
    {"pad", r_pad, 1, {V(3)}, -2, 2, NK, 0},
    {"concat", r_concat, 2, {V(3), S0}, -2, 2, NK, 0},
    {"concat", r_concat_n, 2, {V(3), V(2)}, -2, 2, NK, 0},
    {"take_rows", r_take_rows, 1, {M(5, 3)}, -2, 2, NK, 0},
    {"take_rows", r_take_vec, 1, {V(5)}, -2, 2, NK, 0},
    {"put_rows", r_put_rows, 1, {M(3, 2)}, -2, 2, NK, 0},
    {"logsumexp", r_logsumexp, 1, {M(2, 3)}, -3, 3, NK, 0},
    {"log_softmax", r_log_softmax, 1, {M(3, 4)}, -3, 3, NK, 0},
    {"log_softmax", r_log_softmax, 1, {V(4)}, -3, 3, NK, 0},
    {"softmax", r_softmax, 1, {M(3, 4)}, -3, 3, NK, 0},
    {"softmax", r_softmax, 1, {V(4)}, -3, 3, NK, 0},
    {"xent", r_xent, 1, {M(3, 4)}, -3, 3, NK, 0},
    {"xent", r_xent1, 1, {V(4)}, -3, 3, NK, 0},
    {"sqnorm", r_sqnorm, 1, {M(2, 3)}, -2, 2, NK, 0},
    {"normp", r_normp3, 1, {V(5)}, -2, 2, NK, 0},
    {"normp", r_normp15, 1, {V(5)}, -2, 2, NK, 0},
    {"normp", r_normp2, 1, {V(5)}, -2, 2, NK, 0},
    {"powz", r_powz, 1, {V(5)}, 0.3, 2, NK, 0},
    {"pow", r_lq, 1, {V(5)}, -2, 2, NK, 0}, // smoothed ||v||_q^q, a composition
    {"conv2d", r_conv2d, 2, {M(2, 12), M(2, 18)}, -2, 2, NK, 0},
    {"conv2d_wgrad", r_conv2d_wgrad, 2, {M(2, 12), M(2, 12)}, -2, 2, NK, 0},
    {"conv_flip", r_conv_flip, 1, {M(2, 27)}, -2, 2, NK, 0},
    {"pool_gather", r_maxpool2, 1, {M(2, 24)}, -2, 2, NK, 0},          // odd width: a column left out
    {"pool_gather", r_pool_gather, 2, {M(2, 24), M(2, 24)}, -2, 2, NK, 0},
    {"pool_scatter", r_pool_scatter, 2, {M(2, 4), M(2, 24)}, -2, 2, NK, 0},
    {"chan_norm", r_batchnorm, 2, {M(3, 8), V(4)}, -2, 2, NK, 0},     // batch norm
    {"chan_rstd", r_chan_rstd, 1, {M(3, 8)}, -2, 2, NK, 0},
    {"chan_proj", r_chan_proj, 2, {M(3, 8), M(3, 8)}, -2, 2, NK, 0},
    {"chan_affine", r_chan_affine, 2, {M(3, 8), V(4)}, -2, 2, NK, 0},
    {"chan_sums", r_chan_sums, 2, {M(3, 8), M(3, 8)}, -2, 2, NK, 0},
    {"chan_norm_adj", r_chan_norm_adj, 2, {M(3, 8), M(3, 8)}, -2, 2, NK, 0},
    {"bn_pool", r_bn_pool, 2, {M(2, 24), V(4)}, -2, 2, NK, 0},
    {"bn_pool_dp", r_bn_pool_dp, 2, {V(12), M(2, 24)}, -2, 2, NK, 0},
    {"bn_pool_dy", r_bn_pool_dy, 2, {V(20), M(2, 24)}, -2, 2, NK, 0},
    {"conv_bn_pool", r_conv_bn_pool, 2, {M(2, 24), V(40)}, -2, 2, NK, 0},
    {"conv_bn_pool_dwp", r_conv_bn_pool_dwp, 2, {V(48), M(2, 24)}, -2, 2, NK, 0},
    {"conv_bn_pool", r_conv_bn_pool4, 2, {M(2, 12), V(44)}, -2, 2, NK, 0},
    {"conv_bn_pool_dwp", r_conv_bn_pool4_dwp, 2, {V(60), M(2, 12)}, -2, 2, NK, 0},
    {"expand", r_channel_bias, 2, {M(3, 8), V(2)}, -2, 2, NK, 0},     // per-channel bias, likewise
    {"linear", r_linear, 1, {V(3)}, -2, 2, NK, 0},                     // a map of the caller's
};
// clang-format on
enum { N_ROWS = sizeof rows / sizeof rows[0] };

// The checked function: f = <w1, y> + 1/2 <w2, y * y> with y = op(x) and fixed random weights,
// so the adjoint reaching the op is neither all ones nor constant, and f has curvature even
// when the op is linear.
typedef struct {
    const row *r;
    double w1[64], w2[64];
} ctx_t;

static ad_var wrapped(ad_tape *t, const ad_var *in, void *c) {
    const ctx_t *x = c;
    ad_var y = x->r->fn(t, in);
    ad_shape s = ad_shape_of(t, y);
    ad_var w1 = ad_const(t, s, x->w1), w2 = ad_const(t, s, x->w2);
    return ad_add(t, ad_dot(t, w1, y), ad_scale(t, ad_dot(t, w2, ad_square(t, y)), 0.5));
}

// The op's output itself, for the forward-mode check (J v of a tensor, not of f).
static ad_var raw(ad_tape *t, const ad_var *in, void *c) { return ((const ctx_t *)c)->r->fn(t, in); }

static double draw(ad_rng *g, const row *r) {
    for (;;) {
        double u = r->lo + (r->hi - r->lo) * ad_rng_uniform(g);
        bool near = false;
        for (int k = 0; k < 2; k++) near |= !isnan(r->kink[k]) && fabs(u - r->kink[k]) < 0.01;
        if (!near) return u;
    }
}

static void make_point(const row *r, uint64_t seed, double x[2][64]) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    for (int k = 0; k < r->n_in; k++)
        for (int i = 0; i < ad_shape_size(r->shape[k]); i++) x[k][i] = draw(&g, r);
    if (r->separate)
        for (int i = 0; i < ad_shape_size(r->shape[1]); i++)
            while (fabs(x[1][i] - x[0][i % ad_shape_size(r->shape[0])]) < 0.01) x[1][i] = draw(&g, r);
}

// Runs the row and its gradient once on a probe tape: the output shape (for the weights) and
// whether the op the row claims to check was recorded.
static bool probe(const row *r, double x[2][64], ad_shape *out, bool *uses_op) {
    ad_tape *t = ad_tape_new(NULL);
    ad_var in[2];
    for (int k = 0; k < r->n_in; k++) in[k] = ad_param(t, r->shape[k], x[k]);
    ad_var y = r->fn(t, in), g[2];
    *out = ad_shape_of(t, y);
    ad_grad(t, ad_sum(t, y), r->n_in, in, g, 0); // ops used by reverse rules count too
    *uses_op = false;
    for (int op = 0; op < ad_op_count(); op++)
        if (!strcmp(ad_op_name(op), r->op) && ad_tape_op_uses(t, op) > 0) *uses_op = true;
    bool ok = y && ad_tape_status(t) == AD_OK && ad_shape_size(*out) <= 64;
    ad_tape_free(t);
    return ok;
}

static void check_rows(void) {
    ad_check_params p = ad_check_default_params();
    p.rtol = 1e-6;
    p.atol = 1e-8;
    for (int i = 0; i < N_ROWS; i++) {
        const row *r = &rows[i];
        char name[96];
        double x[2][64];
        make_point(r, 1000 + (uint64_t)i, x);
        const double *pt[2] = {x[0], x[1]};
        ctx_t c = {.r = r};
        ad_shape os;
        bool uses;
        snprintf(name, sizeof name, "op %s row %d: first derivatives", r->op, i);
        TEST_CASE(name) {
            bool ok = probe(r, x, &os, &uses);
            EXPECT(ok, "the row does not evaluate");
            EXPECT(uses, "the row does not record op %s", r->op);
            ad_rng g;
            ad_rng_seed(&g, 77 + (uint64_t)i);
            for (int k = 0; k < 64; k++) c.w1[k] = ad_rng_normal(&g), c.w2[k] = ad_rng_normal(&g);
            ad_check_report rep = ad_check_grad(wrapped, &c, r->n_in, r->shape, pt, &p);
            EXPECT(rep.status == AD_OK && rep.pass, "%s", rep.msg);
        }
        snprintf(name, sizeof name, "op %s row %d: second derivatives (Hessian-vector)", r->op, i);
        TEST_CASE(name) {
            p.seed = 5 + (uint64_t)i;
            ad_check_report rep = ad_check_hvp(wrapped, &c, r->n_in, r->shape, pt, &p);
            EXPECT(rep.status == AD_OK && rep.pass, "%s", rep.msg);
        }
        snprintf(name, sizeof name, "op %s row %d: forward derivatives (jvp)", r->op, i);
        TEST_CASE(name) {
            p.seed = 9 + (uint64_t)i;
            ad_check_report rep = ad_check_jvp(raw, &c, r->n_in, r->shape, pt, &p);
            EXPECT(rep.status == AD_OK && rep.pass, "%s", rep.msg);
        }
    }
    TEST_CASE("every op has a row in the finite-difference table") {
        for (int op = 0; op < ad_op_count(); op++) {
            const char *nm = ad_op_name(op);
            // not functions of their inputs to difference: the NaN node, leaves, and detach
            // (a stop-gradient, checked by "detach stops the gradient" in test_ad_engine.c)
            if (!strcmp(nm, "error") || !strcmp(nm, "leaf") || !strcmp(nm, "detach")) continue;
            bool found = false;
            for (int i = 0; i < N_ROWS; i++) found |= !strcmp(rows[i].op, nm);
            EXPECT(found, "op %s has no finite-difference row", nm);
        }
    }
}

// ---- third order: the gradient of u^T H(x) v, checked by finite differences ----

typedef struct {
    op_fn f;
    double u[8], v[8];
} third_ctx;

static ad_var third(ad_tape *t, const ad_var *in, void *c) {
    const third_ctx *x = c;
    ad_shape s = ad_shape_of(t, in[0]);
    ad_var f = ad_sum(t, x->f(t, in));
    ad_var hv;
    ad_hvp(t, f, in[0], ad_const(t, s, x->v), &hv, AD_CREATE_GRAPH);
    return ad_dot(t, ad_const(t, s, x->u), hv);
}

static ad_var t_exp_sin(ad_tape *t, const ad_var *x) { return ad_exp(t, ad_sin(t, x[0])); }
static ad_var t_log_tanh(ad_tape *t, const ad_var *x) {
    return ad_mul(t, ad_log(t, ad_shift(t, ad_square(t, x[0]), 1)), ad_tanh(t, x[0]));
}
static ad_var t_lse_sigmoid(ad_tape *t, const ad_var *x) {
    return ad_logsumexp(t, ad_mul(t, ad_sigmoid(t, x[0]), ad_pow(t, ad_shift(t, ad_square(t, x[0]), 1), 1.5)));
}
static ad_var t_xent_matmul(ad_tape *t, const ad_var *x) {
    ad_var W = ad_reshape(t, x[0], ad_mat_shape(2, 3));
    ad_var Z = ad_matmul(t, ad_softplus(t, W), W, 1, 0); // [3, 3]
    return ad_xent(t, Z, labels3x3);
}

static void check_third_order(void) {
    struct { const char *name; op_fn f; } cases[] = {
        {"third order: exp(sin x)", t_exp_sin},
        {"third order: log(1 + x^2) tanh x", t_log_tanh},
        {"third order: logsumexp(sigmoid x (1 + x^2)^1.5)", t_lse_sigmoid},
        {"third order: xent(softplus(W)^T W)", t_xent_matmul},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TEST_CASE(cases[i].name) {
            third_ctx c = {.f = cases[i].f};
            ad_rng g;
            ad_rng_seed(&g, 900 + i);
            double x[6];
            for (int k = 0; k < 6; k++) {
                x[k] = 2 * ad_rng_uniform(&g) - 1;
                c.u[k] = ad_rng_normal(&g);
                c.v[k] = ad_rng_normal(&g);
            }
            ad_shape s = ad_vec_shape(6);
            const double *pt[1] = {x};
            ad_check_params p = ad_check_default_params();
            ad_check_report rep = ad_check_grad(third, &c, 1, &s, pt, &p);
            EXPECT(rep.status == AD_OK && rep.pass, "%s", rep.msg);
        }
    }
}

// relu_mask(g, x) against the composition it replaced in relu's reverse rule, mul(g, step(x)):
// the same bits on every kind of entry (signed zeros, infinities, NaN in either operand).
static void check_relu_mask_bits(void) {
    TEST_CASE("relu_mask(g, x) has the bits of mul(g, step(x))") {
        const double inf = INFINITY, nan = NAN;
        const double g[] = {1.5, -2, 0.0, -0.0, inf, -inf, nan, 3, -0.0, 7, inf, nan, 1e-300, -4};
        const double x[] = {2, 3, -1, -1, -2, 5, 1, nan, 0.0, -0.0, 0.0, -1, 1e-310, -inf};
        enum { N = sizeof g / sizeof g[0] };
        ad_tape *t = ad_tape_new(NULL);
        ad_var gv = ad_const(t, ad_vec_shape(N), g), xv = ad_const(t, ad_vec_shape(N), x);
        const double *a = ad_value(t, ad_relu_mask(t, gv, xv));
        const double *b = ad_value(t, ad_mul(t, gv, ad_step(t, xv)));
        EXPECT(a && b, "not evaluated: %s", ad_tape_error(t));
        for (int i = 0; a && b && i < N; i++)
            EXPECT(!memcmp(&a[i], &b[i], sizeof(double)), "entry %d (g %g, x %g): %g against %g", i,
                   g[i], x[i], a[i], b[i]);
        ad_tape_free(t);
    }
}

void test_ad_ops(void) {
    check_rows();
    check_relu_mask_bits();
    check_third_order();
}
