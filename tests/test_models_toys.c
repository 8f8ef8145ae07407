// The toy models (models/toys.c): F and f against central differences at a random point and at
// the start points; the stated optima are stationary (grad_y f = 0 at (x*, y*), and the reduced
// UL gradient d/dx F(x, y*(x)) vanishes, by central differences through an explicit y*(x) written
// here independently of the model; the KKT sign where x* is on the box boundary); F(x*, y*) = F*;
// the quadratic's matrices and optimum against an independent solve; and the settings' errors.
//
// Tolerances. F and f are smooth with moderate derivatives at the points used, so central
// differences with h = 1e-5 carry an error ~h^2 |phi'''| / 6 + eps |phi| / h < 1e-8: the reduced
// gradient must vanish to 1e-7. Closed-form optima are exact to rounding: grad_y f and F - F*
// must vanish to 1e-12 (relative to the size of the numbers involved).
#include "harness.h"
#include "tests.h"

#include "../models/models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

// Set HYPERTAPE_TEST_VERBOSE=1 to print the measured errors.
static int verbose(void) {
    const char *v = getenv("HYPERTAPE_TEST_VERBOSE");
    return v && *v && *v != '0';
}

static int make(const char *name, int n_set, const char *const *set, mdl_model *m) {
    char err[256] = "", sets[512];
    int rc = mdl_make_named(name, th_join(sets, sizeof sets, n_set, set), m, err, sizeof err);
    EXPECT(rc == 0, "%s: %s", name, err);
    return rc;
}

// ---- gradients of F and f by finite differences -----------------------------------------------------

typedef struct {
    const blo_problem *p;
    int upper;
} obj_ctx;

// in[0] = x [n_x], in[1] = y [n_y]
static ad_var obj_fn(ad_tape *t, const ad_var *in, void *ctx) {
    const obj_ctx *c = ctx;
    return c->upper ? c->p->F(t, in[0], in[1], c->p->user) : c->p->f(t, in[0], in[1], c->p->user);
}

static void check_grads_at(const mdl_model *m, const double *x, const double *y, const char *where) {
    ad_shape sh[2] = {ad_vec_shape(m->prob.n_x), ad_vec_shape(m->prob.n_y)};
    const double *pt[2] = {x, y};
    for (int upper = 1; upper >= 0; upper--) {
        obj_ctx c = {&m->prob, upper};
        ad_check_report r = ad_check_grad(obj_fn, &c, 2, sh, pt, NULL); // h 1e-5, rtol 1e-6, atol 1e-9
        EXPECT(r.status == AD_OK && r.pass, "%s: %s at %s: worst ratio %.3g (analytic %.10g, numeric "
               "%.10g, input %d [%d]) %s", m->name, upper ? "F" : "f", where, r.worst_ratio, r.analytic,
               r.numeric, r.worst_input, r.worst_index, r.msg);
        if (verbose())
            printf("  %-14s %s at %-6s: worst rel err %.2e (ratio to tolerance %.2e)\n", m->name,
                   upper ? "F" : "f", where, r.rel_err, r.worst_ratio);
    }
}

static void check_grads(const mdl_model *m, double scale, uint64_t seed) {
    int nx = m->prob.n_x, ny = m->prob.n_y;
    double *x = malloc(sizeof(double) * (size_t)(nx + ny)), *y = x + nx;
    ad_rng g;
    ad_rng_seed(&g, seed);
    for (int i = 0; i < nx + ny; i++) x[i] = scale * ad_rng_normal(&g);
    check_grads_at(m, x, y, "random");
    for (int s = 0; s < m->n_starts; s++) check_grads_at(m, m->x0[s], m->y0[s], "start");
    free(x);
}

// ---- the optimum ----------------------------------------------------------------------------------------

// y*(x) [n_y]: an LL solution as an explicit function of x, the test's own formula.
typedef void (*ystar_fn)(const mdl_model *m, const double *x, double *y, const void *ctx);

