// `hypertape bench autodiff`: what the tape costs. (a) nanoseconds per recorded op on a chain of
// scalar ops, forward + backward; (b) Hessian-vector product time over gradient time for a
// softmax-regression loss and a dense quadratic; (c) the softmax-regression gradient against the
// cblas calls it makes; (e) the thin-product kernel against cblas_dgemm on that gradient's two
// products. Medians over repeats; the machine is shared, so read the ratios.
#include "bench.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"
#include "../autodiff/thin.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- (a) chains of scalar ops ----

// 1000 recorded ops on scalars, then the gradient with respect to x and w. "arith" is the shape
// of an unrolled gradient step (products, sums, scaling); "mixed" adds transcendentals, whose
// libm calls (sin, cos, tanh) are part of the cost.
static double chain(ad_tape *t, int mixed, int n_ops) {
    double x0 = 0.3, w0 = 0.9;
    ad_var x = ad_param(t, ad_scalar_shape(), &x0), w = ad_param(t, ad_scalar_shape(), &w0);
    ad_var y = x;
    for (int ops = 0; ops < n_ops; ops += 5) {
        y = ad_mul(t, y, w);
        y = mixed ? ad_tanh(t, y) : ad_add(t, y, x);
        y = ad_shift(t, y, 0.1);
        y = mixed ? ad_sin(t, y) : ad_sub(t, y, w);
        y = ad_scale(t, y, mixed ? 1.3 : 0.5);
    }
    ad_var in[2] = {x, w}, g[2];
    if (ad_grad(t, y, 2, in, g, 0) != AD_OK) return NAN;
    return ad_item(t, g[0]) + ad_item(t, g[1]);
}

// Five batches of repeats; the overall median and the best batch's median (the host is shared:
// the same binary measures 39 or 65 ns per op depending on what runs beside it).
static void bench_chain(const bench_opts *o) {
    ad_tape *t = ad_tape_new(NULL);
    ad_mark m = ad_tape_mark(t);
    enum { BATCHES = 5 };
    int per = o->quick ? 40 : 600, ops = 1000, reps = BATCHES * per;
    double *s = malloc((size_t)reps * sizeof *s), *b = malloc((size_t)per * sizeof *b);
    for (int mixed = 0; mixed < 2; mixed++) {
        double sink = 0, best = INFINITY;
        for (int r = 0; r < reps; r++) {
            double t0 = bench_now();
            sink += chain(t, mixed, ops);
            s[r] = bench_now() - t0;
            ad_tape_rewind(t, m);
        }
        for (int k = 0; k < BATCHES; k++) {
            memcpy(b, s + (size_t)k * per, (size_t)per * sizeof *b);
            best = fmin(best, bench_median(b, per));
        }
        printf("(a) scalar chain (%s), %d ops, forward + backward: %.1f ns per op (median of %d), best "
               "batch %.1f ns (PyTorch 1.13 eager ~3200 ns; target <= 50)%s\n",
               mixed ? "mul tanh shift sin scale" : "mul add shift sub scale", ops,
               1e9 * bench_median(s, reps) / ops, reps, 1e9 * best / ops, isfinite(sink) ? "" : "  [FAILED]");
    }
    free(s), free(b);
    ad_tape_free(t);
}

// ---- (b), (c) softmax regression on a 5000 x 784 matrix, 10 classes ----

typedef struct {
    int n, d, k;
    double *X, *W, *b, *V;
    int32_t *y;
} softmax_problem;

static softmax_problem softmax_make(int n, int d, int k, uint64_t seed) {
    softmax_problem p = {n, d, k, malloc(sizeof(double) * (size_t)n * d),
                         malloc(sizeof(double) * (size_t)d * k), calloc((size_t)k, sizeof(double)),
                         malloc(sizeof(double) * (size_t)d * k), malloc(sizeof(int32_t) * (size_t)n)};
    ad_rng g;
    ad_rng_seed(&g, seed);
    for (size_t i = 0; i < (size_t)n * d; i++) p.X[i] = ad_rng_uniform(&g);
    for (int i = 0; i < d * k; i++) p.W[i] = 0.01 * ad_rng_normal(&g), p.V[i] = ad_rng_normal(&g);
    for (int i = 0; i < n; i++) p.y[i] = (int32_t)(ad_rng_next(&g) % (uint64_t)k);
    return p;
}

static void softmax_free(softmax_problem *p) {
    free(p->X), free(p->W), free(p->b), free(p->V), free(p->y);
}

