// fhg, the forward-mode hypergradient, against rhg (reverse mode through the same K steps): the
// same direction to 1e-12 relative on the closed-form quadratic and on hyper-cleaning with a
// small training set (x [n_train]), over every built-in dynamics (states of n_y, 2 n_y and 3 n_y);
// central differences of its phi (blo_check_hypergrad); the same bits for any block of tangent
// columns; IA, PTT and truncation refused as settings it does not have; a diverging LL loop
// named as such.
#include "harness.h"
#include "tests.h"

#include "../bilevel/blo_extra.h"
#include "../models/models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static const char *const dynamics[] = {"gd", "bda", "nesterov", "momentum", "accel"};
enum { N_DYN = sizeof dynamics / sizeof dynamics[0] };

// The first direction of method (with dyn and settings) at (x, m's start y0) into g [n_x]; its
// y_K into y (NULL: not kept).
static blo_status direction(const mdl_model *m, const char *method, const char *dyn,
                            const char *settings, const double *x, double *g, double *y,
                            blo_error *e) {
    blo_config *c = blo_config_new(blo_method_find(method), e);
    if (!c) return e->status;
    blo_status st = blo_config_set(c, "dynamics", dyn, e);
    if (!st) st = blo_config_apply(c, settings, e);
    blo_solver *s = st ? NULL : blo_solver_new(&m->prob, c, x, m->y0[0], NULL, e);
    blo_record rec = {0};
    if (s) st = blo_solver_direction(s, &rec, e);
    else if (!st) st = e->status;
    if (s && !st) memcpy(g, blo_solver_gradient(s), sizeof(double) * (size_t)m->prob.n_x);
    if (s && !st && y) blo_solver_solution(s, y, e);
    blo_solver_free(s);
    blo_config_free(c);
    return st;
}

// max_i |a_i - b_i| / max_i |b_i|
static double rel_diff(const double *a, const double *b, int n) {
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i])), s = fmax(s, fabs(b[i]));
    return d / fmax(s, 1e-300);
}

typedef struct {
    const char *problem, *settings; // the model and its settings
    const char *method_settings;    // for fhg and rhg both (the LL steps, step sizes)
    const char *accel;              // accel's own (its L_f), with method_settings
} fhg_case;

static const fhg_case cases[] = {
    {"quadratic", "n=6 m=4 cond=5", "ll_iters=40", "L_f=4"},
    {"quadratic", "n=5 m=1 cond=20 seed=3", "ll_iters=25", "L_f=8"},
    // x [30]: one weight per training sample; y [7850] (784 pixels x 10 classes and the biases)
    {"hyperclean", "n_train=30 n_val=30 n_test=10", "ll_iters=8", "L_f=2"},
};

static void against_rhg(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const fhg_case *fc = &cases[i];
        char name[160], err[256];
        snprintf(name, sizeof name, "fhg: equals rhg to 1e-12 on %s %s over every dynamics", fc->problem,
                 fc->settings);
        TEST_CASE(name) {
            mdl_model m;
            int rc = mdl_make_named(fc->problem, fc->settings, &m, err, sizeof err);
            EXPECT(rc == 0, "%s", err);
            if (rc) continue;
            int nx = m.prob.n_x, ny = m.prob.n_y;
            double *x = malloc(sizeof(double) * (size_t)(3 * nx + 2 * ny));
            double *gf = x + nx, *gr = gf + nx, *yf = gr + nx, *yr = yf + ny;
            ad_rng r;
            ad_rng_seed(&r, 40 + i);
            for (int j = 0; j < nx; j++) x[j] = 2 * ad_rng_uniform(&r) - 1; // away from the start
            for (int d = 0; d < N_DYN; d++) {
                char set[160];
                snprintf(set, sizeof set, "%s%s%s", fc->method_settings, strcmp(dynamics[d], "accel") ? "" : " ",
                         strcmp(dynamics[d], "accel") ? "" : fc->accel);
                blo_error e;
                blo_status sf = direction(&m, "fhg", dynamics[d], set, x, gf, yf, &e);
                EXPECT(sf == BLO_OK, "fhg:%s: %s", dynamics[d], e.msg);
                blo_status sr = direction(&m, "rhg", dynamics[d], set, x, gr, yr, &e);
                EXPECT(sr == BLO_OK, "rhg:%s: %s", dynamics[d], e.msg);
                if (sf || sr) continue;
                double dg = rel_diff(gf, gr, nx), gmax = 0;
                for (int j = 0; j < nx; j++) gmax = fmax(gmax, fabs(gr[j]));
                EXPECT(dg <= 1e-12 && gmax > 1e-8, "%s: fhg against rhg: %.3g relative (|g| %.3g)", dynamics[d],
                       dg, gmax);
                EXPECT(!memcmp(yf, yr, sizeof(double) * (size_t)ny), "%s: the LL solutions differ", dynamics[d]);
            }
            free(x);
            mdl_free(&m);
        }
    }
}

