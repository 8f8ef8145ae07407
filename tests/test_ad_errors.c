// Errors reported as what they are: bad arguments to the gradient entry points and to the
// finite-difference checkers are AD_EARG naming the argument (not a crash, "out of memory" or a
// pass), and a failure inside a reverse rule names the op whose rule failed as well as the op
// that failed in it.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"

#include <math.h>
#include <string.h>

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

// ---- gradient entry points ----

typedef ad_status (*grad_call)(ad_tape *t, ad_var f, ad_var x, ad_var *g);
static ad_status grad_no_out(ad_tape *t, ad_var f, ad_var x, ad_var *g) {
    (void)g;
    return ad_grad(t, f, 1, &x, NULL, 0);
}
static ad_status grad_no_wrt(ad_tape *t, ad_var f, ad_var x, ad_var *g) {
    (void)x;
    return ad_grad(t, f, 1, NULL, g, 0);
}
static ad_status grad_negative(ad_tape *t, ad_var f, ad_var x, ad_var *g) {
    return ad_grad(t, f, -1, &x, g, 0);
}
static ad_status vjp_no_out(ad_tape *t, ad_var f, ad_var x, ad_var *g) {
    (void)g;
    return ad_vjp(t, f, f, 1, &x, NULL, 0);
}
static ad_status vjp_no_wrt(ad_tape *t, ad_var f, ad_var x, ad_var *g) {
    (void)x;
    return ad_vjp(t, f, f, 2, NULL, g, 0);
}
static ad_status hvp_no_out(ad_tape *t, ad_var f, ad_var x, ad_var *g) {
    (void)g;
    return ad_hvp(t, f, x, x, NULL, 0);
}

static void gradient_lists(void) {
    TEST_CASE("errors: NULL or negative lists in grad and vjp are argument errors, not crashes") {
        struct { const char *what; grad_call call; const char *says; } c[] = {
            {"grad, NULL out", grad_no_out, "grad: out is NULL"},
            {"grad, NULL wrt", grad_no_wrt, "grad: wrt is NULL"},
            {"grad, n = -1", grad_negative, "grad: a negative number of inputs"},
            {"vjp, NULL out", vjp_no_out, "vjp: out is NULL"},
            {"vjp, NULL wrt", vjp_no_wrt, "vjp: wrt is NULL"},
            {"hvp, NULL out", hvp_no_out, "hvp: NULL output"},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_tape *t = ad_tape_new(NULL);
            double x0 = 2;
            ad_var x = ad_param(t, ad_scalar_shape(), &x0), g = x;
            ad_var f = ad_square(t, x);
            ad_status st = c[i].call(t, f, x, &g);
            EXPECT(st == AD_EARG && ad_tape_status(t) == AD_EARG && has(ad_tape_error(t), c[i].says),
                   "%s: status %d, %s", c[i].what, st, ad_tape_error(t));
            ad_tape_free(t);
        }
    }
}

// ---- the checkers ----

static ad_var sum_sq(ad_tape *t, const ad_var *in, void *ctx) {
    (void)ctx;
    return ad_add(t, ad_sqnorm(t, in[0]), ad_sqnorm(t, in[1]));
}

static void checker_args(void) {
    TEST_CASE("errors: the checkers name a bad point, shape, step or tolerance before running") {
        double a[3] = {1, 2, 3}, b[2] = {4, 5};
        ad_check_params def = ad_check_default_params();
        struct {
            const char *what;
            ad_shape s1;  // the second input's shape (the first is [3])
            int no_point; // point[1] is NULL
            char param;   // the parameter set to value: 'h', 'r' (rtol), 'a' (atol); 0: none
            double value;
            const char *says;
        } c[] = {
            {"NULL point", {1, 1, 2}, 1, 0, 0, "point[1] is NULL"},
            {"negative rows", {2, -3, 2}, 0, 0, 0, "input 1 has an invalid shape (rank 2, -3 x 2"},
            {"negative length", {1, 1, -2}, 0, 0, 0, "input 1 has an invalid shape"},
            {"rank 3", {3, 1, 2}, 0, 0, 0, "input 1 has an invalid shape (rank 3"},
            {"too many entries", {2, 100000, 100000}, 0, 0, 0, "input 1 has an invalid shape"},
            {"h = 0", {1, 1, 2}, 0, 'h', 0, "step h = 0"},
            {"h = NaN", {1, 1, 2}, 0, 'h', NAN, "step h = nan"},
            {"h < 0", {1, 1, 2}, 0, 'h', -1e-5, "step h = -1e-05"},
            {"h infinite", {1, 1, 2}, 0, 'h', INFINITY, "step h = inf"},
            {"rtol < 0", {1, 1, 2}, 0, 'r', -1e-6, "rtol = -1e-06"},
            {"rtol infinite", {1, 1, 2}, 0, 'r', INFINITY, "rtol = inf"},
            {"atol < 0", {1, 1, 2}, 0, 'a', -1, "atol = -1"},
            {"atol NaN", {1, 1, 2}, 0, 'a', NAN, "atol = nan"},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_check_params p = def;
            if (c[i].param) *(c[i].param == 'h' ? &p.h : c[i].param == 'r' ? &p.rtol : &p.atol) = c[i].value;
            ad_shape shapes[2] = {ad_vec_shape(3), c[i].s1};
            const double *pt[2] = {a, c[i].no_point ? NULL : b};
            for (int hvp = 0; hvp < 2; hvp++) {
                ad_check_report r = hvp ? ad_check_hvp(sum_sq, NULL, 2, shapes, pt, &p)
                                        : ad_check_grad(sum_sq, NULL, 2, shapes, pt, &p);
                EXPECT(r.status == AD_EARG && !r.pass && has(r.msg, "check: ") && has(r.msg, c[i].says),
                       "%s (%s): status %d, %s", c[i].what, hvp ? "hvp" : "grad", r.status, r.msg);
            }
        }
        ad_shape ok[2] = {ad_vec_shape(3), ad_vec_shape(2)};
        const double *pt[2] = {a, b};
        ad_check_report r = ad_check_grad(sum_sq, NULL, 2, ok, pt, &def);
        EXPECT(r.status == AD_OK && r.pass, "the valid call: %s", r.msg);
    }
}

