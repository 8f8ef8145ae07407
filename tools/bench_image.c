// `hypertape bench autodiff` and `reference`, case (f): ConvNet-4 forward and backward for one
// task batch, against PyTorch (tools/bench_torch.py measures the same network). Four blocks of
// 3x3 convolution with 32 filters (no bias: the batch norm after it removes any), batch norm
// over the batch, ReLU and 2x2 max-pooling, on 320 images of 28 x 28 x 1 (28 -> 14 -> 7 -> 3 ->
// 1 pixels), then a linear head to 5 classes and the mean cross-entropy; the gradient with
// respect to every parameter (the images are constants). Float64; products in OpenBLAS, the
// image ops' passes split over images on the tape's threads (2 here, as OpenBLAS's); PyTorch
// with 1 torch thread (tools/bench_torch.py also prints it on 2). Each block's batch norm, ReLU
// and pool are one op, ad_bn_relu_pool (the same values as ad_batchnorm, ad_relu and
// ad_maxpool2, the gradients to rounding: tests/test_ad_image.c); the first block's conv is in
// that op too (ad_conv_bn_relu_pool: its 64 MB output made again in each pass, never stored),
// and blocks 2 to 4 take the AVX-512 conv kernel where the CPU has it.
#include "bench.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <time.h>

// Seconds of CPU the process's threads (OpenBLAS's too) have used.
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { CN_IMAGES = 320, CN_SIDE = 28, CN_FILTERS = 32, CN_BLOCKS = 4, CN_WAYS = 5 };

typedef struct {
    double *x;              // [320, 784] images
    int32_t *y;             // [320] labels
    double *w[CN_BLOCKS];   // [32, c_in*9]
    double gamma[CN_FILTERS], beta[CN_FILTERS];
    double *head;           // [32, 5]
} convnet;

static convnet convnet_make(uint64_t seed) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    convnet c = {malloc(sizeof(double) * CN_IMAGES * CN_SIDE * CN_SIDE), malloc(sizeof(int32_t) * CN_IMAGES),
                 {NULL}, {0}, {0}, malloc(sizeof(double) * CN_FILTERS * CN_WAYS)};
    for (int i = 0; i < CN_IMAGES * CN_SIDE * CN_SIDE; i++) c.x[i] = ad_rng_uniform(&g);
    for (int i = 0; i < CN_IMAGES; i++) c.y[i] = (int32_t)(ad_rng_next(&g) % CN_WAYS);
    for (int b = 0; b < CN_BLOCKS; b++) {
        int fan_in = (b ? CN_FILTERS : 1) * 9;
        c.w[b] = malloc(sizeof(double) * CN_FILTERS * fan_in);
        for (int i = 0; i < CN_FILTERS * fan_in; i++) c.w[b][i] = sqrt(2.0 / fan_in) * ad_rng_normal(&g);
    }
    for (int i = 0; i < CN_FILTERS; i++) c.gamma[i] = 1, c.beta[i] = 0;
    for (int i = 0; i < CN_FILTERS * CN_WAYS; i++) c.head[i] = ad_rng_normal(&g) / sqrt(CN_FILTERS);
    return c;
}

static void convnet_free(convnet *c) {
    free(c->x), free(c->y), free(c->head);
    for (int b = 0; b < CN_BLOCKS; b++) free(c->w[b]);
}

