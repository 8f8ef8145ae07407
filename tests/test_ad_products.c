// Symmetric products (symv, quadform) at the sizes that go to cblas, and shared products (the
// tape's memo, ad_memo): reused when the operands are the same, never stale after a rewind, and
// derivatives through a reused product still match finite differences.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// A [n, n] random, x [n] random: the lower triangle of A is garbage that symv must not read.
static void fill_normal(ad_rng *g, int n, double *v) {
    for (int i = 0; i < n; i++) v[i] = ad_rng_normal(g);
}

static void symmetric(void) {
    TEST_CASE("symv and quadform read the upper triangle only, on the loop and the cblas paths") {
        int sizes[3] = {5, 63, 120}; // 5 and 63: loops (63^2 < 4096); 120: dsymv and ddot rows
        ad_rng g;
        ad_rng_seed(&g, 7);
        for (int s = 0; s < 3; s++) {
            int n = sizes[s];
            double *A = malloc(sizeof(double) * n * n), *x = malloc(sizeof(double) * n);
            double *S = malloc(sizeof(double) * n * n);
            fill_normal(&g, n * n, A);
            fill_normal(&g, n, x);
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++) S[i * n + j] = i <= j ? A[i * n + j] : A[j * n + i];
            ad_tape *t = ad_tape_new(NULL);
            ad_var a = ad_const_view(t, ad_mat_shape(n, n), A), xv = ad_const(t, ad_vec_shape(n), x);
            const double *y = ad_value(t, ad_symv(t, a, xv));
            double q = ad_item(t, ad_quadform(t, a, xv)), qr = 0, worst = 0, scale = 0;
            for (int i = 0; i < n; i++) {
                double r = 0;
                for (int j = 0; j < n; j++) r += S[i * n + j] * x[j];
                worst = fmax(worst, fabs(y[i] - r));
                scale = fmax(scale, fabs(r));
                qr += 0.5 * x[i] * r;
            }
            EXPECT(worst <= 1e-13 * scale, "symv n = %d: error %g (scale %g)", n, worst, scale);
            EXPECT(fabs(q - qr) <= 1e-13 * fabs(qr), "quadform n = %d: %.17g vs %.17g", n, q, qr);
            EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
            ad_tape_free(t);
            free(A), free(x), free(S);
        }
    }
    // The loop takes rows four at a time; each y_i must still be summed in the one-row-at-a-time
    // order (lower part row by row from 0, then the row's own sum), bit for bit, at every size
    // (whole blocks, and one to three rows left over).
    TEST_CASE("symv's loop sums in the row-at-a-time order, bit for bit, at every small size") {
        ad_rng g;
        ad_rng_seed(&g, 8);
        for (int n = 1; n <= 63; n += n < 13 ? 1 : 25) {
            double *A = malloc(sizeof(double) * n * n), *x = malloc(sizeof(double) * n);
            double *r = malloc(sizeof(double) * n);
            fill_normal(&g, n * n, A);
            fill_normal(&g, n, x);
            for (int i = 0; i < n; i++) r[i] = 0;
            for (int i = 0; i < n; i++) {
                double s = A[i * n + i] * x[i];
                for (int j = i + 1; j < n; j++) {
                    s += A[i * n + j] * x[j];
                    r[j] += A[i * n + j] * x[i];
                }
                r[i] += s;
            }
            ad_tape *t = ad_tape_new(NULL);
            ad_var a = ad_const_view(t, ad_mat_shape(n, n), A), xv = ad_const(t, ad_vec_shape(n), x);
            const double *y = ad_value(t, ad_symv(t, a, xv));
            int bad = -1;
            for (int i = 0; i < n && bad < 0; i++)
                if (memcmp(&y[i], &r[i], sizeof r[i])) bad = i;
            EXPECT(bad < 0, "symv n = %d: entry %d is %.17g, the row loop gives %.17g", n, bad,
                   bad < 0 ? 0 : y[bad], bad < 0 ? 0 : r[bad]);
            ad_tape_free(t);
            free(A), free(x), free(r);
        }
    }
    TEST_CASE("symv and quadform: a non-square matrix or a wrong length is a shape error") {
        ad_tape *t = ad_tape_new(NULL);
        double A[12] = {0}, x[4] = {0};
        ad_var r = ad_symv(t, ad_const(t, ad_mat_shape(3, 4), A), ad_const(t, ad_vec_shape(4), x));
        EXPECT(r == AD_NONE && ad_tape_status(t) == AD_ESHAPE && strstr(ad_tape_error(t), "symv"),
               "%s", ad_tape_error(t));
        ad_tape_reset(t);
        r = ad_quadform(t, ad_const(t, ad_mat_shape(3, 3), A), ad_const(t, ad_vec_shape(4), x));
        EXPECT(r == AD_NONE && ad_tape_status(t) == AD_ESHAPE && strstr(ad_tape_error(t), "quadform"),
               "%s", ad_tape_error(t));
        ad_tape_free(t);
    }
}

