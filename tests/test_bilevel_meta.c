// The meta-learning methods (maml, fomaml, reptile, imaml): maml's and imaml's hypergradients
// against central differences of what they differentiate (with and without x, n_x = 0, quadratic
// and non-quadratic LLs; imaml failing where its approximation is loose), each direction against
// its closed form on the meta toy, each method converging to its stated z*, and problems with
// n_x = 0 through the check, the solver, a saved state and the command.
#include "cli_util.h"
#include "harness.h"
#include "tests.h"

#include "../bilevel/blo_extra.h"
#include "models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---- a non-quadratic problem without x: F = 1/2 ||y - b||^2 + 1/2 sum sin y, f = 1/2 ||y||^2 +
// 0.05 ||y - c||^4 (strongly convex; its Hessian changes along the trajectory, so maml's sweep
// has third-derivative terms) ----

static const double quartic_b[3] = {1.0, -0.5, 0.25}, quartic_c[3] = {-0.3, 0.8, 0.4};

static ad_var quartic_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)x, (void)u;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(3), quartic_b));
    return ad_scale(t, ad_add(t, ad_sqnorm(t, r), ad_sum(t, ad_sin(t, y))), 0.5);
}

static ad_var quartic_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)x, (void)u;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(3), quartic_c));
    return ad_add(t, ad_scale(t, ad_sqnorm(t, y), 0.5), ad_scale(t, ad_normp(t, r, 4), 0.05));
}

static const blo_problem quartic = {.n_x = 0, .n_y = 3, .F = quartic_F, .f = quartic_f};

// A problem of the models by name (NULL: the quartic above); *m is freed by the caller when made.
static const blo_problem *problem(const char *name, const char *set, mdl_model *m, const double **x0,
                                  const double **y0) {
    static const double zero[3] = {0};
    memset(m, 0, sizeof *m);
    if (!name) {
        *x0 = zero, *y0 = zero;
        return &quartic;
    }
    char err[256];
    if (mdl_make_named(name, set, m, err, sizeof err)) {
        EXPECT(0, "%s: %s", name, err);
        return NULL;
    }
    *x0 = m->x0[0], *y0 = m->y0[0];
    return &m->prob;
}

// HYPERTAPE_TEST_VERBOSE=1 prints the measured errors.
#define VERBOSE (getenv("HYPERTAPE_TEST_VERBOSE") && *getenv("HYPERTAPE_TEST_VERBOSE") != '0')

static blo_config *config(const char *method, const char *set) {
    blo_error e;
    blo_config *c = blo_config_new(blo_method_find(method), &e);
    EXPECT(c && blo_config_apply(c, set, &e) == BLO_OK, "%s %s: %s", method, set, e.msg);
    return c;
}

// ---- hypergradients against central differences ----

