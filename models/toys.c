// The papers' toy problems as models: BDA Example 1 (counterexample), AIT Eqs. 18-20 (llc, lls,
// nonconvex), BVFIM Eq. 30 (sin), the BOME toys (coreset, minimax, degenerate) and GALET Example 1
// (pl), each with its known optimum, start points, settings table and the settings that
// reproduce its paper (data, per method). The closed-form quadratic is in quadratic.c, the
// meta-learning toy in meta.c. Where a paper gives no setting, ours are chosen as each table's
// comment says ("measured" means by our own runs).
//
// Every objective is a tape expression; constants live in the model's own storage and enter the
// tape by ad_const_view. For the BOME toys the paper's UL variable v is our x and its LL variable
// theta is our y.
#include "toy.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define PI 3.14159265358979323846

// llc, lls and nonconvex have one setting, their size n (bounded so 2n and the storage fit).
typedef struct {
    int n;
} size_params;
static const blo_setting size_settings[] = {
    BLO_ROW_INT(size_params, n, "n", 1, 1000000, "n", "problem size n"),
    BLO_ROW_END,
};
static const blo_setting no_settings[] = {BLO_ROW_END};

// ---- BDA Example 1 / BOME degenerate: F = 1/2 (x - y2)^2 + 1/2 (y1 - 1)^2, f = 1/2 y1^2 - x y1 ----
// x [1], y [2]. S(x) = {(x, y2)}: not a singleton; phi(x) = 1/2 (x - 1)^2 (optimistic).

static ad_var ex1_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    ad_var y1 = ad_slice(t, y, 0, 1), y2 = ad_slice(t, y, 1, 1);
    return ad_scale(t, ad_add(t, ad_sqnorm(t, ad_sub(t, x, y2)), ad_sqnorm(t, ad_shift(t, y1, -1))), 0.5);
}

static ad_var ex1_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    ad_var y1 = ad_slice(t, y, 0, 1);
    return ad_sub(t, ad_scale(t, ad_sqnorm(t, y1), 0.5), ad_dot(t, x, y1));
}

// x [1] and y [2] with the common optimum x* = 1, y* = (1, 1), F* = 0.
static toy *ex1_make(mdl_model *m, const char *name, char *err, size_t errlen) {
    toy *d = toy_new(m, 32);
    if (!d) return oom(name, err, errlen), NULL;
    m->prob = (blo_problem){.n_x = 1, .n_y = 2, .F = ex1_F, .f = ex1_f, .user = d};
    m->x_star = fill(toy_take(d, 1), 1, 1);
    m->y_star = m->z_prior = fill(toy_take(d, 2), 2, 1);
    m->F_star = 0;
    return d;
}

static int counterexample_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    (void)params;
    toy *d = ex1_make(m, "counterexample", err, errlen);
    if (!d) return -1;
    // BDA Fig. 1: x in [-100, 100]; starts x0 = 0 with y0 = (0, 0) or (2, 2), and x0 = 2, y0 = (2, 2).
    m->prob.x_lo = fill(toy_take(d, 1), 1, -100);
    m->prob.x_hi = fill(toy_take(d, 1), 1, 100);
    static const double xs[3] = {0, 0, 2}, ys[3][2] = {{0, 0}, {2, 2}, {2, 2}};
    m->n_starts = 3;
    for (int s = 0; s < 3; s++) {
        double *x0 = toy_take(d, 1), *y0 = toy_take(d, 2);
        x0[0] = xs[s], y0[0] = ys[s][0], y0[1] = ys[s][1];
        m->x0[s] = x0, m->y0[s] = y0;
    }
    return 0;
}

