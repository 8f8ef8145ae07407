// The built-in LL step maps: projected gradient descent, BDA aggregation of the UL and LL
// gradients, Nesterov (FISTA), heavy-ball momentum and the accelerated non-convex scheme (AIT
// Eq. 10), and their registry with each one's settings table. Each step is a tape expression of
// (x, state); the gradients inside it are recorded with AD_CREATE_GRAPH (blo_ll_grad_y), so the
// hypergradient sweep differentiates through them with the tape's second-order rules.
#include "internal.h"

#include <math.h>
#include <string.h>

// ---- defaults ----------------------------------------------------------------------------------------

static const blo_gd_params gd_defaults;
static const blo_bda_params bda_defaults;
static const blo_nesterov_params nesterov_defaults;
static const blo_momentum_params momentum_defaults;
static const blo_accel_params accel_defaults;

blo_gd_params blo_gd_default_params(void) { return gd_defaults; }
// BDA's experimental constants (BDA Sec. 5): s_u = 0.7, s_l = 0.2, alpha_k = 0.5/(k+1).
blo_bda_params blo_bda_default_params(void) { return bda_defaults; }
blo_nesterov_params blo_nesterov_default_params(void) { return nesterov_defaults; }
blo_momentum_params blo_momentum_default_params(void) { return momentum_defaults; }
// L_f = 1 is the constant for the sin toys (AIT Eq. 20); other problems must supply theirs.
blo_accel_params blo_accel_default_params(void) { return accel_defaults; }

static blo_status positive(blo_error *err, const char *dyn, const char *name, double v) {
    if (!(v > 0) || !isfinite(v))
        return blo_fail(err, BLO_EARG, "dynamics %s: %s = %g must be > 0 and finite", dyn, name, v);
    return BLO_OK;
}

// ---- states of two blocks (y_k, y_{k-1}) -----------------------------------------------------------------

static ad_var init_pair(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var y0) {
    (void)p, (void)d;
    return ad_concat(t, y0, y0); // y_{-1} = y_0: no momentum at the first step
}
static ad_var read_first(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var s) {
    (void)d;
    return ad_slice(t, s, 0, p->n_y);
}

// ---- projected gradient descent ------------------------------------------------------------------------

static ad_var gd_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                      ad_var y) {
    (void)k;
    ad_var g = blo_ll_grad_y(t, p, x, y);
    return blo_y_project(t, p, ad_axpy(t, y, -d->par.gd.s_l, g)); // y - s_l g
}
static blo_status gd_check(const blo_problem *p, const blo_dynamics *d, blo_error *err) {
    (void)p;
    return positive(err, d->name, "s_l", d->par.gd.s_l);
}
blo_dynamics blo_dynamics_gd(int n_y, blo_gd_params par) {
    return (blo_dynamics){.name = "gd", .state_size = n_y, .step = gd_step, .check = gd_check,
                          .ll_step = par.s_l, .par.gd = par};
}

// ---- BDA aggregation -------------------------------------------------------------------------------------

// Weights (a_k on the UL direction, b_k on the LL one) at 0-based step k; the papers' 1-based
// alpha_k = c/k is c/(k+1) here (the README's reading of BDA Eq. 10).
static void bda_weights(const blo_bda_params *q, int k, double *a, double *b) {
    switch (q->weights) {
    case BLO_BDA_ICML: *a = q->c / (k + 1); *b = 1 - *a; break;
    case BLO_BDA_AIT: *a = q->mu / (k + 1); *b = (1 - q->mu) * q->beta; break;
    default: *a = q->c; *b = 1 - q->c; break; // BLO_BDA_FIXED
    }
}
static ad_var bda_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                       ad_var y) {
    const blo_bda_params *q = &d->par.bda;
    double a = 0, b = 0;
    bda_weights(q, k, &a, &b);
    ad_var gF = blo_ul_grad_y(t, p, x, y), gf = blo_ll_grad_y(t, p, x, y);
    ad_var dir = ad_add(t, ad_scale(t, gF, a * q->s_u), ad_scale(t, gf, b * q->s_l));
    return blo_y_project(t, p, ad_sub(t, y, dir));
}
static blo_status bda_check(const blo_problem *p, const blo_dynamics *d, blo_error *err) {
    (void)p;
    const blo_bda_params *q = &d->par.bda;
    blo_status s = positive(err, d->name, "s_u", q->s_u);
    if (!s) s = positive(err, d->name, "s_l", q->s_l);
    if (s) return s;
    switch (q->weights) {
    case BLO_BDA_ICML:
    case BLO_BDA_FIXED:
        if (!(q->c > 0 && q->c < 1))
            return blo_fail(err, BLO_EARG, "dynamics bda: c = %g must be in (0, 1)", q->c);
        return BLO_OK;
    case BLO_BDA_AIT:
        if (!(q->mu > 0 && q->mu < 1))
            return blo_fail(err, BLO_EARG, "dynamics bda: mu = %g must be in (0, 1)", q->mu);
        return positive(err, d->name, "beta", q->beta);
    }
    return blo_fail(err, BLO_EARG, "dynamics bda: unknown weights %d", (int)q->weights);
}
blo_dynamics blo_dynamics_bda(int n_y, blo_bda_params par) {
    return (blo_dynamics){.name = "bda", .state_size = n_y, .step = bda_step, .check = bda_check,
                          .ll_step = par.s_l, .par.bda = par};
}

