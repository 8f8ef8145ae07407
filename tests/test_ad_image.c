// The image ops beyond their finite-difference rows (test_ad_ops.c): conv2d's im2col + dgemm
// against the plain loop over geometries that cross its blocks of images, the weight gradient
// and the transposed convolution against the same loop through the adjoint identities, max-pool
// against a plain loop (ties to the first maximum, as PyTorch), batch norm's closed form,
// bad geometry as one-line errors, second order through a small ConvNet (a MAML step, with the
// block's batch norm, ReLU and pool as three ops and as ad_bn_relu_pool), the threaded kernels
// giving the same bits on any number of threads, and ad_bn_relu_pool against the composition it
// fuses.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"
#include "../autodiff/image_kernels.h" // the kernels beside the plain loop
#include "../autodiff/internal.h"      // ad_conv3x3_direct

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double *randn(ad_rng *g, size_t n) {
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = ad_rng_normal(g);
    return v;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

typedef struct {
    int n, c_in, h, w, c_out;
} geom;

// n = 30 of 16 x 12 x 12 to 5 makes blocks of 12 images: three, the last one short.
// The last two take the AVX-512 kernel where the CPU has it (16 output channels, 8 or more input
// channels), the last one in its transpose too.
static const geom geoms[] = {{1, 1, 1, 1, 1}, {2, 1, 5, 3, 4}, {3, 3, 4, 7, 2}, {30, 16, 12, 12, 5},
                             {7, 2, 28, 28, 3}, {6, 8, 14, 14, 16}, {5, 16, 7, 7, 16}};

// A conv's random operands for geometry q: images x [n, c_in*hw], weights wt [c_out, c_in*9]
// and an output gradient gy [n, c_out*hw].
typedef struct {
    size_t hw, nx, ny, nw;
    double *x, *wt, *gy;
} operands;

static operands operands_make(geom q, uint64_t seed) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    size_t hw = (size_t)q.h * q.w;
    operands o = {hw, q.n * q.c_in * hw, q.n * q.c_out * hw, (size_t)q.c_out * q.c_in * 9, NULL, NULL, NULL};
    o.x = randn(&g, o.nx), o.wt = randn(&g, o.nw), o.gy = randn(&g, o.ny);
    return o;
}

static void operands_free(operands *o) { free(o->x), free(o->wt), free(o->gy); }

// A case's name: "image: " what, q's geometry, then tail.
static void geom_name(char *name, size_t size, const char *what, geom q, const char *tail) {
    snprintf(name, size, "image: %s %d x %d x %d x %d -> %d%s", what, q.n, q.c_in, q.h, q.w, q.c_out, tail);
}

static void conv_against_direct(void) {
    for (size_t gi = 0; gi < sizeof geoms / sizeof geoms[0]; gi++) {
        geom q = geoms[gi];
        char name[128];
        snprintf(name, sizeof name, "image: conv2d, its weight gradient and transpose against the plain loop, "
                 "%d x %d x %d x %d -> %d", q.n, q.c_in, q.h, q.w, q.c_out);
        TEST_CASE(name) {
            operands op = operands_make(q, 40 + gi);
            size_t hw = op.hw, nx = op.nx, ny = op.ny, nw = op.nw;
            double *x = op.x, *wt = op.wt, *gy = op.gy, *ref = malloc(ny * sizeof *ref);
            ad_conv3x3_direct(x, wt, q.n, q.c_in, q.h, q.w, q.c_out, ref);
            ad_tape *t = ad_tape_new(NULL);
            ad_var X = ad_const(t, ad_mat_shape(q.n, (int)(q.c_in * hw)), x);
            ad_var W = ad_const(t, ad_mat_shape(q.c_out, q.c_in * 9), wt);
            ad_var G = ad_const(t, ad_mat_shape(q.n, (int)(q.c_out * hw)), gy);
            const double *y = ad_value(t, ad_conv2d(t, X, W, q.c_in, q.h, q.w, q.c_out));
            double worst = 0, scale = 0;
            for (size_t i = 0; i < ny; i++) worst = fmax(worst, fabs(y[i] - ref[i])), scale = fmax(scale, fabs(ref[i]));
            EXPECT(ad_tape_status(t) == AD_OK && worst <= 1e-13 * (1 + scale), "max difference %g (scale %g): %s",
                   worst, scale, ad_tape_error(t));
            // <conv(X, W), G> = <W, wgrad(X, G)> = <X, conv(G, flip(W))>, the left side the loop's
            const double *dw = ad_value(t, ad_conv2d_wgrad(t, X, G, q.c_in, q.h, q.w, q.c_out));
            const double *dx = ad_value(t, ad_conv2d(t, G, ad_conv_flip(t, W, q.c_in, q.c_out), q.c_out, q.h, q.w, q.c_in));
            double lhs = dot(ref, gy, ny), a = dot(wt, dw, nw), b = dot(x, dx, nx), tol = 1e-12 * (1 + fabs(lhs)) * sqrt((double)ny);
            EXPECT(fabs(a - lhs) <= tol && fabs(b - lhs) <= tol, "<Y, G> = %.15g, <W, dW> = %.15g, <X, dX> = %.15g",
                   lhs, a, b);
            ad_tape_free(t);
            operands_free(&op), free(ref);
        }
    }
}

