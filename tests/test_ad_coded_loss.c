// The coded loss ops, ad_softmax_coded and ad_xent_coded (a linear classifier on coded data as
// one op each): the values, gradients and Hessian-vector products of the composition they
// replace (softmax or xent of ad_matmul_coded) bit for bit, on 1, 2 and 3 threads; the softmax
// kept by ad_keep and given back by ad_reuse (so a re-recorded gradient computes neither the
// logits nor their exps), and so RHG's lean sweep (blo_hypergrad) on such a loss: the same
// hypergradient, one softmax per LL step instead of two; bad arguments as one-line errors.
// Finite differences: test_ad_ops.c.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"
#include "../bilevel/blo_extra.h" // blo_hypergrad: the lean sweep these ops are for

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { CN = 700, CD = 785, CK = 10 }; // X^T G sums 700 rows: two blocks of the thin kernel

typedef struct {
    uint8_t *codes, *codes_t;
    double table[256];
    int32_t labels[CN];
    double w[CN], C[CN * CK], W[CD * CK], V[CD * CK];
} coded_data;

// Pixels c / 255 with X's codes transposed (the AVX-512 strips where they run), or a table
// that is not linear and no transpose (the other kernels).
static void coded_make(coded_data *c, int pixels, uint64_t seed) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    c->codes = malloc(CN * CD);
    c->codes_t = pixels ? malloc(CN * CD) : NULL;
    for (int i = 0; i < 256; i++) c->table[i] = pixels ? i / 255.0 : ad_rng_normal(&g);
    for (int i = 0; i < CN * CD; i++) {
        uint64_t r = ad_rng_next(&g);
        c->codes[i] = (uint8_t)(r % 3 ? 0 : r >> 56); // mostly background, as images
    }
    if (c->codes_t)
        for (int i = 0; i < CN; i++)
            for (int j = 0; j < CD; j++) c->codes_t[(size_t)j * CN + i] = c->codes[(size_t)i * CD + j];
    for (int i = 0; i < CN; i++) c->labels[i] = (int32_t)(ad_rng_next(&g) % CK), c->w[i] = ad_rng_uniform(&g);
    for (int i = 0; i < CN * CK; i++) c->C[i] = ad_rng_normal(&g);
    for (int i = 0; i < CD * CK; i++) c->W[i] = 0.05 * ad_rng_normal(&g), c->V[i] = ad_rng_normal(&g);
}

static void coded_free(coded_data *c) { free(c->codes), free(c->codes_t); }

// Everything compared, in one array: P [CN, CK], f = w . ce, its gradient and Hessian times V
// in W, and the gradient of <C, P> in W and its Hessian times V.
enum { OUT_N = CN * CK + 1 + 4 * CD * CK };

static ad_var softmax_of(ad_tape *t, const ad_coded *X, ad_var W, int fused) {
    return fused ? ad_softmax_coded(t, X, W) : ad_softmax(t, ad_matmul_coded(t, X, W, 0));
}
static ad_var xent_of(ad_tape *t, const ad_coded *X, ad_var W, const int32_t *labels, int fused) {
    return fused ? ad_xent_coded(t, X, W, labels) : ad_xent(t, ad_matmul_coded(t, X, W, 0), labels);
}

static int coded_outputs(const coded_data *c, const ad_coded *X, int threads, int fused, double *out) {
    ad_tape_params tp = ad_tape_default_params();
    tp.threads = threads;
    ad_tape *t = ad_tape_new(&tp);
    ad_shape ws = ad_mat_shape(CD, CK);
    ad_var W = ad_param(t, ws, c->W), V = ad_const(t, ws, c->V);
    ad_var P = softmax_of(t, X, W, fused);
    ad_var f = ad_dot(t, ad_const(t, ad_vec_shape(CN), c->w), xent_of(t, X, W, c->labels, fused));
    ad_var h = ad_dot(t, ad_const(t, ad_mat_shape(CN, CK), c->C), P);
    ad_var r[5] = {f, AD_NONE, AD_NONE, AD_NONE, AD_NONE};
    ad_grad(t, f, 1, &W, &r[1], AD_CREATE_GRAPH);
    ad_hvp(t, f, W, V, &r[2], 0);
    ad_grad(t, h, 1, &W, &r[3], 0);
    ad_hvp(t, h, W, V, &r[4], 0);
    const double *pv = ad_value(t, P);
    if (pv) memcpy(out, pv, sizeof(double) * CN * CK);
    size_t at = CN * CK;
    for (int i = 0; i < 5; i++) {
        const double *v = ad_value(t, r[i]);
        size_t len = i ? (size_t)CD * CK : 1;
        if (v) memcpy(out + at, v, sizeof(double) * len);
        at += len;
    }
    int ok = ad_tape_status(t) == AD_OK && pv;
    if (!ok) th_failf(__FILE__, __LINE__, "threads %d, fused %d: %s", threads, fused, ad_tape_error(t));
    ad_tape_free(t);
    return ok;
}

