// The README's example: a new bilevel problem in a few dozen lines. Tune the ridge penalty
// e^x of a linear regression by its validation error:
//   min_x  F(x, y) = 1/2m ||A_val y - b_val||^2
//   s.t.   y = argmin_y f(x, y) = 1/2m ||A_tr y - b_tr||^2 + e^x / 2 ||y||^2
#include "methods.h"

#include <math.h>
#include <stdio.h>

enum { M = 40, D = 8 }; // samples per split, features

typedef struct {
    double A_tr[M * D], b_tr[M], A_val[M * D], b_val[M];
} ridge;

static ad_var sq_err(ad_tape *t, const double *A, const double *b, ad_var y) {
    ad_var r = ad_sub(t, ad_matvec(t, ad_const_view(t, ad_mat_shape(M, D), A), y, 0),
                      ad_const_view(t, ad_vec_shape(M), b));
    return ad_scale(t, ad_sqnorm(t, r), 0.5 / M);
}

static ad_var upper(ad_tape *t, ad_var x, ad_var y, void *u) {
    const ridge *r = u;
    (void)x;
    return sq_err(t, r->A_val, r->b_val, y);
}

static ad_var lower(ad_tape *t, ad_var x, ad_var y, void *u) {
    const ridge *r = u;
    ad_var penalty = ad_mul(t, ad_exp(t, x), ad_scale(t, ad_sqnorm(t, y), 0.5)); // [1] * []
    return ad_add(t, sq_err(t, r->A_tr, r->b_tr, y), ad_sum(t, penalty));
}

int main(void) {
    ridge r; // noisy linear data from a seeded generator
    ad_rng g;
    ad_rng_seed(&g, 42);
    double w[D];
    for (int j = 0; j < D; j++) w[j] = ad_rng_normal(&g);
    for (int i = 0; i < M; i++) {
        double s_tr = 0, s_val = 0;
        for (int j = 0; j < D; j++) {
            r.A_tr[i * D + j] = ad_rng_normal(&g), s_tr += r.A_tr[i * D + j] * w[j];
            r.A_val[i * D + j] = ad_rng_normal(&g), s_val += r.A_val[i * D + j] * w[j];
        }
        r.b_tr[i] = s_tr + 2 * ad_rng_normal(&g), r.b_val[i] = s_val + 2 * ad_rng_normal(&g);
    }
    blo_problem p = {.n_x = 1, .n_y = D, .F = upper, .f = lower, .user = &r};

    // RHG through 50 gradient steps on y, 200 UL steps: settings by name, as on the command line
    blo_error e;
    blo_config *c = blo_config_new(blo_method_find("rhg"), &e);
    if (!c || blo_config_apply(c, "ll_iters=50 s_l=0.3 ul_iters=200 lr_x=1", &e)) {
        fprintf(stderr, "example: %s\n", e.msg);
        return 1;
    }
    double x = 0;
    blo_solver *s = blo_solver_new(&p, c, &x, NULL, NULL, &e);
    if (!s || blo_solver_run(s)) {
        fprintf(stderr, "example: %s\n", s ? blo_solver_error(s) : e.msg);
        return 1;
    }
    blo_record last;
    blo_solver_report(s, &last); // the returned x, with its LL solution
    printf("ridge penalty e^x = %.4f, validation error %.4f\n", exp(blo_solver_x(s)[0]), last.F);
    blo_solver_free(s);
    blo_config_free(c);
    return 0;
}