// ---- the AVX-512 kernel against the plain loop and im2col + dgemm ----

// dW [c_out, c_in*9] of x [n, c_in*h*w] and g [n, c_out*h*w] by the definition.
static void wgrad_loop(const double *x, const double *gy, geom q, double *dw) {
    size_t hw = (size_t)q.h * q.w;
    for (int o = 0; o < q.c_out; o++)
        for (int i = 0; i < q.c_in; i++)
            for (int k = 0; k < 9; k++) {
                double s = 0;
                for (int b = 0; b < q.n; b++)
                    for (int py = 0; py < q.h; py++)
                        for (int px = 0; px < q.w; px++) {
                            int sy = py + k / 3 - 1, sx = px + k % 3 - 1;
                            if (sy >= 0 && sy < q.h && sx >= 0 && sx < q.w)
                                s += gy[((size_t)b * q.c_out + o) * hw + (size_t)py * q.w + px] *
                                     x[((size_t)b * q.c_in + i) * hw + (size_t)sy * q.w + sx];
                        }
                dw[((size_t)o * q.c_in + i) * 9 + k] = s;
            }
}

static double worst_rel(const double *a, const double *ref, size_t n) {
    double worst = 0, scale = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - ref[i])), scale = fmax(scale, fabs(ref[i]));
    return worst / (1 + scale);
}

// shapes of ConvNet blocks 2 to 4 (14, 7, 3 pixels), rows that are one pixel or one tile
// long, and more images than chunks
static const geom direct_geoms[] = {{11, 32, 14, 14, 32}, {9, 32, 7, 7, 32}, {20, 32, 3, 3, 32},
                                    {3, 8, 1, 1, 16}, {2, 9, 5, 22, 16}, {4, 8, 2, 13, 48}};

