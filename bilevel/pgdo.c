// pgdo: the value-function penalty method of "On Penalty-based Bilevel Gradient Descent Method"
// (Shen and Chen, ICML 2023), V-PBGD (Alg. 1 on the penalty of Sec. 3), with BOAT's PGDO choices.
// x and y (our z) are stepped together along the gradient of
//     phi(x, y) = s [F(x, y) + gamma (f(x, y) - f(x, yhat))],   s = min(1 / (gamma + 1e-8), 1),
// with yhat held fixed: K projected GD steps of y_hat_lr on f(x, .) from the last iteration's yhat
// (BOAT keeps one yhat across iterations; it starts at y0). gamma is ramped as BOAT does, from
// gamma_init by (gamma_max - gamma_init) / gamma_argmax_step per UL iteration up to gamma_max
// (a gamma_max below gamma_init leaves gamma_init), and s is BOAT's step decay. The direction is
// exactly grad phi at (x, z) with yhat, gamma and s held: phi reports that value.
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int K;                    // GD steps on yhat per UL iteration
    double y_hat_lr;          // their step
    double gamma_init, gamma_max;
    int gamma_argmax_step;    // UL iterations from gamma_init to gamma_max
} pgdo_params;

// BOAT's PGDO defaults (its data hyper-cleaning configuration; K = its lower_iters)
static const pgdo_params defaults = {.K = 5, .y_hat_lr = 0.01, .gamma_init = 0, .gamma_max = 0.2,
                                     .gamma_argmax_step = 30000};
static const blo_setting settings[] = {
    BLO_ROW_LL_ITERS(pgdo_params),
    BLO_ROW_DBL(pgdo_params, y_hat_lr, "y_hat_lr", 0, INFINITY, BLO_SET_LO_OPEN, "a",
                "step of the GD steps on yhat (V-PBGD's beta)"),
    BLO_ROW_DBL(pgdo_params, gamma_init, "gamma_init", 0, INFINITY, 0, "g", "penalty weight gamma at t = 0"),
    BLO_ROW_DBL(pgdo_params, gamma_max, "gamma_max", 0, INFINITY, 0, "g", "gamma's ceiling"),
    BLO_ROW_INT(pgdo_params, gamma_argmax_step, "gamma_argmax_step", 1, BLO_MAX_ITERS, "T",
                "UL iterations over which gamma rises linearly from gamma_init to gamma_max"),
    BLO_ROW_END,
};

// mem: yhat [n_y] (carried), then scratch: g [n_y] and the penalty's [2 n_x + n_y] (from g on).
typedef struct {
    blo_fo_state fo;
    pgdo_params par;
    blo_penalty w; // the last direction's weights (s, s gamma, 0), for phi
} pgdo;

static blo_status pgdo_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    size_t n = 3 * (size_t)env->p->n_y + 2 * (size_t)env->p->n_x; // y0 starts both y and the carried vector
    return blo_fo_new_z(state, sizeof(pgdo), env, n, (size_t)env->p->n_y, offsetof(pgdo, par), sizeof(pgdo_params),
                        n_z, z0, err);
}

// gamma at UL iteration t: BOAT adds the step after each iteration and caps it at gamma_max.
static double gamma_at(const pgdo_params *q, int t) {
    if (!(q->gamma_max > q->gamma_init)) return q->gamma_init;
    double step = (q->gamma_max - q->gamma_init) / q->gamma_argmax_step;
    return fmin(q->gamma_max, q->gamma_init + step * t);
}

static blo_status pgdo_direction(void *state, int t, const double *x, const double *z, double *gx,
                                 double *gz, double *y_out, blo_record *rec, blo_error *err) {
    pgdo *s = state;
    const blo_problem *p = s->fo.p;
    int ny = p->n_y;
    double *yh = s->fo.mem, *g = yh + ny;
    blo_status st = BLO_OK;
    for (int k = 0; k < s->par.K && st == BLO_OK; k++) { // yhat: K projected GD steps on f(x, .)
        st = blo_eval(p, 0, x, yh, NULL, NULL, g, s->fo.tape, err);
        for (int i = 0; i < ny; i++) yh[i] -= s->par.y_hat_lr * g[i];
        blo_clamp_y(p, yh);
    }
    double gamma = gamma_at(&s->par, t), scale = fmin(1 / (gamma + 1e-8), 1);
    s->w = (blo_penalty){scale, scale * gamma, 0};
    if (!st) st = blo_penalty_grad(p, &s->w, x, z, yh, g, gx, gz, s->fo.tape, err);
    if (st) return st;
    memcpy(y_out, z, sizeof(double) * (size_t)ny);
    rec->extra = gamma;
    return BLO_OK;
}

static blo_status pgdo_phi(void *state, const double *x, const double *z, double *value,
                           blo_error *err) {
    pgdo *s = state;
    return blo_penalty_value(s->fo.p, &s->w, x, z, s->fo.mem, value, s->fo.tape, err);
}

const blo_method_type blo_method_pgdo = {
    "pgdo", "PGDO: (x, y) along grad [F + gamma (f - f(x, yhat))], yhat from K GD steps (V-PBGD)", 0,
    BLO_GRAD_EXACT, NULL, sizeof(pgdo_params), &defaults, settings, NULL, NULL, pgdo_init,
    pgdo_direction, blo_fo_z_solution, pgdo_phi, blo_fo_save, blo_fo_load, blo_fo_free};