// ---- Nesterov / FISTA ---------------------------------------------------------------------------------------

// m_k = (t_{k-1} - 1) / t_k with t_0 = 1 (m_0 = 0). O(k) per call, negligible next to a step.
static double fista_momentum(int k) {
    double tp = 1, tk = 1;
    for (int j = 0; j < k; j++) {
        tp = tk;
        tk = (1 + sqrt(1 + 4 * tk * tk)) / 2;
    }
    return k == 0 ? 0 : (tp - 1) / tk;
}
static ad_var nesterov_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k,
                            ad_var x, ad_var s) {
    int n = p->n_y;
    ad_var y = ad_slice(t, s, 0, n), yp = ad_slice(t, s, n, n);
    ad_var u = ad_add(t, y, ad_scale(t, ad_sub(t, y, yp), fista_momentum(k)));
    ad_var g = blo_ll_grad_y(t, p, x, u);
    ad_var y1 = blo_y_project(t, p, ad_axpy(t, u, -d->par.nesterov.s_l, g));
    return ad_concat(t, y1, y);
}
static blo_status nesterov_check(const blo_problem *p, const blo_dynamics *d, blo_error *err) {
    (void)p;
    return positive(err, d->name, "s_l", d->par.nesterov.s_l);
}
blo_dynamics blo_dynamics_nesterov(int n_y, blo_nesterov_params par) {
    return (blo_dynamics){.name = "nesterov", .state_size = 2 * n_y, .init = init_pair,
                          .step = nesterov_step, .read_y = read_first, .check = nesterov_check,
                          .ll_step = par.s_l, .par.nesterov = par};
}

// ---- heavy-ball momentum ----------------------------------------------------------------------------------

static ad_var momentum_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k,
                            ad_var x, ad_var s) {
    (void)k;
    const blo_momentum_params *q = &d->par.momentum;
    int n = p->n_y;
    ad_var y = ad_slice(t, s, 0, n), yp = ad_slice(t, s, n, n);
    ad_var g = blo_ll_grad_y(t, p, x, y);
    ad_var v = ad_axpy(t, ad_scale(t, ad_sub(t, y, yp), q->beta), -q->s_l, g);
    return ad_concat(t, blo_y_project(t, p, ad_add(t, y, v)), y);
}
static blo_status momentum_check(const blo_problem *p, const blo_dynamics *d, blo_error *err) {
    const blo_momentum_params *q = &d->par.momentum;
    blo_status s = positive(err, d->name, "s_l", q->s_l);
    if (!s && !(q->beta >= 0 && q->beta < 1))
        return blo_fail(err, BLO_EARG, "dynamics momentum: beta = %g must be in [0, 1)", q->beta);
    if (!s && q->reversible && blo_momentum_bits(q->beta) < 0)
        return blo_fail(err, BLO_EARG, "dynamics momentum: reversible needs ll_momentum = j / 2^p > 0 "
                        "with p <= %d (0.5, 0.75, 0.875, 0.8984375 ...); %.17g is not", BLO_REV_MAX_BITS, q->beta);
    if (!s && q->reversible && (p->y_lo || p->y_hi))
        return blo_fail(err, BLO_EARG, "dynamics momentum: reversible steps cannot be undone through a Y box");
    return s;
}