static void direct_cases(void) {
    for (size_t gi = 0; gi < sizeof direct_geoms / sizeof direct_geoms[0]; gi++) {
        geom q = direct_geoms[gi];
        char name[160];
        geom_name(name, sizeof name, "the AVX-512 conv and weight gradient against the plain loop and im2col + dgemm,",
                  q, ", the same bits on 1, 2 and 3 threads");
        TEST_CASE(name) {
            if (!imk_conv_direct_runs(q.c_in, q.c_out)) {
                double y;
                EXPECT(!imk_conv_direct(&y, &y, 1, q.c_in, 1, 1, q.c_out, false, 1, &y),
                       "the kernel claims to run where the CPU has no AVX-512");
                continue;
            }
            operands op = operands_make(q, 140 + gi);
            size_t ny = op.ny, nw = op.nw;
            double *x = op.x, *wt = op.wt, *gy = op.gy;
            double *ref = malloc(ny * sizeof *ref), *y = malloc(ny * sizeof *y), *blas = malloc(ny * sizeof *y);
            double *dref = malloc(nw * sizeof *dref), *dw = malloc(nw * sizeof *dw), *dblas = malloc(nw * sizeof *dw);
            ad_conv3x3_direct(x, wt, q.n, q.c_in, q.h, q.w, q.c_out, ref);
            wgrad_loop(x, gy, q, dref);
            EXPECT(imk_conv_direct(x, wt, q.n, q.c_in, q.h, q.w, q.c_out, false, 1, y) &&
                   imk_conv_direct(x, gy, q.n, q.c_in, q.h, q.w, q.c_out, true, 1, dw) &&
                   imk_conv_images(x, wt, q.n, q.c_in, q.h, q.w, q.c_out, false, 1, blas) &&
                   imk_conv_images(x, gy, q.n, q.c_in, q.h, q.w, q.c_out, true, 1, dblas), "no memory");
            double e[4] = {worst_rel(y, ref, ny), worst_rel(dw, dref, nw), worst_rel(blas, ref, ny), worst_rel(dblas, dref, nw)};
            EXPECT(e[0] <= 1e-14 && e[1] <= 1e-13 && e[2] <= 1e-14 && e[3] <= 1e-13,
                   "relative differences from the loop: kernel %g (dW %g), im2col + dgemm %g (dW %g)", e[0], e[1], e[2], e[3]);
            for (int th = 2; th <= 3; th++) {
                imk_conv_direct(x, wt, q.n, q.c_in, q.h, q.w, q.c_out, false, th, blas);
                imk_conv_direct(x, gy, q.n, q.c_in, q.h, q.w, q.c_out, true, th, dblas);
                EXPECT(!memcmp(y, blas, ny * sizeof *y) && !memcmp(dw, dblas, nw * sizeof *dw),
                       "%d threads differ from one", th);
            }
            operands_free(&op), free(ref), free(y), free(blas), free(dref), free(dw), free(dblas);
        }
    }
}

static void pool_cases(void) {
    TEST_CASE("image: max-pool against the plain loop; ties go to the first maximum, odd edges are left out") {
        enum { N = 3, C = 2, H = 5, W = 7 };
        double x[N * C * H * W];
        ad_rng g;
        ad_rng_seed(&g, 5);
        for (int i = 0; i < N * C * H * W; i++) x[i] = (double)(ad_rng_next(&g) % 4) - 1; // many ties
        ad_tape *t = ad_tape_new(NULL);
        ad_var X = ad_param(t, ad_mat_shape(N, C * H * W), x);
        ad_var Y = ad_maxpool2(t, X, C, H, W), dX;
        EXPECT(ad_shape_eq(ad_shape_of(t, Y), ad_mat_shape(N, C * 2 * 3)), "shape");
        ad_grad(t, ad_sum(t, Y), 1, &X, &dX, 0);
        const double *y = ad_value(t, Y), *dx = ad_value(t, dX);
        double want_dx[N * C * H * W] = {0};
        for (int q = 0; q < N * C; q++)
            for (int i = 0; i < H / 2; i++)
                for (int j = 0; j < W / 2; j++) {
                    int best = -1;
                    for (int di = 0; di < 2; di++)
                        for (int dj = 0; dj < 2; dj++) {
                            int p = q * H * W + (2 * i + di) * W + 2 * j + dj;
                            if (best < 0 || x[p] > x[best]) best = p;
                        }
                    EXPECT(y[q * 6 + i * 3 + j] == x[best], "window %d %d %d", q, i, j);
                    want_dx[best] = 1;
                }
        EXPECT(!memcmp(dx, want_dx, sizeof want_dx), "the gradient is not the argmax routing");
        ad_tape_free(t);
    }
}