static void same_bits(void) {
    TEST_CASE("coded loss ops: softmax_coded, xent_coded = softmax, xent of matmul_coded, bit for bit, "
              "values, gradients, Hessian products, on 1, 2 and 3 threads") {
        double *want = malloc(sizeof(double) * OUT_N), *got = malloc(sizeof(double) * OUT_N);
        for (int pixels = 0; pixels < 2; pixels++) {
            coded_data *c = malloc(sizeof *c);
            coded_make(c, pixels, 40 + (uint64_t)pixels);
            ad_coded X = {CN, CD, c->codes, c->table, NULL, c->codes_t, NULL};
            int ok = coded_outputs(c, &X, 1, 0, want);
            double scale = 0;
            for (int i = 0; ok && i < OUT_N; i++) scale = fmax(scale, fabs(want[i]));
            EXPECT(ok && scale > 0 && isfinite(scale), "pixels %d: the reference is %g", pixels, scale);
            for (int threads = 1; ok && threads <= 3; threads++)
                for (int fused = 0; fused < 2; fused++) {
                    if (!coded_outputs(c, &X, threads, fused, got)) continue;
                    double worst = 0;
                    for (int i = 0; i < OUT_N; i++) worst = fmax(worst, fabs(got[i] - want[i]));
                    EXPECT(!memcmp(got, want, sizeof(double) * OUT_N),
                           "pixels %d, threads %d, fused %d: differs from the composition on 1 thread by"
                           " up to %g (largest entry %g)", pixels, threads, fused, worst, scale);
                }
            coded_free(c);
            free(c);
        }
        free(want), free(got);
    }
}

// A gradient of w . xent_coded(X, W) recorded, kept, rewound and recorded again deferred, as the
// lean sweep does (bilevel/hypergrad.c): the softmax is reused, so computing the gradient again
// takes one product (X^T G) and no softmax; a state one bit off reuses nothing.
static void kept_softmax(void) {
    TEST_CASE("coded loss ops: ad_keep keeps softmax_coded; a re-recorded gradient reuses it, not the logits") {
        coded_data *c = malloc(sizeof *c);
        coded_make(c, 1, 52);
        ad_coded X = {CN, CD, c->codes, c->table, NULL, c->codes_t, NULL};
        const int sm = ad_op_find("softmax_coded"), mm = ad_op_find("matmul_coded");
        double *want = malloc(sizeof(double) * CD * CK), *W2 = malloc(sizeof(double) * CD * CK);
        memcpy(W2, c->W, sizeof(double) * CD * CK);
        W2[123] = nextafter(W2[123], 1e300); // one bit off
        ad_tape *t = ad_tape_new(NULL);
        ad_mark m = ad_tape_mark(t);
        ad_kept *k = NULL;
        for (int pass = 0; pass < 3; pass++) { // record and keep; again; again one bit off
            ad_var W = ad_param(t, ad_mat_shape(CD, CK), pass == 2 ? W2 : c->W), g;
            ad_mark ms = ad_tape_mark(t);
            int was = ad_tape_defer(t, pass > 0);
            ad_var f = ad_dot(t, ad_const(t, ad_vec_shape(CN), c->w), ad_xent_coded(t, &X, W, c->labels));
            ad_grad(t, f, 1, &W, &g, AD_CREATE_GRAPH);
            ad_tape_defer(t, was);
            int reused = pass ? ad_reuse(t, ms, k) : 0;
            int64_t s0 = ad_tape_op_evals(t, sm), m0 = ad_tape_op_evals(t, mm);
            const double *gv = ad_value(t, g);
            int64_t ds = ad_tape_op_evals(t, sm) - s0, dm = ad_tape_op_evals(t, mm) - m0;
            if (pass == 0) {
                if (gv) memcpy(want, gv, sizeof(double) * CD * CK);
                k = ad_keep(t, ms, SIZE_MAX);
                // P [CN, CK] and its operand W [CD, CK]: nothing else over X is a product of W
                EXPECT(k && ad_kept_bytes(k) == sizeof(double) * (CN * CK + CD * CK), "kept %zu bytes",
                       ad_kept_bytes(k));
            } else {
                EXPECT(reused == (pass == 1) && ds == (pass == 2) && dm == 1,
                       "pass %d: reused %d, softmax_coded computed %lld times, matmul_coded %lld",
                       pass, reused, (long long)ds, (long long)dm);
                EXPECT(pass == 2 || (gv && !memcmp(gv, want, sizeof(double) * CD * CK)),
                       "the reused softmax changed the gradient");
            }
            ad_tape_rewind(t, m);
        }
        EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
        ad_kept_free(k);
        ad_tape_free(t);
        free(want), free(W2);
        coded_free(c);
        free(c);
    }
}