int blo_momentum_bits(double beta) {
    for (int p = 1; p <= BLO_REV_MAX_BITS; p++)
        if (beta > 0 && ldexp(beta, p) == floor(ldexp(beta, p))) return p;
    return -1;
}

bool blo_dynamics_reversible(const blo_dynamics *d) {
    return d->step == momentum_step && d->par.momentum.reversible;
}
blo_dynamics blo_dynamics_momentum(int n_y, blo_momentum_params par) {
    return (blo_dynamics){.name = "momentum", .state_size = 2 * n_y, .init = init_pair,
                          .step = momentum_step, .read_y = read_first, .check = momentum_check,
                          .ll_step = par.s_l, .par.momentum = par};
}

// ---- accelerated non-convex scheme (AIT Eq. 10, Ghadimi-Lan) --------------------------------------------

// State (y, u, v) [3 n_y] with u_0 = v_0 = y_0. y_0 is carried in the state only so read_y gives
// y_0 = z at k = 0 (PTT and F_traj see it); the first step overwrites it with v_0.
static ad_var accel_init(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var y0) {
    (void)p, (void)d;
    ad_var parts[3] = {y0, y0, y0};
    return ad_concat_n(t, 3, parts);
}
// The paper's 0-based constants give a_0 = 2 and l_0 = 0, which wastes two steps; Ghadimi and
// Lan's 1-based j = k + 1 makes the first output y_1 = v_0 = z and every step useful (the README's
// reading of AIT Eq. 10).
static ad_var accel_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                         ad_var s) {
    int n = p->n_y;
    double j = k + 1, a = 2 / (j + 1), b = 1 / (2 * d->par.accel.L_f), l = j * b / 2;
    ad_var u = ad_slice(t, s, n, n), v = ad_slice(t, s, 2 * n, n);
    // At j = 1, a = 1 and the u term is exactly zero; scaling by 0 keeps the graph uniform.
    ad_var y1 = ad_add(t, ad_scale(t, u, 1 - a), ad_scale(t, v, a));
    ad_var g = blo_ll_grad_y(t, p, x, y1);
    ad_var u1 = blo_y_project(t, p, ad_axpy(t, y1, -b, g));
    ad_var v1 = blo_y_project(t, p, ad_axpy(t, v, -l, g));
    ad_var parts[3] = {y1, u1, v1};
    return ad_concat_n(t, 3, parts);
}
static blo_status accel_check(const blo_problem *p, const blo_dynamics *d, blo_error *err) {
    (void)p;
    return positive(err, d->name, "L_f", d->par.accel.L_f);
}
blo_dynamics blo_dynamics_accel(int n_y, blo_accel_params par) {
    return (blo_dynamics){.name = "accel", .state_size = 3 * n_y, .init = accel_init,
                          .step = accel_step, .read_y = read_first, .check = accel_check,
                          .ll_step = 0.5 / par.L_f, .par.accel = par};
}

// ---- the registry: each dynamics' settings, defaults and constructor from params ---------------------

static const blo_gd_params gd_defaults = {.s_l = 0.1};
static const blo_setting gd_settings[] = {
    BLO_ROW_DBL(blo_gd_params, s_l, "s_l", 0, INFINITY, BLO_SET_LO_OPEN, "s", "LL step size"),
    BLO_ROW_END,
};
static blo_dynamics gd_make(int n_y, const void *q) { return blo_dynamics_gd(n_y, *(const blo_gd_params *)q); }

static const char *const bda_weight_words[] = {"icml", "ait", "fixed", NULL};
static const blo_bda_params bda_defaults = {.s_u = 0.7, .s_l = 0.2, .weights = BLO_BDA_ICML, .c = 0.5,
                                            .mu = 0.5, .beta = 1.0};