static void batchnorm_cases(void) {
    TEST_CASE("image: batch norm gives each channel mean beta and variance gamma^2 var / (var + eps)") {
        enum { N = 4, C = 3, H = 3, W = 2, K = H * W };
        ad_rng g;
        ad_rng_seed(&g, 8);
        double *x = randn(&g, N * C * K), gamma[C] = {1.5, -0.5, 2}, beta[C] = {0.25, -1, 3}, eps = 1e-3;
        for (int i = 0; i < N * C * K; i++) x[i] = 10 + 3 * x[i]; // away from 0, to see the centring
        ad_tape *t = ad_tape_new(NULL);
        ad_var Y = ad_batchnorm(t, ad_const(t, ad_mat_shape(N, C * K), x), ad_const(t, ad_vec_shape(C), gamma),
                                ad_const(t, ad_vec_shape(C), beta), C, H, W, eps);
        const double *y = ad_value(t, Y);
        for (int c = 0; c < C; c++) {
            double mx = 0, vx = 0, my = 0, vy = 0;
            for (int b = 0; b < N; b++)
                for (int p = 0; p < K; p++) mx += x[(b * C + c) * K + p], my += y[(b * C + c) * K + p];
            mx /= N * K, my /= N * K;
            for (int b = 0; b < N; b++)
                for (int p = 0; p < K; p++) {
                    vx += pow(x[(b * C + c) * K + p] - mx, 2);
                    vy += pow(y[(b * C + c) * K + p] - my, 2);
                }
            vx /= N * K, vy /= N * K;
            EXPECT(fabs(my - beta[c]) < 1e-12 && fabs(vy - gamma[c] * gamma[c] * vx / (vx + eps)) < 1e-12,
                   "channel %d: mean %.15g, variance %.15g", c, my, vy);
        }
        ad_tape_free(t);
        free(x);
    }
}

static void errors(void) {
    TEST_CASE("image: bad geometry is a one-line error naming the op") {
        struct {
            int which;
            const char *says;
        } c[] = {{0, "conv2d: input [2, 12] is not a batch [n, 18] of 2 x 3 x 3 images"},
                 {1, "conv2d: weights [2, 18] are not [c_out, c_in*9] = [3, 18]"},
                 {2, "conv2d: bad image geometry c = 2, h = 0"},
                 {3, "pool_scatter: operand [2, 12] is not [2, 2]"},
                 {4, "batchnorm: scale [3] is not a vector [2]"},
                 {5, "chan_norm: eps = 0 is not finite and > 0"},
                 {6, "conv2d_wgrad: input [2, 12] and output gradient [3, 12] differ in images"},
                 {7, "conv2d_wgrad: a gradient [20000, 20000 * 9] has more entries than an int holds"},
                 {8, "chan_sums: shapes [2, 6] and [2, 12] differ"},
                 {9, "bn_pool: [3] is not [2c] = [4] (scales, then shifts)"},
                 {10, "bn_pool_dy: [5] is not [16] (the pooled adjoint of 2 images, then 6 per channel)"}};
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_var X = ad_fill(t, ad_mat_shape(2, 12), 1), W = ad_fill(t, ad_mat_shape(2, 18), 1), r = AD_NONE;
            switch (c[i].which) {
            case 0: r = ad_conv2d(t, X, W, 2, 3, 3, 2); break;
            case 1: r = ad_conv2d(t, X, W, 2, 3, 2, 3); break;
            case 2: r = ad_conv2d(t, X, W, 2, 0, 6, 2); break;
            case 3: r = ad_maxpool2_scatter(t, X, X, 2, 3, 2); break;
            case 4: r = ad_batchnorm(t, X, ad_fill(t, ad_vec_shape(3), 1), ad_fill(t, ad_vec_shape(2), 0), 2, 3, 2, 1e-5); break;
            case 5: r = ad_channel_norm(t, X, 2, 0); break;
            case 6: r = ad_conv2d_wgrad(t, X, ad_fill(t, ad_mat_shape(3, 12), 1), 2, 3, 2, 2); break;
            case 8: r = ad_channel_sums(t, ad_fill(t, ad_mat_shape(2, 6), 1), X, 2); break;
            case 9: r = ad_bn_relu_pool(t, X, ad_fill(t, ad_vec_shape(3), 1), 2, 3, 2, 1e-5); break;
            case 10: r = ad_bn_relu_pool_dy(t, ad_fill(t, ad_vec_shape(5), 1), X, 2, 3, 2, 1e-5); break;
            default: {
                ad_var big = ad_fill(t, ad_mat_shape(1, 20000), 1);
                r = ad_conv2d_wgrad(t, big, big, 20000, 1, 1, 20000);
            }
            }
            EXPECT(r == AD_NONE && ad_tape_status(t) != AD_OK && strstr(ad_tape_error(t), c[i].says) &&
                       !strchr(ad_tape_error(t), '\n'),
                   "case %zu: %s", i, ad_tape_error(t));
            ad_tape_free(t);
        }
    }
}

