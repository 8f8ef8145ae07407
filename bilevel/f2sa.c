// f2sa: "A Fully First-Order Method for Stochastic Bilevel Optimization" (Kwon, Kwon, Wright and
// Nowak, ICML 2023), Alg. 1 (F2SA). The penalty L_lambda(x, y) = F(x, y) + lambda (f(x, y) -
// f(x, z*(x))) is minimized with first-order oracles only. UL iteration k, lambda_k fixed:
//   T inner steps, each with new minibatches:
//     z <- Proj_Y(z - gamma grad_y f(x, z))                          (z tends to y*(x))
//     y <- Proj_Y(y - alpha_k (grad_y F(x, y) + lambda_k grad_y f(x, y)))   (y to y*_lambda(x))
//   d_x = grad_x F(x, y) + lambda_k (grad_x f(x, y) - grad_x f(x, z))   (one LL minibatch for both)
// and the solver steps x along d_x (the paper's xi alpha_k is the solver's lr_x). lambda is ramped
// as lambda_{k+1} = lambda_k + delta (Alg. 1), capped at lambda_max: lambda_k = min(lambda0 +
// delta k, lambda_max), a function of k, so a resumed run needs nothing more than y and z. The y
// step is alpha_k = gamma / lambda_k (our reading: the paper's alpha_k lambda_k stays of the order
// of the LL step gamma, so y's f-part moves as z does). No Hessian-vector product anywhere. The
// LL solution reported is z; y and z are carried between iterations.
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int T;             // inner steps per UL iteration
    double gamma;      // z step (and lambda alpha_k)
    double lambda0;    // penalty at k = 0
    double delta;      // penalty increase per UL iteration
    double lambda_max; // cap
} f2sa_params;

static const f2sa_params defaults = {.T = 10, .gamma = 0.1, .lambda0 = 1, .delta = 1, .lambda_max = 100};
static const blo_setting settings[] = {
    BLO_ROW_INT(f2sa_params, T, "T", 0, BLO_MAX_ITERS, "T", "inner steps on z and y per UL iteration"),
    BLO_ROW_DBL(f2sa_params, gamma, "gamma", 0, INFINITY, BLO_SET_LO_OPEN, "g", "z step (y's is gamma / lambda)"),
    BLO_ROW_DBL(f2sa_params, lambda0, "lambda0", 0, INFINITY, BLO_SET_LO_OPEN, "l", "penalty lambda at the start"),
    BLO_ROW_DBL(f2sa_params, delta, "delta", 0, INFINITY, 0, "d", "lambda's increase per UL iteration"),
    BLO_ROW_DBL(f2sa_params, lambda_max, "lambda_max", 0, INFINITY, BLO_SET_LO_OPEN, "l", "lambda's cap"),
    BLO_ROW_END,
};

typedef struct {
    blo_fo_state fo; // first: mem = z, y [n_y] (carried), then g, gF [n_y], fy, fz [n_x]
    f2sa_params par;
} f2sa;

static blo_status f2sa_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    int nx = env->p->n_x, ny = env->p->n_y;
    *n_z = 0, (void)z0;
    blo_status st = blo_fo_new(state, sizeof(f2sa), env, 4 * (size_t)ny + 2 * (size_t)nx, 2 * (size_t)ny, err);
    if (st != BLO_OK) return st;
    f2sa *s = *state;
    s->par = *(const f2sa_params *)env->params;
    memcpy(s->fo.mem + ny, env->y0, (size_t)ny * sizeof(double)); // y starts where z does
    return blo_ok(err);
}

// One inner step on z and y (Alg. 1's inner loop), each gradient on new minibatches.
static blo_status inner_step(f2sa *s, const double *x, double lambda, blo_error *err) {
    const blo_problem *p = s->fo.p;
    int ny = p->n_y;
    double *z = s->fo.mem, *y = z + ny, *g = y + ny, *gF = g + ny;
    blo_status st = blo_sample(p, BLO_SAMPLE_LL, s->fo.rng, err);
    if (!st) st = blo_eval(p, 0, x, z, NULL, NULL, g, s->fo.tape, err);
    if (st) return st;
    for (int i = 0; i < ny; i++) z[i] -= s->par.gamma * g[i];
    blo_clamp_y(p, z);
    st = blo_sample(p, BLO_SAMPLE_LL, s->fo.rng, err);
    if (!st) st = blo_eval(p, 0, x, y, NULL, NULL, g, s->fo.tape, err);
    if (!st) st = blo_sample(p, BLO_SAMPLE_UL, s->fo.rng, err);
    if (!st) st = blo_eval(p, 1, x, y, NULL, NULL, gF, s->fo.tape, err);
    if (st) return st;
    double alpha = s->par.gamma / lambda;
    for (int i = 0; i < ny; i++) y[i] -= alpha * (gF[i] + lambda * g[i]);
    blo_clamp_y(p, y);
    return BLO_OK;
}

static blo_status f2sa_direction(void *state, int t, const double *x, const double *zz, double *gx,
                                 double *gzz, double *y_out, blo_record *rec, blo_error *err) {
    f2sa *s = state;
    const blo_problem *p = s->fo.p;
    int nx = p->n_x, ny = p->n_y;
    double *z = s->fo.mem, *y = z + ny, *fy = y + 3 * ny, *fz = fy + nx;
    (void)zz, (void)gzz;
    double lambda = fmin(s->par.lambda0 + s->par.delta * t, s->par.lambda_max);
    blo_status st = BLO_OK;
    for (int k = 0; k < s->par.T && !st; k++) st = inner_step(s, x, lambda, err);
    // d_x = grad_x F(x, y) + lambda (grad_x f(x, y) - grad_x f(x, z))
    if (!st) st = blo_sample(p, BLO_SAMPLE_UL, s->fo.rng, err);
    if (!st) st = blo_eval(p, 1, x, y, NULL, gx, NULL, s->fo.tape, err);
    if (!st) st = blo_sample(p, BLO_SAMPLE_LL, s->fo.rng, err);
    if (!st) st = blo_eval(p, 0, x, y, NULL, fy, NULL, s->fo.tape, err);
    if (!st) st = blo_eval(p, 0, x, z, NULL, fz, NULL, s->fo.tape, err);
    if (st) return st;
    for (int i = 0; i < nx; i++) gx[i] += lambda * (fy[i] - fz[i]);
    rec->extra = lambda;
    memcpy(y_out, z, sizeof(double) * (size_t)ny);
    return blo_ok(err);
}

const blo_method_type blo_method_f2sa = {
    "f2sa", "F2SA: first-order penalty with y and z sequences, lambda ramped (Alg. 1)", 0,
    BLO_GRAD_NONE, NULL, sizeof(f2sa_params), &defaults, settings, NULL, NULL, f2sa_init,
    f2sa_direction, blo_fo_solution, NULL, blo_fo_save, blo_fo_load, blo_fo_free};
