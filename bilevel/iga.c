// iga: the implicit gradient approximation of "Learning with Constraint Learning: New
// Perspective, Solution Strategy and Various Applications" (Liu et al., TPAMI 2024), as BOAT's IGA
// computes it: after K steps of the LL dynamics, y_K stands for the LL solution and
//     d_x = grad_x F(x, y_K) - c grad_x f(x, y_K),
//     c = <grad_y F, grad_y f> / (||grad_y f||^2 + eps)   (at (x, y_K)),
// the x-gradient of F + c f with c held fixed (BOAT's "GN loss" -c f): a rank-one stand-in for the
// implicit term that needs no Hessian-vector product, only the two gradients of f and of F at y_K.
// Guard: when the denominator is 0 (y_K is an exact LL stationary point and eps = 0) the ratio is
// undefined and the term is dropped (c = 0, d_x = grad_x F); the record's extra is c. It belongs
// to the unrolled LL family's head (blo_ll_state): y_K from y0, warm starts, y_K as the solution.
// It is a direction, not the gradient of an objective.
#include "family.h"

#include <string.h>

typedef struct {
    int K;          // ll_iters
    double eps;     // added to ||grad_y f||^2
    int warm_start;
} iga_params;

static const iga_params defaults = {.K = 20};
static const blo_setting settings[] = {
    BLO_ROW_LL_ITERS(iga_params),
    BLO_ROW_DBL(iga_params, eps, "eps", 0, INFINITY, 0, "e",
                "added to ||grad_y f||^2 in c's denominator (0: the formula as printed; c = 0 when it is 0)"),
    BLO_ROW_WARM_START(iga_params),
    BLO_ROW_END,
};

typedef struct {
    blo_ll_state ll; // first: the shared solution, save, load and free use it
    iga_params par;
    double *gyF, *gyf, *gxf; // [n_y] x 2, [n_x]
} iga;

static blo_status iga_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                           blo_error *err) {
    const iga_params *q = env->params;
    int nx = env->p->n_x, ny = env->p->n_y;
    (void)z0;
    *n_z = 0;
    blo_status st = blo_ll_new_scratch(state, sizeof(iga), env, q->K, 2 * (size_t)ny + (size_t)nx, err);
    if (st) return st;
    iga *s = *state;
    s->par = *q;
    s->gyF = s->ll.scratch, s->gyf = s->gyF + ny, s->gxf = s->gyf + ny;
    return BLO_OK;
}

static blo_status iga_direction(void *state, int t, const double *x, const double *z, double *gx,
                                double *gz, double *y, blo_record *rec, blo_error *err) {
    iga *s = state;
    blo_ll_state *h = &s->ll;
    const blo_problem *p = h->p;
    int nx = p->n_x, ny = p->n_y;
    (void)t, (void)gz;
    blo_status st = blo_ll_solution(state, x, z, y, err); // y_K from y0
    if (!st) st = blo_eval(p, 1, x, y, NULL, gx, s->gyF, h->tape, err);
    if (!st) st = blo_eval(p, 0, x, y, NULL, s->gxf, s->gyf, h->tape, err);
    if (st) return st;
    double den = blo_dot(s->gyf, s->gyf, ny) + s->par.eps;
    double c = den > 0 ? blo_dot(s->gyF, s->gyf, ny) / den : 0; // the guard: 0 / 0 drops the term
    for (int i = 0; i < nx; i++) gx[i] -= c * s->gxf[i];
    rec->kbar = h->K;
    rec->extra = c;
    if (s->par.warm_start) memcpy(h->y0, y, sizeof(double) * (size_t)ny);
    return BLO_OK;
}

const blo_method_type blo_method_iga = {
    "iga", "IGA: grad_x F - <grad_y F, grad_y f> / ||grad_y f||^2 grad_x f at y_K (LwCL, TPAMI 2024)",
    BLO_NEEDS_DYNAMICS, BLO_GRAD_NONE, "gd", sizeof(iga_params), &defaults, settings, NULL, NULL,
    iga_init, iga_direction, blo_ll_solution, NULL, blo_ll_save, blo_ll_load, blo_ll_free};