// ---- second order: the loss after one inner gradient step (MAML) through conv, batch norm,
// ReLU and max-pool, differentiated in the initial weights by ad_grad and by differences ----

enum { MN = 4, MS = 4, MC = 2, MWAYS = 3 }; // 4 images of 1 x 4 x 4, 2 filters, 3 classes
static const int32_t maml_labels[MN] = {0, 2, 1, 2};

// fused: the first block's batch norm, ReLU and pool as ad_bn_relu_pool
static ad_var maml_net(ad_tape *t, const double *x, ad_var w1, ad_var w2, ad_var gamma, ad_var beta, ad_var head,
                       bool fused) {
    ad_var X = ad_const(t, ad_mat_shape(MN, MS * MS), x), h = ad_conv2d(t, X, w1, 1, MS, MS, MC);
    if (fused) h = ad_bn_relu_pool(t, h, ad_concat(t, gamma, beta), MC, MS, MS, 1e-3);
    else h = ad_maxpool2(t, ad_relu(t, ad_batchnorm(t, h, gamma, beta, MC, MS, MS, 1e-3)), MC, MS, MS); // [4, 8]
    h = ad_maxpool2(t, ad_conv2d(t, h, w2, MC, MS / 2, MS / 2, MC), MC, MS / 2, MS / 2); // [4, 2]
    return ad_mean(t, ad_xent(t, ad_matmul(t, h, head, 0, 0), maml_labels));
}

typedef struct {
    double x[MN * MS * MS];
    bool fused;
} maml_ctx;

// in: w1 [2, 9], w2 [2, 18], gamma and beta [2] as one [4], head [2, 3]. One inner step on all.
static ad_var maml(ad_tape *t, const ad_var *in, void *c) {
    const maml_ctx *m = c;
    ad_var gamma = ad_slice(t, in[2], 0, MC), beta = ad_slice(t, in[2], MC, MC);
    ad_var p[5] = {in[0], in[1], gamma, beta, in[3]}, g[5];
    ad_var inner = maml_net(t, m->x, p[0], p[1], p[2], p[3], p[4], m->fused);
    if (ad_grad(t, inner, 5, p, g, AD_CREATE_GRAPH) != AD_OK) return AD_NONE;
    for (int k = 0; k < 5; k++) p[k] = ad_axpy(t, p[k], -0.4, g[k]);
    return maml_net(t, m->x, p[0], p[1], p[2], p[3], p[4], m->fused);
}

static void maml_case(bool fused) {
    TEST_CASE(fused ? "image: a MAML step through conv and ad_bn_relu_pool matches finite differences"
                    : "image: a MAML step through conv, batch norm, ReLU and max-pool matches finite differences") {
        maml_ctx m = {.fused = fused};
        ad_rng g;
        ad_rng_seed(&g, 77);
        for (int i = 0; i < MN * MS * MS; i++) m.x[i] = ad_rng_normal(&g);
        double w1[18], w2[36], gb[4] = {1.2, 0.8, 0.1, -0.2}, head[6];
        for (int i = 0; i < 18; i++) w1[i] = ad_rng_normal(&g) / 3;
        for (int i = 0; i < 36; i++) w2[i] = ad_rng_normal(&g) / 4;
        for (int i = 0; i < 6; i++) head[i] = ad_rng_normal(&g);
        ad_shape s[4] = {ad_mat_shape(MC, 9), ad_mat_shape(MC, MC * 9), ad_vec_shape(4), ad_mat_shape(MC, MWAYS)};
        const double *pt[4] = {w1, w2, gb, head};
        ad_check_params p = ad_check_default_params();
        ad_check_report rep = ad_check_grad(maml, &m, 4, s, pt, &p);
        EXPECT(rep.status == AD_OK && rep.pass, "%s", rep.msg);
    }
}

// ---- the threaded kernels: the same bits on 1, 2 and 3 threads, and the pooled ReLU ----

// 19 images (conv chunks of 2 and 3) of 28 x 28 and 14 x 14 (per-image products), 6 channels:
// each pass large enough to be split over threads
enum { TN = 19, TS = 28, TC = 6 };

