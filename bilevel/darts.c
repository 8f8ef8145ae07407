// darts: the finite-difference hypergradient of DARTS (Liu, Simonyan and Yang, "DARTS:
// Differentiable Architecture Search", ICLR 2019, Eqs. 7-8) as BOAT's "FD" reads it: after K steps
// of the dynamics, y_K stands for the LL solution and the mixed second derivative in
//     d_x = grad_x F(x, y_K) - eta (d²f / dx dy)(x, y_K) v,   v = grad_y F(x, y_K)
// is taken by central differences of grad_x f along v:
//     d_x = grad_x F - eta [grad_x f(x, y+) - grad_x f(x, y-)] / (2 eps),
//     y+- = y_K +- eps v,  eps = r / ||v||
// (DARTS's r = 0.01; its xi, our eta, is the LL step by default, and eta = 0 is its first-order
// variant). DARTS itself centres the difference on its weights before the one virtual step (our
// y_{K-1}); with gd dynamics its Eq. 7 is what trhg with truncate = 1 differentiates exactly. It
// needs no Hessian-vector product, only two more gradients of f, and tends to the limit above at
// rate eps^2. It is a direction, not the gradient of an objective.
#include "family.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int K;           // ll_iters
    double r;        // eps = r / ||v||
    double eta;      // the virtual step xi (-1 = the dynamics' LL step, resolved; 0 = first order)
    int warm_start;
} darts_params;

static const darts_params defaults = {.K = 20, .r = 0.01, .eta = -1};
static const blo_setting settings[] = {
    BLO_ROW_LL_ITERS(darts_params),
    BLO_ROW_DBL(darts_params, r, "r", 0, INFINITY, BLO_SET_LO_OPEN, "r",
                "finite-difference radius: eps = r / ||grad_y F|| (DARTS Eq. 8)"),
    BLO_ROW_DBL(darts_params, eta, "eta", -1, INFINITY, 0, "e",
                "the second-order term's step xi (-1 = the dynamics' LL step; 0 = first order)"),
    BLO_ROW_WARM_START(darts_params),
    BLO_ROW_END,
};

static blo_status darts_resolve(void *params, const blo_dynamics *d, blo_error *err) {
    darts_params *q = params;
    if (q->eta >= 0) return blo_ok(err); // 0: DARTS's first order
    if (q->eta != -1) return blo_fail(err, BLO_EARG, "darts: eta = %g (-1, or >= 0)", q->eta);
    q->eta = 0;
    return blo_step_or_ll(&q->eta, d, "darts", err);
}

typedef struct {
    blo_ll_state ll; // first: the shared solution, save, load and free use it
    darts_params par;
    double *v, *yp, *gp, *gm; // [n_y] x 2, [n_x] x 2
} darts;

static void darts_free(void *state) {
    darts *s = state;
    if (s) free(s->v);
    blo_ll_free(state);
}

static blo_status darts_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err) {
    const darts_params *q = env->params;
    int nx = env->p->n_x, ny = env->p->n_y;
    (void)z0;
    *n_z = 0;
    blo_status st = blo_ll_new(state, sizeof(darts), env, q->K, 0, 1, err);
    if (st) return st;
    darts *s = *state;
    s->par = *q;
    if (!(s->v = malloc(sizeof(double) * (2 * (size_t)ny + 2 * (size_t)nx)))) {
        darts_free(s);
        *state = NULL;
        return blo_fail(err, BLO_ENOMEM, "darts: out of memory");
    }
    s->yp = s->v + ny, s->gp = s->yp + ny, s->gm = s->gp + nx;
    return blo_ok(err);
}

// grad_x f(x, y_K + sign eps v) into g [n_x].
static blo_status grad_x_f_at(darts *s, const double *x, const double *y, double eps, double sign,
                              double *g, blo_error *err) {
    int ny = s->ll.p->n_y;
    for (int i = 0; i < ny; i++) s->yp[i] = y[i] + sign * eps * s->v[i];
    return blo_eval(s->ll.p, 0, x, s->yp, NULL, g, NULL, s->ll.tape, err);
}

static blo_status darts_direction(void *state, int t, const double *x, const double *z, double *gx,
                                  double *gz, double *y, blo_record *rec, blo_error *err) {
    darts *s = state;
    blo_ll_state *h = &s->ll;
    const blo_problem *p = h->p;
    int nx = p->n_x, ny = p->n_y;
    (void)t, (void)z, (void)gz;
    blo_status st = blo_ll_steps(h, x, y, err);
    if (!st) st = blo_eval(p, 1, x, y, NULL, gx, s->v, h->tape, err); // grad_x F, v = grad_y F
    if (st) return st;
    rec->kbar = h->K;
    double norm = cblas_dnrm2(ny, s->v, 1); // scaled: no overflow for large entries
    if (norm > 0 && s->par.eta > 0) { // v = 0 or first order: no second-order term
        double eps = s->par.r / norm;
        st = grad_x_f_at(s, x, y, eps, 1, s->gp, err);
        if (!st) st = grad_x_f_at(s, x, y, eps, -1, s->gm, err);
        if (st) return st;
        for (int i = 0; i < nx; i++) gx[i] -= s->par.eta * (s->gp[i] - s->gm[i]) / (2 * eps);
        rec->extra = eps;
    }
    if (s->par.warm_start) memcpy(h->y0, y, sizeof(double) * (size_t)ny);
    return BLO_OK;
}

const blo_method_type blo_method_darts = {
    "darts", "DARTS: grad_x F - eta (d2f/dxdy) grad_y F at y_K by central differences (ICLR 2019 Eq. 8)",
    BLO_NEEDS_DYNAMICS, BLO_GRAD_NONE, "gd", sizeof(darts_params), &defaults, settings, darts_resolve,
    NULL, darts_init, darts_direction, blo_ll_solution, NULL, blo_ll_save, blo_ll_load, darts_free};