// ---- failures inside reverse rules ----

static ad_var f_sqrt(ad_tape *t, ad_var x) { return ad_sum(t, ad_sqrt(t, x)); }
static ad_var f_pow(ad_tape *t, ad_var x) { return ad_sum(t, ad_pow(t, x, 1.5)); }
static ad_var f_exp(ad_tape *t, ad_var x) { return ad_sum(t, ad_exp(t, x)); }

enum { GRAD, GRAD_GRAPH, GRAD_DEFERRED, HVP, VJP_BIG };

static void rule_errors(void) {
    TEST_CASE("errors: a failure in a reverse rule names the op whose rule failed and what failed") {
        struct {
            const char *what;
            ad_var (*f)(ad_tape *t, ad_var x);
            double x1;  // x = [1, x1, 4]
            int how;
            const char *says; // the message starts with it
        } c[] = {
            {"sqrt at 0", f_sqrt, 0, GRAD, "reverse of sqrt: div: division by zero (entry 1 of [3] is 0)"},
            {"sqrt at 0, graph", f_sqrt, 0, GRAD_GRAPH, "reverse of sqrt: div: division by zero"},
            {"sqrt at 0, deferred", f_sqrt, 0, GRAD_DEFERRED, "reverse of sqrt: div: division by zero"},
            {"sqrt at 0, hvp", f_sqrt, 0, HVP, "reverse of sqrt: div: division by zero"},
            {"x^1.5 at 0", f_pow, 0, GRAD, "reverse of pow: pow: non-integer power"},
            {"exp, adjoint 1e10, checked", f_exp, 700, VJP_BIG, "reverse of exp: mul: produced inf"},
            {"sqrt at -1, forward", f_sqrt, -1, GRAD, "sqrt: square root of a negative number"},
        };
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_tape_params par = ad_tape_default_params();
            par.check_finite = c[i].how == VJP_BIG;
            ad_tape *t = ad_tape_new(&par);
            double x0[3] = {1, c[i].x1, 4};
            ad_var x = ad_param(t, ad_vec_shape(3), x0), g = AD_NONE;
            if (c[i].how == GRAD_DEFERRED) ad_tape_defer(t, 1);
            ad_var f = c[i].f(t, x);
            if (c[i].how == GRAD || c[i].how == GRAD_GRAPH || c[i].how == GRAD_DEFERRED)
                ad_grad(t, f, 1, &x, &g, c[i].how == GRAD_GRAPH ? AD_CREATE_GRAPH : 0);
            else if (c[i].how == HVP)
                ad_hvp(t, f, x, ad_fill(t, ad_vec_shape(3), 1), &g, 0);
            else
                ad_vjp(t, f, ad_scalar(t, 1e10), 1, &x, &g, 0);
            EXPECT(isnan(ad_value(t, g)[0]), "%s: no gradient", c[i].what); // a deferred one fails here
            EXPECT(ad_tape_status(t) != AD_OK && strncmp(ad_tape_error(t), c[i].says, strlen(c[i].says)) == 0,
                   "%s: %s", c[i].what, ad_tape_error(t));
            ad_tape_free(t);
        }
    }
}

void test_ad_errors(void) {
    gradient_lists();
    checker_args();
    rule_errors();
}
