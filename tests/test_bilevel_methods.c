// Implicit estimators (CG, Neumann) against the closed-form hypergradient of a random quadratic,
// BOME / GALET / BVFIM on small problems with known solutions, and every registered method
// through the solver (its settings, prior, resolved defaults and bad input).
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad_extra.h" // ad_op_find, ad_tape_op_evals
#include "../bilevel/blo_extra.h"

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

// ---- BOME on BDA's Example 1 (BOME's degenerate toy): v* = 1, theta* = (1, 1) ----

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

// p solved by the named method with settings ("NAME=VALUE ...") from (x0, y0): the solver
// after its run (the caller frees it), or NULL with the reason in e.
static blo_solver *run_method(const blo_problem *p, const char *method, const char *settings,
                         const double *x0, const double *y0, blo_status *st, blo_error *e) {
    blo_config *c = blo_config_new(blo_method_find(method), e);
    blo_solver *s = NULL;
    *st = !c ? e->status : blo_config_apply(c, settings, e);
    if (!*st && !(s = blo_solver_new(p, c, x0, y0, NULL, e))) *st = e->status;
    if (s) {
        *st = blo_solver_run(s);
        snprintf(e->msg, sizeof e->msg, "%s", blo_solver_error(s));
    }
    blo_config_free(c);
    return s;
}

static void bome_cases(void) {
    TEST_CASE("bome: BDA Example 1 (degenerate LL) converges to v = 1, theta = (1, 1)") {
        blo_problem p = {.n_x = 1, .n_y = 2, .F = ex1_F, .f = ex1_f};
        double x = 0, y[2] = {0, 0};
        blo_status st;
        blo_error e;
        // BOME's code: xi = alpha = 0.5, T = 1, eta = 0.5
        blo_solver *s = run_method(&p, "bome", "T=1 alpha=0.5 ul_iters=2000 lr_x=0.5 lr_z=0.5", &x, y, &st, &e);
        EXPECT(st == BLO_OK, "%s", e.msg);
        const double *v = s ? blo_solver_x(s) : y, *th = s ? blo_solver_z(s) : y;
        EXPECT(s && blo_solver_n_z(s) == 2 && fabs(v[0] - 1) < 1e-3 && fabs(th[0] - 1) < 1e-3 && fabs(th[1] - 1) < 1e-3,
               "v = %.6f, theta = (%.6f, %.6f)", v[0], th[0], th[1]);
        blo_solver_free(s);
    }
}

// ---- GALET Example 1 (GALET Eq. 6): x* = 0.5 and y1 - sin(y2) + 0.5 = 0 ----

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

