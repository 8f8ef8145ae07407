// Implicit estimators (CG, Neumann) against the closed-form hypergradient of a random quadratic,
// BOME / GALET / BVFIM on small problems with known solutions, and the upper-level loop
// (optimizers, records, the stop on NaN that keeps the last good iterate, bad input).
#include "harness.h"
#include "tests.h"

#include "../bilevel/methods.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- the quadratic: F = 1/2 ||y - b||^2 + rho/2 ||x||^2, f = 1/2 y^T A y - y^T B x ----

typedef struct {
    int n, m;          // n_y, n_x
    double rho;
    double *A, *B, *b; // A [n, n] SPD, B [n, m], b [n]
} quad;

static ad_var quad_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const quad *q = u;
    ad_var b = ad_const_view(t, ad_vec_shape(q->n), q->b);
    return ad_add(t, ad_scale(t, ad_sqnorm(t, ad_sub(t, y, b)), 0.5),
                  ad_scale(t, ad_sqnorm(t, x), 0.5 * q->rho));
}

static ad_var quad_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const quad *q = u;
    ad_var A = ad_const_view(t, ad_mat_shape(q->n, q->n), q->A);
    ad_var B = ad_const_view(t, ad_mat_shape(q->n, q->m), q->B);
    return ad_sub(t, ad_scale(t, ad_dot(t, y, ad_matvec(t, A, y, 0)), 0.5),
                  ad_dot(t, y, ad_matvec(t, B, x, 0)));
}

// A = I + G G^T / n (eigenvalues in [1, ~5]), B, b normal; seeded.
static quad quad_make(int n, int m, uint64_t seed) {
    quad q = {n, m, 0.1, calloc((size_t)n * n, sizeof(double)), malloc(sizeof(double) * n * m),
              malloc(sizeof(double) * n)};
    ad_rng g;
    ad_rng_seed(&g, seed);
    double *G = malloc(sizeof(double) * n * n);
    for (int i = 0; i < n * n; i++) G[i] = ad_rng_normal(&g);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = i == j;
            for (int k = 0; k < n; k++) s += G[i * n + k] * G[j * n + k] / n;
            q.A[i * n + j] = s;
        }
    for (int i = 0; i < n * m; i++) q.B[i] = ad_rng_normal(&g);
    for (int i = 0; i < n; i++) q.b[i] = ad_rng_normal(&g);
    free(G);
    return q;
}

static void quad_free(quad *q) { free(q->A), free(q->B), free(q->b); }

// Solves A u = r by Gaussian elimination (A SPD, small): the test's independent reference.
static void solve(const quad *q, const double *r, double *u) {
    int n = q->n;
    double *M = malloc(sizeof(double) * n * (n + 1));
    for (int i = 0; i < n; i++) {
        memcpy(M + i * (n + 1), q->A + i * n, sizeof(double) * n);
        M[i * (n + 1) + n] = r[i];
    }
    for (int c = 0; c < n; c++)
        for (int i = c + 1; i < n; i++) {
            double f = M[i * (n + 1) + c] / M[c * (n + 1) + c];
            for (int j = c; j <= n; j++) M[i * (n + 1) + j] -= f * M[c * (n + 1) + j];
        }
    for (int i = n - 1; i >= 0; i--) {
        double s = M[i * (n + 1) + n];
        for (int j = i + 1; j < n; j++) s -= M[i * (n + 1) + j] * u[j];
        u[i] = s / M[i * (n + 1) + i];
    }
    free(M);
}

// y* = A^-1 B x and the exact hypergradient rho x + B^T A^-1 (y* - b).
static void quad_exact(const quad *q, const double *x, double *ystar, double *grad) {
    int n = q->n, m = q->m;
    double *r = calloc((size_t)n, sizeof(double)), *u = calloc((size_t)n, sizeof(double));
    for (int i = 0; i < n; i++) {
        r[i] = 0;
        for (int j = 0; j < m; j++) r[i] += q->B[i * m + j] * x[j];
    }
    solve(q, r, ystar);
    for (int i = 0; i < n; i++) r[i] = ystar[i] - q->b[i];
    solve(q, r, u);
    for (int j = 0; j < m; j++) {
        grad[j] = q->rho * x[j];
        for (int i = 0; i < n; i++) grad[j] += q->B[i * m + j] * u[i];
    }
    free(r), free(u);
}

