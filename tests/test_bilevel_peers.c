// The peers' first-order and penalty methods (iga, pgdo, bamm, meso): IGA's direction against
// its formula computed by hand on the closed-form quadratic, the penalty methods' directions
// against central differences of their penalties (blo_check_hypergrad), BAMM's line-search
// guard, and a table of runs on the toys of models/toys.c that reach the known x* within a
// stated tolerance. Saving and resuming every registered method is test_bilevel_solver.c's.
#include "harness.h"
#include "models.h"
#include "tests.h"

#include "../bilevel/blo_extra.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---- IGA on the quadratic, by hand ----
// F = 1/2 ||y - b||^2 + rho/2 ||x||^2, f = 1/2 y'Ay - y'Bx: grad_x F = rho x, grad_y F = y - b,
// grad_y f = A y - B x, grad_x f = -B'y; y_K by K steps y <- y - s (A y - B x).

enum { QN = 4, QM = 3 };

typedef struct {
    double A[QN][QN], B[QN][QM], b[QN];
} quad_data;

static double val(const blo_problem *p, int upper, const double *x, const double *y) {
    double v = NAN;
    blo_eval(p, upper, x, y, &v, NULL, NULL, NULL, NULL);
    return v;
}

// A, B and b from values of F and f at unit vectors (no derivative of the tape's).
static void read_quad(const blo_problem *p, quad_data *q) {
    double x[QM] = {0}, y[QN] = {0}, F0 = val(p, 1, x, y);
    for (int i = 0; i < QN; i++) {
        y[i] = 1;
        q->A[i][i] = 2 * val(p, 0, x, y);
        q->b[i] = F0 - val(p, 1, x, y) + 0.5;
        for (int j = 0; j < QM; j++) x[j] = 1, q->B[i][j] = 0.5 * q->A[i][i] - val(p, 0, x, y), x[j] = 0;
        y[i] = 0;
    }
    for (int i = 0; i < QN; i++)
        for (int j = 0; j < QN; j++)
            if (i != j) {
                y[i] = y[j] = 1;
                q->A[i][j] = val(p, 0, x, y) - 0.5 * (q->A[i][i] + q->A[j][j]);
                y[i] = y[j] = 0;
            }
}

// d [QM] = rho x - c grad_x f at y_K, c = <grad_y F, grad_y f> / (||grad_y f||^2 + eps) (0 when 0).
static double iga_by_hand(const quad_data *q, double rho, double s, int K, double eps, const double *x,
                          const double *y0, double *d) {
    double y[QN], gf[QN], gF[QN], num = 0, den = eps;
    memcpy(y, y0, sizeof y);
    for (int k = 0; k <= K; k++) {
        for (int i = 0; i < QN; i++) {
            gf[i] = 0;
            for (int j = 0; j < QN; j++) gf[i] += q->A[i][j] * y[j];
            for (int j = 0; j < QM; j++) gf[i] -= q->B[i][j] * x[j];
        }
        if (k < K)
            for (int i = 0; i < QN; i++) y[i] -= s * gf[i];
    }
    for (int i = 0; i < QN; i++) gF[i] = y[i] - q->b[i], num += gF[i] * gf[i], den += gf[i] * gf[i];
    double c = den > 0 ? num / den : 0;
    for (int j = 0; j < QM; j++) {
        double gxf = 0;
        for (int i = 0; i < QN; i++) gxf -= q->B[i][j] * y[i];
        d[j] = rho * x[j] - c * gxf;
    }
    return c;
}

