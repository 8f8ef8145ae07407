// The stochastic methods (stocbio, soba, f2sa) and the problem's minibatch hook (blo.h's sample):
// the same seed gives the same bits and a resumed run ends as one that ran through; each method
// converges on a least-squares toy whose minibatches are drawn from the seed; with the full data
// each equals its deterministic limit (stocbio the neumann method, soba and f2sa an independent
// implementation of their iterations on the toy's closed-form derivatives).
#include "harness.h"
#include "tests.h"

#include "../bilevel/methods.h"
#include "../models/models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---- the toy: least squares over samples, realizable at both levels ----------------------------------
//
//   f(x, y) = 1/N sum_i 1/2 (a_i^T y - b_i^T x - c_i)^2,   F(x, y) = 1/M sum_j 1/2 (d_j^T y - e_j)^2
//
// with b_i = W^T a_i, c_i = a_i^T w0 (so y*(x) = W x + w0 fits every sample) and e_j = d_j^T y_t,
// y_t = W x_t + w0 (so F is 0 at x* = x_t). A minibatch's gradients are not the full ones along
// the way but all vanish at the solution: a method with constant steps can reach it exactly.
enum { NX = 2, NY = 3, NS = 64, BATCH = 8 };

typedef struct {
    double A[NS][NY], Bm[NS][NX], c[NS], D[NS][NY], e[NS];
    double x_star[NX];
    // the selected rows (a minibatch, or all NS)
    int n_ll, n_ul;
    double As[NS][NY], Bs[NS][NX], cs[NS], Ds[NS][NY], es[NS];
} toy;

static void select_rows(toy *q, int ll, int n, const int *rows) {
    for (int k = 0; k < n; k++) {
        int r = rows ? rows[k] : k;
        if (ll) {
            memcpy(q->As[k], q->A[r], sizeof q->As[k]), memcpy(q->Bs[k], q->Bm[r], sizeof q->Bs[k]);
            q->cs[k] = q->c[r];
        } else {
            memcpy(q->Ds[k], q->D[r], sizeof q->Ds[k]);
            q->es[k] = q->e[r];
        }
    }
    if (ll) q->n_ll = n;
    else q->n_ul = n;
}

static int toy_sample(void *user, int which, ad_rng *rng) {
    toy *q = user;
    int rows[BATCH];
    if (which == BLO_SAMPLE_FULL) {
        select_rows(q, 1, NS, NULL), select_rows(q, 0, NS, NULL);
        return 0;
    }
    if (!rng) return -1;
    for (int k = 0; k < BATCH; k++) rows[k] = (int)(ad_rng_next(rng) % NS);
    select_rows(q, which == BLO_SAMPLE_LL, BATCH, rows);
    return 0;
}

// Refuses every draw (the full data is always there).
static int refuse_sample(void *user, int which, ad_rng *rng) {
    (void)rng;
    return which == BLO_SAMPLE_FULL ? toy_sample(user, which, NULL) : -1;
}

static ad_var toy_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *q = u;
    int n = q->n_ll;
    ad_var A = ad_const_view(t, ad_mat_shape(n, NY), &q->As[0][0]);
    ad_var B = ad_const_view(t, ad_mat_shape(n, NX), &q->Bs[0][0]);
    ad_var r = ad_sub(t, ad_sub(t, ad_matvec(t, A, y, 0), ad_matvec(t, B, x, 0)),
                      ad_const_view(t, ad_vec_shape(n), q->cs));
    return ad_scale(t, ad_sqnorm(t, r), 0.5 / n);
}

static ad_var toy_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *q = u;
    int n = q->n_ul;
    (void)x;
    ad_var D = ad_const_view(t, ad_mat_shape(n, NY), &q->Ds[0][0]);
    ad_var r = ad_sub(t, ad_matvec(t, D, y, 0), ad_const_view(t, ad_vec_shape(n), q->es));
    return ad_scale(t, ad_sqnorm(t, r), 0.5 / n);
}