// BDA (Sec. 5.1): K = 16, s_u = 0.7, s_l = 0.2, alpha_k = 0.5/k (the BDA dynamics' defaults); RHG
// and the implicit methods use the same plain steps s_l = 0.2. The UL step and iterations are not
// given: we measured the K-step optimum independent of lr in {0.1, 0.5}; 0.5 with T = 300 reaches
// it to 1e-6 (our choice). ait / aitp: the LL is convex, so AIT_C (Alg. 2): BDA dynamics with
// AIT's weights, no PTT. bome as for degenerate, the same problem; galet and bvfim have no paper
// setting here (GALET's alpha, BVFIM's generic schedule).
static const mdl_paper_row counterexample_papers[] = {
    {"*", "ll_iters=16 s_l=0.2 s_u=0.7 ul_iters=300 lr_x=0.5 lr_z=0.5"},
    {"ait", "dynamics=bda bda_weights=ait ptt=0"},
    {"aitp", "dynamics=bda bda_weights=ait ptt=0"},
    {"bome", "T=1 alpha=0.5 eta=0.5 ul_iters=2000"},
    {"galet", "lr_x=0.3 ul_iters=300"},
    {"bvfim", "lr_x=0.1 ul_iters=1000"},
    {NULL, NULL},
};

static int degenerate_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    (void)params;
    toy *d = ex1_make(m, "degenerate", err, errlen);
    if (!d) return -1;
    // BDA Example 1 as BOME's code implements it: theta clamped to [-100, 100], v free.
    m->prob.y_lo = fill(toy_take(d, 2), 2, -100);
    m->prob.y_hi = fill(toy_take(d, 2), 2, 100);
    m->n_starts = 1;
    m->x0[0] = toy_take(d, 1), m->y0[0] = toy_take(d, 2); // v0 = 0, theta0 = (0, 0)
    return 0;
}

// BOME's code: xi = alpha = 0.5, T = 1, eta = 0.5, 2000 iterations; the unrolled methods get BDA's
// settings for this problem (it is BDA Example 1): the counterexample's rows.

// ---- AIT Eq. 18 (llc) and Eq. 19 (lls): x [n], y = (y1, y2) [2n] -------------------------------------

static ad_var llc_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    // ||x - y2||^4 + ||y1 - e||^4
    int n = ((const toy *)u)->n;
    ad_var y1 = ad_slice(t, y, 0, n), y2 = ad_slice(t, y, n, n);
    return ad_add(t, ad_normp(t, ad_sub(t, x, y2), 4), ad_normp(t, ad_shift(t, y1, -1), 4));
}

static ad_var llc_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    // 1/2 ||y1||^2 - x^T y1 (y2 does not enter: S(x) = {(x, y2)})
    int n = ((const toy *)u)->n;
    ad_var y1 = ad_slice(t, y, 0, n);
    return ad_sub(t, ad_scale(t, ad_sqnorm(t, y1), 0.5), ad_dot(t, x, y1));
}

static ad_var lls_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    // -e^T x + ||x - y2||^4 + ||y1 - e||^4
    return ad_sub(t, llc_F(t, x, y, u), ad_sum(t, x));
}

static ad_var lls_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    // ||y1 - y2||^4 + ||y1 + y2 - x||^4 (our reading of Eq. 19): S(x) = {(x/2, x/2)}, f* = 0
    int n = ((const toy *)u)->n;
    ad_var y1 = ad_slice(t, y, 0, n), y2 = ad_slice(t, y, n, n);
    return ad_add(t, ad_normp(t, ad_sub(t, y1, y2), 4), ad_normp(t, ad_sub(t, ad_add(t, y1, y2), x), 4));
}

// Shared by llc and lls: sizes, box X = [-r, r]^n, one start (x0, (y1_0, y2_0)) and the optimum.
static int aitq_make(mdl_model *m, const char *name, int lls, int n, char *err, size_t errlen) {
    size_t N = (size_t)n;
    toy *d = toy_new(m, 10 * N);
    if (!d) return oom(name, err, errlen);
    d->n = n;
    m->prob = (blo_problem){.n_x = n, .n_y = 2 * n, .F = lls ? lls_F : llc_F, .f = lls ? lls_f : llc_f,
                           .user = d};
    double r = lls ? 1 : 10; // X = [-10, 10]^n (Eq. 18), [-1, 1]^n (Eq. 19)
    m->prob.x_lo = fill(toy_take(d, N), N, -r);
    m->prob.x_hi = fill(toy_take(d, N), N, r);
    // llc: x* = e, y* = (e, e), F* = 0. lls: x* = e (the upper bound of X is active: the reduced
    // gradient there is -e), y* = (e/2, e/2), F* = -n + 2 ||e/2||^4 = -n + n^2/8.
    m->x_star = fill(toy_take(d, N), N, 1);
    double *ys = fill(toy_take(d, 2 * N), 2 * N, lls ? 0.5 : 1);
    m->y_star = m->z_prior = ys; // AIT_P's toy prior: z_p = y* (our reading: the paper gives none)
    m->F_star = lls ? -(double)n + (double)n * n / 8 : 0;
    // starts: llc (2e, (2e, 2e)); lls (-e, (-e, -2e)) (x0 on the boundary of X)
    double *x0 = fill(toy_take(d, N), N, lls ? -1 : 2), *y0 = toy_take(d, 2 * N);
    fill(y0, N, lls ? -1 : 2), fill(y0 + N, N, lls ? -2 : 2);
    m->n_starts = 1, m->x0[0] = x0, m->y0[0] = y0;
    return 0;
}