static void galet_cases(void) {
    double starts[2][3] = {{2, 2, 2}, {0, 0, 0}};
    for (int k = 0; k < 2; k++) {
        char name[256];
        snprintf(name, sizeof name, "galet: Example 1 from (%g, (%g, %g)) reaches x = 0.5 on the "
                 "LL solution set (paper defaults, w warm-started)", starts[k][0], starts[k][1], starts[k][2]);
        TEST_CASE(name) {
            blo_problem p = {.n_x = 1, .n_y = 2, .F = galet_F, .f = galet_f};
            // alpha = 0.3. x settles within ~100 iterations; the LL residual r = x + y1 - sin y2
            // contracts by 1 - beta (1 + cos^2 y2) ~ -0.94 per LL step near the limit (seen from
            // (2, (2, 2))), so it needs ~300 to reach 1e-6.
            blo_status st;
            blo_error e;
            blo_solver *s = run_method(&p, "galet", "ul_iters=300 lr_x=0.3", starts[k], starts[k] + 1, &st, &e);
            EXPECT(st == BLO_OK, "%s", e.msg);
            double y[2] = {0, 0};
            if (s) blo_solver_solution(s, y, &e);
            double x = s ? blo_solver_x(s)[0] : 0, gap = y[0] - sin(y[1]) + 0.5;
            EXPECT(fabs(x - 0.5) < 1e-6 && fabs(gap) < 1e-5, "x = %.8f, y1 - sin y2 + 0.5 = %.3g", x, gap);
            blo_solver_free(s);
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

// The smallest barrier gap over a run's records (BVFIM's extra).
static int min_gap(const blo_record *r, void *u) {
    double *g = u;
    if (!r->final && !(r->extra >= *g)) *g = r->extra;
    return 0;
}

static void bvfim_cases(void) {
    TEST_CASE("bvfim: converges to x* = b/2 at the rate its schedule allows, from a start that "
              "needs the feasibility safeguard") {
        // The barrier admits y with f(x, y) < f*_mu, a band of width ~sqrt(2 mu_l) around the LL
        // solution y = x, so x is off by O(sqrt(mu_l)) = O(1/sqrt(l)): quadrupling the iterations
        // must about halve the error, and at l = 4000 (mu = 2.5e-4) it is below sqrt(2 mu) = 0.022.
        // y0 = (5, 5) is infeasible at the start (f = 25 > f*_mu ~ 1): without the safeguard the
        // log barrier would be a NaN at the first iteration.
        double b[2] = {2, -1}, errs[2];
        const char *runs[2] = {"ul_iters=1000 lr_x=0.2", "ul_iters=4000 lr_x=0.2"};
        blo_problem p = {.n_x = 2, .n_y = 2, .F = bv_F, .f = bv_f, .user = b};
        for (int k = 0; k < 2; k++) {
            double x[2] = {0, 0}, y0[2] = {5, 5}, gap = INFINITY;
            blo_error e;
            blo_config *c = blo_config_new(blo_method_find("bvfim"), &e);
            blo_config_apply(c, runs[k], &e);
            blo_solver *s = blo_solver_new(&p, c, x, y0, NULL, &e);
            blo_solver_set_record(s, min_gap, &gap);
            EXPECT(blo_solver_run(s) == BLO_OK, "%s", blo_solver_error(s));
            errs[k] = hypot(blo_solver_x(s)[0] - 1, blo_solver_x(s)[1] + 0.5);
            EXPECT(gap > 0, "smallest barrier gap %g", gap);
            blo_solver_free(s);
            blo_config_free(c);
        }
        if (getenv("HYPERTAPE_TEST_VERBOSE")) printf("  bvfim errors %.4g (l = 1000), %.4g (l = 4000)\n", errs[0], errs[1]);
        EXPECT(errs[1] < 0.022 && errs[1] < errs[0] / 1.5 && errs[1] > errs[0] / 3,
               "errors %.4g at l = 1000, %.4g at l = 4000", errs[0], errs[1]);
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

// A linear softmax model on coded data: f = 1/n sum_i sigmoid(x_i) xent_i(X W), F = 1/2 ||y - 0.1||^2,
// y = W [d, c] flattened. X [1100, 100] x W [100, 10] is 1.1 M multiply-adds: the sweep keeps it.
typedef struct {
    ad_coded X;
    const int32_t *labels;
    int d, c;
} lin_model;
static ad_var lin_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const lin_model *L = u;
    ad_var W = ad_reshape(t, y, ad_mat_shape(L->d, L->c));
    ad_var ce = ad_xent(t, ad_matmul_coded(t, &L->X, W, 0), L->labels); // [n]
    return ad_scale(t, ad_dot(t, ad_sigmoid(t, x), ce), 1.0 / L->X.rows);
}
static ad_var lin_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)x, (void)u;
    return ad_scale(t, ad_sqnorm(t, ad_shift(t, y, -0.1)), 0.5);
}

static void kept_products(void) {
    TEST_CASE("bilevel: the lean sweep reuses the forward pass's logits: the same bits, K fewer products") {
        enum { N = 1100, D = 100, C = 10, K = 6 };
        ad_rng g;
        ad_rng_seed(&g, 12);
        uint8_t *codes = malloc(N * D);
        int32_t *labels = malloc(sizeof(int32_t) * N);
        double table[256], *x = malloc(sizeof(double) * N), grad[4][N];
        for (int i = 0; i < 256; i++) table[i] = i / 255.0;
        for (int i = 0; i < N * D; i++) codes[i] = (uint8_t)(ad_rng_next(&g) >> 56);
        for (int i = 0; i < N; i++) labels[i] = (int32_t)(ad_rng_next(&g) % C), x[i] = ad_rng_normal(&g);
        lin_model L = {{N, D, codes, table, NULL, NULL, NULL}, labels, D, C};
        blo_problem p = {.n_x = N, .n_y = D * C, .F = lin_F, .f = lin_f, .user = &L};
        blo_dynamics d = blo_dynamics_gd(D * C, (blo_gd_params){.s_l = 0.5});
        // budgets: nothing kept (lean), the products kept but not the graph, the graph; and one
        // the K steps' kept products (96 KB each) overrun but their own 16x room holds
        const size_t budget[4] = {1, (size_t)2 << 20, (size_t)1 << 30, (size_t)200 << 10};
        int64_t products[4];
        int graph[4];
        for (int b = 0; b < 4; b++) {
            ad_tape *t = ad_tape_new(NULL);
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = K, hp.tape = t, hp.graph_budget = budget[b];
            blo_hypergrad_info info = {0};
            blo_error e;
            int op = ad_op_find("matmul_coded");
            int64_t e0 = ad_tape_op_evals(t, op);
            EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, grad[b], NULL, NULL, &info, &e) == BLO_OK, "%s", e.msg);
            products[b] = ad_tape_op_evals(t, op) - e0, graph[b] = info.graph;
            ad_tape_free(t);
        }
        // the lean sweep computes X W_k again at every step (with X V and X^T G'); kept, it does not
        EXPECT(graph[0] == 0 && graph[1] == 0 && graph[2] == 1 && graph[3] == 0, "graph modes %d %d %d %d",
               graph[0], graph[1], graph[2], graph[3]);
        EXPECT(products[3] == products[1] && !memcmp(grad[3], grad[1], sizeof grad[0]),
               "200 KB: %lld products over X, not %lld", (long long)products[3], (long long)products[1]);
        EXPECT(products[1] == products[0] - K && products[2] <= products[1],
               "products over X: %lld lean, %lld with kept logits, %lld in graph mode",
               (long long)products[0], (long long)products[1], (long long)products[2]);
        EXPECT(!memcmp(grad[0], grad[1], sizeof grad[0]), "kept logits changed the hypergradient");
        double worst = 0, scale = 0;
        for (int i = 0; i < N; i++) worst = fmax(worst, fabs(grad[2][i] - grad[0][i])), scale = fmax(scale, fabs(grad[0][i]));
        EXPECT(scale > 0 && worst <= 1e-12 * scale, "graph mode differs by %g (largest entry %g)", worst, scale);
        free(codes), free(labels), free(x);
    }
}

