// bome: "BOME! Bilevel Optimization Made Easy" (Liu et al., NeurIPS 2022), Alg. 1. x and y (the
// paper's v and theta; our z) are stepped together along d = grad F + lambda grad qhat, where
// qhat(x, y) = f(x, y) - f(x, theta^T) with theta^T from T projected GD steps on f(x, .) from y
// (held fixed), and lambda = max((phi - <grad F, grad qhat>) / (||grad qhat||^2 + eps), 0) with
// phi = eta ||grad qhat||^2 (the paper's default) or eta qhat (its hyper-cleaning code).
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int T;         // inner GD steps on f from the current y
    double alpha;  // inner step
    double eta;    // barrier weight
    int phi_value; // 0: phi = eta ||grad qhat||^2; 1: phi = eta qhat
    double eps;    // added to ||grad qhat||^2
} bome_params;

static const char *const phi_words[] = {"grad", "value", NULL};
static const bome_params defaults = {.T = 10, .alpha = 0.05, .eta = 0.5, .eps = 1e-8};
static const blo_setting settings[] = {
    BLO_ROW_INT(bome_params, T, "T", 1, BLO_MAX_ITERS, "T", "inner GD steps on f from the current y"),
    BLO_ROW_DBL(bome_params, alpha, "alpha", 0, INFINITY, BLO_SET_LO_OPEN, "a", "inner step"),
    BLO_ROW_DBL(bome_params, eta, "eta", 0, INFINITY, 0, "e", "barrier weight eta"),
    BLO_ROW_CHOICE(bome_params, phi_value, "phi", phi_words, "k",
                   "phi = eta ||grad q||^2 (grad) or eta q (value)"),
    BLO_ROW_DBL(bome_params, eps, "eps", 0, INFINITY, 0, "e", "added to ||grad q||^2 in lambda's denominator"),
    BLO_ROW_END,
};

// mem: z's start y0 [n_y] (nothing carried: z is the solver's), then theta [n_y], g [n_y], grad
// qhat (qx [n_x], qy [n_y]) and grad_x f(x, theta) [n_x].
typedef struct {
    blo_fo_state fo;
    bome_params par;
} bome;

static blo_status bome_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    size_t nx = (size_t)env->p->n_x, ny = (size_t)env->p->n_y;
    blo_status st = blo_fo_new(state, sizeof(bome), env, 4 * ny + 2 * nx, 0, err);
    if (st) return st;
    bome *b = *state;
    b->par = *(const bome_params *)env->params;
    *n_z = (int)ny, *z0 = b->fo.mem;
    return BLO_OK;
}

static blo_status bome_direction(void *state, int t, const double *x, const double *y, double *dx,
                                 double *dy, double *y_out, blo_record *rec, blo_error *err) {
    bome *b = state;
    const blo_problem *p = b->fo.p;
    const bome_params *q = &b->par;
    int nx = p->n_x, ny = p->n_y;
    double *th = b->fo.mem + ny, *g = th + ny, *qx = g + ny, *qy = qx + nx, *fx = qy + ny;
    (void)t;
    // theta^(T): T projected GD steps on f(x, .) from y (Eq. 8)
    memcpy(th, y, (size_t)ny * sizeof *th);
    blo_status st = BLO_OK;
    for (int k = 0; k < q->T && st == BLO_OK; k++) {
        st = blo_eval(p, 0, x, th, NULL, NULL, g, b->fo.tape, err);
        for (int i = 0; i < ny; i++) th[i] -= q->alpha * g[i];
        blo_clamp_y(p, th);
    }
    // qhat = f(x, y) - f(x, theta^T), with theta^T held fixed
    double f_y = 0, f_th = 0;
    if (st == BLO_OK) st = blo_eval(p, 0, x, y, &f_y, qx, qy, b->fo.tape, err);
    if (st == BLO_OK) st = blo_eval(p, 0, x, th, &f_th, fx, NULL, b->fo.tape, err);
    if (st == BLO_OK) st = blo_eval(p, 1, x, y, NULL, dx, dy, b->fo.tape, err); // grad F into (dx, dy)
    if (st != BLO_OK) return st;
    for (int i = 0; i < nx; i++) qx[i] -= fx[i];
    double qhat = f_y - f_th, qq = blo_dot(qx, qx, nx) + blo_dot(qy, qy, ny);
    double Fq = blo_dot(dx, qx, nx) + blo_dot(dy, qy, ny);
    double phi = q->phi_value ? q->eta * qhat : q->eta * qq;
    double lambda = qq > 0 ? fmax((phi - Fq) / (qq + q->eps), 0) : 0;
    for (int i = 0; i < nx; i++) dx[i] += lambda * qx[i];
    for (int i = 0; i < ny; i++) dy[i] += lambda * qy[i];
    memcpy(y_out, y, sizeof(double) * (size_t)ny);
    rec->extra = lambda;
    return BLO_OK;
}

const blo_method_type blo_method_bome = {
    "bome", "BOME: value-function barrier step on (x, y), first order (Alg. 1)", 0, BLO_GRAD_NONE,
    NULL, sizeof(bome_params), &defaults, settings, NULL, NULL, bome_init, bome_direction,
    blo_fo_z_solution, NULL, NULL, NULL, blo_fo_free};