// mean_i xent(X_i W + b, y_i)
static ad_var softmax_loss(ad_tape *t, const softmax_problem *p, ad_var W, ad_var b) {
    ad_var X = ad_const_view(t, ad_mat_shape(p->n, p->d), p->X);
    return ad_mean(t, ad_xent(t, ad_add(t, ad_matmul(t, X, W, 0, 0), b), p->y));
}

static double softmax_grad(ad_tape *t, const softmax_problem *p) {
    ad_var W = ad_param(t, ad_mat_shape(p->d, p->k), p->W), b = ad_param(t, ad_vec_shape(p->k), p->b);
    ad_var in[2] = {W, b}, g[2];
    ad_grad(t, softmax_loss(t, p, W, b), 2, in, g, 0);
    return ad_value(t, g[0])[0];
}

static double softmax_hvp(ad_tape *t, const softmax_problem *p) {
    ad_var W = ad_param(t, ad_mat_shape(p->d, p->k), p->W), b = ad_param(t, ad_vec_shape(p->k), p->b);
    ad_var h;
    ad_hvp(t, softmax_loss(t, p, W, b), W, ad_const(t, ad_mat_shape(p->d, p->k), p->V), &h, 0);
    return ad_value(t, h)[0];
}

// The two products the gradient needs, called directly: Z = X W and dW = X^T G.
static double softmax_blas_only(const softmax_problem *p, double *Z, double *dW) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->n, p->k, p->d, 1.0, p->X, p->d, p->W,
                p->k, 0.0, Z, p->k);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->d, p->k, p->n, 1.0, p->X, p->d, Z, p->k,
                0.0, dW, p->k);
    return dW[0];
}

// ---- (b) dense quadratic, n = 1000: f = 1/2 x^T A x + c^T x ----

typedef struct {
    int n;
    double *A, *c, *x, *v;
} quad_problem;

static quad_problem quad_make(int n, uint64_t seed) {
    quad_problem q = {n, malloc(sizeof(double) * (size_t)n * n), malloc(sizeof(double) * (size_t)n),
                      malloc(sizeof(double) * (size_t)n), malloc(sizeof(double) * (size_t)n)};
    ad_rng g;
    ad_rng_seed(&g, seed);
    for (size_t i = 0; i < (size_t)n * n; i++) q.A[i] = ad_rng_normal(&g) / n;
    for (int i = 0; i < n; i++) q.c[i] = ad_rng_normal(&g), q.x[i] = ad_rng_normal(&g), q.v[i] = ad_rng_normal(&g);
    return q;
}

static ad_var quad_f(ad_tape *t, const quad_problem *q, ad_var x) {
    ad_var A = ad_const_view(t, ad_mat_shape(q->n, q->n), q->A);
    ad_var c = ad_const_view(t, ad_vec_shape(q->n), q->c);
    return ad_add(t, ad_scale(t, ad_dot(t, x, ad_matvec(t, A, x, 0)), 0.5), ad_dot(t, c, x));
}

static double quad_grad(ad_tape *t, const quad_problem *q) {
    ad_var x = ad_param(t, ad_vec_shape(q->n), q->x), g;
    ad_grad(t, quad_f(t, q, x), 1, &x, &g, 0);
    return ad_value(t, g)[0];
}

static double quad_hvp(ad_tape *t, const quad_problem *q) {
    ad_var x = ad_param(t, ad_vec_shape(q->n), q->x), h;
    ad_hvp(t, quad_f(t, q, x), x, ad_const_view(t, ad_vec_shape(q->n), q->v), &h, 0);
    return ad_value(t, h)[0];
}

// Median seconds of fn over reps, each on a rewound tape; blas: median seconds inside BLAS.
typedef double (*tape_job)(ad_tape *t, const void *p);
static double time_job(ad_tape *t, tape_job fn, const void *p, int reps, double *blas) {
    ad_mark m = ad_tape_mark(t);
    double *s = malloc((size_t)reps * sizeof *s), *b = malloc((size_t)reps * sizeof *b), sink = 0;
    for (int r = 0; r < reps; r++) {
        double b0 = ad_tape_blas_seconds(t), t0 = bench_now();
        sink += fn(t, p);
        s[r] = bench_now() - t0;
        b[r] = ad_tape_blas_seconds(t) - b0;
        ad_tape_rewind(t, m);
    }
    double med = bench_median(s, reps);
    if (blas) *blas = bench_median(b, reps);
    if (ad_tape_status(t) != AD_OK) printf("  tape error: %s\n", ad_tape_error(t));
    free(s), free(b);
    return isfinite(sink) ? med : NAN;
}

