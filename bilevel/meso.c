// meso: the single-loop Moreau-envelope method of "Moreau Envelope for Nonconvex Bi-Level
// Optimization: A Single-loop and Hessian-free Solution Strategy" (Liu et al., ICML 2024), MEHA
// (Alg. 1), as BOAT's MESO sets it. The LL value function is replaced by its Moreau envelope
// v(x, y) = min_theta f(x, theta) + gamma_1/2 ||theta - y||^2 (gamma_1 = 1/gamma of the paper),
// tracked by one step on theta per UL iteration:
//     theta <- Proj_Y(theta - eta (grad_y f(x, theta) + gamma_1 (theta - y))),
// and x and y (our z) are stepped together along the gradient of
//     phi(x, y) = F(x, y) / c_t + f(x, y) - f(x, theta) - gamma_1/2 ||theta - y||^2,
//     c_t = c0 (t + 1)^p,
// with theta held fixed (that is grad_x and grad_y of F / c_t + f - v at theta): phi reports it.
// Hessian-free: four gradients per iteration.
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    double eta;     // theta's step
    double gamma_1; // the proximal weight (1 / gamma)
    double c0, p;   // c_t = c0 (t + 1)^p
} meso_params;

// BOAT's MESO defaults (its data hyper-cleaning configuration; p is the exponent it hard-codes)
static const meso_params defaults = {.eta = 0.001, .gamma_1 = 0.01, .c0 = 0.2, .p = 0.25};
static const blo_setting settings[] = {
    BLO_ROW_DBL(meso_params, eta, "eta", 0, INFINITY, BLO_SET_LO_OPEN, "e", "step on theta (MEHA's eta)"),
    BLO_ROW_DBL(meso_params, gamma_1, "gamma_1", 0, INFINITY, BLO_SET_LO_OPEN, "g",
                "proximal weight 1/gamma of the Moreau envelope"),
    BLO_ROW_DBL(meso_params, c0, "c0", 0, INFINITY, BLO_SET_LO_OPEN, "c", "penalty schedule c_t = c0 (t+1)^p"),
    BLO_ROW_DBL(meso_params, p, "p", 0, INFINITY, 0, "p", "its exponent (MEHA takes p in (0, 1/2))"),
    BLO_ROW_END,
};

// mem: theta [n_y] (carried), then scratch: g [n_y] and the penalty's [2 n_x + n_y] (from g on).
typedef struct {
    blo_fo_state fo;
    meso_params par;
    blo_penalty w; // the last direction's weights (1/c_t, 1, gamma_1), for phi
} meso;

static blo_status meso_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    size_t n = 3 * (size_t)env->p->n_y + 2 * (size_t)env->p->n_x; // y0 starts both y and the carried vector
    return blo_fo_new_z(state, sizeof(meso), env, n, (size_t)env->p->n_y, offsetof(meso, par), sizeof(meso_params),
                        n_z, z0, err);
}

static blo_status meso_direction(void *state, int t, const double *x, const double *z, double *gx,
                                 double *gz, double *y_out, blo_record *rec, blo_error *err) {
    meso *s = state;
    const blo_problem *p = s->fo.p;
    const meso_params *q = &s->par;
    int ny = p->n_y;
    double *th = s->fo.mem, *g = th + ny;
    blo_status st = blo_eval(p, 0, x, th, NULL, NULL, g, s->fo.tape, err); // theta's step (its prox: Proj_Y)
    if (st) return st;
    for (int i = 0; i < ny; i++) th[i] -= q->eta * (g[i] + q->gamma_1 * (th[i] - z[i]));
    blo_clamp_y(p, th);
    double c = q->c0 * pow(t + 1.0, q->p);
    s->w = (blo_penalty){1 / c, 1, q->gamma_1};
    st = blo_penalty_grad(p, &s->w, x, z, th, g, gx, gz, s->fo.tape, err);
    if (st) return st;
    memcpy(y_out, z, sizeof(double) * (size_t)ny);
    rec->extra = c;
    return BLO_OK;
}

static blo_status meso_phi(void *state, const double *x, const double *z, double *value,
                           blo_error *err) {
    meso *s = state;
    return blo_penalty_value(s->fo.p, &s->w, x, z, s->fo.mem, value, s->fo.tape, err);
}

const blo_method_type blo_method_meso = {
    "meso", "MESO/MEHA: (x, y) along grad [F/c_t + f - Moreau envelope of f], one theta step (Alg. 1)",
    0, BLO_GRAD_EXACT, NULL, sizeof(meso_params), &defaults, settings, NULL, NULL, meso_init,
    meso_direction, blo_fo_z_solution, meso_phi, blo_fo_save, blo_fo_load, blo_fo_free};