static int llc_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    return aitq_make(m, "llc", 0, ((const size_params *)params)->n, err, errlen);
}

static int lls_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    return aitq_make(m, "lls", 1, ((const size_params *)params)->n, err, errlen);
}

// AIT (Sec. 6.1) gives T = 1000 and nothing else. Our choices for n = 20: K = 20; the LL step
// s_l = 0.5 (L_f = 1); a small UL step inside the LL (s_u = 0.03: ||grad_y1 F|| is ~360 at the
// start, s_u = 0.1 overflows); lr_x = lr_z = 0.01 (F is quartic: large gradients far from x*,
// vanishing curvature at x*, so convergence is sublinear). Measured at T = 1000 (n = 20):
// ||x - e|| / ||e|| = 0.063 for BDA, 0.038 for AIT_C; RHG stays at 0.5 (y2 never moves). ait and
// aitp are AIT_C: BDA dynamics with AIT's weights (mu = 0.5, beta_k = 1) and IA, no PTT (Alg. 2).
static const mdl_paper_row llc_papers[] = {
    {"*", "ll_iters=20 s_l=0.5 s_u=0.03 ul_iters=1000 lr_x=0.01 lr_z=0.01"},
    {"ait", "dynamics=bda bda_weights=ait ptt=0"},
    {"aitp", "dynamics=bda bda_weights=ait ptt=0"},
    {"galet", "beta=0.5"},
    {"bome", "alpha=0.5"},
    {NULL, NULL},
};

// AIT gives no settings for Eq. 19. f is quartic with curvature ~12 ||y1 + y2 - x||^2 ~ 10^3 at
// the start (n = 20), so the LL step is small: s_l = 1e-3 (5e-3 overflows), K = 20, lr = 1e-3
// (1e-2 overflows) (our choices). AIT for LLS is IA on plain or Nesterov steps (Eqs. 8-9),
// without PTT. Measured at T = 1000: ||x - e|| / ||e|| = 0.77 for RHG, 0.28 with IA.
static const mdl_paper_row lls_papers[] = {
    {"*", "ll_iters=20 s_l=1e-3 s_u=1e-3 ul_iters=1000 lr_x=1e-3 lr_z=1e-3"},
    {"ait", "ptt=0"},
    {"aitp", "ptt=0"},
    {"galet", "beta=1e-3"},
    {"bome", "alpha=1e-3"},
    {NULL, NULL},
};

// ---- AIT Eq. 20 (nonconvex) and BVFIM Eq. 30 (sin) ---------------------------------------------------
// nonconvex: x [1] shared by all coordinates (our reading of Eq. 20), y [n], c_i = 2, y in [-10, 10]^n:
//   F = (x - a)^2 + ||y - a - c||^2,  f = sum_i sin(x + y_i - c_i).
// sin: x [1], y [1], F = (x - a)^2 + (y - a)^2, f = sin(x + y) (c = 0, no box).
// Both reduce on a branch y_i = C + c_i - x (C = -pi/2 + 2 k pi) to (x - a)^2 + n (C - x - a)^2, so
// x* = ((1 - n) a + n C) / (1 + n), y*_i = C + c_i - x*, F* = n (C - 2a)^2 / (1 + n), with C the
// branch nearest 2a.

static ad_var wave_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u;
    ad_var cv = ad_const_view(t, ad_vec_shape(d->n), d->c);
    return ad_add(t, ad_sqnorm(t, ad_shift(t, x, -d->a)), ad_sqnorm(t, ad_sub(t, ad_shift(t, y, -d->a), cv)));
}