static void finite_differences(void) {
    TEST_CASE("fhg: central differences of its phi agree over every dynamics (blo_check_hypergrad)") {
        mdl_model m;
        char err[256];
        EXPECT(mdl_make_named("quadratic", "n=4 m=3", &m, err, sizeof err) == 0, "%s", err);
        for (int d = 0; d < N_DYN; d++) {
            blo_error e;
            blo_config *c = blo_config_new(blo_method_find("fhg"), &e);
            blo_config_set(c, "dynamics", dynamics[d], &e);
            blo_config_apply(c, strcmp(dynamics[d], "accel") ? "ll_iters=15" : "ll_iters=15 L_f=4", &e);
            blo_check_report rep = blo_check_hypergrad(&m.prob, c, m.x0[0], m.y0[0], NULL, NULL);
            EXPECT(rep.status == BLO_OK && rep.pass && rep.claim == BLO_GRAD_EXACT, "%s: %s", dynamics[d], rep.msg);
            blo_config_free(c);
        }
        mdl_free(&m);
    }
}

static void blocks(void) {
    TEST_CASE("fhg: the block of tangent columns per product does not change a bit") {
        mdl_model m;
        char err[256];
        EXPECT(mdl_make_named("quadratic", "n=5 m=7", &m, err, sizeof err) == 0, "%s", err);
        double g[3][7];
        const char *sets[3] = {"ll_iters=10 block=1", "ll_iters=10 block=3", "ll_iters=10 block=32"};
        for (int b = 0; b < 3; b++) {
            blo_error e;
            EXPECT(direction(&m, "fhg", "momentum", sets[b], m.x0[0], g[b], NULL, &e) == BLO_OK, "%s", e.msg);
        }
        EXPECT(!memcmp(g[0], g[1], sizeof g[0]) && !memcmp(g[0], g[2], sizeof g[0]), "blocks differ: %.17g %.17g %.17g",
               g[0][0], g[1][0], g[2][0]);
        mdl_free(&m);
    }
}

static void refusals(void) {
    TEST_CASE("fhg: IA, PTT and truncation are not its settings; a diverging LL loop is named") {
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("fhg"), &e);
        const char *names[3] = {"ia", "ptt", "truncate"};
        for (int k = 0; k < 3; k++)
            EXPECT(blo_config_set(c, names[k], "1", &e) == BLO_EARG && has(e.msg, "not a setting of method fhg"),
                   "%s: %s", names[k], e.msg);
        blo_config_free(c);
        mdl_model m;
        char err[256];
        EXPECT(mdl_make_named("quadratic", "n=4 m=2 cond=50", &m, err, sizeof err) == 0, "%s", err);
        double g[2];
        blo_status st = direction(&m, "fhg", "gd", "ll_iters=2000 s_l=5", m.x0[0], g, NULL, &e);
        EXPECT(st == BLO_ETAPE && has(e.msg, " at k = ") && has(e.msg, "step size too large"), "status %d: %s", st,
               e.msg);
        mdl_free(&m);
    }
}

void test_bilevel_fhg(void) {
    against_rhg();
    finite_differences();
    blocks();
    refusals();
}