static void check_cases(void) {
    static const struct {
        const char *problem, *pset, *method, *set;
        int pass; // 1: must pass; 0: must fail (an approximation too loose)
    } cases[] = {
        {"meta", "", "maml", "", 1},
        {"meta", "", "maml", "dynamics=nesterov ll_iters=8", 1},
        {"meta", "", "maml", "dynamics=momentum ll_iters=10", 1},
        {"meta", "n=6 cond=3 seed=2", "maml", "graph_mb=0", 1}, // the lean sweep
        {NULL, "", "maml", "ll_iters=8", 1},
        {NULL, "", "maml", "ll_iters=8 graph_mb=0", 1},
        {"nonconvex", "n=3", "maml", "ll_iters=10", 1},          // x and z together
        {"quadratic", "n=5 m=3", "maml", "ll_iters=10", 1},
        {"meta", "", "imaml", "ll_iters=300 J=4 tol=0", 1},     // CG exact in n = 4 steps
        {"meta", "n=6 cond=3 seed=2", "imaml", "ll_iters=300 J=6 lambda=0.5 tol=0", 1},
        {NULL, "", "imaml", "ll_iters=300 J=10 tol=0", 1},
        {"nonconvex", "n=3", "imaml", "ll_iters=300 J=10 tol=0", 1},
        {"quadratic", "n=5 m=3", "imaml", "ll_iters=300 J=5 tol=0 s_l=0.05", 1},
        {"meta", "", "imaml", "ll_iters=3 J=4", 0}, // y_K is far from y_lambda
        {"meta", "", "imaml", "ll_iters=300 J=1", 0}, // CG stopped after one step
    };
    TEST_CASE("meta: maml and imaml pass blo_check_hypergrad (x and z, n_x = 0); imaml fails when loose") {
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            mdl_model m;
            const double *x0, *y0;
            const blo_problem *p = problem(cases[k].problem, cases[k].pset, &m, &x0, &y0);
            blo_config *c = config(cases[k].method, cases[k].set);
            // away from the start, where every entry of the gradient is well away from 0
            double z[16];
            for (int i = 0; p && i < p->n_y; i++) z[i] = y0[i] + 0.3 * sin(1.0 + i);
            blo_check_report r = p ? blo_check_hypergrad(p, c, x0, z, NULL, NULL) : (blo_check_report){0};
            EXPECT(r.status == BLO_OK && r.pass == cases[k].pass && r.checked == (p ? p->n_x + p->n_y : 0),
                   "%s on %s %s (%s): %s", cases[k].method, cases[k].problem ? cases[k].problem : "quartic",
                   cases[k].pset, cases[k].set, r.msg);
            if (VERBOSE)
                printf("  %-6s %-10s %-28s worst ratio %.3g rel %.2e\n", cases[k].method,
                       cases[k].problem ? cases[k].problem : "quartic", cases[k].set, r.worst_ratio, r.rel_err);
            blo_config_free(c);
            if (cases[k].problem) mdl_free(&m);
        }
    }
    TEST_CASE("meta: fomaml and reptile are directions: the check says so") {
        const char *names[] = {"fomaml", "reptile"};
        mdl_model m;
        const double *x0, *y0;
        const blo_problem *p = problem("meta", "", &m, &x0, &y0);
        for (int k = 0; p && k < 2; k++) {
            blo_config *c = config(names[k], "");
            blo_check_report r = blo_check_hypergrad(p, c, x0, y0, NULL, NULL);
            EXPECT(r.status == BLO_EARG && r.claim == BLO_GRAD_NONE && strstr(r.msg, "not the gradient"), "%s: %s",
                   names[k], r.msg);
            blo_config_free(c);
        }
        if (p) mdl_free(&m);
    }
}

// ---- the meta toy in closed form (its data read back through F and f) ----

typedef struct {
    int n;
    double a[8], b[8], c[8];
} toy_data;

// b = argmin F; c and a from f's gradient at 0 and at 1 (f = 1/2 sum a_i (y_i - c_i)^2).
static toy_data toy_read(const blo_problem *p) {
    toy_data d = {.n = p->n_y};
    double y[8] = {0}, g0[8], g1[8], gF[8], one[8];
    for (int i = 0; i < d.n; i++) one[i] = 1;
    blo_eval(p, 1, NULL, y, NULL, NULL, gF, NULL, NULL); // -b
    blo_eval(p, 0, NULL, y, NULL, NULL, g0, NULL, NULL); // -a c
    blo_eval(p, 0, NULL, one, NULL, NULL, g1, NULL, NULL); // a (1 - c)
    for (int i = 0; i < d.n; i++) d.b[i] = -gF[i], d.a[i] = g1[i] - g0[i], d.c[i] = -g0[i] / d.a[i];
    return d;
}

// y_K entry i after K gd steps of s on a_i/2 (y - c_i)^2 + lambda/2 (y - z)^2 from z.
static double toy_yK(const toy_data *d, int i, double z, int K, double s, double lambda) {
    double a = d->a[i], rho = 1 - s * (a + lambda), yl = (a * d->c[i] + lambda * z) / (a + lambda);
    return yl + pow(rho, K) * (z - yl);
}

