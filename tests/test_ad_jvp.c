// ad_jvp, forward mode from the tape: expressions (a gradient step with its inner gradient, a
// layer, a loss over a layer, shared subexpressions) against central differences through
// ad_check_jvp (every op's row is in test_ad_ops.c); m tangent sets in one call equal m calls;
// <u, J v> = <J^T u, v> with ad_vjp; J v recorded with AD_CREATE_GRAPH differentiated again;
// zero derivatives; and every argument error, as the tape's error.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"

#include <math.h>
#include <string.h>

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

// ---- expressions against central differences ----

static const double A33[9] = {2, 0.5, -0.3, 0.5, 1.5, 0.2, -0.3, 0.2, 1.2}; // SPD
static const int32_t labels4[4] = {1, 0, 2, 1};

// A GD step y - 0.3 grad_y f(x, y), f = 1/2 y'Ay + sum softplus(x * y): the inner gradient is
// recorded to be differentiated, so J v of the step is a third-order sweep.
static ad_var e_gd_step(ad_tape *t, const ad_var *in, void *c) {
    (void)c;
    ad_var A = ad_const_view(t, ad_mat_shape(3, 3), A33);
    ad_var f = ad_add(t, ad_quadform(t, A, in[1]), ad_sum(t, ad_softplus(t, ad_mul(t, in[0], in[1]))));
    ad_var g;
    ad_grad(t, f, 1, &in[1], &g, AD_CREATE_GRAPH);
    return ad_axpy(t, in[1], -0.3, g);
}
// tanh(W x + b): a layer [4] of W [4, 3], x [3], b [4].
static ad_var e_layer(ad_tape *t, const ad_var *in, void *c) {
    (void)c;
    return ad_tanh(t, ad_add(t, ad_matvec(t, in[0], in[1], 0), in[2]));
}
// Per-row cross-entropy of softplus(X) W [4, 3]: a matrix input, a vector output.
static ad_var e_xent_layer(ad_tape *t, const ad_var *in, void *c) {
    (void)c;
    return ad_xent(t, ad_matmul(t, ad_softplus(t, in[0]), in[1], 0, 0), labels4);
}
// A state [6] = (y, y_prev) as the momentum dynamics makes it: slices, a concat, the inner
// gradient of a quadform and a clamp (inside its box here).
static ad_var e_momentum(ad_tape *t, const ad_var *in, void *c) {
    (void)c;
    ad_var y = ad_slice(t, in[1], 0, 3), yp = ad_slice(t, in[1], 3, 3);
    ad_var A = ad_const_view(t, ad_mat_shape(3, 3), A33);
    ad_var f = ad_sub(t, ad_quadform(t, A, y), ad_dot(t, y, ad_exp(t, in[0])));
    ad_var g;
    ad_grad(t, f, 1, &y, &g, AD_CREATE_GRAPH);
    ad_var v = ad_axpy(t, ad_scale(t, ad_sub(t, y, yp), 0.5), -0.2, g);
    return ad_concat(t, ad_clamp(t, ad_add(t, y, v), -10, 10), y);
}
// The same input used twice and a product recorded twice (found again as one node).
static ad_var e_shared(ad_tape *t, const ad_var *in, void *c) {
    (void)c;
    ad_var A = ad_const_view(t, ad_mat_shape(3, 3), A33);
    ad_var p = ad_matvec(t, A, in[0], 0), q = ad_matvec(t, A, in[0], 0);
    return ad_mul(t, ad_sin(t, p), ad_add(t, q, in[0]));
}

typedef struct {
    const char *name;
    ad_fn fn;
    int n_in;
    ad_shape shape[3];
} expr;

static const expr exprs[] = {
    {"gd step with its inner gradient", e_gd_step, 2, {{1, 1, 3}, {1, 1, 3}}},
    {"tanh layer", e_layer, 3, {{2, 4, 3}, {1, 1, 3}, {1, 1, 4}}},
    {"cross-entropy of a softplus layer", e_xent_layer, 2, {{2, 4, 2}, {2, 2, 3}}},
    {"momentum state (slices, concat, clamp)", e_momentum, 2, {{1, 1, 3}, {1, 1, 6}}},
    {"shared subexpressions", e_shared, 1, {{1, 1, 3}}},
};
enum { N_EXPRS = sizeof exprs / sizeof exprs[0] };