static double rel_err(const double *a, const double *b, int n) {
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) d += (a[i] - b[i]) * (a[i] - b[i]), s += b[i] * b[i];
    return sqrt(d / s);
}

static blo_problem quad_problem(quad *q) {
    return (blo_problem){.n_x = q->m, .n_y = q->n, .F = quad_F, .f = quad_f, .user = q};
}

static void implicit_cases(void) {
    quad q = quad_make(12, 5, 11);
    blo_problem p = quad_problem(&q);
    double x[5] = {0.5, -1, 0.25, 2, -0.3}, ystar[12], exact[5], g[5];
    quad_exact(&q, x, ystar, exact);
    TEST_CASE("cg: the implicit hypergradient at y* matches the closed form to 1e-8") {
        blo_implicit_params ip = blo_implicit_default_params(BLO_IMPLICIT_CG);
        ip.iters = 50;
        blo_implicit_info info;
        blo_error e;
        EXPECT(blo_implicit_hypergrad(&p, &ip, x, ystar, g, &info, NULL, &e) == BLO_OK, "%s", e.msg);
        double err = rel_err(g, exact, 5);
        EXPECT(err < 1e-8, "relative error %.3g after %d iterations", err, info.iters);
        EXPECT(info.residual <= ip.tol && info.iters <= 12, "residual %.3g in %d iterations "
               "(CG is exact in n = 12 steps)", info.residual, info.iters);
    }
    TEST_CASE("cg: few iterations leave a reported residual, and the error follows it") {
        blo_implicit_params ip = blo_implicit_default_params(BLO_IMPLICIT_CG);
        ip.iters = 3;
        blo_implicit_info info;
        EXPECT(blo_implicit_hypergrad(&p, &ip, x, ystar, g, &info, NULL, NULL) == BLO_OK, "status");
        EXPECT(info.iters == 3 && info.residual > 1e-6 && info.residual < 1, "residual %.3g",
               info.residual);
        EXPECT(rel_err(g, exact, 5) > 1e-8, "not converged yet");
    }
    TEST_CASE("neumann: converges geometrically to the closed form, residual reported") {
        // eigenvalues of A lie in [1, ~5]: eta = 0.3 contracts by <= 0.7 per term
        blo_implicit_params ip = blo_implicit_default_params(BLO_IMPLICIT_NEUMANN);
        ip.eta = 0.3;
        double prev = INFINITY;
        int Js[3] = {10, 40, 120};
        for (int k = 0; k < 3; k++) {
            ip.iters = Js[k];
            blo_implicit_info info;
            EXPECT(blo_implicit_hypergrad(&p, &ip, x, ystar, g, &info, NULL, NULL) == BLO_OK, "status");
            double err = rel_err(g, exact, 5);
            EXPECT(err < prev, "J = %d: error %.3g did not fall", Js[k], err);
            if (k == 2) EXPECT(err < 1e-8 && info.residual < 1e-8, "J = 120: error %.3g, residual %.3g",
                               err, info.residual);
            prev = err;
        }
    }
    TEST_CASE("implicit: bad parameters are an error, not a crash") {
        blo_implicit_params ip = blo_implicit_default_params(BLO_IMPLICIT_NEUMANN);
        ip.eta = -1;
        blo_error e;
        EXPECT(blo_implicit_hypergrad(&p, &ip, x, ystar, g, NULL, NULL, &e) == BLO_EARG &&
                   strstr(e.msg, "Neumann step"),
               "%s", e.msg);
    }
    quad_free(&q);
}

// ---- BOME on BDA's Example 1 (the degenerate toy, spec 6.7): v* = 1, theta* = (1, 1) ----