static void toy_make(toy *q, uint64_t seed) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    double W[NY][NX], w0[NY], yt[NY];
    memset(q, 0, sizeof *q);
    for (int i = 0; i < NY; i++) {
        for (int j = 0; j < NX; j++) W[i][j] = ad_rng_normal(&g);
        w0[i] = ad_rng_normal(&g);
    }
    for (int j = 0; j < NX; j++) q->x_star[j] = ad_rng_normal(&g);
    for (int i = 0; i < NY; i++) {
        yt[i] = w0[i];
        for (int j = 0; j < NX; j++) yt[i] += W[i][j] * q->x_star[j];
    }
    for (int s = 0; s < NS; s++) {
        for (int i = 0; i < NY; i++) q->A[s][i] = ad_rng_normal(&g), q->D[s][i] = ad_rng_normal(&g);
        for (int j = 0; j < NX; j++)
            for (int i = 0; i < NY; i++) q->Bm[s][j] += W[i][j] * q->A[s][i];
        for (int i = 0; i < NY; i++) q->c[s] += q->A[s][i] * w0[i], q->e[s] += q->D[s][i] * yt[i];
    }
    toy_sample(q, BLO_SAMPLE_FULL, NULL);
}

static blo_problem toy_problem(toy *q, int stochastic) {
    return (blo_problem){.n_x = NX, .n_y = NY, .F = toy_F, .f = toy_f, .user = q,
                         .sample = stochastic ? toy_sample : NULL};
}

static blo_config *config(const char *method, const char *settings) {
    blo_error e;
    blo_config *c = blo_config_new(blo_method_find(method), &e);
    EXPECT(c, "%s: %s", method, e.msg);
    if (c) EXPECT(blo_config_apply(c, settings, &e) == BLO_OK, "%s %s: %s", method, settings, e.msg);
    return c;
}

// x after a run of c on p from x = 0, y = 0 into x [NX]; false if it failed.
static bool run(const blo_problem *p, const blo_config *c, double *x) {
    blo_error e;
    blo_solver *s = c ? blo_solver_new(p, c, NULL, NULL, NULL, &e) : NULL;
    bool ok = s && blo_solver_run(s) == BLO_OK;
    EXPECT(ok, "run: %s", s ? blo_solver_error(s) : c ? e.msg : "no configuration");
    if (ok) memcpy(x, blo_solver_x(s), sizeof(double) * NX);
    blo_solver_free(s);
    return ok;
}

// Each method with settings that converge on the toy (steps within 2 / ||H||; ||H|| ~ 3 here).
static const struct {
    const char *method, *settings;
} methods[] = {
    {"stocbio", "D=5 alpha=0.2 Q=10 eta=0.2 optimizer=plain lr_x=0.1"},
    {"soba", "rho=0.2 optimizer=plain lr_x=0.05"},
    {"f2sa", "T=5 gamma=0.2 lambda0=1 delta=0.5 lambda_max=10 optimizer=plain lr_x=0.05"},
};
enum { N_METHODS = sizeof methods / sizeof methods[0] };

static void determinism_cases(void) {
    toy q;
    toy_make(&q, 7);
    blo_problem p = toy_problem(&q, 1);
    TEST_CASE("stochastic: the same seed gives the same bits, another seed other bits") {
        for (int m = 0; m < N_METHODS; m++) {
            double a[NX], b[NX], c2[NX];
            blo_config *c = config(methods[m].method, methods[m].settings);
            blo_error e;
            blo_config_apply(c, "ul_iters=20 solver_seed=3", &e);
            bool ok = run(&p, c, a) && run(&p, c, b);
            blo_config_set(c, "solver_seed", "4", &e);
            ok = ok && run(&p, c, c2);
            EXPECT(ok && !memcmp(a, b, sizeof a), "%s: %.17g vs %.17g", methods[m].method, a[0], b[0]);
            EXPECT(ok && memcmp(a, c2, sizeof a), "%s: seeds 3 and 4 gave the same x", methods[m].method);
            blo_config_free(c);
        }
    }
    TEST_CASE("stochastic: saved after 7 iterations and resumed ends with the bits of 15 straight") {
        char path[] = "/tmp/hypertape-stoch-XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0) close(fd);
        for (int m = 0; m < N_METHODS; m++) {
            double a[NX];
            blo_error e;
            blo_config *c = config(methods[m].method, methods[m].settings);
            blo_config_apply(c, "ul_iters=15 solver_seed=5", &e);
            bool ok = run(&p, c, a);
            blo_config_set(c, "ul_iters", "7", &e);
            blo_solver *s = blo_solver_new(&p, c, NULL, NULL, NULL, &e);
            ok = ok && s && blo_solver_run(s) == BLO_OK && blo_solver_save(s, path, "", &e) == BLO_OK;
            blo_config_set(c, "ul_iters", "15", &e);
            blo_solver *r = blo_solver_new(&p, c, NULL, NULL, NULL, &e);
            // the resumed solver first runs elsewhere: the load must bring back the generator
            ok = ok && r && blo_solver_step(r) == BLO_OK && blo_solver_load(r, path, &e) == BLO_OK &&
                 blo_solver_run(r) == BLO_OK;
            EXPECT(ok && !memcmp(a, blo_solver_x(r), sizeof a), "%s: resumed %.17g vs %.17g (%s)",
                   methods[m].method, r ? blo_solver_x(r)[0] : NAN, a[0], e.msg);
            blo_solver_free(s), blo_solver_free(r);
            blo_config_free(c);
        }
        unlink(path);
    }
}