// A conv, batch norm, ReLU-pool block and a second conv, summed against fixed weights; its
// value and gradients in the weights, gamma and beta into out [1 + 27 + 81 + 6], on a tape of
// `threads` threads; pooled: ad_relu_maxpool2 instead of ad_maxpool2(ad_relu).
static void threaded_block(int threads, bool pooled, const double *x, double *out) {
    ad_tape_params tp = ad_tape_default_params();
    tp.threads = threads;
    ad_tape *t = ad_tape_new(&tp);
    ad_rng g;
    ad_rng_seed(&g, 3);
    double w1[TC * 9], w2[TC * TC * 9], gb[2 * TC], *mix = malloc(sizeof(double) * TN * TC * TS * TS / 4);
    for (int i = 0; i < TC * 9; i++) w1[i] = ad_rng_normal(&g);
    for (int i = 0; i < TC * TC * 9; i++) w2[i] = ad_rng_normal(&g);
    for (int i = 0; i < 2 * TC; i++) gb[i] = ad_rng_normal(&g);
    for (int i = 0; i < TN * TC * TS * TS / 4; i++) mix[i] = ad_rng_normal(&g);
    ad_var p[3] = {ad_param(t, ad_mat_shape(TC, 9), w1), ad_param(t, ad_mat_shape(TC, TC * 9), w2),
                   ad_param(t, ad_vec_shape(2 * TC), gb)}, d[3];
    ad_var h = ad_conv2d(t, ad_const(t, ad_mat_shape(TN, TS * TS), x), p[0], 1, TS, TS, TC);
    h = ad_batchnorm(t, h, ad_slice(t, p[2], 0, TC), ad_slice(t, p[2], TC, TC), TC, TS, TS, 1e-5);
    h = pooled ? ad_relu_maxpool2(t, h, TC, TS, TS) : ad_maxpool2(t, ad_relu(t, h), TC, TS, TS);
    h = ad_conv2d(t, h, p[1], TC, TS / 2, TS / 2, TC);
    ad_var f = ad_sum(t, ad_mul(t, h, ad_const(t, ad_mat_shape(TN, TC * TS * TS / 4), mix)));
    ad_grad(t, f, 3, p, d, 0);
    out[0] = ad_item(t, f);
    memcpy(out + 1, ad_value(t, d[0]), sizeof w1);
    memcpy(out + 1 + TC * 9, ad_value(t, d[1]), sizeof w2);
    memcpy(out + 1 + TC * 9 + TC * TC * 9, ad_value(t, d[2]), sizeof gb);
    if (ad_tape_status(t) != AD_OK) out[0] = NAN;
    ad_tape_free(t);
    free(mix);
}

static void threads_cases(void) {
    TEST_CASE("image: conv, batch norm and max-pool give the same bits on 1, 2 and 3 threads; "
              "ad_relu_maxpool2 is ad_maxpool2 of ad_relu") {
        enum { M = 1 + TC * 9 + TC * TC * 9 + 2 * TC };
        ad_rng g;
        ad_rng_seed(&g, 12);
        double *x = malloc(sizeof(double) * TN * TS * TS), one[M], other[M], unfused[M];
        for (int i = 0; i < TN * TS * TS; i++) x[i] = ad_rng_normal(&g);
        threaded_block(1, true, x, one);
        EXPECT(isfinite(one[0]), "the block does not evaluate");
        for (int th = 2; th <= 3; th++) {
            threaded_block(th, true, x, other);
            EXPECT(!memcmp(one, other, sizeof one), "%d threads differ from one", th);
        }
        threaded_block(2, false, x, unfused);
        double worst = 0;
        for (int i = 0; i < M; i++) worst = fmax(worst, fabs(one[i] - unfused[i]) / (1 + fabs(unfused[i])));
        EXPECT(worst < 1e-13, "pooling the ReLU differs from the ReLU of the pool by %g", worst);
        free(x);
    }
}

// ---- ad_bn_relu_pool against the composition it fuses ----

typedef struct {
    int n, c, h, w;
} block_geom;

