// The implicit solvers beyond CG's strongly convex case: MINRES on an LL whose Hessian at the
// solution is indefinite (a saddle) against the closed-form implicit gradient, where CG stops
// and says so; GMRES at the fixed point of a dynamics' step map (gd, heavy ball, Nesterov, the
// accelerated scheme, a user's map that converges to a saddle) against the closed form; all of
// them equal to CG where CG applies; singular systems, restarts and bad arguments; and the minres
// and gmres methods through the solver (gmres also with an active Y box, which CG's H ignores);
// GALET's direction (its Eq. 12-13) with y and w converged against the closed form and MINRES.
#include "harness.h"
#include "tests.h"

#include "../bilevel/blo_extra.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- the problem: F = 1/2 ||y - b||^2 + rho/2 ||x||^2, f = 1/2 y^T A y - y^T B x + w lse(y) ----
// A = Q diag(lam) Q with Q = I - 2 u u^T / u^T u (a reflection), so A's spectrum is chosen (of
// any sign) and A^+ = Q diag(1/lam, 0 where lam = 0) Q is exact. With w = 0, y* = A^-1 B x is a
// stationary point of f (a saddle when lam has both signs) and the hypergradient is
// rho x + B^T A^-1 (y* - b): the closed form grad_x F - (d²f/dx dy) H^-1 grad_y F.

enum { N = 8, M = 3 };

typedef struct {
    double lse;                  // w: the non-quadratic term's weight
    double rho;
    double Q[N * N], A[N * N], Ap[N * N], B[N * M], b[N];
    double lam[N];
} sq;

static ad_var sq_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const sq *q = u;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(N), q->b));
    return ad_scale(t, ad_add(t, ad_sqnorm(t, r), ad_scale(t, ad_sqnorm(t, x), q->rho)), 0.5);
}

static ad_var sq_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const sq *q = u;
    ad_var Bx = ad_matvec(t, ad_const_view(t, ad_mat_shape(N, M), q->B), x, 0);
    ad_var v = ad_sub(t, ad_quadform(t, ad_const_view(t, ad_mat_shape(N, N), q->A), y), ad_dot(t, y, Bx));
    return q->lse ? ad_add(t, v, ad_scale(t, ad_logsumexp(t, y), q->lse)) : v;
}

static blo_problem sq_problem(sq *q) { return (blo_problem){.n_x = M, .n_y = N, .F = sq_F, .f = sq_f, .user = q}; }

static void matvec(const double *A, int rows, int cols, const double *v, double *out) {
    for (int i = 0; i < rows; i++) {
        out[i] = 0;
        for (int j = 0; j < cols; j++) out[i] += A[i * cols + j] * v[j];
    }
}

// Spectrum lam [N], seeded Q, B and b (random normal).
static void sq_init(sq *q, const double *lam, double lse, uint64_t seed) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    double u[N], uu = 0;
    for (int i = 0; i < N; i++) u[i] = ad_rng_normal(&g), uu += u[i] * u[i];
    *q = (sq){.lse = lse, .rho = 0.1};
    memcpy(q->lam, lam, sizeof q->lam);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) q->Q[i * N + j] = (i == j) - 2 * u[i] * u[j] / uu;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            for (int k = 0; k < N; k++) {
                q->A[i * N + j] += q->Q[i * N + k] * lam[k] * q->Q[j * N + k];
                q->Ap[i * N + j] += q->Q[i * N + k] * (lam[k] ? 1 / lam[k] : 0) * q->Q[j * N + k];
            }
    for (int i = 0; i < N * M; i++) q->B[i] = ad_rng_normal(&g);
    for (int i = 0; i < N; i++) q->b[i] = ad_rng_normal(&g);
}

// y* = A^+ B x, and b moved so that grad_y F(x, y*) = y* - b = Q c (c in A's eigenbasis).
static void sq_ystar(const sq *q, const double *x, double *ystar) {
    double Bx[N];
    matvec(q->B, N, M, x, Bx);
    matvec(q->Ap, N, N, Bx, ystar);
}
static void sq_aim(sq *q, const double *x, const double *c) {
    double ystar[N], Qc[N];
    sq_ystar(q, x, ystar);
    matvec(q->Q, N, N, c, Qc);
    for (int i = 0; i < N; i++) q->b[i] = ystar[i] - Qc[i];
}