static ad_var ex1_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u; // 1/2 (x - y2)^2 + 1/2 (y1 - 1)^2
    ad_var y1 = ad_slice(t, y, 0, 1), y2 = ad_slice(t, y, 1, 1);
    return ad_scale(t, ad_add(t, ad_sqnorm(t, ad_sub(t, x, y2)), ad_sqnorm(t, ad_shift(t, y1, -1))), 0.5);
}
static ad_var ex1_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u; // 1/2 y1^2 - x y1
    ad_var y1 = ad_slice(t, y, 0, 1);
    return ad_sub(t, ad_scale(t, ad_sqnorm(t, y1), 0.5), ad_dot(t, x, y1));
}

static blo_status bome_dir(void *m, const blo_problem *p, int t, const double *x, const double *z,
                           double *gx, double *gz, blo_record *rec, blo_error *err) {
    (void)t;
    blo_bome_info info;
    blo_status st = blo_bome_direction(p, m, x, z, gx, gz, &info, NULL, err);
    rec->extra = info.lambda;
    if (st == BLO_OK) st = blo_eval(p, 1, x, z, &rec->F, NULL, NULL, NULL, err);
    return st;
}

static void bome_cases(void) {
    TEST_CASE("bome: BDA Example 1 (degenerate LL) converges to v = 1, theta = (1, 1)") {
        blo_problem p = {.n_x = 1, .n_y = 2, .F = ex1_F, .f = ex1_f};
        blo_bome_params bp = blo_bome_default_params();
        bp.T = 1, bp.alpha = 0.5; // spec 6.7: xi = alpha = 0.5, T = 1, eta = 0.5
        blo_solve_params sp = blo_solve_default_params();
        sp.T = 2000, sp.lr_x = sp.lr_z = 0.5;
        double x = 0, y[2] = {0, 0};
        blo_error e;
        EXPECT(blo_solve(&p, bome_dir, &bp, 2, &sp, &x, y, NULL, &e) == BLO_OK, "%s", e.msg);
        EXPECT(fabs(x - 1) < 1e-3 && fabs(y[0] - 1) < 1e-3 && fabs(y[1] - 1) < 1e-3,
               "v = %.6f, theta = (%.6f, %.6f)", x, y[0], y[1]);
    }
}

// ---- GALET Example 1 (spec 6.8): x* = 0.5 and y1 - sin(y2) + 0.5 = 0 ----

static ad_var galet_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u; // x^2 + y1 - sin(y2)
    return ad_add(t, ad_sqnorm(t, x), ad_sub(t, ad_sum(t, ad_slice(t, y, 0, 1)),
                                             ad_sum(t, ad_sin(t, ad_slice(t, y, 1, 1)))));
}
static ad_var galet_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u; // 1/2 (x + y1 - sin(y2))^2
    ad_var r = ad_sub(t, ad_add(t, x, ad_slice(t, y, 0, 1)), ad_sin(t, ad_slice(t, y, 1, 1)));
    return ad_scale(t, ad_sqnorm(t, r), 0.5);
}

static blo_status galet_dir(void *m, const blo_problem *p, int t, const double *x, const double *z,
                            double *gx, double *gz, blo_record *rec, blo_error *err) {
    (void)t, (void)z, (void)gz;
    blo_galet_state *s = m;
    blo_status st = blo_galet_direction(s, p, x, gx, NULL, err);
    if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, &rec->F, NULL, NULL, NULL, err);
    return st;
}