static ad_var wave_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u;
    ad_var cv = ad_const_view(t, ad_vec_shape(d->n), d->c);
    return ad_sum(t, ad_sin(t, ad_add(t, ad_sub(t, y, cv), x))); // x [1] broadcasts over y [n]
}

// The branch C = -pi/2 + 2 k pi nearest 2a; *tie = 1 when two branches are equally near (then the
// optimum is not unique).
static double nearest_branch(double a, int *tie) {
    double k = round((2 * a + PI / 2) / (2 * PI)), C = -PI / 2 + 2 * PI * k;
    double other = 2 * a > C ? C + 2 * PI : C - 2 * PI;
    *tie = fabs(fabs(other - 2 * a) - fabs(C - 2 * a)) < 1e-12 * (1 + fabs(a));
    return C;
}

// Storage and optimum for n coordinates with c_i = cval; starts (x0, y0 in every coordinate).
static toy *wave_make(mdl_model *m, const char *name, int n, double a, double cval, int n_starts,
                      const double (*starts)[2], char *err, size_t errlen) {
    size_t N = (size_t)n;
    toy *d = toy_new(m, (6 + 2 * (size_t)n_starts) * N + 8);
    if (!d) return oom(name, err, errlen), NULL;
    d->n = n, d->a = a;
    d->c = fill(toy_take(d, N), N, cval);
    m->prob = (blo_problem){.n_x = 1, .n_y = n, .F = wave_F, .f = wave_f, .user = d};
    int tie;
    double C = nearest_branch(a, &tie), xs = ((1 - n) * a + n * C) / (1 + n);
    double *x_star = fill(toy_take(d, 1), 1, xs), *y_star = fill(toy_take(d, N), N, C + cval - xs);
    if (!tie) m->x_star = x_star, m->y_star = m->z_prior = y_star;
    m->F_star = n * (C - 2 * a) * (C - 2 * a) / (1 + n); // the value is the same on a tie
    m->n_starts = n_starts;
    for (int s = 0; s < n_starts; s++) {
        m->x0[s] = fill(toy_take(d, 1), 1, starts[s][0]);
        m->y0[s] = fill(toy_take(d, N), N, starts[s][1]);
    }
    return d;
}

static int nonconvex_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    int n = ((const size_params *)params)->n;
    // a = 2, c_i = 2 (C = 3 pi / 2 for every n); starts (-6, 0) and (-8, -8) (AIT Figs. 3-5)
    static const double starts[2][2] = {{-6, 0}, {-8, -8}};
    toy *d = wave_make(m, "nonconvex", n, 2, 2, 2, starts, err, errlen);
    if (!d) return -1;
    size_t N = (size_t)n;
    m->prob.y_lo = fill(toy_take(d, N), N, -10);
    m->prob.y_hi = fill(toy_take(d, N), N, 10);
    return 0;
}

// Measured: plain projected GD, s_l = 0.3, K = 20, lr_x = lr_z = 0.1, T = 2000 takes AIT_NC (IA +
// PTT) to x* from both starts; the other unrolled methods get the same LL, so the comparison is
// like for like (BDA keeps its own s_l = 0.2, BDA Sec. 5). accel uses L_f = 1 (sin).
static const mdl_paper_row nonconvex_papers[] = {
    {"*", "ll_iters=20 s_l=0.3 L_f=1 ul_iters=2000 lr_x=0.1 lr_z=0.1"},
    {"bda", "s_l=0.2"},
    {NULL, NULL},
};

typedef struct {
    double a;
} sin_params;
static const sin_params sin_defaults = {0};
static const blo_setting sin_settings[] = {
    BLO_ROW_DBL(sin_params, a, "a", -1e6, 1e6, 0, "a", "the shift a of F = (x - a)^2 + (y - a)^2"),
    BLO_ROW_END,
};

static int sin_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    double a = ((const sin_params *)params)->a;
    // BVFIM uses a in {0, 2}: x* = y* = -pi/4 (F* = pi^2/8) and 3 pi/4 (F* = (3 pi/2 - 4)^2 / 2).
    // Any other a gets the same closed form (x* = y* = C/2); where two branches tie, x* is unknown.
    static const double starts[2][2] = {{0, 0}, {3, 3}};
    return wave_make(m, "sin", 1, a, 0, 2, starts, err, errlen) ? 0 : -1;
}