// ---- every method through the registry and the solver ----

static void registry_cases(void) {
    quad q = quad_make(6, 3, 5);
    blo_problem p = quad_problem(&q);
    double x[3] = {0.2, -0.4, 1.0}, y0[6] = {0}, zp[6] = {1, 1, 1, 1, 1, 1};
    TEST_CASE("methods: every registered method runs an iteration with finite values") {
        for (const blo_method_type *const *m = blo_method_registry(); *m; m++) {
            blo_error e;
            blo_config *c = blo_config_new(*m, &e);
            blo_config_apply(c, "ul_iters=1", &e);
            blo_solver *s = c ? blo_solver_new(&p, c, x, y0, zp, &e) : NULL;
            blo_record last = {0};
            blo_status st = s ? blo_solver_step(s) : e.status;
            if (s) blo_solver_report(s, &last);
            EXPECT(st == BLO_OK && isfinite(last.F) && isfinite(last.f) && isfinite(last.ll_residual),
                   "%s: %s", (*m)->name, s ? blo_solver_error(s) : e.msg);
            int ia = blo_config_has(c, "ia") && *blo_config_get(c, "ia", (char[8]){0}, 8) == '1';
            // z: IA's, the y that BOME, PGDO and MESO step, and the LL start the meta-learning methods learn
            int has_z = ia;
            for (const char *const *o = (const char *const[]){"bome", "pgdo", "meso", "fomaml", "reptile", "imaml", NULL};
                 *o; o++)
                has_z |= !strcmp(*o, (*m)->name);
            EXPECT(!s || blo_solver_n_z(s) == (has_z ? 6 : 0), "%s: n_z = %d",
                   (*m)->name, s ? blo_solver_n_z(s) : -1);
            blo_solver_free(s);
            blo_config_free(c);
        }
    }
    TEST_CASE("methods: rhg's direction is blo_hypergrad with the method's dynamics") {
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("rhg"), &e);
        blo_solver *s = blo_solver_new(&p, c, x, y0, NULL, &e);
        blo_record rec;
        EXPECT(blo_solver_direction(s, &rec, &e) == BLO_OK, "%s", e.msg);
        double g2[3];
        blo_dynamics d = blo_dynamics_gd(6, blo_gd_default_params());
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = 20;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, y0, g2, NULL, NULL, NULL, NULL) == BLO_OK, "hypergrad");
        EXPECT(rec.grad_norm == sqrt(g2[0] * g2[0] + g2[1] * g2[1] + g2[2] * g2[2]), "|g| %.17g", rec.grad_norm);
        blo_solver_free(s);
        blo_config_free(c);
    }
    TEST_CASE("methods: warm_steps = n keeps y_n of the K steps as the next start (rhg, ait)") {
        // two directions at the same x move the start by 2n steps (n = 0: 2K; ait's 0 keeps y_Kbar,
        // not checked), so the solution, K steps from it, is y_{2n+K} of GD on f:
        // y <- y - s (A y - B x), computed here by hand
        const int K = 5, steps[3] = {1, 3, 0}, want[3] = {2 * 1 + K, 2 * 3 + K, 3 * K};
        const double sl = 0.1;
        for (int m = 0; m < 2; m++)
            for (int c_ = 0; c_ < 3 - m; c_++) {
                blo_error e;
                char set[96];
                snprintf(set, sizeof set, "ll_iters=%d s_l=%g warm_start=1 warm_steps=%d ia=0", K, sl, steps[c_]);
                blo_config *c = blo_config_new(blo_method_find(m ? "ait" : "rhg"), &e);
                EXPECT(blo_config_apply(c, set, &e) == BLO_OK, "%s", e.msg);
                blo_solver *s = blo_solver_new(&p, c, x, y0, NULL, &e);
                blo_record rec;
                double y[6], h[6] = {0}, g[6];
                EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_OK && blo_solver_direction(s, &rec, &e) == BLO_OK &&
                           blo_solver_solution(s, y, &e) == BLO_OK, "%s", e.msg);
                for (int k = 0; k < want[c_]; k++) {
                    for (int i = 0; i < 6; i++) {
                        g[i] = 0;
                        for (int j = 0; j < 6; j++) g[i] += q.A[i * 6 + j] * h[j];
                        for (int j = 0; j < 3; j++) g[i] -= q.B[i * 3 + j] * x[j];
                    }
                    for (int i = 0; i < 6; i++) h[i] -= sl * g[i];
                }
                for (int i = 0; i < 6; i++)
                    EXPECT(fabs(y[i] - h[i]) < 1e-12, "%s warm_steps %d: y[%d] = %.15g, by hand y_%d = %.15g",
                           m ? "ait" : "rhg", steps[c_], i, y[i], want[c_], h[i]);
                blo_solver_free(s);
                blo_config_free(c);
            }
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("rhg"), &e);
        EXPECT(blo_config_apply(c, "ll_iters=5 warm_steps=6", &e) == BLO_OK, "%s", e.msg);
        blo_solver *s = blo_solver_new(&p, c, x, y0, NULL, &e);
        EXPECT(!s && e.status == BLO_EARG && strstr(e.msg, "warm_steps = 6 is more than ll_iters = 5"),
               "warm_steps > K: %s", e.msg);
        blo_solver_free(s);
        blo_config_free(c);
    }
    TEST_CASE("methods: an explicit prior acts on the first UL iteration only (AIT)") {
        // both runs take the same first step (the prior is on at t = 0); at t = 1 z's gradients
        // differ by the prior's, 2 (z_1 - z_p)
        blo_error e;
        double z0[6] = {0.5, 0, 0, 0, 0, 0}, gz[2][6], z1[6];
        for (int every = 0; every < 2; every++) {
            blo_config *c = blo_config_new(blo_method_find("ait"), &e);
            EXPECT(blo_config_apply(c, every ? "prior=2 prior_every=1" : "prior=2", &e) == BLO_OK, "%s", e.msg);
            blo_solver *s = blo_solver_new(&p, c, x, z0, zp, &e);
            blo_record rec;
            EXPECT(s && blo_solver_n_z(s) == 6 && blo_solver_step(s) == BLO_OK &&
                       blo_solver_direction(s, &rec, &e) == BLO_OK, "%s", e.msg);
            for (int i = 0; s && i < 6; i++) gz[every][i] = blo_solver_gradient(s)[3 + i], z1[i] = blo_solver_z(s)[i];
            blo_solver_free(s);
            blo_config_free(c);
        }
        for (int i = 0; i < 6; i++)
            EXPECT(fabs(gz[1][i] - gz[0][i] - 2 * (z1[i] - zp[i])) < 1e-12, "z entry %d: %g vs %g", i,
                   gz[1][i] - gz[0][i], 2 * (z1[i] - zp[i]));
    }
    TEST_CASE("methods: aitp starts z at z_p and needs one") {
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("aitp"), &e);
        blo_solver *s = blo_solver_new(&p, c, x, y0, zp, &e);
        for (int i = 0; s && i < 6; i++) EXPECT(blo_solver_z(s)[i] == zp[i], "z0[%d] = %g", i, blo_solver_z(s)[i]);
        blo_solver_free(s);
        EXPECT(!blo_solver_new(&p, c, x, y0, NULL, &e) && e.status == BLO_EARG && strstr(e.msg, "z_p"), "%s", e.msg);
        EXPECT(blo_config_needs(c) & BLO_NEEDS_PRIOR, "aitp needs a prior");
        blo_config_free(c);
    }
    TEST_CASE("methods: neumann's step is the LL step, and a diverging series is an error") {
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("neumann"), &e);
        blo_solver *s = blo_solver_new(&p, c, x, y0, NULL, &e);
        char eta[64];
        blo_record rec;
        EXPECT(s && !strcmp(blo_config_get(blo_solver_config(s), "eta", eta, sizeof eta), "0.1"),
               "eta resolved to %s", eta);
        EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_OK && rec.extra < 1, "residual %g: %s", rec.extra, e.msg);
        blo_solver_free(s);
        blo_config_set(c, "eta", "5", &e); // the quadratic's H has eigenvalues >= 1: eta = 5 diverges
        s = blo_solver_new(&p, c, x, y0, NULL, &e);
        EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_ETAPE && strstr(e.msg, "series diverges"), "%s", e.msg);
        blo_solver_free(s);
        blo_config_free(c);
    }
    TEST_CASE("methods: settings a method does not have, unknown names and bad values are errors") {
        blo_error e;
        for (const char *const *m = (const char *const[]){"cg", "neumann", "bome", "galet", "bvfim", NULL}; *m; m++) {
            blo_config *c = blo_config_new(blo_method_find(*m), &e);
            EXPECT(!blo_config_has(c, "ia") && !blo_config_has(c, "ptt") &&
                       blo_config_set(c, "ptt", "1", &e) == BLO_EARG && strstr(e.msg, "not a setting"),
                   "%s: %s", *m, e.msg);
            blo_config_free(c);
        }
        EXPECT(blo_method_find("sgd") == NULL, "sgd");
        blo_config *c = blo_config_new(blo_method_find("rhg"), &e);
        EXPECT(blo_config_set(c, "dynamics", "adam", &e) == BLO_EARG && strstr(e.msg, "adam"), "%s", e.msg);
        EXPECT(blo_config_set(c, "ll_iters", "0", &e) == BLO_EARG && strstr(e.msg, "ll_iters: bad value '0'"), "%s", e.msg);
        EXPECT(blo_config_set(c, "s_l", "-0.1", &e) == BLO_EARG && strstr(e.msg, "s_l"), "negative step: %s", e.msg);
        EXPECT(blo_config_set(c, "ul_iters", "2000000000000", &e) == BLO_EARG, "a count past int: %s", e.msg);
        blo_config_free(c);
    }
    quad_free(&q);
}