static void galet_cases(void) {
    double starts[2][3] = {{2, 2, 2}, {0, 0, 0}};
    for (int k = 0; k < 2; k++) {
        char name[256];
        snprintf(name, sizeof name, "galet: Example 1 from (%g, (%g, %g)) reaches x = 0.5 on the "
                 "LL solution set (paper defaults, w warm-started)", starts[k][0], starts[k][1], starts[k][2]);
        TEST_CASE(name) {
            blo_problem p = {.n_x = 1, .n_y = 2, .F = galet_F, .f = galet_f};
            blo_galet_params gp = blo_galet_default_params();
            blo_galet_state s;
            blo_error e;
            EXPECT(blo_galet_init(&s, &p, &gp, starts[k] + 1, &e) == BLO_OK, "%s", e.msg);
            // alpha = 0.3. x settles within ~100 iterations; the LL residual r = x + y1 - sin y2
            // contracts by 1 - beta (1 + cos^2 y2) ~ -0.94 per LL step near the limit (seen from
            // (2, (2, 2))), so it needs ~300 to reach 1e-6.
            blo_solve_params sp = blo_solve_default_params();
            sp.T = 300, sp.lr_x = 0.3;
            double x = starts[k][0];
            EXPECT(blo_solve(&p, galet_dir, &s, 0, &sp, &x, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
            double gap = s.y[0] - sin(s.y[1]) + 0.5;
            EXPECT(fabs(x - 0.5) < 1e-6 && fabs(gap) < 1e-5, "x = %.8f, y1 - sin y2 + 0.5 = %.3g", x, gap);
            blo_galet_free(&s);
        }
    }
}

// ---- BVFIM on F = 1/2||x||^2 + 1/2||y - b||^2, f = 1/2||y - x||^2: x* = b/2 ----

static ad_var bv_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    ad_var b = ad_const_view(t, ad_vec_shape(2), u);
    return ad_scale(t, ad_add(t, ad_sqnorm(t, x), ad_sqnorm(t, ad_sub(t, y, b))), 0.5);
}
static ad_var bv_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    return ad_scale(t, ad_sqnorm(t, ad_sub(t, y, x)), 0.5);
}

typedef struct {
    blo_bvfim_state s;
    ad_tape *tape; // reused by every evaluation, as the runner does
} bvfim_run;

static blo_status bvfim_dir(void *m, const blo_problem *p, int t, const double *x, const double *z,
                            double *gx, double *gz, blo_record *rec, blo_error *err) {
    (void)t, (void)z, (void)gz;
    bvfim_run *r = m;
    blo_status st = blo_bvfim_direction(&r->s, p, x, gx, r->tape, err);
    rec->extra = r->s.gap;
    if (st == BLO_OK) st = blo_eval(p, 1, x, r->s.y, &rec->F, NULL, NULL, r->tape, err);
    return st;
}