// Its value and gradients in Y and P of sum(out * mix) into out [n*c*(h/2)*(w/2) + n*c*h*w + 2c],
// fused or as the composition, on a tape of `threads` threads.
static void block_run(block_geom q, const double *y, const double *p, const double *mix, bool fused,
                      int threads, double *out) {
    ad_tape_params tp = ad_tape_default_params();
    tp.threads = threads;
    ad_tape *t = ad_tape_new(&tp);
    int hw = q.h * q.w, pooled = q.c * (q.h / 2) * (q.w / 2);
    ad_var in[2] = {ad_param(t, ad_mat_shape(q.n, q.c * hw), y), ad_param(t, ad_vec_shape(2 * q.c), p)}, d[2];
    ad_var o = fused ? ad_bn_relu_pool(t, in[0], in[1], q.c, q.h, q.w, 1e-5)
                     : ad_relu_maxpool2(t, ad_channel_affine(t, ad_channel_norm(t, in[0], q.c, 1e-5), in[1], q.c),
                                        q.c, q.h, q.w);
    ad_grad(t, ad_sum(t, ad_mul(t, o, ad_const(t, ad_mat_shape(q.n, pooled), mix))), 2, in, d, 0);
    size_t no = (size_t)q.n * pooled, ny = (size_t)q.n * q.c * hw;
    if (ad_tape_status(t) == AD_OK) {
        memcpy(out, ad_value(t, o), no * sizeof *out);
        memcpy(out + no, ad_value(t, d[0]), ny * sizeof *out);
        memcpy(out + no + ny, ad_value(t, d[1]), 2 * q.c * sizeof *out);
    } else
        out[0] = NAN;
    ad_tape_free(t);
}

static void fused_block_cases(void) {
    // 23 x 4 x 27 x 29 is split over threads (odd sides: a row and a column left out); 131
    // columns cross the kernels' pieces of 128
    static const block_geom qs[] = {{23, 4, 27, 29}, {2, 3, 4, 131}};
    for (size_t qi = 0; qi < sizeof qs / sizeof qs[0]; qi++) {
        block_geom q = qs[qi];
        char name[160];
        snprintf(name, sizeof name, "image: ad_bn_relu_pool on %d x %d x %d x %d is the composition (values bit for "
                 "bit, gradients to 1e-12), the same bits on 1, 2 and 3 threads", q.n, q.c, q.h, q.w);
        TEST_CASE(name) {
            ad_rng g;
            ad_rng_seed(&g, 90 + qi);
            size_t no = (size_t)q.n * q.c * (q.h / 2) * (q.w / 2), ny = (size_t)q.n * q.c * q.h * q.w;
            size_t m = no + ny + 2 * (size_t)q.c;
            double *y = randn(&g, ny), *mix = randn(&g, no), *p = randn(&g, 2 * (size_t)q.c);
            p[0] = 0, p[1] = -1.5; // a zero scale (every window a tie) and a negative one (minima pooled)
            double *ref = malloc(m * sizeof *ref), *one = malloc(m * sizeof *one), *other = malloc(m * sizeof *other);
            block_run(q, y, p, mix, false, 1, ref);
            block_run(q, y, p, mix, true, 1, one);
            EXPECT(isfinite(ref[0]) && isfinite(one[0]), "a run failed");
            EXPECT(!memcmp(ref, one, no * sizeof *ref), "the values differ from the composition's");
            double worst = 0, scale = 0;
            for (size_t i = no; i < m; i++) worst = fmax(worst, fabs(one[i] - ref[i])), scale = fmax(scale, fabs(ref[i]));
            EXPECT(worst <= 1e-12 * scale, "gradients differ by %g (scale %g)", worst, scale);
            for (int th = 2; th <= 3; th++) {
                block_run(q, y, p, mix, true, th, other);
                EXPECT(!memcmp(one, other, m * sizeof *one), "%d threads differ from one", th);
            }
            free(y), free(mix), free(p), free(ref), free(one), free(other);
        }
    }
}

// ---- ad_conv_bn_relu_pool against ad_bn_relu_pool of conv2d ----