static double phi(const mdl_model *m, ystar_fn ys, const void *ctx, const double *x, double *ybuf) {
    ys(m, x, ybuf, ctx);
    double v = NAN;
    blo_error e;
    EXPECT(blo_eval(&m->prob, 1, x, ybuf, &v, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
    return v;
}

// Central differences of phi(x) = F(x, y*(x)) at x [n_x] -> g [n_x].
static void reduced_grad(const mdl_model *m, ystar_fn ys, const void *ctx, const double *x0, double *g) {
    int nx = m->prob.n_x;
    double *x = malloc(sizeof(double) * (size_t)(nx + m->prob.n_y)), *y = x + nx;
    memcpy(x, x0, sizeof(double) * (size_t)nx);
    for (int i = 0; i < nx; i++) {
        double h = 1e-5 * fmax(1, fabs(x0[i]));
        x[i] = x0[i] + h;
        double fp = phi(m, ys, ctx, x, y);
        x[i] = x0[i] - h;
        double fm = phi(m, ys, ctx, x, y);
        x[i] = x0[i];
        g[i] = (fp - fm) / (2 * h);
    }
    free(x);
}

static double norm_inf(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s = fmax(s, fabs(v[i]));
    return s;
}

// (x*, y*) is stationary: ||grad_y f||_inf <= 1e-12 scale, the reduced gradient vanishes to
// 1e-7 (or equals kkt, the expected gradient where x* sits on the box boundary), F(x*, y*) = F*.
static void check_optimum(const mdl_model *m, ystar_fn ys, const void *ctx, const double *x_star,
                          const double *kkt) {
    int nx = m->prob.n_x, ny = m->prob.n_y;
    const double *xs = x_star ? x_star : m->x_star;
    double *gy = malloc(sizeof(double) * (size_t)(ny + nx + ny)), *g = gy + ny, *yx = g + nx;
    double F = NAN, fval;
    blo_error e;
    EXPECT(blo_eval(&m->prob, 0, xs, m->y_star, &fval, NULL, gy, NULL, &e) == BLO_OK, "%s", e.msg);
    double ygrad = norm_inf(gy, ny);
    EXPECT(ygrad <= 1e-12 * fmax(1, fabs(fval)), "%s: ||grad_y f(x*, y*)|| = %.3g", m->name, ygrad);
    // y*(x*) from the test's formula is the model's y*
    ys(m, xs, yx, ctx);
    double dy = 0;
    for (int i = 0; i < ny; i++) dy = fmax(dy, fabs(yx[i] - m->y_star[i]));
    EXPECT(dy <= 1e-12 * fmax(1, norm_inf(m->y_star, ny)), "%s: y* differs from y*(x*) by %.3g", m->name, dy);
    reduced_grad(m, ys, ctx, xs, g);
    double worst = 0;
    for (int i = 0; i < nx; i++) worst = fmax(worst, fabs(g[i] - (kkt ? kkt[i] : 0)));
    EXPECT(worst <= 1e-7, "%s: reduced gradient off by %.3g (g[0] = %.10g)", m->name, worst, g[0]);
    EXPECT(blo_eval(&m->prob, 1, xs, m->y_star, &F, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
    EXPECT(fabs(F - m->F_star) <= 1e-12 * fmax(1, fabs(m->F_star)), "%s: F(x*, y*) = %.15g, F* = %.15g",
           m->name, F, m->F_star);
    if (verbose())
        printf("  %-14s optimum: |grad_y f| %.2e, |y*(x*) - y*| %.2e, reduced grad err %.2e, |F - F*| %.2e\n",
               m->name, ygrad, dy, worst, fabs(F - m->F_star));
    free(gy);
}

// the explicit LL solutions
static void ys_ex1(const mdl_model *m, const double *x, double *y, const void *ctx) {
    (void)m, (void)ctx;
    y[0] = y[1] = x[0];
}
static void ys_llc(const mdl_model *m, const double *x, double *y, const void *ctx) {
    (void)ctx;
    for (int i = 0, n = m->prob.n_x; i < n; i++) y[i] = y[n + i] = x[i];
}
static void ys_lls(const mdl_model *m, const double *x, double *y, const void *ctx) {
    (void)ctx;
    for (int i = 0, n = m->prob.n_x; i < n; i++) y[i] = y[n + i] = x[i] / 2;
}
// nonconvex: the branch y_i = 3 pi/2 + c_i - x, c_i = 2
static void ys_nc(const mdl_model *m, const double *x, double *y, const void *ctx) {
    (void)ctx;
    for (int i = 0; i < m->prob.n_y; i++) y[i] = 1.5 * PI + 2 - x[0];
}
// sin: the branch y = C - x, *ctx = C = -pi/2 (a = 0) or 3 pi/2 (a = 1, 2)
static void ys_sin(const mdl_model *m, const double *x, double *y, const void *ctx) {
    (void)m;
    y[0] = *(const double *)ctx - x[0];
}
static void ys_pl(const mdl_model *m, const double *x, double *y, const void *ctx) {
    (void)m, (void)ctx;
    y[0] = -x[0], y[1] = 0;
}
static void ys_mm(const mdl_model *m, const double *x, double *y, const void *ctx) {
    (void)m, (void)ctx;
    y[0] = x[0] > 0 ? 10 : x[0] < 0 ? -10 : 0; // argmax_{|theta| <= 10} v theta
}
static const double cs_X[2][4] = {{1, 3, -2, -3}, {3, 1, 2, -2}};
static void ys_cs(const mdl_model *m, const double *v, double *y, const void *ctx) {
    (void)m, (void)ctx;
    double mx = fmax(fmax(v[0], v[1]), fmax(v[2], v[3])), w[4], s = 0;
    for (int j = 0; j < 4; j++) s += w[j] = exp(v[j] - mx);
    y[0] = y[1] = 0;
    for (int j = 0; j < 4; j++) y[0] += cs_X[0][j] * w[j] / s, y[1] += cs_X[1][j] * w[j] / s;
}

static void paper_toys(void) {
    TEST_CASE("toys: counterexample and degenerate (BDA Example 1): gradients, x* = 1, y* = (1, 1)") {
        const char *names[2] = {"counterexample", "degenerate"};
        for (int k = 0; k < 2; k++) {
            mdl_model m;
            if (make(names[k], 0, NULL, &m)) continue;
            EXPECT(m.prob.n_x == 1 && m.prob.n_y == 2 && m.x_star[0] == 1 && m.F_star == 0, "%s", names[k]);
            check_grads(&m, 2, 1);
            check_optimum(&m, ys_ex1, NULL, NULL, NULL);
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: llc (AIT Eq. 18): gradients, x* = e stationary, F* = 0") {
        mdl_model m;
        if (!make("llc", 0, NULL, &m)) {
            EXPECT(m.prob.n_x == 20 && m.prob.n_y == 40 && m.prob.x_hi[0] == 10, "sizes, box");
            check_grads(&m, 1, 2);
            check_optimum(&m, ys_llc, NULL, NULL, NULL);
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: lls (AIT Eq. 19): gradients, x* = e on the boundary with KKT gradient -e, F* = 30") {
        mdl_model m;
        if (!make("lls", 0, NULL, &m)) {
            EXPECT(m.F_star == 30 && m.prob.x_hi[0] == 1 && m.prob.x_lo[0] == -1, "F* %g", m.F_star);
            check_grads(&m, 0.7, 3);
            // x* = e = x_hi; d/dx phi = -e <= 0 there, so the projected gradient is zero
            double kkt[20];
            for (int i = 0; i < 20; i++) kkt[i] = -1;
            check_optimum(&m, ys_lls, NULL, NULL, kkt);
            // and f* = 0 on y*(x) for any x: the LL solution is exact
            double x[20], y[40], f = 1;
            for (int i = 0; i < 20; i++) x[i] = 0.3 - 0.05 * i;
            ys_lls(&m, x, y, NULL);
            blo_eval(&m.prob, 0, x, y, &f, NULL, NULL, NULL, NULL);
            EXPECT(f == 0, "f(x, y*(x)) = %g", f);
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: nonconvex (AIT Eq. 20): gradients, x* = 3pi/4 (n = 1) and the n = 3 closed form") {
        mdl_model m;
        if (!make("nonconvex", 0, NULL, &m)) {
            EXPECT(fabs(m.x_star[0] - 0.75 * PI) < 1e-15 && fabs(m.y_star[0] - 0.75 * PI - 2) < 1e-15 &&
                       fabs(m.F_star - 0.2537488) < 1e-6 && m.n_starts == 2 && m.x0[1][0] == -8 &&
                       m.y0[1][0] == -8,
                   "x* %.15g y* %.15g F* %.10g", m.x_star[0], m.y_star[0], m.F_star);
            check_grads(&m, 3, 4);
            check_optimum(&m, ys_nc, NULL, NULL, NULL);
            mdl_free(&m);
        }
        const char *set[] = {"n=3"};
        if (!make("nonconvex", 1, set, &m)) {
            double xs = (-2 * 2 + 3 * 1.5 * PI) / 4;
            EXPECT(m.prob.n_x == 1 && m.prob.n_y == 3 && fabs(m.x_star[0] - xs) < 1e-14 &&
                       m.y0[1][2] == -8 && m.prob.y_lo[2] == -10,
                   "n = 3: x* = %.15g, expected %.15g", m.x_star[0], xs);
            check_grads(&m, 3, 5);
            check_optimum(&m, ys_nc, NULL, NULL, NULL);
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: sin (BVFIM Eq. 30): a = 0, 2 (and 1): x* = y*, stationary, F* as corrected") {
        const char *sets[3] = {"a=0", "a=2", "a=1"};
        double xs[3] = {-PI / 4, 0.75 * PI, 0.75 * PI}, C[3] = {-PI / 2, 1.5 * PI, 1.5 * PI};
        double Fs[3] = {PI * PI / 8, 9 * PI * PI / 8 - 6 * PI + 8, (1.5 * PI - 2) * (1.5 * PI - 2) / 2};
        for (int k = 0; k < 3; k++) {
            mdl_model m;
            if (make("sin", 1, &sets[k], &m)) continue;
            EXPECT(m.x_star && fabs(m.x_star[0] - xs[k]) < 1e-15 && fabs(m.y_star[0] - xs[k]) < 1e-15 &&
                       fabs(m.F_star - Fs[k]) < 1e-14,
                   "%s: x* %.15g F* %.15g", sets[k], m.x_star ? m.x_star[0] : NAN, m.F_star);
            check_grads(&m, 2, 6);
            check_optimum(&m, ys_sin, &C[k], NULL, NULL);
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: pl (GALET Example 1): gradients, x* = 0.5 on the optimal set, the gap") {
        mdl_model m;
        if (!make("pl", 0, NULL, &m)) {
            check_grads(&m, 1.5, 7);
            check_optimum(&m, ys_pl, NULL, NULL, NULL);
            // another point of the optimal set (y1 = sin y2 - 0.5): gap 0, F = F*; off it, the distance
            double x = 0.5, y[2] = {sin(1.0) - 0.5, 1}, F = NAN;
            blo_eval(&m.prob, 1, &x, y, &F, NULL, NULL, NULL, NULL);
            EXPECT(m.optimal_gap(&m, &x, y) < 1e-15 && fabs(F + 0.25) < 1e-15, "gap %g F %g",
                   m.optimal_gap(&m, &x, y), F);
            double x2 = 0.8, y2[2] = {0, 0};
            EXPECT(fabs(m.optimal_gap(&m, &x2, y2) - hypot(0.3, 0.5)) < 1e-15, "gap off the set");
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: minimax (BOME Eq. 12): v* = 0 is the minimum of phi(v) = 10|v|") {
        mdl_model m;
        if (!make("minimax", 0, NULL, &m)) {
            check_grads(&m, 3, 8);
            double v = 0, th[2] = {0, 5}, g, h = 1e-3, y;
            for (int k = 0; k < 2; k++) { // any theta is an LL solution at v = 0
                blo_eval(&m.prob, 0, &v, &th[k], NULL, NULL, &g, NULL, NULL);
                EXPECT(g == 0, "grad_theta f(0, %g) = %g", th[k], g);
            }
            double vp = h, vm = -h, php = phi(&m, ys_mm, NULL, &vp, &y), phm = phi(&m, ys_mm, NULL, &vm, &y);
            EXPECT(fabs(php - 10 * h) < 1e-15 && fabs(phm - 10 * h) < 1e-15 && phi(&m, ys_mm, NULL, &v, &y) == 0,
                   "phi(+-h) = %g, %g", php, phm);
            EXPECT(m.optimal_gap(&m, &vp, th) == h && m.prob.y_hi[0] == 10 && m.prob.x_lo[0] == -10, "gap, boxes");
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: coreset (BOME): theta* = (1.8, 0.4) projects x0 onto the hull; stationary as v -> v*") {
        mdl_model m;
        if (!make("coreset", 0, NULL, &m)) {
            EXPECT(!m.x_star && m.n_starts == 3 && m.prob.n_x == 4 && m.prob.n_y == 2, "shape");
            check_grads(&m, 1.5, 9);
            // projection optimality: (x0 - theta*) . (x_j - theta*) <= 0 for every vertex x_j
            const double *t = m.y_star;
            double worst = -INFINITY;
            for (int j = 0; j < 4; j++)
                worst = fmax(worst, (3 - t[0]) * (cs_X[0][j] - t[0]) + (-2 - t[1]) * (cs_X[1][j] - t[1]));
            EXPECT(worst <= 1e-12, "theta* is not the projection: max (x0 - t).(x_j - t) = %g", worst);
            // v* at "infinity": weights (e^-50, 0.8, e^-50, 0.2) put theta*(v) within 1e-21 of theta*
            double vs[4] = {-50, log(0.8), -50, log(0.2)};
            check_optimum(&m, ys_cs, NULL, vs, NULL);
            double y[2] = {t[0] + 0.3, t[1] - 0.4};
            EXPECT(fabs(m.optimal_gap(&m, vs, y) - 0.5) < 1e-15, "gap");
            mdl_free(&m);
        }
    }
}

// ---- the quadratic against an independent reconstruction ---------------------------------------------

// Gaussian elimination with partial pivoting: solves M u = r for M [n, n] (copied).
static void gauss(const double *M0, int n, const double *r, double *u) {
    double *M = malloc(sizeof(double) * (size_t)n * (n + 1));
    for (int i = 0; i < n; i++) {
        memcpy(M + (size_t)i * (n + 1), M0 + (size_t)i * n, sizeof(double) * (size_t)n);
        M[(size_t)i * (n + 1) + n] = r[i];
    }
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int i = c + 1; i < n; i++)
            if (fabs(M[(size_t)i * (n + 1) + c]) > fabs(M[(size_t)p * (n + 1) + c])) p = i;
        for (int j = 0; j <= n; j++) {
            double s = M[(size_t)c * (n + 1) + j];
            M[(size_t)c * (n + 1) + j] = M[(size_t)p * (n + 1) + j], M[(size_t)p * (n + 1) + j] = s;
        }
        for (int i = c + 1; i < n; i++) {
            double f = M[(size_t)i * (n + 1) + c] / M[(size_t)c * (n + 1) + c];
            for (int j = c; j <= n; j++) M[(size_t)i * (n + 1) + j] -= f * M[(size_t)c * (n + 1) + j];
        }
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = M[(size_t)i * (n + 1) + n];
        for (int j = i + 1; j < n; j++) s -= M[(size_t)i * (n + 1) + j] * u[j];
        u[i] = s / M[(size_t)i * (n + 1) + i];
    }
    free(M);
}

// 1 if S [n, n] - shift I is positive definite (Cholesky succeeds).
static int pd_shifted(const double *S, int n, double shift, double sign) {
    double *L = malloc(sizeof(double) * (size_t)n * n);
    for (int i = 0; i < n * n; i++) L[i] = sign * S[i];
    for (int i = 0; i < n; i++) L[i * n + i] -= shift;
    int ok = 1;
    for (int j = 0; j < n && ok; j++) {
        for (int k = 0; k < j; k++) L[j * n + j] -= L[j * n + k] * L[j * n + k];
        if (!(L[j * n + j] > 0)) ok = 0;
        else {
            L[j * n + j] = sqrt(L[j * n + j]);
            for (int i = j + 1; i < n; i++) {
                for (int k = 0; k < j; k++) L[i * n + j] -= L[i * n + k] * L[j * n + k];
                L[i * n + j] /= L[j * n + j];
            }
        }
    }
    free(L);
    return ok;
}

// The test's copy of the quadratic, read back through the objectives (exact: f, F are quadratic):
// A e_j = grad_y f(0, e_j), B e_j = -grad_y f(e_j, 0), b = -grad_y F(0, 0).
typedef struct {
    int n, m;
    double *A, *B, *b;
} qcopy;

static qcopy qread(const mdl_model *md) {
    int n = md->prob.n_y, m = md->prob.n_x;
    qcopy q = {n, m, malloc(sizeof(double) * (size_t)n * n), malloc(sizeof(double) * (size_t)n * m),
               malloc(sizeof(double) * (size_t)n)};
    double *x = calloc((size_t)(m + n + n), sizeof(double)), *y = x + m, *g = y + n;
    for (int j = 0; j < n; j++) {
        y[j] = 1;
        blo_eval(&md->prob, 0, x, y, NULL, NULL, g, NULL, NULL);
        for (int i = 0; i < n; i++) q.A[i * n + j] = g[i];
        y[j] = 0;
    }
    for (int j = 0; j < m; j++) {
        x[j] = 1;
        blo_eval(&md->prob, 0, x, y, NULL, NULL, g, NULL, NULL);
        for (int i = 0; i < n; i++) q.B[i * m + j] = -g[i];
        x[j] = 0;
    }
    blo_eval(&md->prob, 1, x, y, NULL, NULL, g, NULL, NULL);
    for (int i = 0; i < n; i++) q.b[i] = -g[i];
    free(x);
    return q;
}

static void ys_quad(const mdl_model *m, const double *x, double *y, const void *ctx) {
    const qcopy *cur_q = ctx;
    (void)m;
    double *r = malloc(sizeof(double) * (size_t)cur_q->n);
    for (int i = 0; i < cur_q->n; i++) {
        r[i] = 0;
        for (int j = 0; j < cur_q->m; j++) r[i] += cur_q->B[i * cur_q->m + j] * x[j];
    }
    gauss(cur_q->A, cur_q->n, r, y);
    free(r);
}

static void quadratic_cases(void) {
    TEST_CASE("toys: quadratic: A SPD with eigenvalues in [1, cond], x* stationary, seeded") {
        const char *set[] = {"n=12", "m=5", "cond=100", "rho=0.05", "seed=3"};
        mdl_model m;
        if (!make("quadratic", 5, set, &m)) {
            EXPECT(m.prob.n_x == 5 && m.prob.n_y == 12, "sizes %d %d", m.prob.n_x, m.prob.n_y);
            check_grads(&m, 1, 10);
            qcopy q = qread(&m);
            double asym = 0, tr = 0, want = 0;
            for (int i = 0; i < 12; i++) {
                tr += q.A[i * 12 + i], want += pow(100, i / 11.0);
                for (int j = 0; j < 12; j++) asym = fmax(asym, fabs(q.A[i * 12 + j] - q.A[j * 12 + i]));
            }
            EXPECT(asym == 0, "A is not symmetric: %g", asym);
            EXPECT(fabs(tr - want) < 1e-12 * want, "trace %.15g, sum of eigenvalues %.15g", tr, want);
            // eigenvalues in [1, 100], both ends attained (to 1e-9)
            EXPECT(pd_shifted(q.A, 12, 1 - 1e-9, 1) && !pd_shifted(q.A, 12, 1 + 1e-9, 1) &&
                       pd_shifted(q.A, 12, -100 * (1 + 1e-9), -1) && !pd_shifted(q.A, 12, -100 * (1 - 1e-9), -1),
                   "eigenvalues not in [1, cond] with both ends attained");
            check_optimum(&m, ys_quad, &q, NULL, NULL);
            free(q.A), free(q.B), free(q.b);
            mdl_free(&m);
        }
        // the same seed gives the same problem; another seed another one
        mdl_model a, b;
        const char *s1[] = {"seed=3"}, *s2[] = {"seed=4"};
        if (!make("quadratic", 1, s1, &a)) {
            if (!make("quadratic", 1, s1, &b)) {
                EXPECT(!memcmp(a.x_star, b.x_star, sizeof(double) * 10), "seed 3 twice differs");
                mdl_free(&b);
            }
            if (!make("quadratic", 1, s2, &b)) {
                EXPECT(memcmp(a.x_star, b.x_star, sizeof(double) * 10), "seeds 3 and 4 agree");
                mdl_free(&b);
            }
            mdl_free(&a);
        }
    }
    TEST_CASE("toys: quadratic n = 300: the optimum is still exact (reduced gradient by differences)") {
        const char *set[] = {"n=300", "m=40"};
        mdl_model m;
        if (!make("quadratic", 2, set, &m)) {
            qcopy q = qread(&m);
            check_optimum(&m, ys_quad, &q, NULL, NULL);
            free(q.A), free(q.B), free(q.b);
            mdl_free(&m);
        }
    }
}

// ---- all models: registry, starts, settings -----------------------------------------------------------

static const char *const toy_names[] = {"counterexample", "llc", "lls", "nonconvex", "sin", "coreset",
                                        "minimax", "degenerate", "pl", "quadratic", NULL};

static void settings_cases(void) {
    TEST_CASE("toys: every toy is made with no settings; starts are valid and inside the boxes") {
        for (int k = 0; toy_names[k]; k++) {
            mdl_model m;
            if (make(toy_names[k], 0, NULL, &m)) continue;
            EXPECT(!strcmp(m.name, toy_names[k]) && m.n_starts >= 1 && m.n_starts <= 4, "%s", toy_names[k]);
            for (int s = 0; s < m.n_starts; s++) {
                blo_error e;
                EXPECT(blo_problem_check(&m.prob, m.x0[s], m.y0[s], NULL, &e) == BLO_OK, "%s: %s",
                       toy_names[k], e.msg);
                for (int i = 0; i < m.prob.n_x; i++)
                    EXPECT((!m.prob.x_lo || m.x0[s][i] >= m.prob.x_lo[i]) &&
                               (!m.prob.x_hi || m.x0[s][i] <= m.prob.x_hi[i]),
                           "%s start %d outside X", toy_names[k], s);
            }
            EXPECT(m.x_star || m.optimal_gap, "%s: neither x* nor a gap", toy_names[k]);
            if (m.x_star) EXPECT(mdl_x_error(&m, m.x_star) == 0, "%s: x_error(x*)", toy_names[k]);
            mdl_free(&m);
        }
    }
    TEST_CASE("toys: an unknown setting is an error naming it; bad values are errors") {
        struct {
            const char *model, *set, *want;
        } bad[] = {
            {"llc", "bogus=1", "unknown setting 'bogus'"},  {"counterexample", "n=3", "unknown setting 'n'"},
            {"pl", "a=2", "unknown setting 'a'"},           {"llc", "n=0", "n: bad value '0'"},
            {"lls", "n=abc", "n: bad value 'abc'"},         {"nonconvex", "n=-3", "n: bad value '-3'"},
            {"sin", "a=xyz", "a: bad value 'xyz'"},         {"sin", "a=inf", "a: bad value 'inf'"},
            {"quadratic", "cond=0.5", "cond: bad value"},   {"quadratic", "rho=0", "rho: bad value"},
            {"quadratic", "n=0", "n: bad value '0'"},       {"quadratic", "m=20000", "m: bad value '20000'"},
            {"quadratic", "seed=-1", "seed: bad value"},    {"coreset", "noequals", "not NAME=VALUE"},
        };
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
            mdl_model m;
            char err[256] = "";
            int rc = mdl_make_named(bad[k].model, bad[k].set, &m, err, sizeof err);
            EXPECT(rc == -1 && strstr(err, bad[k].want), "%s %s: rc %d, '%s'", bad[k].model, bad[k].set, rc, err);
            if (rc == 0) mdl_free(&m);
        }
    }
    TEST_CASE("toys: n=... changes the sizes of llc, lls, nonconvex, quadratic") {
        const char *set[] = {"n=5"};
        const char *names[] = {"llc", "lls", "nonconvex", "quadratic"};
        int nx[] = {5, 5, 1, 5}, ny[] = {10, 10, 5, 5};
        for (int k = 0; k < 4; k++) {
            mdl_model m;
            if (make(names[k], 1, set, &m)) continue;
            EXPECT(m.prob.n_x == nx[k] && m.prob.n_y == ny[k], "%s n=5: n_x %d n_y %d", names[k], m.prob.n_x,
                   m.prob.n_y);
            if (k == 1) EXPECT(m.F_star == -5 + 25.0 / 8, "lls n=5: F* %g", m.F_star);
            check_grads(&m, 0.5, 11);
            mdl_free(&m);
        }
    }
}

// Every problem's paper rows name methods of the registry and settings some table has, and make a
// configuration that resolves for every method (a typo in the data is caught here, not skipped).
static void paper_rows_cases(void) {
    TEST_CASE("models: every paper row names a registered method and known settings, and resolves") {
        for (const mdl_entry *const *e = mdl_registry(); *e; e++) {
            for (const mdl_paper_row *row = (*e)->papers; row && row->method; row++) {
                EXPECT(!strcmp(row->method, "*") || blo_method_find(row->method), "%s: method '%s'", (*e)->name, row->method);
                // each name is some method's, dynamics' or the solver's
                char words[512], *save = NULL;
                snprintf(words, sizeof words, "%s", row->settings);
                for (char *w = strtok_r(words, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
                    char *eq = strchr(w, '=');
                    if (eq) *eq = 0;
                    int known = !strcmp(w, "dynamics") || blo_setting_find(blo_solve_settings, w);
                    for (const blo_method_type *const *m = blo_method_registry(); !known && *m; m++)
                        known = blo_setting_find((*m)->settings, w) != NULL;
                    for (const blo_dynamics_type *const *d = blo_dynamics_registry(); !known && *d; d++)
                        known = blo_setting_find((*d)->settings, w) != NULL;
                    EXPECT(eq && known, "%s row %s: '%s'", (*e)->name, row->method, w);
                }
            }
            for (const blo_method_type *const *m = blo_method_registry(); *m; m++) {
                char err[300];
                blo_error be;
                blo_config *c = mdl_paper_config(*e, *m, NULL, err, sizeof err);
                EXPECT(c && blo_config_resolve(c, 4, &be) == BLO_OK, "%s / %s: %s", (*e)->name, (*m)->name,
                       c ? be.msg : err);
                blo_config_free(c);
            }
        }
    }
    TEST_CASE("models: paper settings apply in order, to the dynamics chosen first") {
        char err[300], v[64];
        // counterexample: ait runs BDA dynamics with AIT's weights and the row's s_l / s_u
        blo_config *c = mdl_paper_config(&mdl_counterexample_entry, blo_method_find("ait"), NULL, err, sizeof err);
        EXPECT(c && !strcmp(blo_config_get(c, "dynamics", v, sizeof v), "bda") &&
                   !strcmp(blo_config_get(c, "bda_weights", v, sizeof v), "ait") &&
                   !strcmp(blo_config_get(c, "s_l", v, sizeof v), "0.2") &&
                   !strcmp(blo_config_get(c, "ptt", v, sizeof v), "0") &&
                   !strcmp(blo_config_get(c, "ll_iters", v, sizeof v), "16"), "%s", err);
        blo_config_free(c);
        // a dynamics named by the caller gets the rows' settings too
        c = mdl_paper_config(&mdl_nonconvex_entry, blo_method_find("rhg"), "nesterov", err, sizeof err);
        EXPECT(c && !strcmp(blo_config_get(c, "s_l", v, sizeof v), "0.3"), "nesterov s_l %s", v);
        blo_config_free(c);
        // T-RHG's K' is half of the paper's K, resolved once (no second copy of the rule)
        c = mdl_paper_config(&mdl_counterexample_entry, blo_method_find("trhg"), NULL, err, sizeof err);
        blo_error be;
        EXPECT(c && blo_config_resolve(c, 2, &be) == BLO_OK && !strcmp(blo_config_get(c, "truncate", v, sizeof v), "8"),
               "truncate %s", v);
        blo_config_free(c);
    }
}

void test_models_toys(void); // also in tests.h once it lists this file
void test_models_toys(void) {
    paper_toys();
    quadratic_cases();
    settings_cases();
    paper_rows_cases();
}