static void convergence_cases(void) {
    TEST_CASE("stochastic: each method reaches x* of the toy with minibatches of 8 of 64 samples") {
        toy q;
        toy_make(&q, 11);
        blo_problem p = toy_problem(&q, 1);
        for (int m = 0; m < N_METHODS; m++) {
            double x[NX];
            blo_error e;
            blo_config *c = config(methods[m].method, methods[m].settings);
            blo_config_apply(c, "ul_iters=10000 solver_seed=1", &e);
            double d = 0, n = 0;
            if (run(&p, c, x))
                for (int j = 0; j < NX; j++) d += pow(x[j] - q.x_star[j], 2), n += pow(q.x_star[j], 2);
            EXPECT(sqrt(d / n) < 1e-6, "%s: ||x - x*|| / ||x*|| = %.3g (x = %.9g, %.9g; x* = %.9g, %.9g)",
                   methods[m].method, sqrt(d / n), x[0], x[1], q.x_star[0], q.x_star[1]);
            blo_config_free(c);
        }
    }
}

// ---- the deterministic limits ----------------------------------------------------------------------

// Closed forms on the full toy: gy = grad_y f, gx = grad_x f, Fy = grad_y F, Hv = H v, Mv =
// (d²f/dx dy) v (any output may be NULL).
static void toy_derivs(const toy *q, const double *x, const double *y, const double *v, double *gy,
                       double *gx, double *Fy, double *Hv, double *Mv) {
    double r[NS], Av[NS], s[NS];
    for (int k = 0; k < NS; k++) {
        r[k] = -q->c[k], Av[k] = 0, s[k] = -q->e[k];
        for (int i = 0; i < NY; i++) r[k] += q->A[k][i] * y[i], Av[k] += q->A[k][i] * (v ? v[i] : 0),
                                     s[k] += q->D[k][i] * y[i];
        for (int j = 0; j < NX; j++) r[k] -= q->Bm[k][j] * x[j];
    }
    for (int i = 0; i < NY; i++) {
        double a = 0, b = 0, h = 0;
        for (int k = 0; k < NS; k++) a += q->A[k][i] * r[k], b += q->D[k][i] * s[k], h += q->A[k][i] * Av[k];
        if (gy) gy[i] = a / NS;
        if (Fy) Fy[i] = b / NS;
        if (Hv) Hv[i] = h / NS;
    }
    for (int j = 0; j < NX; j++) {
        double a = 0, m = 0;
        for (int k = 0; k < NS; k++) a -= q->Bm[k][j] * r[k], m -= q->Bm[k][j] * Av[k];
        if (gx) gx[j] = a / NS;
        if (Mv) Mv[j] = m / NS;
    }
}

// SOBA's iteration (its directions at one point, then all three stepped) on the closed forms.
static void soba_reference(const toy *q, int T, double rho, double lr, double *x) {
    double y[NY] = {0}, v[NY] = {0}, gy[NY], Fy[NY], Hv[NY], Mv[NX];
    memset(x, 0, sizeof(double) * NX);
    for (int t = 0; t < T; t++) {
        toy_derivs(q, x, y, v, gy, NULL, Fy, Hv, Mv);
        for (int i = 0; i < NY; i++) y[i] -= rho * gy[i], v[i] -= rho * (Hv[i] + Fy[i]);
        for (int j = 0; j < NX; j++) x[j] -= lr * Mv[j]; // grad_x F = 0
    }
}