static void point_of(const expr *x, uint64_t seed, double pt[3][16]) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    for (int k = 0; k < x->n_in; k++)
        for (int i = 0; i < ad_shape_size(x->shape[k]); i++) pt[k][i] = ad_rng_uniform(&g) * 2 - 1;
}

static void finite_differences(void) {
    ad_check_params p = ad_check_default_params();
    for (int e = 0; e < N_EXPRS; e++) {
        char name[128];
        snprintf(name, sizeof name, "jvp: %s against central differences", exprs[e].name);
        TEST_CASE(name) {
            double pt[3][16];
            point_of(&exprs[e], 10 + (uint64_t)e, pt);
            const double *point[3] = {pt[0], pt[1], pt[2]};
            for (uint64_t seed = 1; seed <= 3; seed++) {
                p.seed = seed;
                ad_check_report r = ad_check_jvp(exprs[e].fn, NULL, exprs[e].n_in, exprs[e].shape, point, &p);
                EXPECT(r.status == AD_OK && r.pass, "seed %d: %s", (int)seed, r.msg);
            }
        }
    }
}

// ---- identities ----

// Records expression e at its point on t: inputs in[], output returned.
static ad_var record(ad_tape *t, const expr *e, ad_var in[3]) {
    double pt[3][16];
    point_of(e, 10 + (uint64_t)(e - exprs), pt);
    for (int k = 0; k < e->n_in; k++) in[k] = ad_param(t, e->shape[k], pt[k]);
    return e->fn(t, in, NULL);
}
static ad_var random_like(ad_tape *t, ad_shape s, ad_rng *g, bool param) {
    double v[16];
    for (int i = 0; i < ad_shape_size(s); i++) v[i] = ad_rng_normal(g);
    return param ? ad_param(t, s, v) : ad_const(t, s, v);
}
static double dot_values(ad_tape *t, ad_var a, ad_var b) {
    const double *x = ad_value(t, a), *y = ad_value(t, b);
    double s = 0;
    for (int i = 0, n = ad_shape_size(ad_shape_of(t, a)); i < n; i++) s += x[i] * y[i];
    return s;
}

static void identities(void) {
    TEST_CASE("jvp: m tangent sets in one call give the bits of m calls, and <u, Jv> = <J'u, v>") {
        for (int e = 0; e < N_EXPRS; e++) {
            const expr *x = &exprs[e];
            ad_tape *t = ad_tape_new(NULL);
            ad_var in[3], v[3 * 3], one[3], u, vt[3];
            ad_var y = record(t, x, in);
            ad_rng g;
            ad_rng_seed(&g, 3);
            for (int j = 0; j < 3; j++)
                for (int k = 0; k < x->n_in; k++) v[j * x->n_in + k] = random_like(t, x->shape[k], &g, false);
            EXPECT(ad_jvp(t, y, x->n_in, in, 3, v, one, 0) == AD_OK, "%s: %s", x->name, ad_tape_error(t));
            u = random_like(t, ad_shape_of(t, y), &g, false);
            ad_vjp(t, y, u, x->n_in, in, vt, 0);
            for (int j = 0; j < 3; j++) {
                ad_var single;
                ad_jvp(t, y, x->n_in, in, 1, v + j * x->n_in, &single, 0);
                int n = ad_shape_size(ad_shape_of(t, y));
                EXPECT(!memcmp(ad_value(t, single), ad_value(t, one[j]), sizeof(double) * (size_t)n),
                       "%s: set %d differs from its own call", x->name, j);
                double lhs = dot_values(t, u, one[j]), rhs = 0;
                for (int k = 0; k < x->n_in; k++) rhs += dot_values(t, vt[k], v[j * x->n_in + k]);
                EXPECT(fabs(lhs - rhs) <= 1e-12 * fmax(1, fabs(lhs)), "%s set %d: <u, Jv> %.17g, <J'u, v> %.17g",
                       x->name, j, lhs, rhs);
            }
            EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
            ad_tape_free(t);
        }
    }
    TEST_CASE("jvp: an output that does not depend on the inputs, and no inputs, give zeros") {
        ad_tape *t = ad_tape_new(NULL);
        ad_var x = ad_param(t, ad_vec_shape(3), (double[]){1, 2, 3});
        ad_var z = ad_param(t, ad_vec_shape(2), (double[]){4, 5});
        ad_var y = ad_exp(t, z), v = ad_fill(t, ad_vec_shape(3), 1), out[2];
        EXPECT(ad_jvp(t, y, 1, &x, 1, &v, &out[0], 0) == AD_OK, "%s", ad_tape_error(t));
        EXPECT(ad_jvp(t, y, 0, NULL, 1, NULL, &out[1], 0) == AD_OK, "%s", ad_tape_error(t));
        for (int k = 0; k < 2; k++) {
            const double *o = ad_value(t, out[k]);
            EXPECT(ad_shape_size(ad_shape_of(t, out[k])) == 2 && o[0] == 0 && o[1] == 0, "out %d: %g %g", k, o[0], o[1]);
        }
        ad_tape_free(t);
    }
}