static double j_sgrad(ad_tape *t, const void *p) { return softmax_grad(t, p); }
static double j_shvp(ad_tape *t, const void *p) { return softmax_hvp(t, p); }
static double j_qgrad(ad_tape *t, const void *p) { return quad_grad(t, p); }
static double j_qhvp(ad_tape *t, const void *p) { return quad_hvp(t, p); }

static void bench_second_order(const bench_opts *o) {
    ad_tape_params tp = ad_tape_default_params();
    tp.time_blas = 1;
    ad_tape *t = ad_tape_new(&tp);
    int reps = o->quick ? 5 : 21;
    softmax_problem sp = softmax_make(5000, 784, 10, 7);
    double bg, bh;
    double tg = time_job(t, j_sgrad, &sp, reps, &bg);
    double th = time_job(t, j_shvp, &sp, reps, &bh);
    printf("(b) softmax regression 5000 x 784, 10 classes: gradient %.2f ms, Hessian-vector %.2f ms,"
           " ratio %.2f (PyTorch 1.7-2.0; target <= 2)\n", 1e3 * tg, 1e3 * th, th / tg);

    quad_problem q = quad_make(1000, 8);
    double tqg = time_job(t, j_qgrad, &q, reps * 10, NULL);
    double tqh = time_job(t, j_qhvp, &q, reps * 10, NULL);
    printf("    dense quadratic n = 1000: gradient %.1f us, Hessian-vector %.1f us, ratio %.2f "
           "(target <= 2)\n", 1e6 * tqg, 1e6 * tqh, tqh / tqg);

    // (c) the same gradient against its two cblas calls made directly, interleaved so both
    // see the same machine load
    double *Z = malloc(sizeof(double) * 5000 * 10), *dW = malloc(sizeof(double) * 784 * 10);
    double *s = malloc((size_t)reps * sizeof *s), *sg = malloc((size_t)reps * sizeof *sg);
    ad_mark m = ad_tape_mark(t);
    for (int r = 0; r < reps; r++) {
        double t0 = bench_now();
        softmax_blas_only(&sp, Z, dW);
        double t1 = bench_now();
        softmax_grad(t, &sp);
        sg[r] = bench_now() - t1;
        s[r] = t1 - t0;
        ad_tape_rewind(t, m);
    }
    double tb = bench_median(s, reps), tg2 = bench_median(sg, reps);
    printf("(c) softmax-regression gradient %.2f ms; its two cblas calls alone %.2f ms: ratio %.2f "
           "(target <= 1.2); time in products during the gradient %.2f ms (%.0f%%)\n",
           1e3 * tg2, 1e3 * tb, tg2 / tb, 1e3 * bg, 100 * bg / tg);
    free(sg);
    free(Z), free(dW), free(s);
    free(q.A), free(q.c), free(q.x), free(q.v);
    softmax_free(&sp);
    ad_tape_free(t);
}

// ---- (e) the thin-product kernel against cblas_dgemm on hyper-cleaning's two shapes ----

// X W (X [5000, 784], W [784, 10]) and X^T G (G [5000, 10]), each as GFLOP/s and as a share of
// the machine's dgemm peak: the kernel in every variant this CPU runs on the default threads (a
// pool's, as on a tape), the best one on one thread and on the pixels' codes (X as bytes), and
// cblas_dgemm. All interleaved so they see the same machine load.
enum { THIN_KINDS = 6 }; // AVX-512, AVX2, best 1 thread, best on codes, cblas, portable
static void thin_call(int kind, int ta, int threads, ad_pool *pool, const softmax_problem *p,
                      const uint8_t *codes, const double *table, double *Z, double *G, double *work) {
    int n = p->n, d = p->d, k = p->k;
    const ad_thin_isa isa[THIN_KINDS] = {AD_THIN_AVX512, AD_THIN_AVX2, AD_THIN_AUTO, AD_THIN_AUTO, 0,
                                         AD_THIN_PORTABLE};
    if (kind == 4) {
        if (!ta) cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, k, d, 1.0, p->X, d, p->W, k, 0.0, Z, k);
        else cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, k, n, 1.0, p->X, d, Z, k, 0.0, G, k);
    } else if (kind == 3) {
        if (!ta)
            ad_thin_matmul_coded(AD_THIN_AUTO, threads, pool, 0, n, k, d, codes, table, d, p->W, k, Z,
                                 work);
        else
            ad_thin_matmul_coded(AD_THIN_AUTO, threads, pool, 1, d, k, n, codes, table, d, Z, k, G,
                                 work);
    } else {
        int th = kind == 2 ? 1 : threads;
        if (!ta) ad_thin_matmul(isa[kind], th, pool, 0, 0, n, k, d, p->X, d, p->W, k, Z, work);
        else ad_thin_matmul(isa[kind], th, pool, 1, 0, d, k, n, p->X, d, Z, k, G, work);
    }
}

