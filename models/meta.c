// The meta-learning toy (n_x = 0): learning an LL initialization, with each meta-learning
// method's optimum in closed form.
#include "toy.h"

#include <math.h>
#include <string.h>

// ---- meta: learning an initialization, n_x = 0 ------------------------------------------------------
// One task: F(y) = 1/2 ||y - b||^2 (its query loss), f(y) = 1/2 sum_i a_i (y_i - c_i)^2 (its support
// loss), a_i log-spaced in [1, cond], b and c drawn from the seed. There is no x: the UL variable is
// the LL start z = y_0 (maml, fomaml, reptile, imaml). With gd steps of s_l, y_K - c = (I - s_l A)^K
// (z - c), so F = 0 at z* = c + (I - s_l A)^-K (b - c) (MAML's optimum, and FOMAML's fixed point:
// grad F(y_K) = 0 there too); iMAML's proximal y_lambda = (A + lambda I)^-1 (A c + lambda z) is b at
// z* = b + A (b - c) / lambda; Reptile's fixed point y_K = z is z* = c, the LL's minimizer (it does
// not see F). Each depends on the method's settings, so the model states F* = 0 and, as its gap,
// ||y - b||: how far the adapted y is from the query's optimum.

static ad_var meta_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u;
    (void)x;
    return ad_scale(t, ad_sqnorm(t, ad_sub(t, y, ad_const_view(t, ad_vec_shape(d->n), d->b))), 0.5);
}

static ad_var meta_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u;
    (void)x;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(d->n), d->c));
    ad_var a = ad_const_view(t, ad_vec_shape(d->n), d->A); // the diagonal of A
    return ad_scale(t, ad_sum(t, ad_mul(t, a, ad_mul(t, r, r))), 0.5);
}

static double meta_gap(const mdl_model *m, const double *x, const double *y) {
    const toy *d = m->prob.user;
    double s = 0;
    (void)x;
    for (int i = 0; i < d->n; i++) s += (y[i] - d->b[i]) * (y[i] - d->b[i]);
    return sqrt(s);
}

typedef struct {
    int n;
    double cond; // a_n / a_1
    int seed;
} meta_params;
static const meta_params meta_defaults = {.n = 4, .cond = 2, .seed = 0};
static const blo_setting meta_settings[] = {
    BLO_ROW_INT(meta_params, n, "n", 1, 1000000, "n", "LL size n_y"),
    BLO_ROW_DBL(meta_params, cond, "cond", 1, 1e12, 0, "c", "a_i log-spaced in [1, cond]"),
    BLO_ROW_INT(meta_params, seed, "seed", 0, INT32_MAX, "S", "seed of b and c"),
    BLO_ROW_END,
};

static int meta_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    const meta_params *q = params;
    size_t n = (size_t)q->n;
    toy *d = toy_new(m, 4 * n + 1);
    if (!d) return oom("meta", err, errlen);
    double *a = toy_take(d, n), *b = toy_take(d, n), *c = toy_take(d, n);
    d->n = q->n, d->A = a, d->b = b, d->c = c;
    ad_rng g;
    ad_rng_seed(&g, (uint64_t)q->seed);
    for (size_t i = 0; i < n; i++) {
        a[i] = n > 1 ? pow(q->cond, (double)i / (double)(n - 1)) : 1;
        b[i] = ad_rng_normal(&g), c[i] = ad_rng_normal(&g);
    }
    m->prob = (blo_problem){.n_x = 0, .n_y = q->n, .F = meta_F, .f = meta_f, .user = d};
    m->F_star = 0, m->optimal_gap = meta_gap;
    m->n_starts = 1, m->x0[0] = toy_take(d, 0), m->y0[0] = toy_take(d, n); // z_0 = y_0 = 0
    return 0;
}

// No paper: our choice. K = 5 gd steps of 0.1 (s_l a_i <= 0.2 for cond = 2); plain steps on z of
// 1 (MAML's curvature in z is (1 - s_l a_i)^2K <= 0.35; Reptile's epsilon = 1). iMAML: lambda = 2
// (its default), K = 50 so that y_K is y_lambda to 1e-7 (the proximal LL contracts by 1 - s_l
// (a_i + lambda) <= 0.7 a step), J = n.
static const mdl_paper_row meta_papers[] = {
    {"*", "ll_iters=5 s_l=0.1 ul_iters=200 lr_z=1"},
    {"imaml", "ll_iters=50 J=4"},
    {NULL, NULL},
};

const mdl_entry mdl_meta_entry = {
    "meta", "meta-learning an initialization (n_x = 0): quadratic F and f, z* in closed form per method",
    "ours (maml, fomaml, reptile, imaml tests)", sizeof(meta_params), &meta_defaults, meta_settings,
    meta_make, meta_papers};