// The closed-form hypergradient rho x + B^T A^-1 (y* - b) [M].
static void sq_exact(const sq *q, const double *x, double *grad) {
    double ystar[N], r[N], u[N];
    sq_ystar(q, x, ystar);
    for (int i = 0; i < N; i++) r[i] = ystar[i] - q->b[i];
    matvec(q->Ap, N, N, r, u);
    for (int j = 0; j < M; j++) {
        grad[j] = q->rho * x[j];
        for (int i = 0; i < N; i++) grad[j] += q->B[i * M + j] * u[i];
    }
}

static double rel_diff(const double *a, const double *b, int n) {
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) d += (a[i] - b[i]) * (a[i] - b[i]), s += b[i] * b[i];
    return sqrt(d / s);
}

static const double lam_indefinite[N] = {3, -2.5, 2, -1.5, 1, -1, 2.5, -3};
static const double lam_definite[N] = {1, 1.5, 2, 2.5, 3, 3.5, 4, 5};
static const double x_at[M] = {0.5, -1, 0.25};

static blo_implicit_params solver(blo_implicit_kind kind, int iters) {
    blo_implicit_params ip = blo_implicit_default_params(kind);
    ip.iters = iters;
    return ip;
}

// ---- a user's step map that converges to the saddle: y <- y - s A (A y - B x), descent on
// 1/2 ||grad_y f||^2 (the quadratic's), with s in blo_gd_params.s_l ----

static ad_var normgd_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x, ad_var y) {
    const sq *q = p->user;
    (void)k;
    ad_var A = ad_const_view(t, ad_mat_shape(N, N), q->A);
    ad_var g = ad_sub(t, ad_matvec(t, A, y, 0), ad_matvec(t, ad_const_view(t, ad_mat_shape(N, M), q->B), x, 0));
    return ad_axpy(t, y, -d->par.gd.s_l, ad_matvec(t, A, g, 0));
}
static blo_dynamics normgd_make(int n_y, const void *par) {
    return (blo_dynamics){.name = "normgd", .state_size = n_y, .step = normgd_step,
                          .ll_step = ((const blo_gd_params *)par)->s_l, .par.gd = *(const blo_gd_params *)par};
}
static const blo_gd_params normgd_defaults = {.s_l = 0.1};
static const blo_setting normgd_settings[] = {
    BLO_ROW_DBL(blo_gd_params, s_l, "s_l", 0, INFINITY, BLO_SET_LO_OPEN, "s", "step on 1/2 ||grad_y f||^2"),
    BLO_ROW_END,
};
static const blo_dynamics_type normgd_type = {"normgd", "descent on 1/2 ||grad_y f||^2 (the test's quadratic)",
                                              sizeof(blo_gd_params), &normgd_defaults, normgd_settings, normgd_make};

// ---- MINRES at a saddle, and CG there --------------------------------------------------------------