static void bvfim_cases(void) {
    TEST_CASE("bvfim: converges to x* = b/2 at the rate its schedule allows, from a start that "
              "needs the feasibility safeguard") {
        // The barrier admits y with f(x, y) < f*_mu, a band of width ~sqrt(2 mu_l) around the LL
        // solution y = x, so x is off by O(sqrt(mu_l)) = O(1/sqrt(l)): quadrupling the iterations
        // must about halve the error, and at l = 4000 (mu = 2.5e-4) it is below sqrt(2 mu) = 0.022.
        double b[2] = {2, -1}, errs[2];
        int Ts[2] = {1000, 4000};
        blo_problem p = {.n_x = 2, .n_y = 2, .F = bv_F, .f = bv_f, .user = b};
        for (int k = 0; k < 2; k++) {
            blo_bvfim_params bp = blo_bvfim_default_params();
            bvfim_run r = {.tape = ad_tape_new(NULL)};
            blo_error e;
            double y0[2] = {5, 5}; // far from the LL solution: infeasible for the barrier at first
            EXPECT(blo_bvfim_init(&r.s, &p, &bp, y0, &e) == BLO_OK, "%s", e.msg);
            blo_solve_params sp = blo_solve_default_params();
            sp.T = Ts[k], sp.lr_x = 0.2;
            double x[2] = {0, 0};
            EXPECT(blo_solve(&p, bvfim_dir, &r, 0, &sp, x, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
            errs[k] = hypot(x[0] - 1, x[1] + 0.5);
            EXPECT(r.s.resets >= 1 && r.s.gap > 0, "resets %d, gap %g", r.s.resets, r.s.gap);
            blo_bvfim_free(&r.s);
            ad_tape_free(r.tape);
        }
        if (getenv("HYPERTAPE_TEST_VERBOSE")) printf("  bvfim errors %.4g (l = 1000), %.4g (l = 4000)\n", errs[0], errs[1]);
        EXPECT(errs[1] < 0.022 && errs[1] < errs[0] / 1.5 && errs[1] > errs[0] / 3,
               "errors %.4g at l = 1000, %.4g at l = 4000", errs[0], errs[1]);
    }
}

// ---- the upper-level loop ----

typedef struct {
    const double *c;
    int nan_at;
} target;

// direction x - c: the minimizer of 1/2 ||x - c||^2; NaN at iteration nan_at
static blo_status to_target(void *m, const blo_problem *p, int t, const double *x, const double *z,
                            double *gx, double *gz, blo_record *rec, blo_error *err) {
    (void)z, (void)gz, (void)err;
    const target *tg = m;
    rec->F = 0;
    for (int i = 0; i < p->n_x; i++) gx[i] = t == tg->nan_at ? NAN : x[i] - tg->c[i];
    return BLO_OK;
}

static void count_records(const blo_record *r, void *u) { *(int *)u = r->t + 1; }

static void solve_cases(void) {
    blo_problem p = {.n_x = 3, .n_y = 1, .F = bv_F, .f = bv_f};
    double c[3] = {1, -2, 0.5}, hi[3] = {10, 10, 0.2};
    const char *names[3] = {"plain", "momentum", "adam"};
    for (int o = 0; o < 3; o++) {
        char name[96];
        snprintf(name, sizeof name, "solve: %s steps reach the minimizer, projected onto the box", names[o]);
        TEST_CASE(name) {
            target tg = {c, -1};
            blo_problem pb = p;
            pb.x_hi = hi;
            blo_solve_params sp = blo_solve_default_params();
            sp.opt = (blo_optimizer)o, sp.T = 3000, sp.lr_x = o == 2 ? 0.01 : 0.05;
            int recs = 0;
            sp.record = count_records, sp.record_user = &recs;
            double x[3] = {0, 0, 0};
            EXPECT(blo_solve(&pb, to_target, &tg, 0, &sp, x, NULL, NULL, NULL) == BLO_OK, "status");
            EXPECT(fabs(x[0] - 1) < 1e-6 && fabs(x[1] + 2) < 1e-6 && x[2] == 0.2,
                   "x = (%g, %g, %g)", x[0], x[1], x[2]);
            EXPECT(recs == 3000, "%d records", recs);
        }
    }
    TEST_CASE("solve: a NaN direction stops with a clear error and keeps the last good iterate") {
        target tg = {c, 5};
        blo_solve_params sp = blo_solve_default_params();
        sp.T = 100;
        double x[3] = {0, 0, 0}, expect[3] = {0, 0, 0};
        for (int t = 0; t < 5; t++)
            for (int i = 0; i < 3; i++) expect[i] -= sp.lr_x * (expect[i] - c[i]);
        blo_error e;
        int done;
        EXPECT(blo_solve(&p, to_target, &tg, 0, &sp, x, NULL, &done, &e) == BLO_ETAPE &&
                   strstr(e.msg, "iteration 5") && strstr(e.msg, "last good iterate"),
               "%s", e.msg);
        EXPECT(done == 5 && x[0] == expect[0] && x[1] == expect[1] && x[2] == expect[2],
               "done %d, x = (%g, %g, %g)", done, x[0], x[1], x[2]);
    }
    TEST_CASE("solve: bad settings are errors") {
        target tg = {c, -1};
        blo_solve_params sp = blo_solve_default_params();
        double x[3] = {0, 0, 0};
        blo_error e;
        sp.T = 0;
        EXPECT(blo_solve(&p, to_target, &tg, 0, &sp, x, NULL, NULL, &e) == BLO_EARG && strstr(e.msg, "T = 0"),
               "%s", e.msg);
        sp.T = 10, sp.lr_x = -0.1;
        EXPECT(blo_solve(&p, to_target, &tg, 0, &sp, x, NULL, NULL, &e) == BLO_EARG, "negative step");
    }
}

// ---- a large elementwise problem: F = 1/2 ||y - 1||^2, f = 1/2 sum a_i y_i^2 - x . y ----

static ad_var big_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)x, (void)u;
    return ad_scale(t, ad_sqnorm(t, ad_shift(t, y, -1)), 0.5);
}
static ad_var big_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    ad_var a = ad_const_view(t, ad_shape_of(t, y), u);
    return ad_sub(t, ad_scale(t, ad_dot(t, a, ad_square(t, y)), 0.5), ad_dot(t, x, y));
}