enum { MAML, FOMAML, REPTILE, IMAML };

// The direction g_z entry i at z (K, s_l, lambda as set).
static double toy_direction(const toy_data *d, int kind, int i, double z, int K, double s, double lambda) {
    double yK = toy_yK(d, i, z, K, s, kind == IMAML ? lambda : 0), a = d->a[i];
    switch (kind) {
    case MAML: return pow(1 - s * a, K) * (yK - d->b[i]);
    case FOMAML: return yK - d->b[i];
    case REPTILE: return z - yK;
    default: return lambda / (a + lambda) * (yK - d->b[i]); // (I + A/lambda)^-1 grad F(y_K)
    }
}

// The point each method converges to, entry i: where its direction is 0.
static double toy_zstar(const toy_data *d, int kind, int i, int K, double s, double lambda) {
    double a = d->a[i], b = d->b[i], c = d->c[i];
    if (kind == REPTILE) return c; // y_K = z: the LL's minimizer
    if (kind != IMAML) return c + (b - c) / pow(1 - s * a, K); // y_K = b
    // y_K = b with the proximal LL: y_K is affine in z, u z + v
    double rho = pow(1 - s * (a + lambda), K), w = lambda / (a + lambda);
    return (b - (1 - rho) * (1 - w) * c) / ((1 - rho) * w + rho);
}

static const struct {
    const char *method;
    int kind;
    const char *set; // on top of the toy's paper settings
    int K;
    double s, lambda;
} toy_cases[] = {
    {"maml", MAML, "", 5, 0.1, 0},
    {"maml", MAML, "ll_iters=2 s_l=0.2", 2, 0.2, 0},
    {"fomaml", FOMAML, "", 5, 0.1, 0},
    {"fomaml", FOMAML, "ll_iters=3 optimizer=momentum momentum=0.5 lr_z=0.3 ul_iters=500", 3, 0.1, 0},
    {"reptile", REPTILE, "", 5, 0.1, 0},
    {"reptile", REPTILE, "ll_iters=1 lr_z=0.5 ul_iters=1000", 1, 0.1, 0},
    {"imaml", IMAML, "tol=0", 50, 0.1, 2},
    {"imaml", IMAML, "ll_iters=10 lambda=1 J=4 tol=0", 10, 0.1, 1},
};

// F and f of a problem without x at in[0] = y (ctx: the problem)
static ad_var F_of_y(ad_tape *t, const ad_var *in, void *ctx) {
    return blo_call_F(t, ctx, ad_const(t, ad_vec_shape(0), NULL), in[0]);
}
static ad_var f_of_y(ad_tape *t, const ad_var *in, void *ctx) {
    return blo_call_f(t, ctx, ad_const(t, ad_vec_shape(0), NULL), in[0]);
}