static void minres_cases(void) {
    // c: grad_y F at y* in A's eigenbasis (NULL: b random)
    static const double c_neg[N] = {0.3, 1}, c_flat[N] = {[4] = 1, [5] = 0.99999999995};
    struct {
        const char *name;
        const double *lam, *c;
        int cg_stops; // CG must stop at a breakdown (else: it converges)
    } cases[] = {
        {"saddle, g^T H g < 0: cg stops at its first step", lam_indefinite, c_neg, 1},
        {"saddle, g^T H g = 1e-10: cg would divide by ~0", lam_indefinite, c_flat, 1},
        {"saddle, random b", lam_indefinite, NULL, -1},
        {"definite, random b", lam_definite, NULL, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[200];
        snprintf(name, sizeof name, "minres: %s: minres equals the closed form, cg says what it did", cases[k].name);
        TEST_CASE(name) {
            sq q;
            sq_init(&q, cases[k].lam, 0, 7 + k);
            if (cases[k].c) sq_aim(&q, x_at, cases[k].c);
            blo_problem p = sq_problem(&q);
            double ystar[N], exact[M], g[M];
            sq_ystar(&q, x_at, ystar);
            sq_exact(&q, x_at, exact);
            blo_implicit_params ip = solver(BLO_IMPLICIT_MINRES, 3 * N);
            blo_implicit_info info;
            blo_error e;
            EXPECT(blo_implicit_hypergrad(&p, &ip, x_at, ystar, g, &info, NULL, &e) == BLO_OK, "%s", e.msg);
            double err = rel_diff(g, exact, M);
            EXPECT(err < 1e-10 && info.residual < 1e-10 && !info.breakdown && info.iters <= N + 1,
                   "minres: error %.3g, residual %.3g, %d iterations", err, info.residual, info.iters);
            ip = solver(BLO_IMPLICIT_CG, 3 * N);
            EXPECT(blo_implicit_hypergrad(&p, &ip, x_at, ystar, g, &info, NULL, &e) == BLO_OK, "%s", e.msg);
            err = rel_diff(g, exact, M);
            if (cases[k].cg_stops == 1)
                EXPECT(info.breakdown && info.iters == 0 && info.residual == 1 && err > 0.1,
                       "cg: breakdown %d after %d, residual %.3g, error %.3g", info.breakdown, info.iters,
                       info.residual, err);
            if (cases[k].cg_stops == 0)
                EXPECT(!info.breakdown && err < 1e-10, "cg: error %.3g", err);
            // whatever it did, a residual that claims convergence is true
            EXPECT(info.residual > 1e-8 || err < 1e-6, "cg: residual %.3g but error %.3g", info.residual, err);
            printf("  %s: cg breakdown %d at %d, residual %.2g, error %.2g\n", cases[k].name, info.breakdown,
                   info.iters, info.residual, err);
        }
    }
    TEST_CASE("minres: singular H, g not in its range: the least-squares residual, finite, no error") {
        static const double lam[N] = {1, 2, 0, 3, -1, 2, 1.5, 4}, c[N] = {1, 0, 0.5, 1, 0, 0, 0, 1};
        sq q;
        sq_init(&q, lam, 0, 3);
        sq_aim(&q, x_at, c);
        blo_problem p = sq_problem(&q);
        double ystar[N], g[M], ls = 0.5 / sqrt(3.25); // |c_null| / |c|
        sq_ystar(&q, x_at, ystar);
        blo_implicit_kind kinds[3] = {BLO_IMPLICIT_MINRES, BLO_IMPLICIT_GMRES, BLO_IMPLICIT_CG};
        for (int i = 0; i < 3; i++) {
            blo_implicit_params ip = solver(kinds[i], 4 * N);
            blo_implicit_info info;
            blo_error e;
            EXPECT(blo_implicit_hypergrad(&p, &ip, x_at, ystar, g, &info, NULL, &e) == BLO_OK, "%s", e.msg);
            EXPECT(isfinite(g[0]) && isfinite(g[1]) && isfinite(g[2]) && info.residual >= ls - 1e-12,
                   "solver %d: residual %.3g below the least-squares %.3g", i, info.residual, ls);
            if (kinds[i] != BLO_IMPLICIT_CG) // the least residual over the Krylov space
                EXPECT(fabs(info.residual - ls) < 1e-10 && info.breakdown, "solver %d: residual %.12g, least "
                       "squares %.12g, breakdown %d", i, info.residual, ls, info.breakdown);
            printf("  singular H: solver %d residual %.3g, breakdown %d after %d\n", i, info.residual,
                   info.breakdown, info.iters);
        }
    }
}

// ---- the fixed point of a step map ---------------------------------------------------------------------

static blo_dynamics dynamics_named(const char *name) {
    if (!strcmp(name, "gd")) return blo_dynamics_gd(N, blo_gd_default_params());
    if (!strcmp(name, "momentum")) return blo_dynamics_momentum(N, blo_momentum_default_params());
    if (!strcmp(name, "nesterov")) return blo_dynamics_nesterov(N, blo_nesterov_default_params());
    if (!strcmp(name, "accel")) return blo_dynamics_accel(N, (blo_accel_params){.L_f = 5});
    return normgd_make(N, &normgd_defaults);
}

static void fixed_point_cases(void) {
    struct {
        const char *dyn;
        const double *lam;
        int k;        // the step whose fixed point it is
        blo_implicit_kind kind;
        int iters, restart;
        int converges; // 1: to the closed form; 0: stopped early, the residual says so
    } cases[] = {
        {"gd", lam_definite, 0, BLO_IMPLICIT_GMRES, 400, 20, 1},
        {"momentum", lam_definite, 0, BLO_IMPLICIT_GMRES, 400, 20, 1},
        {"momentum", lam_definite, 0, BLO_IMPLICIT_GMRES, 400, 3, 1},   // restarted every 3 iterations
        {"nesterov", lam_definite, 50, BLO_IMPLICIT_GMRES, 400, 20, 1}, // momentum 0.94 at k = 50
        {"accel", lam_definite, 10, BLO_IMPLICIT_GMRES, 400, 20, 1},    // state (y, u, v) [3 n_y]
        {"normgd", lam_indefinite, 0, BLO_IMPLICIT_GMRES, 400, 20, 1},  // a user's map to a saddle
        // eta = 1: q = sum_j ((dPhi/ds)^T)^j dF/ds (recurrent backprop)
        {"momentum", lam_definite, 0, BLO_IMPLICIT_NEUMANN, 600, 20, 1},
        {"momentum", lam_definite, 0, BLO_IMPLICIT_GMRES, 4, 20, 0},    // too few iterations
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[200];
        snprintf(name, sizeof name, "gmres: fixed point of %s (step %d, %s A) by %s, J = %d, restart %d, at y*: %s",
                 cases[k].dyn, cases[k].k, cases[k].lam == lam_definite ? "definite" : "indefinite",
                 cases[k].kind == BLO_IMPLICIT_GMRES ? "gmres" : "neumann", cases[k].iters, cases[k].restart,
                 cases[k].converges ? "the closed form" : "a reported residual, no error");
        TEST_CASE(name) {
            sq q;
            sq_init(&q, cases[k].lam, 0, 21 + k);
            blo_problem p = sq_problem(&q);
            blo_dynamics d = dynamics_named(cases[k].dyn);
            double ystar[N], state[3 * N], exact[M], g[M];
            sq_ystar(&q, x_at, ystar);
            sq_exact(&q, x_at, exact);
            blo_error e;
            EXPECT(blo_state_init(&p, &d, ystar, state, NULL, &e) == BLO_OK, "%s", e.msg); // (y*, y*, ...)
            blo_implicit_params ip = solver(cases[k].kind, cases[k].iters);
            ip.restart = cases[k].restart, ip.eta = 1, ip.tol = 1e-13; // (I - J) has a condition of ~10-100
            blo_implicit_info info;
            EXPECT(blo_fixed_point_hypergrad(&p, &d, cases[k].k, &ip, x_at, state, g, &info, NULL, &e) == BLO_OK,
                   "%s", e.msg);
            double err = rel_diff(g, exact, M);
            if (cases[k].converges)
                EXPECT(err < 1e-10 && info.residual < 1e-10 && !info.breakdown,
                       "error %.3g, residual %.3g after %d iterations", err, info.residual, info.iters);
            else
                EXPECT(info.iters == cases[k].iters && info.residual > 1e-4 && info.residual < 1 &&
                       !info.breakdown && err > 1e-6, "residual %.3g after %d", info.residual, info.iters);
            printf("  %s: error %.2g, %d iterations (S = %d)\n", name + 7, err, info.iters, d.state_size);
        }
    }
    TEST_CASE("gmres: a singular fixed-point system (gd on a singular H) stops finite, residual reported") {
        static const double lam[N] = {1, 2, 0, 3, 1, 2, 1.5, 4}, c[N] = {1, 0, 0.5, 1};
        sq q;
        sq_init(&q, lam, 0, 24);
        sq_aim(&q, x_at, c);
        blo_problem p = sq_problem(&q);
        blo_dynamics d = blo_dynamics_gd(N, blo_gd_default_params());
        double ystar[N], g[M];
        sq_ystar(&q, x_at, ystar);
        blo_implicit_params ip = solver(BLO_IMPLICIT_GMRES, 50);
        blo_implicit_info info;
        blo_error e;
        EXPECT(blo_fixed_point_hypergrad(&p, &d, 0, &ip, x_at, ystar, g, &info, NULL, &e) == BLO_OK, "%s", e.msg);
        double ls = 0.5 / 1.5; // |c_null| / |c|: the least residual
        EXPECT(isfinite(g[0]) && isfinite(g[1]) && isfinite(g[2]) && fabs(info.residual - ls) < 1e-10 &&
                   info.breakdown, "residual %.12g (least %.12g), breakdown %d after %d", info.residual, ls,
               info.breakdown, info.iters);
    }
}

// ---- every solver equals CG where CG applies: an SPD, non-quadratic LL, away from y* -------------------

static void agreement_cases(void) {
    struct {
        const char *name;
        blo_implicit_kind kind;
        const char *fixed_point_of; // the dynamics whose step's fixed point, or NULL: H q = g
    } cases[] = {
        {"minres on H", BLO_IMPLICIT_MINRES, NULL},
        {"gmres on H", BLO_IMPLICIT_GMRES, NULL},
        {"gmres at the fixed point of gd", BLO_IMPLICIT_GMRES, "gd"},
        {"gmres at the fixed point of heavy ball", BLO_IMPLICIT_GMRES, "momentum"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[200];
        snprintf(name, sizeof name, "solvers: %s equals cg at y_K (5 steps, f with a log-sum-exp term)", cases[k].name);
        TEST_CASE(name) {
            sq q;
            sq_init(&q, lam_definite, 2, 31);
            blo_problem p = sq_problem(&q);
            const char *dn = cases[k].fixed_point_of ? cases[k].fixed_point_of : "momentum";
            blo_dynamics d = dynamics_named(dn);
            double states[6 * 2 * N], y0[N] = {0}, y[N], ref[M], g[M];
            blo_error e;
            int S = d.state_size;
            EXPECT(blo_state_init(&p, &d, y0, states, NULL, &e) == BLO_OK &&
                       blo_unroll(&p, &d, x_at, 0, states, 5, states, NULL, NULL, &e) == BLO_OK &&
                       blo_state_read_y(&p, &d, states + 5 * S, y, NULL, &e) == BLO_OK, "%s", e.msg);
            blo_implicit_params ip = solver(BLO_IMPLICIT_CG, 50);
            blo_implicit_info info;
            EXPECT(blo_implicit_hypergrad(&p, &ip, x_at, y, ref, &info, NULL, &e) == BLO_OK && info.residual < 1e-10,
                   "cg: %s, residual %.3g", e.msg, info.residual);
            ip = solver(cases[k].kind, 100);
            blo_status st = cases[k].fixed_point_of
                                ? blo_fixed_point_hypergrad(&p, &d, 5, &ip, x_at, states + 5 * S, g, &info, NULL, &e)
                                : blo_implicit_hypergrad(&p, &ip, x_at, y, g, &info, NULL, &e);
            EXPECT(st == BLO_OK, "%s", e.msg);
            double err = rel_diff(g, ref, M);
            EXPECT(err < 1e-10 && info.residual < 1e-10, "against cg %.3g, residual %.3g", err, info.residual);
        }
    }
}

// ---- bad arguments --------------------------------------------------------------------------------------

static void error_cases(void) {
    sq q;
    sq_init(&q, lam_definite, 0, 41);
    blo_problem p = sq_problem(&q);
    blo_dynamics d = blo_dynamics_momentum(N, blo_momentum_default_params());
    double state[2 * N] = {0}, g[M];
    struct {
        blo_implicit_kind kind;
        int restart, k, fixed_point;
        const char *says;
    } cases[] = {
        {BLO_IMPLICIT_CG, 20, 0, 1, "cg needs a symmetric operator"},
        {BLO_IMPLICIT_MINRES, 20, 0, 1, "minres needs a symmetric operator"},
        {BLO_IMPLICIT_GMRES, 0, 0, 1, "restart 0 must be >= 1"},
        {BLO_IMPLICIT_GMRES, 0, 0, 0, "restart 0 must be >= 1"},
        {BLO_IMPLICIT_GMRES, 20, -1, 1, "step k = -1"},
        {(blo_implicit_kind)9, 20, 0, 0, "unknown solver 9"},
        {(blo_implicit_kind)-1, 20, 0, 1, "unknown solver -1"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[200];
        snprintf(name, sizeof name, "solvers: bad arguments are an error: %s%s", cases[k].says,
                 cases[k].fixed_point ? " (fixed point)" : "");
        TEST_CASE(name) {
            blo_implicit_params ip = blo_implicit_default_params(cases[k].kind);
            ip.restart = cases[k].restart;
            blo_error e;
            blo_status st = cases[k].fixed_point
                                ? blo_fixed_point_hypergrad(&p, &d, cases[k].k, &ip, x_at, state, g, NULL, NULL, &e)
                                : blo_implicit_hypergrad(&p, &ip, x_at, state, g, NULL, NULL, &e);
            EXPECT(st == BLO_EARG && strstr(e.msg, cases[k].says), "%s", e.msg);
        }
    }
    TEST_CASE("solvers: NULL arguments and a dynamics without a step are errors") {
        blo_implicit_params ip = blo_implicit_default_params(BLO_IMPLICIT_GMRES);
        blo_error e;
        EXPECT(blo_fixed_point_hypergrad(&p, &d, 0, &ip, x_at, NULL, g, NULL, NULL, &e) == BLO_EARG &&
                   strstr(e.msg, "NULL"), "%s", e.msg);
        blo_dynamics bad = d;
        bad.step = NULL;
        EXPECT(blo_fixed_point_hypergrad(&p, &bad, 0, &ip, x_at, state, g, NULL, NULL, &e) == BLO_EARG &&
                   strstr(e.msg, "no step map"), "%s", e.msg);
    }
}

// ---- the methods through the solver ---------------------------------------------------------------------

// The first direction of method with settings on q from y0 = 0: gradient [M] and the record.
static blo_status direction(sq *q, const char *method, const blo_dynamics_type *dyn, const char *settings,
                            double *grad, blo_record *rec, blo_error *e) {
    blo_problem p = sq_problem(q);
    blo_config *c = blo_config_new(blo_method_find(method), e);
    blo_status st = !c ? e->status : dyn ? blo_config_set_dynamics(c, dyn, e) : BLO_OK;
    if (!st) st = blo_config_apply(c, settings, e);
    blo_solver *s = st ? NULL : blo_solver_new(&p, c, x_at, NULL, NULL, e);
    if (!st && !s) st = e->status;
    if (s && !(st = blo_solver_direction(s, rec, e))) memcpy(grad, blo_solver_gradient(s), sizeof(double) * M);
    blo_solver_free(s);
    blo_config_free(c);
    return st;
}

static void method_cases(void) {
    static const double c_neg[N] = {0.3, 1};
    struct {
        const char *method, *settings;
        const double *lam;
        int user_dynamics; // normgd, which converges to the saddle
        int fails;         // CG: stops at once, residual 1 in the record
    } cases[] = {
        {"minres", "ll_iters=300 J=30", lam_definite, 0, 0},
        {"gmres", "ll_iters=300 J=60", lam_definite, 0, 0},
        {"gmres", "ll_iters=300 J=60 dynamics=nesterov", lam_definite, 0, 0},
        {"gmres", "ll_iters=300 J=60 restart=4", lam_definite, 0, 0},
        {"minres", "ll_iters=400 J=30", lam_indefinite, 1, 0},
        {"gmres", "ll_iters=400 J=30", lam_indefinite, 1, 0},
        {"cg", "ll_iters=400 J=30", lam_indefinite, 1, 1},
        // GALET Eq. 12 from w = 0: GD on 1/2 ||grad_y F + H w||^2 contracts by 1 - rho lam^2,
        // at most 0.94 here (rho lam_max^2 = 1.5 < 2), so 600 steps leave ~1e-16; y: 300 GD steps
        // of 0.3 contract by 0.7 each. Its record's residual is the shadow level's.
        {"galet", "N=300 beta=0.3 T_w=600 rho=0.06 w_warm=0", lam_definite, 0, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[200];
        snprintf(name, sizeof name, "methods: %s %s on the %s quadratic%s: the closed form%s", cases[k].method,
                 cases[k].settings, cases[k].lam == lam_definite ? "definite" : "saddle",
                 cases[k].user_dynamics ? " (a user's dynamics to the saddle)" : "",
                 cases[k].fails ? " is missed, the record's residual says so" : " to 1e-9");
        TEST_CASE(name) {
            sq q;
            sq_init(&q, cases[k].lam, 0, 51);
            if (cases[k].user_dynamics) sq_aim(&q, x_at, c_neg);
            double exact[M], g[M];
            sq_exact(&q, x_at, exact);
            blo_record rec;
            blo_error e;
            EXPECT(direction(&q, cases[k].method, cases[k].user_dynamics ? &normgd_type : NULL, cases[k].settings, g,
                             &rec, &e) == BLO_OK, "%s", e.msg);
            double err = rel_diff(g, exact, M);
            if (cases[k].fails)
                EXPECT(err > 0.1 && rec.extra == 1, "error %.3g, residual %.3g", err, rec.extra);
            else
                EXPECT(err < 1e-9 && rec.extra < 1e-10, "error %.3g, residual %.3g", err, rec.extra);
        }
    }
    TEST_CASE("methods: minres and gmres pass check_hypergrad where the LL has converged") {
        sq q;
        sq_init(&q, lam_definite, 1, 52);
        blo_problem p = sq_problem(&q);
        const char *methods[2] = {"minres", "gmres"};
        for (int i = 0; i < 2; i++) {
            blo_error e;
            blo_config *c = blo_config_new(blo_method_find(methods[i]), &e);
            EXPECT(c && blo_config_apply(c, "ll_iters=300 J=60", &e) == BLO_OK, "%s", e.msg);
            double y0[N] = {0};
            blo_check_report r = blo_check_hypergrad(&p, c, x_at, y0, NULL, NULL);
            EXPECT(r.status == BLO_OK && r.pass && r.checked == M, "%s: %s", methods[i], r.msg);
            blo_config_free(c);
        }
    }
    TEST_CASE("methods: galet's direction is minres's where y and w have converged (f with the lse term)") {
        // galet has no value to differentiate (check_hypergrad refuses it), so it is compared with
        // minres's implicit gradient at the same y: H = A + lse's Hessian, eigenvalues in [1, ~5.5],
        // rho lam_max^2 < 2; 300 GD steps of 0.3 from y0 = 0 in both
        sq q;
        sq_init(&q, lam_definite, 1, 54);
        double ref[M], g[M];
        blo_record rec;
        blo_error e;
        EXPECT(direction(&q, "minres", NULL, "ll_iters=300 J=60", ref, &rec, &e) == BLO_OK && rec.extra < 1e-10,
               "minres: residual %.3g %s", rec.extra, e.msg);
        EXPECT(direction(&q, "galet", NULL, "N=300 beta=0.3 T_w=600 rho=0.06 w_warm=0", g, &rec, &e) == BLO_OK,
               "%s", e.msg);
        double err = rel_diff(g, ref, M);
        EXPECT(err < 1e-9 && rec.extra < 1e-10, "galet vs minres %.3g, shadow residual %.3g", err, rec.extra);
        EXPECT(direction(&q, "galet", NULL, "N=300 beta=0.3 T_w=10 rho=0.06 w_warm=0", g, &rec, &e) == BLO_OK,
               "%s", e.msg);
        err = rel_diff(g, ref, M);
        EXPECT(rec.extra > 0.01 && err > 1e-4, "T_w = 10: galet vs minres %.3g, shadow residual %.3g (not converged)",
               err, rec.extra);
    }
    TEST_CASE("methods: with an active Y box gmres differentiates the projected fixed point; cg ignores the box") {
        sq q;
        sq_init(&q, lam_definite, 0, 53);
        blo_problem p = sq_problem(&q);
        double ystar[N], hi[N], y0[N] = {0};
        sq_ystar(&q, x_at, ystar);
        for (int i = 0; i < N; i++) hi[i] = i % 2 ? INFINITY : ystar[i] - 0.3; // every other bound cuts y*
        p.y_hi = hi;
        struct {
            const char *method;
            int pass;
        } m[3] = {{"gmres", 1}, {"minres", 0}, {"cg", 0}};
        for (int i = 0; i < 3; i++) {
            blo_error e;
            blo_config *c = blo_config_new(blo_method_find(m[i].method), &e);
            EXPECT(c && blo_config_apply(c, "ll_iters=400 J=60", &e) == BLO_OK, "%s", e.msg);
            blo_check_report r = blo_check_hypergrad(&p, c, x_at, y0, NULL, NULL);
            EXPECT(r.status == BLO_OK && r.pass == m[i].pass, "%s: %s", m[i].method, r.msg);
            printf("  box: %s worst ratio %.3g\n", m[i].method, r.worst_ratio);
            blo_config_free(c);
        }
    }
}

void test_bilevel_solvers(void) {
    minres_cases();
    fixed_point_cases();
    agreement_cases();
    error_cases();
    method_cases();
}