// ---- memo ----

enum { N = 70 }; // N^2 = 4900: cblas-sized products

typedef struct {
    double *A, *B; // [N, N] each
} mats;

// f(x) = sin(B x) . (B x) + quadform(A, B x) + (B x) . x: B x recorded three times, computed once.
static ad_var memo_fn(ad_tape *t, const ad_var *in, void *ctx) {
    const mats *m = ctx;
    ad_var x = in[0];
    ad_var u = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), m->B), x, 0);
    ad_var v = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), m->B), x, 0);
    ad_var A = ad_const_view(t, ad_mat_shape(N, N), m->A);
    ad_var w = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), m->B), x, 0);
    return ad_add(t, ad_add(t, ad_dot(t, ad_sin(t, u), v), ad_quadform(t, A, w)), ad_dot(t, w, x));
}

static void memo(void) {
    ad_rng g;
    ad_rng_seed(&g, 13);
    double *A = malloc(sizeof(double) * N * N), *B = malloc(sizeof(double) * N * N);
    double x0[N];
    fill_normal(&g, N * N, A);
    fill_normal(&g, N * N, B);
    for (int i = 0; i < N * N; i++) B[i] /= sqrt(N);
    fill_normal(&g, N, x0);
    mats m = {A, B};
    int mv = ad_op_find("matvec");
    TEST_CASE("ad_op_find: names to numbers and back; an unknown name is -1") {
        EXPECT(mv >= 0 && !strcmp(ad_op_name(mv), "matvec"), "matvec is %d", mv);
        EXPECT(ad_op_find("no such op") == -1 && ad_op_find(NULL) == -1, "unknown names");
    }

    TEST_CASE("memo: the same product of a view is computed once; other operands are not reused") {
        ad_tape *t = ad_tape_new(NULL);
        ad_var x = ad_param(t, ad_vec_shape(N), x0);
        int64_t before = ad_tape_op_uses(t, mv);
        ad_var u = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), B), x, 0);
        ad_var v = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), B), x, 0);
        EXPECT(u == v && ad_tape_op_uses(t, mv) == before + 1, "u %lld v %lld", (long long)u, (long long)v);
        // transposed, another matrix, another shape of the same memory, another vector: new nodes
        ad_var ut = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), B), x, 1);
        ad_var ua = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), A), x, 0);
        ad_var us = ad_matvec(t, ad_const_view(t, ad_mat_shape(N - 1, N), B), x, 0);
        ad_var x2 = ad_param(t, ad_vec_shape(N), x0);
        ad_var u2 = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), B), x2, 0);
        EXPECT(ut != u && ua != u && us != u && u2 != u && ad_tape_op_uses(t, mv) == before + 5,
               "uses %lld", (long long)(ad_tape_op_uses(t, mv) - before));
        // a product of a product is found again too (its input was found again)
        ad_var w = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), A), u, 0);
        ad_var w2 = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), A), v, 0);
        EXPECT(w == w2 && ad_tape_op_uses(t, mv) == before + 6, "A (B x) twice: %lld %lld", (long long)w, (long long)w2);
        EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
        ad_tape_free(t);
    }
    TEST_CASE("memo: a rewind forgets the product (new memory and a new vector at the same places)") {
        ad_tape *t = ad_tape_new(NULL);
        double *C = malloc(sizeof(double) * N * N);
        memcpy(C, B, sizeof(double) * N * N);
        ad_mark mk = ad_tape_mark(t);
        ad_var x = ad_param(t, ad_vec_shape(N), x0);
        ad_var u = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), C), x, 0);
        double u0 = ad_value(t, u)[0];
        ad_tape_rewind(t, mk);
        for (int i = 0; i < N * N; i++) C[i] *= 2; // allowed: the view left the tape
        ad_var x2 = ad_param(t, ad_vec_shape(N), x0);
        ad_var u2 = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), C), x2, 0);
        EXPECT(!ad_tape_holds(t, x) && ad_value(t, u2)[0] == 2 * u0, "%g vs 2 x %g", ad_value(t, u2)[0], u0);
        ad_tape_free(t);
        free(C);
    }
    TEST_CASE("memo: gradient and Hessian through a product reused three times match FD") {
        ad_shape sh = ad_vec_shape(N);
        const double *pt[1] = {x0};
        ad_check_params cp = ad_check_default_params();
        ad_check_report rg = ad_check_grad(memo_fn, &m, 1, &sh, pt, &cp);
        ad_check_report rh = ad_check_hvp(memo_fn, &m, 1, &sh, pt, &cp);
        EXPECT(rg.pass && rh.pass, "grad: %s (rel %g); hvp: %s (rel %g)", rg.msg, rg.rel_err,
               rh.msg, rh.rel_err);
        // and the reuse did happen: one B x per recording
        ad_tape *t = ad_tape_new(NULL);
        ad_var x = ad_param(t, sh, x0);
        int64_t before = ad_tape_op_uses(t, mv);
        memo_fn(t, &x, &m);
        EXPECT(ad_tape_op_uses(t, mv) == before + 1, "%lld matvecs recorded",
               (long long)(ad_tape_op_uses(t, mv) - before));
        ad_tape_free(t);
    }
    TEST_CASE("memo: what is shared does not depend on where the matrices are in memory") {
        // Fourteen views used at each of 20 steps: each must be recorded once and B x computed
        // once, wherever the memory is (a cache indexed by a hash of the address lost views that
        // hashed alike, so the work done, and the rounding, changed from run to run).
        enum { NVEC = 12, STEPS = 20 };
        int lf = ad_op_find("leaf"), worst_mv = 0, worst_leaf = 0;
        for (int trial = 0; trial < 10; trial++) {
            double *mem = malloc(sizeof(double) * (2 * N * N + (NVEC + 1) * (N + 7 * trial + 3)));
            double *a = mem, *b = mem + N * N, *v = mem + 2 * N * N; // vectors at odd offsets
            memcpy(a, A, sizeof(double) * N * N), memcpy(b, B, sizeof(double) * N * N);
            for (int i = 0; i < (NVEC + 1) * (N + 7 * trial + 3); i++) v[i] = 1;
            ad_tape *t = ad_tape_new(NULL);
            int64_t l0 = ad_tape_op_uses(t, lf), m0 = ad_tape_op_evals(t, mv);
            ad_var x = ad_param(t, ad_vec_shape(N), x0), y = x;
            for (int k = 0; k < STEPS; k++) {
                ad_var Av = ad_const_view(t, ad_mat_shape(N, N), a);
                ad_var Bx = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, N), b), x, 0);
                y = ad_axpy(t, y, -0.01, ad_sub(t, ad_symv(t, Av, y), Bx));
                for (int i = 0; i < NVEC; i++)
                    y = ad_add(t, y, ad_const_view(t, ad_vec_shape(N), v + i * (N + 7 * trial + 3)));
            }
            ad_value(t, y);
            int n_mv = (int)(ad_tape_op_evals(t, mv) - m0), n_leaf = (int)(ad_tape_op_uses(t, lf) - l0);
            if (n_mv > worst_mv) worst_mv = n_mv;
            if (n_leaf > worst_leaf) worst_leaf = n_leaf;
            EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
            ad_tape_free(t);
            free(mem);
        }
        EXPECT(worst_mv == 1 && worst_leaf == NVEC + 3, "B x computed %d times, %d leaves recorded"
               " (1 and %d expected)", worst_mv, worst_leaf, NVEC + 3);
    }
    free(A), free(B);
}