// F2SA's iteration (T inner steps on z and y, then x) on the closed forms.
static void f2sa_reference(const toy *q, int T_ul, int T, double gamma, double l0, double delta,
                           double lmax, double lr, double *x) {
    double z[NY] = {0}, y[NY] = {0}, g[NY], Fy[NY], fy[NX], fz[NX];
    memset(x, 0, sizeof(double) * NX);
    for (int t = 0; t < T_ul; t++) {
        double lambda = fmin(l0 + delta * t, lmax);
        for (int k = 0; k < T; k++) {
            toy_derivs(q, x, z, NULL, g, NULL, NULL, NULL, NULL);
            for (int i = 0; i < NY; i++) z[i] -= gamma * g[i];
            toy_derivs(q, x, y, NULL, g, NULL, Fy, NULL, NULL);
            for (int i = 0; i < NY; i++) y[i] -= gamma / lambda * (Fy[i] + lambda * g[i]);
        }
        toy_derivs(q, x, y, NULL, NULL, fy, NULL, NULL, NULL);
        toy_derivs(q, x, z, NULL, NULL, fz, NULL, NULL, NULL);
        for (int j = 0; j < NX; j++) x[j] -= lr * lambda * (fy[j] - fz[j]);
    }
}

static bool close_to(const double *a, const double *b, double rtol) {
    for (int j = 0; j < NX; j++)
        if (!(fabs(a[j] - b[j]) <= rtol * fmax(1, fabs(b[j])))) return false;
    return true;
}

static void limit_cases(void) {
    toy q;
    toy_make(&q, 13);
    blo_problem full = toy_problem(&q, 0);
    TEST_CASE("stochastic: stocbio on the full data is the neumann method with warm starts") {
        double a[NX], b[NX];
        blo_config *s = config("stocbio", "D=6 alpha=0.2 Q=8 eta=0.15 optimizer=plain lr_x=0.1 ul_iters=12");
        blo_config *n = config("neumann", "ll_iters=6 s_l=0.2 J=8 eta=0.15 warm_start=1 optimizer=plain "
                                          "lr_x=0.1 ul_iters=12");
        bool ok = run(&full, s, a) && run(&full, n, b);
        EXPECT(ok && !memcmp(a, b, sizeof a), "stocbio x = (%.17g, %.17g), neumann (%.17g, %.17g)", a[0], a[1],
               b[0], b[1]);
        blo_config_free(s), blo_config_free(n);
    }
    TEST_CASE("stochastic: soba and f2sa on the full data follow their iterations on closed forms") {
        double a[NX], b[NX];
        blo_config *c = config("soba", "rho=0.2 optimizer=plain lr_x=0.05 ul_iters=40");
        soba_reference(&q, 40, 0.2, 0.05, b);
        EXPECT(run(&full, c, a) && close_to(a, b, 1e-12), "soba x = (%.17g, %.17g), reference (%.17g, %.17g)",
               a[0], a[1], b[0], b[1]);
        blo_config_free(c);
        c = config("f2sa", "T=4 gamma=0.2 lambda0=2 delta=0.5 lambda_max=4 optimizer=plain lr_x=0.05 ul_iters=12");
        f2sa_reference(&q, 12, 4, 0.2, 2, 0.5, 4, 0.05, b);
        EXPECT(run(&full, c, a) && close_to(a, b, 1e-12), "f2sa x = (%.17g, %.17g), reference (%.17g, %.17g)",
               a[0], a[1], b[0], b[1]);
        blo_config_free(c);
    }
    TEST_CASE("stochastic: a sample callback that fails stops each method with a message, x unchanged") {
        blo_problem bad = toy_problem(&q, 1);
        bad.sample = refuse_sample;
        for (int m = 0; m < N_METHODS; m++) {
            blo_error e;
            blo_config *c = config(methods[m].method, methods[m].settings);
            blo_solver *s = blo_solver_new(&bad, c, NULL, NULL, NULL, &e);
            EXPECT(s && blo_solver_step(s) == BLO_ECALLBACK && strstr(blo_solver_error(s), "sample callback") &&
                       blo_solver_x(s)[0] == 0 && blo_solver_iterations(s) == 0,
                   "%s: %s", methods[m].method, s ? blo_solver_error(s) : e.msg);
            blo_solver_free(s);
            blo_config_free(c);
        }
    }
}

