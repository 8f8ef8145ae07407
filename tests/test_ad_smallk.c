// The small-k product kernel (autodiff/smallk.c) against the ordered fma loop: bitwise, every
// variant this CPU runs (portable, AVX2, AVX-512), all four transposes, 1, 2 and 3 threads, over
// a table of shapes (k = 1 .. 16; n below, at and past a panel of 64 columns; strides; one row;
// empty C); and through the tape, ad_matmul of the MLP's shape G W2^T, [5000, 10] x [300, 10]^T,
// which the tape sends to it: bitwise the loop's, and cblas's (kernels off) to rounding.
//
// Tolerance (against cblas): the same k products summed in another order, without fusing:
// |a - b| <= 2 k eps sum_p |a_ip b_pj|, k = 10: 2 k eps relative to that sum.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"
#include "../autodiff/smallk.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int ta, tb, m, n, k, pad; // pad: extra columns in A's and B's row strides
} sk_case;

static const sk_case cases[] = {
    {0, 1, 100, 300, 10, 0}, {0, 0, 70, 64, 16, 3}, {1, 0, 77, 65, 7, 1}, {1, 1, 33, 129, 1, 0},
    {0, 0, 1, 17, 3, 2},     {1, 1, 40, 63, 16, 5}, {0, 1, 64, 1000, 2, 0}, {0, 0, 0, 50, 4, 0},
    {0, 0, 9, 0, 4, 0},
};

// op(X)_ij of a row-major X with row stride ld.
static double at(const double *X, int ld, int t, int i, int j) {
    return t ? X[(size_t)j * ld + i] : X[(size_t)i * ld + j];
}

static void ordered_loop(const sk_case *c, const double *A, int lda, const double *B, int ldb, double *R) {
    for (int i = 0; i < c->m; i++)
        for (int j = 0; j < c->n; j++) {
            double s = 0.0;
            for (int p = 0; p < c->k; p++) s = fma(at(A, lda, c->ta, i, p), at(B, ldb, c->tb, p, j), s);
            R[(size_t)i * c->n + j] = s;
        }
}

static double *rand_mat(ad_rng *g, size_t n) {
    double *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = ad_rng_normal(g);
    return x;
}

static void check_case(ad_rng *g, const sk_case *c) {
    int lda = (c->ta ? c->m : c->k) + c->pad, ldb = (c->tb ? c->k : c->n) + c->pad;
    double *A = rand_mat(g, (size_t)(c->ta ? c->k : c->m) * lda);
    double *B = rand_mat(g, (size_t)(c->tb ? c->n : c->k) * ldb);
    size_t size = (size_t)c->m * c->n;
    double *R = malloc((size + 1) * sizeof *R), *C = malloc((size + 1) * sizeof *C);
    double *work = aligned_alloc(64, (ad_smallk_work_size(c->n, c->k) + 7) / 8 * 8 * sizeof(double));
    ordered_loop(c, A, lda, B, ldb, R);
    const ad_thin_isa isas[3] = {AD_THIN_PORTABLE, AD_THIN_AVX2, AD_THIN_AVX512};
    for (int v = 0; v < 3; v++) {
        if (!ad_thin_runs(isas[v])) continue;
        for (int th = 1; th <= 3; th++) {
            for (size_t i = 0; i <= size; i++) C[i] = 12345;
            ad_smallk_matmul(isas[v], th, NULL, c->ta, c->tb, c->m, c->n, c->k, A, lda, B, ldb, C, work);
            EXPECT(!memcmp(C, R, size * sizeof *C) && C[size] == 12345,
                   "[%d, %d]%s x [%d, %d]%s, %s, %d threads: not the ordered loop's bits", c->m, c->k,
                   c->ta ? "^T" : "", c->k, c->n, c->tb ? "^T" : "", ad_thin_name(isas[v]), th);
        }
    }
    free(A), free(B), free(R), free(C), free(work);
}

static void tape_case(ad_rng *g) {
    enum { M = 5000, N = 300, K = 10 };
    double *G = rand_mat(g, (size_t)M * K), *W = rand_mat(g, (size_t)N * K);
    double *R = malloc(sizeof(double) * M * N);
    sk_case c = {0, 1, M, N, K, 0};
    ordered_loop(&c, G, K, W, K, R);
    double worst_bits = 0, worst_cblas = 0;
    for (int on = 1; on >= 0; on--) {
        ad_tape *t = ad_tape_new(NULL);
        ad_tape_thin_products(t, on);
        ad_var y = ad_matmul(t, ad_const(t, ad_mat_shape(M, K), G), ad_const(t, ad_mat_shape(N, K), W), 0, 1);
        const double *v = ad_value(t, y);
        EXPECT(v && ad_tape_status(t) == AD_OK, "matmul: %s", ad_tape_error(t));
        for (int i = 0; v && i < M; i++)
            for (int j = 0; j < N; j++) {
                double d = fabs(v[(size_t)i * N + j] - R[(size_t)i * N + j]), s = 0;
                for (int p = 0; p < K; p++) s += fabs(G[(size_t)i * K + p] * W[(size_t)j * K + p]);
                if (on) worst_bits = fmax(worst_bits, d);
                else worst_cblas = fmax(worst_cblas, d / (s + 1e-300));
            }
        ad_tape_free(t);
    }
    bool kernel = ad_thin_best() != AD_THIN_PORTABLE; // the tape's kernels run: it takes the product
    EXPECT(!kernel || worst_bits == 0, "tape G W2^T: off the ordered loop's bits by %g", worst_bits);
    EXPECT(worst_cblas <= 2 * K * DBL_EPSILON, "tape G W2^T on cblas: %g relative off the loop", worst_cblas);
    free(G), free(W), free(R);
}

void test_ad_smallk(void) {
    TEST_CASE("small-k products: the ordered fma loop bitwise, any variant, transpose and thread count") {
        ad_rng g;
        ad_rng_seed(&g, 601);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&g, &cases[i]);
    }
    TEST_CASE("small-k products: the tape's G W2^T [5000, 10] x [300, 10]^T, its bits, and cblas's to rounding") {
        ad_rng g;
        ad_rng_seed(&g, 602);
        tape_case(&g);
    }
}