// f = 1/n sum_i sigmoid(x_i) xent_i(X W), F = 1/2 ||y - 0.1||^2, y = W [CD, CK] flattened: as
// the composition or with xent_coded (fused).
typedef struct {
    const ad_coded *X;
    const int32_t *labels;
    int fused;
} lin_loss;
static ad_var lin_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const lin_loss *L = u;
    ad_var W = ad_reshape(t, y, ad_mat_shape(CD, CK));
    ad_var ce = xent_of(t, L->X, W, L->labels, L->fused); // [CN]
    return ad_scale(t, ad_dot(t, ad_sigmoid(t, x), ce), 1.0 / CN);
}
static ad_var lin_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)x, (void)u;
    return ad_scale(t, ad_sqnorm(t, ad_shift(t, y, -0.1)), 0.5);
}

static void lean_sweep(void) {
    TEST_CASE("coded loss ops: RHG's lean sweep on xent_coded = on the composition, bit for bit, "
              "with one softmax per LL step instead of two") {
        enum { K = 5 };
        coded_data *c = malloc(sizeof *c);
        coded_make(c, 1, 63);
        ad_coded X = {CN, CD, c->codes, c->table, NULL, c->codes_t, NULL};
        double *x = malloc(sizeof(double) * CN), *grad[2] = {malloc(sizeof(double) * CN), malloc(sizeof(double) * CN)};
        for (int i = 0; i < CN; i++) x[i] = 2 * c->w[i] - 1;
        blo_dynamics d = blo_dynamics_gd(CD * CK, (blo_gd_params){.s_l = 0.5});
        int64_t softmaxes[2] = {0, 0};
        for (int fused = 0; fused < 2; fused++) {
            lin_loss L = {&X, c->labels, fused};
            blo_problem p = {.n_x = CN, .n_y = CD * CK, .F = lin_F, .f = lin_f, .user = &L};
            ad_tape *t = ad_tape_new(NULL);
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = K, hp.tape = t, hp.graph_budget = (size_t)4 << 20; // the products kept, not the graph
            blo_hypergrad_info info = {0};
            blo_error e;
            const int op = ad_op_find(fused ? "softmax_coded" : "softmax");
            int64_t e0 = ad_tape_op_evals(t, op);
            EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, grad[fused], NULL, NULL, &info, &e) == BLO_OK,
                   "fused %d: %s", fused, e.msg);
            EXPECT(info.graph == 0, "fused %d: graph mode %d", fused, info.graph);
            softmaxes[fused] = ad_tape_op_evals(t, op) - e0;
            ad_tape_free(t);
        }
        EXPECT(!memcmp(grad[0], grad[1], sizeof(double) * CN), "xent_coded changed the hypergradient");
        // K forward steps and K re-recorded in the sweep (graph mode's size probe records its step
        // deferred, computing nothing)
        EXPECT(softmaxes[0] == 2 * K && softmaxes[1] == K, "softmaxes computed: %lld composed, "
               "%lld fused (%d and %d expected)", (long long)softmaxes[0], (long long)softmaxes[1], 2 * K, K);
        free(x), free(grad[0]), free(grad[1]);
        coded_free(c);
        free(c);
    }
}

static void bad_args(void) {
    TEST_CASE("coded loss ops: bad arguments are one-line errors naming the op") {
        static const uint8_t codes[6] = {0, 1, 2, 3, 4, 5};
        static double table[256];
        const int32_t good[3] = {0, 1, 1}, bad[3] = {0, 2, 1};
        ad_coded X = {3, 2, codes, table, NULL, NULL, NULL}, none = {3, 2, NULL, table, NULL, NULL, NULL};
        struct {
            int which; // 0: softmax_coded, 1: xent_coded
            const ad_coded *X;
            int w_rows;
            const int32_t *labels;
            ad_status st;
            const char *says;
        } cases[] = {
            {0, NULL, 2, good, AD_EARG, "softmax_coded: no matrix"},
            {0, &none, 2, good, AD_EARG, "softmax_coded: no codes or no table"},
            {0, &X, 3, good, AD_ESHAPE, "softmax_coded: shapes [3, 2] and [3, 2] do not fit"},
            {1, &X, 3, good, AD_ESHAPE, "xent_coded: shapes"},
            {1, &X, 2, bad, AD_EARG, "label 1 is 2, outside [0, 2)"},
            {1, &X, 2, NULL, AD_EARG, "NULL labels"},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            ad_tape *t = ad_tape_new(NULL);
            const double zeros[6] = {0};
            ad_var W = ad_param(t, ad_mat_shape(cases[i].w_rows, 2), zeros);
            ad_var r = cases[i].which ? ad_xent_coded(t, cases[i].X, W, cases[i].labels)
                                      : ad_softmax_coded(t, cases[i].X, W);
            EXPECT(!r && ad_tape_status(t) == cases[i].st && strstr(ad_tape_error(t), cases[i].says) &&
                       !strchr(ad_tape_error(t), '\n'),
                   "case %zu: status %d, \"%s\"", i, (int)ad_tape_status(t), ad_tape_error(t));
            ad_tape_free(t);
        }
    }
}

void test_ad_coded_loss(void) {
    same_bits();
    kept_softmax();
    lean_sweep();
    bad_args();
}