static const blo_setting bda_settings[] = {
    BLO_ROW_DBL(blo_bda_params, s_l, "s_l", 0, INFINITY, BLO_SET_LO_OPEN, "s", "LL step size"),
    BLO_ROW_DBL(blo_bda_params, s_u, "s_u", 0, INFINITY, BLO_SET_LO_OPEN, "s", "UL step inside BDA steps"),
    BLO_ROW_CHOICE(blo_bda_params, weights, "bda_weights", bda_weight_words, "w",
                   "BDA weights: icml (BDA Eq. 10), ait (AIT Eq. 7), fixed"),
    BLO_ROW_DBL(blo_bda_params, c, "alpha", 0, 1, BLO_SET_LO_OPEN | BLO_SET_HI_OPEN, "c",
                "BDA weight: alpha_k = c/k (icml), c (fixed)"),
    BLO_ROW_DBL(blo_bda_params, mu, "mu", 0, 1, BLO_SET_LO_OPEN | BLO_SET_HI_OPEN, "mu", "AIT Eq. 7 weight mu"),
    BLO_ROW_DBL(blo_bda_params, beta, "beta", 0, INFINITY, BLO_SET_LO_OPEN, "b", "AIT Eq. 7 constant beta_k"),
    BLO_ROW_END,
};
static blo_dynamics bda_make(int n_y, const void *q) { return blo_dynamics_bda(n_y, *(const blo_bda_params *)q); }

static const blo_nesterov_params nesterov_defaults = {.s_l = 0.1};
static const blo_setting nesterov_settings[] = {
    BLO_ROW_DBL(blo_nesterov_params, s_l, "s_l", 0, INFINITY, BLO_SET_LO_OPEN, "s", "LL step size"),
    BLO_ROW_END,
};
static blo_dynamics nesterov_make(int n_y, const void *q) {
    return blo_dynamics_nesterov(n_y, *(const blo_nesterov_params *)q);
}

static const blo_accel_params accel_defaults = {.L_f = 1};
static const blo_setting accel_settings[] = {
    BLO_ROW_DBL(blo_accel_params, L_f, "L_f", 0, INFINITY, BLO_SET_LO_OPEN, "L", "Lipschitz constant of grad_y f"),
    BLO_ROW_END,
};
static blo_dynamics accel_make(int n_y, const void *q) { return blo_dynamics_accel(n_y, *(const blo_accel_params *)q); }

static const blo_momentum_params momentum_defaults = {.s_l = 0.1, .beta = 0.5};
static const blo_setting momentum_settings[] = {
    BLO_ROW_DBL(blo_momentum_params, s_l, "s_l", 0, INFINITY, BLO_SET_LO_OPEN, "s", "LL step size"),
    BLO_ROW_DBL(blo_momentum_params, beta, "ll_momentum", 0, 1, BLO_SET_HI_OPEN, "b", "heavy-ball weight"),
    BLO_ROW_BOOL(blo_momentum_params, reversible, "reversible",
                 "reconstruct the iterates exactly in the sweep instead of storing them (fixed point, "
                 "Maclaurin et al. 2015 Alg. 2; ll_momentum = j / 2^p)"),
    BLO_ROW_END,
};
static blo_dynamics momentum_make(int n_y, const void *q) {
    return blo_dynamics_momentum(n_y, *(const blo_momentum_params *)q);
}

#define DYN(name, T, summary) \
    static const blo_dynamics_type name##_type = {#name, summary, sizeof(T), &name##_defaults, name##_settings, name##_make};
DYN(gd, blo_gd_params, "projected gradient descent on f (BDA Eq. 4, AIT Eq. 8)")
DYN(bda, blo_bda_params, "aggregated UL and LL gradients (BDA Eq. 10 / AIT Eq. 7)")
DYN(nesterov, blo_nesterov_params, "Nesterov / FISTA acceleration (AIT Eq. 9)")
DYN(accel, blo_accel_params, "accelerated scheme for non-convex LL, state (y, u, v) (AIT Eq. 10)")
DYN(momentum, blo_momentum_params, "heavy-ball momentum")
#undef DYN

static const blo_dynamics_type *const registry[] = {&gd_type, &bda_type, &nesterov_type, &accel_type,
                                                    &momentum_type, NULL};

const blo_dynamics_type *const *blo_dynamics_registry(void) { return registry; }

const blo_dynamics_type *blo_dynamics_find(const char *name) {
    for (int i = 0; name && registry[i]; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    return NULL;
}