// ---- kept products (ad_keep / ad_reuse) ----

// One "step" as a sweep re-records it: logits of a linear model over X (coded, or a view of the
// same doubles), from W sliced out of the state y (fold > 0: W = W1 W2 with W1 [d, fold] and W2
// [fold, c] sliced out of y, a small intermediate, as the folded 2-layer model's), then a product
// of a data-sized intermediate (X^T G).
static ad_var keep_step(ad_tape *t, const ad_coded *X, const double *Xd, ad_var y, int d, int c,
                        int fold) {
    ad_var W = fold ? ad_matmul(t, ad_reshape(t, ad_slice(t, y, 0, d * fold), ad_mat_shape(d, fold)),
                                ad_reshape(t, ad_slice(t, y, d * fold, fold * c), ad_mat_shape(fold, c)), 0, 0)
                    : ad_reshape(t, ad_slice(t, y, 0, d * c), ad_mat_shape(d, c));
    ad_var Z = Xd ? ad_matmul(t, ad_const_view(t, ad_mat_shape(X->rows, d), Xd), W, 0, 0)
                  : ad_matmul_coded(t, X, W, 0);
    ad_var G = ad_tanh(t, Z); // [n, c]
    return Xd ? ad_matmul(t, ad_const_view(t, ad_mat_shape(X->rows, d), Xd), G, 1, 0)
              : ad_matmul_coded(t, X, G, 1); // [d, c]
}