static void budget_cases(void) {
    TEST_CASE("hypergrad: a trajectory over the graph budget takes the lean sweep (small tape)") {
        // n = 3000, K = 300: one step's graph is ~0.5 MB, the trajectory's ~150 MB > 64 MiB
        enum { N = 3000 };
        double *a = malloc(sizeof(double) * N), *x = calloc(N, sizeof(double)), *g = malloc(sizeof(double) * N);
        for (int i = 0; i < N; i++) a[i] = 1 + i % 3, x[i] = 0.5;
        blo_problem p = {.n_x = N, .n_y = N, .F = big_F, .f = big_f, .user = a};
        blo_dynamics d = blo_dynamics_gd(N, (blo_gd_params){.s_l = 0.2});
        ad_tape *t = ad_tape_new(NULL);
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = 300, hp.tape = t;
        blo_hypergrad_info info;
        blo_error e;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, &info, &e) == BLO_OK, "%s", e.msg);
        EXPECT(info.graph == 0 && ad_tape_peak_bytes(t) < ((size_t)16 << 20),
               "graph mode %d, tape peak %zu bytes", info.graph, ad_tape_peak_bytes(t));
        ad_tape_free(t);
        free(a), free(x), free(g);
    }
}

static void runner_cases(void) {
    quad q = quad_make(6, 3, 5);
    blo_problem p = quad_problem(&q);
    double x[3] = {0.2, -0.4, 1.0}, y0[6] = {0}, zp[6] = {1, 1, 1, 1, 1, 1};
    TEST_CASE("methods by name: every method builds a runner and gives a finite direction") {
        for (const char *const *m = blo_method_names(); *m; m++) {
            blo_method_config c;
            blo_error e;
            EXPECT(blo_method_default_config(*m, &c, &e) == BLO_OK, "%s: %s", *m, e.msg);
            c.z_prior = zp;
            blo_runner *r;
            if (blo_runner_new(&r, &p, &c, y0, &e) != BLO_OK) {
                EXPECT(0, "%s: %s", *m, e.msg);
                continue;
            }
            int nz = blo_runner_n_z(r);
            double g[9] = {0}, z[6] = {0};
            blo_record rec = {0};
            blo_status st = blo_runner_direction()(r, &p, 0, x, nz ? z : NULL, g, nz ? g + 3 : NULL, &rec, &e);
            bool finite = isfinite(rec.F) && isfinite(rec.f);
            for (int i = 0; i < 3 + nz; i++) finite &= isfinite(g[i]);
            EXPECT(st == BLO_OK && finite, "%s: %s", *m, st ? e.msg : "non-finite direction");
            EXPECT(nz == (!strcmp(*m, "ait") || !strcmp(*m, "aitp") || !strcmp(*m, "bome") ? 6 : 0),
                   "%s: n_z = %d", *m, nz);
            blo_runner_free(r);
        }
    }
    TEST_CASE("methods by name: rhg through the runner is blo_hypergrad with the method's dynamics") {
        blo_method_config c;
        blo_method_default_config("rhg", &c, NULL);
        blo_runner *r;
        blo_runner_new(&r, &p, &c, y0, NULL);
        double g1[3], g2[3];
        blo_record rec;
        blo_runner_direction()(r, &p, 0, x, NULL, g1, NULL, &rec, NULL);
        blo_dynamics d = blo_dynamics_gd(6, c.gd);
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = c.K;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, y0, g2, NULL, NULL, NULL, NULL) == BLO_OK, "hypergrad");
        for (int i = 0; i < 3; i++) EXPECT(g1[i] == g2[i], "entry %d: %g vs %g", i, g1[i], g2[i]);
        blo_runner_free(r);
    }
    TEST_CASE("methods by name: an explicit prior acts on the first UL iteration only (AIT)") {
        blo_method_config c;
        blo_method_default_config("aitp", &c, NULL);
        c.z_prior = zp, c.prior_lambda = 2;
        blo_runner *r;
        blo_error e;
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_OK, "%s", e.msg);
        double z[6] = {0.5, 0, 0, 0, 0, 0}, g0[9], g1[9];
        blo_record rec;
        blo_runner_direction()(r, &p, 0, x, z, g0, g0 + 3, &rec, NULL);
        blo_runner_direction()(r, &p, 1, x, z, g1, g1 + 3, &rec, NULL);
        for (int i = 0; i < 6; i++)
            EXPECT(fabs(g0[3 + i] - g1[3 + i] - 2 * (z[i] - zp[i])) < 1e-12, "z entry %d", i);
        blo_runner_free(r);
        c.z_prior = NULL;
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_EARG && strstr(e.msg, "z_p"), "%s", e.msg);
    }
    TEST_CASE("methods by name: aitp's default prior starts z at z_p (no penalty term, so no optimizer interplay)") {
        blo_method_config c;
        blo_method_default_config("aitp", &c, NULL);
        c.z_prior = zp;
        blo_runner *r;
        blo_error e;
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_OK, "%s", e.msg);
        double z[6], g0[9], g1[9];
        blo_runner_z0(r, y0, z);
        for (int i = 0; i < 6; i++) EXPECT(z[i] == zp[i], "z0[%d] = %g", i, z[i]);
        blo_record rec;
        blo_runner_direction()(r, &p, 0, x, z, g0, g0 + 3, &rec, NULL);
        blo_runner_direction()(r, &p, 1, x, z, g1, g1 + 3, &rec, NULL);
        for (int i = 0; i < 9; i++) EXPECT(g0[i] == g1[i], "no penalty term: entry %d", i);
        blo_runner_free(r);
    }
    TEST_CASE("methods by name: flags that mean nothing for a method are errors") {
        const char *m[] = {"cg", "neumann", "bome", "galet", "bvfim"};
        for (int k = 0; k < 5; k++)
            for (int f = 0; f < 2; f++) {
                blo_method_config c;
                blo_method_default_config(m[k], &c, NULL);
                if (f) c.ptt = 1;
                else c.ia = 1;
                blo_runner *r;
                blo_error e;
                EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_EARG && strstr(e.msg, "--ia and --ptt"),
                       "%s %s: %s", m[k], f ? "ptt" : "ia", e.msg);
            }
    }
    TEST_CASE("methods by name: neumann's step is the LL step, and a diverging series is an error") {
        blo_method_config c;
        blo_method_default_config("neumann", &c, NULL);
        blo_runner *r;
        blo_error e;
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_OK, "%s", e.msg);
        double g[3];
        blo_record rec;
        EXPECT(blo_runner_direction()(r, &p, 0, x, NULL, g, NULL, &rec, &e) == BLO_OK && rec.extra < 1,
               "residual %g: %s", rec.extra, e.msg);
        blo_runner_free(r);
        c.implicit.eta = 5; // the quadratic's H has eigenvalues >= 1: eta = 5 diverges
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_OK, "%s", e.msg);
        EXPECT(blo_runner_direction()(r, &p, 0, x, NULL, g, NULL, &rec, &e) == BLO_ETAPE &&
                   strstr(e.msg, "series diverges"),
               "%s", e.msg);
        blo_runner_free(r);
    }
    TEST_CASE("methods by name: unknown names and bad settings are errors") {
        blo_method_config c;
        blo_error e;
        EXPECT(blo_method_default_config("sgd", &c, &e) == BLO_EARG && strstr(e.msg, "sgd"), "%s", e.msg);
        blo_method_default_config("rhg", &c, NULL);
        c.dynamics = "adam";
        blo_runner *r;
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_EARG && strstr(e.msg, "adam"), "%s", e.msg);
        blo_method_default_config("rhg", &c, NULL);
        c.K = 0;
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_EARG && strstr(e.msg, "K = 0"), "%s", e.msg);
        blo_method_default_config("rhg", &c, NULL);
        c.gd.s_l = -0.1;
        EXPECT(blo_runner_new(&r, &p, &c, y0, &e) == BLO_EARG, "negative step: %s", e.msg);
    }
    quad_free(&q);
}

void test_bilevel_methods(void) {
    budget_cases();
    runner_cases();
    implicit_cases();
    bome_cases();
    galet_cases();
    bvfim_cases();
    solve_cases();
}