static void toy_cases_run(void) {
    mdl_model m;
    const double *x0, *y0;
    const blo_problem *p = problem("meta", "", &m, &x0, &y0);
    if (!p) return;
    toy_data d = toy_read(p);
    char err[256];
    TEST_CASE("meta: the meta toy's F and f against central differences (gradient and Hessian)") {
        const double y[4] = {0.3, -1.2, 2.0, 0.7};
        const double *pt[1] = {y};
        ad_shape sh = ad_vec_shape(4);
        ad_fn fns[2] = {F_of_y, f_of_y};
        for (int k = 0; k < 2; k++) {
            void *ctx = (void *)p;
            ad_check_report g = ad_check_grad(fns[k], ctx, 1, &sh, pt, NULL), h = ad_check_hvp(fns[k], ctx, 1, &sh, pt, NULL);
            EXPECT(g.status == AD_OK && g.pass && h.status == AD_OK && h.pass, "%s: %s / %s", k ? "f" : "F", g.msg, h.msg);
        }
    }
    TEST_CASE("meta: each direction on the meta toy is its closed form (maml exact, fomaml grad F(y_K), "
              "reptile z - y_K, imaml (I + A/lambda)^-1 grad F(y_K))") {
        double z[4] = {0.7, -0.2, 1.3, 0.4};
        for (size_t k = 0; k < sizeof toy_cases / sizeof toy_cases[0]; k++) {
            blo_config *c = mdl_paper_config(&mdl_meta_entry, blo_method_find(toy_cases[k].method), NULL, err, sizeof err);
            blo_error e;
            EXPECT(c && blo_config_apply(c, toy_cases[k].set, &e) == BLO_OK, "%s", c ? e.msg : err);
            blo_solver *s = blo_solver_new(p, c, NULL, z, NULL, &e); // z starts at y_0
            blo_record rec;
            EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_OK, "%s: %s", toy_cases[k].method, e.msg);
            const double *g = s ? blo_solver_gradient(s) : NULL;
            double worst = 0;
            for (int i = 0; g && i < d.n; i++) {
                double want = toy_direction(&d, toy_cases[k].kind, i, z[i], toy_cases[k].K, toy_cases[k].s,
                                            toy_cases[k].lambda);
                worst = fmax(worst, fabs(g[i] - want) / fmax(1, fabs(want)));
            }
            EXPECT(g && worst <= 1e-13, "%s %s: worst relative difference %.3g", toy_cases[k].method,
                   toy_cases[k].set, worst);
            blo_solver_free(s);
            blo_config_free(c);
        }
    }
    TEST_CASE("meta: maml, fomaml, reptile and imaml converge on the meta toy to their stated z*") {
        for (size_t k = 0; k < sizeof toy_cases / sizeof toy_cases[0]; k++) {
            blo_config *c = mdl_paper_config(&mdl_meta_entry, blo_method_find(toy_cases[k].method), NULL, err, sizeof err);
            blo_error e;
            EXPECT(c && blo_config_apply(c, toy_cases[k].set, &e) == BLO_OK, "%s", c ? e.msg : err);
            blo_solver *s = blo_solver_new(p, c, x0, y0, NULL, &e);
            EXPECT(s && blo_solver_run(s) == BLO_OK, "%s: %s", toy_cases[k].method, s ? blo_solver_error(s) : e.msg);
            const double *z = s ? blo_solver_z(s) : NULL;
            double worst = 0;
            for (int i = 0; z && i < d.n; i++) {
                double want = toy_zstar(&d, toy_cases[k].kind, i, toy_cases[k].K, toy_cases[k].s, toy_cases[k].lambda);
                worst = fmax(worst, fabs(z[i] - want) / fmax(1, fabs(want)));
            }
            EXPECT(z && worst <= 1e-8, "%s %s: z is %.3g from z*", toy_cases[k].method, toy_cases[k].set, worst);
            if (VERBOSE) printf("  %-7s %-45s |z - z*| %.2e\n", toy_cases[k].method, toy_cases[k].set, worst);
            blo_solver_free(s);
            blo_config_free(c);
        }
    }
    TEST_CASE("meta: imaml's K-step point tends to the paper's z* = b + A (b - c) / lambda") {
        double worst = 0;
        for (int i = 0; i < d.n; i++) // K = 50 of the toy's paper row
            worst = fmax(worst, fabs(toy_zstar(&d, IMAML, i, 50, 0.1, 2) - (d.b[i] + d.a[i] * (d.b[i] - d.c[i]) / 2)));
        EXPECT(worst > 0 && worst <= 1e-6, "K = 50: %.3g", worst);
    }
    mdl_free(&m);
}

// ---- n_x = 0 through the problem check, the solver, a saved state and the command ----