// BVFIM gives no step sizes (its supplement is missing); >= 500 UL iterations (Fig. 2). Our
// choice: the nonconvex toy's LL (it is the same problem shifted), T = 500. Measured: RHG reaches
// x* only from the near start ((0, 0) for a = 0, (3, 3) for a = 2). BVFIM (our tuning): mu_0 =
// theta_0 = 3, large enough that the regularized value function picks the LL basin nearest the
// origin from both starts, decaying as 1/(l+1) (power 1, tau_0 = 1); T = 13000. The barrier
// admits y within ~sqrt(2 mu_l) of the LL solution, so x converges like 1/sqrt(l): relative
// errors 0.049 / 0.049 (a = 0) and 0.031 / 0.025 (a = 2) at l = 2000, below 2e-2 from both
// starts at l = 13000 (README).
static const mdl_paper_row sin_papers[] = {
    {"*", "ll_iters=20 s_l=0.3 L_f=1 ul_iters=500 lr_x=0.1 lr_z=0.1"},
    {"bda", "s_l=0.2"},
    {"bvfim", "mu0=3 theta0=3 ul_iters=13000"},
    {NULL, NULL},
};

// ---- GALET Example 1 (pl): x [1], y [2] -------------------------------------------------------------
// F = x^2 + y1 - sin(y2), f = 1/2 (x + y1 - sin y2)^2. S(x) = {x + y1 - sin y2 = 0}, F = x^2 - x
// on it: x* = 0.5, F* = -0.25, the optimal set {x = 0.5, y1 - sin y2 + 0.5 = 0}.

static ad_var pl_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    ad_var y1 = ad_slice(t, y, 0, 1), y2 = ad_slice(t, y, 1, 1);
    return ad_add(t, ad_sqnorm(t, x), ad_sum(t, ad_sub(t, y1, ad_sin(t, y2))));
}

static ad_var pl_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    ad_var y1 = ad_slice(t, y, 0, 1), y2 = ad_slice(t, y, 1, 1);
    return ad_scale(t, ad_sqnorm(t, ad_sub(t, ad_add(t, x, y1), ad_sin(t, y2))), 0.5);
}

// GALET's optimality gap (Eq. 46), as a distance: sqrt((x - 0.5)^2 + (0.5 + y1 - sin y2)^2).
static double pl_gap(const mdl_model *m, const double *x, const double *y) {
    (void)m;
    double r = 0.5 + y[0] - sin(y[1]);
    return sqrt((x[0] - 0.5) * (x[0] - 0.5) + r * r);
}

static int pl_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    (void)params;
    toy *d = toy_new(m, 32);
    if (!d) return oom("pl", err, errlen);
    m->prob = (blo_problem){.n_x = 1, .n_y = 2, .F = pl_F, .f = pl_f, .user = d};
    m->x_star = fill(toy_take(d, 1), 1, 0.5);
    double *ys = toy_take(d, 2);
    ys[0] = -0.5, ys[1] = 0; // one point of the optimal set
    m->y_star = m->z_prior = ys;
    m->F_star = -0.25;
    m->optimal_gap = pl_gap;
    // starts (ours; GALET's figure does not list them): (2, (2, 2)), (0, (0, 0)), (-2, (0, 0)), (1, (1, 1))
    static const double st[4][3] = {{2, 2, 2}, {0, 0, 0}, {-2, 0, 0}, {1, 1, 1}};
    m->n_starts = 4;
    for (int s = 0; s < 4; s++) {
        double *x0 = toy_take(d, 1), *y0 = toy_take(d, 2);
        x0[0] = st[s][0], y0[0] = st[s][1], y0[1] = st[s][2];
        m->x0[s] = x0, m->y0[s] = y0;
    }
    return 0;
}