// Hyper-cleaning's minibatches at y = 0, where every sample's loss is log 10: after an LL draw f
// is log(10) / B sum_k sigma(x_{r_k}) over the rows r_k the seed draws (uniform, with
// replacement), and grad_x f is sigma'(x_r) log(10) / B times how often r was drawn, zero
// elsewhere; a full draw gives the full objectives' bits.
static void hyperclean_cases(void) {
    TEST_CASE("stochastic: hyperclean's batch draws the seed's rows; the full draw is the full problem") {
        enum { N = 200, B = 16 };
        mdl_model m, full;
        char err[400];
        int ok = !mdl_make_named("hyperclean", "n_train=200 n_val=50 n_test=50 batch=16", &m, err, sizeof err);
        EXPECT(ok, "%s", err);
        int ok_full = ok && !mdl_make_named("hyperclean", "n_train=200 n_val=50 n_test=50", &full, err, sizeof err);
        EXPECT(!ok || ok_full, "%s", err);
        if (ok && ok_full) {
            const blo_problem *p = &m.prob;
            double x[N], *y = calloc((size_t)p->n_y, sizeof(double)), gx[N], f, F, f0, F0;
            double *y1 = malloc(sizeof(double) * (size_t)p->n_y);
            ad_rng g, h;
            ad_rng_seed(&g, 9);
            for (int i = 0; i < N; i++) x[i] = ad_rng_normal(&g);
            for (int i = 0; i < p->n_y; i++) y1[i] = 0.01 * ad_rng_normal(&g);
            blo_error e;
            EXPECT(p->sample && !full.prob.sample, "the batch setting gives a sample callback");
            // full: the same bits as the model without batches, at a y with distinct losses
            blo_eval(p, 0, x, y1, &f, NULL, NULL, NULL, &e), blo_eval(&full.prob, 0, x, y1, &f0, NULL, NULL, NULL, &e);
            blo_eval(p, 1, x, y1, &F, NULL, NULL, NULL, &e), blo_eval(&full.prob, 1, x, y1, &F0, NULL, NULL, NULL, &e);
            EXPECT(f == f0 && F == F0, "full data: f %.17g vs %.17g, F %.17g vs %.17g", f, f0, F, F0);
            // an LL draw from seed 4, replayed here
            ad_rng_seed(&g, 4), h = g;
            EXPECT(blo_sample(p, BLO_SAMPLE_LL, &g, &e) == BLO_OK, "%s", e.msg);
            EXPECT(blo_eval(p, 0, x, y, &f, gx, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
            double want = 0, wg[N] = {0}, L = log(10.0);
            for (int k = 0; k < B; k++) {
                int r = (int)(ad_rng_uniform(&h) * N);
                double sg = 1 / (1 + exp(-x[r]));
                want += sg * L / B, wg[r] += sg * (1 - sg) * L / B;
            }
            EXPECT(fabs(f - want) <= 1e-14 * want, "f on the draw %.17g, expected %.17g", f, want);
            double worst = 0;
            for (int i = 0; i < N; i++) worst = fmax(worst, fabs(gx[i] - wg[i]));
            EXPECT(worst <= 1e-15, "grad_x f on the draw: worst entry off by %.3g", worst);
            EXPECT(blo_sample(p, BLO_SAMPLE_UL, NULL, &e) == BLO_ECALLBACK, "a draw without a generator fails");
            blo_sample(p, BLO_SAMPLE_FULL, NULL, &e);
            blo_eval(p, 0, x, y1, &f, NULL, NULL, NULL, &e);
            EXPECT(f == f0, "full again: f %.17g vs %.17g", f, f0);
            free(y), free(y1);
        }
        if (ok) mdl_free(&m);
        if (ok_full) mdl_free(&full);
    }
}

void test_bilevel_stochastic(void) {
    hyperclean_cases();
    determinism_cases();
    convergence_cases();
    limit_cases();
}