static void bench_thin(const bench_opts *o, double peak) {
    int n = 5000, d = 784, k = 10, reps = o->quick ? 5 : 31, threads = ad_thin_default_threads();
    ad_pool *pool = ad_pool_new(threads - 1); // as a tape's (NULL: threads made per call)
    softmax_problem p = softmax_make(n, d, k, 9);
    uint8_t *codes = malloc((size_t)n * d);
    double table[256];
    for (int c = 0; c < 256; c++) table[c] = c / 255.0;
    for (size_t i = 0; i < (size_t)n * d; i++) { // X on the 256 pixel values, as the images are
        codes[i] = (uint8_t)(p.X[i] * 255.999);
        p.X[i] = table[codes[i]];
    }
    double *Z = malloc(sizeof(double) * n * k), *G = malloc(sizeof(double) * d * k);
    double *work = aligned_alloc(64, sizeof(double) * ((ad_thin_work_size(1, d, k, n) + 7) & ~(size_t)7));
    double *s = malloc(sizeof(double) * 2 * THIN_KINDS * reps);
    for (int i = 0; i < n * k; i++) Z[i] = p.W[i % (d * k)]; // any G
    int runs[THIN_KINDS] = {ad_thin_runs(AD_THIN_AVX512), ad_thin_runs(AD_THIN_AVX2), 1, 1, 1, !o->quick};
    for (int r = 0; r < reps; r++)
        for (int v = 0; v < 2 * THIN_KINDS; v++) {
            int ta = v >= THIN_KINDS, kind = v % THIN_KINDS;
            if (!runs[kind]) continue;
            double t0 = bench_now();
            thin_call(kind, ta, threads, pool, &p, codes, table, Z, G, work);
            s[v * reps + r] = bench_now() - t0;
        }
    double gf = 2e-9 * n * d * k;
    printf("(e) the thin kernel against cblas_dgemm (%d threads) on hyper-cleaning's products, GFLOP/s"
           " and %% of the dgemm peak %.1f GFLOP/s (cblas, [1024]^3):\n", threads, peak);
    const char *names[THIN_KINDS] = {"AVX-512", "AVX2+FMA", "best, 1 thread", "best, X as bytes", "cblas_dgemm",
                                     "portable C"};
    for (int ta = 0; ta < 2; ta++) {
        double ms[THIN_KINDS];
        printf("    %s:", ta ? "X^T G [784, 5000] x [5000, 10]" : "X W [5000, 784] x [784, 10]  ");
        for (int kind = 0; kind < THIN_KINDS; kind++) {
            ms[kind] = runs[kind] ? 1e3 * bench_median(s + (ta * THIN_KINDS + kind) * reps, reps) : NAN;
            if (runs[kind])
                printf("%s %s %.2f ms %.1f (%.0f%%)", kind ? ";" : "", names[kind], ms[kind],
                       gf / ms[kind] * 1e3, 100 * gf / ms[kind] * 1e3 / peak);
        }
        double best = runs[0] ? ms[0] : ms[1];
        printf("; kernel / cblas %.2fx\n", ms[4] / best);
    }
    free(Z), free(G), free(work), free(s), free(codes);
    ad_pool_free(pool);
    softmax_free(&p);
}

void bench_autodiff(const bench_opts *o) {
    printf("autodiff benchmark (OpenBLAS %s, core %s, %d threads)\n", openblas_get_config(),
           openblas_get_corename(), openblas_get_num_threads());
    ad_tape *t = ad_tape_new(NULL);
    char kb[64];
    printf("products with <= %d output columns: %s\n", AD_THIN_MAX_N, ad_tape_product_kernel(t, kb));
    ad_tape_free(t);
    double peak = bench_dgemm_peak(o->quick);
    printf("dgemm peak (cblas, [1024, 1024]^2, best of a few): %.1f GFLOP/s\n", peak);
    bench_chain(o);
    bench_second_order(o);
    bench_thin(o, peak);
    bench_convnet(o);
}