static void kept(void) {
    TEST_CASE("keep: a re-recorded product over a constant reuses the kept value only when its operand is equal") {
        enum { KN = 1100, KD = 100, KC = 10 }; // KN KD KC = 1.1 M multiply-adds: worth keeping
        ad_rng g;
        ad_rng_seed(&g, 91);
        uint8_t *codes = malloc(KN * KD);
        double table[256], *Xd = malloc(sizeof(double) * KN * KD), y[KD * KC], y2[KD * KC];
        for (int i = 0; i < 256; i++) table[i] = ad_rng_normal(&g);
        for (int i = 0; i < KN * KD; i++) codes[i] = (uint8_t)(ad_rng_next(&g) >> 56), Xd[i] = table[codes[i]];
        fill_normal(&g, KD * KC, y);
        memcpy(y2, y, sizeof y);
        y2[17] = nextafter(y2[17], 1e300); // one bit off
        ad_coded X = {KN, KD, codes, table, NULL, NULL, NULL};
        for (int v = 0; v < 4; v++) {
            int view = v % 2, fold = v < 2 ? 0 : 4;
            const double *xd = view ? Xd : NULL;
            const int op = ad_op_find(view ? "matmul" : "matmul_coded");
            ad_tape *t = ad_tape_new(NULL);
            ad_mark m = ad_tape_mark(t);
            ad_var yv = ad_param(t, ad_vec_shape(KD * KC), y);
            ad_mark ms = ad_tape_mark(t);
            double want[KD * KC];
            memcpy(want, ad_value(t, keep_step(t, &X, xd, yv, KD, KC, fold)), sizeof want);
            ad_kept *k = ad_keep(t, ms, SIZE_MAX), *none = ad_keep(t, ms, 1000);
            // the logits [KN, KC] and W [KD, KC] (a slice of the state, or W1 W2, 1/11 of the
            // logits' size); X^T G's operand is an intermediate as large as the logits: not kept
            EXPECT(k && ad_kept_bytes(k) == sizeof(double) * (KN * KC + KD * KC) && !none,
                   "%s%s: kept %zu bytes; a 1000-byte budget kept %p", view ? "view" : "coded",
                   fold ? ", folded" : "", ad_kept_bytes(k), (void *)none);
            ad_tape_rewind(t, m);
            for (int again = 0; again < 2; again++) { // the same state, then one bit off
                yv = ad_param(t, ad_vec_shape(KD * KC), again ? y2 : y);
                ms = ad_tape_mark(t);
                int was = ad_tape_defer(t, 1);
                ad_var r = keep_step(t, &X, xd, yv, KD, KC, fold);
                ad_tape_defer(t, was);
                int64_t e0 = ad_tape_op_evals(t, op);
                int reused = ad_reuse(t, ms, k);
                const double *got = ad_value(t, r);
                int64_t evals = ad_tape_op_evals(t, op) - e0;
                // the folded step's W1 W2 is one more matmul, computed either way
                int64_t want_evals = 1 + again + (fold && view);
                EXPECT(reused == !again && evals == want_evals, "%s%s, %s: reused %d, %lld products computed",
                       view ? "view" : "coded", fold ? ", folded" : "", again ? "one bit off" : "same state",
                       reused, (long long)evals);
                EXPECT(again || !memcmp(got, want, sizeof want), "%s%s: the reused product changed the result",
                       view ? "view" : "coded", fold ? ", folded" : "");
                ad_tape_rewind(t, m);
            }
            EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
            ad_kept_free(k);
            ad_tape_free(t);
        }
        free(codes), free(Xd);
    }
}

void test_ad_products(void) {
    symmetric();
    memo();
    kept();
}