// GALET (App. G): alpha = 0.3, beta = 1, N = 1, gamma = 0.1, T = 1, and 30 iterations; w warm
// started (cold w does not converge with T = 1: the README's reading). We run 100 UL iterations,
// where x = 0.5000 is reached (30 leave |x - 0.5| up to 0.02, measured). Not in the paper: the
// unrolled methods get grad_y f's Lipschitz bound ~2 -> s_l = 0.5, K = 20.
static const mdl_paper_row pl_papers[] = {
    {"*", "ul_iters=100 lr_x=0.3 lr_z=0.3 ll_iters=20 s_l=0.5"},
    {"galet", "N=1 beta=1 T_w=1 rho=0.1 w_warm=1"},
    {"bome", "lr_x=0.1 lr_z=0.1 ul_iters=1000"},
    {"bvfim", "lr_x=0.1 lr_z=0.1 ul_iters=1000"},
    {NULL, NULL},
};

// ---- BOME mini-max: v [1], theta [1] in [-10, 10], F = v theta, g = -v theta ----------------------

static ad_var mm_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    return ad_dot(t, x, y);
}

static ad_var mm_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    return ad_neg(t, ad_dot(t, x, y));
}

// The optimal set is {v = 0, theta in [-10, 10]}: the distance is |v|.
static double mm_gap(const mdl_model *m, const double *x, const double *y) {
    (void)m, (void)y;
    return fabs(x[0]);
}

static int minimax_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    (void)params;
    toy *d = toy_new(m, 16);
    if (!d) return oom("minimax", err, errlen);
    m->prob = (blo_problem){.n_x = 1, .n_y = 1, .F = mm_F, .f = mm_f, .user = d};
    m->prob.x_lo = m->prob.y_lo = fill(toy_take(d, 1), 1, -10); // BOME's code clamps both to [-10, 10]
    m->prob.x_hi = m->prob.y_hi = fill(toy_take(d, 1), 1, 10);
    m->x_star = toy_take(d, 1);              // v* = 0
    m->y_star = m->z_prior = toy_take(d, 1); // theta* = 0: where BOME ends (any theta is optimal)
    m->F_star = 0;
    m->optimal_gap = mm_gap;
    m->n_starts = 1;
    m->x0[0] = fill(toy_take(d, 1), 1, 4), m->y0[0] = fill(toy_take(d, 1), 1, 4); // BOME's code
    return 0;
}

// BOME's code: xi = alpha = 0.05, T = 10, eta = 0.5, 200 iterations (measured: |v| ~ 0.05 after
// 200, 1e-4 after 2000). Other methods: no paper setting; the same steps.
static const mdl_paper_row minimax_papers[] = {
    {"*", "s_l=0.05 ul_iters=200 lr_x=0.05 lr_z=0.05"},
    {"bome", "T=10 alpha=0.05 eta=0.5"},
    {NULL, NULL},
};

// ---- BOME coreset: v [4], theta [2] ------------------------------------------------------------------
// F = 0.1 ||theta - x0||^2, f = ||theta - X softmax(v)||^2 with X [2, 4] = [x1 x2 x3 x4] (the data
// and the 0.1 scaling of F are BOME's code's). theta* = (1.8, 0.4), the projection of x0 onto the hull of the
// x_j (0.8 x2 + 0.2 x4), F* = 0.72, reached only as v1, v3 -> -inf: x* is unknown (at infinity).

static ad_var cs_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)x;
    const toy *d = u;
    ad_var x0 = ad_const_view(t, ad_vec_shape(2), d->target);
    return ad_scale(t, ad_sqnorm(t, ad_sub(t, y, x0)), 0.1);
}

static ad_var cs_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u;
    ad_var X = ad_const_view(t, ad_mat_shape(2, 4), d->X);
    return ad_sqnorm(t, ad_sub(t, y, ad_matvec(t, X, ad_softmax(t, x), 0)));
}

static double cs_gap(const mdl_model *m, const double *x, const double *y) {
    (void)x;
    return hypot(y[0] - m->y_star[0], y[1] - m->y_star[1]);
}