// J v recorded with AD_CREATE_GRAPH: <w, J(x) v> differentiated in x (a second derivative).
static ad_var jvp_again(ad_tape *t, const ad_var *in, void *c) {
    (void)c;
    ad_var y = e_layer(t, in, NULL), v[3], out;
    static const double v0[12] = {0.3, -1, 0.2, 0.5, 1, -0.4, 0.7, 0.1, -0.2, 0.6, 0.9, -0.8};
    static const double v1[3] = {0.5, -0.5, 1}, v2[4] = {1, 0.2, -0.3, 0.4}, w[4] = {1, -2, 0.5, 3};
    v[0] = ad_const(t, ad_mat_shape(4, 3), v0), v[1] = ad_const(t, ad_vec_shape(3), v1);
    v[2] = ad_const(t, ad_vec_shape(4), v2);
    ad_jvp(t, y, 3, in, 1, v, &out, AD_CREATE_GRAPH);
    return ad_dot(t, ad_const(t, ad_vec_shape(4), w), out);
}

static void second_order(void) {
    TEST_CASE("jvp: J v recorded with AD_CREATE_GRAPH has the gradient central differences give") {
        double pt[3][16];
        point_of(&exprs[1], 11, pt);
        const double *point[3] = {pt[0], pt[1], pt[2]};
        ad_check_report r = ad_check_grad(jvp_again, NULL, 3, exprs[1].shape, point, NULL);
        EXPECT(r.status == AD_OK && r.pass, "%s", r.msg);
    }
}

// ---- argument errors stick to the tape ----

typedef struct {
    const char *what;
    int n, m;
    int no_wrt, no_v, no_out, const_wrt, bad_shape;
    ad_status st;
    const char *says;
} bad_call;

static void errors(void) {
    TEST_CASE("jvp: bad lists, constant inputs and tangents of another shape are the tape's error") {
        static const bad_call c[] = {
            {"n < 0", -1, 1, 0, 0, 0, 0, 0, AD_EARG, "jvp: a negative number of inputs"},
            {"m < 0", 1, -1, 0, 0, 0, 0, 0, AD_EARG, "jvp: a negative number of tangent sets"},
            {"NULL wrt", 1, 1, 1, 0, 0, 0, 0, AD_EARG, "jvp: wrt is NULL"},
            {"NULL v", 1, 1, 0, 1, 0, 0, 0, AD_EARG, "jvp: v is NULL"},
            {"NULL out", 1, 1, 0, 0, 1, 0, 0, AD_EARG, "jvp: out is NULL"},
            {"constant input", 1, 1, 0, 0, 0, 1, 0, AD_EARG, "jvp: input 0 (node"},
            {"tangent shape", 1, 1, 0, 0, 0, 0, 1, AD_ESHAPE, "jvp: tangent 0 of set 0 is [4], its input is [3]"},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_var x = c[i].const_wrt ? ad_fill(t, ad_vec_shape(3), 1) : ad_param(t, ad_vec_shape(3), (double[]){1, 2, 3});
            ad_var y = ad_sin(t, x), v = ad_fill(t, ad_vec_shape(c[i].bad_shape ? 4 : 3), 1), out = x;
            ad_status st = ad_jvp(t, y, c[i].n, c[i].no_wrt ? NULL : &x, c[i].m, c[i].no_v ? NULL : &v,
                                  c[i].no_out ? NULL : &out, 0);
            EXPECT(st == c[i].st && ad_tape_status(t) == c[i].st && has(ad_tape_error(t), c[i].says),
                   "%s: status %d, %s", c[i].what, st, ad_tape_error(t));
            EXPECT(c[i].no_out || c[i].m < 0 || out == AD_NONE, "%s: out not cleared", c[i].what);
            EXPECT(!ad_sin(t, x), "%s: the error sticks", c[i].what);
            ad_tape_free(t);
        }
    }
}

void test_ad_jvp(void) {
    finite_differences();
    identities();
    second_order();
    errors();
}
