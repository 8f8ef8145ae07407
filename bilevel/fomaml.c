// fomaml: first-order MAML (Finn, Abbeel and Levine, ICML 2017, Sec. 5.2's first-order
// approximation; BOAT's FOA): K steps of the dynamics from the LL start y_0 = z give y_K, and the
// gradient of F there stands for the gradient with respect to z, the inner gradients held
// constant (dy_K/dz taken as I, no second order): g_z = grad_y F(x, y_K), g_x = grad_x F(x, y_K).
// A direction, not the gradient of an objective.
//
// This file also holds the first-order meta-learning driver reptile.c shares (family.h): the two
// differ only in g_z.
#include "family.h"

#include <string.h>

const blo_setting blo_fo_meta_settings[] = {
    BLO_ROW_LL_ITERS(blo_fo_meta_params),
    BLO_ROW_END,
};

typedef struct {
    blo_ll_state ll; // first: the shared solution and free use it (ia: y_K starts from z)
    int kind;
} fo_meta;

blo_status blo_fo_meta_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    const blo_fo_meta_params *q = env->params;
    blo_status st = blo_ll_new(state, sizeof(fo_meta), env, q->K, 1, 1, err);
    if (st) return st;
    fo_meta *m = *state;
    m->kind = q->kind;
    *n_z = env->p->n_y;
    *z0 = m->ll.y0; // z starts at the problem's LL start
    return blo_ok(err);
}

blo_status blo_fo_meta_direction(void *state, int t, const double *x, const double *z, double *gx,
                                 double *gz, double *y, blo_record *rec, blo_error *err) {
    fo_meta *m = state;
    blo_ll_state *h = &m->ll;
    (void)t;
    // y_K from z, as the solution is (blo_ll_solution: the same unroll, the same bits)
    blo_status st = blo_ll_solution(h, x, z, y, err);
    if (!st) st = blo_eval(h->p, 1, x, y, NULL, gx, gz, h->tape, err); // grad_x F, grad_y F at y_K
    if (st) return st;
    if (m->kind == BLO_FO_META_REPTILE) // Reptile: -(y_K - z), the step is z + lr_z (y_K - z)
        for (int i = 0; i < h->p->n_y; i++) gz[i] = z[i] - y[i];
    rec->kbar = h->K;
    return BLO_OK;
}

static const blo_fo_meta_params defaults = {.K = 5, .kind = BLO_FO_META_FOMAML};

const blo_method_type blo_method_fomaml = BLO_FO_META_TYPE(
    "fomaml", "first-order MAML: grad_y F(x, y_K) as the gradient in the LL start z (FOA)", defaults);