static void iga_cases(void) {
    TEST_CASE("iga: the direction is grad_x F - <grad_y F, grad_y f> / ||grad_y f||^2 grad_x f at y_K, by hand") {
        mdl_model m;
        char err[256];
        EXPECT(mdl_make_named("quadratic", "n=4 m=3 rho=0.1", &m, err, sizeof err) == 0, "%s", err);
        quad_data q;
        read_quad(&m.prob, &q);
        static const struct {
            const char *set;
            double eps, x[QM], y0[QN];
        } cases[] = {
            {"ll_iters=7 s_l=0.1", 0, {0.3, -0.5, 1.2}, {0.4, -0.2, 0.1, 0.7}},
            {"ll_iters=1 s_l=0.05", 0, {-1, 0.25, 0.5}, {0, 0, 0, 0}},
            {"ll_iters=7 s_l=0.1 eps=0.5", 0.5, {0.3, -0.5, 1.2}, {0.4, -0.2, 0.1, 0.7}},
            {"ll_iters=3 s_l=0.1", 0, {0, 0, 0}, {0, 0, 0, 0}}, // y_K = y*(0) = 0: the guard, c = 0
        };
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            blo_error e;
            blo_config *c = blo_config_new(blo_method_find("iga"), &e);
            EXPECT(c && blo_config_apply(c, cases[k].set, &e) == BLO_OK, "%s: %s", cases[k].set, e.msg);
            blo_solver *s = c ? blo_solver_new(&m.prob, c, cases[k].x, cases[k].y0, NULL, &e) : NULL;
            blo_record rec;
            EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_OK, "%s: %s", cases[k].set, e.msg);
            int K = (int)strtol(cases[k].set + strlen("ll_iters="), NULL, 10);
            double s_l = strtod(strstr(cases[k].set, "s_l=") + 4, NULL), d[QM];
            double ch = iga_by_hand(&q, 0.1, s_l, K, cases[k].eps, cases[k].x, cases[k].y0, d);
            const double *g = s ? blo_solver_gradient(s) : d;
            for (int j = 0; j < QM; j++)
                EXPECT(fabs(g[j] - d[j]) <= 1e-10 * (1 + fabs(d[j])), "%s: entry %d: %.17g by hand %.17g",
                       cases[k].set, j, g[j], d[j]);
            EXPECT(s && fabs(rec.extra - ch) <= 1e-10 * (1 + fabs(ch)), "%s: c = %.17g, by hand %.17g", cases[k].set,
                   rec.extra, ch);
            if (k == 3) EXPECT(ch == 0 && rec.extra == 0 && g[0] == 0, "the guard: c = %g, d_0 = %g", rec.extra, g[0]);
            blo_check_report r = blo_check_hypergrad(&m.prob, c, cases[k].x, cases[k].y0, NULL, NULL);
            EXPECT(r.status == BLO_EARG && r.claim == BLO_GRAD_NONE, "iga claims no gradient: %s", r.msg);
            blo_solver_free(s);
            blo_config_free(c);
        }
        mdl_free(&m);
    }
}

// ---- the penalty methods' directions are the gradients of their penalties ----

static void penalty_cases(void) {
    TEST_CASE("pgdo, meso: the direction is the gradient of the penalty at fixed yhat / theta (central differences)") {
        mdl_model m;
        char err[256];
        EXPECT(mdl_make_named("pl", "", &m, err, sizeof err) == 0, "%s", err);
        static const struct {
            const char *method, *set;
        } cases[] = {
            {"pgdo", "gamma_init=3 gamma_max=3 ll_iters=4 y_hat_lr=0.3"},  // gamma > 1: scaled by 1/gamma
            {"pgdo", "gamma_init=0.5 gamma_max=2 gamma_argmax_step=10"},   // gamma < 1: unscaled
            {"meso", "eta=0.2 gamma_1=2 c0=0.7 p=0.3"},
            {"meso", ""},                                                  // BOAT's defaults
        };
        const double x[1] = {0.7}, y0[2] = {0.4, -0.9};
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            blo_error e;
            blo_config *c = blo_config_new(blo_method_find(cases[k].method), &e);
            EXPECT(c && blo_config_apply(c, cases[k].set, &e) == BLO_OK, "%s %s: %s", cases[k].method, cases[k].set,
                   e.msg);
            blo_check_params cp = blo_check_default_params();
            cp.rtol = 1e-7;
            blo_check_report r = blo_check_hypergrad(&m.prob, c, x, y0, NULL, &cp);
            EXPECT(r.status == BLO_OK && r.pass && r.checked == 3 && r.claim == BLO_GRAD_EXACT, "%s %s: %s",
                   cases[k].method, cases[k].set, r.msg);
            blo_config_free(c);
        }
        mdl_free(&m);
    }
}

// ---- bamm: the multiplier's line search and its guard ----

static void bamm_cases(void) {
    TEST_CASE("bamm: v's exact line search minimizes 1/2 v'Hv - <grad_y F, v> along r; where r'Hr = 0 v stays") {
        // minimax: f = -x y has H = 0, so r'Hr = 0: the guard leaves v = 0 and d_x = grad_x F = y
        mdl_model m;
        char err[256];
        EXPECT(mdl_make_named("minimax", "", &m, err, sizeof err) == 0, "%s", err);
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("bamm"), &e);
        blo_solver *s = blo_solver_new(&m.prob, c, m.x0[0], m.y0[0], NULL, &e);
        blo_record rec;
        for (int t = 0; s && t < 3; t++) {
            EXPECT(blo_solver_direction(s, &rec, &e) == BLO_OK && rec.extra == 0, "t = %d: eta_v = %g (%s)", t,
                   rec.extra, e.msg);
            double y[1];
            blo_solver_solution(s, y, &e);
            EXPECT(blo_solver_gradient(s)[0] == y[0], "d_x = %g, y = %g", blo_solver_gradient(s)[0], y[0]);
            blo_solver_step(s);
        }
        blo_solver_free(s);
        blo_config_free(c);
        mdl_free(&m);
        // the quadratic (H = A, SPD): one step from v = 0 along r = -grad_y F is the exact minimizer
        // along that line, ||r||^2 / r'Ar; checked against the quadratic's values at v +- a small step
        EXPECT(mdl_make_named("quadratic", "n=4 m=3", &m, err, sizeof err) == 0, "%s", err);
        quad_data q;
        read_quad(&m.prob, &q);
        c = blo_config_new(blo_method_find("bamm"), &e);
        const double x[QM] = {0.3, -0.5, 1.2}, y0[QN] = {0.4, -0.2, 0.1, 0.7};
        s = blo_solver_new(&m.prob, c, x, y0, NULL, &e);
        EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_OK, "%s", e.msg);
        double y[QN], r[QN], Ar[QN], rr = 0, rAr = 0;
        if (s) blo_solver_solution(s, y, &e); // y after the one LL step: grad_y F there is y - b
        for (int i = 0; i < QN; i++) r[i] = -(y[i] - q.b[i]), rr += r[i] * r[i];
        for (int i = 0; i < QN; i++) {
            Ar[i] = 0;
            for (int j = 0; j < QN; j++) Ar[i] += q.A[i][j] * r[j];
            rAr += r[i] * Ar[i];
        }
        EXPECT(fabs(rec.extra - rr / (rAr + 1e-12)) <= 1e-10 * rec.extra, "eta_v %.17g, by hand %.17g", rec.extra,
               rr / (rAr + 1e-12));
        blo_solver_free(s);
        blo_config_free(c);
        mdl_free(&m);
    }
}