static int coreset_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    (void)params;
    toy *d = toy_new(m, 32);
    if (!d) return oom("coreset", err, errlen);
    m->prob = (blo_problem){.n_x = 4, .n_y = 2, .F = cs_F, .f = cs_f, .user = d};
    static const double X[8] = {1, 3, -2, -3,  // first coordinates of x1..x4
                                3, 1, 2, -2}; // second coordinates
    double *Xd = toy_take(d, 8), *t0 = toy_take(d, 2), *ys = toy_take(d, 2);
    memcpy(Xd, X, sizeof X);
    t0[0] = 3, t0[1] = -2;
    ys[0] = 1.8, ys[1] = 0.4;
    d->X = Xd, d->target = t0;
    m->y_star = m->z_prior = ys;
    m->F_star = 0.72;
    m->optimal_gap = cs_gap;
    // BOME's code: v0 = 0, theta0 in {(0, 3), (-3, 1), (3.5, -1)}
    static const double th[3][2] = {{0, 3}, {-3, 1}, {3.5, -1}};
    double *v0 = toy_take(d, 4);
    m->n_starts = 3;
    for (int s = 0; s < 3; s++) {
        double *y0 = toy_take(d, 2);
        y0[0] = th[s][0], y0[1] = th[s][1];
        m->x0[s] = v0, m->y0[s] = y0;
    }
    return 0;
}

// BOME's code: xi = alpha = 0.05, T = 10, eta = 0.5, 5000 iterations. Others: the same steps (ours).
static const mdl_paper_row coreset_papers[] = {
    {"*", "ul_iters=5000 lr_x=0.05 lr_z=0.05"},
    {"bome", "T=10 alpha=0.05 eta=0.5"},
    {NULL, NULL},
};

// ---- the entries ---------------------------------------------------------------------------------------

static const size_params aitq_defaults = {.n = 20}, nonconvex_defaults = {.n = 1};

#define NO_PARAMS 0, NULL, no_settings
const mdl_entry mdl_counterexample_entry = {
    "counterexample", "BDA's counter-example: non-singleton LL, RHG stops at x <= 0.5, x* = 1",
    "BDA (ICML 2020) Example 1, Eq. 5", NO_PARAMS, counterexample_make, counterexample_papers};
const mdl_entry mdl_llc_entry = {
    "llc", "quartic UL, LL convex without unique solution (LLC), x* = e", "AIT (TPAMI) Eq. 18",
    sizeof(size_params), &aitq_defaults, size_settings, llc_make, llc_papers};
const mdl_entry mdl_lls_entry = {
    "lls", "quartic UL and LL with a unique LL solution (LLS), x* = e on the box boundary",
    "AIT (TPAMI) Eq. 19, LL read as ||y1-y2||^4 + ||y1+y2-x||^4", sizeof(size_params), &aitq_defaults,
    size_settings, lls_make, lls_papers};
const mdl_entry mdl_nonconvex_entry = {
    "nonconvex", "non-convex LL sum_i sin(x + y_i - c_i), many local solutions",
    "AIT (TPAMI) Eq. 20, a = 2, c_i = 2, scalar x", sizeof(size_params), &nonconvex_defaults,
    size_settings, nonconvex_make, nonconvex_papers};
const mdl_entry mdl_sin_entry = {
    "sin", "(x-a)^2 + (y-a)^2 s.t. y in argmin sin(x+y)", "BVFIM (ICML 2021) Eq. 30",
    sizeof(sin_params), &sin_defaults, sin_settings, sin_make, sin_papers};
const mdl_entry mdl_coreset_entry = {
    "coreset", "closest point of a convex hull to x0 via softmax weights, theta* = (1.8, 0.4)",
    "BOME (NeurIPS 2022) coreset toy, data and 0.1 scaling from its code", NO_PARAMS, coreset_make,
    coreset_papers};
const mdl_entry mdl_minimax_entry = {
    "minimax", "min v theta s.t. theta in argmax v theta, boxes [-10, 10], v* = 0",
    "BOME (NeurIPS 2022) Eq. 12", NO_PARAMS, minimax_make, minimax_papers};
const mdl_entry mdl_degenerate_entry = {
    "degenerate", "degenerate LL (BDA Example 1 in BOME's naming), v* = 1, theta* = (1, 1)",
    "BOME (NeurIPS 2022) toy, as its code implements it", NO_PARAMS, degenerate_make,
    counterexample_papers};
const mdl_entry mdl_pl_entry = {
    "pl", "PL but non-convex LL, non-singleton solutions, x* = 0.5",
    "GALET (NeurIPS 2023) Example 1, Eq. 6", NO_PARAMS, pl_make, pl_papers};