static void nx0_cases(void) {
    TEST_CASE("meta: n_x = 0 is a problem; n_x < 0 is refused, naming it") {
        blo_error e;
        blo_problem p = quartic;
        EXPECT(blo_problem_check(&p, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
        p.n_x = -1;
        EXPECT(blo_problem_check(&p, NULL, NULL, NULL, &e) == BLO_EARG && strstr(e.msg, "n_x = -1"), "%s", e.msg);
    }
    TEST_CASE("meta: with n_x = 0 a method that learns no LL start is refused; with +ia it runs") {
        blo_error e;
        blo_config *c = config("rhg", "");
        blo_solver *s = blo_solver_new(&quartic, c, NULL, NULL, NULL, &e);
        EXPECT(!s && e.status == BLO_EARG && strstr(e.msg, "n_x = 0") && strstr(e.msg, "nothing to optimize"), "%s", e.msg);
        blo_solver_free(s);
        EXPECT(blo_config_apply(c, "ia=1 ul_iters=3", &e) == BLO_OK, "%s", e.msg);
        s = blo_solver_new(&quartic, c, NULL, NULL, NULL, &e);
        EXPECT(s && blo_solver_run(s) == BLO_OK && blo_solver_n_z(s) == 3, "%s", s ? blo_solver_error(s) : e.msg);
        blo_solver_free(s);
        blo_config_free(c);
    }
    TEST_CASE("meta: n_x = 0, each meta method saved after 3 iterations and resumed ends as 6 straight") {
        const char *names[] = {"maml", "fomaml", "reptile", "imaml"};
        char path[] = "/tmp/hypertape-meta-XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0) close(fd);
        for (int k = 0; k < 4; k++) {
            blo_error e;
            blo_config *c = config(names[k], "ul_iters=6 optimizer=adam lr_z=0.05");
            blo_solver *a = blo_solver_new(&quartic, c, NULL, NULL, NULL, &e);
            EXPECT(a && blo_solver_run(a) == BLO_OK, "%s: %s", names[k], a ? blo_solver_error(a) : e.msg);
            blo_config_apply(c, "ul_iters=3", &e);
            blo_solver *b = blo_solver_new(&quartic, c, NULL, NULL, NULL, &e);
            EXPECT(b && blo_solver_run(b) == BLO_OK && blo_solver_save(b, path, "", &e) == BLO_OK, "%s: %s", names[k], e.msg);
            blo_config_apply(c, "ul_iters=6", &e);
            blo_solver *r = blo_solver_new(&quartic, c, NULL, NULL, NULL, &e);
            EXPECT(r && blo_solver_load(r, path, &e) == BLO_OK && blo_solver_run(r) == BLO_OK, "%s: %s", names[k], e.msg);
            EXPECT(a && r && !memcmp(blo_solver_z(a), blo_solver_z(r), 3 * sizeof(double)) &&
                       memcmp(blo_solver_z(a), (double[3]){0}, 3 * sizeof(double)),
                   "%s: resumed z differs (or z never moved)", names[k]);
            blo_solver_free(a), blo_solver_free(b), blo_solver_free(r);
            blo_config_free(c);
        }
        unlink(path);
    }
    TEST_CASE("meta: the command with n_x = 0: JSON x is [], z is the learned start; gradcheck; rhg exits 2") {
        cli_result r = cli_exec("run meta --method maml --json");
        EXPECT(r.status == 0 && strstr(r.out, "\"x\": []") && strstr(r.out, "\"z\": [") && strstr(r.out, "\"x_err\": null"),
               "%d %s %s", r.status, r.out, r.err);
        r = cli_exec("run meta --method reptile");
        EXPECT(r.status == 0 && strstr(r.out, "  z = "), "%d %s", r.status, r.out);
        r = cli_exec("gradcheck meta --method imaml");
        EXPECT(r.status == 0 && strstr(r.out, "PASS"), "%d %s %s", r.status, r.out, r.err);
        r = cli_exec("run meta --method rhg");
        EXPECT(r.status == 2 && cli_lines(r.err) == 1 && strstr(r.err, "nothing to optimize"), "%d %s", r.status, r.err);
    }
}

void test_bilevel_meta(void) {
    check_cases();
    toy_cases_run();
    nx0_cases();
}