// ---- runs on the toys: x reaches x* ----
// Each row: the toy (settings, start), the method with the toy's paper rows for every method ("*")
// and its own settings, the tolerance on x_err = ||x - x*|| / ||x*||, and what we measured.

static const struct {
    const char *problem, *problem_set, *method, *set;
    int start;
    double tol, measured;
} runs[] = {
    {"pl", "", "iga", "", 0, 1e-8, 1.1e-16},
    {"pl", "", "iga", "", 3, 1e-8, 1.1e-16},
    {"quadratic", "", "bamm", "", 0, 1e-3, 1.1e-4},
    {"pl", "", "bamm", "", 0, 1e-6, 6.7e-8},
    {"sin", "a=0", "bamm", "", 0, 1e-6, 1.5e-9},
    {"counterexample", "", "bamm", "mu0=0.9 p=10", 0, 1e-4, 2.6e-6},
    {"counterexample", "", "pgdo", "gamma_init=10 gamma_max=10 y_hat_lr=0.1", 0, 0.02, 0.011},
    {"pl", "", "pgdo", "gamma_init=10 gamma_max=10", 0, 0.005, 0.0013},
    {"quadratic", "", "pgdo",
     "gamma_init=10 gamma_max=10 y_hat_lr=0.1 optimizer=momentum lr_x=0.05 lr_z=0.05 ul_iters=2000", 0, 0.03, 0.016},
    {"counterexample", "", "meso",
     "eta=0.5 gamma_1=1 c0=1 p=0.49 optimizer=momentum lr_x=0.02 lr_z=0.02 ul_iters=3000", 0, 2e-3, 5.5e-4},
    {"pl", "", "meso", "eta=0.5 gamma_1=1 c0=1 p=0.49 optimizer=momentum lr_x=0.02 lr_z=0.02 ul_iters=3000", 0,
     0.01, 3.2e-3},
};

static void run_cases(void) {
    TEST_CASE("peers: iga, pgdo, bamm and meso reach x* on the toys within the stated tolerances") {
        for (size_t k = 0; k < sizeof runs / sizeof runs[0]; k++) {
            mdl_model m;
            char err[256];
            EXPECT(mdl_make_named(runs[k].problem, runs[k].problem_set, &m, err, sizeof err) == 0, "%s", err);
            const mdl_entry *entry = mdl_find(runs[k].problem);
            blo_config *c = mdl_paper_config(entry, blo_method_find(runs[k].method), NULL, err, sizeof err);
            blo_error e = {0};
            EXPECT(c && blo_config_apply(c, runs[k].set, &e) == BLO_OK, "%s %s: %s %s", runs[k].problem,
                   runs[k].method, err, e.msg);
            blo_solver *s = c ? blo_solver_new(&m.prob, c, m.x0[runs[k].start], m.y0[runs[k].start], m.z_prior, &e)
                              : NULL;
            EXPECT(s && blo_solver_run(s) == BLO_OK, "%s %s: %s", runs[k].problem, runs[k].method,
                   s ? blo_solver_error(s) : e.msg);
            double xe = s ? mdl_x_error(&m, blo_solver_x(s)) : NAN;
            if (getenv("HYPERTAPE_TEST_VERBOSE"))
                printf("  %s %s (start %d) %s: x_err %.3g (tolerance %g)\n", runs[k].problem, runs[k].method,
                       runs[k].start, runs[k].set, xe, runs[k].tol);
            EXPECT(xe <= runs[k].tol, "%s %s %s: x_err %.3g > %g (measured %.2g)", runs[k].problem, runs[k].method,
                   runs[k].set, xe, runs[k].tol, runs[k].measured);
            blo_solver_free(s);
            blo_config_free(c);
            mdl_free(&m);
        }
    }
}

void test_bilevel_peers(void) {
    iga_cases();
    penalty_cases();
    bamm_cases();
    run_cases();
}