// The loss and its gradient with respect to the 13 parameters; returns the loss (NaN on error).
static double convnet_grad(ad_tape *t, const convnet *c) {
    enum { P = 3 * CN_BLOCKS + 1 };
    ad_var p[P], g[P];
    ad_var h = ad_const_view(t, ad_mat_shape(CN_IMAGES, CN_SIDE * CN_SIDE), c->x);
    int side = CN_SIDE, c_in = 1;
    for (int b = 0; b < CN_BLOCKS; b++) {
        p[3 * b] = ad_param(t, ad_mat_shape(CN_FILTERS, c_in * 9), c->w[b]);
        p[3 * b + 1] = ad_param(t, ad_vec_shape(CN_FILTERS), c->gamma);
        p[3 * b + 2] = ad_param(t, ad_vec_shape(CN_FILTERS), c->beta);
        ad_var gb = ad_concat(t, p[3 * b + 1], p[3 * b + 2]); // gamma and beta as one [2C]
        if (b == 0) { // the first block's conv output (64 MB) made again in each pass, not stored
            ad_var WP = ad_concat(t, ad_reshape(t, p[0], ad_vec_shape(CN_FILTERS * 9)), gb);
            h = ad_conv_bn_relu_pool(t, h, WP, 1, side, side, CN_FILTERS, 1e-5);
        } else { // batch norm, ReLU and max-pool in one op
            h = ad_conv2d(t, h, p[3 * b], c_in, side, side, CN_FILTERS);
            h = ad_bn_relu_pool(t, h, gb, CN_FILTERS, side, side, 1e-5);
        }
        side /= 2, c_in = CN_FILTERS;
    }
    p[P - 1] = ad_param(t, ad_mat_shape(CN_FILTERS, CN_WAYS), c->head); // h is [320, 32]
    ad_var loss = ad_mean(t, ad_xent(t, ad_matmul(t, h, p[P - 1], 0, 0), c->y));
    if (ad_grad(t, loss, P, p, g, 0) != AD_OK) return NAN;
    return ad_item(t, loss) + 0 * ad_value(t, g[0])[0];
}

// Multiply-adds of the convolutions, times 2: forward, and backward without the first block's
// input gradient (the images are constants).
static double convnet_gflop(void) {
    double f = 0;
    int side = CN_SIDE, c_in = 1;
    for (int b = 0; b < CN_BLOCKS; b++) {
        double fwd = 2.0 * CN_IMAGES * side * side * CN_FILTERS * c_in * 9;
        f += fwd * (b ? 3 : 2);
        side /= 2, c_in = CN_FILTERS;
    }
    return 1e-9 * f;
}

void bench_convnet(const bench_opts *o) {
    convnet c = convnet_make(21);
    ad_tape_params tp = ad_tape_default_params();
    tp.time_blas = 1;
    ad_tape *t = ad_tape_new(&tp);
    ad_mark m = ad_tape_mark(t);
    int reps = o->quick ? 3 : 11;
    double *s = malloc(sizeof(double) * 3 * reps), *b = s + reps, *cpu = b + reps, sink = 0;
    for (int r = -1; r < reps; r++) { // r = -1: untimed, the arena's first touch
        double b0 = ad_tape_blas_seconds(t), c0 = cpu_now(), t0 = bench_now();
        sink += convnet_grad(t, &c);
        if (r >= 0)
            s[r] = bench_now() - t0, b[r] = ad_tape_blas_seconds(t) - b0, cpu[r] = cpu_now() - c0;
        if (r < 0) printf("(f) ConvNet-4 tape: %.0f MB at the peak, %d nodes\n",
                          ad_tape_peak_bytes(t) / 1e6, ad_tape_nodes(t));
        ad_tape_rewind(t, m);
    }
    double sec = bench_median(s, reps), blas = bench_median(b, reps), cs = bench_median(cpu, reps);
    double torch = o->torch[TORCH_CONVNET4], torch_cpu = o->torch[TORCH_CONVNET4_CPU];
    printf("(f) ConvNet-4 forward + backward, 320 images 28 x 28 x 1, 32 filters, float64: %.3f s "
           "(median of %d; %.1f GFLOP in convolutions, %.1f GFLOP/s; in products %.3f s); PyTorch %s "
           "%.3f s: %.2fx faster (target >= 4)%s\n",
           sec, reps, convnet_gflop(), convnet_gflop() / sec, blas,
           o->torch_here ? "on this machine" : "on the issue's machine", torch, torch / sec,
           isfinite(sink) ? "" : "  [FAILED]");
    if (o->torch_here)
        printf("    CPU seconds of all threads: %.3f s; PyTorch %.3f s: %.2fx less\n", cs, torch_cpu,
               torch_cpu / cs);
    else
        printf("    CPU seconds of all threads: %.3f s\n", cs);
    if (ad_tape_status(t) != AD_OK) printf("  tape error: %s\n", ad_tape_error(t));
    free(s);
    ad_tape_free(t);
    convnet_free(&c);
}