// ---- DARTS's finite-difference hypergradient tends to its limit at rate eps^2 ----
// F = 1/2 ||y - b||^2, f = 1/2 ||y||^2 + sum sin(y * (C x)) - <y, x_1>: grad_x f is not linear in y,
// so the central difference has an eps^2 error term to see.

static const double dC[6] = {0.7, -0.4, 0.3, 0.9, -0.5, 0.2}, db[3] = {1, -0.5, 0.25};

static ad_var da_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u, (void)x;
    return ad_scale(t, ad_sqnorm(t, ad_sub(t, y, ad_const_view(t, ad_vec_shape(3), db))), 0.5);
}
static ad_var da_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    ad_var Cx = ad_matvec(t, ad_const_view(t, ad_mat_shape(3, 2), dC), x, 0);
    ad_var v = ad_add(t, ad_scale(t, ad_sqnorm(t, y), 0.5), ad_sum(t, ad_sin(t, ad_mul(t, y, Cx))));
    return ad_sub(t, v, ad_mul(t, ad_sum(t, y), ad_slice(t, x, 0, 1)));
}

static void darts_cases(void) {
    TEST_CASE("darts: the finite-difference direction tends to grad_x F - eta (d2f/dxdy) grad_y F at rate eps^2") {
        blo_problem p = {.n_x = 2, .n_y = 3, .F = da_F, .f = da_f};
        double x[2] = {0.4, -0.3}, y0[3] = {0.2, 0.1, -0.3}, y[3], gx[2], v[3], lim[2], err[4];
        const char *r[4] = {"r=0.4", "r=0.2", "r=0.1", "r=0.05"};
        blo_error e;
        // the limit at y_K, with the mixed product from the tape
        blo_config *c = blo_config_new(blo_method_find("darts"), &e);
        EXPECT(c && blo_config_apply(c, "ll_iters=10 s_l=0.3", &e) == BLO_OK, "%s", c ? e.msg : "no darts");
        if (!c) continue;
        blo_solver *s = blo_solver_new(&p, c, x, y0, NULL, &e);
        EXPECT(s && blo_solver_solution(s, y, &e) == BLO_OK && blo_eval(&p, 1, x, y, NULL, gx, v, NULL, &e) == BLO_OK,
               "%s", e.msg);
        blo_solver_free(s);
        ad_tape *t = ad_tape_new(NULL);
        ad_var xv = ad_param(t, ad_vec_shape(2), x), yv = ad_param(t, ad_vec_shape(3), y), h;
        ad_hvp_mixed(t, da_f(t, xv, yv, NULL), xv, yv, ad_const(t, ad_vec_shape(3), v), &h, 0);
        for (int i = 0; i < 2; i++) lim[i] = gx[i] - 0.3 * ad_value(t, h)[i]; // eta = the LL step
        ad_tape_free(t);
        for (int k = 0; k < 4; k++) {
            blo_config_apply(c, r[k], &e);
            s = blo_solver_new(&p, c, x, y0, NULL, &e);
            blo_record rec;
            EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_OK, "%s", e.msg);
            const double *d = s ? blo_solver_gradient(s) : lim;
            err[k] = hypot(d[0] - lim[0], d[1] - lim[1]);
            blo_solver_free(s);
        }
        if (getenv("HYPERTAPE_TEST_VERBOSE"))
            printf("  darts: distance to the eps -> 0 limit at r = 0.4, 0.2, 0.1, 0.05: %.3g %.3g %.3g %.3g\n", err[0],
                   err[1], err[2], err[3]);
        for (int k = 0; k + 1 < 4; k++)
            EXPECT(err[k] > 1e-12 && err[k] / err[k + 1] > 3.6 && err[k] / err[k + 1] < 4.4,
                   "errors %.3g %.3g %.3g %.3g: halving r must quarter them", err[0], err[1], err[2], err[3]);
        blo_check_report cr = blo_check_hypergrad(&p, c, x, y0, NULL, NULL);
        EXPECT(cr.status == BLO_EARG && cr.claim == BLO_GRAD_NONE, "darts claims no gradient: %s", cr.msg);
        blo_config_free(c);
    }
}

void test_bilevel_methods(void) {
    budget_cases();
    kept_products();
    registry_cases();
    implicit_cases();
    bome_cases();
    galet_cases();
    bvfim_cases();
    darts_cases();
}