// Its value and gradients in X and WP of sum(out * mix) into out [no + nx + nwp], fused or as
// the composition, on a tape of `threads` threads.
static void conv_block_run(geom q, const double *x, const double *wp, const double *mix, bool fused,
                           int threads, double *out) {
    ad_tape_params tp = ad_tape_default_params();
    tp.threads = threads;
    ad_tape *t = ad_tape_new(&tp);
    int hw = q.h * q.w, pooled = q.c_out * (q.h / 2) * (q.w / 2), nw = q.c_out * q.c_in * 9;
    ad_var in[2] = {ad_param(t, ad_mat_shape(q.n, q.c_in * hw), x), ad_param(t, ad_vec_shape(nw + 2 * q.c_out), wp)}, d[2];
    ad_var o;
    if (fused)
        o = ad_conv_bn_relu_pool(t, in[0], in[1], q.c_in, q.h, q.w, q.c_out, 1e-5);
    else {
        ad_var W = ad_reshape(t, ad_slice(t, in[1], 0, nw), ad_mat_shape(q.c_out, q.c_in * 9));
        ad_var Y = ad_conv2d(t, in[0], W, q.c_in, q.h, q.w, q.c_out);
        o = ad_bn_relu_pool(t, Y, ad_slice(t, in[1], nw, 2 * q.c_out), q.c_out, q.h, q.w, 1e-5);
    }
    ad_grad(t, ad_sum(t, ad_mul(t, o, ad_const(t, ad_mat_shape(q.n, pooled), mix))), 2, in, d, 0);
    size_t no = (size_t)q.n * pooled, nx = (size_t)q.n * q.c_in * hw;
    if (ad_tape_status(t) == AD_OK) {
        memcpy(out, ad_value(t, o), no * sizeof *out);
        memcpy(out + no, ad_value(t, d[0]), nx * sizeof *out);
        memcpy(out + no + nx, ad_value(t, d[1]), (size_t)(nw + 2 * q.c_out) * sizeof *out);
    } else
        out[0] = NAN;
    ad_tape_free(t);
}

static void conv_block_cases(void) {
    // 23 images of 27 x 29 (odd sides) split over threads, as a first block (one input channel);
    // 16 output channels from 3
    static const geom qs[] = {{23, 1, 27, 29, 4}, {6, 3, 6, 5, 16}};
    for (size_t qi = 0; qi < sizeof qs / sizeof qs[0]; qi++) {
        geom q = qs[qi];
        char name[176];
        geom_name(name, sizeof name, "ad_conv_bn_relu_pool on", q, " is ad_bn_relu_pool of conv2d (values to 1e-13, "
                  "gradients to 1e-12), the same bits on 1, 2 and 3 threads");
        TEST_CASE(name) {
            ad_rng g;
            ad_rng_seed(&g, 190 + qi);
            size_t no = (size_t)q.n * q.c_out * (q.h / 2) * (q.w / 2), nx = (size_t)q.n * q.c_in * q.h * q.w;
            size_t nwp = (size_t)q.c_out * (q.c_in * 9 + 2), m = no + nx + nwp;
            double *x = randn(&g, nx), *mix = randn(&g, no), *wp = randn(&g, nwp);
            wp[nwp - 2 * q.c_out] = -1.5; // a negative scale (minima pooled)
            double *ref = malloc(m * sizeof *ref), *one = malloc(m * sizeof *one), *other = malloc(m * sizeof *other);
            conv_block_run(q, x, wp, mix, false, 1, ref);
            conv_block_run(q, x, wp, mix, true, 1, one);
            EXPECT(isfinite(ref[0]) && isfinite(one[0]), "a run failed");
            double ev = worst_rel(one, ref, no), eg = worst_rel(one + no, ref + no, m - no);
            EXPECT(ev <= 1e-13 && eg <= 1e-12, "values differ by %g, gradients by %g (relative)", ev, eg);
            for (int th = 2; th <= 3; th++) {
                conv_block_run(q, x, wp, mix, true, th, other);
                EXPECT(!memcmp(one, other, m * sizeof *one), "%d threads differ from one", th);
            }
            free(x), free(mix), free(wp), free(ref), free(one), free(other);
        }
    }
}

void test_ad_image(void) {
    threads_cases();
    conv_against_direct();
    pool_cases();
    batchnorm_cases();
    errors();
    maml_case(false);
    maml_case(true);
    fused_block_cases();
    direct_cases();
    conv_block_cases();
}
